//! The reference gateway's application: a small ledger served over HTTP and
//! gRPC on one port, governed by the whole finmesh stack.
//!
//! Shared by `examples/reference_gateway.rs` (the binary) and
//! `tests/gateway.rs` (which starts it in-process on `127.0.0.1:0`).
// Each of the two users of this module uses a different part of it.
#![allow(dead_code)]

pub mod amount;
#[cfg(feature = "mtls")]
pub mod certs;
mod grpc;
mod http;
pub mod ledger;
pub mod observability;

/// Code generated from `examples/gateway/proto/ledger.proto` (checked in;
/// see `tests/proto_codegen.rs`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!("pb/finmesh.gateway.v1.rs");
}

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use finmesh::GovernanceLayer;
use finmesh::audit::{AuditLayer, AuditPolicy, Auditor, FileSink, FileSinkOptions};
use finmesh::auth::{Algorithm, JwtAuthLayer, JwtKey};
use finmesh::deadline::StreamDeadlineLayer;
use finmesh::health::{HealthLayer, HealthRegistry};
use finmesh::idempotency::{IdempotencyLayer, InMemoryStore};
use finmesh::ratelimit::{RateLimitLayer, RateLimits};
use finmesh::rbac::{Authorizer, GrpcMethods, HttpRoutes, RbacLayer};
use finmesh::telemetry::{TelemetryLayer, w3c_propagator};
use finmesh::tenant::{FileTenants, StaticTenants, TenantLayer, TenantRegistry};
use http_body_util::BodyExt as _;

use self::ledger::Ledger;

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The demo signing secret, used when `FINMESH_JWT_SECRET` is not set.
pub const DEMO_SECRET: &str = "finmesh-demo-secret-do-not-use-in-production";
/// The demo tokens' issuer.
pub const ISSUER: &str = "finmesh-demo";
/// The demo tokens' audience.
pub const AUDIENCE: &str = "finmesh-gateway";
/// How long a demo token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The embedded policy: the files under `examples/gateway/config/`.
pub const EMBEDDED_TENANTS: &str = include_str!("config/tenants.yaml");
/// The embedded RBAC manifests.
pub const EMBEDDED_RBAC: &str = include_str!("config/rbac.yaml");
/// The embedded rate limits.
pub const EMBEDDED_RATELIMITS: &str = include_str!("config/ratelimits.yaml");
/// The audit policy used without `--audit-policy`: None for probes and
/// metrics, RequestResponse for creating transfers, Metadata otherwise.
pub const EMBEDDED_AUDIT_POLICY: &str = include_str!("config/audit-policy.yaml");

/// The ledger's gRPC service.
pub const LEDGER_SERVICE: &str = "finmesh.gateway.v1.Ledger";
/// The gRPC methods of the ledger.
pub const GET_ACCOUNT: &str = "/finmesh.gateway.v1.Ledger/GetAccount";
/// The streaming transfer method.
pub const STREAM_TRANSFERS: &str = "/finmesh.gateway.v1.Ledger/StreamTransfers";

/// A demo identity: the token's `sub`, `tenant`, `risk_level` and `groups`.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// `sub`.
    pub name: &'static str,
    /// `tenant`.
    pub tenant: &'static str,
    /// `risk_level`.
    pub risk: &'static str,
    /// `groups`.
    pub groups: &'static [&'static str],
}

/// alice, bob, carol and dave.
pub const IDENTITIES: [Identity; 4] = [
    Identity {
        name: "alice",
        tenant: "tenant-a",
        risk: "low",
        groups: &[],
    },
    Identity {
        name: "bob",
        tenant: "tenant-b",
        risk: "medium",
        groups: &["tenant-b-viewers"],
    },
    Identity {
        name: "carol",
        tenant: "tenant-frozen",
        risk: "low",
        groups: &[],
    },
    Identity {
        name: "dave",
        tenant: "tenant-a",
        risk: "high",
        groups: &[],
    },
];

/// The demo identity named `name`.
pub fn identity(name: &str) -> Option<Identity> {
    IDENTITIES.iter().copied().find(|i| i.name == name)
}

/// Signs a demo token for `user`, valid for an hour from `now`.
pub fn mint_token(user: &str, secret: &[u8], now: SystemTime) -> Option<String> {
    let who = identity(user)?;
    let iat = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": who.name,
        "groups": who.groups,
        "tenant": who.tenant,
        "risk_level": who.risk,
        "iat": iat,
        "exp": iat + TOKEN_LIFETIME.as_secs(),
    });
    // With both crypto backends compiled in, jsonwebtoken needs one chosen.
    finmesh::auth::install_default_crypto_provider();
    let header = jsonwebtoken::Header::new(Algorithm::HS256);
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .ok()
}

/// How the gateway is configured (the command line, in the binary).
#[derive(Clone, Debug)]
pub struct Options {
    /// Load `tenants.yaml` and `rbac.yaml` from here, hot-reloaded; the
    /// embedded policy when `None`.
    pub config_dir: Option<PathBuf>,
    /// Per-message deadline on gRPC streams.
    pub message_timeout: Duration,
    /// The audit log (with `audit_postgres`: the spool).
    pub audit_log: PathBuf,
    /// The audit policy file, hot-reloaded; the embedded policy when `None`.
    pub audit_policy: Option<PathBuf>,
    /// Ship the audit chain to this PostgreSQL database (blocking mode).
    pub audit_postgres: Option<String>,
    /// The HS256 secret.
    pub jwt_secret: Vec<u8>,
    /// Keep idempotency records and rate-limit counters in this Redis
    /// (needs the `redis` feature).
    pub redis_url: Option<String>,
    /// Export traces over OTLP to this endpoint.
    pub otlp_endpoint: Option<String>,
    /// The home SPIFFE trust domain: its peers without a token are the
    /// ServiceAccounts their IDs name (`--trust-domain`).
    pub trust_domain: String,
}

/// The built gateway: its router and the handles the binary (and the
/// tests) drive it with.
pub struct Gateway {
    /// The whole application, governed; `/metrics` here is an ordinary
    /// governed path (401 without a token).
    pub app: axum::Router,
    /// `GET /metrics` in the Prometheus text format, for the separate
    /// metrics listener (`--metrics-addr`, loopback by default).
    pub metrics: axum::Router,
    /// Health: readiness fails at once on `begin_shutdown`.
    pub health: HealthRegistry,
    /// The audit writer (flush it before exiting).
    pub auditor: Auditor,
    /// Traces and metrics.
    pub observability: observability::Observability,
    /// The ledger's state.
    pub ledger: Arc<Ledger>,
    /// The rate-limit layer (its stats and key counts).
    pub rate_limits: RateLimitLayer,
}

/// Builds the gateway.
pub fn build(options: &Options) -> Result<Gateway, BoxError> {
    let observability = observability::Observability::init(options.otlp_endpoint.as_deref())?;

    let jwt = JwtAuthLayer::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .algorithms([Algorithm::HS256])
        .key(JwtKey::hmac(&options.jwt_secret)?);
    // A caller on a mutual-TLS connection with no token is the
    // ServiceAccount its SPIFFE ID names (`--client-ca`), if it is of the
    // home trust domain.
    #[cfg(feature = "mtls")]
    let jwt = jwt.service_accounts_from_peer_in([options.trust_domain.as_str()]);
    let jwt = jwt.build()?;

    let (tenants, authorizer, limits): (Arc<dyn TenantRegistry>, Authorizer, RateLimits) =
        match &options.config_dir {
            Some(dir) => (
                Arc::new(FileTenants::watch(dir.join("tenants.yaml"))?),
                Authorizer::watch(dir.join("rbac.yaml"))?,
                RateLimits::watch(dir.join("ratelimits.yaml"))?,
            ),
            None => (
                Arc::new(embedded_tenants()?),
                Authorizer::from_yaml(EMBEDDED_RBAC)?,
                RateLimits::from_yaml(EMBEDDED_RATELIMITS)?,
            ),
        };
    let mapper = (
        HttpRoutes::new()
            .route("/v1/accounts", "accounts")
            .route("/v1/accounts/{name}", "accounts")
            .route("/v1/transfer", "transfers"),
        GrpcMethods::new()
            .method(GET_ACCOUNT, "get", "accounts")
            .method(STREAM_TRANSFERS, "create", "transfers"),
    );

    let health = HealthRegistry::with_cache_interval(Duration::from_secs(1));
    // grpc.health.v1 names the Ledger: SERVING while ready, NOT_SERVING on drain.
    health.add_grpc_service::<grpc::Server>();
    let auditor = Auditor::builder()
        // Card and account numbers never reach the audit trail.
        .redact_fields(["card_number", "iban"]);
    let auditor = match &options.audit_postgres {
        None => auditor.spawn(FileSink::open_with(
            &options.audit_log,
            FileSinkOptions {
                // 64 MiB files, at most 32 kept (2 GiB); readiness fails when
                // the volume has less than 256 MiB free.
                max_rotated_files: Some(32),
                ..FileSinkOptions::default()
            },
        )?)?,
        Some(url) => postgres_auditor(auditor, url, &options.audit_log)?,
    };
    let audit_policy = match &options.audit_policy {
        Some(path) => AuditLayer::new(auditor.clone()).watched_policy(AuditPolicy::watch(path)?),
        None => AuditLayer::new(auditor.clone())
            .policy(AuditPolicy::from_yaml(EMBEDDED_AUDIT_POLICY.as_bytes())?),
    };
    {
        let auditor = auditor.clone();
        health.add_readiness_check("audit", Duration::from_secs(1), move || {
            let ready = auditor.readiness();
            async move { ready }
        })?;
    }

    let (rate_limits, idempotency) = shared_state(options, limits, &health)?;
    let rate_limits = {
        let known = tenants.clone();
        // Security: only registered tenants become metric series.
        rate_limits
            .response_headers(true)
            .metric_tenants(move |ns| known.lookup(ns).is_some())
    };

    let known = tenants.clone();
    let telemetry = TelemetryLayer::builder()
        // Security: only registered tenants become metric series.
        .metric_tenants(move |ns| known.lookup(ns).is_some())
        .tracer_provider(&observability.tracer_provider)
        .meter_provider(&observability.meter_provider)
        .propagator(w3c_propagator())
        .echo_trace_id(true)
        .require_order_id_on(::http::Method::POST, "/v1/transfer")
        .route_template(
            |_: &::http::Method, _: &::http::Uri, ext: &::http::Extensions| {
                ext.get::<axum::extract::MatchedPath>()
                    .map(|p| std::borrow::Cow::Owned(p.as_str().to_owned()))
            },
        )
        .build();

    let governance = GovernanceLayer::builder()
        // One registry answers /livez, /readyz, /healthz and grpc.health.v1.
        .health(HealthLayer::new(health.clone()))
        .telemetry(telemetry)
        .audit(audit_policy)
        // The service, not the client, says which paths are gRPC: the
        // Ledger's methods get the gRPC rules whatever content-type a
        // caller claims, and every other path the HTTP rules.
        .deadlines(
            StreamDeadlineLayer::new()
                .grpc_service(LEDGER_SERVICE)
                .request_message_timeout(options.message_timeout)
                .response_message_timeout(options.message_timeout),
        )
        .jwt(jwt)
        .tenants(TenantLayer::new(tenants))
        .rbac(RbacLayer::new(authorizer, mapper))
        .rate_limits(rate_limits.clone())
        .idempotency(idempotency.grpc_service(LEDGER_SERVICE))
        .build();

    let ledger = Arc::new(Ledger::demo());
    let app = http::routes(ledger.clone())
        .merge(grpc::routes(ledger.clone()))
        .layer(governance)
        .layer(axum::middleware::from_fn(log_request));
    // Security: metrics name tenants with their volumes and risk levels,
    // and Prometheus scrapes without a token, so they are served on their
    // own listener (loopback by default), never on the public port.
    let registry = observability.registry.clone();
    let limited = rate_limits.stats();
    let metrics = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (registry, limited) = (registry.clone(), limited.clone());
            async move { observability::render_prometheus(&registry, &limited) }
        }),
    );

    Ok(Gateway {
        app,
        metrics,
        health,
        auditor,
        observability,
        ledger,
        rate_limits,
    })
}

/// The rate-limit and idempotency layers: in memory, or in the Redis of
/// `--redis`, where every gateway on it shares them.
fn shared_state(
    options: &Options,
    limits: RateLimits,
    health: &HealthRegistry,
) -> Result<(RateLimitLayer, IdempotencyLayer), BoxError> {
    let Some(url) = &options.redis_url else {
        let _ = health;
        return Ok((
            RateLimitLayer::new(limits),
            IdempotencyLayer::new(InMemoryStore::new()),
        ));
    };
    #[cfg(feature = "redis")]
    {
        use finmesh::idempotency::RedisStore;
        use finmesh::ratelimit::RedisRateLimiter;
        // 1 s, as the idempotency store: the demo's transfer limit fails
        // closed, and a loaded machine must not turn slow answers into 503s.
        let limiter = RedisRateLimiter::open(url)?.timeout(Duration::from_secs(1));
        // Readiness stays up while Redis is down (rules follow their
        // failMode); `/readyz?verbose` shows it as a warning.
        let watch = limiter.clone();
        health.add_readiness_warning("ratelimit-redis", move || watch.health_warning())?;
        Ok((
            RateLimitLayer::new(limits).redis(limiter),
            IdempotencyLayer::new(RedisStore::open(url)?),
        ))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (limits, health);
        Err(format!("--redis {url}: this gateway was built without the `redis` feature (cargo run --features redis ...)").into())
    }
}

/// The embedded tenants, parsed with the same rules as a tenants file.
/// An auditor that spools at `spool` and ships to PostgreSQL at `url`, in
/// blocking mode, its chain named after the host (the pod name on
/// Kubernetes).
#[cfg(feature = "audit-postgres")]
fn postgres_auditor(
    builder: finmesh::audit::AuditorBuilder,
    url: &str,
    spool: &std::path::Path,
) -> Result<Auditor, BoxError> {
    use finmesh::audit::postgres::{Backpressure, PostgresOptions, PostgresSink};
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 100)
        .unwrap_or_else(|| "gateway".to_owned());
    let options = PostgresOptions::new(url, host).mode(Backpressure::Blocking);
    let sink = PostgresSink::open(spool, options)?;
    tracing::info!(chain = sink.chain_id(), "audit: shipping to PostgreSQL");
    Ok(builder.spawn(sink)?)
}

#[cfg(not(feature = "audit-postgres"))]
fn postgres_auditor(
    _builder: finmesh::audit::AuditorBuilder,
    _url: &str,
    _spool: &std::path::Path,
) -> Result<Auditor, BoxError> {
    Err("--audit-postgres needs the audit-postgres feature".into())
}

fn embedded_tenants() -> Result<StaticTenants, BoxError> {
    Ok(StaticTenants::from_yaml(EMBEDDED_TENANTS)?)
}

/// Logs each request: method, path, status, latency and trace id.
async fn log_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let trace = res
        .headers()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let grpc = res
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(|s| format!(" grpc-status={s}"))
        .unwrap_or_default();
    tracing::info!(
        target: "gateway",
        "{method} {path} {}{grpc} {:.1}ms trace_id={trace}",
        res.status().as_u16(),
        started.elapsed().as_secs_f64() * 1e3,
    );
    res
}

/// Reads a whole axum body (bounded by the idempotency layer upstream).
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<bytes::Bytes, BoxError> {
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await?
        .to_bytes();
    Ok(bytes)
}
