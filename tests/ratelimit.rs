//! RateLimitLayer acceptance: real servers on loopback, a real HTTP/1.1
//! client and a real tonic client; local limits, a hot-reloaded policy
//! file, and Redis-shared limits (two service instances on one
//! `redis-server`, which is then killed).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use finmesh::ratelimit::{Outcome, RateLimitLayer, RateLimits};
use finmesh::{Principal, Tenant};
use http::Request;
use http_body_util::Full;
use support::*;
use tonic::Code;

/// Test-only stand-in for the JWT and tenant layers: `x-test-subject` and
/// `x-test-tenant` become a `Principal` and a `Tenant` in the extensions
/// (`x-test-issuer`: the principal's issuer).
fn identity<B>(mut req: Request<B>) -> Request<B> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (subject, tenant) = (header("x-test-subject"), header("x-test-tenant"));
    let issuer = header("x-test-issuer").unwrap_or_else(|| "https://issuer.test".into());
    if let Some(subject) = subject {
        req.extensions_mut().insert(Principal::new(subject, issuer));
    }
    if let Some(tenant) = tenant.and_then(|t| t.parse().ok()) {
        req.extensions_mut().insert(Tenant::new(tenant));
    }
    req
}

fn policy(rules: &str) -> String {
    format!(
        "apiVersion: finmesh.io/v1\nkind: RateLimitPolicy\nmetadata: {{name: test}}\nspec:\n{rules}"
    )
}

/// Transfers, over HTTP and gRPC, limited per tenant: 20 per second,
/// burst 20.
const TRANSFERS: &str = "  rules:
    - name: transfers
      match: {routes: [/v1/transfers], grpcMethods: [/finmesh.test.v1.Echo/Unary]}
      key: tenant
      limit: {requests: 20, period: 1s, burst: 20}
";

/// The echo app behind the layer; `/v1/hold` waits for `gate`.
fn app(layer: RateLimitLayer, gate: Arc<tokio::sync::Semaphore>) -> axum::Router {
    use axum::routing::post;
    http_routes()
        .route(
            "/v1/hold",
            post(move || {
                let gate = gate.clone();
                async move {
                    let _permit = gate.acquire().await;
                    "held"
                }
            }),
        )
        .merge(grpc_routes(EchoService))
        .layer(layer)
        .layer(tower::util::MapRequestLayer::new(identity))
}

fn post(server: &TestServer, path: &str, tenant: &str, subject: &str) -> Request<Full<Bytes>> {
    Request::post(server.url(path))
        .header("x-test-tenant", tenant)
        .header("x-test-subject", subject)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

/// Sends `n` requests at once; the answers in order.
async fn burst(n: usize, make: impl Fn(usize) -> Request<Full<Bytes>>) -> Vec<HttpAnswer> {
    let calls: Vec<_> = (0..n).map(|i| tokio::spawn(send(make(i)))).collect();
    let mut out = Vec::with_capacity(n);
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

fn gate() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(0))
}

fn layer(yaml: &str) -> RateLimitLayer {
    RateLimitLayer::new(RateLimits::from_yaml(policy(yaml)).unwrap())
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_transfers_from_one_tenant_is_cut_to_the_limit_while_another_tenant_is_served()
 {
    let server = spawn(app(layer(TRANSFERS), gate())).await;
    let answers = burst(100, |i| {
        post(&server, "/v1/transfers", "tenant-a", &format!("user-{i}"))
    })
    .await;
    // Another tenant, in the same second.
    let other = send(post(&server, "/v1/transfers", "tenant-b", "bob")).await;
    assert_eq!(other.status, 200, "{:?}", other.body);

    let accepted = answers.iter().filter(|a| a.status == 200).count();
    assert!((20..=30).contains(&accepted), "{accepted} accepted");
    for refused in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(refused.status, 429);
        assert_eq!(refused.json()["code"], "ratelimit.exceeded");
        assert_eq!(refused.header("content-type"), "application/problem+json");
        let retry: u64 = refused.header("retry-after").parse().unwrap();
        assert!(retry >= 1);
        assert_eq!(refused.header("ratelimit-policy"), "\"transfers\";q=20;w=1");
        assert!(
            refused
                .header("ratelimit")
                .starts_with("\"transfers\";r=0;t="),
            "{}",
            refused.header("ratelimit")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_burst_over_grpc_is_refused_with_resource_exhausted_and_retry_pushback() {
    let server = spawn(app(layer(TRANSFERS), gate())).await;
    let client = grpc_client(server.addr).await;
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let subject = format!("user-{i}");
                client
                    .unary(grpc_request(
                        EchoRequest {
                            message: "m".into(),
                            payload: vec![],
                        },
                        &[("x-test-tenant", "tenant-a"), ("x-test-subject", &subject)],
                    ))
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(
                    status.metadata().get("finmesh-code").unwrap(),
                    "ratelimit.exceeded"
                );
                let pushback: u64 = status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=1_000).contains(&pushback), "{pushback}");
            }
        }
    }
    assert!((20..=30).contains(&accepted), "{accepted} accepted");
    let mut client = client.clone();
    let other = client
        .unary(grpc_request(
            EchoRequest {
                message: "m".into(),
                payload: vec![],
            },
            &[("x-test-tenant", "tenant-b"), ("x-test-subject", "bob")],
        ))
        .await;
    assert!(other.is_ok(), "{other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_limit_queues_then_refuses_and_the_queue_drains_in_order() {
    let limits = layer(
        "  concurrency:
    levels:
      - {name: payments, maxInFlight: 2, queue: {length: 2, timeout: 30s}}
    rules:
      - {name: per-tenant, match: {routes: [/v1/hold]}, key: tenant, level: payments}
",
    );
    let stats = limits.stats();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let server = spawn(app(limits.clone(), gate.clone())).await;
    let held: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(send(post(
                &server,
                "/v1/hold",
                "tenant-a",
                &format!("u{i}"),
            )))
        })
        .collect();
    wait_for("two seated and two queued", || {
        limits.concurrency_waiting() == 2
    })
    .await;
    // Seats and queue full: refused at once, the tenant's other callers too.
    let refused = send(post(&server, "/v1/hold", "tenant-a", "u9")).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["code"], "ratelimit.concurrency_exceeded");
    assert!(!refused.header("retry-after").is_empty());
    // Another tenant has its own seats.
    let other = tokio::spawn(send(post(&server, "/v1/hold", "tenant-b", "bob")));
    gate.add_permits(5);
    assert_eq!(other.await.unwrap().status, 200);
    for call in held {
        assert_eq!(call.await.unwrap().status, 200);
    }
    assert_eq!(stats.total(Outcome::Queued), 2);
    assert_eq!(stats.total(Outcome::ConcurrencyExceeded), 1);
    assert_eq!(limits.concurrency_keys(), 0);
}

/// Opens a bidi stream for `tenant`; the sender of its messages and the
/// replies.
async fn open_bidi(
    client: &mut EchoClient<tonic::transport::Channel>,
    tenant: &str,
) -> Result<
    (
        tokio::sync::mpsc::Sender<EchoRequest>,
        tonic::Streaming<EchoReply>,
    ),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
    let replies = client
        .bidi(grpc_request(
            outbound,
            &[("x-test-tenant", tenant), ("x-test-subject", "alice")],
        ))
        .await?
        .into_inner();
    Ok((tx, replies))
}

fn message(text: &str) -> EchoRequest {
    EchoRequest {
        message: text.into(),
        payload: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_grpc_stream_holds_its_seat_until_it_ends() {
    let limits = layer(
        "  concurrency:
    levels:
      - {name: streams, maxInFlight: 1, queue: {length: 0, timeout: 1s}}
    rules:
      - {name: per-tenant, match: {grpcMethods: [/finmesh.test.v1.Echo/Bidi]}, key: tenant, level: streams}
",
    );
    let server = spawn(app(limits.clone(), gate())).await;
    let mut client = grpc_client(server.addr).await;
    let (tx, mut replies) = open_bidi(&mut client, "tenant-a").await.unwrap();
    tx.send(message("one")).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().message, "one");
    // The stream's head was sent long ago; its seat is still taken.
    assert_eq!(limits.concurrency_keys(), 1);
    let second = open_bidi(&mut client, "tenant-a").await;
    let status = second.expect_err("a second stream is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.metadata().get("finmesh-code").unwrap(),
        "ratelimit.concurrency_exceeded"
    );
    // Ending the stream frees the seat.
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
    wait_for("the seat freed", || limits.concurrency_keys() == 0).await;
    let (tx, mut replies) = open_bidi(&mut client, "tenant-a").await.unwrap();
    tx.send(message("again")).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().message, "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_is_refused_when_its_wait_times_out() {
    let limits = layer(
        "  concurrency:
    levels:
      - {name: reports, maxInFlight: 1, queue: {length: 5, timeout: 200ms}}
    rules:
      - {name: per-subject, key: subject, level: reports}
",
    );
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let server = spawn(app(limits.clone(), gate.clone())).await;
    let first = tokio::spawn(send(post(&server, "/v1/hold", "tenant-a", "alice")));
    wait_for("alice seated", || limits.concurrency_keys() == 1).await;
    let second = send(post(&server, "/v1/hold", "tenant-a", "alice")).await;
    assert_eq!(second.status, 429);
    assert_eq!(second.json()["code"], "ratelimit.concurrency_exceeded");
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_takes_effect_without_a_failed_request_and_garbage_keeps_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratelimits.yaml");
    let per_subject = |requests: u32| {
        policy(&format!(
            "  rules:\n    - name: per-subject\n      key: subject\n      limit: {{requests: {requests}, period: 1h}}\n"
        ))
    };
    std::fs::write(&path, per_subject(1_000)).unwrap();
    let limits = RateLimits::watch(&path).unwrap();
    let server = spawn(app(RateLimitLayer::new(limits.clone()), gate())).await;

    // A client keeps sending while the file changes: every answer is a
    // 200 until the new limit holds, then 429s — never anything else.
    let sent = Arc::new(AtomicUsize::new(0));
    let url = server.url("/echo");
    let client = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..2_000 {
                let req = Request::post(&url)
                    .header("x-test-tenant", "tenant-a")
                    .header("x-test-subject", "alice")
                    .body(Full::default())
                    .unwrap();
                let status = send(req).await.status.as_u16();
                sent.fetch_add(1, Ordering::Relaxed);
                statuses.push(status);
                if statuses.ends_with(&[429, 429, 429]) {
                    break;
                }
            }
            statuses
        })
    };
    wait_for("some requests", || sent.load(Ordering::Relaxed) >= 5).await;
    let edited = Instant::now();
    std::fs::write(&path, per_subject(1)).unwrap();
    let statuses = client.await.unwrap();
    let applied_after = edited.elapsed();
    let first_refused = statuses
        .iter()
        .position(|s| *s == 429)
        .expect("the new limit applied");
    assert!(
        statuses[..first_refused].iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    assert!(
        statuses[first_refused..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    eprintln!("policy edit applied after {applied_after:?} (debounce 100 ms)");

    // Garbage is refused; the last good policy (1 per hour) stays.
    std::fs::write(&path, b"apiVersion: finmesh.io/v1\nkind: [garbage").unwrap();
    assert!(limits.watched().unwrap().reload().is_err());
    assert!(limits.watched().unwrap().last_error().is_some());
    let still = send(post(&server, "/echo", "tenant-a", "alice")).await;
    assert_eq!(still.status, 429);
    assert_eq!(
        limits.current().rule_names().collect::<Vec<_>>(),
        ["per-subject"]
    );
}

/// Resident set size of this process, in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_100_000_distinct_subjects_keeps_the_key_map_within_its_bound() {
    let limits = layer(
        "  rules:\n    - name: per-subject\n      key: subject\n      limit: {requests: 1, period: 1h}\n",
    )
    .max_keys(10_000);
    let server = spawn(app(limits.clone(), gate())).await;
    let before = rss_kib();
    let url = server.url("/echo");
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = http_client();
                for i in (w..100_000).step_by(8) {
                    let req = Request::post(&url)
                        .header("x-test-tenant", "tenant-a")
                        .header("x-test-subject", format!("flood-{i}"))
                        .body(Full::default())
                        .unwrap();
                    let res = client.request(req).await.unwrap();
                    // A first request of a new subject passes, or, when its
                    // shard is full of busy keys and was scanned less than
                    // a millisecond ago, is refused (no scan per request).
                    assert!(
                        res.status() == 200 || res.status() == 429,
                        "{}",
                        res.status()
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let after = rss_kib();
    assert!(limits.local_keys() <= limits.local_key_capacity());
    assert!(limits.local_key_capacity() <= 10_048);
    eprintln!(
        "100,000 subjects: {} keys held (bound {}), RSS {before:?} KiB -> {after:?} KiB",
        limits.local_keys(),
        limits.local_key_capacity()
    );
}

mod redis {
    use super::*;
    use finmesh::ratelimit::RedisRateLimiter;
    use support::redis_server::RedisServer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_a_subject_of_another_issuer_or_tenant_has_its_own_shared_bucket() {
        let Some(redis) = RedisServer::start(
            "hostile_a_subject_of_another_issuer_or_tenant_has_its_own_shared_bucket",
        ) else {
            return;
        };
        let limiter = RedisRateLimiter::open(&redis.url())
            .unwrap()
            .timeout(Duration::from_secs(10));
        let limits = layer(
            "  rules:\n    - name: s\n      key: subject\n      limit: {requests: 1, period: 1h}\n",
        )
        .redis(limiter);
        let server = spawn(app(limits.clone(), gate())).await;
        let call = |issuer: &str, tenant: &str| {
            let mut req = post(&server, "/v1/transfers", tenant, "alice");
            req.headers_mut()
                .insert("x-test-issuer", issuer.parse().unwrap());
            send(req)
        };
        assert_eq!(call("https://bank.test", "tenant-a").await.status, 200);
        assert_eq!(call("https://bank.test", "tenant-a").await.status, 429);
        assert_eq!(call("https://evil.test", "tenant-a").await.status, 200);
        assert_eq!(call("https://bank.test", "tenant-b").await.status, 200);
        assert_eq!(limits.stats().store_errors(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_sharing_one_redis_grant_the_tenant_limit_once() {
        let Some(redis) =
            RedisServer::start("two_instances_sharing_one_redis_grant_the_tenant_limit_once")
        else {
            return;
        };
        // 20 per hour: no refill while the test runs, so exactly 20 pass.
        let yaml = TRANSFERS.replace("period: 1s", "period: 1h");
        // A generous timeout: on a loaded CI machine a round trip past the
        // default 100 ms would fail open and pass a request unlimited.
        let open = || {
            let limiter = RedisRateLimiter::open(&redis.url())
                .unwrap()
                .timeout(Duration::from_secs(10));
            layer(&yaml).redis(limiter)
        };
        let (la, lb) = (open(), open());
        let a = spawn(app(la.clone(), gate())).await;
        let b = spawn(app(lb.clone(), gate())).await;
        let answers = burst(100, |i| {
            let server = if i % 2 == 0 { &a } else { &b };
            post(server, "/v1/transfers", "tenant-a", &format!("user-{i}"))
        })
        .await;
        let accepted = answers.iter().filter(|r| r.status == 200).count();
        assert_eq!(
            accepted, 20,
            "the limit is granted once across both instances"
        );
        assert!(answers.iter().all(|r| r.status == 200 || r.status == 429));
        // Both instances answered, and refused some.
        assert!(la.stats().total(Outcome::Limited) > 0);
        assert!(lb.stats().total(Outcome::Limited) > 0);
        assert_eq!(la.stats().store_errors() + lb.stats().store_errors(), 0);
        // Another tenant is served by either.
        assert_eq!(
            send(post(&b, "/v1/transfers", "tenant-b", "bob"))
                .await
                .status,
            200
        );
        assert_eq!(
            la.local_keys() + lb.local_keys(),
            0,
            "shared limits keep no local buckets"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_stopped_mid_test_follows_each_rules_fail_mode() {
        let Some(mut redis) =
            RedisServer::start("redis_stopped_mid_test_follows_each_rules_fail_mode")
        else {
            return;
        };
        let yaml = "  rules:
    - name: open
      match: {routes: [/echo]}
      key: tenant
      limit: {requests: 100, period: 1h}
      failMode: failOpen
    - name: closed
      match: {routes: ['/v1/{any}']}
      key: tenant
      limit: {requests: 100, period: 1h}
      failMode: failClosed
";
        let limiter = RedisRateLimiter::open(&redis.url())
            .unwrap()
            .timeout(Duration::from_millis(200));
        let limits = layer(yaml).redis(limiter.clone());
        let server = spawn(app(limits.clone(), gate())).await;
        let health = finmesh::health::HealthRegistry::new();
        let watch = limiter.clone();
        health
            .add_readiness_warning("ratelimit-redis", move || watch.health_warning())
            .unwrap();
        for path in ["/echo", "/v1/pay"] {
            assert_eq!(
                send(post(&server, path, "tenant-a", "alice")).await.status,
                200
            );
        }
        assert!(limiter.health_warning().is_none());

        redis.stop();
        let open = send(post(&server, "/echo", "tenant-a", "alice")).await;
        assert_eq!(open.status, 200, "failOpen lets the request through");
        let closed = send(post(&server, "/v1/pay", "tenant-a", "alice")).await;
        assert_eq!(closed.status, 503, "{:?}", closed.body);
        assert_eq!(closed.json()["code"], "ratelimit.store_unavailable");
        let stats = limits.stats();
        assert_eq!(stats.total(Outcome::FailedOpen), 1);
        assert_eq!(stats.total(Outcome::FailedClosed), 1);
        assert!(stats.store_errors() >= 2);
        assert!(limiter.store_errors() >= 2);
        assert!(limiter.health_warning().is_some());
        // Readiness warns, and stays ready.
        let report = health.readiness().await;
        assert!(report.is_healthy());
        assert_eq!(report.warnings, [std::sync::Arc::from("ratelimit-redis")]);
        // Never a silent fallback to local limits.
        assert_eq!(limits.local_keys(), 0);
    }
}
