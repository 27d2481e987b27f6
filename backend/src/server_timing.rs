//! `Server-Timing: app;dur=<ms>` on every response: the backend's own processing time, which
//! the gateway filter reads and reports with the request's outcome, so the security event of
//! a request carries gateway, upstream and backend latency on one row (docs/telemetry.md).

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The header.
pub const SERVER_TIMING_HEADER: &str = "server-timing";

/// Middleware: time the rest of the stack and say how long it took, in ms with µs precision.
pub async fn server_timing(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1_000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        response.headers_mut().append(SERVER_TIMING_HEADER, v);
    }
    response
}
