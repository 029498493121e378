//! The audit layer driven end to end through `ServiceExt::oneshot`.

use std::convert::Infallible;
use std::error::Error as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use tower::{ServiceBuilder, ServiceExt};

use super::{
    AuditError, AuditHandle, AuditLayer, AuditRecord, AuditRequestBody, Auditor, MemorySink,
    Outcome,
};
use crate::labels::RequestLabels;

async fn records(auditor: &Auditor, sink: &MemorySink) -> Vec<AuditRecord> {
    auditor.flush().await.unwrap();
    sink.verify().unwrap();
    sink.records()
}

/// A body that never yields.
struct Forever;
impl Body for Forever {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn full_queue_refuses_with_audit_unavailable_after_the_wait() {
    let sink = MemorySink::new();
    let auditor = Auditor::builder()
        .queue_capacity(1)
        .wait_timeout(Duration::from_millis(50))
        .spawn(sink.clone())
        .unwrap();
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(tokio::sync::Mutex::new(Some(gate)));
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service_fn(move |_req: Request<AuditRequestBody<Full<Bytes>>>| {
            let gate = gate.clone();
            async move {
                if let Some(g) = gate.lock().await.take() {
                    let _ = g.await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
            }
        });
    // The first request holds the only slot while its handler waits.
    let first = tokio::spawn(svc.clone().oneshot(Request::new(Full::default())));
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let res = svc
        .clone()
        .oneshot(Request::new(Full::default()))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "audit.unavailable");
    assert_eq!(auditor.stats().refused, 1);
    // A request that waits while the slot frees up gets through.
    let waiting = tokio::spawn(svc.clone().oneshot(Request::new(Full::default())));
    release.send(()).unwrap();
    let res = first.await.unwrap().unwrap();
    res.into_body().collect().await.unwrap();
    let res = waiting.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    let records = records(&auditor, &sink).await;
    assert_eq!(
        records.len(),
        2,
        "the refusal has no record, both others do"
    );
    assert!(records.iter().all(|r| r.http_status == Some(200)));
}

#[tokio::test]
async fn early_ends_are_recorded_with_their_outcome() {
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(sink.clone()).unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service_fn(|req: Request<AuditRequestBody<Full<Bytes>>>| async move {
            match req.uri().path() {
                "/stream" => Ok(Response::new(Forever)),
                "/hang" => std::future::pending().await,
                _ => Err("boom"),
            }
        });
    // Body dropped mid-stream.
    let res = svc
        .clone()
        .oneshot(Request::get("/stream").body(Full::default()).unwrap())
        .await
        .unwrap();
    drop(res);
    // Future dropped before the response.
    let hang = svc
        .clone()
        .oneshot(Request::get("/hang").body(Full::default()).unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(20), hang)
            .await
            .is_err()
    );
    // The inner service failed.
    let err = svc
        .oneshot(Request::get("/err").body(Full::default()).unwrap())
        .await;
    assert!(err.is_err());
    let outcomes: Vec<_> = records(&auditor, &sink)
        .await
        .into_iter()
        .map(|r| (r.route.unwrap(), r.outcome.unwrap(), r.http_status))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("/stream".into(), Outcome::BodyDropped, Some(200)),
            ("/hang".into(), Outcome::Cancelled, None),
            ("/err".into(), Outcome::ServiceError, None),
        ]
    );
}

#[tokio::test]
async fn grpc_status_is_read_from_trailers_or_headers() {
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(sink.clone()).unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service_fn(|req: Request<AuditRequestBody<Full<Bytes>>>| async move {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "5".parse().unwrap());
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from("x"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
            if req.uri().path() == "/only" {
                let mut res = Response::new(
                    Full::new(Bytes::new())
                        .map_err(|e| match e {})
                        .boxed_unsync(),
                );
                res.headers_mut()
                    .insert("grpc-status", "7".parse().unwrap());
                return Ok::<_, Infallible>(res);
            }
            Ok(Response::new(body))
        });
    for path in ["/pkg.Svc/Method", "/only"] {
        let req = Request::post(path)
            .header("content-type", "application/grpc")
            .body(Full::default())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let got: Vec<_> = records(&auditor, &sink)
        .await
        .into_iter()
        .map(|r| (r.grpc_status, r.outcome))
        .collect();
    assert_eq!(
        got,
        [
            (Some(5), Some(Outcome::Complete)),
            (Some(7), Some(Outcome::Complete))
        ]
    );
}

/// A sink whose disk is full.
struct Full_;
impl crate::audit::AuditSink for Full_ {
    fn head(&self) -> Option<crate::audit::ChainHead> {
        None
    }
    fn append(&mut self, _: &AuditRecord, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("no space left on device"))
    }
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_sink_fails_closed() {
    let auditor = Auditor::builder()
        .wait_timeout(Duration::from_millis(20))
        .spawn(Full_)
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(auditor.clone()))
        .service_fn(|_req: Request<AuditRequestBody<Full<Bytes>>>| async move {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
        });
    // The first record hits the failing disk and stops the writer.
    let res = svc
        .clone()
        .oneshot(Request::new(Full::default()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    let flushed = auditor.flush().await;
    assert!(
        matches!(&flushed, Err(AuditError::Sink(e)) if e.to_string().contains("no space")),
        "{flushed:?}"
    );
    let stats = auditor.stats();
    assert!(stats.failed);
    assert_eq!((stats.written, stats.lost), (0, 1));
    let error = auditor.last_error().unwrap();
    assert!(matches!(error, AuditError::Sink(_)), "{error:?}");
    assert!(error.to_string().contains("no space"));
    let cause = error.source().expect("the io error is the source");
    assert!(cause.to_string().contains("no space"));
    // Every later request is refused before it runs.
    let res = svc.oneshot(Request::new(Full::default())).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(auditor.stats().refused, 1);
    let handle = AuditHandle::new(auditor.clone(), RequestLabels::new());
    let refused = handle.try_event("E", serde_json::Value::Null);
    assert!(matches!(refused, Err(AuditError::Closed)), "{refused:?}");
}

/// A sink that blocks the writer in `accepts` while `full` is raised, as
/// a PostgreSQL sink in a blocking mode does while its spool is full.
struct BlockingSink {
    inner: MemorySink,
    full: Arc<std::sync::atomic::AtomicBool>,
    blocked: Arc<std::sync::atomic::AtomicBool>,
}

impl super::AuditSink for BlockingSink {
    fn head(&self) -> Option<super::ChainHead> {
        self.inner.head()
    }
    fn append(&mut self, record: &AuditRecord, line: &[u8]) -> std::io::Result<()> {
        self.inner.append(record, line)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn accepts(&mut self) -> bool {
        use std::sync::atomic::Ordering;
        if self.full.load(Ordering::SeqCst) {
            self.blocked.store(true, Ordering::SeqCst);
            while self.full.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.blocked.store(false, Ordering::SeqCst);
        }
        true
    }
    fn blocked_flag(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        Some(self.blocked.clone())
    }
}

#[tokio::test]
async fn readiness_fails_while_the_sink_blocks_the_writer() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let full = Arc::new(AtomicBool::new(true));
    let sink = MemorySink::new();
    let auditor = Auditor::spawn(BlockingSink {
        inner: sink.clone(),
        full: full.clone(),
        blocked: Arc::new(AtomicBool::new(false)),
    })
    .unwrap();
    assert!(auditor.readiness().is_ok());
    auditor.event("STEP", serde_json::json!({})).await.unwrap();
    while auditor.readiness().is_ok() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    full.store(false, Ordering::SeqCst);
    auditor.flush().await.unwrap();
    assert!(auditor.readiness().is_ok());
    assert_eq!(sink.records().len(), 1);
}
