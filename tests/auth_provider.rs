//! With both crypto backends compiled in (`--all-features`), jsonwebtoken
//! has no default provider and panics at first use; building a
//! `JwtAuthLayer` installs the aws-lc-rs one. This file holds a single test
//! so that it runs in its own process, where nothing has installed a
//! provider before it.
#![cfg(feature = "_jwt")]

use std::time::{SystemTime, UNIX_EPOCH};

use finmesh::auth::{Algorithm, JwtAuthLayer, JwtKey};
use jsonwebtoken::{EncodingKey, Header};

const RSA_PUB: &str = include_str!("keys/rsa-public.pem");
const RSA_PRIV: &str = include_str!("keys/rsa-private.pem");
const EC_PUB: &str = include_str!("keys/ec256-public.pem");
const EC_PRIV: &str = include_str!("keys/ec256-private.pem");

#[test]
fn building_the_layer_installs_a_crypto_provider_when_both_backends_are_enabled() {
    let layer = JwtAuthLayer::builder()
        .issuer("https://idp.test")
        .audience("api")
        .key(JwtKey::rsa_pem(RSA_PUB).unwrap())
        .key(JwtKey::ec_pem(EC_PUB).unwrap())
        .build()
        .unwrap();
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let claims =
        serde_json::json!({"iss": "https://idp.test", "aud": "api", "sub": "alice", "exp": exp});
    for (alg, key) in [
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap(),
        ),
    ] {
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap();
        let principal = layer.verify_token(&token).unwrap();
        assert_eq!(&*principal.subject, "alice", "{alg:?}");
    }
}
