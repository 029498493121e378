//! The `rbac.authorization.k8s.io/v1` object shapes: [`Role`],
//! [`ClusterRole`], [`RoleBinding`], [`ClusterRoleBinding`] and their parts,
//! gathered into a [`Policy`].
//!
//! Field names follow the Kubernetes API (`apiGroups` is `api_groups`,
//! `roleRef` is `role_ref`, …). Build them in code, or load manifests with
//! [`Policy::from_yaml`](crate::rbac::Policy::from_yaml).

use std::collections::BTreeMap;

/// The API group of the RBAC objects and of `User`/`Group` subjects.
pub const RBAC_API_GROUP: &str = "rbac.authorization.k8s.io";
/// The only `apiVersion` the loader accepts.
pub const RBAC_API_VERSION: &str = "rbac.authorization.k8s.io/v1";

/// Object metadata: the parts of `metadata` RBAC reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectMeta {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`: required for `Role` and `RoleBinding`, absent
    /// for the cluster-scoped kinds.
    pub namespace: Option<String>,
    /// `metadata.labels`: what a ClusterRole's `aggregationRule` selects
    /// on; otherwise kept for tooling.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`, kept for tooling; RBAC does not read them.
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// Metadata of a cluster-scoped object.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Metadata of a namespaced object.
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Self::default()
        }
    }
}

/// One rule of a role: these verbs on these resources (or these
/// non-resource URLs).
///
/// `*` is a wildcard in `verbs`, `api_groups`, `resources` and
/// `non_resource_urls`; `*/sub` in `resources` names a subresource of every
/// resource. An empty `resource_names` means every name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PolicyRule {
    /// `verbs`: `get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`, a custom verb, or `*`.
    pub verbs: Vec<String>,
    /// `apiGroups`: `""` is the core group; `*` is every group.
    pub api_groups: Vec<String>,
    /// `resources`: `accounts`, `accounts/balance`, `*/balance`, `*`.
    pub resources: Vec<String>,
    /// `resourceNames`: exact names; empty means all.
    pub resource_names: Vec<String>,
    /// `nonResourceURLs`: exact paths, or a prefix ending in `*`.
    pub non_resource_urls: Vec<String>,
}

fn strings<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    items.into_iter().map(Into::into).collect()
}

impl PolicyRule {
    /// A resource rule: `verbs` on `resources` in `api_groups`.
    pub fn resources<V, G, R>(
        verbs: impl IntoIterator<Item = V>,
        api_groups: impl IntoIterator<Item = G>,
        resources: impl IntoIterator<Item = R>,
    ) -> Self
    where
        V: Into<String>,
        G: Into<String>,
        R: Into<String>,
    {
        Self {
            verbs: strings(verbs),
            api_groups: strings(api_groups),
            resources: strings(resources),
            ..Self::default()
        }
    }

    /// A non-resource rule: `verbs` on `urls`.
    pub fn non_resource_urls<V, U>(
        verbs: impl IntoIterator<Item = V>,
        urls: impl IntoIterator<Item = U>,
    ) -> Self
    where
        V: Into<String>,
        U: Into<String>,
    {
        Self {
            verbs: strings(verbs),
            non_resource_urls: strings(urls),
            ..Self::default()
        }
    }

    /// Restricts the rule to these resource names.
    pub fn with_resource_names<N: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = N>,
    ) -> Self {
        self.resource_names = strings(names);
        self
    }
}

/// The kind of a binding subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// A user, matched by exact name.
    User,
    /// A group, matched when the principal's groups contain it.
    Group,
    /// A service account, matched as the user
    /// `system:serviceaccount:<namespace>:<name>`.
    ServiceAccount,
}

impl SubjectKind {
    /// The Kubernetes kind name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
            Self::ServiceAccount => "ServiceAccount",
        }
    }
}

/// Who a binding grants its role to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subject {
    /// User, Group or ServiceAccount.
    pub kind: SubjectKind,
    /// The user, group or service-account name.
    pub name: String,
    /// For a ServiceAccount: its namespace. In a `RoleBinding` it defaults
    /// to the binding's namespace; a `ClusterRoleBinding` must name it.
    pub namespace: Option<String>,
}

impl Subject {
    /// A `User` subject.
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            kind: SubjectKind::User,
            name: name.into(),
            namespace: None,
        }
    }

    /// A `Group` subject.
    pub fn group(name: impl Into<String>) -> Self {
        Self {
            kind: SubjectKind::Group,
            name: name.into(),
            namespace: None,
        }
    }

    /// A `ServiceAccount` subject; `namespace: None` defaults to the
    /// binding's namespace (RoleBindings only).
    pub fn service_account(namespace: Option<&str>, name: impl Into<String>) -> Self {
        Self {
            kind: SubjectKind::ServiceAccount,
            name: name.into(),
            namespace: namespace.map(str::to_owned),
        }
    }
}

/// The user name Kubernetes gives a service account:
/// `system:serviceaccount:<namespace>:<name>` (`serviceaccount.MakeUsername`).
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

pub(crate) const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The kind of role a binding refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoleRefKind {
    /// A `Role` in the binding's namespace.
    Role,
    /// A `ClusterRole`.
    ClusterRole,
}

impl RoleRefKind {
    /// The Kubernetes kind name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Role => "Role",
            Self::ClusterRole => "ClusterRole",
        }
    }
}

/// The role a binding grants. A reference to a role that does not exist
/// (a *dangling* roleRef) grants nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleRef {
    /// Role or ClusterRole.
    pub kind: RoleRefKind,
    /// The role's name.
    pub name: String,
}

impl RoleRef {
    /// A reference to the `Role` `name` in the binding's namespace.
    pub fn role(name: impl Into<String>) -> Self {
        Self {
            kind: RoleRefKind::Role,
            name: name.into(),
        }
    }

    /// A reference to the `ClusterRole` `name`.
    pub fn cluster_role(name: impl Into<String>) -> Self {
        Self {
            kind: RoleRefKind::ClusterRole,
            name: name.into(),
        }
    }
}

/// A namespaced set of rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Role {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// The rules (resource rules only).
    pub rules: Vec<PolicyRule>,
}

impl Role {
    /// A role `name` in `namespace`.
    pub fn new(namespace: &str, name: &str, rules: Vec<PolicyRule>) -> Self {
        Self {
            metadata: ObjectMeta::namespaced(namespace, name),
            rules,
        }
    }
}

/// A cluster-wide set of rules, grantable everywhere (ClusterRoleBinding)
/// or in one namespace (RoleBinding).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterRole {
    /// Name (and labels, which aggregation selects on).
    pub metadata: ObjectMeta,
    /// The rules. Ignored when [`aggregation_rule`](Self::aggregation_rule)
    /// is set: Kubernetes' aggregation controller overwrites them.
    pub rules: Vec<PolicyRule>,
    /// `aggregationRule`: this role's rules are those of every other
    /// ClusterRole a selector matches.
    pub aggregation_rule: Option<AggregationRule>,
}

impl ClusterRole {
    /// A cluster role `name`.
    pub fn new(name: &str, rules: Vec<PolicyRule>) -> Self {
        Self {
            metadata: ObjectMeta::cluster(name),
            rules,
            aggregation_rule: None,
        }
    }

    /// A cluster role `name` aggregated from the ClusterRoles `selectors`
    /// match.
    pub fn aggregated(name: &str, selectors: Vec<LabelSelector>) -> Self {
        Self {
            metadata: ObjectMeta::cluster(name),
            rules: Vec::new(),
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: selectors,
            }),
        }
    }
}

/// A ClusterRole's `aggregationRule`. As Kubernetes' ClusterRole
/// aggregation controller does, the role's rules become the union
/// (duplicates removed) of the rules of every *other* ClusterRole whose
/// labels any selector matches, followed transitively through aggregated
/// roles (`admin` ⊇ `edit` ⊇ `view`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AggregationRule {
    /// `clusterRoleSelectors`: at least one.
    pub cluster_role_selectors: Vec<LabelSelector>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, all
/// of which must hold). An empty selector matches every object, as in
/// Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Selects objects labelled `key: value`.
    pub fn labelled(key: &str, value: &str) -> Self {
        Self {
            match_labels: BTreeMap::from([(key.to_owned(), value.to_owned())]),
            match_expressions: Vec::new(),
        }
    }

    /// Whether `labels` satisfy every part of the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the values apply.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn` (non-empty); empty otherwise.
    pub values: Vec<String>,
}

impl LabelSelectorRequirement {
    /// A requirement on `key`.
    pub fn new(key: &str, operator: SelectorOperator, values: Vec<String>) -> Self {
        Self {
            key: key.to_owned(),
            operator,
            values,
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// A `matchExpressions` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectorOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent, or present with none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// Grants a role to subjects within one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleBinding {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// Who is granted the role.
    pub subjects: Vec<Subject>,
    /// The Role (in this namespace) or ClusterRole granted.
    pub role_ref: RoleRef,
}

impl RoleBinding {
    /// A binding `name` in `namespace` of `role_ref` to `subjects`.
    pub fn new(namespace: &str, name: &str, role_ref: RoleRef, subjects: Vec<Subject>) -> Self {
        Self {
            metadata: ObjectMeta::namespaced(namespace, name),
            subjects,
            role_ref,
        }
    }
}

/// Grants a ClusterRole to subjects in every namespace, and for
/// non-resource URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterRoleBinding {
    /// Name.
    pub metadata: ObjectMeta,
    /// Who is granted the role.
    pub subjects: Vec<Subject>,
    /// The ClusterRole granted.
    pub role_ref: RoleRef,
}

impl ClusterRoleBinding {
    /// A cluster binding `name` of the ClusterRole `cluster_role` to `subjects`.
    pub fn new(name: &str, cluster_role: &str, subjects: Vec<Subject>) -> Self {
        Self {
            metadata: ObjectMeta::cluster(name),
            subjects,
            role_ref: RoleRef::cluster_role(cluster_role),
        }
    }
}

/// A whole policy: every role and binding, as loaded from manifests or
/// built in code. [`compile`](Self::compile) it into an index to decide.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Roles.
    pub roles: Vec<Role>,
    /// ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// RoleBindings.
    pub role_bindings: Vec<RoleBinding>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl Policy {
    /// An empty policy: denies everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a Role.
    pub fn with_role(mut self, role: Role) -> Self {
        self.roles.push(role);
        self
    }

    /// Adds a ClusterRole.
    pub fn with_cluster_role(mut self, role: ClusterRole) -> Self {
        self.cluster_roles.push(role);
        self
    }

    /// Adds a RoleBinding.
    pub fn with_role_binding(mut self, binding: RoleBinding) -> Self {
        self.role_bindings.push(binding);
        self
    }

    /// Adds a ClusterRoleBinding.
    pub fn with_cluster_role_binding(mut self, binding: ClusterRoleBinding) -> Self {
        self.cluster_role_bindings.push(binding);
        self
    }

    /// Appends everything in `other`.
    pub fn extend(&mut self, other: Policy) {
        self.roles.extend(other.roles);
        self.cluster_roles.extend(other.cluster_roles);
        self.role_bindings.extend(other.role_bindings);
        self.cluster_role_bindings
            .extend(other.cluster_role_bindings);
    }
}
