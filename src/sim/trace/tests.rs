//! The trace model on hand-built frames.

use super::*;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use std::borrow::Cow;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A TCP or UDP header + payload after an IP header for `src` → `dst`.
fn l4(proto: Proto, src: SocketAddr, dst: SocketAddr, seq: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&src.port().to_be_bytes());
    v.extend_from_slice(&dst.port().to_be_bytes());
    match proto {
        Proto::Udp => {
            v.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
            v.extend_from_slice(&[0, 0]);
        }
        Proto::Tcp => {
            v.extend_from_slice(&seq.to_be_bytes());
            v.extend_from_slice(&[0, 0, 0, 0]);
            v.push(5 << 4);
            v.push(flags);
            v.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        }
    }
    v.extend_from_slice(data);
    v
}

/// An IP packet (v4 or v6 by the addresses).
fn ip(proto: Proto, src: SocketAddr, dst: SocketAddr, seq: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let t = l4(proto, src, dst, seq, flags, data);
    let pn = match proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    };
    let mut v = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            v.extend_from_slice(&[0x45, 0]);
            v.extend_from_slice(&((20 + t.len()) as u16).to_be_bytes());
            v.extend_from_slice(&[0, 0, 0x40, 0, 64, pn, 0, 0]);
            v.extend_from_slice(&s.octets());
            v.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            v.extend_from_slice(&[0x60, 0, 0, 0]);
            v.extend_from_slice(&(t.len() as u16).to_be_bytes());
            v.extend_from_slice(&[pn, 64]);
            v.extend_from_slice(&s.octets());
            v.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    v.extend_from_slice(&t);
    v
}

fn eth(ip: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    v.extend_from_slice(if ip[0] >> 4 == 6 {
        &[0x86, 0xdd]
    } else {
        &[8, 0]
    });
    v.extend_from_slice(ip);
    v
}

fn sll2(ip: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(if ip[0] >> 4 == 6 {
        &[0x86, 0xdd]
    } else {
        &[8, 0]
    });
    v.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 0, 0, 0, 0, 0, 1, 0, 0]);
    v.extend_from_slice(ip);
    v
}

fn pcap(link: DataLink, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let hdr = PcapHeader {
        datalink: link,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), hdr).unwrap();
    for (ms, f) in frames {
        w.write_packet(&PcapPacket::new(
            Duration::from_millis(1_000_000 + ms),
            f.len() as u32,
            f,
        ))
        .unwrap();
    }
    w.into_writer()
}

fn parse(data: &[u8]) -> Result<Trace, TraceError> {
    Trace::parse("t.pcap", data, &ParseOptions::default())
}

fn tcp(src: &str, dst: &str, seq: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    eth(&ip(Proto::Tcp, sa(src), sa(dst), seq, flags, data))
}

const C: &str = "10.0.0.1:40000";
const S: &str = "10.0.0.100:80";

#[test]
fn tcp_session_in_order_with_times_and_byte_counts() {
    let f = vec![
        (0, tcp(C, S, 999, SYN, b"")),
        (1, tcp(S, C, 4999, SYN | ACK, b"")),
        (2, tcp(C, S, 1000, ACK, b"GET / ")),
        (3, tcp(C, S, 1006, ACK, b"HTTP/1.0\r\n\r\n")),
        (5, tcp(S, C, 5000, ACK, &[b'x'; 300])),
        (6, tcp(C, S, 1018, FIN | ACK, b"")),
        (7, tcp(S, C, 5300, FIN | ACK, b"")),
    ];
    let t = parse(&pcap(DataLink::ETHERNET, &f)).unwrap();
    assert_eq!(t.frames, 7);
    assert_eq!(t.tcp.len(), 1);
    let s = &t.tcp[0];
    assert_eq!((s.client, s.server), (sa(C), sa(S)));
    assert!(!s.start_missing);
    assert_eq!(s.client_data, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(s.server_bytes, 300);
    assert_eq!(s.opened, Duration::ZERO);
    assert_eq!(s.established, Some(Duration::from_millis(1)));
    assert_eq!(s.client_fin, Some(Duration::from_millis(6)));
    assert_eq!(s.closed(), Some(Duration::from_millis(7)));
    assert_eq!(
        s.client_chunks,
        vec![
            Chunk {
                at: Duration::from_millis(2),
                end: 6
            },
            Chunk {
                at: Duration::from_millis(3),
                end: 18
            }
        ]
    );
}

#[test]
fn reordered_segments_are_put_back_in_order() {
    let f = vec![
        (0, tcp(C, S, 0, SYN, b"")),
        (1, tcp(C, S, 5, ACK, b"world")),
        (2, tcp(C, S, 10, ACK, b"!")),
        (3, tcp(C, S, 1, ACK, b"hell")),
    ];
    let t = parse(&pcap(DataLink::ETHERNET, &f)).unwrap();
    let s = &t.tcp[0];
    assert_eq!(s.client_data, b"hellworld!");
    assert_eq!(s.out_of_order, 2);
    assert_eq!(s.lost_bytes, 0);
    assert_eq!(s.client_chunks.last().map(|c| c.end), Some(10));
}

#[test]
fn retransmissions_and_overlaps_keep_the_first_copy() {
    let f = vec![
        (0, tcp(C, S, 0, SYN, b"")),
        (1, tcp(C, S, 1, ACK, b"abcd")),
        (2, tcp(C, S, 1, ACK, b"abcd")), // retransmission
        (3, tcp(C, S, 3, ACK, b"XXef")), // overlap: "cd" already there
        (4, tcp(C, S, 7, ACK, b"g")),
    ];
    let t = parse(&pcap(DataLink::ETHERNET, &f)).unwrap();
    let s = &t.tcp[0];
    assert_eq!(s.client_data, b"abcdefg");
    assert_eq!(s.retransmitted_bytes, 6);
}

#[test]
fn a_hole_never_filled_is_reported_as_lost() {
    let f = vec![
        (0, tcp(C, S, 0, SYN, b"")),
        (1, tcp(C, S, 1, ACK, b"ab")),
        (2, tcp(C, S, 10, ACK, b"zzz")),
    ];
    let t = parse(&pcap(DataLink::ETHERNET, &f)).unwrap();
    assert_eq!(t.tcp[0].client_data, b"ab");
    assert_eq!(t.tcp[0].lost_bytes, 3);
}

#[test]
fn a_session_without_its_syn_is_reported_not_guessed() {
    let sel = ParseOptions {
        selection: Selection {
            servers: vec![ServerSel::parse("tcp:80").unwrap()],
        },
    };
    // First captured packet goes server → client: the selection still names the server.
    let f = vec![
        (0, tcp(S, C, 7000, ACK, b"late")),
        (1, tcp(C, S, 300, ACK, b"more")),
    ];
    let t = Trace::parse("t.pcap", &pcap(DataLink::ETHERNET, &f), &sel).unwrap();
    assert_eq!(t.tcp.len(), 1);
    let s = &t.tcp[0];
    assert!(s.start_missing);
    assert_eq!((s.client, s.server), (sa(C), sa(S)));
    assert_eq!(s.client_data, b"more");
    assert_eq!(s.server_bytes, 4);
    assert!(
        t.summary().contains("1 without their start"),
        "{}",
        t.summary()
    );
}

#[test]
fn a_new_syn_after_a_close_is_a_new_session_and_a_repeated_syn_is_not() {
    let f = vec![
        (0, tcp(C, S, 0, SYN, b"")),
        (1, tcp(C, S, 0, SYN, b"")), // SYN retransmitted
        (2, tcp(C, S, 1, ACK, b"a")),
        (3, tcp(S, C, 0, RST, b"")),
        (4, tcp(C, S, 500, SYN, b"")), // port reused
        (5, tcp(C, S, 501, ACK, b"b")),
    ];
    let t = parse(&pcap(DataLink::ETHERNET, &f)).unwrap();
    assert_eq!(t.tcp.len(), 2);
    assert_eq!(t.tcp[0].client_data, b"a");
    assert_eq!(t.tcp[0].reset, Some(Duration::from_millis(3)));
    assert_eq!(t.tcp[1].client_data, b"b");
    assert_eq!(t.tcp[1].first_frame, 5);
}

#[test]
fn udp_flows_per_client_with_replies_over_ipv6_and_sll2() {
    let c1 = sa("[2001:db8::1]:5353");
    let c2 = sa("[2001:db8::2]:5353");
    let s = sa("[2001:db8::53]:53");
    let f = vec![
        (0, sll2(&ip(Proto::Udp, c1, s, 0, 0, b"q1"))),
        (1, sll2(&ip(Proto::Udp, s, c1, 0, 0, b"answer1"))),
        (2, sll2(&ip(Proto::Udp, c2, s, 0, 0, b"q2"))),
        (3, sll2(&ip(Proto::Udp, c1, s, 0, 0, b"q3!"))),
    ];
    let t = parse(&pcap(DataLink::LINUX_SLL2, &f)).unwrap();
    assert_eq!(t.udp.len(), 2);
    assert_eq!((t.udp[0].client, t.udp[0].server), (c1, s));
    assert_eq!(t.udp[0].queries.len(), 2);
    assert_eq!(t.udp[0].queries[1].payload, b"q3!");
    assert_eq!(t.udp[0].queries[1].at, Duration::from_millis(3));
    assert_eq!(t.udp[0].replies.len(), 1);
    assert_eq!(t.udp[0].replies[0].len, 7);
    assert_eq!(t.udp[1].client, c2);
}

#[test]
fn ipv6_tcp_on_raw_ip_and_sll_v1() {
    let c = "[2001:db8::7]:40000";
    let s = "[2001:db8::100]:443";
    let raw =
        |src: &str, dst: &str, seq, fl, d: &[u8]| ip(Proto::Tcp, sa(src), sa(dst), seq, fl, d);
    let f = vec![(0, raw(c, s, 0, SYN, b"")), (1, raw(c, s, 1, ACK, b"hi"))];
    let t = parse(&pcap(DataLink::RAW, &f)).unwrap();
    assert_eq!(t.tcp[0].client, sa(c));
    assert_eq!(t.tcp[0].client_data, b"hi");
    // Linux cooked v1: 16 bytes, protocol at 14.
    let sll = |p: Vec<u8>| {
        let mut v = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x86, 0xdd];
        v.extend_from_slice(&p);
        v
    };
    let f: Vec<_> = f.into_iter().map(|(t, p)| (t, sll(p))).collect();
    let t = parse(&pcap(DataLink::LINUX_SLL, &f)).unwrap();
    assert_eq!(t.tcp[0].client_data, b"hi");
}

#[test]
fn pcapng_with_several_interfaces_and_their_time_resolutions() {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    let mut eth_if = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535);
    eth_if
        .options
        .push(InterfaceDescriptionOption::IfTsResol(9)); // nanoseconds
    w.write_pcapng_block(eth_if).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::LINUX_SLL2, 65535))
        .unwrap(); // default: microseconds
    let q = ip(
        Proto::Udp,
        sa("10.0.0.1:1000"),
        sa("10.0.0.53:53"),
        0,
        0,
        b"q",
    );
    let r = ip(
        Proto::Udp,
        sa("10.0.0.53:53"),
        sa("10.0.0.1:1000"),
        0,
        0,
        b"r",
    );
    let epb = |iface: u32, units: u64, data: Vec<u8>| EnhancedPacketBlock {
        interface_id: iface,
        // pcap-file writes the raw units as "nanoseconds".
        timestamp: Duration::from_nanos(units),
        original_len: data.len() as u32,
        data: Cow::Owned(data),
        options: vec![],
    };
    w.write_pcapng_block(epb(0, 5_000_000_000, eth(&q)))
        .unwrap(); // 5 s
    w.write_pcapng_block(epb(1, 5_250_000, sll2(&r))).unwrap(); // 5.25 s
    let data = w.into_inner();
    let t = Trace::parse("t.pcapng", &data, &ParseOptions::default()).unwrap();
    assert_eq!(t.frames, 2);
    assert_eq!(t.epoch, Duration::from_secs(5));
    assert_eq!(t.udp.len(), 1);
    assert_eq!(t.udp[0].replies[0].at, Duration::from_millis(250));
    // A packet of an interface that was never described: named.
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .unwrap();
    w.write_pcapng_block(epb(0, 1, eth(&q))).unwrap();
    let mut data = w.into_inner();
    // Interface id 3 patched into the packet block (type, length, then the interface id).
    let frame_len = eth(&q).len();
    let block_at = data.len() - (8 + 20 + frame_len.div_ceil(4) * 4 + 4);
    data[block_at + 8] = 3;
    let e = Trace::parse("t.pcapng", &data, &ParseOptions::default()).unwrap_err();
    assert_eq!(e.frame, Some(1), "{e}");
    assert!(e.to_string().contains("interface 3"), "{e}");
}

#[test]
fn errors_name_the_file_the_frame_and_why() {
    let e = parse(b"").unwrap_err();
    assert!(e.to_string().starts_with("t.pcap: empty"), "{e}");
    let e = parse(b"GIF89a this is no capture").unwrap_err();
    assert!(e.to_string().contains("not a pcap or pcapng file"), "{e}");
    assert!(e.to_string().contains("0x47494638"), "{e}");
    // Truncated inside frame 2.
    let f = vec![(0, tcp(C, S, 0, SYN, b"")), (1, tcp(C, S, 1, ACK, b"abc"))];
    let mut data = pcap(DataLink::ETHERNET, &f);
    data.truncate(data.len() - 5);
    let e = parse(&data).unwrap_err();
    assert_eq!(e.frame, Some(2));
    assert!(e.to_string().contains("t.pcap: frame 2: truncated"), "{e}");
    // Unsupported link type.
    let e = parse(&pcap(DataLink::IEEE802_11, &f)).unwrap_err();
    assert!(
        e.to_string()
            .contains("frame 1: unsupported link type IEEE802_11 (105)"),
        "{e}"
    );
}

#[test]
fn frames_of_no_flow_are_counted_and_malformed_ones_located() {
    let arp = {
        let mut v = vec![0xff; 6];
        v.extend_from_slice(&[2, 0, 0, 0, 0, 2, 8, 6]);
        v.extend_from_slice(&[0; 28]);
        v
    };
    let mut short_ip = eth(&ip(
        Proto::Udp,
        sa("10.0.0.1:1"),
        sa("10.0.0.2:2"),
        0,
        0,
        b"",
    ));
    short_ip.truncate(14 + 10);
    let f = vec![
        (0, arp),
        (1, short_ip),
        (2, tcp(C, S, 0, SYN, b"")),
        (3, tcp("10.0.0.9:1", "10.0.0.8:22", 0, SYN, b"")),
    ];
    let sel = ParseOptions {
        selection: Selection {
            servers: vec![ServerSel::parse("10.0.0.100:80").unwrap()],
        },
    };
    let t = Trace::parse("t.pcap", &pcap(DataLink::ETHERNET, &f), &sel).unwrap();
    assert_eq!(t.skipped.not_ip, 1);
    assert_eq!(t.skipped.malformed, 1);
    assert_eq!(t.skipped.first_malformed, Some(2));
    assert_eq!(t.skipped.not_selected, 1);
    assert_eq!(t.tcp.len(), 1);
}

#[test]
fn a_snaplen_cut_keeps_the_lengths_with_zeros() {
    let mut frame = tcp(C, S, 1, ACK, b"abcdef");
    frame.truncate(frame.len() - 2);
    let f = vec![(0, tcp(C, S, 0, SYN, b"")), (1, frame)];
    let t = parse(&pcap(DataLink::ETHERNET, &f)).unwrap();
    assert_eq!(t.tcp[0].client_data, b"abcd\0\0");
    assert_eq!(t.tcp[0].truncated_frames, 1);
}

#[test]
fn server_selectors_parse_and_say_what_they_accept() {
    assert_eq!(
        ServerSel::parse("udp:53").unwrap(),
        ServerSel {
            proto: Some(Proto::Udp),
            ip: None,
            port: 53
        }
    );
    let s = ServerSel::parse("[2001:db8::1]:443").unwrap();
    assert_eq!(s.to_string(), "[2001:db8::1]:443");
    let e = ServerSel::parse("web:80").unwrap_err();
    assert!(e.contains("\"web:80\"") && e.contains("udp:53"), "{e}");
}

#[test]
fn vlan_tags_are_skipped() {
    let inner = ip(
        Proto::Udp,
        sa("10.0.0.1:1000"),
        sa("10.0.0.53:53"),
        0,
        0,
        b"q",
    );
    let mut v = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0, 0, 7, 8, 0];
    v.extend_from_slice(&inner);
    let t = parse(&pcap(DataLink::ETHERNET, &[(0, v)])).unwrap();
    assert_eq!(t.udp.len(), 1);
}

#[test]
fn scale_units_follows_if_tsresol() {
    assert_eq!(scale_units(1500, 3), Duration::from_millis(1500));
    assert_eq!(scale_units(3, 0x81), Duration::from_millis(1500)); // 2^-1 s units
    assert_eq!(scale_units(7, 9), Duration::from_nanos(7));
    assert_eq!(scale_units(7000, 12), Duration::from_nanos(7));
}

#[test]
fn frames_longer_on_the_wire_than_the_snaplen_are_read() {
    // tcpdump -s 64: orig_len above the snaplen (pcap-file's checked reader refuses these).
    let hdr = PcapHeader {
        datalink: DataLink::ETHERNET,
        snaplen: 64,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), hdr).unwrap();
    let syn = tcp(C, S, 0, SYN, b"");
    let mut data = tcp(C, S, 1, ACK, &[b'a'; 500]);
    let orig = data.len() as u32;
    data.truncate(64);
    w.write_packet(&PcapPacket::new(
        Duration::from_secs(1),
        syn.len() as u32,
        &syn,
    ))
    .unwrap();
    w.write_packet(&PcapPacket::new(Duration::from_secs(2), orig, &data))
        .unwrap();
    let t = parse(&w.into_writer()).unwrap();
    assert_eq!(t.tcp[0].client_data.len(), 500);
    assert_eq!(t.tcp[0].truncated_frames, 1);
    assert_eq!(t.duration, Duration::from_secs(1));
}

/// A deterministic stand-in for the fuzz target (fuzz/fuzz_targets/trace.rs): damaged copies
/// of a real capture (cut anywhere, bytes flipped) give a trace or an error naming the file,
/// never a panic.
#[test]
fn damaged_captures_never_panic() {
    use crate::sim::synth::{Kind, Rng, generate};
    let good = generate(Kind::Mix, 6, 2.0, 11);
    let mut rng = Rng::new(5);
    for round in 0..400 {
        let mut data = good.clone();
        let cut = rng.below(data.len() as u64) as usize;
        if round % 2 == 0 {
            data.truncate(cut.max(1));
        }
        for _ in 0..1 + rng.below(8) {
            let i = rng.below(data.len() as u64) as usize;
            data[i] ^= 1 << rng.below(8);
        }
        match Trace::parse("damaged.pcap", &data, &ParseOptions::default()) {
            Ok(t) => assert!(t.frames > 0 || data.len() <= 24),
            Err(e) => assert!(e.to_string().starts_with("damaged.pcap"), "{e}"),
        }
    }
}

/// Flows selected by a BPF filter (libpcap, compiled per link type by `sim::filter`): only
/// the frames it keeps make flows; the rest are counted, and times keep the capture's epoch.
#[test]
fn a_bpf_filter_selects_the_flows() {
    let c1 = sa("10.0.0.1:5353");
    let c2 = sa("10.0.0.2:5353");
    let s = sa("10.0.0.53:53");
    for (link, wrap) in [
        (DataLink::ETHERNET, eth as fn(&[u8]) -> Vec<u8>),
        (DataLink::LINUX_SLL2, sll2 as fn(&[u8]) -> Vec<u8>),
    ] {
        let f = vec![
            (0, wrap(&ip(Proto::Udp, c1, s, 0, 0, b"q1"))),
            (1, wrap(&ip(Proto::Udp, c2, s, 0, 0, b"q2"))),
            (2, wrap(&ip(Proto::Udp, s, c2, 0, 0, b"a2"))),
            (
                3,
                wrap(&ip(Proto::Tcp, c2, sa("10.0.0.80:80"), 1, SYN, b"")),
            ),
        ];
        let data = pcap(link, &f);
        let mut filter = crate::sim::filter::FrameFilter::new("udp and host 10.0.0.2").unwrap();
        let t = Trace::parse_filtered("t.pcap", &data, &ParseOptions::default(), &mut |l, b| {
            filter.matches(l, b)
        })
        .unwrap();
        assert_eq!(filter.error(), None);
        assert_eq!(t.udp.len(), 1, "{link:?}");
        assert_eq!(t.udp[0].client, c2);
        assert_eq!(t.udp[0].queries[0].at, Duration::from_millis(1));
        assert_eq!(t.udp[0].replies.len(), 1);
        assert!(t.tcp.is_empty());
        assert_eq!(t.skipped.filtered_out, 2);
        assert!(t.summary().contains("filtered out 2"), "{}", t.summary());
    }
}

/// The first `n` frames of a generated capture as (time in µs, Ethernet frame).
fn mix_frames(n: usize) -> Vec<(u64, Vec<u8>)> {
    use crate::sim::synth::{Kind, generate};
    let bytes = generate(Kind::Mix, 8, 2.0, 21);
    let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
    let mut out = Vec::new();
    while let Some(Ok(p)) = r.next_raw_packet() {
        out.push((
            u64::from(p.ts_sec) * 1_000_000 + u64::from(p.ts_frac),
            p.data.to_vec(),
        ));
        if out.len() == n {
            break;
        }
    }
    out
}

/// Damaged copies of one capture: cut anywhere, bits flipped, bytes set to 0x00/0xff (length
/// fields included), a slice repeated. Deterministic by `seed`.
fn damage(good: &[u8], rng: &mut crate::sim::synth::Rng, round: u32) -> Vec<u8> {
    let mut data = good.to_vec();
    match round % 4 {
        0 => data.truncate(rng.below(data.len() as u64).max(1) as usize),
        1 => {
            let at = rng.below(data.len() as u64) as usize;
            let len = (1 + rng.below(64) as usize).min(data.len() - at);
            let copy = data[at..at + len].to_vec();
            let to = rng.below(data.len() as u64) as usize;
            data.splice(to..to, copy);
        }
        _ => {}
    }
    for _ in 0..1 + rng.below(6) {
        let i = rng.below(data.len() as u64) as usize;
        match rng.below(3) {
            0 => data[i] ^= 1 << rng.below(8),
            1 => data[i] = 0xff,
            _ => data[i] = 0,
        }
    }
    data
}

/// The deterministic stand-in for the fuzz target, over the other formats: thousands of
/// damaged pcapng files (two interfaces, Ethernet in nanoseconds and SLL2) and SLL2 pcaps,
/// read with and without a frame filter, give a trace or an error naming the file.
#[test]
fn damaged_pcapng_and_sll2_captures_never_panic() {
    use crate::sim::synth::Rng;
    let frames = mix_frames(120);
    let as_sll2 = |f: &[u8]| sll2(&f[14..]);
    let sll2_pcap = pcap(
        DataLink::LINUX_SLL2,
        &frames
            .iter()
            .map(|(t, f)| (*t / 1000, as_sll2(f)))
            .collect::<Vec<_>>(),
    );
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    let mut eth_if = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535);
    eth_if
        .options
        .push(InterfaceDescriptionOption::IfTsResol(9));
    w.write_pcapng_block(eth_if).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::LINUX_SLL2, 96))
        .unwrap();
    for (i, (t, f)) in frames.iter().enumerate() {
        let (iface, units, data) = if i % 2 == 0 {
            (0, t * 1000, f.clone())
        } else {
            (1, *t, as_sll2(f))
        };
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: iface,
            timestamp: Duration::from_nanos(units),
            original_len: data.len() as u32,
            data: Cow::Owned(data),
            options: vec![],
        })
        .unwrap();
    }
    let pcapng = w.into_inner();
    for (name, good) in [("sll2.pcap", &sll2_pcap), ("two.pcapng", &pcapng)] {
        let t = Trace::parse(name, good, &ParseOptions::default()).unwrap();
        assert_eq!(t.frames, 120, "{name}");
        assert!(!t.udp.is_empty() || !t.tcp.is_empty(), "{name}");
        let mut rng = Rng::new(0x5eed);
        for round in 0..1500 {
            let data = damage(good, &mut rng, round);
            let res = if round % 3 == 0 {
                Trace::parse_filtered(name, &data, &ParseOptions::default(), &mut |_, f| {
                    f.len() % 2 == 0
                })
            } else {
                Trace::parse(name, &data, &ParseOptions::default())
            };
            match res {
                Ok(t) => {
                    let datagrams: usize = t
                        .udp
                        .iter()
                        .map(|f| f.queries.len() + f.replies.len())
                        .sum();
                    assert!(datagrams as u64 <= t.frames, "{name} round {round}");
                    assert!(t.tcp.len() as u64 <= t.frames, "{name} round {round}");
                }
                Err(e) => assert!(e.to_string().starts_with(name), "{e}"),
            }
        }
    }
}
