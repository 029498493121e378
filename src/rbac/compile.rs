//! The compiled policy: roles resolved into their bindings, indexed by
//! subject and namespace, so that a decision never scans the policy.
//!
//! # Complexity
//!
//! Compiling is linear in the size of the policy (roles, rules, bindings,
//! subjects). Aggregated ClusterRoles are resolved once each, in
//! topological order, and a role whose rules are exactly another's shares
//! them: a chain of aggregations costs its length plus its rules; a role
//! whose union is new costs the rules it unites. A decision looks up the principal's user name and each of its
//! groups, once cluster-wide and once in the request's namespace: one
//! namespace lookup and `2 × (1 + groups)` subject lookups. It then checks the rules of the grants it found —
//! only the bindings that name this user or one of its groups, in this
//! namespace or cluster-wide. So the cost is linear in the principal's
//! groups and in the rules bound to those subjects, and independent of how
//! many other roles, bindings, subjects and namespaces exist.

use std::collections::HashMap as StdHashMap;
use std::sync::Arc;

// Security: foldhash is seeded randomly per map, like std's SipHash, so a
// caller cannot precompute colliding names; it is several times faster on
// the short strings decided here. The keys come from the operator's policy.
pub(super) type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
pub(super) type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

use super::aggregate::{aggregate, work};
use super::attributes::{Action, Attributes};
use super::decision::Decision;
use super::load::PolicyError;
use super::model::{Policy, RoleRefKind, SERVICE_ACCOUNT_PREFIX, SubjectKind};
use super::rule::CompiledRule;

/// Where an allow came from, shared by every grant of one binding.
#[derive(Debug)]
struct Source {
    /// `ClusterRoleBinding/<name>` or `RoleBinding/<namespace>/<name>`.
    binding: Arc<str>,
    /// `ClusterRole/<name>` or `Role/<namespace>/<name>`.
    role: Arc<str>,
}

/// A compiled role: its `Kind/…/name` id and its rules.
type CompiledRole = (Arc<str>, Arc<[CompiledRule]>);

/// A role's rules, granted by one binding to one subject.
#[derive(Debug, Clone)]
struct Grant {
    source: Arc<Source>,
    rules: Arc<[CompiledRule]>,
}

/// Grants per subject in one scope (cluster-wide or one namespace).
#[derive(Debug, Default)]
struct Scope {
    users: HashMap<Box<str>, Vec<Grant>>,
    groups: HashMap<Box<str>, Vec<Grant>>,
}

impl Scope {
    fn add(&mut self, kind: Key<'_>, grant: &Grant) {
        let (map, name) = match kind {
            Key::User(name) => (&mut self.users, name),
            Key::Group(name) => (&mut self.groups, name),
        };
        let grants = match map.get_mut(name) {
            Some(grants) => grants,
            None => map.entry(name.into()).or_default(),
        };
        // A binding that lists the same subject twice grants once.
        if !grants
            .last()
            .is_some_and(|g| Arc::ptr_eq(&g.source, &grant.source))
        {
            grants.push(grant.clone());
        }
    }

    fn first_allowing<'s>(
        &'s self,
        user: &str,
        groups: &[Arc<str>],
        allows: &impl Fn(&CompiledRule) -> bool,
    ) -> Option<&'s Source> {
        let from = |grants: Option<&'s Vec<Grant>>| {
            grants?
                .iter()
                .find(|g| g.rules.iter().any(allows))
                .map(|g| &*g.source)
        };
        from(self.users.get(user))
            .or_else(|| groups.iter().find_map(|g| from(self.groups.get(&**g))))
    }
}

#[derive(Clone, Copy)]
enum Key<'a> {
    User(&'a str),
    Group(&'a str),
}

/// A [`Policy`] compiled for decisions: immutable, shared behind an `Arc`
/// and swapped whole on reload.
///
/// See the [module docs](crate::rbac#complexity) for what a decision costs.
#[derive(Debug, Default)]
pub struct CompiledPolicy {
    cluster: Scope,
    namespaces: HashMap<Box<str>, Scope>,
    bindings: usize,
    dangling: Vec<String>,
}

impl Policy {
    /// Compiles the policy into indexes for [`CompiledPolicy::authorize`].
    ///
    /// Infallible: a policy that loaded is valid. A binding whose roleRef
    /// names no existing role grants nothing, as in Kubernetes; such
    /// bindings are listed by [`CompiledPolicy::dangling_role_refs`].
    pub fn compile(&self) -> CompiledPolicy {
        let mut compiled = CompiledPolicy {
            bindings: self.role_bindings.len() + self.cluster_role_bindings.len(),
            ..CompiledPolicy::default()
        };

        // Each rule set compiles once; every role with exactly those rules
        // (an aggregation chain) and every binding to them shares it.
        let rule_sets = aggregate(&self.cluster_roles);
        let mut compiled_sets: HashMap<*const (), Arc<[CompiledRule]>> = HashMap::default();
        let cluster_roles: HashMap<&str, CompiledRole> = self
            .cluster_roles
            .iter()
            .zip(&rule_sets)
            .map(|(r, set)| {
                let rules = compiled_sets
                    .entry(Arc::as_ptr(set).cast::<()>())
                    .or_insert_with(|| {
                        work(set.len());
                        set.iter().copied().map(CompiledRule::new).collect()
                    });
                let id: Arc<str> = format!("ClusterRole/{}", r.metadata.name).into();
                (r.metadata.name.as_str(), (id, Arc::clone(rules)))
            })
            .collect();
        let roles: HashMap<(&str, &str), CompiledRole> = self
            .roles
            .iter()
            .map(|r| {
                let ns = r.metadata.namespace.as_deref().unwrap_or_default();
                let rules = r.rules.iter().map(CompiledRule::new).collect();
                let id: Arc<str> = format!("Role/{ns}/{}", r.metadata.name).into();
                ((ns, r.metadata.name.as_str()), (id, rules))
            })
            .collect();

        let cluster_subjects = self
            .cluster_role_bindings
            .iter()
            .map(|b| b.subjects.len())
            .sum();
        compiled.cluster.users.reserve(cluster_subjects);

        let mut sa_name = String::new();
        for b in &self.cluster_role_bindings {
            let binding_id = format!("ClusterRoleBinding/{}", b.metadata.name);
            // A ClusterRoleBinding can only refer to a ClusterRole (the
            // loader refuses anything else; a hand-built Role ref dangles).
            let role = match b.role_ref.kind {
                RoleRefKind::ClusterRole => cluster_roles.get(b.role_ref.name.as_str()),
                RoleRefKind::Role => None,
            };
            let Some((role_id, rules)) = role else {
                compiled.dangling.push(format!(
                    "{binding_id} refers to missing {} {:?}",
                    b.role_ref.kind.as_str(),
                    b.role_ref.name
                ));
                continue;
            };
            let grant = Grant {
                source: Arc::new(Source {
                    binding: binding_id.into(),
                    role: Arc::clone(role_id),
                }),
                rules: Arc::clone(rules),
            };
            for s in &b.subjects {
                // appliesToUser with namespace "": a ServiceAccount must
                // name its namespace to match anything cluster-wide.
                if let Some(key) =
                    subject_key(s.kind, &s.name, s.namespace.as_deref(), None, &mut sa_name)
                {
                    compiled.cluster.add(key, &grant);
                }
            }
        }

        for b in &self.role_bindings {
            let ns = b.metadata.namespace.as_deref().unwrap_or_default();
            let binding_id = format!("RoleBinding/{ns}/{}", b.metadata.name);
            let role = match b.role_ref.kind {
                RoleRefKind::ClusterRole => cluster_roles.get(b.role_ref.name.as_str()),
                RoleRefKind::Role => roles.get(&(ns, b.role_ref.name.as_str())),
            };
            let Some((role_id, rules)) = role else {
                compiled.dangling.push(format!(
                    "{binding_id} refers to missing {} {:?}",
                    b.role_ref.kind.as_str(),
                    b.role_ref.name
                ));
                continue;
            };
            let grant = Grant {
                source: Arc::new(Source {
                    binding: binding_id.into(),
                    role: Arc::clone(role_id),
                }),
                rules: Arc::clone(rules),
            };
            let scope = match compiled.namespaces.get_mut(ns) {
                Some(scope) => scope,
                None => compiled.namespaces.entry(ns.into()).or_default(),
            };
            for s in &b.subjects {
                if let Some(key) = subject_key(
                    s.kind,
                    &s.name,
                    s.namespace.as_deref(),
                    Some(ns),
                    &mut sa_name,
                ) {
                    scope.add(key, &grant);
                }
            }
        }
        compiled
    }
}

/// The index key of a subject (`appliesToUser`): a User by name, a Group by
/// name, a ServiceAccount as the user `system:serviceaccount:<ns>:<name>`,
/// its namespace defaulting to the binding's (none for a cluster binding,
/// where a ServiceAccount without a namespace matches nobody).
fn subject_key<'a>(
    kind: SubjectKind,
    name: &'a str,
    namespace: Option<&'a str>,
    binding_ns: Option<&'a str>,
    buf: &'a mut String,
) -> Option<Key<'a>> {
    match kind {
        SubjectKind::User => Some(Key::User(name)),
        SubjectKind::Group => Some(Key::Group(name)),
        SubjectKind::ServiceAccount => {
            let ns = namespace.filter(|n| !n.is_empty()).or(binding_ns)?;
            buf.clear();
            buf.push_str(SERVICE_ACCOUNT_PREFIX);
            buf.push_str(ns);
            buf.push(':');
            buf.push_str(name);
            Some(Key::User(buf.as_str()))
        }
    }
}

impl CompiledPolicy {
    /// Loads the Kubernetes RBAC manifests in `yaml` (see
    /// [`Policy::from_yaml`]) and compiles them, logging each binding whose
    /// roleRef names no existing role (it grants nothing).
    ///
    /// [`Authorizer::from_yaml`](super::Authorizer::from_yaml) does this
    /// and wraps the result; call it yourself to inspect the policy first
    /// ([`dangling_role_refs`](Self::dangling_role_refs)), or as the parse
    /// function of a [`Watched`](crate::config::Watched) file.
    pub fn from_yaml(yaml: impl AsRef<[u8]>) -> Result<Self, PolicyError> {
        let compiled = Policy::from_yaml(yaml)?.compile();
        for dangling in compiled.dangling_role_refs() {
            tracing::warn!(target: "finmesh::rbac", "{dangling}; it grants nothing");
        }
        Ok(compiled)
    }

    /// Decides `attrs`, as the Kubernetes RBAC authorizer would.
    ///
    /// ClusterRoleBindings are consulted first, then — for a resource
    /// request with a namespace — the RoleBindings of that namespace; within
    /// each, the user's grants before its groups'. The first rule that
    /// allows decides and names its binding and role. Nothing allows:
    /// deny. Non-resource requests are granted by ClusterRoleBindings only.
    pub fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        let source = match attrs.action {
            Action::Resource(r) => {
                let allows = |rule: &CompiledRule| rule.allows_resource(r);
                self.cluster
                    .first_allowing(attrs.user, attrs.groups, &allows)
                    .or_else(|| {
                        let scope = self.namespaces.get(attrs.namespace?)?;
                        scope.first_allowing(attrs.user, attrs.groups, &allows)
                    })
            }
            Action::NonResource(n) => {
                let allows = |rule: &CompiledRule| rule.allows_non_resource(n);
                self.cluster
                    .first_allowing(attrs.user, attrs.groups, &allows)
            }
        };
        match source {
            Some(s) => Decision::allow(Arc::clone(&s.binding), Arc::clone(&s.role)),
            None => Decision::deny(),
        }
    }

    /// How many bindings (Role and ClusterRole) the policy had, dangling
    /// ones included.
    pub fn binding_count(&self) -> usize {
        self.bindings
    }

    /// Bindings whose roleRef names a role that does not exist; each grants
    /// nothing. One human-readable line each.
    pub fn dangling_role_refs(&self) -> &[String] {
        &self.dangling
    }
}
