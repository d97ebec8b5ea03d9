//! Trace tests: `captures/fixtures/dsr-*.pcap` → engine (offline pcap driver) → compared byte
//! for byte with `captures/expected/dsr-*.pcap` and the verdict log `dsr-*.log`.
//!
//! Regenerate after an intended change, then review the diff of the logs:
//! - `PEN_REGEN_TRACES=1 cargo test --test engine_traces` rewrites `captures/expected/`;
//! - `PEN_REGEN_TRACES=fixtures cargo test --test engine_traces` also rewrites the synthetic
//!   inputs in `captures/fixtures/` from the builders below.
//!
//! The engine runs as `pen-sim` runs it by default: MAC 02:00:00:00:00:01, ISN key all zero.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pen::engine::frames::{self, ACK, FIN, PSH, RST, SYN};
use pen::engine::{Engine, Mac, config_from_pen_args, ndp, tarpit};
use pen::link::pcapfile::{read_frames, replay, run_sim, split_args, write_frames};

const OUR: Mac = [0x02, 0, 0, 0, 0, 0x01];
const C1_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
const C2_MAC: Mac = [0x02, 0, 0, 0, 0, 0x05];
const B0_MAC: Mac = [0x02, 0, 0, 0, 0, 0x03];
const B1_MAC: Mac = [0x02, 0, 0, 0, 0, 0x04];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const B0: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const B1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
const C1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const TARPIT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);

struct Trace {
    name: &'static str,
    /// pen's arguments, as `pen-sim --config` takes them.
    args: &'static str,
    frames: fn() -> Vec<(Duration, Vec<u8>)>,
}

const TRACES: &[Trace] = &[
    Trace {
        name: "dsr-tcp",
        args: r#"-O "dsr_if eth1" 10.0.0.100:80 10.0.0.3 10.0.0.4"#,
        frames: tcp_trace,
    },
    Trace {
        name: "dsr-udp-dns",
        args: r#"-U -r -O "dsr_if eth1" 10.0.0.100:53 10.0.0.3 10.0.0.4"#,
        frames: udp_trace,
    },
    Trace {
        name: "dsr-tarpit",
        args: r#"-O "acl 1 permit 10.0.0.200" -O "tarpit_acl 1" -O "dsr_if eth1" 10.0.0.100:80 10.0.0.3 10.0.0.4"#,
        frames: tarpit_trace,
    },
    Trace {
        name: "dsr-tcp6",
        args: r#"-O "acl 2 permit fd00::200" -O "tarpit_acl 2" -O "dsr_if eth1" [fd00::100]:80 [fd00::3] [fd00::4]"#,
        frames: tcp6_trace,
    },
    Trace {
        name: "tarpit-persist",
        args: r#"-O "acl 1 permit 10.0.0.200" -O "tarpit_acl 1" -O tarpit_persist -O "dsr_if eth1" 10.0.0.100:80 10.0.0.3 10.0.0.4"#,
        frames: persist_trace,
    },
    Trace {
        name: "tarpit-capture",
        args: r#"-O "tarpit_capture 10.0.0.0/24 wait 2 max 64" -O "dsr_if eth1" 10.0.0.100:80 10.0.0.3 10.0.0.4"#,
        frames: capture_trace,
    },
    Trace {
        name: "tarpit-ratecap",
        args: r#"-O "acl 1 permit 10.0.0.200" -O "tarpit_acl 1" -O "tarpit_rate 10 burst 5" -O "dsr_if eth1" 10.0.0.100:80 10.0.0.3 10.0.0.4"#,
        frames: ratecap_trace,
    },
    Trace {
        name: "dsr-bad",
        args: r#"-O "dsr_if eth1" 10.0.0.100:80 10.0.0.3 10.0.0.4"#,
        frames: bad_trace,
    },
];

fn at(ms: u64) -> Duration {
    Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

fn arp_replies(ms: u64) -> Vec<(Duration, Vec<u8>)> {
    vec![
        (
            at(ms),
            frames::arp_reply(B0_MAC, B0, OUR, Ipv4Addr::UNSPECIFIED),
        ),
        (
            at(ms + 1),
            frames::arp_reply(B1_MAC, B1, OUR, Ipv4Addr::UNSPECIFIED),
        ),
    ]
}

/// Two HTTP clients through the VIP: ARP for the VIP, a SYN held until the backends' MACs are
/// learned, a whole request, a wrong port, and the 60 s refresh of backend MACs.
fn tcp_trace() -> Vec<(Duration, Vec<u8>)> {
    let vip = sa(VIP, 80);
    let c1 = sa(C1, 41000);
    let c2 = sa(C2, 52000);
    let t = |ms, mac, c, flags, seq, ack, opts: &[u8], data: &[u8]| {
        (
            at(ms),
            frames::tcp(mac, OUR, c, vip, flags, seq, ack, opts, data),
        )
    };
    let mut v = vec![
        (at(0), frames::arp_request(C1_MAC, C1, VIP)),
        t(1, C1_MAC, c1, SYN, 100, 0, &frames::syn_options(20), b""),
    ];
    v.extend(arp_replies(2));
    v.extend([
        t(10, C1_MAC, c1, ACK, 101, 7001, &[], b""),
        t(
            11,
            C1_MAC,
            c1,
            ACK | PSH,
            101,
            7001,
            &[],
            b"GET / HTTP/1.0\r\n\r\n",
        ),
        t(20, C1_MAC, c1, FIN | ACK, 119, 7200, &[], b""),
        (at(30), frames::arp_request(C2_MAC, C2, VIP)),
        t(31, C2_MAC, c2, SYN, 900, 0, &frames::syn_options(20), b""),
        t(
            32,
            C2_MAC,
            c2,
            ACK | PSH,
            901,
            1,
            &[],
            b"GET /x HTTP/1.0\r\n\r\n",
        ),
        (
            at(40),
            frames::tcp(C2_MAC, OUR, c2, sa(VIP, 8080), SYN, 5, 0, &[], b""),
        ),
        t(
            61_000,
            C1_MAC,
            c1,
            SYN,
            5000,
            0,
            &frames::syn_options(20),
            b"",
        ),
    ]);
    v
}

/// DNS through the VIP with `-U -r`: queries from several client ports spread over both
/// backends; TCP to the VIP is ignored.
fn udp_trace() -> Vec<(Duration, Vec<u8>)> {
    let mut v = arp_replies(0);
    for (i, port) in [33000u16, 33001, 33002, 33003, 33004, 33005]
        .iter()
        .enumerate()
    {
        let q = [
            &[0x10, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0][..],
            b"\x03www\x07example\x00\x00\x01\x00\x01",
        ]
        .concat();
        v.push((
            at(10 + i as u64),
            frames::udp(C1_MAC, OUR, sa(C1, *port), sa(VIP, 53), &q),
        ));
    }
    v.push((
        at(20),
        frames::tcp(C1_MAC, OUR, sa(C1, 33010), sa(VIP, 53), SYN, 1, 0, &[], b""),
    ));
    v
}

/// The tarpit: ARP for the tarpit address and for another one, SYNs with every common option
/// length, and the rest of a connection that the tarpit ignores.
fn tarpit_trace() -> Vec<(Duration, Vec<u8>)> {
    let mut v = arp_replies(0);
    v.push((at(5), frames::arp_request(C1_MAC, C1, TARPIT)));
    v.push((
        at(6),
        frames::arp_request(C1_MAC, C1, Ipv4Addr::new(10, 0, 0, 201)),
    ));
    for (i, n) in [0usize, 4, 12, 20, 40].iter().enumerate() {
        let c = sa(C1, 44000 + i as u16);
        v.push((
            at(10 + i as u64),
            frames::tcp(
                C1_MAC,
                OUR,
                c,
                sa(TARPIT, 80),
                SYN,
                7 * i as u32,
                0,
                &frames::syn_options(*n),
                b"",
            ),
        ));
    }
    let c = sa(C1, 44003);
    v.push((
        at(20),
        frames::tcp(C1_MAC, OUR, c, sa(TARPIT, 80), ACK, 22, 1, &[], b""),
    ));
    v.push((
        at(21),
        frames::tcp(
            C1_MAC,
            OUR,
            c,
            sa(TARPIT, 80),
            ACK | PSH,
            22,
            1,
            &[],
            b"GET / HTTP/1.0\r\n\r\n",
        ),
    ));
    v.push((
        at(22),
        frames::tcp(
            C1_MAC,
            OUR,
            sa(C1, 45000),
            sa(VIP, 80),
            SYN,
            1,
            0,
            &frames::syn_options(20),
            b"",
        ),
    ));
    v
}

/// IPv6: neighbor solicitation for the VIP, a SYN held until the backends answer the engine's
/// solicitations, a request, the tarpit over IPv6, and a solicitation for another address.
fn tcp6_trace() -> Vec<(Duration, Vec<u8>)> {
    let v6 = |last: u16| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last);
    let (vip, b0, b1, c1, tarpit) = (v6(0x100), v6(3), v6(4), v6(2), v6(0x200));
    let sa = |ip, port| SocketAddrV6::new(ip, port, 0, 0);
    let ll = ndp::link_local(OUR);
    let (group, group_mac) = ndp::solicited_node(vip);
    let t = |ms, dst, flags, seq, opts: &[u8], data: &[u8]| {
        (
            at(ms),
            frames::tcp6(
                C1_MAC,
                OUR,
                sa(c1, 41000),
                dst,
                flags,
                seq,
                7001,
                opts,
                data,
            ),
        )
    };
    vec![
        (
            at(0),
            frames::nd(C1_MAC, group_mac, c1, group, false, vip, Some(C1_MAC)),
        ),
        t(1, sa(vip, 80), SYN, 100, &frames::syn_options(20), b""),
        (
            at(2),
            frames::nd(B0_MAC, OUR, b0, ll, true, b0, Some(B0_MAC)),
        ),
        (
            at(3),
            frames::nd(B1_MAC, OUR, b1, ll, true, b1, Some(B1_MAC)),
        ),
        t(
            10,
            sa(vip, 80),
            ACK | PSH,
            101,
            &[],
            b"GET / HTTP/1.0\r\n\r\n",
        ),
        (
            at(20),
            frames::nd(C1_MAC, group_mac, c1, group, false, tarpit, Some(C1_MAC)),
        ),
        t(21, sa(tarpit, 22), SYN, 5, &frames::syn_options(12), b""),
        t(22, sa(tarpit, 22), ACK, 6, &[], b""),
        (
            at(23),
            frames::nd(C1_MAC, group_mac, c1, group, false, v6(0x101), Some(C1_MAC)),
        ),
    ]
}

/// Persist mode (`tarpit_persist`): a SYN gets a zero-window SYN+ACK; the handshake's ACK, the
/// client's zero-window probes (Linux: no data, one below the next byte, with backoff), a
/// one-byte probe and data each get an ACK that acknowledges nothing new; RST, FIN and an ACK
/// with a forged acknowledgment number get nothing.
fn persist_trace() -> Vec<(Duration, Vec<u8>)> {
    let c = sa(C1, 44000);
    let cisn = 7000u32;
    let ours = tarpit::isn(&[0; 16], C1, TARPIT, 44000, 80) ^ cisn;
    let t = |ms, flags, seq, ack, data: &[u8]| {
        (
            at(ms),
            frames::tcp(C1_MAC, OUR, c, sa(TARPIT, 80), flags, seq, ack, &[], data),
        )
    };
    let mut v = arp_replies(0);
    v.push((at(5), frames::arp_request(C1_MAC, C1, TARPIT)));
    v.push((
        at(10),
        frames::tcp(
            C1_MAC,
            OUR,
            c,
            sa(TARPIT, 80),
            SYN,
            cisn,
            0,
            &frames::syn_options(20),
            b"",
        ),
    ));
    v.push(t(11, ACK, cisn + 1, ours + 1, b""));
    for ms in [211, 611, 1411, 3011, 6211] {
        v.push(t(ms, ACK, cisn, ours + 1, b""));
    }
    v.push(t(7000, ACK, cisn + 1, ours + 1, b"G"));
    v.push(t(
        7001,
        ACK | PSH,
        cisn + 1,
        ours + 1,
        b"GET / HTTP/1.0\r\n\r\n",
    ));
    v.push(t(8000, ACK, cisn + 1, 0x1234_5678, b""));
    v.push(t(9000, RST | ACK, cisn + 1, ours + 1, b""));
    v.push(t(9001, FIN | ACK, cisn + 1, ours + 1, b""));
    v
}

/// Address capture (`tarpit_capture 10.0.0.0/24 wait 2`): ARP requests for 10.0.0.50 go
/// unanswered for 2 s, then the tarpit answers them and its SYNs; a request for 10.0.0.51
/// asked only once is never answered; a host comes up on 10.0.0.50 (its ARP reply) and from
/// then on the tarpit answers nothing for it.
fn capture_trace() -> Vec<(Duration, Vec<u8>)> {
    let free = Ipv4Addr::new(10, 0, 0, 50);
    let host_mac: Mac = [0x02, 0, 0, 0, 0, 0x50];
    let syn = |ms, port| {
        (
            at(ms),
            frames::tcp(
                C1_MAC,
                OUR,
                sa(C1, port),
                sa(free, 22),
                SYN,
                100,
                0,
                &frames::syn_options(20),
                b"",
            ),
        )
    };
    let mut v = arp_replies(0);
    for ms in [10, 1010, 2010] {
        v.push((at(ms), frames::arp_request(C1_MAC, C1, free)));
    }
    v.push((
        at(2011),
        frames::arp_request(C1_MAC, C1, Ipv4Addr::new(10, 0, 0, 51)),
    ));
    v.push(syn(2020, 45000));
    // the host on 10.0.0.50 answers the client's next request itself
    v.push((at(3000), frames::arp_reply(host_mac, free, C1_MAC, C1)));
    v.push((at(3010), frames::arp_request(C1_MAC, C1, free)));
    v.push(syn(3020, 45001));
    for ms in [4000, 5000, 6000, 7000] {
        v.push((at(ms), frames::arp_request(C1_MAC, C1, free)));
    }
    v
}

/// The rate cap (`tarpit_rate 10 burst 5`): 100 SYNs from spoofed sources spread over many
/// networks in one second get at most 5 + 10 SYN+ACKs; the rest are dropped and counted.
fn ratecap_trace() -> Vec<(Duration, Vec<u8>)> {
    let mut v = arp_replies(0);
    for i in 0..100u32 {
        let src = Ipv4Addr::from(0xc000_0000u32.wrapping_add(i.wrapping_mul(0x0001_0301)));
        v.push((
            at(10 + u64::from(i) * 10),
            frames::tcp(
                C2_MAC,
                OUR,
                sa(src, 1024 + i as u16),
                sa(TARPIT, 80),
                SYN,
                i,
                0,
                &[],
                b"",
            ),
        ));
    }
    v
}

/// Bad input, each dropped and counted by reason, followed by a good frame.
fn bad_trace() -> Vec<(Duration, Vec<u8>)> {
    let good = frames::tcp(C1_MAC, OUR, sa(C1, 41000), sa(VIP, 80), SYN, 1, 0, &[], b"");
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let mut vlan = good.clone();
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    let mut long_total = good.clone();
    long_total[16..18].copy_from_slice(&999u16.to_be_bytes());
    let mut v = arp_replies(0);
    v.extend([
        (at(1), good[..10].to_vec()),
        (at(2), good[..20].to_vec()),
        (at(3), bad_ihl),
        (at(4), vlan),
        (at(5), long_total),
        (at(6), frames::arp_request(C1_MAC, C1, VIP)[..30].to_vec()),
        (at(7), vec![0u8; 9300]),
        (at(8), good),
    ]);
    v
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures")
}

fn run_engine(args: &str, input: &Path) -> (Vec<u8>, String) {
    let words = split_args(args).unwrap();
    let cfg = config_from_pen_args(&words, OUR, [0; 16]).unwrap();
    let mut e = Engine::new(cfg);
    let mut out = Vec::new();
    let mut log = Vec::new();
    replay(
        &mut e,
        std::fs::File::open(input).unwrap(),
        &mut out,
        &mut log,
    )
    .unwrap();
    (out, String::from_utf8(log).unwrap())
}

#[test]
fn traces_match_golden_files() {
    let regen = std::env::var("PEN_REGEN_TRACES").unwrap_or_default();
    let mut mismatches = Vec::new();
    for t in TRACES {
        let fixture = root().join("fixtures").join(format!("{}.pcap", t.name));
        let expected = root().join("expected").join(format!("{}.pcap", t.name));
        let expected_log = root().join("expected").join(format!("{}.log", t.name));
        if regen == "fixtures" {
            let f = std::fs::File::create(&fixture).unwrap();
            write_frames(f, &(t.frames)()).unwrap();
        }
        assert!(
            fixture.exists(),
            "{} is missing: run PEN_REGEN_TRACES=fixtures cargo test --test engine_traces",
            fixture.display()
        );
        let (out, log) = run_engine(t.args, &fixture);
        if !regen.is_empty() {
            std::fs::write(&expected, &out).unwrap();
            std::fs::write(&expected_log, &log).unwrap();
            continue;
        }
        let want = std::fs::read(&expected).unwrap_or_default();
        let want_log = std::fs::read_to_string(&expected_log).unwrap_or_default();
        if out != want || log != want_log {
            mismatches.push(format!(
                "{}: output differs from {} (or its .log). Log now:\n{log}",
                t.name,
                expected.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\nIf the change is intended: PEN_REGEN_TRACES=1 cargo test --test engine_traces, and review the diff",
        mismatches.join("\n")
    );
}

#[test]
fn committed_fixtures_are_what_the_builders_make() {
    for t in TRACES {
        let fixture = root().join("fixtures").join(format!("{}.pcap", t.name));
        let got = read_frames(std::fs::File::open(&fixture).unwrap()).unwrap();
        assert_eq!(
            got,
            (t.frames)(),
            "{} was edited by hand or the builders changed",
            t.name
        );
    }
}

#[test]
fn tcp_trace_sends_only_rewritten_client_frames_and_arp() {
    let fixture = root().join("fixtures/dsr-tcp.pcap");
    let (out, log) = run_engine(TRACES[0].args, &fixture);
    let frames = read_frames(&out[..]).unwrap();
    for (_, f) in &frames {
        assert_eq!(&f[6..12], &OUR, "every frame leaves with our MAC");
        if f[12..14] == [0x08, 0x00] {
            assert!([B0_MAC, B1_MAC].contains(&f[..6].try_into().unwrap()));
            assert_eq!(&f[30..34], &VIP.octets(), "IP destination stays the VIP");
            assert_eq!(frames::checksums_ok(f), Some(true));
        }
    }
    // Client 1's frames all go to one backend, before and after the MAC refresh.
    let c1: Vec<&[u8]> = frames
        .iter()
        .filter(|(_, f)| f[12..14] == [0x08, 0x00] && f[26..30] == C1.octets())
        .map(|(_, f)| &f[..6])
        .collect();
    assert_eq!(c1.len(), 5, "{log}");
    assert!(c1.windows(2).all(|w| w[0] == w[1]), "{log}");
    assert!(log.contains("out released"), "{log}");
    assert!(log.contains("ignored wrong-port"), "{log}");
    assert_eq!(
        log.matches("out arp-probe").count(),
        4,
        "initial probes and the 60 s refresh\n{log}"
    );
}

#[test]
fn pen_sim_binary_reproduces_the_golden_trace() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pcap");
    let log = dir.path().join("out.log");
    let t = &TRACES[2];
    assert_eq!(t.name, "dsr-tarpit");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pen-sim"))
        .arg("--config")
        .arg(t.args)
        .arg("--log")
        .arg(&log)
        .arg(root().join("fixtures/dsr-tarpit.pcap"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(root().join("expected/dsr-tarpit.pcap")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        std::fs::read_to_string(root().join("expected/dsr-tarpit.log")).unwrap()
    );
}

#[test]
fn run_sim_library_call_reproduces_the_golden_trace() {
    let dir = tempfile::tempdir().unwrap();
    let (out, log) = (dir.path().join("o.pcap"), dir.path().join("o.log"));
    let t = &TRACES[1];
    let s = run_sim(
        &split_args(t.args).unwrap(),
        &root().join("fixtures/dsr-udp-dns.pcap"),
        &out,
        &log,
    )
    .unwrap();
    assert_eq!(s.counters.forwarded, 6);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(root().join("expected/dsr-udp-dns.pcap")).unwrap()
    );
    let e = run_sim(&["80".to_string()], &root().join("nope.pcap"), &out, &log).unwrap_err();
    assert!(e.contains("0.0.0.0:80"), "{e}");
}

#[test]
fn pen_sim_names_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pen-sim"))
        .args(["--config", "-O \"dsr_if eth1\" 80 10.0.0.3"])
        .arg(root().join("fixtures/dsr-tcp.pcap"))
        .arg(dir.path().join("o.pcap"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("0.0.0.0:80") && err.contains("VIP"), "{err}");
}
