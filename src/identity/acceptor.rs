//! [`MtlsAcceptor`]: the server side of mutual TLS, from rotating files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::connection::ConnectionPeer;
use super::files::{CertAndKey, ClientVerifier, ServerCert, provider};
use super::peer::TrustDomains;
use super::spiffe::IdentityError;
use crate::config::ConfigError;

/// The paths a connection without a client certificate may still reach
/// when client certificates are required: the [`HealthLayer`]'s probes and
/// the gRPC health service, because the kubelet presents no certificate.
///
/// [`HealthLayer`]: crate::health::HealthLayer
pub const DEFAULT_PROBE_PATHS: &[&str] = &[
    "/livez",
    "/readyz",
    "/healthz",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
];

/// Whether a connection without a client certificate may reach `path`:
/// one of `probe_paths`, or one plain segment (a check name:
/// `[A-Za-z0-9._-]`, not `.` or `..`) below a one-segment probe path
/// (`/readyz/redis`).
pub(crate) fn is_probe_path(probe_paths: &[Arc<str>], path: &str) -> bool {
    probe_paths.iter().any(|probe| {
        if **probe == *path {
            return true;
        }
        // Security: no percent-encoding, empty or dot segments, nothing
        // a router could normalize into another route.
        let one_segment = probe
            .strip_prefix('/')
            .is_some_and(|p| !p.is_empty() && !p.contains('/'));
        one_segment
            && path
                .strip_prefix(&**probe)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|check| {
                    !check.is_empty()
                        && check != "."
                        && check != ".."
                        && check.len() <= 128
                        && check
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                })
    })
}

/// Accepts TLS connections with the server certificate, key and client
/// trust bundle read from files and reloaded when they change, and tells
/// who the peer is. See the [module docs](super).
///
/// Cheap to clone.
#[derive(Clone)]
pub struct MtlsAcceptor {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) tls: tokio_rustls::TlsAcceptor,
    pub(crate) config: Arc<ServerConfig>,
    cert: Arc<CertAndKey>,
    verifier: Option<Arc<ClientVerifier>>,
    pub(crate) trust_domains: TrustDomains,
    pub(crate) require_client_cert: bool,
    pub(crate) refuse_in_stack: bool,
    pub(crate) probe_paths: Vec<Arc<str>>,
    pub(crate) handshake_timeout: Duration,
}

impl MtlsAcceptor {
    /// Starts a configuration.
    pub fn builder() -> MtlsAcceptorBuilder {
        MtlsAcceptorBuilder::default()
    }

    /// The rustls configuration, for a transport of your own (ALPN `h2`
    /// and `http/1.1`). Its certificate resolver and client verifier read
    /// the current files at each handshake.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.shared.config)
    }

    /// Runs the TLS handshake on `io` (bounded by the handshake timeout)
    /// and tells who the peer is. A certificate that does not chain to the
    /// trust bundle, or is expired, fails the handshake here.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<(TlsStream<IO>, ConnectionPeer)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream =
            tokio::time::timeout(self.shared.handshake_timeout, self.shared.tls.accept(io))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
        let peer = match stream.get_ref().1.peer_certificates() {
            Some([leaf, ..]) => match self.shared.trust_domains.identify(leaf) {
                Ok(peer) => ConnectionPeer::verified(peer, &self.shared),
                Err(error) => {
                    tracing::debug!(target: "finmesh::identity", %error, "client certificate is not an acceptable SVID");
                    ConnectionPeer::invalid(error, &self.shared)
                }
            },
            _ => ConnectionPeer::anonymous(&self.shared),
        };
        Ok((stream, peer))
    }

    /// Failed reloads of the certificate, key and trust bundle files so
    /// far (the last good material stays in use).
    pub fn reload_error_count(&self) -> u64 {
        self.shared.cert.error_count()
            + self.shared.verifier.as_ref().map_or(0, |v| v.error_count())
    }
}

impl fmt::Debug for MtlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsAcceptor")
            .field("cert", &self.shared.cert)
            .field("verifier", &self.shared.verifier)
            .field("trust_domains", &self.shared.trust_domains)
            .field("require_client_cert", &self.shared.require_client_cert)
            .finish_non_exhaustive()
    }
}

/// Configures an [`MtlsAcceptor`]; [`build`](Self::build) loads the files.
#[derive(Debug, Clone)]
pub struct MtlsAcceptorBuilder {
    cert: Option<(PathBuf, PathBuf)>,
    client_ca: Option<PathBuf>,
    trust_domains: Vec<String>,
    require_client_cert: bool,
    mandatory_at_handshake: bool,
    refuse_in_stack: bool,
    probe_paths: Vec<Arc<str>>,
    handshake_timeout: Duration,
}

impl Default for MtlsAcceptorBuilder {
    fn default() -> Self {
        Self {
            cert: None,
            client_ca: None,
            trust_domains: Vec::new(),
            require_client_cert: true,
            mandatory_at_handshake: false,
            refuse_in_stack: false,
            probe_paths: DEFAULT_PROBE_PATHS.iter().map(|&p| Arc::from(p)).collect(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl MtlsAcceptorBuilder {
    /// The server's certificate chain (PEM, leaf first) and private key
    /// (PEM, PKCS#8, PKCS#1 or SEC1). Required.
    pub fn cert_files(mut self, chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.cert = Some((chain.as_ref().into(), key.as_ref().into()));
        self
    }

    /// The trust bundle (PEM) client certificates must chain to. Without
    /// it the server asks for no client certificate and no request carries
    /// a [`PeerIdentity`](super::PeerIdentity).
    pub fn client_ca_file(mut self, bundle: impl AsRef<Path>) -> Self {
        self.client_ca = Some(bundle.as_ref().into());
        self
    }

    /// Adds a trust domain whose SVIDs are accepted. With a client CA, at
    /// least one is required: deny by default.
    pub fn trust_domain(mut self, name: impl Into<String>) -> Self {
        self.trust_domains.push(name.into());
        self
    }

    /// Whether a request on a connection without a client certificate is
    /// refused with `identity.missing` (except on the probe paths). On by
    /// default; off lets such requests through without a
    /// [`PeerIdentity`](super::PeerIdentity), for bearer-token callers.
    pub fn require_client_cert(mut self, require: bool) -> Self {
        self.require_client_cert = require;
        self
    }

    /// Whether the handshake itself fails without a client certificate.
    /// Off by default, so probes get in; on suits a listener that serves
    /// no probes.
    pub fn require_client_cert_at_handshake(mut self, require: bool) -> Self {
        self.mandatory_at_handshake = require;
        self
    }

    /// Whether the refusals of the connection's peer (`identity.missing`,
    /// `identity.invalid`, `identity.expired`) are answered by the
    /// [`GovernanceLayer`](crate::GovernanceLayer) inside (its
    /// [`PeerCheckLayer`](super::PeerCheckLayer), right inside the audit
    /// layer), so that they are traced, counted and audited like any
    /// rejection. Off by default: the connection refuses them itself,
    /// before any layer runs.
    ///
    /// Security: turn it on only when every service served with this
    /// acceptor is wrapped in a `GovernanceLayer` (or a
    /// `PeerCheckLayer`); a bare router would serve such requests
    /// (without a [`PeerIdentity`](super::PeerIdentity)).
    pub fn refuse_in_stack(mut self, enable: bool) -> Self {
        self.refuse_in_stack = enable;
        self
    }

    /// The paths a connection without a client certificate may reach when
    /// certificates are required; [`DEFAULT_PROBE_PATHS`] by default. A
    /// path matches exactly, and a one-segment path (`/readyz`) also admits
    /// one check-name segment below it (`/readyz/redis`; `[A-Za-z0-9._-]`,
    /// not `.` or `..`, no percent-encoding).
    pub fn probe_paths<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.probe_paths = paths.into_iter().map(|p| Arc::from(p.as_ref())).collect();
        self
    }

    /// How long a TLS handshake may take (10 s by default).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Loads the files and starts watching them. Fails on a missing or
    /// invalid file, a key that does not match the certificate, or a
    /// client CA without a trust domain.
    pub fn build(self) -> Result<MtlsAcceptor, MtlsError> {
        let (chain, key) = self.cert.ok_or(MtlsError::Config(
            "cert_files: a certificate chain and key are required",
        ))?;
        let cert = Arc::new(CertAndKey::watch(&chain, &key)?);
        let trust_domains = TrustDomains::new(&self.trust_domains)?;
        let verifier = match &self.client_ca {
            Some(bundle) => {
                if self.trust_domains.is_empty() {
                    return Err(MtlsError::Config(
                        "trust_domain: a client CA needs at least one allowed trust domain",
                    ));
                }
                Some(Arc::new(ClientVerifier::watch(
                    bundle,
                    self.mandatory_at_handshake,
                )?))
            }
            None => None,
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(MtlsError::Tls)?;
        let builder = match &verifier {
            Some(v) => builder.with_client_cert_verifier(Arc::clone(v) as _),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(ServerCert(Arc::clone(&cert))));
        // HTTP and gRPC on one port.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Security: no session resumption. A resumed session skips the
        // client-certificate verification, so a peer whose CA was just
        // rotated out of the bundle (or whose SVID expired) would keep
        // getting in on a ticket; every connection verifies afresh.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        let config = Arc::new(config);
        Ok(MtlsAcceptor {
            shared: Arc::new(Shared {
                tls: tokio_rustls::TlsAcceptor::from(Arc::clone(&config)),
                config,
                cert,
                require_client_cert: self.require_client_cert && verifier.is_some(),
                refuse_in_stack: self.refuse_in_stack,
                verifier,
                trust_domains,
                probe_paths: self.probe_paths,
                handshake_timeout: self.handshake_timeout,
            }),
        })
    }
}

/// Why an mTLS setup could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum MtlsError {
    /// A file is missing, unreadable or invalid.
    File(ConfigError),
    /// A name (trust domain) is invalid.
    Identity(IdentityError),
    /// rustls refused the configuration.
    Tls(rustls::Error),
    /// The builder was not given what it needs.
    Config(&'static str),
}

impl fmt::Display for MtlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(e) => write!(f, "mTLS file: {e}"),
            Self::Identity(e) => write!(f, "mTLS: {e}"),
            Self::Tls(e) => write!(f, "mTLS: {e}"),
            Self::Config(e) => write!(f, "mTLS: {e}"),
        }
    }
}

impl std::error::Error for MtlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::File(e) => Some(e),
            Self::Identity(e) => Some(e),
            Self::Tls(e) => Some(e),
            Self::Config(_) => None,
        }
    }
}

impl From<ConfigError> for MtlsError {
    fn from(e: ConfigError) -> Self {
        Self::File(e)
    }
}

impl From<IdentityError> for MtlsError {
    fn from(e: IdentityError) -> Self {
        Self::Identity(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_paths_admit_one_plain_check_segment() {
        let probes: Vec<Arc<str>> = DEFAULT_PROBE_PATHS.iter().map(|&p| Arc::from(p)).collect();
        let should_pass = [
            "/livez",
            "/readyz",
            "/healthz",
            "/readyz/redis",
            "/livez/ping",
            "/healthz/audit.log_1-a",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.health.v1.Health/List",
        ];
        for path in should_pass {
            assert!(is_probe_path(&probes, path), "{path}");
        }
        let should_fail = [
            "/readyz/../v1/accounts",
            "/readyz/..",
            "/readyz/.",
            "/readyz/",
            "//readyz",
            "/readyz//redis",
            "/readyz%2F..",
            "/readyz/%2e%2e",
            "/readyz/redis/x",
            "/readyzz",
            "/v1/accounts",
            "/grpc.health.v1.Health/Check/x",
            "/grpc.health.v1.Health/Other",
            "/grpc.health.v1.Health/",
        ];
        for path in should_fail {
            assert!(!is_probe_path(&probes, path), "{path}");
        }
    }
}
