//! The scorer's error type and the one place it is mapped to gRPC status codes.

/// Why a scorer call failed.
#[derive(Debug, thiserror::Error)]
pub enum ScorerError {
    /// The caller sent something unacceptable; the message names the field.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A dependency the configuration requires is down and no degraded mode applies.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ScorerError> for tonic::Status {
    fn from(e: ScorerError) -> Self {
        match e {
            ScorerError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            ScorerError::Unavailable(m) => {
                tracing::warn!(error = %m, "scorer dependency unavailable");
                tonic::Status::unavailable(m)
            }
            ScorerError::Internal(m) => {
                tracing::error!(error = %m, "scorer internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
