//! [`HealthBody`]: the inner service's body, or an answer the health layer
//! gave itself (a probe's text, a `grpc.health.v1` response).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Response body of [`Health`](super::Health).
    ///
    /// The inner service's body passes through unboxed, with its own error
    /// type; the layer's own answers never fail.
    pub struct HealthBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Answer { body: Answer },
    }
}

impl<B> HealthBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn answer(body: Answer) -> Self {
        Self {
            kind: Kind::Answer { body },
        }
    }
}

impl<B> std::fmt::Debug for HealthBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("HealthBody::Inner"),
            Kind::Answer { body } => f.debug_tuple("HealthBody::Answer").field(body).finish(),
        }
    }
}

impl<B> Body for HealthBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Answer { body } => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Answer { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Answer { body } => body.size_hint(),
        }
    }
}

/// What the health layer answers by itself.
pub(crate) enum Answer {
    /// A probe's plain text (`None` once sent, or for `HEAD`).
    Text(Option<Bytes>),
    /// A `grpc.health.v1` response (`None` once ended early, see below).
    #[cfg(feature = "grpc")]
    Grpc(Option<tonic::body::Body>),
}

impl Answer {
    pub(crate) fn text(data: Bytes) -> Self {
        Answer::Text((!data.is_empty()).then_some(data))
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Text(data) => write!(f, "Text({} bytes)", data.as_ref().map_or(0, Bytes::len)),
            #[cfg(feature = "grpc")]
            Answer::Grpc(_) => f.write_str("Grpc"),
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        #[allow(unused_variables)] cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            Answer::Text(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            #[cfg(feature = "grpc")]
            Answer::Grpc(slot) => {
                let Some(body) = slot else {
                    return Poll::Ready(None);
                };
                match std::task::ready!(Pin::new(body).poll_frame(cx)) {
                    Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
                    None => Poll::Ready(None),
                    // tonic's server-side encoder already turns a `Status`
                    // into trailers; should one still arrive as an error,
                    // it ends the call the gRPC way instead of resetting
                    // the stream, so the inner body keeps its own error type.
                    Some(Err(status)) => {
                        *slot = None;
                        let mut trailers = http::HeaderMap::new();
                        if status.add_header(&mut trailers).is_err() {
                            trailers.clear();
                            let _ = tonic::Status::internal("").add_header(&mut trailers);
                        }
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Text(data) => data.is_none(),
            #[cfg(feature = "grpc")]
            Answer::Grpc(body) => body.as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Answer::Text(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            #[cfg(feature = "grpc")]
            Answer::Grpc(body) => body
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;

    #[tokio::test]
    async fn inner_body_passes_through_and_answers_are_exact() {
        let inner = HealthBody::inner(Full::new(Bytes::from("app")));
        assert_eq!(inner.size_hint().exact(), Some(3));
        assert_eq!(inner.collect().await.unwrap().to_bytes(), "app");

        let answer = HealthBody::<Full<Bytes>>::answer(Answer::text(Bytes::from("ok")));
        assert_eq!(answer.size_hint().exact(), Some(2));
        assert!(!answer.is_end_stream());
        assert_eq!(answer.collect().await.unwrap().to_bytes(), "ok");

        let empty = HealthBody::<Full<Bytes>>::answer(Answer::text(Bytes::new()));
        assert!(empty.is_end_stream());
    }

    #[cfg(feature = "grpc")]
    #[tokio::test]
    async fn a_grpc_error_ends_the_answer_with_status_trailers() {
        let failing =
            http_body_util::StreamBody::new(futures_util::stream::iter([Err::<Frame<Bytes>, _>(
                tonic::Status::unavailable("gone"),
            )]));
        let body =
            HealthBody::<Full<Bytes>>::answer(Answer::Grpc(Some(tonic::body::Body::new(failing))));
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "14");
        assert_eq!(trailers["grpc-message"], "gone");
    }
}
