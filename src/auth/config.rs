//! [`JwtAuthBuilder`]: everything a [`JwtAuthLayer`](super::JwtAuthLayer)
//! verifies against, checked once at build time.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::algorithm::AlgSet;
use super::issuer::{Issuer, Issuers};
use super::key::{JwtKey, KeyError};
use super::layer::JwtAuthLayer;
use super::trust::{check_issuers_apart, fence_prefixes, trust};
use crate::config::{ConfigError, WatchOptions};

/// Default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The largest leeway accepted: past five minutes, "expired" stops meaning
/// much.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Default maximum token length in bytes (8 KiB).
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;
/// Default verification-cache capacity, in tokens. Worst-case memory is
/// about twice this times the maximum token length (each entry holds the
/// token and its decoded claims): 64 MiB with the defaults, far less with
/// typical 1 KiB tokens.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// The algorithms allowed when [`JwtAuthBuilder::algorithms`] is not
/// called: every asymmetric one. HMAC must be opted into explicitly,
/// because a shared secret lets every verifier mint tokens.
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a [`JwtAuthLayer`] could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// No issuer was configured: every token's `iss` must be checked.
    MissingIssuer,
    /// No audience was configured: every token's `aud` must be checked.
    MissingAudience,
    /// No key and no JWKS document or file.
    NoKeys,
    /// The algorithm allowlist is empty.
    NoAlgorithms,
    /// A configured key cannot verify any allowed algorithm (for example an
    /// HMAC secret while only asymmetric algorithms are allowed).
    UnusableKey {
        /// The key's id, if it has one.
        kid: Option<String>,
        /// The key's family.
        family: super::KeyFamily,
    },
    /// The leeway is over [`MAX_LEEWAY`].
    LeewayTooLarge(Duration),
    /// A setting has an unusable value (an empty claim name, a zero
    /// maximum token length).
    InvalidSetting(&'static str),
    /// A key or JWKS document is invalid.
    Key(KeyError),
    /// The JWKS file could not be loaded.
    JwksFile(ConfigError),
    /// [`JwtAuthBuilder::issuer`] was called more than once: those issuers
    /// would share one set of keys, so each could sign as the others.
    /// Configure each with [`JwtAuthBuilder::issuer_config`] and its own
    /// keys.
    IssuersShareKeys,
}

impl fmt::Display for AuthConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingIssuer => f.write_str("JWT auth needs at least one accepted issuer"),
            Self::MissingAudience => f.write_str("JWT auth needs at least one accepted audience"),
            Self::NoKeys => f.write_str("JWT auth needs at least one key, JWKS document or file"),
            Self::NoAlgorithms => f.write_str("the algorithm allowlist is empty"),
            Self::UnusableKey { kid, family } => write!(
                f,
                "the {family} key{} cannot verify any allowed algorithm",
                kid.as_deref()
                    .map(|k| format!(" with kid {k:?}"))
                    .unwrap_or_default()
            ),
            Self::LeewayTooLarge(d) => write!(
                f,
                "leeway of {}s is over the maximum of {}s",
                d.as_secs(),
                MAX_LEEWAY.as_secs()
            ),
            Self::InvalidSetting(what) => f.write_str(what),
            Self::Key(e) => e.fmt(f),
            Self::JwksFile(e) => write!(f, "JWKS file: {e}"),
            Self::IssuersShareKeys => f.write_str(
                "several issuers were given with .issuer() and would share one set of keys; \
                 configure each with .issuer_config(Issuer::new(..)) and its own keys",
            ),
        }
    }
}

impl std::error::Error for AuthConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Key(e) => Some(e),
            Self::JwksFile(e) => Some(e),
            _ => None,
        }
    }
}

impl From<KeyError> for AuthConfigError {
    fn from(e: KeyError) -> Self {
        Self::Key(e)
    }
}

/// The immutable settings the verifier reads on every request.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) algorithms: AlgSet,
    pub(crate) leeway: u64,
    pub(crate) required_claims: Box<[Box<str>]>,
    /// Lowercase, without an `application/` prefix.
    pub(crate) types: Box<[Box<str>]>,
    pub(crate) allow_missing_typ: bool,
    pub(crate) max_token_len: usize,
    pub(crate) groups_claim: Box<str>,
    pub(crate) tenant_claim: Box<str>,
    pub(crate) risk_claim: Box<str>,
    // Read only with the `mtls` feature (a peer identity to map).
    #[cfg_attr(not(feature = "mtls"), allow(dead_code))]
    pub(crate) service_accounts_from_peer: bool,
    /// The home trust domains whose peers may be ServiceAccounts.
    #[cfg_attr(not(feature = "mtls"), allow(dead_code))]
    pub(crate) service_account_trust_domains: Box<[Box<str>]>,
}

/// Normalizes a `typ` value for comparison: media types are
/// case-insensitive and `application/` may be omitted (RFC 7515 §4.1.9).
pub(crate) fn normalize_typ(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

/// Builds a [`JwtAuthLayer`]; see [`JwtAuthLayer::builder`].
///
/// Every check happens in [`build`](Self::build): a missing issuer or
/// audience, a short HMAC secret, an unusable key or an invalid JWKS
/// document is an error there, never a silently weaker verifier.
#[derive(Debug)]
#[must_use]
pub struct JwtAuthBuilder {
    issuers: Vec<String>,
    /// Audiences and keys of the one-issuer form, for its `.issuer(..)`.
    primary: Issuer,
    issuer_configs: Vec<Issuer>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    required_claims: Vec<String>,
    types: Vec<String>,
    allow_missing_typ: bool,
    max_token_len: usize,
    groups_claim: String,
    tenant_claim: String,
    risk_claim: String,
    cache_capacity: usize,
    service_accounts_from_peer: bool,
    service_account_trust_domains: Vec<String>,
}

impl Default for JwtAuthBuilder {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            primary: Issuer::new(""),
            issuer_configs: Vec::new(),
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            leeway: DEFAULT_LEEWAY,
            required_claims: Vec::new(),
            types: vec!["JWT".into(), "at+jwt".into()],
            allow_missing_typ: true,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            groups_claim: "groups".into(),
            tenant_claim: "tenant".into(),
            risk_claim: "risk_level".into(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            service_accounts_from_peer: false,
            service_account_trust_domains: Vec::new(),
        }
    }
}

impl JwtAuthBuilder {
    /// Accepts tokens whose `iss` is `issuer`, verified with the keys given
    /// by [`key`](Self::key), [`jwks`](Self::jwks) and
    /// [`jwks_file`](Self::jwks_file), addressed to an
    /// [`audience`](Self::audience): the one-issuer form.
    ///
    /// This issuer's subjects and groups are the RBAC names as they are
    /// (no prefix), so bindings that name `alice` keep matching `alice`;
    /// a `sub` or group starting with `system:` is still refused, and no
    /// token of it becomes a ServiceAccount. Call it at most once:
    /// further issuers go through [`issuer_config`](Self::issuer_config),
    /// each with its own keys (two `.issuer()` calls are
    /// [`AuthConfigError::IssuersShareKeys`]).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Trusts another issuer with its own audiences, keys and RBAC name
    /// prefixes (see [`Issuer`]); repeat for several. A token is verified
    /// only with the keys of the issuer its `iss` names, and a `kid` is
    /// looked up among that issuer's keys only.
    pub fn issuer_config(mut self, issuer: Issuer) -> Self {
        self.issuer_configs.push(issuer);
        self
    }

    /// Accepts tokens of the [`issuer`](Self::issuer) whose `aud` names
    /// `audience` (repeat for several).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.primary = self.primary.audience(audience);
        self
    }

    /// Adds a verification key of the [`issuer`](Self::issuer).
    pub fn key(mut self, key: JwtKey) -> Self {
        self.primary = self.primary.key(key);
        self
    }

    /// Adds the keys of a JWKS document (see [`JwtKey::from_jwks`]); an
    /// invalid document makes [`build`](Self::build) fail.
    pub fn jwks(mut self, document: impl AsRef<[u8]>) -> Self {
        self.primary = self.primary.jwks(document);
        self
    }

    /// Loads keys from a JWKS file and watches it: a changed file is
    /// parsed, validated and swapped in without a restart, and the
    /// verification cache is emptied. An invalid new version is refused
    /// (the last good keys stay and the error is logged). Its keys are used
    /// together with those given by [`key`](Self::key) and
    /// [`jwks`](Self::jwks).
    pub fn jwks_file(self, path: impl Into<PathBuf>) -> Self {
        self.jwks_file_with(path, WatchOptions::new())
    }

    /// [`jwks_file`](Self::jwks_file) with explicit watch options (debounce,
    /// polling, size limit).
    pub fn jwks_file_with(mut self, path: impl Into<PathBuf>, options: WatchOptions) -> Self {
        self.primary = self.primary.jwks_file_with(path, options);
        self
    }

    /// Replaces the algorithm allowlist (default: [`DEFAULT_ALGORITHMS`],
    /// the asymmetric ones). `none` cannot be expressed.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Clock-skew allowance for `exp` and `nbf` (default 30 s, at most
    /// 5 min; whole seconds, since NumericDates are seconds).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Requires `claim` to be present (and not `null`) in every token.
    pub fn require_claim(mut self, claim: impl Into<String>) -> Self {
        self.required_claims.push(claim.into());
        self
    }

    /// Replaces the accepted `typ` header values (default `JWT` and
    /// `at+jwt`; compared case-insensitively, `application/` optional).
    pub fn accepted_types<I, T>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Whether a token without `typ` is accepted (default `true`).
    pub fn allow_missing_type(mut self, allow: bool) -> Self {
        self.allow_missing_typ = allow;
        self
    }

    /// The longest token accepted, in bytes (default 8 KiB); longer ones
    /// are refused before any parsing.
    pub fn max_token_len(mut self, bytes: usize) -> Self {
        self.max_token_len = bytes;
        self
    }

    /// The claim holding the groups, an array of strings (default `groups`).
    pub fn groups_claim(mut self, name: impl Into<String>) -> Self {
        self.groups_claim = name.into();
        self
    }

    /// The claim holding the tenant namespace (default `tenant`).
    pub fn tenant_claim(mut self, name: impl Into<String>) -> Self {
        self.tenant_claim = name.into();
        self
    }

    /// The claim holding the risk level (default `risk_level`).
    pub fn risk_claim(mut self, name: impl Into<String>) -> Self {
        self.risk_claim = name.into();
        self
    }

    /// How many verified tokens to remember (default
    /// [`DEFAULT_CACHE_CAPACITY`]); `0` turns the cache off.
    pub fn cache_capacity(mut self, tokens: usize) -> Self {
        self.cache_capacity = tokens;
        self
    }

    /// Whether a request without a bearer token, on a connection whose
    /// verified peer is `spiffe://<td>/ns/<ns>/sa/<name>`
    /// ([`PeerIdentity`](crate::identity::PeerIdentity)) with `<td>` one of
    /// the home trust domains named by
    /// [`service_accounts_from_peer_in`](Self::service_accounts_from_peer_in),
    /// is authenticated as the ServiceAccount
    /// `system:serviceaccount:<ns>:<name>` (groups `system:serviceaccounts`,
    /// `system:serviceaccounts:<ns>`, tenant `<ns>`). Off by default; on
    /// without a home trust domain is an error in [`build`](Self::build).
    /// A request with a token is always the token's user.
    #[cfg(feature = "mtls")]
    pub fn service_accounts_from_peer(mut self, enable: bool) -> Self {
        self.service_accounts_from_peer = enable;
        self
    }

    /// Maps peers to ServiceAccounts (as
    /// [`service_accounts_from_peer(true)`](Self::service_accounts_from_peer))
    /// for these home trust domains only. A peer of another trust domain
    /// the acceptor allows keeps its
    /// [`PeerIdentity`](crate::identity::PeerIdentity) but is no
    /// ServiceAccount: without a token it is unauthenticated.
    #[cfg(feature = "mtls")]
    pub fn service_accounts_from_peer_in<I, S>(mut self, trust_domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.service_account_trust_domains = trust_domains.into_iter().map(Into::into).collect();
        self.service_accounts_from_peer = true;
        self
    }

    /// Checks everything and builds the layer. Loads (and starts watching)
    /// the JWKS file, if one was given.
    ///
    /// With both the `auth` and `auth-rust-crypto` features, this also
    /// installs aws-lc-rs as jsonwebtoken's process default if none is
    /// installed yet (see [`install_default_crypto_provider`]): the layer
    /// does not need it, but code that mints tokens with jsonwebtoken
    /// after building a layer keeps working.
    ///
    /// [`install_default_crypto_provider`]: super::install_default_crypto_provider
    pub fn build(mut self) -> Result<JwtAuthLayer, AuthConfigError> {
        // Unit tests: lock a panicking process default first, so that they
        // prove verification never uses it.
        #[cfg(test)]
        super::crypto::panicking_process_default();
        super::crypto::install_default_crypto_provider();
        let issuers = self.issuer_list()?;
        if let Some(e) = issuers.iter().flat_map(|i| &i.key_errors).next().cloned() {
            return Err(e.into());
        }
        if issuers.iter().any(|i| i.audiences.is_empty()) {
            return Err(AuthConfigError::MissingAudience);
        }
        if issuers
            .iter()
            .any(|i| i.url.is_empty() || i.audiences.iter().any(String::is_empty))
        {
            return Err(AuthConfigError::InvalidSetting(
                "issuers and audiences must not be empty strings",
            ));
        }
        check_issuers_apart(&issuers)?;
        // Security: one trust bundle verifies every allowed trust domain,
        // so any CA in it can sign `…/ns/<ns>/sa/<name>` for any of them;
        // only the home domains' workloads may be ServiceAccounts.
        if self.service_accounts_from_peer && self.service_account_trust_domains.is_empty() {
            return Err(AuthConfigError::InvalidSetting(
                "service_accounts_from_peer needs the home trust domains: use service_accounts_from_peer_in",
            ));
        }
        let algorithms = AlgSet::of(&self.algorithms);
        if algorithms.is_empty() {
            return Err(AuthConfigError::NoAlgorithms);
        }
        if self.leeway > MAX_LEEWAY {
            return Err(AuthConfigError::LeewayTooLarge(self.leeway));
        }
        if self.max_token_len == 0 {
            return Err(AuthConfigError::InvalidSetting(
                "the maximum token length must be positive",
            ));
        }
        if [&self.groups_claim, &self.tenant_claim, &self.risk_claim]
            .iter()
            .any(|c| c.is_empty())
            || self.required_claims.iter().any(String::is_empty)
        {
            return Err(AuthConfigError::InvalidSetting(
                "claim names must not be empty",
            ));
        }
        if self.types.iter().any(String::is_empty) {
            return Err(AuthConfigError::InvalidSetting(
                "accepted typ values must not be empty",
            ));
        }
        if issuers
            .iter()
            .any(|i| i.keys.is_empty() && i.jwks_file.is_none())
        {
            return Err(AuthConfigError::NoKeys);
        }
        // A configured key that can never be used is a mistake worth
        // failing on (typically an HMAC secret without HS256 allowed).
        if let Some(key) = issuers
            .iter()
            .flat_map(|i| &i.keys)
            .find(|k| !k.algorithms().intersects(algorithms))
        {
            return Err(AuthConfigError::UnusableKey {
                kid: key.kid().map(str::to_owned),
                family: key.family(),
            });
        }
        let settings = Settings {
            algorithms,
            leeway: self.leeway.as_secs(),
            required_claims: self.required_claims.into_iter().map(Into::into).collect(),
            types: self
                .types
                .iter()
                .map(|t| normalize_typ(t).into_boxed_str())
                .collect(),
            allow_missing_typ: self.allow_missing_typ,
            max_token_len: self.max_token_len,
            groups_claim: self.groups_claim.into(),
            tenant_claim: self.tenant_claim.into(),
            risk_claim: self.risk_claim.into(),
            service_accounts_from_peer: self.service_accounts_from_peer,
            service_account_trust_domains: self
                .service_account_trust_domains
                .into_iter()
                .map(Into::into)
                .collect(),
        };
        let mut issuers = issuers
            .into_iter()
            .map(trust)
            .collect::<Result<Vec<_>, _>>()?;
        fence_prefixes(&mut issuers);
        Ok(JwtAuthLayer::from_parts(
            settings,
            Issuers(issuers.into_boxed_slice()),
            self.cache_capacity,
        ))
    }

    /// Every issuer: the one given with [`issuer`](Self::issuer) (keys,
    /// audiences and JWKS of the builder, no name prefixes), then those
    /// given with [`issuer_config`](Self::issuer_config).
    fn issuer_list(&mut self) -> Result<Vec<Issuer>, AuthConfigError> {
        let mut issuers = Vec::with_capacity(1 + self.issuer_configs.len());
        match self.issuers.len() {
            0 if self.issuer_configs.is_empty() => return Err(AuthConfigError::MissingIssuer),
            0 => {
                let p = &self.primary;
                if !(p.audiences.is_empty()
                    && p.keys.is_empty()
                    && p.key_errors.is_empty()
                    && p.jwks_file.is_none())
                {
                    return Err(AuthConfigError::InvalidSetting(
                        "audiences and keys given to the builder belong to its .issuer(), \
                         and none was given; give them to the Issuer they belong to",
                    ));
                }
            }
            1 => {
                let mut legacy = std::mem::replace(&mut self.primary, Issuer::new(""));
                legacy.url = self.issuers.remove(0);
                issuers.push(legacy.username_prefix("").groups_prefix(""));
            }
            // Security: the finding this guards against — two issuers
            // sharing keys let either sign as the other.
            _ => return Err(AuthConfigError::IssuersShareKeys),
        }
        issuers.append(&mut self.issuer_configs);
        Ok(issuers)
    }
}
