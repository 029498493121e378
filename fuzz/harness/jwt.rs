//! JWT verification through `JwtAuthLayer::authenticate` (the layer's own
//! header handling, pre-checks and verification) on arbitrary
//! `Authorization` values and on tokens signed with the layer's keys.
//!
//! Property: the layer never accepts a token that an independent check —
//! jsonwebtoken's signature verification with the same key, and the claim
//! rules written out below, both more lenient than finmesh's — refuses.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::Unstructured;
use finmesh::auth::{Algorithm, DEFAULT_LEEWAY, JwtAuthLayer, JwtKey};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{Value, json};

const ISS: &str = "https://idp.fuzz";
const AUD: &str = "fuzz";
const SECRET: &[u8] = b"fuzz-only-hmac-secret-0123456789abcdef";
// Test-only keys (tests/keys/README.md).
const EC_PUB: &str = include_str!("../../tests/keys/ec256-public.pem");
const EC_PRIV: &str = include_str!("../../tests/keys/ec256-private.pem");

fn layer() -> &'static JwtAuthLayer {
    static LAYER: OnceLock<JwtAuthLayer> = OnceLock::new();
    LAYER.get_or_init(|| {
        finmesh::auth::install_default_crypto_provider();
        JwtAuthLayer::builder()
            .issuer(ISS)
            .audience(AUD)
            .algorithms([Algorithm::HS256, Algorithm::ES256])
            .key(JwtKey::hmac(SECRET).unwrap().with_kid("hs"))
            .key(JwtKey::ec_pem(EC_PUB).unwrap().with_kid("es"))
            .tenant_claim("tenant")
            .build()
            .unwrap()
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Base64url without padding, leniently: leftover bits are ignored, as
/// some JWT libraries do. The reference must not be stricter than finmesh.
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    super::b64url_bits(s).map(|(out, _)| out)
}

/// The independent check: a compact JWS whose header names HS256 or
/// ES256, whose signature jsonwebtoken verifies with the configured key,
/// and whose claims pass the registered-claim rules with a little more
/// leeway than the layer's. Returns the claims.
fn reference(token: &str) -> Result<Value, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not three segments".into());
    };
    let header: Value = serde_json::from_slice(&b64url_decode(h).ok_or("header b64")?)
        .map_err(|e| format!("header: {e}"))?;
    let (alg, key) = match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => (Algorithm::HS256, DecodingKey::from_secret(SECRET)),
        Some("ES256") => (
            Algorithm::ES256,
            DecodingKey::from_ec_pem(EC_PUB.as_bytes()).unwrap(),
        ),
        other => return Err(format!("alg {other:?}")),
    };
    let message = &token[..h.len() + 1 + c.len()];
    if !jsonwebtoken::crypto::verify(sig, message.as_bytes(), &key, alg).unwrap_or(false) {
        return Err("signature".into());
    }
    let claims: Value = serde_json::from_slice(&b64url_decode(c).ok_or("claims b64")?)
        .map_err(|e| format!("claims: {e}"))?;
    let leeway = DEFAULT_LEEWAY.as_secs() as i64 + 5;
    let now = now();
    if claims.get("iss").and_then(Value::as_str) != Some(ISS) {
        return Err("iss".into());
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUD,
        Some(Value::Array(a)) => a.iter().any(|a| a.as_str() == Some(AUD)),
        _ => false,
    };
    if !aud_ok {
        return Err("aud".into());
    }
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp.saturating_add(leeway) >= now => {}
        _ => return Err("exp".into()),
    }
    if let Some(nbf) = claims.get("nbf")
        && nbf
            .as_i64()
            .is_none_or(|nbf| nbf > now.saturating_add(leeway))
    {
        return Err("nbf".into());
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("sub".into());
    }
    Ok(claims)
}

fn check(headers: &HeaderMap) {
    let Ok(principal) = layer().authenticate(headers) else {
        return;
    };
    let values: Vec<_> = headers.get_all("authorization").iter().collect();
    assert_eq!(
        values.len(),
        1,
        "accepted with {} Authorization headers",
        values.len()
    );
    let value = values[0]
        .to_str()
        .expect("accepted a non-text Authorization");
    let (scheme, token) = value.split_at(value.find(' ').expect("no scheme"));
    assert!(scheme.eq_ignore_ascii_case("bearer"), "{value:?}");
    let token = token.trim_start_matches(' ');
    let claims = reference(token)
        .unwrap_or_else(|why| panic!("accepted a token the reference refuses ({why}): {token}"));
    assert_eq!(claims["sub"].as_str(), Some(&*principal.subject));
    // Verifying the same token again (from the cache) gives the same principal.
    assert_eq!(layer().verify_token(token).ok().as_ref(), Some(&principal));
}

fn sign(header: &[u8], claims: &[u8], es256: bool) -> String {
    let message = format!("{}.{}", b64url(header), b64url(claims));
    let sig = if es256 {
        let key = EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap();
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).unwrap()
    } else {
        let key = EncodingKey::from_secret(SECRET);
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap()
    };
    format!("{message}.{sig}")
}

fn pick<'a, T>(u: &mut Unstructured<'_>, options: &'a [T]) -> &'a T {
    u.choose(options).unwrap_or(&options[0])
}

/// A claims value from the fuzzer: mostly near-valid, with each claim
/// replaced by something odd now and then.
fn claims(u: &mut Unstructured<'_>) -> Value {
    let now = now();
    let odd = |u: &mut Unstructured<'_>| -> Value {
        match u.int_in_range(0..=7u8).unwrap_or(0) {
            0 => Value::Null,
            1 => json!(u.arbitrary::<i64>().unwrap_or(0)),
            2 => json!(u.arbitrary::<f64>().unwrap_or(0.5)),
            3 => json!(u.arbitrary::<String>().unwrap_or_default()),
            4 => json!([u.arbitrary::<String>().unwrap_or_default()]),
            5 => json!({}),
            6 => json!(true),
            _ => json!(-1),
        }
    };
    let mut c = serde_json::Map::new();
    let mut set = |u: &mut Unstructured<'_>, k: &str, normal: Value| match u
        .int_in_range(0..=9u8)
        .unwrap_or(0)
    {
        0 => {}
        1 => {
            c.insert(k.into(), odd(u));
        }
        _ => {
            c.insert(k.into(), normal);
        }
    };
    let iss = pick(u, &[ISS, "https://idp.fuzz/", "https://other.fuzz", ""]).to_string();
    set(u, "iss", json!(iss));
    let aud = match u.int_in_range(0..=3u8).unwrap_or(0) {
        0 => json!(AUD),
        1 => json!(["other", AUD]),
        2 => json!("other"),
        _ => json!([]),
    };
    set(u, "aud", aud);
    let exp = now + i64::from(u.int_in_range(-120..=600i32).unwrap_or(600));
    set(u, "exp", json!(exp));
    let nbf = now + i64::from(u.int_in_range(-600..=120i32).unwrap_or(0));
    set(u, "nbf", json!(nbf));
    set(u, "iat", json!(now));
    let sub = pick(
        u,
        &[
            "alice",
            "",
            "system:admin",
            "system:serviceaccount:a:b",
            "a\u{0}b",
        ],
    );
    set(u, "sub", json!(sub));
    let groups = json!([pick(u, &["traders", "system:masters", ""])]);
    set(u, "groups", groups);
    let tenant = pick(u, &["tenant-a", "Tenant_A", "", "-a"]);
    set(u, "tenant", json!(tenant));
    let risk = pick(u, &["low", "medium", "high", "critical", "LOW", "none"]);
    set(u, "risk_level", json!(risk));
    if u.arbitrary::<bool>().unwrap_or(false) {
        let k = u.arbitrary::<String>().unwrap_or_default();
        c.insert(k, odd(u));
    }
    Value::Object(c)
}

fn header(u: &mut Unstructured<'_>, es256: bool) -> Value {
    let mut h = serde_json::Map::new();
    let alg = if es256 { "ES256" } else { "HS256" };
    let algs = [alg, alg, alg, "none", "HS512", "RS256", "ES256", "HS256"];
    let alg = *pick(u, &algs);
    h.insert("alg".into(), json!(alg));
    match u.int_in_range(0..=4u8).unwrap_or(0) {
        0 => {}
        1 => {
            h.insert("kid".into(), json!(if es256 { "es" } else { "hs" }));
        }
        2 => {
            h.insert("kid".into(), json!(if es256 { "hs" } else { "es" }));
        }
        3 => {
            h.insert(
                "kid".into(),
                json!(u.arbitrary::<String>().unwrap_or_default()),
            );
        }
        _ => {
            h.insert("kid".into(), json!(7));
        }
    }
    let typ = pick(
        u,
        &["JWT", "at+jwt", "application/at+jwt", "jwt", "JOSE", ""],
    );
    if !typ.is_empty() {
        h.insert("typ".into(), json!(typ));
    }
    if u.ratio(1, 8u8).unwrap_or(false) {
        h.insert("crit".into(), json!(["exp"]));
    }
    if u.ratio(1, 8u8).unwrap_or(false) {
        h.insert("jwk".into(), json!({"kty": "oct", "k": "AAAA"}));
    }
    Value::Object(h)
}

fn with_authorization(values: &[Vec<u8>]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.append("authorization", v);
        }
    }
    headers
}

/// The target: mode 0 sends the bytes as `Authorization` values (split at
/// `\n`); mode 1 signs fuzzed header and claims bytes with the layer's
/// keys; mode 2 signs near-valid JSON built from the input, then maybe
/// flips one byte of the token or changes how it is sent.
pub fn jwt_auth(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Builds the layer first: that also installs jsonwebtoken's process
    // default crypto provider, which signing below needs when both of
    // its backends are compiled in (`--all-features`).
    layer();
    match mode % 3 {
        0 => {
            let values: Vec<Vec<u8>> = rest
                .split(|&b| b == b'\n')
                .take(4)
                .map(<[u8]>::to_vec)
                .collect();
            check(&with_authorization(&values));
        }
        1 => {
            let mut u = Unstructured::new(rest);
            let es256 = u.arbitrary::<bool>().unwrap_or(false);
            let h: &[u8] = u.arbitrary().unwrap_or_default();
            let c: &[u8] = u.arbitrary().unwrap_or_default();
            let token = sign(h, c, es256);
            check(&with_authorization(&[
                format!("Bearer {token}").into_bytes()
            ]));
        }
        _ => {
            let mut u = Unstructured::new(rest);
            let es256 = u.arbitrary::<bool>().unwrap_or(false);
            let h = header(&mut u, es256);
            let c = claims(&mut u);
            let mut token =
                sign(h.to_string().as_bytes(), c.to_string().as_bytes(), es256).into_bytes();
            if u.ratio(1, 4u8).unwrap_or(false) && !token.is_empty() {
                let at = u.choose_index(token.len()).unwrap_or(0);
                token[at] ^= u.int_in_range(1..=255u8).unwrap_or(1);
            }
            let scheme = *pick(
                &mut u,
                &[
                    "Bearer ", "bearer ", "BEARER ", "Bearer  ", "Basic ", "Bearer",
                ],
            );
            let mut value = scheme.as_bytes().to_vec();
            value.extend_from_slice(&token);
            let mut values = vec![value];
            if u.ratio(1, 16u8).unwrap_or(false) {
                values.push(values[0].clone());
            }
            check(&with_authorization(&values));
        }
    }
}
