//! TLS termination (`-E -K -G -A -R -L -Z`, `ssl_*` commands) on rustls with the ring provider.
//!
//! A [`Terminator`] is built from [`TlsConfig`] by reading every file it names once
//! ([`Terminator::load`]); it then serves handshakes without touching the file system. The
//! daemon keeps the current one in [`Handles::tls`](crate::proxy::Handles) and replaces it on
//! SIGHUP or when the `ssl_*` settings or the files change ([`reload`], [`watch`]); open
//! connections keep the configuration they started with.
//!
//! Each handshake first reads the ClientHello, then picks a rustls `ServerConfig` by SNI
//! (`ssl_sni_path DIR`: `name.crt` + `name.key`, optional `name.ca` and `name.ocsp`), falling
//! back to the `-E`/`-K` certificate. Backends stay plaintext, as in C Pen.
//!
//! What rustls cannot express (documented in the README):
//! - SSLv2, SSLv3, TLS 1.0 and 1.1 do not exist in rustls: `-L ssl2|ssl3` and `-L tls1` give
//!   TLS 1.2 and 1.3 (C Pen always used `SSLv23_method` underneath too), `ssl_option
//!   no_sslv2|no_sslv3|no_tlsv1|no_tlsv1.1` are already in force, `no_tlsv1.2` leaves TLS 1.3.
//! - `-Z` (OpenSSL's bug workarounds, `SSL_OP_ALL`) has nothing to switch on.
//! - `ssl_ciphers` takes OpenSSL or IANA suite names of the suites rustls has; keywords
//!   (`HIGH`, `!aNULL`, ...) are ignored. It restricts TLS 1.2 suites only, as OpenSSL's
//!   cipher list does; an empty result keeps rustls's defaults (all of them strong).
//! - `ssl_client_renegotiation_interval` is accepted: rustls never renegotiates (TLS 1.3 has
//!   no renegotiation; TLS 1.2 renegotiation requests are refused), so there is nothing to rate
//!   limit.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use crate::config::{SslProtocol, TlsConfig};
use crate::proxy::{SharedState, lock};

/// How long a client may take to complete the TLS handshake before pen closes it.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions remembered for resumption (shared by every configuration and across reloads).
const SESSION_CACHE: usize = 4096;

/// A TLS set-up error: which file or setting, and why. Displays one line; the cause (the OS
/// error, the PEM error, rustls's error) is kept as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// TLS was asked for without `-E`.
    #[error(
        "pen: TLS needs a certificate: give -E cert.pem (and -K key.pem unless the key is in the same file)"
    )]
    NoCertificateGiven,
    /// A file or directory could not be read. `what` is the option that names it.
    #[error("pen: {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A PEM file that does not parse; `hint` says where the key was looked for.
    #[error("pen: {what} {}: bad PEM: {source}{hint}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file without a certificate.
    #[error(
        "pen: {what} {}: no certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks)",
        path.display()
    )]
    NoCertificate { what: &'static str, path: PathBuf },
    /// A key file without a key.
    #[error(
        "pen: {what} {}: no private key found (expected a PEM PKCS#8, PKCS#1 RSA or SEC1 EC key){hint}",
        path.display()
    )]
    NoKey {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    /// The key is not the certificate's.
    #[error("pen: {what} {} does not fit certificate {}: {source}", key.display(), cert.display())]
    KeyMismatch {
        what: &'static str,
        key: PathBuf,
        cert: PathBuf,
        #[source]
        source: Box<rustls::Error>,
    },
    /// An OCSP response file that is not DER.
    #[error(
        "pen: {what} {}: not a DER OCSP response (expected the binary response as `openssl ocsp -respout` writes it)",
        path.display()
    )]
    NotOcsp { what: &'static str, path: PathBuf },
    /// A CA certificate rustls cannot use.
    #[error("pen: {what} {}: unusable CA certificate: {source}", path.display())]
    BadCa {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Box<rustls::Error>,
    },
    /// `-A` names a directory without a CA certificate.
    #[error("pen: -A {}: no PEM CA certificate found in the directory", dir.display())]
    NoCaInDir { dir: PathBuf },
    /// An `ssl_sni_path` certificate without its key file.
    #[error("pen: ssl_sni_path: {} has no key: expected {}", crt.display(), key.display())]
    SniNoKey { crt: PathBuf, key: PathBuf },
    /// The configuration for `-E` could not be built.
    #[error("pen: TLS set-up with -E {}: {source}", cert.display())]
    Setup {
        cert: PathBuf,
        #[source]
        source: SetupError,
    },
    /// The configuration for an `ssl_sni_path` name could not be built.
    #[error("pen: TLS set-up for SNI name {name} ({}): {source}", crt.display())]
    SniSetup {
        name: String,
        crt: PathBuf,
        #[source]
        source: SetupError,
    },
}

/// Why a server configuration could not be built from usable certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The protocol versions left by the options.
    #[error("{0}")]
    Versions(#[source] Box<rustls::Error>),
    /// `-R` without `-G`/`-A`.
    #[error("-R needs the CAs that sign client certificates: give -G cafile or -A cadir")]
    NoClientCas,
    /// The client certificate verifier refused the CAs.
    #[error("client certificate verifier: {0}")]
    Verifier(#[source] Box<rustls::server::VerifierBuilderError>),
}

/// Whether `cfg` asks for TLS termination (`-E` given).
pub fn enabled(cfg: &TlsConfig) -> bool {
    cfg.cert.is_some()
}

/// The size and modification time of a file read at load time (to notice replaced files).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
}

impl Stamp {
    fn of(path: &Path) -> Stamp {
        Stamp {
            path: path.to_path_buf(),
            seen: stat(path),
        }
    }

    fn changed(&self) -> bool {
        stat(&self.path) != self.seen
    }
}

fn stat(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The loaded TLS configuration: one rustls `ServerConfig` for the default certificate and one
/// per SNI name.
#[derive(Debug)]
pub struct Terminator {
    default: Arc<ServerConfig>,
    by_name: HashMap<String, Arc<ServerConfig>>,
    source: TlsConfig,
    stamps: Vec<Stamp>,
}

/// Always serves one certificate (the name was chosen before the handshake).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl Terminator {
    /// Reads the certificates, keys, CA files and OCSP responses `cfg` names and builds the
    /// configurations. Errors name the file and the reason.
    pub fn load(cfg: &TlsConfig) -> Result<Terminator, TlsError> {
        let Some(cert) = &cfg.cert else {
            return Err(TlsError::NoCertificateGiven);
        };
        let mut stamps = Vec::new();
        let provider = Arc::new(provider(cfg));
        let versions = versions(cfg);
        let global_roots = client_roots(cfg, &mut stamps)?;
        let key_file = cfg.key.as_deref().unwrap_or(cert);
        let ocsp = match &cfg.ocsp_response {
            Some(p) => Some(read_ocsp(p, "ssl_ocsp_response", &mut stamps)?),
            None => None,
        };
        let key = certified_key(cert, "-E", key_file, "-K", ocsp, &provider, &mut stamps)?;
        let default = server_config(cfg, &provider, &versions, key, global_roots.clone()).map_err(
            |source| TlsError::Setup {
                cert: cert.clone(),
                source,
            },
        )?;
        let mut by_name = HashMap::new();
        if let Some(dir) = &cfg.sni_path {
            for (name, files) in sni_entries(dir)? {
                let ocsp = match &files.ocsp {
                    Some(p) => Some(read_ocsp(p, "ssl_sni_path", &mut stamps)?),
                    None => None,
                };
                let key = certified_key(
                    &files.crt,
                    "ssl_sni_path",
                    &files.key,
                    "ssl_sni_path",
                    ocsp,
                    &provider,
                    &mut stamps,
                )?;
                let roots = match &files.ca {
                    Some(ca) => {
                        let mut store = RootCertStore::empty();
                        add_ca_file(&mut store, ca, "ssl_sni_path", &mut stamps)?;
                        Some(Arc::new(store))
                    }
                    None => global_roots.clone(),
                };
                let sc =
                    server_config(cfg, &provider, &versions, key, roots).map_err(|source| {
                        TlsError::SniSetup {
                            name: name.clone(),
                            crt: files.crt.clone(),
                            source,
                        }
                    })?;
                by_name.insert(name, sc);
            }
            stamps.push(Stamp::of(dir));
        }
        Ok(Terminator {
            default,
            by_name,
            source: cfg.clone(),
            stamps,
        })
    }

    /// The configuration for a ClientHello's server name (SNI), or the default one.
    pub fn config_for(&self, sni: Option<&str>) -> Arc<ServerConfig> {
        sni.map(str::to_ascii_lowercase)
            .and_then(|n| self.by_name.get(n.trim_end_matches('.')).cloned())
            .unwrap_or_else(|| self.default.clone())
    }

    /// The SNI names with their own certificate, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_name.keys().cloned().collect();
        v.sort();
        v
    }

    /// The settings this was built from.
    pub fn source(&self) -> &TlsConfig {
        &self.source
    }

    /// Whether a file read at load time has been replaced, changed or removed since.
    pub fn files_changed(&self) -> bool {
        self.stamps.iter().any(Stamp::changed)
    }

    /// Runs the server side of a handshake on `io` (bounded by [`HANDSHAKE_TIMEOUT`]): reads
    /// the ClientHello, picks the configuration by SNI, completes the handshake.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = async {
            let acceptor =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
            let start = acceptor.await?;
            let config = self.config_for(start.client_hello().server_name());
            start.into_stream(config).await
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake took longer than {HANDSHAKE_TIMEOUT:?}"),
            )),
        }
    }
}

/// Non-fatal remarks about `cfg`: settings rustls cannot honour. Pure.
pub fn warnings(cfg: &TlsConfig) -> Vec<String> {
    let mut w = Vec::new();
    match cfg.protocol {
        SslProtocol::Ssl2 | SslProtocol::Ssl3 => w.push(format!(
            "-L {}: rustls has no SSLv2/SSLv3; TLS 1.2 and 1.3 are offered",
            cfg.protocol.as_str()
        )),
        SslProtocol::Tls1 | SslProtocol::Ssl23 => {}
    }
    if cfg.compat {
        w.push("-Z: OpenSSL bug workarounds do not exist in rustls; ignored".into());
    }
    if !cfg.require_client_cert && (cfg.ca_file.is_some() || cfg.ca_dir.is_some()) {
        w.push(
            "-G/-A without -R: client certificates are not requested (add -R to require them)"
                .into(),
        );
    }
    if let Some(c) = &cfg.ciphers {
        let (_, unknown) = parse_ciphers(c);
        if !unknown.is_empty() {
            w.push(format!(
                "ssl_ciphers: ignoring {} (rustls suites are {})",
                unknown.join(", "),
                suite_names().join(", ")
            ));
        }
    }
    w
}

/// The ring provider restricted by `ssl_ciphers` (TLS 1.2 suites only; TLS 1.3 suites stay
/// unless some are named).
fn provider(cfg: &TlsConfig) -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(c) = &cfg.ciphers {
        let (named, _) = parse_ciphers(c);
        if !named.is_empty() {
            let named_13 = named
                .iter()
                .any(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
            let named_12 = named
                .iter()
                .any(|s| matches!(s, SupportedCipherSuite::Tls12(_)));
            p.cipher_suites.retain(|s| match s {
                SupportedCipherSuite::Tls13(_) if !named_13 => true,
                SupportedCipherSuite::Tls12(_) if !named_12 => true,
                _ => named.iter().any(|n| n.suite() == s.suite()),
            });
        }
    }
    p
}

/// OpenSSL names of rustls's suites (IANA names are matched through rustls itself).
const OPENSSL_NAMES: &[(&str, &str)] = &[
    ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
    ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

fn suite_name(s: &SupportedCipherSuite) -> String {
    s.suite().as_str().map_or_else(
        || format!("{:?}", s.suite()),
        std::string::ToString::to_string,
    )
}

fn suite_names() -> Vec<String> {
    rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .map(suite_name)
        .collect()
}

/// Splits an OpenSSL cipher string into the rustls suites it names and the items that are
/// not suite names (keywords, exclusions, unknown suites). Pure.
pub fn parse_ciphers(s: &str) -> (Vec<SupportedCipherSuite>, Vec<String>) {
    let mut named = Vec::new();
    let mut other = Vec::new();
    for item in s
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let upper = item.to_ascii_uppercase();
        let iana = OPENSSL_NAMES
            .iter()
            .find(|(o, _)| *o == upper)
            .map_or(upper.as_str(), |(_, i)| i);
        match rustls::crypto::ring::ALL_CIPHER_SUITES
            .iter()
            .find(|s| suite_name(s) == iana)
        {
            Some(s) => {
                if !named
                    .iter()
                    .any(|n: &SupportedCipherSuite| n.suite() == s.suite())
                {
                    named.push(*s);
                }
            }
            None => other.push(item.to_string()),
        }
    }
    (named, other)
}

/// TLS versions: 1.3 and 1.2, minus 1.2 with `ssl_option no_tlsv1.2`.
fn versions(cfg: &TlsConfig) -> Vec<&'static SupportedProtocolVersion> {
    if cfg.options.iter().any(|o| o == "no_tlsv1.2") {
        vec![&rustls::version::TLS13]
    } else {
        vec![&rustls::version::TLS13, &rustls::version::TLS12]
    }
}

fn session_cache() -> Arc<dyn rustls::server::StoresServerSessions> {
    static CACHE: OnceLock<Arc<rustls::server::ServerSessionMemoryCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE))
        .clone()
}

/// One ticketer for the process, so that tickets survive reloads. `None` if ring cannot
/// make one (then resumption uses the session cache only).
fn ticketer() -> Option<Arc<dyn rustls::server::ProducesTickets>> {
    static T: OnceLock<Option<Arc<dyn rustls::server::ProducesTickets>>> = OnceLock::new();
    T.get_or_init(|| rustls::crypto::ring::Ticketer::new().ok())
        .clone()
}

fn server_config(
    cfg: &TlsConfig,
    provider: &Arc<CryptoProvider>,
    versions: &[&'static SupportedProtocolVersion],
    key: CertifiedKey,
    roots: Option<Arc<RootCertStore>>,
) -> Result<Arc<ServerConfig>, SetupError> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| SetupError::Versions(Box::new(e)))?;
    let builder = if cfg.require_client_cert {
        let Some(roots) = roots else {
            return Err(SetupError::NoClientCas);
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| SetupError::Verifier(Box::new(e)))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut sc = builder.with_cert_resolver(Arc::new(Fixed(Arc::new(key))));
    sc.ignore_client_order = cfg.options.iter().any(|o| o == "cipher_server_preference");
    sc.session_storage = session_cache();
    if let Some(t) = ticketer() {
        sc.ticketer = t;
    }
    Ok(Arc::new(sc))
}

fn read_file(
    path: &Path,
    what: &'static str,
    stamps: &mut Vec<Stamp>,
) -> Result<Vec<u8>, TlsError> {
    stamps.push(Stamp::of(path));
    std::fs::read(path).map_err(read_err(what, path))
}

/// `map_err` for an OS error reading `path`, named by option `what`.
fn read_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Read { what, path, source }
}

fn read_ocsp(
    path: &Path,
    what: &'static str,
    stamps: &mut Vec<Stamp>,
) -> Result<Vec<u8>, TlsError> {
    let der = read_file(path, what, stamps)?;
    // An OCSPResponse is a DER SEQUENCE; a PEM or text file here is a mistake.
    if der.first() != Some(&0x30) {
        return Err(TlsError::NotOcsp {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(der)
}

fn certs_in(
    pem: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|source| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        hint: "",
        source,
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
fn certified_key(
    cert: &Path,
    cert_what: &'static str,
    key: &Path,
    key_what: &'static str,
    ocsp: Option<Vec<u8>>,
    provider: &CryptoProvider,
    stamps: &mut Vec<Stamp>,
) -> Result<CertifiedKey, TlsError> {
    let chain = certs_in(&read_file(cert, cert_what, stamps)?, cert, cert_what)?;
    let key_pem = if key == cert {
        std::fs::read(key).map_err(read_err(key_what, key))?
    } else {
        read_file(key, key_what, stamps)?
    };
    let hint = if key == cert {
        " (no -K given, so the key was looked for in the -E file)"
    } else {
        ""
    };
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            what: key_what,
            path: key.to_path_buf(),
            hint,
        },
        source => TlsError::Pem {
            what: key_what,
            path: key.to_path_buf(),
            hint,
            source,
        },
    })?;
    let mut ck =
        CertifiedKey::from_der(chain, der, provider).map_err(|source| TlsError::KeyMismatch {
            what: key_what,
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
            source: Box::new(source),
        })?;
    ck.ocsp = ocsp;
    Ok(ck)
}

fn add_ca_file(
    store: &mut RootCertStore,
    path: &Path,
    what: &'static str,
    stamps: &mut Vec<Stamp>,
) -> Result<(), TlsError> {
    let pem = read_file(path, what, stamps)?;
    for c in certs_in(&pem, path, what)? {
        store.add(c).map_err(|source| TlsError::BadCa {
            what,
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// The CAs for client certificates from `-G` and `-A` (every certificate file in the
/// directory, as OpenSSL's hashed directories hold them). `None` when neither is given.
fn client_roots(
    cfg: &TlsConfig,
    stamps: &mut Vec<Stamp>,
) -> Result<Option<Arc<RootCertStore>>, TlsError> {
    if cfg.ca_file.is_none() && cfg.ca_dir.is_none() {
        return Ok(None);
    }
    let mut store = RootCertStore::empty();
    if let Some(f) = &cfg.ca_file {
        add_ca_file(&mut store, f, "-G", stamps)?;
    }
    if let Some(dir) = &cfg.ca_dir {
        let entries = std::fs::read_dir(dir).map_err(read_err("-A", dir))?;
        let mut found = 0usize;
        for entry in entries.flatten() {
            let p = entry.path();
            let Ok(pem) = std::fs::read(&p) else { continue };
            for c in CertificateDer::pem_slice_iter(&pem).flatten() {
                if store.add(c).is_ok() {
                    found += 1;
                }
            }
        }
        if found == 0 {
            return Err(TlsError::NoCaInDir { dir: dir.clone() });
        }
        stamps.push(Stamp::of(dir));
    }
    Ok(Some(Arc::new(store)))
}

/// The files of one SNI name in `ssl_sni_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniFiles {
    pub crt: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub ocsp: Option<PathBuf>,
}

/// Scans `dir` for `name.crt` files; each needs `name.key`; `name.ca` and `name.ocsp` are
/// optional. Names are lower-cased.
pub fn sni_entries(dir: &Path) -> Result<Vec<(String, SniFiles)>, TlsError> {
    let entries = std::fs::read_dir(dir).map_err(read_err("ssl_sni_path", dir))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().and_then(|e| e.to_str()) != Some("crt") {
            continue;
        }
        let Some(name) = p.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let key = p.with_extension("key");
        if !key.exists() {
            return Err(TlsError::SniNoKey { crt: p, key });
        }
        let opt = |ext: &str| Some(p.with_extension(ext)).filter(|f| f.exists());
        out.push((
            name.to_ascii_lowercase(),
            SniFiles {
                crt: p.clone(),
                key,
                ca: opt("ca"),
                ocsp: opt("ocsp"),
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Builds the terminator for the daemon at start-up (`None` without `-E`), logging
/// [`warnings`].
pub fn startup(cfg: &TlsConfig) -> Result<Option<Arc<Terminator>>, TlsError> {
    if !enabled(cfg) {
        return Ok(None);
    }
    for w in warnings(cfg) {
        tracing::warn!("{w}");
    }
    let t = Terminator::load(cfg)?;
    tracing::info!(
        "TLS termination with {}{}",
        cfg.cert
            .as_ref()
            .map_or_else(String::new, |c| c.display().to_string()),
        if t.by_name.is_empty() {
            String::new()
        } else {
            format!("; SNI names {}", t.names().join(", "))
        }
    );
    Ok(Some(Arc::new(t)))
}

/// Re-reads the TLS files for the configuration in force and swaps the result in. On error
/// the previous configuration stays (and the error is returned for the log). Connections in
/// progress are not touched.
pub fn reload(shared: &SharedState) -> Result<(), TlsError> {
    let cfg = lock(shared).config.tls.clone();
    let next = if enabled(&cfg) {
        Some(Arc::new(Terminator::load(&cfg)?))
    } else {
        None
    };
    lock(shared).io.tls = next;
    Ok(())
}

/// Every file or directory `cfg` names (a path that does not exist yet is watched too).
fn named_paths(cfg: &TlsConfig) -> Vec<&Path> {
    [
        &cfg.cert,
        &cfg.key,
        &cfg.ca_file,
        &cfg.ca_dir,
        &cfg.sni_path,
        &cfg.ocsp_response,
    ]
    .into_iter()
    .flatten()
    .map(PathBuf::as_path)
    .collect()
}

/// Reloads when the `ssl_*` settings change (a `-F` re-read, the control socket, a repeated
/// `ssl_ocsp_response`) or a file that was read changes on disk; checks every `every`. Runs
/// forever (spawn it).
pub async fn watch(shared: SharedState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (cfg, current) = {
            let g = lock(&shared);
            (g.config.tls.clone(), g.io.tls.clone())
        };
        let stale = match &current {
            Some(t) => t.source != cfg || t.files_changed(),
            None => enabled(&cfg),
        };
        if !stale {
            continue;
        }
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || reload(&s)).await {
            Ok(Ok(())) => tracing::info!("TLS configuration reloaded"),
            Ok(Err(e)) => {
                tracing::warn!("TLS reload failed, keeping the previous configuration: {e}");
                // Do not retry the same broken state every tick: the configuration in force
                // is marked as built from these settings and the files as they are now, so
                // the next change (or SIGHUP) tries again. Unless a SIGHUP reload replaced
                // it meanwhile.
                let mut g = lock(&shared);
                if let (Some(t), Some(before)) = (&g.io.tls, &current)
                    && Arc::ptr_eq(t, before)
                {
                    let mut paths: Vec<&Path> = t.stamps.iter().map(|s| s.path.as_path()).collect();
                    paths.extend(named_paths(&cfg));
                    let stamps = paths.into_iter().map(Stamp::of).collect();
                    let same = Terminator {
                        default: t.default.clone(),
                        by_name: t.by_name.clone(),
                        source: cfg.clone(),
                        stamps,
                    };
                    g.io.tls = Some(Arc::new(same));
                }
            }
            Err(e) => tracing::warn!("TLS reload task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_and_iana_cipher_names_select_rustls_suites() {
        let (named, other) = parse_ciphers(
            "ECDHE-RSA-AES128-GCM-SHA256:TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:HIGH:!aNULL",
        );
        let names: Vec<String> = named.iter().map(suite_name).collect();
        assert_eq!(
            names,
            [
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
            ]
        );
        assert_eq!(other, ["HIGH", "!aNULL"]);
    }

    #[test]
    fn cipher_list_restricts_tls12_and_keeps_tls13_suites() {
        let cfg = TlsConfig {
            ciphers: Some("ECDHE-RSA-AES256-GCM-SHA384".into()),
            ..TlsConfig::default()
        };
        let p = provider(&cfg);
        let t12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(suite_name)
            .collect();
        assert_eq!(t12, ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]);
        assert_eq!(
            p.cipher_suites
                .iter()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
                .count(),
            3
        );
        let keywords_only = TlsConfig {
            ciphers: Some("HIGH:!aNULL".into()),
            ..TlsConfig::default()
        };
        assert_eq!(
            provider(&keywords_only).cipher_suites.len(),
            rustls::crypto::ring::ALL_CIPHER_SUITES.len()
        );
    }

    #[test]
    fn no_tlsv1_2_leaves_only_tls13() {
        let cfg = TlsConfig {
            options: vec!["no_tlsv1.2".into(), "no_sslv3".into()],
            ..TlsConfig::default()
        };
        assert_eq!(versions(&cfg), vec![&rustls::version::TLS13]);
        assert_eq!(versions(&TlsConfig::default()).len(), 2);
    }

    #[test]
    fn warnings_name_what_rustls_cannot_do() {
        let cfg = TlsConfig {
            protocol: SslProtocol::Ssl3,
            compat: true,
            ca_file: Some("ca.pem".into()),
            ciphers: Some("HIGH:RC4-MD5".into()),
            ..TlsConfig::default()
        };
        let w = warnings(&cfg).join("\n");
        assert!(w.contains("-L ssl3"), "{w}");
        assert!(w.contains("-Z"), "{w}");
        assert!(w.contains("without -R"), "{w}");
        assert!(w.contains("RC4-MD5"), "{w}");
        assert!(warnings(&TlsConfig::default()).is_empty());
    }

    #[test]
    fn missing_certificate_file_is_named_in_the_error() {
        let cfg = TlsConfig {
            cert: Some("/nonexistent/pen-rs/cert.pem".into()),
            ..TlsConfig::default()
        };
        let e = Terminator::load(&cfg).unwrap_err();
        assert!(
            e.to_string().contains("-E /nonexistent/pen-rs/cert.pem"),
            "{e}"
        );
        // The OS error is kept as the cause.
        let TlsError::Read { source, .. } = &e else {
            panic!("expected a read error, got {e:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn sni_dir_entries_need_a_key_and_pick_up_ca_and_ocsp() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("A.Example.crt"), "x").unwrap();
        std::fs::write(d.join("A.Example.key"), "x").unwrap();
        std::fs::write(d.join("A.Example.ocsp"), "x").unwrap();
        std::fs::write(d.join("b.test.crt"), "x").unwrap();
        std::fs::write(d.join("b.test.key"), "x").unwrap();
        std::fs::write(d.join("b.test.ca"), "x").unwrap();
        std::fs::write(d.join("notes.txt"), "x").unwrap();
        let e = sni_entries(d).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, "a.example");
        assert!(e[0].1.ocsp.is_some() && e[0].1.ca.is_none());
        assert_eq!(e[1].0, "b.test");
        assert!(e[1].1.ca.is_some() && e[1].1.ocsp.is_none());
        std::fs::write(d.join("c.test.crt"), "x").unwrap();
        let err = sni_entries(d).unwrap_err();
        assert!(err.to_string().contains("c.test.key"), "{err}");
        assert!(matches!(err, TlsError::SniNoKey { .. }), "{err:?}");
    }
}
