//! Cost of the audit enqueue path per request.
//!
//! `cargo bench --bench audit -- --warm-up-time 1 --measurement-time 3`
//!
//! The sink is in memory and discards what it is given (a `MemorySink`
//! would grow by a few hundred bytes per iteration for the whole run); the
//! writer thread still builds, seals and hashes every record, on its own
//! core. `seal_record` is that per-record writer cost on its own.

use std::convert::Infallible;
use std::hint::black_box;
use std::io;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use finmesh::audit::{AuditHandle, AuditLayer, AuditRecord, AuditSink, Auditor, ChainHead};
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

criterion_group!(benches, enqueue);
criterion_main!(benches);
