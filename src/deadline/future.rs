//! [`ResponseFuture`]: waits for the response head under the call's
//! whole-call and idle deadlines.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::body::DeadlineResponseBody;
use super::state::{CallState, Outcome, Timer, earliest};
use super::stats::{Direction, TimeoutKind};
use crate::reject::Protocol;

pin_project! {
    /// Response future of [`StreamDeadline`](super::StreamDeadline).
    ///
    /// Until the response starts, an expiry (the whole-call deadline, idle,
    /// or the request side's deadline reported through the shared state)
    /// drops the inner future and answers at once: a trailers-only
    /// `DEADLINE_EXCEEDED` for gRPC, `408`/`504` problem+json for HTTP.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Passthrough { #[pin] future: F },
        Governed {
            #[pin] future: F,
            #[pin] timer: Timer,
            call: Arc<CallState>,
        },
        Rejected { response: Option<Response<DeadlineResponseBody<B>>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn governed(future: F, call: Arc<CallState>) -> Self {
        Self {
            kind: Kind::Governed {
                future,
                timer: Timer::Off,
                call,
            },
        }
    }

    pub(crate) fn rejected(response: Response<DeadlineResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

/// The answer when the call ends before its response started.
fn early_answer<B>(call: &CallState, outcome: Outcome) -> Response<DeadlineResponseBody<B>> {
    let protocol = if call.grpc {
        Protocol::Grpc
    } else {
        Protocol::Http
    };
    // The rejection was recorded in the request labels when it happened,
    // with the same code.
    outcome
        .rejection(!call.grpc && !call.request_closed())
        .render(protocol, None)
        .map(DeadlineResponseBody::from)
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<DeadlineResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => future
                .poll(cx)
                .map(|res| res.map(|r| r.map(DeadlineResponseBody::passthrough))),
            KindProj::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            KindProj::Governed {
                future,
                mut timer,
                call,
            } => {
                call.response_waker.register(cx.waker());
                if let Some(outcome) = call.outcome() {
                    return Poll::Ready(Ok(early_answer(call, outcome)));
                }
                if let Poll::Ready(res) = future.poll(cx) {
                    // Whatever the handler answered after the call expired
                    // (a read of the request body failed), the caller gets
                    // the deadline.
                    if let Some(outcome) = call.outcome() {
                        return Poll::Ready(Ok(early_answer(call, outcome)));
                    }
                    return Poll::Ready(
                        res.map(|r| r.map(|b| DeadlineResponseBody::new(b, call.clone()))),
                    );
                }
                loop {
                    // Idle does not run while a unary handler works: the
                    // client has half-closed and no answer has started.
                    let idle = if call.request_closed() {
                        None
                    } else {
                        call.idle_deadline()
                    };
                    let Some(next) = earliest(call.total, idle) else {
                        timer.as_mut().stop();
                        return Poll::Pending;
                    };
                    if timer.as_mut().poll_until(next, cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = Instant::now();
                    let outcome = if call.total.is_some_and(|t| t <= now) {
                        Outcome::Exceeded(Direction::Call, TimeoutKind::Total)
                    } else if idle.is_some_and(|_| call.idle_deadline().is_some_and(|i| i <= now)) {
                        Outcome::Exceeded(Direction::Call, TimeoutKind::Idle)
                    } else {
                        // Bytes moved since: wait for the new idle deadline.
                        continue;
                    };
                    let outcome = call.expire(outcome);
                    return Poll::Ready(Ok(early_answer(call, outcome)));
                }
            }
        }
    }
}
