//! # finmesh
//!
//! Tower layers that give any hyper, axum or tonic service the governance a
//! financial platform otherwise buys from a service-mesh sidecar — tenant
//! isolation, JWT authentication, Kubernetes-style RBAC, W3C trace context
//! with business labels, health probes, per-message gRPC stream deadlines,
//! per-tenant rate limits, idempotency keys and a tamper-evident audit
//! trail — in process, in microseconds, with one dependency line.
//!
//! Wrap your router with one [`GovernanceLayer`]: every request is then
//! answered by the health probes, traced, audited, deadline-bounded,
//! authenticated, admitted to its tenant, authorized, rate-limited and made
//! idempotent —
//! whichever of those you configure, always in that order (see
//! [`stack`]). Each layer is also usable alone with any
//! `Service<http::Request<B>>`, and every refusal is one type,
//! [`Rejection`], rendered for the protocol of the request it answers:
//! `application/problem+json` (RFC 9457) for HTTP, a trailers-only
//! `grpc-status` for gRPC.
//!
//! ## Quick start
//!
//! ```
//! # #[cfg(all(feature = "health", feature = "tenant"))]
//! # {
//! use finmesh::GovernanceLayer;
//! use finmesh::health::{HealthLayer, HealthRegistry};
//! use finmesh::tenant::{StaticTenants, TenantLayer};
//! use finmesh::{Tenant, TenantNamespace};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let tenants = StaticTenants::new();
//! tenants.insert(Tenant::new(TenantNamespace::parse("tenant-a").unwrap()));
//!
//! let app = axum::Router::new()
//!     .route("/v1/accounts", axum::routing::get(|| async { "[]" }))
//!     .layer(
//!         GovernanceLayer::builder()
//!             .health(HealthLayer::new(HealthRegistry::new()))
//!             .tenants(TenantLayer::new(tenants))
//!             .build(),
//!     );
//!
//! let get = |tenant: &str| {
//!     http::Request::get("/v1/accounts")
//!         .header("x-tenant-namespace", tenant)
//!         .body(axum::body::Body::empty())
//!         .unwrap()
//! };
//! assert_eq!(app.clone().oneshot(get("tenant-a")).await.unwrap().status(), 200);
//! let refused = app.oneshot(get("Tenant_A")).await.unwrap();
//! assert_eq!(refused.status(), 400);
//! assert_eq!(refused.headers()["content-type"], "application/problem+json");
//! # }
//! # }
//! ```
//!
//! The README has the full stack (JWT, RBAC) for axum and tonic, and the
//! reference gateway (`cargo run --example reference_gateway`) runs all of
//! it.
//!
//! ## Writing your own layer
//!
//! A layer refuses by answering, never by failing, so the inner service's
//! error type (axum's `Infallible`) passes through. The same [`Rejection`]
//! renders as problem+json or as a gRPC status depending on the caller:
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use finmesh::{Rejection, RejectionKind, ResponseBody};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new().service_fn(|req: Request<Full<Bytes>>| async move {
//!     if !req.headers().contains_key("x-tenant-namespace") {
//!         let rejection = Rejection::new(
//!             RejectionKind::InvalidArgument,
//!             "tenant.missing",
//!             "no tenant namespace",
//!         );
//!         return Ok::<_, Infallible>(rejection.respond(&req).map(ResponseBody::from));
//!     }
//!     Ok(Response::new(ResponseBody::new(Full::new(Bytes::from("hello")))))
//! });
//!
//! let res = svc.clone().oneshot(Request::new(Full::default())).await.unwrap();
//! assert_eq!(res.status(), 400);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(problem["code"], "tenant.missing");
//!
//! let grpc = Request::builder()
//!     .header("content-type", "application/grpc")
//!     .body(Full::default())
//!     .unwrap();
//! let res = svc.oneshot(grpc).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["grpc-status"], "3");
//! # }
//! ```
//!
//! ## Features
//!
//! One feature per layer — `tenant`, `auth`, `rbac`, `telemetry`, `health`,
//! `deadline`, `ratelimit`, `idempotency`, `audit` — and `grpc` (the
//! `grpc.health.v1` service), all on by default; `redis` adds the shared
//! stores (idempotency records, rate-limit counters), `full` everything.
//! `auth-rust-crypto` selects the pure-Rust JWT crypto backend instead of
//! aws-lc-rs.

#![warn(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "audit")]
pub mod audit;
#[cfg(feature = "_jwt")]
pub mod auth;
pub mod body;
pub mod codes;
#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "deadline")]
pub mod deadline;
pub mod future;
#[cfg(feature = "health")]
pub mod health;
#[cfg(feature = "idempotency")]
pub mod idempotency;
#[cfg(feature = "mtls")]
pub mod identity;
pub mod labels;
mod macros;
pub mod principal;
#[cfg(feature = "ratelimit")]
pub mod ratelimit;
#[cfg(feature = "rbac")]
pub mod rbac;
pub mod reject;
pub mod stack;
#[cfg(feature = "telemetry")]
pub mod telemetry;
pub mod tenant;

pub use body::{RejectionBody, ResponseBody};
pub use labels::RequestLabels;
pub use principal::{Principal, RiskLevel};
pub use reject::{Protocol, Rejection, RejectionKind};
pub use stack::{GovernanceBuilder, GovernanceLayer};
pub use tenant::{Tenant, TenantNamespace, TenantStatus};

// The README's Rust examples run as doctests, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
