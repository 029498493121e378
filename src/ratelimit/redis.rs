//! [`RedisRateLimiter`]: GCRA state in Redis, shared by every replica.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerErrorKind};

use super::gcra::Gcra;

/// One GCRA decision, atomic in Redis, on Redis' clock (microseconds), so
/// that replicas with skewed clocks still share one limit. The key expires
/// at its TAT: an expired key and a full bucket are the same thing.
///
/// `KEYS[1]`: the bucket. `ARGV`: interval (µs), tolerance (µs).
/// Returns `{allowed, remaining or retry-after µs, reset µs}`.
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then
  return {0, ahead - tolerance, ahead}
end
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.floor((nxt - now) / 1000) + 1)
return {1, math.floor((tolerance - ahead) / interval), nxt - now}
";

/// Most keys remembered as over their limit.
const MAX_CACHED: usize = 10_000;

/// Rate-limit counters in Redis: N replicas sharing one Redis grant each
/// limit once, not N times.
///
/// - **One atomic script per decision**, `EVALSHA` of a Lua GCRA (the same
///   arithmetic as the local limiter, on Redis' clock), and all of one
///   request's decisions in **one pipeline**: one round trip.
/// - **Keys** are `<prefix><rule>:<limit>:<kind>:{<tenant>}:<digest>`: the
///   rule name (a DNS-1123 label) and a fingerprint of its limit, the verified tenant (a DNS-1123 label, in
///   braces: a Redis Cluster hash tag), and a SHA-256 digest of the
///   subject and route, so no caller-chosen text reaches a key name. Each
///   key expires at its TAT.
/// - **Keys known to be over** their limit are remembered locally until
///   their retry time (at most 10,000 of them), and refused without a round
///   trip: a client hammering a spent limit costs Redis nothing.
/// - **When Redis fails** (an error, or no answer within the timeout,
///   default 100 ms), each rule's `failMode` decides: `failOpen` (the
///   default) lets the request through unlimited by that rule, `failClosed`
///   refuses it with 503 `ratelimit.store_unavailable`. Never a silent
///   fallback to per-replica limits: failures are counted
///   ([`store_errors`](Self::store_errors),
///   [`RateLimitStats`](super::RateLimitStats)), logged, and reported by
///   [`health_warning`](Self::health_warning) for the readiness probe's
///   `?verbose`.
///
/// ```
/// use finmesh::ratelimit::{RateLimitLayer, RateLimitPolicy, RateLimits, RedisRateLimiter};
///
/// // Connects lazily: nothing is sent until the first limited request.
/// let redis = RedisRateLimiter::open("redis://127.0.0.1:6379/0").unwrap();
/// let layer = RateLimitLayer::new(RateLimits::new(RateLimitPolicy::empty())).redis(redis);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    /// One connect at a time: a burst arriving before the first connection
    /// is up waits for it instead of opening one connection per request.
    connecting: tokio::sync::Mutex<()>,
    prefix: String,
    timeout: Duration,
    hash: String,
    over: Mutex<HashMap<u64, Instant, foldhash::fast::RandomState>>,
    errors: AtomicU64,
    last_error: Mutex<Option<Instant>>,
}

/// One decision as Redis answered it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RedisOutcome {
    pub(crate) allowed: bool,
    pub(crate) remaining: u32,
    pub(crate) retry_after: Duration,
    pub(crate) reset: Duration,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("store_errors", &self.store_errors())
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// A limiter on the Redis at `url`, key prefix `finmesh:ratelimit:`,
    /// 100 ms timeout. Connects lazily.
    pub fn open(url: &str) -> Result<Self, RedisError> {
        Ok(Self::from_client(Client::open(url)?))
    }

    /// A limiter using an already configured client.
    pub fn from_client(client: Client) -> Self {
        Self::build(
            client,
            "finmesh:ratelimit:".into(),
            Duration::from_millis(100),
        )
    }

    fn build(client: Client, prefix: String, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                connection: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                prefix,
                timeout,
                hash: redis::Script::new(GCRA).get_hash().to_owned(),
                over: Mutex::default(),
                errors: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// The prefix of every key (to share one Redis between applications).
    /// Call before the limiter is shared.
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        let timeout = self.inner.timeout;
        Self::build(self.inner.client.clone(), prefix.into(), timeout)
    }

    /// Bounds each request's round trip, connecting included (default
    /// 100 ms); past it, the rules' fail modes apply. Call before the
    /// limiter is shared.
    pub fn timeout(self, timeout: Duration) -> Self {
        let prefix = self.inner.prefix.clone();
        Self::build(self.inner.client.clone(), prefix, timeout)
    }

    /// Redis round trips that failed or timed out, since start.
    pub fn store_errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// `Some(reason)` while Redis failed within the last 30 seconds: shared
    /// limits are following their fail modes. For a readiness warning, not
    /// a failure — taking every replica out of the load balancer because
    /// the limiter's Redis is down would turn a degraded limit into an
    /// outage.
    pub fn health_warning(&self) -> Option<String> {
        let last = *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        last.filter(|at| at.elapsed() < Duration::from_secs(30))
            .map(|_| {
                format!(
                    "shared rate limits: Redis failing ({} errors since start); rules follow their failMode",
                    self.store_errors()
                )
            })
    }

    /// The Redis key of a bucket.
    pub(crate) fn key(
        &self,
        rule: &str,
        kind: &str,
        tenant: Option<&str>,
        digest: &[u8],
    ) -> String {
        let mut key = String::with_capacity(self.inner.prefix.len() + rule.len() + 100);
        key.push_str(&self.inner.prefix);
        key.push_str(rule);
        key.push(':');
        key.push_str(kind);
        key.push_str(":{");
        // Security: only a verified DNS-1123 tenant and a digest reach key names.
        key.push_str(tenant.unwrap_or("-"));
        key.push_str("}:");
        for b in digest {
            key.push_str(&format!("{b:02x}"));
        }
        key
    }

    /// When `key` (its local hash) is known to be over its limit: the
    /// instant it may pass again.
    pub(crate) fn known_over(&self, key: u64) -> Option<Instant> {
        let over = self.inner.over.lock().unwrap_or_else(|p| p.into_inner());
        over.get(&key)
            .copied()
            .filter(|until| *until > Instant::now())
    }

    pub(crate) fn remember_over(&self, key: u64, until: Instant) {
        let mut over = self.inner.over.lock().unwrap_or_else(|p| p.into_inner());
        if over.len() >= MAX_CACHED {
            let now = Instant::now();
            over.retain(|_, u| *u > now);
            if over.len() >= MAX_CACHED {
                return;
            }
        }
        over.insert(key, until);
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.inner
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout));
        let c = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self
            .inner
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    async fn pipeline(
        &self,
        checks: &[(String, Gcra)],
    ) -> Result<Vec<(i64, i64, i64)>, RedisError> {
        let mut c = self.connection().await?;
        let mut pipe = redis::pipe();
        for (key, gcra) in checks {
            pipe.cmd("EVALSHA")
                .arg(&self.inner.hash)
                .arg(1)
                .arg(key)
                .arg((gcra.interval / 1_000).max(1))
                .arg(gcra.tolerance / 1_000);
        }
        match pipe.query_async(&mut c).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let _: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(GCRA)
                    .query_async(&mut c)
                    .await?;
                pipe.query_async(&mut c).await
            }
            other => other,
        }
    }

    /// Decides every `(key, limit)` in one pipeline, under the timeout.
    pub(crate) async fn decide(
        &self,
        checks: &[(String, Gcra)],
    ) -> Result<Vec<RedisOutcome>, String> {
        let answer = tokio::time::timeout(self.inner.timeout, self.pipeline(checks)).await;
        let failure = match answer {
            Ok(Ok(rows)) if rows.len() == checks.len() => {
                return Ok(rows
                    .into_iter()
                    .map(|(allowed, n, reset)| {
                        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
                        RedisOutcome {
                            allowed: allowed == 1,
                            remaining: if allowed == 1 {
                                u32::try_from(n).unwrap_or(0)
                            } else {
                                0
                            },
                            retry_after: if allowed == 1 { Duration::ZERO } else { us(n) },
                            reset: us(reset),
                        }
                    })
                    .collect());
            }
            Ok(Ok(_)) => "unexpected answer to the rate-limit script".to_owned(),
            Ok(Err(e)) => format!("Redis rate-limit call failed: {e}"),
            Err(_) => format!(
                "Redis rate-limit call timed out after {:?}",
                self.inner.timeout
            ),
        };
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        // Reconnect next time.
        self.inner
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        Err(failure)
    }
}
