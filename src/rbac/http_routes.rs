//! [`HttpRoutes`]: the default HTTP mapper — route templates, and the
//! Kubernetes method→verb table.

use std::borrow::Cow;
use std::sync::Arc;

use http::{Method, Request};
use percent_encoding::percent_decode_str;

use super::attributes::{Action, ResourceAction};
use super::mapper::RequestMapper;

/// Path segments [`HttpRoutes`] keeps on the stack while matching.
const HELD_SEGMENTS: usize = 16;

/// One segment of a route template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `{name}`: the object name.
    Name,
    /// Any other `{param}`: one segment, not used by RBAC.
    Param,
}

#[derive(Clone, Debug)]
struct Route {
    template: Arc<str>,
    segments: Box<[Segment]>,
    has_name: bool,
    /// `Some`: only this method, with this custom verb.
    custom: Option<(Method, Arc<str>)>,
    api_group: Arc<str>,
    resource: Arc<str>,
}

/// The default HTTP mapper: route templates to resources, and the
/// Kubernetes method→verb table.
///
/// A template is a path of literal segments and `{param}` segments;
/// `{name}` is the object name. For a request matching a template
/// registered with [`route`](Self::route), the verb comes from the method,
/// as the Kubernetes API server derives it:
///
/// | method | with `{name}` | without |
/// |---|---|---|
/// | GET, HEAD | `get` | `list` (`watch` with `?watch=true`) |
/// | POST | `create` | `create` |
/// | PUT | `update` | `update` |
/// | PATCH | `patch` | `patch` |
/// | DELETE | `delete` | `deletecollection` |
///
/// Other methods are unmapped. [`custom_verb`](Self::custom_verb) maps one
/// method on one template to a verb of your own (`POST
/// /v1/transfers/{name}/approve` → `approve` on `transfers`).
///
/// When several templates match, a custom verb for the request's method
/// wins over the table, then the template with literals in the earliest
/// positions (`/v1/accounts/search` before `/v1/accounts/{name}`). A
/// trailing `/` is ignored; `{name}` is percent-decoded, as the handler
/// will see it.
///
/// ```
/// use finmesh::rbac::{Action, HttpRoutes, RequestMapper, ResourceAction};
///
/// let routes = HttpRoutes::new()
///     .route("/v1/accounts", "accounts")
///     .route("/v1/accounts/{name}", "accounts")
///     .route("/v1/accounts/{name}/balance", "accounts/balance")
///     .custom_verb(http::Method::POST, "/v1/transfers/{name}/approve", "approve", "transfers");
///
/// let req = |m: &str, uri: &str| http::Request::builder().method(m).uri(uri).body(()).unwrap();
/// assert_eq!(routes.map(&req("GET", "/v1/accounts")), Some(Action::resource("list", "accounts")));
/// assert_eq!(routes.map(&req("GET", "/v1/accounts?watch=true")), Some(Action::resource("watch", "accounts")));
/// assert_eq!(
///     routes.map(&req("DELETE", "/v1/accounts/acc-1")),
///     Some(Action::named("delete", "accounts", "acc-1")),
/// );
/// assert_eq!(
///     routes.map(&req("GET", "/v1/accounts/acc-1/balance")),
///     Some(Action::named("get", "accounts/balance", "acc-1")),
/// );
/// assert_eq!(
///     routes.map(&req("POST", "/v1/transfers/tr-9/approve")),
///     Some(Action::named("approve", "transfers", "tr-9")),
/// );
/// assert_eq!(routes.map(&req("GET", "/v1/transfers/tr-9/approve")), None);
/// assert_eq!(routes.map(&req("GET", "/v2/other")), None);
/// ```
#[derive(Clone, Debug, Default)]
pub struct HttpRoutes {
    routes: Vec<Route>,
    api_group: Arc<str>,
}

impl HttpRoutes {
    /// No routes: every request is unmapped.
    pub fn new() -> Self {
        Self::default()
    }

    /// The API group of the routes added after this call (`""`, the core
    /// group, until set).
    pub fn api_group(mut self, group: impl Into<Arc<str>>) -> Self {
        self.api_group = group.into();
        self
    }

    /// Maps `template` to `resource` (`accounts`, or `accounts/balance` for
    /// a subresource), with the verb from the method table.
    ///
    /// # Panics
    ///
    /// If the template is invalid (not starting with `/`, an empty segment,
    /// a `{` that is not a whole `{param}` segment, or `{name}` twice), or
    /// `resource` is empty: a programming error, caught at startup.
    pub fn route(mut self, template: &str, resource: &str) -> Self {
        let route = self.build(template, resource, None);
        self.routes.push(route);
        self
    }

    /// Maps `method` on `template` to the custom `verb` on `resource`.
    /// Other methods on the template stay unmapped unless
    /// [`route`](Self::route) registers it too.
    ///
    /// # Panics
    ///
    /// As [`route`](Self::route), and if `verb` is empty.
    pub fn custom_verb(
        mut self,
        method: Method,
        template: &str,
        verb: &str,
        resource: &str,
    ) -> Self {
        assert!(
            !verb.is_empty(),
            "finmesh::rbac: empty verb for route {template:?}"
        );
        let route = self.build(template, resource, Some((method, verb.into())));
        self.routes.push(route);
        self
    }

    fn build(&self, template: &str, resource: &str, custom: Option<(Method, Arc<str>)>) -> Route {
        assert!(
            !resource.is_empty() && !resource.starts_with('/') && !resource.ends_with('/'),
            "finmesh::rbac: invalid resource {resource:?} for route {template:?}"
        );
        let segments = parse_template(template).unwrap_or_else(|why| {
            panic!("finmesh::rbac: invalid route template {template:?}: {why}")
        });
        Route {
            template: template.into(),
            has_name: segments.contains(&Segment::Name),
            segments: segments.into(),
            custom,
            api_group: Arc::clone(&self.api_group),
            resource: resource.into(),
        }
    }

    /// The matching route and the decoded name, if any.
    fn find<'p>(&self, method: &Method, path: &'p str) -> Option<(&Route, Option<Cow<'p, str>>)> {
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        let rest = path.strip_prefix('/')?;
        // The path is split once, onto the stack, and every template is
        // compared with the same segments; a path longer than that is
        // split again for each template of its length.
        let mut held = [""; HELD_SEGMENTS];
        let mut count = 0;
        for segment in rest.split('/') {
            if let Some(slot) = held.get_mut(count) {
                *slot = segment;
            }
            count += 1;
        }
        if count <= HELD_SEGMENTS {
            self.find_in(method, count, held[..count].iter().copied())
        } else {
            self.find_in(method, count, rest.split('/'))
        }
    }

    /// [`find`](Self::find) over the `count` segments `segments` yields.
    fn find_in<'p, I>(
        &self,
        method: &Method,
        count: usize,
        segments: I,
    ) -> Option<(&Route, Option<Cow<'p, str>>)>
    where
        I: Iterator<Item = &'p str> + Clone,
    {
        let mut best: Option<(&Route, (bool, u64))> = None;
        for route in &self.routes {
            if route.segments.len() != count {
                continue;
            }
            if let Some((m, _)) = &route.custom
                && m != method
            {
                continue;
            }
            let mut literals = 0u64;
            let matched =
                route
                    .segments
                    .iter()
                    .zip(segments.clone())
                    .enumerate()
                    .all(|(i, (seg, s))| {
                        match seg {
                            Segment::Literal(l) => {
                                // Earlier literals weigh more; 64 segments is deep enough.
                                if i < 64 {
                                    literals |= 1 << (63 - i);
                                }
                                &**l == s
                            }
                            Segment::Name | Segment::Param => !s.is_empty(),
                        }
                    });
            if !matched {
                continue;
            }
            let rank = (route.custom.is_some(), literals);
            if best.as_ref().is_none_or(|(_, r)| rank > *r) {
                best = Some((route, rank));
            }
        }
        let (route, _) = best?;
        let name = match route.segments.iter().position(|s| *s == Segment::Name) {
            Some(i) => {
                let raw = segments.clone().nth(i)?;
                // A name that is not UTF-8 once decoded matches no route.
                Some(percent_decode_str(raw).decode_utf8().ok()?)
            }
            None => None,
        };
        Some((route, name))
    }

    /// The template the request matched, if any (for logs).
    pub fn matched_template<B>(&self, req: &Request<B>) -> Option<&str> {
        self.find(req.method(), req.uri().path())
            .map(|(r, _)| &*r.template)
    }
}

/// A route template alone, for layers that match requests in RBAC's route
/// vocabulary (the rate limiter's `routes`): the same syntax and the same
/// segment matching as [`HttpRoutes`], without a resource.
#[cfg(any(feature = "ratelimit", feature = "mtls"))]
#[derive(Clone, Debug)]
pub(crate) struct RouteTemplate {
    segments: Box<[Segment]>,
}

#[cfg(any(feature = "ratelimit", feature = "mtls"))]
impl RouteTemplate {
    pub(crate) fn parse(template: &str) -> Result<Self, &'static str> {
        Ok(Self {
            segments: parse_template(template)?.into(),
        })
    }

    /// Whether `path` matches: same segment count, literals equal, each
    /// `{param}` one non-empty segment; a trailing `/` is ignored.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        let all = self.segments.iter().all(|seg| match (seg, parts.next()) {
            (Segment::Literal(l), Some(s)) => &**l == s,
            (Segment::Name | Segment::Param, Some(s)) => !s.is_empty(),
            (_, None) => false,
        });
        all && parts.next().is_none()
    }
}

fn parse_template(template: &str) -> Result<Vec<Segment>, &'static str> {
    let rest = template.strip_prefix('/').ok_or("must start with '/'")?;
    let rest = match rest.strip_suffix('/') {
        Some(r) if !r.is_empty() => r,
        _ => rest,
    };
    if rest.is_empty() {
        return Ok(vec![Segment::Literal("".into())]);
    }
    let mut segments = Vec::new();
    for seg in rest.split('/') {
        if seg.is_empty() {
            return Err("empty segment");
        }
        let segment = match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some("name") => {
                if segments.contains(&Segment::Name) {
                    return Err("{name} appears twice");
                }
                Segment::Name
            }
            Some(p) if !p.is_empty() && !p.contains(['{', '}', '*']) => Segment::Param,
            Some(_) => return Err("invalid {param} segment"),
            None if seg.contains(['{', '}']) => return Err("'{' or '}' inside a literal segment"),
            None => Segment::Literal(seg.into()),
        };
        segments.push(segment);
    }
    Ok(segments)
}

/// Whether the query says `watch=true` (Go `strconv.ParseBool` spellings,
/// as the Kubernetes API server parses it).
fn wants_watch(query: Option<&str>) -> bool {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == "watch")
        .is_some_and(|(_, v)| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// The Kubernetes method→verb table (`RequestInfoFactory`).
fn table_verb(method: &Method, named: bool, watch: bool) -> Option<Arc<str>> {
    // Made once: a verb per request is an `Arc` clone, not an allocation.
    static VERBS: std::sync::LazyLock<[Arc<str>; 8]> = std::sync::LazyLock::new(|| {
        [
            "get",
            "watch",
            "list",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ]
        .map(Arc::from)
    });
    let i = match *method {
        Method::GET | Method::HEAD if named => 0,
        Method::GET | Method::HEAD if watch => 1,
        Method::GET | Method::HEAD => 2,
        Method::POST => 3,
        Method::PUT => 4,
        Method::PATCH => 5,
        Method::DELETE if named => 6,
        Method::DELETE => 7,
        _ => return None,
    };
    Some(Arc::clone(&VERBS[i]))
}

impl RequestMapper for HttpRoutes {
    fn map(&self, req: &Request<()>) -> Option<Action> {
        let (route, name) = self.find(req.method(), req.uri().path())?;
        let verb: Arc<str> = match &route.custom {
            Some((_, verb)) => Arc::clone(verb),
            None => {
                let named = route.has_name;
                let watch = !named && wants_watch(req.uri().query());
                table_verb(req.method(), named, watch)?
            }
        };
        let mut action = ResourceAction::new(
            verb,
            Arc::clone(&route.api_group),
            Arc::clone(&route.resource),
        );
        if let Some(name) = name {
            action = action.with_name(&*name);
        }
        Some(Action::Resource(action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    fn routes() -> HttpRoutes {
        HttpRoutes::new()
            .route("/v1/accounts", "accounts")
            .route("/v1/accounts/{name}", "accounts")
            .route("/v1/accounts/search", "accountsearches")
            .route("/v1/accounts/{name}/balance", "accounts/balance")
            .route("/v1/tenants/{tenant}/orders/{name}", "orders")
            .custom_verb(
                Method::POST,
                "/v1/transfers/{name}/approve",
                "approve",
                "transfers",
            )
            .route("/v1/transfers/{name}/approve", "transfers/approval")
    }

    fn mapped(method: &str, uri: &str) -> Option<(String, String, Option<String>)> {
        match routes().map(&req(method, uri))? {
            Action::Resource(r) => Some((
                r.verb().to_owned(),
                r.combined_resource().to_owned(),
                r.name().map(str::to_owned),
            )),
            Action::NonResource(_) => panic!("non-resource"),
        }
    }

    #[test]
    fn paths_longer_than_the_held_segments_match_the_same() {
        // Templates around the stack's capacity: 15, 16 and 17 segments
        // before the name, so the paths hold 16, 17 and 18.
        let deep = |n: usize| format!("{}/{{name}}", "/d".repeat(n));
        let routes = HttpRoutes::new()
            .route(&deep(HELD_SEGMENTS - 1), "fifteen")
            .route(&deep(HELD_SEGMENTS), "sixteen")
            .route(&deep(HELD_SEGMENTS + 1), "seventeen");
        for (n, resource) in [
            (HELD_SEGMENTS - 1, "fifteen"),
            (HELD_SEGMENTS, "sixteen"),
            (HELD_SEGMENTS + 1, "seventeen"),
        ] {
            let path = format!("{}/obj-{n}", "/d".repeat(n));
            for path in [path.clone(), format!("{path}/")] {
                match routes.map(&req("GET", &path)) {
                    Some(Action::Resource(r)) => {
                        assert_eq!(r.combined_resource(), resource, "{path}");
                        assert_eq!(r.name(), Some(format!("obj-{n}").as_str()), "{path}");
                        assert_eq!(r.verb(), "get");
                    }
                    other => panic!("{path}: {other:?}"),
                }
            }
            // One segment more, or a literal changed first or last (past
            // the held segments for the longest): no template.
            let longer = format!("{}/obj/x", "/d".repeat(n));
            let changed_first = format!("/e{}/obj", "/d".repeat(n - 1));
            let changed_last = format!("{}/e/obj", "/d".repeat(n - 1));
            for path in [longer, changed_first, changed_last] {
                assert!(routes.map(&req("GET", &path)).is_none(), "{path}");
            }
        }
        assert!(routes.map(&req("GET", &"/d".repeat(300))).is_none());
    }

    #[test]
    fn kubernetes_method_to_verb_table() {
        type Row<'a> = (
            &'a str,
            &'a str,
            Option<(&'a str, &'a str, Option<&'a str>)>,
        );
        let rows: &[Row<'_>] = &[
            ("GET", "/v1/accounts", Some(("list", "accounts", None))),
            ("HEAD", "/v1/accounts", Some(("list", "accounts", None))),
            (
                "GET",
                "/v1/accounts?watch=true",
                Some(("watch", "accounts", None)),
            ),
            (
                "GET",
                "/v1/accounts?limit=5&watch=1",
                Some(("watch", "accounts", None)),
            ),
            (
                "GET",
                "/v1/accounts?watch=false",
                Some(("list", "accounts", None)),
            ),
            (
                "GET",
                "/v1/accounts?watch",
                Some(("list", "accounts", None)),
            ),
            (
                "GET",
                "/v1/accounts/acc-1",
                Some(("get", "accounts", Some("acc-1"))),
            ),
            (
                "GET",
                "/v1/accounts/acc-1?watch=true",
                Some(("get", "accounts", Some("acc-1"))),
            ),
            (
                "HEAD",
                "/v1/accounts/acc-1",
                Some(("get", "accounts", Some("acc-1"))),
            ),
            ("POST", "/v1/accounts", Some(("create", "accounts", None))),
            (
                "PUT",
                "/v1/accounts/acc-1",
                Some(("update", "accounts", Some("acc-1"))),
            ),
            (
                "PATCH",
                "/v1/accounts/acc-1",
                Some(("patch", "accounts", Some("acc-1"))),
            ),
            (
                "DELETE",
                "/v1/accounts/acc-1",
                Some(("delete", "accounts", Some("acc-1"))),
            ),
            (
                "DELETE",
                "/v1/accounts",
                Some(("deletecollection", "accounts", None)),
            ),
            (
                "GET",
                "/v1/accounts/acc-1/balance",
                Some(("get", "accounts/balance", Some("acc-1"))),
            ),
            (
                "GET",
                "/v1/accounts/acc-1/",
                Some(("get", "accounts", Some("acc-1"))),
            ),
            (
                "GET",
                "/v1/accounts/acc%2D1",
                Some(("get", "accounts", Some("acc-1"))),
            ),
            (
                "GET",
                "/v1/accounts/search",
                Some(("list", "accountsearches", None)),
            ),
            (
                "GET",
                "/v1/tenants/t1/orders/o-7",
                Some(("get", "orders", Some("o-7"))),
            ),
            (
                "POST",
                "/v1/transfers/tr-1/approve",
                Some(("approve", "transfers", Some("tr-1"))),
            ),
            (
                "GET",
                "/v1/transfers/tr-1/approve",
                Some(("get", "transfers/approval", Some("tr-1"))),
            ),
            ("OPTIONS", "/v1/accounts", None),
            ("GET", "/v1/accounts//balance", None),
            ("GET", "/v1/accounts/%FF", None),
            ("GET", "/v1", None),
            ("GET", "/v1/accounts/acc-1/balance/x", None),
            ("GET", "/v2/accounts", None),
        ];
        for (method, uri, want) in rows {
            let want = want.map(|(v, r, n)| (v.to_owned(), r.to_owned(), n.map(str::to_owned)));
            assert_eq!(mapped(method, uri), want, "{method} {uri}");
        }
    }

    #[test]
    fn api_group_applies_to_later_routes() {
        let routes = HttpRoutes::new()
            .route("/a", "as")
            .api_group("payments.example.com")
            .route("/b", "bs");
        let Some(Action::Resource(a)) = routes.map(&req("GET", "/a")) else {
            panic!()
        };
        let Some(Action::Resource(b)) = routes.map(&req("GET", "/b")) else {
            panic!()
        };
        assert_eq!((a.api_group(), b.api_group()), ("", "payments.example.com"));
    }

    #[test]
    fn invalid_templates_are_refused() {
        for bad in [
            "v1/x",
            "/v1//x",
            "/v1/{name}/{name}",
            "/v1/a{b}",
            "/v1/{}",
            "/v1/{*rest}",
        ] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
        assert!(
            std::panic::catch_unwind(|| HttpRoutes::new().route("/v1/{name}/{name}", "x")).is_err()
        );
    }
}
