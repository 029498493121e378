//! JWT verification per algorithm: cold (cache off: a full parse and
//! signature check per call) and cached (a hash lookup), through
//! `JwtAuthLayer::verify_token`; plus one cached request through the whole
//! service (header parsing, extensions, labels).
//!
//! `cargo bench --bench jwt -- --warm-up-time 1 --measurement-time 3`

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

criterion_group!(benches, bench);
criterion_main!(benches);
