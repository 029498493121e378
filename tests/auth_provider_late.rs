//! jsonwebtoken fixes its crypto provider at first use. With both backends
//! compiled in (`--all-features`), a jsonwebtoken call made before any
//! layer is built locks in a provider that panics on every use; building a
//! layer then must fail with `NoCryptoProvider` instead of yielding a layer
//! that panics per request. One test per file: it needs a fresh process.
#![cfg(feature = "_jwt")]

use finmesh::auth::{Algorithm, AuthConfigError, JwtAuthLayer, JwtKey};
use jsonwebtoken::{EncodingKey, Header};

#[test]
fn using_jsonwebtoken_before_the_first_layer_is_a_build_error_with_both_backends() {
    let both = cfg!(all(feature = "auth", feature = "auth-rust-crypto"));
    let early = std::panic::catch_unwind(|| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "x"}),
            &EncodingKey::from_secret(&[1; 32]),
        )
    });
    // The premise: with both backends jsonwebtoken cannot choose; with one,
    // it can.
    assert_eq!(early.is_err(), both);

    let built = JwtAuthLayer::builder()
        .issuer("https://idp.test")
        .audience("api")
        .algorithms([Algorithm::HS256])
        .key(JwtKey::hmac([1; 32]).unwrap())
        .build();
    if both {
        let err = built.unwrap_err();
        assert!(matches!(err, AuthConfigError::NoCryptoProvider), "{err}");
        assert!(err.to_string().contains("install_default_crypto_provider"));
    } else {
        assert!(built.is_ok());
    }
}
