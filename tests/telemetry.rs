//! `TelemetryLayer` and `PropagateLayer` on real axum and tonic servers on
//! loopback, observed through the SDK's in-memory span exporter and metric
//! exporter (one provider pair per test, never the globals).
#![cfg(feature = "telemetry")]

mod support;

#[path = "../examples/tracecontext_service.rs"]
#[allow(dead_code, unreachable_pub)]
mod tracecontext_service;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use finmesh::telemetry::{
    PropagateLayer, SERVER_DURATION, SERVER_REJECTIONS, TelemetryLayer, TelemetryLayerBuilder,
    w3c_propagator,
};
use finmesh::{Principal, Rejection, RejectionKind, RequestLabels, RiskLevel, TenantNamespace};
use http::Method;
use http_body_util::Full;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::{EchoReply, EchoRequest, pb};
use tokio_stream::StreamExt;
use tower::Layer;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

/// Per-test OpenTelemetry pipeline with in-memory exporters.
struct Otel {
    spans: InMemorySpanExporter,
    tracer_provider: SdkTracerProvider,
    metrics: InMemoryMetricExporter,
    meter_provider: SdkMeterProvider,
}

impl Otel {
    fn new() -> Self {
        Self::with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::AlwaysOn,
        )))
    }

    fn with_sampler(sampler: opentelemetry_sdk::trace::Sampler) -> Self {
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_simple_exporter(spans.clone())
            .build();
        let metrics = InMemoryMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        Self {
            spans,
            tracer_provider,
            metrics,
            meter_provider,
        }
    }

    fn layer(&self) -> TelemetryLayerBuilder {
        TelemetryLayer::builder()
            .tracer_provider(&self.tracer_provider)
            .meter_provider(&self.meter_provider)
            .propagator(w3c_propagator())
            .route_template(|_: &Method, _: &http::Uri, ext: &http::Extensions| {
                ext.get::<MatchedPath>()
                    .map(|p| Cow::Owned(p.as_str().to_owned()))
            })
    }

    fn finished(&self) -> Vec<SpanData> {
        self.spans.get_finished_spans().unwrap()
    }

    /// Waits (bounded) until a finished span matches `pred`.
    async fn span(&self, what: &str, pred: impl Fn(&SpanData) -> bool) -> SpanData {
        for _ in 0..400 {
            if let Some(s) = self.finished().into_iter().find(&pred) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no finished span {what}; have {:#?}", self.finished());
    }

    async fn server_span(&self, name: &str) -> SpanData {
        self.span(name, |s| s.span_kind == SpanKind::Server && s.name == name)
            .await
    }

    /// Every exported data point of `name`: its attributes and value.
    fn points(&self, name: &str) -> Vec<(HashMap<String, String>, f64)> {
        self.meter_provider.force_flush().unwrap();
        let mut out = Vec::new();
        let all = self.metrics.get_finished_metrics().unwrap();
        let Some(last) = all.last() else {
            return out;
        };
        for scope in last.scope_metrics() {
            for metric in scope.metrics() {
                if metric.name() != name {
                    continue;
                }
                let attrs = |it: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                    it.map(|kv| (kv.key.to_string(), kv.value.to_string()))
                        .collect::<HashMap<_, _>>()
                };
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        assert_eq!(metric.unit(), "ms");
                        for p in h.data_points() {
                            out.push((attrs(&mut p.attributes()), p.count() as f64));
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        for p in s.data_points() {
                            out.push((attrs(&mut p.attributes()), p.value() as f64));
                        }
                    }
                    other => panic!("unexpected data for {name}: {other:?}"),
                }
            }
        }
        out
    }
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.to_string(),
            other => other.to_string(),
        })
}

fn trace_id(span: &SpanData) -> String {
    span.span_context.trace_id().to_string()
}

/// Stand-in for the JWT layer: `authorization: Bearer <subject>:<risk>`
/// becomes a verified `Principal`, recorded in the labels as the real
/// layer does. Also admits tenant `acme` like the tenant layer.
async fn fake_auth(req: Request, next: Next) -> Response {
    next.run(fake_auth_sync(req)).await
}

/// [`fake_auth`] for any body type, as a plain request map.
fn fake_auth_sync<B>(mut req: http::Request<B>) -> http::Request<B> {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Some(token) = token {
        let (subject, risk) = token.split_once(':').unwrap_or((&token, ""));
        let mut principal = Principal::new(subject, "test");
        let labels = req.extensions().get::<RequestLabels>().cloned();
        if let Ok(risk) = risk.parse::<RiskLevel>() {
            principal = principal.with_risk(risk);
            if let Some(l) = &labels {
                l.set_risk(risk);
            }
        }
        if let Some(l) = &labels {
            l.set_subject(subject);
            l.set_tenant(TenantNamespace::parse("acme").unwrap());
        }
        req.extensions_mut().insert(principal);
    }
    req
}

/// An inner layer refusing every request with `rejection`.
fn refusing(
    rejection: Rejection,
) -> impl Fn(Request, Next) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    move |req: Request, _next: Next| {
        let res = rejection.respond(&req);
        std::future::ready(res.map(axum::body::Body::new).into_response())
    }
}

/// A handler refusing as RBAC would: `rbac.denied`.
async fn denied(req: Request) -> Response {
    Rejection::new(RejectionKind::PermissionDenied, "rbac.denied", "no")
        .respond(&req)
        .map(axum::body::Body::new)
}

fn tp(trace: &str, parent: &str) -> String {
    format!("00-{trace}-{parent}-01")
}

#[tokio::test]
async fn w3c_traceparent_vectors_are_continued_or_restart_the_trace() {
    let otel = Otel::new();
    let server = support::spawn(support::echo_app().layer(otel.layer().build())).await;
    let upper_trace = TRACE.to_uppercase();
    let upper_parent = PARENT.to_uppercase();
    let valid = tp(TRACE, PARENT);
    // (traceparent, continued?)
    let rows: Vec<(String, bool)> = vec![
        (valid.clone(), true),
        (format!("ff-{TRACE}-{PARENT}-01"), false),
        (tp(&"0".repeat(32), PARENT), false),
        (tp(TRACE, &"0".repeat(16)), false),
        (tp(&upper_trace, PARENT), false),
        (tp(TRACE, &upper_parent), false),
        (format!("00-{TRACE}-{PARENT}-0A"), false),
        (tp(&TRACE[1..], PARENT), false),
        (tp(&format!("{TRACE}0"), PARENT), false),
        (tp(TRACE, &PARENT[1..]), false),
        (tp(TRACE, &format!("{PARENT}0")), false),
        (format!("00-{TRACE}-{PARENT}-1"), false),
        (format!("0-{TRACE}-{PARENT}-01"), false),
        (tp(&format!("+{}", &TRACE[1..]), PARENT), false),
        (tp(&format!("{}g", &TRACE[..31]), PARENT), false),
        (tp(TRACE, &format!("{}.", &PARENT[..15])), false),
        (format!("00_{TRACE}_{PARENT}_01"), false),
        (format!("00-{TRACE}-{PARENT}-01-extra"), false),
        (format!("cc-{TRACE}-{PARENT}-01"), true),
        (
            format!("cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like"),
            true,
        ),
        (
            format!("cc-{TRACE}-{PARENT}-01.what-the-future-will-be-like"),
            false,
        ),
    ];
    for (i, (traceparent, continued)) in rows.iter().enumerate() {
        otel.spans.reset();
        let res = support::get(
            &server.url("/ok"),
            &[("traceparent", traceparent), ("tracestate", "foo=1,bar=2")],
        )
        .await;
        assert_eq!(res.status, 200, "row {i}");
        let span = otel.server_span("GET /ok").await;
        let parent = span.parent_span_id;
        if *continued {
            assert_eq!(trace_id(&span), TRACE, "row {i}: {traceparent}");
            assert_eq!(parent.to_string(), PARENT, "row {i}");
            assert!(span.parent_span_is_remote, "row {i}");
            assert_eq!(
                span.span_context.trace_state().header(),
                "foo=1,bar=2",
                "row {i}: tracestate kept with a valid traceparent"
            );
        } else {
            assert_ne!(
                trace_id(&span),
                TRACE,
                "row {i}: {traceparent} must restart"
            );
            assert_eq!(parent, SpanId::INVALID, "row {i}: {traceparent}");
            assert_eq!(
                span.span_context.trace_state().header(),
                "",
                "row {i}: tracestate dropped without a valid traceparent"
            );
        }
        assert!(span.span_context.is_valid(), "row {i}");
    }

    // tracestate: several headers are one list; a duplicated key keeps
    // its first (most recent) value; an illegal member discards the list.
    for (headers, expected) in [
        (vec!["foo=1", "bar=2"], "foo=1,bar=2"),
        (vec!["foo=1,foo=2"], "foo=1"),
        (vec!["foo=1", "bar="], ""),
    ] {
        otel.spans.reset();
        let mut req = http::Request::get(server.url("/ok")).header("traceparent", &valid);
        for h in headers {
            req = req.header("tracestate", h);
        }
        support::send(req.body(Full::default()).unwrap()).await;
        let span = otel.server_span("GET /ok").await;
        assert_eq!(trace_id(&span), TRACE);
        assert_eq!(span.span_context.trace_state().header(), expected);
    }
}

/// A route that answers with the baggage the handler sees.
fn baggage_app(otel: &Otel) -> axum::Router {
    axum::Router::new()
        .route(
            "/bag",
            axum::routing::get(|| async {
                let cx = Context::current();
                let bag: HashMap<String, String> = cx
                    .baggage()
                    .iter()
                    .map(|(k, (v, _))| (k.to_string(), v.to_string()))
                    .collect();
                axum::Json(bag)
            }),
        )
        .layer(from_fn(fake_auth))
        .layer(otel.layer().build())
}

#[tokio::test]
async fn several_baggage_headers_are_combined_and_values_keep_their_equals_sign() {
    let otel = Otel::new();
    let server = support::spawn(baggage_app(&otel)).await;
    let mut req = http::Request::get(server.url("/bag"));
    req = req
        .header("baggage", "order_id=ord-42")
        .header("baggage", "note=a=b==c;prop=1, user_risk_level=critical");
    let res = support::send(req.body(Full::default()).unwrap()).await;
    assert_eq!(res.status, 200);
    let bag = res.json();
    assert_eq!(bag["order_id"], "ord-42");
    assert_eq!(bag["note"], "a=b==c");
    assert_eq!(bag["user_risk_level"], "critical");
    let span = otel.server_span("GET /bag").await;
    assert_eq!(attr(&span, "order_id").as_deref(), Some("ord-42"));
    assert_eq!(
        attr(&span, "baggage.user_risk_level").as_deref(),
        Some("critical")
    );
    // Security: no verified principal, so no user_risk_level at all.
    assert_eq!(attr(&span, "user_risk_level"), None);
}

#[tokio::test]
async fn oversized_baggage_is_dropped_without_failing_the_request() {
    let otel = Otel::new();
    let server = support::spawn(baggage_app(&otel)).await;
    let big = format!("order_id=ord-1,pad={}", "x".repeat(9000));
    let res = support::get(&server.url("/bag"), &[("baggage", &big)]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), serde_json::json!({}));
    let span = otel.server_span("GET /bag").await;
    assert_eq!(attr(&span, "baggage.dropped").as_deref(), Some("true"));
    assert_eq!(attr(&span, "order_id"), None);

    // Two headers that only together exceed the limit are dropped too.
    let half = format!("pad={}", "y".repeat(5000));
    let mut req = http::Request::get(server.url("/bag"));
    req = req.header("baggage", &half).header("baggage", &half);
    let res = support::send(req.body(Full::default()).unwrap()).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), serde_json::json!({}));
}

#[tokio::test]
async fn successful_http_request_has_semantic_attributes_and_unset_status() {
    let otel = Otel::new();
    let app = support::echo_app()
        .layer(from_fn(fake_auth))
        .layer(otel.layer().echo_trace_id(true).build());
    let server = support::spawn(app).await;
    let res = support::get(
        &server.url("/v1/accounts/42"),
        &[
            ("traceparent", &tp(TRACE, PARENT)),
            ("x-order-id", "ord-7"),
            ("authorization", "Bearer alice:medium"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-trace-id"), TRACE);
    let span = otel.server_span("GET /v1/{*rest}").await;
    assert_eq!(span.span_kind, SpanKind::Server);
    // Instrumentation leaves success unset (OpenTelemetry trace API).
    assert_eq!(span.status, Status::Unset);
    let expect = [
        ("http.request.method", "GET"),
        ("url.path", "/v1/accounts/42"),
        ("http.route", "/v1/{*rest}"),
        ("http.response.status_code", "200"),
        ("trace_id", TRACE),
        ("order_id", "ord-7"),
        ("user_risk_level", "medium"),
        ("tenant", "acme"),
        ("enduser.id", "alice"),
        ("retry_count", "0"),
    ];
    for (k, v) in expect {
        assert_eq!(attr(&span, k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(attr(&span, "error.type"), None);
}

#[tokio::test]
async fn tenants_outside_the_metric_set_are_counted_as_other() {
    let otel = Otel::new();
    // `acme` (what the fake auth admits) is not in the set; spans keep it.
    let layer = otel
        .layer()
        .metric_tenants(|ns: &TenantNamespace| ns.as_str() == "registered")
        .build();
    let app = support::echo_app().layer(from_fn(fake_auth)).layer(layer);
    let server = support::spawn(app).await;
    let res = support::get(
        &server.url("/v1/accounts"),
        &[("authorization", "Bearer alice:low")],
    )
    .await;
    assert_eq!(res.status, 200);
    let span = otel.server_span("GET /v1/{*rest}").await;
    assert_eq!(attr(&span, "tenant").as_deref(), Some("acme"));
    let points = otel.points(SERVER_DURATION);
    assert!(!points.is_empty());
    for (attrs, _) in &points {
        assert_eq!(
            attrs.get("tenant").map(String::as_str),
            Some(finmesh::telemetry::OTHER_TENANT),
            "{attrs:?}"
        );
    }
}

#[tokio::test]
async fn the_metrics_are_the_same_whether_or_not_the_sampler_keeps_the_span() {
    let mut seen = Vec::new();
    for sampled in [true, false] {
        let otel = if sampled {
            Otel::new()
        } else {
            Otel::with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
        };
        let app = axum::Router::new()
            .route("/v1/accounts", axum::routing::get(|| async { "ok" }))
            .route("/v1/refuse", axum::routing::get(denied))
            .layer(from_fn(fake_auth))
            .layer(otel.layer().echo_trace_id(true).build());
        let server = support::spawn(app).await;
        for (path, status) in [("/v1/accounts", 200), ("/v1/refuse", 403)] {
            let res =
                support::get(&server.url(path), &[("authorization", "Bearer bob:high")]).await;
            assert_eq!(res.status, status, "{path}");
            // The trace id is made and echoed either way.
            assert_eq!(res.headers["x-trace-id"].len(), 32);
        }
        if sampled {
            otel.server_span("GET /v1/refuse").await;
            otel.server_span("GET /v1/accounts").await;
        }
        let sorted = |points: Vec<(HashMap<String, String>, f64)>| {
            let mut points: Vec<_> = points
                .into_iter()
                .map(|(attrs, n)| {
                    let mut attrs: Vec<_> = attrs.into_iter().collect();
                    attrs.sort();
                    (attrs, n as u64)
                })
                .collect();
            points.sort();
            points
        };
        // A span ends (and its metrics are recorded) when the response
        // body ends on the server: wait, bounded, for both requests.
        let mut duration = Vec::new();
        for _ in 0..400 {
            duration = sorted(otel.points(SERVER_DURATION));
            if duration.iter().map(|(_, n)| n).sum::<u64>() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let rejections = sorted(otel.points(SERVER_REJECTIONS));
        assert_eq!(duration.len(), 2, "{duration:?}");
        assert_eq!(rejections.len(), 1, "{rejections:?}");
        seen.push((duration, rejections));
        server.shutdown().await;
    }
    assert_eq!(seen[0], seen[1]);
    let (duration, _) = &seen[1];
    for (attrs, _) in duration {
        let has = |k: &str, v: &str| attrs.iter().any(|(a, b)| a == k && b == v);
        assert!(
            has("tenant", "acme") && has("user_risk_level", "high"),
            "{attrs:?}"
        );
    }
}

#[tokio::test]
async fn custom_order_id_and_trace_id_headers_and_skip_paths_are_honoured() {
    let otel = Otel::new();
    let layer = otel
        .layer()
        .order_id_header(http::HeaderName::from_static("x-business-order"))
        .trace_id_header(http::HeaderName::from_static("x-correlation-id"))
        .skip_paths(["/ok"])
        .require_order_id_on(Method::POST, "/v1/transfer")
        .build();
    let server = support::spawn(support::echo_app().layer(layer)).await;
    let post = |headers: &[(&str, &str)]| {
        let mut b = http::Request::post(server.url("/v1/transfer"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        support::send(b.body(Full::default()).unwrap())
    };
    // The default header is no longer read.
    let res = post(&[("x-order-id", "ord-1")]).await;
    assert_eq!(res.json()["code"], "telemetry.order_id_missing");
    let res = post(&[("x-business-order", "ord-2")]).await;
    assert_eq!(res.status, 200);
    let span = otel
        .span("ord-2", |s| attr(s, "order_id").as_deref() == Some("ord-2"))
        .await;
    assert_eq!(res.header("x-correlation-id"), trace_id(&span));
    assert_eq!(res.header("x-trace-id"), "");
    // Skipped: /ok. No longer skipped: the default probe paths.
    support::get(&server.url("/ok"), &[]).await;
    support::get(&server.url("/livez"), &[]).await;
    otel.span("/livez", |s| {
        attr(s, "url.path").as_deref() == Some("/livez")
    })
    .await;
    assert!(
        !otel
            .finished()
            .iter()
            .any(|s| attr(s, "url.path").as_deref() == Some("/ok")),
        "{:?}",
        otel.finished()
    );
}

#[tokio::test]
async fn health_probes_are_not_traced() {
    let otel = Otel::new();
    let server = support::spawn(support::echo_app().layer(otel.layer().build())).await;
    for path in ["/livez", "/readyz/etcd", "/healthz"] {
        support::get(&server.url(path), &[]).await;
    }
    support::get(&server.url("/ok"), &[]).await;
    otel.server_span("GET /ok").await;
    let names: Vec<_> = otel.finished().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["GET /ok"]);
}

#[tokio::test]
async fn each_kind_of_inner_rejection_labels_the_span_and_carries_the_trace_id() {
    /// One refusal: what the inner layer answers and what the span shows.
    struct Row {
        kind: RejectionKind,
        code: &'static str,
        http: u16,
        grpc: i32,
        /// A gRPC server error by OpenTelemetry's rules (span status Error).
        grpc_server_error: bool,
    }
    const fn row(kind: RejectionKind, code: &'static str, http: u16, grpc: i32, err: bool) -> Row {
        Row {
            kind,
            code,
            http,
            grpc,
            grpc_server_error: err,
        }
    }
    use RejectionKind::*;
    // Real finmesh codes, except where no layer has a code of that kind:
    // those are named `example.*` so nobody takes them for real ones.
    let rows = [
        row(Unauthenticated, "auth.invalid", 401, 16, false),
        row(PermissionDenied, "rbac.denied", 403, 7, false),
        row(InvalidArgument, "tenant.malformed", 400, 3, false),
        row(Conflict, "idempotency.in_flight", 409, 10, false),
        row(Unprocessable, "idempotency.key_reused", 422, 9, false),
        row(RequestTimeout, "deadline.request_timeout", 408, 4, true),
        row(ResourceExhausted, "example.rate_limited", 429, 8, false),
        row(Unavailable, "audit.unavailable", 503, 14, true),
        row(Internal, "example.internal_error", 500, 13, true),
    ];
    for Row {
        kind,
        code,
        http: http_status,
        grpc: grpc_code,
        grpc_server_error,
    } in rows
    {
        let otel = Otel::new();
        let rejection = Rejection::new(kind, code, "refused");
        let app = support::echo_app()
            .layer(from_fn(refusing(rejection)))
            .layer(from_fn(fake_auth))
            .layer(otel.layer().build());
        let server = support::spawn(app).await;

        // HTTP: problem+json carries the span's trace id.
        let res = support::get(
            &server.url("/v1/accounts"),
            &[("authorization", "Bearer bob:low")],
        )
        .await;
        assert_eq!(res.status.as_u16(), http_status, "{code}");
        let span = otel.server_span("GET /v1/{*rest}").await;
        assert_eq!(res.json()["trace_id"], trace_id(&span), "{code}");
        assert_eq!(res.json()["code"], code);
        assert_eq!(attr(&span, "finmesh.rejection.code").as_deref(), Some(code));
        assert_eq!(
            attr(&span, "finmesh.rejection.layer").as_deref(),
            Some(code.split('.').next().unwrap())
        );
        assert_eq!(attr(&span, "error.type").as_deref(), Some(code));
        assert_eq!(
            attr(&span, "http.response.status_code"),
            Some(http_status.to_string())
        );
        assert_eq!(attr(&span, "user_risk_level").as_deref(), Some("low"));
        // Client errors leave the server span unset; 5xx are errors.
        let status_is_error = http_status >= 500;
        assert_eq!(
            matches!(span.status, Status::Error { .. }),
            status_is_error,
            "{code}: {:?}",
            span.status
        );
        assert_ne!(span.status, Status::Ok, "{code}");

        // gRPC: trailers-only answer, status code on the span.
        let mut client = support::grpc_client(server.addr).await;
        let err = client
            .unary(support::grpc_request(
                EchoRequest::default(),
                &[("authorization", "Bearer bob:low")],
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code() as i32, grpc_code, "{code}");
        let span = otel.server_span("finmesh.test.v1.Echo/Unary").await;
        assert_eq!(attr(&span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            attr(&span, "rpc.service").as_deref(),
            Some("finmesh.test.v1.Echo")
        );
        assert_eq!(attr(&span, "rpc.method").as_deref(), Some("Unary"));
        assert_eq!(
            attr(&span, "rpc.grpc.status_code"),
            Some(grpc_code.to_string()),
            "{code}"
        );
        assert_eq!(attr(&span, "finmesh.rejection.code").as_deref(), Some(code));
        assert_eq!(
            matches!(span.status, Status::Error { .. }),
            grpc_server_error,
            "{code}: {:?}",
            span.status
        );

        // The rejection counter saw both, by layer and code.
        let points = otel.points(SERVER_REJECTIONS);
        let total: f64 = points
            .iter()
            .filter(|(a, _)| a.get("finmesh.code").map(String::as_str) == Some(code))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(total, 2.0, "{code}: {points:?}");
        // A refused gRPC call was never routed: its path stays out of the
        // series set.
        assert!(
            points
                .iter()
                .filter(|(a, _)| a.contains_key("rpc.method"))
                .all(|(a, _)| a["rpc.method"] == "_OTHER"),
            "{points:?}"
        );
    }
}

/// Finding 1 of issue 14: an order id required on a route template is
/// required whatever `content-type` the client claims; a gRPC one only
/// renders the refusal the gRPC way.
#[tokio::test]
async fn a_grpc_content_type_does_not_lift_an_order_id_required_by_route_template() {
    let otel = Otel::new();
    let app = support::echo_app().layer(
        otel.layer()
            .require_order_id_on(Method::POST, "/v1/{*rest}")
            .build(),
    );
    let server = support::spawn(app).await;
    for content_type in [
        "application/json",
        "application/grpc",
        "application/grpc+proto",
    ] {
        let req = http::Request::post(server.url("/v1/transfer"))
            .header("content-type", content_type)
            .body(Full::default())
            .unwrap();
        let res = support::send(req).await;
        let code = if content_type.starts_with("application/grpc") {
            assert_eq!(res.header("grpc-status"), "3", "{content_type}: {res:?}");
            res.header(finmesh::reject::CODE_METADATA).to_owned()
        } else {
            assert_eq!(res.status, 400, "{content_type}: {res:?}");
            res.json()["code"].as_str().unwrap().to_owned()
        };
        assert_eq!(code, "telemetry.order_id_missing", "{content_type}");
    }
}

#[tokio::test]
async fn invalid_and_missing_order_ids_are_refused() {
    let otel = Otel::new();
    let app = support::echo_app().layer(
        otel.layer()
            .require_order_id_on(Method::POST, "/v1/transfer")
            .require_order_id_on_grpc("/finmesh.test.v1.Echo/Unary")
            .build(),
    );
    let server = support::spawn(app).await;
    for bad in ["has space", "é", &"x".repeat(129), ""] {
        let res = support::get(&server.url("/ok"), &[("x-order-id", bad)]).await;
        assert_eq!(res.status, 400, "{bad:?}");
        assert_eq!(res.json()["code"], "telemetry.order_id_invalid");
        assert_eq!(res.json()["trace_id"].as_str().unwrap().len(), 32);
    }
    // A bad order id in baggage is refused the same way.
    let res = support::get(&server.url("/ok"), &[("baggage", "order_id=a%20b")]).await;
    assert_eq!(res.json()["code"], "telemetry.order_id_invalid");
    let ok = "x".repeat(128);
    let res = support::get(&server.url("/ok"), &[("x-order-id", &ok)]).await;
    assert_eq!(res.status, 200);

    let post = |headers: &[(&str, &str)]| {
        let mut b = http::Request::post(server.url("/v1/transfer"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        support::send(b.body(Full::default()).unwrap())
    };
    let res = post(&[]).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["code"], "telemetry.order_id_missing");
    let span = otel
        .span("refused transfer", |s| {
            attr(s, "finmesh.rejection.code").as_deref() == Some("telemetry.order_id_missing")
        })
        .await;
    assert_eq!(res.json()["trace_id"], trace_id(&span));
    assert_eq!(post(&[("x-order-id", "ord-1")]).await.status, 200);
    assert_eq!(post(&[("baggage", "order_id=ord-2")]).await.status, 200);
    // Only POST is required.
    assert_eq!(
        support::get(&server.url("/v1/transfer"), &[]).await.status,
        200
    );

    let mut client = support::grpc_client(server.addr).await;
    let code = |status: &tonic::Status| {
        status
            .metadata()
            .get(finmesh::reject::CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    for (headers, want) in [
        (&[][..], "telemetry.order_id_missing"),
        (
            &[("x-order-id", "has space")][..],
            "telemetry.order_id_invalid",
        ),
    ] {
        let err = client
            .unary(support::grpc_request(EchoRequest::default(), headers))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{want}");
        assert_eq!(code(&err).as_deref(), Some(want));
    }
    let ok = client
        .unary(support::grpc_request(
            EchoRequest::default(),
            &[("x-order-id", "ord-3")],
        ))
        .await;
    assert!(ok.is_ok());
}

/// An `Echo` whose bidi stream answers once per message and then fails
/// with RESOURCE_EXHAUSTED in the trailers; unary fails NOT_FOUND
/// (trailers-only).
#[derive(Clone)]
struct FailingEcho;

#[tonic::async_trait]
impl support::Echo for FailingEcho {
    async fn unary(
        &self,
        _req: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, tonic::Status> {
        Err(tonic::Status::not_found("no such order"))
    }

    type BidiStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<EchoReply, tonic::Status>> + Send + 'static>,
    >;

    async fn bidi(
        &self,
        req: tonic::Request<tonic::Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<Self::BidiStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        Ok(tonic::Response::new(support::async_stream(
            move |tx| async move {
                let mut seq = 0;
                while let Some(Ok(m)) = inbound.next().await {
                    seq += 1;
                    let reply = EchoReply {
                        message: m.message,
                        seq,
                        ..Default::default()
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
                let _ = tx
                    .send(Err(tonic::Status::resource_exhausted("quota")))
                    .await;
            },
        )))
    }
}

#[tokio::test]
async fn grpc_status_is_read_from_bidi_trailers_and_trailers_only_headers() {
    let otel = Otel::new();
    let app = support::grpc_routes(FailingEcho).layer(otel.layer().build());
    let server = support::spawn(app).await;
    let mut client = support::grpc_client(server.addr).await;

    let outbound = tokio_stream::iter((0..3).map(|i| EchoRequest {
        message: format!("m{i}"),
        ..Default::default()
    }));
    let mut stream = client.bidi(outbound).await.unwrap().into_inner();
    let mut replies = 0;
    let status = loop {
        match stream.next().await {
            Some(Ok(_)) => replies += 1,
            Some(Err(status)) => break status,
            None => panic!("stream ended without the status"),
        }
    };
    assert_eq!(replies, 3);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let span = otel.server_span("finmesh.test.v1.Echo/Bidi").await;
    assert_eq!(attr(&span, "rpc.grpc.status_code").as_deref(), Some("8"));
    assert_eq!(
        attr(&span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(&span, "error.type"), None);
    assert_eq!(
        span.status,
        Status::Unset,
        "RESOURCE_EXHAUSTED is not a server error"
    );

    let err = client.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let span = otel.server_span("finmesh.test.v1.Echo/Unary").await;
    assert_eq!(attr(&span, "rpc.grpc.status_code").as_deref(), Some("5"));

    // And a stream that ends OK reports 0 from its trailers.
    otel.spans.reset();
    let ok_server = support::spawn(support::echo_app().layer(otel.layer().build())).await;
    let mut client = support::grpc_client(ok_server.addr).await;
    let outbound = tokio_stream::iter([EchoRequest::default()]);
    let mut stream = client.bidi(outbound).await.unwrap().into_inner();
    while let Some(item) = stream.next().await {
        item.unwrap();
    }
    let span = otel.server_span("finmesh.test.v1.Echo/Bidi").await;
    assert_eq!(attr(&span, "rpc.grpc.status_code").as_deref(), Some("0"));

    // Answered methods are metric series by name, with their status code.
    let points = otel.points(SERVER_DURATION);
    let series = |method: &str, code: &str| {
        points.iter().any(|(a, _)| {
            a.get("rpc.method").map(String::as_str) == Some(method)
                && a.get("rpc.grpc.status_code").map(String::as_str) == Some(code)
        })
    };
    assert!(series("/finmesh.test.v1.Echo/Bidi", "8"), "{points:?}");
    assert!(series("/finmesh.test.v1.Echo/Bidi", "0"), "{points:?}");
    assert!(series("/finmesh.test.v1.Echo/Unary", "5"), "{points:?}");
}

#[tokio::test]
async fn baggage_risk_level_never_overrides_the_verified_one() {
    let otel = Otel::new();
    let server = support::spawn(baggage_app(&otel)).await;
    let rows = [
        // (authorization, baggage risk, expected user_risk_level)
        (Some("Bearer carol:low"), "critical", Some("low")),
        (Some("Bearer carol:high"), "low", Some("high")),
        (None, "critical", None),
        (Some("Bearer carol"), "critical", None),
    ];
    for (auth, baggage_risk, expected) in rows {
        otel.spans.reset();
        let bag = format!("user_risk_level={baggage_risk}");
        let mut headers = vec![("baggage", bag.as_str())];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let res = support::get(&server.url("/bag"), &headers).await;
        assert_eq!(res.status, 200);
        let span = otel.server_span("GET /bag").await;
        assert_eq!(
            attr(&span, "user_risk_level").as_deref(),
            expected,
            "{auth:?}"
        );
        assert_eq!(
            attr(&span, "baggage.user_risk_level").as_deref(),
            Some(baggage_risk)
        );
        let points = otel.points(SERVER_DURATION);
        assert!(
            points
                .iter()
                .all(
                    |(a, _)| a.get("user_risk_level").map(String::as_str) != Some("critical")
                        || expected == Some("critical")
                ),
            "{points:?}"
        );
    }
}

#[tokio::test]
async fn metric_attributes_never_contain_order_id_trace_id_or_subject() {
    let otel = Otel::new();
    let app = axum::Router::new()
        .route(
            "/v1/transfer",
            axum::routing::post(|req: Request| async move {
                let labels = req.extensions().get::<RequestLabels>().unwrap();
                labels.set_consistency_status("committed");
                labels.set_retry_count(2);
                "done"
            }),
        )
        .route("/v1/refuse", axum::routing::post(denied))
        .layer(from_fn(fake_auth))
        .layer(otel.layer().build());
    let server = support::spawn(app).await;
    let mut trace_ids = Vec::new();
    for (i, path) in ["/v1/transfer", "/v1/refuse", "/v1/transfer"]
        .iter()
        .enumerate()
    {
        let order = format!("ord-secret-{i}");
        let res = support::send(
            http::Request::post(server.url(path))
                .header("x-order-id", &order)
                .header("authorization", "Bearer subject-dave:high")
                .header("traceparent", tp(&format!("{TRACE:.30}{i:02}"), PARENT))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert!(res.status == 200 || res.status == 403);
        trace_ids.push(format!("{TRACE:.30}{i:02}"));
    }
    otel.span("third", |s| {
        attr(s, "order_id").as_deref() == Some("ord-secret-2")
    })
    .await;
    let span = otel.server_span("POST /v1/transfer").await;
    assert_eq!(
        attr(&span, "consistency_status").as_deref(),
        Some("committed")
    );
    assert_eq!(attr(&span, "retry_count").as_deref(), Some("2"));

    let duration = otel.points(SERVER_DURATION);
    let rejections = otel.points(SERVER_REJECTIONS);
    assert!(!duration.is_empty() && !rejections.is_empty());
    let transfer = duration
        .iter()
        .find(|(a, _)| a.get("http.route").map(String::as_str) == Some("/v1/transfer"))
        .expect("transfer series");
    assert_eq!(transfer.1, 2.0);
    for (k, v) in [
        ("http.request.method", "POST"),
        ("http.response.status_class", "2xx"),
        ("tenant", "acme"),
        ("user_risk_level", "high"),
        ("consistency_status", "committed"),
    ] {
        assert_eq!(transfer.0.get(k).map(String::as_str), Some(v), "{k}");
    }
    let refused = &rejections[0].0;
    assert_eq!(
        refused.get("finmesh.layer").map(String::as_str),
        Some("rbac")
    );
    assert_eq!(
        refused.get("finmesh.code").map(String::as_str),
        Some("rbac.denied")
    );
    for (attrs, _) in duration.iter().chain(&rejections) {
        for forbidden in ["order_id", "trace_id", "enduser.id", "subject", "url.path"] {
            assert!(!attrs.contains_key(forbidden), "{forbidden} in {attrs:?}");
        }
        for value in attrs.values() {
            assert!(!value.contains("ord-secret"), "{attrs:?}");
            assert!(!value.contains("subject-dave"), "{attrs:?}");
            assert!(
                !trace_ids.iter().any(|t| value.contains(t.as_str())),
                "{attrs:?}"
            );
        }
    }
}

/// Service B's `Echo`: reports the baggage its handler sees.
#[derive(Clone)]
struct BaggageEcho;

#[tonic::async_trait]
impl support::Echo for BaggageEcho {
    async fn unary(
        &self,
        req: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, tonic::Status> {
        let bag = Context::current()
            .baggage()
            .iter()
            .map(|(k, (v, _))| format!("{k}={v}"))
            .collect::<Vec<_>>();
        let mut bag = bag;
        bag.sort();
        let subject = req
            .extensions()
            .get::<Principal>()
            .map(|p| p.subject.to_string())
            .unwrap_or_default();
        Ok(tonic::Response::new(EchoReply {
            message: bag.join(","),
            subject,
            ..Default::default()
        }))
    }

    type BidiStream = <support::EchoService as support::Echo>::BidiStream;

    async fn bidi(
        &self,
        req: tonic::Request<tonic::Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<Self::BidiStream>, tonic::Status> {
        support::Echo::bidi(&support::EchoService, req).await
    }
}

#[tokio::test]
async fn end_to_end_axum_to_tonic_continues_the_trace_with_business_labels() {
    let otel = Otel::new();
    // Service B: a plain tonic server, behind its own TelemetryLayer and
    // stand-in auth.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = listener.local_addr().unwrap();
    let b_server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(otel.layer().build())
            .layer(tower::util::MapRequestLayer::new(
                |req: http::Request<tonic::body::Body>| fake_auth_sync(req),
            ))
            .add_service(pb::echo_server::EchoServer::new(BaggageEcho))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{b_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = pb::echo_client::EchoClient::new(
        PropagateLayer::new()
            .propagator(w3c_propagator())
            .client_spans(&otel.tracer_provider)
            .layer(channel),
    );

    // Service A: axum; its handler opens its own span and calls B.
    let tracer = otel.tracer_provider.tracer("handler");
    let handler = move |req: Request| {
        let mut client = client.clone();
        let tracer = tracer.clone();
        async move {
            let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
            let span = tracer.start("transfer.handler");
            let cx = Context::current_with_span(span);
            let call = async move {
                client
                    .unary(support::grpc_request(
                        EchoRequest {
                            message: "move money".into(),
                            ..Default::default()
                        },
                        &[("authorization", &auth)],
                    ))
                    .await
            };
            let reply = opentelemetry::context::FutureExt::with_context(call, cx.clone())
                .await
                .unwrap()
                .into_inner();
            cx.span().end();
            axum::Json(serde_json::json!({ "baggage": reply.message, "subject": reply.subject }))
        }
    };
    let a = support::spawn(
        axum::Router::new()
            .route("/v1/transfer", axum::routing::post(handler))
            .layer(from_fn(fake_auth))
            .layer(otel.layer().build()),
    )
    .await;

    let res = support::send(
        http::Request::post(a.url("/v1/transfer"))
            .header("x-order-id", "ord-77")
            .header("authorization", "Bearer erin:high")
            // The caller claims a lower risk in baggage; it must not travel.
            .header("baggage", "user_risk_level=low,channel=mobile")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let seen_by_b = res.json();
    assert_eq!(
        seen_by_b["baggage"],
        "channel=mobile,order_id=ord-77,user_risk_level=high"
    );
    assert_eq!(seen_by_b["subject"], "erin");

    let a_span = otel.server_span("POST /v1/transfer").await;
    let handler_span = otel.span("handler", |s| s.name == "transfer.handler").await;
    let client_span = otel
        .span("client", |s| s.span_kind == SpanKind::Client)
        .await;
    let b_span = otel.server_span("finmesh.test.v1.Echo/Unary").await;

    // One trace, parented A-server -> handler -> client call -> B-server.
    let trace = trace_id(&a_span);
    for s in [&handler_span, &client_span, &b_span] {
        assert_eq!(trace_id(s), trace, "{}", s.name);
    }
    assert_eq!(handler_span.parent_span_id, a_span.span_context.span_id());
    assert!(!handler_span.parent_span_is_remote);
    assert_eq!(
        client_span.parent_span_id,
        handler_span.span_context.span_id()
    );
    assert_eq!(b_span.parent_span_id, client_span.span_context.span_id());
    assert!(b_span.parent_span_is_remote);

    for (k, v) in [
        ("trace_id", trace.as_str()),
        ("order_id", "ord-77"),
        ("user_risk_level", "high"),
        ("baggage.user_risk_level", "high"),
        ("rpc.grpc.status_code", "0"),
    ] {
        assert_eq!(attr(&b_span, k).as_deref(), Some(v), "B {k}");
    }
    assert_eq!(attr(&a_span, "user_risk_level").as_deref(), Some("high"));
    assert_eq!(
        attr(&a_span, "baggage.user_risk_level").as_deref(),
        Some("low")
    );
    assert_eq!(attr(&client_span, "rpc.method").as_deref(), Some("Unary"));
    b_server.abort();
}

#[tokio::test]
async fn tracecontext_service_answers_the_harness_protocol() {
    // The harness side: a callback server recording what it receives.
    type Seen = Arc<Mutex<Vec<(http::HeaderMap, serde_json::Value)>>>;
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let callback = support::spawn(axum::Router::new().route(
        "/callback",
        axum::routing::post(move |req: Request| {
            let record = record.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let json = serde_json::from_slice(&body).unwrap();
                record.lock().unwrap().push((parts.headers, json));
                "ok"
            }
        }),
    ))
    .await;

    let provider = SdkTracerProvider::builder().build();
    let service = support::spawn(tracecontext_service::app(&provider)).await;
    let cases = serde_json::json!([
        { "url": callback.url("/callback"), "arguments": [{"url": "http://x/", "arguments": []}] },
        { "url": callback.url("/callback"), "arguments": {"n": 2} },
    ]);
    let post = |traceparent: String, cases: serde_json::Value| {
        support::send(
            http::Request::post(service.url("/test"))
                .header("content-type", "application/json")
                .header("traceparent", traceparent)
                .header("tracestate", "foo=1,bar=2")
                .body(Full::new(Bytes::from(cases.to_string())))
                .unwrap(),
        )
    };
    let res = post(tp(TRACE, PARENT), cases.clone()).await;
    assert_eq!(res.status, 200);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].1, cases[0]["arguments"]);
        assert_eq!(seen[1].1, cases[1]["arguments"]);
        for (headers, _) in seen.iter() {
            let tp = headers["traceparent"].to_str().unwrap();
            let parts: Vec<_> = tp.split('-').collect();
            assert_eq!(parts.len(), 4, "{tp}");
            assert_eq!(parts[0], "00");
            assert_eq!(parts[1], TRACE, "trace continued");
            assert_ne!(parts[2], PARENT, "a new parent id");
            assert_eq!(parts[3], "01", "sampled flag kept");
            assert_eq!(headers["tracestate"], "foo=1,bar=2");
        }
    }
    seen.lock().unwrap().clear();

    // An invalid traceparent restarts the trace; tracestate is not carried.
    let res = post(format!("00-{TRACE}-{PARENT}-01-extra"), cases).await;
    assert_eq!(res.status, 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (headers, _) in seen.iter() {
        let tp = headers["traceparent"].to_str().unwrap();
        assert!(!tp.contains(TRACE), "{tp}");
        assert_eq!(tp.len(), 55);
        assert!(headers.get("tracestate").is_none_or(|v| v.is_empty()));
    }
}

#[tokio::test]
async fn the_built_tracecontext_service_serves_the_harness_on_its_addr() {
    use std::io::BufRead;
    let seen: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
    let record = seen.clone();
    let callback = support::spawn(axum::Router::new().route(
        "/callback",
        axum::routing::post(move |req: Request| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(req.headers().clone());
                "ok"
            }
        }),
    ))
    .await;
    let bin = support::example_binary("tracecontext_service");
    let bad = std::process::Command::new(&bin)
        .arg("--port")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));

    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(
        std::process::Command::new(&bin)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .next()
            .expect("a first line")
            .unwrap()
    })
    .await
    .unwrap();
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/test"),
        "{url}"
    );
    let cases = serde_json::json!([{ "url": callback.url("/callback"), "arguments": [] }]);
    let res = support::send(
        http::Request::post(url)
            .header("content-type", "application/json")
            .header("traceparent", tp(TRACE, PARENT))
            .body(Full::new(Bytes::from(cases.to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let sent = seen[0]["traceparent"].to_str().unwrap();
    assert!(sent.starts_with(&format!("00-{TRACE}-")), "{sent}");
    drop(child);
}

/// The harness side of the W3C protocol: a callback server recording the
/// headers of every call it receives, in order.
async fn harness_callback() -> (support::TestServer, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let seen: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
    let record = seen.clone();
    let callback = support::spawn(axum::Router::new().route(
        "/callback",
        axum::routing::post(move |req: Request| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(req.headers().clone());
                "ok"
            }
        }),
    ))
    .await;
    (callback, seen)
}

/// Posts `calls` callbacks to the conformance service with `headers`.
async fn ask_for_callbacks(
    service: &support::TestServer,
    callback: &support::TestServer,
    headers: &[(&str, &str)],
    calls: usize,
) {
    let cases: Vec<_> = (0..calls)
        .map(|_| serde_json::json!({ "url": callback.url("/callback"), "arguments": [] }))
        .collect();
    let mut req =
        http::Request::post(service.url("/test")).header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body = serde_json::Value::Array(cases).to_string();
    let res = support::send(req.body(Full::new(Bytes::from(body))).unwrap()).await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn tracestate_is_checked_against_the_w3c_grammar_and_carried_to_the_next_hop() {
    let (callback, seen) = harness_callback().await;
    let provider = SdkTracerProvider::builder().build();
    let service = support::spawn(tracecontext_service::app(&provider)).await;
    let traceparent = "00-12345678901234567890123456789012-1234567890123456-00";
    let key256 = format!("{}=1", "z".repeat(256));
    let key257 = format!("{}=1", "z".repeat(257));
    let vendor_14 = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    let tenant_242 = format!("{}@v=1", "t".repeat(242));
    let vendor_15 = format!("t@{}=1", "v".repeat(15));
    let members_33 = (0..33)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    let and_foo = |member: &str| Some(format!("foo=1,{member}"));
    // (tracestate headers, the tracestate sent on; `None`: discarded)
    let rows: Vec<(Vec<&str>, Option<String>)> = vec![
        (vec!["foo=1,bar=2"], Some("foo=1,bar=2".into())),
        (vec!["foo=bar=baz"], None),
        (vec!["foo=,bar=3"], None),
        (vec!["foo=1,foo=1"], Some("foo=1".into())),
        (vec!["foo=1,foo=2"], Some("foo=1".into())),
        (vec!["foo=1", "foo=1"], Some("foo=1".into())),
        (vec!["foo=1", "foo=2"], Some("foo=1".into())),
        (vec!["foo@=1,bar=2"], Some("foo@=1,bar=2".into())),
        (vec!["@foo=1,bar=2"], None),
        (vec!["foo@@bar=1,bar=2"], Some("foo@@bar=1,bar=2".into())),
        (
            vec!["foo@bar@baz=1,bar=2"],
            Some("foo@bar@baz=1,bar=2".into()),
        ),
        (vec!["foo=1", &key256], and_foo(&key256)),
        (vec!["foo=1", &key257], None),
        (vec!["foo=1", &vendor_14], and_foo(&vendor_14)),
        (vec!["foo=1", &tenant_242], and_foo(&tenant_242)),
        (vec!["foo=1", &vendor_15], and_foo(&vendor_15)),
        (vec![&members_33], None),
    ];
    for (i, (tracestate, sent_on)) in rows.iter().enumerate() {
        seen.lock().unwrap().clear();
        let mut headers = vec![("traceparent", traceparent)];
        headers.extend(tracestate.iter().map(|v| ("tracestate", *v)));
        ask_for_callbacks(&service, &callback, &headers, 1).await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "row {i}");
        let tp = seen[0]["traceparent"].to_str().unwrap();
        assert!(
            tp.starts_with("00-12345678901234567890123456789012-"),
            "row {i}: {tp}"
        );
        let got = seen[0]
            .get("tracestate")
            .map(|v| v.to_str().unwrap())
            .filter(|v| !v.is_empty());
        assert_eq!(got, sent_on.as_deref(), "row {i}: {tracestate:?}");
    }
}

#[tokio::test]
async fn each_outgoing_call_has_its_own_parent_id() {
    let (callback, seen) = harness_callback().await;
    let provider = SdkTracerProvider::builder().build();
    let service = support::spawn(tracecontext_service::app(&provider)).await;
    let valid = tp(TRACE, PARENT);
    let illegal = tp(&"0".repeat(32), PARENT);
    // (incoming traceparent, trace continued?)
    let rows: [(Option<&str>, bool); 3] =
        [(Some(&valid), true), (None, false), (Some(&illegal), false)];
    for (traceparent, continued) in rows {
        seen.lock().unwrap().clear();
        let headers: Vec<_> = traceparent
            .map(|v| ("traceparent", v))
            .into_iter()
            .collect();
        ask_for_callbacks(&service, &callback, &headers, 3).await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{traceparent:?}");
        let parsed: Vec<(String, String)> = seen
            .iter()
            .map(|h| {
                let tp = h["traceparent"].to_str().unwrap();
                let parts: Vec<_> = tp.split('-').collect();
                (parts[1].to_owned(), parts[2].to_owned())
            })
            .collect();
        let traces: std::collections::HashSet<_> = parsed.iter().map(|(t, _)| t).collect();
        let parents: std::collections::HashSet<_> = parsed.iter().map(|(_, p)| p).collect();
        assert_eq!(traces.len(), 1, "{traceparent:?}: one trace {parsed:?}");
        assert_eq!(
            parents.len(),
            3,
            "{traceparent:?}: a parent id per call {parsed:?}"
        );
        assert!(!parents.contains(&PARENT.to_owned()), "{parsed:?}");
        let trace = traces.iter().next().unwrap();
        assert_eq!(*trace == TRACE, continued, "{traceparent:?}");
        assert_ne!(trace.as_str(), "0".repeat(32));
    }
}
