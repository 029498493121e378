//! [`SpiffeId`]: a SPIFFE ID parsed and validated per the SPIFFE-ID spec.

use std::fmt;
use std::sync::Arc;

/// The longest SPIFFE ID accepted, in bytes (the spec's URI limit).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// The longest trust domain name accepted, in bytes (the spec's limit).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME: &str = "spiffe://";

/// A valid SPIFFE ID: `spiffe://<trust-domain><path>`.
///
/// Parsing follows the SPIFFE-ID specification strictly (as go-spiffe
/// does): the scheme is `spiffe`, the trust domain is 1–255 bytes of
/// lowercase letters, digits, `.`, `-` and `_`; the path is empty or
/// `/`-separated segments of letters, digits, `.`, `-` and `_`, none empty,
/// `.` or `..`, and no trailing `/`. Those character sets leave no room for
/// a port, user info, a query or a fragment, and no percent-encoding. At
/// most [`MAX_SPIFFE_ID_LEN`] bytes.
///
/// Cheap to clone (one `Arc<str>`).
///
/// ```
/// use finmesh::identity::SpiffeId;
///
/// let id = SpiffeId::parse("spiffe://finmesh.demo/ns/payments/sa/frontend")?;
/// assert_eq!(id.trust_domain(), "finmesh.demo");
/// assert_eq!(id.path(), "/ns/payments/sa/frontend");
/// assert_eq!(id.service_account(), Some(("payments", "frontend")));
///
/// let err = SpiffeId::parse("spiffe://Finmesh.demo/x").unwrap_err();
/// assert_eq!(err.field(), "trust domain");
/// assert!(SpiffeId::parse("spiffe://td:8443/x").is_err());
/// assert!(SpiffeId::parse("spiffe://td/x?y").is_err());
/// # Ok::<_, finmesh::identity::IdentityError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    id: Arc<str>,
    // Byte offset where the path starts (== id.len() when it is empty).
    path_at: usize,
}

impl SpiffeId {
    /// Parses and validates `id`. The error names the part at fault
    /// (`scheme`, `trust domain`, `path`, `length`).
    pub fn parse(id: &str) -> Result<Self, IdentityError> {
        // Security: bound first; nothing longer is looked at.
        if id.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdentityError::new("length", "longer than 2048 bytes"));
        }
        let rest = match id.get(..SCHEME.len()) {
            Some(scheme) if scheme == SCHEME => &id[SCHEME.len()..],
            Some(scheme) if scheme.eq_ignore_ascii_case(SCHEME) => {
                return Err(IdentityError::new("scheme", "must be lowercase `spiffe`"));
            }
            _ => return Err(IdentityError::new("scheme", "must be `spiffe://`")),
        };
        let td_len = rest.find('/').unwrap_or(rest.len());
        validate_trust_domain(&rest[..td_len])?;
        let path = &rest[td_len..];
        validate_path(path)?;
        Ok(Self {
            id: Arc::from(id),
            path_at: SCHEME.len() + td_len,
        })
    }

    /// The whole ID, `spiffe://…`.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The whole ID, shared (no copy).
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.id)
    }

    /// The trust domain, e.g. `finmesh.demo`.
    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME.len()..self.path_at]
    }

    /// The path, e.g. `/ns/payments/sa/frontend`; empty for a trust
    /// domain's own ID.
    pub fn path(&self) -> &str {
        &self.id[self.path_at..]
    }

    /// `(namespace, service account)` when the path is Istio's
    /// `/ns/<namespace>/sa/<name>` with a DNS-1123 label namespace and a
    /// DNS-1123 subdomain name (the Kubernetes rules); `None` otherwise.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        let mut parts = self.path().strip_prefix('/')?.split('/');
        let (Some("ns"), Some(ns), Some("sa"), Some(name), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        (is_dns1123_label(ns) && is_dns1123_subdomain(name)).then_some((ns, name))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks a trust domain name: 1–255 bytes of `a-z 0-9 . - _`.
pub(crate) fn validate_trust_domain(td: &str) -> Result<(), IdentityError> {
    if td.is_empty() {
        return Err(IdentityError::new("trust domain", "is empty"));
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdentityError::new("trust domain", "longer than 255 bytes"));
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(IdentityError::new(
            "trust domain",
            "may hold only lowercase letters, digits, `.`, `-` and `_` (no port, user info or uppercase)",
        ));
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), IdentityError> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/' (it begins where the trust domain ended).
    for segment in path[1..].split('/') {
        match segment {
            "" => return Err(IdentityError::new("path", "has an empty segment")),
            "." | ".." => {
                return Err(IdentityError::new("path", "has a `.` or `..` segment"));
            }
            s if !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) =>
            {
                return Err(IdentityError::new(
                    "path",
                    "may hold only letters, digits, `.`, `-` and `_` in segments (no query, fragment or percent-encoding)",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Why a certificate or SPIFFE ID is not an acceptable identity. Names
/// the field at fault; never echoes more than a bounded part of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityError {
    field: &'static str,
    reason: std::borrow::Cow<'static, str>,
}

impl IdentityError {
    pub(crate) fn new(
        field: &'static str,
        reason: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The field at fault: `scheme`, `trust domain`, `path`, `length`,
    /// `certificate`, `URI SAN`, `basicConstraints`, `keyUsage`, …
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for IdentityError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_follow_the_spec() {
        let ok = [
            "spiffe://td",
            "spiffe://finmesh.demo/ns/a/sa/b",
            "spiffe://a-b_c.d/X.y-z_1/2",
            "spiffe://1.2.3.4/w",
        ];
        for id in ok {
            let parsed = SpiffeId::parse(id).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(parsed.as_str(), id);
        }
        let bad = [
            ("", "scheme"),
            ("spiffe:/td/x", "scheme"),
            ("SPIFFE://td/x", "scheme"),
            ("https://td/x", "scheme"),
            ("spiffe://", "trust domain"),
            ("spiffe:///x", "trust domain"),
            ("spiffe://TD/x", "trust domain"),
            ("spiffe://td:443/x", "trust domain"),
            ("spiffe://user@td/x", "trust domain"),
            ("spiffe://td?q", "trust domain"),
            ("spiffe://td/", "path"),
            ("spiffe://td/x/", "path"),
            ("spiffe://td//x", "path"),
            ("spiffe://td/./x", "path"),
            ("spiffe://td/../x", "path"),
            ("spiffe://td/x?q=1", "path"),
            ("spiffe://td/x#f", "path"),
            ("spiffe://td/x%20y", "path"),
            ("spiffe://td/é", "path"),
        ];
        for (id, field) in bad {
            let err = SpiffeId::parse(id).expect_err(id);
            assert_eq!(err.field(), field, "{id}: {err}");
        }
        let long_td = format!("spiffe://{}/x", "a".repeat(256));
        assert_eq!(
            SpiffeId::parse(&long_td).unwrap_err().field(),
            "trust domain"
        );
        let long = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        assert_eq!(SpiffeId::parse(&long).unwrap_err().field(), "length");
    }

    #[test]
    fn service_accounts_are_istio_paths_with_kubernetes_names() {
        let sa = |id: &str| {
            SpiffeId::parse(id)
                .unwrap()
                .service_account()
                .map(|(n, s)| format!("{n}:{s}"))
        };
        assert_eq!(sa("spiffe://td/ns/a/sa/b.c").as_deref(), Some("a:b.c"));
        assert_eq!(sa("spiffe://td/ns/A/sa/b"), None);
        assert_eq!(sa("spiffe://td/ns/a/sa/b/extra"), None);
        assert_eq!(sa("spiffe://td/ns/a/sb/b"), None);
        assert_eq!(sa("spiffe://td/ns/a/sa/_b"), None);
        assert_eq!(sa("spiffe://td"), None);
    }
}
