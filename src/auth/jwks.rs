//! JWKS documents (RFC 7517): a strict walk over the parsed JSON that
//! keeps the signature keys we can use and skips the rest.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::algorithm::{KeyFamily, algorithm_from_name};
use super::key::{JwtKey, KeyError};

impl JwtKey {
    /// Parses a JWKS document (RFC 7517 `{"keys": [...]}`) into keys.
    ///
    /// Supported: `RSA`, `EC` on P-256/P-384, `OKP` Ed25519, and `oct`
    /// secrets of at least 32 bytes. A key's `kid` and `alg` are honoured
    /// (`alg` binds it to that algorithm). Keys whose `use` is not `sig`,
    /// whose `alg` is not a signature algorithm, or whose type or curve is
    /// not supported (P-521, Ed448, …) are skipped: identity providers
    /// publish such keys alongside signing keys. A malformed supported key,
    /// or a document with no usable key, is an error.
    pub fn from_jwks(document: &[u8]) -> Result<Vec<Self>, KeyError> {
        let doc: Value = serde_json::from_slice(document)
            .map_err(|e| KeyError::InvalidJwks(format!("not JSON: {e}")))?;
        let keys = doc
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or_else(|| KeyError::InvalidJwks("no \"keys\" array".into()))?;
        let mut out = Vec::with_capacity(keys.len());
        for (i, jwk) in keys.iter().enumerate() {
            if let Some(key) =
                jwk_to_key(jwk).map_err(|e| KeyError::InvalidJwks(format!("keys[{i}]: {e}")))?
            {
                out.push(key);
            }
        }
        if out.is_empty() {
            return Err(KeyError::InvalidJwks(
                "no supported signature key in the document".into(),
            ));
        }
        Ok(out)
    }
}

fn b64_field(jwk: &Value, name: &str, want_len: Option<usize>) -> Result<Vec<u8>, String> {
    let s = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string parameter {name:?}"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("parameter {name:?} is not base64url"))?;
    if let Some(want) = want_len
        && bytes.len() != want
    {
        return Err(format!(
            "parameter {name:?} is {} bytes, expected {want}",
            bytes.len()
        ));
    }
    if bytes.is_empty() {
        return Err(format!("parameter {name:?} is empty"));
    }
    Ok(bytes)
}

/// One JWK to a key; `Ok(None)` for a key that is legitimately not ours to
/// use (encryption keys, unsupported types).
fn jwk_to_key(jwk: &Value) -> Result<Option<JwtKey>, String> {
    let Some(obj) = jwk.as_object() else {
        return Err("not a JSON object".into());
    };
    let str_param = |name: &str| -> Result<Option<&str>, String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("parameter {name:?} is not a string")),
        }
    };
    if str_param("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = match str_param("alg")? {
        None => None,
        Some(name) => match algorithm_from_name(name) {
            Some(alg) => Some(alg),
            // An encryption algorithm (RSA-OAEP, ECDH-ES, …) or one we do
            // not verify: not a signing key for us.
            None => return Ok(None),
        },
    };
    let kid = str_param("kid")?;
    let kty = str_param("kty")?.ok_or("missing \"kty\"")?;
    let key = match kty {
        "RSA" => {
            let n = b64_field(jwk, "n", None)?;
            let e = b64_field(jwk, "e", None)?;
            JwtKey::new(KeyFamily::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (family, len) = match str_param("crv")?.ok_or("missing \"crv\"")? {
                "P-256" => (KeyFamily::EcP256, 32),
                "P-384" => (KeyFamily::EcP384, 48),
                _ => return Ok(None),
            };
            let x = b64_field(jwk, "x", Some(len))?;
            let y = b64_field(jwk, "y", Some(len))?;
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            JwtKey::new(family, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            if str_param("crv")?.ok_or("missing \"crv\"")? != "Ed25519" {
                return Ok(None);
            }
            let x = b64_field(jwk, "x", Some(32))?;
            JwtKey::new(KeyFamily::Ed25519, DecodingKey::from_ed_der(&x))
        }
        "oct" => JwtKey::hmac(b64_field(jwk, "k", None)?).map_err(|e| e.to_string())?,
        _ => return Ok(None),
    };
    let key = match kid {
        Some(kid) => key.with_kid(kid),
        None => key,
    };
    match alg {
        Some(alg) => key.restrict_to(alg).map(Some).map_err(|e| e.to_string()),
        None => Ok(Some(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm;

    #[test]
    fn jwks_skips_foreign_keys_and_binds_alg() {
        let doc = br#"{"keys":[
            {"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"},
            {"kty":"EC","crv":"P-521","x":"AA","y":"AA"},
            {"kty":"OKP","crv":"Ed448","x":"AA"},
            {"kty":"oct","kid":"h","alg":"HS384","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
        ]}"#;
        let keys = JwtKey::from_jwks(doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), Some("h"));
        assert!(keys[0].allows(Algorithm::HS384) && !keys[0].allows(Algorithm::HS256));
    }

    #[test]
    fn jwks_refuses_malformed_documents() {
        for doc in [
            &b"[]"[..],
            b"{}",
            b"{\"keys\":{}}",
            b"{\"keys\":[]}",
            b"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}]}",
            b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}",
            b"{\"keys\":[{\"kty\":\"RSA\",\"alg\":\"ES256\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
            b"{\"keys\":[{\"kty\":\"RSA\",\"kid\":7,\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
            b"{\"keys\":[5]}",
            b"not json",
        ] {
            assert!(
                JwtKey::from_jwks(doc).is_err(),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }
}
