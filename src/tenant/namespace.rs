//! [`TenantNamespace`]: a validated Kubernetes DNS-1123 label.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// The longest DNS-1123 label.
pub const MAX_LEN: usize = 63;

/// A tenant namespace: exactly a Kubernetes DNS-1123 label — 1 to 63
/// characters of `a-z`, `0-9` and `-`, starting and ending with a letter or
/// digit.
///
/// Stored inline (no allocation) and `Copy`, so it moves freely between
/// layers, labels and registries.
///
/// ```
/// use finmesh::tenant::TenantNamespace;
///
/// let ns = TenantNamespace::parse("tenant-a").unwrap();
/// assert_eq!(ns.as_str(), "tenant-a");
/// assert!(TenantNamespace::parse("Tenant_A").is_err());
/// ```
#[derive(Clone, Copy)]
pub struct TenantNamespace {
    len: u8,
    bytes: [u8; MAX_LEN],
}

/// Why a string is not a [`TenantNamespace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidNamespace {
    /// The empty string.
    Empty,
    /// Over 63 bytes.
    TooLong,
    /// A byte outside `a-z`, `0-9`, `-` (uppercase, `_`, `.`, space,
    /// `%`, non-ASCII…), at this byte offset.
    InvalidCharacter(usize),
    /// Starts or ends with `-`.
    EdgeHyphen,
}

impl fmt::Display for InvalidNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("namespace is empty"),
            Self::TooLong => write!(f, "namespace is longer than {MAX_LEN} characters"),
            Self::InvalidCharacter(at) => write!(
                f,
                "namespace has a character other than a-z, 0-9 or '-' at offset {at}"
            ),
            Self::EdgeHyphen => f.write_str("namespace must start and end with a-z or 0-9"),
        }
    }
}

impl std::error::Error for InvalidNamespace {}

impl TenantNamespace {
    /// Validates `s` as a DNS-1123 label.
    pub fn parse(s: &str) -> Result<Self, InvalidNamespace> {
        Self::from_bytes(s.as_bytes())
    }

    /// Validates raw bytes (a header value) as a DNS-1123 label.
    pub fn from_bytes(b: &[u8]) -> Result<Self, InvalidNamespace> {
        if b.is_empty() {
            return Err(InvalidNamespace::Empty);
        }
        if b.len() > MAX_LEN {
            return Err(InvalidNamespace::TooLong);
        }
        if let Some(at) = b
            .iter()
            .position(|c| !matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        {
            return Err(InvalidNamespace::InvalidCharacter(at));
        }
        if b[0] == b'-' || b[b.len() - 1] == b'-' {
            return Err(InvalidNamespace::EdgeHyphen);
        }
        let mut bytes = [0; MAX_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Self {
            // Bounded by MAX_LEN above.
            len: b.len() as u8,
            bytes,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The namespace as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `from_bytes`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl PartialEq for TenantNamespace {
    fn eq(&self, other: &Self) -> bool {
        // The bytes, not `as_str`: no UTF-8 check on every map probe.
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for TenantNamespace {}

impl PartialOrd for TenantNamespace {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TenantNamespace {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // ASCII: byte order is `str` order.
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for TenantNamespace {
    // Hashes as its `str`, so maps keyed by namespace can be queried with a
    // `&str` (see the `Borrow` impl).
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Borrow<str> for TenantNamespace {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for TenantNamespace {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for TenantNamespace {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TenantNamespace {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for TenantNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TenantNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantNamespace({:?})", self.as_str())
    }
}

impl FromStr for TenantNamespace {
    type Err = InvalidNamespace;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for TenantNamespace {
    type Error = InvalidNamespace;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl serde::Serialize for TenantNamespace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for TenantNamespace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TenantNamespace;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a DNS-1123 label (1-63 of a-z, 0-9, '-')")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                TenantNamespace::parse(v).map_err(|e| E::custom(format_args!("{v:?}: {e}")))
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns1123_labels() {
        let max = "a".repeat(63);
        for ok in [
            "a",
            "0",
            "tenant-a",
            "9lives",
            "a-b-c",
            "a--b",
            max.as_str(),
        ] {
            assert_eq!(TenantNamespace::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "a".repeat(64);
        let cases: &[(&str, InvalidNamespace)] = &[
            ("", InvalidNamespace::Empty),
            (&long, InvalidNamespace::TooLong),
            ("Tenant", InvalidNamespace::InvalidCharacter(0)),
            ("tenant_a", InvalidNamespace::InvalidCharacter(6)),
            ("tenant.a", InvalidNamespace::InvalidCharacter(6)),
            ("-a", InvalidNamespace::EdgeHyphen),
            ("a-", InvalidNamespace::EdgeHyphen),
            ("ténant", InvalidNamespace::InvalidCharacter(1)),
            ("TENANT", InvalidNamespace::InvalidCharacter(0)),
            ("-", InvalidNamespace::EdgeHyphen),
            ("-tenant-a-", InvalidNamespace::EdgeHyphen),
            ("tenant a", InvalidNamespace::InvalidCharacter(6)),
            (" tenant", InvalidNamespace::InvalidCharacter(0)),
            ("tenant ", InvalidNamespace::InvalidCharacter(6)),
            ("tenant\t", InvalidNamespace::InvalidCharacter(6)),
            ("tenant%2Da", InvalidNamespace::InvalidCharacter(6)),
            ("%74enant", InvalidNamespace::InvalidCharacter(0)),
            ("tenant\u{200b}", InvalidNamespace::InvalidCharacter(6)),
            ("ｔenant", InvalidNamespace::InvalidCharacter(0)),
            ("a,b", InvalidNamespace::InvalidCharacter(1)),
            ("a/b", InvalidNamespace::InvalidCharacter(1)),
            ("*", InvalidNamespace::InvalidCharacter(0)),
        ];
        assert!(cases.len() >= 15);
        for (input, want) in cases {
            assert_eq!(
                TenantNamespace::parse(input).unwrap_err(),
                *want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn raw_bytes_that_are_not_utf8_are_refused() {
        assert_eq!(
            TenantNamespace::from_bytes(b"a\xff"),
            Err(InvalidNamespace::InvalidCharacter(1))
        );
        assert_eq!(
            TenantNamespace::from_bytes(b"\x00"),
            Err(InvalidNamespace::InvalidCharacter(0))
        );
        // Length is checked before content: a huge value costs nothing.
        assert_eq!(
            TenantNamespace::from_bytes(&[b'a'; 1 << 16]),
            Err(InvalidNamespace::TooLong)
        );
    }

    #[test]
    fn serde_validates() {
        let ns: TenantNamespace = serde_json::from_str("\"tenant-a\"").unwrap();
        assert_eq!(ns, "tenant-a");
        assert!(serde_json::from_str::<TenantNamespace>("\"Tenant-A\"").is_err());
        assert_eq!(serde_json::to_string(&ns).unwrap(), "\"tenant-a\"");
    }
}
