//! [`PropagateLayer`]: carries the current trace context, baggage and
//! business labels to the next hop.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use opentelemetry::baggage::{BaggageExt, KeyValueMetadata};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderInjector;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::extract::W3cTraceState;
use super::layer::{INSTRUMENTATION_SCOPE, PropagatorSource, ServerScope, SpanTracer};
use crate::labels::RequestLabels;
use crate::reject::Protocol;

struct Config {
    propagator: PropagatorSource,
    tracer: Option<Arc<SpanTracer>>,
}

/// Client-side propagation for any tower HTTP client (a tonic `Channel`,
/// a hyper-util client): injects `traceparent`, `tracestate` and `baggage`
/// from the current OpenTelemetry context, with the request's `order_id`
/// and verified `user_risk_level` as baggage entries.
///
/// Each call is its own client span with its own span id, the W3C
/// parent-id the next hop sees: the span comes from the tracer given to
/// [`client_spans`](Self::client_spans), else from the tracer of the
/// [`TelemetryLayer`](super::TelemetryLayer) serving the current request.
/// Without either (or with a no-op tracer) the call still gets a fresh
/// span id, which nothing records.
///
/// Inside a handler served through [`TelemetryLayer`](super::TelemetryLayer),
/// the current context is the server span's, and the request's
/// [`RequestLabels`] supply the business labels (outside one, labels put
/// in the context with `Context::with_value` do). The caller's own
/// `user_risk_level` baggage is never forwarded: only the verified level,
/// or none.
#[derive(Clone)]
pub struct PropagateLayer {
    config: Arc<Config>,
}

impl fmt::Debug for PropagateLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PropagateLayer")
            .field("client_spans", &self.config.tracer.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for PropagateLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl PropagateLayer {
    /// Injects with the global propagator; client spans from the
    /// `TelemetryLayer` serving the request, if any.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                propagator: PropagatorSource::Global,
                tracer: None,
            }),
        }
    }

    fn map(self, f: impl FnOnce(&mut Config)) -> Self {
        // A layer cloned before this call keeps its own configuration;
        // this one starts from a copy of everything set so far.
        let mut config = Arc::try_unwrap(self.config).unwrap_or_else(|shared| Config {
            propagator: shared.propagator.clone(),
            tracer: shared.tracer.clone(),
        });
        f(&mut config);
        Self {
            config: Arc::new(config),
        }
    }

    /// Injects with `propagator` instead of the global one.
    pub fn propagator<P>(self, propagator: P) -> Self
    where
        P: TextMapPropagator + Send + Sync + 'static,
    {
        self.map(|c| c.propagator = PropagatorSource::Given(Arc::new(propagator)))
    }

    /// Opens the client span of each call with a tracer from `provider`,
    /// also outside a `TelemetryLayer`; the span ends when the response
    /// headers arrive (with `grpc-status` when the answer is
    /// trailers-only).
    pub fn client_spans<P>(self, provider: &P) -> Self
    where
        P: TracerProvider,
        P::Tracer: Tracer + Send + Sync + 'static,
        <P::Tracer as Tracer>::Span: Send + Sync + 'static,
    {
        let tracer = SpanTracer::new(provider.tracer(INSTRUMENTATION_SCOPE));
        self.map(|c| c.tracer = Some(Arc::new(tracer)))
    }
}

impl<S> Layer<S> for PropagateLayer {
    type Service = Propagate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Propagate {
            inner,
            config: self.config.clone(),
        }
    }
}

/// Middleware that propagates the current context. See [`PropagateLayer`].
#[derive(Clone)]
pub struct Propagate<S> {
    inner: S,
    config: Arc<Config>,
}

crate::macros::inner_accessors!([S] Propagate<S>, inner: S);

impl<S: fmt::Debug> fmt::Debug for Propagate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Propagate")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// `cx` with the business labels of the request being served as baggage:
/// `order_id`, and `user_risk_level` only as verified.
fn with_business_baggage(cx: &Context) -> Context {
    // The serving layer's scope, or labels a caller put in the context
    // itself (`Context::with_value(labels)`), as before the scope existed.
    let labels = cx
        .get::<ServerScope>()
        .map(|s| &s.labels)
        .or_else(|| cx.get::<RequestLabels>());
    let (order_id, risk) =
        labels.map_or((None, None), |l| l.update(|v| (v.order_id.clone(), v.risk)));
    let caller_risk = cx.baggage().get("user_risk_level").is_some();
    if order_id.is_none() && risk.is_none() && !caller_risk {
        return cx.clone();
    }
    // Security: a risk level the caller put in baggage is never
    // passed on as if it were ours; only the verified one is.
    let replace_order = order_id.is_some();
    let kept = cx
        .baggage()
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            k != "user_risk_level" && !(replace_order && k == "order_id")
        })
        .map(|(k, (v, m))| KeyValueMetadata::new(k.clone(), v.clone(), m.clone()));
    let ours = order_id
        .map(|o| KeyValueMetadata::new("order_id", o.to_string(), ""))
        .into_iter()
        .chain(risk.map(|r| KeyValueMetadata::new("user_risk_level", r.as_str(), "")));
    let entries: Vec<KeyValueMetadata> = kept.chain(ours).collect();
    cx.with_baggage(entries)
}

/// `cx` with a span id of its own for one outgoing call that no tracer
/// records: the W3C parent-id is this request as the caller knows it, so
/// two calls never share one. Nothing records the id; the next hop's span
/// hangs under the current span's trace without its parent, which is why
/// [`PropagateLayer::client_spans`] (or serving through `TelemetryLayer`)
/// is the better setup.
fn own_span_id(cx: Context) -> Context {
    let parent = cx.span().span_context().clone();
    if !parent.is_valid() {
        return cx;
    }
    let id = RandomIdGenerator::default().new_span_id();
    cx.with_remote_span_context(SpanContext::new(
        parent.trace_id(),
        id,
        parent.trace_flags(),
        false,
        parent.trace_state().clone(),
    ))
}

/// Sends on the `tracestate` that [`TelemetryLayer`](super::TelemetryLayer)
/// checked for this trace when the propagator wrote a `traceparent` but no
/// list: the stock `TraceState` refuses keys the W3C grammar allows
/// (`foo@@bar`, a vendor part of 14 or more characters) and would drop
/// the caller's whole list.
fn carry_checked_tracestate(cx: &Context, headers: &mut http::HeaderMap) {
    let Some(checked) = cx.get::<W3cTraceState>() else {
        return;
    };
    let written = headers
        .get("tracestate")
        .is_some_and(|v| !v.as_bytes().is_empty());
    if written
        || !headers.contains_key("traceparent")
        || cx.span().span_context().trace_id() != checked.trace_id
    {
        return;
    }
    if let Ok(value) = http::HeaderValue::from_str(&checked.header) {
        headers.insert("tracestate", value);
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Propagate<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = PropagateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let current = Context::current();
        let tracer = self
            .config
            .tracer
            .clone()
            .or_else(|| current.get::<ServerScope>().and_then(|s| s.tracer.clone()));
        let (cx, client) = match tracer {
            None => (own_span_id(current), None),
            Some(tracer) => {
                let grpc = Protocol::of(req.headers()).is_grpc();
                let path = req.uri().path();
                let (name, attrs) = if grpc {
                    let name = path.trim_start_matches('/').to_owned();
                    let mut attrs = vec![KeyValue::new("rpc.system", "grpc")];
                    if let Some((service, method)) = name.rsplit_once('/') {
                        attrs.push(KeyValue::new("rpc.service", service.to_owned()));
                        attrs.push(KeyValue::new("rpc.method", method.to_owned()));
                    }
                    (name, attrs)
                } else {
                    let mut attrs = vec![KeyValue::new(
                        "http.request.method",
                        req.method().to_string(),
                    )];
                    if let Some(host) = req.uri().host() {
                        attrs.push(KeyValue::new("server.address", host.to_owned()));
                    }
                    (req.method().to_string(), attrs)
                };
                let cx = tracer.start(
                    SpanBuilder::from_name(name)
                        .with_kind(SpanKind::Client)
                        .with_attributes(attrs),
                    &current,
                );
                let parent_id = current.span().span_context().span_id();
                if cx.span().span_context().span_id() == parent_id {
                    // A no-op tracer hands back the parent's span context.
                    (own_span_id(current), None)
                } else {
                    (cx.clone(), Some((cx, grpc)))
                }
            }
        };
        let cx = with_business_baggage(&cx);
        self.config.propagator.with(|p| {
            p.inject_context(&cx, &mut HeaderInjector(req.headers_mut()));
        });
        carry_checked_tracestate(&cx, req.headers_mut());
        PropagateFuture {
            inner: self.inner.call(req),
            client: ClientSpan(client),
        }
    }
}

/// Ends the client span exactly once, also when the call is dropped.
struct ClientSpan(Option<(Context, bool)>);

impl ClientSpan {
    fn end<B, E>(&mut self, result: Option<&Result<Response<B>, E>>) {
        let Some((cx, grpc)) = self.0.take() else {
            return;
        };
        let span = cx.span();
        match result {
            Some(Ok(res)) => {
                let status = res.status().as_u16();
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                let grpc_code = res
                    .headers()
                    .get(&crate::reject::GRPC_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u8>().ok())
                    .filter(|c| *c <= 16);
                if grpc && let Some(code) = grpc_code {
                    span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
                }
                if (grpc && grpc_code.is_some_and(|c| c != 0)) || (!grpc && status >= 400) {
                    span.set_status(Status::error(format!("status {status}")));
                }
            }
            Some(Err(_)) => span.set_status(Status::error("transport error")),
            None => span.set_attribute(KeyValue::new("error.type", "cancelled")),
        }
        span.end();
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        self.end::<(), ()>(None);
    }
}

pin_project! {
    /// Response future of [`Propagate`].
    pub struct PropagateFuture<F> {
        #[pin]
        inner: F,
        client: ClientSpan,
    }
}

impl<F, B, E> Future for PropagateFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        this.client.end(Some(&result));
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RiskLevel;
    use crate::telemetry::w3c_propagator;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use tower::{ServiceExt, service_fn};

    /// Calls a `Propagate` over a service that answers with the headers it
    /// was sent, inside `cx`.
    async fn sent_headers(cx: Context) -> http::HeaderMap {
        let svc = PropagateLayer::new()
            .propagator(w3c_propagator())
            .layer(service_fn(|req: Request<()>| async move {
                Ok::<_, std::convert::Infallible>(Response::new(req.headers().clone()))
            }));
        // `oneshot` calls the service when first polled: poll it in `cx`.
        let call =
            opentelemetry::context::FutureExt::with_context(svc.oneshot(Request::new(())), cx);
        call.await.unwrap().into_body()
    }

    fn remote_parent() -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    #[tokio::test]
    async fn injects_trace_context_and_verified_business_baggage() {
        // The labels as the serving layer keeps them, and as a caller
        // outside one puts them in the context itself.
        for in_scope in [true, false] {
            let labels = RequestLabels::new();
            labels.set_order_id("ord-9");
            labels.set_risk(RiskLevel::Medium);
            let cx = remote_parent().with_baggage([
                KeyValueMetadata::new("user_risk_level", "low", ""),
                KeyValueMetadata::new("order_id", "stale", ""),
                KeyValueMetadata::new("channel", "web", ""),
            ]);
            let cx = if in_scope {
                cx.with_value(ServerScope {
                    labels,
                    tracer: None,
                })
            } else {
                cx.with_value(labels)
            };
            let headers = sent_headers(cx).await;
            let tp = headers["traceparent"].to_str().unwrap();
            assert!(
                tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && tp.ends_with("-01"),
                "{tp}"
            );
            assert!(!tp.contains("b7ad6b7169203331"), "the call's own id: {tp}");
            let mut baggage: Vec<_> = headers["baggage"].to_str().unwrap().split(',').collect();
            baggage.sort();
            assert_eq!(
                baggage,
                ["channel=web", "order_id=ord-9", "user_risk_level=medium"],
                "in scope: {in_scope}"
            );
        }
    }

    #[tokio::test]
    async fn caller_risk_is_not_forwarded_without_a_verified_one() {
        let cx = remote_parent().with_baggage([
            KeyValueMetadata::new("user_risk_level", "low", ""),
            KeyValueMetadata::new("order_id", "ord-1", ""),
        ]);
        let headers = sent_headers(cx).await;
        assert_eq!(headers["baggage"], "order_id=ord-1");
    }

    #[test]
    fn builder_calls_on_a_cloned_layer_keep_what_was_set_before() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = PropagateLayer::new().client_spans(&provider);
        let kept = layer.clone();
        // `layer` is shared with `kept`: the next call copies the config.
        let layer = layer.propagator(w3c_propagator());
        assert!(layer.config.tracer.is_some(), "client spans survive");
        assert!(matches!(
            layer.config.propagator,
            PropagatorSource::Given(_)
        ));
        assert!(kept.config.tracer.is_some());
        assert!(matches!(kept.config.propagator, PropagatorSource::Global));
    }

    #[tokio::test]
    async fn each_call_without_a_tracer_gets_its_own_parent_id() {
        let mut ids = std::collections::HashSet::new();
        for _ in 0..3 {
            let headers = sent_headers(remote_parent()).await;
            let tp = headers["traceparent"].to_str().unwrap().to_owned();
            assert_eq!(tp.len(), 55, "{tp}");
            assert!(tp.contains("0af7651916cd43dd8448eb211c80319c"), "{tp}");
            ids.insert(tp[36..52].to_owned());
        }
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert!(!ids.contains("b7ad6b7169203331"));
    }

    #[tokio::test]
    async fn client_spans_of_the_serving_layer_parent_the_next_hop() {
        // The SDK's tracer (called directly) and any other (boxed).
        for direct in [true, false] {
            let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let sdk = provider.tracer(INSTRUMENTATION_SCOPE);
            let tracer = if direct {
                SpanTracer::new(sdk)
            } else {
                SpanTracer::new(super::super::layer::WrappedTracer(sdk))
            };
            assert_eq!(matches!(tracer, SpanTracer::Sdk(_)), direct);
            let cx = remote_parent().with_value(ServerScope {
                labels: RequestLabels::default(),
                tracer: Some(Arc::new(tracer)),
            });
            let headers = sent_headers(cx).await;
            let spans = exporter.get_finished_spans().unwrap();
            assert_eq!(spans.len(), 1);
            assert_eq!(spans[0].span_kind, SpanKind::Client);
            assert_eq!(spans[0].parent_span_id.to_string(), "b7ad6b7169203331");
            let sent = headers["traceparent"].to_str().unwrap();
            assert_eq!(&sent[36..52], spans[0].span_context.span_id().to_string());
        }
    }

    #[tokio::test]
    async fn nothing_to_propagate_injects_nothing() {
        let headers = sent_headers(Context::new()).await;
        assert!(headers.is_empty(), "{headers:?}");
    }
}
