//! [`Rejection`]: the one error type every finmesh layer answers with.
//!
//! A layer that refuses a request does not return `Err`: it answers with a
//! response, so the inner service's error type passes through untouched
//! (axum needs `Infallible`). The response is rendered for the protocol of
//! the request it answers:
//!
//! - **gRPC** (request `content-type` is gRPC's, see [`Protocol`]): HTTP
//!   200, `content-type: application/grpc`, `grpc-status` and a
//!   percent-encoded `grpc-message` as headers, and no body — a
//!   *trailers-only* response, which every gRPC client reads as a `Status`.
//!   The stable machine code travels beside them as the
//!   [`CODE_METADATA`] key (`finmesh-code: tenant.suspended`), which a
//!   tonic client reads from `status.metadata()`.
//! - **Everything else**: the fitting HTTP status and an
//!   `application/problem+json` body (RFC 9457) with `type`, `title`,
//!   `status`, `detail`, the stable machine `code`, and the `trace_id` when
//!   the telemetry layer has one. A 401 carries `WWW-Authenticate: Bearer`
//!   with an RFC 6750 `error` when there was a token to fault.
//!
//! # Response bodies for any inner body type
//!
//! A rejection renders as a `Response<`[`RejectionBody`]`>`. A layer
//! wrapping `S: Service<Request<ReqB>, Response = Response<B>>` answers
//! with `Response<`[`ResponseBody`](crate::ResponseBody)`<B>>`: either the
//! inner body, passed through without boxing, or the rejection's bytes
//! (`ResponseBody::from(rejection_body)`). `ResponseBody` keeps `B::Error`, so it satisfies axum
//! (`IntoResponse` for any `Body<Data = Bytes>`) and tonic (any body whose
//! error converts into a boxed error) alike, and nested layers nest their
//! body types at zero cost. A layer whose decision is synchronous returns
//! [`ResponseFuture`](crate::future::ResponseFuture), which is either the
//! inner future or the ready rejection.
//!
//! # Example
//!
//! ```
//! use finmesh::{Rejection, RejectionKind};
//!
//! let req = http::Request::builder()
//!     .header("content-type", "application/grpc")
//!     .body(())
//!     .unwrap();
//! let rejection = Rejection::new(
//!     RejectionKind::PermissionDenied,
//!     "tenant.suspended",
//!     "tenant \"acme\" is suspended",
//! );
//! let res = rejection.respond(&req);
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["grpc-status"], "7");
//! assert_eq!(res.headers()["grpc-message"], "tenant \"acme\" is suspended");
//! assert_eq!(res.headers()["finmesh-code"], "tenant.suspended");
//!
//! let req = http::Request::new(());
//! let res = rejection.respond(&req);
//! assert_eq!(res.status(), 403);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! ```

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, Request, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::body::RejectionBody;
use crate::labels::RequestLabels;

/// The gRPC metadata key (a response header or trailer) that carries a
/// rejection's stable machine [`code`](Rejection::code) next to
/// `grpc-status`, so gRPC clients can tell `tenant.mismatch` from
/// `rbac.denied` without parsing the human message.
pub const CODE_METADATA: &str = "finmesh-code";

/// What went wrong, in the vocabulary shared by HTTP and gRPC.
///
/// Each kind maps to one HTTP status and one gRPC status code:
///
/// | kind | HTTP | gRPC |
/// |---|---|---|
/// | `InvalidArgument` | 400 | 3 `INVALID_ARGUMENT` |
/// | `Unauthenticated` | 401 | 16 `UNAUTHENTICATED` |
/// | `PermissionDenied` | 403 | 7 `PERMISSION_DENIED` |
/// | `NotFound` | 404 | 5 `NOT_FOUND` |
/// | `RequestTimeout` | 408 | 4 `DEADLINE_EXCEEDED` |
/// | `Conflict` | 409 | 10 `ABORTED` |
/// | `PayloadTooLarge` | 413 | 8 `RESOURCE_EXHAUSTED` |
/// | `Unprocessable` | 422 | 9 `FAILED_PRECONDITION` |
/// | `ResourceExhausted` | 429 | 8 `RESOURCE_EXHAUSTED` |
/// | `Internal` | 500 | 13 `INTERNAL` |
/// | `Unavailable` | 503 | 14 `UNAVAILABLE` |
/// | `DeadlineExceeded` | 504 | 4 `DEADLINE_EXCEEDED` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The request is malformed (a bad header, an invalid value).
    InvalidArgument,
    /// No valid credentials.
    Unauthenticated,
    /// Credentials are valid but do not allow this request.
    PermissionDenied,
    /// The named thing does not exist (for the application's own use; the
    /// governance layers never confirm what exists, and answer 403).
    NotFound,
    /// The caller was too slow sending the request (a stalled body).
    RequestTimeout,
    /// The request conflicts with one in progress.
    Conflict,
    /// The request body is over a limit.
    PayloadTooLarge,
    /// Well-formed, but cannot be processed as sent (a reused key).
    Unprocessable,
    /// A quota or size limit was hit.
    ResourceExhausted,
    /// A bug or an unexpected state on our side.
    Internal,
    /// A dependency (a store, a queue) cannot take the request now.
    Unavailable,
    /// The call ran out of time.
    DeadlineExceeded,
}

impl RejectionKind {
    /// The HTTP status for this kind.
    pub const fn http_status(self) -> StatusCode {
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The gRPC status code for this kind (`grpc-status`).
    pub const fn grpc_code(self) -> u8 {
        match self {
            Self::InvalidArgument => 3,
            Self::Unauthenticated => 16,
            Self::PermissionDenied => 7,
            Self::NotFound => 5,
            Self::RequestTimeout | Self::DeadlineExceeded => 4,
            Self::Conflict => 10,
            Self::PayloadTooLarge | Self::ResourceExhausted => 8,
            Self::Unprocessable => 9,
            Self::Internal => 13,
            Self::Unavailable => 14,
        }
    }

    /// A short human title for problem+json (RFC 9457 `title`).
    pub const fn title(self) -> &'static str {
        match self {
            Self::InvalidArgument => "Invalid argument",
            Self::Unauthenticated => "Unauthenticated",
            Self::PermissionDenied => "Permission denied",
            Self::NotFound => "Not found",
            Self::RequestTimeout => "Request timeout",
            Self::Conflict => "Conflict",
            Self::PayloadTooLarge => "Payload too large",
            Self::Unprocessable => "Unprocessable request",
            Self::ResourceExhausted => "Resource exhausted",
            Self::Internal => "Internal error",
            Self::Unavailable => "Unavailable",
            Self::DeadlineExceeded => "Deadline exceeded",
        }
    }
}

/// A refusal with a stable machine code, rendered per protocol.
///
/// `code` is a stable dotted string (`tenant.suspended`, `rbac.denied`) that
/// clients and dashboards may match on; `detail` is for humans and may
/// change. The part of the code before the first dot names the layer that
/// rejected (`tenant`, `auth`, `rbac`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    kind: RejectionKind,
    code: Cow<'static, str>,
    detail: Cow<'static, str>,
    bearer_error: Option<&'static str>,
}

/// `grpc-message` is percent-encoded: everything outside printable ASCII,
/// and `%` itself (gRPC over HTTP/2 spec, "Responses").
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Where rejection problem types live: a URN, so no host is implied.
const PROBLEM_TYPE_PREFIX: &str = "urn:finmesh:problem:";

impl Rejection {
    /// A rejection of `kind` with a stable `code` and a human `detail`.
    pub fn new(
        kind: RejectionKind,
        code: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            kind,
            code: code.into(),
            detail: detail.into(),
            bearer_error: None,
        }
    }

    /// Adds a `WWW-Authenticate: Bearer` header with the RFC 6750 `error`
    /// attribute: `invalid_token` on a 401, `invalid_request` on a 400,
    /// `insufficient_scope` on a 403. Without it a 401 says just `Bearer`,
    /// which is what RFC 6750 asks for when the request carried no token
    /// at all, and other statuses carry no `WWW-Authenticate`.
    pub fn with_bearer_error(mut self, error: &'static str) -> Self {
        self.bearer_error = Some(error);
        self
    }

    /// The kind.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The stable machine code, e.g. `tenant.suspended`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The layer that rejected: the part of the code before the first dot.
    pub fn layer(&self) -> &str {
        self.code.split('.').next().unwrap_or_default()
    }

    /// The HTTP status this rejection renders with outside gRPC.
    pub fn http_status(&self) -> StatusCode {
        self.kind.http_status()
    }

    /// The gRPC status code this rejection renders with.
    pub fn grpc_code(&self) -> u8 {
        self.kind.grpc_code()
    }

    /// Answers `req` with this rejection, and records it on the request.
    ///
    /// The protocol is read from the request's `content-type`; the trace id
    /// from the [`RequestLabels`] in its extensions. The rejection is also
    /// recorded in those labels, so that the telemetry and audit layers see
    /// which layer refused the request and why. The crate's
    /// [`ResponseBody`](crate::ResponseBody) and the body of every layer
    /// that refuses convert from the [`RejectionBody`] with `From`.
    pub fn respond<ReqB>(&self, req: &Request<ReqB>) -> Response<RejectionBody> {
        let labels = req.extensions().get::<RequestLabels>();
        if let Some(labels) = labels {
            labels.record_rejection(self);
        }
        let trace_id = labels.and_then(RequestLabels::trace_id);
        self.render(Protocol::of(req.headers()), trace_id.as_deref())
    }

    /// Renders this rejection for `protocol`, with an optional trace id in
    /// the problem+json body. Does not touch any request state; most
    /// callers want [`Rejection::respond`].
    pub fn render(&self, protocol: Protocol, trace_id: Option<&str>) -> Response<RejectionBody> {
        match protocol {
            Protocol::Grpc => self.render_grpc(),
            Protocol::Http => self.render_problem(trace_id),
        }
    }

    fn render_grpc(&self) -> Response<RejectionBody> {
        let mut res = Response::new(RejectionBody::default());
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.kind.grpc_code())),
        );
        let message = utf8_percent_encode(&self.detail, GRPC_MESSAGE).to_string();
        // Percent-encoding leaves only visible ASCII and spaces, so this
        // cannot fail; fall back to no message rather than panic.
        if let Ok(value) = HeaderValue::try_from(message) {
            headers.insert("grpc-message", value);
        }
        if let Some(code) = self.code_header() {
            headers.insert(CODE_METADATA, code);
        }
        res
    }

    /// The code as a header value; `None` for a (custom) code that is not
    /// a valid header value.
    fn code_header(&self) -> Option<HeaderValue> {
        match &self.code {
            // Built-in codes are static: no allocation on the reject path.
            Cow::Borrowed(code) if code.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(HeaderValue::from_static(code))
            }
            code => HeaderValue::try_from(code.as_ref()).ok(),
        }
    }

    fn render_problem(&self, trace_id: Option<&str>) -> Response<RejectionBody> {
        let status = self.kind.http_status();
        let body = serde_json::to_vec(&Problem {
            r#type: format_args!("{PROBLEM_TYPE_PREFIX}{}", self.code),
            title: self.kind.title(),
            status: status.as_u16(),
            detail: &self.detail,
            code: &self.code,
            trace_id,
        })
        .unwrap_or_default();
        let mut res = Response::new(RejectionBody::new(Bytes::from(body)));
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.kind == RejectionKind::Unauthenticated || self.bearer_error.is_some() {
            headers.insert(WWW_AUTHENTICATE, self.www_authenticate());
        }
        res
    }

    fn www_authenticate(&self) -> HeaderValue {
        match self.bearer_error {
            None => HeaderValue::from_static("Bearer"),
            Some(error) => {
                // The description is ours, never the token; quotes and
                // backslashes are not allowed in it by RFC 6750 §3.
                let description: String = self
                    .detail
                    .chars()
                    .filter(|c| matches!(c, ' ' | '!' | '#'..='[' | ']'..='~'))
                    .collect();
                HeaderValue::try_from(format!(
                    "Bearer error=\"{error}\", error_description=\"{description}\""
                ))
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
            }
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Rejection {}

#[cfg(any(feature = "deadline", feature = "grpc"))]
impl From<Rejection> for tonic::Status {
    fn from(rejection: Rejection) -> Self {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(code) = rejection.code_header()
            && let Ok(code) = tonic::metadata::MetadataValue::try_from(code.as_bytes())
        {
            metadata.insert(CODE_METADATA, code);
        }
        tonic::Status::with_metadata(
            tonic::Code::from_i32(i32::from(rejection.grpc_code())),
            rejection.detail.into_owned(),
            metadata,
        )
    }
}

#[derive(serde::Serialize)]
struct Problem<'a, T: fmt::Display> {
    #[serde(serialize_with = "serialize_display")]
    r#type: T,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
}

fn serialize_display<T: fmt::Display, S: serde::Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The protocol a request *claims*, which decides only how a refusal is
/// rendered.
///
/// Security: the content-type is the client's claim. It chooses the
/// rendering of an answer and nothing else: which rules govern a request
/// follows from the path it reaches and the routes and methods the service
/// configured (see each layer's docs), never from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC, as the gRPC-over-HTTP/2 spec defines its content-type:
    /// `application/grpc` alone or followed by `+` (`+proto`, `+json`, …)
    /// or `;` (parameters), type and subtype compared case-insensitively.
    /// gRPC-Web (`application/grpc-web`, `application/grpc-web-text`, with
    /// the same suffixes) is a different protocol, but it reads a
    /// trailers-only status from the response headers as gRPC does, so it
    /// is answered the gRPC way too.
    Grpc,
    /// Anything else, including no content-type and look-alikes such as
    /// `application/grpcx`.
    Http,
}

impl Protocol {
    /// Reads the protocol a request claims from its headers (the first
    /// `content-type`, as every other reader of the head sees it).
    pub fn of(headers: &HeaderMap) -> Self {
        match headers.get(CONTENT_TYPE) {
            Some(ct) if is_grpc_content_type(ct.as_bytes()) => Self::Grpc,
            _ => Self::Http,
        }
    }

    /// Whether this is gRPC.
    pub fn is_grpc(self) -> bool {
        self == Self::Grpc
    }
}

/// The gRPC service a request path reaches, `pkg.Service` for
/// `/pkg.Service/Method`: the first segment, which is what a gRPC server
/// (tonic's router) routes on. `None` for a path with no second segment.
#[cfg(any(feature = "idempotency", feature = "deadline"))]
pub(crate) fn grpc_service_of(path: &str) -> Option<&str> {
    let (service, _method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty()).then_some(service)
}

/// A gRPC service name as a layer's builder takes it: `pkg.Service`, with
/// or without its slashes.
#[cfg(any(feature = "idempotency", feature = "deadline"))]
#[cfg(any(feature = "idempotency", feature = "deadline"))]
pub(crate) fn grpc_service_name(name: &str) -> Box<str> {
    let name = name.trim_matches('/');
    assert!(
        !name.is_empty() && !name.contains('/'),
        "finmesh: invalid gRPC service name {name:?}"
    );
    name.into()
}

/// `grpc-status`, as a name: a `&str` key would be parsed on every lookup.
pub(crate) static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Whether `ct` is a gRPC or gRPC-Web content-type (see [`Protocol::Grpc`]).
fn is_grpc_content_type(ct: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    if ct.len() < GRPC.len() || !ct[..GRPC.len()].eq_ignore_ascii_case(GRPC) {
        return false;
    }
    let mut rest = &ct[GRPC.len()..];
    for web in [&b"-web-text"[..], b"-web"] {
        if rest.len() >= web.len() && rest[..web.len()].eq_ignore_ascii_case(web) {
            rest = &rest[web.len()..];
            break;
        }
    }
    matches!(rest.first(), None | Some(b'+' | b';'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn grpc_content_types_are_read_as_the_spec_defines_them() {
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc+json", true),
            ("application/grpc;charset=utf-8", true),
            ("APPLICATION/GRPC", true),
            ("Application/gRPC+Proto", true),
            ("application/grpc-web", true),
            ("application/grpc-web+proto", true),
            ("application/grpc-web-text", true),
            ("application/grpc-web-text+proto", true),
            ("application/grpcx", false),
            ("application/grpc-webx", false),
            ("application/grpc-", false),
            ("application/grpc ;x=y", false),
            ("application/json", false),
            ("application/json; x=application/grpc", false),
            ("", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            assert_eq!(Protocol::of(&headers).is_grpc(), grpc, "{ct:?}");
        }
        assert_eq!(Protocol::of(&HeaderMap::new()), Protocol::Http);
    }

    const ALL: [RejectionKind; 12] = [
        RejectionKind::InvalidArgument,
        RejectionKind::Unauthenticated,
        RejectionKind::PermissionDenied,
        RejectionKind::NotFound,
        RejectionKind::RequestTimeout,
        RejectionKind::Conflict,
        RejectionKind::PayloadTooLarge,
        RejectionKind::Unprocessable,
        RejectionKind::ResourceExhausted,
        RejectionKind::Internal,
        RejectionKind::Unavailable,
        RejectionKind::DeadlineExceeded,
    ];

    #[test]
    fn kinds_map_to_the_documented_statuses() {
        let http: Vec<u16> = ALL.iter().map(|k| k.http_status().as_u16()).collect();
        assert_eq!(
            http,
            [400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 503, 504]
        );
        let grpc: Vec<u8> = ALL.iter().map(|k| k.grpc_code()).collect();
        assert_eq!(grpc, [3, 16, 7, 5, 4, 10, 8, 9, 8, 13, 14, 4]);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        let r = Rejection::new(RejectionKind::Internal, "x.y", "100% Überweisung\n");
        let res = r.render(Protocol::Grpc, None);
        assert_eq!(res.headers()["grpc-message"], "100%25 %C3%9Cberweisung%0A");
        assert_eq!(res.headers()["grpc-status"], "13");
        assert_eq!(res.headers()["content-type"], "application/grpc");
    }

    #[tokio::test]
    async fn problem_json_has_every_field() {
        let r = Rejection::new(
            RejectionKind::Conflict,
            "idempotency.in_flight",
            "busy \"now\"",
        );
        let res = r.render(Protocol::Http, Some("abc"));
        assert_eq!(res.status(), 409);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "urn:finmesh:problem:idempotency.in_flight");
        assert_eq!(v["title"], "Conflict");
        assert_eq!(v["status"], 409);
        assert_eq!(v["detail"], "busy \"now\"");
        assert_eq!(v["code"], "idempotency.in_flight");
        assert_eq!(v["trace_id"], "abc");
    }

    #[test]
    fn unauthenticated_carries_www_authenticate() {
        let missing = Rejection::new(RejectionKind::Unauthenticated, "auth.missing", "no token");
        let res = missing.render(Protocol::Http, None);
        assert_eq!(res.headers()[WWW_AUTHENTICATE], "Bearer");
        let bad = Rejection::new(
            RejectionKind::Unauthenticated,
            "auth.invalid",
            "bad \"sig\"\\",
        )
        .with_bearer_error("invalid_token");
        let res = bad.render(Protocol::Http, None);
        assert_eq!(
            res.headers()[WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"bad sig\""
        );
        let denied = Rejection::new(RejectionKind::PermissionDenied, "rbac.denied", "no");
        assert!(
            denied
                .render(Protocol::Http, None)
                .headers()
                .get(WWW_AUTHENTICATE)
                .is_none()
        );
        let scope = Rejection::new(RejectionKind::PermissionDenied, "x.scope", "needs scope")
            .with_bearer_error("insufficient_scope");
        assert_eq!(
            scope.render(Protocol::Http, None).headers()[WWW_AUTHENTICATE],
            "Bearer error=\"insufficient_scope\", error_description=\"needs scope\""
        );
    }

    #[test]
    fn protocol_is_read_from_content_type() {
        let mut h = HeaderMap::new();
        assert_eq!(Protocol::of(&h), Protocol::Http);
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert_eq!(Protocol::of(&h), Protocol::Grpc);
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(Protocol::of(&h), Protocol::Http);
    }

    #[test]
    fn layer_is_the_code_prefix() {
        let r = Rejection::new(RejectionKind::PermissionDenied, "tenant.suspended", "");
        assert_eq!(r.layer(), "tenant");
    }
}
