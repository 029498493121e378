//! What mutual TLS costs: the handshake, reading the peer's SVID, and a
//! governed request against a bare one over the same kind of TLS
//! connection.
//!
//! - `mtls_handshake/in_memory`: one full TLS 1.3 mutual handshake
//!   (ECDSA P-256 certificates from rcgen, aws-lc-rs), client and server
//!   driven in one thread through memory buffers, through the same
//!   `ServerConfig` / `ClientConfig` that `MtlsAcceptor` and
//!   `MtlsConnector` build (file-backed resolvers and verifiers), plus
//!   `TrustDomains::identify` on the leaf. Both sides' CPU, no network.
//! - `mtls_handshake/loopback_connect_and_request`: a new TCP connection to
//!   `identity::serve` on 127.0.0.1, the handshake, one request (HTTP/2,
//!   chosen by ALPN) and its response; client and server tasks on one current-thread
//!   runtime, so all the work is counted.
//! - `svid/peer_identity_from_der`, `svid/spiffe_id_parse`: the parsers.
//! - `over_tls/bare` vs `over_tls/governed`: one GET on an open HTTP/2
//!   mTLS connection; `governed` puts health, JWT (no token: the peer's
//!   ServiceAccount), tenant and RBAC layers around the same router.
//!
//! `cargo bench --bench identity --features mtls,full -- --warm-up-time 1 --measurement-time 3`

#[path = "../examples/gateway/certs.rs"]
mod certs;

use std::hint::black_box;

use bytes::Bytes;
use certs::{DemoCa, LeafSpec};
use criterion::{Criterion, criterion_group, criterion_main};
use finmesh::identity::{MtlsAcceptor, MtlsConnector, PeerIdentity, SpiffeId, TrustDomains, serve};
use http_body_util::{BodyExt, Empty};
use rustls::{ClientConnection, ServerConnection};

const READER: &str = "spiffe://finmesh.demo/ns/tenant-a/sa/ledger-reader";

struct Setup {
    _dir: tempfile::TempDir,
    acceptor: MtlsAcceptor,
    connector: MtlsConnector,
    leaf_der: Vec<u8>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = DemoCa::new("bench CA").unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    let (cert, key) = ca
        .leaf(&LeafSpec::server(&["localhost"]))
        .unwrap()
        .write(dir.path(), "server")
        .unwrap();
    let acceptor = MtlsAcceptor::builder()
        .cert_files(cert, key)
        .client_ca_file(dir.path().join("ca.pem"))
        .trust_domain("finmesh.demo")
        .build()
        .unwrap();
    let leaf = ca.leaf(&LeafSpec::svid(READER)).unwrap();
    let (cert, key) = leaf.write(dir.path(), "client").unwrap();
    let connector = MtlsConnector::from_files(cert, key, dir.path().join("ca.pem")).unwrap();
    Setup {
        _dir: dir,
        acceptor,
        connector,
        leaf_der: leaf.der,
    }
}

fn handshake(setup: &Setup, domains: &TrustDomains) -> PeerIdentity {
    let mut client = ClientConnection::new(
        setup.connector.client_config(),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let mut server = ServerConnection::new(setup.acceptor.server_config()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets().unwrap();
        }
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            client.read_tls(&mut &buf[..]).unwrap();
            client.process_new_packets().unwrap();
        }
    }
    let leaf = &server.peer_certificates().unwrap()[0];
    domains.identify(leaf).unwrap()
}

fn bench(c: &mut Criterion) {
    let setup = setup();
    let domains = TrustDomains::new(["finmesh.demo"]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("mtls_handshake");
    group.bench_function("in_memory", |b| {
        b.iter(|| black_box(handshake(&setup, &domains)))
    });

    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/ok", axum::routing::get(|| async { "ok" }))
        .route("/v1/accounts", axum::routing::get(|| async { "[]" }));
    let _server = rt.spawn(serve(
        listener,
        setup.acceptor.clone(),
        app.clone(),
        std::future::pending(),
    ));
    let url: http::Uri = format!("https://localhost:{port}/ok").parse().unwrap();
    group.bench_function("loopback_connect_and_request", |b| {
        b.iter(|| {
            rt.block_on(async {
                // A new client: a new pool, so a new connection each time.
                let client = setup.connector.hyper_client::<Empty<Bytes>>();
                let res = client.get(url.clone()).await.unwrap();
                black_box(res.into_body().collect().await.unwrap());
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("svid");
    group.bench_function("peer_identity_from_der", |b| {
        b.iter(|| black_box(PeerIdentity::from_der(black_box(&setup.leaf_der)).unwrap()))
    });
    group.bench_function("spiffe_id_parse", |b| {
        b.iter(|| black_box(SpiffeId::parse(black_box(READER)).unwrap()))
    });
    group.finish();

    let governed = governed(app.clone());
    let mut group = c.benchmark_group("over_tls");
    for (name, port) in [
        ("bare", start(&rt, &setup, app)),
        ("governed", start(&rt, &setup, governed)),
    ] {
        let url: http::Uri = format!("https://localhost:{port}/v1/accounts")
            .parse()
            .unwrap();
        let client = setup.connector.hyper_client::<Empty<Bytes>>();
        // Open the connection once; every iteration reuses it.
        let res = rt.block_on(client.get(url.clone())).unwrap();
        assert_eq!(res.status(), 200, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let res = client.get(url.clone()).await.unwrap();
                    black_box(res.into_body().collect().await.unwrap());
                })
            })
        });
    }
    group.finish();
}

fn start<S>(rt: &tokio::runtime::Runtime, setup: &Setup, app: S) -> u16
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<axum::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(serve(
        listener,
        setup.acceptor.clone(),
        app,
        std::future::pending(),
    ));
    port
}

fn governed(app: axum::Router) -> axum::Router {
    use finmesh::auth::{Algorithm, JwtAuthLayer, JwtKey};
    use finmesh::health::{HealthLayer, HealthRegistry};
    use finmesh::rbac::{Authorizer, HttpRoutes, RbacLayer};
    use finmesh::tenant::{StaticTenants, TenantLayer};
    use finmesh::{GovernanceLayer, Tenant, TenantNamespace};

    let jwt = JwtAuthLayer::builder()
        .issuer("https://idp.bench")
        .audience("payments")
        .algorithms([Algorithm::HS256])
        .key(JwtKey::hmac(b"a bench secret of at least 32 bytes!").unwrap())
        .service_accounts_from_peer_in(["finmesh.demo"])
        .build()
        .unwrap();
    let tenants = StaticTenants::new();
    tenants.insert(Tenant::new(TenantNamespace::parse("tenant-a").unwrap()));
    let authorizer = Authorizer::from_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {namespace: tenant-a, name: reader}
rules: [{apiGroups: [""], resources: ["accounts"], verbs: ["get", "list"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {namespace: tenant-a, name: reader}
subjects: [{kind: ServiceAccount, name: ledger-reader, namespace: tenant-a}]
roleRef: {kind: Role, name: reader}
"#,
    )
    .unwrap();
    app.layer(
        GovernanceLayer::builder()
            .health(HealthLayer::new(HealthRegistry::new()))
            .jwt(jwt)
            .tenants(TenantLayer::new(tenants))
            .rbac(RbacLayer::new(
                authorizer,
                HttpRoutes::new().route("/v1/accounts", "accounts"),
            ))
            .build(),
    )
}

criterion_group!(benches, bench);
criterion_main!(benches);
