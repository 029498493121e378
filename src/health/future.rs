//! [`ResponseFuture`]: the inner service's future, or the layer's own answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::Response;
use pin_project_lite::pin_project;

use super::body::{Answer, HealthBody};

pin_project! {
    /// Response future of [`Health`](super::Health).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        // Probes are rare next to traffic; boxing here keeps the
        // pass-through path allocation-free.
        Answer { future: BoxFuture<'static, Response<Answer>> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn answer(future: BoxFuture<'static, Response<Answer>>) -> Self {
        Self {
            kind: Kind::Answer { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<HealthBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future
                .poll(cx)
                .map(|res| res.map(|r| r.map(HealthBody::inner))),
            KindProj::Answer { future } => future
                .as_mut()
                .poll(cx)
                .map(|res| Ok(res.map(HealthBody::answer))),
        }
    }
}
