//! The typed configuration, with C Pen's defaults (reference §2, §18). Pure.
//!
//! `cli::parse` builds a [`Config`] from argv; `-o`/`-O` commands, `-F` files and (later) the
//! control socket change it through `ctl`. Nothing here does IO: host names stay unresolved
//! ([`HostSpec::Name`]) until the daemon resolves them at start-up.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use crate::acl::Acls;

/// Defaults of C Pen 0.34's code.
pub mod defaults {
    pub const CONN_MAX: usize = 500;
    pub const CLIENTS_MAX: usize = 2048;
    pub const BLACKLIST_SECS: u64 = 30;
    /// `event.h TIMEOUT 3` (the manual still says 5).
    pub const CONNECT_TIMEOUT_SECS: u64 = 3;
    pub const PENDING_MAX: usize = 100;
    pub const MULTI_ACCEPT: usize = 100;
    pub const BACKLOG: u32 = 500;
    /// `-q` is bumped to at least this.
    pub const BACKLOG_MIN: u32 = 50;
    pub const TRACKING_SECS: u64 = 0;
    pub const WEIGHT_FACTOR: u64 = 256;
    pub const SSL_RENEGOTIATION_INTERVAL: u64 = 3600;
    /// Default idle time of a UDP flow (C Pen has none; see the README).
    pub const UDP_FLOW_IDLE_SECS: u64 = 60;
    /// Default `worker_threads` (pen-rs addition): 1 = a single-threaded tokio runtime, like C
    /// Pen's one event loop.
    pub const WORKER_THREADS: usize = 1;
    /// Upper bound for `worker_threads`.
    pub const WORKER_THREADS_MAX: usize = 1024;
    /// Highest number of server slots `server N` may create (C Pen has no bound; an unbounded
    /// `server 4000000000` from the control socket would exhaust memory).
    pub const SERVERS_MAX: usize = 65_536;
    /// Upper bound for `-x` / `conn_max` (C Pen has none).
    pub const CONN_MAX_LIMIT: usize = 1 << 20;
    /// Upper bound for `-c` / `clients_max` (C Pen has none).
    pub const CLIENTS_MAX_LIMIT: usize = 1 << 22;
    /// Seconds a client of an `accept_proxy` listener has to send its PROXY header (pen-rs).
    pub const ACCEPT_PROXY_TIMEOUT_SECS: u64 = 5;
}

/// Where pen listens: `[host:]port` or a Unix socket path (anything containing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Inet(SocketAddr),
    Unix(PathBuf),
    /// `name:port` with a host name: resolved by the daemon at start-up (first getaddrinfo
    /// result, as C Pen's `pen_aton`); parsing stays pure.
    Name {
        host: String,
        port: u16,
    },
}

/// Why a listen address, a port or a host did not parse. Each displays one line naming the
/// input and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("expected [host:]port or a Unix socket path, got an empty string")]
    EmptyListen,
    #[error("port must be a number 0-65535 or a service name, got {0:?}")]
    PortOutOfRange(String),
    #[error(
        "port must be a number 0-65535 or a well-known service name (http, smtp, ...), got {0:?}"
    )]
    UnknownService(String),
    /// The port of a listen address (the cause is kept).
    #[error("{0} (expected [host:]port)")]
    ListenPort(#[source] Box<AddrError>),
    #[error("bad listen host {0:?}")]
    ListenHost(String),
    #[error("expected a host name, an IP address or a Unix socket path, got an empty string")]
    EmptyHost,
    #[error("{0:?} is not a valid IPv4 address")]
    BadIpv4(String),
    #[error("{0:?} is not a valid IPv6 address")]
    BadIpv6(String),
    #[error("{0:?} is not a valid host name, IP address or Unix socket path")]
    BadHost(String),
}

impl ListenAddr {
    /// Parses C Pen's listen syntax: a path containing `/` is a Unix socket; otherwise the
    /// **last** `:` separates host and port (`8080`, `0.0.0.0:80`, `::1:2222`, `:::10000`,
    /// `[::1]:8080`, `localhost:8080`); no host means 0.0.0.0. Port 0 is accepted (DSR: every
    /// port; proxy: a port the kernel picks, which pen reports). Numbers or the well-known
    /// service names of [`parse_port`] (no `/etc/services`: parsing is pure).
    pub fn parse(s: &str) -> Result<ListenAddr, AddrError> {
        if s.is_empty() {
            return Err(AddrError::EmptyListen);
        }
        if s.contains('/') {
            return Ok(ListenAddr::Unix(PathBuf::from(s)));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => ("", s),
        };
        let port = parse_port(port).map_err(|e| AddrError::ListenPort(Box::new(e)))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Ok(ListenAddr::Inet(SocketAddr::new(
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                port,
            )));
        }
        match HostSpec::parse(host)? {
            HostSpec::Ip(ip) => Ok(ListenAddr::Inet(SocketAddr::new(ip, port))),
            HostSpec::Name(host) => Ok(ListenAddr::Name { host, port }),
            HostSpec::Unix(_) => Err(AddrError::ListenHost(host.to_string())),
        }
    }

    /// The port, or `None` for a Unix socket.
    pub fn port(&self) -> Option<u16> {
        match self {
            ListenAddr::Inet(sa) => Some(sa.port()),
            ListenAddr::Name { port, .. } => Some(*port),
            ListenAddr::Unix(_) => None,
        }
    }
}

/// Canonical text, accepted back by [`ListenAddr::parse`] (IPv6 in brackets).
impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Inet(sa) => write!(f, "{sa}"),
            ListenAddr::Unix(p) => write!(f, "{}", p.display()),
            ListenAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A port number 0-65535 (decimal digits only).
pub fn parse_port(s: &str) -> Result<u16, AddrError> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u16>()
            .map_err(|_| AddrError::PortOutOfRange(s.to_string()));
    }
    service_port(s).ok_or_else(|| AddrError::UnknownService(s.to_string()))
}

/// Well-known TCP/UDP service names, as C Pen resolves them through getservbyname (its usage
/// text says `pen smtp mailhost1:smtp mailhost2:25 mailhost3`). A fixed table keeps parsing
/// pure and identical on every machine; the names are those of IANA's registry that
/// /etc/services carries on Debian.
pub fn service_port(name: &str) -> Option<u16> {
    const SERVICES: &[(&str, u16)] = &[
        ("ftp-data", 20),
        ("ftp", 21),
        ("ssh", 22),
        ("telnet", 23),
        ("smtp", 25),
        ("domain", 53),
        ("gopher", 70),
        ("finger", 79),
        ("http", 80),
        ("www", 80),
        ("kerberos", 88),
        ("pop3", 110),
        ("sunrpc", 111),
        ("auth", 113),
        ("nntp", 119),
        ("ntp", 123),
        ("imap", 143),
        ("imap2", 143),
        ("snmp", 161),
        ("ldap", 389),
        ("https", 443),
        ("microsoft-ds", 445),
        ("submissions", 465),
        ("smtps", 465),
        ("syslog", 514),
        ("submission", 587),
        ("ldaps", 636),
        ("rsync", 873),
        ("imaps", 993),
        ("pop3s", 995),
        ("socks", 1080),
        ("openvpn", 1194),
        ("ms-sql-s", 1433),
        ("mysql", 3306),
        ("postgresql", 5432),
        ("sip", 5060),
        ("x11", 6000),
        ("redis", 6379),
        ("http-alt", 8080),
        ("webcache", 8080),
        ("memcache", 11211),
    ];
    SERVICES.iter().find(|(n, _)| *n == name).map(|&(_, p)| p)
}

/// A backend host before resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSpec {
    Ip(IpAddr),
    /// A host name, resolved once at start-up (getaddrinfo, first result), as C Pen does.
    Name(String),
    Unix(PathBuf),
}

impl HostSpec {
    /// A backend host: a path containing `/` is a Unix socket, an IPv4/IPv6 literal (IPv6 may
    /// be in brackets) is an address, anything else must be a valid host name (letters, digits,
    /// `-`, `_`, `.`; at most 253 characters) and stays unresolved.
    pub fn parse(s: &str) -> Result<HostSpec, AddrError> {
        if s.is_empty() {
            return Err(AddrError::EmptyHost);
        }
        if s.contains('/') {
            return Ok(HostSpec::Unix(PathBuf::from(s)));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(HostSpec::Ip(ip));
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return inner
                .parse::<Ipv6Addr>()
                .map(|a| HostSpec::Ip(IpAddr::V6(a)))
                .map_err(|_| AddrError::BadIpv6(s.to_string()));
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(AddrError::BadIpv4(s.to_string()));
        }
        if s.contains(':') {
            return Err(AddrError::BadIpv6(s.to_string()));
        }
        let valid = s.len() <= 253
            && !s.starts_with(['-', '.'])
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            Ok(HostSpec::Name(s.to_string()))
        } else {
            Err(AddrError::BadHost(s.to_string()))
        }
    }
}

/// Canonical text, accepted back by [`HostSpec::parse`] (IPv6 without brackets).
impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostSpec::Ip(ip) => write!(f, "{ip}"),
            HostSpec::Name(n) => write!(f, "{n}"),
            HostSpec::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A backend address after resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendAddr {
    Inet(SocketAddr),
    Unix(PathBuf),
}

/// One server slot, as `server N ...` and `host[:port[:maxc[:hard[:weight[:prio]]]]]` set it.
/// C Pen keeps slots even when unusable (port 0, no address); so do we.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerConfig {
    /// `None` while the slot has no address yet.
    pub host: Option<HostSpec>,
    /// 0 = unusable (C Pen's `try_server` refuses port 0). Unix backends ignore it.
    pub port: u16,
    /// Soft limit for new clients; 0 = unlimited.
    pub maxc: u32,
    /// Hard limit for returning clients; 0 = unlimited... as C Pen: only checked when maxc != 0.
    pub hard: u32,
    pub weight: u32,
    pub prio: u32,
    /// `server N acl A`: which clients may use this server. `None` = everyone.
    pub acl: Option<u8>,
}

/// `tcp_fastclose up|down|both|off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FastClose {
    #[default]
    Off,
    Up,
    Down,
    Both,
}

impl FastClose {
    /// The penctl word.
    pub fn as_str(self) -> &'static str {
        match self {
            FastClose::Off => "off",
            FastClose::Up => "up",
            FastClose::Down => "down",
            FastClose::Both => "both",
        }
    }
}

/// `proxy_protocol v1|v2|off` and `server N proxy v1|v2|off` (pen-rs addition): the PROXY
/// protocol header pen sends first on a backend connection ([`crate::proxyproto`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum SendProxy {
    #[default]
    Off,
    V1,
    V2,
}

impl SendProxy {
    /// The penctl word.
    pub fn as_str(self) -> &'static str {
        match self {
            SendProxy::Off => "off",
            SendProxy::V1 => "v1",
            SendProxy::V2 => "v2",
        }
    }

    /// The setting for a penctl word (`v1`, `v2`, `off`).
    pub fn from_word(w: &str) -> Option<SendProxy> {
        [SendProxy::Off, SendProxy::V1, SendProxy::V2]
            .into_iter()
            .find(|p| p.as_str() == w)
    }

    /// The version to send; `None` = no header.
    pub fn version(self) -> Option<crate::proxyproto::Version> {
        match self {
            SendProxy::Off => None,
            SendProxy::V1 => Some(crate::proxyproto::Version::V1),
            SendProxy::V2 => Some(crate::proxyproto::Version::V2),
        }
    }
}

/// `-L ssl23|ssl2|ssl3|tls1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslProtocol {
    #[default]
    Ssl23,
    Ssl2,
    Ssl3,
    Tls1,
}

impl SslProtocol {
    /// The `-L` word.
    pub fn as_str(self) -> &'static str {
        match self {
            SslProtocol::Ssl23 => "ssl23",
            SslProtocol::Ssl2 => "ssl2",
            SslProtocol::Ssl3 => "ssl3",
            SslProtocol::Tls1 => "tls1",
        }
    }
}

/// TLS termination settings (`-E -K -G -A -Z -R -L`, `ssl_*` commands). Stored now; used by the
/// TLS issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub ca_dir: Option<PathBuf>,
    pub require_client_cert: bool,
    pub compat: bool,
    pub protocol: SslProtocol,
    pub ciphers: Option<String>,
    /// `ssl_option` values in the order given (`no_sslv3`, `cipher_server_preference`, ...).
    pub options: Vec<String>,
    pub sni_path: Option<PathBuf>,
    pub ocsp_response: Option<PathBuf>,
    pub renegotiation_interval: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            ca_file: None,
            ca_dir: None,
            require_client_cert: false,
            compat: false,
            protocol: SslProtocol::Ssl23,
            ciphers: None,
            options: Vec::new(),
            sni_path: None,
            ocsp_response: None,
            renegotiation_interval: defaults::SSL_RENEGOTIATION_INTERVAL,
        }
    }
}

/// Selection flags (`mode` reports them). Precedence: prio > weight > hash > roundrobin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mode {
    /// `-r` / `roundrobin`: client tracking off.
    pub roundrobin: bool,
    /// `-h` / `hash`.
    pub hash: bool,
    /// `-W` / `weight`.
    pub weight: bool,
    /// `prio`.
    pub prio: bool,
    /// `-s` / `stubborn`: never fail over.
    pub stubborn: bool,
}

/// The whole configuration of one pen process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    // --- listener and mode ---
    /// `None` until the positional listen address is parsed (a config from `-F` alone may lack it).
    pub listen: Option<ListenAddr>,
    /// The listen address as it was given (`8080`, `127.0.0.1:8080`), set with `listen`:
    /// C Pen replies and writes it this way. `None` when `listen` was set without a spelling.
    pub listen_given: Option<String>,
    /// `-U`.
    pub udp: bool,
    pub servers: Vec<ServerConfig>,
    /// `server N check ...` (pen-rs addition): active health checks by server index; see
    /// [`crate::health`].
    pub checks: std::collections::BTreeMap<usize, crate::health::CheckConfig>,
    /// `-e host:port`: server of last resort.
    pub emergency: Option<ServerConfig>,
    /// `-B host:port`: where clients denied by `client_acl` go.
    pub abuse: Option<ServerConfig>,
    pub mode: Mode,

    // --- access lists ---
    pub acls: Acls,
    pub client_acl: u8,
    pub control_acl: u8,
    /// `tarpit_acl N`; `None` = off (C Pen's -1).
    pub tarpit_acl: Option<u8>,
    /// `tarpit_persist` (pen-rs addition): hold tarpitted connections with a zero window.
    pub tarpit_persist: bool,
    /// `tarpit_capture SUBNET [wait S] [max N]` (pen-rs addition): LaBrea-style capture.
    pub tarpit_capture: Option<crate::engine::capture::CaptureConfig>,
    /// `tarpit_rate RATE [burst B] [net R] [net_burst B]` (pen-rs addition): reply rate cap.
    pub tarpit_rate: Option<crate::engine::ratecap::RateConfig>,

    // --- times (seconds) ---
    /// `-T`: client tracking time; 0 = never expire.
    pub tracking_secs: u64,
    /// `-b`.
    pub blacklist_secs: u64,
    /// `-t`, >= 1.
    pub connect_timeout_secs: u64,
    /// `idle_timeout`; 0 = off.
    pub idle_timeout_secs: u64,
    /// UDP flow idle time (pen-rs addition).
    pub udp_flow_idle_secs: u64,

    // --- tables and limits ---
    /// `-c` / `clients_max`.
    pub clients_max: usize,
    /// `-x` / `conn_max`.
    pub conn_max: usize,
    pub pending_max: usize,
    /// `-m`, >= 1.
    pub multi_accept: usize,
    /// `-q`, >= 50.
    pub backlog: u32,
    /// `idlers N`.
    pub idlers: u32,

    // --- socket options ---
    pub tcp_nodelay: bool,
    /// `keepalive`: SO_KEEPALIVE on upstream sockets.
    pub keepalive: bool,
    pub tcp_fastclose: FastClose,
    /// `source IP`: bind upstream sockets to it (takes precedence over `transparent`).
    pub source: Option<IpAddr>,
    pub transparent: bool,

    // --- features of later issues, stored now ---
    /// `-H` / `http`: X-Forwarded-For.
    pub http: bool,
    pub tls: TlsConfig,
    pub dsr_if: Option<String>,
    /// Parsed and stored; C Pen never uses it either.
    pub dsr_ip: Option<IpAddr>,
    pub dummy: bool,
    pub peek: bool,

    // --- PROXY protocol (pen-rs addition, see `crate::proxyproto`) ---
    /// `proxy_protocol v1|v2|off`: the header sent to every backend without its own setting.
    pub proxy_protocol: SendProxy,
    /// `server N proxy v1|v2|off`: per-server settings, by server index (absent = follow
    /// `proxy_protocol`; `server N proxy default` removes one).
    pub server_proxy: std::collections::BTreeMap<usize, SendProxy>,
    /// `accept_proxy v1|v2|any|off`: clients of the TCP listener must start with a PROXY
    /// header of these versions; `None` = off.
    pub accept_proxy: Option<crate::proxyproto::Accept>,
    /// `accept_proxy ... timeout N`: seconds a client has to send its whole header, >= 1.
    pub accept_proxy_timeout_secs: u64,

    // --- process and control ---
    /// `-f`.
    pub foreground: bool,
    /// `-d`, repeatable.
    pub debug: u32,
    /// `-a`.
    pub ascii: bool,
    /// `-X`: enable the `exit` control command.
    pub exit_enabled: bool,
    pub abort_on_error: bool,
    /// `-C port|[addr:]port|/path`, kept as given; the daemon parses it.
    pub control: Option<String>,
    /// `control_any_file` (pen-rs addition): TCP control clients may name files (`write FILE`,
    /// `include FILE`, `web_stats FILE`, `log FILE`). Off: only Unix-socket clients and `-O`/`-F`
    /// may. Set only with `-O`/`-o` or in the `-F` file, never from the control socket.
    pub control_any_file: bool,
    /// `-F`.
    pub config_file: Option<PathBuf>,
    /// `-l file|host:port`.
    pub log: Option<String>,
    /// `-w file` / `web_stats`.
    pub web_stats: Option<PathBuf>,
    /// `prometheus [addr:]port` (pen-rs addition): where the Prometheus metrics are served.
    pub prometheus: Option<SocketAddr>,
    /// `-p`.
    pub pid_file: Option<PathBuf>,
    /// `-u`.
    pub user: Option<String>,
    /// `-j`.
    pub chroot: Option<PathBuf>,
    /// `epoll`/`poll`/`select`/`kqueue`/`-P`: accepted and recorded, tokio decides.
    pub event_backend: Option<String>,
    /// `worker_threads N` (pen-rs addition), 1..=`WORKER_THREADS_MAX`: the tokio runtime's
    /// threads (1 = current_thread runtime). A start-up setting: a change at run time is stored
    /// (and written by `write`) but takes effect at the next start.
    pub worker_threads: usize,
    /// The threads of the runtime actually running, set by the daemon when it builds it (`None`
    /// before that); the `worker_threads` query replies this value.
    pub worker_threads_in_force: Option<usize>,
    /// `upgrade` (pen-rs addition, start-up only, never written by `write`): take the
    /// listening sockets over from the running pen instead of opening them
    /// ([`crate::upgrade`]).
    pub upgrade: bool,
    /// `upgrade_socket PATH` (pen-rs addition): the hand-over socket; default: the pid file's
    /// path with `.upgrade` appended.
    pub upgrade_socket: Option<PathBuf>,
    /// `drain_timeout N` (pen-rs addition): seconds the old pen waits for its connections
    /// after an upgrade handed its sockets over.
    pub drain_timeout_secs: u64,
}

impl Config {
    /// The PROXY protocol header to send to server `idx` (`None`: the emergency or abuse
    /// server, which follow `proxy_protocol`): its own `server N proxy`, else the global one.
    pub fn proxy_for(&self, idx: Option<usize>) -> SendProxy {
        idx.and_then(|i| self.server_proxy.get(&i).copied())
            .unwrap_or(self.proxy_protocol)
    }

    /// Whether any PROXY protocol setting is on (sending to some server, or accepting): the
    /// io_uring path does not do it, so pen starts on the tokio path.
    pub fn proxy_protocol_in_use(&self) -> bool {
        self.accept_proxy.is_some()
            || self.proxy_protocol != SendProxy::Off
            || self.server_proxy.values().any(|p| *p != SendProxy::Off)
    }

    /// The listen address as C Pen shows it (`listen` reply, `write`): as it was given, else
    /// the canonical text.
    pub fn listen_text(&self) -> Option<String> {
        let l = self.listen.as_ref()?;
        Some(self.listen_given.clone().unwrap_or_else(|| l.to_string()))
    }
}

impl Default for Config {
    fn default() -> Self {
        use defaults::*;
        Config {
            listen: None,
            listen_given: None,
            udp: false,
            servers: Vec::new(),
            checks: Default::default(),
            emergency: None,
            abuse: None,
            mode: Mode::default(),
            acls: Acls::default(),
            client_acl: 0,
            control_acl: 0,
            tarpit_acl: None,
            tarpit_persist: false,
            tarpit_capture: None,
            tarpit_rate: None,
            tracking_secs: TRACKING_SECS,
            blacklist_secs: BLACKLIST_SECS,
            connect_timeout_secs: CONNECT_TIMEOUT_SECS,
            idle_timeout_secs: 0,
            udp_flow_idle_secs: UDP_FLOW_IDLE_SECS,
            clients_max: CLIENTS_MAX,
            conn_max: CONN_MAX,
            pending_max: PENDING_MAX,
            multi_accept: MULTI_ACCEPT,
            backlog: BACKLOG,
            idlers: 0,
            tcp_nodelay: false,
            keepalive: false,
            tcp_fastclose: FastClose::Off,
            source: None,
            transparent: false,
            http: false,
            tls: TlsConfig::default(),
            dsr_if: None,
            dsr_ip: None,
            dummy: false,
            peek: false,
            proxy_protocol: SendProxy::Off,
            server_proxy: Default::default(),
            accept_proxy: None,
            accept_proxy_timeout_secs: ACCEPT_PROXY_TIMEOUT_SECS,
            foreground: false,
            debug: 0,
            ascii: false,
            exit_enabled: false,
            abort_on_error: false,
            control: None,
            control_any_file: false,
            config_file: None,
            log: None,
            web_stats: None,
            prometheus: None,
            pid_file: None,
            user: None,
            chroot: None,
            event_backend: None,
            worker_threads: WORKER_THREADS,
            worker_threads_in_force: None,
            upgrade: false,
            upgrade_socket: None,
            drain_timeout_secs: crate::upgrade::DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_last_colon_separates_port() {
        assert_eq!(
            ListenAddr::parse("::1:2222").unwrap(),
            ListenAddr::Inet("[::1]:2222".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse(":::10000").unwrap(),
            ListenAddr::Inet("[::]:10000".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("[::1]:8080").unwrap(),
            ListenAddr::Inet("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("8080").unwrap(),
            ListenAddr::Inet("0.0.0.0:8080".parse().unwrap())
        );
    }

    #[test]
    fn listen_host_name_stays_unresolved() {
        assert_eq!(
            ListenAddr::parse("localhost:8080").unwrap(),
            ListenAddr::Name {
                host: "localhost".into(),
                port: 8080
            }
        );
    }

    #[test]
    fn listen_path_is_unix_socket() {
        assert_eq!(
            ListenAddr::parse("/tmp/pen.sock").unwrap(),
            ListenAddr::Unix("/tmp/pen.sock".into())
        );
    }

    #[test]
    fn listen_accepts_well_known_service_names_and_rejects_others() {
        assert_eq!(ListenAddr::parse("smtp").unwrap().port(), Some(25));
        let e = ListenAddr::parse("smtpx").unwrap_err();
        assert!(e.to_string().contains("\"smtpx\""), "{e}");
        // The port's own error is kept as the cause.
        assert_eq!(
            e,
            AddrError::ListenPort(Box::new(AddrError::UnknownService("smtpx".into())))
        );
        let cause = std::error::Error::source(&e).expect("a cause");
        assert_eq!(
            cause.to_string(),
            AddrError::UnknownService("smtpx".into()).to_string()
        );
        assert!(matches!(
            ListenAddr::parse("1.2.3.4:70000"),
            Err(AddrError::ListenPort(p)) if *p == AddrError::PortOutOfRange("70000".into())
        ));
        assert!(ListenAddr::parse("").is_err());
    }

    #[test]
    fn listen_display_round_trips() {
        for s in [
            "0.0.0.0:80",
            "[::1]:8080",
            "/tmp/x",
            "lb.example:99",
            "10.0.0.1:0",
        ] {
            let a = ListenAddr::parse(s).unwrap();
            assert_eq!(ListenAddr::parse(&a.to_string()).unwrap(), a);
        }
    }

    #[test]
    fn host_spec_kinds() {
        assert_eq!(
            HostSpec::parse("10.0.0.1").unwrap(),
            HostSpec::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            HostSpec::parse("[2001:db8::1]").unwrap(),
            HostSpec::Ip("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            HostSpec::parse("web-1.example").unwrap(),
            HostSpec::Name("web-1.example".into())
        );
        assert_eq!(
            HostSpec::parse("/run/app.sock").unwrap(),
            HostSpec::Unix("/run/app.sock".into())
        );
    }

    #[test]
    fn host_spec_rejects_bad_addresses() {
        assert_eq!(
            HostSpec::parse("10.0.0.256"),
            Err(AddrError::BadIpv4("10.0.0.256".into()))
        );
        assert!(
            HostSpec::parse("fe80::zz")
                .unwrap_err()
                .to_string()
                .contains("IPv6")
        );
        assert!(HostSpec::parse("a b").is_err());
        assert!(HostSpec::parse("-x").is_err());
    }
}
