//! [`PeerIdentity`]: the verified caller of a connection, from its X.509-SVID.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;

use super::spiffe::{IdentityError, SpiffeId, validate_trust_domain};

/// The largest certificate looked at, in bytes. Real SVIDs are 1–2 KiB.
pub const MAX_CERT_LEN: usize = 64 * 1024;

/// The peer of a mutually authenticated connection: the SPIFFE ID of its
/// X.509-SVID, whose chain the server verified against its trust bundle
/// at the handshake.
///
/// [`serve`](super::serve) puts one into the extensions of every request of
/// such a connection; layers and handlers read it from there. Cheap to
/// clone.
///
/// ```
/// use finmesh::identity::{PeerIdentity, SpiffeId};
///
/// let peer = PeerIdentity::new(SpiffeId::parse("spiffe://finmesh.demo/ns/tenant-a/sa/ledger-reader")?);
/// assert_eq!(peer.trust_domain(), "finmesh.demo");
/// assert_eq!(peer.service_account(), Some(("tenant-a", "ledger-reader")));
/// # Ok::<_, finmesh::identity::IdentityError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The SPIFFE ID (the certificate's one URI SAN).
    pub spiffe_id: SpiffeId,
    /// When the leaf certificate expires (`notAfter`), when known.
    pub not_after: Option<SystemTime>,
}

impl PeerIdentity {
    /// A peer identity with just a SPIFFE ID (tests, custom transports).
    pub fn new(spiffe_id: SpiffeId) -> Self {
        Self {
            spiffe_id,
            not_after: None,
        }
    }

    /// Reads the identity of a leaf X.509-SVID (DER), checking the rules
    /// of the X.509-SVID spec that concern the leaf alone:
    ///
    /// - a well-formed certificate of at most [`MAX_CERT_LEN`] bytes, with
    ///   no extension present twice;
    /// - exactly one URI SAN, which is a valid [`SpiffeId`] with a
    ///   non-empty path (a trust domain's own ID names no workload);
    /// - not a CA: `basicConstraints` absent or `cA` false;
    /// - `keyUsage` present with `digitalSignature`, without `keyCertSign`
    ///   or `cRLSign`.
    ///
    /// It does **not** verify the signature chain, the validity period or
    /// the trust domain: the TLS handshake verified the first two against
    /// the trust bundle, and [`TrustDomains`] checks the third.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        if der.len() > MAX_CERT_LEN {
            return Err(IdentityError::new("certificate", "longer than 64 KiB"));
        }
        let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| {
            IdentityError::new("certificate", "not a well-formed X.509 certificate")
        })?;
        if !rest.is_empty() {
            return Err(IdentityError::new(
                "certificate",
                "trailing bytes after the certificate",
            ));
        }
        let duplicate =
            |field| move |_| IdentityError::new(field, "malformed or present more than once");

        if let Some(bc) = cert
            .basic_constraints()
            .map_err(duplicate("basicConstraints"))?
            && bc.value.ca
        {
            return Err(IdentityError::new(
                "basicConstraints",
                "a leaf SVID must not be a CA",
            ));
        }
        let Some(usage) = cert.key_usage().map_err(duplicate("keyUsage"))? else {
            return Err(IdentityError::new(
                "keyUsage",
                "a leaf SVID must have keyUsage",
            ));
        };
        if !usage.value.digital_signature() {
            return Err(IdentityError::new(
                "keyUsage",
                "a leaf SVID must allow digitalSignature",
            ));
        }
        if usage.value.key_cert_sign() || usage.value.crl_sign() {
            return Err(IdentityError::new(
                "keyUsage",
                "a leaf SVID must not allow keyCertSign or cRLSign",
            ));
        }

        let san = cert
            .subject_alternative_name()
            .map_err(duplicate("subjectAltName"))?;
        let mut uris = san
            .iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            });
        let uri = match (uris.next(), uris.next()) {
            (Some(uri), None) => uri,
            (None, _) => return Err(IdentityError::new("URI SAN", "no SPIFFE ID (no URI SAN)")),
            (Some(_), Some(_)) => {
                return Err(IdentityError::new(
                    "URI SAN",
                    "several URI SANs; an SVID has exactly one",
                ));
            }
        };
        let spiffe_id = SpiffeId::parse(uri)?;
        if spiffe_id.path().is_empty() {
            return Err(IdentityError::new(
                "path",
                "a workload's SPIFFE ID has a path",
            ));
        }
        let not_after = u64::try_from(cert.validity().not_after.timestamp())
            .ok()
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
        Ok(Self {
            spiffe_id,
            not_after,
        })
    }

    /// The trust domain of the SPIFFE ID.
    pub fn trust_domain(&self) -> &str {
        self.spiffe_id.trust_domain()
    }

    /// `(namespace, service account)` for an Istio-style
    /// `/ns/<namespace>/sa/<name>` path; see [`SpiffeId::service_account`].
    pub fn service_account(&self) -> Option<(&str, &str)> {
        self.spiffe_id.service_account()
    }
}

/// The trust domains whose SVIDs are accepted: deny by default.
///
/// ```
/// use finmesh::identity::TrustDomains;
///
/// let allowed = TrustDomains::new(["finmesh.demo"])?;
/// assert!(allowed.contains("finmesh.demo"));
/// assert!(!allowed.contains("evil.example"));
/// assert!(TrustDomains::new(["Finmesh.Demo"]).is_err());
/// # Ok::<_, finmesh::identity::IdentityError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustDomains(Arc<[Arc<str>]>);

impl TrustDomains {
    /// The allowlist; each name must be a valid trust domain.
    pub fn new<I, S>(domains: I) -> Result<Self, IdentityError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let domains = domains
            .into_iter()
            .map(|d| {
                validate_trust_domain(d.as_ref())?;
                Ok(Arc::from(d.as_ref()))
            })
            .collect::<Result<Vec<_>, IdentityError>>()?;
        Ok(Self(domains.into()))
    }

    /// Whether `trust_domain` is allowed (exact match).
    pub fn contains(&self, trust_domain: &str) -> bool {
        self.0.iter().any(|d| &**d == trust_domain)
    }

    /// Reads and checks a leaf SVID: [`PeerIdentity::from_der`], then the
    /// allowlist.
    pub fn identify(&self, leaf_der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        let peer = PeerIdentity::from_der(leaf_der)?;
        if !self.contains(peer.trust_domain()) {
            return Err(IdentityError::new(
                "trust domain",
                "not an allowed trust domain",
            ));
        }
        Ok(peer)
    }
}
