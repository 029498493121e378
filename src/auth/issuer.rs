//! [`Issuer`]: one identity provider a [`JwtAuthLayer`](super::JwtAuthLayer)
//! trusts — its audiences, its keys, and how its subjects and groups become
//! RBAC user and group names — and the checked form the verifier reads.

use std::path::PathBuf;
use std::sync::Arc;

use super::AuthCode;
use super::key::{JwtKey, KeyError};
use super::key_set::KeySource;
use super::verify::Refusal;
use crate::config::WatchOptions;
use crate::tenant::TenantNamespace;

/// The user-name prefix of Kubernetes service accounts
/// (`system:serviceaccount:<namespace>:<name>`).
const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";
/// The group every service account is in.
const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// Names Kubernetes reserves for itself (users and groups).
const RESERVED_PREFIX: &str = "system:";
/// DNS-1123 subdomain length, the bound on a service account name.
const MAX_SERVICE_ACCOUNT_NAME: usize = 253;

/// One trusted token issuer, for
/// [`JwtAuthBuilder::issuer_config`](super::JwtAuthBuilder::issuer_config):
/// the `iss` it signs as, the audiences it may address, the keys that
/// verify its tokens (and nobody else's), and how its subjects and groups
/// are named for RBAC.
///
/// Modelled on the Kubernetes apiserver's OIDC authenticator
/// (`--oidc-username-prefix`, `--oidc-groups-prefix`):
///
/// - **Username prefix**, prepended to `sub` to make the user name RBAC
///   `User` subjects match ([`Principal::subject`](crate::Principal)).
///   Unset, it is `"<issuer URL>#"`, the apiserver's default for a
///   username claim other than `email`, so `alice` from
///   `https://idp-a.example` is `https://idp-a.example#alice` and cannot be
///   anyone else's `alice`. `""` means no prefix (what the apiserver's
///   structured configuration writes as `prefix: ""`; the flag's `-`
///   is not special here).
/// - **Groups prefix**, prepended to every group of the groups claim.
///   Unset, it is also `"<issuer URL>#"`. The apiserver's flag leaves
///   groups unprefixed by default, but its structured configuration
///   requires the prefix to be chosen whenever groups are mapped; with
///   several issuers an unprefixed default would let a partner's
///   `groups: ["treasury"]` take the corporate `treasury` group's
///   bindings, so the default here is the safe one. `""` opts out.
/// - **Service accounts** ([`allow_service_accounts`](Self::allow_service_accounts),
///   default `false`): only an issuer allowed to may make a token whose
///   `sub` is `system:serviceaccount:<namespace>:<name>` into that
///   ServiceAccount (unprefixed, in the groups `system:serviceaccounts`
///   and `system:serviceaccounts:<namespace>`, as the apiserver's
///   service-account authenticator does). Any other user or group name
///   that would start with `system:` after prefixing is refused with
///   `auth.claim_invalid`.
/// - **Prefixes fence each other.** When one issuer's prefix starts
///   another's (`""` starts every prefix), a name the shorter-prefixed
///   issuer would produce inside the other's namespace is refused with
///   `auth.claim_invalid`: an unprefixed corporate issuer cannot mint
///   `partner:alice`, the partner's alice.
///
/// ```
/// use finmesh::auth::{Algorithm, Issuer, JwtAuthLayer, JwtKey};
///
/// let auth = JwtAuthLayer::builder()
///     .algorithms([Algorithm::HS256])
///     .issuer_config(
///         Issuer::new("https://login.corp.example")
///             .audience("payments")
///             .key(JwtKey::hmac(b"the corporate secret, 32 bytes or more")?)
///             .username_prefix("")
///             .groups_prefix(""),
///     )
///     .issuer_config(
///         Issuer::new("https://partner.example")
///             .audience("payments")
///             .key(JwtKey::hmac(b"the partner's secret, 32 bytes or more")?)
///             .username_prefix("partner:")
///             .groups_prefix("partner:"),
///     )
///     .build()?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct Issuer {
    pub(super) url: String,
    pub(super) audiences: Vec<String>,
    pub(super) keys: Vec<JwtKey>,
    pub(super) key_errors: Vec<KeyError>,
    pub(super) jwks_file: Option<(PathBuf, WatchOptions)>,
    pub(super) username_prefix: Option<String>,
    pub(super) groups_prefix: Option<String>,
    pub(super) allow_service_accounts: bool,
}

impl Issuer {
    /// Trusts tokens whose `iss` is exactly `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            audiences: Vec::new(),
            keys: Vec::new(),
            key_errors: Vec::new(),
            jwks_file: None,
            username_prefix: None,
            groups_prefix: None,
            allow_service_accounts: false,
        }
    }

    /// Accepts this issuer's tokens whose `aud` names `audience` (repeat
    /// for several; at least one is required).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Adds a key that verifies this issuer's tokens, and only its.
    pub fn key(mut self, key: JwtKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Adds the keys of a JWKS document (see [`JwtKey::from_jwks`]); an
    /// invalid document makes the build fail.
    pub fn jwks(mut self, document: impl AsRef<[u8]>) -> Self {
        match JwtKey::from_jwks(document.as_ref()) {
            Ok(keys) => self.keys.extend(keys),
            Err(e) => self.key_errors.push(e),
        }
        self
    }

    /// Loads this issuer's keys from a watched JWKS file, as
    /// [`JwtAuthBuilder::jwks_file`](super::JwtAuthBuilder::jwks_file)
    /// does; its keys are used together with [`key`](Self::key) and
    /// [`jwks`](Self::jwks) and verify only this issuer's tokens.
    pub fn jwks_file(self, path: impl Into<PathBuf>) -> Self {
        self.jwks_file_with(path, WatchOptions::new())
    }

    /// [`jwks_file`](Self::jwks_file) with explicit watch options.
    pub fn jwks_file_with(mut self, path: impl Into<PathBuf>, options: WatchOptions) -> Self {
        self.jwks_file = Some((path.into(), options));
        self
    }

    /// Prepended to `sub` to make the RBAC user name (default
    /// `"<issuer URL>#"`; `""` for none). Must not start with `system:`.
    pub fn username_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.username_prefix = Some(prefix.into());
        self
    }

    /// Prepended to each group of the groups claim (default
    /// `"<issuer URL>#"`; `""` for none). Must not start with `system:`.
    pub fn groups_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.groups_prefix = Some(prefix.into());
        self
    }

    /// Whether a `sub` of `system:serviceaccount:<namespace>:<name>` from
    /// this issuer becomes that ServiceAccount (default `false`: only for
    /// an issuer that really is a Kubernetes service-account issuer).
    pub fn allow_service_accounts(mut self, allow: bool) -> Self {
        self.allow_service_accounts = allow;
        self
    }
}

/// A checked issuer: what the verifier reads for its tokens.
#[derive(Debug)]
pub(crate) struct IssuerTrust {
    pub(crate) url: Arc<str>,
    pub(crate) audiences: Box<[Box<str>]>,
    pub(crate) keys: KeySource,
    pub(crate) username_prefix: Box<str>,
    pub(crate) groups_prefix: Box<str>,
    pub(crate) allow_service_accounts: bool,
    /// Other issuers' longer prefixes that start with this one's: user
    /// names this issuer must not produce.
    pub(crate) foreign_user_prefixes: Box<[Box<str>]>,
    /// The same for group names.
    pub(crate) foreign_group_prefixes: Box<[Box<str>]>,
}

const fn claim_invalid(detail: &'static str) -> Refusal {
    Refusal {
        code: AuthCode::ClaimInvalid,
        detail,
    }
}

/// The namespace of a well-formed service-account user name, `None` if
/// `user` is not one (`system:serviceaccount:<DNS-1123 label>:<name>`,
/// the name a DNS-1123 subdomain).
fn service_account_namespace(user: &str) -> Option<TenantNamespace> {
    let rest = user.strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)?;
    let (ns, name) = rest.split_once(':')?;
    let name_ok = !name.is_empty()
        && name.len() <= MAX_SERVICE_ACCOUNT_NAME
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'));
    name_ok.then(|| TenantNamespace::parse(ns).ok()).flatten()
}

fn prefixed(prefix: &str, name: &str) -> Arc<str> {
    if prefix.is_empty() {
        Arc::from(name)
    } else {
        let mut s = String::with_capacity(prefix.len() + name.len());
        s.push_str(prefix);
        s.push_str(name);
        Arc::from(s)
    }
}

impl IssuerTrust {
    /// Whether `aud` is one of this issuer's audiences.
    pub(crate) fn accepts_audience(&self, aud: &str) -> bool {
        self.audiences.iter().any(|a| **a == *aud)
    }

    /// The RBAC user name for `sub`, and the groups that come with it (a
    /// service account's).
    pub(crate) fn user(&self, sub: &str) -> Result<(Arc<str>, Vec<Arc<str>>), Refusal> {
        // Security: a ServiceAccount identity is only taken from an issuer
        // configured to mint them; from any other issuer the name is
        // prefixed (so it cannot match a ServiceAccount binding) or, with
        // no prefix, refused below.
        if self.allow_service_accounts && sub.starts_with(SERVICE_ACCOUNT_USER_PREFIX) {
            let ns = service_account_namespace(sub).ok_or(claim_invalid(
                "sub is not a well-formed service account name",
            ))?;
            let groups = vec![
                Arc::from(SERVICE_ACCOUNTS_GROUP),
                Arc::from(format!("{SERVICE_ACCOUNTS_GROUP}:{ns}")),
            ];
            return Ok((Arc::from(sub), groups));
        }
        let user = prefixed(&self.username_prefix, sub);
        // Security: `system:` names are Kubernetes' own (system:masters,
        // system:node:…, system:serviceaccount:…); a token never claims
        // one.
        if user.starts_with(RESERVED_PREFIX) {
            return Err(claim_invalid("sub maps to a reserved system: user name"));
        }
        if self
            .foreign_user_prefixes
            .iter()
            .any(|p| user.starts_with(&**p))
        {
            return Err(claim_invalid("sub maps into another issuer's user names"));
        }
        Ok((user, Vec::new()))
    }

    /// The RBAC group name for a group of the groups claim.
    pub(crate) fn group(&self, group: &str) -> Result<Arc<str>, Refusal> {
        let group = prefixed(&self.groups_prefix, group);
        if group.starts_with(RESERVED_PREFIX) {
            return Err(claim_invalid(
                "the groups claim maps to a reserved system: group name",
            ));
        }
        if self
            .foreign_group_prefixes
            .iter()
            .any(|p| group.starts_with(&**p))
        {
            return Err(claim_invalid(
                "the groups claim maps into another issuer's group names",
            ));
        }
        Ok(group)
    }
}

/// Every trusted issuer, looked up by exact `iss`.
#[derive(Debug)]
pub(crate) struct Issuers(pub(crate) Box<[IssuerTrust]>);

impl Issuers {
    /// The issuer whose URL is exactly `iss`.
    pub(crate) fn find(&self, iss: &str) -> Option<&IssuerTrust> {
        self.0.iter().find(|i| *i.url == *iss)
    }

    /// A number that grows whenever any issuer's key set is replaced: the
    /// sum of the current sets' ids. Each issuer's sets are built one
    /// after another, so each replacement brings a larger id and the sum
    /// only grows; the verification cache drops everything on a new one.
    pub(crate) fn generation(&self) -> u64 {
        self.0
            .iter()
            .map(|i| i.keys.current().id())
            .fold(0, u64::wrapping_add)
    }

    /// How many keys are in use now, over all issuers.
    pub(crate) fn key_count(&self) -> usize {
        self.0.iter().map(|i| i.keys.current().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names_are_parsed_strictly() {
        let ns = |u| service_account_namespace(u).map(|n| n.to_string());
        assert_eq!(
            ns("system:serviceaccount:tenant-a:ledger").as_deref(),
            Some("tenant-a")
        );
        assert_eq!(
            ns("system:serviceaccount:tenant-a:ledger.v2").as_deref(),
            Some("tenant-a")
        );
        for bad in [
            "system:serviceaccount:tenant-a",
            "system:serviceaccount::ledger",
            "system:serviceaccount:tenant-a:",
            "system:serviceaccount:tenant-a:ledger:x",
            "system:serviceaccount:Tenant-A:ledger",
            "system:serviceaccounts:tenant-a",
            "alice",
        ] {
            assert_eq!(ns(bad), None, "{bad}");
        }
    }
}
