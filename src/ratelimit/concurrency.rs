//! In-flight limits per key and priority level, with a bounded FIFO queue
//! and a queue timeout (after the Kubernetes apiserver's API Priority and
//! Fairness: each level has its own seats and queue, so reports waiting
//! never take a seat of payments).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

const SHARDS: usize = 16;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

struct Gate {
    /// The hash of the tenant the gate was created for (0: none).
    tenant: u64,
    in_flight: u32,
    /// Each waiter gets the seat itself (a [`Permit`]) on its channel.
    waiters: VecDeque<oneshot::Sender<Permit>>,
}

/// The in-flight counts, one gate per (level, key) that has a request in
/// flight or waiting; an idle gate is removed, so the map holds at most
/// the requests in flight and queued, and never more than its bound.
pub(crate) struct ConcurrencyLimiter {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    tenant_share: u32,
}

#[derive(Default)]
struct Shard {
    gates: FastMap<u64, Gate>,
    /// Gates per tenant hash, for the per-tenant share.
    per_tenant: FastMap<u64, u32>,
}

impl Shard {
    fn remove(&mut self, key: u64) {
        if let Some(gate) = self.gates.remove(&key)
            && let Some(n) = self.per_tenant.get_mut(&gate.tenant)
        {
            *n -= 1;
            if *n == 0 {
                self.per_tenant.remove(&gate.tenant);
            }
        }
    }
}

/// The outcome of asking for a seat.
pub(crate) enum Admit {
    /// A seat, now.
    Now(Permit),
    /// A place in the queue.
    Wait(Waiter),
    /// No seat and no room in the queue (or no room for another key).
    Full,
}

/// A seat; dropping it frees the seat (handing it to the first waiter).
pub(crate) struct Permit {
    /// `None` once the seat was given back (or handed on) by `release`.
    limiter: Option<Arc<ConcurrencyLimiter>>,
    key: u64,
}

/// A place in the queue.
pub(crate) struct Waiter {
    rx: oneshot::Receiver<Permit>,
    timeout: Duration,
}

impl ConcurrencyLimiter {
    /// At most `max_keys` gates (rounded up to a multiple of the shard
    /// count), of which one tenant holds at most `max_keys_per_tenant`.
    pub(crate) fn new(max_keys: usize, max_keys_per_tenant: usize) -> Self {
        let tenant_share = max_keys_per_tenant.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_capacity: max_keys.div_ceil(SHARDS).max(1),
            tenant_share: u32::try_from(tenant_share).unwrap_or(u32::MAX),
        }
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        self.shards[(key >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A seat for `key` (of the tenant hashed `tenant`, 0: none) if fewer
    /// than `max_in_flight` are taken, else a place in its queue if fewer
    /// than `queue_length` wait.
    pub(crate) fn admit(
        self: &Arc<Self>,
        key: u64,
        tenant: u64,
        max_in_flight: u32,
        queue_length: u32,
        timeout: Duration,
    ) -> Admit {
        let mut shard = self.shard(key);
        let shard = &mut *shard;
        if !shard.gates.contains_key(&key) {
            // Security: one tenant's flood of distinct subjects fills its
            // own share of gates, never the whole map.
            let held = shard.per_tenant.get(&tenant).copied().unwrap_or(0);
            if shard.gates.len() >= self.shard_capacity || held >= self.tenant_share {
                return Admit::Full;
            }
            *shard.per_tenant.entry(tenant).or_insert(0) += 1;
        }
        let gate = shard.gates.entry(key).or_insert_with(|| Gate {
            tenant,
            in_flight: 0,
            waiters: VecDeque::new(),
        });
        if gate.in_flight < max_in_flight {
            gate.in_flight += 1;
            return Admit::Now(Permit {
                limiter: Some(Arc::clone(self)),
                key,
            });
        }
        // Waiters that gave up stay until here or the next release.
        gate.waiters.retain(|w| !w.is_closed());
        if gate.waiters.len() >= queue_length as usize || timeout.is_zero() {
            return Admit::Full;
        }
        let (tx, rx) = oneshot::channel();
        gate.waiters.push_back(tx);
        Admit::Wait(Waiter { rx, timeout })
    }

    /// Frees the seat of `permit` (whose `limiter` was taken): hands it
    /// to the first waiter still waiting, else lowers the count.
    ///
    /// Security: the seat travels as a `Permit` through the channel, so a
    /// waiter dropped after the hand-over (a reset or cancelled request)
    /// drops the `Permit` and frees the seat again; with a bare signal the
    /// seat was lost for good and the gate never left the map. Sending
    /// happens outside the shard lock: a `Permit` handed back (or dropped
    /// by a closing receiver) may re-enter `release`.
    fn release(self: &Arc<Self>, key: u64) {
        let mut seat = Permit {
            limiter: Some(Arc::clone(self)),
            key,
        };
        loop {
            let waiter = {
                let mut shard = self.shard(key);
                let Some(gate) = shard.gates.get_mut(&key) else {
                    seat.limiter = None;
                    return;
                };
                match gate.waiters.pop_front() {
                    Some(waiter) => waiter,
                    None => {
                        seat.limiter = None;
                        gate.in_flight = gate.in_flight.saturating_sub(1);
                        if gate.in_flight == 0 {
                            shard.remove(key);
                        }
                        return;
                    }
                }
            };
            match waiter.send(seat) {
                Ok(()) => return,
                Err(back) => seat = back,
            }
        }
    }

    /// Requests waiting in a queue now.
    pub(crate) fn waiting(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .gates
                    .values()
                    .map(|g| g.waiters.iter().filter(|w| !w.is_closed()).count())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Gates held now (keys with requests in flight or waiting).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).gates.len())
            .sum()
    }
}

impl Waiter {
    /// Waits for a seat until the queue timeout; `None` when it ran out.
    pub(crate) async fn wait(self) -> Option<Permit> {
        let Waiter { mut rx, timeout } = self;
        match tokio::time::timeout(timeout, &mut rx).await {
            Ok(Ok(permit)) => Some(permit),
            Ok(Err(_)) => None,
            Err(_) => {
                // A seat handed over just as the timeout fired is still
                // ours: take it (and free it by dropping it later).
                rx.close();
                rx.try_recv().ok()
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(limiter) = self.limiter.take() {
            limiter.release(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(admit: Admit) -> Permit {
        match admit {
            Admit::Now(p) => p,
            _ => panic!("expected a seat"),
        }
    }

    #[tokio::test]
    async fn seats_then_queue_then_refuse_and_seats_pass_in_order() {
        let limiter = Arc::new(ConcurrencyLimiter::new(100, 100));
        let t = Duration::from_secs(5);
        let a = seat(limiter.admit(1, 0, 2, 1, t));
        let _b = seat(limiter.admit(1, 0, 2, 1, t));
        let Admit::Wait(waiter) = limiter.admit(1, 0, 2, 1, t) else {
            panic!("expected a queue place")
        };
        assert!(matches!(limiter.admit(1, 0, 2, 1, t), Admit::Full));
        // Another key is not affected.
        let _other = seat(limiter.admit(2, 0, 2, 1, t));
        drop(a);
        let c = waiter.wait().await.expect("the freed seat");
        drop(c);
        drop(_b);
        drop(_other);
        assert_eq!(limiter.len(), 0, "idle gates are removed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_times_out_and_its_place_is_reused() {
        let limiter = Arc::new(ConcurrencyLimiter::new(100, 100));
        let t = Duration::from_millis(100);
        let a = seat(limiter.admit(1, 0, 1, 1, t));
        let Admit::Wait(waiter) = limiter.admit(1, 0, 1, 1, t) else {
            panic!()
        };
        assert!(waiter.wait().await.is_none());
        // The dead waiter does not hold the queue.
        let Admit::Wait(again) = limiter.admit(1, 0, 1, 1, t) else {
            panic!("the queue place is free again")
        };
        drop(a);
        assert!(again.wait().await.is_some());
        assert_eq!(limiter.len(), 0);
    }

    #[tokio::test]
    async fn a_waiter_dropped_after_the_hand_over_frees_the_seat() {
        let limiter = Arc::new(ConcurrencyLimiter::new(100, 100));
        let t = Duration::from_secs(5);
        let a = seat(limiter.admit(1, 0, 1, 1, t));
        let Admit::Wait(waiter) = limiter.admit(1, 0, 1, 1, t) else {
            panic!("expected a queue place")
        };
        // The seat is handed over, then the waiter goes away unpolled (a
        // cancelled request).
        drop(a);
        drop(waiter);
        assert_eq!(limiter.len(), 0, "the gate leaves the map");
        let _b = seat(limiter.admit(1, 0, 1, 1, t));
        assert!(matches!(limiter.admit(1, 0, 1, 0, t), Admit::Full));
    }

    #[tokio::test]
    async fn hostile_cancelled_queued_requests_do_not_shrink_capacity() {
        let limiter = Arc::new(ConcurrencyLimiter::new(100, 100));
        let t = Duration::from_secs(5);
        for _ in 0..100 {
            let held: Vec<_> = (0..2).map(|_| seat(limiter.admit(7, 0, 2, 4, t))).collect();
            let waiters: Vec<_> = (0..4)
                .map(|_| match limiter.admit(7, 0, 2, 4, t) {
                    Admit::Wait(w) => w,
                    _ => panic!("expected a queue place"),
                })
                .collect();
            // Seats handed to waiters that then reset, in either order.
            drop(held);
            drop(waiters);
        }
        assert_eq!(limiter.len(), 0);
        let _a = seat(limiter.admit(7, 0, 2, 0, t));
        let _b = seat(limiter.admit(7, 0, 2, 0, t));
        assert!(matches!(limiter.admit(7, 0, 2, 0, t), Admit::Full));
    }

    #[test]
    fn the_key_map_is_bounded() {
        let limiter = Arc::new(ConcurrencyLimiter::new(16, 16));
        let mut held = Vec::new();
        let mut full = 0;
        for key in 0..1_000u64 {
            match limiter.admit(
                key.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                key % 7,
                1,
                0,
                Duration::ZERO,
            ) {
                Admit::Now(p) => held.push(p),
                Admit::Full => full += 1,
                Admit::Wait(_) => unreachable!(),
            }
        }
        assert!(limiter.len() <= 16);
        assert_eq!(held.len() + full, 1_000);
    }

    #[test]
    fn hostile_one_tenant_with_many_subjects_fills_only_its_share() {
        // 1 600 gates, 160 per tenant (10 per shard).
        let limiter = Arc::new(ConcurrencyLimiter::new(1_600, 160));
        let spread = |key: u64| key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut held = Vec::new();
        for key in 0..10_000u64 {
            if let Admit::Now(p) = limiter.admit(spread(key), 1, 1, 0, Duration::ZERO) {
                held.push(p);
            }
        }
        assert!(held.len() <= 160, "{} gates", held.len());
        assert_eq!(limiter.len(), held.len());
        // Every other tenant still gets seats, for keys in every shard.
        for key in 0..64u64 {
            let admit = limiter.admit(spread(100_000 + key), 2, 1, 0, Duration::ZERO);
            assert!(matches!(admit, Admit::Now(_)), "key {key}");
        }
        drop(held);
        assert_eq!(limiter.len(), 0);
        // The share is given back with the gates.
        let admit = limiter.admit(spread(5), 1, 1, 0, Duration::ZERO);
        assert!(matches!(admit, Admit::Now(_)));
    }
}
