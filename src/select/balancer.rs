//! [`Balancer`]: the server slots, the client table and C Pen's selection rules. Pure.
//! See the module doc of [`crate::select`] for the rules and the deliberate differences.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::clients::{ClientInfo, ClientKey, ClientTable};
use super::{Client, Target};
use crate::acl::Acls;
use crate::config::{BackendAddr, Config, HostSpec, Mode, ServerConfig, defaults};

/// Highest number of regular server slots (C Pen has no limit; `server 4000000000` would make
/// it allocate gigabytes). Indexes `0..MAX_SERVERS` are accepted.
pub const MAX_SERVERS: usize = 65536;

/// A server index that does not exist (or cannot be created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerIndexError {
    pub index: usize,
    /// Number of server slots that exist (or may exist, for [`Balancer::set_server`]).
    pub limit: usize,
}

impl fmt::Display for ServerIndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.limit == 0 {
            write!(f, "no server {}: no servers are configured", self.index)
        } else {
            write!(
                f,
                "no server {}: server indexes 0..={} are accepted",
                self.index,
                self.limit - 1
            )
        }
    }
}

impl std::error::Error for ServerIndexError {}

/// One server slot: its configuration, its resolved address and its runtime state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub config: ServerConfig,
    /// `None` while the slot has no (resolved) address: never selected.
    pub addr: Option<BackendAddr>,
    /// Established upstream connections (C Pen's `c`, what `servers` prints as `conn`).
    pub established: u32,
    /// Upstream connects started and not yet reported as ok/failed/abandoned.
    pub pending: u32,
    /// When the server was last blacklisted (C Pen's `status`); `None` = never or cleared.
    pub blacklisted_since: Option<Duration>,
    /// `Some(d)` when `server N blacklist T` set an explicit duration; `None` = the global
    /// `blacklist_secs`, read at check time as C Pen does (changing `blacklist` affects servers
    /// that are blacklisted already).
    pub blacklist_for: Option<Duration>,
    /// Bytes sent to this server by closed connections.
    pub sx: u64,
    /// Bytes received from this server by closed connections.
    pub rx: u64,
    /// Connects started to this server.
    pub selected: u64,
    /// Connects that failed (each one blacklisted the server).
    pub failures: u64,
    /// Since when the server is down: its first failure after it last worked (a
    /// [`ServerEvent::Down`]); cleared by the next successful connect ([`ServerEvent::Up`]).
    pub down_since: Option<Duration>,
    /// Its active health check (`server N check ...`) does not say it is up: left out of
    /// selection like a blacklisted server, but apart from the passive blacklist (set by
    /// [`Balancer::set_check_down`], never by a connect's outcome).
    pub check_down: bool,
}

/// A server went down or came back, for the log (HAProxy's "Server x is DOWN/UP").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// A failed connect (or an ICMP error for a UDP flow) took a working server down: it is
    /// blacklisted for `blacklist`. Further failures while it is down make no event.
    Down { target: Target, blacklist: Duration },
    /// The first successful connect after a `Down`, `down_for` after it.
    Up { target: Target, down_for: Duration },
}

/// Events kept for [`Balancer::take_events`]; older ones are dropped (and counted) when nobody
/// takes them.
pub const MAX_EVENTS: usize = 256;

impl ServerState {
    pub fn new(config: ServerConfig, addr: Option<BackendAddr>) -> ServerState {
        ServerState {
            config,
            addr,
            established: 0,
            pending: 0,
            blacklisted_since: None,
            blacklist_for: None,
            sx: 0,
            rx: 0,
            selected: 0,
            failures: 0,
            down_since: None,
            check_down: false,
        }
    }

    /// What the limits and weights count: established plus pending connects.
    pub fn load(&self) -> u32 {
        self.established.saturating_add(self.pending)
    }

    /// Blacklisted at `now`, given the global blacklist time.
    pub fn is_blacklisted(&self, now: Duration, blacklist_secs: u64) -> bool {
        self.blacklist_remaining(now, blacklist_secs).is_some()
    }

    /// How long the blacklist still lasts, `None` when not blacklisted.
    pub fn blacklist_remaining(&self, now: Duration, blacklist_secs: u64) -> Option<Duration> {
        let since = self.blacklisted_since?;
        let length = self
            .blacklist_for
            .unwrap_or(Duration::from_secs(blacklist_secs));
        let elapsed = now.saturating_sub(since);
        (elapsed < length).then(|| length - elapsed)
    }

    /// Has an address pen can connect to (C Pen's "No port for you!" check: port 0 refused).
    pub fn has_usable_addr(&self) -> bool {
        match &self.addr {
            Some(BackendAddr::Inet(sa)) => sa.port() != 0,
            Some(BackendAddr::Unix(_)) => true,
            None => false,
        }
    }
}

/// The address of `cfg` when it needs no name resolution (an IP literal or a Unix path).
/// Host names give `None`: the daemon resolves them and calls [`Balancer::set_server`].
pub fn literal_addr(cfg: &ServerConfig) -> Option<BackendAddr> {
    match cfg.host.as_ref()? {
        HostSpec::Ip(ip) => Some(BackendAddr::Inet((*ip, cfg.port).into())),
        HostSpec::Unix(path) => Some(BackendAddr::Unix(path.clone())),
        HostSpec::Name(_) => None,
    }
}

/// Server pool + client table + selection state. One per pen process; the proxy keeps it behind
/// a lock and calls [`Balancer::select`] once per new client connection (or UDP flow).
#[derive(Debug, Clone)]
pub struct Balancer {
    servers: Vec<ServerState>,
    emergency: Option<ServerState>,
    abuse: Option<ServerState>,
    clients: ClientTable,
    /// C Pen's `static int last_server = 0` in `server_by_roundrobin`.
    rr_cursor: usize,
    /// The server of the last connect started (the status page's "current server").
    current: Option<usize>,
    mode: Mode,
    tracking_secs: u64,
    blacklist_secs: u64,
    client_acl: u8,
    acls: Acls,
    /// Bumped whenever a server, emergency or abuse address changes (see
    /// [`Balancer::addr_generation`]).
    addr_generation: u64,
    /// Servers that went down or came back, oldest first, until the IO side takes them.
    events: Vec<ServerEvent>,
    /// Events dropped because [`MAX_EVENTS`] were waiting.
    events_dropped: u64,
}

/// What the client's table entry says while one selection runs.
struct Asker {
    ip: Option<IpAddr>,
    last: Option<Target>,
}

impl Balancer {
    /// A balancer with `cfg`'s settings and servers. Servers given as IP literals or Unix paths
    /// get their address now; host names stay without one until the daemon resolves them and
    /// calls [`Balancer::set_server`] (same for emergency and abuse).
    pub fn new(cfg: &Config) -> Balancer {
        let servers = cfg
            .servers
            .iter()
            .take(MAX_SERVERS)
            .map(|s| ServerState::new(s.clone(), literal_addr(s)))
            .collect();
        let slot = |s: &Option<ServerConfig>| {
            s.as_ref()
                .map(|s| ServerState::new(s.clone(), literal_addr(s)))
        };
        Balancer {
            servers,
            emergency: slot(&cfg.emergency),
            abuse: slot(&cfg.abuse),
            clients: ClientTable::new(cfg.clients_max),
            rr_cursor: 0,
            current: None,
            mode: cfg.mode,
            tracking_secs: cfg.tracking_secs,
            blacklist_secs: cfg.blacklist_secs,
            client_acl: cfg.client_acl,
            acls: cfg.acls.clone(),
            addr_generation: 0,
            events: Vec::new(),
            events_dropped: 0,
        }
    }

    /// Take over `cfg`'s mode flags, times, ACLs and `clients_max` (which only grows).
    /// Servers are not touched: they change through `set_server` & co.
    pub fn update_settings(&mut self, cfg: &Config) {
        self.mode = cfg.mode;
        self.tracking_secs = cfg.tracking_secs;
        self.blacklist_secs = cfg.blacklist_secs;
        self.client_acl = cfg.client_acl;
        self.acls = cfg.acls.clone();
        self.clients.grow(cfg.clients_max);
    }

    /// Configure slot `idx` (`server N ...`), growing the table with empty slots as needed.
    /// An existing slot keeps its counters and blacklist state, as in C Pen.
    pub fn set_server(
        &mut self,
        idx: usize,
        config: ServerConfig,
        addr: Option<BackendAddr>,
    ) -> Result<(), ServerIndexError> {
        if idx >= MAX_SERVERS {
            return Err(ServerIndexError {
                index: idx,
                limit: MAX_SERVERS,
            });
        }
        if idx >= self.servers.len() {
            self.servers
                .resize_with(idx + 1, || ServerState::new(ServerConfig::default(), None));
        }
        if let Some(s) = self.servers.get_mut(idx) {
            s.config = config;
            if s.addr != addr {
                s.addr = addr;
                self.addr_generation += 1;
            }
        }
        Ok(())
    }

    /// Changes whenever the address of a server, the emergency or the abuse server changes:
    /// holders of long-lived flows (UDP) compare it to learn that they must re-check
    /// [`Balancer::addr`] of their targets.
    pub fn addr_generation(&self) -> u64 {
        self.addr_generation
    }

    /// `-e host:port`; `None` removes it.
    pub fn set_emergency(&mut self, slot: Option<(ServerConfig, BackendAddr)>) {
        if Self::set_special(&mut self.emergency, slot) {
            self.addr_generation += 1;
        }
    }

    /// `-B host:port`; `None` removes it.
    pub fn set_abuse(&mut self, slot: Option<(ServerConfig, BackendAddr)>) {
        if Self::set_special(&mut self.abuse, slot) {
            self.addr_generation += 1;
        }
    }

    /// Sets or removes a special slot; returns whether its address changed.
    fn set_special(
        place: &mut Option<ServerState>,
        slot: Option<(ServerConfig, BackendAddr)>,
    ) -> bool {
        let old = place.as_ref().and_then(|s| s.addr.clone());
        let Some((config, addr)) = slot else {
            *place = None;
            return old.is_some();
        };
        let changed = old.as_ref() != Some(&addr);
        match place {
            Some(s) => {
                s.config = config;
                s.addr = Some(addr);
            }
            None => *place = Some(ServerState::new(config, Some(addr))),
        }
        changed
    }

    // ------------------------------------------------------------------ selection

    /// The ordered candidates for a new connection from `client` at `now`; empty = close it.
    /// Records the client in the client table (C Pen's `store_client`: connects + 1, seen now)
    /// and may advance the roundrobin cursor. Every candidate passes [`Balancer::try_server`]
    /// at `now`; the proxy tries them in order and reports each outcome.
    pub fn select(&mut self, client: &Client, now: Duration) -> Vec<Target> {
        let key = ClientKey::of(client);
        self.clients.expire(now, self.tracking_secs);
        let last = self.clients.touch(key, now).server;
        let asker = Asker { ip: key.ip(), last };

        if !self.acls.permits(usize::from(self.client_acl), asker.ip) {
            return if self.try_with(Target::Abuse, &asker, now) {
                vec![Target::Abuse]
            } else {
                Vec::new()
            };
        }

        let initial = self.initial_server(client, &asker, now);
        let mut out = Vec::new();
        if let Some(s) = initial
            && self.try_with(Target::Server(s), &asker, now)
        {
            out.push(Target::Server(s));
        }
        if self.mode.stubborn {
            return out;
        }
        if let Some(s) = initial {
            let n = self.servers.len();
            for k in 1..n {
                let t = Target::Server((s + k) % n);
                if self.try_with(t, &asker, now) {
                    out.push(t);
                }
            }
        }
        if self.try_with(Target::Emergency, &asker, now) {
            out.push(Target::Emergency);
        }
        out
    }

    /// C Pen's `initial_server` after the ACL check: the tracked server, else the algorithm.
    fn initial_server(&mut self, client: &Client, asker: &Asker, now: Duration) -> Option<usize> {
        if !self.mode.roundrobin
            && let Some(Target::Server(s)) = asker.last
            && s < self.servers.len()
        {
            return Some(s);
        }
        if self.mode.prio {
            self.by_prio(now)
        } else if self.mode.weight {
            self.by_weight(now)
        } else if self.mode.hash {
            self.by_hash(client)
        } else {
            self.by_roundrobin(now)
        }
    }

    /// "Available" for the algorithms: has a usable address, is not blacklisted and its
    /// health check (if any) does not hold it out.
    fn available(&self, s: &ServerState, now: Duration) -> bool {
        s.has_usable_addr() && !s.check_down && !s.is_blacklisted(now, self.blacklist_secs)
    }

    fn by_prio(&self, now: Duration) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, s) in self.servers.iter().enumerate() {
            if !self.available(s, now) {
                continue;
            }
            if best.is_none_or(|(_, p)| s.config.prio < p) {
                best = Some((i, s.config.prio));
            }
        }
        best.map(|(i, _)| i)
    }

    fn by_weight(&self, now: Duration) -> Option<usize> {
        let mut best: Option<(usize, u64)> = None;
        for (i, s) in self.servers.iter().enumerate() {
            if s.config.weight == 0 || !self.available(s, now) {
                continue;
            }
            let load = defaults::WEIGHT_FACTOR * u64::from(s.load()) / u64::from(s.config.weight);
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }

    fn by_hash(&self, client: &Client) -> Option<usize> {
        let n = self.servers.len();
        (n > 0).then(|| hash_index(client, self.mode.roundrobin, n))
    }

    fn by_roundrobin(&mut self, now: Duration) -> Option<usize> {
        let n = self.servers.len();
        if n == 0 {
            return None;
        }
        let start = self.rr_cursor % n;
        let mut i = start;
        loop {
            i = (i + 1) % n;
            if self.servers.get(i).is_some_and(|s| self.available(s, now)) {
                self.rr_cursor = i;
                return Some(i);
            }
            if i == start {
                return None;
            }
        }
    }

    /// C Pen's `try_server` checks (without the connect): usable address, not blacklisted,
    /// within limits (soft `maxc` for new clients, `hard` for the client whose last server this
    /// is), and the server's ACL permits the client. The proxy may call it again before trying
    /// a later candidate, since time has passed since [`Balancer::select`].
    pub fn try_server(&self, target: Target, client: &Client, now: Duration) -> bool {
        let key = ClientKey::of(client);
        let asker = Asker {
            ip: key.ip(),
            last: self.clients.get(&key).and_then(|c| c.server),
        };
        self.try_with(target, &asker, now)
    }

    fn try_with(&self, target: Target, asker: &Asker, now: Duration) -> bool {
        let Some(s) = self.state(target) else {
            return false;
        };
        if !self.available(s, now) {
            return false;
        }
        let c = s.load();
        let maxc = s.config.maxc;
        let sticky = asker.last == Some(target);
        if maxc != 0 && c >= maxc && !(sticky && c < s.config.hard) {
            return false;
        }
        match s.config.acl {
            Some(a) => self.acls.permits(usize::from(a), asker.ip),
            None => true,
        }
    }

    // ------------------------------------------------------------------ outcomes

    /// A connect to `target` starts for `client`: it becomes the client's server (C Pen
    /// records it here, before the connect succeeds) and counts as pending.
    pub fn connect_started(&mut self, client: &Client, target: Target, _now: Duration) {
        let Some(s) = self.state_mut(target) else {
            return;
        };
        s.pending = s.pending.saturating_add(1);
        s.selected = s.selected.saturating_add(1);
        if let Target::Server(i) = target {
            self.current = Some(i);
        }
        if let Some(c) = self.clients.get_mut(&ClientKey::of(client)) {
            c.server = Some(target);
        }
    }

    /// The connect to `target` succeeded: pending → established, blacklist cleared. A server
    /// that was down is up again ([`ServerEvent::Up`]).
    pub fn connect_ok(&mut self, target: Target, now: Duration) {
        let Some(s) = self.state_mut(target) else {
            return;
        };
        s.pending = s.pending.saturating_sub(1);
        s.established = s.established.saturating_add(1);
        s.blacklisted_since = None;
        s.blacklist_for = None;
        if let Some(since) = s.down_since.take() {
            let down_for = now.saturating_sub(since);
            self.event(ServerEvent::Up { target, down_for });
        }
    }

    /// The connect to `target` failed or timed out: blacklisted for `blacklist_secs` from `now`
    /// (passively: it comes back by itself). A server that was working goes down
    /// ([`ServerEvent::Down`]).
    pub fn connect_failed(&mut self, target: Target, now: Duration) {
        let blacklist = Duration::from_secs(self.blacklist_secs);
        let Some(s) = self.state_mut(target) else {
            return;
        };
        s.pending = s.pending.saturating_sub(1);
        s.failures = s.failures.saturating_add(1);
        s.blacklisted_since = Some(now);
        s.blacklist_for = None;
        if s.down_since.is_none() {
            s.down_since = Some(now);
            self.event(ServerEvent::Down { target, blacklist });
        }
    }

    fn event(&mut self, e: ServerEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.remove(0);
            self.events_dropped = self.events_dropped.saturating_add(1);
        }
        self.events.push(e);
    }

    /// The servers that went down or came back since the last call, oldest first, and how many
    /// events were dropped meanwhile because nobody took them (at most [`MAX_EVENTS`] wait).
    pub fn take_events(&mut self) -> (Vec<ServerEvent>, u64) {
        let dropped = std::mem::take(&mut self.events_dropped);
        (std::mem::take(&mut self.events), dropped)
    }

    /// A started connect ended without a verdict on the server (the client went away first,
    /// pen is shutting down): only the pending count drops.
    pub fn connect_abandoned(&mut self, target: Target) {
        if let Some(s) = self.state_mut(target) {
            s.pending = s.pending.saturating_sub(1);
        }
    }

    /// An established connection closed; byte counts go to the server and to the client.
    pub fn closed(
        &mut self,
        target: Target,
        client: &Client,
        sent_to_server: u64,
        received_from_server: u64,
        _now: Duration,
    ) {
        if let Some(s) = self.state_mut(target) {
            s.established = s.established.saturating_sub(1);
            s.sx = s.sx.saturating_add(sent_to_server);
            s.rx = s.rx.saturating_add(received_from_server);
        }
        if let Some(c) = self.clients.get_mut(&ClientKey::of(client)) {
            c.sx = c.sx.saturating_add(sent_to_server);
            c.rx = c.rx.saturating_add(received_from_server);
        }
    }

    /// `server N blacklist T`: blacklist server `idx` for exactly `secs` seconds from `now`;
    /// 0 takes it off the blacklist.
    pub fn blacklist(
        &mut self,
        idx: usize,
        secs: u64,
        now: Duration,
    ) -> Result<(), ServerIndexError> {
        let limit = self.servers.len();
        let s = self
            .servers
            .get_mut(idx)
            .ok_or(ServerIndexError { index: idx, limit })?;
        if secs == 0 {
            s.blacklisted_since = None;
            s.blacklist_for = None;
        } else {
            s.blacklisted_since = Some(now);
            s.blacklist_for = Some(Duration::from_secs(secs));
        }
        Ok(())
    }

    // ------------------------------------------------------------------ accessors

    /// The health check of regular server `idx` holds it out of selection (`down`) or lets
    /// it in. Growing the table is [`Balancer::set_server`]'s job: a nonexistent index is
    /// ignored.
    pub fn set_check_down(&mut self, idx: usize, down: bool) {
        if let Some(s) = self.servers.get_mut(idx) {
            s.check_down = down;
        }
    }

    /// Is regular server `idx` blacklisted at `now`? (`false` for a nonexistent index.)
    pub fn is_blacklisted(&self, idx: usize, now: Duration) -> bool {
        self.servers
            .get(idx)
            .is_some_and(|s| s.is_blacklisted(now, self.blacklist_secs))
    }

    /// The backend address of a candidate.
    pub fn addr(&self, target: Target) -> Option<&BackendAddr> {
        self.state(target)?.addr.as_ref()
    }

    /// The slot of a candidate.
    pub fn state(&self, target: Target) -> Option<&ServerState> {
        match target {
            Target::Server(i) => self.servers.get(i),
            Target::Emergency => self.emergency.as_ref(),
            Target::Abuse => self.abuse.as_ref(),
        }
    }

    fn state_mut(&mut self, target: Target) -> Option<&mut ServerState> {
        match target {
            Target::Server(i) => self.servers.get_mut(i),
            Target::Emergency => self.emergency.as_mut(),
            Target::Abuse => self.abuse.as_mut(),
        }
    }

    /// The regular server slots, index = server number.
    pub fn servers(&self) -> &[ServerState] {
        &self.servers
    }

    pub fn server(&self, idx: usize) -> Option<&ServerState> {
        self.servers.get(idx)
    }

    pub fn emergency(&self) -> Option<&ServerState> {
        self.emergency.as_ref()
    }

    pub fn abuse(&self) -> Option<&ServerState> {
        self.abuse.as_ref()
    }

    /// Tracked clients, most recently seen first. Entries idle past `tracking_secs` may still
    /// be listed until the next `select` or [`Balancer::expire_clients`]; filter on
    /// `last_seen` (as `recent N` does anyway).
    pub fn clients(&self) -> impl Iterator<Item = &ClientInfo> + '_ {
        self.clients.iter()
    }

    /// The table entry of `client`, if tracked.
    pub fn client(&self, client: &Client) -> Option<&ClientInfo> {
        self.clients.get(&ClientKey::of(client))
    }

    /// Forget clients idle for longer than `tracking_secs` (also done by every `select`).
    pub fn expire_clients(&mut self, now: Duration) {
        self.clients.expire(now, self.tracking_secs);
    }

    /// The server of the last connect started (status page: "current server").
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn tracking_secs(&self) -> u64 {
        self.tracking_secs
    }

    pub fn blacklist_secs(&self) -> u64 {
        self.blacklist_secs
    }

    /// Size of the client table (`clients_max`).
    pub fn clients_max(&self) -> usize {
        self.clients.capacity()
    }

    pub fn client_acl(&self) -> u8 {
        self.client_acl
    }
}

/// C Pen's `pen_hash`, for `n > 0` slots. IPv4: the `s_addr` word as x86 reads it
/// (`u32::from_le_bytes(octets)`), with `-r` XORed with the network-order port read the same
/// way, modulo `n`. IPv6: FNV-1a over all 16 bytes (plus the port with `-r`) modulo `n`
/// (deliberate: C Pen uses only the last byte). Unix clients: 0.
pub fn hash_index(client: &Client, roundrobin: bool, n: usize) -> usize {
    let n = n.max(1) as u64;
    let port = u16::from_le_bytes(client.port.to_be_bytes());
    let h = match ClientKey::of(client) {
        ClientKey::Unix => 0,
        ClientKey::V4(a) => {
            let mut h = u32::from_le_bytes(a.octets());
            if roundrobin {
                h ^= u32::from(port);
            }
            u64::from(h)
        }
        ClientKey::V6(a) => {
            let mut h = fnv1a(0xcbf2_9ce4_8422_2325, &a.octets());
            if roundrobin {
                h = fnv1a(h, &client.port.to_be_bytes());
            }
            h
        }
    };
    // n <= usize::MAX, so the remainder fits.
    (h % n) as usize
}

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
