//! The tarpit's persist mode, address capture and reply rate cap (issue #22), frame by frame.
//! Expected frames are built with etherparse, not with the engine's own writers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use etherparse::PacketBuilder;
use pen::acl::{Acl, AclEntry, AclMatch};
use pen::engine::capture::CaptureConfig;
use pen::engine::frames::{self, ACK, FIN, PSH, RST, SYN};
use pen::engine::ratecap::RateConfig;
use pen::engine::{
    BackendConfig, DropReason, Engine, EngineConfig, IgnoreReason, Mac, Verdict, ndp, tarpit,
};

const OUR: Mac = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
const HOST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x50];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const B0: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const TARPIT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const FREE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
const KEY: [u8; 16] = *b"fixture-isn-key!";
const CISN: u32 = 1000;

fn t(ms: u64) -> Duration {
    Duration::from_secs(100) + Duration::from_millis(ms)
}

fn config(persist: bool) -> EngineConfig {
    let mut c = EngineConfig::new(OUR, VIP, 80);
    c.isn_key = KEY;
    c.backends = vec![BackendConfig {
        ip: Some(B0.into()),
        weight: 0,
        available: true,
    }];
    c.tarpit = Some(Acl {
        entries: vec![AclEntry {
            permit: true,
            matcher: AclMatch::V4 {
                addr: TARPIT,
                mask: Ipv4Addr::BROADCAST,
            },
        }],
    });
    c.tarpit_persist = persist;
    c
}

fn seg(dst: Ipv4Addr, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    frames::tcp(
        CLIENT_MAC,
        OUR,
        SocketAddrV4::new(CLIENT, 40000),
        SocketAddrV4::new(dst, 80),
        flags,
        seq,
        ack,
        &[],
        payload,
    )
}

/// The persist-mode ISN the tarpit must use for CLIENT:40000 → dst:80 with client ISN CISN.
fn our_isn(dst: Ipv4Addr) -> u32 {
    tarpit::isn(&KEY, CLIENT, dst, 40000, 80) ^ CISN
}

fn expected(dst: Ipv4Addr, syn: bool, seq: u32, ack: u32) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(OUR, CLIENT_MAC)
        .ipv4(dst.octets(), CLIENT.octets(), 64)
        .tcp(80, 40000, seq, 0);
    let b = if syn { b.syn().ack(ack) } else { b.ack(ack) };
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn run(e: &mut Engine, now: Duration, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = frame.to_vec();
    let v = e.process(now, &mut buf);
    buf.truncate(v.transmit_len().unwrap_or(buf.len()));
    (v, buf)
}

/// Compares a frame built by etherparse with the engine's, ignoring the IPv4 identification
/// and flags (etherparse writes DF; the engine does too) by comparing everything.
fn same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got, want, "{what}");
    assert_eq!(frames::checksums_ok(got), Some(true), "{what}: checksums");
}

#[test]
fn persist_syn_ack_advertises_a_zero_window_and_hides_the_client_isn_in_its_isn() {
    let mut e = Engine::new(config(true));
    let (v, out) = run(&mut e, t(0), &seg(TARPIT, SYN, CISN, 0, b""));
    assert_eq!(v, Verdict::TarpitSynAck { len: 54 });
    same(
        "SYN+ACK",
        &out,
        &expected(TARPIT, true, our_isn(TARPIT), CISN + 1),
    );
}

#[test]
fn every_later_segment_of_a_held_connection_gets_an_ack_that_acknowledges_nothing_new() {
    let mut e = Engine::new(config(true));
    let ours = our_isn(TARPIT);
    let want = expected(TARPIT, false, ours + 1, CISN + 1);
    let cases: [(&str, u8, u32, &[u8]); 4] = [
        ("the handshake's ACK", ACK, CISN + 1, b""),
        ("Linux's zero-window probe (seq one below)", ACK, CISN, b""),
        ("a one-byte probe (BSD, Windows)", ACK, CISN + 1, b"G"),
        ("data", ACK | PSH, CISN + 1, b"GET / HTTP/1.0\r\n\r\n"),
    ];
    for (what, flags, seq, data) in cases {
        let (v, out) = run(&mut e, t(1), &seg(TARPIT, flags, seq, ours + 1, data));
        assert_eq!(v, Verdict::TarpitAck { len: 54 }, "{what}");
        same(what, &out, &want);
    }
    let c = e.counters();
    assert_eq!((c.tarpit_acks, c.tarpit_held, c.tarpit_probes), (4, 1, 3));
    let st = e.tarpit_status(8);
    assert_eq!((st.held, st.probes, st.acks), (1, 3, 4));
}

#[test]
fn rst_fin_stray_acks_and_non_persist_acks_are_never_answered() {
    let mut e = Engine::new(config(true));
    let ours = our_isn(TARPIT);
    for (what, flags, seq, ack, reason) in [
        ("RST", RST, CISN + 1, 0, IgnoreReason::TarpitNotSyn),
        (
            "RST+ACK",
            RST | ACK,
            CISN + 1,
            ours + 1,
            IgnoreReason::TarpitNotSyn,
        ),
        (
            "FIN+ACK",
            FIN | ACK,
            CISN + 1,
            ours + 1,
            IgnoreReason::TarpitNotSyn,
        ),
        ("FIN", FIN, CISN + 1, 0, IgnoreReason::TarpitNotSyn),
        (
            "SYN+ACK",
            SYN | ACK,
            CISN,
            ours + 1,
            IgnoreReason::TarpitNotSyn,
        ),
        (
            "an ACK with a forged ack number",
            ACK,
            CISN + 1,
            12345,
            IgnoreReason::TarpitStray,
        ),
        (
            "an ACK two past the client's ISN",
            ACK,
            CISN + 2,
            ours + 1,
            IgnoreReason::TarpitStray,
        ),
    ] {
        let input = seg(TARPIT, flags, seq, ack, b"");
        let (v, out) = run(&mut e, t(2), &input);
        assert_eq!(v, Verdict::Ignored(reason), "{what}");
        assert_eq!(out, input, "{what}: frame untouched");
    }
    // without persist mode, the ACK of the handshake is ignored as before
    let mut plain = Engine::new(config(false));
    let (v, _) = run(&mut plain, t(0), &seg(TARPIT, ACK, CISN + 1, ours + 1, b""));
    assert_eq!(v, Verdict::Ignored(IgnoreReason::TarpitNotSyn));
}

#[test]
fn ipv6_held_connections_are_answered_too() {
    let v6 = |l: u16| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, l);
    let (vip, client, tp) = (v6(0x100), v6(2), v6(0x200));
    let mut c = EngineConfig::new(OUR, vip, 80);
    c.isn_key = KEY;
    c.tarpit = Some(Acl {
        entries: vec![AclEntry {
            permit: true,
            matcher: AclMatch::V6 {
                addr: tp,
                prefix: 128,
            },
        }],
    });
    c.tarpit_persist = true;
    let mut e = Engine::new(c);
    let sa = |ip, p| SocketAddrV6::new(ip, p, 0, 0);
    let f = |flags, seq, ack| {
        frames::tcp6(
            CLIENT_MAC,
            OUR,
            sa(client, 40000),
            sa(tp, 22),
            flags,
            seq,
            ack,
            &[],
            b"",
        )
    };
    let ours = tarpit::isn_v6(&KEY, client, tp, 40000, 22) ^ 7;
    let (v, out) = run(&mut e, t(0), &f(SYN, 7, 0));
    assert_eq!(v, Verdict::TarpitSynAck { len: 74 });
    assert_eq!(frames::checksums_ok(&out), Some(true));
    let (v, out) = run(&mut e, t(1), &f(ACK, 7, ours + 1));
    assert_eq!(v, Verdict::TarpitAck { len: 74 });
    let b = PacketBuilder::ethernet2(OUR, CLIENT_MAC)
        .ipv6(tp.octets(), client.octets(), 64)
        .tcp(22, 40000, ours + 1, 0)
        .ack(8);
    let mut want = Vec::new();
    b.write(&mut want, &[]).unwrap();
    same("IPv6 probe answer", &out, &want);
}

fn capture_config(persist: bool) -> EngineConfig {
    let mut c = config(persist);
    let (net, prefix) = CaptureConfig::parse_subnet("10.0.0.0/24").unwrap();
    c.tarpit_capture = Some(CaptureConfig {
        net,
        prefix,
        wait_secs: 2,
        max: 64,
    });
    c.own_addrs = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))];
    c
}

#[test]
fn an_address_nobody_answers_is_captured_after_the_wait_and_released_when_a_host_speaks() {
    let mut e = Engine::new(capture_config(false));
    let ask = frames::arp_request(CLIENT_MAC, CLIENT, FREE);
    let syn = seg(FREE, SYN, CISN, 0, b"");
    // unanswered requests at 0 and 1 s: not yet; a SYN to it is not ours
    for ms in [0, 1000] {
        assert_eq!(
            run(&mut e, t(ms), &ask).0,
            Verdict::Ignored(IgnoreReason::ArpNotOurs)
        );
    }
    assert_eq!(
        run(&mut e, t(1500), &syn).0,
        Verdict::Ignored(IgnoreReason::NotVip)
    );
    // 2 s after the first: captured, this request answered with our MAC
    let (v, out) = run(&mut e, t(2000), &ask);
    assert_eq!(v, Verdict::ArpReply { len: 42 });
    assert_eq!(out, frames::arp_reply(OUR, FREE, CLIENT_MAC, CLIENT));
    assert_eq!(
        run(&mut e, t(2100), &syn).0,
        Verdict::TarpitSynAck { len: 54 }
    );
    let st = e.tarpit_status(8);
    assert_eq!(st.captured_addrs, vec![IpAddr::V4(FREE)]);
    assert_eq!(st.capture_counters.captures, 1);
    // the real host comes up: its first ARP request releases the address at once
    let hello = frames::arp_request(HOST_MAC, FREE, CLIENT);
    assert_eq!(
        run(&mut e, t(3000), &hello).0,
        Verdict::Ignored(IgnoreReason::ArpNotOurs)
    );
    assert_eq!(
        run(&mut e, t(3001), &syn).0,
        Verdict::Ignored(IgnoreReason::NotVip)
    );
    // and pen never answers for it again, however long it is asked for
    for s in 0..30u64 {
        assert_eq!(
            run(&mut e, t(4000 + s * 500), &ask).0,
            Verdict::Ignored(IgnoreReason::ArpNotOurs)
        );
    }
    let st = e.tarpit_status(8);
    assert!(st.captured_addrs.is_empty());
    assert_eq!(st.capture_counters.releases, 1);
}

#[test]
fn replies_gratuitous_arp_probes_and_ip_traffic_release_a_captured_address() {
    let speak: [(&str, Vec<u8>); 4] = [
        (
            "an ARP reply",
            frames::arp_reply(HOST_MAC, FREE, CLIENT_MAC, CLIENT),
        ),
        (
            "a gratuitous ARP",
            frames::arp_request(HOST_MAC, FREE, FREE),
        ),
        (
            "an RFC 5227 probe for it",
            frames::arp_request(HOST_MAC, Ipv4Addr::UNSPECIFIED, FREE),
        ),
        (
            "IP traffic from it",
            frames::udp(
                HOST_MAC,
                [0xff; 6],
                SocketAddrV4::new(FREE, 68),
                SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
                b"x",
            ),
        ),
    ];
    for (what, f) in speak {
        let mut e = Engine::new(capture_config(false));
        let ask = frames::arp_request(CLIENT_MAC, CLIENT, FREE);
        run(&mut e, t(0), &ask);
        assert_eq!(
            run(&mut e, t(2000), &ask).0,
            Verdict::ArpReply { len: 42 },
            "{what}"
        );
        run(&mut e, t(2500), &f);
        assert_eq!(
            run(&mut e, t(2600), &ask).0,
            Verdict::Ignored(IgnoreReason::ArpNotOurs),
            "{what} released it"
        );
    }
}

#[test]
fn the_vip_backends_and_own_addresses_are_never_captured() {
    let mut e = Engine::new(capture_config(false));
    for target in [
        VIP,
        B0,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 255),
    ] {
        let ask = frames::arp_request(CLIENT_MAC, CLIENT, target);
        for s in 0..6 {
            let v = run(&mut e, t(s * 1000), &ask).0;
            if target == VIP {
                assert_eq!(v, Verdict::ArpReply { len: 42 }, "the VIP is ours anyway");
            } else {
                assert_eq!(v, Verdict::Ignored(IgnoreReason::ArpNotOurs), "{target}");
            }
        }
    }
    assert!(e.tarpit_status(8).captured_addrs.is_empty());
    // the manual tarpit ACL keeps working beside capture
    assert_eq!(
        run(
            &mut e,
            t(9000),
            &frames::arp_request(CLIENT_MAC, CLIENT, TARPIT)
        )
        .0,
        Verdict::ArpReply { len: 42 }
    );
    assert_eq!(
        run(&mut e, t(9001), &seg(TARPIT, SYN, CISN, 0, b"")).0,
        Verdict::TarpitSynAck { len: 54 }
    );
}

#[test]
fn ipv6_addresses_are_captured_from_unanswered_solicitations_and_released_by_dad() {
    let v6 = |l: u16| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, l);
    let (vip, client, free) = (v6(0x100), v6(2), v6(0x50));
    let mut c = EngineConfig::new(OUR, vip, 80);
    let (net, prefix) = CaptureConfig::parse_subnet("fd00::/64").unwrap();
    c.tarpit_capture = Some(CaptureConfig {
        net,
        prefix,
        wait_secs: 1,
        max: 16,
    });
    let mut e = Engine::new(c);
    let (group, gmac) = ndp::solicited_node(free);
    let ns = frames::nd(
        CLIENT_MAC,
        gmac,
        client,
        group,
        false,
        free,
        Some(CLIENT_MAC),
    );
    assert_eq!(
        run(&mut e, t(0), &ns).0,
        Verdict::Ignored(IgnoreReason::ArpNotOurs)
    );
    let (v, out) = run(&mut e, t(1000), &ns);
    assert!(matches!(v, Verdict::NdpAdvert { .. }), "{v}");
    assert_eq!(frames::checksums_ok(&out), Some(true));
    // duplicate address detection for it: a host is taking it
    let dad = frames::nd(
        HOST_MAC,
        gmac,
        Ipv6Addr::UNSPECIFIED,
        group,
        false,
        free,
        None,
    );
    run(&mut e, t(1500), &dad);
    assert_eq!(
        run(&mut e, t(1600), &ns).0,
        Verdict::Ignored(IgnoreReason::ArpNotOurs)
    );
}

fn spoofed_syn(i: u32) -> Vec<u8> {
    // sources spread over many /24s, as a spoofing flood has them
    let src = Ipv4Addr::from(0xc000_0000u32.wrapping_add(i.wrapping_mul(0x0001_0301)));
    frames::tcp(
        CLIENT_MAC,
        OUR,
        SocketAddrV4::new(src, 1024 + (i % 60000) as u16),
        SocketAddrV4::new(TARPIT, 80),
        SYN,
        i,
        0,
        &[],
        b"",
    )
}

#[test]
fn a_burst_of_spoofed_syns_gets_at_most_the_cap_and_the_rest_is_counted() {
    let mut c = config(false);
    c.tarpit_rate = Some(RateConfig {
        rate: 20,
        burst: 10,
        net_rate: 0,
        net_burst: 0,
    });
    let mut e = Engine::new(c);
    // 2000 SYNs in one second
    let mut sent = 0;
    for i in 0..2000u32 {
        let (v, out) = run(&mut e, t(u64::from(i) / 2), &spoofed_syn(i));
        match v {
            Verdict::TarpitSynAck { .. } => {
                sent += 1;
                assert_eq!(frames::checksums_ok(&out), Some(true));
            }
            Verdict::Dropped(DropReason::TarpitRate) => {}
            other => panic!("SYN {i}: {other}"),
        }
    }
    // burst 10 + 20/s over 999.5 ms
    assert!((10..=30).contains(&sent), "{sent} replies");
    assert_eq!(e.counters().dropped(DropReason::TarpitRate), 2000 - sent);
    assert_eq!(e.tarpit_status(0).rate_dropped, 2000 - sent);
}

#[test]
fn the_per_network_cap_keeps_one_network_from_using_the_whole_budget() {
    let mut c = config(true);
    c.tarpit_rate = Some(RateConfig {
        rate: 1000,
        burst: 1000,
        net_rate: 1,
        net_burst: 3,
    });
    let mut e = Engine::new(c);
    let from = |src: Ipv4Addr, port: u16| {
        frames::tcp(
            CLIENT_MAC,
            OUR,
            SocketAddrV4::new(src, port),
            SocketAddrV4::new(TARPIT, 80),
            SYN,
            1,
            0,
            &[],
            b"",
        )
    };
    let answered = (0..100u16)
        .filter(|p| {
            let src = Ipv4Addr::new(192, 0, 2, (*p % 250) as u8 + 1);
            run(&mut e, t(0), &from(src, 2000 + p))
                .0
                .transmit_len()
                .is_some()
        })
        .count();
    assert_eq!(answered, 3, "one /24: its burst only");
    assert!(
        run(&mut e, t(0), &from(Ipv4Addr::new(198, 51, 100, 7), 3000))
            .0
            .transmit_len()
            .is_some(),
        "another network still gets its answer"
    );
    // persist ACKs are capped too
    let ours = tarpit::isn(&KEY, Ipv4Addr::new(192, 0, 2, 1), TARPIT, 2000, 80) ^ 1;
    let ack = frames::tcp(
        CLIENT_MAC,
        OUR,
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 2000),
        SocketAddrV4::new(TARPIT, 80),
        ACK,
        2,
        ours + 1,
        &[],
        b"",
    );
    assert_eq!(
        run(&mut e, t(100), &ack).0,
        Verdict::Dropped(DropReason::TarpitRate)
    );
    assert_eq!(
        run(&mut e, t(1100), &ack).0,
        Verdict::TarpitAck { len: 54 },
        "a token back after a second"
    );
}

#[test]
fn settings_change_at_run_time_and_unchanged_ones_keep_their_state() {
    let mut e = Engine::new(capture_config(false));
    let ask = frames::arp_request(CLIENT_MAC, CLIENT, FREE);
    run(&mut e, t(0), &ask);
    let cap = e.config().tarpit_capture;
    // persist on, same capture: the pending entry survives and captures at 2 s
    e.set_tarpit_options(true, cap, None, t(500));
    assert_eq!(run(&mut e, t(2000), &ask).0, Verdict::ArpReply { len: 42 });
    assert!(e.tarpit_status(4).persist);
    // capture off: nothing captured any more
    e.set_tarpit_options(true, None, None, t(2100));
    assert_eq!(
        run(&mut e, t(2200), &ask).0,
        Verdict::Ignored(IgnoreReason::ArpNotOurs)
    );
}
