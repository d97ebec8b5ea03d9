//! Engine fixtures: a table of (description, input frame, expected verdict, expected output
//! frame), plus the sequences a single frame cannot show (MAC unknown then learned, blacklist
//! change, hold limits, checksum offload). Expected frames are built with etherparse, not with
//! the engine's own code.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use etherparse::PacketBuilder;
use pen::acl::{Acl, AclEntry, AclMatch};
use pen::engine::frames::{self, ACK, FIN, PSH, RST, SYN};
use pen::engine::{
    BackendConfig, DropReason, Engine, EngineConfig, IgnoreReason, Mac, RxMeta, TxKind, Verdict,
    ndp, tarpit,
};

const OUR: Mac = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
const B0_MAC: Mac = [0x02, 0, 0, 0, 0, 0x03];
const B1_MAC: Mac = [0x02, 0, 0, 0, 0, 0x04];
const OTHER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x99];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const B0: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const B1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
const TARPIT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const KEY: [u8; 16] = *b"fixture-isn-key!";
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
const B0_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
const B1_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 4);
const TARPIT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x200);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const T: Duration = Duration::from_secs(10);

fn permit(a: Ipv4Addr) -> AclEntry {
    AclEntry {
        permit: true,
        matcher: AclMatch::V4 {
            addr: a,
            mask: Ipv4Addr::BROADCAST,
        },
    }
}

#[derive(Clone, Copy, Debug)]
enum Setup {
    /// TCP, VIP:80, two backends with learned MACs, tarpit ACL `permit 10.0.0.200`.
    Tcp,
    /// As `Tcp` with `-U` and port 53.
    Udp,
    /// As `Tcp` with listen port 0.
    AnyPort,
    /// As `Tcp` with an empty tarpit ACL (permits every address).
    TarpitAll,
    /// As `Tcp`, backend MACs not learned yet.
    Fresh,
    /// IPv6: VIP [fd00::100]:80, backends fd00::3 and fd00::4 (MACs learned by neighbor
    /// advertisements), tarpit ACL `permit fd00::200/128`.
    Tcp6,
    /// As `Tcp6` with `-U` and port 53.
    Udp6,
    /// As `Tcp6`, backend MACs not learned yet.
    Fresh6,
}

fn v6(setup: Setup) -> bool {
    matches!(setup, Setup::Tcp6 | Setup::Udp6 | Setup::Fresh6)
}

fn config(setup: Setup) -> EngineConfig {
    let port = match setup {
        Setup::Udp | Setup::Udp6 => 53,
        Setup::AnyPort => 0,
        _ => 80,
    };
    let mut c = if v6(setup) {
        EngineConfig::new(OUR, VIP6, port)
    } else {
        EngineConfig::new(OUR, VIP, port)
    };
    c.udp = matches!(setup, Setup::Udp | Setup::Udp6);
    c.isn_key = KEY;
    let (b0, b1) = if v6(setup) {
        (B0_6.into(), B1_6.into())
    } else {
        (B0.into(), B1.into())
    };
    c.backends = vec![
        BackendConfig {
            ip: Some(b0),
            weight: 0,
            available: true,
        },
        BackendConfig {
            ip: Some(b1),
            weight: 0,
            available: true,
        },
    ];
    c.tarpit = Some(match setup {
        Setup::TarpitAll => Acl::default(),
        _ if v6(setup) => Acl {
            entries: vec![AclEntry {
                permit: true,
                matcher: AclMatch::V6 {
                    addr: TARPIT6,
                    prefix: 128,
                },
            }],
        },
        _ => Acl {
            entries: vec![permit(TARPIT)],
        },
    });
    c
}

fn engine(setup: Setup) -> Engine {
    let mut e = Engine::new(config(setup));
    if matches!(setup, Setup::Tcp6 | Setup::Udp6) {
        for (mac, ip) in [(B0_MAC, B0_6), (B1_MAC, B1_6)] {
            let mut f = frames::nd(mac, OUR, ip, ndp::link_local(OUR), true, ip, Some(mac));
            assert!(matches!(e.process(T, &mut f), Verdict::Learned { .. }));
        }
    } else if !matches!(setup, Setup::Fresh | Setup::Fresh6) {
        for (mac, ip) in [(B0_MAC, B0), (B1_MAC, B1)] {
            let mut f = frames::arp_reply(mac, ip, OUR, Ipv4Addr::UNSPECIFIED);
            assert!(matches!(e.process(T, &mut f), Verdict::Learned { .. }));
        }
    }
    e
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// A client segment to `dst` with our MAC as destination.
fn seg(dst: SocketAddrV4, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    frames::tcp(
        CLIENT_MAC,
        OUR,
        sa(CLIENT, 40000),
        dst,
        flags,
        1000,
        5000,
        options,
        payload,
    )
}

fn with_macs(mut f: Vec<u8>, dst: Mac, src: Mac) -> Vec<u8> {
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// The SYN+ACK the tarpit must send for a SYN from CLIENT:40000 (seq 1000) to TARPIT:port.
fn expected_syn_ack(port: u16) -> Vec<u8> {
    let isn = tarpit::isn(&KEY, CLIENT, TARPIT, 40000, port);
    let b = PacketBuilder::ethernet2(OUR, CLIENT_MAC)
        .ipv4(TARPIT.octets(), CLIENT.octets(), 64)
        .tcp(port, 40000, isn, tarpit::DEFAULT_WINDOW)
        .syn()
        .ack(1001);
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

struct Fixture {
    what: &'static str,
    setup: Setup,
    input: Vec<u8>,
    verdict: Verdict,
    output: Option<Vec<u8>>,
}

/// Client 10.0.0.2 without `-r` goes to this backend (fixed by the Maglev table of
/// 10.0.0.3 and 10.0.0.4; a change here changes which backend every pen picks).
const CLIENT_BACKEND: usize = 1;
const CLIENT_BACKEND_MAC: Mac = B1_MAC;

fn fixtures() -> Vec<Fixture> {
    let vip80 = sa(VIP, 80);
    let mut v = vec![
        Fixture {
            what: "ARP request for the VIP is answered with our MAC",
            setup: Setup::Tcp,
            input: frames::arp_request(CLIENT_MAC, CLIENT, VIP),
            verdict: Verdict::ArpReply { len: 42 },
            output: Some(frames::arp_reply(OUR, VIP, CLIENT_MAC, CLIENT)),
        },
        Fixture {
            what: "ARP request for a tarpit address is answered with our MAC",
            setup: Setup::Tcp,
            input: frames::arp_request(CLIENT_MAC, CLIENT, TARPIT),
            verdict: Verdict::ArpReply { len: 42 },
            output: Some(frames::arp_reply(OUR, TARPIT, CLIENT_MAC, CLIENT)),
        },
        Fixture {
            what: "ARP request for another address is ignored",
            setup: Setup::Tcp,
            input: frames::arp_request(CLIENT_MAC, CLIENT, Ipv4Addr::new(10, 0, 0, 201)),
            verdict: Verdict::Ignored(IgnoreReason::ArpNotOurs),
            output: None,
        },
        Fixture {
            what: "ARP request for a backend is not answered even when the tarpit ACL permits all",
            setup: Setup::TarpitAll,
            input: frames::arp_request(CLIENT_MAC, CLIENT, B1),
            verdict: Verdict::Ignored(IgnoreReason::ArpNotOurs),
            output: None,
        },
        Fixture {
            what: "ARP probe (sender 0.0.0.0) for a tarpit address is not answered",
            setup: Setup::Tcp,
            input: frames::arp_request(CLIENT_MAC, Ipv4Addr::UNSPECIFIED, TARPIT),
            verdict: Verdict::Ignored(IgnoreReason::ArpNotOurs),
            output: None,
        },
        Fixture {
            what: "gratuitous ARP is ignored",
            setup: Setup::Tcp,
            input: frames::arp_request(CLIENT_MAC, CLIENT, CLIENT),
            verdict: Verdict::Ignored(IgnoreReason::ArpNotOurs),
            output: None,
        },
        Fixture {
            what: "tarpit ARP is not answered in UDP mode",
            setup: Setup::Udp,
            input: frames::arp_request(CLIENT_MAC, CLIENT, TARPIT),
            verdict: Verdict::Ignored(IgnoreReason::ArpNotOurs),
            output: None,
        },
        Fixture {
            what: "ARP reply from a non-backend is ignored",
            setup: Setup::Tcp,
            input: frames::arp_reply(OTHER_MAC, Ipv4Addr::new(10, 0, 0, 9), OUR, CLIENT),
            verdict: Verdict::Ignored(IgnoreReason::ArpNotOurs),
            output: None,
        },
    ];
    for (what, flags, payload) in [
        (
            "SYN to the VIP is forwarded, only the MACs change",
            SYN,
            &b""[..],
        ),
        (
            "data to the VIP is forwarded",
            ACK | PSH,
            &b"GET / HTTP/1.0\r\n\r\n"[..],
        ),
        ("FIN to the VIP is forwarded", FIN | ACK, &b""[..]),
        ("RST to the VIP is forwarded", RST, &b""[..]),
    ] {
        let input = seg(vip80, flags, &[], payload);
        v.push(Fixture {
            what,
            setup: Setup::Tcp,
            verdict: Verdict::Forward {
                backend: CLIENT_BACKEND,
                len: input.len(),
            },
            output: Some(with_macs(input.clone(), CLIENT_BACKEND_MAC, OUR)),
            input,
        });
    }
    let syn20 = seg(vip80, SYN, &frames::syn_options(20), b"");
    v.push(Fixture {
        what: "the VIP is never tarpitted, even when the tarpit ACL permits everything",
        setup: Setup::TarpitAll,
        verdict: Verdict::Forward {
            backend: CLIENT_BACKEND,
            len: syn20.len(),
        },
        output: Some(with_macs(syn20.clone(), CLIENT_BACKEND_MAC, OUR)),
        input: syn20,
    });
    let any = seg(sa(VIP, 2222), SYN, &[], b"");
    v.push(Fixture {
        what: "listen port 0 forwards every port",
        setup: Setup::AnyPort,
        verdict: Verdict::Forward {
            backend: CLIENT_BACKEND,
            len: any.len(),
        },
        output: Some(with_macs(any.clone(), CLIENT_BACKEND_MAC, OUR)),
        input: any,
    });
    let dns = frames::udp(
        CLIENT_MAC,
        OUR,
        sa(CLIENT, 40000),
        sa(VIP, 53),
        b"\x12\x34query",
    );
    v.push(Fixture {
        what: "UDP to the VIP is forwarded with -U",
        setup: Setup::Udp,
        verdict: Verdict::Forward {
            backend: CLIENT_BACKEND,
            len: dns.len(),
        },
        output: Some(with_macs(dns.clone(), CLIENT_BACKEND_MAC, OUR)),
        input: dns,
    });
    v.extend([
        Fixture {
            what: "TCP to the VIP is ignored with -U",
            setup: Setup::Udp,
            input: seg(sa(VIP, 53), SYN, &[], b""),
            verdict: Verdict::Ignored(IgnoreReason::WrongProtocol),
            output: None,
        },
        Fixture {
            what: "UDP to the VIP is ignored without -U",
            setup: Setup::Tcp,
            input: frames::udp(CLIENT_MAC, OUR, sa(CLIENT, 40000), vip80, b"x"),
            verdict: Verdict::Ignored(IgnoreReason::WrongProtocol),
            output: None,
        },
        Fixture {
            what: "the wrong port of the VIP is ignored",
            setup: Setup::Tcp,
            input: seg(sa(VIP, 81), SYN, &[], b""),
            verdict: Verdict::Ignored(IgnoreReason::WrongPort),
            output: None,
        },
        Fixture {
            what: "a frame for another MAC is ignored",
            setup: Setup::Tcp,
            input: with_macs(seg(vip80, SYN, &[], b""), OTHER_MAC, CLIENT_MAC),
            verdict: Verdict::Ignored(IgnoreReason::NotOurMac),
            output: None,
        },
        Fixture {
            what: "a frame from our own MAC is ignored",
            setup: Setup::Tcp,
            input: with_macs(seg(vip80, SYN, &[], b""), B0_MAC, OUR),
            verdict: Verdict::Ignored(IgnoreReason::OwnFrame),
            output: None,
        },
        Fixture {
            what: "an address neither VIP nor tarpitted is ignored",
            setup: Setup::Tcp,
            input: seg(sa(Ipv4Addr::new(10, 0, 0, 201), 80), SYN, &[], b""),
            verdict: Verdict::Ignored(IgnoreReason::NotVip),
            output: None,
        },
    ]);
    for n in [0, 4, 12, 20, 40] {
        let input = seg(sa(TARPIT, 80), SYN, &frames::syn_options(n), b"");
        v.push(Fixture {
            what: match n {
                0 => "tarpit SYN without options gets a correct SYN+ACK",
                4 => "tarpit SYN with 4 option bytes (nmap) gets a correct SYN+ACK",
                12 => "tarpit SYN with 12 option bytes (Windows) gets a correct SYN+ACK",
                20 => "tarpit SYN with 20 option bytes (Linux) gets a correct SYN+ACK",
                _ => "tarpit SYN with 40 option bytes gets a correct SYN+ACK",
            },
            setup: Setup::Tcp,
            input,
            verdict: Verdict::TarpitSynAck { len: 54 },
            output: Some(expected_syn_ack(80)),
        });
    }
    let syn_data = seg(sa(TARPIT, 443), SYN, &frames::syn_options(4), b"early data");
    v.push(Fixture {
        what: "tarpit SYN with data on any port: options and data dropped from the reply",
        setup: Setup::Tcp,
        input: syn_data,
        verdict: Verdict::TarpitSynAck { len: 54 },
        output: Some(expected_syn_ack(443)),
    });
    for (what, flags, payload) in [
        ("tarpit ACK is ignored", ACK, &b""[..]),
        (
            "tarpit data is ignored",
            ACK | PSH,
            &b"GET / HTTP/1.0\r\n\r\n"[..],
        ),
        ("tarpit FIN is ignored", FIN | ACK, &b""[..]),
        ("tarpit RST is ignored", RST, &b""[..]),
        ("tarpit SYN+ACK is ignored", SYN | ACK, &b""[..]),
    ] {
        v.push(Fixture {
            what,
            setup: Setup::Tcp,
            input: seg(sa(TARPIT, 80), flags, &[], payload),
            verdict: Verdict::Ignored(IgnoreReason::TarpitNotSyn),
            output: None,
        });
    }
    v.push(Fixture {
        what: "UDP to a tarpit address is ignored",
        setup: Setup::Tcp,
        input: frames::udp(CLIENT_MAC, OUR, sa(CLIENT, 40000), sa(TARPIT, 53), b"x"),
        verdict: Verdict::Ignored(IgnoreReason::TarpitNotSyn),
        output: None,
    });
    // bad input
    let good = seg(vip80, SYN, &[], b"");
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    let mut long_total = good.clone();
    long_total[16..18].copy_from_slice(&1500u16.to_be_bytes());
    let mut short_total = good.clone();
    short_total[16..18].copy_from_slice(&30u16.to_be_bytes());
    let mut vlan = good.clone();
    vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    let mut v6 = good.clone();
    v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let mut oversized = good.clone();
    oversized.resize(pen::engine::MAX_FRAME + 1, 0);
    for (what, input, reason) in [
        (
            "an empty frame is dropped as truncated",
            vec![],
            DropReason::Truncated,
        ),
        (
            "a 13-byte frame is dropped as truncated",
            good[..13].to_vec(),
            DropReason::Truncated,
        ),
        (
            "an IPv4 frame cut in its header is dropped",
            good[..30].to_vec(),
            DropReason::Truncated,
        ),
        (
            "an IPv4 frame shorter than its total length is dropped",
            good[..50].to_vec(),
            DropReason::Truncated,
        ),
        (
            "an ARP frame cut short is dropped",
            frames::arp_request(CLIENT_MAC, CLIENT, VIP)[..30].to_vec(),
            DropReason::Truncated,
        ),
        (
            "IP version 6 in an IPv4 EtherType is malformed",
            bad_version,
            DropReason::Malformed,
        ),
        (
            "an IPv4 header length under 20 is malformed",
            bad_ihl,
            DropReason::Malformed,
        ),
        (
            "a total length beyond the frame is truncated",
            long_total,
            DropReason::Truncated,
        ),
        (
            "a TCP segment shorter than its header is truncated",
            short_total,
            DropReason::Truncated,
        ),
        (
            "a VLAN-tagged frame is dropped as non-IP",
            vlan,
            DropReason::NonIp,
        ),
        (
            "a frame over MAX_FRAME is dropped as oversized",
            oversized,
            DropReason::Oversized,
        ),
    ] {
        v.push(Fixture {
            what,
            setup: Setup::Tcp,
            input,
            verdict: Verdict::Dropped(reason),
            output: None,
        });
    }
    v.push(Fixture {
        what: "an IPv4 header under the IPv6 EtherType is malformed",
        setup: Setup::Tcp,
        input: v6,
        verdict: Verdict::Dropped(DropReason::Malformed),
        output: None,
    });
    v.extend(fixtures_v6());
    v
}

fn sa6(ip: Ipv6Addr, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(ip, port, 0, 0)
}

/// A client IPv6 segment to `dst` with our MAC as destination.
fn seg6(dst: SocketAddrV6, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    frames::tcp6(
        CLIENT_MAC,
        OUR,
        sa6(CLIENT6, 40000),
        dst,
        flags,
        1000,
        5000,
        options,
        payload,
    )
}

/// Client fd00::2 without `-r` goes to this backend of fd00::3 and fd00::4.
const CLIENT6_BACKEND: usize = 0;
const CLIENT6_BACKEND_MAC: Mac = B0_MAC;

/// The IPv6 SYN+ACK the tarpit must send for a SYN from [fd00::2]:40000 (seq 1000).
fn expected_syn_ack6(port: u16) -> Vec<u8> {
    let isn = tarpit::isn_v6(&KEY, CLIENT6, TARPIT6, 40000, port);
    let b = PacketBuilder::ethernet2(OUR, CLIENT_MAC)
        .ipv6(TARPIT6.octets(), CLIENT6.octets(), 64)
        .tcp(port, 40000, isn, tarpit::DEFAULT_WINDOW)
        .syn()
        .ack(1001);
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

/// `frame` (TCP/IPv6 without extension headers) with an 8-byte hop-by-hop header inserted.
fn with_hop_by_hop(frame: &[u8]) -> Vec<u8> {
    let mut f = frame[..54].to_vec();
    f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // next TCP, len 0, PadN(4)
    f.extend_from_slice(&frame[54..]);
    f[20] = 0; // next header: hop-by-hop
    let plen = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f
}

fn fixtures_v6() -> Vec<Fixture> {
    let (sn_vip, sn_vip_mac) = ndp::solicited_node(VIP6);
    let ll = ndp::link_local(OUR);
    let vip80 = sa6(VIP6, 80);
    let syn = seg6(vip80, SYN, &frames::syn_options(20), b"");
    let data = seg6(vip80, ACK | PSH, &[], b"GET / HTTP/1.0\r\n\r\n");
    let hbh = with_hop_by_hop(&data);
    let dns = frames::udp6(CLIENT_MAC, OUR, sa6(CLIENT6, 40000), sa6(VIP6, 53), b"q");
    let mut short = syn.clone();
    short.truncate(60);
    let mut v = vec![
        Fixture {
            what: "IPv6: neighbor solicitation for the VIP gets an advertisement with our MAC",
            setup: Setup::Tcp6,
            input: frames::nd(
                CLIENT_MAC,
                sn_vip_mac,
                CLIENT6,
                sn_vip,
                false,
                VIP6,
                Some(CLIENT_MAC),
            ),
            verdict: Verdict::NdpAdvert { len: 86 },
            output: Some(frames::nd(
                OUR,
                CLIENT_MAC,
                VIP6,
                CLIENT6,
                true,
                VIP6,
                Some(OUR),
            )),
        },
        Fixture {
            what: "IPv6: neighbor solicitation for a tarpit address is answered",
            setup: Setup::Tcp6,
            input: frames::nd(
                CLIENT_MAC,
                [0x33, 0x33, 0xff, 0, 2, 0],
                CLIENT6,
                ndp::solicited_node(TARPIT6).0,
                false,
                TARPIT6,
                Some(CLIENT_MAC),
            ),
            verdict: Verdict::NdpAdvert { len: 86 },
            output: Some(frames::nd(
                OUR,
                CLIENT_MAC,
                TARPIT6,
                CLIENT6,
                true,
                TARPIT6,
                Some(OUR),
            )),
        },
        Fixture {
            what: "IPv6: unicast solicitation for our link-local address without an option gets the short answer",
            setup: Setup::Tcp6,
            input: frames::nd(CLIENT_MAC, OUR, CLIENT6, ll, false, ll, None),
            verdict: Verdict::NdpAdvert { len: 78 },
            output: Some(frames::nd(OUR, CLIENT_MAC, ll, CLIENT6, true, ll, None)),
        },
        Fixture {
            what: "IPv6: solicitation for another address is ignored",
            setup: Setup::Tcp6,
            input: frames::nd(
                CLIENT_MAC,
                sn_vip_mac,
                CLIENT6,
                sn_vip,
                false,
                Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x101),
                Some(CLIENT_MAC),
            ),
            verdict: Verdict::Ignored(IgnoreReason::ArpNotOurs),
            output: None,
        },
        Fixture {
            what: "IPv6: duplicate address detection for the VIP is not answered",
            setup: Setup::Tcp6,
            input: frames::nd(
                CLIENT_MAC,
                sn_vip_mac,
                Ipv6Addr::UNSPECIFIED,
                sn_vip,
                false,
                VIP6,
                None,
            ),
            verdict: Verdict::Ignored(IgnoreReason::ArpNotOurs),
            output: None,
        },
        Fixture {
            what: "IPv6: SYN to the VIP is forwarded, only the MACs change",
            setup: Setup::Tcp6,
            verdict: Verdict::Forward {
                backend: CLIENT6_BACKEND,
                len: syn.len(),
            },
            output: Some(with_macs(syn.clone(), CLIENT6_BACKEND_MAC, OUR)),
            input: syn,
        },
        Fixture {
            what: "IPv6: data after a hop-by-hop header is forwarded to the same backend",
            setup: Setup::Tcp6,
            verdict: Verdict::Forward {
                backend: CLIENT6_BACKEND,
                len: hbh.len(),
            },
            output: Some(with_macs(hbh.clone(), CLIENT6_BACKEND_MAC, OUR)),
            input: hbh,
        },
        Fixture {
            what: "IPv6: UDP to the VIP is forwarded with -U",
            setup: Setup::Udp6,
            verdict: Verdict::Forward {
                backend: CLIENT6_BACKEND,
                len: dns.len(),
            },
            output: Some(with_macs(dns.clone(), CLIENT6_BACKEND_MAC, OUR)),
            input: dns,
        },
        Fixture {
            what: "IPv6: the wrong port of the VIP is ignored",
            setup: Setup::Tcp6,
            input: seg6(sa6(VIP6, 81), SYN, &[], b""),
            verdict: Verdict::Ignored(IgnoreReason::WrongPort),
            output: None,
        },
        Fixture {
            what: "IPv6: a frame shorter than its payload length is dropped",
            setup: Setup::Tcp6,
            input: short,
            verdict: Verdict::Dropped(DropReason::Truncated),
            output: None,
        },
        Fixture {
            what: "IPv6: tarpit ACK is ignored",
            setup: Setup::Tcp6,
            input: seg6(sa6(TARPIT6, 80), ACK, &[], b""),
            verdict: Verdict::Ignored(IgnoreReason::TarpitNotSyn),
            output: None,
        },
    ];
    for n in [0, 4, 20, 40] {
        v.push(Fixture {
            what: "IPv6: tarpit SYN gets a correct 74-byte SYN+ACK whatever its options",
            setup: Setup::Tcp6,
            input: seg6(sa6(TARPIT6, 80), SYN, &frames::syn_options(n), b""),
            verdict: Verdict::TarpitSynAck { len: 74 },
            output: Some(expected_syn_ack6(80)),
        });
    }
    v
}

#[test]
fn ipv6_backend_is_solicited_then_learned_from_its_advertisement() {
    let mut e = engine(Setup::Fresh6);
    let p = e.poll_transmit(T).unwrap();
    assert_eq!(p.kind, TxKind::NdpProbe { backend: 0 });
    let (group, group_mac) = ndp::solicited_node(B0_6);
    assert_eq!(
        p.frame,
        frames::nd(
            OUR,
            group_mac,
            ndp::link_local(OUR),
            group,
            false,
            B0_6,
            Some(OUR)
        )
    );
    assert_eq!(frames::checksums_ok(&p.frame), Some(true));
    while e.poll_transmit(T).is_some() {}
    let syn = seg6(sa6(VIP6, 80), SYN, &[], b"");
    assert_eq!(
        e.process(T, &mut syn.clone()),
        Verdict::Held {
            backend: CLIENT6_BACKEND
        }
    );
    let mut na = frames::nd(
        B0_MAC,
        OUR,
        B0_6,
        ndp::link_local(OUR),
        true,
        B0_6,
        Some(B0_MAC),
    );
    assert_eq!(e.process(T, &mut na), Verdict::Learned { backend: 0 });
    let t = e.poll_transmit(T).unwrap();
    assert_eq!(t.kind, TxKind::Released { backend: 0 });
    assert_eq!(t.frame, with_macs(syn, B0_MAC, OUR));
}

#[test]
fn ipv6_partial_checksum_is_completed() {
    let mut e = engine(Setup::Tcp6);
    let good = seg6(sa6(VIP6, 80), ACK | PSH, &[], b"payload!");
    let mut partial = good.clone();
    partial[70..72].copy_from_slice(&[0xab, 0xcd]);
    e.process_meta(T, &mut partial, RxMeta { csum_partial: true });
    assert_eq!(partial, with_macs(good, CLIENT6_BACKEND_MAC, OUR));
}

#[test]
fn fixture_table() {
    let mut failures = Vec::new();
    for f in fixtures() {
        let mut e = engine(f.setup);
        let before = e.counters().clone();
        let mut buf = f.input.clone();
        let got = e.process(T, &mut buf);
        let out = got.transmit_len().map(|n| buf[..n].to_vec());
        if got != f.verdict {
            failures.push(format!(
                "{}: verdict {got:?}, expected {:?}",
                f.what, f.verdict
            ));
            continue;
        }
        if out != f.output {
            failures.push(format!(
                "{}: output\n  got      {:02x?}\n  expected {:02x?}",
                f.what, out, f.output
            ));
        }
        if let Some(o) = &out
            && o.len() > 42
            && frames::checksums_ok(o) != Some(true)
        {
            failures.push(format!("{}: output has a bad checksum", f.what));
        }
        let after = e.counters();
        if after.rx != before.rx + 1 {
            failures.push(format!("{}: rx not counted", f.what));
        }
        if let Verdict::Dropped(r) = got
            && after.dropped(r) != before.dropped(r) + 1
        {
            failures.push(format!("{}: drop reason not counted", f.what));
        }
        if let Verdict::Ignored(r) = got
            && after.ignored(r) != before.ignored(r) + 1
        {
            failures.push(format!("{}: ignore reason not counted", f.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tarpit_syn_ack_fields_are_right_for_every_option_length() {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    for n in [0, 4, 8, 12, 16, 20, 24, 40] {
        let mut e = engine(Setup::Tcp);
        let mut f = seg(sa(TARPIT, 22), SYN, &frames::syn_options(n), b"");
        let v = e.process(T, &mut f);
        assert_eq!(v, Verdict::TarpitSynAck { len: 54 }, "{n} option bytes");
        let out = &f[..54];
        assert_eq!(frames::checksums_ok(out), Some(true), "{n} option bytes");
        let h = PacketHeaders::from_ethernet_slice(out).unwrap();
        let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.total_len, 40);
        let Some(TransportHeader::Tcp(t)) = h.transport else {
            panic!("not TCP")
        };
        assert!(t.syn && t.ack && !t.fin && !t.rst && !t.psh);
        assert_eq!(t.acknowledgment_number, 1001);
        assert_eq!(t.header_len(), 20);
        assert_eq!(t.window_size, tarpit::DEFAULT_WINDOW);
        assert_ne!(t.sequence_number, 42);
        assert!(h.payload.slice().is_empty());
    }
}

#[test]
fn tarpit_isn_differs_between_connections_and_keys() {
    let mut e = engine(Setup::Tcp);
    let mut isns = std::collections::HashSet::new();
    for port in 40000..40100u16 {
        let mut f = frames::tcp(
            CLIENT_MAC,
            OUR,
            sa(CLIENT, port),
            sa(TARPIT, 80),
            SYN,
            1,
            0,
            &[],
            b"",
        );
        e.process(T, &mut f);
        isns.insert(u32::from_be_bytes([f[38], f[39], f[40], f[41]]));
    }
    assert_eq!(isns.len(), 100);
    let mut other = config(Setup::Tcp);
    other.isn_key = [9; 16];
    let mut e2 = Engine::new(other);
    let mut a = seg(sa(TARPIT, 80), SYN, &[], b"");
    let mut b = a.clone();
    engine(Setup::Tcp).process(T, &mut a);
    e2.process(T, &mut b);
    assert_ne!(a[38..42], b[38..42]);
}

#[test]
fn backend_mac_unknown_then_learned_releases_held_frames_in_order() {
    let mut e = engine(Setup::Fresh);
    // The engine asks for both backends first.
    let p0 = e.poll_transmit(T).unwrap();
    assert_eq!(p0.kind, TxKind::ArpProbe { backend: 0 });
    assert_eq!(
        p0.frame,
        frames::arp_request(OUR, Ipv4Addr::UNSPECIFIED, B0)
    );
    assert_eq!(
        e.poll_transmit(T).unwrap().kind,
        TxKind::ArpProbe { backend: 1 }
    );
    assert!(e.poll_transmit(T).is_none());
    let syn = seg(sa(VIP, 80), SYN, &frames::syn_options(20), b"");
    let data = seg(sa(VIP, 80), ACK | PSH, &[], b"hello");
    for f in [&syn, &data] {
        let mut b = f.clone();
        assert_eq!(
            e.process(T, &mut b),
            Verdict::Held {
                backend: CLIENT_BACKEND
            }
        );
    }
    assert_eq!(e.held_len(), 2);
    // The other backend's reply releases nothing.
    let mut r0 = frames::arp_reply(B0_MAC, B0, OUR, Ipv4Addr::UNSPECIFIED);
    assert_eq!(e.process(T, &mut r0), Verdict::Learned { backend: 0 });
    assert!(e.poll_transmit(T).is_none());
    let mut r1 = frames::arp_reply(B1_MAC, B1, OUR, Ipv4Addr::UNSPECIFIED);
    assert_eq!(e.process(T, &mut r1), Verdict::Learned { backend: 1 });
    for want in [&syn, &data] {
        let t = e.poll_transmit(T).unwrap();
        assert_eq!(
            t.kind,
            TxKind::Released {
                backend: CLIENT_BACKEND
            }
        );
        assert_eq!(t.frame, with_macs(want.clone(), CLIENT_BACKEND_MAC, OUR));
    }
    assert!(e.poll_transmit(T).is_none());
    assert_eq!(e.held_len(), 0);
    assert_eq!(e.counters().released, 2);
    assert_eq!(e.backend_mac(1), Some(B1_MAC));
}

#[test]
fn held_frames_expire_after_hold_time() {
    let mut e = engine(Setup::Fresh);
    let mut f = seg(sa(VIP, 80), SYN, &[], b"");
    e.process(T, &mut f);
    assert!(e.poll_timeout() <= Some(T), "probes are due at once");
    while e.poll_transmit(T).is_some() {}
    let hold = e.config().hold_time;
    assert_eq!(e.poll_timeout(), Some(T + Duration::from_secs(1)));
    while e.poll_transmit(T + hold).is_some() {}
    assert_eq!(e.held_len(), 0);
    assert_eq!(e.counters().hold_expired, 1);
}

#[test]
fn hold_queue_is_bounded() {
    let mut c = config(Setup::Fresh);
    c.hold_max = 3;
    let mut e = Engine::new(c);
    let verdicts: Vec<Verdict> = (0..5)
        .map(|_| e.process(T, &mut seg(sa(VIP, 80), SYN, &[], b"")))
        .collect();
    assert_eq!(verdicts[3], Verdict::Dropped(DropReason::HoldFull));
    assert_eq!(e.held_len(), 3);
    assert_eq!(e.counters().dropped(DropReason::HoldFull), 2);
}

fn client_frame(i: u32, port: u16) -> Vec<u8> {
    frames::tcp(
        CLIENT_MAC,
        OUR,
        sa(Ipv4Addr::from(0x0a01_0000 + i), port),
        sa(VIP, 80),
        ACK,
        1,
        1,
        &[],
        b"",
    )
}

fn backend_of(e: &mut Engine, i: u32, port: u16) -> Option<usize> {
    match e.process(T, &mut client_frame(i, port)) {
        Verdict::Forward { backend, .. } => Some(backend),
        _ => None,
    }
}

#[test]
fn blacklist_takes_effect_on_the_next_frame_and_moves_only_its_clients() {
    let mut c = config(Setup::Tcp);
    c.backends.push(BackendConfig {
        ip: Some(Ipv4Addr::new(10, 0, 0, 5).into()),
        weight: 0,
        available: true,
    });
    let mut e = Engine::new(c);
    for (mac, ip) in [
        (B0_MAC, B0),
        (B1_MAC, B1),
        ([2, 0, 0, 0, 0, 5], Ipv4Addr::new(10, 0, 0, 5)),
    ] {
        e.process(T, &mut frames::arp_reply(mac, ip, OUR, CLIENT));
    }
    let before: Vec<usize> = (0..2000)
        .map(|i| backend_of(&mut e, i, 1).unwrap())
        .collect();
    assert!(before.contains(&1));
    e.set_available(1, false);
    let after: Vec<usize> = (0..2000)
        .map(|i| backend_of(&mut e, i, 1).unwrap())
        .collect();
    assert!(!after.contains(&1));
    let moved_others = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| **b != 1 && b != a)
        .count();
    assert!(
        moved_others < 60,
        "{moved_others} clients of other backends moved"
    );
    e.set_available(1, true);
    let back: Vec<usize> = (0..2000)
        .map(|i| backend_of(&mut e, i, 1).unwrap())
        .collect();
    assert_eq!(back, before, "un-blacklisting restores the original table");
}

#[test]
fn all_backends_blacklisted_drops_as_no_backend() {
    let mut e = engine(Setup::Tcp);
    e.set_available(0, false);
    e.set_available(1, false);
    let mut f = seg(sa(VIP, 80), SYN, &[], b"");
    assert_eq!(
        e.process(T, &mut f),
        Verdict::Dropped(DropReason::NoBackend)
    );
}

#[test]
fn a_client_keeps_its_backend_across_ports_without_r_and_spreads_with_r() {
    let mut e = engine(Setup::Tcp);
    let first = backend_of(&mut e, 7, 1000);
    assert!((1000..1100).all(|p| backend_of(&mut e, 7, p) == first));
    let mut c = config(Setup::Tcp);
    c.per_flow = true;
    let mut r = Engine::new(c);
    for (mac, ip) in [(B0_MAC, B0), (B1_MAC, B1)] {
        r.process(T, &mut frames::arp_reply(mac, ip, OUR, CLIENT));
    }
    let set: std::collections::HashSet<_> =
        (1000..1100).map(|p| backend_of(&mut r, 7, p)).collect();
    assert_eq!(
        set.len(),
        2,
        "with -r the flows of one client use both backends"
    );
}

#[test]
fn two_engines_with_the_same_configuration_agree() {
    let mut a = engine(Setup::Tcp);
    let mut b = engine(Setup::Tcp);
    for i in 0..1000 {
        assert_eq!(backend_of(&mut a, i, 5), backend_of(&mut b, i, 5));
    }
}

#[test]
fn weights_shift_the_share_of_clients() {
    let mut c = config(Setup::Tcp);
    c.backends[1].weight = 3;
    c.backends[0].weight = 1;
    let mut e = Engine::new(c);
    for (mac, ip) in [(B0_MAC, B0), (B1_MAC, B1)] {
        e.process(T, &mut frames::arp_reply(mac, ip, OUR, CLIENT));
    }
    let on1 = (0..4000)
        .filter(|&i| backend_of(&mut e, i, 1) == Some(1))
        .count();
    assert!(
        (2800..3200).contains(&on1),
        "{on1} of 4000 on the weight-3 backend"
    );
}

#[test]
fn partial_checksum_is_completed_before_forwarding() {
    let mut e = engine(Setup::Tcp);
    let good = seg(sa(VIP, 80), ACK | PSH, &[], b"payload!");
    let mut partial = good.clone();
    // What a veth with tx offload hands over: the TCP checksum field holds only the
    // pseudo-header sum.
    partial[50..52].copy_from_slice(&[0x12, 0x34]);
    let v = e.process_meta(T, &mut partial, RxMeta { csum_partial: true });
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(partial, with_macs(good, CLIENT_BACKEND_MAC, OUR));
    let mut u = frames::udp(CLIENT_MAC, OUR, sa(CLIENT, 5), sa(VIP, 53), b"q");
    let good_u = u.clone();
    u[40..42].copy_from_slice(&[0, 0]);
    let mut eu = engine(Setup::Udp);
    eu.process_meta(T, &mut u, RxMeta { csum_partial: true });
    assert_eq!(u[12..], good_u[12..]);
}

#[test]
fn ip_fragments_of_one_datagram_go_to_the_same_backend_with_r() {
    let mut c = config(Setup::Udp);
    c.per_flow = true;
    let mut e = Engine::new(c);
    for (mac, ip) in [(B0_MAC, B0), (B1_MAC, B1)] {
        e.process(T, &mut frames::arp_reply(mac, ip, OUR, CLIENT));
    }
    let mut seen = std::collections::HashSet::new();
    for port in 1..50u16 {
        let mut first = frames::udp(CLIENT_MAC, OUR, sa(CLIENT, port), sa(VIP, 53), &[0; 64]);
        first[20..22].copy_from_slice(&0x2000u16.to_be_bytes()); // MF
        let mut later = first.clone();
        later[20..22].copy_from_slice(&0x0008u16.to_be_bytes()); // offset 64, last
        let a = e.process(T, &mut first);
        let b = e.process(T, &mut later);
        let (Verdict::Forward { backend: x, .. }, Verdict::Forward { backend: y, .. }) = (a, b)
        else {
            panic!("{a:?} {b:?}")
        };
        assert_eq!(x, y);
        seen.insert(x);
    }
    assert_eq!(seen.len(), 1, "fragments hash by address only");
}

#[test]
fn tarpit_acl_change_applies_on_the_next_frame() {
    let mut e = engine(Setup::Tcp);
    let other = Ipv4Addr::new(10, 0, 0, 201);
    let ask = || frames::arp_request(CLIENT_MAC, CLIENT, other);
    assert_eq!(
        e.process(T, &mut ask()),
        Verdict::Ignored(IgnoreReason::ArpNotOurs)
    );
    e.set_tarpit(Some(Acl {
        entries: vec![permit(other)],
    }));
    assert_eq!(e.process(T, &mut ask()), Verdict::ArpReply { len: 42 });
    e.set_tarpit(None);
    let mut syn = seg(sa(TARPIT, 80), SYN, &[], b"");
    assert_eq!(
        e.process(T, &mut syn),
        Verdict::Ignored(IgnoreReason::NotVip)
    );
}
