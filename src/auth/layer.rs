//! [`JwtAuthLayer`] and the [`JwtAuth`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderMap, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::AuthCode;
use super::cache::VerifyCache;
use super::config::{JwtAuthBuilder, Settings};
use super::issuer::Issuers;
use super::key_set::KeySource;
use super::verify::{Refusal, unix_now, verify};
use crate::body::ResponseBody;
use crate::codes::RejectionCode;
use crate::future::ResponseFuture;
use crate::labels::RequestLabels;
use crate::principal::Principal;
use crate::reject::Rejection;

/// Verifies the bearer JWT of every request and puts the caller's
/// [`Principal`] into the request extensions; refuses the request with 401
/// / `UNAUTHENTICATED` otherwise. See the [module docs](super).
///
/// Cheap to clone: everything is behind one `Arc`.
#[derive(Clone, Debug)]
pub struct JwtAuthLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: Settings,
    issuers: Issuers,
    cache: Option<VerifyCache>,
}

impl JwtAuthLayer {
    /// Starts a configuration; [`JwtAuthBuilder::build`] checks it.
    pub fn builder() -> JwtAuthBuilder {
        JwtAuthBuilder::default()
    }

    pub(crate) fn from_parts(settings: Settings, issuers: Issuers, cache_capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                settings,
                issuers,
                cache: VerifyCache::new(cache_capacity),
            }),
        }
    }

    /// Verifies a bare token (what follows `Bearer `) exactly as the layer
    /// does, cache included: for WebSocket subprotocols, custom transports
    /// and benchmarks.
    pub fn verify_token(&self, token: &str) -> Result<Principal, Rejection> {
        self.shared.verify_token(token).map_err(rejection)
    }

    /// Verifies the `Authorization` header(s) of `headers` as the layer
    /// does.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Rejection> {
        bearer_token(headers)
            .and_then(|token| self.shared.verify_token(token))
            .map_err(rejection)
    }

    /// How many keys are in use now (configured plus JWKS files), over
    /// all issuers.
    pub fn key_count(&self) -> usize {
        self.shared.issuers.key_count()
    }

    /// Why the last reload of a JWKS file failed, if one did (the keys in
    /// force for its issuer are then the last good ones): the first
    /// issuer's with an error, in configuration order. `None` without a
    /// JWKS file.
    pub fn jwks_last_error(&self) -> Option<crate::config::ConfigError> {
        self.shared
            .issuers
            .0
            .iter()
            .find_map(|issuer| match &issuer.keys {
                KeySource::Watched(watched) => watched.last_error(),
                KeySource::Static(_) => None,
            })
    }

    /// How many reloads of JWKS files have failed, over all issuers (0
    /// without one).
    pub fn jwks_error_count(&self) -> u64 {
        self.shared
            .issuers
            .0
            .iter()
            .map(|issuer| match &issuer.keys {
                KeySource::Watched(watched) => watched.error_count(),
                KeySource::Static(_) => 0,
            })
            .sum()
    }
}

impl Shared {
    fn verify_token(&self, token: &str) -> Result<Principal, Refusal> {
        // Bound first: nothing longer is hashed, looked up or parsed.
        if token.len() > self.settings.max_token_len {
            return Err(Refusal {
                code: AuthCode::Malformed,
                detail: "the token is longer than the configured limit",
            });
        }
        let now = unix_now();
        // Security: the cache is keyed by the whole token, whose `iss`
        // chose the keys, and holds the issuer-bound principal (issuer,
        // prefixed user and groups); it is emptied when any issuer's keys
        // change. Read the generation before verifying: keys replaced in
        // between only make the new entry stale, never an old one fresh.
        let generation = self.issuers.generation();
        if let Some(cache) = &self.cache
            && let Some(principal) = cache.get(token, generation, now)
        {
            return Ok(principal);
        }
        let verified = verify(&self.settings, &self.issuers, token, now)?;
        if let Some(cache) = &self.cache {
            cache.insert(token, generation, verified.exp, &verified.principal, now);
        }
        Ok(verified.principal)
    }
}

fn rejection(refusal: Refusal) -> Rejection {
    let rejection = refusal.code.reject(refusal.detail);
    // RFC 6750 §3.1: no error attribute when no credentials were presented.
    if refusal.code == AuthCode::Missing {
        rejection
    } else {
        rejection.with_bearer_error("invalid_token")
    }
}

/// The token of the one `Authorization: Bearer <token>` header.
///
/// - no header, or a scheme other than Bearer → `auth.missing` (no bearer
///   credentials were presented; RFC 6750 §3.1 answers such requests
///   without an error attribute);
/// - several `Authorization` headers, a header that is not visible ASCII,
///   `Bearer` with an empty token, or a token with whitespace inside →
///   `auth.malformed`.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Refusal {
            code: AuthCode::Missing,
            detail: "no bearer token",
        });
    };
    if values.next().is_some() {
        return Err(Refusal {
            code: AuthCode::Malformed,
            detail: "several Authorization headers",
        });
    }
    // What `HeaderValue::to_str` accepts (visible ASCII, space, tab), in
    // a loop the compiler vectorises: a token is hundreds of bytes, on
    // every request.
    let bytes = value.as_bytes();
    let value = std::str::from_utf8(bytes)
        .ok()
        .filter(|_| visible_ascii(bytes))
        .ok_or(Refusal {
            code: AuthCode::Malformed,
            detail: "the Authorization header is not visible ASCII",
        })?;
    let (scheme, rest) = match value.split_once(' ') {
        Some((scheme, rest)) => (scheme, rest),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal {
            code: AuthCode::Missing,
            detail: "the Authorization scheme is not Bearer",
        });
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Err(Refusal {
            code: AuthCode::Malformed,
            detail: "the bearer token is empty",
        });
    }
    // `contains` on a byte slice is core's word-at-a-time memchr: a bool
    // fold over the bytes stays one byte at a time.
    let bytes = token.as_bytes();
    let blank = bytes.contains(&b' ') || bytes.contains(&b'\t');
    if blank {
        return Err(Refusal {
            code: AuthCode::Malformed,
            detail: "the bearer token contains whitespace",
        });
    }
    Ok(token)
}

/// Visible ASCII, space or tab throughout: what `HeaderValue::to_str`
/// accepts.
pub(super) fn visible_ascii(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        ok & ((b.wrapping_sub(0x20) < 0x5f) | (b == b'\t'))
    })
}

impl<S> Layer<S> for JwtAuthLayer {
    type Service = JwtAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth {
            inner,
            layer: Some(self.clone()),
        }
    }
}

/// The service [`JwtAuthLayer`] produces.
#[derive(Clone, Debug)]
pub struct JwtAuth<S> {
    inner: S,
    // `None`: switched off inside a `GovernanceLayer` without JWT.
    layer: Option<JwtAuthLayer>,
}

impl<S> JwtAuth<S> {
    /// Passes every request through unverified: the slot of an absent
    /// JWT layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self { inner, layer: None }
    }
}

crate::macros::inner_accessors!([S] JwtAuth<S>, inner: S);

impl<S, ReqB, ResB> Service<Request<ReqB>> for JwtAuth<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let Some(layer) = &self.layer else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        let verified =
            bearer_token(req.headers()).and_then(|token| layer.shared.verify_token(token));
        #[cfg(feature = "mtls")]
        let verified = super::peer::with_peer(verified, &req, &layer.shared.settings);
        match verified {
            Ok(principal) => {
                if let Some(labels) = req.extensions().get::<RequestLabels>() {
                    labels.update(|l| {
                        l.subject = Some(Arc::clone(&principal.subject));
                        l.peer.clone_from(&principal.peer);
                        l.groups = Some(Arc::clone(&principal.groups));
                        if principal.risk.is_some() {
                            l.risk = principal.risk;
                        }
                    });
                }
                // Security: the principal comes from a verified
                // signature; it replaces anything an outer layer or the
                // caller may have put there.
                req.extensions_mut().insert(principal);
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(refusal) => ResponseFuture::rejected(rejection(refusal).respond(&req)),
        }
    }
}
