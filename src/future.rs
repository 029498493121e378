//! [`ResponseFuture`]: the inner service's future, or a ready rejection.
//!
//! Layers whose decision is synchronous (authentication, tenant,
//! authorization) share this future: it needs no allocation and maps the
//! inner `Response<B>` into `Response<ResponseBody<B>>`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::{RejectionBody, ResponseBody};

pin_project! {
    /// Response future of the finmesh layers that decide before calling the
    /// inner service.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<ResponseBody<B>>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    /// Runs the inner service's future.
    pub fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    /// Answers with a rendered rejection.
    pub fn rejected(response: Response<RejectionBody>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response.map(ResponseBody::from)),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future
                .poll(cx)
                .map(|res| res.map(|r| r.map(ResponseBody::new))),
            KindProj::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
