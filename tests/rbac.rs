//! RBAC over real HTTP/1.1 and gRPC clients, against real servers on
//! loopback, with Kubernetes manifests as they are written.
//!
//! The JWT and tenant layers are stood in for by a test-only layer that
//! puts a `Principal` and a `Tenant` into the extensions from `x-test-*`
//! headers: exactly the contract between those layers and RBAC.
#![cfg(feature = "rbac")]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use finmesh::config::WatchOptions;
use finmesh::rbac::{
    Action, Attributes, Authorizer, GrpcMethods, HttpRoutes, Policy, RbacLayer, ResourceAction,
};
use finmesh::{Principal, Tenant, TenantNamespace};
use http::{Method, StatusCode};
use support::*;
use tower::util::MapRequestLayer;

// ---------------------------------------------------------------------------
// Kubernetes documentation manifests
// ---------------------------------------------------------------------------

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rbac")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const DOC_FIXTURES: &[&str] = &[
    "role-pod-reader.yaml",
    "clusterrole-secret-reader.yaml",
    "rolebinding-read-pods.yaml",
    "rolebinding-read-secrets.yaml",
    "clusterrolebinding-read-secrets-global.yaml",
    "more-examples.yaml",
    "list.yaml",
    "aggregated.yaml",
];

fn all_fixtures() -> Policy {
    let mut policy = Policy::new();
    for name in DOC_FIXTURES {
        let loaded = Policy::from_yaml(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        policy.extend(loaded);
    }
    policy
}

/// (user, groups, namespace, action, allowed)
type Row = (
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    Action,
    bool,
);

/// Asserts each row's decision.
fn check_rows(compiled: &finmesh::rbac::CompiledPolicy, rows: Vec<Row>) {
    for (user, groups, ns, action, want) in rows {
        let groups: Vec<Arc<str>> = groups.iter().map(|g| Arc::from(*g)).collect();
        let d = compiled.authorize(&Attributes::new(user, &groups, ns, &action));
        assert_eq!(
            d.is_allowed(),
            want,
            "{user} {groups:?} in {ns:?}: {action} ({d})"
        );
    }
}

fn res(verb: &str, resource: &str) -> Action {
    Action::resource(verb, resource)
}

#[test]
fn kubernetes_documentation_examples_load_unchanged_and_decide_as_kubernetes_would() {
    let compiled = all_fixtures().compile();
    assert_eq!(compiled.dangling_role_refs(), [] as [String; 0]);
    let rows: Vec<Row> = vec![
        // Role pod-reader + RoleBinding read-pods: jane reads pods in default only.
        ("jane", &[], Some("default"), res("get", "pods"), true),
        ("jane", &[], Some("default"), res("list", "pods"), true),
        ("jane", &[], Some("default"), res("watch", "pods"), true),
        ("jane", &[], Some("default"), res("delete", "pods"), false),
        ("jane", &[], Some("default"), res("get", "pods/log"), false),
        ("jane", &[], Some("development"), res("get", "pods"), false),
        ("jane", &[], None, res("get", "pods"), false),
        ("Jane", &[], Some("default"), res("get", "pods"), false),
        // RoleBinding read-secrets to ClusterRole secret-reader: development only.
        (
            "dave",
            &[],
            Some("development"),
            res("get", "secrets"),
            true,
        ),
        ("dave", &[], Some("default"), res("get", "secrets"), false),
        ("dave", &[], None, res("list", "secrets"), false),
        // ClusterRoleBinding read-secrets-global: managers everywhere.
        (
            "mia",
            &["manager"],
            Some("default"),
            res("get", "secrets"),
            true,
        ),
        (
            "mia",
            &["manager"],
            Some("kube-system"),
            res("watch", "secrets"),
            true,
        ),
        ("mia", &["manager"], None, res("list", "secrets"), true),
        (
            "mia",
            &["manager"],
            Some("default"),
            res("delete", "secrets"),
            false,
        ),
        (
            "mia",
            &["manager"],
            Some("default"),
            res("get", "pods"),
            false,
        ),
        // pods and pods/log, to a group and a service account in another namespace.
        (
            "fred",
            &["frontend-admins"],
            Some("default"),
            res("get", "pods/log"),
            true,
        ),
        (
            "system:serviceaccount:kube-system:default",
            &[],
            Some("default"),
            res("list", "pods"),
            true,
        ),
        (
            "system:serviceaccount:default:default",
            &[],
            Some("default"),
            res("list", "pods"),
            false,
        ),
        (
            "system:serviceaccount:kube-system:default",
            &[],
            Some("kube-system"),
            res("list", "pods"),
            false,
        ),
        // resourceNames: only my-configmap, only update and get.
        (
            "alice@example.com",
            &[],
            Some("default"),
            Action::named("update", "configmaps", "my-configmap"),
            true,
        ),
        (
            "alice@example.com",
            &[],
            Some("default"),
            Action::named("get", "configmaps", "my-configmap"),
            true,
        ),
        (
            "alice@example.com",
            &[],
            Some("default"),
            Action::named("update", "configmaps", "other"),
            false,
        ),
        (
            "alice@example.com",
            &[],
            Some("default"),
            res("list", "configmaps"),
            false,
        ),
        (
            "alice@example.com",
            &[],
            Some("default"),
            res("create", "configmaps"),
            false,
        ),
        // nonResourceURLs with a suffix glob, through a ClusterRoleBinding.
        (
            "qa-bot",
            &["system:serviceaccounts:qa"],
            None,
            Action::non_resource("get", "/healthz"),
            true,
        ),
        (
            "qa-bot",
            &["system:serviceaccounts:qa"],
            None,
            Action::non_resource("post", "/healthz/live"),
            true,
        ),
        (
            "qa-bot",
            &["system:serviceaccounts:qa"],
            None,
            Action::non_resource("delete", "/healthz"),
            false,
        ),
        (
            "qa-bot",
            &["system:serviceaccounts:qa"],
            None,
            Action::non_resource("get", "/metrics"),
            false,
        ),
        (
            "system:serviceaccount:monitoring:prometheus",
            &[],
            Some("default"),
            Action::non_resource("get", "/healthz/ready"),
            true,
        ),
        // kind: List, as kubectl writes it.
        (
            "tom",
            &["tellers"],
            Some("payments"),
            res("get", "accounts/balance"),
            true,
        ),
        (
            "tom",
            &["tellers"],
            Some("payments"),
            res("delete", "accounts"),
            false,
        ),
        (
            "tom",
            &["tellers"],
            Some("default"),
            res("get", "accounts"),
            false,
        ),
    ];
    check_rows(&compiled, rows);
}

#[test]
fn aggregated_cluster_roles_decide_as_the_aggregation_controller_fills_them() {
    let compiled = Policy::from_yaml(fixture("aggregated.yaml"))
        .unwrap()
        .compile();
    let crontabs = |verb: &str| {
        Action::Resource(finmesh::rbac::ResourceAction::new(
            verb,
            "stable.example.com",
            "crontabs",
        ))
    };
    let rows: Vec<Row> = vec![
        // monitoring = monitoring-endpoints' rules, cluster-wide.
        (
            "mo",
            &["monitors"],
            Some("default"),
            res("list", "pods"),
            true,
        ),
        ("mo", &["monitors"], None, res("watch", "services"), true),
        (
            "mo",
            &["monitors"],
            Some("a"),
            res("get", "endpointslices"),
            true,
        ),
        (
            "mo",
            &["monitors"],
            Some("default"),
            res("delete", "pods"),
            false,
        ),
        (
            "mo",
            &["monitors"],
            Some("default"),
            res("get", "secrets"),
            false,
        ),
        // edit = aggregate-to-edit: the crontabs editor, and view's rules.
        ("ed", &[], Some("development"), crontabs("delete"), true),
        ("ed", &[], Some("development"), crontabs("list"), true),
        ("ed", &[], Some("default"), crontabs("get"), false),
        // view = aggregate-to-view: read only.
        ("vic", &[], Some("development"), crontabs("list"), true),
        ("vic", &[], Some("development"), crontabs("create"), false),
        // admin ⊇ edit ⊇ view, through two levels of aggregation.
        ("ada", &[], Some("development"), crontabs("patch"), true),
        ("ada", &[], Some("development"), crontabs("watch"), true),
        ("ada", &[], Some("production"), crontabs("watch"), false),
        // matchExpressions: tier In (ops, sre), not a monitoring role.
        ("op", &["ops"], Some("x"), res("get", "configmaps"), true),
        ("op", &["ops"], Some("x"), res("list", "pods"), false),
        // An aggregated role's own (empty) rules grant nothing else.
        ("op", &["ops"], Some("x"), res("get", "secrets"), false),
    ];
    check_rows(&compiled, rows);
    // A decision names the aggregated role the binding granted.
    let d = compiled.authorize(&Attributes::new(
        "ada",
        &[],
        Some("development"),
        &crontabs("get"),
    ));
    assert!(d.to_string().contains("ClusterRole/admin"), "{d}");
}

#[test]
fn aggregation_ignores_the_roles_own_rules_and_cycles_end() {
    use finmesh::rbac::{ClusterRole, ClusterRoleBinding, LabelSelector, PolicyRule, Subject};
    // Two aggregated roles selecting each other, and a plain one feeding a.
    let mut a = ClusterRole::aggregated("a", vec![LabelSelector::labelled("to-a", "yes")]);
    a.metadata.labels.insert("to-b".into(), "yes".into());
    // Kubernetes' controller overwrites these: they grant nothing.
    a.rules = vec![PolicyRule::resources(["get"], [""], ["secrets"])];
    let mut b = ClusterRole::aggregated("b", vec![LabelSelector::labelled("to-b", "yes")]);
    b.metadata.labels.insert("to-a".into(), "yes".into());
    let mut pods = ClusterRole::new("pods", vec![PolicyRule::resources(["get"], [""], ["pods"])]);
    pods.metadata.labels.insert("to-a".into(), "yes".into());
    let policy = Policy::new()
        .with_cluster_role(a)
        .with_cluster_role(b)
        .with_cluster_role(pods)
        .with_cluster_role_binding(ClusterRoleBinding::new(
            "b-to-u",
            "b",
            vec![Subject::user("u")],
        ));
    let compiled = policy.compile();
    let allowed = |action: &Action| {
        compiled
            .authorize(&Attributes::new("u", &[], Some("ns"), action))
            .is_allowed()
    };
    // b ⊇ a ⊇ pods.
    assert!(allowed(&res("get", "pods")));
    assert!(!allowed(&res("get", "secrets")));
}

#[test]
fn each_documentation_file_loads_alone() {
    for name in DOC_FIXTURES {
        Policy::from_yaml(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rbac.yaml"))
            .unwrap();
    let policy = Policy::from_yaml(&example).unwrap();
    assert!(policy.compile().dangling_role_refs().is_empty());
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// Stands in for the JWT and tenant layers: `x-test-user`,
/// `x-test-groups` (comma-separated) and `x-test-tenant` become the
/// `Principal` and `Tenant` in the extensions.
fn identity_layer() -> MapRequestLayer<fn(axum::extract::Request) -> axum::extract::Request> {
    fn identify(mut req: axum::extract::Request) -> axum::extract::Request {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (user, groups, tenant) = (
            header("x-test-user"),
            header("x-test-groups"),
            header("x-test-tenant"),
        );
        if let Some(user) = user {
            let groups: Vec<String> = groups
                .unwrap_or_default()
                .split(',')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect();
            req.extensions_mut()
                .insert(Principal::new(user, "https://issuer.test").with_groups(groups));
        }
        if let Some(ns) = tenant.and_then(|t| TenantNamespace::parse(&t).ok()) {
            req.extensions_mut().insert(Tenant::new(ns));
        }
        req
    }
    MapRequestLayer::new(identify)
}

const ECHO_UNARY: &str = "/finmesh.test.v1.Echo/Unary";

fn mapper() -> (HttpRoutes, GrpcMethods) {
    let http = HttpRoutes::new()
        .route("/v1/accounts", "accounts")
        .route("/v1/accounts/{name}", "accounts")
        .route("/v1/accounts/{name}/balance", "accounts/balance")
        .custom_verb(
            Method::POST,
            "/v1/transfers/{name}/approve",
            "approve",
            "transfers",
        );
    // Bidi is deliberately left out: it is the unmapped gRPC method.
    let grpc = GrpcMethods::new().method(ECHO_UNARY, "get", "echoes");
    (http, grpc)
}

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
- apiGroups: [""]
  resources: ["transfers"]
  verbs: ["approve"]
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

async fn server(authorizer: Authorizer) -> TestServer {
    let app = echo_app()
        .layer(RbacLayer::new(authorizer, mapper()))
        .layer(identity_layer());
    spawn(app).await
}

fn who(
    user: &'static str,
    groups: &'static str,
    tenant: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-test-user", user),
        ("x-test-groups", groups),
        ("x-test-tenant", tenant),
    ]
}

async fn send_as(method: Method, url: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Default::default()).unwrap()).await
}

// ---------------------------------------------------------------------------
// HTTP/1.1
// ---------------------------------------------------------------------------

#[tokio::test]
async fn allowed_request_reaches_the_handler_over_http() {
    let srv = server(Authorizer::from_yaml(POLICY).unwrap()).await;
    let res = send_as(
        Method::DELETE,
        &srv.url("/v1/accounts/acc-1"),
        &who("alice", "", "tenant-a"),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    assert_eq!(res.json()["subject"], "alice");
    assert_eq!(res.json()["tenant"], "tenant-a");

    let res = send_as(
        Method::GET,
        &srv.url("/v1/accounts/acc-1/balance"),
        &who("rita", "readers", "tenant-a"),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let res = send_as(
        Method::POST,
        &srv.url("/v1/transfers/tr-1/approve"),
        &who("rita", "readers", "tenant-a"),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
}

#[tokio::test]
async fn denied_request_is_403_problem_json_with_a_kubernetes_style_detail() {
    let srv = server(Authorizer::from_yaml(POLICY).unwrap()).await;
    // A reader may not delete.
    let res = send_as(
        Method::DELETE,
        &srv.url("/v1/accounts/acc-1"),
        &who("rita", "readers", "tenant-a"),
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.header("content-type"), "application/problem+json");
    let problem = res.json();
    assert_eq!(problem["code"], "rbac.denied");
    assert_eq!(
        problem["detail"],
        "\"rita\" cannot delete resource \"accounts\" in namespace \"tenant-a\""
    );

    // alice's RoleBinding does not reach into another tenant.
    let res = send_as(
        Method::DELETE,
        &srv.url("/v1/accounts/acc-1"),
        &who("alice", "", "tenant-b"),
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(
        res.json()["detail"],
        "\"alice\" cannot delete resource \"accounts\" in namespace \"tenant-b\""
    );

    // Without a tenant, only cluster bindings could allow.
    let res = send_as(
        Method::GET,
        &srv.url("/v1/accounts"),
        &[("x-test-user", "alice")],
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(
        res.json()["detail"],
        "\"alice\" cannot list resource \"accounts\" at the cluster scope"
    );
}

#[tokio::test]
async fn unmapped_request_is_403_rbac_unmapped_over_http() {
    let srv = server(Authorizer::from_yaml(POLICY).unwrap()).await;
    let res = send_as(
        Method::GET,
        &srv.url("/v1/ledgers"),
        &who("alice", "", "tenant-a"),
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.json()["code"], "rbac.unmapped");
    // A method the table does not know is unmapped too.
    let res = send_as(
        Method::OPTIONS,
        &srv.url("/v1/accounts"),
        &who("alice", "", "tenant-a"),
    )
    .await;
    assert_eq!(res.json()["code"], "rbac.unmapped");
}

#[tokio::test]
async fn request_without_principal_is_401_auth_missing() {
    let srv = server(Authorizer::from_yaml(POLICY).unwrap()).await;
    let res = send_as(
        Method::GET,
        &srv.url("/v1/accounts"),
        &[("x-test-tenant", "tenant-a")],
    )
    .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.json()["code"], "auth.missing");
}

// ---------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------

#[tokio::test]
async fn allowed_and_denied_unary_calls_over_grpc() {
    let srv = server(Authorizer::from_yaml(POLICY).unwrap()).await;
    let mut client = grpc_client(srv.addr).await;

    let msg = || EchoRequest {
        message: "hi".into(),
        ..Default::default()
    };
    let reply = client
        .unary(grpc_request(msg(), &who("rita", "readers", "tenant-a")))
        .await
        .expect("allowed")
        .into_inner();
    assert_eq!(
        (reply.subject.as_str(), reply.tenant.as_str()),
        ("rita", "tenant-a")
    );

    let status = client
        .unary(grpc_request(msg(), &who("mallory", "", "tenant-a")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "\"mallory\" cannot get resource \"echoes\" in namespace \"tenant-a\""
    );

    let status = client
        .unary(grpc_request(msg(), &[("x-test-tenant", "tenant-a")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn unmapped_method_is_permission_denied_over_grpc() {
    let srv = server(Authorizer::from_yaml(POLICY).unwrap()).await;
    let mut client = grpc_client(srv.addr).await;
    let outbound = tokio_stream::iter(vec![EchoRequest::default()]);
    let status = client
        .bidi(grpc_request(outbound, &who("alice", "", "tenant-a")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("is not mapped"),
        "{}",
        status.message()
    );
}

// ---------------------------------------------------------------------------
// Hot reload
// ---------------------------------------------------------------------------

const DEADLINE: Duration = Duration::from_secs(10);

/// Writes `contents` next to `path` and renames it over `path`, as editors
/// and the kubelet do: a reader never sees half a file.
fn replace_file(path: &Path, contents: &str) {
    let tmp: PathBuf = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn without_alice() -> String {
    let docs: Vec<&str> = POLICY
        .split("\n---\n")
        .filter(|d| !d.contains("name: alice-admin"))
        .collect();
    assert_eq!(docs.len(), 3);
    docs.join("\n---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_binding_is_enforced_after_hot_reload_without_failing_others() {
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

    let res = send_as(Method::GET, &url, &who("alice", "", "tenant-a")).await;
    assert_eq!(res.status, StatusCode::OK);

    // Another user keeps calling throughout the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let background = {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        tokio::spawn(async move {
            let client = http_client();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url)
                    .header("x-test-user", "rita")
                    .header("x-test-groups", "readers")
                    .header("x-test-tenant", "tenant-a")
                    .body(Default::default())
                    .unwrap();
                match client.request(req).await {
                    Ok(res) if res.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    wait_for("background requests before the reload", 20, &ok).await;

    assert_eq!(authorizer.generation(), 1);
    replace_file(&path, &without_alice());
    let deadline = Instant::now() + DEADLINE;
    while authorizer.generation() < 2 {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the reload"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // alice's very next request is denied, over HTTP and gRPC.
    let res = send_as(Method::GET, &url, &who("alice", "", "tenant-a")).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.json()["code"], "rbac.denied");
    let mut client = grpc_client(srv.addr).await;
    let status = client
        .unary(grpc_request(
            EchoRequest::default(),
            &who("alice", "", "tenant-a"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    wait_for("background requests after the reload", 20, &ok).await;
    stop.store(true, Ordering::Relaxed);
    background.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a request by another user failed during the reload"
    );
    assert!(authorizer.watched().unwrap().last_error().is_none());

    // A broken version keeps the last good policy.
    replace_file(
        &path,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Rol\n",
    );
    let watched = authorizer.watched().unwrap();
    let deadline = Instant::now() + DEADLINE;
    while watched.last_error().is_none() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the failed reload"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        watched
            .last_error()
            .unwrap()
            .to_string()
            .contains("document 0: kind"),
        "{:?}",
        watched.last_error()
    );
    assert_eq!(authorizer.generation(), 2);
    let res = send_as(Method::GET, &url, &who("rita", "readers", "tenant-a")).await;
    assert_eq!(res.status, StatusCode::OK);
}

async fn wait_for(what: &str, n: u64, counter: &AtomicU64) {
    let deadline = Instant::now() + DEADLINE;
    let start = counter.load(Ordering::Relaxed);
    while counter.load(Ordering::Relaxed) < start + n {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn authorizer_is_usable_without_the_layer() {
    let authorizer = Authorizer::from_yaml(POLICY).unwrap();
    let action = Action::Resource(ResourceAction::new("delete", "", "accounts").with_name("acc-1"));
    let alice = Principal::new("alice", "iss");
    let d = authorizer.authorize(&Attributes::for_principal(
        &alice,
        Some("tenant-a"),
        &action,
    ));
    assert!(d.is_allowed());
    assert_eq!(
        d.role().map(|r| r.to_string()).as_deref(),
        Some("Role/tenant-a/account-admin")
    );
}
