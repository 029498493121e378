//! The manifests as written: the `rbac.authorization.k8s.io/v1` objects'
//! fields, read by serde. Every field a decision depends on is here;
//! anything else is an unknown field, refused (`metadata` excepted).
//!
//! Values are only typed here; what Kubernetes requires of them (required
//! fields, known kinds, rule shapes) is checked by `validate.rs`, which
//! builds the [model](super::model). `kind` and `apiVersion` are read
//! before, to choose the type.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;

/// `null` reads as the empty value, as Kubernetes reads it.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `kind` and `apiVersion`, read first to choose the type of the rest.
#[derive(Deserialize)]
#[serde(expecting = "a mapping")]
pub(super) struct Header {
    pub(super) kind: Option<String>,
    #[serde(rename = "apiVersion")]
    pub(super) api_version: Option<String>,
}

/// `kind: List` (`apiVersion: v1`), as `kubectl get -o yaml` writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct List {
    /// Written by kubectl (`resourceVersion: ""`); nothing to read.
    #[serde(rename = "metadata")]
    _metadata: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) items: Vec<Value>,
}

/// The parts of `metadata` RBAC reads. The rest (uid, resourceVersion,
/// managedFields, …) is what `kubectl get -o yaml` adds; it cannot change a
/// decision, so it is skipped rather than refused.
#[derive(Deserialize)]
#[serde(expecting = "a mapping")]
pub(super) struct Metadata {
    pub(super) name: Option<String>,
    pub(super) namespace: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) annotations: BTreeMap<String, String>,
}

/// `Role` (an `aggregationRule` here is an unknown field).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct Role {
    pub(super) metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) rules: Vec<Rule>,
}

/// `ClusterRole`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct ClusterRole {
    pub(super) metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) rules: Vec<Rule>,
    #[serde(rename = "aggregationRule")]
    pub(super) aggregation_rule: Option<AggregationRule>,
}

/// `RoleBinding` and `ClusterRoleBinding`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct Binding {
    pub(super) metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) subjects: Vec<Subject>,
    #[serde(rename = "roleRef")]
    pub(super) role_ref: Option<RoleRef>,
}

/// One entry of `rules`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct Rule {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) verbs: Vec<String>,
    #[serde(rename = "apiGroups", default, deserialize_with = "nullable")]
    pub(super) api_groups: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) resources: Vec<String>,
    #[serde(rename = "resourceNames", default, deserialize_with = "nullable")]
    pub(super) resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs", default, deserialize_with = "nullable")]
    pub(super) non_resource_urls: Vec<String>,
}

/// `aggregationRule`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct AggregationRule {
    #[serde(
        rename = "clusterRoleSelectors",
        default,
        deserialize_with = "nullable"
    )]
    pub(super) cluster_role_selectors: Vec<LabelSelector>,
}

/// A label selector.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct LabelSelector {
    #[serde(rename = "matchLabels", default, deserialize_with = "nullable")]
    pub(super) match_labels: BTreeMap<String, String>,
    #[serde(rename = "matchExpressions", default, deserialize_with = "nullable")]
    pub(super) match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct Requirement {
    pub(super) key: Option<String>,
    pub(super) operator: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub(super) values: Vec<String>,
}

/// One entry of `subjects`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct Subject {
    pub(super) kind: Option<String>,
    #[serde(rename = "apiGroup")]
    pub(super) api_group: Option<String>,
    pub(super) name: Option<String>,
    pub(super) namespace: Option<String>,
}

/// `roleRef`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RoleRef {
    #[serde(rename = "apiGroup")]
    pub(super) api_group: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) name: Option<String>,
}
