//! Network-layer parsing for the engine's decision: IPv4 and IPv6 headers (with the IPv6
//! extension-header walk) into an [`L3`], and completing an offloaded L4 checksum.

use std::net::IpAddr;

use super::wire::{self, ETH_LEN, PROTO_TCP, PROTO_UDP};
use super::{DropReason, ndp};

/// The parsed network-layer facts the decision needs (IPv4 or IPv6).
pub(super) struct L3 {
    pub(super) v6: bool,
    /// Offset of the transport header in the frame.
    pub(super) l4: usize,
    /// Transport header + payload length (from the IP header).
    pub(super) l4_len: usize,
    pub(super) proto: u8,
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    /// Not the first fragment: no transport header in this frame.
    pub(super) later_fragment: bool,
    /// Any fragment (first or later).
    pub(super) fragment: bool,
    /// IPv4 type of service (the tarpit copies it).
    pub(super) tos: u8,
}

/// Why an IPv6 frame could not be parsed.
pub(super) enum V6Error {
    Drop(DropReason),
    /// An extension header chain the engine does not walk.
    Unhandled,
}

pub(super) fn parse_ipv4(frame: &[u8]) -> Result<L3, DropReason> {
    let Some(&vihl) = frame.get(ETH_LEN) else {
        return Err(DropReason::Truncated);
    };
    if frame.len() < ETH_LEN + wire::ipv4::LEN {
        return Err(DropReason::Truncated);
    }
    if vihl >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < wire::ipv4::LEN {
        return Err(DropReason::Malformed);
    }
    let (Some(total), Some(frag), Some(&proto), Some(src), Some(dst), Some(&tos)) = (
        wire::be16(frame, ETH_LEN + wire::ipv4::TOTAL_LEN),
        wire::be16(frame, ETH_LEN + wire::ipv4::FRAG),
        frame.get(ETH_LEN + wire::ipv4::PROTO),
        wire::ipv4(frame, ETH_LEN + wire::ipv4::SRC),
        wire::ipv4(frame, ETH_LEN + wire::ipv4::DST),
        frame.get(ETH_LEN + wire::ipv4::TOS),
    ) else {
        return Err(DropReason::Truncated);
    };
    let total = usize::from(total);
    if total < ihl {
        return Err(DropReason::Malformed);
    }
    if frame.len() < ETH_LEN + total {
        return Err(DropReason::Truncated);
    }
    let offset = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    Ok(L3 {
        v6: false,
        l4: ETH_LEN + ihl,
        l4_len: total - ihl,
        proto,
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        later_fragment: offset != 0,
        fragment: offset != 0 || more,
        tos,
    })
}

/// Parses the IPv6 header and walks hop-by-hop (0), routing (43), fragment (44) and
/// destination-options (60) headers to the transport header.
pub(super) fn parse_ipv6(frame: &[u8]) -> Result<L3, V6Error> {
    let Some(&v) = frame.get(ETH_LEN) else {
        return Err(V6Error::Drop(DropReason::Truncated));
    };
    if frame.len() < ETH_LEN + ndp::IPV6_LEN {
        return Err(V6Error::Drop(DropReason::Truncated));
    }
    if v >> 4 != 6 {
        return Err(V6Error::Drop(DropReason::Malformed));
    }
    let (Some(plen), Some(&first), Some(src), Some(dst)) = (
        wire::be16(frame, ETH_LEN + wire::ipv6::PAYLOAD_LEN),
        frame.get(ETH_LEN + wire::ipv6::NEXT),
        ndp::ipv6(frame, ETH_LEN + wire::ipv6::SRC),
        ndp::ipv6(frame, ETH_LEN + wire::ipv6::DST),
    ) else {
        return Err(V6Error::Drop(DropReason::Truncated));
    };
    let end = ETH_LEN + ndp::IPV6_LEN + usize::from(plen);
    if frame.len() < end {
        return Err(V6Error::Drop(DropReason::Truncated));
    }
    // The transport header at `at` (or, for a later fragment, where the chain stopped).
    let found = |at: usize, proto: u8, later_fragment: bool, fragment: bool| L3 {
        v6: true,
        l4: at,
        l4_len: end - at,
        proto,
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        later_fragment,
        fragment,
        tos: 0,
    };
    let (mut next, mut at) = (first, ETH_LEN + ndp::IPV6_LEN);
    let (mut fragment, mut later_fragment) = (false, false);
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let (Some(&nh), Some(&units)) = (frame.get(at), frame.get(at + 1)) else {
                    return Err(V6Error::Drop(DropReason::Truncated));
                };
                let len = (usize::from(units) + 1) * 8;
                if at + len > end {
                    return Err(V6Error::Drop(DropReason::Truncated));
                }
                next = nh;
                at += len;
            }
            44 => {
                let (Some(&nh), Some(off)) = (frame.get(at), wire::be16(frame, at + 2)) else {
                    return Err(V6Error::Drop(DropReason::Truncated));
                };
                if at + 8 > end {
                    return Err(V6Error::Drop(DropReason::Truncated));
                }
                fragment = true;
                later_fragment = off >> 3 != 0;
                next = nh;
                at += 8;
                if later_fragment {
                    break;
                }
            }
            _ => {
                return Ok(found(at, next, later_fragment, fragment));
            }
        }
    }
    if later_fragment {
        return Ok(found(at, next, later_fragment, fragment));
    }
    Err(V6Error::Unhandled)
}

/// Recomputes the TCP/UDP checksum of an unfragmented frame in full (for frames whose
/// checksum the sender's NIC was supposed to finish).
pub(super) fn complete_l4_checksum(frame: &mut [u8], ip: &L3) {
    let off = match ip.proto {
        PROTO_TCP => wire::tcp::CSUM,
        PROTO_UDP => wire::udp::CSUM,
        _ => return,
    };
    let Some(seg) = ip
        .l4
        .checked_add(ip.l4_len)
        .and_then(|end| frame.get_mut(ip.l4..end))
    else {
        return;
    };
    if !wire::put(seg, off, &[0, 0]) {
        return;
    }
    let mut c = match (ip.src, ip.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => wire::l4_checksum_v4(s, d, ip.proto, seg),
        (IpAddr::V6(s), IpAddr::V6(d)) => wire::l4_checksum_v6(s, d, ip.proto, seg),
        _ => return,
    };
    if ip.proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    wire::put(seg, off, &c.to_be_bytes());
}
