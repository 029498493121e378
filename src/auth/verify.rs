//! Token verification, in the order RFC 8725 asks for: bound the input,
//! parse strictly, check the algorithm against the allowlist, find the
//! issuer the token names, pick one of *that issuer's* keys of the
//! algorithm's family, check the signature, and only then read and
//! validate the claims and map them to the issuer's RBAC names.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::AuthCode;
use super::algorithm::algorithm_from_name;
use super::config::{Settings, normalize_typ};
use super::crypto::verify_signature;
use super::issuer::Issuers;
use super::key_set::NoKey;
use crate::principal::{Principal, RiskLevel};
use crate::tenant::TenantNamespace;

/// Why a token was refused: a stable code and a fixed human detail. The
/// detail is always a static string, so it can never echo the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: AuthCode,
    pub(crate) detail: &'static str,
}

const fn refuse(code: AuthCode, detail: &'static str) -> Refusal {
    Refusal { code, detail }
}

const fn malformed(detail: &'static str) -> Refusal {
    refuse(AuthCode::Malformed, detail)
}

const fn invalid(detail: &'static str) -> Refusal {
    refuse(AuthCode::Invalid, detail)
}

const fn claim_invalid(detail: &'static str) -> Refusal {
    refuse(AuthCode::ClaimInvalid, detail)
}

/// The latest NumericDate accepted (9999-12-31T23:59:59Z): anything larger
/// is a bug or an attack, and keeps `SystemTime` arithmetic in range.
const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// The JOSE header fields we read. `jku`, `x5u`, `jwk` and `x5c` are
/// deliberately not among them: keys are never taken from the token
/// (RFC 8725 §3.10). Unknown fields are ignored; duplicate known fields
/// are an error (serde's derive refuses them).
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// A JSON object that refuses duplicate member names: two `sub`s (or two
/// `exp`s) are how parser-differential attacks start, and RFC 7519 §4
/// allows rejecting them.
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = Map::new();
                while let Some((k, v)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&k) {
                        return Err(de::Error::custom("duplicate member"));
                    }
                    map.insert(k, v);
                }
                Ok(StrictObject(map))
            }
        }
        d.deserialize_map(V)
    }
}

fn is_b64url(segment: &str) -> bool {
    segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Decodes one base64url segment that must hold a JSON object; `None` if
/// it is not strict unpadded base64url or does not start like an object.
fn decode_object(segment: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    // serde's derived `Deserialize` also accepts a JSON array of the
    // fields in order; a JOSE header or claims set is an object, full stop.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    Some(bytes)
}

/// A NumericDate (RFC 7519 §2): we accept non-negative integers only.
/// Fractions are legal in the RFC but no mainstream issuer emits them, and
/// accepting them would mean choosing a rounding; refusing is the
/// conservative choice (documented in the module docs).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Refusal> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v <= MAX_NUMERIC_DATE => Ok(Some(v)),
            _ => Err(claim_invalid(
                "a time claim (exp, nbf, iat) is not a non-negative integer NumericDate",
            )),
        },
        Some(_) => Err(claim_invalid(
            "a time claim (exp, nbf, iat) is not a number",
        )),
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A verified token: who, and until when it may be cached.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) principal: Principal,
    pub(crate) exp: u64,
}

/// The one detail for every way a token is not signed by a key of the
/// issuer it names: an unknown `iss`, an unknown `kid`, no key for the
/// algorithm, a bad signature.
///
/// Security: one sentence, so that probing with unsigned tokens cannot
/// tell which issuers are configured (or which `kid`s they have). The
/// precise reason is logged at debug level.
const UNTRUSTED: &str = "the token is not signed by a key of an accepted issuer";

fn untrusted(reason: &'static str) -> Refusal {
    tracing::debug!(target: "finmesh::auth", reason, "token refused");
    invalid(UNTRUSTED)
}

/// Verifies `token` against `issuers` and `settings` at time `now`
/// (seconds).
pub(crate) fn verify(
    settings: &Settings,
    issuers: &Issuers,
    token: &str,
    now: u64,
) -> Result<Verified, Refusal> {
    if token.len() > settings.max_token_len {
        return Err(malformed("the token is longer than the configured limit"));
    }

    // --- Structure: exactly three base64url segments.
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("a JWS compact token has exactly three segments"));
    };
    if h64.is_empty() || p64.is_empty() {
        return Err(malformed("empty header or payload segment"));
    }
    if !(is_b64url(h64) && is_b64url(p64) && is_b64url(s64)) {
        return Err(malformed("a segment is not unpadded base64url"));
    }

    // --- Header.
    let header_bytes =
        decode_object(h64).ok_or(malformed("the header is not a base64url JSON object"))?;
    let header: Header<'_> = serde_json::from_slice(&header_bytes)
        .map_err(|_| malformed("the header is not a JSON object of well-typed fields"))?;
    let alg_name = header.alg.ok_or(malformed("the header has no alg"))?;
    if alg_name.eq_ignore_ascii_case("none") {
        return Err(invalid("unsigned tokens (alg none) are never accepted"));
    }
    let alg = algorithm_from_name(&alg_name).ok_or(invalid("unsupported algorithm"))?;
    if !settings.algorithms.contains(alg) {
        return Err(invalid("the algorithm is not allowed"));
    }
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: extensions we do not understand must fail.
        return Err(invalid("critical header extensions are not supported"));
    }
    match header.typ.as_deref() {
        None if settings.allow_missing_typ => {}
        None => return Err(invalid("the token has no typ")),
        Some(typ) => {
            let typ = normalize_typ(typ);
            if !settings.types.iter().any(|t| **t == *typ) {
                return Err(invalid("the token typ is not accepted"));
            }
        }
    }

    // --- Issuer. The claims are parsed (strictly, bounded by the token
    // length) before the signature is checked, but only `iss` is read, and
    // only to choose whose keys may verify the token.
    //
    // Security: each key belongs to one issuer. A token naming issuer A is
    // verified with A's keys alone, so B's key — or B's `kid` — can never
    // make it A's; after the signature, the `iss` that chose the keys is
    // the `iss` the principal gets.
    let StrictObject(claims) = decode_object(p64)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(malformed(
            "the claims are not a JSON object without duplicate names",
        ))?;
    let issuer = match claims.get("iss") {
        Some(Value::String(iss)) => issuers
            .find(iss)
            .ok_or_else(|| untrusted("the issuer is not accepted"))?,
        None => return Err(untrusted("the token has no iss")),
        Some(_) => return Err(invalid("iss is not a string")),
    };

    // --- Key: only this issuer's keys bound to this algorithm are
    // candidates.
    let keys = issuer.keys.current();
    let key = keys
        .select(alg, header.kid.as_deref())
        .map_err(|e| match e {
            NoKey::UnknownKid => {
                untrusted("the issuer has no key with the token's kid for its algorithm")
            }
            NoKey::Ambiguous => untrusted(
                "the token names no kid and the issuer has several keys of its algorithm family",
            ),
            NoKey::NoneForAlgorithm => untrusted("the issuer has no key for the token's algorithm"),
        })?;

    // --- Signature, before any claim is believed.
    let message = &token[..h64.len() + 1 + p64.len()];
    if !verify_signature(s64, message.as_bytes(), key.decoding_key(), alg) {
        return Err(untrusted("the signature does not verify"));
    }
    drop(keys);

    // --- Claims.
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => issuer.accepts_audience(aud),
        Some(Value::Array(auds)) => {
            if !auds.iter().all(Value::is_string) {
                return Err(invalid("aud is not a string or an array of strings"));
            }
            auds.iter()
                .filter_map(Value::as_str)
                .any(|aud| issuer.accepts_audience(aud))
        }
        Some(_) => return Err(invalid("aud is not a string or an array of strings")),
        None => false,
    };
    if !audience_ok {
        return Err(invalid("the audience is missing or not accepted"));
    }

    let exp = numeric_date(&claims, "exp")?.ok_or(claim_invalid("the token has no exp"))?;
    let nbf = numeric_date(&claims, "nbf")?;
    numeric_date(&claims, "iat")?;
    // RFC 7519 §4.1.4: not accepted on or after exp.
    if now >= exp.saturating_add(settings.leeway) {
        return Err(refuse(AuthCode::Expired, "the token has expired"));
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(settings.leeway)) {
        return Err(refuse(AuthCode::NotYetValid, "the token is not valid yet"));
    }

    let (subject, mut groups) = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => issuer.user(s)?,
        Some(Value::String(_)) => return Err(claim_invalid("sub is empty")),
        Some(_) => return Err(claim_invalid("sub is not a string")),
        None => return Err(claim_invalid("the token has no sub")),
    };
    if settings
        .required_claims
        .iter()
        .any(|c| claims.get(&**c).is_none_or(Value::is_null))
    {
        return Err(claim_invalid("a required claim is missing"));
    }
    match claims.get(&*settings.groups_claim) {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            groups.reserve(items.len());
            for item in items {
                let group = item
                    .as_str()
                    .ok_or(claim_invalid("the groups claim is not an array of strings"))?;
                groups.push(issuer.group(group)?);
            }
        }
        Some(_) => return Err(claim_invalid("the groups claim is not an array of strings")),
    }
    let tenant = match claims.get(&*settings.tenant_claim) {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(
            TenantNamespace::parse(t)
                .map_err(|_| claim_invalid("the tenant claim is not a valid namespace"))?,
        ),
        Some(_) => return Err(claim_invalid("the tenant claim is not a string")),
    };
    let risk = match claims.get(&*settings.risk_claim) {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => Some(r.parse::<RiskLevel>().map_err(|_| {
            claim_invalid("the risk level claim is not low, medium, high or critical")
        })?),
        Some(_) => return Err(claim_invalid("the risk level claim is not a string")),
    };

    let principal = Principal {
        subject,
        groups: groups.into(),
        tenant,
        risk,
        issuer: Arc::clone(&issuer.url),
        expires_at: UNIX_EPOCH.checked_add(Duration::from_secs(exp)),
        claims: Arc::new(claims),
        peer: None,
    };
    Ok(Verified { principal, exp })
}
