//! End to end: the reference gateway's app, started in-process on
//! `127.0.0.1:0` and driven with real HTTP/1.1 and tonic clients.

#[path = "../examples/gateway/mod.rs"]
mod gateway;
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gateway::pb::ledger_client::LedgerClient;
use gateway::pb::{GetAccountRequest, TransferRequest};
use http_body_util::Full;
use support::{HttpAnswer, TestServer, raw_http1, send, send_h2c, spawn};
use tonic::transport::Channel;

const SECRET: &[u8] = b"an-end-to-end-test-secret-of-32-bytes-or-more";

struct Running {
    server: TestServer,
    gateway: gateway::Gateway,
    audit_log: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(message_timeout: Duration) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("audit.log");
    let gateway = gateway::build(&gateway::Options {
        config_dir: None,
        message_timeout,
        audit_log: audit_log.clone(),
        audit_policy: None,
        audit_postgres: None,
        jwt_secret: SECRET.to_vec(),
        redis_url: None,
        otlp_endpoint: None,
        trust_domain: "finmesh.demo".into(),
    })
    .expect("gateway builds");
    let server = spawn(gateway.app.clone()).await;
    Running {
        server,
        gateway,
        audit_log,
        _dir: dir,
    }
}

fn token(user: &str) -> String {
    gateway::mint_token(user, SECRET, SystemTime::now()).expect("demo user")
}

/// Alice's headers for `POST /v1/transfer` of `order`, under a fresh
/// idempotency key.
fn alice_transfer(order: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {}", token("alice"))),
        ("x-tenant-namespace", "tenant-a".to_owned()),
        ("x-order-id", order.to_owned()),
        ("idempotency-key", unique("key")),
    ]
}

static KEYS: AtomicU64 = AtomicU64::new(1);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", KEYS.fetch_add(1, Ordering::Relaxed))
}

async fn http(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> HttpAnswer {
    let mut req = http::Request::builder()
        .method(method)
        .uri(server.url(path));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    send(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

async fn ledger(server: &TestServer) -> LedgerClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    LedgerClient::new(channel)
}

fn grpc<T>(msg: T, user: &str, tenant: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    md.insert(
        "authorization",
        format!("Bearer {}", token(user)).parse().unwrap(),
    );
    if let Some(t) = tenant {
        md.insert("x-tenant-namespace", t.parse().unwrap());
    }
    req
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    ListAccounts,
    GetAccount,
    UpdateAccount,
    Transfer,
    GrpcGetAccount,
    GrpcStreamTransfers,
}

const ROUTES: [Route; 6] = [
    Route::ListAccounts,
    Route::GetAccount,
    Route::UpdateAccount,
    Route::Transfer,
    Route::GrpcGetAccount,
    Route::GrpcStreamTransfers,
];

/// What the demo policy says: `Ok` or the rejection code.
fn expected(user: &str, header: Option<&str>, route: Route) -> Result<(), &'static str> {
    let who = gateway::identity(user).unwrap();
    if who.tenant == "tenant-frozen" {
        return Err("tenant.suspended");
    }
    if header.is_some_and(|h| h != who.tenant) {
        return Err("tenant.mismatch");
    }
    let reads = matches!(
        route,
        Route::ListAccounts | Route::GetAccount | Route::GrpcGetAccount
    );
    let allowed = match user {
        "alice" => true,
        "bob" => reads,
        _ => false,
    };
    if allowed { Ok(()) } else { Err("rbac.denied") }
}

/// The rejection's stable code, as a gRPC client reads it.
fn grpc_code(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get(finmesh::reject::CODE_METADATA)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn every_identity_tenant_and_route_gets_the_policy_answer() {
    let gw = start(Duration::from_secs(2)).await;
    let mut client = ledger(&gw.server).await;
    let mut checked = 0;
    for user in ["alice", "bob", "carol", "dave"] {
        for header in [
            None,
            Some("tenant-a"),
            Some("tenant-b"),
            Some("tenant-frozen"),
        ] {
            for route in ROUTES {
                let want = expected(user, header, route);
                let what = format!("{user} with tenant header {header:?} on {route:?}");
                let mut headers = vec![("authorization", format!("Bearer {}", token(user)))];
                if let Some(h) = header {
                    headers.push(("x-tenant-namespace", h.to_owned()));
                }
                let http_answer = match route {
                    Route::ListAccounts => Some((
                        200,
                        http(&gw.server, "GET", "/v1/accounts", &headers, "").await,
                    )),
                    Route::GetAccount => Some((
                        200,
                        http(&gw.server, "GET", "/v1/accounts/acc-1", &headers, "").await,
                    )),
                    Route::UpdateAccount => Some((
                        200,
                        http(
                            &gw.server,
                            "PUT",
                            "/v1/accounts/acc-1",
                            &headers,
                            r#"{"name":"Renamed"}"#,
                        )
                        .await,
                    )),
                    Route::Transfer => {
                        headers.push(("x-order-id", unique("ord")));
                        headers.push(("idempotency-key", unique("key")));
                        Some((
                            201,
                            http(
                                &gw.server,
                                "POST",
                                "/v1/transfer",
                                &headers,
                                r#"{"from":"acc-1","to":"acc-2","amount":"0.01"}"#,
                            )
                            .await,
                        ))
                    }
                    _ => None,
                };
                if let Some((ok_status, res)) = http_answer {
                    match want {
                        Ok(()) => assert_eq!(res.status, ok_status, "{what}: {:?}", res.body),
                        Err(code) => {
                            assert_eq!(res.status, 403, "{what}: {:?}", res.body);
                            assert_eq!(res.json()["code"], code, "{what}");
                        }
                    }
                    checked += 1;
                    continue;
                }
                let got = match route {
                    Route::GrpcGetAccount => client
                        .get_account(grpc(GetAccountRequest { id: "acc-1".into() }, user, header))
                        .await
                        .map(|r| assert_eq!(r.into_inner().id, "acc-1")),
                    Route::GrpcStreamTransfers => {
                        let order = unique("ord");
                        let msgs = vec![TransferRequest {
                            order_id: order.clone(),
                            from_account: "acc-1".into(),
                            to_account: "acc-2".into(),
                            amount: "0.01".into(),
                        }];
                        match client
                            .stream_transfers(grpc(tokio_stream::iter(msgs), user, header))
                            .await
                        {
                            Ok(res) => {
                                let mut stream = res.into_inner();
                                let first = stream.message().await;
                                first.map(|m| {
                                    let m = m.expect("one result");
                                    assert_eq!(
                                        (m.order_id.as_str(), m.state.as_str()),
                                        (order.as_str(), "COMMITTED"),
                                        "{what}"
                                    );
                                })
                            }
                            Err(status) => Err(status),
                        }
                    }
                    _ => unreachable!(),
                };
                match (want, got) {
                    (Ok(()), Ok(())) => {}
                    (Err(code), Err(status)) => {
                        assert_eq!(
                            status.code(),
                            tonic::Code::PermissionDenied,
                            "{what}: {status:?}"
                        );
                        assert_eq!(grpc_code(&status), code, "{what}: {status:?}");
                    }
                    (want, got) => panic!("{what}: expected {want:?}, got {got:?}"),
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * 4 * ROUTES.len());
}

/// `n` transfers by alice at once, sent round-robin to `servers`.
async fn alice_burst(servers: &[&TestServer], n: usize) -> Vec<HttpAnswer> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let url = servers[i % servers.len()].url("/v1/transfer");
            let headers = alice_transfer(&unique("ord-burst"));
            tokio::spawn(async move {
                let mut req = http::Request::post(url).header("content-type", "application/json");
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                send(
                    req.body(Full::new(Bytes::from(json_body("acc-1", "acc-2"))))
                        .unwrap(),
                )
                .await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

/// The demo policy: alice's tenant may create 20 transfers a second
/// (burst 20); the rest of a burst is 429 with Retry-After.
fn assert_cut_to_the_demo_limit(answers: &[HttpAnswer]) {
    let accepted = answers.iter().filter(|a| a.status == 201).count();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert!(
        (20..=30).contains(&accepted),
        "{accepted} accepted: {statuses:?}"
    );
    for refused in answers.iter().filter(|a| a.status != 201) {
        assert_eq!(refused.status, 429, "{:?}", refused.body);
        assert_eq!(refused.json()["code"], "ratelimit.exceeded");
        assert!(refused.header("retry-after").parse::<u64>().unwrap() >= 1);
        assert_eq!(
            refused.header("ratelimit-policy"),
            "\"tenant-a-transfers\";q=20;w=1"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_transfers_is_cut_to_the_tenant_limit_while_another_tenant_is_served() {
    let gw = start(Duration::from_secs(2)).await;
    let answers = alice_burst(&[&gw.server], 100).await;
    let bob = http(
        &gw.server,
        "GET",
        "/v1/accounts",
        &[
            ("authorization", format!("Bearer {}", token("bob"))),
            ("x-tenant-namespace", "tenant-b".to_owned()),
        ],
        "",
    )
    .await;
    assert_eq!(bob.status, 200, "{:?}", bob.body);
    assert_cut_to_the_demo_limit(&answers);
    // A success carries the fields too (the gateway turns them on).
    let ok = answers.iter().find(|a| a.status == 201).unwrap();
    assert!(ok.header("ratelimit").starts_with("\""), "{:?}", ok.headers);
    // The audit record of a refusal carries its code.
    gw.gateway.auditor.flush().await.unwrap();
    let refused = audit_records(&gw.audit_log)
        .into_iter()
        .filter(|r| r.to_string().contains("ratelimit.exceeded"))
        .count();
    assert_eq!(refused, answers.iter().filter(|a| a.status == 429).count());
    // Counted per rule, tenant and outcome on the metrics listener.
    let metrics = spawn(gw.gateway.metrics.clone()).await;
    let text = support::get(&metrics.url("/metrics"), &[]).await;
    let text = String::from_utf8_lossy(&text.body);
    assert!(
        text.contains(&format!(
            "finmesh_ratelimit_decisions_total{{rule=\"tenant-a-transfers\",tenant=\"tenant-a\",outcome=\"limited\"}} {}",
            answers.iter().filter(|a| a.status == 429).count()
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_grant_the_tenant_limit_once_and_share_idempotency() {
    let Some(redis) = support::redis_server::RedisServer::start(
        "two_gateways_on_one_redis_grant_the_tenant_limit_once_and_share_idempotency",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        gateway::build(&gateway::Options {
            config_dir: None,
            message_timeout: Duration::from_secs(2),
            audit_log: dir.path().join(name),
            jwt_secret: SECRET.to_vec(),
            audit_policy: None,
            audit_postgres: None,
            redis_url: Some(redis.url()),
            otlp_endpoint: None,
            trust_domain: "finmesh.demo".into(),
        })
        .expect("gateway builds")
    };
    let (a, b) = (open("a.log"), open("b.log"));
    let (sa, sb) = (spawn(a.app.clone()).await, spawn(b.app.clone()).await);
    let answers = alice_burst(&[&sa, &sb], 100).await;
    // Within the burst: 20, plus what refills while the burst is sent;
    // two separate limits would have let about 40 through.
    assert_cut_to_the_demo_limit(&answers);
    assert_eq!(a.rate_limits.local_keys() + b.rate_limits.local_keys(), 0);
    assert_eq!(a.rate_limits.stats().store_errors(), 0);

    // A transfer retried on the other gateway is replayed, not paid twice.
    tokio::time::sleep(Duration::from_secs(2)).await; // let the limit refill
    let headers = alice_transfer("ord-shared-1");
    let body = json_body("acc-1", "acc-2");
    let first = http(&sa, "POST", "/v1/transfer", &headers, &body).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let retry = http(&sb, "POST", "/v1/transfer", &headers, &body).await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.header("idempotency-replayed"), "true");
    assert_eq!(retry.body, first.body);
}

fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_transfer_retried_with_the_same_key_executes_once_and_replays() {
    let gw = start(Duration::from_secs(2)).await;
    let headers = vec![
        ("authorization", format!("Bearer {}", token("alice"))),
        ("x-tenant-namespace", "tenant-a".to_owned()),
        ("x-order-id", "ord-retry".to_owned()),
        ("idempotency-key", "transfer-retry-1".to_owned()),
    ];
    let body = r#"{"from":"acc-1","to":"acc-2","amount":12.5}"#;
    let before = gw.gateway.ledger.get("tenant-a", "acc-1").unwrap().balance;
    let first = http(&gw.server, "POST", "/v1/transfer", &headers, body).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.json()["state"], "COMMITTED");
    assert_eq!(first.json()["amount"], "12.50");
    let retry = http(&gw.server, "POST", "/v1/transfer", &headers, body).await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.body, first.body, "replayed byte for byte");
    assert_eq!(retry.header("idempotency-replayed"), "true");
    assert_eq!(first.header("idempotency-replayed"), "");
    // Money moved once.
    assert_eq!(before, "10000.00");
    assert_eq!(
        gw.gateway.ledger.get("tenant-a", "acc-1").unwrap().balance,
        "9987.50"
    );
    // The same key with another payload is refused.
    let changed = http(
        &gw.server,
        "POST",
        "/v1/transfer",
        &headers,
        r#"{"from":"acc-1","to":"acc-2","amount":"13"}"#,
    )
    .await;
    assert_eq!(changed.status, 422);
    assert_eq!(changed.json()["code"], "idempotency.key_reused");
    // The audit chain shows one PREPARE → COMMIT → POST_COMMIT_HOOK.
    gw.gateway.auditor.flush().await.unwrap();
    let events: Vec<String> = audit_records(&gw.audit_log)
        .iter()
        .filter(|r| r["order_id"] == "ord-retry" && r["kind"] == "event")
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, ["PREPARE", "COMMIT", "POST_COMMIT_HOOK"]);
    finmesh::audit::verify(&gw.audit_log).expect("the chain verifies");
}

#[tokio::test]
async fn the_embedded_audit_policy_records_transfer_bodies_and_only_metadata_for_reads() {
    let gw = start(Duration::from_secs(2)).await;
    let headers = vec![
        ("authorization", format!("Bearer {}", token("alice"))),
        ("x-tenant-namespace", "tenant-a".to_owned()),
        ("x-order-id", "ord-policy".to_owned()),
        ("idempotency-key", "policy-1".to_owned()),
    ];
    let body = r#"{"from":"acc-1","to":"acc-2","amount":"1.25"}"#;
    let res = http(&gw.server, "POST", "/v1/transfer", &headers, body).await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    // Refused by the handler, still a transfer created as far as the
    // policy sees it: its body is recorded, the card number redacted.
    let mut card_headers = headers[..2].to_vec();
    card_headers.push(("x-order-id", "ord-card".to_owned()));
    card_headers.push(("idempotency-key", "policy-2".to_owned()));
    let card = r#"{"from":"acc-1","to":"acc-2","amount":"1","card_number":"4111111111111111"}"#;
    let refused = http(&gw.server, "POST", "/v1/transfer", &card_headers, card).await;
    assert_eq!(refused.status, 400);
    let read = http(&gw.server, "GET", "/v1/accounts", &headers[..2], "").await;
    assert_eq!(read.status, 200);
    assert_eq!(http(&gw.server, "GET", "/livez", &[], "").await.status, 200);
    gw.gateway.auditor.flush().await.unwrap();
    let records = audit_records(&gw.audit_log);
    let transfer = records
        .iter()
        .find(|r| r["order_id"] == "ord-policy" && r["kind"] == "request")
        .expect("the transfer's record");
    // RequestResponse: both bodies.
    assert_eq!(transfer["request_body"]["amount"], "1.25");
    assert_eq!(transfer["response_body"]["state"], "COMMITTED");
    let with_card = records
        .iter()
        .find(|r| r["order_id"] == "ord-card" && r["kind"] == "request")
        .expect("the refused transfer's record");
    assert_eq!(with_card["request_body"]["card_number"], "[redacted]");
    assert_eq!(with_card["response_body"]["code"], "transfer.invalid_body");
    // The events of a RequestResponse request are written.
    assert!(
        records
            .iter()
            .any(|r| r["order_id"] == "ord-policy" && r["event"] == "COMMIT")
    );
    // Metadata for the read: no bodies; nothing for the probe.
    let list = records
        .iter()
        .find(|r| r["route"] == "/v1/accounts" && r["method"] == "GET")
        .expect("the read's record");
    assert!(list.get("request_body").is_none() && list.get("response_body").is_none());
    assert!(!records.iter().any(|r| r["route"] == "/livez"));
    assert!(
        !std::fs::read_to_string(&gw.audit_log)
            .unwrap()
            .contains("4111111111111111")
    );
    finmesh::audit::verify(&gw.audit_log).expect("the chain verifies");
}

#[tokio::test]
async fn a_grpc_stream_transfer_body_is_never_written_verbatim_with_redaction_on() {
    let gw = start(Duration::from_secs(2)).await;
    let mut client = ledger(&gw.server).await;
    let secret_order = "ord-grpc-4111111111111111";
    let msgs = vec![TransferRequest {
        order_id: secret_order.into(),
        from_account: "acc-1".into(),
        to_account: "acc-2".into(),
        amount: "1.00".into(),
    }];
    let res = client
        .stream_transfers(grpc(tokio_stream::iter(msgs), "alice", Some("tenant-a")))
        .await
        .expect("stream opens");
    let mut results = res.into_inner();
    while results.message().await.expect("stream ok").is_some() {}
    gw.gateway.auditor.flush().await.unwrap();
    let records = audit_records(&gw.audit_log);
    let call = records
        .iter()
        .find(|r| {
            r["kind"] == "request"
                && r["route"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/StreamTransfers"))
        })
        .expect("the stream's record");
    // The create-transfers rule asks for RequestResponse, but protobuf
    // frames cannot be redacted: only their size is recorded.
    let body = call["request_body"].as_str().expect("a marker");
    assert!(
        body.ends_with("bytes not recorded: not JSON, redaction on]"),
        "{body}"
    );
    let response = call["response_body"].as_str().expect("a marker");
    assert!(response.contains("not JSON, redaction on"), "{response}");
    assert!(
        !std::fs::read_to_string(&gw.audit_log)
            .unwrap()
            .lines()
            .any(|l| l.contains("request_body") && l.contains("4111111111111111")),
        "the frame bytes are not in any body"
    );
    finmesh::audit::verify(&gw.audit_log).expect("the chain verifies");
}

#[tokio::test]
async fn transfers_refuse_inexact_amounts_and_missing_order_ids() {
    let gw = start(Duration::from_secs(2)).await;
    let base = |order: Option<&str>| {
        let mut h = vec![
            ("authorization", format!("Bearer {}", token("alice"))),
            ("x-tenant-namespace", "tenant-a".to_owned()),
            ("idempotency-key", unique("key")),
        ];
        if let Some(o) = order {
            h.push(("x-order-id", o.to_owned()));
        }
        h
    };
    for amount in [
        "0",
        "-1",
        "1.001",
        "1e2",
        "\"12.345\"",
        "0.1000000000000000055511151231257827",
        "\"abc\"",
        "null",
    ] {
        let body = format!(r#"{{"from":"acc-1","to":"acc-2","amount":{amount}}}"#);
        let res = http(
            &gw.server,
            "POST",
            "/v1/transfer",
            &base(Some(&unique("ord"))),
            &body,
        )
        .await;
        assert_eq!(res.status, 400, "amount {amount}: {:?}", res.body);
        assert_eq!(
            res.json()["code"],
            "transfer.invalid_amount",
            "amount {amount}"
        );
    }
    let res = http(
        &gw.server,
        "POST",
        "/v1/transfer",
        &base(None),
        r#"{"from":"acc-1","to":"acc-2","amount":"1"}"#,
    )
    .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["code"], "telemetry.order_id_missing");
    let mut no_key = base(Some("ord-nokey"));
    no_key.retain(|(k, _)| *k != "idempotency-key");
    let res = http(
        &gw.server,
        "POST",
        "/v1/transfer",
        &no_key,
        r#"{"from":"acc-1","to":"acc-2","amount":"1"}"#,
    )
    .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["code"], "idempotency.key_missing");
}

#[tokio::test]
async fn a_stream_paused_past_the_message_deadline_ends_with_deadline_exceeded() {
    // A per-message deadline generous enough that a loaded CI machine does
    // not trip it between messages; the pause is well past it.
    let gw = start(Duration::from_secs(1)).await;
    let mut client = ledger(&gw.server).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let res = client
        .stream_transfers(grpc(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            "alice",
            Some("tenant-a"),
        ))
        .await
        .expect("stream opens");
    let mut results = res.into_inner();
    for i in 0..3 {
        tx.send(TransferRequest {
            order_id: format!("ord-s{i}"),
            from_account: "acc-1".into(),
            to_account: "acc-2".into(),
            amount: "1.00".into(),
        })
        .await
        .unwrap();
        let r = results.message().await.unwrap().unwrap();
        assert_eq!(
            (r.order_id.as_str(), r.state.as_str()),
            (format!("ord-s{i}").as_str(), "COMMITTED")
        );
    }
    // The client goes quiet for longer than the per-message deadline.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = results.message().await.expect_err("the call ends");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    drop(tx);
}

#[tokio::test]
async fn a_traceparent_comes_back_in_x_trace_id_and_in_the_audit_record() {
    let gw = start(Duration::from_secs(2)).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let headers = vec![
        ("authorization", format!("Bearer {}", token("alice"))),
        ("x-tenant-namespace", "tenant-a".to_owned()),
        ("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01")),
    ];
    let res = http(&gw.server, "GET", "/v1/accounts", &headers, "").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-trace-id"), trace_id);
    // A rejection carries it in the problem too.
    let mut denied = headers.clone();
    denied[0] = ("authorization", format!("Bearer {}", token("dave")));
    let res = http(
        &gw.server,
        "PUT",
        "/v1/accounts/acc-1",
        &denied,
        r#"{"name":"x"}"#,
    )
    .await;
    assert_eq!(res.status, 403);
    assert_eq!(res.json()["trace_id"], trace_id);
    gw.gateway.auditor.flush().await.unwrap();
    let records = audit_records(&gw.audit_log);
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r["trace_id"] == trace_id)
        .collect();
    assert_eq!(mine.len(), 2, "{records:?}");
    assert_eq!(mine[0]["subject"], "alice");
    assert_eq!(mine[0]["http_status"], 200);
    assert_eq!(mine[1]["subject"], "dave");
    assert_eq!(mine[1]["code"], "rbac.denied");
    assert_eq!(mine[1]["http_status"], 403);
}

#[tokio::test]
async fn draining_fails_readyz_at_once_while_livez_and_traffic_stay_up() {
    use finmesh::health::grpc::pb::health_check_response::ServingStatus;
    use finmesh::health::grpc::pb::{HealthCheckRequest, HealthListRequest, HealthListResponse};

    let gw = start(Duration::from_secs(2)).await;
    let probe = |path: &'static str| {
        let url = gw.server.url(path);
        async move { support::get(&url, &[]).await }
    };
    assert_eq!(probe("/readyz").await.status, 200);

    // grpc.health.v1 names the Ledger: Check, Watch and List.
    let channel = Channel::from_shared(format!("http://{}", gw.server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let ledger = || HealthCheckRequest {
        service: gateway::LEDGER_SERVICE.to_owned(),
    };
    let check = |mut health: tonic_health::pb::health_client::HealthClient<Channel>| async move {
        health.check(ledger()).await.unwrap().into_inner().status()
    };
    assert_eq!(check(health.clone()).await, ServingStatus::Serving);
    let mut watch = health.watch(ledger()).await.unwrap().into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let list = || {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready().await.unwrap();
            grpc.unary::<HealthListRequest, HealthListResponse, _>(
                tonic::Request::new(HealthListRequest {}),
                ::http::uri::PathAndQuery::from_static(finmesh::health::grpc::LIST_PATH),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap()
            .into_inner()
            .statuses
        }
    };
    let listed = list().await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        listed[gateway::LEDGER_SERVICE].status(),
        ServingStatus::Serving
    );

    gw.gateway.health.begin_shutdown();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    assert_eq!(check(health.clone()).await, ServingStatus::NotServing);
    assert_eq!(
        list().await[gateway::LEDGER_SERVICE].status(),
        ServingStatus::NotServing
    );
    let ready = probe("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(
        String::from_utf8_lossy(&ready.body).contains("[-]shutdown failed"),
        "{:?}",
        ready.body
    );
    assert_eq!(probe("/livez").await.status, 200);
    assert_eq!(probe("/healthz").await.status, 200);
    // Requests are still served while load balancers catch up.
    let headers = vec![
        ("authorization", format!("Bearer {}", token("alice"))),
        ("x-tenant-namespace", "tenant-a".to_owned()),
    ];
    assert_eq!(
        http(&gw.server, "GET", "/v1/accounts", &headers, "")
            .await
            .status,
        200
    );
    // gRPC health says NOT_SERVING for the whole server too.
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
}

#[tokio::test]
async fn probes_and_the_metrics_listener_need_no_token() {
    let gw = start(Duration::from_secs(2)).await;
    for path in ["/livez", "/readyz", "/healthz", "/readyz?verbose"] {
        assert_eq!(
            support::get(&gw.server.url(path), &[]).await.status,
            200,
            "{path}"
        );
    }
    // One governed request, so the duration histogram has a series.
    let headers = vec![
        ("authorization", format!("Bearer {}", token("bob"))),
        ("x-tenant-namespace", "tenant-b".to_owned()),
    ];
    assert_eq!(
        http(&gw.server, "GET", "/v1/accounts", &headers, "")
            .await
            .status,
        200
    );
    // Metrics are served by their own listener, not the public port.
    let metrics_server = spawn(gw.gateway.metrics.clone()).await;
    let metrics = support::get(&metrics_server.url("/metrics"), &[]).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("finmesh_server_duration_milliseconds_bucket"),
        "{text}"
    );
    // Registered tenants are named; nothing else is served there.
    assert!(text.contains("tenant=\"tenant-b\""), "{text}");
    assert_eq!(
        support::get(&metrics_server.url("/v1/accounts"), &[])
            .await
            .status,
        404
    );
    assert!(
        !text.contains("order_id") && !text.contains("trace_id"),
        "unbounded labels leaked: {text}"
    );
    // Without a token, governed routes are refused.
    let res = support::get(
        &gw.server.url("/v1/accounts"),
        &[("x-tenant-namespace", "tenant-b")],
    )
    .await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["code"], "auth.missing");
    assert_eq!(res.header("www-authenticate"), "Bearer");
}

/// Size of the audit log and its rotated files.
fn audit_bytes(path: &Path) -> u64 {
    let dir = path.parent().unwrap();
    let base = path.file_name().unwrap().to_str().unwrap();
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(base)))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[tokio::test]
async fn ten_transfers_with_megabyte_fields_grow_the_audit_log_by_less_than_100_kb() {
    let gw = start(Duration::from_secs(2)).await;
    gw.gateway.auditor.flush().await.unwrap();
    let before = audit_bytes(&gw.audit_log);
    let huge = "x".repeat(1_000_000);
    for (i, body) in [
        json_body(&huge, "acc-2"),
        json_body("acc-1", &huge),
        json_body(&huge, &huge[..20_000]),
    ]
    .iter()
    .cycle()
    .take(10)
    .enumerate()
    {
        let res = http(
            &gw.server,
            "POST",
            "/v1/transfer",
            &alice_transfer(&format!("ord-huge-{i}")),
            body,
        )
        .await;
        // Refused before anything is audited or echoed at length.
        assert_eq!(res.status, 422, "{i}");
        assert_eq!(res.json()["code"], "transfer.invalid_account", "{i}");
        assert!(
            res.body.len() < 2048,
            "{i}: {} bytes echoed",
            res.body.len()
        );
    }
    gw.gateway.auditor.flush().await.unwrap();
    let grown = audit_bytes(&gw.audit_log) - before;
    assert!(grown < 100 * 1024, "the audit log grew by {grown} bytes");
    let report = finmesh::audit::verify(&gw.audit_log).expect("the chain verifies");
    assert_eq!(report.records, 10);
}

fn json_body(from: &str, to: &str) -> String {
    serde_json::json!({ "from": from, "to": to, "amount": "1.00" }).to_string()
}

#[tokio::test]
async fn metrics_on_the_public_port_is_an_ordinary_governed_path() {
    let gw = start(Duration::from_secs(2)).await;
    // Even after a tenant's traffic, nothing is told without a token.
    let headers = vec![
        ("authorization", format!("Bearer {}", token("bob"))),
        ("x-tenant-namespace", "tenant-b".to_owned()),
    ];
    assert_eq!(
        http(&gw.server, "GET", "/v1/accounts", &headers, "")
            .await
            .status,
        200
    );
    let res = support::get(&gw.server.url("/metrics"), &[]).await;
    assert_eq!(res.status, 401, "{:?}", res.body);
    assert_eq!(res.json()["code"], "auth.missing");
    let text = String::from_utf8_lossy(&res.body);
    assert!(!text.contains("tenant"), "{text}");
    // With a token it is a path no RBAC route maps.
    let res = http(&gw.server, "GET", "/metrics", &headers, "").await;
    assert_eq!(res.status, 403, "{:?}", res.body);
    assert_eq!(res.json()["code"], "rbac.unmapped");
}

#[test]
fn tokens_carry_the_demo_claims() {
    let t = token("bob");
    let payload = t.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], "finmesh-demo");
    assert_eq!(claims["aud"], "finmesh-gateway");
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["tenant"], "tenant-b");
    assert_eq!(claims["risk_level"], "medium");
    assert_eq!(claims["groups"], serde_json::json!(["tenant-b-viewers"]));
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 3600);
    assert!(gateway::mint_token("mallory", SECRET, SystemTime::now()).is_none());
}

#[tokio::test]
async fn a_resent_order_is_answered_with_its_first_transfer_and_paid_once() {
    let gw = start(Duration::from_secs(2)).await;
    let mut client = ledger(&gw.server).await;
    let order = || TransferRequest {
        order_id: "ord-resent".into(),
        from_account: "acc-1".into(),
        to_account: "acc-2".into(),
        amount: "100.00".into(),
    };
    // Sent twice in one stream (a client resending what it saw no answer for).
    let res = client
        .stream_transfers(grpc(
            tokio_stream::iter(vec![order(), order()]),
            "alice",
            Some("tenant-a"),
        ))
        .await
        .unwrap();
    let mut results = res.into_inner();
    let first = results.message().await.unwrap().unwrap();
    let second = results.message().await.unwrap().unwrap();
    assert_eq!(first.state, "COMMITTED");
    assert_eq!(second.transfer_id, first.transfer_id);
    // And over HTTP under a fresh idempotency key: still the same transfer.
    let headers = alice_transfer("ord-resent");
    let res = http(
        &gw.server,
        "POST",
        "/v1/transfer",
        &headers,
        r#"{"from":"acc-1","to":"acc-2","amount":"100.00"}"#,
    )
    .await;
    assert_eq!(res.status, 201);
    assert_eq!(res.json()["transfer_id"], first.transfer_id);
    assert_eq!(
        gw.gateway.ledger.get("tenant-a", "acc-1").unwrap().balance,
        "9900.00",
        "paid once"
    );
}

#[tokio::test]
async fn a_reused_order_id_or_an_empty_one_moves_no_money() {
    let gw = start(Duration::from_secs(2)).await;
    let mut client = ledger(&gw.server).await;
    let transfer = |order: &str, amount: &str| TransferRequest {
        order_id: order.into(),
        from_account: "acc-1".into(),
        to_account: "acc-2".into(),
        amount: amount.into(),
    };
    let res = client
        .stream_transfers(grpc(
            tokio_stream::iter(vec![
                transfer("ord-once", "5.00"),
                // The same order id for another payment is not "done".
                transfer("ord-once", "7.00"),
                // Without an order id a resend cannot be recognised.
                transfer("", "3.00"),
                transfer("", "3.00"),
            ]),
            "alice",
            Some("tenant-a"),
        ))
        .await
        .unwrap();
    let mut results = res.into_inner();
    let mut states = Vec::new();
    while let Some(r) = results.message().await.unwrap() {
        states.push((r.order_id, r.state, r.transfer_id.is_empty()));
    }
    assert_eq!(
        states,
        [
            ("ord-once".to_owned(), "COMMITTED".to_owned(), false),
            ("ord-once".to_owned(), "REJECTED".to_owned(), true),
            (String::new(), "REJECTED".to_owned(), true),
            (String::new(), "REJECTED".to_owned(), true),
        ]
    );
    // Over HTTP, under a fresh idempotency key, the same order id for
    // another payment is a 422.
    let headers = alice_transfer("ord-once");
    let res = http(
        &gw.server,
        "POST",
        "/v1/transfer",
        &headers,
        r#"{"from":"acc-1","to":"acc-2","amount":"9.00"}"#,
    )
    .await;
    assert_eq!(res.status, 422, "{:?}", res.body);
    assert_eq!(res.json()["code"], "transfer.rejected");
    assert_eq!(
        gw.gateway.ledger.get("tenant-a", "acc-1").unwrap().balance,
        "9995.00",
        "only the first order moved money"
    );
    // Every refused attempt is in the audit chain: PREPARE, then ABORT.
    gw.gateway.auditor.flush().await.unwrap();
    let events: Vec<String> = audit_records(&gw.audit_log)
        .iter()
        .filter(|r| r["kind"] == "event")
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events,
        [
            "PREPARE",
            "COMMIT",
            "POST_COMMIT_HOOK",
            "PREPARE",
            "ABORT",
            "PREPARE",
            "ABORT",
            "PREPARE",
            "ABORT",
            "PREPARE",
            "ABORT",
        ]
    );
    finmesh::audit::verify(&gw.audit_log).expect("the chain verifies");
}

/// A transfer body that would move 1.00 from acc-1.
const ONE_UNIT: &str = r#"{"from":"acc-1","to":"acc-2","amount":"1.00"}"#;

/// The code of a refusal, whichever way it was rendered (gRPC
/// trailers-only or problem+json).
fn refusal(res: &HttpAnswer) -> (bool, String) {
    if res.headers.contains_key("grpc-status") {
        (true, res.header(finmesh::reject::CODE_METADATA).to_owned())
    } else {
        (
            false,
            res.json()["code"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// Finding 1 of issue 14: `POST /v1/transfer` is an HTTP route, so it gets
/// the HTTP route's rules — an `Idempotency-Key` is required — whatever
/// `content-type` the client claims, over HTTP/1.1 and h2c. The
/// content-type only decides how the refusal is rendered, and it is read
/// as the gRPC spec defines it.
#[tokio::test]
async fn a_grpc_content_type_never_switches_off_the_idempotency_key_of_an_http_route() {
    let gw = start(Duration::from_secs(2)).await;
    let before = gw.gateway.ledger.get("tenant-a", "acc-1").unwrap().balance;
    // (content-type, whether a refusal is rendered the gRPC way)
    let cases = [
        ("application/grpc", true),
        ("application/grpc+proto", true),
        ("application/grpc+json", true),
        ("application/grpc;charset=utf-8", true),
        ("application/grpc ; x=y", false),
        ("APPLICATION/GRPC", true),
        ("Application/gRPC+Proto", true),
        ("application/grpc-web", true),
        ("application/grpc-web+proto", true),
        ("application/grpc-web-text", true),
        ("application/grpcx", false),
        ("application/grpc-webx", false),
        ("application/json", false),
        ("text/plain", false),
    ];
    for (i, (content_type, grpc)) in cases.into_iter().enumerate() {
        for h2c in [false, true] {
            // 28 transfers in a row spend tenant-a's transfer limit (20/s,
            // checked before idempotency): past it, wait and resend.
            let res = loop {
                let req = http::Request::post(gw.server.url("/v1/transfer"))
                    .header("authorization", format!("Bearer {}", token("alice")))
                    .header("x-tenant-namespace", "tenant-a")
                    .header("x-order-id", format!("ord-ct-{i}-{h2c}"))
                    .header("content-type", content_type)
                    .header("te", "trailers")
                    .body(Full::new(Bytes::from_static(ONE_UNIT.as_bytes())))
                    .unwrap();
                let res = if h2c {
                    send_h2c(req).await
                } else {
                    send(req).await
                };
                if refusal(&res).1 != "ratelimit.exceeded" {
                    break res;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let what = format!(
                "{content_type:?} over {}",
                if h2c { "h2c" } else { "HTTP/1.1" }
            );
            assert_ne!(res.status, 201, "{what}: money moved: {:?}", res.body);
            assert_eq!(
                refusal(&res),
                (grpc, "idempotency.key_missing".to_owned()),
                "{what}: {res:?}"
            );
            if grpc {
                assert_eq!(res.status, 200, "{what}");
                assert_eq!(res.header("grpc-status"), "3", "{what}");
            } else {
                assert_eq!(res.status, 400, "{what}");
            }
        }
    }
    // With a key, the same route still works for the same body (once the
    // transfer limit the refused requests spent has refilled).
    let headers = alice_transfer("ord-ct-keyed");
    let ok = loop {
        let res = http(&gw.server, "POST", "/v1/transfer", &headers, ONE_UNIT).await;
        if refusal(&res).1 != "ratelimit.exceeded" {
            break res;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    assert_eq!(before, "10000.00");
    assert_eq!(
        gw.gateway.ledger.get("tenant-a", "acc-1").unwrap().balance,
        "9999.00",
        "only the keyed transfer moved money"
    );
}

/// Every other switch a client controls in the request head — method
/// overrides, HEAD, lowercase methods, absolute-form targets, `Host`, `te`,
/// repeated and oddly cased headers, path spellings — either reaches the
/// transfer with its rules (here: the key is required) or does not reach
/// it at all. Sent as raw HTTP/1.1 so that nothing normalises them first.
#[tokio::test]
async fn no_method_target_or_header_trick_reaches_the_transfer_without_its_rules() {
    let gw = start(Duration::from_secs(2)).await;
    let port = gw.server.addr.port();
    let token = token("alice");
    let head = |request_line: &str, extra: &str, order: usize| {
        format!(
            "{request_line}\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
             X-Tenant-Namespace: tenant-a\r\nX-Order-Id: ord-trick-{order}\r\n{extra}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{ONE_UNIT}",
            ONE_UNIT.len()
        )
    };
    let grpc = "Content-Type: application/grpc\r\n";
    let json = "Content-Type: application/json\r\n";
    let post = "POST /v1/transfer HTTP/1.1";
    // (request line, extra headers, reaches the transfer handler)
    let absolute = format!("POST http://127.0.0.1:{port}/v1/transfer HTTP/1.1");
    let cases: Vec<(String, String, bool)> = vec![
        (absolute.clone(), grpc.into(), true),
        (
            "POST http://bank.example/v1/transfer HTTP/1.1".into(),
            grpc.into(),
            true,
        ),
        (
            post.into(),
            format!("{grpc}X-Forwarded-Host: bank.example\r\n"),
            true,
        ),
        (
            post.into(),
            "CONTENT-TYPE: Application/GRPC+proto\r\n".into(),
            true,
        ),
        (post.into(), format!("{grpc}{json}"), true),
        (post.into(), format!("{json}{grpc}"), true),
        (post.into(), format!("{grpc}TE: trailers\r\n"), true),
        (post.into(), format!("{grpc}grpc-timeout: 1S\r\n"), true),
        (
            post.into(),
            format!("{json}X-HTTP-Method-Override: GET\r\n"),
            true,
        ),
        (
            post.into(),
            format!("{grpc}X-HTTP-Method-Override: GET\r\n"),
            true,
        ),
        (post.into(), format!("{json}X-HTTP-Method: PUT\r\n"), true),
        (
            post.into(),
            format!("{json}X-Method-Override: GET\r\n"),
            true,
        ),
        ("POST /v1/transfer?x=1 HTTP/1.1".into(), grpc.into(), true),
        ("post /v1/transfer HTTP/1.1".into(), json.into(), false),
        ("HEAD /v1/transfer HTTP/1.1".into(), grpc.into(), false),
        ("GET /v1/transfer HTTP/1.1".into(), grpc.into(), false),
        ("PUT /v1/transfer HTTP/1.1".into(), grpc.into(), false),
        ("POST //v1/transfer HTTP/1.1".into(), grpc.into(), false),
        ("POST /v1//transfer HTTP/1.1".into(), grpc.into(), false),
        ("POST /v1/transfer/ HTTP/1.1".into(), grpc.into(), false),
        ("POST /v1%2Ftransfer HTTP/1.1".into(), grpc.into(), false),
        ("POST /v1/%74ransfer HTTP/1.1".into(), grpc.into(), false),
        ("POST /v1/./transfer HTTP/1.1".into(), grpc.into(), false),
        ("POST /v1/x/../transfer HTTP/1.1".into(), grpc.into(), false),
        ("POST /V1/Transfer HTTP/1.1".into(), grpc.into(), false),
        ("POST /v1/transfer;x HTTP/1.1".into(), grpc.into(), false),
        (
            "POST /finmesh.gateway.v1.Ledger/../../v1/transfer HTTP/1.1".into(),
            grpc.into(),
            false,
        ),
        (
            "POST /finmesh.gateway.v1.Ledger/GetAccount/../../../v1/transfer HTTP/1.1".into(),
            json.into(),
            false,
        ),
    ];
    for (i, (line, extra, reaches)) in cases.iter().enumerate() {
        let answer = raw_http1(gw.server.addr, head(line, extra, i).as_bytes()).await;
        let what = format!("{line} with {extra:?}");
        let status_line = answer.lines().next().unwrap_or_default();
        assert!(
            !status_line.contains(" 201 ") && !answer.contains("COMMITTED"),
            "{what}: money moved: {answer}"
        );
        if *reaches {
            assert!(
                answer
                    .to_ascii_lowercase()
                    .contains("idempotency.key_missing"),
                "{what}: want idempotency.key_missing, got {answer}"
            );
        }
    }
    assert_eq!(
        gw.gateway.ledger.get("tenant-a", "acc-1").unwrap().balance,
        "10000.00",
        "no trick moved money"
    );
}

#[tokio::test]
async fn an_unknown_account_is_a_404_problem() {
    let gw = start(Duration::from_secs(2)).await;
    let headers = vec![
        ("authorization", format!("Bearer {}", token("alice"))),
        ("x-tenant-namespace", "tenant-a".to_owned()),
    ];
    let res = http(&gw.server, "GET", "/v1/accounts/acc-404", &headers, "").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.json()["status"], 404);
    assert_eq!(res.json()["code"], "ledger.account_not_found");
}

/// The built `reference_gateway` example, run as users run it (signals:
/// Unix only).
#[cfg(unix)]
mod cli {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::time::Instant;

    fn gateway_command() -> Command {
        let mut cmd = Command::new(support::example_binary("reference_gateway"));
        cmd.env("FINMESH_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "warn");
        cmd
    }

    fn decode(token: &str, secret: &[u8]) -> serde_json::Value {
        finmesh::auth::install_default_crypto_provider();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&["finmesh-demo"]);
        validation.set_audience(&["finmesh-gateway"]);
        let key = jsonwebtoken::DecodingKey::from_secret(secret);
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .expect("a valid token under that secret")
            .claims
    }

    #[test]
    fn token_prints_only_a_token_signed_with_the_configured_secret() {
        let out = gateway_command().args(["token", "alice"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let token = stdout.strip_suffix('\n').expect("one line");
        assert!(!token.contains(char::is_whitespace), "{stdout:?}");
        let claims = decode(token, SECRET);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["tenant"], "tenant-a");

        // Without FINMESH_JWT_SECRET: the demo secret.
        let out = gateway_command()
            .env_remove("FINMESH_JWT_SECRET")
            .args(["token", "bob"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let token = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            decode(token.trim_end(), gateway::DEMO_SECRET.as_bytes())["sub"],
            "bob"
        );

        // A secret the server would refuse mints nothing.
        let out = gateway_command()
            .env("FINMESH_JWT_SECRET", "too-short")
            .args(["token", "alice"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        // ... but `--help` still answers.
        let out = gateway_command()
            .env("FINMESH_JWT_SECRET", "too-short")
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // An unknown user: nothing on stdout, exit 2.
        let out = gateway_command()
            .args(["token", "mallory"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        // --help is an answer, not an error; a bad flag is an error.
        let out = gateway_command().arg("--help").output().unwrap();
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--message-timeout"));
        assert!(
            help.contains("--metrics-addr ADDR") && help.contains("default 127.0.0.1:9464"),
            "{help}"
        );
        let out = gateway_command()
            .args(["--metrics-addr", "everywhere"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let out = gateway_command()
            .args(["--message-timeout", "soon"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }

    /// A gateway process on a free loopback port; killed if still running
    /// when dropped.
    struct Process {
        child: Child,
        addr: SocketAddr,
        metrics_addr: SocketAddr,
        stderr: Option<std::thread::JoinHandle<String>>,
    }

    impl Process {
        /// Starts the gateway and waits for its banner, which names the
        /// address it bound.
        fn start(mut cmd: Command, args: &[&str]) -> Self {
            let child = cmd
                .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Owned (and killed on drop) before anything below can panic.
            let mut process = Self {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                stderr: None,
            };
            let stderr = process.child.stderr.take().unwrap();
            process.stderr = Some(std::thread::spawn(move || {
                std::io::read_to_string(stderr).unwrap_or_default()
            }));
            let stdout = process.child.stdout.take().unwrap();
            let (banner_tx, banner_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let _ = banner_tx.send(lines.next());
                // Keep draining so the gateway never blocks on a full pipe.
                lines.for_each(drop);
            });
            let banner = banner_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the gateway printed no banner within 60 s")
                .expect("a banner")
                .unwrap();
            process.addr = banner
                .split("http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.trim_end_matches(';').parse().ok())
                .unwrap_or_else(|| panic!("no address in {banner:?}"));
            process.metrics_addr = banner
                .split("metrics on http://")
                .nth(1)
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no metrics address in {banner:?}"));
            process
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        async fn accounts(&self, user: &str, tenant: &str) -> HttpAnswer {
            let auth = format!("Bearer {}", token(user));
            support::get(
                &self.url("/v1/accounts"),
                &[("authorization", &auth), ("x-tenant-namespace", tenant)],
            )
            .await
        }

        fn sigterm(&self) {
            let kill = Command::new("bash")
                .args(["-c", &format!("kill -TERM {}", self.child.id())])
                .status()
                .unwrap();
            assert!(kill.success());
        }

        /// Waits (bounded) for the process to exit on its own; its status
        /// and everything it wrote to stderr.
        async fn exit(mut self) -> (ExitStatus, String) {
            tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                let status = loop {
                    if let Some(status) = self.child.try_wait().unwrap() {
                        break status;
                    }
                    assert!(Instant::now() < deadline, "the gateway did not exit");
                    std::thread::sleep(Duration::from_millis(20));
                };
                let stderr = self.stderr.take().unwrap().join().unwrap();
                (status, stderr)
            })
            .await
            .unwrap()
        }
    }

    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Rows per chain in the audit table.
    #[cfg(feature = "audit-postgres")]
    async fn chain_rows(url: &str) -> Vec<(String, i64, i64)> {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        match client
            .query(
                "SELECT chain_id, count(*), count(DISTINCT seq) FROM finmesh_audit GROUP BY 1 ORDER BY 1",
                &[],
            )
            .await
        {
            Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect(),
            // Not created yet.
            Err(_) => Vec::new(),
        }
    }

    #[cfg(feature = "audit-postgres")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_gateway_processes_ship_one_verified_trail_to_postgres_through_an_outage() {
        let test = "two_gateway_processes_ship_one_verified_trail_to_postgres_through_an_outage";
        let Some(mut pg) = support::postgres_server::PostgresServer::start(test) else {
            return;
        };
        const PER_PHASE: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
        let url = pg.url();
        let gateways: Vec<Process> = logs
            .iter()
            .map(|log| {
                let log = log.to_str().unwrap();
                let args = [
                    "--audit-log",
                    log,
                    "--audit-postgres",
                    &url,
                    "--drain-delay",
                    "0s",
                ];
                Process::start(gateway_command(), &args)
            })
            .collect();
        let phase = || async {
            for gw in &gateways {
                for _ in 0..PER_PHASE {
                    assert_eq!(gw.accounts("alice", "tenant-a").await.status, 200);
                }
            }
        };
        phase().await;
        // PostgreSQL stops in the middle: the gateways keep serving, the
        // records wait in their spools.
        pg.stop();
        phase().await;
        pg.resume();
        phase().await;
        let want = (3 * PER_PHASE) as i64;
        let deadline = Instant::now() + Duration::from_secs(60);
        let rows = loop {
            let rows = chain_rows(&url).await;
            if rows.len() == 2 && rows.iter().all(|(_, n, _)| *n >= want) {
                break rows;
            }
            assert!(Instant::now() < deadline, "not delivered: {rows:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for (chain, count, distinct) in &rows {
            assert_eq!(
                (*count, *distinct),
                (want, want),
                "{chain}: every record once"
            );
        }
        let chains = finmesh::audit::postgres::verify_postgres(&url, "finmesh_audit")
            .await
            .unwrap();
        assert_eq!(chains.len(), 2);
        for c in &chains {
            let report = c
                .result
                .as_ref()
                .unwrap_or_else(|e| panic!("{}: {e}", c.chain_id));
            assert_eq!(report.records, want as u64);
        }
        for gw in gateways {
            gw.sigterm();
            let (status, stderr) = gw.exit().await;
            assert!(status.success(), "{status}: {stderr}");
        }
        assert_eq!(
            chain_rows(&url).await,
            rows,
            "nothing more, nothing duplicated"
        );
    }

    #[tokio::test]
    async fn sigterm_drains_then_exits_zero_with_a_verified_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let p = Process::start(
            gateway_command(),
            // Long enough for the checks below on a loaded machine.
            &[
                "--drain-delay",
                "3s",
                "--audit-log",
                audit.to_str().unwrap(),
            ],
        );
        assert_eq!(support::get(&p.url("/readyz"), &[]).await.status, 200);
        assert_eq!(p.accounts("alice", "tenant-a").await.status, 200);

        let signalled = Instant::now();
        p.sigterm();
        // Readiness fails at once; liveness and traffic stay up meanwhile.
        let ready = loop {
            let res = support::get(&p.url("/readyz"), &[]).await;
            if res.status != 200 || signalled.elapsed() > Duration::from_secs(5) {
                break res;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(ready.status, 503);
        assert_eq!(support::get(&p.url("/livez"), &[]).await.status, 200);
        assert_eq!(p.accounts("alice", "tenant-a").await.status, 200);
        // Then the listener closes and the process exits 0 on its own.
        let (status, stderr) = p.exit().await;
        assert!(status.success(), "{status:?}\n{stderr}");
        assert!(
            signalled.elapsed() >= Duration::from_secs(3),
            "drained first"
        );
        // Both governed requests (probes are not governed) were audited,
        // flushed before exit, and the chain holds.
        let report = finmesh::audit::verify(&audit).expect("the chain verifies");
        assert_eq!(report.records, 2, "{report:?}");
    }

    #[tokio::test]
    async fn without_a_secret_the_gateway_warns_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let mut cmd = gateway_command();
        cmd.env_remove("FINMESH_JWT_SECRET");
        let p = Process::start(
            cmd,
            &[
                "--drain-delay",
                "0s",
                "--audit-log",
                audit.to_str().unwrap(),
            ],
        );
        p.sigterm();
        let (status, stderr) = p.exit().await;
        assert!(status.success(), "{status:?}\n{stderr}");
        assert!(stderr.contains("PUBLIC DEMO SECRET"), "{stderr}");
    }

    #[tokio::test]
    async fn config_dir_policy_is_hot_reloaded() {
        let config = tempfile::tempdir().unwrap();
        for file in ["tenants.yaml", "rbac.yaml", "ratelimits.yaml"] {
            std::fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("examples/gateway/config")
                    .join(file),
                config.path().join(file),
            )
            .unwrap();
        }
        let audit = config.path().join("audit.log");
        let p = Process::start(
            gateway_command(),
            &[
                "--config",
                config.path().to_str().unwrap(),
                "--audit-log",
                audit.to_str().unwrap(),
            ],
        );
        assert_eq!(p.accounts("alice", "tenant-a").await.status, 200);
        assert_eq!(p.accounts("bob", "tenant-b").await.status, 200);
        // Metrics on their own listener; the public port does not serve them.
        let metrics = support::get(&format!("http://{}/metrics", p.metrics_addr), &[]).await;
        assert_eq!(metrics.status, 200);
        assert!(
            String::from_utf8_lossy(&metrics.body).contains("tenant=\"tenant-b\""),
            "{:?}",
            metrics.body
        );
        let public = support::get(&p.url("/metrics"), &[]).await;
        assert_eq!(public.status, 401);
        // Suspend tenant-a the way an operator would: write, then rename.
        let tenants = std::fs::read_to_string(config.path().join("tenants.yaml")).unwrap();
        let suspended = tenants.replacen(
            "  - namespace: tenant-a\n",
            "  - namespace: tenant-a\n    status: Suspended\n",
            1,
        );
        assert_ne!(tenants, suspended);
        let tmp = config.path().join(".tenants.yaml.tmp");
        std::fs::write(&tmp, suspended).unwrap();
        std::fs::rename(&tmp, config.path().join("tenants.yaml")).unwrap();
        let started = Instant::now();
        let refused = loop {
            let res = p.accounts("alice", "tenant-a").await;
            if res.status != 200 || started.elapsed() > Duration::from_secs(10) {
                break res;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(refused.status, 403, "{:?}", refused.body);
        assert_eq!(refused.json()["code"], "tenant.suspended");
        // Other tenants are untouched.
        assert_eq!(p.accounts("bob", "tenant-b").await.status, 200);
    }
}
