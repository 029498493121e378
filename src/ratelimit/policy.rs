//! [`RateLimitPolicy`]: the policy document, validated and compiled.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::gcra::Gcra;
use super::manifest::{
    ConcurrencyRuleSpec, FailMode, KeyKind, LevelSpec, Manifest, MatchSpec, RuleSpec,
};
use super::matcher::Matcher;
use crate::config::tagged_at;

/// The `apiVersion` of a rate-limit policy.
pub const API_VERSION: &str = "finmesh.io/v1";
/// The `kind` of a rate-limit policy.
pub const KIND: &str = "RateLimitPolicy";
/// The largest policy document [`RateLimitPolicy::from_yaml`] reads (1 MiB).
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;
/// At most this many rules (rate and concurrency each), levels, and items
/// in one `match` list.
pub const MAX_POLICY_ITEMS: usize = 1_000;

const MAX_REQUESTS: u32 = 1_000_000_000;
const MAX_PERIOD: Duration = Duration::from_secs(86_400);
const MAX_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_QUEUE_LENGTH: u32 = 100_000;

/// Why a policy was refused: the path of the field and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitPolicyError {
    field: String,
    message: String,
}

impl RateLimitPolicyError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The path of the offending field (`spec.rules[0].limit.period`), `""`
    /// for the document as a whole.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RateLimitPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for RateLimitPolicyError {}

/// A compiled rate limit: which requests, keyed by what, how many.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) name: Arc<str>,
    /// A stable hash of the name and limit: the rule's part of every bucket
    /// key, so a reloaded policy keeps the buckets of the rules it keeps.
    pub(crate) id: u64,
    pub(crate) matcher: Matcher,
    pub(crate) key: KeyKind,
    pub(crate) gcra: Gcra,
    pub(crate) requests: u32,
    pub(crate) period: Duration,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fail_mode: FailMode,
}

/// A concurrency priority level: its own seats and queue per key.
#[derive(Debug)]
pub(crate) struct Level {
    pub(crate) name: Arc<str>,
    pub(crate) id: u64,
    pub(crate) max_in_flight: u32,
    pub(crate) queue_length: u32,
    pub(crate) queue_timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct ConcurrencyRule {
    pub(crate) name: Arc<str>,
    pub(crate) matcher: Matcher,
    pub(crate) key: KeyKind,
    pub(crate) level: usize,
}

/// A validated, compiled rate-limit policy (`apiVersion: finmesh.io/v1`,
/// `kind: RateLimitPolicy`). See the [module docs](super) for the format.
///
/// ```
/// use finmesh::ratelimit::RateLimitPolicy;
///
/// let policy = RateLimitPolicy::from_yaml(br#"
/// apiVersion: finmesh.io/v1
/// kind: RateLimitPolicy
/// metadata: {name: demo}
/// spec:
///   rules:
///     - name: per-subject
///       key: subject
///       limit: {requests: 200, period: 1s}
/// "#).unwrap();
/// assert_eq!(policy.rule_names().collect::<Vec<_>>(), ["per-subject"]);
///
/// let err = RateLimitPolicy::from_yaml(br#"
/// apiVersion: finmesh.io/v1
/// kind: RateLimitPolicy
/// metadata: {name: demo}
/// spec:
///   rules:
///     - name: per-subject
///       key: subject
///       limit: {requests: 200, period: 1 fortnight}
/// "#).unwrap_err();
/// assert_eq!(err.field(), "spec.rules[0].limit.period");
/// ```
#[derive(Debug)]
pub struct RateLimitPolicy {
    name: Arc<str>,
    pub(crate) rules: Box<[Rule]>,
    pub(crate) levels: Box<[Level]>,
    pub(crate) concurrency: Box<[ConcurrencyRule]>,
}

impl RateLimitPolicy {
    /// Parses and validates one policy document (YAML, or JSON which is
    /// YAML too), at most [`MAX_POLICY_BYTES`].
    ///
    /// Refused, with the path of the field: another `apiVersion` or
    /// `kind`, unknown fields, values of the wrong type, YAML tags, a
    /// limit of 0 requests or burst, a period outside 1 ms to 24 h, rule or
    /// level names that are not DNS-1123 labels or appear twice, tenants
    /// that are not namespaces, malformed route templates or gRPC methods,
    /// empty verbs or resources, a concurrency rule naming no level, more
    /// than [`MAX_POLICY_ITEMS`] of anything. Never panics.
    pub fn from_yaml(yaml: impl AsRef<[u8]>) -> Result<Self, RateLimitPolicyError> {
        let yaml = yaml.as_ref();
        if yaml.len() > MAX_POLICY_BYTES {
            return Err(RateLimitPolicyError::new(
                "",
                format!(
                    "policy is {} bytes, over the {MAX_POLICY_BYTES}-byte limit",
                    yaml.len()
                ),
            ));
        }
        let value = Value::deserialize(serde_yaml_ng::Deserializer::from_slice(yaml))
            .map_err(|e| RateLimitPolicyError::new("", format!("invalid YAML: {e}")))?;
        // Security: serde reads through a YAML tag as if it were not
        // there; a policy that says more than it means is refused.
        if let Some(path) = tagged_at(&value) {
            return Err(RateLimitPolicyError::new(
                path,
                "expected a plain value, found a tagged value",
            ));
        }
        let manifest: Manifest = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            RateLimitPolicyError::new(field, e.into_inner().to_string())
        })?;
        compile(manifest)
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rate rules' names, in order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.name)
    }

    /// The concurrency rules' names, in order.
    pub fn concurrency_rule_names(&self) -> impl Iterator<Item = &str> {
        self.concurrency.iter().map(|r| &*r.name)
    }

    /// A policy with no rules: nothing is limited.
    pub fn empty() -> Self {
        Self {
            name: "empty".into(),
            rules: Box::new([]),
            levels: Box::new([]),
            concurrency: Box::new([]),
        }
    }
}

/// A stable 64-bit id for a name (the same in every process).
pub(crate) fn stable_id(kind: &str, name: &str) -> u64 {
    let mut h = foldhash::quality::FixedState::with_seed(0x7261_7465_6c69_6d69).build_hasher();
    kind.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

fn compile(m: Manifest) -> Result<RateLimitPolicy, RateLimitPolicyError> {
    if m.api_version != API_VERSION {
        return Err(RateLimitPolicyError::new(
            "apiVersion",
            format!("expected {API_VERSION:?}, found {:?}", m.api_version),
        ));
    }
    if m.kind != KIND {
        return Err(RateLimitPolicyError::new(
            "kind",
            format!("expected {KIND:?}, found {:?}", m.kind),
        ));
    }
    check_name("metadata.name", &m.metadata.name)?;
    let default_fail = m.spec.fail_mode.unwrap_or_default();

    check_count("spec.rules", m.spec.rules.len())?;
    let mut rules = Vec::with_capacity(m.spec.rules.len());
    for (i, spec) in m.spec.rules.into_iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let rule = compile_rule(&at, spec, default_fail)?;
        if rules.iter().any(|r: &Rule| r.name == rule.name) {
            return Err(RateLimitPolicyError::new(
                format!("{at}.name"),
                format!("rule {:?} is defined twice", rule.name),
            ));
        }
        rules.push(rule);
    }

    let mut levels = Vec::new();
    let mut concurrency = Vec::new();
    if let Some(spec) = m.spec.concurrency {
        check_count("spec.concurrency.levels", spec.levels.len())?;
        for (i, level) in spec.levels.into_iter().enumerate() {
            let at = format!("spec.concurrency.levels[{i}]");
            let level = compile_level(&at, level)?;
            if levels.iter().any(|l: &Level| l.name == level.name) {
                return Err(RateLimitPolicyError::new(
                    format!("{at}.name"),
                    format!("level {:?} is defined twice", level.name),
                ));
            }
            levels.push(level);
        }
        check_count("spec.concurrency.rules", spec.rules.len())?;
        for (i, rule) in spec.rules.into_iter().enumerate() {
            let at = format!("spec.concurrency.rules[{i}]");
            let rule = compile_concurrency_rule(&at, rule, &levels)?;
            if concurrency
                .iter()
                .any(|r: &ConcurrencyRule| r.name == rule.name)
            {
                return Err(RateLimitPolicyError::new(
                    format!("{at}.name"),
                    format!("rule {:?} is defined twice", rule.name),
                ));
            }
            concurrency.push(rule);
        }
    }
    Ok(RateLimitPolicy {
        name: m.metadata.name.into(),
        rules: rules.into(),
        levels: levels.into(),
        concurrency: concurrency.into(),
    })
}

fn compile_rule(
    at: &str,
    spec: RuleSpec,
    default_fail: FailMode,
) -> Result<Rule, RateLimitPolicyError> {
    check_name(&format!("{at}.name"), &spec.name)?;
    let matcher = compile_match(&format!("{at}.match"), spec.matches)?;
    let limit = spec.limit;
    let requests = limit.requests;
    if requests == 0 || requests > MAX_REQUESTS {
        return Err(RateLimitPolicyError::new(
            format!("{at}.limit.requests"),
            format!("must be 1 to {MAX_REQUESTS}"),
        ));
    }
    let period = parse_duration(&limit.period)
        .filter(|d| *d >= Duration::from_millis(1) && *d <= MAX_PERIOD)
        .ok_or_else(|| {
            RateLimitPolicyError::new(
                format!("{at}.limit.period"),
                format!(
                    "{:?} is not a duration from 1ms to 24h (such as 500ms, 1s, 1m, 1h)",
                    limit.period
                ),
            )
        })?;
    let burst = limit.burst.unwrap_or(requests);
    if burst == 0 || burst > MAX_REQUESTS {
        return Err(RateLimitPolicyError::new(
            format!("{at}.limit.burst"),
            format!("must be 1 to {MAX_REQUESTS}"),
        ));
    }
    // The id covers the limit: a rule whose limit is edited starts with
    // full buckets under the new limit (TATs of the old one mean nothing
    // under another interval), while unchanged rules keep their state.
    let id = stable_id(
        "rule",
        &format!("{}/{requests}/{}/{burst}", spec.name, period.as_nanos()),
    );
    Ok(Rule {
        id,
        name: spec.name.into(),
        matcher,
        key: spec.key,
        gcra: Gcra::new(requests, period, burst),
        requests,
        period,
        fail_mode: spec.fail_mode.unwrap_or(default_fail),
    })
}

fn compile_level(at: &str, spec: LevelSpec) -> Result<Level, RateLimitPolicyError> {
    check_name(&format!("{at}.name"), &spec.name)?;
    if spec.max_in_flight == 0 || spec.max_in_flight > MAX_QUEUE_LENGTH {
        return Err(RateLimitPolicyError::new(
            format!("{at}.maxInFlight"),
            format!("must be 1 to {MAX_QUEUE_LENGTH}"),
        ));
    }
    if spec.queue.length > MAX_QUEUE_LENGTH {
        return Err(RateLimitPolicyError::new(
            format!("{at}.queue.length"),
            format!("must be 0 to {MAX_QUEUE_LENGTH}"),
        ));
    }
    let timeout = parse_duration(&spec.queue.timeout)
        .filter(|d| *d <= MAX_QUEUE_TIMEOUT)
        .ok_or_else(|| {
            RateLimitPolicyError::new(
                format!("{at}.queue.timeout"),
                format!("{:?} is not a duration up to 60s", spec.queue.timeout),
            )
        })?;
    Ok(Level {
        id: stable_id("level", &spec.name),
        name: spec.name.into(),
        max_in_flight: spec.max_in_flight,
        queue_length: spec.queue.length,
        queue_timeout: timeout,
    })
}

fn compile_concurrency_rule(
    at: &str,
    spec: ConcurrencyRuleSpec,
    levels: &[Level],
) -> Result<ConcurrencyRule, RateLimitPolicyError> {
    check_name(&format!("{at}.name"), &spec.name)?;
    let matcher = compile_match(&format!("{at}.match"), spec.matches)?;
    let level = levels
        .iter()
        .position(|l| *l.name == *spec.level)
        .ok_or_else(|| {
            RateLimitPolicyError::new(
                format!("{at}.level"),
                format!("no level named {:?} in spec.concurrency.levels", spec.level),
            )
        })?;
    Ok(ConcurrencyRule {
        name: spec.name.into(),
        matcher,
        key: spec.key,
        level,
    })
}

fn compile_match(at: &str, spec: MatchSpec) -> Result<Matcher, RateLimitPolicyError> {
    for (field, len) in [
        ("verbs", spec.verbs.len()),
        ("resources", spec.resources.len()),
        ("tenants", spec.tenants.len()),
        ("subjects", spec.subjects.len()),
        ("groups", spec.groups.len()),
        ("riskLevels", spec.risk_levels.len()),
        ("grpcMethods", spec.grpc_methods.len()),
        ("routes", spec.routes.len()),
    ] {
        check_count(&format!("{at}.{field}"), len)?;
    }
    Matcher::compile(spec)
        .map_err(|(field, message)| RateLimitPolicyError::new(format!("{at}.{field}"), message))
}

fn check_count(at: &str, len: usize) -> Result<(), RateLimitPolicyError> {
    if len > MAX_POLICY_ITEMS {
        return Err(RateLimitPolicyError::new(
            at,
            format!("{len} items, over the limit of {MAX_POLICY_ITEMS}"),
        ));
    }
    Ok(())
}

/// Names become metric attributes and Redis key parts: DNS-1123 labels.
fn check_name(at: &str, name: &str) -> Result<(), RateLimitPolicyError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(RateLimitPolicyError::new(
            at,
            format!(
                "{name:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
            ),
        ))
    }
}

/// `500ms`, `1s`, `2m`, `1h`: a whole number and a unit.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    if n.is_empty() || n.len() > 9 {
        return None;
    }
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}
