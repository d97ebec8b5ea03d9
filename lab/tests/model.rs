//! pen-lab's pure parts, no root needed: scenario validation, references, frame decoding and
//! every expectation kind over the pcap fixtures in captures/fixtures/.
//!
//! The fixtures are produced by `generate_*` below. `PENLAB_REGEN_FIXTURES=1 cargo test -p
//! pen-lab --test model` rewrites them; otherwise `fixtures_match_their_generator` checks that
//! the committed files are exactly what the generator makes.

mod common;
use common::{errors, root};

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use etherparse::{PacketBuilder, TcpOptionElement};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use pen_lab::decode::{self, FrameInfo, read_pcap};
use pen_lab::expect::{Outcome, evaluate};
use pen_lab::scenario::{self, StepAction, parse_str};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const PEN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const WEB1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
const WEB2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x04];
const CLIENT: [u8; 4] = [10, 71, 0, 10];
const CLIENT2: [u8; 4] = [10, 71, 0, 11];
const PEN: [u8; 4] = [10, 71, 0, 2];
const WEB1: [u8; 4] = [10, 71, 0, 3];
const WEB2: [u8; 4] = [10, 71, 0, 4];

fn fixture(name: &str) -> PathBuf {
    root().join("captures/fixtures").join(name)
}

// ---------------------------------------------------------------------------------------------
// Fixture generator
// ---------------------------------------------------------------------------------------------

fn arp(op: u16, smac: [u8; 6], sip: [u8; 4], tmac: [u8; 6], tip: [u8; 4], dst: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&smac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&smac);
    f.extend_from_slice(&sip);
    f.extend_from_slice(&tmac);
    f.extend_from_slice(&tip);
    f.resize(60, 0); // Ethernet minimum, as on the wire
    f
}

#[derive(Clone, Copy, Default)]
struct Flags {
    syn: bool,
    ack: bool,
    rst: bool,
    psh: bool,
}

#[allow(clippy::too_many_arguments)]
fn tcp4(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    fl: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240);
    if fl.syn {
        b = b.syn();
    }
    if fl.ack {
        b = b.ack(5000);
    }
    if fl.rst {
        b = b.rst();
    }
    if fl.psh {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp4(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn syn() -> Flags {
    Flags {
        syn: true,
        ..Flags::default()
    }
}

/// captures/fixtures/lab-mixed.pcap: a small proxy trace plus ARP, UDP and IPv6.
fn generate_mixed() -> Vec<Vec<u8>> {
    let v6 = {
        let src: [u8; 16] = "fd00::10".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let dst: [u8; 16] = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let b = PacketBuilder::ethernet2(CLIENT_MAC, PEN_MAC)
            .ipv6(src, dst, 64)
            .tcp(40100, 80, 7, 65535)
            .syn()
            .options(&[TcpOptionElement::MaximumSegmentSize(1440)])
            .unwrap();
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    };
    vec![
        // 0, 1: ARP for pen
        arp(1, CLIENT_MAC, CLIENT, [0; 6], PEN, [0xff; 6]),
        arp(2, PEN_MAC, PEN, CLIENT_MAC, CLIENT, CLIENT_MAC),
        // 2: client → pen, 3: pen → web1, 4: web1 SYN+ACK
        tcp4(CLIENT_MAC, PEN_MAC, CLIENT, PEN, 40000, 80, syn(), &[]),
        tcp4(PEN_MAC, WEB1_MAC, PEN, WEB1, 50000, 80, syn(), &[]),
        tcp4(
            WEB1_MAC,
            PEN_MAC,
            WEB1,
            PEN,
            80,
            50000,
            Flags {
                syn: true,
                ack: true,
                ..Flags::default()
            },
            &[],
        ),
        // 5: second client → pen, 6: pen → web2
        tcp4(CLIENT_MAC, PEN_MAC, CLIENT2, PEN, 40001, 80, syn(), &[]),
        tcp4(PEN_MAC, WEB2_MAC, PEN, WEB2, 50001, 80, syn(), &[]),
        // 7: first client again, 8: pen → web1 again, 9: web1 refuses
        tcp4(CLIENT_MAC, PEN_MAC, CLIENT, PEN, 40002, 80, syn(), &[]),
        tcp4(PEN_MAC, WEB1_MAC, PEN, WEB1, 50002, 80, syn(), &[]),
        tcp4(
            WEB1_MAC,
            PEN_MAC,
            WEB1,
            PEN,
            80,
            50002,
            Flags {
                rst: true,
                ack: true,
                ..Flags::default()
            },
            &[],
        ),
        // 10: data pen → web1
        tcp4(
            PEN_MAC,
            WEB1_MAC,
            PEN,
            WEB1,
            50000,
            80,
            Flags {
                ack: true,
                psh: true,
                ..Flags::default()
            },
            b"GET / HTTP/1.1\r\n\r\n",
        ),
        // 11, 12: DNS through pen
        udp4(CLIENT_MAC, PEN_MAC, CLIENT, PEN, 5353, 53, &[0x12; 30]),
        udp4(PEN_MAC, CLIENT_MAC, PEN, CLIENT, 53, 5353, &[0x34; 46]),
        // 13: IPv6 SYN with an MSS option
        v6,
    ]
}

/// captures/fixtures/bad-checksums.pcap: valid and broken IPv4/TCP/UDP checksums.
fn generate_bad_checksums() -> Vec<Vec<u8>> {
    let good = tcp4(CLIENT_MAC, PEN_MAC, CLIENT, PEN, 40000, 80, syn(), &[]);
    let mut bad_l4 = good.clone();
    bad_l4[14 + 20 + 16] ^= 0xff; // TCP checksum
    let mut bad_ip = good.clone();
    bad_ip[14 + 10] ^= 0xff; // IPv4 header checksum
    let mut udp_zero = udp4(CLIENT_MAC, PEN_MAC, CLIENT, PEN, 5353, 53, b"abc");
    udp_zero[14 + 20 + 6] = 0;
    udp_zero[14 + 20 + 7] = 0; // "no checksum" is valid for UDP over IPv4
    let mut udp_bad = udp4(CLIENT_MAC, PEN_MAC, CLIENT, PEN, 5353, 53, b"abc");
    udp_bad[14 + 20 + 6] ^= 0x55;
    vec![good, bad_l4, bad_ip, udp_zero, udp_bad]
}

fn pcap_bytes(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::new(1_700_000_000, (i as u32) * 1000);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .unwrap();
    }
    w.into_writer()
}

#[test]
fn fixtures_match_their_generator() {
    for (name, frames) in [
        ("lab-mixed.pcap", generate_mixed()),
        ("bad-checksums.pcap", generate_bad_checksums()),
    ] {
        let bytes = pcap_bytes(&frames);
        let path = fixture(name);
        if std::env::var_os("PENLAB_REGEN_FIXTURES").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with PENLAB_REGEN_FIXTURES=1",
                path.display()
            )
        });
        assert_eq!(
            on_disk, bytes,
            "{name} differs from its generator; regenerate with PENLAB_REGEN_FIXTURES=1"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

fn mixed() -> Vec<FrameInfo> {
    read_pcap(&fixture("lab-mixed.pcap")).unwrap()
}

#[test]
fn decode_arp_request_and_reply() {
    let f = mixed();
    let req = f[0].arp.as_ref().unwrap();
    assert_eq!(req.op, 1);
    assert_eq!(req.sender_mac, CLIENT_MAC);
    assert_eq!(req.sender_ip, Ipv4Addr::from(CLIENT));
    assert_eq!(req.target_ip, Ipv4Addr::from(PEN));
    assert_eq!(f[0].eth_dst, Some([0xff; 6]));
    assert_eq!(f[0].ethertype, Some(decode::ETHERTYPE_ARP));
    let rep = f[1].arp.as_ref().unwrap();
    assert_eq!(
        (rep.op, rep.sender_mac, rep.target_mac),
        (2, PEN_MAC, CLIENT_MAC)
    );
    assert!(
        f[1].to_string()
            .contains("ARP Reply 10.71.0.2 is-at 02:00:00:00:00:02")
    );
}

#[test]
fn decode_tcp_fields_and_flags() {
    let f = mixed();
    let s = &f[4];
    assert_eq!(s.ip_src, Some(IpAddr::from(WEB1)));
    assert_eq!((s.src_port, s.dst_port), (Some(80), Some(50000)));
    assert_eq!(s.ttl, Some(64));
    assert_eq!(s.proto, Some(decode::PROTO_TCP));
    let t = s.tcp.as_ref().unwrap();
    assert!(t.syn && t.ack && !t.rst && !t.fin);
    assert_eq!(
        (t.seq, t.ack_num, t.window, t.options_len),
        (1000, 5000, 64240, 0)
    );
    assert_eq!(s.ip_checksum_ok, Some(true));
    assert_eq!(s.l4_checksum_ok, Some(true));
    assert_eq!(f[10].payload_len, 18);
    assert!(f[10].tcp.as_ref().unwrap().psh);
    assert!(f[9].tcp.as_ref().unwrap().rst);
    assert!(
        f[4].to_string()
            .contains("IP 10.71.0.3.80 > 10.71.0.2.50000: Flags [S.]")
    );
}

#[test]
fn decode_udp_and_ipv6() {
    let f = mixed();
    assert_eq!(f[11].proto, Some(decode::PROTO_UDP));
    assert_eq!(
        (f[11].src_port, f[11].dst_port, f[11].payload_len),
        (Some(5353), Some(53), 30)
    );
    assert_eq!(f[11].l4_checksum_ok, Some(true));
    let v6 = &f[13];
    assert_eq!(v6.ethertype, Some(decode::ETHERTYPE_IPV6));
    assert_eq!(v6.ip_src, Some("fd00::10".parse().unwrap()));
    assert_eq!(v6.ip_checksum_ok, None);
    assert_eq!(v6.l4_checksum_ok, Some(true));
    assert_eq!(v6.tcp.as_ref().unwrap().options_len, 4);
    assert!(
        v6.to_string()
            .contains("IP6 [fd00::10].40100 > [fd00::2].80")
    );
}

#[test]
fn decode_reports_bad_checksums() {
    let f = read_pcap(&fixture("bad-checksums.pcap")).unwrap();
    let v: Vec<(Option<bool>, Option<bool>)> = f
        .iter()
        .map(|x| (x.ip_checksum_ok, x.l4_checksum_ok))
        .collect();
    assert_eq!(
        v,
        vec![
            (Some(true), Some(true)),
            (Some(true), Some(false)),
            (Some(false), Some(true)),
            (Some(true), Some(true)),
            (Some(true), Some(false)),
        ]
    );
    assert!(f[1].to_string().ends_with("[bad cksum]"));
}

#[test]
fn decode_never_panics_on_truncated_frames() {
    let frame = &generate_mixed()[4];
    for n in 0..frame.len() {
        let f = decode::decode(0, Duration::ZERO, &frame[..n]);
        let _ = f.to_string();
    }
}

// ---------------------------------------------------------------------------------------------
// Expectations over the fixtures
// ---------------------------------------------------------------------------------------------

const HOSTS: &str = r#"
name = "fixture"
[[switch]]
name = "lan"
[[host]]
name = "client"
addresses = ["10.71.0.10/24", "10.71.0.11/24"]
[[host]]
name = "pen"
addresses = ["10.71.0.2/24"]
[[host]]
name = "web1"
addresses = ["10.71.0.3/24"]
[[host]]
name = "web2"
addresses = ["10.71.0.4/24"]
[[link]]
ends = ["client", "lan"]
[[link]]
ends = ["pen", "lan"]
[[link]]
ends = ["web1", "lan"]
[[link]]
ends = ["web2", "lan"]
[[capture]]
name = "cap"
host = "pen"
iface = "eth0"
"#;

fn fixture_macs() -> BTreeMap<(String, String), [u8; 6]> {
    [
        ("client", CLIENT_MAC),
        ("pen", PEN_MAC),
        ("web1", WEB1_MAC),
        ("web2", WEB2_MAC),
    ]
    .into_iter()
    .map(|(h, m)| ((h.to_string(), "eth0".to_string()), m))
    .collect()
}

/// Compiles one `[[expect]]` body against the fixture hosts (with their real MACs) and runs it.
fn check(expect_body: &str, frames: &[FrameInfo]) -> Outcome {
    let text = format!("{HOSTS}\n[[expect]]\ncapture = \"cap\"\n{expect_body}\n");
    let sc = parse_str(&text, "fixture.toml").unwrap();
    let plan = sc
        .plan("fixture.toml", "fixture", Some(fixture_macs()))
        .unwrap_or_else(|e| panic!("{e}"));
    evaluate(&plan.expects[0].kind, frames)
}

#[test]
fn count_exact_min_max() {
    let f = mixed();
    let syn80 = r#"match = { dst_port = 80, syn = true, ack = false }"#;
    assert!(check(&format!("count = {{ {syn80}, exact = 7 }}"), &f).pass);
    let o = check(&format!("count = {{ {syn80}, max = 5 }}"), &f);
    assert!(!o.pass);
    assert_eq!(o.offending, vec![2, 3, 5, 6, 7, 8, 13]);
    assert!(o.detail.contains("expected at most 5"), "{}", o.detail);
    assert!(!check(&format!("count = {{ {syn80}, min = 8 }}"), &f).pass);
    assert!(
        check(
            r#"count = { match = { arp_op = "request", arp_target_ip = "{ip.pen}" }, exact = 1 }"#,
            &f
        )
        .pass
    );
    assert!(
        check(
            r#"count = { match = { ethertype = "ipv6" }, exact = 1 }"#,
            &f
        )
        .pass
    );
}

#[test]
fn every_also_names_offending_frames() {
    let f = mixed();
    let ok = check(
        r#"every = { match = { ip_dst = ["{ip.web1}", "{ip.web2}"], syn = true, ack = false }, also = { ip_src = "{ip.pen}", eth_src = "{mac.pen}" } }"#,
        &f,
    );
    assert!(ok.pass, "{}", ok.detail);
    let bad = check(
        r#"every = { match = { dst_port = 80, syn = true, ack = false }, also = { from = "pen" } }"#,
        &f,
    );
    assert!(!bad.pass);
    assert_eq!(bad.offending, vec![2, 5, 7, 13]);
    // "every" over nothing is a failure, not a vacuous pass.
    assert!(
        !check(
            r#"every = { match = { dst_port = 9999 }, also = { from = "pen" } }"#,
            &f
        )
        .pass
    );
}

#[test]
fn tcp_window_and_options_matchers_see_only_tcp_frames() {
    let f = mixed();
    let tcp = f.iter().filter(|x| x.tcp.is_some()).count();
    let with_options = f
        .iter()
        .filter(|x| x.tcp.as_ref().is_some_and(|t| t.options_len > 0))
        .count();
    assert!(tcp > 2 && with_options == 1);
    // each window value in the capture is counted once per TCP frame carrying it
    let mut windows = BTreeMap::new();
    for t in f.iter().filter_map(|x| x.tcp.as_ref()) {
        *windows.entry(t.window).or_insert(0usize) += 1;
    }
    assert!(windows.len() >= 2, "{windows:?}");
    for (w, n) in &windows {
        let o = check(
            &format!("count = {{ match = {{ tcp_window = {w} }}, exact = {n} }}"),
            &f,
        );
        assert!(o.pass, "{}", o.detail);
    }
    let all: Vec<String> = windows.keys().map(|w| w.to_string()).collect();
    let o = check(
        &format!(
            "count = {{ match = {{ tcp_window = [{}] }}, exact = {tcp} }}",
            all.join(", ")
        ),
        &f,
    );
    assert!(o.pass, "{}", o.detail);
    assert!(check(r#"none = { match = { tcp_window = [0, 16] } }"#, &f).pass);
    let o = check(
        &format!(
            "count = {{ match = {{ tcp_options_len = 0 }}, exact = {} }}",
            tcp - with_options
        ),
        &f,
    );
    assert!(o.pass, "{}", o.detail);
    let o = check(
        r#"every = { match = { tcp_options_len = 4 }, also = { ethertype = "ipv6", syn = true } }"#,
        &f,
    );
    assert!(o.pass, "{}", o.detail);
    let e = errors(&format!(
        "{HOSTS}\n[[expect]]\ncapture = \"cap\"\nnone = {{ match = {{ tcp_window = 70000 }} }}\n"
    ));
    assert!(e.contains("tcp_window") && e.contains("0..=65535"), "{e}");
    let e = errors(&format!(
        "{HOSTS}\n[[expect]]\ncapture = \"cap\"\nnone = {{ match = {{ tcp_options_len = 44 }} }}\n"
    ));
    assert!(e.contains("tcp_options_len") && e.contains("0..=40"), "{e}");
}

#[test]
fn payload_prefix_matches_the_start_of_the_payload() {
    let ack = Flags {
        ack: true,
        psh: true,
        ..Flags::default()
    };
    let v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c";
    // pen → web1 on port 80, from source port `sport`.
    let to_web1 = |sport, flags, payload: &[u8]| {
        tcp4(
            PEN_MAC,
            WEB1_MAC,
            [10, 0, 0, 2],
            [10, 0, 0, 3],
            sport,
            80,
            flags,
            payload,
        )
    };
    let frames = [
        to_web1(
            40000,
            ack,
            b"PROXY TCP4 10.0.0.10 10.0.0.2 5555 80\r\nGET / HTTP/1.0\r\n",
        ),
        to_web1(40001, ack, v2),
        to_web1(40002, ack, b"GET / HTTP/1.0\r\n"),
        to_web1(40003, syn(), b""),
    ];
    let f: Vec<FrameInfo> = frames
        .iter()
        .enumerate()
        .map(|(i, b)| decode::decode(i, Duration::ZERO, b))
        .collect();
    let one = |m: &str| check(&format!("count = {{ match = {{ {m} }}, exact = 1 }}"), &f);
    let o = one(r#"payload_prefix = "PROXY TCP4 10.0.0.10 ""#);
    assert!(o.pass, "{}", o.detail);
    let o = one(r#"payload_prefix = "\r\n\r\n\u0000\r\nQUIT\n""#);
    assert!(o.pass, "{}", o.detail);
    let o = check(
        r#"count = { match = { payload_prefix = ["PROXY ", "GET "] }, exact = 2 }"#,
        &f,
    );
    assert!(o.pass, "{}", o.detail);
    assert!(
        check(
            r#"none = { match = { payload_prefix = "PROXY TCP6" } }"#,
            &f
        )
        .pass
    );
    let e = errors(&format!(
        "{HOSTS}\n[[expect]]\ncapture = \"cap\"\nnone = {{ match = {{ payload_prefix = \"\" }} }}\n"
    ));
    assert!(
        e.contains("payload_prefix") && e.contains("1-48 bytes"),
        "{e}"
    );
}

#[test]
fn none_fails_on_any_match() {
    let f = mixed();
    assert!(check(r#"none = { match = { from = "web2", rst = true } }"#, &f).pass);
    let o = check(r#"none = { match = { rst = true } }"#, &f);
    assert!(!o.pass);
    assert_eq!(o.offending, vec![9]);
}

#[test]
fn sticky_key_keeps_one_value() {
    let mut f = mixed();
    let rule = r#"sticky = { match = { from = "pen", syn = true }, key = "ip_dst", value = "eth_dst", min_keys = 2 }"#;
    assert!(check(rule, &f).pass);
    // web1's address suddenly behind web2's MAC: not sticky any more.
    f[8].eth_dst = Some(WEB2_MAC);
    let o = check(rule, &f);
    assert!(!o.pass);
    assert_eq!(o.offending, vec![8]);
    assert!(o.detail.contains("ip_dst 10.71.0.3"), "{}", o.detail);
    assert!(!check(r#"sticky = { match = { from = "pen", syn = true }, key = "ip_dst", value = "eth_dst", min_keys = 3 }"#, &mixed()).pass);
}

#[test]
fn share_with_tolerance() {
    let f = mixed();
    let m = r#"match = { from = "pen", syn = true }, field = "ip_dst""#;
    assert!(check(&format!(r#"share = {{ {m}, shares = {{ "{{ip.web1}}" = 0.667, "{{ip.web2}}" = 0.333 }}, tolerance = 0.01 }}"#), &f).pass);
    let o = check(
        &format!(
            r#"share = {{ {m}, shares = {{ "10.71.0.3" = 0.5, "10.71.0.4" = 0.5 }}, tolerance = 0.1 }}"#
        ),
        &f,
    );
    assert!(!o.pass);
    assert!(o.detail.contains("10.71.0.3 got 0.67"), "{}", o.detail);
    // A value that is not listed fails the expectation and is reported.
    let o = check(
        &format!(r#"share = {{ {m}, shares = {{ "10.71.0.3" = 1.0 }}, tolerance = 0.5 }}"#),
        &f,
    );
    assert!(!o.pass);
    assert_eq!(o.offending, vec![6]);
}

#[test]
fn order_of_first_matches() {
    let f = mixed();
    let client_syn = r#"{ from = "client", to = "pen", syn = true }"#;
    let backend_syn = r#"{ from = "pen", to = "web1", syn = true }"#;
    assert!(
        check(
            &format!("order = {{ first = {client_syn}, then = {backend_syn} }}"),
            &f
        )
        .pass
    );
    let o = check(
        &format!("order = {{ first = {backend_syn}, then = {client_syn} }}"),
        &f,
    );
    assert!(!o.pass);
    assert_eq!(o.offending, vec![2, 3]);
    assert!(
        !check(
            &format!("order = {{ first = {client_syn}, then = {{ port = 9 }} }}"),
            &f
        )
        .pass
    );
}

#[test]
fn checksums_valid_finds_broken_frames() {
    assert!(check(r#"checksums_valid = { min = 14 }"#, &mixed()).pass);
    let f = read_pcap(&fixture("bad-checksums.pcap")).unwrap();
    let o = check(r#"checksums_valid = { }"#, &f);
    assert!(!o.pass);
    assert_eq!(o.offending, vec![1, 2, 4]);
    assert!(
        check(
            r#"count = { match = { checksums_ok = false }, exact = 3 }"#,
            &f
        )
        .pass
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario files and validation
// ---------------------------------------------------------------------------------------------

#[test]
fn every_scenario_file_validates() {
    let dir = root().join("scenarios");
    let files = scenario::list_scenarios(&dir).unwrap();
    assert!(files.len() >= 2, "expected scenarios in {}", dir.display());
    for f in files {
        if let Err(e) = scenario::load(&f) {
            panic!("{e}");
        }
    }
}

#[test]
fn validation_errors_name_file_key_and_expectation() {
    let e = errors(&format!("{HOSTS}\n[[host]]\nname = \"Web_3\"\n"));
    assert!(e.contains("scenarios/x.toml: host[4].name: expected 1-32 lowercase letters, digits or '-', got \"Web_3\""), "{e}");

    let e = errors(&format!("{HOSTS}\n[[host]]\nname = \"pen\"\n"));
    assert!(
        e.contains("host[4].name: expected a unique host/switch name, got \"pen\" twice"),
        "{e}"
    );

    let e = errors(&format!("{HOSTS}\n[[step]]\nstop = \"nginx\"\n"));
    assert!(e.contains("step[0].stop: expected a process name"), "{e}");

    let e = errors(&format!("{HOSTS}\n[[step]]\nwait = 5\nstop = \"x\"\n"));
    assert!(e.contains("step[0]: expected exactly one of"), "{e}");

    let e = errors(&format!(
        "{HOSTS}\n[[expect]]\ncapture = \"nope\"\nnone = {{ match = {{ port = 70000 }} }}\n"
    ));
    assert!(
        e.contains("expect[0].capture: expected a capture name (cap), got \"nope\""),
        "{e}"
    );
    assert!(
        e.contains("expect[0].none.match.port: expected a number 0..=65535"),
        "{e}"
    );

    let e = errors(&format!(
        "{HOSTS}\n[[expect]]\ncapture = \"cap\"\nevery = {{ match = {{ from = \"ghost\" }}, also = {{}} }}\n"
    ));
    assert!(e.contains("expect[0].every.match.from: expected a host name (client, pen, web1, web2), got \"ghost\""), "{e}");

    let e = errors("[[host]]\nname = \"a\"\nadresses = []\n");
    assert!(
        e.starts_with("scenarios/x.toml: line 3: unknown field `adresses`"),
        "{e}"
    );

    let e = errors(
        "[[switch]]\nname = \"s\"\n[[host]]\nname = \"a\"\naddresses = [\"10.0.0.1/24\"]\n[[link]]\nends = [\"a\", \"s\"]\n[[link]]\nends = [\"a\", \"s\"]\n",
    );
    assert!(
        e.contains("link[0].ends[0]: host \"a\" has several links: name the interface"),
        "{e}"
    );
    assert!(e.contains("host[0].addresses[0]"), "{e}");

    let e = errors(
        "[[host]]\nname = \"a\"\n[[process]]\nhost = \"a\"\nname = \"p\"\npen = [\"-f\", \"1.2.3.4:80\", \"{ip.b}\"]\n",
    );
    assert!(
        e.contains("process[0].ready: expected a readiness condition"),
        "{e}"
    );
    assert!(
        e.contains("process[0].pen[2]: {ip.b}: host \"b\" has no address in this file"),
        "{e}"
    );
}

#[test]
fn references_resolve_to_addresses_vars_and_macs() {
    let text = format!(
        "{HOSTS}\n[vars]\nvip = \"10.71.0.100\"\n[[process]]\nhost = \"pen\"\nname = \"pen\"\npen = [\"-f\", \"{{vip}}:80\", \"{{ip.web1}}\", \"{{ip.client.eth0}}\"]\nready = {{ none = true }}\n[[step]]\nrun = {{ host = \"client\", argv = [\"echo\", \"{{mac.web2}}\", \"{{mac.web2.eth0}}\"] }}\n"
    );
    let sc = parse_str(&text, "x.toml").unwrap();
    let placeholder = sc.plan("x.toml", "x", None).unwrap();
    let real = sc.plan("x.toml", "x", Some(fixture_macs())).unwrap();
    match &real.processes[0].kind {
        scenario::PlannedProcessKind::Pen(argv) => {
            assert_eq!(argv, &["-f", "10.71.0.100:80", "10.71.0.3", "10.71.0.10"])
        }
        k => panic!("{k:?}"),
    }
    let argv = |p: &scenario::Plan| match &p.steps[0].kind {
        StepAction::Run { argv, .. } => argv.clone(),
        k => panic!("{k:?}"),
    };
    assert_eq!(
        argv(&real),
        ["echo", "02:00:00:00:00:04", "02:00:00:00:00:04"]
    );
    assert_eq!(
        argv(&placeholder),
        ["echo", "02:00:00:00:00:00", "02:00:00:00:00:00"]
    );

    let refs = scenario::Refs::default();
    // nft blocks are not references.
    assert_eq!(
        refs.resolve("table ip t { chain c { type filter hook prerouting priority 0; } }")
            .unwrap(),
        "table ip t { chain c { type filter hook prerouting priority 0; } }"
    );
    assert!(
        refs.resolve("{nope}")
            .unwrap_err()
            .to_string()
            .contains("unknown reference")
    );
    let e = errors(&format!(
        "{HOSTS}\n[[step]]\nrun = {{ host = \"client\", argv = [\"{{mac.web1.eth7}}\"] }}\n"
    ));
    assert!(
        e.contains("step[0].run.argv[0]: {mac.web1.eth7}: host \"web1\" has no interface \"eth7\""),
        "{e}"
    );
}

#[test]
fn references_resolve_in_expected_outputs() {
    let text = format!(
        "{HOSTS}\n[vars]\nanswer = \"10.99.0.2\"\n[[step]]\nrun = {{ host = \"client\", argv = [\"dig\"], expect_contains = \"{{answer}}\" }}\n[[step]]\npenctl = {{ host = \"pen\", target = \"127.0.0.1:10081\", command = \"servers\", expect_contains = \"addr {{ip.web1}}\" }}\n[[step]]\nhttp_get = {{ host = \"client\", url = \"http://{{ip.pen}}/\", expect_body = \"{{ip.web1}}\" }}\n"
    );
    let sc = parse_str(&text, "x.toml").unwrap();
    let plan = sc.plan("x.toml", "x", None).unwrap();
    match &plan.steps[0].kind {
        StepAction::Run {
            expect_contains, ..
        } => {
            assert_eq!(expect_contains.as_deref(), Some("10.99.0.2"))
        }
        k => panic!("{k:?}"),
    }
    match &plan.steps[1].kind {
        StepAction::Penctl {
            expect_contains, ..
        } => {
            assert_eq!(expect_contains.as_deref(), Some("addr 10.71.0.3"))
        }
        k => panic!("{k:?}"),
    }
    match &plan.steps[2].kind {
        StepAction::HttpGet { expect_body, .. } => {
            assert_eq!(expect_body.as_deref(), Some("10.71.0.3"))
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn topology_plan_for_dsr_style_hosts() {
    // The DSR scenarios (one segment, VIP on lo, arp sysctls, explicit MACs, IPv6 on one host)
    // must fit the format as it is.
    let text = r#"
[[switch]]
name = "seg"
[[host]]
name = "real1"
addresses = ["10.73.0.3/24", "lo:10.73.0.100/32"]
sysctl = { "net.ipv4.conf.all.arp_ignore" = 1, "net.ipv4.conf.all.arp_announce" = 2 }
routes = [{ to = "0.0.0.0/0", dev = "lo", table = 100, type = "local" }]
rules = [{ fwmark = 1, table = 100 }]
nft = "table ip t { chain c { type filter hook prerouting priority mangle; } }"
[[host]]
name = "lb"
addresses = ["eth0:fd00::2/64"]
offload = [{ iface = "eth0", feature = "gro", on = true }]
[[link]]
ends = [{ node = "real1", iface = "eth0", mac = "02:00:00:00:01:03" }, "seg"]
[[link]]
ends = ["lb:eth0", "seg:p-lb"]
offloads = true
"#;
    let plan = parse_str(text, "dsr.toml")
        .unwrap()
        .plan("dsr.toml", "dsr", None)
        .unwrap();
    let t = &plan.topology;
    assert!(
        t.addresses
            .iter()
            .any(|a| a.iface == "lo" && a.addr.to_string() == "10.73.0.100" && a.prefix_len == 32)
    );
    assert_eq!(t.links[0].a.mac, Some([2, 0, 0, 0, 1, 3]));
    assert_eq!(t.links[0].b.iface, "real1");
    assert_eq!(t.links[1].b.iface, "p-lb");
    assert!(t.links[1].offloads && !t.links[0].offloads);
    assert!(
        t.sysctls
            .iter()
            .any(|s| s.key == "net.ipv4.conf.all.arp_ignore" && s.value == "1")
    );
    assert!(
        t.early_sysctls
            .iter()
            .any(|s| s.node == "lb" && s.key == "net.ipv6.conf.all.disable_ipv6" && s.value == "0")
    );
    assert!(!t.early_sysctls.iter().any(|s| s.node == "real1"));
    assert!(t.routes[0].local && t.routes[0].table == Some(100));
    assert_eq!(t.rules[0].fwmark, 1);
    assert_eq!(t.nft.len(), 1);
    assert!(!plan.is_offline());
}

#[test]
fn scenario_without_hosts_is_offline() {
    let text = format!(
        "name = \"sim-x\"\n[sim]\ninput = {:?}\npen = [\"-O\", \"dsr_if eth1\", \"10.0.0.100:80\", \"10.0.0.3\"]\n",
        fixture("lab-mixed.pcap").display().to_string()
    );
    let plan = parse_str(&text, "sim.toml")
        .unwrap()
        .plan("sim.toml", "sim-x", None)
        .unwrap();
    assert!(plan.is_offline());
    let sim = plan.sim.unwrap();
    assert_eq!(sim.input, fixture("lab-mixed.pcap"));
    assert_eq!(
        sim.output, "output",
        "the default capture name of the engine's frames"
    );
}

// ---------------------------------------------------------------------------------------------
// The binary, without root
// ---------------------------------------------------------------------------------------------

fn pen_lab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pen-lab"))
        .args(args)
        .current_dir(root())
        .env_remove("PENLAB_SCENARIOS")
        .output()
        .unwrap()
}

#[test]
fn check_all_passes_and_check_invalid_exits_2_with_keys() {
    let o = pen_lab(&["check", "all"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = pen_lab(&["check", "lab/tests/fixtures/invalid.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("lab/tests/fixtures/invalid.toml: host[0].name: expected"),
        "{err}"
    );
    assert!(
        err.contains("step[0].stop: expected a process name (pen), got \"nginx\""),
        "{err}"
    );
    let o = pen_lab(&["check", "no-such-scenario"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("known: "));
}

#[test]
fn show_prints_one_line_per_frame_and_filters() {
    let o = pen_lab(&["show", "captures/fixtures/lab-mixed.pcap"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 14, "{out}");
    assert!(
        out.lines()
            .nth(2)
            .unwrap()
            .contains("IP 10.71.0.10.40000 > 10.71.0.2.80: Flags [S]"),
        "{out}"
    );
    let o = pen_lab(&[
        "show",
        "captures/fixtures/lab-mixed.pcap",
        "--filter",
        "udp",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    let o = pen_lab(&[
        "show",
        "captures/fixtures/lab-mixed.pcap",
        "--filter",
        "tcp port",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a valid BPF expression"));
}

// ---------------------------------------------------------------------------------------------
// Check-time validation of pen's argv and capture filters; windows, any-of answers, retries
// ---------------------------------------------------------------------------------------------

fn plan_of(text: &str) -> scenario::Plan {
    parse_str(text, "scenarios/x.toml")
        .and_then(|s| s.plan("scenarios/x.toml", "x", None))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn check_runs_pens_own_parser_on_pen_argv() {
    let e = errors(&format!(
        "{HOSTS}\n[[process]]\nhost = \"pen\"\nname = \"pen\"\npen = [\"-f\", \"-x\", \"lots\", \"10.71.0.2:80\", \"10.71.0.3\"]\nready = {{ tcp = \"10.71.0.2:80\" }}\n"
    ));
    assert!(
        e.contains("scenarios/x.toml: process[0].pen: pen rejects [\"-f\", \"-x\", \"lots\""),
        "{e}"
    );
    assert!(e.contains("-x"), "{e}");
    let e = errors(&format!(
        "{HOSTS}\n[[process]]\nhost = \"pen\"\nname = \"pen\"\npen = [\"-f\", \"--verbose\", \"10.71.0.2:80\"]\nready = {{ tcp = \"10.71.0.2:80\" }}\n"
    ));
    assert!(e.contains("process[0].pen: pen rejects"), "{e}");
    assert!(e.contains("unknown option \"--verbose\""), "{e}");
    let e = errors(&format!(
        "{HOSTS}\n[[process]]\nhost = \"pen\"\nname = \"pen\"\npen = [\"-f\", \"10.71.0.2:99999\", \"10.71.0.3\"]\nready = {{ tcp = \"10.71.0.2:80\" }}\n"
    ));
    assert!(e.contains("process[0].pen: pen rejects"), "{e}");
    assert!(e.contains("bad listen address \"10.71.0.2:99999\""), "{e}");
    // A good command line passes.
    plan_of(&format!(
        "{HOSTS}\n[[process]]\nhost = \"pen\"\nname = \"pen\"\npen = [\"-f\", \"-r\", \"-C\", \"127.0.0.1:10080\", \"10.71.0.2:80\", \"10.71.0.3\", \"10.71.0.4:80:10\"]\nready = {{ tcp = \"10.71.0.2:80\" }}\n"
    ));
}

#[test]
fn check_compiles_capture_filters_with_libpcap() {
    let text = HOSTS.replace(
        "iface = \"eth0\"",
        "iface = \"eth0\"\nfilter = \"tcp prot 80\"",
    );
    let e = errors(&text);
    assert!(
        e.contains(
            "scenarios/x.toml: capture[0].filter: libpcap rejects the BPF filter \"tcp prot 80\""
        ),
        "{e}"
    );
    assert!(e.contains("expected tcpdump syntax"), "{e}");
    let ok = HOSTS.replace(
        "iface = \"eth0\"",
        "iface = \"eth0\"\nfilter = \"arp or (udp port 53 and host 10.71.0.2)\"",
    );
    plan_of(&ok);
}

const NAMED_STEPS: &str = r#"
[[process]]
host = "web2"
name = "web2"
backend = { kind = "http", listen = ["10.71.0.4:80"] }
[[step]]
name = "first"
wait = 1
[[step]]
name = "stop web2"
stop = "web2"
[[step]]
wait = 1
[[step]]
name = "last"
wait = 1
"#;

#[test]
fn windows_name_steps_and_are_checked() {
    let base = format!("{HOSTS}{NAMED_STEPS}");
    let plan = plan_of(&format!(
        "{base}\n[[expect]]\ncapture = \"cap\"\nafter = \"stop web2\"\nbefore = \"last\"\nnone = {{ match = {{ to = \"web2\" }} }}\n"
    ));
    let w = &plan.expects[0].window;
    assert_eq!(w.after.as_ref().map(|s| s.index), Some(1));
    assert_eq!(w.before.as_ref().map(|s| s.index), Some(3));
    assert_eq!(w.to_string(), "after \"stop web2\" and before \"last\"");

    let e = errors(&format!(
        "{base}\n[[expect]]\ncapture = \"cap\"\nafter = \"stop web3\"\nnone = {{}}\n"
    ));
    assert!(
        e.contains("expect[0].after: expected the name of a step (\"first\", \"stop web2\", \"last\"), got \"stop web3\""),
        "{e}"
    );
    let e = errors(&format!(
        "{base}\n[[expect]]\ncapture = \"cap\"\nafter = \"last\"\nbefore = \"first\"\nnone = {{}}\n"
    ));
    assert!(
        e.contains(
            "expect[0].before: expected a step after \"last\" (step 4), got \"first\" (step 1)"
        ),
        "{e}"
    );
    let e = errors(&format!(
        "{base}\n[[step]]\nname = \"first\"\nwait = 1\n[[expect]]\ncapture = \"cap\"\nbefore = \"first\"\nnone = {{}}\n"
    ));
    assert!(
        e.contains("expect[0].before: step name \"first\" is ambiguous: steps 1, 5"),
        "{e}"
    );
}

fn frame_at(index: usize, secs: u64) -> FrameInfo {
    let mut f = mixed()[0].clone();
    f.index = index;
    f.ts = Duration::from_secs(secs);
    f
}

#[test]
fn window_selects_frames_between_the_end_of_one_step_and_the_start_of_another() {
    use pen_lab::expect::{StepRef, StepTime, Window};
    let frames: Vec<FrameInfo> = (0..10).map(|i| frame_at(i, 100 + i as u64)).collect();
    let t = |a: u64, b: u64| {
        Some(StepTime {
            start: Duration::from_secs(a),
            end: Duration::from_secs(b),
        })
    };
    // Step 0 ran 100..103, step 1 ran 103..106, step 2 never ran.
    let times = vec![t(100, 103), t(103, 106), None];
    let r = |index: usize| StepRef {
        index,
        name: format!("s{index}"),
    };
    let w = Window {
        after: Some(r(0)),
        before: Some(r(1)),
    };
    let (from, to) = w.bounds(&times).unwrap();
    let sel = Window::select(&frames, from, to);
    // [end of s0, start of s1) = [103, 103): s1 started as s0 ended, nothing in between.
    assert!(sel.is_empty(), "{sel:?}");
    let w = Window {
        after: Some(r(0)),
        before: None,
    };
    let (from, to) = w.bounds(&times).unwrap();
    let sel = Window::select(&frames, from, to);
    assert_eq!(
        sel.iter().map(|f| f.index).collect::<Vec<_>>(),
        vec![3, 4, 5, 6, 7, 8, 9]
    );
    let w = Window {
        after: None,
        before: Some(r(1)),
    };
    let (from, to) = w.bounds(&times).unwrap();
    assert_eq!(Window::select(&frames, from, to).len(), 3);
    // A window on a step that did not run cannot be evaluated.
    let w = Window {
        after: Some(r(2)),
        before: None,
    };
    assert_eq!(
        w.bounds(&times).unwrap_err(),
        "the window needs step 3 \"s2\", which did not run"
    );
    // A `none` over the window passes where the whole capture fails, and offending frames keep
    // their capture index.
    let m = pen_lab::expect::Kind::None {
        m: pen_lab::expect::Matcher::all(),
    };
    let (from, to) = Window {
        after: Some(r(1)),
        before: None,
    }
    .bounds(&times)
    .unwrap();
    let o = evaluate(&m, &Window::select(&frames, from, to));
    assert!(!o.pass);
    assert_eq!(o.offending, vec![6, 7, 8, 9]);
    assert!(
        evaluate(
            &m,
            &Window::select(&frames, Some(Duration::from_secs(200)), None)
        )
        .pass
    );
}

#[test]
fn dns_steps_take_expect_any_and_retries() {
    let plan = plan_of(&format!(
        "{HOSTS}\n[[step]]\ndns = {{ host = \"client\", server = \"10.71.0.2\", expect_any = [[\"10.99.0.1\"], [\"10.99.0.2\", \"10.99.0.3\"]], retries = 3, retry_delay_ms = 50 }}\n"
    ));
    let st = &plan.steps[0];
    assert_eq!(st.retries, 3);
    assert_eq!(st.retry_delay, Duration::from_millis(50));
    let StepAction::Dns { expect, .. } = &st.kind else {
        panic!("{st:?}")
    };
    assert_eq!(expect.len(), 2);

    let e = errors(&format!(
        "{HOSTS}\n[[step]]\ndns = {{ host = \"client\", server = \"10.71.0.2\", expect = [\"10.99.0.1\"], expect_any = [[\"10.99.0.2\"]] }}\n"
    ));
    assert!(
        e.contains("step[0].dns.expect_any: expected either expect (one answer) or expect_any"),
        "{e}"
    );
    let e = errors(&format!(
        "{HOSTS}\n[[step]]\ndns = {{ host = \"client\", server = \"10.71.0.2\", expect_any = [[], [\"x\"]] }}\n"
    ));
    assert!(
        e.contains("step[0].dns.expect_any[0]: expected a non-empty list"),
        "{e}"
    );
    assert!(
        e.contains("step[0].dns.expect_any[1][0]: expected an IPv4 address, got \"x\""),
        "{e}"
    );
    let e = errors(&format!(
        "{HOSTS}\n[[step]]\ntcp_connect = {{ host = \"client\", addr = \"10.71.0.2:80\", expect = \"open\", retries = 500 }}\n"
    ));
    assert!(
        e.contains("step[0].tcp_connect.retries: expected 0..=20, got 500"),
        "{e}"
    );
    let e = errors(&format!("{HOSTS}\n[[step]]\nwait = 10\nretries = 2\n"));
    assert!(e.contains("unknown field `retries`"), "{e}");
}

#[test]
fn dns_answers_match_one_of_the_acceptable_sets() {
    use pen_lab::runner::check_dns_answer;
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let sets = vec![vec![ip("10.0.0.1")], vec![ip("10.0.0.3"), ip("10.0.0.2")]];
    assert!(check_dns_answer(&[ip("10.0.0.1")], &sets).is_ok());
    assert!(check_dns_answer(&[ip("10.0.0.2"), ip("10.0.0.3")], &sets).is_ok());
    assert_eq!(
        check_dns_answer(&[ip("10.0.0.2")], &sets).unwrap_err(),
        "answer [10.0.0.2], expected one of [10.0.0.1], [10.0.0.2, 10.0.0.3]"
    );
    assert_eq!(
        check_dns_answer(&[], &sets[..1]).unwrap_err(),
        "answer [], expected [10.0.0.1]"
    );
}

#[test]
fn retries_stop_at_the_first_success_the_limit_or_a_refused_pause() {
    use pen_lab::runner::with_retries;
    let mut calls = 0;
    let (r, n) = with_retries(
        5,
        |k| {
            calls += 1;
            if k < 3 {
                anyhow::bail!("attempt {k} failed")
            } else {
                Ok(k)
            }
        },
        || true,
    );
    assert_eq!((r.unwrap(), n, calls), (3, 3, 3));
    let (r, n) = with_retries(
        2,
        |k| -> anyhow::Result<u32> { anyhow::bail!("no {k}") },
        || true,
    );
    assert_eq!((r.unwrap_err().to_string(), n), ("no 3".to_string(), 3));
    let (r, n) = with_retries(
        0,
        |k| -> anyhow::Result<u32> { anyhow::bail!("no {k}") },
        || true,
    );
    assert_eq!((r.is_err(), n), (true, 1));
    // A signal or the scenario deadline (the pause says no) ends the retries.
    let (r, n) = with_retries(
        9,
        |k| -> anyhow::Result<u32> { anyhow::bail!("no {k}") },
        || false,
    );
    assert_eq!((r.is_err(), n), (true, 1));
}

#[test]
fn check_json_lists_every_scenario_and_every_error_with_its_key() {
    let o = pen_lab(&[
        "check",
        "--json",
        "scenarios/proxy-udp.toml",
        "lab/tests/fixtures/invalid.toml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check --json is not JSON ({e}):\n{stdout}"));
    assert_eq!(doc["valid"], 1);
    assert_eq!(doc["invalid"], 1);
    let s = doc["scenarios"].as_array().unwrap();
    assert_eq!(s[0]["scenario"], "proxy-udp");
    assert_eq!(s[0]["ok"], true);
    assert_eq!(s[0]["steps"], 15);
    assert_eq!(s[1]["ok"], false);
    let errors = s[1]["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["key"] == "step[0].stop" && e["message"].as_str().unwrap().contains("nginx")),
        "{stdout}"
    );
    assert!(
        errors
            .iter()
            .all(|e| e["file"] == "lab/tests/fixtures/invalid.toml")
    );
}

#[test]
fn link_impairments_plan_one_egress_per_sending_end() {
    let with = |imp: &str| {
        HOSTS.replace(
            "[[link]]\nends = [\"client\", \"lan\"]\n",
            &format!("[[link]]\nends = [\"client\", \"lan\"]\nimpair = {imp}\n"),
        )
    };
    let plan = plan_of(&with("{ loss_percent = 20, rate_kbit = 800 }"));
    let im = &plan.topology.impairments;
    assert_eq!(im.len(), 2, "{im:?}");
    assert_eq!(
        (im[0].node.as_str(), im[0].iface.as_str()),
        ("client", "eth0")
    );
    assert_eq!(
        (im[1].node.as_str(), im[1].iface.as_str()),
        ("lan", "client")
    );
    assert_eq!(im[0].loss_percent, 20);
    assert_eq!(im[0].rate_bps, Some(800_000));
    assert_eq!(im[0].burst_bytes, 10_000, "1/10 s of the rate");
    let plan = plan_of(&with("{ loss_percent = 100, from = \"lan\" }"));
    let im = &plan.topology.impairments;
    assert_eq!(im.len(), 1);
    assert_eq!(im[0].node, "lan");
    assert_eq!(im[0].rate_bps, None);

    let e = errors(&with("{ loss_percent = 101, from = \"pen\" }"));
    assert!(
        e.contains("link[0].impair.loss_percent: expected 0..=100"),
        "{e}"
    );
    assert!(
        e.contains("link[0].impair.from: expected one of the link's ends (\"client\" or \"lan\"), got \"pen\""),
        "{e}"
    );
    let e = errors(&with("{ burst_kbytes = 4 }"));
    assert!(
        e.contains("link[0].impair.burst_kbytes: a burst needs a rate"),
        "{e}"
    );
    assert!(
        e.contains("link[0].impair: expected loss_percent (1..=100) and/or rate_kbit"),
        "{e}"
    );
    let e = errors(&with("{ rate_kbit = 0 }"));
    assert!(
        e.contains("link[0].impair.rate_kbit: expected 1..=10000000 kbit/s, got 0"),
        "{e}"
    );
    let e = errors(&with("{ delay_ms = 5 }"));
    assert!(e.contains("unknown field `delay_ms`"), "{e}");
}

#[test]
fn penlab_prefix_is_checked_before_anything_is_cleaned() {
    use pen_lab::runner::valid_prefix_root;
    assert!(valid_prefix_root("penlab"));
    assert!(valid_prefix_root("ci42"));
    for bad in ["", "Pen", "4ci", "pen-lab", "a234567890123456x", "pen lab"] {
        assert!(!valid_prefix_root(bad), "{bad:?} accepted");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_pen-lab"))
        .arg("clean")
        .env("PENLAB_PREFIX", "Pen-Lab")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("PENLAB_PREFIX=\"Pen-Lab\": expected 1-16 lowercase letters or digits"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Scale-out scenarios: background steps and joins, tcp_sessions, paced loads, switch captures
// ---------------------------------------------------------------------------------------------

const BACKGROUND: &str = r#"
[[step]]
name = "sessions"
tcp_sessions = { host = "client", addr = "10.71.0.2:7", background = true }
[[step]]
name = "paced"
load = { host = "client", url = "http://10.71.0.2/", requests = 40, interval_ms = 50, max_outage_ms = 2000, min_ok = 30, background = true }
[[step]]
name = "link down"
run = { host = "pen", argv = ["ip", "link", "set", "eth0", "down"] }
[[step]]
join = "paced"
[[step]]
join = "sessions"
"#;

#[test]
fn background_steps_are_joined_later_and_tcp_sessions_have_defaults() {
    let plan = plan_of(&format!("{HOSTS}{BACKGROUND}"));
    let bg: Vec<bool> = plan.steps.iter().map(|s| s.background).collect();
    assert_eq!(bg, vec![true, true, false, false, false]);
    match &plan.steps[0].kind {
        StepAction::TcpSessions {
            sessions,
            rounds,
            interval,
            min_ok,
            min_failed,
            ..
        } => {
            assert_eq!((*sessions, *rounds, *min_ok, *min_failed), (8, 10, 8, 0));
            assert_eq!(*interval, Duration::from_millis(100));
        }
        k => panic!("{k:?}"),
    }
    match &plan.steps[1].kind {
        StepAction::Load {
            interval,
            max_outage,
            min_ok,
            ..
        } => {
            assert_eq!(*interval, Some(Duration::from_millis(50)));
            assert_eq!(*max_outage, Some(Duration::from_millis(2000)));
            assert_eq!(*min_ok, 30);
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(plan.steps[3].kind, StepAction::Join("paced".into()));
    assert_eq!(plan.steps[3].label, "join paced");
    assert_eq!(plan.steps[1].label, "paced");
    let default_label = scenario::step_label(&plan.steps[1].kind);
    assert!(
        default_label.contains("40 requests, one every 50 ms"),
        "{default_label}"
    );
}

#[test]
fn background_and_join_mistakes_are_named() {
    // Never joined.
    let text = format!("{HOSTS}{BACKGROUND}").replace("[[step]]\njoin = \"sessions\"\n", "");
    let e = errors(&text);
    assert!(
        e.contains("step[0].background: background step \"sessions\" is never joined"),
        "{e}"
    );
    // A join of something that is not an earlier background step (or joined twice).
    let e = errors(&format!("{HOSTS}{BACKGROUND}[[step]]\njoin = \"paced\"\n"));
    assert!(
        e.contains("step[5].join: expected the name of an earlier background step not joined yet (sessions, paced), got \"paced\""),
        "{e}"
    );
    let e = errors(&format!("{HOSTS}[[step]]\njoin = \"link down\"\n"));
    assert!(e.contains("(none), got \"link down\""), "{e}");
    // Two background steps of one name running at once.
    let e =
        errors(&format!("{HOSTS}{BACKGROUND}").replace("name = \"paced\"", "name = \"sessions\""));
    assert!(
        e.contains("step[1].name: background step \"sessions\" is still running from step[0]"),
        "{e}"
    );
    // A background step without a name.
    let e = errors(&format!(
        "{HOSTS}[[step]]\ntcp_sessions = {{ host = \"client\", addr = \"10.71.0.2:7\", background = true }}\n"
    ));
    assert!(
        e.contains("step[0].name: a background step needs a name"),
        "{e}"
    );
}

#[test]
fn tcp_sessions_and_paced_load_bounds_are_checked() {
    let e = errors(&format!(
        "{HOSTS}[[step]]\ntcp_sessions = {{ host = \"client\", addr = \"10.71.0.2\", sessions = 0 }}\n"
    ));
    assert!(
        e.contains("step[0].tcp_sessions.addr: expected \"IP:PORT\", got \"10.71.0.2\""),
        "{e}"
    );
    let e = errors(&format!(
        "{HOSTS}[[step]]\ntcp_sessions = {{ host = \"client\", addr = \"10.71.0.2:7\", sessions = 0, rounds = 20000 }}\n"
    ));
    assert!(
        e.contains("step[0].tcp_sessions.sessions: expected 1..256, got 0"),
        "{e}"
    );
    assert!(
        e.contains("step[0].tcp_sessions.rounds: expected 1..10000, got 20000"),
        "{e}"
    );
    let e = errors(&format!(
        "{HOSTS}[[step]]\ntcp_sessions = {{ host = \"client\", addr = \"10.71.0.2:7\", sessions = 4, min_ok = 3, min_failed = 2 }}\n"
    ));
    assert!(
        e.contains("min_ok 3 + min_failed 2 is more than the 4 sessions"),
        "{e}"
    );
    let e = errors(&format!(
        "{HOSTS}[[step]]\nload = {{ host = \"client\", url = \"http://10.71.0.2/\", requests = 5, max_outage_ms = 100 }}\n"
    ));
    assert!(
        e.contains("step[0].load.max_outage_ms: the outage is measured by a paced load"),
        "{e}"
    );
    let e = errors(&format!(
        "{HOSTS}[[step]]\nload = {{ host = \"client\", url = \"http://10.71.0.2/\", requests = 5, interval_ms = 0 }}\n"
    ));
    assert!(
        e.contains("step[0].load.interval_ms: expected 1..10000 ms, got 0"),
        "{e}"
    );
}

#[test]
fn a_switch_is_captured_on_its_bridge() {
    let plan = plan_of(&format!(
        "{HOSTS}[[capture]]\nname = \"segment\"\nhost = \"lan\"\niface = \"br0\"\nfilter = \"tcp\"\n"
    ));
    let c = plan.captures.iter().find(|c| c.name == "segment").unwrap();
    assert_eq!((c.host.as_str(), c.iface.as_str()), ("lan", "br0"));
    let e = errors(&format!(
        "{HOSTS}[[capture]]\nname = \"segment\"\nhost = \"lan\"\niface = \"pen\"\n"
    ));
    assert!(
        e.contains(
            "capture[1].iface: \"lan\" is a switch: expected its bridge \"br0\", got \"pen\""
        ),
        "{e}"
    );
}

#[test]
fn the_scale_out_scenarios_check() {
    let out = pen_lab(&[
        "check",
        "scale-ecmp-dsr",
        "scale-ecmp-proxy",
        "vrrp-failover",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 valid, 0 invalid"), "{text}");
}

/// Fault steps (`link_down`/`link_up`, `blackhole`/`lift_blackhole`, `signal`) validate their
/// targets against the topology and the processes, and say what is accepted.
#[test]
fn fault_steps_are_validated_with_what_is_accepted() {
    let base = r#"
[[switch]]
name = "lan"
[[host]]
name = "web"
addresses = ["10.1.0.3/24"]
[[host]]
name = "router"
addresses = ["eth0:10.1.0.1/24", "eth1:10.2.0.1/24"]
[[link]]
ends = ["web", "lan"]
[[link]]
ends = ["router:eth0", "lan"]
[[link]]
ends = ["router:eth1", "lan:r1"]
[[process]]
host = "web"
name = "web"
backend = { kind = "http", listen = ["10.1.0.3:80"] }
"#;
    let good = format!(
        "{base}{}",
        r#"
[[step]]
link_down = "web"
[[step]]
link_up = "router:eth1"
[[step]]
link_down = "lan:web"
[[step]]
blackhole = { host = "web", port = 80, proto = "tcp" }
[[step]]
lift_blackhole = { host = "web", port = 80, proto = "tcp" }
[[step]]
signal = { process = "web", signal = "SIGSTOP" }
[[step]]
signal = { process = "web", signal = "kill" }
[[step]]
exited = { process = "web", within_ms = 15000 }
"#
    );
    let plan = parse_str(&good, "scenarios/x.toml")
        .unwrap()
        .plan("scenarios/x.toml", "x", None)
        .unwrap();
    let labels: Vec<&str> = plan.steps.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "link web:eth0 down",
            "link router:eth1 up",
            "link lan:web down",
            "blackhole tcp port 80 on web",
            "lift the blackhole of tcp port 80 on web",
            "SIGSTOP web",
            "SIGKILL web",
            "web exits within 15000 ms",
        ]
    );
    let bad = format!(
        "{base}{}",
        r#"
[[step]]
link_down = "router"
[[step]]
link_up = "web:eth7"
[[step]]
link_down = "nowhere"
[[step]]
blackhole = { host = "web", port = 0 }
[[step]]
blackhole = { host = "web", proto = "sctp" }
[[step]]
lift_blackhole = { host = "web", port = 53 }
[[step]]
signal = { process = "nginx", signal = "PAUSE" }
[[step]]
exited = { process = "old", within_ms = 0 }
"#
    );
    let errs = errors(&bad);
    for want in [
        "step[0].link_down: router has 2 link interfaces (eth0, eth1): say which, as \"router:IFACE\"",
        "step[1].link_up: web has no link interface \"eth7\" (it has eth0)",
        "step[2].link_down: expected \"NODE\" or \"NODE:IFACE\", a link end of a host or switch",
        "step[3].blackhole.port: expected a port 1..65535, got 0",
        "step[4].blackhole.proto: expected \"tcp\" or \"udp\", got \"sctp\"",
        "step[5].lift_blackhole: no earlier blackhole step drops port 53 on web (blackholes in place: none)",
        "step[6].signal.process: expected a process name (web), got \"nginx\"",
        "step[6].signal.signal: expected KILL, STOP, CONT, TERM, HUP, INT, USR1 or USR2, got \"PAUSE\"",
        "step[7].exited.process: expected a process name (web), got \"old\"",
        "step[7].exited.within_ms: expected 1..60000",
    ] {
        assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
    }
}

/// `inject` steps: one source, a bounded count, rewrite values and generators checked.
#[test]
fn inject_steps_are_validated_with_what_is_accepted() {
    let base = r#"
[[switch]]
name = "lan"
[[host]]
name = "client"
addresses = ["10.1.0.10/24"]
[[link]]
ends = ["client", "lan"]
"#;
    let good = format!(
        "{base}{}",
        r#"
[[step]]
inject = { host = "client", pcap = "captures/traces/mix.pcap", filter = "tcp[tcpflags] == tcp-syn", count = 10, rate_pps = 100, eth_dst = "02:00:00:00:00:02", ip_dst = "10.1.0.200" }
[[step]]
inject = { host = "client", generate = "syn", src = "198.18.0.0/16", dst = "10.1.0.200", dport = 80, count = 5, pace = "fast" }
"#
    );
    let plan = parse_str(
        &good,
        &root().join("scenarios/x.toml").display().to_string(),
    )
    .unwrap()
    .plan(
        &root().join("scenarios/x.toml").display().to_string(),
        "x",
        None,
    )
    .unwrap();
    assert!(
        plan.steps[0]
            .label
            .starts_with("inject 10 frames of captures/traces/mix.pcap [tcp[tcpflags] == tcp-syn] out of client:eth0"),
        "{}",
        plan.steps[0].label
    );
    assert_eq!(
        plan.steps[1].label,
        "inject 5 frames of SYNs from 198.18.0.0/16 to 10.1.0.200:80 out of client:eth0"
    );
    let bad = format!(
        "{base}{}",
        r#"
[[step]]
inject = { host = "client", count = 0 }
[[step]]
inject = { host = "client", generate = "syn", count = 5, dst = "10.1.0.200" }
[[step]]
inject = { host = "client", generate = "flood", count = 5 }
[[step]]
inject = { host = "client", iface = "eth9", generate = "malformed", dst = "10.1.0.200", count = 5, eth_dst = "nope", pace = "slow" }
[[step]]
inject = { host = "client", pcap = "captures/traces/mix.pcap", filter = "tcp prot 80", count = 5 }
"#
    );
    let errs = errors(&bad);
    for want in [
        "step[0].inject.count: expected 1..=100000 frames, got 0",
        "step[0].inject: expected exactly one of pcap (frames of a capture) and generate",
        "step[1].inject.src: generate = \"syn\" needs src",
        "step[1].inject.dport: generate = \"syn\" needs dport",
        "step[2].inject.generate: expected \"syn\", \"arp\", \"ndp\" or \"malformed\", got \"flood\"",
        "step[3].inject.iface: client has no link interface \"eth9\" (it has eth0)",
        "step[3].inject.eth_dst: expected a MAC like \"02:00:00:00:00:01\"",
        "step[3].inject.pace: expected \"recorded\" or \"fast\" (or rate_pps = N), got \"slow\"",
        "step[4].inject.filter: filter \"tcp prot 80\": not a valid BPF expression",
    ] {
        assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
    }
}

/// `pen-lab show` reads captures whose frames are cut by the snaplen (`tcpdump -s 256`, as
/// captures/traces/http.pcap is): every frame decoded, none refused.
#[test]
fn show_reads_snaplen_limited_captures() {
    let o = Command::new(env!("CARGO_BIN_EXE_pen-lab"))
        .args(["show", "captures/traces/http.pcap"])
        .current_dir(root())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = pen::sim::trace::Trace::open(
        &root().join("captures/traces/http.pcap"),
        &pen::sim::trace::ParseOptions::default(),
    )
    .unwrap();
    assert_eq!(out.lines().count() as u64, t.frames);
    // A 1460-byte segment cut to 256 bytes still shows its TCP header.
    assert!(out.contains("192.0.2.80.80 > "), "{out:.2000}");
}
