//! Per-identity rate limits (docs/security.md, T3): each operator token on
//! the Desk and each peer on the peering port has its own token bucket, so
//! one caller in a loop cannot take a node's capacity from the others. The
//! keys are identities the node already knows (operators, members), so the
//! limiter's memory is bounded by them, not by what callers send.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::NodeError;

/// A token bucket per identity.
#[derive(Debug, Clone)]
pub struct PerIdentity {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    /// Metric label: which port.
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

    /// Takes one call from `identity`'s bucket.
    ///
    /// # Errors
    /// [`NodeError::RateLimited`] with the wait, when the bucket is empty.
    pub fn check(&self, identity: &str) -> Result<(), NodeError> {
        // `check_key` clones the key only when it is new.
        match self.limiter.check_key(&identity.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let ms = (wait.as_millis() as u64).max(1);
                metrics::counter!("urpnet_rate_limited_total", "port" => self.port).increment(1);
                tracing::debug!(
                    port = self.port,
                    identity,
                    retry_after_ms = ms,
                    "rate limited"
                );
                Err(NodeError::RateLimited(
                    format!("rate limit for {identity} exceeded; retry in {ms} ms"),
                    ms,
                ))
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
        let err = limits.check("op-1").unwrap_err();
        match &err {
            NodeError::RateLimited(message, ms) => {
                assert!(*ms >= 1 && *ms <= 100, "{ms}");
                assert!(message.contains("op-1"));
            }
            other => panic!("{other:?}"),
        }
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.metadata().get("retry-after-ms").is_some());
        limits
            .check("op-2")
            .expect("another identity has its own bucket");
    }
}
