//! The tokio shell around [`FlowTable`]: moves datagrams between the listening socket, the
//! upstream socket pool and the table, and drives its timer. No decisions are made here.
//!
//! Tasks, one file each: the listener loop (`client.rs`: client → server), one reader per
//! upstream socket (`upstream.rs`: server → client, and ICMP errors through `IP_RECVERR`), and
//! the expiry timer (`expiry.rs`). Established IPv4 flows are handed to the kernel fast path
//! ([`super::offload`]) when it is available (`kernel.rs`: the table's offload commands carried
//! out, the kernel's counters read, route changes fed to the route cache); their datagrams
//! then no longer reach these tasks. Every task is aborted when [`serve_with`] returns or is
//! dropped.
//!
//! Locks: the flow table's mutex is taken first, the context's (shared state) second, and only
//! on the slow paths (new flow, expiry, unreachable server). Never take them the other way round.
//! No kernel call is made with the table's lock held: the kernel path's lock comes before the
//! table's (`kernel.rs`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use super::flow::{Candidate, Family, FlowInfo, FlowTable, Selector, UdpStats, UpstreamId};
use super::mmsg::enable_pktinfo;
use crate::proxy::transparent::TransparentError;
use crate::select::Target;

mod client;
mod expiry;
mod kernel;
mod upstream;

pub(crate) use kernel::KernelSlot;

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
    /// The balancer's kernel fast path, once loaded: what `with_table_mut` changes reaches it.
    kernel: KernelSlot,
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
    /// shared state's lock inside: table first, as everywhere). Flows it removes then leave
    /// the kernel fast path, after the table's lock is released.
    pub fn with_table_mut<R>(&self, f: impl FnOnce(&mut FlowTable) -> R) -> R {
        let r = f(&mut lock(&self.table));
        self.kernel.drain(&self.table);
        r
    }

    /// Whether the balancer forwards established flows in the kernel.
    pub fn kernel_path_ready(&self) -> bool {
        self.kernel.is_ready()
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
    kernel: KernelSlot,
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
        kernel: KernelSlot::default(),
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
    let UdpHandle { table, kernel } = handle;
    lock(&table).set_sources(transparent, limits.source);
    let offloading = !transparent && kernel.attach(&table, listen);
    #[cfg(target_os = "linux")]
    let watch = offloading.then(|| tokio::spawn(kernel.clone().watch_routes()).abort_handle());
    #[cfg(not(target_os = "linux"))]
    let watch: Option<AbortHandle> = None;
    let inner = Arc::new(Inner {
        ctx,
        listener,
        table,
        pools: Mutex::new(Pools::default()),
        source: Mutex::new(limits.source),
        created: tokio::sync::Notify::new(),
        wildcard,
        listen,
        kernel,
    });
    let timer = tokio::spawn(expiry::expiry_loop(Arc::clone(&inner)));
    let _guard = AbortGuard {
        timer: timer.abort_handle(),
        watch,
        inner: Arc::clone(&inner),
    };
    tokio::select! {
        r = client::client_loop(&inner) => r,
        // Binary upgrade: the new pen reads new datagrams; replies keep flowing from here.
        () = crate::proxy::udp::reading_stopped() => std::future::pending().await,
    }
}

struct AbortGuard<C> {
    timer: AbortHandle,
    /// The route watch of the kernel fast path.
    watch: Option<AbortHandle>,
    inner: Arc<Inner<C>>,
}

impl<C> Drop for AbortGuard<C> {
    fn drop(&mut self) {
        self.timer.abort();
        if let Some(w) = &self.watch {
            w.abort();
        }
        let pools = lock(&self.inner.pools);
        for (_, t) in &pools.tasks {
            t.abort();
        }
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
