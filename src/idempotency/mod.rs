//! Idempotency keys: a retried payment never pays twice.
//!
//! [`IdempotencyLayer`] implements the `Idempotency-Key` header of the IETF
//! draft (draft-ietf-httpapi-idempotency-key-header) with Stripe's
//! behaviour. It is the innermost governance layer (after
//! authentication, tenant and RBAC, just outside the handler), so it knows
//! the verified caller and so requests other layers refuse never reach the
//! store.
//!
//! # What a governed request goes through
//!
//! 1. **Which requests.** The path decides, never the `content-type`
//!    (which only chooses how a refusal is rendered): the unary gRPC
//!    methods listed with [`IdempotencyLayer::grpc_method`] are governed;
//!    the other methods of their services, and of services declared with
//!    [`IdempotencyLayer::grpc_service`], pass through; every other path
//!    gets the plain-HTTP rules, the requests the [`Governs`] strategy
//!    selects (default [`PostAndPatch`]; closures work), even when it
//!    claims to be gRPC. So declare your gRPC services, or every call of
//!    an undeclared one is a governed `POST`. **Streaming gRPC calls are
//!    out of scope**: the layer buffers whole requests and responses, so
//!    list only unary methods.
//! 2. **Key.** The `Idempotency-Key` header (gRPC: the `idempotency-key`
//!    metadata, the same header over HTTP/2), either the draft's
//!    structured-field string (`"abc"`, escapes `\"` and `\\`) or Stripe's
//!    bare token (`abc`); both name the same key. 1–255 visible ASCII
//!    characters. Missing → 400 `idempotency.key_missing` (unless
//!    [`require_key(false)`](IdempotencyLayer::require_key)); malformed or
//!    sent more than once → 400 `idempotency.key_invalid`.
//! 3. **Scope.** A record is stored per (tenant, subject, key) — a
//!    [`StoreKey`]: the [`Tenant`](crate::Tenant) from the request
//!    extensions (else the principal's tenant claim) and the verified
//!    [`Principal`](crate::Principal)'s issuer and subject. One caller never
//!    sees another's response, and headers never choose a scope. Requests
//!    without a principal share one *anonymous* scope per tenant, separate
//!    from every subject (see [`Caller`]); put the layer behind
//!    authentication if anonymous callers must not share keys.
//! 4. **Fingerprint.** SHA-256 over the method, the path **with its query**
//!    (a different query is a different request) and the body. The body is
//!    buffered up to [`max_request_body`](IdempotencyLayer::max_request_body)
//!    (default 1 MiB); larger → 413 `idempotency.payload_too_large`,
//!    decided from `content-length` before reading when it is declared.
//!    A body that cannot be read → 400 `idempotency.body_unreadable`.
//! 5. **Claim.** An in-flight record is claimed atomically in the
//!    [`IdempotencyStore`]. What the store already holds decides:
//!
//!    | found | answer (HTTP / gRPC) |
//!    |---|---|
//!    | nothing, or an expired record | the handler runs |
//!    | in flight, same fingerprint | 409 `idempotency.in_flight` / ABORTED |
//!    | completed, same fingerprint | the stored response, replayed byte for byte, with `idempotency-replayed: true` |
//!    | anything, another fingerprint | 422 `idempotency.key_reused` / FAILED_PRECONDITION |
//!    | nothing, but the tenant has used up its share of the store | 429 `idempotency.quota_exceeded` / RESOURCE_EXHAUSTED; the handler does **not** run |
//!    | the store cannot be reached | 503 `idempotency.store_unavailable` / UNAVAILABLE; the handler does **not** run |
//!
//! 6. **Completion.** The response — whatever its status, as Stripe does —
//!    is buffered and stored for [`retention`](IdempotencyLayer::retention)
//!    (default 24 h): status, the headers in [`DEFAULT_STORED_HEADERS`]
//!    (`content-type`, encodings, gRPC status) plus those added with
//!    [`store_header`](IdempotencyLayer::store_header), the body and the
//!    trailers (gRPC's `grpc-status`, `grpc-message`). Then it is sent.
//!
//! [`RequestLabels::set_idempotency`](crate::RequestLabels::set_idempotency)
//! records the key and whether the answer was a replay, for the telemetry
//! and audit layers.
//!
//! # Failure and the trade-offs taken
//!
//! - **Claims expire** after [`claim_ttl`](IdempotencyLayer::claim_ttl)
//!   (default 60 s), so a crashed replica does not lock a key forever. A
//!   handler that runs longer than that may run twice: set it above your
//!   slowest governed handler.
//! - **Handler error, failing response body, or client gone while the
//!   handler runs** (the future is dropped): the claim is released, so a
//!   retry runs the handler again instead of waiting for the TTL. Design
//!   handlers so that an interrupted run is safe to repeat (a database
//!   transaction that did not commit).
//! - **Once the handler has answered, the claim is never released** by the
//!   request going away. Storing the response runs in a task of its own
//!   that finishes even if the client resets the stream or closes the
//!   connection, so its retry gets the replay. That task is bounded: it
//!   gives up after the claim TTL, and at most 4096 run detached per
//!   layer (past that the write runs inline, and a client that leaves
//!   then makes its retry wait for the claim TTL — 409, never a second
//!   run).
//! - **The store fails after the handler ran**: the response still goes to
//!   the caller; the claim is kept (never freed early, which could pay
//!   twice) and expires by TTL.
//! - **Response bodies are buffered** before the first byte is sent, so
//!   that what is replayed is what was sent. That costs memory and time to
//!   first byte, bounded by
//!   [`max_response_body`](IdempotencyLayer::max_response_body) (default
//!   1 MiB). A larger response streams to the first caller unbuffered, the
//!   key stays used (the handler ran), and retries get 422
//!   `idempotency.not_replayable` rather than a second execution.
//!
//! # Stores
//!
//! [`IdempotencyStore`] is object safe (methods return boxed futures), so
//! one layer type serves any store. [`InMemoryStore`] keeps records in a
//! sharded map, swept in the background, for one process and for tests,
//! within a byte budget (default 64 MiB) of which each tenant may hold a
//! share (default a quarter): one tenant flooding unique keys gets 429
//! `idempotency.quota_exceeded` while the others carry on.
//! With feature `redis`, `RedisStore` keeps them in Redis (Lua-scripted
//! claims, completion that checks the claim token), so several replicas
//! behave as one; its keys are namespaced per tenant, all have TTLs, and
//! the claim script enforces a per-tenant record quota in the same atomic
//! step (see its docs for what `maxmemory` eviction does).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use bytes::Bytes;
//! use finmesh::idempotency::{IdempotencyLayer, InMemoryStore, IdempotencyRequestBody};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let payments = Arc::new(AtomicUsize::new(0));
//! let counter = payments.clone();
//! let svc = ServiceBuilder::new()
//!     .layer(IdempotencyLayer::new(InMemoryStore::new()))
//!     .service_fn(move |req: Request<IdempotencyRequestBody<Full<Bytes>>>| {
//!         let counter = counter.clone();
//!         async move {
//!             let body = req.into_body().collect().await.unwrap().to_bytes();
//!             let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
//!             let reply = format!("paid {} (payment #{n})", String::from_utf8_lossy(&body));
//!             Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(reply))))
//!         }
//!     });
//!
//! let transfer = |key: &str, amount: &'static str| {
//!     Request::post("/v1/transfers")
//!         .header("idempotency-key", key)
//!         .body(Full::new(Bytes::from(amount)))
//!         .unwrap()
//! };
//!
//! let first = svc.clone().oneshot(transfer("\"t-1\"", "100 EUR")).await.unwrap();
//! assert_eq!(first.status(), 200);
//! let first = first.into_body().collect().await.unwrap().to_bytes();
//!
//! // The retry (bare-token form of the same key) is replayed, not paid again.
//! let retry = svc.clone().oneshot(transfer("t-1", "100 EUR")).await.unwrap();
//! assert_eq!(retry.headers()["idempotency-replayed"], "true");
//! assert_eq!(retry.into_body().collect().await.unwrap().to_bytes(), first);
//! assert_eq!(payments.load(Ordering::SeqCst), 1);
//!
//! // The same key for another amount is refused.
//! let reused = svc.clone().oneshot(transfer("t-1", "999 EUR")).await.unwrap();
//! assert_eq!(reused.status(), 422);
//!
//! // A POST without a key is refused.
//! let req = Request::post("/v1/transfers").body(Full::default()).unwrap();
//! assert_eq!(svc.oneshot(req).await.unwrap().status(), 400);
//! # }
//! ```
//!
//! Governing other routes, and a unary gRPC method:
//!
//! ```
//! use finmesh::idempotency::{IdempotencyLayer, InMemoryStore};
//! use std::time::Duration;
//!
//! let layer = IdempotencyLayer::new(InMemoryStore::new())
//!     .governs(|parts: &http::request::Parts| {
//!         parts.method == http::Method::POST && parts.uri.path().starts_with("/v1/transfers")
//!     })
//!     .grpc_method("/payments.v1.Payments/Transfer")
//!     .claim_ttl(Duration::from_secs(30))
//!     .retention(Duration::from_secs(7 * 24 * 3600))
//!     .store_header(http::header::LOCATION);
//! # let _ = layer;
//! ```

mod body;
mod buffer;
mod codes;
mod future;
mod governed;
mod guard;
mod key;
mod layer;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;
mod respond;
mod service;
mod store;

pub use body::{IdempotencyBody, IdempotencyRequestBody};
pub use codes::IdempotencyCode;
pub use future::ResponseFuture;
pub use key::{IDEMPOTENCY_KEY, IDEMPOTENCY_REPLAYED, IdempotencyKey, InvalidKey, MAX_KEY_LEN};
pub use layer::{DEFAULT_STORED_HEADERS, Governs, IdempotencyLayer, PostAndPatch};
pub use memory::{DEFAULT_MAX_BYTES, DEFAULT_TENANT_SHARE, InMemoryStore, RECORD_OVERHEAD};
#[cfg(feature = "redis")]
pub use redis_store::{DEFAULT_REDIS_TENANT_QUOTA, RedisStore};
pub use service::Idempotency;
pub use store::{
    Caller, Claim, ClaimToken, Completed, Fingerprint, IdempotencyStore, StoreError, StoreFuture,
    StoreKey, StoredResponse,
};
