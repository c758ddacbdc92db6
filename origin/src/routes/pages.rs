//! The storefront's static pages (embedded from `web/` via `seckill-shared`).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use seckill_shared::ErrorCode;

use crate::error::ApiError;

/// Answers GETs for embedded files; anything else is the contract's 404.
pub async fn serve(uri: Uri) -> Response {
    match seckill_shared::assets::lookup(uri.path()) {
        Some(asset) => (
            [
                (CONTENT_TYPE, asset.content_type),
                (CACHE_CONTROL, "public, max-age=60"),
            ],
            asset.body,
        )
            .into_response(),
        None => ApiError::new(ErrorCode::NotFound).into_response(),
    }
}
