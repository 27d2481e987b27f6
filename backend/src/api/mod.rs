//! The demo API: routes, the small endpoints, and the parameter helpers the others share.
//!
//! Every endpoint is `GET`, answers JSON, and derives its data from ids (see [`seed`]), so
//! responses are realistic and reproducible without a database.

mod orders;
mod products;
mod search;
mod seed;
mod users;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query};
use axum::http::{Method, Uri};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::auth::GatewayContext;
use crate::error::ApiError;

/// Highest id served by `/api/users/{id}` and `/api/products/{id}`.
pub const MAX_RECORD_ID: u32 = 100_000;

/// All routes, without the gate (see [`crate::router`]).
pub fn routes() -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/whoami", get(whoami))
        .route("/api/users/{id}", get(users::get_user))
        .route("/api/products/{id}", get(products::get_product))
        .route("/api/orders", get(orders::list_orders))
        .route("/api/search", get(search::search))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// What the backend knows about the caller: proof that the gateway signed this request.
async fn whoami(Extension(ctx): Extension<GatewayContext>) -> Json<Value> {
    Json(json!({
        "key_id": ctx.token.key_id,
        "request_id": ctx.request_id,
        "token_timestamp": ctx.token.timestamp,
        "token_headers": ctx.token_headers,
    }))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found("no_route", format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Parses a record id from the path: decimal, 1..=[`MAX_RECORD_ID`]. Anything else is a
/// missing record (404), not a malformed request.
fn record_id(
    path: Result<Path<String>, PathRejection>,
    what: &'static str,
    reason: &'static str,
) -> Result<u32, ApiError> {
    let raw = path.map(|Path(raw)| raw).unwrap_or_default();
    raw.parse::<u32>()
        .ok()
        .filter(|id| raw.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_RECORD_ID).contains(id))
        .ok_or_else(|| {
            let message = if raw.len() <= 32 {
                format!("no {what} with id {raw:?}")
            } else {
                format!("no such {what}")
            };
            ApiError::not_found(reason, message)
        })
}

/// Query parameters, in order. Unknown ones are ignored; a repeated known one is an error.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Self, ApiError> {
        query
            .map(|Query(pairs)| Self(pairs))
            .map_err(|_| ApiError::bad_request("invalid_query", "the query string is not valid"))
    }

    fn one(&self, name: &'static str) -> Result<Option<&str>, ApiError> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "duplicate_parameter",
                format!("{name} given more than once"),
            )),
            (first, _) => Ok(first),
        }
    }

    /// A decimal integer parameter within `range`, or `default` when absent.
    fn int_in(
        &self,
        name: &'static str,
        range: std::ops::RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, ApiError> {
        let Some(raw) = self.one(name)? else {
            return Ok(default);
        };
        raw.parse::<u64>()
            .ok()
            .filter(|v| raw.bytes().all(|b| b.is_ascii_digit()) && range.contains(v))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!(
                        "{name} must be an integer between {} and {}",
                        range.start(),
                        range.end()
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    #[test]
    fn record_ids() {
        let ok = |s: &str| record_id(Ok(Path(s.to_owned())), "user", "user_not_found");
        assert_eq!(ok("1"), Ok(1));
        assert_eq!(ok("100000"), Ok(100_000));
        for bad in ["0", "100001", "-1", "+1", "abc", "", "1.5", "99999999999"] {
            assert_eq!(ok(bad).unwrap_err().reason(), "user_not_found", "{bad}");
        }
    }

    #[test]
    fn int_params() {
        let p = params(&[("page", "3"), ("x", "y")]);
        assert_eq!(p.int_in("page", 1..=10, 1), Ok(3));
        assert_eq!(p.int_in("page_size", 1..=100, 20), Ok(20));
        assert!(params(&[("page", "0")]).int_in("page", 1..=10, 1).is_err());
        assert!(params(&[("page", "+1")]).int_in("page", 1..=10, 1).is_err());
        assert!(params(&[("page", "")]).int_in("page", 1..=10, 1).is_err());
        let dup = params(&[("page", "1"), ("page", "2")]);
        assert_eq!(
            dup.int_in("page", 1..=10, 1).unwrap_err().reason(),
            "duplicate_parameter"
        );
    }
}
