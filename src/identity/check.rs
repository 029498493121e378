//! [`PeerCheckLayer`]: the connection's peer refusals, inside the stack.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::IdentityCode;
use super::peer::PeerIdentity;
use crate::body::ResponseBody;
use crate::codes::RejectionCode;
use crate::future::ResponseFuture;
use crate::labels::RequestLabels;

/// Why the connection's peer may not make this request, left by a
/// [`PeerService`](super::PeerService) whose acceptor has
/// [`refuse_in_stack(true)`](super::MtlsAcceptorBuilder::refuse_in_stack)
/// for the [`PeerCheckLayer`] to answer.
#[derive(Clone, Debug)]
pub(crate) struct PeerRefusal {
    pub(crate) code: IdentityCode,
    pub(crate) detail: Arc<str>,
}

/// Refuses a request whose connection's peer was refused (a missing,
/// invalid or expired client certificate; see the [module docs](super)),
/// and labels every other request with its [`PeerIdentity`] (`peer` in
/// the span and the audit record), whether or not a token is verified
/// later.
///
/// The [`GovernanceLayer`](crate::GovernanceLayer) always contains it
/// (feature `mtls`), right inside the audit layer: its refusals are traced,
/// counted and audited like any other. It only acts on what
/// [`serve`](super::serve) put into the request, so it passes requests
/// that came another way untouched.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerCheckLayer {
    _priv: (),
}

impl PeerCheckLayer {
    /// The layer (it has no settings).
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for PeerCheckLayer {
    type Service = PeerCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerCheck { inner }
    }
}

/// The service [`PeerCheckLayer`] produces.
#[derive(Clone, Debug)]
pub struct PeerCheck<S> {
    inner: S,
}

impl<S> PeerCheck<S> {
    /// The GovernanceLayer's slot: always checking (it has no off mode).
    pub(crate) fn pass_through(inner: S) -> Self {
        Self { inner }
    }
}

crate::macros::inner_accessors!([S] PeerCheck<S>, inner: S);

impl<S, ReqB, ResB> Service<Request<ReqB>> for PeerCheck<S>
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
        if let Some(refusal) = req.extensions().get::<PeerRefusal>() {
            let rejection = refusal.code.reject(refusal.detail.to_string());
            return ResponseFuture::rejected(rejection.respond(&req));
        }
        if let (Some(peer), Some(labels)) = (
            req.extensions().get::<PeerIdentity>(),
            req.extensions().get::<RequestLabels>(),
        ) {
            // The verified connection peer, recorded whatever the token
            // turns out to be (a failed token is audited with it too).
            labels.update(|l| l.peer = Some(peer.spiffe_id.shared()));
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}
