//! Binary upgrade on loopback (`pen ... -O upgrade`, see the README section "Upgrading the
//! binary without dropping connections"): a new pen process takes the listening sockets over
//! from the running one; the old one stops accepting, finishes its connections (bounded by
//! `drain_timeout`) and exits. The TCP engine is the one `PEN_TEST_TCP_ENGINE` forces.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Listen, Pen, pen_fails, probe_port, wait_within};

/// A keep-alive HTTP/1.1 backend: every request (up to its blank line) gets `200` with body
/// `ok`, on the same connection, until the client closes. Threads end with their clients.
fn keepalive_backend() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let spec = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
                let mut w = c.try_clone().expect("clone");
                let mut r = BufReader::new(c);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => {
                            let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if w.write_all(reply).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    spec
}

/// One request on an open keep-alive connection; `Ok` only for a complete `200 ... ok`.
fn request(s: &mut TcpStream) -> io::Result<()> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let want = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got)?;
    if got != want {
        return Err(io::Error::other(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&got)
        )));
    }
    Ok(())
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), common::STEP)?;
    s.set_read_timeout(Some(common::STEP))?;
    s.set_write_timeout(Some(common::STEP))?;
    Ok(s)
}

fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn alive(pen: &mut Pen) -> bool {
    matches!(pen.child.try_wait(), Ok(None))
}

/// Starts the new pen (`-O upgrade` after the old pen's arguments) and waits until the pid
/// file names it.
fn upgrade(args: &[&str], port: u16, pid_file: &Path) -> Pen {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["-O", "upgrade"]);
    let new = Pen::start(&a, Listen::Tcp(port));
    let pid = new.pid();
    assert!(
        wait_within(Duration::from_secs(10), || pid_in(pid_file) == Some(pid)),
        "the pid file never named the new pen {pid}; its stderr:\n{}",
        new.stderr()
    );
    new
}

#[test]
fn under_load_the_new_pen_takes_over_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pen.pid");
    let backend = keepalive_backend();
    let port = probe_port();
    let listen = format!("127.0.0.1:{port}");
    let pidf = pid_file.display().to_string();
    let args = [
        "-d",
        "-p",
        &pidf,
        "-O",
        "drain_timeout 30",
        &listen,
        &backend,
    ];
    let mut old = Pen::start(&args, Listen::Tcp(port));
    let engine = old.data_path();
    assert!(wait_within(Duration::from_secs(5), || pid_in(&pid_file)
        == Some(old.pid())));
    // A long connection opened before the switch, used after it.
    let mut long = connect(port).unwrap();
    request(&mut long).unwrap();

    // Bounded load: 4 clients, each alternating keep-alive runs of 10 requests and single
    // requests on new connections (1 ms apart), until 6000 requests or 30 s; at least 1500
    // after the switch.
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(30);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let mut round = 0u32;
                while !stop.load(Ordering::SeqCst)
                    && done.load(Ordering::SeqCst) < 6000
                    && Instant::now() < deadline
                {
                    round += 1;
                    let n = if round.is_multiple_of(2) { 10 } else { 1 };
                    let r = connect(port).and_then(|mut s| {
                        for _ in 0..n {
                            request(&mut s)?;
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(())
                    });
                    if let Err(e) = r {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.push(e.to_string());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                errors
            })
        })
        .collect();
    assert!(wait_within(Duration::from_secs(10), || done
        .load(Ordering::SeqCst)
        >= 300));
    let before = done.load(Ordering::SeqCst);
    let new = upgrade(&args, port, &pid_file);
    let at_switch = done.load(Ordering::SeqCst);
    // Let the load run on the new pen for a while, then stop it.
    wait_within(Duration::from_secs(25), || {
        done.load(Ordering::SeqCst) >= (at_switch + 1500).min(6000)
    });
    stop.store(true, Ordering::SeqCst);
    let errors: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let total = done.load(Ordering::SeqCst);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests ({engine}): {errors:?}; old stderr:\n{}\nnew stderr:\n{}",
        old.stderr(),
        new.stderr()
    );
    assert!(
        before >= 300 && total >= (at_switch + 1500).min(6000),
        "requests: {before} before the upgrade, {at_switch} when the new pen was ready, {total} in all"
    );

    eprintln!(
        "{engine}: {total} requests, {before} before the upgrade, {at_switch} when the new pen was ready, 0 failed"
    );
    // The old pen waits for the long connection, which still works through it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        alive(&mut old),
        "the old pen left before its connection finished"
    );
    request(&mut long).expect("the connection opened before the switch works after it");
    drop(long);
    assert!(
        wait_within(Duration::from_secs(10), || !alive(&mut old)),
        "the old pen did not exit after its last connection; stderr:\n{}",
        old.stderr()
    );
    assert_eq!(old.child.wait().unwrap().code(), Some(0));
    assert_eq!(
        pid_in(&pid_file),
        Some(new.pid()),
        "the old pen left the pid file alone"
    );
    // The new pen serves new connections.
    request(&mut connect(port).unwrap()).unwrap();
    assert!(
        old.stderr().contains("upgrade: all connections finished"),
        "{}",
        old.stderr()
    );
}

#[test]
fn a_new_pen_that_cannot_start_leaves_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pen.pid");
    let backend = keepalive_backend();
    let port = probe_port();
    let listen = format!("127.0.0.1:{port}");
    let pidf = pid_file.display().to_string();
    let mut old = Pen::start(&["-p", &pidf, &listen, &backend], Listen::Tcp(port));
    assert!(wait_within(Duration::from_secs(5), || pid_in(&pid_file)
        == Some(old.pid())));

    // Another listen address: an error naming both, exit status 1.
    let other = format!("127.0.0.1:{}", probe_port());
    let f = pen_fails(&["-f", "-p", &pidf, "-O", "upgrade", &other, &backend]);
    assert_eq!(f.code, Some(1), "{}", f.stderr);
    assert!(
        f.stderr.contains(&format!("listens on tcp {listen}")),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains(&format!("asks for tcp {other}")),
        "{}",
        f.stderr
    );
    // UDP for the running TCP pen.
    let f = pen_fails(&["-f", "-U", "-p", &pidf, "-O", "upgrade", &listen, &backend]);
    assert_eq!(f.code, Some(1), "{}", f.stderr);
    assert!(
        f.stderr.contains(&format!("asks for udp {listen}")),
        "{}",
        f.stderr
    );
    // A bad -F file.
    let cfg = dir.path().join("bad.cfg");
    std::fs::write(&cfg, "roundrobin\nno_such_command\n").unwrap();
    let cfgs = cfg.display().to_string();
    let f = pen_fails(&[
        "-f", "-F", &cfgs, "-p", &pidf, "-O", "upgrade", &listen, &backend,
    ]);
    assert_eq!(f.code, Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("bad.cfg:2:"), "{}", f.stderr);
    // No pid file nor upgrade_socket: nothing to find the running pen by.
    let f = pen_fails(&["-f", "-O", "upgrade", &listen, &backend]);
    assert_eq!(f.code, Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("upgrade_socket"), "{}", f.stderr);
    // A wrong upgrade socket path.
    let nowhere = dir.path().join("nowhere").display().to_string();
    let f = pen_fails(&[
        "-f",
        "-O",
        &format!("upgrade_socket {nowhere}"),
        "-O",
        "upgrade",
        &listen,
        &backend,
    ]);
    assert_eq!(f.code, Some(1), "{}", f.stderr);
    assert!(f.stderr.contains(&nowhere), "{}", f.stderr);

    // A new pen that fails after it received the sockets (its own -C port is taken): the old
    // pen hears it went away and serves on.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let f = pen_fails(&[
        "-f", "-u", "root", "-C", &busy, "-p", &pidf, "-O", "upgrade", &listen, &backend,
    ]);
    assert_eq!(f.code, Some(1), "{}", f.stderr);
    assert!(f.stderr.contains(&busy), "{}", f.stderr);
    assert!(
        wait_within(Duration::from_secs(5), || old.stderr().contains(
            "went away before it was ready (see its error); still serving"
        )),
        "{}",
        old.stderr()
    );
    // The old pen still serves, still owns the pid file, and can still be upgraded.
    assert!(alive(&mut old));
    request(&mut connect(port).unwrap()).unwrap();
    assert_eq!(pid_in(&pid_file), Some(old.pid()));
    let _new = upgrade(&["-p", &pidf, &listen, &backend], port, &pid_file);
    assert!(wait_within(Duration::from_secs(10), || !alive(&mut old)));
    request(&mut connect(port).unwrap()).unwrap();
}

#[test]
fn the_drain_timeout_closes_a_stuck_connection_and_the_old_pen_exits() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pen.pid");
    let backend = keepalive_backend();
    let port = probe_port();
    let listen = format!("127.0.0.1:{port}");
    let pidf = pid_file.display().to_string();
    let args = [
        "-d",
        "-p",
        &pidf,
        "-O",
        "drain_timeout 1",
        &listen,
        &backend,
    ];
    let mut old = Pen::start(&args, Listen::Tcp(port));
    let mut stuck = connect(port).unwrap();
    request(&mut stuck).unwrap();
    let switched = Instant::now();
    let _new = upgrade(&args, port, &pid_file);
    assert!(
        wait_within(Duration::from_secs(8), || !alive(&mut old)),
        "the old pen outlived its drain timeout; stderr:\n{}",
        old.stderr()
    );
    let took = switched.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "left after {took:?}, before the drain timeout"
    );
    assert!(
        old.stderr().contains("drain_timeout reached"),
        "{}",
        old.stderr()
    );
    // The stuck connection was closed with it.
    let mut b = [0u8; 1];
    let r = stuck
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .and_then(|()| stuck.read(&mut b));
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "the stuck connection is still served: {r:?}"
    );
}

/// A UDP backend that echoes every datagram; one starting with `slow` after 500 ms.
fn udp_echo() -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let spec = s.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let s = Arc::new(s);
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let data = buf[..n].to_vec();
            if data.starts_with(b"slow") {
                let s = s.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(500));
                    let _ = s.send_to(&data, from);
                });
            } else {
                let _ = s.send_to(&data, from);
            }
        }
    });
    spec
}

#[test]
fn a_udp_flow_keeps_getting_replies_across_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pen.pid");
    let backend = udp_echo();
    // Port 0: pen reports the port; the new pen's port 0 takes the running pen's.
    let listen = "127.0.0.1:0".to_string();
    let pidf = pid_file.display().to_string();
    let args = [
        "-d",
        "-U",
        "-p",
        &pidf,
        "-O",
        "udp_flow_idle 2",
        "-O",
        "drain_timeout 20",
        &listen,
        &backend,
    ];
    let mut old = Pen::start_with(&[], &args, &[], Listen::Reported);
    let addr = old.addr();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    client.connect(addr).unwrap();
    let ask = |what: &str| -> String {
        client.send(what.as_bytes()).unwrap();
        let mut b = [0u8; 64];
        match client.recv(&mut b) {
            Ok(n) => String::from_utf8_lossy(&b[..n]).into_owned(),
            Err(e) => format!("no reply to {what}: {e}"),
        }
    };
    assert!(wait_within(Duration::from_secs(5), || pid_in(&pid_file)
        == Some(old.pid())));
    assert_eq!(ask("one"), "one");
    // Asked before the switch, answered (by the backend, through the old pen) after it.
    client.send(b"slow-two").unwrap();
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["-O", "upgrade"]);
    let new = Pen::start_with(&[], &a, &[], Listen::Reported);
    assert_eq!(new.addr(), addr, "the new pen serves the same socket");
    assert!(
        wait_within(Duration::from_secs(10), || pid_in(&pid_file)
            == Some(new.pid())),
        "{}",
        new.stderr()
    );
    let mut b = [0u8; 64];
    let n = client
        .recv(&mut b)
        .expect("the reply to the datagram sent before the switch");
    assert_eq!(&b[..n], b"slow-two");
    for i in 0..5 {
        let w = format!("after-{i}");
        assert_eq!(ask(&w), w, "old:\n{}\nnew:\n{}", old.stderr(), new.stderr());
    }
    assert!(
        old.stderr().contains("upgrade: pen"),
        "the old pen handed over: {}",
        old.stderr()
    );
    // The old pen's flow idles out (udp_flow_idle 2): it exits, well before drain_timeout.
    assert!(
        wait_within(Duration::from_secs(12), || !alive(&mut old)),
        "the old pen did not exit once its flows expired; stderr:\n{}",
        old.stderr()
    );
    assert_eq!(ask("last"), "last");
}

#[test]
fn systemd_hears_the_new_main_pid_then_its_ready() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pen.pid");
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let backend = keepalive_backend();
    let port = probe_port();
    let listen = format!("127.0.0.1:{port}");
    let pidf = pid_file.display().to_string();
    let sock = notify_path.display().to_string();
    let env = [("NOTIFY_SOCKET", sock.as_str())];
    let args = ["-p", &pidf, &listen, &backend];
    let mut old = Pen::start_with(&common::engine_args(), &args, &env, Listen::Tcp(port));
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["-O", "upgrade"]);
    let new = Pen::start_with(&common::engine_args(), &a, &env, Listen::Tcp(port));
    assert!(wait_within(Duration::from_secs(10), || !alive(&mut old)));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut b = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut b) {
            got.push(String::from_utf8_lossy(&b[..n]).into_owned());
            if got.len() == 3 {
                break;
            }
        }
    }
    let mainpid = format!("MAINPID={}", new.pid());
    let at = |f: &dyn Fn(&String) -> bool| got.iter().position(f);
    let handed = at(&|m| m.starts_with(&mainpid));
    let ready_again = got.iter().rposition(|m| m.starts_with("READY=1"));
    assert!(
        handed.is_some() && ready_again > handed,
        "expected READY=1, {mainpid}, READY=1 in order: {got:?}"
    );
    assert!(
        !got.iter().any(|m| m.starts_with("STOPPING=1")),
        "the old pen must not say STOPPING for the service: {got:?}"
    );
}

/// `pid` over a Unix control socket.
fn ctl_unix(path: &Path, cmd: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("control socket");
    s.set_read_timeout(Some(common::STEP)).unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("control reply");
    out
}

#[test]
fn a_unix_listener_and_the_control_socket_are_handed_over_too() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pen.pid");
    let sock = dir.path().join("pen.sock");
    let ctl = dir.path().join("pen.ctl");
    let backend = keepalive_backend();
    let (pidf, socks, ctls) = (
        pid_file.display().to_string(),
        sock.display().to_string(),
        ctl.display().to_string(),
    );
    let args = ["-u", "root", "-C", &ctls, "-p", &pidf, &socks, &backend];
    let mut old = Pen::start(&args, Listen::Unix(sock.clone()));
    assert!(wait_within(Duration::from_secs(5), || ctl.exists()));
    assert_eq!(ctl_unix(&ctl, "pid").trim(), old.pid().to_string());
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["-O", "upgrade"]);
    let new = Pen::start(&a, Listen::Unix(sock.clone()));
    assert!(
        wait_within(Duration::from_secs(10), || pid_in(&pid_file)
            == Some(new.pid())),
        "{}",
        new.stderr()
    );
    assert!(
        wait_within(Duration::from_secs(10), || !alive(&mut old)),
        "{}",
        old.stderr()
    );
    // The same paths, now served by the new pen.
    assert_eq!(ctl_unix(&ctl, "pid").trim(), new.pid().to_string());
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(common::STEP)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = [0u8; 40];
    s.read_exact(&mut got).unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // The hand-over socket is still there for the next upgrade.
    assert!(dir.path().join("pen.pid.upgrade").exists());
}
