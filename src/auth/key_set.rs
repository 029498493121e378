//! The [`KeySet`] a token's key is chosen from, and where the current one
//! comes from ([`KeySource`]: fixed, or a watched JWKS file).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::Algorithm;

use super::key::{JwtKey, KeyError};
use crate::config::Watched;

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
                .any(|b| b.kid() == Some(kid) && a.algorithms().intersects(b.algorithms()))
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

/// Where the current [`KeySet`] comes from.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    Static(Arc<KeySet>),
    Watched(Watched<KeySet>),
}

impl KeySource {
    /// The current key set, for the duration of one verification.
    pub(crate) fn current(&self) -> KeysGuard<'_> {
        match self {
            Self::Static(keys) => KeysGuard::Static(keys),
            Self::Watched(w) => KeysGuard::Watched(w.borrow()),
        }
    }
}

pub(crate) enum KeysGuard<'a> {
    Static(&'a KeySet),
    Watched(arc_swap::Guard<Arc<KeySet>>),
}

impl std::ops::Deref for KeysGuard<'_> {
    type Target = KeySet;

    fn deref(&self) -> &KeySet {
        match self {
            Self::Static(k) => k,
            Self::Watched(g) => g,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PUB: &str = include_str!("../../tests/keys/rsa-public.pem");
    const EC256_PUB: &str = include_str!("../../tests/keys/ec256-public.pem");

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
