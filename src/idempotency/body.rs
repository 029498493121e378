//! The request and response bodies of the idempotency layer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::RejectionBody;

pin_project! {
    /// The request body the inner service sees: the caller's body passed
    /// through untouched (requests the layer does not govern) or the bytes
    /// the layer buffered to fingerprint it, with any trailers.
    pub struct IdempotencyRequestBody<B> {
        #[pin]
        kind: ReqKind<B>,
    }
}

pin_project! {
    #[project = ReqKindProj]
    enum ReqKind<B> {
        Inner { #[pin] body: B },
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
    }
}

impl<B> IdempotencyRequestBody<B> {
    /// The caller's body, untouched.
    pub fn new(body: B) -> Self {
        Self {
            kind: ReqKind::Inner { body },
        }
    }

    /// A body of exactly these bytes, then these trailers.
    pub fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: ReqKind::Buffered {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }
}

impl<B> std::fmt::Debug for IdempotencyRequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ReqKind::Inner { .. } => f.write_str("IdempotencyRequestBody::Inner"),
            ReqKind::Buffered { data, .. } => f
                .debug_struct("IdempotencyRequestBody::Buffered")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for IdempotencyRequestBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            ReqKindProj::Inner { body } => body.poll_frame(cx),
            ReqKindProj::Buffered { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ReqKind::Inner { body } => body.is_end_stream(),
            ReqKind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ReqKind::Inner { body } => body.size_hint(),
            ReqKind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

pin_project! {
    /// The response body of the idempotency layer.
    ///
    /// - Requests the layer does not govern, and first-run responses too
    ///   large to store, stream the inner body (the latter after the prefix
    ///   the layer already read).
    /// - Replays, first-run responses (buffered so they could be stored)
    ///   and rejections are whole bytes, then trailers.
    /// - A first-run body that failed while being buffered yields the
    ///   inner error, as the inner body would have.
    pub struct IdempotencyBody<B>
    where
        B: Body,
    {
        #[pin]
        kind: ResKind<B, B::Error>,
    }
}

pin_project! {
    #[project = ResKindProj]
    enum ResKind<B, E> {
        Inner { #[pin] body: B },
        Rest { prefix: Option<Bytes>, body: Pin<Box<B>> },
        Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Failed { error: Option<E> },
    }
}

impl<B: Body> IdempotencyBody<B> {
    /// The inner body, passed through.
    pub fn new(body: B) -> Self {
        Self {
            kind: ResKind::Inner { body },
        }
    }

    /// `prefix`, then the rest of `body`.
    pub(crate) fn with_prefix(prefix: Bytes, body: Pin<Box<B>>) -> Self {
        Self {
            kind: ResKind::Rest {
                prefix: (!prefix.is_empty()).then_some(prefix),
                body,
            },
        }
    }

    /// Exactly these bytes, then these trailers.
    pub fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: ResKind::Full {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    /// A body that fails with `error` when read.
    pub(crate) fn failed(error: B::Error) -> Self {
        Self {
            kind: ResKind::Failed { error: Some(error) },
        }
    }
}

impl<B: Body> From<RejectionBody> for IdempotencyBody<B> {
    /// A rendered rejection: whole bytes, no trailers.
    fn from(body: RejectionBody) -> Self {
        Self::full(body.into_bytes(), None)
    }
}

impl<B: Body> std::fmt::Debug for IdempotencyBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ResKind::Inner { .. } => f.write_str("IdempotencyBody::Inner"),
            ResKind::Rest { .. } => f.write_str("IdempotencyBody::Rest"),
            ResKind::Full { data, .. } => f
                .debug_struct("IdempotencyBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            ResKind::Failed { .. } => f.write_str("IdempotencyBody::Failed"),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for IdempotencyBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            ResKindProj::Inner { body } => body.poll_frame(cx),
            ResKindProj::Rest { prefix, body } => match prefix.take() {
                Some(prefix) => Poll::Ready(Some(Ok(Frame::data(prefix)))),
                None => body.as_mut().poll_frame(cx),
            },
            ResKindProj::Full { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            ResKindProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResKind::Inner { body } => body.is_end_stream(),
            ResKind::Rest { prefix, body } => prefix.is_none() && body.is_end_stream(),
            ResKind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            ResKind::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResKind::Inner { body } => body.size_hint(),
            ResKind::Rest { prefix, body } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(extra));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(extra));
                }
                hint
            }
            ResKind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ResKind::Failed { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn buffered_bodies_yield_data_then_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let body = IdempotencyBody::<Full<Bytes>>::full(Bytes::from("abc"), Some(trailers));
        assert_eq!(body.size_hint().exact(), Some(3));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), "abc");

        let req = IdempotencyRequestBody::<Full<Bytes>>::buffered(Bytes::new(), None);
        assert!(req.is_end_stream());
    }

    #[tokio::test]
    async fn prefix_then_the_rest() {
        let body =
            IdempotencyBody::with_prefix(Bytes::from("ab"), Box::pin(Full::new(Bytes::from("cd"))));
        assert_eq!(body.size_hint().exact(), Some(4));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcd");
    }
}
