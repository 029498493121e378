//! RBAC manifests: every document kind, `kind: List`, aggregation.
//!
//! Property: a manifest that loads compiles, and the compiled authorizer
//! decides exactly as a naive reference written out here from the
//! Kubernetes rules (bindings scanned one by one, aggregation as a least
//! fixed point) on requests drawn from the policy's own names.

use std::collections::BTreeSet;
use std::sync::Arc;

use finmesh::rbac::{
    Action, Attributes, CompiledPolicy, Policy, PolicyRule, RoleRefKind, Subject, SubjectKind,
};

/// How many distinct values of each kind the queries draw on.
const PER_KIND: usize = 6;

pub fn rbac_yaml(data: &[u8]) {
    let loaded = Policy::from_yaml(data);
    let compiled = CompiledPolicy::from_yaml(data);
    assert_eq!(
        loaded.is_ok(),
        compiled.is_ok(),
        "{loaded:?} / {:?}",
        compiled.as_ref().err()
    );
    let (Ok(policy), Ok(compiled)) = (loaded, compiled) else {
        return;
    };
    assert_eq!(
        compiled.binding_count(),
        policy.role_bindings.len() + policy.cluster_role_bindings.len()
    );
    let reference = Reference::new(&policy);
    let q = Queries::from(&policy);
    for (user, groups) in &q.principals {
        for ns in &q.namespaces {
            for action in &q.actions {
                let attrs = Attributes::new(user, groups, ns.as_deref(), action);
                let got = compiled.authorize(&attrs).is_allowed();
                let want = reference.allows(user, groups, ns.as_deref(), action);
                assert_eq!(
                    got, want,
                    "user {user:?} groups {groups:?} ns {ns:?} {action}: finmesh {got}, reference {want}"
                );
            }
        }
    }
}

/// Names that occur in the policy, a few of each, plus some that do not.
struct Queries {
    principals: Vec<(String, Vec<Arc<str>>)>,
    namespaces: Vec<Option<String>>,
    actions: Vec<Action>,
}

fn few(set: BTreeSet<String>) -> Vec<String> {
    set.into_iter().take(PER_KIND).collect()
}

impl Queries {
    fn from(p: &Policy) -> Self {
        let mut users = BTreeSet::from(["alice".to_owned()]);
        let mut groups = BTreeSet::new();
        let mut namespaces = BTreeSet::from(["tenant-a".to_owned()]);
        let bindings = p
            .role_bindings
            .iter()
            .map(|b| (&b.subjects, b.metadata.namespace.as_deref()))
            .chain(p.cluster_role_bindings.iter().map(|b| (&b.subjects, None)));
        for (subjects, ns) in bindings {
            namespaces.extend(ns.map(str::to_owned));
            for s in subjects {
                match s.kind {
                    SubjectKind::User => {
                        users.insert(s.name.clone());
                    }
                    SubjectKind::Group => {
                        groups.insert(s.name.clone());
                    }
                    SubjectKind::ServiceAccount => {
                        if let Some(ns) = s.namespace.as_deref().or(ns) {
                            users.insert(format!("system:serviceaccount:{ns}:{}", s.name));
                        }
                    }
                }
            }
        }
        let rules = p
            .roles
            .iter()
            .flat_map(|r| &r.rules)
            .chain(p.cluster_roles.iter().flat_map(|r| &r.rules));
        let mut verbs = BTreeSet::from(["get".to_owned(), "create".to_owned()]);
        let mut resources = BTreeSet::from(["accounts".to_owned(), "accounts/balance".to_owned()]);
        let mut api_groups = BTreeSet::from([String::new()]);
        let mut names = BTreeSet::from(["acc-1".to_owned()]);
        let mut urls = BTreeSet::from(["/healthz".to_owned()]);
        for r in rules {
            verbs.extend(r.verbs.iter().filter(|v| *v != "*").cloned());
            api_groups.extend(r.api_groups.iter().filter(|g| *g != "*").cloned());
            for res in &r.resources {
                match res.strip_prefix("*/") {
                    Some(sub) => resources.insert(format!("things/{sub}")),
                    None if res != "*" => resources.insert(res.clone()),
                    None => false,
                };
            }
            names.extend(r.resource_names.iter().cloned());
            for u in &r.non_resource_urls {
                urls.insert(u.replace('*', "x"));
                urls.insert(u.trim_end_matches('*').to_owned());
            }
        }
        let groups = few(groups);
        let mut principals: Vec<(String, Vec<Arc<str>>)> =
            few(users).into_iter().map(|u| (u, Vec::new())).collect();
        principals.extend(
            groups
                .iter()
                .map(|g| ("nobody".to_owned(), vec![Arc::from(g.as_str())])),
        );
        principals.push((
            "nobody".into(),
            groups.iter().map(|g| Arc::from(g.as_str())).collect(),
        ));
        let namespaces: Vec<Option<String>> = std::iter::once(None)
            .chain(few(namespaces).into_iter().map(Some))
            .collect();
        let (verbs, resources, groups_api, names) =
            (few(verbs), few(resources), few(api_groups), few(names));
        let mut actions = Vec::new();
        for v in &verbs {
            for (i, r) in resources.iter().enumerate() {
                let g = &groups_api[i % groups_api.len()];
                let plain = finmesh::rbac::ResourceAction::new(v.as_str(), g.as_str(), r.as_str());
                actions.push(Action::Resource(plain.clone()));
                let n = &names[i % names.len()];
                actions.push(Action::Resource(plain.with_name(n.as_str())));
            }
            for u in urls.iter().take(PER_KIND) {
                actions.push(Action::non_resource(v.as_str(), u.as_str()));
            }
        }
        Self {
            principals,
            namespaces,
            actions,
        }
    }
}

/// Kubernetes' RBAC decision, the slow obvious way.
struct Reference<'p> {
    policy: &'p Policy,
    /// Each ClusterRole's effective rules.
    cluster_rules: Vec<Vec<&'p PolicyRule>>,
}

impl<'p> Reference<'p> {
    fn new(policy: &'p Policy) -> Self {
        let roles = &policy.cluster_roles;
        // Least fixed point: plain roles keep their rules; an aggregated
        // role is the union of what its selectors match (other names),
        // starting from nothing.
        let mut sets: Vec<BTreeSet<(usize, usize)>> = roles
            .iter()
            .enumerate()
            .map(|(i, r)| match r.aggregation_rule {
                None => (0..r.rules.len()).map(|k| (i, k)).collect(),
                Some(_) => BTreeSet::new(),
            })
            .collect();
        loop {
            let mut changed = false;
            for (i, r) in roles.iter().enumerate() {
                let Some(agg) = &r.aggregation_rule else {
                    continue;
                };
                let mut union = BTreeSet::new();
                for (j, other) in roles.iter().enumerate() {
                    if other.metadata.name != r.metadata.name
                        && agg
                            .cluster_role_selectors
                            .iter()
                            .any(|s| s.matches(&other.metadata.labels))
                    {
                        union.extend(sets[j].iter().copied());
                    }
                }
                if union != sets[i] {
                    sets[i] = union;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let cluster_rules = sets
            .iter()
            .map(|s| s.iter().map(|&(i, k)| &roles[i].rules[k]).collect())
            .collect();
        Self {
            policy,
            cluster_rules,
        }
    }

    fn cluster_role(&self, name: &str) -> Option<&[&'p PolicyRule]> {
        let i = self
            .policy
            .cluster_roles
            .iter()
            .position(|r| r.metadata.name == name)?;
        Some(&self.cluster_rules[i])
    }

    fn allows(&self, user: &str, groups: &[Arc<str>], ns: Option<&str>, action: &Action) -> bool {
        let applies = |s: &Subject, binding_ns: Option<&str>| match s.kind {
            SubjectKind::User => s.name == user,
            SubjectKind::Group => groups.iter().any(|g| **g == *s.name),
            SubjectKind::ServiceAccount => s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .or(binding_ns)
                .is_some_and(|n| format!("system:serviceaccount:{n}:{}", s.name) == user),
        };
        let any_rule = |rules: &[&PolicyRule]| rules.iter().any(|r| rule_allows(r, action));
        for b in &self.policy.cluster_role_bindings {
            if b.role_ref.kind == RoleRefKind::ClusterRole
                && b.subjects.iter().any(|s| applies(s, None))
                && self.cluster_role(&b.role_ref.name).is_some_and(any_rule)
            {
                return true;
            }
        }
        let (Some(ns), Action::Resource(_)) = (ns, action) else {
            return false;
        };
        for b in &self.policy.role_bindings {
            let bns = b.metadata.namespace.as_deref().unwrap_or_default();
            if bns != ns || !b.subjects.iter().any(|s| applies(s, Some(bns))) {
                continue;
            }
            let allowed = match b.role_ref.kind {
                RoleRefKind::ClusterRole => {
                    self.cluster_role(&b.role_ref.name).is_some_and(any_rule)
                }
                RoleRefKind::Role => self.policy.roles.iter().any(|r| {
                    r.metadata.namespace.as_deref() == Some(ns)
                        && r.metadata.name == b.role_ref.name
                        && r.rules.iter().any(|rule| rule_allows(rule, action))
                }),
            };
            if allowed {
                return true;
            }
        }
        false
    }
}

fn has(list: &[String], s: &str) -> bool {
    list.iter().any(|x| x == "*" || x == s)
}

fn rule_allows(rule: &PolicyRule, action: &Action) -> bool {
    match action {
        Action::Resource(r) => {
            let combined = r.combined_resource();
            let resource_ok = rule.resources.iter().any(|x| {
                x == "*"
                    || x == combined
                    || r.subresource()
                        .is_some_and(|sub| x.strip_prefix("*/") == Some(sub))
            });
            let name_ok = rule.resource_names.is_empty()
                || (!matches!(r.verb(), "create" | "list" | "watch" | "deletecollection")
                    && rule
                        .resource_names
                        .iter()
                        .any(|n| Some(n.as_str()) == r.name()));
            has(&rule.verbs, r.verb())
                && has(&rule.api_groups, r.api_group())
                && resource_ok
                && name_ok
        }
        Action::NonResource(n) => {
            has(&rule.verbs, n.verb())
                && rule.non_resource_urls.iter().any(|u| {
                    u == "*"
                        || u == n.path()
                        || (u.ends_with('*') && n.path().starts_with(u.trim_end_matches('*')))
                })
        }
    }
}
