//! The engine's configuration: [`EngineConfig`] and its backends, built from pen's
//! [`Config`] or from pen's own command line, and MAC address parsing.

use std::net::IpAddr;
use std::time::Duration;

use crate::acl::Acl;
use crate::config::{Config, HostSpec, ListenAddr};

use super::{Mac, capture, maglev, ratecap, tarpit};

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

/// Why pen's configuration cannot drive the engine. Each displays one line naming the setting
/// and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineConfigError {
    #[error(
        "DSR needs the virtual IP address as the listen address, got {0}; give VIP:port, e.g. 192.168.100.1:80 or [fd00::100]:80 (port 0 = every port)"
    )]
    UnspecifiedVip(std::net::SocketAddr),
    #[error(
        "DSR needs the virtual IP address as the listen address, got {0}; give VIP:port, e.g. 192.168.100.1:80"
    )]
    NotAnAddress(String),
    #[error("DSR needs a listen address: give VIP:port, e.g. 192.168.100.1:80")]
    NoListen,
    #[error("DSR supports at most {max} servers, got {got}")]
    TooManyServers { max: usize, got: usize },
    #[error(
        "server {index} ({name}): host names must be resolved to an IP address before DSR starts"
    )]
    UnresolvedName { index: usize, name: String },
    #[error(
        "server {index} ({path}): a Unix socket cannot be a DSR backend; give an IP address on the DSR interface's segment"
    )]
    UnixBackend { index: usize, path: String },
    #[error("tarpit_acl {0}: no such access list; expected 0-9")]
    NoSuchAcl(u8),
    /// pen's own command line (`config_from_pen_args`), with its cause.
    #[error(transparent)]
    Cli(#[from] crate::cli::CliError),
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
    /// available; the caller applies the blacklist with [`Engine::set_available`](super::Engine::set_available).
    pub fn from_config(
        cfg: &Config,
        mac: Mac,
        isn_key: [u8; 16],
    ) -> Result<EngineConfig, EngineConfigError> {
        let (vip, port) = match &cfg.listen {
            Some(ListenAddr::Inet(sa)) => match crate::acl::canonical(sa.ip()) {
                ip if !ip.is_unspecified() => (ip, sa.port()),
                _ => return Err(EngineConfigError::UnspecifiedVip(*sa)),
            },
            Some(other) => return Err(EngineConfigError::NotAnAddress(other.to_string())),
            None => return Err(EngineConfigError::NoListen),
        };
        if cfg.servers.len() > maglev::MAX_MEMBERS {
            return Err(EngineConfigError::TooManyServers {
                max: maglev::MAX_MEMBERS,
                got: cfg.servers.len(),
            });
        }
        let mut backends = Vec::with_capacity(cfg.servers.len());
        for (index, s) in cfg.servers.iter().enumerate() {
            let ip = match &s.host {
                Some(HostSpec::Ip(a)) => Some(crate::acl::canonical(*a)),
                Some(HostSpec::Name(n)) => {
                    return Err(EngineConfigError::UnresolvedName {
                        index,
                        name: n.clone(),
                    });
                }
                Some(HostSpec::Unix(p)) => {
                    return Err(EngineConfigError::UnixBackend {
                        index,
                        path: p.display().to_string(),
                    });
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
                    .ok_or(EngineConfigError::NoSuchAcl(n))?,
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
) -> Result<EngineConfig, EngineConfigError> {
    let parsed = crate::cli::parse(args.iter().cloned())?;
    let mut cfg = parsed.config;
    if cfg.dsr_if.is_none() {
        cfg.dsr_if = Some("offline".into());
    }
    crate::cli::finish_startup(&mut cfg, &parsed.servers)?;
    EngineConfig::from_config(&cfg, mac, isn_key)
}
