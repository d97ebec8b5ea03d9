//! Root-only tests of pen-lab's IO layer in real network namespaces.
//!
//! They FAIL (never skip) when not run as root or when namespaces cannot be created: CI runs
//! them as root. Every namespace is created under a unique `penlabio-<hex>` prefix, so parallel
//! tests and other pen-lab runs never collide, and every one is removed at the end.

mod common;
use common::require_root;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pen_lab::backends::{BackendKind, backend_argv};
use pen_lab::capture::start_capture;
use pen_lab::netns::{ns_path, pid_alive};
use pen_lab::node::{Proc, spawn, wait_tcp_listening, wait_udp_bound};
use pen_lab::topology::{
    LinkEnd, NodeKind, RouteSpec, Topology, clean_leftovers, unique_prefix_with,
};
use pen_lab::traffic::{dns_query, http_get, http_load, run_command, tcp_connect};

const T: Duration = Duration::from_secs(3);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Starts a built-in backend in `ns` (`pen-lab backend ...`) and waits until it listens.
fn start_backend(ns: &str, kind: BackendKind, listen: &[SocketAddr], log: &Path) -> Proc {
    let argv = backend_argv(&kind, listen);
    let ready = |p: &mut Proc| -> bool {
        listen.iter().all(|&a| {
            let r = match kind {
                BackendKind::Dns { .. } | BackendKind::UdpEcho => wait_udp_bound(ns, a, T),
                _ => wait_tcp_listening(ns, a, T),
            };
            r.is_ok()
        }) && p.running()
    };
    let mut full = vec![env!("CARGO_BIN_EXE_pen-lab").to_string()];
    full.extend(argv.iter().cloned());
    let mut p = spawn(ns, &kind.to_string(), &full, &[], log).unwrap();
    assert!(
        ready(&mut p),
        "backend {kind} did not start in {ns}; log:\n{}",
        p.log_tail(2000)
    );
    p
}

struct Frame {
    v4: Option<(Ipv4Addr, Ipv4Addr)>,
    tcp: Option<(u16, u16, bool, bool)>, // src port, dst port, syn, ack
    udp: Option<(u16, u16)>,
    ether_type: u16,
    checksums_ok: bool,
}

fn read_frames(path: &Path) -> Vec<Frame> {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap();
        let data = pkt.data.to_vec();
        let ether_type = u16::from_be_bytes([data[12], data[13]]);
        let Ok(s) = SlicedPacket::from_ethernet(&data) else {
            out.push(Frame {
                v4: None,
                tcp: None,
                udp: None,
                ether_type,
                checksums_ok: true,
            });
            continue;
        };
        let mut f = Frame {
            v4: None,
            tcp: None,
            udp: None,
            ether_type,
            checksums_ok: true,
        };
        if let Some(NetSlice::Ipv4(v4)) = &s.net {
            let h = v4.header().to_header();
            f.checksums_ok &= h.calc_header_checksum() == h.header_checksum;
            f.v4 = Some((h.source.into(), h.destination.into()));
            match &s.transport {
                Some(TransportSlice::Tcp(t)) => {
                    f.tcp = Some((t.source_port(), t.destination_port(), t.syn(), t.ack()));
                    let th = t.to_header();
                    let want = th.calc_checksum_ipv4(&h, t.payload()).unwrap();
                    f.checksums_ok &= want == th.checksum;
                }
                Some(TransportSlice::Udp(u)) => {
                    f.udp = Some((u.source_port(), u.destination_port()));
                    let uh = u.to_header();
                    let want = uh.calc_checksum_ipv4(&h, u.payload()).unwrap();
                    f.checksums_ok &= uh.checksum == 0 || want == uh.checksum;
                }
                _ => {}
            }
        }
        out.push(f);
    }
    out
}

/// client — sw (bridge) — server, all in 10.77.0.0/24.
fn three_nodes(prefix: &str) -> Topology {
    let mut t = Topology::new(prefix).unwrap();
    t.add_node("client", NodeKind::Host).unwrap();
    t.add_node("sw", NodeKind::Switch).unwrap();
    t.add_node("server", NodeKind::Host).unwrap();
    let mut c = LinkEnd::new("client", "eth0");
    c.mac = Some([0x02, 0, 0, 0, 0x77, 0x01]);
    t.add_link(&c, &LinkEnd::new("sw", "p-client")).unwrap();
    t.add_link(
        &LinkEnd::new("server", "eth0"),
        &LinkEnd::new("sw", "p-server"),
    )
    .unwrap();
    t.add_address("client", "eth0", ip("10.77.0.1"), 24)
        .unwrap();
    t.add_address("server", "eth0", ip("10.77.0.2"), 24)
        .unwrap();
    t
}

#[test]
fn three_node_topology_carries_http_and_dns_and_the_capture_shows_it() {
    require_root("network namespaces, veth pairs, libpcap");
    let dir = tmpdir();
    let prefix = unique_prefix_with("penlabio");
    let mut t = three_nodes(&prefix);
    let (cns, sns) = (t.ns_name("client"), t.ns_name("server"));
    assert_eq!(cns, format!("{prefix}-client"));
    assert_eq!(
        t.mac("client", "eth0").unwrap(),
        [0x02, 0, 0, 0, 0x77, 0x01]
    );

    let mut web = start_backend(
        &sns,
        BackendKind::Http {
            name: "web1".into(),
        },
        &[sa("10.77.0.2:80")],
        &dir.path().join("web1.log"),
    );
    let mut dns = start_backend(
        &sns,
        BackendKind::Dns {
            name: "dns1".into(),
            answer: Ipv4Addr::new(10, 77, 9, 9),
        },
        &[sa("10.77.0.2:53")],
        &dir.path().join("dns1.log"),
    );

    // Capture everything on the client's interface: also proves there is no IPv6 noise.
    let pcap_path: PathBuf = dir.path().join("caps/client-eth0.pcap");
    let cap = start_capture(&cns, "eth0", "", &pcap_path).unwrap();

    let r = http_get(&cns, sa("10.77.0.2:80"), "/", None, T).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "web1\n"));
    let r = http_get(
        &cns,
        sa("10.77.0.2:80"),
        "/remote_addr",
        Some(ip("10.77.0.1")),
        T,
    )
    .unwrap();
    assert_eq!(r.body, "10.77.0.1\n");
    let answers = dns_query(&cns, sa("10.77.0.2:53"), "www.example.com", None, T).unwrap();
    assert_eq!(answers, vec![Ipv4Addr::new(10, 77, 9, 9)]);
    assert!(tcp_connect(&cns, sa("10.77.0.2:80"), None, T).unwrap());
    assert!(
        !tcp_connect(&cns, sa("10.77.0.2:81"), None, T).unwrap(),
        "closed port connected"
    );
    let load = http_load(&cns, sa("10.77.0.2:80"), "/", 30, 5, None, T).unwrap();
    assert_eq!((load.ok, load.failed), (30, 0));
    assert_eq!(load.by_body.get("web1"), Some(&30));
    let out = run_command(
        &cns,
        &[
            "cat".into(),
            "/proc/sys/net/ipv6/conf/all/disable_ipv6".into(),
        ],
        T,
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    let stats = cap.stop().unwrap();
    let frames = read_frames(&pcap_path);
    assert_eq!(stats.frames as usize, frames.len());
    assert!(
        frames.iter().any(|f| f.ether_type == 0x0806),
        "no ARP captured"
    );
    let syn = frames.iter().find(|f| {
        f.v4 == Some((Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)))
            && matches!(f.tcp, Some((_, 80, true, false)))
    });
    assert!(
        syn.is_some(),
        "no TCP SYN 10.77.0.1 -> 10.77.0.2:80 in {} frames",
        frames.len()
    );
    assert!(
        frames.iter().any(|f| matches!(f.udp, Some((_, 53)))),
        "no DNS query captured"
    );
    assert!(
        frames.iter().any(|f| matches!(f.udp, Some((53, _)))),
        "no DNS answer captured"
    );
    assert!(
        !frames.iter().any(|f| f.ether_type == 0x86DD),
        "IPv6 frames captured"
    );
    let bad = frames.iter().filter(|f| !f.checksums_ok).count();
    assert_eq!(
        bad, 0,
        "{bad} frames with bad checksums: offloads are not off"
    );

    // tcpdump, an independent reader, reads the file too.
    match std::process::Command::new("tcpdump")
        .arg("-nn")
        .arg("-r")
        .arg(&pcap_path)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "tcpdump: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("10.77.0.1") && text.contains("Flags [S]"),
                "{text}"
            );
        }
        Err(e) => panic!(
            "tcpdump is not runnable ({e}): install it (scripts/install-deps.sh does) to read the capture back"
        ),
    }

    // A BPF filter restricts what is written.
    let udp_path = dir.path().join("caps/udp-only.pcap");
    let cap = start_capture(&cns, "eth0", "udp port 53", &udp_path).unwrap();
    dns_query(&cns, sa("10.77.0.2:53"), "a.example", None, T).unwrap();
    http_get(&cns, sa("10.77.0.2:80"), "/", None, T).unwrap();
    let stats = cap.stop().unwrap();
    assert_eq!(stats.frames, 2, "expected exactly the query and the answer");
    assert!(read_frames(&udp_path).iter().all(|f| f.udp.is_some()));

    web.stop(Duration::from_secs(2)).unwrap();
    assert!(!web.running());
    let dns_pid = dns.pid;
    let names: Vec<String> = t.namespaces().to_vec();
    assert_eq!(names.len(), 3);
    t.teardown().unwrap();
    for ns in &names {
        assert!(!ns_path(ns).exists(), "{ns} survived teardown");
    }
    assert!(
        dns.wait(Duration::from_secs(2)).unwrap().is_some(),
        "teardown left pid {dns_pid} alive"
    );
    t.teardown().unwrap(); // idempotent
}

#[test]
fn two_topologies_with_different_prefixes_coexist() {
    require_root("network namespaces, veth pairs, libpcap");
    let (p1, p2) = (
        unique_prefix_with("penlabio"),
        unique_prefix_with("penlabio"),
    );
    assert_ne!(p1, p2);
    let mut a = three_nodes(&p1);
    let b = three_nodes(&p2); // same node, interface names and addresses
    let dir = tmpdir();
    let _w1 = start_backend(
        &a.ns_name("server"),
        BackendKind::Http {
            name: "in-a".into(),
        },
        &[sa("10.77.0.2:80")],
        &dir.path().join("a.log"),
    );
    let _w2 = start_backend(
        &b.ns_name("server"),
        BackendKind::Http {
            name: "in-b".into(),
        },
        &[sa("10.77.0.2:80")],
        &dir.path().join("b.log"),
    );
    let get = |t: &Topology| {
        http_get(&t.ns_name("client"), sa("10.77.0.2:80"), "/", None, T)
            .unwrap()
            .body
    };
    assert_eq!(get(&a), "in-a\n");
    assert_eq!(get(&b), "in-b\n");
    let a_names = a.namespaces().to_vec();
    a.teardown().unwrap();
    assert!(a_names.iter().all(|n| !ns_path(n).exists()));
    assert_eq!(
        get(&b),
        "in-b\n",
        "tearing down one topology disturbed the other"
    );
    let b_names = b.namespaces().to_vec();
    drop(b);
    assert!(
        b_names.iter().all(|n| !ns_path(n).exists()),
        "Drop did not tear down"
    );
}

#[test]
fn routed_topology_with_rules_sysctls_nft_and_offloads() {
    require_root("network namespaces, veth pairs, libpcap");
    let prefix = unique_prefix_with("penlabio");
    let mut t = Topology::new(&prefix).unwrap();
    for n in ["client", "router", "server"] {
        t.add_node(n, NodeKind::Host).unwrap();
    }
    t.add_link(
        &LinkEnd::new("client", "eth0"),
        &LinkEnd::new("router", "to-client"),
    )
    .unwrap();
    t.add_link(
        &LinkEnd::new("router", "to-server"),
        &LinkEnd::new("server", "eth0"),
    )
    .unwrap();
    t.add_address("client", "eth0", ip("10.78.1.2"), 24)
        .unwrap();
    t.add_address("router", "to-client", ip("10.78.1.1"), 24)
        .unwrap();
    t.add_address("router", "to-server", ip("10.78.2.1"), 24)
        .unwrap();
    t.add_address("server", "eth0", ip("10.78.2.2"), 24)
        .unwrap();
    t.add_address("server", "lo", ip("10.78.99.1"), 32).unwrap(); // a VIP on lo
    t.add_route(
        "client",
        &RouteSpec {
            via: Some(ip("10.78.1.1")),
            ..Default::default()
        },
    )
    .unwrap();
    t.add_route(
        "server",
        &RouteSpec {
            dest: Some((ip("10.78.1.0"), 24)),
            via: Some(ip("10.78.2.1")),
            dev: Some("eth0".into()),
            ..Default::default()
        },
    )
    .unwrap();
    t.add_route(
        "router",
        &RouteSpec {
            dest: Some((ip("10.78.99.1"), 32)),
            dev: Some("to-server".into()),
            ..Default::default()
        },
    )
    .unwrap();
    // The transparent-proxy triple: local route in table 100 and fwmark rule.
    t.add_route(
        "router",
        &RouteSpec {
            dest: Some((ip("0.0.0.0"), 0)),
            dev: Some("lo".into()),
            table: Some(100),
            local: true,
            ..Default::default()
        },
    )
    .unwrap();
    t.add_rule_fwmark("router", 1, 100, false).unwrap();
    let rns = t.ns_name("router");
    let show = |argv: &[&str]| {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let out = run_command(&rns, &argv, T).unwrap();
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(show(&["ip", "rule"]).contains("fwmark 0x1 lookup 100"));
    assert!(show(&["ip", "route", "show", "table", "100"]).contains("local default dev lo"));

    // Not forwarding yet: the connection through the router fails.
    let dir = tmpdir();
    let sns = t.ns_name("server");
    let _web = start_backend(
        &sns,
        BackendKind::Http { name: "far".into() },
        &[sa("0.0.0.0:8080")],
        &dir.path().join("far.log"),
    );
    let cns = t.ns_name("client");
    assert!(!tcp_connect(&cns, sa("10.78.2.2:8080"), None, Duration::from_millis(300)).unwrap());
    t.sysctl("router", "net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(
        http_get(&cns, sa("10.78.2.2:8080"), "/", None, T)
            .unwrap()
            .body,
        "far\n"
    );
    assert_eq!(
        http_get(&cns, sa("10.78.99.1:8080"), "/", None, T)
            .unwrap()
            .body,
        "far\n"
    );

    // nftables: a ruleset that drops the port makes the handshake fail.
    t.nft(
        "router",
        "table inet penlabio {\n  chain filter_fwd {\n    type filter hook forward priority 0; policy accept;\n    tcp dport 8080 drop\n  }\n}\n",
    )
    .unwrap();
    assert!(show(&["nft", "list", "ruleset"]).contains("tcp dport 8080 drop"));
    assert!(!tcp_connect(&cns, sa("10.78.2.2:8080"), None, Duration::from_millis(300)).unwrap());
    let err = t.nft("router", "this is not nft").unwrap_err();
    assert!(format!("{err:#}").contains("router"), "{err:#}");

    // Offloads: off by default, switchable.
    let features = show(&["ethtool", "-k", "to-client"]);
    for off in [
        "tcp-segmentation-offload: off",
        "generic-segmentation-offload: off",
        "generic-receive-offload: off",
        "tx-checksumming: off",
    ] {
        assert!(features.contains(off), "{off} not found in\n{features}");
    }
    t.set_offload("router", "to-client", "gro", true).unwrap();
    assert!(show(&["ethtool", "-k", "to-client"]).contains("generic-receive-offload: on"));

    // IPv6 can be turned back on, for links made later too.
    t.sysctl("client", "net.ipv6.conf.all.disable_ipv6", "0")
        .unwrap();
    let v6 = run_command(
        &cns,
        &[
            "cat".into(),
            "/proc/sys/net/ipv6/conf/default/disable_ipv6".into(),
        ],
        T,
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&v6.stdout).trim(), "0");
    t.add_address("client", "eth0", ip("fd00:78::2"), 64)
        .unwrap();
}

#[test]
fn errors_name_the_offending_node_interface_or_address() {
    require_root("network namespaces, veth pairs, libpcap");
    let prefix = unique_prefix_with("penlabio");
    let mut t = Topology::new(&prefix).unwrap();
    t.add_node("a", NodeKind::Host).unwrap();
    let msg = |r: anyhow::Result<()>| format!("{:#}", r.unwrap_err());
    assert!(msg(t.add_node("a", NodeKind::Host)).contains("\"a\""));
    assert!(msg(t.add_node("bad/name", NodeKind::Host)).contains("bad/name"));
    assert!(
        msg(t.add_link(&LinkEnd::new("a", "eth0"), &LinkEnd::new("ghost", "eth0")))
            .contains("ghost")
    );
    assert!(
        msg(t.add_link(
            &LinkEnd::new("a", "eth0"),
            &LinkEnd::new("a", "a-very-long-name0")
        ))
        .contains("a-very-long-name0")
    );
    assert!(msg(t.add_address("a", "eth9", ip("10.0.0.1"), 24)).contains("eth9"));
    assert!(msg(t.add_address("a", "lo", ip("10.0.0.1"), 33)).contains("0-32"));
    assert!(msg(t.add_address("a", "lo", ip("fd00::1"), 64)).contains("disable_ipv6"));
    assert!(msg(t.sysctl("a", "net.ipv4.no_such_key", "1")).contains("net.ipv4.no_such_key"));
    assert!(msg(t.set_offload("a", "eth9", "tso", false)).contains("eth9"));
    assert!(msg(t.add_route("a", &RouteSpec::default())).contains("via"));
    let err = http_get(
        &t.ns_name("a"),
        sa("10.0.0.9:80"),
        "/",
        None,
        Duration::from_millis(200),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("10.0.0.9:80"));
    // A stale namespace of the same name is reported, with the way out.
    let mut again = Topology::new(&prefix).unwrap();
    let e = format!("{:#}", again.add_node("a", NodeKind::Host).unwrap_err());
    assert!(
        e.contains("already exists") && e.contains("pen-lab clean"),
        "{e}"
    );
    drop(again);
    assert!(
        ns_path(&t.ns_name("a")).exists(),
        "a failed add_node removed someone else's namespace"
    );
}

#[test]
fn clean_leftovers_kills_processes_inside_and_removes_the_namespaces() {
    require_root("network namespaces, veth pairs, libpcap");
    let root = unique_prefix_with("penlabio");
    let prefix = format!("{root}-run");
    let mut t = Topology::new(&prefix).unwrap();
    t.add_node("x", NodeKind::Host).unwrap();
    t.add_node("y", NodeKind::Switch).unwrap();
    let dir = tmpdir();
    let sleeper = spawn(
        &t.ns_name("x"),
        "sleeper",
        &["sleep".into(), "30".into()],
        &[],
        &dir.path().join("sleep.log"),
    )
    .unwrap();
    let pid = sleeper.pid;
    std::mem::forget(sleeper); // as if pen-lab had been interrupted
    // This process still owns the run: clean leaves it alone.
    let c = clean_leftovers(&root, None).unwrap();
    assert!(c.removed.is_empty(), "a live run was cleaned: {c:?}");
    assert_eq!(c.live, vec![(prefix.clone(), std::process::id())]);
    assert!(ns_path(&t.ns_name("x")).exists());
    // The owner is gone (a PID that cannot exist): now it is a leftover.
    std::fs::write(
        std::path::Path::new(pen_lab::owner::OWNER_DIR).join(&prefix),
        "pid 999999999\nstart 1\n",
    )
    .unwrap();
    let c = clean_leftovers(&root, None).unwrap();
    assert_eq!(c.removed, vec![t.ns_name("x"), t.ns_name("y")]);
    assert!(c.live.is_empty());
    assert!(
        !std::path::Path::new(pen_lab::owner::OWNER_DIR)
            .join(&prefix)
            .exists(),
        "the stale owner record stays"
    );
    for _ in 0..200 {
        if !pid_alive(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !pid_alive(pid),
        "process {pid} inside a leftover namespace survived"
    );
    assert_eq!(clean_leftovers(&root, None).unwrap(), Default::default());
    t.teardown().unwrap(); // nothing left to remove: still fine
}

#[test]
fn echo_backends_return_what_they_receive() {
    require_root("network namespaces, veth pairs, libpcap");
    let dir = tmpdir();
    let t = three_nodes(&unique_prefix_with("penlabio"));
    let sns = t.ns_name("server");
    let _tcp = start_backend(
        &sns,
        BackendKind::TcpEcho,
        &[sa("10.77.0.2:7")],
        &dir.path().join("te.log"),
    );
    let _udp = start_backend(
        &sns,
        BackendKind::UdpEcho,
        &[sa("10.77.0.2:7")],
        &dir.path().join("ue.log"),
    );
    let (tcp_back, udp_back) = pen_lab::netns::in_netns(&t.ns_name("client"), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&sa("10.77.0.2:7"), T).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(b"hello tcp").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(T)).unwrap();
        u.send_to(b"hello udp", sa("10.77.0.2:7")).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = u.recv_from(&mut buf).unwrap();
        assert_eq!(from, sa("10.77.0.2:7"));
        (got, buf[..n].to_vec())
    })
    .unwrap();
    assert_eq!(tcp_back, b"hello tcp");
    assert_eq!(udp_back, b"hello udp");
}

/// Sends `n` UDP datagrams of `size` bytes from the client to the server as fast as it can;
/// returns how many arrived.
fn blast(t: &Topology, n: usize, size: usize) -> usize {
    use pen_lab::netns::in_netns;
    let rx = in_netns(&t.ns_name("server"), || {
        std::net::UdpSocket::bind("10.77.0.2:9").unwrap()
    })
    .unwrap();
    let tx = in_netns(&t.ns_name("client"), || {
        std::net::UdpSocket::bind("10.77.0.1:0").unwrap()
    })
    .unwrap();
    let buf = vec![0x55u8; size];
    for _ in 0..n {
        let _ = tx.send_to(&buf, "10.77.0.2:9");
    }
    std::thread::sleep(Duration::from_millis(200));
    rx.set_nonblocking(true).unwrap();
    let mut got = 0;
    let mut rbuf = vec![0u8; 65536];
    while rx.recv(&mut rbuf).is_ok() {
        got += 1;
    }
    got
}

#[test]
fn link_impairments_drop_frames_and_police_the_rate_on_egress() {
    use pen_lab::topology::Impairment;
    require_root("network namespaces, veth pairs, libpcap");
    let prefix = unique_prefix_with("penlabio");
    let mut t = three_nodes(&prefix);
    // Unimpaired (this also resolves ARP before any impairment).
    assert_eq!(blast(&t, 50, 100), 50);
    let none = Impairment {
        loss_percent: 0,
        rate_bps: None,
        burst_bytes: 0,
    };
    // Everything the client sends is lost.
    t.impair(
        "client",
        "eth0",
        &Impairment {
            loss_percent: 100,
            ..none
        },
    )
    .unwrap();
    assert_eq!(blast(&t, 50, 100), 0);
    // Half of it (applied again: replaces the previous impairment).
    t.impair(
        "client",
        "eth0",
        &Impairment {
            loss_percent: 50,
            ..none
        },
    )
    .unwrap();
    let got = blast(&t, 400, 100);
    assert!(
        (120..=280).contains(&got),
        "{got} of 400 arrived at 50% loss"
    );
    // 80 kbit/s = 10 kB/s with a 5 kB burst: of 100 kB sent at once, about the burst arrives.
    t.impair(
        "client",
        "eth0",
        &Impairment {
            loss_percent: 0,
            rate_bps: Some(80_000),
            burst_bytes: 5_000,
        },
    )
    .unwrap();
    let got = blast(&t, 100, 1000);
    assert!(
        (1..=15).contains(&got),
        "{got} datagrams of 1000 bytes passed an 80 kbit/s policer with a 5 kB burst"
    );
    // On a switch port too (the bridge's egress towards the server).
    t.impair(
        "client",
        "eth0",
        &Impairment {
            loss_percent: 0,
            rate_bps: None,
            burst_bytes: 0,
        },
    )
    .unwrap();
    t.impair(
        "sw",
        "p-server",
        &Impairment {
            loss_percent: 100,
            ..none
        },
    )
    .unwrap();
    assert_eq!(blast(&t, 20, 100), 0);
    t.teardown().unwrap();
}
