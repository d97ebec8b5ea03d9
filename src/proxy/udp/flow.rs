//! The UDP flow table: a pure state machine (no sockets, no clock, no randomness).
//!
//! Inputs, all with `now` (a monotonic `Duration` since an arbitrary origin):
//! - [`FlowTable::handle_client`]: a datagram from a client address arrived on the listener;
//! - [`FlowTable::handle_server`]: a datagram arrived on upstream socket `k` from a server;
//! - [`FlowTable::server_unreachable`]: an ICMP error (or a send error) for upstream `k` → server;
//! - [`FlowTable::expire`]: the timer returned by [`FlowTable::poll_timeout`] fired;
//! - the kernel fast path's answers ([`kernel`]): [`FlowTable::handle_offload_result`],
//!   [`FlowTable::handle_activity`], [`FlowTable::handle_withdrawn`].
//!
//! Outputs: where to send the datagram ([`ClientVerdict`]), which client a reply goes to, which
//! upstream sockets must exist ([`FlowTable::upstreams_needed`]), the next timer, and what the
//! kernel fast path must do ([`FlowTable::poll_offload`]: install an established flow,
//! withdraw one that ended). The table never calls the kernel itself.
//!
//! # Reply routing and the descriptor bound
//! Upstream sockets form a pool per address family, shared by all flows and all servers. A flow
//! is assigned the upstream socket `k` such that no other live flow uses `(k, server)`: replies
//! are demultiplexed by the pair (socket the reply arrived on, server address it came from),
//! which is unique among live flows. So a socket carries at most one flow per server, and the
//! pool needs as many sockets as the busiest server has live flows: with `n` servers evenly
//! used, about `conn_max / n`; never more than `max_upstreams` per family (default: `conn_max`).
//! The number of descriptors does not depend on the number of clients (C Pen opens two per flow).
//! Freed slots are reused oldest-first, and not within [`SLOT_REUSE_DELAY`] of their release
//! while the pool may still grow, so a late reply to an expired or evicted flow is unlikely to
//! reach the next flow on the same `(k, server)`.
//!
//! # Selection
//! The table asks a [`Selector`] (the shared `Balancer` in the daemon, a fake in tests) for an
//! ordered list of candidates when a new client address is seen, and walks it: the first
//! candidate with an inet address and a free upstream slot gets the flow. A flow counts as an
//! established connection of its server from creation until it expires or is removed.
//!
//! # A full table
//! `max_flows` (`conn_max`) bounds the table. When it is full, a new flow evicts the
//! least-recently-active *answered* flow: one whose server has replied since the client's last
//! datagram (a completed exchange, e.g. a DNS query and its answer). Answered flows are kept in
//! an LRU ordered by the time of their last reply (O(log n) per datagram); a client datagram
//! takes its flow out of the LRU until the next reply. Only when no flow is answered is the new
//! flow dropped (and counted), so a flood of unanswered datagrams cannot push out exchanges
//! still waiting for their reply, and memory stays bounded by `max_flows`. A late reply to an
//! evicted flow matches no route and is counted as unmatched, unless its `(upstream, server)`
//! pair has been handed to a new flow meanwhile (only when the pool is at `max_upstreams`, or
//! after [`SLOT_REUSE_DELAY`]; the same caveat as for expired flows).
//!
//! # Transparent flows: sockets bound to the client's address
//! With `transparent` ([`FlowTable::set_sources`]), a flow whose source is the client's own
//! address ([`choose_source`]) goes out on a socket bound to that address (the shell sets
//! `IP_TRANSPARENT` and binds it to `(client address, 0)`, as C Pen binds its upstream socket).
//! The backend's answer is addressed to that socket, so a host's `-m socket` mark rule finds
//! it even without `--nowildcard` (which ignores sockets bound to the wildcard address). These
//! sockets form one pool per client address ([`UpstreamId::bound`]), shared by that client's
//! flows by the same rule as the shared pool: one socket per client address carries at most one
//! flow per server. Their total is bounded ([`FlowTable::set_max_client_sockets`], default the
//! upstream bound): a pool whose flows are all gone is dropped at the next
//! [`FlowTable::shrink_client_pools`], or at once when a new flow needs room; when there is
//! none, the candidate is skipped and counted ([`UdpStats::skipped_no_client_socket`]). A
//! candidate of the other address family than the client is skipped too (counted), and a flow
//! none could take is dropped as [`DropReason::FamilyMismatch`]: never sent from pen's own
//! address.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::proxy::transparent::{UpstreamSource, choose_source};
use crate::select::Target;

pub mod kernel;
pub use kernel::{Activity, FlowId, KernelReport, OffloadCommand, OffloadRequest};

/// Address family of an upstream socket pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The pool a server address is reached from.
    pub fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// One upstream socket of a pool: family and index (0-based, dense within the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId {
    pub family: Family,
    pub index: u32,
    /// `None`: pen's shared pool of `family`. `Some(ip)`: the pool of sockets bound to client
    /// address `ip` (transparent flows; `ip` is of `family`).
    pub bound: Option<IpAddr>,
}

/// One candidate server from the selector, in the order it should be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub target: Target,
    /// `None` when the backend is not an inet address (Unix socket backends: unsupported for UDP,
    /// as in C Pen, issue #56) or has no address yet.
    pub addr: Option<SocketAddr>,
}

/// Server selection as the flow table needs it. The daemon implements it over the shared
/// `Balancer`; tests implement it with fakes.
pub trait Selector {
    /// Ordered candidates for a new flow from `client`; empty = drop the datagram.
    fn candidates(&mut self, client: SocketAddr, now: Duration) -> Vec<Candidate>;
    /// A flow from `client` was created on `target` (connect started and succeeded, for UDP).
    fn flow_opened(&mut self, client: SocketAddr, target: Target, now: Duration);
    /// The flow ended (expiry or removal). `sent` = bytes to the server, `received` = from it.
    fn flow_closed(
        &mut self,
        client: SocketAddr,
        target: Target,
        sent: u64,
        received: u64,
        now: Duration,
    );
    /// The server proved unreachable (ICMP port unreachable, send error): blacklist it.
    fn server_failed(&mut self, target: Target, now: Duration);
    /// Changes whenever some target's address may have changed ([`FlowTable::follow_servers`]
    /// then asks [`Selector::current_addr`]). The default: addresses never change.
    fn addr_generation(&mut self) -> u64 {
        0
    }
    /// The inet address `target` has now (`None`: removed, unresolved or not inet).
    fn current_addr(&mut self, _target: Target) -> Option<SocketAddr> {
        None
    }
}

/// Why a client datagram was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The flow table holds `max_flows` flows already.
    TableFull,
    /// No candidate could take the flow (none available, all blacklisted or without a slot).
    NoServer,
    /// `transparent`: the candidates that were not of the client's address family were
    /// skipped, and no other could take the flow. `server` is the first skipped one.
    FamilyMismatch { server: SocketAddr },
}

/// What to do with a datagram from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientVerdict {
    /// Send it on upstream socket `upstream` to `server`.
    Forward {
        upstream: UpstreamId,
        server: SocketAddr,
        new_flow: bool,
    },
    Drop(DropReason),
}

/// Counters since the table was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpStats {
    pub flows_created: u64,
    pub flows_expired: u64,
    /// Flows removed because their server was unreachable.
    pub flows_failed: u64,
    pub datagrams_from_clients: u64,
    pub bytes_from_clients: u64,
    pub datagrams_from_servers: u64,
    pub bytes_from_servers: u64,
    /// New flows refused because the table was full (`conn_max`) and no flow was answered.
    pub dropped_table_full: u64,
    /// Answered flows removed to make room for a new flow in a full table.
    pub flows_evicted: u64,
    /// New flows refused because no server could take them.
    pub dropped_no_server: u64,
    /// Candidates skipped because they are not inet addresses.
    pub skipped_unsupported: u64,
    /// Candidates skipped because every upstream socket already carries a flow to them.
    pub skipped_no_slot: u64,
    /// Transparent flows: candidates skipped because every socket bound to the client's
    /// address carries a flow to them and the bound on such sockets is reached.
    pub skipped_no_client_socket: u64,
    /// Transparent flows: candidates skipped because they are not of the client's family.
    pub skipped_family_mismatch: u64,
    /// Pools of sockets bound to a client's address that were dropped (their flows gone):
    /// at a shrink, or at once to make room for a new one.
    pub client_pools_dropped: u64,
    /// Datagrams from servers that match no live flow (late replies, strangers).
    pub unmatched_replies: u64,
    /// Unreachable reports (ICMP errors, send errors).
    pub unreachable: u64,
    /// Flows handed to the kernel fast path ([`OffloadCommand::Install`] that succeeded).
    pub flows_offloaded: u64,
    /// Datagrams the kernel forwarded for offloaded flows (both directions; counted as the
    /// shell reports them: [`FlowTable::handle_activity`], [`FlowTable::handle_withdrawn`]).
    pub kernel_datagrams: u64,
    /// Flows removed because their server's address changed (`server N address ...`, a
    /// re-resolved name): the client's next datagram opens a flow to the new address.
    pub flows_readdressed: u64,
}

/// Where a flow's datagrams are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// By pen; may be offered to the kernel once established.
    Pen,
    /// By pen, and offered to the kernel ([`OffloadCommand::Install`]): waiting for the
    /// answer ([`FlowTable::handle_offload_result`]).
    Offering,
    /// By the kernel.
    Kernel,
    /// By pen for good: the kernel refused it.
    PenOnly,
}

/// A read-only view of one flow, for `connection`/status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    pub client: SocketAddr,
    pub target: Target,
    pub server: SocketAddr,
    pub upstream: UpstreamId,
    pub created: Duration,
    pub last_seen: Duration,
    /// When the flow expires unless traffic arrives.
    pub expires: Duration,
    pub datagrams_up: u64,
    pub bytes_up: u64,
    pub datagrams_down: u64,
    pub bytes_down: u64,
}

#[derive(Debug, Clone)]
struct Flow {
    target: Target,
    server: SocketAddr,
    upstream: UpstreamId,
    created: Duration,
    last_seen: Duration,
    /// Key of this flow's entry in `FlowTable::deadlines`.
    deadline: (Duration, u64),
    /// Key of this flow's entry in `FlowTable::answered`: `Some` while the server has replied
    /// since the client's last datagram (the flow may be evicted when the table is full).
    answered: Option<(Duration, u64)>,
    datagrams_up: u64,
    bytes_up: u64,
    datagrams_down: u64,
    bytes_down: u64,
    /// The address the client sent to, when the listener is a wildcard: replies leave from it.
    local: Option<IpAddr>,
    path: Path,
    /// Tells this flow from a later one of the same client in the kernel fast path's answers.
    id: FlowId,
}

/// Upstream slots in use towards one server address.
#[derive(Debug, Clone, Default)]
struct SlotAlloc {
    /// Indices `0..high` have been handed out at least once.
    high: u32,
    /// Released indices with the time of release, oldest first.
    free: VecDeque<(u32, Duration)>,
}

/// A released `(upstream, server)` slot is not handed to a new flow for this long while the
/// pool may still grow, so that a late reply to the old flow is unmatched rather than
/// delivered to the new one.
pub const SLOT_REUSE_DELAY: Duration = Duration::from_secs(1);

impl SlotAlloc {
    fn alloc(&mut self, max: u32, now: Duration) -> Option<u32> {
        let rested = self
            .free
            .front()
            .is_some_and(|&(_, at)| at.saturating_add(SLOT_REUSE_DELAY) <= now);
        if !rested && self.high < max {
            self.high += 1;
            return Some(self.high - 1);
        }
        // A rested slot, or the pool is at its bound: the oldest released slot.
        self.free.pop_front().map(|(i, _)| i)
    }

    fn release(&mut self, i: u32, now: Duration) {
        self.free.push_back((i, now));
    }
}

/// The flow table. See the module documentation.
#[derive(Debug)]
pub struct FlowTable {
    idle: Duration,
    max_flows: usize,
    max_upstreams: u32,
    flows: HashMap<SocketAddr, Flow>,
    /// (upstream socket, server address) → client.
    routes: HashMap<(UpstreamId, SocketAddr), SocketAddr>,
    /// (deadline, sequence) → client; exactly one entry per live flow.
    deadlines: BTreeMap<(Duration, u64), SocketAddr>,
    /// (time of last reply, sequence) → client, for answered flows only: the eviction LRU.
    answered: BTreeMap<(Duration, u64), SocketAddr>,
    /// Slots per (pool, server): `None` = the shared pool, `Some(ip)` = the pool bound to `ip`.
    slots: HashMap<(Option<IpAddr>, SocketAddr), SlotAlloc>,
    /// Upstream sockets handed out per family (`[V4, V6]`): indices below this must exist.
    upstream_high: [u32; 2],
    /// Pools of sockets bound to one client's address (transparent flows).
    client_pools: HashMap<IpAddr, ClientPool>,
    /// Sockets of all client pools (the sum of their `high`).
    client_sockets: u32,
    /// Client pools without flows (dropped at the next shrink, or when room is needed).
    empty_client_pools: usize,
    /// Bound on `client_sockets`.
    max_client_sockets: u32,
    /// `transparent` and `source IP` as in force for new flows ([`FlowTable::set_sources`]).
    transparent: bool,
    source: Option<IpAddr>,
    seq: u64,
    stats: UdpStats,
    /// Established flows are offered to the kernel fast path ([`FlowTable::enable_offload`]).
    offload: bool,
    /// What the kernel fast path must do, oldest first ([`FlowTable::poll_offload`]).
    offload_queue: VecDeque<OffloadCommand>,
    /// The selector's [`Selector::addr_generation`] the flows were last checked against.
    addr_generation: u64,
    /// Where [`FlowTable::offloaded_turn`] goes on next.
    refresh_turn: usize,
}

/// Default bound on upstream sockets per family when none is given: one per possible flow.
pub const MAX_UPSTREAMS_CAP: u32 = 65_536;

/// The sockets bound to one client's address.
#[derive(Debug, Clone, Copy, Default)]
struct ClientPool {
    /// Sockets `0..high` must exist.
    high: u32,
    /// Live flows on them.
    flows: u32,
}

impl FlowTable {
    /// A table holding at most `max_flows` flows, each expiring after `idle` without traffic,
    /// with at most `max_upstreams` upstream sockets per address family.
    pub fn new(max_flows: usize, idle: Duration, max_upstreams: u32) -> FlowTable {
        FlowTable {
            idle,
            max_flows,
            max_upstreams,
            flows: HashMap::new(),
            routes: HashMap::new(),
            deadlines: BTreeMap::new(),
            answered: BTreeMap::new(),
            slots: HashMap::new(),
            upstream_high: [0, 0],
            client_pools: HashMap::new(),
            client_sockets: 0,
            empty_client_pools: 0,
            max_client_sockets: max_upstreams,
            transparent: false,
            source: None,
            seq: 0,
            stats: UdpStats::default(),
            offload: false,
            offload_queue: VecDeque::new(),
            addr_generation: 0,
            refresh_turn: 0,
        }
    }

    /// The upstream bound that matches a flow limit: one socket per flow at worst.
    pub fn default_max_upstreams(max_flows: usize) -> u32 {
        u32::try_from(max_flows)
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_UPSTREAMS_CAP)
    }

    /// Change the limits at run time (`conn_max`, the idle time). A smaller `max_flows` keeps
    /// existing flows and refuses new ones until the table shrinks below it. A new idle time
    /// applies to existing flows too.
    pub fn set_limits(&mut self, max_flows: usize, idle: Duration) {
        self.max_flows = max_flows;
        if idle != self.idle {
            self.idle = idle;
            self.deadlines.clear();
            let clients: Vec<SocketAddr> = self.flows.keys().copied().collect();
            for client in clients {
                if let Some(flow) = self.flows.get(&client) {
                    let at = flow.last_seen.saturating_add(idle);
                    let key = self.next_key(at);
                    self.deadlines.insert(key, client);
                    if let Some(flow) = self.flows.get_mut(&client) {
                        flow.deadline = key;
                    }
                }
            }
        }
    }

    /// `transparent` and `source IP` for flows created from now on (existing flows keep the
    /// source they were created with). See [`choose_source`].
    pub fn set_sources(&mut self, transparent: bool, source: Option<IpAddr>) {
        self.transparent = transparent;
        self.source = source;
    }

    /// Bound on the sockets bound to clients' addresses, all client pools together (default:
    /// the upstream bound given to [`FlowTable::new`]). Set it before flows are created (a
    /// lower bound than the sockets in use only stops new ones).
    pub fn set_max_client_sockets(&mut self, max: u32) {
        self.max_client_sockets = max;
    }

    /// How many sockets bound to `ip` must exist (indices `0..n`; 0: none).
    pub fn client_pool(&self, ip: &IpAddr) -> u32 {
        self.client_pools.get(ip).map_or(0, |p| p.high)
    }

    /// Sockets bound to clients' addresses, all pools together.
    pub fn client_sockets(&self) -> u32 {
        self.client_sockets
    }

    /// The bound on [`FlowTable::client_sockets`].
    pub fn max_client_sockets(&self) -> u32 {
        self.max_client_sockets
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    pub fn max_flows(&self) -> usize {
        self.max_flows
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    /// How many upstream sockets of `family` must exist (indices `0..n`).
    pub fn upstreams_needed(&self, family: Family) -> u32 {
        self.upstream_high[family_index(family)]
    }

    /// The flow of `client`, if any.
    pub fn flow(&self, client: &SocketAddr) -> Option<FlowInfo> {
        self.flows.get(client).map(|f| info(*client, f, self.idle))
    }

    /// Every live flow (unordered).
    pub fn flows(&self) -> impl Iterator<Item = FlowInfo> + '_ {
        self.flows.iter().map(|(c, f)| info(*c, f, self.idle))
    }

    fn next_key(&mut self, at: Duration) -> (Duration, u64) {
        self.seq = self.seq.wrapping_add(1);
        (at, self.seq)
    }

    /// Puts `client`'s flow at the recent end of the eviction LRU, as last active at `at`
    /// (replacing its entry, if it had one).
    fn mark_answered(&mut self, client: SocketAddr, at: Duration) {
        let key = self.next_key(at);
        let Some(flow) = self.flows.get_mut(&client) else {
            return;
        };
        if let Some(old) = flow.answered.replace(key) {
            self.answered.remove(&old);
        }
        self.answered.insert(key, client);
    }

    /// A datagram of `len` bytes from `client` arrived on the listener.
    pub fn handle_client(
        &mut self,
        now: Duration,
        client: SocketAddr,
        len: usize,
        selector: &mut dyn Selector,
    ) -> ClientVerdict {
        let len64 = len as u64;
        self.stats.datagrams_from_clients += 1;
        self.stats.bytes_from_clients += len64;
        if let Some(flow) = self.flows.get_mut(&client) {
            flow.last_seen = flow.last_seen.max(now);
            flow.datagrams_up += 1;
            flow.bytes_up += len64;
            // Awaiting a reply again: not evictable until it comes.
            if let Some(key) = flow.answered.take() {
                self.answered.remove(&key);
            }
            return ClientVerdict::Forward {
                upstream: flow.upstream,
                server: flow.server,
                new_flow: false,
            };
        }
        // Make room by evicting answered flows, least recently active first (more than one
        // only after `max_flows` was lowered below the table's size). An offloaded flow's LRU
        // position moves with the kernel's traffic as it is reported
        // ([`FlowTable::handle_activity`]).
        while self.flows.len() >= self.max_flows {
            let Some((_, victim)) = self.answered.pop_first() else {
                self.stats.dropped_table_full += 1;
                return ClientVerdict::Drop(DropReason::TableFull);
            };
            if let Some(flow) = self.flows.get_mut(&victim) {
                flow.answered = None; // its LRU entry is gone already
            }
            if self.remove(victim, now, selector).is_some() {
                self.stats.flows_evicted += 1;
            }
        }
        let mut mismatch = None;
        for cand in selector.candidates(client, now) {
            let Some(server) = cand.addr else {
                self.stats.skipped_unsupported += 1;
                continue;
            };
            let family = Family::of(&server);
            let bound =
                match choose_source(self.source, self.transparent, Some(client.ip()), server) {
                    UpstreamSource::Client(ip) => Some(ip),
                    UpstreamSource::FamilyMismatch { .. } => {
                        self.stats.skipped_family_mismatch += 1;
                        mismatch.get_or_insert(server);
                        continue;
                    }
                    UpstreamSource::Kernel | UpstreamSource::Configured(_) => None,
                };
            let Some(index) = self.alloc_slot(bound, server, now) else {
                continue;
            };
            let upstream = UpstreamId {
                family,
                index,
                bound,
            };
            let key = self.next_key(now.saturating_add(self.idle));
            self.deadlines.insert(key, client);
            self.routes.insert((upstream, server), client);
            self.flows.insert(
                client,
                Flow {
                    target: cand.target,
                    server,
                    upstream,
                    created: now,
                    last_seen: now,
                    deadline: key,
                    answered: None,
                    datagrams_up: 1,
                    bytes_up: len64,
                    datagrams_down: 0,
                    bytes_down: 0,
                    local: None,
                    path: Path::Pen,
                    id: FlowId(self.seq),
                },
            );
            self.stats.flows_created += 1;
            selector.flow_opened(client, cand.target, now);
            return ClientVerdict::Forward {
                upstream,
                server,
                new_flow: true,
            };
        }
        self.stats.dropped_no_server += 1;
        ClientVerdict::Drop(match mismatch {
            Some(server) => DropReason::FamilyMismatch { server },
            None => DropReason::NoServer,
        })
    }

    /// A free `(socket, server)` slot for a new flow to `server` in the shared pool (`bound`
    /// `None`) or in the pool bound to a client's address; `None` (counted) when there is none.
    fn alloc_slot(
        &mut self,
        bound: Option<IpAddr>,
        server: SocketAddr,
        now: Duration,
    ) -> Option<u32> {
        let Some(ip) = bound else {
            let max = self.max_upstreams;
            let Some(index) = self
                .slots
                .entry((None, server))
                .or_default()
                .alloc(max, now)
            else {
                self.stats.skipped_no_slot += 1;
                return None;
            };
            let high = &mut self.upstream_high[family_index(Family::of(&server))];
            *high = (*high).max(index + 1);
            return Some(index);
        };
        // A client pool grows by one socket while the bound allows, after dropping the pools
        // whose flows are gone if need be; else only its existing sockets can take the flow.
        if self.client_sockets >= self.max_client_sockets {
            self.drop_empty_client_pools();
        }
        let pool_high = self.client_pool(&ip);
        let room = u32::from(self.client_sockets < self.max_client_sockets);
        let max = pool_high.saturating_add(room).min(self.max_upstreams);
        let Some(index) = self
            .slots
            .entry((Some(ip), server))
            .or_default()
            .alloc(max, now)
        else {
            self.stats.skipped_no_client_socket += 1;
            return None;
        };
        let pool = self.client_pools.entry(ip).or_default();
        // A pool in the map has at least one socket; a new one (high 0) was not counted empty.
        if pool.high > 0 && pool.flows == 0 {
            self.empty_client_pools -= 1;
        }
        if index >= pool.high {
            self.client_sockets += index + 1 - pool.high;
            pool.high = index + 1;
        }
        pool.flows += 1;
        Some(index)
    }

    /// Forgets every client pool without flows (the shell closes their sockets when it next
    /// matches its pools to [`FlowTable::client_pool`]). Returns how many.
    fn drop_empty_client_pools(&mut self) -> usize {
        // O(1) unless there is something to drop: a full bound with busy pools costs nothing.
        if self.empty_client_pools == 0 {
            return 0;
        }
        self.empty_client_pools = 0;
        let empty: Vec<IpAddr> = self
            .client_pools
            .iter()
            .filter(|(_, p)| p.flows == 0)
            .map(|(ip, _)| *ip)
            .collect();
        if empty.is_empty() {
            return 0;
        }
        for ip in &empty {
            if let Some(p) = self.client_pools.remove(ip) {
                self.client_sockets -= p.high;
            }
        }
        let pools = &self.client_pools;
        self.slots
            .retain(|(bound, _), _| bound.is_none_or(|ip| pools.contains_key(&ip)));
        self.stats.client_pools_dropped += empty.len() as u64;
        empty.len()
    }

    /// Records the address `client` sent its latest datagram to (a wildcard listener learns
    /// it per datagram); replies of the flow leave from it ([`FlowTable::local_of`]).
    pub fn note_local(&mut self, client: &SocketAddr, local: IpAddr) {
        if let Some(f) = self.flows.get_mut(client) {
            f.local = Some(local);
        }
    }

    /// The address replies to `client` must come from, if the listener recorded one.
    pub fn local_of(&self, client: &SocketAddr) -> Option<IpAddr> {
        self.flows.get(client).and_then(|f| f.local)
    }

    /// A datagram of `len` bytes from `server` arrived on upstream socket `upstream`: the client
    /// to send it to from the listening address, or `None` (drop: no live flow).
    pub fn handle_server(
        &mut self,
        now: Duration,
        upstream: UpstreamId,
        server: SocketAddr,
        len: usize,
    ) -> Option<SocketAddr> {
        let len64 = len as u64;
        let routed = self
            .routes
            .get(&(upstream, server))
            .copied()
            .filter(|client| self.flows.contains_key(client));
        let Some(client) = routed else {
            self.stats.unmatched_replies += 1;
            return None;
        };
        if let Some(flow) = self.flows.get_mut(&client) {
            flow.last_seen = flow.last_seen.max(now);
            flow.datagrams_down += 1;
            flow.bytes_down += len64;
            let seen = flow.last_seen;
            self.mark_answered(client, seen);
        }
        self.stats.datagrams_from_servers += 1;
        self.stats.bytes_from_servers += len64;
        Some(client)
    }

    /// `server` was unreachable through `upstream` (ICMP port unreachable, or a send error):
    /// blacklist its target and remove the flow, so that the client's next datagram picks
    /// another server. Returns the client whose flow was removed.
    pub fn server_unreachable(
        &mut self,
        now: Duration,
        upstream: UpstreamId,
        server: SocketAddr,
        selector: &mut dyn Selector,
    ) -> Option<SocketAddr> {
        self.stats.unreachable += 1;
        let client = self.routes.get(&(upstream, server)).copied()?;
        let flow = self.remove(client, now, selector)?;
        self.stats.flows_failed += 1;
        selector.server_failed(flow.target, now);
        Some(client)
    }

    /// Remove the flow of `client` without judging its server (e.g. no upstream socket could be
    /// opened for it). Returns whether there was one.
    pub fn remove_flow(
        &mut self,
        now: Duration,
        client: SocketAddr,
        selector: &mut dyn Selector,
    ) -> bool {
        self.remove(client, now, selector).is_some()
    }

    /// Flows follow their server's address, as in C Pen (which sends every datagram to the
    /// server's current address): when the selector's address generation moved since the last
    /// call, every flow whose target no longer has the address the flow was opened to is
    /// removed (kernel path included), and the client's next datagram opens a new flow to the
    /// current address. Returns how many flows were removed. Cheap when nothing changed; the
    /// shell calls it at every tick.
    pub fn follow_servers(&mut self, now: Duration, selector: &mut dyn Selector) -> usize {
        let generation = selector.addr_generation();
        if generation == self.addr_generation {
            return 0;
        }
        self.addr_generation = generation;
        let mut current: HashMap<Target, Option<SocketAddr>> = HashMap::new();
        let stale: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter(|(_, f)| {
                *current
                    .entry(f.target)
                    .or_insert_with(|| selector.current_addr(f.target))
                    != Some(f.server)
            })
            .map(|(c, _)| *c)
            .collect();
        for c in &stale {
            if self.remove(*c, now, selector).is_some() {
                self.stats.flows_readdressed += 1;
            }
        }
        stale.len()
    }

    fn remove(
        &mut self,
        client: SocketAddr,
        now: Duration,
        selector: &mut dyn Selector,
    ) -> Option<Flow> {
        let flow = self.flows.remove(&client)?;
        if matches!(flow.path, Path::Offering | Path::Kernel) {
            self.offload_queue.push_back(OffloadCommand::Withdraw {
                client,
                flow: flow.id,
            });
        }
        self.deadlines.remove(&flow.deadline);
        if let Some(key) = flow.answered {
            self.answered.remove(&key);
        }
        self.routes.remove(&(flow.upstream, flow.server));
        if let Some(slots) = self.slots.get_mut(&(flow.upstream.bound, flow.server)) {
            slots.release(flow.upstream.index, now);
        }
        if let Some(pool) = flow
            .upstream
            .bound
            .and_then(|ip| self.client_pools.get_mut(&ip))
        {
            pool.flows = pool.flows.saturating_sub(1);
            if pool.flows == 0 {
                self.empty_client_pools += 1;
            }
        }
        selector.flow_closed(client, flow.target, flow.bytes_up, flow.bytes_down, now);
        Some(flow)
    }

    /// Gives back upstream sockets that no flow uses: when the highest index in use in a
    /// family (at least 1) is at most half that family's pool, the pool shrinks to it and the
    /// slots beyond are forgotten. Returns the new pool sizes `[V4, V6]` when one shrank (the
    /// shell closes the sockets beyond them), else `None`. O(flows) when a pool holds more
    /// than one socket; the shell calls it at every tick. The halving keeps a pool that
    /// serves a steady load from being closed and reopened.
    pub fn shrink_upstreams(&mut self) -> Option<[u32; 2]> {
        if self.upstream_high.iter().all(|&h| h <= 1) {
            return None;
        }
        let mut used = [1u32; 2];
        for f in self.flows.values().filter(|f| f.upstream.bound.is_none()) {
            let u = &mut used[family_index(f.upstream.family)];
            *u = (*u).max(f.upstream.index.saturating_add(1));
        }
        let mut changed = false;
        for (high, used) in self.upstream_high.iter_mut().zip(used) {
            if used.saturating_mul(2) <= *high {
                *high = used;
                changed = true;
            }
        }
        if !changed {
            return None;
        }
        let highs = self.upstream_high;
        self.slots.retain(|(bound, server), s| {
            if bound.is_some() {
                return true;
            }
            let cap = highs[family_index(Family::of(server))];
            s.high = s.high.min(cap);
            s.free.retain(|&(i, _)| i < cap);
            s.high > 0
        });
        Some(highs)
    }

    /// Gives back sockets bound to clients' addresses: a pool whose flows are all gone is
    /// dropped, and a pool whose highest index in use is at most half its size shrinks to it
    /// (as [`FlowTable::shrink_upstreams`]). Returns whether any pool changed; the shell then
    /// closes the sockets beyond [`FlowTable::client_pool`] of each address. O(flows) when a
    /// pool holds more than one socket; the shell calls it at every tick.
    pub fn shrink_client_pools(&mut self) -> bool {
        let mut changed = self.drop_empty_client_pools() > 0;
        if self.client_pools.values().all(|p| p.high <= 1) {
            return changed;
        }
        let mut used: HashMap<IpAddr, u32> = HashMap::new();
        for f in self.flows.values() {
            if let Some(ip) = f.upstream.bound {
                let u = used.entry(ip).or_insert(1);
                *u = (*u).max(f.upstream.index.saturating_add(1));
            }
        }
        let mut shrunk: HashMap<IpAddr, u32> = HashMap::new();
        for (ip, pool) in self.client_pools.iter_mut() {
            let u = used.get(ip).copied().unwrap_or(1);
            if pool.high > 1 && u.saturating_mul(2) <= pool.high {
                self.client_sockets -= pool.high - u;
                pool.high = u;
                shrunk.insert(*ip, u);
            }
        }
        if !shrunk.is_empty() {
            for ((bound, _), s) in self.slots.iter_mut() {
                if let Some(&cap) = bound.as_ref().and_then(|ip| shrunk.get(ip)) {
                    s.high = s.high.min(cap);
                    s.free.retain(|&(i, _)| i < cap);
                }
            }
        }
        changed |= !shrunk.is_empty();
        changed
    }

    /// When [`FlowTable::expire`] should next be called (`None`: no flows).
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.deadlines.first_key_value().map(|((at, _), _)| *at)
    }

    /// Remove every flow idle for at least the idle time at `now`. Returns how many expired.
    /// A flow with traffic since its deadline was set is rescheduled, not expired.
    pub fn expire(&mut self, now: Duration, selector: &mut dyn Selector) -> usize {
        let mut expired = 0;
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let client = entry.remove();
            let Some(flow) = self.flows.get(&client) else {
                continue;
            };
            let due = flow.last_seen.saturating_add(self.idle);
            if due > now {
                let key = self.next_key(due);
                self.deadlines.insert(key, client);
                if let Some(flow) = self.flows.get_mut(&client) {
                    flow.deadline = key;
                }
                continue;
            }
            // The deadline entry is already gone; `remove` tolerates that.
            self.remove(client, now, selector);
            self.stats.flows_expired += 1;
            expired += 1;
        }
        expired
    }

    /// Check the internal invariants (tests and simulation): every flow has exactly one route
    /// and one deadline, routes and deadlines point back at live flows, and no (upstream,
    /// server) pair is used twice.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        use InvariantError as E;
        if self.flows.len() != self.routes.len() || self.flows.len() != self.deadlines.len() {
            return Err(E::Sizes {
                flows: self.flows.len(),
                routes: self.routes.len(),
                deadlines: self.deadlines.len(),
            });
        }
        let answered = self.flows.values().filter(|f| f.answered.is_some()).count();
        if answered != self.answered.len() {
            return Err(E::Lru {
                answered,
                entries: self.answered.len(),
            });
        }
        for (client, flow) in &self.flows {
            let client = *client;
            if let Some(key) = flow.answered
                && self.answered.get(&key) != Some(&client)
            {
                return Err(E::NotInLru { client });
            }
            if self.routes.get(&(flow.upstream, flow.server)) != Some(&client) {
                return Err(E::NoRoute { client });
            }
            if self.deadlines.get(&flow.deadline) != Some(&client) {
                return Err(E::NoDeadline { client });
            }
            let pool = match flow.upstream.bound {
                None => self.upstream_high[family_index(flow.upstream.family)],
                Some(ip) => {
                    if Family::of(&SocketAddr::new(ip, 0)) != flow.upstream.family {
                        return Err(E::BoundToOtherFamily { client, ip });
                    }
                    self.client_pool(&ip)
                }
            };
            if flow.upstream.index >= pool {
                return Err(E::BeyondPool { client });
            }
            if flow.upstream.family != Family::of(&flow.server) {
                return Err(E::WrongFamily { client });
            }
        }
        for high in self.upstream_high {
            if high > self.max_upstreams {
                return Err(E::TooManyUpstreams {
                    high,
                    bound: self.max_upstreams,
                });
            }
        }
        for ((bound, server), slots) in &self.slots {
            let pool = match bound {
                None => self.upstream_high[family_index(Family::of(server))],
                Some(ip) => self.client_pool(ip),
            };
            if slots.high > pool || slots.free.iter().any(|&(i, _)| i >= slots.high) {
                return Err(E::SlotsBeyondPool {
                    server: *server,
                    pool,
                });
            }
        }
        let mut pool_flows: HashMap<IpAddr, u32> = HashMap::new();
        for f in self.flows.values() {
            if let Some(ip) = f.upstream.bound {
                *pool_flows.entry(ip).or_default() += 1;
            }
        }
        for (ip, pool) in &self.client_pools {
            let live = pool_flows.get(ip).copied().unwrap_or(0);
            if pool.flows != live {
                return Err(E::PoolFlows {
                    ip: *ip,
                    counted: pool.flows,
                    live,
                });
            }
        }
        let empty = self.client_pools.values().filter(|p| p.flows == 0).count();
        if empty != self.empty_client_pools {
            return Err(E::EmptyPools {
                empty,
                counted: self.empty_client_pools,
            });
        }
        if let Some(ip) = pool_flows
            .keys()
            .find(|ip| !self.client_pools.contains_key(ip))
        {
            return Err(E::NoPool { ip: *ip });
        }
        let total: u32 = self.client_pools.values().map(|p| p.high).sum();
        if total != self.client_sockets || total > self.max_client_sockets {
            return Err(E::ClientSockets {
                total,
                counted: self.client_sockets,
                bound: self.max_client_sockets,
            });
        }
        Ok(())
    }
}

/// A broken internal invariant of the flow table ([`FlowTable::check_invariants`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantError {
    #[error("{flows} flows, {routes} routes, {deadlines} deadlines")]
    Sizes {
        flows: usize,
        routes: usize,
        deadlines: usize,
    },
    #[error("{answered} answered flows, {entries} LRU entries")]
    Lru { answered: usize, entries: usize },
    #[error("answered flow of {client} is missing from the LRU")]
    NotInLru { client: SocketAddr },
    #[error("flow of {client} has no route back")]
    NoRoute { client: SocketAddr },
    #[error("flow of {client} has no deadline")]
    NoDeadline { client: SocketAddr },
    #[error("flow of {client} is bound to {ip} of another family")]
    BoundToOtherFamily { client: SocketAddr, ip: IpAddr },
    #[error("flow of {client} uses an upstream beyond the pool")]
    BeyondPool { client: SocketAddr },
    #[error("flow of {client} uses the wrong family")]
    WrongFamily { client: SocketAddr },
    #[error("{high} upstreams exceed the bound {bound}")]
    TooManyUpstreams { high: u32, bound: u32 },
    #[error("slots of {server} reach beyond the pool of {pool}")]
    SlotsBeyondPool { server: SocketAddr, pool: u32 },
    #[error("the pool bound to {ip} counts {counted} flows, {live} live")]
    PoolFlows { ip: IpAddr, counted: u32, live: u32 },
    #[error("{empty} client pools without flows, {counted} counted")]
    EmptyPools { empty: usize, counted: usize },
    #[error("a flow is bound to {ip}, which has no pool")]
    NoPool { ip: IpAddr },
    #[error("{total} client-bound sockets, {counted} counted, bound {bound}")]
    ClientSockets {
        total: u32,
        counted: u32,
        bound: u32,
    },
}

fn family_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

fn info(client: SocketAddr, f: &Flow, idle: Duration) -> FlowInfo {
    FlowInfo {
        client,
        target: f.target,
        server: f.server,
        upstream: f.upstream,
        created: f.created,
        last_seen: f.last_seen,
        expires: f.last_seen.saturating_add(idle),
        datagrams_up: f.datagrams_up,
        bytes_up: f.bytes_up,
        datagrams_down: f.datagrams_down,
        bytes_down: f.bytes_down,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Round robin over fixed servers, with a blacklist, recording every call.
    #[derive(Default)]
    pub(super) struct Fake {
        pub(super) servers: Vec<Option<SocketAddr>>,
        pub(super) blacklisted: Vec<bool>,
        pub(super) next: usize,
        pub(super) opened: Vec<(SocketAddr, Target)>,
        pub(super) closed: Vec<(SocketAddr, Target, u64, u64)>,
        pub(super) failed: Vec<Target>,
        pub(super) generation: u64,
    }

    impl Fake {
        /// `server idx` gets `addr` (what `server N address ...` does to the balancer).
        pub(super) fn readdress(&mut self, idx: usize, addr: Option<&str>) {
            self.servers[idx] = addr.map(sa);
            self.generation += 1;
        }

        pub(super) fn new(addrs: &[&str]) -> Fake {
            Fake {
                servers: addrs.iter().map(|a| Some(a.parse().unwrap())).collect(),
                blacklisted: vec![false; addrs.len()],
                ..Fake::default()
            }
        }
    }

    impl Selector for Fake {
        fn candidates(&mut self, _client: SocketAddr, _now: Duration) -> Vec<Candidate> {
            let n = self.servers.len();
            let mut out = Vec::new();
            for i in 0..n {
                let idx = (self.next + i) % n;
                if !self.blacklisted[idx] {
                    out.push(Candidate {
                        target: Target::Server(idx),
                        addr: self.servers[idx],
                    });
                }
            }
            if n > 0 {
                self.next = (self.next + 1) % n;
            }
            out
        }
        fn flow_opened(&mut self, client: SocketAddr, target: Target, _now: Duration) {
            self.opened.push((client, target));
        }
        fn flow_closed(
            &mut self,
            client: SocketAddr,
            target: Target,
            sent: u64,
            received: u64,
            _now: Duration,
        ) {
            self.closed.push((client, target, sent, received));
        }
        fn server_failed(&mut self, target: Target, _now: Duration) {
            if let Target::Server(i) = target {
                self.blacklisted[i] = true;
            }
            self.failed.push(target);
        }
        fn addr_generation(&mut self) -> u64 {
            self.generation
        }
        fn current_addr(&mut self, target: Target) -> Option<SocketAddr> {
            match target {
                Target::Server(i) => self.servers.get(i).copied().flatten(),
                _ => None,
            }
        }
    }

    pub(super) fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    pub(super) fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    pub(super) fn forward(v: ClientVerdict) -> (UpstreamId, SocketAddr, bool) {
        match v {
            ClientVerdict::Forward {
                upstream,
                server,
                new_flow,
            } => (upstream, server, new_flow),
            ClientVerdict::Drop(r) => panic!("dropped: {r:?}"),
        }
    }

    #[test]
    fn a_broken_invariant_is_named_with_the_flow_it_concerns() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let c = sa("192.0.2.1:5000");
        let (u, server, _) = forward(t.handle_client(secs(0), c, 10, &mut sel));
        t.check_invariants().unwrap();
        // Point the flow's route at another client: the flow has no route back.
        t.routes.insert((u, server), sa("192.0.2.9:1"));
        let e = t.check_invariants().unwrap_err();
        assert_eq!(e, InvariantError::NoRoute { client: c });
        assert_eq!(e.to_string(), "flow of 192.0.2.1:5000 has no route back");
        t.routes.clear();
        assert!(matches!(
            t.check_invariants(),
            Err(InvariantError::Sizes { routes: 0, .. })
        ));
    }

    #[test]
    fn later_datagrams_of_a_flow_follow_the_first_server() {
        let mut sel = Fake::new(&["10.0.0.1:53", "10.0.0.2:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let c = sa("192.0.2.1:5000");
        let (u1, s1, new1) = forward(t.handle_client(secs(0), c, 10, &mut sel));
        let (u2, s2, new2) = forward(t.handle_client(secs(1), c, 10, &mut sel));
        assert!(new1 && !new2);
        assert_eq!((u1, s1), (u2, s2));
        assert_eq!(sel.opened.len(), 1, "selection runs once per flow");
        t.check_invariants().unwrap();
    }

    #[test]
    fn a_flow_remembers_the_address_its_client_last_sent_to() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let c = sa("192.0.2.1:5000");
        let vip: IpAddr = "198.51.100.7".parse().unwrap();
        // Unknown clients record nothing; a new flow has no address until told.
        t.note_local(&c, vip);
        assert_eq!(t.local_of(&c), None);
        forward(t.handle_client(secs(0), c, 1, &mut sel));
        assert_eq!(t.local_of(&c), None);
        t.note_local(&c, vip);
        assert_eq!(t.local_of(&c), Some(vip));
        let other: IpAddr = "198.51.100.8".parse().unwrap();
        t.note_local(&c, other);
        assert_eq!(t.local_of(&c), Some(other));
        // Gone with the flow.
        t.expire(secs(61), &mut sel);
        assert_eq!(t.local_of(&c), None);
    }

    #[test]
    fn each_client_port_is_its_own_flow() {
        let mut sel = Fake::new(&["10.0.0.1:53", "10.0.0.2:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let (_, s1, _) = forward(t.handle_client(secs(0), sa("192.0.2.1:5000"), 1, &mut sel));
        let (_, s2, _) = forward(t.handle_client(secs(0), sa("192.0.2.1:5001"), 1, &mut sel));
        assert_ne!(s1, s2, "the fake round-robins between flows");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn reply_returns_to_the_client_of_its_flow() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let a = sa("192.0.2.1:5000");
        let b = sa("192.0.2.2:5000");
        let (ua, sa_, _) = forward(t.handle_client(secs(0), a, 1, &mut sel));
        let (ub, sb, _) = forward(t.handle_client(secs(0), b, 1, &mut sel));
        assert_eq!(sa_, sb, "one server");
        assert_ne!(ua, ub, "two flows to one server need two upstream sockets");
        assert_eq!(t.handle_server(secs(1), ua, sa_, 5), Some(a));
        assert_eq!(t.handle_server(secs(1), ub, sb, 5), Some(b));
        assert_eq!(t.upstreams_needed(Family::V4), 2);
        assert_eq!(t.upstreams_needed(Family::V6), 0);
    }

    #[test]
    fn upstream_sockets_are_shared_between_servers() {
        let mut sel = Fake::new(&["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"]);
        let mut t = FlowTable::new(100, secs(60), 100);
        for p in 0..30u16 {
            forward(t.handle_client(
                secs(0),
                SocketAddr::from(([192, 0, 2, 1], 1000 + p)),
                1,
                &mut sel,
            ));
        }
        assert_eq!(
            t.upstreams_needed(Family::V4),
            10,
            "30 flows over 3 servers need 10 sockets"
        );
        t.check_invariants().unwrap();
    }

    #[test]
    fn reply_from_unknown_server_or_socket_is_dropped() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let (u, s, _) = forward(t.handle_client(secs(0), sa("192.0.2.1:5000"), 1, &mut sel));
        assert_eq!(t.handle_server(secs(0), u, sa("10.0.0.9:53"), 1), None);
        let other = UpstreamId { index: 5, ..u };
        assert_eq!(t.handle_server(secs(0), other, s, 1), None);
        assert_eq!(t.stats().unmatched_replies, 2);
    }

    #[test]
    fn idle_flow_expires_at_idle_time() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let c = sa("192.0.2.1:5000");
        forward(t.handle_client(secs(0), c, 3, &mut sel));
        assert_eq!(t.poll_timeout(), Some(secs(60)));
        assert_eq!(t.expire(secs(59), &mut sel), 0);
        assert_eq!(t.expire(secs(60), &mut sel), 1);
        assert!(t.is_empty());
        assert_eq!(sel.closed, vec![(c, Target::Server(0), 3, 0)]);
        assert_eq!(t.poll_timeout(), None);
        t.check_invariants().unwrap();
    }

    #[test]
    fn traffic_in_either_direction_postpones_expiry() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let c = sa("192.0.2.1:5000");
        let (u, s, _) = forward(t.handle_client(secs(0), c, 1, &mut sel));
        forward(t.handle_client(secs(30), c, 1, &mut sel));
        assert_eq!(t.expire(secs(60), &mut sel), 0);
        assert_eq!(t.poll_timeout(), Some(secs(90)));
        assert_eq!(t.handle_server(secs(80), u, s, 1), Some(c));
        assert_eq!(t.expire(secs(90), &mut sel), 0);
        assert_eq!(t.expire(secs(140), &mut sel), 1);
    }

    #[test]
    fn full_table_drops_new_flows_and_keeps_existing_ones() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(2, secs(60), 10);
        let a = sa("192.0.2.1:1");
        forward(t.handle_client(secs(0), a, 1, &mut sel));
        forward(t.handle_client(secs(0), sa("192.0.2.1:2"), 1, &mut sel));
        assert_eq!(
            t.handle_client(secs(0), sa("192.0.2.1:3"), 1, &mut sel),
            ClientVerdict::Drop(DropReason::TableFull)
        );
        assert!(!forward(t.handle_client(secs(1), a, 1, &mut sel)).2);
        assert_eq!(t.stats().dropped_table_full, 1);
        assert_eq!(t.len(), 2);
        // After expiry there is room again.
        t.expire(secs(61), &mut sel);
        forward(t.handle_client(secs(62), sa("192.0.2.1:3"), 1, &mut sel));
    }

    #[test]
    fn full_table_evicts_the_least_recently_answered_flow() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(3, secs(60), 10);
        let (a, b, c) = (sa("192.0.2.1:1"), sa("192.0.2.1:2"), sa("192.0.2.1:3"));
        let (ua, s, _) = forward(t.handle_client(secs(0), a, 1, &mut sel));
        let (ub, _, _) = forward(t.handle_client(secs(0), b, 1, &mut sel));
        forward(t.handle_client(secs(0), c, 1, &mut sel));
        assert_eq!(t.handle_server(secs(1), ub, s, 1), Some(b));
        assert_eq!(t.handle_server(secs(2), ua, s, 1), Some(a));
        // b was answered first, so it goes first; then a; c never was.
        let (_, _, new) = forward(t.handle_client(secs(3), sa("192.0.2.1:4"), 1, &mut sel));
        assert!(new);
        assert!(t.flow(&b).is_none() && t.flow(&a).is_some());
        forward(t.handle_client(secs(3), sa("192.0.2.1:5"), 1, &mut sel));
        assert!(t.flow(&a).is_none() && t.flow(&c).is_some());
        assert_eq!(
            t.handle_client(secs(3), sa("192.0.2.1:6"), 1, &mut sel),
            ClientVerdict::Drop(DropReason::TableFull),
            "no answered flow is left to evict"
        );
        let st = t.stats();
        assert_eq!((st.flows_evicted, st.dropped_table_full), (2, 1));
        assert_eq!(st.flows_expired, 0, "evictions are not expiries");
        let closed: Vec<SocketAddr> = sel.closed.iter().map(|c| c.0).collect();
        assert_eq!(
            closed,
            vec![b, a],
            "evicted flows are closed in the balancer"
        );
        assert_eq!(t.len(), 3);
        t.check_invariants().unwrap();
    }

    #[test]
    fn unanswered_flows_are_never_evicted() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(2, secs(60), 10);
        let (a, b) = (sa("192.0.2.1:1"), sa("192.0.2.1:2"));
        forward(t.handle_client(secs(0), a, 1, &mut sel));
        forward(t.handle_client(secs(0), b, 1, &mut sel));
        for p in 100..200u16 {
            assert_eq!(
                t.handle_client(
                    secs(1),
                    SocketAddr::from(([198, 51, 100, 1], p)),
                    1,
                    &mut sel
                ),
                ClientVerdict::Drop(DropReason::TableFull)
            );
        }
        assert!(t.flow(&a).is_some() && t.flow(&b).is_some());
        assert_eq!(t.stats().dropped_table_full, 100);
        assert_eq!(t.stats().flows_evicted, 0);
    }

    #[test]
    fn client_datagram_after_reply_makes_a_flow_unevictable_again() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(1, secs(60), 10);
        let a = sa("192.0.2.1:1");
        let (u, s, _) = forward(t.handle_client(secs(0), a, 1, &mut sel));
        assert_eq!(t.handle_server(secs(1), u, s, 1), Some(a));
        assert!(!forward(t.handle_client(secs(2), a, 1, &mut sel)).2);
        assert_eq!(
            t.handle_client(secs(3), sa("192.0.2.1:2"), 1, &mut sel),
            ClientVerdict::Drop(DropReason::TableFull),
            "a waits for the reply to its second datagram"
        );
        assert_eq!(t.handle_server(secs(4), u, s, 1), Some(a));
        forward(t.handle_client(secs(5), sa("192.0.2.1:2"), 1, &mut sel));
        assert!(t.flow(&a).is_none());
        t.check_invariants().unwrap();
    }

    #[test]
    fn late_reply_to_an_evicted_flow_is_unmatched() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(1, secs(60), 10);
        let a = sa("192.0.2.1:1");
        let (ua, s, _) = forward(t.handle_client(secs(0), a, 1, &mut sel));
        assert_eq!(t.handle_server(secs(0), ua, s, 1), Some(a));
        let b = sa("192.0.2.1:2");
        let (ub, _, _) = forward(t.handle_client(secs(0), b, 1, &mut sel));
        assert_ne!(ua, ub, "the evicted flow's slot rests before reuse");
        assert_eq!(t.handle_server(secs(0), ua, s, 1), None);
        assert_eq!(t.stats().unmatched_replies, 1);
        assert_eq!(t.handle_server(secs(0), ub, s, 1), Some(b));
    }

    #[test]
    fn fresh_port_load_is_bounded_by_the_table_and_the_pool() {
        let mut sel = Fake::new(&["10.0.0.1:53", "10.0.0.2:53"]);
        let mut t = FlowTable::new(50, secs(60), 50);
        let mut now = Duration::ZERO;
        for q in 0..5_000u32 {
            now += Duration::from_millis(1);
            let port = u16::try_from(q % 60_000).unwrap() + 1024;
            let c = SocketAddr::from(([192, 0, 2, 1], port));
            let (u, s, new) = forward(t.handle_client(now, c, 40, &mut sel));
            assert!(new);
            assert_eq!(t.handle_server(now, u, s, 80), Some(c));
            assert!(t.len() <= 50);
        }
        let st = t.stats();
        assert_eq!(st.dropped_table_full, 0);
        assert_eq!(st.flows_evicted, 5_000 - 50);
        assert!(t.upstreams_needed(Family::V4) <= 50);
        t.check_invariants().unwrap();
    }

    #[test]
    fn lowered_max_flows_evicts_answered_flows_down_to_the_limit() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(4, secs(60), 10);
        for p in 1..=4u16 {
            let c = SocketAddr::from(([192, 0, 2, 1], p));
            let (u, s, _) = forward(t.handle_client(secs(0), c, 1, &mut sel));
            t.handle_server(secs(0), u, s, 1);
        }
        t.set_limits(2, secs(60));
        forward(t.handle_client(secs(1), sa("192.0.2.1:9"), 1, &mut sel));
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().flows_evicted, 3);
        t.check_invariants().unwrap();
    }

    #[test]
    fn no_candidate_drops_and_counts() {
        let mut sel = Fake::new(&[]);
        let mut t = FlowTable::new(2, secs(60), 10);
        assert_eq!(
            t.handle_client(secs(0), sa("192.0.2.1:1"), 1, &mut sel),
            ClientVerdict::Drop(DropReason::NoServer)
        );
        assert_eq!(t.stats().dropped_no_server, 1);
        assert!(t.is_empty());
    }

    #[test]
    fn non_inet_candidate_is_skipped_for_the_next() {
        let mut sel = Fake::new(&["10.0.0.1:53", "10.0.0.2:53"]);
        sel.servers[0] = None;
        let mut t = FlowTable::new(2, secs(60), 10);
        let (_, s, _) = forward(t.handle_client(secs(0), sa("192.0.2.1:1"), 1, &mut sel));
        assert_eq!(s, sa("10.0.0.2:53"));
        assert_eq!(t.stats().skipped_unsupported, 1);
    }

    #[test]
    fn server_without_free_upstream_slot_fails_over_to_next_candidate() {
        let mut sel = Fake::new(&["10.0.0.1:53", "10.0.0.2:53"]);
        let mut t = FlowTable::new(10, secs(60), 1);
        let (_, s1, _) = forward(t.handle_client(secs(0), sa("192.0.2.1:1"), 1, &mut sel));
        let (_, s2, _) = forward(t.handle_client(secs(0), sa("192.0.2.1:2"), 1, &mut sel));
        assert_ne!(s1, s2);
        // Both servers now hold the only socket: a third flow has nowhere to go.
        assert_eq!(
            t.handle_client(secs(0), sa("192.0.2.1:3"), 1, &mut sel),
            ClientVerdict::Drop(DropReason::NoServer)
        );
        assert_eq!(t.stats().skipped_no_slot, 2);
        assert_eq!(t.upstreams_needed(Family::V4), 1);
    }

    #[test]
    fn unreachable_server_is_blacklisted_and_its_flow_reselects() {
        let mut sel = Fake::new(&["10.0.0.1:53", "10.0.0.2:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let c = sa("192.0.2.1:5000");
        let (u, s, _) = forward(t.handle_client(secs(0), c, 1, &mut sel));
        assert_eq!(t.server_unreachable(secs(1), u, s, &mut sel), Some(c));
        assert_eq!(sel.failed, vec![Target::Server(0)]);
        assert_eq!(
            sel.closed.len(),
            1,
            "a failed flow is closed in the balancer"
        );
        let (_, s2, new) = forward(t.handle_client(secs(2), c, 1, &mut sel));
        assert!(new);
        assert_ne!(s, s2);
        assert_eq!(t.stats().flows_failed, 1);
        t.check_invariants().unwrap();
    }

    #[test]
    fn unreachable_without_flow_is_counted_only() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let u = UpstreamId {
            family: Family::V4,
            index: 0,
            bound: None,
        };
        assert_eq!(
            t.server_unreachable(secs(1), u, sa("10.0.0.1:53"), &mut sel),
            None
        );
        assert!(sel.failed.is_empty());
        assert_eq!(t.stats().unreachable, 1);
    }

    #[test]
    fn ipv6_servers_use_the_ipv6_pool() {
        let mut sel = Fake::new(&["[2001:db8::1]:53", "10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let c6 = sa("[2001:db8::99]:4000");
        let (u, s, _) = forward(t.handle_client(secs(0), c6, 1, &mut sel));
        assert_eq!(u.family, Family::V6);
        assert_eq!(t.handle_server(secs(0), u, s, 1), Some(c6));
        let (u4, _, _) = forward(t.handle_client(secs(0), sa("[2001:db8::99]:4001"), 1, &mut sel));
        assert_eq!(u4.family, Family::V4, "a v6 client may reach a v4 server");
        assert_eq!(t.upstreams_needed(Family::V6), 1);
        assert_eq!(t.upstreams_needed(Family::V4), 1);
    }

    #[test]
    fn freed_slots_are_reused_oldest_first() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(10), 10);
        let a = sa("192.0.2.1:1");
        let b = sa("192.0.2.1:2");
        let (ua, _, _) = forward(t.handle_client(secs(0), a, 1, &mut sel));
        let (ub, _, _) = forward(t.handle_client(secs(1), b, 1, &mut sel));
        t.expire(secs(10), &mut sel); // a expires, slot 0 free
        t.expire(secs(11), &mut sel); // b expires, slot 1 free
        let (u1, _, _) = forward(t.handle_client(secs(12), sa("192.0.2.1:3"), 1, &mut sel));
        let (u2, _, _) = forward(t.handle_client(secs(12), sa("192.0.2.1:4"), 1, &mut sel));
        assert_eq!((u1, u2), (ua, ub));
        assert_eq!(t.upstreams_needed(Family::V4), 2, "the pool does not grow");
    }

    #[test]
    fn shorter_idle_time_applies_to_existing_flows() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        forward(t.handle_client(secs(0), sa("192.0.2.1:1"), 1, &mut sel));
        t.set_limits(10, secs(5));
        assert_eq!(t.poll_timeout(), Some(secs(5)));
        assert_eq!(t.expire(secs(5), &mut sel), 1);
        t.check_invariants().unwrap();
    }

    #[test]
    fn lowering_max_flows_keeps_existing_flows() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let a = sa("192.0.2.1:1");
        forward(t.handle_client(secs(0), a, 1, &mut sel));
        forward(t.handle_client(secs(0), sa("192.0.2.1:2"), 1, &mut sel));
        t.set_limits(1, secs(60));
        assert!(!forward(t.handle_client(secs(1), a, 1, &mut sel)).2);
        assert_eq!(
            t.handle_client(secs(1), sa("192.0.2.1:3"), 1, &mut sel),
            ClientVerdict::Drop(DropReason::TableFull)
        );
    }

    #[test]
    fn zero_length_and_64k_datagrams_are_counted() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let c = sa("192.0.2.1:1");
        forward(t.handle_client(secs(0), c, 0, &mut sel));
        forward(t.handle_client(secs(0), c, 65_535, &mut sel));
        let f = t.flow(&c).unwrap();
        assert_eq!((f.datagrams_up, f.bytes_up), (2, 65_535));
    }

    #[test]
    fn flows_follow_their_servers_address() {
        let mut sel = Fake::new(&["10.0.0.1:53", "10.0.0.2:53"]);
        let mut t = FlowTable::new(10, secs(60), 10);
        let clients: Vec<SocketAddr> = (1..=4u16)
            .map(|p| SocketAddr::from(([192, 0, 2, 1], p)))
            .collect();
        for c in &clients {
            forward(t.handle_client(secs(0), *c, 1, &mut sel));
        }
        // Nothing changed: nothing moves (and the selector is not asked per flow).
        assert_eq!(t.follow_servers(secs(1), &mut sel), 0);
        assert_eq!(t.len(), 4);
        // Server 0 moves: its two flows end, with their byte counts; server 1's stay.
        sel.readdress(0, Some("10.0.0.9:53"));
        assert_eq!(t.follow_servers(secs(1), &mut sel), 2);
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().flows_readdressed, 2);
        assert!(sel.closed.iter().all(|x| x.1 == Target::Server(0)));
        assert_eq!(
            t.follow_servers(secs(1), &mut sel),
            0,
            "checked once per change"
        );
        t.check_invariants().unwrap();
        // The client's next datagram opens a flow to the new address.
        let moved = clients
            .iter()
            .find(|c| t.flow(c).is_none())
            .copied()
            .unwrap();
        sel.next = 0;
        let ClientVerdict::Forward {
            server, new_flow, ..
        } = t.handle_client(secs(2), moved, 1, &mut sel)
        else {
            panic!("dropped")
        };
        assert_eq!((server, new_flow), (sa("10.0.0.9:53"), true));
        // A server that loses its address (unresolved) loses its flows too.
        sel.readdress(1, None);
        assert_eq!(t.follow_servers(secs(3), &mut sel), 2);
        assert_eq!(t.len(), 1);
        t.check_invariants().unwrap();
    }

    #[test]
    fn upstream_pools_shrink_to_what_live_flows_use() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(100, secs(1), 100);
        // A burst: 40 one-shot flows to one server need 40 upstream sockets.
        for p in 1..=40u16 {
            forward(t.handle_client(secs(0), SocketAddr::from(([192, 0, 2, 1], p)), 1, &mut sel));
        }
        assert_eq!(t.upstreams_needed(Family::V4), 40);
        assert_eq!(t.shrink_upstreams(), None, "all in use");
        // One flow stays alive (on some index), the others expire.
        let keep = SocketAddr::from(([192, 0, 2, 1], 7));
        forward(t.handle_client(secs(1), keep, 1, &mut sel));
        t.expire(secs(1), &mut sel);
        assert_eq!(t.len(), 1);
        let kept = t.flow(&keep).unwrap().upstream.index;
        assert_eq!(kept, 6);
        assert_eq!(t.shrink_upstreams(), Some([kept + 1, 0]));
        assert_eq!(t.upstreams_needed(Family::V4), kept + 1);
        t.check_invariants().unwrap();
        assert_eq!(t.shrink_upstreams(), None, "nothing more to give back");
        // New flows reuse the slots left and grow the pool again from there.
        for p in 100..110u16 {
            forward(t.handle_client(secs(5), SocketAddr::from(([192, 0, 2, 1], p)), 1, &mut sel));
        }
        t.check_invariants().unwrap();
        let mut used: Vec<u32> = t.flows().map(|f| f.upstream.index).collect();
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), 11, "no two flows to one server share a socket");
        assert!(t.upstreams_needed(Family::V4) <= 11);
        // Everything expires: the pool keeps one socket.
        t.expire(secs(60), &mut sel);
        assert_eq!(t.shrink_upstreams(), Some([1, 0]));
        assert_eq!(t.shrink_upstreams(), None);
        t.check_invariants().unwrap();
    }

    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A table with `transparent` on.
    pub(super) fn transparent_table(max_flows: usize) -> FlowTable {
        let mut t = FlowTable::new(max_flows, secs(60), 100);
        t.set_sources(true, None);
        t
    }

    #[test]
    fn transparent_flows_go_out_on_sockets_bound_to_their_clients_address() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = transparent_table(10);
        let (a, b) = (sa("192.0.2.7:1000"), sa("192.0.2.8:1000"));
        let (ua, s, _) = forward(t.handle_client(secs(1), a, 1, &mut sel));
        let (ub, _, _) = forward(t.handle_client(secs(1), b, 1, &mut sel));
        assert_eq!((ua.bound, ua.index), (Some(ip("192.0.2.7")), 0));
        assert_eq!((ub.bound, ub.index), (Some(ip("192.0.2.8")), 0));
        // One pool per client address; the shared pool is not used at all.
        assert_eq!(t.client_pool(&ip("192.0.2.7")), 1);
        assert_eq!((t.client_sockets(), t.upstreams_needed(Family::V4)), (2, 0));
        // The answers are told apart by the socket they reach.
        assert_eq!(t.handle_server(secs(2), ua, s, 1), Some(a));
        assert_eq!(t.handle_server(secs(2), ub, s, 1), Some(b));
        t.check_invariants().unwrap();
    }

    #[test]
    fn a_clients_flows_share_its_sockets_one_flow_per_server_each() {
        let mut sel = Fake::new(&["10.0.0.1:53", "10.0.0.2:53"]);
        let mut t = transparent_table(10);
        // Round robin: ports 1 and 2 go to two servers on the client's one socket; port 3
        // goes to the first server again and needs a second socket of that client.
        let ups: Vec<(UpstreamId, SocketAddr)> = (1..=3u16)
            .map(|p| {
                let (u, s, _) = forward(t.handle_client(
                    secs(1),
                    SocketAddr::from(([192, 0, 2, 7], p)),
                    1,
                    &mut sel,
                ));
                (u, s)
            })
            .collect();
        assert_eq!(ups[0].0, ups[1].0, "two servers, one socket");
        assert_ne!(ups[0].1, ups[1].1);
        assert_eq!((ups[2].1, ups[2].0.index), (ups[0].1, 1));
        assert_eq!(t.client_pool(&ip("192.0.2.7")), 2);
        for (p, (u, s)) in (1..=3u16).zip(&ups) {
            assert_eq!(
                t.handle_server(secs(2), *u, *s, 1),
                Some(SocketAddr::from(([192, 0, 2, 7], p)))
            );
        }
        t.check_invariants().unwrap();
    }

    #[test]
    fn the_client_socket_bound_refuses_counted_then_makes_room_from_finished_clients() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = transparent_table(10);
        t.set_max_client_sockets(2);
        let (a, b, c) = (sa("192.0.2.1:1"), sa("192.0.2.2:1"), sa("192.0.2.3:1"));
        forward(t.handle_client(secs(1), a, 1, &mut sel));
        forward(t.handle_client(secs(1), b, 1, &mut sel));
        // A second concurrent flow of `a` to the same server would need a third socket.
        assert_eq!(
            t.handle_client(secs(1), sa("192.0.2.1:2"), 1, &mut sel),
            ClientVerdict::Drop(DropReason::NoServer)
        );
        assert_eq!(
            t.handle_client(secs(1), c, 1, &mut sel),
            ClientVerdict::Drop(DropReason::NoServer)
        );
        assert_eq!(t.stats().skipped_no_client_socket, 2);
        assert_eq!(t.client_sockets(), 2);
        t.check_invariants().unwrap();
        // `a`'s flow ends: its pool is dropped for `c` at once (the shell closes its socket).
        assert!(t.remove_flow(secs(2), a, &mut sel));
        let (uc, _, _) = forward(t.handle_client(secs(2), c, 1, &mut sel));
        assert_eq!(uc.bound, Some(ip("192.0.2.3")));
        assert_eq!(t.client_pool(&ip("192.0.2.1")), 0);
        assert_eq!((t.client_sockets(), t.stats().client_pools_dropped), (2, 1));
        t.check_invariants().unwrap();
    }

    #[test]
    fn client_pools_shrink_and_vanish_with_their_flows() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = FlowTable::new(100, secs(1), 100);
        t.set_sources(true, None);
        for p in 1..=6u16 {
            forward(t.handle_client(secs(0), SocketAddr::from(([192, 0, 2, 1], p)), 1, &mut sel));
        }
        forward(t.handle_client(secs(0), sa("192.0.2.2:1"), 1, &mut sel));
        assert_eq!(t.client_pool(&ip("192.0.2.1")), 6);
        assert!(!t.shrink_client_pools(), "all in use");
        // Only the first port of 192.0.2.1 stays; 192.0.2.2 goes quiet.
        forward(t.handle_client(secs(1), sa("192.0.2.1:1"), 1, &mut sel));
        t.expire(secs(1), &mut sel);
        assert!(t.shrink_client_pools());
        assert_eq!(t.client_pool(&ip("192.0.2.1")), 1);
        assert_eq!(t.client_pool(&ip("192.0.2.2")), 0);
        assert_eq!(t.client_sockets(), 1);
        t.check_invariants().unwrap();
        assert!(!t.shrink_client_pools());
        t.expire(secs(60), &mut sel);
        assert!(t.shrink_client_pools());
        assert_eq!(t.client_sockets(), 0);
        t.check_invariants().unwrap();
    }

    #[test]
    fn existing_flows_keep_their_source_when_transparent_is_toggled() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = transparent_table(10);
        let (a, b) = (sa("192.0.2.1:1"), sa("192.0.2.1:2"));
        let (ua, _, _) = forward(t.handle_client(secs(1), a, 1, &mut sel));
        t.set_sources(false, None);
        assert_eq!(forward(t.handle_client(secs(2), a, 1, &mut sel)).0, ua);
        let (ub, _, _) = forward(t.handle_client(secs(2), b, 1, &mut sel));
        assert_eq!((ua.bound, ub.bound), (Some(ip("192.0.2.1")), None));
        // `source IP` wins over transparent, as for TCP: the shared pool (bound to it).
        t.set_sources(true, Some(ip("10.0.0.9")));
        let (uc, _, _) = forward(t.handle_client(secs(3), sa("192.0.2.1:3"), 1, &mut sel));
        assert_eq!(uc.bound, None);
        t.check_invariants().unwrap();
    }

    #[test]
    fn a_server_of_the_other_family_is_skipped_never_reached_from_pen() {
        let mut sel = Fake::new(&["[fd00::1]:53", "10.0.0.1:53"]);
        let mut t = transparent_table(10);
        let (u, s, _) = forward(t.handle_client(secs(1), sa("192.0.2.1:1"), 1, &mut sel));
        assert_eq!((s, u.bound), (sa("10.0.0.1:53"), Some(ip("192.0.2.1"))));
        assert_eq!(t.stats().skipped_family_mismatch, 1);
        // Only servers of the other family: dropped, naming the server.
        let mut only_v6 = Fake::new(&["[fd00::1]:53"]);
        assert_eq!(
            t.handle_client(secs(1), sa("192.0.2.2:1"), 1, &mut only_v6),
            ClientVerdict::Drop(DropReason::FamilyMismatch {
                server: sa("[fd00::1]:53")
            })
        );
        // A v4-mapped client of a dual-stack listener is an IPv4 client.
        let (u, _, _) = forward(t.handle_client(secs(1), sa("[::ffff:192.0.2.3]:1"), 1, &mut sel));
        assert_eq!((u.bound, u.family), (Some(ip("192.0.2.3")), Family::V4));
        t.check_invariants().unwrap();
    }
}
