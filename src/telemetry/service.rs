//! [`Telemetry`]: the service [`TelemetryLayer`](super::TelemetryLayer)
//! produces.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanBuilder, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue, StringValue};
use tower_service::Service;

use super::TelemetryCode;
use super::body::TelemetryBody;
use super::extract::{HeaderCarrier, W3cTraceState};
use super::future::ResponseFuture;
use super::layer::{Config, ServerScope};
use super::span::{CallKind, RequestSpan, method_label};
use crate::body::ResponseBody;
use crate::codes::RejectionCode;
use crate::labels::RequestLabels;
use crate::reject::Protocol;

/// Longest accepted order id, in characters.
pub const MAX_ORDER_ID_LEN: usize = 128;

/// Longest caller-supplied risk level copied to `baggage.user_risk_level`.
const MAX_BAGGAGE_RISK_LEN: usize = 32;

/// Middleware that traces each request. See [`TelemetryLayer`](super::TelemetryLayer).
#[derive(Clone)]
pub struct Telemetry<S> {
    inner: S,
    // `None`: switched off inside a `GovernanceLayer` without telemetry.
    config: Option<Arc<Config>>,
}

impl<S: fmt::Debug> fmt::Debug for Telemetry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Telemetry<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self {
            inner,
            config: Some(config),
        }
    }

    /// Passes every request through untraced: the slot of an absent
    /// telemetry layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self {
            inner,
            config: None,
        }
    }
}

crate::macros::inner_accessors!([S] Telemetry<S>, inner: S);

/// Why an order id was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OrderIdError {
    Invalid,
}

/// Whether `s` is a valid order id: 1 to 128 visible ASCII characters.
pub(crate) fn valid_order_id(s: &str) -> bool {
    (1..=MAX_ORDER_ID_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The order id: the header (exactly one value) or else baggage `order_id`.
fn order_id(
    headers: &HeaderMap,
    header: &HeaderName,
    parent: &Context,
) -> Result<Option<Arc<str>>, OrderIdError> {
    let mut values = headers.get_all(header).iter();
    if let Some(first) = values.next() {
        if values.next().is_some() {
            return Err(OrderIdError::Invalid);
        }
        return match first.to_str() {
            Ok(s) if valid_order_id(s) => Ok(Some(Arc::from(s))),
            _ => Err(OrderIdError::Invalid),
        };
    }
    match parent.baggage().get("order_id") {
        None => Ok(None),
        Some(v) if valid_order_id(v.as_str()) => Ok(Some(Arc::from(v.as_str()))),
        Some(_) => Err(OrderIdError::Invalid),
    }
}

/// `id` as 32 lowercase hex digits, as its `Display` writes it, without
/// the formatting machinery.
fn trace_id_hex(id: TraceId) -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (pair, byte) in buf.chunks_exact_mut(2).zip(id.to_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    // Only ASCII hex digits were written.
    Arc::from(std::str::from_utf8(&buf).unwrap_or_default())
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Telemetry<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: http_body::Body<Data = bytes::Bytes>,
{
    type Response = Response<TelemetryBody<ResponseBody<ResB>>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let Some(config) = &self.config else {
            return ResponseFuture::untraced(self.inner.call(req));
        };
        if config.skips(req.uri().path()) {
            return ResponseFuture::untraced(self.inner.call(req));
        }

        // The parent context, from the caller's headers only: a server
        // request starts a new local trace unless the caller continues one.
        let (parent, notes, tracestate) = {
            let carrier = HeaderCarrier::new(req.headers());
            let parent = config
                .propagator
                .with(|p| p.extract_with_context(&Context::new(), &carrier));
            let tracestate = carrier.tracestate().map(str::to_owned);
            (parent, carrier.notes, tracestate)
        };

        let grpc = Protocol::of(req.headers()).is_grpc();
        let path = req.uri().path();
        // The route the request reached, whatever protocol it claims.
        let template = config
            .route_template
            .as_ref()
            .and_then(|r| r.route_template(req.method(), req.uri(), req.extensions()));
        // Security: the order-id requirement follows the path and the route
        // reached; a claimed gRPC content-type only names the span.
        let requires_order_id = config.requires_order_id(req.method(), path, template.as_deref());
        let (kind, name, route): (CallKind, Cow<'static, str>, Option<Cow<'static, str>>) = if grpc
        {
            let path: Arc<str> = Arc::from(path);
            let name = path.trim_start_matches('/').to_owned();
            let route = Cow::Owned(path.to_string());
            (CallKind::Grpc { path }, Cow::Owned(name), Some(route))
        } else {
            let route = template;
            let method = req.method().as_str();
            let name = match &route {
                Some(r) => {
                    let mut name = String::with_capacity(method.len() + 1 + r.len());
                    name.push_str(method);
                    name.push(' ');
                    name.push_str(r);
                    Cow::Owned(name)
                }
                None => match method_label(req.method()) {
                    "_OTHER" => Cow::Owned(method.to_owned()),
                    known => Cow::Borrowed(known),
                },
            };
            // One copy of an owned template, shared by the span and the
            // metrics (the labels keep the original).
            let kind = CallKind::Http {
                method: req.method().clone(),
                route: route.as_ref().map(|r| match r {
                    Cow::Borrowed(r) => StringValue::from(*r),
                    Cow::Owned(r) => StringValue::from(Arc::<str>::from(r.as_str())),
                }),
            };
            (kind, name, route)
        };

        let order = order_id(req.headers(), &config.order_id_header, &parent);
        let order_missing = matches!(order, Ok(None)) && requires_order_id;

        // The span keeps this vector and appends to it as the request
        // goes (`trace_id`, then the business and status attributes when
        // it ends): room for all of them up front means one allocation,
        // not a reallocation on the response path.
        let mut attrs = Vec::with_capacity(32);
        if grpc {
            attrs.push(KeyValue::new("rpc.system", "grpc"));
            let mut parts = name.rsplitn(2, '/');
            let method = parts.next().unwrap_or_default();
            if let Some(service) = parts.next() {
                attrs.push(KeyValue::new("rpc.service", service.to_owned()));
                attrs.push(KeyValue::new("rpc.method", method.to_owned()));
            }
        } else {
            let method = method_label(req.method());
            attrs.push(KeyValue::new("http.request.method", method));
            if method == "_OTHER" {
                attrs.push(KeyValue::new(
                    "http.request.method_original",
                    req.method().to_string(),
                ));
            }
            attrs.push(KeyValue::new("url.path", path.to_owned()));
            if let CallKind::Http {
                route: Some(route), ..
            } = &kind
            {
                attrs.push(KeyValue::new("http.route", route.clone()));
            }
        }
        if let Ok(Some(order_id)) = &order {
            attrs.push(KeyValue::new("order_id", order_id.clone()));
        }
        // Security: baggage is caller-controlled. Its risk level is
        // recorded under its own name and never becomes `user_risk_level`,
        // which only a verified principal sets.
        if let Some(risk) = parent.baggage().get("user_risk_level") {
            let risk = risk.as_str();
            let end = risk
                .char_indices()
                .nth(MAX_BAGGAGE_RISK_LEN)
                .map_or(risk.len(), |(i, _)| i);
            attrs.push(KeyValue::new(
                "baggage.user_risk_level",
                risk[..end].to_owned(),
            ));
        }
        if notes.baggage_dropped {
            attrs.push(KeyValue::new("baggage.dropped", true));
        }

        let with_span = config.tracer.start(
            SpanBuilder::from_name(name)
                .with_kind(SpanKind::Server)
                .with_attributes(attrs),
            &parent,
        );
        let span_context = with_span.span().span_context().clone();
        // Formatted once, shared by the labels, the span and the echo.
        let trace_id: Option<Arc<str>> = span_context
            .is_valid()
            .then(|| trace_id_hex(span_context.trace_id()));

        let labels = RequestLabels::get_or_insert(req.extensions_mut());
        labels.update(|v| {
            v.trace_id = trace_id.clone();
            if let Ok(Some(order_id)) = &order {
                v.order_id = Some(order_id.clone());
            }
            if route.is_some() {
                v.route = route;
            }
        });
        // One context value, not one each: every value copies the
        // context's map.
        let mut otel_cx = with_span.with_value(ServerScope {
            labels: labels.clone(),
            tracer: Some(config.tracer.clone()),
        });
        // The checked tracestate rides beside the span context: the stock
        // `TraceState` refuses some keys the W3C grammar allows, and
        // `PropagateLayer` carries the list on from here in that case.
        if let Some(header) = tracestate
            && parent.span().span_context().is_valid()
        {
            otel_cx = otel_cx.with_value(W3cTraceState {
                trace_id: parent.span().span_context().trace_id(),
                header,
            });
        }
        if let Some(trace_id) = &trace_id {
            otel_cx
                .span()
                .set_attribute(KeyValue::new("trace_id", trace_id.clone()));
        }
        let echo = config.trace_id_header.as_ref().and_then(|name| {
            let value = HeaderValue::from_str(trace_id.as_deref()?).ok()?;
            Some((name.clone(), value))
        });
        let request_span = RequestSpan::new(config.clone(), otel_cx.clone(), labels, kind);

        let rejection = match order {
            Err(OrderIdError::Invalid) => Some(
                TelemetryCode::OrderIdInvalid
                    .reject("order id must be 1 to 128 visible ASCII characters"),
            ),
            Ok(None) if order_missing => Some(
                TelemetryCode::OrderIdMissing
                    .reject(format!("{} requires an order id", req.uri().path())),
            ),
            Ok(_) => None,
        };
        if let Some(rejection) = rejection {
            // The labels already carry the trace id, so the problem+json
            // body names it.
            let res = rejection.respond(&req);
            return ResponseFuture::rejected(res.map(Into::into), request_span, echo);
        }

        let future = {
            let _guard = otel_cx.attach();
            self.inner.call(req)
        };
        ResponseFuture::traced(future, request_span, echo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{TelemetryLayer, w3c_propagator};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use opentelemetry::trace::Status;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tower::{Layer, ServiceExt, service_fn};

    fn provider() -> (InMemorySpanExporter, SdkTracerProvider) {
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        (spans, provider)
    }

    fn attr(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    #[tokio::test]
    async fn the_sdk_tracer_is_called_directly_and_any_other_boxed_with_the_same_span() {
        use super::super::layer::{SpanTracer, WrappedTracer};
        use opentelemetry::trace::TracerProvider as _;

        let scope = super::super::INSTRUMENTATION_SCOPE;
        {
            let (_, sdk) = provider();
            assert!(matches!(
                SpanTracer::new(sdk.tracer(scope)),
                SpanTracer::Sdk(_)
            ));
            assert!(matches!(
                SpanTracer::new(WrappedTracer(sdk.tracer(scope))),
                SpanTracer::Boxed(_)
            ));
        }

        const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
        const PARENT: &str = "b7ad6b7169203331";
        let mut seen = Vec::new();
        for direct in [true, false] {
            let (spans, sdk) = provider();
            let builder = TelemetryLayer::builder().propagator(w3c_propagator());
            let builder = if direct {
                builder.tracer_provider(&sdk)
            } else {
                builder.tracer(WrappedTracer(sdk.tracer(scope)))
            };
            let svc = builder
                .build()
                .layer(service_fn(|_req: Request<Full<Bytes>>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                }));
            let req = Request::builder()
                .uri("/v1/accounts")
                .header("x-order-id", "ord-7")
                .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
                .body(Full::default())
                .unwrap();
            let res = svc.oneshot(req).await.unwrap();
            res.into_body().collect().await.unwrap();
            let finished = spans.get_finished_spans().unwrap();
            assert_eq!(finished.len(), 1, "direct: {direct}");
            let span = &finished[0];
            assert_eq!(span.span_context.trace_id().to_string(), TRACE);
            assert_eq!(span.parent_span_id.to_string(), PARENT);
            assert_eq!(attr(span, "trace_id").as_deref(), Some(TRACE));
            assert_eq!(attr(span, "order_id").as_deref(), Some("ord-7"));
            let mut attrs: Vec<(String, String)> = span
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect();
            attrs.sort();
            seen.push((span.name.clone(), span.span_kind.clone(), attrs));
        }
        assert_eq!(seen[0], seen[1]);
    }

    #[test]
    fn order_id_validation() {
        let long = "a".repeat(MAX_ORDER_ID_LEN);
        let too_long = "a".repeat(MAX_ORDER_ID_LEN + 1);
        let rows: [(&str, bool); 9] = [
            ("ord-1", true),
            ("A_b.c:d/e#1~", true),
            (&long, true),
            (&too_long, false),
            ("", false),
            ("a b", false),
            ("tab\t", false),
            ("ü", false),
            ("\u{7f}", false),
        ];
        for (s, ok) in rows {
            assert_eq!(valid_order_id(s), ok, "{s:?}");
        }
    }

    #[test]
    fn trace_id_hex_matches_display() {
        for id in [
            1u128,
            0x0af7651916cd43dd8448eb211c80319c,
            u128::MAX,
            0x00000000000000000000000000000010,
            0xfedcba98765432100123456789abcdef,
        ] {
            let id = TraceId::from(id);
            assert_eq!(&*trace_id_hex(id), id.to_string());
        }
    }

    #[test]
    fn two_order_id_headers_are_invalid() {
        let mut h = HeaderMap::new();
        h.append("x-order-id", HeaderValue::from_static("a"));
        h.append("x-order-id", HeaderValue::from_static("b"));
        let name = HeaderName::from_static("x-order-id");
        assert_eq!(
            order_id(&h, &name, &Context::new()),
            Err(OrderIdError::Invalid)
        );
    }

    #[tokio::test]
    async fn skipped_paths_match_whole_segments() {
        let (spans, provider) = provider();
        let svc = TelemetryLayer::builder()
            .tracer_provider(&provider)
            .build()
            .layer(service_fn(|_req: Request<Full<Bytes>>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
            }));
        for path in ["/livez", "/readyz/etcd", "/healthz", "/livezz", "/v1/livez"] {
            let req = Request::get(path).body(Full::default()).unwrap();
            let res = svc.clone().oneshot(req).await.unwrap();
            res.into_body().collect().await.unwrap();
        }
        let paths: Vec<_> = spans
            .get_finished_spans()
            .unwrap()
            .iter()
            .map(|s| attr(s, "url.path").unwrap())
            .collect();
        assert_eq!(paths, ["/livezz", "/v1/livez"]);
    }

    #[tokio::test]
    async fn inner_error_ends_the_span_with_error_status() {
        let (spans, provider) = provider();
        let svc = TelemetryLayer::builder()
            .tracer_provider(&provider)
            .build()
            .layer(service_fn(|_req: Request<Full<Bytes>>| async {
                Err::<Response<Full<Bytes>>, _>("boom")
            }));
        let err = svc
            .oneshot(Request::new(Full::default()))
            .await
            .unwrap_err();
        assert_eq!(err, "boom");
        let span = &spans.get_finished_spans().unwrap()[0];
        assert!(matches!(span.status, Status::Error { .. }));
        assert_eq!(attr(span, "error.type").as_deref(), Some("service_error"));
    }

    #[tokio::test]
    async fn dropped_body_still_ends_the_span() {
        let (spans, provider) = provider();
        let svc = TelemetryLayer::builder()
            .tracer_provider(&provider)
            .propagator(w3c_propagator())
            .build()
            .layer(service_fn(|_req: Request<Full<Bytes>>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("x"))))
            }));
        let res = svc.oneshot(Request::new(Full::default())).await.unwrap();
        assert!(
            spans.get_finished_spans().unwrap().is_empty(),
            "ends with the body"
        );
        drop(res);
        let span = &spans.get_finished_spans().unwrap()[0];
        assert_eq!(attr(span, "error.type").as_deref(), Some("cancelled"));
        assert_eq!(
            attr(span, "http.response.status_code").as_deref(),
            Some("200")
        );
    }

    #[tokio::test]
    async fn handler_runs_inside_the_server_span() {
        let (spans, provider) = provider();
        let svc = TelemetryLayer::builder()
            .tracer_provider(&provider)
            .build()
            .layer(service_fn(|_req: Request<Full<Bytes>>| async {
                tokio::task::yield_now().await;
                let cx = Context::current();
                let id = cx.span().span_context().span_id().to_string();
                let labels = cx.get::<ServerScope>().is_some();
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(format!(
                    "{id} {labels}"
                )))))
            }));
        let res = svc.oneshot(Request::new(Full::default())).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let span = &spans.get_finished_spans().unwrap()[0];
        assert_eq!(body, format!("{} true", span.span_context.span_id()));
    }
}
