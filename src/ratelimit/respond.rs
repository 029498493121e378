//! The answers: a refusal with `Retry-After` and the RateLimit fields (or
//! gRPC's `grpc-retry-pushback-ms`), and the fields on a success.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Request, Response};

use super::decide::{Quota, Refusal};
use super::gcra::{ceil_millis, ceil_secs};
use crate::body::RejectionBody;
use crate::reject::Protocol;

/// `RateLimit-Policy` (IETF httpapi draft): `"<rule>";q=<requests>;w=<seconds>`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (IETF httpapi draft): `"<rule>";r=<remaining>;t=<seconds>`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// The gRPC retry pushback trailer, in milliseconds (gRFC A6).
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Adds the two RateLimit fields for `quota`.
pub(super) fn insert_fields(headers: &mut HeaderMap, quota: &Quota) {
    // Rule names are DNS-1123 labels: always a valid sf-string.
    let policy = format!(
        "\"{}\";q={};w={}",
        quota.rule,
        quota.requests,
        ceil_secs(nanos(quota.period))
    );
    let state = format!(
        "\"{}\";r={};t={}",
        quota.rule,
        quota.remaining,
        if quota.reset.is_zero() {
            0
        } else {
            ceil_secs(nanos(quota.reset))
        }
    );
    if let (Ok(p), Ok(s)) = (HeaderValue::try_from(policy), HeaderValue::try_from(state)) {
        headers.insert(RATELIMIT_POLICY, p);
        headers.insert(RATELIMIT, s);
    }
}

impl Refusal {
    /// The rendered refusal for `req` (which also records it on the
    /// request's labels, for telemetry and audit).
    pub(super) fn respond<B>(&self, req: &Request<B>) -> Response<RejectionBody> {
        let mut res = self.rejection.respond(req);
        let retry = nanos(self.retry_after);
        let headers = res.headers_mut();
        match Protocol::of(req.headers()) {
            Protocol::Grpc => {
                headers.insert(
                    GRPC_RETRY_PUSHBACK_MS,
                    HeaderValue::from(ceil_millis(retry)),
                );
            }
            Protocol::Http => {
                headers.insert(RETRY_AFTER, HeaderValue::from(ceil_secs(retry)));
                if let Some(quota) = &self.quota {
                    insert_fields(headers, quota);
                }
            }
        }
        res
    }
}
