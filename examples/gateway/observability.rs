//! Traces and metrics for the gateway: an SDK tracer provider (exporting
//! over OTLP only when an endpoint is configured) and a meter provider
//! read by `GET /metrics` in the Prometheus text format.

use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus::Encoder as _;

use super::BoxError;

/// The providers the gateway's layers report to.
#[derive(Clone, Debug)]
pub struct Observability {
    /// Spans; exported over OTLP when an endpoint is set, else only used
    /// for trace ids, labels and propagation.
    pub tracer_provider: SdkTracerProvider,
    /// Metrics, read by `/metrics`.
    pub meter_provider: SdkMeterProvider,
    /// The Prometheus registry the meter provider exports into.
    pub registry: prometheus::Registry,
}

impl Observability {
    /// Sets up the providers; with `otlp_endpoint`, spans leave over OTLP
    /// (gRPC) in batches.
    pub fn init(otlp_endpoint: Option<&str>) -> Result<Self, BoxError> {
        let registry = prometheus::Registry::new();
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()?;
        // The SDK's detectors read OTEL_SERVICE_NAME; an explicit name would
        // override it, so it is only the default.
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("finmesh-reference-gateway");
        }
        let resource = resource.build();
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(reader)
            .build();
        // The stream-deadline counter reports through the global meter.
        opentelemetry::global::set_meter_provider(meter_provider.clone());

        let mut tracer = SdkTracerProvider::builder().with_resource(resource);
        if let Some(endpoint) = otlp_endpoint {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            tracer = tracer.with_batch_exporter(exporter);
        }
        Ok(Self {
            tracer_provider: tracer.build(),
            meter_provider,
            registry,
        })
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(&self) {
        let _ = self.tracer_provider.shutdown();
        let _ = self.meter_provider.shutdown();
    }
}

/// `GET /metrics`: the Prometheus text exposition format.
pub fn render_prometheus(
    registry: &prometheus::Registry,
    rate_limits: &finmesh::ratelimit::RateLimitStats,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let encoder = prometheus::TextEncoder::new();
    let mut out = Vec::new();
    match encoder.encode(&registry.gather(), &mut out) {
        Ok(()) => {
            render_rate_limits(rate_limits, &mut out);
            (
                [(http::header::CONTENT_TYPE, encoder.format_type().to_owned())],
                out,
            )
                .into_response()
        }
        Err(e) => (http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The rate limiter's decisions per rule, tenant (registered ones only,
/// the rest `_other`) and outcome, as one Prometheus counter family.
fn render_rate_limits(stats: &finmesh::ratelimit::RateLimitStats, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let mut series = stats.series();
    if series.is_empty() {
        return;
    }
    series.sort_by(|a, b| {
        (&a.rule, &a.tenant, a.outcome.as_str()).cmp(&(&b.rule, &b.tenant, b.outcome.as_str()))
    });
    let _ = writeln!(
        out,
        "# HELP finmesh_ratelimit_decisions_total Rate-limit decisions by rule, tenant and outcome."
    );
    let _ = writeln!(out, "# TYPE finmesh_ratelimit_decisions_total counter");
    for s in series {
        // Rule names are DNS-1123 labels and tenants namespaces: nothing to escape.
        let _ = writeln!(
            out,
            "finmesh_ratelimit_decisions_total{{rule=\"{}\",tenant=\"{}\",outcome=\"{}\"}} {}",
            s.rule,
            s.tenant,
            s.outcome.as_str(),
            s.count
        );
    }
}
