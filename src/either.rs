//! [`EitherBody`] and [`EitherFuture`]: one of two bodies or futures,
//! without boxing.
//!
//! A service that routes some requests elsewhere (the health layer answers
//! `grpc.health.v1` itself and passes the rest on) answers with one of two
//! body types. These keep both unboxed; only a body error is boxed, on the
//! error path. Crate-private: users name the services, not these types.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::BoxError;

pin_project! {
    /// One of two futures, without boxing; its response carries an
    /// [`EitherBody`].
    pub struct EitherFuture<FA, FB> {
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

impl<FA, FB> EitherFuture<FA, FB> {
    /// The first future.
    pub fn a(future: FA) -> Self {
        Self {
            kind: FutureKind::On { future },
        }
    }

    /// The second future.
    pub fn b(future: FB) -> Self {
        Self {
            kind: FutureKind::Off { future },
        }
    }
}

impl<FA, FB, ResA, ResB, E> Future for EitherFuture<FA, FB>
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

    #[tokio::test]
    async fn either_future_answers_with_its_own_body() {
        let ready = |body: &'static str| {
            std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                Bytes::from(body),
            ))))
        };
        let a =
            EitherFuture::<_, std::future::Ready<Result<Response<Full<Bytes>>, _>>>::a(ready("a"));
        let body = a.await.unwrap().into_body();
        assert_eq!(body.size_hint().exact(), Some(1));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "a");
        let b =
            EitherFuture::<std::future::Ready<Result<Response<Full<Bytes>>, _>>, _>::b(ready("bb"));
        let body = b.await.unwrap().into_body();
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "bb");
    }
}
