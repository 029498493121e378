//! The in-process limiter: one GCRA TAT per key in a sharded map with a
//! hard size bound, a per-tenant share, and lossless idle eviction.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::gcra::{Gcra, Outcome};

const SHARDS: usize = 64;

/// The least time between two full scans of one shard, in nanoseconds.
const SWEEP_EVERY: u64 = 1_000_000;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Why a new key could not get a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// The tenant holds its whole share of keys, all of them busy.
    TenantShare,
    /// The shard is full of busy keys and was scanned less than
    /// `SWEEP_EVERY` ago.
    Busy,
}

#[derive(Clone, Copy)]
struct Entry {
    tat: u64,
    /// The hash of the tenant the key was created for (0: none), for the
    /// per-tenant share.
    tenant: u64,
}

#[derive(Default)]
struct Shard {
    buckets: FastMap<u64, Entry>,
    per_tenant: FastMap<u64, u32>,
    /// When the shard was last scanned (0: never).
    last_sweep: u64,
}

impl Shard {
    /// Whether a full scan may run at `now`; if so, it counts as run.
    ///
    /// Security: a tenant at its share, or a flood into a full shard,
    /// would otherwise scan the whole shard under its lock on every
    /// request; past one scan per `SWEEP_EVERY`, new keys are refused.
    fn may_sweep(&mut self, now: u64) -> bool {
        if self.last_sweep != 0 && now.saturating_sub(self.last_sweep) < SWEEP_EVERY {
            return false;
        }
        self.last_sweep = now;
        true
    }

    fn forget(&mut self, tenant: u64) {
        if let Some(n) = self.per_tenant.get_mut(&tenant) {
            *n -= 1;
            if *n == 0 {
                self.per_tenant.remove(&tenant);
            }
        }
    }

    /// Drops every key whose TAT is not after `now`: such a key decides
    /// exactly as a key never seen, so nothing is lost.
    fn sweep(&mut self, now: u64) -> usize {
        let before = self.buckets.len();
        let per_tenant = &mut self.per_tenant;
        self.buckets.retain(|_, e| {
            let keep = e.tat > now;
            if !keep && let Some(n) = per_tenant.get_mut(&e.tenant) {
                *n -= 1;
            }
            keep
        });
        self.per_tenant.retain(|_, n| *n > 0);
        before - self.buckets.len()
    }
}

/// The key map behind local limits.
///
/// Keys are 64-bit hashes of (rule, tenant, subject, route) with a
/// per-process random seed (see `service.rs`), so an entry is 16 bytes plus
/// the map's overhead, whatever the subject's length.
pub(crate) struct LocalLimiter {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    tenant_share: u32,
    epoch: Instant,
    pub(crate) evicted_idle: AtomicU64,
    pub(crate) evicted_busy: AtomicU64,
}

impl LocalLimiter {
    /// A map of at most `max_keys` keys (rounded up to a multiple of the
    /// shard count), of which one tenant holds at most `max_keys_per_tenant`.
    pub(crate) fn new(max_keys: usize, max_keys_per_tenant: usize) -> Self {
        let shard_capacity = max_keys.div_ceil(SHARDS).max(1);
        let tenant_share = max_keys_per_tenant.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_capacity,
            tenant_share: u32::try_from(tenant_share).unwrap_or(u32::MAX),
            epoch: Instant::now(),
            evicted_idle: AtomicU64::new(0),
            evicted_busy: AtomicU64::new(0),
        }
    }

    /// Nanoseconds on this limiter's monotonic clock (never 0).
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        // The top bits pick the shard; the map hashes the whole key again.
        self.shards[(key >> 58) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Decides one request for `key` (a hash with its rule in it) under
    /// `gcra`, at `now`.
    pub(crate) fn decide(
        &self,
        key: u64,
        tenant: u64,
        gcra: &Gcra,
        now: u64,
    ) -> Result<Outcome, Full> {
        let mut shard = self.shard(key);
        if let Some(entry) = shard.buckets.get_mut(&key) {
            let outcome = gcra.decide(entry.tat, now);
            entry.tat = outcome.tat;
            return Ok(outcome);
        }
        let outcome = gcra.decide(0, now);
        let mut swept = false;
        if shard.per_tenant.get(&tenant).copied().unwrap_or(0) >= self.tenant_share
            && shard.may_sweep(now)
        {
            swept = true;
            let n = shard.sweep(now);
            self.evicted_idle.fetch_add(n as u64, Ordering::Relaxed);
        }
        // Security: one tenant's flood of distinct subjects fills its own
        // share, never the map: past it, its new keys are refused
        // (ratelimit.exceeded) while its busy keys stay limited.
        if shard.per_tenant.get(&tenant).copied().unwrap_or(0) >= self.tenant_share {
            return Err(Full::TenantShare);
        }
        if shard.buckets.len() >= self.shard_capacity {
            if !swept {
                if !shard.may_sweep(now) {
                    return Err(Full::Busy);
                }
                let n = shard.sweep(now);
                self.evicted_idle.fetch_add(n as u64, Ordering::Relaxed);
            }
            if shard.buckets.len() >= self.shard_capacity {
                // Every key is busy: drop the one nearest to full (its
                // caller gets at most one burst too many, once).
                if let Some((&victim, &entry)) = shard.buckets.iter().min_by_key(|(_, e)| e.tat) {
                    shard.buckets.remove(&victim);
                    shard.forget(entry.tenant);
                    self.evicted_busy.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        shard.buckets.insert(
            key,
            Entry {
                tat: outcome.tat,
                tenant,
            },
        );
        *shard.per_tenant.entry(tenant).or_insert(0) += 1;
        Ok(outcome)
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).buckets.len())
            .sum()
    }

    /// The hard bound on [`len`](Self::len).
    pub(crate) fn capacity(&self) -> usize {
        self.shard_capacity * SHARDS
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_flood_of_keys_stays_within_the_bound_and_busy_keys_keep_their_state() {
        let limiter = LocalLimiter::new(6_400, 1_000_000);
        let gcra = Gcra::new(1, Duration::from_secs(3600), 1);
        let now = limiter.now();
        // One key spends its single request: it is busy for an hour.
        assert!(limiter.decide(7, 0, &gcra, now).unwrap().allowed);
        for key in 0..100_000u64 {
            let _ = limiter.decide(key.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, 1, &gcra, now);
            assert!(limiter.len() <= limiter.capacity());
        }
        assert!(limiter.len() <= 6_400);
        assert!(limiter.evicted_busy.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn idle_keys_are_swept_without_changing_decisions() {
        let limiter = LocalLimiter::new(64, 64);
        let gcra = Gcra::new(10, Duration::from_secs(1), 1);
        let now = limiter.now();
        for key in 0..64u64 {
            assert!(limiter.decide(key << 58, 0, &gcra, now).unwrap().allowed);
        }
        // 100 ms later every key is idle; new keys push them out losslessly.
        let later = now + 100_000_000;
        for key in 64..128u64 {
            assert!(limiter.decide(key << 58, 0, &gcra, later).unwrap().allowed);
        }
        assert_eq!(limiter.evicted_busy.load(Ordering::Relaxed), 0);
        assert!(limiter.len() <= 64);
    }

    #[test]
    fn one_tenant_cannot_take_another_tenants_keys() {
        let limiter = LocalLimiter::new(64 * 100, 64 * 10);
        let gcra = Gcra::new(1, Duration::from_secs(3600), 1);
        let now = limiter.now();
        let mut refused = 0;
        for key in 0..10_000u64 {
            if limiter
                .decide(key.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1, &gcra, now)
                .is_err()
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 10_000 - 64 * 10);
        assert!(limiter.len() <= 64 * 10);
        // Tenant 2 still gets keys.
        for key in 0..100u64 {
            assert!(
                limiter
                    .decide(key.wrapping_mul(0xD6E8_FEB8_6659_FD93), 2, &gcra, now)
                    .is_ok()
            );
        }
    }

    #[test]
    fn hostile_a_tenant_at_its_share_or_a_full_shard_is_scanned_at_most_once_a_millisecond() {
        // One shard's worth: 64 keys, 1 per shard; tenant share 1 per shard.
        let limiter = LocalLimiter::new(64, 64);
        let gcra = Gcra::new(1, Duration::from_secs(3600), 1);
        let now = limiter.now();
        let shard0 = |i: u64| (i << 1) | 1; // top bits 0: shard 0
        assert!(limiter.decide(shard0(1), 1, &gcra, now).is_ok());
        // At its share: the first new key scans (nothing idle) and is refused;
        // the next ones within a millisecond are refused without a scan.
        assert_eq!(
            limiter.decide(shard0(2), 1, &gcra, now),
            Err(Full::TenantShare)
        );
        let scanned = limiter.shards[0].lock().unwrap().last_sweep;
        assert_eq!(scanned, now);
        assert_eq!(
            limiter.decide(shard0(3), 1, &gcra, now + 10),
            Err(Full::TenantShare)
        );
        assert_eq!(limiter.shards[0].lock().unwrap().last_sweep, scanned);
        // A full shard: another tenant's new key is refused until a
        // millisecond has passed, then it scans and evicts.
        assert_eq!(
            limiter.decide(shard0(4), 2, &gcra, now + 20),
            Err(Full::Busy)
        );
        let later = now + SWEEP_EVERY;
        assert!(limiter.decide(shard0(5), 2, &gcra, later).is_ok());
        assert_eq!(limiter.evicted_busy.load(Ordering::Relaxed), 1);
        assert_eq!(limiter.shards[0].lock().unwrap().last_sweep, later);
    }
}
