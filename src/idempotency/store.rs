//! The store trait and the records it keeps.

use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use crate::tenant::TenantNamespace;

use super::IdempotencyKey;

/// What a store operation returns: a boxed future, so that
/// [`IdempotencyStore`] is object safe and one layer type serves every store.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where idempotency records live.
///
/// The layer holds an `Arc<dyn IdempotencyStore>`. Every method is one
/// atomic step, so that several replicas sharing one store behave as one:
///
/// - [`claim`](Self::claim) either creates an in-flight record owned by a
///   fresh [`ClaimToken`], reports the record already there, or reports
///   that the caller's tenant is over its quota
///   ([`Claim::QuotaExceeded`]) — the check and the claim one step;
/// - [`complete`](Self::complete) replaces the in-flight record with the
///   finished response, but only if the claim is still the caller's (a
///   replica whose claim expired and was taken over cannot overwrite);
/// - [`release`](Self::release) deletes the in-flight record, again only
///   if it is still the caller's.
///
/// An `Err` means the store could not be asked; the layer then answers
/// 503 `idempotency.store_unavailable` without running the handler.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request with `fingerprint`, for at most `ttl`.
    fn claim<'a>(
        &'a self,
        key: &'a StoreKey,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim>;

    /// Stores the finished `record` under `key` for `retention`, if the
    /// claim `token` still owns it. Returns whether it did.
    fn complete<'a>(
        &'a self,
        key: &'a StoreKey,
        token: ClaimToken,
        record: Completed,
        retention: Duration,
    ) -> StoreFuture<'a, bool>;

    /// Frees `key` if the claim `token` still owns it, so that a retry may
    /// run the handler again.
    fn release<'a>(&'a self, key: &'a StoreKey, token: ClaimToken) -> StoreFuture<'a, ()>;
}

impl<T: IdempotencyStore + ?Sized> IdempotencyStore for Arc<T> {
    fn claim<'a>(
        &'a self,
        key: &'a StoreKey,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim> {
        (**self).claim(key, fingerprint, ttl)
    }

    fn complete<'a>(
        &'a self,
        key: &'a StoreKey,
        token: ClaimToken,
        record: Completed,
        retention: Duration,
    ) -> StoreFuture<'a, bool> {
        (**self).complete(key, token, record, retention)
    }

    fn release<'a>(&'a self, key: &'a StoreKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        (**self).release(key, token)
    }
}

/// The store could not be reached or answered nonsense.
#[derive(Debug)]
pub struct StoreError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Who a key belongs to: the verified caller (a subject as vouched for by
/// its issuer), or nobody.
///
/// Anonymous callers form one scope of their own per tenant, distinct from
/// every subject (even a subject named `""`). The issuer is part of the
/// scope, so `alice` from one identity provider is not `alice` from
/// another.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// No [`Principal`](crate::Principal) was in the request extensions.
    Anonymous,
    /// A verified principal.
    Verified {
        /// `Principal::issuer`.
        issuer: Arc<str>,
        /// `Principal::subject`.
        subject: Arc<str>,
    },
}

impl Caller {
    /// A verified subject.
    pub fn verified(issuer: impl Into<Arc<str>>, subject: impl Into<Arc<str>>) -> Self {
        Self::Verified {
            issuer: issuer.into(),
            subject: subject.into(),
        }
    }
}

/// The scope a record is stored under: (tenant, caller, key). One caller
/// can never read another's record, because the other's record has another
/// store key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreKey {
    /// The tenant admitted by the tenant layer, if any.
    pub tenant: Option<TenantNamespace>,
    /// Who is calling: the verified principal, or anonymous.
    pub caller: Caller,
    /// The client's key.
    pub key: IdempotencyKey,
}

impl StoreKey {
    /// A fixed-size digest of the scope: SHA-256 over the length-prefixed
    /// parts, so no choice of subject or key can collide with another's
    /// (no separator to inject). Shared stores use it as the record name.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"finmesh.idempotency.v1\0");
        match &self.tenant {
            Some(t) => {
                h.update([1]);
                update_len_prefixed(&mut h, t.as_str().as_bytes());
            }
            None => h.update([0]),
        }
        match &self.caller {
            Caller::Verified { issuer, subject } => {
                h.update([1]);
                update_len_prefixed(&mut h, issuer.as_bytes());
                update_len_prefixed(&mut h, subject.as_bytes());
            }
            Caller::Anonymous => h.update([0]),
        }
        update_len_prefixed(&mut h, self.key.as_str().as_bytes());
        h.finalize().into()
    }
}

pub(super) fn update_len_prefixed(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// SHA-256 of what the request asks for (method, path and query, body).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a request: SHA-256 over the length-prefixed
    /// method, path-and-query and body.
    pub fn of(method: &http::Method, path_and_query: &str, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"finmesh.idempotency.fingerprint.v1\0");
        update_len_prefixed(&mut h, method.as_str().as_bytes());
        update_len_prefixed(&mut h, path_and_query.as_bytes());
        update_len_prefixed(&mut h, body);
        Self(h.finalize().into())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Proof that a claim is the caller's: 16 bytes unique across processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClaimToken(pub [u8; 16]);

impl ClaimToken {
    /// A fresh token: the process's random hasher keys (seeded by the OS),
    /// a counter, the clock and the process id, hashed together, so two
    /// replicas never mint the same token.
    pub fn generate() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        let seed = SEED.get_or_init(std::collections::hash_map::RandomState::new);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let a = seed.hash_one((n, nanos, std::process::id()));
        let b = seed.hash_one((nanos, n, 0x5eed_u16));
        let mut h = Sha256::new();
        h.update(a.to_be_bytes());
        h.update(b.to_be_bytes());
        h.update(n.to_be_bytes());
        h.update(nanos.to_be_bytes());
        h.update(std::process::id().to_be_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut token = [0; 16];
        token.copy_from_slice(&digest[..16]);
        Self(token)
    }
}

/// What [`IdempotencyStore::claim`] found.
#[derive(Clone, Debug)]
pub enum Claim {
    /// The key was free (or its record had expired): the caller owns it now.
    Acquired(ClaimToken),
    /// Another request with this key is running.
    InFlight {
        /// The fingerprint of that request.
        fingerprint: Fingerprint,
    },
    /// A request with this key finished.
    Completed(Arc<Completed>),
    /// The key is free, but the caller's tenant has used up its share of
    /// the store (or the store its budget): nothing was claimed. The layer
    /// answers 429 `idempotency.quota_exceeded`.
    QuotaExceeded,
}

/// A finished request as stored: the fingerprint it ran with and what it
/// answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Completed {
    /// The fingerprint of the request that ran.
    pub fingerprint: Fingerprint,
    /// The response, or `None` when it was too large to store (the handler
    /// ran, so the key stays taken, but there is nothing to replay).
    pub response: Option<StoredResponse>,
}

/// A response kept for replay: status, selected headers, body, trailers.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResponse {
    /// The status code.
    pub status: StatusCode,
    /// The selected headers (`content-type`, gRPC status headers, and the
    /// layer's configured list).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The selected trailers (gRPC's `grpc-status`, `grpc-message`, …).
    pub trailers: Option<HeaderMap>,
}

// --- a compact binary encoding, for stores that keep bytes ---------------
//
// completed  := 'C' fingerprint(32) has_response(u8) [response]
// response   := status(u16) headers body(u32 len + bytes) has_trailers(u8) [headers]
// headers    := count(u16) { name(u16 len + bytes) value(u32 len + bytes) }
//
// Decoding checks every length against what is left and never panics.

impl Completed {
    /// Encodes the record for a byte store.
    pub fn encode(&self) -> Vec<u8> {
        // Exactly the length written, so that a store keeping the bytes
        // (`into_boxed_slice`) keeps no spare capacity.
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(b'C');
        out.extend_from_slice(&self.fingerprint.0);
        match &self.response {
            None => out.push(0),
            Some(r) => {
                out.push(1);
                out.extend_from_slice(&r.status.as_u16().to_be_bytes());
                encode_headers(&mut out, &r.headers);
                out.extend_from_slice(&(r.body.len() as u32).to_be_bytes());
                out.extend_from_slice(&r.body);
                match &r.trailers {
                    None => out.push(0),
                    Some(t) => {
                        out.push(1);
                        encode_headers(&mut out, t);
                    }
                }
            }
        }
        out
    }

    /// The length of [`Completed::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        1 + 32
            + 1
            + self.response.as_ref().map_or(0, |r| {
                2 + headers_len(&r.headers)
                    + 4
                    + r.body.len()
                    + 1
                    + r.trailers.as_ref().map_or(0, headers_len)
            })
    }

    /// Decodes a record made by [`Completed::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let mut r = Reader(bytes);
        if r.take(1)? != b"C" {
            return Err(StoreError::new("not a completed idempotency record"));
        }
        let mut fingerprint = [0; 32];
        fingerprint.copy_from_slice(r.take(32)?);
        let response = match r.u8()? {
            0 => None,
            _ => {
                let status = StatusCode::from_u16(r.u16()?)
                    .map_err(|_| StoreError::new("bad status in idempotency record"))?;
                let headers = decode_headers(&mut r)?;
                let len = r.u32()? as usize;
                let body = Bytes::copy_from_slice(r.take(len)?);
                let trailers = match r.u8()? {
                    0 => None,
                    _ => Some(decode_headers(&mut r)?),
                };
                Some(StoredResponse {
                    status,
                    headers,
                    body,
                    trailers,
                })
            }
        };
        if !r.0.is_empty() {
            return Err(StoreError::new("trailing bytes in idempotency record"));
        }
        Ok(Self {
            fingerprint: Fingerprint(fingerprint),
            response,
        })
    }
}

fn encode_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    let count = headers.len().min(u16::MAX as usize);
    out.extend_from_slice(&(count as u16).to_be_bytes());
    for (name, value) in headers.iter().take(count) {
        out.extend_from_slice(&(name.as_str().len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
}

fn headers_len(headers: &HeaderMap) -> usize {
    2 + headers
        .iter()
        .take(u16::MAX as usize)
        .map(|(name, value)| 2 + name.as_str().len() + 4 + value.len())
        .sum::<usize>()
}

fn decode_headers(r: &mut Reader<'_>) -> Result<HeaderMap, StoreError> {
    let count = r.u16()? as usize;
    let mut headers = HeaderMap::with_capacity(count.min(64));
    for _ in 0..count {
        let len = r.u16()? as usize;
        let name = HeaderName::from_bytes(r.take(len)?)
            .map_err(|_| StoreError::new("bad header name in idempotency record"))?;
        let len = r.u32()? as usize;
        let value = HeaderValue::from_bytes(r.take(len)?)
            .map_err(|_| StoreError::new("bad header value in idempotency record"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::new("truncated idempotency record"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: Option<&str>, caller: Caller, key: &str) -> StoreKey {
        StoreKey {
            tenant: tenant.map(|t| t.parse().unwrap()),
            caller,
            key: key.parse().unwrap(),
        }
    }

    #[test]
    fn scopes_never_share_a_digest() {
        let named = |s: &str| Caller::verified("iss", s);
        let keys = [
            key(None, Caller::Anonymous, "k"),
            key(None, named(""), "k"),
            key(None, named("alice"), "k"),
            key(None, named("bob"), "k"),
            key(Some("acme"), named("alice"), "k"),
            key(Some("globex"), named("alice"), "k"),
            key(Some("acme"), Caller::Anonymous, "k"),
            key(None, named("alicek"), "k"),
            key(None, named("alice"), "kk"),
            key(None, Caller::verified("other-iss", "alice"), "k"),
            key(None, Caller::verified("issalice", ""), "k"),
        ];
        let digests: std::collections::HashSet<_> = keys.iter().map(StoreKey::digest).collect();
        assert_eq!(digests.len(), keys.len());
    }

    #[test]
    fn fingerprint_covers_method_path_and_body() {
        let post = http::Method::POST;
        let a = Fingerprint::of(&post, "/t", b"{}");
        assert_eq!(a, Fingerprint::of(&post, "/t", b"{}"));
        assert_ne!(a, Fingerprint::of(&http::Method::PATCH, "/t", b"{}"));
        assert_ne!(a, Fingerprint::of(&post, "/t?x=1", b"{}"));
        assert_ne!(a, Fingerprint::of(&post, "/t", b"{ }"));
        // Length prefixes: moving bytes between parts changes the hash.
        assert_ne!(
            Fingerprint::of(&post, "/ab", b"c"),
            Fingerprint::of(&post, "/a", b"bc")
        );
    }

    #[test]
    fn tokens_are_unique() {
        let tokens: std::collections::HashSet<_> =
            (0..10_000).map(|_| ClaimToken::generate()).collect();
        assert_eq!(tokens.len(), 10_000);
    }

    #[test]
    fn records_round_trip_and_bad_bytes_are_errors() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let record = Completed {
            fingerprint: Fingerprint([7; 32]),
            response: Some(StoredResponse {
                status: StatusCode::CREATED,
                headers,
                body: Bytes::from_static(b"\x00\x01body"),
                trailers: Some(trailers),
            }),
        };
        let bytes = record.encode();
        assert_eq!(bytes.len(), record.encoded_len());
        assert_eq!(bytes.capacity(), bytes.len(), "no spare capacity");
        assert_eq!(Completed::decode(&bytes).unwrap(), record);
        let empty = Completed {
            fingerprint: Fingerprint([1; 32]),
            response: None,
        };
        assert_eq!(empty.encode().len(), empty.encoded_len());
        assert_eq!(Completed::decode(&empty.encode()).unwrap(), empty);
        // Every truncation and some corruption is an error, never a panic.
        for n in 0..bytes.len() {
            assert!(Completed::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Completed::decode(&extra).is_err());
        let mut bad = bytes;
        bad[34] = 0xff; // status high byte
        assert!(Completed::decode(&bad).is_err());
        assert!(Completed::decode(b"I").is_err());
    }
}
