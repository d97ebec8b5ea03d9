//! The PROXY protocol through a real pen on loopback: pen sends v1 and v2 headers to its
//! backends (globally and per server; IPv4 and IPv6 clients), and pen accepting headers
//! (`accept_proxy`) tracks, hashes and forwards (-H) the real client; bad headers close only
//! their connection and are counted by reason. The headers are parsed here independently of
//! `pen::proxyproto`. The TCP engine is the one `PEN_TEST_TCP_ENGINE` forces (pen serves PROXY
//! protocol on the tokio path either way; one test checks the fallback).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Listen, Pen, STEP, ctl, ip, wait_until};

const V2_SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// A backend that records the raw bytes of each connection (up to the end of an HTTP head)
/// and answers `HTTP/1.0 200 OK` with its name.
struct Recorder {
    spec: String,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    fn start(name: &str) -> Recorder {
        Recorder::run(name, false)
    }

    /// A backend that requires a PROXY header (as nginx's `listen ... proxy_protocol`):
    /// without one it answers 400.
    fn strict(name: &str) -> Recorder {
        Recorder::run(name, true)
    }

    fn run(name: &str, strict: bool) -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let spec = l.local_addr().unwrap().to_string();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (g, name) = (got.clone(), name.to_string());
        thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let (g, name) = (g.clone(), name.clone());
                thread::spawn(move || {
                    c.set_read_timeout(Some(STEP)).unwrap();
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    // (A v2 signature starts with CR LF CR LF: wait for the end.)
                    while !buf.ends_with(b"\r\n\r\n") {
                        match c.read(&mut tmp) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let refused = strict && read_header(&buf).is_none();
                    g.lock().unwrap().push(buf);
                    let reply = if refused {
                        "HTTP/1.0 400 Bad Request\r\n\r\nno PROXY header".to_string()
                    } else {
                        format!("HTTP/1.0 200 OK\r\n\r\n{name}")
                    };
                    let _ = c.write_all(reply.as_bytes());
                });
            }
        });
        Recorder { spec, got }
    }

    fn conns(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for the `n`th connection's bytes.
    fn nth(&self, n: usize) -> Vec<u8> {
        assert!(wait_until(|| self.conns().len() > n), "no connection {n}");
        self.conns().swap_remove(n)
    }
}

/// A header as read here: version, source, destination, and the bytes after it.
#[derive(Debug, PartialEq)]
struct Seen {
    version: u8,
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    rest: Vec<u8>,
}

/// Independent reading of a PROXY header at the start of `b` (v1 text or v2 binary).
fn read_header(b: &[u8]) -> Option<Seen> {
    if b.starts_with(b"PROXY ") {
        let end = b.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&b[..end]).ok()?;
        let f: Vec<&str> = line.split(' ').collect();
        let (src, dst) = match f.as_slice() {
            ["PROXY", "UNKNOWN", ..] => (None, None),
            ["PROXY", "TCP4" | "TCP6", s, d, sp, dp] => (
                Some(SocketAddr::new(s.parse().ok()?, sp.parse().ok()?)),
                Some(SocketAddr::new(d.parse().ok()?, dp.parse().ok()?)),
            ),
            _ => return None,
        };
        return Some(Seen {
            version: 1,
            src,
            dst,
            rest: b[end + 2..].to_vec(),
        });
    }
    if b.len() < 16 || b[..12] != V2_SIG || (b[12] != 0x21 && b[12] != 0x20) {
        return None;
    }
    let local = b[12] == 0x20;
    let len = 16 + usize::from(u16::from_be_bytes([b[14], b[15]]));
    let body = b.get(16..len)?;
    let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
    let (src, dst) = match b[13] {
        _ if local => (None, None),
        0x11 => {
            let a: [u8; 4] = body[0..4].try_into().unwrap();
            let d: [u8; 4] = body[4..8].try_into().unwrap();
            (
                Some(SocketAddr::new(IpAddr::from(a), port(8))),
                Some(SocketAddr::new(IpAddr::from(d), port(10))),
            )
        }
        0x21 => {
            let a: [u8; 16] = body[0..16].try_into().unwrap();
            let d: [u8; 16] = body[16..32].try_into().unwrap();
            (
                Some(SocketAddr::new(IpAddr::from(a), port(32))),
                Some(SocketAddr::new(IpAddr::from(d), port(34))),
            )
        }
        0x00 => (None, None),
        _ => return None,
    };
    Some(Seen {
        version: 2,
        src,
        dst,
        rest: b[len..].to_vec(),
    })
}

/// A v1 header text for the client `src` connecting to `dst`.
fn v1(src: &str, dst: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let fam = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    )
    .into_bytes()
}

/// A v2 TCP4 header for `src` → `dst`.
fn v2(src: &str, dst: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let (IpAddr::V4(si), IpAddr::V4(di)) = (s.ip(), d.ip()) else {
        panic!("v4 only")
    };
    let mut b = V2_SIG.to_vec();
    b.extend_from_slice(&[0x21, 0x11, 0, 12]);
    b.extend_from_slice(&si.octets());
    b.extend_from_slice(&di.octets());
    b.extend_from_slice(&s.port().to_be_bytes());
    b.extend_from_slice(&d.port().to_be_bytes());
    b
}

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n";

/// Sends `pre` + a request to `addr` from `source` and returns the reply (bounded).
fn request(source: Option<IpAddr>, addr: SocketAddr, pre: &[u8]) -> (String, SocketAddr) {
    let mut s = common::connect_from(source, addr).expect("connect to pen");
    s.set_read_timeout(Some(STEP)).unwrap();
    let me = s.local_addr().unwrap();
    let mut all = pre.to_vec();
    all.extend_from_slice(REQUEST);
    s.write_all(&all).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    (out, me)
}

fn reply_body(r: &str) -> &str {
    common::body_of(r)
}

#[test]
fn pen_sends_v1_and_v2_headers_with_the_client_address_for_ipv4_and_ipv6_clients() {
    for version in ["v1", "v2"] {
        for (listen, client) in [("127.0.0.1:0", "127.0.0.2"), ("[::1]:0", "::1")] {
            let b = Recorder::start("b0");
            let opt = format!("proxy_protocol {version}");
            let pen = Pen::start(&["-r", "-O", &opt, listen, &b.spec], Listen::Reported);
            let addr = SocketAddr::new(ip(client), 0);
            let target = SocketAddr::new(pen.addr().ip(), pen.port());
            let (reply, me) = request(Some(addr.ip()), target, b"");
            assert_eq!(reply_body(&reply), "b0", "{version} {listen}: {reply:?}");
            let raw = b.nth(0);
            let seen = read_header(&raw)
                .unwrap_or_else(|| panic!("{version} {listen}: no header in {raw:?}"));
            assert_eq!(seen.version, if version == "v1" { 1 } else { 2 });
            assert_eq!(
                seen.src,
                Some(me),
                "{version} {listen}: the client's address"
            );
            assert_eq!(seen.dst, Some(target), "{version} {listen}: pen's address");
            assert_eq!(seen.rest, REQUEST, "the client's bytes follow unchanged");
        }
    }
}

#[test]
fn per_server_setting_overrides_the_global_one_and_shows_in_servers_and_write() {
    let bs: Vec<Recorder> = (0..3).map(|i| Recorder::start(&format!("b{i}"))).collect();
    let mut args = vec![
        "-r",
        "-u",
        "root",
        "-C",
        "0",
        "-O",
        "control_any_file",
        "-O",
        "proxy_protocol v1",
        "127.0.0.1:0",
    ];
    args.extend(bs.iter().map(|b| b.spec.as_str()));
    let pen = Pen::start(&args, Listen::Reported);
    let cport = pen.control_port();
    assert_eq!(ctl(cport, "server 1 proxy v2"), "");
    assert_eq!(ctl(cport, "server 2 proxy off"), "");
    let servers = ctl(cport, "servers");
    let lines: Vec<&str> = servers.lines().collect();
    assert!(lines[0].ends_with(" proxy v1"), "{servers}");
    assert!(lines[1].ends_with(" proxy v2"), "{servers}");
    assert!(!lines[2].contains("proxy"), "{servers}");
    assert_eq!(ctl(cport, "proxy_protocol"), "v1\n");
    for _ in 0..3 {
        let (r, _) = request(None, pen.addr(), b"");
        assert!(r.starts_with("HTTP/1.0 200"), "{r:?}");
    }
    let h0 = read_header(&bs[0].nth(0)).expect("server 0: the global v1");
    assert_eq!(h0.version, 1);
    let h1 = read_header(&bs[1].nth(0)).expect("server 1: its own v2");
    assert_eq!(h1.version, 2);
    assert_eq!(bs[2].nth(0), REQUEST, "server 2: proxy off, no header");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pen.cfg");
    ctl(cport, &format!("write {}", file.display()));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\nproxy_protocol v1\n"), "{text}");
    assert!(
        text.contains(" proxy v2\n") && text.contains(" proxy off\n"),
        "{text}"
    );
}

#[test]
fn accepting_puts_the_real_client_in_hash_selection_tracking_and_x_forwarded_for() {
    let bs: Vec<Recorder> = (0..2).map(|i| Recorder::start(&format!("b{i}"))).collect();
    let args = [
        "-h",
        "-H",
        "-u",
        "root",
        "-C",
        "0",
        "-O",
        "accept_proxy any",
        "127.0.0.1:0",
        &bs[0].spec,
        &bs[1].spec,
    ];
    let pen = Pen::start(&args, Listen::Reported);
    let cport = pen.control_port();
    let dst = pen.addr().to_string();
    // One upstream address (127.0.0.1), many real clients: with hash selection (IPv4: the
    // address as a little-endian number, modulo 2: the first octet's parity) they spread over
    // both backends, each real client always to the same one.
    let mut by_client = Vec::new();
    for i in 1..=12 {
        let real = format!("{}.0.0.{i}:4{i:03}", 9 + i);
        let hdr = if i % 2 == 0 {
            v1(&real, &dst)
        } else {
            v2(&real, &dst)
        };
        let (r1, _) = request(None, pen.addr(), &hdr);
        let (r2, _) = request(None, pen.addr(), &hdr);
        assert_eq!(
            reply_body(&r1),
            reply_body(&r2),
            "{real}: the same backend twice"
        );
        by_client.push(reply_body(&r1).to_string());
    }
    assert!(
        by_client.contains(&"b0".to_string()) && by_client.contains(&"b1".to_string()),
        "real clients hash to both backends: {by_client:?}"
    );
    // Every backend connection carries the real client in X-Forwarded-For, no PROXY header.
    let all: Vec<Vec<u8>> = bs.iter().flat_map(Recorder::conns).collect();
    assert_eq!(all.len(), 24);
    for i in 1..=12 {
        let want = format!("X-Forwarded-For: {}.0.0.{i}\r\n", 9 + i);
        let n = all
            .iter()
            .filter(|c| String::from_utf8_lossy(c).contains(&want))
            .count();
        assert_eq!(n, 2, "{want:?}");
    }
    assert!(all.iter().all(|c| c.starts_with(b"GET / HTTP/1.0\r\n")));
    // The client table tracks the real clients, not the upstream.
    let recent = ctl(cport, "recent");
    assert!(recent.contains("16.0.0.7 connects 2"), "{recent}");
    assert!(!recent.contains("127.0.0.1"), "{recent}");
    // An open connection is listed with its real client. Its slot is the one freed last, not
    // necessarily 0: the earlier connections may have overlapped as they closed.
    let mut held = TcpStream::connect(pen.addr()).unwrap();
    held.write_all(&v1("192.0.2.9:5555", &dst)).unwrap();
    held.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    let listed = || (0..8).map(|n| ctl(cport, &format!("connection {n}")));
    assert!(
        wait_until(|| listed().any(|c| c.contains("192.0.2.9:5555"))),
        "{:?}",
        listed()
            .filter(|c| !c.contains("state = 0"))
            .collect::<Vec<_>>()
    );
    let counts = ctl(cport, "accept_proxy");
    assert!(
        counts.starts_with("any timeout 5\naccepted 25, refused: missing 0"),
        "{counts}"
    );
}

/// Reads until pen closes the connection; `true` when it did within `STEP`.
fn closed_by_pen(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(STEP)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn bad_headers_close_only_their_connection_and_are_counted_by_reason() {
    let b = Recorder::start("b0");
    let args = [
        "-r",
        "-u",
        "root",
        "-C",
        "0",
        "-O",
        "accept_proxy any timeout 1",
        "127.0.0.1:0",
        &b.spec,
    ];
    let pen = Pen::start(&args, Listen::Reported);
    let cport = pen.control_port();
    let addr = pen.addr();
    let dst = addr.to_string();
    // A good connection in the middle of its request while the bad ones come and go.
    let mut good = TcpStream::connect(addr).unwrap();
    good.write_all(&v1("198.51.100.1:1000", &dst)).unwrap();
    good.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    assert!(wait_until(
        || b.conns().is_empty() && ctl(cport, "accept_proxy").contains("accepted 1,")
    ));

    let mut too_long = b"PROXY UNKNOWN ".to_vec();
    too_long.resize(200, b'a');
    let mut short_v2 = v2("198.51.100.2:1", &dst);
    short_v2[15] = 8; // INET needs 12 bytes of addresses
    short_v2.truncate(16 + 8);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("missing", REQUEST.to_vec(), false),
        ("too_long", too_long, false),
        ("malformed", short_v2, false),
        (
            "malformed",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
            false,
        ),
        ("truncated", b"PROXY TCP4 198.51.100.3 ".to_vec(), true),
    ];
    for (reason, bytes, then_close) in &cases {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(bytes).unwrap();
        if *then_close {
            s.shutdown(Shutdown::Write).unwrap();
        }
        assert!(closed_by_pen(&mut s), "{reason}: {bytes:?} not closed");
    }
    // Slow: part of a header, then nothing beyond the timeout.
    let t0 = Instant::now();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"PROXY TCP4 ").unwrap();
    assert!(closed_by_pen(&mut slow), "slow header not closed");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < STEP,
        "closed after {waited:?}, timeout 1 s"
    );
    assert!(
        b.conns().is_empty(),
        "no bad connection reached the backend"
    );
    let counts = ctl(cport, "accept_proxy");
    assert_eq!(
        counts,
        "any timeout 1\naccepted 1, refused: missing 1, version 0, malformed 2, too_long 1, truncated 1, timeout 1\n"
    );
    // The good connection was never disturbed.
    good.write_all(b"Host: x\r\n\r\n").unwrap();
    good.set_read_timeout(Some(STEP)).unwrap();
    let mut r = String::new();
    let _ = good.read_to_string(&mut r);
    assert_eq!(reply_body(&r), "b0", "{r:?}");
    // And a good one right after works.
    let (r, _) = request(None, addr, &v2("198.51.100.4:4", &dst));
    assert_eq!(reply_body(&r), "b0", "{r:?}");
    // A v1-only listener refuses v2 as the wrong version.
    ctl(cport, "accept_proxy v1");
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&v2("198.51.100.5:5", &dst)).unwrap();
    assert!(closed_by_pen(&mut s));
    let counts = ctl(cport, "accept_proxy");
    assert!(
        counts.contains("accepted 2, refused: missing 1, version 1,"),
        "{counts}"
    );
    assert_eq!(b.conns().len(), 2);
}

#[test]
fn accepting_and_sending_together_pass_the_upstream_client_on() {
    // pen between an upstream balancer (the test, sending v2) and a backend wanting v1.
    let b = Recorder::start("b0");
    let args = [
        "-r",
        "-O",
        "accept_proxy v2",
        "-O",
        "proxy_protocol v1",
        "127.0.0.1:0",
        &b.spec,
    ];
    let pen = Pen::start(&args, Listen::Reported);
    let (r, _) = request(None, pen.addr(), &v2("203.0.113.5:7777", "192.0.2.80:80"));
    assert_eq!(reply_body(&r), "b0");
    let seen = read_header(&b.nth(0)).unwrap();
    assert_eq!(seen.version, 1);
    assert_eq!(seen.src, Some("203.0.113.5:7777".parse().unwrap()));
    assert_eq!(
        seen.dst,
        Some("192.0.2.80:80".parse().unwrap()),
        "the destination the upstream saw"
    );
    assert_eq!(seen.rest, REQUEST);
}

#[test]
fn io_uring_by_default_falls_back_to_tokio_when_proxy_protocol_is_on() {
    let b = Recorder::start("b0");
    // No engine forced: io_uring would serve where it works.
    let pen = Pen::start_with(
        &[],
        &["-O", "proxy_protocol v2", "127.0.0.1:0", &b.spec],
        &[],
        Listen::Reported,
    );
    assert_eq!(pen.data_path(), "tokio");
    let (r, _) = request(None, pen.addr(), b"");
    assert_eq!(reply_body(&r), "b0");
    assert_eq!(read_header(&b.nth(0)).unwrap().version, 2);
    assert!(
        wait_until(|| pen.stderr().contains("PROXY protocol")),
        "{}",
        pen.stderr()
    );
}

#[test]
fn tls_termination_accepts_a_header_before_the_handshake_and_sends_one_to_the_backend() {
    // curl sends a v1 header, then the TLS handshake; pen reads the header, terminates TLS,
    // adds X-Forwarded-For (-H) and sends a v2 header first to the backend.
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let b = Recorder::start("b0");
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let args = [
        "-r",
        "-H",
        "-E",
        &cert_s,
        "-K",
        &key_s,
        "-O",
        "accept_proxy v1",
        "-O",
        "proxy_protocol v2",
        "127.0.0.1:0",
        &b.spec,
    ];
    let pen = Pen::start(&args, Listen::Reported);
    let port = pen.port();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-k", "--max-time", "5", "--haproxy-protocol", "-v"])
        .arg(format!("https://127.0.0.1:{port}/tls"))
        .output()
        .expect("curl must be installed (scripts/install-deps.sh)");
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(body, "b0", "{}", String::from_utf8_lossy(&out.stderr));
    let raw = b.nth(0);
    let seen = read_header(&raw).expect("a v2 header first");
    assert_eq!(seen.version, 2);
    let src = seen.src.unwrap();
    assert_eq!(src.ip(), ip("127.0.0.1"));
    assert_ne!(
        src.port(),
        port,
        "the client's port as curl's header gave it"
    );
    assert_eq!(seen.dst, Some(SocketAddr::new(ip("127.0.0.1"), port)));
    let head = String::from_utf8_lossy(&seen.rest);
    assert!(head.starts_with("GET /tls HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{head}");
    assert!(head.contains("X-Forwarded-Proto: https\r\n"), "{head}");
}

#[test]
fn health_checks_of_a_server_that_requires_proxy_send_a_local_header() {
    // The backend answers 400 without a header: the HTTP check is up only because its probe
    // starts with a v2 LOCAL header (what HAProxy's check-send-proxy sends).
    let b = Recorder::strict("b0");
    let check = "server 0 check http GET /health 200 interval 1 rise 1 fall 1";
    let args = [
        "-r",
        "-u",
        "root",
        "-C",
        "0",
        "-O",
        "proxy_protocol v2",
        "127.0.0.1:0",
        &b.spec,
    ];
    let pen = Pen::start(&args, Listen::Reported);
    let cport = pen.control_port();
    assert_eq!(ctl(cport, check), "");
    assert!(
        wait_until(|| ctl(cport, "servers").contains("check up")),
        "{}",
        ctl(cport, "servers")
    );
    let probe = b.nth(0);
    assert!(
        probe.starts_with(&V2_SIG) && probe[12] == 0x20,
        "a LOCAL header first: {probe:?}"
    );
    assert!(String::from_utf8_lossy(&probe[16..]).starts_with("GET /health HTTP/1.0\r\n"));
    let (r, _) = request(None, pen.addr(), b"");
    assert_eq!(reply_body(&r), "b0", "{r:?}");
}

#[test]
fn access_lists_judge_the_real_client_of_an_accepted_header() {
    let b = Recorder::start("b0");
    let args = [
        "-r",
        "-O",
        "acl 1 deny 198.51.100.66",
        "-O",
        "acl 1 permit 0.0.0.0 0.0.0.0",
        "-O",
        "client_acl 1",
        "-O",
        "accept_proxy v1",
        "127.0.0.1:0",
        &b.spec,
    ];
    let pen = Pen::start(&args, Listen::Reported);
    let dst = pen.addr().to_string();
    // The upstream (127.0.0.1) is permitted; the real client decides.
    let (r, _) = request(None, pen.addr(), &v1("198.51.100.66:1000", &dst));
    assert_eq!(r, "", "a denied real client is closed");
    let (r, _) = request(None, pen.addr(), &v1("198.51.100.67:1000", &dst));
    assert_eq!(reply_body(&r), "b0", "{r:?}");
    assert_eq!(b.conns().len(), 1);
}
