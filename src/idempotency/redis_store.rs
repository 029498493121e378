//! [`RedisStore`]: records in Redis, shared by every replica.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};

use super::store::{
    Claim, ClaimToken, Completed, Fingerprint, IdempotencyStore, StoreError, StoreFuture, StoreKey,
};

/// Claim: `SET key claim NX PX ttl`; if the key exists, return what it
/// holds, in the same atomic step (so a record that expires between two
/// commands cannot be misread).
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
";

/// Completion: replace the record only if it is still our claim (`I` and
/// our token, the first 17 bytes of the claim value), so a
/// replica whose claim expired and was taken over cannot overwrite.
const COMPLETE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 17) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Release: delete the record only if it is still our claim.
const RELEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 17) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// An idempotency store in Redis: several replicas sharing one Redis behave
/// as one.
///
/// - A record is one Redis string named `<prefix><hex SHA-256 of the
///   scope>` (see [`StoreKey::digest`]), so no caller-chosen text reaches a
///   key name.
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
/// Works with Redis 2.6.12 and later; Redis Cluster is untested (each
/// script touches one key, so it should route as is).
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
    claim: Script,
    complete: Script,
    release: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
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
        )
    }

    fn build(client: Client, prefix: String, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                connection: Mutex::new(None),
                prefix,
                timeout,
                claim: Script::new(CLAIM),
                complete: Script::new(COMPLETE),
                release: Script::new(RELEASE),
            }),
        }
    }

    /// Sets the prefix of every key this store writes (to share one Redis
    /// between applications). Call before the store is shared.
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        Self::build(self.inner.client.clone(), prefix.into(), self.inner.timeout)
    }

    /// Bounds every operation, connecting included. Call before the store
    /// is shared.
    pub fn timeout(self, timeout: Duration) -> Self {
        Self::build(
            self.inner.client.clone(),
            self.inner.prefix.clone(),
            timeout,
        )
    }

    fn redis_key(&self, key: &StoreKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.inner.prefix.len() + 64);
        out.extend_from_slice(self.inner.prefix.as_bytes());
        for b in key.digest() {
            out.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        out
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
            let name = self.redis_key(key);
            let value = claim_value(token, fingerprint);
            let existing: Option<Vec<u8>> = self
                .run("claim", |mut c| async move {
                    self.inner
                        .claim
                        .key(&name)
                        .arg(&value)
                        .arg(millis(ttl))
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            match existing {
                None => Ok(Claim::Acquired(token)),
                Some(value) => parse_existing(&value),
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
            let name = self.redis_key(key);
            let claim = claim_prefix(token);
            let encoded = record.encode();
            let done: i64 = self
                .run("complete", |mut c| async move {
                    self.inner
                        .complete
                        .key(&name)
                        .arg(&claim[..])
                        .arg(&encoded)
                        .arg(millis(retention))
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            Ok(done == 1)
        })
    }

    fn release<'a>(&'a self, key: &'a StoreKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let name = self.redis_key(key);
            let claim = claim_prefix(token);
            let _: i64 = self
                .run("release", |mut c| async move {
                    self.inner
                        .release
                        .key(&name)
                        .arg(&claim[..])
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
    fn key_names_are_prefixed_hex_digests() {
        let store = RedisStore::open("redis://127.0.0.1:1/")
            .unwrap()
            .key_prefix("p:");
        let key = StoreKey {
            tenant: None,
            caller: Caller::Anonymous,
            key: "k".parse().unwrap(),
        };
        let name = store.redis_key(&key);
        assert_eq!(name.len(), 2 + 64);
        assert!(name.starts_with(b"p:"));
        assert!(name[2..].iter().all(|b| b.is_ascii_hexdigit()));
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
