//! Per-message deadlines on gRPC streams, ending late calls with
//! `DEADLINE_EXCEEDED` where the client can read it.
//!
//! tonic's own timeout covers only the response head and reports
//! `CANCELLED`; tower-http's `TimeoutBody` times HTTP frames, knows nothing
//! of gRPC messages and ends a stream with a reset that clients read as
//! `INTERNAL`. [`StreamDeadlineLayer`] follows gRPC's length-prefixed
//! framing across HTTP/2 DATA frames and bounds each direction per message:
//!
//! - **`request_message_timeout`** — after the stream opens and after each
//!   complete inbound message, the next one must arrive in time. A message
//!   split over many frames is one message (a frame that does not complete
//!   it does not restart the clock: drip-feed protection); several messages
//!   in one frame are several. The client's half-close stops this clock.
//! - **`response_message_timeout`** — after the response starts and after
//!   each complete outbound message, the service must produce the next one,
//!   or end the stream, in time.
//! - **`idle_timeout`** — no byte in either direction for this long.
//! - **`max_duration`** and the **`grpc-timeout`** header (parsed strictly,
//!   capped by `max_grpc_timeout`; a malformed value is refused with
//!   `INVALID_ARGUMENT`, code `deadline.invalid_grpc_timeout`) — the whole
//!   call.
//! - **`max_message_bytes`** — a length prefix declaring more is refused
//!   with `RESOURCE_EXHAUSTED` (`deadline.message_too_large`) before the
//!   bytes it announces are read.
//!
//! Each is off unless set, and [`StreamDeadlineLayer::method`] replaces the
//! defaults for one gRPC method (`/package.Service/Method`).
//!
//! # How a late call ends
//!
//! - **Before the response starts**: the inner future is dropped and the
//!   client gets a trailers-only `DEADLINE_EXCEEDED` (code
//!   `deadline.exceeded`).
//! - **While the response streams**: the inner body is dropped (which
//!   cancels the handler's stream) and the stream ends with trailers
//!   `grpc-status: 4` and a `grpc-message` — at a message boundary, so the
//!   client keeps every whole message sent before. If a message is
//!   half-sent the stream is reset instead: a truncated message is never
//!   delivered.
//! - **On the request side**: the handler's next read fails with a boxed
//!   [`tonic::Status`] `DEADLINE_EXCEEDED` (tonic hands it to the handler),
//!   and the client gets `DEADLINE_EXCEEDED` in trailers whatever the
//!   handler does next: both bodies share the call's state, and the
//!   response side is woken even if the handler is stuck.
//!
//! Which requests are gRPC follows from the service's configuration
//! first: a path in a gRPC service the layer knows (that of a
//! [`method`](StreamDeadlineLayer::method) override, or one declared with
//! [`grpc_service`](StreamDeadlineLayer::grpc_service)) gets the gRPC
//! deadlines whatever `content-type` the client claims; elsewhere a gRPC
//! content-type (as the gRPC spec defines it) can only add them.
//!
//! Non-gRPC requests are passed through untouched unless
//! [`apply_to_http`](StreamDeadlineLayer::apply_to_http) is set; then a
//! stalled request body is answered `408` (`deadline.request_timeout`)
//! while the response has not started, and a stalled response body is
//! aborted. Every expiry is counted in [`DeadlineStats`] by direction, kind
//! and method, and with the `telemetry` feature in the OpenTelemetry
//! counter `finmesh.stream.deadline_exceeded`.
//!
//! The timers are `tokio::time::Sleep`s inside the wrappers, created on
//! first need and moved with `Sleep::reset`: no task is spawned per call.
//! A Tokio runtime with the time driver is required.
//!
//! # Where it sits
//!
//! Third in finmesh's stack, inside `HealthLayer` and `TelemetryLayer`
//! (so expiries are labelled on the span) and outside authentication, so a
//! caller that stalls is cut off before any other work is done.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use finmesh::deadline::{DeadlineRequestBody, StreamDeadlineLayer};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = StreamDeadlineLayer::new()
//!     .request_message_timeout(Duration::from_millis(12))
//!     .response_message_timeout(Duration::from_millis(12))
//!     .max_duration(Duration::from_millis(50));
//! let stats = layer.stats();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|_req: Request<DeadlineRequestBody<Full<Bytes>>>| async {
//!         // A handler that never answers.
//!         std::future::pending::<()>().await;
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
//!     });
//!
//! let grpc = |timeout: &str| {
//!     Request::builder()
//!         .uri("/payments.v1.Clearing/Stream")
//!         .header("content-type", "application/grpc")
//!         .header("grpc-timeout", timeout)
//!         .body(Full::new(Bytes::new()))
//!         .unwrap()
//! };
//!
//! // The call runs out of time: a trailers-only DEADLINE_EXCEEDED.
//! let res = svc.clone().oneshot(grpc("20m")).await.unwrap();
//! assert_eq!(res.headers()["grpc-status"], "4");
//! assert_eq!(stats.exceeded_total(), 1);
//!
//! // A malformed grpc-timeout is refused before the handler runs.
//! let res = svc.oneshot(grpc("20 ms")).await.unwrap();
//! assert_eq!(res.headers()["grpc-status"], "3");
//! # }
//! ```

mod body;
mod codes;
mod decoder;
mod future;
mod grpc_timeout;
mod layer;
mod service;
mod state;
mod stats;
#[cfg(test)]
mod tests;

pub use body::{DeadlineRequestBody, DeadlineResponseBody};
pub use codes::DeadlineCode;
pub use decoder::{Fed, FrameEvent, GrpcFrameDecoder};
pub use future::ResponseFuture;
pub use grpc_timeout::{InvalidGrpcTimeout, parse_grpc_timeout};
pub use layer::{Deadlines, StreamDeadlineLayer};
pub use service::StreamDeadline;
pub use state::StreamDeadlineError;
pub use stats::{DeadlineStats, Direction, OTHER_METHOD, TimeoutKind};
