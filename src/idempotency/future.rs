//! [`ResponseFuture`], the response future of [`Idempotency`](super::Idempotency).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::IdempotencyBody;

/// The governed flow: it awaits the store through `dyn IdempotencyStore`,
/// whose futures are boxed already, so it is boxed as a whole.
pub(super) type GovernedFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<IdempotencyBody<B>>, E>> + Send>>;

pin_project! {
    /// Response future of [`Idempotency`](super::Idempotency): the inner
    /// future, for requests the layer does not govern; a ready rejection;
    /// or, for governed requests, a boxed future that buffers, claims, runs
    /// and stores (it awaits the store, so it cannot be a small state
    /// machine without naming the store's futures).
    pub struct ResponseFuture<F, B, E>
    where
        B: Body,
    {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E>
    where
        B: Body,
    {
        Passthrough { #[pin] future: F },
        Ready { response: Option<Response<IdempotencyBody<B>>> },
        Governed { future: GovernedFuture<B, E> },
    }
}

impl<F, B: Body, E> ResponseFuture<F, B, E> {
    /// The inner service's future, its body passed through.
    pub(super) fn passthrough(future: F) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    /// An answer known without awaiting anything (a rejection).
    pub(super) fn ready(response: Response<IdempotencyBody<B>>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    /// The governed flow.
    pub(super) fn governed(future: GovernedFuture<B, E>) -> Self {
        Self {
            kind: Kind::Governed { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<IdempotencyBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => future
                .poll(cx)
                .map(|res| res.map(|r| r.map(IdempotencyBody::new))),
            KindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            KindProj::Governed { future } => future.as_mut().poll(cx),
        }
    }
}
