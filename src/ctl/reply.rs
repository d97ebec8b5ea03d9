//! Running a penctl command against the running state and formatting C Pen's reply. Pure.
//!
//! [`execute_line`] / [`execute`] take a command, the running state ([`State`]: config,
//! balancer, counters; no IO handles) and an [`Env`] (clocks, pid, host names the IO layer
//! resolved, the open connections as data),
//! apply the command with [`crate::ctl::apply::apply`], bring the balancer in line with the new
//! configuration ([`sync_balancer`]) and return an [`Outcome`]: the reply text (C Pen 0.34.1's
//! formats, `docs/cpen-replies.md`) and the [`Action`]s the IO layer must carry out (reopen the
//! listener or the log, write a file, close a connection, tell the servers changed, exit, ...).
//!
//! Errors are one line: `do_cmd: ignoring command starting with 'WORD': what was wrong and what
//! would be accepted` (C Pen's prefix for unknown commands, so scripts that look for it still
//! work). The balancer is never left half-changed: a command either applies or is ignored.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{BackendAddr, Config, HostSpec, ListenAddr};
use crate::ctl::apply::{Applied, apply, write_config};
use crate::ctl::command::{self, Command};
use crate::select::literal_addr;
use crate::state::{OpenConns, State};
use crate::stats::{self, Snapshot};

/// Host names resolved by the IO layer before the command runs: `(name, port)` → address.
pub type Resolved = HashMap<(String, u16), SocketAddr>;

/// What a command needs from the world besides the running state.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The balancer's monotonic clock ([`crate::proxy::now`]).
    pub now: Duration,
    /// Wall-clock seconds since the epoch (status page).
    pub unix_time: u64,
    /// This process's id (`pid`).
    pub pid: u32,
    /// Host names resolved for `server N address NAME` (see [`names_to_resolve`]).
    pub resolved: &'a Resolved,
    /// The open connections (`connection N`, `socket N`, `servers`, `status`), taken by the IO
    /// layer under the state's lock.
    pub conns: &'a OpenConns,
}

/// Something the IO layer must do after a command ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `exit` (only with `-X`).
    Exit,
    /// `listen ADDR` changed the listen address: close the listener and open this one. If that
    /// fails, put `old` back into the config.
    Listen {
        new: ListenAddr,
        old: Option<ListenAddr>,
        /// The old address as it was given ([`Config::listen_given`]).
        old_given: Option<String>,
    },
    /// The request log target changed (`log X`, `no log`): reopen it (`None` = close).
    Log(Option<String>),
    /// `close N`.
    Close(usize),
    /// A `server N ...` command ran: tell whoever caches server choices (DSR's kernel fast
    /// path) to drop them.
    ServersChanged,
    /// `write [FILE]`: write this text to this file.
    Write { path: PathBuf, text: String },
    /// `status` (or SIGUSR1) with `-w`: write the status page to the file.
    WebStats { path: PathBuf, html: String },
    /// `include FILE`: read and apply the file (see the IO layer's config-file reader).
    Include(PathBuf),
    /// The debug level changed.
    Debug(u32),
    /// The connection table or the pending-connect limit changed.
    Limits { conn_max: usize, pending_max: usize },
    /// `prometheus ADDR` / `no prometheus`: (re)start or stop the metrics endpoint. If that
    /// fails, put `old` back into the config.
    Prometheus {
        new: Option<SocketAddr>,
        old: Option<SocketAddr>,
    },
}

/// The reply and the follow-up actions of one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub reply: String,
    pub actions: Vec<Action>,
}

impl Outcome {
    fn text(reply: impl Into<String>) -> Outcome {
        Outcome {
            reply: reply.into(),
            actions: Vec::new(),
        }
    }
}

/// The one-line error reply for a command that was not run.
pub fn error_line(word: &str, message: &str) -> String {
    let word: String = word.chars().take(64).collect();
    format!("do_cmd: ignoring command starting with '{word}': {message}\n")
}

/// Where a control command comes from. Commands from `-o`/`-O` and `-F` files are trusted
/// and not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A TCP control client: anyone who can reach the port (and passes `control_acl`).
    Tcp,
    /// A Unix-socket control client: local, admitted by the socket file's permissions.
    Unix,
}

/// Why a control client may not run `cmd` (an [`error_line`]), or `None`. Pure.
///
/// - `control_any_file` is refused from every control client: only `-o`/`-O` and the `-F`
///   file set it.
/// - Unless it is on, a TCP client may not name a file on pen's host: `write FILE` (plain
///   `write` writes the `-F` file), `include FILE`, `web_stats FILE` and `log FILE` (a
///   `host:port` log target is allowed) are refused unless the file is the one already in use
///   (the `-F` file for `write` and `include`).
///   Unix-socket clients may: they are local and the socket file's permissions admit them.
pub fn refusal(cmd: &Command, cfg: &Config, origin: Origin) -> Option<String> {
    if let Command::Flag(crate::ctl::command::Flag::ControlAnyFile, _) = cmd {
        return Some(error_line(
            &cmd.to_string(),
            "control_any_file can only be set with -O/-o or in the -F file, not through the control socket",
        ));
    }
    if origin != Origin::Tcp || cfg.control_any_file {
        return None;
    }
    let (word, file) = match cmd {
        Command::Write(Some(p)) if cfg.config_file.as_ref() != Some(p) => ("write", p.clone()),
        Command::Include(p) if cfg.config_file.as_ref() != Some(p) => ("include", p.clone()),
        Command::WebStats(Some(p)) if cfg.web_stats.as_ref() != Some(p) => ("web_stats", p.clone()),
        Command::Log(Some(t)) if cfg.log.as_ref() != Some(t) => {
            match crate::reqlog::LogTarget::parse(t) {
                Ok(crate::reqlog::LogTarget::File(p)) => ("log", p),
                _ => return None,
            }
        }
        _ => return None,
    };
    let alone = match word {
        "write" => "`write` alone writes the -F file; ",
        _ => "",
    };
    Some(error_line(
        word,
        &format!(
            "a file name ({}) from a TCP control client is refused; {alone}use the Unix control socket (-C /path), or start pen with -O control_any_file",
            file.display()
        ),
    ))
}

/// The note for a `worker_threads N` that differs from the runtime in force (penctl reply,
/// SIGHUP log line).
pub fn worker_threads_pending(n: usize, in_force: usize) -> String {
    format!(
        "worker_threads {n} takes effect at the next start (write keeps it in the -F file); {in_force} in force"
    )
}

fn first_word(line: &str) -> &str {
    line.split_ascii_whitespace().next().unwrap_or("")
}

/// Parses and runs one line (`#` comments and blank lines reply nothing).
pub fn execute_line(state: &mut State, line: &str, env: &Env<'_>) -> Outcome {
    match command::parse(line) {
        Ok(Some(cmd)) => execute(state, &cmd, env),
        Ok(None) => Outcome::default(),
        Err(e) => Outcome::text(error_line(first_word(line), &e.message())),
    }
}

/// The host names (with ports) that `cmd` would give to server slots and that the balancer
/// does not already have resolved: the IO layer resolves them before calling [`execute`].
pub fn names_to_resolve(state: &State, cmd: &Command) -> Vec<(String, u16)> {
    let Command::Server(s) = cmd else {
        return Vec::new();
    };
    let mut cfg = state.config.clone();
    if apply(&mut cfg, cmd).is_err() {
        return Vec::new();
    }
    let Some(slot) = cfg.servers.get(s.index) else {
        return Vec::new();
    };
    match &slot.host {
        Some(HostSpec::Name(n)) => {
            let known = state
                .balancer
                .server(s.index)
                .is_some_and(|st| st.config.host == slot.host && st.config.port == slot.port)
                && state
                    .balancer
                    .server(s.index)
                    .is_some_and(|st| st.addr.is_some());
            if known {
                Vec::new()
            } else {
                vec![(n.clone(), slot.port)]
            }
        }
        _ => Vec::new(),
    }
}

/// Every server slot of `cfg` whose host is a name that the balancer does not hold resolved
/// for the same host and port (for `-F`/HUP re-reads: resolve these before [`sync_balancer`]).
pub fn unresolved_names(cfg: &Config, state: &State) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for (i, slot) in cfg.servers.iter().enumerate() {
        if let Some(HostSpec::Name(n)) = &slot.host {
            let known = state.balancer.server(i).is_some_and(|st| {
                st.config.host == slot.host && st.config.port == slot.port && st.addr.is_some()
            });
            if !known && !out.contains(&(n.clone(), slot.port)) {
                out.push((n.clone(), slot.port));
            }
        }
    }
    out
}

/// Brings the balancer in line with `state.config`: settings (mode, times, ACLs, client table
/// size) and every server slot whose configuration changed. Host names come from `resolved`,
/// or stay as the balancer has them when host and port did not change. Returns one message per
/// slot left without an address because its name was not resolved.
pub fn sync_balancer(state: &mut State, resolved: &Resolved) -> Vec<String> {
    let mut problems = Vec::new();
    state.balancer.update_settings(&state.config);
    for (i, slot) in state.config.servers.iter().enumerate() {
        let current = state.balancer.server(i);
        let addr = match &slot.host {
            Some(HostSpec::Name(n)) => match resolved.get(&(n.clone(), slot.port)) {
                Some(sa) => Some(BackendAddr::Inet(*sa)),
                None => match current {
                    Some(st)
                        if st.config.host == slot.host
                            && st.config.port == slot.port
                            && st.addr.is_some() =>
                    {
                        st.addr.clone()
                    }
                    _ => {
                        problems.push(format!(
                            "server {i}: host name {n:?} is not resolved; the server is not used until it is"
                        ));
                        None
                    }
                },
            },
            _ => literal_addr(slot),
        };
        let unchanged = current.is_some_and(|st| &st.config == slot && st.addr == addr);
        if !unchanged && let Err(e) = state.balancer.set_server(i, slot.clone(), addr) {
            problems.push(e.to_string());
        }
    }
    state.sync_checks();
    problems
}

/// What changed between two configurations that the IO layer must act on.
pub fn config_actions(old: &Config, new: &Config) -> Vec<Action> {
    let mut actions = Vec::new();
    if let Some(l) = &new.listen
        && old.listen.as_ref() != Some(l)
    {
        actions.push(Action::Listen {
            new: l.clone(),
            old: old.listen.clone(),
            old_given: old.listen_given.clone(),
        });
    }
    if old.log != new.log {
        actions.push(Action::Log(new.log.clone()));
    }
    if old.debug != new.debug {
        actions.push(Action::Debug(new.debug));
    }
    if old.prometheus != new.prometheus {
        actions.push(Action::Prometheus {
            new: new.prometheus,
            old: old.prometheus,
        });
    }
    if old.conn_max != new.conn_max || old.pending_max != new.pending_max {
        actions.push(Action::Limits {
            conn_max: new.conn_max,
            pending_max: new.pending_max,
        });
    }
    actions
}

/// Runs one parsed command; see the module doc.
pub fn execute(state: &mut State, cmd: &Command, env: &Env<'_>) -> Outcome {
    let old = state.config.clone();
    let applied = match apply(&mut state.config, cmd) {
        Ok(a) => a,
        Err(e) => {
            return Outcome::text(error_line(first_word(&cmd.to_string()), &e.message()));
        }
    };
    let mut out = Outcome::default();
    if state.config != old {
        let problems = sync_balancer(state, env.resolved);
        for p in problems {
            let _ = writeln!(out.reply, "{p}");
        }
        out.actions = config_actions(&old, &state.config);
    }
    if let Applied::Ignored(_) = applied {
        return out;
    }
    let cfg = &state.config;
    let r = &mut out.reply;
    match cmd {
        Command::Blacklist(_) => {
            let _ = writeln!(r, "{}", cfg.blacklist_secs);
        }
        Command::ClientAcl(_) => {
            let _ = writeln!(r, "{}", cfg.client_acl);
        }
        Command::ControlAcl(_) => {
            let _ = writeln!(r, "{}", cfg.control_acl);
        }
        Command::ClientsMax(_) => {
            let _ = writeln!(r, "{}", state.balancer.clients_max().max(cfg.clients_max));
        }
        Command::ConnMax(_) => {
            let _ = writeln!(r, "{}", cfg.conn_max);
        }
        Command::Debug(_) => {
            let _ = writeln!(r, "{}", cfg.debug);
        }
        Command::Timeout(_) => {
            let _ = writeln!(r, "{}", cfg.connect_timeout_secs);
        }
        Command::Tracking(_) => {
            let _ = writeln!(r, "{}", cfg.tracking_secs);
        }
        Command::UdpFlowIdle(_) => {
            let _ = writeln!(r, "{}", cfg.udp_flow_idle_secs);
        }
        Command::WorkerThreads(set) => {
            // The runtime is built once: the reply is the value in force; a different value
            // is stored (for `write`) and says when it applies.
            let in_force = cfg.worker_threads_in_force.unwrap_or(cfg.worker_threads);
            match set {
                Some(n) if *n != in_force => {
                    let _ = writeln!(r, "{}", worker_threads_pending(*n, in_force));
                }
                _ => {
                    let _ = writeln!(r, "{in_force}");
                }
            }
        }
        Command::IdleTimeout(_) => {
            let _ = writeln!(r, "Idle timeout: {} seconds", cfg.idle_timeout_secs);
        }
        Command::Idlers(_) => {
            let _ = writeln!(r, "Idlers: 0/{}", cfg.idlers);
        }
        Command::TarpitAcl(_) => {
            // C Pen prints this one without a newline.
            let n = cfg.tarpit_acl.map_or(-1, i32::from);
            let _ = write!(r, "tarpit_acl = {n}");
        }
        Command::TarpitCapture(_) | Command::NoTarpitCapture => {
            let _ = match &cfg.tarpit_capture {
                Some(c) => writeln!(r, "tarpit_capture {c}"),
                None => writeln!(r, "no tarpit_capture"),
            };
        }
        Command::TarpitRate(_) | Command::NoTarpitRate => {
            let _ = match &cfg.tarpit_rate {
                Some(c) => writeln!(r, "tarpit_rate {c}"),
                None => writeln!(r, "no tarpit_rate"),
            };
        }
        Command::Tarpit => {
            r.push_str(&stats::tarpit_text(cfg, state.tarpit.as_ref()));
        }
        Command::Listen(_) => {
            // As it was given (C Pen): `8080` stays `8080`.
            if let Some(l) = cfg.listen_text() {
                let _ = writeln!(r, "{l}");
            }
        }
        Command::Control => {
            if let Some(c) = &cfg.control {
                let _ = writeln!(r, "{c}");
            }
        }
        Command::Log(_) => {
            if let Some(l) = &cfg.log {
                let _ = writeln!(r, "{l}");
            }
        }
        Command::WebStats(_) => {
            if let Some(p) = &cfg.web_stats {
                let _ = writeln!(r, "{}", p.display());
            }
        }
        Command::Prometheus(_) => {
            if let Some(a) = &cfg.prometheus {
                let _ = writeln!(r, "{a}");
            }
        }
        Command::Version => {
            let _ = writeln!(r, "{}", crate::cli::VERSION);
        }
        Command::ProxyProtocol(_) => {
            let _ = writeln!(r, "{}", cfg.proxy_protocol.as_str());
        }
        Command::AcceptProxy(_) => {
            let _ = writeln!(
                r,
                "{} timeout {}\n{}",
                cfg.accept_proxy
                    .map_or("off", crate::proxyproto::Accept::as_str),
                cfg.accept_proxy_timeout_secs,
                state.proxy_headers.line()
            );
        }
        Command::TableHash => {
            let d = crate::select::dsr::TableDigest::of(&state.balancer, cfg.mode, env.now);
            let _ = writeln!(r, "{d}");
        }
        Command::Mode => {
            let m = cfg.mode;
            let w = |on: bool, name: &str| format!("{}{name}", if on { "" } else { "no " });
            let _ = writeln!(
                r,
                "{} {} {} {} {}",
                w(m.hash, "hash"),
                w(m.roundrobin, "roundrobin"),
                w(m.stubborn, "stubborn"),
                w(m.weight, "weight"),
                w(m.prio, "prio")
            );
        }
        Command::Pid => {
            let _ = writeln!(r, "{}", env.pid);
        }
        Command::Upgrade => {
            let _ = writeln!(
                r,
                "upgrade: a start-up command: start the new pen with the same command line and -O upgrade"
            );
        }
        Command::UpgradeSocket(_) => {
            let path =
                crate::upgrade::socket_path(cfg.upgrade_socket.as_deref(), cfg.pid_file.as_deref());
            let _ = writeln!(
                r,
                "{}",
                path.map_or_else(String::new, |p| p.display().to_string())
            );
        }
        Command::DrainTimeout(_) => {
            let _ = writeln!(r, "{}", cfg.drain_timeout_secs);
        }
        Command::Servers => {
            // sx/rx include the bytes of open connections, as C Pen's copy loop counts them
            // (and as the status page and Prometheus do), each byte once.
            for (i, s) in state.balancer.servers().iter().enumerate() {
                let (addr, port) = stats::server_address(s);
                let (open_sx, open_rx) = env.conns.unreported(crate::select::Target::Server(i));
                let _ = write!(
                    r,
                    "{i} addr {addr} port {port} conn {} max {} hard {} weight {} prio {} sx {} rx {}",
                    s.established,
                    s.config.maxc,
                    s.config.hard,
                    s.config.weight,
                    s.config.prio,
                    s.sx.saturating_add(open_sx),
                    s.rx.saturating_add(open_rx)
                );
                // pen-rs's health check, only on servers that have one (C Pen's line otherwise)
                if let Some(h) = state.checks.get(i) {
                    let _ = write!(r, " {}", stats::check_summary(h, env.now));
                }
                // pen-rs's PROXY protocol header, only on servers that get one
                let proxy = cfg.proxy_for(Some(i));
                if proxy != crate::config::SendProxy::Off {
                    let _ = write!(r, " proxy {}", proxy.as_str());
                }
                r.push('\n');
            }
        }
        Command::Recent(secs) => {
            let window = Duration::from_secs(secs.unwrap_or(300));
            for c in state.balancer.clients() {
                if env.now.saturating_sub(c.last_seen) > window {
                    continue;
                }
                let _ = writeln!(
                    r,
                    "{} connects {} sx {} rx {}",
                    stats::client_address(&c.key),
                    c.connects,
                    c.sx,
                    c.rx
                );
            }
        }
        Command::Connection(n) => {
            let n = *n as usize;
            if n >= cfg.conn_max {
                let _ = writeln!(r, "Connection {n} out of range");
            } else {
                let _ = writeln!(r, "Connection {n}:");
                let udp = state
                    .udp
                    .as_ref()
                    .filter(|_| env.conns.rows.is_empty())
                    .map(|u| stats::UdpReport::of(u, env.now));
                let flow = udp.as_ref().and_then(|u| u.flows.get(n));
                match (env.conns.rows.iter().find(|c| c.index == n), flow) {
                    // `-U`: the flows in the order of the status page (oldest first).
                    (None, Some(f)) => {
                        let _ = writeln!(
                            r,
                            "state = 2\ndownfd = -1, upfd = -1\nclient = {}, server = {}\npend = 0\n\
                             udp flow: server address {}, idle {} s, expires in {} s, sent {}, received {}",
                            f.client,
                            f.server,
                            f.server_address,
                            f.idle_secs,
                            f.expires_in_secs,
                            f.sx,
                            f.rx
                        );
                    }
                    (Some(c), _) => {
                        let state = if c.upfd >= 0 { 2 } else { 1 };
                        let _ = writeln!(
                            r,
                            "state = {state}\ndownfd = {}, upfd = {}\nclient = {}, server = {}\npend = {}",
                            c.downfd,
                            c.upfd,
                            c.client,
                            c.server,
                            c.pending_down + c.pending_up
                        );
                    }
                    (None, None) => {
                        let _ = writeln!(
                            r,
                            "state = 0\ndownfd = -1, upfd = -1\nclient = -1, server = -1\npend = 0"
                        );
                    }
                }
            }
        }
        Command::Close(n) => {
            let n = *n as usize;
            if n >= cfg.conn_max {
                let _ = writeln!(r, "Connection {n} out of range");
            } else {
                let _ = writeln!(r, "Forcibly closing connection {n}");
                out.actions.push(Action::Close(n));
            }
        }
        Command::Socket(fd) => {
            let fd = i64::from(*fd);
            let conn = env
                .conns
                .rows
                .iter()
                .find(|c| i64::from(c.downfd) == fd || i64::from(c.upfd) == fd)
                .map_or(-1, |c| i64::try_from(c.index).unwrap_or(-1));
            let _ = writeln!(r, "Socket {fd} belongs to connection {conn}");
        }
        Command::Status => match &cfg.web_stats {
            Some(path) => {
                let snap = Snapshot::capture(state, env.now, env.unix_time, env.conns);
                let html = stats::html(&snap);
                r.push_str(&html);
                out.actions.push(Action::WebStats {
                    path: path.clone(),
                    html,
                });
            }
            None => r.push_str("Unable to create webstats\n"),
        },
        Command::Exit => {
            if cfg.exit_enabled {
                out.actions.push(Action::Exit);
            } else {
                r.push_str("Exit is not enabled; restart with -X flag\n");
            }
        }
        Command::Write(file) => match file.clone().or_else(|| cfg.config_file.clone()) {
            Some(path) => out.actions.push(Action::Write {
                path,
                text: write_config(cfg),
            }),
            None => r.push_str(&error_line(
                "write",
                "no file given and pen was started without -F; expected write FILE",
            )),
        },
        Command::Include(path) => out.actions.push(Action::Include(path.clone())),
        Command::Server(s) => {
            if let Some(t) = s.blacklist
                && let Err(e) = state.balancer.blacklist(s.index, t, env.now)
            {
                r.push_str(&error_line("server", &e.to_string()));
            }
            out.actions.push(Action::ServersChanged);
        }
        // Commands that change settings and reply nothing (as C Pen).
        Command::Flag(..)
        | Command::Acl { .. }
        | Command::NoAcl(_)
        | Command::DsrIf(_)
        | Command::DsrIp(_)
        | Command::EventBackend(_)
        | Command::NoLog
        | Command::NoWebStats
        | Command::NoPrometheus
        | Command::PendingMax(_)
        | Command::Source(_)
        | Command::SslCiphers(_)
        | Command::SslClientRenegotiationInterval(_)
        | Command::SslOcspResponse(_)
        | Command::SslOption(_)
        | Command::SslSniPath(_)
        | Command::TcpFastclose(_)
        | Command::TarpitPersist(_) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use crate::select::{Client, Target};

    fn shared() -> State {
        let s = |port: u16, maxc: u32, hard: u32, weight: u32, prio: u32| ServerConfig {
            host: Some(HostSpec::Ip("127.0.0.1".parse().unwrap())),
            port,
            maxc,
            hard,
            weight,
            prio,
            ..ServerConfig::default()
        };
        State::new(Config {
            listen: Some(ListenAddr::parse("127.0.0.1:19991").unwrap()),
            control: Some("127.0.0.1:19990".into()),
            servers: vec![s(19992, 0, 0, 0, 0), s(19993, 5, 10, 2, 1)],
            ..Config::default()
        })
    }

    fn run(sh: &mut State, line: &str) -> Outcome {
        run_with(sh, line, &OpenConns::default())
    }

    fn run_with(sh: &mut State, line: &str, conns: &OpenConns) -> Outcome {
        let resolved = Resolved::new();
        let env = Env {
            now: Duration::from_secs(1000),
            unix_time: 1_700_000_000,
            pid: 4242,
            resolved: &resolved,
            conns,
        };
        execute_line(sh, line, &env)
    }

    fn reply(sh: &mut State, line: &str) -> String {
        run(sh, line).reply
    }

    #[test]
    fn server_check_is_set_shown_written_and_steers_selection() {
        let mut sh = shared();
        assert_eq!(
            reply(
                &mut sh,
                "server 1 check http GET /health 200-399 interval 2 rise 2 fall 3"
            ),
            ""
        );
        // unknown until the first result: held out of selection
        let c = Client {
            ip: Some("10.0.0.9".parse().unwrap()),
            port: 1,
        };
        let now = Duration::from_secs(1000);
        assert!(!sh.balancer.try_server(Target::Server(1), &c, now));
        let servers = reply(&mut sh, "servers");
        let lines: Vec<&str> = servers.lines().collect();
        assert!(!lines[0].contains("check"), "{servers}");
        assert!(
            lines[1].ends_with(" rx 0 check unknown changed - last -"),
            "{servers}"
        );
        // a probe's failure: down
        let (probes, _) = sh.due_probes(now, 8);
        assert_eq!(probes.len(), 1);
        assert_eq!(probes[0].addr.to_string(), "127.0.0.1:19993");
        let ch = sh.record_check(&probes[0], now, false, "HTTP 500").unwrap();
        assert_eq!(ch.state, crate::health::CheckState::Down);
        assert!(!sh.balancer.try_server(Target::Server(1), &c, now));
        assert!(reply(&mut sh, "servers").contains("check down changed 0 last fail \"HTTP 500\""));
        // two successes (rise 2) take it back
        for k in 1..=2 {
            let t = now + Duration::from_secs(2 * k);
            let (p, _) = sh.due_probes(t, 8);
            sh.record_check(&p[0], t, true, "HTTP 200");
        }
        assert!(sh.balancer.try_server(Target::Server(1), &c, now));
        // written back so that -F round-trips; check off removes it
        let written = crate::ctl::apply::write_config(&sh.config);
        assert!(
            written.contains(
                "server 1 address 127.0.0.1 port 19993 max 5 hard 10 weight 2 prio 1 check http GET /health 200-399 interval 2 timeout 1 rise 2 fall 3\n"
            ),
            "{written}"
        );
        let mut again = Config::default();
        assert!(crate::ctl::apply::apply_text(&mut again, &written, "w").is_empty());
        assert_eq!(again.checks, sh.config.checks);
        reply(&mut sh, "server 1 check off");
        assert!(sh.config.checks.is_empty());
        assert!(!reply(&mut sh, "servers").contains("check"));
        // a bad check names the word and what is accepted
        let e = reply(&mut sh, "server 1 check http GET /x 600");
        assert!(e.contains("600") && e.contains("status"), "{e:?}");
    }

    #[test]
    fn servers_reply_matches_c_pen_format() {
        let mut sh = shared();
        assert_eq!(
            reply(&mut sh, "servers"),
            "0 addr 127.0.0.1 port 19992 conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0\n\
             1 addr 127.0.0.1 port 19993 conn 0 max 5 hard 10 weight 2 prio 1 sx 0 rx 0\n"
        );
    }

    #[test]
    fn proxy_protocol_shows_in_servers_and_its_queries() {
        let mut sh = shared();
        assert_eq!(reply(&mut sh, "proxy_protocol"), "off\n");
        assert!(!reply(&mut sh, "servers").contains("proxy"), "C Pen's line");
        assert_eq!(reply(&mut sh, "proxy_protocol v2"), "v2\n");
        reply(&mut sh, "server 1 proxy off");
        let r = reply(&mut sh, "servers");
        let lines: Vec<&str> = r.lines().collect();
        assert!(lines[0].ends_with(" rx 0 proxy v2"), "{r}");
        assert!(lines[1].ends_with(" rx 0"), "{r}");
        reply(&mut sh, "server 1 proxy v1");
        assert!(reply(&mut sh, "servers").contains(" rx 0 proxy v1\n"));
        assert_eq!(
            reply(&mut sh, "accept_proxy"),
            "off timeout 5\naccepted 0, refused: missing 0, version 0, malformed 0, too_long 0, truncated 0, timeout 0\n"
        );
        sh.proxy_headers.refused(crate::proxyproto::Reason::Timeout);
        let r = reply(&mut sh, "accept_proxy v2 timeout 9");
        assert!(
            r.starts_with("v2 timeout 9\n") && r.contains("timeout 1\n"),
            "{r}"
        );
    }

    #[test]
    fn servers_sx_rx_include_open_connections_once() {
        let mut sh = shared();
        let t = Duration::from_secs(1);
        let target = crate::select::Target::Server(1);
        let mut open = OpenConns::default();
        let c = sh.open_connection_for_test(&mut open, target, t, 100, 2000);
        let r = run_with(&mut sh, "servers", &open).reply;
        assert!(r.contains("1 addr 127.0.0.1 port 19993 conn 1 "), "{r}");
        assert!(
            r.contains(" sx 100 rx 2000\n"),
            "live bytes are counted: {r}"
        );
        // The connection closes: its bytes move to the server's totals (and out of the open
        // connections' unreported bytes, under the same lock), counted once.
        sh.balancer.closed(target, &c, 100, 2000, t);
        open.unreported.clear();
        let r = run_with(&mut sh, "servers", &open).reply;
        assert!(r.contains("1 addr 127.0.0.1 port 19993 conn 0 "), "{r}");
        assert!(r.contains(" sx 100 rx 2000\n"), "{r}");
    }

    #[test]
    fn unset_slots_print_as_zero_address() {
        let mut sh = shared();
        assert_eq!(reply(&mut sh, "server 4 address 127.0.0.1 port 80"), "");
        let r = reply(&mut sh, "servers");
        assert!(r.contains("2 addr 0.0.0.0 port 0 conn 0"), "{r}");
        assert!(r.contains("4 addr 127.0.0.1 port 80 conn 0"), "{r}");
    }

    #[test]
    fn connection_shows_a_udp_flow_with_its_idle_time() {
        use crate::proxy::udp::{FlowTable, UdpStatus};
        let mut sh = shared();
        let t0 = Duration::from_secs(10);
        let mut table = FlowTable::new(10, Duration::from_secs(30), 4);
        let client: SocketAddr = "10.1.2.3:5353".parse().unwrap();
        table.handle_client(t0, client, 12, &mut sh.balancer);
        sh.udp = Some(UdpStatus::of(&table, t0));
        let env = Env {
            now: t0 + Duration::from_secs(4),
            unix_time: 0,
            pid: 1,
            resolved: &Resolved::new(),
            conns: &OpenConns::default(),
        };
        let r = execute_line(&mut sh, "connection 0", &env).reply;
        assert!(r.starts_with("Connection 0:\nstate = 2\n"), "{r}");
        assert!(r.contains("client = 10.1.2.3:5353, server = "), "{r}");
        assert!(
            r.contains("idle 4 s, expires in 26 s, sent 12, received 0"),
            "{r}"
        );
        let r = execute_line(&mut sh, "connection 1", &env).reply;
        assert!(r.contains("state = 0"), "no second flow: {r}");
    }

    #[test]
    fn get_set_forms_reply_the_value_after_the_change() {
        let mut sh = shared();
        for (line, want) in [
            ("blacklist", "30\n"),
            ("blacklist 7", "7\n"),
            ("timeout", "3\n"),
            ("timeout 5", "5\n"),
            ("udp_flow_idle", "60\n"),
            ("udp_flow_idle 5", "5\n"),
            ("worker_threads", "1\n"),
            ("tracking 9", "9\n"),
            ("clients_max 10", "2048\n"),
            ("conn_max 10", "500\n"),
            ("conn_max 1000", "1000\n"),
            ("debug 2", "2\n"),
            ("control_acl 1", "1\n"),
            ("client_acl", "0\n"),
            ("listen", "127.0.0.1:19991\n"),
            ("control", "127.0.0.1:19990\n"),
            ("log", ""),
            ("web_stats", ""),
            ("idlers", "Idlers: 0/0\n"),
            ("idle_timeout 5", "Idle timeout: 5 seconds\n"),
            ("tarpit_acl", "tarpit_acl = -1"),
            ("tarpit_acl 3", "tarpit_acl = 3"),
            ("pid", "4242\n"),
            ("status", "Unable to create webstats\n"),
            ("hash", ""),
        ] {
            assert_eq!(reply(&mut sh, line), want, "{line}");
        }
    }

    #[test]
    fn worker_threads_replies_the_value_in_force_and_defers_a_change() {
        let mut sh = shared();
        sh.config.worker_threads_in_force = Some(1);
        assert_eq!(reply(&mut sh, "worker_threads"), "1\n");
        assert_eq!(reply(&mut sh, "worker_threads 1"), "1\n");
        let o = run(&mut sh, "worker_threads 4");
        assert_eq!(
            o.reply,
            "worker_threads 4 takes effect at the next start (write keeps it in the -F file); 1 in force\n"
        );
        assert!(o.actions.is_empty());
        assert_eq!(sh.config.worker_threads, 4, "stored for write");
        assert_eq!(
            reply(&mut sh, "worker_threads"),
            "1\n",
            "still the value in force"
        );
        sh.config.config_file = Some("/tmp/pen.cfg".into());
        let o = run(&mut sh, "write");
        let Some(Action::Write { text, .. }) = o.actions.first() else {
            panic!("{o:?}")
        };
        assert!(text.contains("\nworker_threads 4\n"), "{text}");
        let r = reply(&mut sh, "worker_threads 0");
        assert_eq!(
            r,
            "do_cmd: ignoring command starting with 'worker_threads': expected a number of threads from 1 to 1024, got \"0\"\n"
        );
        assert_eq!(sh.config.worker_threads, 4);
        assert_eq!(
            reply(&mut sh, "worker_threads 1"),
            "1\n",
            "back to the value in force"
        );
    }

    #[test]
    fn mode_lists_every_flag() {
        let mut sh = shared();
        assert_eq!(
            reply(&mut sh, "mode"),
            "no hash no roundrobin no stubborn no weight no prio\n"
        );
        for l in ["hash", "weight", "prio", "stubborn", "roundrobin"] {
            reply(&mut sh, l);
        }
        assert_eq!(
            reply(&mut sh, "mode"),
            "hash roundrobin stubborn weight prio\n"
        );
        assert!(sh.balancer.mode().stubborn, "balancer follows the mode");
    }

    #[test]
    fn unknown_and_malformed_commands_get_one_error_line_naming_them() {
        let mut sh = shared();
        let r = reply(&mut sh, "frobnicate now");
        assert!(
            r.starts_with("do_cmd: ignoring command starting with 'frobnicate'"),
            "{r}"
        );
        assert_eq!(r.matches('\n').count(), 1);
        let r = reply(&mut sh, "timeout abc");
        assert!(r.contains("'timeout'") && r.contains("\"abc\""), "{r}");
        assert_eq!(r.matches('\n').count(), 1);
        let r = reply(&mut sh, "timeout 0");
        assert!(r.contains("'timeout'"), "{r}");
        assert_eq!(reply(&mut sh, "timeout"), "3\n", "config unchanged");
    }

    #[test]
    fn exit_needs_dash_x() {
        let mut sh = shared();
        let o = run(&mut sh, "exit");
        assert_eq!(o.reply, "Exit is not enabled; restart with -X flag\n");
        assert!(o.actions.is_empty());
        sh.config.exit_enabled = true;
        assert_eq!(run(&mut sh, "exit").actions, vec![Action::Exit]);
    }

    #[test]
    fn server_blacklist_steers_the_balancer() {
        let mut sh = shared();
        assert_eq!(reply(&mut sh, "server 1 blacklist 20"), "");
        assert!(sh.balancer.is_blacklisted(1, Duration::from_secs(1000)));
        assert!(!sh.balancer.is_blacklisted(1, Duration::from_secs(1021)));
        reply(&mut sh, "server 1 blacklist 0");
        assert!(!sh.balancer.is_blacklisted(1, Duration::from_secs(1000)));
        let r = reply(&mut sh, "server 70000 blacklist 3");
        assert!(
            r.starts_with("do_cmd: ignoring command starting with 'server'"),
            "{r}"
        );
    }

    #[test]
    fn server_change_reaches_the_balancer() {
        let mut sh = shared();
        reply(&mut sh, "server 2 address 127.0.0.2 port 81 weight 3");
        let st = sh.balancer.server(2).unwrap();
        assert_eq!(
            st.addr,
            Some(BackendAddr::Inet("127.0.0.2:81".parse().unwrap()))
        );
        assert_eq!(st.config.weight, 3);
        reply(&mut sh, "server 0 port 9999");
        assert_eq!(
            sh.balancer.addr(Target::Server(0)),
            Some(&BackendAddr::Inet("127.0.0.1:9999".parse().unwrap()))
        );
    }

    #[test]
    fn host_names_are_taken_from_the_resolved_map() {
        let mut sh = shared();
        let cmd = command::parse("server 1 address backend.example port 81")
            .unwrap()
            .unwrap();
        assert_eq!(
            names_to_resolve(&sh, &cmd),
            vec![("backend.example".to_string(), 81)]
        );
        let mut resolved = Resolved::new();
        resolved.insert(
            ("backend.example".into(), 81),
            "10.1.1.1:81".parse().unwrap(),
        );
        let env = Env {
            now: Duration::ZERO,
            unix_time: 0,
            pid: 1,
            resolved: &resolved,
            conns: &OpenConns::default(),
        };
        assert_eq!(execute(&mut sh, &cmd, &env).reply, "");
        assert_eq!(
            sh.balancer.addr(Target::Server(1)),
            Some(&BackendAddr::Inet("10.1.1.1:81".parse().unwrap()))
        );
        assert!(names_to_resolve(&sh, &cmd).is_empty(), "already resolved");
    }

    #[test]
    fn recent_lists_clients_seen_in_the_window() {
        let mut sh = shared();
        let c = Client {
            ip: Some("127.0.0.9".parse().unwrap()),
            port: 1,
        };
        sh.balancer.select(&c, Duration::from_secs(500));
        assert_eq!(reply(&mut sh, "recent"), "");
        assert_eq!(
            reply(&mut sh, "recent 600"),
            "127.0.0.9 connects 1 sx 0 rx 0\n"
        );
    }

    #[test]
    fn a_server_command_asks_the_io_layer_to_tell_the_servers_changed() {
        let mut sh = shared();
        let o = run(&mut sh, "server 1 weight 7");
        assert_eq!(o.actions, vec![Action::ServersChanged]);
        let o = run(&mut sh, "server 0 blacklist 10");
        assert_eq!(o.actions, vec![Action::ServersChanged]);
        // Other commands and a refused server command leave the hook alone.
        assert_eq!(run(&mut sh, "servers").actions, vec![]);
        let o = run(&mut sh, "server 1 weight nine");
        assert!(o.reply.starts_with("do_cmd: ignoring"), "{}", o.reply);
        assert_eq!(o.actions, vec![]);
    }

    #[test]
    fn connection_and_socket_read_the_open_connections_given() {
        let mut sh = shared();
        let mut open = OpenConns::default();
        sh.open_connection_for_test(&mut open, Target::Server(1), Duration::from_secs(1), 5, 6);
        open.rows[0].downfd = 9;
        open.rows[0].upfd = 10;
        let r = run_with(&mut sh, "connection 0", &open).reply;
        assert_eq!(
            r,
            "Connection 0:\nstate = 2\ndownfd = 9, upfd = 10\nclient = test, server = 1\npend = 0\n"
        );
        assert_eq!(
            run_with(&mut sh, "socket 10", &open).reply,
            "Socket 10 belongs to connection 0\n"
        );
        assert_eq!(
            run(&mut sh, "socket 10").reply,
            "Socket 10 belongs to connection -1\n"
        );
    }

    #[test]
    fn connection_and_close_check_the_range() {
        let mut sh = shared();
        assert_eq!(
            reply(&mut sh, "connection 0"),
            "Connection 0:\nstate = 0\ndownfd = -1, upfd = -1\nclient = -1, server = -1\npend = 0\n"
        );
        assert_eq!(
            reply(&mut sh, "connection 500"),
            "Connection 500 out of range\n"
        );
        let o = run(&mut sh, "close 3");
        assert_eq!(o.reply, "Forcibly closing connection 3\n");
        assert_eq!(o.actions, vec![Action::Close(3)]);
        assert_eq!(
            reply(&mut sh, "socket 7"),
            "Socket 7 belongs to connection -1\n"
        );
    }

    /// C Pen replies the listen address as it was given (recorded: `8080` -> `8080`,
    /// `127.0.0.1:18081` -> `127.0.0.1:18081`, `:::18082` -> `:::18082`, and after
    /// `listen 18086` -> `18086`).
    #[test]
    fn listen_replies_the_address_as_given() {
        let mut sh = shared();
        sh.config.listen = Some(ListenAddr::parse("8080").unwrap());
        sh.config.listen_given = Some("8080".into());
        assert_eq!(reply(&mut sh, "listen"), "8080\n");
        assert_eq!(reply(&mut sh, "listen :::18082"), ":::18082\n");
        assert_eq!(reply(&mut sh, "listen"), ":::18082\n");
        let o = run(&mut sh, "listen 18086");
        assert_eq!(o.reply, "18086\n");
        assert_eq!(
            o.actions,
            vec![Action::Listen {
                new: ListenAddr::parse("0.0.0.0:18086").unwrap(),
                old: Some(ListenAddr::parse("[::]:18082").unwrap()),
                old_given: Some(":::18082".into()),
            }]
        );
        // The same address spelled differently reopens nothing.
        let o = run(&mut sh, "listen 0.0.0.0:18086");
        assert_eq!((o.reply.as_str(), o.actions.len()), ("0.0.0.0:18086\n", 0));
        // write's header carries it as given, and reads back to the same address.
        let text = crate::ctl::apply::write_config(&sh.config);
        assert!(text.contains(" 0.0.0.0:18086\n"), "{text}");
    }

    fn refused(sh: &State, line: &str, origin: Origin) -> Option<String> {
        let cmd = crate::ctl::command::parse(line).unwrap().unwrap();
        refusal(&cmd, &sh.config, origin)
    }

    #[test]
    fn tcp_clients_may_not_name_files_unless_control_any_file() {
        let mut sh = shared();
        sh.config.config_file = Some("/etc/pen.cfg".into());
        sh.config.web_stats = Some("/var/www/pen.html".into());
        sh.config.log = Some("/var/log/pen.log".into());
        for line in [
            "write /etc/cron.d/x",
            "include /etc/shadow",
            "web_stats /etc/passwd",
            "log /etc/profile",
            "log relative.log",
        ] {
            let word = line.split(' ').next().unwrap();
            let r = refused(&sh, line, Origin::Tcp).unwrap_or_else(|| panic!("{line}"));
            assert!(
                r.starts_with(&format!(
                    "do_cmd: ignoring command starting with '{word}': a file name ("
                )) && r.contains("control_any_file")
                    && r.ends_with('\n')
                    && r.lines().count() == 1,
                "{r}"
            );
            assert_eq!(refused(&sh, line, Origin::Unix), None, "{line}");
        }
        assert!(
            refused(&sh, "write /x", Origin::Tcp)
                .unwrap()
                .contains("`write` alone")
        );
        for line in [
            "write",
            "write /etc/pen.cfg",
            "include /etc/pen.cfg",
            "web_stats",
            "web_stats /var/www/pen.html",
            "log",
            "log /var/log/pen.log",
            "log 10.0.0.5:10000",
            "no log",
            "no web_stats",
            "servers",
            "server 1 blacklist 5",
        ] {
            assert_eq!(refused(&sh, line, Origin::Tcp), None, "{line}");
        }
        sh.config.control_any_file = true;
        assert_eq!(refused(&sh, "write /tmp/x.cfg", Origin::Tcp), None);
        assert_eq!(refused(&sh, "include /tmp/x.cfg", Origin::Tcp), None);
    }

    #[test]
    fn control_any_file_is_never_set_from_the_control_socket() {
        let mut sh = shared();
        for origin in [Origin::Tcp, Origin::Unix] {
            for line in ["control_any_file", "no control_any_file"] {
                let r = refused(&sh, line, origin).unwrap_or_else(|| panic!("{line}"));
                assert!(r.contains("-O/-o or in the -F file"), "{r}");
            }
        }
        sh.config.control_any_file = true;
        assert!(refused(&sh, "no control_any_file", Origin::Tcp).is_some());
    }

    #[test]
    fn table_hash_replies_one_line_that_follows_the_servers() {
        let (mut a, mut b) = (shared(), shared());
        let r = reply(&mut a, "table_hash");
        assert!(
            r.starts_with("servers 2 available 2 servers_hash ") && r.ends_with('\n'),
            "{r}"
        );
        assert!(r.contains(" maglev_hash "), "{r}");
        assert_eq!(r, reply(&mut b, "table_hash"), "same config, same digests");
        assert_eq!(reply(&mut b, "server 1 weight 7"), "");
        assert_ne!(r, reply(&mut b, "table_hash"), "a weight change shows");
        assert_eq!(reply(&mut a, "server 1 weight 7"), "");
        assert_eq!(reply(&mut a, "table_hash"), reply(&mut b, "table_hash"));
    }

    #[test]
    fn version_replies_pen_rs_and_its_version() {
        let mut sh = shared();
        let r = reply(&mut sh, "version");
        assert_eq!(r, format!("{}\n", crate::cli::VERSION));
        assert!(r.starts_with("pen-rs "), "{r}");
    }

    #[test]
    fn listen_log_and_limits_become_actions() {
        let mut sh = shared();
        let o = run(&mut sh, "listen 127.0.0.1:20000");
        assert_eq!(o.reply, "127.0.0.1:20000\n");
        assert_eq!(
            o.actions,
            vec![Action::Listen {
                new: ListenAddr::parse("127.0.0.1:20000").unwrap(),
                old: Some(ListenAddr::parse("127.0.0.1:19991").unwrap()),
                old_given: None,
            }]
        );
        let o = run(&mut sh, "log /tmp/x.log");
        assert_eq!(o.reply, "/tmp/x.log\n");
        assert_eq!(o.actions, vec![Action::Log(Some("/tmp/x.log".into()))]);
        assert_eq!(run(&mut sh, "no log").actions, vec![Action::Log(None)]);
        assert_eq!(
            run(&mut sh, "conn_max 600").actions,
            vec![Action::Limits {
                conn_max: 600,
                pending_max: 100
            }]
        );
        assert_eq!(run(&mut sh, "debug 1").actions, vec![Action::Debug(1)]);
        let o = run(&mut sh, "prometheus 127.0.0.1:9100");
        assert_eq!(o.reply, "127.0.0.1:9100\n");
        assert_eq!(
            o.actions,
            vec![Action::Prometheus {
                new: Some("127.0.0.1:9100".parse().unwrap()),
                old: None
            }]
        );
        assert_eq!(run(&mut sh, "prometheus").reply, "127.0.0.1:9100\n");
        assert_eq!(
            run(&mut sh, "no prometheus").actions,
            vec![Action::Prometheus {
                new: None,
                old: Some("127.0.0.1:9100".parse().unwrap())
            }]
        );
    }

    #[test]
    fn write_uses_the_config_file_by_default() {
        let mut sh = shared();
        let r = reply(&mut sh, "write");
        assert!(r.starts_with("do_cmd: ignoring command starting with 'write'"));
        sh.config.config_file = Some("/tmp/pen.cfg".into());
        let o = run(&mut sh, "write");
        match &o.actions[..] {
            [Action::Write { path, text }] => {
                assert_eq!(path, &PathBuf::from("/tmp/pen.cfg"));
                assert!(
                    text.contains("server 1 address 127.0.0.1 port 19993 max 5"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn written_config_keeps_the_prometheus_address() {
        let mut sh = shared();
        sh.config.config_file = Some("/tmp/pen.cfg".into());
        run(&mut sh, "prometheus [::1]:9100");
        let o = run(&mut sh, "write");
        let Some(Action::Write { text, .. }) = o.actions.first() else {
            panic!("{o:?}")
        };
        let mut fresh = Config::default();
        assert!(crate::ctl::apply::apply_text(&mut fresh, text, "w").is_empty());
        assert_eq!(fresh.prometheus, Some("[::1]:9100".parse().unwrap()));
    }

    #[test]
    fn status_with_web_stats_replies_the_page_and_writes_it() {
        let mut sh = shared();
        sh.config.web_stats = Some("/tmp/w.html".into());
        let o = run(&mut sh, "status");
        assert!(o.reply.contains("<title>Pen status page</title>"));
        assert!(matches!(&o.actions[..], [Action::WebStats { html, .. }] if *html == o.reply));
    }

    /// Seeded random command lines (real words, numbers, junk): nothing panics, every error is
    /// one line, and the balancer always mirrors the configuration.
    #[test]
    fn random_command_lines_never_break_the_state() {
        const WORDS: &[&str] = &[
            "server",
            "servers",
            "blacklist",
            "timeout",
            "tracking",
            "mode",
            "hash",
            "no",
            "weight",
            "prio",
            "roundrobin",
            "stubborn",
            "address",
            "port",
            "max",
            "hard",
            "acl",
            "permit",
            "deny",
            "client_acl",
            "control_acl",
            "conn_max",
            "clients_max",
            "recent",
            "connection",
            "close",
            "socket",
            "status",
            "write",
            "listen",
            "log",
            "web_stats",
            "debug",
            "tarpit_acl",
            "idlers",
            "idle_timeout",
            "exit",
            "pid",
            "include",
            "-1",
            "0",
            "1",
            "7",
            "65535",
            "70000",
            "4294967296",
            "127.0.0.1",
            "::1",
            "10.0.0.0",
            "255.0.0.0",
            "/tmp/x",
            "abc",
            "#",
            "\u{e9}",
            "\t",
        ];
        let seed: u64 = 0x5eed_c0de;
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut sh = shared();
        for i in 0..20_000 {
            let n = (next() % 6) as usize;
            let line: Vec<&str> = (0..n)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect();
            let line = line.join(" ");
            let o = run(&mut sh, &line);
            if o.reply.starts_with("do_cmd:") {
                assert_eq!(
                    o.reply.matches('\n').count(),
                    1,
                    "seed {seed:#x} step {i}: {line:?} -> {:?}",
                    o.reply
                );
            }
            assert_eq!(
                sh.balancer.servers().len(),
                sh.config.servers.len(),
                "seed {seed:#x} step {i}: {line:?}"
            );
            assert_eq!(
                sh.balancer.mode(),
                sh.config.mode,
                "seed {seed:#x} step {i}: {line:?}"
            );
            assert_eq!(sh.balancer.blacklist_secs(), sh.config.blacklist_secs);
        }
        let servers = reply(&mut sh, "servers");
        assert_eq!(servers.lines().count(), sh.config.servers.len());
    }

    #[test]
    fn obsolete_commands_are_accepted_silently() {
        let mut sh = shared();
        assert_eq!(run(&mut sh, "block"), Outcome::default());
        assert_eq!(run(&mut sh, "no delayed_forward"), Outcome::default());
        assert_eq!(run(&mut sh, "# just a comment"), Outcome::default());
    }

    #[test]
    fn tarpit_commands_set_query_and_report_the_engines_counters() {
        let mut sh = shared();
        assert_eq!(reply(&mut sh, "tarpit_capture"), "no tarpit_capture\n");
        assert_eq!(
            reply(&mut sh, "tarpit_capture 10.9.0.0/24 wait 2"),
            "tarpit_capture 10.9.0.0/24 wait 2 max 4096\n"
        );
        assert_eq!(
            reply(&mut sh, "tarpit_rate 50 net 5"),
            "tarpit_rate 50 burst 50 net 5 net_burst 5\n"
        );
        assert_eq!(reply(&mut sh, "tarpit_persist"), "");
        assert!(sh.config.tarpit_persist);
        let t = reply(&mut sh, "tarpit");
        assert!(t.contains("persist on\n"), "{t}");
        assert!(t.contains("no DSR engine running"), "{t}");
        sh.tarpit = Some(crate::engine::TarpitStatus {
            held: 3,
            probes: 17,
            rate_dropped: 250,
            captured: 1,
            captured_addrs: vec!["10.9.0.50".parse().unwrap()],
            ..Default::default()
        });
        let t = reply(&mut sh, "tarpit");
        for want in [
            "held connections 3\n",
            "probes answered 17\n",
            "dropped by rate cap 250\n",
            "captured address 10.9.0.50\n",
        ] {
            assert!(t.contains(want), "{want:?} in {t}");
        }
        // written back only when set, and read back the same
        let w = write_config(&sh.config);
        for want in [
            "tarpit_persist\n",
            "tarpit_capture 10.9.0.0/24 wait 2 max 4096\n",
            "tarpit_rate 50 burst 50 net 5 net_burst 5\n",
        ] {
            assert!(w.contains(want), "{want:?} in {w}");
        }
        reply(&mut sh, "no tarpit_persist");
        reply(&mut sh, "no tarpit_capture");
        assert_eq!(reply(&mut sh, "no tarpit_rate"), "no tarpit_rate\n");
        let w = write_config(&sh.config);
        assert!(
            !w.contains("tarpit_persist")
                && !w.contains("tarpit_capture")
                && !w.contains("tarpit_rate"),
            "{w}"
        );
        assert!(!sh.config.tarpit_persist && sh.config.tarpit_capture.is_none());
    }
}
