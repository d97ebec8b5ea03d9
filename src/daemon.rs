//! Wires configuration, listeners, signals and the proxy together.
//!
//! Start-up order (C Pen's, except that the listener is opened before detaching so that its
//! errors reach the terminal): `-F` file → command-line backends over slots 0..n-1 → resolve
//! host names (once, first getaddrinfo result) → balancer → open the listener → daemonize
//! unless `-f` → pid file → chroot / drop privileges → tokio runtime (`worker_threads`:
//! current_thread for 1, the default) → start-up runtime
//! commands (`-O "server 0 blacklist 10"`, queries) through the control plane → serve until
//! SIGTERM, SIGINT or `exit` (clean exit, pid file removed). The `-C` control socket is opened
//! with the listener (refused as root without `-u`, as C Pen). SIGHUP re-reads the `-F` file,
//! SIGUSR1 writes the statistics (`ctl::server`); SIGPIPE is ignored.
//!
//! Logs go where [`crate::logging`] decides (terminal, file, journald, syslog once
//! daemonized); systemd hears READY/RELOADING/STOPPING through [`crate::notify`].
//!
//! Binary upgrade ([`crate::upgrade`], IO in `daemon/upgrade.rs`): with `-p` or
//! `upgrade_socket` pen also opens a hand-over socket with the listener. `-O upgrade` takes
//! the running pen's sockets from it instead of opening them (before anything else, so any
//! error leaves that pen alone), serves, writes the pid file and says `ready`; the running
//! pen then stops accepting, tells systemd the new `MAINPID`, drains (`drain_timeout`) and
//! exits, leaving the pid file and the hand-over socket to the new pen.

use std::ffi::CString;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::{self, Cli};
use crate::config::{BackendAddr, Config, HostSpec, ListenAddr, ServerConfig};
use crate::ctl::apply::apply_file;
use crate::ctl::command::Command;
use crate::ctl::server::{self as ctl_server, Control, Effects};
use crate::proxy::sockets;
use crate::proxy::tcp::{self, ConnTable, Limits, Listener};
use crate::proxy::transparent;
use crate::proxy::{Shared, SharedState};
use crate::sys;

#[path = "daemon/upgrade.rs"]
mod upgrade_io;

/// A start-up or run-time failure of the daemon. Displays one line naming the offending input;
/// the cause (the command-line error, the TLS error, the OS error) is kept as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The command line or `-F` file, checked once the file was applied.
    #[error(transparent)]
    Cli(#[from] cli::CliError),
    /// Certificates and keys (`-E`, `-K`, ...), read before privileges are dropped.
    #[error(transparent)]
    Tls(#[from] crate::proxy::tls::TlsError),
    /// An OS call failed: `what` names the file, address or socket (`pen: cannot listen on
    /// 127.0.0.1:80`), `source` is the OS error.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The `-C` value is not a control address.
    #[error("pen: -C: {0}")]
    Control(#[source] ctl_server::ControlAddrError),
    /// The `prometheus ADDR` endpoint could not be opened at start-up.
    #[error("pen: prometheus {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: ctl_server::MetricsError,
    },
    /// The `-l` request log could not be opened.
    #[error("pen: -l {target}: {source}")]
    Log {
        target: String,
        #[source]
        source: crate::reqlog::LogError,
    },
    /// A host name that does not resolve (`None`: it resolved to no address).
    #[error(
        "pen: cannot resolve host name {host:?} of the {what}: {}; give an IP address or a name that resolves",
        source.as_ref().map_or_else(|| "no address found".to_string(), ToString::to_string)
    )]
    Resolve {
        host: String,
        what: String,
        #[source]
        source: Option<io::Error>,
    },
    /// A server slot the balancer does not have.
    #[error("pen: {0}")]
    Server(#[source] crate::select::ServerIndexError),
    /// The `-F` file has bad lines: the first, and how many more.
    #[error(
        "pen: {first}{}",
        match more { 0 => String::new(), 1 => " (and 1 more bad line)".to_string(), n => format!(" (and {n} more bad lines)") }
    )]
    ConfigFile {
        #[source]
        first: crate::ctl::apply::LineError,
        more: usize,
    },
    /// A setting pen cannot use; the message names it and what would be accepted.
    #[error("{0}")]
    Setup(String),
}

fn err(message: impl Into<String>) -> DaemonError {
    DaemonError::Setup(message.into())
}

/// `map_err` for an OS error while doing `what`.
fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// A listening socket opened before the runtime exists (and before forking).
#[derive(Debug)]
pub(crate) enum OpenListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
    Udp(std::net::UdpSocket),
    /// DSR mode (`dsr_if IF`): the raw socket on the DSR interface, opened while still root.
    #[cfg(target_os = "linux")]
    Dsr(Box<crate::link::afpacket::AfPacket>),
}

/// Runs pen: see the module doc. Returns after a clean SIGTERM/SIGINT exit, or with the first
/// fatal error (start-up errors are returned before daemonizing).
pub fn run(cli: Cli) -> Result<(), DaemonError> {
    ignore_sigpipe();
    let Cli {
        mut config,
        servers,
        runtime_commands,
        ..
    } = cli;
    init_logging(config.debug, config.foreground);

    let mut deferred = runtime_commands;
    if let Some(path) = config.config_file.clone() {
        deferred.extend(read_config_file(&mut config, &path)?);
    }
    cli::finish_startup(&mut config, &servers)?;
    warn_unsupported(&config);
    crate::proxy::resources::check_fd_limit(&config);

    let mut shared = build_shared(config)?;
    if !shared.config.udp {
        // Certificates are read now, before chroot and privilege drop, with clear errors.
        shared.io.tls = crate::proxy::tls::startup(&shared.config.tls)?;
    }
    let pid_file = match &shared.config.pid_file {
        Some(p) => Some(absolute(p)?),
        None => None,
    };
    let handover_path =
        crate::upgrade::socket_path(shared.config.upgrade_socket.as_deref(), pid_file.as_deref());
    // `-O upgrade`: the running pen's sockets, checked against this command line, before
    // anything else is opened; any error leaves the running pen as it is.
    let mut taken = if shared.config.upgrade {
        Some(upgrade_io::take_over(
            &shared.config,
            handover_path.clone(),
        )?)
    } else {
        None
    };
    let listener = match taken.as_mut().map(|t| (t.listener.take(), t.xdp.take())) {
        Some((Some(l), _)) => l,
        Some((None, xdp)) => open_listener_with(&shared.config, xdp)?,
        None => open_listener(&shared.config)?,
    };
    report_bound_listener(&mut shared.config, &listener);
    if let Some(l) = &shared.config.log {
        crate::reqlog::reopen(Some(l)).map_err(|source| DaemonError::Log {
            target: l.clone(),
            source,
        })?;
    }
    let control = match (
        shared.config.control.clone(),
        taken.as_mut().and_then(|t| t.control.take()),
    ) {
        (Some(_), Some(l)) => Some(l),
        (Some(c), None) => {
            let l = open_control(&c, &shared.config)?;
            if let Some(bound) = report_bound_control(&c, &l) {
                shared.config.control = Some(bound.to_string());
            }
            Some(l)
        }
        (None, _) => None,
    };
    let handover = match (
        taken.as_mut().and_then(|t| t.handover.take()),
        &handover_path,
    ) {
        (Some(l), _) => Some(l),
        (None, Some(p)) => Some(upgrade_io::open_handover(p)?),
        (None, None) => None,
    };
    let mut passable = upgrade_io::Passable::default();
    let keep = |e: io::Error| io_err("pen: cannot keep a copy of a socket for upgrades")(e);
    passable
        .set_listen(&listener, &shared.config)
        .map_err(keep)?;
    if let Some(c) = &control {
        passable.set_control(c).map_err(keep)?;
    }
    if let (Some(h), Some(p)) = (&handover, &handover_path) {
        passable.set_handover(h, p).map_err(keep)?;
    }
    if !shared.config.foreground {
        daemonize()?;
    }
    // From the pid file on, a SIGTERM must stop pen cleanly even if the runtime is not up yet:
    // the handled signals wait until `serve_async` has installed their handlers.
    sys::process::hold_handled_signals().map_err(io_err(
        "pen: cannot hold signals until their handlers are installed",
    ))?;
    // After an upgrade the pid file is written once the old pen stopped accepting (opened now,
    // while pen may still write there).
    let mut pending_pid_file = None;
    if let Some(p) = &pid_file {
        let what = || format!("pen: cannot write pid file {}", p.display());
        if taken.is_some() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
                .map_err(io_err(what()))?;
            pending_pid_file = Some((p.clone(), f));
        } else {
            std::fs::write(p, format!("{}\n", std::process::id())).map_err(io_err(what()))?;
        }
    }
    let upgrade = Upgrade {
        passable: Arc::new(Mutex::new(passable)),
        handover,
        new_side: taken.map(|t| (t.stream, t.old_pid, pending_pid_file)),
    };
    let result = drop_privileges(&shared.config)
        .and_then(|()| serve(shared, listener, control, deferred, upgrade));
    if let Some(p) = &pid_file {
        upgrade_io::remove_pid_file_if_mine(p);
    }
    if let Some(p) = &handover_path
        && !HANDED_OVER.load(std::sync::atomic::Ordering::SeqCst)
    {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// Set once this pen handed its sockets to a new one: the hand-over socket's path is the new
/// pen's now.
static HANDED_OVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The binary-upgrade parts `serve` needs (see [`upgrade_io`]).
struct Upgrade {
    /// Copies of the sockets to hand over.
    passable: Arc<Mutex<upgrade_io::Passable>>,
    /// The hand-over socket (`None`: no `-p` nor `upgrade_socket`).
    handover: Option<std::os::unix::net::UnixListener>,
    /// This pen took over from a running one: the connection to it, its pid, the pid file to
    /// write once it stopped accepting.
    new_side: Option<NewSide>,
}

/// The connection to the old pen, its pid, and the pid file to write once it stopped.
type NewSide = (
    std::os::unix::net::UnixStream,
    u32,
    Option<(PathBuf, std::fs::File)>,
);

/// Listening on port 0 lets the kernel pick a free port; pen then says which one on stderr
/// (`pen: listening on 127.0.0.1:40001`) before daemonizing, and uses it as its listen address
/// (so the reports show it). Nothing is printed for a port given explicitly (as C Pen).
fn report_bound_listener(config: &mut Config, listener: &OpenListener) {
    let Some(ListenAddr::Inet(asked)) = &config.listen else {
        return;
    };
    if asked.port() != 0 || config.dsr_if.is_some() {
        return;
    }
    let bound = match listener {
        OpenListener::Tcp(l) => l.local_addr(),
        OpenListener::Udp(u) => u.local_addr(),
        _ => return,
    };
    if let Ok(bound) = bound {
        eprintln!("pen: listening on {bound}");
        config.listen = Some(ListenAddr::Inet(bound));
        config.listen_given = Some(bound.to_string());
    }
}

/// As [`report_bound_listener`] for `-C` on port 0 (`pen: control port on 127.0.0.1:40002`);
/// returns the bound address, which the `control` command then shows.
fn report_bound_control(spec: &str, listener: &ctl_server::StdListener) -> Option<SocketAddr> {
    let ctl_server::StdListener::Tcp(l) = listener else {
        return None;
    };
    match ctl_server::ControlAddr::parse(spec) {
        Ok(ctl_server::ControlAddr::Tcp(a)) if a.port() == 0 => {}
        _ => return None,
    }
    let bound = l.local_addr().ok()?;
    eprintln!("pen: control port on {bound}");
    Some(bound)
}

/// Applies the `-F` file; any bad line is fatal at start-up (`file:line: message`). Returns the
/// file's runtime commands (queries, `server N blacklist T`, ...).
fn read_config_file(config: &mut Config, path: &Path) -> Result<Vec<Command>, DaemonError> {
    let outcome = apply_file(config, path, |p| std::fs::read_to_string(p));
    if let Some(first) = outcome.errors.first() {
        return Err(DaemonError::ConfigFile {
            first: first.clone(),
            more: outcome.errors.len() - 1,
        });
    }
    Ok(outcome.runtime)
}

/// Opens the `-C` control socket. As C Pen, pen refuses it when running as root without
/// `-u` (`-u root` forces it): anyone who can reach it can reconfigure pen.
fn open_control(spec: &str, cfg: &Config) -> Result<ctl_server::StdListener, DaemonError> {
    if sys::process::is_root() && cfg.user.is_none() {
        return Err(err(format!(
            "pen: refusing to open the control socket -C {spec} as root; add -u user (-u root forces it)"
        )));
    }
    let addr = ctl_server::ControlAddr::parse(spec).map_err(DaemonError::Control)?;
    if let Some(w) = ctl_server::exposure_warning(&addr, cfg) {
        eprintln!("{w}");
    }
    ctl_server::open(&addr).map_err(io_err(format!(
        "pen: cannot open the control socket {spec}"
    )))
}

fn warn_unsupported(cfg: &Config) {
    for what in unsupported(cfg) {
        tracing::warn!("{what} is not implemented in this build yet; ignored");
    }
}

/// The settings `cfg` combines that pen does not act on (each is ignored with a warning).
fn unsupported(cfg: &Config) -> Vec<&'static str> {
    let accept_proxy = cfg.accept_proxy.is_some();
    let unix = matches!(cfg.listen, Some(ListenAddr::Unix(_)));
    [
        (
            "-H / http (X-Forwarded-For) with -U (UDP)",
            cfg.http && cfg.udp,
        ),
        (
            "-E (TLS termination) with -U (UDP)",
            cfg.tls.cert.is_some() && cfg.udp,
        ),
        (
            "accept_proxy (PROXY protocol from clients) with -U (UDP)",
            accept_proxy && cfg.udp,
        ),
        (
            "accept_proxy (PROXY protocol from clients) in DSR mode (dsr_if)",
            accept_proxy && cfg.dsr_if.is_some(),
        ),
        (
            "accept_proxy (PROXY protocol from clients) on a Unix-socket listener",
            accept_proxy && unix,
        ),
    ]
    .into_iter()
    .filter_map(|(what, set)| set.then_some(what))
    .collect()
}

/// Resolves every backend host name (and the listen host) and builds the balancer.
fn build_shared(mut config: Config) -> Result<Shared, DaemonError> {
    if let Some(ListenAddr::Name { host, port }) = &config.listen {
        let sa = resolve(host, *port, "listen address")?;
        config.listen = Some(ListenAddr::Inet(sa));
    }
    let mut resolved: Vec<(usize, ServerConfig, BackendAddr)> = Vec::new();
    for (i, s) in config.servers.iter().enumerate() {
        if let Some(HostSpec::Name(name)) = &s.host {
            let sa = resolve(name, s.port, &format!("server {i}"))?;
            resolved.push((i, s.clone(), BackendAddr::Inet(sa)));
        }
    }
    let emergency = special(config.emergency.as_ref(), "emergency server (-e)")?;
    let abuse = special(config.abuse.as_ref(), "abuse server (-B)")?;
    let mut shared = Shared::new(config);
    for (i, s, addr) in resolved {
        shared
            .balancer
            .set_server(i, s, Some(addr))
            .map_err(DaemonError::Server)?;
    }
    if let Some(e) = emergency {
        shared.balancer.set_emergency(Some(e));
    }
    if let Some(a) = abuse {
        shared.balancer.set_abuse(Some(a));
    }
    Ok(shared)
}

/// The address of an emergency or abuse slot, resolved.
fn special(
    s: Option<&ServerConfig>,
    what: &str,
) -> Result<Option<(ServerConfig, BackendAddr)>, DaemonError> {
    let Some(s) = s else { return Ok(None) };
    let addr = match &s.host {
        Some(HostSpec::Ip(ip)) => BackendAddr::Inet(SocketAddr::new(*ip, s.port)),
        Some(HostSpec::Unix(p)) => BackendAddr::Unix(p.clone()),
        Some(HostSpec::Name(name)) => BackendAddr::Inet(resolve(name, s.port, what)?),
        None => return Ok(None),
    };
    Ok(Some((s.clone(), addr)))
}

/// First getaddrinfo result for `host`, as C Pen does.
fn resolve(host: &str, port: u16, what: &str) -> Result<SocketAddr, DaemonError> {
    let fail = |source: Option<io::Error>| DaemonError::Resolve {
        host: host.to_string(),
        what: what.to_string(),
        source,
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| fail(Some(e)))?
        .next()
        .ok_or_else(|| fail(None))
}

/// Opens the listening socket named by `config.listen` (TCP, Unix or, with `-U`, UDP).
pub(crate) fn open_listener(config: &Config) -> Result<OpenListener, DaemonError> {
    open_listener_with(config, None)
}

/// [`open_listener`]; in DSR mode the XDP program goes into `xdp`, the link a running pen
/// handed over (binary upgrade), if given.
fn open_listener_with(
    config: &Config,
    xdp: Option<std::os::fd::OwnedFd>,
) -> Result<OpenListener, DaemonError> {
    #[cfg(not(target_os = "linux"))]
    drop(xdp);
    #[cfg(target_os = "linux")]
    if config.dsr_if.is_some() {
        return crate::link::dsr::open_with(config, xdp)
            .map(|l| OpenListener::Dsr(Box::new(l)))
            .map_err(io_err("pen"));
    }
    #[cfg(not(target_os = "linux"))]
    if let Some(dsr) = &config.dsr_if {
        return Err(err(format!(
            "pen: DSR mode (dsr_if {dsr}) needs Linux (AF_PACKET); remove dsr_if to run as a proxy"
        )));
    }
    let Some(listen) = &config.listen else {
        return Err(err(
            "pen: no listen address: give [host:]port on the command line or `listen` in the -F file",
        ));
    };
    let fail = |e: io::Error| io_err(format!("pen: cannot listen on {listen}"))(e);
    match listen {
        ListenAddr::Inet(sa) if config.udp => {
            sockets::bind_udp(*sa).map(OpenListener::Udp).map_err(fail)
        }
        ListenAddr::Inet(sa) => sockets::listen_tcp(*sa, config.backlog)
            .map(OpenListener::Tcp)
            .map_err(fail),
        ListenAddr::Unix(_) if config.udp => Err(err(format!(
            "pen: cannot listen on {listen}: UDP mode (-U) needs an IP address and port, not a Unix socket path"
        ))),
        ListenAddr::Unix(p) => sockets::listen_unix(p, config.backlog)
            .map(OpenListener::Unix)
            .map_err(fail),
        ListenAddr::Name { .. } => Err(err(format!(
            "pen: listen address {listen} was not resolved before opening it"
        ))),
    }
}

fn absolute(p: &Path) -> Result<PathBuf, DaemonError> {
    std::path::absolute(p).map_err(io_err(format!("pen: bad pid file path {}", p.display())))
}

/// The `-d` level as a tracing filter: 0 = warnings, 1 = info, 2 = debug, 3+ = trace.
fn level_filter(debug: u32) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match debug {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

type LevelHandle = tracing_subscriber::reload::Handle<
    tracing_subscriber::filter::LevelFilter,
    tracing_subscriber::Registry,
>;

/// The handle `debug N` uses to change the log level at run time.
static LOG_LEVEL: std::sync::OnceLock<LevelHandle> = std::sync::OnceLock::new();

/// Terminal, file, journald or syslog: see [`crate::logging`].
fn init_logging(debug: u32, foreground: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(level_filter(debug));
    let fmt = crate::logging::layers(crate::logging::mode_for_process(foreground));
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = LOG_LEVEL.set(handle);
    }
}

/// `debug N` at run time.
fn set_log_level(debug: u32) {
    if let Some(h) = LOG_LEVEL.get()
        && let Err(e) = h.modify(|f| *f = level_filter(debug))
    {
        tracing::warn!("cannot change the log level: {e}");
    }
}

fn ignore_sigpipe() {
    sys::process::ignore_sigpipe();
}

/// Detaches from the terminal: fork (the parent exits 0), setsid, stdin/stdout to /dev/null.
/// stderr stays where it was so that `pen ... 2>file` keeps the log. Must run before any
/// thread is started (no tokio runtime yet).
fn daemonize() -> Result<(), DaemonError> {
    sys::process::daemonize().map_err(io_err("pen"))?;
    crate::logging::daemonized();
    Ok(())
}

/// `-j dir` (chroot) then `-u user` (setgid/setuid), after the listener is open.
fn drop_privileges(cfg: &Config) -> Result<(), DaemonError> {
    let user = match &cfg.user {
        Some(name) => Some(lookup_user(name)?),
        None => None,
    };
    if let Some(dir) = &cfg.chroot {
        cstring(dir.as_os_str().as_encoded_bytes(), "chroot directory")?;
        sys::process::chroot(dir)
            .map_err(io_err(format!("pen: cannot chroot to {}", dir.display())))?;
    }
    if let Some((name, uid, gid)) = user {
        // `transparent` needs CAP_NET_ADMIN for every upstream connection: keep that one
        // capability across the switch (no other thread exists yet).
        let keep_net_admin = cfg.transparent && uid != 0;
        if keep_net_admin && let Err(e) = transparent::keep_caps_across_setuid() {
            tracing::warn!("transparent: cannot keep CAP_NET_ADMIN across -u {name}: {e}");
        }
        // Supplementary groups dropped, then gid before uid.
        sys::process::switch_user(uid, gid)
            .map_err(io_err(format!("pen: cannot switch to user {name:?}")))?;
        if keep_net_admin && let Err(e) = transparent::retain_cap_net_admin() {
            tracing::warn!(
                "transparent: CAP_NET_ADMIN lost when switching to user {name}: {e}; \
                 transparent upstream connections will fail"
            );
        }
    }
    Ok(())
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, DaemonError> {
    CString::new(bytes).map_err(|_| err(format!("pen: the {what} contains a NUL byte")))
}

fn lookup_user(name: &str) -> Result<(String, u32, u32), DaemonError> {
    cstring(name.as_bytes(), "user name")?;
    match sys::process::lookup_user(name) {
        Ok(Some((uid, gid))) => Ok((name.to_string(), uid, gid)),
        Ok(None) => Err(err(format!(
            "pen: unknown user {name:?} for -u; expected a name from the password database"
        ))),
        Err(e) => Err(io_err(format!(
            "pen: cannot read the password database for -u {name:?}"
        ))(e)),
    }
}

/// What the control plane can ask of the running daemon.
struct DaemonEffects {
    exit: Arc<tokio::sync::Notify>,
    /// `listen ADDR`: the new listener, opened here, for the main loop to swap in.
    relisten: tokio::sync::mpsc::UnboundedSender<OpenListener>,
    shared: SharedState,
    limits: Limits,
    /// Current sizes of the two semaphores (`conn_max`, `pending_max`).
    sizes: Mutex<(usize, usize)>,
    conns: Arc<ConnTable>,
}

/// Grows `sem` by adding permits, or shrinks it by forgetting free ones (permits held by open
/// connections come back and stay usable: the table shrinks as far as it can now). Returns the
/// size now in effect.
fn resize(sem: &tokio::sync::Semaphore, old: usize, new: usize) -> usize {
    let new = new.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    if new >= old {
        sem.add_permits(new - old);
        new
    } else {
        old - sem.forget_permits(old - new)
    }
}

impl Effects for DaemonEffects {
    fn exit(&self) {
        self.exit.notify_one();
    }

    fn close_connection(&self, n: usize) -> bool {
        self.conns.close(n) || crate::proxy::udp::close_flow(&self.shared, n)
    }

    fn set_limits(&self, conn_max: usize, pending_max: usize) {
        let mut sizes = self
            .sizes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (c, p) = *sizes;
        *sizes = (
            resize(&self.limits.conn_slots, c, conn_max),
            resize(&self.limits.pending, p, pending_max),
        );
        if conn_max > c {
            crate::proxy::resources::warn_if_fds_short(&crate::proxy::lock(&self.shared).config);
        }
    }

    fn set_debug(&self, level: u32) {
        set_log_level(level);
    }

    fn reopen_log(&self, target: Option<&str>) -> Result<(), crate::reqlog::LogError> {
        crate::reqlog::reopen(target)
    }

    fn reopen_listener(&self, addr: &ListenAddr) -> Result<(), ctl_server::RelistenError> {
        let cfg = {
            let g = crate::proxy::lock(&self.shared);
            Config {
                listen: Some(addr.clone()),
                udp: g.config.udp,
                backlog: g.config.backlog,
                dsr_if: g.config.dsr_if.clone(),
                ..Config::default()
            }
        };
        let cfg = match addr {
            ListenAddr::Name { host, port } => Config {
                listen: Some(ListenAddr::Inet(resolve(host, *port, "listen address")?)),
                ..cfg
            },
            _ => cfg,
        };
        let l = open_listener(&cfg)?;
        self.relisten
            .send(l)
            .map_err(|_| ctl_server::RelistenError::ShuttingDown)
    }
}

/// Builds the runtime and serves until SIGTERM/SIGINT, `exit`, or a fatal listener error.
fn serve(
    mut shared: Shared,
    listener: OpenListener,
    control: Option<ctl_server::StdListener>,
    startup: Vec<Command>,
    upgrade: Upgrade,
) -> Result<(), DaemonError> {
    crate::ctl::server::check_web_stats(&shared.config);
    // `worker_threads` from -o/-O and -F is already applied (`run`); a later change is stored
    // for `write` and applies at the next start.
    let threads = shared.config.worker_threads;
    let mut builder = runtime_builder(threads);
    let rt = builder.enable_all().build().map_err(io_err(format!(
        "pen: cannot start the runtime ({threads} worker_threads)"
    )))?;
    shared.config.worker_threads_in_force = Some(threads);
    tracing::debug!("tokio runtime: {threads} worker thread(s)");
    let result = rt.block_on(serve_async(shared, listener, control, startup, upgrade));
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

/// `worker_threads N`: 1 → a current_thread runtime (one event loop, as C Pen), N > 1 → a
/// multi-thread runtime with N workers.
fn runtime_builder(threads: usize) -> tokio::runtime::Builder {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    }
}

async fn serve_async(
    shared: Shared,
    listener: OpenListener,
    control_listener: Option<ctl_server::StdListener>,
    startup: Vec<Command>,
    upgrade: Upgrade,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let sig = |k: SignalKind, name: &str| {
        signal(k).map_err(io_err(format!("pen: cannot install the {name} handler")))
    };
    let mut term = sig(SignalKind::terminate(), "SIGTERM")?;
    let mut int = sig(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = sig(SignalKind::hangup(), "SIGHUP")?;
    let mut usr1 = sig(SignalKind::user_defined1(), "SIGUSR1")?;
    // Held since before the pid file was written (`run`); this is the main thread, where
    // `block_on` runs this future, so the signals are delivered here from now on.
    sys::process::release_handled_signals()
        .map_err(io_err("pen: cannot release the held signals"))?;

    let mut listen_text = shared
        .config
        .listen
        .as_ref()
        .map_or_else(String::new, ToString::to_string);
    let config_file = shared.config.config_file.clone();
    let limits = Limits::new(&shared.config);
    let conns = shared.io.conns.clone();
    let exit = Arc::new(tokio::sync::Notify::new());
    let state: SharedState = Arc::new(Mutex::new(shared));
    let (relisten, mut relisten_rx) = tokio::sync::mpsc::unbounded_channel();
    let effects = DaemonEffects {
        exit: exit.clone(),
        relisten,
        shared: state.clone(),
        limits: limits.clone(),
        sizes: Mutex::new((
            limits.conn_slots.available_permits(),
            limits.pending.available_permits(),
        )),
        conns: conns.clone(),
    };
    let control = Control::new(state.clone(), Arc::new(effects));
    let metrics = crate::proxy::lock(&state).config.prometheus;
    let Upgrade {
        passable,
        handover,
        new_side,
    } = upgrade;
    // After an upgrade the old pen keeps its metrics port until it stopped accepting: this
    // one opens it then (below).
    if let Some(addr) = metrics.filter(|_| new_side.is_none()) {
        control
            .set_prometheus(Some(addr))
            .map_err(|source| DaemonError::Metrics { addr, source })?;
    }
    if !crate::proxy::lock(&state).config.udp {
        // `ssl_*` changes from the control socket or -F, and replaced certificate files.
        tokio::spawn(crate::proxy::tls::watch(
            state.clone(),
            Duration::from_secs(2),
        ));
    }

    // `-o`/`-O` and `-F` commands that act on running state run now, in order.
    for cmd in &startup {
        let reply = control.run(cmd).await;
        tracing::info!(
            "start-up command {:?}: {}",
            cmd.to_string(),
            reply.trim_end()
        );
    }
    let control_task = control_listener.map(|l| {
        let control = control.clone();
        tokio::spawn(async move {
            if let Err(e) = ctl_server::serve(l, control).await {
                tracing::error!("control socket stopped: {e}");
            }
        })
    });

    let spawn_listener = |l: OpenListener| {
        let (state, limits, conns) = (state.clone(), limits.clone(), conns.clone());
        tokio::spawn(serve_listener(l, state, limits, conns))
    };
    let mut server = spawn_listener(listener);
    let events = tokio::spawn(crate::proxy::watch_server_events(state.clone()));
    // Active health checks (`server N check ...`): idle unless a server has one.
    let checks = tokio::spawn(crate::proxy::health::run(state.clone()));
    tracing::info!(
        "pen {} listening on {listen_text}",
        env!("CARGO_PKG_VERSION")
    );
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let handover_task =
        handover.map(|h| tokio::spawn(upgrade_io::accept_loop(h, passable.clone(), ready_tx)));
    let ready_line = crate::notify::ready(&format!("listening on {listen_text}"));
    match new_side {
        None => crate::notify::notify(&ready_line),
        Some((stream, old_pid, pid_file)) => {
            // Serving: tell the old pen, then take the metrics port it frees.
            let control = control.clone();
            tokio::spawn(async move {
                upgrade_io::announce(stream, old_pid, pid_file).await;
                if let Some(addr) = metrics {
                    let mut opened = control.set_prometheus(Some(addr));
                    for _ in 0..20 {
                        if opened.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        opened = control.set_prometheus(Some(addr));
                    }
                    if let Err(e) = opened {
                        tracing::error!("prometheus {addr}: {e}");
                    }
                }
                crate::notify::notify(&ready_line);
            });
        }
    }
    let mut handed_over = None;
    let result = loop {
        tokio::select! {
            r = &mut server => break match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(io_err(format!("pen: listener {listen_text}"))(e)),
                Err(e) => Err(err(format!("pen: listener {listen_text}: task failed: {e}"))),
            },
            Some(r) = ready_rx.recv() => {
                handed_over = Some(r);
                break Ok(());
            }
            Some(l) = relisten_rx.recv() => {
                // `listen ADDR`: the old listener closes; open connections carry on.
                let cfg = crate::proxy::lock(&state).config.clone();
                let mut p = passable.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Err(e) = p.set_listen(&l, &cfg) {
                    tracing::warn!("cannot keep a copy of the new listener for upgrades: {e}");
                }
                drop(p);
                server.abort();
                server = spawn_listener(l);
                listen_text = lock_listen_text(&state);
                tracing::info!("now listening on {listen_text}");
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: exiting");
                break Ok(());
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting");
                break Ok(());
            }
            () = exit.notified() => {
                tracing::info!("exit command: exiting");
                break Ok(());
            }
            _ = hup.recv() => {
                // Reopen the request log (rotation), re-read -F, reload TLS: off the main
                // loop, so that signals and `exit` are handled meanwhile.
                crate::notify::notify(&crate::notify::reloading(crate::notify::monotonic_usec()));
                let ready = crate::notify::ready(&format!("listening on {listen_text}"));
                let (control, config_file, state) =
                    (control.clone(), config_file.clone(), state.clone());
                tokio::spawn(async move {
                    let log = crate::proxy::lock(&state).config.log.clone();
                    if let Err(e) = crate::reqlog::reopen(log.as_deref()) {
                        tracing::warn!("SIGHUP: request log: {e}");
                    }
                    match &config_file {
                        Some(path) => {
                            for problem in control.apply_config_file(path).await {
                                tracing::warn!("SIGHUP: {problem}");
                            }
                            let (n, in_force) = {
                                let g = crate::proxy::lock(&state);
                                (g.config.worker_threads, g.config.worker_threads_in_force)
                            };
                            if let Some(m) = in_force.filter(|m| *m != n) {
                                let note = crate::ctl::reply::worker_threads_pending(n, m);
                                tracing::info!("SIGHUP: {note}");
                            }
                        }
                        None => tracing::info!("SIGHUP: no -F file to re-read"),
                    }
                    reload_tls(&state);
                    crate::notify::notify(&ready);
                });
            }
            _ = usr1.recv() => control.usr1().await,
        }
    };
    if let Some(ready) = handed_over {
        // Stop accepting (TCP listener closed, io_uring accept cancelled, DSR raw socket
        // closed; UDP stops reading but keeps its socket for the replies of its flows), then
        // let the new pen know and finish what is open.
        let udp = crate::proxy::lock(&state).config.udp;
        if udp {
            crate::proxy::udp::stop_reading();
            // Flows the kernel fast path forwards come back to this pen's user space: their
            // clients' next datagrams go to the new pen, their answers still come here.
            let table = crate::proxy::lock(&state).io.udp_table.clone();
            if let Some(t) = table {
                let n = t.with_table_mut(crate::proxy::udp::FlowTable::withdraw_all);
                if n > 0 {
                    tracing::info!("upgrade: {n} UDP flow(s) taken back from the kernel fast path");
                }
            }
        } else {
            server.abort();
        }
        if let Some(t) = &control_task {
            t.abort();
        }
        if let Some(t) = &handover_task {
            t.abort();
        }
        if metrics.is_some()
            && let Err(e) = control.set_prometheus(None)
        {
            tracing::warn!("prometheus: {e}");
        }
        *passable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = upgrade_io::Passable::default();
        HANDED_OVER.store(true, std::sync::atomic::Ordering::SeqCst);
        crate::notify::notify(&format!(
            "MAINPID={}\nSTATUS=handed over to pen {}",
            ready.pid, ready.pid
        ));
        let new_pid = ready.pid;
        upgrade_io::answer_stopped(ready);
        let drain = Duration::from_secs(crate::proxy::lock(&state).config.drain_timeout_secs);
        tracing::info!(
            "upgrade: pen {new_pid} serves; finishing open connections (drain_timeout {} s)",
            drain.as_secs()
        );
        let deadline = tokio::time::Instant::now() + drain;
        loop {
            if upgrade_io::drained(&state, &conns) {
                tracing::info!("upgrade: all connections finished; exiting");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(
                    "upgrade: drain_timeout reached; closing {} connection(s) and exiting",
                    conns.len()
                );
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
    } else {
        crate::notify::notify(&crate::notify::stopping());
    }
    server.abort();
    events.abort();
    checks.abort();
    if let Some(t) = handover_task {
        t.abort();
    }
    result
}

/// SIGHUP: re-reads the TLS certificates, keys, CAs and OCSP responses (after the -F file).
/// A failure keeps the previous TLS configuration; open connections are never touched.
fn reload_tls(state: &SharedState) {
    let udp = crate::proxy::lock(state).config.udp;
    if udp {
        return;
    }
    match crate::proxy::tls::reload(state) {
        Ok(()) => tracing::info!("SIGHUP: TLS configuration re-read"),
        Err(e) => tracing::warn!("SIGHUP: TLS reload failed, keeping the previous one: {e}"),
    }
}

fn lock_listen_text(state: &SharedState) -> String {
    crate::proxy::lock(state)
        .config
        .listen
        .as_ref()
        .map_or_else(String::new, ToString::to_string)
}

/// Serves one listening socket (TCP, Unix or UDP) until it fails.
async fn serve_listener(
    listener: OpenListener,
    state: SharedState,
    limits: Limits,
    conns: Arc<ConnTable>,
) -> io::Result<()> {
    match listener {
        #[cfg(target_os = "linux")]
        OpenListener::Tcp(l) if crate::proxy::uring::use_uring(&state) => {
            crate::proxy::uring::serve(l, state, limits, conns).await
        }
        OpenListener::Tcp(l) => {
            let l = tokio::net::TcpListener::from_std(l)?;
            tcp::serve(Listener::Tcp(l), state, limits, conns).await
        }
        OpenListener::Unix(l) => {
            let l = sockets::unix_listener_to_tokio(l)?;
            tcp::serve(Listener::Unix(l), state, limits, conns).await
        }
        OpenListener::Udp(s) => {
            let s = tokio::net::UdpSocket::from_std(s)?;
            crate::proxy::udp::serve(s, state).await
        }
        #[cfg(target_os = "linux")]
        OpenListener::Dsr(link) => crate::link::dsr::serve_shared(*link, state).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_proxy_where_pen_cannot_read_a_header_is_named_as_ignored() {
        let mut cfg = Config {
            accept_proxy: Some(crate::proxyproto::Accept::Any),
            ..Config::default()
        };
        assert!(unsupported(&cfg).is_empty(), "a TCP listener reads it");
        cfg.udp = true;
        assert_eq!(
            unsupported(&cfg),
            ["accept_proxy (PROXY protocol from clients) with -U (UDP)"]
        );
        cfg.udp = false;
        cfg.listen = Some(ListenAddr::Unix("/run/pen.sock".into()));
        cfg.dsr_if = Some("eth1".into());
        assert_eq!(unsupported(&cfg).len(), 2, "{:?}", unsupported(&cfg));
        cfg.accept_proxy = None;
        assert!(unsupported(&cfg).is_empty());
    }

    #[test]
    fn unresolvable_backend_name_is_a_startup_error_naming_it() {
        let cfg = Config {
            servers: vec![ServerConfig {
                host: Some(HostSpec::Name("no-such-host.invalid".into())),
                port: 80,
                ..ServerConfig::default()
            }],
            ..Config::default()
        };
        let e = build_shared(cfg).unwrap_err();
        assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
        assert!(e.to_string().contains("server 0"), "{e}");
        assert!(
            matches!(&e, DaemonError::Resolve { host, .. } if host == "no-such-host.invalid"),
            "{e:?}"
        );
    }

    #[test]
    fn localhost_backend_resolves_to_an_address() {
        let cfg = Config {
            servers: vec![ServerConfig {
                host: Some(HostSpec::Name("localhost".into())),
                port: 8080,
                ..ServerConfig::default()
            }],
            ..Config::default()
        };
        let shared = build_shared(cfg).unwrap();
        let addr = shared
            .balancer
            .addr(crate::select::Target::Server(0))
            .cloned();
        match addr {
            Some(BackendAddr::Inet(sa)) => {
                assert!(sa.ip().is_loopback());
                assert_eq!(sa.port(), 8080);
            }
            other => panic!("localhost resolved to {other:?}"),
        }
    }

    #[test]
    fn listener_in_use_error_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let cfg = Config {
            listen: Some(ListenAddr::Inet(addr)),
            ..Config::default()
        };
        let e = open_listener(&cfg).unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        // The OS error is kept as the cause, not flattened into the text only.
        let DaemonError::Io { source, .. } = &e else {
            panic!("expected an IO error, got {e:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
        let cause = std::error::Error::source(&e).expect("a cause");
        assert_eq!(cause.to_string(), source.to_string());
    }

    #[test]
    fn command_line_and_tls_errors_keep_their_type() {
        let mut cfg = Config::default();
        let e: DaemonError = cli::finish_startup(&mut cfg, &[]).unwrap_err().into();
        assert!(
            matches!(&e, DaemonError::Cli(c) if c.show_usage()),
            "no listen address shows usage: {e:?}"
        );
        let tls = crate::config::TlsConfig {
            cert: Some("/nonexistent/pen-rs.pem".into()),
            ..Default::default()
        };
        let e: DaemonError = crate::proxy::tls::startup(&tls).unwrap_err().into();
        assert!(matches!(e, DaemonError::Tls(_)), "{e:?}");
        assert!(e.to_string().contains("/nonexistent/pen-rs.pem"), "{e}");
    }

    #[test]
    fn bad_config_file_line_is_fatal_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pen.cfg");
        std::fs::write(&f, "roundrobin\nno_such_command 1\nblacklist x\n").unwrap();
        let mut cfg = Config::default();
        let e = read_config_file(&mut cfg, &f).unwrap_err();
        assert!(
            e.to_string().contains(&format!("{}:2:", f.display())),
            "{e}"
        );
        assert!(e.to_string().ends_with(" (and 1 more bad line)"), "{e}");
        // The first bad line is kept as the cause, typed.
        let DaemonError::ConfigFile { first, more: 1 } = &e else {
            panic!("expected a config file error, got {e:?}");
        };
        assert_eq!(first.line, 2);
        assert!(matches!(
            first.problem,
            crate::ctl::apply::LineProblem::Command(_)
        ));
    }

    #[test]
    fn unknown_user_is_reported_by_name() {
        let e = lookup_user("no-such-user-pen-rs").unwrap_err();
        assert!(e.to_string().contains("no-such-user-pen-rs"), "{e}");
    }
}
