//! The demo API that Palisade protects, and the gateway-token gate in front of it.
//!
//! Zero trust: the backend does not rely on network position. Every request, health check
//! included, must carry an `X-Gateway-Token` that the gateway signed for exactly this
//! request id, method and path, within the allowed clock skew, and not seen before
//! (`docs/gateway-token.md`). Anything else gets a JSON 401, or 503 when the replay store is
//! full of live ids.
//!
//! The e2e harness and the integration tests run it in-process through [`serve`] (or
//! [`router`]); `main.rs` only parses flags, sets up logging and handles signals.
//!
//! # Layout
//!
//! - [`config`]: flags and env variables ([`Args`]), validated into a [`BackendConfig`];
//!   problems name their flag, keys never appear in messages.
//! - [`server_timing`]: `Server-Timing: app;dur=<ms>` on every response, for the gateway's events.
//! - [`auth`]: the middleware that verifies the token and records the request id against
//!   replay; puts a [`GatewayContext`] in the request extensions.
//! - [`request_id`]: echoes `X-Request-ID` on every response.
//! - [`api`]: the routes: health, whoami, users, products, orders, search, all with data
//!   derived deterministically from ids.
//! - [`error`]: [`ApiError`], the single mapping from failures to JSON responses.

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod request_id;
pub mod server_timing;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use tokio::net::TcpListener;

pub use auth::{GATEWAY_TOKEN_HEADER, GatewayContext, REQUEST_ID_HEADER};
pub use config::{Args, BackendConfig, ConfigError, InvalidConfig};
pub use error::ApiError;

/// The whole application: every route behind the gateway-token gate, with the request id
/// echoed on every response. Each call gets its own, empty replay store.
pub fn router(config: BackendConfig) -> Router {
    let gate = auth::AuthState::new(&config);
    api::routes()
        .layer(from_fn_with_state(gate, auth::require_gateway_token))
        .layer(from_fn(request_id::echo_request_id))
        .layer(from_fn(server_timing::server_timing))
}

/// Serves [`router`] on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    config: BackendConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(config).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
