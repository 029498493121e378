//! Which requests a rule matches, in RBAC's vocabulary: verbs and
//! resources of the [`Action`] RBAC mapped, the verified tenant, subject,
//! groups and risk level, and the request's route template or gRPC method.

use http::Method;

use super::manifest::MatchSpec;
use crate::principal::{Principal, RiskLevel};
use crate::rbac::{Action, RouteTemplate};
use crate::tenant::TenantNamespace;

/// What a rule looks at: the request head and what the earlier layers put
/// in its extensions. Nothing here comes from a raw header.
#[derive(Clone, Copy)]
pub(crate) struct RequestView<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) action: Option<&'a Action>,
    pub(crate) principal: Option<&'a Principal>,
    pub(crate) tenant: Option<&'a TenantNamespace>,
}

/// The place a rule matched, for `key: route`: the index of the route
/// template or gRPC method; [`ANY_PLACE`] when the rule lists none.
pub(crate) type Place = u32;
pub(crate) const ANY_PLACE: Place = u32::MAX;

/// A compiled `match`. Each listed field must match (an empty one matches
/// everything); within a field, any item. `subjects` and `groups` are one
/// condition (*who*), as are `routes` and `grpcMethods` (*where*).
#[derive(Debug, Default)]
pub(crate) struct Matcher {
    verbs: Option<Box<[Box<str>]>>,
    resources: Option<Box<[Box<str>]>>,
    tenants: Option<Box<[TenantNamespace]>>,
    subjects: Box<[Box<str>]>,
    groups: Box<[Box<str>]>,
    risk: Option<Box<[RiskLevel]>>,
    routes: Box<[(Box<str>, RouteTemplate)]>,
    grpc_methods: Box<[Box<str>]>,
}

impl Matcher {
    /// Compiles `spec`; an error names the field (relative to `match`).
    pub(super) fn compile(spec: MatchSpec) -> Result<Self, (String, String)> {
        let words = |field: &str, items: Vec<String>| {
            for (i, item) in items.iter().enumerate() {
                if item.is_empty() || item.len() > 253 || item.chars().any(char::is_whitespace) {
                    return Err((
                        format!("{field}[{i}]"),
                        format!("{item:?} is not a valid {field} item"),
                    ));
                }
            }
            Ok(items
                .into_iter()
                .map(String::into_boxed_str)
                .collect::<Box<[_]>>())
        };
        let any = |items: Box<[Box<str>]>| {
            (!items.is_empty() && !items.iter().any(|v| &**v == "*")).then_some(items)
        };
        let verbs = any(words("verbs", spec.verbs)?);
        let resources = any(words("resources", spec.resources)?);
        let subjects = words("subjects", spec.subjects)?;
        let groups = words("groups", spec.groups)?;
        let mut tenants = Vec::with_capacity(spec.tenants.len());
        for (i, t) in spec.tenants.iter().enumerate() {
            tenants.push(TenantNamespace::parse(t).map_err(|e| {
                (
                    format!("tenants[{i}]"),
                    format!("{t:?} is not a tenant namespace: {e}"),
                )
            })?);
        }
        let mut routes = Vec::with_capacity(spec.routes.len());
        for (i, r) in spec.routes.into_iter().enumerate() {
            let template = RouteTemplate::parse(&r).map_err(|why| {
                (
                    format!("routes[{i}]"),
                    format!("{r:?} is not a route template: {why}"),
                )
            })?;
            routes.push((r.into_boxed_str(), template));
        }
        for (i, m) in spec.grpc_methods.iter().enumerate() {
            let valid = m.len() <= 512
                && m.strip_prefix('/')
                    .and_then(|p| p.split_once('/'))
                    .is_some_and(|(service, method)| {
                        !service.is_empty()
                            && !method.is_empty()
                            && !method.contains('/')
                            && (method == "*" || !method.contains('*'))
                            && !service.contains('*')
                    });
            if !valid {
                return Err((
                    format!("grpcMethods[{i}]"),
                    format!("{m:?} is not /package.Service/Method or /package.Service/*"),
                ));
            }
        }
        Ok(Self {
            verbs,
            resources,
            tenants: (!tenants.is_empty()).then(|| tenants.into()),
            subjects,
            groups,
            risk: (!spec.risk_levels.is_empty()).then(|| spec.risk_levels.into()),
            routes: routes.into(),
            grpc_methods: spec
                .grpc_methods
                .into_iter()
                .map(String::into_boxed_str)
                .collect(),
        })
    }

    /// `Some(place)` when `req` matches; `place` is what `key: route`
    /// buckets by.
    pub(crate) fn matches(&self, req: &RequestView<'_>) -> Option<Place> {
        if let Some(tenants) = &self.tenants {
            let tenant = req.tenant?;
            if !tenants.contains(tenant) {
                return None;
            }
        }
        if self.verbs.is_some() || self.resources.is_some() {
            let Some(Action::Resource(action)) = req.action else {
                return None;
            };
            if let Some(verbs) = &self.verbs
                && !verbs.iter().any(|v| **v == *action.verb())
            {
                return None;
            }
            if let Some(resources) = &self.resources
                && !resources
                    .iter()
                    .any(|r| resource_matches(r, action.combined_resource()))
            {
                return None;
            }
        }
        if !self.subjects.is_empty() || !self.groups.is_empty() {
            let principal = req.principal?;
            let user = self.subjects.iter().any(|s| **s == *principal.subject);
            let group = || {
                self.groups
                    .iter()
                    .any(|g| principal.groups.iter().any(|pg| **pg == **g))
            };
            if !user && !group() {
                return None;
            }
        }
        if let Some(risk) = &self.risk {
            // Security: the risk level of the verified token only.
            let level = req.principal?.risk?;
            if !risk.contains(&level) {
                return None;
            }
        }
        if self.routes.is_empty() && self.grpc_methods.is_empty() {
            return Some(ANY_PLACE);
        }
        if let Some(i) = self.routes.iter().position(|(_, t)| t.matches(req.path)) {
            return Some(i as Place);
        }
        // The path decides, as RBAC's GrpcMethods: never the content-type.
        if *req.method == Method::POST
            && let Some(i) = self
                .grpc_methods
                .iter()
                .position(|m| method_matches(m, req.path))
        {
            return Some((self.routes.len() + i) as Place);
        }
        None
    }

    /// The template or method at `place`, for route keys and headers.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn place_name(&self, place: Place) -> Option<&str> {
        let i = place as usize;
        self.routes.get(i).map(|(r, _)| &**r).or_else(|| {
            self.grpc_methods
                .get(i.checked_sub(self.routes.len())?)
                .map(|m| &**m)
        })
    }
}

/// `accounts`, `*`, `accounts/*` (every subresource), `*/balance`.
fn resource_matches(rule: &str, combined: &str) -> bool {
    if rule == "*" || rule == combined {
        return true;
    }
    match (rule.split_once('/'), combined.split_once('/')) {
        (Some((r, "*")), Some((c, _))) => r == c,
        (Some(("*", rs)), Some((_, cs))) => rs == cs,
        _ => false,
    }
}

fn method_matches(rule: &str, path: &str) -> bool {
    match rule.strip_suffix('*') {
        Some(service) => path
            .strip_prefix(service)
            .is_some_and(|m| !m.is_empty() && !m.contains('/')),
        None => rule == path,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn spec(yaml: &str) -> Matcher {
        let spec: MatchSpec = serde_yaml_ng::from_str(yaml).unwrap();
        Matcher::compile(spec).unwrap()
    }

    struct Req {
        method: Method,
        path: &'static str,
        action: Option<Action>,
        principal: Option<Principal>,
        tenant: Option<TenantNamespace>,
    }

    impl Req {
        fn new(method: Method, path: &'static str) -> Self {
            Self {
                method,
                path,
                action: None,
                principal: None,
                tenant: None,
            }
        }
        fn action(mut self, verb: &str, resource: &str) -> Self {
            self.action = Some(Action::resource(
                Arc::<str>::from(verb),
                Arc::<str>::from(resource),
            ));
            self
        }
        fn who(mut self, user: &str, groups: &[&str], risk: Option<RiskLevel>) -> Self {
            let mut p = Principal::new(user, "iss").with_groups(groups.iter().copied());
            p.risk = risk;
            self.principal = Some(p);
            self
        }
        fn tenant(mut self, t: &str) -> Self {
            self.tenant = Some(TenantNamespace::parse(t).unwrap());
            self
        }
        fn view(&self) -> RequestView<'_> {
            RequestView {
                method: &self.method,
                path: self.path,
                action: self.action.as_ref(),
                principal: self.principal.as_ref(),
                tenant: self.tenant.as_ref(),
            }
        }
    }

    /// shouldPass / shouldFail rows, as the Kubernetes authorizer tests.
    #[test]
    fn match_table() {
        let transfers = || {
            Req::new(Method::POST, "/v1/transfer")
                .action("create", "transfers")
                .who("alice", &["payers"], Some(RiskLevel::Low))
                .tenant("tenant-a")
        };
        let rows: Vec<(&str, Req, Option<Place>)> = vec![
            ("{}", transfers(), Some(ANY_PLACE)),
            (
                "{verbs: [create], resources: [transfers]}",
                transfers(),
                Some(ANY_PLACE),
            ),
            ("{verbs: ['*']}", transfers(), Some(ANY_PLACE)),
            ("{verbs: [get]}", transfers(), None),
            ("{resources: [accounts]}", transfers(), None),
            ("{resources: [accounts]}", Req::new(Method::GET, "/x"), None),
            ("{tenants: [tenant-a]}", transfers(), Some(ANY_PLACE)),
            ("{tenants: [tenant-b]}", transfers(), None),
            ("{tenants: [tenant-a]}", Req::new(Method::GET, "/x"), None),
            ("{subjects: [alice]}", transfers(), Some(ANY_PLACE)),
            ("{subjects: [bob]}", transfers(), None),
            (
                "{subjects: [bob], groups: [payers]}",
                transfers(),
                Some(ANY_PLACE),
            ),
            ("{groups: [auditors]}", transfers(), None),
            ("{riskLevels: [low, medium]}", transfers(), Some(ANY_PLACE)),
            ("{riskLevels: [high]}", transfers(), None),
            (
                "{routes: ['/v1/accounts/{id}', /v1/transfer]}",
                transfers(),
                Some(1),
            ),
            (
                "{routes: ['/v1/accounts/{id}']}",
                Req::new(Method::GET, "/v1/accounts/a1/"),
                Some(0),
            ),
            (
                "{routes: ['/v1/accounts/{id}']}",
                Req::new(Method::GET, "/v1/accounts"),
                None,
            ),
            (
                "{grpcMethods: [/p.Svc/Get]}",
                Req::new(Method::POST, "/p.Svc/Get"),
                Some(0),
            ),
            (
                "{routes: [/x], grpcMethods: ['/p.Svc/*']}",
                Req::new(Method::POST, "/p.Svc/Put"),
                Some(1),
            ),
            (
                "{grpcMethods: ['/p.Svc/*']}",
                Req::new(Method::POST, "/p.Svc/a/b"),
                None,
            ),
            (
                "{grpcMethods: [/p.Svc/Get]}",
                Req::new(Method::GET, "/p.Svc/Get"),
                None,
            ),
            (
                "{resources: ['accounts/*']}",
                Req::new(Method::GET, "/").action("get", "accounts/balance"),
                Some(ANY_PLACE),
            ),
            (
                "{resources: ['*/balance']}",
                Req::new(Method::GET, "/").action("get", "accounts/balance"),
                Some(ANY_PLACE),
            ),
            (
                "{resources: ['accounts']}",
                Req::new(Method::GET, "/").action("get", "accounts/balance"),
                None,
            ),
        ];
        for (rule, req, want) in rows {
            assert_eq!(spec(rule).matches(&req.view()), want, "{rule}");
        }
    }

    #[test]
    fn invalid_items_name_their_field() {
        for (yaml, field) in [
            ("{tenants: [Tenant_A]}", "tenants[0]"),
            ("{routes: [v1/x]}", "routes[0]"),
            ("{grpcMethods: [/p.Svc/Get, p.Svc/Get]}", "grpcMethods[1]"),
            ("{grpcMethods: ['/p.*/Get']}", "grpcMethods[0]"),
            ("{verbs: ['']}", "verbs[0]"),
        ] {
            let spec: MatchSpec = serde_yaml_ng::from_str(yaml).unwrap();
            let (f, _) = Matcher::compile(spec).unwrap_err();
            assert_eq!(f, field, "{yaml}");
        }
    }
}
