//! The storefront's static pages (embedded from `web/` via `seckill-shared`).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use seckill_shared::ErrorCode;

use super::error::ApiError;

/// Answers GETs for embedded files (304 when the browser's copy is
/// current); anything else is the contract's 404.
pub async fn serve(uri: Uri, headers: HeaderMap) -> Response {
    let Some(asset) = seckill_shared::assets::lookup(uri.path()) else {
        return ApiError::new(ErrorCode::NotFound).into_response();
    };
    let cached = headers
        .get(IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| asset.matches(value));
    let caching = [
        (
            CACHE_CONTROL,
            seckill_shared::assets::CACHE_CONTROL.to_string(),
        ),
        (ETAG, asset.etag_header()),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, caching).into_response();
    }
    (caching, [(CONTENT_TYPE, asset.content_type)], asset.body).into_response()
}
