//! A throwaway PKI for the demo and the tests: a CA, server certificates
//! and client X.509-SVIDs (rcgen). Used by `reference_gateway demo-certs`,
//! `tests/identity.rs` and `benches/identity.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A boxed error.
pub type CertError = Box<dyn std::error::Error + Send + Sync>;

/// A certificate authority that signs leaves.
pub struct DemoCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM): the trust bundle.
    pub pem: String,
}

/// A signed leaf: certificate and key (PEM), and the certificate's DER.
pub struct Leaf {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Private key (PEM, PKCS#8).
    pub key_pem: String,
    /// Certificate (DER).
    pub der: Vec<u8>,
}

/// What goes into a leaf.
#[derive(Clone, Debug, Default)]
pub struct LeafSpec {
    /// DNS names and IP addresses.
    pub names: Vec<String>,
    /// URI SANs (SPIFFE IDs).
    pub uris: Vec<String>,
    /// A server certificate (serverAuth EKU) rather than a client one.
    pub server: bool,
    /// Expired a year ago.
    pub expired: bool,
    /// Expires this long from now (a short-lived SVID).
    pub valid_for: Option<std::time::Duration>,
    /// Marked as a CA (basicConstraints cA=true).
    pub ca: bool,
}

impl LeafSpec {
    /// A client SVID with one SPIFFE ID.
    pub fn svid(spiffe_id: &str) -> Self {
        Self {
            uris: vec![spiffe_id.to_owned()],
            ..Self::default()
        }
    }

    /// A server certificate for `names`.
    pub fn server(names: &[&str]) -> Self {
        Self {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            server: true,
            ..Self::default()
        }
    }
}

impl DemoCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// Signs a leaf as `spec` says.
    pub fn leaf(&self, spec: &LeafSpec) -> Result<Leaf, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(spec.names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "finmesh demo");
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if spec.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if spec.ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        if spec.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        if let Some(valid_for) = spec.valid_for {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            params.not_after = rcgen::date_time_ymd(1970, 1, 1) + now + valid_for;
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }
}

impl Leaf {
    /// Writes `<dir>/<name>.pem` and `<dir>/<name>.key`; returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// The two client identities `demo-certs` writes.
pub const DEMO_CLIENTS: [(&str, &str); 2] = [
    (
        "ledger-reader",
        "spiffe://finmesh.demo/ns/tenant-a/sa/ledger-reader",
    ),
    ("intruder", "spiffe://finmesh.demo/ns/tenant-b/sa/intruder"),
];

/// Writes the demo PKI into `dir`: `ca.pem`; `server.pem`/`server.key`
/// for `localhost` and `127.0.0.1`; `ledger-reader.pem`/`.key` and
/// `intruder.pem`/`.key`. Returns the files written.
pub fn write_demo_certs(dir: &Path) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir)?;
    let ca = DemoCa::new("finmesh demo CA")?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.pem)?;
    let mut written = vec![ca_path];
    let (cert, key) = ca
        .leaf(&LeafSpec::server(&["localhost", "127.0.0.1"]))?
        .write(dir, "server")?;
    written.extend([cert, key]);
    for (name, id) in DEMO_CLIENTS {
        let (cert, key) = ca.leaf(&LeafSpec::svid(id))?.write(dir, name)?;
        written.extend([cert, key]);
    }
    Ok(written)
}
