//! Cost of the audit enqueue path per request.
//!
//! `cargo bench --bench audit -- --warm-up-time 1 --measurement-time 3`
//!
//! The sink is in memory and discards what it is given (a `MemorySink`
//! would grow by a few hundred bytes per iteration for the whole run); the
//! writer thread still builds, seals and hashes every record, on its own
//! core. `seal_record` is that per-record writer cost on its own.
//!
//! `audit_sink/*` measure real sinks, counting the CPU of every thread of
//! the process per request (see [`sinks`]); with
//! `FINMESH_BENCH_POSTGRES_URL=postgres://… cargo bench --bench audit
//! --features audit-postgres`, PostgreSQL too.

use std::convert::Infallible;
use std::hint::black_box;
use std::io;

use bytes::Bytes;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use finmesh::audit::{
    AuditHandle, AuditLayer, AuditRecord, AuditSink, Auditor, ChainHead, FileSink,
};
use finmesh::{RequestLabels, RiskLevel};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};

/// An in-memory sink that keeps only the head of the chain.
struct Discard(Option<ChainHead>);

impl AuditSink for Discard {
    fn head(&self) -> Option<ChainHead> {
        self.0.clone()
    }
    fn append(&mut self, record: &AuditRecord, line: &[u8]) -> io::Result<()> {
        black_box(line);
        self.0 = Some(ChainHead {
            seq: record.seq,
            hash: record.hash.clone(),
        });
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn handler<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(labels) = req.extensions().get::<RequestLabels>() {
        labels.set_subject("alice");
        labels.set_risk(RiskLevel::Low);
        labels.set_order_id("order-123");
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

fn request() -> Request<Full<Bytes>> {
    Request::post("/v1/transfers")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

fn enqueue(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let auditor = Auditor::builder()
        .queue_capacity(65_536)
        .spawn(Discard(None))
        .unwrap();
    let mut group = c.benchmark_group("audit");

    let bare = ServiceBuilder::new().service_fn(handler);
    group.bench_function("baseline_no_layer", |b| {
        b.to_async(&rt).iter(|| async {
            let res = bare.oneshot(request()).await.unwrap();
            black_box(res.into_body().collect().await.unwrap());
        })
    });

    let audited = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service_fn(handler);
    group.bench_function("request_enqueue", |b| {
        b.to_async(&rt).iter(|| async {
            let res = audited.clone().oneshot(request()).await.unwrap();
            black_box(res.into_body().collect().await.unwrap());
        })
    });

    let labels = RequestLabels::new();
    labels.set_subject("alice");
    labels.set_order_id("order-123");
    let handle = AuditHandle::new(auditor.clone(), labels);
    group.bench_function("handler_event_enqueue", |b| {
        b.to_async(&rt).iter(|| async {
            handle
                .event("COMMIT", serde_json::json!({ "amount": "10.00" }))
                .await
                .unwrap();
        })
    });

    let record: AuditRecord = serde_json::from_value(serde_json::json!({
        "seq": 42, "time": "2026-11-25T02:24:40.123456Z", "kind": "request",
        "event": null, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "order_id": "order-123", "tenant": "tenant-a", "subject": "alice",
        "risk": "low", "method": "POST", "route": "/v1/transfers", "verb": "create",
        "resource": "transfers", "name": null, "decision": "allow", "code": null,
        "binding": "RoleBinding/tenant-a/payers", "shadow": false, "http_status": 200,
        "grpc_status": null, "latency_us": 180, "outcome": "complete",
        "idempotency_key": "key-1", "replayed": false, "data": null,
        "prev": finmesh::audit::GENESIS, "hash": ""
    }))
    .unwrap();
    group.bench_function("seal_record", |b| {
        b.iter(|| black_box(record.clone()).seal())
    });
    group.finish();
}

/// CPU time of the whole process so far — every thread that is alive:
/// the request thread, the audit writer, the shipper — from
/// `/proc/self/task/*/schedstat` (nanoseconds on CPU). Zero elsewhere.
fn process_cpu() -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(total)
}

/// `iters` requests through `svc`, then a flush (and `delivered`): the
/// process CPU they cost, writer and shipper threads included.
fn cpu_of_requests<S, F>(
    rt: &tokio::runtime::Runtime,
    svc: &S,
    auditor: &Auditor,
    iters: u64,
    delivered: F,
) -> Duration
where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = Response<finmesh::audit::AuditBody<Full<Bytes>>>,
        > + Clone,
    S::Error: std::fmt::Debug,
    F: std::future::Future<Output = ()>,
{
    let start = process_cpu();
    rt.block_on(async {
        for _ in 0..iters {
            let res = svc.clone().oneshot(request()).await.unwrap();
            black_box(res.into_body().collect().await.unwrap());
        }
        auditor.flush().await.unwrap();
        delivered.await;
    });
    process_cpu() - start
}

/// The audit layer with a real sink — the file, or PostgreSQL behind its
/// spool — counting the CPU of every thread of the process per request
/// (PostgreSQL's own CPU, another process, is not counted), and the
/// records per second PostgreSQL takes from the shipper.
///
/// The PostgreSQL cases run when `FINMESH_BENCH_POSTGRES_URL` names a
/// database (they create the `finmesh_audit` table there).
fn sinks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("audit_sink");
    group.throughput(Throughput::Elements(1));

    let auditor = Auditor::spawn(FileSink::open(dir.path().join("file.log")).unwrap()).unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service_fn(handler);
    group.bench_function("file_cpu_per_request", |b| {
        b.iter_custom(|iters| cpu_of_requests(&rt, &svc, &auditor, iters, async {}))
    });

    #[cfg(feature = "audit-postgres")]
    if let Ok(url) = std::env::var("FINMESH_BENCH_POSTGRES_URL") {
        use finmesh::audit::postgres::{PostgresOptions, PostgresSink};
        let sink = PostgresSink::open(
            dir.path().join("pg.log"),
            PostgresOptions::new(&url, "bench"),
        )
        .unwrap();
        let shipper = sink.shipper();
        let auditor = Auditor::spawn(sink).unwrap();
        let svc = ServiceBuilder::new()
            .layer(AuditLayer::new(auditor.clone()))
            .service_fn(handler);
        let wait = || async {
            assert!(
                shipper
                    .wait_delivered(std::time::Duration::from_secs(120))
                    .await
            );
        };
        group.bench_function("postgres_cpu_per_request", |b| {
            b.iter_custom(|iters| cpu_of_requests(&rt, &svc, &auditor, iters, wait()))
        });
        // Wall time from the first event to the last row in the table:
        // events are cheap to queue, so this is the sink's throughput.
        group.bench_function("postgres_records_to_table", |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                rt.block_on(async {
                    for i in 0..iters {
                        auditor
                            .event("BENCH", serde_json::json!({ "i": i }))
                            .await
                            .unwrap();
                    }
                    auditor.flush().await.unwrap();
                    wait().await;
                });
                start.elapsed()
            })
        });
    }
    #[cfg(feature = "audit-postgres")]
    if std::env::var_os("FINMESH_BENCH_POSTGRES_URL").is_none() {
        eprintln!("audit_sink/postgres_*: skipped (set FINMESH_BENCH_POSTGRES_URL)");
    }
    group.finish();
}

/// The level of a request under the Kubernetes documentation's example
/// policy (nine rules; the request matches the last).
fn policy(c: &mut Criterion) {
    use finmesh::audit::{AuditAttributes, AuditPolicy};
    let policy = AuditPolicy::from_yaml(include_bytes!(
        "../tests/fixtures/audit/k8s-audit-policy.yaml"
    ))
    .unwrap();
    let groups: Vec<std::sync::Arc<str>> = vec!["payments".into()];
    let mut attrs = AuditAttributes::default();
    attrs.user = Some("alice");
    attrs.groups = &groups;
    attrs.verb = "create";
    attrs.api_group = Some("payments.finmesh.io");
    attrs.resource = "transfers";
    attrs.namespace = "tenant-a";
    attrs.path = "/v1/transfers";
    c.bench_function("audit_policy/k8s_example_last_rule", |b| {
        b.iter(|| black_box(policy.level(black_box(&attrs))))
    });
}

criterion_group!(benches, enqueue, sinks, policy);
criterion_main!(benches);
