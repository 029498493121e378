//! [`ResponseFuture`]: waits for a queue slot when it must, calls the
//! inner service, and hands the record's guard to the body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::AuditCode;
use super::body::AuditBody;
use super::pending::{Ctx, Pending, grpc_status};
use super::record::Outcome;
use super::slot::WaitForSlot;
use crate::codes::RejectionCode;
use crate::reject::Protocol;

pin_project! {
    /// Response future of [`Audit`](super::Audit).
    pub struct ResponseFuture<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB, ResB>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
    {
        Reserving {
            wait: WaitForSlot,
            req: Option<Request<ReqB>>,
            inner: Option<S>,
            ctx: Option<Ctx>,
        },
        Calling {
            #[pin]
            future: S::Future,
            guard: Option<Pending>,
        },
        Rejected {
            response: Option<Response<AuditBody<ResB>>>,
        },
    }
}

impl<S, ReqB, ResB> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
{
    /// The inner call, recorded through `guard`.
    pub(super) fn calling(future: S::Future, guard: Pending) -> Self {
        Self {
            state: State::Calling {
                future,
                guard: Some(guard),
            },
        }
    }

    /// The inner call of a pass-through: no record.
    pub(super) fn unrecorded(future: S::Future) -> Self {
        Self {
            state: State::Calling {
                future,
                guard: None,
            },
        }
    }

    /// Waits for a queue slot, then calls `inner` (the service that was
    /// polled ready) with `req`.
    pub(super) fn reserving(wait: WaitForSlot, req: Request<ReqB>, inner: S, ctx: Ctx) -> Self {
        Self {
            state: State::Reserving {
                wait,
                req: Some(req),
                inner: Some(inner),
                ctx: Some(ctx),
            },
        }
    }

    /// Refused at once: no slot, the writer has stopped.
    pub(super) fn refused(req: &Request<ReqB>, ctx: &Ctx) -> Self {
        Self {
            state: State::Rejected {
                response: Some(refuse(req, ctx)),
            },
        }
    }
}

/// 503 `audit.unavailable`. This refusal has no record of its own — there
/// is no slot to write it with — so it is counted (by the auditor, when it
/// found no slot) and logged instead.
fn refuse<ReqB, ResB>(req: &Request<ReqB>, ctx: &Ctx) -> Response<AuditBody<ResB>> {
    tracing::error!(
        method = %ctx.method,
        path = ctx.uri.path(),
        "audit log unavailable; request refused"
    );
    AuditCode::Unavailable
        .reject("the audit log cannot take a record now")
        .respond(req)
        .map(AuditBody::from)
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    type Output = Result<Response<AuditBody<ResB>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Reserving {
                    wait,
                    req,
                    inner,
                    ctx,
                } => {
                    let slot = ready!(wait.as_mut().poll(cx));
                    let (Some(req), Some(mut inner), Some(ctx)) =
                        (req.take(), inner.take(), ctx.take())
                    else {
                        panic!("audit ResponseFuture polled after completion");
                    };
                    let next = match slot {
                        Some(slot) => State::Calling {
                            future: inner.call(req),
                            guard: Some(Pending::new(slot, ctx)),
                        },
                        // Timed out, or the writer stopped: fail closed.
                        None => State::Rejected {
                            response: Some(refuse(&req, &ctx)),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Calling { future, guard } => {
                    let result = ready!(future.poll(cx));
                    let mut pending = guard.take();
                    let response = match result {
                        Ok(res) => res,
                        Err(e) => {
                            if let Some(p) = pending.as_mut() {
                                p.outcome = Outcome::ServiceError;
                            }
                            return Poll::Ready(Err(e));
                        }
                    };
                    if let Some(p) = pending.as_mut() {
                        p.http_status = Some(response.status().as_u16());
                        // Security: a gRPC answer is read as one whatever
                        // the client claimed, so a call made with another
                        // content-type is not recorded as a plain 200.
                        if Protocol::of(response.headers()).is_grpc() {
                            p.ctx.grpc = true;
                        }
                        if p.ctx.grpc {
                            // Trailers-only responses (rejections, early
                            // errors) carry the status in the headers.
                            p.grpc_status = grpc_status(response.headers());
                        }
                        p.outcome = Outcome::BodyDropped;
                    }
                    if response.body().is_end_stream() {
                        // Nothing more will be polled: the response is known.
                        if let Some(p) = pending.as_mut() {
                            p.outcome = Outcome::Complete;
                        }
                        pending = None;
                    }
                    return Poll::Ready(Ok(response.map(|body| AuditBody::new(body, pending))));
                }
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("audit ResponseFuture polled after completion")));
                }
            }
        }
    }
}
