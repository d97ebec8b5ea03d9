//! Seeded random simulation of the UDP flow table (pure: no sockets, no clock).
//!
//! Each run prints its seed; replay one with `UDP_SIM_SEED=<seed> cargo test --test udp_sim`.
//! Invariants checked after every step:
//! - a reply from (upstream socket, server) returns to the client whose live flow uses that
//!   pair, and only to it;
//! - a flow keeps its server and upstream socket for its whole life;
//! - after the timer runs at a tick, no flow has been idle for the idle time or longer (so no
//!   flow outlives its idle time by more than one tick);
//! - the table never exceeds `max_flows` when it was not lowered, the upstream pool never
//!   exceeds its bound, and the selector's open/close calls balance to the table size;
//! - the table's internal maps agree (`FlowTable::check_invariants`), the sockets bound to
//!   clients' addresses (`transparent`, on in some runs) included;
//! - a full table drops a new flow only when no flow is answered (a reply since the client's
//!   last datagram); otherwise it evicts answered flows only, least recently answered first,
//!   and counts each eviction;
//! - a late reply to an evicted (or expired) flow is counted as unmatched, or reaches only the
//!   flow that owns the same (upstream, server) pair now; such a pair is handed out again within
//!   `SLOT_REUSE_DELAY` of its release only when its server's pool is at its bound;
//! - the kernel fast path, driven as the shell drives it (the table's offload commands carried
//!   out in order, sometimes late, some installs refused; the kernel's traffic reported before
//!   each expiry and in turns): once the commands are carried out, the kernel holds exactly the
//!   table's offloaded flows; no transparent flow is ever offered; no flow the kernel kept busy
//!   expires; every datagram the kernel forwarded is counted once (reported, withdrawn with its
//!   flow, or still pending for a live flow).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use pen::proxy::udp::flow::SLOT_REUSE_DELAY;
use pen::proxy::udp::{
    Activity, Candidate, ClientVerdict, DropReason, FlowId, FlowTable, KernelReport,
    OffloadCommand, Selector, UpstreamId,
};
use pen::select::Target;

/// splitmix64: tiny, seedable, good enough for a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Round robin with a blacklist that lasts `bl` of simulated time.
struct SimSelector {
    servers: Vec<SocketAddr>,
    blacklisted_until: Vec<Duration>,
    cursor: usize,
    open: i64,
    bl: Duration,
}

impl Selector for SimSelector {
    fn candidates(&mut self, _client: SocketAddr, now: Duration) -> Vec<Candidate> {
        let n = self.servers.len();
        self.cursor = (self.cursor + 1) % n;
        (0..n)
            .map(|k| (self.cursor + k) % n)
            .filter(|&i| self.blacklisted_until[i] <= now)
            .map(|i| Candidate {
                target: Target::Server(i),
                addr: Some(self.servers[i]),
            })
            .collect()
    }
    fn flow_opened(&mut self, _c: SocketAddr, _t: Target, _now: Duration) {
        self.open += 1;
    }
    fn flow_closed(&mut self, _c: SocketAddr, _t: Target, _s: u64, _r: u64, _now: Duration) {
        self.open -= 1;
    }
    fn server_failed(&mut self, t: Target, now: Duration) {
        if let Target::Server(i) = t {
            self.blacklisted_until[i] = now + self.bl;
        }
    }
}

struct Sim {
    rng: Rng,
    table: FlowTable,
    sel: SimSelector,
    now: Duration,
    tick: Duration,
    idle: Duration,
    max_flows: usize,
    max_up: u32,
    lowered: bool,
    clients: Vec<SocketAddr>,
    /// client → (upstream, server) as first forwarded for its current flow.
    model: HashMap<SocketAddr, (UpstreamId, SocketAddr)>,
    /// (upstream, server, client) pairs a server may answer to.
    in_flight: Vec<(UpstreamId, SocketAddr, SocketAddr)>,
    replies_routed: u64,
    /// Live flows answered since their client's last datagram → (time, order) of that reply
    /// (for offloaded flows: of the kernel's reported answers, or of the hand-over).
    answered: HashMap<SocketAddr, (Duration, u64)>,
    reply_seq: u64,
    /// (upstream, server) pairs of flows that left the table → when.
    released: HashMap<(UpstreamId, SocketAddr), Duration>,
    /// Highest upstream index + 1 handed out per server.
    server_high: HashMap<SocketAddr, u32>,
    /// (upstream, server, client) of evicted flows, for their late replies.
    evicted: HashSet<(UpstreamId, SocketAddr, SocketAddr)>,
    evictions: u64,
    /// Times the upstream pools shrank.
    shrinks: u64,
    late_unmatched: u64,
    /// The kernel fast path: the flows it holds.
    kernel: HashMap<SocketAddr, KernelFlow>,
    /// Percentage of installs the kernel refuses.
    refuse: u64,
    /// Percentage of steps after which the table's offload commands are carried out (the
    /// rest leave them queued for a while, as a busy shell would).
    run_commands: u64,
    /// Datagrams the kernel forwarded, all flows together.
    kernel_forwarded: u64,
    installs: u64,
    withdrawals: u64,
}

/// One flow in the simulated kernel.
struct KernelFlow {
    flow: FlowId,
    /// Forwarded since it was last reported.
    pending: Activity,
    /// When it last forwarded a datagram (the truth the reports bring to the table).
    last: Option<Duration>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let n_servers = 1 + rng.below(4) as usize;
        let mut servers = Vec::new();
        for i in 0..n_servers {
            let v6 = rng.chance(30);
            let addr: SocketAddr = if v6 {
                format!("[2001:db8::{}]:53", i + 1).parse().unwrap()
            } else {
                format!("10.0.0.{}:53", i + 1).parse().unwrap()
            };
            servers.push(addr);
        }
        let n_clients = 1 + rng.below(300) as usize;
        let clients = (0..n_clients)
            .map(|i| {
                if rng.chance(20) {
                    format!("[2001:db8:1::{}]:{}", i % 7 + 1, 1024 + i)
                        .parse()
                        .unwrap()
                } else {
                    SocketAddr::from(([192, 0, 2, (i % 5) as u8 + 1], 1024 + i as u16))
                }
            })
            .collect();
        let max_flows = 1 + rng.below(120) as usize;
        let max_up = 1 + rng.below(max_flows as u64) as u32;
        let idle = Duration::from_secs(1 + rng.below(30));
        let tick = Duration::from_millis(100 + rng.below(900));
        let mut table = FlowTable::new(max_flows, idle, max_up);
        // Some runs are transparent: flows go out on sockets bound to their client's address
        // (a few addresses, many ports), with a random bound on those sockets.
        if rng.chance(40) {
            table.set_sources(true, None);
            table.set_max_client_sockets(1 + rng.below(max_flows as u64) as u32);
        }
        // Most runs have a kernel fast path.
        if rng.chance(80) {
            table.enable_offload();
        }
        let refuse = rng.below(50);
        let run_commands = 50 + rng.below(51);
        Sim {
            table,
            sel: SimSelector {
                blacklisted_until: vec![Duration::ZERO; n_servers],
                servers,
                cursor: 0,
                open: 0,
                bl: Duration::from_secs(rng.below(10)),
            },
            rng,
            now: Duration::from_secs(1000),
            tick,
            idle,
            max_flows,
            max_up,
            lowered: false,
            clients,
            model: HashMap::new(),
            in_flight: Vec::new(),
            replies_routed: 0,
            answered: HashMap::new(),
            reply_seq: 0,
            released: HashMap::new(),
            server_high: HashMap::new(),
            evicted: HashSet::new(),
            evictions: 0,
            shrinks: 0,
            late_unmatched: 0,
            kernel: HashMap::new(),
            refuse,
            run_commands,
            kernel_forwarded: 0,
            installs: 0,
            withdrawals: 0,
        }
    }

    /// Carries out the table's offload commands, in order, as the shell does.
    fn run_offload(&mut self) -> Result<(), String> {
        while let Some(cmd) = self.table.poll_offload() {
            match cmd {
                OffloadCommand::Install(req) => {
                    if self.kernel.contains_key(&req.client) {
                        return Err(format!("{}: installed twice", req.client));
                    }
                    let ok = !self.rng.chance(self.refuse);
                    if ok {
                        self.installs += 1;
                        self.kernel.insert(
                            req.client,
                            KernelFlow {
                                flow: req.flow,
                                pending: Activity::default(),
                                last: None,
                            },
                        );
                    }
                    let was = self.table.is_offloaded(&req.client);
                    self.table.handle_offload_result(&req.client, req.flow, ok);
                    if !was && self.table.is_offloaded(&req.client) {
                        // It joins the eviction order as of its last datagram, if unanswered.
                        if let Some(f) = self.table.flow(&req.client) {
                            if f.upstream.bound.is_some() {
                                return Err(format!(
                                    "transparent flow of {} offloaded",
                                    req.client
                                ));
                            }
                            if !self.answered.contains_key(&req.client) {
                                self.reply_seq += 1;
                                self.answered
                                    .insert(req.client, (f.last_seen, self.reply_seq));
                            }
                        }
                    }
                }
                OffloadCommand::Withdraw { client, flow } => {
                    if let Some(k) = self.kernel.get(&client)
                        && k.flow == flow
                        && let Some(k) = self.kernel.remove(&client)
                    {
                        self.withdrawals += 1;
                        self.table.handle_withdrawn(&k.pending);
                    }
                }
            }
        }
        // Carried out: the kernel holds exactly the table's offloaded flows.
        for c in self.kernel.keys() {
            if !self.table.is_offloaded(c) {
                return Err(format!("the kernel holds {c}, whose flow is not offloaded"));
            }
        }
        let offloaded = self
            .table
            .flows()
            .filter(|f| self.table.is_offloaded(&f.client))
            .count();
        if offloaded != self.kernel.len() {
            return Err(format!(
                "{offloaded} offloaded flows, {} in the kernel",
                self.kernel.len()
            ));
        }
        Ok(())
    }

    /// Reports the kernel's traffic of `flows`, as the shell does.
    fn report(&mut self, flows: Vec<(SocketAddr, FlowId)>) -> Result<(), String> {
        for (client, flow) in flows {
            let Some(k) = self.kernel.get_mut(&client) else {
                return Err(format!("{client}: listed as offloaded, not in the kernel"));
            };
            if k.flow != flow {
                return Err(format!(
                    "{client}: listed as {flow:?}, the kernel has {:?}",
                    k.flow
                ));
            }
            let activity = std::mem::take(&mut k.pending);
            let before = self.table.flow(&client).map(|f| f.last_seen);
            self.table.handle_activity(
                self.now,
                &KernelReport {
                    client,
                    flow,
                    activity,
                },
            );
            let after = self.table.flow(&client).map(|f| f.last_seen);
            if activity.datagrams_down > 0
                && let (Some(b), Some(a)) = (before, after)
                && a > b
            {
                self.reply_seq += 1;
                self.answered.insert(client, (a, self.reply_seq));
            }
        }
        Ok(())
    }

    /// A client datagram of an offloaded flow forwarded by the kernel (and maybe its answer).
    fn kernel_datagram(&mut self, client: SocketAddr, len: usize) {
        let answer = self.rng.chance(60);
        let now = self.now;
        if let Some(k) = self.kernel.get_mut(&client) {
            k.last = Some(now);
            let a = &mut k.pending;
            a.last_seen = Some(now);
            a.datagrams_up += 1;
            a.bytes_up += len as u64;
            self.kernel_forwarded += 1;
            if answer {
                a.datagrams_down += 1;
                a.bytes_down += 100;
                self.kernel_forwarded += 1;
            }
        }
    }

    /// Flows the table dropped (expiry, unreachable, eviction) leave the model; their pairs
    /// are released now. Returns the clients that left, with their pairs.
    fn sync_model(&mut self) -> Vec<(SocketAddr, (UpstreamId, SocketAddr))> {
        let gone: Vec<SocketAddr> = self
            .model
            .keys()
            .filter(|c| self.table.flow(c).is_none())
            .copied()
            .collect();
        let mut out = Vec::new();
        for c in gone {
            if let Some(pair) = self.model.remove(&c) {
                self.released.insert(pair, self.now);
                out.push((c, pair));
            }
            self.answered.remove(&c);
        }
        out
    }

    fn step(&mut self) -> Result<(), String> {
        match self.rng.below(100) {
            0..=49 => self.client_datagram()?,
            50..=79 => self.server_datagram()?,
            80..=81 => self.unreachable(),
            82 => self.change_limits(),
            _ => self.advance()?,
        }
        self.check()
    }

    fn client_datagram(&mut self) -> Result<(), String> {
        let i = self.rng.below(self.clients.len() as u64) as usize;
        let client = self.clients[i];
        let len = match self.rng.below(10) {
            0 => 0,
            1 => 65_535,
            _ => self.rng.below(1500) as usize,
        };
        if self.table.is_offloaded(&client)
            && self.kernel.contains_key(&client)
            && self.rng.chance(80)
        {
            self.kernel_datagram(client, len);
            return Ok(());
        }
        let had_flow = self.table.flow(&client).is_some();
        let before = self.table.len();
        let evicted_before = self.table.stats().flows_evicted;
        let verdict = self
            .table
            .handle_client(self.now, client, len, &mut self.sel);
        // Only evictions remove flows inside `handle_client`.
        let answered_before = self.answered.clone();
        let gone = self.sync_model();
        let evicted_now = self.table.stats().flows_evicted - evicted_before;
        if evicted_now != gone.len() as u64 {
            return Err(format!(
                "{} flows left, {evicted_now} evictions counted",
                gone.len()
            ));
        }
        let mut newest_evicted = None;
        for (c, _) in &gone {
            let Some(&order) = answered_before.get(c) else {
                return Err(format!("unanswered flow of {c} was evicted"));
            };
            newest_evicted = newest_evicted.max(Some(order));
        }
        if let Some(newest) = newest_evicted
            && let Some((c, order)) = self.answered.iter().find(|&(_, &o)| o < newest)
        {
            return Err(format!(
                "flow of {c} (answered {order:?}) kept while a later-answered one was evicted"
            ));
        }
        for &(c, (u, s)) in &gone {
            self.evicted.insert((u, s, c));
        }
        self.evictions += evicted_now;
        match verdict {
            ClientVerdict::Forward {
                upstream,
                server,
                new_flow,
            } => {
                if new_flow == had_flow {
                    return Err(format!(
                        "{client}: new_flow={new_flow} but had_flow={had_flow}"
                    ));
                }
                self.answered.remove(&client);
                if new_flow && upstream.bound.is_none() {
                    let high = self.server_high.get(&server).copied().unwrap_or(0);
                    if let Some(at) = self.released.remove(&(upstream, server))
                        && self.now < at + SLOT_REUSE_DELAY
                        && high < self.max_up
                    {
                        return Err(format!(
                            "{upstream:?}/{server} reused {:?} after release while the pool \
                             could grow ({high} < {})",
                            self.now - at,
                            self.max_up
                        ));
                    }
                    self.server_high
                        .insert(server, high.max(upstream.index + 1));
                }
                if let Some(&(u, s)) = self.model.get(&client)
                    && (u, s) != (upstream, server)
                {
                    return Err(format!(
                        "{client} moved from {s} to {server} within one flow"
                    ));
                }
                self.model.insert(client, (upstream, server));
                if self.in_flight.len() < 1000 {
                    self.in_flight.push((upstream, server, client));
                }
                if self.table.wants_offload(&client) {
                    if upstream.bound.is_some() {
                        return Err(format!("transparent flow of {client} offered"));
                    }
                    let listen: SocketAddr = "198.51.100.1:53".parse().unwrap();
                    let local = SocketAddr::new("10.0.0.254".parse().unwrap(), 40000);
                    if !self.table.offload(&client, listen, local) {
                        return Err(format!("{client}: wanted for the kernel, not offered"));
                    }
                }
            }
            ClientVerdict::Drop(DropReason::TableFull) => {
                if had_flow || before < self.table.max_flows() {
                    return Err(format!("{client} dropped as full with {before} flows"));
                }
                if let Some(c) = self.answered.keys().next() {
                    return Err(format!(
                        "{client} dropped as full while the flow of {c} was answered"
                    ));
                }
            }
            ClientVerdict::Drop(DropReason::NoServer | DropReason::FamilyMismatch { .. }) => {
                if had_flow {
                    return Err(format!("existing flow of {client} dropped"));
                }
            }
        }
        Ok(())
    }

    fn server_datagram(&mut self) -> Result<(), String> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let k = self.rng.below(self.in_flight.len() as u64) as usize;
        let (upstream, server, client) = self.in_flight.swap_remove(k);
        let live =
            self.table.flow(&client).map(|f| (f.upstream, f.server)) == Some((upstream, server));
        let unmatched_before = self.table.stats().unmatched_replies;
        let got = self.table.handle_server(self.now, upstream, server, 100);
        if let Some(c) = got {
            self.reply_seq += 1;
            self.answered.insert(c, (self.now, self.reply_seq));
        } else if self.table.stats().unmatched_replies != unmatched_before + 1 {
            return Err(format!(
                "dropped reply via {upstream:?}/{server} not counted"
            ));
        }
        let was_evicted = self.evicted.remove(&(upstream, server, client));
        if live {
            if got != Some(client) {
                return Err(format!(
                    "reply for {client} via {upstream:?}/{server} went to {got:?}"
                ));
            }
            self.replies_routed += 1;
        } else if got.is_none() && was_evicted {
            self.late_unmatched += 1;
        } else if let Some(other) = got {
            // A late reply may only reach the flow that now owns the same pair.
            let owner = self.table.flow(&other).map(|f| (f.upstream, f.server));
            if owner != Some((upstream, server)) {
                return Err(format!(
                    "stale reply routed to {other}, whose flow is {owner:?}"
                ));
            }
        }
        Ok(())
    }

    fn unreachable(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let k = self.rng.below(self.in_flight.len() as u64) as usize;
        let (upstream, server, _) = self.in_flight[k];
        // `check` syncs the model (releases the pair, forgets the answer).
        self.table
            .server_unreachable(self.now, upstream, server, &mut self.sel);
    }

    fn change_limits(&mut self) {
        let max_flows = 1 + self.rng.below(150) as usize;
        if max_flows < self.table.len() {
            self.lowered = true;
        }
        self.max_flows = max_flows;
        self.idle = Duration::from_secs(1 + self.rng.below(30));
        self.table.set_limits(max_flows, self.idle);
    }

    fn advance(&mut self) -> Result<(), String> {
        let span = if self.rng.chance(10) { 40 } else { 3 };
        let ticks = 1 + self.rng.below(span);
        for _ in 0..ticks {
            self.now += self.tick;
            // As the shell's tick: the kernel's traffic of the flows due (and of some others
            // in turn), then the expiry, then the withdrawals.
            let mut read = self.table.offloaded_due(self.now);
            let turn = self.rng.below(4) as usize;
            read.extend(self.table.offloaded_turn(turn));
            self.report(read)?;
            if let Some(at) = self.table.poll_timeout()
                && at <= self.now
            {
                let kernel_busy: Vec<(SocketAddr, Duration)> = self
                    .table
                    .flows()
                    .filter(|f| self.table.is_offloaded(&f.client))
                    .map(|f| {
                        let k = self.kernel.get(&f.client).and_then(|k| k.last);
                        (f.client, k.map_or(f.last_seen, |k| k.max(f.last_seen)))
                    })
                    .collect();
                self.table.expire(self.now, &mut self.sel);
                for (c, seen) in kernel_busy {
                    if self.table.flow(&c).is_none() && seen + self.idle > self.now {
                        return Err(format!(
                            "offloaded flow of {c}, busy in the kernel at {seen:?}, expired at {:?}",
                            self.now
                        ));
                    }
                }
            }
            self.run_offload()?;
            self.sync_model();
            // As the shell does at every tick: give back sockets no flow uses. The sockets
            // beyond the new sizes are closed, so a slot there is a fresh socket next time
            // (no late reply can reach it): the model forgets their releases.
            if let Some(sizes) = self.table.shrink_upstreams() {
                let size = |f: pen::proxy::udp::Family| match f {
                    pen::proxy::udp::Family::V4 => sizes[0],
                    pen::proxy::udp::Family::V6 => sizes[1],
                };
                self.released.retain(|(u, _), _| u.index < size(u.family));
                for (server, high) in &mut self.server_high {
                    *high = (*high).min(size(pen::proxy::udp::Family::of(server)));
                }
                self.shrinks += 1;
            }
            // The same for the sockets bound to clients' addresses.
            if self.table.shrink_client_pools() {
                let table = &self.table;
                self.released
                    .retain(|(u, _), _| u.bound.is_none_or(|ip| u.index < table.client_pool(&ip)));
                self.shrinks += 1;
            }
            self.sync_model();
            // After the timer: nobody is idle for the idle time or longer.
            for f in self.table.flows() {
                if f.last_seen + self.idle <= self.now {
                    return Err(format!(
                        "flow of {} idle since {:?} survived the tick at {:?} (idle {:?})",
                        f.client, f.last_seen, self.now, self.idle
                    ));
                }
            }
            if self.table.len() <= self.max_flows {
                self.lowered = false;
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        if self.rng.chance(self.run_commands) {
            self.run_offload()?;
        }
        self.table.check_invariants().map_err(|e| e.to_string())?;
        // Every datagram the kernel forwarded is counted once: reported or withdrawn, or
        // pending for a flow it still holds.
        let pending: u64 = self
            .kernel
            .values()
            .map(|k| k.pending.datagrams_up + k.pending.datagrams_down)
            .sum();
        if self.table.stats().kernel_datagrams + pending != self.kernel_forwarded {
            return Err(format!(
                "kernel forwarded {}, table counted {} with {pending} pending",
                self.kernel_forwarded,
                self.table.stats().kernel_datagrams
            ));
        }
        if !self.lowered && self.table.len() > self.max_flows {
            return Err(format!(
                "{} flows > max {}",
                self.table.len(),
                self.max_flows
            ));
        }
        if self.sel.open != self.table.len() as i64 {
            return Err(format!(
                "selector open {} != table {}",
                self.sel.open,
                self.table.len()
            ));
        }
        for f in [pen::proxy::udp::Family::V4, pen::proxy::udp::Family::V6] {
            if self.table.upstreams_needed(f) > self.max_up {
                return Err("upstream pool beyond its bound".into());
            }
        }
        self.sync_model();
        Ok(())
    }
}

/// Runs one seed; returns the flows installed in the simulated kernel.
fn run(seed: u64, steps: usize) -> u64 {
    let mut sim = Sim::new(seed);
    for step in 0..steps {
        if let Err(e) = sim.step() {
            panic!(
                "seed {seed}, step {step}: {e}\nreplay: UDP_SIM_SEED={seed} cargo test --test udp_sim"
            );
        }
    }
    let s = sim.table.stats();
    assert!(
        s.datagrams_from_clients > 0,
        "seed {seed}: the simulation sent nothing"
    );
    assert_eq!(s.flows_evicted, sim.evictions, "seed {seed}");
    eprintln!(
        "seed {seed}: {} flows created, {} expired, {} failed, {} evicted, {} replies routed, \
         {} late replies to evicted flows unmatched, {} dropped full, {} no server, \
         {} pool shrinks, {} client pools dropped, {} refused for the client socket bound, \
         {} offloaded, {} withdrawn, {} datagrams forwarded by the kernel",
        s.flows_created,
        s.flows_expired,
        s.flows_failed,
        s.flows_evicted,
        sim.replies_routed,
        sim.late_unmatched,
        s.dropped_table_full,
        s.dropped_no_server,
        sim.shrinks,
        s.client_pools_dropped,
        s.skipped_no_client_socket,
        sim.installs,
        sim.withdrawals,
        sim.kernel_forwarded
    );
    sim.installs
}

#[test]
fn udp_flow_table_simulation_keeps_its_invariants() {
    if let Ok(seed) = std::env::var("UDP_SIM_SEED") {
        let seed: u64 = seed
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("UDP_SIM_SEED={seed:?}: expected a decimal u64"));
        eprintln!("UDP_SIM_SEED={seed}");
        run(seed, 20_000);
        return;
    }
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut offloaded = 0;
    for i in 0..30u64 {
        let seed = base.wrapping_add(i.wrapping_mul(0x9E37_79B9));
        eprintln!("UDP_SIM_SEED={seed}");
        offloaded += run(seed, 5_000);
    }
    assert!(offloaded > 0, "no run exercised the kernel fast path");
}

/// Many source ports against a small table: memory stays bounded by the table size.
#[test]
fn port_flood_is_bounded_by_the_table() {
    let mut sel = SimSelector {
        servers: vec![
            "10.0.0.1:53".parse().unwrap(),
            "10.0.0.2:53".parse().unwrap(),
        ],
        blacklisted_until: vec![Duration::ZERO; 2],
        cursor: 0,
        open: 0,
        bl: Duration::ZERO,
    };
    let mut t = FlowTable::new(
        500,
        Duration::from_secs(60),
        FlowTable::default_max_upstreams(500),
    );
    let now = Duration::from_secs(1);
    for ip in 0..4u8 {
        for port in 1..=u16::MAX {
            let c = SocketAddr::from(([198, 51, 100, ip], port));
            t.handle_client(now, c, 0, &mut sel);
        }
    }
    assert_eq!(t.len(), 500);
    assert_eq!(t.stats().dropped_table_full, 4 * 65_535 - 500);
    assert!(t.upstreams_needed(pen::proxy::udp::Family::V4) <= 250);
    t.check_invariants().unwrap();
}
