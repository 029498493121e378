//! One role rule compiled for matching: Kubernetes' `RuleAllows` and the
//! `VerbMatches`, `APIGroupMatches`, `ResourceMatches`,
//! `ResourceNameMatches` and `NonResourceURLMatches` helpers.

use super::attributes::{NonResourceAction, ResourceAction};
use super::model::PolicyRule;

/// A rule, ready to match.
#[derive(Debug)]
pub(super) struct CompiledRule {
    verbs: Set,
    api_groups: Set,
    resources: Resources,
    /// Empty: every name.
    resource_names: Box<[Box<str>]>,
    urls: Urls,
}

/// A list of strings where `*` means everything.
#[derive(Debug)]
struct Set {
    all: bool,
    items: Box<[Box<str>]>,
}

impl Set {
    fn new(items: &[String]) -> Self {
        Self {
            all: items.iter().any(|s| s == "*"),
            items: items.iter().map(|s| s.as_str().into()).collect(),
        }
    }

    /// `VerbMatches` / `APIGroupMatches`.
    fn matches(&self, s: &str) -> bool {
        self.all || self.items.iter().any(|i| &**i == s)
    }
}

#[derive(Debug)]
struct Resources {
    all: bool,
    /// Exact entries: `accounts`, `accounts/balance`.
    exact: Box<[Box<str>]>,
    /// The `sub` of each `*/sub` entry.
    any_with_sub: Box<[Box<str>]>,
}

impl Resources {
    fn new(items: &[String]) -> Self {
        Self {
            all: items.iter().any(|s| s == "*"),
            exact: items.iter().map(|s| s.as_str().into()).collect(),
            any_with_sub: items
                .iter()
                .filter_map(|s| s.strip_prefix("*/"))
                .map(Into::into)
                .collect(),
        }
    }

    /// `ResourceMatches`: `*`, the exact combined resource, or `*/sub` for
    /// the request's subresource. A rule on `accounts` does not cover
    /// `accounts/balance`, nor the other way round.
    fn matches(&self, combined: &str, sub: Option<&str>) -> bool {
        if self.all || self.exact.iter().any(|r| &**r == combined) {
            return true;
        }
        match sub {
            Some(sub) => self.any_with_sub.iter().any(|s| &**s == sub),
            None => false,
        }
    }
}

#[derive(Debug)]
struct Urls {
    all: bool,
    exact: Box<[Box<str>]>,
    /// Entries ending in `*`, with every trailing `*` removed.
    prefixes: Box<[Box<str>]>,
}

impl Urls {
    fn new(items: &[String]) -> Self {
        Self {
            all: items.iter().any(|s| s == "*"),
            exact: items.iter().map(|s| s.as_str().into()).collect(),
            prefixes: items
                .iter()
                .filter(|s| s.ends_with('*'))
                .map(|s| s.trim_end_matches('*').into())
                .collect(),
        }
    }

    /// `NonResourceURLMatches`: `*`, exact, or a trailing-`*` prefix
    /// (`/healthz/*` matches `/healthz/live`, not `/healthz`).
    fn matches(&self, path: &str) -> bool {
        self.all
            || self.exact.iter().any(|u| &**u == path)
            || self.prefixes.iter().any(|p| path.starts_with(&**p))
    }
}

/// Verbs that act on no single named object, or on one whose name is not
/// known when the request is authorized: a rule restricted by
/// `resourceNames` never allows them.
const UNNAMED_VERBS: [&str; 4] = ["create", "list", "watch", "deletecollection"];

impl CompiledRule {
    pub(super) fn new(rule: &PolicyRule) -> Self {
        Self {
            verbs: Set::new(&rule.verbs),
            api_groups: Set::new(&rule.api_groups),
            resources: Resources::new(&rule.resources),
            resource_names: rule
                .resource_names
                .iter()
                .map(|s| s.as_str().into())
                .collect(),
            urls: Urls::new(&rule.non_resource_urls),
        }
    }

    /// `RuleAllows` for a resource request.
    pub(super) fn allows_resource(&self, r: &ResourceAction) -> bool {
        self.verbs.matches(r.verb())
            && self.api_groups.matches(r.api_group())
            && self
                .resources
                .matches(r.combined_resource(), r.subresource())
            && self.name_matches(r)
    }

    /// `ResourceNameMatches`. Kubernetes never has a name for create, list,
    /// watch and deletecollection, so the empty request name never equals a
    /// listed one; a custom mapper could set one, and this keeps the rule
    /// exact regardless.
    fn name_matches(&self, r: &ResourceAction) -> bool {
        if self.resource_names.is_empty() {
            return true;
        }
        if UNNAMED_VERBS.contains(&r.verb()) {
            return false;
        }
        let name = r.name().unwrap_or_default();
        self.resource_names.iter().any(|n| &**n == name)
    }

    /// `RuleAllows` for a non-resource request.
    pub(super) fn allows_non_resource(&self, n: &NonResourceAction) -> bool {
        self.verbs.matches(n.verb()) && self.urls.matches(n.path())
    }
}
