//! Active health checks: per-server check settings, their penctl grammar, and the state
//! machine fed with check results. Pure.
//!
//! `server N check KIND [ARGS] [interval S] [timeout S] [rise N] [fall N] [address IP]
//! [port P]` configures a check of server N (`server N check off` removes it). KIND is
//! `tcp` (a TCP connect) or `http METHOD PATH STATUS[-STATUS] [body WORD]` (the request line
//! plus `Host`, the status line's code within the range, and WORD somewhere in the first
//! 64 KiB of the answer when given) or `dns NAME` (a UDP query for NAME's A records, answered
//! with the query's ID and NOERROR; for UDP backends) or `tls` (a TLS handshake, certificate
//! not verified). The check connects to `address`/`port` when given,
//! otherwise to the server's own.
//!
//! [`Health`] is one server's check state: `unknown` until the first result, which decides
//! directly; after that `rise` successes in a row take a down server up and `fall` failures in
//! a row take an up server down. A server whose check is not `up` is left out of selection
//! (see [`crate::select::Balancer::set_check_down`]). [`Checks`] holds the states of all
//! servers, says which checks are due ([`Checks::due`]) and takes their results
//! ([`Checks::record`]); the IO shell (`proxy::health`) runs the probes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Defaults of a check's timing (seconds, counts), as HAProxy's.
pub const DEFAULT_INTERVAL: u64 = 2;
pub const DEFAULT_TIMEOUT: u64 = 1;
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
/// Longest interval or timeout accepted (a day).
pub const MAX_SECS: u64 = 86_400;
/// Highest rise/fall count accepted.
pub const MAX_COUNT: u32 = 1000;

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.0 request; the status must be within `status` (inclusive) and the answer
    /// must contain `body` when given.
    Http {
        method: String,
        path: String,
        status: (u16, u16),
        body: Option<String>,
    },
    /// A DNS query (UDP) for the A records of `name`; the answer must carry the query's ID
    /// and RCODE NOERROR.
    Dns { name: String },
    /// A TCP connect and a TLS handshake (the certificate is not verified: the check asks
    /// whether the server's TLS stack answers, not whom to trust).
    Tls,
}

/// One server's check settings (`server N check ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    pub interval_secs: u64,
    pub timeout_secs: u64,
    pub rise: u32,
    pub fall: u32,
    /// Check this address instead of the server's.
    pub address: Option<IpAddr>,
    /// Check this port instead of the server's.
    pub port: Option<u16>,
}

impl CheckConfig {
    /// A check of `kind` with the default timing.
    pub fn new(kind: CheckKind) -> CheckConfig {
        CheckConfig {
            kind,
            interval_secs: DEFAULT_INTERVAL,
            timeout_secs: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            address: None,
            port: None,
        }
    }

    /// Where to probe, given the server's own address (`None` when it has none).
    pub fn target(&self, server: Option<SocketAddr>) -> Option<SocketAddr> {
        let ip = self.address.or(server.map(|s| s.ip()))?;
        let port = self.port.or(server.map(|s| s.port()))?;
        (port != 0).then_some(SocketAddr::new(ip, port))
    }
}

/// `check off` or a check's settings, as `server N check ...` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckSetting {
    Off,
    On(CheckConfig),
}

/// A word of a `check` clause that is not accepted: what was expected and what came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckParseError {
    pub expected: String,
    pub got: String,
}

fn bad(expected: &str, got: &str) -> CheckParseError {
    CheckParseError {
        expected: expected.to_string(),
        got: got.to_string(),
    }
}

fn num<T: std::str::FromStr + PartialOrd + Copy>(
    tok: Option<&str>,
    what: &str,
    min: T,
    max: T,
) -> Result<T, CheckParseError> {
    let tok = tok.ok_or_else(|| bad(what, "nothing"))?;
    crate::ctl::command::parse_num(tok, min, max).ok_or_else(|| bad(what, tok))
}

fn status_range(tok: &str) -> Option<(u16, u16)> {
    let (lo, hi) = tok.split_once('-').unwrap_or((tok, tok));
    let lo = crate::ctl::command::parse_num(lo, 100u16, 599)?;
    let hi = crate::ctl::command::parse_num(hi, 100u16, 599)?;
    (lo <= hi).then_some((lo, hi))
}

const KINDS: &str =
    "a check kind: tcp, http METHOD PATH STATUS[-STATUS] [body WORD], tls, dns NAME, or off";

fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses the words after `check`.
pub fn parse_check(words: &[&str]) -> Result<CheckSetting, CheckParseError> {
    let mut w = words.iter().copied();
    let kind = match w.next() {
        Some("off") => {
            return match w.next() {
                None => Ok(CheckSetting::Off),
                Some(x) => Err(bad("nothing after check off", x)),
            };
        }
        Some("tcp") => CheckKind::Tcp,
        Some("http") => {
            let method = w.next().ok_or_else(|| bad("an HTTP method", "nothing"))?;
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(bad("an HTTP method in capitals (GET, HEAD, ...)", method));
            }
            let path = w.next().ok_or_else(|| bad("a path /...", "nothing"))?;
            if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control()) {
                return Err(bad("a path starting with /", path));
            }
            let st = w
                .next()
                .ok_or_else(|| bad("a status or range within 100-599", "nothing"))?;
            let status = status_range(st)
                .ok_or_else(|| bad("a status or range within 100-599, like 200-399", st))?;
            CheckKind::Http {
                method: method.to_string(),
                path: path.to_string(),
                status,
                body: None,
            }
        }
        Some("dns") => {
            let name = w
                .next()
                .ok_or_else(|| bad("a host name to query", "nothing"))?;
            if !valid_dns_name(name) {
                return Err(bad(
                    "a host name (labels of 1-63 letters, digits, - or _, at most 253 characters)",
                    name,
                ));
            }
            CheckKind::Dns {
                name: name.trim_end_matches('.').to_string(),
            }
        }
        Some("tls") => CheckKind::Tls,
        Some(x) => return Err(bad(KINDS, x)),
        None => return Err(bad(KINDS, "nothing")),
    };
    let mut c = CheckConfig::new(kind);
    while let Some(key) = w.next() {
        match key {
            "interval" => {
                c.interval_secs = num(w.next(), "an interval of 1-86400 seconds", 1, MAX_SECS)?
            }
            "timeout" => {
                c.timeout_secs = num(w.next(), "a timeout of 1-86400 seconds", 1, MAX_SECS)?
            }
            "rise" => c.rise = num(w.next(), "a rise count 1-1000", 1, MAX_COUNT)?,
            "fall" => c.fall = num(w.next(), "a fall count 1-1000", 1, MAX_COUNT)?,
            "port" => c.port = Some(num(w.next(), "a port number 1-65535", 1, u16::MAX)?),
            "address" => {
                let a = w.next().ok_or_else(|| bad("an IP address", "nothing"))?;
                c.address = Some(a.parse().map_err(|_| bad("an IP address", a))?);
            }
            "body" => match &mut c.kind {
                CheckKind::Http { body, .. } => {
                    *body = Some(
                        w.next()
                            .ok_or_else(|| bad("a word to find in the body", "nothing"))?
                            .to_string(),
                    )
                }
                _ => return Err(bad("body only after an http check", key)),
            },
            _ => {
                return Err(bad(
                    "interval, timeout, rise, fall, address, port or (http) body",
                    key,
                ));
            }
        }
    }
    Ok(c.into())
}

impl From<CheckConfig> for CheckSetting {
    fn from(c: CheckConfig) -> CheckSetting {
        CheckSetting::On(c)
    }
}

/// The canonical words after `check`; [`parse_check`] accepts them back.
impl fmt::Display for CheckConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CheckKind::Tcp => write!(f, "tcp")?,
            CheckKind::Dns { name } => write!(f, "dns {name}")?,
            CheckKind::Tls => write!(f, "tls")?,
            CheckKind::Http {
                method,
                path,
                status,
                body,
            } => {
                write!(f, "http {method} {path} ")?;
                if status.0 == status.1 {
                    write!(f, "{}", status.0)?;
                } else {
                    write!(f, "{}-{}", status.0, status.1)?;
                }
                if let Some(b) = body {
                    write!(f, " body {b}")?;
                }
            }
        }
        write!(
            f,
            " interval {} timeout {} rise {} fall {}",
            self.interval_secs, self.timeout_secs, self.rise, self.fall
        )?;
        if let Some(a) = self.address {
            write!(f, " address {a}")?;
        }
        if let Some(p) = self.port {
            write!(f, " port {p}")?;
        }
        Ok(())
    }
}

impl fmt::Display for CheckSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckSetting::Off => write!(f, "off"),
            CheckSetting::On(c) => write!(f, "{c}"),
        }
    }
}

/// A check's verdict on its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    /// No result yet: left out of selection until the first one.
    Unknown,
    Up,
    Down,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Unknown => "unknown",
            CheckState::Up => "up",
            CheckState::Down => "down",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub at: Duration,
    pub ok: bool,
    /// What was seen: `connected`, `HTTP 500`, `timeout after 1s`, `connect: ...`.
    pub detail: String,
}

/// One server's check state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub config: CheckConfig,
    pub state: CheckState,
    /// Results in a row agreeing with the last one.
    pub streak: u32,
    pub last: Option<CheckResult>,
    /// When the state last changed (`None`: never, still unknown).
    pub last_change: Option<Duration>,
    /// When the next check is due.
    pub next_due: Duration,
    /// A probe is running.
    pub in_flight: bool,
    pub checks: u64,
    pub failures: u64,
}

impl Health {
    /// A new machine, its first check due at once.
    pub fn new(config: CheckConfig, now: Duration) -> Health {
        Health {
            config,
            state: CheckState::Unknown,
            streak: 0,
            last: None,
            last_change: None,
            next_due: now,
            in_flight: false,
            checks: 0,
            failures: 0,
        }
    }

    /// Is a probe due at `now`?
    pub fn is_due(&self, now: Duration) -> bool {
        !self.in_flight && now >= self.next_due
    }

    /// A probe starts at `now`: the next one is due an interval later.
    pub fn started(&mut self, now: Duration) {
        self.in_flight = true;
        self.next_due = now + Duration::from_secs(self.config.interval_secs);
    }

    /// Feeds one result; returns the new state when it changed.
    pub fn record(&mut self, now: Duration, ok: bool, detail: &str) -> Option<CheckState> {
        self.in_flight = false;
        self.checks += 1;
        if !ok {
            self.failures += 1;
        }
        let same = self.last.as_ref().is_some_and(|l| l.ok == ok);
        self.streak = if same {
            self.streak.saturating_add(1)
        } else {
            1
        };
        self.last = Some(CheckResult {
            at: now,
            ok,
            detail: detail.to_string(),
        });
        let new = match (self.state, ok) {
            (CheckState::Unknown, true) => CheckState::Up,
            (CheckState::Unknown, false) => CheckState::Down,
            (CheckState::Down, true) if self.streak >= self.config.rise => CheckState::Up,
            (CheckState::Up, false) if self.streak >= self.config.fall => CheckState::Down,
            (s, _) => s,
        };
        (new != self.state).then(|| {
            self.state = new;
            self.last_change = Some(now);
            new
        })
    }
}

/// A probe for the shell to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub server: usize,
    /// Identifies the machine the probe belongs to: a result for a replaced one is dropped.
    pub generation: u64,
    pub addr: SocketAddr,
    pub kind: CheckKind,
    pub timeout: Duration,
    /// Differs from probe to probe of one server (a DNS check's query ID).
    pub seq: u64,
}

/// A state change, for the log and the balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub server: usize,
    pub state: CheckState,
    pub detail: String,
}

/// The check states of all servers that have a check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    machines: BTreeMap<usize, (u64, Health)>,
    generation: u64,
}

impl Checks {
    /// Brings the machines in line with the servers' check settings (`configs[i]` for server
    /// i): a new or changed setting starts a new machine (unknown), a removed one drops it.
    /// Returns the servers whose machine was dropped or replaced. A new machine's first
    /// check is due at once.
    pub fn sync(&mut self, configs: &[Option<&CheckConfig>]) -> Vec<usize> {
        let mut touched = Vec::new();
        self.machines.retain(|i, (_, h)| {
            let keep = configs.get(*i).copied().flatten() == Some(&h.config);
            if !keep {
                touched.push(*i);
            }
            keep
        });
        for (i, c) in configs.iter().enumerate() {
            if let Some(c) = c
                && !self.machines.contains_key(&i)
            {
                self.generation += 1;
                self.machines.insert(
                    i,
                    (self.generation, Health::new((*c).clone(), Duration::ZERO)),
                );
                if !touched.contains(&i) {
                    touched.push(i);
                }
            }
        }
        touched.sort_unstable();
        touched
    }

    /// The probes due at `now`, at most `room` of them, marked as running. `addrs[i]` is
    /// server i's address (`None`: none, or not an IP one); a server whose check has no
    /// address to go to gets a failed result at once.
    pub fn due(
        &mut self,
        now: Duration,
        room: usize,
        addrs: &[Option<SocketAddr>],
    ) -> (Vec<Probe>, Vec<Change>) {
        let mut probes = Vec::new();
        let mut changes = Vec::new();
        for (&i, (generation, h)) in self.machines.iter_mut() {
            if probes.len() >= room {
                break;
            }
            if !h.is_due(now) {
                continue;
            }
            h.started(now);
            match h.config.target(addrs.get(i).copied().flatten()) {
                Some(addr) => probes.push(Probe {
                    server: i,
                    generation: *generation,
                    addr,
                    kind: h.config.kind.clone(),
                    timeout: Duration::from_secs(h.config.timeout_secs),
                    seq: h.checks,
                }),
                None => {
                    let detail = "no IP address and port to check";
                    if let Some(state) = h.record(now, false, detail) {
                        changes.push(Change {
                            server: i,
                            state,
                            detail: detail.to_string(),
                        });
                    }
                }
            }
        }
        (probes, changes)
    }

    /// A probe's result; `None` when nothing changed (or the machine was replaced since).
    pub fn record(
        &mut self,
        server: usize,
        generation: u64,
        now: Duration,
        ok: bool,
        detail: &str,
    ) -> Option<Change> {
        let (g, h) = self.machines.get_mut(&server)?;
        if *g != generation {
            return None;
        }
        let state = h.record(now, ok, detail)?;
        Some(Change {
            server,
            state,
            detail: detail.to_string(),
        })
    }

    /// Server `i`'s check state, `None` when it has no check.
    pub fn get(&self, i: usize) -> Option<&Health> {
        self.machines.get(&i).map(|(_, h)| h)
    }

    /// Probes running now.
    pub fn in_flight(&self) -> usize {
        self.machines.values().filter(|(_, h)| h.in_flight).count()
    }

    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    /// When the next probe is due (`None`: no server has a check). A running probe's next
    /// one is already scheduled an interval after its start.
    pub fn next_due(&self) -> Option<Duration> {
        self.machines.values().map(|(_, h)| h.next_due).min()
    }
}

/// Judges an HTTP answer (as much of it as was read): the status code within `status` and,
/// when given, `body` somewhere in it. Returns (ok, detail).
pub fn judge_http(answer: &[u8], status: (u16, u16), body: Option<&str>) -> (bool, String) {
    let line_end = answer
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(answer.len());
    let line = String::from_utf8_lossy(answer.get(..line_end).unwrap_or(&[]));
    let mut parts = line.split_whitespace();
    let proto_ok = parts.next().is_some_and(|p| p.starts_with("HTTP/"));
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    let Some(code) = code.filter(|_| proto_ok) else {
        let shown: String = line.trim_end().chars().take(40).collect();
        return (false, format!("not an HTTP status line: {shown:?}"));
    };
    if code < status.0 || code > status.1 {
        return (false, format!("HTTP {code}"));
    }
    if let Some(word) = body
        && !answer
            .windows(word.len().max(1))
            .any(|w| w == word.as_bytes())
    {
        return (false, format!("HTTP {code} without {word:?}"));
    }
    (true, format!("HTTP {code}"))
}

/// The query a DNS check sends: ID `id`, recursion desired, one question for the A records
/// of `name` (already checked by [`parse_check`]).
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(label.as_bytes().get(..63).unwrap_or(label.as_bytes()));
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Judges a datagram that came back to a DNS check with query ID `id`: `None` when it is not
/// the answer (too short, another ID: keep waiting), else (ok, detail): a response with
/// RCODE NOERROR passes.
pub fn judge_dns(answer: &[u8], id: u16) -> Option<(bool, String)> {
    let h = answer.get(..12)?;
    if u16::from_be_bytes([h[0], h[1]]) != id {
        return None;
    }
    if h[2] & 0x80 == 0 {
        return Some((false, "DNS: not a response (QR 0)".to_string()));
    }
    let rcode = h[3] & 0x0f;
    let answers = u16::from_be_bytes([h[6], h[7]]);
    Some(match rcode {
        0 => (true, format!("DNS NOERROR, {answers} answers")),
        1 => (false, "DNS FORMERR".to_string()),
        2 => (false, "DNS SERVFAIL".to_string()),
        3 => (false, "DNS NXDOMAIN".to_string()),
        5 => (false, "DNS REFUSED".to_string()),
        n => (false, format!("DNS RCODE {n}")),
    })
}

/// The request an HTTP check sends to `host`.
pub fn http_request(method: &str, path: &str, host: &SocketAddr) -> String {
    let host = match host {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: pen-rs-check\r\nConnection: close\r\n\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn p(line: &str) -> Result<CheckSetting, CheckParseError> {
        parse_check(&line.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn grammar_parses_and_writes_back() {
        let CheckSetting::On(c) = p("http GET /health 200-399 interval 2 rise 2 fall 3").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c.kind,
            CheckKind::Http {
                method: "GET".into(),
                path: "/health".into(),
                status: (200, 399),
                body: None
            }
        );
        assert_eq!((c.interval_secs, c.rise, c.fall), (2, 2, 3));
        for line in [
            "tcp interval 1 timeout 1 rise 1 fall 1",
            "http HEAD / 200 body ok interval 5 timeout 2 rise 3 fall 4 address 10.0.0.1 port 8080",
            "http GET /x 200-299 interval 2 timeout 1 rise 2 fall 3 address ::1",
            "dns www.example.test interval 1 timeout 1 rise 2 fall 3 port 53",
            "tls interval 2 timeout 1 rise 2 fall 3 port 443",
        ] {
            let s = p(line).unwrap();
            assert_eq!(s.to_string(), line);
            assert_eq!(p(&s.to_string()).unwrap(), s);
        }
        assert_eq!(p("off").unwrap(), CheckSetting::Off);
    }

    #[test]
    fn bad_words_name_what_is_accepted() {
        let e = p("ping").unwrap_err();
        assert_eq!(e.got, "ping");
        assert!(e.expected.contains("tcp"));
        assert_eq!(p("http get / 200").unwrap_err().got, "get");
        assert_eq!(p("http GET health 200").unwrap_err().got, "health");
        assert_eq!(p("http GET / 399-200").unwrap_err().got, "399-200");
        assert_eq!(p("tcp rise 0").unwrap_err().got, "0");
        assert_eq!(p("tcp interval").unwrap_err().got, "nothing");
        assert_eq!(p("tcp body x").unwrap_err().got, "body");
        assert_eq!(p("tcp address nowhere").unwrap_err().got, "nowhere");
        assert_eq!(p("off now").unwrap_err().got, "now");
        assert_eq!(p("dns").unwrap_err().got, "nothing");
        assert_eq!(p("dns a..b").unwrap_err().got, "a..b");
        assert_eq!(p("dns a/b").unwrap_err().got, "a/b");
        assert_eq!(p("dns x body y").unwrap_err().got, "body");
        assert_eq!(
            p("dns www.example.test.").unwrap(),
            p("dns www.example.test").unwrap()
        );
        assert!(p("").is_err());
    }

    fn tcp(rise: u32, fall: u32) -> CheckConfig {
        let mut c = CheckConfig::new(CheckKind::Tcp);
        c.rise = rise;
        c.fall = fall;
        c
    }

    #[test]
    fn first_result_decides_then_rise_and_fall_count() {
        let mut h = Health::new(tcp(2, 3), secs(0));
        assert_eq!(h.state, CheckState::Unknown);
        assert_eq!(h.record(secs(1), false, "HTTP 500"), Some(CheckState::Down));
        assert_eq!(h.last_change, Some(secs(1)));
        assert_eq!(h.record(secs(2), true, "HTTP 200"), None);
        assert_eq!(h.record(secs(3), false, "HTTP 500"), None);
        assert_eq!(h.record(secs(4), true, "HTTP 200"), None);
        assert_eq!(h.record(secs(5), true, "HTTP 200"), Some(CheckState::Up));
        assert_eq!(h.last_change, Some(secs(5)));
        assert_eq!(h.record(secs(6), false, "x"), None);
        assert_eq!(h.record(secs(7), false, "x"), None);
        assert_eq!(h.record(secs(8), false, "timeout"), Some(CheckState::Down));
        assert_eq!(h.last.as_ref().unwrap().detail, "timeout");
        assert_eq!((h.checks, h.failures), (8, 5));
    }

    #[test]
    fn checks_schedule_bounded_and_drop_stale_results() {
        let mut cs = Checks::default();
        let c = tcp(1, 1);
        let configs = [Some(&c), None, Some(&c), Some(&c)];
        assert_eq!(cs.sync(&configs), vec![0, 2, 3]);
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let addrs = [Some(a), None, Some(a), None];
        let (probes, changes) = cs.due(secs(0), 1, &addrs);
        assert_eq!(probes.len(), 1);
        assert!(changes.is_empty());
        let (probes2, changes) = cs.due(secs(0), 5, &addrs);
        assert_eq!(probes2.iter().map(|p| p.server).collect::<Vec<_>>(), [2]);
        // server 3 has no address: failed at once
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].state, CheckState::Down);
        assert_eq!(cs.in_flight(), 2);
        // not due again before the interval
        assert!(cs.due(secs(1), 5, &addrs).0.is_empty());
        let g = probes[0].generation;
        // the setting changes: the old probe's result is dropped
        let mut c2 = c.clone();
        c2.port = Some(81);
        assert_eq!(cs.sync(&[Some(&c2), None, Some(&c), Some(&c)]), [0]);
        assert_eq!(cs.record(0, g, secs(1), true, "connected"), None);
        assert_eq!(cs.get(0).unwrap().state, CheckState::Unknown);
        let (p0, _) = cs.due(secs(1), 5, &addrs);
        assert_eq!(p0[0].addr, "127.0.0.1:81".parse::<SocketAddr>().unwrap());
        let ch = cs.record(0, p0[0].generation, secs(1), true, "connected");
        assert_eq!(ch.unwrap().state, CheckState::Up);
        assert_eq!(cs.sync(&[None]), vec![0, 2, 3]);
        assert!(cs.is_empty());
        assert_eq!(cs.next_due(), None);
    }

    #[test]
    fn the_next_due_check_is_the_earliest_one() {
        let mut cs = Checks::default();
        assert_eq!(cs.next_due(), None, "no check, nothing due");
        let mut fast = tcp(1, 1);
        fast.interval_secs = 2;
        let mut slow = tcp(1, 1);
        slow.interval_secs = 10;
        cs.sync(&[Some(&fast), Some(&slow)]);
        assert_eq!(cs.next_due(), Some(secs(0)), "new checks are due at once");
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let (probes, _) = cs.due(secs(5), 5, &[Some(a), Some(a)]);
        assert_eq!(probes.len(), 2);
        // both started at 5 s: the fast one is due again first, running or not
        assert_eq!(cs.next_due(), Some(secs(7)));
        cs.record(0, probes[0].generation, secs(6), true, "connected");
        assert_eq!(cs.next_due(), Some(secs(7)));
        cs.sync(&[None, Some(&slow)]);
        assert_eq!(cs.next_due(), Some(secs(15)));
    }

    #[test]
    fn http_answers_are_judged_by_status_and_body() {
        let r = (200, 399);
        assert_eq!(
            judge_http(b"HTTP/1.1 200 OK\r\n\r\nall ok", r, None),
            (true, "HTTP 200".into())
        );
        assert_eq!(
            judge_http(b"HTTP/1.1 500 Oops\r\n\r\n", r, None),
            (false, "HTTP 500".into())
        );
        assert!(!judge_http(b"HTTP/1.1 200 OK\r\n\r\nbad", r, Some("ok")).0);
        assert!(judge_http(b"HTTP/1.1 301 M\r\n\r\nok", r, Some("ok")).0);
        assert!(!judge_http(b"SSH-2.0-x\r\n", r, None).0);
        assert!(!judge_http(b"", r, None).0);
        assert!(!judge_http(b"HTTP/1.1 abc", r, None).0);
    }

    #[test]
    fn dns_queries_and_answers() {
        let q = dns_query(0x1234, "www.example.test");
        assert_eq!(
            q,
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x04test\x00\x00\x01\x00\x01"
        );
        let mut a = q.clone();
        a[2] |= 0x80;
        a[7] = 1;
        assert_eq!(
            judge_dns(&a, 0x1234),
            Some((true, "DNS NOERROR, 1 answers".into()))
        );
        assert_eq!(judge_dns(&a, 0x1235), None, "another ID: not ours");
        assert_eq!(judge_dns(&a[..11], 0x1234), None);
        // an echo of the query is no answer
        assert!(!judge_dns(&q, 0x1234).unwrap().0);
        a[3] |= 3;
        assert_eq!(judge_dns(&a, 0x1234), Some((false, "DNS NXDOMAIN".into())));
    }

    #[test]
    fn request_has_host_and_closes() {
        let a: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(
            http_request("GET", "/h", &a),
            "GET /h HTTP/1.0\r\nHost: [::1]:8080\r\nUser-Agent: pen-rs-check\r\nConnection: close\r\n\r\n"
        );
    }
}
