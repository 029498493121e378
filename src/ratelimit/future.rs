//! [`ResponseFuture`]: the response future of [`RateLimit`](super::RateLimit).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::concurrency::Permit;
use super::decide::{Admitted, Quota, Refusal};
use super::respond::insert_fields;
use crate::body::{RejectionBody, ResponseBody};
use crate::reject::Protocol;

type Pending = futures_util::future::BoxFuture<'static, Result<Admitted, Refusal>>;

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit): the inner
    /// future (holding the concurrency seat, if any, which then moves into
    /// the response body until it ends);
    /// a ready refusal; or, while waiting for Redis or a queue, the wait
    /// with the service and request to call once admitted. The local fast
    /// path allocates nothing.
    pub struct ResponseFuture<F, S, ReqB, B> {
        #[pin]
        state: State<F, S, ReqB, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, ReqB, B> {
        Inner {
            #[pin]
            future: F,
            quota: Option<Quota>,
            grpc: bool,
            permit: Option<Permit>,
        },
        Ready { response: Option<Response<ResponseBody<B>>> },
        Admitting {
            wait: Pending,
            service: Option<S>,
            request: Option<Request<ReqB>>,
        },
    }
}

impl<F, S, ReqB, B> ResponseFuture<F, S, ReqB, B> {
    pub(super) fn inner(
        future: F,
        quota: Option<Quota>,
        grpc: bool,
        permit: Option<Permit>,
    ) -> Self {
        Self {
            state: State::Inner {
                future,
                quota,
                grpc,
                permit,
            },
        }
    }

    pub(super) fn refused(response: Response<RejectionBody>) -> Self {
        Self {
            state: State::Ready {
                response: Some(response.map(ResponseBody::from)),
            },
        }
    }

    pub(super) fn admitting(wait: Pending, service: S, request: Request<ReqB>) -> Self {
        Self {
            state: State::Admitting {
                wait,
                service: Some(service),
                request: Some(request),
            },
        }
    }
}

impl<S, ReqB, B> Future for ResponseFuture<S::Future, S, ReqB, B>
where
    S: Service<Request<ReqB>, Response = Response<B>>,
{
    type Output = Result<Response<ResponseBody<B>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Inner {
                    future,
                    quota,
                    grpc,
                    permit,
                } => {
                    let res = ready!(future.poll(cx))?;
                    // The seat is held until the response body ends (or is
                    // dropped): a gRPC stream sends its head at once.
                    let guard = permit.take().map(|p| Box::new(p) as crate::body::Guard);
                    let mut res = res.map(|b| ResponseBody::with_guard(b, guard));
                    if let Some(quota) = quota.take()
                        && !*grpc
                    {
                        insert_fields(res.headers_mut(), &quota);
                    }
                    return Poll::Ready(Ok(res));
                }
                StateProj::Ready { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
                StateProj::Admitting {
                    wait,
                    service,
                    request,
                } => {
                    let admitted = ready!(wait.as_mut().poll(cx));
                    let request = request
                        .take()
                        .expect("ResponseFuture polled after completion");
                    match admitted {
                        Err(refusal) => {
                            return Poll::Ready(Ok(refusal
                                .respond(&request)
                                .map(ResponseBody::from)));
                        }
                        Ok((quota, permit)) => {
                            let grpc = Protocol::of(request.headers()) == Protocol::Grpc;
                            let mut service = service.take().expect("service taken once");
                            State::Inner {
                                future: service.call(request),
                                quota,
                                grpc,
                                permit,
                            }
                        }
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}
