//! The DSR + tarpit packet engine (reference §10-§11), sans-IO.
//!
//! No socket, no clock, no randomness: frames come in through [`Engine::process`] with the
//! current time, frames the engine originates (ARP/NDP probes, frames released once a backend's
//! MAC is learned) come out of [`Engine::poll_transmit`], and [`Engine::poll_timeout`] says
//! when the engine next wants `poll_transmit` called. The drivers in [`crate::link`] (live
//! AF_PACKET, offline pcap, in-memory) only move bytes.
//!
//! # What a frame becomes
//! - **ARP request** for the VIP, or for an address the tarpit ACL matches (TCP mode only; never
//!   the VIP or a backend's address), → an ARP reply in place, with our MAC
//!   ([`Verdict::ArpReply`]). Other ARP requests are ignored.
//! - **ARP reply** whose sender is a backend → its MAC is learned ([`Verdict::Learned`]); frames
//!   held for it are released through `poll_transmit`.
//! - **IPv4 to the VIP** (our MAC as destination, protocol TCP, or UDP with `-U`, and the listen
//!   port unless it is 0) → destination MAC := the chosen backend's, source MAC := ours; IP and
//!   TCP/UDP untouched ([`Verdict::Forward`]). When the backend's MAC is not known yet the frame
//!   is copied and held ([`Verdict::Held`]) until it is learned, at most
//!   [`EngineConfig::hold_time`] and [`EngineConfig::hold_max`] frames.
//! - **IPv6** works the same way with Neighbor Discovery in place of ARP ([`ndp`]): a neighbor
//!   solicitation for an IPv6 VIP (or a tarpitted IPv6 address, or our own link-local
//!   address) gets a solicited advertisement in place ([`Verdict::NdpAdvert`]), backends with
//!   IPv6 addresses are solicited from our EUI-64 link-local address and learned from their
//!   advertisements, and IPv6 frames to the VIP are forwarded like IPv4 ones (hop-by-hop,
//!   routing, destination-options and fragment headers are walked to find the ports). A
//!   backend's address family only decides how its MAC is learned.
//! - **TCP SYN to a tarpitted address** → a SYN+ACK in place ([`Verdict::TarpitSynAck`], see
//!   [`tarpit`]); every other segment to it is ignored, except in persist mode
//!   (`tarpit_persist`): the SYN+ACK advertises a zero window, and an ACK, zero-window probe
//!   or data segment of one of the tarpit's connections (checked statelessly, see
//!   [`tarpit::persist_ack`]) gets a zero-window ACK that acknowledges nothing new
//!   ([`Verdict::TarpitAck`]); RST and FIN never get an answer.
//! - **Tarpitted** means permitted by the `tarpit_acl` list or captured by `tarpit_capture`
//!   ([`capture`]: addresses whose ARP requests or neighbor solicitations went unanswered for
//!   the wait, released as soon as a host there speaks). Every ARP packet, solicitation,
//!   advertisement and IP frame the engine sees feeds the capture table.
//! - With `tarpit_rate` ([`ratecap`]) tarpit TCP replies over the cap are dropped
//!   ([`DropReason::TarpitRate`]).
//! - Anything else is ignored ([`IgnoreReason`]) or, when it is not a well-formed frame,
//!   dropped ([`DropReason`]); both are counted by reason in [`Counters`].
//!
//! # Backend choice
//! A weighted Maglev table ([`maglev`]) keyed by the client's address (and source port with
//! `-r`; IP fragments always use the address only so all fragments of a datagram go the same
//! way). It is rebuilt whenever the backend set changes ([`Engine::set_backends`],
//! [`Engine::set_available`]), so a blacklist takes effect on the next frame.
//!
//! # Backend MACs
//! `poll_transmit` emits a broadcast ARP probe (sender IP 0.0.0.0), or a neighbor solicitation
//! for an IPv6 backend, for each backend whose MAC
//! is unknown, at most every [`EngineConfig::probe_interval`], and for every backend again
//! after [`EngineConfig::refresh_interval`] (C Pen: 1 s and 60 s).
//!
//! # Deliberate differences from C Pen
//! - Maglev table rebuilt on every backend change (C Pen: XOR-of-octets table built once).
//! - Tarpit SYN+ACK with options stripped, correct lengths and checksums, keyed-hash ISN,
//!   small window (C Pen: zeroed options kept, checksum right only for 20 option bytes, ISN 42,
//!   the client's window echoed).
//! - The tarpit never answers for the VIP or a backend address, nor for ARP probes (sender
//!   0.0.0.0) of a tarpitted address.
//! - Frames to the VIP must carry our MAC as destination (C Pen takes any frame it sees).
//! - Frames whose backend MAC is unknown are held without blocking the frames behind them.
//! - With checksum offload (the driver reports a partial checksum), the L4 checksum is completed
//!   before the frame is forwarded or held.

pub mod arp;
pub mod capture;
mod config;
pub mod frames;
pub mod maglev;
pub mod ndp;
mod parse;
pub mod ratecap;
pub mod tarpit;
mod verdict;
pub mod wire;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::acl::Acl;

pub use maglev::{Maglev, Member, flow_hash, flow_hash_ip};
pub use wire::{Mac, MacText, fmt_mac, parse_mac};

pub use config::{BackendConfig, EngineConfig, EngineConfigError, config_from_pen_args};
pub use verdict::{
    Counters, DropReason, IgnoreReason, RxMeta, TarpitStatus, Transmit, TxKind, Verdict,
};

use parse::{L3, V6Error, complete_l4_checksum, parse_ipv4, parse_ipv6};

use wire::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, PROTO_TCP, PROTO_UDP};

/// Largest frame the engine accepts (a 9000-byte jumbo payload plus headers and a VLAN tag).
pub const MAX_FRAME: usize = 9216;

#[derive(Debug, Clone)]
struct BackendState {
    cfg: BackendConfig,
    mac: Option<Mac>,
    last_probe: Option<Duration>,
}

#[derive(Debug, Clone)]
struct HeldFrame {
    backend: usize,
    since: Duration,
    frame: Vec<u8>,
}

/// The Maglev table an engine with these backends uses (`None` when none is available): the
/// available backends with an address, in slot order. [`crate::select::dsr::TableDigest`]
/// computes its digest for the `table_hash` control command from the same function.
pub fn table_for(backends: &[BackendConfig]) -> Option<Maglev> {
    let members: Vec<Member> = backends
        .iter()
        .enumerate()
        .filter_map(|(i, b)| match b.ip {
            Some(ip) if b.available => Some(Member {
                backend: i,
                ip,
                weight: b.weight,
            }),
            _ => None,
        })
        .collect();
    Maglev::build(&members)
}

/// The engine. See the module documentation.
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: EngineConfig,
    /// The VIP by family, for the hot path.
    vip4: Option<Ipv4Addr>,
    vip6: Option<Ipv6Addr>,
    /// Our EUI-64 link-local address (answered in neighbor discovery, source of our probes).
    link_local: Ipv6Addr,
    backends: Vec<BackendState>,
    table: Option<Maglev>,
    held: VecDeque<HeldFrame>,
    txq: VecDeque<Transmit>,
    /// No probe is due before this time.
    next_probe_at: Duration,
    counters: Counters,
    /// Moves on whenever a client's frames may go to another MAC than before (table rebuilt,
    /// a backend's MAC changed): what a cache of the engine's choices must be invalidated by.
    epoch: u64,
    /// `tarpit_capture`'s table.
    capture: Option<capture::CaptureTable>,
    /// `tarpit_rate`'s buckets.
    rate: Option<ratecap::RateCap>,
}

impl Engine {
    /// An engine for `cfg`; the table is built at once.
    pub fn new(cfg: EngineConfig) -> Engine {
        let backends = cfg
            .backends
            .iter()
            .map(|&b| BackendState {
                cfg: b,
                mac: None,
                last_probe: None,
            })
            .collect();
        let (vip4, vip6) = match cfg.vip {
            IpAddr::V4(a) => (Some(a), None),
            IpAddr::V6(a) => (None, Some(a)),
        };
        let link_local = ndp::link_local(cfg.mac);
        let mut e = Engine {
            cfg,
            vip4,
            vip6,
            link_local,
            backends,
            table: None,
            held: VecDeque::new(),
            txq: VecDeque::new(),
            next_probe_at: Duration::ZERO,
            counters: Counters::default(),
            epoch: 0,
            capture: None,
            rate: None,
        };
        e.rebuild();
        e.capture = e
            .cfg
            .tarpit_capture
            .map(|c| capture::CaptureTable::new(c, e.never_captured()));
        e.rate = e
            .cfg
            .tarpit_rate
            .map(|r| ratecap::RateCap::new(r, e.cfg.isn_key, Duration::ZERO));
        e
    }

    /// The configuration (its `backends` reflect the latest [`Engine::set_backends`]).
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The learned MAC of backend `i`.
    pub fn backend_mac(&self, i: usize) -> Option<Mac> {
        self.backends.get(i).and_then(|b| b.mac)
    }

    /// The current table (`None` when no backend is available).
    pub fn table(&self) -> Option<&Maglev> {
        self.table.as_ref()
    }

    /// The decision epoch: unchanged as long as every client's frames keep going to the same
    /// backend MAC (see [`crate::link::xdp`], which caches those choices in the kernel).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of frames waiting for a backend MAC.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Replaces the backend list (server added, re-weighted, blacklisted or un-blacklisted).
    /// Learned MACs are kept for slots whose address did not change. The table is rebuilt only
    /// when the set of available (address, weight) pairs changed.
    pub fn set_backends(&mut self, backends: Vec<BackendConfig>) {
        let unchanged = backends.len() == self.backends.len()
            && backends
                .iter()
                .zip(&self.backends)
                .all(|(a, b)| *a == b.cfg);
        if unchanged {
            return;
        }
        let old = std::mem::take(&mut self.backends);
        self.backends = backends
            .iter()
            .enumerate()
            .map(|(i, &b)| match old.get(i) {
                Some(o) if o.cfg.ip == b.ip => BackendState {
                    cfg: b,
                    mac: o.mac,
                    last_probe: o.last_probe,
                },
                _ => BackendState {
                    cfg: b,
                    mac: None,
                    last_probe: None,
                },
            })
            .collect();
        self.cfg.backends = backends;
        self.next_probe_at = Duration::ZERO;
        self.rebuild();
        let never = self.never_captured();
        if let Some(c) = &mut self.capture {
            c.set_excluded(never);
        }
    }

    /// The addresses capture never takes: the VIP, the backends, our link-local address and
    /// the interface's own addresses.
    fn never_captured(&self) -> Vec<IpAddr> {
        let mut v = vec![self.cfg.vip, IpAddr::V6(self.link_local)];
        v.extend(self.backends.iter().filter_map(|b| b.cfg.ip));
        v.extend(self.cfg.own_addrs.iter().copied());
        v
    }

    /// Sets the tarpit's persist mode, capture and rate cap (`tarpit_persist`,
    /// `tarpit_capture`, `tarpit_rate` changed at run time). A capture or rate setting that did
    /// not change keeps its table and buckets; a changed one starts afresh at `now`.
    pub fn set_tarpit_options(
        &mut self,
        persist: bool,
        capture: Option<capture::CaptureConfig>,
        rate: Option<ratecap::RateConfig>,
        now: Duration,
    ) {
        self.cfg.tarpit_persist = persist;
        if self.cfg.tarpit_capture != capture {
            self.cfg.tarpit_capture = capture;
            let never = self.never_captured();
            self.capture = capture.map(|c| capture::CaptureTable::new(c, never));
        }
        if self.cfg.tarpit_rate != rate {
            self.cfg.tarpit_rate = rate;
            self.rate = rate.map(|r| ratecap::RateCap::new(r, self.cfg.isn_key, now));
        }
    }

    /// The capture table, when `tarpit_capture` is set.
    pub fn capture_table(&self) -> Option<&capture::CaptureTable> {
        self.capture.as_ref()
    }

    /// The tarpit's state for the reports: settings, counters, captured addresses (at most
    /// `limit` of them).
    pub fn tarpit_status(&self, limit: usize) -> TarpitStatus {
        let c = &self.counters;
        let (pending, captured, alive) = self.capture.as_ref().map_or((0, 0, 0), |t| t.sizes());
        TarpitStatus {
            persist: self.cfg.tarpit_persist,
            capture: self.cfg.tarpit_capture,
            rate: self.cfg.tarpit_rate,
            syn_acks: c.tarpit_syn_acks,
            acks: c.tarpit_acks,
            held: c.tarpit_held,
            probes: c.tarpit_probes,
            rate_dropped: c.dropped(DropReason::TarpitRate),
            stray: c.ignored(IgnoreReason::TarpitStray),
            capture_counters: self
                .capture
                .as_ref()
                .map(|t| t.counters())
                .unwrap_or_default(),
            pending,
            captured,
            alive,
            captured_addrs: self
                .capture
                .as_ref()
                .map(|t| t.captured(limit))
                .unwrap_or_default(),
        }
    }

    /// Replaces the tarpit's access list (`tarpit_acl N` changed at run time, or the list
    /// itself edited); `None` turns the tarpit off.
    pub fn set_tarpit(&mut self, tarpit: Option<Acl>) {
        if self.cfg.tarpit != tarpit {
            self.cfg.tarpit = tarpit;
        }
    }

    /// Marks backend `i` available or not (blacklist); no-op for an unknown index.
    pub fn set_available(&mut self, i: usize, available: bool) {
        let mut b = self.cfg.backends.clone();
        if let Some(x) = b.get_mut(i) {
            if x.available == available {
                return;
            }
            x.available = available;
            self.set_backends(b);
        }
    }

    fn rebuild(&mut self) {
        self.table = table_for(&self.cfg.backends);
        self.counters.rebuilds += 1;
        self.epoch += 1;
    }

    /// The backend a client (and source port with `-r`) goes to now, if any.
    pub fn choose(&self, src: impl Into<IpAddr>, src_port: u16) -> Option<usize> {
        let port = if self.cfg.per_flow { src_port } else { 0 };
        self.table
            .as_ref()
            .map(|t| t.lookup(flow_hash_ip(src.into(), port)))
    }

    /// Processes one received frame with no driver metadata.
    #[inline]
    pub fn process(&mut self, now: Duration, frame: &mut [u8]) -> Verdict {
        self.process_meta(now, frame, RxMeta::default())
    }

    /// Processes one received frame: decides, rewrites `frame` in place for the transmit
    /// verdicts, counts.
    pub fn process_meta(&mut self, now: Duration, frame: &mut [u8], meta: RxMeta) -> Verdict {
        self.counters.rx += 1;
        let v = self.decide(now, frame, meta);
        self.counters.count(&v);
        v
    }

    fn decide(&mut self, now: Duration, frame: &mut [u8], meta: RxMeta) -> Verdict {
        if frame.len() > MAX_FRAME {
            return Verdict::Dropped(DropReason::Oversized);
        }
        let (Some(dst_mac), Some(src_mac), Some(ethertype)) = (
            wire::mac(frame, wire::eth::DST),
            wire::mac(frame, wire::eth::SRC),
            wire::be16(frame, wire::eth::TYPE),
        ) else {
            return Verdict::Dropped(DropReason::Truncated);
        };
        let ip = match ethertype {
            ETHERTYPE_IPV4 => match parse_ipv4(frame) {
                Ok(ip) => ip,
                Err(d) => return Verdict::Dropped(d),
            },
            ETHERTYPE_ARP => {
                if src_mac == self.cfg.mac {
                    return Verdict::Ignored(IgnoreReason::OwnFrame);
                }
                return self.arp(now, frame);
            }
            ETHERTYPE_IPV6 => match parse_ipv6(frame) {
                Ok(ip) => ip,
                Err(V6Error::Drop(d)) => return Verdict::Dropped(d),
                Err(V6Error::Unhandled) => {
                    if src_mac == self.cfg.mac {
                        return Verdict::Ignored(IgnoreReason::OwnFrame);
                    }
                    return Verdict::Ignored(IgnoreReason::Ipv6);
                }
            },
            _ => return Verdict::Dropped(DropReason::NonIp),
        };
        if src_mac == self.cfg.mac {
            return Verdict::Ignored(IgnoreReason::OwnFrame);
        }
        if ip.v6
            && ip.proto == ndp::PROTO_ICMPV6
            && !ip.fragment
            && let Some(nd) = ndp::parse(frame, ip.l4, ip.l4 + ip.l4_len)
        {
            return self.neighbor(now, frame, &nd, src_mac);
        }
        if let Some(c) = &mut self.capture {
            // any frame from an address shows a host there
            c.alive(ip.src, now);
        }
        if dst_mac != self.cfg.mac {
            return Verdict::Ignored(IgnoreReason::NotOurMac);
        }
        if ip.dst != self.cfg.vip {
            if self.tarpitted(ip.dst) {
                return self.tarpit(now, frame, &ip, src_mac);
            }
            return Verdict::Ignored(IgnoreReason::NotVip);
        }
        let want = if self.cfg.udp { PROTO_UDP } else { PROTO_TCP };
        if ip.proto != want {
            return Verdict::Ignored(IgnoreReason::WrongProtocol);
        }
        let mut sport = 0;
        if !ip.later_fragment {
            let min = if ip.proto == PROTO_TCP { 20 } else { 8 };
            if ip.l4_len < min {
                return Verdict::Dropped(DropReason::Truncated);
            }
            let (Some(sp), Some(dp)) = (wire::be16(frame, ip.l4), wire::be16(frame, ip.l4 + 2))
            else {
                return Verdict::Dropped(DropReason::Truncated);
            };
            if self.cfg.port != 0 && dp != self.cfg.port {
                return Verdict::Ignored(IgnoreReason::WrongPort);
            }
            sport = if ip.fragment { 0 } else { sp };
        }
        let Some(backend) = self.choose(ip.src, sport) else {
            return Verdict::Dropped(DropReason::NoBackend);
        };
        if meta.csum_partial && !ip.fragment {
            complete_l4_checksum(frame, &ip);
        }
        let len = frame.len();
        match self.backends.get(backend).and_then(|b| b.mac) {
            Some(mac) => {
                wire::set_macs(frame, mac, self.cfg.mac);
                Verdict::Forward { backend, len }
            }
            None => {
                if self.held.len() >= self.cfg.hold_max {
                    return Verdict::Dropped(DropReason::HoldFull);
                }
                self.held.push_back(HeldFrame {
                    backend,
                    since: now,
                    frame: frame.to_vec(),
                });
                Verdict::Held { backend }
            }
        }
    }

    /// Is `dst` answered by the tarpit (its ACL permits it, or capture took it)? Never the
    /// VIP or a backend, only in TCP mode.
    fn tarpitted(&self, dst: IpAddr) -> bool {
        let by_acl = self
            .cfg
            .tarpit
            .as_ref()
            .is_some_and(|a| a.permits(Some(dst)));
        let captured = self.capture.as_ref().is_some_and(|c| c.is_captured(dst));
        (by_acl || captured)
            && !self.cfg.udp
            && dst != self.cfg.vip
            && !self.backends.iter().any(|b| b.cfg.ip == Some(dst))
    }

    /// May the tarpit answer `client` now (`tarpit_rate`)?
    fn rate_allows(&mut self, client: IpAddr, now: Duration) -> bool {
        self.rate
            .as_mut()
            .is_none_or(|r| r.allow(client, now).is_ok())
    }

    fn tarpit(&mut self, now: Duration, frame: &mut [u8], ip: &L3, src_mac: Mac) -> Verdict {
        if ip.proto != PROTO_TCP || ip.later_fragment {
            return Verdict::Ignored(IgnoreReason::TarpitNotSyn);
        }
        if ip.l4_len < 20 {
            return Verdict::Dropped(DropReason::Truncated);
        }
        let l4 = ip.l4;
        let (Some(cport), Some(sport), Some(seq), Some(ack), Some(off), Some(flags)) = (
            wire::be16(frame, l4),
            wire::be16(frame, l4 + 2),
            wire::be32(frame, l4 + 4),
            wire::be32(frame, l4 + 8),
            frame.get(l4 + 12).copied(),
            frame.get(l4 + 13).copied(),
        ) else {
            return Verdict::Dropped(DropReason::Truncated);
        };
        let tuple_isn = match (ip.src, ip.dst) {
            (IpAddr::V4(c), IpAddr::V4(s)) => tarpit::isn(&self.cfg.isn_key, c, s, cport, sport),
            (IpAddr::V6(c), IpAddr::V6(s)) => tarpit::isn_v6(&self.cfg.isn_key, c, s, cport, sport),
            _ => return Verdict::Dropped(DropReason::Malformed),
        };
        let persist = self.cfg.tarpit_persist;
        let (seg_seq, seg_ack, seg_flags, window) = if flags & 0x02 != 0 && flags & 0x14 == 0 {
            // SYN without ACK and RST: a connection attempt.
            if persist {
                (
                    tarpit::persist_isn(tuple_isn, seq),
                    seq.wrapping_add(1),
                    0x12,
                    0,
                )
            } else {
                (tuple_isn, seq.wrapping_add(1), 0x12, self.cfg.tarpit_window)
            }
        } else if persist && flags & 0x10 != 0 && flags & 0x07 == 0 {
            // An ACK, a zero-window probe or data of a held connection (never RST or FIN).
            let doff = usize::from(off >> 4) * 4;
            if doff < 20 || doff > ip.l4_len {
                return Verdict::Dropped(DropReason::Malformed);
            }
            let Some(a) = tarpit::persist_ack(tuple_isn, seq, ack, ip.l4_len - doff) else {
                return Verdict::Ignored(IgnoreReason::TarpitStray);
            };
            if !self.rate_allows(ip.src, now) {
                return Verdict::Dropped(DropReason::TarpitRate);
            }
            match a.kind {
                tarpit::SegmentKind::Ack => self.counters.tarpit_held += 1,
                tarpit::SegmentKind::Probe => self.counters.tarpit_probes += 1,
            }
            let seg = tarpit::Segment {
                client_mac: src_mac,
                client: ip.src,
                server: ip.dst,
                cport,
                sport,
                seq: a.seq,
                ack: a.ack,
                flags: 0x10,
                window: 0,
                tos: ip.tos,
            };
            return match tarpit::write_segment(frame, &seg, self.cfg.mac) {
                Some(len) => Verdict::TarpitAck { len },
                None => Verdict::Dropped(DropReason::Truncated),
            };
        } else {
            return Verdict::Ignored(IgnoreReason::TarpitNotSyn);
        };
        if !self.rate_allows(ip.src, now) {
            return Verdict::Dropped(DropReason::TarpitRate);
        }
        let seg = tarpit::Segment {
            client_mac: src_mac,
            client: ip.src,
            server: ip.dst,
            cport,
            sport,
            seq: seg_seq,
            ack: seg_ack,
            flags: seg_flags,
            window,
            tos: if ip.v6 { 0 } else { ip.tos },
        };
        match tarpit::write_segment(frame, &seg, self.cfg.mac) {
            Some(len) => Verdict::TarpitSynAck { len },
            None => Verdict::Dropped(DropReason::Truncated),
        }
    }

    fn arp(&mut self, now: Duration, frame: &mut [u8]) -> Verdict {
        let a = match arp::parse(frame) {
            Ok(a) => a,
            Err(arp::ArpError::Truncated) => return Verdict::Dropped(DropReason::Truncated),
            Err(arp::ArpError::NotEthernetIpv4) => {
                return Verdict::Ignored(IgnoreReason::ArpOther);
            }
        };
        if let Some(c) = &mut self.capture
            && (a.op == arp::OP_REQUEST || a.op == arp::OP_REPLY)
        {
            let (sender, target) = (IpAddr::V4(a.sender_ip), IpAddr::V4(a.target_ip));
            if a.sender_ip.is_unspecified() {
                // an RFC 5227 probe: a host is about to take `target`
                if a.op == arp::OP_REQUEST {
                    c.alive(target, now);
                }
            } else {
                c.alive(sender, now);
                if a.op == arp::OP_REQUEST && sender != target {
                    c.request(target, sender, now);
                }
            }
        }
        match a.op {
            arp::OP_REQUEST => {
                if a.sender_ip == a.target_ip {
                    // gratuitous ARP: an announcement, not a question
                    return Verdict::Ignored(IgnoreReason::ArpNotOurs);
                }
                let target = IpAddr::V4(a.target_ip);
                let ours = Some(a.target_ip) == self.vip4
                    || (!a.sender_ip.is_unspecified() && self.tarpitted(target));
                if ours {
                    let len = arp::answer_in_place(frame, &a, self.cfg.mac);
                    Verdict::ArpReply { len }
                } else {
                    Verdict::Ignored(IgnoreReason::ArpNotOurs)
                }
            }
            arp::OP_REPLY => self.learn(IpAddr::V4(a.sender_ip), a.sender_mac),
            _ => Verdict::Ignored(IgnoreReason::ArpOther),
        }
    }

    /// Neighbor discovery: answer solicitations for the VIP, tarpitted addresses and our
    /// link-local address; learn backends from advertisements.
    fn neighbor(&mut self, now: Duration, frame: &mut [u8], nd: &ndp::Nd, src_mac: Mac) -> Verdict {
        if let Some(c) = &mut self.capture {
            let target = IpAddr::V6(nd.target);
            if nd.kind == ndp::NEIGHBOR_ADVERTISEMENT || nd.src.is_unspecified() {
                // an advertisement, or duplicate address detection: a host has (or is about
                // to take) `target`
                c.alive(target, now);
            } else {
                c.alive(IpAddr::V6(nd.src), now);
                c.request(target, IpAddr::V6(nd.src), now);
            }
        }
        if nd.kind == ndp::NEIGHBOR_ADVERTISEMENT {
            return self.learn(IpAddr::V6(nd.target), nd.ll.unwrap_or(src_mac));
        }
        // Duplicate address detection (source ::) is not answered: that would make the host
        // give up its address.
        if nd.src.is_unspecified() {
            return Verdict::Ignored(IgnoreReason::ArpNotOurs);
        }
        let target = IpAddr::V6(nd.target);
        let ours =
            Some(nd.target) == self.vip6 || nd.target == self.link_local || self.tarpitted(target);
        if !ours {
            return Verdict::Ignored(IgnoreReason::ArpNotOurs);
        }
        match ndp::answer_in_place(frame, nd, src_mac, self.cfg.mac) {
            Some(len) => Verdict::NdpAdvert { len },
            None => Verdict::Dropped(DropReason::Truncated),
        }
    }

    fn learn(&mut self, ip: IpAddr, mac: Mac) -> Verdict {
        if mac == self.cfg.mac || mac[0] & 1 != 0 {
            return Verdict::Ignored(IgnoreReason::ArpNotOurs);
        }
        let mut first = None;
        for (i, b) in self.backends.iter_mut().enumerate() {
            if b.cfg.ip == Some(ip) {
                if b.mac.is_some_and(|m| m != mac) {
                    self.epoch += 1;
                }
                b.mac = Some(mac);
                first.get_or_insert(i);
            }
        }
        let Some(first) = first else {
            return Verdict::Ignored(IgnoreReason::ArpNotOurs);
        };
        // Release the frames held for every backend that now has a MAC, in arrival order.
        let our = self.cfg.mac;
        let mut keep = VecDeque::with_capacity(self.held.len());
        for mut h in self.held.drain(..) {
            match self.backends.get(h.backend).and_then(|b| b.mac) {
                Some(m) => {
                    wire::set_macs(&mut h.frame, m, our);
                    self.counters.released += 1;
                    self.txq.push_back(Transmit {
                        frame: h.frame,
                        kind: TxKind::Released { backend: h.backend },
                    });
                }
                None => keep.push_back(h),
            }
        }
        self.held = keep;
        Verdict::Learned { backend: first }
    }

    /// The next frame the engine wants sent at `now` (released frames, then due ARP probes and
    /// neighbor solicitations), after dropping held frames older than `hold_time`. Call until
    /// `None`.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Transmit> {
        if let Some(t) = self.txq.pop_front() {
            return Some(t);
        }
        while let Some(h) = self.held.front() {
            if now.saturating_sub(h.since) >= self.cfg.hold_time {
                self.held.pop_front();
                self.counters.hold_expired += 1;
            } else {
                break;
            }
        }
        if now < self.next_probe_at {
            return None;
        }
        let (probe_iv, refresh_iv) = (self.cfg.probe_interval, self.cfg.refresh_interval);
        let mut next: Option<Duration> = None;
        let mut out = None;
        for (i, b) in self.backends.iter_mut().enumerate() {
            let Some(ip) = b.cfg.ip else { continue };
            let iv = if b.mac.is_some() {
                refresh_iv
            } else {
                probe_iv
            };
            let due = b
                .last_probe
                .map_or(Duration::ZERO, |t| t.saturating_add(iv));
            if out.is_none() && due <= now {
                b.last_probe = Some(now);
                out = Some(match ip {
                    IpAddr::V4(a) => Transmit {
                        frame: arp::probe(self.cfg.mac, a),
                        kind: TxKind::ArpProbe { backend: i },
                    },
                    IpAddr::V6(a) => Transmit {
                        frame: ndp::probe(self.cfg.mac, a),
                        kind: TxKind::NdpProbe { backend: i },
                    },
                });
                let again = now.saturating_add(iv);
                next = Some(next.map_or(again, |n| n.min(again)));
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        self.next_probe_at = match (out.is_some(), next) {
            // another backend may be due at this same instant: look again on the next call
            (true, _) => now,
            (false, Some(n)) => n,
            (false, None) => Duration::MAX,
        };
        if out.is_some() {
            self.counters.probes += 1;
        }
        out
    }

    /// When the engine next wants [`Engine::poll_transmit`] called: now (`Duration::ZERO`)
    /// when frames are queued, else the next probe or hold expiry; `None` when nothing is
    /// scheduled.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if !self.txq.is_empty() {
            return Some(Duration::ZERO);
        }
        let hold = self
            .held
            .front()
            .map(|h| h.since.saturating_add(self.cfg.hold_time));
        let probe = (self.next_probe_at != Duration::MAX).then_some(self.next_probe_at);
        match (hold, probe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HostSpec, ListenAddr};

    const MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];

    fn cfg() -> EngineConfig {
        let mut c = EngineConfig::new(MAC, Ipv4Addr::new(10, 0, 0, 100), 80);
        c.backends = vec![
            BackendConfig {
                ip: Some(Ipv4Addr::new(10, 0, 0, 3).into()),
                weight: 0,
                available: true,
            },
            BackendConfig {
                ip: Some(Ipv4Addr::new(10, 0, 0, 4).into()),
                weight: 0,
                available: true,
            },
        ];
        c
    }

    #[test]
    fn two_engines_of_one_config_have_one_table_and_table_for_is_it() {
        let (mut a, b) = (Engine::new(cfg()), Engine::new(cfg()));
        let digest = |e: &Engine| e.table().map(Maglev::digest);
        assert_eq!(digest(&a), digest(&b));
        assert_eq!(digest(&a), table_for(&cfg().backends).map(|t| t.digest()));
        // The same flows go to the same backends on both.
        for i in 0..=255u8 {
            let c = Ipv4Addr::new(192, 0, 2, i);
            assert_eq!(a.choose(c, 1000), b.choose(c, 1000));
        }
        a.set_available(0, false);
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(
            digest(&a),
            table_for(&a.config().backends).map(|t| t.digest())
        );
    }

    #[test]
    fn first_poll_probes_every_backend_then_waits_probe_interval() {
        let mut e = Engine::new(cfg());
        let t0 = Duration::from_secs(5);
        let a = e.poll_transmit(t0).unwrap();
        let b = e.poll_transmit(t0).unwrap();
        assert_eq!(a.kind, TxKind::ArpProbe { backend: 0 });
        assert_eq!(b.kind, TxKind::ArpProbe { backend: 1 });
        assert!(e.poll_transmit(t0).is_none());
        assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        assert!(e.poll_transmit(t0 + Duration::from_millis(999)).is_none());
        assert!(e.poll_transmit(t0 + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn known_macs_are_refreshed_after_refresh_interval() {
        let mut e = Engine::new(cfg());
        let t0 = Duration::ZERO;
        while e.poll_transmit(t0).is_some() {}
        e.learn(Ipv4Addr::new(10, 0, 0, 3).into(), [2, 0, 0, 0, 0, 3]);
        e.learn(Ipv4Addr::new(10, 0, 0, 4).into(), [2, 0, 0, 0, 0, 4]);
        assert!(e.poll_transmit(Duration::from_secs(30)).is_none());
        assert_eq!(e.poll_timeout(), Some(Duration::from_secs(60)));
        assert!(e.poll_transmit(Duration::from_secs(60)).is_some());
    }

    #[test]
    fn the_epoch_moves_exactly_when_a_client_could_change_mac() {
        let mut e = Engine::new(cfg());
        let e0 = e.epoch();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4));
        // First learning: nothing was forwarded to a MAC yet, so nothing to invalidate.
        e.learn(a.into(), [2, 0, 0, 0, 0, 3]);
        e.learn(b.into(), [2, 0, 0, 0, 0, 4]);
        assert_eq!(e.epoch(), e0);
        // The same MAC again (a refresh) and an unchanged backend list: no change.
        e.learn(a.into(), [2, 0, 0, 0, 0, 3]);
        e.set_backends(e.config().backends.clone());
        assert_eq!(e.epoch(), e0);
        // A backend answering from a new MAC, a blacklist, its lifting: each moves it.
        e.learn(a.into(), [2, 0, 0, 0, 0, 9]);
        let e1 = e.epoch();
        assert!(e1 > e0);
        e.set_available(1, false);
        let e2 = e.epoch();
        assert!(e2 > e1);
        e.set_available(1, true);
        assert!(e.epoch() > e2);
    }

    #[test]
    fn from_config_rejects_a_host_name_backend() {
        let mut c = Config {
            listen: Some(ListenAddr::parse("10.0.0.100:80").unwrap()),
            ..Config::default()
        };
        c.servers.push(crate::config::ServerConfig {
            host: Some(HostSpec::Name("web1".into())),
            ..Default::default()
        });
        let e = EngineConfig::from_config(&c, MAC, [0; 16]).unwrap_err();
        assert!(e.to_string().contains("web1"), "{e}");
        assert_eq!(
            e,
            EngineConfigError::UnresolvedName {
                index: 0,
                name: "web1".into()
            }
        );
    }

    #[test]
    fn pen_args_errors_keep_the_command_line_error() {
        let args: Vec<String> = vec!["10.0.0.1:0".into(), "10.0.0.2:htttp".into()];
        let e = config_from_pen_args(&args, MAC, [0; 16]).unwrap_err();
        assert!(
            matches!(
                &e,
                EngineConfigError::Cli(crate::cli::CliError::Backend { .. })
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("htttp"), "{e}");
    }

    #[test]
    fn pen_args_of_the_wiki_dsr_example_build_a_config() {
        let args: Vec<String> = "-r -O dsr_if=eth1 192.168.100.1:0 192.168.100.3 192.168.100.4"
            .split(' ')
            .map(|s| s.replace('=', " "))
            .collect();
        let c = config_from_pen_args(&args, MAC, [0; 16]).unwrap();
        assert_eq!(c.vip, IpAddr::V4(Ipv4Addr::new(192, 168, 100, 1)));
        assert_eq!(c.port, 0);
        assert!(c.per_flow && !c.udp);
        assert_eq!(c.backends.len(), 2);
        assert_eq!(
            c.backends[1].ip,
            Some(Ipv4Addr::new(192, 168, 100, 4).into())
        );
    }

    #[test]
    fn mac_parsing_names_the_bad_input() {
        assert_eq!(
            parse_mac("02:00:00:00:0a:FF").unwrap(),
            [2, 0, 0, 0, 10, 255]
        );
        assert!(
            parse_mac("02:00:00:00:0a")
                .unwrap_err()
                .contains("02:00:00:00:0a")
        );
        assert!(parse_mac("02:00:00:00:0a:zz").is_err());
    }

    #[test]
    fn from_config_rejects_wildcard_vip() {
        let c = Config {
            listen: Some(ListenAddr::parse("80").unwrap()),
            ..Config::default()
        };
        let e = EngineConfig::from_config(&c, MAC, [0; 16]).unwrap_err();
        assert!(e.to_string().contains("0.0.0.0:80"), "{e}");
    }
}
