//! SPIFFE IDs and X.509-SVIDs (issue 18): `SpiffeId::parse` and
//! `PeerIdentity::from_der`.

use finmesh::identity::{PeerIdentity, SpiffeId, TrustDomains};

/// `SpiffeId::parse` on arbitrary text and `PeerIdentity::from_der` on
/// arbitrary bytes: never panic; an ID that parses prints as itself,
/// re-parses to the same parts, and its service account (if any) is made
/// of its own path segments; a certificate that yields an identity has an
/// ID that parses on its own and passes an allowlist of its own domain.
pub fn spiffe_identity(data: &[u8]) {
    let (first, rest) = match data.split_first() {
        Some((b, rest)) => (*b, rest),
        None => return,
    };
    if first & 1 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok(id) = SpiffeId::parse(text) {
            assert_eq!(id.to_string(), text);
            assert_eq!(id.as_str(), text);
            let again = SpiffeId::parse(&id.to_string()).expect("a parsed ID re-parses");
            assert_eq!(again.trust_domain(), id.trust_domain());
            assert_eq!(again.path(), id.path());
            assert!(!id.trust_domain().is_empty());
            assert!(id.path().is_empty() || id.path().starts_with('/'));
            if let Some((ns, sa)) = id.service_account() {
                assert_eq!(id.path(), format!("/ns/{ns}/sa/{sa}"));
            }
        }
    } else if let Ok(peer) = PeerIdentity::from_der(rest) {
        let id = &peer.spiffe_id;
        let parsed = SpiffeId::parse(id.as_str()).expect("a certificate's ID parses");
        assert_eq!(parsed.trust_domain(), peer.trust_domain());
        let own = TrustDomains::new([peer.trust_domain()]).expect("its own domain is valid");
        assert!(own.identify(rest).is_ok(), "its own trust domain admits it");
    }
}
