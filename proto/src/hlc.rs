//! Hybrid logical clock (Kulkarni et al. 2014, as CockroachDB uses it).
//!
//! Every federated record is stamped by its author's clock. A stamp is
//! `(wall_ms, logical)`; a node's stamps strictly increase, and after
//! [`HybridClock::observe`] they are later than every stamp received. A stamp
//! further ahead of the local physical clock than `max_offset` is refused: the
//! sender retries later, like any undelivered record (DESIGN.md §3).

use std::cmp::Ordering;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::v1::Hlc;

/// Physical time source, in milliseconds since the Unix epoch (a closure,
/// so a simulation can give each node its own virtual, skewed time).
pub type PhysicalClock = Box<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock in milliseconds since the Unix epoch.
pub fn system_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl std::fmt::Debug for HybridClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridClock")
            .field("last", &self.last)
            .field("max_offset", &self.max_offset)
            .finish_non_exhaustive()
    }
}

/// Total order of stamps: wall time, then logical counter.
pub fn compare(a: &Hlc, b: &Hlc) -> Ordering {
    (a.wall_ms, a.logical).cmp(&(b.wall_ms, b.logical))
}

/// A received stamp is too far ahead of the local clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "hlc stamp {remote_wall_ms} ms is {ahead_ms} ms ahead of the local clock (max offset {max_offset_ms} ms)"
)]
pub struct ClockSkew {
    /// The remote stamp's wall time.
    pub remote_wall_ms: u64,
    /// How far ahead of the local physical clock it is.
    pub ahead_ms: u64,
    /// The configured tolerance.
    pub max_offset_ms: u64,
}

/// A node's hybrid logical clock. Cheap to share behind an `Arc`.
pub struct HybridClock {
    /// Latest stamp issued or observed.
    last: Mutex<(u64, u32)>,
    /// Tolerated lead of a remote stamp over the local physical clock.
    max_offset: Duration,
    /// Source of physical time (replaceable in tests).
    physical: PhysicalClock,
}

impl HybridClock {
    /// A clock on the system time, refusing remote stamps more than
    /// `max_offset` ahead.
    pub fn new(max_offset: Duration) -> Self {
        Self::with_physical(max_offset, system_time_ms)
    }

    /// A clock on a given physical time source.
    pub fn with_physical(
        max_offset: Duration,
        physical: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        Self {
            last: Mutex::new((0, 0)),
            max_offset,
            physical: Box::new(physical),
        }
    }

    /// Issues a new stamp, later than every stamp issued or observed before.
    pub fn now(&self) -> Hlc {
        let pt = (self.physical)();
        let mut last = self.last.lock().expect("hlc lock poisoned");
        *last = if pt > last.0 {
            (pt, 0)
        } else if last.1 == u32::MAX {
            // The logical counter is spent (a peer's stamp can put it
            // there): move the wall part on instead of repeating a stamp.
            (last.0 + 1, 0)
        } else {
            (last.0, last.1 + 1)
        };
        Hlc {
            wall_ms: last.0,
            logical: last.1,
        }
    }

    /// Takes a stamp from a record this node has stored (at start-up, the
    /// latest in its log) or received, so that later stamps follow it.
    ///
    /// # Errors
    /// [`ClockSkew`] when the stamp is more than the max offset ahead of the
    /// local physical clock; the clock is not moved then.
    pub fn observe(&self, remote: &Hlc) -> Result<(), ClockSkew> {
        self.check(remote)?;
        self.restore(remote);
        Ok(())
    }

    /// Checks the clock rule for a received stamp without moving the clock:
    /// a receiver moves its clock only past records it stores
    /// ([`HybridClock::restore`]), so a refused record cannot push it.
    ///
    /// # Errors
    /// [`ClockSkew`] when the stamp is more than the max offset ahead.
    pub fn check(&self, remote: &Hlc) -> Result<(), ClockSkew> {
        let pt = (self.physical)();
        let max_offset_ms = self.max_offset.as_millis() as u64;
        if remote.wall_ms > pt.saturating_add(max_offset_ms) {
            return Err(ClockSkew {
                remote_wall_ms: remote.wall_ms,
                ahead_ms: remote.wall_ms - pt,
                max_offset_ms,
            });
        }
        Ok(())
    }

    /// Moves the clock past `stamp` without the offset check: for stamps this
    /// node issued itself (recovering after a restart).
    pub fn restore(&self, stamp: &Hlc) {
        let mut last = self.last.lock().expect("hlc lock poisoned");
        if (stamp.wall_ms, stamp.logical) > *last {
            *last = (stamp.wall_ms, stamp.logical);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

    static FAKE_NOW: AtomicU64 = AtomicU64::new(1_000);
    fn fake_now() -> u64 {
        FAKE_NOW.load(AtomicOrdering::SeqCst)
    }

    #[test]
    fn a_spent_logical_counter_moves_the_wall_part_on() {
        fn frozen() -> u64 {
            5_000
        }
        let clock = HybridClock::with_physical(Duration::from_millis(500), frozen);
        clock.restore(&Hlc {
            wall_ms: 5_100,
            logical: u32::MAX,
        });
        let a = clock.now();
        let b = clock.now();
        assert_eq!((a.wall_ms, a.logical), (5_101, 0));
        assert_eq!(compare(&a, &b), Ordering::Less);
        // A stamp checked but not stored does not move the clock.
        clock
            .check(&Hlc {
                wall_ms: 5_400,
                logical: 3,
            })
            .unwrap();
        assert_eq!(clock.now().wall_ms, 5_101);
    }

    #[test]
    fn stamps_increase_even_when_physical_time_stands_still_or_goes_back() {
        let clock = HybridClock::with_physical(Duration::from_millis(500), fake_now);
        let a = clock.now();
        let b = clock.now();
        assert_eq!(compare(&a, &b), Ordering::Less);
        FAKE_NOW.store(900, AtomicOrdering::SeqCst);
        let c = clock.now();
        assert_eq!(compare(&b, &c), Ordering::Less);
        FAKE_NOW.store(1_000, AtomicOrdering::SeqCst);
    }

    #[test]
    fn observe_moves_past_remote_and_refuses_far_future() {
        let clock = HybridClock::new(Duration::from_millis(500));
        let now = system_time_ms();
        let remote = Hlc {
            wall_ms: now + 200,
            logical: 7,
        };
        clock.observe(&remote).unwrap();
        assert_eq!(compare(&remote, &clock.now()), Ordering::Less);
        let far = Hlc {
            wall_ms: now + 60_000,
            logical: 0,
        };
        let err = clock.observe(&far).unwrap_err();
        assert!(err.ahead_ms >= 59_000);
        assert!(
            compare(&clock.now(), &far) == Ordering::Less,
            "clock must not jump to a refused stamp"
        );
    }
}
