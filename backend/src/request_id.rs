//! Echoes the caller's `X-Request-ID` on every response, rejections included, so a client
//! (or the gateway) can correlate any answer with its request.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::REQUEST_ID_HEADER;

/// Middleware: copy a single `X-Request-ID` request header onto the response. With none, or
/// several (which the gate rejects), nothing is echoed.
pub async fn echo_request_id(request: Request, next: Next) -> Response {
    let mut ids = request.headers().get_all(REQUEST_ID_HEADER).iter();
    let id = match (ids.next(), ids.next()) {
        (Some(id), None) => Some(id.clone()),
        _ => None,
    };
    let mut response = next.run(request).await;
    if let Some(id) = id {
        response.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    response
}
