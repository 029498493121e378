//! [`RequirePeerLayer`]: routes only certain peers may call.

use std::collections::HashMap;
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
/// Routes are exact paths: a gRPC method (`/pkg.Service/Method`) or an
/// HTTP path. It complements RBAC, which authorizes the *principal* (the
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
    routes: Arc<HashMap<String, Vec<SpiffeId>>>,
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
        Arc::make_mut(&mut self.routes)
            .entry(path.into())
            .or_default()
            .extend(peers);
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
    routes: Arc<HashMap<String, Vec<SpiffeId>>>,
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
        if let Some(allowed) = self.routes.get(req.uri().path()) {
            // Security: only the PeerIdentity the connection's verified
            // handshake inserted counts; deny when there is none.
            let admitted = req
                .extensions()
                .get::<PeerIdentity>()
                .is_some_and(|peer| allowed.contains(&peer.spiffe_id));
            if !admitted {
                let rejection = IdentityCode::PeerDenied
                    .reject("this route does not admit the calling workload");
                return ResponseFuture::rejected(rejection.respond(&req));
            }
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}
