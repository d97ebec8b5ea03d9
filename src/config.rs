//! The typed configuration, with C Pen's defaults (reference §2, §18). Pure.
//!
//! `cli::parse` builds a [`Config`] from argv; `-o`/`-O` commands, `-F` files and (later) the
//! control socket change it through `ctl`. Nothing here does IO: host names stay unresolved
//! ([`HostSpec::Name`]) until the daemon resolves them at start-up.

use std::net::{IpAddr, SocketAddr};
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
}

/// Where pen listens: `[host:]port` or a Unix socket path (anything containing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Inet(SocketAddr),
    Unix(PathBuf),
}

/// A backend host before resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSpec {
    Ip(IpAddr),
    /// A host name, resolved once at start-up (getaddrinfo, first result), as C Pen does.
    Name(String),
    Unix(PathBuf),
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

/// `-L ssl23|ssl2|ssl3|tls1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslProtocol {
    #[default]
    Ssl23,
    Ssl2,
    Ssl3,
    Tls1,
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
    /// `-U`.
    pub udp: bool,
    pub servers: Vec<ServerConfig>,
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
    /// `-F`.
    pub config_file: Option<PathBuf>,
    /// `-l file|host:port`.
    pub log: Option<String>,
    /// `-w file` / `web_stats`.
    pub web_stats: Option<PathBuf>,
    /// `-p`.
    pub pid_file: Option<PathBuf>,
    /// `-u`.
    pub user: Option<String>,
    /// `-j`.
    pub chroot: Option<PathBuf>,
    /// `epoll`/`poll`/`select`/`kqueue`/`-P`: accepted and recorded, tokio decides.
    pub event_backend: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        use defaults::*;
        Config {
            listen: None,
            udp: false,
            servers: Vec::new(),
            emergency: None,
            abuse: None,
            mode: Mode::default(),
            acls: Acls::default(),
            client_acl: 0,
            control_acl: 0,
            tarpit_acl: None,
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
            foreground: false,
            debug: 0,
            ascii: false,
            exit_enabled: false,
            abort_on_error: false,
            control: None,
            config_file: None,
            log: None,
            web_stats: None,
            pid_file: None,
            user: None,
            chroot: None,
            event_backend: None,
        }
    }
}
