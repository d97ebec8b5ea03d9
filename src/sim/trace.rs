//! The trace model: a capture (pcap or pcapng) turned into the flows a balancer sees. Pure: it
//! works on the file's bytes ([`Trace::parse`]); [`Trace::open`] only reads the file first.
//!
//! - Link types: Ethernet (with 802.1Q/802.1ad tags), Linux cooked v1 and v2 (`tcpdump -i
//!   any`), raw IP (`RAW`, `IPV4`, `IPV6`) and BSD loopback (`NULL`, `LOOP`). Anything else is
//!   an error naming the link type.
//! - IPv4 and IPv6 (extension headers skipped); non-first fragments are counted and skipped.
//! - UDP: datagrams per client ip:port → server ip:port, with times, lengths and payloads;
//!   server → client datagrams are the flow's replies.
//! - TCP: sessions, with the client's bytes reassembled in order (retransmissions, overlaps and
//!   out-of-order segments handled: the first copy of a byte wins), the server's byte count,
//!   open, half-close and close times. A session whose SYN is not in the capture is kept with
//!   `start_missing` set (the replay and the simulation leave it out and say so); its client is
//!   the side the selection names, or the destination of its first segment is the server.
//! - Which endpoint is the server: the one a [`Selection`] matches; without a selection, the
//!   receiver of the SYN (TCP) or of the first datagram (UDP).
//!
//! Times are relative to the first frame of the capture (`Duration::ZERO`), so a trace starts
//! at virtual time 0. Frame numbers count from 1, as Wireshark and `pen-lab show` do.
//!
//! A bad, truncated or unsupported file is a [`TraceError`] naming the file, the frame and why.
//! Frames cut by the capture's snaplen are fine: lengths come from the IP and UDP headers, and
//! zeros stand for TCP bytes that were not captured.
//! Frames that are merely not for us (ARP, ICMP, other ports) are counted in [`Skipped`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, PcapError, TsResolution};

/// Bytes of client data kept per TCP session (beyond them the session is marked `clipped`).
pub const MAX_SESSION_BYTES: usize = 16 << 20;
/// Bytes held out of order per direction of a TCP session; more is dropped (and becomes a hole).
pub const MAX_PENDING_BYTES: usize = 4 << 20;

/// A bad capture: the file, the frame (1-based; `None` for the file header) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    pub file: String,
    pub frame: Option<u64>,
    pub why: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.frame {
            Some(n) => write!(f, "{}: frame {n}: {}", self.file, self.why),
            None => write!(f, "{}: {}", self.file, self.why),
        }
    }
}

impl std::error::Error for TraceError {}

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One server endpoint to select: `[tcp:|udp:]PORT`, `[tcp:|udp:]IP:PORT`, `[tcp:|udp:][IPv6]:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSel {
    pub proto: Option<Proto>,
    pub ip: Option<IpAddr>,
    pub port: u16,
}

impl ServerSel {
    /// Parses one server selector; the error says what is accepted.
    pub fn parse(s: &str) -> Result<ServerSel, String> {
        let bad = || {
            format!(
                "bad server selector {s:?}; expected [tcp:|udp:]PORT, [tcp:|udp:]IPV4:PORT or \
                 [tcp:|udp:][IPV6]:PORT, e.g. udp:53 or 10.0.0.1:80"
            )
        };
        let (proto, rest) = if let Some(r) = s.strip_prefix("tcp:") {
            (Some(Proto::Tcp), r)
        } else if let Some(r) = s.strip_prefix("udp:") {
            (Some(Proto::Udp), r)
        } else {
            (None, s)
        };
        if let Ok(port) = rest.parse::<u16>() {
            return Ok(ServerSel {
                proto,
                ip: None,
                port,
            });
        }
        let sa: SocketAddr = rest.parse().map_err(|_| bad())?;
        Ok(ServerSel {
            proto,
            ip: Some(sa.ip()),
            port: sa.port(),
        })
    }

    fn matches(&self, proto: Proto, ep: SocketAddr) -> bool {
        self.proto.is_none_or(|p| p == proto)
            && self.ip.is_none_or(|ip| ip == ep.ip())
            && self.port == ep.port()
    }
}

impl fmt::Display for ServerSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.proto {
            write!(f, "{p}:")?;
        }
        match self.ip {
            Some(ip) => write!(f, "{}", SocketAddr::new(ip, self.port)),
            None => write!(f, "{}", self.port),
        }
    }
}

/// Which flows to keep. Empty: every TCP and UDP flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub servers: Vec<ServerSel>,
}

impl Selection {
    /// `None`: the packet is not selected. `Some(true)`: `dst` is the server; `Some(false)`:
    /// `src` is. Without selectors: `Some(true)` (the caller decides the orientation).
    fn orient(&self, proto: Proto, src: SocketAddr, dst: SocketAddr) -> Option<bool> {
        if self.servers.is_empty() {
            return Some(true);
        }
        if self.servers.iter().any(|s| s.matches(proto, dst)) {
            Some(true)
        } else if self.servers.iter().any(|s| s.matches(proto, src)) {
            Some(false)
        } else {
            None
        }
    }
}

/// One datagram of a UDP flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Since the first frame of the capture.
    pub at: Duration,
    pub frame: u64,
    /// UDP payload length as sent (from the UDP header).
    pub len: u32,
    /// The payload as captured (may be shorter than `len` with a small snaplen).
    pub payload: Vec<u8>,
}

/// A UDP flow: every datagram from one client ip:port to one server ip:port, and the replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFlow {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub first_frame: u64,
    pub queries: Vec<Datagram>,
    /// Server → client datagrams (payloads are not kept).
    pub replies: Vec<Datagram>,
}

impl UdpFlow {
    pub fn start(&self) -> Duration {
        self.queries.first().map_or(Duration::ZERO, |d| d.at)
    }
}

/// The client's in-order bytes reached `end` (stream offset) at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub at: Duration,
    pub end: u64,
}

/// A TCP session between one client ip:port and one server ip:port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSession {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub first_frame: u64,
    /// The client's SYN is not in the capture: the session is reported, not replayed.
    pub start_missing: bool,
    /// First packet of the session (the SYN when there is one).
    pub opened: Duration,
    /// The server's SYN+ACK.
    pub established: Option<Duration>,
    /// The client's bytes, in order, up to the first hole that was never filled.
    pub client_data: Vec<u8>,
    /// When the in-order client bytes grew (the gaps of a replay).
    pub client_chunks: Vec<Chunk>,
    /// Bytes the server sent (in order, up to its first unfilled hole).
    pub server_bytes: u64,
    pub client_fin: Option<Duration>,
    pub server_fin: Option<Duration>,
    pub reset: Option<Duration>,
    /// Last packet of the session.
    pub last: Duration,
    /// Client bytes seen again (retransmissions and overlaps).
    pub retransmitted_bytes: u64,
    /// Client segments that arrived ahead of a gap.
    pub out_of_order: u64,
    /// Client bytes after a hole that was never filled (not in `client_data`).
    pub lost_bytes: u64,
    /// More than [`MAX_SESSION_BYTES`] client bytes: the rest is counted, not kept.
    pub clipped: bool,
    /// Frames whose payload was cut by the snaplen (zeros stand for the missing bytes).
    pub truncated_frames: u64,
}

impl TcpSession {
    /// The session has ended (both FINs, or a RST).
    pub fn closed(&self) -> Option<Duration> {
        if let Some(r) = self.reset {
            return Some(r);
        }
        match (self.client_fin, self.server_fin) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        }
    }
}

/// Frames that carried no selected flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Not IPv4/IPv6 (ARP, LLDP...).
    pub not_ip: u64,
    /// IP, but neither TCP nor UDP (ICMP...).
    pub other_protocol: u64,
    /// Not matched by the selection.
    pub not_selected: u64,
    /// Not matched by the frame filter (a BPF expression, see [`Trace::parse_filtered`]).
    pub filtered_out: u64,
    /// Non-first IP fragments.
    pub fragments: u64,
    /// Headers that do not parse (too short, bad lengths).
    pub malformed: u64,
    /// The first malformed frame, to look at with `pen-lab show`.
    pub first_malformed: Option<u64>,
    /// TCP segments of no session (e.g. a lone ACK after a session's RST).
    pub stray_segments: u64,
}

/// A capture as flows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The file name, for messages.
    pub file: String,
    /// Frames read.
    pub frames: u64,
    /// Timestamp of the first frame (since the epoch); flow times are relative to it.
    pub epoch: Duration,
    /// Last frame's time (relative).
    pub duration: Duration,
    /// UDP flows in order of their first datagram.
    pub udp: Vec<UdpFlow>,
    /// TCP sessions in order of their first packet.
    pub tcp: Vec<TcpSession>,
    pub skipped: Skipped,
}

/// Options of a parse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseOptions {
    pub selection: Selection,
}

/// A decoded transport segment of one frame.
#[derive(Debug, Clone, Copy)]
struct Segment<'a> {
    proto: Proto,
    src: SocketAddr,
    dst: SocketAddr,
    /// TCP: seq, ack, flags.
    seq: u32,
    flags: u8,
    /// Payload as captured.
    payload: &'a [u8],
    /// Payload length on the wire.
    wire_len: u32,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Why a frame carries no segment (not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoSegment {
    NotIp,
    OtherProtocol,
    Fragment,
    Malformed,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// The IP packet inside a link-layer frame; `Err(NotIp)` for other payloads.
fn link_payload(link: u32, frame: &[u8]) -> Result<&[u8], NoSegment> {
    let (ethertype, rest) = match link {
        // Ethernet, skipping VLAN tags.
        1 => {
            let mut at = 12;
            let mut et = be16(frame, at).ok_or(NoSegment::Malformed)?;
            while et == 0x8100 || et == 0x88a8 {
                at += 4;
                et = be16(frame, at).ok_or(NoSegment::Malformed)?;
            }
            (et, frame.get(at + 2..).ok_or(NoSegment::Malformed)?)
        }
        // Linux cooked v1: protocol at 14.
        113 => (
            be16(frame, 14).ok_or(NoSegment::Malformed)?,
            frame.get(16..).ok_or(NoSegment::Malformed)?,
        ),
        // Linux cooked v2: protocol at 0, 20-byte header.
        276 => (
            be16(frame, 0).ok_or(NoSegment::Malformed)?,
            frame.get(20..).ok_or(NoSegment::Malformed)?,
        ),
        // Raw IP (RAW, IPV4, IPV6; 12 and 14 are RAW on some systems).
        12 | 14 | 101 | 228 | 229 => return Ok(frame),
        // BSD loopback: address family in host (NULL) or network (LOOP) order.
        0 | 108 => {
            let fam = frame.get(..4).ok_or(NoSegment::Malformed)?;
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let af = if le < 256 { le } else { be };
            let et = match af {
                2 => 0x0800,
                10 | 24 | 28 | 30 => 0x86dd,
                _ => 0,
            };
            (et, &frame[4..])
        }
        _ => return Err(NoSegment::NotIp),
    };
    match ethertype {
        0x0800 | 0x86dd => Ok(rest),
        _ => Err(NoSegment::NotIp),
    }
}

fn supported_link(link: u32) -> bool {
    matches!(link, 0 | 1 | 12 | 14 | 101 | 108 | 113 | 228 | 229 | 276)
}

/// Decodes the TCP or UDP segment of an IP packet.
fn ip_segment(ip: &[u8]) -> Result<Segment<'_>, NoSegment> {
    let version = ip.first().ok_or(NoSegment::Malformed)? >> 4;
    let (src, dst, proto, l4, l4_wire_len) = match version {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(be16(ip, 2).ok_or(NoSegment::Malformed)?);
            if ihl < 20 || total < ihl || ip.len() < ihl {
                return Err(NoSegment::Malformed);
            }
            let frag = be16(ip, 6).ok_or(NoSegment::Malformed)?;
            if frag & 0x1fff != 0 {
                return Err(NoSegment::Fragment);
            }
            let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
            let end = total.min(ip.len());
            (src, dst, ip[9], &ip[ihl..end], total - ihl)
        }
        6 => {
            if ip.len() < 40 {
                return Err(NoSegment::Malformed);
            }
            let plen = usize::from(be16(ip, 4).ok_or(NoSegment::Malformed)?);
            let mut s = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&ip[24..40]);
            let mut next = ip[6];
            let mut at = 40;
            let end_wire = 40 + plen;
            // Extension headers (bounded: each advances `at`).
            loop {
                match next {
                    0 | 43 | 60 => {
                        let len =
                            (usize::from(*ip.get(at + 1).ok_or(NoSegment::Malformed)?) + 1) * 8;
                        next = ip[at];
                        at += len;
                    }
                    44 => {
                        let off = be16(ip, at + 2).ok_or(NoSegment::Malformed)?;
                        if off & 0xfff8 != 0 {
                            return Err(NoSegment::Fragment);
                        }
                        next = ip[at];
                        at += 8;
                    }
                    51 => {
                        let len =
                            (usize::from(*ip.get(at + 1).ok_or(NoSegment::Malformed)?) + 2) * 4;
                        next = ip[at];
                        at += len;
                    }
                    _ => break,
                }
                if at > end_wire {
                    return Err(NoSegment::Malformed);
                }
            }
            let end = end_wire.min(ip.len());
            let l4 = ip.get(at..end.max(at)).ok_or(NoSegment::Malformed)?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                next,
                l4,
                end_wire - at,
            )
        }
        _ => return Err(NoSegment::Malformed),
    };
    match proto {
        17 => {
            let sp = be16(l4, 0).ok_or(NoSegment::Malformed)?;
            let dp = be16(l4, 2).ok_or(NoSegment::Malformed)?;
            let ulen = usize::from(be16(l4, 4).ok_or(NoSegment::Malformed)?);
            if ulen < 8 || l4.len() < 8 {
                return Err(NoSegment::Malformed);
            }
            let payload = &l4[8..ulen.min(l4.len())];
            Ok(Segment {
                proto: Proto::Udp,
                src: SocketAddr::new(src, sp),
                dst: SocketAddr::new(dst, dp),
                seq: 0,
                flags: 0,
                payload,
                wire_len: (ulen - 8) as u32,
            })
        }
        6 => {
            let sp = be16(l4, 0).ok_or(NoSegment::Malformed)?;
            let dp = be16(l4, 2).ok_or(NoSegment::Malformed)?;
            let seq = be32(l4, 4).ok_or(NoSegment::Malformed)?;
            let off = usize::from(*l4.get(12).ok_or(NoSegment::Malformed)? >> 4) * 4;
            let flags = *l4.get(13).ok_or(NoSegment::Malformed)?;
            if off < 20 || l4.len() < off || l4_wire_len < off {
                return Err(NoSegment::Malformed);
            }
            Ok(Segment {
                proto: Proto::Tcp,
                src: SocketAddr::new(src, sp),
                dst: SocketAddr::new(dst, dp),
                seq,
                flags,
                payload: &l4[off..],
                wire_len: (l4_wire_len - off) as u32,
            })
        }
        _ => Err(NoSegment::OtherProtocol),
    }
}

/// One direction of a TCP session being reassembled.
#[derive(Debug, Clone, Default)]
struct Stream {
    /// Sequence number of stream offset 0 (the byte after the SYN).
    base: Option<u32>,
    /// In-order bytes so far.
    next: u64,
    /// Out-of-order data by stream offset: (end, bytes if kept).
    pending: BTreeMap<u64, (u64, Option<Vec<u8>>)>,
    pending_bytes: usize,
}

impl Stream {
    /// Offset of `seq` in the stream; `None` when it lies before the start (old duplicate).
    fn offset(&self, seq: u32) -> Option<u64> {
        let base = self.base?;
        let rel = seq.wrapping_sub(base);
        (rel < 1 << 31).then_some(u64::from(rel))
    }

    /// Adds a segment's bytes; `out` (when kept) receives the newly in-order bytes. Returns
    /// (bytes that were already there, whether the segment arrived ahead of a gap).
    fn add(&mut self, seq: u32, data: &[u8], out: Option<&mut Vec<u8>>) -> (u64, bool) {
        if data.is_empty() {
            return (0, false);
        }
        let Some(start) = self.offset(seq) else {
            return (data.len() as u64, false);
        };
        let end = start + data.len() as u64;
        if end <= self.next {
            return (data.len() as u64, false);
        }
        let keep = out.is_some();
        if start > self.next {
            // Ahead of a gap: hold it (the first copy of a byte wins when it is merged).
            let dup = self.pending.get(&start).is_some_and(|(e, _)| *e >= end);
            if dup {
                return (data.len() as u64, true);
            }
            if self.pending_bytes + data.len() <= MAX_PENDING_BYTES {
                self.pending_bytes += data.len();
                self.pending
                    .insert(start, (end, keep.then(|| data.to_vec())));
            }
            return (0, true);
        }
        let skip = (self.next - start) as usize;
        let mut out = out;
        if let Some(o) = out.as_deref_mut() {
            o.extend_from_slice(&data[skip..]);
        }
        self.next = end;
        // Merge what the gap was holding back.
        let mut dup = skip as u64;
        while let Some((&s, _)) = self.pending.first_key_value() {
            if s > self.next {
                break;
            }
            let Some((s, (e, bytes))) = self.pending.pop_first() else {
                break;
            };
            self.pending_bytes -= (e - s) as usize;
            if e <= self.next {
                dup += e - s;
                continue;
            }
            let skip = self.next - s;
            dup += skip;
            if let (Some(o), Some(b)) = (out.as_deref_mut(), bytes.as_ref()) {
                o.extend_from_slice(&b[skip as usize..]);
            }
            self.next = e;
        }
        (dup, false)
    }

    /// Bytes beyond the first unfilled hole.
    fn lost(&self) -> u64 {
        self.pending.iter().map(|(s, (e, _))| e - s).sum()
    }
}

#[derive(Debug, Default)]
struct TcpState {
    client: Stream,
    server: Stream,
}

/// Builds flows from decoded segments.
#[derive(Debug, Default)]
struct Builder {
    selection: Selection,
    udp: Vec<UdpFlow>,
    udp_index: HashMap<(SocketAddr, SocketAddr), usize>,
    tcp: Vec<TcpSession>,
    tcp_state: Vec<TcpState>,
    tcp_index: HashMap<(SocketAddr, SocketAddr), usize>,
    skipped: Skipped,
}

impl Builder {
    fn segment(&mut self, frame: u64, at: Duration, seg: Segment<'_>) {
        let Some(dst_is_server) = self.selection.orient(seg.proto, seg.src, seg.dst) else {
            self.skipped.not_selected += 1;
            return;
        };
        match seg.proto {
            Proto::Udp => self.udp_segment(frame, at, seg, dst_is_server),
            Proto::Tcp => self.tcp_segment(frame, at, seg, dst_is_server),
        }
    }

    fn udp_segment(&mut self, frame: u64, at: Duration, seg: Segment<'_>, dst_is_server: bool) {
        let d = Datagram {
            at,
            frame,
            len: seg.wire_len,
            payload: Vec::new(),
        };
        // A datagram back on a known flow is a reply (without a selection, the first
        // datagram between two endpoints decides who is the client).
        if let Some(&i) = self.udp_index.get(&(seg.dst, seg.src)) {
            self.udp[i].replies.push(d);
            return;
        }
        if !dst_is_server {
            let key = (seg.dst, seg.src);
            let i = *self.udp_index.entry(key).or_insert_with(|| {
                self.udp.push(UdpFlow {
                    client: seg.dst,
                    server: seg.src,
                    first_frame: frame,
                    queries: Vec::new(),
                    replies: Vec::new(),
                });
                self.udp.len() - 1
            });
            self.udp[i].replies.push(d);
            return;
        }
        let key = (seg.src, seg.dst);
        let i = *self.udp_index.entry(key).or_insert_with(|| {
            self.udp.push(UdpFlow {
                client: seg.src,
                server: seg.dst,
                first_frame: frame,
                queries: Vec::new(),
                replies: Vec::new(),
            });
            self.udp.len() - 1
        });
        self.udp[i].queries.push(Datagram {
            payload: seg.payload.to_vec(),
            ..d
        });
    }

    fn new_session(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        frame: u64,
        at: Duration,
        start_missing: bool,
    ) -> usize {
        self.tcp.push(TcpSession {
            client,
            server,
            first_frame: frame,
            start_missing,
            opened: at,
            established: None,
            client_data: Vec::new(),
            client_chunks: Vec::new(),
            server_bytes: 0,
            client_fin: None,
            server_fin: None,
            reset: None,
            last: at,
            retransmitted_bytes: 0,
            out_of_order: 0,
            lost_bytes: 0,
            clipped: false,
            truncated_frames: 0,
        });
        self.tcp_state.push(TcpState::default());
        let i = self.tcp.len() - 1;
        self.tcp_index.insert((client, server), i);
        i
    }

    fn tcp_segment(&mut self, frame: u64, at: Duration, seg: Segment<'_>, dst_is_server: bool) {
        let syn_only = seg.flags & (SYN | ACK) == SYN;
        let fwd = self.tcp_index.get(&(seg.src, seg.dst)).copied();
        let rev = self.tcp_index.get(&(seg.dst, seg.src)).copied();
        let (i, from_client) = if syn_only && (self.selection.servers.is_empty() || dst_is_server) {
            // A SYN opens a session unless it repeats the open one's SYN.
            match fwd {
                Some(i)
                    if self.tcp[i].closed().is_none()
                        && self.tcp_state[i].client.base == Some(seg.seq.wrapping_add(1)) =>
                {
                    (i, true)
                }
                _ => {
                    let i = self.new_session(seg.src, seg.dst, frame, at, false);
                    self.tcp_state[i].client.base = Some(seg.seq.wrapping_add(1));
                    (i, true)
                }
            }
        } else if let Some(i) = fwd {
            (i, true)
        } else if let Some(i) = rev {
            (i, false)
        } else if seg.flags & RST != 0 {
            // A RST of no session (a refused connect's answer arrives after its SYN created
            // one, so this is a stranger).
            self.skipped.stray_segments += 1;
            return;
        } else {
            // No SYN in the capture: reported, not guessed.
            let (c, s) = if dst_is_server {
                (seg.src, seg.dst)
            } else {
                (seg.dst, seg.src)
            };
            let i = self.new_session(c, s, frame, at, true);
            (i, c == seg.src)
        };
        let sess = &mut self.tcp[i];
        let st = &mut self.tcp_state[i];
        sess.last = sess.last.max(at);
        let truncated = seg.payload.len() < seg.wire_len as usize;
        if truncated {
            sess.truncated_frames += 1;
        }
        let mut data = seg.payload;
        let padded;
        if truncated {
            let mut v = seg.payload.to_vec();
            v.resize(seg.wire_len as usize, 0);
            padded = v;
            data = &padded;
        }
        // Sequence of the first data byte (a SYN takes one).
        let data_seq = if seg.flags & SYN != 0 {
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        if from_client {
            if st.client.base.is_none() {
                st.client.base = Some(data_seq);
            }
            let before = st.client.next;
            let keep =
                (sess.client_data.len() < MAX_SESSION_BYTES).then_some(&mut sess.client_data);
            let (dup, ahead) = st.client.add(data_seq, data, keep);
            if sess.client_data.len() > MAX_SESSION_BYTES {
                sess.client_data.truncate(MAX_SESSION_BYTES);
                sess.clipped = true;
            }
            sess.retransmitted_bytes += dup;
            sess.out_of_order += u64::from(ahead);
            if st.client.next > before {
                match sess.client_chunks.last_mut() {
                    Some(c) if c.at == at => c.end = st.client.next,
                    _ => sess.client_chunks.push(Chunk {
                        at,
                        end: st.client.next,
                    }),
                }
            }
            if seg.flags & FIN != 0 && sess.client_fin.is_none() {
                sess.client_fin = Some(at);
            }
        } else {
            if seg.flags & SYN != 0 {
                if sess.established.is_none() {
                    sess.established = Some(at);
                }
                st.server.base.get_or_insert(data_seq);
            }
            if st.server.base.is_none() {
                st.server.base = Some(data_seq);
            }
            st.server.add(data_seq, data, None);
            sess.server_bytes = st.server.next;
            if seg.flags & FIN != 0 && sess.server_fin.is_none() {
                sess.server_fin = Some(at);
            }
        }
        if seg.flags & RST != 0 && sess.reset.is_none() {
            sess.reset = Some(at);
        }
    }

    fn finish(mut self) -> (Vec<UdpFlow>, Vec<TcpSession>, Skipped) {
        for (sess, st) in self.tcp.iter_mut().zip(&self.tcp_state) {
            sess.lost_bytes = st.client.lost();
        }
        // Flows seen only as replies (selection named the server, no query captured) are kept:
        // they show up with no queries, and the replay skips them.
        (self.udp, self.tcp, self.skipped)
    }
}

fn pcap_err(file: &str, frame: Option<u64>, e: &PcapError) -> TraceError {
    let why = match e {
        PcapError::IncompleteBuffer => "truncated: the file ends inside this frame".to_string(),
        PcapError::InvalidField(f) => format!("damaged record: {f}"),
        PcapError::InvalidInterfaceId(n) => {
            format!("refers to interface {n}, which no interface description block defines")
        }
        other => format!("damaged record: {other}"),
    };
    TraceError {
        file: file.to_string(),
        frame,
        why,
    }
}

fn link_name(link: u32) -> String {
    format!("{:?} ({link})", DataLink::from(link))
}

impl Trace {
    /// Reads and parses a capture file.
    pub fn open(path: &Path, opts: &ParseOptions) -> Result<Trace, TraceError> {
        let data = std::fs::read(path).map_err(|e| TraceError {
            file: path.display().to_string(),
            frame: None,
            why: format!("cannot read it: {e}"),
        })?;
        Trace::parse(&path.display().to_string(), &data, opts)
    }

    /// Reads and parses a capture file, keeping only the frames `filter` accepts (see
    /// [`Trace::parse_filtered`]).
    pub fn open_filtered(
        path: &Path,
        opts: &ParseOptions,
        filter: &mut dyn FnMut(u32, &[u8]) -> bool,
    ) -> Result<Trace, TraceError> {
        let data = std::fs::read(path).map_err(|e| TraceError {
            file: path.display().to_string(),
            frame: None,
            why: format!("cannot read it: {e}"),
        })?;
        Trace::parse_filtered(&path.display().to_string(), &data, opts, filter)
    }

    /// Parses a capture held in memory (pcap or pcapng, by its magic number).
    pub fn parse(file: &str, data: &[u8], opts: &ParseOptions) -> Result<Trace, TraceError> {
        Trace::parse_filtered(file, data, opts, &mut |_, _| true)
    }

    /// [`Trace::parse`], keeping only the frames for which `filter(link type, frame bytes)`
    /// is true — a BPF program compiled by the caller for that link type (`pen-sim --filter`,
    /// the lab's `filter` key): this module stays pure. The others count in
    /// [`Skipped::filtered_out`]; times still start at the capture's first frame, and the
    /// selection by server applies to the frames the filter kept.
    pub fn parse_filtered(
        file: &str,
        data: &[u8],
        opts: &ParseOptions,
        filter: &mut dyn FnMut(u32, &[u8]) -> bool,
    ) -> Result<Trace, TraceError> {
        let magic = data.get(..4).map(|m| [m[0], m[1], m[2], m[3]]);
        let mut frames: Vec<(u64, Duration, u32, &[u8])> = Vec::new();
        let err = |frame: Option<u64>, why: String| TraceError {
            file: file.to_string(),
            frame,
            why,
        };
        match magic {
            Some([0x0a, 0x0d, 0x0d, 0x0a]) => {
                let (mut rest, mut parser) =
                    PcapNgParser::new(data).map_err(|e| pcap_err(file, None, &e))?;
                // Per interface: (link type, units per second).
                let mut n = 0u64;
                while !rest.is_empty() {
                    let (r, block) = match parser.next_block(rest) {
                        Ok(x) => x,
                        Err(e) => return Err(pcap_err(file, Some(n + 1), &e)),
                    };
                    rest = r;
                    let (iface, ts, pkt): (u32, Option<Duration>, &[u8]) = match block {
                        Block::EnhancedPacket(p) => {
                            let data: &[u8] = match p.data {
                                std::borrow::Cow::Borrowed(b) => b,
                                std::borrow::Cow::Owned(_) => {
                                    return Err(err(Some(n + 1), "unexpected copy".into()));
                                }
                            };
                            (p.interface_id, Some(p.timestamp), data)
                        }
                        Block::SimplePacket(p) => {
                            let data: &[u8] = match p.data {
                                std::borrow::Cow::Borrowed(b) => b,
                                std::borrow::Cow::Owned(_) => {
                                    return Err(err(Some(n + 1), "unexpected copy".into()));
                                }
                            };
                            (0, None, data)
                        }
                        _ => continue,
                    };
                    n += 1;
                    let Some(idb) = parser.interfaces().get(iface as usize) else {
                        return Err(err(
                            Some(n),
                            format!(
                                "refers to interface {iface}, but the file describes {} \
                                 interface(s) before it",
                                parser.interfaces().len()
                            ),
                        ));
                    };
                    let link = u32::from(idb.linktype);
                    // pcap-file hands over the raw timestamp units as nanoseconds; scale them
                    // by the interface's if_tsresol (default: microseconds).
                    let ts = ts.map_or(Duration::ZERO, |t| {
                        let units = t.as_nanos();
                        let resol = idb.options.iter().find_map(|o| match o {
                            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                            _ => None,
                        });
                        scale_units(units, resol.unwrap_or(6))
                    });
                    frames.push((n, ts, link, pkt));
                }
            }
            Some(_) => {
                let (mut rest, parser) = PcapParser::new(data).map_err(|e| {
                    let m = u32::from_be_bytes(magic.unwrap_or_default());
                    match e {
                        PcapError::IncompleteBuffer => {
                            err(None, "truncated: shorter than a pcap file header".into())
                        }
                        _ => err(
                            None,
                            format!(
                                "not a pcap or pcapng file (magic number 0x{m:08x}; expected \
                                 0xa1b2c3d4, 0xa1b23c4d, their byte swaps, or 0x0a0d0d0a)"
                            ),
                        ),
                    }
                })?;
                let link = u32::from(parser.header().datalink);
                let mut n = 0u64;
                while !rest.is_empty() {
                    n += 1;
                    // Raw records: pcap-file's checked packets refuse `orig_len > snaplen`,
                    // which every capture taken with a small `-s` has.
                    let (r, p) = parser
                        .next_raw_packet(rest)
                        .map_err(|e| pcap_err(file, Some(n), &e))?;
                    rest = r;
                    let (unit, max) = match parser.header().ts_resolution {
                        TsResolution::MicroSecond => (1_000, 1_000_000),
                        TsResolution::NanoSecond => (1, 1_000_000_000),
                    };
                    if p.ts_frac >= max {
                        return Err(err(
                            Some(n),
                            format!(
                                "damaged record: timestamp fraction {} is not below {max}",
                                p.ts_frac
                            ),
                        ));
                    }
                    let ts = Duration::new(u64::from(p.ts_sec), p.ts_frac * unit);
                    let d: &[u8] = match p.data {
                        std::borrow::Cow::Borrowed(b) => b,
                        std::borrow::Cow::Owned(_) => {
                            return Err(err(Some(n), "unexpected copy".into()));
                        }
                    };
                    frames.push((n, ts, link, d));
                }
            }
            None => return Err(err(None, "empty or shorter than 4 bytes".into())),
        }
        let mut b = Builder {
            selection: opts.selection.clone(),
            ..Builder::default()
        };
        let epoch = frames.first().map_or(Duration::ZERO, |f| f.1);
        let mut last = Duration::ZERO;
        for &(n, ts, link, pkt) in &frames {
            if !supported_link(link) {
                return Err(err(
                    Some(n),
                    format!(
                        "unsupported link type {}; pen-sim reads Ethernet (1), Linux cooked v1 \
                         (113) and v2 (276), raw IP (101, 228, 229) and BSD loopback (0, 108)",
                        link_name(link)
                    ),
                ));
            }
            // Never backwards: a capture merged out of order keeps the latest time.
            let at = ts.saturating_sub(epoch).max(last);
            last = at;
            if !filter(link, pkt) {
                b.skipped.filtered_out += 1;
                continue;
            }
            let seg = link_payload(link, pkt).and_then(ip_segment);
            match seg {
                Ok(s) => b.segment(n, at, s),
                Err(NoSegment::NotIp) => b.skipped.not_ip += 1,
                Err(NoSegment::OtherProtocol) => b.skipped.other_protocol += 1,
                Err(NoSegment::Fragment) => b.skipped.fragments += 1,
                Err(NoSegment::Malformed) => {
                    b.skipped.malformed += 1;
                    b.skipped.first_malformed.get_or_insert(n);
                }
            }
        }
        let (udp, tcp, skipped) = b.finish();
        Ok(Trace {
            file: file.to_string(),
            frames: frames.len() as u64,
            epoch,
            duration: last,
            udp,
            tcp,
            skipped,
        })
    }

    /// One line per kind of flow, for progress output.
    pub fn summary(&self) -> String {
        let missing = self.tcp.iter().filter(|s| s.start_missing).count();
        let s = &self.skipped;
        let mut out = format!(
            "{}: {} frames over {:.3}s: {} UDP flows ({} datagrams), {} TCP sessions ({} without \
             their start)",
            self.file,
            self.frames,
            self.duration.as_secs_f64(),
            self.udp.len(),
            self.udp.iter().map(|f| f.queries.len()).sum::<usize>(),
            self.tcp.len(),
            missing,
        );
        let skipped = s.not_ip
            + s.other_protocol
            + s.not_selected
            + s.filtered_out
            + s.fragments
            + s.malformed;
        if skipped > 0 {
            out.push_str(&format!(
                "; skipped {} frames (not IP {}, other protocol {}, not selected {}, filtered \
                 out {}, fragments {}, malformed {}{})",
                skipped,
                s.not_ip,
                s.other_protocol,
                s.not_selected,
                s.filtered_out,
                s.fragments,
                s.malformed,
                s.first_malformed
                    .map(|f| format!(", first at frame {f}"))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

/// `units` of 10^-r seconds (high bit set: 2^-r) as a duration.
fn scale_units(units: u128, resol: u8) -> Duration {
    let nanos = if resol & 0x80 != 0 {
        let shift = u32::from(resol & 0x7f).min(127);
        units.saturating_mul(1_000_000_000) >> shift
    } else {
        let r = u32::from(resol);
        if r <= 9 {
            units.saturating_mul(10u128.pow(9 - r))
        } else {
            units / 10u128.pow((r - 9).min(38))
        }
    };
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
