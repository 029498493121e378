//! Policy loaders: the tenants file and JWKS documents. (RBAC manifests
//! have their own module, with a reference authorizer.)

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use finmesh::auth::{Algorithm, JwtAuthLayer, JwtKey, KeyFamily};
use finmesh::tenant::{StaticTenants, Tenant};
use serde_json::Value;

/// The tenants file: a document that loads round-trips through its JSON
/// form (JSON is YAML) to the same tenants, and every loaded tenant is
/// unique by namespace.
pub fn tenants_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tenants = match StaticTenants::from_yaml(text) {
        Ok(t) => t,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    let list = tenants.tenants();
    assert_eq!(list.len(), tenants.len());
    let by_ns: BTreeMap<String, &Tenant> =
        list.iter().map(|t| (t.namespace.to_string(), t)).collect();
    assert_eq!(by_ns.len(), list.len(), "a namespace loaded twice");
    for (ns, t) in &by_ns {
        assert_eq!(tenants.get(ns.as_str()).as_ref(), Some(*t));
    }
    let json = serde_json::json!({ "tenants": by_ns.values().collect::<Vec<_>>() });
    let again = StaticTenants::from_yaml(&json.to_string())
        .unwrap_or_else(|e| panic!("the JSON form of a loaded file does not load: {e}\n{json}"));
    let again: BTreeMap<String, Tenant> = again
        .tenants()
        .into_iter()
        .map(|t| (t.namespace.to_string(), t))
        .collect();
    assert_eq!(again.len(), by_ns.len());
    for (ns, t) in &by_ns {
        assert_eq!(again.get(ns), Some(*t), "{ns}");
    }
}

/// Base64url without padding, as JWKS writes it; `None` if not.
fn b64url(s: &str) -> Option<Vec<u8>> {
    // Leftover bits must be zero padding of a valid length.
    super::b64url_bits(s).and_then(|(out, clean)| (clean && s.len() % 4 != 1).then_some(out))
}

/// JWKS documents: what loads is consistent with the document (kids,
/// families, `alg` bindings), and an `oct` key that loads verifies a token
/// signed with its secret through a `JwtAuthLayer` built from the same
/// document.
pub fn jwks(data: &[u8]) {
    let Ok(keys) = JwtKey::from_jwks(data) else {
        return;
    };
    assert!(!keys.is_empty());
    let doc: Value = serde_json::from_slice(data).unwrap();
    let jwks = doc["keys"].as_array().unwrap();
    assert!(keys.len() <= jwks.len());
    // Every loaded key comes from a JWK with its kid and a matching kty.
    for key in &keys {
        let from = jwks.iter().any(|jwk| {
            let kid_ok = jwk.get("kid").and_then(Value::as_str) == key.kid();
            let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
            let kty_ok = matches!(
                (kty, key.family()),
                ("RSA", KeyFamily::Rsa)
                    | ("EC", KeyFamily::EcP256 | KeyFamily::EcP384)
                    | ("OKP", KeyFamily::Ed25519)
                    | ("oct", KeyFamily::Hmac)
            );
            kid_ok && kty_ok
        });
        assert!(from, "{key:?} does not come from the document");
    }
    // The HMAC keys: sign with the secret, verify through the layer.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for jwk in jwks {
        if jwk.get("kty").and_then(Value::as_str) != Some("oct")
            || jwk
                .get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let Some(secret) = jwk.get("k").and_then(Value::as_str).and_then(b64url) else {
            continue;
        };
        let alg = match jwk.get("alg").and_then(Value::as_str) {
            None => Algorithm::HS256,
            Some("HS256") => Algorithm::HS256,
            Some("HS384") => Algorithm::HS384,
            Some("HS512") => Algorithm::HS512,
            Some(_) => continue,
        };
        let kid = jwk.get("kid").and_then(Value::as_str);
        // Only unambiguous keys: one per kid (or the only HMAC key).
        let same = keys
            .iter()
            .filter(|k| k.family() == KeyFamily::Hmac && k.kid() == kid)
            .count();
        let hmac = keys
            .iter()
            .filter(|k| k.family() == KeyFamily::Hmac)
            .count();
        if secret.len() < finmesh::auth::MIN_HMAC_SECRET_LEN
            || same != 1
            || (kid.is_none() && hmac != 1)
        {
            continue;
        }
        let Ok(layer) = JwtAuthLayer::builder()
            .issuer("https://idp.fuzz")
            .audience("fuzz")
            .algorithms([alg])
            .jwks(data)
            .build()
        else {
            continue;
        };
        finmesh::auth::install_default_crypto_provider();
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let claims = serde_json::json!({
            "iss": "https://idp.fuzz", "aud": "fuzz", "sub": "alice", "exp": now + 600,
        });
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        // A kid long enough to push the token over the size limit is
        // refused before any key is looked at, rightly.
        if token.len() > finmesh::auth::DEFAULT_MAX_TOKEN_LEN {
            continue;
        }
        let verified = layer.verify_token(&token);
        assert!(
            verified.is_ok(),
            "a token signed with the JWKS oct key {kid:?} is refused: {verified:?}"
        );
    }
}
