//! Tenants: the namespace every governed request names, and the layer that
//! admits only known, active tenants — the caller's own.
//!
//! [`TenantNamespace`] and [`Tenant`] are shared vocabulary, available
//! whatever features are on: the JWT layer reads a tenant claim into a
//! namespace, RBAC scopes its decision to the tenant's namespace, audit
//! records it. With the `tenant` feature this module also has the
//! isolation boundary itself: [`TenantLayer`], the [`TenantRegistry`] it
//! asks, and two registries, [`StaticTenants`] (in code, changed at run
//! time) and [`FileTenants`] (a hot-reloaded YAML or JSON file).
//!
//! # Where it sits
//!
//! Inside the JWT layer, outside RBAC: it reads the verified
//! [`Principal`](crate::Principal) the JWT layer put into the request
//! extensions (if any), and puts the admitted [`Tenant`] there for RBAC,
//! the idempotency layer and your handlers. When the telemetry or audit
//! layer put a [`RequestLabels`](crate::RequestLabels) handle into the
//! extensions, the admitted namespace is recorded there, so spans, metrics
//! and audit records carry the tenant.
//!
//! # What it checks
//!
//! 1. The namespace comes from the `x-tenant-namespace` header
//!    ([`TenantLayer::header_name`] changes it). The raw header bytes must
//!    be exactly a DNS-1123 label — no trimming, case folding or
//!    percent-decoding — and be sent once.
//! 2. Without the header, the verified principal's tenant claim is used
//!    ([`TenantLayer::principal_fallback`] turns that off). Without either,
//!    the request is refused.
//! 3. When both are there they must agree: a signed claim outranks a
//!    header. This is checked before the registry is asked, so a caller
//!    cannot probe which other tenants exist.
//! 4. The registry must know the tenant, and it must be active.
//!
//! A refusal is a response rendered by [`Rejection`](crate::Rejection):
//! problem+json for HTTP, a trailers-only `grpc-status` for gRPC.
//!
//! | case | HTTP | gRPC | code |
//! |---|---|---|---|
//! | no namespace from any source | 400 | `INVALID_ARGUMENT` | `tenant.missing` |
//! | malformed: empty, uppercase, over 63 characters, leading or trailing `-`, `_`, `.`, spaces, non-ASCII, percent-encoding, the header sent more than once | 400 | `INVALID_ARGUMENT` | `tenant.malformed` |
//! | well-formed but not in the registry | 403 (never 404) | `PERMISSION_DENIED` | `tenant.unknown` |
//! | suspended tenant — the one named, or the verified principal's own, whatever the header says | 403 | `PERMISSION_DENIED` | `tenant.suspended` |
//! | header names one tenant, the verified principal another | 403 | `PERMISSION_DENIED` | `tenant.mismatch` |
//!
//! Details name at most what the caller sent; an unknown tenant is a 403 so
//! that answers never confirm which tenants exist.
//!
//! # Cost
//!
//! Per request: the header's bytes are validated in place into an inline
//! [`TenantNamespace`], the registry is asked once (a hash probe, whatever
//! the number of tenants), and the [`Tenant`] (two reference counts, no
//! allocation) is inserted into the extensions. `BENCHMARKS.md` has the
//! numbers at 10 and at 100,000 tenants.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//!
//! use bytes::Bytes;
//! use finmesh::tenant::{StaticTenants, Tenant, TenantLayer, TenantNamespace, TenantStatus};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let ns = |s| TenantNamespace::parse(s).unwrap();
//! let tenants = Arc::new(StaticTenants::from_iter([
//!     Tenant::new(ns("tenant-a")).with_display_name("Tenant A"),
//!     Tenant::new(ns("tenant-b")).with_status(TenantStatus::Suspended),
//! ]));
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(TenantLayer::new(Arc::clone(&tenants)))
//!     .service_fn(|req: Request<Full<Bytes>>| async move {
//!         // The admitted tenant is in the extensions.
//!         let tenant = req.extensions().get::<Tenant>().unwrap();
//!         let body = format!("hello, {}", tenant.display_name.as_deref().unwrap_or("?"));
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
//!     });
//!
//! let request = |tenant: &str| {
//!     Request::builder()
//!         .header("x-tenant-namespace", tenant)
//!         .body(Full::default())
//!         .unwrap()
//! };
//!
//! let res = svc.ready().await.unwrap().call(request("tenant-a")).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hello, Tenant A");
//!
//! // Problem details with a stable code for everything else.
//! for (tenant, status, code) in [
//!     ("tenant-b", 403, "tenant.suspended"),
//!     ("tenant-z", 403, "tenant.unknown"),
//!     ("Tenant-A", 400, "tenant.malformed"),
//! ] {
//!     let res = svc.ready().await.unwrap().call(request(tenant)).await.unwrap();
//!     assert_eq!(res.status(), status);
//!     let body = res.into_body().collect().await.unwrap().to_bytes();
//!     let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
//!     assert_eq!(problem["code"], code);
//! }
//!
//! // The registry changes at run time, from any thread.
//! tenants.set_status("tenant-b", TenantStatus::Active);
//! let res = svc.oneshot(request("tenant-b")).await.unwrap();
//! assert_eq!(res.status(), 200);
//! # }
//! ```
//!
//! # Reading the tenant in handlers
//!
//! An axum handler extracts it with `axum::Extension<Tenant>`; a tonic handler
//! reads it from `request.extensions()` (tonic carries the HTTP request's
//! extensions into its `Request`):
//!
//! ```
//! use axum::Extension;
//! use finmesh::Tenant;
//!
//! // axum: put `TenantLayer` on the router (`Router::layer`).
//! async fn balance(Extension(tenant): Extension<Tenant>) -> String {
//!     format!("balances of {}", tenant.namespace)
//! }
//!
//! // tonic: inside a generated service trait's method.
//! fn tenant_of<T>(request: &tonic::Request<T>) -> Result<&Tenant, tonic::Status> {
//!     request
//!         .extensions()
//!         .get::<Tenant>()
//!         .ok_or_else(|| tonic::Status::internal("TenantLayer is not installed"))
//! }
//! # let _ = axum::Router::<()>::new().route("/balance", axum::routing::get(balance));
//! # let _ = tenant_of::<()>;
//! ```
//!
//! # Registries
//!
//! - [`StaticTenants`]: built in code; inserts, removals and suspensions
//!   at run time take effect on the next request.
//! - [`FileTenants`]: a YAML or JSON file (format in its docs; a full
//!   example is `examples/tenants.yaml`), reloaded when it changes. A new
//!   version is applied only once all of it is valid; an invalid one leaves
//!   the last good tenants in force.
//! - Your own: implement [`TenantRegistry`] — a synchronous lookup that
//!   must not do I/O. `Arc<R>` and `Box<R>` are registries too.

#[cfg(feature = "tenant")]
mod file;
#[cfg(feature = "tenant")]
mod layer;
mod model;
mod namespace;
#[cfg(feature = "tenant")]
mod registry;
#[cfg(feature = "tenant")]
mod rejection;
#[cfg(feature = "tenant")]
mod service;

#[cfg(feature = "tenant")]
pub use file::FileTenants;
#[cfg(feature = "tenant")]
pub use layer::{DEFAULT_TENANT_HEADER, SharedTenantLayer, SharedTenants, TenantLayer};
pub use model::{Tenant, TenantStatus};
pub use namespace::{InvalidNamespace, MAX_LEN as MAX_NAMESPACE_LEN, TenantNamespace};
#[cfg(feature = "tenant")]
pub use registry::{StaticTenants, TenantRegistry};
#[cfg(feature = "tenant")]
pub use rejection::{TenantCode, TenantRejection};
#[cfg(feature = "tenant")]
pub use service::TenantService;
