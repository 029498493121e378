//! [`TelemetryBody`]: ends the server span when the response body ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::span::{End, RequestSpan};

pin_project! {
    /// The response body of [`Telemetry`](super::Telemetry): the inner body,
    /// unchanged, which ends the request's span when it ends — after the
    /// last frame, with the `grpc-status` of its trailers — or when it is
    /// dropped early.
    pub struct TelemetryBody<B> {
        #[pin]
        inner: B,
        span: Option<RequestSpan>,
    }
}

impl<B> TelemetryBody<B> {
    pub(crate) fn new(inner: B, span: Option<RequestSpan>) -> Self {
        Self { inner, span }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for TelemetryBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryBody")
            .field("inner", &self.inner)
            .field("traced", &self.span.is_some())
            .finish()
    }
}

impl<B: Body> Body for TelemetryBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        if let Some(span) = this.span {
            match &polled {
                Poll::Pending => {}
                Poll::Ready(None) => span.end(End::Complete),
                Poll::Ready(Some(Err(_))) => span.end(End::BodyError),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        span.trailers(trailers);
                        span.end(End::Complete);
                    } else if this.inner.is_end_stream() {
                        // hyper stops polling a body that says it has
                        // ended, so this may be the last chance.
                        span.end(End::Complete);
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
