//! ARP for Ethernet/IPv4 (RFC 826): parse, answer in place, build probes. Pure.

use std::net::Ipv4Addr;

use super::wire::arp::{HLEN, HTYPE, OP, PLEN, PTYPE, SHA, SPA, THA, TPA};
use super::wire::{self, BROADCAST, ETH_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, Mac, eth};

/// Length of an Ethernet/IPv4 ARP body.
pub const ARP_LEN: usize = wire::arp::LEN;
/// Length of the probes the engine sends (no padding, as C Pen's).
pub const PROBE_LEN: usize = ETH_LEN + ARP_LEN;

pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// The fields of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

/// Why an ARP body was not parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpError {
    /// Fewer than 28 bytes after the Ethernet header.
    Truncated,
    /// Not hardware type 1 / protocol IPv4 / lengths 6 and 4 (ARP for other networks).
    NotEthernetIpv4,
}

/// Parses the ARP body that follows a 14-byte Ethernet header.
pub fn parse(frame: &[u8]) -> Result<Arp, ArpError> {
    let b = frame
        .get(ETH_LEN..ETH_LEN + ARP_LEN)
        .ok_or(ArpError::Truncated)?;
    if wire::be16(b, HTYPE) != Some(1)
        || wire::be16(b, PTYPE) != Some(ETHERTYPE_IPV4)
        || b.get(HLEN) != Some(&6)
        || b.get(PLEN) != Some(&4)
    {
        return Err(ArpError::NotEthernetIpv4);
    }
    let (Some(op), Some(sha), Some(spa), Some(tha), Some(tpa)) = (
        wire::be16(b, OP),
        wire::mac(b, SHA),
        wire::ipv4(b, SPA),
        wire::mac(b, THA),
        wire::ipv4(b, TPA),
    ) else {
        return Err(ArpError::Truncated);
    };
    Ok(Arp {
        op,
        sender_mac: sha,
        sender_ip: spa,
        target_mac: tha,
        target_ip: tpa,
    })
}

/// Turns the request `req` (already parsed from `frame`) into a reply in place: to the
/// requester's MAC, from `our_mac`, saying `req.target_ip` is at `our_mac`. The frame keeps its
/// length (padding included). Returns that length.
pub fn answer_in_place(frame: &mut [u8], req: &Arp, our_mac: Mac) -> usize {
    wire::set_macs(frame, req.sender_mac, our_mac);
    if let Some(b) = frame.get_mut(ETH_LEN..ETH_LEN + ARP_LEN) {
        b[OP..OP + 2].copy_from_slice(&OP_REPLY.to_be_bytes());
        b[SHA..SHA + 6].copy_from_slice(&our_mac);
        b[SPA..SPA + 4].copy_from_slice(&req.target_ip.octets());
        b[THA..THA + 6].copy_from_slice(&req.sender_mac);
        b[TPA..TPA + 4].copy_from_slice(&req.sender_ip.octets());
    }
    frame.len()
}

/// A broadcast who-has probe for `target` from `our_mac` with sender IP 0.0.0.0 (the DSR
/// interface has no address; RFC 5227 probe style, as C Pen).
pub fn probe(our_mac: Mac, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; PROBE_LEN];
    wire::set_macs(&mut f, BROADCAST, our_mac);
    f[eth::TYPE..eth::TYPE + 2].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let b = &mut f[ETH_LEN..];
    b[HTYPE..HTYPE + 2].copy_from_slice(&1u16.to_be_bytes());
    b[PTYPE..PTYPE + 2].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    b[HLEN] = 6;
    b[PLEN] = 4;
    b[OP..OP + 2].copy_from_slice(&OP_REQUEST.to_be_bytes());
    b[SHA..SHA + 6].copy_from_slice(&our_mac);
    // sender IP 0.0.0.0 and target MAC 00:00:00:00:00:00 are already zero
    b[TPA..TPA + 4].copy_from_slice(&target.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_parses_back() {
        let mac = [2, 0, 0, 0, 0, 1];
        let p = probe(mac, Ipv4Addr::new(10, 0, 0, 3));
        let a = parse(&p).unwrap();
        assert_eq!(a.op, OP_REQUEST);
        assert_eq!(a.sender_mac, mac);
        assert_eq!(a.sender_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(a.target_ip, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(&p[..6], &BROADCAST);
    }

    #[test]
    fn short_or_foreign_arp_is_rejected() {
        let p = probe([2; 6], Ipv4Addr::LOCALHOST);
        assert_eq!(parse(&p[..40]), Err(ArpError::Truncated));
        let mut q = p.clone();
        q[ETH_LEN + 1] = 6; // hardware type 6 (IEEE 802)
        assert_eq!(parse(&q), Err(ArpError::NotEthernetIpv4));
    }
}
