//! [`RequirePeerLayer`]: routes only certain peers may call.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::IdentityCode;
use super::peer::PeerIdentity;
use super::spiffe::SpiffeId;
use crate::body::ResponseBody;
use crate::codes::RejectionCode;
use crate::future::ResponseFuture;

/// Admits a request to a listed route only when its [`PeerIdentity`] is one
/// of the SPIFFE IDs listed for it; other routes pass untouched. Refuses
/// with `identity.peer_denied` (403 / `PERMISSION_DENIED`), also when the
/// request has no peer identity at all.
///
/// Routes are a gRPC method (`/pkg.Service/Method`) or an HTTP path,
/// matched as RBAC matches its route templates (feature `rbac`):
/// `/v1/accounts/{id}` matches one non-empty segment for `{id}`, and a
/// trailing `/` is ignored. A path several routes match must be admitted
/// by each. It complements RBAC, which authorizes the *principal* (the
/// token's user when there is one): this says which *workload* may carry
/// the call, whoever the user is. Place it inside the
/// [`GovernanceLayer`](crate::GovernanceLayer), or around the routes it
/// guards.
///
/// ```
/// use finmesh::identity::{PeerIdentity, RequirePeerLayer, SpiffeId};
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let frontend = SpiffeId::parse("spiffe://finmesh.demo/ns/payments/sa/frontend")?;
/// let svc = ServiceBuilder::new()
///     .layer(RequirePeerLayer::new().route("/finmesh.ledger.v1.Ledger/Transfer", [frontend.clone()]))
///     .service_fn(|_req: Request<()>| async { Ok::<_, std::convert::Infallible>(Response::new(())) });
///
/// let mut req = Request::post("/finmesh.ledger.v1.Ledger/Transfer").body(())?;
/// req.extensions_mut().insert(PeerIdentity::new(frontend));
/// assert_eq!(svc.clone().oneshot(req).await?.status(), 200);
///
/// let mut req = Request::post("/finmesh.ledger.v1.Ledger/Transfer").body(())?;
/// req.extensions_mut().insert(PeerIdentity::new(SpiffeId::parse("spiffe://finmesh.demo/ns/x/sa/y")?));
/// assert_eq!(svc.oneshot(req).await?.status(), 403);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct RequirePeerLayer {
    routes: Arc<Vec<Route>>,
}

/// A guarded route: its template and the peers it admits.
#[derive(Clone, Debug)]
struct Route {
    path: String,
    /// RBAC's route template (`/v1/accounts/{id}`), when `path` is one.
    #[cfg(feature = "rbac")]
    template: Option<crate::rbac::RouteTemplate>,
    peers: Vec<SpiffeId>,
}

impl Route {
    fn new(path: String) -> Self {
        Self {
            #[cfg(feature = "rbac")]
            template: crate::rbac::RouteTemplate::parse(&path).ok(),
            path,
            peers: Vec::new(),
        }
    }

    /// RBAC's matching (a `{param}` is one non-empty segment, a trailing
    /// `/` is ignored); without the `rbac` feature, or for a path that is
    /// no template, the path itself, trailing `/` ignored.
    fn matches(&self, path: &str) -> bool {
        #[cfg(feature = "rbac")]
        if let Some(template) = &self.template {
            return template.matches(path);
        }
        let trim = |p: &str| match p.strip_suffix('/') {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => p.to_owned(),
        };
        trim(&self.path) == trim(path)
    }
}

impl RequirePeerLayer {
    /// No routes yet: everything passes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only `peers` may call `path` (added to any peers already listed
    /// for it).
    pub fn route(
        mut self,
        path: impl Into<String>,
        peers: impl IntoIterator<Item = SpiffeId>,
    ) -> Self {
        let path = path.into();
        let routes = Arc::make_mut(&mut self.routes);
        let at = match routes.iter().position(|r| r.path == path) {
            Some(at) => at,
            None => {
                routes.push(Route::new(path));
                routes.len() - 1
            }
        };
        routes[at].peers.extend(peers);
        self
    }
}

impl<S> Layer<S> for RequirePeerLayer {
    type Service = RequirePeer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePeer {
            inner,
            routes: Arc::clone(&self.routes),
        }
    }
}

/// The service [`RequirePeerLayer`] produces.
#[derive(Clone, Debug)]
pub struct RequirePeer<S> {
    inner: S,
    routes: Arc<Vec<Route>>,
}

crate::macros::inner_accessors!([S] RequirePeer<S>, inner: S);

impl<S, ReqB, ResB> Service<Request<ReqB>> for RequirePeer<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let path = req.uri().path();
        let mut matching = self.routes.iter().filter(|r| r.matches(path)).peekable();
        if matching.peek().is_some() {
            // Security: only the PeerIdentity the connection's verified
            // handshake inserted counts; deny when there is none. Every
            // route the path matches must admit the peer.
            let peer = req.extensions().get::<PeerIdentity>();
            let admitted = peer
                .is_some_and(|peer| matching.all(|route| route.peers.contains(&peer.spiffe_id)));
            if !admitted {
                let rejection = IdentityCode::PeerDenied
                    .reject("this route does not admit the calling workload");
                return ResponseFuture::rejected(rejection.respond(&req));
            }
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn routes_match_templates_and_ignore_a_trailing_slash() {
        let frontend = SpiffeId::parse("spiffe://finmesh.demo/ns/payments/sa/frontend").unwrap();
        let other = SpiffeId::parse("spiffe://finmesh.demo/ns/x/sa/y").unwrap();
        let layer = RequirePeerLayer::new()
            .route("/v1/transfer", [frontend.clone()])
            .route("/v1/accounts/{id}/close", [frontend.clone()]);
        let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(()))
        }));
        let status = |path: &'static str, peer: &SpiffeId| {
            let mut req = Request::post(path).body(()).unwrap();
            req.extensions_mut().insert(PeerIdentity::new(peer.clone()));
            let svc = svc.clone();
            async move { svc.oneshot(req).await.unwrap().status().as_u16() }
        };
        // (path, status for another peer): guarded routes refuse it.
        let rows = [
            ("/v1/transfer", 403),
            ("/v1/transfer/", 403),
            ("/v1/accounts/acc-1/close", 403),
            ("/v1/accounts/acc-1/close/", 403),
            ("/v1/accounts/acc-1", 200),
            ("/v1/transfers", 200),
        ];
        for (path, want) in rows {
            assert_eq!(status(path, &other).await, want, "{path}");
            assert_eq!(status(path, &frontend).await, 200, "{path}");
        }
    }
}
