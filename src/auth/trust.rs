//! From configured [`Issuer`]s to the checked [`IssuerTrust`]s the
//! verifier reads: default prefixes, the checks that keep issuers apart,
//! key loading, and the prefix fences between issuers.

use std::sync::Arc;

use super::config::AuthConfigError;
use super::issuer::{Issuer, IssuerTrust};
use super::key::JwtKey;
use super::key_set::{KeySet, KeySource};

/// The default username and groups prefix of an [`Issuer`]: the
/// apiserver's `<issuer URL>#`.
fn default_prefix(url: &str) -> String {
    format!("{url}#")
}

/// No issuer twice, no reserved prefix, and no two issuers whose users
/// (or groups) would be named alike.
pub(super) fn check_issuers_apart(issuers: &[Issuer]) -> Result<(), AuthConfigError> {
    let names = |i: &Issuer| {
        (
            i.username_prefix
                .clone()
                .unwrap_or_else(|| default_prefix(&i.url)),
            i.groups_prefix
                .clone()
                .unwrap_or_else(|| default_prefix(&i.url)),
        )
    };
    for (n, a) in issuers.iter().enumerate() {
        let (user_a, group_a) = names(a);
        if user_a.starts_with("system:") || group_a.starts_with("system:") {
            return Err(AuthConfigError::InvalidSetting(
                "a username or groups prefix must not start with system:",
            ));
        }
        for b in &issuers[n + 1..] {
            if a.url == b.url {
                return Err(AuthConfigError::InvalidSetting(
                    "an issuer is configured twice",
                ));
            }
            // Security: equal prefixes would make one issuer's `alice` (or
            // `treasury` group) the other's.
            let (user_b, group_b) = names(b);
            if user_a == user_b || group_a == group_b {
                return Err(AuthConfigError::InvalidSetting(
                    "two issuers have the same username or groups prefix, \
                     so their users or groups would share RBAC names",
                ));
            }
        }
    }
    Ok(())
}

/// Loads an issuer's keys (and starts watching its JWKS file).
pub(super) fn trust(issuer: Issuer) -> Result<IssuerTrust, AuthConfigError> {
    let username_prefix = issuer
        .username_prefix
        .unwrap_or_else(|| default_prefix(&issuer.url));
    let groups_prefix = issuer
        .groups_prefix
        .unwrap_or_else(|| default_prefix(&issuer.url));
    let keys = match issuer.jwks_file {
        None => KeySource::Static(Arc::new(KeySet::new(issuer.keys)?)),
        Some((path, options)) => {
            let fixed = Arc::new(issuer.keys);
            // The whole set (configured keys plus the file's) is built
            // and validated on the reload thread; a bad file never
            // replaces good keys.
            let watched = options
                .watch(&path, move |bytes: &[u8]| {
                    let mut keys = (*fixed).clone();
                    keys.extend(JwtKey::from_jwks(bytes)?);
                    KeySet::new(keys)
                })
                .map_err(AuthConfigError::JwksFile)?;
            KeySource::Watched(watched)
        }
    };
    Ok(IssuerTrust {
        url: issuer.url.into(),
        audiences: issuer.audiences.into_iter().map(Into::into).collect(),
        keys,
        username_prefix: username_prefix.into(),
        groups_prefix: groups_prefix.into(),
        allow_service_accounts: issuer.allow_service_accounts,
        foreign_user_prefixes: Box::default(),
        foreign_group_prefixes: Box::default(),
    })
}

/// Gives each issuer the longer prefixes of the others that start with its
/// own (`""` starts every prefix): names it must never produce.
pub(super) fn fence_prefixes(issuers: &mut [IssuerTrust]) {
    // Security: with a corporate issuer unprefixed and a partner under
    // `partner:`, a corporate token with `sub: "partner:alice"` would
    // otherwise be the partner's alice to RBAC. Names that fall into
    // another issuer's namespace are refused instead.
    fn foreign(all: &[Box<str>], own: usize) -> Box<[Box<str>]> {
        all.iter()
            .enumerate()
            .filter(|&(m, p)| m != own && p.len() > all[own].len() && p.starts_with(&*all[own]))
            .map(|(_, p)| p.clone())
            .collect()
    }
    let users: Vec<Box<str>> = issuers.iter().map(|i| i.username_prefix.clone()).collect();
    let groups: Vec<Box<str>> = issuers.iter().map(|i| i.groups_prefix.clone()).collect();
    for (n, issuer) in issuers.iter_mut().enumerate() {
        issuer.foreign_user_prefixes = foreign(&users, n);
        issuer.foreign_group_prefixes = foreign(&groups, n);
    }
}
