//! [`OptionalLayer`]: a layer that may be absent, at no cost when present.
//!
//! `tower::util::option_layer` needs both branches to answer with the same
//! response type, but finmesh layers wrap the response body, so a
//! configured layer and an absent one answer with different bodies.
//! [`Optional`] answers with [`EitherBody`] instead: an unboxed enum of the
//! two. Nothing is allocated on the way through; only an error from the
//! body is boxed, on the error path.
//!
//! Each `Optional` names the inner service twice (once inside the layer's
//! service, once bare), so nesting many of them doubles the type at every
//! level. For a deep stack, prefer layers with a pass-through mode of
//! their own, as `GovernanceLayer` does.
//!
//! ```
//! use finmesh::optional::OptionalLayer;
//! use tower::layer::util::Identity;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Configuration decides whether the layer is there; the type is the same.
//! let configured: Option<Identity> = None;
//! let svc = ServiceBuilder::new()
//!     .layer(OptionalLayer::new(configured))
//!     .service_fn(|_req: http::Request<String>| async {
//!         let body = http_body_util::Full::new(bytes::Bytes::from("hi"));
//!         Ok::<_, std::convert::Infallible>(http::Response::new(body))
//!     });
//! let res = svc.oneshot(http::Request::new(String::new())).await.unwrap();
//! assert_eq!(res.status(), 200);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// A boxed error, as tower, hyper, axum and tonic use it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Applies `L` when it is configured, and passes through when it is not.
#[derive(Clone, Debug, Default)]
pub struct OptionalLayer<L> {
    layer: Option<L>,
}

impl<L> OptionalLayer<L> {
    /// Wraps an optional layer.
    pub fn new(layer: Option<L>) -> Self {
        Self { layer }
    }

    /// Whether the layer is configured.
    pub fn is_some(&self) -> bool {
        self.layer.is_some()
    }
}

impl<L, S> Layer<S> for OptionalLayer<L>
where
    L: Layer<S>,
{
    type Service = Optional<L::Service, S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.layer {
            Some(layer) => Optional::On {
                service: layer.layer(inner),
            },
            None => Optional::Off { service: inner },
        }
    }
}

/// The service of an [`OptionalLayer`]: the layer's service, or the inner
/// service untouched.
#[derive(Clone, Debug)]
pub enum Optional<A, B> {
    /// The layer is configured.
    On {
        /// The layer's service.
        service: A,
    },
    /// The layer is absent.
    Off {
        /// The inner service.
        service: B,
    },
}

impl<A, B, ReqB, ResA, ResB> Service<Request<ReqB>> for Optional<A, B>
where
    A: Service<Request<ReqB>, Response = Response<ResA>>,
    B: Service<Request<ReqB>, Response = Response<ResB>, Error = A::Error>,
{
    type Response = Response<EitherBody<ResA, ResB>>;
    type Error = A::Error;
    type Future = OptionalFuture<A::Future, B::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Self::On { service } => service.poll_ready(cx),
            Self::Off { service } => service.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let kind = match self {
            Self::On { service } => FutureKind::On {
                future: service.call(req),
            },
            Self::Off { service } => FutureKind::Off {
                future: service.call(req),
            },
        };
        OptionalFuture { kind }
    }
}

pin_project! {
    /// Response future of [`Optional`].
    pub struct OptionalFuture<FA, FB> {
        #[pin]
        kind: FutureKind<FA, FB>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<FA, FB> {
        On { #[pin] future: FA },
        Off { #[pin] future: FB },
    }
}

impl<FA, FB> OptionalFuture<FA, FB> {
    /// The first future (the layer's, when present).
    pub fn on(future: FA) -> Self {
        Self {
            kind: FutureKind::On { future },
        }
    }

    /// The second future (the inner service's).
    pub fn off(future: FB) -> Self {
        Self {
            kind: FutureKind::Off { future },
        }
    }
}

impl<FA, FB, ResA, ResB, E> Future for OptionalFuture<FA, FB>
where
    FA: Future<Output = Result<Response<ResA>, E>>,
    FB: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<EitherBody<ResA, ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::On { future } => {
                future.poll(cx).map(|r| r.map(|res| res.map(EitherBody::a)))
            }
            FutureKindProj::Off { future } => {
                future.poll(cx).map(|r| r.map(|res| res.map(EitherBody::b)))
            }
        }
    }
}

pin_project! {
    /// One of two body types, without boxing. Errors are boxed, so the two
    /// bodies may fail with different error types.
    pub struct EitherBody<A, B> {
        #[pin]
        kind: BodyKind<A, B>,
    }
}

pin_project! {
    #[project = BodyKindProj]
    enum BodyKind<A, B> {
        A { #[pin] body: A },
        B { #[pin] body: B },
    }
}

impl<A, B> EitherBody<A, B> {
    /// The first body type.
    pub fn a(body: A) -> Self {
        Self {
            kind: BodyKind::A { body },
        }
    }

    /// The second body type.
    pub fn b(body: B) -> Self {
        Self {
            kind: BodyKind::B { body },
        }
    }
}

impl<A, B> std::fmt::Debug for EitherBody<A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            BodyKind::A { .. } => "EitherBody::A",
            BodyKind::B { .. } => "EitherBody::B",
        })
    }
}

impl<A, B> Body for EitherBody<A, B>
where
    A: Body<Data = Bytes>,
    A::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            BodyKindProj::A { body } => body.poll_frame(cx).map_err(Into::into),
            BodyKindProj::B { body } => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::A { body } => body.is_end_stream(),
            BodyKind::B { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::A { body } => body.size_hint(),
            BodyKind::B { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt};

    /// Wraps the response body in `ResponseBody` and adds a header.
    #[derive(Clone)]
    struct Mark;
    impl<S> Layer<S> for Mark {
        type Service = tower::util::MapResponse<
            S,
            fn(Response<Full<Bytes>>) -> Response<crate::ResponseBody<Full<Bytes>>>,
        >;
        fn layer(&self, inner: S) -> Self::Service {
            tower::util::MapResponse::new(inner, |res: Response<Full<Bytes>>| {
                let mut res = res.map(crate::ResponseBody::new);
                res.headers_mut()
                    .insert("x-mark", http::HeaderValue::from_static("1"));
                res
            })
        }
    }

    async fn run(layer: Option<Mark>) -> (bool, Bytes) {
        let svc = ServiceBuilder::new()
            .layer(OptionalLayer::new(layer))
            .service_fn(|_req: Request<()>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("body"))))
            });
        let res = svc.oneshot(Request::new(())).await.unwrap();
        let marked = res.headers().contains_key("x-mark");
        (marked, res.into_body().collect().await.unwrap().to_bytes())
    }

    #[tokio::test]
    async fn present_layer_runs_and_absent_layer_passes_through() {
        assert_eq!(run(Some(Mark)).await, (true, Bytes::from("body")));
        assert_eq!(run(None).await, (false, Bytes::from("body")));
    }
}
