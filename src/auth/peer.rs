//! The connection's verified peer in authentication (the `mtls` feature):
//! kept beside the token's user, or — opt-in — the ServiceAccount the
//! caller is when it sends no token.

use http::Request;

use super::AuthCode;
use super::config::Settings;
use super::verify::Refusal;
use crate::identity::PeerIdentity;
use crate::principal::Principal;
use crate::tenant::TenantNamespace;

const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// Adds the request's [`PeerIdentity`] to the outcome of token
/// verification.
///
/// - a verified token: its principal, with the peer's SPIFFE ID beside it;
/// - no bearer token, a peer `spiffe://<td>/ns/<ns>/sa/<name>` with `<td>`
///   a home trust domain, and `service_accounts_from_peer`: that
///   ServiceAccount;
/// - anything else: unchanged.
pub(super) fn with_peer<B>(
    verified: Result<Principal, Refusal>,
    req: &Request<B>,
    settings: &Settings,
) -> Result<Principal, Refusal> {
    let Some(peer) = req.extensions().get::<PeerIdentity>() else {
        return verified;
    };
    match verified {
        // Security: a token names the user; the peer only says which
        // workload carried the call, and never widens what the token
        // allows.
        Ok(mut principal) => {
            principal.peer = Some(peer.spiffe_id.shared());
            Ok(principal)
        }
        // Security: only when no bearer token was presented at all; a
        // token that fails verification is never replaced by the peer.
        Err(refusal)
            if refusal.code == AuthCode::Missing && settings.service_accounts_from_peer =>
        {
            // Security: the trust bundle is shared by every allowed trust
            // domain, so a partner's CA can sign `…/ns/tenant-a/sa/…`;
            // only a home trust domain's peer is a ServiceAccount.
            let home = settings
                .service_account_trust_domains
                .iter()
                .any(|td| td.eq_ignore_ascii_case(peer.trust_domain()));
            home.then(|| service_account(peer)).flatten().ok_or(refusal)
        }
        Err(refusal) => Err(refusal),
    }
}

/// The ServiceAccount `system:serviceaccount:<ns>:<name>` of a peer whose
/// SPIFFE path is `/ns/<ns>/sa/<name>`, as the apiserver names it.
pub(super) fn service_account(peer: &PeerIdentity) -> Option<Principal> {
    let (ns, name) = peer.service_account()?;
    let tenant = TenantNamespace::parse(ns).ok()?;
    let mut principal = Principal::new(
        format!("system:serviceaccount:{ns}:{name}"),
        format!("spiffe://{}", peer.trust_domain()),
    )
    .with_groups([
        SERVICE_ACCOUNTS_GROUP.to_owned(),
        format!("{SERVICE_ACCOUNTS_GROUP}:{ns}"),
    ])
    .with_tenant(tenant)
    .with_peer(peer.spiffe_id.shared());
    principal.expires_at = peer.not_after;
    Some(principal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SpiffeId;

    fn peer(id: &str) -> PeerIdentity {
        PeerIdentity::new(SpiffeId::parse(id).unwrap())
    }

    #[test]
    fn service_accounts_need_a_home_trust_domain() {
        use crate::auth::{Algorithm, JwtAuthLayer, JwtKey};
        let builder = || {
            JwtAuthLayer::builder()
                .issuer("https://issuer.example")
                .audience("finmesh")
                .algorithms([Algorithm::HS256])
                .key(JwtKey::hmac(b"a-unit-test-secret-of-32-bytes-or-more").unwrap())
        };
        assert!(builder().service_accounts_from_peer(true).build().is_err());
        assert!(
            builder()
                .service_accounts_from_peer_in(["finmesh.demo"])
                .build()
                .is_ok()
        );
        assert!(builder().service_accounts_from_peer(false).build().is_ok());
    }

    #[test]
    fn istio_paths_become_service_accounts() {
        let p =
            service_account(&peer("spiffe://finmesh.demo/ns/tenant-a/sa/ledger-reader")).unwrap();
        assert_eq!(&*p.subject, "system:serviceaccount:tenant-a:ledger-reader");
        assert!(p.in_group("system:serviceaccounts"));
        assert!(p.in_group("system:serviceaccounts:tenant-a"));
        assert_eq!(p.tenant.unwrap().as_str(), "tenant-a");
        assert_eq!(&*p.issuer, "spiffe://finmesh.demo");
        assert_eq!(
            p.peer.as_deref(),
            Some("spiffe://finmesh.demo/ns/tenant-a/sa/ledger-reader")
        );
        for other in [
            "spiffe://finmesh.demo/workload/x",
            "spiffe://finmesh.demo/ns/tenant-a/sa/x/y",
            "spiffe://finmesh.demo/ns/Tenant-A/sa/x",
        ] {
            assert!(service_account(&peer(other)).is_none(), "{other}");
        }
    }
}
