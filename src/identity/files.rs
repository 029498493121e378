//! Certificate, key and trust-bundle files, watched and reloaded, and the
//! rustls resolvers and verifiers that read the current version at each
//! handshake.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::{ConfigError, WatchOptions, Watched};

/// PEM files are small; anything larger is not a certificate file.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn watch<T, F>(path: &Path, parse: F) -> Result<Watched<T>, ConfigError>
where
    T: Send + Sync + 'static,
    F: Fn(&[u8]) -> Result<T, String> + Send + Sync + 'static,
{
    WatchOptions::new()
        .max_bytes(MAX_PEM_BYTES)
        .watch(path, parse)
}

fn parse_certs(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificates: not valid PEM ({e})"))?;
    if certs.is_empty() {
        return Err("certificates: no CERTIFICATE block".into());
    }
    Ok(certs)
}

/// A certificate chain file and its private key file, combined into the
/// [`CertifiedKey`] the next handshake uses.
///
/// Both files are watched; a change to either is combined with the
/// current version of the other. A combination that does not match (the
/// new certificate is there, its key not yet) is not used: the last good
/// pair stays, the failure is counted and logged, and the next change is
/// tried again.
pub(crate) struct CertAndKey {
    chain: Watched<Vec<CertificateDer<'static>>>,
    key: Watched<Arc<dyn SigningKey>>,
    current: ArcSwap<Built>,
    rebuild: Mutex<()>,
    errors: AtomicU64,
}

struct Built {
    generations: (u64, u64),
    key: Arc<CertifiedKey>,
}

impl CertAndKey {
    pub(crate) fn watch(chain: &Path, key: &Path) -> Result<Self, ConfigError> {
        let provider = provider();
        let chain = watch(chain, parse_certs)?;
        let key = watch(key, move |bytes| {
            let der = PrivateKeyDer::from_pem_slice(bytes)
                .map_err(|e| format!("private key: no usable PEM private key ({e})"))?;
            provider
                .key_provider
                .load_private_key(der)
                .map_err(|e| format!("private key: {e}"))
        })?;
        let built = combine(&chain, &key).map_err(|e| {
            ConfigError::new(
                key.path(),
                crate::config::ConfigErrorKind::Parse,
                format!("private key: does not match the certificate ({e})"),
            )
        })?;
        Ok(Self {
            chain,
            key,
            current: ArcSwap::from_pointee(built),
            rebuild: Mutex::new(()),
            errors: AtomicU64::new(0),
        })
    }

    /// The pair for a handshake starting now.
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        let generations = (self.chain.generation(), self.key.generation());
        let current = self.current.load();
        if current.generations == generations {
            return Arc::clone(&current.key);
        }
        // One handshake rebuilds; the others use the previous pair meanwhile.
        let Ok(_guard) = self.rebuild.try_lock() else {
            return Arc::clone(&current.key);
        };
        match combine(&self.chain, &self.key) {
            Ok(built) => {
                let key = Arc::clone(&built.key);
                self.current.store(Arc::new(built));
                key
            }
            Err(e) => {
                // Keep the last good pair; remember these generations so a
                // mismatch is logged once, not at every handshake.
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: "finmesh::identity",
                    cert = %self.chain.path().display(),
                    key = %self.key.path().display(),
                    error = %e,
                    "the new certificate and key do not match; keeping the last good pair"
                );
                let key = Arc::clone(&current.key);
                self.current.store(Arc::new(Built {
                    generations,
                    key: Arc::clone(&key),
                }));
                key
            }
        }
    }

    /// Failed reloads: unreadable or invalid files, and pairs that did not
    /// match.
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed) + self.chain.error_count() + self.key.error_count()
    }
}

fn combine(
    chain: &Watched<Vec<CertificateDer<'static>>>,
    key: &Watched<Arc<dyn SigningKey>>,
) -> Result<Built, rustls::Error> {
    let generations = (chain.generation(), key.generation());
    let certified = CertifiedKey::new(chain.current().to_vec(), Arc::clone(&key.current()));
    certified.keys_match()?;
    Ok(Built {
        generations,
        key: Arc::new(certified),
    })
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("chain", &self.chain.path())
            .field("key", &self.key.path())
            .finish_non_exhaustive()
    }
}

/// The server's certificate resolver: the current pair, whatever SNI.
#[derive(Debug)]
pub(crate) struct ServerCert(pub(crate) Arc<CertAndKey>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// The client's certificate resolver: always presents the current pair.
#[derive(Debug)]
pub(crate) struct ClientCert(pub(crate) Arc<CertAndKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Parses a trust bundle (PEM) into a root store; every certificate in it
/// must be usable as a trust anchor.
fn parse_bundle(bytes: &[u8]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(bytes)? {
        roots.add(cert).map_err(|e| {
            format!("trust bundle: a certificate is not a usable trust anchor ({e})")
        })?;
    }
    Ok(Arc::new(roots))
}

/// Verifies client certificates against the current trust bundle: a
/// `WebPkiClientVerifier` rebuilt from each new version of the file.
pub(crate) struct ClientVerifier {
    bundle: Watched<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
}

impl ClientVerifier {
    pub(crate) fn watch(bundle: &Path, mandatory: bool) -> Result<Self, ConfigError> {
        let provider = provider();
        let bundle = watch(bundle, move |bytes| {
            let roots = parse_bundle(bytes)?;
            // Security: the handshake verifies the chain to the bundle, the
            // validity period and the client-auth EKU whenever a
            // certificate is presented; a connection without one is let
            // through here and refused per request (`identity.missing`)
            // unless `mandatory`, so the kubelet's probes still get in.
            WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("trust bundle: {e}"))
        })?;
        Ok(Self { bundle, mandatory })
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.bundle.error_count()
    }
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("bundle", &self.bundle.path())
            .field("mandatory", &self.mandatory)
            .finish()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    // No CA hints: they would borrow from a bundle that may be replaced
    // at any moment. Clients then offer their certificate regardless.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.bundle
            .borrow()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bundle
            .borrow()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bundle
            .borrow()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.bundle.borrow().supported_verify_schemes()
    }
}

/// Verifies server certificates (chain and host name) against the
/// current trust bundle: a `WebPkiServerVerifier` rebuilt from each new
/// version of the file.
pub(crate) struct ServerVerifier {
    bundle: Watched<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl ServerVerifier {
    pub(crate) fn watch(bundle: &Path) -> Result<Self, ConfigError> {
        let provider = provider();
        let bundle = watch(bundle, move |bytes| {
            let roots = parse_bundle(bytes)?;
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| format!("trust bundle: {e}"))
        })?;
        Ok(Self { bundle })
    }
}

impl fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerVerifier")
            .field("bundle", &self.bundle.path())
            .finish()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.bundle.borrow().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bundle
            .borrow()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bundle
            .borrow()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.bundle.borrow().supported_verify_schemes()
    }
}
