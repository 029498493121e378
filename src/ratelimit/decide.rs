//! What the layer decides for one request: which rules apply, their
//! buckets' keys, the local or Redis decisions, the concurrency seat.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::Request;

use super::RateLimitCode;
use super::concurrency::{Admit, ConcurrencyLimiter, Permit};
use super::gcra::ceil_secs;
use super::local::{Full, LocalLimiter};
use super::manifest::KeyKind;
use super::matcher::{Place, RequestView};
use super::policy::RateLimitPolicy;
use super::source::RateLimits;
use super::stats::{Outcome, RateLimitStats};
use crate::codes::RejectionCode;
use crate::principal::Principal;
use crate::rbac::Action;
use crate::reject::Rejection;
use crate::tenant::{Tenant, TenantNamespace};

/// Whether a tenant may be a metric attribute value.
pub(super) type MetricTenants = dyn Fn(&TenantNamespace) -> bool + Send + Sync;

/// What every service of one layer shares.
pub(super) struct Shared {
    pub(super) limits: RateLimits,
    pub(super) local: LocalLimiter,
    pub(super) concurrency: Arc<ConcurrencyLimiter>,
    #[cfg(feature = "redis")]
    pub(super) redis: Option<super::RedisRateLimiter>,
    pub(super) response_headers: bool,
    pub(super) stats: RateLimitStats,
    pub(super) metric_tenants: Option<Box<MetricTenants>>,
    /// Security: bucket keys are hashes with a per-process random seed, so
    /// nobody can choose two subjects that share a bucket.
    pub(super) seed: foldhash::quality::RandomState,
}

/// The RateLimit header fields of the decision closest to its limit.
#[derive(Clone, Debug)]
pub(super) struct Quota {
    pub(super) rule: Arc<str>,
    pub(super) requests: u32,
    pub(super) period: Duration,
    pub(super) remaining: u32,
    /// `t`: seconds until the quota is back (refused: until the retry).
    pub(super) reset: Duration,
}

/// A refusal and what its answer carries.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) rejection: Rejection,
    pub(super) quota: Option<Quota>,
    pub(super) retry_after: Duration,
}

/// The admitted request's companions: the header fields for a success,
/// the concurrency seat held until the response body ends.
pub(super) type Admitted = (Option<Quota>, Option<Permit>);

pub(super) enum Admission {
    Pass(Admitted),
    Refuse(Refusal),
    /// Waits for Redis or a queue; never on the local-only fast path.
    Pending(BoxFuture<'static, Result<Admitted, Refusal>>),
}

/// A concurrency seat to take.
struct SeatRequest {
    key: u64,
    rule: Arc<str>,
    rule_id: u64,
    max_in_flight: u32,
    queue_length: u32,
    timeout: Duration,
}

struct Labels {
    /// The tenant and its seeded hash.
    tenant: Option<(u64, TenantNamespace)>,
    other: bool,
}

impl Shared {
    pub(super) fn admit(self: &Arc<Self>, head: &Request<()>) -> Admission {
        let ext = head.extensions();
        let principal = ext.get::<Principal>();
        let tenant = ext.get::<Tenant>().map(|t| &t.namespace);
        let view = RequestView {
            method: head.method(),
            path: head.uri().path(),
            action: ext.get::<Action>(),
            principal,
            tenant,
        };
        let tenant_hash = tenant.map_or(0, |t| self.hash_str(t.as_str()));
        let labels = Labels {
            tenant: tenant.map(|t| (tenant_hash, *t)),
            other: match (&self.metric_tenants, tenant) {
                (Some(known), Some(t)) => !known(t),
                _ => false,
            },
        };
        self.limits.with(|policy| {
            let mut matched: [Option<(usize, Place)>; 4] = [None; 4];
            let mut found = 0;
            for (i, rule) in policy.rules.iter().enumerate() {
                let slot = &mut matched[rule.key.index()];
                if slot.is_none()
                    && let Some(place) = rule.matcher.matches(&view)
                {
                    *slot = Some((i, place));
                    found += 1;
                    if found == KeyKind::ALL.len() {
                        break;
                    }
                }
            }
            let seat = self.seat_request(policy, &view);

            #[cfg(feature = "redis")]
            if let Some(redis) = &self.redis
                && found > 0
            {
                return self.admit_shared(redis, policy, &matched, &view, labels, seat);
            }

            let now = self.local.now();
            let mut quota: Option<Quota> = None;
            for &(i, place) in matched.iter().flatten() {
                let rule = &policy.rules[i];
                let Some(key) = self.bucket_key(rule.id, rule.key, &view, place) else {
                    continue;
                };
                let outcome = match self.local.decide(key, tenant_hash, &rule.gcra, now) {
                    Ok(o) => o,
                    Err(full) => {
                        self.count(rule.id, &rule.name, &labels, Outcome::Limited);
                        let detail = match full {
                            Full::TenantShare => format!(
                                "the tenant holds too many rate-limited keys (rule {:?})",
                                rule.name
                            ),
                            Full::Busy => format!(
                                "too many rate-limited keys are busy (rule {:?}); retry shortly",
                                rule.name
                            ),
                        };
                        return Admission::Refuse(self.refuse(
                            RateLimitCode::Exceeded.reject(detail),
                            None,
                            Duration::from_nanos(rule.gcra.interval),
                        ));
                    }
                };
                let q = || Quota {
                    rule: Arc::clone(&rule.name),
                    requests: rule.requests,
                    period: rule.period,
                    remaining: outcome.remaining,
                    reset: Duration::from_nanos(if outcome.allowed {
                        outcome.reset
                    } else {
                        outcome.retry_after
                    }),
                };
                if !outcome.allowed {
                    self.count(rule.id, &rule.name, &labels, Outcome::Limited);
                    let retry = Duration::from_nanos(outcome.retry_after);
                    return Admission::Refuse(self.limited(&rule.name, rule.key, q(), retry));
                }
                self.count(rule.id, &rule.name, &labels, Outcome::Allowed);
                // The fields of a success are built only when they are sent.
                if self.response_headers
                    && quota
                        .as_ref()
                        .is_none_or(|best| outcome.remaining < best.remaining)
                {
                    quota = Some(q());
                }
            }
            match seat {
                None => Admission::Pass((quota, None)),
                Some(seat) => self.take_seat(seat, quota, labels),
            }
        })
    }

    fn hash_str(&self, s: &str) -> u64 {
        self.seed.hash_one(s) | 1
    }

    /// The bucket of `rule` for this request; `None` when the identity it
    /// is keyed by was not verified (no `Tenant`, no `Principal`): such a
    /// request is not limited by the rule, and creates no state.
    fn bucket_key(
        &self,
        id: u64,
        kind: KeyKind,
        view: &RequestView<'_>,
        place: Place,
    ) -> Option<u64> {
        let mut h = self.seed.build_hasher();
        id.hash(&mut h);
        match kind {
            KeyKind::Tenant => view.tenant?.as_str().hash(&mut h),
            // Security: a subject is only unique within its issuer, and its
            // bucket is scoped to the tenant (if any), as in Redis.
            KeyKind::Subject => {
                let principal = view.principal?;
                view.tenant.map(|t| t.as_str()).hash(&mut h);
                principal.issuer.hash(&mut h);
                principal.subject.hash(&mut h);
            }
            KeyKind::TenantAndSubject => {
                let principal = view.principal?;
                view.tenant?.as_str().hash(&mut h);
                principal.issuer.hash(&mut h);
                principal.subject.hash(&mut h);
            }
            KeyKind::Route => place.hash(&mut h),
        }
        Some(h.finish())
    }

    fn seat_request(
        &self,
        policy: &RateLimitPolicy,
        view: &RequestView<'_>,
    ) -> Option<SeatRequest> {
        let rule = policy
            .concurrency
            .iter()
            .find_map(|r| r.matcher.matches(view).map(|place| (r, place)));
        let (rule, place) = rule?;
        let level = &policy.levels[rule.level];
        let key = self.bucket_key(level.id, rule.key, view, place)?;
        Some(SeatRequest {
            key,
            rule: Arc::clone(&rule.name),
            rule_id: super::policy::stable_id("concurrency", &rule.name),
            max_in_flight: level.max_in_flight,
            queue_length: level.queue_length,
            timeout: level.queue_timeout,
        })
    }

    fn take_seat(
        self: &Arc<Self>,
        seat: SeatRequest,
        quota: Option<Quota>,
        labels: Labels,
    ) -> Admission {
        match self.concurrency.admit(
            seat.key,
            labels.tenant.map_or(0, |(hash, _)| hash),
            seat.max_in_flight,
            seat.queue_length,
            seat.timeout,
        ) {
            Admit::Now(permit) => Admission::Pass((quota, Some(permit))),
            Admit::Full => Admission::Refuse(self.crowded(&seat, &labels)),
            Admit::Wait(waiter) => {
                let shared = Arc::clone(self);
                Admission::Pending(Box::pin(async move {
                    match waiter.wait().await {
                        Some(permit) => {
                            shared.count(seat.rule_id, &seat.rule, &labels, Outcome::Queued);
                            Ok((quota, Some(permit)))
                        }
                        None => Err(shared.crowded(&seat, &labels)),
                    }
                }))
            }
        }
    }

    fn crowded(&self, seat: &SeatRequest, labels: &Labels) -> Refusal {
        self.count(
            seat.rule_id,
            &seat.rule,
            labels,
            Outcome::ConcurrencyExceeded,
        );
        let detail = format!(
            "too many requests in flight for this caller (rule {:?}): the queue is full or the wait timed out",
            seat.rule
        );
        self.refuse(
            RateLimitCode::ConcurrencyExceeded.reject(detail),
            None,
            seat.timeout.max(Duration::from_secs(1)),
        )
    }

    fn limited(&self, rule: &Arc<str>, key: KeyKind, quota: Quota, retry: Duration) -> Refusal {
        let detail = format!(
            "rate limit {rule:?} ({} requests per {:?}, per {}) is exceeded; retry in {} s",
            quota.requests,
            quota.period,
            key.as_str(),
            ceil_secs(u64::try_from(retry.as_nanos()).unwrap_or(u64::MAX)),
        );
        self.refuse(RateLimitCode::Exceeded.reject(detail), Some(quota), retry)
    }

    fn refuse(&self, rejection: Rejection, quota: Option<Quota>, retry_after: Duration) -> Refusal {
        // The span event of every refusal (the telemetry layer's span is
        // the current one).
        tracing::info!(
            target: "finmesh::ratelimit",
            code = rejection.code(),
            rule = quota.as_ref().map(|q| &*q.rule),
            retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            "rate limit refused the request"
        );
        Refusal {
            rejection,
            quota,
            retry_after,
        }
    }

    fn count(&self, id: u64, name: &Arc<str>, labels: &Labels, outcome: Outcome) {
        self.stats
            .inner
            .count(id, name, labels.tenant, labels.other, outcome);
    }

    /// Shared limits: one Redis pipeline for the request's decisions.
    #[cfg(feature = "redis")]
    fn admit_shared(
        self: &Arc<Self>,
        redis: &super::RedisRateLimiter,
        policy: &Arc<RateLimitPolicy>,
        matched: &[Option<(usize, Place)>; 4],
        view: &RequestView<'_>,
        labels: Labels,
        seat: Option<SeatRequest>,
    ) -> Admission {
        use sha2::{Digest, Sha256};

        use super::gcra::Gcra;
        use super::manifest::FailMode;

        let mut checks: Vec<(String, Gcra)> = Vec::with_capacity(4);
        let mut rules = Vec::with_capacity(4);
        for &(i, place) in matched.iter().flatten() {
            let rule = &policy.rules[i];
            let Some(local) = self.bucket_key(rule.id, rule.key, view, place) else {
                continue;
            };
            if let Some(until) = redis.known_over(local) {
                self.count(rule.id, &rule.name, &labels, Outcome::Limited);
                let retry = until.saturating_duration_since(std::time::Instant::now());
                let quota = Quota {
                    rule: Arc::clone(&rule.name),
                    requests: rule.requests,
                    period: rule.period,
                    remaining: 0,
                    reset: retry,
                };
                return Admission::Refuse(self.limited(&rule.name, rule.key, quota, retry));
            }
            let mut digest = Sha256::new();
            if matches!(rule.key, KeyKind::Subject | KeyKind::TenantAndSubject) {
                // Security: the issuer too (length-prefixed, so no two
                // pairs run together): `sub` is unique per issuer only.
                let (issuer, subject) = view
                    .principal
                    .map_or(("", ""), |p| (&*p.issuer, &*p.subject));
                digest.update((issuer.len() as u64).to_be_bytes());
                digest.update(issuer.as_bytes());
                digest.update(subject.as_bytes());
            }
            if rule.key == KeyKind::Route {
                digest.update(rule.matcher.place_name(place).unwrap_or("*").as_bytes());
            }
            // Security: every key but a route's (one bucket for everybody)
            // names its tenant, so subject buckets are tenant-scoped.
            let tenant = match rule.key {
                KeyKind::Route => None,
                _ => view.tenant.map(|t| t.as_str()),
            };
            let key = redis.key(
                &rule.name,
                rule.key.as_str(),
                tenant,
                &digest.finalize()[..16],
            );
            checks.push((key, rule.gcra));
            rules.push((
                rule.id,
                Arc::clone(&rule.name),
                rule.key,
                rule.requests,
                rule.period,
                rule.fail_mode,
                local,
            ));
        }
        if checks.is_empty() {
            return match seat {
                None => Admission::Pass((None, None)),
                Some(seat) => self.take_seat(seat, None, labels),
            };
        }
        let shared = Arc::clone(self);
        let redis = redis.clone();
        Admission::Pending(Box::pin(async move {
            let mut quota: Option<Quota> = None;
            match redis.decide(&checks).await {
                Ok(outcomes) => {
                    for (o, (id, name, key, requests, period, _, local)) in
                        outcomes.into_iter().zip(&rules)
                    {
                        let q = Quota {
                            rule: Arc::clone(name),
                            requests: *requests,
                            period: *period,
                            remaining: o.remaining,
                            reset: if o.allowed { o.reset } else { o.retry_after },
                        };
                        if !o.allowed {
                            shared.count(*id, name, &labels, Outcome::Limited);
                            redis.remember_over(*local, std::time::Instant::now() + o.retry_after);
                            return Err(shared.limited(name, *key, q, o.retry_after));
                        }
                        shared.count(*id, name, &labels, Outcome::Allowed);
                        if quota
                            .as_ref()
                            .is_none_or(|best| q.remaining < best.remaining)
                        {
                            quota = Some(q);
                        }
                    }
                }
                Err(reason) => {
                    shared
                        .stats
                        .inner
                        .store_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(target: "finmesh::ratelimit", %reason, "shared rate limits unavailable; rules follow their failMode");
                    for (id, name, _, _, _, fail, _) in &rules {
                        if *fail == FailMode::FailClosed {
                            shared.count(*id, name, &labels, Outcome::FailedClosed);
                            let detail = format!(
                                "rate limit {name:?} cannot be checked: its shared store is unavailable"
                            );
                            return Err(shared.refuse(
                                RateLimitCode::StoreUnavailable.reject(detail),
                                None,
                                Duration::from_secs(1),
                            ));
                        }
                        shared.count(*id, name, &labels, Outcome::FailedOpen);
                    }
                }
            }
            match seat {
                None => Ok((quota, None)),
                Some(seat) => match shared.take_seat(seat, quota, labels) {
                    Admission::Pass(admitted) => Ok(admitted),
                    Admission::Refuse(refusal) => Err(refusal),
                    Admission::Pending(wait) => wait.await,
                },
            }
        }))
    }
}
