//! The tarpit's SYN+ACK (reference §11). Pure: the ISN key is an input, nothing random here.
//!
//! A SYN to a tarpitted address is turned, in place, into a 54-byte SYN+ACK:
//! - Ethernet: to the SYN's sender, from our MAC;
//! - IPv4: 20-byte header (IP options dropped), total length 40, DF, TTL 64, addresses
//!   swapped, correct header checksum;
//! - TCP: ports swapped, `seq` = [`isn`] (SipHash-2-4 of the 4-tuple under the engine's key),
//!   `ack` = the SYN's `seq + 1`, data offset 5 (every option removed), flags SYN+ACK, a small
//!   window, urgent 0, correct checksum.
//!
//! Deliberate differences from C Pen, whose reply keeps the SYN's length (options zeroed but
//! left as payload), sums its checksum as if the segment were always 40 bytes long (wrong for
//! any SYN without exactly 20 option bytes), uses the constant ISN 42 and echoes the client's
//! window: here the reply is correct for any option length and the ISN is unpredictable
//! without the key while staying stateless.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::wire::{self, ETH_LEN, Mac};

/// Length of the SYN+ACK frame the tarpit sends.
pub const SYN_ACK_LEN: usize = ETH_LEN + wire::ipv4::LEN + wire::tcp::LEN;
/// The TCP flags byte of a SYN+ACK.
const SYN_ACK_FLAGS: u8 = 0x12;

/// Default advertised window of the tarpit's SYN+ACK: small, so a client trickles its data.
pub const DEFAULT_WINDOW: u16 = 16;

/// SipHash-2-4 of `data` under `key` (Aumasson & Bernstein), little-endian key and result.
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let mut k0b = [0u8; 8];
    let mut k1b = [0u8; 8];
    k0b.copy_from_slice(&key[..8]);
    k1b.copy_from_slice(&key[8..]);
    let (k0, k1) = (u64::from_le_bytes(k0b), u64::from_le_bytes(k1b));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let m = u64::from_le_bytes(b);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The tarpit's initial sequence number for a SYN from `client:cport` to `server:sport`.
pub fn isn(key: &[u8; 16], client: Ipv4Addr, server: Ipv4Addr, cport: u16, sport: u16) -> u32 {
    let mut m = [0u8; 12];
    m[..4].copy_from_slice(&client.octets());
    m[4..8].copy_from_slice(&server.octets());
    m[8..10].copy_from_slice(&cport.to_be_bytes());
    m[10..].copy_from_slice(&sport.to_be_bytes());
    siphash24(key, &m) as u32
}

/// The tarpit's initial sequence number for an IPv6 SYN.
pub fn isn_v6(key: &[u8; 16], client: Ipv6Addr, server: Ipv6Addr, cport: u16, sport: u16) -> u32 {
    let mut m = [0u8; 36];
    m[..16].copy_from_slice(&client.octets());
    m[16..32].copy_from_slice(&server.octets());
    m[32..34].copy_from_slice(&cport.to_be_bytes());
    m[34..].copy_from_slice(&sport.to_be_bytes());
    siphash24(key, &m) as u32
}

/// Length of the IPv6 SYN+ACK frame.
pub const SYN_ACK_V6_LEN: usize = ETH_LEN + wire::ipv6::LEN + wire::tcp::LEN;

/// An IPv6 SYN to a tarpitted address.
#[derive(Debug, Clone, Copy)]
pub struct Syn6 {
    pub client_mac: Mac,
    pub client: Ipv6Addr,
    pub server: Ipv6Addr,
    pub cport: u16,
    pub sport: u16,
    pub seq: u32,
}

/// Writes the IPv6 SYN+ACK answering `syn` (hop limit 64, no extension headers, options
/// removed) and returns its length, or `None` when `buf` is shorter than [`SYN_ACK_V6_LEN`].
pub fn write_syn_ack_v6(
    buf: &mut [u8],
    syn: &Syn6,
    our_mac: Mac,
    key: &[u8; 16],
    window: u16,
) -> Option<usize> {
    let seg = Segment {
        client_mac: syn.client_mac,
        client: syn.client.into(),
        server: syn.server.into(),
        cport: syn.cport,
        sport: syn.sport,
        seq: isn_v6(key, syn.client, syn.server, syn.cport, syn.sport),
        ack: syn.seq.wrapping_add(1),
        flags: SYN_ACK_FLAGS,
        window,
        tos: 0,
    };
    write_segment(buf, &seg, our_mac)
}

/// What the SYN+ACK is built from (read from the SYN before the buffer is overwritten).
#[derive(Debug, Clone, Copy)]
pub struct Syn {
    pub client_mac: Mac,
    pub client: Ipv4Addr,
    pub server: Ipv4Addr,
    pub cport: u16,
    pub sport: u16,
    pub seq: u32,
    pub tos: u8,
}

/// Writes the SYN+ACK answering `syn` into `buf` and returns its length, or `None` when `buf`
/// is shorter than [`SYN_ACK_LEN`] (a SYN frame never is: it has at least 54 bytes).
pub fn write_syn_ack(
    buf: &mut [u8],
    syn: &Syn,
    our_mac: Mac,
    key: &[u8; 16],
    window: u16,
) -> Option<usize> {
    let seg = Segment {
        client_mac: syn.client_mac,
        client: syn.client.into(),
        server: syn.server.into(),
        cport: syn.cport,
        sport: syn.sport,
        seq: isn(key, syn.client, syn.server, syn.cport, syn.sport),
        ack: syn.seq.wrapping_add(1),
        flags: SYN_ACK_FLAGS,
        window,
        tos: syn.tos,
    };
    write_segment(buf, &seg, our_mac)
}

/// The persist-mode ISN for a SYN with sequence number `client_isn`: the keyed ISN of the
/// 4-tuple XOR the client's ISN. Every later segment of the connection carries it back in its
/// acknowledgment number (the tarpit never sends data, so the client's `ack` stays ISN + 1),
/// which gives back the client's ISN without keeping state: see [`persist_ack`].
pub fn persist_isn(tuple_isn: u32, client_isn: u32) -> u32 {
    tuple_isn ^ client_isn
}

/// What the tarpit answers a segment of a held (persist-mode) connection with, or `None` when
/// the segment is not one of its connections.
///
/// `tuple_isn` is [`isn`]/[`isn_v6`] of the segment's 4-tuple, `seq`/`ack` the segment's
/// sequence and acknowledgment numbers, `data_len` its payload length. The client's ISN is
/// `(ack - 1) XOR tuple_isn`; since the tarpit accepts no data, the client's first unacknowledged
/// byte stays ISN + 1, so a segment of the connection has `seq` = ISN + 1 (its handshake ACK,
/// data, or a zero-window probe carrying one byte, as BSD and Windows send) or `seq` = ISN
/// (Linux's zero-window probe: no data, one below the next byte). Anything else is not ours
/// (a 2^-31 chance for a forged segment). The answer's sequence number is our ISN + 1 (the
/// segment's `ack`) and its acknowledgment the client's ISN + 1: it acknowledges nothing new
/// and so resets the client's probe count without opening the window.
pub fn persist_ack(tuple_isn: u32, seq: u32, ack: u32, data_len: usize) -> Option<PersistAck> {
    let our_isn = ack.wrapping_sub(1);
    let client_isn = our_isn ^ tuple_isn;
    let next = client_isn.wrapping_add(1);
    let kind = if seq == next && data_len == 0 {
        SegmentKind::Ack
    } else if seq == next || (seq == client_isn && data_len == 0) {
        SegmentKind::Probe
    } else {
        return None;
    };
    Some(PersistAck {
        seq: ack,
        ack: next,
        kind,
    })
}

/// A held connection's segment, as [`persist_ack`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// A bare ACK at the next sequence number: the handshake's last segment.
    Ack,
    /// A zero-window probe or data: the client keeps trying.
    Probe,
}

/// The answer [`persist_ack`] computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistAck {
    pub seq: u32,
    pub ack: u32,
    pub kind: SegmentKind,
}

/// One TCP segment the tarpit sends (no options, no data), IPv4 or IPv6.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub client_mac: Mac,
    pub client: std::net::IpAddr,
    pub server: std::net::IpAddr,
    pub cport: u16,
    pub sport: u16,
    pub seq: u32,
    pub ack: u32,
    /// TCP flags byte (e.g. `0x12` SYN+ACK, `0x10` ACK).
    pub flags: u8,
    pub window: u16,
    /// IPv4 type of service (ignored for IPv6).
    pub tos: u8,
}

/// Length of the frame [`write_segment`] writes for this address family.
pub fn segment_len(v6: bool) -> usize {
    if v6 { SYN_ACK_V6_LEN } else { SYN_ACK_LEN }
}

/// Writes `seg` into `buf` (Ethernet from `our_mac` to the client, IPv4 with DF and TTL 64 or
/// IPv6 with hop limit 64, TCP with data offset 5, correct checksums) and returns its length;
/// `None` when `buf` is too short or the addresses mix families.
pub fn write_segment(buf: &mut [u8], seg: &Segment, our_mac: Mac) -> Option<usize> {
    use std::net::IpAddr;
    use wire::{eth, ipv4 as iph, tcp as th};
    let (len, l4) = match (seg.client, seg.server) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (SYN_ACK_LEN, ETH_LEN + iph::LEN),
        (IpAddr::V6(_), IpAddr::V6(_)) => (SYN_ACK_V6_LEN, ETH_LEN + wire::ipv6::LEN),
        _ => return None,
    };
    let out = buf.get_mut(..len)?;
    wire::set_macs(out, seg.client_mac, our_mac);
    match (seg.client, seg.server) {
        (IpAddr::V4(client), IpAddr::V4(server)) => {
            out[eth::TYPE..eth::TYPE + 2].copy_from_slice(&wire::ETHERTYPE_IPV4.to_be_bytes());
            let ip = &mut out[ETH_LEN..l4];
            ip[iph::VER_IHL] = 0x45;
            ip[iph::TOS] = seg.tos;
            ip[iph::TOTAL_LEN..iph::TOTAL_LEN + 2]
                .copy_from_slice(&((iph::LEN + th::LEN) as u16).to_be_bytes());
            // Identification 0, DF.
            ip[iph::TOTAL_LEN + 2..iph::FRAG].copy_from_slice(&0u16.to_be_bytes());
            ip[iph::FRAG..iph::FRAG + 2].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[iph::TTL] = 64;
            ip[iph::PROTO] = wire::PROTO_TCP;
            ip[iph::CSUM..iph::CSUM + 2].copy_from_slice(&[0, 0]);
            ip[iph::SRC..iph::SRC + 4].copy_from_slice(&server.octets());
            ip[iph::DST..iph::DST + 4].copy_from_slice(&client.octets());
            let c = wire::ipv4_header_checksum(ip);
            ip[iph::CSUM..iph::CSUM + 2].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(client), IpAddr::V6(server)) => {
            out[eth::TYPE..eth::TYPE + 2].copy_from_slice(&wire::ETHERTYPE_IPV6.to_be_bytes());
            super::ndp::write_ipv6_header(
                &mut out[ETH_LEN..l4],
                th::LEN as u16,
                wire::PROTO_TCP,
                64,
                server,
                client,
            );
        }
        _ => return None,
    }
    let tcp = &mut out[l4..];
    tcp[th::SPORT..th::SPORT + 2].copy_from_slice(&seg.sport.to_be_bytes());
    tcp[th::DPORT..th::DPORT + 2].copy_from_slice(&seg.cport.to_be_bytes());
    tcp[th::SEQ..th::SEQ + 4].copy_from_slice(&seg.seq.to_be_bytes());
    tcp[th::ACK..th::ACK + 4].copy_from_slice(&seg.ack.to_be_bytes());
    tcp[th::DATA_OFF] = 5 << 4;
    tcp[th::FLAGS] = seg.flags;
    tcp[th::WINDOW..th::WINDOW + 2].copy_from_slice(&seg.window.to_be_bytes());
    // Checksum and urgent pointer zero; then the checksum.
    tcp[th::CSUM..th::LEN].copy_from_slice(&[0, 0, 0, 0]);
    let c = match (seg.server, seg.client) {
        (IpAddr::V4(s), IpAddr::V4(d)) => wire::l4_checksum_v4(s, d, wire::PROTO_TCP, tcp),
        (IpAddr::V6(s), IpAddr::V6(d)) => wire::l4_checksum_v6(s, d, wire::PROTO_TCP, tcp),
        _ => return None,
    };
    tcp[th::CSUM..th::CSUM + 2].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; 16] {
        let mut k = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        k
    }

    #[test]
    fn siphash_matches_reference_vectors() {
        // The first vectors of the SipHash paper's reference implementation (key 00..0f,
        // message 00..len-1).
        let expect: [u64; 3] = [
            0x726f_db47_dd0e_0e31,
            0x74f8_39c5_93dc_67fd,
            0x0d6c_8009_d9a9_4f5a,
        ];
        for (len, want) in expect.iter().enumerate() {
            let msg: Vec<u8> = (0..len as u8).collect();
            assert_eq!(siphash24(&key(), &msg), *want, "len {len}");
        }
        let msg: Vec<u8> = (0..15u8).collect();
        assert_eq!(siphash24(&key(), &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn isn_depends_on_key_and_tuple() {
        let (c, s) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 9));
        let a = isn(&key(), c, s, 40000, 80);
        assert_eq!(a, isn(&key(), c, s, 40000, 80));
        assert_ne!(a, isn(&key(), c, s, 40001, 80));
        assert_ne!(a, isn(&[7; 16], c, s, 40000, 80));
        assert_ne!(a, 42);
    }

    #[test]
    fn persist_isn_gives_back_the_client_isn_from_any_later_segment() {
        let tuple = 0x1234_5678;
        for client_isn in [0u32, 1, 0x7fff_ffff, 0xffff_ffff, 0xdead_beef] {
            let ours = persist_isn(tuple, client_isn);
            let ack = ours.wrapping_add(1);
            let next = client_isn.wrapping_add(1);
            let a = persist_ack(tuple, next, ack, 0).unwrap();
            assert_eq!((a.seq, a.ack, a.kind), (ack, next, SegmentKind::Ack));
            // Linux's zero-window probe: one below the next byte, no data
            let p = persist_ack(tuple, client_isn, ack, 0).unwrap();
            assert_eq!((p.seq, p.ack, p.kind), (ack, next, SegmentKind::Probe));
            // data, or a one-byte probe: acknowledged nothing
            let d = persist_ack(tuple, next, ack, 1).unwrap();
            assert_eq!((d.ack, d.kind), (next, SegmentKind::Probe));
            // not ours: another sequence number, data one below, another tuple
            assert_eq!(persist_ack(tuple, next.wrapping_add(1), ack, 0), None);
            assert_eq!(persist_ack(tuple, client_isn, ack, 5), None);
            assert_eq!(persist_ack(tuple ^ 0x100, next, ack, 0), None);
        }
    }

    #[test]
    fn a_written_segment_matches_the_syn_ack_writer() {
        let syn = Syn {
            client_mac: [2, 0, 0, 0, 0, 2],
            client: Ipv4Addr::new(10, 0, 0, 2),
            server: Ipv4Addr::new(10, 0, 0, 200),
            cport: 40000,
            sport: 80,
            seq: 99,
            tos: 0x10,
        };
        let mut a = vec![0u8; 80];
        let n = write_syn_ack(&mut a, &syn, [2, 0, 0, 0, 0, 1], &key(), 0).unwrap();
        let mut b = vec![0u8; 80];
        let seg = Segment {
            client_mac: syn.client_mac,
            client: syn.client.into(),
            server: syn.server.into(),
            cport: 40000,
            sport: 80,
            seq: isn(&key(), syn.client, syn.server, 40000, 80),
            ack: 100,
            flags: 0x12,
            window: 0,
            tos: 0x10,
        };
        assert_eq!(write_segment(&mut b, &seg, [2, 0, 0, 0, 0, 1]), Some(n));
        assert_eq!(a[..n], b[..n]);
        assert_eq!(write_segment(&mut b[..40], &seg, [2; 6]), None);
    }
}
