//! Byte-level helpers, defined once for the engine, the BPF models ([`crate::link::xdp`]) and
//! pen-lab: header field offsets ([`eth`], [`ipv4`](mod@ipv4), [`ipv6`], [`tcp`], [`udp`], [`arp`]), MAC
//! parsing and formatting ([`parse_mac`], [`MacText`]), big-endian reads that never panic, and
//! the Internet checksum. Pure.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// The broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// Ethernet II header length.
pub const ETH_LEN: usize = 14;
/// EtherType IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// IP protocol numbers.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Ethernet II field offsets.
pub mod eth {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const TYPE: usize = 12;
    /// Header length.
    pub const LEN: usize = super::ETH_LEN;
}

/// IPv4 header field offsets (from the IP header's start).
pub mod ipv4 {
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub const VER_IHL: usize = 0;
    /// Type of service (DSCP and ECN).
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    /// Flags (3 bits) and fragment offset (13 bits).
    pub const FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    /// Header length without options.
    pub const LEN: usize = 20;
}

/// IPv6 header field offsets.
pub mod ipv6 {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    /// Fixed header length.
    pub const LEN: usize = 40;
}

/// TCP header field offsets.
pub mod tcp {
    pub const SPORT: usize = 0;
    pub const DPORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    /// Data offset (high nibble).
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CSUM: usize = 16;
    /// Header length without options.
    pub const LEN: usize = 20;
}

/// UDP header field offsets.
pub mod udp {
    pub const SPORT: usize = 0;
    pub const DPORT: usize = 2;
    pub const LEN_FIELD: usize = 4;
    pub const CSUM: usize = 6;
    /// Header length.
    pub const LEN: usize = 8;
}

/// ARP (Ethernet/IPv4) field offsets, from the ARP header's start.
pub mod arp {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OP: usize = 6;
    /// Sender hardware and protocol address.
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    /// Target hardware and protocol address.
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
    /// Length of an Ethernet/IPv4 ARP message.
    pub const LEN: usize = 28;
}

/// Parses `aa:bb:cc:dd:ee:ff` (or `-` separated; one or two hex digits a byte).
pub fn parse_mac(s: &str) -> Result<Mac, String> {
    let bad = || format!("bad MAC address {s:?}; expected six hex bytes like 02:00:00:00:00:01");
    let mut m = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for o in m.iter_mut() {
        let p = parts.next().ok_or_else(bad)?;
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(m)
}

/// Displays a MAC address as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacText(pub Mac);

impl std::fmt::Display for MacText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &Mac) -> String {
    MacText(*m).to_string()
}

/// Big-endian u16 at `at`, or `None` past the end.
#[inline]
pub fn be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at.checked_add(2)?) {
        Some(&[x, y]) => Some(u16::from_be_bytes([x, y])),
        _ => None,
    }
}

/// Big-endian u32 at `at`, or `None` past the end.
#[inline]
pub fn be32(b: &[u8], at: usize) -> Option<u32> {
    match b.get(at..at.checked_add(4)?) {
        Some(&[a, c, d, e]) => Some(u32::from_be_bytes([a, c, d, e])),
        _ => None,
    }
}

/// IPv4 address at `at`, or `None` past the end.
#[inline]
pub fn ipv4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    be32(b, at).map(Ipv4Addr::from)
}

/// MAC address at `at`, or `None` past the end.
#[inline]
pub fn mac(b: &[u8], at: usize) -> Option<Mac> {
    let s = b.get(at..at.checked_add(6)?)?;
    let mut m = [0u8; 6];
    m.copy_from_slice(s);
    Some(m)
}

/// Writes `src` at `at` when it fits; returns whether it did.
#[inline]
pub fn put(b: &mut [u8], at: usize, src: &[u8]) -> bool {
    match at.checked_add(src.len()).and_then(|end| b.get_mut(at..end)) {
        Some(dst) => {
            dst.copy_from_slice(src);
            true
        }
        None => false,
    }
}

/// Sets destination and source MAC of an Ethernet frame (no-op on a frame shorter than 12 bytes).
#[inline]
pub fn set_macs(frame: &mut [u8], dst: Mac, src: Mac) {
    if let Some(h) = frame.get_mut(..12) {
        h[..6].copy_from_slice(&dst);
        h[6..].copy_from_slice(&src);
    }
}

/// One's-complement sum of `data` (big-endian 16-bit words, odd byte padded), unfolded.
pub fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

/// Folds a sum to 16 bits and complements it.
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The IPv4 header checksum over `header` (its checksum field must be zero).
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    fold(sum16(header, 0))
}

/// The TCP/UDP checksum over IPv4: pseudo-header (`src`, `dst`, `proto`, segment length) plus
/// `segment` (whose checksum field must be zero).
pub fn l4_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut acc = sum16(&src.octets(), 0);
    acc = sum16(&dst.octets(), acc);
    acc += u64::from(proto);
    acc += segment.len() as u64;
    fold(sum16(segment, acc))
}

/// The TCP/UDP/ICMPv6 checksum over IPv6: pseudo-header (`src`, `dst`, upper-layer length,
/// `next`) plus `segment` (whose checksum field must be zero).
pub fn l4_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, segment: &[u8]) -> u16 {
    let mut acc = sum16(&src.octets(), 0);
    acc = sum16(&dst.octets(), acc);
    acc += u64::from(next);
    acc += segment.len() as u64;
    fold(sum16(segment, acc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_none() {
        let b = [1u8, 2, 3];
        assert_eq!(be16(&b, 1), Some(0x0203));
        assert_eq!(be16(&b, 2), None);
        assert_eq!(be32(&b, 0), None);
        assert_eq!(be16(&b, usize::MAX), None);
        assert_eq!(mac(&b, 0), None);
    }

    #[test]
    fn macs_parse_and_format_round_trip() {
        let m = parse_mac("02:00:00:00:0a:FF").unwrap();
        assert_eq!(m, [2, 0, 0, 0, 0x0a, 0xff]);
        assert_eq!(fmt_mac(&m), "02:00:00:00:0a:ff");
        assert_eq!(MacText(m).to_string(), "02:00:00:00:0a:ff");
        assert_eq!(parse_mac("2-0-0-0-a-ff").unwrap(), m);
        for bad in [
            "02:00:00:00:0a",
            "02:00:00:00:0a:ff:01",
            "02:00:00:00:0a:zz",
            "",
            "020:0:0:0:0:1",
        ] {
            let e = parse_mac(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("six hex bytes"),
                "{e}"
            );
        }
    }

    /// The offsets are the ones the header layouts define (RFC 791, 8200, 9293, 768, 826).
    #[test]
    fn header_offsets_match_a_built_frame() {
        use std::net::SocketAddrV4;
        let f = crate::engine::frames::tcp(
            [2, 0, 0, 0, 0, 9],
            [2, 0, 0, 0, 0, 1],
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000),
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100), 80),
            crate::engine::frames::SYN,
            7,
            0,
            &[],
            b"",
        );
        let ip = ETH_LEN;
        let l4 = ip + ipv4::LEN;
        assert_eq!(be16(&f, eth::TYPE), Some(ETHERTYPE_IPV4));
        assert_eq!(mac(&f, eth::SRC), Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(f[ip + ipv4::PROTO], PROTO_TCP);
        assert_eq!(ipv4(&f, ip + ipv4::DST), Some(Ipv4Addr::new(10, 0, 0, 100)));
        assert_eq!(be16(&f, l4 + tcp::DPORT), Some(80));
        assert_eq!(be32(&f, l4 + tcp::SEQ), Some(7));
        let a = crate::engine::frames::arp_request(
            [2, 0, 0, 0, 0, 9],
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 100),
        );
        assert_eq!(be16(&a, ETH_LEN + arp::OP), Some(1));
        assert_eq!(
            ipv4(&a, ETH_LEN + arp::TPA),
            Some(Ipv4Addr::new(10, 0, 0, 100))
        );
    }

    #[test]
    fn ipv4_header_checksum_matches_rfc1071_example() {
        // A classic example header (checksum field zeroed): expected 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
    }
}
