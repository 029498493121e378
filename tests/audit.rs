//! AuditLayer over real servers and clients on loopback: every request is
//! recorded once, in one verified hash chain, and tampering is found.

#![cfg(feature = "audit")]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::routing::post;
use finmesh::audit::{
    AuditHandle, AuditLayer, AuditRecord, Auditor, BreakKind, Durability, FileSink,
    FileSinkOptions, MAX_FIELD_BYTES, MemorySink, Outcome, RecordKind, Verdict, VerifyError,
    verify,
};
use finmesh::future::ResponseFuture;
use finmesh::labels::Authorization;
use finmesh::{Rejection, RejectionKind, RequestLabels, ResponseBody, RiskLevel, TenantNamespace};
use http::{Request, Response};
use http_body_util::Full;
use support::{EchoRequest, echo_app, grpc_client, grpc_request, spawn};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

/// Test-only stand-in for the layers inside the audit layer: labels the
/// request from `x-*` headers (as auth, tenant, RBAC and idempotency
/// would) and refuses it when `x-reject: <code>` is sent.
#[derive(Clone, Copy)]
struct FakeGovernanceLayer;

impl<S> Layer<S> for FakeGovernanceLayer {
    type Service = FakeGovernance<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FakeGovernance { inner }
    }
}

#[derive(Clone)]
struct FakeGovernance<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for FakeGovernance<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let labels = req
            .extensions()
            .get::<RequestLabels>()
            .expect("the audit layer inserts RequestLabels")
            .clone();
        let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if let Some(v) = h("x-trace") {
            labels.set_trace_id(v);
        }
        if let Some(v) = h("x-order-id") {
            labels.set_order_id(v);
        }
        if let Some(v) = h("x-subject") {
            labels.set_subject(v);
            labels.set_risk(RiskLevel::Medium);
            labels.set_tenant(TenantNamespace::parse("tenant-a").unwrap());
            labels.set_authorization(Authorization {
                allowed: true,
                shadow: false,
                verb: "create".into(),
                resource: "transfers".into(),
                name: None,
                binding: Some("RoleBinding/tenant-a/payers".into()),
                role: Some("payer".into()),
            });
            labels.update(|l| {
                l.api_group = Some("".into());
                l.groups = Some(Arc::from([Arc::from("payments")]));
            });
        }
        // Another resource, as RBAC would map it.
        if let (Some(verb), Some(resource)) = (h("x-verb"), h("x-resource")) {
            labels.set_authorization(Authorization {
                allowed: true,
                shadow: false,
                verb: verb.into(),
                resource: resource.into(),
                name: None,
                binding: None,
                role: None,
            });
            labels.update(|l| l.api_group = Some("".into()));
        }
        if let Some(v) = h("idempotency-key") {
            labels.set_idempotency(v, false);
        }
        if let Some(code) = h("x-reject") {
            let rejection = Rejection::new(
                RejectionKind::PermissionDenied,
                code.to_owned(),
                "refused by the test layer",
            );
            return ResponseFuture::rejected(rejection.respond(&req));
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}

/// PREPARE, COMMIT, POST_COMMIT_HOOK, as the reference gateway's transfer.
async fn transfer(axum::Extension(audit): axum::Extension<AuditHandle>) -> &'static str {
    for step in ["PREPARE", "COMMIT", "POST_COMMIT_HOOK"] {
        audit
            .event(
                step,
                serde_json::json!({ "amount": "10.00", "currency": "EUR" }),
            )
            .await
            .expect("audit event queued");
    }
    "transferred"
}

fn app(auditor: &Auditor) -> axum::Router {
    echo_app()
        .route("/transfer", post(transfer))
        .layer(FakeGovernanceLayer)
        .layer(AuditLayer::new(auditor.clone()))
}

fn read_records(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn fast_file(path: &Path) -> FileSink {
    FileSink::open_with(
        path,
        FileSinkOptions {
            durability: Durability::Interval(Duration::from_millis(20)),
            ..FileSinkOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_requests_make_ten_thousand_chained_records() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let auditor = Auditor::spawn(fast_file(&path)).unwrap();
    let server = spawn(app(&auditor)).await;
    let client = support::http_client();
    let permits = Arc::new(Semaphore::new(200));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        let url = server.url("/ok");
        tasks.spawn(async move {
            let req = Request::get(url)
                .header("x-order-id", format!("order-{i}"))
                .body(Full::default())
                .unwrap();
            let res = client.request(req).await.expect("request");
            let status = res.status();
            http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap();
            drop(permit);
            status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    auditor.flush().await.unwrap();

    let report = verify(&path).unwrap();
    assert_eq!(report.records, N as u64);
    assert_eq!(report.last_seq, Some(N as u64));
    let records = read_records(&path);
    assert_eq!(records.len(), N);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "contiguous sequence");
        assert_eq!(r.kind, RecordKind::Request);
        assert_eq!(r.http_status, Some(200));
        assert_eq!(r.outcome, Some(Outcome::Complete));
    }
    let mut orders: Vec<_> = records
        .iter()
        .map(|r| r.order_id.clone().unwrap())
        .collect();
    orders.sort();
    orders.dedup();
    assert_eq!(orders.len(), N, "every request recorded exactly once");
    assert_eq!(auditor.stats().written, N as u64);
    assert_eq!(auditor.stats().refused, 0);
}

/// Writes a 10-record log of events and returns its lines.
async fn ten_record_log(path: &Path) -> Vec<String> {
    let auditor = Auditor::spawn(FileSink::open(path).unwrap()).unwrap();
    for i in 1..=10 {
        auditor
            .event("STEP", serde_json::json!({ "amount": i * 100 }))
            .await
            .unwrap();
    }
    auditor.flush().await.unwrap();
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn reseal(line: &str, edit: impl FnOnce(&mut AuditRecord)) -> String {
    let mut r: AuditRecord = serde_json::from_str(line).unwrap();
    edit(&mut r);
    let sealed = r.seal();
    String::from_utf8(sealed).unwrap().trim_end().to_owned()
}

#[tokio::test]
async fn tamper_table_reports_the_first_broken_link() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.log");
    let lines = ten_record_log(&original).await;
    assert_eq!(verify(&original).unwrap().records, 10);

    type Tamper = fn(Vec<String>) -> String;
    type Expect = fn(&BreakKind) -> bool;
    // (case, tamper, line, seq found there, what is wrong)
    let table: Vec<(&str, Tamper, u64, Option<u64>, Expect)> = vec![
        (
            "edit a field",
            |mut l| {
                l[4] = l[4].replace("\"amount\":500", "\"amount\":900");
                l.join("\n") + "\n"
            },
            5,
            Some(5),
            |k| matches!(k, BreakKind::Changed { .. }),
        ),
        (
            "edit and re-hash",
            |mut l| {
                l[4] = reseal(&l[4], |r| {
                    r.data = Some(serde_json::json!({ "amount": 900 }))
                });
                l.join("\n") + "\n"
            },
            6,
            Some(6),
            |k| matches!(k, BreakKind::PrevMismatch { .. }),
        ),
        (
            "delete",
            |mut l| {
                l.remove(4);
                l.join("\n") + "\n"
            },
            5,
            Some(6),
            |k| matches!(k, BreakKind::Missing { expected: 5 }),
        ),
        (
            "delete the first",
            |mut l| {
                l.remove(0);
                l.join("\n") + "\n"
            },
            1,
            Some(2),
            |k| matches!(k, BreakKind::Missing { expected: 1 }),
        ),
        (
            "insert a copy",
            |mut l| {
                let copy = l[2].clone();
                l.insert(5, copy);
                l.join("\n") + "\n"
            },
            6,
            Some(3),
            |k| matches!(k, BreakKind::OutOfOrder { expected: 6 }),
        ),
        (
            "insert a forged, well-sealed record",
            |mut l| {
                let forged = reseal(&l[4], |r| {
                    r.prev = r.hash.clone();
                    r.seq = 6;
                });
                let prev5: AuditRecord = serde_json::from_str(&l[4]).unwrap();
                let forged = reseal(&forged, |r| r.prev = prev5.hash);
                l.insert(5, forged);
                l.join("\n") + "\n"
            },
            7,
            Some(6),
            |k| matches!(k, BreakKind::OutOfOrder { expected: 7 }),
        ),
        (
            "reorder",
            |mut l| {
                l.swap(3, 4);
                l.join("\n") + "\n"
            },
            4,
            Some(5),
            |k| matches!(k, BreakKind::OutOfOrder { expected: 4 }),
        ),
        (
            "truncate mid-record",
            |l| {
                let mut s = l[..7].join("\n") + "\n";
                s.push_str(&l[7][..40]);
                s
            },
            8,
            Some(8),
            |k| matches!(k, BreakKind::Truncated),
        ),
        (
            "garble a line",
            |mut l| {
                l[2] = "not json at all".into();
                l.join("\n") + "\n"
            },
            3,
            None,
            |k| matches!(k, BreakKind::Malformed(_)),
        ),
    ];
    for (case, tamper, line, seq, kind) in table {
        let path = dir.path().join("tampered.log");
        std::fs::write(&path, tamper(lines.clone())).unwrap();
        match verify(&path) {
            Err(VerifyError::Broken(b)) => {
                assert_eq!(b.line, line, "{case}: {b}");
                assert_eq!(b.seq, seq, "{case}: {b}");
                assert!(kind(&b.kind), "{case}: {b}");
                assert_eq!(b.verified, line - 1, "{case}: {b}");
            }
            other => panic!("{case}: not detected: {other:?}"),
        }
    }

    // Cutting whole records off the end keeps a valid chain; the head
    // recorded elsewhere is what exposes it.
    let path = dir.path().join("cut.log");
    std::fs::write(&path, lines[..8].join("\n") + "\n").unwrap();
    let full = verify(&original).unwrap();
    let cut = verify(&path).unwrap();
    assert_eq!(cut.last_seq, Some(8));
    assert_ne!(cut.head, full.head);
}

#[tokio::test]
async fn torn_last_line_is_recovered_on_restart_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    {
        let auditor = Auditor::spawn(fast_file(&path)).unwrap();
        let server = spawn(app(&auditor)).await;
        for _ in 0..5 {
            assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
        }
        auditor.flush().await.unwrap();
        server.shutdown().await;
    }
    // The crash: half a record, no newline.
    let sixth = b"{\"seq\":6,\"time\":\"2026-11-25T02:00:00.000000Z\",\"kind\":\"requ";
    let mut bytes = std::fs::read(&path).unwrap();
    let good_len = bytes.len() as u64;
    bytes.extend_from_slice(sixth);
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        verify(&path),
        Err(VerifyError::Broken(b)) if b.kind == BreakKind::Truncated && b.line == 6
    ));

    let auditor = Auditor::spawn(fast_file(&path)).unwrap();
    let torn = auditor.recovery().expect("torn line reported");
    assert_eq!((torn.line, torn.offset), (6, good_len));
    assert_eq!(torn.bytes, sixth.len() as u64);
    let server = spawn(app(&auditor)).await;
    for _ in 0..3 {
        assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
    }
    auditor.flush().await.unwrap();
    let report = verify(&path).unwrap();
    assert_eq!(report.records, 8);
    let seqs: Vec<u64> = read_records(&path).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn rejections_are_audited_with_their_codes() {
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(sink.clone()).unwrap();
    let server = spawn(app(&auditor)).await;
    let denied = support::get(
        &server.url("/echo"),
        &[
            ("x-subject", "mallory"),
            ("x-reject", "rbac.denied"),
            ("x-trace", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ],
    )
    .await;
    assert_eq!(denied.status, 403);
    let ok = support::get(&server.url("/echo"), &[("x-subject", "alice")]).await;
    assert_eq!(ok.status, 200);
    // Over gRPC: a trailers-only PERMISSION_DENIED.
    let mut client = grpc_client(server.addr).await;
    let status = client
        .unary(grpc_request(
            EchoRequest::default(),
            &[("x-reject", "tenant.suspended")],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    auditor.flush().await.unwrap();

    let records = sink.records();
    sink.verify().unwrap();
    assert_eq!(records.len(), 3);
    let r = &records[0];
    assert_eq!(r.decision, Some(Verdict::Deny));
    assert_eq!(r.code.as_deref(), Some("rbac.denied"));
    assert_eq!(r.http_status, Some(403));
    assert_eq!(r.subject.as_deref(), Some("mallory"));
    assert_eq!(
        r.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let r = &records[1];
    assert_eq!(r.decision, Some(Verdict::Allow));
    assert_eq!(r.code, None);
    assert_eq!(r.binding.as_deref(), Some("RoleBinding/tenant-a/payers"));
    assert_eq!(
        (r.verb.as_deref(), r.resource.as_deref()),
        (Some("create"), Some("transfers"))
    );
    assert_eq!(r.tenant.as_deref(), Some("tenant-a"));
    assert_eq!(r.risk, Some(RiskLevel::Medium));
    let r = &records[2];
    assert_eq!(r.decision, Some(Verdict::Deny));
    assert_eq!(r.code.as_deref(), Some("tenant.suspended"));
    assert_eq!(r.route.as_deref(), Some("/finmesh.test.v1.Echo/Unary"));
    assert_eq!((r.http_status, r.grpc_status), (Some(200), Some(7)));
}

#[tokio::test]
async fn handler_events_join_the_chain_with_the_request_context() {
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(sink.clone()).unwrap();
    let server = spawn(app(&auditor)).await;
    let req = Request::post(server.url("/transfer"))
        .header("x-subject", "alice")
        .header("x-order-id", "order-42")
        .header("x-trace", "0af7651916cd43dd8448eb211c80319c")
        .header("idempotency-key", "key-1")
        .body(Full::default())
        .unwrap();
    let res = support::send(req).await;
    assert_eq!(res.status, 200);
    auditor.flush().await.unwrap();
    sink.verify().unwrap();

    let records = sink.records();
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.kind, r.event.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (RecordKind::Event, Some("PREPARE")),
            (RecordKind::Event, Some("COMMIT")),
            (RecordKind::Event, Some("POST_COMMIT_HOOK")),
            (RecordKind::Request, None),
        ]
    );
    for r in &records {
        assert_eq!(
            r.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(r.order_id.as_deref(), Some("order-42"));
        assert_eq!(r.subject.as_deref(), Some("alice"));
        assert_eq!(r.tenant.as_deref(), Some("tenant-a"));
        assert_eq!(r.idempotency_key.as_deref(), Some("key-1"));
    }
    assert_eq!(records[0].data.as_ref().unwrap()["amount"], "10.00");
    assert_eq!(records[3].method.as_deref(), Some("POST"));
    assert_eq!(records[3].route.as_deref(), Some("/transfer"));
    assert!(!records[3].replayed);
}

/// Appends the request body, whatever its size, as a handler event.
async fn memo(axum::Extension(audit): axum::Extension<AuditHandle>, body: String) -> &'static str {
    audit
        .event("MEMO", serde_json::json!({ "memo": body, "n": [1, 2, 3] }))
        .await
        .expect("audit event queued");
    "noted"
}

#[tokio::test]
async fn ten_megabyte_fields_grow_the_log_by_less_than_100_kb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let auditor = Auditor::spawn(fast_file(&path)).unwrap();
    let server = spawn(
        echo_app()
            .route("/memo", post(memo))
            .layer(axum::extract::DefaultBodyLimit::max(2 << 20))
            .layer(FakeGovernanceLayer)
            .layer(AuditLayer::new(auditor.clone())),
    )
    .await;
    let huge = "m".repeat(1_000_000);
    // Headers as long as hyper takes.
    let long_order = "o".repeat(60_000);
    for _ in 0..10 {
        let req = Request::post(server.url("/memo"))
            .header("x-subject", "alice")
            .header("x-order-id", &long_order)
            .header("idempotency-key", &long_order)
            .body(Full::new(bytes::Bytes::from(huge.clone())))
            .unwrap();
        assert_eq!(support::send(req).await.status, 200);
    }
    auditor.flush().await.unwrap();
    let grown = std::fs::metadata(&path).unwrap().len();
    assert!(grown < 100 * 1024, "the audit log grew by {grown} bytes");
    assert_eq!(verify(&path).unwrap().records, 20);
    let records = read_records(&path);
    let event = &records[0];
    assert_eq!(event.event.as_deref(), Some("MEMO"));
    assert!(event.order_id.as_ref().unwrap().starts_with("oooo"));
    assert_eq!(event.order_id.as_ref().unwrap().len(), MAX_FIELD_BYTES);
    let data = event.data.as_ref().unwrap();
    assert_eq!(data["memo"].as_str().unwrap().len(), MAX_FIELD_BYTES);
    assert_eq!(data["n"], serde_json::json!([1, 2, 3]));
    assert_eq!(event.truncated, ["order_id", "idempotency_key", "data"]);
    let request = &records[1];
    assert_eq!(request.kind, RecordKind::Request);
    assert_eq!(request.truncated, ["order_id", "idempotency_key"]);

    // A path far past any route is cut too; a short one is not marked.
    let long_path = format!("/v1/{}", "p".repeat(60_000));
    assert_eq!(support::get(&server.url(&long_path), &[]).await.status, 200);
    assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
    auditor.flush().await.unwrap();
    let records = read_records(&path);
    let [.., long, short] = &records[..] else {
        panic!("records: {records:?}")
    };
    assert_eq!(long.route.as_ref().unwrap().len(), MAX_FIELD_BYTES);
    assert_eq!(long.truncated, ["route"]);
    assert!(short.truncated.is_empty());
    assert!(
        !std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .contains("truncated")
    );
    assert_eq!(verify(&path).unwrap().records, 22);
}

/// Writes `n` requests' records through a sink with `options`.
async fn write_requests(path: &Path, options: FileSinkOptions, n: usize) {
    let auditor = Auditor::spawn(FileSink::open_with(path, options).unwrap()).unwrap();
    let server = spawn(app(&auditor)).await;
    for _ in 0..n {
        assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
    }
    auditor.flush().await.unwrap();
}

#[tokio::test]
async fn rotated_files_are_kept_by_count_or_bytes_and_the_rest_still_verifies() {
    for (name, keep_files, keep_bytes) in [
        ("by count", Some(2), None),
        ("by bytes", None, Some(9 * 1024)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let options = FileSinkOptions {
            durability: Durability::Os,
            max_file_bytes: 4 * 1024,
            max_rotated_files: keep_files,
            max_rotated_bytes: keep_bytes,
            ..FileSinkOptions::default()
        };
        write_requests(&path, options.clone(), 60).await;
        let rotated: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| {
                n.strip_prefix("audit.log.")
                    .is_some_and(|d| d.parse::<u64>().is_ok())
            })
            .collect();
        assert!(rotated.len() <= 2, "{name}: {rotated:?}");
        assert!(
            !rotated.contains(&"audit.log.1".to_owned()),
            "{name}: {rotated:?}"
        );
        let report = verify(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let pruned = report
            .pruned
            .clone()
            .expect("started after the pruned head");
        assert_eq!(report.last_seq, Some(60), "{name}");
        assert_eq!(report.records, 60 - pruned.seq, "{name}");

        // Restarting resumes the chain, and it still verifies.
        write_requests(&path, options, 5).await;
        let report = verify(&path).unwrap();
        assert_eq!(report.last_seq, Some(65), "{name}");
        let pruned = report.pruned.expect("still pruned");

        // A forged anchor is found at the first record left.
        std::fs::write(
            dir.path().join("audit.log.pruned"),
            format!(
                "{{\"seq\":{},\"hash\":\"{}\"}}\n",
                pruned.seq,
                "0".repeat(64)
            ),
        )
        .unwrap();
        match verify(&path) {
            Err(VerifyError::Broken(b)) => {
                assert!(
                    matches!(b.kind, BreakKind::PrevMismatch { .. }),
                    "{name}: {b}"
                )
            }
            other => panic!("{name}: not detected: {other:?}"),
        }
    }
}

#[tokio::test]
async fn low_free_space_fails_readiness_and_counts_before_the_disk_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let sink = FileSink::open_with(
        &path,
        FileSinkOptions {
            // More than any disk has free.
            min_free_bytes: u64::MAX,
            ..FileSinkOptions::default()
        },
    )
    .unwrap();
    let auditor = Auditor::spawn(sink).unwrap();
    let server = spawn(app(&auditor)).await;
    // Records are still written: the disk is not full.
    for _ in 0..3 {
        assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
    }
    auditor.flush().await.unwrap();
    let stats = auditor.stats();
    assert!(stats.low_space, "{stats:?}");
    assert_eq!(stats.low_space_errors, 1, "counted once per crossing");
    assert!(!stats.failed);
    assert_eq!(stats.written, 3);
    let err = auditor.readiness().unwrap_err();
    assert!(err.contains("bytes free"), "{err}");
    assert_eq!(verify(&path).unwrap().records, 3);

    // With room, ready.
    let fine = Auditor::spawn(FileSink::open(dir.path().join("other.log")).unwrap()).unwrap();
    fine.event("STARTUP", serde_json::json!({})).await.unwrap();
    fine.flush().await.unwrap();
    assert_eq!(fine.readiness(), Ok(()));
    assert_eq!(fine.stats().low_space_errors, 0);
}

#[test]
fn logs_written_before_the_truncated_member_still_parse_and_verify() {
    // Sealed by the previous release: no `truncated` member.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let line = r#"{"seq":1,"time":"2026-01-01T00:00:00.000000Z","kind":"event","event":"STARTUP","trace_id":null,"order_id":null,"tenant":null,"subject":null,"risk":null,"method":null,"route":null,"verb":null,"resource":null,"name":null,"decision":null,"code":null,"binding":null,"shadow":false,"http_status":null,"grpc_status":null,"latency_us":null,"outcome":null,"idempotency_key":null,"replayed":false,"data":{},"prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
    let hash = {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(line.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let sealed = format!("{},\"hash\":\"{hash}\"}}\n", &line[..line.len() - 1]);
    std::fs::write(&path, &sealed).unwrap();
    assert_eq!(verify(&path).unwrap().records, 1);
    let r: AuditRecord = serde_json::from_str(sealed.trim_end()).unwrap();
    assert!(r.truncated.is_empty());
    // And a sink continues it.
    let sink = FileSink::open(&path).unwrap();
    drop(sink);
}

#[tokio::test]
async fn rotation_across_files_verifies_as_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let options = FileSinkOptions {
        durability: Durability::EveryRecord,
        max_file_bytes: 4 * 1024,
        ..FileSinkOptions::default()
    };
    let auditor = Auditor::spawn(FileSink::open_with(&path, options).unwrap()).unwrap();
    let server = spawn(app(&auditor)).await;
    for _ in 0..60 {
        assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
    }
    auditor.flush().await.unwrap();
    let report = verify(&path).unwrap();
    assert_eq!(report.records, 60);
    assert!(report.files.len() >= 5, "{:?}", report.files);
    assert_eq!(report.files[0], dir.path().join("audit.log.1"));
    assert_eq!(report.files.last().unwrap(), &path);

    // Deleting a middle file breaks the chain at the next file's first line.
    std::fs::remove_file(dir.path().join("audit.log.2")).unwrap();
    match verify(&path) {
        Err(VerifyError::Broken(b)) => {
            assert_eq!(b.file, dir.path().join("audit.log.3"));
            assert_eq!(b.line, 1);
            assert!(matches!(b.kind, BreakKind::Missing { .. }), "{b}");
        }
        other => panic!("not detected: {other:?}"),
    }
}

#[tokio::test]
async fn grpc_calls_are_recorded_with_the_status_from_their_trailers() {
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(sink.clone()).unwrap();
    let server = spawn(app(&auditor)).await;
    let mut client = grpc_client(server.addr).await;
    let reply = client
        .unary(grpc_request(
            EchoRequest {
                message: "hi".into(),
                ..Default::default()
            },
            &[("x-order-id", "order-7")],
        ))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().message, "hi");
    // A bidirectional stream is recorded when its response stream ends.
    let outbound = tokio_stream::iter((0..3).map(|i| EchoRequest {
        message: format!("m{i}"),
        ..Default::default()
    }));
    let mut inbound = client.bidi(outbound).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(msg) = inbound.message().await.unwrap() {
        n += 1;
        assert_eq!(msg.seq, n);
    }
    assert_eq!(n, 3);
    // The record is written when the server finishes the body; give the
    // server a moment to poll it to its end after the client saw it.
    let mut records = Vec::new();
    for _ in 0..100 {
        auditor.flush().await.unwrap();
        records = sink.records();
        if records.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(records.len(), 2, "{records:?}");
    let unary = &records[0];
    assert_eq!(unary.route.as_deref(), Some("/finmesh.test.v1.Echo/Unary"));
    assert_eq!(unary.order_id.as_deref(), Some("order-7"));
    assert_eq!(unary.grpc_status, Some(0));
    assert_eq!(unary.outcome, Some(Outcome::Complete));
    let bidi = &records[1];
    assert_eq!(bidi.route.as_deref(), Some("/finmesh.test.v1.Echo/Bidi"));
    assert_eq!(bidi.grpc_status, Some(0));
    assert_eq!(bidi.outcome, Some(Outcome::Complete));
    sink.verify().unwrap();
}

/// Whatever the batch window — none, the default, a long one — records
/// that trickle in one at a time and records that arrive in a burst larger
/// than one batch are all written, in one unbroken chain, by `flush`.
#[tokio::test]
async fn every_record_is_written_whatever_the_batch_window() {
    for window in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_millis(50),
    ] {
        let sink = MemorySink::new();
        let auditor = Auditor::builder()
            .batch_window(window)
            .spawn(sink.clone())
            .unwrap();
        for i in 0..20 {
            auditor
                .event("TRICKLE", serde_json::json!({ "i": i }))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let burst: Vec<_> = (0..600)
            .map(|i| auditor.event("BURST", serde_json::json!({ "i": i })))
            .collect();
        for sent in futures_util::future::join_all(burst).await {
            sent.unwrap();
        }
        auditor.flush().await.unwrap();
        let records = sink.records();
        assert_eq!(records.len(), 620, "window {window:?}");
        sink.verify().unwrap();
        assert_eq!(auditor.stats().written, 620, "window {window:?}");
    }
}

/// A long batch window never makes producers time out: with a 4-record
/// queue, a 500 ms window and a 100 ms wait timeout, a burst of events is
/// written, none refused. The window is capped at a quarter of the wait
/// timeout and skipped while the queue is half full; a writer that slept
/// the full 500 ms after each small batch would refuse most of the burst.
/// (Which batches wait is unit-tested in `audit::writer`.)
#[tokio::test]
async fn a_long_batch_window_never_makes_producers_time_out() {
    let sink = MemorySink::new();
    let auditor = Auditor::builder()
        .queue_capacity(4)
        .batch_window(Duration::from_millis(500))
        .wait_timeout(Duration::from_millis(100))
        .spawn(sink.clone())
        .unwrap();
    let burst: Vec<_> = (0..200)
        .map(|i| auditor.event("BURST", serde_json::json!({ "i": i })))
        .collect();
    for sent in futures_util::future::join_all(burst).await {
        sent.unwrap();
    }
    auditor.flush().await.unwrap();
    assert_eq!(sink.records().len(), 200);
    assert_eq!(auditor.stats().events_refused, 0);
}

// ---- audit policies -------------------------------------------------------

use finmesh::audit::{AuditAttributes, AuditPolicy, Level};

const K8S_EXAMPLE_POLICY: &[u8] = include_bytes!("fixtures/audit/k8s-audit-policy.yaml");

#[test]
fn kubernetes_example_policy_loads_unchanged_and_a_table_of_requests_gets_its_levels() {
    let policy = AuditPolicy::from_yaml(K8S_EXAMPLE_POLICY).expect("the Kubernetes example loads");
    assert_eq!(policy.rule_count(), 9);
    let authenticated: &[Arc<str>] = &[Arc::from("system:authenticated")];
    // `AuditAttributes` is non-exhaustive: built from its default.
    let resource = |verb, group, resource, sub, name, ns| {
        let mut a = AuditAttributes::default();
        a.user = Some("alice");
        a.groups = authenticated;
        a.verb = verb;
        a.api_group = Some(group);
        a.resource = resource;
        a.subresource = sub;
        a.name = name;
        a.namespace = ns;
        a.path = "/";
        a
    };
    let non_resource = |user: Option<&'static str>, path| {
        let mut a = AuditAttributes::default();
        a.user = user;
        a.groups = if user.is_some() { authenticated } else { &[] };
        a.verb = "get";
        a.path = path;
        a
    };
    let kube_proxy = |verb, res| {
        let mut a = resource(verb, "", res, None, None, "default");
        a.user = Some("system:kube-proxy");
        a
    };
    let rows: Vec<(&str, AuditAttributes<'_>, Level)> = vec![
        (
            "pods",
            resource("create", "", "pods", None, None, "default"),
            Level::RequestResponse,
        ),
        (
            "pods/log",
            resource("get", "", "pods", Some("log"), None, "default"),
            Level::Metadata,
        ),
        (
            "pods/status",
            resource("update", "", "pods", Some("status"), None, "default"),
            Level::Metadata,
        ),
        // pods/exec: no rule names it; the core-group rule takes it.
        (
            "pods/exec",
            resource("create", "", "pods", Some("exec"), None, "default"),
            Level::Request,
        ),
        (
            "leader configmap",
            resource(
                "update",
                "",
                "configmaps",
                None,
                Some("controller-leader"),
                "kube-system",
            ),
            Level::None,
        ),
        (
            "kube-system configmap",
            resource("update", "", "configmaps", None, Some("cfg"), "kube-system"),
            Level::Request,
        ),
        (
            "other configmap",
            resource("update", "", "configmaps", None, Some("cfg"), "default"),
            Level::Metadata,
        ),
        (
            "secret",
            resource("get", "", "secrets", None, Some("s"), "default"),
            Level::Metadata,
        ),
        (
            "kube-proxy watches endpoints",
            kube_proxy("watch", "endpoints"),
            Level::None,
        ),
        (
            "kube-proxy lists endpoints",
            kube_proxy("list", "endpoints"),
            Level::Request,
        ),
        (
            "extensions",
            resource("list", "extensions", "ingresses", None, None, "default"),
            Level::Request,
        ),
        (
            "apps group",
            resource("list", "apps", "deployments", None, None, "default"),
            Level::Metadata,
        ),
        (
            "authenticated /apis",
            non_resource(Some("alice"), "/apis/apps/v1"),
            Level::None,
        ),
        (
            "authenticated /version",
            non_resource(Some("alice"), "/version"),
            Level::None,
        ),
        (
            "anonymous /version",
            non_resource(Option::None, "/version"),
            Level::Metadata,
        ),
        (
            "authenticated /healthz",
            non_resource(Some("alice"), "/healthz"),
            Level::Metadata,
        ),
    ];
    for (name, attrs, want) in rows {
        assert_eq!(policy.level(&attrs), want, "{name}");
    }
    // The top-level omitStages joins every rule's.
    let d = policy.decide(&resource("create", "", "pods", None, None, "default"));
    assert!(!d.records(finmesh::audit::Stage::RequestReceived));
    assert!(d.records(finmesh::audit::Stage::ResponseComplete));
}

#[test]
fn malformed_audit_policies_are_refused_with_the_field_path() {
    let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
    let rows = [
        (
            "rules:\n- level: Metadata\n  verbz: [get]\n",
            "rules[0]",
            "verbz",
        ),
        (
            "rules:\n- level: Everything\n",
            "rules[0].level",
            "Everything",
        ),
        (
            "rules:\n- level: None\n  resources:\n  - group: \"\"\n    resourcez: [pods]\n",
            "rules[0].resources[0]",
            "resourcez",
        ),
        ("omitStages: [Later]\nrules: []\n", "omitStages[0]", "Later"),
        (
            "rules:\n- level: None\n  nonResourceURLs: [\"/a*b\"]\n",
            "rules[0].nonResourceURLs[0]",
            "*",
        ),
        (
            "rules:\n- level: None\n  nonResourceURLs: [\"/a\"]\n  namespaces: [x]\n",
            "rules[0].nonResourceURLs",
            "both",
        ),
        (
            "rules:\n- level: None\n  resources:\n  - group: apps/v1\n",
            "rules[0].resources[0].group",
            "version",
        ),
        ("spec: {}\n", "", "spec"),
    ];
    for (body, field, said) in rows {
        let err = AuditPolicy::from_yaml(format!("{head}{body}").as_bytes()).unwrap_err();
        assert!(err.field().starts_with(field), "{body}: {err}");
        assert!(err.to_string().contains(said), "{body}: {err}");
    }
    let err =
        AuditPolicy::from_yaml(b"apiVersion: audit.k8s.io/v1beta1\nkind: Policy\n").unwrap_err();
    assert_eq!(err.field(), "apiVersion");
    let err = AuditPolicy::from_yaml(&vec![b' '; 2 << 20]).unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    assert!(AuditPolicy::from_yaml(b"\xff\xfe").is_err());
}

const GATEWAY_LIKE_POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ["/livez", "/quiet*"]
- level: RequestResponse
  verbs: ["create"]
  resources:
  - group: ""
    resources: ["transfers"]
- level: Request
  verbs: ["update"]
  resources:
  - group: ""
    resources: ["accounts"]
- level: Metadata
"#;

/// Answers with a JSON document holding a card number.
async fn pay(body: String) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "status": "accepted",
        "card_number": "4111111111111111",
        "echo_bytes": body.len(),
    }))
}

fn policy_app(auditor: &Auditor, layer: AuditLayer) -> axum::Router {
    let _ = auditor;
    echo_app()
        .route("/pay", post(pay))
        .route("/livez", axum::routing::get(|| async { "ok" }))
        .route("/quiet/transfer", post(transfer))
        .route("/transfer", post(transfer))
        .layer(FakeGovernanceLayer)
        .layer(layer)
}

async fn post_json(url: String, headers: &[(&str, &str)], body: String) -> u16 {
    let mut req = Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    support::send(req.body(Full::new(body.into())).unwrap())
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn levels_none_metadata_request_and_request_response_with_caps_and_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let auditor = Auditor::builder()
        .redact_fields(["card_number", "iban"])
        .spawn(fast_file(&path))
        .unwrap();
    let policy = AuditPolicy::from_yaml(GATEWAY_LIKE_POLICY.as_bytes()).unwrap();
    let layer = AuditLayer::new(auditor.clone())
        .policy(policy)
        .body_cap(512);
    let server = spawn(policy_app(&auditor, layer)).await;
    let payer = [("x-subject", "alice"), ("x-order-id", "o-1")];
    let card = r#"{"amount":"10.00","card_number":"4111111111111111","nested":{"iban":"DE00"}}"#;

    // None: a probe, and a handler's events under a None rule.
    assert_eq!(support::get(&server.url("/livez"), &[]).await.status, 200);
    assert_eq!(
        post_json(server.url("/quiet/transfer"), &[], String::new()).await,
        200
    );
    // RequestResponse: creating a transfer (RBAC: create transfers).
    assert_eq!(
        post_json(server.url("/pay"), &payer, card.into()).await,
        200
    );
    // Its handler events follow the request's level: written.
    assert_eq!(
        post_json(server.url("/transfer"), &payer, String::new()).await,
        200
    );
    // Request: updating an account; the body is over the cap, and with
    // redaction on a cut body is not kept.
    let big = format!(r#"{{"card_number":"4111","memo":"{}"}}"#, "x".repeat(2000));
    let update = [("x-verb", "update"), ("x-resource", "accounts")];
    assert_eq!(
        post_json(server.url("/pay"), &update, big.clone()).await,
        200
    );
    // Metadata: anything else.
    assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
    auditor.flush().await.unwrap();

    let records = read_records(&path);
    let routes: Vec<_> = records
        .iter()
        .map(|r| r.event.clone().or(r.route.clone()).unwrap())
        .collect();
    assert_eq!(
        routes,
        [
            "/pay",
            "PREPARE",
            "COMMIT",
            "POST_COMMIT_HOOK",
            "/transfer",
            "/pay",
            "/ok"
        ],
        "None-level requests and their events are not written"
    );
    let full = &records[0];
    assert_eq!(
        full.request_body,
        Some(
            serde_json::json!({"amount": "10.00", "card_number": "[redacted]", "nested": {"iban": "[redacted]"}})
        )
    );
    let response = full.response_body.as_ref().unwrap();
    assert_eq!(response["card_number"], "[redacted]");
    assert_eq!(response["status"], "accepted");
    assert!(full.truncated.is_empty());
    let request_only = &records[5];
    assert!(request_only.response_body.is_none());
    let kept = request_only
        .request_body
        .as_ref()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        kept.contains(&format!("{} bytes not recorded", big.len())),
        "{kept}"
    );
    assert!(!kept.contains("4111"));
    assert_eq!(request_only.truncated, ["request_body"]);
    let metadata = &records[6];
    assert!(metadata.request_body.is_none() && metadata.response_body.is_none());
    // Nothing redacted ever reaches the file.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("4111111111111111") && !text.contains("DE00"));
    assert!(
        !text.contains("\"request_body\":null"),
        "absent bodies are omitted"
    );
    assert_eq!(verify(&path).unwrap().records, 7);
}

#[tokio::test]
async fn without_redaction_a_body_over_the_cap_is_kept_as_text_cut_at_the_cap() {
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(sink.clone()).unwrap();
    let layer = AuditLayer::new(auditor.clone())
        .policy(AuditPolicy::uniform(Level::RequestResponse))
        .body_cap(100);
    let server = spawn(policy_app(&auditor, layer)).await;
    let body = format!(r#"{{"memo":"{}"}}"#, "é".repeat(500));
    assert_eq!(post_json(server.url("/pay"), &[], body.clone()).await, 200);
    auditor.flush().await.unwrap();
    let records = sink.records();
    assert_eq!(records.len(), 1);
    let kept = records[0].request_body.as_ref().unwrap().as_str().unwrap();
    assert!(
        body.starts_with(kept.trim_end_matches('\u{fffd}')),
        "{kept}"
    );
    assert!(kept.len() <= 100 + 3);
    assert_eq!(records[0].truncated, ["request_body"]);
    // The response was small: kept whole, as JSON.
    assert_eq!(
        records[0].response_body.as_ref().unwrap()["echo_bytes"],
        body.len()
    );
    assert_eq!(sink.verify().unwrap().records, 1);
}

#[tokio::test]
async fn a_hot_reloaded_policy_changes_levels_and_a_bad_version_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("audit-policy.yaml");
    let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n";
    std::fs::write(&policy_path, format!("{head}- level: Metadata\n")).unwrap();
    let watched = AuditPolicy::watch(&policy_path).unwrap();
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(sink.clone()).unwrap();
    let layer = AuditLayer::new(auditor.clone()).watched_policy(watched.clone());
    let server = spawn(policy_app(&auditor, layer)).await;

    assert_eq!(post_json(server.url("/pay"), &[], "{}".into()).await, 200);
    std::fs::write(&policy_path, format!("{head}- level: RequestResponse\n")).unwrap();
    watched.reload().unwrap();
    assert_eq!(post_json(server.url("/pay"), &[], "{}".into()).await, 200);
    std::fs::write(&policy_path, format!("{head}- level: Everything\n")).unwrap();
    assert!(watched.reload().is_err());
    assert_eq!(post_json(server.url("/pay"), &[], "{}".into()).await, 200);
    std::fs::write(&policy_path, format!("{head}- level: None\n")).unwrap();
    watched.reload().unwrap();
    assert_eq!(post_json(server.url("/pay"), &[], "{}".into()).await, 200);
    auditor.flush().await.unwrap();

    let records = sink.records();
    assert_eq!(records.len(), 3, "the None version writes nothing");
    assert!(records[0].request_body.is_none());
    assert_eq!(records[1].request_body, Some(serde_json::json!({})));
    assert!(records[1].response_body.is_some());
    assert!(
        records[2].response_body.is_some(),
        "the bad version changed nothing"
    );
}

#[test]
fn records_without_body_members_still_parse_and_hash_as_before() {
    // A Metadata record encodes exactly as before audit policies: no
    // `request_body` / `response_body` members at all.
    let sink = MemorySink::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let auditor = Auditor::spawn(sink.clone()).unwrap();
        auditor
            .event("STARTUP", serde_json::json!({}))
            .await
            .unwrap();
        auditor.flush().await.unwrap();
    });
    let bytes = sink.to_bytes();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(!text.contains("_body"), "{text}");
    assert_eq!(sink.verify().unwrap().records, 1);
}

#[tokio::test]
async fn a_rule_omitting_response_complete_writes_no_request_record_but_keeps_its_events() {
    let policy = AuditPolicy::from_yaml(
        b"apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: true
rules:
- level: Metadata
  nonResourceURLs: [\"/transfer\"]
  omitStages: [\"ResponseComplete\"]
- level: Metadata
",
    )
    .unwrap();
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(sink.clone()).unwrap();
    let layer = AuditLayer::new(auditor.clone()).policy(policy);
    let server = spawn(policy_app(&auditor, layer)).await;
    assert_eq!(
        post_json(server.url("/transfer"), &[], String::new()).await,
        200
    );
    assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
    auditor.flush().await.unwrap();
    let names: Vec<_> = sink
        .records()
        .iter()
        .map(|r| r.event.clone().or(r.route.clone()).unwrap())
        .collect();
    assert_eq!(names, ["PREPARE", "COMMIT", "POST_COMMIT_HOOK", "/ok"]);
}

/// 127 `[` then 127 `]`: parses alone (serde_json stops at 128 levels),
/// but one level deeper inside a record it would not.
fn poison_body() -> String {
    format!("{}{}", "[".repeat(127), "]".repeat(127))
}

/// A JSON value `depth` arrays deep, built without the parser.
fn nested(depth: usize) -> serde_json::Value {
    let mut v = serde_json::json!([]);
    for _ in 1..depth {
        v = serde_json::Value::Array(vec![v]);
    }
    v
}

#[tokio::test]
async fn a_body_nested_to_the_parser_limit_cannot_poison_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let poison = poison_body();
    {
        let auditor = Auditor::spawn(fast_file(&path)).unwrap();
        let layer =
            AuditLayer::new(auditor.clone()).policy(AuditPolicy::uniform(Level::RequestResponse));
        let server = spawn(policy_app(&auditor, layer)).await;
        // Two poison records: the last two lines of the file.
        for _ in 0..2 {
            assert_eq!(
                post_json(server.url("/pay"), &[], poison.clone()).await,
                200
            );
        }
        auditor.flush().await.unwrap();
        server.shutdown().await;
    }
    assert_eq!(verify(&path).unwrap().records, 2);
    let records = read_records(&path);
    // Kept as its JSON text, never as nested JSON.
    assert_eq!(records[1].request_body, Some(serde_json::json!(poison)));

    // A restart keeps both records and continues the chain.
    let auditor = Auditor::spawn(fast_file(&path)).unwrap();
    assert!(auditor.recovery().is_none(), "{:?}", auditor.recovery());
    let layer =
        AuditLayer::new(auditor.clone()).policy(AuditPolicy::uniform(Level::RequestResponse));
    let server = spawn(policy_app(&auditor, layer)).await;
    assert_eq!(post_json(server.url("/pay"), &[], "{}".into()).await, 200);
    auditor.flush().await.unwrap();
    assert_eq!(verify(&path).unwrap().records, 3);
}

#[tokio::test]
async fn records_too_deep_for_the_parser_still_verify_and_survive_a_restart() {
    // Lines as an older version wrote them: a body 200 levels deep in the
    // last two records. Their hashes check out, so they are evidence.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let lines = ten_record_log(&path).await;
    let mut deep = lines.clone();
    deep[8] = reseal(&lines[8], |r| r.request_body = Some(nested(200)));
    let prev = deep[8][deep[8].len() - 66..deep[8].len() - 2].to_owned();
    deep[9] = reseal(&lines[9], |r| {
        r.request_body = Some(nested(200));
        r.prev = prev;
    });
    std::fs::write(&path, deep.join("\n") + "\n").unwrap();
    assert_eq!(verify(&path).unwrap().records, 10);

    let auditor = Auditor::spawn(fast_file(&path)).unwrap();
    assert!(auditor.recovery().is_none(), "{:?}", auditor.recovery());
    auditor.event("STEP", serde_json::json!({})).await.unwrap();
    auditor.flush().await.unwrap();
    assert_eq!(verify(&path).unwrap().records, 11);
}

#[tokio::test]
async fn redaction_matches_field_names_in_any_case_or_style_and_keeps_no_non_json_body() {
    let sink = MemorySink::new();
    let auditor = Auditor::builder()
        .redact_fields(["card_number"])
        .spawn(sink.clone())
        .unwrap();
    let layer = AuditLayer::new(auditor.clone()).policy(AuditPolicy::uniform(Level::Request));
    let server = spawn(policy_app(&auditor, layer)).await;
    let camel =
        r#"{"cardNumber":"4111111111111111","x":{"CARD-NUMBER":"4222","CardNumber":"4333"}}"#;
    assert_eq!(post_json(server.url("/pay"), &[], camel.into()).await, 200);
    // A form body, JSON with trailing bytes, and a poison body: not kept.
    let others = [
        "card_number=4111111111111111".to_owned(),
        r#"{"card_number":"4111111111111111"} x"#.to_owned(),
        poison_body(),
    ];
    for body in &others {
        assert_eq!(post_json(server.url("/pay"), &[], body.clone()).await, 200);
    }
    auditor.flush().await.unwrap();
    let records = sink.records();
    assert_eq!(
        records[0].request_body,
        Some(
            serde_json::json!({"cardNumber": "[redacted]", "x": {"CARD-NUMBER": "[redacted]", "CardNumber": "[redacted]"}})
        )
    );
    for (r, body) in records[1..].iter().zip(&others) {
        let kept = r.request_body.as_ref().unwrap().as_str().unwrap();
        assert!(
            kept.starts_with(&format!("[{} bytes not recorded: ", body.len())),
            "{kept}"
        );
    }
    assert_eq!(sink.verify().unwrap().records, 4);
}

#[tokio::test]
async fn rejected_requests_are_audited_whatever_the_policy_says() {
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(sink.clone()).unwrap();
    let policy = AuditPolicy::from_yaml(GATEWAY_LIKE_POLICY.as_bytes()).unwrap();
    let layer = AuditLayer::new(auditor.clone()).policy(policy);
    let server = spawn(policy_app(&auditor, layer)).await;
    // A probe answered: level None, not written.
    assert_eq!(support::get(&server.url("/livez"), &[]).await.status, 200);
    // Paths a `None` rule matches, refused by an inner layer (a token
    // brute force hiding behind probe-like paths): written.
    let reject = [("x-reject", "auth.invalid")];
    for path in ["/livez", "/quiet/../transfer", "/quietX"] {
        assert_eq!(support::get(&server.url(path), &reject).await.status, 403);
    }
    auditor.flush().await.unwrap();
    let records = sink.records();
    let routes: Vec<_> = records.iter().map(|r| r.route.clone().unwrap()).collect();
    assert_eq!(routes, ["/livez", "/quiet/../transfer", "/quietX"]);
    for r in &records {
        assert_eq!(r.code.as_deref(), Some("auth.invalid"));
        assert_eq!(r.decision, Some(Verdict::Deny));
        assert!(r.request_body.is_none() && r.response_body.is_none());
    }
}
