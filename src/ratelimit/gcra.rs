//! The Generic Cell Rate Algorithm: one number per key, the *theoretical
//! arrival time* (TAT) of the next request that conforms.
//!
//! With an emission interval `T = period / requests` and a tolerance
//! `τ = T × (burst − 1)`, a request at `now` conforms when
//! `max(TAT, now) − now ≤ τ`; it then moves TAT to `max(TAT, now) + T`.
//! So `burst` requests pass at once, then one every `T`. A key whose TAT
//! is in the past is indistinguishable from a key never seen, which is why
//! the local store may drop such keys at any time without changing a single
//! decision, and why the Redis keys can expire at TAT.
//!
//! The same arithmetic runs in the Redis script (`redis.rs`), in
//! microseconds there; here in nanoseconds of a monotonic clock.

use std::time::Duration;

/// A limit in GCRA form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// `T`, in nanoseconds (at least 1).
    pub(crate) interval: u64,
    /// `τ = T × (burst − 1)`, in nanoseconds.
    pub(crate) tolerance: u64,
    /// The requests that pass at once.
    pub(crate) burst: u32,
}

/// One decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) allowed: bool,
    /// The key's TAT after the decision (unchanged when refused).
    pub(crate) tat: u64,
    /// Requests that would pass right after this one.
    pub(crate) remaining: u32,
    /// Until the key is back to a full burst (`TAT − now`), ns.
    pub(crate) reset: u64,
    /// Until the next request can pass (0 when allowed), ns.
    pub(crate) retry_after: u64,
}

impl Gcra {
    /// `requests` per `period` with `burst` at once; all at least 1 (the
    /// policy validates that).
    pub(crate) fn new(requests: u32, period: Duration, burst: u32) -> Self {
        let requests = u128::from(requests.max(1));
        let interval = (period.as_nanos() / requests).clamp(1, u128::from(u64::MAX / 4)) as u64;
        let burst = burst.max(1);
        Self {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst - 1)),
            burst,
        }
    }

    /// Decides a request at `now` for a key whose TAT is `tat` (`0` for a
    /// key never seen).
    pub(crate) fn decide(&self, tat: u64, now: u64) -> Outcome {
        let tat = tat.max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            return Outcome {
                allowed: false,
                tat,
                remaining: 0,
                reset: ahead,
                retry_after: ahead - self.tolerance,
            };
        }
        let next = tat.saturating_add(self.interval);
        Outcome {
            allowed: true,
            tat: next,
            remaining: u32::try_from((self.tolerance - ahead) / self.interval).unwrap_or(u32::MAX),
            reset: next - now,
            retry_after: 0,
        }
    }
}

/// Nanoseconds rounded up to whole seconds, at least 1: `Retry-After` and
/// the `t` of the `RateLimit` field.
pub(crate) fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000).max(1)
}

/// Nanoseconds rounded up to whole milliseconds, at least 1:
/// `grpc-retry-pushback-ms`.
pub(crate) fn ceil_millis(ns: u64) -> u64 {
    ns.div_ceil(1_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// The reference model: the continuous-state leaky bucket of ITU-T
    /// I.371 — a bucket that drains one unit per nanosecond, takes `T` per
    /// conforming request, and refuses when it holds more than `τ`. It is
    /// proven equivalent to virtual scheduling (what `decide` does); this
    /// checks the implementation, arrival by arrival.
    struct LeakyBucket {
        level: u64,
        last: u64,
    }

    impl LeakyBucket {
        fn decide(&mut self, gcra: &Gcra, now: u64) -> bool {
            let drained = self.level.saturating_sub(now - self.last);
            self.last = now;
            if drained > gcra.tolerance {
                self.level = drained;
                return false;
            }
            self.level = drained + gcra.interval;
            true
        }
    }

    /// A small deterministic generator: no test dependency, same sequence
    /// on every run.
    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *seed >> 33
    }

    #[test]
    fn agrees_with_the_leaky_bucket_model_on_random_arrivals() {
        let mut seed = 42;
        for case in 0..200 {
            let requests = 1 + (lcg(&mut seed) % 50) as u32;
            let burst = 1 + (lcg(&mut seed) % 30) as u32;
            let period = Duration::from_millis(1 + lcg(&mut seed) % 2_000);
            let gcra = Gcra::new(requests, period, burst);
            let mut model = LeakyBucket { level: 0, last: 0 };
            let (mut tat, mut now) = (0, 0);
            let mut allowed = 0;
            for _ in 0..500 {
                // Bursts (gap 0) and gaps up to ~2 intervals.
                now += match lcg(&mut seed) % 4 {
                    0 => 0,
                    _ => lcg(&mut seed) % (2 * gcra.interval + 1),
                };
                let outcome = gcra.decide(tat, now);
                assert_eq!(
                    outcome.allowed,
                    model.decide(&gcra, now),
                    "case {case}: {requests}/{period:?} burst {burst} at {now}"
                );
                if outcome.allowed {
                    allowed += 1;
                    tat = outcome.tat;
                } else {
                    assert_eq!(outcome.tat, tat.max(now), "a refusal costs nothing");
                    // Waiting exactly retry_after makes the next one pass.
                    assert!(gcra.decide(tat, now + outcome.retry_after).allowed);
                    assert!(!gcra.decide(tat, now + outcome.retry_after - 1).allowed);
                }
            }
            assert!(allowed > 0);
        }
    }

    #[test]
    fn a_burst_passes_at_once_then_one_per_interval() {
        let gcra = Gcra::new(20, Duration::from_secs(1), 20);
        assert_eq!(gcra.interval, 50 * MS);
        let mut tat = 0;
        let now = 10_000 * MS;
        for i in 0..20 {
            let o = gcra.decide(tat, now);
            assert!(o.allowed, "request {i}");
            assert_eq!(o.remaining, 19 - i);
            tat = o.tat;
        }
        let refused = gcra.decide(tat, now);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, 50 * MS);
        assert_eq!(refused.reset, 1_000 * MS);
        assert!(gcra.decide(tat, now + 50 * MS).allowed);
        // A key idle for a whole period is full again: as if never seen.
        assert_eq!(
            gcra.decide(tat, now + 1_000 * MS),
            gcra.decide(0, now + 1_000 * MS)
        );
    }

    #[test]
    fn burst_of_one_is_a_strict_interval() {
        let gcra = Gcra::new(2, Duration::from_secs(1), 1);
        assert_eq!(gcra.tolerance, 0);
        let first = gcra.decide(0, 0);
        assert!(first.allowed);
        assert!(!gcra.decide(first.tat, 499 * MS).allowed);
        assert!(gcra.decide(first.tat, 500 * MS).allowed);
    }

    #[test]
    fn rounding_for_headers() {
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(1_000_000_000), 1);
        assert_eq!(ceil_secs(1_000_000_001), 2);
        assert_eq!(ceil_millis(50 * MS), 50);
        assert_eq!(ceil_millis(50 * MS + 1), 51);
        assert_eq!(ceil_millis(0), 1);
    }
}
