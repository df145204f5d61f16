//! The registry's errors: one enum, a small fixed set of codes, one mapping
//! to gRPC status codes.

use urpnet_proto::validate::Violations;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request broke one or more rules; nothing was stored.
    #[error("{0}")]
    InvalidArgument(Violations),
    /// No such member or category.
    #[error("{0}")]
    NotFound(String),
    /// The id is enrolled already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The current state forbids the change (e.g. reinstating a revoked
    /// member).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller has no identity this registry accepts.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The database failed.
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    /// Anything else that is the registry's fault.
    #[error("internal: {0}")]
    Internal(String),
}

impl RegistryError {
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
            Self::AlreadyExists(_) => tonic::Code::AlreadyExists,
            Self::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Self::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Self::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Self::Storage(_) | Self::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl From<Violations> for RegistryError {
    fn from(v: Violations) -> Self {
        Self::InvalidArgument(v)
    }
}

impl From<RegistryError> for tonic::Status {
    fn from(err: RegistryError) -> Self {
        let code = err.code();
        if code == tonic::Code::Internal {
            tracing::error!(error = %err, "internal error");
            return tonic::Status::internal("internal error; see the registry's log");
        }
        let message = match &err {
            RegistryError::InvalidArgument(v) => format!("invalid request: {v}"),
            other => other.to_string(),
        };
        tonic::Status::new(code, message)
    }
}

/// Result of registry operations.
pub type RegistryResult<T> = Result<T, RegistryError>;
