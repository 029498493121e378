//! Loading Kubernetes RBAC manifests: multi-document YAML (or JSON),
//! `kind: List`, strict about everything that could change a decision.
//!
//! Two passes per document: serde reads it into the
//! [manifest types](super::manifest), refusing unknown fields and values of
//! the wrong type with the path of the field; then [`validate`](super::validate)
//! checks what the Kubernetes API server checks and builds the model.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;

use super::manifest;
use super::model::{ClusterRole, ClusterRoleBinding, Policy, RBAC_API_VERSION, Role, RoleBinding};
use super::validate::{self, Scope};
use crate::config::tagged_at;

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
    /// of them, as `kubectl get -o yaml` writes it. The input is text or
    /// bytes (which must be UTF-8), at most [`MAX_MANIFEST_BYTES`].
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
    pub fn from_yaml(yaml: impl AsRef<[u8]>) -> Result<Policy, PolicyError> {
        load(yaml.as_ref())
    }
}

fn load(yaml: &[u8]) -> Result<Policy, PolicyError> {
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
    let yaml = std::str::from_utf8(yaml)
        .map_err(|e| PolicyError::new(0, "", format!("manifest is not UTF-8: {e}")))?;
    let mut loader = Loader::default();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        // A syntax error ends the stream: the deserializer would repeat
        // it forever.
        let value = Value::deserialize(document)
            .map_err(|e| PolicyError::new(index, "", format!("invalid YAML: {e}")))?;
        // Security: serde reads through a YAML tag (`verbs: !x [get]`) as
        // if it were not there; a manifest that says more than it means
        // is refused, as the apiserver would.
        if let Some(path) = tagged_at(&value) {
            return Err(PolicyError::new(
                index,
                path,
                "expected a plain value, found a tagged value",
            ));
        }
        loader.document(index, value)?;
    }
    Ok(loader.policy)
}

/// Where in the manifest errors point: a document, and within a `List`
/// one of its items. The path is rendered only when an error is reported.
pub(super) struct Doc {
    index: usize,
    item: Option<usize>,
}

impl Doc {
    pub(super) fn index(&self) -> usize {
        self.index
    }

    /// `field` (relative to the object) as a path from the document root.
    pub(super) fn path(&self, field: impl fmt::Display) -> String {
        match self.item {
            None => field.to_string(),
            Some(i) => {
                let field = field.to_string();
                if field.is_empty() {
                    format!("items[{i}]")
                } else {
                    format!("items[{i}].{field}")
                }
            }
        }
    }

    pub(super) fn err(&self, field: impl fmt::Display, message: impl Into<String>) -> PolicyError {
        PolicyError::new(self.index, self.path(field), message)
    }

    /// Reads `value` (a [`Value`] or a `&Value`) as `T` with serde,
    /// pointing any error at its field.
    fn read<'de, T, D>(&self, value: D) -> Result<T, PolicyError>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de, Error = serde_yaml_ng::Error>,
    {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let mut field = String::new();
            for segment in e.path().iter() {
                use serde_path_to_error::Segment;
                match segment {
                    Segment::Seq { index } => field.push_str(&format!("[{index}]")),
                    Segment::Map { key } | Segment::Enum { variant: key } => {
                        if !field.is_empty() {
                            field.push('.');
                        }
                        field.push_str(key);
                    }
                    Segment::Unknown => field.push_str(if field.is_empty() { "?" } else { ".?" }),
                }
            }
            self.err(field, e.into_inner().to_string())
        })
    }

    /// `kind` and `apiVersion`, taken out of `value` so that the rest reads
    /// as its kind's type.
    fn header(&self, value: &mut Value) -> Result<(String, String), PolicyError> {
        let header: manifest::Header = self.read(&*value)?;
        let kind = header.kind.filter(|k| !k.is_empty());
        let kind = kind.ok_or_else(|| self.err("kind", "required"))?;
        let api_version = header.api_version.filter(|v| !v.is_empty());
        let api_version = api_version.ok_or_else(|| self.err("apiVersion", "required"))?;
        if let Value::Mapping(map) = value {
            map.remove("kind");
            map.remove("apiVersion");
        }
        Ok((kind, api_version))
    }
}

/// The kinds of object a policy holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

impl Kind {
    fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "Role" => Self::Role,
            "ClusterRole" => Self::ClusterRole,
            "RoleBinding" => Self::RoleBinding,
            "ClusterRoleBinding" => Self::ClusterRoleBinding,
            _ => return None,
        })
    }

    fn scope(self) -> Scope {
        match self {
            Self::Role | Self::RoleBinding => Scope::Namespaced,
            Self::ClusterRole | Self::ClusterRoleBinding => Scope::Cluster,
        }
    }
}

#[derive(Default)]
struct Loader {
    policy: Policy,
    /// (kind, namespace, name) → document index, to refuse duplicates.
    seen: HashMap<(Kind, String, String), usize>,
}

impl Loader {
    fn document(&mut self, index: usize, mut value: Value) -> Result<(), PolicyError> {
        if value.is_null() {
            return Ok(()); // an empty document, e.g. a leading or trailing `---`
        }
        let doc = Doc { index, item: None };
        let (kind, api_version) = doc.header(&mut value)?;
        if kind != "List" {
            return self.object(&doc, &kind, &api_version, value);
        }
        if api_version != "v1" {
            return Err(doc.err(
                "apiVersion",
                format!("unknown apiVersion {api_version:?} for kind List (expected \"v1\")"),
            ));
        }
        let list: manifest::List = doc.read(value)?;
        for (i, mut item) in list.items.into_iter().enumerate() {
            let doc = Doc {
                index,
                item: Some(i),
            };
            let (kind, api_version) = doc.header(&mut item)?;
            if kind == "List" {
                return Err(doc.err("kind", "a List cannot contain a List"));
            }
            self.object(&doc, &kind, &api_version, item)?;
        }
        Ok(())
    }

    fn object(
        &mut self,
        doc: &Doc,
        kind: &str,
        api_version: &str,
        value: Value,
    ) -> Result<(), PolicyError> {
        let Some(kind) = Kind::parse(kind) else {
            return Err(doc.err(
                "kind",
                format!(
                    "unknown kind {kind:?} (expected Role, ClusterRole, RoleBinding, \
                     ClusterRoleBinding or List)"
                ),
            ));
        };
        if api_version != RBAC_API_VERSION {
            return Err(doc.err(
                "apiVersion",
                format!(
                    "unknown apiVersion {api_version:?} for kind {kind:?} \
                     (expected {RBAC_API_VERSION:?})"
                ),
            ));
        }
        let scope = kind.scope();
        match kind {
            Kind::Role => {
                let role: manifest::Role = doc.read(value)?;
                let metadata = self.metadata(doc, kind, role.metadata)?;
                let rules = validate::rules(doc, role.rules, scope)?;
                self.policy.roles.push(Role { metadata, rules });
            }
            Kind::ClusterRole => {
                let role: manifest::ClusterRole = doc.read(value)?;
                let metadata = self.metadata(doc, kind, role.metadata)?;
                let rules = validate::rules(doc, role.rules, scope)?;
                let aggregation_rule = validate::aggregation_rule(doc, role.aggregation_rule)?;
                self.policy.cluster_roles.push(ClusterRole {
                    metadata,
                    rules,
                    aggregation_rule,
                });
            }
            Kind::RoleBinding | Kind::ClusterRoleBinding => {
                let binding: manifest::Binding = doc.read(value)?;
                let metadata = self.metadata(doc, kind, binding.metadata)?;
                let subjects = validate::subjects(doc, binding.subjects, scope)?;
                let role_ref = validate::role_ref(doc, binding.role_ref, scope)?;
                if kind == Kind::RoleBinding {
                    self.policy.role_bindings.push(RoleBinding {
                        metadata,
                        subjects,
                        role_ref,
                    });
                } else {
                    self.policy.cluster_role_bindings.push(ClusterRoleBinding {
                        metadata,
                        subjects,
                        role_ref,
                    });
                }
            }
        }
        Ok(())
    }

    /// Validates `metadata` and refuses a second object of the same kind,
    /// namespace and name.
    fn metadata(
        &mut self,
        doc: &Doc,
        kind: Kind,
        metadata: Option<manifest::Metadata>,
    ) -> Result<super::model::ObjectMeta, PolicyError> {
        let metadata = validate::metadata(doc, metadata, kind.scope())?;
        let namespace = metadata.namespace.clone().unwrap_or_default();
        let key = (kind, namespace, metadata.name.clone());
        if let Some(first) = self.seen.get(&key) {
            let qualified = match &metadata.namespace {
                Some(ns) => format!("{ns}/{}", metadata.name),
                None => metadata.name.clone(),
            };
            return Err(doc.err(
                "metadata.name",
                format!("duplicate {kind:?} {qualified:?} (first defined in document {first})"),
            ));
        }
        self.seen.insert(key, doc.index);
        Ok(metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::Subject;

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
    fn a_yaml_tag_anywhere_is_refused_with_its_path() {
        let tagged = ROLE.replace("verbs: [", "verbs: !x [");
        let e = err(&tagged);
        assert_eq!(e.field(), "rules[0].verbs", "{e}");
        assert!(e.to_string().contains("tagged value"), "{e}");
        let tagged = ROLE.replace("- apiGroups", "- !m\n  apiGroups");
        assert_eq!(err(&tagged).field(), "rules[0]");
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}",
            ROLE.replace('\n', "\n  ")
                .replace("name: pod-reader", "name: !t pod-reader")
        );
        assert_eq!(err(&list).field(), "items[0].metadata.name");
    }

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
        assert_eq!(
            e.to_string(),
            "document 1: rules[0].verbs: invalid type: string \"get\", expected a sequence"
        );

        let e = err(&ROLE.replace("verbs: [\"get\", \"watch\", \"list\"]", "verbs: [get, 3]"));
        assert_eq!(e.field(), "rules[0].verbs[1]");
        assert_eq!(e.message(), "invalid type: integer `3`, expected a string");

        let e = err(&ROLE.replace("  resources:", "  resource:"));
        assert_eq!(e.field(), "rules[0].resource");
        assert!(
            e.message()
                .starts_with("unknown field `resource`, expected one of `verbs`"),
            "{e}"
        );

        let e = err(&ROLE.replace(
            "  name: pod-reader",
            "  name: pod-reader\n  labels: {a: [b]}",
        ));
        assert_eq!(e.field(), "metadata.labels.a");
        // Other metadata is what kubectl adds; it cannot change a decision.
        Policy::from_yaml(ROLE.replace("  name: pod-reader", "  name: pod-reader\n  uid: 6f1c"))
            .unwrap();
        // null reads as empty, as in Kubernetes.
        let p =
            Policy::from_yaml(ROLE.replace("  resources:", "  resourceNames: null\n  resources:"))
                .unwrap();
        assert!(p.roles[0].rules[0].resource_names.is_empty());

        let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: rbac.authorization.k8s.io/v1\n  kind: RoleBinding\n  metadata: {name: b, namespace: ns}\n  subjects: [{kind: Robot, name: r2}]\n  roleRef: {kind: Role, name: x}\n";
        let e = err(list);
        assert_eq!((e.document(), e.field()), (0, "items[0].subjects[0].kind"));
        let e = err(&list.replace("kind: Robot", "kind: User, nickname: r"));
        assert_eq!(e.field(), "items[0].subjects[0].nickname");
        let e = err("apiVersion: v1\nkind: List\nitems: [7]\n");
        assert_eq!(e.field(), "items[0]");
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
            Policy::from_yaml(&big)
                .unwrap_err()
                .message()
                .contains("limit")
        );
        assert!(
            Policy::from_yaml([0xff, 0xfe])
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
