//! A tamper-evident audit trail: [`AuditLayer`] writes one hash-chained
//! record per request, handlers append their own events, and [`verify`]
//! proves nothing was edited.
//!
//! # Where it sits
//!
//! Just inside the telemetry layer, outside authentication, tenant, RBAC
//! and idempotency, so that it sees every request those layers refuse. It
//! takes the request's [`RequestLabels`](crate::RequestLabels) with
//! `get_or_insert` (so it works with or without telemetry); the inner
//! layers fill them (subject, risk, tenant, RBAC decision, rejection code,
//! idempotency key), and the record is built from them when the response
//! is known:
//!
//! - when the response **body ends** — for gRPC that is after the trailers,
//!   whose `grpc-status` is recorded (or from the headers of a
//!   trailers-only response); a response whose body is already empty is
//!   recorded when its head is returned;
//! - when the body is **dropped early** (client gone mid-stream), marked
//!   `outcome: "body_dropped"`; a body error is `"body_error"`; a request
//!   dropped before its response is `"cancelled"`; an `Err` from the inner
//!   service is `"service_error"`.
//!
//! Each record carries time (RFC 3339 UTC), `seq`, trace id, order id,
//! tenant, subject, risk, HTTP method and route (or gRPC method), RBAC
//! verb/resource/name and binding, the [`Verdict`] (`allow`/`deny`, under
//! the key `decision`) with the rejection `code`, HTTP and gRPC status,
//! latency, idempotency key and `replayed`. See [`AuditRecord`] for every field and the exact canonical
//! encoding the hash covers.
//!
//! # Bounded fields
//!
//! What a caller chooses — order id, idempotency key, path, RBAC resource
//! name, a handler's event data — is cut to its bound before it is
//! queued or written: [`MAX_FIELD_BYTES`] per text field,
//! [`MAX_DATA_BYTES`] (about) for event data, whose strings are cut to
//! [`MAX_FIELD_BYTES`] too. A record whose fields were cut names them in
//! its `truncated` member (`["order_id", "data"]`). Applications should
//! still refuse over-long ids before they are audited or echoed.
//!
//! # Handler events
//!
//! The layer puts an [`AuditHandle`] into the request extensions. Handlers
//! append events to the same chain with it (`PREPARE`, `COMMIT`,
//! `POST_COMMIT_HOOK` for a transfer), labelled with the request's trace
//! id, order id, tenant and subject: `handle.event("COMMIT", json!({..}))
//! .await?`, or `try_event` where no `.await` is possible.
//!
//! # The queue, and never dropping a record
//!
//! Records are written off the request path: the layer hands them to an
//! [`Auditor`], a bounded queue read by one writer thread that owns the
//! [`AuditSink`], assigns `seq`, computes `prev`/`hash` and writes. A
//! request **reserves its queue slot before the inner service runs**; the
//! record written when the response ends uses that slot, so it never waits
//! and is never dropped. When no slot frees up within the wait timeout
//! ([`AuditorBuilder::wait_timeout`]), or the writer has stopped, the
//! request is refused with 503 `audit.unavailable` (gRPC `UNAVAILABLE`)
//! before anything runs. That refusal cannot itself be queued (there is no
//! slot): it is counted in [`AuditStats::refused`] and logged at `error`.
//! A request dropped while it still waits for a slot never reached the
//! inner service and has no record either.
//! If the sink fails (disk full), the writer stops and every later
//! request is refused the same way — fail closed; records already queued
//! are counted in [`AuditStats::lost`].
//!
//! **Known limit: the queue has no per-tenant share.** A slot is taken
//! before the inner layers know the tenant, and held until the response
//! ends — for a gRPC stream, its whole life. One tenant holding
//! `queue_capacity` (8192) idle streams makes every other request wait
//! for a slot and then fail with 503 `audit.unavailable`. Bound it with
//! `RateLimitLayer`'s per-tenant in-flight limit (`maxInFlight`, keyed by
//! the verified tenant) so that the sum over tenants stays below the
//! queue capacity, and with the stream deadlines (idle and whole-stream).
//! Likewise the PostgreSQL spool's backlog
//! ([`PostgresOptions::max_backlog`](postgres::PostgresOptions::max_backlog))
//! is one bound for all tenants.
//!
//! # Audit policy: how much of each request
//!
//! Without a policy every request is recorded at level `Metadata` (the
//! record above). [`AuditLayer::policy`] (or
//! [`AuditLayer::watched_policy`], hot-reloaded) takes a Kubernetes
//! `audit.k8s.io/v1` [`AuditPolicy`] — the apiserver's manifests load
//! unchanged — whose first matching rule sets the request's [`Level`]:
//!
//! | level | writes |
//! |---|---|
//! | `None` | nothing; the request's handler events are dropped too |
//! | `Metadata` | the request record, as without a policy |
//! | `Request` | plus `request_body` |
//! | `RequestResponse` | plus `request_body` and `response_body` |
//!
//! Rules match the verified user and groups, the verb, API group,
//! resource and name RBAC mapped the request to, the tenant as namespace,
//! and the path for `nonResourceURLs` (see [`AuditPolicy`]). The level is
//! decided once, when the inner layers have labelled the request (its
//! body is first read, its response or an event comes, or it ends), so a
//! request refused by authentication is matched as a non-resource
//! request. Handler events follow their request's level.
//!
//! Bodies are captured as they stream, up to [`AuditLayer::body_cap`]
//! (8 KiB by default); a longer body is cut and named in `truncated`. A
//! JSON body at most 32 levels deep is recorded as JSON; anything else as
//! text, or as `{"base64": …}` when it is not UTF-8.
//! [`AuditorBuilder::redact_fields`] replaces named JSON members (card
//! and account numbers, matched ignoring case, `_` and `-`) before a
//! record is hashed or written, in bodies and event data; with it on, only
//! whole JSON bodies are written: any other body (gRPC frames, forms, a
//! body cut at the cap) is replaced by a marker with its size, since its
//! members could not be found. Records without bodies
//! encode exactly as before, so older logs verify unchanged.
//!
//! ```
//! use bytes::Bytes;
//! use finmesh::audit::{AuditLayer, AuditPolicy, AuditRequestBody, Auditor, MemorySink};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let policy = AuditPolicy::from_yaml(br#"
//! apiVersion: audit.k8s.io/v1
//! kind: Policy
//! rules:
//! - level: None
//!   nonResourceURLs: ["/livez", "/metrics*"]
//! - level: RequestResponse
//!   nonResourceURLs: ["/v1/transfers*"]
//! - level: Metadata
//! "#).unwrap();
//! let sink = MemorySink::new();
//! let auditor = Auditor::builder().redact_fields(["card_number"]).spawn(sink.clone()).unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(AuditLayer::new(auditor.clone()).policy(policy).body_cap(4096))
//!     .service_fn(|req: Request<AuditRequestBody<Full<Bytes>>>| async move {
//!         let body = req.into_body().collect().await?.to_bytes();
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(body)))
//!     });
//!
//! for (path, body) in [("/livez", ""), ("/v1/transfers", r#"{"card_number":"4111","amount":"5"}"#)] {
//!     let req = Request::post(path).body(Full::new(Bytes::from(body))).unwrap();
//!     let res = svc.clone().oneshot(req).await.unwrap();
//!     res.into_body().collect().await.unwrap();
//! }
//! auditor.flush().await.unwrap();
//! let records = sink.records(); // nothing for /livez
//! assert_eq!(records.len(), 1);
//! let body = records[0].request_body.as_ref().unwrap();
//! assert_eq!(body["card_number"], "[redacted]");
//! assert_eq!(records[0].response_body.as_ref().unwrap()["amount"], "5");
//! # }
//! ```
//!
//! # Sinks
//!
//! [`FileSink`] appends JSON lines with a [`Durability`] policy (`fsync`
//! every record, or at most every N ms), rotates by size keeping the chain
//! across files, resumes the chain on restart, and repairs a torn last
//! line left by a crash (reported by [`Auditor::recovery`]).
//! [`MemorySink`] keeps records in memory for tests. With feature
//! `audit-postgres`, [`postgres::PostgresSink`] keeps the file as a
//! write-ahead spool and ships the chain to PostgreSQL exactly once (one
//! chain per replica, verified with [`postgres::verify_postgres`]).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use finmesh::audit::{AuditHandle, AuditLayer, AuditRequestBody, Auditor, MemorySink, RecordKind};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let sink = MemorySink::new();
//! let auditor = Auditor::spawn(sink.clone()).unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(AuditLayer::new(auditor.clone()))
//!     .service_fn(|req: Request<AuditRequestBody<Full<Bytes>>>| async move {
//!         let audit = req.extensions().get::<AuditHandle>().unwrap();
//!         audit.event("COMMIT", serde_json::json!({ "amount": "10.00" })).await.unwrap();
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("done"))))
//!     });
//!
//! let res = svc.oneshot(Request::post("/v1/transfers").body(Full::default()).unwrap())
//!     .await
//!     .unwrap();
//! res.into_body().collect().await.unwrap(); // the record is written when the body ends
//! auditor.flush().await.unwrap();
//!
//! let records = sink.records();
//! assert_eq!(records.len(), 2);
//! assert_eq!(records[0].event.as_deref(), Some("COMMIT"));
//! assert_eq!(records[1].kind, RecordKind::Request);
//! assert_eq!(records[1].http_status, Some(200));
//! assert_eq!(records[1].prev, records[0].hash);
//! assert_eq!(sink.verify().unwrap().records, 2);
//! # }
//! ```
//!
//! Verifying a log on disk (see also `examples/audit_verify.rs`):
//!
//! ```
//! use finmesh::audit::{Auditor, FileSink, verify};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("audit.log");
//! let auditor = Auditor::spawn(FileSink::open(&path).unwrap()).unwrap();
//! auditor.event("STARTUP", serde_json::json!({})).await.unwrap();
//! auditor.flush().await.unwrap();
//! let report = verify(&path).unwrap();
//! assert_eq!(report.last_seq, Some(1));
//! # }
//! ```

mod auditor;
mod batch;
mod body;
mod bound;
mod builder;
mod capture;
mod codes;
mod encode;
mod entry;
mod error;
mod files;
mod future;
mod handle;
mod layer;
mod memory_sink;
mod pending;
mod policy;
#[cfg(feature = "audit-postgres")]
pub mod postgres;
mod record;
mod redact;
mod service;
mod sink;
mod slot;
mod stats;
#[cfg(test)]
mod tests;
mod verify;
mod writer;

pub use auditor::Auditor;
pub use body::AuditBody;
pub use bound::{MAX_DATA_BYTES, MAX_FIELD_BYTES};
pub use builder::AuditorBuilder;
pub use capture::AuditRequestBody;
pub use codes::AuditCode;
pub use error::AuditError;
pub use future::ResponseFuture;
pub use handle::AuditHandle;
pub use layer::AuditLayer;
pub use memory_sink::MemorySink;
pub use policy::{
    AuditAttributes, AuditPolicy, AuditPolicyError, Level, MAX_POLICY_BYTES, PolicyDecision, Stage,
};
pub use record::{AuditRecord, GENESIS, Outcome, RecordKind, Verdict, rfc3339};
pub use service::Audit;
pub use sink::{AuditSink, ChainHead, Durability, FileSink, FileSinkOptions, TornTail};
pub use stats::AuditStats;
pub use verify::{BreakKind, BrokenLink, VerifyError, VerifyReport, verify};
