//! [`RateLimitStats`]: what the rate-limit layer decided, counted per
//! rule, tenant (bounded) and outcome.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::tenant::TenantNamespace;

/// The most `(rule, tenant, outcome)` series kept; past it, new tenants
/// are counted as `_other`.
pub const MAX_SERIES: usize = 10_000;

/// The tenant label of series whose tenant is not admitted as a label.
pub const OTHER_TENANT: &str = "_other";

/// One decision's outcome, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Within the limit.
    Allowed,
    /// Refused, `ratelimit.exceeded`.
    Limited,
    /// Waited in a concurrency queue, then got a seat.
    Queued,
    /// Refused, `ratelimit.concurrency_exceeded`.
    ConcurrencyExceeded,
    /// Redis failed and the rule let the request through (`failOpen`).
    FailedOpen,
    /// Redis failed and the rule refused (`failClosed`).
    FailedClosed,
}

impl Outcome {
    /// `allowed`, `limited`, `queued`, `concurrency_exceeded`,
    /// `failed_open`, `failed_closed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Limited => "limited",
            Self::Queued => "queued",
            Self::ConcurrencyExceeded => "concurrency_exceeded",
            Self::FailedOpen => "failed_open",
            Self::FailedClosed => "failed_closed",
        }
    }
}

/// One counter series.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Series {
    /// The rule (or concurrency rule) name.
    pub rule: Arc<str>,
    /// The tenant, or [`OTHER_TENANT`], or `""` for requests without one.
    pub tenant: String,
    /// The outcome.
    pub outcome: Outcome,
    /// How many decisions.
    pub count: u64,
}

/// Outcome counters of a [`RateLimitLayer`](super::RateLimitLayer): cheap
/// to clone, shared by every service the layer builds.
#[derive(Clone, Default)]
pub struct RateLimitStats {
    pub(super) inner: Arc<Counters>,
}

/// (rule id, tenant key, outcome); the tenant key is 0 for no tenant, 1
/// for `_other`, else the tenant's (seeded) hash: no string hashed twice.
type SeriesKey = (u64, u64, Outcome);

const NO_TENANT: u64 = 0;
const OTHER: u64 = 1;

#[derive(Default)]
struct Counter {
    tenant: Option<TenantNamespace>,
    count: AtomicU64,
}

#[derive(Default)]
pub(super) struct Counters {
    series: DashMap<SeriesKey, Counter, foldhash::fast::RandomState>,
    // `DashMap::len` locks every shard: counted aside instead.
    series_len: AtomicUsize,
    names: DashMap<u64, Arc<str>, foldhash::fast::RandomState>,
    pub(super) store_errors: AtomicU64,
}

impl Counters {
    /// Counts one decision of rule `id` (named `name`) for `tenant` and its
    /// hash (`other` when it may not be a label).
    pub(super) fn count(
        &self,
        id: u64,
        name: &Arc<str>,
        tenant: Option<(u64, TenantNamespace)>,
        other: bool,
        outcome: Outcome,
    ) {
        let tenant_key = match tenant {
            _ if other => OTHER,
            None => NO_TENANT,
            Some((hash, _)) => hash | 2,
        };
        if let Some(c) = self.series.get(&(id, tenant_key, outcome)) {
            c.count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Security: a bounded set of series, whatever the tenants.
        let (tenant_key, tenant) = if self.series_len.load(Ordering::Relaxed) >= MAX_SERIES {
            // Past the cap: `_other`, with a read lock when it exists.
            if let Some(c) = self.series.get(&(id, OTHER, outcome)) {
                c.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
            (OTHER, None)
        } else {
            (tenant_key, tenant.filter(|_| !other).map(|(_, t)| t))
        };
        if !self.names.contains_key(&id) {
            self.names.insert(id, Arc::clone(name));
        }
        self.series
            .entry((id, tenant_key, outcome))
            .or_insert_with(|| {
                self.series_len.fetch_add(1, Ordering::Relaxed);
                Counter {
                    tenant,
                    count: AtomicU64::new(0),
                }
            })
            .count
            .fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self, outcome: Outcome) -> u64 {
        self.series
            .iter()
            .filter(|e| e.key().2 == outcome)
            .map(|e| e.value().count.load(Ordering::Relaxed))
            .sum()
    }
}

impl RateLimitStats {
    /// Every series, in no particular order.
    pub fn series(&self) -> Vec<Series> {
        self.inner
            .series
            .iter()
            .map(|e| {
                let (id, tenant_key, outcome) = *e.key();
                Series {
                    rule: self
                        .inner
                        .names
                        .get(&id)
                        .map_or_else(|| Arc::from("?"), |n| Arc::clone(&n)),
                    tenant: match (tenant_key, e.value().tenant) {
                        (OTHER, _) => OTHER_TENANT.to_owned(),
                        (_, Some(t)) => t.to_string(),
                        (_, None) => String::new(),
                    },
                    outcome,
                    count: e.value().count.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Decisions with `outcome`, over every rule and tenant.
    pub fn total(&self, outcome: Outcome) -> u64 {
        self.inner.total(outcome)
    }

    /// Redis calls that failed or timed out.
    pub fn store_errors(&self) -> u64 {
        self.inner.store_errors.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for RateLimitStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitStats")
            .field("allowed", &self.total(Outcome::Allowed))
            .field("limited", &self.total(Outcome::Limited))
            .field("store_errors", &self.store_errors())
            .finish_non_exhaustive()
    }
}
