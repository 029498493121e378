//! Health probes: `/livez`, `/readyz` and `/healthz` with the Kubernetes
//! apiserver's conventions, the `grpc.health.v1` service (feature `grpc`),
//! and draining on shutdown.
//!
//! Kubernetes restarts a pod whose liveness probe fails and stops sending
//! traffic to one whose readiness probe fails. A [`HealthRegistry`] holds
//! the named checks behind both and the drain state; [`HealthLayer`] is the
//! **outermost** layer of the stack (probes need no token) and answers the
//! probe paths itself without touching the inner service.
//!
//! # The endpoints
//!
//! `GET` and `HEAD` (same status and headers, no body) on:
//!
//! | path | runs |
//! |---|---|
//! | `/livez`, `/healthz` | the liveness checks |
//! | `/readyz` | the readiness checks, including the built-in `shutdown` |
//! | `/livez/<check>`, `/healthz/<check>`, `/readyz/<check>` | that one check (unknown: 404) |
//!
//! - Healthy: `200` with body `ok`. Any check failed: `503`.
//! - `?verbose` lists each check — `[+]name ok`, `[-]name failed: reason
//!   withheld` — and ends with `livez check passed` / `readyz check failed`.
//!   A failure is always verbose.
//! - A readiness *warning* ([`HealthRegistry::add_readiness_warning`]) that
//!   is raised does not fail the probe; `?verbose` lists it as `warn: name
//!   degraded: reason withheld` (the shared rate limiter's Redis being down,
//!   for one).
//! - `?exclude=name` (repeatable) skips a check, shown as `[+]name
//!   excluded: ok`; an unknown name adds `warn: some health checks cannot be
//!   excluded: no matches for "name"` and does not fail the probe.
//! - `content-type: text/plain; charset=utf-8`, `x-content-type-options:
//!   nosniff`, `cache-control: no-store`. The reason a check failed goes to
//!   the log (`tracing`, target `finmesh::health::registry`), never to the
//!   response: the probe endpoints are unauthenticated.
//! - Other methods and paths pass through untouched. The paths are
//!   configurable ([`HealthLayer::livez_path`] and friends).
//!
//! # gRPC health (feature `grpc`)
//!
//! Every call under `/grpc.health.v1.Health/` (`Check`, `Watch`, `List`) is
//! answered by the same layer from the same registry, so one
//! `HealthLayer::new(registry)` serves the kubelet's `httpGet` and `grpc`
//! probes alike, on the port the application already listens on; the
//! `grpc` module describes the protocol. Name each tonic service the
//! server mounts with `HealthRegistry::add_grpc_service::<S>()`, so probes
//! asking for it by name get `SERVING` while ready and `NOT_SERVING` on
//! drain rather than `NOT_FOUND`. The inner service may be any
//! service taking an `http_body::Body<Data = Bytes>` request body — it
//! need not speak gRPC. `HealthLayer::serve_grpc_health(false)` passes
//! those calls through instead; `GrpcHealthService` is the service on its
//! own, for a tonic `Server` without the layer.
//!
//! Checks run concurrently, each bounded by its own timeout, so a probe
//! answers within the longest timeout even when a dependency hangs;
//! concurrent probes share one run of each check, and
//! [`HealthRegistry::with_cache_interval`] reuses results for a while.
//!
//! # Draining
//!
//! [`HealthRegistry::begin_shutdown`] makes readiness fail at once (the
//! `shutdown` check) while liveness keeps passing, and flips every gRPC
//! service to `NOT_SERVING`. [`HealthRegistry::graceful_shutdown`] wraps the
//! whole sequence in a future for the server's graceful shutdown: wait for
//! SIGTERM or Ctrl-C, begin the shutdown, wait a drain delay so load
//! balancers stop sending, resolve — then the server stops accepting and
//! finishes in-flight requests.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use finmesh::health::{HealthLayer, HealthRegistry};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = HealthRegistry::with_cache_interval(Duration::from_secs(1));
//! registry
//!     .add_readiness_check("db", Duration::from_secs(2), || async {
//!         // e.g. `SELECT 1` on the pool
//!         Ok(())
//!     })
//!     .unwrap();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(HealthLayer::new(registry.clone()))
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("app"))))
//!     });
//!
//! let probe = |uri: &'static str| Request::get(uri).body(Full::default()).unwrap();
//! let res = svc.clone().oneshot(probe("/readyz?verbose")).await.unwrap();
//! assert_eq!(res.status(), 200);
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, "[+]ping ok\n[+]db ok\n[+]shutdown ok\nreadyz check passed\n");
//!
//! registry.begin_shutdown();
//! let res = svc.clone().oneshot(probe("/readyz")).await.unwrap();
//! assert_eq!(res.status(), 503);
//! let res = svc.clone().oneshot(probe("/livez")).await.unwrap();
//! assert_eq!(res.status(), 200);
//! let res = svc.oneshot(probe("/orders")).await.unwrap();
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "app");
//! # }
//! ```
//!
//! # Graceful shutdown with axum
//!
//! In production hand [`HealthRegistry::graceful_shutdown`] (SIGTERM or
//! Ctrl-C) to `with_graceful_shutdown`; here a channel stands in for the
//! signal through [`HealthRegistry::graceful_shutdown_on`]:
//!
//! ```
//! use std::time::Duration;
//! use finmesh::health::{HealthLayer, HealthRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = HealthRegistry::new();
//! let app = axum::Router::new()
//!     .route("/orders", axum::routing::get(|| async { "orders" }))
//!     .layer(HealthLayer::new(registry.clone()));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! // Production: registry.graceful_shutdown(Duration::from_secs(5))
//! let shutdown = registry.graceful_shutdown_on(stopped, Duration::from_millis(10));
//! let server = tokio::spawn(async move {
//!     axum::serve(listener, app).with_graceful_shutdown(shutdown).await
//! });
//!
//! stop.send(()).unwrap(); // SIGTERM arrives
//! server.await.unwrap().unwrap(); // readiness failed, drained, stopped
//! assert!(registry.is_shutting_down());
//! # }
//! ```
//!
//! With tonic the same future goes to
//! `Server::builder().layer(HealthLayer::new(..)).add_service(..).serve_with_shutdown(addr, registry.graceful_shutdown(delay))`;
//! the `grpc` module (feature `grpc`) shows it with the health service.

mod body;
mod check;
mod error;
mod future;
#[cfg(feature = "grpc")]
pub mod grpc;
mod layer;
mod probe;
mod registry;
mod report;
mod service;
mod serving;
mod shutdown;

pub use body::HealthBody;
pub use error::RegisterError;
pub use future::ResponseFuture;
#[cfg(feature = "grpc")]
pub use grpc::GrpcHealthService;
pub use layer::HealthLayer;
pub use registry::{HealthRegistry, MAX_CHECK_NAME_LEN};
pub use report::{CheckReport, CheckStatus, HealthReport, PING_CHECK, ProbeKind, SHUTDOWN_CHECK};
pub use service::Health;
