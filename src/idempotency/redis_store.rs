//! [`RedisStore`]: records in Redis, shared by every replica.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};

use super::store::{
    Claim, ClaimToken, Completed, Fingerprint, IdempotencyStore, StoreError, StoreFuture, StoreKey,
};

/// Shared by the scripts: `now` in milliseconds by the Redis clock, and
/// `track(index, member, ttl)`, which records a record's expiry in its
/// tenant's index and keeps the index alive at least as long.
/// `replicate_commands` lets a script that read `TIME` write on Redis 3.2
/// to 4 (it is the default, and a no-op, from Redis 5).
const PRELUDE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function track(index, member, ttl)
  redis.call('ZADD', index, now + ttl, member)
  if redis.call('PTTL', index) < ttl then
    redis.call('PEXPIRE', index, ttl)
  end
end
";

/// Claim: if the record exists, return what it holds; else, if the
/// tenant's index (its live records, expired ones dropped first) is at its
/// quota, return 0; else `SET record claim PX ttl` and track it. One
/// atomic step, so that concurrent claims can neither overshoot the quota
/// nor misread a record that expires between two commands.
///
/// `KEYS`: record, tenant index. `ARGV`: claim value, ttl (ms), quota
/// (0: none), index member.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  return cur
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local quota = tonumber(ARGV[3])
if quota > 0 and redis.call('ZCARD', KEYS[2]) >= quota then
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
track(KEYS[2], ARGV[4], ttl)
return false
";

/// Completion: replace the record only if it is still our claim (`I` and
/// our token, the first 17 bytes of the claim value), so a
/// replica whose claim expired and was taken over cannot overwrite.
///
/// `KEYS`: record, tenant index. `ARGV`: claim prefix, record, retention
/// (ms), index member.
const COMPLETE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 17) == ARGV[1] then
  local ttl = tonumber(ARGV[3])
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
  track(KEYS[2], ARGV[4], ttl)
  return 1
end
return 0
";

/// Release: delete the record only if it is still our claim, and untrack
/// it.
///
/// `KEYS`: record, tenant index. `ARGV`: claim prefix, index member.
const RELEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 17) == ARGV[1] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The default [`RedisStore::tenant_quota`]: live records per tenant.
pub const DEFAULT_REDIS_TENANT_QUOTA: u64 = 1_000_000;

/// An idempotency store in Redis: several replicas sharing one Redis behave
/// as one.
///
/// - **Keys are namespaced** by the prefix (default
///   `finmesh:idempotency:`) and the tenant: a record is one Redis string
///   named `<prefix>{t:<tenant>}:r:<hex SHA-256 of the scope>` (see
///   [`StoreKey::digest`]; `{-}` for requests without a tenant), so no
///   caller-chosen text reaches a key name (a tenant is a verified
///   DNS-1123 label). The braces are a Redis Cluster hash tag: a
///   tenant's records and its index live in one slot.
/// - **Per-tenant quota.** Each tenant has an index,
///   `<prefix>{t:<tenant>}:idx`, a sorted set of its live records scored
///   by their expiry. The claim script drops expired entries, counts, and
///   refuses a new key once the tenant holds
///   [`tenant_quota`](Self::tenant_quota) records (default
///   [`DEFAULT_REDIS_TENANT_QUOTA`]) — in the same atomic step as the claim, so
///   concurrent claims cannot overshoot. The layer answers 429
///   `idempotency.quota_exceeded`; other tenants carry on.
/// - **Every key has a TTL**: a claim the claim TTL, a completed record
///   the retention, an index at least as long as its longest record.
/// - A claim is `SET NX PX` (inside a Lua script that also returns the
///   record already there); its value is `I`, a random 16-byte
///   [`ClaimToken`] and the fingerprint. Redis expires it after the claim
///   TTL, which is how a crashed replica's claim frees the key.
/// - Completion and release are Lua scripts that compare the whole claim
///   value first: only the replica that owns the claim can finish it.
/// - Every operation is bounded by a timeout (default 1 s); a connection
///   that fails is dropped and the next operation reconnects. Any error is
///   reported as a [`StoreError`], and the layer fails closed (503).
///
/// # Under `maxmemory`
///
/// Run the idempotency Redis with `maxmemory-policy noeviction`. Then a
/// full Redis refuses writes, the claim fails, and the layer answers 503
/// `idempotency.store_unavailable` without running the handler: fail
/// closed. Every key here has a TTL, so the `volatile-*` policies as well
/// as the `allkeys-*` ones may evict them, and an evicted record is
/// forgotten before its time: an evicted claim lets a duplicate run
/// while the first is still running, an evicted completed record lets a
/// retry run the handler a second time (pay twice), and an evicted index
/// resets its tenant's count (the quota then under-counts until records
/// expire). An evicted record whose index entry remains over-counts
/// instead, until that entry's expiry: the tenant is refused early, never
/// late. Size Redis for the quotas: about 400 bytes plus the stored body
/// per record, plus about 100 bytes per index entry.
///
/// Works with Redis 3.2 and later (the scripts read `TIME`); Redis
/// Cluster is untested (each script touches one tenant's keys, which share
/// a hash slot, so it should route as is).
///
/// ```
/// use std::time::Duration;
/// use finmesh::idempotency::{IdempotencyLayer, RedisStore};
///
/// // Connects lazily: nothing is sent until the first governed request.
/// let store = RedisStore::open("redis://127.0.0.1:6379/0")
///     .unwrap()
///     .key_prefix("payments:idem:")
///     .timeout(Duration::from_millis(250));
/// let layer = IdempotencyLayer::new(store);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    timeout: Duration,
    tenant_quota: u64,
    claim: Script,
    complete: Script,
    release: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("tenant_quota", &self.inner.tenant_quota)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://127.0.0.1:6379/0`), with key
    /// prefix `finmesh:idempotency:` and a 1 s operation timeout. Connects
    /// lazily, on first use.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let client = Client::open(url)
            .map_err(|e| StoreError::with_source("invalid Redis connection info", e))?;
        Ok(Self::from_client(client))
    }

    /// A store using an already configured client.
    pub fn from_client(client: Client) -> Self {
        Self::build(
            client,
            "finmesh:idempotency:".into(),
            Duration::from_secs(1),
            DEFAULT_REDIS_TENANT_QUOTA,
        )
    }

    fn build(client: Client, prefix: String, timeout: Duration, tenant_quota: u64) -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            inner: Arc::new(Inner {
                client,
                connection: Mutex::new(None),
                prefix,
                timeout,
                tenant_quota,
                claim: script(CLAIM),
                complete: script(COMPLETE),
                release: script(RELEASE),
            }),
        }
    }

    fn rebuild(self, prefix: String, timeout: Duration, tenant_quota: u64) -> Self {
        Self::build(self.inner.client.clone(), prefix, timeout, tenant_quota)
    }

    /// Sets the prefix of every key this store writes (to share one Redis
    /// between applications). Call before the store is shared.
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        let (timeout, quota) = (self.inner.timeout, self.inner.tenant_quota);
        self.rebuild(prefix.into(), timeout, quota)
    }

    /// Bounds every operation, connecting included. Call before the store
    /// is shared.
    pub fn timeout(self, timeout: Duration) -> Self {
        let (prefix, quota) = (self.inner.prefix.clone(), self.inner.tenant_quota);
        self.rebuild(prefix, timeout, quota)
    }

    /// The most live records (claims and completed responses) one tenant
    /// may hold (default [`DEFAULT_REDIS_TENANT_QUOTA`]); requests without a
    /// tenant share one such quota. `0` means no quota. Call before the
    /// store is shared.
    pub fn tenant_quota(self, records: u64) -> Self {
        let (prefix, timeout) = (self.inner.prefix.clone(), self.inner.timeout);
        self.rebuild(prefix, timeout, records)
    }

    /// The record's name, its tenant index's name, and its member in the
    /// index (the hex digest).
    fn redis_keys(&self, key: &StoreKey) -> Names {
        let mut member = String::with_capacity(64);
        for b in key.digest() {
            member.push_str(&format!("{b:02x}"));
        }
        // Security: only the verified tenant (a DNS-1123 label: no braces,
        // colons or spaces) and a digest reach key names.
        let tag = key
            .tenant
            .as_ref()
            .map_or_else(|| "-".to_owned(), |t| format!("t:{}", t.as_str()));
        let namespace = format!("{}{{{tag}}}:", self.inner.prefix);
        Names {
            record: format!("{namespace}r:{member}"),
            index: format!("{namespace}idx"),
            member,
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        // The lock is held only to clone the handle, never across an await.
        let cached = self
            .inner
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(connection) = cached {
            return Ok(connection);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout));
        let connection = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self
            .inner
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `op` on a connection, under the timeout; drops the cached
    /// connection when it failed so the next call reconnects.
    async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let attempt = async {
            let connection = self.connection().await?;
            op(connection).await
        };
        let result = match tokio::time::timeout(self.inner.timeout, attempt).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => StoreError::with_source(format!("Redis {what} failed"), e),
            Err(_) => StoreError::new(format!("Redis {what} timed out")),
        };
        self.inner
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        Err(result)
    }
}

/// The keys and index member of one record.
struct Names {
    record: String,
    index: String,
    member: String,
}

fn claim_value(token: ClaimToken, fingerprint: Fingerprint) -> Vec<u8> {
    let mut value = Vec::with_capacity(1 + 16 + 32);
    value.push(b'I');
    value.extend_from_slice(&token.0);
    value.extend_from_slice(&fingerprint.0);
    value
}

/// `I` and the token: what completion and release compare.
fn claim_prefix(token: ClaimToken) -> [u8; 17] {
    let mut prefix = [b'I'; 17];
    prefix[1..].copy_from_slice(&token.0);
    prefix
}

fn millis(d: Duration) -> u64 {
    // PX 0 is an error in Redis; the shortest TTL is 1 ms.
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn parse_existing(value: &[u8]) -> Result<Claim, StoreError> {
    match value.first() {
        Some(b'I') if value.len() == 1 + 16 + 32 => {
            let mut fingerprint = [0; 32];
            fingerprint.copy_from_slice(&value[17..]);
            Ok(Claim::InFlight {
                fingerprint: Fingerprint(fingerprint),
            })
        }
        Some(b'C') => Ok(Claim::Completed(Arc::new(Completed::decode(value)?))),
        _ => Err(StoreError::new("unrecognised idempotency record in Redis")),
    }
}

impl IdempotencyStore for RedisStore {
    fn claim<'a>(
        &'a self,
        key: &'a StoreKey,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim> {
        Box::pin(async move {
            let token = ClaimToken::generate();
            let names = self.redis_keys(key);
            let value = claim_value(token, fingerprint);
            let names = &names;
            let answer: redis::Value = self
                .run("claim", |mut c| async move {
                    self.inner
                        .claim
                        .key(&names.record)
                        .key(&names.index)
                        .arg(&value)
                        .arg(millis(ttl))
                        .arg(self.inner.tenant_quota)
                        .arg(&names.member)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            match answer {
                redis::Value::Nil => Ok(Claim::Acquired(token)),
                redis::Value::Int(0) => Ok(Claim::QuotaExceeded),
                redis::Value::BulkString(value) => parse_existing(&value),
                _ => Err(StoreError::new("unexpected answer to an idempotency claim")),
            }
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a StoreKey,
        token: ClaimToken,
        record: Completed,
        retention: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let names = self.redis_keys(key);
            let claim = claim_prefix(token);
            let encoded = record.encode();
            let names = &names;
            let done: i64 = self
                .run("complete", |mut c| async move {
                    self.inner
                        .complete
                        .key(&names.record)
                        .key(&names.index)
                        .arg(&claim[..])
                        .arg(&encoded)
                        .arg(millis(retention))
                        .arg(&names.member)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            Ok(done == 1)
        })
    }

    fn release<'a>(&'a self, key: &'a StoreKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let names = self.redis_keys(key);
            let claim = claim_prefix(token);
            let names = &names;
            let _: i64 = self
                .run("release", |mut c| async move {
                    self.inner
                        .release
                        .key(&names.record)
                        .key(&names.index)
                        .arg(&claim[..])
                        .arg(&names.member)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::store::Caller;

    #[test]
    fn claim_values_and_their_prefix() {
        let token = ClaimToken([9; 16]);
        let value = claim_value(token, Fingerprint([4; 32]));
        assert_eq!(value.len(), 49);
        assert_eq!(&value[..17], &claim_prefix(token)[..]);
        match parse_existing(&value).unwrap() {
            Claim::InFlight { fingerprint } => assert_eq!(fingerprint, Fingerprint([4; 32])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_records_are_errors() {
        for bad in [&b""[..], b"I", b"Ishort", b"X0000", b"C"] {
            assert!(parse_existing(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ttls_are_at_least_one_millisecond() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn key_names_are_prefixed_namespaced_hex_digests() {
        let store = RedisStore::open("redis://127.0.0.1:1/")
            .unwrap()
            .key_prefix("p:");
        let key = StoreKey {
            tenant: None,
            caller: Caller::Anonymous,
            key: "k".parse().unwrap(),
        };
        let names = store.redis_keys(&key);
        assert_eq!(names.record.len(), "p:{-}:r:".len() + 64);
        assert!(names.record.starts_with("p:{-}:r:"));
        assert!(names.record[8..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(names.member, names.record[8..]);
        assert_eq!(names.index, "p:{-}:idx");
        let acme = StoreKey {
            tenant: Some("acme".parse().unwrap()),
            ..key
        };
        let names = store.redis_keys(&acme);
        assert!(names.record.starts_with("p:{t:acme}:r:"));
        assert_eq!(names.index, "p:{t:acme}:idx");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_not_a_hang() {
        // A loopback port with nothing listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = RedisStore::open(&format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .timeout(Duration::from_secs(2));
        let key = StoreKey {
            tenant: None,
            caller: Caller::Anonymous,
            key: "k".parse().unwrap(),
        };
        assert!(
            store
                .claim(&key, Fingerprint([0; 32]), Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
