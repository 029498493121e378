//! Request mapping: which verb on which resource a request is.
//!
//! [`RequestMapper`] is the strategy; closures implement it. The defaults
//! are [`HttpRoutes`] (route templates plus the Kubernetes method→verb
//! table) and [`GrpcMethods`] (a table of `/package.Service/Method`); a
//! tuple `(a, b)` of mappers tries `a`, then `b`; [`SharedMapper`] erases
//! the type of any of them.

use std::fmt;
use std::sync::Arc;

use http::Request;

use super::attributes::Action;
#[cfg(doc)]
use super::{GrpcMethods, HttpRoutes};

/// Turns a request into the [`Action`] RBAC decides on; `None` means the
/// request is *unmapped* (the layer refuses it with `rbac.unmapped`, or
/// treats it as a non-resource URL if configured to).
///
/// A mapper reads the request *head* — method, URI, headers, extensions —
/// which the layer lends it as a `Request<()>`, whatever the body type of
/// the service: so one mapper fits every stack, and no mapper can consume
/// or wait for a body.
///
/// Implemented for closures `Fn(&Request<()>) -> Option<Action>`, for
/// [`HttpRoutes`] and [`GrpcMethods`], for pairs of mappers (the first
/// that maps wins), and for [`SharedMapper`].
///
/// ```
/// use finmesh::rbac::{Action, RequestMapper};
///
/// // Everything under /admin is the `admin` resource; the rest is unmapped.
/// let mapper = |req: &http::Request<()>| {
///     req.uri().path().starts_with("/admin/").then(|| Action::resource("get", "admin"))
/// };
/// let req = http::Request::get("/admin/users").body(()).unwrap();
/// assert_eq!(mapper.map(&req), Some(Action::resource("get", "admin")));
/// ```
pub trait RequestMapper: Send + Sync + 'static {
    /// The action the request with head `req` asks for, or `None` if this
    /// mapper does not know it.
    fn map(&self, req: &Request<()>) -> Option<Action>;
}

impl<F> RequestMapper for F
where
    F: Fn(&Request<()>) -> Option<Action> + Send + Sync + 'static,
{
    fn map(&self, req: &Request<()>) -> Option<Action> {
        self(req)
    }
}

impl<M1, M2> RequestMapper for (M1, M2)
where
    M1: RequestMapper,
    M2: RequestMapper,
{
    fn map(&self, req: &Request<()>) -> Option<Action> {
        self.0.map(req).or_else(|| self.1.map(req))
    }
}

/// Any [`RequestMapper`], type-erased behind an `Arc`: the mapper of the
/// RBAC layer inside a [`GovernanceLayer`](crate::GovernanceLayer), so that
/// stacks built with different mappers have one type.
///
/// A named type rather than `Arc<dyn RequestMapper>`, as
/// [`SharedTenants`](crate::tenant::SharedTenants) is for registries.
#[derive(Clone)]
pub struct SharedMapper(Arc<dyn RequestMapper>);

impl SharedMapper {
    /// Shares `mapper`.
    pub fn new(mapper: impl RequestMapper) -> Self {
        Self(Arc::new(mapper))
    }

    pub(super) fn from_arc<M: RequestMapper>(mapper: Arc<M>) -> Self {
        Self(mapper)
    }
}

impl RequestMapper for SharedMapper {
    fn map(&self, req: &Request<()>) -> Option<Action> {
        self.0.map(req)
    }
}

impl fmt::Debug for SharedMapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedMapper")
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::rbac::{GrpcMethods, HttpRoutes};

    fn req(method: &str, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    fn routes() -> HttpRoutes {
        HttpRoutes::new().route("/v1/accounts", "accounts")
    }

    #[test]
    fn tuple_of_mappers_tries_in_order() {
        let grpc = GrpcMethods::new().method("/pkg.Svc/Get", "get", "things");
        let both = (routes(), grpc);
        assert_eq!(
            both.map(&req("POST", "/pkg.Svc/Get")),
            Some(Action::resource("get", "things"))
        );
        assert_eq!(
            both.map(&req("GET", "/v1/accounts")),
            Some(Action::resource("list", "accounts"))
        );
        assert_eq!(both.map(&req("POST", "/pkg.Svc/Other")), None);
    }

    /// The pair maps by method and path alone: no header the client
    /// sends (a gRPC content-type, a method override) picks the other
    /// mapping (issue 14, finding 1).
    #[test]
    fn headers_never_pick_the_mapping() {
        let grpc = GrpcMethods::new().method("/pkg.Svc/Get", "get", "things");
        let both = (routes(), grpc);
        for (method, path) in [
            ("POST", "/pkg.Svc/Get"),
            ("POST", "/v1/accounts"),
            ("GET", "/v1/accounts"),
            ("HEAD", "/v1/accounts"),
            ("POST", "/pkg.Svc/Other"),
        ] {
            let plain = both.map(&req(method, path));
            for (name, value) in [
                ("content-type", "application/grpc"),
                ("content-type", "application/grpc-web+proto"),
                ("content-type", "application/json"),
                ("x-http-method-override", "GET"),
                ("x-http-method", "DELETE"),
                ("te", "trailers"),
            ] {
                let mut r = req(method, path);
                r.headers_mut().insert(name, value.parse().unwrap());
                assert_eq!(both.map(&r), plain, "{method} {path} {name}: {value}");
            }
        }
        // HEAD is read as GET, never as something laxer.
        assert_eq!(
            both.map(&req("HEAD", "/v1/accounts")),
            both.map(&req("GET", "/v1/accounts"))
        );
    }

    #[test]
    fn shared_mapper_maps_as_the_mapper_it_shares() {
        let shared = SharedMapper::new(|req: &Request<()>| {
            (req.method() == Method::GET).then(|| Action::resource("get", "things"))
        });
        assert_eq!(
            shared.map(&req("GET", "/x")),
            Some(Action::resource("get", "things"))
        );
        assert_eq!(shared.clone().map(&req("POST", "/x")), None);
    }
}
