//! The control socket (`-C port|[addr:]port|/path`), config-file re-reads (`-F`, SIGHUP,
//! `include`), SIGUSR1 statistics and the Prometheus endpoint. IO only: every decision and
//! every reply comes from [`crate::ctl::reply`] and [`crate::stats`].
//!
//! Protocol (C Pen's): a client connects, sends one command line, reads the reply until pen
//! closes the connection. Unlike C Pen (which reads the socket synchronously in its event
//! loop), nothing here can stall the balancer:
//! - each control client is its own task, with at most [`CLIENTS_MAX`] at once (more are
//!   closed at once, without a reply);
//! - the command must arrive within [`READ_TIMEOUT`] and be at most [`LINE_MAX`] bytes up to
//!   the first newline (or EOF); a silent client is dropped after the timeout, a longer line
//!   gets a one-line error;
//! - the reply is written with a [`WRITE_TIMEOUT`];
//! - the shared lock is held only while the command runs (no IO under the lock: host names
//!   are resolved and files are read before, files written after).
//!
//! `control_acl` is checked for TCP clients (Unix-socket clients always pass, as in C Pen).

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
use crate::stats::{self, ConnRow, Snapshot};

/// Longest command line accepted (C Pen reads at most 4095 bytes).
pub const LINE_MAX: usize = 4095;
/// A control client must send its command within this time.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A control client must take the reply within this time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Control clients served at the same time; more are closed at once.
pub const CLIENTS_MAX: usize = 16;
/// Time allowed to resolve one host name of a `server N address NAME` command.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest HTTP request head the Prometheus endpoint reads.
pub const HTTP_HEAD_MAX: usize = 8192;

/// Where the control socket listens: `-C port` (all addresses, as C Pen), `-C addr:port`,
/// `-C [v6]:port`, or `-C /path` (Unix socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ControlAddr {
    /// Parses `-C`'s value (host names are not accepted: give an address).
    pub fn parse(s: &str) -> Result<ControlAddr, String> {
        match ListenAddr::parse(s) {
            Ok(ListenAddr::Inet(sa)) if sa.port() != 0 => Ok(ControlAddr::Tcp(sa)),
            Ok(ListenAddr::Unix(p)) => Ok(ControlAddr::Unix(p)),
            Ok(ListenAddr::Inet(_)) => Err(format!(
                "bad control address {s:?}: port 0; expected port, addr:port or /path"
            )),
            Ok(ListenAddr::Name { host, .. }) => Err(format!(
                "bad control address {s:?}: {host:?} is a host name; expected an IP address (addr:port), a port or /path"
            )),
            Err(e) => Err(format!(
                "bad control address {s:?}: {e}; expected port, addr:port or /path"
            )),
        }
    }
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
    fn reopen_listener(&self, addr: &ListenAddr) -> Result<(), String> {
        Err(format!(
            "cannot listen on {addr}: not supported by this daemon"
        ))
    }
    /// SIGHUP, `log X`, `no log`: (re)open the request log (`None` closes it).
    fn reopen_log(&self, target: Option<&str>) -> Result<(), String> {
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
    /// The open connections (`connection N`, `socket N`, status pages).
    fn connections(&self) -> Vec<ConnRow> {
        Vec::new()
    }
}

/// Effects of a process without a daemon behind it (tests, tools).
#[derive(Debug, Default)]
pub struct NoEffects;

impl Effects for NoEffects {}

/// The control plane of one pen process.
pub struct Control {
    shared: SharedState,
    effects: Arc<dyn Effects>,
    clients: Arc<Semaphore>,
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
            metrics: std::sync::Mutex::new(None),
        })
    }

    /// Serves the Prometheus metrics on `addr` (replacing a previous endpoint), or stops
    /// serving them (`None`). Must run inside the runtime.
    pub fn set_prometheus(&self, addr: Option<SocketAddr>) -> Result<(), String> {
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
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        let (shared, effects) = (self.shared.clone(), self.effects.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = serve_prometheus(l, shared, effects).await {
                tracing::warn!("prometheus endpoint {addr} stopped: {e}");
            }
        });
        *slot = Some((addr, task));
        Ok(())
    }

    pub fn shared(&self) -> &SharedState {
        &self.shared
    }

    /// Runs one command line as the control socket does and returns the reply.
    pub async fn run_line(&self, line: &str) -> String {
        let cmd = match command::parse(line) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return String::new(),
            Err(e) => {
                let word = line.split_ascii_whitespace().next().unwrap_or("");
                return error_line(word, &e.message);
            }
        };
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
        let conns = self.effects.connections();
        let outcome = {
            let mut g = lock(&self.shared);
            let env = Env {
                now: now(),
                unix_time: unix_time(),
                pid: std::process::id(),
                resolved: &resolved,
                conns: &conns,
            };
            let o = reply::execute(&mut g, cmd, &env);
            if matches!(cmd, Command::Server(_)) {
                g.servers_changed();
            }
            o
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
                        reply.push_str(&error_line("log", &e));
                    }
                }
                Action::Close(n) => {
                    self.effects.close_connection(n);
                }
                Action::Write { path, text } => {
                    if let Err(e) = tokio::fs::write(&path, text).await {
                        reply.push_str(&error_line(
                            "write",
                            &format!("cannot write {}: {e}", path.display()),
                        ));
                    }
                }
                Action::WebStats { path, html } => {
                    if let Err(e) = tokio::fs::write(&path, html).await {
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
                        reply.push_str(&error_line("prometheus", &e));
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
        let conns = self.effects.connections();
        let (outcome, actions) = {
            let mut g = lock(&self.shared);
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
            g.servers_changed();
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
        snapshot(&self.shared, self.effects.as_ref())
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
                if let Err(e) = tokio::fs::write(&path, stats::html(&snap)).await {
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

/// One message to syslog (facility user, level info), tagged `pen`.
fn syslog_info(line: &str) {
    let Ok(msg) = std::ffi::CString::new(line.replace('\0', " ")) else {
        return;
    };
    // SAFETY: openlog keeps the pointer to the ident, which is a 'static C string literal;
    // syslog gets a constant "%s" format and a valid NUL-terminated argument.
    unsafe {
        libc::openlog(c"pen".as_ptr(), libc::LOG_PID, libc::LOG_USER);
        libc::syslog(libc::LOG_INFO, c"%s".as_ptr(), msg.as_ptr());
    }
}

fn snapshot(shared: &SharedState, effects: &dyn Effects) -> Snapshot {
    let conns = effects.connections();
    let g = lock(shared);
    Snapshot::capture(&g, now(), unix_time(), conns)
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

/// Serves one control client: read one command, run it, write the reply, close.
async fn serve_client<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, who: &str, control: &Control) {
    let line = match tokio::time::timeout(READ_TIMEOUT, read_command(&mut s)).await {
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
                "control client {who} sent no command within {} s; closed",
                READ_TIMEOUT.as_secs()
            );
            return;
        }
    };
    tracing::debug!("control client {who}: {line:?}");
    let reply = control.run_line(&line).await;
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
        let Ok(permit) = control.clients.clone().try_acquire_owned() else {
            tracing::info!("control client {who}: {CLIENTS_MAX} control clients busy; closed");
            continue;
        };
        if let Some(ip) = ip
            && !control.control_permits(ip)
        {
            tracing::info!("control client {who}: denied by control_acl");
            continue;
        }
        let control = control.clone();
        tokio::spawn(async move {
            serve_client(stream, &who, &control).await;
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
pub async fn serve_prometheus(
    listener: TcpListener,
    shared: SharedState,
    effects: Arc<dyn Effects>,
) -> io::Result<()> {
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
        let (shared, effects) = (shared.clone(), effects.clone());
        tokio::spawn(async move {
            let head = tokio::time::timeout(READ_TIMEOUT, read_http_head(&mut s)).await;
            let Ok(Ok(head)) = head else {
                tracing::debug!("prometheus client {peer}: no request");
                return;
            };
            let response = http_response(&head, || {
                stats::prometheus(&snapshot(&shared, effects.as_ref()))
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
        assert_eq!(
            ControlAddr::parse("10080").unwrap(),
            ControlAddr::Tcp("0.0.0.0:10080".parse().unwrap())
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
        assert!(ControlAddr::parse("0").unwrap_err().contains("\"0\""));
        assert!(
            ControlAddr::parse("lb.example:80")
                .unwrap_err()
                .contains("host name")
        );
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

    #[tokio::test]
    async fn silent_client_is_dropped_and_others_are_served() {
        let c = control();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(StdListener::Tcp(l), c.clone()));
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let t0 = std::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"blacklist\n").await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert_eq!(reply, "30\n");
        assert!(t0.elapsed() < Duration::from_secs(2));
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
}
