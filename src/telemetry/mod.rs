//! W3C trace context, baggage and business labels: [`TelemetryLayer`] on
//! the server, [`PropagateLayer`] on the client.
//!
//! Compliance in a financial platform means every money movement can be
//! followed across services: each span carries the `trace_id`, the
//! business `order_id` and the caller's verified `user_risk_level`, and the
//! next hop receives them.
//!
//! # Where it sits
//!
//! Second from the outside, just inside the health layer (whose probe
//! paths, `/livez`, `/readyz` and `/healthz`, it does not trace by
//! default) and outside the deadline, JWT, tenant, RBAC and idempotency
//! layers. It puts a [`RequestLabels`] handle into the request extensions
//! before anything else runs; the inner layers fill it (subject and risk
//! level, tenant, authorization decision, idempotency key, rejection) and
//! handlers add `retry_count` and `consistency_status`. The layer reads it
//! when the response body ends, so every label lands on the one span the
//! layer owns, and rejections rendered by inner layers carry the trace id.
//!
//! # Server: [`TelemetryLayer`]
//!
//! - Extracts the parent context with the global text-map propagator, or
//!   the one given to the builder (usually [`w3c_propagator`]). The
//!   propagators parse; this layer only closes the gaps of the stock ones:
//!   several `baggage` (and `tracestate`) headers are combined, `=` inside
//!   a baggage value survives, baggage over 8192 bytes is dropped (the
//!   request goes on, the span gets `baggage.dropped=true`), and a
//!   `traceparent` whose ids have the wrong length, or that appears twice,
//!   starts a new trace.
//! - Opens a server span with the semantic-convention attributes
//!   (`http.request.method`, `url.path`, `http.route` when a
//!   [`RouteTemplate`] strategy knows it, `http.response.status_code`; for
//!   gRPC `rpc.system`, `rpc.service`, `rpc.method`,
//!   `rpc.grpc.status_code`). The span ends when the response *body* ends:
//!   the gRPC status is read from the trailers of a streamed body, or from
//!   the headers of a trailers-only answer. Server errors (HTTP 5xx; gRPC
//!   UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
//!   DATA_LOSS) set the span status to error; success and client errors
//!   leave it unset, as the conventions say, and refusals are named by
//!   `error.type` and `finmesh.rejection.code`.
//! - `order_id` comes from `x-order-id` (configurable) or else baggage
//!   `order_id`: 1 to 128 visible ASCII characters, anything else is
//!   refused with 400 / INVALID_ARGUMENT `telemetry.order_id_invalid`.
//!   Routes can require it ([`TelemetryLayerBuilder::require_order_id_on`],
//!   [`TelemetryLayerBuilder::require_order_id_on_grpc`]): without one,
//!   `telemetry.order_id_missing`.
//! - `user_risk_level` comes from the verified principal only (the JWT
//!   layer records it in the labels). A risk level in baggage is
//!   caller-controlled: it is recorded as `baggage.user_risk_level` and
//!   never stands in for the verified one.
//! - The inner service runs inside the extracted context with the server
//!   span current, so handler spans are its children and calls through
//!   [`PropagateLayer`] continue the trace.
//! - Optionally echoes the trace id in `x-trace-id`
//!   ([`TelemetryLayerBuilder::echo_trace_id`]).
//!
//! # Client: [`PropagateLayer`]
//!
//! Wraps any tower HTTP client (a tonic `Channel`, a hyper-util client)
//! and injects `traceparent`, `tracestate` and `baggage` from the current
//! context, with the request's `order_id` and verified `user_risk_level`
//! as baggage entries. Each call is its own client span with its own span
//! id (the next hop's W3C parent-id), from the tracer given to
//! `client_spans` or else the `TelemetryLayer` serving the request.
//!
//! # Metrics
//!
//! [`SERVER_DURATION`] (`finmesh.server.duration`, a histogram in
//! milliseconds) and [`SERVER_REJECTIONS`] (`finmesh.server.rejections`,
//! by `finmesh.layer` and `finmesh.code`). Attributes come only from
//! bounded sets: `tenant` (only tenants the tenant layer admitted; with
//! [`TelemetryLayerBuilder::metric_tenants`], only those it names, any
//! other as `_other`), `http.route` or `rpc.method` (unknown gRPC
//! methods become `_OTHER`), `http.request.method`,
//! `http.response.status_class` or `rpc.grpc.status_code`,
//! `user_risk_level` and `consistency_status`. `order_id`, `trace_id` and
//! subjects are never metric attributes.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use finmesh::RequestLabels;
//! use finmesh::telemetry::{TelemetryLayer, w3c_propagator};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let spans = InMemorySpanExporter::default();
//! let provider = SdkTracerProvider::builder()
//!     .with_simple_exporter(spans.clone())
//!     .build();
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         TelemetryLayer::builder()
//!             .tracer_provider(&provider)
//!             .propagator(w3c_propagator())
//!             .echo_trace_id(true)
//!             .build(),
//!     )
//!     .service_fn(|req: Request<Full<Bytes>>| async move {
//!         // Handlers (and inner layers) label the span through RequestLabels.
//!         let labels = req.extensions().get::<RequestLabels>().unwrap();
//!         labels.set_consistency_status("committed");
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
//!     });
//!
//! let req = Request::post("/v1/transfer")
//!     .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
//!     .header("x-order-id", "ord-42")
//!     .body(Full::default())
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.headers()["x-trace-id"], "0af7651916cd43dd8448eb211c80319c");
//! res.into_body().collect().await.unwrap(); // the span ends with the body
//!
//! let span = &spans.get_finished_spans().unwrap()[0];
//! assert_eq!(span.span_context.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
//! let attr = |k: &str| span.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string());
//! assert_eq!(attr("order_id").as_deref(), Some("ord-42"));
//! assert_eq!(attr("consistency_status").as_deref(), Some("committed"));
//! # }
//! ```
mod body;
mod codes;
mod extract;
mod future;
mod layer;
mod metrics;
mod propagate;
mod service;
mod span;

pub use self::body::TelemetryBody;
pub use self::extract::w3c_propagator;
pub use self::future::ResponseFuture;
pub use self::layer::{
    DEFAULT_SKIP_PATHS, INSTRUMENTATION_SCOPE, ORDER_ID_HEADER, RouteTemplate, TRACE_ID_HEADER,
    TelemetryLayer, TelemetryLayerBuilder,
};
pub use self::metrics::{OTHER_TENANT, SERVER_DURATION, SERVER_REJECTIONS};
pub use self::propagate::{Propagate, PropagateFuture, PropagateLayer};
pub use self::service::{MAX_ORDER_ID_LEN, Telemetry};
pub use crate::labels::RequestLabels;
pub use codes::TelemetryCode;
