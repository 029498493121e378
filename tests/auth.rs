//! `JwtAuthLayer` on the loopback harness: real axum + tonic servers, a real
//! HTTP/1.1 client and a real tonic client; JWKS file rotation through the
//! real file watcher.
#![cfg(feature = "_jwt")]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use finmesh::auth::{Algorithm, Issuer, JwtAuthLayer, JwtKey};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use serde_json::json;
use support::*;

const ISS: &str = "https://idp.test";
const AUD: &str = "payments";

// Test-only keys (see tests/keys/README.md).
const RSA_PUB: &str = include_str!("keys/rsa-public.pem");
const RSA_PRIV: &str = include_str!("keys/rsa-private.pem");
const EC_PUB: &str = include_str!("keys/ec256-public.pem");
const EC_PRIV: &str = include_str!("keys/ec256-private.pem");
const EC_B_PUB: &str = include_str!("keys/ec256b-public.pem");
const EC_B_PRIV: &str = include_str!("keys/ec256b-private.pem");
const ED_PUB: &str = include_str!("keys/ed25519-public.pem");
const ED_PRIV: &str = include_str!("keys/ed25519-private.pem");
const EC384_PUB: &str = include_str!("keys/ec384-public.pem");
const EC384_PRIV: &str = include_str!("keys/ec384-private.pem");

/// A fresh random HMAC secret for this test run.
fn hmac_secret() -> Vec<u8> {
    use std::hash::{BuildHasher, RandomState};
    (0..6u64)
        .flat_map(|i| RandomState::new().hash_one(i).to_le_bytes())
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> serde_json::Value {
    json!({
        "iss": ISS,
        "aud": [AUD, "other"],
        "sub": sub,
        "exp": now() + 600,
        "iat": now(),
        "groups": ["traders", "eu-desk"],
        "tenant": "acme-eu",
        "risk_level": "medium",
    })
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &serde_json::Value) -> String {
    finmesh::auth::install_default_crypto_provider();
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

struct Keys {
    secret: Vec<u8>,
}

impl Keys {
    fn token(&self, alg: Algorithm, claims: &serde_json::Value) -> String {
        match alg {
            Algorithm::HS256 => sign(alg, "hs", &EncodingKey::from_secret(&self.secret), claims),
            Algorithm::RS256 => sign(
                alg,
                "rs",
                &EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
                claims,
            ),
            Algorithm::ES256 => sign(
                alg,
                "es",
                &EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap(),
                claims,
            ),
            Algorithm::EdDSA => sign(
                alg,
                "ed",
                &EncodingKey::from_ed_pem(ED_PRIV.as_bytes()).unwrap(),
                claims,
            ),
            other => panic!("no test key for {other:?}"),
        }
    }
}

fn layer(keys: &Keys) -> JwtAuthLayer {
    JwtAuthLayer::builder()
        .issuer(ISS)
        .audience(AUD)
        .algorithms([
            Algorithm::HS256,
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ])
        .key(JwtKey::hmac(&keys.secret).unwrap().with_kid("hs"))
        .key(JwtKey::rsa_pem(RSA_PUB).unwrap().with_kid("rs"))
        .key(JwtKey::ec_pem(EC_PUB).unwrap().with_kid("es"))
        .key(JwtKey::ed25519_pem(ED_PUB).unwrap().with_kid("ed"))
        .build()
        .unwrap()
}

const ALGS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

async fn serve(layer: JwtAuthLayer) -> TestServer {
    spawn(echo_app().layer(layer)).await
}

#[tokio::test]
async fn valid_tokens_of_every_algorithm_reach_the_http_handler_with_the_principal() {
    let keys = Keys {
        secret: hmac_secret(),
    };
    let server = serve(layer(&keys)).await;
    for alg in ALGS {
        let sub = format!("alice-{alg:?}");
        let token = keys.token(alg, &claims(&sub));
        for _ in 0..2 {
            // The second request is answered from the verification cache.
            let res = get(
                &server.url("/echo"),
                &[("authorization", &format!("Bearer {token}"))],
            )
            .await;
            assert_eq!(res.status, 200, "{alg:?}: {:?}", res.body);
            let seen = res.json();
            assert_eq!(seen["subject"], sub.as_str(), "{alg:?}");
            assert_eq!(seen["groups"], json!(["traders", "eu-desk"]));
            assert_eq!(seen["risk"], "medium");
            assert_eq!(seen["principal_tenant"], "acme-eu");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn valid_tokens_of_every_algorithm_reach_the_grpc_handler() {
    let keys = Keys {
        secret: hmac_secret(),
    };
    let server = serve(layer(&keys)).await;
    let mut client = grpc_client(server.addr).await;
    for alg in ALGS {
        let sub = format!("bob-{alg:?}");
        let token = keys.token(alg, &claims(&sub));
        let reply = client
            .unary(grpc_request(
                EchoRequest {
                    message: "hi".into(),
                    ..Default::default()
                },
                &[("authorization", &format!("Bearer {token}"))],
            ))
            .await
            .unwrap_or_else(|s| panic!("{alg:?}: {s:?}"))
            .into_inner();
        assert_eq!(reply.subject, sub);
        assert_eq!(reply.message, "hi");
    }
    server.shutdown().await;
}

/// (case, Authorization header or none, expected code)
fn rejection_cases(keys: &Keys) -> Vec<(&'static str, Option<String>, &'static str)> {
    let expired = {
        let mut c = claims("late");
        c["exp"] = json!(now() - 120);
        keys.token(Algorithm::ES256, &c)
    };
    let future = {
        let mut c = claims("early");
        c["nbf"] = json!(now() + 3600);
        keys.token(Algorithm::RS256, &c)
    };
    let bad_tenant = {
        let mut c = claims("x");
        c["tenant"] = json!("Not_A_Namespace");
        keys.token(Algorithm::HS256, &c)
    };
    let attacker = sign(
        Algorithm::ES256,
        "es",
        &EncodingKey::from_ec_pem(EC_B_PRIV.as_bytes()).unwrap(),
        &claims("mallory"),
    );
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    vec![
        ("no token", None, "auth.missing"),
        (
            "basic scheme",
            Some("Basic YWxpY2U6cHc=".into()),
            "auth.missing",
        ),
        (
            "empty bearer token",
            Some("Bearer ".into()),
            "auth.malformed",
        ),
        ("not a JWT", bearer("not-a-jwt"), "auth.malformed"),
        (
            "signed by an unknown key",
            bearer(&attacker),
            "auth.invalid",
        ),
        ("expired", bearer(&expired), "auth.expired"),
        ("not yet valid", bearer(&future), "auth.not_yet_valid"),
        (
            "tenant claim not a namespace",
            bearer(&bad_tenant),
            "auth.claim_invalid",
        ),
    ]
}

#[tokio::test]
async fn rejections_over_http_are_401_problems_with_their_code() {
    let keys = Keys {
        secret: hmac_secret(),
    };
    let server = serve(layer(&keys)).await;
    for (case, authz, code) in rejection_cases(&keys) {
        let headers: Vec<(&str, &str)> = authz
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let res = get(&server.url("/echo"), &headers).await;
        assert_eq!(res.status, 401, "{case}");
        assert_eq!(
            res.header("content-type"),
            "application/problem+json",
            "{case}"
        );
        let problem = res.json();
        assert_eq!(problem["code"], code, "{case}");
        let www = res.header("www-authenticate");
        if code == "auth.missing" {
            assert_eq!(www, "Bearer", "{case}");
        } else {
            assert!(
                www.starts_with("Bearer error=\"invalid_token\""),
                "{case}: {www}"
            );
        }
        if let Some(a) = &authz {
            let token = a.split_once(' ').map_or("", |x| x.1);
            if token.len() > 8 {
                assert!(
                    !res.body.windows(token.len()).any(|w| w == token.as_bytes()),
                    "{case}"
                );
            }
        }
    }
    // Several Authorization headers.
    let token = keys.token(Algorithm::HS256, &claims("dup"));
    let req = http::Request::get(server.url("/echo"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::default())
        .unwrap();
    let res = send(req).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["code"], "auth.malformed");
    server.shutdown().await;
}

#[tokio::test]
async fn rejections_over_grpc_are_unauthenticated() {
    let keys = Keys {
        secret: hmac_secret(),
    };
    let server = serve(layer(&keys)).await;
    let mut client = grpc_client(server.addr).await;
    for (case, authz, code) in rejection_cases(&keys) {
        let headers: Vec<(&'static str, &str)> = authz
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let status = client
            .unary(grpc_request(EchoRequest::default(), &headers))
            .await
            .expect_err(case);
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{case}");
        // gRPC carries no code field: the message is the same fixed detail
        // the HTTP answer gives next to the code.
        let http = get(&server.url("/echo"), &headers).await.json();
        assert_eq!(http["code"], code, "{case}");
        assert_eq!(status.message(), http["detail"], "{case}");
    }
    server.shutdown().await;
}

fn jwk(pem: &str, kid: &str, alg: Algorithm) -> Jwk {
    finmesh::auth::install_default_crypto_provider();
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        other => panic!("{other:?}"),
    };
    let mut jwk = Jwk::from_decoding_key(&key, Some(alg)).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

fn write_jwks(path: &std::path::Path, keys: Vec<Jwk>) {
    let doc = serde_json::to_vec_pretty(&JwkSet { keys }).unwrap();
    // Write-then-rename, as a config manager would: never a torn file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, doc).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn status_of(server: &TestServer, token: &str) -> (u16, serde_json::Value) {
    let res = get(
        &server.url("/echo"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    (res.status.as_u16(), res.json())
}

/// Polls until `token` gets `want` (the watcher debounces, then swaps).
async fn eventually(server: &TestServer, token: &str, want: u16) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = status_of(server, token).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {status} ({body}), want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn jwks_file_rotation_adds_and_removes_keys_and_the_cache_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    write_jwks(&path, vec![jwk(EC_PUB, "a", Algorithm::ES256)]);

    let layer = JwtAuthLayer::builder()
        .issuer(ISS)
        .audience(AUD)
        .jwks_file(&path)
        .build()
        .unwrap();
    assert_eq!(layer.key_count(), 1);
    let server = serve(layer.clone()).await;

    let key_a = EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap();
    let key_b = EncodingKey::from_ec_pem(EC_B_PRIV.as_bytes()).unwrap();
    let key_r = EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap();
    let token_a = sign(Algorithm::ES256, "a", &key_a, &claims("from-a"));
    let token_b = sign(Algorithm::ES256, "b", &key_b, &claims("from-b"));
    let token_r = sign(Algorithm::RS256, "r", &key_r, &claims("from-r"));

    // Key a verifies (and the token is now cached); b is unknown.
    for _ in 0..3 {
        assert_eq!(status_of(&server, &token_a).await.0, 200);
    }
    let (status, body) = status_of(&server, &token_b).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("auth.invalid")));

    // Rotation step 1: b (and an RSA key) published next to a.
    write_jwks(
        &path,
        vec![
            jwk(EC_PUB, "a", Algorithm::ES256),
            jwk(EC_B_PUB, "b", Algorithm::ES256),
            jwk(RSA_PUB, "r", Algorithm::RS256),
        ],
    );
    let seen = eventually(&server, &token_b, 200).await;
    assert_eq!(seen["subject"], "from-b");
    assert_eq!(status_of(&server, &token_r).await.0, 200);
    assert_eq!(status_of(&server, &token_a).await.0, 200);
    assert_eq!(layer.key_count(), 3);

    // Step 2: a is withdrawn. Its token was cached a moment ago; the cache
    // must not outlive the key.
    write_jwks(
        &path,
        vec![
            jwk(EC_B_PUB, "b", Algorithm::ES256),
            jwk(RSA_PUB, "r", Algorithm::RS256),
        ],
    );
    let refused = eventually(&server, &token_a, 401).await;
    assert_eq!(refused["code"], "auth.invalid");
    assert_eq!(status_of(&server, &token_b).await.0, 200);
    // Refused for good, not flapping between cache and keys.
    for _ in 0..3 {
        assert_eq!(status_of(&server, &token_a).await.0, 401);
    }

    // Step 3: a broken file never replaces good keys.
    assert_eq!(layer.jwks_error_count(), 0);
    std::fs::write(&path, b"{\"keys\": \"oops\"}").unwrap();
    // Wait until the watcher has read and refused it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while layer.jwks_error_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad file was never read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(layer.jwks_last_error().is_some());
    assert_eq!(status_of(&server, &token_b).await.0, 200);
    assert_eq!(layer.key_count(), 2);
    server.shutdown().await;
}

/// Two issuers, each with its own watched JWKS file: a key verifies only
/// its own issuer's tokens, even after the other issuer publishes the same
/// key under the same `kid`, and rotating one issuer's file evicts that
/// issuer's cached tokens.
#[tokio::test]
async fn each_issuers_jwks_file_verifies_only_its_own_tokens_across_rotation() {
    const A: &str = "https://idp-a.test";
    const B: &str = "https://idp-b.test";
    let dir = tempfile::tempdir().unwrap();
    let (path_a, path_b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    write_jwks(&path_a, vec![jwk(EC_PUB, "k1", Algorithm::ES256)]);
    write_jwks(&path_b, vec![jwk(EC_B_PUB, "k2", Algorithm::ES256)]);
    let layer = JwtAuthLayer::builder()
        .issuer_config(
            Issuer::new(A)
                .audience(AUD)
                .jwks_file(&path_a)
                .username_prefix("a:"),
        )
        .issuer_config(
            Issuer::new(B)
                .audience(AUD)
                .jwks_file(&path_b)
                .username_prefix("b:"),
        )
        .build()
        .unwrap();
    assert_eq!(layer.key_count(), 2);
    let server = serve(layer.clone()).await;
    let key_a = EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap();
    let key_b = EncodingKey::from_ec_pem(EC_B_PRIV.as_bytes()).unwrap();
    let from = |iss: &str| {
        let mut c = claims("alice");
        c["iss"] = iss.into();
        c
    };
    let a_by_a = sign(Algorithm::ES256, "k1", &key_a, &from(A));
    let b_by_b = sign(Algorithm::ES256, "k2", &key_b, &from(B));
    let a_by_b = sign(Algorithm::ES256, "k2", &key_b, &from(A));
    let b_by_a = sign(Algorithm::ES256, "k1", &key_a, &from(B));

    let (status, body) = status_of(&server, &a_by_a).await;
    assert_eq!((status, body["subject"].as_str()), (200, Some("a:alice")));
    let (status, body) = status_of(&server, &b_by_b).await;
    assert_eq!((status, body["subject"].as_str()), (200, Some("b:alice")));
    for forged in [&a_by_b, &b_by_a] {
        let (status, body) = status_of(&server, forged).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("auth.invalid")));
    }

    // B now also publishes A's key, under A's kid: B's tokens signed with
    // it verify as B's users, and A's tokens still only with A's keys.
    write_jwks(
        &path_b,
        vec![
            jwk(EC_B_PUB, "k2", Algorithm::ES256),
            jwk(EC_PUB, "k1", Algorithm::ES256),
        ],
    );
    let seen = eventually(&server, &b_by_a, 200).await;
    assert_eq!(seen["subject"], "b:alice");
    assert_eq!(status_of(&server, &a_by_b).await.0, 401);

    // A withdraws its key: A's cached token is refused, B's token signed
    // with the same key (B still publishes it) is not.
    assert_eq!(status_of(&server, &a_by_a).await.0, 200);
    write_jwks(&path_a, vec![jwk(RSA_PUB, "k3", Algorithm::RS256)]);
    let refused = eventually(&server, &a_by_a, 401).await;
    assert_eq!(refused["code"], "auth.invalid");
    assert_eq!(status_of(&server, &b_by_a).await.0, 200);
    assert_eq!(layer.key_count(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_static_jwks_document_is_accepted() {
    let doc = serde_json::to_vec(&JwkSet {
        keys: vec![jwk(RSA_PUB, "r", Algorithm::RS256)],
    })
    .unwrap();
    let layer = JwtAuthLayer::builder()
        .issuer(ISS)
        .audience(AUD)
        .jwks(doc)
        .build()
        .unwrap();
    let server = serve(layer).await;
    let key_r = EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap();
    let token = sign(Algorithm::RS256, "r", &key_r, &claims("jwks-user"));
    let (status, body) = status_of(&server, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], "jwks-user");
    // The JWK carries alg RS256: the same key is not usable for PS256.
    let ps = sign(Algorithm::PS256, "r", &key_r, &claims("jwks-user"));
    assert_eq!(status_of(&server, &ps).await.0, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn p384_and_ed25519_keys_from_a_jwks_document_verify_their_tokens() {
    let doc = serde_json::to_vec(&JwkSet {
        keys: vec![
            jwk(EC384_PUB, "p384", Algorithm::ES384),
            jwk(ED_PUB, "ed", Algorithm::EdDSA),
        ],
    })
    .unwrap();
    // Default algorithms: every asymmetric one.
    let layer = JwtAuthLayer::builder()
        .issuer(ISS)
        .audience(AUD)
        .jwks(doc)
        .build()
        .unwrap();
    let server = serve(layer).await;
    let p384 = EncodingKey::from_ec_pem(EC384_PRIV.as_bytes()).unwrap();
    let ed = EncodingKey::from_ed_pem(ED_PRIV.as_bytes()).unwrap();
    let p256 = EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap();
    for (alg, kid, key, want, field, value) in [
        (Algorithm::ES384, "p384", &p384, 200, "subject", "user"),
        (Algorithm::EdDSA, "ed", &ed, 200, "subject", "user"),
        // A P-384 key does not verify an ES256 token, whatever the kid says.
        (Algorithm::ES256, "p384", &p256, 401, "code", "auth.invalid"),
    ] {
        let token = sign(alg, kid, key, &claims("user"));
        let (status, body) = status_of(&server, &token).await;
        assert_eq!(
            (status, &body[field]),
            (want, &json!(value)),
            "{alg:?}: {body}"
        );
    }
    server.shutdown().await;
}

/// The builder's defaults, as documented: 30 s leeway, 8 KiB tokens, `typ`
/// `JWT`, `at+jwt` or absent.
#[tokio::test]
async fn builder_defaults_are_the_documented_ones() {
    let secret = hmac_secret();
    let layer = JwtAuthLayer::builder()
        .issuer(ISS)
        .audience(AUD)
        .algorithms([Algorithm::HS256])
        .key(JwtKey::hmac(&secret).unwrap())
        .build()
        .unwrap();
    let server = serve(layer).await;
    let key = EncodingKey::from_secret(&secret);
    let token = |typ: Option<&str>, claims: &serde_json::Value| {
        finmesh::auth::install_default_crypto_provider();
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(Into::into);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    };
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("defaults");
        f(&mut c);
        c
    };
    // Leeway: expired 20 s ago passes, 45 s ago does not.
    let recent = with(&|c| c["exp"] = json!(now() - 20));
    assert_eq!(
        status_of(&server, &token(Some("JWT"), &recent)).await.0,
        200
    );
    let stale = with(&|c| c["exp"] = json!(now() - 45));
    let (status, body) = status_of(&server, &token(Some("JWT"), &stale)).await;
    assert_eq!((status, &body["code"]), (401, &json!("auth.expired")));
    // typ: JWT, at+jwt (any case) or none; anything else is refused.
    let fresh = claims("defaults");
    for typ in [Some("JWT"), Some("at+jwt"), Some("AT+JWT"), None] {
        let (status, body) = status_of(&server, &token(typ, &fresh)).await;
        assert_eq!(status, 200, "{typ:?}: {body}");
    }
    let (status, body) = status_of(&server, &token(Some("id+jwt"), &fresh)).await;
    assert_eq!((status, &body["code"]), (401, &json!("auth.invalid")));
    // Size: a token just under 8 KiB passes; one over it is refused
    // before any parsing.
    let sized = |len: usize| {
        let mut c = claims("defaults");
        let bare = token(Some("JWT"), &c).len();
        // base64url: 4 characters for every 3 bytes of padding claim.
        c["pad"] = json!("x".repeat((len - bare - 12) * 3 / 4));
        token(Some("JWT"), &c)
    };
    let under = sized(8 * 1024 - 64);
    assert!(under.len() <= 8 * 1024, "{}", under.len());
    assert_eq!(status_of(&server, &under).await.0, 200);
    let over = sized(8 * 1024 + 64);
    assert!(over.len() > 8 * 1024, "{}", over.len());
    let (status, body) = status_of(&server, &over).await;
    assert_eq!((status, &body["code"]), (401, &json!("auth.malformed")));
    server.shutdown().await;
}
