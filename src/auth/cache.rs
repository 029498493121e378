//! The verification cache: verified tokens, keyed by the whole token.
//!
//! - **Keyed by the whole token**: the map compares full token strings; a
//!   hash only picks the bucket, so a collision can never return another
//!   token's principal.
//! - **Only verified tokens enter**, so an attacker cannot fill it with
//!   garbage; lookups of unknown tokens cost a hash and a probe.
//! - **Bounded**: sharded, with a per-shard capacity; a full shard first
//!   drops expired and stale entries, then an arbitrary one. A miss only
//!   costs a signature check.
//! - **Never past `exp`**: every hit re-checks the token's `exp` (without
//!   leeway) against the clock.
//! - **Emptied when keys change**: entries carry the key generation they
//!   were verified under (it grows whenever any issuer's key set is
//!   replaced); a hit under another generation is a miss, and the first
//!   request to see a new one clears every shard.
//! - **Issuer-bound**: the token's own `iss` chose the keys, and the entry
//!   is the principal with its issuer and prefixed names.
//!
//! The hasher is foldhash, randomly seeded per process: fast on long keys
//! (a token is hundreds of bytes) and not predictable by a caller.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use foldhash::fast::RandomState;

use crate::principal::Principal;

const SHARDS: usize = 16;

struct Entry {
    key_set: u64,
    exp: u64,
    principal: Principal,
}

type Shard = HashMap<Box<str>, Entry, RandomState>;

pub(crate) struct VerifyCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    /// The newest key set id seen; entries of older sets are dead.
    key_set: AtomicU64,
}

impl std::fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyCache")
            .field("capacity", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl VerifyCache {
    /// A cache for about `capacity` tokens; `None` for 0 (no cache).
    pub(crate) fn new(capacity: usize) -> Option<Self> {
        if capacity == 0 {
            return None;
        }
        let per_shard = capacity.div_ceil(SHARDS);
        let hasher = RandomState::default();
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(HashMap::with_hasher(hasher)))
            .collect();
        Some(Self {
            shards,
            per_shard,
            hasher,
            key_set: AtomicU64::new(0),
        })
    }

    fn shard(&self, token: &str) -> MutexGuard<'_, Shard> {
        // High bits pick the shard; the map uses the full hash for buckets.
        let h = self.hasher.hash_one(token);
        let i = (h >> 60) as usize % SHARDS;
        // A panic cannot leave a map entry half-written; keep serving.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the key set in use; clears everything on the first sight of a
    /// newer one.
    fn observe(&self, key_set: u64) {
        if self.key_set.load(Ordering::Acquire) >= key_set {
            return;
        }
        if self.key_set.fetch_max(key_set, Ordering::AcqRel) < key_set {
            for shard in &self.shards {
                shard.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
        }
    }

    /// The principal of `token` if it was verified under `key_set` and its
    /// `exp` is still ahead of `now`.
    pub(crate) fn get(&self, token: &str, key_set: u64, now: u64) -> Option<Principal> {
        self.observe(key_set);
        let mut shard = self.shard(token);
        let entry = shard.get(token)?;
        if entry.key_set == key_set && now < entry.exp {
            return Some(entry.principal.clone());
        }
        shard.remove(token);
        None
    }

    /// Remembers a verified token until `exp`.
    pub(crate) fn insert(
        &self,
        token: &str,
        key_set: u64,
        exp: u64,
        principal: &Principal,
        now: u64,
    ) {
        // Valid only inside the leeway: verify it again next time.
        if now >= exp {
            return;
        }
        self.observe(key_set);
        if self.key_set.load(Ordering::Acquire) != key_set {
            // Verified under keys that have since been replaced.
            return;
        }
        let mut shard = self.shard(token);
        if shard.len() >= self.per_shard && !shard.contains_key(token) {
            shard.retain(|_, e| e.key_set == key_set && now < e.exp);
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().cloned()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(
            token.into(),
            Entry {
                key_set,
                exp,
                principal: principal.clone(),
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(sub: &str) -> Principal {
        Principal::new(sub, "iss")
    }

    #[test]
    fn hit_miss_expiry_and_key_change() {
        let c = VerifyCache::new(64).unwrap();
        c.insert("tok-a", 5, 100, &p("a"), 10);
        assert_eq!(&*c.get("tok-a", 5, 50).unwrap().subject, "a");
        assert!(c.get("tok-b", 5, 50).is_none());
        // A token that is a prefix or extension of a cached one is another key.
        assert!(c.get("tok-", 5, 50).is_none());
        assert!(c.get("tok-aa", 5, 50).is_none());
        // Never past exp, even though the entry is still there.
        assert!(c.get("tok-a", 5, 100).is_none());
        c.insert("tok-a", 5, 100, &p("a"), 10);
        // A newer key set empties the cache.
        assert!(c.get("tok-a", 6, 50).is_none());
        assert_eq!(c.len(), 0);
        // And an older key set cannot insert anymore.
        c.insert("tok-c", 5, 100, &p("c"), 10);
        assert!(c.get("tok-c", 5, 50).is_none());
    }

    #[test]
    fn expired_on_arrival_is_not_cached() {
        let c = VerifyCache::new(8).unwrap();
        c.insert("t", 1, 100, &p("a"), 100);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn capacity_is_bounded() {
        let c = VerifyCache::new(32).unwrap();
        for i in 0..10_000 {
            c.insert(&format!("token-{i}"), 1, 1_000, &p("x"), 1);
        }
        assert!(c.len() <= 32, "{}", c.len());
        assert!(VerifyCache::new(0).is_none());
    }
}
