//! The answers the layer gives without running the handler: rejections
//! and replays.

use std::borrow::Cow;

use http::header::HeaderValue;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;

use super::IdempotencyCode;
use super::body::IdempotencyBody;
use super::key::IDEMPOTENCY_REPLAYED;
use super::store::StoredResponse;
use crate::codes::RejectionCode;

/// Renders a rejection for the request with these parts.
pub(super) fn reject<B: Body>(
    parts: Parts,
    code: IdempotencyCode,
    detail: impl Into<Cow<'static, str>>,
) -> Response<IdempotencyBody<B>> {
    let req = Request::from_parts(parts, ());
    code.reject(detail).respond(&req).map(IdempotencyBody::from)
}

/// 413 for a body over `limit` bytes.
pub(super) fn too_large<B: Body>(parts: Parts, limit: usize) -> Response<IdempotencyBody<B>> {
    reject(
        parts,
        IdempotencyCode::PayloadTooLarge,
        format!("the request body is larger than {limit} bytes"),
    )
}

/// The stored response, as it was first sent, marked as a replay.
pub(super) fn replay<B: Body>(stored: &StoredResponse) -> Response<IdempotencyBody<B>> {
    let mut res = Response::new(IdempotencyBody::full(
        stored.body.clone(),
        stored.trailers.clone(),
    ));
    *res.status_mut() = stored.status;
    *res.headers_mut() = stored.headers.clone();
    res.headers_mut()
        .insert(IDEMPOTENCY_REPLAYED, HeaderValue::from_static("true"));
    res
}
