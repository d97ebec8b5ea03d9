//! C-Pen-compatible command line (getopt string of C Pen 0.34). Pure.
//!
//! `pen [options] [host:]port|/path h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] [h2...]`
//!
//! getopt behaviour as glibc's: clustered flags (`-df`, `-dfr`), option arguments attached or
//! separate (`-x500`, `-x 500`, `-dfx500`), `--` ends options, and GNU permutation (options may
//! follow the listen address and backends). `-o`/`-O` commands run through
//! [`crate::ctl::command::parse`] and [`crate::ctl::apply::apply`] as soon as they are parsed,
//! in command-line order, as C Pen does; their errors are fatal.
//!
//! Nothing is resolved here: host names stay [`HostSpec::Name`] / [`ListenAddr::Name`] and
//! ports must be numbers (C Pen also accepts `/etc/services` names such as `http`).
//!
//! Start-up order for the daemon (C Pen's): options ([`parse`]) → `-F` file
//! ([`crate::ctl::apply::apply_file`] with `fs::read_to_string`) → [`finish_startup`] (listen
//! address present, then [`overlay_servers`] with [`Cli::servers`]) → run
//! [`Cli::runtime_commands`] and the file's runtime commands once the control plane is up.

use std::path::PathBuf;

use crate::config::{Config, HostSpec, ListenAddr, ServerConfig, SslProtocol, defaults};
use crate::ctl::apply::{Applied, apply};
use crate::ctl::command::{self, Command};

/// C Pen's getopt string (with SSL).
pub const GETOPT: &str = "B:C:F:O:S:T:b:c:e:i:j:l:m:o:p:q:t:u:w:x:DHNPQWXUadfhnrsE:K:G:A:ZRL:";

/// `pen --version`, `pen -V` and the `version` control command: the binary shares C Pen's
/// name, so it says which program it is.
pub const VERSION: &str = concat!(
    "pen-rs ",
    env!("CARGO_PKG_VERSION"),
    " (a Rust rewrite of C Pen 0.34)"
);

/// Usage text, C Pen-like, listing every option and what pen-rs adds.
pub const USAGE: &str = "\
usage:
  pen [-C addr:port] [-X] [-b sec] [-c N] [-e host[:port]] \\
      [-t sec] [-x N] [-w file] [-UHWadfhrs] \\
      [-o option] [-O option] [-F file] \\
      [-E certfile] [-K keyfile] [-G cacertfile] [-A cacertdir] \\
      [-Z] [-R] [-L protocol] \\
      [host:]port|/path h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] [h2[:p2[:maxc2[:hard2[:weight2[:prio2]]]]]] ...
  pen --help | --version | -V

  -B host:port abuse server for naughty clients
  -C port   control socket: port (127.0.0.1 only), addr:port (0.0.0.0:port = every
            address), [v6]:port or /path (Unix socket)
  -T sec    tracking time in seconds (0 = forever) [0]
  -F file   name of configuration file (read after the options and on HUP)
  -H        add X-Forwarded-For header in http requests
  -U        use udp protocol support
  -N        (hash without save server) not implemented: accepted and ignored
  -O option use option in penctl format
  -P        use poll(): plain TCP on the tokio path (not io_uring)
  -Q        obsolete (kqueue), ignored
  -D        obsolete (delayed forward), ignored
  -S N      obsolete (server table grows dynamically), ignored
  -n        obsolete (nonblocking), ignored
  -V        print the pen-rs version and exit (also --version)
  -W        use weight for server selection
  -X        enable 'exit' command for control port
  -a        debugging dumps in ascii format
  -b sec    blacklist time in seconds [30]
  -c N      max number of clients [2048]
  -d        debugging on (repeat -d for more)
  -e host:port emergency server of last resort
  -f        stay in foreground
  -h        use hash for initial server selection (--help prints this text)
  -i name   Windows service (Windows only)
  -j dir    run in chroot
  -l file   logging on (file, or host:port for penlogd)
  -m N      accept up to N connections per wakeup [100]
  -p file   write pid to file
  -q N      listen backlog, at least 50 [500]
  -r        bypass client tracking in server selection
  -s        stubborn selection, i.e. don't fail over
  -t sec    connect timeout in seconds, at least 1 [3]
  -u user   run as alternative user
  -w file   save statistics in HTML format in a file
  -x N      max number of simultaneous connections [500]
  -o option use option in penctl format
  -E certfile   use the given certificate in PEM format
  -K keyfile    use the given key in PEM format (may be contained in cert)
  -G cacertfile file containing the CA's certificate
  -A cacertdir  directory containing CA certificates in hashed format
  -Z        accepted, does nothing (OpenSSL compatibility mode)
  -R        require valid peer certificate
  -L protocol   ssl23 (default) or tls1: both offer TLS 1.2 and 1.3 only

penctl commands pen-rs adds (also for -o/-O and -F files):
  prometheus [addr:]port   serve Prometheus metrics at /metrics (no prometheus: stop)
  worker_threads N         runtime threads, 1 = one event loop like C Pen [1]
  io_uring                 plain TCP on the io_uring loop (the default where the kernel
                           allows it); epoll, poll, select, kqueue: on the tokio path
  udp_flow_idle N          seconds a UDP flow lives without traffic [60]
  control_any_file         let TCP control clients name files (write FILE, include FILE,
                           web_stats FILE, log FILE); only with -O/-o or in the -F file
  version                  reply the pen-rs version
  tarpit_persist           DSR tarpit: hold connections with a zero window
  tarpit_capture NET [wait S] [max N]  tarpit addresses of NET nobody answers ARP for [3 4096]
  tarpit_rate R [burst B] [net R] [net_burst B]  cap tarpit replies/s (global, per /24 or /64)
  tarpit                   tarpit settings, counters and captured addresses
  table_hash               digests of the server list and the DSR Maglev table (compare pens)
  server N check tcp | http METHOD PATH LO-HI [body TEXT] | tls | dns NAME
           [interval S] [timeout S] [rise N] [fall N] [address A] [port P]
                           active health check of server N (server N check off: none)
  proxy_protocol v1|v2|off send a PROXY protocol header first to every backend [off]
  server N proxy v1|v2|off|default  this server's PROXY header (default: proxy_protocol)
  accept_proxy v1|v2|any|off [timeout S]  TCP clients must start with a PROXY protocol
                           header (from HAProxy, a cloud LB): the real client is tracked,
                           hashed, checked by ACLs and sent in X-Forwarded-For [off, 5 s]
  upgrade                  with the running pen's command line (-O upgrade): take its
                           listening sockets over; it stops accepting, drains, exits
  upgrade_socket PATH      where the running pen hands its sockets over [-p file + .upgrade]
  drain_timeout N          seconds an upgraded-away pen waits for its connections [30]

environment in DSR mode (-O 'dsr_if IF'):
  PEN_DSR_TAP=FILE         write every frame in and out of the DSR engine to pcap FILE
  PEN_DSR_XDP=0            no XDP fast path    PEN_DSR_RECVMMSG=1  recvmmsg, not the ring

example:
  pen 8080 web1:80 web2:80 [::1]:8080
";

/// The result of parsing pen's argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// Everything from the options and `-o`/`-O` commands (including servers that
    /// `-O "server N ..."` defined), plus the listen address, `-e` and `-B`.
    pub config: Config,
    /// The positional backends, to be laid over slots 0..n-1 with [`overlay_servers`] AFTER
    /// the `-F` file was read (C Pen's start-up order).
    pub servers: Vec<ServerConfig>,
    /// Things the user should be told (obsolete options, bumped values, ignored arguments).
    pub notices: Vec<String>,
    /// `-o`/`-O` commands that act on running state (`include FILE`, `write`, `server N
    /// blacklist T`, queries): their configuration part is already applied; the daemon runs
    /// them, in order, once it is up. C Pen runs them immediately.
    pub runtime_commands: Vec<Command>,
}

/// What pen's arguments ask for: run with a configuration, or print the usage text or the
/// version and exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Run(Box<Cli>),
    /// `--help` (`-h` stays C Pen's hash option).
    Help,
    /// `--version` or `-V` (C Pen has no `-V`).
    Version,
}

/// A bad command line. Displays one line naming the bad token and what would be accepted;
/// a bad address keeps its parse error as the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// The listen address as given, and why it did not parse.
    #[error("pen: bad listen address {given:?}: {source}")]
    ListenAddr {
        given: String,
        #[source]
        source: crate::config::AddrError,
    },
    /// A backend, `-e` or `-B` server: `what` says which and how it was given
    /// (`backend "x"`, `emergency server "x" for -e`).
    #[error("pen: bad {what}: {source}")]
    Backend {
        what: String,
        #[source]
        source: BackendError,
    },
    /// Any other bad option or value; with `usage` the binary prints [`USAGE`] after it.
    #[error("{message}")]
    Invalid { message: String, usage: bool },
}

impl CliError {
    /// The binary should print [`USAGE`] after the message.
    pub fn show_usage(&self) -> bool {
        matches!(self, CliError::Invalid { usage: true, .. })
    }
}

fn fail(message: impl Into<String>) -> CliError {
    CliError::Invalid {
        message: message.into(),
        usage: false,
    }
}

fn fail_usage(message: impl Into<String>) -> CliError {
    CliError::Invalid {
        message: message.into(),
        usage: true,
    }
}

/// `Some(true)` if option `c` takes an argument, `Some(false)` if it is a flag, `None` if it
/// is not one of C Pen's options.
fn takes_arg(c: char) -> Option<bool> {
    if c == ':' {
        return None;
    }
    let i = GETOPT.find(c)?;
    Some(
        GETOPT
            .get(i + c.len_utf8()..)
            .is_some_and(|r| r.starts_with(':')),
    )
}

fn num<T: std::str::FromStr + PartialOrd + Copy>(
    opt: char,
    arg: &str,
    what: &str,
    min: T,
    max: T,
) -> Result<T, CliError> {
    command::parse_num(arg, min, max).ok_or_else(|| {
        fail(format!(
            "pen: bad value {arg:?} for -{opt}: expected {what}"
        ))
    })
}

/// A signed number, for the options C Pen bumps instead of rejecting.
fn signed(opt: char, arg: &str, what: &str) -> Result<i64, CliError> {
    let digits = arg.strip_prefix('-').unwrap_or(arg);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail(format!(
            "pen: bad value {arg:?} for -{opt}: expected {what}"
        )));
    }
    // Out-of-range values saturate; they are clamped by the caller anyway.
    Ok(arg.parse::<i64>().unwrap_or(if arg.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    }))
}

struct State {
    cfg: Config,
    notices: Vec<String>,
    runtime: Vec<Command>,
    emergency: Option<String>,
    abuse: Option<String>,
}

impl State {
    fn option(&mut self, c: char, arg: Option<String>) -> Result<(), CliError> {
        let a = arg.unwrap_or_default();
        let cfg = &mut self.cfg;
        match c {
            'B' => self.abuse = Some(a),
            'C' => {
                ListenAddr::parse(&a).map_err(|e| {
                    fail(format!("pen: bad control address {a:?} for -C: {e}"))
                })?;
                cfg.control = Some(a);
            }
            'D' => self.notices.push(
                "-D is obsolete: Pen 0.26.0 removed the delayed forward feature; ignored".into(),
            ),
            'F' => cfg.config_file = Some(PathBuf::from(a)),
            'H' => cfg.http = true,
            'N' => self.notices.push(
                "-N (hash without saving the server) is not implemented (C Pen exits with its usage text); ignored"
                    .into(),
            ),
            'O' | 'o' => self.command(c, &a)?,
            'P' => {
                cfg.event_backend = Some("poll".into());
                self.notices
                    .push("-P: plain TCP runs on the tokio path (tokio uses epoll), not on io_uring".into());
            }
            'Q' => self.notices.push(
                "-Q is obsolete: the best event backend is already the default; ignored".into(),
            ),
            'S' => self
                .notices
                .push("-S is obsolete: the server table grows dynamically; ignored".into()),
            'T' => cfg.tracking_secs = num(c, &a, "a number of seconds >= 0 (0 = forever)", 0, u64::MAX)?,
            'U' => cfg.udp = true,
            'W' => cfg.mode.weight = true,
            'X' => cfg.exit_enabled = true,
            'a' => cfg.ascii = true,
            'b' => cfg.blacklist_secs = num(c, &a, "a number of seconds >= 0", 0, u64::MAX)?,
            'c' => {
                cfg.clients_max = num(
                    c,
                    &a,
                    &format!("a number of clients 1-{}", defaults::CLIENTS_MAX_LIMIT),
                    1,
                    defaults::CLIENTS_MAX_LIMIT,
                )?
            }
            'd' => cfg.debug = cfg.debug.saturating_add(1),
            'e' => self.emergency = Some(a),
            'f' => cfg.foreground = true,
            'h' => cfg.mode.hash = true,
            'i' => {
                return Err(fail(format!(
                    "pen: -i {a:?}: installing a Windows service is Windows-only"
                )));
            }
            'j' => cfg.chroot = Some(PathBuf::from(a)),
            'l' => cfg.log = Some(a),
            'm' => {
                let n = signed(c, &a, "a number >= 1")?;
                if n < 1 {
                    self.notices.push(format!("-m {a}: multi_accept bumped to 1"));
                }
                cfg.multi_accept = usize::try_from(n.max(1)).unwrap_or(usize::MAX);
            }
            'n' => self.notices.push(
                "-n is obsolete: Pen 0.26.0 and up uses only nonblocking sockets; ignored".into(),
            ),
            'p' => cfg.pid_file = Some(PathBuf::from(a)),
            'q' => {
                let n = signed(c, &a, "a number >= 50")?;
                let min = i64::from(defaults::BACKLOG_MIN);
                if n < min {
                    self.notices.push(format!("-q {a}: listen backlog bumped to {min}"));
                }
                cfg.backlog = u32::try_from(n.max(min)).unwrap_or(u32::MAX);
            }
            'r' => cfg.mode.roundrobin = true,
            's' => cfg.mode.stubborn = true,
            't' => cfg.connect_timeout_secs = num(c, &a, "a number of seconds >= 1", 1, u64::MAX)?,
            'u' => cfg.user = Some(a),
            'w' => cfg.web_stats = Some(PathBuf::from(a)),
            'x' => {
                cfg.conn_max = num(
                    c,
                    &a,
                    &format!("a number of connections 1-{}", defaults::CONN_MAX_LIMIT),
                    1,
                    defaults::CONN_MAX_LIMIT,
                )?
            }
            'E' => cfg.tls.cert = Some(PathBuf::from(a)),
            'K' => cfg.tls.key = Some(PathBuf::from(a)),
            'G' => cfg.tls.ca_file = Some(PathBuf::from(a)),
            'A' => cfg.tls.ca_dir = Some(PathBuf::from(a)),
            'Z' => cfg.tls.compat = true,
            'R' => cfg.tls.require_client_cert = true,
            'L' => {
                cfg.tls.protocol = match a.as_str() {
                    "ssl23" => SslProtocol::Ssl23,
                    "ssl2" => SslProtocol::Ssl2,
                    "ssl3" => SslProtocol::Ssl3,
                    "tls1" => SslProtocol::Tls1,
                    _ => {
                        return Err(fail(format!(
                            "pen: bad protocol {a:?} for -L: expected ssl23, ssl2, ssl3 or tls1"
                        )));
                    }
                }
            }
            _ => return Err(fail_usage(format!("pen: unknown option -{c}"))),
        }
        Ok(())
    }

    fn command(&mut self, opt: char, line: &str) -> Result<(), CliError> {
        let cmd = match command::parse(line) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return Ok(()),
            Err(e) => return Err(fail(format!("pen: -{opt} {line:?}: {e}"))),
        };
        match apply(&mut self.cfg, &cmd) {
            Ok(Applied::Config) => {}
            Ok(Applied::Runtime) => self.runtime.push(cmd),
            Ok(Applied::Ignored(n)) => self.notices.push(format!("-{opt} {line:?}: {n}")),
            Err(e) => return Err(fail(format!("pen: -{opt} {line:?}: {e}"))),
        }
        Ok(())
    }
}

/// Parses pen's arguments like [`invocation`], for callers that only run pen: `--help`,
/// `--version` and `-V` are errors here.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, CliError> {
    match invocation(args)? {
        Invocation::Run(cli) => Ok(*cli),
        Invocation::Help | Invocation::Version => Err(fail(
            "pen: --help, --version and -V print information; they give no configuration",
        )),
    }
}

/// Parses pen's arguments (WITHOUT argv\[0\]). Pure: names are not resolved, files not read.
/// `--help`, `--version` or `-V` (where getopt would see them: not as an option's argument,
/// not after `--`) end the parse with [`Invocation::Help`] / [`Invocation::Version`]; an error
/// in an earlier option comes first, as with getopt.
///
/// A listen address is required unless `-F` is given (the file may contain `listen`; the
/// daemon must then check that one exists after reading it) or an `-O "listen ..."` set one
/// (then, as C Pen, the first positional argument is ignored). Port 0 is accepted for the
/// listen address only in DSR mode (`-O "dsr_if IF"`, or with `-F`, where the daemon checks).
pub fn invocation<I: IntoIterator<Item = String>>(args: I) -> Result<Invocation, CliError> {
    let args: Vec<String> = args.into_iter().collect();
    let mut st = State {
        cfg: Config::default(),
        notices: Vec::new(),
        runtime: Vec::new(),
        emergency: None,
        abuse: None,
    };
    let mut positional: Vec<String> = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--" {
            positional.extend(it.by_ref());
            break;
        }
        match a.as_str() {
            "--help" => return Ok(Invocation::Help),
            "--version" => return Ok(Invocation::Version),
            _ if a.starts_with("--") => {
                return Err(fail_usage(format!(
                    "pen: unknown option {a:?}: pen has single-letter options only (and --help, --version)"
                )));
            }
            _ => {}
        }
        let Some(cluster) = a.strip_prefix('-').filter(|c| !c.is_empty()) else {
            positional.push(a);
            continue;
        };
        for (i, c) in cluster.char_indices() {
            if c == 'V' {
                return Ok(Invocation::Version);
            }
            match takes_arg(c) {
                // C Pen has no -v either; say where the version is.
                None if c == 'v' => {
                    return Err(fail_usage(
                        "pen: unknown option -v (the version: -V or --version)",
                    ));
                }
                None => return Err(fail_usage(format!("pen: unknown option -{c}"))),
                Some(false) => st.option(c, None)?,
                Some(true) => {
                    let rest = cluster.get(i + c.len_utf8()..).unwrap_or("");
                    let arg = if !rest.is_empty() {
                        rest.to_string()
                    } else {
                        it.next().ok_or_else(|| {
                            fail_usage(format!("pen: option -{c} requires an argument"))
                        })?
                    };
                    st.option(c, Some(arg))?;
                    break;
                }
            }
        }
    }

    let mut pos = positional.into_iter();
    let first = pos.next();
    match (&st.cfg.listen, first) {
        (Some(l), Some(p)) => st.notices.push(format!(
            "listen address {p:?} ignored: the listen command already set {l} (as C Pen)"
        )),
        (None, Some(p)) => {
            let l = ListenAddr::parse(&p).map_err(|source| CliError::ListenAddr {
                given: p.clone(),
                source,
            })?;
            st.cfg.listen = Some(l);
            st.cfg.listen_given = Some(p);
        }
        (Some(_), None) => {}
        (None, None) => {
            if st.cfg.config_file.is_none() {
                return Err(fail_usage(
                    "pen: no listen address given; usage: pen [options] [host:]port|/path h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] [h2...]",
                ));
            }
        }
    }
    let default_port = st
        .cfg
        .listen
        .as_ref()
        .and_then(ListenAddr::port)
        .unwrap_or(0);
    let servers = pos
        .map(|s| {
            parse_backend(&s, default_port).map_err(|source| CliError::Backend {
                what: format!("backend {s:?}"),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(e) = st.emergency.take() {
        st.cfg.emergency = Some(special_server(&e, default_port, "emergency server", "-e")?);
    }
    if let Some(b) = st.abuse.take() {
        st.cfg.abuse = Some(special_server(&b, default_port, "abuse server", "-B")?);
    }
    Ok(Invocation::Run(Box::new(Cli {
        config: st.cfg,
        servers,
        notices: st.notices,
        runtime_commands: st.runtime,
    })))
}

const BACKEND_FORM: &str = "host[:port[:maxc[:hard[:weight[:prio]]]]]";

/// The `-e` or `-B` server (`what` and `flag` name it in the error).
fn special_server(
    spec: &str,
    default_port: u16,
    what: &str,
    flag: &str,
) -> Result<ServerConfig, CliError> {
    parse_backend(spec, default_port).map_err(|source| CliError::Backend {
        what: format!("{what} {spec:?} for {flag}"),
        source,
    })
}

/// Why a backend spec did not parse; displays one line saying what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("expected {BACKEND_FORM}")]
    Empty,
    #[error("missing ']' after the IPv6 address; expected [v6addr]:port")]
    MissingBracket,
    #[error("{0:?} is not a valid IPv6 address")]
    BadIpv6(String),
    #[error("expected ':' after ']', got {0:?}")]
    AfterBracket(String),
    #[error(transparent)]
    Host(#[from] crate::config::AddrError),
    #[error("too many ':' fields; expected {BACKEND_FORM}")]
    TooManyFields,
    #[error("{name} must be a number >= 0, got {value:?}")]
    Field { name: &'static str, value: String },
    #[error(
        "port must be a number 1-65535 or a well-known service name (http, smtp, ...), got {0:?}"
    )]
    Port(String),
}

/// Parses a backend `host[:port[:maxc[:hard[:weight[:prio]]]]]`, `[v6addr]:port:...`, a bare
/// IPv6 address (no port: use brackets to give one), or a Unix socket path (contains `/`;
/// fields after the first `:` as for hosts). An empty or missing port means `default_port`
/// (the listen port). Missing fields are 0, as C Pen.
pub fn parse_backend(spec: &str, default_port: u16) -> Result<ServerConfig, BackendError> {
    if spec.is_empty() {
        return Err(BackendError::Empty);
    }
    let (host, rest): (HostSpec, Option<&str>) = if let Some(inner) = spec.strip_prefix('[') {
        let (addr, after) = inner.split_once(']').ok_or(BackendError::MissingBracket)?;
        let ip: std::net::Ipv6Addr = addr
            .parse()
            .map_err(|_| BackendError::BadIpv6(addr.to_string()))?;
        let rest = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| BackendError::AfterBracket(after.to_string()))?,
            ),
        };
        (HostSpec::Ip(ip.into()), rest)
    } else if let Ok(ip) = spec.parse::<std::net::Ipv6Addr>() {
        (HostSpec::Ip(ip.into()), None)
    } else {
        let (h, rest) = match spec.split_once(':') {
            Some((h, r)) => (h, Some(r)),
            None => (spec, None),
        };
        (HostSpec::parse(h)?, rest)
    };
    let fields: Vec<&str> = rest.map(|r| r.split(':').collect()).unwrap_or_default();
    if fields.len() > 5 {
        return Err(BackendError::TooManyFields);
    }
    let field = |i: usize, name: &'static str| -> Result<u32, BackendError> {
        match fields.get(i) {
            None => Ok(0),
            Some(f) => command::parse_num(f, 0, u32::MAX).ok_or_else(|| BackendError::Field {
                name,
                value: f.to_string(),
            }),
        }
    };
    let port = match fields.first() {
        None | Some(&"") => default_port,
        Some(p) => match crate::config::parse_port(p) {
            Ok(0) | Err(_) => return Err(BackendError::Port(p.to_string())),
            Ok(port) => port,
        },
    };
    Ok(ServerConfig {
        host: Some(host),
        port,
        maxc: field(1, "maxc")?,
        hard: field(2, "hard")?,
        weight: field(3, "weight")?,
        prio: field(4, "prio")?,
        acl: None,
    })
}

/// The backend spec that [`parse_backend`] reads back (IPv6 in brackets; an empty port field
/// for port 0, which then means the listen port).
pub fn format_backend(s: &ServerConfig) -> String {
    let host = match &s.host {
        Some(HostSpec::Ip(std::net::IpAddr::V6(v6))) => format!("[{v6}]"),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    let port = if s.port == 0 {
        String::new()
    } else {
        s.port.to_string()
    };
    format!(
        "{host}:{port}:{}:{}:{}:{}",
        s.maxc, s.hard, s.weight, s.prio
    )
}

/// The last start-up step that needs no IO, after the `-F` file was applied: a listen address
/// must exist (from the command line, `-O listen` or the file), then
/// the command-line backends are laid over slots 0..n-1 ([`overlay_servers`]).
pub fn finish_startup(cfg: &mut Config, servers: &[ServerConfig]) -> Result<(), CliError> {
    if cfg.listen.is_none() {
        return Err(fail_usage(
            "pen: no listen address: give [host:]port on the command line or `listen` in the -F file",
        ));
    }
    overlay_servers(cfg, servers);
    Ok(())
}

/// Lays the command-line backends over slots 0..n-1 of `cfg.servers` (growing the table),
/// after the `-F` file was read, as C Pen's `init`: address, port, maxc, hard, weight and prio
/// are replaced; a slot's `acl` set by the file is kept.
pub fn overlay_servers(cfg: &mut Config, servers: &[ServerConfig]) {
    for (i, s) in servers.iter().enumerate() {
        match cfg.servers.get_mut(i) {
            Some(slot) => {
                let acl = slot.acl;
                *slot = s.clone();
                if s.acl.is_none() {
                    slot.acl = acl;
                }
            }
            None => cfg.servers.push(s.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FastClose;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn ok(line: &str) -> Cli {
        parse(args(line)).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn bad(line: &str) -> String {
        match parse(args(line)) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("{line:?} should fail, gave {c:?}"),
        }
    }

    fn ip(s: &str) -> Option<HostSpec> {
        Some(HostSpec::Ip(s.parse().unwrap()))
    }

    #[test]
    fn getopt_string_knows_every_option() {
        for c in "BCFOSTbcijlmopqtuwxeEKGAL".chars() {
            assert_eq!(takes_arg(c), Some(true), "{c}");
        }
        for c in "DHNPQWXUadfhnrsZR".chars() {
            assert_eq!(takes_arg(c), Some(false), "{c}");
        }
        assert_eq!(takes_arg('y'), None);
        assert_eq!(takes_arg(':'), None);
    }

    #[test]
    fn defaults_without_options() {
        let c = ok("8080 10.0.0.1");
        let want = Config {
            listen: Some(ListenAddr::Inet("0.0.0.0:8080".parse().unwrap())),
            listen_given: Some("8080".into()),
            ..Config::default()
        };
        assert_eq!(c.config, want);
        assert_eq!(c.servers.len(), 1);
        assert_eq!(c.servers[0].port, 8080, "port defaults to the listen port");
        assert!(c.notices.is_empty());
    }

    #[test]
    fn clustered_flags() {
        let c = ok("-dfr 80 h");
        assert_eq!(c.config.debug, 1);
        assert!(c.config.foreground && c.config.mode.roundrobin);
        let c = ok("-dd -d 80 h");
        assert_eq!(c.config.debug, 3);
    }

    #[test]
    fn option_argument_attached_separate_or_in_cluster() {
        assert_eq!(ok("-x500 80 h").config.conn_max, 500);
        assert_eq!(ok("-x 700 80 h").config.conn_max, 700);
        let c = ok("-dfx900 80 h");
        assert_eq!(
            (c.config.debug, c.config.foreground, c.config.conn_max),
            (1, true, 900)
        );
    }

    #[test]
    fn double_dash_ends_options() {
        let c = ok("-f -- 8080 h");
        assert!(c.config.foreground);
        assert_eq!(
            bad("-f -- 8080 -r"),
            "pen: bad backend \"-r\": \"-r\" is not a valid host name, IP address or Unix socket path"
        );
    }

    #[test]
    fn gnu_permutation_allows_options_after_positionals() {
        let c = ok("8080 10.0.0.1 -r 10.0.0.2 -x 100");
        assert!(c.config.mode.roundrobin);
        assert_eq!(c.config.conn_max, 100);
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.servers[1].host, ip("10.0.0.2"));
    }

    #[test]
    fn every_flag_option() {
        let c = ok("-H -U -W -X -a -f -h -r -s -Z -R 80 h");
        let g = &c.config;
        assert!(g.http && g.udp && g.mode.weight && g.exit_enabled && g.ascii);
        assert!(g.foreground && g.mode.hash && g.mode.roundrobin && g.mode.stubborn);
        assert!(g.tls.compat && g.tls.require_client_cert);
    }

    #[test]
    fn every_argument_option() {
        let c = ok(
            "-B 10.9.9.9:81 -C 127.0.0.1:10000 -F /etc/pen.cfg -T 60 -b 10 -c 99 \
             -e 10.8.8.8 -j /var/empty -l /var/log/pen.log -m 5 -p /run/pen.pid -q 80 -t 7 \
             -u nobody -w /tmp/s.html -x 77 -E c.pem -K k.pem -G ca.pem -A /etc/ca -L tls1 \
             8080 h",
        );
        let g = &c.config;
        assert_eq!(g.abuse.as_ref().unwrap().host, ip("10.9.9.9"));
        assert_eq!(g.abuse.as_ref().unwrap().port, 81);
        assert_eq!(g.control.as_deref(), Some("127.0.0.1:10000"));
        assert_eq!(g.config_file, Some(PathBuf::from("/etc/pen.cfg")));
        assert_eq!(
            (g.tracking_secs, g.blacklist_secs, g.clients_max),
            (60, 10, 99)
        );
        assert_eq!(
            g.emergency.as_ref().unwrap().port,
            8080,
            "-e port defaults to listen port"
        );
        assert_eq!(g.chroot, Some(PathBuf::from("/var/empty")));
        assert_eq!(g.log.as_deref(), Some("/var/log/pen.log"));
        assert_eq!(
            (g.multi_accept, g.backlog, g.connect_timeout_secs),
            (5, 80, 7)
        );
        assert_eq!(g.pid_file, Some(PathBuf::from("/run/pen.pid")));
        assert_eq!(g.user.as_deref(), Some("nobody"));
        assert_eq!(g.web_stats, Some(PathBuf::from("/tmp/s.html")));
        assert_eq!(g.conn_max, 77);
        assert_eq!(g.tls.cert, Some(PathBuf::from("c.pem")));
        assert_eq!(g.tls.key, Some(PathBuf::from("k.pem")));
        assert_eq!(g.tls.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(g.tls.ca_dir, Some(PathBuf::from("/etc/ca")));
        assert_eq!(g.tls.protocol, SslProtocol::Tls1);
    }

    #[test]
    fn o_and_big_o_run_penctl_commands_in_order() {
        let c = parse(vec![
            "-O".to_string(),
            "timeout 9".to_string(),
            "-o".to_string(),
            "server 3 address 10.0.0.4 port 81".to_string(),
            "-t".to_string(),
            "4".to_string(),
            "-O".to_string(),
            "tcp_fastclose both".to_string(),
            "80".to_string(),
        ])
        .unwrap();
        assert_eq!(
            c.config.connect_timeout_secs, 4,
            "later -t wins over earlier -O"
        );
        assert_eq!(c.config.servers.len(), 4);
        assert_eq!(c.config.servers[3].host, ip("10.0.0.4"));
        assert_eq!(c.config.tcp_fastclose, FastClose::Both);
        assert!(c.servers.is_empty());
    }

    #[test]
    fn o_errors_are_fatal_and_name_option_and_command() {
        let e = parse(vec!["-O".into(), "timeout abc".into(), "80".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pen: -O \"timeout abc\": timeout: expected a number of seconds >= 1, got \"abc\""
        );
        let e = parse(vec!["-o".into(), "frob".into(), "80".into()]).unwrap_err();
        assert_eq!(e.to_string(), "pen: -o \"frob\": unknown command \"frob\"");
    }

    #[test]
    fn o_runtime_commands_are_kept_for_the_daemon() {
        let c = parse(vec![
            "-O".into(),
            "include /etc/pen/more.cfg".into(),
            "-O".into(),
            "server 0 address 10.0.0.1 blacklist 10".into(),
            "80".into(),
        ])
        .unwrap();
        assert_eq!(c.runtime_commands.len(), 2);
        assert_eq!(
            c.runtime_commands[0].to_string(),
            "include /etc/pen/more.cfg"
        );
        assert_eq!(c.config.servers[0].host, ip("10.0.0.1"));
    }

    #[test]
    fn obsolete_options_give_notices() {
        let c = ok("-S 2 -D -Q -n -P 80 h");
        let n = c.notices.join("\n");
        assert!(
            n.contains("-S is obsolete: the server table grows dynamically"),
            "{n}"
        );
        assert!(
            n.contains("-D is obsolete") && n.contains("-Q is obsolete"),
            "{n}"
        );
        assert!(n.contains("-n is obsolete") && n.contains("-P:"), "{n}");
        assert_eq!(c.config.event_backend.as_deref(), Some("poll"));
        assert_eq!(c.notices.len(), 5);
    }

    #[test]
    fn dash_n_is_accepted_with_a_notice_unlike_c_pen() {
        let c = ok("-N 80 h");
        assert!(c.notices[0].contains("-N"), "{:?}", c.notices);
        assert_eq!(c.config.mode, crate::config::Mode::default());
    }

    #[test]
    fn dash_i_is_windows_only() {
        assert_eq!(
            bad("-i pen 80 h"),
            "pen: -i \"pen\": installing a Windows service is Windows-only"
        );
    }

    #[test]
    fn timeout_must_be_at_least_one() {
        assert_eq!(
            bad("-t 0 80 h"),
            "pen: bad value \"0\" for -t: expected a number of seconds >= 1"
        );
        assert!(bad("-t x 80 h").contains("\"x\""));
    }

    #[test]
    fn backlog_and_multi_accept_are_bumped() {
        let c = ok("-q 10 -m 0 80 h");
        assert_eq!(c.config.backlog, 50);
        assert_eq!(c.config.multi_accept, 1);
        assert!(c.notices.iter().any(|n| n.contains("bumped to 50")));
        assert!(c.notices.iter().any(|n| n.contains("bumped to 1")));
        assert_eq!(ok("-q -3 80 h").config.backlog, 50);
        assert!(bad("-q many 80 h").contains("-q"));
    }

    #[test]
    fn numeric_options_reject_garbage() {
        assert_eq!(
            bad("-x abc 80 h"),
            "pen: bad value \"abc\" for -x: expected a number of connections 1-1048576"
        );
        assert!(bad("-c 0 80 h").contains("-c"));
        assert!(bad("-b -1 80 h").contains("-b"));
        assert!(bad("-T 1.5 80 h").contains("-T"));
    }

    #[test]
    fn unknown_and_incomplete_options() {
        let e = parse(args("-y 80")).unwrap_err();
        assert_eq!(e.to_string(), "pen: unknown option -y");
        assert!(e.show_usage());
        assert_eq!(bad("80 h -x"), "pen: option -x requires an argument");
        assert!(bad("--frob 80 h").contains("single-letter options only (and --help, --version)"));
        assert!(bad("-L tls9 80").contains("ssl23, ssl2, ssl3 or tls1"));
    }

    #[test]
    fn missing_listen_address_is_a_usage_error() {
        let e = parse(args("-f -r")).unwrap_err();
        assert!(e.show_usage());
        assert!(e.to_string().contains("no listen address"), "{e}");
        // With -F the file may provide `listen`.
        let c = ok("-F /etc/pen.cfg");
        assert_eq!(c.config.listen, None);
    }

    #[test]
    fn listen_command_makes_first_positional_ignored_as_c_pen() {
        let c = parse(vec![
            "-O".into(),
            "listen 127.0.0.1:9000".into(),
            "8080".into(),
            "10.0.0.1".into(),
        ])
        .unwrap();
        assert_eq!(
            c.config.listen,
            Some(ListenAddr::Inet("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(c.servers.len(), 1);
        assert_eq!(c.servers[0].port, 9000);
        assert!(c.notices[0].contains("\"8080\" ignored"));
    }

    #[test]
    fn listen_address_forms() {
        let l = |s: &str| ok(&format!("{s} h")).config.listen.unwrap();
        assert_eq!(
            l(":::10000"),
            ListenAddr::Inet("[::]:10000".parse().unwrap())
        );
        assert_eq!(
            l("::1:2222"),
            ListenAddr::Inet("[::1]:2222".parse().unwrap())
        );
        assert_eq!(
            l("[::1]:8080"),
            ListenAddr::Inet("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            l("0.0.0.0:80"),
            ListenAddr::Inet("0.0.0.0:80".parse().unwrap())
        );
        assert_eq!(l("8080"), ListenAddr::Inet("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(
            l("localhost:8080"),
            ListenAddr::Name {
                host: "localhost".into(),
                port: 8080
            }
        );
        assert_eq!(l("/tmp/pen.sock"), ListenAddr::Unix("/tmp/pen.sock".into()));
    }

    #[test]
    fn listen_port_zero_is_a_kernel_chosen_port_or_every_port_in_dsr_mode() {
        // As a proxy: the kernel picks the port and pen reports it (daemon.rs).
        let mut c = parse(vec!["127.0.0.1:0".into(), "h".into()]).unwrap();
        assert_eq!(c.config.listen.clone().unwrap().port(), Some(0));
        finish_startup(&mut c.config, &c.servers).unwrap();
        let c = parse(vec![
            "-O".into(),
            "dsr_if eth1".into(),
            "192.168.100.1:0".into(),
            "192.168.100.3".into(),
        ])
        .unwrap();
        assert_eq!(c.config.listen.unwrap().port(), Some(0));
        assert_eq!(c.servers[0].port, 0);
    }

    #[test]
    fn bad_addresses_keep_their_parse_error_as_the_cause() {
        let e = parse(args("htttp h")).unwrap_err();
        let CliError::ListenAddr { given, source } = &e else {
            panic!("expected a listen address error, got {e:?}");
        };
        assert_eq!(given, "htttp");
        assert!(matches!(source, crate::config::AddrError::ListenPort(_)));
        let e = parse(args("80 10.0.0.1:htttp")).unwrap_err();
        assert_eq!(
            e,
            CliError::Backend {
                what: "backend \"10.0.0.1:htttp\"".into(),
                source: BackendError::Port("htttp".into()),
            }
        );
        assert_eq!(
            std::error::Error::source(&e).map(|c| c.to_string()),
            Some(BackendError::Port("htttp".into()).to_string())
        );
        assert!(!e.show_usage());
    }

    #[test]
    fn bad_listen_address() {
        assert_eq!(
            bad("htttp h"),
            "pen: bad listen address \"htttp\": port must be a number 0-65535 or a well-known service name (http, smtp, ...), got \"htttp\" (expected [host:]port)"
        );
    }

    #[test]
    fn backend_full_spec() {
        let s = parse_backend("10.0.0.1:81:10:20:3:4", 80).unwrap();
        assert_eq!(
            s,
            ServerConfig {
                host: ip("10.0.0.1"),
                port: 81,
                maxc: 10,
                hard: 20,
                weight: 3,
                prio: 4,
                acl: None
            }
        );
    }

    #[test]
    fn backend_partial_specs_default_to_zero_and_listen_port() {
        let s = parse_backend("web1", 8080).unwrap();
        assert_eq!(
            (s.host, s.port, s.maxc),
            (Some(HostSpec::Name("web1".into())), 8080, 0)
        );
        let s = parse_backend("localhost:80:10", 1).unwrap();
        assert_eq!((s.port, s.maxc, s.hard), (80, 10, 0));
        let s = parse_backend("h::10", 8080).unwrap();
        assert_eq!((s.port, s.maxc), (8080, 10), "empty port = listen port");
    }

    #[test]
    fn backend_ipv6_forms() {
        let s = parse_backend("[::1]:80:5", 1).unwrap();
        assert_eq!((s.host, s.port, s.maxc), (ip("::1"), 80, 5));
        let s = parse_backend("[2001:db8::2]", 443).unwrap();
        assert_eq!((s.host, s.port), (ip("2001:db8::2"), 443));
        let s = parse_backend("2001:db8::2", 443).unwrap();
        assert_eq!(
            (s.host, s.port),
            (ip("2001:db8::2"), 443),
            "bare v6 has no port"
        );
        assert_eq!(
            parse_backend("[::1", 1).unwrap_err(),
            BackendError::MissingBracket
        );
        assert!(
            parse_backend("[::1]80", 1)
                .unwrap_err()
                .to_string()
                .contains("':'")
        );
    }

    #[test]
    fn backend_unix_path() {
        let s = parse_backend("/run/app.sock", 80).unwrap();
        assert_eq!(s.host, Some(HostSpec::Unix("/run/app.sock".into())));
        let s = parse_backend("/run/app.sock::5", 80).unwrap();
        assert_eq!(s.maxc, 5);
    }

    #[test]
    fn backend_errors_name_the_token() {
        assert_eq!(
            bad("80 10.0.0.1:htttp"),
            "pen: bad backend \"10.0.0.1:htttp\": port must be a number 1-65535 or a well-known service name (http, smtp, ...), got \"htttp\""
        );
        assert!(bad("80 h:1:2:3:4:5:6").contains("too many ':' fields"));
        assert!(bad("80 h:1:x").contains("maxc must be a number"));
        assert!(bad("80 h:0").contains("port must be a number 1-65535"));
        assert!(bad("80 999.1.1.1").contains("not a valid IPv4"));
        assert!(bad("-e x:y 80 h").starts_with("pen: bad emergency server \"x:y\" for -e"));
        assert!(bad("-B x:y 80 h").starts_with("pen: bad abuse server \"x:y\" for -B"));
        assert!(bad("-C nope 80 h").starts_with("pen: bad control address \"nope\" for -C"));
    }

    #[test]
    fn format_backend_round_trips() {
        for spec in [
            "10.0.0.1:81:10:20:3:4",
            "[::1]:80",
            "web:1",
            "/run/s.sock:9:1",
        ] {
            let s = parse_backend(spec, 7).unwrap();
            assert_eq!(parse_backend(&format_backend(&s), 7).unwrap(), s, "{spec}");
        }
    }

    #[test]
    fn overlay_replaces_first_slots_and_keeps_file_acl() {
        let mut cfg = Config::default();
        let errs = crate::ctl::apply::apply_text(
            &mut cfg,
            "server 0 acl 2 address 10.0.0.1 port 80\nserver 1 address 10.0.0.2 port 80\nserver 2 address 10.0.0.3 port 80\n",
            "f",
        );
        assert!(errs.is_empty());
        let cli = ok("80 10.1.1.1:81 10.1.1.2");
        overlay_servers(&mut cfg, &cli.servers);
        assert_eq!(cfg.servers.len(), 3);
        assert_eq!(
            (cfg.servers[0].host.clone(), cfg.servers[0].port),
            (ip("10.1.1.1"), 81)
        );
        assert_eq!(cfg.servers[0].acl, Some(2));
        assert_eq!(cfg.servers[1].host, ip("10.1.1.2"));
        assert_eq!(cfg.servers[2].host, ip("10.0.0.3"));
        let more = ok("80 a b c d");
        overlay_servers(&mut cfg, &more.servers);
        assert_eq!(cfg.servers.len(), 4);
    }

    #[test]
    fn finish_startup_needs_a_listen_address_and_overlays() {
        let cli = ok("-F /etc/pen.cfg");
        let mut cfg = cli.config.clone();
        let e = finish_startup(&mut cfg, &cli.servers).unwrap_err();
        assert!(
            e.show_usage() && e.to_string().contains("no listen address"),
            "{e}"
        );
        cfg.listen = Some(ListenAddr::parse("10.0.0.1:0").unwrap());
        cfg.dsr_if = Some("eth1".into());
        let cli = ok("80 10.1.1.1");
        finish_startup(&mut cfg, &cli.servers).unwrap();
        assert_eq!(cfg.servers[0].host, ip("10.1.1.1"));
    }

    fn inv(line: &str) -> Invocation {
        invocation(args(line)).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn help_and_version_end_the_parse_where_getopt_sees_them() {
        assert_eq!(inv("--help"), Invocation::Help);
        assert_eq!(inv("-f 80 h --help"), Invocation::Help);
        assert_eq!(inv("--version"), Invocation::Version);
        assert_eq!(inv("-V"), Invocation::Version);
        assert_eq!(inv("-fV 80 h"), Invocation::Version, "-V in a cluster");
        // As an option's argument or after `--` they are not options.
        let Invocation::Run(c) = inv("-l --help 80 h") else {
            panic!("-l takes --help as its argument")
        };
        assert_eq!(c.config.log.as_deref(), Some("--help"));
        assert!(bad("-- --version h").contains("\"--version\""));
        // An earlier bad option is reported first, as getopt does.
        assert_eq!(
            invocation(args("-y --help")).unwrap_err().to_string(),
            "pen: unknown option -y"
        );
        // -h stays C Pen's hash option.
        let Invocation::Run(c) = inv("-h 80 h") else {
            panic!("-h runs pen")
        };
        assert!(c.config.mode.hash);
        assert_eq!(
            invocation(args("-v")).unwrap_err().to_string(),
            "pen: unknown option -v (the version: -V or --version)"
        );
        // parse() is for running pen: information requests are errors there.
        assert!(bad("--version").contains("print information"));
    }

    #[test]
    fn version_says_pen_rs() {
        assert!(VERSION.starts_with(&format!("pen-rs {} ", env!("CARGO_PKG_VERSION"))));
    }

    #[test]
    fn usage_lists_what_pen_rs_supports() {
        assert!(
            !USAGE.contains("ssl2,") && !USAGE.contains("ssl3"),
            "{USAGE}"
        );
        for w in [
            "--help",
            "--version",
            "-V ",
            "prometheus [addr:]port",
            "worker_threads N",
            "io_uring ",
            "udp_flow_idle N",
            "control_any_file",
            "version ",
            "tarpit_persist",
            "tarpit_capture NET",
            "tarpit_rate R",
            "127.0.0.1 only",
            "proxy_protocol v1|v2|off",
            "server N proxy",
            "accept_proxy v1|v2|any|off [timeout S]",
        ] {
            assert!(USAGE.contains(w), "{w} missing from USAGE");
        }
    }

    #[test]
    fn listen_address_is_kept_as_given() {
        for given in [
            "8080",
            "127.0.0.1:8080",
            ":::10000",
            "[::1]:8080",
            "/tmp/p.sock",
        ] {
            let c = ok(&format!("{given} h"));
            assert_eq!(c.config.listen_text().as_deref(), Some(given));
        }
    }

    #[test]
    fn usage_lists_every_option() {
        for c in GETOPT.chars().filter(|c| *c != ':') {
            assert!(USAGE.contains(&format!("-{c}")), "-{c} missing from USAGE");
        }
    }
}
