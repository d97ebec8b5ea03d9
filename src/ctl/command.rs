//! penctl commands: parse and display. Pure.
//!
//! One command per line, words separated by white space; `#` starts a comment anywhere on the
//! line; `no X` negates. [`parse`] turns a line into a [`Command`]; `Display` prints the
//! canonical line, and `parse(&cmd.to_string()) == Ok(Some(cmd))` for every command.
//!
//! Differences from C Pen's `do_cmd` (deliberate): numbers must be numbers (C's `atoi` turns
//! `abc` into 0), out-of-range ACL numbers are errors (C silently uses 0), extra words after a
//! complete command are errors (C ignores them), and unknown words are errors naming the
//! command (C replies `do_cmd: ignoring command starting with 'X'`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use crate::acl::{ACLS_MAX, AclEntry, AclMatch};
use crate::config::{FastClose, HostSpec, ListenAddr, SendProxy, defaults};
use crate::proxyproto::Accept;

/// On/off settings written `X` / `no X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    AbortOnError,
    Ascii,
    /// Obsolete (`block` / `no block`): accepted and ignored.
    Block,
    /// `control_any_file` (pen-rs addition): TCP control clients may name files. Only from
    /// `-O`/`-o` and `-F` files; the control socket refuses it.
    ControlAnyFile,
    /// Obsolete (`delayed_forward` / `no delayed_forward`): accepted and ignored.
    DelayedForward,
    Dummy,
    Hash,
    Http,
    Keepalive,
    Peek,
    Prio,
    Roundrobin,
    Stubborn,
    TcpNodelay,
    Transparent,
    Weight,
}

impl Flag {
    pub const ALL: [Flag; 16] = [
        Flag::AbortOnError,
        Flag::Ascii,
        Flag::Block,
        Flag::ControlAnyFile,
        Flag::DelayedForward,
        Flag::Dummy,
        Flag::Hash,
        Flag::Http,
        Flag::Keepalive,
        Flag::Peek,
        Flag::Prio,
        Flag::Roundrobin,
        Flag::Stubborn,
        Flag::TcpNodelay,
        Flag::Transparent,
        Flag::Weight,
    ];

    /// The penctl word.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::AbortOnError => "abort_on_error",
            Flag::Ascii => "ascii",
            Flag::Block => "block",
            Flag::ControlAnyFile => "control_any_file",
            Flag::DelayedForward => "delayed_forward",
            Flag::Dummy => "dummy",
            Flag::Hash => "hash",
            Flag::Http => "http",
            Flag::Keepalive => "keepalive",
            Flag::Peek => "peek",
            Flag::Prio => "prio",
            Flag::Roundrobin => "roundrobin",
            Flag::Stubborn => "stubborn",
            Flag::TcpNodelay => "tcp_nodelay",
            Flag::Transparent => "transparent",
            Flag::Weight => "weight",
        }
    }

    fn from_word(w: &str) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| f.as_str() == w)
    }
}

/// `epoll` / `kqueue` / `poll` / `select`: recorded in `Config::event_backend`; plain TCP
/// runs on the tokio path (tokio decides: epoll). `io_uring` (pen-rs): plain TCP runs on the
/// io_uring loop (`proxy::uring`). Neither given: io_uring where it works. Start-up only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventBackend {
    Epoll,
    Kqueue,
    Poll,
    Select,
    IoUring,
}

impl EventBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            EventBackend::Epoll => "epoll",
            EventBackend::Kqueue => "kqueue",
            EventBackend::Poll => "poll",
            EventBackend::Select => "select",
            EventBackend::IoUring => "io_uring",
        }
    }

    pub fn from_word(w: &str) -> Option<EventBackend> {
        [
            EventBackend::Epoll,
            EventBackend::Kqueue,
            EventBackend::Poll,
            EventBackend::Select,
            EventBackend::IoUring,
        ]
        .into_iter()
        .find(|b| b.as_str() == w)
    }
}

/// `ssl_option ...` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslOption {
    NoSslv2,
    NoSslv3,
    NoTlsv1,
    NoTlsv1_1,
    NoTlsv1_2,
    CipherServerPreference,
}

impl SslOption {
    pub const ALL: [SslOption; 6] = [
        SslOption::NoSslv2,
        SslOption::NoSslv3,
        SslOption::NoTlsv1,
        SslOption::NoTlsv1_1,
        SslOption::NoTlsv1_2,
        SslOption::CipherServerPreference,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SslOption::NoSslv2 => "no_sslv2",
            SslOption::NoSslv3 => "no_sslv3",
            SslOption::NoTlsv1 => "no_tlsv1",
            SslOption::NoTlsv1_1 => "no_tlsv1.1",
            SslOption::NoTlsv1_2 => "no_tlsv1.2",
            SslOption::CipherServerPreference => "cipher_server_preference",
        }
    }

    pub fn from_word(w: &str) -> Option<SslOption> {
        SslOption::ALL.into_iter().find(|o| o.as_str() == w)
    }
}

/// `tarpit_acl N` value: a list 0-9, or `-1` = off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TarpitAcl {
    Off,
    List(u8),
}

/// `listen ADDR`'s argument: the address, and its spelling (C Pen replies and writes the
/// listen address as it was given: `8080` stays `8080`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenArg {
    pub addr: ListenAddr,
    pub given: String,
}

impl ListenArg {
    /// Parses a listen address, keeping its spelling.
    pub fn parse(s: &str) -> Result<ListenArg, crate::config::AddrError> {
        Ok(ListenArg {
            addr: ListenAddr::parse(s)?,
            given: s.to_string(),
        })
    }
}

impl fmt::Display for ListenArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.given)
    }
}

/// `server N [acl A] [address A] [port P] [max M] [hard H] [blacklist T] [weight W] [prio P]`:
/// any subset, any order; a repeated keyword keeps the last value (as C Pen). pen-rs adds
/// `check ...|check off` (see [`crate::health`]), which takes the rest of the line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerCmd {
    pub index: usize,
    pub acl: Option<u8>,
    pub address: Option<HostSpec>,
    pub port: Option<u16>,
    pub max: Option<u32>,
    pub hard: Option<u32>,
    /// Blacklist for exactly T seconds from now (`0` clears): runtime state, not config.
    pub blacklist: Option<u64>,
    pub weight: Option<u32>,
    pub prio: Option<u32>,
    /// `check ...` / `check off`: the active health check (last on the line).
    pub check: Option<crate::health::CheckSetting>,
    /// `proxy v1|v2|off|default` (pen-rs addition): the PROXY protocol header sent to this
    /// server; `Some(None)` = `default` (follow `proxy_protocol`).
    pub proxy: Option<Option<SendProxy>>,
}

/// `accept_proxy [v1|v2|any|off] [timeout N]` (pen-rs addition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptProxyCmd {
    /// `None` = `off`.
    pub mode: Option<Accept>,
    /// Seconds a client has to send its header; `None` = unchanged.
    pub timeout: Option<u64>,
}

impl fmt::Display for AcceptProxyCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode.map_or("off", Accept::as_str))?;
        if let Some(t) = self.timeout {
            write!(f, " timeout {t}")?;
        }
        Ok(())
    }
}

/// Every command of C Pen 0.34's penctl language (reference §3). `Option` arguments are the
/// get/set forms: `None` = query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `X` / `no X` for the on/off settings.
    Flag(Flag, bool),
    /// `acl N permit|deny A.B.C.D [mask]` | `v6addr[/len]` | `country CC`.
    Acl {
        list: u8,
        entry: AclEntry,
    },
    /// `no acl N`: empty list N.
    NoAcl(u8),
    Blacklist(Option<u64>),
    ClientAcl(Option<u8>),
    ClientsMax(Option<usize>),
    Close(u32),
    Connection(u32),
    ConnMax(Option<usize>),
    Control,
    ControlAcl(Option<u8>),
    Debug(Option<u32>),
    DsrIf(String),
    DsrIp(IpAddr),
    EventBackend(EventBackend),
    Exit,
    IdleTimeout(Option<u64>),
    Idlers(Option<u32>),
    Include(PathBuf),
    Listen(Option<ListenArg>),
    Log(Option<String>),
    NoLog,
    Mode,
    PendingMax(usize),
    Pid,
    Recent(Option<u64>),
    Server(ServerCmd),
    Servers,
    Socket(u32),
    Source(IpAddr),
    /// `ssl_ciphers [LIST]`; no LIST clears the setting (as C Pen).
    SslCiphers(Option<String>),
    SslClientRenegotiationInterval(u64),
    SslOcspResponse(PathBuf),
    SslOption(SslOption),
    SslSniPath(PathBuf),
    Status,
    TarpitAcl(Option<TarpitAcl>),
    /// `tarpit_persist` / `no tarpit_persist` (pen-rs addition): hold tarpitted connections
    /// open with a zero window.
    TarpitPersist(bool),
    /// `tarpit_capture [SUBNET [wait S] [max N]]` (pen-rs addition): tarpit addresses of
    /// SUBNET nobody answers ARP/NDP for; no argument = query.
    TarpitCapture(Option<crate::engine::capture::CaptureConfig>),
    /// `no tarpit_capture`.
    NoTarpitCapture,
    /// `tarpit_rate [RATE [burst B] [net R] [net_burst B]]` (pen-rs addition): cap the
    /// tarpit's replies per second, globally and per source /24 or /64; no argument = query.
    TarpitRate(Option<crate::engine::ratecap::RateConfig>),
    /// `no tarpit_rate`.
    NoTarpitRate,
    /// `tarpit` (pen-rs addition): the tarpit's settings, counters and captured addresses.
    Tarpit,
    TcpFastclose(FastClose),
    Timeout(Option<u64>),
    Tracking(Option<u64>),
    /// `udp_flow_idle [N]` (pen-rs addition): seconds a UDP flow lives without traffic.
    UdpFlowIdle(Option<u64>),
    /// `worker_threads [N]` (pen-rs addition): the tokio runtime's threads, 1-1024 (1 = a
    /// single-threaded runtime); a start-up setting.
    WorkerThreads(Option<usize>),
    /// `upgrade` (pen-rs addition, start-up: `-O upgrade`): take the listening sockets over
    /// from the running pen (see [`crate::upgrade`]).
    Upgrade,
    /// `upgrade_socket [PATH]` (pen-rs addition): the hand-over socket of the binary upgrade;
    /// no argument = query.
    UpgradeSocket(Option<PathBuf>),
    /// `drain_timeout [N]` (pen-rs addition): seconds an upgraded-away pen waits for its
    /// connections; no argument = query.
    DrainTimeout(Option<u64>),
    WebStats(Option<PathBuf>),
    NoWebStats,
    /// `prometheus [[addr:]port]` (pen-rs addition): serve the Prometheus metrics at
    /// `http://addr:port/metrics`; no argument = query.
    Prometheus(Option<SocketAddr>),
    /// `no prometheus`: stop serving the metrics.
    NoPrometheus,
    /// `version` (pen-rs addition): which program and version this is.
    Version,
    /// `proxy_protocol [v1|v2|off]` (pen-rs addition): the PROXY protocol header sent first
    /// to every backend without its own `server N proxy`; no argument = query.
    ProxyProtocol(Option<SendProxy>),
    /// `accept_proxy [v1|v2|any|off [timeout N]]` (pen-rs addition): clients must start with
    /// a PROXY protocol header; no argument = query.
    AcceptProxy(Option<AcceptProxyCmd>),
    /// `table_hash` (pen-rs addition): digests of the server list and of the DSR Maglev
    /// table, so that N pens behind ECMP or VRRP can be checked to agree.
    TableHash,
    Write(Option<PathBuf>),
}

/// A line that is not a valid command. Displays one line: the command word, then what was
/// wrong and what would be accepted ([`CommandError::message`] without the word). A cause (an
/// address error) is kept as `source()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The first word is no command.
    Unknown { word: String },
    /// An argument is missing: `expected` says what would be accepted.
    Missing { command: String, expected: String },
    /// An argument too many.
    Extra { command: String, got: String },
    /// An argument that is not what the command takes.
    Invalid {
        command: String,
        expected: String,
        got: String,
    },
    /// An argument that is not what the command takes, with the command's usage.
    InvalidWithUsage {
        command: &'static str,
        expected: &'static str,
        got: String,
        usage: &'static str,
    },
    /// An address that does not parse (`listen`, `server N address`); `got` is `None` when
    /// the cause names it.
    Address {
        command: &'static str,
        got: Option<String>,
        source: crate::config::AddrError,
    },
    /// `prometheus ADDR` with something that is not an IP address and port 1-65535.
    MetricsAddress { got: String, why: String },
    /// `tarpit_capture` with a bad subnet (`why` names it).
    Subnet { why: String, usage: &'static str },
    /// `tarpit_rate ... net_burst B` without `net RATE`.
    NetBurstWithoutNet { usage: &'static str },
    /// `no X` for an X that cannot be negated.
    NotNegatable { got: String, expected: String },
    /// A `server` keyword without its value.
    KeywordWithoutValue {
        command: &'static str,
        keyword: String,
    },
    /// A `server` keyword that does not exist.
    UnknownKeyword {
        command: &'static str,
        got: String,
        expected: &'static str,
    },
}

impl CommandError {
    /// The command word (empty for an unknown command).
    pub fn command(&self) -> &str {
        match self {
            CommandError::Unknown { .. } => "",
            CommandError::Missing { command, .. }
            | CommandError::Extra { command, .. }
            | CommandError::Invalid { command, .. } => command,
            CommandError::InvalidWithUsage { command, .. }
            | CommandError::Address { command, .. }
            | CommandError::KeywordWithoutValue { command, .. }
            | CommandError::UnknownKeyword { command, .. } => command,
            CommandError::MetricsAddress { .. } => "prometheus",
            CommandError::Subnet { .. } => "tarpit_capture",
            CommandError::NetBurstWithoutNet { .. } => "tarpit_rate",
            CommandError::NotNegatable { .. } => "no",
        }
    }

    /// What was wrong and what would be accepted, without the command word.
    pub fn message(&self) -> String {
        match self {
            CommandError::Unknown { word } => format!("unknown command {word:?}"),
            CommandError::Missing { expected, .. } => format!("expected {expected}, got nothing"),
            CommandError::Extra { got, .. } => format!("unexpected extra argument {got:?}"),
            CommandError::Invalid { expected, got, .. } => {
                format!("expected {expected}, got {got:?}")
            }
            CommandError::InvalidWithUsage {
                expected,
                got,
                usage,
                ..
            } => format!("expected {expected}, got {got:?} ({usage})"),
            CommandError::Address {
                got: Some(got),
                source,
                ..
            } => format!("bad address {got:?}: {source}"),
            CommandError::Address {
                got: None, source, ..
            } => format!("bad address: {source}"),
            CommandError::MetricsAddress { got, why } => {
                format!("{why} in {got:?}; expected port, addr:port or [v6addr]:port")
            }
            CommandError::Subnet { why, usage } => format!("{why} ({usage})"),
            CommandError::NetBurstWithoutNet { usage } => {
                format!("net_burst needs net RATE ({usage})")
            }
            CommandError::NotNegatable { got, expected } => {
                format!("cannot negate {got:?}; expected one of {expected}")
            }
            CommandError::KeywordWithoutValue { keyword, .. } => {
                format!("keyword {keyword:?} needs a value (server N [keyword value]...)")
            }
            CommandError::UnknownKeyword { got, expected, .. } => {
                format!("unknown keyword {got:?}; expected one of {expected}")
            }
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let command = self.command();
        if command.is_empty() {
            write!(f, "{}", self.message())
        } else {
            write!(f, "{command}: {}", self.message())
        }
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommandError::Address { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// An argument of `command` that is not `expected`.
fn invalid(command: &str, expected: impl Into<String>, got: &str) -> CommandError {
    CommandError::Invalid {
        command: command.to_string(),
        expected: expected.into(),
        got: got.to_string(),
    }
}

/// Cursor over the words of one line, producing errors that name the command.
struct Words<'a> {
    cmd: String,
    words: std::slice::Iter<'a, &'a str>,
}

impl<'a> Words<'a> {
    fn next(&mut self) -> Option<&'a str> {
        self.words.next().copied()
    }

    fn required(&mut self, what: &str) -> Result<&'a str, CommandError> {
        self.next().ok_or_else(|| CommandError::Missing {
            command: self.cmd.clone(),
            expected: what.to_string(),
        })
    }

    fn end(mut self) -> Result<(), CommandError> {
        match self.next() {
            None => Ok(()),
            Some(w) => Err(CommandError::Extra {
                command: self.cmd.clone(),
                got: w.to_string(),
            }),
        }
    }

    fn num<T: std::str::FromStr + PartialOrd + Copy>(
        &self,
        tok: &str,
        what: &str,
        min: T,
        max: T,
    ) -> Result<T, CommandError> {
        parse_num(tok, min, max).ok_or_else(|| invalid(&self.cmd, what, tok))
    }

    fn opt_num<T: std::str::FromStr + PartialOrd + Copy>(
        &mut self,
        what: &str,
        min: T,
        max: T,
    ) -> Result<Option<T>, CommandError> {
        match self.next() {
            None => Ok(None),
            Some(tok) => self.num(tok, what, min, max).map(Some),
        }
    }

    fn req_num<T: std::str::FromStr + PartialOrd + Copy>(
        &mut self,
        what: &str,
        min: T,
        max: T,
    ) -> Result<T, CommandError> {
        let tok = self.required(what)?;
        self.num(tok, what, min, max)
    }

    fn acl_num(&self, tok: &str) -> Result<u8, CommandError> {
        self.num(tok, "an access list number 0-9", 0u8, (ACLS_MAX - 1) as u8)
    }
}

/// Decimal digits only (no sign, no spaces), within `min..=max`.
pub(crate) fn parse_num<T: std::str::FromStr + PartialOrd + Copy>(
    tok: &str,
    min: T,
    max: T,
) -> Option<T> {
    if tok.is_empty() || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: T = tok.parse().ok()?;
    (v >= min && v <= max).then_some(v)
}

const SECS: &str = "a number of seconds";

/// Parses one line. `Ok(None)` for blank lines and comments (`#` anywhere starts a comment).
pub fn parse(line: &str) -> Result<Option<Command>, CommandError> {
    let line = match line.find('#') {
        Some(i) => line.get(..i).unwrap_or(""),
        None => line,
    };
    let toks: Vec<&str> = line.split_ascii_whitespace().collect();
    let Some((&first, rest)) = toks.split_first() else {
        return Ok(None);
    };
    let mut w = Words {
        cmd: first.to_string(),
        words: rest.iter(),
    };
    let cmd = match first {
        "no" => return parse_no(rest).map(Some),
        "acl" => parse_acl(&mut w)?,
        "blacklist" => Command::Blacklist(w.opt_num(&format!("{SECS} >= 0"), 0, u64::MAX)?),
        "client_acl" => Command::ClientAcl(match w.next() {
            None => None,
            Some(t) => Some(w.acl_num(t)?),
        }),
        "clients_max" => Command::ClientsMax(w.opt_num(
            &format!("a client table size 1-{}", defaults::CLIENTS_MAX_LIMIT),
            1,
            defaults::CLIENTS_MAX_LIMIT,
        )?),
        "close" => Command::Close(w.req_num("a connection number", 0, u32::MAX)?),
        "connection" => Command::Connection(w.req_num("a connection number", 0, u32::MAX)?),
        "conn_max" => Command::ConnMax(w.opt_num(
            &format!("a connection table size 1-{}", defaults::CONN_MAX_LIMIT),
            1,
            defaults::CONN_MAX_LIMIT,
        )?),
        "control" => Command::Control,
        "control_acl" => Command::ControlAcl(match w.next() {
            None => None,
            Some(t) => Some(w.acl_num(t)?),
        }),
        "debug" => Command::Debug(w.opt_num("a debug level >= 0", 0, u32::MAX)?),
        "dsr_if" => Command::DsrIf(w.required("a network interface name")?.to_string()),
        "dsr_ip" => {
            let t = w.required("an IP address")?;
            Command::DsrIp(
                t.parse()
                    .map_err(|_| invalid("dsr_ip", "an IP address", t))?,
            )
        }
        "exit" => Command::Exit,
        "idle_timeout" => {
            Command::IdleTimeout(w.opt_num(&format!("{SECS} >= 0 (0 = off)"), 0, u64::MAX)?)
        }
        "idlers" => Command::Idlers(w.opt_num("a number of idle connections >= 0", 0, u32::MAX)?),
        "include" => Command::Include(PathBuf::from(w.required("a file name")?)),
        "listen" => Command::Listen(match w.next() {
            None => None,
            Some(t) => Some(ListenArg::parse(t).map_err(|source| CommandError::Address {
                command: "listen",
                got: Some(t.to_string()),
                source,
            })?),
        }),
        "log" => Command::Log(w.next().map(str::to_string)),
        "mode" => Command::Mode,
        "pending_max" => Command::PendingMax(w.req_num("a number >= 1", 1, usize::MAX)?),
        "pid" => Command::Pid,
        "recent" => Command::Recent(w.opt_num(&format!("{SECS} >= 0"), 0, u64::MAX)?),
        "server" => parse_server(&mut w)?,
        "servers" => Command::Servers,
        "socket" => Command::Socket(w.req_num("a file descriptor number", 0, u32::MAX)?),
        "source" => {
            let t = w.required("an IP address")?;
            Command::Source(
                t.parse()
                    .map_err(|_| invalid("source", "an IP address", t))?,
            )
        }
        "ssl_ciphers" => Command::SslCiphers(w.next().map(str::to_string)),
        "ssl_client_renegotiation_interval" => Command::SslClientRenegotiationInterval(w.req_num(
            &format!("{SECS} >= 0"),
            0,
            u64::MAX,
        )?),
        "ssl_ocsp_response" => Command::SslOcspResponse(PathBuf::from(w.required("a file name")?)),
        "ssl_option" => {
            let accepted = SslOption::ALL.map(SslOption::as_str).join(", ");
            let t = w.required(&format!("one of {accepted}"))?;
            Command::SslOption(
                SslOption::from_word(t)
                    .ok_or_else(|| invalid("ssl_option", format!("one of {accepted}"), t))?,
            )
        }
        "ssl_sni_path" => Command::SslSniPath(PathBuf::from(w.required("a directory")?)),
        "status" => Command::Status,
        "tarpit_acl" => Command::TarpitAcl(match w.next() {
            None => None,
            Some("-1") => Some(TarpitAcl::Off),
            Some(t) => Some(TarpitAcl::List(w.num(
                t,
                "an access list number 0-9 or -1 (off)",
                0u8,
                (ACLS_MAX - 1) as u8,
            )?)),
        }),
        "tarpit" => Command::Tarpit,
        "tarpit_persist" => Command::TarpitPersist(true),
        "tarpit_capture" => Command::TarpitCapture(match w.next() {
            None => None,
            Some(t) => Some(parse_tarpit_capture(&mut w, t)?),
        }),
        "tarpit_rate" => Command::TarpitRate(match w.next() {
            None => None,
            Some(t) => Some(parse_tarpit_rate(&mut w, t)?),
        }),
        "tcp_fastclose" => {
            let what = "up, down, both or off";
            let t = w.required(what)?;
            Command::TcpFastclose(match t {
                "up" => FastClose::Up,
                "down" => FastClose::Down,
                "both" => FastClose::Both,
                "off" => FastClose::Off,
                _ => return Err(invalid("tcp_fastclose", what, t)),
            })
        }
        "timeout" => Command::Timeout(w.opt_num(&format!("{SECS} >= 1"), 1, u64::MAX)?),
        "tracking" => {
            Command::Tracking(w.opt_num(&format!("{SECS} >= 0 (0 = forever)"), 0, u64::MAX)?)
        }
        "udp_flow_idle" => Command::UdpFlowIdle(w.opt_num(&format!("{SECS} >= 1"), 1, u64::MAX)?),
        "worker_threads" => Command::WorkerThreads(w.opt_num(
            &format!(
                "a number of threads from 1 to {}",
                defaults::WORKER_THREADS_MAX
            ),
            1,
            defaults::WORKER_THREADS_MAX,
        )?),
        "upgrade" => Command::Upgrade,
        "upgrade_socket" => Command::UpgradeSocket(w.next().map(PathBuf::from)),
        "drain_timeout" => Command::DrainTimeout(w.opt_num(
            &format!("{SECS} >= 0 (0 = do not wait)"),
            0,
            u64::MAX,
        )?),
        "web_stats" => Command::WebStats(w.next().map(PathBuf::from)),
        "prometheus" => Command::Prometheus(match w.next() {
            None => None,
            Some(t) => Some(parse_metrics_addr(t)?),
        }),
        "version" => Command::Version,
        "table_hash" => Command::TableHash,
        "proxy_protocol" => Command::ProxyProtocol(match w.next() {
            None => None,
            Some(t) => Some(
                SendProxy::from_word(t)
                    .ok_or_else(|| invalid("proxy_protocol", "v1, v2 or off", t))?,
            ),
        }),
        "accept_proxy" => Command::AcceptProxy(match w.next() {
            None => None,
            Some(t) => Some(parse_accept_proxy(&mut w, t)?),
        }),
        "write" => Command::Write(w.next().map(PathBuf::from)),
        other => {
            if let Some(b) = EventBackend::from_word(other) {
                Command::EventBackend(b)
            } else if let Some(f) = Flag::from_word(other) {
                Command::Flag(f, true)
            } else {
                return Err(CommandError::Unknown {
                    word: other.to_string(),
                });
            }
        }
    };
    w.end()?;
    Ok(Some(cmd))
}

/// `accept_proxy MODE [timeout N]`.
fn parse_accept_proxy(w: &mut Words<'_>, mode: &str) -> Result<AcceptProxyCmd, CommandError> {
    const MODES: &str = "v1, v2, any or off";
    let mode = match mode {
        "v1" => Some(Accept::V1),
        "v2" => Some(Accept::V2),
        "any" => Some(Accept::Any),
        "off" => None,
        _ => return Err(invalid("accept_proxy", MODES, mode)),
    };
    let timeout = match w.next() {
        None => None,
        Some("timeout") => Some(w.req_num(&format!("{SECS} >= 1"), 1, u64::MAX)?),
        Some(t) => return Err(invalid("accept_proxy", "timeout N after the mode", t)),
    };
    Ok(AcceptProxyCmd { mode, timeout })
}

/// `prometheus`'s address: `port` (all addresses), `addr:port` or `[v6]:port`; an IP address,
/// not a host name, and a port 1-65535.
fn parse_metrics_addr(t: &str) -> Result<SocketAddr, CommandError> {
    let bad = |why: &str| CommandError::MetricsAddress {
        got: t.to_string(),
        why: why.to_string(),
    };
    match ListenAddr::parse(t) {
        Ok(ListenAddr::Inet(sa)) if sa.port() != 0 => Ok(sa),
        Ok(ListenAddr::Inet(_)) => Err(bad("port 0")),
        Ok(ListenAddr::Name { host, .. }) => Err(bad(&format!("{host:?} is a host name"))),
        Ok(ListenAddr::Unix(_)) => Err(bad("a Unix socket path is not supported")),
        Err(e) => Err(bad(&e.to_string())),
    }
}

fn parse_no(rest: &[&str]) -> Result<Command, CommandError> {
    let negatable = || {
        let mut v: Vec<&str> = Flag::ALL.iter().map(|f| f.as_str()).collect();
        v.extend([
            "acl N",
            "log",
            "web_stats",
            "prometheus",
            "tarpit_persist",
            "tarpit_capture",
            "tarpit_rate",
        ]);
        v.join(", ")
    };
    let Some((&what, args)) = rest.split_first() else {
        return Err(CommandError::Missing {
            command: "no".to_string(),
            expected: format!("one of {}", negatable()),
        });
    };
    let mut w = Words {
        cmd: format!("no {what}"),
        words: args.iter(),
    };
    let cmd = match what {
        "acl" => {
            let t = w.required("an access list number 0-9")?;
            Command::NoAcl(w.acl_num(t)?)
        }
        "log" => Command::NoLog,
        "web_stats" => Command::NoWebStats,
        "prometheus" => Command::NoPrometheus,
        "tarpit_persist" => Command::TarpitPersist(false),
        "tarpit_capture" => Command::NoTarpitCapture,
        "tarpit_rate" => Command::NoTarpitRate,
        other => match Flag::from_word(other) {
            Some(f) => Command::Flag(f, false),
            None => {
                return Err(CommandError::NotNegatable {
                    got: other.to_string(),
                    expected: negatable(),
                });
            }
        },
    };
    w.end()?;
    Ok(cmd)
}

/// Largest `tarpit_rate` rate or burst.
pub const TARPIT_RATE_MAX: u32 = 10_000_000;

/// `tarpit_capture SUBNET [wait SECONDS] [max ENTRIES]`, `SUBNET` already read as `subnet`.
fn parse_tarpit_capture(
    w: &mut Words<'_>,
    subnet: &str,
) -> Result<crate::engine::capture::CaptureConfig, CommandError> {
    use crate::engine::capture::{CaptureConfig, DEFAULT_MAX, DEFAULT_WAIT_SECS, MAX_MAX};
    let usage = "tarpit_capture SUBNET [wait SECONDS] [max ENTRIES]";
    let (net, prefix) =
        CaptureConfig::parse_subnet(subnet).map_err(|why| CommandError::Subnet { why, usage })?;
    let mut c = CaptureConfig {
        net,
        prefix,
        wait_secs: DEFAULT_WAIT_SECS,
        max: DEFAULT_MAX,
    };
    while let Some(k) = w.next() {
        match k {
            "wait" => c.wait_secs = w.req_num("a wait of 1-3600 seconds", 1, 3600)?,
            "max" => c.max = w.req_num(&format!("a table size 1-{MAX_MAX}"), 1, MAX_MAX)?,
            _ => {
                return Err(CommandError::InvalidWithUsage {
                    command: "tarpit_capture",
                    expected: "wait or max",
                    got: k.to_string(),
                    usage,
                });
            }
        }
    }
    Ok(c)
}

/// `tarpit_rate RATE [burst B] [net RATE] [net_burst B]`, `RATE` already read as `first`.
/// A burst defaults to its rate.
fn parse_tarpit_rate(
    w: &mut Words<'_>,
    first: &str,
) -> Result<crate::engine::ratecap::RateConfig, CommandError> {
    let usage = "tarpit_rate RATE [burst B] [net RATE] [net_burst B]";
    let what = format!("replies per second 1-{TARPIT_RATE_MAX} ({usage})");
    let rate = w.num(first, &what, 1, TARPIT_RATE_MAX)?;
    let (mut burst, mut net, mut net_burst) = (None, None, None);
    while let Some(k) = w.next() {
        let slot = match k {
            "burst" => &mut burst,
            "net" => &mut net,
            "net_burst" => &mut net_burst,
            _ => {
                return Err(CommandError::InvalidWithUsage {
                    command: "tarpit_rate",
                    expected: "burst, net or net_burst",
                    got: k.to_string(),
                    usage,
                });
            }
        };
        *slot = Some(w.req_num(&format!("a number 1-{TARPIT_RATE_MAX}"), 1, TARPIT_RATE_MAX)?);
    }
    if net.is_none() && net_burst.is_some() {
        return Err(CommandError::NetBurstWithoutNet { usage });
    }
    let net_rate = net.unwrap_or(0);
    Ok(crate::engine::ratecap::RateConfig {
        rate,
        burst: burst.unwrap_or(rate),
        net_rate,
        net_burst: net_burst.unwrap_or(net_rate),
    })
}

fn parse_acl(w: &mut Words<'_>) -> Result<Command, CommandError> {
    let usage = "acl N permit|deny A.B.C.D [mask] | v6addr[/len] | country CC";
    let n = w.required(&format!("an access list number 0-9 ({usage})"))?;
    let list = w.acl_num(n)?;
    let pd = w.required(&format!("permit or deny ({usage})"))?;
    let permit = match pd {
        "permit" => true,
        "deny" => false,
        _ => return Err(invalid("acl", "permit or deny", pd)),
    };
    let addr = w.required(&format!("an address ({usage})"))?;
    let matcher = if addr == "country" {
        let cc = w.required("a country code after \"country\"")?;
        if cc.is_empty() || !cc.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid("acl", "a country code like SE", cc));
        }
        AclMatch::Country(cc.to_string())
    } else if addr.contains(':') {
        let (a, len) = match addr.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (addr, None),
        };
        let a: Ipv6Addr = a
            .parse()
            .map_err(|_| invalid("acl", "an IPv6 address", a))?;
        let prefix = match len {
            None => 128,
            Some(l) => parse_num(l, 0u8, 128)
                .ok_or_else(|| invalid("acl", "an IPv6 prefix length 0-128", l))?,
        };
        AclMatch::V6 { addr: a, prefix }
    } else {
        let (a, len) = match addr.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (addr, None),
        };
        let a: Ipv4Addr = a
            .parse()
            .map_err(|_| invalid("acl", "an IPv4 address A.B.C.D", a))?;
        let mask = match len {
            Some(l) => {
                let bits = parse_num(l, 0u32, 32)
                    .ok_or_else(|| invalid("acl", "a prefix length 0-32", l))?;
                Ipv4Addr::from(u32::MAX.checked_shl(32 - bits).unwrap_or(0))
            }
            None => match w.next() {
                None => Ipv4Addr::BROADCAST,
                Some(m) => m
                    .parse()
                    .map_err(|_| invalid("acl", "a netmask A.B.C.D", m))?,
            },
        };
        AclMatch::V4 { addr: a, mask }
    };
    Ok(Command::Acl {
        list,
        entry: AclEntry { permit, matcher },
    })
}

fn parse_server(w: &mut Words<'_>) -> Result<Command, CommandError> {
    let keys = "acl, address, port, max, hard, blacklist, weight, prio, proxy, check";
    let max_index = defaults::SERVERS_MAX - 1;
    let n = w.required(&format!("a server number 0-{max_index}"))?;
    let index = w.num(n, &format!("a server number 0-{max_index}"), 0, max_index)?;
    let mut s = ServerCmd {
        index,
        ..ServerCmd::default()
    };
    while let Some(key) = w.next() {
        if key == "check" {
            let rest: Vec<&str> = w.words.by_ref().copied().collect();
            let c = crate::health::parse_check(&rest)
                .map_err(|e| invalid("server", format!("after check: {}", e.expected), &e.got))?;
            s.check = Some(c);
            break;
        }
        let Some(val) = w.next() else {
            return Err(CommandError::KeywordWithoutValue {
                command: "server",
                keyword: key.to_string(),
            });
        };
        match key {
            "acl" => s.acl = Some(w.acl_num(val)?),
            "address" => {
                s.address = Some(
                    HostSpec::parse(val).map_err(|source| CommandError::Address {
                        command: "server",
                        got: None,
                        source,
                    })?,
                )
            }
            "port" => s.port = Some(w.num(val, "a port number 0-65535", 0, u16::MAX)?),
            "max" => s.max = Some(w.num(val, "a connection limit >= 0 (0 = none)", 0, u32::MAX)?),
            "hard" => {
                s.hard = Some(w.num(val, "a connection limit >= 0 (0 = none)", 0, u32::MAX)?)
            }
            "blacklist" => {
                s.blacklist = Some(w.num(val, "a number of seconds >= 0", 0, u64::MAX)?)
            }
            "weight" => s.weight = Some(w.num(val, "a weight >= 0", 0, u32::MAX)?),
            "prio" => s.prio = Some(w.num(val, "a priority >= 0", 0, u32::MAX)?),
            "proxy" => {
                s.proxy = Some(match val {
                    "default" => None,
                    v => Some(
                        SendProxy::from_word(v)
                            .ok_or_else(|| invalid("server", "proxy v1, v2, off or default", v))?,
                    ),
                })
            }
            _ => {
                return Err(CommandError::UnknownKeyword {
                    command: "server",
                    got: key.to_string(),
                    expected: keys,
                });
            }
        }
    }
    Ok(Command::Server(s))
}

fn opt<T: fmt::Display>(f: &mut fmt::Formatter<'_>, word: &str, v: &Option<T>) -> fmt::Result {
    match v {
        Some(v) => write!(f, "{word} {v}"),
        None => write!(f, "{word}"),
    }
}

impl fmt::Display for AclCmdMatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            AclMatch::V4 { addr, mask } if *mask == Ipv4Addr::BROADCAST => write!(f, "{addr}"),
            AclMatch::V4 { addr, mask } => write!(f, "{addr} {mask}"),
            AclMatch::V6 { addr, prefix: 128 } => write!(f, "{addr}"),
            AclMatch::V6 { addr, prefix } => write!(f, "{addr}/{prefix}"),
            AclMatch::Country(cc) => write!(f, "country {cc}"),
        }
    }
}

/// Displays an ACL matcher as the tail of an `acl` command.
pub struct AclCmdMatch<'a>(pub &'a AclMatch);

impl fmt::Display for ServerCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server {}", self.index)?;
        if let Some(v) = self.acl {
            write!(f, " acl {v}")?;
        }
        if let Some(v) = &self.address {
            write!(f, " address {v}")?;
        }
        if let Some(v) = self.port {
            write!(f, " port {v}")?;
        }
        if let Some(v) = self.max {
            write!(f, " max {v}")?;
        }
        if let Some(v) = self.hard {
            write!(f, " hard {v}")?;
        }
        if let Some(v) = self.blacklist {
            write!(f, " blacklist {v}")?;
        }
        if let Some(v) = self.weight {
            write!(f, " weight {v}")?;
        }
        if let Some(v) = self.prio {
            write!(f, " prio {v}")?;
        }
        if let Some(p) = self.proxy {
            write!(f, " proxy {}", p.map_or("default", SendProxy::as_str))?;
        }
        if let Some(c) = &self.check {
            write!(f, " check {c}")?;
        }
        Ok(())
    }
}

/// The canonical line; `parse` accepts it back unchanged.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Command::*;
        match self {
            Flag(flag, true) => write!(f, "{}", flag.as_str()),
            Flag(flag, false) => write!(f, "no {}", flag.as_str()),
            Acl { list, entry } => write!(
                f,
                "acl {list} {} {}",
                if entry.permit { "permit" } else { "deny" },
                AclCmdMatch(&entry.matcher)
            ),
            NoAcl(n) => write!(f, "no acl {n}"),
            Blacklist(v) => opt(f, "blacklist", v),
            ClientAcl(v) => opt(f, "client_acl", v),
            ClientsMax(v) => opt(f, "clients_max", v),
            Close(n) => write!(f, "close {n}"),
            Connection(n) => write!(f, "connection {n}"),
            ConnMax(v) => opt(f, "conn_max", v),
            Control => write!(f, "control"),
            ControlAcl(v) => opt(f, "control_acl", v),
            Debug(v) => opt(f, "debug", v),
            DsrIf(i) => write!(f, "dsr_if {i}"),
            DsrIp(ip) => write!(f, "dsr_ip {ip}"),
            EventBackend(b) => write!(f, "{}", b.as_str()),
            Exit => write!(f, "exit"),
            IdleTimeout(v) => opt(f, "idle_timeout", v),
            Idlers(v) => opt(f, "idlers", v),
            Include(p) => write!(f, "include {}", p.display()),
            Listen(v) => opt(f, "listen", v),
            Log(v) => opt(f, "log", v),
            NoLog => write!(f, "no log"),
            Mode => write!(f, "mode"),
            PendingMax(n) => write!(f, "pending_max {n}"),
            Pid => write!(f, "pid"),
            Recent(v) => opt(f, "recent", v),
            Server(s) => write!(f, "{s}"),
            Servers => write!(f, "servers"),
            Socket(n) => write!(f, "socket {n}"),
            Source(ip) => write!(f, "source {ip}"),
            SslCiphers(v) => opt(f, "ssl_ciphers", v),
            SslClientRenegotiationInterval(n) => {
                write!(f, "ssl_client_renegotiation_interval {n}")
            }
            SslOcspResponse(p) => write!(f, "ssl_ocsp_response {}", p.display()),
            SslOption(o) => write!(f, "ssl_option {}", o.as_str()),
            SslSniPath(p) => write!(f, "ssl_sni_path {}", p.display()),
            Status => write!(f, "status"),
            TarpitAcl(None) => write!(f, "tarpit_acl"),
            TarpitAcl(Some(self::TarpitAcl::Off)) => write!(f, "tarpit_acl -1"),
            TarpitAcl(Some(self::TarpitAcl::List(n))) => write!(f, "tarpit_acl {n}"),
            TarpitPersist(true) => write!(f, "tarpit_persist"),
            TarpitPersist(false) => write!(f, "no tarpit_persist"),
            TarpitCapture(v) => opt(f, "tarpit_capture", v),
            NoTarpitCapture => write!(f, "no tarpit_capture"),
            TarpitRate(v) => opt(f, "tarpit_rate", v),
            NoTarpitRate => write!(f, "no tarpit_rate"),
            Tarpit => write!(f, "tarpit"),
            TcpFastclose(fc) => write!(f, "tcp_fastclose {}", fc.as_str()),
            Timeout(v) => opt(f, "timeout", v),
            Tracking(v) => opt(f, "tracking", v),
            UdpFlowIdle(v) => opt(f, "udp_flow_idle", v),
            WorkerThreads(v) => opt(f, "worker_threads", v),
            Upgrade => write!(f, "upgrade"),
            UpgradeSocket(v) => opt(f, "upgrade_socket", &v.as_ref().map(|p| p.display())),
            DrainTimeout(v) => opt(f, "drain_timeout", v),
            WebStats(v) => opt(f, "web_stats", &v.as_ref().map(|p| p.display())),
            NoWebStats => write!(f, "no web_stats"),
            Prometheus(v) => opt(f, "prometheus", v),
            NoPrometheus => write!(f, "no prometheus"),
            Version => write!(f, "version"),
            TableHash => write!(f, "table_hash"),
            ProxyProtocol(v) => opt(f, "proxy_protocol", &v.map(SendProxy::as_str)),
            AcceptProxy(v) => opt(f, "accept_proxy", v),
            Write(v) => opt(f, "write", &v.as_ref().map(|p| p.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Command {
        match parse(line) {
            Ok(Some(c)) => c,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    fn e(line: &str) -> String {
        match parse(line) {
            Err(e) => e.to_string(),
            other => panic!("{line:?} should fail, gave {other:?}"),
        }
    }

    #[test]
    fn errors_are_typed_and_keep_their_cause() {
        let err = |line: &str| parse(line).unwrap_err();
        assert_eq!(
            err("blacklist soon"),
            CommandError::Invalid {
                command: "blacklist".into(),
                expected: format!("{SECS} >= 0"),
                got: "soon".into(),
            }
        );
        assert_eq!(
            err("frobnicate"),
            CommandError::Unknown {
                word: "frobnicate".into()
            }
        );
        assert!(matches!(err("pid 3"), CommandError::Extra { .. }));
        assert!(matches!(err("dsr_if"), CommandError::Missing { .. }));
        // An address error is kept as the cause; the message is the one-line form.
        let e = err("listen 1.2.3.4:99999");
        let CommandError::Address { source, .. } = &e else {
            panic!("expected an address error, got {e:?}");
        };
        let cause = std::error::Error::source(&e).expect("a cause");
        assert_eq!(cause.to_string(), source.to_string());
        assert_eq!(e.command(), "listen");
        assert_eq!(e.to_string(), format!("listen: {}", e.message()));
        assert!(
            e.message().starts_with("bad address \"1.2.3.4:99999\": "),
            "{e}"
        );
        let e = err("server 0 address");
        assert_eq!(
            e.to_string(),
            "server: keyword \"address\" needs a value (server N [keyword value]...)"
        );
    }

    /// One sample line per command form (canonical spelling).
    pub(crate) const SAMPLES: &[&str] = &[
        "abort_on_error",
        "no abort_on_error",
        "acl 0 permit 10.0.0.1",
        "acl 1 deny 192.168.0.0 255.255.0.0",
        "acl 9 permit 2001:db8::/32",
        "acl 2 deny ::1",
        "acl 3 permit country SE",
        "no acl 4",
        "ascii",
        "no ascii",
        "blacklist",
        "blacklist 60",
        "block",
        "no block",
        "client_acl",
        "client_acl 3",
        "clients_max",
        "clients_max 4096",
        "close 7",
        "connection 12",
        "conn_max",
        "conn_max 1000",
        "control",
        "control_acl",
        "control_acl 2",
        "debug",
        "debug 3",
        "delayed_forward",
        "no delayed_forward",
        "dsr_if eth1",
        "dsr_ip 192.168.100.1",
        "dummy",
        "no dummy",
        "epoll",
        "io_uring",
        "kqueue",
        "poll",
        "select",
        "exit",
        "hash",
        "no hash",
        "http",
        "no http",
        "idle_timeout",
        "idle_timeout 30",
        "idlers",
        "idlers 5",
        "include /etc/pen/extra.cfg",
        "keepalive",
        "no keepalive",
        "listen",
        "listen 0.0.0.0:8080",
        "listen [::1]:8080",
        "listen /tmp/pen.sock",
        "listen lb.example:80",
        "log",
        "log /var/log/pen.log",
        "log 10.0.0.5:10000",
        "no log",
        "mode",
        "peek",
        "no peek",
        "pending_max 50",
        "pid",
        "prio",
        "no prio",
        "recent",
        "recent 60",
        "roundrobin",
        "no roundrobin",
        "server 0",
        "server 1 address 10.0.0.2 port 80",
        "server 2 acl 1 address web2.example port 8080 max 10 hard 20 blacklist 5 weight 3 prio 1",
        "server 3 address 2001:db8::5 port 443",
        "server 4 address /run/app.sock",
        "server 5 blacklist 0",
        "server 6 check http GET /health 200-399 interval 2 timeout 1 rise 2 fall 3",
        "server 7 port 80 check tcp interval 5 timeout 2 rise 1 fall 1 address 10.0.0.7 port 9000",
        "server 8 check off",
        "server 9 port 80 proxy v2",
        "server 10 proxy off check tcp interval 5 timeout 2 rise 1 fall 1",
        "server 11 proxy default",
        "proxy_protocol",
        "proxy_protocol v1",
        "proxy_protocol v2",
        "proxy_protocol off",
        "accept_proxy",
        "accept_proxy v1",
        "accept_proxy v2 timeout 3",
        "accept_proxy any",
        "accept_proxy off",
        "servers",
        "socket 9",
        "source 10.0.0.254",
        "ssl_ciphers",
        "ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256:HIGH",
        "ssl_client_renegotiation_interval 600",
        "ssl_ocsp_response /etc/pen/ocsp.der",
        "ssl_option no_sslv2",
        "ssl_option no_sslv3",
        "ssl_option no_tlsv1",
        "ssl_option no_tlsv1.1",
        "ssl_option no_tlsv1.2",
        "ssl_option cipher_server_preference",
        "ssl_sni_path /etc/pen/sni",
        "status",
        "stubborn",
        "no stubborn",
        "tarpit_acl",
        "tarpit_acl 1",
        "tarpit_acl -1",
        "tarpit",
        "tarpit_persist",
        "no tarpit_persist",
        "tarpit_capture",
        "tarpit_capture 10.0.0.0/24 wait 3 max 4096",
        "tarpit_capture fd00::/64 wait 1 max 16",
        "no tarpit_capture",
        "tarpit_rate",
        "tarpit_rate 100 burst 100",
        "tarpit_rate 50 burst 10 net 5 net_burst 2",
        "no tarpit_rate",
        "tcp_fastclose up",
        "tcp_fastclose down",
        "tcp_fastclose both",
        "tcp_fastclose off",
        "tcp_nodelay",
        "no tcp_nodelay",
        "timeout",
        "timeout 5",
        "tracking",
        "tracking 120",
        "udp_flow_idle",
        "udp_flow_idle 5",
        "worker_threads",
        "worker_threads 4",
        "upgrade",
        "upgrade_socket",
        "upgrade_socket /run/pen.up",
        "drain_timeout",
        "drain_timeout 0",
        "drain_timeout 30",
        "transparent",
        "no transparent",
        "web_stats",
        "web_stats /var/www/pen.html",
        "no web_stats",
        "weight",
        "no weight",
        "write",
        "write /etc/pen/pen.cfg",
        "prometheus",
        "prometheus 127.0.0.1:9100",
        "prometheus [::1]:9100",
        "no prometheus",
        "version",
        "table_hash",
        "control_any_file",
        "no control_any_file",
        "listen 8080",
        "listen ::1:2222",
    ];

    #[test]
    fn every_sample_round_trips_through_display() {
        for line in SAMPLES {
            let c = p(line);
            let shown = c.to_string();
            assert_eq!(&shown, line, "canonical form of {line:?}");
            assert_eq!(parse(&shown), Ok(Some(c)), "round trip of {line:?}");
        }
    }

    /// Index of the variant; the exhaustive match makes a new variant a compile error here.
    fn variant(c: &Command) -> usize {
        use Command::*;
        match c {
            Flag(..) => 0,
            Acl { .. } => 1,
            NoAcl(_) => 2,
            Blacklist(_) => 3,
            ClientAcl(_) => 4,
            ClientsMax(_) => 5,
            Close(_) => 6,
            Connection(_) => 7,
            ConnMax(_) => 8,
            Control => 9,
            ControlAcl(_) => 10,
            Debug(_) => 11,
            DsrIf(_) => 12,
            DsrIp(_) => 13,
            EventBackend(_) => 14,
            Exit => 15,
            IdleTimeout(_) => 16,
            Idlers(_) => 17,
            Include(_) => 18,
            Listen(_) => 19,
            Log(_) => 20,
            NoLog => 21,
            Mode => 22,
            PendingMax(_) => 23,
            Pid => 24,
            Recent(_) => 25,
            Server(_) => 26,
            Servers => 27,
            Socket(_) => 28,
            Source(_) => 29,
            SslCiphers(_) => 30,
            SslClientRenegotiationInterval(_) => 31,
            SslOcspResponse(_) => 32,
            SslOption(_) => 33,
            SslSniPath(_) => 34,
            Status => 35,
            TarpitAcl(_) => 36,
            TcpFastclose(_) => 37,
            Timeout(_) => 38,
            Tracking(_) => 39,
            WebStats(_) => 40,
            NoWebStats => 41,
            Write(_) => 42,
            Prometheus(_) => 43,
            NoPrometheus => 44,
            UdpFlowIdle(_) => 45,
            WorkerThreads(_) => 46,
            Version => 47,
            TarpitPersist(_) => 48,
            TarpitCapture(_) => 49,
            NoTarpitCapture => 50,
            TarpitRate(_) => 51,
            NoTarpitRate => 52,
            Tarpit => 53,
            TableHash => 54,
            ProxyProtocol(_) => 55,
            AcceptProxy(_) => 56,
            Upgrade => 57,
            UpgradeSocket(_) => 58,
            DrainTimeout(_) => 59,
        }
    }

    #[test]
    fn samples_cover_every_variant() {
        let mut seen = [false; 60];
        for line in SAMPLES {
            seen[variant(&p(line))] = true;
        }
        let missing: Vec<usize> = (0..seen.len()).filter(|i| !seen[*i]).collect();
        assert!(missing.is_empty(), "variants without a sample: {missing:?}");
    }

    #[test]
    fn every_flag_has_a_sample_both_ways() {
        for f in Flag::ALL {
            assert!(SAMPLES.contains(&f.as_str()), "{f:?}");
            assert!(
                SAMPLES.contains(&format!("no {}", f.as_str()).as_str()),
                "{f:?}"
            );
        }
    }

    #[test]
    fn blank_lines_and_comments_are_nothing() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("   \t \r\n"), Ok(None));
        assert_eq!(parse("# a comment"), Ok(None));
        assert_eq!(parse("   # indented comment"), Ok(None));
    }

    #[test]
    fn hash_after_a_command_starts_a_comment() {
        assert_eq!(p("timeout 5 # five seconds"), Command::Timeout(Some(5)));
        assert_eq!(p("hash#x"), Command::Flag(Flag::Hash, true));
    }

    #[test]
    fn crlf_and_tabs_are_white_space() {
        assert_eq!(p("blacklist\t10\r\n"), Command::Blacklist(Some(10)));
    }

    #[test]
    fn server_keywords_in_any_order_and_subset() {
        let a = p("server 1 port 80 address 10.0.0.2 weight 2");
        let b = p("server 1 weight 2 address 10.0.0.2 port 80");
        assert_eq!(a, b);
        let Command::Server(s) = a else { panic!() };
        assert_eq!(s.index, 1);
        assert_eq!(s.port, Some(80));
        assert_eq!(s.weight, Some(2));
        assert_eq!(s.max, None);
    }

    #[test]
    fn proxy_protocol_commands_name_what_they_accept() {
        let Command::Server(s) = p("server 2 proxy v1 port 80") else {
            panic!()
        };
        assert_eq!((s.proxy, s.port), (Some(Some(SendProxy::V1)), Some(80)));
        assert_eq!(
            e("server 2 proxy v3"),
            "server: expected proxy v1, v2, off or default, got \"v3\""
        );
        assert_eq!(
            e("proxy_protocol yes"),
            "proxy_protocol: expected v1, v2 or off, got \"yes\""
        );
        assert_eq!(
            e("accept_proxy v3"),
            "accept_proxy: expected v1, v2, any or off, got \"v3\""
        );
        assert!(e("accept_proxy v1 timeout 0").contains(">= 1"));
        assert!(e("accept_proxy v1 timeout").contains("got nothing"));
        assert!(e("accept_proxy v1 5").contains("timeout N after the mode"));
        assert!(e("accept_proxy v1 timeout 5 x").contains("extra argument \"x\""));
    }

    #[test]
    fn server_repeated_keyword_keeps_last_value() {
        let Command::Server(s) = p("server 0 port 80 port 81") else {
            panic!()
        };
        assert_eq!(s.port, Some(81));
    }

    #[test]
    fn server_host_name_stays_unresolved() {
        let Command::Server(s) = p("server 0 address backend.example") else {
            panic!()
        };
        assert_eq!(s.address, Some(HostSpec::Name("backend.example".into())));
    }

    #[test]
    fn server_errors_name_the_problem() {
        assert_eq!(
            e("server 0 port"),
            "server: keyword \"port\" needs a value (server N [keyword value]...)"
        );
        assert!(e("server 0 colour red").contains("unknown keyword \"colour\""));
        assert!(e("server x").contains("expected a server number"));
        assert!(e("server 99999999").contains("expected a server number 0-65535"));
        assert!(e("server 0 port 70000").contains("port number 0-65535"));
        assert!(e("server 0 address 10.0.0.300").contains("not a valid IPv4"));
        assert!(e("server 0 acl 10").contains("access list number 0-9"));
    }

    #[test]
    fn udp_flow_idle_rejects_zero_and_garbage() {
        assert_eq!(p("udp_flow_idle 5"), Command::UdpFlowIdle(Some(5)));
        assert_eq!(
            e("udp_flow_idle 0"),
            "udp_flow_idle: expected a number of seconds >= 1, got \"0\""
        );
        assert!(e("udp_flow_idle x").contains("got \"x\""));
    }

    #[test]
    fn worker_threads_accepts_1_to_1024() {
        assert_eq!(p("worker_threads"), Command::WorkerThreads(None));
        assert_eq!(p("worker_threads 1"), Command::WorkerThreads(Some(1)));
        assert_eq!(p("worker_threads 1024"), Command::WorkerThreads(Some(1024)));
        for bad in ["0", "1025", "-2", "x", "4.0"] {
            assert_eq!(
                e(&format!("worker_threads {bad}")),
                format!(
                    "worker_threads: expected a number of threads from 1 to 1024, got \"{bad}\""
                )
            );
        }
        assert!(e("worker_threads 2 3").contains("unexpected extra argument \"3\""));
    }

    #[test]
    fn timeout_rejects_garbage_and_zero() {
        assert_eq!(
            e("timeout abc"),
            "timeout: expected a number of seconds >= 1, got \"abc\""
        );
        assert_eq!(
            e("timeout 0"),
            "timeout: expected a number of seconds >= 1, got \"0\""
        );
        assert!(e("timeout -3").contains("got \"-3\""));
    }

    #[test]
    fn unknown_command_is_named() {
        assert_eq!(e("frobnicate"), "unknown command \"frobnicate\"");
        assert_eq!(e("TIMEOUT 3"), "unknown command \"TIMEOUT\"");
    }

    #[test]
    fn extra_arguments_are_rejected() {
        assert_eq!(e("hash now"), "hash: unexpected extra argument \"now\"");
        assert!(e("timeout 3 4").contains("unexpected extra argument \"4\""));
    }

    #[test]
    fn acl_forms() {
        assert_eq!(
            p("acl 1 permit 192.168.2.11"),
            Command::Acl {
                list: 1,
                entry: AclEntry {
                    permit: true,
                    matcher: AclMatch::V4 {
                        addr: "192.168.2.11".parse().unwrap(),
                        mask: Ipv4Addr::BROADCAST
                    }
                }
            }
        );
        let Command::Acl { entry, .. } = p("acl 0 deny 10.0.0.0/8") else {
            panic!()
        };
        assert_eq!(
            entry.matcher,
            AclMatch::V4 {
                addr: "10.0.0.0".parse().unwrap(),
                mask: "255.0.0.0".parse().unwrap()
            }
        );
        let Command::Acl { entry, .. } = p("acl 0 deny 10.0.0.0/0") else {
            panic!()
        };
        assert_eq!(
            entry.matcher,
            AclMatch::V4 {
                addr: "10.0.0.0".parse().unwrap(),
                mask: Ipv4Addr::UNSPECIFIED
            }
        );
        let Command::Acl { entry, .. } = p("acl 5 permit fe80::1") else {
            panic!()
        };
        assert_eq!(
            entry.matcher,
            AclMatch::V6 {
                addr: "fe80::1".parse().unwrap(),
                prefix: 128
            }
        );
    }

    #[test]
    fn acl_number_ten_is_rejected_unlike_c_pen() {
        assert_eq!(
            e("acl 10 permit 1.2.3.4"),
            "acl: expected an access list number 0-9, got \"10\""
        );
        assert!(e("no acl 10").contains("0-9"));
        assert!(e("client_acl 10").contains("0-9"));
        assert!(e("tarpit_acl 12").contains("-1 (off)"));
    }

    #[test]
    fn acl_errors() {
        assert!(e("acl 1 permit").contains("expected an address"));
        assert!(e("acl 1 allow 1.2.3.4").contains("expected permit or deny, got \"allow\""));
        assert!(e("acl 1 permit 1.2.3.4 255.0.0").contains("netmask"));
        assert!(e("acl 1 permit ::1/129").contains("0-128"));
        assert!(e("acl 1 permit country").contains("country code"));
        assert!(e("acl 1 permit 1.2.3").contains("IPv4"));
    }

    #[test]
    fn no_forms_errors() {
        assert!(e("no").starts_with("no: expected one of abort_on_error"));
        assert!(e("no timeout").contains("cannot negate \"timeout\""));
        assert!(e("no hash now").contains("unexpected extra argument"));
    }

    #[test]
    fn other_argument_errors() {
        assert!(e("tcp_fastclose sideways").contains("up, down, both or off"));
        assert!(e("tcp_fastclose").contains("up, down, both or off"));
        assert!(e("ssl_option no_tlsv9").contains("no_sslv2"));
        assert!(e("source example.com").contains("IP address"));
        assert!(e("dsr_ip x").contains("IP address"));
        assert!(e("pending_max 0").contains(">= 1"));
        assert!(e("listen 1.2.3.4:htttp").contains("listen: bad address"));
        assert!(e("close").contains("connection number"));
        assert!(e("include").contains("file name"));
        assert!(e("conn_max 0").contains("1-"));
    }

    #[test]
    fn event_backends_are_commands() {
        assert_eq!(p("poll"), Command::EventBackend(EventBackend::Poll));
        assert_eq!(p("epoll"), Command::EventBackend(EventBackend::Epoll));
        assert_eq!(p("io_uring"), Command::EventBackend(EventBackend::IoUring));
        assert_eq!(
            Command::EventBackend(EventBackend::IoUring).to_string(),
            "io_uring"
        );
    }

    #[test]
    fn tarpit_options_fill_their_defaults_and_name_bad_input() {
        use crate::engine::capture::CaptureConfig;
        use crate::engine::ratecap::RateConfig;
        assert_eq!(
            p("tarpit_capture 10.0.0.77/24"),
            Command::TarpitCapture(Some(CaptureConfig {
                net: "10.0.0.0".parse().unwrap(),
                prefix: 24,
                wait_secs: 3,
                max: 4096,
            }))
        );
        assert_eq!(
            p("tarpit_capture 10.0.0.0/24").to_string(),
            "tarpit_capture 10.0.0.0/24 wait 3 max 4096"
        );
        assert_eq!(
            p("tarpit_rate 20 net 2"),
            Command::TarpitRate(Some(RateConfig {
                rate: 20,
                burst: 20,
                net_rate: 2,
                net_burst: 2,
            }))
        );
        assert_eq!(p("no tarpit_persist"), Command::TarpitPersist(false));
        assert!(e("tarpit_capture 10.0.0.0").contains("ADDR/LEN"));
        assert!(e("tarpit_capture 10.0.0.0/24 wait 0").contains("1-3600"));
        assert!(e("tarpit_capture 10.0.0.0/24 size 5").contains("wait or max"));
        assert!(e("tarpit_rate 0").contains("1-10000000"));
        assert!(e("tarpit_rate 10 burst").contains("got nothing"));
        assert!(e("tarpit_rate 10 net_burst 3").contains("net_burst needs net"));
        assert!(e("tarpit_persist 1").contains("extra argument"));
    }
}
