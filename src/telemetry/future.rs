//! [`ResponseFuture`] of [`Telemetry`](super::Telemetry).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Response};
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::TelemetryBody;
use super::span::{End, RequestSpan};
use crate::body::ResponseBody;

pin_project! {
    /// Response future of [`Telemetry`](super::Telemetry): polls the inner
    /// service inside the request's OpenTelemetry context.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Traced {
            #[pin]
            future: F,
            span: Option<RequestSpan>,
            echo: Option<(HeaderName, HeaderValue)>,
        },
        Untraced {
            #[pin]
            future: F,
        },
        Rejected {
            response: Option<Response<ResponseBody<B>>>,
            span: Option<RequestSpan>,
            echo: Option<(HeaderName, HeaderValue)>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn traced(
        future: F,
        span: RequestSpan,
        echo: Option<(HeaderName, HeaderValue)>,
    ) -> Self {
        Self {
            kind: Kind::Traced {
                future,
                span: Some(span),
                echo,
            },
        }
    }

    pub(crate) fn untraced(future: F) -> Self {
        Self {
            kind: Kind::Untraced { future },
        }
    }

    pub(crate) fn rejected(
        response: Response<ResponseBody<B>>,
        span: RequestSpan,
        echo: Option<(HeaderName, HeaderValue)>,
    ) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
                span: Some(span),
                echo,
            },
        }
    }
}

/// Wraps the response body so that `span` ends with it.
fn wrap<B>(
    res: Response<ResponseBody<B>>,
    mut span: RequestSpan,
    echo: Option<(HeaderName, HeaderValue)>,
) -> Response<TelemetryBody<ResponseBody<B>>>
where
    B: Body<Data = bytes::Bytes>,
{
    let (mut parts, body) = res.into_parts();
    span.response_head(parts.status, &parts.headers);
    if let Some((name, value)) = echo {
        parts.headers.insert(name, value);
    }
    let span = if body.is_end_stream() {
        // Nothing will be polled: a trailers-only gRPC answer, a 204.
        span.end(End::Complete);
        None
    } else {
        Some(span)
    };
    Response::from_parts(parts, TelemetryBody::new(body, span))
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = bytes::Bytes>,
{
    type Output = Result<Response<TelemetryBody<ResponseBody<B>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Traced { future, span, echo } => {
                let polled = {
                    // The inner service runs with the server span current,
                    // so spans it opens are children and outgoing calls
                    // through `PropagateLayer` continue the trace. The
                    // guard lives for this poll only, never across a yield.
                    let _guard = span
                        .as_ref()
                        .and_then(RequestSpan::context)
                        .map(|otel| otel.clone().attach());
                    future.poll(cx)
                };
                let result = std::task::ready!(polled);
                let mut span = span.take().expect("ResponseFuture polled after completion");
                Poll::Ready(match result {
                    Ok(res) => Ok(wrap(res.map(ResponseBody::new), span, echo.take())),
                    Err(e) => {
                        span.end(End::ServiceError);
                        Err(e)
                    }
                })
            }
            KindProj::Untraced { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(|b| TelemetryBody::new(ResponseBody::new(b), None)))),
            KindProj::Rejected {
                response,
                span,
                echo,
            } => {
                let res = response
                    .take()
                    .expect("ResponseFuture polled after completion");
                let span = span.take().expect("ResponseFuture polled after completion");
                Poll::Ready(Ok(wrap(res, span, echo.take())))
            }
        }
    }
}
