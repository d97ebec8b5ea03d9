//! What the engine says about each frame ([`Verdict`], [`IgnoreReason`], [`DropReason`]),
//! what it sends ([`Transmit`]) and what it counts ([`Counters`], [`TarpitStatus`]).

use std::fmt;
use std::net::IpAddr;

use super::{capture, ratecap};

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
    /// Longer than [`MAX_FRAME`](super::MAX_FRAME).
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

/// What [`Engine::process`](super::Engine::process) decided. The transmit verdicts carry the length of the frame to
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

    pub(super) fn count(&mut self, v: &Verdict) {
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

/// The tarpit's settings and counters as the reports show them ([`Engine::tarpit_status`](super::Engine::tarpit_status)).
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
