//! [`MtlsConnector`]: the client side of mutual TLS, from the same kind of
//! rotating files, for hyper-util clients and tonic channels.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tower_service::Service;

use super::acceptor::MtlsError;
use super::files::{CertAndKey, ClientCert, ServerVerifier, provider};

/// Connects over TLS, presenting the workload's certificate (its SVID)
/// and verifying the server's chain and host name against a trust bundle.
/// The certificate, key and bundle files are watched and reloaded as on
/// the server side, so a rotated SVID is presented from the next
/// connection on.
///
/// A tower `Service<Uri>`: plug it into a hyper-util
/// [`Client`](hyper_util::client::legacy::Client) ([`hyper_client`](Self::hyper_client))
/// or a tonic channel ([`channel`](Self::channel), with the `grpc`
/// feature). ALPN offers `h2` and `http/1.1`.
#[derive(Clone)]
pub struct MtlsConnector {
    tls: tokio_rustls::TlsConnector,
}

impl MtlsConnector {
    /// Loads the client certificate chain and key (PEM) and the trust
    /// bundle (PEM) servers must chain to, and starts watching them.
    pub fn from_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca_bundle: impl AsRef<Path>,
    ) -> Result<Self, MtlsError> {
        let cert = Arc::new(CertAndKey::watch(cert.as_ref(), key.as_ref())?);
        let verifier = Arc::new(ServerVerifier::watch(ca_bundle.as_ref())?);
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(MtlsError::Tls)?
            .dangerous()
            // Not dangerous: the verifier is WebPKI's, over a reloaded bundle.
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(ClientCert(cert)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// The rustls configuration, for a transport of your own. Its
    /// certificate resolver and server verifier read the current files at
    /// each handshake.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(self.tls.config())
    }

    /// A hyper-util client that connects through this connector
    /// (`https` URIs; HTTP/2 when the server picks it by ALPN).
    pub fn hyper_client<B>(&self) -> hyper_util::client::legacy::Client<Self, B>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(self.clone())
    }

    /// A tonic channel to `endpoint` through this connector, connecting
    /// on first use.
    #[cfg(feature = "grpc")]
    pub fn channel(&self, endpoint: tonic::transport::Endpoint) -> tonic::transport::Channel {
        endpoint.connect_with_connector_lazy(self.clone())
    }
}

impl fmt::Debug for MtlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsConnector").finish_non_exhaustive()
    }
}

impl Service<Uri> for MtlsConnector {
    type Response = MtlsStream;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        // Per connection, not per request: a boxed future is fine here.
        Connecting {
            inner: Box::pin(async move {
                let host = uri.host().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "URI has no host")
                })?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = uri.port_u16().unwrap_or(443);
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tcp = TcpStream::connect((host, port)).await?;
                tcp.set_nodelay(true)?;
                let stream = tls.connect(name, tcp).await?;
                Ok(MtlsStream {
                    io: TokioIo::new(stream),
                })
            }),
        }
    }
}

/// The future of [`MtlsConnector`]'s `call`.
pub struct Connecting {
    inner: Pin<Box<dyn Future<Output = io::Result<MtlsStream>> + Send>>,
}

impl Future for Connecting {
    type Output = io::Result<MtlsStream>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for Connecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connecting").finish_non_exhaustive()
    }
}

pin_project! {
    /// A client TLS connection made by [`MtlsConnector`].
    pub struct MtlsStream {
        #[pin]
        io: TokioIo<TlsStream<TcpStream>>,
    }
}

impl fmt::Debug for MtlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsStream").finish_non_exhaustive()
    }
}

impl Connection for MtlsStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.io.inner().get_ref().1.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for MtlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MtlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}
