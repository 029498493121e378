//! W3C trace context, baggage and business labels: [`TelemetryLayer`] on
//! the server, [`PropagateLayer`] on the client.
//!
//! TODO docs
mod body;
mod extract;
mod future;
mod layer;
mod metrics;
mod propagate;
mod service;
mod span;

pub use self::body::TelemetryBody;
pub use self::future::ResponseFuture;
pub use self::layer::{
    DEFAULT_SKIP_PATHS, INSTRUMENTATION_SCOPE, ORDER_ID_HEADER, RouteTemplate, TRACE_ID_HEADER,
    TelemetryLayer, TelemetryLayerBuilder,
};
pub use self::metrics::{SERVER_DURATION, SERVER_REJECTIONS};
pub use self::propagate::{Propagate, PropagateFuture, PropagateLayer};
pub use self::service::{MAX_ORDER_ID_LEN, Telemetry};
pub use crate::labels::RequestLabels;

/// The W3C propagator: Trace Context and Baggage, composed.
pub fn w3c_propagator() -> opentelemetry::propagation::TextMapCompositePropagator {
    opentelemetry::propagation::TextMapCompositePropagator::new(vec![
        Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
        Box::new(opentelemetry_sdk::propagation::BaggagePropagator::new()),
    ])
}
