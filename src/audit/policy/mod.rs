//! [`AuditPolicy`]: which requests are audited, and how much of them.
//!
//! A Kubernetes `audit.k8s.io/v1` `Policy` manifest, loaded unchanged:
//! ordered rules, the first whose `users`, `userGroups`, `verbs`,
//! `resources` (`group`, `resources`, `resourceNames`), `namespaces` and
//! `nonResourceURLs` all match chooses the request's [`Level`]; a request
//! no rule matches gets [`Level::None`], as in the apiserver. Unknown
//! fields are refused with their path.
//!
//! How a request is seen: the user is the verified subject and its groups
//! (from the token); verb, API group, resource, subresource and name are
//! the ones the RBAC layer mapped the request to, and the namespace is the
//! tenant. A request RBAC did not map (refused before it, or not
//! configured) is a non-resource request: its path and a verb from its
//! method (`get`, `create`, `update`, `patch`, `delete`).
//!
//! **Rejections are always audited**: a request an inner layer refused
//! (any rejection code) is written at least at `Metadata`, whatever level
//! or omitted stages the policy gives it — a deliberate deviation from the
//! apiserver, so that a `None` rule for probes (`nonResourceURLs` match
//! as in Kubernetes: exact, `*`, or a raw prefix before a trailing `*`)
//! can never hide refused requests, such as a token brute force on
//! `/healthz/../v1/transfer`.

mod load;

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::{ConfigError, WatchOptions, Watched};

pub use load::{AuditPolicyError, MAX_POLICY_BYTES};

use load::GroupResources;

/// How much of a request is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Level {
    /// Nothing: no request record, and the handler's events are dropped.
    None,
    /// The request record (who, tenant, verb, resource, decision, status…).
    Metadata,
    /// The record plus the request body (`request_body`).
    Request,
    /// The record plus the request and the response body
    /// (`request_body`, `response_body`).
    RequestResponse,
}

/// The stages of the apiserver's audit events. A finmesh request record
/// is written at `ResponseComplete` (`Panic` when the inner service
/// failed); a rule that omits that stage writes no request record, while
/// the handler's events still follow the rule's level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum Stage {
    /// The request was received.
    RequestReceived,
    /// The response headers were sent.
    ResponseStarted,
    /// The response body was sent.
    ResponseComplete,
    /// The handler panicked (finmesh: the inner service failed).
    Panic,
}

#[derive(Clone, Debug)]
pub(super) struct Rule {
    level: Level,
    users: Vec<String>,
    user_groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<GroupResources>,
    namespaces: Vec<String>,
    non_resource_urls: Vec<String>,
    omit_stages: Vec<Stage>,
}

/// A compiled audit policy; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditPolicy {
    rules: Arc<[Rule]>,
    /// The highest level any rule gives, computed once at load.
    max_level: Level,
}

/// What a policy decided for one request: its level, and the stages not
/// to record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyDecision {
    /// The level.
    pub level: Level,
    /// Stages the matching rule (or the policy) omits.
    pub omit_stages: Vec<Stage>,
}

impl PolicyDecision {
    /// Whether a record of `stage` is written.
    pub fn records(&self, stage: Stage) -> bool {
        self.level != Level::None && !self.omit_stages.contains(&stage)
    }
}

/// A request as an audit policy sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditAttributes<'a> {
    /// The verified user (subject), if any.
    pub user: Option<&'a str>,
    /// The verified user's groups.
    pub groups: &'a [Arc<str>],
    /// The verb (`get`, `list`, `create`, …).
    pub verb: &'a str,
    /// `Some(group)` for a resource request (`""`: the core group);
    /// `None` for a non-resource request.
    pub api_group: Option<&'a str>,
    /// The resource (`transfers`), without its subresource.
    pub resource: &'a str,
    /// The subresource (`status`), if any.
    pub subresource: Option<&'a str>,
    /// The resource name, if the request names one.
    pub name: Option<&'a str>,
    /// The namespace (tenant); `""` for a cluster-scoped resource.
    pub namespace: &'a str,
    /// The request path (non-resource requests).
    pub path: &'a str,
}

impl AuditPolicy {
    fn from_rules(rules: Arc<[Rule]>) -> Self {
        let max_level = rules.iter().map(|r| r.level).max().unwrap_or(Level::None);
        Self { rules, max_level }
    }

    /// Parses an `audit.k8s.io/v1` `Policy` manifest (YAML or JSON, at
    /// most [`MAX_POLICY_BYTES`]). Unknown fields, unknown levels and
    /// stages, a wrong `apiVersion` or `kind`, and rules the apiserver
    /// would refuse (resources and non-resource URLs together, a `*`
    /// anywhere but at the end of a URL) are errors naming their field.
    /// `omitManagedFields` is accepted and has no effect (finmesh records
    /// hold no managed fields).
    pub fn from_yaml(bytes: &[u8]) -> Result<Self, AuditPolicyError> {
        load::load(bytes)
    }

    /// A policy with one rule: every request at `level`.
    pub fn uniform(level: Level) -> Self {
        Self::from_rules(Arc::from([Rule {
            level,
            users: Vec::new(),
            user_groups: Vec::new(),
            verbs: Vec::new(),
            resources: Vec::new(),
            namespaces: Vec::new(),
            non_resource_urls: Vec::new(),
            omit_stages: Vec::new(),
        }]))
    }

    /// Loads the manifest at `path` and reloads it when the file changes
    /// (see [`crate::config`]): a version that fails to load is logged and
    /// counted, and the last good one stays.
    pub fn watch(path: impl AsRef<Path>) -> Result<Watched<AuditPolicy>, ConfigError> {
        WatchOptions::new().watch(path, |bytes: &[u8]| AuditPolicy::from_yaml(bytes))
    }

    /// How many rules the policy holds.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The level of a request: the first matching rule's, else
    /// [`Level::None`].
    pub fn level(&self, attrs: &AuditAttributes<'_>) -> Level {
        self.decide(attrs).level
    }

    /// The level and omitted stages of a request.
    pub fn decide(&self, attrs: &AuditAttributes<'_>) -> PolicyDecision {
        match self.rules.iter().find(|r| r.matches(attrs)) {
            Some(r) => PolicyDecision {
                level: r.level,
                omit_stages: r.omit_stages.clone(),
            },
            None => PolicyDecision {
                level: Level::None,
                omit_stages: Vec::new(),
            },
        }
    }

    /// The highest level any rule gives: whether bodies may be needed.
    pub(crate) fn max_level(&self) -> Level {
        self.max_level
    }
}

fn has(list: &[String], s: &str) -> bool {
    list.iter().any(|x| x == s)
}

impl Rule {
    // The apiserver's `ruleMatches` (k8s.io/apiserver/pkg/audit/policy).
    fn matches(&self, a: &AuditAttributes<'_>) -> bool {
        if !self.users.is_empty() && !a.user.is_some_and(|u| has(&self.users, u)) {
            return false;
        }
        if !self.user_groups.is_empty()
            && (a.user.is_none() || !a.groups.iter().any(|g| has(&self.user_groups, g)))
        {
            return false;
        }
        if !self.verbs.is_empty() && !has(&self.verbs, a.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return self.matches_resource(a);
        }
        if !self.non_resource_urls.is_empty() {
            return a.api_group.is_none()
                && self
                    .non_resource_urls
                    .iter()
                    .any(|spec| path_matches(a.path, spec));
        }
        true
    }

    fn matches_resource(&self, a: &AuditAttributes<'_>) -> bool {
        let Some(group) = a.api_group else {
            return false;
        };
        if !self.namespaces.is_empty() && !has(&self.namespaces, a.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        self.resources.iter().any(|gr| {
            if gr.group != group {
                return false;
            }
            if gr.resources.is_empty() {
                return true;
            }
            if !gr.resource_names.is_empty() && !a.name.is_some_and(|n| has(&gr.resource_names, n))
            {
                return false;
            }
            gr.resources.iter().any(|res| {
                let combined_matches = match a.subresource {
                    Some(sub) => res
                        .strip_prefix(a.resource)
                        .and_then(|r| r.strip_prefix('/'))
                        .is_some_and(|r| r == sub),
                    None => res == a.resource,
                };
                combined_matches
                    || res == "*"
                    || a.subresource
                        .is_some_and(|sub| res.strip_prefix("*/").is_some_and(|r| r == sub))
                    || res.strip_suffix("/*").is_some_and(|r| r == a.resource)
            })
        })
    }
}

/// `spec` matches `path`: equal, `*`, or a prefix ending in `*`.
fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || spec
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// The Kubernetes verb of an HTTP method, for requests RBAC did not map.
pub(super) fn method_verb(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "unknown",
    }
}
