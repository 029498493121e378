//! [`Idempotency`]: the service, and its response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::IdempotencyCode;
use super::body::{IdempotencyBody, RequestBody};
use super::key::{IDEMPOTENCY_REPLAYED, IdempotencyKey};
use super::layer::Config;
use super::store::{
    Claim, ClaimToken, Completed, Fingerprint, IdempotencyStore, StoreKey, StoredResponse, Subject,
};
use crate::codes::RejectionCode;
use crate::labels::RequestLabels;
use crate::principal::Principal;
use crate::reject::Protocol;
use crate::tenant::Tenant;

/// The idempotency middleware: see the [module docs](super).
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    // `None`: switched off inside a `GovernanceLayer` without idempotency.
    config: Option<Arc<Config>>,
}

impl<S> Idempotency<S> {
    pub(super) fn new(inner: S, config: Arc<Config>) -> Self {
        Self {
            inner,
            config: Some(config),
        }
    }

    /// Passes every request through: the slot of an absent idempotency
    /// layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self {
            inner,
            config: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

type BoxedResponse<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<IdempotencyBody<B>>, E>> + Send>>;

pin_project! {
    /// Response future of [`Idempotency`]: the inner future, for requests
    /// the layer does not govern; a ready rejection; or, for governed
    /// requests, a boxed future that buffers, claims, runs and stores (it
    /// awaits the store, so it cannot be a small state machine without
    /// naming the store's futures).
    pub struct ResponseFuture<F, B, E>
    where
        B: Body,
    {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E>
    where
        B: Body,
    {
        Passthrough { #[pin] future: F },
        Ready { response: Option<Response<IdempotencyBody<B>>> },
        Governed { future: BoxedResponse<B, E> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<IdempotencyBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => future
                .poll(cx)
                .map(|res| res.map(|r| r.map(IdempotencyBody::new))),
            KindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            KindProj::Governed { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Idempotency<S>
where
    S: Service<Request<RequestBody<ReqB>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send,
{
    type Response = Response<IdempotencyBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let protocol = Protocol::of(&parts.headers);
        let passthrough = |inner: &mut S, parts, body| ResponseFuture {
            kind: Kind::Passthrough {
                future: inner.call(Request::from_parts(parts, RequestBody::new(body))),
            },
        };
        let Some(config) = &self.config else {
            return passthrough(&mut self.inner, parts, body);
        };
        let governed = match protocol {
            // Only listed unary methods: a streaming call cannot be buffered.
            Protocol::Grpc => config.grpc_methods.contains(parts.uri.path()),
            Protocol::Http => config.governs.governs(&parts),
        };
        if !governed {
            return passthrough(&mut self.inner, parts, body);
        }
        let key = match IdempotencyKey::from_headers(&parts.headers) {
            Ok(Some(key)) => key,
            Ok(None) if !config.require_key => {
                return passthrough(&mut self.inner, parts, body);
            }
            Ok(None) => {
                return ready(reject(
                    parts,
                    IdempotencyCode::KeyMissing,
                    "this request requires an Idempotency-Key",
                ));
            }
            Err(e) => {
                let detail = e.to_string();
                return ready(reject(parts, IdempotencyCode::KeyInvalid, detail));
            }
        };
        if let Some(labels) = parts.extensions.get::<RequestLabels>() {
            labels.set_idempotency(key.as_arc().clone(), false);
        }
        // Decide from the declared length before reading a byte.
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > config.max_request_body as u64) {
            return too_large(parts, config.max_request_body);
        }
        // Security: only verified facts name the scope — the tenant
        // the tenant layer admitted (else the principal's tenant claim) and
        // the principal's issuer and subject. Without a principal the
        // request lands in the tenant's anonymous scope, which no
        // authenticated subject shares. Headers never choose a scope.
        let principal = parts.extensions.get::<Principal>();
        let scope = StoreKey {
            tenant: parts
                .extensions
                .get::<Tenant>()
                .map(|t| t.namespace)
                .or_else(|| principal.and_then(|p| p.tenant)),
            subject: principal.map_or(Subject::Anonymous, |p| Subject::Verified {
                issuer: p.issuer.clone(),
                subject: p.subject.clone(),
            }),
            key,
        };
        // The future owns the service that was polled ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            kind: Kind::Governed {
                future: Box::pin(governed_call(inner, config.clone(), parts, body, scope)),
            },
        }
    }
}

fn ready<F, B: Body, E>(response: Response<IdempotencyBody<B>>) -> ResponseFuture<F, B, E> {
    ResponseFuture {
        kind: Kind::Ready {
            response: Some(response),
        },
    }
}

fn too_large<F, B: Body, E>(parts: Parts, limit: usize) -> ResponseFuture<F, B, E> {
    ready(reject(
        parts,
        IdempotencyCode::PayloadTooLarge,
        format!("the request body is larger than {limit} bytes"),
    ))
}

/// Renders a rejection for the request with these parts.
fn reject<B: Body>(
    parts: Parts,
    code: IdempotencyCode,
    detail: impl Into<std::borrow::Cow<'static, str>>,
) -> Response<IdempotencyBody<B>> {
    let req = Request::from_parts(parts, ());
    let res = code.reject(detail).respond(&req);
    let (head, body) = res.into_parts();
    // A rendered rejection is whole bytes, ready at once.
    let bytes = body
        .collect()
        .now_or_never()
        .and_then(Result::ok)
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Response::from_parts(head, IdempotencyBody::full(bytes, None))
}

/// Frees the claim if the request ends before its response is stored: the
/// handler failed, its body failed, or the client went away (the future was
/// dropped). Without it a key would stay locked until the claim TTL.
struct ClaimGuard {
    store: Arc<dyn IdempotencyStore>,
    key: StoreKey,
    token: ClaimToken,
    armed: bool,
}

impl ClaimGuard {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // No runtime (it is shutting down): the claim expires by TTL.
            return;
        };
        let store = self.store.clone();
        let key = self.key.clone();
        let token = self.token;
        handle.spawn(async move {
            if let Err(e) = store.release(&key, token).await {
                tracing::warn!(error = %e, "idempotency: could not release a claim; it expires by TTL");
            }
        });
    }
}

enum Buffered {
    Whole(Bytes, Option<HeaderMap>),
    TooLarge,
}

/// Reads `body` whole, up to `limit` bytes.
async fn buffer_request<B: Body<Data = Bytes>>(
    body: B,
    limit: usize,
) -> Result<Buffered, B::Error> {
    let mut body = std::pin::pin!(body);
    let mut data = BytesMut::new();
    let mut first: Option<Bytes> = None;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(chunk) => {
                let len = first.as_ref().map_or(0, Bytes::len) + data.len() + chunk.len();
                if len > limit {
                    return Ok(Buffered::TooLarge);
                }
                // One chunk (the common case) is kept without a copy.
                match first.take() {
                    None if data.is_empty() => first = Some(chunk),
                    Some(f) => {
                        data.extend_from_slice(&f);
                        data.extend_from_slice(&chunk);
                    }
                    None => data.extend_from_slice(&chunk),
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    match &mut trailers {
                        None => trailers = Some(t),
                        Some(all) => all.extend(t),
                    }
                }
            }
        }
    }
    let bytes = first.unwrap_or_else(|| data.freeze());
    Ok(Buffered::Whole(bytes, trailers))
}

fn select(headers: &HeaderMap, names: &[http::HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in names {
        for value in headers.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn replay<B: Body>(stored: &StoredResponse) -> Response<IdempotencyBody<B>> {
    let mut res = Response::new(IdempotencyBody::full(
        stored.body.clone(),
        stored.trailers.clone(),
    ));
    *res.status_mut() = stored.status;
    *res.headers_mut() = stored.headers.clone();
    res.headers_mut()
        .insert(IDEMPOTENCY_REPLAYED, HeaderValue::from_static("true"));
    res
}

async fn governed_call<S, ReqB, ResB>(
    mut inner: S,
    config: Arc<Config>,
    parts: Parts,
    body: ReqB,
    scope: StoreKey,
) -> Result<Response<IdempotencyBody<ResB>>, S::Error>
where
    S: Service<Request<RequestBody<ReqB>>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes>,
    ResB: Body<Data = Bytes>,
{
    let labels = parts.extensions.get::<RequestLabels>().cloned();
    let (data, trailers) = match buffer_request(body, config.max_request_body).await {
        Ok(Buffered::Whole(data, trailers)) => (data, trailers),
        Ok(Buffered::TooLarge) => {
            let limit = config.max_request_body;
            return Ok(reject(
                parts,
                IdempotencyCode::PayloadTooLarge,
                format!("the request body is larger than {limit} bytes"),
            ));
        }
        Err(_) => {
            return Ok(reject(
                parts,
                IdempotencyCode::BodyUnreadable,
                "the request body could not be read",
            ));
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let fingerprint = Fingerprint::of(&parts.method, target, &data);

    let claim = config
        .store
        .claim(&scope, fingerprint, config.claim_ttl)
        .await;
    let token = match claim {
        Ok(Claim::Acquired(token)) => token,
        Ok(Claim::InFlight { fingerprint: other }) if other != fingerprint => {
            return Ok(key_reused(parts));
        }
        Ok(Claim::InFlight { .. }) => {
            return Ok(reject(
                parts,
                IdempotencyCode::InFlight,
                "a request with this Idempotency-Key is still being processed",
            ));
        }
        Ok(Claim::Completed(record)) if record.fingerprint != fingerprint => {
            return Ok(key_reused(parts));
        }
        Ok(Claim::Completed(record)) => {
            return Ok(match &record.response {
                Some(stored) => {
                    if let Some(labels) = &labels {
                        labels.set_idempotency(scope.key.as_arc().clone(), true);
                    }
                    replay(stored)
                }
                None => reject(
                    parts,
                    IdempotencyCode::NotReplayable,
                    "the request with this Idempotency-Key completed, but its response was too large to store",
                ),
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "idempotency store unavailable; refusing the request");
            return Ok(reject(
                parts,
                IdempotencyCode::StoreUnavailable,
                "the idempotency store cannot be reached; the request was not processed",
            ));
        }
    };

    let mut guard = ClaimGuard {
        store: config.store.clone(),
        key: scope,
        token,
        armed: true,
    };
    let req = Request::from_parts(parts, RequestBody::buffered(data, trailers));
    // An `Err` from the handler drops the guard, which frees the key.
    let res = inner.call(req).await?;
    let (head, body) = res.into_parts();

    // Buffer the response so it can be stored. Boxed so that a response
    // over the limit can still be handed on after being partly read.
    let mut body = Box::pin(body);
    let mut data = BytesMut::new();
    let mut trailers: Option<HeaderMap> = None;
    let mut over_limit = false;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                // The guard frees the key as this returns: the response was
                // never whole, so a retry must be able to run again.
                drop(guard);
                return Ok(Response::from_parts(head, IdempotencyBody::failed(e)));
            }
        };
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > config.max_response_body {
                    data.extend_from_slice(&chunk);
                    over_limit = true;
                    break;
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    match &mut trailers {
                        None => trailers = Some(t),
                        Some(all) => all.extend(t),
                    }
                }
            }
        }
    }

    let data = data.freeze();
    let (record, response) = if over_limit {
        // The handler ran, so the key must not run again; but there is
        // nothing to replay. The rest streams to this caller unbuffered.
        tracing::warn!(
            limit = config.max_response_body,
            "idempotency: response too large to store; retries get idempotency.not_replayable"
        );
        let record = Completed {
            fingerprint,
            response: None,
        };
        (
            record,
            Response::from_parts(head, IdempotencyBody::with_prefix(data, body)),
        )
    } else {
        let stored = StoredResponse {
            status: head.status,
            headers: select(&head.headers, &config.stored_headers),
            body: data.clone(),
            trailers: trailers.as_ref().map(|t| select(t, &config.stored_headers)),
        };
        let record = Completed {
            fingerprint,
            response: Some(stored),
        };
        (
            record,
            Response::from_parts(head, IdempotencyBody::full(data, trailers)),
        )
    };
    finish(&config, &mut guard, record).await;
    Ok(response)
}

/// Stores the completed record; the claim is then no longer ours to free.
async fn finish(config: &Config, guard: &mut ClaimGuard, record: Completed) {
    match config
        .store
        .complete(&guard.key, guard.token, record, config.retention)
        .await
    {
        Ok(true) => guard.disarm(),
        Ok(false) => {
            // Our claim expired and another request took the key: it owns
            // the record now. The caller still gets this response.
            guard.disarm();
            tracing::warn!(
                "idempotency: claim expired before the response was stored; raise claim_ttl"
            );
        }
        Err(e) => {
            // The response exists but cannot be stored. Keep the claim (the
            // guard is disarmed): freeing the key would let a retry pay
            // twice; it frees itself after the claim TTL.
            guard.disarm();
            tracing::warn!(error = %e, "idempotency: could not store the response");
        }
    }
}

fn key_reused<B: Body>(parts: Parts) -> Response<IdempotencyBody<B>> {
    reject(
        parts,
        IdempotencyCode::KeyReused,
        "this Idempotency-Key was used with a different request",
    )
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::idempotency::{IdempotencyLayer, InMemoryStore, StoreError, StoreFuture};
    use http_body::Frame;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{Full, StreamBody};
    use tower::{ServiceBuilder, ServiceExt};

    type ResB = BoxBody<Bytes, io::Error>;

    fn frames(frames: Vec<Result<Frame<Bytes>, io::Error>>) -> ResB {
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    fn post(key: &str, body: &'static str) -> Request<Full<Bytes>> {
        Request::post("/pay")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    async fn body_of(res: Response<IdempotencyBody<ResB>>) -> Bytes {
        res.into_body().collect().await.unwrap().to_bytes()
    }

    /// A service whose `n`th execution answers `respond(n)`.
    fn svc<F>(
        layer: IdempotencyLayer,
        count: Arc<AtomicUsize>,
        respond: F,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<IdempotencyBody<ResB>>,
        Error = io::Error,
        Future: Send,
    > + Clone
    + Send
    where
        F: Fn(usize) -> Result<Response<ResB>, io::Error> + Clone + Send + Sync + 'static,
    {
        ServiceBuilder::new().layer(layer).service_fn(
            move |req: Request<RequestBody<Full<Bytes>>>| {
                let count = count.clone();
                let respond = respond.clone();
                async move {
                    let _ = req.into_body().collect().await;
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    respond(n)
                }
            },
        )
    }

    fn ok(n: usize) -> Result<Response<ResB>, io::Error> {
        let body = BoxBody::new(
            Full::new(Bytes::from(format!("run {n}"))).map_err(|never| match never {}),
        );
        Ok(Response::new(body))
    }

    #[tokio::test]
    async fn labels_record_the_key_and_whether_it_was_replayed() {
        let count = Arc::new(AtomicUsize::new(0));
        let s = svc(IdempotencyLayer::new(InMemoryStore::new()), count, ok);
        for replayed in [false, true] {
            let mut req = post("\"k\"", "x");
            let labels = RequestLabels::get_or_insert(req.extensions_mut());
            let res = s.clone().oneshot(req).await.unwrap();
            assert_eq!(body_of(res).await, "run 1");
            let values = labels.snapshot();
            assert_eq!(values.idempotency_key.as_deref(), Some("k"));
            assert_eq!(values.replayed, replayed);
        }
    }

    #[tokio::test]
    async fn a_handler_error_releases_the_claim() {
        let count = Arc::new(AtomicUsize::new(0));
        let store = InMemoryStore::new();
        let s = svc(IdempotencyLayer::new(store.clone()), count.clone(), |n| {
            if n == 1 {
                Err(io::Error::other("boom"))
            } else {
                ok(n)
            }
        });
        assert!(s.clone().oneshot(post("k", "x")).await.is_err());
        wait_until(|| store.is_empty()).await;
        let res = s.oneshot(post("k", "x")).await.unwrap();
        assert_eq!(body_of(res).await, "run 2");
    }

    #[tokio::test]
    async fn a_failing_response_body_releases_the_claim() {
        let count = Arc::new(AtomicUsize::new(0));
        let store = InMemoryStore::new();
        let s = svc(IdempotencyLayer::new(store.clone()), count.clone(), |n| {
            if n == 1 {
                Ok(Response::new(frames(vec![
                    Ok(Frame::data(Bytes::from_static(b"part"))),
                    Err(io::Error::other("broken body")),
                ])))
            } else {
                ok(n)
            }
        });
        let res = s.clone().oneshot(post("k", "x")).await.unwrap();
        let err = res.into_body().collect().await.unwrap_err();
        assert_eq!(err.to_string(), "broken body");
        wait_until(|| store.is_empty()).await;
        let res = s.oneshot(post("k", "x")).await.unwrap();
        assert_eq!(body_of(res).await, "run 2");
    }

    #[tokio::test]
    async fn a_client_that_goes_away_releases_the_claim() {
        let count = Arc::new(AtomicUsize::new(0));
        let store = InMemoryStore::new();
        let entered = Arc::new(tokio::sync::Notify::new());
        let e = entered.clone();
        let c = count.clone();
        let s = ServiceBuilder::new()
            .layer(IdempotencyLayer::new(store.clone()))
            .service_fn(move |_req: Request<RequestBody<Full<Bytes>>>| {
                let e = e.clone();
                let c = c.clone();
                async move {
                    if c.fetch_add(1, Ordering::SeqCst) == 0 {
                        e.notify_one();
                        std::future::pending::<()>().await;
                    }
                    ok(2)
                }
            });
        let stuck = tokio::spawn(s.clone().oneshot(post("k", "x")));
        entered.notified().await;
        assert_eq!(store.len(), 1);
        stuck.abort();
        let _ = stuck.await;
        wait_until(|| store.is_empty()).await;
        let res = s.oneshot(post("k", "x")).await.unwrap();
        assert_eq!(body_of(res).await, "run 2");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_response_over_the_limit_is_streamed_and_never_run_again() {
        let count = Arc::new(AtomicUsize::new(0));
        let layer = IdempotencyLayer::new(InMemoryStore::new()).max_response_body(4);
        let s = svc(layer, count.clone(), |_| {
            Ok(Response::new(frames(vec![
                Ok(Frame::data(Bytes::from_static(b"0123"))),
                Ok(Frame::data(Bytes::from_static(b"4567"))),
                Ok(Frame::data(Bytes::from_static(b"89"))),
            ])))
        });
        let res = s.clone().oneshot(post("k", "x")).await.unwrap();
        assert_eq!(body_of(res).await, "0123456789");
        let retry = s.oneshot(post("k", "x")).await.unwrap();
        assert_eq!(retry.status(), 422);
        let problem: serde_json::Value = serde_json::from_slice(&body_of(retry).await).unwrap();
        assert_eq!(problem["code"], "idempotency.not_replayable");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn trailers_and_selected_headers_are_replayed() {
        let count = Arc::new(AtomicUsize::new(0));
        let layer =
            IdempotencyLayer::new(InMemoryStore::new()).store_header(http::header::LOCATION);
        let s = svc(layer, count, |_| {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("x-secret-trailer", HeaderValue::from_static("1"));
            let mut res = Response::new(frames(vec![
                Ok(Frame::data(Bytes::from_static(b"abc"))),
                Ok(Frame::trailers(trailers)),
            ]));
            *res.status_mut() = http::StatusCode::CREATED;
            res.headers_mut()
                .insert("location", HeaderValue::from_static("/pay/1"));
            res.headers_mut()
                .insert("set-cookie", HeaderValue::from_static("s=1"));
            Ok(res)
        });
        let first = s.clone().oneshot(post("k", "x")).await.unwrap();
        assert!(
            first.headers().contains_key("set-cookie"),
            "the first answer is untouched"
        );
        let first = first.into_body().collect().await.unwrap();
        assert!(first.trailers().unwrap().contains_key("x-secret-trailer"));
        let replay = s.oneshot(post("k", "x")).await.unwrap();
        assert_eq!(replay.status(), 201);
        assert_eq!(replay.headers()["location"], "/pay/1");
        assert_eq!(replay.headers()["idempotency-replayed"], "true");
        assert!(!replay.headers().contains_key("set-cookie"));
        let replay = replay.into_body().collect().await.unwrap();
        let trailers = replay.trailers().unwrap().clone();
        assert_eq!(trailers["grpc-status"], "0");
        assert!(!trailers.contains_key("x-secret-trailer"));
        assert_eq!(replay.to_bytes(), "abc");
    }

    type Never = StreamBody<futures_util::stream::Pending<Result<Frame<Bytes>, io::Error>>>;

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let layer = IdempotencyLayer::new(InMemoryStore::new()).max_request_body(10);
        let s = ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_req: Request<RequestBody<Never>>| async { ok(1) });
        // The body never yields: reading it would hang.
        let req = Request::post("/pay")
            .header("idempotency-key", "k")
            .header("content-length", "11")
            .body(StreamBody::new(futures_util::stream::pending()))
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(10), s.oneshot(req))
            .await
            .expect("decided without reading")
            .unwrap();
        assert_eq!(res.status(), 413);
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_is_refused_while_reading() {
        let count = Arc::new(AtomicUsize::new(0));
        let layer = IdempotencyLayer::new(InMemoryStore::new()).max_request_body(3);
        let s = svc(layer, count.clone(), ok);
        let res = s.clone().oneshot(post("k", "abcd")).await.unwrap();
        assert_eq!(res.status(), 413);
        let res = s.oneshot(post("k", "abc")).await.unwrap();
        assert_eq!(res.status(), 200, "the refused request claimed nothing");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn ungoverned_requests_and_optional_keys_pass_through() {
        let count = Arc::new(AtomicUsize::new(0));
        let store = InMemoryStore::new();
        let s = svc(IdempotencyLayer::new(store.clone()), count.clone(), ok);
        let put = Request::put("/pay").body(Full::default()).unwrap();
        assert_eq!(s.clone().oneshot(put).await.unwrap().status(), 200);
        // A custom predicate; keys optional.
        let layer = IdempotencyLayer::new(store.clone())
            .governs(|p: &Parts| p.method == http::Method::PUT)
            .require_key(false);
        let s = svc(layer, count.clone(), ok);
        let put = Request::put("/pay").body(Full::default()).unwrap();
        assert_eq!(s.clone().oneshot(put).await.unwrap().status(), 200);
        let post = Request::post("/pay").body(Full::default()).unwrap();
        assert_eq!(s.oneshot(post).await.unwrap().status(), 200);
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert!(store.is_empty());
    }

    struct DownStore;

    impl IdempotencyStore for DownStore {
        fn claim<'a>(
            &'a self,
            _: &'a StoreKey,
            _: Fingerprint,
            _: Duration,
        ) -> StoreFuture<'a, Claim> {
            Box::pin(async { Err(StoreError::new("down")) })
        }
        fn complete<'a>(
            &'a self,
            _: &'a StoreKey,
            _: ClaimToken,
            _: Completed,
            _: Duration,
        ) -> StoreFuture<'a, bool> {
            Box::pin(async { Err(StoreError::new("down")) })
        }
        fn release<'a>(&'a self, _: &'a StoreKey, _: ClaimToken) -> StoreFuture<'a, ()> {
            Box::pin(async { Err(StoreError::new("down")) })
        }
    }

    #[tokio::test]
    async fn an_unreachable_store_fails_closed() {
        let count = Arc::new(AtomicUsize::new(0));
        let s = svc(IdempotencyLayer::new(DownStore), count.clone(), ok);
        let res = s.clone().oneshot(post("k", "x")).await.unwrap();
        assert_eq!(res.status(), 503);
        let grpc = Request::post("/pkg.S/M")
            .header("content-type", "application/grpc")
            .header("idempotency-key", "k")
            .body(Full::default())
            .unwrap();
        // Not a listed method: passes through.
        assert_eq!(s.oneshot(grpc).await.unwrap().status(), 200);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let s = svc(
            IdempotencyLayer::new(DownStore).grpc_method("/pkg.S/M"),
            count.clone(),
            ok,
        );
        let grpc = Request::post("/pkg.S/M")
            .header("content-type", "application/grpc")
            .header("idempotency-key", "k")
            .body(Full::default())
            .unwrap();
        let res = s.oneshot(grpc).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    async fn wait_until(mut done: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("condition not reached");
    }
}
