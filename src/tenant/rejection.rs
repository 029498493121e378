//! [`TenantRejection`]: why the tenant layer refused a request.

use std::borrow::Cow;
use std::fmt;

use super::{InvalidNamespace, TenantNamespace};
use crate::codes::{RejectionCode, rejection_codes};
use crate::reject::{Rejection, RejectionKind};

rejection_codes! {
    /// The stable codes of the tenant layer's refusals.
    pub enum TenantCode {
        /// No namespace from any source.
        Missing = ("tenant.missing", InvalidArgument),
        /// Not a DNS-1123 label, or sent more than once.
        Malformed = ("tenant.malformed", InvalidArgument),
        /// Well-formed, but not in the registry.
        Unknown = ("tenant.unknown", PermissionDenied),
        /// In the registry, but suspended.
        Suspended = ("tenant.suspended", PermissionDenied),
        /// The header names another tenant than the verified claim.
        Mismatch = ("tenant.mismatch", PermissionDenied),
    }
}

/// Why the tenant layer refused a request, with its stable code.
///
/// | case | HTTP | gRPC | code |
/// |---|---|---|---|
/// | [`Missing`](Self::Missing) | 400 | `INVALID_ARGUMENT` | `tenant.missing` |
/// | [`Malformed`](Self::Malformed), [`MultipleValues`](Self::MultipleValues) | 400 | `INVALID_ARGUMENT` | `tenant.malformed` |
/// | [`Unknown`](Self::Unknown) | 403 | `PERMISSION_DENIED` | `tenant.unknown` |
/// | [`Suspended`](Self::Suspended) | 403 | `PERMISSION_DENIED` | `tenant.suspended` |
/// | [`Mismatch`](Self::Mismatch) | 403 | `PERMISSION_DENIED` | `tenant.mismatch` |
///
/// An unknown tenant is a 403, never a 404, and every detail names at most
/// what the caller itself sent, so answers never confirm which other
/// tenants exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantRejection {
    /// No namespace from any source: no header and no usable tenant claim.
    Missing,
    /// The header is not a DNS-1123 label.
    Malformed(InvalidNamespace),
    /// The header was sent more than once (which one would count is
    /// ambiguous, so neither does).
    MultipleValues,
    /// Well-formed, but not in the registry.
    Unknown(TenantNamespace),
    /// In the registry, but suspended.
    Suspended(TenantNamespace),
    /// The header names one tenant and the verified principal's tenant
    /// claim another.
    Mismatch,
}

impl TenantRejection {
    /// The stable code.
    pub const fn code(&self) -> TenantCode {
        match self {
            Self::Missing => TenantCode::Missing,
            Self::Malformed(_) | Self::MultipleValues => TenantCode::Malformed,
            Self::Unknown(_) => TenantCode::Unknown,
            Self::Suspended(_) => TenantCode::Suspended,
            Self::Mismatch => TenantCode::Mismatch,
        }
    }

    /// The kind, which decides the HTTP status and gRPC code.
    pub const fn kind(&self) -> RejectionKind {
        self.code().kind()
    }

    /// The human-readable detail. Never echoes a malformed value (it is
    /// untrusted bytes) nor the principal's tenant claim.
    pub fn detail(&self) -> Cow<'static, str> {
        match self {
            Self::Missing => Cow::Borrowed("the request names no tenant namespace"),
            Self::Malformed(why) => {
                Cow::Owned(format!("tenant namespace is not a DNS-1123 label: {why}"))
            }
            Self::MultipleValues => Cow::Borrowed("tenant namespace is sent more than once"),
            Self::Unknown(ns) => Cow::Owned(format!("tenant {:?} is not known", ns.as_str())),
            Self::Suspended(ns) => Cow::Owned(format!("tenant {:?} is suspended", ns.as_str())),
            Self::Mismatch => Cow::Borrowed(
                "tenant namespace does not match the tenant of the verified credentials",
            ),
        }
    }

    /// This refusal as a [`Rejection`], ready to render.
    pub fn to_rejection(&self) -> Rejection {
        self.code().reject(self.detail())
    }
}

impl fmt::Display for TenantRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.detail())
    }
}

impl std::error::Error for TenantRejection {}

impl From<TenantRejection> for Rejection {
    fn from(rejection: TenantRejection) -> Self {
        rejection.to_rejection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_follow_the_table() {
        let ns = TenantNamespace::parse("tenant-a").unwrap();
        let cases = [
            (TenantRejection::Missing, "tenant.missing", 400, 3),
            (
                TenantRejection::Malformed(InvalidNamespace::Empty),
                "tenant.malformed",
                400,
                3,
            ),
            (TenantRejection::MultipleValues, "tenant.malformed", 400, 3),
            (TenantRejection::Unknown(ns), "tenant.unknown", 403, 7),
            (TenantRejection::Suspended(ns), "tenant.suspended", 403, 7),
            (TenantRejection::Mismatch, "tenant.mismatch", 403, 7),
        ];
        for (rejection, code, http, grpc) in cases {
            let r = Rejection::from(rejection);
            assert_eq!(r.code(), code);
            assert_eq!(r.http_status().as_u16(), http, "{code}");
            assert_eq!(r.grpc_code(), grpc, "{code}");
            assert_eq!(r.layer(), "tenant");
        }
    }
}
