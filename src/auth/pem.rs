//! Public keys from PEM: RSA, EC P-256 / P-384 and Ed25519. Private keys
//! are refused.

use jsonwebtoken::DecodingKey;

use super::algorithm::KeyFamily;
use super::key::{JwtKey, KeyError};

impl JwtKey {
    /// An RSA public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`) for
    /// RS256/384/512 and PS256/384/512.
    pub fn rsa_pem(pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let pem = pem.as_ref();
        refuse_private(pem)?;
        let key = DecodingKey::from_rsa_pem(pem).map_err(pem_error(KeyFamily::Rsa))?;
        Ok(Self::new(KeyFamily::Rsa, key))
    }

    /// An EC public key (`BEGIN PUBLIC KEY`) on P-256 (for ES256) or P-384
    /// (for ES384); the curve is read from the key.
    pub fn ec_pem(pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let pem = pem.as_ref();
        refuse_private(pem)?;
        let key = DecodingKey::from_ec_pem(pem).map_err(pem_error(KeyFamily::EcP256))?;
        let family = ec_family(key.try_get_as_bytes().unwrap_or_default()).ok_or_else(|| {
            KeyError::InvalidPem {
                family: KeyFamily::EcP256,
                reason: "only uncompressed P-256 and P-384 points are supported".into(),
            }
        })?;
        Ok(Self::new(family, key))
    }

    /// An Ed25519 public key (`BEGIN PUBLIC KEY`) for EdDSA.
    pub fn ed25519_pem(pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let pem = pem.as_ref();
        refuse_private(pem)?;
        let key = DecodingKey::from_ed_pem(pem).map_err(pem_error(KeyFamily::Ed25519))?;
        if key.try_get_as_bytes().map(<[u8]>::len).unwrap_or_default() != 32 {
            return Err(KeyError::InvalidPem {
                family: KeyFamily::Ed25519,
                reason: "not a 32-byte Ed25519 key".into(),
            });
        }
        Ok(Self::new(KeyFamily::Ed25519, key))
    }
}

fn refuse_private(pem: &[u8]) -> Result<(), KeyError> {
    // A private key in a verifier's configuration is a leak waiting to
    // happen (and, for RSA, jsonwebtoken would quietly accept it).
    if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
        return Err(KeyError::PrivateKey);
    }
    Ok(())
}

fn pem_error(family: KeyFamily) -> impl Fn(jsonwebtoken::errors::Error) -> KeyError {
    move |e| KeyError::InvalidPem {
        family,
        reason: e.to_string(),
    }
}

fn ec_family(point: &[u8]) -> Option<KeyFamily> {
    // Uncompressed SEC1 points: 0x04 || x || y.
    match (point.first(), point.len()) {
        (Some(4), 65) => Some(KeyFamily::EcP256),
        (Some(4), 97) => Some(KeyFamily::EcP384),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm;

    const RSA_PUB: &str = include_str!("../../tests/keys/rsa-public.pem");
    const RSA_PRIV: &str = include_str!("../../tests/keys/rsa-private.pem");
    const EC256_PUB: &str = include_str!("../../tests/keys/ec256-public.pem");
    const EC384_PUB: &str = include_str!("../../tests/keys/ec384-public.pem");
    const ED_PUB: &str = include_str!("../../tests/keys/ed25519-public.pem");

    #[test]
    fn pem_keys_are_bound_to_their_family() {
        assert_eq!(JwtKey::rsa_pem(RSA_PUB).unwrap().family(), KeyFamily::Rsa);
        assert_eq!(
            JwtKey::ec_pem(EC256_PUB).unwrap().family(),
            KeyFamily::EcP256
        );
        assert_eq!(
            JwtKey::ec_pem(EC384_PUB).unwrap().family(),
            KeyFamily::EcP384
        );
        assert_eq!(
            JwtKey::ed25519_pem(ED_PUB).unwrap().family(),
            KeyFamily::Ed25519
        );
        let ec = JwtKey::ec_pem(EC256_PUB).unwrap();
        assert!(ec.allows(Algorithm::ES256));
        assert!(!ec.allows(Algorithm::ES384));
        assert!(!ec.allows(Algorithm::HS256));
        let rsa = JwtKey::rsa_pem(RSA_PUB).unwrap();
        assert!(rsa.allows(Algorithm::PS256) && !rsa.allows(Algorithm::HS256));
    }

    #[test]
    fn wrong_or_private_pem_is_refused() {
        assert_eq!(JwtKey::rsa_pem(RSA_PRIV).unwrap_err(), KeyError::PrivateKey);
        assert!(JwtKey::ec_pem(RSA_PUB).is_err());
        assert!(JwtKey::ed25519_pem(EC256_PUB).is_err());
        assert!(JwtKey::rsa_pem("not a pem").is_err());
        assert!(matches!(
            JwtKey::hmac([0u8; 31]),
            Err(KeyError::HmacSecretTooShort { len: 31 })
        ));
    }
}
