//! The second pass of loading: what the Kubernetes API server checks
//! (`ValidatePolicyRule`, `ValidateRoleBindingSubject`, label selector and
//! object-meta validation), turning the [manifests](super::manifest) serde
//! read into the [model](super::model).

use std::fmt;

use super::load::{Doc, PolicyError};
use super::manifest;
use super::model::{
    AggregationRule, LabelSelector, LabelSelectorRequirement, ObjectMeta, PolicyRule,
    RBAC_API_GROUP, RoleRef, RoleRefKind, SelectorOperator, Subject, SubjectKind,
};
use crate::tenant::TenantNamespace;

type Result<T> = std::result::Result<T, PolicyError>;

/// Whether an object kind lives in a namespace.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Namespaced,
    Cluster,
}

/// A required string: absent, `null` and `""` are all missing.
fn required(doc: &Doc, field: impl fmt::Display, value: Option<String>) -> Result<String> {
    match value {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(doc.err(field, "required")),
    }
}

/// `metadata`: a name, and a namespace exactly when the kind is namespaced.
pub(super) fn metadata(
    doc: &Doc,
    meta: Option<manifest::Metadata>,
    scope: Scope,
) -> Result<ObjectMeta> {
    let meta = meta.ok_or_else(|| doc.err("metadata", "required"))?;
    let name = required(doc, "metadata.name", meta.name)?;
    let at = "metadata.namespace";
    match (scope, &meta.namespace) {
        (Scope::Namespaced, None) => {
            return Err(doc.err(at, "required for a namespaced kind"));
        }
        (Scope::Namespaced, Some(ns)) => {
            TenantNamespace::parse(ns).map_err(|e| doc.err(at, format!("{ns:?}: {e}")))?;
        }
        (Scope::Cluster, Some(ns)) if !ns.is_empty() => {
            // Security: a namespace on a cluster-scoped object usually
            // means the author expected a namespaced grant; refusing it
            // keeps a cluster-wide grant from slipping in unnoticed.
            return Err(doc.err(at, "cluster-scoped kinds have no namespace"));
        }
        (Scope::Cluster, _) => {}
    }
    Ok(ObjectMeta {
        name,
        namespace: meta.namespace.filter(|ns| !ns.is_empty()),
        labels: meta.labels,
        annotations: meta.annotations,
    })
}

/// `ValidatePolicyRule` of the Kubernetes API server.
pub(super) fn rules(
    doc: &Doc,
    rules: Vec<manifest::Rule>,
    scope: Scope,
) -> Result<Vec<PolicyRule>> {
    rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let rule = PolicyRule {
                verbs: rule.verbs,
                api_groups: rule.api_groups,
                resources: rule.resources,
                resource_names: rule.resource_names,
                non_resource_urls: rule.non_resource_urls,
            };
            let at = |field: &str| format!("rules[{i}].{field}");
            if rule.verbs.is_empty() {
                return Err(doc.err(at("verbs"), "verbs must contain at least one value"));
            }
            if !rule.non_resource_urls.is_empty() {
                if scope == Scope::Namespaced {
                    return Err(doc.err(
                        at("nonResourceURLs"),
                        "namespaced rules cannot apply to non-resource URLs",
                    ));
                }
                if !rule.api_groups.is_empty()
                    || !rule.resources.is_empty()
                    || !rule.resource_names.is_empty()
                {
                    return Err(doc.err(
                        at("nonResourceURLs"),
                        "rules cannot apply to both regular resources and non-resource URLs",
                    ));
                }
            } else if rule.api_groups.is_empty() {
                return Err(doc.err(
                    at("apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            } else if rule.resources.is_empty() {
                return Err(doc.err(
                    at("resources"),
                    "resource rules must supply at least one resource",
                ));
            }
            Ok(rule)
        })
        .collect()
}

/// `aggregationRule`, validated as the API server does: at least one
/// selector; `In`/`NotIn` with values, `Exists`/`DoesNotExist` without.
pub(super) fn aggregation_rule(
    doc: &Doc,
    rule: Option<manifest::AggregationRule>,
) -> Result<Option<AggregationRule>> {
    let Some(rule) = rule else { return Ok(None) };
    if rule.cluster_role_selectors.is_empty() {
        return Err(doc.err(
            "aggregationRule.clusterRoleSelectors",
            "at least one clusterRoleSelector required if aggregationRule is non-nil",
        ));
    }
    let mut selectors = Vec::with_capacity(rule.cluster_role_selectors.len());
    for (i, selector) in rule.cluster_role_selectors.into_iter().enumerate() {
        let at = format!("aggregationRule.clusterRoleSelectors[{i}]");
        let mut expressions = Vec::with_capacity(selector.match_expressions.len());
        for (j, e) in selector.match_expressions.into_iter().enumerate() {
            let field = |name: &str| format!("{at}.matchExpressions[{j}].{name}");
            let key = required(doc, format_args!("{at}.matchExpressions[{j}].key"), e.key)?;
            let operator = match required(
                doc,
                format_args!("{at}.matchExpressions[{j}].operator"),
                e.operator,
            )?
            .as_str()
            {
                "In" => SelectorOperator::In,
                "NotIn" => SelectorOperator::NotIn,
                "Exists" => SelectorOperator::Exists,
                "DoesNotExist" => SelectorOperator::DoesNotExist,
                other => {
                    return Err(doc.err(
                        field("operator"),
                        format!("{other:?}: expected In, NotIn, Exists or DoesNotExist"),
                    ));
                }
            };
            let needs_values = matches!(operator, SelectorOperator::In | SelectorOperator::NotIn);
            if needs_values == e.values.is_empty() {
                return Err(doc.err(
                    field("values"),
                    if needs_values {
                        "must be specified when operator is In or NotIn"
                    } else {
                        "may not be specified when operator is Exists or DoesNotExist"
                    },
                ));
            }
            expressions.push(LabelSelectorRequirement::new(&key, operator, e.values));
        }
        if selector.match_labels.is_empty() && expressions.is_empty() {
            // Valid in Kubernetes, and it means every ClusterRole,
            // cluster-admin's `*` included: say so where operators look.
            tracing::warn!(
                document = doc.index(),
                field = %doc.path(&at),
                "an empty clusterRoleSelector aggregates every ClusterRole"
            );
        }
        selectors.push(LabelSelector {
            match_labels: selector.match_labels,
            match_expressions: expressions,
        });
    }
    Ok(Some(AggregationRule {
        cluster_role_selectors: selectors,
    }))
}

/// `ValidateRoleBindingSubject`, after v1 defaulting of `apiGroup`.
pub(super) fn subjects(
    doc: &Doc,
    subjects: Vec<manifest::Subject>,
    scope: Scope,
) -> Result<Vec<Subject>> {
    let mut out = Vec::with_capacity(subjects.len());
    for (i, s) in subjects.into_iter().enumerate() {
        let at = |field: &str| format!("subjects[{i}].{field}");
        let kind = match required(doc, format_args!("subjects[{i}].kind"), s.kind)?.as_str() {
            "User" => SubjectKind::User,
            "Group" => SubjectKind::Group,
            "ServiceAccount" => SubjectKind::ServiceAccount,
            other => {
                return Err(doc.err(
                    at("kind"),
                    format!(
                        "unknown subject kind {other:?} (expected User, Group or ServiceAccount)"
                    ),
                ));
            }
        };
        let name = required(doc, format_args!("subjects[{i}].name"), s.name)?;
        let api_group = s.api_group.unwrap_or_default();
        let namespace = s.namespace.filter(|ns| !ns.is_empty());
        match kind {
            SubjectKind::User | SubjectKind::Group => {
                if !api_group.is_empty() && api_group != RBAC_API_GROUP {
                    return Err(doc.err(
                        at("apiGroup"),
                        format!("{api_group:?} is not supported (expected {RBAC_API_GROUP:?})"),
                    ));
                }
            }
            SubjectKind::ServiceAccount => {
                if !api_group.is_empty() {
                    return Err(doc.err(
                        at("apiGroup"),
                        format!("{api_group:?} is not supported (expected \"\")"),
                    ));
                }
                if name.contains(':') || name.contains('/') {
                    return Err(doc.err(
                        at("name"),
                        format!("{name:?} is not a valid service account name"),
                    ));
                }
                match &namespace {
                    None if scope == Scope::Cluster => {
                        return Err(doc.err(
                            at("namespace"),
                            "required for a ServiceAccount in a ClusterRoleBinding",
                        ));
                    }
                    Some(ns) => {
                        TenantNamespace::parse(ns)
                            .map_err(|e| doc.err(at("namespace"), format!("{ns:?}: {e}")))?;
                    }
                    None => {}
                }
            }
        }
        out.push(Subject {
            kind,
            name,
            namespace,
        });
    }
    Ok(out)
}

/// `roleRef`: a Role (RoleBindings only) or a ClusterRole of the RBAC group.
pub(super) fn role_ref(
    doc: &Doc,
    role_ref: Option<manifest::RoleRef>,
    scope: Scope,
) -> Result<RoleRef> {
    let r = role_ref.ok_or_else(|| doc.err("roleRef", "required"))?;
    let api_group = r.api_group.unwrap_or_default();
    if !api_group.is_empty() && api_group != RBAC_API_GROUP {
        return Err(doc.err(
            "roleRef.apiGroup",
            format!("{api_group:?} is not supported (expected {RBAC_API_GROUP:?})"),
        ));
    }
    let kind = match (required(doc, "roleRef.kind", r.kind)?.as_str(), scope) {
        ("Role", Scope::Namespaced) => RoleRefKind::Role,
        ("ClusterRole", _) => RoleRefKind::ClusterRole,
        ("Role", Scope::Cluster) => {
            return Err(doc.err(
                "roleRef.kind",
                "a ClusterRoleBinding can only refer to a ClusterRole",
            ));
        }
        (other, _) => {
            return Err(doc.err(
                "roleRef.kind",
                format!("unknown roleRef kind {other:?} (expected Role or ClusterRole)"),
            ));
        }
    };
    let name = required(doc, "roleRef.name", r.name)?;
    Ok(RoleRef { kind, name })
}
