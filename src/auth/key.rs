//! [`JwtKey`]: one verification key, bound to its algorithm family and an
//! optional `kid`, and [`KeyError`], why a key could not be loaded. Keys
//! come from HMAC secrets, [PEM](super::pem) or [JWKS](super::jwks).

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};

use super::algorithm::{AlgSet, KeyFamily};

/// The shortest HMAC secret accepted: 256 bits, the output size of
/// HS256 (RFC 7518 §3.2 requires a key at least as long as the hash).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

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

impl JwtKey {
    pub(super) fn new(family: KeyFamily, key: DecodingKey) -> Self {
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
}
