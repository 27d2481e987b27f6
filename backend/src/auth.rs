//! The zero-trust gate: every request must carry a valid, unused gateway token.
//!
//! [`require_gateway_token`] runs in front of every route (the fallbacks included). It
//! checks the `X-Gateway-Token` against the request's `X-Request-ID`, method and
//! path-and-query exactly as received, then records the request id in the replay store. On
//! success it adds a [`GatewayContext`] to the request extensions; on failure it answers
//! 401 (or 503 when the replay store is full) and logs one warning without the token.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use palisade_token::{ReplayError, ReplayGuard, TokenError, VerifiedToken, Verifier};

use crate::config::BackendConfig;
use crate::error::ApiError;

/// Header carrying the gateway token.
pub const GATEWAY_TOKEN_HEADER: &str = "x-gateway-token";
/// Header carrying the request id the token binds.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the gate established about a request; handlers read it as an extension.
#[derive(Debug, Clone)]
pub struct GatewayContext {
    /// The verified token's claims.
    pub token: VerifiedToken,
    /// The `X-Request-ID` the token is bound to.
    pub request_id: String,
    /// How many `X-Gateway-Token` headers arrived (always 1 once admitted).
    pub token_headers: usize,
}

/// Shared state of the gate: the verifier and the replay store.
#[derive(Debug, Clone)]
pub struct AuthState {
    verifier: Arc<Verifier>,
    replay: Arc<Mutex<ReplayGuard>>,
}

impl AuthState {
    /// A gate for `config`, with an empty replay store whose entries live `max_skew_secs`.
    pub fn new(config: &BackendConfig) -> Self {
        Self {
            verifier: Arc::new(config.verifier().clone()),
            replay: Arc::new(Mutex::new(ReplayGuard::new(
                config.replay_capacity(),
                config.max_skew_secs(),
            ))),
        }
    }
}

/// Middleware: admit only requests with a valid, unused gateway token.
pub async fn require_gateway_token(
    State(state): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    match admit(&state, &request, unix_now()) {
        Ok(context) => {
            request.extensions_mut().insert(context);
            next.run(request).await
        }
        Err(err) => {
            let remote = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.to_string());
            tracing::warn!(
                remote = remote.as_deref().unwrap_or("-"),
                method = %request.method(),
                path = %request.uri().path(),
                reason = err.reason(),
                "rejected request without a valid gateway token"
            );
            err.into_response()
        }
    }
}

fn admit(state: &AuthState, request: &Request, now: u64) -> Result<GatewayContext, ApiError> {
    let headers = request.headers();
    let (token, token_headers) = single_header(headers, GATEWAY_TOKEN_HEADER).map_err(|n| {
        unauthorized(if n == 0 {
            "missing_token"
        } else {
            "duplicate_token"
        })
    })?;
    let (request_id, _) = single_header(headers, REQUEST_ID_HEADER).map_err(|n| {
        unauthorized(if n == 0 {
            "missing_request_id"
        } else {
            "duplicate_request_id"
        })
    })?;
    let token = token.to_str().map_err(|_| unauthorized("malformed"))?;
    let request_id = request_id
        .to_str()
        .map_err(|_| unauthorized("invalid_request_id"))?;
    let path = request
        .uri()
        .path_and_query()
        .map_or(request.uri().path(), |pq| pq.as_str());

    let verified = state
        .verifier
        .verify(token, request_id, request.method().as_str(), path, now)
        .map_err(|err| unauthorized(token_reason(&err)))?;

    state
        .replay
        .lock()
        // The guard never panics mid-update, so a poisoned lock still holds a consistent store.
        .unwrap_or_else(PoisonError::into_inner)
        .check_and_insert(request_id, verified.timestamp, now)
        .map_err(|err| match err {
            ReplayError::Replayed => unauthorized("replayed"),
            ReplayError::Full => ApiError::Unavailable("replay_store_full"),
        })?;

    Ok(GatewayContext {
        token: verified,
        request_id: request_id.to_owned(),
        token_headers,
    })
}

/// The header's only value, or the number of values found when that is not exactly one.
fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<(&'h axum::http::HeaderValue, usize), usize> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Ok((value, 1)),
        (None, _) => Err(0),
        (Some(_), Some(_)) => Err(2 + values.count()),
    }
}

fn unauthorized(reason: &'static str) -> ApiError {
    ApiError::Unauthorized(reason)
}

/// The wire reason for a token failure.
fn token_reason(err: &TokenError) -> &'static str {
    match err {
        TokenError::Malformed => "malformed",
        TokenError::UnsupportedVersion => "unsupported_version",
        TokenError::InvalidField("request_id") => "invalid_request_id",
        TokenError::InvalidField("method") => "invalid_method",
        TokenError::InvalidField("path") => "invalid_path",
        TokenError::InvalidField(_) => "invalid_field",
        TokenError::Expired => "expired",
        TokenError::FromFuture => "from_future",
        TokenError::BadSignature => "bad_signature",
    }
}

/// Wall-clock Unix seconds; a clock before 1970 reads as 0 and every token looks from the future.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn single_header_counts() {
        let mut h = HeaderMap::new();
        assert_eq!(single_header(&h, "x-a").unwrap_err(), 0);
        h.append("x-a", HeaderValue::from_static("1"));
        assert_eq!(single_header(&h, "x-a").unwrap().1, 1);
        h.append("x-a", HeaderValue::from_static("2"));
        h.append("x-a", HeaderValue::from_static("3"));
        assert_eq!(single_header(&h, "x-a").unwrap_err(), 3);
    }

    #[test]
    fn every_token_error_has_a_snake_case_reason() {
        for err in [
            TokenError::Malformed,
            TokenError::UnsupportedVersion,
            TokenError::InvalidField("request_id"),
            TokenError::InvalidField("other"),
            TokenError::Expired,
            TokenError::FromFuture,
            TokenError::BadSignature,
        ] {
            let reason = token_reason(&err);
            assert!(reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
