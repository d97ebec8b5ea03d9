//! `transparent` through the pen binary: the backend sees the client's own address; when that
//! cannot work (no CAP_NET_ADMIN, no routing setup, family mismatch) pen logs one clear error
//! and closes the client: it never falls back to connecting from its own address.
//!
//! Most tests need root (CAP_NET_ADMIN for IP_TRANSPARENT, network namespaces for the routing
//! test); they check that precondition and fail with the reason otherwise.

mod common;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Backend, Listen, Pen, get, ip, is_root, require_root, wait_within};

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_within(Duration::from_secs(5), cond),
        "timed out waiting for: {what}"
    );
}

/// A request that pen must close without any reply.
fn assert_closed_without_reply(from: Option<IpAddr>, to: SocketAddr) {
    match get(from, to) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ),
            "unexpected error: {e}"
        ),
        Ok(body) => panic!("expected pen to close the client, got a reply {body:?}"),
    }
}

#[test]
fn transparent_on_loopback_shows_the_client_address_to_the_backend() {
    require_root("sets IP_TRANSPARENT");
    let b = Backend::start("b", "127.0.0.1");
    let pen = Pen::start(
        &["-O", "transparent", "127.0.0.1:0", &b.spec],
        Listen::Reported,
    );
    let to = pen.addr();
    assert_eq!(get(Some(ip("127.0.0.2")), to).unwrap(), "b");
    let seen = b.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].map(|a| a.ip()),
        Some(ip("127.0.0.2")),
        "the backend must see the client's address, not pen's 127.0.0.1; pen stderr:\n{}",
        pen.stderr()
    );
}

#[test]
fn source_takes_precedence_over_transparent() {
    require_root("sets IP_TRANSPARENT");
    let b = Backend::start("b", "127.0.0.1");
    let pen = Pen::start(
        &[
            "-O",
            "transparent",
            "-O",
            "source 127.0.0.3",
            "127.0.0.1:0",
            &b.spec,
        ],
        Listen::Reported,
    );
    assert_eq!(get(Some(ip("127.0.0.2")), pen.addr()).unwrap(), "b");
    assert_eq!(b.seen()[0].map(|a| a.ip()), Some(ip("127.0.0.3")));
}

/// The command prefix that runs pen without any capability: as root, `setpriv` switches to
/// nobody (which clears every capability) before pen starts; a normal user never had them.
fn unprivileged() -> Vec<&'static str> {
    if is_root() {
        vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ]
    } else {
        Vec::new()
    }
}

/// pen started behind a command prefix (`setpriv`, `ip netns exec`), killed by PID when
/// dropped; its stderr goes to a file printed if the test panics.
struct Spawned {
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Spawned {
    fn start(prefix: &[&str], args: &[&str]) -> Spawned {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("pen.stderr");
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.push(common::pen_bin());
        argv.push("-f");
        argv.extend_from_slice(args);
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        Spawned {
            child,
            stderr,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The address pen reported for its port-0 listener (`pen: listening on ADDR`).
    fn addr(&self) -> SocketAddr {
        let mut found = None;
        eventually("pen reports its listen address", || {
            found = common::reported_in(&self.stderr(), "pen: listening on ");
            found.is_some()
        });
        found.expect("reported")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pen stderr ---\n{}", self.stderr());
        }
    }
}

#[test]
fn without_cap_net_admin_pen_logs_the_error_and_does_not_fall_back() {
    let b = Backend::start("b", "127.0.0.1");
    let pen = Spawned::start(
        &unprivileged(),
        &["-O", "transparent", "127.0.0.1:0", &b.spec],
    );
    let to = pen.addr();
    eventually("pen listening", || common::tcp_listening(to.port()));
    assert_closed_without_reply(Some(ip("127.0.0.2")), to);
    eventually("the error in pen's log", || {
        pen.stderr().contains("needs CAP_NET_ADMIN")
    });
    let log = pen.stderr();
    assert!(
        log.contains("as client 127.0.0.2") && log.contains(&b.spec),
        "the error must name the client and the backend:\n{log}"
    );
    assert!(log.contains("not falling back"), "{log}");
    assert_eq!(b.hits(), 0, "pen fell back to its own address");
    // One error per failure, not one per candidate server.
    assert_closed_without_reply(Some(ip("127.0.0.2")), to);
    eventually("the second error", || {
        pen.stderr().matches("needs CAP_NET_ADMIN").count() == 2
    });
    assert_eq!(b.hits(), 0);
}

#[test]
fn transparent_keeps_cap_net_admin_across_dropping_privileges_with_u() {
    require_root("switches users");
    let b = Backend::start("b", "127.0.0.1");
    let pen = Pen::start(
        &["-u", "nobody", "-O", "transparent", "127.0.0.1:0", &b.spec],
        Listen::Reported,
    );
    assert_eq!(
        get(Some(ip("127.0.0.2")), pen.addr()).unwrap(),
        "b",
        "pen stderr:\n{}",
        pen.stderr()
    );
    assert_eq!(b.seen()[0].map(|a| a.ip()), Some(ip("127.0.0.2")));
    let status = std::fs::read_to_string(format!("/proc/{}/status", pen.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert!(field("Uid:").starts_with("65534"), "{status}");
    assert_eq!(
        field("CapEff:"),
        "0000000000001000",
        "only CAP_NET_ADMIN is kept"
    );
}

#[test]
fn family_mismatch_is_refused_and_the_next_server_is_tried() {
    require_root("sets IP_TRANSPARENT");
    let v6 = Backend::start("v6", "::1");
    let v4 = Backend::start("v4", "127.0.0.1");
    // prio makes server 0 (the IPv6 one) the first choice for every client.
    let v6_spec = format!("{}:0:0:1:0", v6.spec);
    let v4_spec = format!("{}:0:0:1:1", v4.spec);
    let pen = Pen::start(
        &[
            "-O",
            "transparent",
            "-O",
            "prio",
            "127.0.0.1:0",
            &v6_spec,
            &v4_spec,
        ],
        Listen::Reported,
    );
    let to = pen.addr();
    assert_eq!(get(Some(ip("127.0.0.2")), to).unwrap(), "v4");
    assert_eq!(
        v6.hits(),
        0,
        "an IPv4 client must not reach an IPv6 backend from pen's address"
    );
    let log = pen.stderr();
    assert!(
        log.contains("an IPv4 client address cannot be the source of an IPv6 connection")
            && log.contains("as client 127.0.0.2"),
        "{log}"
    );
    // The IPv6 server is not blacklisted for pen's own refusal: it is still the first choice
    // of a new client (whose attempt fails the same way, once).
    assert_eq!(get(Some(ip("127.0.0.3")), to).unwrap(), "v4");
    let log = pen.stderr();
    assert_eq!(log.matches("cannot be the source").count(), 2, "{log}");
    assert!(log.contains("as client 127.0.0.3"), "{log}");
    assert_eq!(v6.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// The routing test: client and server subnets routed through pen's namespace.
// ---------------------------------------------------------------------------------------------

/// Which documented variant of the mark rule a test installs.
#[derive(Clone, Copy)]
enum Firewall {
    Nft,
    Iptables,
    /// The blog's DIVERT chain line for line, plus the same PREROUTING line with `-p udp` (as
    /// users add it for `-U`): `-m socket` without `--nowildcard`, no ICMP line.
    Blog,
}

/// Three namespaces (client, pen, server), deleted when dropped.
struct Lab {
    prefix: String,
}

impl Lab {
    fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// `tag` keeps the namespaces of tests running in parallel apart.
    fn new(tag: &str) -> Lab {
        let lab = Lab {
            prefix: format!("pentp{}{tag}", std::process::id()),
        };
        let (c, p, s) = (lab.ns("c"), lab.ns("p"), lab.ns("s"));
        for n in [&c, &p, &s] {
            run(&["ip", "netns", "add", n]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip", "-n", &p, "link", "add", "p0", "type", "veth", "peer", "c0", "netns", &c,
        ]);
        run(&[
            "ip", "-n", &p, "link", "add", "p1", "type", "veth", "peer", "s0", "netns", &s,
        ]);
        for (n, dev, addr) in [
            (&c, "c0", "10.75.1.10/24"),
            (&p, "p0", "10.75.1.1/24"),
            (&p, "p1", "10.75.2.1/24"),
            (&s, "s0", "10.75.2.3/24"),
        ] {
            run(&["ip", "-n", n, "addr", "add", addr, "dev", dev]);
            run(&["ip", "-n", n, "link", "set", dev, "up"]);
        }
        run(&[
            "ip",
            "-n",
            &c,
            "route",
            "add",
            "default",
            "via",
            "10.75.1.1",
        ]);
        run(&[
            "ip",
            "-n",
            &s,
            "route",
            "add",
            "default",
            "via",
            "10.75.2.1",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &p,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        lab
    }

    /// The host setup of the README: the mark rule (nftables, or the blog's iptables DIVERT
    /// chain), the policy rule and the local route.
    fn add_routing_setup(&self, firewall: Firewall) {
        let p = self.ns("p");
        match firewall {
            Firewall::Nft => {
                let ruleset = "table inet pen_transparent {\n chain divert {\n  type filter hook prerouting priority mangle; policy accept;\n  meta l4proto { tcp, udp, icmp, ipv6-icmp } socket transparent 1 meta mark set 1 accept\n }\n}\n";
                let mut nft = Command::new("ip")
                    .args(["netns", "exec", &p, "nft", "-f", "-"])
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("nft (is nftables installed?)");
                nft.stdin
                    .take()
                    .unwrap()
                    .write_all(ruleset.as_bytes())
                    .unwrap();
                assert!(nft.wait().unwrap().success(), "nft rejected the ruleset");
            }
            Firewall::Iptables => {
                let ipt = |rule: &str| {
                    let mut argv = vec!["ip", "netns", "exec", &p, "iptables", "-t", "mangle"];
                    argv.extend(rule.split(' '));
                    run(&argv);
                };
                ipt("-N DIVERT");
                ipt("-A PREROUTING -p tcp -m socket -j DIVERT");
                // The README's lines: the blog's, plus UDP and the ICMP errors about pen's
                // UDP datagrams (failover). No --nowildcard: pen's transparent UDP sockets
                // are bound to the client's address.
                ipt("-A PREROUTING -p udp -m socket -j DIVERT");
                ipt("-A PREROUTING -p icmp -m socket -j DIVERT");
                ipt("-A DIVERT -j MARK --set-mark 1");
                ipt("-A DIVERT -j ACCEPT");
            }
            Firewall::Blog => {
                let ipt = |rule: &str| {
                    let mut argv = vec!["ip", "netns", "exec", &p, "iptables", "-t", "mangle"];
                    argv.extend(rule.split(' '));
                    run(&argv);
                };
                ipt("-N DIVERT");
                ipt("-A PREROUTING -p tcp -m socket -j DIVERT");
                ipt("-A PREROUTING -p udp -m socket -j DIVERT");
                ipt("-A DIVERT -j MARK --set-mark 1");
                ipt("-A DIVERT -j ACCEPT");
            }
        }
        run(&[
            "ip", "-n", &p, "rule", "add", "fwmark", "1", "lookup", "100",
        ]);
        run(&[
            "ip",
            "-n",
            &p,
            "route",
            "add",
            "local",
            "0.0.0.0/0",
            "dev",
            "lo",
            "table",
            "100",
        ]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in ["c", "p", "s"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

fn run(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a fresh thread inside namespace `ns` (sockets created there stay there).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(format!("/run/netns/{ns}")).expect("namespace file");
    std::thread::spawn(move || {
        // SAFETY: setns on a namespace fd we hold open; it affects only this fresh thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// A backend in the server namespace: answers "hello\n" and records every peer it accepts.
struct NsBackend {
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<Mutex<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl NsBackend {
    fn start(ns: &str, addr: &str) -> NsBackend {
        let addr = addr.to_string();
        let listener = in_netns(ns, move || TcpListener::bind(addr).expect("backend bind"));
        listener.set_nonblocking(true).unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(Mutex::new(false));
        let (p, s) = (peers.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !*s.lock().unwrap() {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        p.lock().unwrap().push(peer);
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(b"hello\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        NsBackend {
            peers,
            stop,
            thread: Some(thread),
        }
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for NsBackend {
    fn drop(&mut self) {
        *self.stop.lock().unwrap() = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// pen started in a namespace (`ip netns exec` execs pen, so the child PID is pen's).
struct NsPen {
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl NsPen {
    fn start(ns: &str, args: &[&str], port: u16) -> NsPen {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("pen.stderr");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, common::pen_bin(), "-f"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn pen");
        let pen = NsPen {
            child,
            stderr,
            _dir: dir,
        };
        let want = format!(":{port:04X} ");
        eventually("pen listening in its namespace", || {
            in_netns(ns, {
                let want = want.clone();
                move || {
                    std::fs::read_to_string("/proc/thread-self/net/tcp").is_ok_and(|t| {
                        t.lines()
                            .any(|l| l.contains(&want) && l.split_whitespace().nth(3) == Some("0A"))
                    })
                }
            })
        });
        pen
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for NsPen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pen stderr ---\n{}", self.stderr());
        }
    }
}

/// One request from the client namespace; the reply (empty when pen closed the client).
fn request_from_client(ns: &str, to: &str) -> io::Result<String> {
    let to: SocketAddr = to.parse().unwrap();
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"hi\n")?;
        let mut out = String::new();
        match s.read_to_string(&mut out) {
            Ok(_) => Ok(out),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(out),
            Err(e) => Err(e),
        }
    })
}

#[test]
fn missing_routing_setup_is_logged_never_a_silent_fallback() {
    require_root("builds network namespaces");
    let lab = Lab::new("r");
    let backend = NsBackend::start(&lab.ns("s"), "10.75.2.3:9000");
    // -t 1: the connect from the client's address times out after 1 s. -b 0: no blacklist,
    // so the second half of the test can reuse the server at once.
    let pen = NsPen::start(
        &lab.ns("p"),
        &[
            "-t",
            "1",
            "-b",
            "0",
            "-O",
            "transparent",
            "10.75.1.1:8080",
            "10.75.2.3:9000",
        ],
        8080,
    );
    let reply = request_from_client(&lab.ns("c"), "10.75.1.1:8080").expect("client request");
    assert_eq!(
        reply, "",
        "without the routing setup the client must get nothing"
    );
    let log = pen.stderr();
    assert!(
        log.contains("transparent proxy: cannot connect to 10.75.2.3:9000 as client 10.75.1.10")
            && log.contains("missing routing setup"),
        "expected the missing-routing error naming the client:\n{log}"
    );
    assert_eq!(log.matches("missing routing setup").count(), 1, "{log}");
    assert!(
        backend.peers().is_empty(),
        "the backend accepted {:?}: pen fell back to its own address",
        backend.peers()
    );

    // The same request works once the host has the README's setup (its iptables variant, the
    // blog's DIVERT chain): the test topology itself was right, only the routing was missing.
    lab.add_routing_setup(Firewall::Iptables);
    let reply = request_from_client(&lab.ns("c"), "10.75.1.1:8080").expect("client request");
    assert_eq!(reply, "hello\n", "pen stderr:\n{}", pen.stderr());
    let peers = backend.peers();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(
        peers[0].ip(),
        ip("10.75.1.10"),
        "the backend must see the client"
    );
}

// ---------------------------------------------------------------------------------------------
// UDP (-U)
// ---------------------------------------------------------------------------------------------

/// A UDP backend answering every datagram with the sender's IP address; returns its address
/// and the addresses it heard from.
fn udp_backend(bind: &str) -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>, std::net::UdpSocket) {
    let s = std::net::UdpSocket::bind(bind).unwrap();
    let addr = s.local_addr().unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let (h, sock) = (heard.clone(), s.try_clone().unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                h.lock().unwrap().push(from);
                let _ = sock.send_to(from.ip().to_string().as_bytes(), from);
            }
        }
    });
    (addr, heard, s)
}

fn udp_listening(port: u16) -> bool {
    let want = format!(":{port:04X} ");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| t.lines().skip(1).any(|l| l.contains(&want)))
    })
}

#[test]
fn udp_transparent_on_loopback_shows_the_client_address_to_the_backend() {
    require_root("sets IP_TRANSPARENT");
    let (backend, heard, _keep) = udp_backend("127.0.0.1:0");
    let backend = backend.to_string();
    let pen = Spawned::start(&[], &["-U", "-O", "transparent", "127.0.0.1:0", &backend]);
    let listen = pen.addr().to_string();
    let port = pen.addr().port();
    eventually("pen listening on UDP", || udp_listening(port));
    let client = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 64];
    for round in 0..2 {
        client.send_to(b"who am i", &listen).unwrap();
        let got = client.recv_from(&mut buf);
        let log = pen.stderr();
        let (n, from) =
            got.unwrap_or_else(|e| panic!("round {round}: no reply ({e}); pen:\n{log}"));
        assert_eq!(from.to_string(), listen, "replies come from pen's listener");
        assert_eq!(
            &buf[..n],
            b"127.0.0.2",
            "round {round}: the backend saw pen; pen:\n{log}"
        );
    }
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 2);
    assert!(heard.iter().all(|a| a.ip() == ip("127.0.0.2")), "{heard:?}");
}

#[test]
fn udp_without_cap_net_admin_is_logged_and_dropped_not_sent_from_pen() {
    require_root("builds network namespaces");
    let lab = Lab::new("u");
    lab.add_routing_setup(Firewall::Nft);
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    let backend = in_netns(&lab.ns("s"), || {
        std::net::UdpSocket::bind("10.75.2.3:5300").unwrap()
    });
    backend
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let listener = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            if let Ok((_, from)) = backend.recv_from(&mut buf) {
                h.lock().unwrap().push(from);
            }
        }
    });
    // setpriv: pen runs as nobody, without any capability.
    let pns = lab.ns("p");
    let pen = Spawned::start(
        &[
            "ip",
            "netns",
            "exec",
            &pns,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
        &[
            "-U",
            "-O",
            "transparent",
            "10.75.1.1:5300",
            "10.75.2.3:5300",
        ],
    );
    eventually("pen listening on UDP in its namespace", || {
        in_netns(&pns, || {
            std::fs::read_to_string("/proc/thread-self/net/udp")
                .is_ok_and(|t| t.contains(&format!(":{:04X} ", 5300)))
        })
    });
    in_netns(&lab.ns("c"), || {
        let c = std::net::UdpSocket::bind("10.75.1.10:0").unwrap();
        for _ in 0..2 {
            c.send_to(b"q", "10.75.1.1:5300").unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    eventually("the CAP_NET_ADMIN error in pen's log", || {
        pen.stderr().contains("needs CAP_NET_ADMIN")
    });
    listener.join().unwrap();
    let log = pen.stderr();
    assert!(log.contains("as client 10.75.1.10"), "{log}");
    assert!(
        heard.lock().unwrap().is_empty(),
        "the backend heard {:?}: pen fell back to its own address",
        heard.lock().unwrap()
    );
}

#[test]
fn udp_through_the_iptables_setup_shows_the_client_to_the_backend() {
    udp_through(Firewall::Iptables, "i");
}

/// The blog's lines without `--nowildcard`: its `-m socket` ignores sockets bound to the
/// wildcard address, so the answer reaches pen only on a socket bound to the client's address.
#[test]
fn udp_through_the_blogs_iptables_lines_shows_the_client_to_the_backend() {
    udp_through(Firewall::Blog, "b");
}

/// Through the host setup `firewall`: two clients (one of them with two flows to the one
/// backend at once) get answers, and the backend saw each from its own address.
fn udp_through(firewall: Firewall, tag: &str) {
    require_root("builds network namespaces");
    let lab = Lab::new(tag);
    lab.add_routing_setup(firewall);
    run(&[
        "ip",
        "-n",
        &lab.ns("c"),
        "addr",
        "add",
        "10.75.1.11/24",
        "dev",
        "c0",
    ]);
    // A backend in the server namespace answering each datagram with the sender's address.
    let backend = in_netns(&lab.ns("s"), || {
        std::net::UdpSocket::bind("10.75.2.3:5300").unwrap()
    });
    backend
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            if let Ok((_, from)) = backend.recv_from(&mut buf) {
                h.lock().unwrap().push(from);
                let _ = backend.send_to(from.ip().to_string().as_bytes(), from);
            }
        }
    });
    let pns = lab.ns("p");
    let pen = Spawned::start(
        &["ip", "netns", "exec", &pns],
        &[
            "-U",
            "-O",
            "transparent",
            "10.75.1.1:5300",
            "10.75.2.3:5300",
        ],
    );
    eventually("pen listening on UDP in its namespace", || {
        in_netns(&pns, || {
            std::fs::read_to_string("/proc/thread-self/net/udp")
                .is_ok_and(|t| t.contains(&format!(":{:04X} ", 5300)))
        })
    });
    let replies = in_netns(&lab.ns("c"), || {
        let socks: Vec<std::net::UdpSocket> = ["10.75.1.10:0", "10.75.1.10:0", "10.75.1.11:0"]
            .iter()
            .map(|a| std::net::UdpSocket::bind(a).unwrap())
            .collect();
        for c in &socks {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            c.send_to(b"?", "10.75.1.1:5300").unwrap();
        }
        socks
            .iter()
            .map(|c| {
                let mut buf = [0u8; 64];
                c.recv_from(&mut buf)
                    .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
                    .map_err(|e| e.to_string())
            })
            .collect::<Vec<_>>()
    });
    server.join().unwrap();
    let log = pen.stderr();
    assert_eq!(
        replies,
        vec![
            Ok("10.75.1.10".to_string()),
            Ok("10.75.1.10".to_string()),
            Ok("10.75.1.11".to_string())
        ],
        "the backend must see each client and its answers must come back; pen:\n{log}"
    );
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 3, "{heard:?}");
    // The two concurrent flows of 10.75.1.10 came from two of its sockets.
    let ports: std::collections::HashSet<u16> = heard
        .iter()
        .filter(|a| a.ip() == ip("10.75.1.10"))
        .map(|a| a.port())
        .collect();
    assert_eq!(ports.len(), 2, "{heard:?}");
}

/// With the README's iptables lines (the ICMP line included), a backend port that answers ICMP
/// port unreachable to the client's address is noticed by pen: the server is blacklisted and
/// the client's retry on the same flow is served by the live one.
#[test]
fn udp_failover_through_the_readme_iptables_lines() {
    require_root("builds network namespaces");
    let lab = Lab::new("f");
    lab.add_routing_setup(Firewall::Iptables);
    let backend = in_netns(&lab.ns("s"), || {
        std::net::UdpSocket::bind("10.75.2.3:5300").unwrap()
    });
    backend
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            if let Ok((_, from)) = backend.recv_from(&mut buf) {
                let _ = backend.send_to(from.ip().to_string().as_bytes(), from);
            }
        }
    });
    let pns = lab.ns("p");
    // Server 1 (port 5301) has nothing listening; the first new flow goes to it, as in the
    // transparent-udp scenario.
    let pen = Spawned::start(
        &["ip", "netns", "exec", &pns],
        &[
            "-U",
            "-O",
            "transparent",
            "10.75.1.1:5300",
            "10.75.2.3:5300",
            "10.75.2.3:5301",
        ],
    );
    eventually("pen listening on UDP in its namespace", || {
        in_netns(&pns, || {
            std::fs::read_to_string("/proc/thread-self/net/udp")
                .is_ok_and(|t| t.contains(&format!(":{:04X} ", 5300)))
        })
    });
    let replies = in_netns(&lab.ns("c"), || {
        let c = std::net::UdpSocket::bind("10.75.1.10:0").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        (0..2)
            .map(|_| {
                c.send_to(b"?", "10.75.1.1:5300").unwrap();
                let mut buf = [0u8; 64];
                c.recv_from(&mut buf)
                    .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
                    .map_err(|e| e.kind())
            })
            .collect::<Vec<_>>()
    });
    server.join().unwrap();
    let log = pen.stderr();
    assert!(
        replies[0].is_err(),
        "the first flow should have gone to the dead server: {replies:?}"
    );
    assert_eq!(
        replies[1],
        Ok("10.75.1.10".to_string()),
        "the ICMP error must reach pen, which moves the flow to the live server; pen:\n{log}"
    );
}
