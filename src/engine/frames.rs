//! Frame builders for tests, benchmarks, fixtures and the fuzz target (etherparse underneath,
//! so they are an oracle independent of the engine's own byte handling). Pure.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep};

use super::wire::{ETH_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, Mac};

/// TCP flag bits.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Options of a typical SYN with `n` bytes of options (`n` = 0, 4, 8, 12, ..., 40): MSS first,
/// then SACK-permitted, timestamps and window scale as Linux sends them, NOP-padded.
pub fn syn_options(n: usize) -> Vec<u8> {
    // MSS 1460 | SACK-perm, TS(10 bytes) | NOP, WS 7 ... then NOPs up to n.
    let full: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    let mut v: Vec<u8> = full.iter().copied().take(n.min(20)).collect();
    // keep only whole options when cutting: pad the tail with NOPs where an option was cut
    match n {
        0 | 4 | 20 => {}
        8 => v[4..8].copy_from_slice(&[1, 1, 4, 2]),
        12 => v[4..12].copy_from_slice(&[1, 1, 4, 2, 1, 3, 3, 7]),
        16 => v[4..16].copy_from_slice(&[4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0]),
        _ => {}
    }
    v.resize(n.max(v.len()), 1);
    v.truncate(n);
    v
}

/// A TCP/IPv4 frame. `flags` is a combination of [`SYN`], [`ACK`], [`FIN`], [`RST`], [`PSH`];
/// `ack` is used when [`ACK`] is set; `options` must be a multiple of 4 bytes (at most 40).
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src_mac: Mac,
    dst_mac: Mac,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: u8,
    seq: u32,
    ack: u32,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let ip =
        PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src.ip().octets(), dst.ip().octets(), 64);
    tcp_on(
        ip,
        (src.port(), dst.port()),
        flags,
        seq,
        ack,
        options,
        payload,
    )
}

/// The TCP part of [`tcp`] and [`tcp6`], on top of an Ethernet + IP builder step.
#[allow(clippy::too_many_arguments)]
fn tcp_on(
    ip: PacketBuilderStep<IpHeaders>,
    (sport, dport): (u16, u16),
    flags: u8,
    seq: u32,
    ack: u32,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut b = ip.tcp(sport, dport, seq, 64240);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(ack);
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    if !options.is_empty() {
        // Invalid option lengths (not a multiple of 4, over 40) give an empty frame.
        let Ok(with) = b.options_raw(options) else {
            return Vec::new();
        };
        b = with;
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    // Writing into a Vec cannot fail for lengths this small.
    let _ = b.write(&mut out, payload);
    out
}

/// A UDP/IPv4 frame.
pub fn udp(
    src_mac: Mac,
    dst_mac: Mac,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let ip =
        PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src.ip().octets(), dst.ip().octets(), 64);
    udp_on(ip, (src.port(), dst.port()), payload)
}

/// The UDP part of [`udp`] and [`udp6`], on top of an Ethernet + IP builder step.
fn udp_on(ip: PacketBuilderStep<IpHeaders>, (sport, dport): (u16, u16), payload: &[u8]) -> Vec<u8> {
    let b = ip.udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    let _ = b.write(&mut out, payload);
    out
}

/// An Ethernet/IPv4 ARP frame (`op` 1 request, 2 reply), 42 bytes.
#[allow(clippy::too_many_arguments)]
pub fn arp(
    eth_src: Mac,
    eth_dst: Mac,
    op: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_LEN + 28);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// A broadcast ARP request from `sha`/`spa` for `tpa`.
pub fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp(sha, [0xff; 6], 1, sha, spa, [0; 6], tpa)
}

/// An ARP reply from `sha`/`spa` to `tha`/`tpa`.
pub fn arp_reply(sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    arp(sha, tha, 2, sha, spa, tha, tpa)
}

/// Are the checksums of `frame` correct: IPv4 header and TCP/UDP, or TCP/UDP/ICMPv6 over
/// IPv6? `None` when the frame is none of these (etherparse decides, not the engine).
pub fn checksums_ok(frame: &[u8]) -> Option<bool> {
    use etherparse::{NetHeaders, PacketHeaders, SlicedPacket, TransportHeader, TransportSlice};
    let h = PacketHeaders::from_ethernet_slice(frame).ok()?;
    let payload = h.payload.slice();
    match (&h.net, &h.transport) {
        (Some(NetHeaders::Ipv4(ip, _)), Some(t)) => {
            let ip_ok = ip.header_checksum == ip.calc_header_checksum();
            let l4_ok = match t {
                TransportHeader::Tcp(t) => t.calc_checksum_ipv4(ip, payload).ok()? == t.checksum,
                TransportHeader::Udp(u) => u.calc_checksum_ipv4(ip, payload).ok()? == u.checksum,
                _ => return None,
            };
            Some(ip_ok && l4_ok)
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(t)) => match t {
            TransportHeader::Tcp(t) => Some(t.calc_checksum_ipv6(ip, payload).ok()? == t.checksum),
            TransportHeader::Udp(u) => Some(u.calc_checksum_ipv6(ip, payload).ok()? == u.checksum),
            TransportHeader::Icmpv6(_) => {
                match SlicedPacket::from_ethernet(frame).ok()?.transport {
                    Some(TransportSlice::Icmpv6(i)) => {
                        Some(i.is_checksum_valid(ip.source, ip.destination))
                    }
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    }
}

/// A TCP/IPv6 frame (hop limit 64), as [`tcp`].
#[allow(clippy::too_many_arguments)]
pub fn tcp6(
    src_mac: Mac,
    dst_mac: Mac,
    src: SocketAddrV6,
    dst: SocketAddrV6,
    flags: u8,
    seq: u32,
    ack: u32,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let ip =
        PacketBuilder::ethernet2(src_mac, dst_mac).ipv6(src.ip().octets(), dst.ip().octets(), 64);
    tcp_on(
        ip,
        (src.port(), dst.port()),
        flags,
        seq,
        ack,
        options,
        payload,
    )
}

/// A UDP/IPv6 frame.
pub fn udp6(
    src_mac: Mac,
    dst_mac: Mac,
    src: SocketAddrV6,
    dst: SocketAddrV6,
    payload: &[u8],
) -> Vec<u8> {
    let ip =
        PacketBuilder::ethernet2(src_mac, dst_mac).ipv6(src.ip().octets(), dst.ip().octets(), 64);
    udp_on(ip, (src.port(), dst.port()), payload)
}

/// A neighbor solicitation (`advert` false) or solicited advertisement (`advert` true, flags
/// S and O) for `target`, hop limit 255, with a link-layer address option carrying `ll` when
/// given. The ICMPv6 checksum is computed by etherparse.
#[allow(clippy::too_many_arguments)]
pub fn nd(
    eth_src: Mac,
    eth_dst: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    advert: bool,
    target: Ipv6Addr,
    ll: Option<Mac>,
) -> Vec<u8> {
    use etherparse::Icmpv6Type;
    use etherparse::icmpv6::NeighborAdvertisementHeader;
    let mut body = Vec::with_capacity(24);
    body.extend_from_slice(&target.octets());
    if let Some(m) = ll {
        body.extend_from_slice(&[if advert { 2 } else { 1 }, 1]);
        body.extend_from_slice(&m);
    }
    let t = if advert {
        Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
            router: false,
            solicited: true,
            r#override: true,
        })
    } else {
        Icmpv6Type::NeighborSolicitation
    };
    let b = PacketBuilder::ethernet2(eth_src, eth_dst)
        .ipv6(src.octets(), dst.octets(), 255)
        .icmpv6(t);
    let mut out = Vec::with_capacity(b.size(body.len()));
    let _ = b.write(&mut out, &body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_options_have_the_requested_length() {
        for n in [0, 4, 8, 12, 16, 20, 24, 40] {
            assert_eq!(syn_options(n).len(), n);
        }
    }

    #[test]
    fn built_tcp_frame_has_valid_checksums() {
        let f = tcp(
            [2; 6],
            [4; 6],
            "10.0.0.2:4000".parse().unwrap(),
            "10.0.0.100:80".parse().unwrap(),
            SYN,
            7,
            0,
            &syn_options(20),
            b"",
        );
        assert_eq!(f.len(), 14 + 20 + 40);
        assert_eq!(checksums_ok(&f), Some(true));
    }
}
