//! Every rejection kind, rendered by `Rejection::respond` inside a real
//! layer, as a real HTTP/1.1 client and a real tonic client see it.

mod support;

use std::task::{Context, Poll};

use finmesh::future::ResponseFuture;
use finmesh::{Rejection, RejectionKind, RequestLabels, ResponseBody};
use http::{Request, Response};
use support::*;
use tower::{Layer, Service};

/// Rejects requests that carry `x-reject: <kind>`; passes the rest.
#[derive(Clone)]
struct RejectLayer;

impl<S> Layer<S> for RejectLayer {
    type Service = Reject<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Reject { inner }
    }
}

#[derive(Clone)]
struct Reject<S> {
    inner: S,
}

const DETAIL: &str = "Überweisung abgelehnt: 100% — \"nein\" 💸";

fn kind_named(name: &str) -> Option<RejectionKind> {
    CASES.iter().find(|c| c.0 == name).map(|c| c.1)
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Reject<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        if let Some(trace) = req.headers().get("x-trace").and_then(|v| v.to_str().ok()) {
            let trace = trace.to_owned();
            RequestLabels::get_or_insert(req.extensions_mut()).set_trace_id(trace);
        }
        let kind = req
            .headers()
            .get("x-reject")
            .and_then(|v| v.to_str().ok())
            .and_then(kind_named);
        match kind {
            Some(kind) => {
                let mut rejection = Rejection::new(kind, format!("test.{kind:?}"), DETAIL);
                if req.headers().contains_key("x-bearer-error") {
                    rejection = rejection.with_bearer_error("invalid_token");
                }
                ResponseFuture::rejected(rejection.respond(&req))
            }
            None => ResponseFuture::inner(self.inner.call(req)),
        }
    }
}

/// (name, kind, HTTP status, gRPC code)
const CASES: &[(&str, RejectionKind, u16, tonic::Code)] = &[
    (
        "invalid",
        RejectionKind::InvalidArgument,
        400,
        tonic::Code::InvalidArgument,
    ),
    (
        "unauthenticated",
        RejectionKind::Unauthenticated,
        401,
        tonic::Code::Unauthenticated,
    ),
    (
        "denied",
        RejectionKind::PermissionDenied,
        403,
        tonic::Code::PermissionDenied,
    ),
    (
        "timeout",
        RejectionKind::RequestTimeout,
        408,
        tonic::Code::DeadlineExceeded,
    ),
    (
        "conflict",
        RejectionKind::Conflict,
        409,
        tonic::Code::Aborted,
    ),
    (
        "too-large",
        RejectionKind::PayloadTooLarge,
        413,
        tonic::Code::ResourceExhausted,
    ),
    (
        "unprocessable",
        RejectionKind::Unprocessable,
        422,
        tonic::Code::FailedPrecondition,
    ),
    (
        "exhausted",
        RejectionKind::ResourceExhausted,
        429,
        tonic::Code::ResourceExhausted,
    ),
    (
        "internal",
        RejectionKind::Internal,
        500,
        tonic::Code::Internal,
    ),
    (
        "unavailable",
        RejectionKind::Unavailable,
        503,
        tonic::Code::Unavailable,
    ),
    (
        "deadline",
        RejectionKind::DeadlineExceeded,
        504,
        tonic::Code::DeadlineExceeded,
    ),
];

#[tokio::test]
async fn each_rejection_kind_renders_as_problem_json_over_http1() {
    let server = spawn(echo_app().layer(RejectLayer)).await;
    for (name, kind, status, _) in CASES {
        let res = get(
            &server.url("/echo"),
            &[
                ("x-reject", name),
                ("x-trace", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ],
        )
        .await;
        assert_eq!(res.status.as_u16(), *status, "{name}");
        assert_eq!(
            res.header("content-type"),
            "application/problem+json",
            "{name}"
        );
        let p = res.json();
        let code = format!("test.{kind:?}");
        assert_eq!(p["type"], format!("urn:finmesh:problem:{code}"), "{name}");
        assert_eq!(p["title"], kind.title(), "{name}");
        assert_eq!(p["status"], *status, "{name}");
        assert_eq!(p["detail"], DETAIL, "{name}");
        assert_eq!(p["code"], code, "{name}");
        assert_eq!(p["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{name}");
        let www = res.header("www-authenticate");
        if *status == 401 {
            assert_eq!(www, "Bearer", "no error attribute without a faulted token");
        } else {
            assert_eq!(www, "", "{name}");
        }
    }
    // Without a trace id there is no trace_id member.
    let res = get(&server.url("/echo"), &[("x-reject", "denied")]).await;
    assert!(res.json().get("trace_id").is_none());
    // A faulted token gets the RFC 6750 error attribute.
    let res = get(
        &server.url("/echo"),
        &[("x-reject", "unauthenticated"), ("x-bearer-error", "1")],
    )
    .await;
    assert!(
        res.header("www-authenticate")
            .starts_with("Bearer error=\"invalid_token\"")
    );
    // Requests that are not rejected pass through untouched.
    let res = get(&server.url("/ok"), &[]).await;
    assert_eq!((res.status.as_u16(), &res.body[..]), (200, &b"ok"[..]));
    server.shutdown().await;
}

#[tokio::test]
async fn each_rejection_kind_reaches_a_tonic_client_as_its_status() {
    let server = spawn(echo_app().layer(RejectLayer)).await;
    let mut client = grpc_client(server.addr).await;
    for (name, kind, _, code) in CASES {
        let status = client
            .unary(grpc_request(EchoRequest::default(), &[("x-reject", name)]))
            .await
            .expect_err(name);
        assert_eq!(status.code(), *code, "{name}");
        // The stable machine code rides along as metadata.
        assert_eq!(
            status
                .metadata()
                .get(finmesh::reject::CODE_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some(format!("test.{kind:?}").as_str()),
            "{name}"
        );
        assert_eq!(
            status.message(),
            DETAIL,
            "{name}: non-ASCII survives percent-encoding"
        );
    }
    // A bidi call is rejected the same way, before any message.
    let status = client
        .bidi(grpc_request(
            tokio_stream::iter(vec![EchoRequest::default()]),
            &[("x-reject", "denied")],
        ))
        .await
        .expect_err("bidi rejected");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    // Not rejected: the call works.
    let reply = client
        .unary(EchoRequest {
            message: "hi".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "hi");
    server.shutdown().await;
}

#[tokio::test]
async fn grpc_rejection_is_trailers_only() {
    let server = spawn(echo_app().layer(RejectLayer)).await;
    // Raw h2c request, so we see the wire form rather than tonic's reading of it.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(server.url("/finmesh.test.v1.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-reject", "denied")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert_eq!(res.headers()["grpc-status"], "7");
    assert_eq!(res.headers()["finmesh-code"], "test.PermissionDenied");
    assert!(
        res.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("%C3%9Cberweisung")
    );
    use http_body::Body as _;
    assert!(res.body().is_end_stream(), "no body: trailers-only");
    server.shutdown().await;
}
