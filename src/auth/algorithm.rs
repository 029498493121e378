//! Algorithms: the [`AlgSet`] bit mask, JOSE `alg` names, and the
//! [`KeyFamily`] each key belongs to.

use std::fmt;

use jsonwebtoken::Algorithm;

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
