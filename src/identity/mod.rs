//! Mutual TLS with SPIFFE identities: every connection authenticated by
//! certificate, the caller's SPIFFE ID on every request as a
//! [`PeerIdentity`], certificates rotated from files without a restart.
//!
//! # Where it sits
//!
//! Before the stack, at the connection. [`serve`] accepts TCP
//! connections, runs the TLS handshake ([`MtlsAcceptor`]) and serves each
//! connection with any tower service — an axum `Router`, tonic `Routes`, a
//! [`GovernanceLayer`](crate::GovernanceLayer) around either — through a
//! [`PeerService`] that puts the connection's [`PeerIdentity`] into the
//! extensions of every request. Whatever comes after reads it from there:
//! [`JwtAuthLayer`](crate::auth::JwtAuthLayer) turns a peer
//! `spiffe://<td>/ns/<ns>/sa/<name>` without a bearer token into the
//! ServiceAccount `system:serviceaccount:<ns>:<name>` (opt-in), so RBAC
//! bindings apply unchanged; [`RequirePeerLayer`] admits only named peers
//! on chosen routes. ALPN offers `h2` and `http/1.1`, so HTTP and gRPC
//! share the port.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use finmesh::identity::{MtlsAcceptor, MtlsConnector, PeerIdentity, serve};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Empty, Full};
//! use bytes::Bytes;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer, KeyPair, KeyUsagePurpose as Ku, SanType};
//! # let dir = tempfile::tempdir()?;
//! # let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem);
//! # let ca_key = KeyPair::generate()?;
//! # let mut ca = CertificateParams::new(Vec::<String>::new())?;
//! # ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
//! # ca.key_usages = vec![Ku::KeyCertSign, Ku::DigitalSignature];
//! # write("ca.pem", ca.self_signed(&ca_key)?.pem())?;
//! # let issuer = Issuer::new(ca, ca_key);
//! # let leaf = |sans: Vec<String>, uri: Option<&str>, eku, name: &str| -> Result<(), Box<dyn std::error::Error>> {
//! #     let key = KeyPair::generate()?;
//! #     let mut p = CertificateParams::new(sans)?;
//! #     if let Some(uri) = uri { p.subject_alt_names.push(SanType::URI(uri.try_into()?)); }
//! #     p.key_usages = vec![Ku::DigitalSignature];
//! #     p.extended_key_usages = vec![eku];
//! #     write(&format!("{name}.pem"), p.signed_by(&key, &issuer)?.pem())?;
//! #     write(&format!("{name}.key"), key.serialize_pem())?;
//! #     Ok(())
//! # };
//! # leaf(vec!["localhost".into()], None, Eku::ServerAuth, "server")?;
//! # leaf(vec![], Some("spiffe://finmesh.demo/ns/payments/sa/frontend"), Eku::ClientAuth, "client")?;
//! # let path = |name: &str| dir.path().join(name);
//! // Files a SPIRE agent or cert-manager keeps fresh: watched and reloaded.
//! let acceptor = MtlsAcceptor::builder()
//!     .cert_files(path("server.pem"), path("server.key"))
//!     .client_ca_file(path("ca.pem"))
//!     .trust_domain("finmesh.demo")
//!     .build()?;
//!
//! let app = tower::service_fn(|req: Request<hyper::body::Incoming>| async move {
//!     let peer = req.extensions().get::<PeerIdentity>().unwrap();
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(peer.spiffe_id.to_string()))))
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = listener.local_addr()?.port();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(listener, acceptor, app, async { let _ = stopped.await; }));
//!
//! // The client side: its own SVID, the same kind of rotating files.
//! let client = MtlsConnector::from_files(path("client.pem"), path("client.key"), path("ca.pem"))?
//!     .hyper_client::<Empty<Bytes>>();
//! let res = client.get(format!("https://localhost:{port}/").parse()?).await?;
//! let body = res.into_body().collect().await?.to_bytes();
//! assert_eq!(body, "spiffe://finmesh.demo/ns/payments/sa/frontend");
//! # let _ = stop.send(());
//! # server.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # What is checked, where
//!
//! | case | where | outcome |
//! |---|---|---|
//! | chain not to the trust bundle, expired, not yet valid, no client-auth EKU | handshake (rustls WebPKI verifier) | TLS alert, no request is read |
//! | chain fine, but not an acceptable X.509-SVID (no or several URI SANs, malformed SPIFFE ID, empty path, CA leaf, no `digitalSignature`), or trust domain not allowed | every request of the connection | 401 / `UNAUTHENTICATED`, `identity.invalid` |
//! | no client certificate, certificates required | every request but the probe paths | 401 / `UNAUTHENTICATED`, `identity.missing` |
//! | the client certificate's `notAfter` passed on an open connection | the connection is closed gracefully; requests still arriving on it | 401 / `UNAUTHENTICATED`, `identity.expired` |
//! | (with [`refuse_in_stack(true)`](MtlsAcceptorBuilder::refuse_in_stack): the three above) | answered by the [`GovernanceLayer`](crate::GovernanceLayer)'s [`PeerCheckLayer`], inside the audit layer | audited and traced like any rejection |
//! | peer not among those a route admits ([`RequirePeerLayer`]) | that route | 403 / `PERMISSION_DENIED`, `identity.peer_denied` |
//!
//! Why the SPIFFE checks are not a TLS alert: a chain the bundle vouches
//! for is a certificate our own CA issued, so what is wrong with it is a
//! deployment mistake best reported with a stable code and a detail naming
//! the field, which a client sees, logs and alerts on; an alert at the
//! handshake only says "bad certificate". The cryptographic question —
//! does it chain to a trusted root, is it in date — is answered at the
//! handshake, where nothing of the caller's reaches a service.
//!
//! One trust bundle verifies the chains of every allowed trust domain:
//! any CA in it may sign SPIFFE IDs in any of them (there are no
//! per-trust-domain bundles yet). Put only CAs trusted for every allowed
//! domain in the bundle; ServiceAccounts are mapped only for home trust
//! domains (`JwtAuthBuilder::service_accounts_from_peer_in`, feature `auth`).
//!
//! # Probes
//!
//! The kubelet presents no client certificate. The handshake therefore
//! *asks* for a certificate and verifies any that is presented, but
//! accepts a connection without one; requests on such a connection are
//! refused with `identity.missing` unless their path is a probe path
//! ([`DEFAULT_PROBE_PATHS`]: `/livez`, `/readyz`, `/healthz` and the
//! `grpc.health.v1` methods Check, Watch and List, which the outermost
//! [`HealthLayer`](crate::health::HealthLayer) answers) or one check-name
//! segment below `/livez`, `/readyz`, `/healthz` (`/readyz/redis`; no
//! `..`, empty segment or percent-encoding).
//! [`require_client_cert_at_handshake(true)`](MtlsAcceptorBuilder::require_client_cert_at_handshake)
//! refuses such connections at the handshake instead, for a listener
//! that serves no probes.
//!
//! # Rotation
//!
//! The certificate chain, key and trust bundle are each a
//! [`config::Watched`](crate::config::Watched) file: their directory is
//! watched, so in-place writes, renames and the Kubernetes `..data`
//! symlink swap are seen, and a new version is read within the debounce
//! window (100 ms). Each handshake takes the current version: new
//! connections use new material at once; open connections are not
//! touched. A file that cannot be read or parsed, or a certificate whose
//! key has not arrived yet, never replaces the last good material: the
//! failure is logged and counted ([`MtlsAcceptor::reload_error_count`]).
//!
//! # Codes
//!
//! | code | HTTP | gRPC |
//! |---|---|---|
//! | `identity.missing` | 401 | 16 `UNAUTHENTICATED` |
//! | `identity.invalid` | 401 | 16 `UNAUTHENTICATED` |
//! | `identity.expired` | 401 | 16 `UNAUTHENTICATED` |
//! | `identity.peer_denied` | 403 | 7 `PERMISSION_DENIED` |
//!
//! # Parsing entry points
//!
//! [`SpiffeId::parse`] and [`PeerIdentity::from_der`] bound their input
//! and return an [`IdentityError`] naming the field at fault; they never
//! panic (fuzz targets call them directly).

mod acceptor;
mod check;
mod client;
mod codes;
mod connection;
mod files;
mod peer;
mod require;
mod serve;
mod spiffe;

pub use acceptor::{DEFAULT_PROBE_PATHS, MtlsAcceptor, MtlsAcceptorBuilder, MtlsError};
pub use check::{PeerCheck, PeerCheckLayer};
pub use client::{Connecting, MtlsConnector, MtlsStream};
pub use codes::IdentityCode;
pub use connection::{ConnectionPeer, PeerService};
pub use peer::{MAX_CERT_LEN, PeerIdentity, TrustDomains};
pub use require::{RequirePeer, RequirePeerLayer};
pub use serve::serve;
pub use spiffe::{IdentityError, MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN, SpiffeId};
