//! IdempotencyLayer acceptance: real servers on loopback, a real HTTP/1.1
//! client and a real tonic client; the in-memory store, and Redis stores
//! (several service instances sharing one `redis-server`).
#![cfg(feature = "idempotency")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Request as AxumRequest;
use axum::response::IntoResponse;
use bytes::Bytes;
use finmesh::idempotency::{IdempotencyLayer, IdempotencyStore, InMemoryStore};
use finmesh::{Principal, Tenant};
use http::{HeaderName, Request};
use http_body_util::{BodyExt, Full};
use support::*;
use tonic::{Code, Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

const UNARY: &str = "/finmesh.test.v1.Echo/Unary";

/// Test-only stand-in for the JWT and tenant layers: `x-test-subject` and
/// `x-test-tenant` become a `Principal` and a `Tenant` in the extensions.
fn identity<B>(mut req: Request<B>) -> Request<B> {
    let subject = req
        .headers()
        .get("x-test-subject")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(subject) = subject {
        req.extensions_mut()
            .insert(Principal::new(subject, "https://issuer.test"));
    }
    let tenant = req
        .headers()
        .get("x-test-tenant")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let Some(tenant) = tenant {
        req.extensions_mut().insert(Tenant::new(tenant));
    }
    req
}

/// Counts handler executions, HTTP and gRPC alike; `gate` holds the gRPC
/// `slow` call until the test opens it.
#[derive(Clone, Default)]
struct Counter {
    n: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::Notify>,
}

impl Counter {
    fn get(&self) -> usize {
        self.n.load(Ordering::SeqCst)
    }
    fn bump(&self) -> usize {
        self.n.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// `POST /v1/transfers`: counts, waits `x-delay-ms`, answers 201 with a
/// JSON body naming the execution (so a replay is distinguishable from a
/// second run) and an `x-payment-id` header.
/// `POST /v1/hang`: the first execution never finishes.
fn app(store: impl IdempotencyStore, counter: Counter, claim_ttl: Duration) -> axum::Router {
    use axum::routing::post;
    let c1 = counter.clone();
    let c2 = counter.clone();
    let routes = axum::Router::new()
        .route(
            "/v1/transfers",
            post(move |req: AxumRequest| transfer(c1.clone(), req)),
        )
        .route(
            "/v1/hang",
            post(move || {
                let c = c2.clone();
                async move {
                    if c.bump() == 1 {
                        std::future::pending::<()>().await;
                    }
                    "done"
                }
            }),
        )
        .merge(grpc_routes(CountingEcho(counter)));
    routes
        .layer(
            IdempotencyLayer::new(store)
                .grpc_method(UNARY)
                .claim_ttl(claim_ttl)
                .store_header(HeaderName::from_static("x-payment-id")),
        )
        .layer(tower::util::MapRequestLayer::new(identity))
}

async fn transfer(counter: Counter, req: AxumRequest) -> impl IntoResponse {
    let delay = req
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // `x-status`: the status to answer with (default 201).
    let status = req
        .headers()
        .get("x-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|v| http::StatusCode::from_u16(v).ok())
        .unwrap_or(http::StatusCode::CREATED);
    let subject = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject.to_string());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let n = counter.bump();
    tokio::time::sleep(Duration::from_millis(delay)).await;
    (
        status,
        [
            ("x-payment-id", format!("pay-{n}")),
            ("x-not-stored", "1".into()),
        ],
        axum::Json(serde_json::json!({
            "execution": n,
            "subject": subject,
            "request": String::from_utf8_lossy(&body),
        })),
    )
}

#[derive(Clone)]
struct CountingEcho(Counter);

#[tonic::async_trait]
impl Echo for CountingEcho {
    async fn unary(
        &self,
        req: GrpcRequest<EchoRequest>,
    ) -> Result<GrpcResponse<EchoReply>, Status> {
        let n = self.0.bump() as u64;
        let msg = req.into_inner();
        if msg.message == "slow" {
            self.0.gate.notified().await;
        }
        Ok(GrpcResponse::new(EchoReply {
            message: msg.message,
            payload: msg.payload,
            subject: String::new(),
            tenant: String::new(),
            seq: n,
        }))
    }

    type BidiStream = <EchoService as Echo>::BidiStream;

    async fn bidi(
        &self,
        req: GrpcRequest<Streaming<EchoRequest>>,
    ) -> Result<GrpcResponse<Self::BidiStream>, Status> {
        EchoService.bidi(req).await
    }
}

fn post(
    server: &TestServer,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut b = Request::post(server.url(path)).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

const MINUTE: Duration = Duration::from_secs(60);

/// Sends 100 requests with one key at once, spread over `servers`, and
/// checks: one execution, one first answer, the rest 409 or replays of it.
async fn hundred_concurrent_requests_run_once(servers: &[&TestServer], counter: &Counter) {
    let mut tasks = Vec::new();
    for i in 0..100 {
        let req = post(
            servers[i % servers.len()],
            "/v1/transfers",
            r#"{"amount":100}"#,
            &[
                ("idempotency-key", "\"tx-100\""),
                ("x-test-subject", "alice"),
                ("x-delay-ms", "200"),
            ],
        );
        tasks.push(tokio::spawn(send(req)));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(counter.get(), 1, "exactly one handler execution");
    let firsts: Vec<_> = answers
        .iter()
        .filter(|a| a.status == 201 && a.header("idempotency-replayed").is_empty())
        .collect();
    assert_eq!(firsts.len(), 1, "exactly one first answer");
    let first = firsts[0];
    let mut conflicts = 0;
    let mut replays = 0;
    for a in &answers {
        match a.status.as_u16() {
            409 => {
                assert_eq!(a.json()["code"], "idempotency.in_flight");
                conflicts += 1;
            }
            201 if a.header("idempotency-replayed") == "true" => {
                assert_eq!(a.body, first.body);
                replays += 1;
            }
            201 => {}
            other => panic!("unexpected status {other}: {:?}", a.body),
        }
    }
    assert_eq!(conflicts + replays, 99);

    // A retry after completion replays the stored response, byte for byte.
    let retry = send(post(
        servers[servers.len() - 1],
        "/v1/transfers",
        r#"{"amount":100}"#,
        &[("idempotency-key", "tx-100"), ("x-test-subject", "alice")],
    ))
    .await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.header("idempotency-replayed"), "true");
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("content-type"), first.header("content-type"));
    assert_eq!(retry.header("x-payment-id"), "pay-1");
    assert_eq!(
        retry.header("x-not-stored"),
        "",
        "only selected headers are stored"
    );
    assert_eq!(first.json()["execution"], 1);
    assert_eq!(counter.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_hundred_concurrent_requests_with_one_key_execute_once() {
    let store = InMemoryStore::new();
    let counter = Counter::default();
    let server = spawn(app(store.clone(), counter.clone(), MINUTE)).await;
    hundred_concurrent_requests_run_once(&[&server], &counter).await;
    assert_eq!(store.len(), 1, "one stored response");
}

#[tokio::test]
async fn replay_is_byte_identical_and_marked_and_a_changed_body_is_refused() {
    let counter = Counter::default();
    let server = spawn(app(InMemoryStore::new(), counter.clone(), MINUTE)).await;
    let h = &[("idempotency-key", "k-1"), ("x-test-subject", "alice")];
    let first = send(post(&server, "/v1/transfers", r#"{"amount":5}"#, h)).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotency-replayed"), "");
    let again = send(post(&server, "/v1/transfers", r#"{"amount":5}"#, h)).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotency-replayed"), "true");
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("x-payment-id"), first.header("x-payment-id"));

    let changed = send(post(&server, "/v1/transfers", r#"{"amount":6}"#, h)).await;
    assert_eq!(changed.status, 422);
    assert_eq!(changed.json()["code"], "idempotency.key_reused");
    // Another path with the same key is another request too.
    let other_path = send(post(
        &server,
        "/v1/transfers?dry_run=1",
        r#"{"amount":5}"#,
        h,
    ))
    .await;
    assert_eq!(other_path.status, 422);
    assert_eq!(counter.get(), 1);
}

#[tokio::test]
async fn completed_responses_are_replayed_whatever_their_status() {
    let counter = Counter::default();
    let server = spawn(app(InMemoryStore::new(), counter.clone(), MINUTE)).await;
    // As Stripe does: a declined payment (4xx) or a failure (5xx) that the
    // handler completed is the answer to that key, not an invitation to
    // pay again.
    for (i, status) in ["402", "409", "500", "503"].into_iter().enumerate() {
        let key = format!("status-{status}");
        let h = &[
            ("idempotency-key", key.as_str()),
            ("x-test-subject", "alice"),
            ("x-status", status),
        ];
        let first = send(post(&server, "/v1/transfers", "{}", h)).await;
        assert_eq!(first.status.as_str(), status);
        let again = send(post(&server, "/v1/transfers", "{}", h)).await;
        assert_eq!(again.status.as_str(), status);
        assert_eq!(again.header("idempotency-replayed"), "true", "{status}");
        assert_eq!(again.body, first.body);
        assert_eq!(counter.get(), i + 1, "{status} ran once");
    }
}

#[tokio::test]
async fn missing_malformed_or_repeated_keys_are_refused_with_400() {
    let counter = Counter::default();
    let server = spawn(app(InMemoryStore::new(), counter.clone(), MINUTE)).await;
    let missing = send(post(&server, "/v1/transfers", "{}", &[])).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["code"], "idempotency.key_missing");
    for bad in ["\"unterminated", "\"a b\"", "a,b", "\"a\\n\""] {
        let res = send(post(
            &server,
            "/v1/transfers",
            "{}",
            &[("idempotency-key", bad)],
        ))
        .await;
        assert_eq!(res.status, 400, "{bad:?}");
        assert_eq!(res.json()["code"], "idempotency.key_invalid", "{bad:?}");
    }
    let too_long = "k".repeat(256);
    let res = send(post(
        &server,
        "/v1/transfers",
        "{}",
        &[("idempotency-key", &too_long)],
    ))
    .await;
    assert_eq!(res.json()["code"], "idempotency.key_invalid");
    let twice = send(post(
        &server,
        "/v1/transfers",
        "{}",
        &[("idempotency-key", "a"), ("idempotency-key", "a")],
    ))
    .await;
    assert_eq!(twice.status, 400);
    assert_eq!(twice.json()["code"], "idempotency.key_invalid");
    assert_eq!(counter.get(), 0);
    // GET is not governed: no key needed.
    assert_eq!(get(&server.url("/v1/transfers"), &[]).await.status, 405);
}

#[tokio::test]
async fn the_key_of_one_subject_is_invisible_to_another() {
    let counter = Counter::default();
    let server = spawn(app(InMemoryStore::new(), counter.clone(), MINUTE)).await;
    let body = r#"{"amount":1}"#;
    let as_ = |who: &'static str| [("idempotency-key", "shared-key"), ("x-test-subject", who)];
    let alice = send(post(&server, "/v1/transfers", body, &as_("alice"))).await;
    assert_eq!(alice.json()["subject"], "alice");
    // Bob, same key and body: his own execution, not Alice's response.
    let bob = send(post(&server, "/v1/transfers", body, &as_("bob"))).await;
    assert_eq!(bob.status, 201);
    assert_eq!(bob.header("idempotency-replayed"), "");
    assert_eq!(bob.json()["subject"], "bob");
    // Bob, same key, another body: not a reuse of Alice's key.
    let bob2 = send(post(&server, "/v1/transfers", "{}", &as_("bob"))).await;
    assert_eq!(
        bob2.json()["code"],
        "idempotency.key_reused",
        "reuse of bob's own key"
    );
    // An anonymous caller does not see either.
    let anon = send(post(
        &server,
        "/v1/transfers",
        body,
        &[("idempotency-key", "shared-key")],
    ))
    .await;
    assert_eq!(anon.header("idempotency-replayed"), "");
    assert_eq!(anon.json()["subject"], serde_json::Value::Null);
    // Alice in another tenant is another scope.
    let other_tenant = send(post(
        &server,
        "/v1/transfers",
        body,
        &[
            ("idempotency-key", "shared-key"),
            ("x-test-subject", "alice"),
            ("x-test-tenant", "globex"),
        ],
    ))
    .await;
    assert_eq!(other_tenant.header("idempotency-replayed"), "");
    // Alice herself still gets her replay.
    let alice_again = send(post(&server, "/v1/transfers", body, &as_("alice"))).await;
    assert_eq!(alice_again.header("idempotency-replayed"), "true");
    assert_eq!(alice_again.body, alice.body);
    assert_eq!(counter.get(), 4);
}

#[tokio::test]
async fn an_expired_in_flight_claim_frees_the_key() {
    let counter = Counter::default();
    let claim_ttl = Duration::from_secs(1);
    let server = spawn(app(InMemoryStore::new(), counter.clone(), claim_ttl)).await;
    let h = &[("idempotency-key", "hang-1"), ("x-test-subject", "alice")];
    // The first request never finishes (a crashed replica, as far as the
    // store can tell). Its claim is made after `sent`.
    let sent = std::time::Instant::now();
    let stuck = tokio::spawn(send(post(&server, "/v1/hang", "{}", h)));
    while counter.get() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dup = send(post(&server, "/v1/hang", "{}", h)).await;
    // While the claim is surely alive, a duplicate is refused. (Only a
    // machine stalled for a whole TTL could see the claim expire first;
    // then the duplicate ran and the retry below is its replay.)
    let claim_alive = sent.elapsed() < claim_ttl;
    if claim_alive {
        assert_eq!(dup.status, 409, "{:?}", dup.body);
        assert_eq!(dup.json()["code"], "idempotency.in_flight");
    }
    // Past the claim TTL, the key is free again and the handler runs.
    tokio::time::sleep(claim_ttl + Duration::from_millis(100)).await;
    let retry = send(post(&server, "/v1/hang", "{}", h)).await;
    assert_eq!(retry.status, 200);
    assert_eq!(&retry.body[..], b"done");
    assert_eq!(counter.get(), 2);
    stuck.abort();
}

#[tokio::test]
async fn a_request_body_over_the_limit_is_refused_with_413() {
    let counter = Counter::default();
    let server = spawn(app(InMemoryStore::new(), counter.clone(), MINUTE)).await;
    let big = "x".repeat(1024 * 1024 + 1);
    let res = send(post(
        &server,
        "/v1/transfers",
        &big,
        &[("idempotency-key", "big")],
    ))
    .await;
    assert_eq!(res.status, 413);
    assert_eq!(res.json()["code"], "idempotency.payload_too_large");
    assert_eq!(counter.get(), 0);
}

#[tokio::test]
async fn a_unary_grpc_call_is_replayed() {
    let counter = Counter::default();
    let server = spawn(app(InMemoryStore::new(), counter.clone(), MINUTE)).await;
    let mut client = grpc_client(server.addr).await;
    let msg = || EchoRequest {
        message: "pay".into(),
        payload: vec![1, 2, 3],
    };
    let first = client
        .unary(grpc_request(
            msg(),
            &[("idempotency-key", "g-1"), ("x-test-subject", "alice")],
        ))
        .await
        .unwrap();
    assert!(first.metadata().get("idempotency-replayed").is_none());
    let again = client
        .unary(grpc_request(
            msg(),
            &[("idempotency-key", "g-1"), ("x-test-subject", "alice")],
        ))
        .await
        .unwrap();
    assert_eq!(
        again.metadata().get("idempotency-replayed").unwrap(),
        "true"
    );
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(counter.get(), 1);

    // Another message with the same key: FAILED_PRECONDITION.
    let other = EchoRequest {
        message: "pay more".into(),
        payload: vec![],
    };
    let err = client
        .unary(grpc_request(
            other,
            &[("idempotency-key", "g-1"), ("x-test-subject", "alice")],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // No key: INVALID_ARGUMENT; the handler does not run.
    let err = client.unary(grpc_request(msg(), &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(counter.get(), 1);

    // A duplicate while the first is in flight: ABORTED.
    let slow = || EchoRequest {
        message: "slow".into(),
        payload: vec![],
    };
    let mut c2 = client.clone();
    let first = tokio::spawn(async move {
        c2.unary(grpc_request(slow(), &[("idempotency-key", "g-2")]))
            .await
    });
    while counter.get() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = client
        .unary(grpc_request(slow(), &[("idempotency-key", "g-2")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    counter.gate.notify_one();
    assert!(first.await.unwrap().is_ok());

    // Streaming calls are not governed: they pass through without a key.
    let out = tokio_stream::iter(vec![msg()]);
    let mut replies = client.bidi(out).await.unwrap().into_inner();
    assert!(replies.message().await.unwrap().is_some());
}

#[tokio::test]
async fn a_tenant_flooding_unique_keys_gets_quota_exceeded_while_another_tenant_carries_on() {
    // Finding 2 of issue 14: one tenant must not be able to fill the
    // store for everyone. Room for about 8 stored transfers per tenant.
    let store = InMemoryStore::new()
        .max_bytes(1 << 20)
        .tenant_max_bytes(8 * 512);
    let counter = Counter::default();
    let server = spawn(app(store.clone(), counter.clone(), MINUTE)).await;
    let transfer = |tenant: &str, key: &str| {
        post(
            &server,
            "/v1/transfers",
            r#"{"amount":1}"#,
            &[
                ("idempotency-key", key),
                ("x-test-subject", "mallory"),
                ("x-test-tenant", tenant),
            ],
        )
    };
    let mut refused = None;
    for i in 0..100 {
        let res = send(transfer("acme", &format!("flood-{i}"))).await;
        if res.status == 201 {
            continue;
        }
        assert_eq!(res.status, 429, "{:?}", res.body);
        assert_eq!(res.header("content-type"), "application/problem+json");
        assert_eq!(res.json()["code"], "idempotency.quota_exceeded");
        refused = Some(i);
        break;
    }
    let refused = refused.expect("the flood is refused once over its share");
    assert!(refused >= 4, "the share holds a few transfers ({refused})");
    let executions = counter.get();
    assert_eq!(executions, refused, "refused requests never run");
    // Still refused: the flooding tenant's share is used up...
    let res = send(transfer("acme", "flood-more")).await;
    assert_eq!(res.json()["code"], "idempotency.quota_exceeded");
    // ...over gRPC too, with the code in the metadata.
    let mut client = grpc_client(server.addr).await;
    let err = client
        .unary(grpc_request(
            EchoRequest {
                message: "pay".into(),
                payload: vec![],
            },
            &[("idempotency-key", "flood-grpc"), ("x-test-tenant", "acme")],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.metadata().get("finmesh-code").unwrap(),
        "idempotency.quota_exceeded"
    );
    // ...but its completed transfers still replay.
    let replay = send(transfer("acme", "flood-0")).await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.header("idempotency-replayed"), "true");
    // Another tenant is unaffected, over HTTP and gRPC.
    for i in 0..4 {
        let res = send(transfer("globex", &format!("own-{i}"))).await;
        assert_eq!(res.status, 201, "{:?}", res.body);
    }
    let ok = client
        .unary(grpc_request(
            EchoRequest {
                message: "pay".into(),
                payload: vec![],
            },
            &[("idempotency-key", "g-1"), ("x-test-tenant", "globex")],
        ))
        .await
        .unwrap();
    assert!(ok.metadata().get("idempotency-replayed").is_none());
    assert_eq!(counter.get(), executions + 5);
    assert!(store.tenant_bytes_used(Some(&"acme".parse().unwrap())) <= 8 * 512);
}

/// A store whose completion takes `delay`: a slow or reconnecting Redis.
/// `completing` counts completions that have started.
#[derive(Clone)]
struct SlowCompletion {
    inner: InMemoryStore,
    delay: Duration,
    completing: Arc<AtomicUsize>,
}

impl IdempotencyStore for SlowCompletion {
    fn claim<'a>(
        &'a self,
        key: &'a finmesh::idempotency::StoreKey,
        fingerprint: finmesh::idempotency::Fingerprint,
        ttl: Duration,
    ) -> finmesh::idempotency::StoreFuture<'a, finmesh::idempotency::Claim> {
        self.inner.claim(key, fingerprint, ttl)
    }

    fn complete<'a>(
        &'a self,
        key: &'a finmesh::idempotency::StoreKey,
        token: finmesh::idempotency::ClaimToken,
        record: finmesh::idempotency::Completed,
        retention: Duration,
    ) -> finmesh::idempotency::StoreFuture<'a, bool> {
        Box::pin(async move {
            self.completing.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.inner.complete(key, token, record, retention).await
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a finmesh::idempotency::StoreKey,
        token: finmesh::idempotency::ClaimToken,
    ) -> finmesh::idempotency::StoreFuture<'a, ()> {
        self.inner.release(key, token)
    }
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

#[tokio::test]
async fn a_client_that_cancels_while_the_response_is_stored_gets_a_replay_on_retry() {
    // Finding 6 of issue 14: the handler answered, the store is slow to
    // take the response, and the client resets the stream meanwhile. The
    // claim must survive and the response must be stored, so that the
    // retry replays instead of paying twice.
    let counter = Counter::default();
    let store = SlowCompletion {
        inner: InMemoryStore::new(),
        delay: Duration::from_millis(400),
        completing: Arc::default(),
    };
    let server = spawn(app(store.clone(), counter.clone(), MINUTE)).await;

    // gRPC (tonic): dropping the call resets the HTTP/2 stream.
    let mut client = grpc_client(server.addr).await;
    let msg = || EchoRequest {
        message: "pay".into(),
        payload: vec![7; 16],
    };
    let mut c = client.clone();
    let call = tokio::spawn(async move {
        c.unary(grpc_request(msg(), &[("idempotency-key", "cancel-g")]))
            .await
    });
    wait_for("the gRPC completion to start", || {
        store.completing.load(Ordering::SeqCst) == 1
    })
    .await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let retry = client
        .unary(grpc_request(msg(), &[("idempotency-key", "cancel-g")]))
        .await
        .expect("the retry is answered");
    assert_eq!(
        retry.metadata().get("idempotency-replayed").unwrap(),
        "true",
        "the retry replays the stored response"
    );
    assert_eq!(retry.into_inner().seq, 1);
    assert_eq!(counter.get(), 1, "the handler ran once");

    // h2c (hyper-util): dropping the request future resets the stream too.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let h = &[("idempotency-key", "cancel-h"), ("x-test-subject", "alice")];
    let first = tokio::spawn({
        let h2 = h2.clone();
        let req = post(&server, "/v1/transfers", r#"{"amount":3}"#, h);
        async move { h2.request(req).await }
    });
    wait_for("the h2c completion to start", || {
        store.completing.load(Ordering::SeqCst) == 2
    })
    .await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let retry = h2
        .request(post(&server, "/v1/transfers", r#"{"amount":3}"#, h))
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotency-replayed"], "true");
    assert_eq!(retry.headers()["x-payment-id"], "pay-2");
    assert_eq!(counter.get(), 2, "each key's handler ran once");
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use finmesh::idempotency::RedisStore;
    use support::redis_server::RedisServer;

    /// How many records are stored; and checks that every key the store
    /// wrote is namespaced and has a TTL.
    async fn stored_keys(url: &str) -> usize {
        let client = ::redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        for key in &keys {
            assert!(key.starts_with("finmesh:idempotency:{"), "{key}");
            let ttl: i64 = ::redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(ttl > 0, "{key} has no TTL ({ttl})");
        }
        keys.iter().filter(|k| k.contains("}:r:")).count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_sharing_one_redis_execute_once() {
        let Some(redis) = RedisServer::start("two_instances_sharing_one_redis_execute_once") else {
            return;
        };
        let counter = Counter::default();
        // Two independent service instances, each with its own store and
        // connection, sharing only the redis-server.
        let a = spawn(app(
            RedisStore::open(&redis.url()).unwrap(),
            counter.clone(),
            MINUTE,
        ))
        .await;
        let b = spawn(app(
            RedisStore::open(&redis.url()).unwrap(),
            counter.clone(),
            MINUTE,
        ))
        .await;
        hundred_concurrent_requests_run_once(&[&a, &b], &counter).await;
        assert_eq!(stored_keys(&redis.url()).await, 1, "one stored response");

        // The other instance replays too, and refuses a changed body.
        let h = &[("idempotency-key", "tx-100"), ("x-test-subject", "alice")];
        let changed = send(post(&a, "/v1/transfers", r#"{"amount":7}"#, h)).await;
        assert_eq!(changed.status, 422);
        assert_eq!(changed.json()["code"], "idempotency.key_reused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_enforces_a_per_tenant_record_quota_atomically() {
        let Some(redis) = RedisServer::start("redis_enforces_a_per_tenant_record_quota_atomically")
        else {
            return;
        };
        let counter = Counter::default();
        let open = || RedisStore::open(&redis.url()).unwrap().tenant_quota(5);
        let a = spawn(app(open(), counter.clone(), MINUTE)).await;
        let b = spawn(app(open(), counter.clone(), MINUTE)).await;
        // 20 unique keys of one tenant at once, over two replicas: exactly
        // 5 run, the rest are refused.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let server = if i % 2 == 0 { &a } else { &b };
            let key = format!("flood-{i}");
            let req = post(
                server,
                "/v1/transfers",
                "{}",
                &[
                    ("idempotency-key", key.as_str()),
                    ("x-test-subject", "mallory"),
                    ("x-test-tenant", "acme"),
                ],
            );
            tasks.push(tokio::spawn(send(req)));
        }
        let mut ran = 0;
        for t in tasks {
            let res = t.await.unwrap();
            match res.status.as_u16() {
                201 => ran += 1,
                429 => assert_eq!(res.json()["code"], "idempotency.quota_exceeded"),
                other => panic!("unexpected {other}: {:?}", res.body),
            }
        }
        assert_eq!(ran, 5);
        assert_eq!(counter.get(), 5);
        // gRPC: RESOURCE_EXHAUSTED with the code.
        let err = grpc_client(b.addr)
            .await
            .unary(grpc_request(
                EchoRequest {
                    message: "m".into(),
                    payload: vec![],
                },
                &[("idempotency-key", "g"), ("x-test-tenant", "acme")],
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert_eq!(
            err.metadata().get("finmesh-code").unwrap(),
            "idempotency.quota_exceeded"
        );
        // Another tenant, and requests without one, carry on.
        for tenant in [Some("globex"), None] {
            let mut h = vec![("idempotency-key", "own-1")];
            if let Some(t) = tenant {
                h.push(("x-test-tenant", t));
            }
            let res = send(post(&a, "/v1/transfers", "{}", &h)).await;
            assert_eq!(res.status, 201, "{tenant:?}: {:?}", res.body);
        }
        assert_eq!(stored_keys(&redis.url()).await, 7);
    }

    #[tokio::test]
    async fn redis_in_flight_claims_expire() {
        let Some(redis) = RedisServer::start("redis_in_flight_claims_expire") else {
            return;
        };
        let counter = Counter::default();
        let claim_ttl = Duration::from_millis(300);
        let server = spawn(app(
            RedisStore::open(&redis.url()).unwrap(),
            counter.clone(),
            claim_ttl,
        ))
        .await;
        let h = &[("idempotency-key", "hang-r")];
        let stuck = tokio::spawn(send(post(&server, "/v1/hang", "{}", h)));
        while counter.get() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(claim_ttl + Duration::from_millis(100)).await;
        let retry = send(post(&server, "/v1/hang", "{}", h)).await;
        assert_eq!(retry.status, 200);
        assert_eq!(counter.get(), 2);
        stuck.abort();
    }

    #[tokio::test]
    async fn redis_stopped_mid_test_fails_closed_with_503() {
        let Some(mut redis) = RedisServer::start("redis_stopped_mid_test_fails_closed_with_503")
        else {
            return;
        };
        let counter = Counter::default();
        let store = RedisStore::open(&redis.url())
            .unwrap()
            .timeout(Duration::from_millis(500));
        let server = spawn(app(store, counter.clone(), MINUTE)).await;
        let h = &[("idempotency-key", "r-1"), ("x-test-subject", "alice")];
        let ok = send(post(&server, "/v1/transfers", "{}", h)).await;
        assert_eq!(ok.status, 201);
        assert_eq!(counter.get(), 1);

        redis.stop();
        for key in ["r-1", "r-2"] {
            let res = send(post(
                &server,
                "/v1/transfers",
                "{}",
                &[("idempotency-key", key), ("x-test-subject", "alice")],
            ))
            .await;
            assert_eq!(res.status, 503, "{key}");
            assert_eq!(res.json()["code"], "idempotency.store_unavailable");
        }
        let mut client = grpc_client(server.addr).await;
        let err = client
            .unary(grpc_request(
                EchoRequest {
                    message: "m".into(),
                    payload: vec![],
                },
                &[("idempotency-key", "r-3")],
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(counter.get(), 1, "no execution while the store is down");
    }

    #[tokio::test]
    async fn redis_replays_a_unary_grpc_call() {
        let Some(redis) = RedisServer::start("redis_replays_a_unary_grpc_call") else {
            return;
        };
        let counter = Counter::default();
        let a = spawn(app(
            RedisStore::open(&redis.url()).unwrap(),
            counter.clone(),
            MINUTE,
        ))
        .await;
        let b = spawn(app(
            RedisStore::open(&redis.url()).unwrap(),
            counter.clone(),
            MINUTE,
        ))
        .await;
        let msg = || EchoRequest {
            message: "pay".into(),
            payload: vec![9; 64],
        };
        let first = grpc_client(a.addr)
            .await
            .unary(grpc_request(msg(), &[("idempotency-key", "g-r")]))
            .await
            .unwrap();
        let again = grpc_client(b.addr)
            .await
            .unary(grpc_request(msg(), &[("idempotency-key", "g-r")]))
            .await
            .unwrap();
        assert_eq!(
            again.metadata().get("idempotency-replayed").unwrap(),
            "true"
        );
        assert_eq!(again.into_inner(), first.into_inner());
        assert_eq!(counter.get(), 1);
    }

    #[tokio::test]
    async fn a_replica_whose_claim_expired_cannot_overwrite_or_release() {
        use finmesh::idempotency::{Caller, Claim, Completed, Fingerprint, StoreKey};
        let Some(redis) =
            RedisServer::start("a_replica_whose_claim_expired_cannot_overwrite_or_release")
        else {
            return;
        };
        let stale_replica = RedisStore::open(&redis.url()).unwrap();
        let live_replica = RedisStore::open(&redis.url()).unwrap();
        let key = StoreKey {
            tenant: Some("acme".parse().unwrap()),
            caller: Caller::verified("https://issuer.test", "alice"),
            key: "k".parse().unwrap(),
        };
        let fp = Fingerprint([3; 32]);
        let Claim::Acquired(stale) = stale_replica
            .claim(&key, fp, Duration::from_millis(50))
            .await
            .unwrap()
        else {
            panic!("first claim acquires")
        };
        assert!(matches!(
            live_replica.claim(&key, fp, MINUTE).await.unwrap(),
            Claim::InFlight { fingerprint } if fingerprint == fp
        ));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let Claim::Acquired(live) = live_replica.claim(&key, fp, MINUTE).await.unwrap() else {
            panic!("an expired claim frees the key")
        };
        let record = |body: &'static str| Completed {
            fingerprint: fp,
            response: Some(finmesh::idempotency::StoredResponse {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                body: Bytes::from_static(body.as_bytes()),
                trailers: None,
            }),
        };
        // The stale replica finishes late: neither its completion nor its
        // release touches the live claim.
        assert!(
            !stale_replica
                .complete(&key, stale, record("stale"), MINUTE)
                .await
                .unwrap()
        );
        stale_replica.release(&key, stale).await.unwrap();
        assert!(matches!(
            stale_replica.claim(&key, fp, MINUTE).await.unwrap(),
            Claim::InFlight { .. }
        ));
        assert!(
            live_replica
                .complete(&key, live, record("live"), MINUTE)
                .await
                .unwrap()
        );
        match stale_replica.claim(&key, fp, MINUTE).await.unwrap() {
            Claim::Completed(done) => {
                assert_eq!(done.response.as_ref().unwrap().body, "live");
            }
            other => panic!("expected the live record, got {other:?}"),
        }
        // Another subject's scope is untouched.
        let bob = StoreKey {
            caller: Caller::verified("https://issuer.test", "bob"),
            ..key.clone()
        };
        assert!(matches!(
            live_replica.claim(&bob, fp, MINUTE).await.unwrap(),
            Claim::Acquired(_)
        ));
    }
}
