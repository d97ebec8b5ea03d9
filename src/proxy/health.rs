//! The active health checks' IO shell: runs the probes [`crate::health`] says are due (TCP
//! connect, HTTP request, TLS handshake, DNS query over UDP).
//!
//! [`run`] wakes when the next probe is due (no more often than every [`TICK`], and at least
//! every [`IDLE_TICK`], so a check configured at run time starts within it; an idle pen
//! without checks wakes once a second for it), takes the due probes under the state's lock (at most
//! [`MAX_IN_FLIGHT`] running at a time, one per server), and spawns each as its own task
//! bounded by the check's timeout, so checks never block traffic or each other. A probe's
//! result goes back under the lock ([`crate::state::State::record_check`]), which takes the
//! server out of selection (the proxy's candidates and, through the servers-changed hook,
//! the DSR Maglev table) or lets it back in; changes are logged at warn level, as the
//! passive blacklist's are.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{SharedState, lock, now};
use crate::health::{Change, CheckKind, Probe};

/// The shortest wait between two looks for due checks.
pub const TICK: Duration = Duration::from_millis(100);
/// The longest wait: a check configured at run time starts within it.
pub const IDLE_TICK: Duration = Duration::from_secs(1);
/// Most probes running at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Most bytes of an HTTP answer read (the status line and the body substring are looked for
/// in them).
pub const MAX_ANSWER: usize = 64 * 1024;

/// Runs the checks until aborted. Cheap when no server has a check (one lock a second).
pub async fn run(shared: SharedState) {
    let mut wait = TICK;
    loop {
        tokio::time::sleep(wait).await;
        let (probes, changes, headers) = {
            let mut g = lock(&shared);
            let room = MAX_IN_FLIGHT.saturating_sub(g.state.checks.in_flight());
            let t = now();
            let (probes, changes) = g.state.due_probes(t, room);
            wait = g
                .state
                .checks
                .next_due()
                .map_or(IDLE_TICK, |due| due.saturating_sub(t))
                .clamp(TICK, IDLE_TICK);
            // A server that gets PROXY protocol headers may require one: its probes start
            // with a LOCAL header (what HAProxy's check-send-proxy sends).
            let headers: Vec<Option<Vec<u8>>> = probes
                .iter()
                .map(|p| {
                    let v = g.state.config.proxy_for(Some(p.server)).version();
                    v.map(crate::proxyproto::encode_local)
                })
                .collect();
            (probes, changes, headers)
        };
        if !changes.is_empty() {
            super::tell_servers_changed(&shared);
        }
        for c in &changes {
            log_change(c);
        }
        for (p, header) in probes.into_iter().zip(headers) {
            let shared = shared.clone();
            tokio::spawn(async move {
                let (ok, detail) = probe_with(&p, header.as_deref()).await;
                let change = lock(&shared).state.record_check(&p, now(), ok, &detail);
                if let Some(c) = change {
                    // the DSR thread rebuilds its Maglev table now rather than at its next tick
                    super::tell_servers_changed(&shared);
                    log_change(&c);
                }
            });
        }
    }
}

fn log_change(c: &Change) {
    tracing::warn!("{}", crate::stats::check_change_line(c));
}

/// Runs one probe within its timeout: (ok, what was seen).
pub async fn probe(p: &Probe) -> (bool, String) {
    probe_with(p, None).await
}

/// [`probe`], with `header` (a PROXY protocol header) sent first on its TCP connection.
pub async fn probe_with(p: &Probe, header: Option<&[u8]>) -> (bool, String) {
    let secs = p.timeout.as_secs();
    match tokio::time::timeout(p.timeout, attempt(p, header)).await {
        Ok(r) => r,
        Err(_) => (false, format!("timeout after {secs}s")),
    }
}

async fn attempt(p: &Probe, header: Option<&[u8]>) -> (bool, String) {
    if let CheckKind::Dns { name } = &p.kind {
        return dns(p, name).await;
    }
    let mut s = match TcpStream::connect(p.addr).await {
        Ok(s) => s,
        Err(e) => return (false, format!("connect: {e}")),
    };
    if let Some(h) = header
        && let Err(e) = s.write_all(h).await
    {
        return (false, format!("send PROXY header: {e}"));
    }
    match &p.kind {
        CheckKind::Tcp => (true, "connected".to_string()),
        CheckKind::Tls => tls_handshake(s, p).await,
        CheckKind::Dns { .. } => (false, "internal: dns probe over TCP".to_string()),
        CheckKind::Http {
            method,
            path,
            status,
            body,
        } => {
            let req = crate::health::http_request(method, path, &p.addr);
            if let Err(e) = s.write_all(req.as_bytes()).await {
                return (false, format!("send: {e}"));
            }
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                        let line_done = buf.contains(&b'\n');
                        if buf.len() >= MAX_ANSWER || (line_done && body.is_none()) {
                            break;
                        }
                    }
                    Err(e) => return (false, format!("receive: {e}")),
                }
            }
            buf.truncate(MAX_ANSWER);
            crate::health::judge_http(&buf, *status, body.as_deref())
        }
    }
}

/// A DNS check: one query from a connected UDP socket, datagrams read until the one with the
/// query's ID (the caller's timeout bounds the wait).
async fn dns(p: &Probe, name: &str) -> (bool, String) {
    let local: std::net::SocketAddr = if p.addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = match tokio::net::UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => return (false, format!("socket: {e}")),
    };
    if let Err(e) = s.connect(p.addr).await {
        return (false, format!("connect: {e}"));
    }
    let id = (p.seq as u16) ^ (p.server as u16).rotate_left(8);
    if let Err(e) = s.send(&crate::health::dns_query(id, name)).await {
        return (false, format!("send: {e}"));
    }
    let mut buf = [0u8; 1500];
    loop {
        match s.recv(&mut buf).await {
            Ok(n) => {
                if let Some(r) = crate::health::judge_dns(buf.get(..n).unwrap_or(&[]), id) {
                    return r;
                }
            }
            Err(e) => return (false, format!("receive: {e}")),
        }
    }
}

/// A TLS handshake over `s`; the certificate is accepted whatever it is ([`AnyCert`]).
async fn tls_handshake(s: TcpStream, p: &Probe) -> (bool, String) {
    use std::sync::{Arc, OnceLock};
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .ok()?;
        Some(Arc::new(
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth(),
        ))
    });
    let Some(config) = config else {
        return (false, "TLS: no client configuration".to_string());
    };
    let name = rustls_pki_types::ServerName::IpAddress(p.addr.ip().into());
    match tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, s)
        .await
    {
        Ok(t) => {
            let version = t
                .get_ref()
                .1
                .protocol_version()
                .map_or_else(|| "?".to_string(), |v| format!("{v:?}"));
            (true, format!("TLS handshake ok ({version})"))
        }
        Err(e) => (false, format!("TLS: {e}")),
    }
}

/// Accepts any server certificate; signatures are still checked with the provider's
/// algorithms (the handshake must be a real one).
#[derive(Debug)]
struct AnyCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
