//! [`InMemoryStore`]: records in a `DashMap`, for one process and for tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::time::Instant;

use super::store::{
    Claim, ClaimToken, Completed, Fingerprint, IdempotencyStore, StoreError, StoreFuture, StoreKey,
};

/// An idempotency store in process memory.
///
/// Records live in a sharded [`DashMap`]; each operation locks one shard for
/// a few nanoseconds and never across an `.await`. Expired records are
/// invisible at once (every read checks the deadline) and are removed by a
/// background sweep: a tokio task, started on first use inside a runtime,
/// that holds only a weak reference and so ends when the store is dropped.
///
/// The store holds at most [`max_entries`](Self::max_entries) records
/// (default 1,000,000); a claim beyond that fails, and the layer answers
/// 503 `idempotency.store_unavailable` rather than growing without bound.
///
/// It serves one process: replicas that must behave as one share a
/// `RedisStore` (feature `redis`) instead.
#[derive(Clone, Debug)]
pub struct InMemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    records: DashMap<StoreKey, Record>,
    max_entries: usize,
    sweep_every: Duration,
    sweeper_started: AtomicBool,
}

#[derive(Debug)]
enum Record {
    InFlight {
        token: ClaimToken,
        fingerprint: Fingerprint,
        expires_at: Instant,
    },
    Completed {
        record: Arc<Completed>,
        expires_at: Instant,
    },
}

impl Record {
    fn expires_at(&self) -> Instant {
        match self {
            Self::InFlight { expires_at, .. } | Self::Completed { expires_at, .. } => *expires_at,
        }
    }
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryStore {
    /// An empty store, swept every 30 seconds, of at most 1,000,000 records.
    pub fn new() -> Self {
        Self::build(1_000_000, Duration::from_secs(30))
    }

    fn build(max_entries: usize, sweep_every: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                records: DashMap::new(),
                max_entries,
                sweep_every,
                sweeper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Caps the number of records (in flight and completed together).
    ///
    /// Call before the store is shared: it builds a new, empty store.
    pub fn max_entries(self, max_entries: usize) -> Self {
        Self::build(max_entries, self.inner.sweep_every)
    }

    /// How often the background sweep removes expired records.
    ///
    /// Call before the store is shared: it builds a new, empty store.
    pub fn sweep_every(self, every: Duration) -> Self {
        Self::build(self.inner.max_entries, every.max(Duration::from_millis(1)))
    }

    /// How many records are held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.inner.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.inner.records.is_empty()
    }

    /// Removes expired records now (the background sweep does this too).
    pub fn sweep(&self) {
        self.inner.sweep(Instant::now());
    }

    fn ensure_sweeper(&self) {
        if self.inner.sweeper_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.sweeper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.sweep_every;
        handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                // The store is gone: so is the reason to sweep.
                let Some(inner) = weak.upgrade() else { break };
                inner.sweep(Instant::now());
            }
        });
    }

    fn claim_now(&self, key: &StoreKey, fingerprint: Fingerprint, ttl: Duration) -> Claim {
        let now = Instant::now();
        let fresh = || {
            let token = ClaimToken::generate();
            let record = Record::InFlight {
                token,
                fingerprint,
                expires_at: now + ttl,
            };
            (token, record)
        };
        match self.inner.records.entry(key.clone()) {
            Entry::Vacant(slot) => {
                let (token, record) = fresh();
                slot.insert(record);
                Claim::Acquired(token)
            }
            Entry::Occupied(mut slot) => {
                let existing = slot.get();
                if existing.expires_at() <= now {
                    // An expired claim (a crashed request) or an expired
                    // record frees the key.
                    let (token, record) = fresh();
                    slot.insert(record);
                    return Claim::Acquired(token);
                }
                match existing {
                    Record::InFlight { fingerprint, .. } => Claim::InFlight {
                        fingerprint: *fingerprint,
                    },
                    Record::Completed { record, .. } => Claim::Completed(record.clone()),
                }
            }
        }
    }
}

impl Inner {
    fn sweep(&self, now: Instant) {
        self.records.retain(|_, record| record.expires_at() > now);
    }
}

impl IdempotencyStore for InMemoryStore {
    fn claim<'a>(
        &'a self,
        key: &'a StoreKey,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim> {
        self.ensure_sweeper();
        let result = if self.inner.records.len() >= self.inner.max_entries
            && !self.inner.records.contains_key(key)
        {
            // Full: try once to make room before refusing.
            self.inner.sweep(Instant::now());
            if self.inner.records.len() >= self.inner.max_entries {
                Err(StoreError::new("in-memory idempotency store is full"))
            } else {
                Ok(self.claim_now(key, fingerprint, ttl))
            }
        } else {
            Ok(self.claim_now(key, fingerprint, ttl))
        };
        Box::pin(std::future::ready(result))
    }

    fn complete<'a>(
        &'a self,
        key: &'a StoreKey,
        token: ClaimToken,
        record: Completed,
        retention: Duration,
    ) -> StoreFuture<'a, bool> {
        let done = match self.inner.records.get_mut(key) {
            Some(mut slot) => match &*slot {
                Record::InFlight { token: owner, .. } if *owner == token => {
                    *slot = Record::Completed {
                        record: Arc::new(record),
                        expires_at: Instant::now() + retention,
                    };
                    true
                }
                _ => false,
            },
            None => false,
        };
        Box::pin(std::future::ready(Ok(done)))
    }

    fn release<'a>(&'a self, key: &'a StoreKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        self.inner.records.remove_if(
            key,
            |_, record| matches!(record, Record::InFlight { token: owner, .. } if *owner == token),
        );
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::store::Caller;

    fn key(k: &str) -> StoreKey {
        StoreKey {
            tenant: None,
            caller: Caller::verified("iss", "alice"),
            key: k.parse().unwrap(),
        }
    }

    const FP: Fingerprint = Fingerprint([1; 32]);
    const MIN: Duration = Duration::from_secs(60);

    fn done() -> Completed {
        Completed {
            fingerprint: FP,
            response: None,
        }
    }

    #[tokio::test]
    async fn claim_complete_replay() {
        let store = InMemoryStore::new();
        let k = key("a");
        let Claim::Acquired(token) = store.claim(&k, FP, MIN).await.unwrap() else {
            panic!("first claim must acquire")
        };
        assert!(matches!(
            store.claim(&k, FP, MIN).await.unwrap(),
            Claim::InFlight { fingerprint } if fingerprint == FP
        ));
        assert!(store.complete(&k, token, done(), MIN).await.unwrap());
        assert!(matches!(
            store.claim(&k, FP, MIN).await.unwrap(),
            Claim::Completed(r) if r.fingerprint == FP
        ));
        // Completing twice, or releasing a completed record, changes nothing.
        assert!(!store.complete(&k, token, done(), MIN).await.unwrap());
        store.release(&k, token).await.unwrap();
        assert!(matches!(
            store.claim(&k, FP, MIN).await.unwrap(),
            Claim::Completed(_)
        ));
    }

    #[tokio::test]
    async fn a_stale_token_cannot_complete_or_release() {
        let store = InMemoryStore::new();
        let k = key("a");
        let Claim::Acquired(_) = store.claim(&k, FP, Duration::ZERO).await.unwrap() else {
            panic!()
        };
        // The zero-TTL claim has expired: the next claim takes over.
        let Claim::Acquired(stale) = store.claim(&k, FP, Duration::ZERO).await.unwrap() else {
            panic!("an expired claim frees the key")
        };
        let Claim::Acquired(current) = store.claim(&k, FP, MIN).await.unwrap() else {
            panic!()
        };
        assert_ne!(stale, current);
        assert!(!store.complete(&k, stale, done(), MIN).await.unwrap());
        store.release(&k, stale).await.unwrap();
        assert!(matches!(
            store.claim(&k, FP, MIN).await.unwrap(),
            Claim::InFlight { .. }
        ));
        store.release(&k, current).await.unwrap();
        assert!(matches!(
            store.claim(&k, FP, MIN).await.unwrap(),
            Claim::Acquired(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_records_are_swept_in_the_background() {
        let store = InMemoryStore::new().sweep_every(Duration::from_secs(1));
        let Claim::Acquired(t) = store.claim(&key("a"), FP, MIN).await.unwrap() else {
            panic!()
        };
        store
            .complete(&key("a"), t, done(), Duration::from_secs(5))
            .await
            .unwrap();
        store
            .claim(&key("b"), FP, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(store.len(), 2);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(store.len(), 1, "the expired claim is swept");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(store.is_empty(), "the expired record is swept");
    }

    #[tokio::test]
    async fn a_full_store_refuses_new_keys() {
        let store = InMemoryStore::new().max_entries(2);
        store.claim(&key("a"), FP, MIN).await.unwrap();
        store.claim(&key("b"), FP, MIN).await.unwrap();
        assert!(store.claim(&key("c"), FP, MIN).await.is_err());
        // Known keys still answer.
        assert!(matches!(
            store.claim(&key("a"), FP, MIN).await.unwrap(),
            Claim::InFlight { .. }
        ));
    }

    /// Resident memory of this process, from `/proc/self/statm`.
    fn rss_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// The memory a completed record costs beyond its body: 200,000
    /// records with a 128-byte body and a `content-type` header, RSS
    /// before and after. Run alone:
    /// `cargo test --all-features --lib per_record_memory -- --ignored --nocapture --test-threads=1`
    #[tokio::test]
    #[ignore = "a measurement; run alone"]
    async fn per_record_memory() {
        const N: usize = 200_000;
        const BODY: usize = 128;
        let store = InMemoryStore::new();
        let body = bytes::Bytes::from(vec![b'x'; BODY]);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let before = rss_bytes();
        for i in 0..N {
            let k = StoreKey {
                tenant: Some("acme".parse().unwrap()),
                caller: Caller::verified("https://issuer.test", "alice"),
                key: format!("transfer-{i:08}").parse().unwrap(),
            };
            let Claim::Acquired(t) = store.claim(&k, FP, MIN).await.unwrap() else {
                panic!()
            };
            let record = Completed {
                fingerprint: FP,
                response: Some(crate::idempotency::StoredResponse {
                    status: http::StatusCode::CREATED,
                    headers: headers.clone(),
                    // A copy, as a response body read off a handler is.
                    body: bytes::Bytes::copy_from_slice(&body),
                    trailers: None,
                }),
            };
            assert!(store.complete(&k, t, record, MIN).await.unwrap());
        }
        let after = rss_bytes();
        let per_record = (after - before) / N;
        println!(
            "per_record_memory: {N} records, body {BODY} B: RSS +{} KiB, {per_record} B per record, {} B beyond the body",
            (after - before) / 1024,
            per_record.saturating_sub(BODY)
        );
        assert_eq!(store.len(), N);
    }

    #[tokio::test]
    async fn the_sweeper_ends_with_the_store() {
        let store = InMemoryStore::new().sweep_every(Duration::from_millis(5));
        store.claim(&key("a"), FP, MIN).await.unwrap();
        let weak = Arc::downgrade(&store.inner);
        drop(store);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(weak.upgrade().is_none());
    }
}
