//! JWT bearer authentication: [`JwtAuthLayer`] verifies the caller's token
//! to the standard of RFC 8725 (JWT Best Current Practices) and hands inner
//! layers a [`Principal`](crate::Principal).
//!
//! # Where it sits
//!
//! Fourth in the stack: inside telemetry and stream deadlines, outside the
//! tenant layer (which checks the principal's tenant claim) and RBAC (which
//! authorizes the principal). Health probes are answered before it, so they
//! need no token. On success the [`Principal`](crate::Principal) goes into
//! the request extensions, and the subject and risk level into the
//! [`RequestLabels`](crate::RequestLabels) when an outer layer put one
//! there. On failure the request is answered with 401 and
//! `WWW-Authenticate: Bearer error="invalid_token"` (just `Bearer` when
//! no token was sent), or gRPC `UNAUTHENTICATED` (16), with one of the
//! stable [`AuthCode`]s.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use finmesh::Principal;
//! use finmesh::auth::{Algorithm, JwtAuthLayer, JwtKey};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = b"an HMAC secret of at least 32 bytes!";
//! let auth = JwtAuthLayer::builder()
//!     .issuer("https://idp.example")
//!     .audience("payments")
//!     .algorithms([Algorithm::HS256])
//!     .key(JwtKey::hmac(secret)?.with_kid("2025-01"))
//!     .build()?;
//!
//! let svc = ServiceBuilder::new()
//!     .layer(auth)
//!     .service_fn(|req: Request<Full<Bytes>>| async move {
//!         let who = req.extensions().get::<Principal>().unwrap();
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who.subject.to_string()))))
//!     });
//!
//! // Mint a token the way the identity provider would.
//! let exp = std::time::SystemTime::now()
//!     .duration_since(std::time::UNIX_EPOCH)?
//!     .as_secs() + 300;
//! let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
//! header.kid = Some("2025-01".into());
//! let claims = serde_json::json!({
//!     "iss": "https://idp.example", "aud": "payments", "sub": "alice",
//!     "exp": exp, "groups": ["traders"], "risk_level": "low",
//! });
//! let token = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret))?;
//!
//! let req = Request::builder()
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(Full::default())?;
//! let res = svc.clone().oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//!
//! let res = svc.oneshot(Request::new(Full::default())).await?;
//! assert_eq!(res.status(), 401);
//! assert_eq!(res.headers()["www-authenticate"], "Bearer");
//! # Ok(())
//! # }
//! ```
//!
//! # What is verified, in order
//!
//! 1. **One bearer token.** Exactly one `Authorization` header with the
//!    `Bearer` scheme (case-insensitive) — which is also how gRPC metadata
//!    arrives. No header, or another scheme, is `auth.missing`; several
//!    headers, an empty token or one with whitespace is `auth.malformed`.
//! 2. **Size and shape.** At most [`max_token_len`] bytes (8 KiB by
//!    default), then exactly three unpadded base64url segments whose header
//!    and claims are JSON *objects* (claims without duplicate names):
//!    otherwise `auth.malformed`.
//! 3. **Algorithm.** `alg` must be on the allowlist (by default the
//!    asymmetric algorithms; HMAC is opt-in). `none` in any spelling is
//!    never accepted. A `crit` header is refused. `typ`, when present,
//!    must be one of the accepted types (`JWT`, `at+jwt` by default,
//!    case-insensitive, `application/` optional). Failures are
//!    `auth.invalid`.
//! 4. **Issuer.** The claims set is parsed (as a JSON object without
//!    duplicate names, else `auth.malformed`) and its `iss` must be a
//!    configured issuer, exactly; only `iss` is read before the signature,
//!    to choose whose keys may verify the token.
//! 5. **Key.** Only the keys of that issuer, bound to the token's
//!    algorithm, are candidates: a key never verifies another issuer's
//!    tokens, and a `kid` is looked up among its issuer's keys only. An
//!    RSA public key is never used as an HMAC secret. Without `kid`,
//!    exactly one key of the algorithm's family (RSA, P-256, P-384,
//!    Ed25519 or HMAC) may be configured for the issuer, and it must allow
//!    the algorithm: a rotation that adds a second key makes kid-less
//!    tokens fail loudly rather than depend on key order. Keys named by
//!    the token (`jku`, `x5u`, `jwk`, `x5c`) are ignored: nothing is ever
//!    fetched on the request path.
//! 6. **Signature**, before any other claim is believed. An unknown or
//!    missing `iss`, an unknown `kid`, no key for the algorithm and a bad
//!    signature are all `auth.invalid` with one and the same detail, so
//!    probing does not reveal which issuers (or `kid`s) exist; the precise
//!    reason is logged at debug level (target `finmesh::auth`).
//! 7. **Claims.** `aud` (a string or an array of strings) must name one of
//!    the issuer's audiences (`auth.invalid`);
//!    `exp` is required; `exp`, `nbf` and `iat` must be non-negative
//!    integer NumericDates — strings, negatives and **fractions** are
//!    refused with `auth.claim_invalid` (RFC 7519 permits fractions, but no
//!    mainstream issuer sends them, and refusing avoids choosing a
//!    rounding); `exp` in the past beyond the leeway is `auth.expired`,
//!    `nbf` in the future beyond it `auth.not_yet_valid`; `sub` must be a
//!    non-empty string, the groups claim an array of strings, the tenant
//!    claim a valid namespace, the risk claim `low`, `medium`, `high` or
//!    `critical`, and every [required claim] present — otherwise
//!    `auth.claim_invalid`.
//! 8. **Names.** `sub` and each group get the issuer's username and groups
//!    prefix (see below); a name that would then start with `system:` is
//!    `auth.claim_invalid`, except a ServiceAccount from an issuer allowed
//!    to mint them.
//!
//! The rejection detail is a fixed sentence per failure: it never echoes
//! the token or any part of it.
//!
//! # Issuers
//!
//! Every key belongs to one issuer. The one-issuer form —
//! [`issuer`](JwtAuthBuilder::issuer), [`audience`](JwtAuthBuilder::audience),
//! [`key`](JwtAuthBuilder::key) on the builder — configures one; further
//! issuers come with [`issuer_config`](JwtAuthBuilder::issuer_config), each
//! an [`Issuer`] with its own audiences, keys or JWKS file, and the
//! prefixes that turn its subjects and groups into RBAC names, as the
//! Kubernetes apiserver's OIDC authenticator does (`--oidc-username-prefix`,
//! `--oidc-groups-prefix`):
//!
//! | | username prefix | groups prefix | ServiceAccounts |
//! |---|---|---|---|
//! | one-issuer form | none | none | never |
//! | [`Issuer`], unset | `<issuer URL>#` (the apiserver's default) | `<issuer URL>#` | only with [`allow_service_accounts(true)`](Issuer::allow_service_accounts) |
//!
//! The one-issuer form keeps names as they are, so existing bindings for
//! `alice` keep working; a `sub` or group starting with `system:` is
//! refused rather than taken for one of Kubernetes' own names, and calling
//! [`issuer`](JwtAuthBuilder::issuer) twice is refused (those issuers would
//! share keys). An [`Issuer`]'s prefixes default to the apiserver's
//! `<issuer URL>#` for both usernames and groups — the apiserver leaves
//! groups unprefixed unless told, but then a partner's `treasury` group
//! would be the corporate one — so `alice` of `https://partner.example` is
//! `https://partner.example#alice`; `""` opts out. Two issuers may not
//! share a username or groups prefix, and no prefix may start with
//! `system:`. The [`Principal`](crate::Principal) carries the prefixed
//! names and its issuer; the raw claims stay in `claims`.
//!
//! ```
//! use finmesh::auth::{Algorithm, Issuer, JwtAuthLayer, JwtKey};
//!
//! let auth = JwtAuthLayer::builder()
//!     .algorithms([Algorithm::HS256])
//!     // The corporate IdP: names as they are.
//!     .issuer("https://login.corp.example")
//!     .audience("payments")
//!     .key(JwtKey::hmac(b"the corporate secret, 32 bytes or more")?.with_kid("k1"))
//!     // A partner: its users are `partner:<sub>`, its groups `partner:<group>`.
//!     .issuer_config(
//!         Issuer::new("https://partner.example")
//!             .audience("payments")
//!             .key(JwtKey::hmac(b"the partner's secret, 32 bytes or more")?.with_kid("k1"))
//!             .username_prefix("partner:")
//!             .groups_prefix("partner:"),
//!     )
//!     // The cluster's service-account issuer: its ServiceAccounts are
//!     // `system:serviceaccount:<ns>:<name>`, as RBAC bindings name them.
//!     .issuer_config(
//!         Issuer::new("https://kubernetes.default.svc")
//!             .audience("payments")
//!             .key(JwtKey::hmac(b"the cluster's secret, 32 bytes or more")?.with_kid("k1"))
//!             .allow_service_accounts(true),
//!     )
//!     .build()?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! # Keys
//!
//! [`JwtKey`]s come from HMAC secrets (at least 32 bytes), RSA, EC P-256 /
//! P-384 and Ed25519 public-key PEM, or a JWKS document. A JWKS *file*
//! ([`JwtAuthBuilder::jwks_file`]) is hot-reloaded through
//! [`config::Watched`](crate::config::Watched): a new version is parsed and
//! validated completely, then swapped in; an invalid one never replaces
//! good keys.
//!
//! # Cache
//!
//! A verified token is remembered (bounded, [`cache_capacity`]), keyed by
//! the whole token, so the next request with it costs a hash lookup instead
//! of a signature check. The entry is the issuer-bound principal (issuer,
//! prefixed names), and the token's own `iss` chose the keys, so a cached
//! token never stands for another issuer's user. An entry is never served
//! past the token's `exp` and dies with the keys that verified it:
//! rotating or removing any issuer's key empties the cache. Only verified
//! tokens enter it.
//!
//! # Crypto backend
//!
//! The `auth` feature verifies with jsonwebtoken's aws-lc-rs backend
//! (several times faster than the pure-Rust one for RS256/ES256);
//! `auth-rust-crypto` alone selects the RustCrypto backend. With both
//! enabled (say `--all-features`), aws-lc-rs is used. Either way finmesh
//! verifies through that backend directly, never through jsonwebtoken's
//! process-wide default provider, so no setup call is needed and what the
//! application installs does not matter. Code that calls jsonwebtoken
//! itself with both backends compiled in (to mint tokens, say) needs a
//! process default: building a layer installs aws-lc-rs when none is
//! installed yet, and [`install_default_crypto_provider`] does the same
//! before any layer is built.
//!
//! [`max_token_len`]: JwtAuthBuilder::max_token_len
//! [`cache_capacity`]: JwtAuthBuilder::cache_capacity
//! [required claim]: JwtAuthBuilder::require_claim

mod algorithm;
mod cache;
mod config;
mod crypto;
mod issuer;
mod jwks;
mod key;
mod key_set;
mod layer;
#[cfg(feature = "mtls")]
mod peer;
mod pem;
mod trust;
mod verify;

#[cfg(test)]
mod hostile_tests;

pub use algorithm::KeyFamily;
pub use config::{
    AuthConfigError, DEFAULT_ALGORITHMS, DEFAULT_CACHE_CAPACITY, DEFAULT_LEEWAY,
    DEFAULT_MAX_TOKEN_LEN, JwtAuthBuilder, MAX_LEEWAY,
};
pub use crypto::install_default_crypto_provider;
pub use issuer::Issuer;
pub use jsonwebtoken::Algorithm;
pub use key::{JwtKey, KeyError, MIN_HMAC_SECRET_LEN};
pub use layer::{JwtAuth, JwtAuthLayer};

pub use crate::principal::AuthCode;
