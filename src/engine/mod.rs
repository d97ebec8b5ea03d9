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
pub mod frames;
pub mod maglev;
pub mod ndp;
pub mod ratecap;
pub mod tarpit;
pub mod wire;

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::acl::Acl;
use crate::config::{Config, HostSpec, ListenAddr};

pub use maglev::{Maglev, Member, flow_hash, flow_hash_ip};
pub use wire::Mac;

use wire::{ETH_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, PROTO_TCP, PROTO_UDP};

/// Largest frame the engine accepts (a 9000-byte jumbo payload plus headers and a VLAN tag).
pub const MAX_FRAME: usize = 9216;

/// One backend as the engine sees it: its position is the server slot number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendConfig {
    /// `None` for a slot without a usable address (never chosen). IPv4 backends are found with
    /// ARP, IPv6 ones with Neighbor Discovery.
    pub ip: Option<IpAddr>,
    /// Share of the table; 0 counts as 1.
    pub weight: u32,
    /// `false` while blacklisted.
    pub available: bool,
}

/// Everything the engine needs, as a plain value (built from [`Config`] by
/// [`EngineConfig::from_config`], or by hand in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The DSR interface's MAC.
    pub mac: Mac,
    /// The virtual IP (the listen address), IPv4 or IPv6.
    pub vip: IpAddr,
    /// The listen port; 0 = every port.
    pub port: u16,
    /// `-U`: forward UDP (and no tarpit); otherwise TCP.
    pub udp: bool,
    /// `-r`: hash the source port too (per flow instead of per client).
    pub per_flow: bool,
    /// Server slots in order.
    pub backends: Vec<BackendConfig>,
    /// The access list `tarpit_acl` names, matched against destination addresses.
    pub tarpit: Option<Acl>,
    /// Key of the tarpit's ISN hash (the driver draws it once, e.g. from the OS).
    pub isn_key: [u8; 16],
    /// Window advertised by the tarpit's SYN+ACK.
    pub tarpit_window: u16,
    /// `tarpit_persist`: the SYN+ACK advertises a zero window and every later segment of the
    /// connection gets an ACK that keeps it at zero (see [`tarpit::persist_ack`]).
    pub tarpit_persist: bool,
    /// `tarpit_capture`: LaBrea-style capture of unanswered addresses ([`capture`]).
    pub tarpit_capture: Option<capture::CaptureConfig>,
    /// `tarpit_rate`: cap on the tarpit's TCP replies ([`ratecap`]).
    pub tarpit_rate: Option<ratecap::RateConfig>,
    /// Addresses of the DSR interface itself: never captured.
    pub own_addrs: Vec<IpAddr>,
    /// Minimum time between two probes for a backend whose MAC is unknown.
    pub probe_interval: Duration,
    /// Time after which known backend MACs are probed again.
    pub refresh_interval: Duration,
    /// How long a frame may wait for its backend's MAC.
    pub hold_time: Duration,
    /// How many frames may wait in all.
    pub hold_max: usize,
}

impl EngineConfig {
    /// A configuration with C Pen's timers (probe 1 s, refresh 60 s), a 2 s hold of at most
    /// 1024 frames, the default tarpit window, no tarpit and no backends.
    pub fn new(mac: Mac, vip: impl Into<IpAddr>, port: u16) -> EngineConfig {
        EngineConfig {
            mac,
            vip: crate::acl::canonical(vip.into()),
            port,
            udp: false,
            per_flow: false,
            backends: Vec::new(),
            tarpit: None,
            isn_key: [0; 16],
            tarpit_window: tarpit::DEFAULT_WINDOW,
            tarpit_persist: false,
            tarpit_capture: None,
            tarpit_rate: None,
            own_addrs: Vec::new(),
            probe_interval: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(60),
            hold_time: Duration::from_secs(2),
            hold_max: 1024,
        }
    }

    /// Builds the engine's configuration from pen's: the listen address is the VIP (an IPv4 or
    /// IPv6 address, port 0 = every port), `-U`, `-r`, the servers (IP literals; names must
    /// have been resolved into [`HostSpec::Ip`] by the caller) and `tarpit_acl`. All backends start
    /// available; the caller applies the blacklist with [`Engine::set_available`].
    pub fn from_config(cfg: &Config, mac: Mac, isn_key: [u8; 16]) -> Result<EngineConfig, String> {
        let (vip, port) = match &cfg.listen {
            Some(ListenAddr::Inet(sa)) => match crate::acl::canonical(sa.ip()) {
                ip if !ip.is_unspecified() => (ip, sa.port()),
                _ => {
                    return Err(format!(
                        "DSR needs the virtual IP address as the listen address, got {sa}; give VIP:port, e.g. 192.168.100.1:80 or [fd00::100]:80 (port 0 = every port)"
                    ));
                }
            },
            Some(other) => {
                return Err(format!(
                    "DSR needs the virtual IP address as the listen address, got {other}; give VIP:port, e.g. 192.168.100.1:80"
                ));
            }
            None => {
                return Err(
                    "DSR needs a listen address: give VIP:port, e.g. 192.168.100.1:80".into(),
                );
            }
        };
        if cfg.servers.len() > maglev::MAX_MEMBERS {
            return Err(format!(
                "DSR supports at most {} servers, got {}",
                maglev::MAX_MEMBERS,
                cfg.servers.len()
            ));
        }
        let mut backends = Vec::with_capacity(cfg.servers.len());
        for (i, s) in cfg.servers.iter().enumerate() {
            let ip = match &s.host {
                Some(HostSpec::Ip(a)) => Some(crate::acl::canonical(*a)),
                Some(HostSpec::Name(n)) => {
                    return Err(format!(
                        "server {i} ({n}): host names must be resolved to an IP address before DSR starts"
                    ));
                }
                Some(HostSpec::Unix(p)) => {
                    return Err(format!(
                        "server {i} ({}): a Unix socket cannot be a DSR backend; give an IP address on the DSR interface's segment",
                        p.display()
                    ));
                }
                None => None,
            };
            backends.push(BackendConfig {
                ip,
                weight: s.weight,
                available: true,
            });
        }
        let tarpit = match cfg.tarpit_acl {
            Some(n) => Some(
                cfg.acls
                    .get(usize::from(n))
                    .cloned()
                    .ok_or_else(|| format!("tarpit_acl {n}: no such access list; expected 0-9"))?,
            ),
            None => None,
        };
        let mut ec = EngineConfig::new(mac, vip, port);
        ec.udp = cfg.udp;
        ec.per_flow = cfg.mode.roundrobin;
        ec.backends = backends;
        ec.tarpit = tarpit;
        ec.isn_key = isn_key;
        ec.tarpit_persist = cfg.tarpit_persist;
        ec.tarpit_capture = cfg.tarpit_capture;
        ec.tarpit_rate = cfg.tarpit_rate;
        Ok(ec)
    }
}

/// Builds the engine's configuration from pen's own arguments (without `argv[0]`), as the blog
/// command lines give them: `-r -O "dsr_if eth1" 192.168.100.1:0 192.168.100.3 ...`. Parsing
/// is pure ([`crate::cli::parse`]); `-F` files are not read, and `dsr_if` may be left out.
pub fn config_from_pen_args(
    args: &[String],
    mac: Mac,
    isn_key: [u8; 16],
) -> Result<EngineConfig, String> {
    let parsed = crate::cli::parse(args.iter().cloned()).map_err(|e| e.message)?;
    let mut cfg = parsed.config;
    if cfg.dsr_if.is_none() {
        cfg.dsr_if = Some("offline".into());
    }
    crate::cli::finish_startup(&mut cfg, &parsed.servers).map_err(|e| e.message)?;
    EngineConfig::from_config(&cfg, mac, isn_key)
}

/// Parses `aa:bb:cc:dd:ee:ff` (or `-` separated).
pub fn parse_mac(s: &str) -> Result<Mac, String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || format!("bad MAC address {s:?}; expected six hex bytes like 02:00:00:00:00:01");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// Why a frame was ignored (well-formed, but not something the engine handles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// Sent by our own MAC (e.g. looped back by the capture).
    OwnFrame,
    /// IPv4 frame whose destination MAC is not ours.
    NotOurMac,
    /// ARP request for an address we do not answer for, or an ARP reply from a non-backend.
    ArpNotOurs,
    /// ARP for a hardware/protocol pair other than Ethernet/IPv4, or an unknown operation.
    ArpOther,
    /// IPv4 to an address that is neither the VIP nor tarpitted.
    NotVip,
    /// To the VIP but not TCP (or not UDP with `-U`).
    WrongProtocol,
    /// To the VIP but not the listen port.
    WrongPort,
    /// To a tarpitted address but not a SYN (ACK, data, FIN, RST), or not TCP; in persist
    /// mode RST and FIN still are.
    TarpitNotSyn,
    /// Persist mode: an ACK to a tarpitted address that is not one of the tarpit's
    /// connections (its sequence numbers do not check out).
    TarpitStray,
    /// IPv6 with an extension header chain the engine does not walk (more than 8 headers, or
    /// an unknown one before the transport header of a frame to the VIP).
    Ipv6,
}

impl IgnoreReason {
    pub const ALL: [IgnoreReason; 10] = [
        IgnoreReason::OwnFrame,
        IgnoreReason::NotOurMac,
        IgnoreReason::ArpNotOurs,
        IgnoreReason::ArpOther,
        IgnoreReason::NotVip,
        IgnoreReason::WrongProtocol,
        IgnoreReason::WrongPort,
        IgnoreReason::TarpitNotSyn,
        IgnoreReason::Ipv6,
        IgnoreReason::TarpitStray,
    ];

    /// A short lowercase name, as in the verdict log.
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::OwnFrame => "own-frame",
            IgnoreReason::NotOurMac => "not-our-mac",
            IgnoreReason::ArpNotOurs => "arp-not-ours",
            IgnoreReason::ArpOther => "arp-other",
            IgnoreReason::NotVip => "not-vip",
            IgnoreReason::WrongProtocol => "wrong-protocol",
            IgnoreReason::WrongPort => "wrong-port",
            IgnoreReason::TarpitNotSyn => "tarpit-not-syn",
            IgnoreReason::Ipv6 => "ipv6-extensions",
            IgnoreReason::TarpitStray => "tarpit-stray",
        }
    }
}

/// Why a frame was dropped (bad input, or nowhere to send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its headers say (Ethernet, ARP, IPv4 total length, TCP/UDP header).
    Truncated,
    /// Longer than [`MAX_FRAME`].
    Oversized,
    /// Not IPv4, IPv6 or ARP (includes VLAN-tagged frames).
    NonIp,
    /// IPv4 header inconsistent (version, header length, total length).
    Malformed,
    /// No backend available (all blacklisted or none configured).
    NoBackend,
    /// The backend's MAC is unknown and the hold queue is full.
    HoldFull,
    /// A tarpit reply over the `tarpit_rate` cap.
    TarpitRate,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::NonIp,
        DropReason::Malformed,
        DropReason::NoBackend,
        DropReason::HoldFull,
        DropReason::TarpitRate,
    ];

    /// A short lowercase name, as in the verdict log.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::NonIp => "non-ip",
            DropReason::Malformed => "malformed",
            DropReason::NoBackend => "no-backend",
            DropReason::HoldFull => "hold-full",
            DropReason::TarpitRate => "tarpit-rate-cap",
        }
    }
}

/// What [`Engine::process`] decided. The transmit verdicts carry the length of the frame to
/// send, which is the prefix of the buffer that was passed in (rewritten in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the rewritten frame: it goes to backend `backend`.
    Forward {
        backend: usize,
        len: usize,
    },
    /// Send the frame, now an ARP reply.
    ArpReply {
        len: usize,
    },
    /// Send the frame, now an IPv6 neighbor advertisement.
    NdpAdvert {
        len: usize,
    },
    /// Send the frame, now the tarpit's SYN+ACK.
    TarpitSynAck {
        len: usize,
    },
    /// Send the frame, now the tarpit's zero-window ACK to a held connection (persist mode).
    TarpitAck {
        len: usize,
    },
    /// The engine kept a copy until `backend`'s MAC is known; send nothing now.
    Held {
        backend: usize,
    },
    /// An ARP reply taught the MAC of `backend` (the first one when several share the address).
    Learned {
        backend: usize,
    },
    Ignored(IgnoreReason),
    Dropped(DropReason),
}

impl Verdict {
    /// The length of the frame to transmit, for the verdicts that transmit.
    pub fn transmit_len(&self) -> Option<usize> {
        match *self {
            Verdict::Forward { len, .. }
            | Verdict::ArpReply { len }
            | Verdict::NdpAdvert { len }
            | Verdict::TarpitSynAck { len }
            | Verdict::TarpitAck { len } => Some(len),
            _ => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Forward { backend, len } => write!(f, "forward backend={backend} len={len}"),
            Verdict::ArpReply { len } => write!(f, "arp-reply len={len}"),
            Verdict::NdpAdvert { len } => write!(f, "ndp-advert len={len}"),
            Verdict::TarpitSynAck { len } => write!(f, "tarpit-syn-ack len={len}"),
            Verdict::TarpitAck { len } => write!(f, "tarpit-ack len={len}"),
            Verdict::Held { backend } => write!(f, "held backend={backend}"),
            Verdict::Learned { backend } => write!(f, "learned backend={backend}"),
            Verdict::Ignored(r) => write!(f, "ignored {}", r.as_str()),
            Verdict::Dropped(r) => write!(f, "dropped {}", r.as_str()),
        }
    }
}

/// Information a driver has about a received frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// The L4 checksum is partial (offload: `TP_STATUS_CSUMNOTREADY`); the engine completes it
    /// before forwarding.
    pub csum_partial: bool,
}

/// A frame the engine originates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub frame: Vec<u8>,
    pub kind: TxKind,
}

/// Why the engine sends a [`Transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    /// Who-has for a backend's IPv4 address.
    ArpProbe { backend: usize },
    /// Neighbor solicitation for a backend's IPv6 address.
    NdpProbe { backend: usize },
    /// A held frame, now addressed to the backend whose MAC was learned.
    Released { backend: usize },
}

impl fmt::Display for TxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxKind::ArpProbe { backend } => write!(f, "arp-probe backend={backend}"),
            TxKind::NdpProbe { backend } => write!(f, "ndp-probe backend={backend}"),
            TxKind::Released { backend } => write!(f, "released backend={backend}"),
        }
    }
}

/// Counters by outcome and reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx: u64,
    pub forwarded: u64,
    pub arp_replies: u64,
    pub ndp_adverts: u64,
    pub tarpit_syn_acks: u64,
    /// Persist mode: zero-window ACKs sent to held connections (`tarpit_held` +
    /// `tarpit_probes`).
    pub tarpit_acks: u64,
    /// Persist mode: handshakes completed into a zero window (connections held).
    pub tarpit_held: u64,
    /// Persist mode: zero-window probes and data segments of held connections answered.
    pub tarpit_probes: u64,
    pub held: u64,
    pub released: u64,
    /// Held frames dropped because their backend's MAC stayed unknown for `hold_time`.
    pub hold_expired: u64,
    pub learned: u64,
    pub probes: u64,
    /// Table rebuilds.
    pub rebuilds: u64,
    ignored: [u64; IgnoreReason::ALL.len()],
    dropped: [u64; DropReason::ALL.len()],
}

impl Counters {
    /// Frames ignored for `r`.
    pub fn ignored(&self, r: IgnoreReason) -> u64 {
        self.ignored.get(r as usize).copied().unwrap_or(0)
    }

    /// Frames dropped for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped.get(r as usize).copied().unwrap_or(0)
    }

    /// All dropped frames.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// All ignored frames.
    pub fn ignored_total(&self) -> u64 {
        self.ignored.iter().sum()
    }

    fn count(&mut self, v: &Verdict) {
        match *v {
            Verdict::Forward { .. } => self.forwarded += 1,
            Verdict::ArpReply { .. } => self.arp_replies += 1,
            Verdict::NdpAdvert { .. } => self.ndp_adverts += 1,
            Verdict::TarpitSynAck { .. } => self.tarpit_syn_acks += 1,
            Verdict::TarpitAck { .. } => self.tarpit_acks += 1,
            Verdict::Held { .. } => self.held += 1,
            Verdict::Learned { .. } => self.learned += 1,
            Verdict::Ignored(r) => {
                if let Some(c) = self.ignored.get_mut(r as usize) {
                    *c += 1;
                }
            }
            Verdict::Dropped(r) => {
                if let Some(c) = self.dropped.get_mut(r as usize) {
                    *c += 1;
                }
            }
        }
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rx={} forwarded={} arp_replies={} tarpit_syn_acks={} held={} released={} hold_expired={} learned={} probes={}",
            self.rx,
            self.forwarded,
            self.arp_replies,
            self.tarpit_syn_acks,
            self.held,
            self.released,
            self.hold_expired,
            self.learned,
            self.probes
        )?;
        if self.ndp_adverts > 0 {
            write!(f, " ndp_adverts={}", self.ndp_adverts)?;
        }
        if self.tarpit_acks > 0 {
            write!(
                f,
                " tarpit_acks={} tarpit_held={} tarpit_probes={}",
                self.tarpit_acks, self.tarpit_held, self.tarpit_probes
            )?;
        }
        for r in IgnoreReason::ALL {
            let n = self.ignored(r);
            if n > 0 {
                write!(f, " ignored.{}={n}", r.as_str())?;
            }
        }
        for r in DropReason::ALL {
            let n = self.dropped(r);
            if n > 0 {
                write!(f, " dropped.{}={n}", r.as_str())?;
            }
        }
        Ok(())
    }
}

/// The tarpit's settings and counters as the reports show them ([`Engine::tarpit_status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarpitStatus {
    pub persist: bool,
    pub capture: Option<capture::CaptureConfig>,
    pub rate: Option<ratecap::RateConfig>,
    /// SYN+ACKs sent.
    pub syn_acks: u64,
    /// Persist mode: zero-window ACKs sent (`held` + `probes`).
    pub acks: u64,
    /// Persist mode: connections held (handshakes completed into a zero window).
    pub held: u64,
    /// Persist mode: zero-window probes (and data) of held connections answered.
    pub probes: u64,
    /// Replies not sent because of `tarpit_rate`.
    pub rate_dropped: u64,
    /// Persist mode: ACKs that were not the tarpit's connections.
    pub stray: u64,
    pub capture_counters: capture::CaptureCounters,
    /// Capture table entries by state.
    pub pending: usize,
    pub captured: usize,
    pub alive: usize,
    /// Captured addresses (the first ones, in address order).
    pub captured_addrs: Vec<IpAddr>,
}

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

/// The parsed network-layer facts the decision needs (IPv4 or IPv6).
struct L3 {
    v6: bool,
    /// Offset of the transport header in the frame.
    l4: usize,
    /// Transport header + payload length (from the IP header).
    l4_len: usize,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    /// Not the first fragment: no transport header in this frame.
    later_fragment: bool,
    /// Any fragment (first or later).
    fragment: bool,
    /// IPv4 type of service (the tarpit copies it).
    tos: u8,
}

/// Why an IPv6 frame could not be parsed.
enum V6Error {
    Drop(DropReason),
    /// An extension header chain the engine does not walk.
    Unhandled,
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
            wire::mac(frame, 0),
            wire::mac(frame, 6),
            wire::be16(frame, 12),
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

fn parse_ipv4(frame: &[u8]) -> Result<L3, DropReason> {
    let Some(&vihl) = frame.get(ETH_LEN) else {
        return Err(DropReason::Truncated);
    };
    if frame.len() < ETH_LEN + 20 {
        return Err(DropReason::Truncated);
    }
    if vihl >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < 20 {
        return Err(DropReason::Malformed);
    }
    let (Some(total), Some(frag), Some(&proto), Some(src), Some(dst), Some(&tos)) = (
        wire::be16(frame, ETH_LEN + 2),
        wire::be16(frame, ETH_LEN + 6),
        frame.get(ETH_LEN + 9),
        wire::ipv4(frame, ETH_LEN + 12),
        wire::ipv4(frame, ETH_LEN + 16),
        frame.get(ETH_LEN + 1),
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
fn parse_ipv6(frame: &[u8]) -> Result<L3, V6Error> {
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
        wire::be16(frame, ETH_LEN + 4),
        frame.get(ETH_LEN + 6),
        ndp::ipv6(frame, ETH_LEN + 8),
        ndp::ipv6(frame, ETH_LEN + 24),
    ) else {
        return Err(V6Error::Drop(DropReason::Truncated));
    };
    let end = ETH_LEN + ndp::IPV6_LEN + usize::from(plen);
    if frame.len() < end {
        return Err(V6Error::Drop(DropReason::Truncated));
    }
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
                return Ok(L3 {
                    v6: true,
                    l4: at,
                    l4_len: end - at,
                    proto: next,
                    src: IpAddr::V6(src),
                    dst: IpAddr::V6(dst),
                    later_fragment,
                    fragment,
                    tos: 0,
                });
            }
        }
    }
    if later_fragment {
        return Ok(L3 {
            v6: true,
            l4: at,
            l4_len: end - at,
            proto: next,
            src: IpAddr::V6(src),
            dst: IpAddr::V6(dst),
            later_fragment,
            fragment,
            tos: 0,
        });
    }
    Err(V6Error::Unhandled)
}

/// Recomputes the TCP/UDP checksum of an unfragmented frame in full (for frames whose
/// checksum the sender's NIC was supposed to finish).
fn complete_l4_checksum(frame: &mut [u8], ip: &L3) {
    let off = match ip.proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(e.contains("web1"), "{e}");
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
        assert!(e.contains("0.0.0.0:80"), "{e}");
    }
}
