//! Overhead of `TelemetryLayer` per request, against the bare service in
//! the same run: with OpenTelemetry's no-op tracer and meter, and with the
//! SDK's tracer (always sampled, spans dropped by a no-op processor) and
//! meter (aggregating for a periodic reader that does not fire during
//! the run).
//!
//! Each iteration sends a request carrying `traceparent`, `tracestate`,
//! `baggage` and `x-order-id` and reads the response body to its end,
//! which is when the span ends and the metrics are recorded.
//!
//! `cargo bench --bench telemetry -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use finmesh::telemetry::{TelemetryLayer, w3c_propagator};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::metrics::noop::NoopMeterProvider;
use opentelemetry::trace::noop::NoopTracerProvider;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanProcessor};
use tower::{Layer, Service, ServiceExt, service_fn};

#[derive(Debug)]
struct DropSpans;

impl SpanProcessor for DropSpans {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        black_box(span);
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(
        &self,
        _: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::post("http://bench.local/v1/transfer")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("tracestate", "vendor=opaque")
        .header("baggage", "order_id=ord-1,channel=mobile")
        .header("x-order-id", "ord-1")
        .body(Full::default())
        .unwrap()
}

async fn handler(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

async fn run<S, B>(svc: &S)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let res = svc.clone().oneshot(request()).await.unwrap();
    black_box(res.into_body().collect().await.unwrap());
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bare = service_fn(handler);
    let noop = TelemetryLayer::builder()
        .tracer_provider(&NoopTracerProvider::new())
        .meter_provider(&NoopMeterProvider::new())
        .propagator(w3c_propagator())
        .build()
        .layer(service_fn(handler));
    let tracer_provider = SdkTracerProvider::builder()
        .with_span_processor(DropSpans)
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(InMemoryMetricExporter::default()).build())
        .build();
    let sdk = TelemetryLayer::builder()
        .tracer_provider(&tracer_provider)
        .meter_provider(&meter_provider)
        .propagator(w3c_propagator())
        .build()
        .layer(service_fn(handler));

    let mut group = c.benchmark_group("telemetry");
    group.bench_function("bare", |b| b.to_async(&rt).iter(|| run(&bare)));
    group.bench_function("noop_tracer", |b| b.to_async(&rt).iter(|| run(&noop)));
    group.bench_function("sdk_tracer", |b| b.to_async(&rt).iter(|| run(&sdk)));
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
