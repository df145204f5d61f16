//! The node's errors: one enum, a small fixed set of codes, and one mapping
//! to gRPC status codes ([`NodeError::code`]).

use urpnet_proto::validate::Violations;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request broke one or more rules; nothing was stored.
    #[error("{0}")]
    InvalidArgument(Violations),
    /// No such ticket, attachment or operator.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is valid but the current state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request id was used before for a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// No credentials, or credentials this node does not accept.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The node is overloaded or shutting down; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The caller is over its rate; retry after the given milliseconds.
    #[error("{0}")]
    RateLimited(String, u64),
    /// The database failed.
    #[error("storage: {0}")]
    Storage(sqlx::Error),
    /// The SQLite writer failed.
    #[error("storage: {0}")]
    Sqlite(rusqlite::Error),
    /// Anything else that is this node's fault.
    #[error("internal: {0}")]
    Internal(String),
}

impl NodeError {
    /// `identity` is over its rate for `wait` more.
    pub fn rate_limited(identity: &str, wait: std::time::Duration) -> Self {
        let ms = (wait.as_millis() as u64).max(1);
        Self::RateLimited(
            format!("rate limit for {identity} exceeded; retry in {ms} ms"),
            ms,
        )
    }

    /// One violation as an `INVALID_ARGUMENT` error.
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        let mut v = Violations::new();
        v.add(field, rule);
        Self::InvalidArgument(v)
    }

    /// The gRPC code this error is answered with.
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::InvalidArgument(_) => tonic::Code::InvalidArgument,
            Self::NotFound(_) => tonic::Code::NotFound,
            Self::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Self::AlreadyExists(_) => tonic::Code::AlreadyExists,
            Self::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Self::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Self::Unavailable(_) => tonic::Code::Unavailable,
            Self::RateLimited(..) => tonic::Code::ResourceExhausted,
            Self::Storage(_) | Self::Sqlite(_) | Self::Internal(_) => tonic::Code::Internal,
        }
    }
}

/// A full disk is not an internal error: nothing was stored, the caller
/// may retry once space is freed, and the operator must hear of it. Every
/// storage error passes here on its way into a [`NodeError`].
impl From<sqlx::Error> for NodeError {
    fn from(e: sqlx::Error) -> Self {
        let full = match &e {
            // SQLITE_FULL (13), PostgreSQL disk_full (53100).
            sqlx::Error::Database(db) => {
                matches!(db.code().as_deref(), Some("13" | "53100"))
                    || db.message().contains("No space left on device")
            }
            sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        };
        if full {
            disk_full(&e)
        } else {
            Self::Storage(e)
        }
    }
}

impl From<rusqlite::Error> for NodeError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                disk_full(&e)
            }
            _ => Self::Sqlite(e),
        }
    }
}

/// The error for a write the disk had no room for: `UNAVAILABLE` (HTTP
/// 503), counted in `urpnet_store_disk_full_total`, logged at most every
/// ten seconds.
pub fn disk_full(cause: &dyn std::fmt::Display) -> NodeError {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOGGED_MS: AtomicU64 = AtomicU64::new(0);
    metrics::counter!("urpnet_store_disk_full_total").increment(1);
    let now = urpnet_proto::hlc::system_time_ms();
    let last = LAST_LOGGED_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000
        && LAST_LOGGED_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!(error = %cause, "the disk is full: writes are refused (nothing acknowledged is lost); free space on the data directory's file system and the node resumes by itself");
    }
    NodeError::Unavailable(
        "the node's disk is full: nothing was stored; retry when its operator has freed space"
            .into(),
    )
}

impl From<Violations> for NodeError {
    fn from(v: Violations) -> Self {
        Self::InvalidArgument(v)
    }
}

impl From<NodeError> for tonic::Status {
    fn from(err: NodeError) -> Self {
        let code = err.code();
        if code == tonic::Code::Internal {
            // Details of internal failures go to the log, not to the caller.
            tracing::error!(error = %err, "internal error");
            return tonic::Status::internal("internal error; see the node's log");
        }
        let message = match &err {
            NodeError::InvalidArgument(v) => format!("invalid request: {v}"),
            other => other.to_string(),
        };
        let mut status = tonic::Status::new(code, message);
        if let NodeError::RateLimited(_, retry_after_ms) = &err
            && let Ok(v) = retry_after_ms.to_string().parse()
        {
            status.metadata_mut().insert("retry-after-ms", v);
        }
        status
    }
}

/// Result of node operations.
pub type NodeResult<T> = Result<T, NodeError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_is_resource_exhausted_with_a_retry_hint() {
        let status = tonic::Status::from(NodeError::rate_limited(
            "op-1",
            std::time::Duration::from_millis(40),
        ));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("op-1"));
        assert_eq!(
            status
                .metadata()
                .get("retry-after-ms")
                .and_then(|v| v.to_str().ok()),
            Some("40")
        );
    }
}
