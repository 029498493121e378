//! Reading an `audit.k8s.io/v1` `Policy` manifest: the serde shapes, with
//! unknown fields refused and errors pointing at their field.

use std::fmt;

use serde::Deserialize;

use super::{AuditPolicy, Level, Rule, Stage};

/// The largest policy manifest accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// Most rules a policy may hold.
const MAX_RULES: usize = 10_000;

/// Why an audit policy manifest was refused: the field path (`rules[3].level`)
/// and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPolicyError {
    field: String,
    message: String,
}

impl AuditPolicyError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The path of the offending field (`rules[2].resources[0].group`),
    /// empty when the whole document is at fault.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for AuditPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "audit policy: {}", self.message)
        } else {
            write!(f, "audit policy: {}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for AuditPolicyError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Manifest {
    api_version: String,
    kind: String,
    #[serde(default)]
    #[allow(dead_code)] // accepted as Kubernetes writes it; not used
    metadata: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    rules: Vec<RuleManifest>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    #[allow(dead_code)] // finmesh records hold no managed fields
    omit_managed_fields: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleManifest {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    #[allow(dead_code)]
    omit_managed_fields: Option<bool>,
}

/// `resources[]` of a rule: an API group and resources in it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct GroupResources {
    #[serde(default)]
    pub(super) group: String,
    #[serde(default)]
    pub(super) resources: Vec<String>,
    #[serde(default)]
    pub(super) resource_names: Vec<String>,
}

/// Parses and validates one manifest.
pub(super) fn load(bytes: &[u8]) -> Result<AuditPolicy, AuditPolicyError> {
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(AuditPolicyError::new(
            "",
            format!(
                "manifest is {} bytes, over the {MAX_POLICY_BYTES}-byte limit",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| AuditPolicyError::new("", format!("manifest is not UTF-8: {e}")))?;
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        AuditPolicyError::new(path, e.into_inner().to_string())
    })?;
    if manifest.api_version != "audit.k8s.io/v1" {
        return Err(AuditPolicyError::new(
            "apiVersion",
            format!("expected audit.k8s.io/v1, found {:?}", manifest.api_version),
        ));
    }
    if manifest.kind != "Policy" {
        return Err(AuditPolicyError::new(
            "kind",
            format!("expected Policy, found {:?}", manifest.kind),
        ));
    }
    if manifest.rules.len() > MAX_RULES {
        return Err(AuditPolicyError::new(
            "rules",
            format!("{} rules, more than {MAX_RULES}", manifest.rules.len()),
        ));
    }
    let mut rules = Vec::with_capacity(manifest.rules.len());
    for (i, r) in manifest.rules.into_iter().enumerate() {
        // The apiserver's validation: a rule is about resources or about
        // non-resource URLs, never both.
        if !r.non_resource_urls.is_empty() && (!r.resources.is_empty() || !r.namespaces.is_empty())
        {
            return Err(AuditPolicyError::new(
                format!("rules[{i}].nonResourceURLs"),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        for (j, url) in r.non_resource_urls.iter().enumerate() {
            let bad = url.is_empty()
                || (!url.starts_with('/') && url != "*")
                || url.strip_suffix('*').unwrap_or(url).contains('*');
            if bad {
                return Err(AuditPolicyError::new(
                    format!("rules[{i}].nonResourceURLs[{j}]"),
                    "expected a path starting with \"/\", with \"*\" only as its last character",
                ));
            }
        }
        for (j, gr) in r.resources.iter().enumerate() {
            if gr.group.contains('/') {
                return Err(AuditPolicyError::new(
                    format!("rules[{i}].resources[{j}].group"),
                    "an API group without a version (no \"/\")",
                ));
            }
            if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                return Err(AuditPolicyError::new(
                    format!("rules[{i}].resources[{j}].resourceNames"),
                    "resourceNames need resources",
                ));
            }
        }
        let mut omit = manifest.omit_stages.clone();
        omit.extend(r.omit_stages.iter().copied());
        rules.push(Rule {
            level: r.level,
            users: r.users,
            user_groups: r.user_groups,
            verbs: r.verbs,
            resources: r.resources,
            namespaces: r.namespaces,
            non_resource_urls: r.non_resource_urls,
            omit_stages: omit,
        });
    }
    Ok(AuditPolicy::from_rules(rules.into()))
}
