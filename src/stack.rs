//! [`GovernanceLayer`]: the whole finmesh stack as one layer.
//!
//! Every finmesh layer works alone; `GovernanceLayer` composes any subset
//! of them in the one order that makes sense (DESIGN.md), outermost first:
//!
//! | # | layer | why here |
//! |---|---|---|
//! | 1 | health (+ gRPC health) | probes need no token and are never traced |
//! | 2 | telemetry | every governed request gets a span, rejections included |
//! | 3 | audit | one record per request, rejections included |
//! | 3a | peer check (`mtls`, always) | the connection's `identity.*` refusals, audited; labels `peer` |
//! | 4 | stream deadlines | bounds the call before anything waits on it |
//! | 5 | JWT | who is calling |
//! | 6 | tenant | which tenant, checked against the verified claim |
//! | 7 | RBAC | may they, in that tenant's namespace |
//! | 8 | rate limits | only authorized requests spend a tenant's quota |
//! | 9 | idempotency | only admitted requests reach the store |
//!
//! The layers cooperate only through the request extensions (`Principal`,
//! `Tenant`, `RequestLabels`, `Decision`, the audit handle). A layer that is
//! not configured is built in its pass-through mode, which forwards the
//! request untouched (all of them switched off add 0.5 µs, see BENCHMARKS.md):
//! the stack's type is the same whatever subset is configured
//! ([`Governance<S>`]), it names your service once, and no body is boxed.
//!
//! It works with `axum::Router::layer`, with
//! `tonic::transport::Server::builder().layer`, with tonic routes merged
//! into an axum router, and with plain hyper through
//! `hyper_util::service::TowerToHyperService`. Because some layers hand
//! the inner service a wrapped request body (idempotency replays the body
//! it buffered, stream deadlines time it), the inner service must accept
//! any `http_body::Body<Data = Bytes>` request body — as axum's and
//! tonic's routers do.
//!
//! ```
//! # #[cfg(all(feature = "health", feature = "tenant"))]
//! # {
//! use finmesh::GovernanceLayer;
//! use finmesh::health::{HealthLayer, HealthRegistry};
//! use finmesh::tenant::{StaticTenants, TenantLayer};
//! use finmesh::{Tenant, TenantNamespace};
//! use http::Request;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let tenants = StaticTenants::new();
//! tenants.insert(Tenant::new(TenantNamespace::parse("tenant-a").unwrap()));
//! let governance = GovernanceLayer::builder()
//!     .health(HealthLayer::new(HealthRegistry::new()))
//!     .tenants(TenantLayer::new(tenants))
//!     .build();
//!
//! let app = axum::Router::new()
//!     .route("/v1/accounts", axum::routing::get(|| async { "[]" }))
//!     .layer(governance);
//!
//! // Probes are answered before anything else.
//! let probe = Request::get("/readyz").body(axum::body::Body::empty()).unwrap();
//! assert_eq!(app.clone().oneshot(probe).await.unwrap().status(), 200);
//! // Every other request names a known tenant.
//! let anonymous = Request::get("/v1/accounts").body(axum::body::Body::empty()).unwrap();
//! assert_eq!(app.clone().oneshot(anonymous).await.unwrap().status(), 400);
//! let req = Request::get("/v1/accounts")
//!     .header("x-tenant-namespace", "tenant-a")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! assert_eq!(app.oneshot(req).await.unwrap().status(), 200);
//! # }
//! # }
//! ```

use tower_layer::Layer;

use absent::Absent;

mod absent {
    use tower_layer::Layer;

    /// Stands in for a layer whose cargo feature is off. It has no values,
    /// so its slot in the stack is always absent. Public in a private
    /// module: nameable by no user, yet allowed in `Governance<S>`.
    #[derive(Clone, Copy, Debug)]
    #[allow(dead_code)] // named only when some layer's feature is off
    pub enum Absent {}

    impl<S> Layer<S> for Absent {
        type Service = S;

        fn layer(&self, _inner: S) -> S {
            match *self {}
        }
    }
}

macro_rules! slot_type {
    ($alias:ident, $feature:literal, $ty:ty) => {
        #[cfg(feature = $feature)]
        type $alias = $ty;
        #[cfg(not(feature = $feature))]
        type $alias = Absent;
    };
}

slot_type!(HealthL, "health", crate::health::HealthLayer);
slot_type!(TelemetryL, "telemetry", crate::telemetry::TelemetryLayer);
slot_type!(AuditL, "audit", crate::audit::AuditLayer);
slot_type!(PeerL, "mtls", crate::identity::PeerCheckLayer);
slot_type!(DeadlineL, "deadline", crate::deadline::StreamDeadlineLayer);
slot_type!(JwtL, "_jwt", crate::auth::JwtAuthLayer);
slot_type!(TenantL, "tenant", crate::tenant::SharedTenantLayer);
slot_type!(
    RbacL,
    "rbac",
    crate::rbac::RbacLayer<crate::rbac::SharedMapper>
);
slot_type!(RateLimitL, "ratelimit", crate::ratelimit::RateLimitLayer);
slot_type!(
    IdempotencyL,
    "idempotency",
    crate::idempotency::IdempotencyLayer
);

/// A layer whose service can also be built switched off: a pass-through
/// of the very same type. A configured layer and an absent one then fill
/// their slot of [`Governance<S>`] with one type, and that type names the
/// inner service once per layer. (Choosing between `L::Service<S>` and
/// `S` at each level, as `tower::util::Either` would, names `S` twice per
/// level: 2^8 copies for eight layers, which the compiler takes minutes to
/// check and debuginfo gigabytes to describe.)
trait Slot<S>: Layer<S> {
    fn pass_through(inner: S) -> Self::Service;
}

/// `layer` around `inner` when configured, else the pass-through.
fn slot<L: Slot<S>, S>(layer: Option<&L>, inner: S) -> L::Service {
    match layer {
        Some(layer) => layer.layer(inner),
        None => L::pass_through(inner),
    }
}

impl<S> Slot<S> for Absent {
    fn pass_through(inner: S) -> S {
        inner
    }
}

macro_rules! slot_impl {
    ($feature:literal, $layer:ty) => {
        #[cfg(feature = $feature)]
        impl<S> Slot<S> for $layer {
            fn pass_through(inner: S) -> Self::Service {
                <Self::Service>::pass_through(inner)
            }
        }
    };
}

slot_impl!("health", crate::health::HealthLayer);
slot_impl!("telemetry", crate::telemetry::TelemetryLayer);
slot_impl!("audit", crate::audit::AuditLayer);
slot_impl!("mtls", crate::identity::PeerCheckLayer);
slot_impl!("deadline", crate::deadline::StreamDeadlineLayer);
slot_impl!("_jwt", crate::auth::JwtAuthLayer);
slot_impl!("tenant", crate::tenant::SharedTenantLayer);
slot_impl!("rbac", crate::rbac::RbacLayer<crate::rbac::SharedMapper>);
slot_impl!("ratelimit", crate::ratelimit::RateLimitLayer);
slot_impl!("idempotency", crate::idempotency::IdempotencyLayer);

type Svc<L, S> = <L as Layer<S>>::Service;

/// The service [`GovernanceLayer`] wraps `S` in: one type whatever subset
/// of layers is configured (an absent layer's service passes through),
/// naming `S` once.
pub type Governance<S> = Svc<
    HealthL,
    Svc<
        TelemetryL,
        Svc<
            AuditL,
            Svc<
                PeerL,
                Svc<
                    DeadlineL,
                    Svc<JwtL, Svc<TenantL, Svc<RbacL, Svc<RateLimitL, Svc<IdempotencyL, S>>>>>,
                >,
            >,
        >,
    >,
>;

/// The whole finmesh stack as one layer. Build it with
/// [`GovernanceLayer::builder`]; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct GovernanceLayer {
    health: Option<HealthL>,
    telemetry: Option<TelemetryL>,
    audit: Option<AuditL>,
    deadlines: Option<DeadlineL>,
    jwt: Option<JwtL>,
    tenants: Option<TenantL>,
    rbac: Option<RbacL>,
    ratelimit: Option<RateLimitL>,
    idempotency: Option<IdempotencyL>,
}

impl GovernanceLayer {
    /// Starts an empty stack; add the layers you want.
    pub fn builder() -> GovernanceBuilder {
        GovernanceBuilder::default()
    }
}

impl<S> Layer<S> for GovernanceLayer {
    type Service = Governance<S>;

    fn layer(&self, inner: S) -> Self::Service {
        // Innermost first.
        let s = slot(self.idempotency.as_ref(), inner);
        let s = slot(self.ratelimit.as_ref(), s);
        let s = slot(self.rbac.as_ref(), s);
        let s = slot(self.tenants.as_ref(), s);
        let s = slot(self.jwt.as_ref(), s);
        let s = slot(self.deadlines.as_ref(), s);
        // Always there with `mtls`: it only acts on what `identity::serve`
        // put into the request (its pass-through checks too).
        let s = slot(None::<&PeerL>, s);
        let s = slot(self.audit.as_ref(), s);
        let s = slot(self.telemetry.as_ref(), s);
        slot(self.health.as_ref(), s)
    }
}

/// Builder of [`GovernanceLayer`]: one method per layer. Whatever the call
/// order, the stack's order is always the one in the [module docs](self).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct GovernanceBuilder {
    layer: GovernanceLayer,
}

impl GovernanceBuilder {
    /// Answers `/livez`, `/readyz`, `/healthz` — and, with feature `grpc`,
    /// `grpc.health.v1.Health` — before anything else, so probes (kubelet
    /// `grpc` probes included) need no token.
    #[cfg(feature = "health")]
    pub fn health(mut self, layer: crate::health::HealthLayer) -> Self {
        self.layer.health = Some(layer);
        self
    }

    /// Traces every governed request and labels it.
    #[cfg(feature = "telemetry")]
    pub fn telemetry(mut self, layer: crate::telemetry::TelemetryLayer) -> Self {
        self.layer.telemetry = Some(layer);
        self
    }

    /// Writes one hash-chained audit record per governed request.
    #[cfg(feature = "audit")]
    pub fn audit(mut self, layer: crate::audit::AuditLayer) -> Self {
        self.layer.audit = Some(layer);
        self
    }

    /// Bounds gRPC streams per message, idle time and whole call.
    #[cfg(feature = "deadline")]
    pub fn deadlines(mut self, layer: crate::deadline::StreamDeadlineLayer) -> Self {
        self.layer.deadlines = Some(layer);
        self
    }

    /// Verifies the bearer JWT.
    #[cfg(feature = "_jwt")]
    pub fn jwt(mut self, layer: crate::auth::JwtAuthLayer) -> Self {
        self.layer.jwt = Some(layer);
        self
    }

    /// Admits only known, active tenants — the caller's own.
    #[cfg(feature = "tenant")]
    pub fn tenants<R: crate::tenant::TenantRegistry>(
        mut self,
        layer: crate::tenant::TenantLayer<R>,
    ) -> Self {
        self.layer.tenants = Some(layer.into_shared());
        self
    }

    /// Authorizes with Kubernetes RBAC semantics, with any
    /// [`RequestMapper`](crate::rbac::RequestMapper):
    /// [`HttpRoutes`](crate::rbac::HttpRoutes),
    /// [`GrpcMethods`](crate::rbac::GrpcMethods), a pair of them, or a
    /// closure `Fn(&Request<()>) -> Option<Action>`.
    #[cfg(feature = "rbac")]
    pub fn rbac<M: crate::rbac::RequestMapper>(mut self, layer: crate::rbac::RbacLayer<M>) -> Self {
        self.layer.rbac = Some(layer.into_shared());
        self
    }

    /// Limits each verified tenant's and subject's request rate and
    /// requests in flight.
    #[cfg(feature = "ratelimit")]
    pub fn rate_limits(mut self, layer: crate::ratelimit::RateLimitLayer) -> Self {
        self.layer.ratelimit = Some(layer);
        self
    }

    /// Makes money-moving requests idempotent.
    #[cfg(feature = "idempotency")]
    pub fn idempotency(mut self, layer: crate::idempotency::IdempotencyLayer) -> Self {
        self.layer.idempotency = Some(layer);
        self
    }

    /// The stack.
    pub fn build(self) -> GovernanceLayer {
        self.layer
    }
}
