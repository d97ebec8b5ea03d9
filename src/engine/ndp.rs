//! IPv6 Neighbor Discovery (RFC 4861) for the engine, in place of ARP: parse solicitations and
//! advertisements, answer a solicitation in place, build solicitations for backends. Pure.

use std::net::Ipv6Addr;

use super::wire::{self, ETH_LEN, ETHERTYPE_IPV6, Mac};

/// IPv6 next header: ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
pub const NEIGHBOR_SOLICITATION: u8 = 135;
pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
/// IPv6 header length.
pub const IPV6_LEN: usize = super::wire::ipv6::LEN;
/// A solicitation or advertisement with one link-layer address option.
pub const ND_FRAME_LEN: usize = ETH_LEN + IPV6_LEN + nd::LEN + nd::LL_OPT_LEN;

/// Offsets in a neighbor solicitation or advertisement (RFC 4861 4.3, 4.4), from the start of
/// the ICMPv6 message, and of its link-layer address option (4.6.1).
mod nd {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CSUM: usize = 2;
    /// Router, solicited and override flags of an advertisement (reserved in a solicitation).
    pub const FLAGS: usize = 4;
    pub const TARGET: usize = 8;
    /// The fixed part; options follow.
    pub const LEN: usize = 24;
    /// A link-layer address option: type, length in units of 8 bytes, the MAC.
    pub const OPT_TYPE: usize = 0;
    pub const OPT_UNITS: usize = 1;
    pub const OPT_MAC: usize = 2;
    pub const LL_OPT_LEN: usize = 8;
}
/// Solicited and override flags of an advertisement.
const NA_SOLICITED_OVERRIDE: u8 = 0x60;

/// A parsed neighbor solicitation or advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nd {
    /// [`NEIGHBOR_SOLICITATION`] or [`NEIGHBOR_ADVERTISEMENT`].
    pub kind: u8,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    /// The source (NS) or target (NA) link-layer address option, when present.
    pub ll: Option<Mac>,
}

/// Parses an NS/NA whose ICMPv6 message starts at `icmp` (after the IPv6 header) and runs to
/// `end`. `None` when it is not a valid one (hop limit not 255, code not 0, too short, bad
/// option length): such a message is ignored.
pub fn parse(frame: &[u8], icmp: usize, end: usize) -> Option<Nd> {
    let msg = frame.get(icmp..end)?;
    let kind = *msg.get(nd::TYPE)?;
    if !(kind == NEIGHBOR_SOLICITATION || kind == NEIGHBOR_ADVERTISEMENT)
        || msg.get(nd::CODE) != Some(&0)
        || msg.len() < nd::LEN
        || frame.get(ETH_LEN + wire::ipv6::HOP_LIMIT) != Some(&255)
    {
        return None;
    }
    let src = ipv6(frame, ETH_LEN + wire::ipv6::SRC)?;
    let dst = ipv6(frame, ETH_LEN + wire::ipv6::DST)?;
    let target = ipv6(msg, nd::TARGET)?;
    let want = if kind == NEIGHBOR_SOLICITATION {
        OPT_SOURCE_LL
    } else {
        OPT_TARGET_LL
    };
    let mut ll = None;
    let mut at = nd::LEN;
    while at + nd::OPT_MAC <= msg.len() {
        let (t, l) = (
            msg[at + nd::OPT_TYPE],
            usize::from(msg[at + nd::OPT_UNITS]) * 8,
        );
        if l == 0 {
            return None;
        }
        if t == want && l == 8 {
            ll = wire::mac(msg, at + nd::OPT_MAC);
        }
        at += l;
    }
    Some(Nd {
        kind,
        src,
        dst,
        target,
        ll,
    })
}

/// IPv6 address at `at`.
pub fn ipv6(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let s = b.get(at..at.checked_add(16)?)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(s);
    Some(Ipv6Addr::from(a))
}

/// The ICMPv6 checksum of `msg` (checksum field zero) between `src` and `dst`.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    wire::l4_checksum_v6(src, dst, PROTO_ICMPV6, msg)
}

/// Turns the solicitation `ns` in `frame` into a solicited advertisement for `ns.target` with
/// `our_mac`, in place. The target link-layer address option is included when the buffer has
/// room for it (always, when the solicitation carried its source's address; a unicast NUD
/// probe without one gets the shorter answer RFC 4861 §7.2.4 allows). Returns the new length,
/// or `None` when the buffer is too short for any answer.
pub fn answer_in_place(frame: &mut [u8], ns: &Nd, eth_src: Mac, our_mac: Mac) -> Option<usize> {
    let with_option = frame.len() >= ND_FRAME_LEN;
    let len = if with_option {
        ND_FRAME_LEN
    } else {
        ND_FRAME_LEN - 8
    };
    let out = frame.get_mut(..len)?;
    let to = ns.ll.unwrap_or(eth_src);
    wire::set_macs(out, to, our_mac);
    out[super::wire::eth::TYPE..super::wire::eth::TYPE + 2]
        .copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let icmp_len = len - ETH_LEN - IPV6_LEN;
    write_ipv6_header(
        &mut out[ETH_LEN..ETH_LEN + IPV6_LEN],
        icmp_len as u16,
        PROTO_ICMPV6,
        255,
        ns.target,
        ns.src,
    );
    let m = &mut out[ETH_LEN + IPV6_LEN..];
    m.fill(0);
    m[nd::TYPE] = NEIGHBOR_ADVERTISEMENT;
    m[nd::FLAGS] = NA_SOLICITED_OVERRIDE;
    m[nd::TARGET..nd::LEN].copy_from_slice(&ns.target.octets());
    if with_option {
        write_ll_option(&mut m[nd::LEN..], OPT_TARGET_LL, our_mac);
    }
    let c = icmpv6_checksum(ns.target, ns.src, m);
    m[nd::CSUM..nd::CSUM + 2].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

/// Writes a 40-byte IPv6 header (traffic class and flow label 0).
pub fn write_ipv6_header(
    h: &mut [u8],
    payload_len: u16,
    next: u8,
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) {
    if h.len() < IPV6_LEN {
        return;
    }
    // Version 6, traffic class and flow label 0.
    h[..wire::ipv6::PAYLOAD_LEN].copy_from_slice(&[0x60, 0, 0, 0]);
    h[wire::ipv6::PAYLOAD_LEN..wire::ipv6::NEXT].copy_from_slice(&payload_len.to_be_bytes());
    h[wire::ipv6::NEXT] = next;
    h[wire::ipv6::HOP_LIMIT] = hop_limit;
    h[wire::ipv6::SRC..wire::ipv6::DST].copy_from_slice(&src.octets());
    h[wire::ipv6::DST..IPV6_LEN].copy_from_slice(&dst.octets());
}

/// Writes a link-layer address option of type `kind` carrying `mac` at the start of `o`.
fn write_ll_option(o: &mut [u8], kind: u8, mac: Mac) {
    if let Some(o) = o.get_mut(..nd::LL_OPT_LEN) {
        o[nd::OPT_TYPE] = kind;
        o[nd::OPT_UNITS] = 1;
        o[nd::OPT_MAC..].copy_from_slice(&mac);
    }
}

/// The EUI-64 link-local address of `mac` (the engine's source for its solicitations; the DSR
/// interface has no address of its own).
pub fn link_local(mac: Mac) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// The solicited-node multicast address of `a` and its Ethernet multicast MAC.
pub fn solicited_node(a: Ipv6Addr) -> (Ipv6Addr, Mac) {
    let o = a.octets();
    let ip = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ]);
    (ip, [0x33, 0x33, 0xff, o[13], o[14], o[15]])
}

/// A neighbor solicitation for `target` from our link-local address with our MAC as source
/// link-layer address option, to the target's solicited-node multicast group.
pub fn probe(our_mac: Mac, target: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0u8; ND_FRAME_LEN];
    let (group, group_mac) = solicited_node(target);
    let src = link_local(our_mac);
    wire::set_macs(&mut f, group_mac, our_mac);
    f[super::wire::eth::TYPE..super::wire::eth::TYPE + 2]
        .copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    write_ipv6_header(
        &mut f[ETH_LEN..ETH_LEN + IPV6_LEN],
        32,
        PROTO_ICMPV6,
        255,
        src,
        group,
    );
    let m = &mut f[ETH_LEN + IPV6_LEN..];
    m[nd::TYPE] = NEIGHBOR_SOLICITATION;
    m[nd::TARGET..nd::LEN].copy_from_slice(&target.octets());
    write_ll_option(&mut m[nd::LEN..], OPT_SOURCE_LL, our_mac);
    let c = icmpv6_checksum(src, group, m);
    m[nd::CSUM..nd::CSUM + 2].copy_from_slice(&c.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];

    #[test]
    fn probe_parses_back_as_a_solicitation_with_our_mac() {
        let t: Ipv6Addr = "fd00::3".parse().unwrap();
        let p = probe(MAC, t);
        let nd = parse(&p, ETH_LEN + IPV6_LEN, p.len()).unwrap();
        assert_eq!(nd.kind, NEIGHBOR_SOLICITATION);
        assert_eq!(nd.target, t);
        assert_eq!(nd.ll, Some(MAC));
        assert_eq!(nd.src, "fe80::ff:fe00:1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(nd.dst, "ff02::1:ff00:3".parse::<Ipv6Addr>().unwrap());
        assert_eq!(&p[..6], &[0x33, 0x33, 0xff, 0, 0, 3]);
        let m = &p[ETH_LEN + IPV6_LEN..];
        let mut z = m.to_vec();
        z[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(
            icmpv6_checksum(nd.src, nd.dst, &z).to_be_bytes(),
            [m[2], m[3]]
        );
    }

    #[test]
    fn hop_limit_other_than_255_is_not_neighbor_discovery() {
        let mut p = probe(MAC, "fd00::3".parse().unwrap());
        p[ETH_LEN + 7] = 64;
        assert!(parse(&p, ETH_LEN + IPV6_LEN, p.len()).is_none());
    }

    #[test]
    fn zero_length_option_is_rejected() {
        let mut p = probe(MAC, "fd00::3".parse().unwrap());
        p[ETH_LEN + IPV6_LEN + 25] = 0;
        assert!(parse(&p, ETH_LEN + IPV6_LEN, p.len()).is_none());
    }
}
