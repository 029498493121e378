//! Writing your own governance layer on finmesh's shared pieces.
//!
//! A layer that refuses requests without an `x-api-version` header, with a
//! `Rejection` that renders as problem+json for HTTP callers and as a
//! `grpc-status` for gRPC callers. It keeps the inner service's error type,
//! so it drops into an axum router unchanged.
//!
//! ```sh
//! cargo run --example custom_layer            # serves 127.0.0.1:3000
//! curl -i localhost:3000/                     # 400 problem+json
//! curl -i -H 'x-api-version: 1' localhost:3000/
//! ```

use std::task::{Context, Poll};

use finmesh::future::ResponseFuture;
use finmesh::{Rejection, RejectionKind, ResponseBody};
use http::{Request, Response};
use tower::{Layer, Service};

/// Requires an `x-api-version` header.
#[derive(Clone, Copy, Default)]
struct RequireVersionLayer;

impl<S> Layer<S> for RequireVersionLayer {
    type Service = RequireVersion<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireVersion { inner }
    }
}

#[derive(Clone)]
struct RequireVersion<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for RequireVersion<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if req.headers().contains_key("x-api-version") {
            return ResponseFuture::inner(self.inner.call(req));
        }
        let rejection = Rejection::new(
            RejectionKind::InvalidArgument,
            "example.version_missing",
            "send x-api-version",
        );
        ResponseFuture::rejected(rejection.respond(&req))
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello\n" }))
        .layer(RequireVersionLayer);
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
