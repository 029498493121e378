//! [`ResponseBody`]: the inner service's body, or the bytes of a rejection
//! ([`RejectionBody`]).
//!
//! Every finmesh layer that can refuse a request wraps the inner response
//! body in this type instead of boxing it. The inner variant forwards every
//! frame, trailer, `is_end_stream` and `size_hint` untouched and keeps the
//! inner error type; the rejection variant yields at most one data frame
//! and never fails. See the [`reject`](crate::reject) module for why.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Response body of every finmesh layer that can reject.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B, guard: Option<Guard> },
        Full { data: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner { body, guard: None },
        }
    }

    /// Wraps the inner service's body, keeping `guard` (a rate limit's
    /// concurrency seat) alive until the body ends or is dropped.
    #[cfg(feature = "ratelimit")]
    pub(crate) fn with_guard(body: B, guard: Option<Guard>) -> Self {
        Self {
            kind: Kind::Inner { body, guard },
        }
    }

    /// A body of exactly these bytes.
    pub fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: Kind::Full { data },
        }
    }

    /// A body with no bytes (a gRPC trailers-only response).
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full { data: None },
        }
    }
}

impl<B> From<RejectionBody> for ResponseBody<B> {
    fn from(body: RejectionBody) -> Self {
        Self {
            kind: Kind::Full { data: body.data },
        }
    }
}

/// What a layer keeps alive until the response body ends.
pub(crate) type Guard = Box<dyn std::any::Any + Send + Sync>;

/// The body of a rendered [`Rejection`](crate::Rejection): a few bytes of
/// problem+json, or nothing (a gRPC trailers-only answer). It never fails.
/// [`ResponseBody`] and the body of every layer that refuses convert from
/// it with `From`.
#[derive(Debug, Default, Clone)]
pub struct RejectionBody {
    data: Option<Bytes>,
}

impl RejectionBody {
    /// A body of exactly these bytes.
    pub fn new(data: Bytes) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// The bytes (empty for a gRPC rejection).
    pub fn into_bytes(self) -> Bytes {
        self.data.unwrap_or_default()
    }
}

impl Body for RejectionBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseBody::Inner"),
            Kind::Full { data } => f
                .debug_struct("ResponseBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body, guard } => {
                let frame = body.poll_frame(cx);
                if guard.is_some() && matches!(&frame, Poll::Ready(None | Some(Err(_)))) {
                    // The stream is over: free what was held for it.
                    *guard = None;
                }
                frame
            }
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, .. } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn inner_body_passes_through() {
        let body = ResponseBody::new(Full::new(Bytes::from_static(b"hello")));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn full_body_yields_its_bytes_once() {
        let body = ResponseBody::<Full<Bytes>>::full(Bytes::from_static(b"{}"));
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "{}");
        let empty = ResponseBody::<Full<Bytes>>::empty();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }
}
