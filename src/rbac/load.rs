//! Loading Kubernetes RBAC manifests: multi-document YAML (or JSON),
//! `kind: List`, strict about everything that could change a decision.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::model::{
    AggregationRule, ClusterRole, ClusterRoleBinding, LabelSelector, LabelSelectorRequirement,
    ObjectMeta, Policy, PolicyRule, RBAC_API_GROUP, RBAC_API_VERSION, Role, RoleBinding, RoleRef,
    RoleRefKind, SelectorOperator, Subject, SubjectKind,
};
use crate::tenant::TenantNamespace;

/// The largest manifest [`Policy::from_yaml`] parses (16 MiB, like every
/// finmesh policy file).
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;

/// Why a manifest was refused: which document, which field, what is wrong.
///
/// `document` counts YAML documents from 0 in the order they appear
/// (empty documents included); `field` is a path inside it, such as
/// `items[2].rules[0].verbs` (empty when the document as a whole is wrong).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    document: usize,
    field: String,
    message: String,
}

impl PolicyError {
    fn new(document: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            document,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The index of the YAML document, from 0.
    pub fn document(&self) -> usize {
        self.document
    }

    /// The path of the offending field inside the document (`""` for the
    /// document itself).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "document {}: {}", self.document, self.message)
        } else {
            write!(
                f,
                "document {}: {}: {}",
                self.document, self.field, self.message
            )
        }
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    /// Parses Kubernetes RBAC manifests: any number of YAML documents
    /// separated by `---` (JSON is YAML too), each a `Role`, `ClusterRole`,
    /// `RoleBinding` or `ClusterRoleBinding` of `apiVersion:
    /// rbac.authorization.k8s.io/v1`, or a `kind: List` (`apiVersion: v1`)
    /// of them, as `kubectl get -o yaml` writes it.
    ///
    /// Refused, with the document index and field path: unknown kinds and
    /// apiVersions, unknown fields, missing required fields, values of the
    /// wrong type, rules the Kubernetes API server would refuse (no verbs,
    /// a resource rule without apiGroups or resources, non-resource URLs in
    /// a Role or mixed with resources), subjects of unknown kinds, a
    /// ServiceAccount without a namespace in a ClusterRoleBinding, a
    /// ClusterRoleBinding to a Role, a namespaced kind without
    /// `metadata.namespace` (or a cluster kind with one), an
    /// `aggregationRule` without selectors or with a malformed expression,
    /// and two objects of the same kind and name. A policy typo must not
    /// silently grant or revoke.
    ///
    /// Empty documents are skipped. A roleRef naming a role that does not
    /// exist is *not* an error: as in Kubernetes it grants nothing.
    pub fn from_yaml(yaml: &str) -> std::result::Result<Policy, PolicyError> {
        if yaml.len() > MAX_MANIFEST_BYTES {
            return Err(PolicyError::new(
                0,
                "",
                format!(
                    "manifest is {} bytes, over the {MAX_MANIFEST_BYTES}-byte limit",
                    yaml.len()
                ),
            ));
        }
        let mut loader = Loader::default();
        for (index, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
            // A syntax error ends the stream: the deserializer would repeat
            // it forever.
            let value = Value::deserialize(document)
                .map_err(|e| PolicyError::new(index, "", format!("invalid YAML: {e}")))?;
            loader.document(index, value)?;
        }
        Ok(loader.policy)
    }

    /// [`from_yaml`](Self::from_yaml) for bytes, which must be UTF-8.
    pub fn from_yaml_bytes(yaml: &[u8]) -> std::result::Result<Policy, PolicyError> {
        if yaml.len() > MAX_MANIFEST_BYTES {
            return Err(PolicyError::new(
                0,
                "",
                format!(
                    "manifest is {} bytes, over the {MAX_MANIFEST_BYTES}-byte limit",
                    yaml.len()
                ),
            ));
        }
        let text = std::str::from_utf8(yaml)
            .map_err(|e| PolicyError::new(0, "", format!("manifest is not UTF-8: {e}")))?;
        Self::from_yaml(text)
    }
}

#[derive(Default)]
struct Loader {
    policy: Policy,
    /// (kind, namespace, name) → document index, to refuse duplicates.
    seen: HashMap<(&'static str, String, String), usize>,
}

/// A path inside a document, built only when an error is reported.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Key(parent, key) => {
                let parent = parent.render();
                if parent.is_empty() {
                    (*key).to_owned()
                } else {
                    format!("{parent}.{key}")
                }
            }
            Path::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }
}

type Result<T> = std::result::Result<T, PolicyError>;

/// One document: where errors point.
struct Doc {
    index: usize,
}

impl Doc {
    fn err(&self, path: &Path<'_>, message: impl Into<String>) -> PolicyError {
        PolicyError::new(self.index, path.render(), message)
    }

    fn mapping<'v>(&self, value: &'v Value, path: &Path<'_>) -> Result<&'v Mapping> {
        value.as_mapping().ok_or_else(|| {
            self.err(
                path,
                format!("expected a mapping, found {}", describe(value)),
            )
        })
    }

    /// Refuses keys outside `allowed`.
    fn known_keys(&self, map: &Mapping, allowed: &[&str], path: &Path<'_>) -> Result<()> {
        for key in map.keys() {
            match key.as_str() {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => {
                    return Err(self.err(
                        &Path::Key(path, k),
                        format!("unknown field (expected one of {})", allowed.join(", ")),
                    ));
                }
                None => {
                    return Err(self.err(path, format!("non-string key {}", describe(key))));
                }
            }
        }
        Ok(())
    }

    fn opt_str<'v>(&self, map: &'v Mapping, key: &str, path: &Path<'_>) -> Result<Option<&'v str>> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(
                &Path::Key(path, key),
                format!("expected a string, found {}", describe(other)),
            )),
        }
    }

    fn req_str<'v>(&self, map: &'v Mapping, key: &str, path: &Path<'_>) -> Result<&'v str> {
        match self.opt_str(map, key, path)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(self.err(&Path::Key(path, key), "required")),
        }
    }

    fn str_list(&self, map: &Mapping, key: &str, path: &Path<'_>) -> Result<Vec<String>> {
        let here = Path::Key(path, key);
        match map.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.err(
                        &Path::Index(&here, i),
                        format!("expected a string, found {}", describe(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.err(
                &here,
                format!("expected a list of strings, found {}", describe(other)),
            )),
        }
    }

    fn str_map(
        &self,
        map: &Mapping,
        key: &str,
        path: &Path<'_>,
    ) -> Result<BTreeMap<String, String>> {
        let here = Path::Key(path, key);
        match map.get(key) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Mapping(m)) => m
                .iter()
                .map(|(k, v)| match (k, v) {
                    (Value::String(k), Value::String(v)) => Ok((k.clone(), v.clone())),
                    (Value::String(k), other) => Err(self.err(
                        &Path::Key(&here, k),
                        format!("expected a string, found {}", describe(other)),
                    )),
                    (other, _) => {
                        Err(self.err(&here, format!("non-string key {}", describe(other))))
                    }
                })
                .collect(),
            Some(other) => Err(self.err(
                &here,
                format!("expected a mapping, found {}", describe(other)),
            )),
        }
    }

    fn seq<'v>(&self, map: &'v Mapping, key: &str, path: &Path<'_>) -> Result<&'v [Value]> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Sequence(items)) => Ok(items),
            Some(other) => Err(self.err(
                &Path::Key(path, key),
                format!("expected a list, found {}", describe(other)),
            )),
        }
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Whether the object kind lives in a namespace.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Namespaced,
    Cluster,
}

impl Loader {
    fn document(&mut self, index: usize, value: Value) -> Result<()> {
        if value.is_null() {
            return Ok(()); // an empty document, e.g. a leading or trailing `---`
        }
        let doc = Doc { index };
        let root = Path::Root;
        let map = doc.mapping(&value, &root)?;
        let kind = doc.req_str(map, "kind", &root)?;
        if kind == "List" {
            let api_version = doc.req_str(map, "apiVersion", &root)?;
            if api_version != "v1" {
                return Err(doc.err(
                    &Path::Key(&root, "apiVersion"),
                    format!("unknown apiVersion {api_version:?} for kind List (expected \"v1\")"),
                ));
            }
            doc.known_keys(map, &["apiVersion", "kind", "metadata", "items"], &root)?;
            let items = Path::Key(&root, "items");
            for (i, item) in doc.seq(map, "items", &root)?.iter().enumerate() {
                let path = Path::Index(&items, i);
                let item_map = doc.mapping(item, &path)?;
                if doc.opt_str(item_map, "kind", &path)? == Some("List") {
                    return Err(doc.err(&Path::Key(&path, "kind"), "a List cannot contain a List"));
                }
                self.object(&doc, item_map, &path)?;
            }
            return Ok(());
        }
        self.object(&doc, map, &root)
    }

    fn object(&mut self, doc: &Doc, map: &Mapping, path: &Path<'_>) -> Result<()> {
        let kind = doc.req_str(map, "kind", path)?;
        let api_version = doc.req_str(map, "apiVersion", path)?;
        let scope = match kind {
            "Role" | "RoleBinding" => Scope::Namespaced,
            "ClusterRole" | "ClusterRoleBinding" => Scope::Cluster,
            other => {
                return Err(doc.err(
                    &Path::Key(path, "kind"),
                    format!(
                        "unknown kind {other:?} (expected Role, ClusterRole, RoleBinding, \
                         ClusterRoleBinding or List)"
                    ),
                ));
            }
        };
        if api_version != RBAC_API_VERSION {
            return Err(doc.err(
                &Path::Key(path, "apiVersion"),
                format!("unknown apiVersion {api_version:?} for kind {kind} (expected {RBAC_API_VERSION:?})"),
            ));
        }
        let metadata = self.metadata(doc, map, path, scope)?;
        let key_kind: &'static str = match kind {
            "Role" => "Role",
            "ClusterRole" => "ClusterRole",
            "RoleBinding" => "RoleBinding",
            _ => "ClusterRoleBinding",
        };
        let key = (
            key_kind,
            metadata.namespace.clone().unwrap_or_default(),
            metadata.name.clone(),
        );
        if let Some(first) = self.seen.get(&key) {
            return Err(doc.err(
                &Path::Key(&Path::Key(path, "metadata"), "name"),
                format!(
                    "duplicate {kind} {:?} (first defined in document {first})",
                    qualified(&metadata)
                ),
            ));
        }
        self.seen.insert(key, doc.index);

        match kind {
            "Role" => {
                doc.known_keys(map, &["apiVersion", "kind", "metadata", "rules"], path)?;
                let rules = self.rules(doc, map, path, Scope::Namespaced)?;
                self.policy.roles.push(Role { metadata, rules });
            }
            "ClusterRole" => {
                doc.known_keys(
                    map,
                    &["apiVersion", "kind", "metadata", "rules", "aggregationRule"],
                    path,
                )?;
                let rules = self.rules(doc, map, path, Scope::Cluster)?;
                let aggregation_rule = self.aggregation_rule(doc, map, path)?;
                self.policy.cluster_roles.push(ClusterRole {
                    metadata,
                    rules,
                    aggregation_rule,
                });
            }
            "RoleBinding" => {
                doc.known_keys(
                    map,
                    &["apiVersion", "kind", "metadata", "subjects", "roleRef"],
                    path,
                )?;
                let subjects = self.subjects(doc, map, path, Scope::Namespaced)?;
                let role_ref = self.role_ref(doc, map, path, Scope::Namespaced)?;
                self.policy.role_bindings.push(RoleBinding {
                    metadata,
                    subjects,
                    role_ref,
                });
            }
            _ => {
                doc.known_keys(
                    map,
                    &["apiVersion", "kind", "metadata", "subjects", "roleRef"],
                    path,
                )?;
                let subjects = self.subjects(doc, map, path, Scope::Cluster)?;
                let role_ref = self.role_ref(doc, map, path, Scope::Cluster)?;
                self.policy.cluster_role_bindings.push(ClusterRoleBinding {
                    metadata,
                    subjects,
                    role_ref,
                });
            }
        }
        Ok(())
    }

    fn metadata(
        &self,
        doc: &Doc,
        map: &Mapping,
        path: &Path<'_>,
        scope: Scope,
    ) -> Result<ObjectMeta> {
        let here = Path::Key(path, "metadata");
        let meta = match map.get("metadata") {
            Some(value) => doc.mapping(value, &here)?,
            None => return Err(doc.err(&here, "required")),
        };
        // Other metadata (uid, resourceVersion, managedFields, …) is what
        // `kubectl get -o yaml` adds; it cannot change a decision.
        let name = doc.req_str(meta, "name", &here)?.to_owned();
        let namespace = doc.opt_str(meta, "namespace", &here)?.map(str::to_owned);
        match (scope, &namespace) {
            (Scope::Namespaced, None) => {
                return Err(doc.err(
                    &Path::Key(&here, "namespace"),
                    "required for a namespaced kind",
                ));
            }
            (Scope::Namespaced, Some(ns)) => {
                TenantNamespace::parse(ns)
                    .map_err(|e| doc.err(&Path::Key(&here, "namespace"), format!("{ns:?}: {e}")))?;
            }
            (Scope::Cluster, Some(ns)) if !ns.is_empty() => {
                // Security: a namespace on a cluster-scoped object usually
                // means the author expected a namespaced grant; refusing it
                // keeps a cluster-wide grant from slipping in unnoticed.
                return Err(doc.err(
                    &Path::Key(&here, "namespace"),
                    "cluster-scoped kinds have no namespace",
                ));
            }
            (Scope::Cluster, _) => {}
        }
        Ok(ObjectMeta {
            name,
            namespace: namespace.filter(|ns| !ns.is_empty()),
            labels: doc.str_map(meta, "labels", &here)?,
            annotations: doc.str_map(meta, "annotations", &here)?,
        })
    }

    /// `ValidatePolicyRule` of the Kubernetes API server.
    fn rules(
        &self,
        doc: &Doc,
        map: &Mapping,
        path: &Path<'_>,
        scope: Scope,
    ) -> Result<Vec<PolicyRule>> {
        let here = Path::Key(path, "rules");
        let mut rules = Vec::new();
        for (i, value) in doc.seq(map, "rules", path)?.iter().enumerate() {
            let rp = Path::Index(&here, i);
            let m = doc.mapping(value, &rp)?;
            doc.known_keys(
                m,
                &[
                    "verbs",
                    "apiGroups",
                    "resources",
                    "resourceNames",
                    "nonResourceURLs",
                ],
                &rp,
            )?;
            let rule = PolicyRule {
                verbs: doc.str_list(m, "verbs", &rp)?,
                api_groups: doc.str_list(m, "apiGroups", &rp)?,
                resources: doc.str_list(m, "resources", &rp)?,
                resource_names: doc.str_list(m, "resourceNames", &rp)?,
                non_resource_urls: doc.str_list(m, "nonResourceURLs", &rp)?,
            };
            if rule.verbs.is_empty() {
                return Err(doc.err(
                    &Path::Key(&rp, "verbs"),
                    "verbs must contain at least one value",
                ));
            }
            if !rule.non_resource_urls.is_empty() {
                let at = Path::Key(&rp, "nonResourceURLs");
                if scope == Scope::Namespaced {
                    return Err(doc.err(&at, "namespaced rules cannot apply to non-resource URLs"));
                }
                if !rule.api_groups.is_empty()
                    || !rule.resources.is_empty()
                    || !rule.resource_names.is_empty()
                {
                    return Err(doc.err(
                        &at,
                        "rules cannot apply to both regular resources and non-resource URLs",
                    ));
                }
            } else {
                if rule.api_groups.is_empty() {
                    return Err(doc.err(
                        &Path::Key(&rp, "apiGroups"),
                        "resource rules must supply at least one api group",
                    ));
                }
                if rule.resources.is_empty() {
                    return Err(doc.err(
                        &Path::Key(&rp, "resources"),
                        "resource rules must supply at least one resource",
                    ));
                }
            }
            rules.push(rule);
        }
        Ok(rules)
    }

    /// `aggregationRule`, validated as the API server does: at least one
    /// selector; `In`/`NotIn` with values, `Exists`/`DoesNotExist` without.
    fn aggregation_rule(
        &self,
        doc: &Doc,
        map: &Mapping,
        path: &Path<'_>,
    ) -> Result<Option<AggregationRule>> {
        let here = Path::Key(path, "aggregationRule");
        let rule = match map.get("aggregationRule") {
            None | Some(Value::Null) => return Ok(None),
            Some(value) => doc.mapping(value, &here)?,
        };
        doc.known_keys(rule, &["clusterRoleSelectors"], &here)?;
        let sel_path = Path::Key(&here, "clusterRoleSelectors");
        let mut selectors = Vec::new();
        for (i, value) in doc
            .seq(rule, "clusterRoleSelectors", &here)?
            .iter()
            .enumerate()
        {
            let sp = Path::Index(&sel_path, i);
            let m = doc.mapping(value, &sp)?;
            doc.known_keys(m, &["matchLabels", "matchExpressions"], &sp)?;
            let mut selector = LabelSelector {
                match_labels: doc.str_map(m, "matchLabels", &sp)?,
                match_expressions: Vec::new(),
            };
            let ep = Path::Key(&sp, "matchExpressions");
            for (j, value) in doc.seq(m, "matchExpressions", &sp)?.iter().enumerate() {
                let rp = Path::Index(&ep, j);
                let e = doc.mapping(value, &rp)?;
                doc.known_keys(e, &["key", "operator", "values"], &rp)?;
                let key = doc.req_str(e, "key", &rp)?;
                let operator = match doc.req_str(e, "operator", &rp)? {
                    "In" => SelectorOperator::In,
                    "NotIn" => SelectorOperator::NotIn,
                    "Exists" => SelectorOperator::Exists,
                    "DoesNotExist" => SelectorOperator::DoesNotExist,
                    other => {
                        return Err(doc.err(
                            &Path::Key(&rp, "operator"),
                            format!("{other:?}: expected In, NotIn, Exists or DoesNotExist"),
                        ));
                    }
                };
                let values = doc.str_list(e, "values", &rp)?;
                let needs_values =
                    matches!(operator, SelectorOperator::In | SelectorOperator::NotIn);
                if needs_values == values.is_empty() {
                    return Err(doc.err(
                        &Path::Key(&rp, "values"),
                        if needs_values {
                            "must be specified when operator is In or NotIn"
                        } else {
                            "may not be specified when operator is Exists or DoesNotExist"
                        },
                    ));
                }
                selector
                    .match_expressions
                    .push(LabelSelectorRequirement::new(key, operator, values));
            }
            if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
                // Valid in Kubernetes, and it means every ClusterRole,
                // cluster-admin's `*` included: say so where operators look.
                tracing::warn!(
                    document = doc.index,
                    field = %sp.render(),
                    "an empty clusterRoleSelector aggregates every ClusterRole"
                );
            }
            selectors.push(selector);
        }
        if selectors.is_empty() {
            return Err(doc.err(
                &sel_path,
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        Ok(Some(AggregationRule {
            cluster_role_selectors: selectors,
        }))
    }

    /// `ValidateRoleBindingSubject`, after v1 defaulting of `apiGroup`.
    fn subjects(
        &self,
        doc: &Doc,
        map: &Mapping,
        path: &Path<'_>,
        scope: Scope,
    ) -> Result<Vec<Subject>> {
        let here = Path::Key(path, "subjects");
        let mut subjects = Vec::new();
        for (i, value) in doc.seq(map, "subjects", path)?.iter().enumerate() {
            let sp = Path::Index(&here, i);
            let m = doc.mapping(value, &sp)?;
            doc.known_keys(m, &["kind", "apiGroup", "name", "namespace"], &sp)?;
            let kind = match doc.req_str(m, "kind", &sp)? {
                "User" => SubjectKind::User,
                "Group" => SubjectKind::Group,
                "ServiceAccount" => SubjectKind::ServiceAccount,
                other => {
                    return Err(doc.err(
                        &Path::Key(&sp, "kind"),
                        format!("unknown subject kind {other:?} (expected User, Group or ServiceAccount)"),
                    ));
                }
            };
            let name = doc.req_str(m, "name", &sp)?.to_owned();
            let api_group = doc.opt_str(m, "apiGroup", &sp)?.unwrap_or_default();
            let namespace = doc
                .opt_str(m, "namespace", &sp)?
                .filter(|ns| !ns.is_empty())
                .map(str::to_owned);
            match kind {
                SubjectKind::User | SubjectKind::Group => {
                    if !api_group.is_empty() && api_group != RBAC_API_GROUP {
                        return Err(doc.err(
                            &Path::Key(&sp, "apiGroup"),
                            format!("{api_group:?} is not supported (expected {RBAC_API_GROUP:?})"),
                        ));
                    }
                }
                SubjectKind::ServiceAccount => {
                    if !api_group.is_empty() {
                        return Err(doc.err(
                            &Path::Key(&sp, "apiGroup"),
                            format!("{api_group:?} is not supported (expected \"\")"),
                        ));
                    }
                    if name.contains(':') || name.contains('/') {
                        return Err(doc.err(
                            &Path::Key(&sp, "name"),
                            format!("{name:?} is not a valid service account name"),
                        ));
                    }
                    match &namespace {
                        None if scope == Scope::Cluster => {
                            return Err(doc.err(
                                &Path::Key(&sp, "namespace"),
                                "required for a ServiceAccount in a ClusterRoleBinding",
                            ));
                        }
                        Some(ns) => {
                            TenantNamespace::parse(ns).map_err(|e| {
                                doc.err(&Path::Key(&sp, "namespace"), format!("{ns:?}: {e}"))
                            })?;
                        }
                        None => {}
                    }
                }
            }
            subjects.push(Subject {
                kind,
                name,
                namespace,
            });
        }
        Ok(subjects)
    }

    fn role_ref(&self, doc: &Doc, map: &Mapping, path: &Path<'_>, scope: Scope) -> Result<RoleRef> {
        let here = Path::Key(path, "roleRef");
        let m = match map.get("roleRef") {
            Some(value) => doc.mapping(value, &here)?,
            None => return Err(doc.err(&here, "required")),
        };
        doc.known_keys(m, &["apiGroup", "kind", "name"], &here)?;
        let api_group = doc.opt_str(m, "apiGroup", &here)?.unwrap_or_default();
        if !api_group.is_empty() && api_group != RBAC_API_GROUP {
            return Err(doc.err(
                &Path::Key(&here, "apiGroup"),
                format!("{api_group:?} is not supported (expected {RBAC_API_GROUP:?})"),
            ));
        }
        let kind = match (doc.req_str(m, "kind", &here)?, scope) {
            ("Role", Scope::Namespaced) => RoleRefKind::Role,
            ("ClusterRole", _) => RoleRefKind::ClusterRole,
            ("Role", Scope::Cluster) => {
                return Err(doc.err(
                    &Path::Key(&here, "kind"),
                    "a ClusterRoleBinding can only refer to a ClusterRole",
                ));
            }
            (other, _) => {
                return Err(doc.err(
                    &Path::Key(&here, "kind"),
                    format!("unknown roleRef kind {other:?} (expected Role or ClusterRole)"),
                ));
            }
        };
        let name = doc.req_str(m, "name", &here)?.to_owned();
        Ok(RoleRef { kind, name })
    }
}

fn qualified(meta: &ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name),
        None => meta.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> PolicyError {
        Policy::from_yaml(yaml).unwrap_err()
    }

    const ROLE: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  namespace: default
  name: pod-reader
rules:
- apiGroups: [\"\"]
  resources: [\"pods\"]
  verbs: [\"get\", \"watch\", \"list\"]
";

    #[test]
    fn loads_multi_document_files_and_skips_empty_documents() {
        let yaml = format!(
            "---\n{ROLE}---\napiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: read-secrets-global
subjects:
- kind: Group
  name: manager
  apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: ClusterRole
  name: secret-reader
  apiGroup: rbac.authorization.k8s.io
---\n"
        );
        let p = Policy::from_yaml(&yaml).unwrap();
        assert_eq!(p.roles.len(), 1);
        assert_eq!(p.roles[0].rules[0].verbs, ["get", "watch", "list"]);
        assert_eq!(p.roles[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(p.cluster_role_bindings.len(), 1);
        assert_eq!(
            p.cluster_role_bindings[0].subjects[0],
            Subject::group("manager")
        );
    }

    #[test]
    fn loads_kind_list_as_kubectl_writes_it() {
        let yaml = "apiVersion: v1
kind: List
metadata:
  resourceVersion: \"\"
items:
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRole
  metadata:
    name: secret-reader
    uid: 6f1c
    resourceVersion: \"42\"
    labels: {team: payments}
  rules:
  - apiGroups: [\"\"]
    resources: [\"secrets\"]
    verbs: [\"get\"]
";
        let p = Policy::from_yaml(yaml).unwrap();
        assert_eq!(p.cluster_roles.len(), 1);
        assert_eq!(p.cluster_roles[0].metadata.labels["team"], "payments");
    }

    #[test]
    fn json_manifests_load() {
        let json = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"r"},"rules":[{"nonResourceURLs":["/healthz/*"],"verbs":["get"]}]}"#;
        let p = Policy::from_yaml(json).unwrap();
        assert_eq!(
            p.cluster_roles[0].rules[0].non_resource_urls,
            ["/healthz/*"]
        );
    }

    #[test]
    fn errors_name_the_document_and_field() {
        let second = ROLE
            .replace("verbs: [\"get\", \"watch\", \"list\"]", "verbs: get")
            .replace("pod-reader", "pod-writer");
        let yaml = format!("{ROLE}---\n{second}");
        let e = err(&yaml);
        assert_eq!(e.document(), 1);
        assert_eq!(e.field(), "rules[0].verbs");
        assert!(
            e.to_string()
                .starts_with("document 1: rules[0].verbs: expected a list"),
            "{e}"
        );

        let e = err(&ROLE.replace("verbs: [\"get\", \"watch\", \"list\"]", "verbs: [get, 3]"));
        assert_eq!(e.field(), "rules[0].verbs[1]");

        let e = err(&ROLE.replace("  resources:", "  resource:"));
        assert_eq!(e.field(), "rules[0].resource");
        assert!(e.message().contains("unknown field"), "{e}");

        let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: rbac.authorization.k8s.io/v1\n  kind: RoleBinding\n  metadata: {name: b, namespace: ns}\n  subjects: [{kind: Robot, name: r2}]\n  roleRef: {kind: Role, name: x}\n";
        let e = err(list);
        assert_eq!((e.document(), e.field()), (0, "items[0].subjects[0].kind"));
    }

    #[test]
    fn unknown_kinds_and_api_versions_are_errors() {
        let e = err(&ROLE.replace("kind: Role", "kind: Rol"));
        assert_eq!(e.field(), "kind");
        let e = err(&ROLE.replace(
            "rbac.authorization.k8s.io/v1",
            "rbac.authorization.k8s.io/v1beta1",
        ));
        assert_eq!(e.field(), "apiVersion");
        let e = err("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
        assert_eq!(e.field(), "kind");
        let e = err("apiVersion: v2\nkind: List\nitems: []\n");
        assert_eq!(e.field(), "apiVersion");
        let e = err("just a string\n");
        assert_eq!(e.field(), "");
        let e = err("kind: [Role\n");
        assert!(e.message().starts_with("invalid YAML"), "{e}");
    }

    #[test]
    fn kubernetes_validation_is_enforced() {
        let cases: &[(&str, &str)] = &[
            (
                &ROLE.replace("  namespace: default\n", ""),
                "metadata.namespace",
            ),
            (
                &ROLE.replace("  namespace: default\n", "  namespace: Default\n"),
                "metadata.namespace",
            ),
            (
                &ROLE.replace("  verbs: [\"get\", \"watch\", \"list\"]\n", ""),
                "rules[0].verbs",
            ),
            (
                &ROLE.replace("- apiGroups: [\"\"]\n  resources", "- resources"),
                "rules[0].apiGroups",
            ),
            (
                &ROLE.replace(
                    "  resources: [\"pods\"]",
                    "  resources: [\"pods\"]\n  nonResourceURLs: [\"/x\"]",
                ),
                "rules[0].nonResourceURLs",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x, namespace: a}\n",
                "metadata.namespace",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\naggregationRule: {}\n",
                "aggregationRule.clusterRoleSelectors",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\naggregationRule: {clusterRoleSelectors: [{matchExpressions: [{key: k, operator: Among, values: [a]}]}]}\n",
                "aggregationRule.clusterRoleSelectors[0].matchExpressions[0].operator",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\naggregationRule: {clusterRoleSelectors: [{matchExpressions: [{key: k, operator: In}]}]}\n",
                "aggregationRule.clusterRoleSelectors[0].matchExpressions[0].values",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\naggregationRule: {clusterRoleSelectors: [{matchExpressions: [{key: k, operator: Exists, values: [a]}]}]}\n",
                "aggregationRule.clusterRoleSelectors[0].matchExpressions[0].values",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\naggregationRule: {clusterRoleSelectors: [{matchLabel: {a: b}}]}\n",
                "aggregationRule.clusterRoleSelectors[0].matchLabel",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: x}\nroleRef: {kind: Role, name: r}\n",
                "roleRef.kind",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: x}\nsubjects: [{kind: ServiceAccount, name: sa}]\nroleRef: {kind: ClusterRole, name: r}\n",
                "subjects[0].namespace",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: x}\nsubjects: [{kind: User, name: u, apiGroup: example.com}]\nroleRef: {kind: ClusterRole, name: r}\n",
                "subjects[0].apiGroup",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: x}\nsubjects: [{kind: User, name: u}]\n",
                "roleRef",
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: \"\"}\nroleRef: {kind: ClusterRole, name: r}\n",
                "metadata.name",
            ),
            (&format!("{ROLE}---\n{ROLE}"), "metadata.name"),
        ];
        for (yaml, field) in cases {
            let e = err(yaml);
            assert_eq!(e.field(), *field, "{e}\n{yaml}");
        }
        // In a RoleBinding a ServiceAccount namespace defaults to the binding's.
        let ok = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: x, namespace: a}\nsubjects: [{kind: ServiceAccount, name: sa}]\nroleRef: {kind: ClusterRole, name: r}\n";
        assert_eq!(
            Policy::from_yaml(ok).unwrap().role_bindings[0].subjects[0].namespace,
            None
        );
    }

    #[test]
    fn oversized_and_non_utf8_input_is_refused() {
        let big = vec![b'#'; MAX_MANIFEST_BYTES + 1];
        assert!(
            Policy::from_yaml_bytes(&big)
                .unwrap_err()
                .message()
                .contains("limit")
        );
        assert!(
            Policy::from_yaml_bytes(&[0xff, 0xfe])
                .unwrap_err()
                .message()
                .contains("UTF-8")
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut yaml =
            String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        let mut prev = 'a';
        for name in 'b'..='k' {
            yaml.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = name;
        }
        assert!(Policy::from_yaml(&yaml).is_err());
    }

    #[test]
    fn deeply_nested_input_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(Policy::from_yaml(&deep).is_err());
    }
}
