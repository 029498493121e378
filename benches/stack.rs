//! What the whole `GovernanceLayer` stack adds to a request, against the
//! bare service in the same run, and what each layer adds as the stack is
//! built up one layer at a time (in stack order, so every step is a valid,
//! allowing stack).
//!
//! - Inner service: an axum `Router` with one route.
//! - JWT: ES256 (P-256 test key from `tests/keys`), one token reused, so
//!   the verification cache answers after the first request.
//! - Telemetry: the SDK tracer provider without exporters or processors
//!   (spans are sampled and built, then dropped), the no-op meter, the W3C
//!   propagator; the request carries a `traceparent`.
//! - Audit: a sink that discards the sealed records (the writer thread
//!   still encodes and hashes each one).
//! - Tenants: a static registry; RBAC: a compiled policy; idempotency: an
//!   in-memory store (the benched `GET` is not governed by it, so it
//!   passes through).
//!
//! Each iteration is `oneshot` on a clone of the service (no network) and
//! reads the response body to its end, which is when the telemetry span
//! ends and the audit record is queued.
//!
//! The group `stack` measures wall time on the request thread only: the
//! audit writer's thread encodes and hashes each record beside it, and that
//! work is not in those figures. The group `stack_process_cpu` measures
//! the same requests in CPU time of the whole process (every thread, from
//! `CLOCK_PROCESS_CPUTIME_ID`), so it includes the audit writer; quote it
//! beside the wall-time rows. On the wire, with a real server around the
//! stack, see `benches/loadtest/run.py`.
//!
//! `cargo bench --bench stack --features full -- --warm-up-time 2 --measurement-time 5`

use std::hint::black_box;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use finmesh::GovernanceLayer;
use finmesh::audit::{AuditLayer, AuditRecord, AuditSink, Auditor, ChainHead};
use finmesh::auth::{Algorithm, JwtAuthLayer, JwtKey};
use finmesh::deadline::StreamDeadlineLayer;
use finmesh::health::{HealthLayer, HealthRegistry};
use finmesh::idempotency::{IdempotencyLayer, InMemoryStore};
use finmesh::rbac::{Authorizer, HttpRoutes, RbacLayer};
use finmesh::telemetry::{TelemetryLayer, w3c_propagator};
use finmesh::tenant::{StaticTenants, TenantLayer};
use finmesh::{Tenant, TenantNamespace};
use http::Request;
use http_body_util::BodyExt;
use opentelemetry::metrics::noop::NoopMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tower::{Layer, ServiceExt};

// Test-only keys (see tests/keys/README.md).
const EC_PRIV: &str = include_str!("../tests/keys/ec256-private.pem");
const EC_PUB: &str = include_str!("../tests/keys/ec256-public.pem");
const ISSUER: &str = "https://idp.bench";
const AUDIENCE: &str = "payments";

const POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {namespace: tenant-a, name: account-reader}
rules:
- apiGroups: [""]
  resources: ["accounts"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {namespace: tenant-a, name: alice-reader}
subjects: [{kind: User, name: alice}]
roleRef: {kind: Role, name: account-reader}
"#;

/// Seals records and throws them away.
struct Discard;

impl AuditSink for Discard {
    fn head(&self) -> Option<ChainHead> {
        None
    }
    fn append(&mut self, record: &AuditRecord, line: &[u8]) -> io::Result<()> {
        black_box((record, line));
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn token() -> String {
    finmesh::auth::install_default_crypto_provider();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "tenant": "tenant-a",
        "risk_level": "low", "groups": ["traders"], "iat": now, "exp": now + 3600,
    });
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some("es".into());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn request(authorization: &str) -> Request<Body> {
    Request::get("/v1/accounts/acc-1")
        .header("authorization", authorization)
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(Body::empty())
        .unwrap()
}

fn app() -> axum::Router {
    axum::Router::new().route(
        "/v1/accounts/{name}",
        axum::routing::get(|| async { "{\"balance\":\"10.00\"}" }),
    )
}

/// The configured layers, to add one at a time.
struct Parts {
    health: HealthLayer,
    telemetry: TelemetryLayer,
    audit: AuditLayer,
    deadlines: StreamDeadlineLayer,
    jwt: JwtAuthLayer,
    tenants: TenantLayer<StaticTenants>,
    rbac: RbacLayer<HttpRoutes>,
    idempotency: IdempotencyLayer,
    _tracer: SdkTracerProvider,
}

fn parts() -> Parts {
    let health = HealthRegistry::new();
    let tracer = SdkTracerProvider::builder().build();
    let telemetry = TelemetryLayer::builder()
        .tracer_provider(&tracer)
        .meter_provider(&NoopMeterProvider::new())
        .propagator(w3c_propagator())
        .build();
    let jwt = JwtAuthLayer::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .algorithms([Algorithm::ES256])
        .key(JwtKey::ec_pem(EC_PUB).unwrap().with_kid("es"))
        .build()
        .unwrap();
    let tenants = StaticTenants::new();
    tenants.insert(Tenant::new(TenantNamespace::parse("tenant-a").unwrap()));
    let authorizer = Authorizer::from_yaml(POLICY).unwrap();
    let mapper = HttpRoutes::new()
        .route("/v1/accounts", "accounts")
        .route("/v1/accounts/{name}", "accounts");
    Parts {
        health: HealthLayer::new(health),
        telemetry,
        audit: AuditLayer::new(Auditor::spawn(Discard).unwrap()),
        deadlines: StreamDeadlineLayer::new()
            .request_message_timeout(Duration::from_secs(30))
            .response_message_timeout(Duration::from_secs(30)),
        jwt,
        tenants: TenantLayer::new(tenants),
        rbac: RbacLayer::new(authorizer, mapper),
        idempotency: IdempotencyLayer::new(InMemoryStore::new()),
        _tracer: tracer,
    }
}

/// The stack with the first `n` layers (in stack order) configured.
fn stack(p: &Parts, n: usize) -> GovernanceLayer {
    let mut b = GovernanceLayer::builder();
    let steps: [&dyn Fn(finmesh::GovernanceBuilder) -> finmesh::GovernanceBuilder; 8] = [
        &|b| b.health(p.health.clone()),
        &|b| b.telemetry(p.telemetry.clone()),
        &|b| b.audit(p.audit.clone()),
        &|b| b.deadlines(p.deadlines.clone()),
        &|b| b.jwt(p.jwt.clone()),
        &|b| b.tenants(p.tenants.clone()),
        &|b| b.rbac(p.rbac.clone()),
        &|b| b.idempotency(p.idempotency.clone()),
    ];
    for step in &steps[..n] {
        b = step(b);
    }
    b.build()
}

const STEPS: [&str; 9] = [
    "governance: no layer",
    "+ health",
    "+ telemetry",
    "+ audit",
    "+ deadlines",
    "+ jwt (ES256, cached)",
    "+ tenants",
    "+ rbac",
    "+ idempotency = full stack",
];

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let authorization = format!("Bearer {}", token());
    let p = parts();

    macro_rules! run {
        ($group:expr, $name:expr, $svc:expr) => {{
            let svc = $svc;
            // Every configuration must allow the request, or this would
            // measure a refusal.
            let res = rt.block_on(svc.clone().oneshot(request(&authorization)));
            let res = res.unwrap();
            assert_eq!(res.status(), 200, "{}", $name);
            rt.block_on(res.into_body().collect()).unwrap();
            $group.bench_function($name, |b| {
                b.to_async(&rt).iter(|| async {
                    let res = svc.clone().oneshot(request(&authorization)).await.unwrap();
                    black_box(res.into_body().collect().await.unwrap());
                })
            });
        }};
    }

    let mut g = c.benchmark_group("stack");
    run!(g, "bare router", app());
    for (n, name) in STEPS.iter().enumerate() {
        run!(g, *name, stack(&p, n).layer(app()));
    }
    g.finish();
}

/// The same requests, measured in CPU time of the whole process: the
/// request thread and the audit writer's thread together.
fn bench_process_cpu(c: &mut Criterion<ProcessCpu>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let authorization = format!("Bearer {}", token());
    let p = parts();
    let mut g = c.benchmark_group("stack_process_cpu");
    for (name, svc) in [
        ("bare router", app()),
        ("full stack", app().layer(stack(&p, STEPS.len() - 1))),
    ] {
        let res = rt.block_on(svc.clone().oneshot(request(&authorization)));
        assert_eq!(res.unwrap().status(), 200, "{name}");
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let res = svc.clone().oneshot(request(&authorization)).await.unwrap();
                black_box(res.into_body().collect().await.unwrap());
            })
        });
    }
    g.finish();
}

/// CPU time of the whole process (all threads), in nanoseconds.
struct ProcessCpu;

fn process_cpu_ns() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
}

impl Measurement for ProcessCpu {
    type Intermediate = f64;
    type Value = f64;
    fn start(&self) -> f64 {
        process_cpu_ns()
    }
    fn end(&self, start: f64) -> f64 {
        process_cpu_ns() - start
    }
    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }
    fn zero(&self) -> f64 {
        0.0
    }
    fn to_f64(&self, v: &f64) -> f64 {
        *v
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self
    }
}

impl ValueFormatter for ProcessCpu {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns (CPU)")
        } else if typical < 1e6 {
            (1e3, "µs (CPU)")
        } else {
            (1e6, "ms (CPU)")
        };
        for v in values {
            *v /= div;
        }
        unit
    }
    fn scale_throughputs(&self, _: f64, _: &Throughput, _: &mut [f64]) -> &'static str {
        "ns (CPU)"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group!(benches, bench);
criterion_group! {
    name = process_cpu;
    config = Criterion::default().with_measurement(ProcessCpu);
    targets = bench_process_cpu
}
criterion_main!(benches, process_cpu);
