//! [`AuditLayer`], [`Audit`], its future and body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::mpsc::{self, OwnedPermit};
use tower_layer::Layer;
use tower_service::Service;

use super::AuditCode;
use super::record::Outcome;
use super::writer::{AuditHandle, Auditor, Detail, Entry, Msg, Shared};
use crate::body::ResponseBody;
use crate::codes::RejectionCode;
use crate::labels::RequestLabels;
use crate::reject::Protocol;

/// Writes one audit record per request; see the [module docs](super).
#[derive(Clone, Debug)]
pub struct AuditLayer {
    auditor: Auditor,
}

impl AuditLayer {
    /// Audits every request through `auditor`.
    pub fn new(auditor: Auditor) -> Self {
        Self { auditor }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            auditor: Some(self.auditor.clone()),
        }
    }
}

/// The service [`AuditLayer`] builds.
#[derive(Clone, Debug)]
pub struct Audit<S> {
    inner: S,
    // `None`: switched off inside a `GovernanceLayer` without audit.
    auditor: Option<Auditor>,
}

impl<S> Audit<S> {
    /// Audits `inner` through `auditor`.
    pub fn new(inner: S, auditor: Auditor) -> Self {
        Self {
            inner,
            auditor: Some(auditor),
        }
    }

    /// Passes every request through unrecorded: the slot of an absent
    /// audit layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self {
            inner,
            auditor: None,
        }
    }
}

/// What a request record needs besides the labels.
struct Ctx {
    labels: RequestLabels,
    start: Instant,
    method: Method,
    uri: Uri,
    grpc: bool,
    shared: Arc<Shared>,
}

/// The record of one request, with the queue slot reserved for it.
/// Whatever path the request takes, dropping this writes the record:
/// after the body ends, when the body or the future is dropped early, or
/// when the inner service fails.
struct Pending {
    permit: Option<OwnedPermit<Msg>>,
    ctx: Ctx,
    http_status: Option<u16>,
    grpc_status: Option<i32>,
    outcome: Outcome,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        if self.ctx.shared.failed.load(Ordering::Relaxed) {
            self.ctx.shared.lost.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                path = self.ctx.uri.path(),
                "audit writer stopped; record of a request in flight lost"
            );
        }
        let entry = Entry {
            at: SystemTime::now(),
            labels: self.ctx.labels.snapshot(),
            detail: Detail::Request {
                method: std::mem::take(&mut self.ctx.method),
                path: Some(self.ctx.uri.path().to_owned()),
                http_status: self.http_status,
                grpc_status: self.grpc_status,
                latency: self.ctx.start.elapsed(),
                outcome: self.outcome,
            },
        };
        // The slot was reserved when the request came in: this never
        // waits and never fails while the writer runs.
        permit.send(Msg::Entry(Box::new(entry)));
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    if v.is_empty() || v.len() > 3 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

type Reserve = Pin<
    Box<
        dyn Future<
                Output = Result<
                    Result<OwnedPermit<Msg>, mpsc::error::SendError<()>>,
                    tokio::time::error::Elapsed,
                >,
            > + Send,
    >,
>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for Audit<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    ResB: Body,
{
    type Response = Response<AuditBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let Some(auditor) = &self.auditor else {
            return ResponseFuture {
                state: State::Calling {
                    future: self.inner.call(req),
                    guard: None,
                },
            };
        };
        let labels = RequestLabels::get_or_insert(req.extensions_mut());
        req.extensions_mut()
            .insert(AuditHandle::new(auditor.clone(), labels.clone()));
        let ctx = Ctx {
            labels,
            start: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            grpc: Protocol::of(req.headers()).is_grpc(),
            shared: auditor.shared.clone(),
        };
        // Security: the slot is reserved *before* the inner
        // service runs, so the record written when the response ends can
        // never find the queue full and can never be dropped.
        match auditor.tx.clone().try_reserve_owned() {
            Ok(permit) => ResponseFuture::calling(self.inner.call(req), Pending::new(permit, ctx)),
            Err(mpsc::error::TrySendError::Full(tx)) => {
                // The call waits for a slot: the future takes the service
                // that was polled ready, and a clone takes its place.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let wait = auditor.wait_timeout;
                ResponseFuture {
                    state: State::Reserving {
                        reserve: Box::pin(tokio::time::timeout(wait, tx.reserve_owned())),
                        req: Some(req),
                        inner: Some(inner),
                        ctx: Some(ctx),
                    },
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                ResponseFuture::rejected(refuse(&req, &ctx))
            }
        }
    }
}

/// 503 `audit.unavailable`. This refusal has no record of its own — there
/// is no slot to write it with — so it is counted and logged instead.
fn refuse<ReqB, ResB>(req: &Request<ReqB>, ctx: &Ctx) -> Response<AuditBody<ResB>> {
    ctx.shared.refused.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        method = %ctx.method,
        path = ctx.uri.path(),
        "audit log unavailable; request refused"
    );
    AuditCode::Unavailable
        .reject("the audit log cannot take a record now")
        .respond(req)
        .map(|body| AuditBody {
            inner: body.into(),
            guard: None,
        })
}

impl Pending {
    fn new(permit: OwnedPermit<Msg>, ctx: Ctx) -> Self {
        Self {
            permit: Some(permit),
            ctx,
            http_status: None,
            grpc_status: None,
            outcome: Outcome::Cancelled,
        }
    }
}

pin_project! {
    /// Response future of [`Audit`].
    pub struct ResponseFuture<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB, ResB>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB, ResB>
    where
        S: Service<Request<ReqB>>,
    {
        Reserving {
            reserve: Reserve,
            req: Option<Request<ReqB>>,
            inner: Option<S>,
            ctx: Option<Ctx>,
        },
        Calling {
            #[pin]
            future: S::Future,
            guard: Option<Pending>,
        },
        Rejected {
            response: Option<Response<AuditBody<ResB>>>,
        },
    }
}

impl<S, ReqB, ResB> ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>>,
{
    fn calling(future: S::Future, guard: Pending) -> Self {
        Self {
            state: State::Calling {
                future,
                guard: Some(guard),
            },
        }
    }

    fn rejected(response: Response<AuditBody<ResB>>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    type Output = Result<Response<AuditBody<ResB>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Reserving {
                    reserve,
                    req,
                    inner,
                    ctx,
                } => {
                    let reserved = ready!(reserve.as_mut().poll(cx));
                    let (Some(req), Some(mut inner), Some(ctx)) =
                        (req.take(), inner.take(), ctx.take())
                    else {
                        panic!("audit ResponseFuture polled after completion");
                    };
                    let next = match reserved {
                        Ok(Ok(permit)) => State::Calling {
                            future: inner.call(req),
                            guard: Some(Pending::new(permit, ctx)),
                        },
                        // Timed out, or the writer stopped: fail closed.
                        _ => State::Rejected {
                            response: Some(refuse(&req, &ctx)),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Calling { future, guard } => {
                    let result = ready!(future.poll(cx));
                    let mut pending = guard.take();
                    let response = match result {
                        Ok(res) => res,
                        Err(e) => {
                            if let Some(p) = pending.as_mut() {
                                p.outcome = Outcome::ServiceError;
                            }
                            return Poll::Ready(Err(e));
                        }
                    };
                    if let Some(p) = pending.as_mut() {
                        p.http_status = Some(response.status().as_u16());
                        if p.ctx.grpc {
                            // Trailers-only responses (rejections, early
                            // errors) carry the status in the headers.
                            p.grpc_status = grpc_status(response.headers());
                        }
                        p.outcome = Outcome::BodyDropped;
                    }
                    if response.body().is_end_stream() {
                        // Nothing more will be polled: the response is known.
                        if let Some(p) = pending.as_mut() {
                            p.outcome = Outcome::Complete;
                        }
                        pending = None;
                    }
                    return Poll::Ready(Ok(response.map(|body| AuditBody {
                        inner: ResponseBody::new(body),
                        guard: pending,
                    })));
                }
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("audit ResponseFuture polled after completion")));
                }
            }
        }
    }
}

pin_project! {
    /// Response body of [`Audit`]: the inner body (or a rejection), which
    /// writes the request's record when it ends or is dropped.
    pub struct AuditBody<B> {
        #[pin]
        inner: ResponseBody<B>,
        guard: Option<Pending>,
    }
}

impl<B> std::fmt::Debug for AuditBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditBody")
            .field("inner", &self.inner)
            .field("pending", &self.guard.is_some())
            .finish()
    }
}

impl<B> Body for AuditBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(pending) = this.guard.as_mut() {
            let done = match &frame {
                None => true,
                Some(Ok(frame)) => {
                    match frame.trailers_ref() {
                        // Trailers are the last frame of a body.
                        Some(trailers) => {
                            if pending.ctx.grpc {
                                pending.grpc_status = grpc_status(trailers).or(pending.grpc_status);
                            }
                            true
                        }
                        None => this.inner.is_end_stream(),
                    }
                }
                Some(Err(_)) => {
                    pending.outcome = Outcome::BodyError;
                    true
                }
            };
            if done {
                if pending.outcome == Outcome::BodyDropped {
                    pending.outcome = Outcome::Complete;
                }
                *this.guard = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http_body_util::{BodyExt, Full, StreamBody};
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::audit::{AuditRecord, MemorySink};

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
            .service_fn(move |_req: Request<Full<Bytes>>| {
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
            .service_fn(|req: Request<Full<Bytes>>| async move {
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
            .service_fn(|req: Request<Full<Bytes>>| async move {
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
            .service_fn(|_req: Request<Full<Bytes>>| async move {
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
        assert!(auditor.flush().await.is_err());
        let stats = auditor.stats();
        assert!(stats.failed);
        assert_eq!((stats.written, stats.lost), (0, 1));
        assert!(auditor.last_error().unwrap().contains("no space"));
        // Every later request is refused before it runs.
        let res = svc.oneshot(Request::new(Full::default())).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(auditor.stats().refused, 1);
        let handle = AuditHandle::new(auditor.clone(), RequestLabels::new());
        assert_eq!(
            handle.try_event("E", serde_json::Value::Null),
            Err(crate::audit::AuditError::Closed)
        );
    }
}
