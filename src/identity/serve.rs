//! [`serve`]: an accept loop that runs the mTLS handshake per connection
//! and serves HTTP/1.1 and HTTP/2 (gRPC) on it with any tower service.

use std::error::Error as StdError;
use std::future::Future;
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_layer::Layer;
use tower_service::Service;

use super::acceptor::MtlsAcceptor;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves `service` on `listener` over TLS until `shutdown` completes,
/// then stops accepting and waits for open connections to finish their
/// requests.
///
/// Each accepted connection is handshaken on its own task
/// ([`MtlsAcceptor::accept`], bounded by the handshake timeout), then
/// served with hyper-util's auto builder (HTTP/1.1 or HTTP/2 by ALPN and
/// preface, so HTTP and gRPC share the port) through a
/// [`PeerService`](super::PeerService) that puts the connection's
/// [`PeerIdentity`](super::PeerIdentity) into every request. `service` is
/// any tower service of `http::Request<hyper::body::Incoming>`: an axum
/// `Router`, tonic `Routes`, or a `GovernanceLayer` around either.
///
/// A connection whose client certificate expires is closed gracefully
/// then (requests in flight finish; later ones on it get
/// `identity.expired`).
///
/// Handshake failures (another CA, an expired certificate) and connection
/// errors are logged at debug level (target `finmesh::identity`) and end
/// only that connection.
pub async fn serve<S, B, F>(
    listener: TcpListener,
    acceptor: MtlsAcceptor,
    service: S,
    shutdown: F,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: Future<Output = ()>,
{
    // Every connection task holds a receiver: `closed()` on the sender
    // waits for the last one to finish.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let tcp = match accepted {
            Ok((tcp, _remote)) => tcp,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of
                // spinning, and keep serving the open connections.
                tracing::warn!(target: "finmesh::identity", %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let (tls, peer) = match acceptor.accept(tcp).await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(target: "finmesh::identity", %error, "TLS handshake failed");
                    return;
                }
            };
            let expires = peer.identity().and_then(|p| p.not_after);
            let service = TowerToHyperService::new(peer.layer(service));
            let mut conn = std::pin::pin!(
                builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .into_owned()
            );
            // Security: close (gracefully) when the client certificate
            // expires, so keep-alive does not outlive it; requests already
            // in flight then are refused with `identity.expired`.
            let expiry = async {
                match expires.map(|t| t.duration_since(SystemTime::now()).unwrap_or_default()) {
                    Some(left) => tokio::time::sleep(left).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                () = expiry => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            drop(stop);
            if let Err(error) = result {
                tracing::debug!(target: "finmesh::identity", %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    stop_tx.closed().await;
    Ok(())
}
