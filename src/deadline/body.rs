//! The request and response body wrappers of one call.
//!
//! Both follow the gRPC framing of the bytes they pass with a
//! [`GrpcFrameDecoder`], restart their message clock only when a message
//! completes (drip-feed protection), and share the call's [`CallState`] so
//! that an expiry on either side ends both.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::BoxError;

use super::decoder::{FrameEvent, GrpcFrameDecoder};
use super::state::{CallState, Outcome, Timer, earliest};
use super::stats::{Direction, TimeoutKind};

pin_project! {
    /// The request body the inner service reads.
    ///
    /// When the call expires, the next read fails: with a boxed
    /// [`tonic::Status`] (`DEADLINE_EXCEEDED`, or `RESOURCE_EXHAUSTED` for
    /// a message over `max_message_bytes`) on gRPC calls, with a
    /// [`StreamDeadlineError`](super::StreamDeadlineError) otherwise.
    pub struct DeadlineRequestBody<B> {
        #[pin]
        inner: B,
        #[pin]
        timer: Timer,
        call: Option<Arc<CallState>>,
        decoder: GrpcFrameDecoder,
        // When the next inbound message is due; `None` once half-closed.
        deadline: Option<Instant>,
        done: bool,
    }
}

impl<B> DeadlineRequestBody<B> {
    pub(crate) fn passthrough(inner: B) -> Self {
        Self {
            inner,
            timer: Timer::Off,
            call: None,
            decoder: GrpcFrameDecoder::new(),
            deadline: None,
            done: false,
        }
    }

    pub(crate) fn new(inner: B, call: Arc<CallState>) -> Self {
        // The clock starts when the stream opens.
        let deadline = call
            .deadlines
            .request_message
            .and_then(|t| call.start.checked_add(t));
        Self {
            inner,
            timer: Timer::Off,
            call: Some(call),
            decoder: GrpcFrameDecoder::new(),
            deadline,
            done: false,
        }
    }
}

impl<B> std::fmt::Debug for DeadlineRequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineRequestBody")
            .field("governed", &self.call.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<B> Body for DeadlineRequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let Some(call) = this.call.as_ref() else {
            return this.inner.poll_frame(cx).map_err(Into::into);
        };
        if *this.done {
            return Poll::Ready(None);
        }
        // Registered before the check, so an expiry on the response side
        // between the two cannot be missed.
        call.request_waker.register(cx.waker());
        if let Some(outcome) = call.outcome() {
            *this.done = true;
            this.timer.stop();
            return Poll::Ready(Some(Err(call.error(outcome))));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) else {
                    if frame.is_trailers() {
                        *this.deadline = None;
                        call.close_request();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                };
                let now = Instant::now();
                call.touch(now);
                let mut completed = !call.grpc;
                if call.grpc {
                    let mut chunk = &data[..];
                    while let Some(event) = this.decoder.next_event(&mut chunk) {
                        match event {
                            FrameEvent::Prefix { len, .. } => {
                                // Refused on the prefix alone: the bytes it
                                // announces are never read.
                                if call
                                    .deadlines
                                    .max_message_bytes
                                    .is_some_and(|max| len > max)
                                {
                                    let outcome = call.expire(Outcome::TooLarge);
                                    *this.done = true;
                                    this.timer.stop();
                                    return Poll::Ready(Some(Err(call.error(outcome))));
                                }
                            }
                            FrameEvent::Message => completed = true,
                        }
                    }
                }
                if completed {
                    *this.deadline = call
                        .deadlines
                        .request_message
                        .and_then(|t| now.checked_add(t));
                } else if this.deadline.is_some_and(|d| d <= now) {
                    // Bytes keep coming but the message is late.
                    let outcome =
                        call.expire(Outcome::Exceeded(Direction::Request, TimeoutKind::Message));
                    *this.done = true;
                    this.timer.stop();
                    return Poll::Ready(Some(Err(call.error(outcome))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                // Half-close: the request clock stops.
                *this.deadline = None;
                *this.done = true;
                call.close_request();
                this.timer.stop();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => {
                let Some(deadline) = *this.deadline else {
                    return Poll::Pending;
                };
                if this.timer.as_mut().poll_until(deadline, cx).is_pending() {
                    return Poll::Pending;
                }
                let outcome =
                    call.expire(Outcome::Exceeded(Direction::Request, TimeoutKind::Message));
                *this.done = true;
                this.timer.stop();
                Poll::Ready(Some(Err(call.error(outcome))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            return SizeHint::with_exact(0);
        }
        self.inner.size_hint()
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Active { #[pin] body: crate::body::ResponseBody<B> },
        Dropped,
    }
}

pin_project! {
    /// The response body of [`StreamDeadline`](super::StreamDeadline).
    ///
    /// When the call expires while the response streams, the inner body is
    /// dropped (which cancels the handler's stream) and the stream ends
    /// with trailers `grpc-status: 4` and a `grpc-message` — only at a
    /// message boundary, so the client keeps every whole message sent
    /// before. If a message is half-sent, the body fails instead, and the
    /// server resets the stream rather than deliver a truncated message.
    /// A non-gRPC response is aborted the same way.
    pub struct DeadlineResponseBody<B> {
        #[pin]
        inner: Inner<B>,
        #[pin]
        timer: Timer,
        call: Option<Arc<CallState>>,
        decoder: GrpcFrameDecoder,
        // When the next outbound message is due.
        deadline: Option<Instant>,
    }
}

impl<B> DeadlineResponseBody<B> {
    pub(crate) fn passthrough(body: B) -> Self {
        Self::untimed(crate::body::ResponseBody::new(body))
    }

    fn untimed(body: crate::body::ResponseBody<B>) -> Self {
        Self {
            inner: Inner::Active { body },
            timer: Timer::Off,
            call: None,
            decoder: GrpcFrameDecoder::new(),
            deadline: None,
        }
    }

    pub(crate) fn new(body: B, call: Arc<CallState>) -> Self {
        // The response has started: its clock runs from now.
        let deadline = call
            .deadlines
            .response_message
            .and_then(|t| Instant::now().checked_add(t));
        Self {
            inner: Inner::Active {
                body: crate::body::ResponseBody::new(body),
            },
            timer: Timer::Off,
            call: Some(call),
            decoder: GrpcFrameDecoder::new(),
            deadline,
        }
    }
}

impl<B> From<crate::body::RejectionBody> for DeadlineResponseBody<B> {
    fn from(body: crate::body::RejectionBody) -> Self {
        Self::untimed(body.into())
    }
}

impl<B> std::fmt::Debug for DeadlineResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineResponseBody")
            .field("governed", &self.call.is_some())
            .field("ended", &matches!(self.inner, Inner::Dropped))
            .finish()
    }
}

impl<B> Body for DeadlineResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let body = match this.inner.as_mut().project() {
            InnerProj::Active { body } => body,
            InnerProj::Dropped => return Poll::Ready(None),
        };
        let Some(call) = this.call.as_ref() else {
            return body.poll_frame(cx).map_err(Into::into);
        };
        call.response_waker.register(cx.waker());
        if let Some(outcome) = call.outcome() {
            return end(this.inner, this.timer, call, this.decoder, outcome);
        }
        match body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    let now = Instant::now();
                    call.touch(now);
                    let completed = !call.grpc || this.decoder.feed(data).messages > 0;
                    if completed {
                        *this.deadline = call
                            .deadlines
                            .response_message
                            .and_then(|t| now.checked_add(t));
                    }
                    // A stream that is always ready never reaches the timer
                    // below; check the clock here. The expiry takes effect
                    // on the next poll, after this frame.
                    let late = if this.deadline.is_some_and(|d| d <= now) {
                        Some(Outcome::Exceeded(Direction::Response, TimeoutKind::Message))
                    } else if call.total.is_some_and(|t| t <= now) {
                        Some(Outcome::Exceeded(Direction::Call, TimeoutKind::Total))
                    } else {
                        None
                    };
                    if let Some(outcome) = late {
                        call.expire(outcome);
                    }
                } else if frame.is_trailers() {
                    this.inner.set(Inner::Dropped);
                    this.timer.stop();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.inner.set(Inner::Dropped);
                this.timer.stop();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.inner.set(Inner::Dropped);
                this.timer.stop();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => loop {
                let idle = call.idle_deadline();
                let Some(next) = earliest(earliest(call.total, *this.deadline), idle) else {
                    return Poll::Pending;
                };
                if this.timer.as_mut().poll_until(next, cx).is_pending() {
                    return Poll::Pending;
                }
                let now = Instant::now();
                let outcome = if call.total.is_some_and(|t| t <= now) {
                    Outcome::Exceeded(Direction::Call, TimeoutKind::Total)
                } else if this.deadline.is_some_and(|d| d <= now) {
                    Outcome::Exceeded(Direction::Response, TimeoutKind::Message)
                } else if call.idle_deadline().is_some_and(|i| i <= now) {
                    Outcome::Exceeded(Direction::Call, TimeoutKind::Idle)
                } else {
                    // The request side moved bytes: a later idle deadline.
                    continue;
                };
                let outcome = call.expire(outcome);
                return end(this.inner, this.timer, call, this.decoder, outcome);
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Active { body } => body.is_end_stream(),
            Inner::Dropped => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Active { body } => body.size_hint(),
            Inner::Dropped => SizeHint::with_exact(0),
        }
    }
}

/// Ends an expired response: drops the inner body (cancelling the
/// handler's stream), then trailers at a message boundary or a reset.
fn end<B>(
    mut inner: Pin<&mut Inner<B>>,
    timer: Pin<&mut Timer>,
    call: &CallState,
    decoder: &GrpcFrameDecoder,
    outcome: Outcome,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    inner.set(Inner::Dropped);
    timer.stop();
    // Security: trailers are written only at a message boundary.
    // After half a message they would be read as the rest of its payload
    // and the client would decode garbage; a reset discards the partial
    // message instead.
    if call.grpc && !decoder.is_mid_message() {
        Poll::Ready(Some(Ok(Frame::trailers(outcome.trailers()))))
    } else {
        Poll::Ready(Some(Err(CallState::reset_error(outcome))))
    }
}
