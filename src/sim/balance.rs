//! The whole-balancer simulation: a trace's flows drive the daemon's own cores in virtual
//! time. Nothing here decides anything: server choice is [`Balancer`](crate::select::Balancer) (client tracking, hash,
//! round robin, weight, prio, limits, blacklist, failover, emergency, abuse), UDP flows are
//! [`FlowTable`] with the balancer as its [`Selector`] (exactly as `pen -U` wires them), and
//! penctl events run through [`crate::ctl::reply::execute_line`], the control socket's code.
//! This module only replays the calls the IO shells make, in the order they make them:
//!
//! - TCP session opens: `select`, then per candidate `try_server`, `connect_started` and
//!   `connect_ok` (or `connect_failed` when the simulated server is down, and on to the next
//!   candidate); it closes with `closed` at its close time (or when its server goes down).
//!   `conn_max` sessions at once at most; more are refused (pen does not accept them).
//! - UDP datagrams: `handle_client`; a datagram forwarded to a down server gets the ICMP error
//!   the kernel would report (`server_unreachable`) and is lost; one forwarded to an up server
//!   is answered at once (`handle_server`, with the captured reply's length). Idle flows expire
//!   at [`FlowTable::poll_timeout`].
//! - Events: `at 5s server 1 down` / `up` (the backend stops / starts answering), and
//!   `at 10s penctl "server 0 weight 3"` or any penctl line (`at 12s client_acl ...`).
//!
//! Deterministic: the same trace, arguments and events give the same report byte for byte.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{HostSpec, ListenAddr};
use crate::ctl::reply::{Env, Resolved, execute_line};
use crate::proxy::Shared;
use crate::proxy::udp::{ClientVerdict, FlowTable, UdpStats};
use crate::select::{Client, ServerEvent, Target};

use super::mapping::AddressMap;
use super::trace::{Proto, Trace};

/// What a scheduled event does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Server slot N stops answering (TCP connects refused, UDP datagrams get port unreachable,
    /// its open TCP sessions are cut).
    Down(usize),
    /// Server slot N answers again.
    Up(usize),
    /// A penctl command line, run as the control socket runs it.
    Penctl(String),
}

/// `at TIME ACTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub action: Action,
}

/// `5s`, `1.5s`, `250ms`, `2m`.
pub fn parse_time(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad time {s:?}; expected a number with ms, s or m, e.g. 5s or 250ms");
    let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(bad());
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 || v * unit > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * unit))
}

impl Event {
    /// `at 5s server 1 down`, `at 8s server 1 up`, `at 10s penctl "server 0 weight 3"`,
    /// `at 12s client_acl 1` (a bare penctl line).
    pub fn parse(s: &str) -> Result<Event, String> {
        let bad = |why: &str| {
            format!(
                "bad event {s:?}: {why}; expected `at TIME server N down|up`, `at TIME penctl \
                 \"COMMAND\"` or `at TIME COMMAND`, e.g. `at 5s server 1 down`"
            )
        };
        let rest = s.trim().strip_prefix("at ").ok_or_else(|| bad("no `at`"))?;
        let (time, rest) = rest
            .trim_start()
            .split_once(' ')
            .ok_or_else(|| bad("nothing after the time"))?;
        let at = parse_time(time).map_err(|e| bad(&e))?;
        let rest = rest.trim();
        let words: Vec<&str> = rest.split_ascii_whitespace().collect();
        let action = match words.as_slice() {
            ["server", n, "down"] | ["server", n, "up"] => {
                let idx: usize = n.parse().map_err(|_| bad("server index is not a number"))?;
                if words[2] == "down" {
                    Action::Down(idx)
                } else {
                    Action::Up(idx)
                }
            }
            ["penctl", ..] => {
                let line = rest["penctl".len()..].trim();
                let line = line
                    .strip_prefix('"')
                    .and_then(|l| l.strip_suffix('"'))
                    .unwrap_or(line);
                if line.is_empty() {
                    return Err(bad("empty penctl command"));
                }
                Action::Penctl(line.to_string())
            }
            [] => return Err(bad("no action")),
            _ => Action::Penctl(rest.to_string()),
        };
        Ok(Event { at, action })
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {:.3}s ", self.at.as_secs_f64())?;
        match &self.action {
            Action::Down(n) => write!(f, "server {n} down"),
            Action::Up(n) => write!(f, "server {n} up"),
            Action::Penctl(l) => write!(f, "penctl {l:?}"),
        }
    }
}

/// A backend's name in reports: `0`, `1`, ..., `emergency`, `abuse`.
pub fn target_name(t: Target) -> String {
    match t {
        Target::Server(n) => n.to_string(),
        Target::Emergency => "emergency".into(),
        Target::Abuse => "abuse".into(),
    }
}

/// What happened to one flow of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowOutcome {
    pub proto: Proto,
    /// As captured.
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// As replayed (the address map).
    pub lab_client: SocketAddr,
    pub first_frame: u64,
    pub start: Duration,
    /// The backend that first served it; `None`: refused / every datagram lost.
    pub backend: Option<Target>,
    /// UDP: later datagrams that went to another backend than the previous one (time, backend).
    pub moves: Vec<(Duration, Target)>,
    /// UDP: datagrams sent; TCP: 1.
    pub datagrams: u32,
    /// UDP: the backend each datagram went to and was answered by (`None`: lost).
    pub answers: Vec<Option<Target>>,
    /// UDP datagrams lost (no server, table full, or their server was down).
    pub lost: u32,
    /// TCP: the connection was refused (no server, `conn_max`).
    pub refused: bool,
    /// Candidates that failed before one worked (TCP connects refused; UDP unreachables).
    pub failovers: u32,
    /// TCP: cut when its server went down.
    pub cut: Option<Duration>,
}

/// Per-backend totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendTotals {
    /// New connections (TCP) or new flows (UDP).
    pub new: u64,
    /// Highest number of active connections/flows at a sample.
    pub peak_active: u32,
    /// Distinct clients (original addresses) it served.
    pub clients: u64,
}

/// The simulation's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    pub trace: String,
    pub pen_args: Vec<String>,
    pub proto: Proto,
    pub events: Vec<Event>,
    /// Backend names in order (server slots, then emergency/abuse when used).
    pub backends: Vec<Target>,
    pub totals: HashMap<Target, BackendTotals>,
    pub flows: Vec<FlowOutcome>,
    /// TCP sessions left out because their start is not in the capture.
    pub start_missing: usize,
    /// Flows of the other protocol than pen's mode (left out).
    pub other_protocol: usize,
    /// Sample times and active connections per backend (in `backends` order).
    pub timeline: Vec<(Duration, Vec<u32>)>,
    /// Server down/up as the balancer saw them (blacklist intervals start at `down`).
    pub server_events: Vec<(Duration, String)>,
    /// Clients that came back after the client table forgot them (evicted or expired).
    pub clients_forgotten: u64,
    /// Clients (original addresses) served by more than one backend.
    pub clients_moved: u64,
    pub clients: u64,
    pub refused: u64,
    pub failovers: u64,
    pub lost: u64,
    pub cut: u64,
    /// UDP: the flow table's counters at the end.
    pub udp: Option<UdpStats>,
    /// Messages of penctl events (their replies, when not empty).
    pub penctl_replies: Vec<(Duration, String)>,
}

/// Options of a simulation.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// pen's arguments (without `pen`), as on its command line.
    pub pen_args: Vec<String>,
    pub events: Vec<Event>,
    /// Timeline sampling period (at most [`MAX_SAMPLES`] samples: longer traces sample less).
    pub sample: Duration,
}

/// Upper bound on timeline samples.
pub const MAX_SAMPLES: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// Scheduled event `i`.
    Event(usize),
    /// TCP session `i` closes.
    Close(usize),
    /// TCP session `i` opens.
    Open(usize),
    /// UDP flow `i`, datagram `j`.
    Datagram(usize, usize),
}

fn client_of(a: SocketAddr) -> Client {
    Client {
        ip: Some(a.ip()),
        port: a.port(),
    }
}

/// Builds pen's configuration and state from its arguments, as the daemon does; backends must
/// be literal addresses (the simulation resolves no names).
pub fn shared_from_args(args: &[String]) -> Result<Shared, String> {
    let parsed = crate::cli::parse(args.iter().cloned()).map_err(|e| e.to_string())?;
    let mut cfg = parsed.config;
    crate::cli::finish_startup(&mut cfg, &parsed.servers).map_err(|e| e.to_string())?;
    for (i, s) in cfg.servers.iter().enumerate() {
        if let Some(HostSpec::Name(n)) = &s.host {
            return Err(format!(
                "server {i}: host name {n:?}; the simulation resolves no names: give an IP address"
            ));
        }
    }
    if matches!(
        cfg.listen,
        Some(ListenAddr::Name { .. } | ListenAddr::Unix(_))
    ) {
        return Err(
            "the listen address must be [IP:]PORT for a simulation (no names, no Unix sockets)"
                .into(),
        );
    }
    Ok(Shared::new(cfg))
}

/// pen's listen address from its arguments (`0.0.0.0:PORT` when no host is given).
pub fn listen_of(shared: &Shared) -> Option<SocketAddr> {
    match &shared.config.listen {
        Some(ListenAddr::Inet(sa)) => Some(*sa),
        _ => None,
    }
}

struct Run<'a> {
    trace: &'a Trace,
    shared: Shared,
    table: FlowTable,
    down: HashSet<usize>,
    report: SimReport,
    /// TCP: the backend of each open session.
    open: BTreeMap<usize, Target>,
    active_tcp: usize,
    seen_clients: HashSet<std::net::IpAddr>,
    /// Per original client address, the backends that served it (usually one).
    client_backends: HashMap<std::net::IpAddr, Vec<Target>>,
    /// Index into `report.flows` per UDP flow / TCP session.
    udp_outcome: Vec<usize>,
    tcp_outcome: Vec<usize>,
}

impl Run<'_> {
    fn is_down(&self, t: Target) -> bool {
        matches!(t, Target::Server(n) if self.down.contains(&n))
    }

    fn note_events(&mut self, now: Duration) {
        let (events, _) = self.shared.balancer.take_events();
        for e in events {
            let line = match e {
                ServerEvent::Down { target, blacklist } => format!(
                    "server {} down (blacklisted for {}s)",
                    target_name(target),
                    blacklist.as_secs()
                ),
                ServerEvent::Up { target, down_for } => format!(
                    "server {} up after {:.3}s",
                    target_name(target),
                    down_for.as_secs_f64()
                ),
            };
            self.report.server_events.push((now, line));
        }
    }

    fn served(&mut self, outcome: usize, t: Target, now: Duration) {
        let f = &mut self.report.flows[outcome];
        match f.backend {
            None => f.backend = Some(t),
            Some(_) => {
                let last = f.moves.last().map_or(f.backend, |m| Some(m.1));
                if last != Some(t) {
                    f.moves.push((now, t));
                }
            }
        }
        let ip = f.client.ip();
        let served = self.client_backends.entry(ip).or_default();
        if !served.contains(&t) {
            served.push(t);
            self.report.totals.entry(t).or_default().clients += 1;
        }
    }

    fn forgotten_check(&mut self, client: SocketAddr, orig_ip: std::net::IpAddr) {
        if !self.seen_clients.insert(orig_ip)
            && self.shared.balancer.client(&client_of(client)).is_none()
        {
            self.report.clients_forgotten += 1;
        }
    }

    fn event(&mut self, i: usize, now: Duration, events: &[Event]) {
        match &events[i].action {
            Action::Down(n) => {
                self.down.insert(*n);
                // Open sessions to it are cut (the backend is gone).
                let cut: Vec<usize> = self
                    .open
                    .iter()
                    .filter(|(_, t)| **t == Target::Server(*n))
                    .map(|(s, _)| *s)
                    .collect();
                for s in cut {
                    self.close_tcp(s, now, true);
                }
            }
            Action::Up(n) => {
                self.down.remove(n);
            }
            Action::Penctl(line) => {
                let resolved = Resolved::new();
                let env = Env {
                    now,
                    unix_time: 0,
                    pid: 0,
                    resolved: &resolved,
                    conns: &crate::state::OpenConns::default(),
                };
                let out = execute_line(&mut self.shared, line, &env);
                if !out.reply.trim().is_empty() {
                    self.report
                        .penctl_replies
                        .push((now, format!("{line}: {}", out.reply.trim_end())));
                }
                let cfg = &self.shared.config;
                let idle = Duration::from_secs(cfg.udp_flow_idle_secs);
                if self.table.max_flows() != cfg.conn_max || self.table.idle() != idle {
                    self.table.set_limits(cfg.conn_max, idle);
                }
                self.table.follow_servers(now, &mut self.shared.balancer);
            }
        }
    }

    fn open_tcp(&mut self, i: usize, now: Duration, map: &AddressMap) {
        let s = &self.trace.tcp[i];
        let lab = map.client(s.client).unwrap_or(s.client);
        let outcome = self.report.flows.len();
        self.tcp_outcome[i] = outcome;
        self.report.flows.push(FlowOutcome {
            proto: Proto::Tcp,
            client: s.client,
            server: s.server,
            lab_client: lab,
            first_frame: s.first_frame,
            start: s.opened,
            backend: None,
            moves: Vec::new(),
            datagrams: 1,
            answers: Vec::new(),
            lost: 0,
            refused: false,
            failovers: 0,
            cut: None,
        });
        self.forgotten_check(lab, s.client.ip());
        if self.active_tcp >= self.shared.config.conn_max.max(1) {
            self.report.flows[outcome].refused = true;
            self.report.refused += 1;
            return;
        }
        let client = client_of(lab);
        let candidates = self.shared.balancer.select(&client, now);
        for t in candidates {
            let down = self.is_down(t);
            let b = &mut self.shared.balancer;
            if !b.try_server(t, &client, now) || b.addr(t).is_none() {
                continue;
            }
            b.connect_started(&client, t, now);
            if down {
                b.connect_failed(t, now);
                self.report.flows[outcome].failovers += 1;
                self.report.failovers += 1;
                continue;
            }
            b.connect_ok(t, now);
            self.open.insert(i, t);
            self.active_tcp += 1;
            self.report.totals.entry(t).or_default().new += 1;
            self.served(outcome, t, now);
            self.note_events(now);
            return;
        }
        self.note_events(now);
        self.report.flows[outcome].refused = true;
        self.report.refused += 1;
    }

    fn close_tcp(&mut self, i: usize, now: Duration, cut: bool) {
        let Some(t) = self.open.remove(&i) else {
            return;
        };
        self.active_tcp -= 1;
        let s = &self.trace.tcp[i];
        let outcome = self.tcp_outcome[i];
        let lab = self.report.flows[outcome].lab_client;
        if cut {
            self.report.flows[outcome].cut = Some(now);
            self.report.cut += 1;
        }
        self.shared.balancer.closed(
            t,
            &client_of(lab),
            s.client_data.len() as u64,
            s.server_bytes,
            now,
        );
    }

    fn datagram(&mut self, i: usize, j: usize, now: Duration, map: &AddressMap) {
        let f = &self.trace.udp[i];
        let lab = map.client(f.client).unwrap_or(f.client);
        if j == 0 {
            self.udp_outcome[i] = self.report.flows.len();
            self.report.flows.push(FlowOutcome {
                proto: Proto::Udp,
                client: f.client,
                server: f.server,
                lab_client: lab,
                first_frame: f.first_frame,
                start: f.start(),
                backend: None,
                moves: Vec::new(),
                datagrams: 0,
                answers: Vec::new(),
                lost: 0,
                refused: false,
                failovers: 0,
                cut: None,
            });
        }
        let outcome = self.udp_outcome[i];
        self.report.flows[outcome].datagrams += 1;
        let len = f.queries[j].len as usize;
        // The reply the capture has for this query (else: as long as the query).
        let reply_len = f
            .replies
            .iter()
            .find(|r| r.at >= f.queries[j].at)
            .map_or(len, |r| r.len as usize);
        if self.table.flow(&lab).is_none() {
            self.forgotten_check(lab, f.client.ip());
        }
        let verdict = self
            .table
            .handle_client(now, lab, len, &mut self.shared.balancer);
        match verdict {
            ClientVerdict::Forward {
                upstream,
                server,
                new_flow,
            } => {
                let Some(target) = self.table.flow(&lab).map(|fi| fi.target) else {
                    return;
                };
                if self.is_down(target) {
                    self.table
                        .server_unreachable(now, upstream, server, &mut self.shared.balancer);
                    self.report.flows[outcome].answers.push(None);
                    self.report.flows[outcome].lost += 1;
                    self.report.flows[outcome].failovers += 1;
                    self.report.lost += 1;
                    self.report.failovers += 1;
                } else {
                    if new_flow {
                        self.report.totals.entry(target).or_default().new += 1;
                    }
                    self.served(outcome, target, now);
                    self.report.flows[outcome].answers.push(Some(target));
                    self.table.handle_server(now, upstream, server, reply_len);
                }
            }
            ClientVerdict::Drop(_) => {
                self.report.flows[outcome].answers.push(None);
                self.report.flows[outcome].lost += 1;
                self.report.lost += 1;
            }
        }
        self.note_events(now);
    }

    fn sample(&mut self, at: Duration) {
        let active: Vec<u32> = self
            .report
            .backends
            .iter()
            .map(|t| {
                self.shared
                    .balancer
                    .state(*t)
                    .map_or(0, |s| s.established + s.pending)
            })
            .collect();
        for (t, a) in self.report.backends.iter().zip(&active) {
            let tot = self.report.totals.entry(*t).or_default();
            tot.peak_active = tot.peak_active.max(*a);
        }
        self.report.timeline.push((at, active));
    }
}

/// Runs the simulation of `trace` (clients mapped by `map`) through pen configured by
/// `opts.pen_args`. UDP flows with `-U`, TCP sessions otherwise.
pub fn simulate(trace: &Trace, map: &AddressMap, opts: &SimOptions) -> Result<SimReport, String> {
    let shared = shared_from_args(&opts.pen_args)?;
    let cfg = &shared.config;
    let proto = if cfg.udp { Proto::Udp } else { Proto::Tcp };
    let table = FlowTable::new(
        cfg.conn_max,
        Duration::from_secs(cfg.udp_flow_idle_secs),
        FlowTable::default_max_upstreams(cfg.conn_max),
    );
    let mut backends: Vec<Target> = (0..shared.balancer.servers().len())
        .map(Target::Server)
        .collect();
    if shared.balancer.emergency().is_some() {
        backends.push(Target::Emergency);
    }
    if shared.balancer.abuse().is_some() {
        backends.push(Target::Abuse);
    }
    for e in &opts.events {
        if let Action::Down(n) | Action::Up(n) = e.action
            && n >= shared.balancer.servers().len()
        {
            return Err(format!(
                "event `{e}`: there is no server {n}; pen has servers 0-{}",
                shared.balancer.servers().len().saturating_sub(1)
            ));
        }
    }
    let mut steps: Vec<(Duration, Step)> = Vec::new();
    for (i, e) in opts.events.iter().enumerate() {
        steps.push((e.at, Step::Event(i)));
    }
    let mut start_missing = 0;
    let other;
    match proto {
        Proto::Tcp => {
            other = trace.udp.len();
            for (i, s) in trace.tcp.iter().enumerate() {
                if s.start_missing {
                    start_missing += 1;
                    continue;
                }
                steps.push((s.opened, Step::Open(i)));
                let end = s.closed().unwrap_or(s.last).max(s.opened);
                steps.push((end, Step::Close(i)));
            }
        }
        Proto::Udp => {
            other = trace.tcp.len();
            for (i, f) in trace.udp.iter().enumerate() {
                for (j, d) in f.queries.iter().enumerate() {
                    steps.push((d.at, Step::Datagram(i, j)));
                }
            }
        }
    }
    steps.sort_unstable();
    let end = steps.last().map_or(Duration::ZERO, |s| s.0);
    let mut sample = opts.sample.max(Duration::from_millis(1));
    while end.as_nanos() / sample.as_nanos() > MAX_SAMPLES as u128 {
        sample *= 2;
    }
    let mut run = Run {
        trace,
        shared,
        table,
        down: HashSet::new(),
        report: SimReport {
            trace: trace.file.clone(),
            pen_args: opts.pen_args.clone(),
            proto,
            events: opts.events.clone(),
            backends,
            totals: HashMap::new(),
            flows: Vec::with_capacity(match proto {
                Proto::Udp => trace.udp.len(),
                Proto::Tcp => trace.tcp.len(),
            }),
            start_missing,
            other_protocol: other,
            timeline: Vec::new(),
            server_events: Vec::new(),
            clients_forgotten: 0,
            clients_moved: 0,
            clients: 0,
            refused: 0,
            failovers: 0,
            lost: 0,
            cut: 0,
            udp: None,
            penctl_replies: Vec::new(),
        },
        open: BTreeMap::new(),
        active_tcp: 0,
        seen_clients: HashSet::new(),
        client_backends: HashMap::new(),
        udp_outcome: vec![0; trace.udp.len()],
        tcp_outcome: vec![0; trace.tcp.len()],
    };
    let mut next_sample = Duration::ZERO;
    for (now, step) in steps {
        while let Some(due) = run.table.poll_timeout()
            && due <= now
        {
            run.table.expire(due, &mut run.shared.balancer);
        }
        while next_sample <= now {
            run.sample(next_sample);
            next_sample += sample;
        }
        match step {
            Step::Event(i) => run.event(i, now, &opts.events),
            Step::Close(i) => run.close_tcp(i, now, false),
            Step::Open(i) => run.open_tcp(i, now, map),
            Step::Datagram(i, j) => run.datagram(i, j, now, map),
        }
    }
    run.sample(next_sample);
    let mut r = run.report;
    if proto == Proto::Udp {
        r.udp = Some(run.table.stats());
    }
    r.clients = run.client_backends.len() as u64;
    r.clients_moved = run.client_backends.values().filter(|s| s.len() > 1).count() as u64;
    Ok(r)
}

#[cfg(test)]
mod tests;
