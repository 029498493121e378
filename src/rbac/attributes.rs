//! What is being asked: [`Action`] (verb and target, from a
//! [`RequestMapper`](super::RequestMapper)) and [`Attributes`] (who, where,
//! and the action), the input of [`Authorizer::authorize`](super::Authorizer::authorize).

use std::fmt;
use std::sync::Arc;

use crate::principal::Principal;

/// A verb on a resource: the Kubernetes *resource request*.
///
/// The resource is kept in its combined form (`accounts/balance`), the way
/// rules name it; [`resource`](Self::resource) and
/// [`subresource`](Self::subresource) split it. Cheap to clone: every
/// string is shared.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceAction {
    verb: Arc<str>,
    api_group: Arc<str>,
    combined: Arc<str>,
    name: Option<Arc<str>>,
}

impl ResourceAction {
    /// `verb` on `resource` (`accounts`, or `accounts/balance` for a
    /// subresource) in `api_group` (`""` is the core group).
    pub fn new(
        verb: impl Into<Arc<str>>,
        api_group: impl Into<Arc<str>>,
        resource: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            verb: verb.into(),
            api_group: api_group.into(),
            combined: resource.into(),
            name: None,
        }
    }

    /// Names the object acted on (`accounts/{name}`).
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Replaces the verb.
    pub fn with_verb(mut self, verb: impl Into<Arc<str>>) -> Self {
        self.verb = verb.into();
        self
    }

    /// The verb.
    pub fn verb(&self) -> &str {
        &self.verb
    }

    /// The API group (`""` for the core group).
    pub fn api_group(&self) -> &str {
        &self.api_group
    }

    /// The resource without its subresource (`accounts`).
    pub fn resource(&self) -> &str {
        self.combined
            .split_once('/')
            .map_or(&*self.combined, |(resource, _)| resource)
    }

    /// The subresource (`balance` of `accounts/balance`), if any.
    pub fn subresource(&self) -> Option<&str> {
        self.combined.split_once('/').map(|(_, sub)| sub)
    }

    /// `resource/subresource`, or just the resource: the form rules use.
    pub fn combined_resource(&self) -> &str {
        &self.combined
    }

    /// The object name, if the request names one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn verb_arc(&self) -> &Arc<str> {
        &self.verb
    }

    pub(crate) fn combined_arc(&self) -> &Arc<str> {
        &self.combined
    }

    pub(crate) fn api_group_arc(&self) -> &Arc<str> {
        &self.api_group
    }

    pub(crate) fn name_arc(&self) -> Option<&Arc<str>> {
        self.name.as_ref()
    }
}

/// A verb on a path that is not a resource (`/healthz`, `/metrics`): the
/// Kubernetes *non-resource request*. Only ClusterRoleBindings grant these.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NonResourceAction {
    verb: Arc<str>,
    path: Arc<str>,
}

impl NonResourceAction {
    /// `verb` (the lowercase HTTP method, as Kubernetes uses) on `path`.
    pub fn new(verb: impl Into<Arc<str>>, path: impl Into<Arc<str>>) -> Self {
        Self {
            verb: verb.into(),
            path: path.into(),
        }
    }

    /// The verb.
    pub fn verb(&self) -> &str {
        &self.verb
    }

    /// The path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// What a request asks to do, as a [`RequestMapper`](super::RequestMapper)
/// sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A verb on a resource.
    Resource(ResourceAction),
    /// A verb on a non-resource path.
    NonResource(NonResourceAction),
}

impl Action {
    /// `verb` on `resource` (`accounts` or `accounts/balance`) in the core
    /// API group (`""`); add a name with
    /// [`ResourceAction::with_name`] before wrapping, or use
    /// [`Action::named`].
    pub fn resource(verb: impl Into<Arc<str>>, resource: impl Into<Arc<str>>) -> Self {
        Self::Resource(ResourceAction::new(verb, "", resource))
    }

    /// `verb` on the object `name` of `resource` in the core API group.
    pub fn named(
        verb: impl Into<Arc<str>>,
        resource: impl Into<Arc<str>>,
        name: impl Into<Arc<str>>,
    ) -> Self {
        Self::Resource(ResourceAction::new(verb, "", resource).with_name(name))
    }

    /// `verb` on the non-resource `path`.
    pub fn non_resource(verb: impl Into<Arc<str>>, path: impl Into<Arc<str>>) -> Self {
        Self::NonResource(NonResourceAction::new(verb, path))
    }

    /// The verb.
    pub fn verb(&self) -> &str {
        match self {
            Self::Resource(r) => r.verb(),
            Self::NonResource(n) => n.verb(),
        }
    }
}

impl fmt::Display for Action {
    /// `get accounts/balance "acc-1"`, `create accounts`, `get path /healthz`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resource(r) => {
                write!(f, "{} {}", r.verb(), r.combined_resource())?;
                if !r.api_group().is_empty() {
                    write!(f, ".{}", r.api_group())?;
                }
                if let Some(name) = r.name() {
                    write!(f, " {name:?}")?;
                }
                Ok(())
            }
            Self::NonResource(n) => write!(f, "{} path {}", n.verb(), n.path()),
        }
    }
}

/// Everything a decision depends on: who (user and groups), where (the
/// namespace; `None` for cluster scope) and what ([`Action`]).
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// The user name (`Principal::subject`, which the JWT layer prefixes
    /// per issuer; a service account's is
    /// `system:serviceaccount:<ns>:<name>`).
    pub user: &'a str,
    /// The user's groups.
    pub groups: &'a [Arc<str>],
    /// The namespace of the request (the tenant's); `None` means cluster
    /// scope, where only ClusterRoleBindings can grant.
    pub namespace: Option<&'a str>,
    /// The verb and target.
    pub action: &'a Action,
}

impl<'a> Attributes<'a> {
    /// Attributes for `user` with `groups` doing `action` in `namespace`.
    pub fn new(
        user: &'a str,
        groups: &'a [Arc<str>],
        namespace: Option<&'a str>,
        action: &'a Action,
    ) -> Self {
        Self {
            user,
            groups,
            namespace,
            action,
        }
    }

    /// Attributes for a verified [`Principal`]: its subject and groups,
    /// which already carry its issuer's username and groups prefixes (see
    /// `finmesh::auth::Issuer`), so `alice` of one issuer never
    /// matches a binding for another's.
    pub fn for_principal(
        principal: &'a Principal,
        namespace: Option<&'a str>,
        action: &'a Action,
    ) -> Self {
        Self::new(&principal.subject, &principal.groups, namespace, action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_and_subresource_split_at_the_first_slash() {
        let a = ResourceAction::new("get", "", "accounts/balance").with_name("acc-1");
        assert_eq!(a.resource(), "accounts");
        assert_eq!(a.subresource(), Some("balance"));
        assert_eq!(a.combined_resource(), "accounts/balance");
        let b = ResourceAction::new("list", "", "accounts");
        assert_eq!((b.resource(), b.subresource()), ("accounts", None));
        assert_eq!(
            Action::Resource(a).to_string(),
            "get accounts/balance \"acc-1\""
        );
        assert_eq!(
            Action::non_resource("get", "/healthz").to_string(),
            "get path /healthz"
        );
    }
}
