//! Frame injection (tcpreplay's job inside the lab): frames from a pcap (selected by a BPF
//! filter) or generated ones (spoofed SYN bursts, ARP probes, NDP solicitations, malformed
//! frames) sent out of a host's interface with libpcap's `pcap_sendpacket`, rewritten to the
//! topology (MACs, IPv4/IPv6 addresses, checksums recomputed), at the recorded pace, a given
//! rate or as fast as possible, bounded in count and time.
//!
//! Pure here: rewriting, generating and scheduling (unit-tested); [`send`] is the thin shell
//! (libpcap in the host's namespace).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use pen::engine::wire;

/// At most this many frames per step.
pub const MAX_FRAMES: usize = 100_000;

/// How frames are rewritten before they are sent. `None` keeps the field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub eth_src: Option<[u8; 6]>,
    pub eth_dst: Option<[u8; 6]>,
    pub ip_src: Option<IpAddr>,
    pub ip_dst: Option<IpAddr>,
}

/// When frames go out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// The gaps of the capture (generated frames: as fast as possible).
    Recorded,
    /// Frames per second.
    Rate(f64),
    Fast,
}

/// Generated frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Generate {
    /// TCP SYNs from random addresses of `src` (net, prefix) and random ports to `dst:dport`.
    Syn {
        src: (IpAddr, u8),
        dst: IpAddr,
        dport: u16,
    },
    /// ARP who-has `target` from `sender` (IPv4), broadcast.
    Arp { sender: Ipv4Addr, target: Ipv4Addr },
    /// NDP neighbour solicitations for `target` from `sender` (IPv6), to the solicited-node
    /// multicast address.
    Ndp { sender: Ipv6Addr, target: Ipv6Addr },
    /// IPv4 frames to `dst` with damaged headers (bad IHL, a total length beyond the frame,
    /// a TCP header cut short), in turn.
    Malformed { dst: Ipv4Addr },
}

impl std::fmt::Display for Generate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Generate::Syn { src, dst, dport } => {
                write!(f, "SYNs from {}/{} to {dst}:{dport}", src.0, src.1)
            }
            Generate::Arp { sender, target } => write!(f, "ARP who-has {target} from {sender}"),
            Generate::Ndp { sender, target } => {
                write!(f, "NDP solicitations for {target} from {sender}")
            }
            Generate::Malformed { dst } => write!(f, "malformed IPv4 to {dst}"),
        }
    }
}

/// Rewrites one Ethernet frame (IPv4 or IPv6 addresses of the matching family; IPv4 header
/// and TCP/UDP/ICMPv6 checksums recomputed; a payload cut by the capture's snaplen is padded
/// with zeros to the length its IP header gives). `None`: not an Ethernet frame.
pub fn rewrite(frame: &[u8], rw: &Rewrite) -> Option<Vec<u8>> {
    if frame.len() < 14 {
        return None;
    }
    let mut f = frame.to_vec();
    if let Some(d) = rw.eth_dst {
        f[0..6].copy_from_slice(&d);
    }
    if let Some(s) = rw.eth_src {
        f[6..12].copy_from_slice(&s);
    }
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    match ethertype {
        0x0800 => rewrite_v4(&mut f, rw),
        0x86dd => rewrite_v6(&mut f, rw),
        _ => {}
    }
    Some(f)
}

fn rewrite_v4(f: &mut Vec<u8>, rw: &Rewrite) {
    let Some(&vihl) = f.get(14) else { return };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || f.len() < 14 + ihl {
        return;
    }
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    if total >= ihl && f.len() < 14 + total {
        f.resize(14 + total, 0);
    }
    if let Some(IpAddr::V4(s)) = rw.ip_src {
        f[26..30].copy_from_slice(&s.octets());
    }
    if let Some(IpAddr::V4(d)) = rw.ip_dst {
        f[30..34].copy_from_slice(&d.octets());
    }
    f[24] = 0;
    f[25] = 0;
    let c = wire::ipv4_header_checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let fragmented = u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0;
    if fragmented || total < ihl || f.len() < 14 + total {
        return;
    }
    let (src, dst) = (
        Ipv4Addr::new(f[26], f[27], f[28], f[29]),
        Ipv4Addr::new(f[30], f[31], f[32], f[33]),
    );
    let proto = f[23];
    let seg = &mut f[14 + ihl..14 + total];
    let at = match proto {
        6 if seg.len() >= 20 => 16,
        // A zero UDP checksum means "none" over IPv4: keep it so.
        17 if seg.len() >= 8 && (seg[6], seg[7]) != (0, 0) => 6,
        _ => return,
    };
    seg[at] = 0;
    seg[at + 1] = 0;
    let c = wire::l4_checksum_v4(src, dst, proto, seg);
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn rewrite_v6(f: &mut Vec<u8>, rw: &Rewrite) {
    if f.len() < 54 || f[14] >> 4 != 6 {
        return;
    }
    let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
    if f.len() < 54 + plen {
        f.resize(54 + plen, 0);
    }
    if let Some(IpAddr::V6(s)) = rw.ip_src {
        f[22..38].copy_from_slice(&s.octets());
    }
    if let Some(IpAddr::V6(d)) = rw.ip_dst {
        f[38..54].copy_from_slice(&d.octets());
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&f[22..38]);
    let src = Ipv6Addr::from(a);
    a.copy_from_slice(&f[38..54]);
    let dst = Ipv6Addr::from(a);
    let next = f[20];
    let seg = &mut f[54..54 + plen];
    let at = match next {
        6 if seg.len() >= 20 => 16,
        17 if seg.len() >= 8 => 6,
        58 if seg.len() >= 4 => 2,
        _ => return,
    };
    seg[at] = 0;
    seg[at + 1] = 0;
    let c = wire::l4_checksum_v6(src, dst, next, seg);
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// splitmix64: the generated frames are the same for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A random address of `net/prefix` (host bits random).
fn random_in(net: IpAddr, prefix: u8, r: &mut Rng) -> IpAddr {
    match net {
        IpAddr::V4(n) => {
            let host_bits = 32 - u32::from(prefix.min(32));
            let mask = if host_bits == 32 {
                u32::MAX
            } else {
                (1u32 << host_bits) - 1
            };
            IpAddr::V4(Ipv4Addr::from(
                (u32::from(n) & !mask) | (r.next() as u32 & mask),
            ))
        }
        IpAddr::V6(n) => {
            let host_bits = 128 - u32::from(prefix.min(128));
            let mask = if host_bits == 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let rnd = (u128::from(r.next()) << 64) | u128::from(r.next());
            IpAddr::V6(Ipv6Addr::from((u128::from(n) & !mask) | (rnd & mask)))
        }
    }
}

fn eth_header(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

fn tcp_syn(sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t
}

fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h[6] = 0x40;
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hops: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = hops;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// `count` generated frames from MAC `src_mac` to `dst_mac` (ARP and NDP use broadcast and
/// the solicited-node multicast MAC), checksums right (but for the malformed ones).
pub fn generate(g: &Generate, count: usize, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<Vec<u8>> {
    let mut r = Rng(0x70e4_1ab5);
    let none = Rewrite::default();
    (0..count)
        .map(|i| match g {
            Generate::Syn { src, dst, dport } => {
                let s = random_in(src.0, src.1, &mut r);
                let sport = 1024 + (r.next() % 64_000) as u16;
                let seq = r.next() as u32;
                let seg = tcp_syn(sport, *dport, seq);
                let mut f = match (s, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => eth_header(dst_mac, src_mac, 0x0800)
                        .into_iter()
                        .chain(ipv4_packet(s, *d, 6, &seg))
                        .collect::<Vec<u8>>(),
                    (IpAddr::V6(s), IpAddr::V6(d)) => eth_header(dst_mac, src_mac, 0x86dd)
                        .into_iter()
                        .chain(ipv6_packet(s, *d, 6, 64, &seg))
                        .collect(),
                    // Validation refuses mixed families.
                    _ => Vec::new(),
                };
                if !f.is_empty() {
                    f = rewrite(&f, &none).unwrap_or_default();
                }
                f
            }
            Generate::Arp { sender, target } => {
                let mut f = eth_header([0xff; 6], src_mac, 0x0806);
                f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
                f.extend_from_slice(&src_mac);
                f.extend_from_slice(&sender.octets());
                f.extend_from_slice(&[0; 6]);
                f.extend_from_slice(&target.octets());
                f.resize(60, 0);
                f
            }
            Generate::Ndp { sender, target } => {
                let t = target.octets();
                let group = Ipv6Addr::new(
                    0xff02,
                    0,
                    0,
                    0,
                    0,
                    1,
                    0xff00 | u16::from(t[13]),
                    u16::from_be_bytes([t[14], t[15]]),
                );
                let mac = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
                let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
                icmp.extend_from_slice(&t);
                icmp.extend_from_slice(&[1, 1]);
                icmp.extend_from_slice(&src_mac);
                let f = eth_header(mac, src_mac, 0x86dd)
                    .into_iter()
                    .chain(ipv6_packet(*sender, group, 58, 255, &icmp))
                    .collect::<Vec<u8>>();
                rewrite(&f, &none).unwrap_or_default()
            }
            Generate::Malformed { dst } => {
                let src = Ipv4Addr::new(198, 51, 100, 1 + (i % 200) as u8);
                let seg = tcp_syn(40_000 + i as u16, 80, i as u32);
                let mut p = ipv4_packet(src, *dst, 6, &seg);
                match i % 3 {
                    0 => p[0] = 0x43,                                     // IHL 3 (< 5)
                    1 => p[2..4].copy_from_slice(&1500u16.to_be_bytes()), // beyond the frame
                    _ => {
                        p.truncate(20 + 8); // TCP header cut short
                        p[2..4].copy_from_slice(&28u16.to_be_bytes());
                    }
                }
                let mut f = eth_header(dst_mac, src_mac, 0x0800);
                f.extend_from_slice(&p);
                f
            }
        })
        .filter(|f| !f.is_empty())
        .collect()
}

/// When each frame goes out, after the first: capture gaps (`Recorded`), `1/rate` apart, or
/// all at once.
pub fn schedule(times: &[Duration], pace: Pace) -> Vec<Duration> {
    let first = times.first().copied().unwrap_or_default();
    times
        .iter()
        .enumerate()
        .map(|(i, t)| match pace {
            Pace::Recorded => t.saturating_sub(first),
            Pace::Rate(r) if r > 0.0 => Duration::from_secs_f64(i as f64 / r),
            _ => Duration::ZERO,
        })
        .collect()
}

/// Reads up to `max` frames of an Ethernet pcap/pcapng that `filter` (BPF) selects, with
/// their capture times.
pub fn read_frames(
    path: &std::path::Path,
    filter: Option<&str>,
    max: usize,
) -> Result<Vec<(Duration, Vec<u8>)>> {
    let mut cap = pcap::Capture::from_file(path)
        .with_context(|| format!("opening capture {}", path.display()))?;
    let link = cap.get_datalink();
    if link != pcap::Linktype::ETHERNET {
        bail!(
            "{}: link type {link:?}; frames are injected from Ethernet captures only",
            path.display()
        );
    }
    if let Some(f) = filter {
        cap.filter(f, true).with_context(|| {
            format!("filter {f:?}: not a valid BPF expression (e.g. \"tcp[tcpflags] == tcp-syn\")")
        })?;
    }
    let mut out = Vec::new();
    while out.len() < max {
        match cap.next_packet() {
            Ok(p) => {
                out.push((crate::capture::packet_time(p.header), p.data.to_vec()));
            }
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(out)
}

/// Sends `frames` out of `iface` in namespace `ns` at `offsets` after the start, giving up at
/// `timeout` or when `keep_going` says so. Returns how many were sent.
pub fn send(
    ns: &str,
    iface: &str,
    frames: Vec<Vec<u8>>,
    offsets: Vec<Duration>,
    timeout: Duration,
    keep_going: impl Fn() -> bool,
) -> Result<usize> {
    let dev = iface.to_string();
    let mut cap = crate::netns::in_netns(ns, move || -> Result<pcap::Capture<pcap::Active>> {
        pcap::Capture::from_device(dev.as_str())
            .map_err(|e| anyhow!("{e}"))?
            .open()
            .map_err(|e| anyhow!("cannot open the interface: {e}"))
    })?
    .with_context(|| format!("injecting on {iface:?} in namespace {ns:?}"))?;
    let t0 = Instant::now();
    let mut sent = 0;
    for (f, at) in frames.iter().zip(offsets) {
        loop {
            let now = t0.elapsed();
            if now >= at {
                break;
            }
            if now >= timeout || !keep_going() {
                return Ok(sent);
            }
            std::thread::sleep((at - now).min(Duration::from_millis(20)));
        }
        if t0.elapsed() >= timeout || !keep_going() {
            break;
        }
        cap.sendpacket(f.as_slice()).with_context(|| {
            format!("sending frame {} of {} on {iface}", sent + 1, frames.len())
        })?;
        sent += 1;
    }
    Ok(sent)
}

/// Runs an `inject` step (the shell): read or generate, rewrite, schedule, send.
pub fn run_step(
    topo: &crate::topology::Topology,
    i: &crate::scenario::PlannedInject,
    keep_going: impl Fn() -> bool,
) -> Result<String> {
    use crate::inject;
    use crate::scenario::InjectSource;
    let own_mac = topo.mac(&i.host, &i.iface)?;
    let mut rw = i.rewrite.clone();
    let eth_src = *rw.eth_src.get_or_insert(own_mac);
    let (frames, times): (Vec<Vec<u8>>, Vec<Duration>) = match &i.source {
        InjectSource::Pcap { path, filter, .. } => {
            let read = inject::read_frames(path, filter.as_deref(), i.count)?;
            if read.is_empty() {
                bail!(
                    "{} has no frame{}",
                    path.display(),
                    filter
                        .as_ref()
                        .map(|f| format!(" that {f:?} selects"))
                        .unwrap_or_default()
                );
            }
            let mut frames = Vec::new();
            let mut times = Vec::new();
            for (t, f) in read {
                if let Some(f) = inject::rewrite(&f, &rw) {
                    frames.push(f);
                    times.push(t);
                }
            }
            (frames, times)
        }
        InjectSource::Generate(g) => {
            let dst = rw.eth_dst.unwrap_or([0xff; 6]);
            let frames = inject::generate(g, i.count, eth_src, dst);
            let times = vec![Duration::ZERO; frames.len()];
            (frames, times)
        }
    };
    let offsets = inject::schedule(&times, i.pace);
    let total = frames.len();
    let t0 = Instant::now();
    let sent = inject::send(
        &topo.ns_name(&i.host),
        &i.iface,
        frames,
        offsets,
        i.timeout,
        keep_going,
    )?;
    let ms = t0.elapsed().as_millis();
    if sent < total {
        bail!(
            "sent {sent} of {total} frames in {ms} ms: timeout_ms {} (or the scenario's) came first",
            i.timeout.as_millis()
        );
    }
    Ok(format!("sent {sent} frames in {ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;

    fn syn_frame() -> Vec<u8> {
        let mut f = eth_header([2, 0, 0, 0, 0, 5], [2, 0, 0, 0, 0, 12], 0x0800);
        f.extend_from_slice(&ipv4_packet(
            Ipv4Addr::new(203, 0, 113, 250),
            Ipv4Addr::new(192, 0, 2, 80),
            6,
            &tcp_syn(40000, 22, 7),
        ));
        f
    }

    #[test]
    fn rewrite_sets_macs_and_addresses_and_fixes_checksums() {
        let rw = Rewrite {
            eth_src: Some([2, 0, 0, 0, 0, 0xa]),
            eth_dst: Some([2, 0, 0, 0, 0, 0xb]),
            ip_src: None,
            ip_dst: Some("10.75.0.200".parse().unwrap()),
        };
        let f = rewrite(&syn_frame(), &rw).unwrap();
        let d = decode(0, Duration::ZERO, &f);
        assert_eq!(d.eth_src, Some([2, 0, 0, 0, 0, 0xa]));
        assert_eq!(d.eth_dst, Some([2, 0, 0, 0, 0, 0xb]));
        assert_eq!(d.ip_src, Some("203.0.113.250".parse().unwrap()));
        assert_eq!(d.ip_dst, Some("10.75.0.200".parse().unwrap()));
        assert_eq!(d.dst_port, Some(22));
        assert!(d.checksums_valid(), "{d}");
        // A frame cut by the snaplen is padded to its IP length, checksums right.
        let mut long = syn_frame();
        long[16..18].copy_from_slice(&(40u16 + 100).to_be_bytes());
        let f = rewrite(&long, &rw).unwrap();
        assert_eq!(f.len(), 14 + 140);
        assert!(decode(0, Duration::ZERO, &f).checksums_valid());
        assert_eq!(rewrite(&[0u8; 10], &rw), None);
    }

    #[test]
    fn generated_frames_are_what_they_say() {
        let (me, them) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let syns = generate(
            &Generate::Syn {
                src: ("203.0.113.0".parse().unwrap(), 24),
                dst: "10.0.0.200".parse().unwrap(),
                dport: 80,
            },
            50,
            me,
            them,
        );
        assert_eq!(syns.len(), 50);
        let mut sources = std::collections::BTreeSet::new();
        for f in &syns {
            let d = decode(0, Duration::ZERO, f);
            assert!(d.checksums_valid(), "{d}");
            assert!(d.tcp.as_ref().is_some_and(|t| t.syn && !t.ack));
            assert_eq!(d.dst_port, Some(80));
            let Some(IpAddr::V4(s)) = d.ip_src else {
                panic!("{d}")
            };
            assert_eq!(s.octets()[..3], [203, 0, 113]);
            sources.insert(s);
        }
        assert!(
            sources.len() > 30,
            "spoofed sources vary: {}",
            sources.len()
        );
        assert_eq!(
            syns,
            generate(
                &Generate::Syn {
                    src: ("203.0.113.0".parse().unwrap(), 24),
                    dst: "10.0.0.200".parse().unwrap(),
                    dport: 80
                },
                50,
                me,
                them
            )
        );
        let arp = generate(
            &Generate::Arp {
                sender: "10.0.0.10".parse().unwrap(),
                target: "10.0.0.200".parse().unwrap(),
            },
            2,
            me,
            them,
        );
        let d = decode(0, Duration::ZERO, &arp[0]);
        let a = d.arp.unwrap();
        assert_eq!((a.op, a.target_ip), (1, "10.0.0.200".parse().unwrap()));
        assert_eq!(d.eth_dst, Some([0xff; 6]));
        let ndp = generate(
            &Generate::Ndp {
                sender: "fd00::10".parse().unwrap(),
                target: "fd00::200".parse().unwrap(),
            },
            1,
            me,
            them,
        );
        let d = decode(0, Duration::ZERO, &ndp[0]);
        assert_eq!(d.eth_dst, Some([0x33, 0x33, 0xff, 0, 2, 0]));
        assert_eq!(d.ip_dst, Some("ff02::1:ff00:200".parse().unwrap()));
        assert_eq!(d.ttl, Some(255));
        assert!(d.checksums_valid(), "{d}");
        let bad = generate(
            &Generate::Malformed {
                dst: "10.0.0.200".parse().unwrap(),
            },
            3,
            me,
            them,
        );
        for f in &bad {
            let d = decode(0, Duration::ZERO, f);
            assert!(d.error.is_some() || !d.checksums_valid(), "{d}");
        }
    }

    #[test]
    fn schedules_follow_the_pace() {
        let t = [
            Duration::from_millis(1000),
            Duration::from_millis(1010),
            Duration::from_millis(1500),
        ];
        assert_eq!(
            schedule(&t, Pace::Recorded),
            [
                Duration::ZERO,
                Duration::from_millis(10),
                Duration::from_millis(500)
            ]
        );
        assert_eq!(
            schedule(&t, Pace::Rate(100.0)),
            [
                Duration::ZERO,
                Duration::from_millis(10),
                Duration::from_millis(20)
            ]
        );
        assert_eq!(schedule(&t, Pace::Fast), [Duration::ZERO; 3]);
    }
}
