//! The tokio shell around [`FlowTable`]: moves datagrams between the listening socket, the
//! upstream socket pool and the table, and drives its timer. No decisions are made here.
//!
//! Tasks: the listener loop (client → server), one reader per upstream socket (server →
//! client, and ICMP errors through `IP_RECVERR`), and the expiry timer. Established IPv4 flows
//! are handed to the kernel fast path ([`super::offload`]) when it is available; their
//! datagrams then no longer reach these tasks. Every task is aborted
//! when [`serve_with`] returns or is dropped.
//!
//! Locks: the flow table's mutex is taken first, the context's (shared state) second, and only
//! on the slow paths (new flow, expiry, unreachable server). Never take them the other way round.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use super::flow::{
    Candidate, ClientVerdict, DropReason, Family, FlowInfo, FlowTable, Selector, UdpStats,
    UpstreamId,
};
use super::mmsg::{BATCH, RecvBatch, enable_pktinfo, recv_err, send_batch};
use crate::acl::canonical;
use crate::proxy::read_draining;
use crate::proxy::transparent::{self, TransparentError};
use crate::select::Target;

/// Largest UDP payload (IPv6 without jumbograms: 65,535 − 8); the buffers hold one of these.
pub const MAX_DATAGRAM: usize = 65_536;

/// The expiry task wakes at least this often (to pick up new limits): the "tick".
pub const TICK: Duration = Duration::from_secs(1);

/// The expiry task publishes the table's [`UdpStatus`] at most this often.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Offloaded flows whose kernel counters are read per publication (one map lookup each); with
/// more, they take turns.
const KERNEL_READS_PER_PUBLISH: usize = 4096;

/// Limits the shell reads from the context at start and at every tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `conn_max`: flows in the table.
    pub max_flows: usize,
    /// Flow idle time (`udp_flow_idle_secs`).
    pub idle: Duration,
    /// `source IP`: bind upstream sockets to it (when of the server's family).
    pub source: Option<IpAddr>,
}

/// What the shell needs from the daemon: server selection, the limits, and the clock.
pub trait UdpContext: Send + Sync + 'static {
    /// Run `f` with the selector (typically: lock the shared state, wrap the balancer).
    fn with_selector<R>(&self, f: impl FnOnce(&mut dyn Selector) -> R) -> R;
    fn limits(&self) -> Limits;
    /// Monotonic time, from the same origin as every other user of the selector.
    fn now(&self) -> Duration;
    /// `transparent`: new flows send from the client's own address (read at start and at
    /// every tick, so a run-time change applies to flows created after the next tick).
    fn transparent(&self) -> bool {
        false
    }
    /// A transparent flow could not send from its client's address: log it (once) and count
    /// it. The flow has been removed.
    fn transparent_failed(&self, client: SocketAddr, err: &TransparentError) {
        tracing::error!("{client}: {err}");
    }
    /// The table as of now, for the reports (`connection`, status, Prometheus). Called by the
    /// expiry task (at every tick, and soon after new flows) without the table lock held.
    fn publish(&self, _status: UdpStatus) {}
}

/// The flow table as the reports show it: taken at every tick and [`PUBLISH_EVERY`] after a
/// batch that created flows (see [`UdpContext::publish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpStatus {
    /// When it was taken (the context's clock).
    pub at: Duration,
    /// The flow idle time in force.
    pub idle: Duration,
    /// Size of the table (`conn_max`).
    pub max_flows: usize,
    pub stats: UdpStats,
    /// The live flows, oldest first.
    pub flows: Vec<FlowInfo>,
}

impl UdpStatus {
    /// The status of `table` at `at`.
    pub fn of(table: &FlowTable, at: Duration) -> UdpStatus {
        let mut flows: Vec<FlowInfo> = table.flows().collect();
        flows.sort_by_key(|f| (f.created, f.client));
        UdpStatus {
            at,
            idle: table.idle(),
            max_flows: table.max_flows(),
            stats: table.stats(),
            flows,
        }
    }
}

/// A [`Selector`] that reaches the context's selector call by call, so that the shared state
/// is locked only when the table actually needs a decision.
struct Lazy<'a, C>(&'a C);

impl<C: UdpContext> Selector for Lazy<'_, C> {
    fn candidates(&mut self, client: SocketAddr, now: Duration) -> Vec<Candidate> {
        self.0.with_selector(|s| s.candidates(client, now))
    }
    fn flow_opened(&mut self, client: SocketAddr, target: Target, now: Duration) {
        self.0.with_selector(|s| s.flow_opened(client, target, now))
    }
    fn flow_closed(
        &mut self,
        client: SocketAddr,
        target: Target,
        sent: u64,
        received: u64,
        now: Duration,
    ) {
        self.0
            .with_selector(|s| s.flow_closed(client, target, sent, received, now))
    }
    fn server_failed(&mut self, target: Target, now: Duration) {
        self.0.with_selector(|s| s.server_failed(target, now))
    }
    fn addr_generation(&mut self) -> u64 {
        self.0.with_selector(|s| s.addr_generation())
    }
    fn current_addr(&mut self, target: Target) -> Option<SocketAddr> {
        self.0.with_selector(|s| s.current_addr(target))
    }
}

/// A handle on a running UDP balancer's flow table, for status output (`connection`, stats).
#[derive(Clone)]
pub struct UdpHandle {
    table: Arc<Mutex<FlowTable>>,
}

impl std::fmt::Debug for UdpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UdpHandle")
    }
}

impl UdpHandle {
    /// Run `f` on the table (holds the table lock: keep it short, take no other lock inside).
    pub fn with_table<R>(&self, f: impl FnOnce(&FlowTable) -> R) -> R {
        f(&lock(&self.table))
    }

    /// Whether both handles reach the same table.
    pub fn same(&self, other: &UdpHandle) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }

    /// Run `f` on the table, which it may change (holds the table lock; `f` may take the
    /// shared state's lock inside: table first, as everywhere).
    pub fn with_table_mut<R>(&self, f: impl FnOnce(&mut FlowTable) -> R) -> R {
        f(&mut lock(&self.table))
    }
}

struct Inner<C> {
    ctx: C,
    listener: UdpSocket,
    table: Arc<Mutex<FlowTable>>,
    pools: Mutex<Pools>,
    source: Mutex<Option<IpAddr>>,
    /// Signalled when a batch created flows: the expiry task publishes the status soon (at
    /// most every [`PUBLISH_EVERY`]) instead of at the next tick.
    created: tokio::sync::Notify,
    /// The listener is bound to a wildcard address: each flow remembers the address its
    /// client sent to (`IP_PKTINFO`) and replies leave from it, not from whatever address
    /// the route to the client prefers.
    wildcard: bool,
    /// The listener's address (the kernel fast path's flows are addressed to it).
    listen: SocketAddr,
}

#[derive(Default)]
struct Pools {
    v4: Vec<Arc<UdpSocket>>,
    v6: Vec<Arc<UdpSocket>>,
    /// Transparent flows: the sockets bound to each client's address.
    clients: HashMap<IpAddr, Vec<Arc<UdpSocket>>>,
    /// The reader task of every upstream socket.
    tasks: Vec<(UpstreamId, AbortHandle)>,
}

impl Pools {
    /// The pool socket `id` belongs to.
    fn list(&mut self, id: UpstreamId) -> &mut Vec<Arc<UdpSocket>> {
        match (id.bound, id.family) {
            (Some(ip), _) => self.clients.entry(ip).or_default(),
            (None, Family::V4) => &mut self.v4,
            (None, Family::V6) => &mut self.v6,
        }
    }

    /// Socket `id`, if it exists.
    fn get(&self, id: UpstreamId) -> Option<&Arc<UdpSocket>> {
        let i = usize::try_from(id.index).ok()?;
        match (id.bound, id.family) {
            (Some(ip), _) => self.clients.get(&ip)?.get(i),
            (None, Family::V4) => self.v4.get(i),
            (None, Family::V6) => self.v6.get(i),
        }
    }

    /// Closes the shared pools' sockets beyond `sizes` (`[V4, V6]`) and stops their readers.
    fn truncate(&mut self, sizes: [u32; 2]) {
        let [v4, v6] = sizes.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        self.v4.truncate(v4);
        self.v6.truncate(v6);
        self.tasks.retain(|(id, task)| {
            let keep = match (id.bound, id.family) {
                (Some(_), _) => true,
                (None, Family::V4) => id.index < sizes[0],
                (None, Family::V6) => id.index < sizes[1],
            };
            if !keep {
                task.abort();
            }
            keep
        });
    }

    /// Closes the sockets bound to clients' addresses that the table no longer counts
    /// (`size(ip)`: how many of `ip`'s it keeps) and stops their readers. Returns how many.
    fn sync_clients(&mut self, size: impl Fn(&IpAddr) -> u32) -> usize {
        let mut closed = 0;
        self.clients.retain(|ip, socks| {
            let keep = usize::try_from(size(ip)).unwrap_or(usize::MAX);
            closed += socks.len().saturating_sub(keep);
            socks.truncate(keep);
            !socks.is_empty()
        });
        if closed > 0 {
            self.tasks.retain(|(id, task)| {
                let keep = match id.bound {
                    Some(ip) => size(&ip) > id.index,
                    None => true,
                };
                if !keep {
                    task.abort();
                }
                keep
            });
        }
        closed
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Create the table for `limits` (exposed so the daemon can keep a [`UdpHandle`] before
/// calling [`serve_table`]).
pub fn new_table(limits: &Limits) -> UdpHandle {
    let max_up = FlowTable::default_max_upstreams(limits.max_flows);
    UdpHandle {
        table: Arc::new(Mutex::new(FlowTable::new(
            limits.max_flows,
            limits.idle,
            max_up,
        ))),
    }
}

/// Run the UDP balancer on `listener` until an unrecoverable error. See the module docs.
pub async fn serve_with<C: UdpContext>(listener: UdpSocket, ctx: C) -> io::Result<()> {
    let handle = new_table(&ctx.limits());
    serve_table(listener, ctx, handle).await
}

/// [`serve_with`] on a table created by [`new_table`] (whose handle the caller keeps).
///
/// The data path runs on a dedicated thread with a single-threaded runtime (like C Pen's one
/// event loop): no cross-core wake-ups or lock contention between the listener and the
/// upstream readers. Dropping the returned future stops that thread and closes its sockets.
pub async fn serve_table<C: UdpContext>(
    listener: UdpSocket,
    ctx: C,
    handle: UdpHandle,
) -> io::Result<()> {
    let std_listener = listener.into_std()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<io::Result<()>>();
    std::thread::Builder::new()
        .name("pen-udp".into())
        .spawn(move || {
            let mut tx = tx;
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(async {
                        let listener = UdpSocket::from_std(std_listener)?;
                        tokio::select! {
                            r = run_table(listener, ctx, handle) => r,
                            // The caller dropped `serve_table`: stop.
                            () = tx.closed() => Ok(()),
                        }
                    })
                });
            let _ = tx.send(result);
        })?;
    rx.await.unwrap_or_else(|_| {
        Err(io::Error::other(
            "the UDP data path thread ended without a result",
        ))
    })
}

async fn run_table<C: UdpContext>(
    listener: UdpSocket,
    ctx: C,
    handle: UdpHandle,
) -> io::Result<()> {
    let limits = ctx.limits();
    let transparent = ctx.transparent();
    let wildcard = match listener.local_addr() {
        Ok(a) if a.ip().is_unspecified() => {
            match enable_pktinfo(listener.as_raw_fd(), a.is_ipv6()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "udp: cannot learn destination addresses; replies leave from the routing's choice");
                    false
                }
            }
        }
        _ => false,
    };
    let listen = listener.local_addr()?;
    let table = handle.table;
    lock(&table).set_sources(transparent, limits.source);
    if !transparent {
        attach_kernel_path(&table, listen);
    }
    let inner = Arc::new(Inner {
        ctx,
        listener,
        table,
        pools: Mutex::new(Pools::default()),
        source: Mutex::new(limits.source),
        created: tokio::sync::Notify::new(),
        wildcard,
        listen,
    });
    let timer = tokio::spawn(expiry_loop(Arc::clone(&inner)));
    let _guard = AbortGuard {
        timer: timer.abort_handle(),
        inner: Arc::clone(&inner),
    };
    client_loop(&inner).await
}

/// Gives the table the kernel fast path for an IPv4 listener, unless `PEN_UDP_OFFLOAD=0` or
/// the kernel refuses (logged; every datagram then goes through pen).
fn attach_kernel_path(table: &Arc<Mutex<FlowTable>>, listen: SocketAddr) {
    if !listen.is_ipv4() || std::env::var("PEN_UDP_OFFLOAD").is_ok_and(|v| v == "0") {
        return;
    }
    #[cfg(target_os = "linux")]
    match super::offload::KernelPath::new() {
        Ok(k) => {
            tracing::info!("udp: kernel fast path ready for established flows");
            lock(table).set_offload(Box::new(k));
        }
        Err(e) => {
            tracing::info!(error = %e, "udp: no kernel fast path; pen forwards every datagram")
        }
    }
}

struct AbortGuard<C> {
    timer: AbortHandle,
    inner: Arc<Inner<C>>,
}

impl<C> Drop for AbortGuard<C> {
    fn drop(&mut self) {
        self.timer.abort();
        let pools = lock(&self.inner.pools);
        for (_, t) in &pools.tasks {
            t.abort();
        }
    }
}

async fn expiry_loop<C: UdpContext>(inner: Arc<Inner<C>>) {
    let mut last_publish: Option<Duration> = None;
    // Flows were created since the last publication.
    let mut dirty = false;
    // Transparent flows refused for the client socket bound, as of the last tick.
    let mut refused_seen = 0u64;
    loop {
        let now = inner.ctx.now();
        let limits = inner.ctx.limits();
        *lock(&inner.source) = limits.source;
        let transparent = inner.ctx.transparent();
        let next = {
            let mut table = lock(&inner.table);
            table.set_sources(transparent, limits.source);
            if table.max_flows() != limits.max_flows || table.idle() != limits.idle {
                table.set_limits(limits.max_flows, limits.idle);
            }
            let mut sel = Lazy(&inner.ctx);
            let moved = table.follow_servers(now, &mut sel);
            if moved > 0 {
                tracing::info!(
                    flows = moved,
                    "udp flows closed: their server's address changed"
                );
            }
            let n = table.expire(now, &mut sel);
            let refused = table.stats().skipped_no_client_socket;
            if refused > refused_seen {
                tracing::warn!(
                    refused = refused - refused_seen,
                    open = table.client_sockets(),
                    bound = table.max_client_sockets(),
                    "udp: new transparent flows refused: the sockets bound to clients' addresses \
                     are at their bound (conn_max); raise conn_max for more"
                );
                refused_seen = refused;
            }
            if n > 0 {
                tracing::debug!(expired = n, flows = table.len(), "udp flows expired");
            }
            // Copying the flow list costs O(flows): at most every PUBLISH_EVERY. Kernel flows
            // are read first (a bounded number per publication), so their counters are fresh.
            let status = match last_publish {
                Some(at) if now.saturating_sub(at) < PUBLISH_EVERY => None,
                _ => {
                    table.refresh_offloaded(now, KERNEL_READS_PER_PUBLISH);
                    Some(UdpStatus::of(&table, now))
                }
            };
            (table.poll_timeout(), status)
        };
        let (next, status) = next;
        // Upstream sockets no flow uses any more are closed. Lock order pools, then table (no
        // path holds the table while it takes the pools), so no flow can be handed a socket
        // between the table's decision and the pool's truncation.
        {
            let mut pools = lock(&inner.pools);
            let mut table = lock(&inner.table);
            if let Some(sizes) = table.shrink_upstreams() {
                pools.truncate(sizes);
                tracing::debug!(v4 = sizes[0], v6 = sizes[1], "udp upstream pools shrank");
            }
            table.shrink_client_pools();
            // Also closes what a flow removed meanwhile by another thread (`close N`) left.
            let closed = pools.sync_clients(|ip| table.client_pool(ip));
            if closed > 0 {
                tracing::debug!(
                    closed,
                    open = table.client_sockets(),
                    "udp sockets bound to clients' addresses closed"
                );
            }
        }
        if let Some(status) = status {
            last_publish = Some(now);
            dirty = false;
            inner.ctx.publish(status);
        }
        let mut wait = next.map_or(TICK, |at| at.saturating_sub(now)).min(TICK);
        if dirty {
            wait = wait.min(PUBLISH_EVERY);
        }
        let deadline = tokio::time::Instant::now() + wait.max(Duration::from_millis(1));
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = inner.created.notified() => {
                // New flows: publish them soon, but no more often than PUBLISH_EVERY.
                dirty = true;
                let soon = tokio::time::Instant::now() + PUBLISH_EVERY;
                tokio::time::sleep_until(deadline.min(soon)).await;
            }
        }
    }
}

async fn client_loop<C: UdpContext>(inner: &Arc<Inner<C>>) -> io::Result<()> {
    let mut batch = if inner.wildcard {
        RecvBatch::with_destinations()
    } else {
        RecvBatch::new()
    };
    let fd = inner.listener.as_raw_fd();
    // (upstream, server, client, datagram index) of the current batch.
    let mut out: Vec<(UpstreamId, SocketAddr, SocketAddr, usize)> = Vec::with_capacity(BATCH);
    // Established flows of the batch to hand to the kernel once their datagram is sent.
    let mut offers: Vec<(SocketAddr, UpstreamId)> = Vec::new();
    let mut errors = 0u32;
    loop {
        let n = match recv_draining(&inner.listener, &mut batch, fd).await {
            Ok(n) => {
                errors = 0;
                n
            }
            Err(e) => {
                // ICMP errors about clients (ECONNREFUSED) and transient errors: keep going,
                // but do not spin on a broken socket.
                errors += 1;
                tracing::debug!(error = %e, "udp listener recv");
                if errors > 100 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        let now = inner.ctx.now();
        out.clear();
        let mut created = false;
        let pools_dropped = {
            let mut table = lock(&inner.table);
            let dropped_before = table.stats().client_pools_dropped;
            for i in 0..n {
                let Some((data, Some(client))) = batch.get(i) else {
                    continue;
                };
                match table.handle_client(now, client, data.len(), &mut Lazy(&inner.ctx)) {
                    ClientVerdict::Forward {
                        upstream,
                        server,
                        new_flow,
                    } => {
                        created |= new_flow;
                        if !new_flow && table.wants_offload(&client) {
                            offers.push((client, upstream));
                        }
                        out.push((upstream, server, client, i));
                        if let Some(local) = batch.dst(i) {
                            table.note_local(&client, local);
                        }
                    }
                    ClientVerdict::Drop(DropReason::FamilyMismatch { server }) => {
                        // No fallback to pen's own address: logged and counted, dropped.
                        let err = TransparentError::family_mismatch(canonical(client.ip()), server);
                        inner.ctx.transparent_failed(client, &err);
                    }
                    verdict => tracing::trace!(%client, ?verdict, "udp datagram dropped"),
                }
            }
            table.stats().client_pools_dropped != dropped_before
        };
        if pools_dropped {
            // Pools dropped to make room for new ones: close their sockets before the new
            // ones open, so the bound holds.
            let mut pools = lock(&inner.pools);
            pools.sync_clients(|ip| lock(&inner.table).client_pool(ip));
        }
        if created {
            inner.created.notify_one();
        }
        // One sendmmsg per upstream socket, in arrival order within each.
        out.sort_by_key(|&(u, _, _, i)| (u, i));
        let mut rest = &out[..];
        while let Some(&(upstream, ..)) = rest.first() {
            let k = rest.iter().take_while(|m| m.0 == upstream).count();
            let (group, tail) = rest.split_at(k);
            rest = tail;
            send_group(inner, &batch, upstream, group, now).await;
        }
        if !offers.is_empty() {
            offload(inner, &offers);
            offers.clear();
        }
    }
}

/// Hands established flows to the kernel fast path (not transparent ones: their datagrams
/// carry the client's address, which the fast path does not do).
fn offload<C: UdpContext>(inner: &Inner<C>, offers: &[(SocketAddr, UpstreamId)]) {
    let locals: Vec<Option<SocketAddr>> = {
        let pools = lock(&inner.pools);
        offers
            .iter()
            .map(|(_, u)| {
                if u.bound.is_some() {
                    return None;
                }
                pools.get(*u)?.local_addr().ok()
            })
            .collect()
    };
    let mut table = lock(&inner.table);
    for ((client, _), local) in offers.iter().zip(locals) {
        if let Some(local) = local
            && table.offload(client, inner.listen, local)
        {
            tracing::debug!(%client, "udp flow forwarded by the kernel from now on");
        }
    }
}

/// Send one batch's datagrams for one upstream socket: `sendmmsg`, then one by one (awaiting
/// room, handling errors) for whatever it did not take.
async fn send_group<C: UdpContext>(
    inner: &Arc<Inner<C>>,
    batch: &RecvBatch,
    upstream: UpstreamId,
    group: &[(UpstreamId, SocketAddr, SocketAddr, usize)],
    now: Duration,
) {
    let first_server = group.first().map(|&(_, server, ..)| server);
    let sock = match upstream_socket(inner, upstream, first_server) {
        Ok(s) => s,
        Err(e) => {
            let mut table = lock(&inner.table);
            match transparent::error_of(&e) {
                // A socket bound to the client's address (no CAP_NET_ADMIN, ...): the client's
                // flows cannot be transparent, and never fall back to pen's own address.
                Some(t) => {
                    for &(_, _, client, _) in group {
                        inner.ctx.transparent_failed(client, t);
                    }
                }
                None => {
                    tracing::warn!(error = %e, ?upstream, "cannot open a UDP upstream socket; dropping the flows")
                }
            }
            for &(_, _, client, _) in group {
                table.remove_flow(now, client, &mut Lazy(&inner.ctx));
            }
            return;
        }
    };
    let msgs: Vec<(&[u8], SocketAddr, Option<IpAddr>)> = group
        .iter()
        .map(|&(_, server, _, i)| (batch.get(i).map_or(&[][..], |(d, _)| d), server, None))
        .collect();
    let fd = sock.as_raw_fd();
    let sent = sock
        .try_io(Interest::WRITABLE, || send_batch(fd, &msgs))
        .unwrap_or(0);
    for &(data, server, _) in msgs.iter().skip(sent) {
        send_one(inner, &sock, upstream, data, server, now).await;
    }
}

async fn send_one<C: UdpContext>(
    inner: &Arc<Inner<C>>,
    sock: &UdpSocket,
    upstream: UpstreamId,
    data: &[u8],
    server: SocketAddr,
    now: Duration,
) {
    let mut result = sock.send_to(data, server).await;
    if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED)) {
        // A pending ICMP error of another server surfaced on this shared socket: account
        // for it from the error queue, then send ours again.
        handle_errqueue(inner, sock, upstream);
        result = sock.send_to(data, server).await;
    }
    if let Err(e) = result {
        if send_error_blames_server(&e) {
            tracing::debug!(error = %e, %server, "udp send failed; server unreachable");
            let mut table = lock(&inner.table);
            table.server_unreachable(now, upstream, server, &mut Lazy(&inner.ctx));
        } else {
            tracing::debug!(error = %e, %server, "udp send failed; datagram dropped");
        }
    }
}

fn send_error_blames_server(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENETUNREACH
                | libc::EHOSTUNREACH
                | libc::ECONNREFUSED
                | libc::EACCES
                | libc::EPERM
                | libc::EADDRNOTAVAIL
                | libc::EAFNOSUPPORT
        )
    )
}

/// The upstream socket `id`, creating its pool up to it (and their reader tasks) if needed.
/// `server`: where the flows go (names the backend in a transparent failure).
fn upstream_socket<C: UdpContext>(
    inner: &Arc<Inner<C>>,
    id: UpstreamId,
    server: Option<SocketAddr>,
) -> io::Result<Arc<UdpSocket>> {
    let index = usize::try_from(id.index).map_err(io::Error::other)?;
    let mut pools = lock(&inner.pools);
    if let Some(s) = pools.get(id) {
        return Ok(Arc::clone(s));
    }
    let source = *lock(&inner.source);
    while pools.list(id).len() <= index {
        let i = pools.list(id).len();
        let sock = Arc::new(match id.bound {
            None => new_upstream(id.family, source)?,
            Some(ip) => new_client_upstream(ip, server)?,
        });
        let uid = UpstreamId {
            index: u32::try_from(i).map_err(io::Error::other)?,
            ..id
        };
        let task = tokio::spawn(upstream_loop(Arc::clone(inner), Arc::clone(&sock), uid));
        pools.tasks.push((uid, task.abort_handle()));
        pools.list(id).push(sock);
    }
    pools
        .get(id)
        .cloned()
        .ok_or_else(|| io::Error::other("upstream pool did not grow"))
}

/// An unconnected UDP socket on an ephemeral port with `IP_RECVERR`/`IPV6_RECVERR`, so that
/// ICMP errors (port unreachable) are queued with the address of the server that caused them.
fn new_upstream(family: Family, source: Option<IpAddr>) -> io::Result<UdpSocket> {
    let (domain, any, level, opt): (Domain, IpAddr, libc::c_int, libc::c_int) = match family {
        Family::V4 => (
            Domain::IPV4,
            Ipv4Addr::UNSPECIFIED.into(),
            libc::SOL_IP,
            libc::IP_RECVERR,
        ),
        Family::V6 => (
            Domain::IPV6,
            Ipv6Addr::UNSPECIFIED.into(),
            libc::SOL_IPV6,
            libc::IPV6_RECVERR,
        ),
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if family == Family::V6 {
        sock.set_only_v6(true)?;
    }
    crate::proxy::sockets::set_int_option(sock.as_raw_fd(), level, opt, 1)?;
    let ip = match source {
        Some(ip) if ip.is_ipv4() == (family == Family::V4) => ip,
        _ => any,
    };
    sock.bind(&SocketAddr::new(ip, 0).into())?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

/// A socket of a transparent flow: `IP_TRANSPARENT` / `IPV6_TRANSPARENT`, bound to the
/// client's address `ip` (port chosen by the kernel) as C Pen binds its upstream socket, with
/// `IP_RECVERR` / `IPV6_RECVERR` as [`new_upstream`]. Answers are addressed to this socket,
/// so the host's mark rule finds it with iptables' `-m socket` too (which ignores sockets
/// bound to the wildcard address unless given `--nowildcard`). A failure is an `io::Error`
/// carrying the [`TransparentError`] (no CAP_NET_ADMIN, ...).
fn new_client_upstream(ip: IpAddr, server: Option<SocketAddr>) -> io::Result<UdpSocket> {
    let (domain, level, opt) = match ip {
        IpAddr::V4(_) => (Domain::IPV4, libc::SOL_IP, libc::IP_RECVERR),
        IpAddr::V6(_) => (Domain::IPV6, libc::SOL_IPV6, libc::IPV6_RECVERR),
    };
    let backend = server.unwrap_or_else(|| SocketAddr::new(ip, 0));
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if ip.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    crate::proxy::sockets::set_int_option(sock.as_raw_fd(), level, opt, 1)?;
    transparent::bind_as_client(socket2::SockRef::from(&sock), ip, backend)
        .map_err(TransparentError::into_io)?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

thread_local! {
    /// The reply path's buffers, shared by the upstream readers of the data path's thread
    /// (never held across an `.await`).
    static REPLY_BATCH: std::cell::RefCell<RecvBatch> = std::cell::RefCell::new(RecvBatch::new());
}

/// `recvmmsg` calls per readiness event before waiting again.
const ROUNDS: usize = 8;

async fn upstream_loop<C: UdpContext>(inner: Arc<Inner<C>>, sock: Arc<UdpSocket>, id: UpstreamId) {
    loop {
        let ready = match sock.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, ?id, "udp upstream socket failed");
                return;
            }
        };
        // An ICMP error can also cut a batch short while datagrams are still queued (the
        // kernel reports a pending socket error before the queue): after one, read on
        // without trusting a short batch until the queue says EAGAIN.
        let after_error = ready.is_error();
        if after_error {
            handle_errqueue(&inner, &sock, id);
        }
        if ready.is_readable() || after_error {
            for _ in 0..ROUNDS {
                match forward_replies(&inner, &sock, id, after_error) {
                    Ok(Drained::Yes) => break,
                    Ok(Drained::Maybe) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) || is_icmp_error(&e) => {
                        handle_errqueue(&inner, &sock, id);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, ?id, "udp upstream recv");
                        break;
                    }
                }
            }
        }
    }
}

fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENONET)
    )
}

/// Whether a `recvmmsg` emptied the socket's queue.
enum Drained {
    /// It returned fewer datagrams than it asked for: the queue is empty and the readiness
    /// was cleared (the next datagram brings a new epoll edge).
    Yes,
    /// A full batch: there may be more.
    Maybe,
}

/// One `recvmmsg` on a readable socket. A short batch means the receive queue is empty, so
/// the readiness is cleared with it ([`read_draining`]) instead of by a further call that ends
/// in EAGAIN.
fn recv_once(sock: &UdpSocket, batch: &mut RecvBatch, fd: RawFd) -> io::Result<(usize, Drained)> {
    let (n, drained) = read_draining(
        |f| sock.try_io(Interest::READABLE, f),
        || batch.recv(fd),
        |&n| n > 0 && n < BATCH,
    )?;
    Ok((
        n,
        if drained {
            Drained::Yes
        } else {
            Drained::Maybe
        },
    ))
}

/// Waits until `sock` is readable and receives one batch (see [`recv_once`]).
async fn recv_draining(sock: &UdpSocket, batch: &mut RecvBatch, fd: RawFd) -> io::Result<usize> {
    loop {
        sock.readable().await?;
        match recv_once(sock, batch, fd) {
            Ok((n, _)) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Receive a batch of datagrams from servers on `sock` and send each to its flow's client from
/// the listening socket. Err(WouldBlock) when there is nothing to read.
/// `direct`: call `recvmmsg` whatever tokio's readiness says, and never report `Drained::Yes`
/// (used after an ICMP error).
fn forward_replies<C: UdpContext>(
    inner: &Inner<C>,
    sock: &UdpSocket,
    id: UpstreamId,
    direct: bool,
) -> io::Result<Drained> {
    REPLY_BATCH.with(|cell| {
        let mut batch = cell.borrow_mut();
        let fd = sock.as_raw_fd();
        let (n, drained) = if direct {
            (batch.recv(fd)?, Drained::Maybe)
        } else {
            recv_once(sock, &mut batch, fd)?
        };
        let now = inner.ctx.now();
        let mut msgs: Vec<(&[u8], SocketAddr, Option<IpAddr>)> = Vec::with_capacity(n);
        {
            let mut table = lock(&inner.table);
            for i in 0..n {
                let Some((data, Some(from))) = batch.get(i) else {
                    continue;
                };
                if let Some(client) = table.handle_server(now, id, from, data.len()) {
                    let local = if inner.wildcard {
                        table.local_of(&client)
                    } else {
                        None
                    };
                    msgs.push((data, client, local));
                }
            }
        }
        let lfd = inner.listener.as_raw_fd();
        let sent = inner
            .listener
            .try_io(Interest::WRITABLE, || send_batch(lfd, &msgs))
            .unwrap_or(0);
        for m in msgs.iter().skip(sent) {
            let one = inner.listener.try_io(Interest::WRITABLE, || {
                send_batch(lfd, std::slice::from_ref(m))
            });
            if let Err(e) = one {
                // Listener send buffer full (or the client is gone): UDP may drop.
                tracing::trace!(error = %e, client = %m.1, "udp reply dropped");
            }
        }
        Ok(drained)
    })
}

/// Drain the socket's error queue and report every unreachable server to the table.
fn handle_errqueue<C: UdpContext>(inner: &Inner<C>, sock: &UdpSocket, id: UpstreamId) {
    let fd = sock.as_raw_fd();
    let mut offenders = Vec::new();
    // try_io clears the ERROR readiness when the queue is empty (WouldBlock).
    let _ = sock.try_io(Interest::ERROR, || {
        for _ in 0..64 {
            let (addr, errno) = recv_err(fd)?;
            if let Some(addr) = addr
                && matches!(
                    i32::try_from(errno).unwrap_or(0),
                    libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN
                )
            {
                offenders.push(addr);
            }
        }
        Ok(())
    });
    if offenders.is_empty() {
        return;
    }
    let now = inner.ctx.now();
    let mut table = lock(&inner.table);
    for server in offenders {
        let client = table.server_unreachable(now, id, server, &mut Lazy(&inner.ctx));
        tracing::debug!(%server, ?client, "udp server unreachable (ICMP)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Round robin over fixed servers with a blacklist that never expires.
    struct RrSel {
        servers: Vec<SocketAddr>,
        next: usize,
        blacklisted: Vec<bool>,
    }

    impl Selector for RrSel {
        fn candidates(&mut self, _c: SocketAddr, _now: Duration) -> Vec<Candidate> {
            let n = self.servers.len();
            let mut out = Vec::new();
            for k in 0..n {
                let i = (self.next + k) % n;
                if !self.blacklisted[i] {
                    out.push(Candidate {
                        target: Target::Server(i),
                        addr: Some(self.servers[i]),
                    });
                }
            }
            self.next += 1;
            out
        }
        fn flow_opened(&mut self, _c: SocketAddr, _t: Target, _now: Duration) {}
        fn flow_closed(&mut self, _c: SocketAddr, _t: Target, _s: u64, _r: u64, _now: Duration) {}
        fn server_failed(&mut self, t: Target, _now: Duration) {
            if let Target::Server(i) = t {
                self.blacklisted[i] = true;
            }
        }
    }

    struct Ctx {
        sel: Mutex<RrSel>,
        limits: Limits,
        published: Mutex<Option<UdpStatus>>,
    }

    impl UdpContext for Arc<Ctx> {
        fn with_selector<R>(&self, f: impl FnOnce(&mut dyn Selector) -> R) -> R {
            f(&mut *self.sel.lock().unwrap())
        }
        fn limits(&self) -> Limits {
            self.limits
        }
        fn now(&self) -> Duration {
            crate::proxy::now()
        }
        fn publish(&self, status: UdpStatus) {
            *self.published.lock().unwrap() = Some(status);
        }
    }

    /// A UDP echo backend that prefixes its replies with `tag`.
    async fn tagged_echo(tag: u8, count: Arc<AtomicUsize>) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let mut out = vec![tag];
                out.extend_from_slice(&buf[..n.min(MAX_DATAGRAM - 100)]);
                s.send_to(&out, from).await.unwrap();
            }
        });
        addr
    }

    async fn start(servers: Vec<SocketAddr>, max_flows: usize) -> (SocketAddr, Arc<Ctx>) {
        let n = servers.len();
        let ctx = Arc::new(Ctx {
            sel: Mutex::new(RrSel {
                servers,
                next: 0,
                blacklisted: vec![false; n],
            }),
            limits: Limits {
                max_flows,
                idle: Duration::from_secs(60),
                source: None,
            },
            published: Mutex::new(None),
        });
        let l = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve_with(l, Arc::clone(&ctx)));
        (addr, ctx)
    }

    async fn ask(c: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
        c.send_to(msg, to).await.unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        match tokio::time::timeout(Duration::from_millis(500), c.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                assert_eq!(from, to, "replies come from the listening address");
                Some(buf[..n].to_vec())
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn replies_come_back_from_the_listener_and_flows_stick() {
        let a = tagged_echo(b'A', Arc::default()).await;
        let b = tagged_echo(b'B', Arc::default()).await;
        let (pen, _ctx) = start(vec![a, b], 100).await;
        let c1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let c2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let r1 = ask(&c1, pen, b"hi").await.unwrap();
        let r2 = ask(&c2, pen, b"hi").await.unwrap();
        assert_ne!(r1[0], r2[0], "two flows spread over two servers");
        for _ in 0..5 {
            assert_eq!(ask(&c1, pen, b"again").await.unwrap()[0], r1[0]);
        }
        assert_eq!(&r1[1..], b"hi");
    }

    #[tokio::test]
    async fn a_new_flow_is_published_well_before_the_next_tick() {
        let a = tagged_echo(b'A', Arc::default()).await;
        let (pen, ctx) = start(vec![a], 100).await;
        // Let the first (empty) publication happen, then create a flow right after it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = c.local_addr().unwrap();
        assert!(ask(&c, pen, b"x").await.is_some());
        let listed = || {
            ctx.published
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|s| s.flows.iter().any(|f| f.client == me))
        };
        let t0 = std::time::Instant::now();
        while !listed() && t0.elapsed() < TICK {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(listed(), "flow not published within a tick");
        // Without the signal it would wait for the tick (about 950 ms here).
        assert!(
            t0.elapsed() < Duration::from_millis(600),
            "{:?}",
            t0.elapsed()
        );
        let st = ctx.published.lock().unwrap().clone().unwrap();
        assert_eq!((st.stats.flows_created, st.max_flows), (1, 100));
        assert_eq!(st.flows[0].bytes_up, 1);
    }

    #[tokio::test]
    async fn zero_length_and_64k_datagrams_pass() {
        let a = tagged_echo(b'A', Arc::default()).await;
        let (pen, _ctx) = start(vec![a], 100).await;
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(ask(&c, pen, b"").await.unwrap(), b"A");
        let big = vec![7u8; 65_507];
        let r = ask(&c, pen, &big).await.unwrap();
        assert_eq!(r.len(), 1 + (MAX_DATAGRAM - 100));
    }

    #[tokio::test]
    async fn icmp_port_unreachable_blacklists_and_fails_over() {
        let dead = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        }; // closed: the kernel answers port unreachable
        let live = tagged_echo(b'L', Arc::default()).await;
        let (pen, ctx) = start(vec![dead, live], 100).await;
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // The first flow goes to the dead server: no answer, but the ICMP error blacklists it.
        assert_eq!(ask(&c, pen, b"q").await, None);
        assert!(ctx.sel.lock().unwrap().blacklisted[0]);
        // The client's retry is a new flow on the live server.
        assert_eq!(ask(&c, pen, b"q").await.unwrap(), b"Lq");
    }

    #[tokio::test]
    async fn full_table_evicts_answered_flows_for_new_clients() {
        let a = tagged_echo(b'A', Arc::default()).await;
        let (pen, _ctx) = start(vec![a], 2).await;
        let c1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let c2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let c3 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(ask(&c1, pen, b"1").await.is_some());
        assert!(ask(&c2, pen, b"2").await.is_some());
        // The table is full of answered flows: c3 evicts c1's, then c1 comes back as new.
        assert_eq!(ask(&c3, pen, b"3").await.unwrap(), b"A3");
        assert_eq!(ask(&c1, pen, b"1").await.unwrap(), b"A1");
    }

    #[tokio::test]
    async fn ipv6_listener_and_backend() {
        let s = UdpSocket::bind("[::1]:0").await.unwrap();
        let b = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                s.send_to(&buf[..n], from).await.unwrap();
            }
        });
        let ctx = Arc::new(Ctx {
            sel: Mutex::new(RrSel {
                servers: vec![b],
                next: 0,
                blacklisted: vec![false],
            }),
            limits: Limits {
                max_flows: 10,
                idle: Duration::from_secs(60),
                source: None,
            },
            published: Mutex::new(None),
        });
        let l = UdpSocket::bind("[::1]:0").await.unwrap();
        let pen = l.local_addr().unwrap();
        tokio::spawn(serve_with(l, ctx));
        let c = UdpSocket::bind("[::1]:0").await.unwrap();
        assert_eq!(ask(&c, pen, b"six").await.unwrap(), b"six");
    }

    #[tokio::test]
    async fn many_client_ports_use_few_upstream_sockets() {
        let a = tagged_echo(b'A', Arc::default()).await;
        let b = tagged_echo(b'B', Arc::default()).await;
        let ctx = Arc::new(Ctx {
            sel: Mutex::new(RrSel {
                servers: vec![a, b],
                next: 0,
                blacklisted: vec![false; 2],
            }),
            limits: Limits {
                max_flows: 1000,
                idle: Duration::from_secs(60),
                source: None,
            },
            published: Mutex::new(None),
        });
        let handle = new_table(&ctx.limits);
        let l = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let pen = l.local_addr().unwrap();
        tokio::spawn(serve_table(l, ctx, handle.clone()));
        let mut clients = Vec::new();
        for _ in 0..40 {
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            assert!(ask(&c, pen, b"x").await.is_some());
            clients.push(c);
        }
        // 40 flows over 2 servers: 20 upstream sockets, whatever the number of clients.
        let (flows, ups) = handle.with_table(|t| (t.len(), t.upstreams_needed(Family::V4)));
        assert_eq!((flows, ups), (40, 20));
    }
}
