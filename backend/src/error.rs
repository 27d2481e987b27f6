//! [`ApiError`]: every non-2xx answer, and the one place they become HTTP responses.
//!
//! Bodies are JSON: `{"error": <kind>, "reason": <snake_case code>}`, plus a human
//! `"message"` for client mistakes (400/404/405). Authentication failures carry no message:
//! the reason code is all a caller learns.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Missing, invalid or replayed gateway token (401).
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// The server cannot safely admit the request right now (503).
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    /// Invalid parameters (400).
    #[error("bad request: {message}")]
    BadRequest {
        /// Machine-readable code.
        reason: &'static str,
        /// What was wrong, for humans.
        message: String,
    },
    /// No such resource or route (404).
    #[error("not found: {message}")]
    NotFound {
        /// Machine-readable code.
        reason: &'static str,
        /// What was missing, for humans.
        message: String,
    },
    /// The route exists but not for this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// Shorthand for [`ApiError::BadRequest`].
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            reason,
            message: message.into(),
        }
    }

    /// Shorthand for [`ApiError::NotFound`].
    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            reason,
            message: message.into(),
        }
    }

    /// The machine-readable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized(reason) | Self::Unavailable(reason) => reason,
            Self::BadRequest { reason, .. } | Self::NotFound { reason, .. } => reason,
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let reason = self.reason();
        let body = match &self {
            Self::Unauthorized(_) => json!({ "error": "unauthorized", "reason": reason }),
            Self::Unavailable(_) => json!({ "error": "unavailable", "reason": reason }),
            Self::BadRequest { message, .. } => {
                json!({ "error": "bad_request", "reason": reason, "message": message })
            }
            Self::NotFound { message, .. } => {
                json!({ "error": "not_found", "reason": reason, "message": message })
            }
            Self::MethodNotAllowed => json!({
                "error": "method_not_allowed",
                "reason": reason,
                "message": "this route only supports GET",
            }),
        };
        (self.status(), Json(body)).into_response()
    }
}
