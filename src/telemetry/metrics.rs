//! The layer's instruments: request duration and rejections.
//!
//! Attributes come only from bounded sets — tenant, route template or gRPC
//! method, HTTP method, status class or gRPC code, risk level and the
//! application's `consistency_status`. `order_id`, `trace_id` and subjects
//! are per request and would explode a metric backend's series count; they
//! belong on spans, never here.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

/// The request duration histogram, in milliseconds.
pub const SERVER_DURATION: &str = "finmesh.server.duration";
/// The rejection counter, by layer and code.
pub const SERVER_REJECTIONS: &str = "finmesh.server.rejections";

/// The `tenant` attribute of a tenant that
/// [`metric_tenants`](super::TelemetryLayerBuilder::metric_tenants) does
/// not admit.
pub const OTHER_TENANT: &str = "_other";

/// Bucket boundaries in milliseconds, from sub-millisecond in-process
/// answers to slow upstream calls.
const DURATION_BUCKETS_MS: [f64; 16] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
    10000.0,
];

pub(crate) struct Instruments {
    duration: Histogram<f64>,
    rejections: Counter<u64>,
}

impl Instruments {
    pub(crate) fn new(meter: &Meter) -> Self {
        Self {
            duration: meter
                .f64_histogram(SERVER_DURATION)
                .with_unit("ms")
                .with_description("Duration of server requests, until the response body ended.")
                .with_boundaries(DURATION_BUCKETS_MS.to_vec())
                .build(),
            rejections: meter
                .u64_counter(SERVER_REJECTIONS)
                .with_unit("{rejection}")
                .with_description("Requests refused by a finmesh layer, by layer and code.")
                .build(),
        }
    }

    pub(crate) fn record_duration(&self, ms: f64, attributes: &[KeyValue]) {
        self.duration.record(ms, attributes);
    }

    pub(crate) fn count_rejection(&self, attributes: &[KeyValue]) {
        self.rejections.add(1, attributes);
    }
}
