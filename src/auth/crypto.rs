//! The crypto backend signatures are verified with.
//!
//! jsonwebtoken chooses a process-wide default provider at first use, and
//! with both of its backends compiled in (finmesh's `auth` and
//! `auth-rust-crypto` features together) it cannot choose: its default
//! then panics on every use. So finmesh never asks for the default: it
//! verifies through the provider its features name — aws-lc-rs when `auth`
//! is on, else RustCrypto — whatever the process default is, or whether
//! there is one. Cargo features stay additive.

#[cfg(any(feature = "auth", feature = "auth-rust-crypto"))]
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
#[cfg(any(feature = "auth", feature = "auth-rust-crypto"))]
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey};

/// The provider finmesh verifies with: aws-lc-rs (several times faster for
/// RS256/ES256) when the `auth` feature is on, else RustCrypto.
#[cfg(feature = "auth")]
pub(crate) static PROVIDER: &CryptoProvider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
/// The provider finmesh verifies with: RustCrypto (`auth-rust-crypto`).
#[cfg(all(feature = "auth-rust-crypto", not(feature = "auth")))]
pub(crate) static PROVIDER: &CryptoProvider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;

/// Whether `signature` (base64url, the third segment of a JWS) is `key`'s
/// signature of `message` with `alg`.
#[cfg(any(feature = "auth", feature = "auth-rust-crypto"))]
pub(crate) fn verify_signature(
    signature: &str,
    message: &[u8],
    key: &DecodingKey,
    alg: Algorithm,
) -> bool {
    // What `jsonwebtoken::crypto::verify` does, minus the process default.
    let Ok(verifier) = (PROVIDER.verifier_factory)(&alg, key) else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    verifier.verify(message, &signature).is_ok()
}

/// Only the internal `_jwt` feature, no backend: the application brings
/// its own provider and installs it as jsonwebtoken's process default.
#[cfg(not(any(feature = "auth", feature = "auth-rust-crypto")))]
pub(crate) fn verify_signature(
    signature: &str,
    message: &[u8],
    key: &DecodingKey,
    alg: Algorithm,
) -> bool {
    matches!(
        jsonwebtoken::crypto::verify(signature, message, key, alg),
        Ok(true)
    )
}

/// Installs aws-lc-rs as jsonwebtoken's process default when both the
/// `auth` and `auth-rust-crypto` features are on and no provider is
/// installed yet; does nothing otherwise (the application's choice wins).
///
/// finmesh itself never needs this: it verifies through the provider its
/// features name, never through the process default. It is for code that
/// calls `jsonwebtoken` directly — minting tokens with
/// `jsonwebtoken::encode` in tests, say — in a build where both backends
/// are compiled in, where jsonwebtoken would otherwise panic.
/// [`JwtAuthBuilder::build`](super::JwtAuthBuilder::build) calls it, so
/// such code keeps working once a layer is built; call it yourself if you
/// use `jsonwebtoken` before that.
pub fn install_default_crypto_provider() {
    #[cfg(all(feature = "auth", feature = "auth-rust-crypto"))]
    {
        // `Err` means a provider is already installed: keep it.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    }
}

/// Signs `message` through [`PROVIDER`], never the process default: test
/// tokens that do not depend on what the process installed.
#[cfg(all(test, any(feature = "auth", feature = "auth-rust-crypto")))]
pub(crate) fn sign(message: &[u8], key: &jsonwebtoken::EncodingKey, alg: Algorithm) -> String {
    let signer = (PROVIDER.signer_factory)(&alg, key).expect("a signer for the algorithm");
    URL_SAFE_NO_PAD.encode(signer.sign(message))
}

/// Makes jsonwebtoken's process default a provider that panics on every
/// use, once per test process. In unit tests
/// [`JwtAuthBuilder::build`](super::JwtAuthBuilder::build) calls this
/// before anything else, and the unit tests sign through [`sign`], so
/// nothing installs another default first: every auth unit test runs with
/// a process default that panics, which proves verification never uses it.
#[cfg(test)]
pub(crate) fn panicking_process_default() {
    use jsonwebtoken::crypto::{CryptoProvider, KeyUtils};
    static PANICS: CryptoProvider = CryptoProvider {
        signer_factory: |_, _| panic!("finmesh signed through jsonwebtoken's process default"),
        verifier_factory: |_, _| panic!("finmesh verified through jsonwebtoken's process default"),
        key_utils: KeyUtils::new_unimplemented(),
    };
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        assert!(
            PANICS.install_default().is_ok(),
            "something installed jsonwebtoken's process default before the auth unit tests"
        );
    });
}

#[cfg(all(test, any(feature = "auth", feature = "auth-rust-crypto")))]
mod tests {
    use super::*;
    use crate::auth::{AuthCode, JwtAuthLayer, JwtKey};

    const RSA_PUB: &str = include_str!("../../tests/keys/rsa-public.pem");
    const RSA_PRIV: &str = include_str!("../../tests/keys/rsa-private.pem");
    const EC_PUB: &str = include_str!("../../tests/keys/ec256-public.pem");
    const EC_PRIV: &str = include_str!("../../tests/keys/ec256-private.pem");
    const SECRET: &[u8] = b"an HMAC secret of at least 32 bytes!";

    fn token(alg: Algorithm, key: &jsonwebtoken::EncodingKey) -> String {
        let exp = crate::auth::verify::unix_now() + 60;
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg:?}","typ":"JWT"}}"#));
        let claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iss":"https://idp.test","aud":"api","sub":"alice","exp":{exp}}}"#
        ));
        let message = format!("{header}.{claims}");
        let signature = sign(message.as_bytes(), key, alg);
        format!("{message}.{signature}")
    }

    #[test]
    fn tokens_verify_while_the_process_default_panics() {
        panicking_process_default();
        // The premise: the process default is unusable.
        let probe = std::panic::catch_unwind(|| {
            jsonwebtoken::crypto::verify(
                "AA",
                b"m",
                &DecodingKey::from_secret(SECRET),
                Algorithm::HS256,
            )
        });
        assert!(probe.is_err(), "the process default must panic here");

        let layer = JwtAuthLayer::builder()
            .issuer("https://idp.test")
            .audience("api")
            .algorithms([Algorithm::HS256, Algorithm::RS256, Algorithm::ES256])
            .key(JwtKey::hmac(SECRET).unwrap())
            .key(JwtKey::rsa_pem(RSA_PUB).unwrap())
            .key(JwtKey::ec_pem(EC_PUB).unwrap())
            .cache_capacity(0)
            .build()
            .unwrap();
        for (alg, key) in [
            (
                Algorithm::HS256,
                jsonwebtoken::EncodingKey::from_secret(SECRET),
            ),
            (
                Algorithm::RS256,
                jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
            ),
            (
                Algorithm::ES256,
                jsonwebtoken::EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap(),
            ),
        ] {
            let token = token(alg, &key);
            let principal = layer.verify_token(&token).unwrap();
            assert_eq!(&*principal.subject, "alice", "{alg:?}");
            // And a wrong signature is still refused.
            let forged = format!("{}AAAA", &token[..token.rfind('.').unwrap() + 1]);
            assert_eq!(
                layer.verify_token(&forged).unwrap_err().code(),
                AuthCode::Invalid.as_str(),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn the_provider_follows_the_features() {
        #[cfg(feature = "auth")]
        let expected: &CryptoProvider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
        #[cfg(not(feature = "auth"))]
        let expected: &CryptoProvider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
        assert!(std::ptr::eq(PROVIDER, expected));
    }
}
