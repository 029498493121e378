//! JWT verification per algorithm: cold (cache off: a full parse and
//! signature check per call) and cached (a hash lookup), through
//! `JwtAuthLayer::verify_token`; plus one cached request through the whole
//! service (header parsing, extensions, labels).
//!
//! `cargo bench --bench jwt -- --warm-up-time 1 --measurement-time 3`
//!
//! `jwks/{parse,build}/{1,10,100}`: loading a JWKS document of that many
//! keys (half RSA-2048, half HMAC, each with its own `kid`) — parsing it
//! with `JwtKey::from_jwks`, and building a `JwtAuthLayer` from it (key
//! sets and their indexes, what a JWKS file reload does). Linear loading
//! means the time per key is the same in all three rows.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use finmesh::auth::{Algorithm, JwtAuthLayer, JwtKey};
use futures_util::FutureExt;
use jsonwebtoken::{EncodingKey, Header};
use tower::{Layer, Service};

// Test-only keys (tests/keys/README.md).
const RSA_PUB: &str = include_str!("../tests/keys/rsa-public.pem");
const RSA_PRIV: &str = include_str!("../tests/keys/rsa-private.pem");
const EC_PUB: &str = include_str!("../tests/keys/ec256-public.pem");
const EC_PRIV: &str = include_str!("../tests/keys/ec256-private.pem");
const ED_PUB: &str = include_str!("../tests/keys/ed25519-public.pem");
const ED_PRIV: &str = include_str!("../tests/keys/ed25519-private.pem");
const SECRET: &[u8] = b"benchmark-only-secret-0123456789abcdef";

fn layer(cache: usize) -> JwtAuthLayer {
    JwtAuthLayer::builder()
        .issuer("https://idp.bench")
        .audience("api")
        .algorithms([
            Algorithm::HS256,
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ])
        .key(JwtKey::hmac(SECRET).unwrap().with_kid("hs"))
        .key(JwtKey::rsa_pem(RSA_PUB).unwrap().with_kid("rs"))
        .key(JwtKey::ec_pem(EC_PUB).unwrap().with_kid("es"))
        .key(JwtKey::ed25519_pem(ED_PUB).unwrap().with_kid("ed"))
        .cache_capacity(cache)
        .build()
        .unwrap()
}

/// A realistic access token: ~600–900 bytes depending on the algorithm.
fn token(alg: Algorithm) -> String {
    let (kid, key) = match alg {
        Algorithm::HS256 => ("hs", EncodingKey::from_secret(SECRET)),
        Algorithm::RS256 => (
            "rs",
            EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
        ),
        Algorithm::ES256 => ("es", EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap()),
        Algorithm::EdDSA => ("ed", EncodingKey::from_ed_pem(ED_PRIV.as_bytes()).unwrap()),
        other => panic!("{other:?}"),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://idp.bench", "aud": ["api", "ledger"], "sub": "svc-order-router",
        "exp": now + 3600, "iat": now, "nbf": now,
        "groups": ["traders", "eu-desk", "payments-writers"],
        "tenant": "acme-eu", "risk_level": "medium",
        "scope": "orders:read orders:write payments:initiate",
        "jti": "6f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
    });
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn bench(c: &mut Criterion) {
    let cold = layer(0);
    let cached = layer(1024);
    let mut group = c.benchmark_group("jwt");
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let t = token(alg);
        assert!(cold.verify_token(&t).is_ok());
        assert!(cached.verify_token(&t).is_ok());
        group.bench_function(format!("{alg:?}/cold"), |b| {
            b.iter(|| cold.verify_token(black_box(&t)).unwrap())
        });
        group.bench_function(format!("{alg:?}/cached"), |b| {
            b.iter(|| cached.verify_token(black_box(&t)).unwrap())
        });
    }

    // One cached ES256 request through the service, headers to handler.
    let t = token(Algorithm::ES256);
    let header = http::HeaderValue::try_from(format!("Bearer {t}")).unwrap();
    let mut svc = cached.layer(tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    }));
    group.bench_function("ES256/cached/service", |b| {
        b.iter(|| {
            let mut req = http::Request::new(());
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, header.clone());
            let res = svc.call(req).now_or_never().unwrap().unwrap();
            assert_eq!(res.status(), 200);
        })
    });
    group.finish();
}

/// A JWKS document of `n` keys: the test RSA key's modulus (its low bits
/// changed per key, so each is its own key) and 32-byte HMAC secrets.
fn jwks_document(n: usize) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // The modulus of tests/keys/rsa-public.pem, via its DER: the last 256
    // bytes before the 5-byte exponent field.
    let der = URL_SAFE_NO_PAD
        .decode(
            RSA_PUB
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>()
                .trim_end_matches('=')
                .replace('+', "-")
                .replace('/', "_"),
        )
        .unwrap();
    let modulus = &der[der.len() - 5 - 256..der.len() - 5];
    let keys: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let mut m = modulus.to_vec();
                m[254] ^= (i >> 7) as u8;
                m[255] ^= ((i as u8) << 1) | 2;
                serde_json::json!({"kty": "RSA", "kid": format!("rsa-{i}"), "alg": "RS256",
                    "n": URL_SAFE_NO_PAD.encode(&m), "e": "AQAB"})
            } else {
                let secret = format!("bench-hmac-secret-{i:08}-0123456789ab");
                serde_json::json!({"kty": "oct", "kid": format!("hs-{i}"), "alg": "HS256",
                    "k": URL_SAFE_NO_PAD.encode(secret)})
            }
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

fn jwks(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwks");
    for n in [1, 10, 100] {
        let doc = jwks_document(n);
        assert_eq!(JwtKey::from_jwks(doc.as_bytes()).unwrap().len(), n);
        group.throughput(criterion::Throughput::Elements(n as u64));
        group.bench_function(format!("parse/{n}"), |b| {
            b.iter(|| JwtKey::from_jwks(black_box(doc.as_bytes())).unwrap())
        });
        group.bench_function(format!("build/{n}"), |b| {
            b.iter(|| {
                JwtAuthLayer::builder()
                    .issuer("https://idp.bench")
                    .audience("api")
                    .algorithms([Algorithm::HS256, Algorithm::RS256])
                    .jwks(black_box(&doc))
                    .build()
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, jwks);
criterion_main!(benches);
