//! `pen -U` (the real binary) on loopback, with DNS backends started by the tests that answer
//! different A records, and a DNS client in the test.
//!
//! Failover is tested both without the control socket (a stopped backend's port answers with
//! ICMP port unreachable, which must blacklist that server) and with it (`penctl server N
//! blacklist T`, as C Pen's test suite does). Each test kills its pen by PID.

mod common;

#[path = "../examples/dns_responder.rs"]
#[allow(dead_code)]
mod dns;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{is_root, probe_port, wait_within};

/// A DNS backend answering every A query with `answer`, until stopped (then its port is
/// closed and the kernel answers with ICMP port unreachable).
struct DnsBackend {
    addr: SocketAddr,
    answer: Ipv4Addr,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl DnsBackend {
    fn start(bind: &str, answer: Ipv4Addr) -> DnsBackend {
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s2, h2) = (Arc::clone(&stop), Arc::clone(&hits));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !s2.load(Ordering::SeqCst) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    h2.fetch_add(1, Ordering::SeqCst);
                    if let Some(r) = dns::answer(&buf[..n], answer) {
                        let _ = sock.send_to(&r, from);
                    }
                }
            }
        });
        DnsBackend {
            addr,
            answer,
            stop,
            hits,
            thread: Some(thread),
        }
    }

    fn spec(&self) -> String {
        match self.addr {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Close the port.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for DnsBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Pen {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Pen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port(ip: &str) -> u16 {
    UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `pen -f -U <opts> <listen> <backends>` and wait until it answers a query. The listen
/// port is probed free first; another test's socket can take it before pen binds it (pen then
/// exits at once), so an early exit is retried twice on a fresh port.
fn start_pen(listen_ip: &str, opts: &[&str], backends: &[&DnsBackend]) -> Pen {
    let mut exits = Vec::new();
    for _ in 0..3 {
        match try_start_pen(listen_ip, opts, backends) {
            Ok(pen) => return pen,
            Err(status) => exits.push(status),
        }
    }
    panic!("pen exited early three times: {exits:?}");
}

/// One attempt of [`start_pen`]: the running pen, or its exit status if it stopped first.
fn try_start_pen(
    listen_ip: &str,
    opts: &[&str],
    backends: &[&DnsBackend],
) -> Result<Pen, std::process::ExitStatus> {
    let port = free_udp_port(listen_ip);
    let listen = if listen_ip.contains(':') {
        format!("[{listen_ip}]:{port}")
    } else {
        format!("{listen_ip}:{port}")
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pen"));
    cmd.arg("-f").arg("-U").args(opts).arg(&listen);
    for b in backends {
        cmd.arg(b.spec());
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr: SocketAddr = listen.parse().unwrap();
    let mut pen = Pen { child, addr };
    // Ready when a query is answered (bounded). One probe socket, so the probes make one flow
    // however long pen takes between binding and serving (the tests count flows).
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = client(listen_ip);
    loop {
        if let Some(status) = pen.child.try_wait().unwrap() {
            return Err(status);
        }
        if query_once(&probe, addr, Duration::from_millis(100)).is_some() {
            return Ok(pen);
        }
        assert!(Instant::now() < deadline, "pen never answered on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client(ip: &str) -> UdpSocket {
    UdpSocket::bind((ip, 0)).unwrap()
}

/// One query from `sock` to `to`; the A record of the answer, or `None` after `wait`.
fn query_once(sock: &UdpSocket, to: SocketAddr, wait: Duration) -> Option<Ipv4Addr> {
    static ID: AtomicUsize = AtomicUsize::new(1);
    let id = ID.fetch_add(1, Ordering::SeqCst) as u16;
    sock.send_to(&dns::build_query(id, "example.test"), to)
        .unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(
                    from, to,
                    "the answer must come from pen's listening address"
                );
                match dns::parse_a(&buf[..n]) {
                    Some((rid, a)) if rid == id => return Some(a),
                    _ => continue, // a late answer to an earlier query
                }
            }
            Err(_) => return None,
        }
    }
    None
}

/// Like a resolver: up to `tries` attempts from the same socket, 400 ms apart.
fn query(sock: &UdpSocket, to: SocketAddr, tries: usize) -> Option<Ipv4Addr> {
    (0..tries).find_map(|_| query_once(sock, to, Duration::from_millis(400)))
}

fn three(bind: &str) -> Vec<DnsBackend> {
    (1..=3)
        .map(|i| DnsBackend::start(bind, Ipv4Addr::new(192, 0, 2, i)))
        .collect()
}

fn refs(b: &[DnsBackend]) -> Vec<&DnsBackend> {
    b.iter().collect()
}

#[test]
fn tracking_sends_every_port_of_a_client_ip_to_one_server() {
    let b = three("127.0.0.1:0");
    let pen = start_pen("127.0.0.1", &[], &refs(&b));
    let mut answers = BTreeSet::new();
    for _ in 0..9 {
        answers.insert(query(&client("127.0.0.1"), pen.addr, 1).expect("answer"));
    }
    assert_eq!(
        answers.len(),
        1,
        "client tracking: one server for 127.0.0.1, got {answers:?}"
    );
    // Another client address may land elsewhere but also sticks.
    let mut other = BTreeSet::new();
    for _ in 0..5 {
        other.insert(query(&client("127.0.0.2"), pen.addr, 1).expect("answer"));
    }
    assert_eq!(other.len(), 1);
}

#[test]
fn roundrobin_spreads_new_flows_evenly_and_a_flow_sticks() {
    let b = three("127.0.0.1:0");
    let pen = start_pen("127.0.0.1", &["-r"], &refs(&b));
    let mut count: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    // Keep every client socket open: a closed one's port could be handed out again by the
    // kernel and would then be the same (still live) flow, not a new one.
    let mut clients = Vec::new();
    for _ in 0..30 {
        let c = client("127.0.0.1");
        let a = query(&c, pen.addr, 1).expect("answer");
        clients.push(c);
        *count.entry(a).or_default() += 1;
    }
    assert_eq!(count.len(), 3, "{count:?}");
    assert!(
        count.values().all(|&n| n == 10),
        "round robin is even: {count:?}"
    );
    // Later datagrams of one flow (same client port) keep their server.
    let c = client("127.0.0.1");
    let first = query(&c, pen.addr, 1).unwrap();
    for _ in 0..6 {
        assert_eq!(query(&c, pen.addr, 1), Some(first));
    }
}

#[test]
fn stopped_backend_is_blacklisted_by_icmp_and_new_flows_avoid_it() {
    let mut b = three("127.0.0.1:0");
    let dead_answer = b[1].answer;
    b[1].stop();
    let pen = start_pen("127.0.0.1", &["-r", "-b", "30"], &refs(&b));
    // Until the ICMP error arrives one flow may be lost; a resolver's retry gets through.
    for _ in 0..6 {
        let a = query(&client("127.0.0.1"), pen.addr, 3).expect("failover answer");
        assert_ne!(a, dead_answer);
    }
    // Once blacklisted, every new flow is answered at the first attempt by the two others.
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let a = query(&client("127.0.0.1"), pen.addr, 1).expect("first-attempt answer");
        seen.insert(a);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(!seen.contains(&dead_answer));
}

#[test]
fn all_backends_dead_means_no_answer_and_pen_survives() {
    let mut b = three("127.0.0.1:0");
    let pen = start_pen("127.0.0.1", &["-r"], &refs(&b));
    for x in b.iter_mut() {
        x.stop();
    }
    for _ in 0..6 {
        assert_eq!(query(&client("127.0.0.1"), pen.addr, 1), None);
    }
    let mut pen = pen;
    assert!(
        pen.child.try_wait().unwrap().is_none(),
        "pen is still running"
    );
}

#[test]
fn ipv6_listener_with_ipv6_and_ipv4_backends() {
    let b6 = DnsBackend::start("[::1]:0", Ipv4Addr::new(192, 0, 2, 6));
    let b4 = DnsBackend::start("127.0.0.1:0", Ipv4Addr::new(192, 0, 2, 4));
    let pen = start_pen("::1", &["-r"], &[&b6, &b4]);
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        seen.insert(query(&client("::1"), pen.addr, 1).expect("answer over IPv6"));
    }
    assert_eq!(
        seen.len(),
        2,
        "address family adapter v6 → v4 and v6 → v6: {seen:?}"
    );
}

/// Wait (bounded) until the backends together have seen `n` datagrams.
fn hits_reach(b: &[DnsBackend], n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let hits: usize = b.iter().map(DnsBackend::hits).sum();
        if hits >= n || Instant::now() >= deadline {
            return hits;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn conn_max_full_of_unanswered_flows_refuses_new_ones_and_keeps_them() {
    let b = three("127.0.0.1:0");
    let pen = start_pen("127.0.0.1", &["-r", "-x", "3"], &refs(&b));
    // The readiness probe's flow(s) are answered, so evictable. Flows whose datagrams the
    // backends never answer (not DNS) are not: of six such new flows exactly three get in
    // (free slots or evicting the probe flows), the other three are refused.
    let silent: Vec<UdpSocket> = (0..6).map(|_| client("127.0.0.1")).collect();
    let base: usize = b.iter().map(DnsBackend::hits).sum();
    for (i, s) in silent.iter().enumerate() {
        s.send_to(b"junk", pen.addr).unwrap();
        if i < 3 {
            assert_eq!(
                hits_reach(&b, base + i + 1),
                base + i + 1,
                "junk {i} forwarded"
            );
        } else {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    let hits: usize = b.iter().map(DnsBackend::hits).sum();
    assert_eq!(
        hits,
        base + 3,
        "unanswered flows beyond conn_max are refused"
    );
    assert_eq!(
        query(&client("127.0.0.1"), pen.addr, 1),
        None,
        "a table full of unanswered flows refuses new flows"
    );
    // The unanswered flows are not pushed out: their next datagrams still go through.
    for s in &silent[..3] {
        s.send_to(b"more", pen.addr).unwrap();
    }
    assert_eq!(
        hits_reach(&b, base + 6),
        base + 6,
        "existing flows still served"
    );
}

#[test]
fn fresh_port_queries_through_a_small_table_are_all_answered() {
    let b = three("127.0.0.1:0");
    let (_page, pen, ctl) = start_pen_page("fresh", &["-r", "-x", "50"], &refs(&b));
    // Keep every socket open, so each query really comes from a port not seen before.
    let mut clients = Vec::new();
    let mut lost = 0;
    for _ in 0..500 {
        let c = client("127.0.0.1");
        if query_once(&c, pen.addr, Duration::from_secs(1)).is_none() {
            lost += 1;
        }
        clients.push(c);
    }
    assert_eq!(
        lost, 0,
        "every fresh-port query through a 50-flow table is answered"
    );
    // 501 flows or more (with the readiness probe) through 50 slots: at least 451 evictions.
    let evicted = |page: &str| -> Option<u64> {
        page.split("evicted ")
            .nth(1)
            .and_then(|t| t.split(';').next())
            .and_then(|n| n.trim().parse().ok())
    };
    let page = status_until(&ctl, Duration::from_secs(3), |p| {
        evicted(p).is_some_and(|n| n >= 451)
    });
    let n = evicted(&page).unwrap_or(0);
    assert!((451..=460).contains(&n), "{n} evictions: {page}");
    assert!(page.contains("50 max, 50 used;"), "{page}");
}

#[test]
fn empty_huge_and_flooding_datagrams_do_not_hurt_pen() {
    let b = three("127.0.0.1:0");
    let pen = start_pen("127.0.0.1", &["-r", "-x", "100"], &refs(&b));
    let c = client("127.0.0.1");
    c.send_to(&[], pen.addr).unwrap();
    c.send_to(&vec![0xAB; 65_507], pen.addr).unwrap();
    // 2,000 datagrams from 400 source ports (table of 100).
    let flood: Vec<UdpSocket> = (0..400).map(|_| client("127.0.0.1")).collect();
    for round in 0..5u8 {
        for s in &flood {
            let _ = s.send_to(&[round; 40], pen.addr);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut pen = pen;
    assert!(pen.child.try_wait().unwrap().is_none(), "pen survived");
    // Backends saw at most one flow's worth per table slot plus the garbage datagrams.
    let hits: usize = b.iter().map(DnsBackend::hits).sum();
    assert!(
        hits < 2_000,
        "new flows beyond conn_max were dropped ({hits} forwarded)"
    );
    // The earlier flow (the 0 and 64 KiB datagrams) still works.
    assert!(query(&c, pen.addr, 1).is_some());
}

/// pen -U with a control port on 127.0.0.1 (and `-u root` when root, which C Pen requires to
/// open it); returns the control address.
fn start_pen_ctl(opts: &[&str], backends: &[&DnsBackend]) -> (Pen, String) {
    let control = format!("127.0.0.1:{}", probe_port());
    let mut all: Vec<&str> = Vec::new();
    if is_root() {
        all.extend(["-u", "root"]);
    }
    all.extend(["-C", control.as_str()]);
    all.extend_from_slice(opts);
    let pen = start_pen("127.0.0.1", &all, backends);
    // The control port opens with the listener; wait for a reply (bounded).
    assert!(
        wait_within(Duration::from_secs(5), || penctl_try(&control, &["mode"])
            .is_some()),
        "control port {control} never answered"
    );
    (pen, control)
}

/// A `-w` status page file; removed when dropped (also when a test fails).
struct StatusPage(std::path::PathBuf);

impl Drop for StatusPage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// [`start_pen_ctl`] with a `-w` status page named after `name` (the `status` command needs
/// one). Bind the page first, so that it is removed after pen is killed.
fn start_pen_page(
    name: &str,
    opts: &[&str],
    backends: &[&DnsBackend],
) -> (StatusPage, Pen, String) {
    let web = std::env::temp_dir().join(format!("pen-udp-{name}-{}.html", std::process::id()));
    let web_s = web.display().to_string();
    let mut all = vec!["-w", web_s.as_str()];
    all.extend_from_slice(opts);
    let (pen, ctl) = start_pen_ctl(&all, backends);
    (StatusPage(web), pen, ctl)
}

fn penctl_try(control: &str, words: &[&str]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_penctl"))
        .arg(control)
        .args(words)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workspace's penctl; its reply.
fn penctl(control: &str, words: &[&str]) -> String {
    penctl_try(control, words).unwrap_or_else(|| panic!("penctl {control} {words:?} failed"))
}

/// Answers of `n` new flows (a fresh client port each), one attempt each. The client sockets
/// go into `held` and must stay open for the rest of the test: a closed one's port could be
/// handed to a later "new" flow, which pen would rightly treat as the old flow (still in its
/// table, on its old server).
fn new_flow_answers(pen: &Pen, n: usize, held: &mut Vec<UdpSocket>) -> Vec<Option<Ipv4Addr>> {
    (0..n)
        .map(|_| {
            let c = client("127.0.0.1");
            let a = query(&c, pen.addr, 1);
            held.push(c);
            a
        })
        .collect()
}

#[test]
fn penctl_blacklist_moves_new_flows_away_and_blacklist_0_brings_the_server_back() {
    let b = three("127.0.0.1:0");
    let (pen, ctl) = start_pen_ctl(&["-r"], &refs(&b));
    let kept = client("127.0.0.1");
    assert!(query(&kept, pen.addr, 1).is_some());
    let mut held = Vec::new();

    // Server 1 blacklisted: new flows go to 0 and 2 only.
    assert_eq!(penctl(&ctl, &["server", "1", "blacklist", "30"]), "");
    let answers = new_flow_answers(&pen, 12, &mut held);
    let seen: BTreeSet<Ipv4Addr> = answers.iter().map(|a| a.expect("answer")).collect();
    assert_eq!(
        seen,
        BTreeSet::from([b[0].answer, b[2].answer]),
        "new flows avoid the blacklisted server 1"
    );

    // Every server blacklisted: a new flow gets no answer, pen keeps running.
    penctl(&ctl, &["server", "0", "blacklist", "30"]);
    penctl(&ctl, &["server", "2", "blacklist", "30"]);
    let hits_before: usize = b.iter().map(DnsBackend::hits).sum();
    assert_eq!(
        new_flow_answers(&pen, 3, &mut held),
        vec![None; 3],
        "all blacklisted"
    );
    let hits_after: usize = b.iter().map(DnsBackend::hits).sum();
    assert_eq!(
        hits_before, hits_after,
        "no backend saw the refused queries"
    );

    // `server 1 blacklist 0` brings server 1 back: it takes every new flow.
    penctl(&ctl, &["server", "1", "blacklist", "0"]);
    for a in new_flow_answers(&pen, 4, &mut held) {
        assert_eq!(a, Some(b[1].answer), "server 1 is back");
    }
    let mut pen = pen;
    assert!(pen.child.try_wait().unwrap().is_none(), "pen still running");
}

/// Polls `status` (the HTML page) until `pred` holds (bounded); returns the last page.
fn status_until(ctl: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let page = penctl(ctl, &["status"]);
        if pred(&page) || Instant::now() >= deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn udp_flow_idle_is_set_at_start_and_at_run_time_and_flows_expire_in_the_stats() {
    let b = three("127.0.0.1:0");
    let (_page, pen, ctl) = start_pen_page("stats", &["-r", "-O", "udp_flow_idle 30"], &refs(&b));
    assert_eq!(penctl(&ctl, &["udp_flow_idle"]), "30\n", "-O at start-up");

    let c = client("127.0.0.1");
    let port = c.local_addr().unwrap().port();
    assert!(query(&c, pen.addr, 1).is_some());
    let me = format!("<td>127.0.0.1:{port}</td>");
    let page = status_until(&ctl, Duration::from_secs(3), |p| p.contains(&me));
    assert!(page.contains("flow idle time 30 seconds"), "{page}");
    assert!(page.contains(&me), "the flow is listed: {page}");
    // `connection N` shows a flow too (the readiness probe's, the oldest).
    let conn = penctl(&ctl, &["connection", "0"]);
    assert!(
        conn.contains("state = 2") && conn.contains("udp flow:"),
        "{conn}"
    );

    // Run time: 1 s idle expires both flows within a tick or two.
    assert_eq!(penctl(&ctl, &["udp_flow_idle", "1"]), "1\n");
    let page = status_until(&ctl, Duration::from_secs(5), |p| {
        p.contains(" max, 0 used;") && p.contains("expired 2,")
    });
    assert!(
        page.contains(" max, 0 used;") && page.contains("expired 2,"),
        "both flows expired: {page}"
    );
    assert!(!page.contains(&me), "{page}");
    // The expired client starts a new flow on its next datagram.
    assert!(query(&c, pen.addr, 1).is_some());
    // 0 is refused with a reason; the value stays.
    let r = penctl_try(&ctl, &["udp_flow_idle", "0"]).unwrap_or_default();
    assert!(r.contains("'udp_flow_idle'") && r.contains(">= 1"), "{r}");
    assert_eq!(penctl(&ctl, &["udp_flow_idle"]), "1\n");
}

/// A wildcard listener answers from the address each client sent to (IP_PKTINFO), not from the
/// address the route back prefers: a resolver that queried 127.0.0.2 (or 127.0.0.3) drops an
/// answer from 127.0.0.1 (`query_once` checks the source like one).
#[test]
fn a_wildcard_listener_answers_from_the_address_the_client_queried() {
    let b = DnsBackend::start("127.0.0.1:0", Ipv4Addr::new(192, 0, 2, 7));
    let port = free_udp_port("0.0.0.0");
    let child = Command::new(env!("CARGO_BIN_EXE_pen"))
        .args(["-f", "-U", &format!("0.0.0.0:{port}"), &b.spec()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut pen = Pen {
        child,
        addr: SocketAddr::from(([127, 0, 0, 2], port)),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(status) = pen.child.try_wait().unwrap() {
            panic!("pen exited early: {status}");
        }
        // From 127.0.0.1 to 127.0.0.2: the kernel's own choice of source would be 127.0.0.1.
        if let Some(a) = query_once(&client("127.0.0.1"), pen.addr, Duration::from_millis(100)) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "pen never answered on {}",
            pen.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(first, Ipv4Addr::new(192, 0, 2, 7));
    // The same client socket (one flow) querying two addresses: each answer from its own.
    let c = client("127.0.0.1");
    for ip in [[127, 0, 0, 3], [127, 0, 0, 1], [127, 0, 0, 2]] {
        let to = SocketAddr::from((ip, port));
        assert!(query(&c, to, 3).is_some(), "no answer from {to}");
    }
}

#[test]
fn a_live_flow_follows_its_server_to_a_new_address() {
    // Two responders; pen knows only the first. C Pen sends every datagram to the server's
    // current address, so `server 0 address/port` moves live flows too: here the flow is
    // closed at the next tick and the client's next query opens one to the new address.
    let b = three("127.0.0.1:0");
    let (_page, pen, ctl) =
        start_pen_page("move", &["-r", "-O", "udp_flow_idle 60"], &refs(&b[..1]));
    let c = client("127.0.0.1");
    assert_eq!(query(&c, pen.addr, 3), Some(b[0].answer));
    assert_eq!(query(&c, pen.addr, 3), Some(b[0].answer), "the flow sticks");
    let port = b[1].addr.port().to_string();
    penctl(
        &ctl,
        &["server", "0", "address", "127.0.0.1", "port", &port],
    );
    // Within a tick or two (bounded), the same client socket is answered by the new address.
    let moved = wait_within(Duration::from_secs(5), || {
        query_once(&c, pen.addr, Duration::from_millis(300)) == Some(b[1].answer)
    });
    assert!(
        moved,
        "the live flow never reached the server's new address"
    );
    // Two flows were on the old address: this client's and the readiness probe's.
    let page = status_until(&ctl, Duration::from_secs(3), |p| {
        p.contains("readdressed 2,")
    });
    assert!(page.contains("readdressed 2,"), "{page}");
}

#[test]
fn close_n_removes_udp_flow_n_and_the_client_gets_a_new_one() {
    let b = three("127.0.0.1:0");
    let (_page, pen, ctl) = start_pen_page("close", &["-r", "-O", "udp_flow_idle 60"], &refs(&b));
    let c = client("127.0.0.1");
    assert!(query(&c, pen.addr, 3).is_some());
    let me = format!("<td>127.0.0.1:{}</td>", c.local_addr().unwrap().port());
    let page = status_until(&ctl, Duration::from_secs(3), |p| p.contains(&me));
    assert!(page.contains(&me), "{page}");
    // Flow 0 is the readiness probe's (oldest first), flow 1 this client's.
    assert!(penctl(&ctl, &["connection", "1"]).contains("udp flow:"));
    penctl(&ctl, &["close", "1"]);
    let page = status_until(&ctl, Duration::from_secs(3), |p| !p.contains(&me));
    assert!(!page.contains(&me), "flow 1 is gone: {page}");
    assert!(page.contains("Flows created 2,"), "{page}");
    // Its client's next datagram opens a new flow; an unknown index changes nothing.
    assert!(query(&c, pen.addr, 3).is_some());
    penctl(&ctl, &["close", "7"]);
    let page = status_until(&ctl, Duration::from_secs(3), |p| p.contains(&me));
    assert!(
        page.contains(&me) && page.contains("Flows created 3,") && page.contains(" 2 used;"),
        "{page}"
    );
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn upstream_sockets_of_a_burst_are_closed_once_its_flows_expire() {
    let b = three("127.0.0.1:0");
    let (pen, _ctl) = start_pen_ctl(&["-r", "-O", "udp_flow_idle 1"], &refs(&b[..1]));
    let pid = pen.child.id();
    let before = open_fds(pid);
    // 60 live flows to one server need 60 upstream sockets.
    let clients: Vec<UdpSocket> = (0..60).map(|_| client("127.0.0.1")).collect();
    for c in &clients {
        assert!(query(c, pen.addr, 3).is_some());
    }
    let peak = open_fds(pid);
    assert!(
        peak >= before + 55,
        "{before} descriptors before, {peak} with 60 flows"
    );
    // They expire after 1 s; the next tick gives their sockets back (bounded wait).
    let shrunk = wait_within(Duration::from_secs(6), || open_fds(pid) <= before + 1);
    assert!(
        shrunk,
        "{before} descriptors before, {peak} at the peak, {} after expiry",
        open_fds(pid)
    );
    // And the pool grows again for new flows, which are answered.
    for c in clients.iter().take(10) {
        assert!(query(c, pen.addr, 3).is_some());
    }
    assert!(open_fds(pid) > before, "new flows reopened sockets");
}
