//! The real `pen` binary on loopback, with real backends started by the tests.
//!
//! Clients bind 127.0.0.1 or 127.0.0.2 before connecting, so pen sees two client addresses.
//! Each test picks free ports and kills its pen by PID when it ends.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

fn listen(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts pen on 127.0.0.1:0 (the port it reports) with `opts` then the backend specs.
fn pen_with(opts: &[&str], backends: &[&str]) -> (Pen, SocketAddr) {
    let mut args: Vec<&str> = opts.to_vec();
    args.push("127.0.0.1:0");
    args.extend_from_slice(backends);
    let pen = Pen::start(&args, Listen::Reported);
    let addr = pen.addr();
    (pen, addr)
}

const C1: &str = "127.0.0.1";
const C2: &str = "127.0.0.2";

fn from(c: &str, pen: SocketAddr) -> String {
    get(Some(ip(c)), pen).unwrap_or_else(|e| panic!("request from {c} failed: {e}"))
}

/// A request whose connection stays open afterwards (the client never closes its side), so
/// pen keeps counting it on its server.
fn hold(c: &str, pen: SocketAddr) -> (TcpStream, String) {
    let mut s = connect_from(Some(ip(c)), pen).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let body = read_reply(&mut s).unwrap();
    (s, body)
}

#[test]
fn tracking_keeps_a_client_on_its_server_while_another_lands_elsewhere() {
    let (b1, b2) = (Backend::start("b1", C1), Backend::start("b2", C1));
    let (_pen, addr) = pen_with(&["-t", "1"], &[&b1.spec, &b2.spec]);
    let first = from(C1, addr);
    let other = from(C2, addr);
    assert_ne!(
        first, other,
        "second client should land on the other server"
    );
    for _ in 0..4 {
        assert_eq!(from(C1, addr), first, "client 1 left its server");
        assert_eq!(from(C2, addr), other, "client 2 left its server");
    }
}

#[test]
fn roundrobin_alternates_for_one_client() {
    let (b1, b2) = (Backend::start("b1", C1), Backend::start("b2", C1));
    let (_pen, addr) = pen_with(&["-r", "-t", "1"], &[&b1.spec, &b2.spec]);
    let got: Vec<String> = (0..6).map(|_| from(C1, addr)).collect();
    for w in got.windows(2) {
        assert_ne!(w[0], w[1], "roundrobin repeated a server: {got:?}");
    }
    assert_eq!((b1.hits(), b2.hits()), (3, 3));
}

#[test]
fn hash_spreads_clients_by_address() {
    let bs: Vec<Backend> = (0..3)
        .map(|i| Backend::start(&format!("b{i}"), C1))
        .collect();
    let specs: Vec<&str> = bs.iter().map(|b| b.spec.as_str()).collect();
    let (_pen, addr) = pen_with(&["-h", "-t", "1"], &specs);
    // C Pen's IPv4 hash: the raw network-order word read little-endian, modulo the count.
    let expect = |c: &str| {
        let octets = c.parse::<std::net::Ipv4Addr>().unwrap().octets();
        format!("b{}", u32::from_le_bytes(octets) % 3)
    };
    assert_ne!(expect(C1), expect(C2), "test addresses must hash apart");
    for _ in 0..3 {
        assert_eq!(from(C1, addr), expect(C1));
        assert_eq!(from(C2, addr), expect(C2));
    }
}

#[test]
fn weight_spreads_held_connections_in_proportion() {
    let (b1, b2) = (Backend::start("b1", C1), Backend::start("b2", C1));
    let s1 = format!("{}:0:0:1", b1.spec);
    let s2 = format!("{}:0:0:3", b2.spec);
    let (_pen, addr) = pen_with(&["-W", "-r", "-t", "1"], &[&s1, &s2]);
    let held: Vec<(TcpStream, String)> = (0..4).map(|_| hold(C1, addr)).collect();
    let on_b2 = held.iter().filter(|(_, b)| b == "b2").count();
    assert_eq!(on_b2, 3, "weights 1:3 over 4 held connections");
}

#[test]
fn prio_picks_the_lowest_priority_number() {
    let (b1, b2) = (Backend::start("b1", C1), Backend::start("b2", C1));
    let s1 = format!("{}:0:0:0:2", b1.spec);
    let s2 = format!("{}:0:0:0:1", b2.spec);
    let (_pen, addr) = pen_with(&["-O", "prio", "-r", "-t", "1"], &[&s1, &s2]);
    for c in [C1, C2, C1] {
        assert_eq!(from(c, addr), "b2");
    }
    assert_eq!(b1.hits(), 0);
}

#[test]
fn maxc_sends_the_next_client_elsewhere_while_one_holds_a_connection() {
    let (b1, b2) = (Backend::start("b1", C1), Backend::start("b2", C1));
    // b1 preferred (prio 1) but limited to one connection.
    let s1 = format!("{}:1:0:0:1", b1.spec);
    let s2 = format!("{}:0:0:0:2", b2.spec);
    let (_pen, addr) = pen_with(&["-O", "prio", "-r", "-t", "1"], &[&s1, &s2]);
    let (held, body) = hold(C1, addr);
    assert_eq!(body, "b1");
    assert_eq!(
        from(C2, addr),
        "b2",
        "b1 is full: next client goes elsewhere"
    );
    drop(held);
    // Once the slot frees, b1 takes clients again.
    assert!(
        wait_until(|| from(C2, addr) == "b1"),
        "b1 did not take clients again after the held connection closed"
    );
}

#[test]
fn dead_backend_is_skipped_and_requests_fail_over() {
    let b1 = Backend::start("b1", C1);
    let dead = dead_spec();
    let (_pen, addr) = pen_with(&["-r", "-t", "1"], &[&dead, &b1.spec]);
    for _ in 0..4 {
        assert_eq!(from(C1, addr), "b1");
    }
}

#[test]
fn stubborn_does_not_fail_over() {
    let b1 = Backend::start("b1", C1);
    let dead = dead_spec();
    // With -h and two servers, 127.0.0.1 hashes to slot 1: the dead one.
    let idx = u32::from_le_bytes([127, 0, 0, 1]) % 2;
    assert_eq!(idx, 1);
    let (_stubborn, addr) = pen_with(&["-s", "-h", "-t", "1"], &[&b1.spec, &dead]);
    assert!(get(Some(ip(C1)), addr).is_err(), "stubborn pen failed over");
    // Same setup without -s fails over to b1.
    let (_pen, addr2) = pen_with(&["-h", "-t", "1"], &[&b1.spec, &dead]);
    assert_eq!(from(C1, addr2), "b1");
}

#[test]
fn emergency_server_answers_when_all_backends_are_dead() {
    let em = Backend::start("emergency", C1);
    let (d1, d2) = (dead_spec(), dead_spec());
    let (_pen, addr) = pen_with(&["-e", &em.spec, "-t", "1"], &[&d1, &d2]);
    assert_eq!(from(C1, addr), "emergency");
}

#[test]
fn abuse_server_answers_a_client_the_client_acl_denies() {
    let (b1, abuse) = (Backend::start("b1", C1), Backend::start("abuse", C1));
    let (_pen, addr) = pen_with(
        &[
            "-O",
            "acl 1 deny 127.0.0.2",
            "-O",
            "client_acl 1",
            "-B",
            &abuse.spec,
            "-t",
            "1",
        ],
        &[&b1.spec],
    );
    assert_eq!(from(C2, addr), "abuse");
    assert_eq!(from(C1, addr), "b1");
}

#[test]
fn denied_client_without_abuse_server_is_closed() {
    let b1 = Backend::start("b1", C1);
    let (_pen, addr) = pen_with(
        &[
            "-O",
            "acl 1 deny 127.0.0.2",
            "-O",
            "client_acl 1",
            "-t",
            "1",
        ],
        &[&b1.spec],
    );
    assert!(
        get(Some(ip(C2)), addr).is_err(),
        "denied client got a reply"
    );
    assert_eq!(from(C1, addr), "b1");
    assert_eq!(b1.hits(), 1, "the denied client reached the backend");
}

#[test]
fn ipv6_client_reaches_ipv4_backend() {
    let b1 = Backend::start("b1", C1);
    let pen = Pen::start(&["-t", "1", "[::1]:0", &b1.spec], Listen::Reported);
    let addr = pen.addr();
    assert_eq!(addr.ip(), ip("::1"));
    assert_eq!(get(None, addr).unwrap(), "b1");
}

#[test]
fn ipv4_client_reaches_ipv6_backend() {
    let b6 = Backend::start("b6", "::1");
    let (_pen, addr) = pen_with(&["-t", "1"], &[&b6.spec]);
    assert_eq!(from(C1, addr), "b6");
    let seen = b6.seen();
    assert!(
        seen.iter().all(|p| p.is_some_and(|p| p.is_ipv6())),
        "backend saw {seen:?}"
    );
}

#[test]
fn unix_socket_listener_and_backend() {
    let dir = tempfile::tempdir().unwrap();
    let backend_path = dir.path().join("backend.sock");
    let listen_path = dir.path().join("pen.sock");
    let b = Backend::start_unix("unix-b", &backend_path);
    let l = listen_path.display().to_string();
    let _pen = Pen::start(&["-t", "1", &l, &b.spec], Listen::Unix(listen_path.clone()));
    assert_eq!(get_unix(&listen_path).unwrap(), "unix-b");
    assert_eq!(get_unix(&listen_path).unwrap(), "unix-b");
}

#[test]
fn half_closed_client_still_gets_the_reply() {
    let b1 = Backend::start("b1", C1);
    let (_pen, addr) = pen_with(&["-t", "1"], &[&b1.spec]);
    let mut s = connect_from(Some(ip(C1)), addr).unwrap();
    // No blank line: the backend answers only once it sees EOF, which pen must pass on.
    s.write_all(b"PING").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_reply(&mut s).unwrap(), "b1");
}

#[test]
fn conn_max_one_holds_the_second_client_until_the_first_leaves() {
    let b1 = Backend::start("b1", C1);
    let (_pen, addr) = pen_with(&["-x", "1", "-t", "1"], &[&b1.spec]);
    let (first, body) = hold(C1, addr);
    assert_eq!(body, "b1");
    let mut second = connect_from(Some(ip(C2)), addr).unwrap();
    second.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    match second.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("second client was served while the table was full: {other:?}"),
    }
    assert_eq!(b1.hits(), 1);
    drop(first);
    second.set_read_timeout(Some(STEP)).unwrap();
    assert_eq!(read_reply(&mut second).unwrap(), "b1");
}

#[test]
fn bad_command_line_exits_nonzero_with_one_line_before_daemonizing() {
    for args in [
        &["-x", "abc", "8080", "127.0.0.1:80"][..],
        &["-t", "0", "8080", "127.0.0.1:80"][..],
        &["8080", "no-such-host.invalid:80"][..],
    ] {
        let f = pen_fails(args);
        assert_eq!(f.code, Some(1), "{args:?}: {}", f.stderr);
        let lines: Vec<&str> = f.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: expected one line, got {:?}",
            f.stderr
        );
        assert!(lines[0].starts_with("pen: "), "{args:?}: {:?}", lines[0]);
    }
}

#[test]
fn listen_address_in_use_is_reported_before_daemonizing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let l = taken.local_addr().unwrap().to_string();
    // No -f: the error must still reach stderr, with the address, and a non-zero exit.
    let f = pen_fails(&[&l, "127.0.0.1:80"]);
    assert_eq!(f.code, Some(1), "{}", f.stderr);
    assert!(f.stderr.contains(&l), "{}", f.stderr);
    assert!(f.elapsed < Duration::from_secs(2));
}

#[test]
fn no_arguments_prints_usage_and_fails() {
    let f = pen_fails(&[]);
    assert_eq!(f.code, Some(1));
    assert!(f.stderr.contains("usage"), "{}", f.stderr);
}

#[test]
fn config_file_defines_servers_at_startup() {
    let (b1, b2) = (Backend::start("b1", C1), Backend::start("b2", C1));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pen.cfg");
    let (p1, p2) = (
        b1.spec.rsplit_once(':').unwrap().1,
        b2.spec.rsplit_once(':').unwrap().1,
    );
    std::fs::write(
        &cfg,
        format!(
            "# servers come from the file\nroundrobin\nserver 0 address 127.0.0.1 port {p1}\nserver 1 address 127.0.0.1 port {p2}\n"
        ),
    )
    .unwrap();
    let cfg_s = cfg.display().to_string();
    let l = "127.0.0.1:0".to_string();
    let pen = Pen::start(&["-F", &cfg_s, "-t", "1", &l], Listen::Reported);
    let port = pen.port();
    let got: Vec<String> = (0..4).map(|_| from(C1, listen(port))).collect();
    assert_eq!(
        (b1.hits(), b2.hits()),
        (2, 2),
        "roundrobin from the file: {got:?}"
    );
}

#[test]
fn bad_config_file_line_is_fatal_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.cfg");
    std::fs::write(&cfg, "roundrobin\nfrobnicate 3\n").unwrap();
    let cfg_s = cfg.display().to_string();
    let f = pen_fails(&["-f", "-F", &cfg_s, "127.0.0.1:0", "127.0.0.1:80"]);
    assert_eq!(f.code, Some(1));
    assert!(
        f.stderr.contains(&format!("{cfg_s}:2:")),
        "expected file:line in {:?}",
        f.stderr
    );
}

#[test]
fn sigterm_exits_cleanly_and_removes_the_pid_file() {
    let b1 = Backend::start("b1", C1);
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pen.pid");
    let pf = pid_file.display().to_string();
    let l = "127.0.0.1:0".to_string();
    let mut pen = Pen::start(&["-p", &pf, &l, &b1.spec], Listen::Reported);
    let port = pen.port();
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), pen.pid().to_string());
    assert_eq!(from(C1, listen(port)), "b1");
    assert_eq!(pen.signal_and_wait(libc::SIGTERM), Some(0));
    assert!(!pid_file.exists(), "pid file left behind");
}

#[test]
fn daemonized_pen_serves_and_its_pid_file_names_the_daemon() {
    let b1 = Backend::start("b1", C1);
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pen.pid");
    let pf = pid_file.display().to_string();
    let err_path = dir.path().join("stderr");
    let status = std::process::Command::new(pen_bin())
        .args(["-p", &pf, "-t", "1", "127.0.0.1:0", &b1.spec])
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "parent exited with {status}");
    // Reported before daemonizing, so it is there once the parent has exited.
    let port: u16 = std::fs::read_to_string(&err_path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("pen: listening on 127.0.0.1:"))
        .expect("pen reports its port")
        .parse()
        .unwrap();
    assert!(wait_until(
        || std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    ));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Kill the daemon by its PID whatever happens below.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the daemon this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _guard = KillOnDrop(pid);
    assert!(wait_until(|| tcp_listening(port)));
    assert_eq!(from(C1, listen(port)), "b1");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    assert!(wait_until(|| !pid_file.exists()), "pid file not removed");
    assert!(start.elapsed() < STEP);
}

#[test]
fn connect_timeout_moves_on_to_the_next_server() {
    let b1 = Backend::start("b1", C1);
    let hole = Blackhole::new();
    // Roundrobin starts after slot 0, so the first request tries the blackhole (slot 1).
    let (_pen, addr) = pen_with(&["-r", "-t", "1"], &[&b1.spec, &hole.spec]);
    let start = Instant::now();
    assert_eq!(from(C1, addr), "b1");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "expected one 1 s connect timeout, took {took:?}"
    );
    // The timed-out server is blacklisted: the next request goes straight to b1.
    let start = Instant::now();
    assert_eq!(from(C1, addr), "b1");
    assert!(start.elapsed() < Duration::from_millis(500));
}

#[test]
fn idle_timeout_closes_a_silent_connection() {
    let b1 = Backend::start("b1", C1);
    let (_pen, addr) = pen_with(&["-O", "idle_timeout 1", "-t", "1"], &[&b1.spec]);
    let mut s = connect_from(Some(ip(C1)), addr).unwrap();
    assert!(
        wait_until(|| b1.hits() == 1),
        "pen did not connect upstream"
    );
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    let took = start.elapsed();
    assert_eq!(n, 0, "expected EOF from pen");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(2500),
        "closed after {took:?}, expected about 1 s"
    );
}

fn control(port: u16, line: &str) -> String {
    let mut s = connect_from(None, listen(port)).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn control_socket_as_root_needs_u() {
    common::require_root("checks C Pen's root rule");
    let f = pen_fails(&["-f", "-C", "0", "127.0.0.1:0", "127.0.0.1:80"]);
    assert_eq!(f.code, Some(1));
    assert!(f.stderr.contains("-u"), "{}", f.stderr);
}

#[test]
fn control_socket_closes_a_connection_and_exits_with_x() {
    let b1 = Backend::start("b1", C1);
    let (mut pen, addr) = pen_with(&["-u", "root", "-X", "-C", "0", "-t", "1"], &[&b1.spec]);
    let cport = pen.control_port();
    // A silent client: pen connects upstream, nothing moves.
    let mut s = connect_from(Some(ip(C1)), addr).unwrap();
    assert!(wait_until(|| b1.hits() == 1));
    assert!(wait_until(
        || control(cport, "connection 0").contains("127.0.0.1")
    ));
    control(cport, "close 0");
    let start = Instant::now();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed client got data");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "close 0 did not close"
    );
    control(cport, "exit");
    let deadline = Instant::now() + STEP;
    let code = loop {
        if let Some(st) = pen.child.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < deadline, "pen did not exit on `exit`");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn listen_command_moves_the_listener_and_debug_raises_the_log_level() {
    let b1 = Backend::start("b1", C1);
    let (pen, addr) = pen_with(&["-u", "root", "-C", "0", "-t", "1"], &[&b1.spec]);
    let cport = pen.control_port();
    control(cport, "debug 2");
    let new_port = probe_port();
    let reply = control(cport, &format!("listen 127.0.0.1:{new_port}"));
    assert!(wait_until(|| tcp_listening(new_port)), "reply {reply:?}");
    assert!(
        wait_until(|| !tcp_listening(addr.port())),
        "old listener still open"
    );
    assert_eq!(from(C1, listen(new_port)), "b1");
    assert!(
        wait_until(|| pen.stderr().contains("connected to")),
        "no debug log after `debug 2`: {}",
        pen.stderr()
    );
}
