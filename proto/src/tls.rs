//! Mutual TLS between the parts of the network: the federation CA, rustls
//! server and client configurations, reloadable certificates, and the caller's
//! identity read from its verified certificate.
//!
//! Every identity is a URI SAN of the form `urn:urpnet:<kind>:<name>`:
//! `node:<id>` for a member, `coordinator:<name>` for a coordinator's CLI,
//! `registry:<name>` for a registry. A certificate must carry **exactly one**
//! such URI; the CN and anything in a request are never trusted.
//!
//! Servers build their [`rustls::ServerConfig`] here and accept with
//! tokio-rustls through [`incoming`], so that certificates and trust roots can
//! be replaced while the server runs ([`ReloadableTls::reload`]); tonic's own
//! TLS settings are fixed at start. The accepted [`TlsConnection`] carries a
//! [`PeerInfo`] that tonic puts in every request's extensions.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
pub use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::ids::NodeId;

/// How far back certificates' `not_before` is set: a member whose clock
/// runs behind the registry's must still accept a certificate minted a
/// moment ago (with one minute, a node five minutes slow refused every
/// peer's fresh certificate for four).
const CLOCK_SLACK: Duration = Duration::from_secs(3600);
/// Prefix of every identity URI.
pub const URN_PREFIX: &str = "urn:urpnet:";

/// Errors building TLS material or reading identities.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// PEM or DER content was not what was expected.
    #[error("{0}")]
    Invalid(String),
    /// rcgen refused to build a certificate.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn invalid(msg: impl Into<String>) -> TlsError {
    TlsError::Invalid(msg.into())
}

/// Who is at the other end of a connection, from its certificate's URI SAN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A member node (`urn:urpnet:node:<id>`).
    Node(NodeId),
    /// A coordinator's CLI (`urn:urpnet:coordinator:<name>`).
    Coordinator(String),
    /// A registry (`urn:urpnet:registry:<name>`).
    Registry(String),
}

impl Identity {
    /// The identity as the URI carried in a certificate's SAN.
    pub fn uri(&self) -> String {
        match self {
            Identity::Node(id) => format!("{URN_PREFIX}node:{id}"),
            Identity::Coordinator(name) => format!("{URN_PREFIX}coordinator:{name}"),
            Identity::Registry(name) => format!("{URN_PREFIX}registry:{name}"),
        }
    }

    /// Parses an identity URI.
    ///
    /// # Errors
    /// When the URI is not `urn:urpnet:<node|coordinator|registry>:<name>`
    /// with a valid name (`^[a-z0-9_]{2,32}$`).
    pub fn parse(uri: &str) -> Result<Self, TlsError> {
        let rest = uri
            .strip_prefix(URN_PREFIX)
            .ok_or_else(|| invalid(format!("identity `{uri}` does not start with {URN_PREFIX}")))?;
        let (kind, name) = rest
            .split_once(':')
            .ok_or_else(|| invalid(format!("identity `{uri}` has no kind")))?;
        let id = NodeId::new(name).map_err(|e| invalid(format!("identity `{uri}`: {e}")))?;
        match kind {
            "node" => Ok(Identity::Node(id)),
            "coordinator" => Ok(Identity::Coordinator(id.as_str().to_owned())),
            "registry" => Ok(Identity::Registry(id.as_str().to_owned())),
            other => Err(invalid(format!("identity `{uri}`: unknown kind `{other}`"))),
        }
    }

    /// The node id, for a node identity.
    pub fn node(&self) -> Option<&NodeId> {
        match self {
            Identity::Node(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// What a certificate says, once parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The single identity URI in its SAN.
    pub identity: Identity,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, ms since the Unix epoch.
    pub not_before_ms: u64,
    /// End of validity, ms since the Unix epoch.
    pub not_after_ms: u64,
}

/// Reads identity, serial and validity from a DER certificate.
///
/// # Errors
/// When the certificate cannot be parsed, or its SAN does not hold exactly
/// one URI, or that URI is not a valid identity.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| invalid(format!("certificate does not parse: {e}")))?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(invalid(format!("certificate SAN does not parse: {e}"))),
    };
    let [uri] = uris.as_slice() else {
        return Err(invalid(format!(
            "certificate must carry exactly one URI SAN, found {}",
            uris.len()
        )));
    };
    let identity = Identity::parse(uri)?;
    let validity = cert.validity();
    let ms = |t: i64| u64::try_from(t).unwrap_or(0) * 1000;
    Ok(CertInfo {
        identity,
        serial: hex::encode(cert.raw_serial()),
        not_before_ms: ms(validity.not_before.timestamp()),
        not_after_ms: ms(validity.not_after.timestamp()),
    })
}

/// Parses every certificate of a PEM text.
///
/// # Errors
/// When the text holds no certificate or a malformed one.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("PEM holds no certificate"));
    }
    Ok(certs)
}

fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| invalid(format!("PEM private key: {e}")))
}

/// A new private key (ECDSA P-256) in PKCS#8 PEM.
///
/// # Errors
/// If the system's random source fails.
pub fn generate_key() -> Result<String, TlsError> {
    Ok(KeyPair::generate()?.serialize_pem())
}

/// A certificate signing request for `key_pem`. Its subject is informative
/// only: the CA sets the identity.
///
/// # Errors
/// If the key does not parse.
pub fn make_csr(key_pem: &str, common_name: &str) -> Result<String, TlsError> {
    let key = KeyPair::from_pem(key_pem)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    Ok(params.serialize_request(&key)?.pem()?)
}

/// What the CA puts in a certificate besides the identity.
#[derive(Debug, Clone)]
pub struct CertRequest {
    /// The identity (URI SAN).
    pub identity: Identity,
    /// DNS names and IP addresses the holder serves on (for server use).
    pub hosts: Vec<String>,
    /// Validity from now.
    pub validity: Duration,
    /// Start of validity; `None` = one minute ago (clock skew).
    pub not_before: Option<SystemTime>,
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// What it says.
    pub info: CertInfo,
}

/// The federation CA: a self-signed root held by the registry's operator.
pub struct FederationCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for FederationCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederationCa").finish_non_exhaustive()
    }
}

impl FederationCa {
    /// A new root CA named `name`, valid for `validity`.
    ///
    /// # Errors
    /// If key generation or signing fails.
    pub fn generate(name: &str, validity: Duration) -> Result<(Self, String), TlsError> {
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "urpnet federation");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SLACK).into();
        params.not_after = (now + validity).into();
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let ca = Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, key_pem))
    }

    /// Loads a CA from its certificate and key.
    ///
    /// # Errors
    /// If either does not parse.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM: every part's trust root.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a CSR. The CSR proves possession of the key; everything else in
    /// it (subject, SAN, extensions) is ignored and replaced by `request`.
    ///
    /// # Errors
    /// If the CSR does not parse or its signature is wrong.
    pub fn sign_csr(&self, csr_pem: &str, request: &CertRequest) -> Result<Issued, TlsError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| invalid(format!("csr_pem: not a valid signed CSR ({e})")))?;
        let params = leaf_params(request)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(Issued {
            info: cert_info(cert.der())?,
            certificate_pem: cert.pem(),
        })
    }

    /// Issues a certificate with a new key made here; returns it and the key
    /// PEM. For the registry's own certificate, coordinators and tests.
    ///
    /// # Errors
    /// If key generation or signing fails.
    pub fn issue(&self, request: &CertRequest) -> Result<(Issued, String), TlsError> {
        let key = KeyPair::generate()?;
        let params = leaf_params(request)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            Issued {
                info: cert_info(cert.der())?,
                certificate_pem: cert.pem(),
            },
            key.serialize_pem(),
        ))
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte, so the hex form is stable
    SerialNumber::from_slice(&bytes)
}

fn leaf_params(request: &CertRequest) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, request.identity.uri());
    let uri = request
        .identity
        .uri()
        .try_into()
        .map_err(|_| invalid("identity is not ASCII"))?;
    params.subject_alt_names.push(SanType::URI(uri));
    for host in &request.hosts {
        if let Ok(ip) = host.parse::<IpAddr>() {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        } else {
            let name = host
                .clone()
                .try_into()
                .map_err(|_| invalid(format!("host `{host}` is not a DNS name")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    let not_before = request.not_before.unwrap_or(now - CLOCK_SLACK);
    params.not_before = not_before.into();
    params.not_after = (not_before + request.validity).into();
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// The cryptography every urpnet TLS configuration uses (ring), chosen
/// explicitly so that no other crate's choice of default can change it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The three PEM files a TLS party needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Its certificate (chain), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The federation CA, PEM: the only trust root.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// `cert.pem`, `key.pem` and `ca.pem` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
        }
    }

    fn read(path: &Path) -> Result<String, TlsError> {
        std::fs::read_to_string(path).map_err(|source| TlsError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads the three files.
    ///
    /// # Errors
    /// If a file is missing or unreadable.
    ///
    /// Each file is replaced atomically, but not the three together: a
    /// renewal writes the new key, then the new certificate. A reader in
    /// between would pair a key with another key's certificate, so the files
    /// are read again (for up to a second) until the key belongs to the
    /// certificate; material that does not parse is returned as read, for
    /// the caller's parse to report.
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let mut attempts = 0;
        loop {
            let material = TlsMaterial {
                cert_pem: Self::read(&self.cert)?,
                key_pem: Self::read(&self.key)?,
                ca_pem: Self::read(&self.ca)?,
            };
            if attempts >= 100 || !material.key_mismatch() {
                return Ok(material);
            }
            attempts += 1;
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Latest modification time of the three, to notice replacements.
    pub fn modified(&self) -> Option<SystemTime> {
        [&self.cert, &self.key, &self.ca]
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
    }

    /// Writes the three files (the key 0600), each atomically.
    ///
    /// # Errors
    /// If a file cannot be written.
    pub fn save(&self, material: &TlsMaterial) -> Result<(), TlsError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Io { path, source }
        };
        write_atomic(&self.key, material.key_pem.as_bytes(), true).map_err(io(&self.key))?;
        write_atomic(&self.cert, material.cert_pem.as_bytes(), false).map_err(io(&self.cert))?;
        write_atomic(&self.ca, material.ca_pem.as_bytes(), false).map_err(io(&self.ca))?;
        Ok(())
    }
}

/// Writes a file through a temporary sibling and a rename, so readers see
/// the old or the new content, never half of it.
///
/// # Errors
/// If the directory is not writable.
pub fn write_atomic(path: &Path, contents: &[u8], private: bool) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    if private {
        crate::signing::write_private_file(&tmp, contents)?;
    } else {
        std::fs::write(&tmp, contents)?;
    }
    std::fs::rename(&tmp, path)
}

/// A certificate, its key and the trust root, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// Certificate (chain), PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
    /// Federation CA, PEM.
    pub ca_pem: String,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert_pem", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// What the certificate says.
    ///
    /// # Errors
    /// If it does not parse or carries no single identity.
    pub fn info(&self) -> Result<CertInfo, TlsError> {
        let certs = certs_from_pem(&self.cert_pem)?;
        cert_info(&certs[0])
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certs_from_pem(&self.ca_pem)? {
            roots.add(cert)?;
        }
        Ok(Arc::new(roots))
    }

    /// A server configuration that requests a client certificate signed by
    /// the CA. A client without a certificate completes the handshake with
    /// no identity (so gRPC health stays open and every other call answers
    /// `UNAUTHENTICATED`); a certificate from another CA, expired or
    /// otherwise invalid fails the handshake.
    ///
    /// # Errors
    /// If the material does not parse.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid(format!("client verifier: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certs_from_pem(&self.cert_pem)?,
                key_from_pem(&self.key_pem)?,
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Whether the key is known not to belong to the certificate (material
    /// that does not parse is not known to mismatch).
    fn key_mismatch(&self) -> bool {
        let (Ok(certs), Ok(key)) = (certs_from_pem(&self.cert_pem), key_from_pem(&self.key_pem))
        else {
            return false;
        };
        let Ok(key) = provider().key_provider.load_private_key(key) else {
            return false;
        };
        matches!(
            rustls::sign::CertifiedKey::new(certs, key).keys_match(),
            Err(rustls::Error::InconsistentKeys(
                rustls::InconsistentKeys::KeyMismatch
            ))
        )
    }

    /// A client configuration presenting this certificate and trusting only
    /// the federation CA.
    ///
    /// # Errors
    /// If the material does not parse.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(
                certs_from_pem(&self.cert_pem)?,
                key_from_pem(&self.key_pem)?,
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A client configuration trusting `ca_pem` that presents no certificate
/// (used to show that such clients are refused, and by health probes).
///
/// # Errors
/// If the CA does not parse.
pub fn anonymous_client_config(ca_pem: &str) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem)? {
        roots.add(cert)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration that can be replaced while the server runs: each
/// new connection uses the configuration current when it arrives.
#[derive(Clone)]
pub struct ReloadableTls {
    files: Option<TlsFiles>,
    current: Arc<RwLock<(Arc<ServerConfig>, CertInfo)>>,
}

impl fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadableTls {
    /// From files, which [`ReloadableTls::reload`] reads again.
    ///
    /// # Errors
    /// If the files are missing or do not parse.
    pub fn from_files(files: TlsFiles) -> Result<Self, TlsError> {
        let material = files.load()?;
        let mut this = Self::from_material(&material)?;
        this.files = Some(files);
        Ok(this)
    }

    /// From material in memory (no reload from disk).
    ///
    /// # Errors
    /// If the material does not parse.
    pub fn from_material(material: &TlsMaterial) -> Result<Self, TlsError> {
        let config = material.server_config()?;
        Ok(Self {
            files: None,
            current: Arc::new(RwLock::new((config, material.info()?))),
        })
    }

    /// The configuration for the next connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls lock").0.clone()
    }

    /// What the server's current certificate says.
    pub fn info(&self) -> CertInfo {
        self.current.read().expect("tls lock").1.clone()
    }

    /// Re-reads the files and switches to them; on error keeps the current
    /// configuration.
    ///
    /// # Errors
    /// If the new files are missing or do not parse.
    pub fn reload(&self) -> Result<CertInfo, TlsError> {
        let Some(files) = &self.files else {
            return Ok(self.info());
        };
        self.replace(&files.load()?)
    }

    /// Switches to new material.
    ///
    /// # Errors
    /// If it does not parse.
    pub fn replace(&self, material: &TlsMaterial) -> Result<CertInfo, TlsError> {
        let config = material.server_config()?;
        let info = material.info()?;
        *self.current.write().expect("tls lock") = (config, info.clone());
        Ok(info)
    }

    /// Reloads whenever the files change (checked every `every`), until
    /// `shutdown`.
    pub async fn watch(self, every: Duration, shutdown: CancellationToken) {
        let Some(files) = self.files.clone() else {
            return;
        };
        let mut seen = files.modified();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let now = files.modified();
            if now != seen {
                seen = now;
                match self.reload() {
                    Ok(info) => tracing::info!(
                        serial = %info.serial,
                        not_after_ms = info.not_after_ms,
                        "tls certificate reloaded"
                    ),
                    Err(error) => {
                        tracing::warn!(%error, "tls reload failed; keeping the current certificate")
                    }
                }
            }
        }
    }
}

/// Who is at the other end of an accepted connection. tonic puts it in each
/// request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Remote socket address.
    pub remote: SocketAddr,
    /// The verified client certificate's identity, serial and validity;
    /// `None` when the client presented no certificate, or one without a
    /// single valid identity.
    pub cert: Option<CertInfo>,
}

/// An accepted, handshaken TLS connection.
#[derive(Debug)]
pub struct TlsConnection {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes a server runs at once (docs/security.md, T3).
pub const MAX_HANDSHAKES: usize = 128;

/// Accepts TCP connections on `listener` and yields the ones that complete a
/// TLS handshake with the configuration current at their arrival, for
/// `tonic::transport::Server::serve_with_incoming`. Handshakes run in their
/// own tasks, so a slow client never holds up the others. Refused handshakes
/// are logged and counted in `urpnet_tls_refused_total{server,reason}`.
pub fn incoming(
    listener: TcpListener,
    tls: ReloadableTls,
    server: &'static str,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConnection>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    // Handshakes in progress are bounded: past the bound, connections wait
    // in the kernel's accept queue instead of each taking a task and memory.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => return,
                permit = handshakes.clone().acquire_owned() => permit.expect("never closed"),
            };
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|der| cert_info(der));
                        let cert = match cert {
                            Some(Ok(info)) => Some(info),
                            Some(Err(error)) => {
                                refused(server, remote, "no_identity", &error.to_string());
                                None
                            }
                            None => None,
                        };
                        let info = PeerInfo { remote, cert };
                        let _ = tx
                            .send(Ok(TlsConnection {
                                inner: stream,
                                info,
                            }))
                            .await;
                    }
                    Ok(Err(error)) => {
                        let reason = refusal_reason(&error);
                        refused(server, remote, reason, &error.to_string());
                    }
                    Err(_) => refused(server, remote, "handshake_timeout", "handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn refused(server: &'static str, remote: SocketAddr, reason: &'static str, detail: &str) {
    tracing::warn!(server, %remote, reason, detail, "tls connection refused");
    metrics::counter!("urpnet_tls_refused_total", "server" => server, "reason" => reason)
        .increment(1);
}

fn refusal_reason(error: &io::Error) -> &'static str {
    use rustls::CertificateError as C;
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return "io";
    };
    match tls {
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "not_valid_yet"
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => "unknown_issuer",
        rustls::Error::InvalidCertificate(C::Revoked) => "revoked",
        rustls::Error::InvalidCertificate(C::BadSignature) => "bad_signature",
        rustls::Error::InvalidCertificate(_) => "invalid_certificate",
        rustls::Error::NoCertificatesPresented => "no_certificate",
        _ => "handshake",
    }
}

/// A lazily connecting gRPC channel to `endpoint` (`https://host:port`) over
/// TLS with `config`; the server's certificate must be valid for `host`.
///
/// # Errors
/// If the endpoint is not a valid `https://host:port` URI.
pub fn channel(
    endpoint: &str,
    config: Arc<ClientConfig>,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, TlsError> {
    connect(endpoint, config, connect_timeout, None)
}

/// Like [`channel`], but a server whose certificate does not carry
/// `expected` is refused after the handshake: two nodes behind one host
/// name (or a stale endpoint in the member list) must never be mistaken for
/// each other, since the host name alone would pass verification.
///
/// # Errors
/// If the endpoint is not a valid `https://host:port` URI.
pub fn channel_to(
    endpoint: &str,
    config: Arc<ClientConfig>,
    connect_timeout: Duration,
    expected: Identity,
) -> Result<tonic::transport::Channel, TlsError> {
    connect(
        endpoint,
        config,
        connect_timeout,
        Some(Expected::Exactly(expected)),
    )
}

/// Like [`channel_to`] for a registry: the server must carry a registry
/// identity (`urn:urpnet:registry:<name>`), which only the federation CA's
/// operator issues, so no member can pose as the registry whatever host name
/// its certificate carries.
///
/// # Errors
/// If the endpoint is not a valid `https://host:port` URI.
pub fn channel_to_registry(
    endpoint: &str,
    config: Arc<ClientConfig>,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, TlsError> {
    connect(
        endpoint,
        config,
        connect_timeout,
        Some(Expected::AnyRegistry),
    )
}

/// Whom a client requires at the other end, beyond the host name.
#[derive(Debug, Clone)]
enum Expected {
    /// Exactly this identity.
    Exactly(Identity),
    /// Any registry.
    AnyRegistry,
}

impl Expected {
    fn admits(&self, found: Option<&Identity>) -> bool {
        match self {
            Expected::Exactly(expected) => found == Some(expected),
            Expected::AnyRegistry => matches!(found, Some(Identity::Registry(_))),
        }
    }

    fn describe(&self) -> String {
        match self {
            Expected::Exactly(expected) => expected.uri(),
            Expected::AnyRegistry => format!("{URN_PREFIX}registry:<name>"),
        }
    }
}

fn connect(
    endpoint: &str,
    config: Arc<ClientConfig>,
    connect_timeout: Duration,
    expected: Option<Expected>,
) -> Result<tonic::transport::Channel, TlsError> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| invalid(format!("endpoint `{endpoint}`: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid(format!(
            "endpoint `{endpoint}`: must start with https://"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("endpoint `{endpoint}`: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let server_name =
        ServerName::try_from(host).map_err(|e| invalid(format!("endpoint `{endpoint}`: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let service = tower::service_fn(move |uri: http::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let expected = expected.clone();
        async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect((host, port)))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            tcp.set_nodelay(true)?;
            let tls = tokio::time::timeout(connect_timeout, connector.connect(server_name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            if let Some(expected) = &expected {
                let found = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|der| cert_info(der).ok())
                    .map(|info| info.identity);
                if !expected.admits(found.as_ref()) {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "the server is {}, not {}",
                            found.map_or_else(|| "without identity".to_string(), |i| i.uri()),
                            expected.describe()
                        ),
                    ));
                }
            }
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(tonic::transport::Endpoint::from(uri)
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .connect_with_connector_lazy(service))
}

/// The peer of a request, from the connection's verified certificate.
pub fn peer_of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(ca: &FederationCa) -> (String, String) {
        let (issued, key_pem) = ca
            .issue(&CertRequest {
                identity: Identity::Node(crate::ids::NodeId::new("c_c426").unwrap()),
                hosts: vec!["127.0.0.1".into()],
                validity: Duration::from_secs(3600),
                not_before: None,
            })
            .unwrap();
        (issued.certificate_pem, key_pem)
    }

    #[test]
    fn a_key_from_another_certificate_is_a_mismatch_and_load_waits_for_the_pair() {
        let (ca, _) = FederationCa::generate("test", Duration::from_secs(86_400)).unwrap();
        let (cert_a, key_a) = issue(&ca);
        let (_, key_b) = issue(&ca);
        let material = |key: &str| TlsMaterial {
            cert_pem: cert_a.clone(),
            key_pem: key.to_string(),
            ca_pem: ca.cert_pem().to_string(),
        };
        assert!(!material(&key_a).key_mismatch());
        assert!(material(&key_b).key_mismatch());
        assert!(
            !material("not a key").key_mismatch(),
            "unparsable material is left to the caller's parse"
        );

        // A reader that finds a renewal half written (the new key, the old
        // certificate) reads again until the pair matches.
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::in_dir(dir.path());
        files.save(&material(&key_b)).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let reader = {
            let files = files.clone();
            std::thread::spawn(move || {
                let loaded = files.load().unwrap();
                done_tx.send(()).unwrap();
                loaded
            })
        };
        // The reader is still waiting (it has not answered) when the
        // matching key lands.
        assert!(
            done_rx
                .recv_timeout(std::time::Duration::from_millis(100))
                .is_err()
        );
        write_atomic(&files.key, key_a.as_bytes(), true).unwrap();
        let loaded = reader.join().unwrap();
        assert_eq!(loaded.key_pem, key_a);
        assert!(!loaded.key_mismatch());
    }
}
