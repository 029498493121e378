//! [`AuditBody`]: the response body, which writes the request's record
//! when it ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::pending::{Pending, grpc_status};
use super::record::Outcome;
use crate::body::{RejectionBody, ResponseBody};

pin_project! {
    /// Response body of [`Audit`](super::Audit): the inner body (or a
    /// rejection), which writes the request's record when it ends or is
    /// dropped.
    pub struct AuditBody<B> {
        #[pin]
        inner: ResponseBody<B>,
        guard: Option<Pending>,
    }
}

impl<B> AuditBody<B> {
    /// `body`, writing the record of `guard` when it ends or is dropped.
    pub(super) fn new(body: B, guard: Option<Pending>) -> Self {
        Self {
            inner: ResponseBody::new(body),
            guard,
        }
    }
}

impl<B> From<RejectionBody> for AuditBody<B> {
    fn from(body: RejectionBody) -> Self {
        Self {
            inner: body.into(),
            guard: None,
        }
    }
}

impl<B> std::fmt::Debug for AuditBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditBody")
            .field("inner", &self.inner)
            .field("pending", &self.guard.is_some())
            .finish()
    }
}

impl<B> Body for AuditBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(pending) = this.guard.as_mut() {
            if let (Some(capture), Some(Ok(frame))) = (pending.ctx.capture.as_ref(), &frame)
                && let Some(data) = frame.data_ref()
            {
                capture.feed_response(data);
            }
            let done = match &frame {
                None => true,
                Some(Ok(frame)) => {
                    match frame.trailers_ref() {
                        // Trailers are the last frame of a body.
                        Some(trailers) => {
                            if pending.ctx.grpc {
                                pending.grpc_status = grpc_status(trailers).or(pending.grpc_status);
                            }
                            true
                        }
                        None => this.inner.is_end_stream(),
                    }
                }
                Some(Err(_)) => {
                    pending.outcome = Outcome::BodyError;
                    true
                }
            };
            if done {
                if pending.outcome == Outcome::BodyDropped {
                    pending.outcome = Outcome::Complete;
                }
                *this.guard = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
