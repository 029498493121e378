//! Tenant fairness: rate limits and in-flight limits keyed by the
//! *verified* tenant and subject, in process or shared across replicas
//! through Redis.
//!
//! [`RateLimitLayer`] sits after RBAC and before idempotency
//! (DESIGN.md, row 7): only authenticated, authorized requests spend a
//! tenant's quota, and a refused request stores nothing. It reads the
//! [`Principal`](crate::Principal), [`Tenant`](crate::Tenant) and RBAC
//! [`Action`](crate::rbac::Action) the earlier layers put in the request
//! extensions — never a raw header — so a caller cannot pick whose quota
//! it spends, and buckets exist only for verified identities.
//!
//! | refusal | HTTP | gRPC | code |
//! |---|---|---|---|
//! | a rate limit is used up | 429 + `Retry-After`, `RateLimit-Policy`, `RateLimit` | RESOURCE_EXHAUSTED + `grpc-retry-pushback-ms` | `ratelimit.exceeded` |
//! | in-flight limit reached, queue full or wait timed out | 429 + `Retry-After` | RESOURCE_EXHAUSTED + `grpc-retry-pushback-ms` | `ratelimit.concurrency_exceeded` |
//! | shared store down and the rule is `failClosed` | 503 + `Retry-After` | UNAVAILABLE | `ratelimit.store_unavailable` |
//!
//! The header fields follow the IETF httpapi RateLimit draft:
//! `RateLimit-Policy: "<rule>";q=<requests>;w=<period s>` and
//! `RateLimit: "<rule>";r=<remaining>;t=<s>` (`t`: until the next request
//! may pass when refused, until a full burst is back otherwise).
//! [`RateLimitLayer::response_headers`] adds them to successes too.
//!
//! # Policy
//!
//! One Kubernetes-styled document, hot-reloaded with [`RateLimits::watch`]
//! (the last good policy stays when a new version is invalid) — this is
//! the reference gateway's `examples/gateway/config/ratelimits.yaml`:
//!
//! ```yaml
#![doc = include_str!("../../examples/gateway/config/ratelimits.yaml")]
//! ```
//!
//! - A rule's `match` uses RBAC's vocabulary: `verbs` and `resources` of
//!   the action RBAC mapped (`*`, `accounts/*`, `*/balance`), `tenants`,
//!   `subjects` or `groups` (either matches), `riskLevels` (of the verified
//!   token), `routes` (route templates as in
//!   [`HttpRoutes`](crate::rbac::HttpRoutes)) or `grpcMethods`
//!   (`/pkg.Service/Method`, `/pkg.Service/*`), either matches. An empty
//!   `match` matches every request.
//! - `key`: `tenant`, `subject`, `tenantAndSubject` or `route` (the
//!   matched template or method: one bucket for everybody). A subject is
//!   the verified issuer and `sub` together, and its bucket lies within
//!   the request's tenant (if any): the same `sub` from another issuer, or
//!   in another tenant, has its own bucket. A request without the identity
//!   a rule is keyed by is not limited by it.
//! - `limit`: `requests` per `period` (`500ms`, `1s`, `1m`, `1h`) with a
//!   `burst` (default: `requests`).
//! - **First match wins per key kind**: a request is limited by at most
//!   one rule of each kind, so per-tenant and per-subject limits combine.
//!   Requests no rule matches are not limited. A request refused by one
//!   limit has spent from those checked before it (as Envoy's descriptors
//!   do).
//! - `failMode` (`failOpen`, the default, or `failClosed`), per rule or for
//!   the whole `spec`: what a shared limit does when Redis cannot answer.
//! - `concurrency`: priority `levels`, each with `maxInFlight` seats per key
//!   and a FIFO `queue` (`length`, `timeout`), and `rules` (first match
//!   wins) that send requests to a level, keyed as above — after the
//!   Kubernetes apiserver's API Priority and Fairness: payments and reports
//!   in different levels never take each other's seats. A seat is held
//!   until the response body ends (or is dropped), so an open gRPC or
//!   streaming response keeps its seat for as long as it runs.
//! - **Streams are charged per call**: a rate limit takes one token per
//!   request, so a gRPC client or bidi stream costs one token however many
//!   messages it carries. Bound streaming methods with a `concurrency`
//!   rule (open streams per key), not by a rate limit alone.
//!
//! [`RateLimitPolicy::from_yaml`] is the strict parser: unknown fields,
//! another `apiVersion` or `kind`, YAML tags and invalid values are refused
//! with the path of the field.
//!
//! # Algorithm and state
//!
//! GCRA, one *theoretical arrival time* per key. Locally the keys live in a
//! sharded map with a hard bound ([`RateLimitLayer::max_keys`]) and a
//! per-tenant share ([`RateLimitLayer::max_keys_per_tenant`]); a key whose
//! bucket is full again is indistinguishable from a new one, so dropping it
//! loses nothing, and that is what eviction does first. A shard of the map
//! is scanned for such keys at most once a millisecond: in between, a new
//! key of a tenant at its share, or for a shard full of busy keys, is
//! refused (`ratelimit.exceeded`) rather than scanned for. With
//! [`RateLimitLayer::redis`] every rule's state lives in Redis instead
//! ([`RedisRateLimiter`]): one atomic script per decision, a request's
//! decisions in one pipeline, so N replicas grant a limit once.
//!
//! In-flight limits keep one gate per key with requests in flight or
//! queued, in process, bounded overall
//! ([`RateLimitLayer::max_concurrency_keys`]) and per tenant
//! ([`RateLimitLayer::max_concurrency_keys_per_tenant`]): a tenant with
//! many subjects fills its own share, not everybody's.
//!
//! The `governor` crate was not used: a shared limit must run the same
//! algorithm as a Redis script anyway, and its keyed store has no size
//! bound, no per-tenant share and no per-rule keys.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use finmesh::ratelimit::{RateLimitLayer, RateLimits};
//! use finmesh::{Principal, ResponseBody, Tenant, TenantNamespace};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a service: RateLimits::watch("/etc/finmesh/ratelimits.yaml").
//! let limits = RateLimits::from_yaml(r#"
//! apiVersion: finmesh.io/v1
//! kind: RateLimitPolicy
//! metadata: {name: example}
//! spec:
//!   rules:
//!     - name: per-tenant
//!       key: tenant
//!       limit: {requests: 2, period: 1m}
//! "#).unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(limits))
//!     .service_fn(|_: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
//!     });
//!
//! // What the JWT and tenant layers put into the extensions.
//! let request = |tenant: &str| {
//!     let mut req = Request::post("/v1/transfers").body(Full::default()).unwrap();
//!     req.extensions_mut().insert(Principal::new("alice", "https://issuer.example"));
//!     req.extensions_mut().insert(Tenant::new(TenantNamespace::parse(tenant).unwrap()));
//!     req
//! };
//! for _ in 0..2 {
//!     assert_eq!(svc.clone().oneshot(request("tenant-a")).await.unwrap().status(), 200);
//! }
//! let refused = svc.clone().oneshot(request("tenant-a")).await.unwrap();
//! assert_eq!(refused.status(), 429);
//! assert_eq!(refused.headers()["retry-after"], "30");
//! assert_eq!(refused.headers()["ratelimit-policy"], "\"per-tenant\";q=2;w=60");
//! assert_eq!(refused.headers()["ratelimit"], "\"per-tenant\";r=0;t=30");
//! // Another tenant has its own bucket.
//! assert_eq!(svc.clone().oneshot(request("tenant-b")).await.unwrap().status(), 200);
//! # let _ = ResponseBody::<Full<Bytes>>::empty;
//! # }
//! ```

mod codes;
mod concurrency;
mod decide;
mod future;
mod gcra;
mod layer;
mod local;
mod manifest;
mod matcher;
mod policy;
#[cfg(feature = "redis")]
mod redis;
mod respond;
mod service;
mod source;
mod stats;

#[cfg(test)]
mod tests;

pub use codes::RateLimitCode;
pub use future::ResponseFuture;
pub use layer::{
    DEFAULT_MAX_CONCURRENCY_KEYS, DEFAULT_MAX_CONCURRENCY_KEYS_PER_TENANT, DEFAULT_MAX_KEYS,
    DEFAULT_MAX_KEYS_PER_TENANT, RateLimitLayer,
};
pub use manifest::{FailMode, KeyKind};
pub use policy::{
    API_VERSION, KIND, MAX_POLICY_BYTES, MAX_POLICY_ITEMS, RateLimitPolicy, RateLimitPolicyError,
};
#[cfg(feature = "redis")]
pub use redis::RedisRateLimiter;
pub use respond::{GRPC_RETRY_PUSHBACK_MS, RATELIMIT, RATELIMIT_POLICY};
pub use service::RateLimit;
pub use source::RateLimits;
pub use stats::{MAX_SERIES, OTHER_TENANT, Outcome, RateLimitStats, Series};
