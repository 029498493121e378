//! `TenantLayer` on a real server, seen by real clients: every row of the
//! rejection table over HTTP/1.1 (hyper-util) and over gRPC (tonic), the
//! principal cross-check, run-time registry changes and hot reload of a
//! tenants file.
//!
//! The JWT layer is not used here: a tiny test-only layer plays its part by
//! putting a `Principal` into the request extensions, which is the whole
//! contract between the two layers.
//!
//! Waits are polling loops with a deadline; the only time bound asserted is
//! the issue's "within a second" for a suspension to take effect.
#![cfg(feature = "tenant")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use finmesh::Principal;
use finmesh::tenant::{
    FileTenants, StaticTenants, Tenant, TenantLayer, TenantNamespace, TenantRegistry, TenantStatus,
};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use support::*;
use tonic::metadata::AsciiMetadataValue;
use tower::util::MapRequestLayer;

const HEADER: &str = "x-tenant-namespace";
/// Read by the test principal layer: the tenant claim of the principal it
/// inserts, or `-` for a principal without one.
const PRINCIPAL_HEADER: &str = "x-test-principal-tenant";

fn ns(s: &str) -> TenantNamespace {
    TenantNamespace::parse(s).unwrap()
}

fn registry() -> Arc<StaticTenants> {
    Arc::new(StaticTenants::from_iter([
        Tenant::new(ns("tenant-a")).with_display_name("Tenant A"),
        Tenant::new(ns("tenant-b")),
        Tenant::new(ns("tenant-s")).with_status(TenantStatus::Suspended),
    ]))
}

/// Stands in for the JWT layer: a verified `Principal` from a test header.
fn insert_test_principal(mut req: Request<Body>) -> Request<Body> {
    let claim = req
        .headers()
        .get(PRINCIPAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(claim) = claim {
        let mut principal = Principal::new("alice", "https://issuer.test");
        if claim != "-" {
            principal = principal.with_tenant(ns(&claim));
        }
        req.extensions_mut().insert(principal);
    }
    req
}

fn app<R: TenantRegistry>(layer: TenantLayer<R>) -> axum::Router {
    echo_app()
        .layer(layer)
        .layer(MapRequestLayer::new(insert_test_principal))
}

/// One request's tenant inputs: raw header values (each sent as its own
/// header line) and the principal's tenant claim.
#[derive(Clone, Copy)]
struct Input {
    values: &'static [&'static [u8]],
    principal: Option<&'static str>,
}

const fn header(values: &'static [&'static [u8]]) -> Input {
    Input {
        values,
        principal: None,
    }
}

#[derive(Clone, Copy, Debug)]
enum Want {
    Admitted(&'static str),
    Rejected {
        http: u16,
        grpc: tonic::Code,
        code: &'static str,
    },
}

const MISSING: Want = Want::Rejected {
    http: 400,
    grpc: tonic::Code::InvalidArgument,
    code: "tenant.missing",
};
const MALFORMED: Want = Want::Rejected {
    http: 400,
    grpc: tonic::Code::InvalidArgument,
    code: "tenant.malformed",
};
const UNKNOWN: Want = Want::Rejected {
    http: 403,
    grpc: tonic::Code::PermissionDenied,
    code: "tenant.unknown",
};
const SUSPENDED: Want = Want::Rejected {
    http: 403,
    grpc: tonic::Code::PermissionDenied,
    code: "tenant.suspended",
};
const MISMATCH: Want = Want::Rejected {
    http: 403,
    grpc: tonic::Code::PermissionDenied,
    code: "tenant.mismatch",
};

const LONG_64: &[u8] = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const LONG_63: &[u8] = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Every row of the issue's table, and the admitted cases around it.
///
/// Leading and trailing whitespace is not here: HTTP strips it from header
/// values before any layer sees them (RFC 9110 §5.5), so ` tenant-a` on the
/// wire *is* `tenant-a`. The unit tests cover those bytes.
const TABLE: &[(&str, Input, Want)] = &[
    // tenant.missing
    ("no header, no principal", header(&[]), MISSING),
    (
        "no header, principal without a tenant claim",
        Input {
            values: &[],
            principal: Some("-"),
        },
        MISSING,
    ),
    // tenant.malformed
    ("empty", header(&[b""]), MALFORMED),
    ("uppercase", header(&[b"Tenant-A"]), MALFORMED),
    ("over 63 characters", header(&[LONG_64]), MALFORMED),
    ("leading hyphen", header(&[b"-tenant-a"]), MALFORMED),
    ("trailing hyphen", header(&[b"tenant-a-"]), MALFORMED),
    ("underscore", header(&[b"tenant_a"]), MALFORMED),
    ("dot", header(&[b"tenant.a"]), MALFORMED),
    ("space", header(&[b"tenant a"]), MALFORMED),
    (
        "non-ASCII",
        header(&["t\u{e9}nant-a".as_bytes()]),
        MALFORMED,
    ),
    ("percent-encoding", header(&[b"tenant%2Da"]), MALFORMED),
    (
        "several header values",
        header(&[b"tenant-a", b"tenant-b"]),
        MALFORMED,
    ),
    (
        "the same value twice",
        header(&[b"tenant-a", b"tenant-a"]),
        MALFORMED,
    ),
    (
        "comma-joined values",
        header(&[b"tenant-a,tenant-b"]),
        MALFORMED,
    ),
    // tenant.unknown: 403, never 404
    ("not in the registry", header(&[b"tenant-z"]), UNKNOWN),
    (
        "claim not in the registry",
        Input {
            values: &[],
            principal: Some("tenant-z"),
        },
        UNKNOWN,
    ),
    // tenant.suspended
    ("suspended", header(&[b"tenant-s"]), SUSPENDED),
    (
        "claim suspended",
        Input {
            values: &[],
            principal: Some("tenant-s"),
        },
        SUSPENDED,
    ),
    // tenant.mismatch
    (
        "header and verified claim differ",
        Input {
            values: &[b"tenant-a"],
            principal: Some("tenant-b"),
        },
        MISMATCH,
    ),
    (
        "unknown header, other claim: no existence oracle",
        Input {
            values: &[b"tenant-z"],
            principal: Some("tenant-a"),
        },
        MISMATCH,
    ),
    // admitted
    (
        "known, active",
        header(&[b"tenant-a"]),
        Want::Admitted("tenant-a"),
    ),
    (
        "header and claim agree",
        Input {
            values: &[b"tenant-b"],
            principal: Some("tenant-b"),
        },
        Want::Admitted("tenant-b"),
    ),
    (
        "claim only",
        Input {
            values: &[],
            principal: Some("tenant-a"),
        },
        Want::Admitted("tenant-a"),
    ),
    (
        "header, principal without a claim",
        Input {
            values: &[b"tenant-b"],
            principal: Some("-"),
        },
        Want::Admitted("tenant-b"),
    ),
];

fn table_registry() -> Arc<StaticTenants> {
    let tenants = registry();
    tenants.insert(Tenant::new(ns(std::str::from_utf8(LONG_63).unwrap())));
    tenants
}

fn http_request(url: &str, input: Input) -> Request<Full<Bytes>> {
    let mut req = Request::get(url).body(Full::default()).unwrap();
    for value in input.values {
        req.headers_mut()
            .append(HEADER, HeaderValue::from_bytes(value).unwrap());
    }
    if let Some(p) = input.principal {
        req.headers_mut()
            .insert(PRINCIPAL_HEADER, HeaderValue::from_str(p).unwrap());
    }
    req
}

fn grpc_request_for(input: Input, message: &str) -> tonic::Request<EchoRequest> {
    let mut req = tonic::Request::new(EchoRequest {
        message: message.into(),
        ..Default::default()
    });
    for value in input.values {
        req.metadata_mut()
            .append(HEADER, AsciiMetadataValue::try_from(*value).unwrap());
    }
    if let Some(p) = input.principal {
        req.metadata_mut()
            .insert(PRINCIPAL_HEADER, p.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn every_table_row_over_http1() {
    let server = spawn(app(TenantLayer::new(table_registry()))).await;
    for (why, input, want) in TABLE {
        let res = send(http_request(&server.url("/echo"), *input)).await;
        match *want {
            Want::Admitted(tenant) => {
                assert_eq!(res.status, StatusCode::OK, "{why}: {:?}", res.body);
                assert_eq!(res.json()["tenant"], tenant, "{why}");
            }
            Want::Rejected { http, code, .. } => {
                assert_eq!(res.status.as_u16(), http, "{why}");
                assert_eq!(res.header("content-type"), "application/problem+json");
                let problem = res.json();
                assert_eq!(problem["code"], code, "{why}");
                assert_eq!(problem["status"], http, "{why}");
                assert_eq!(problem["type"], format!("urn:finmesh:problem:{code}"));
                // Only what the caller sent, never another tenant's name.
                let detail = problem["detail"].as_str().unwrap();
                for other in ["tenant-a", "tenant-b", "tenant-s"] {
                    let sent = input.values.iter().any(|v| v == &other.as_bytes())
                        || input.principal == Some(other);
                    assert!(sent || !detail.contains(other), "{why}: {detail}");
                }
            }
        }
    }
    // The longest label is admitted.
    let res = send(http_request(&server.url("/echo"), header(&[LONG_63]))).await;
    assert_eq!(res.status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn every_table_row_over_grpc() {
    let server = spawn(app(TenantLayer::new(table_registry()))).await;
    let mut client = grpc_client(server.addr).await;
    for (why, input, want) in TABLE {
        let result = client.unary(grpc_request_for(*input, why)).await;
        match (*want, result) {
            (Want::Admitted(tenant), Ok(reply)) => {
                let reply = reply.into_inner();
                assert_eq!(reply.tenant, tenant, "{why}");
                assert_eq!(reply.message, *why);
            }
            (Want::Rejected { grpc, code, .. }, Err(status)) => {
                assert_eq!(status.code(), grpc, "{why}: {status:?}");
                // gRPC has no `code` member: the status code gives the
                // class, the message tells the rows of a class apart.
                let fragment = match code {
                    "tenant.missing" => "names no tenant namespace",
                    "tenant.malformed" if input.values.len() > 1 => "more than once",
                    "tenant.malformed" => "not a DNS-1123 label",
                    "tenant.unknown" => "is not known",
                    "tenant.suspended" => "is suspended",
                    "tenant.mismatch" => "does not match",
                    other => panic!("no fragment for {other}"),
                };
                assert!(status.message().contains(fragment), "{why}: {status:?}");
            }
            (want, got) => panic!("{why}: wanted {want:?}, got {got:?}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn suspended_tenant_is_rejected_with_permission_denied_over_a_grpc_stream() {
    let server = spawn(app(TenantLayer::new(registry()))).await;
    let mut client = grpc_client(server.addr).await;

    let messages = |tenant: &'static [u8]| {
        let mut req = tonic::Request::new(tokio_stream::iter(vec![
            EchoRequest {
                message: "one".into(),
                ..Default::default()
            },
            EchoRequest {
                message: "two".into(),
                ..Default::default()
            },
        ]));
        req.metadata_mut()
            .insert(HEADER, AsciiMetadataValue::try_from(tenant).unwrap());
        req
    };

    let mut replies = client
        .bidi(messages(b"tenant-a"))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(reply) = replies.message().await.unwrap() {
        seen.push((reply.message, reply.tenant));
    }
    assert_eq!(
        seen,
        [
            ("one".to_owned(), "tenant-a".to_owned()),
            ("two".to_owned(), "tenant-a".to_owned())
        ]
    );

    let status = client.bidi(messages(b"tenant-s")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("suspended"), "{status:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn principal_fallback_off_requires_the_header_over_both_protocols() {
    let layer = TenantLayer::new(registry()).principal_fallback(false);
    let server = spawn(app(layer)).await;
    let claim_only = Input {
        values: &[],
        principal: Some("tenant-a"),
    };
    let res = send(http_request(&server.url("/echo"), claim_only)).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.json()["code"], "tenant.missing");
    let mut client = grpc_client(server.addr).await;
    let status = client
        .unary(grpc_request_for(claim_only, "x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    server.shutdown().await;
}

#[tokio::test]
async fn static_registry_changes_apply_to_the_next_request() {
    let tenants = registry();
    let server = spawn(app(TenantLayer::new(Arc::clone(&tenants)))).await;
    let url = server.url("/echo");
    let code = |res: &HttpAnswer| res.json()["code"].as_str().map(str::to_owned);

    let res = send(http_request(&url, header(&[b"tenant-new"]))).await;
    assert_eq!(code(&res).as_deref(), Some("tenant.unknown"));

    tenants.insert(Tenant::new(ns("tenant-new")));
    let res = send(http_request(&url, header(&[b"tenant-new"]))).await;
    assert_eq!(res.status, StatusCode::OK);

    tenants.set_status("tenant-new", TenantStatus::Suspended);
    let res = send(http_request(&url, header(&[b"tenant-new"]))).await;
    assert_eq!(code(&res).as_deref(), Some("tenant.suspended"));

    tenants.remove("tenant-new");
    let res = send(http_request(&url, header(&[b"tenant-new"]))).await;
    assert_eq!(code(&res).as_deref(), Some("tenant.unknown"));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Hot reload of a tenants file
// ---------------------------------------------------------------------------

const BOTH_ACTIVE: &str = "\
tenants:
  - namespace: tenant-a
    displayName: Tenant A
  - namespace: tenant-b
";

const A_SUSPENDED: &str = "\
tenants:
  - namespace: tenant-a
    displayName: Tenant A
    status: Suspended
  - namespace: tenant-b
";

/// How long to wait for anything but the issue's one-second bound.
const GENEROUS: Duration = Duration::from_secs(10);

/// One client, reused: a loop of requests over one pooled connection.
fn shared_client() -> Client<HttpConnector, Full<Bytes>> {
    http_client()
}

async fn http_status_and_code(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    tenant: &[u8],
) -> Result<(u16, String), String> {
    let mut req = Request::get(url).body(Full::default()).unwrap();
    req.headers_mut()
        .insert(HEADER, HeaderValue::from_bytes(tenant).unwrap());
    let res = client
        .request(req)
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("not JSON ({e}): {body:?}"))?;
    let code = json["code"]
        .as_str()
        .or_else(|| json["tenant"].as_str())
        .unwrap_or_default()
        .to_owned();
    Ok((status, code))
}

#[derive(Default)]
struct LoopStats {
    ok: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

impl LoopStats {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// Requests for `tenant-b` over HTTP/1.1 and over gRPC, back to back, until
/// `stop`; every answer but "admitted as tenant-b" is recorded as a failure.
fn spawn_tenant_b_loops(
    server: &TestServer,
    stop: &Arc<AtomicBool>,
) -> (Arc<LoopStats>, Vec<tokio::task::JoinHandle<()>>) {
    let stats = Arc::new(LoopStats::default());
    let url = server.url("/echo");
    let http = {
        let (stats, stop) = (Arc::clone(&stats), Arc::clone(stop));
        tokio::spawn(async move {
            let client = shared_client();
            while !stop.load(Ordering::Relaxed) {
                match http_status_and_code(&client, &url, b"tenant-b").await {
                    Ok((200, tenant)) if tenant == "tenant-b" => {
                        stats.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => stats.fail(format!("HTTP: {other:?}")),
                }
            }
        })
    };
    let addr = server.addr;
    let grpc = {
        let (stats, stop) = (Arc::clone(&stats), Arc::clone(stop));
        tokio::spawn(async move {
            let mut client = grpc_client(addr).await;
            while !stop.load(Ordering::Relaxed) {
                match client
                    .unary(grpc_request_for(header(&[b"tenant-b"]), "b"))
                    .await
                {
                    Ok(reply) if reply.get_ref().tenant == "tenant-b" => {
                        stats.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => stats.fail(format!("gRPC: {other:?}")),
                }
            }
        })
    };
    (stats, vec![http, grpc])
}

async fn wait_for(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_tenant_in_its_file_takes_effect_within_a_second_without_failing_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.yaml");
    std::fs::write(&path, BOTH_ACTIVE).unwrap();
    let tenants = FileTenants::watch(&path).unwrap();
    let server = spawn(app(TenantLayer::new(tenants.clone()))).await;
    let url = server.url("/echo");
    let client = shared_client();
    assert_eq!(
        http_status_and_code(&client, &url, b"tenant-a").await,
        Ok((200, "tenant-a".to_owned()))
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (stats, loops) = spawn_tenant_b_loops(&server, &stop);
    wait_for("the tenant-b loops to get going", GENEROUS, || {
        stats.ok.load(Ordering::Relaxed) >= 20
    })
    .await;

    // Rewrite the file in place: a watcher may even catch it half-written,
    // which must not disturb anyone (an invalid version is never applied).
    std::fs::write(&path, A_SUSPENDED).unwrap();
    let written = Instant::now();
    let ok_at_write = stats.ok.load(Ordering::Relaxed);

    loop {
        let got = http_status_and_code(&client, &url, b"tenant-a").await;
        match got {
            Ok((403, ref code)) if code == "tenant.suspended" => break,
            // Until the new version is applied, tenant-a is still served.
            Ok((200, ref tenant)) if tenant == "tenant-a" => {}
            other => panic!("unexpected answer for tenant-a: {other:?}"),
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "tenant-a still admitted {:?} after its suspension was written",
            written.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // gRPC sees the same registry.
    let mut grpc = grpc_client(server.addr).await;
    let status = grpc
        .unary(grpc_request_for(header(&[b"tenant-a"]), "a"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("suspended"), "{status:?}");

    // Keep tenant-b's loops running past the switch, then stop them.
    wait_for("more tenant-b requests after the switch", GENEROUS, || {
        stats.ok.load(Ordering::Relaxed) >= ok_at_write + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for handle in loops {
        handle.await.unwrap();
    }
    let failures = std::mem::take(&mut *stats.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} tenant-b requests failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(stats.ok.load(Ordering::Relaxed) > ok_at_write);
    assert!(tenants.generation() >= 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_tenants_file_leaves_the_old_registry_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.yaml");
    std::fs::write(&path, BOTH_ACTIVE).unwrap();
    let tenants = FileTenants::watch(&path).unwrap();
    let server = spawn(app(TenantLayer::new(tenants.clone()))).await;
    let url = server.url("/echo");
    let client = shared_client();

    let invalid_versions = [
        // An invalid namespace; suspending tenant-a must not half-apply.
        "tenants:\n  - namespace: tenant-a\n    status: Suspended\n  - namespace: Tenant-B\n",
        // The same tenant twice.
        "tenants:\n  - namespace: tenant-a\n  - namespace: tenant-a\n    status: Suspended\n",
        // A misspelt field.
        "tenants:\n  - namespace: tenant-a\n    stauts: Suspended\n",
        // Not YAML.
        "tenants: [\n",
        // Empty (a truncated write): not "no tenants".
        "",
    ];
    for (i, text) in invalid_versions.iter().enumerate() {
        let errors_before = tenants.error_count();
        std::fs::write(&path, text).unwrap();
        // The watcher notices and refuses it.
        wait_for("the watcher to refuse the file", GENEROUS, || {
            tenants.error_count() > errors_before
        })
        .await;
        assert!(tenants.last_error().is_some(), "version {i}");
        assert!(tenants.reload().is_err(), "version {i}");
        assert_eq!(tenants.generation(), 1, "version {i}");
        for tenant in [&b"tenant-a"[..], b"tenant-b"] {
            let (status, seen) = http_status_and_code(&client, &url, tenant).await.unwrap();
            assert_eq!(status, 200, "version {i}: {seen}");
            assert_eq!(seen.as_bytes(), tenant, "version {i}");
        }
    }

    // A valid version is applied, and the error cleared.
    std::fs::write(&path, A_SUSPENDED).unwrap();
    wait_for("the valid version to apply", GENEROUS, || {
        tenants.generation() == 2
    })
    .await;
    assert!(tenants.last_error().is_none());
    assert_eq!(
        http_status_and_code(&client, &url, b"tenant-a").await,
        Ok((403, "tenant.suspended".to_owned()))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn json_tenants_file_serves_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.json");
    std::fs::write(
        &path,
        r#"[{"namespace": "tenant-a", "labels": {"plan": "gold"}},
            {"namespace": "tenant-s", "status": "Suspended"}]"#,
    )
    .unwrap();
    let tenants = FileTenants::load(&path).unwrap();
    assert_eq!(
        tenants.lookup_str("tenant-a").unwrap().labels["plan"],
        "gold"
    );
    let server = spawn(app(TenantLayer::new(tenants))).await;
    let mut client = grpc_client(server.addr).await;
    let reply = client
        .unary(grpc_request_for(header(&[b"tenant-a"]), "hi"))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().tenant, "tenant-a");
    let status = client
        .unary(grpc_request_for(header(&[b"tenant-s"]), "hi"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    server.shutdown().await;
}

#[tokio::test]
async fn axum_handlers_extract_the_admitted_tenant_with_extension() {
    async fn whoami(axum::Extension(tenant): axum::Extension<Tenant>) -> String {
        format!(
            "{} ({})",
            tenant.namespace,
            tenant.display_name.as_deref().unwrap_or("-")
        )
    }
    let app = axum::Router::new()
        .route("/whoami", axum::routing::get(whoami))
        .layer(TenantLayer::new(registry()));
    let server = spawn(app).await;
    let res = send(http_request(&server.url("/whoami"), header(&[b"tenant-a"]))).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "tenant-a (Tenant A)");
    server.shutdown().await;
}
