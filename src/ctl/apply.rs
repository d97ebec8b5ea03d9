//! Applying penctl commands to a [`Config`]. Pure.
//!
//! [`apply`] changes the configuration for commands that set something and tells the caller
//! which commands are runtime queries or actions (`servers`, `status`, `close N`, `include`,
//! ...) that the control plane must carry out itself. [`apply_text`] / [`apply_text_with`]
//! read a config file's text (`-F`, HUP, `include`) line by line, as C Pen's `read_cfg`: a bad
//! line is reported and the rest still applies. [`write_config`] is the inverse (`write`).
//!
//! After a [`Applied::Config`] result the control plane may need to act on the new values:
//! `listen` (reopen the listener), `log` (reopen the log), `conn_max`/`clients_max` (grow the
//! tables), `debug`, mode flags (`Balancer::update_settings`), `server N` (`set_server`). The
//! reply texts of the get/set forms (`blacklist` replies the value, ...) are the control
//! plane's business too: it formats them from the config after applying.

use std::fmt;
use std::fmt::Write as _;

use crate::acl::ACLS_MAX;
use crate::config::{Config, SendProxy, ServerConfig, defaults};
use crate::ctl::command::{AcceptProxyCmd, Command, EventBackend, Flag, ServerCmd, TarpitAcl};

/// What [`apply`] did with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The configuration was changed (possibly to the value it already had).
    Config,
    /// A query or an action on running state (`servers`, `status`, `mode`, `pid`, `recent`,
    /// `connection N`, `close N`, `socket N`, `exit`, `write`, `include`, `control`, the
    /// get forms without argument such as `timeout`, and `server N ... blacklist T` after its
    /// configuration part was applied). The control plane must handle it; config is unchanged
    /// (except for that configuration part).
    Runtime,
    /// Accepted and ignored (obsolete commands); the text says why.
    Ignored(String),
}

/// A command that cannot be applied to this configuration. Displays one line:
/// `command: what was wrong and what would be accepted` ([`ApplyError::command`],
/// [`ApplyError::message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// An access list number out of 0-9.
    AclNumber { command: String, got: u8 },
    /// A client or connection table size out of 1-`limit`.
    TableSize {
        command: String,
        table: String,
        limit: usize,
        got: usize,
    },
    /// `acl N ...` for a list the configuration does not have.
    NoAcl(u8),
    /// `dsr_if` with something that cannot be an interface name.
    InterfaceName(String),
    /// `listen` on port 0 outside DSR mode (the address as given).
    ListenPortZero(String),
    /// 0 for a setting that must be at least 1; `expected` says what would be accepted.
    Zero {
        command: &'static str,
        expected: &'static str,
    },
    /// `worker_threads` out of 1-`max`.
    WorkerThreads { max: usize, got: usize },
    /// `server N` with N out of 0-`max`.
    ServerNumber { max: usize, got: usize },
    /// `server N` for a slot the configuration does not have.
    NoSlot(usize),
}

impl ApplyError {
    /// The command word.
    pub fn command(&self) -> &str {
        match self {
            ApplyError::AclNumber { command, .. } | ApplyError::TableSize { command, .. } => {
                command
            }
            ApplyError::NoAcl(_) => "acl",
            ApplyError::InterfaceName(_) => "dsr_if",
            ApplyError::ListenPortZero(_) => "listen",
            ApplyError::Zero { command, .. } => command,
            ApplyError::WorkerThreads { .. } => "worker_threads",
            ApplyError::ServerNumber { .. } | ApplyError::NoSlot(_) => "server",
        }
    }

    /// What was wrong and what would be accepted, without the command word.
    pub fn message(&self) -> String {
        match self {
            ApplyError::AclNumber { got, .. } => {
                format!("expected an access list number 0-9, got {got}")
            }
            ApplyError::TableSize {
                table, limit, got, ..
            } => format!("expected a {table} table size 1-{limit}, got {got}"),
            ApplyError::NoAcl(n) => format!("no access list {n}"),
            ApplyError::InterfaceName(name) => {
                format!("expected a network interface name of 1-15 characters, got {name:?}")
            }
            ApplyError::ListenPortZero(addr) => format!(
                "port 0 in {addr} is only allowed in DSR mode (after dsr_if); expected a port 1-65535"
            ),
            ApplyError::Zero { expected, .. } => format!("expected {expected}, got 0"),
            ApplyError::WorkerThreads { max, got } => {
                format!("expected a number of threads from 1 to {max}, got \"{got}\"")
            }
            ApplyError::ServerNumber { max, got } => {
                format!("expected a server number 0-{max}, got {got}")
            }
            ApplyError::NoSlot(n) => format!("no slot {n}"),
        }
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.command(), self.message())
    }
}

impl std::error::Error for ApplyError {}

fn check_acl(cmd: &str, n: u8) -> Result<u8, ApplyError> {
    if usize::from(n) < ACLS_MAX {
        Ok(n)
    } else {
        Err(ApplyError::AclNumber {
            command: cmd.to_string(),
            got: n,
        })
    }
}

/// A client or connection table size must be 1..=`limit`.
fn check_table_size(cmd: &str, table: &str, n: usize, limit: usize) -> Result<(), ApplyError> {
    if n == 0 || n > limit {
        return Err(ApplyError::TableSize {
            command: cmd.to_string(),
            table: table.to_string(),
            limit,
            got: n,
        });
    }
    Ok(())
}

/// Applies one command. See [`Applied`] for what the caller must do next.
pub fn apply(cfg: &mut Config, cmd: &Command) -> Result<Applied, ApplyError> {
    use Applied::{Config as Changed, Runtime};
    let applied = match cmd {
        Command::Flag(flag, on) => {
            let on = *on;
            match flag {
                Flag::AbortOnError => cfg.abort_on_error = on,
                Flag::Ascii => cfg.ascii = on,
                Flag::Block => {
                    return Ok(Applied::Ignored(
                        "block is obsolete (Pen 0.26.0 removed blocking mode): ignored".into(),
                    ));
                }
                Flag::DelayedForward => {
                    return Ok(Applied::Ignored(
                        "delayed_forward is obsolete (Pen 0.26.0 removed delayed forwarding): ignored"
                            .into(),
                    ));
                }
                Flag::ControlAnyFile => cfg.control_any_file = on,
                Flag::Dummy => cfg.dummy = on,
                Flag::Hash => cfg.mode.hash = on,
                Flag::Http => cfg.http = on,
                Flag::Keepalive => cfg.keepalive = on,
                Flag::Peek => cfg.peek = on,
                Flag::Prio => cfg.mode.prio = on,
                Flag::Roundrobin => cfg.mode.roundrobin = on,
                Flag::Stubborn => cfg.mode.stubborn = on,
                Flag::TcpNodelay => cfg.tcp_nodelay = on,
                Flag::Transparent => cfg.transparent = on,
                Flag::Weight => cfg.mode.weight = on,
            }
            Changed
        }
        Command::Acl { list, entry } => {
            let n = check_acl("acl", *list)?;
            match cfg.acls.lists.get_mut(usize::from(n)) {
                Some(acl) => acl.entries.push(entry.clone()),
                None => return Err(ApplyError::NoAcl(n)),
            }
            Changed
        }
        Command::NoAcl(list) => {
            let n = check_acl("no acl", *list)?;
            if let Some(acl) = cfg.acls.lists.get_mut(usize::from(n)) {
                acl.entries.clear();
            }
            Changed
        }
        Command::Blacklist(Some(t)) => {
            cfg.blacklist_secs = *t;
            Changed
        }
        Command::ClientAcl(Some(n)) => {
            cfg.client_acl = check_acl("client_acl", *n)?;
            Changed
        }
        Command::ControlAcl(Some(n)) => {
            cfg.control_acl = check_acl("control_acl", *n)?;
            Changed
        }
        Command::TarpitAcl(Some(t)) => {
            cfg.tarpit_acl = match t {
                TarpitAcl::Off => None,
                TarpitAcl::List(n) => Some(check_acl("tarpit_acl", *n)?),
            };
            Changed
        }
        Command::ClientsMax(Some(n)) => {
            check_table_size("clients_max", "client", *n, defaults::CLIENTS_MAX_LIMIT)?;
            // The table only grows, as C Pen's expand_clienttable.
            cfg.clients_max = cfg.clients_max.max(*n);
            Changed
        }
        Command::ConnMax(Some(n)) => {
            check_table_size("conn_max", "connection", *n, defaults::CONN_MAX_LIMIT)?;
            cfg.conn_max = cfg.conn_max.max(*n);
            Changed
        }
        Command::Debug(Some(n)) => {
            cfg.debug = *n;
            Changed
        }
        Command::DsrIf(name) => {
            // IFNAMSIZ is 16 including the terminating NUL.
            if name.is_empty() || name.len() > 15 || name.contains(['/', '\0']) {
                return Err(ApplyError::InterfaceName(name.clone()));
            }
            cfg.dsr_if = Some(name.clone());
            Changed
        }
        Command::DsrIp(ip) => {
            cfg.dsr_ip = Some(*ip);
            Changed
        }
        Command::EventBackend(b) => {
            cfg.event_backend = Some(b.as_str().to_string());
            Changed
        }
        Command::IdleTimeout(Some(n)) => {
            cfg.idle_timeout_secs = *n;
            Changed
        }
        Command::Idlers(Some(n)) => {
            cfg.idlers = *n;
            Changed
        }
        Command::Listen(Some(arg)) => {
            let addr = &arg.addr;
            if addr.port() == Some(0) && cfg.dsr_if.is_none() {
                return Err(ApplyError::ListenPortZero(addr.to_string()));
            }
            cfg.listen = Some(addr.clone());
            cfg.listen_given = Some(arg.given.clone());
            Changed
        }
        Command::Log(Some(l)) => {
            cfg.log = Some(l.clone());
            Changed
        }
        Command::NoLog => {
            cfg.log = None;
            Changed
        }
        Command::PendingMax(n) => {
            if *n == 0 {
                return Err(ApplyError::Zero {
                    command: "pending_max",
                    expected: "a number >= 1",
                });
            }
            cfg.pending_max = *n;
            Changed
        }
        Command::Server(s) => {
            apply_server(cfg, s)?;
            if s.blacklist.is_some() {
                Runtime
            } else {
                Changed
            }
        }
        Command::Source(ip) => {
            cfg.source = Some(*ip);
            Changed
        }
        Command::SslCiphers(c) => {
            cfg.tls.ciphers = c.clone();
            Changed
        }
        Command::SslClientRenegotiationInterval(n) => {
            cfg.tls.renegotiation_interval = *n;
            Changed
        }
        Command::SslOcspResponse(p) => {
            cfg.tls.ocsp_response = Some(p.clone());
            Changed
        }
        Command::SslOption(o) => {
            let w = o.as_str();
            if !cfg.tls.options.iter().any(|x| x == w) {
                cfg.tls.options.push(w.to_string());
            }
            Changed
        }
        Command::SslSniPath(p) => {
            cfg.tls.sni_path = Some(p.clone());
            Changed
        }
        Command::TcpFastclose(fc) => {
            cfg.tcp_fastclose = *fc;
            Changed
        }
        Command::Timeout(Some(n)) => {
            if *n == 0 {
                return Err(ApplyError::Zero {
                    command: "timeout",
                    expected: "a number of seconds >= 1",
                });
            }
            cfg.connect_timeout_secs = *n;
            Changed
        }
        Command::Tracking(Some(n)) => {
            cfg.tracking_secs = *n;
            Changed
        }
        Command::UdpFlowIdle(Some(n)) => {
            if *n == 0 {
                return Err(ApplyError::Zero {
                    command: "udp_flow_idle",
                    expected: "a number of seconds >= 1",
                });
            }
            cfg.udp_flow_idle_secs = *n;
            Changed
        }
        Command::WorkerThreads(Some(n)) => {
            // Stored only: the runtime is built once, at start (see `Config::worker_threads`).
            if *n == 0 || *n > defaults::WORKER_THREADS_MAX {
                return Err(ApplyError::WorkerThreads {
                    max: defaults::WORKER_THREADS_MAX,
                    got: *n,
                });
            }
            cfg.worker_threads = *n;
            Changed
        }
        Command::Upgrade => {
            // Acted on at start-up only (the daemon takes the sockets over); never written.
            cfg.upgrade = true;
            Changed
        }
        Command::UpgradeSocket(Some(p)) => {
            cfg.upgrade_socket = Some(p.clone());
            Changed
        }
        Command::DrainTimeout(Some(n)) => {
            cfg.drain_timeout_secs = *n;
            Changed
        }
        Command::WebStats(Some(p)) => {
            cfg.web_stats = Some(p.clone());
            Changed
        }
        Command::NoWebStats => {
            cfg.web_stats = None;
            Changed
        }
        Command::Prometheus(Some(a)) => {
            cfg.prometheus = Some(*a);
            Changed
        }
        Command::NoPrometheus => {
            cfg.prometheus = None;
            Changed
        }
        Command::TarpitPersist(on) => {
            cfg.tarpit_persist = *on;
            Changed
        }
        Command::TarpitCapture(Some(c)) => {
            cfg.tarpit_capture = Some(*c);
            Changed
        }
        Command::NoTarpitCapture => {
            cfg.tarpit_capture = None;
            Changed
        }
        Command::TarpitRate(Some(r)) => {
            cfg.tarpit_rate = Some(*r);
            Changed
        }
        Command::NoTarpitRate => {
            cfg.tarpit_rate = None;
            Changed
        }
        Command::ProxyProtocol(Some(p)) => {
            cfg.proxy_protocol = *p;
            Changed
        }
        Command::AcceptProxy(Some(a)) => {
            if a.timeout == Some(0) {
                return Err(ApplyError::Zero {
                    command: "accept_proxy",
                    expected: "a timeout of seconds >= 1",
                });
            }
            cfg.accept_proxy = a.mode;
            if let Some(t) = a.timeout {
                cfg.accept_proxy_timeout_secs = t;
            }
            Changed
        }
        // Queries (get forms without argument) and actions on running state.
        Command::Blacklist(None)
        | Command::ClientAcl(None)
        | Command::ControlAcl(None)
        | Command::TarpitAcl(None)
        | Command::ClientsMax(None)
        | Command::ConnMax(None)
        | Command::Debug(None)
        | Command::IdleTimeout(None)
        | Command::Idlers(None)
        | Command::Listen(None)
        | Command::Log(None)
        | Command::Timeout(None)
        | Command::Tracking(None)
        | Command::UdpFlowIdle(None)
        | Command::WorkerThreads(None)
        | Command::UpgradeSocket(None)
        | Command::DrainTimeout(None)
        | Command::WebStats(None)
        | Command::Prometheus(None)
        | Command::TarpitCapture(None)
        | Command::TarpitRate(None)
        | Command::ProxyProtocol(None)
        | Command::AcceptProxy(None)
        | Command::Tarpit
        | Command::Close(_)
        | Command::Connection(_)
        | Command::Control
        | Command::Exit
        | Command::Include(_)
        | Command::Mode
        | Command::Pid
        | Command::Recent(_)
        | Command::Servers
        | Command::Socket(_)
        | Command::Status
        | Command::Version
        | Command::TableHash
        | Command::Write(_) => Runtime,
    };
    Ok(applied)
}

/// The configuration part of `server N ...`: grows the table to N+1 slots and sets the given
/// fields. (`blacklist T` is runtime state and is left to the caller.)
fn apply_server(cfg: &mut Config, s: &ServerCmd) -> Result<(), ApplyError> {
    if s.index >= defaults::SERVERS_MAX {
        return Err(ApplyError::ServerNumber {
            max: defaults::SERVERS_MAX - 1,
            got: s.index,
        });
    }
    if let Some(a) = s.acl {
        check_acl("server", a)?;
    }
    if cfg.servers.len() <= s.index {
        cfg.servers.resize(s.index + 1, ServerConfig::default());
    }
    let Some(slot) = cfg.servers.get_mut(s.index) else {
        return Err(ApplyError::NoSlot(s.index));
    };
    if let Some(a) = s.acl {
        slot.acl = Some(a);
    }
    if let Some(h) = &s.address {
        slot.host = Some(h.clone());
    }
    if let Some(p) = s.port {
        slot.port = p;
    }
    if let Some(m) = s.max {
        slot.maxc = m;
    }
    if let Some(h) = s.hard {
        slot.hard = h;
    }
    if let Some(w) = s.weight {
        slot.weight = w;
    }
    if let Some(p) = s.prio {
        slot.prio = p;
    }
    match &s.check {
        Some(crate::health::CheckSetting::On(c)) => {
            cfg.checks.insert(s.index, c.clone());
        }
        Some(crate::health::CheckSetting::Off) => {
            cfg.checks.remove(&s.index);
        }
        None => {}
    }
    match s.proxy {
        Some(Some(p)) => {
            cfg.server_proxy.insert(s.index, p);
        }
        Some(None) => {
            cfg.server_proxy.remove(&s.index);
        }
        None => {}
    }
    Ok(())
}

/// One bad line of a config text: displays `origin:line: problem`; the command or apply error
/// is kept as `source()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub origin: String,
    /// 1-based line number (0: the file itself).
    pub line: usize,
    pub problem: LineProblem,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.origin, self.line, self.problem)
    }
}

impl std::error::Error for LineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.problem)
    }
}

/// What is wrong with a line of a config text, or with the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// Not a command.
    #[error(transparent)]
    Command(#[from] crate::ctl::command::CommandError),
    /// A command this configuration refuses.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The file could not be read; `reason` is the reader's error (the IO layer's).
    #[error("cannot read config file: {reason}")]
    Unreadable { reason: String },
    /// `include FILE` could not read the file.
    #[error("include: cannot read {}: {reason}", path.display())]
    IncludeUnreadable {
        path: std::path::PathBuf,
        reason: String,
    },
    /// A runtime command the caller of [`apply_text_with`] refused, with its reason.
    #[error("{0}")]
    Refused(String),
    /// `include FILE` nested too deep: an include loop.
    #[error("include: {} nested deeper than {INCLUDE_DEPTH_MAX} files (include loop?)", path.display())]
    IncludeTooDeep { path: std::path::PathBuf },
}

/// Applies a config file's text line by line; every bad line gives a [`LineError`] and the
/// rest still applies (as C Pen's `read_cfg`). Runtime commands (see [`Applied::Runtime`]),
/// including `include FILE`, are skipped here: use [`apply_text_with`] to handle them.
pub fn apply_text(cfg: &mut Config, text: &str, origin: &str) -> Vec<LineError> {
    apply_text_with(cfg, text, origin, |_, _| Ok(()))
}

/// Like [`apply_text`], but every runtime command (`include FILE`, `server N blacklist T`,
/// `write`, queries, ...) is passed, in file order, to `on_runtime`, which may change the
/// config (e.g. read the included file and call `apply_text_with` on it, with a depth limit
/// against include loops). An `Err(problem)` from it becomes a [`LineError`] for that line.
pub fn apply_text_with<F>(
    cfg: &mut Config,
    text: &str,
    origin: &str,
    mut on_runtime: F,
) -> Vec<LineError>
where
    F: FnMut(&mut Config, &Command) -> Result<(), LineProblem>,
{
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut fail = |problem: LineProblem| {
            errors.push(LineError {
                origin: origin.to_string(),
                line: i + 1,
                problem,
            })
        };
        let cmd = match crate::ctl::command::parse(line) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => continue,
            Err(e) => {
                fail(e.into());
                continue;
            }
        };
        match apply(cfg, &cmd) {
            Ok(Applied::Runtime) => {
                if let Err(p) = on_runtime(cfg, &cmd) {
                    fail(p);
                }
            }
            Ok(Applied::Config | Applied::Ignored(_)) => {}
            Err(e) => fail(e.into()),
        }
    }
    errors
}

/// How deep `include` may nest before it is taken for a loop.
pub const INCLUDE_DEPTH_MAX: usize = 8;

/// What [`apply_file`] did besides changing the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileOutcome {
    /// Bad lines (and unreadable files), per file in line order; the rest was applied.
    pub errors: Vec<LineError>,
    /// Runtime commands other than `include` (e.g. `server N blacklist T`, `write`, queries),
    /// in file order, for the control plane to run once it is up.
    pub runtime: Vec<Command>,
}

/// Reads a config file (`-F`, HUP) through `read` (the IO layer's `fs::read_to_string`, or a
/// map in tests) and applies it with [`apply_text_with`]; `include FILE` lines are read the same
/// way at the point where they appear, nested at most [`INCLUDE_DEPTH_MAX`] deep. An unreadable
/// file is reported as a [`LineError`] at the `include` line (line 0 for the top file), with
/// the reader's error as its reason.
pub fn apply_file<R, E>(cfg: &mut Config, path: &std::path::Path, mut read: R) -> FileOutcome
where
    R: FnMut(&std::path::Path) -> Result<String, E>,
    E: fmt::Display,
{
    let mut out = FileOutcome::default();
    match read(path) {
        Ok(text) => include_text(
            cfg,
            &text,
            &path.display().to_string(),
            &mut read,
            0,
            &mut out,
        ),
        Err(e) => out.errors.push(LineError {
            origin: path.display().to_string(),
            line: 0,
            problem: LineProblem::Unreadable {
                reason: e.to_string(),
            },
        }),
    }
    out
}

fn include_text<R, E>(
    cfg: &mut Config,
    text: &str,
    origin: &str,
    read: &mut R,
    depth: usize,
    out: &mut FileOutcome,
) where
    R: FnMut(&std::path::Path) -> Result<String, E>,
    E: fmt::Display,
{
    let mut nested: Vec<LineError> = Vec::new();
    let mut runtime: Vec<Command> = Vec::new();
    let errors = apply_text_with(cfg, text, origin, |cfg, cmd| {
        let Command::Include(p) = cmd else {
            runtime.push(cmd.clone());
            return Ok(());
        };
        if depth + 1 >= INCLUDE_DEPTH_MAX {
            return Err(LineProblem::IncludeTooDeep { path: p.clone() });
        }
        let text = read(p).map_err(|e| LineProblem::IncludeUnreadable {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let mut sub = FileOutcome::default();
        include_text(
            cfg,
            &text,
            &p.display().to_string(),
            read,
            depth + 1,
            &mut sub,
        );
        nested.extend(sub.errors);
        runtime.extend(sub.runtime);
        Ok(())
    });
    // An included file's errors are listed after the including file's own errors.
    out.errors.extend(errors);
    out.errors.extend(nested);
    out.runtime.extend(runtime);
}

/// Quotes a word for the `# pen ...` header line the way a shell reads it back.
fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'.'
                        | b'/'
                        | b':'
                        | b'@'
                        | b'%'
                        | b'+'
                        | b'='
                        | b','
                        | b'-'
                        | b'['
                        | b']'
                )
        });
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The pen command line for the settings that only options can set (`-U -f -X -c -x -m -q -e
/// -B -j -p -u -E -K -G -A -Z -R -L -F -C` and the listen address), without `pen` itself.
pub fn cli_only_args(cfg: &Config) -> Vec<String> {
    let d = Config::default();
    let mut a: Vec<String> = Vec::new();
    let mut opt = |flag: &str, v: Option<String>| {
        if let Some(v) = v {
            a.push(flag.to_string());
            a.push(v);
        }
    };
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    opt(
        "-c",
        (cfg.clients_max != d.clients_max).then(|| cfg.clients_max.to_string()),
    );
    opt(
        "-x",
        (cfg.conn_max != d.conn_max).then(|| cfg.conn_max.to_string()),
    );
    opt(
        "-m",
        (cfg.multi_accept != d.multi_accept).then(|| cfg.multi_accept.to_string()),
    );
    opt(
        "-q",
        (cfg.backlog != d.backlog).then(|| cfg.backlog.to_string()),
    );
    opt("-e", cfg.emergency.as_ref().map(crate::cli::format_backend));
    opt("-B", cfg.abuse.as_ref().map(crate::cli::format_backend));
    opt("-j", path(&cfg.chroot));
    opt("-p", path(&cfg.pid_file));
    opt("-u", cfg.user.clone());
    opt("-E", path(&cfg.tls.cert));
    opt("-K", path(&cfg.tls.key));
    opt("-G", path(&cfg.tls.ca_file));
    opt("-A", path(&cfg.tls.ca_dir));
    opt(
        "-L",
        (cfg.tls.protocol != d.tls.protocol).then(|| cfg.tls.protocol.as_str().to_string()),
    );
    opt("-F", path(&cfg.config_file));
    opt("-C", cfg.control.clone());
    for (on, flag) in [
        (cfg.udp, "-U"),
        (cfg.foreground, "-f"),
        (cfg.exit_enabled, "-X"),
        (cfg.tls.compat, "-Z"),
        (cfg.tls.require_client_cert, "-R"),
    ] {
        if on {
            a.push(flag.to_string());
        }
    }
    if let Some(l) = cfg.listen_text() {
        a.push(l);
    }
    a
}

/// The configuration as a config file, as C Pen's `write_cfg`: a `# pen ...` header comment
/// with the settings only options can set (and the listen address), then commands. Applying
/// the text with [`apply_text`] to `Config::default()` reproduces every command-settable
/// field; parsing the header with `cli::parse` first reproduces the rest. ACL lists are written
/// as `no acl N` followed by their entries, so re-reading the file on HUP does not duplicate
/// entries.
pub fn write_config(cfg: &Config) -> String {
    let mut out = String::new();
    let header: Vec<String> = cli_only_args(cfg).iter().map(|w| shell_word(w)).collect();
    let _ = writeln!(out, "# Generated by pen-rs");
    if header.is_empty() {
        let _ = writeln!(out, "# pen");
    } else {
        let _ = writeln!(out, "# pen {}", header.join(" "));
    }
    let mut cmd = |c: Command| {
        let _ = writeln!(out, "{c}");
    };
    let flag = |f: Flag, on: bool| Command::Flag(f, on);
    for (n, acl) in cfg.acls.lists.iter().enumerate() {
        if acl.entries.is_empty() {
            continue;
        }
        let list = n as u8; // n < ACLS_MAX = 10
        cmd(Command::NoAcl(list));
        for e in &acl.entries {
            cmd(Command::Acl {
                list,
                entry: e.clone(),
            });
        }
    }
    cmd(flag(Flag::Ascii, cfg.ascii));
    cmd(Command::Blacklist(Some(cfg.blacklist_secs)));
    cmd(Command::ClientAcl(Some(cfg.client_acl)));
    cmd(Command::ControlAcl(Some(cfg.control_acl)));
    cmd(Command::TarpitAcl(Some(match cfg.tarpit_acl {
        Some(n) => TarpitAcl::List(n),
        None => TarpitAcl::Off,
    })));
    // pen-rs's tarpit additions, only when set (a C Pen configuration stays as C Pen writes it)
    if cfg.tarpit_persist {
        cmd(Command::TarpitPersist(true));
    }
    if let Some(c) = cfg.tarpit_capture {
        cmd(Command::TarpitCapture(Some(c)));
    }
    if let Some(r) = cfg.tarpit_rate {
        cmd(Command::TarpitRate(Some(r)));
    }
    cmd(Command::Debug(Some(cfg.debug)));
    cmd(flag(Flag::Hash, cfg.mode.hash));
    cmd(flag(Flag::Http, cfg.http));
    cmd(match &cfg.log {
        Some(l) => Command::Log(Some(l.clone())),
        None => Command::NoLog,
    });
    cmd(flag(Flag::Roundrobin, cfg.mode.roundrobin));
    for (i, s) in cfg.servers.iter().enumerate() {
        cmd(Command::Server(ServerCmd {
            index: i,
            acl: s.acl,
            address: s.host.clone(),
            port: Some(s.port),
            max: Some(s.maxc),
            hard: Some(s.hard),
            blacklist: None,
            weight: Some(s.weight),
            prio: Some(s.prio),
            // pen-rs's health checks, only when set (C Pen's line otherwise)
            check: cfg
                .checks
                .get(&i)
                .map(|c| crate::health::CheckSetting::On(c.clone())),
            // pen-rs's PROXY protocol, only when set
            proxy: cfg.server_proxy.get(&i).map(|p| Some(*p)),
        }));
    }
    cmd(flag(Flag::Stubborn, cfg.mode.stubborn));
    cmd(Command::TcpFastclose(cfg.tcp_fastclose));
    cmd(flag(Flag::TcpNodelay, cfg.tcp_nodelay));
    cmd(Command::Timeout(Some(cfg.connect_timeout_secs)));
    cmd(Command::Tracking(Some(cfg.tracking_secs)));
    cmd(Command::UdpFlowIdle(Some(cfg.udp_flow_idle_secs)));
    cmd(match &cfg.web_stats {
        Some(p) => Command::WebStats(Some(p.clone())),
        None => Command::NoWebStats,
    });
    cmd(flag(Flag::Weight, cfg.mode.weight));
    cmd(flag(Flag::Prio, cfg.mode.prio));
    if let Some(a) = cfg.prometheus {
        cmd(Command::Prometheus(Some(a)));
    }
    // pen-rs's PROXY protocol, only when set (a C Pen configuration stays as C Pen writes it)
    if cfg.proxy_protocol != SendProxy::Off {
        cmd(Command::ProxyProtocol(Some(cfg.proxy_protocol)));
    }
    if cfg.accept_proxy.is_some()
        || cfg.accept_proxy_timeout_secs != defaults::ACCEPT_PROXY_TIMEOUT_SECS
    {
        cmd(Command::AcceptProxy(Some(AcceptProxyCmd {
            mode: cfg.accept_proxy,
            timeout: Some(cfg.accept_proxy_timeout_secs),
        })));
    }
    // pen-rs writes these too (C Pen's write_cfg forgets them).
    cmd(flag(Flag::AbortOnError, cfg.abort_on_error));
    cmd(flag(Flag::Keepalive, cfg.keepalive));
    cmd(flag(Flag::Transparent, cfg.transparent));
    cmd(flag(Flag::Dummy, cfg.dummy));
    cmd(flag(Flag::Peek, cfg.peek));
    if cfg.control_any_file {
        cmd(flag(Flag::ControlAnyFile, true));
    }
    cmd(Command::IdleTimeout(Some(cfg.idle_timeout_secs)));
    cmd(Command::PendingMax(cfg.pending_max.max(1)));
    cmd(Command::Idlers(Some(cfg.idlers)));
    if cfg.conn_max > defaults::CONN_MAX {
        cmd(Command::ConnMax(Some(cfg.conn_max)));
    }
    if cfg.clients_max > defaults::CLIENTS_MAX {
        cmd(Command::ClientsMax(Some(cfg.clients_max)));
    }
    if cfg.worker_threads != defaults::WORKER_THREADS {
        cmd(Command::WorkerThreads(Some(cfg.worker_threads)));
    }
    if let Some(p) = &cfg.upgrade_socket {
        cmd(Command::UpgradeSocket(Some(p.clone())));
    }
    if cfg.drain_timeout_secs != crate::upgrade::DEFAULT_DRAIN_TIMEOUT {
        cmd(Command::DrainTimeout(Some(cfg.drain_timeout_secs)));
    }
    if let Some(ip) = cfg.source {
        cmd(Command::Source(ip));
    }
    if let Some(i) = &cfg.dsr_if {
        cmd(Command::DsrIf(i.clone()));
    }
    if let Some(ip) = cfg.dsr_ip {
        cmd(Command::DsrIp(ip));
    }
    if let Some(b) = cfg
        .event_backend
        .as_deref()
        .and_then(EventBackend::from_word)
    {
        cmd(Command::EventBackend(b));
    }
    if let Some(c) = &cfg.tls.ciphers {
        cmd(Command::SslCiphers(Some(c.clone())));
    }
    for o in &cfg.tls.options {
        if let Some(o) = crate::ctl::command::SslOption::from_word(o) {
            cmd(Command::SslOption(o));
        }
    }
    if let Some(p) = &cfg.tls.sni_path {
        cmd(Command::SslSniPath(p.clone()));
    }
    if let Some(p) = &cfg.tls.ocsp_response {
        cmd(Command::SslOcspResponse(p.clone()));
    }
    cmd(Command::SslClientRenegotiationInterval(
        cfg.tls.renegotiation_interval,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{AclEntry, AclMatch};
    use crate::config::{FastClose, HostSpec, ListenAddr};
    use crate::ctl::command::parse;

    fn run(cfg: &mut Config, line: &str) -> Result<Applied, ApplyError> {
        let cmd = parse(line).unwrap().unwrap();
        apply(cfg, &cmd)
    }

    fn ok(cfg: &mut Config, line: &str) -> Applied {
        run(cfg, line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn apply_errors_are_typed_with_the_word_and_the_message_apart() {
        let mut cfg = Config::default();
        // (The parser refuses 0 already; a Command built in code still gets this check.)
        let e = apply(&mut cfg, &Command::Timeout(Some(0))).unwrap_err();
        assert_eq!(
            e,
            ApplyError::Zero {
                command: "timeout",
                expected: "a number of seconds >= 1"
            }
        );
        assert_eq!(
            e.to_string(),
            "timeout: expected a number of seconds >= 1, got 0"
        );
        let server = |index| {
            Command::Server(crate::ctl::command::ServerCmd {
                index,
                ..Default::default()
            })
        };
        let e = apply(&mut cfg, &server(70_000)).unwrap_err();
        assert!(
            matches!(e, ApplyError::ServerNumber { got: 70_000, .. }),
            "{e:?}"
        );
        assert_eq!(e.command(), "server");
        assert!(
            e.message().starts_with("expected a server number 0-"),
            "{e}"
        );
        let e = run(&mut cfg, "dsr_if averyveryverylongname").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dsr_if: expected a network interface name of 1-15 characters, got \"averyveryverylongname\""
        );
    }

    #[test]
    fn set_forms_change_config_and_get_forms_are_runtime() {
        let mut c = Config::default();
        assert_eq!(ok(&mut c, "timeout 7"), Applied::Config);
        assert_eq!(c.connect_timeout_secs, 7);
        assert_eq!(ok(&mut c, "timeout"), Applied::Runtime);
        assert_eq!(c.connect_timeout_secs, 7);
        for (set, get) in [
            ("blacklist 9", "blacklist"),
            ("tracking 60", "tracking"),
            ("debug 2", "debug"),
            ("idlers 3", "idlers"),
            ("idle_timeout 30", "idle_timeout"),
            ("udp_flow_idle 5", "udp_flow_idle"),
            ("worker_threads 4", "worker_threads"),
            ("client_acl 1", "client_acl"),
            ("control_acl 2", "control_acl"),
            ("tarpit_acl 3", "tarpit_acl"),
            ("conn_max 600", "conn_max"),
            ("clients_max 3000", "clients_max"),
            ("log /tmp/l", "log"),
            ("web_stats /tmp/w", "web_stats"),
            ("listen 127.0.0.1:9", "listen"),
        ] {
            assert_eq!(ok(&mut c, set), Applied::Config, "{set}");
            let before = c.clone();
            assert_eq!(ok(&mut c, get), Applied::Runtime, "{get}");
            assert_eq!(c, before, "{get} must not change config");
        }
        assert_eq!(c.blacklist_secs, 9);
        assert_eq!(c.tracking_secs, 60);
        assert_eq!(c.debug, 2);
        assert_eq!(c.idlers, 3);
        assert_eq!(c.idle_timeout_secs, 30);
        assert_eq!(c.udp_flow_idle_secs, 5);
        assert_eq!(c.worker_threads, 4);
        assert_eq!((c.client_acl, c.control_acl, c.tarpit_acl), (1, 2, Some(3)));
        assert_eq!((c.conn_max, c.clients_max), (600, 3000));
        assert_eq!(c.log.as_deref(), Some("/tmp/l"));
        assert_eq!(
            c.listen,
            Some(ListenAddr::Inet("127.0.0.1:9".parse().unwrap()))
        );
    }

    #[test]
    fn queries_and_actions_are_runtime_and_change_nothing() {
        let mut c = Config::default();
        for line in [
            "servers",
            "status",
            "mode",
            "pid",
            "recent",
            "recent 5",
            "connection 1",
            "close 2",
            "socket 3",
            "exit",
            "write",
            "write /tmp/x",
            "include /tmp/y",
            "control",
        ] {
            assert_eq!(ok(&mut c, line), Applied::Runtime, "{line}");
        }
        assert_eq!(c, Config::default());
    }

    #[test]
    fn tables_only_grow_as_c_pen() {
        let mut c = Config::default();
        ok(&mut c, "clients_max 100");
        assert_eq!(c.clients_max, defaults::CLIENTS_MAX);
        ok(&mut c, "conn_max 10");
        assert_eq!(c.conn_max, defaults::CONN_MAX);
        ok(&mut c, "conn_max 800");
        assert_eq!(c.conn_max, 800);
    }

    #[test]
    fn mode_flags_and_their_no_forms() {
        let mut c = Config::default();
        for w in ["roundrobin", "hash", "weight", "prio", "stubborn"] {
            ok(&mut c, w);
        }
        assert_eq!(
            c.mode,
            crate::config::Mode {
                roundrobin: true,
                hash: true,
                weight: true,
                prio: true,
                stubborn: true
            }
        );
        for w in ["roundrobin", "hash", "weight", "prio", "stubborn"] {
            ok(&mut c, &format!("no {w}"));
        }
        assert_eq!(c.mode, crate::config::Mode::default());
    }

    #[test]
    fn boolean_settings_and_their_no_forms() {
        let mut c = Config::default();
        for w in [
            "tcp_nodelay",
            "keepalive",
            "transparent",
            "http",
            "ascii",
            "dummy",
            "peek",
            "abort_on_error",
        ] {
            ok(&mut c, w);
        }
        assert!(c.tcp_nodelay && c.keepalive && c.transparent && c.http);
        assert!(c.ascii && c.dummy && c.peek && c.abort_on_error);
        for w in [
            "tcp_nodelay",
            "keepalive",
            "transparent",
            "http",
            "ascii",
            "dummy",
            "peek",
            "abort_on_error",
        ] {
            ok(&mut c, &format!("no {w}"));
        }
        assert_eq!(c, Config::default());
    }

    #[test]
    fn obsolete_commands_are_ignored_with_a_notice() {
        let mut c = Config::default();
        assert!(matches!(ok(&mut c, "block"), Applied::Ignored(n) if n.contains("obsolete")));
        assert!(matches!(ok(&mut c, "delayed_forward"), Applied::Ignored(_)));
        assert_eq!(c, Config::default());
    }

    #[test]
    fn acl_entries_append_and_no_acl_empties() {
        let mut c = Config::default();
        ok(&mut c, "acl 1 deny 10.0.0.1");
        ok(&mut c, "acl 1 permit 10.0.0.0 255.0.0.0");
        assert_eq!(c.acls.lists[1].entries.len(), 2);
        assert!(!c.acls.permits(1, Some("10.0.0.1".parse().unwrap())));
        assert!(c.acls.permits(1, Some("10.0.0.2".parse().unwrap())));
        ok(&mut c, "no acl 1");
        assert!(c.acls.lists[1].entries.is_empty());
    }

    #[test]
    fn acl_out_of_range_is_an_apply_error_too() {
        let mut c = Config::default();
        let cmd = Command::Acl {
            list: 10,
            entry: AclEntry {
                permit: true,
                matcher: AclMatch::Country("SE".into()),
            },
        };
        assert_eq!(
            apply(&mut c, &cmd).unwrap_err().to_string(),
            "acl: expected an access list number 0-9, got 10"
        );
        assert!(apply(&mut c, &Command::ClientAcl(Some(10))).is_err());
    }

    #[test]
    fn tarpit_minus_one_turns_it_off() {
        let mut c = Config::default();
        ok(&mut c, "tarpit_acl 1");
        assert_eq!(c.tarpit_acl, Some(1));
        ok(&mut c, "tarpit_acl -1");
        assert_eq!(c.tarpit_acl, None);
    }

    #[test]
    fn server_grows_table_and_sets_only_given_fields() {
        let mut c = Config::default();
        assert_eq!(
            ok(&mut c, "server 2 address 10.0.0.3 port 80 weight 5"),
            Applied::Config
        );
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.servers[0], ServerConfig::default());
        assert_eq!(
            c.servers[2].host,
            Some(HostSpec::Ip("10.0.0.3".parse().unwrap()))
        );
        ok(&mut c, "server 2 max 10 hard 20 prio 1 acl 4");
        let s = &c.servers[2];
        assert_eq!(
            (s.port, s.weight, s.maxc, s.hard, s.prio, s.acl),
            (80, 5, 10, 20, 1, Some(4))
        );
        ok(&mut c, "server 0 port 8080");
        assert_eq!(c.servers.len(), 3);
    }

    #[test]
    fn server_blacklist_is_runtime_after_config_part() {
        let mut c = Config::default();
        assert_eq!(
            ok(&mut c, "server 1 address 10.0.0.9 blacklist 30"),
            Applied::Runtime
        );
        assert_eq!(
            c.servers[1].host,
            Some(HostSpec::Ip("10.0.0.9".parse().unwrap()))
        );
    }

    #[test]
    fn listen_port_zero_needs_dsr() {
        let mut c = Config::default();
        let e = run(&mut c, "listen 192.168.100.1:0").unwrap_err();
        assert!(e.to_string().contains("only allowed in DSR mode"), "{e}");
        ok(&mut c, "dsr_if eth1");
        ok(&mut c, "listen 192.168.100.1:0");
        assert_eq!(
            c.listen,
            Some(ListenAddr::Inet("192.168.100.1:0".parse().unwrap()))
        );
    }

    #[test]
    fn dsr_if_name_is_checked() {
        let mut c = Config::default();
        assert!(run(&mut c, "dsr_if averyveryverylongname0").is_err());
        assert_eq!(c.dsr_if, None);
    }

    #[test]
    fn misc_settings() {
        let mut c = Config::default();
        ok(&mut c, "pending_max 7");
        ok(&mut c, "source 10.1.1.1");
        ok(&mut c, "tcp_fastclose both");
        ok(&mut c, "poll");
        ok(&mut c, "dsr_ip 10.2.2.2");
        ok(&mut c, "ssl_option no_sslv3");
        ok(&mut c, "ssl_option no_sslv3");
        ok(&mut c, "ssl_ciphers HIGH");
        ok(&mut c, "ssl_sni_path /etc/sni");
        ok(&mut c, "ssl_ocsp_response /etc/ocsp");
        ok(&mut c, "ssl_client_renegotiation_interval 10");
        assert_eq!(c.pending_max, 7);
        assert_eq!(c.source, Some("10.1.1.1".parse().unwrap()));
        assert_eq!(c.tcp_fastclose, FastClose::Both);
        assert_eq!(c.event_backend.as_deref(), Some("poll"));
        assert_eq!(c.dsr_ip, Some("10.2.2.2".parse().unwrap()));
        assert_eq!(c.tls.options, vec!["no_sslv3".to_string()]);
        assert_eq!(c.tls.ciphers.as_deref(), Some("HIGH"));
        assert_eq!(c.tls.renegotiation_interval, 10);
        ok(&mut c, "ssl_ciphers");
        assert_eq!(c.tls.ciphers, None);
        ok(&mut c, "no log");
        ok(&mut c, "no web_stats");
        assert_eq!((c.log.clone(), c.web_stats.clone()), (None, None));
    }

    #[test]
    fn bad_lines_are_reported_with_origin_and_rest_still_applies() {
        let mut c = Config::default();
        let text = "# config\ntimeout 9\nfrobnicate\n\nacl 12 permit 1.2.3.4\nblacklist 44\n";
        let errs = apply_text(&mut c, text, "/etc/pen.cfg");
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "/etc/pen.cfg:3: unknown command \"frobnicate\"".to_string(),
                "/etc/pen.cfg:5: acl: expected an access list number 0-9, got \"12\"".to_string(),
            ]
        );
        assert_eq!(c.connect_timeout_secs, 9);
        assert_eq!(c.blacklist_secs, 44);
    }

    #[test]
    fn apply_text_with_hands_runtime_lines_over_in_order() {
        let mut c = Config::default();
        let mut seen = Vec::new();
        let errs = apply_text_with(
            &mut c,
            "timeout 4\ninclude /etc/more.cfg\nserver 0 address 10.0.0.1 blacklist 5\nservers\n",
            "f",
            |cfg, cmd| {
                seen.push((cfg.connect_timeout_secs, cmd.to_string()));
                if matches!(cmd, Command::Servers) {
                    Err(LineProblem::Refused(
                        "servers: not allowed in a config file".into(),
                    ))
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(
            seen,
            vec![
                (4, "include /etc/more.cfg".to_string()),
                (4, "server 0 address 10.0.0.1 blacklist 5".to_string()),
                (4, "servers".to_string()),
            ]
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "f:4: servers: not allowed in a config file"
        );
        assert_eq!(c.servers.len(), 1);
    }

    #[test]
    fn apply_file_follows_includes_and_collects_runtime() {
        let files = std::collections::HashMap::from([
            (
                "/etc/pen.cfg",
                "timeout 6\ninclude /etc/b.cfg\nserver 0 blacklist 9\n",
            ),
            (
                "/etc/b.cfg",
                "blacklist 7\nbogus\ninclude /etc/missing.cfg\n",
            ),
        ]);
        let mut c = Config::default();
        let out = apply_file(&mut c, std::path::Path::new("/etc/pen.cfg"), |p| {
            files
                .get(p.to_str().unwrap_or(""))
                .map(|s| s.to_string())
                .ok_or_else(|| "No such file or directory".to_string())
        });
        assert_eq!((c.connect_timeout_secs, c.blacklist_secs), (6, 7));
        let shown: Vec<String> = out.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "/etc/b.cfg:2: unknown command \"bogus\"".to_string(),
                "/etc/b.cfg:3: include: cannot read /etc/missing.cfg: No such file or directory"
                    .to_string(),
            ]
        );
        assert_eq!(out.runtime.len(), 1);
        assert_eq!(out.runtime[0].to_string(), "server 0 blacklist 9");
    }

    #[test]
    fn include_loop_is_stopped() {
        let mut c = Config::default();
        let mut reads = 0;
        let out = apply_file(&mut c, std::path::Path::new("/a"), |_| {
            reads += 1;
            Ok::<_, std::io::Error>("idlers 1\ninclude /a\n".to_string())
        });
        assert_eq!(reads, INCLUDE_DEPTH_MAX);
        assert_eq!(out.errors.len(), 1);
        assert!(
            matches!(&out.errors[0].problem, LineProblem::IncludeTooDeep { path } if path.as_os_str() == "/a"),
            "{:?}",
            out.errors[0]
        );
        assert!(out.errors[0].to_string().contains("include loop"));
    }

    #[test]
    fn line_errors_keep_the_command_or_apply_error() {
        let mut c = Config::default();
        let errs = apply_text(&mut c, "blacklist soon\nacl 12 permit 10.0.0.1\n", "f.cfg");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            matches!(&errs[0].problem, LineProblem::Command(crate::ctl::command::CommandError::Invalid { command, .. }) if command == "blacklist"),
            "{:?}",
            errs[0]
        );
        assert_eq!(
            errs[0].to_string(),
            format!("f.cfg:1: {}", std::error::Error::source(&errs[0]).unwrap())
        );
        assert!(
            matches!(
                &errs[1].problem,
                LineProblem::Command(_) | LineProblem::Apply(_)
            ),
            "{:?}",
            errs[1]
        );
        assert!(
            errs[1].to_string().starts_with("f.cfg:2: acl: "),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn unreadable_top_file_is_line_zero() {
        let mut c = Config::default();
        let out = apply_file(&mut c, std::path::Path::new("/nope"), |_| {
            Err::<String, _>("denied")
        });
        assert_eq!(
            out.errors[0].to_string(),
            "/nope:0: cannot read config file: denied"
        );
        assert_eq!(c, Config::default());
    }

    fn busy_config() -> Config {
        let mut c = Config::default();
        let text = "acl 0 permit 10.0.0.0 255.0.0.0\nacl 0 deny 2001:db8::/48\nacl 3 permit country SE\n\
            ascii\nblacklist 12\nclient_acl 0\ncontrol_acl 3\ntarpit_acl 3\ndebug 2\nhash\nhttp\n\
            log 10.0.0.5:9999\nroundrobin\nserver 0 address 10.0.0.1 port 80 max 5 hard 6 weight 2 prio 3\n\
            server 2 acl 3 address web.example port 81\nserver 3 address /run/s.sock\n\
            stubborn\ntcp_fastclose down\ntcp_nodelay\ntimeout 4\ntracking 99\nweb_stats /tmp/w.html\n\
            weight\nprio\nabort_on_error\nkeepalive\ntransparent\ndummy\npeek\nidle_timeout 11\nudp_flow_idle 7\nworker_threads 3\ndrain_timeout 5\nupgrade_socket /run/p.up\n\
            pending_max 12\nidlers 2\nconn_max 900\nclients_max 5000\nsource 10.0.0.254\n\
            dsr_if eth1\ndsr_ip 10.0.0.100\nselect\nssl_ciphers HIGH\nssl_option no_tlsv1\n\
            ssl_option cipher_server_preference\nssl_sni_path /etc/sni\nssl_ocsp_response /etc/o\n\
            ssl_client_renegotiation_interval 77\n";
        let errs = apply_text(&mut c, text, "busy");
        assert!(errs.is_empty(), "{errs:?}");
        c
    }

    #[test]
    fn write_config_round_trips_command_settable_fields() {
        for cfg in [Config::default(), busy_config()] {
            let text = write_config(&cfg);
            let mut back = Config::default();
            let errs = apply_text(&mut back, &text, "written");
            assert!(errs.is_empty(), "{errs:?}\n{text}");
            assert_eq!(back, cfg, "{text}");
        }
    }

    #[test]
    fn proxy_protocol_settings_apply_and_round_trip_through_write() {
        let mut c = Config::default();
        assert!(
            !write_config(&c).contains("proxy"),
            "C Pen's file when unset"
        );
        assert_eq!(ok(&mut c, "proxy_protocol v1"), Applied::Config);
        assert_eq!(ok(&mut c, "proxy_protocol"), Applied::Runtime);
        ok(&mut c, "server 0 address 10.0.0.1 port 80");
        ok(&mut c, "server 1 address 10.0.0.2 port 80 proxy v2");
        ok(&mut c, "server 2 address 10.0.0.3 port 80 proxy off");
        assert_eq!(c.proxy_for(Some(0)), SendProxy::V1);
        assert_eq!(c.proxy_for(Some(1)), SendProxy::V2);
        assert_eq!(c.proxy_for(Some(2)), SendProxy::Off);
        assert_eq!(c.proxy_for(None), SendProxy::V1, "emergency/abuse: global");
        assert_eq!(ok(&mut c, "accept_proxy any timeout 2"), Applied::Config);
        assert_eq!(ok(&mut c, "accept_proxy"), Applied::Runtime);
        assert_eq!(c.accept_proxy, Some(crate::proxyproto::Accept::Any));
        assert_eq!(c.accept_proxy_timeout_secs, 2);
        let text = write_config(&c);
        assert!(text.contains("\nproxy_protocol v1\n"), "{text}");
        assert!(
            text.contains(" proxy v2\n") && text.contains(" proxy off\n"),
            "{text}"
        );
        assert!(text.contains("\naccept_proxy any timeout 2\n"), "{text}");
        let mut back = Config::default();
        assert!(apply_text(&mut back, &text, "written").is_empty());
        assert_eq!(back, c, "{text}");
        ok(&mut c, "server 1 proxy default");
        ok(&mut c, "accept_proxy off");
        assert_eq!(c.proxy_for(Some(1)), SendProxy::V1);
        assert_eq!((c.accept_proxy, c.accept_proxy_timeout_secs), (None, 2));
        let e = apply(
            &mut c,
            &Command::AcceptProxy(Some(AcceptProxyCmd {
                mode: None,
                timeout: Some(0),
            })),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("accept_proxy: expected"), "{e}");
    }

    #[test]
    fn upgrade_is_never_written_and_its_settings_only_when_set() {
        let mut c = Config::default();
        assert_eq!(c.drain_timeout_secs, crate::upgrade::DEFAULT_DRAIN_TIMEOUT);
        for line in ["upgrade", "drain_timeout", "upgrade_socket"] {
            assert!(!write_config(&c).contains(line), "{line}");
        }
        assert_eq!(ok(&mut c, "upgrade"), Applied::Config);
        assert!(c.upgrade);
        ok(&mut c, "drain_timeout 0");
        ok(&mut c, "upgrade_socket /run/pen.up");
        assert_eq!(c.drain_timeout_secs, 0);
        let text = write_config(&c);
        assert!(
            !text.contains("\nupgrade\n"),
            "a written file must not upgrade: {text}"
        );
        assert!(text.contains("\ndrain_timeout 0\n"), "{text}");
        assert!(text.contains("\nupgrade_socket /run/pen.up\n"), "{text}");
    }

    #[test]
    fn worker_threads_is_stored_checked_and_written_only_when_not_the_default() {
        let mut c = Config::default();
        assert_eq!(c.worker_threads, 1);
        assert!(!write_config(&c).contains("worker_threads"));
        assert_eq!(ok(&mut c, "worker_threads 8"), Applied::Config);
        assert_eq!(c.worker_threads, 8);
        assert_eq!(
            c.worker_threads_in_force, None,
            "the daemon sets it, not apply"
        );
        assert!(write_config(&c).contains("\nworker_threads 8\n"));
        for n in [0, 1025] {
            assert_eq!(
                apply(&mut c, &Command::WorkerThreads(Some(n)))
                    .unwrap_err()
                    .to_string(),
                format!("worker_threads: expected a number of threads from 1 to 1024, got \"{n}\"")
            );
        }
        assert_eq!(c.worker_threads, 8, "a bad value changes nothing");
        ok(&mut c, "worker_threads 1");
        assert!(!write_config(&c).contains("worker_threads"));
    }

    #[test]
    fn write_config_is_idempotent_when_reread_on_hup() {
        let cfg = busy_config();
        let text = write_config(&cfg);
        let mut again = cfg.clone();
        assert!(apply_text(&mut again, &text, "hup").is_empty());
        assert_eq!(again, cfg, "re-reading must not duplicate ACL entries");
    }

    #[test]
    fn write_config_header_carries_cli_only_settings() {
        let mut cfg = busy_config();
        cfg.udp = true;
        cfg.foreground = true;
        cfg.user = Some("pen user".into());
        cfg.control = Some("127.0.0.1:10000".into());
        cfg.listen = Some(ListenAddr::Inet("[::1]:8080".parse().unwrap()));
        let text = write_config(&cfg);
        let header = text.lines().nth(1).unwrap();
        assert!(header.starts_with("# pen "), "{header}");
        assert!(header.contains("-u 'pen user'"), "{header}");
        assert!(header.contains("-C 127.0.0.1:10000"), "{header}");
        assert!(header.contains("-U") && header.contains("-f"), "{header}");
        assert!(header.ends_with(" [::1]:8080"), "{header}");
    }

    #[test]
    fn shell_word_quotes_what_a_shell_would_split() {
        assert_eq!(shell_word("/tmp/a"), "/tmp/a");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
