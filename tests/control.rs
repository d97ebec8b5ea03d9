//! The control socket through a real `pen` process on loopback: C Pen's reply formats, every
//! command that changes or reports state, run-time server changes and blacklisting steering
//! live traffic, the `write` round trip, `listen`, `exit`, `control_acl`, the status page, the
//! Prometheus endpoint, and control clients that must not delay proxied requests.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, Listen, Pen, STEP, ctl, get, probe_port, scrape, tcp_listening, wait_until};

/// Like [`ctl`], but a connection that pen closes or resets without a reply gives "".
fn ctl_or_nothing(port: u16, cmd: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(STEP)).unwrap();
    let _ = s.write_all(format!("{cmd}\n").as_bytes());
    let mut out = String::new();
    match s.read_to_string(&mut out) {
        Ok(_) => out,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        Err(e) => panic!("reading the control reply: {e}"),
    }
}

/// Sends a command with our `penctl`; returns (exit code, stdout, stderr).
fn penctl(target: &str, words: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_penctl"))
        .arg(target)
        .args(words)
        .output()
        .expect("run penctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The local addresses of the TCP sockets listening on `port` (from /proc/net/tcp), such as
/// `0100007F` for 127.0.0.1 and `00000000` for 0.0.0.0.
fn listening_addresses(port: u16) -> Vec<String> {
    let want = format!("{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            let (addr, p) = local.split_once(':')?;
            (p == want && state == "0A").then(|| addr.to_string())
        })
        .collect()
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// pen with a control port (as root, C Pen needs `-u` to open it; `-u root` forces it).
fn pen_with_control(extra: &[&str], backends: &[&str]) -> (Pen, u16, u16) {
    let mut args: Vec<&str> = vec!["-u", "root", "-C", "0"];
    args.extend_from_slice(extra);
    args.push("127.0.0.1:0");
    args.extend_from_slice(backends);
    let pen = Pen::start(&args, Listen::Reported);
    let (lport, cport) = (pen.port(), pen.control_port());
    (pen, lport, cport)
}

#[test]
fn replies_match_c_pen_0_34_formats() {
    let (pen, lport, cport) =
        pen_with_control(&["-X"], &["127.0.0.1:19992", "127.0.0.1:19993:5:10:2:1"]);
    assert_eq!(
        ctl(cport, "servers"),
        "0 addr 127.0.0.1 port 19992 conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0\n\
         1 addr 127.0.0.1 port 19993 conn 0 max 5 hard 10 weight 2 prio 1 sx 0 rx 0\n"
    );
    let pid = pen.pid().to_string() + "\n";
    let listen = format!("127.0.0.1:{lport}\n");
    let control = format!("127.0.0.1:{cport}\n");
    for (cmd, want) in [
        (
            "mode",
            "no hash no roundrobin no stubborn no weight no prio\n",
        ),
        ("blacklist", "30\n"),
        ("blacklist 7", "7\n"),
        ("timeout", "3\n"),
        ("timeout 5", "5\n"),
        ("tracking", "0\n"),
        ("tracking 9", "9\n"),
        ("clients_max", "2048\n"),
        ("clients_max 10", "2048\n"),
        ("conn_max", "500\n"),
        ("conn_max 10", "500\n"),
        ("conn_max 1000", "1000\n"),
        ("debug", "0\n"),
        ("debug 2", "2\n"),
        ("client_acl", "0\n"),
        ("control_acl", "0\n"),
        ("pid", pid.as_str()),
        ("listen", listen.as_str()),
        ("control", control.as_str()),
        ("log", ""),
        ("web_stats", ""),
        ("idlers", "Idlers: 0/0\n"),
        ("idle_timeout", "Idle timeout: 0 seconds\n"),
        ("idle_timeout 5", "Idle timeout: 5 seconds\n"),
        ("tarpit_acl", "tarpit_acl = -1"),
        ("tarpit_acl 3", "tarpit_acl = 3"),
        ("status", "Unable to create webstats\n"),
        ("recent", ""),
        ("hash", ""),
        ("weight", ""),
        ("prio", ""),
        ("stubborn", ""),
        ("roundrobin", ""),
        ("mode", "hash roundrobin stubborn weight prio\n"),
        ("no hash", ""),
        ("mode", "no hash roundrobin stubborn weight prio\n"),
        ("tcp_nodelay", ""),
        ("tcp_fastclose both", ""),
        ("pending_max 50", ""),
        ("acl 1 permit 10.0.0.1", ""),
        ("transparent", ""),
        ("no transparent", ""),
        ("block", ""),
        ("ssl_option no_sslv3", ""),
        (
            "connection 0",
            "Connection 0:\nstate = 0\ndownfd = -1, upfd = -1\nclient = -1, server = -1\npend = 0\n",
        ),
        ("connection 5000", "Connection 5000 out of range\n"),
    ] {
        assert_eq!(ctl(cport, cmd), want, "reply to {cmd:?}");
    }
}

#[test]
fn unknown_and_malformed_commands_get_one_error_line_and_pen_keeps_running() {
    let b = Backend::start("a", "127.0.0.1");
    let (_pen, lport, cport) = pen_with_control(&[], &[&b.spec]);
    for (cmd, word) in [
        ("frobnicate", "frobnicate"),
        ("timeout abc", "timeout"),
        ("server x address 1.2.3.4", "server"),
        ("acl 12 permit 1.2.3.4", "acl"),
        ("tcp_fastclose sideways", "tcp_fastclose"),
    ] {
        let r = ctl(cport, cmd);
        assert!(
            r.starts_with(&format!("do_cmd: ignoring command starting with '{word}'")),
            "{cmd:?} -> {r:?}"
        );
        assert_eq!(r.matches('\n').count(), 1, "one line for {cmd:?}: {r:?}");
    }
    assert_eq!(
        ctl(cport, "timeout"),
        "3\n",
        "malformed timeout changed nothing"
    );
    assert_eq!(get(None, at(lport)).unwrap(), "a", "still balancing");
}

#[test]
fn runtime_server_changes_steer_live_traffic() {
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let (_pen, lport, cport) = pen_with_control(&["-r"], &[&a.spec]);
    assert_eq!(get(None, at(lport)).unwrap(), "a");
    // Move slot 0 to backend b.
    let bport = b.spec.rsplit(':').next().unwrap();
    assert_eq!(ctl(cport, &format!("server 0 port {bport}")), "");
    for _ in 0..4 {
        assert_eq!(get(None, at(lport)).unwrap(), "b");
    }
    // Add slot 1 by host name: resolved at run time.
    let aport = a.spec.rsplit(':').next().unwrap();
    assert_eq!(
        ctl(cport, &format!("server 1 address localhost port {aport}")),
        ""
    );
    let servers = ctl(cport, "servers");
    assert!(
        servers.contains(&format!("1 addr 127.0.0.1 port {aport}"))
            || servers.contains(&format!("1 addr ::1 port {aport}")),
        "{servers}"
    );
    let bodies: Vec<String> = (0..6).map(|_| get(None, at(lport)).unwrap()).collect();
    assert!(bodies.iter().any(|x| x == "a"), "{bodies:?}");
    assert!(bodies.iter().any(|x| x == "b"), "{bodies:?}");
    // A name that does not resolve is refused and changes nothing.
    let r = ctl(cport, "server 1 address no-such-host.invalid");
    assert!(
        r.starts_with("do_cmd: ignoring command starting with 'server'")
            && r.contains("no-such-host.invalid"),
        "{r}"
    );
    let addresses = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.split(" conn ").next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(addresses(&ctl(cport, "servers")), addresses(&servers));
}

#[test]
fn blacklisting_steers_live_traffic() {
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let (_pen, lport, cport) = pen_with_control(&["-r"], &[&a.spec, &b.spec]);
    assert_eq!(ctl(cport, "server 0 blacklist 60"), "");
    for _ in 0..6 {
        assert_eq!(get(None, at(lport)).unwrap(), "b");
    }
    assert_eq!(ctl(cport, "server 0 blacklist 0"), "");
    let bodies: Vec<String> = (0..6).map(|_| get(None, at(lport)).unwrap()).collect();
    assert!(bodies.iter().any(|x| x == "a"), "{bodies:?}");
    // Traffic counters show up in `servers` and `recent`.
    assert!(wait_until(
        || !ctl(cport, "servers").contains("sx 0 rx 0\n1")
    ));
    let recent = ctl(cport, "recent");
    assert!(recent.starts_with("127.0.0.1 connects "), "{recent}");
}

#[test]
fn write_round_trip_reproduces_servers_and_mode() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("written.cfg");
    // `write FILE` from a TCP client needs control_any_file (pen-rs).
    let (_pen, _lport, cport) = pen_with_control(
        &["-O", "control_any_file"],
        &[&a.spec, "127.0.0.1:19993:5:10:2:1"],
    );
    for cmd in [
        "server 3 address 127.0.0.3 port 83 max 7 hard 9 weight 4 prio 2",
        "server 1 acl 2",
        "weight",
        "stubborn",
    ] {
        assert_eq!(ctl(cport, cmd), "", "{cmd}");
    }
    assert_eq!(ctl(cport, "blacklist 12"), "12\n");
    assert_eq!(ctl(cport, &format!("write {}", file.display())), "");
    let servers = ctl(cport, "servers");
    let mode = ctl(cport, "mode");

    let f = file.display().to_string();
    let fresh = Pen::start(
        &["-u", "root", "-C", "0", "-F", &f, "127.0.0.1:0"],
        Listen::Reported,
    );
    let cport2 = fresh.control_port();
    assert_eq!(ctl(cport2, "servers"), servers);
    assert_eq!(ctl(cport2, "mode"), mode);
    assert_eq!(ctl(cport2, "blacklist"), "12\n");
}

#[test]
fn write_without_file_or_f_is_an_error() {
    let (_pen, _l, cport) = pen_with_control(&[], &["127.0.0.1:9"]);
    let r = ctl(cport, "write");
    assert!(
        r.starts_with("do_cmd: ignoring command starting with 'write'"),
        "{r}"
    );
}

#[test]
fn exit_only_with_dash_x() {
    let (mut pen, _l, cport) = pen_with_control(&[], &["127.0.0.1:9"]);
    assert_eq!(
        ctl(cport, "exit"),
        "Exit is not enabled; restart with -X flag\n"
    );
    assert!(pen.child.try_wait().unwrap().is_none(), "still running");
    drop(pen);

    let (mut pen, _l, cport) = pen_with_control(&["-X"], &["127.0.0.1:9"]);
    assert_eq!(ctl(cport, "exit"), "");
    let mut status = None;
    assert!(
        wait_until(|| {
            status = pen.child.try_wait().unwrap();
            status.is_some()
        }),
        "pen did not exit after `exit`"
    );
    assert_eq!(status.unwrap().code(), Some(0));
}

#[test]
fn listen_reopens_the_listener() {
    let a = Backend::start("a", "127.0.0.1");
    let (_pen, lport, cport) = pen_with_control(&[], &[&a.spec]);
    let new_port = probe_port();
    assert_eq!(
        ctl(cport, &format!("listen 127.0.0.1:{new_port}")),
        format!("127.0.0.1:{new_port}\n")
    );
    assert!(wait_until(|| tcp_listening(new_port)));
    assert_eq!(get(None, at(new_port)).unwrap(), "a");
    assert!(wait_until(|| !tcp_listening(lport)), "old listener closed");
    assert_eq!(ctl(cport, "listen"), format!("127.0.0.1:{new_port}\n"));
    // A port that is taken: error, and pen keeps the listener it has.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = taken.local_addr().unwrap().port();
    let r = ctl(cport, &format!("listen 127.0.0.1:{tport}"));
    assert!(
        r.contains("'listen'") && r.contains(&tport.to_string()),
        "{r}"
    );
    assert_eq!(ctl(cport, "listen"), format!("127.0.0.1:{new_port}\n"));
    assert_eq!(get(None, at(new_port)).unwrap(), "a");
}

#[test]
fn control_acl_applies_to_tcp_clients() {
    let (_pen, _l, cport) = pen_with_control(&[], &["127.0.0.1:9"]);
    assert_eq!(ctl(cport, "acl 1 deny 127.0.0.1"), "");
    assert_eq!(ctl(cport, "control_acl 1"), "1\n");
    // The next client from 127.0.0.1 is closed without a reply, and nothing it sends runs.
    assert_eq!(ctl_or_nothing(cport, "control_acl 0"), "");
    assert_eq!(ctl_or_nothing(cport, "pid"), "");
}

#[test]
fn status_with_web_stats_replies_and_writes_the_page() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("status.html");
    let ws = w.display().to_string();
    let (_pen, lport, cport) = pen_with_control(&["-w", &ws], &[&a.spec]);
    get(None, at(lport)).unwrap();
    let page = ctl(cport, "status");
    assert!(
        page.starts_with("<html>\n<head>\n<title>Pen status page</title>"),
        "{page}"
    );
    assert!(page.contains("1 servers"), "{page}");
    assert!(page.contains("<h2>Active clients</h2>"), "{page}");
    assert!(page.contains("<td>127.0.0.1</td>"), "{page}");
    assert_eq!(std::fs::read_to_string(&w).unwrap(), page);
    assert_eq!(ctl(cport, "web_stats"), format!("{ws}\n"));
}

#[test]
fn prometheus_endpoint_exposes_per_server_metrics() {
    let a = Backend::start("a", "127.0.0.1");
    let (_pen, lport, cport) = pen_with_control(&[], &[&a.spec, "127.0.0.1:9"]);
    let mport = probe_port();
    assert_eq!(
        ctl(cport, &format!("prometheus 127.0.0.1:{mport}")),
        format!("127.0.0.1:{mport}\n")
    );
    assert!(wait_until(|| tcp_listening(mport)));
    for _ in 0..3 {
        get(None, at(lport)).unwrap();
    }
    assert_eq!(ctl(cport, "server 1 blacklist 60"), "");
    let mut s = TcpStream::connect(("127.0.0.1", mport)).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.0 200 OK\r\n"), "{resp}");
    assert!(
        resp.contains("Content-Type: text/plain; version=0.0.4"),
        "{resp}"
    );
    let a_label = format!("server=\"0\",address=\"{}\"", a.spec);
    assert!(
        resp.contains(&format!("pen_server_selections_total{{{a_label}}} 3\n")),
        "{resp}"
    );
    assert!(
        resp.contains("pen_server_blacklisted{server=\"1\",address=\"127.0.0.1:9\"} 1\n"),
        "{resp}"
    );
    assert!(wait_until(|| {
        let m = scrape(mport);
        m.contains(&format!("pen_server_received_bytes_total{{{a_label}}} "))
            && !m.contains(&format!("pen_server_received_bytes_total{{{a_label}}} 0\n"))
    }));
    assert_eq!(ctl(cport, "prometheus"), format!("127.0.0.1:{mport}\n"));
}

#[test]
fn unix_control_socket_and_our_penctl() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("pen.ctl");
    let s = sock.display().to_string();
    let _pen = Pen::start(
        &["-u", "root", "-C", &s, "127.0.0.1:0", &a.spec],
        Listen::Reported,
    );
    assert!(wait_until(|| common::unix_listening(&sock)));
    let (code, out, _) = penctl(&s, &["blacklist", "11"]);
    assert_eq!((code, out.as_str()), (Some(0), "11\n"));
    let (code, out, _) = penctl(&s, &["mode"]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "no hash no roundrobin no stubborn no weight no prio\n");
}

#[test]
fn penctl_fails_clearly_when_it_cannot_connect() {
    let port = common::dead_port();
    let (code, out, err) = penctl(&format!("127.0.0.1:{port}"), &["servers"]);
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let (code, _, err) = penctl("/nonexistent/pen.ctl", &["servers"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/pen.ctl"), "{err}");
}

#[test]
fn control_port_is_refused_as_root_without_dash_u() {
    common::require_root("checks the rule for root (as a normal user the port opens)");
    let c = "127.0.0.1:0";
    // pen-rs makes this a start-up error (C Pen only logs it and runs without control).
    let f = common::pen_fails(&["-f", "-C", c, "127.0.0.1:0", "127.0.0.1:9"]);
    assert_eq!(f.code, Some(1));
    assert!(
        f.stderr.contains("-u") && f.stderr.contains(c),
        "{}",
        f.stderr
    );
    let opened: SocketAddr = f
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("pen: listening on "))
        .expect("the listener opens before the control socket")
        .parse()
        .unwrap();
    assert!(
        !tcp_listening(opened.port()),
        "pen exited, nothing left open"
    );
    assert!(!f.stderr.contains("control port on"), "{}", f.stderr);
}

/// `pen 127.0.0.1:0` and `-C 0` bind ports the kernel picks; pen reports both on stderr,
/// proxies on the reported address and shows it in `listen`.
#[test]
fn port_zero_listen_and_control_report_the_bound_addresses() {
    let a = Backend::start("a", "127.0.0.1");
    let pen = Pen::start(
        &["-u", "root", "-C", "0", "127.0.0.1:0", &a.spec],
        Listen::Reported,
    );
    let addr = pen.addr();
    assert_eq!(addr.ip(), common::ip("127.0.0.1"));
    assert_ne!(addr.port(), 0);
    assert!(tcp_listening(addr.port()));
    assert_eq!(get(None, addr).unwrap(), "a");
    let c = pen.control_addr();
    assert_eq!(c.ip(), common::ip("127.0.0.1"), "-C port alone is loopback");
    assert_ne!(c.port(), 0);
    assert_eq!(ctl(c.port(), "listen"), format!("{addr}\n"));
}

/// A silent control client, a client sending 1 MB without a newline and a flood of control
/// connections, all at once, do not delay proxied requests; the control port still answers
/// afterwards.
#[test]
fn misbehaving_control_clients_do_not_delay_proxied_requests() {
    let a = Backend::start("a", "127.0.0.1");
    let (_pen, lport, cport) = pen_with_control(&[], &[&a.spec]);
    let baseline = {
        let t = Instant::now();
        for _ in 0..20 {
            get(None, at(lport)).unwrap();
        }
        t.elapsed() / 20
    };
    // Silent clients: connect and say nothing.
    let silent: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", cport)).ok())
        .collect();
    // A client that sends 1 MB without a newline.
    let big = std::thread::spawn(move || {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", cport)) {
            s.set_write_timeout(Some(STEP)).ok();
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..16 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    // A flood: 400 connections that send a partial command and go away.
    let flood = std::thread::spawn(move || {
        for _ in 0..400 {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", cport)) {
                let _ = s.write_all(b"serv");
            }
        }
    });
    let mut worst = Duration::ZERO;
    for _ in 0..200 {
        let t = Instant::now();
        assert_eq!(get(None, at(lport)).unwrap(), "a");
        worst = worst.max(t.elapsed());
    }
    flood.join().unwrap();
    big.join().unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "a proxied request took {worst:?} (baseline {baseline:?})"
    );
    drop(silent);
    // Once the misbehaving clients are gone (or timed out), control works again.
    assert!(wait_until(|| {
        TcpStream::connect(("127.0.0.1", cport)).is_ok_and(|mut s| {
            s.set_read_timeout(Some(STEP)).ok();
            let mut r = String::new();
            s.write_all(b"blacklist\n").is_ok() && s.read_to_string(&mut r).is_ok() && r == "30\n"
        })
    }));
}

#[test]
fn include_applies_a_file_and_reports_its_bad_lines() {
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("more.cfg");
    std::fs::write(
        &file,
        format!(
            "# more servers\nserver 0 address 127.0.0.1 port {}\nfrobnicate\ntracking 44\n",
            b.spec.rsplit(':').next().unwrap()
        ),
    )
    .unwrap();
    let (_pen, lport, cport) = pen_with_control(&["-O", "control_any_file"], &[&a.spec]);
    let r = ctl(cport, &format!("include {}", file.display()));
    assert_eq!(r.lines().count(), 1, "{r}");
    assert!(
        r.starts_with("do_cmd: ignoring command starting with 'include'")
            && r.contains(&format!("{}:3:", file.display())),
        "{r}"
    );
    assert_eq!(ctl(cport, "tracking"), "44\n");
    assert_eq!(get(None, at(lport)).unwrap(), "b");
}

#[test]
fn live_connections_are_listed_by_connection_and_socket() {
    let a = Backend::start("a", "127.0.0.1");
    let (_pen, lport, cport) = pen_with_control(&[], &[&a.spec]);
    // A request that is not finished yet: the backend waits for the blank line.
    let mut open = TcpStream::connect(at(lport)).unwrap();
    open.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    assert!(wait_until(
        || ctl(cport, "connection 0").contains("state = 2")
    ));
    let c0 = ctl(cport, "connection 0");
    let downfd: i32 = c0
        .lines()
        .find_map(|l| l.strip_prefix("downfd = "))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{c0}"));
    assert!(c0.contains("server = 0"), "{c0}");
    assert_eq!(
        ctl(cport, &format!("socket {downfd}")),
        format!("Socket {downfd} belongs to connection 0\n")
    );
    open.write_all(b"\r\n").unwrap();
    let mut reply = String::new();
    open.set_read_timeout(Some(STEP)).unwrap();
    open.read_to_string(&mut reply).unwrap();
    drop(open);
    assert!(wait_until(
        || ctl(cport, "connection 0").contains("state = 0")
    ));
}

#[test]
fn prometheus_from_the_command_line_starts_with_pen() {
    let a = Backend::start("a", "127.0.0.1");
    let mport = probe_port();
    let o = format!("prometheus 127.0.0.1:{mport}");
    let pen = Pen::start(&["-o", &o, "127.0.0.1:0", &a.spec], Listen::Reported);
    let lport = pen.port();
    assert!(wait_until(|| tcp_listening(mport)));
    get(None, at(lport)).unwrap();
    let m = scrape(mport);
    assert!(m.contains("pen_servers 1\n"), "{m}");
    assert!(m.contains("pen_clients_tracked 1\n"), "{m}");
}

#[test]
fn prometheus_bad_or_busy_address_is_refused_and_changes_nothing() {
    let (_pen, _l, cport) = pen_with_control(&[], &["127.0.0.1:9"]);
    let r = ctl(cport, "prometheus lb.example:9100");
    assert!(
        r.starts_with("do_cmd: ignoring command starting with 'prometheus'")
            && r.contains("host name"),
        "{r}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = taken.local_addr().unwrap().port();
    let r = ctl(cport, &format!("prometheus 127.0.0.1:{tport}"));
    assert!(
        r.contains("'prometheus'") && r.contains(&tport.to_string()),
        "{r}"
    );
    assert_eq!(
        ctl(cport, "prometheus"),
        "",
        "the failed address was not kept"
    );
    let mport = probe_port();
    ctl(cport, &format!("prometheus 127.0.0.1:{mport}"));
    assert!(wait_until(|| tcp_listening(mport)));
    assert_eq!(ctl(cport, "no prometheus"), "");
    assert!(wait_until(|| !tcp_listening(mport)), "endpoint still open");
}

/// `worker_threads` (pen-rs addition) is a start-up setting: `-O` builds the runtime with it,
/// penctl reports the value in force, a run-time change is stored for the next start, and the
/// default is the single-threaded runtime.
#[test]
fn worker_threads_from_dash_o_is_in_force_and_proxying_works() {
    let a = Backend::start("a", "127.0.0.1");
    let (_pen, lport, cport) = pen_with_control(&["-O", "worker_threads 2"], &[&a.spec]);
    let target = format!("127.0.0.1:{cport}");
    let (code, out, _) = penctl(&target, &["worker_threads"]);
    assert_eq!((code, out.as_str()), (Some(0), "2\n"));
    for _ in 0..4 {
        assert_eq!(get(None, at(lport)).unwrap(), "a");
    }
    let (_, out, _) = penctl(&target, &["worker_threads", "3"]);
    assert!(
        out.starts_with("worker_threads 3 takes effect at the next start")
            && out.contains("2 in force"),
        "{out}"
    );
    assert_eq!(penctl(&target, &["worker_threads"]).1, "2\n");
    let r = ctl(cport, "worker_threads 0");
    assert!(
        r.starts_with("do_cmd: ignoring command starting with 'worker_threads'")
            && r.contains("from 1 to 1024"),
        "{r}"
    );
    assert_eq!(get(None, at(lport)).unwrap(), "a", "still balancing");

    let (_pen1, lport1, cport1) = pen_with_control(&[], &[&a.spec]);
    assert_eq!(ctl(cport1, "worker_threads"), "1\n", "the default");
    assert_eq!(get(None, at(lport1)).unwrap(), "a");

    let f = common::pen_fails(&["-f", "-O", "worker_threads 0", "127.0.0.1:9", "127.0.0.1:9"]);
    assert_eq!(f.code, Some(1));
    assert!(
        f.stderr.contains("worker_threads") && f.stderr.contains("from 1 to 1024"),
        "{}",
        f.stderr
    );
}

/// C Pen replies the listen address as it was given (`8080`, not `0.0.0.0:8080`; recorded in
/// docs/cpen-replies.md); scripts compare the string. `write` keeps it and reads back.
#[test]
fn listen_replies_the_address_as_given_and_write_keeps_it() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pen.cfg");
    std::fs::write(&file, "blacklist 13\n").unwrap();
    let f = file.display().to_string();
    let (lport, cport) = (probe_port(), probe_port());
    let (c, l) = (format!("127.0.0.1:{cport}"), lport.to_string());
    let _pen = Pen::start(
        &["-u", "root", "-C", &c, "-F", &f, &l, &a.spec],
        Listen::Tcp(lport),
    );
    assert!(wait_until(|| tcp_listening(cport)));
    assert_eq!(ctl(cport, "listen"), format!("{lport}\n"));
    assert_eq!(get(None, at(lport)).unwrap(), "a");
    let new_port = probe_port();
    assert_eq!(
        ctl(cport, &format!("listen {new_port}")),
        format!("{new_port}\n")
    );
    assert!(wait_until(|| tcp_listening(new_port)));
    assert_eq!(ctl(cport, "listen"), format!("{new_port}\n"));
    // `write` (the -F file) puts it in the header as given; pen started from that header
    // and file listens there again.
    assert_eq!(ctl(cport, "write"), "");
    let text = std::fs::read_to_string(&file).unwrap();
    let header = text.lines().nth(1).unwrap_or_default();
    assert!(header.ends_with(&format!(" {new_port}")), "{text}");
    let parsed = pen::cli::parse(
        header
            .trim_start_matches("# pen ")
            .split(' ')
            .map(|w| w.trim_matches('\'').to_string()),
    )
    .unwrap();
    assert_eq!(
        parsed.config.listen,
        Some(pen::config::ListenAddr::Inet(
            ([0, 0, 0, 0], new_port).into()
        ))
    );
}

#[test]
fn version_command_and_penctl_version_say_pen_rs() {
    let (_pen, _l, cport) = pen_with_control(&[], &["127.0.0.1:9"]);
    assert_eq!(ctl(cport, "version"), format!("{}\n", pen::cli::VERSION));
    let (code, out, _) = penctl(&format!("127.0.0.1:{cport}"), &["version"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("pen-rs "), "{out}");
}

/// `-C PORT` without a host listens on 127.0.0.1 only (C Pen: every address); `-C
/// 0.0.0.0:PORT` keeps the old behaviour and warns at start-up, as the socket has no
/// authentication and control_acl admits everyone.
#[test]
fn control_port_without_host_is_loopback_and_a_reachable_one_warns() {
    let a = Backend::start("a", "127.0.0.1");
    let (lport, cport) = (probe_port(), probe_port());
    let (c, l) = (cport.to_string(), format!("127.0.0.1:{lport}"));
    let pen = Pen::start(&["-u", "root", "-C", &c, &l, &a.spec], Listen::Tcp(lport));
    assert!(wait_until(|| tcp_listening(cport)));
    assert_eq!(listening_addresses(cport), vec!["0100007F".to_string()]);
    assert_eq!(ctl(cport, "control"), format!("{cport}\n"), "as given");
    assert_eq!(
        penctl(&c, &["blacklist"]).1,
        "30\n",
        "penctl PORT reaches it"
    );
    assert!(!pen.stderr().contains("warning"), "{}", pen.stderr());
    drop(pen);

    let (lport, cport) = (probe_port(), probe_port());
    let (c, l) = (format!("0.0.0.0:{cport}"), format!("127.0.0.1:{lport}"));
    let pen = Pen::start(&["-u", "root", "-C", &c, &l, &a.spec], Listen::Tcp(lport));
    assert!(wait_until(|| tcp_listening(cport)));
    assert_eq!(listening_addresses(cport), vec!["00000000".to_string()]);
    let err = pen.stderr();
    assert!(
        err.contains(&format!(
            "pen: warning: the control socket 0.0.0.0:{cport} can be reached from other hosts"
        )) && err.contains("control_acl"),
        "{err}"
    );
    drop(pen);

    // With a control_acl that has entries: no warning.
    let (lport, cport) = (probe_port(), probe_port());
    let (c, l) = (format!("0.0.0.0:{cport}"), format!("127.0.0.1:{lport}"));
    let pen = Pen::start(
        &[
            "-u",
            "root",
            "-O",
            "acl 2 permit 127.0.0.1",
            "-O",
            "control_acl 2",
            "-C",
            &c,
            &l,
            &a.spec,
        ],
        Listen::Tcp(lport),
    );
    assert!(wait_until(|| tcp_listening(cport)));
    assert!(!pen.stderr().contains("warning"), "{}", pen.stderr());
}

/// A TCP control client may not make pen write (or read) a file it names; `write` alone
/// writes the -F file; a Unix-socket client may name files; files are replaced through a
/// temporary file, never written through a symlink.
#[test]
fn control_clients_cannot_make_pen_write_any_file() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pen.cfg");
    std::fs::write(&cfg, "blacklist 21\n").unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let f = cfg.display().to_string();
    let (_pen, _l, cport) = pen_with_control(&["-F", &f], &[&a.spec]);
    for line in [
        format!("write {}", victim.display()),
        format!("include {}", victim.display()),
        format!("web_stats {}", victim.display()),
        format!("log {}", victim.display()),
    ] {
        let r = ctl(cport, &line);
        let word = line.split(' ').next().unwrap();
        assert!(
            r.starts_with(&format!("do_cmd: ignoring command starting with '{word}'"))
                && r.contains("control_any_file"),
            "{line}: {r}"
        );
    }
    assert_eq!(ctl(cport, "status"), "Unable to create webstats\n");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(ctl(cport, "control_any_file").contains("-F file"));
    // `write` alone writes the -F file.
    assert_eq!(ctl(cport, "blacklist 22"), "22\n");
    assert_eq!(ctl(cport, "write"), "");
    assert!(
        std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("\nblacklist 22\n")
    );

    // Over the Unix socket, a named file is written, and a symlink there is replaced.
    let sock = dir.path().join("pen.ctl");
    let s = sock.display().to_string();
    let _upen = Pen::start(
        &["-u", "root", "-C", &s, "127.0.0.1:0", &a.spec],
        Listen::Reported,
    );
    assert!(wait_until(|| common::unix_listening(&sock)));
    let link = dir.path().join("link.cfg");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let (code, out, _) = penctl(&s, &["write", &link.display().to_string()]);
    assert_eq!((code, out.as_str()), (Some(0), ""));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert!(
        std::fs::read_to_string(&link)
            .unwrap()
            .contains("\nblacklist 30\n")
    );
}

/// More silent control clients than C Pen's pool size: penctl still gets its reply at once
/// (before, the 17th client on was closed without a reply until a silent one timed out 5 s
/// later).
#[test]
fn idle_control_clients_do_not_lock_penctl_out() {
    let (_pen, _l, cport) = pen_with_control(&[], &["127.0.0.1:9"]);
    let silent: Vec<TcpStream> = (0..24)
        .map(|_| TcpStream::connect(("127.0.0.1", cport)).expect("silent client"))
        .collect();
    let t0 = Instant::now();
    let (code, out, err) = penctl(&format!("127.0.0.1:{cport}"), &["blacklist"]);
    let took = t0.elapsed();
    assert_eq!((code, out.as_str()), (Some(0), "30\n"), "{err}");
    // Generous: a silent client's deadline is 5 s.
    assert!(took < Duration::from_secs(4), "penctl took {took:?}");
    drop(silent);
}

/// The status page in a directory pen's user may not create files in, but whose page file it
/// may write (a `-w` file prepared by root for `-u nobody`): written in place, as C Pen, since
/// no temporary file can be made there.
#[test]
fn status_page_in_a_directory_pen_cannot_write_is_rewritten_in_place() {
    use std::os::unix::fs::{PermissionsExt, chown};
    common::require_root("runs pen as nobody on a file prepared by root");
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let page = dir.path().join("status.html");
    std::fs::write(&page, "old").unwrap();
    chown(&page, Some(65534), Some(65534)).unwrap();
    let w = page.display().to_string();
    let pen = Pen::start(
        &["-u", "nobody", "-C", "0", "-w", &w, "127.0.0.1:0", &a.spec],
        Listen::Reported,
    );
    let cport = pen.control_port();
    let reply = ctl(cport, "status");
    assert!(reply.starts_with("<html>"), "{reply}");
    assert_eq!(std::fs::read_to_string(&page).unwrap(), reply);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no leftovers"
    );
}

/// Two pens of one cluster: `table_hash` agrees, `penctl --each` applies one command to both
/// and `--same` exits 2 (naming the pen) when one of them was changed alone.
#[test]
fn penctl_each_keeps_pens_equal_and_same_finds_the_odd_one() {
    let backends = ["127.0.0.1:9", "127.0.0.2:9"];
    let (_a, _la, ca) = pen_with_control(&[], &backends);
    let (_b, _lb, cb) = pen_with_control(&[], &backends);
    let (ta, tb) = (format!("127.0.0.1:{ca}"), format!("127.0.0.1:{cb}"));
    let both = format!("{ta},{tb}");
    let (code, out, err) = penctl("--each", &[&both, "--same", "table_hash"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(&format!("{ta}: servers 2 available 2 ")),
        "{out}"
    );
    assert_eq!(
        lines[0].split_once(": ").unwrap().1,
        lines[1].split_once(": ").unwrap().1
    );
    // One pen changed alone: the digests differ and --same says which.
    assert_eq!(ctl(cb, "server 1 weight 5"), "");
    let (code, out, err) = penctl("--each", &[&both, "--same", "table_hash"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains(&format!("{tb} does not reply what {ta} replies")),
        "{err}"
    );
    // The same command to both brings them together again.
    let (code, _, err) = penctl("--each", &[&both, "server", "1", "weight", "5"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = penctl("--each", &[&both, "--same", "table_hash"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // An unreachable pen is an error after the others were tried.
    let dead = common::dead_spec();
    let (code, out, err) = penctl("--each", &[&format!("{dead},{ta}"), "table_hash"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.starts_with(&format!("{ta}: servers 2")), "{out}");
    assert!(err.contains(&dead), "{err}");
}
