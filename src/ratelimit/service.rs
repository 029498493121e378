//! [`RateLimit`]: the service [`RateLimitLayer`](super::RateLimitLayer)
//! builds.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::decide::{Admission, Shared};
use super::future::ResponseFuture;
use crate::body::ResponseBody;
use crate::reject::Protocol;

/// The service [`RateLimitLayer`](super::RateLimitLayer) builds.
pub struct RateLimit<S> {
    inner: S,
    // `None`: switched off inside a `GovernanceLayer` without rate limits.
    shared: Option<Arc<Shared>>,
}

crate::macros::inner_accessors!([S] RateLimit<S>, inner: S);

impl<S> RateLimit<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared: Some(shared),
        }
    }

    /// Passes every request through: the slot of an absent rate-limit
    /// layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self {
            inner,
            shared: None,
        }
    }
}

impl<S: Clone> Clone for RateLimit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("enabled", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for RateLimit<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S, ReqB, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let Some(shared) = &self.shared else {
            return ResponseFuture::inner(self.inner.call(req), None, false, None);
        };
        // The decision reads the head only; the body waits aside.
        let (parts, body) = req.into_parts();
        let head = Request::from_parts(parts, ());
        let admission = shared.admit(&head);
        match admission {
            Admission::Refuse(refusal) => ResponseFuture::refused(refusal.respond(&head)),
            Admission::Pass((quota, permit)) => {
                let grpc = Protocol::of(head.headers()) == Protocol::Grpc;
                let quota = quota.filter(|_| shared.response_headers);
                let (parts, ()) = head.into_parts();
                ResponseFuture::inner(
                    self.inner.call(Request::from_parts(parts, body)),
                    quota,
                    grpc,
                    permit,
                )
            }
            Admission::Pending(wait) => {
                let (parts, ()) = head.into_parts();
                let headers_on = shared.response_headers;
                let wait = if headers_on {
                    wait
                } else {
                    Box::pin(async move { wait.await.map(|(_, permit)| (None, permit)) })
                };
                // The call waits for a seat: the future takes the service
                // that was polled ready, and a clone takes its place.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::admitting(wait, inner, Request::from_parts(parts, body))
            }
        }
    }
}
