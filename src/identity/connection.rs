//! [`ConnectionPeer`]: who is at the other end of one TLS connection, and
//! the [`PeerService`] that hands it to every request of the connection.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::IdentityCode;
use super::acceptor::Shared;
use super::check::PeerRefusal;
use super::peer::PeerIdentity;
use super::spiffe::IdentityError;
use crate::body::ResponseBody;
use crate::codes::RejectionCode;
use crate::future::ResponseFuture;

/// The peer of one accepted connection, as [`MtlsAcceptor::accept`]
/// found it. As a [`Layer`] it wraps the service that serves the
/// connection in a [`PeerService`].
///
/// [`MtlsAcceptor::accept`]: super::MtlsAcceptor::accept
#[derive(Clone)]
pub struct ConnectionPeer {
    state: PeerState,
    shared: Arc<Shared>,
}

#[derive(Clone, Debug)]
enum PeerState {
    Verified(PeerIdentity),
    Invalid(Arc<IdentityError>),
    Anonymous,
}

impl ConnectionPeer {
    pub(crate) fn verified(peer: PeerIdentity, shared: &Arc<Shared>) -> Self {
        Self {
            state: PeerState::Verified(peer),
            shared: Arc::clone(shared),
        }
    }

    pub(crate) fn invalid(error: IdentityError, shared: &Arc<Shared>) -> Self {
        Self {
            state: PeerState::Invalid(Arc::new(error)),
            shared: Arc::clone(shared),
        }
    }

    pub(crate) fn anonymous(shared: &Arc<Shared>) -> Self {
        Self {
            state: PeerState::Anonymous,
            shared: Arc::clone(shared),
        }
    }

    /// The verified identity, when the peer presented an acceptable SVID.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        match &self.state {
            PeerState::Verified(peer) => Some(peer),
            _ => None,
        }
    }

    /// Why the peer's certificate (whose chain verified) is not an
    /// acceptable SVID, when it is not.
    pub fn error(&self) -> Option<&IdentityError> {
        match &self.state {
            PeerState::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

impl std::fmt::Debug for ConnectionPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConnectionPeer").field(&self.state).finish()
    }
}

impl<S> Layer<S> for ConnectionPeer {
    type Service = PeerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerService {
            inner,
            peer: self.clone(),
        }
    }
}

/// Serves one connection: puts its [`PeerIdentity`] into every request's
/// extensions, or refuses the request (see the [module docs](super)) —
/// itself, or, with
/// [`refuse_in_stack(true)`](super::MtlsAcceptorBuilder::refuse_in_stack),
/// through the [`PeerCheckLayer`](super::PeerCheckLayer) of the
/// [`GovernanceLayer`](crate::GovernanceLayer) inside.
#[derive(Clone, Debug)]
pub struct PeerService<S> {
    inner: S,
    peer: ConnectionPeer,
}

crate::macros::inner_accessors!([S] PeerService<S>, inner: S);

impl<S, ReqB, ResB> Service<Request<ReqB>> for PeerService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let Some((code, detail)) = self.refusal(&req) else {
            if let PeerState::Verified(peer) = &self.peer.state {
                // Security: request extensions start empty for each request
                // hyper reads, so this is the only PeerIdentity there: the
                // caller cannot supply one.
                req.extensions_mut().insert(peer.clone());
            }
            return ResponseFuture::inner(self.inner.call(req));
        };
        if self.peer.shared.refuse_in_stack {
            // Security: the GovernanceLayer's PeerCheck refuses it inside
            // the stack (audited, traced); no PeerIdentity is inserted.
            req.extensions_mut().insert(PeerRefusal {
                code,
                detail: detail.into(),
            });
            return ResponseFuture::inner(self.inner.call(req));
        }
        ResponseFuture::rejected(code.reject(detail).respond(&req))
    }
}

impl<S> PeerService<S> {
    /// Why this request of the connection is refused, if it is.
    fn refusal<B>(&self, req: &Request<B>) -> Option<(IdentityCode, String)> {
        match &self.peer.state {
            // Security: the handshake checked the validity period once;
            // a keep-alive connection must not outlive the certificate.
            PeerState::Verified(peer) if peer.not_after.is_some_and(|t| t <= SystemTime::now()) => {
                Some((
                    IdentityCode::Expired,
                    "the client certificate (X.509-SVID) has expired; reconnect with a renewed one"
                        .into(),
                ))
            }
            PeerState::Verified(_) => None,
            // Security: the chain verified but the certificate names no
            // acceptable workload; every request of the connection is
            // refused with a stable code (rather than an opaque TLS alert),
            // probes included: the kubelet presents no certificate at all.
            PeerState::Invalid(error) => Some((
                IdentityCode::Invalid,
                format!("the client certificate is not an acceptable SVID: {error}"),
            )),
            PeerState::Anonymous => {
                let shared = &self.peer.shared;
                (shared.require_client_cert
                    && !super::acceptor::is_probe_path(&shared.probe_paths, req.uri().path()))
                .then(|| {
                    (
                        IdentityCode::Missing,
                        "a client certificate (X.509-SVID) is required".into(),
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::ServiceExt;

    use super::*;
    use crate::identity::{MtlsAcceptor, SpiffeId};

    fn acceptor(refuse_in_stack: bool) -> (tempfile::TempDir, MtlsAcceptor) {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let acceptor = MtlsAcceptor::builder()
            .cert_files(&cert, &key)
            .client_ca_file(&cert)
            .trust_domain("finmesh.demo")
            .refuse_in_stack(refuse_in_stack)
            .build()
            .unwrap();
        (dir, acceptor)
    }

    fn peer(not_after: SystemTime) -> PeerIdentity {
        let mut peer = PeerIdentity::new(
            SpiffeId::parse("spiffe://finmesh.demo/ns/tenant-a/sa/ledger-reader").unwrap(),
        );
        peer.not_after = Some(not_after);
        peer
    }

    /// (status, the refusal left for the stack, whether the handler saw a
    /// PeerIdentity).
    async fn call(connection: &ConnectionPeer) -> (u16, Option<String>, bool) {
        let svc = connection.layer(tower::service_fn(|req: Request<()>| async move {
            let mut res = Response::new(());
            if req.extensions().get::<PeerIdentity>().is_some() {
                res.headers_mut()
                    .insert("x-peer", http::HeaderValue::from_static("yes"));
            }
            if let Some(r) = req.extensions().get::<PeerRefusal>() {
                res.headers_mut()
                    .insert("x-refusal", http::HeaderValue::from_static(r.code.as_str()));
            }
            Ok::<_, std::convert::Infallible>(res)
        }));
        let res = svc
            .oneshot(Request::get("/v1/accounts").body(()).unwrap())
            .await
            .unwrap();
        let header = |name| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        (
            res.status().as_u16(),
            header("x-refusal"),
            header("x-peer").is_some(),
        )
    }

    #[tokio::test]
    async fn a_request_after_the_svids_not_after_is_refused_as_expired() {
        let (_dir, acceptor) = acceptor(false);
        let live = ConnectionPeer::verified(
            peer(SystemTime::now() + Duration::from_secs(3600)),
            &acceptor.shared,
        );
        assert_eq!(call(&live).await, (200, None, true));
        let expired = ConnectionPeer::verified(
            peer(SystemTime::now() - Duration::from_secs(1)),
            &acceptor.shared,
        );
        assert_eq!(call(&expired).await.0, 401);

        // Left to the stack: no PeerIdentity, the refusal beside it.
        let (_dir, acceptor) = acceptor_in_stack();
        let expired = ConnectionPeer::verified(
            peer(SystemTime::now() - Duration::from_secs(1)),
            &acceptor.shared,
        );
        assert_eq!(
            call(&expired).await,
            (200, Some("identity.expired".to_owned()), false)
        );
    }

    fn acceptor_in_stack() -> (tempfile::TempDir, MtlsAcceptor) {
        acceptor(true)
    }
}
