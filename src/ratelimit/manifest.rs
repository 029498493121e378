//! The policy document as serde reads it: `finmesh.io/v1`
//! `RateLimitPolicy`. Unknown fields are refused everywhere; validation
//! and compilation are in `policy.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::principal::RiskLevel;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Manifest {
    pub(super) api_version: String,
    pub(super) kind: String,
    pub(super) metadata: Metadata,
    pub(super) spec: Spec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Metadata {
    pub(super) name: String,
    #[serde(default)]
    #[allow(dead_code)] // accepted as Kubernetes objects carry them
    pub(super) labels: BTreeMap<String, String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Spec {
    /// The fail mode of rules that do not say (default `failOpen`).
    #[serde(default)]
    pub(super) fail_mode: Option<FailMode>,
    #[serde(default)]
    pub(super) rules: Vec<RuleSpec>,
    #[serde(default)]
    pub(super) concurrency: Option<ConcurrencySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RuleSpec {
    pub(super) name: String,
    #[serde(default, rename = "match")]
    pub(super) matches: MatchSpec,
    pub(super) key: KeyKind,
    pub(super) limit: LimitSpec,
    #[serde(default)]
    pub(super) fail_mode: Option<FailMode>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct MatchSpec {
    #[serde(default)]
    pub(super) verbs: Vec<String>,
    #[serde(default)]
    pub(super) resources: Vec<String>,
    #[serde(default)]
    pub(super) tenants: Vec<String>,
    #[serde(default)]
    pub(super) subjects: Vec<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    #[serde(default)]
    pub(super) risk_levels: Vec<RiskLevel>,
    #[serde(default)]
    pub(super) grpc_methods: Vec<String>,
    #[serde(default)]
    pub(super) routes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct LimitSpec {
    pub(super) requests: u32,
    pub(super) period: String,
    #[serde(default)]
    pub(super) burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ConcurrencySpec {
    pub(super) levels: Vec<LevelSpec>,
    #[serde(default)]
    pub(super) rules: Vec<ConcurrencyRuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct LevelSpec {
    pub(super) name: String,
    pub(super) max_in_flight: u32,
    pub(super) queue: QueueSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct QueueSpec {
    pub(super) length: u32,
    pub(super) timeout: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ConcurrencyRuleSpec {
    pub(super) name: String,
    #[serde(default, rename = "match")]
    pub(super) matches: MatchSpec,
    pub(super) key: KeyKind,
    pub(super) level: String,
}

/// What a limit's buckets are keyed by: each distinct value has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum KeyKind {
    /// The verified tenant (`Tenant` from the tenant layer).
    Tenant,
    /// The verified subject (`Principal::subject` from the JWT layer).
    Subject,
    /// Each subject within each tenant.
    TenantAndSubject,
    /// The route template or gRPC method the rule matched (one bucket for
    /// everybody); a rule that lists no routes or methods is one bucket.
    Route,
}

impl KeyKind {
    pub(crate) const ALL: [KeyKind; 4] = [
        KeyKind::Tenant,
        KeyKind::Subject,
        KeyKind::TenantAndSubject,
        KeyKind::Route,
    ];

    /// The policy's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Subject => "subject",
            Self::TenantAndSubject => "tenantAndSubject",
            Self::Route => "route",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// What a shared (Redis) limit does when Redis cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum FailMode {
    /// Let the request through, unlimited by this rule (the default, as
    /// Envoy's global rate limit does): a Redis outage must not become an
    /// outage of every replica.
    #[default]
    FailOpen,
    /// Refuse with 503 `ratelimit.store_unavailable`: for limits that
    /// protect something more important than availability.
    FailClosed,
}

impl FailMode {
    /// The policy's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "failOpen",
            Self::FailClosed => "failClosed",
        }
    }
}
