//! Synthetic captures with no private data, for `captures/traces/` and the benchmarks: a
//! seeded generator writes Ethernet pcap bytes (documentation address ranges only:
//! clients in 198.51.100.0/24 and 203.0.113.0/24, servers in 192.0.2.0/24). Pure and
//! deterministic: the same kind, size and seed give the same bytes.
//!
//! - `dns`: a DNS client population with uneven (Zipf-like) query rates; some clients keep
//!   their source port (resolvers), the others take a new one per query (stub clients).
//! - `http`: HTTP/1.1 keep-alive sessions from many clients, several requests each, with
//!   heavy-tailed (Pareto) response sizes, asked for as `GET /bytes/N` and answered with the
//!   head pen-lab's HTTP backend sends, so a live replay gets the same byte counts. Frames are cut at [`SNAPLEN`] bytes (the lengths
//!   stay right), so large responses cost little file space.
//! - `mix`: both, plus a SYN scan of the server's first 1024 ports answered by RSTs.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

/// Bytes kept per frame.
pub const SNAPLEN: u32 = 256;
/// The DNS server of the traces.
pub const DNS_SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 53), 53);
/// The HTTP server of the traces.
pub const HTTP_SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 80), 80);

/// A small deterministic PRNG (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// The `i`-th client address (two /24 documentation ranges, then on into 10.x for large counts).
pub fn client_ip(i: u32) -> Ipv4Addr {
    match i {
        0..=253 => Ipv4Addr::new(198, 51, 100, 1 + i as u8),
        254..=507 => Ipv4Addr::new(203, 0, 113, (i - 253) as u8),
        _ => {
            let n = i - 508;
            Ipv4Addr::new(100, 64 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
        }
    }
}

struct Frames {
    frames: Vec<(Duration, u32, Vec<u8>)>,
    ip_id: u16,
}

const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const MAC_SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];

impl Frames {
    fn new() -> Frames {
        Frames {
            frames: Vec::new(),
            ip_id: 1,
        }
    }

    /// One IPv4 frame; `l4` is the transport header and payload, `wire_extra` payload bytes
    /// that were on the wire but are not in `l4` (cut by the snaplen).
    fn ipv4(
        &mut self,
        at: Duration,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        proto: u8,
        l4: &[u8],
        wire_extra: usize,
    ) {
        let to_server = dst == DNS_SERVER || dst == HTTP_SERVER || dst.ip().octets()[0] == 192;
        let mut f = Vec::with_capacity(34 + l4.len());
        f.extend_from_slice(if to_server { &MAC_SERVER } else { &MAC_CLIENT });
        f.extend_from_slice(if to_server { &MAC_CLIENT } else { &MAC_SERVER });
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + l4.len() + wire_extra).min(65535) as u16;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        self.ip_id = self.ip_id.wrapping_add(1);
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src.ip().octets());
        ip[16..20].copy_from_slice(&dst.ip().octets());
        let mut sum = 0u32;
        for c in ip.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        let orig = (f.len() + wire_extra) as u32;
        f.truncate(SNAPLEN as usize);
        self.frames.push((at, orig, f));
    }

    fn udp(&mut self, at: Duration, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
        let mut l4 = Vec::with_capacity(8 + payload.len());
        l4.extend_from_slice(&src.port().to_be_bytes());
        l4.extend_from_slice(&dst.port().to_be_bytes());
        l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]); // no checksum (allowed for UDP over IPv4)
        l4.extend_from_slice(payload);
        self.ipv4(at, src, dst, 17, &l4, 0);
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp(
        &mut self,
        at: Duration,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
        wire_len: usize,
    ) {
        let mut l4 = Vec::with_capacity(20 + payload.len());
        l4.extend_from_slice(&src.port().to_be_bytes());
        l4.extend_from_slice(&dst.port().to_be_bytes());
        l4.extend_from_slice(&seq.to_be_bytes());
        l4.extend_from_slice(&ack.to_be_bytes());
        l4.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        l4.extend_from_slice(payload);
        self.ipv4(at, src, dst, 6, &l4, wire_len.saturating_sub(payload.len()));
    }

    fn pcap(mut self) -> Vec<u8> {
        // Stable sort: frames at the same time keep their generation order.
        self.frames.sort_by_key(|f| f.0);
        let hdr = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        if let Ok(mut w) = PcapWriter::with_header(&mut out, hdr) {
            let base = Duration::from_secs(1_700_000_000);
            for (at, orig, f) in &self.frames {
                let _ = w.write_packet(&PcapPacket::new(base + *at, *orig, f));
            }
        }
        out
    }
}

/// A DNS query for `hostN.example.com`, type A.
fn dns_query(id: u16, n: u64) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let label = format!("host{n}");
    q.push(label.len() as u8);
    q.extend_from_slice(label.as_bytes());
    q.push(7);
    q.extend_from_slice(b"example");
    q.push(3);
    q.extend_from_slice(b"com");
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

fn dns_answer(query: &[u8]) -> Vec<u8> {
    let mut a = query.to_vec();
    if a.len() > 7 {
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
    }
    a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    a
}

/// DNS: `clients` clients over `secs` seconds, about `queries` queries in all.
fn gen_dns(fr: &mut Frames, rng: &mut Rng, clients: u32, queries: u32, secs: f64, t0: f64) {
    // Zipf-like weights 1/(k+1).
    let weights: Vec<f64> = (0..clients).map(|k| 1.0 / f64::from(k + 1)).collect();
    let total: f64 = weights.iter().sum();
    let mut id: u16 = 1;
    for (k, w) in weights.iter().enumerate() {
        let k = k as u32;
        let n = ((f64::from(queries) * w / total).round() as u32).max(1);
        let resolver = k.is_multiple_of(2);
        let fixed_port = 1024 + (rng.below(60000) as u16);
        let ip = client_ip(k);
        for _ in 0..n {
            let at = t0 + rng.unit() * secs;
            let port = if resolver {
                fixed_port
            } else {
                1024 + rng.below(60000) as u16
            };
            let c = SocketAddrV4::new(ip, port);
            let q = dns_query(id, rng.below(1000));
            id = id.wrapping_add(1);
            let at = Duration::from_secs_f64(at);
            fr.udp(at, c, DNS_SERVER, &q);
            let rtt = Duration::from_micros(200 + rng.below(3000));
            fr.udp(at + rtt, DNS_SERVER, c, &dns_answer(&q));
        }
    }
}

/// A Pareto-distributed size (alpha 1.2, minimum `min`), capped at `cap`.
fn pareto(rng: &mut Rng, min: f64, cap: f64) -> u64 {
    let u = 1.0 - rng.unit();
    (min / u.powf(1.0 / 1.2)).min(cap) as u64
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const MSS: u64 = 1448;

/// HTTP: `clients` clients, each 1-3 keep-alive sessions of 1-5 requests, over `secs` seconds.
fn gen_http(fr: &mut Frames, rng: &mut Rng, clients: u32, secs: f64, t0: f64) {
    for k in 0..clients {
        let ip = client_ip(k);
        let sessions = 1 + rng.below(3);
        for _ in 0..sessions {
            let port = 1024 + rng.below(60000) as u16;
            let c = SocketAddrV4::new(ip, port);
            let s = HTTP_SERVER;
            let mut t = t0 + rng.unit() * secs * 0.8;
            let rtt = 0.0005 + rng.unit() * 0.002;
            let cisn = rng.next_u64() as u32;
            let sisn = rng.next_u64() as u32;
            let d = Duration::from_secs_f64;
            fr.tcp(d(t), c, s, cisn, 0, SYN, &[], 0);
            fr.tcp(
                d(t + rtt / 2.0),
                s,
                c,
                sisn,
                cisn.wrapping_add(1),
                SYN | ACK,
                &[],
                0,
            );
            t += rtt;
            fr.tcp(
                d(t),
                c,
                s,
                cisn.wrapping_add(1),
                sisn.wrapping_add(1),
                ACK,
                &[],
                0,
            );
            let mut cseq = cisn.wrapping_add(1);
            let mut sseq = sisn.wrapping_add(1);
            for _ in 0..1 + rng.below(5) {
                let obj = rng.below(10_000);
                let size = pareto(rng, 500.0, 2_000_000.0);
                // pen-lab's HTTP backend answers `GET /bytes/N` with this very head and N
                // bytes, so a live replay gets back what the capture has.
                let req =
                    format!("GET /bytes/{size}?obj={obj} HTTP/1.1\r\nHost: example.com\r\n\r\n");
                fr.tcp(d(t), c, s, cseq, sseq, ACK | PSH, req.as_bytes(), req.len());
                cseq = cseq.wrapping_add(req.len() as u32);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\nConnection: keep-alive\r\n\r\n"
                );
                let total = head.len() as u64 + size;
                let mut sent = 0u64;
                let mut ts = t + rtt / 2.0;
                while sent < total {
                    let n = (total - sent).min(MSS);
                    let payload: Vec<u8> = if sent == 0 {
                        head.as_bytes().to_vec()
                    } else {
                        Vec::new()
                    };
                    let shown = payload.len().min(n as usize);
                    fr.tcp(d(ts), s, c, sseq, cseq, ACK, &payload[..shown], n as usize);
                    sseq = sseq.wrapping_add(n as u32);
                    sent += n;
                    ts += 0.00002;
                }
                fr.tcp(d(ts + rtt / 2.0), c, s, cseq, sseq, ACK, &[], 0);
                t = ts + rtt + rng.unit() * 0.5; // think time
            }
            fr.tcp(d(t), c, s, cseq, sseq, FIN | ACK, &[], 0);
            fr.tcp(
                d(t + rtt / 2.0),
                s,
                c,
                sseq,
                cseq.wrapping_add(1),
                FIN | ACK,
                &[],
                0,
            );
            fr.tcp(
                d(t + rtt),
                c,
                s,
                cseq.wrapping_add(1),
                sseq.wrapping_add(1),
                ACK,
                &[],
                0,
            );
        }
    }
}

/// A SYN scan of ports 1-1024 of the HTTP server's address, RSTs from closed ports.
fn gen_scan(fr: &mut Frames, rng: &mut Rng, t0: f64) {
    let scanner = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 250), 61000);
    for p in 1..=1024u16 {
        let at = Duration::from_secs_f64(t0 + f64::from(p) * 0.001);
        let dst = SocketAddrV4::new(*HTTP_SERVER.ip(), p);
        let seq = rng.next_u64() as u32;
        fr.tcp(at, scanner, dst, seq, 0, SYN, &[], 0);
        if p != HTTP_SERVER.port() {
            fr.tcp(
                at + Duration::from_micros(100),
                dst,
                scanner,
                0,
                seq.wrapping_add(1),
                RST | ACK,
                &[],
                0,
            );
        }
    }
}

/// Which trace to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dns,
    Http,
    Mix,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind, String> {
        match s {
            "dns" => Ok(Kind::Dns),
            "http" => Ok(Kind::Http),
            "mix" => Ok(Kind::Mix),
            _ => Err(format!(
                "unknown trace kind {s:?}; expected dns, http or mix"
            )),
        }
    }
}

/// Generates a capture: `clients` clients over `secs` seconds (DNS: about `clients * 4`
/// queries).
pub fn generate(kind: Kind, clients: u32, secs: f64, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut fr = Frames::new();
    match kind {
        Kind::Dns => gen_dns(&mut fr, &mut rng, clients, clients * 4, secs, 0.0),
        Kind::Http => gen_http(&mut fr, &mut rng, clients, secs, 0.0),
        Kind::Mix => {
            gen_dns(&mut fr, &mut rng, clients, clients * 2, secs, 0.0);
            gen_http(&mut fr, &mut rng, clients / 2, secs, 0.0);
            gen_scan(&mut fr, &mut rng, secs / 3.0);
        }
    }
    fr.pcap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::trace::{ParseOptions, Trace};

    #[test]
    fn generated_traces_parse_back_into_the_flows_they_were_made_of() {
        let dns = generate(Kind::Dns, 20, 10.0, 1);
        assert_eq!(dns, generate(Kind::Dns, 20, 10.0, 1), "deterministic");
        let t = Trace::parse("dns.pcap", &dns, &ParseOptions::default()).unwrap();
        assert!(t.tcp.is_empty());
        let queries: usize = t.udp.iter().map(|f| f.queries.len()).sum();
        let replies: usize = t.udp.iter().map(|f| f.replies.len()).sum();
        assert!(
            queries >= 80 - 20 && queries == replies,
            "{queries} {replies}"
        );
        assert!(t.udp.iter().all(|f| f.server.port() == 53));
        let http = generate(Kind::Http, 10, 10.0, 2);
        let t = Trace::parse("http.pcap", &http, &ParseOptions::default()).unwrap();
        assert!(t.tcp.len() >= 10);
        for s in &t.tcp {
            assert!(!s.start_missing && s.closed().is_some());
            assert!(s.client_data.starts_with(b"GET /bytes/"));
            assert!(s.server_bytes >= 500, "{}", s.server_bytes);
            assert_eq!(s.lost_bytes, 0);
        }
        let mix = generate(Kind::Mix, 10, 10.0, 3);
        let sel = ParseOptions {
            selection: crate::sim::trace::Selection {
                servers: vec![crate::sim::trace::ServerSel::parse("tcp:80").unwrap()],
            },
        };
        let t = Trace::parse("mix.pcap", &mix, &sel).unwrap();
        assert!(t.udp.is_empty());
        assert!(t.skipped.not_selected >= 1023 * 2);
    }
}
