//! Mutual TLS with SPIFFE identities, end to end: real TLS on loopback,
//! certificates made here with rcgen, rustls-based hyper-util and tonic
//! clients (and curl with a client certificate when it is installed).

#[path = "../examples/gateway/mod.rs"]
mod gateway;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use finmesh::GovernanceLayer;
use finmesh::identity::{MtlsAcceptor, MtlsConnector, PeerIdentity, serve};
use gateway::certs::{DemoCa, Leaf, LeafSpec};
use gateway::pb::ledger_client::LedgerClient;
use gateway::pb::{GetAccountRequest, TransferRequest};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use support::{EchoClient, EchoRequest, EchoService};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;

const TRUST_DOMAIN: &str = "finmesh.demo";
const READER: &str = "spiffe://finmesh.demo/ns/tenant-a/sa/ledger-reader";
const INTRUDER: &str = "spiffe://finmesh.demo/ns/tenant-b/sa/intruder";
const SECRET: &[u8] = b"an-identity-test-secret-of-32-bytes-or-more";

/// A CA, a server certificate for `localhost` signed by it, and the files.
struct Pki {
    dir: tempfile::TempDir,
    ca: DemoCa,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = DemoCa::new("test CA").unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        ca.leaf(&LeafSpec::server(&["localhost", "127.0.0.1"]))
            .unwrap()
            .write(dir.path(), "server")
            .unwrap();
        Self { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn acceptor(&self) -> MtlsAcceptor {
        MtlsAcceptor::builder()
            .cert_files(self.path("server.pem"), self.path("server.key"))
            .client_ca_file(self.path("ca.pem"))
            .trust_domain(TRUST_DOMAIN)
            .build()
            .unwrap()
    }

    /// For a GovernanceLayer-wrapped service: refusals inside the stack.
    fn governed_acceptor(&self) -> MtlsAcceptor {
        MtlsAcceptor::builder()
            .cert_files(self.path("server.pem"), self.path("server.key"))
            .client_ca_file(self.path("ca.pem"))
            .trust_domain(TRUST_DOMAIN)
            .refuse_in_stack(true)
            .build()
            .unwrap()
    }

    /// A connector presenting `leaf` (written as `<name>.pem/.key`) and
    /// trusting `ca.pem`.
    fn connector(&self, leaf: &Leaf, name: &str) -> MtlsConnector {
        let (cert, key) = leaf.write(self.dir.path(), name).unwrap();
        MtlsConnector::from_files(cert, key, self.path("ca.pem")).unwrap()
    }

    fn svid(&self, id: &str, name: &str) -> MtlsConnector {
        self.connector(&self.ca.leaf(&LeafSpec::svid(id)).unwrap(), name)
    }
}

/// A TLS server run by `finmesh::identity::serve`.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start<S, B>(acceptor: MtlsAcceptor, service: S) -> Self
    where
        S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, acceptor, service, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("graceful shutdown")
            .unwrap()
            .unwrap();
    }
}

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

type TlsClient = Client<MtlsConnector, Full<Bytes>>;

async fn request(
    client: &TlsClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, hyper_util::client::legacy::Error> {
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client.request(req.body(Full::default()).unwrap()).await?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

async fn get(client: &TlsClient, url: &str) -> Result<Answer, hyper_util::client::legacy::Error> {
    request(client, "GET", url, &[]).await
}

/// `/whoami` answers with the request's PeerIdentity (or `none`).
fn whoami_app() -> axum::Router {
    axum::Router::new().route(
        "/whoami",
        axum::routing::get(|req: axum::extract::Request| async move {
            req.extensions()
                .get::<PeerIdentity>()
                .map_or("none".to_owned(), |p| p.spiffe_id.to_string())
        }),
    )
}

#[tokio::test]
async fn a_valid_svid_reaches_the_handler_with_its_peer_identity() {
    let pki = Pki::new();
    let server = Server::start(pki.acceptor(), whoami_app()).await;
    let client = pki.svid(READER, "reader").hyper_client();
    let answer = get(&client, &server.url("/whoami")).await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, READER));
    // The same connection, a second request: the identity is per connection.
    let again = get(&client, &server.url("/whoami")).await.unwrap();
    assert_eq!(again.body, READER);
    server.shutdown().await;
}

#[tokio::test]
async fn only_named_peers_may_call_a_guarded_route() {
    use finmesh::identity::{RequirePeerLayer, SpiffeId};
    let pki = Pki::new();
    let guarded = axum::Router::new()
        .route("/transfer", axum::routing::post(|| async { "moved" }))
        .layer(RequirePeerLayer::new().route("/transfer", [SpiffeId::parse(READER).unwrap()]))
        .merge(whoami_app());
    let server = Server::start(pki.acceptor(), guarded).await;
    let reader = pki.svid(READER, "reader").hyper_client();
    let intruder = pki.svid(INTRUDER, "intruder").hyper_client();
    let url = server.url("/transfer");
    let ok = request(&reader, "POST", &url, &[]).await.unwrap();
    assert_eq!((ok.status, ok.body.as_str()), (200, "moved"));
    let denied = request(&intruder, "POST", &url, &[]).await.unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.json()["code"], "identity.peer_denied");
    // Other routes are not guarded.
    let other = get(&intruder, &server.url("/whoami")).await.unwrap();
    assert_eq!(other.body, INTRUDER);
    server.shutdown().await;
}

#[tokio::test]
async fn unacceptable_certificates_fail_as_documented() {
    let pki = Pki::new();
    let server = Server::start(pki.acceptor(), whoami_app()).await;
    let url = server.url("/whoami");

    // The chain is checked at the handshake: no request is ever read.
    let other_ca = DemoCa::new("another CA").unwrap();
    let foreign = pki.connector(&other_ca.leaf(&LeafSpec::svid(READER)).unwrap(), "foreign");
    assert!(
        get(&foreign.hyper_client(), &url).await.is_err(),
        "another CA"
    );
    let expired = LeafSpec {
        expired: true,
        ..LeafSpec::svid(READER)
    };
    let expired = pki.connector(&pki.ca.leaf(&expired).unwrap(), "expired");
    assert!(get(&expired.hyper_client(), &url).await.is_err(), "expired");

    // A chain our CA vouches for that is not an acceptable SVID: a
    // stable, documented refusal naming the field.
    let cases = [
        ("no SPIFFE ID", LeafSpec::default(), "URI SAN"),
        (
            "two URI SANs",
            LeafSpec {
                uris: vec![READER.into(), INTRUDER.into()],
                ..LeafSpec::default()
            },
            "URI SAN",
        ),
        (
            "another trust domain",
            LeafSpec::svid("spiffe://evil.example/ns/tenant-a/sa/ledger-reader"),
            "trust domain",
        ),
        (
            "a malformed SPIFFE ID",
            LeafSpec::svid("spiffe://finmesh.demo/ns//sa/x"),
            "path",
        ),
    ];
    for (i, (what, spec, field)) in cases.into_iter().enumerate() {
        let client = pki
            .connector(&pki.ca.leaf(&spec).unwrap(), &format!("bad{i}"))
            .hyper_client();
        let answer = get(&client, &url).await.expect(what);
        assert_eq!(answer.status, 401, "{what}: {}", answer.body);
        let problem = answer.json();
        assert_eq!(problem["code"], "identity.invalid", "{what}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{what}: {problem}"
        );
        // Probes too: a caller with a bad SVID is no kubelet.
        let probe = get(&client, &server.url("/livez")).await.unwrap();
        assert_eq!(probe.status, 401, "{what}");
    }
    server.shutdown().await;
}

/// A client that presents no certificate but trusts the server's CA.
fn anonymous_client(pki: &Pki) -> Client<hyper_rustls_like::Anon, Full<Bytes>> {
    hyper_rustls_like::client(&pki.path("ca.pem"))
}

/// A minimal rustls connector without a client certificate, as the
/// kubelet's prober would connect.
mod hyper_rustls_like {
    use std::future::Future;
    use std::path::Path;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http::Uri;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::{Connected, Connection};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    #[derive(Clone)]
    pub struct Anon(tokio_rustls::TlsConnector);

    pub struct Stream(TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>);

    pub fn client(ca: &Path) -> Client<Anon, Full<Bytes>> {
        Client::builder(TokioExecutor::new()).build(connector(ca))
    }

    pub fn connector(ca: &Path) -> Anon {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Anon(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    impl tower::Service<Uri> for Anon {
        type Response = Stream;
        type Error = std::io::Error;
        type Future = Pin<Box<dyn Future<Output = std::io::Result<Stream>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, uri: Uri) -> Self::Future {
            let tls = self.0.clone();
            Box::pin(async move {
                let port = uri.port_u16().unwrap();
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let name = ServerName::try_from("localhost").unwrap();
                Ok(Stream(TokioIo::new(tls.connect(name, tcp).await?)))
            })
        }
    }

    impl Connection for Stream {
        fn connected(&self) -> Connected {
            if self.0.inner().get_ref().1.alpn_protocol() == Some(b"h2") {
                Connected::new().negotiated_h2()
            } else {
                Connected::new()
            }
        }
    }

    impl hyper::rt::Read for Stream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: hyper::rt::ReadBufCursor<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl hyper::rt::Write for Stream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }
}

/// The reference gateway (the whole GovernanceLayer and the demo policy)
/// served over mutual TLS.
struct Gateway {
    server: Server,
    gateway: gateway::Gateway,
    audit_log: PathBuf,
    pki: Pki,
}

async fn start_gateway() -> Gateway {
    let pki = Pki::new();
    let audit_log = pki.path("audit.log");
    let gateway = gateway::build(&gateway::Options {
        config_dir: None,
        message_timeout: Duration::from_secs(30),
        audit_log: audit_log.clone(),
        jwt_secret: SECRET.to_vec(),
        otlp_endpoint: None,
        trust_domain: "finmesh.demo".into(),
        audit_policy: None,
        audit_postgres: None,
        redis_url: None,
    })
    .unwrap();
    let server = Server::start(pki.governed_acceptor(), gateway.app.clone()).await;
    Gateway {
        server,
        gateway,
        audit_log,
        pki,
    }
}

fn token(user: &str) -> String {
    format!(
        "Bearer {}",
        gateway::mint_token(user, SECRET, SystemTime::now()).unwrap()
    )
}

#[tokio::test]
async fn the_bound_service_account_is_allowed_and_another_identity_is_denied() {
    let gw = start_gateway().await;
    let reader = gw.pki.svid(READER, "reader").hyper_client();
    let intruder = gw.pki.svid(INTRUDER, "intruder").hyper_client();

    // No token: the peer is the ServiceAccount, bound by the demo policy.
    let list = get(&reader, &gw.server.url("/v1/accounts")).await.unwrap();
    assert_eq!(list.status, 200, "{}", list.body);
    let one = get(&reader, &gw.server.url("/v1/accounts/acc-1"))
        .await
        .unwrap();
    assert_eq!(one.status, 200, "{}", one.body);
    // Get and list only.
    let update = request(&reader, "PUT", &gw.server.url("/v1/accounts/acc-1"), &[])
        .await
        .unwrap();
    assert_eq!(
        (update.status, update.json()["code"].clone()),
        (403, "rbac.denied".into())
    );

    // Another workload, no binding: denied by RBAC.
    let denied = get(&intruder, &gw.server.url("/v1/accounts"))
        .await
        .unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.json()["code"], "rbac.denied");

    // A token outranks the peer: bob (tenant-b viewer) on the reader's
    // connection is bob, and may not list tenant-a's accounts.
    let bob = token("bob");
    let as_bob = request(
        &reader,
        "GET",
        &gw.server.url("/v1/accounts"),
        &[("authorization", &bob), ("x-tenant-namespace", "tenant-a")],
    )
    .await
    .unwrap();
    assert_eq!(as_bob.status, 403, "{}", as_bob.body);
    assert_eq!(as_bob.json()["code"], "tenant.mismatch");

    // The audit record names the subject and, beside it, the peer.
    let records = audit_records(&gw).await;
    let sa = records
        .iter()
        .find(|r| r["subject"] == "system:serviceaccount:tenant-a:ledger-reader")
        .expect("a record for the ServiceAccount");
    assert_eq!(sa["peer"], READER);
    assert_eq!(sa["tenant"], "tenant-a");
    let bob_record = records
        .iter()
        .find(|r| r["subject"] == "bob")
        .expect("a record for bob");
    assert_eq!(bob_record["peer"], READER);
    gw.server.shutdown().await;
}

async fn audit_records(gw: &Gateway) -> Vec<serde_json::Value> {
    audit_records_with(gw, |r| r["subject"] == "bob").await
}

/// The audit records, once one matches `written`.
async fn audit_records_with(
    gw: &Gateway,
    written: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        gw.gateway.auditor.flush().await.unwrap();
        let text = std::fs::read_to_string(&gw.audit_log).unwrap_or_default();
        let records: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if records.iter().any(&written) {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the audit records were not written");
}

#[tokio::test]
async fn probes_answer_without_a_client_certificate_and_governed_requests_do_not() {
    let gw = start_gateway().await;
    let kubelet = anonymous_client(&gw.pki);
    for probe in ["/livez", "/readyz", "/healthz", "/readyz/audit"] {
        let answer = get_anon(&kubelet, &gw.server.url(probe)).await;
        assert_eq!(answer.status, 200, "{probe}: {}", answer.body);
    }
    // Refused at the connection (not `refuse_in_stack`): the probe paths
    // are exempt, with one plain segment below them, and nothing that
    // could name another route once normalized.
    let at_connection = Server::start(gw.pki.acceptor(), gw.gateway.app.clone()).await;
    for probe in [
        "/livez",
        "/readyz",
        "/healthz",
        "/readyz/audit",
        "/livez/ping",
    ] {
        let answer = get_anon(&kubelet, &at_connection.url(probe)).await;
        assert_eq!(answer.status, 200, "{probe}: {}", answer.body);
    }
    for hostile in [
        "/readyz/../v1/accounts",
        "//readyz",
        "/readyz%2F..",
        "/readyz/%2e%2e",
        "/readyz//audit",
        "/readyz/audit/x",
        "/readyzz",
    ] {
        let answer = get_anon(&kubelet, &at_connection.url(hostile)).await;
        assert_eq!(answer.status, 401, "{hostile}: {}", answer.body);
        assert_eq!(answer.json()["code"], "identity.missing", "{hostile}");
    }
    at_connection.shutdown().await;
    // A bearer token does not stand in for the required certificate.
    let alice = token("alice");
    let mut req = http::Request::get(gw.server.url("/v1/accounts"))
        .header("authorization", &alice)
        .body(Full::default())
        .unwrap();
    req.headers_mut()
        .insert("x-tenant-namespace", "tenant-a".parse().unwrap());
    let res = kubelet.request(req).await.unwrap();
    assert_eq!(res.status(), 401);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "identity.missing");
    // Refused inside the stack: traced and audited like any rejection.
    assert!(problem["trace_id"].is_string(), "{problem}");
    let records = audit_records_with(&gw, |r| r["code"] == "identity.missing").await;
    let record = records
        .iter()
        .find(|r| r["code"] == "identity.missing")
        .unwrap();
    assert_eq!(record["http_status"], 401);

    // The gRPC health service answers too.
    let channel = Endpoint::from_shared(gw.server.url(""))
        .unwrap()
        .connect_with_connector_lazy(hyper_rustls_like::connector(&gw.pki.path("ca.pem")));
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("grpc.health.v1 without a client certificate")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    gw.server.shutdown().await;
}

#[tokio::test]
async fn a_token_that_fails_over_mtls_is_audited_with_the_peer() {
    let gw = start_gateway().await;
    let reader = gw.pki.svid(READER, "reader").hyper_client();
    let refused = request(
        &reader,
        "GET",
        &gw.server.url("/v1/accounts"),
        &[
            ("authorization", "Bearer not.a.token"),
            ("x-tenant-namespace", "tenant-a"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 401, "{}", refused.body);
    let code = refused.json()["code"].clone();
    assert!(code.as_str().unwrap().starts_with("auth."), "{code}");
    let records = audit_records_with(&gw, |r| r["code"] == code).await;
    let record = records.iter().find(|r| r["code"] == code).unwrap();
    assert_eq!(record["peer"], READER);
    gw.server.shutdown().await;
}

async fn get_anon(client: &Client<hyper_rustls_like::Anon, Full<Bytes>>, url: &str) -> Answer {
    let res = client
        .request(http::Request::get(url).body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn grpc_code(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get(finmesh::reject::CODE_METADATA)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn grpc_over_mtls_through_the_whole_stack_unary_and_bidi() {
    let gw = start_gateway().await;
    let endpoint = Endpoint::from_shared(gw.server.url("")).unwrap();

    // Unary, no token: the ServiceAccount, allowed to get accounts.
    let reader = gw.pki.svid(READER, "reader").channel(endpoint.clone());
    let mut ledger = LedgerClient::new(reader);
    let account = ledger
        .get_account(GetAccountRequest { id: "acc-1".into() })
        .await
        .expect("the bound ServiceAccount may get an account")
        .into_inner();
    assert_eq!(account.id, "acc-1");

    // Bidi: a token on the reader's connection; alice may transfer.
    let order = "ord-mtls-1";
    let mut req = tonic::Request::new(tokio_stream::iter(vec![TransferRequest {
        order_id: order.into(),
        from_account: "acc-1".into(),
        to_account: "acc-2".into(),
        amount: "0.01".into(),
    }]));
    req.metadata_mut()
        .insert("authorization", token("alice").parse().unwrap());
    let mut stream = ledger
        .stream_transfers(req)
        .await
        .expect("alice may stream transfers")
        .into_inner();
    let result = stream.message().await.unwrap().expect("one result");
    assert_eq!(
        (result.order_id.as_str(), result.state.as_str()),
        (order, "COMMITTED")
    );

    // The ServiceAccount alone may not transfer; the intruder may not read.
    let denied = ledger
        .stream_transfers(tokio_stream::iter(Vec::<TransferRequest>::new()))
        .await
        .expect_err("a reader may not transfer");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(grpc_code(&denied), "rbac.denied");
    let mut intruder = LedgerClient::new(gw.pki.svid(INTRUDER, "intruder").channel(endpoint));
    let denied = intruder
        .get_account(GetAccountRequest { id: "acc-1".into() })
        .await
        .expect_err("no binding");
    assert_eq!(grpc_code(&denied), "rbac.denied");
    gw.server.shutdown().await;
}

#[tokio::test]
async fn grpc_echo_unary_and_bidi_carry_the_peer_under_a_governance_layer() {
    // The tonic Routes themselves (no axum), under a GovernanceLayer that
    // only authenticates: what a tonic-only user writes.
    let pki = Pki::new();
    let jwt = finmesh::auth::JwtAuthLayer::builder()
        .issuer("unused")
        .audience("unused")
        .algorithms([finmesh::auth::Algorithm::HS256])
        .key(finmesh::auth::JwtKey::hmac(SECRET).unwrap())
        .service_accounts_from_peer_in([TRUST_DOMAIN])
        .build()
        .unwrap();
    let routes = tonic::service::Routes::new(support::EchoServer::new(EchoService));
    let service = tower::Layer::layer(&GovernanceLayer::builder().jwt(jwt).build(), routes);
    let server = Server::start(pki.acceptor(), service).await;
    let channel = pki
        .svid(READER, "reader")
        .channel(Endpoint::from_shared(server.url("")).unwrap());
    let mut echo = EchoClient::new(channel);
    let reply = echo
        .unary(EchoRequest {
            message: "hi".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "hi");
    assert_eq!(
        reply.subject,
        "system:serviceaccount:tenant-a:ledger-reader"
    );

    let mut replies = echo
        .bidi(tokio_stream::iter(["a", "b"].map(|m| EchoRequest {
            message: m.into(),
            ..Default::default()
        })))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(reply) = replies.message().await.unwrap() {
        got.push(reply.message);
    }
    assert_eq!(got, ["a", "b"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_peer_from_another_trust_domain_is_no_service_account() {
    // Security: one trust bundle verifies every allowed trust domain, so a
    // partner's CA can sign `spiffe://partner.example/ns/tenant-a/sa/…`;
    // only the home trust domain's workloads are ServiceAccounts.
    let pki = Pki::new();
    let acceptor = MtlsAcceptor::builder()
        .cert_files(pki.path("server.pem"), pki.path("server.key"))
        .client_ca_file(pki.path("ca.pem"))
        .trust_domain(TRUST_DOMAIN)
        .trust_domain("partner.example")
        .build()
        .unwrap();
    let jwt = finmesh::auth::JwtAuthLayer::builder()
        .issuer("unused")
        .audience("unused")
        .algorithms([finmesh::auth::Algorithm::HS256])
        .key(finmesh::auth::JwtKey::hmac(SECRET).unwrap())
        .service_accounts_from_peer_in([TRUST_DOMAIN])
        .build()
        .unwrap();
    let routes = tonic::service::Routes::new(support::EchoServer::new(EchoService));
    let service = tower::Layer::layer(&GovernanceLayer::builder().jwt(jwt).build(), routes);
    let server = Server::start(acceptor, service).await;
    let endpoint = Endpoint::from_shared(server.url("")).unwrap();
    let hello = || EchoRequest {
        message: "hi".into(),
        ..Default::default()
    };

    let mut partner = EchoClient::new(
        pki.svid(
            "spiffe://partner.example/ns/tenant-a/sa/ledger-reader",
            "partner",
        )
        .channel(endpoint.clone()),
    );
    let refused = partner
        .unary(hello())
        .await
        .expect_err("not a ServiceAccount");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(grpc_code(&refused), "auth.missing");

    let mut home = EchoClient::new(pki.svid(READER, "reader").channel(endpoint));
    let reply = home.unary(hello()).await.unwrap().into_inner();
    assert_eq!(
        reply.subject,
        "system:serviceaccount:tenant-a:ledger-reader"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_svid_that_expires_on_an_open_connection_is_refused_there() {
    // Security: the handshake checks the validity period once; a
    // keep-alive connection must not outlive its client certificate.
    let pki = Pki::new();
    let server = Server::start(pki.acceptor(), whoami_app()).await;
    let short = LeafSpec {
        valid_for: Some(Duration::from_secs(2)),
        ..LeafSpec::svid(READER)
    };
    let client = pki
        .connector(&pki.ca.leaf(&short).unwrap(), "short")
        .hyper_client();
    let url = server.url("/whoami");
    let first = get(&client, &url).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body, READER);
    // Once it expires, the open connection is refused with
    // `identity.expired` (or closed; a new handshake then fails).
    let bound = Instant::now() + Duration::from_secs(60);
    let refusal = loop {
        assert!(Instant::now() < bound, "still served after notAfter");
        match get(&client, &url).await {
            Ok(answer) if answer.status == 200 => {}
            outcome => break outcome,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if let Ok(answer) = refusal {
        assert_eq!(answer.status, 401);
        assert_eq!(answer.json()["code"], "identity.expired");
    }
    server.shutdown().await;
}

/// Lays out `dir` as a Kubernetes Secret volume: `tls.crt`, `tls.key` and
/// `ca.crt` are symlinks into `..data`, itself a symlink to a timestamped
/// directory; an update writes a new directory and renames a new `..data`
/// symlink over the old one.
#[cfg(unix)]
fn secret_volume_update(dir: &Path, version: &str, cert: &str, key: &str, ca: &str) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("tls.crt"), cert).unwrap();
    std::fs::write(versioned.join("tls.key"), key).unwrap();
    std::fs::write(versioned.join("ca.crt"), ca).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key", "ca.crt"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn rotated_server_cert_and_trust_bundle_apply_to_new_connections_without_dropping_open_ones()
{
    let old_ca = DemoCa::new("old CA").unwrap();
    let new_ca = DemoCa::new("new CA").unwrap();
    let names = LeafSpec::server(&["localhost"]);
    let old_server = old_ca.leaf(&names).unwrap();
    let new_server = new_ca.leaf(&names).unwrap();

    let secret = tempfile::tempdir().unwrap();
    secret_volume_update(
        secret.path(),
        "2026_12_01",
        &old_server.cert_pem,
        &old_server.key_pem,
        &old_ca.pem,
    );
    let acceptor = MtlsAcceptor::builder()
        .cert_files(secret.path().join("tls.crt"), secret.path().join("tls.key"))
        .client_ca_file(secret.path().join("ca.crt"))
        .trust_domain(TRUST_DOMAIN)
        .build()
        .unwrap();
    let server = Server::start(acceptor.clone(), whoami_app()).await;

    // Clients trust both CAs, so only the server's choice decides.
    let clients = tempfile::tempdir().unwrap();
    let both = clients.path().join("both.pem");
    std::fs::write(&both, format!("{}{}", old_ca.pem, new_ca.pem)).unwrap();
    let client_of = |ca: &DemoCa, name: &str| {
        let (cert, key) = ca
            .leaf(&LeafSpec::svid(READER))
            .unwrap()
            .write(clients.path(), name)
            .unwrap();
        MtlsConnector::from_files(cert, key, &both).unwrap()
    };
    let old_client = client_of(&old_ca, "old");
    let new_client = client_of(&new_ca, "new");

    // An open HTTP/1.1 connection with the old material.
    let stream = tower::ServiceExt::oneshot(old_client.clone(), server.url("").parse().unwrap())
        .await
        .unwrap();
    let (mut open, conn) = hyper::client::conn::http1::handshake(stream).await.unwrap();
    tokio::spawn(conn);
    let whoami = || {
        http::Request::get("/whoami")
            .header("host", "localhost")
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    assert_eq!(open.send_request(whoami()).await.unwrap().status(), 200);
    assert!(
        get(&new_client.hyper_client(), &server.url("/whoami"))
            .await
            .is_err()
    );

    // A bad version first: the last good material stays.
    let errors = acceptor.reload_error_count();
    secret_volume_update(secret.path(), "2026_12_02", "garbage", "garbage", "garbage");
    let deadline = Instant::now() + Duration::from_secs(10);
    while acceptor.reload_error_count() == errors {
        assert!(Instant::now() < deadline, "the bad version was never read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let still = get(&old_client.hyper_client(), &server.url("/whoami"))
        .await
        .unwrap();
    assert_eq!(still.body, READER);

    // The rotation: the new server certificate and the new bundle.
    let rotated_at = Instant::now();
    secret_volume_update(
        secret.path(),
        "2026_12_03",
        &new_server.cert_pem,
        &new_server.key_pem,
        &new_ca.pem,
    );
    loop {
        // A fresh client each time: a new connection, a new handshake.
        if let Ok(answer) = get(&new_client.hyper_client(), &server.url("/whoami")).await {
            assert_eq!(answer.body, READER);
            break;
        }
        // Generous against a loaded CI machine; the debounce is 100 ms.
        assert!(
            rotated_at.elapsed() < Duration::from_secs(10),
            "never rotated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "rotation seen by new handshakes after {:?}",
        rotated_at.elapsed()
    );
    // New connections with the old client certificate are refused now...
    assert!(
        get(&old_client.hyper_client(), &server.url("/whoami"))
            .await
            .is_err()
    );
    // ...and the connection opened before the rotation still serves.
    let res = open.send_request(whoami()).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, READER);
    drop(open);
    server.shutdown().await;
}

#[tokio::test]
async fn curl_with_a_client_certificate() {
    let Ok(version) = std::process::Command::new("curl").arg("--version").output() else {
        eprintln!("skipped: curl is not installed");
        return;
    };
    assert!(version.status.success());
    let pki = Pki::new();
    let leaf = pki.ca.leaf(&LeafSpec::svid(READER)).unwrap();
    let (cert, key) = leaf.write(pki.dir.path(), "curl").unwrap();
    let server = Server::start(pki.acceptor(), whoami_app()).await;
    let url = server.url("/whoami");
    let ca = pki.path("ca.pem");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), READER);
    // Without a certificate: refused with the stable code.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca)
        .arg(&url)
        .output()
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("identity.missing"), "{body}");
    server.shutdown().await;
}

#[test]
fn leaf_rules_of_the_x509_svid_spec() {
    let ca = DemoCa::new("unit CA").unwrap();
    let ok = ca.leaf(&LeafSpec::svid(READER)).unwrap();
    let peer = PeerIdentity::from_der(&ok.der).unwrap();
    assert_eq!(peer.spiffe_id.as_str(), READER);
    assert!(peer.not_after.is_some());
    let ca_leaf = ca
        .leaf(&LeafSpec {
            ca: true,
            ..LeafSpec::svid(READER)
        })
        .unwrap();
    assert_eq!(
        PeerIdentity::from_der(&ca_leaf.der).unwrap_err().field(),
        "basicConstraints"
    );
    let td_only = ca.leaf(&LeafSpec::svid("spiffe://finmesh.demo")).unwrap();
    assert_eq!(
        PeerIdentity::from_der(&td_only.der).unwrap_err().field(),
        "path"
    );
    // Hostile bytes: errors, never panics.
    for bad in [
        &b""[..],
        b"\x30",
        b"\x30\x82\xff\xff",
        &ok.der[..ok.der.len() - 1],
    ] {
        assert_eq!(
            PeerIdentity::from_der(bad).unwrap_err().field(),
            "certificate"
        );
    }
    let mut trailing = ok.der.clone();
    trailing.push(0);
    assert!(PeerIdentity::from_der(&trailing).is_err());
    assert!(PeerIdentity::from_der(&vec![0x30; finmesh::identity::MAX_CERT_LEN + 1]).is_err());
}
