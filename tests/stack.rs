//! `GovernanceLayer`, the whole stack as one layer, unchanged under every
//! way a Rust service is served: `axum::Router::layer`,
//! `tonic::transport::Server::builder().layer`, tonic routes merged into an
//! axum router, and plain hyper through `TowerToHyperService`. Real servers
//! on `127.0.0.1:0`, real HTTP/1.1, h2c and tonic clients.
#![cfg(all(
    feature = "health",
    feature = "grpc",
    feature = "telemetry",
    feature = "audit",
    feature = "deadline",
    feature = "_jwt",
    feature = "tenant",
    feature = "rbac",
    feature = "idempotency"
))]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use finmesh::audit::{AuditLayer, AuditRecord, Auditor, MemorySink, Outcome, Verdict};
use finmesh::auth::{Algorithm, JwtAuthLayer, JwtKey};
use finmesh::deadline::StreamDeadlineLayer;
use finmesh::health::{HealthLayer, HealthRegistry};
use finmesh::idempotency::{IdempotencyLayer, InMemoryStore};
use finmesh::rbac::{Authorizer, GrpcMethods, HttpRoutes, RbacLayer};
use finmesh::stack::Governance;
use finmesh::telemetry::{TelemetryLayer, w3c_propagator};
use finmesh::tenant::{StaticTenants, TenantLayer};
use finmesh::{GovernanceLayer, Tenant, TenantNamespace, TenantStatus};
use http::{Method, StatusCode};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use support::*;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::Layer;

const SECRET: &[u8] = b"an HMAC secret of at least 32 bytes, for the stack tests";
const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "payments";
const UNARY: &str = "/finmesh.test.v1.Echo/Unary";
const BIDI: &str = "/finmesh.test.v1.Echo/Bidi";

/// alice administers accounts in tenant-a; `readers` read them there;
/// `auditors` read them cluster-wide (no tenant needed).
const POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {namespace: tenant-a, name: account-admin}
rules:
- apiGroups: [""]
  resources: ["accounts", "echoes"]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: account-reader}
rules:
- apiGroups: [""]
  resources: ["accounts", "echoes"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {namespace: tenant-a, name: alice-admin}
subjects: [{kind: User, name: alice}]
roleRef: {kind: Role, name: account-admin}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {namespace: tenant-a, name: readers}
subjects: [{kind: Group, name: readers}]
roleRef: {kind: ClusterRole, name: account-reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: auditors}
subjects: [{kind: Group, name: auditors}]
roleRef: {kind: ClusterRole, name: account-reader}
"#;

// ---------------------------------------------------------------------------
// Fixture: every layer configured, with handles to observe the outer ones.
// ---------------------------------------------------------------------------

fn bearer(sub: &str, groups: &[&str], tenant: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": exp,
        "groups": groups, "tenant": tenant, "risk_level": "low",
    });
    finmesh::auth::install_default_crypto_provider();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    format!("Bearer {token}")
}

fn alice() -> String {
    bearer("alice", &[], "tenant-a")
}

fn rita() -> String {
    bearer("rita", &["readers"], "tenant-a")
}

fn tenants() -> TenantLayer<StaticTenants> {
    let ns = |s| TenantNamespace::parse(s).unwrap();
    TenantLayer::new(StaticTenants::from_iter([
        Tenant::new(ns("tenant-a")),
        Tenant::new(ns("tenant-b")),
        Tenant::new(ns("tenant-frozen")).with_status(TenantStatus::Suspended),
    ]))
}

fn jwt() -> JwtAuthLayer {
    JwtAuthLayer::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .algorithms([Algorithm::HS256])
        .key(JwtKey::hmac(SECRET).unwrap())
        .build()
        .unwrap()
}

fn rbac() -> RbacLayer {
    let authorizer = Authorizer::from_yaml(POLICY).unwrap();
    let mapper = (
        HttpRoutes::new()
            .route("/v1/accounts", "accounts")
            .route("/v1/accounts/{name}", "accounts"),
        GrpcMethods::new()
            .method(UNARY, "get", "echoes")
            .method(BIDI, "create", "echoes"),
    );
    RbacLayer::new(authorizer, mapper)
}

fn idempotency() -> IdempotencyLayer {
    IdempotencyLayer::new(InMemoryStore::new()).grpc_method(UNARY)
}

struct Fixture {
    governance: GovernanceLayer,
    audit: MemorySink,
    auditor: Auditor,
    spans: InMemorySpanExporter,
    _tracer: SdkTracerProvider,
}

fn fixture() -> Fixture {
    let health = HealthRegistry::new();
    let spans = InMemorySpanExporter::default();
    let tracer = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let telemetry = TelemetryLayer::builder()
        .tracer_provider(&tracer)
        .propagator(w3c_propagator())
        .echo_trace_id(true)
        .build();
    let audit = MemorySink::new();
    let auditor = Auditor::spawn(audit.clone()).unwrap();
    let governance = GovernanceLayer::builder()
        .health(HealthLayer::new(health))
        .telemetry(telemetry)
        .audit(AuditLayer::new(auditor.clone()))
        .deadlines(
            StreamDeadlineLayer::new()
                .request_message_timeout(Duration::from_secs(30))
                .response_message_timeout(Duration::from_secs(30)),
        )
        .jwt(jwt())
        .tenants(tenants())
        .rbac(rbac())
        .idempotency(idempotency())
        .build();
    Fixture {
        governance,
        audit,
        auditor,
        spans,
        _tracer: tracer,
    }
}

impl Fixture {
    /// The audit records, once `n` have been written (records are written
    /// off the request path, when the response body ends on the server).
    async fn records(&self, n: usize) -> Vec<AuditRecord> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.auditor.flush().await.unwrap();
            let records = self.audit.records();
            if records.len() >= n || Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The rejection codes on the finished spans, once `n` spans ended.
    async fn span_codes(&self, n: usize) -> Vec<Option<String>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans.get_finished_spans().unwrap();
            if spans.len() >= n || Instant::now() > deadline {
                return spans
                    .iter()
                    .map(|s| {
                        s.attributes
                            .iter()
                            .find(|kv| kv.key.as_str() == "finmesh.rejection.code")
                            .map(|kv| kv.value.to_string())
                    })
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Every response was sent to its end, and the audit layer saw it end.
fn assert_complete(records: &[AuditRecord]) {
    let outcomes: Vec<_> = records.iter().map(|r| r.outcome).collect();
    assert!(
        outcomes.iter().all(|o| *o == Some(Outcome::Complete)),
        "{outcomes:?}"
    );
}

fn summary(records: &[AuditRecord]) -> Vec<(Option<Verdict>, Option<String>, Option<String>)> {
    records
        .iter()
        .map(|r| (r.decision, r.code.clone(), r.subject.clone()))
        .collect()
}

async fn call(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> HttpAnswer {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(body.into()).unwrap()).await
}

fn assert_problem(res: &HttpAnswer, status: StatusCode, code: &str) {
    assert_eq!(res.status, status, "{:?}", res.body);
    assert_eq!(res.header("content-type"), "application/problem+json");
    assert_eq!(res.json()["code"], code);
}

// ---------------------------------------------------------------------------
// Shared scenarios, run against each way of serving.
// ---------------------------------------------------------------------------

/// HTTP through the whole stack: allowed with Principal and Tenant, each
/// layer's refusal with its code, probes without a token, idempotent
/// replay. Returns how many governed requests it sent.
async fn http_scenario(addr: SocketAddr) -> usize {
    let url = |p: &str| format!("http://{addr}{p}");
    let (alice, rita) = (alice(), rita());

    let res = get(&url("/v1/accounts/acc-1"), &[("authorization", &alice)]).await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    let seen = res.json();
    assert_eq!(seen["subject"], "alice");
    assert_eq!(seen["tenant"], "tenant-a");
    assert_eq!(seen["risk"], "low");
    assert_eq!(
        res.header("x-trace-id").len(),
        32,
        "telemetry echoes the trace id"
    );

    // JWT: no token.
    let res = get(&url("/v1/accounts/acc-1"), &[]).await;
    assert_problem(&res, StatusCode::UNAUTHORIZED, "auth.missing");
    assert_eq!(res.header("x-trace-id").len(), 32, "rejections are traced");
    // Tenant: the header contradicts the signed claim; a suspended tenant.
    let res = get(
        &url("/v1/accounts/acc-1"),
        &[
            ("authorization", &alice),
            ("x-tenant-namespace", "tenant-b"),
        ],
    )
    .await;
    assert_problem(&res, StatusCode::FORBIDDEN, "tenant.mismatch");
    let frozen = bearer("carol", &[], "tenant-frozen");
    let res = get(&url("/v1/accounts/acc-1"), &[("authorization", &frozen)]).await;
    assert_problem(&res, StatusCode::FORBIDDEN, "tenant.suspended");
    // RBAC: a reader may not delete; an unmapped route.
    let res = call(
        Method::DELETE,
        &url("/v1/accounts/acc-1"),
        &[("authorization", &rita)],
        "",
    )
    .await;
    assert_problem(&res, StatusCode::FORBIDDEN, "rbac.denied");
    let res = get(&url("/v1/ledgers"), &[("authorization", &alice)]).await;
    assert_problem(&res, StatusCode::FORBIDDEN, "rbac.unmapped");
    // Idempotency: a POST needs a key; the retry is replayed.
    let res = call(
        Method::POST,
        &url("/v1/accounts"),
        &[("authorization", &alice)],
        "{}",
    )
    .await;
    assert_problem(&res, StatusCode::BAD_REQUEST, "idempotency.key_missing");
    let keyed = [
        ("authorization", alice.as_str()),
        ("idempotency-key", "k-1"),
    ];
    let first = call(Method::POST, &url("/v1/accounts"), &keyed, "{}").await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.header("idempotency-replayed"), "");
    let retry = call(Method::POST, &url("/v1/accounts"), &keyed, "{}").await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    assert_eq!(retry.header("idempotency-replayed"), "true");
    assert_eq!(retry.body, first.body);

    // Health: probes need no token and are not governed.
    for probe in ["/readyz", "/livez", "/healthz"] {
        let res = get(&url(probe), &[]).await;
        assert_eq!(res.status, StatusCode::OK, "{probe}: {:?}", res.body);
    }
    http_scenario_audit().len()
}

/// What the audit log must hold after [`http_scenario`], in order.
fn http_scenario_audit() -> Vec<(Option<Verdict>, Option<String>, Option<String>)> {
    let allow = |s: &str| (Some(Verdict::Allow), None, Some(s.to_owned()));
    let deny = |code: &str, s: Option<&str>| {
        (
            Some(Verdict::Deny),
            Some(code.to_owned()),
            s.map(str::to_owned),
        )
    };
    vec![
        allow("alice"),
        deny("auth.missing", None),
        deny("tenant.mismatch", Some("alice")),
        deny("tenant.suspended", Some("carol")),
        deny("rbac.denied", Some("rita")),
        deny("rbac.unmapped", Some("alice")),
        deny("idempotency.key_missing", Some("alice")),
        allow("alice"),
        allow("alice"),
    ]
}

async fn grpc_channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connect")
}

/// gRPC through the whole stack: unary (idempotent) and bidi calls allowed
/// with the principal and tenant; UNAUTHENTICATED without a token;
/// PERMISSION_DENIED for a caller without a binding; `grpc.health.v1`
/// Check SERVING without a token.
async fn grpc_scenario(addr: SocketAddr) {
    let channel = grpc_channel(addr).await;
    let mut client = EchoClient::new(channel.clone());
    let (alice, rita) = (alice(), rita());
    let msg = || EchoRequest {
        message: "hi".into(),
        ..Default::default()
    };

    let res = client
        .unary(grpc_request(
            msg(),
            &[("authorization", &rita), ("idempotency-key", "u-1")],
        ))
        .await
        .expect("allowed unary");
    assert_eq!(res.metadata().get("x-trace-id").map(|v| v.len()), Some(32));
    let reply = res.into_inner();
    assert_eq!(
        (
            reply.message.as_str(),
            reply.subject.as_str(),
            reply.tenant.as_str()
        ),
        ("hi", "rita", "tenant-a")
    );
    // The retry is the stored answer.
    let retry = client
        .unary(grpc_request(
            msg(),
            &[("authorization", &rita), ("idempotency-key", "u-1")],
        ))
        .await
        .expect("replayed unary");
    assert_eq!(
        retry
            .metadata()
            .get("idempotency-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(retry.into_inner(), reply);

    let status = client.unary(grpc_request(msg(), &[])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mallory = bearer("mallory", &[], "tenant-a");
    let status = client
        .unary(grpc_request(
            msg(),
            &[("authorization", &mallory), ("idempotency-key", "u-2")],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let status = client
        .unary(grpc_request(msg(), &[("authorization", &alice)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Bidi: alice may create echoes; readers may not.
    let outbound = tokio_stream::iter((1..=3).map(|i| EchoRequest {
        message: format!("m{i}"),
        ..Default::default()
    }));
    let mut inbound = client
        .bidi(grpc_request(outbound, &[("authorization", &alice)]))
        .await
        .expect("allowed bidi")
        .into_inner();
    let mut replies = Vec::new();
    while let Some(reply) = inbound.message().await.expect("bidi stream") {
        replies.push((reply.seq, reply.message, reply.subject, reply.tenant));
    }
    let expected: Vec<_> = (1..=3)
        .map(|i| (i, format!("m{i}"), "alice".into(), "tenant-a".into()))
        .collect();
    assert_eq!(replies, expected);
    let status = client
        .bidi(grpc_request(
            tokio_stream::iter(vec![msg()]),
            &[("authorization", &rita)],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // Health: no token.
    let mut health = HealthClient::new(channel);
    let res = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check without a token");
    assert_eq!(res.into_inner().status(), ServingStatus::Serving);
}

// ---------------------------------------------------------------------------
// 1. axum::Router::layer
// ---------------------------------------------------------------------------

#[tokio::test]
async fn axum_router_layer_governs_http_routes_end_to_end() {
    let fx = fixture();
    let srv = spawn(http_routes().layer(fx.governance.clone())).await;
    let governed = http_scenario(srv.addr).await;

    let records = fx.records(governed).await;
    assert_complete(&records);
    assert_eq!(summary(&records), http_scenario_audit());
    assert_eq!(records[0].tenant.as_deref(), Some("tenant-a"));
    assert!(records[8].replayed);
    assert_eq!(fx.audit.verify().unwrap().records, 9);

    // Every governed request has a span (probes have none), refusals
    // named by their code.
    let codes = fx.span_codes(9).await;
    assert_eq!(codes.len(), 9);
    for code in ["auth.missing", "tenant.mismatch", "rbac.denied"] {
        assert!(
            codes.iter().any(|c| c.as_deref() == Some(code)),
            "{code} not traced: {codes:?}"
        );
    }
    srv.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. tonic::transport::Server::builder().layer
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tonic_server_builder_layer_governs_unary_bidi_and_health() {
    let fx = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(fx.governance.clone())
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    grpc_scenario(addr).await;

    // unary, replay, no token, mallory, no key, bidi, denied bidi: seven
    // governed calls; the health check is not audited.
    let records = fx.records(7).await;
    assert_complete(&records);
    let codes: Vec<_> = records.iter().map(|r| r.code.as_deref()).collect();
    assert_eq!(
        codes,
        [
            None,
            None,
            Some("auth.missing"),
            Some("rbac.denied"),
            Some("idempotency.key_missing"),
            None,
            Some("rbac.denied"),
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.route.is_some() || r.method.is_some())
    );
    assert_eq!(
        records.iter().map(|r| r.grpc_status).collect::<Vec<_>>(),
        [
            Some(0),
            Some(0),
            Some(16),
            Some(7),
            Some(3),
            Some(0),
            Some(7)
        ]
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// One `.health(HealthLayer::new(reg))` is all it takes for the stack to
/// answer grpc.health.v1 (Check and List), ahead of authentication.
#[tokio::test]
async fn health_alone_answers_grpc_health_ahead_of_jwt() {
    let registry = HealthRegistry::new();
    registry.set_serving("finmesh.test.v1.Echo", true);
    let governance = GovernanceLayer::builder()
        .jwt(jwt())
        .health(HealthLayer::new(registry.clone()))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(governance)
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    let channel = grpc_channel(addr).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "finmesh.test.v1.Echo"] {
        let res = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check without a token");
        assert_eq!(
            res.into_inner().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let listed: finmesh::health::grpc::pb::HealthListResponse = grpc
        .unary(
            tonic::Request::new(finmesh::health::grpc::pb::HealthListRequest {}),
            http::uri::PathAndQuery::from_static(finmesh::health::grpc::LIST_PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect("list without a token")
        .into_inner();
    assert_eq!(listed.statuses.len(), 2);
    assert_eq!(
        listed.statuses["finmesh.test.v1.Echo"].status(),
        ServingStatus::Serving
    );
    // The application itself still needs a token.
    let status = EchoClient::new(channel)
        .unary(grpc_request(EchoRequest::default(), &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------
// 3. tonic routes merged into an axum router: both protocols, one port
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tonic_routes_merged_into_axum_are_governed_on_one_port() {
    let fx = fixture();
    let srv = spawn(echo_app().layer(fx.governance.clone())).await;
    let governed = http_scenario(srv.addr).await;
    grpc_scenario(srv.addr).await;

    let records = fx.records(governed + 7).await;
    assert_complete(&records);
    assert_eq!(records.len(), 16);
    assert_eq!(summary(&records[..9]), http_scenario_audit());
    assert!(records[..9].iter().all(|r| r.http_status.is_some()));
    assert!(records[9..].iter().all(|r| r.grpc_status.is_some()));
    assert_eq!(fx.audit.verify().unwrap().records, 16);
    srv.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. plain hyper: TowerToHyperService + hyper_util auto::Builder
// ---------------------------------------------------------------------------

#[tokio::test]
async fn plain_hyper_serves_the_governed_service_over_http1_and_h2c() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let fx = fixture();
    // Any tower service generic over the request body works as the inner
    // service; the axum router is one, and carries HTTP and gRPC routes.
    let service = fx.governance.layer(echo_app());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // The way hyper's docs serve a tower service: the concrete
            // `Governance<Router>` moved into a spawned `async` block, which
            // must therefore be `Send` (it was not while the tenant slot
            // held a bare `Arc<dyn TenantRegistry>`).
            let service = service.clone();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });

    let governed = http_scenario(addr).await;
    grpc_scenario(addr).await;
    let records = fx.records(governed + 7).await;
    assert_complete(&records);
    assert_eq!(records.len(), 16);
    assert_eq!(summary(&records[..9]), http_scenario_audit());
    acceptor.abort();
}

// ---------------------------------------------------------------------------
// Types and subsets
// ---------------------------------------------------------------------------

fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>() {}

#[test]
fn layer_and_service_are_clone_send_sync() {
    assert_clone_send_sync::<GovernanceLayer>();
    assert_clone_send_sync::<Governance<axum::Router>>();
    assert_clone_send_sync::<Governance<tonic::service::Routes>>();
    assert_clone_send_sync::<Governance<EchoServer<EchoService>>>();
}

/// The same service type whatever subset is configured: a function can
/// return either without boxing.
#[test]
fn every_subset_has_the_same_service_type() {
    fn governed(full: bool) -> Governance<axum::Router> {
        let layer = if full {
            fixture().governance
        } else {
            GovernanceLayer::builder().build()
        };
        layer.layer(http_routes())
    }
    let _both: [Governance<axum::Router>; 2] = [governed(true), governed(false)];
}

/// The stack's type names the inner service once per layer, not twice:
/// with an either-of-two slot per layer it held the inner type 2^9 times,
/// and type-checking a caller took minutes and its debuginfo gigabytes.
#[test]
fn the_stack_type_names_the_inner_service_once() {
    struct Marker;
    let name = std::any::type_name::<Governance<Marker>>();
    assert_eq!(name.matches("Marker").count(), 1, "{name}");
    assert!(name.len() < 2_000, "{} bytes: {name}", name.len());
}

/// One row of the subset table: a stack, a request, and what it answers.
struct Case {
    name: &'static str,
    layer: GovernanceLayer,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    status: StatusCode,
    expect: Expect,
}

impl Case {
    fn new(name: &'static str, layer: GovernanceLayer) -> Self {
        Self {
            name,
            layer,
            method: Method::GET,
            path: "/",
            headers: vec![],
            status: StatusCode::OK,
            expect: Expect::Seen(None, None),
        }
    }

    fn request(mut self, method: Method, path: &'static str) -> Self {
        (self.method, self.path) = (method, path);
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn answers(mut self, status: StatusCode, expect: Expect) -> Self {
        (self.status, self.expect) = (status, expect);
        self
    }
}

/// The refusal code, or the subject and tenant the handler saw.
enum Expect {
    Refused(&'static str),
    Seen(Option<&'static str>, Option<&'static str>),
}

fn subset_cases() -> Vec<Case> {
    let b = GovernanceLayer::builder;
    let auditor_token = bearer("ada", &["auditors"], "tenant-a");
    let health = || HealthLayer::new(HealthRegistry::new());
    vec![
        Case::new("nothing configured passes everything through", b().build())
            .request(Method::GET, "/v1/accounts")
            .answers(StatusCode::OK, Expect::Seen(None, None)),
        Case::new(
            "only tenants: a request naming no tenant is refused",
            b().tenants(tenants()).build(),
        )
        .request(Method::GET, "/v1/accounts")
        .answers(StatusCode::BAD_REQUEST, Expect::Refused("tenant.missing")),
        Case::new(
            "only tenants: a known tenant reaches the handler",
            b().tenants(tenants()).build(),
        )
        .request(Method::GET, "/v1/accounts")
        .header("x-tenant-namespace", "tenant-b")
        .answers(StatusCode::OK, Expect::Seen(None, Some("tenant-b"))),
        Case::new("only jwt: no token is refused", b().jwt(jwt()).build())
            .request(Method::GET, "/v1/accounts")
            .answers(StatusCode::UNAUTHORIZED, Expect::Refused("auth.missing")),
        Case::new(
            "only jwt: a valid token reaches the handler",
            b().jwt(jwt()).build(),
        )
        .request(Method::GET, "/v1/accounts")
        .header("authorization", &alice())
        .answers(StatusCode::OK, Expect::Seen(Some("alice"), None)),
        Case::new(
            "jwt+rbac: a cluster-wide binding allows without a tenant layer",
            b().jwt(jwt()).rbac(rbac()).build(),
        )
        .request(Method::GET, "/v1/accounts")
        .header("authorization", &auditor_token)
        .answers(StatusCode::OK, Expect::Seen(Some("ada"), None)),
        Case::new(
            "jwt+rbac: without a tenant, a namespaced binding does not apply",
            b().jwt(jwt()).rbac(rbac()).build(),
        )
        .request(Method::GET, "/v1/accounts")
        .header("authorization", &alice())
        .answers(StatusCode::FORBIDDEN, Expect::Refused("rbac.denied")),
        Case::new(
            "rbac before jwt in the builder: still authenticated first",
            b().rbac(rbac()).jwt(jwt()).build(),
        )
        .request(Method::GET, "/v1/accounts")
        .header("authorization", &auditor_token)
        .answers(StatusCode::OK, Expect::Seen(Some("ada"), None)),
        Case::new(
            "jwt+tenant+rbac: the tenant's binding applies",
            b().rbac(rbac()).tenants(tenants()).jwt(jwt()).build(),
        )
        .request(Method::DELETE, "/v1/accounts/acc-1")
        .header("authorization", &alice())
        .answers(
            StatusCode::OK,
            Expect::Seen(Some("alice"), Some("tenant-a")),
        ),
        Case::new(
            "only health: other requests are untouched",
            b().health(health()).build(),
        )
        .request(Method::GET, "/v1/accounts")
        .answers(StatusCode::OK, Expect::Seen(None, None)),
        Case::new(
            "health+jwt: probes need no token",
            b().jwt(jwt()).health(health()).build(),
        )
        .request(Method::GET, "/readyz")
        .answers(StatusCode::OK, Expect::Seen(None, None)),
        Case::new(
            "only idempotency: a POST without a key is refused",
            b().idempotency(idempotency()).build(),
        )
        .request(Method::POST, "/v1/accounts")
        .answers(
            StatusCode::BAD_REQUEST,
            Expect::Refused("idempotency.key_missing"),
        ),
        Case::new(
            "only deadlines: plain HTTP passes through",
            b().deadlines(StreamDeadlineLayer::new()).build(),
        )
        .request(Method::GET, "/v1/accounts")
        .answers(StatusCode::OK, Expect::Seen(None, None)),
    ]
}

#[tokio::test]
async fn any_subset_of_layers_works_over_axum() {
    for Case {
        name,
        layer,
        method,
        path,
        headers,
        status,
        expect,
    } in subset_cases()
    {
        let srv = spawn(http_routes().layer(layer)).await;
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = call(method, &srv.url(path), &headers, "").await;
        assert_eq!(res.status, status, "{name}: {:?}", res.body);
        match expect {
            Expect::Refused(code) => assert_eq!(res.json()["code"], code, "{name}"),
            // Probes answer their own body.
            Expect::Seen(..) if path == "/readyz" => {}
            Expect::Seen(subject, tenant) => {
                let seen = res.json();
                assert_eq!(seen["subject"].as_str(), subject, "{name}");
                assert_eq!(seen["tenant"].as_str(), tenant, "{name}");
            }
        }
        srv.shutdown().await;
    }
}

/// Telemetry and audit alone: every request gets a span and a record.
#[tokio::test]
async fn telemetry_and_audit_alone_trace_and_record_every_request() {
    let spans = InMemorySpanExporter::default();
    let tracer = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(sink.clone()).unwrap();
    let layer = GovernanceLayer::builder()
        .audit(AuditLayer::new(auditor.clone()))
        .telemetry(
            TelemetryLayer::builder()
                .tracer_provider(&tracer)
                .echo_trace_id(true)
                .build(),
        )
        .build();
    let fx = Fixture {
        governance: layer,
        audit: sink,
        auditor,
        spans,
        _tracer: tracer,
    };
    let srv = spawn(http_routes().layer(fx.governance.clone())).await;
    for path in ["/v1/accounts", "/ok"] {
        let res = get(&srv.url(path), &[]).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.header("x-trace-id").len(), 32);
    }
    let records = fx.records(2).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.http_status == Some(200)));
    // The audit layer sits inside telemetry: it records the span's trace id.
    assert!(records.iter().all(|r| r.trace_id.is_some()));
    assert_eq!(fx.span_codes(2).await, [None, None]);
    srv.shutdown().await;
}
