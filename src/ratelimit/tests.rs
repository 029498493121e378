//! Policy loading and the layer's decisions, driven with `oneshot`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};

use super::*;
use crate::rbac::Action;
use crate::{Principal, Tenant, TenantNamespace};

fn policy(rules: &str) -> String {
    format!(
        "apiVersion: finmesh.io/v1\nkind: RateLimitPolicy\nmetadata: {{name: t}}\nspec:\n{rules}"
    )
}

#[test]
fn invalid_policies_name_the_field() {
    let rule = |extra: &str| {
        policy(&format!(
            "  rules:\n    - name: r\n      key: tenant\n      limit: {{requests: 1, period: 1s}}\n{extra}"
        ))
    };
    let cases: Vec<(String, &str)> = vec![
        (
            policy("  rules: []").replace("finmesh.io/v1", "v1"),
            "apiVersion",
        ),
        (
            policy("  rules: []").replace("RateLimitPolicy", "Policy"),
            "kind",
        ),
        (policy("  rulez: []"), "spec.rulez"),
        (rule("      extra: 1"), "spec.rules[0].extra"),
        (
            rule("      failMode: failSometimes"),
            "spec.rules[0].failMode",
        ),
        (
            policy(
                "  rules:\n    - name: r\n      key: ip\n      limit: {requests: 1, period: 1s}",
            ),
            "spec.rules[0].key",
        ),
        (
            policy(
                "  rules:\n    - name: r\n      key: tenant\n      limit: {requests: 0, period: 1s}",
            ),
            "spec.rules[0].limit.requests",
        ),
        (
            policy(
                "  rules:\n    - name: r\n      key: tenant\n      limit: {requests: 1, period: 0s}",
            ),
            "spec.rules[0].limit.period",
        ),
        (
            policy(
                "  rules:\n    - name: r\n      key: tenant\n      limit: {requests: 1, period: 2d}",
            ),
            "spec.rules[0].limit.period",
        ),
        (
            policy(
                "  rules:\n    - name: r\n      key: tenant\n      limit: {requests: 1, period: 1s, burst: 0}",
            ),
            "spec.rules[0].limit.burst",
        ),
        (
            policy(
                "  rules:\n    - name: R\n      key: tenant\n      limit: {requests: 1, period: 1s}",
            ),
            "spec.rules[0].name",
        ),
        (
            rule("    - name: r\n      key: subject\n      limit: {requests: 1, period: 1s}"),
            "spec.rules[1].name",
        ),
        (
            rule("      match: {tenants: [Bad_Tenant]}"),
            "spec.rules[0].match.tenants[0]",
        ),
        (
            rule("      match: {riskLevels: [extreme]}"),
            "spec.rules[0].match.riskLevels[0]",
        ),
        (
            rule("      match: {routes: [no-slash]}"),
            "spec.rules[0].match.routes[0]",
        ),
        (
            rule("      match: {verbs: !!str create}"),
            "spec.rules[0].match.verbs",
        ),
        (
            policy(
                "  concurrency:\n    levels: [{name: a, maxInFlight: 1, queue: {length: 1, timeout: 1s}}]\n    rules: [{name: c, key: tenant, level: b}]",
            ),
            "spec.concurrency.rules[0].level",
        ),
        (
            policy(
                "  concurrency:\n    levels: [{name: a, maxInFlight: 0, queue: {length: 1, timeout: 1s}}]",
            ),
            "spec.concurrency.levels[0].maxInFlight",
        ),
        (
            policy(
                "  concurrency:\n    levels: [{name: a, maxInFlight: 1, queue: {length: 1, timeout: 2m}}]",
            ),
            "spec.concurrency.levels[0].queue.timeout",
        ),
        ("a: [unclosed".to_owned(), ""),
        ("".to_owned(), ""),
    ];
    for (yaml, field) in cases {
        let err = RateLimitPolicy::from_yaml(&yaml).expect_err(&yaml);
        assert_eq!(err.field(), field, "{yaml}\n=> {err}");
    }
    let big = vec![b' '; MAX_POLICY_BYTES + 1];
    assert!(RateLimitPolicy::from_yaml(&big).is_err());
    // Garbage never panics.
    for bytes in [
        &b"\xff\xfe"[..],
        b"- - - -",
        b"{spec: {rules: [[[]]]}}",
        b"~",
    ] {
        assert!(RateLimitPolicy::from_yaml(bytes).is_err());
    }
}

#[test]
fn the_demo_policy_loads() {
    let demo = RateLimitPolicy::from_yaml(include_str!(
        "../../examples/gateway/config/ratelimits.yaml"
    ))
    .unwrap();
    assert_eq!(
        demo.rule_names().collect::<Vec<_>>(),
        ["tenant-a-transfers", "per-subject"]
    );
}

type Svc = tower::util::BoxCloneService<
    Request<Full<Bytes>>,
    Response<crate::ResponseBody<Full<Bytes>>>,
    Infallible,
>;

fn service(layer: RateLimitLayer, delay: Duration) -> Svc {
    tower::util::BoxCloneService::new(ServiceBuilder::new().layer(layer).service_fn(
        move |_: Request<Full<Bytes>>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
        },
    ))
}

fn request(tenant: &str, user: &str, grpc: bool) -> Request<Full<Bytes>> {
    let mut req = Request::post("/v1/transfer");
    if grpc {
        req = req.header("content-type", "application/grpc");
    }
    let mut req = req.body(Full::default()).unwrap();
    req.extensions_mut()
        .insert(Principal::new(user, "https://issuer.example"));
    req.extensions_mut()
        .insert(Tenant::new(TenantNamespace::parse(tenant).unwrap()));
    req.extensions_mut()
        .insert(Action::resource("create", "transfers"));
    req
}

const TRANSFERS: &str = "  rules:
    - name: transfers
      match: {verbs: [create], resources: [transfers], tenants: [tenant-a, tenant-b]}
      key: tenant
      limit: {requests: 5, period: 1h}
";

#[tokio::test]
async fn a_tenant_burst_is_cut_at_its_limit_and_other_tenants_are_not() {
    let layer = RateLimitLayer::new(RateLimits::from_yaml(policy(TRANSFERS)).unwrap())
        .response_headers(true);
    let stats = layer.stats();
    let svc = service(layer, Duration::ZERO);
    for i in 0..5 {
        let res = svc
            .clone()
            .oneshot(request("tenant-a", "alice", false))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "request {i}");
        assert_eq!(
            res.headers()["ratelimit"],
            format!("\"transfers\";r={};t={}", 4 - i, (i + 1) * 720).as_str()
        );
        assert_eq!(
            res.headers()["ratelimit-policy"],
            "\"transfers\";q=5;w=3600"
        );
    }
    let res = svc
        .clone()
        .oneshot(request("tenant-a", "bob", false))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "720");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    // The same refusal, the gRPC way.
    let res = svc
        .clone()
        .oneshot(request("tenant-a", "bob", true))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "8");
    assert_eq!(res.headers()["finmesh-code"], "ratelimit.exceeded");
    let pushback: u64 = res.headers()["grpc-retry-pushback-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=720_000).contains(&pushback), "{pushback}");
    // tenant-b has its own bucket; tenant-c matches no rule.
    for tenant in [
        "tenant-b", "tenant-c", "tenant-c", "tenant-c", "tenant-c", "tenant-c", "tenant-c",
    ] {
        let res = svc
            .clone()
            .oneshot(request(tenant, "carol", false))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{tenant}");
    }
    assert_eq!(stats.total(Outcome::Limited), 2);
    assert_eq!(stats.total(Outcome::Allowed), 6);
    let series = stats.series();
    assert!(
        series
            .iter()
            .any(|s| s.tenant == "tenant-a" && s.outcome == Outcome::Limited && s.count == 2)
    );
}

#[tokio::test]
async fn requests_without_a_verified_identity_are_not_keyed_and_create_no_state() {
    let layer = RateLimitLayer::new(
        RateLimits::from_yaml(policy(
            "  rules:\n    - name: s\n      key: subject\n      limit: {requests: 1, period: 1h}\n",
        ))
        .unwrap(),
    );
    let svc = service(layer.clone(), Duration::ZERO);
    for _ in 0..3 {
        // A header saying who the caller is counts for nothing.
        let req = Request::post("/v1/transfer")
            .header("x-subject", "alice")
            .body(Full::default())
            .unwrap();
        assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 200);
    }
    assert_eq!(layer.local_keys(), 0);
}

#[tokio::test]
async fn an_edited_limit_applies_to_the_next_request_with_fresh_buckets() {
    let limits = RateLimits::from_yaml(policy(TRANSFERS)).unwrap();
    let svc = service(RateLimitLayer::new(limits.clone()), Duration::ZERO);
    for _ in 0..5 {
        let res = svc
            .clone()
            .oneshot(request("tenant-a", "alice", false))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = svc
        .clone()
        .oneshot(request("tenant-a", "alice", false))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let raised = TRANSFERS.replace("requests: 5", "requests: 10");
    assert!(limits.replace(RateLimitPolicy::from_yaml(policy(&raised)).unwrap()));
    for _ in 0..10 {
        let res = svc
            .clone()
            .oneshot(request("tenant-a", "alice", false))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = svc
        .clone()
        .oneshot(request("tenant-a", "alice", false))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
}

#[tokio::test]
async fn in_flight_limit_queues_then_refuses() {
    let yaml = policy(
        "  concurrency:
    levels:
      - {name: payments, maxInFlight: 2, queue: {length: 2, timeout: 10s}}
    rules:
      - {name: per-tenant, key: tenant, level: payments}
",
    );
    let layer = RateLimitLayer::new(RateLimits::from_yaml(yaml).unwrap());
    let stats = layer.stats();
    let svc = service(layer.clone(), Duration::from_millis(300));
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot(request("tenant-a", "alice", false))))
        .collect();
    let other = svc
        .clone()
        .oneshot(request("tenant-b", "bob", false))
        .await
        .unwrap();
    assert_eq!(other.status(), 200, "another tenant has its own seats");
    // Its body holds its seat until it is dropped.
    drop(other);
    let mut codes = Vec::new();
    for call in calls {
        codes.push(call.await.unwrap().unwrap().status().as_u16());
    }
    codes.sort();
    // Two seats, two queue places: the fifth is refused at once.
    assert_eq!(codes, [200, 200, 200, 200, 429]);
    assert_eq!(stats.total(Outcome::Queued), 2);
    assert_eq!(stats.total(Outcome::ConcurrencyExceeded), 1);
    assert_eq!(layer.concurrency_keys(), 0, "idle gates are removed");
}

#[tokio::test]
async fn hostile_the_same_subject_from_two_issuers_or_tenants_has_two_buckets() {
    let layer = RateLimitLayer::new(
        RateLimits::from_yaml(policy(
            "  rules:\n    - name: s\n      key: subject\n      limit: {requests: 1, period: 1h}\n",
        ))
        .unwrap(),
    );
    let svc = service(layer.clone(), Duration::ZERO);
    let from = |issuer: &str, tenant: &str| {
        let mut req = request(tenant, "alice", false);
        req.extensions_mut().insert(Principal::new("alice", issuer));
        req
    };
    let status = |req| {
        let svc = svc.clone();
        async move { svc.oneshot(req).await.unwrap().status() }
    };
    assert_eq!(status(from("https://bank.example", "tenant-a")).await, 200);
    assert_eq!(status(from("https://bank.example", "tenant-a")).await, 429);
    // Another issuer's "alice" is somebody else.
    assert_eq!(status(from("https://evil.example", "tenant-a")).await, 200);
    // And the same alice in another tenant spends that tenant's share.
    assert_eq!(status(from("https://bank.example", "tenant-b")).await, 200);
    assert_eq!(layer.local_keys(), 3);
}
