//! [`Principal`] and [`RiskLevel`]: who is calling, as verified.
//!
//! The JWT layer builds a `Principal` from a verified token and puts it into
//! the request extensions; every inner layer and handler reads it from
//! there. Because it came from a verified signature it outranks anything
//! the caller says in headers or baggage.
//!
//! ```
//! use finmesh::{Principal, RiskLevel};
//!
//! let alice = Principal::new("alice", "https://issuer.example")
//!     .with_groups(["payments"])
//!     .with_risk(RiskLevel::Low);
//! assert!(alice.in_group("payments"));
//! assert_eq!("critical".parse::<RiskLevel>(), Ok(RiskLevel::Critical));
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::tenant::TenantNamespace;

/// A verified caller. Cheap to clone: every field is shared.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Principal {
    /// The user name RBAC matches `User` subjects with: the token's `sub`
    /// behind its issuer's username prefix (none for the one-issuer form
    /// `JwtAuthBuilder::issuer`, `<issuer>#` by default for an
    /// `auth::Issuer`), or a
    /// ServiceAccount's `system:serviceaccount:<ns>:<name>` from an issuer
    /// allowed to mint them. The raw `sub` stays in [`claims`](Self::claims).
    pub subject: Arc<str>,
    /// Groups the subject belongs to, for RBAC `Group` subjects: the groups
    /// claim behind its issuer's groups prefix (plus a ServiceAccount's
    /// `system:serviceaccounts` groups).
    pub groups: Arc<[Arc<str>]>,
    /// The tenant the token was issued for, when it names one.
    pub tenant: Option<TenantNamespace>,
    /// The caller's risk level, when the token states one.
    pub risk: Option<RiskLevel>,
    /// The issuer (`iss`) that vouched for the subject, and whose key
    /// verified the token. Together with [`subject`](Self::subject) it is
    /// the caller's identity (idempotency scopes use both).
    pub issuer: Arc<str>,
    /// When the credential expires (`exp`).
    pub expires_at: Option<SystemTime>,
    /// Every claim of the token, for application-specific use.
    pub claims: Arc<Map<String, Value>>,
    /// The SPIFFE ID of the mutually authenticated connection the request
    /// came on (`mtls` feature), kept beside the token's user: who the
    /// user is is [`subject`](Self::subject), which workload carried the
    /// call is this. For a ServiceAccount taken from the peer itself, the
    /// same workload.
    pub peer: Option<Arc<str>>,
}

impl Principal {
    /// A principal with just a subject and issuer (tests, custom
    /// authenticators).
    pub fn new(subject: impl Into<Arc<str>>, issuer: impl Into<Arc<str>>) -> Self {
        Self {
            subject: subject.into(),
            groups: Arc::from([]),
            tenant: None,
            risk: None,
            issuer: issuer.into(),
            expires_at: None,
            claims: Arc::default(),
            peer: None,
        }
    }

    /// Sets the groups.
    pub fn with_groups<I, G>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<Arc<str>>,
    {
        self.groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the tenant claim.
    pub fn with_tenant(mut self, tenant: TenantNamespace) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Sets the risk level.
    pub fn with_risk(mut self, risk: RiskLevel) -> Self {
        self.risk = Some(risk);
        self
    }

    /// Sets the expiry.
    pub fn with_expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets the raw claims.
    pub fn with_claims(mut self, claims: Map<String, Value>) -> Self {
        self.claims = Arc::new(claims);
        self
    }

    /// Sets the peer's SPIFFE ID.
    pub fn with_peer(mut self, spiffe_id: impl Into<Arc<str>>) -> Self {
        self.peer = Some(spiffe_id.into());
        self
    }

    /// Whether the principal belongs to `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| &**g == group)
    }
}

/// The caller's risk level, as the identity provider assessed it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    /// Low risk.
    Low,
    /// Medium risk.
    Medium,
    /// High risk.
    High,
    /// Critical risk.
    Critical,
}

impl RiskLevel {
    /// The lowercase name: `low`, `medium`, `high`, `critical`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a string that is not a risk level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRiskLevel;

impl fmt::Display for InvalidRiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("risk level must be one of low, medium, high, critical")
    }
}

impl std::error::Error for InvalidRiskLevel {}

impl FromStr for RiskLevel {
    type Err = InvalidRiskLevel;

    /// Exact lowercase names only: a claim is a contract, not free text.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            _ => Err(InvalidRiskLevel),
        }
    }
}

crate::codes::rejection_codes! {
    /// The stable codes of authentication refusals (the JWT layer's, and
    /// any layer's that needs a principal and finds none). Declared here,
    /// beside [`Principal`], so layers that only read a principal can
    /// refuse with `auth.missing` without the JWT layer compiled in;
    /// re-exported as `finmesh::auth::AuthCode`.
    pub enum AuthCode {
        /// No bearer token: no `Authorization` header, or a scheme other
        /// than `Bearer`.
        Missing = ("auth.missing", Unauthenticated),
        /// Not a well-formed token: several `Authorization` headers, an
        /// empty token, over the size limit, not three base64url segments,
        /// a header or claims set that is not a JSON object.
        Malformed = ("auth.malformed", Unauthenticated),
        /// Well-formed but not trusted: signature, algorithm, `kid`, `typ`,
        /// `iss` or `aud` — including a token signed with a key of an
        /// issuer other than the one its `iss` names (the detail does not
        /// say which issuers exist).
        Invalid = ("auth.invalid", Unauthenticated),
        /// `exp` is past, beyond the leeway.
        Expired = ("auth.expired", Unauthenticated),
        /// `nbf` is ahead, beyond the leeway.
        NotYetValid = ("auth.not_yet_valid", Unauthenticated),
        /// A signed claim has an unusable value: a missing or non-string
        /// `sub`, a missing `exp`, a time claim that is not a non-negative
        /// integer, a tenant that is not a namespace, an unknown risk level,
        /// a missing required claim, a `sub` or group that would name a
        /// reserved `system:` user or group.
        ClaimInvalid = ("auth.claim_invalid", Unauthenticated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risk_levels_round_trip_and_reject_others() {
        for r in [
            RiskLevel::Low,
            RiskLevel::Medium,
            RiskLevel::High,
            RiskLevel::Critical,
        ] {
            assert_eq!(r.as_str().parse::<RiskLevel>(), Ok(r));
        }
        for bad in ["", "LOW", "Low", "severe", " low"] {
            assert_eq!(bad.parse::<RiskLevel>(), Err(InvalidRiskLevel), "{bad:?}");
        }
        assert!(RiskLevel::Low < RiskLevel::Critical);
    }
}
