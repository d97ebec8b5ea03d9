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
