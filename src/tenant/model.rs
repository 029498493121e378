//! [`Tenant`] and [`TenantStatus`]: what the registry knows of a tenant.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::TenantNamespace;

/// Whether a tenant may be served.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "PascalCase")]
pub enum TenantStatus {
    /// Served.
    #[default]
    Active,
    /// Known but refused (`tenant.suspended`).
    Suspended,
}

/// A tenant, as admitted by the tenant layer and found in the request
/// extensions. Cheap to clone: the optional parts are shared.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Tenant {
    /// The namespace, a DNS-1123 label.
    pub namespace: TenantNamespace,
    /// Active or suspended.
    #[serde(default)]
    pub status: TenantStatus,
    /// A human name for dashboards and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Arc<str>>,
    /// Free-form labels (region, plan, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Arc<BTreeMap<String, String>>,
}

impl Tenant {
    /// An active tenant with no display name or labels.
    pub fn new(namespace: TenantNamespace) -> Self {
        Self {
            namespace,
            status: TenantStatus::Active,
            display_name: None,
            labels: Arc::default(),
        }
    }

    /// Sets the status.
    pub fn with_status(mut self, status: TenantStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the display name.
    pub fn with_display_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Sets the labels.
    pub fn with_labels<I, K, V>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.labels = Arc::new(
            labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Whether the tenant may be served.
    pub fn is_active(&self) -> bool {
        self.status == TenantStatus::Active
    }
}
