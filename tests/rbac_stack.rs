//! RBAC behind the real JWT and tenant layers: a signed token becomes the
//! `Principal`, the tenant layer admits the `Tenant`, RBAC decides — over
//! real HTTP/1.1 and gRPC clients against a real server on loopback.
#![cfg(all(feature = "rbac", feature = "_jwt", feature = "tenant"))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use finmesh::auth::{Algorithm, Issuer, JwtAuthLayer, JwtKey};
use finmesh::config::WatchOptions;
use finmesh::rbac::{Authorizer, GrpcMethods, HttpRoutes, RbacLayer};
use finmesh::tenant::{StaticTenants, Tenant, TenantLayer, TenantNamespace};
use http::{Method, StatusCode};
use support::*;

const SECRET: &[u8] = b"an HMAC secret of at least 32 bytes, for tests";
const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "payments";

const POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {namespace: tenant-a, name: account-admin}
rules:
- apiGroups: [""]
  resources: ["accounts", "accounts/balance", "echoes"]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: account-reader}
rules:
- apiGroups: [""]
  resources: ["accounts", "accounts/balance", "echoes"]
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
"#;

fn token(sub: &str, groups: &[&str], tenant: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": exp,
        "groups": groups, "tenant": tenant,
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn bearer(sub: &str, groups: &[&str], tenant: &str) -> String {
    format!("Bearer {}", token(sub, groups, tenant))
}

async fn server(authorizer: Authorizer) -> TestServer {
    let ns = |s| TenantNamespace::parse(s).unwrap();
    let tenants = Arc::new(StaticTenants::from_iter([
        Tenant::new(ns("tenant-a")),
        Tenant::new(ns("tenant-b")),
    ]));
    let auth = JwtAuthLayer::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .algorithms([Algorithm::HS256])
        .key(JwtKey::hmac(SECRET).unwrap().with_kid("k1"))
        .build()
        .unwrap();
    let mapper = (
        HttpRoutes::new()
            .route("/v1/accounts", "accounts")
            .route("/v1/accounts/{name}", "accounts")
            .route("/v1/accounts/{name}/balance", "accounts/balance"),
        GrpcMethods::new().method("/finmesh.test.v1.Echo/Unary", "get", "echoes"),
    );
    // Outermost last: JWT, then tenant, then RBAC.
    let app = echo_app()
        .layer(RbacLayer::new(authorizer, mapper))
        .layer(TenantLayer::new(tenants))
        .layer(auth);
    spawn(app).await
}

async fn call(method: Method, url: &str, authorization: Option<&str>) -> HttpAnswer {
    let mut b = http::Request::builder().method(method).uri(url);
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    send(b.body(Default::default()).unwrap()).await
}

#[tokio::test]
async fn verified_principal_in_its_tenant_is_allowed_and_others_denied_over_http() {
    let srv = server(Authorizer::from_yaml(POLICY).unwrap()).await;
    let url = srv.url("/v1/accounts/acc-1");

    let res = call(
        Method::DELETE,
        &url,
        Some(&bearer("alice", &[], "tenant-a")),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    assert_eq!(
        (
            res.json()["subject"].as_str(),
            res.json()["tenant"].as_str()
        ),
        (Some("alice"), Some("tenant-a"))
    );

    let res = call(
        Method::DELETE,
        &url,
        Some(&bearer("rita", &["readers"], "tenant-a")),
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.json()["code"], "rbac.denied");
    assert_eq!(
        res.json()["detail"],
        "\"rita\" cannot delete resource \"accounts\" in namespace \"tenant-a\""
    );

    // alice's token for tenant-b: admitted by the tenant layer, denied by RBAC.
    let res = call(
        Method::DELETE,
        &url,
        Some(&bearer("alice", &[], "tenant-b")),
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(
        res.json()["detail"],
        "\"alice\" cannot delete resource \"accounts\" in namespace \"tenant-b\""
    );

    let res = call(
        Method::GET,
        &srv.url("/v1/ledgers"),
        Some(&bearer("alice", &[], "tenant-a")),
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.json()["code"], "rbac.unmapped");

    let res = call(Method::GET, &url, None).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn verified_principal_is_authorized_over_grpc() {
    let srv = server(Authorizer::from_yaml(POLICY).unwrap()).await;
    let mut client = grpc_client(srv.addr).await;
    let rita = bearer("rita", &["readers"], "tenant-a");
    let reply = client
        .unary(grpc_request(
            EchoRequest::default(),
            &[("authorization", rita.as_str())],
        ))
        .await
        .expect("allowed")
        .into_inner();
    assert_eq!(
        (reply.subject.as_str(), reply.tenant.as_str()),
        ("rita", "tenant-a")
    );

    let mallory = bearer("mallory", &[], "tenant-a");
    let status = client
        .unary(grpc_request(
            EchoRequest::default(),
            &[("authorization", mallory.as_str())],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    let outbound = tokio_stream::iter(vec![EchoRequest::default()]);
    let status = client
        .bidi(grpc_request(outbound, &[("authorization", rita.as_str())]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("is not mapped"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_revokes_through_the_full_stack_without_failing_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rbac.yaml");
    std::fs::write(&path, POLICY).unwrap();
    let authorizer = Authorizer::watch_with(
        &path,
        WatchOptions::new().debounce(Duration::from_millis(50)),
    )
    .unwrap();
    let srv = server(authorizer.clone()).await;
    let url = srv.url("/v1/accounts/acc-1/balance");
    let alice = bearer("alice", &[], "tenant-a");
    assert_eq!(
        call(Method::GET, &url, Some(&alice)).await.status,
        StatusCode::OK
    );
    let mut grpc = grpc_client(srv.addr).await;
    let alice_unary = || grpc_request(EchoRequest::default(), &[("authorization", alice.as_str())]);
    grpc.unary(alice_unary())
        .await
        .expect("alice may call Unary");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let background = {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        let rita = bearer("rita", &["readers"], "tenant-a");
        tokio::spawn(async move {
            let client = http_client();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url)
                    .header("authorization", &rita)
                    .body(Default::default())
                    .unwrap();
                match client.request(req).await {
                    Ok(res) if res.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    wait_for(20, &ok).await;

    let revoked: Vec<&str> = POLICY
        .split("\n---\n")
        .filter(|d| !d.contains("alice-admin"))
        .collect();
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, revoked.join("\n---\n")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while authorizer.generation() < 2 {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the reload"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let res = call(Method::GET, &url, Some(&alice)).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.json()["code"], "rbac.denied");
    // And over gRPC, on the connection opened before the reload.
    let status = grpc.unary(alice_unary()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status
            .metadata()
            .get(finmesh::reject::CODE_METADATA)
            .unwrap(),
        "rbac.denied"
    );

    wait_for(20, &ok).await;
    stop.store(true, Ordering::Relaxed);
    background.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "another user's request failed during the reload"
    );
}

async fn wait_for(n: u64, counter: &AtomicU64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let start = counter.load(Ordering::Relaxed);
    while counter.load(Ordering::Relaxed) < start + n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for background requests"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// --- Issuer binding (issue 14, finding 5).

const CORP: &str = "https://corp.test";
const PARTNER: &str = "https://partner.test";
const CLUSTER: &str = "https://cluster.test";
const CORP_SECRET: &[u8] = b"corporate HMAC secret of at least 32 bytes";
const PARTNER_SECRET: &[u8] = b"partner HMAC secret of at least 32 bytes!!";
const CLUSTER_SECRET: &[u8] = b"cluster service-account secret, 32+ bytes";

const ISSUER_POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {namespace: tenant-a, name: account-admin}
rules:
- apiGroups: [""]
  resources: ["accounts"]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {namespace: tenant-a, name: admins}
subjects:
- {kind: User, name: alice}
- {kind: Group, name: treasury}
- {kind: ServiceAccount, name: ledger}
roleRef: {kind: Role, name: account-admin}
"#;

fn signed(iss: &str, secret: &[u8], kid: &str, sub: &str, groups: &[&str]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({
        "iss": iss, "aud": AUDIENCE, "sub": sub, "exp": exp,
        "groups": groups, "tenant": "tenant-a",
    });
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap();
    format!("Bearer {token}")
}

/// Three issuers, each with its own HMAC key under the same `kid`: the
/// corporate IdP in the one-issuer form (names as they are), a partner
/// IdP with `partner:` prefixes, and a Kubernetes service-account issuer
/// allowed to mint ServiceAccounts (default `<issuer>#` prefixes).
async fn issuer_server() -> TestServer {
    let ns = |s| TenantNamespace::parse(s).unwrap();
    let tenants = Arc::new(StaticTenants::from_iter([Tenant::new(ns("tenant-a"))]));
    let auth = JwtAuthLayer::builder()
        .issuer(CORP)
        .audience(AUDIENCE)
        .key(JwtKey::hmac(CORP_SECRET).unwrap().with_kid("k1"))
        .issuer_config(
            Issuer::new(PARTNER)
                .audience(AUDIENCE)
                .key(JwtKey::hmac(PARTNER_SECRET).unwrap().with_kid("k1"))
                .username_prefix("partner:")
                .groups_prefix("partner:"),
        )
        .issuer_config(
            Issuer::new(CLUSTER)
                .audience(AUDIENCE)
                .key(JwtKey::hmac(CLUSTER_SECRET).unwrap().with_kid("k1"))
                .allow_service_accounts(true),
        )
        .algorithms([Algorithm::HS256])
        .build()
        .unwrap();
    let mapper = (
        HttpRoutes::new().route("/v1/accounts/{name}", "accounts"),
        GrpcMethods::new().method("/finmesh.test.v1.Echo/Unary", "get", "accounts"),
    );
    let app = echo_app()
        .layer(RbacLayer::new(
            Authorizer::from_yaml(ISSUER_POLICY).unwrap(),
            mapper,
        ))
        .layer(TenantLayer::new(tenants))
        .layer(auth);
    spawn(app).await
}

const SA: &str = "system:serviceaccount:tenant-a:ledger";

/// (row, authorization, HTTP status, code or the subject RBAC saw)
fn issuer_rows() -> Vec<(&'static str, String, u16, &'static str)> {
    vec![
        (
            "corporate alice with the corporate key",
            signed(CORP, CORP_SECRET, "k1", "alice", &[]),
            200,
            "alice",
        ),
        (
            "claims the corporate issuer, signed with the partner's key (same kid)",
            signed(CORP, PARTNER_SECRET, "k1", "alice", &[]),
            401,
            "auth.invalid",
        ),
        (
            "claims the partner, signed with the corporate key",
            signed(PARTNER, CORP_SECRET, "k1", "alice", &[]),
            401,
            "auth.invalid",
        ),
        (
            "claims the service-account issuer, signed with the partner's key",
            signed(CLUSTER, PARTNER_SECRET, "k1", SA, &[]),
            401,
            "auth.invalid",
        ),
        (
            "an issuer nobody configured",
            signed("https://evil.test", PARTNER_SECRET, "k1", "alice", &[]),
            401,
            "auth.invalid",
        ),
        (
            "partner alice does not get corporate alice's binding",
            signed(PARTNER, PARTNER_SECRET, "k1", "alice", &[]),
            403,
            "partner:alice",
        ),
        (
            "corporate treasury group is bound",
            signed(CORP, CORP_SECRET, "k1", "bob", &["treasury"]),
            200,
            "bob",
        ),
        (
            "partner treasury group is not the corporate one",
            signed(PARTNER, PARTNER_SECRET, "k1", "bob", &["treasury"]),
            403,
            "partner:bob",
        ),
        (
            "ServiceAccount-shaped sub from the partner is prefixed",
            signed(PARTNER, PARTNER_SECRET, "k1", SA, &[]),
            403,
            "partner:system:serviceaccount:tenant-a:ledger",
        ),
        (
            "ServiceAccount-shaped sub from the unprefixed corporate issuer is refused",
            signed(CORP, CORP_SECRET, "k1", SA, &[]),
            401,
            "auth.claim_invalid",
        ),
        (
            "system: group from the unprefixed corporate issuer is refused",
            signed(CORP, CORP_SECRET, "k1", "bob", &["system:masters"]),
            401,
            "auth.claim_invalid",
        ),
        (
            "ServiceAccount from the issuer allowed to mint them",
            signed(CLUSTER, CLUSTER_SECRET, "k1", SA, &[]),
            200,
            SA,
        ),
        (
            "a user of the service-account issuer gets its default prefix",
            signed(CLUSTER, CLUSTER_SECRET, "k1", "alice", &[]),
            403,
            "https://cluster.test#alice",
        ),
        (
            "a malformed ServiceAccount name from the allowed issuer",
            signed(
                CLUSTER,
                CLUSTER_SECRET,
                "k1",
                "system:serviceaccount:tenant-a",
                &[],
            ),
            401,
            "auth.claim_invalid",
        ),
    ]
}

#[tokio::test]
async fn identities_are_bound_to_their_issuer_over_http() {
    let srv = issuer_server().await;
    let url = srv.url("/v1/accounts/acc-1");
    let mut wrong = Vec::new();
    let mut untrusted_details = Vec::new();
    for (row, authorization, status, want) in issuer_rows() {
        let res = call(Method::DELETE, &url, Some(&authorization)).await;
        let body = res.json();
        let got = match res.status.as_u16() {
            200 => body["subject"].as_str().unwrap_or_default().to_owned(),
            403 => {
                assert_eq!(body["code"], "rbac.denied", "{row}");
                // `"<user>" cannot delete …`: the user RBAC saw.
                let detail = body["detail"].as_str().unwrap();
                detail.split('"').nth(1).unwrap_or_default().to_owned()
            }
            _ => {
                if body["code"] == "auth.invalid" {
                    untrusted_details.push(body["detail"].as_str().unwrap().to_owned());
                }
                body["code"].as_str().unwrap_or_default().to_owned()
            }
        };
        if (res.status.as_u16(), got.as_str()) != (status, want) {
            wrong.push(format!(
                "{row}: got {} {got:?}, want {status} {want:?}",
                res.status
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    // Wrong key and unknown issuer read the same: no issuer is revealed.
    untrusted_details.dedup();
    assert_eq!(untrusted_details.len(), 1, "{untrusted_details:?}");

    // The ServiceAccount is in the groups the apiserver gives it.
    let res = call(
        Method::DELETE,
        &url,
        Some(&signed(CLUSTER, CLUSTER_SECRET, "k1", SA, &[])),
    )
    .await;
    assert_eq!(
        res.json()["groups"],
        serde_json::json!(["system:serviceaccounts", "system:serviceaccounts:tenant-a"])
    );
}

#[tokio::test]
async fn identities_are_bound_to_their_issuer_over_grpc() {
    let srv = issuer_server().await;
    let mut client = grpc_client(srv.addr).await;
    for (row, authorization, status, want) in issuer_rows() {
        let result = client
            .unary(grpc_request(
                EchoRequest::default(),
                &[("authorization", authorization.as_str())],
            ))
            .await;
        match (status, result) {
            (200, Ok(reply)) => assert_eq!(reply.into_inner().subject, want, "{row}"),
            (403, Err(s)) => {
                assert_eq!(s.code(), tonic::Code::PermissionDenied, "{row}");
                assert!(
                    s.message().contains(&format!("\"{want}\"")),
                    "{row}: {}",
                    s.message()
                );
            }
            (401, Err(s)) => {
                assert_eq!(s.code(), tonic::Code::Unauthenticated, "{row}");
                assert_eq!(
                    s.metadata().get(finmesh::reject::CODE_METADATA).unwrap(),
                    want,
                    "{row}"
                );
            }
            (_, other) => panic!("{row}: want {status} {want}, got {other:?}"),
        }
    }
}
