//! Active health checks through a real `pen` on loopback: a backend that accepts TCP but
//! answers the check with HTTP 500 is out of selection before any client request reaches
//! it, comes back after `rise` good answers, and its state is visible over the control port
//! (`servers`), changed and removed there (`server N check ...|off`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Backend, Listen, Pen, STEP, ctl, get, wait_within};

/// A backend whose `/health` answer has a switchable status; every other request gets 200
/// and the body `sick` and is counted as a client request.
struct Switchable {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    probes: Arc<AtomicUsize>,
    clients: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Switchable {
    fn start(status: u16) -> Switchable {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = l.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let probes = Arc::new(AtomicUsize::new(0));
        let clients = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, pr, cl, sp) = (
            status.clone(),
            probes.clone(),
            clients.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(STEP));
                let mut req = Vec::new();
                let mut buf = [0u8; 2048];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let code = if line.starts_with("GET /health ") {
                    pr.fetch_add(1, Ordering::SeqCst);
                    st.load(Ordering::SeqCst)
                } else {
                    cl.fetch_add(1, Ordering::SeqCst);
                    200
                };
                let _ = c.write_all(
                    format!("HTTP/1.0 {code} X\r\nContent-Length: 4\r\n\r\nsick").as_bytes(),
                );
            }
        });
        Switchable {
            addr,
            status,
            probes,
            clients,
            stop,
        }
    }
}

impl Drop for Switchable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

fn server_line(cport: u16, n: usize) -> String {
    ctl(cport, "servers")
        .lines()
        .nth(n)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_backend_answering_500_is_out_before_any_request_and_back_after_rise() {
    let good = Backend::start("good", "127.0.0.1");
    let sick = Switchable::start(500);
    let sick_spec = sick.addr.to_string();
    let check = "server 1 check http GET /health 200-399 interval 1 timeout 1 rise 2 fall 1";
    let pen = Pen::start(
        &[
            "-r",
            "-u",
            "root",
            "-C",
            "0",
            "-o",
            check,
            "127.0.0.1:0",
            &good.spec,
            &sick_spec,
        ],
        Listen::Reported,
    );
    let (lport, cport) = (pen.port(), pen.control_port());
    let lis: SocketAddr = ([127, 0, 0, 1], lport).into();
    // client requests right away: the check has not answered yet (unknown), or has said down
    for _ in 0..10 {
        assert_eq!(get(None, lis).unwrap(), "good");
    }
    assert!(
        wait_within(STEP, || server_line(cport, 1).contains("check down")),
        "server 1 not down: {}",
        ctl(cport, "servers")
    );
    let line = server_line(cport, 1);
    assert!(line.contains("last fail \"HTTP 500\""), "{line}");
    assert!(
        !server_line(cport, 0).contains("check"),
        "server 0 has no check"
    );
    for _ in 0..10 {
        assert_eq!(get(None, lis).unwrap(), "good");
    }
    assert!(
        sick.probes.load(Ordering::SeqCst) >= 1,
        "the probe reached the backend"
    );
    assert_eq!(
        sick.clients.load(Ordering::SeqCst),
        0,
        "no client request reached it"
    );

    // it recovers: two good answers (rise 2, interval 1) bring it back
    sick.status.store(200, Ordering::SeqCst);
    assert!(
        wait_within(Duration::from_secs(6), || server_line(cport, 1)
            .contains("check up")),
        "server 1 not up: {}\n{}",
        ctl(cport, "servers"),
        pen.stderr()
    );
    let bodies: Vec<String> = (0..10).map(|_| get(None, lis).unwrap()).collect();
    assert!(bodies.iter().any(|b| b == "sick"), "{bodies:?}");
    assert!(
        pen.stderr().contains("server 1 check: DOWN (HTTP 500)"),
        "{}",
        pen.stderr()
    );
    assert!(
        pen.stderr().contains("server 1 check: UP (HTTP 200)"),
        "{}",
        pen.stderr()
    );

    // removed over the control port
    assert_eq!(ctl(cport, "server 1 check off"), "");
    assert!(!ctl(cport, "servers").contains("check"));
}

#[test]
fn a_check_set_over_the_control_port_takes_a_refusing_server_out() {
    let good = Backend::start("good", "127.0.0.1");
    let dead = common::dead_spec();
    let pen = Pen::start(
        &[
            "-r",
            "-u",
            "root",
            "-C",
            "0",
            "127.0.0.1:0",
            &good.spec,
            &dead,
        ],
        Listen::Reported,
    );
    let cport = pen.control_port();
    assert_eq!(ctl(cport, "server 1 check tcp interval 1"), "");
    assert!(
        wait_within(STEP, || server_line(cport, 1).contains("check down")),
        "{}",
        ctl(cport, "servers")
    );
    assert!(
        server_line(cport, 1).contains("last fail \"connect: "),
        "{}",
        server_line(cport, 1)
    );
    // a bad check is refused with the word and what is accepted; the check stays
    let e = ctl(cport, "server 1 check ping");
    assert!(e.contains("ping") && e.contains("tcp"), "{e}");
    assert!(server_line(cport, 1).contains("check down"));
}

/// A UDP backend on 127.0.0.1: `dns` answers every datagram as a DNS server would (QR set,
/// NOERROR) and counts the ones that are not health-check queries for `health.test`; `echo`
/// sends each datagram back unchanged (a DNS check sees no response) and counts the same.
fn udp_backend(dns: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    let clients = Arc::new(AtomicUsize::new(0));
    let c = clients.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        // bounded: the test process ends it; each recv waits at most 30 s
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            let mut d = buf[..n].to_vec();
            if !d.windows(6).any(|w| w == b"health") {
                c.fetch_add(1, Ordering::SeqCst);
            }
            if dns && d.len() >= 12 {
                d[2] |= 0x80;
            }
            let _ = s.send_to(&d, peer);
        }
    });
    (addr, clients)
}

#[test]
fn a_udp_backend_that_does_not_answer_dns_is_out_of_pen_u() {
    let (dns_addr, _) = udp_backend(true);
    let (echo_addr, echo_clients) = udp_backend(false);
    let (d, e) = (dns_addr.to_string(), echo_addr.to_string());
    let pen = Pen::start(
        &[
            "-U",
            "-r",
            "-u",
            "root",
            "-C",
            "0",
            "-o",
            "server 0 check dns health.test interval 1",
            "-o",
            "server 1 check dns health.test interval 1",
            "127.0.0.1:0",
            &d,
            &e,
        ],
        Listen::Reported,
    );
    let (lport, cport) = (pen.port(), pen.control_port());
    assert!(
        wait_within(STEP, || server_line(cport, 0).contains("check up")
            && server_line(cport, 1).contains("check down")),
        "{}",
        ctl(cport, "servers")
    );
    assert!(
        server_line(cport, 1).contains("last fail \"DNS: not a response (QR 0)\""),
        "{}",
        server_line(cport, 1)
    );
    assert!(
        server_line(cport, 0).contains("last ok \"DNS NOERROR"),
        "{}",
        server_line(cport, 0)
    );
    // ten client flows (ten source ports): all go to the DNS server, none to the echo
    for _ in 0..10 {
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(STEP)).unwrap();
        c.send_to(
            b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",
            ("127.0.0.1", lport),
        )
        .unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = c.recv_from(&mut buf).expect("an answer through pen");
        assert!(
            n >= 12 && buf[2] & 0x80 != 0,
            "a DNS response, not the echo"
        );
    }
    assert_eq!(echo_clients.load(Ordering::SeqCst), 0);
}

/// A TLS backend on 127.0.0.1 with a self-signed certificate (rcgen): completes handshakes
/// (rustls, blocking), then closes. Each connection is handled in turn with a 3 s timeout.
fn tls_backend() -> SocketAddr {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut tcp) = conn else { continue };
            let _ = tcp.set_read_timeout(Some(STEP));
            let Ok(mut tls) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            while tls.is_handshaking() {
                if tls.complete_io(&mut tcp).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

#[test]
fn a_tls_check_passes_a_tls_server_and_fails_a_plain_one() {
    let tls = tls_backend().to_string();
    let plain = Backend::start("plain", "127.0.0.1");
    let pen = Pen::start(
        &[
            "-r",
            "-u",
            "root",
            "-C",
            "0",
            "-o",
            "server 0 check tls interval 1",
            "-o",
            "server 1 check tls interval 1",
            "127.0.0.1:0",
            &tls,
            &plain.spec,
        ],
        Listen::Reported,
    );
    let cport = pen.control_port();
    assert!(
        wait_within(STEP, || server_line(cport, 0).contains("check up")
            && server_line(cport, 1).contains("check down")),
        "{}",
        ctl(cport, "servers")
    );
    assert!(
        server_line(cport, 0).contains("last ok \"TLS handshake ok (TLSv1_3)\""),
        "{}",
        server_line(cport, 0)
    );
    // the plain backend waits for an HTTP head that never comes: the handshake times out
    let l1 = server_line(cport, 1);
    assert!(
        l1.contains("last fail \"timeout after 1s\"") || l1.contains("last fail \"TLS: "),
        "{l1}"
    );
}
