//! The control socket (`-C port|[addr:]port|/path`), config-file re-reads (`-F`, SIGHUP,
//! `include`), SIGUSR1 statistics and the Prometheus endpoint. IO only: every decision and
//! every reply comes from [`crate::ctl::reply`] and [`crate::stats`].
//!
//! Protocol (C Pen's): a client connects, sends one command line, reads the reply until pen
//! closes the connection. Unlike C Pen (which reads the socket synchronously in its event
//! loop), nothing here can stall the balancer:
//! - each control client is its own task; [`CLIENTS_MAX`] of them get [`READ_TIMEOUT`] to
//!   send their command, and while those are taken up to [`BUSY_CLIENTS_MAX`] more are served
//!   with the short [`BUSY_READ_TIMEOUT`] (penctl sends at once), so silent clients cannot
//!   lock penctl out; beyond both, clients are closed at once, without a reply;
//! - the command must be at most [`LINE_MAX`] bytes up to the first newline (or EOF); a silent
//!   client is dropped after its timeout, a longer line gets a one-line error;
//! - the reply is written with a [`WRITE_TIMEOUT`];
//! - the shared lock is held only while the command runs (no IO under the lock: host names
//!   are resolved and files are read before, files written after).
//!
//! `control_acl` is checked for TCP clients (Unix-socket clients always pass, as in C Pen).
//! TCP clients may not name files unless `control_any_file` ([`reply::refusal`]); `write` and
//! status pages are written to a temporary file that is then renamed over the target
//! ([`write_replacing`]), so a symlink at the target is replaced, never written through.
//! `-C port` alone listens on 127.0.0.1 only ([`ControlAddr::parse`]).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use crate::config::{Config, ListenAddr};
use crate::ctl::apply::{FileOutcome, apply_file};
use crate::ctl::command::{self, Command};
use crate::ctl::reply::{
    self, Action, Env, Outcome, Resolved, config_actions, error_line, names_to_resolve,
    sync_balancer, unresolved_names,
};
use crate::proxy::{SharedState, lock, now};
use crate::stats::{self, Snapshot};
use crate::sys::process::syslog_info;

/// Longest command line accepted (C Pen reads at most 4095 bytes).
pub const LINE_MAX: usize = 4095;
/// A control client must send its command within this time.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A control client must take the reply within this time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Control clients served at the same time with [`READ_TIMEOUT`].
pub const CLIENTS_MAX: usize = 16;
/// Control clients served beyond [`CLIENTS_MAX`], with [`BUSY_READ_TIMEOUT`]; more are closed
/// at once.
pub const BUSY_CLIENTS_MAX: usize = 240;
/// Time a control client served beyond [`CLIENTS_MAX`] has to send its command.
pub const BUSY_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Time allowed to resolve one host name of a `server N address NAME` command.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest HTTP request head the Prometheus endpoint reads.
pub const HTTP_HEAD_MAX: usize = 8192;

/// Where the control socket listens: `-C port` (127.0.0.1 only; C Pen listens on every
/// address), `-C addr:port` (`0.0.0.0:port` for every address), `-C [v6]:port`, or `-C /path`
/// (Unix socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Why a `-C` value is not a control address. Displays one line naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlAddrError {
    /// A host name where an IP address is needed.
    #[error(
        "bad control address {given:?}: {host:?} is a host name; expected an IP address (addr:port), a port or /path"
    )]
    HostName { given: String, host: String },
    /// Not an address at all; the cause says why.
    #[error("bad control address {given:?}: {source}; expected port, addr:port or /path")]
    Address {
        given: String,
        #[source]
        source: crate::config::AddrError,
    },
}

/// Why the Prometheus endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {source}")]
pub struct MetricsError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Why `listen ADDR` could not move the listener.
#[derive(Debug, thiserror::Error)]
pub enum RelistenError {
    /// The daemon behind this control plane cannot reopen its listener (tests).
    #[error("cannot listen on {0}: not supported by this daemon")]
    Unsupported(ListenAddr),
    /// Resolving or opening the new address failed.
    #[error(transparent)]
    Open(#[from] crate::daemon::DaemonError),
    /// pen is exiting: nobody takes the new listener.
    #[error("pen is shutting down")]
    ShuttingDown,
}

impl ControlAddr {
    /// Parses `-C`'s value (host names are not accepted: give an address). Without a host
    /// (`port` or `:port`) the socket is on 127.0.0.1: the control socket has no
    /// authentication, so it is only reachable from other hosts when an address says so.
    pub fn parse(s: &str) -> Result<ControlAddr, ControlAddrError> {
        let no_host = !s.contains('/') && s.rsplit_once(':').is_none_or(|(h, _)| h.is_empty());
        match ListenAddr::parse(s) {
            Ok(ListenAddr::Inet(sa)) if no_host => Ok(ControlAddr::Tcp(SocketAddr::from((
                std::net::Ipv4Addr::LOCALHOST,
                sa.port(),
            )))),
            Ok(ListenAddr::Inet(sa)) => Ok(ControlAddr::Tcp(sa)),
            Ok(ListenAddr::Unix(p)) => Ok(ControlAddr::Unix(p)),
            Ok(ListenAddr::Name { host, .. }) => Err(ControlAddrError::HostName {
                given: s.to_string(),
                host,
            }),
            Err(source) => Err(ControlAddrError::Address {
                given: s.to_string(),
                source,
            }),
        }
    }
}

/// The start-up warning for a TCP control socket that other hosts can reach while
/// `control_acl` admits everyone (its list is empty), or `None`. Pure.
pub fn exposure_warning(addr: &ControlAddr, cfg: &Config) -> Option<String> {
    let ControlAddr::Tcp(sa) = addr else {
        return None;
    };
    let ip = crate::acl::canonical(sa.ip());
    let open = cfg
        .acls
        .lists
        .get(usize::from(cfg.control_acl))
        .is_none_or(|l| l.entries.is_empty());
    (!ip.is_loopback() && open).then(|| {
        format!(
            "pen: warning: the control socket {sa} can be reached from other hosts and control_acl {} admits everyone: anyone who connects can reconfigure pen; listen on 127.0.0.1 (-C PORT), use a Unix socket (-C /path), or restrict it (-O \"acl 9 permit ADDR\" -O \"control_acl 9\")",
            cfg.control_acl
        )
    })
}

/// Writes `data` to `path` through a new temporary file in the same directory, renamed over
/// `path` once complete: readers never see half a file, and a symlink at `path` is replaced,
/// never written through. An existing regular file keeps its permission bits; a new file
/// gets 0666 less the umask (as C Pen's `fopen`). When pen may not create files in that
/// directory but the file itself is writable (a `-w` page in a directory pen's user does not
/// own), the existing file is rewritten in place, still refusing a symlink
/// ([`write_in_place_nofollow`]).
pub fn write_replacing(path: &Path, data: &[u8]) -> io::Result<()> {
    match write_via_rename(path, data) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            write_in_place_nofollow(path, data).map_err(|e2| {
                if e2.kind() == io::ErrorKind::NotFound {
                    e
                } else {
                    e2
                }
            })
        }
        r => r,
    }
}

/// Truncates and rewrites an existing regular file; refuses a symlink (`O_NOFOLLOW`) and
/// anything that is not a regular file; creates nothing.
pub fn write_in_place_nofollow(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "is a symbolic link; pen does not write through links",
                )
            } else {
                e
            }
        })?;
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    f.set_len(0)?;
    f.write_all(data)?;
    f.sync_all()
}

fn write_via_rename(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name; expected a path ending in a file name",
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".pen-{}-{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    // create_new: O_EXCL, so nothing (not even a planted symlink) is reused.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&tmp)?;
    let result = (|| {
        if let Ok(m) = std::fs::symlink_metadata(path)
            && m.file_type().is_file()
        {
            f.set_permissions(m.permissions())?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_replacing`] on a blocking thread.
async fn write_replacing_async(path: PathBuf, data: Vec<u8>) -> io::Result<()> {
    tokio::task::spawn_blocking(move || write_replacing(&path, &data))
        .await
        .map_err(io::Error::other)?
}

/// An open control (or Prometheus) listening socket, created before the runtime.
#[derive(Debug)]
pub enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Opens the control socket (a stale Unix socket file is removed first, as C Pen does).
pub fn open(addr: &ControlAddr) -> io::Result<StdListener> {
    match addr {
        ControlAddr::Tcp(sa) => {
            let l = crate::proxy::sockets::listen_tcp(*sa, 50)?;
            l.set_nonblocking(true)?;
            Ok(StdListener::Tcp(l))
        }
        ControlAddr::Unix(p) => {
            let l = crate::proxy::sockets::listen_unix(p, 50)?;
            l.set_nonblocking(true)?;
            Ok(StdListener::Unix(l))
        }
    }
}

/// What the control plane needs from the daemon. Every method has a harmless default so that
/// a partial daemon (or a test) can implement only what it supports.
pub trait Effects: Send + Sync + 'static {
    /// `exit` (with `-X`): shut pen down cleanly.
    fn exit(&self) {}
    /// `listen ADDR`: close the listener and serve `addr` instead.
    fn reopen_listener(&self, addr: &ListenAddr) -> Result<(), RelistenError> {
        Err(RelistenError::Unsupported(addr.clone()))
    }
    /// SIGHUP, `log X`, `no log`: (re)open the request log (`None` closes it).
    fn reopen_log(&self, target: Option<&str>) -> Result<(), crate::reqlog::LogError> {
        let _ = target;
        Ok(())
    }
    /// `close N`: returns whether connection N existed.
    fn close_connection(&self, n: usize) -> bool {
        let _ = n;
        false
    }
    /// `debug N`.
    fn set_debug(&self, level: u32) {
        let _ = level;
    }
    /// `conn_max N`, `pending_max N`.
    fn set_limits(&self, conn_max: usize, pending_max: usize) {
        let _ = (conn_max, pending_max);
    }
}

/// Effects of a process without a daemon behind it (tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct NoEffects;

#[cfg(test)]
impl Effects for NoEffects {}

/// The control plane of one pen process.
pub struct Control {
    shared: SharedState,
    effects: Arc<dyn Effects>,
    clients: Arc<Semaphore>,
    /// Clients served beyond `clients`, with the short read timeout.
    busy_clients: Arc<Semaphore>,
    /// The Prometheus endpoint's task and address, while it runs.
    metrics: std::sync::Mutex<Option<(SocketAddr, tokio::task::JoinHandle<()>)>>,
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn resolve(names: Vec<(String, u16)>) -> (Resolved, Vec<String>) {
    let mut resolved = HashMap::new();
    let mut problems = Vec::new();
    for (name, port) in names {
        let r = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((name.as_str(), port)),
        )
        .await;
        match r {
            Ok(Ok(mut addrs)) => match addrs.next() {
                Some(sa) => {
                    resolved.insert((name.clone(), port), sa);
                }
                None => problems.push(format!("host name {name:?} has no address")),
            },
            Ok(Err(e)) => problems.push(format!("cannot resolve host name {name:?}: {e}")),
            Err(_) => problems.push(format!(
                "cannot resolve host name {name:?}: no answer within {} s",
                RESOLVE_TIMEOUT.as_secs()
            )),
        }
    }
    (resolved, problems)
}

impl Control {
    pub fn new(shared: SharedState, effects: Arc<dyn Effects>) -> Arc<Control> {
        Arc::new(Control {
            shared,
            effects,
            clients: Arc::new(Semaphore::new(CLIENTS_MAX)),
            busy_clients: Arc::new(Semaphore::new(BUSY_CLIENTS_MAX)),
            metrics: std::sync::Mutex::new(None),
        })
    }

    /// Serves the Prometheus metrics on `addr` (replacing a previous endpoint), or stops
    /// serving them (`None`). Must run inside the runtime.
    pub fn set_prometheus(&self, addr: Option<SocketAddr>) -> Result<(), MetricsError> {
        let mut slot = self
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(addr) = addr else {
            if let Some((_, h)) = slot.take() {
                h.abort();
            }
            return Ok(());
        };
        if slot
            .as_ref()
            .is_some_and(|(a, h)| *a == addr && !h.is_finished())
        {
            return Ok(());
        }
        // Close the old endpoint first: the new one may reuse its port.
        if let Some((_, h)) = slot.take() {
            h.abort();
        }
        let l = crate::proxy::sockets::listen_tcp(addr, 50)
            .and_then(TcpListener::from_std)
            .map_err(|source| MetricsError { addr, source })?;
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = serve_prometheus(l, shared).await {
                tracing::warn!("prometheus endpoint {addr} stopped: {e}");
            }
        });
        *slot = Some((addr, task));
        Ok(())
    }

    #[cfg(test)]
    pub fn shared(&self) -> &SharedState {
        &self.shared
    }

    /// Runs one trusted command line (as from `-O`) and returns the reply.
    #[cfg(test)]
    pub async fn run_line(&self, line: &str) -> String {
        self.run_line_from(line, None).await
    }

    /// Runs one command line of a control client from `origin` (`None`: trusted) and
    /// returns the reply; what a client may not do is refused ([`reply::refusal`]).
    pub async fn run_line_from(&self, line: &str, origin: Option<reply::Origin>) -> String {
        let cmd = match command::parse(line) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return String::new(),
            Err(e) => {
                let word = line.split_ascii_whitespace().next().unwrap_or("");
                return error_line(word, &e.message());
            }
        };
        if let Some(origin) = origin {
            let refused = reply::refusal(&cmd, &lock(&self.shared).config, origin);
            if let Some(r) = refused {
                tracing::warn!("control client ({origin:?}): {}", r.trim_end());
                return r;
            }
        }
        self.run(&cmd).await
    }

    /// Runs one parsed command: resolve names, execute under the lock, then carry out the
    /// actions. Returns the reply.
    pub async fn run(&self, cmd: &Command) -> String {
        let names = names_to_resolve(&lock(&self.shared), cmd);
        let (resolved, problems) = resolve(names).await;
        if let Some(p) = problems.first() {
            return error_line("server", &format!("{p}; the server was not changed"));
        }
        let outcome = {
            let mut g = lock(&self.shared);
            let conns = g.io.open_conns();
            let env = Env {
                now: now(),
                unix_time: unix_time(),
                pid: std::process::id(),
                resolved: &resolved,
                conns: &conns,
            };
            reply::execute(&mut g, cmd, &env)
        };
        self.perform(outcome).await
    }

    /// Carries out the actions of an outcome; failures are appended to (or, for `status`,
    /// replace) the reply.
    async fn perform(&self, outcome: Outcome) -> String {
        let Outcome { mut reply, actions } = outcome;
        for action in actions {
            match action {
                Action::Exit => self.effects.exit(),
                Action::Listen {
                    new,
                    old,
                    old_given,
                } => {
                    if let Err(e) = self.effects.reopen_listener(&new) {
                        let still = {
                            let mut g = lock(&self.shared);
                            g.config.listen = old;
                            g.config.listen_given = old_given;
                            g.config.listen_text()
                        };
                        let still = still.unwrap_or_else(|| "nothing".to_string());
                        reply.push_str(&error_line(
                            "listen",
                            &format!("{e}; still listening on {still}"),
                        ));
                    }
                }
                Action::Log(target) => {
                    if let Err(e) = self.effects.reopen_log(target.as_deref()) {
                        reply.push_str(&error_line("log", &e.to_string()));
                    }
                }
                Action::Close(n) => {
                    self.effects.close_connection(n);
                }
                Action::ServersChanged => {
                    crate::proxy::tell_servers_changed(&self.shared);
                }
                Action::Write { path, text } => {
                    if let Err(e) = write_replacing_async(path.clone(), text.into_bytes()).await {
                        reply.push_str(&error_line(
                            "write",
                            &format!("cannot write {}: {e}", path.display()),
                        ));
                    }
                }
                Action::WebStats { path, html } => {
                    if let Err(e) = write_replacing_async(path.clone(), html.into_bytes()).await {
                        tracing::warn!("cannot write web stats to {}: {e}", path.display());
                        reply = "Unable to create webstats\n".to_string();
                    }
                }
                Action::Include(path) => {
                    for e in Box::pin(self.apply_config_file(&path)).await {
                        reply.push_str(&error_line("include", &e));
                    }
                }
                Action::Debug(level) => self.effects.set_debug(level),
                Action::Prometheus { new, old } => {
                    if let Err(e) = self.set_prometheus(new) {
                        lock(&self.shared).config.prometheus = old;
                        reply.push_str(&error_line("prometheus", &e.to_string()));
                    }
                }
                Action::Limits {
                    conn_max,
                    pending_max,
                } => self.effects.set_limits(conn_max, pending_max),
            }
        }
        reply
    }

    /// Reads a config file (`-F` on SIGHUP, `include FILE`) and applies it on top of the
    /// running state, as C Pen's `read_cfg`: bad lines are reported (`file:line: message`) and
    /// the rest applies; server slots are changed or added, never removed; connections are not
    /// touched. Files are read and host names resolved before the lock is taken.
    pub async fn apply_config_file(&self, path: &Path) -> Vec<String> {
        // 1. Read the file and its includes (on a blocking thread), as a dry run on a copy.
        let base = lock(&self.shared).config.clone();
        let top = path.to_path_buf();
        let read = tokio::task::spawn_blocking(move || {
            let mut texts: HashMap<PathBuf, Result<String, String>> = HashMap::new();
            let mut cfg = base;
            apply_file(&mut cfg, &top, |p| {
                let r = std::fs::read_to_string(p).map_err(|e| e.to_string());
                texts.insert(p.to_path_buf(), r.clone());
                r
            });
            (cfg, texts)
        })
        .await;
        let (dry, texts) = match read {
            Ok(x) => x,
            Err(e) => return vec![format!("{}: reading failed: {e}", path.display())],
        };
        // 2. Resolve the host names the file gives to server slots.
        let names = unresolved_names(&dry, &lock(&self.shared));
        let (resolved, mut problems) = resolve(names).await;
        // 3. Apply for real, under the lock, from the texts read in 1.
        let (outcome, actions) = {
            let mut g = lock(&self.shared);
            let conns = g.io.open_conns();
            let old = g.config.clone();
            let outcome: FileOutcome = apply_file(&mut g.config, path, |p| {
                texts
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| Err("file appeared during the re-read".to_string()))
            });
            problems.extend(sync_balancer(&mut g, &resolved));
            let mut actions = config_actions(&old, &g.config);
            let env = Env {
                now: now(),
                unix_time: unix_time(),
                pid: std::process::id(),
                resolved: &resolved,
                conns: &conns,
            };
            for cmd in &outcome.runtime {
                let o = reply::execute(&mut g, cmd, &env);
                if !o.reply.is_empty() {
                    tracing::debug!("{}: {cmd}: {}", path.display(), o.reply.trim_end());
                }
                actions.extend(o.actions);
            }
            if !actions.contains(&Action::ServersChanged) {
                actions.push(Action::ServersChanged);
            }
            (outcome, actions)
        };
        let extra = Box::pin(self.perform(Outcome {
            reply: String::new(),
            actions,
        }))
        .await;
        let mut errors: Vec<String> = outcome.errors.iter().map(ToString::to_string).collect();
        errors.extend(problems);
        errors.extend(extra.lines().map(str::to_string));
        errors
    }

    /// A snapshot of the running state for the reports.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.shared)
    }

    /// SIGUSR1: the status page to the `-w` file, or the text report to stderr.
    /// A pen in the foreground writes the text report to stderr; a daemon sends it to syslog
    /// (facility user, level info), one report line per message, as C Pen's `debug()`.
    pub async fn usr1(&self) {
        let (web, foreground) = {
            let g = lock(&self.shared);
            (g.config.web_stats.clone(), g.config.foreground)
        };
        let snap = self.snapshot();
        match web {
            Some(path) => {
                let html = stats::html(&snap).into_bytes();
                if let Err(e) = write_replacing_async(path.clone(), html).await {
                    tracing::warn!("SIGUSR1: cannot write web stats to {}: {e}", path.display());
                }
            }
            None if foreground => eprint!("{}", stats::text(&snap)),
            None => {
                for line in stats::text(&snap).lines() {
                    syslog_info(line);
                }
            }
        }
    }

    fn control_permits(&self, ip: IpAddr) -> bool {
        let g = lock(&self.shared);
        let cfg: &Config = &g.config;
        cfg.acls.permits(usize::from(cfg.control_acl), Some(ip))
    }
}

fn snapshot(shared: &SharedState) -> Snapshot {
    let g = lock(shared);
    Snapshot::capture(&g, now(), unix_time(), &g.io.open_conns())
}

/// Why [`read_command`] did not return a line.
#[derive(Debug)]
enum ReadError {
    TooLong,
    Io(io::Error),
}

/// Reads up to the first newline (or EOF), at most [`LINE_MAX`] bytes.
async fn read_command<S: AsyncRead + Unpin>(s: &mut S) -> Result<String, ReadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.map_err(ReadError::Io)?;
        let got = chunk.get(..n).unwrap_or(&[]);
        if let Some(pos) = got.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(got.get(..pos).unwrap_or(&[]));
            if buf.len() > LINE_MAX {
                return Err(ReadError::TooLong);
            }
            break;
        }
        buf.extend_from_slice(got);
        if buf.len() > LINE_MAX {
            return Err(ReadError::TooLong);
        }
        if n == 0 {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Serves one control client: read one command (within `read_timeout`), run it, write the
/// reply, close.
async fn serve_client<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    who: &str,
    origin: reply::Origin,
    read_timeout: Duration,
    control: &Control,
) {
    let line = match tokio::time::timeout(read_timeout, read_command(&mut s)).await {
        Ok(Ok(line)) => line,
        Ok(Err(ReadError::TooLong)) => {
            tracing::info!("control client {who}: command longer than {LINE_MAX} bytes");
            let msg = format!(
                "do_cmd: ignoring a command line longer than {LINE_MAX} bytes; expected one command of at most {LINE_MAX} bytes ending with a newline\n"
            );
            let _ = tokio::time::timeout(WRITE_TIMEOUT, s.write_all(msg.as_bytes())).await;
            return;
        }
        Ok(Err(ReadError::Io(e))) => {
            tracing::debug!("control client {who}: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(
                "control client {who} sent no command within {} ms; closed",
                read_timeout.as_millis()
            );
            return;
        }
    };
    tracing::debug!("control client {who}: {line:?}");
    let reply = control.run_line_from(&line, Some(origin)).await;
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        s.write_all(reply.as_bytes()).await?;
        s.shutdown().await
    })
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("control client {who}: reply not sent: {e}"),
        Err(_) => tracing::info!("control client {who} did not take the reply; closed"),
    }
}

/// The control socket's accept loop; returns only on a fatal accept error.
pub async fn serve(listener: StdListener, control: Arc<Control>) -> io::Result<()> {
    enum L {
        Tcp(TcpListener),
        Unix(UnixListener),
    }
    let l = match listener {
        StdListener::Tcp(l) => L::Tcp(TcpListener::from_std(l)?),
        StdListener::Unix(l) => L::Unix(UnixListener::from_std(l)?),
    };
    loop {
        let accepted = match &l {
            L::Tcp(l) => l.accept().await.map(|(s, peer)| {
                (
                    Box::new(s) as Box<dyn Conn>,
                    Some(crate::acl::canonical(peer.ip())),
                    peer.to_string(),
                )
            }),
            L::Unix(l) => l
                .accept()
                .await
                .map(|(s, _)| (Box::new(s) as Box<dyn Conn>, None, "unix".to_string())),
        };
        let (stream, ip, who) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if transient(&e) {
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                return Err(e);
            }
        };
        // The pool first; when silent clients hold it, a newcomer still gets in with a short
        // deadline (penctl sends its line at once), so idle clients cannot lock penctl out.
        let (permit, read_timeout) = match control.clients.clone().try_acquire_owned() {
            Ok(p) => (p, READ_TIMEOUT),
            Err(_) => match control.busy_clients.clone().try_acquire_owned() {
                Ok(p) => (p, BUSY_READ_TIMEOUT),
                Err(_) => {
                    tracing::info!(
                        "control client {who}: {} control clients busy; closed",
                        CLIENTS_MAX + BUSY_CLIENTS_MAX
                    );
                    continue;
                }
            },
        };
        let origin = if ip.is_some() {
            reply::Origin::Tcp
        } else {
            reply::Origin::Unix
        };
        if let Some(ip) = ip
            && !control.control_permits(ip)
        {
            tracing::info!("control client {who}: denied by control_acl");
            continue;
        }
        let control = control.clone();
        tokio::spawn(async move {
            serve_client(stream, &who, origin, read_timeout, &control).await;
            drop(permit);
        });
    }
}

/// A control client stream (TCP or Unix).
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

fn transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO)
    )
}

/// The Prometheus endpoint: answers `GET /metrics` (and `GET /`) with the text exposition,
/// anything else with 404; one request per connection. Same limits as the control socket.
pub async fn serve_prometheus(listener: TcpListener, shared: SharedState) -> io::Result<()> {
    let clients = Arc::new(Semaphore::new(CLIENTS_MAX));
    loop {
        let (mut s, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) if transient(&e) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Ok(permit) = clients.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let head = tokio::time::timeout(READ_TIMEOUT, read_http_head(&mut s)).await;
            let Ok(Ok(head)) = head else {
                tracing::debug!("prometheus client {peer}: no request");
                return;
            };
            let response = http_response(&head, || {
                stats::prometheus(
                    &snapshot(&shared),
                    &crate::proxy::resources::ProcessStats::read(),
                )
            });
            let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
                s.write_all(response.as_bytes()).await?;
                s.shutdown().await
            })
            .await;
            drop(permit);
        });
    }
}

async fn read_http_head<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<String> {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        if n == 0
            || buf.windows(4).any(|w| w == b"\r\n\r\n")
            || buf.windows(2).any(|w| w == b"\n\n")
        {
            break;
        }
        if buf.len() > HTTP_HEAD_MAX {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The HTTP/1.0 response to a request head (pure but for the `body` callback).
fn http_response(head: &str, body: impl FnOnce() -> String) -> String {
    let request_line = head.lines().next().unwrap_or("");
    let mut parts = request_line.split_ascii_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics" | "/") => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body())
        }
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; the metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics is served\n".to_string(),
        ),
    };
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `-w FILE`: warns at start-up (after chroot and user switch, as SIGUSR1 writes it) when the
/// status page could not be written there.
pub fn check_web_stats(cfg: &crate::config::Config) {
    if let Some(path) = &cfg.web_stats
        && let Err(e) = check_writable(path)
    {
        tracing::warn!(
            "-w {}: the status page cannot be written there ({e}); SIGUSR1 will fail until \
             it can: give a file in an existing directory writable by the user pen runs as",
            path.display()
        );
    }
}

/// Whether the status page could be written at `path` (IO: checked without changing
/// anything): an existing file must open for appending; a new one needs an existing directory
/// pen may write into.
pub fn check_writable(path: &std::path::Path) -> std::io::Result<()> {
    use std::io;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "it is a directory",
        )),
        Ok(_) => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            if !std::fs::metadata(dir)?.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", dir.display()),
                ));
            }
            if dir.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NUL in the path",
                ));
            }
            // pen checks after its user switch, so the real and effective ids are the same.
            crate::sys::process::can_write_dir(dir)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostSpec, ServerConfig};
    use crate::proxy::Shared;
    use std::sync::Mutex;

    fn control() -> Arc<Control> {
        let cfg = Config {
            servers: vec![ServerConfig {
                host: Some(HostSpec::Ip("127.0.0.1".parse().unwrap())),
                port: 9,
                ..ServerConfig::default()
            }],
            ..Config::default()
        };
        Control::new(Arc::new(Mutex::new(Shared::new(cfg))), Arc::new(NoEffects))
    }

    #[test]
    fn control_address_forms() {
        // Without a host: loopback only (C Pen: every address).
        assert_eq!(
            ControlAddr::parse("10080").unwrap(),
            ControlAddr::Tcp("127.0.0.1:10080".parse().unwrap())
        );
        assert_eq!(
            ControlAddr::parse(":10080").unwrap(),
            ControlAddr::Tcp("127.0.0.1:10080".parse().unwrap())
        );
        assert_eq!(
            ControlAddr::parse("0.0.0.0:10080").unwrap(),
            ControlAddr::Tcp("0.0.0.0:10080".parse().unwrap())
        );
        assert_eq!(
            ControlAddr::parse(":::10080").unwrap(),
            ControlAddr::Tcp("[::]:10080".parse().unwrap())
        );
        assert_eq!(
            ControlAddr::parse("127.0.0.1:10080").unwrap(),
            ControlAddr::Tcp("127.0.0.1:10080".parse().unwrap())
        );
        assert_eq!(
            ControlAddr::parse("[::1]:10080").unwrap(),
            ControlAddr::Tcp("[::1]:10080".parse().unwrap())
        );
        assert_eq!(
            ControlAddr::parse("/run/pen.ctl").unwrap(),
            ControlAddr::Unix("/run/pen.ctl".into())
        );
        // Port 0: the kernel picks a free port and pen reports it (`pen: control port on ...`).
        assert_eq!(
            ControlAddr::parse("0").unwrap(),
            ControlAddr::Tcp("127.0.0.1:0".parse().unwrap())
        );
        let e = ControlAddr::parse("lb.example:80").unwrap_err();
        assert!(e.to_string().contains("host name"), "{e}");
        assert!(matches!(&e, ControlAddrError::HostName { host, .. } if host == "lb.example"));
        let e = ControlAddr::parse("1.2.3.4:99999").unwrap_err();
        assert!(matches!(e, ControlAddrError::Address { .. }), "{e:?}");
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
    }

    #[test]
    fn reachable_control_socket_without_control_acl_gets_a_warning() {
        let mut cfg = Config::default();
        let w = |s: &str, cfg: &Config| exposure_warning(&ControlAddr::parse(s).unwrap(), cfg);
        assert_eq!(w("10080", &cfg), None);
        assert_eq!(w("[::1]:10080", &cfg), None);
        assert_eq!(w("/run/pen.ctl", &cfg), None);
        let text = w("0.0.0.0:10080", &cfg).unwrap();
        assert!(
            text.starts_with("pen: warning: the control socket 0.0.0.0:10080 can be reached")
                && text.contains("control_acl 0 admits everyone"),
            "{text}"
        );
        assert!(w("[::]:10080", &cfg).is_some());
        assert!(w("192.0.2.1:10080", &cfg).is_some());
        // A control_acl with entries: no warning.
        crate::ctl::apply::apply_text(&mut cfg, "acl 3 permit 10.0.0.1\ncontrol_acl 3\n", "t");
        assert_eq!(w("0.0.0.0:10080", &cfg), None);
    }

    #[test]
    fn write_replacing_replaces_a_symlink_instead_of_following_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let link = dir.path().join("pen.cfg");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write_replacing(&link, b"blacklist 3\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let m = std::fs::symlink_metadata(&link).unwrap();
        assert!(m.file_type().is_file(), "the link was replaced by a file");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "blacklist 3\n");
        // An existing file keeps its mode; no temporary file is left behind.
        std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_replacing(&link, b"x").unwrap();
        let mode = std::fs::metadata(&link).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A directory as target: an error, and still nothing left behind.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(write_replacing(&sub, b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        assert!(write_replacing(Path::new("/"), b"x").is_err());
    }

    #[test]
    fn write_in_place_refuses_links_and_non_files_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("page.html");
        std::fs::write(&f, "old old old\n").unwrap();
        write_in_place_nofollow(&f, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        let e = write_in_place_nofollow(&link, b"x").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new\n");
        assert!(write_in_place_nofollow(dir.path(), b"x").is_err());
        // A FIFO without a reader: an error at once, no blocking.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(write_in_place_nofollow(&fifo, b"x").is_err());
        let e = write_in_place_nofollow(Path::new("/dev/null"), b"x").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let missing = dir.path().join("missing");
        assert!(write_in_place_nofollow(&missing, b"x").is_err());
        assert!(!missing.exists());
    }

    async fn tcp_control(c: &Arc<Control>) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(StdListener::Tcp(l), c.clone()));
        addr
    }

    async fn ask(addr: SocketAddr, line: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(line.as_bytes()).await.unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply).await;
        reply
    }

    /// The hook is run by the shell after the command, without the state's lock held (it may
    /// talk to the kernel), for server commands and re-reads only.
    #[tokio::test]
    async fn server_commands_and_re_reads_run_the_servers_changed_hook_outside_the_lock() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let c = control();
        let calls = Arc::new(AtomicUsize::new(0));
        let (n, shared) = (calls.clone(), c.shared().clone());
        lock(c.shared()).io.on_servers_changed =
            Some(crate::proxy::ChangeHook(Arc::new(move || {
                drop(lock(&shared));
                n.fetch_add(1, Ordering::SeqCst);
            })));
        c.run_line("server 0 weight 3").await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        c.run_line("servers").await;
        c.run_line("blacklist 5").await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "other commands leave it alone"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pen.cfg");
        std::fs::write(&f, "server 0 address 127.0.0.1 port 10\n").unwrap();
        assert!(c.apply_config_file(&f).await.is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a re-read runs it once");
    }

    #[tokio::test]
    async fn tcp_client_cannot_write_a_named_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("out.cfg");
        let c = control();
        let addr = tcp_control(&c).await;
        let r = ask(addr, &format!("write {}\n", f.display())).await;
        assert!(
            r.starts_with("do_cmd: ignoring command starting with 'write'")
                && r.contains("control_any_file"),
            "{r}"
        );
        assert!(!f.exists(), "nothing written");
        assert!(
            ask(addr, "control_any_file\n")
                .await
                .contains("-O/-o or in the -F file")
        );
        assert!(!lock(c.shared()).config.control_any_file);
        // Trusted (-O) and with control_any_file on: written.
        c.run_line("control_any_file").await;
        assert_eq!(ask(addr, &format!("write {}\n", f.display())).await, "");
        assert!(f.exists());
    }

    /// More silent clients than the pool holds: penctl still gets its reply, from a slot with
    /// the short deadline (before: closed at once until a silent client timed out after 5 s).
    #[tokio::test]
    async fn silent_clients_filling_the_pool_do_not_lock_penctl_out() {
        let c = control();
        let addr = tcp_control(&c).await;
        let mut silent = Vec::new();
        for _ in 0..CLIENTS_MAX + 4 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Let the accept loop take them all before ours (bounded: the pool must be full).
        let full = tokio::time::timeout(Duration::from_secs(3), async {
            while c.clients.available_permits() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(full.is_ok(), "the silent clients were not accepted");
        let t0 = std::time::Instant::now();
        assert_eq!(ask(addr, "blacklist\n").await, "30\n");
        assert!(t0.elapsed() < READ_TIMEOUT, "{:?}", t0.elapsed());
        // Silent clients beyond the pool are closed after the short deadline.
        let mut last = silent.pop().unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(READ_TIMEOUT, last.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0))), "{n:?}");
    }

    #[tokio::test]
    async fn command_line_is_cut_at_newline_and_cr() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"servers\r\nextra").await.unwrap();
        assert_eq!(read_command(&mut b).await.unwrap(), "servers");
    }

    #[tokio::test]
    async fn command_without_newline_ends_at_eof() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"mode").await.unwrap();
        drop(a);
        assert_eq!(read_command(&mut b).await.unwrap(), "mode");
    }

    #[tokio::test]
    async fn overlong_line_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let big = vec![b'x'; 10_000];
        tokio::spawn(async move {
            let _ = a.write_all(&big).await;
        });
        assert!(matches!(
            read_command(&mut b).await,
            Err(ReadError::TooLong)
        ));
    }

    #[tokio::test]
    async fn run_line_replies_and_changes_state() {
        let c = control();
        assert_eq!(c.run_line("blacklist 9").await, "9\n");
        assert_eq!(lock(c.shared()).config.blacklist_secs, 9);
        assert!(c.run_line("nonsense").await.contains("'nonsense'"));
    }

    #[tokio::test]
    async fn write_then_include_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("out.cfg");
        let c = control();
        c.run_line("server 3 address 127.0.0.3 port 83 weight 4")
            .await;
        c.run_line("weight").await;
        assert_eq!(c.run_line(&format!("write {}", f.display())).await, "");
        let fresh = control();
        let errors = fresh.apply_config_file(&f).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(fresh.run_line("servers").await, c.run_line("servers").await);
        assert_eq!(fresh.run_line("mode").await, c.run_line("mode").await);
    }

    #[tokio::test]
    async fn bad_config_lines_are_reported_and_the_rest_applies() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pen.cfg");
        let inc = dir.path().join("inc.cfg");
        std::fs::write(&inc, "tracking 77\n").unwrap();
        std::fs::write(
            &f,
            format!("blacklist 5\nbogus line\ninclude {}\n", inc.display()),
        )
        .unwrap();
        let c = control();
        let errors = c.apply_config_file(&f).await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("{}:2:", f.display())),
            "{errors:?}"
        );
        let g = lock(c.shared());
        assert_eq!(g.config.blacklist_secs, 5);
        assert_eq!(g.config.tracking_secs, 77);
        assert_eq!(g.balancer.tracking_secs(), 77, "balancer follows");
    }

    /// On paused time: a reply that had to wait for the silent client's deadline would come
    /// 5 virtual seconds later, whatever the machine's speed.
    #[tokio::test(start_paused = true)]
    async fn silent_client_is_dropped_and_others_are_served() {
        let c = control();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(StdListener::Tcp(l), c.clone()));
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let t0 = tokio::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"blacklist\n").await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert_eq!(reply, "30\n");
        assert!(t0.elapsed() < READ_TIMEOUT, "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn prometheus_endpoint_serves_metrics_and_stops() {
        let c = control();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        c.set_prometheus(Some(addr)).unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(
            body.contains("pen_server_connections{server=\"0\",address=\"127.0.0.1:9\"} 0"),
            "{body}"
        );
        c.set_prometheus(None).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "endpoint still open"
        );
    }

    #[test]
    fn http_routes() {
        let ok = http_response("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || {
            "m 1\n".into()
        });
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(ok.contains("Content-Length: 4\r\n"));
        assert!(ok.ends_with("\r\n\r\nm 1\n"));
        assert!(http_response("GET /x HTTP/1.1\r\n\r\n", String::new).starts_with("HTTP/1.0 404"));
        assert!(
            http_response("POST /metrics HTTP/1.1\r\n\r\n", String::new)
                .starts_with("HTTP/1.0 405")
        );
    }

    #[test]
    fn writable_check_names_missing_directories_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_writable(&dir.path().join("new.html")).is_ok());
        let existing = dir.path().join("old.html");
        std::fs::write(&existing, "keep").unwrap();
        assert!(check_writable(&existing).is_ok());
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep");
        assert!(
            !dir.path().join("new.html").exists(),
            "the check creates nothing"
        );
        let e = check_writable(&dir.path().join("missing/x.html")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(check_writable(dir.path()).is_err(), "a directory");
    }
}
