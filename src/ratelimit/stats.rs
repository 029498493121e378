//! [`RateLimitStats`]: what the rate-limit layer decided, counted per
//! rule, tenant (bounded) and outcome.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

type SeriesKey = (u64, Option<TenantNamespace>, bool, Outcome);

#[derive(Default)]
pub(super) struct Counters {
    series: DashMap<SeriesKey, AtomicU64, foldhash::fast::RandomState>,
    names: DashMap<u64, Arc<str>, foldhash::fast::RandomState>,
    pub(super) store_errors: AtomicU64,
}

impl Counters {
    /// Counts one decision of rule `id` (named `name`) for `tenant`
    /// (`other` when it may not be a label).
    pub(super) fn count(
        &self,
        id: u64,
        name: &Arc<str>,
        tenant: Option<TenantNamespace>,
        other: bool,
        outcome: Outcome,
    ) {
        let key = (id, tenant.filter(|_| !other), other, outcome);
        if let Some(c) = self.series.get(&key) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Security: a bounded set of series, whatever the tenants.
        let key = if self.series.len() >= MAX_SERIES {
            (id, None, true, outcome)
        } else {
            key
        };
        if !self.names.contains_key(&id) {
            self.names.insert(id, Arc::clone(name));
        }
        self.series
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self, outcome: Outcome) -> u64 {
        self.series
            .iter()
            .filter(|e| e.key().3 == outcome)
            .map(|e| e.value().load(Ordering::Relaxed))
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
                let (id, tenant, other, outcome) = *e.key();
                Series {
                    rule: self
                        .inner
                        .names
                        .get(&id)
                        .map_or_else(|| Arc::from("?"), |n| Arc::clone(&n)),
                    tenant: match (tenant, other) {
                        (_, true) => OTHER_TENANT.to_owned(),
                        (Some(t), false) => t.to_string(),
                        (None, false) => String::new(),
                    },
                    outcome,
                    count: e.value().load(Ordering::Relaxed),
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
