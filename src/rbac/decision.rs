//! [`Decision`]: what the authorizer answers.

use std::fmt;
use std::sync::Arc;

/// The answer of the authorizer: allow, with the binding and role that
/// allowed, or deny.
///
/// Cheap to clone (shared strings); the [`RbacLayer`](super::RbacLayer)
/// puts it into the request extensions for handlers, audit and telemetry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    allowed_by: Option<(Arc<str>, Arc<str>)>,
}

impl Decision {
    /// An allow by `binding` (`RoleBinding/ns/name`,
    /// `ClusterRoleBinding/name`) of `role` (`Role/ns/name`,
    /// `ClusterRole/name`).
    pub fn allow(binding: Arc<str>, role: Arc<str>) -> Self {
        Self {
            allowed_by: Some((binding, role)),
        }
    }

    /// A denial.
    pub const fn deny() -> Self {
        Self { allowed_by: None }
    }

    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        self.allowed_by.is_some()
    }

    /// The binding that allowed it: `ClusterRoleBinding/<name>` or
    /// `RoleBinding/<namespace>/<name>`.
    pub fn binding(&self) -> Option<&Arc<str>> {
        self.allowed_by.as_ref().map(|(b, _)| b)
    }

    /// The role that binding grants: `ClusterRole/<name>` or
    /// `Role/<namespace>/<name>`.
    pub fn role(&self) -> Option<&Arc<str>> {
        self.allowed_by.as_ref().map(|(_, r)| r)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.allowed_by {
            Some((binding, role)) => write!(f, "allowed by {binding} of {role}"),
            None => f.write_str("denied: no rule allows it"),
        }
    }
}
