//! Every request's body is read whole (up to [`MAX_BODY_BYTES`]) before it
//! is routed. A route that ignores its body (a buy, a read) would
//! otherwise answer with the body still unread, and the server would drop
//! the connection without saying so: a client that reused it would see its
//! next request fail mid-way. A body over the limit is refused with `413`
//! and `Connection: close`, since it was not read.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use seckill_shared::ErrorCode;

use super::error::ApiError;

/// Shared with the edge, which refuses the same bodies before forwarding.
pub use seckill_shared::api::MAX_BODY_BYTES;

pub(super) async fn read_whole(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(_) => ApiError::new(ErrorCode::PayloadTooLarge).into_response(),
    }
}
