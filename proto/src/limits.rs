//! Per-identity rate limits, shared by both daemons (docs/security.md, T3):
//! each identity (an operator token, a peer, a member or a coordinator of
//! the registry) has its own token bucket, so one caller in a loop cannot
//! take a server's capacity from the others. The keys are identities the
//! server already knows, so a limiter's memory is bounded by them, not by
//! what callers send.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A token bucket per identity.
#[derive(Debug, Clone)]
pub struct PerIdentity {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    /// Metric label: which port or service.
    port: &'static str,
}

impl PerIdentity {
    /// `per_second` calls a second per identity, `burst` at once.
    pub fn new(port: &'static str, per_second: u32, burst: u32) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(per_second.max(1)).expect("non-zero"))
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("non-zero"));
        Self {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            port,
        }
    }

    /// Forgets the buckets that are full again (identities idle long enough
    /// to have their whole burst back), so a limiter keyed by something
    /// open-ended, such as client addresses, does not grow without end.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Takes one call from `identity`'s bucket; counted in
    /// `urpnet_rate_limited_total{port}` when the bucket is empty.
    ///
    /// # Errors
    /// How long until the bucket allows a call (at least 1 ms).
    pub fn check(&self, identity: &str) -> Result<(), Duration> {
        match self.limiter.check_key(&identity.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until
                    .wait_time_from(DefaultClock::default().now())
                    .max(Duration::from_millis(1));
                metrics::counter!("urpnet_rate_limited_total", "port" => self.port).increment(1);
                tracing::debug!(
                    port = self.port,
                    identity,
                    retry_after_ms = wait.as_millis() as u64,
                    "rate limited"
                );
                Err(wait)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_caller_waits_and_others_do_not() {
        let limits = PerIdentity::new("desk", 10, 3);
        for _ in 0..3 {
            limits.check("op-1").unwrap();
        }
        let wait = limits.check("op-1").unwrap_err();
        assert!(
            wait >= Duration::from_millis(1) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        limits
            .check("op-2")
            .expect("another identity has its own bucket");
    }
}
