//! [`Idempotency`]: the service. It decides whether a request is governed,
//! reads its key and scope, and hands governed requests to the
//! [governed flow](super::governed).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::IdempotencyCode;
use super::body::{IdempotencyBody, IdempotencyRequestBody};
use super::future::ResponseFuture;
use super::governed::governed_call;
use super::key::IdempotencyKey;
use super::layer::Config;
use super::respond::{reject, too_large};
use super::store::{Caller, StoreKey};
use crate::labels::RequestLabels;
use crate::principal::Principal;
use crate::reject::grpc_service_of;
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
}

crate::macros::inner_accessors!([S] Idempotency<S>, inner: S);

impl<S: fmt::Debug> fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Idempotency<S>
where
    S: Service<Request<IdempotencyRequestBody<ReqB>>, Response = Response<ResB>>
        + Clone
        + Send
        + 'static,
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
        let Self { inner, config } = self;
        let (config, key) = match governed_key(config.as_ref(), &parts) {
            Ok(Some(governed)) => governed,
            Ok(None) => {
                let req = Request::from_parts(parts, IdempotencyRequestBody::new(body));
                return ResponseFuture::passthrough(inner.call(req));
            }
            Err((code, detail)) => return ResponseFuture::ready(reject(parts, code, detail)),
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
            return ResponseFuture::ready(too_large(parts, config.max_request_body));
        }
        let scope = scope(&parts, key);
        // The future owns the service that was polled ready.
        let clone = inner.clone();
        let inner = std::mem::replace(inner, clone);
        let flow = governed_call(inner, config.clone(), parts, body, scope);
        ResponseFuture::governed(Box::pin(flow))
    }
}

/// A refusal before anything is read: its code and detail.
type Refusal = (IdempotencyCode, Cow<'static, str>);

/// The layer's config and the request's key, if the layer governs the
/// request; `Ok(None)` lets it pass (not governed, or keys are optional
/// and it has none).
fn governed_key<'a>(
    config: Option<&'a Arc<Config>>,
    parts: &Parts,
) -> Result<Option<(&'a Arc<Config>, IdempotencyKey)>, Refusal> {
    let Some(config) = config.filter(|config| governs(config, parts)) else {
        return Ok(None);
    };
    match IdempotencyKey::from_headers(&parts.headers) {
        Ok(Some(key)) => Ok(Some((config, key))),
        Ok(None) if !config.require_key => Ok(None),
        Ok(None) => Err((
            IdempotencyCode::KeyMissing,
            "this request requires an Idempotency-Key".into(),
        )),
        Err(e) => Err((IdempotencyCode::KeyInvalid, e.to_string().into())),
    }
}

/// Whether the layer governs this request.
fn governs(config: &Config, parts: &Parts) -> bool {
    // Security: the path decides which rules apply, as it decides which
    // route the request reaches; the `content-type` is the client's claim
    // and only renders the answer. A path in a configured gRPC service gets
    // the gRPC rules (only listed unary methods: a streaming call cannot be
    // buffered); every other path gets the HTTP rules, even when it claims
    // to be gRPC — else `content-type: application/grpc` on an HTTP route
    // would skip the key.
    let path = parts.uri.path();
    if config.grpc_methods.contains(path) {
        return true;
    }
    if grpc_service_of(path).is_some_and(|s| config.grpc_services.contains(s)) {
        return false;
    }
    config.governs.governs(parts)
}

/// The scope the key is stored under.
fn scope(parts: &Parts, key: IdempotencyKey) -> StoreKey {
    // Security: only verified facts name the scope — the tenant the tenant
    // layer admitted (else the principal's tenant claim) and the
    // principal's issuer and subject. Without a principal the request
    // lands in the tenant's anonymous scope, which no authenticated caller
    // shares. Headers never choose a scope.
    let principal = parts.extensions.get::<Principal>();
    StoreKey {
        tenant: parts
            .extensions
            .get::<Tenant>()
            .map(|t| t.namespace)
            .or_else(|| principal.and_then(|p| p.tenant)),
        caller: principal.map_or(Caller::Anonymous, |p| Caller::Verified {
            issuer: p.issuer.clone(),
            subject: p.subject.clone(),
        }),
        key,
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::HeaderMap;
    use http::header::HeaderValue;
    use http_body::Frame;
    use http_body_util::BodyExt;

    use super::*;
    use crate::idempotency::{
        Claim, ClaimToken, Completed, Fingerprint, IdempotencyLayer, IdempotencyStore,
        InMemoryStore, StoreError, StoreFuture,
    };
    use http_body_util::combinators::BoxBody;
    use http_body_util::{Full, StreamBody};
    use tower::{ServiceBuilder, ServiceExt};

    type ResB = BoxBody<Bytes, io::Error>;

    #[test]
    fn the_scope_is_the_issuer_bound_identity() {
        // `alice` from two issuers (the JWT layer prefixes her name per
        // issuer; even unprefixed, the issuer is part of the scope) never
        // shares a record.
        let scope_of = |p: Principal| {
            let mut req = Request::new(());
            req.extensions_mut().insert(p);
            let (parts, ()) = req.into_parts();
            scope(&parts, IdempotencyKey::parse(b"k-1").unwrap())
        };
        let a = scope_of(Principal::new("alice", "https://idp-a.test"));
        let b = scope_of(Principal::new("alice", "https://idp-b.test"));
        assert_eq!(a.caller, Caller::verified("https://idp-a.test", "alice"));
        assert_ne!(a.caller, b.caller);
        assert_ne!(a.digest(), b.digest());
    }

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
            move |req: Request<IdempotencyRequestBody<Full<Bytes>>>| {
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
            .service_fn(move |_req: Request<IdempotencyRequestBody<Full<Bytes>>>| {
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
            .service_fn(|_req: Request<IdempotencyRequestBody<Never>>| async { ok(1) });
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
        let grpc = || {
            Request::post("/pkg.S/M")
                .header("content-type", "application/grpc")
                .header("idempotency-key", "k")
                .body(Full::default())
                .unwrap()
        };
        // A service the layer does not know of gets the HTTP rules (POST
        // is governed): refused, the gRPC way.
        let res = s.clone().oneshot(grpc()).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(count.load(Ordering::SeqCst), 0);
        // Not a listed method of a declared service: passes through.
        let s = svc(
            IdempotencyLayer::new(DownStore).grpc_service("pkg.S"),
            count.clone(),
            ok,
        );
        let res = s.oneshot(grpc()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("grpc-status").is_none());
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

    /// The path decides which rules govern a request; the content-type
    /// the client claims never does (issue 14, finding 1).
    #[test]
    fn the_path_decides_the_rules_whatever_the_content_type() {
        let layer = IdempotencyLayer::new(InMemoryStore::new())
            .grpc_method("/pay.v1.Pay/Transfer")
            .grpc_service("/pay.v1.Ledger/");
        let config = &layer.config;
        // (method, path, governed)
        let table = [
            ("POST", "/v1/transfer", true),
            ("PATCH", "/v1/accounts/a", true),
            ("GET", "/v1/accounts", false),
            ("POST", "/pay.v1.Pay/Transfer", true),
            ("GET", "/pay.v1.Pay/Transfer", true),
            ("POST", "/pay.v1.Pay/Stream", false),
            ("POST", "/pay.v1.Ledger/Get", false),
            ("POST", "/pay.v1.Other/Get", true),
            ("POST", "//pay.v1.Pay/Stream", true),
            ("POST", "/pay.v1.pay/Transfer", true),
        ];
        for ct in [
            None,
            Some("application/json"),
            Some("application/grpc"),
            Some("application/grpc+proto"),
            Some("APPLICATION/GRPC;x=y"),
            Some("application/grpc-web-text"),
            Some("application/grpcx"),
        ] {
            for (method, path, governed) in table {
                let mut req = Request::builder().method(method).uri(path);
                if let Some(ct) = ct {
                    req = req.header("content-type", ct);
                }
                let (parts, ()) = req.body(()).unwrap().into_parts();
                assert_eq!(governs(config, &parts), governed, "{method} {path} {ct:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "invalid gRPC method path")]
    fn a_grpc_method_must_be_a_method_path() {
        let _ = IdempotencyLayer::new(InMemoryStore::new()).grpc_method("/pay.v1.Pay");
    }

    /// A store whose completion fails: the response exists, the store
    /// cannot take it.
    #[derive(Clone)]
    struct FailingCompletion(InMemoryStore);

    impl IdempotencyStore for FailingCompletion {
        fn claim<'a>(
            &'a self,
            key: &'a StoreKey,
            fingerprint: Fingerprint,
            ttl: Duration,
        ) -> StoreFuture<'a, Claim> {
            self.0.claim(key, fingerprint, ttl)
        }
        fn complete<'a>(
            &'a self,
            _: &'a StoreKey,
            _: ClaimToken,
            _: Completed,
            _: Duration,
        ) -> StoreFuture<'a, bool> {
            Box::pin(async { Err(StoreError::new("lost the connection")) })
        }
        fn release<'a>(&'a self, key: &'a StoreKey, token: ClaimToken) -> StoreFuture<'a, ()> {
            self.0.release(key, token)
        }
    }

    #[tokio::test]
    async fn a_store_error_after_the_handler_answered_keeps_the_claim() {
        let count = Arc::new(AtomicUsize::new(0));
        let store = InMemoryStore::new();
        let layer = IdempotencyLayer::new(FailingCompletion(store.clone()));
        let s = svc(layer, count.clone(), ok);
        let res = s.clone().oneshot(post("k", "x")).await.unwrap();
        assert_eq!(
            body_of(res).await,
            "run 1",
            "the caller still gets its answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.len(), 1, "the claim is kept");
        let retry = s.oneshot(post("k", "x")).await.unwrap();
        assert_eq!(retry.status(), 409, "never run twice");
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
