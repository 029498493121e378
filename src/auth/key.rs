//! Verification keys: each bound to its algorithm family and an optional
//! `kid`, loaded from PEM or a JWKS document, and the [`KeySet`] a token's
//! key is chosen from.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The shortest HMAC secret accepted: 256 bits, the output size of
/// HS256 (RFC 7518 §3.2 requires a key at least as long as the hash).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// A set of [`Algorithm`]s, as a bit mask (one bit per variant).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AlgSet(u16);

impl AlgSet {
    pub(crate) const HMAC: Self = Self::of(&[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
    pub(crate) const RSA: Self = Self::of(&[
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ]);
    pub(crate) const P256: Self = Self::of(&[Algorithm::ES256]);
    pub(crate) const P384: Self = Self::of(&[Algorithm::ES384]);
    pub(crate) const ED25519: Self = Self::of(&[Algorithm::EdDSA]);

    const fn bit(alg: Algorithm) -> u16 {
        1 << match alg {
            Algorithm::HS256 => 0,
            Algorithm::HS384 => 1,
            Algorithm::HS512 => 2,
            Algorithm::ES256 => 3,
            Algorithm::ES384 => 4,
            Algorithm::RS256 => 5,
            Algorithm::RS384 => 6,
            Algorithm::RS512 => 7,
            Algorithm::PS256 => 8,
            Algorithm::PS384 => 9,
            Algorithm::PS512 => 10,
            Algorithm::EdDSA => 11,
            // An algorithm added to jsonwebtoken later: no key family
            // includes this bit, so it can be allowed but never verified.
            _ => 15,
        }
    }

    pub(crate) const fn of(algs: &[Algorithm]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < algs.len() {
            bits |= Self::bit(algs[i]);
            i += 1;
        }
        Self(bits)
    }

    pub(crate) const fn contains(self, alg: Algorithm) -> bool {
        self.0 & Self::bit(alg) != 0
    }

    pub(crate) const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    pub(crate) const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for AlgSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(ALL_ALGORITHMS.iter().filter(|a| self.contains(**a)))
            .finish()
    }
}

const ALL_ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// The algorithm named by a JOSE `alg` value: exact, case-sensitive names
/// (RFC 7518 §3.1). `none` is not among them.
pub(crate) fn algorithm_from_name(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The algorithm family a key belongs to. A key is only ever used with
/// algorithms of its own family (RFC 8725 §3.1), which is what makes the
/// classic "HS256 signed with the RSA public key" confusion impossible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyFamily {
    /// A shared secret: HS256, HS384, HS512.
    Hmac,
    /// An RSA public key: RS256/384/512, PS256/384/512.
    Rsa,
    /// An EC P-256 public key: ES256.
    EcP256,
    /// An EC P-384 public key: ES384.
    EcP384,
    /// An Ed25519 public key: EdDSA.
    Ed25519,
}

impl KeyFamily {
    pub(crate) const fn algorithms(self) -> AlgSet {
        match self {
            Self::Hmac => AlgSet::HMAC,
            Self::Rsa => AlgSet::RSA,
            Self::EcP256 => AlgSet::P256,
            Self::EcP384 => AlgSet::P384,
            Self::Ed25519 => AlgSet::ED25519,
        }
    }

    /// A short name for messages (`HMAC`, `RSA`, `EC P-256`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hmac => "HMAC",
            Self::Rsa => "RSA",
            Self::EcP256 => "EC P-256",
            Self::EcP384 => "EC P-384",
            Self::Ed25519 => "Ed25519",
        }
    }
}

impl fmt::Display for KeyFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// An HMAC secret shorter than [`MIN_HMAC_SECRET_LEN`] bytes.
    HmacSecretTooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// The PEM is not a public key of the expected kind.
    InvalidPem {
        /// The family that was expected.
        family: KeyFamily,
        /// What was wrong.
        reason: String,
    },
    /// A private key where a public key belongs: refuse to hold it.
    PrivateKey,
    /// A key restricted to an algorithm outside its family.
    AlgorithmMismatch {
        /// The key's family.
        family: KeyFamily,
        /// The algorithm asked for.
        algorithm: Algorithm,
    },
    /// The JWKS document is not valid.
    InvalidJwks(String),
    /// Two keys with the same `kid` usable with the same algorithm.
    DuplicateKid(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HmacSecretTooShort { len } => write!(
                f,
                "HMAC secret is {len} bytes; at least {MIN_HMAC_SECRET_LEN} are required"
            ),
            Self::InvalidPem { family, reason } => {
                write!(f, "not a valid {family} public key PEM: {reason}")
            }
            Self::PrivateKey => {
                f.write_str("a private key was given where a public key is expected")
            }
            Self::AlgorithmMismatch { family, algorithm } => {
                write!(f, "a {family} key cannot be used with {algorithm:?}")
            }
            Self::InvalidJwks(reason) => write!(f, "invalid JWKS document: {reason}"),
            Self::DuplicateKid(kid) => write!(
                f,
                "two keys with kid {kid:?} are usable with the same algorithm"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// One verification key, bound to its algorithm family (and, optionally, to
/// a single algorithm of it) and to an optional key id (`kid`).
///
/// Keys hold only public material (or an HMAC secret); PEM private keys are
/// refused.
///
/// ```
/// use finmesh::auth::{Algorithm, JwtKey, KeyFamily};
///
/// let key = JwtKey::hmac([7u8; 32]).unwrap().with_kid("2024-01");
/// assert_eq!(key.family(), KeyFamily::Hmac);
/// assert_eq!(key.kid(), Some("2024-01"));
/// assert!(JwtKey::hmac(b"too short").is_err());
/// let hs256_only = key.restrict_to(Algorithm::HS256).unwrap();
/// assert!(hs256_only.restrict_to(Algorithm::RS256).is_err());
/// ```
#[derive(Clone)]
pub struct JwtKey {
    kid: Option<Arc<str>>,
    family: KeyFamily,
    algorithms: AlgSet,
    key: DecodingKey,
}

impl fmt::Debug for JwtKey {
    // Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

fn refuse_private(pem: &[u8]) -> Result<(), KeyError> {
    // A private key in a verifier's configuration is a leak waiting to
    // happen (and, for RSA, jsonwebtoken would quietly accept it).
    if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
        return Err(KeyError::PrivateKey);
    }
    Ok(())
}

fn pem_error(family: KeyFamily) -> impl Fn(jsonwebtoken::errors::Error) -> KeyError {
    move |e| KeyError::InvalidPem {
        family,
        reason: e.to_string(),
    }
}

impl JwtKey {
    fn new(family: KeyFamily, key: DecodingKey) -> Self {
        Self {
            kid: None,
            family,
            algorithms: family.algorithms(),
            key,
        }
    }

    /// An HMAC secret for HS256/HS384/HS512; at least
    /// [`MIN_HMAC_SECRET_LEN`] (32) bytes.
    pub fn hmac(secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(KeyError::HmacSecretTooShort { len: secret.len() });
        }
        Ok(Self::new(KeyFamily::Hmac, DecodingKey::from_secret(secret)))
    }

    /// An RSA public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`) for
    /// RS256/384/512 and PS256/384/512.
    pub fn rsa_pem(pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let pem = pem.as_ref();
        refuse_private(pem)?;
        let key = DecodingKey::from_rsa_pem(pem).map_err(pem_error(KeyFamily::Rsa))?;
        Ok(Self::new(KeyFamily::Rsa, key))
    }

    /// An EC public key (`BEGIN PUBLIC KEY`) on P-256 (for ES256) or P-384
    /// (for ES384); the curve is read from the key.
    pub fn ec_pem(pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let pem = pem.as_ref();
        refuse_private(pem)?;
        let key = DecodingKey::from_ec_pem(pem).map_err(pem_error(KeyFamily::EcP256))?;
        let family = ec_family(key.try_get_as_bytes().unwrap_or_default()).ok_or_else(|| {
            KeyError::InvalidPem {
                family: KeyFamily::EcP256,
                reason: "only uncompressed P-256 and P-384 points are supported".into(),
            }
        })?;
        Ok(Self::new(family, key))
    }

    /// An Ed25519 public key (`BEGIN PUBLIC KEY`) for EdDSA.
    pub fn ed25519_pem(pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let pem = pem.as_ref();
        refuse_private(pem)?;
        let key = DecodingKey::from_ed_pem(pem).map_err(pem_error(KeyFamily::Ed25519))?;
        if key.try_get_as_bytes().map(<[u8]>::len).unwrap_or_default() != 32 {
            return Err(KeyError::InvalidPem {
                family: KeyFamily::Ed25519,
                reason: "not a 32-byte Ed25519 key".into(),
            });
        }
        Ok(Self::new(KeyFamily::Ed25519, key))
    }

    /// Names the key: tokens whose header carries this `kid` select it.
    pub fn with_kid(mut self, kid: impl Into<Arc<str>>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Binds the key to one algorithm of its family (what a JWK's `alg`
    /// parameter does).
    pub fn restrict_to(mut self, algorithm: Algorithm) -> Result<Self, KeyError> {
        if !self.family.algorithms().contains(algorithm) {
            return Err(KeyError::AlgorithmMismatch {
                family: self.family,
                algorithm,
            });
        }
        self.algorithms = AlgSet::of(&[algorithm]);
        Ok(self)
    }

    /// The key id, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm family.
    pub fn family(&self) -> KeyFamily {
        self.family
    }

    /// Whether this key may verify a token signed with `algorithm`.
    pub fn allows(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(algorithm)
    }

    pub(crate) fn algorithms(&self) -> AlgSet {
        self.algorithms
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// Parses a JWKS document (RFC 7517 `{"keys": [...]}`) into keys.
    ///
    /// Supported: `RSA`, `EC` on P-256/P-384, `OKP` Ed25519, and `oct`
    /// secrets of at least 32 bytes. A key's `kid` and `alg` are honoured
    /// (`alg` binds it to that algorithm). Keys whose `use` is not `sig`,
    /// whose `alg` is not a signature algorithm, or whose type or curve is
    /// not supported (P-521, Ed448, …) are skipped: identity providers
    /// publish such keys alongside signing keys. A malformed supported key,
    /// or a document with no usable key, is an error.
    pub fn from_jwks(document: &[u8]) -> Result<Vec<Self>, KeyError> {
        let doc: Value = serde_json::from_slice(document)
            .map_err(|e| KeyError::InvalidJwks(format!("not JSON: {e}")))?;
        let keys = doc
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or_else(|| KeyError::InvalidJwks("no \"keys\" array".into()))?;
        let mut out = Vec::with_capacity(keys.len());
        for (i, jwk) in keys.iter().enumerate() {
            if let Some(key) =
                jwk_to_key(jwk).map_err(|e| KeyError::InvalidJwks(format!("keys[{i}]: {e}")))?
            {
                out.push(key);
            }
        }
        if out.is_empty() {
            return Err(KeyError::InvalidJwks(
                "no supported signature key in the document".into(),
            ));
        }
        Ok(out)
    }
}

fn ec_family(point: &[u8]) -> Option<KeyFamily> {
    // Uncompressed SEC1 points: 0x04 || x || y.
    match (point.first(), point.len()) {
        (Some(4), 65) => Some(KeyFamily::EcP256),
        (Some(4), 97) => Some(KeyFamily::EcP384),
        _ => None,
    }
}

fn b64_field(jwk: &Value, name: &str, want_len: Option<usize>) -> Result<Vec<u8>, String> {
    let s = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string parameter {name:?}"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("parameter {name:?} is not base64url"))?;
    if let Some(want) = want_len
        && bytes.len() != want
    {
        return Err(format!(
            "parameter {name:?} is {} bytes, expected {want}",
            bytes.len()
        ));
    }
    if bytes.is_empty() {
        return Err(format!("parameter {name:?} is empty"));
    }
    Ok(bytes)
}

/// One JWK to a key; `Ok(None)` for a key that is legitimately not ours to
/// use (encryption keys, unsupported types).
fn jwk_to_key(jwk: &Value) -> Result<Option<JwtKey>, String> {
    let Some(obj) = jwk.as_object() else {
        return Err("not a JSON object".into());
    };
    let str_param = |name: &str| -> Result<Option<&str>, String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("parameter {name:?} is not a string")),
        }
    };
    if str_param("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = match str_param("alg")? {
        None => None,
        Some(name) => match algorithm_from_name(name) {
            Some(alg) => Some(alg),
            // An encryption algorithm (RSA-OAEP, ECDH-ES, …) or one we do
            // not verify: not a signing key for us.
            None => return Ok(None),
        },
    };
    let kid = str_param("kid")?;
    let kty = str_param("kty")?.ok_or("missing \"kty\"")?;
    let key = match kty {
        "RSA" => {
            let n = b64_field(jwk, "n", None)?;
            let e = b64_field(jwk, "e", None)?;
            JwtKey::new(KeyFamily::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (family, len) = match str_param("crv")?.ok_or("missing \"crv\"")? {
                "P-256" => (KeyFamily::EcP256, 32),
                "P-384" => (KeyFamily::EcP384, 48),
                _ => return Ok(None),
            };
            let x = b64_field(jwk, "x", Some(len))?;
            let y = b64_field(jwk, "y", Some(len))?;
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            JwtKey::new(family, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            if str_param("crv")?.ok_or("missing \"crv\"")? != "Ed25519" {
                return Ok(None);
            }
            let x = b64_field(jwk, "x", Some(32))?;
            JwtKey::new(KeyFamily::Ed25519, DecodingKey::from_ed_der(&x))
        }
        "oct" => JwtKey::hmac(b64_field(jwk, "k", None)?).map_err(|e| e.to_string())?,
        _ => return Ok(None),
    };
    let key = match kid {
        Some(kid) => key.with_kid(kid),
        None => key,
    };
    match alg {
        Some(alg) => key.restrict_to(alg).map(Some).map_err(|e| e.to_string()),
        None => Ok(Some(key)),
    }
}

/// Every key set ever built gets a fresh id: the verification cache tags
/// entries with the id of the set that verified them, so an entry can
/// never outlive the keys it was verified with.
static NEXT_KEY_SET_ID: AtomicU64 = AtomicU64::new(1);

/// The keys a layer verifies with: the configured keys plus, when a JWKS
/// file is watched, that file's keys. Replaced as a whole on reload.
#[derive(Debug)]
pub(crate) struct KeySet {
    id: u64,
    keys: Vec<JwtKey>,
}

/// Why no key was chosen for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoKey {
    /// The token names a `kid` no key of its algorithm has.
    UnknownKid,
    /// The token names no `kid` and several keys of its algorithm's
    /// family are configured.
    Ambiguous,
    /// No key at all for the token's algorithm.
    NoneForAlgorithm,
}

impl KeySet {
    /// A key set; refuses two keys with the same `kid` that could verify
    /// the same algorithm (which one would a token mean?).
    pub(crate) fn new(keys: Vec<JwtKey>) -> Result<Self, KeyError> {
        for (i, a) in keys.iter().enumerate() {
            let Some(kid) = a.kid() else { continue };
            if keys[i + 1..]
                .iter()
                .any(|b| b.kid() == Some(kid) && a.algorithms.intersects(b.algorithms))
            {
                return Err(KeyError::DuplicateKid(kid.to_owned()));
            }
        }
        Ok(Self {
            id: NEXT_KEY_SET_ID.fetch_add(1, Ordering::Relaxed),
            keys,
        })
    }

    /// How many keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Chooses the key for a token signed with `alg` naming `kid`: only
    /// keys bound to `alg` are candidates, and a `kid` must match exactly.
    /// No `kid` is accepted only when exactly one key of `alg`'s family
    /// (RSA, P-256, P-384, Ed25519, HMAC) is configured, and it allows
    /// `alg`: with two RSA keys, one bound to RS256 and one to PS256, a
    /// kid-less token is ambiguous by family even if only one would fit.
    pub(crate) fn select(&self, alg: Algorithm, kid: Option<&str>) -> Result<&JwtKey, NoKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.allows(alg) && k.kid() == Some(kid))
                .ok_or(NoKey::UnknownKid),
            None => {
                let mut family = self
                    .keys
                    .iter()
                    .filter(|k| k.family().algorithms().contains(alg));
                match (family.next(), family.next()) {
                    (Some(key), None) if key.allows(alg) => Ok(key),
                    (Some(_), Some(_)) => Err(NoKey::Ambiguous),
                    _ => Err(NoKey::NoneForAlgorithm),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PUB: &str = include_str!("../../tests/keys/rsa-public.pem");
    const RSA_PRIV: &str = include_str!("../../tests/keys/rsa-private.pem");
    const EC256_PUB: &str = include_str!("../../tests/keys/ec256-public.pem");
    const EC384_PUB: &str = include_str!("../../tests/keys/ec384-public.pem");
    const ED_PUB: &str = include_str!("../../tests/keys/ed25519-public.pem");

    #[test]
    fn pem_keys_are_bound_to_their_family() {
        assert_eq!(JwtKey::rsa_pem(RSA_PUB).unwrap().family(), KeyFamily::Rsa);
        assert_eq!(
            JwtKey::ec_pem(EC256_PUB).unwrap().family(),
            KeyFamily::EcP256
        );
        assert_eq!(
            JwtKey::ec_pem(EC384_PUB).unwrap().family(),
            KeyFamily::EcP384
        );
        assert_eq!(
            JwtKey::ed25519_pem(ED_PUB).unwrap().family(),
            KeyFamily::Ed25519
        );
        let ec = JwtKey::ec_pem(EC256_PUB).unwrap();
        assert!(ec.allows(Algorithm::ES256));
        assert!(!ec.allows(Algorithm::ES384));
        assert!(!ec.allows(Algorithm::HS256));
        let rsa = JwtKey::rsa_pem(RSA_PUB).unwrap();
        assert!(rsa.allows(Algorithm::PS256) && !rsa.allows(Algorithm::HS256));
    }

    #[test]
    fn wrong_or_private_pem_is_refused() {
        assert_eq!(JwtKey::rsa_pem(RSA_PRIV).unwrap_err(), KeyError::PrivateKey);
        assert!(JwtKey::ec_pem(RSA_PUB).is_err());
        assert!(JwtKey::ed25519_pem(EC256_PUB).is_err());
        assert!(JwtKey::rsa_pem("not a pem").is_err());
        assert!(matches!(
            JwtKey::hmac([0u8; 31]),
            Err(KeyError::HmacSecretTooShort { len: 31 })
        ));
    }

    #[test]
    fn jwks_skips_foreign_keys_and_binds_alg() {
        let doc = br#"{"keys":[
            {"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"},
            {"kty":"EC","crv":"P-521","x":"AA","y":"AA"},
            {"kty":"OKP","crv":"Ed448","x":"AA"},
            {"kty":"oct","kid":"h","alg":"HS384","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
        ]}"#;
        let keys = JwtKey::from_jwks(doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), Some("h"));
        assert!(keys[0].allows(Algorithm::HS384) && !keys[0].allows(Algorithm::HS256));
    }

    #[test]
    fn jwks_refuses_malformed_documents() {
        for doc in [
            &b"[]"[..],
            b"{}",
            b"{\"keys\":{}}",
            b"{\"keys\":[]}",
            b"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}]}",
            b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}",
            b"{\"keys\":[{\"kty\":\"RSA\",\"alg\":\"ES256\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
            b"{\"keys\":[{\"kty\":\"RSA\",\"kid\":7,\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
            b"{\"keys\":[5]}",
            b"not json",
        ] {
            assert!(
                JwtKey::from_jwks(doc).is_err(),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn selection_by_kid_and_family() {
        let a = JwtKey::ec_pem(EC256_PUB).unwrap().with_kid("a");
        let b = JwtKey::ec_pem(include_str!("../../tests/keys/ec256b-public.pem"))
            .unwrap()
            .with_kid("b");
        let r = JwtKey::rsa_pem(RSA_PUB).unwrap();
        let set = KeySet::new(vec![a, b, r]).unwrap();
        assert_eq!(
            set.select(Algorithm::ES256, Some("b")).unwrap().kid(),
            Some("b")
        );
        assert_eq!(
            set.select(Algorithm::ES256, Some("c")).unwrap_err(),
            NoKey::UnknownKid
        );
        assert_eq!(
            set.select(Algorithm::ES256, None).unwrap_err(),
            NoKey::Ambiguous
        );
        assert_eq!(set.select(Algorithm::RS256, None).unwrap().kid(), None);
        assert_eq!(
            set.select(Algorithm::HS256, None).unwrap_err(),
            NoKey::NoneForAlgorithm
        );
        // The RSA key has no kid, so a kid never selects it.
        assert_eq!(
            set.select(Algorithm::RS256, Some("a")).unwrap_err(),
            NoKey::UnknownKid
        );
        // Two RSA keys bound to different algorithms: a kid-less token is
        // ambiguous by family, even though only one key allows RS256.
        let rs = JwtKey::rsa_pem(RSA_PUB)
            .unwrap()
            .restrict_to(Algorithm::RS256)
            .unwrap()
            .with_kid("rs");
        let ps = JwtKey::rsa_pem(RSA_PUB)
            .unwrap()
            .restrict_to(Algorithm::PS256)
            .unwrap()
            .with_kid("ps");
        let set = KeySet::new(vec![rs, ps]).unwrap();
        assert_eq!(
            set.select(Algorithm::RS256, None).unwrap_err(),
            NoKey::Ambiguous
        );
        assert_eq!(
            set.select(Algorithm::RS256, Some("rs")).unwrap().kid(),
            Some("rs")
        );
        assert_eq!(
            set.select(Algorithm::RS256, Some("ps")).unwrap_err(),
            NoKey::UnknownKid
        );
        // One key of the family, bound to another algorithm: no key.
        let set = KeySet::new(vec![
            JwtKey::rsa_pem(RSA_PUB)
                .unwrap()
                .restrict_to(Algorithm::PS256)
                .unwrap(),
        ])
        .unwrap();
        assert_eq!(
            set.select(Algorithm::RS256, None).unwrap_err(),
            NoKey::NoneForAlgorithm
        );
    }

    #[test]
    fn duplicate_kid_in_one_family_is_refused() {
        let a = JwtKey::hmac([1u8; 32]).unwrap().with_kid("k");
        let b = JwtKey::hmac([2u8; 32]).unwrap().with_kid("k");
        assert_eq!(
            KeySet::new(vec![a.clone(), b]).unwrap_err(),
            KeyError::DuplicateKid("k".into())
        );
        // Same kid in different families is unambiguous.
        let r = JwtKey::rsa_pem(RSA_PUB).unwrap().with_kid("k");
        assert!(KeySet::new(vec![a, r]).is_ok());
    }
}
