//! Statistics: C Pen's HTML status page (`-w`, `status`), the text form SIGUSR1 writes without
//! `-w`, and a Prometheus text exposition (beyond C Pen). Pure: every report is a function of a
//! [`Snapshot`], which [`Snapshot::capture`] takes from the running state with the clocks passed
//! in by the caller.
//!
//! Differences from C Pen (deliberate): times are printed in UTC (C Pen uses local time); the
//! text report prints every client field (C Pen's format string drops `connects`, `sent` and
//! `received` because of stray commas); the "status" column says `up` or `blacklisted, 57 s
//! left` (C Pen prints the unix time of the last blacklisting, stale or not).
//!
//! Pure: the caller reads the process figures ([`ProcessStats::read`], in the metrics
//! endpoint) and checks the `-w` path at start-up (`ctl::server::check_web_stats`).

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::BackendAddr;
use crate::proxy::resources::ProcessStats;
use crate::select::{Balancer, ClientKey, ServerEvent, ServerState, Target};
use crate::state::{OpenConns, State};

/// One server slot as the reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRow {
    /// Slot number; the emergency and abuse servers are listed separately.
    pub index: usize,
    /// IP address, Unix socket path, unresolved host name, or `0.0.0.0` for an empty slot.
    pub address: String,
    /// 0 for Unix sockets and empty slots.
    pub port: u16,
    /// Established connections (C Pen's `c`).
    pub established: u32,
    /// Connects in progress.
    pub pending: u32,
    pub maxc: u32,
    pub hard: u32,
    pub weight: u32,
    pub prio: u32,
    /// Bytes sent to the server by closed connections.
    pub sx: u64,
    /// Bytes received from the server by closed connections.
    pub rx: u64,
    /// Bytes sent to / received from the server so far by connections still open.
    pub open_sx: u64,
    pub open_rx: u64,
    /// Connects started to this server (how often it was selected).
    pub selected: u64,
    /// Connects that failed.
    pub failures: u64,
    pub blacklisted: bool,
    /// Seconds of blacklist left (0 when not blacklisted).
    pub blacklist_remaining_secs: u64,
    /// Unix time of the current blacklisting, 0 when not blacklisted (C Pen's `status`).
    pub status: u64,
    /// Its active health check (`server N check ...`), `None` when it has none.
    pub check: Option<CheckRow>,
}

/// A server's active health check as the reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRow {
    /// The check says up (only then is the server selected).
    pub up: bool,
    /// `check up|down|unknown changed N last ok|fail "detail"` ([`check_summary`]).
    pub summary: String,
    /// Seconds since the state last changed; `None` while unknown.
    pub changed_secs_ago: Option<u64>,
    /// The last result: `None` before the first.
    pub last_ok: Option<bool>,
    pub checks: u64,
    pub failures: u64,
}

impl CheckRow {
    pub fn of(h: &crate::health::Health, now: Duration) -> CheckRow {
        CheckRow {
            up: h.state == crate::health::CheckState::Up,
            summary: check_summary(h, now),
            changed_secs_ago: h.last_change.map(|t| now.saturating_sub(t).as_secs()),
            last_ok: h.last.as_ref().map(|r| r.ok),
            checks: h.checks,
            failures: h.failures,
        }
    }
}

impl ServerRow {
    /// Bytes sent to the server by closed and open connections (C Pen's `sx`, which its copy
    /// loop updates as data moves).
    pub fn sent(&self) -> u64 {
        self.sx.saturating_add(self.open_sx)
    }

    /// Bytes received from the server by closed and open connections.
    pub fn received(&self) -> u64 {
        self.rx.saturating_add(self.open_rx)
    }
}

/// One tracked client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub index: usize,
    pub address: String,
    /// Seconds since the client last connected.
    pub age_secs: u64,
    /// The server of its last connect: slot number, -1 = none, -2 = emergency, -3 = abuse.
    pub last_server: i64,
    pub connects: u64,
    pub sx: u64,
    pub rx: u64,
}

/// One open connection (as far as the data path reports them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnRow {
    /// Slot number (`connection N`, `close N`).
    pub index: usize,
    /// Client-side file descriptor, -1 if none.
    pub downfd: i32,
    /// Server-side file descriptor, -1 while connecting.
    pub upfd: i32,
    /// Bytes read and not yet written, towards the client / towards the server.
    pub pending_down: u64,
    pub pending_up: u64,
    /// Client address as text.
    pub client: String,
    /// Server slot (-1 = none, -2 = emergency, -3 = abuse).
    pub server: i64,
    /// Bytes sent to the server / received from it so far.
    pub sx: u64,
    pub rx: u64,
}

/// Everything a report shows, captured under the lock in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Unix time of the capture.
    pub unix_time: u64,
    pub servers: Vec<ServerRow>,
    pub emergency: Option<ServerRow>,
    pub abuse: Option<ServerRow>,
    /// Server of the last connect started, -1 = none.
    pub current: i64,
    pub clients_max: usize,
    pub clients: Vec<ClientRow>,
    pub conn_max: usize,
    pub conns: Vec<ConnRow>,
    /// Upstream connections `transparent` could not open from the client's address.
    pub transparent_failures: u64,
    /// Accepts and upstream connects that failed for want of local resources (descriptors,
    /// buffers, memory, ports).
    pub local_resource_errors: u64,
    /// PROXY protocol headers accepted and refused by reason (`accept_proxy`); `None` when
    /// accepting is off and nothing was ever counted.
    pub proxy_headers: Option<crate::proxyproto::HeaderCounts>,
    /// The UDP flow table (`-U` only).
    pub udp: Option<UdpReport>,
    /// The DSR tarpit (DSR mode only), as the DSR thread last published it.
    pub tarpit: Option<crate::engine::TarpitStatus>,
}

/// One UDP flow as the reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFlowRow {
    /// Position in the flow list, oldest first (`connection N`).
    pub index: usize,
    pub client: String,
    /// Server slot (-2 = emergency, -3 = abuse).
    pub server: i64,
    /// The server's address as `ip:port`.
    pub server_address: String,
    /// Seconds since the last datagram of the flow (either direction).
    pub idle_secs: u64,
    /// Seconds until the flow expires unless traffic arrives.
    pub expires_in_secs: u64,
    pub datagrams_up: u64,
    pub datagrams_down: u64,
    /// Bytes sent to the server / received from it.
    pub sx: u64,
    pub rx: u64,
}

/// The UDP flow table as the reports show it (as of the UDP shell's last tick).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpReport {
    /// Flow idle time in force (`udp_flow_idle`).
    pub idle_secs: u64,
    /// Size of the flow table (`conn_max`).
    pub max_flows: usize,
    pub stats: crate::proxy::udp::UdpStats,
    pub flows: Vec<UdpFlowRow>,
}

impl UdpReport {
    /// The report of `status` at monotonic time `now`.
    pub fn of(status: &crate::proxy::udp::UdpStatus, now: Duration) -> UdpReport {
        let now = now.max(status.at);
        UdpReport {
            idle_secs: status.idle.as_secs(),
            max_flows: status.max_flows,
            stats: status.stats,
            flows: status
                .flows
                .iter()
                .enumerate()
                .map(|(index, f)| UdpFlowRow {
                    index,
                    client: f.client.to_string(),
                    server: target_number(Some(f.target)),
                    server_address: f.server.to_string(),
                    idle_secs: now.saturating_sub(f.last_seen).as_secs(),
                    expires_in_secs: f.expires.saturating_sub(now).as_secs_f64().ceil() as u64,
                    datagrams_up: f.datagrams_up,
                    datagrams_down: f.datagrams_down,
                    sx: f.bytes_up,
                    rx: f.bytes_down,
                })
                .collect(),
        }
    }
}

/// The address and port of a server slot as `servers` and the reports print them.
pub fn server_address(s: &ServerState) -> (String, u16) {
    match &s.addr {
        Some(BackendAddr::Inet(sa)) => (sa.ip().to_string(), sa.port()),
        Some(BackendAddr::Unix(p)) => (p.display().to_string(), 0),
        None => match &s.config.host {
            Some(h) => (h.to_string(), s.config.port),
            None => ("0.0.0.0".to_string(), s.config.port),
        },
    }
}

/// A target as the reports number it: slot, -2 emergency, -3 abuse; `None` = -1.
pub fn target_number(t: Option<Target>) -> i64 {
    match t {
        Some(Target::Server(i)) => i64::try_from(i).unwrap_or(i64::MAX),
        Some(Target::Emergency) => -2,
        Some(Target::Abuse) => -3,
        None => -1,
    }
}

/// A client key as text (`unix` for Unix-socket clients).
pub fn client_address(k: &ClientKey) -> String {
    match k.ip() {
        Some(ip) => ip.to_string(),
        None => "unix".to_string(),
    }
}

/// `ip:port`, `[v6]:port`, or the Unix path / name alone (port 0).
fn host_port(address: &str, port: u16) -> String {
    if address.contains('/') || port == 0 {
        address.to_string()
    } else if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// The log line of a health check's verdict changing: `server 1 check: DOWN (HTTP 500)`,
/// `server 1 check: UP (HTTP 200)`.
pub fn check_change_line(c: &crate::health::Change) -> String {
    format!(
        "server {} check: {} ({})",
        c.server,
        c.state.as_str().to_uppercase(),
        c.detail
    )
}

/// A server's check in one line, for `servers` and the text report: `check down changed 3
/// last fail "HTTP 500"` (`changed` is seconds ago, `-` while unknown; `last` is `-` before
/// the first result).
pub fn check_summary(h: &crate::health::Health, now: Duration) -> String {
    let changed = match h.last_change {
        Some(t) => now.saturating_sub(t).as_secs().to_string(),
        None => "-".to_string(),
    };
    let last = match &h.last {
        Some(r) => format!("{} {:?}", if r.ok { "ok" } else { "fail" }, r.detail),
        None => "-".to_string(),
    };
    format!("check {} changed {changed} last {last}", h.state.as_str())
}

/// The log line of a server state change, HAProxy style: `server 0 (127.0.0.1:8001) is DOWN:
/// connect failed: Connection refused (os error 111); blacklisted for 30 s`, `server 0
/// (127.0.0.1:8001) is UP again after 42 s down`. `reason` explains a `Down`.
pub fn server_event_line(e: &ServerEvent, b: &Balancer, reason: &str) -> String {
    let name = |t: Target| {
        let (what, slot) = match t {
            Target::Server(i) => (format!("server {i}"), b.server(i)),
            Target::Emergency => ("emergency server".to_string(), b.emergency()),
            Target::Abuse => ("abuse server".to_string(), b.abuse()),
        };
        match slot {
            Some(s) => {
                let (a, p) = server_address(s);
                format!("{what} ({})", host_port(&a, p))
            }
            None => what,
        }
    };
    match *e {
        ServerEvent::Down { target, blacklist } if blacklist.is_zero() => format!(
            "{} is DOWN: {reason}; not blacklisted (blacklist time 0)",
            name(target)
        ),
        ServerEvent::Down { target, blacklist } => format!(
            "{} is DOWN: {reason}; blacklisted for {} s",
            name(target),
            blacklist.as_secs()
        ),
        ServerEvent::Up { target, down_for } => format!(
            "{} is UP again after {} s down",
            name(target),
            down_for.as_secs()
        ),
    }
}

/// The status column of the reports: `up`, `blacklisted, 57 s left`, or `not selected` (its
/// health check is not up); a server with a check gets `; ` and [`check_summary`] appended.
pub fn status_text(r: &ServerRow) -> String {
    let base = if r.blacklisted {
        format!("blacklisted, {} s left", r.blacklist_remaining_secs)
    } else if r.check.as_ref().is_some_and(|c| !c.up) {
        "not selected".to_string()
    } else {
        "up".to_string()
    };
    match &r.check {
        Some(c) => format!("{base}; {}", c.summary),
        None => base,
    }
}

fn server_row(
    index: usize,
    s: &ServerState,
    now: Duration,
    unix_time: u64,
    blacklist_secs: u64,
    check: Option<&crate::health::Health>,
) -> ServerRow {
    let (address, port) = server_address(s);
    let remaining = s.blacklist_remaining(now, blacklist_secs);
    let status = match (remaining, s.blacklisted_since) {
        (Some(_), Some(since)) => unix_time.saturating_sub(now.saturating_sub(since).as_secs()),
        _ => 0,
    };
    ServerRow {
        index,
        address,
        port,
        established: s.established,
        pending: s.pending,
        maxc: s.config.maxc,
        hard: s.config.hard,
        weight: s.config.weight,
        prio: s.config.prio,
        sx: s.sx,
        rx: s.rx,
        open_sx: 0,
        open_rx: 0,
        selected: s.selected,
        failures: s.failures,
        blacklisted: remaining.is_some(),
        blacklist_remaining_secs: remaining.map_or(0, |d| d.as_secs_f64().ceil() as u64),
        status,
        check: check.map(|h| CheckRow::of(h, now)),
    }
}

impl Snapshot {
    /// Captures the running state at monotonic time `now` (the balancer's clock) and wall-clock
    /// `unix_time`. `conns` are the open connections as the data path listed them.
    pub fn capture(state: &State, now: Duration, unix_time: u64, conns: &OpenConns) -> Self {
        let b = &state.balancer;
        let bl = b.blacklist_secs();
        // Bytes of open connections, taken by the caller under its lock on the state, which
        // is also held when a closing connection moves its bytes to the server's totals: each
        // byte is counted exactly once, so the sums never go backwards.
        let with_open = |t: Target, mut r: ServerRow| {
            (r.open_sx, r.open_rx) = conns.unreported(t);
            r
        };
        let servers = b
            .servers()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                with_open(
                    Target::Server(i),
                    server_row(i, s, now, unix_time, bl, state.checks.get(i)),
                )
            })
            .collect();
        let clients = b
            .clients()
            .enumerate()
            .map(|(i, c)| ClientRow {
                index: i,
                address: client_address(&c.key),
                age_secs: now.saturating_sub(c.last_seen).as_secs(),
                last_server: target_number(c.server),
                connects: c.connects,
                sx: c.sx,
                rx: c.rx,
            })
            .collect();
        Snapshot {
            unix_time,
            servers,
            emergency: b.emergency().map(|s| {
                with_open(
                    Target::Emergency,
                    server_row(0, s, now, unix_time, bl, None),
                )
            }),
            abuse: b
                .abuse()
                .map(|s| with_open(Target::Abuse, server_row(0, s, now, unix_time, bl, None))),
            current: target_number(b.current().map(Target::Server)),
            clients_max: b.clients_max(),
            clients,
            conn_max: state.config.conn_max,
            conns: conns.rows.clone(),
            transparent_failures: state.transparent_failures,
            local_resource_errors: state.shortage.total,
            proxy_headers: (state.config.accept_proxy.is_some()
                || state.proxy_headers != Default::default())
            .then_some(state.proxy_headers),
            udp: state.udp.as_ref().map(|u| UdpReport::of(u, now)),
            tarpit: state.tarpit.clone(),
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn format_utc(unix_time: u64) -> String {
    let days = unix_time / 86_400;
    let secs = unix_time % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

fn html_table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table bgcolor=\"#c0c0c0\">\n<tr>\n");
    for h in headers {
        let _ = writeln!(out, "<td bgcolor=\"#80f080\">{h}</td>");
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>\n");
        for cell in row {
            let _ = writeln!(out, "<td>{}</td>", html_escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// C Pen's "Pen status page" (`-w` file, `status` reply): servers, active clients, active
/// connections, with C Pen's headings and column order.
pub fn html(s: &Snapshot) -> String {
    let mut out = String::new();
    out.push_str(
        "<html>\n<head>\n<title>Pen status page</title>\n</head>\n\
         <body bgcolor=\"#ffffff\"><h1>Pen status page</h1>\n",
    );
    let _ = writeln!(
        out,
        "Time {}, {} servers, {} current<p>",
        format_utc(s.unix_time),
        s.servers.len(),
        s.current
    );
    let servers: Vec<Vec<String>> = s
        .servers
        .iter()
        .map(|r| {
            vec![
                r.index.to_string(),
                r.address.clone(),
                status_text(r),
                r.port.to_string(),
                r.established.to_string(),
                r.maxc.to_string(),
                r.hard.to_string(),
                r.sent().to_string(),
                r.received().to_string(),
                r.weight.to_string(),
                r.prio.to_string(),
            ]
        })
        .collect();
    html_table(
        &mut out,
        &[
            "server",
            "address",
            "status",
            "port",
            "connections",
            "max soft",
            "max hard",
            "sent",
            "received",
            "weight",
            "prio",
        ],
        &servers,
    );
    out.push_str("<h2>Active clients</h2>");
    let _ = write!(out, "Max number of clients: {}<p>", s.clients_max);
    let clients: Vec<Vec<String>> = s
        .clients
        .iter()
        .map(|c| {
            vec![
                c.index.to_string(),
                c.address.clone(),
                c.age_secs.to_string(),
                c.last_server.to_string(),
                c.connects.to_string(),
                c.sx.to_string(),
                c.rx.to_string(),
            ]
        })
        .collect();
    html_table(
        &mut out,
        &[
            "client",
            "address",
            "age(secs)",
            "last server",
            "connects",
            "sent",
            "received",
        ],
        &clients,
    );
    out.push_str("<h2>Active connections</h2>");
    let _ = write!(
        out,
        "Number of connections: {} max, {} used, {} last<p>",
        s.conn_max,
        s.conns.len(),
        s.conns.iter().map(|c| c.index).max().unwrap_or(0)
    );
    let conns: Vec<Vec<String>> = s
        .conns
        .iter()
        .map(|c| {
            vec![
                c.index.to_string(),
                c.downfd.to_string(),
                c.upfd.to_string(),
                c.pending_down.to_string(),
                c.pending_up.to_string(),
                c.client.clone(),
                c.server.to_string(),
            ]
        })
        .collect();
    html_table(
        &mut out,
        &[
            "connection",
            "downfd",
            "upfd",
            "pending data down",
            "pending data up",
            "client",
            "server",
        ],
        &conns,
    );
    if let Some(p) = &s.proxy_headers {
        let _ = write!(
            out,
            "<h2>PROXY protocol</h2>Headers {}<p>",
            html_escape(&p.line())
        );
    }
    if let Some(u) = &s.udp {
        html_udp(&mut out, u);
    }
    if let Some(t) = &s.tarpit {
        html_tarpit(&mut out, t);
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// The UDP section of the status page (pen-rs addition; C Pen shows UDP flows as
/// connections).
fn html_udp(out: &mut String, u: &UdpReport) {
    out.push_str("<h2>UDP flows</h2>");
    let _ = write!(
        out,
        "Number of flows: {} max, {} used; flow idle time {} seconds<p>\
         Flows created {}, expired {}, failed {}, readdressed {}, evicted {}; new flows dropped: {} table full, {} no server<p>\
         Flows offloaded to the kernel {}; datagrams forwarded by the kernel {}<p>",
        u.max_flows,
        u.flows.len(),
        u.idle_secs,
        u.stats.flows_created,
        u.stats.flows_expired,
        u.stats.flows_failed,
        u.stats.flows_readdressed,
        u.stats.flows_evicted,
        u.stats.dropped_table_full,
        u.stats.dropped_no_server,
        u.stats.flows_offloaded,
        u.stats.kernel_datagrams
    );
    let rows: Vec<Vec<String>> = u
        .flows
        .iter()
        .map(|f| {
            vec![
                f.index.to_string(),
                f.client.clone(),
                f.server.to_string(),
                f.server_address.clone(),
                f.idle_secs.to_string(),
                f.expires_in_secs.to_string(),
                f.sx.to_string(),
                f.rx.to_string(),
            ]
        })
        .collect();
    html_table(
        out,
        &[
            "flow",
            "client",
            "server",
            "server address",
            "idle(secs)",
            "expires in(secs)",
            "sent",
            "received",
        ],
        &rows,
    );
}

// ---- the DSR tarpit (pen-rs addition) ----------------------------------------------------

/// The tarpit's settings as one line each: `tarpit_acl`, persist, capture and rate cap.
fn tarpit_settings(persist: bool, cap: Option<String>, rate: Option<String>) -> String {
    format!(
        "persist {}\ncapture {}\nrate cap {}\n",
        if persist { "on" } else { "off" },
        cap.unwrap_or_else(|| "off".into()),
        rate.unwrap_or_else(|| "off".into()),
    )
}

/// The reply of penctl's `tarpit` and the tarpit part of the text report: settings, counters
/// and captured addresses. `st` is `None` when no DSR engine runs (the settings are shown,
/// the counters are not).
pub fn tarpit_text(
    cfg: &crate::config::Config,
    st: Option<&crate::engine::TarpitStatus>,
) -> String {
    let mut out = format!("tarpit_acl {}\n", cfg.tarpit_acl.map_or(-1, i32::from));
    out.push_str(&tarpit_settings(
        cfg.tarpit_persist,
        cfg.tarpit_capture.map(|c| c.to_string()),
        cfg.tarpit_rate.map(|r| r.to_string()),
    ));
    match st {
        None => out.push_str("no DSR engine running: no counters\n"),
        Some(t) => out.push_str(&tarpit_counters_text(t)),
    }
    out
}

fn tarpit_counters_text(t: &crate::engine::TarpitStatus) -> String {
    let c = t.capture_counters;
    let mut out = format!(
        "syn_acks {}\nheld connections {}\nprobes answered {}\nstray acks {}\n\
         dropped by rate cap {}\ncaptured {} (pending {}, alive {}; captures {}, releases {}, evictions {})\n",
        t.syn_acks,
        t.held,
        t.probes,
        t.stray,
        t.rate_dropped,
        t.captured,
        t.pending,
        t.alive,
        c.captures,
        c.releases,
        c.evictions
    );
    for a in &t.captured_addrs {
        let _ = writeln!(out, "captured address {a}");
    }
    out
}

/// The tarpit section of the status page.
fn html_tarpit(out: &mut String, t: &crate::engine::TarpitStatus) {
    out.push_str("<h2>Tarpit</h2>");
    let text = tarpit_settings(
        t.persist,
        t.capture.map(|c| c.to_string()),
        t.rate.map(|r| r.to_string()),
    ) + &tarpit_counters_text(t);
    for line in text.lines() {
        let _ = writeln!(out, "{}<br>", html_escape(line));
    }
    out.push_str("<p>\n");
}

/// The tarpit's Prometheus metrics.
fn prometheus_tarpit(out: &mut String, t: &crate::engine::TarpitStatus) {
    let c = t.capture_counters;
    let rows: [(&str, &str, &str, u64); 11] = [
        (
            "pen_tarpit_syn_acks_total",
            "counter",
            "SYN+ACKs the tarpit sent.",
            t.syn_acks,
        ),
        (
            "pen_tarpit_held_connections_total",
            "counter",
            "Persist mode: connections held (handshakes completed into a zero window).",
            t.held,
        ),
        (
            "pen_tarpit_probes_answered_total",
            "counter",
            "Persist mode: zero-window probes and data of held connections answered.",
            t.probes,
        ),
        (
            "pen_tarpit_stray_acks_total",
            "counter",
            "Persist mode: ACKs to tarpitted addresses that were not the tarpit's connections.",
            t.stray,
        ),
        (
            "pen_tarpit_rate_dropped_total",
            "counter",
            "Tarpit replies not sent because of tarpit_rate.",
            t.rate_dropped,
        ),
        (
            "pen_tarpit_captured",
            "gauge",
            "Addresses tarpit_capture holds now.",
            t.captured as u64,
        ),
        (
            "pen_tarpit_capture_pending",
            "gauge",
            "Addresses asked for without an answer, not captured yet.",
            t.pending as u64,
        ),
        (
            "pen_tarpit_capture_alive",
            "gauge",
            "Addresses seen alive (never captured while remembered).",
            t.alive as u64,
        ),
        (
            "pen_tarpit_captures_total",
            "counter",
            "Addresses captured.",
            c.captures,
        ),
        (
            "pen_tarpit_releases_total",
            "counter",
            "Captured addresses released because a host showed up.",
            c.releases,
        ),
        (
            "pen_tarpit_capture_evictions_total",
            "counter",
            "Capture table entries evicted because the table was full.",
            c.evictions,
        ),
    ];
    for (name, kind, help, v) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}

/// The text form SIGUSR1 writes when there is no `-w` file (C Pen's `textstats`), one report
/// line per `\n`.
pub fn text(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Time {}, {} servers, {} current",
        format_utc(s.unix_time),
        s.servers.len(),
        s.current
    );
    for r in &s.servers {
        let _ = writeln!(
            out,
            "Server {} status:\naddress {}\n{}\nport {}\n{} connections ({} soft, {} hard)\n{} sent, {} received",
            r.index,
            r.address,
            status_text(r),
            r.port,
            r.established,
            r.maxc,
            r.hard,
            r.sent(),
            r.received()
        );
    }
    let _ = writeln!(out, "Max number of clients: {}", s.clients_max);
    out.push_str("Active clients:\n");
    for c in &s.clients {
        let _ = writeln!(
            out,
            "Client {} status:\naddress {}\nlast used {}\nlast server {}\nconnects {}\nsent {}\nreceived {}",
            c.index, c.address, c.age_secs, c.last_server, c.connects, c.sx, c.rx
        );
    }
    let _ = writeln!(out, "Max number of connections: {}", s.conn_max);
    out.push_str("Active connections:\n");
    for c in &s.conns {
        let _ = writeln!(
            out,
            "Connection {} status:\ndownfd = {}, upfd = {}\npending data {} down, {} up\nclient {}, server {}",
            c.index, c.downfd, c.upfd, c.pending_down, c.pending_up, c.client, c.server
        );
    }
    if let Some(p) = &s.proxy_headers {
        let _ = writeln!(out, "PROXY protocol headers: {}", p.line());
    }
    if let Some(u) = &s.udp {
        let _ = writeln!(
            out,
            "Max number of UDP flows: {}\nUDP flow idle time: {} seconds\n\
             UDP flows created {}, expired {}, failed {}, readdressed {}, evicted {}, dropped (table full) {}, dropped (no server) {}\n\
             UDP flows offloaded to the kernel {}, datagrams forwarded by the kernel {}\n\
             Active UDP flows:",
            u.max_flows,
            u.idle_secs,
            u.stats.flows_created,
            u.stats.flows_expired,
            u.stats.flows_failed,
            u.stats.flows_readdressed,
            u.stats.flows_evicted,
            u.stats.dropped_table_full,
            u.stats.dropped_no_server,
            u.stats.flows_offloaded,
            u.stats.kernel_datagrams
        );
        for f in &u.flows {
            let _ = writeln!(
                out,
                "Flow {} status:\nclient {}, server {} ({})\nidle {} s, expires in {} s\nsent {}, received {}",
                f.index,
                f.client,
                f.server,
                f.server_address,
                f.idle_secs,
                f.expires_in_secs,
                f.sx,
                f.rx
            );
        }
    }
    if let Some(t) = &s.tarpit {
        out.push_str("Tarpit:\n");
        out.push_str(&tarpit_settings(
            t.persist,
            t.capture.map(|c| c.to_string()),
            t.rate.map(|r| r.to_string()),
        ));
        out.push_str(&tarpit_counters_text(t));
    }
    out
}

/// `accept_proxy`'s counters: headers accepted, and refused by reason (every reason shown,
/// zeros included, so that rates work from the first scrape).
fn prometheus_proxy_headers(out: &mut String, c: crate::proxyproto::HeaderCounts) {
    let _ = writeln!(
        out,
        "# HELP pen_proxy_headers_accepted_total PROXY protocol headers accepted (accept_proxy).\n\
         # TYPE pen_proxy_headers_accepted_total counter\npen_proxy_headers_accepted_total {}",
        c.accepted
    );
    let _ = writeln!(
        out,
        "# HELP pen_proxy_header_errors_total Connections closed for a missing, malformed, truncated or late PROXY protocol header, by reason.\n\
         # TYPE pen_proxy_header_errors_total counter"
    );
    for r in crate::proxyproto::Reason::ALL {
        let _ = writeln!(
            out,
            "pen_proxy_header_errors_total{{reason=\"{}\"}} {}",
            r.as_str(),
            c.errors_of(r)
        );
    }
}

/// The `process_*` metrics as the Prometheus client libraries name them.
fn process_metrics(out: &mut String, p: &ProcessStats) {
    let metrics: [(&str, &str, &str, f64); 7] = [
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_memory_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_memory_bytes as f64,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds as f64,
        ),
        (
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            p.threads as f64,
        ),
    ];
    for (name, kind, help, v) in metrics {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}

/// A Prometheus label value, escaped (`\\`, `\"`, `\n`).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

/// The active health checks' metrics, for the servers that have a check.
fn prometheus_checks(out: &mut String, rows: &[(String, &ServerRow)]) {
    type Get = fn(&CheckRow) -> Option<u64>;
    const CHECK_METRICS: &[(&str, &str, &str, Get)] = &[
        (
            "pen_server_check_up",
            "gauge",
            "1 while the server's health check says up (only then is it selected), else 0.",
            |c| Some(u64::from(c.up)),
        ),
        (
            "pen_server_check_last_ok",
            "gauge",
            "1 when the last health check passed, 0 when it failed.",
            |c| c.last_ok.map(u64::from),
        ),
        (
            "pen_server_check_last_change_seconds",
            "gauge",
            "Seconds since the health check's state last changed.",
            |c| c.changed_secs_ago,
        ),
        (
            "pen_server_checks_total",
            "counter",
            "Health checks run.",
            |c| Some(c.checks),
        ),
        (
            "pen_server_check_failures_total",
            "counter",
            "Health checks that failed.",
            |c| Some(c.failures),
        ),
    ];
    if rows.iter().all(|(_, r)| r.check.is_none()) {
        return;
    }
    for (name, kind, help, get) in CHECK_METRICS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (id, r) in rows {
            let Some(v) = r.check.as_ref().and_then(get) else {
                continue;
            };
            let addr = host_port(&r.address, r.port);
            let _ = writeln!(
                out,
                "{name}{{server=\"{}\",address=\"{}\"}} {v}",
                label(id),
                label(&addr)
            );
        }
    }
}

/// The Prometheus text exposition format (version 0.0.4) of the snapshot: per server
/// connections, pending connects, bytes (of closed and open connections), selections, failures
/// and blacklist state, plus table sizes, `pen_build_info` and the usual `process_*` metrics
/// of `p`. Servers are labelled `server="N"` (or `emergency`/`abuse`) and
/// `address="ip:port"`.
pub fn prometheus(s: &Snapshot, p: &ProcessStats) -> String {
    type Get = fn(&ServerRow) -> u64;
    const SERVER_METRICS: &[(&str, &str, &str, Get)] = &[
        (
            "pen_server_connections",
            "gauge",
            "Established connections to the server.",
            |r| u64::from(r.established),
        ),
        (
            "pen_server_pending_connects",
            "gauge",
            "Connects to the server in progress.",
            |r| u64::from(r.pending),
        ),
        (
            "pen_server_sent_bytes_total",
            "counter",
            "Bytes sent to the server (closed and open connections).",
            ServerRow::sent,
        ),
        (
            "pen_server_received_bytes_total",
            "counter",
            "Bytes received from the server (closed and open connections).",
            ServerRow::received,
        ),
        (
            "pen_server_selections_total",
            "counter",
            "Connects started to the server (times it was selected).",
            |r| r.selected,
        ),
        (
            "pen_server_failures_total",
            "counter",
            "Connects to the server that failed (each blacklists it).",
            |r| r.failures,
        ),
        (
            "pen_server_blacklisted",
            "gauge",
            "1 while the server is blacklisted, else 0.",
            |r| u64::from(r.blacklisted),
        ),
        (
            "pen_server_blacklist_remaining_seconds",
            "gauge",
            "Seconds of blacklist left.",
            |r| r.blacklist_remaining_secs,
        ),
        (
            "pen_server_max_connections",
            "gauge",
            "Soft connection limit (0 = unlimited).",
            |r| u64::from(r.maxc),
        ),
        ("pen_server_weight", "gauge", "Server weight.", |r| {
            u64::from(r.weight)
        }),
        ("pen_server_prio", "gauge", "Server priority.", |r| {
            u64::from(r.prio)
        }),
    ];
    let mut rows: Vec<(String, &ServerRow)> =
        s.servers.iter().map(|r| (r.index.to_string(), r)).collect();
    if let Some(r) = &s.emergency {
        rows.push(("emergency".to_string(), r));
    }
    if let Some(r) = &s.abuse {
        rows.push(("abuse".to_string(), r));
    }
    let mut out = String::new();
    for (name, kind, help, get) in SERVER_METRICS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (id, r) in &rows {
            let addr = host_port(&r.address, r.port);
            let _ = writeln!(
                out,
                "{name}{{server=\"{}\",address=\"{}\"}} {}",
                label(id),
                label(&addr),
                get(r)
            );
        }
    }
    prometheus_checks(&mut out, &rows);
    let _ = writeln!(
        out,
        "# HELP pen_build_info pen-rs build: version of the balancer, C Pen version it follows.\n\
         # TYPE pen_build_info gauge\n\
         pen_build_info{{version=\"{}\",compatible=\"0.34\"}} 1",
        label(env!("CARGO_PKG_VERSION"))
    );
    let scalars: [(&str, &str, &str, u64); 7] = [
        (
            "pen_servers",
            "gauge",
            "Number of server slots.",
            s.servers.len() as u64,
        ),
        (
            "pen_clients_tracked",
            "gauge",
            "Clients in the client table.",
            s.clients.len() as u64,
        ),
        (
            "pen_clients_max",
            "gauge",
            "Size of the client table.",
            s.clients_max as u64,
        ),
        (
            "pen_connections",
            "gauge",
            "Open client connections.",
            s.conns.len() as u64,
        ),
        (
            "pen_connections_max",
            "gauge",
            "Size of the connection table.",
            s.conn_max as u64,
        ),
        (
            "pen_transparent_failures_total",
            "counter",
            "Upstream connections 'transparent' could not open from the client's address.",
            s.transparent_failures,
        ),
        (
            "pen_local_resource_errors_total",
            "counter",
            "Accepts and upstream connects that failed for want of descriptors, buffers, memory or ports (no server is blamed).",
            s.local_resource_errors,
        ),
    ];
    for (name, kind, help, v) in scalars {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    prometheus_proxy_headers(&mut out, s.proxy_headers.unwrap_or_default());
    process_metrics(&mut out, p);
    if let Some(u) = &s.udp {
        let udp: [(&str, &str, &str, u64); 13] = [
            (
                "pen_udp_flows",
                "gauge",
                "Live UDP flows.",
                u.flows.len() as u64,
            ),
            (
                "pen_udp_flows_max",
                "gauge",
                "Size of the UDP flow table (conn_max).",
                u.max_flows as u64,
            ),
            (
                "pen_udp_flow_idle_seconds",
                "gauge",
                "Seconds a UDP flow lives without traffic.",
                u.idle_secs,
            ),
            (
                "pen_udp_flows_created_total",
                "counter",
                "UDP flows created.",
                u.stats.flows_created,
            ),
            (
                "pen_udp_flows_expired_total",
                "counter",
                "UDP flows removed after their idle time.",
                u.stats.flows_expired,
            ),
            (
                "pen_udp_flows_failed_total",
                "counter",
                "UDP flows removed because their server was unreachable.",
                u.stats.flows_failed,
            ),
            (
                "pen_udp_flows_offloaded_total",
                "counter",
                "UDP flows handed to the kernel fast path.",
                u.stats.flows_offloaded,
            ),
            (
                "pen_udp_kernel_datagrams_total",
                "counter",
                "Datagrams the kernel fast path forwarded (read about every second, and at each flow's end).",
                u.stats.kernel_datagrams,
            ),
            (
                "pen_udp_flows_evicted_total",
                "counter",
                "Answered UDP flows evicted to make room for new flows in a full table.",
                u.stats.flows_evicted,
            ),
            (
                "pen_udp_flows_readdressed_total",
                "counter",
                "UDP flows closed because their server's address changed.",
                u.stats.flows_readdressed,
            ),
            (
                "pen_udp_flows_dropped_table_full_total",
                "counter",
                "New UDP flows refused because the flow table was full of unanswered flows.",
                u.stats.dropped_table_full,
            ),
            (
                "pen_udp_flows_dropped_no_server_total",
                "counter",
                "New UDP flows refused because no server could take them.",
                u.stats.dropped_no_server,
            ),
            (
                "pen_udp_unmatched_replies_total",
                "counter",
                "Datagrams from servers that matched no live flow.",
                u.stats.unmatched_replies,
            ),
        ];
        for (name, kind, help, v) in udp {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
    if let Some(t) = &s.tarpit {
        prometheus_tarpit(&mut out, t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HostSpec, ServerConfig};

    #[test]
    fn proxy_header_counters_show_in_text_html_and_prometheus() {
        let mut st = State::new(Config::default());
        let none = Snapshot::capture(&st, Duration::ZERO, 0, &OpenConns::default());
        assert_eq!(none.proxy_headers, None);
        assert!(!text(&none).contains("PROXY"));
        let p = prometheus(&none, &ProcessStats::default());
        assert!(
            p.contains("\npen_proxy_header_errors_total{reason=\"timeout\"} 0\n"),
            "{p}"
        );
        st.config.accept_proxy = Some(crate::proxyproto::Accept::V1);
        st.proxy_headers.accepted = 3;
        st.proxy_headers
            .refused(crate::proxyproto::Reason::Malformed);
        st.proxy_headers
            .refused(crate::proxyproto::Reason::Malformed);
        let s = Snapshot::capture(&st, Duration::ZERO, 0, &OpenConns::default());
        let t = text(&s);
        assert!(
            t.contains(
                "PROXY protocol headers: accepted 3, refused: missing 0, version 0, malformed 2,"
            ),
            "{t}"
        );
        assert!(html(&s).contains("<h2>PROXY protocol</h2>Headers accepted 3"));
        let p = prometheus(&s, &ProcessStats::default());
        assert!(p.contains("\npen_proxy_headers_accepted_total 3\n"), "{p}");
        assert!(
            p.contains("\npen_proxy_header_errors_total{reason=\"malformed\"} 2\n"),
            "{p}"
        );
        assert!(
            p.contains("# TYPE pen_proxy_header_errors_total counter\n"),
            "{p}"
        );
    }
    use crate::select::Client;

    fn shared_with_two_servers() -> State {
        let servers = vec![
            ServerConfig {
                host: Some(HostSpec::Ip("127.0.0.1".parse().unwrap())),
                port: 8001,
                ..ServerConfig::default()
            },
            ServerConfig {
                host: Some(HostSpec::Ip("::1".parse().unwrap())),
                port: 8002,
                maxc: 5,
                hard: 10,
                weight: 2,
                prio: 1,
                ..ServerConfig::default()
            },
        ];
        State::new(Config {
            servers,
            ..Config::default()
        })
    }

    #[test]
    fn udp_flows_and_counters_appear_in_every_report() {
        use crate::proxy::udp::{FlowTable, UdpStatus};
        let mut sh = shared_with_two_servers();
        let t0 = Duration::from_secs(100);
        let mut table = FlowTable::new(2, Duration::from_secs(60), 4);
        for port in [4000u16, 4001, 4002] {
            let client = std::net::SocketAddr::from(([10, 0, 0, 9], port));
            table.handle_client(t0, client, 40, &mut sh.balancer);
        }
        sh.udp = Some(UdpStatus::of(&table, t0));
        let snap = Snapshot::capture(&sh, t0 + Duration::from_secs(5), 0, &OpenConns::default());
        let u = snap.udp.as_ref().unwrap();
        assert_eq!(u.flows.len(), 2);
        assert_eq!(u.stats.dropped_table_full, 1, "third flow refused");
        assert_eq!((u.flows[0].idle_secs, u.flows[0].expires_in_secs), (5, 55));
        assert_eq!(u.flows[0].client, "10.0.0.9:4000");
        assert_eq!(u.flows[0].sx, 40);
        let h = html(&snap);
        assert!(h.contains("<h2>UDP flows</h2>"), "{h}");
        assert!(h.contains("flow idle time 60 seconds"), "{h}");
        assert!(h.contains("<td>10.0.0.9:4001</td>"), "{h}");
        let t = text(&snap);
        assert!(t.contains("UDP flow idle time: 60 seconds"), "{t}");
        assert!(
            t.contains("readdressed 0, evicted 0, dropped (table full) 1"),
            "{t}"
        );
        assert!(t.contains("Flow 1 status:\nclient 10.0.0.9:4001"), "{t}");
        let p = prom(&snap);
        assert!(p.contains("\npen_udp_flows 2\n"), "{p}");
        assert!(
            p.contains("\npen_udp_flows_dropped_table_full_total 1\n"),
            "{p}"
        );
        assert!(p.contains("\npen_udp_flow_idle_seconds 60\n"), "{p}");
        assert!(p.contains("\npen_udp_flows_evicted_total 0\n"), "{p}");
        assert!(p.contains("\npen_udp_flows_readdressed_total 0\n"), "{p}");
        assert!(h.contains("failed 0, readdressed 0, evicted 0;"), "{h}");
        // Without -U there is no UDP section.
        sh.udp = None;
        let snap = Snapshot::capture(&sh, t0, 0, &OpenConns::default());
        assert!(!html(&snap).contains("UDP flows") && !prom(&snap).contains("pen_udp"));
    }

    #[test]
    fn utc_time_format_matches_known_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_795_311_992), "2026-11-22 01:46:32");
    }

    #[test]
    fn snapshot_reports_traffic_blacklist_and_clients() {
        let mut sh = shared_with_two_servers();
        let c = Client {
            ip: Some("10.0.0.7".parse().unwrap()),
            port: 5555,
        };
        let now = Duration::from_secs(100);
        let t = sh.balancer.select(&c, now)[0];
        sh.balancer.connect_started(&c, t, now);
        sh.balancer.connect_ok(t, now);
        sh.balancer.closed(t, &c, 11, 22, now);
        sh.balancer.blacklist(1, 20, now).unwrap();
        let snap = Snapshot::capture(
            &sh,
            now + Duration::from_secs(5),
            1_000_000,
            &OpenConns::default(),
        );
        let r1 = &snap.servers[1];
        assert!(r1.blacklisted);
        assert_eq!(r1.blacklist_remaining_secs, 15);
        assert_eq!(r1.status, 1_000_000 - 5);
        let used = &snap.servers[match t {
            Target::Server(i) => i,
            _ => panic!("not a server"),
        }];
        assert_eq!((used.sx, used.rx, used.selected), (11, 22, 1));
        assert_eq!(snap.clients.len(), 1);
        assert_eq!(snap.clients[0].address, "10.0.0.7");
        assert_eq!(snap.clients[0].age_secs, 5);
        assert_eq!(snap.clients[0].connects, 1);
    }

    #[test]
    fn html_page_has_c_pen_headings_and_rows() {
        let sh = shared_with_two_servers();
        let snap = Snapshot::capture(&sh, Duration::ZERO, 0, &OpenConns::default());
        let h = html(&snap);
        assert!(h.starts_with("<html>\n<head>\n<title>Pen status page</title>"));
        assert!(h.contains("Time 1970-01-01 00:00:00, 2 servers, -1 current<p>"));
        assert!(h.contains("<td>::1</td>\n<td>up</td>\n<td>8002</td>"));
        assert!(h.contains("<h2>Active clients</h2>Max number of clients: 2048<p>"));
        assert!(h.contains("Number of connections: 500 max, 0 used"));
        assert!(h.ends_with("</body>\n</html>\n"));
    }

    #[test]
    fn html_escapes_unix_paths() {
        let mut sh = shared_with_two_servers();
        let cfg = ServerConfig {
            host: Some(HostSpec::Unix("/tmp/<x>&".into())),
            ..ServerConfig::default()
        };
        let addr = crate::select::literal_addr(&cfg);
        sh.balancer.set_server(0, cfg, addr).unwrap();
        let h = html(&Snapshot::capture(
            &sh,
            Duration::ZERO,
            0,
            &OpenConns::default(),
        ));
        assert!(h.contains("<td>/tmp/&lt;x&gt;&amp;</td>"));
    }

    #[test]
    fn text_report_lists_servers_and_connections() {
        let sh = shared_with_two_servers();
        let conns = vec![ConnRow {
            index: 3,
            downfd: 9,
            upfd: 10,
            client: "10.0.0.1".into(),
            server: 1,
            ..ConnRow::default()
        }];
        let conns = OpenConns {
            rows: conns,
            ..OpenConns::default()
        };
        let t = text(&Snapshot::capture(&sh, Duration::ZERO, 0, &conns));
        assert!(t.contains("Server 1 status:\naddress ::1\nup\nport 8002\n0 connections (5 soft, 10 hard)\n0 sent, 0 received\n"));
        assert!(t.contains("Connection 3 status:\ndownfd = 9, upfd = 10\n"));
        assert!(t.contains("Max number of connections: 500\n"));
    }

    #[test]
    fn prometheus_exposes_per_server_series() {
        let mut sh = shared_with_two_servers();
        sh.balancer
            .blacklist(0, 30, Duration::from_secs(1))
            .unwrap();
        let p = prom(&Snapshot::capture(
            &sh,
            Duration::from_secs(1),
            0,
            &OpenConns::default(),
        ));
        assert!(p.contains("# TYPE pen_server_connections gauge\n"));
        assert!(p.contains("pen_server_blacklisted{server=\"0\",address=\"127.0.0.1:8001\"} 1\n"));
        assert!(p.contains("pen_server_blacklisted{server=\"1\",address=\"[::1]:8002\"} 0\n"));
        assert!(p.contains("pen_server_weight{server=\"1\",address=\"[::1]:8002\"} 2\n"));
        assert!(p.contains("pen_connections_max 500\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in p.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "bad sample {line:?}");
        }
    }

    #[test]
    fn status_column_says_how_long_the_blacklist_lasts() {
        let mut sh = shared_with_two_servers();
        let t0 = Duration::from_secs(100);
        sh.balancer.blacklist(1, 60, t0).unwrap();
        let snap = Snapshot::capture(
            &sh,
            t0 + Duration::from_millis(3500),
            1_000_000,
            &OpenConns::default(),
        );
        let h = html(&snap);
        assert!(
            h.contains("<td>::1</td>\n<td>blacklisted, 57 s left</td>\n<td>8002</td>"),
            "{h}"
        );
        assert!(
            h.contains("<td>127.0.0.1</td>\n<td>up</td>\n<td>8001</td>"),
            "{h}"
        );
        let t = text(&snap);
        assert!(
            t.contains("Server 1 status:\naddress ::1\nblacklisted, 57 s left\nport 8002\n"),
            "{t}"
        );
        // A failed connect blacklists for `blacklist_secs` (30 by default).
        let c = Client {
            ip: Some("10.0.0.7".parse().unwrap()),
            port: 1,
        };
        sh.balancer.connect_started(&c, Target::Server(0), t0);
        sh.balancer.connect_failed(Target::Server(0), t0);
        let snap = Snapshot::capture(&sh, t0 + Duration::from_secs(1), 0, &OpenConns::default());
        assert_eq!(status_text(&snap.servers[0]), "blacklisted, 29 s left");
        assert!(
            !html(&snap).contains("1000000"),
            "no raw unix time any more"
        );
    }

    #[test]
    fn server_events_read_like_haproxy() {
        let mut sh = shared_with_two_servers();
        let c = Client {
            ip: Some("10.0.0.7".parse().unwrap()),
            port: 1,
        };
        let b = &mut sh.balancer;
        b.connect_started(&c, Target::Server(1), Duration::from_secs(10));
        b.connect_failed(Target::Server(1), Duration::from_secs(10));
        b.connect_started(&c, Target::Server(1), Duration::from_secs(52));
        b.connect_ok(Target::Server(1), Duration::from_secs(52));
        let (events, dropped) = b.take_events();
        assert_eq!(dropped, 0);
        let lines: Vec<String> = events
            .iter()
            .map(|e| server_event_line(e, b, "connect failed: Connection refused (os error 111)"))
            .collect();
        assert_eq!(
            lines,
            [
                "server 1 ([::1]:8002) is DOWN: connect failed: Connection refused (os error 111); blacklisted for 30 s",
                "server 1 ([::1]:8002) is UP again after 42 s down",
            ]
        );
        let zero = ServerEvent::Down {
            target: Target::Server(0),
            blacklist: Duration::ZERO,
        };
        assert_eq!(
            server_event_line(&zero, b, "connect failed: x"),
            "server 0 (127.0.0.1:8001) is DOWN: connect failed: x; not blacklisted (blacklist time 0)"
        );
    }

    #[test]
    fn health_checks_show_in_the_text_the_page_and_prometheus() {
        let secs = Duration::from_secs;
        let mut sh = shared_with_two_servers();
        let p0 = prom(&Snapshot::capture(&sh, secs(5), 0, &OpenConns::default()));
        assert!(!p0.contains("pen_server_check"), "no check, no series");
        sh.config.checks.insert(
            1,
            crate::health::parse_check(&["tcp", "rise", "1"])
                .map(|c| match c {
                    crate::health::CheckSetting::On(c) => c,
                    crate::health::CheckSetting::Off => unreachable!(),
                })
                .unwrap(),
        );
        sh.sync_checks();
        let (probes, _) = sh.due_probes(secs(10), 4);
        sh.record_check(&probes[0], secs(10), false, "connect: refused");
        let snap = Snapshot::capture(&sh, secs(13), 0, &OpenConns::default());
        assert_eq!(snap.servers[0].check, None);
        let c = snap.servers[1].check.as_ref().unwrap();
        assert_eq!(
            (c.up, c.changed_secs_ago, c.last_ok),
            (false, Some(3), Some(false))
        );
        assert_eq!(
            status_text(&snap.servers[1]),
            "not selected; check down changed 3 last fail \"connect: refused\""
        );
        assert!(text(&snap).contains("check down changed 3"));
        assert!(html(&snap).contains("check down changed 3"));
        let p = prom(&snap);
        let a = "{server=\"1\",address=\"[::1]:8002\"}";
        assert!(p.contains("# TYPE pen_server_check_up gauge\n"), "{p}");
        assert!(p.contains(&format!("pen_server_check_up{a} 0\n")), "{p}");
        assert!(
            p.contains(&format!("pen_server_check_last_ok{a} 0\n")),
            "{p}"
        );
        assert!(
            p.contains(&format!("pen_server_check_last_change_seconds{a} 3\n")),
            "{p}"
        );
        assert!(
            p.contains(&format!("pen_server_check_failures_total{a} 1\n")),
            "{p}"
        );
        assert!(!p.contains("pen_server_check_up{server=\"0\""), "{p}");
        let (probes, _) = sh.due_probes(secs(20), 4);
        sh.record_check(&probes[0], secs(20), true, "connected");
        let p = prom(&Snapshot::capture(&sh, secs(20), 0, &OpenConns::default()));
        assert!(p.contains(&format!("pen_server_check_up{a} 1\n")), "{p}");
    }

    /// The exposition with fixed (zero) process figures: these tests look at pen's series.
    fn prom(s: &Snapshot) -> String {
        prometheus(s, &ProcessStats::default())
    }

    fn prometheus_value(p: &str, series: &str) -> u64 {
        let line = p
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in\n{p}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn prometheus_byte_counters_include_open_connections_once() {
        let mut sh = shared_with_two_servers();
        let t = Duration::from_secs(1);
        let target = Target::Server(0);
        let mut open = OpenConns::default();
        let c = sh.open_connection_for_test(&mut open, target, t, 100, 2000);
        let sent = "pen_server_sent_bytes_total{server=\"0\"";
        let received = "pen_server_received_bytes_total{server=\"0\"";
        let snap = Snapshot::capture(&sh, t, 0, &open);
        let p = prom(&snap);
        assert_eq!(prometheus_value(&p, sent), 100, "live bytes are counted");
        assert_eq!(prometheus_value(&p, received), 2000);
        // The status page and the text report count them too, as C Pen's copy loop does.
        assert!(html(&snap).contains("<td>100</td>\n<td>2000</td>"));
        assert!(text(&snap).contains("100 sent, 2000 received"));
        open.unreported.insert(target, (105, 2000));
        let p = prom(&Snapshot::capture(&sh, t, 0, &open));
        assert_eq!(prometheus_value(&p, sent), 105);
        // The connection closes: its bytes move to the server's totals (and out of the open
        // connections' unreported bytes, under the same lock), counted once.
        sh.balancer.closed(target, &c, 105, 2000, t);
        open.unreported.clear();
        let p = prom(&Snapshot::capture(&sh, t, 0, &open));
        assert_eq!(prometheus_value(&p, sent), 105);
        assert_eq!(prometheus_value(&p, received), 2000);
    }

    #[test]
    fn prometheus_has_build_info_and_process_metrics() {
        let sh = shared_with_two_servers();
        let proc = ProcessStats {
            start_time_seconds: 1_700_000_000.5,
            cpu_seconds: 1.25,
            resident_memory_bytes: 7 << 20,
            virtual_memory_bytes: 100 << 20,
            open_fds: 12,
            max_fds: 1024,
            threads: 1,
        };
        let p = prometheus(
            &Snapshot::capture(&sh, Duration::ZERO, 0, &OpenConns::default()),
            &proc,
        );
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            p.contains(&format!(
                "# TYPE pen_build_info gauge\npen_build_info{{version=\"{version}\",compatible=\"0.34\"}} 1\n"
            )),
            "{p}"
        );
        for line in [
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1700000000.5\n",
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.25\n",
            "\nprocess_resident_memory_bytes 7340032\n",
            "\nprocess_virtual_memory_bytes 104857600\n",
            "\nprocess_open_fds 12\n",
            "\nprocess_max_fds 1024\n",
            "\npen_local_resource_errors_total 0\n",
        ] {
            assert!(p.contains(line), "no {line:?} in\n{p}");
        }
        // The live reader gives real figures.
        let live = prometheus(
            &Snapshot::capture(&sh, Duration::ZERO, 0, &OpenConns::default()),
            &ProcessStats::read(),
        );
        assert!(!live.contains("\nprocess_open_fds 0\n"), "{live}");
    }

    #[test]
    fn prometheus_labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn the_tarpit_shows_on_the_page_in_the_text_and_in_prometheus() {
        let mut sh = State::new(crate::config::Config::default());
        let none = Snapshot::capture(
            &sh,
            Duration::from_secs(5),
            1_700_000_000,
            &OpenConns::default(),
        );
        assert!(!html(&none).contains("Tarpit") && !prom(&none).contains("pen_tarpit"));
        sh.tarpit = Some(crate::engine::TarpitStatus {
            persist: true,
            syn_acks: 9,
            held: 4,
            probes: 21,
            rate_dropped: 77,
            captured: 2,
            capture_counters: crate::engine::capture::CaptureCounters {
                captures: 3,
                releases: 1,
                evictions: 0,
            },
            captured_addrs: vec!["10.0.0.50".parse().unwrap(), "10.0.0.51".parse().unwrap()],
            ..Default::default()
        });
        let s = Snapshot::capture(
            &sh,
            Duration::from_secs(5),
            1_700_000_000,
            &OpenConns::default(),
        );
        let h = html(&s);
        assert!(
            h.contains("<h2>Tarpit</h2>") && h.contains("held connections 4<br>"),
            "{h}"
        );
        assert!(h.contains("captured address 10.0.0.51<br>"), "{h}");
        let t = text(&s);
        assert!(
            t.contains("Tarpit:\npersist on\n") && t.contains("dropped by rate cap 77"),
            "{t}"
        );
        let p = prom(&s);
        for want in [
            "pen_tarpit_held_connections_total 4\n",
            "pen_tarpit_probes_answered_total 21\n",
            "pen_tarpit_rate_dropped_total 77\n",
            "pen_tarpit_captured 2\n",
            "pen_tarpit_releases_total 1\n",
        ] {
            assert!(p.contains(want), "{want:?} in {p}");
        }
    }
}
