//! [`RateLimitLayer`]: rate and in-flight limits in front of a service.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::concurrency::ConcurrencyLimiter;
use super::decide::{Admission, MetricTenants, Shared};
use super::local::LocalLimiter;
use super::service::RateLimit;
use super::source::RateLimits;
use super::stats::RateLimitStats;
use crate::tenant::TenantNamespace;

/// The default bound on local rate-limit keys.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// The default share of those keys one tenant may hold.
pub const DEFAULT_MAX_KEYS_PER_TENANT: usize = 100_000;
/// The default bound on concurrency keys (in flight or queued).
pub const DEFAULT_MAX_CONCURRENCY_KEYS: usize = 100_000;
/// The default share of those concurrency keys one tenant may hold.
pub const DEFAULT_MAX_CONCURRENCY_KEYS_PER_TENANT: usize = 10_000;

/// Enforces a [`RateLimits`] policy: GCRA rate limits and in-flight limits
/// keyed by the verified tenant and subject. See the [module docs](super).
///
/// Every service the layer builds shares one limiter: clone the layer, not
/// the policy, to share limits between routers.
#[derive(Clone)]
pub struct RateLimitLayer {
    limits: RateLimits,
    max_keys: usize,
    max_keys_per_tenant: usize,
    max_concurrency_keys: usize,
    max_concurrency_keys_per_tenant: usize,
    response_headers: bool,
    #[cfg(feature = "redis")]
    redis: Option<super::RedisRateLimiter>,
    metric_tenants: Option<Arc<MetricTenants>>,
    stats: RateLimitStats,
    // Built on first `layer`, then shared by every service.
    shared: Arc<std::sync::OnceLock<Arc<Shared>>>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limits", &self.limits)
            .field("max_keys", &self.max_keys)
            .field("max_keys_per_tenant", &self.max_keys_per_tenant)
            .field("response_headers", &self.response_headers)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// Enforces `limits`, locally (in this process) until
    /// [`redis`](Self::redis) is set.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            max_keys: DEFAULT_MAX_KEYS,
            max_keys_per_tenant: DEFAULT_MAX_KEYS_PER_TENANT,
            max_concurrency_keys: DEFAULT_MAX_CONCURRENCY_KEYS,
            max_concurrency_keys_per_tenant: DEFAULT_MAX_CONCURRENCY_KEYS_PER_TENANT,
            response_headers: false,
            #[cfg(feature = "redis")]
            redis: None,
            metric_tenants: None,
            stats: RateLimitStats::default(),
            shared: Arc::default(),
        }
    }

    fn reset(mut self) -> Self {
        self.shared = Arc::default();
        self
    }

    /// The hard bound on local rate-limit keys (default
    /// [`DEFAULT_MAX_KEYS`]). Keys whose bucket is full again are dropped
    /// first, which changes no decision; only when every key is busy is the
    /// one nearest to full dropped. A shard is scanned at most once a
    /// millisecond; in between, a new key for a full shard is refused.
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.max_keys = keys;
        self.reset()
    }

    /// How many local keys one tenant may hold (default
    /// [`DEFAULT_MAX_KEYS_PER_TENANT`]); past it, its requests that need a
    /// new key are refused with `ratelimit.exceeded`.
    pub fn max_keys_per_tenant(mut self, keys: usize) -> Self {
        self.max_keys_per_tenant = keys;
        self.reset()
    }

    /// The bound on concurrency keys with requests in flight or queued
    /// (default [`DEFAULT_MAX_CONCURRENCY_KEYS`]); past it, a request for a
    /// new key is refused with `ratelimit.concurrency_exceeded`.
    pub fn max_concurrency_keys(mut self, keys: usize) -> Self {
        self.max_concurrency_keys = keys;
        self.reset()
    }

    /// How many of those concurrency keys one tenant may hold (default
    /// [`DEFAULT_MAX_CONCURRENCY_KEYS_PER_TENANT`]); past it, its requests
    /// for a new key are refused with `ratelimit.concurrency_exceeded`,
    /// while other tenants keep getting seats.
    pub fn max_concurrency_keys_per_tenant(mut self, keys: usize) -> Self {
        self.max_concurrency_keys_per_tenant = keys;
        self.reset()
    }

    /// Adds `RateLimit-Policy` and `RateLimit` to successful HTTP answers
    /// of limited requests too (default off; refusals always carry them).
    pub fn response_headers(mut self, enabled: bool) -> Self {
        self.response_headers = enabled;
        self.reset()
    }

    /// Only tenants for which `known` is true become a metric series of
    /// their own; the others are counted as `_other` (as
    /// `TelemetryLayerBuilder::metric_tenants`). The number of series is
    /// bounded in any case ([`MAX_SERIES`](super::MAX_SERIES)).
    pub fn metric_tenants(
        mut self,
        known: impl Fn(&TenantNamespace) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.metric_tenants = Some(Arc::new(known));
        self.reset()
    }

    /// Keeps every rule's counters in Redis, shared by every replica using
    /// it; see [`RedisRateLimiter`](super::RedisRateLimiter).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, redis: super::RedisRateLimiter) -> Self {
        self.redis = Some(redis);
        self.reset()
    }

    /// The outcome counters, shared by every service this layer builds.
    pub fn stats(&self) -> RateLimitStats {
        self.stats.clone()
    }

    /// The policy.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Local rate-limit keys held now (for tests and gauges).
    pub fn local_keys(&self) -> usize {
        self.shared().local.len()
    }

    /// The hard bound on [`local_keys`](Self::local_keys): `max_keys`
    /// rounded up to a multiple of the shard count.
    pub fn local_key_capacity(&self) -> usize {
        self.shared().local.capacity()
    }

    /// Concurrency keys with requests in flight or queued now.
    pub fn concurrency_keys(&self) -> usize {
        self.shared().concurrency.len()
    }

    /// Requests waiting in a concurrency queue now.
    pub fn concurrency_waiting(&self) -> usize {
        self.shared().concurrency.waiting()
    }

    /// Decides a request head as the layer does (spending quota, taking
    /// and at once freeing a concurrency seat) without calling a service:
    /// `true` when it would pass. For benchmarks; not a stable API.
    #[doc(hidden)]
    pub async fn decide_head(&self, head: &http::Request<()>) -> bool {
        match self.shared().admit(head) {
            Admission::Pass(_) => true,
            Admission::Refuse(_) => false,
            Admission::Pending(wait) => wait.await.is_ok(),
        }
    }

    fn shared(&self) -> Arc<Shared> {
        Arc::clone(self.shared.get_or_init(|| {
            let known = self.metric_tenants.clone();
            Arc::new(Shared {
                limits: self.limits.clone(),
                local: LocalLimiter::new(self.max_keys, self.max_keys_per_tenant),
                concurrency: Arc::new(ConcurrencyLimiter::new(
                    self.max_concurrency_keys,
                    self.max_concurrency_keys_per_tenant,
                )),
                #[cfg(feature = "redis")]
                redis: self.redis.clone(),
                response_headers: self.response_headers,
                stats: self.stats.clone(),
                metric_tenants: known
                    .map(|k| Box::new(move |t: &TenantNamespace| k(t)) as Box<MetricTenants>),
                seed: foldhash::quality::RandomState::default(),
            })
        }))
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.shared())
    }
}
