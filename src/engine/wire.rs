//! Byte-level helpers for the engine: fixed header offsets, big-endian reads that never panic,
//! and the Internet checksum. Pure.

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
    fn ipv4_header_checksum_matches_rfc1071_example() {
        // A classic example header (checksum field zeroed): expected 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
    }
}
