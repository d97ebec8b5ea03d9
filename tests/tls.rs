//! TLS termination through a real pen on loopback, with a CA and certificates generated at test
//! time (rcgen): a handshake and requests (rustls client and curl), SNI choosing the
//! certificate, client certificates required and refused, OCSP stapling and its re-read,
//! certificate reload on SIGHUP without dropping connections, and start-up errors.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};

use common::{Listen, Pen, STEP, ctl, pen_fails, wait_until, wait_within};

// ---------------------------------------------------------------- certificates

type Ca = CertifiedIssuer<'static, KeyPair>;

fn make_ca(cn: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate signed by `ca`: (cert PEM, key PEM, cert DER).
fn make_leaf(ca: &Ca, names: &[&str], client: bool) -> (String, String, CertificateDer<'static>) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// A temp directory with `ca.pem`, `server.pem` (localhost) and `server.key`.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    server_der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = make_ca("pen-rs test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let (cert, key, server_der) = make_leaf(&ca, &["localhost", "127.0.0.1"], false);
        std::fs::write(dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        Pki {
            dir,
            ca,
            server_der,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

// ---------------------------------------------------------------- backend

/// HTTP/1.1 keep-alive backend answering every request with the head it received.
fn echo_heads() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for conn in l.incoming().flatten() {
            thread::spawn(move || serve_heads(conn));
        }
    });
    addr
}

fn serve_heads(mut conn: TcpStream) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match conn.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
        buf.drain(..end + 4);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{head}",
            head.len()
        );
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_response(s: &mut impl Read) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.push(b[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

// ---------------------------------------------------------------- client

/// Records the stapled OCSP response the server sent, then verifies as usual.
#[derive(Debug)]
struct OcspSpy {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    seen: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ServerCertVerifier for OcspSpy {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(ocsp_response.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, &[], now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &Path) -> Arc<RootCertStore> {
    use rustls::pki_types::pem::PemObject;
    let mut r = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        r.add(c.unwrap()).unwrap();
    }
    Arc::new(r)
}

struct ClientOpts {
    ca: PathBuf,
    auth: Option<(PathBuf, PathBuf)>,
    ocsp: Option<Arc<Mutex<Option<Vec<u8>>>>>,
}

fn client_config(o: &ClientOpts) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let roots = roots(&o.ca);
    let builder = match &o.ocsp {
        Some(seen) => {
            let inner =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .unwrap();
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(OcspSpy {
                    inner,
                    seen: seen.clone(),
                }))
        }
        None => builder.with_root_certificates(roots),
    };
    let cfg = match &o.auth {
        Some((cert, key)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(cfg)
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn tls_connect(port: u16, cfg: &Arc<ClientConfig>, sni: &str) -> io::Result<Tls> {
    let name = ServerName::try_from(sni.to_string()).map_err(io::Error::other)?;
    let conn = ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?;
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(STEP))?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// One request on an open TLS connection; the backend's view of the request head.
fn request(tls: &mut Tls, path: &str) -> io::Result<String> {
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())?;
    tls.flush()?;
    read_response(tls)
}

fn peer_cert(tls: &Tls) -> CertificateDer<'static> {
    tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn pen_tls(pki: &Pki, extra: &[String]) -> (Pen, u16) {
    let mut args: Vec<String> = vec![
        "-H".into(),
        "-E".into(),
        pki.arg("server.pem"),
        "-K".into(),
        pki.arg("server.key"),
    ];
    args.extend(extra.iter().cloned());
    args.push("127.0.0.1:0".into());
    args.push(echo_heads().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let pen = Pen::start(&argv, Listen::Reported);
    let port = pen.port();
    (pen, port)
}

fn plain_opts(pki: &Pki) -> ClientOpts {
    ClientOpts {
        ca: pki.path("ca.pem"),
        auth: None,
        ocsp: None,
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn handshake_and_keepalive_requests_through_pen_carry_xff_and_https() {
    let pki = Pki::new();
    let (_pen, port) = pen_tls(&pki, &[]);
    let cfg = client_config(&plain_opts(&pki));
    let mut tls = tls_connect(port, &cfg, "localhost").unwrap();
    assert_eq!(peer_cert(&tls), pki.server_der);
    for path in ["/a", "/b"] {
        let head = request(&mut tls, path).unwrap();
        assert!(
            head.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(head.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{head}");
        assert!(head.contains("X-Forwarded-Proto: https\r\n"), "{head}");
    }
}

#[test]
fn curl_gets_a_reply_through_pen_tls() {
    let pki = Pki::new();
    let (_pen, port) = pen_tls(&pki, &[]);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(pki.path("ca.pem"))
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}/curl"))
        .output()
        .expect("curl must be installed (scripts/install-deps.sh)");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.starts_with("GET /curl HTTP/1.1\r\n"), "{body}");
    assert!(body.contains("X-Forwarded-Proto: https\r\n"), "{body}");
    assert!(body.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{body}");
}

#[test]
fn sni_chooses_the_certificate_of_the_name_and_falls_back_to_e() {
    let pki = Pki::new();
    let sni = pki.path("sni");
    std::fs::create_dir(&sni).unwrap();
    let mut ders = Vec::new();
    for name in ["a.test", "b.test"] {
        let (cert, key, der) = make_leaf(&pki.ca, &[name], false);
        std::fs::write(sni.join(format!("{name}.crt")), cert).unwrap();
        std::fs::write(sni.join(format!("{name}.key")), key).unwrap();
        ders.push(der);
    }
    let (_pen, port) = pen_tls(
        &pki,
        &["-O".into(), format!("ssl_sni_path {}", sni.display())],
    );
    let cfg = client_config(&plain_opts(&pki));
    for (name, der) in ["a.test", "b.test"].iter().zip(&ders) {
        let mut tls = tls_connect(port, &cfg, name).unwrap();
        assert_eq!(&peer_cert(&tls), der, "certificate for {name}");
        assert!(request(&mut tls, "/").is_ok());
    }
    let tls = tls_connect(port, &cfg, "localhost").unwrap();
    assert_eq!(peer_cert(&tls), pki.server_der, "unknown name gets -E");
}

#[test]
fn client_certificate_required_with_r_refused_without_or_from_another_ca() {
    let pki = Pki::new();
    let (cert, key, _) = make_leaf(&pki.ca, &["client.test"], true);
    std::fs::write(pki.path("client.pem"), cert).unwrap();
    std::fs::write(pki.path("client.key"), key).unwrap();
    let other = make_ca("other CA");
    let (cert, key, _) = make_leaf(&other, &["rogue.test"], true);
    std::fs::write(pki.path("rogue.pem"), cert).unwrap();
    std::fs::write(pki.path("rogue.key"), key).unwrap();
    let (_pen, port) = pen_tls(&pki, &["-R".into(), "-G".into(), pki.arg("ca.pem")]);

    let with = |c: &str, k: &str| {
        client_config(&ClientOpts {
            ca: pki.path("ca.pem"),
            auth: Some((pki.path(c), pki.path(k))),
            ocsp: None,
        })
    };
    let good = with("client.pem", "client.key");
    let mut tls = tls_connect(port, &good, "localhost").unwrap();
    let head = request(&mut tls, "/ok").unwrap();
    assert!(head.contains("X-Forwarded-Proto: https"), "{head}");

    let refused = |cfg: Arc<ClientConfig>| {
        // TLS 1.3: the client finishes first; the refusal arrives as an alert or a close.
        match tls_connect(port, &cfg, "localhost") {
            Err(_) => true,
            Ok(mut t) => request(&mut t, "/no").is_err(),
        }
    };
    assert!(
        refused(client_config(&plain_opts(&pki))),
        "no client certificate"
    );
    assert!(
        refused(with("rogue.pem", "rogue.key")),
        "certificate from another CA"
    );
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(pki.path("ca.pem"))
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}/"))
        .output()
        .expect("curl must be installed");
    assert!(!curl.status.success(), "curl without a certificate got in");
    let curl_ok = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(pki.path("ca.pem"))
        .arg("--cert")
        .arg(pki.path("client.pem"))
        .arg("--key")
        .arg(pki.path("client.key"))
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}/cert"))
        .output()
        .expect("curl must be installed");
    assert!(
        String::from_utf8_lossy(&curl_ok.stdout).starts_with("GET /cert "),
        "curl with a certificate: {}",
        String::from_utf8_lossy(&curl_ok.stderr)
    );
}

#[test]
fn ocsp_response_is_stapled_and_reread_when_the_file_changes() {
    let pki = Pki::new();
    let ocsp = pki.path("server.ocsp");
    let first = b"\x30\x03\x0a\x01\x00".to_vec();
    std::fs::write(&ocsp, &first).unwrap();
    let (_pen, port) = pen_tls(
        &pki,
        &["-O".into(), format!("ssl_ocsp_response {}", ocsp.display())],
    );
    let seen = Arc::new(Mutex::new(None));
    let cfg = client_config(&ClientOpts {
        ca: pki.path("ca.pem"),
        auth: None,
        ocsp: Some(seen.clone()),
    });
    let mut tls = tls_connect(port, &cfg, "localhost").unwrap();
    assert!(request(&mut tls, "/").is_ok());
    assert_eq!(seen.lock().unwrap().clone(), Some(first));

    let second = b"\x30\x04\x0a\x02\x00\x01".to_vec();
    std::fs::write(&ocsp, &second).unwrap();
    assert!(
        wait_within(Duration::from_secs(8), || {
            drop(tls_connect(port, &cfg, "localhost").unwrap());
            seen.lock().unwrap().as_deref() == Some(second.as_slice())
        }),
        "the new OCSP response was not stapled"
    );
}

#[test]
fn replaced_certificate_is_served_after_sighup_and_open_connections_stay() {
    let pki = Pki::new();
    let (pen, port) = pen_tls(&pki, &[]);
    let cfg = client_config(&plain_opts(&pki));
    let mut old = tls_connect(port, &cfg, "localhost").unwrap();
    assert!(request(&mut old, "/before").is_ok());

    let (cert, key, new_der) = make_leaf(&pki.ca, &["localhost"], false);
    std::fs::write(pki.path("server.key"), key).unwrap();
    std::fs::write(pki.path("server.pem"), cert).unwrap();
    let pid = i32::try_from(pen.pid()).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert!(
        wait_within(Duration::from_secs(5), || {
            peer_cert(&tls_connect(port, &cfg, "localhost").unwrap()) == new_der
        }),
        "the new certificate was not served"
    );
    let head = request(&mut old, "/after").unwrap();
    assert!(head.starts_with("GET /after "), "{head}");
}

#[test]
fn startup_errors_name_the_file_and_the_reason() {
    let pki = Pki::new();
    let (_, other_key, _) = make_leaf(&pki.ca, &["x.test"], false);
    std::fs::write(pki.path("other.key"), other_key).unwrap();
    let port = "127.0.0.1:0";
    let fail = |args: &[&str]| {
        let mut a = vec!["-f"];
        a.extend_from_slice(args);
        a.extend([port, "127.0.0.1:9"]);
        let f = pen_fails(&a);
        assert_ne!(f.code, Some(0));
        f.stderr
    };
    let cert = pki.arg("server.pem");
    let key = pki.arg("other.key");
    let e = fail(&["-E", &cert, "-K", &key]);
    assert!(e.contains(&key) && e.contains("does not fit"), "{e}");
    let e = fail(&["-E", "/nonexistent/pen-rs.pem"]);
    assert!(e.contains("/nonexistent/pen-rs.pem"), "{e}");
    let e = fail(&["-E", &cert]);
    assert!(
        e.contains("no private key") && e.contains("no -K given"),
        "{e}"
    );
    let real_key = pki.arg("server.key");
    let e = fail(&["-E", &cert, "-K", &real_key, "-R"]);
    assert!(e.contains("-R needs"), "{e}");
}

#[test]
fn key_inside_the_certificate_file_is_accepted() {
    let pki = Pki::new();
    let both = format!(
        "{}{}",
        std::fs::read_to_string(pki.path("server.pem")).unwrap(),
        std::fs::read_to_string(pki.path("server.key")).unwrap()
    );
    std::fs::write(pki.path("both.pem"), both).unwrap();
    let be = echo_heads().to_string();
    let listen = "127.0.0.1:0".to_string();
    let both = pki.arg("both.pem");
    let pen = Pen::start(&["-E", &both, &listen, &be], Listen::Reported);
    let port = pen.port();
    let cfg = client_config(&plain_opts(&pki));
    let mut tls = tls_connect(port, &cfg, "localhost").unwrap();
    let head = request(&mut tls, "/").unwrap();
    assert!(!head.contains("X-Forwarded"), "no -H: unchanged: {head}");
}

#[test]
fn ca_directory_a_and_per_name_ca_decide_which_client_certificates_get_in() {
    let pki = Pki::new();
    // -A: a directory holding the test CA (any file name; OpenSSL would use hash links).
    let cadir = pki.path("cadir");
    std::fs::create_dir(&cadir).unwrap();
    std::fs::copy(pki.path("ca.pem"), cadir.join("5d2a1f3e.0")).unwrap();
    std::fs::write(cadir.join("README"), "not a certificate").unwrap();
    let (cert, key, _) = make_leaf(&pki.ca, &["client.test"], true);
    std::fs::write(pki.path("client.pem"), cert).unwrap();
    std::fs::write(pki.path("client.key"), key).unwrap();
    // SNI name partner.test trusts only the partner CA (partner.test.ca).
    let partner = make_ca("partner CA");
    let (cert, key, _) = make_leaf(&partner, &["partner-client.test"], true);
    std::fs::write(pki.path("partner.pem"), cert).unwrap();
    std::fs::write(pki.path("partner.key"), key).unwrap();
    let sni = pki.path("sni");
    std::fs::create_dir(&sni).unwrap();
    let (cert, key, _) = make_leaf(&pki.ca, &["partner.test"], false);
    std::fs::write(sni.join("partner.test.crt"), cert).unwrap();
    std::fs::write(sni.join("partner.test.key"), key).unwrap();
    std::fs::write(sni.join("partner.test.ca"), partner.pem()).unwrap();
    let (_pen, port) = pen_tls(
        &pki,
        &[
            "-R".into(),
            "-A".into(),
            cadir.display().to_string(),
            "-O".into(),
            format!("ssl_sni_path {}", sni.display()),
        ],
    );
    let with = |c: &str, k: &str| {
        client_config(&ClientOpts {
            ca: pki.path("ca.pem"),
            auth: Some((pki.path(c), pki.path(k))),
            ocsp: None,
        })
    };
    let works = |cfg: &Arc<ClientConfig>, sni: &str| {
        tls_connect(port, cfg, sni)
            .and_then(|mut t| request(&mut t, "/"))
            .is_ok()
    };
    let ours = with("client.pem", "client.key");
    let theirs = with("partner.pem", "partner.key");
    assert!(works(&ours, "localhost"), "-A CA accepts our client");
    assert!(
        !works(&theirs, "localhost"),
        "-A CA refuses the partner's client"
    );
    assert!(
        works(&theirs, "partner.test"),
        "partner.test.ca accepts the partner's client"
    );
    assert!(
        !works(&ours, "partner.test"),
        "partner.test.ca refuses our client"
    );
}

#[test]
fn statistics_count_plaintext_bytes_including_the_inserted_fields() {
    let pki = Pki::new();
    let (pen, port) = pen_tls(&pki, &["-u".into(), "root".into(), "-C".into(), "0".into()]);
    let cport = pen.control_port();
    let cfg = client_config(&plain_opts(&pki));
    let mut tls = tls_connect(port, &cfg, "localhost").unwrap();
    let head = request(&mut tls, "/stats").unwrap();
    tls.conn.send_close_notify();
    let _ = tls.flush();
    drop(tls);
    let sent = "GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n".len()
        + "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n".len();
    assert_eq!(head.len(), sent, "{head}");
    let reply =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", head.len()).len() + head.len();
    let want = format!("sx {sent} rx {reply}");
    let mut servers = String::new();
    assert!(
        wait_until(|| {
            servers = ctl(cport, "servers");
            servers.contains(&want)
        }),
        "servers never showed {want:?}: {servers}"
    );
}

#[test]
fn ocsp_file_named_at_run_time_is_stapled_once_it_appears() {
    let pki = Pki::new();
    let (pen, port) = pen_tls(&pki, &["-u".into(), "root".into(), "-C".into(), "0".into()]);
    let cport = pen.control_port();
    let seen = Arc::new(Mutex::new(None));
    let cfg = client_config(&ClientOpts {
        ca: pki.path("ca.pem"),
        auth: None,
        ocsp: Some(seen.clone()),
    });
    drop(tls_connect(port, &cfg, "localhost").unwrap());
    assert_eq!(
        seen.lock().unwrap().clone(),
        Some(Vec::new()),
        "nothing stapled yet"
    );

    // Named before it exists: the reload fails (logged), the old configuration keeps serving.
    let ocsp = pki.path("late.ocsp");
    ctl(cport, &format!("ssl_ocsp_response {}", ocsp.display()));
    thread::sleep(Duration::from_millis(2500));
    let mut tls = tls_connect(port, &cfg, "localhost").unwrap();
    assert!(request(&mut tls, "/").is_ok());

    let response = b"\x30\x03\x0a\x01\x00".to_vec();
    std::fs::write(&ocsp, &response).unwrap();
    assert!(
        wait_within(Duration::from_secs(8), || {
            drop(tls_connect(port, &cfg, "localhost").unwrap());
            seen.lock().unwrap().as_deref() == Some(response.as_slice())
        }),
        "the OCSP file was not picked up"
    );
}

#[test]
fn client_close_notify_half_closes_and_the_reply_ends_with_pens_close_notify() {
    let pki = Pki::new();
    let (_pen, port) = pen_tls(&pki, &[]);
    let cfg = client_config(&plain_opts(&pki));
    let mut tls = tls_connect(port, &cfg, "localhost").unwrap();
    tls.write_all(b"GET /half HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
    // The keep-alive backend closes only when it sees EOF, i.e. when pen has passed the
    // client's close_notify on as a half-close; pen then ends the reply with its own
    // close_notify, so a clean read to the end succeeds (a bare TCP close is an error here).
    let mut all = Vec::new();
    tls.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("GET /half HTTP/1.1\r\n"), "{text}");
}

#[test]
fn dead_first_backend_fails_over_after_the_handshake() {
    let pki = Pki::new();
    let dead = common::dead_spec();
    let listen = "127.0.0.1:0".to_string();
    let live = echo_heads().to_string();
    let (cert, key) = (pki.arg("server.pem"), pki.arg("server.key"));
    let pen = Pen::start(
        &["-r", "-E", &cert, "-K", &key, &listen, &dead, &live],
        Listen::Reported,
    );
    let port = pen.port();
    let cfg = client_config(&plain_opts(&pki));
    for i in 0..4 {
        let mut tls = tls_connect(port, &cfg, "localhost").unwrap();
        let head = request(&mut tls, &format!("/{i}")).unwrap();
        assert!(head.starts_with(&format!("GET /{i} ")), "{head}");
    }
}
