//! jsonwebtoken fixes its process-wide crypto provider at first use. With
//! both backends compiled in (`--all-features`), a jsonwebtoken call made
//! before any layer is built locks in a placeholder that panics on every
//! use. finmesh never verifies through that default, so a layer built then
//! still verifies, with no setup call. One test per file: it needs a fresh
//! process, where nothing has installed a provider before it.
#![cfg(feature = "_jwt")]
#![cfg(any(feature = "auth", feature = "auth-rust-crypto"))]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use finmesh::auth::{Algorithm, AuthCode, JwtAuthLayer, JwtKey};
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{DecodingKey, EncodingKey, Header};

const RSA_PUB: &str = include_str!("keys/rsa-public.pem");
const RSA_PRIV: &str = include_str!("keys/rsa-private.pem");
const EC_PUB: &str = include_str!("keys/ec256-public.pem");
const EC_PRIV: &str = include_str!("keys/ec256-private.pem");
const SECRET: &[u8] = b"an HMAC secret of at least 32 bytes!";

/// A provider named explicitly, so that signing does not depend on the
/// process default either.
#[cfg(feature = "auth-rust-crypto")]
static SIGNER: &CryptoProvider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
#[cfg(not(feature = "auth-rust-crypto"))]
static SIGNER: &CryptoProvider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Header::new(alg)).unwrap());
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"iss": "https://idp.test", "aud": "api", "sub": "alice", "exp": exp})
            .to_string(),
    );
    let message = format!("{header}.{claims}");
    let signer = (SIGNER.signer_factory)(&alg, key).unwrap();
    let signature = URL_SAFE_NO_PAD.encode(signer.try_sign(message.as_bytes()).unwrap());
    format!("{message}.{signature}")
}

#[test]
fn a_layer_verifies_even_when_jsonwebtoken_has_no_usable_default_provider() {
    let both = cfg!(all(feature = "auth", feature = "auth-rust-crypto"));
    // Lock the process default: with both backends, jsonwebtoken cannot
    // choose and its placeholder panics; with one, it picks that one.
    let early = std::panic::catch_unwind(|| {
        jsonwebtoken::crypto::verify(
            "AA",
            b"probe",
            &DecodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
    });
    assert_eq!(early.is_err(), both);

    let layer = JwtAuthLayer::builder()
        .issuer("https://idp.test")
        .audience("api")
        .algorithms([Algorithm::HS256, Algorithm::RS256, Algorithm::ES256])
        .key(JwtKey::hmac(SECRET).unwrap())
        .key(JwtKey::rsa_pem(RSA_PUB).unwrap())
        .key(JwtKey::ec_pem(EC_PUB).unwrap())
        .build()
        .unwrap();
    for (alg, key) in [
        (Algorithm::HS256, EncodingKey::from_secret(SECRET)),
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap(),
        ),
    ] {
        let token = token(alg, &key);
        let principal = layer.verify_token(&token).unwrap();
        assert_eq!(&*principal.subject, "alice", "{alg:?}");
        let forged = format!("{}AAAA", &token[..=token.rfind('.').unwrap()]);
        assert_eq!(
            layer.verify_token(&forged).unwrap_err().code(),
            AuthCode::Invalid.as_str(),
            "{alg:?}"
        );
    }
    // The placeholder is still the process default: the layer did not
    // need to replace it.
    let after = std::panic::catch_unwind(|| {
        jsonwebtoken::crypto::verify(
            "AA",
            b"probe",
            &DecodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
    });
    assert_eq!(after.is_err(), both);
}
