//! The hostile-token suite: every known way to get a bad token accepted,
//! each with the code it must be refused with, driven through the same
//! `verify` the layer uses at a fixed clock. Plus controls that must pass,
//! so the suite cannot be green by refusing everything.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::EncodingKey;
use serde_json::json;

// The codes under their literal strings: a table row states what a client
// sees, and a renamed variant cannot silently change it.
const MISSING: &str = "auth.missing";
const MALFORMED: &str = "auth.malformed";
const INVALID: &str = "auth.invalid";
const EXPIRED: &str = "auth.expired";
const NOT_YET_VALID: &str = "auth.not_yet_valid";
const CLAIM_INVALID: &str = "auth.claim_invalid";
use super::algorithm::AlgSet;
use super::config::{Settings, normalize_typ};
use super::issuer::{IssuerTrust, Issuers};
use super::key::JwtKey;
use super::key_set::{KeySet, KeySource};
use super::verify::verify;
use super::{Algorithm, JwtAuthLayer};
use crate::{RiskLevel, TenantNamespace};

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://idp.test";
const AUD: &str = "api";
const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";

const RSA_PUB: &str = include_str!("../../tests/keys/rsa-public.pem");
const RSA_PRIV: &str = include_str!("../../tests/keys/rsa-private.pem");
const EC_PUB: &str = include_str!("../../tests/keys/ec256-public.pem");
const EC_PRIV: &str = include_str!("../../tests/keys/ec256-private.pem");
const EC_B_PRIV: &str = include_str!("../../tests/keys/ec256b-private.pem");
const ED_PUB: &str = include_str!("../../tests/keys/ed25519-public.pem");
const ED_PRIV: &str = include_str!("../../tests/keys/ed25519-private.pem");

fn settings() -> Settings {
    Settings {
        algorithms: AlgSet::of(&[
            Algorithm::HS256,
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ]),
        leeway: 30,
        required_claims: Box::new([]),
        types: ["JWT", "at+jwt"]
            .iter()
            .map(|t| normalize_typ(t).into())
            .collect(),
        allow_missing_typ: true,
        max_token_len: 8 * 1024,
        groups_claim: "groups".into(),
        tenant_claim: "tenant".into(),
        risk_claim: "risk_level".into(),
        service_accounts_from_peer: false,
        service_account_trust_domains: Box::new([]),
    }
}

/// `ISS` (audience `AUD`, no name prefixes, as the one-issuer builder
/// form configures it) with `keys`.
fn one_issuer(keys: KeySet) -> Issuers {
    Issuers(Box::new([IssuerTrust {
        url: Arc::from(ISS),
        audiences: Box::new([AUD.into()]),
        keys: KeySource::Static(Arc::new(keys)),
        username_prefix: "".into(),
        groups_prefix: "".into(),
        allow_service_accounts: false,
        foreign_user_prefixes: Box::default(),
        foreign_group_prefixes: Box::default(),
    }]))
}

fn keys() -> Issuers {
    // Verification must never reach jsonwebtoken's process default.
    super::crypto::panicking_process_default();
    one_issuer(
        KeySet::new(vec![
            JwtKey::hmac(HMAC_SECRET).unwrap().with_kid("h1"),
            JwtKey::rsa_pem(RSA_PUB).unwrap().with_kid("r1"),
            JwtKey::ec_pem(EC_PUB).unwrap().with_kid("e1"),
            JwtKey::ed25519_pem(ED_PUB).unwrap().with_kid("d1"),
        ])
        .unwrap(),
    )
}

fn b64(s: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

#[derive(Clone, Copy)]
enum Signer {
    Hs,
    Rs,
    Es,
    EsAttacker,
    Ed,
    /// HS256 with the RSA *public key PEM* as the secret.
    HsWithRsaPublic,
    None,
}

fn encoding_key(signer: Signer) -> Option<(Algorithm, EncodingKey)> {
    Some(match signer {
        Signer::Hs => (Algorithm::HS256, EncodingKey::from_secret(HMAC_SECRET)),
        Signer::HsWithRsaPublic => (
            Algorithm::HS256,
            EncodingKey::from_secret(RSA_PUB.as_bytes()),
        ),
        Signer::Rs => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
        ),
        Signer::Es => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap(),
        ),
        Signer::EsAttacker => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_B_PRIV.as_bytes()).unwrap(),
        ),
        Signer::Ed => (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED_PRIV.as_bytes()).unwrap(),
        ),
        Signer::None => return None,
    })
}

/// Signs raw header and claims JSON text (so that hostile shapes —
/// strings, floats, duplicates — survive exactly as written).
fn raw(header: &str, claims: &str, signer: Signer) -> String {
    let message = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let sig = match encoding_key(signer) {
        // Through finmesh's provider: jsonwebtoken's process default
        // panics in these tests (see `crypto::panicking_process_default`).
        Some((alg, key)) => super::crypto::sign(message.as_bytes(), &key, alg),
        None => String::new(),
    };
    format!("{message}.{sig}")
}

fn claims_with(extra: serde_json::Value) -> String {
    let mut c = json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": NOW + 300});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c.to_string()
}

fn good_claims() -> String {
    claims_with(json!({}))
}

const HS: &str = r#"{"alg":"HS256","typ":"JWT","kid":"h1"}"#;
const RS: &str = r#"{"alg":"RS256","kid":"r1"}"#;
const ES: &str = r#"{"alg":"ES256","kid":"e1"}"#;
const ED: &str = r#"{"alg":"EdDSA","kid":"d1"}"#;

fn hs(claims: &str) -> String {
    raw(HS, claims, Signer::Hs)
}

/// ES256 with r = s = 0: the "psychic signatures" shape (CVE-2022-21449).
fn es256_zero_signature() -> String {
    let message = format!("{}.{}", b64(ES.as_bytes()), b64(good_claims().as_bytes()));
    format!("{message}.{}", b64(&[0u8; 64]))
}

fn with_signature_of(token: &str, other: &str) -> String {
    let (msg, _) = token.rsplit_once('.').unwrap();
    let (_, sig) = other.rsplit_once('.').unwrap();
    format!("{msg}.{sig}")
}

fn tampered_payload() -> String {
    let token = hs(&good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let evil = b64(claims_with(json!({"sub": "admin"})).as_bytes());
    format!("{}.{}.{}", parts[0], evil, parts[2])
}

/// (name, token, expected code)
fn hostile_cases() -> Vec<(&'static str, String, &'static str)> {
    let good = good_claims();
    let c = |extra| claims_with(extra);
    vec![
        // --- alg none and friends.
        (
            "alg none, no signature",
            raw(r#"{"alg":"none"}"#, &good, Signer::None),
            INVALID,
        ),
        (
            "alg None, no signature",
            raw(r#"{"alg":"None"}"#, &good, Signer::None),
            INVALID,
        ),
        (
            "alg NONE, no signature",
            raw(r#"{"alg":"NONE"}"#, &good, Signer::None),
            INVALID,
        ),
        (
            "alg none, with an HS256 signature",
            raw(r#"{"alg":"none","kid":"h1"}"#, &good, Signer::Hs),
            INVALID,
        ),
        (
            "alg None, with an HS256 signature",
            raw(r#"{"alg":"None"}"#, &good, Signer::Hs),
            INVALID,
        ),
        (
            "alg nOnE, with an RS256 signature",
            raw(r#"{"alg":"nOnE"}"#, &good, Signer::Rs),
            INVALID,
        ),
        (
            "alg missing",
            raw(r#"{"typ":"JWT"}"#, &good, Signer::Hs),
            MALFORMED,
        ),
        (
            "alg not a string",
            raw(r#"{"alg":256}"#, &good, Signer::Hs),
            MALFORMED,
        ),
        (
            "alg lowercase hs256",
            raw(r#"{"alg":"hs256","kid":"h1"}"#, &good, Signer::Hs),
            INVALID,
        ),
        (
            "alg unknown",
            raw(r#"{"alg":"XS256"}"#, &good, Signer::Hs),
            INVALID,
        ),
        // --- key confusion (RFC 8725 §2.1).
        (
            "HS256 signed with the RSA public key, kid of the RSA key",
            raw(
                r#"{"alg":"HS256","kid":"r1"}"#,
                &good,
                Signer::HsWithRsaPublic,
            ),
            INVALID,
        ),
        (
            "HS256 signed with the RSA public key, no kid",
            raw(r#"{"alg":"HS256"}"#, &good, Signer::HsWithRsaPublic),
            INVALID,
        ),
        (
            "EdDSA signature under an ES256 header",
            raw(r#"{"alg":"ES256","kid":"e1"}"#, &good, Signer::Ed),
            INVALID,
        ),
        // --- allowlist.
        (
            "HS512 outside the allowlist",
            raw(r#"{"alg":"HS512","kid":"h1"}"#, &good, Signer::Hs),
            INVALID,
        ),
        (
            "PS256 outside the allowlist",
            raw(r#"{"alg":"PS256","kid":"r1"}"#, &good, Signer::Rs),
            INVALID,
        ),
        // --- exp / nbf / iat types.
        (
            "exp as a string",
            hs(&c(json!({"exp": (NOW + 300).to_string()}))),
            CLAIM_INVALID,
        ),
        (
            "exp as a float",
            hs(&c(json!({"exp": NOW as f64 + 300.5}))),
            CLAIM_INVALID,
        ),
        (
            "exp as an integral float",
            hs(&format!(
                r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"a","exp":{}.0}}"#,
                NOW + 300
            )),
            CLAIM_INVALID,
        ),
        (
            "exp in exponent notation",
            hs(&format!(
                r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"a","exp":1.8e9}}"#
            )),
            CLAIM_INVALID,
        ),
        ("exp negative", hs(&c(json!({"exp": -1}))), CLAIM_INVALID),
        (
            "exp far beyond year 9999",
            hs(&c(json!({"exp": u64::MAX}))),
            CLAIM_INVALID,
        ),
        ("exp missing", hs(&c(json!({"exp": null}))), CLAIM_INVALID),
        (
            "exp as a boolean",
            hs(&c(json!({"exp": true}))),
            CLAIM_INVALID,
        ),
        (
            "nbf as a string",
            hs(&c(json!({"nbf": NOW.to_string()}))),
            CLAIM_INVALID,
        ),
        (
            "nbf as a float",
            hs(&c(json!({"nbf": NOW as f64 - 0.5}))),
            CLAIM_INVALID,
        ),
        ("nbf negative", hs(&c(json!({"nbf": -100}))), CLAIM_INVALID),
        (
            "iat as a string",
            hs(&c(json!({"iat": "yesterday"}))),
            CLAIM_INVALID,
        ),
        // --- leeway boundaries (leeway 30 s).
        (
            "expired just outside the leeway",
            hs(&c(json!({"exp": NOW - 31}))),
            EXPIRED,
        ),
        (
            "expired exactly at the leeway",
            hs(&c(json!({"exp": NOW - 30}))),
            EXPIRED,
        ),
        ("expired long ago", hs(&c(json!({"exp": 1}))), EXPIRED),
        (
            "nbf just outside the leeway",
            hs(&c(json!({"nbf": NOW + 31}))),
            NOT_YET_VALID,
        ),
        // --- iss / aud.
        ("iss missing", hs(&c(json!({"iss": null}))), INVALID),
        (
            "iss wrong",
            hs(&c(json!({"iss": "https://evil.test"}))),
            INVALID,
        ),
        (
            "iss with a trailing slash",
            hs(&c(json!({"iss": format!("{ISS}/")}))),
            INVALID,
        ),
        (
            "iss wrong type (number)",
            hs(&c(json!({"iss": 42}))),
            INVALID,
        ),
        (
            "iss wrong type (array)",
            hs(&c(json!({"iss": [ISS]}))),
            INVALID,
        ),
        ("aud missing", hs(&c(json!({"aud": null}))), INVALID),
        ("aud wrong", hs(&c(json!({"aud": "other-api"}))), INVALID),
        (
            "aud wrong type (number)",
            hs(&c(json!({"aud": 7}))),
            INVALID,
        ),
        (
            "aud array with a non-string",
            hs(&c(json!({"aud": [AUD, 7]}))),
            INVALID,
        ),
        ("aud empty array", hs(&c(json!({"aud": []}))), INVALID),
        // --- sub and mapped claims.
        ("sub missing", hs(&c(json!({"sub": null}))), CLAIM_INVALID),
        (
            "sub not a string",
            hs(&c(json!({"sub": 1234}))),
            CLAIM_INVALID,
        ),
        ("sub empty", hs(&c(json!({"sub": ""}))), CLAIM_INVALID),
        (
            "tenant not a namespace",
            hs(&c(json!({"tenant": "Tenant_A"}))),
            CLAIM_INVALID,
        ),
        (
            "tenant not a string",
            hs(&c(json!({"tenant": ["a"]}))),
            CLAIM_INVALID,
        ),
        (
            "risk level unknown",
            hs(&c(json!({"risk_level": "severe"}))),
            CLAIM_INVALID,
        ),
        (
            "risk level wrong case",
            hs(&c(json!({"risk_level": "HIGH"}))),
            CLAIM_INVALID,
        ),
        (
            "groups not an array",
            hs(&c(json!({"groups": "admins"}))),
            CLAIM_INVALID,
        ),
        (
            "groups with a non-string",
            hs(&c(json!({"groups": ["a", 1]}))),
            CLAIM_INVALID,
        ),
        (
            "duplicate sub claim",
            hs(&format!(
                r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"alice","sub":"admin","exp":{}}}"#,
                NOW + 300
            )),
            MALFORMED,
        ),
        // --- kid.
        (
            "unknown kid",
            raw(r#"{"alg":"HS256","kid":"nope"}"#, &good, Signer::Hs),
            INVALID,
        ),
        (
            "kid with ../",
            raw(
                r#"{"alg":"HS256","kid":"../../../../dev/null"}"#,
                &good,
                Signer::Hs,
            ),
            INVALID,
        ),
        (
            "kid with quotes",
            raw(
                r#"{"alg":"HS256","kid":"h1\" OR \"1\"=\"1"}"#,
                &good,
                Signer::Hs,
            ),
            INVALID,
        ),
        (
            "kid of another family",
            raw(r#"{"alg":"HS256","kid":"e1"}"#, &good, Signer::Hs),
            INVALID,
        ),
        (
            "kid not a string",
            raw(r#"{"alg":"HS256","kid":1}"#, &good, Signer::Hs),
            MALFORMED,
        ),
        // --- keys named by the token are ignored.
        (
            "jku to an attacker JWKS, attacker-signed",
            raw(
                r#"{"alg":"ES256","kid":"e1","jku":"https://evil.test/jwks.json"}"#,
                &good,
                Signer::EsAttacker,
            ),
            INVALID,
        ),
        (
            "x5u to an attacker cert, attacker-signed",
            raw(
                r#"{"alg":"ES256","kid":"e1","x5u":"https://evil.test/cert.pem"}"#,
                &good,
                Signer::EsAttacker,
            ),
            INVALID,
        ),
        (
            "embedded jwk, attacker-signed",
            raw(
                r#"{"alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}}"#,
                &good,
                Signer::EsAttacker,
            ),
            INVALID,
        ),
        // --- typ / crit.
        (
            "wrong typ",
            raw(
                r#"{"alg":"HS256","kid":"h1","typ":"secevent+jwt"}"#,
                &good,
                Signer::Hs,
            ),
            INVALID,
        ),
        (
            "typ not a string",
            raw(r#"{"alg":"HS256","kid":"h1","typ":1}"#, &good, Signer::Hs),
            MALFORMED,
        ),
        (
            "crit header",
            raw(
                r#"{"alg":"HS256","kid":"h1","crit":["exp"],"exp":1}"#,
                &good,
                Signer::Hs,
            ),
            INVALID,
        ),
        // --- signatures.
        ("ES256 with r = s = 0", es256_zero_signature(), INVALID),
        (
            "empty signature",
            format!("{}.", hs(&good).rsplit_once('.').unwrap().0),
            INVALID,
        ),
        (
            "signature of another token",
            with_signature_of(&hs(&good), &hs(&c(json!({"sub": "bob"})))),
            INVALID,
        ),
        ("payload changed after signing", tampered_payload(), INVALID),
        (
            "RS256 signature truncated",
            {
                let t = raw(RS, &good, Signer::Rs);
                t[..t.len() - 4].to_owned()
            },
            INVALID,
        ),
        // --- shape.
        (
            "over the size limit",
            hs(&c(json!({"pad": "x".repeat(9000)}))),
            MALFORMED,
        ),
        (
            "bad base64 in the header",
            format!("e30*.{}", hs(&good).split_once('.').unwrap().1),
            MALFORMED,
        ),
        (
            "padded base64",
            {
                let t = hs(&good);
                let (h, rest) = t.split_once('.').unwrap();
                format!("{h}=.{rest}")
            },
            MALFORMED,
        ),
        (
            "standard-alphabet base64 (+ and /)",
            format!("{}.{}.ab+/", b64(HS.as_bytes()), b64(good.as_bytes())),
            MALFORMED,
        ),
        (
            "two segments",
            hs(&good).rsplit_once('.').unwrap().0.to_owned(),
            MALFORMED,
        ),
        ("four segments", format!("{}.AAAA", hs(&good)), MALFORMED),
        (
            "five segments (JWE)",
            "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d".to_owned(),
            MALFORMED,
        ),
        (
            "empty header segment",
            format!(".{}", hs(&good).split_once('.').unwrap().1),
            MALFORMED,
        ),
        (
            "header is a JSON array",
            raw(r#"["HS256","h1"]"#, &good, Signer::Hs),
            MALFORMED,
        ),
        (
            "header is a JSON string",
            raw(r#""HS256""#, &good, Signer::Hs),
            MALFORMED,
        ),
        ("header is null", raw("null", &good, Signer::Hs), MALFORMED),
        (
            "header is not JSON",
            raw("{alg:HS256}", &good, Signer::Hs),
            MALFORMED,
        ),
        (
            "header with a duplicate alg",
            raw(
                r#"{"alg":"none","alg":"HS256","kid":"h1"}"#,
                &good,
                Signer::Hs,
            ),
            MALFORMED,
        ),
        ("claims are a JSON array", hs("[1,2,3]"), MALFORMED),
        ("claims are not JSON", hs("not json"), MALFORMED),
        ("empty string", String::new(), MALFORMED),
        ("just dots", "..".to_owned(), MALFORMED),
    ]
}

#[test]
fn hostile_tokens_are_refused_with_their_code() {
    let (settings, keys) = (settings(), keys());
    let cases = hostile_cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (name, token, want) in &cases {
        match verify(&settings, &keys, token, NOW) {
            Ok(_) => failures.push(format!("{name}: ACCEPTED, want {want}")),
            Err(r) if r.code.as_str() != *want => {
                failures.push(format!("{name}: {} ({}), want {want}", r.code, r.detail));
            }
            Err(r) => {
                // The detail is a fixed sentence, never token material.
                assert!(
                    !r.detail.contains("alice") && !r.detail.contains("h1"),
                    "{name}"
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn controls_are_accepted() {
    let (settings, keys) = (settings(), keys());
    let good = good_claims();
    let c = |extra| claims_with(extra);
    let cases = [
        ("HS256", raw(HS, &good, Signer::Hs)),
        ("RS256", raw(RS, &good, Signer::Rs)),
        ("ES256", raw(ES, &good, Signer::Es)),
        ("EdDSA", raw(ED, &good, Signer::Ed)),
        (
            "expiry just inside the leeway",
            hs(&c(json!({"exp": NOW - 29}))),
        ),
        (
            "nbf just inside the leeway",
            hs(&c(json!({"nbf": NOW + 29}))),
        ),
        (
            "nbf and iat in the past",
            hs(&c(json!({"nbf": NOW - 10, "iat": NOW - 10}))),
        ),
        (
            "aud array naming us",
            hs(&c(json!({"aud": ["other", AUD]}))),
        ),
        (
            "typ at+jwt",
            raw(
                r#"{"alg":"HS256","kid":"h1","typ":"at+jwt"}"#,
                &good,
                Signer::Hs,
            ),
        ),
        (
            "typ application/JWT",
            raw(
                r#"{"alg":"HS256","kid":"h1","typ":"application/JWT"}"#,
                &good,
                Signer::Hs,
            ),
        ),
        (
            "no typ",
            raw(r#"{"alg":"HS256","kid":"h1"}"#, &good, Signer::Hs),
        ),
        (
            "no kid, one key of the family",
            raw(r#"{"alg":"RS256"}"#, &good, Signer::Rs),
        ),
        (
            "jku ignored, verified with the configured key",
            raw(
                r#"{"alg":"ES256","kid":"e1","jku":"https://evil.test/jwks.json"}"#,
                &good,
                Signer::Es,
            ),
        ),
        (
            "null mapped claims",
            hs(&c(json!({"groups": null, "tenant": null}))),
        ),
    ];
    for (name, token) in cases {
        if let Err(r) = verify(&settings, &keys, &token, NOW) {
            panic!("{name}: refused with {} ({})", r.code, r.detail);
        }
    }
}

#[test]
fn claims_map_into_the_principal() {
    let token = hs(&claims_with(json!({
        "groups": ["traders", "eu"],
        "tenant": "acme-eu",
        "risk_level": "high",
        "scope": "orders:write",
    })));
    let v = verify(&settings(), &keys(), &token, NOW).unwrap();
    let p = v.principal;
    assert_eq!(&*p.subject, "alice");
    assert_eq!(&*p.issuer, ISS);
    assert!(p.in_group("traders") && p.in_group("eu") && p.groups.len() == 2);
    assert_eq!(p.tenant, Some(TenantNamespace::parse("acme-eu").unwrap()));
    assert_eq!(p.risk, Some(RiskLevel::High));
    assert_eq!(
        p.expires_at,
        Some(std::time::UNIX_EPOCH + Duration::from_secs(NOW + 300))
    );
    assert_eq!(p.claims["scope"], "orders:write");
    assert_eq!(v.exp, NOW + 300);
}

#[test]
fn custom_claim_names_and_required_claims() {
    let mut s = settings();
    s.groups_claim = "roles".into();
    s.tenant_claim = "org".into();
    s.risk_claim = "risk".into();
    s.required_claims = Box::new(["scope".into()]);
    let token = hs(&claims_with(json!({
        "roles": ["admin"], "org": "acme", "risk": "critical", "scope": "x",
        "groups": 5, "tenant": "NOT VALID", "risk_level": 1,
    })));
    let p = verify(&s, &keys(), &token, NOW).unwrap().principal;
    assert!(p.in_group("admin"));
    assert_eq!(p.tenant.unwrap(), "acme");
    assert_eq!(p.risk, Some(RiskLevel::Critical));
    let without_scope = hs(&claims_with(json!({})));
    assert_eq!(
        verify(&s, &keys(), &without_scope, NOW)
            .unwrap_err()
            .code
            .as_str(),
        CLAIM_INVALID
    );
    let null_scope = hs(&claims_with(json!({"scope": null})));
    assert_eq!(
        verify(&s, &keys(), &null_scope, NOW)
            .unwrap_err()
            .code
            .as_str(),
        CLAIM_INVALID
    );
}

#[test]
fn missing_typ_refused_when_configured() {
    let mut s = settings();
    s.allow_missing_typ = false;
    let token = raw(r#"{"alg":"HS256","kid":"h1"}"#, &good_claims(), Signer::Hs);
    assert_eq!(
        verify(&s, &keys(), &token, NOW).unwrap_err().code.as_str(),
        INVALID
    );
    assert!(verify(&s, &keys(), &hs(&good_claims()), NOW).is_ok());
}

#[test]
fn no_kid_with_two_keys_of_the_family_is_refused() {
    let keys = one_issuer(
        KeySet::new(vec![
            JwtKey::hmac(HMAC_SECRET).unwrap(),
            JwtKey::hmac([9u8; 32]).unwrap(),
        ])
        .unwrap(),
    );
    let token = raw(r#"{"alg":"HS256"}"#, &good_claims(), Signer::Hs);
    assert_eq!(
        verify(&settings(), &keys, &token, NOW)
            .unwrap_err()
            .code
            .as_str(),
        INVALID
    );
}

// --- Through the layer's header handling, on the real clock.

fn real_layer() -> JwtAuthLayer {
    JwtAuthLayer::builder()
        .issuer(ISS)
        .audience(AUD)
        .algorithms([Algorithm::HS256, Algorithm::RS256])
        .key(JwtKey::hmac(HMAC_SECRET).unwrap().with_kid("h1"))
        .key(JwtKey::rsa_pem(RSA_PUB).unwrap().with_kid("r1"))
        .build()
        .unwrap()
}

fn live_token() -> String {
    let now = super::verify::unix_now();
    hs(&json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now + 300}).to_string())
}

fn headers(values: &[&[u8]]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append("authorization", HeaderValue::from_bytes(v).unwrap());
    }
    h
}

#[test]
fn bearer_scheme_variants() {
    let layer = real_layer();
    let t = live_token();
    let ok = |v: String| {
        layer
            .authenticate(&headers(&[v.as_bytes()]))
            .map(|p| p.subject)
    };
    let code = |v: &[&[u8]]| {
        layer
            .authenticate(&headers(v))
            .unwrap_err()
            .code()
            .to_owned()
    };
    assert_eq!(&*ok(format!("Bearer {t}")).unwrap(), "alice");
    assert_eq!(&*ok(format!("bearer {t}")).unwrap(), "alice");
    assert_eq!(&*ok(format!("BEARER {t}")).unwrap(), "alice");
    assert_eq!(&*ok(format!("Bearer   {t}")).unwrap(), "alice");
    assert_eq!(code(&[]), MISSING);
    assert_eq!(code(&[format!("Basic {t}").as_bytes()]), MISSING);
    assert_eq!(code(&[format!("Token {t}").as_bytes()]), MISSING);
    assert_eq!(code(&[format!("Bearer{t}").as_bytes()]), MISSING);
    assert_eq!(code(&[b"Bearer"]), MALFORMED);
    assert_eq!(code(&[b"Bearer "]), MALFORMED);
    assert_eq!(code(&[format!("Bearer {t} {t}").as_bytes()]), MALFORMED);
    assert_eq!(code(&[format!("Bearer {t},").as_bytes()]), MALFORMED);
    assert_eq!(code(&[b"Bearer \xff\xfe"]), MALFORMED);
    assert_eq!(
        code(&[&[format!("Bearer {t}").as_bytes(), b"\xff"].concat()]),
        MALFORMED
    );
    assert_eq!(code(&[format!("Bearer {t}\ta").as_bytes()]), MALFORMED);
    assert_eq!(code(&[format!("Bearer a\t{t}").as_bytes()]), MALFORMED);
    let two = format!("Bearer {t}");
    assert_eq!(code(&[two.as_bytes(), two.as_bytes()]), MALFORMED);
    // The 401 asks for a bearer token; an error attribute only when one was sent.
    let e = layer.authenticate(&headers(&[])).unwrap_err();
    assert_eq!(e.code(), MISSING);
}

#[test]
fn a_cached_token_is_still_refused_once_expired() {
    // The layer's cache stores `exp` and re-checks it on every hit; a token
    // whose exp has passed but which is inside the leeway is verified again
    // (and refused once past the leeway) rather than served from cache.
    let layer = JwtAuthLayer::builder()
        .issuer(ISS)
        .audience(AUD)
        .algorithms([Algorithm::HS256])
        .leeway(Duration::ZERO)
        .key(JwtKey::hmac(HMAC_SECRET).unwrap())
        .build()
        .unwrap();
    let now = super::verify::unix_now();
    let token = raw(
        r#"{"alg":"HS256"}"#,
        &json!({"iss": ISS, "aud": AUD, "sub": "a", "exp": now + 2}).to_string(),
        Signer::Hs,
    );
    assert!(layer.verify_token(&token).is_ok());
    assert!(layer.verify_token(&token).is_ok());
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(layer.verify_token(&token).unwrap_err().code(), EXPIRED);
}

#[test]
fn tokens_are_cached_per_layer_and_keyed_by_the_whole_token() {
    let layer = real_layer();
    let t = live_token();
    let first = layer.verify_token(&t).unwrap();
    let second = layer.verify_token(&t).unwrap();
    // Same Arcs: the second came from the cache, not a fresh parse.
    assert!(Arc::ptr_eq(&first.claims, &second.claims));
    // A different token with the same prefix is verified on its own.
    let forged = format!("{}x", &t[..t.len() - 1]);
    assert_eq!(layer.verify_token(&forged).unwrap_err().code(), INVALID);
}

#[test]
fn rejections_never_echo_the_token() {
    let layer = real_layer();
    let secretish = format!(
        "{}.{}.c2VjcmV0",
        b64(HS.as_bytes()),
        b64(b"{\"sub\":\"topsecret\"}")
    );
    let e = layer.verify_token(&secretish).unwrap_err();
    assert!(!e.detail().contains("topsecret") && !e.detail().contains(&secretish));
}

#[test]
fn build_refuses_incomplete_or_weak_configs() {
    use super::AuthConfigError as E;
    let base = || {
        JwtAuthLayer::builder()
            .algorithms([Algorithm::HS256])
            .key(JwtKey::hmac(HMAC_SECRET).unwrap())
    };
    assert!(matches!(
        base().audience(AUD).build(),
        Err(E::MissingIssuer)
    ));
    assert!(matches!(
        base().issuer(ISS).build(),
        Err(E::MissingAudience)
    ));
    assert!(matches!(
        JwtAuthLayer::builder().issuer(ISS).audience(AUD).build(),
        Err(E::NoKeys)
    ));
    assert!(matches!(
        base().issuer(ISS).audience(AUD).algorithms([]).build(),
        Err(E::NoAlgorithms)
    ));
    assert!(matches!(
        base()
            .issuer(ISS)
            .audience(AUD)
            .leeway(Duration::from_secs(301))
            .build(),
        Err(E::LeewayTooLarge(_))
    ));
    // An HMAC key with only asymmetric algorithms allowed (the default).
    assert!(matches!(
        JwtAuthLayer::builder()
            .issuer(ISS)
            .audience(AUD)
            .key(JwtKey::hmac(HMAC_SECRET).unwrap())
            .build(),
        Err(E::UnusableKey { .. })
    ));
    assert!(matches!(
        base().issuer(ISS).audience(AUD).jwks("{}").build(),
        Err(E::Key(_))
    ));
    assert!(matches!(
        base().issuer(ISS).audience(AUD).groups_claim("").build(),
        Err(E::InvalidSetting(_))
    ));
    assert!(matches!(
        base()
            .issuer(ISS)
            .audience(AUD)
            .jwks_file("/nonexistent/finmesh/jwks.json")
            .build(),
        Err(E::JwksFile(_))
    ));
    assert!(base().issuer(ISS).audience(AUD).build().is_ok());
}

/// With both crypto backends compiled in (`--all-features`), jsonwebtoken
/// has no usable process default (here it panics); finmesh verifies
/// through aws-lc-rs regardless.
#[cfg(all(feature = "auth", feature = "auth-rust-crypto"))]
#[test]
fn rs256_and_es256_verify_with_both_backends_compiled_in() {
    let layer = JwtAuthLayer::builder()
        .issuer(ISS)
        .audience(AUD)
        .key(JwtKey::rsa_pem(RSA_PUB).unwrap())
        .key(JwtKey::ec_pem(EC_PUB).unwrap())
        .build()
        .unwrap();
    let now = super::verify::unix_now();
    let claims = json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now + 60}).to_string();
    for token in [
        raw(r#"{"alg":"RS256"}"#, &claims, Signer::Rs),
        raw(r#"{"alg":"ES256"}"#, &claims, Signer::Es),
    ] {
        assert_eq!(&*layer.verify_token(&token).unwrap().subject, "alice");
    }
}

#[tokio::test]
async fn the_service_inserts_the_principal_and_labels_subject_and_risk() {
    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};

    let svc = ServiceBuilder::new().layer(real_layer()).service_fn(
        |req: http::Request<Full<bytes::Bytes>>| async move {
            let p = req.extensions().get::<crate::Principal>().cloned();
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from(
                p.map(|p| p.subject.to_string()).unwrap_or_default(),
            ))))
        },
    );
    let now = super::verify::unix_now();
    let token = hs(&json!({
        "iss": ISS, "aud": AUD, "sub": "carol", "exp": now + 300, "risk_level": "critical",
    })
    .to_string());
    let mut req = http::Request::builder()
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    let labels = crate::RequestLabels::get_or_insert(req.extensions_mut());
    // A caller-supplied principal is replaced by the verified one.
    req.extensions_mut()
        .insert(crate::Principal::new("mallory", "forged"));
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap();
    assert_eq!(body.to_bytes(), "carol");
    let seen = labels.snapshot();
    assert_eq!(seen.subject.as_deref(), Some("carol"));
    assert_eq!(seen.risk, Some(RiskLevel::Critical));

    // A refusal is recorded in the labels too, and nothing reaches the handler.
    let mut req = http::Request::new(Full::default());
    let labels = crate::RequestLabels::get_or_insert(req.extensions_mut());
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let seen = labels.snapshot();
    assert_eq!(seen.rejection.unwrap().code, MISSING);
    assert_eq!(seen.subject, None);
}

// --- Issuer binding: each key verifies only its own issuer's tokens, and
// each issuer's subjects and groups get that issuer's RBAC names.

const ISS_A: &str = "https://idp-a.test";
const ISS_B: &str = "https://idp-b.test";
const ISS_C: &str = "https://idp-c.test";
const SECRET_B: &[u8] = b"issuer B's HMAC secret, 32 bytes or more";
const SECRET_C: &[u8] = b"issuer C's HMAC secret, 32 bytes or more";
const SA: &str = "system:serviceaccount:tenant-a:ledger";

/// A: corporate, `idp-a:` prefixes. B: a service-account issuer
/// (`idp-b:` prefixes, ServiceAccounts allowed, its own audience). C: no
/// prefixes. All three sign HS256 under the same `kid`.
fn three_issuers() -> Issuers {
    super::crypto::panicking_process_default();
    let trust = |url: &str, aud: &str, secret: &[u8], prefix: &str, sa: bool| IssuerTrust {
        url: Arc::from(url),
        audiences: Box::new([aud.into()]),
        keys: KeySource::Static(Arc::new(
            KeySet::new(vec![JwtKey::hmac(secret).unwrap().with_kid("k")]).unwrap(),
        )),
        username_prefix: prefix.into(),
        groups_prefix: prefix.into(),
        allow_service_accounts: sa,
        foreign_user_prefixes: Box::default(),
        foreign_group_prefixes: Box::default(),
    };
    let mut issuers = [
        trust(ISS_A, AUD, HMAC_SECRET, "idp-a:", false),
        trust(ISS_B, "partner-api", SECRET_B, "idp-b:", true),
        trust(ISS_C, AUD, SECRET_C, "", false),
    ];
    super::trust::fence_prefixes(&mut issuers);
    Issuers(Box::new(issuers))
}

fn hs_with(secret: &[u8], claims: serde_json::Value) -> String {
    let message = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","kid":"k"}"#),
        b64(claims.to_string().as_bytes())
    );
    let sig = super::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    );
    format!("{message}.{sig}")
}

fn from(iss: &str, aud: &str, sub: &str, groups: &[&str]) -> serde_json::Value {
    json!({"iss": iss, "aud": aud, "sub": sub, "exp": NOW + 300, "groups": groups})
}

#[test]
fn identities_are_bound_to_their_issuer() {
    let issuers = three_issuers();
    const SA_GROUPS: &[&str] = &["system:serviceaccounts", "system:serviceaccounts:tenant-a"];
    // (row, token, Ok((user, groups)) or Err(code))
    type Want = Result<(&'static str, &'static [&'static str]), &'static str>;
    let rows: Vec<(&str, String, Want)> = vec![
        (
            "A's token, A's key",
            hs_with(HMAC_SECRET, from(ISS_A, AUD, "alice", &[])),
            Ok(("idp-a:alice", &[])),
        ),
        (
            "claims A, signed with B's key under the same kid",
            hs_with(SECRET_B, from(ISS_A, AUD, "alice", &[])),
            Err(INVALID),
        ),
        (
            "claims B, signed with A's key",
            hs_with(HMAC_SECRET, from(ISS_B, "partner-api", "alice", &[])),
            Err(INVALID),
        ),
        (
            "claims C (no prefix), signed with A's key",
            hs_with(HMAC_SECRET, from(ISS_C, AUD, "alice", &[])),
            Err(INVALID),
        ),
        (
            "an unknown issuer",
            hs_with(HMAC_SECRET, from("https://idp-z.test", AUD, "alice", &[])),
            Err(INVALID),
        ),
        (
            "no issuer",
            hs_with(
                HMAC_SECRET,
                json!({"aud": AUD, "sub": "alice", "exp": NOW + 300}),
            ),
            Err(INVALID),
        ),
        (
            "B's alice is not A's alice",
            hs_with(SECRET_B, from(ISS_B, "partner-api", "alice", &[])),
            Ok(("idp-b:alice", &[])),
        ),
        (
            "audiences are per issuer: A's token for B's audience",
            hs_with(HMAC_SECRET, from(ISS_A, "partner-api", "alice", &[])),
            Err(INVALID),
        ),
        (
            "groups get the issuer's prefix",
            hs_with(HMAC_SECRET, from(ISS_A, AUD, "bob", &["treasury"])),
            Ok(("idp-a:bob", &["idp-a:treasury"])),
        ),
        (
            "ServiceAccount-shaped sub from A (not allowed) is prefixed",
            hs_with(HMAC_SECRET, from(ISS_A, AUD, SA, &[])),
            Ok(("idp-a:system:serviceaccount:tenant-a:ledger", &[])),
        ),
        (
            "ServiceAccount-shaped sub from C (not allowed, no prefix) is refused",
            hs_with(SECRET_C, from(ISS_C, AUD, SA, &[])),
            Err(CLAIM_INVALID),
        ),
        (
            "any system: user from C is refused",
            hs_with(SECRET_C, from(ISS_C, AUD, "system:admin", &[])),
            Err(CLAIM_INVALID),
        ),
        (
            "a system: group from C is refused",
            hs_with(SECRET_C, from(ISS_C, AUD, "bob", &["system:masters"])),
            Err(CLAIM_INVALID),
        ),
        (
            "C (unprefixed) cannot name A's alice",
            hs_with(SECRET_C, from(ISS_C, AUD, "idp-a:alice", &[])),
            Err(CLAIM_INVALID),
        ),
        (
            "C (unprefixed) cannot name B's groups",
            hs_with(SECRET_C, from(ISS_C, AUD, "carol", &["idp-b:treasury"])),
            Err(CLAIM_INVALID),
        ),
        (
            "C's names are as they are",
            hs_with(SECRET_C, from(ISS_C, AUD, "alice", &["treasury"])),
            Ok(("alice", &["treasury"])),
        ),
        (
            "ServiceAccount from B (allowed)",
            hs_with(SECRET_B, from(ISS_B, "partner-api", SA, &[])),
            Ok((SA, SA_GROUPS)),
        ),
        (
            "ServiceAccount from B keeps its claimed groups prefixed",
            hs_with(
                SECRET_B,
                from(ISS_B, "partner-api", SA, &["system:masters"]),
            ),
            Ok((
                SA,
                &[
                    "system:serviceaccounts",
                    "system:serviceaccounts:tenant-a",
                    "idp-b:system:masters",
                ],
            )),
        ),
        (
            "a malformed ServiceAccount name from B",
            hs_with(
                SECRET_B,
                from(ISS_B, "partner-api", "system:serviceaccount:tenant-a", &[]),
            ),
            Err(CLAIM_INVALID),
        ),
        (
            "another system: user from B is prefixed",
            hs_with(SECRET_B, from(ISS_B, "partner-api", "system:admin", &[])),
            Ok(("idp-b:system:admin", &[])),
        ),
    ];
    let mut wrong = Vec::new();
    let mut untrusted_details = Vec::new();
    for (row, token, want) in rows {
        let got = verify(&settings(), &issuers, &token, NOW).map(|v| v.principal);
        let ok = match (&got, want) {
            (Ok(p), Ok((user, groups))) => {
                let iss = token_iss(&token);
                &*p.subject == user
                    && p.groups.iter().map(|g| &**g).eq(groups.iter().copied())
                    && *p.issuer == *iss
            }
            (Err(r), Err(code)) => {
                if r.code.as_str() == INVALID && !row.starts_with("audiences") {
                    untrusted_details.push(r.detail);
                }
                r.code.as_str() == code
            }
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "{row}: got {:?}, want {want:?}",
                got.map(|p| (p.subject, p.groups, p.issuer))
                    .map_err(|r| (r.code.as_str(), r.detail))
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    // Wrong key, unknown issuer, no issuer: one sentence, so probing
    // does not reveal which issuers (or kids) exist.
    untrusted_details.dedup();
    assert_eq!(untrusted_details.len(), 1, "{untrusted_details:?}");
}

fn token_iss(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["iss"].as_str().unwrap().to_owned()
}

#[test]
fn the_cache_keeps_each_issuers_principal() {
    // Two issuers sharing a kid: each token is verified with its own
    // issuer's key, and the cached principal keeps its issuer and names.
    let layer = JwtAuthLayer::builder()
        .algorithms([Algorithm::HS256])
        .issuer_config(
            super::Issuer::new(ISS_A)
                .audience(AUD)
                .key(JwtKey::hmac(HMAC_SECRET).unwrap().with_kid("k")),
        )
        .issuer_config(
            super::Issuer::new(ISS_B)
                .audience(AUD)
                .key(JwtKey::hmac(SECRET_B).unwrap().with_kid("k")),
        )
        .build()
        .unwrap();
    let now = super::verify::unix_now();
    let claims = |iss: &str| json!({"iss": iss, "aud": AUD, "sub": "alice", "exp": now + 300});
    let a = hs_with(HMAC_SECRET, claims(ISS_A));
    let b = hs_with(SECRET_B, claims(ISS_B));
    for _ in 0..2 {
        let p = layer.verify_token(&a).unwrap();
        assert_eq!(
            (&*p.subject, &*p.issuer),
            ("https://idp-a.test#alice", ISS_A)
        );
        let p = layer.verify_token(&b).unwrap();
        assert_eq!(
            (&*p.subject, &*p.issuer),
            ("https://idp-b.test#alice", ISS_B)
        );
    }
    // A cached A token's claims with B's signature is a different token,
    // and B's key does not verify A's claims.
    assert_eq!(
        layer
            .verify_token(&hs_with(SECRET_B, claims(ISS_A)))
            .unwrap_err()
            .code(),
        INVALID
    );
}

#[test]
fn build_keeps_issuers_apart() {
    use super::{AuthConfigError as E, Issuer};
    let key = || JwtKey::hmac(HMAC_SECRET).unwrap();
    let base = || JwtAuthLayer::builder().algorithms([Algorithm::HS256]);
    let issuer = |url: &str| Issuer::new(url).audience(AUD).key(key());
    // Two issuers in the one-issuer form would share their keys.
    assert!(matches!(
        base()
            .issuer(ISS_A)
            .issuer(ISS_B)
            .audience(AUD)
            .key(key())
            .build(),
        Err(E::IssuersShareKeys)
    ));
    // Keys or audiences on the builder belong to its .issuer().
    for b in [
        base().key(key()).issuer_config(issuer(ISS_A)),
        base().audience(AUD).issuer_config(issuer(ISS_A)),
    ] {
        assert!(matches!(b.build(), Err(E::InvalidSetting(_))));
    }
    assert!(matches!(
        base().issuer_config(Issuer::new(ISS_A).key(key())).build(),
        Err(E::MissingAudience)
    ));
    assert!(matches!(
        base()
            .issuer_config(Issuer::new(ISS_A).audience(AUD))
            .build(),
        Err(E::NoKeys)
    ));
    assert!(matches!(
        base()
            .issuer_config(Issuer::new(ISS_A).audience(AUD).jwks("{}"))
            .build(),
        Err(E::Key(_))
    ));
    for b in [
        // The same issuer twice.
        base()
            .issuer_config(issuer(ISS_A))
            .issuer_config(issuer(ISS_A)),
        base()
            .issuer(ISS_A)
            .audience(AUD)
            .key(key())
            .issuer_config(issuer(ISS_A)),
        // Prefixes that would share names.
        base()
            .issuer_config(issuer(ISS_A).username_prefix("x:"))
            .issuer_config(issuer(ISS_B).username_prefix("x:")),
        base()
            .issuer_config(issuer(ISS_A).groups_prefix(""))
            .issuer_config(issuer(ISS_B).groups_prefix("")),
        base()
            .issuer(ISS_A)
            .audience(AUD)
            .key(key())
            .issuer_config(issuer(ISS_B).username_prefix("")),
        // Kubernetes' own names.
        base().issuer_config(issuer(ISS_A).username_prefix("system:a:")),
        base().issuer_config(issuer(ISS_A).groups_prefix("system:")),
        base().issuer_config(issuer("")),
    ] {
        assert!(matches!(b.build(), Err(E::InvalidSetting(_))));
    }
    // The one-issuer form plus configured issuers, each with defaults.
    assert!(
        base()
            .issuer(ISS_A)
            .audience(AUD)
            .key(key())
            .issuer_config(issuer(ISS_B))
            .issuer_config(issuer(ISS_C).allow_service_accounts(true))
            .build()
            .is_ok()
    );
}

#[test]
fn the_vectorised_header_check_accepts_exactly_what_to_str_does() {
    for b in 0..=u8::MAX {
        for value in [vec![b], vec![b'a', b, b'z']] {
            let Ok(header) = http::HeaderValue::from_bytes(&value) else {
                continue;
            };
            assert_eq!(
                super::layer::visible_ascii(&value),
                header.to_str().is_ok(),
                "byte {b:#04x}"
            );
        }
    }
}
