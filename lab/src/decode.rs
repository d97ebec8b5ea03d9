//! Frame decoding into a flat [`FrameInfo`], shared by `pen-lab show` and the expectations.
//!
//! Parsing uses etherparse; checksums are verified here with the plain internet checksum
//! (`pen::engine::wire`) over the captured bytes, so a frame captured with offloads on (partial checksums) shows up as
//! `bad` rather than being silently accepted.

use std::fmt;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use etherparse::{LinkExtSlice, LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use pen::engine::wire;
use serde::Serialize;

/// ARP (Ethernet/IPv4) fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArpInfo {
    /// 1 = request, 2 = reply.
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

/// TCP header fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcpInfo {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub urg: bool,
    pub seq: u32,
    pub ack_num: u32,
    pub window: u16,
    /// Length of the TCP options in bytes (data offset * 4 - 20).
    pub options_len: usize,
}

/// One captured frame, decoded as far as it goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FrameInfo {
    /// 0-based position in the capture.
    pub index: usize,
    /// Capture timestamp (since the epoch).
    pub ts: Duration,
    /// Captured length in bytes.
    pub len: usize,
    pub eth_src: Option<[u8; 6]>,
    pub eth_dst: Option<[u8; 6]>,
    /// VLAN id when the frame carries an 802.1Q tag (the lab uses none).
    pub vlan: Option<u16>,
    /// Ethertype of the network layer (after any VLAN tag).
    pub ethertype: Option<u16>,
    pub arp: Option<ArpInfo>,
    pub ip_src: Option<IpAddr>,
    pub ip_dst: Option<IpAddr>,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: Option<u8>,
    /// IP protocol / next header of the transport layer.
    pub proto: Option<u8>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub tcp: Option<TcpInfo>,
    /// Transport payload length (TCP/UDP data, ICMP body), 0 when there is none.
    pub payload_len: usize,
    /// The first [`PAYLOAD_HEAD`] bytes of the TCP/UDP payload (what `payload_prefix`
    /// matches: a PROXY protocol header, a request line).
    #[serde(skip)]
    pub payload_head: PayloadHead,
    /// IPv4 header checksum validity; `None` for IPv6 and non-IP frames.
    pub ip_checksum_ok: Option<bool>,
    /// TCP/UDP/ICMP checksum validity; `None` when there is no such layer.
    pub l4_checksum_ok: Option<bool>,
    /// Why decoding stopped early, if it did.
    pub error: Option<String>,
}

/// How many payload bytes a decoded frame keeps ([`FrameInfo::payload_head`]): enough for a
/// request line's start or a PROXY protocol header's, inline (no allocation per frame, so
/// the large captures of the bench cost 49 bytes a frame more, nothing else).
pub const PAYLOAD_HEAD: usize = 48;

/// The first [`PAYLOAD_HEAD`] bytes of a frame's payload.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PayloadHead {
    len: u8,
    bytes: [u8; PAYLOAD_HEAD],
}

impl Default for PayloadHead {
    fn default() -> Self {
        PayloadHead {
            len: 0,
            bytes: [0; PAYLOAD_HEAD],
        }
    }
}

impl PayloadHead {
    pub fn of(payload: &[u8]) -> PayloadHead {
        let n = payload.len().min(PAYLOAD_HEAD);
        let mut h = PayloadHead {
            len: u8::try_from(n).unwrap_or(0),
            ..PayloadHead::default()
        };
        if let (Some(dst), Some(src)) = (h.bytes.get_mut(..n), payload.get(..n)) {
            dst.copy_from_slice(src);
        }
        h
    }

    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl std::fmt::Debug for PayloadHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_slice()))
    }
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

impl FrameInfo {
    /// True when every checksum the frame carries verifies (frames without any are valid).
    pub fn checksums_valid(&self) -> bool {
        self.ip_checksum_ok != Some(false) && self.l4_checksum_ok != Some(false)
    }
}

/// Decodes one Ethernet frame. Never fails: what could not be decoded is left `None` and the
/// reason goes to `error`.
pub fn decode(index: usize, ts: Duration, data: &[u8]) -> FrameInfo {
    let mut f = FrameInfo {
        index,
        ts,
        len: data.len(),
        ..FrameInfo::default()
    };
    let pkt = match SlicedPacket::from_ethernet(data) {
        Ok(p) => p,
        Err(e) => {
            // A frame cut by the capture's snaplen (`tcpdump -s 96`) is shorter than its IP
            // header says: decode its headers leniently, without checksums.
            if let Some(f) = decode_cut(&f, data) {
                return f;
            }
            // Still show the Ethernet header when there is one.
            if data.len() >= 14 {
                f.eth_dst = data.get(0..6).and_then(|s| s.try_into().ok());
                f.eth_src = data.get(6..12).and_then(|s| s.try_into().ok());
                f.ethertype = data.get(12..14).map(|s| u16::from_be_bytes([s[0], s[1]]));
            }
            f.error = Some(e.to_string());
            return f;
        }
    };
    if let Some(LinkSlice::Ethernet2(eth)) = &pkt.link {
        f.eth_src = Some(eth.source());
        f.eth_dst = Some(eth.destination());
        f.ethertype = Some(eth.ether_type().0);
    }
    for ext in &pkt.link_exts {
        if let LinkExtSlice::Vlan(v) = ext {
            f.vlan = Some(v.vlan_identifier().value());
            f.ethertype = Some(v.ether_type().0);
        }
    }
    let mut pseudo: Option<(IpAddr, IpAddr)> = None;
    let mut l4_bytes: Option<&[u8]> = None;
    match &pkt.net {
        Some(NetSlice::Arp(arp)) => match arp.to_packet().try_eth_ipv4() {
            Ok(a) => {
                f.arp = Some(ArpInfo {
                    op: a.operation.0,
                    sender_mac: a.sender_mac,
                    sender_ip: Ipv4Addr::from(a.sender_ipv4),
                    target_mac: a.target_mac,
                    target_ip: Ipv4Addr::from(a.target_ipv4),
                });
            }
            Err(e) => f.error = Some(format!("ARP is not Ethernet/IPv4: {e}")),
        },
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let src = IpAddr::V4(h.source_addr());
            let dst = IpAddr::V4(h.destination_addr());
            f.ip_src = Some(src);
            f.ip_dst = Some(dst);
            f.ttl = Some(h.ttl());
            f.proto = Some(ip.payload_ip_number().0);
            f.ip_checksum_ok = Some(wire::fold(wire::sum16(h.slice(), 0)) == 0);
            if !ip.is_payload_fragmented() {
                pseudo = Some((src, dst));
                l4_bytes = Some(ip.payload().payload);
            }
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let src = IpAddr::V6(h.source_addr());
            let dst = IpAddr::V6(h.destination_addr());
            f.ip_src = Some(src);
            f.ip_dst = Some(dst);
            f.ttl = Some(h.hop_limit());
            f.proto = Some(ip.payload().ip_number.0);
            if !ip.is_payload_fragmented() {
                pseudo = Some((src, dst));
                l4_bytes = Some(ip.payload().payload);
            }
        }
        None => {}
    }
    transport_fields(&mut f, pkt.transport.as_ref());
    if let (Some((src, dst)), Some(bytes), Some(proto)) = (pseudo, l4_bytes, f.proto) {
        f.l4_checksum_ok = l4_checksum_ok(src, dst, proto, bytes);
    }
    f
}

/// The headers of a frame whose IP payload was cut short by the snaplen (etherparse's lax
/// parser). `None` when it is not such a frame (then the strict parser's error stands).
/// Checksums are unknown (`None`): the bytes they cover were not captured.
fn decode_cut(base: &FrameInfo, data: &[u8]) -> Option<FrameInfo> {
    use etherparse::{LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket};
    let pkt = LaxSlicedPacket::from_ethernet(data).ok()?;
    let mut f = base.clone();
    if let Some(LinkSlice::Ethernet2(eth)) = &pkt.link {
        f.eth_src = Some(eth.source());
        f.eth_dst = Some(eth.destination());
        f.ethertype = Some(eth.ether_type().0);
    }
    for ext in &pkt.link_exts {
        if let LaxLinkExtSlice::Vlan(v) = ext {
            f.vlan = Some(v.vlan_identifier().value());
            f.ethertype = Some(v.ether_type().0);
        }
    }
    let incomplete = match &pkt.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            f.ip_src = Some(IpAddr::V4(h.source_addr()));
            f.ip_dst = Some(IpAddr::V4(h.destination_addr()));
            f.ttl = Some(h.ttl());
            f.proto = Some(ip.payload_ip_number().0);
            f.ip_checksum_ok = Some(wire::fold(wire::sum16(h.slice(), 0)) == 0);
            ip.payload().incomplete
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            f.ip_src = Some(IpAddr::V6(h.source_addr()));
            f.ip_dst = Some(IpAddr::V6(h.destination_addr()));
            f.ttl = Some(h.hop_limit());
            f.proto = Some(ip.payload().ip_number.0);
            ip.payload().incomplete
        }
        _ => return None,
    };
    if !incomplete {
        return None;
    }
    transport_fields(&mut f, pkt.transport.as_ref());
    Some(f)
}

/// Ports, TCP flags/numbers and payload length from the transport header, whichever parser
/// (strict or lenient) sliced the frame.
fn transport_fields(f: &mut FrameInfo, transport: Option<&TransportSlice<'_>>) {
    match transport {
        Some(TransportSlice::Tcp(t)) => {
            f.src_port = Some(t.source_port());
            f.dst_port = Some(t.destination_port());
            f.tcp = Some(TcpInfo {
                syn: t.syn(),
                ack: t.ack(),
                fin: t.fin(),
                rst: t.rst(),
                psh: t.psh(),
                urg: t.urg(),
                seq: t.sequence_number(),
                ack_num: t.acknowledgment_number(),
                window: t.window_size(),
                options_len: t.options().len(),
            });
            f.payload_len = t.payload().len();
            f.payload_head = PayloadHead::of(t.payload());
        }
        Some(TransportSlice::Udp(u)) => {
            f.src_port = Some(u.source_port());
            f.dst_port = Some(u.destination_port());
            f.payload_len = u.payload().len();
            f.payload_head = PayloadHead::of(u.payload());
        }
        Some(TransportSlice::Icmpv4(i)) => f.payload_len = i.payload().len(),
        Some(TransportSlice::Icmpv6(i)) => f.payload_len = i.payload().len(),
        _ => {}
    }
}

/// Does the TCP/UDP/ICMP/ICMPv6 checksum of `l4` verify? Summing a segment together with its
/// own checksum field (and the pseudo-header where the protocol has one) folds to zero when
/// it is right; the sums are pen's own (`pen::engine::wire`).
fn l4_checksum_ok(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Option<bool> {
    let needs_pseudo = match proto {
        PROTO_TCP | PROTO_UDP | PROTO_ICMPV6 => true,
        PROTO_ICMP => false,
        _ => return None,
    };
    let min_len = match proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => 4,
    };
    if l4.len() < min_len {
        return None;
    }
    // UDP over IPv4 with checksum 0 means "not computed".
    if proto == PROTO_UDP && src.is_ipv4() && l4.get(6..8) == Some(&[0, 0]) {
        return Some(true);
    }
    let residue = match (needs_pseudo, src, dst) {
        (false, _, _) => wire::fold(wire::sum16(l4, 0)),
        (true, IpAddr::V4(s), IpAddr::V4(d)) => wire::l4_checksum_v4(s, d, proto, l4),
        (true, IpAddr::V6(s), IpAddr::V6(d)) => wire::l4_checksum_v6(s, d, proto, l4),
        _ => return None,
    };
    Some(residue == 0)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff` (pen's formatter, shared with the engine).
pub use pen::engine::fmt_mac;

/// Parses `aa:bb:cc:dd:ee:ff` (also `-` separated) with pen's parser
/// ([`pen::engine::parse_mac`], shared with `pen-sim --mac`); `None` when it is not a MAC.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    pen::engine::parse_mac(s).ok()
}

fn fmt_endpoint(ip: Option<IpAddr>, port: Option<u16>) -> String {
    match (ip, port) {
        (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}].{p}"),
        (Some(a), Some(p)) => format!("{a}.{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "?".to_string(),
    }
}

fn csum_tag(f: &FrameInfo) -> &'static str {
    if f.checksums_valid() {
        ""
    } else {
        " [bad cksum]"
    }
}

impl fmt::Display for FrameInfo {
    /// One tcpdump-like line: `#3 0.001234 aa:..→bb:.. IP 10.0.0.1.5555 > 10.0.0.2.80: Flags [S] ...`
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let macs = match (self.eth_src, self.eth_dst) {
            (Some(s), Some(d)) => format!("{} > {}", fmt_mac(&s), fmt_mac(&d)),
            _ => "? > ?".to_string(),
        };
        write!(
            out,
            "#{} {}.{:06} {}",
            self.index,
            self.ts.as_secs(),
            self.ts.subsec_micros(),
            macs
        )?;
        if let Some(v) = self.vlan {
            write!(out, " vlan {v}")?;
        }
        if let Some(a) = &self.arp {
            return match a.op {
                1 => write!(
                    out,
                    " ARP Request who-has {} tell {} ({})",
                    a.target_ip,
                    a.sender_ip,
                    fmt_mac(&a.sender_mac)
                ),
                2 => write!(
                    out,
                    " ARP Reply {} is-at {}",
                    a.sender_ip,
                    fmt_mac(&a.sender_mac)
                ),
                op => write!(out, " ARP op {op} {} > {}", a.sender_ip, a.target_ip),
            };
        }
        let Some(_) = self.ip_src else {
            write!(out, " ethertype 0x{:04x}", self.ethertype.unwrap_or(0))?;
            if let Some(e) = &self.error {
                write!(out, " ({e})")?;
            }
            return Ok(());
        };
        let fam = if matches!(self.ip_src, Some(IpAddr::V6(_))) {
            "IP6"
        } else {
            "IP"
        };
        write!(
            out,
            " {fam} {} > {}:",
            fmt_endpoint(self.ip_src, self.src_port),
            fmt_endpoint(self.ip_dst, self.dst_port)
        )?;
        match self.proto {
            Some(PROTO_TCP) => {
                if let Some(t) = &self.tcp {
                    let mut flags = String::new();
                    for (on, c) in [
                        (t.syn, 'S'),
                        (t.fin, 'F'),
                        (t.rst, 'R'),
                        (t.psh, 'P'),
                        (t.urg, 'U'),
                        (t.ack, '.'),
                    ] {
                        if on {
                            flags.push(c);
                        }
                    }
                    if flags.is_empty() {
                        flags.push_str("none");
                    }
                    write!(out, " Flags [{flags}], seq {}", t.seq)?;
                    if t.ack {
                        write!(out, ", ack {}", t.ack_num)?;
                    }
                    write!(out, ", win {}", t.window)?;
                    if t.options_len > 0 {
                        write!(out, ", options {}B", t.options_len)?;
                    }
                }
                write!(out, ", length {}", self.payload_len)?;
            }
            Some(PROTO_UDP) => write!(out, " UDP, length {}", self.payload_len)?,
            Some(PROTO_ICMP) => write!(out, " ICMP, length {}", self.payload_len)?,
            Some(PROTO_ICMPV6) => write!(out, " ICMP6, length {}", self.payload_len)?,
            Some(p) => write!(out, " proto {p}")?,
            None => {}
        }
        if let Some(t) = self.ttl {
            write!(out, ", ttl {t}")?;
        }
        write!(out, "{}", csum_tag(self))?;
        if let Some(e) = &self.error {
            write!(out, " ({e})")?;
        }
        Ok(())
    }
}

/// Reads every frame of a pcap file (Ethernet link type) and decodes it.
///
/// Records are read raw: pcap-file's checked packets refuse `orig_len > snaplen`, which every
/// capture taken with a small `-s` (`tcpdump -s 96`) has. What is checked here: the captured
/// length fits the snaplen (or 256 KiB, whichever is larger) and the timestamp fraction is
/// below one second.
pub fn read_pcap(path: &Path) -> anyhow::Result<Vec<FrameInfo>> {
    let file = File::open(path).with_context(|| format!("opening pcap {}", path.display()))?;
    let mut reader = pcap_file::pcap::PcapReader::new(file)
        .with_context(|| format!("{}: not a pcap file (pcap-ng is not read)", path.display()))?;
    let header = reader.header();
    let (unit, max_frac) = match header.ts_resolution {
        pcap_file::TsResolution::MicroSecond => (1_000, 1_000_000),
        pcap_file::TsResolution::NanoSecond => (1, 1_000_000_000),
    };
    let max_incl = header.snaplen.max(256 * 1024);
    let mut frames = Vec::new();
    while let Some(pkt) = reader.next_raw_packet() {
        let n = frames.len() + 1;
        let pkt = pkt.with_context(|| {
            format!(
                "{}: truncated or corrupt after frame #{}",
                path.display(),
                frames.len()
            )
        })?;
        if pkt.incl_len > max_incl {
            anyhow::bail!(
                "{}: frame #{n}: captured length {} is more than the snaplen {}",
                path.display(),
                pkt.incl_len,
                header.snaplen
            );
        }
        if pkt.ts_frac >= max_frac {
            anyhow::bail!(
                "{}: frame #{n}: timestamp fraction {} is not below {max_frac}",
                path.display(),
                pkt.ts_frac
            );
        }
        let ts = Duration::new(u64::from(pkt.ts_sec), pkt.ts_frac * unit);
        frames.push(decode(frames.len(), ts, &pkt.data));
    }
    Ok(frames)
}

/// Reads a pcap file through libpcap with a BPF filter (no root needed) and decodes the
/// matching frames; indices are positions among the matching frames.
pub fn read_pcap_filtered(path: &Path, filter: &str) -> anyhow::Result<Vec<FrameInfo>> {
    let mut cap = pcap::Capture::from_file(path)
        .with_context(|| format!("opening pcap {}", path.display()))?;
    cap.filter(filter, true).with_context(|| {
        format!("filter {filter:?}: not a valid BPF expression (e.g. \"tcp port 80\")")
    })?;
    let mut frames = Vec::new();
    loop {
        match cap.next_packet() {
            Ok(p) => {
                let ts = Duration::new(
                    u64::try_from(p.header.ts.tv_sec).unwrap_or(0),
                    u32::try_from(p.header.ts.tv_usec)
                        .unwrap_or(0)
                        .saturating_mul(1000),
                );
                frames.push(decode(frames.len(), ts, p.data));
            }
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(frames)
}

/// Addresses helpers used by the expectations.
pub fn ip_in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap file as `tcpdump -s 96` writes it: snaplen 96, frames cut to 96 bytes whose
    /// original length is larger.
    fn snaplen_pcap(snaplen: u32, frames: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&4u16.to_le_bytes());
        f.extend_from_slice(&0i32.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&snaplen.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        for (i, (orig, data)) in frames.iter().enumerate() {
            f.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
            f.extend_from_slice(&500_000u32.to_le_bytes());
            f.extend_from_slice(&(data.len() as u32).to_le_bytes());
            f.extend_from_slice(&orig.to_le_bytes());
            f.extend_from_slice(data);
        }
        f
    }

    /// Ethernet + IPv4 + TCP SYN to 10.0.0.2:80, 1500 bytes on the wire.
    fn tcp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&1486u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let tcp = &mut f[34..54];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x02;
        f.resize(96, 0);
        f
    }

    #[test]
    fn read_pcap_takes_frames_cut_by_a_small_snaplen() {
        let dir = std::env::temp_dir().join(format!("pen-lab-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("snap96.pcap");
        std::fs::write(
            &path,
            snaplen_pcap(96, &[(1500, tcp_frame()), (1500, tcp_frame())]),
        )
        .unwrap();
        let frames = read_pcap(&path).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].dst_port, Some(80));
        assert!(frames[0].tcp.as_ref().is_some_and(|t| t.syn));
        assert_eq!(frames[0].error, None);
        assert_eq!(frames[0].l4_checksum_ok, None);
        assert_eq!(frames[1].ts, Duration::new(1_700_000_001, 500_000_000));
        // A record longer than the snaplen (and 256 KiB) is still refused, naming the frame.
        let big = vec![0u8; 300 * 1024];
        std::fs::write(
            &path,
            snaplen_pcap(96, &[(1500, tcp_frame()), (400_000, big)]),
        )
        .unwrap();
        let e = format!("{:#}", read_pcap(&path).unwrap_err());
        assert!(e.contains("frame #2") && e.contains("snaplen 96"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The lab reads and writes MAC addresses exactly as pen does (one parser, one formatter):
    /// a scenario's MAC means what `pen-sim --mac` takes it to mean.
    #[test]
    fn macs_are_parsed_and_formatted_by_pens_helpers() {
        for s in [
            "02:00:00:00:0a:ff",
            "02-00-00-00-0A-FF",
            "2:0:0:0:a:ff",
            "02:00:00:00:0a",
            "zz:00:00:00:00:00",
            "",
        ] {
            assert_eq!(parse_mac(s), pen::engine::parse_mac(s).ok(), "{s:?}");
        }
        let m = [2, 0, 0, 0, 0x0a, 0xff];
        assert_eq!(fmt_mac(&m), pen::engine::MacText(m).to_string());
        assert_eq!(parse_mac(&fmt_mac(&m)), Some(m));
    }
}
