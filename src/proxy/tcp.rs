//! The TCP (and Unix stream) proxy: accept loop and per-connection task.
//!
//! For each client: `Balancer::select` under the shared lock gives an ordered candidate list;
//! the task walks it (connect with the `-t` timeout; a failed or timed-out connect blacklists
//! that server and moves on), forwards with [`forward`], and reports the byte counts when the
//! connection closes. An empty or exhausted list closes the client.
//!
//! PROXY protocol ([`crate::proxyproto`]): with `accept_proxy`, a TCP client's header is read
//! first (peeked and consumed exactly, bounded, within its timeout), and the client it names
//! replaces the peer for selection, ACLs, `-H`, the connection table and the logs; a refused
//! header closes the client and is counted by reason (`State::proxy_headers`). With
//! `proxy_protocol` / `server N proxy`, the header is written to the upstream right after the
//! connect, before any client byte.
//!
//! Limits: `conn_max` is a semaphore whose permit is taken *before* `accept`, so a full table
//! stops accepting (the kernel backlog holds new clients) and a freed slot resumes it;
//! `pending_max` bounds simultaneous upstream connects.
//!
//! Out of descriptors (or buffers, memory, local ports: [`resources::is_local_resource_error`])
//! is pen's problem, not the server's: such a failed `accept` or upstream connect blacklists
//! nothing. The accept loop pauses until a connection closes (or a back-off of up to a second
//! passes), the connection that hit it waits the same way and retries its server within the
//! `-t` connect timeout, and the shortage is counted (`Shared::shortage`) and logged once per
//! burst.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use crate::acl::canonical;
use crate::config::{BackendAddr, Config};
use crate::proxy::forward::{
    Counters, FirstChunk, Front, Options as ForwardOptions, Stream, forward_front,
};
use crate::proxy::http::{Proto, Rewriter};
use crate::proxy::resources;
use crate::proxy::sockets::{self, UpstreamOptions};
use crate::proxy::transparent;
use crate::proxy::{SharedState, lock, now};
use crate::proxyproto::{self, Accept, Header, ParseError, Parsed, Reason};
use crate::select::{Client, Target};
use crate::stats::ConnRow;

/// A listening socket the accept loop serves.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Accepts one client: the stream and the client identity used by the balancer.
    async fn accept(&self) -> io::Result<(Stream, Client, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Stream::Tcp(s), client_of(peer), peer.to_string()))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((
                    Stream::Unix(s),
                    Client { ip: None, port: 0 },
                    "unix client".to_string(),
                ))
            }
        }
    }
}

/// The balancer's view of a TCP client. An IPv4 client of a dual-stack (`::`) listener shows up
/// as `::ffff:a.b.c.d`; it is tracked, hashed and matched as the IPv4 address it is.
pub fn client_of(peer: SocketAddr) -> Client {
    Client {
        ip: Some(canonical(peer.ip())),
        port: peer.port(),
    }
}

/// The connection-table and pending-connect limits. Both can grow at run time
/// (`conn_max N`, `pending_max N`) by adding permits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// One permit per connection slot (`conn_max`); taken before `accept`.
    pub conn_slots: Arc<Semaphore>,
    /// One permit per upstream connect in progress (`pending_max`).
    pub pending: Arc<Semaphore>,
    /// Out of descriptors: who waits for some to be freed.
    pub fds: Arc<FdWait>,
}

/// Waiting for descriptors after a local resource error: every connection that ends wakes the
/// waiters; a waiter also gives up after its back-off (descriptors may be freed elsewhere).
#[derive(Debug, Default)]
pub struct FdWait {
    /// Set by a connection that hit a shortage; the accept loop waits before its next accept.
    short: AtomicBool,
    freed: Notify,
}

/// First and longest pause of the accept loop while descriptors are short.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl FdWait {
    /// A connection ended: its descriptors are free.
    fn freed(&self) {
        self.freed.notify_waiters();
    }

    /// Waits until a connection ends or `max` passes; returns whether a connection ended.
    async fn wait(&self, max: Duration) -> bool {
        tokio::time::timeout(max, self.freed.notified())
            .await
            .is_ok()
    }
}

impl Limits {
    pub fn new(cfg: &Config) -> Limits {
        Limits {
            conn_slots: Arc::new(Semaphore::new(
                cfg.conn_max.clamp(1, Semaphore::MAX_PERMITS),
            )),
            pending: Arc::new(Semaphore::new(
                cfg.pending_max.clamp(1, Semaphore::MAX_PERMITS),
            )),
            fds: Arc::new(FdWait::default()),
        }
    }
}

/// The open connections, by slot number (`connection N`, `close N`, status pages). Slots are
/// reused lowest-freed-first; an entry lives from accept to close.
#[derive(Debug, Default)]
pub struct ConnTable {
    inner: Mutex<TableInner>,
}

#[derive(Debug, Default)]
struct TableInner {
    slots: Vec<Option<ConnEntry>>,
    free: Vec<usize>,
}

#[derive(Debug)]
struct ConnEntry {
    client: String,
    downfd: i32,
    upfd: i32,
    target: Option<Target>,
    counters: Arc<Counters>,
    abort: Option<AbortHandle>,
    /// `close N` for a connection served by the io_uring loop (no task to abort).
    remote: Option<RemoteClose>,
    /// Its bytes are not yet in the server's totals (cleared, under the shared lock, when
    /// they are moved there).
    open: bool,
}

/// How `close N` reaches a connection that is not a tokio task (the io_uring loop,
/// [`crate::proxy::uring`]): a call that asks its loop to close it.
#[derive(Clone)]
pub struct RemoteClose(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for RemoteClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteClose")
    }
}

impl ConnTable {
    /// Lists a connection served outside a tokio task (the io_uring loop): `close N` calls
    /// `close`. Returns its slot number.
    pub(crate) fn insert_remote(
        &self,
        client: String,
        downfd: i32,
        counters: Arc<Counters>,
        close: RemoteClose,
    ) -> usize {
        self.insert(ConnEntry {
            client,
            downfd,
            upfd: -1,
            target: None,
            counters,
            abort: None,
            remote: Some(close),
            open: true,
        })
    }

    /// The connection at `idx` is now connected to `target` through descriptor `upfd`.
    pub(crate) fn set_upstream(&self, idx: usize, target: Target, upfd: i32) {
        self.update(idx, |e| {
            e.target = Some(target);
            e.upfd = upfd;
        });
    }

    /// Removes the connection at `idx` (it has closed).
    pub(crate) fn remove_entry(&self, idx: usize) {
        self.remove(idx);
    }

    fn lock(&self) -> MutexGuard<'_, TableInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, entry: ConnEntry) -> usize {
        let mut t = self.lock();
        match t.free.pop() {
            Some(i) => {
                if let Some(slot) = t.slots.get_mut(i) {
                    *slot = Some(entry);
                }
                i
            }
            None => {
                t.slots.push(Some(entry));
                t.slots.len() - 1
            }
        }
    }

    fn update(&self, idx: usize, f: impl FnOnce(&mut ConnEntry)) {
        if let Some(Some(e)) = self.lock().slots.get_mut(idx) {
            f(e);
        }
    }

    fn remove(&self, idx: usize) {
        let mut t = self.lock();
        if let Some(slot) = t.slots.get_mut(idx)
            && slot.take().is_some()
        {
            t.free.push(idx);
        }
    }

    /// `close N`: ends connection N (both sockets closed, byte counts reported). Returns
    /// whether it existed.
    pub fn close(&self, idx: usize) -> bool {
        let t = self.lock();
        match t.slots.get(idx) {
            Some(Some(e)) => {
                if let Some(a) = &e.abort {
                    a.abort();
                }
                if let Some(r) = &e.remote {
                    (r.0)();
                }
                true
            }
            _ => false,
        }
    }

    /// Connection `idx`'s bytes are now in its server's totals: [`ConnTable::open_bytes`]
    /// leaves it out. Call under the shared state's lock, together with `Balancer::closed`.
    pub(crate) fn bytes_reported(&self, idx: usize) {
        self.update(idx, |e| e.open = false);
    }

    /// A connection to `target` as the data path lists it once connected (tests of the
    /// reports).
    #[cfg(test)]
    pub(crate) fn insert_open_for_test(&self, target: Target, counters: Arc<Counters>) -> usize {
        self.insert(ConnEntry {
            client: "test".to_string(),
            downfd: -1,
            upfd: -1,
            target: Some(target),
            counters,
            abort: None,
            remote: None,
            open: true,
        })
    }

    /// Bytes so far of the connections whose totals the balancer does not have yet, by
    /// server: (sent to it, received from it).
    pub fn open_bytes(&self) -> std::collections::HashMap<Target, (u64, u64)> {
        let mut out = std::collections::HashMap::<Target, (u64, u64)>::new();
        for e in self.lock().slots.iter().flatten() {
            if let (true, Some(t)) = (e.open, e.target) {
                let v = out.entry(t).or_default();
                v.0 = v.0.saturating_add(e.counters.to_server());
                v.1 = v.1.saturating_add(e.counters.from_server());
            }
        }
        out
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.lock().slots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open connections for the reports.
    pub fn rows(&self) -> Vec<ConnRow> {
        let t = self.lock();
        t.slots
            .iter()
            .enumerate()
            .filter_map(|(index, e)| {
                let e = e.as_ref()?;
                Some(ConnRow {
                    index,
                    downfd: e.downfd,
                    upfd: e.upfd,
                    pending_down: 0,
                    pending_up: 0,
                    client: e.client.clone(),
                    server: match e.target {
                        None => -1,
                        Some(Target::Server(i)) => i64::try_from(i).unwrap_or(i64::MAX),
                        Some(Target::Emergency) => -2,
                        Some(Target::Abuse) => -3,
                    },
                    sx: e.counters.to_server(),
                    rx: e.counters.from_server(),
                })
            })
            .collect()
    }
}

/// Removes a connection's table entry when its task ends (however it ends).
struct Registered<'a> {
    table: &'a ConnTable,
    idx: usize,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.table.remove(self.idx);
    }
}

/// Per-connection settings, copied out of the `Config` under the lock.
#[derive(Debug, Clone, Copy)]
struct ConnSettings {
    connect_timeout: Duration,
    upstream: UpstreamOptions,
    client_nodelay: bool,
    forward: ForwardOptions,
}

impl ConnSettings {
    fn of(cfg: &Config) -> ConnSettings {
        ConnSettings {
            connect_timeout: Duration::from_secs(cfg.connect_timeout_secs.max(1)),
            upstream: UpstreamOptions {
                source: cfg.source,
                keepalive: cfg.keepalive,
                nodelay: cfg.tcp_nodelay,
                transparent: cfg.transparent,
                client: None,
            },
            client_nodelay: cfg.tcp_nodelay,
            forward: ForwardOptions {
                fastclose: cfg.tcp_fastclose,
                idle_timeout: (cfg.idle_timeout_secs > 0)
                    .then(|| Duration::from_secs(cfg.idle_timeout_secs)),
                splice: true,
            },
        }
    }
}

/// The accept loop: runs until the listener fails for good (it never returns `Ok`).
/// Aborted handshakes are retried at once; out of descriptors (here or in a connection's
/// upstream connect) pauses accepting until a connection closes or the back-off
/// (`BACKOFF_MIN` doubling up to `BACKOFF_MAX`) passes, so the loop never spins.
/// Every connection is listed in `conns` while it is open.
pub async fn serve(
    listener: Listener,
    shared: SharedState,
    limits: Limits,
    conns: Arc<ConnTable>,
) -> io::Result<()> {
    let mut backoff = BACKOFF_MIN;
    loop {
        let Ok(slot) = limits.conn_slots.clone().acquire_owned().await else {
            return Err(io::Error::other("connection table closed"));
        };
        if limits.fds.short.swap(false, Ordering::Relaxed) {
            // A connection ran out of descriptors: leave new clients in the backlog until
            // one closes (or the back-off passes) instead of accepting clients pen cannot serve.
            if !limits.fds.wait(backoff).await {
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        let (stream, client, who) = match listener.accept().await {
            Ok(a) => a,
            Err(e) if resources::is_local_resource_error(&e) => {
                shortage(&shared, "accept", &e);
                limits.fds.short.store(true, Ordering::Relaxed);
                continue;
            }
            Err(e) => {
                if accept_error_is_transient(&e) {
                    tracing::debug!("accept failed: {e}");
                    continue;
                }
                tracing::warn!("accept failed: {e}");
                return Err(e);
            }
        };
        backoff = BACKOFF_MIN;
        tracing::debug!("accepted {who}");
        let counters = Arc::new(Counters::default());
        let idx = conns.insert(ConnEntry {
            client: who.clone(),
            downfd: stream.as_fd_raw(),
            upfd: -1,
            target: None,
            counters: counters.clone(),
            abort: None,
            remote: None,
            open: true,
        });
        let shared = shared.clone();
        let limits = limits.clone();
        let table = conns.clone();
        let task = tokio::spawn(async move {
            let _registered = Registered { table: &table, idx };
            let conn = Conn {
                who: &who,
                client,
                idx,
                table: &table,
                counters: &counters,
            };
            let _freed = Freed(&limits.fds);
            handle(stream, conn, shared, &limits).await;
            drop(slot);
        });
        conns.update(idx, |e| e.abort = Some(task.abort_handle()));
    }
}

/// Identity and bookkeeping of one connection.
struct Conn<'a> {
    who: &'a str,
    client: Client,
    idx: usize,
    table: &'a ConnTable,
    counters: &'a Counters,
}

/// Wakes the descriptor waiters when a connection's task ends (its sockets are closed by then),
/// however it ends.
struct Freed<'a>(&'a FdWait);

impl Drop for Freed<'_> {
    fn drop(&mut self) {
        self.0.freed();
    }
}

/// An accept that failed because of the client (it went away during the handshake) or a
/// signal: try the next one. (Local shortages are handled before this.)
fn accept_error_is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// Counts a local resource error and logs it when it starts a burst.
pub(crate) fn shortage(shared: &SharedState, during: &str, e: &io::Error) {
    let first = lock(shared).shortage.record(now());
    if first {
        tracing::warn!(
            "{during}: {e}: pen is out of local resources (descriptors, buffers, memory or \
             ports); pausing new connections until some are freed, no server is blacklisted \
             for it"
        );
    }
}

/// Something that needs descriptors succeeded: ends a shortage burst once it is quiet.
pub(crate) fn recovered(g: &mut crate::proxy::Shared, t: Duration) {
    if g.shortage.in_burst()
        && let Some(end) = g.shortage.recovered(t)
    {
        tracing::warn!(
            "local resources available again: {} connection attempt(s) hit the shortage in {:.1} s",
            end.errors,
            end.lasted.as_secs_f64()
        );
    }
}

/// One client connection, from selection to close.
async fn handle(mut client_stream: Stream, conn: Conn<'_>, shared: SharedState, limits: &Limits) {
    let (mut who, mut client) = (conn.who.to_string(), conn.client);
    let (accept, wait, proxy_in_use) = {
        let g = lock(&shared);
        (
            g.config.accept_proxy,
            Duration::from_secs(g.config.accept_proxy_timeout_secs.max(1)),
            g.config.proxy_protocol_in_use(),
        )
    };
    // What the client connected to: the PROXY header pen sends names it as the destination
    // (looked up only when some PROXY setting is on: no system call per plain connection).
    let mut dst = match &client_stream {
        Stream::Tcp(s) if proxy_in_use => s.local_addr().ok(),
        _ => None,
    };
    if let (Some(accept), Stream::Tcp(s)) = (accept, &mut client_stream) {
        // `accept_proxy`: the upstream balancer's header names the real client, which
        // tracking, ACLs, -H, the connection table and the logs use from here on.
        let read = read_proxy_header(s, accept, wait).await;
        let mut g = lock(&shared);
        match read {
            Ok(h) => {
                g.proxy_headers.accepted = g.proxy_headers.accepted.saturating_add(1);
                drop(g);
                if let (Some(src), Some(d)) = (h.src, h.dst) {
                    tracing::debug!("{who}: PROXY {} header: client {src}, to {d}", h.version);
                    client = client_of(src);
                    who = src.to_string();
                    dst = Some(d);
                    let shown = who.clone();
                    conn.table.update(conn.idx, |e| e.client = shown);
                } else {
                    tracing::debug!("{who}: PROXY {} header without addresses", h.version);
                }
            }
            Err(e) => {
                g.proxy_headers.refused(e.reason);
                drop(g);
                tracing::debug!("{who}: PROXY header refused: {e}; closing the client");
                return;
            }
        }
    }
    let who = who.as_str();
    let Some((front, rewriter)) = front_of(client_stream, &client, who, &shared).await else {
        return;
    };
    let (candidates, settings) = {
        let mut g = lock(&shared);
        let candidates = g.balancer.select(&client, now());
        (candidates, ConnSettings::of(&g.config))
    };
    if candidates.is_empty() {
        tracing::debug!("{who}: no server available; closing the client");
        return;
    }
    if let Stream::Tcp(s) = front.socket()
        && settings.client_nodelay
        && let Err(e) = sockets::set_nodelay(s, true)
    {
        tracing::debug!("{who}: TCP_NODELAY on the client socket failed: {e}");
    }
    let Some((target, mut upstream)) =
        connect_first(&candidates, &client, who, &shared, limits, &settings).await
    else {
        tracing::debug!("{who}: every candidate failed; closing the client");
        return;
    };
    let upfd = upstream.as_fd_raw();
    conn.table.update(conn.idx, |e| {
        e.target = Some(target);
        e.upfd = upfd;
    });
    let counters = conn.counters;
    let established = Established {
        shared: &shared,
        target,
        client,
        counters,
        table: conn.table,
        idx: conn.idx,
    };
    let send = proxy_in_use.then(|| {
        let g = lock(&shared);
        g.config.proxy_for(match target {
            Target::Server(i) => Some(i),
            Target::Emergency | Target::Abuse => None,
        })
    });
    if let Some(version) = send.and_then(|p| p.version()) {
        // The header goes first, before any byte of the client's.
        let addrs = client
            .ip
            .zip(dst)
            .map(|(ip, d)| (SocketAddr::new(ip, client.port), d));
        let header = crate::proxyproto::encode(version, addrs);
        let sent = tokio::time::timeout(settings.connect_timeout, async {
            upstream.write_all(&header).await?;
            upstream.flush().await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            // (`established` reports the close to the balancer.)
            tracing::debug!("{who}: sending the PROXY header to {target:?} failed; closing");
            return;
        }
    }
    if !front.is_tls()
        && let Some(log) = crate::reqlog::current()
    {
        // `-l`: the connection's first request, peeked (the bytes stay for the forwarder).
        let server_text = lock(&shared)
            .balancer
            .addr(target)
            .map(crate::reqlog::backend_text)
            .unwrap_or_default();
        let client_text = client
            .ip
            .map_or_else(|| "unix".to_string(), |ip| ip.to_string());
        Box::pin(crate::reqlog::log_first_request(
            &log,
            front.socket(),
            &upstream,
            &client_text,
            &server_text,
        ))
        .await;
    }
    let first = tls_request_log(&front, &client, target, &shared);
    match forward_front(
        front,
        upstream,
        &settings.forward,
        counters,
        rewriter,
        first,
    )
    .await
    {
        Ok(ending) => tracing::debug!(
            "{who}: {ending:?}; {} bytes to {target:?}, {} back",
            counters.to_server(),
            counters.from_server()
        ),
        Err(e) => tracing::debug!("{who}: closed on error: {e}"),
    }
    drop(established);
}

/// Reads the PROXY protocol header of an `accept_proxy` client, within `wait`. Exactly the
/// header is consumed (peeked first, then read): the client's own bytes after it stay in
/// the socket for TLS, `-H` and splice.
async fn read_proxy_header(
    s: &mut tokio::net::TcpStream,
    accept: Accept,
    wait: Duration,
) -> Result<Header, ParseError> {
    match tokio::time::timeout(wait, read_header(s, accept)).await {
        Ok(r) => r,
        Err(_) => Err(ParseError {
            reason: Reason::Timeout,
            detail: "no complete header within the accept_proxy timeout",
        }),
    }
}

async fn read_header(s: &mut tokio::net::TcpStream, accept: Accept) -> Result<Header, ParseError> {
    let truncated = ParseError {
        reason: Reason::Truncated,
        detail: "the client closed before its header was complete",
    };
    let mut got: Vec<u8> = Vec::new();
    let mut peeked = vec![0u8; proxyproto::V2_MAX];
    loop {
        let room = proxyproto::V2_MAX.saturating_sub(got.len()).max(1);
        let buf = peeked.get_mut(..room).unwrap_or_default();
        let n = s.peek(buf).await.map_err(|_| truncated)?;
        if n == 0 {
            return Err(truncated);
        }
        let start = got.len();
        got.extend_from_slice(buf.get(..n).unwrap_or_default());
        let (take, done) = match proxyproto::parse(&got, accept) {
            Parsed::Header(h) => (h.len.saturating_sub(start), Some(h)),
            Parsed::Error(e) => return Err(e),
            // Every byte so far is header: consume them (the next peek waits for more).
            Parsed::Incomplete => (n, None),
        };
        let into = buf.get_mut(..take).unwrap_or_default();
        s.read_exact(into).await.map_err(|_| truncated)?;
        if let Some(h) = done {
            return Ok(h);
        }
    }
}

/// The client side as it will be forwarded: TLS terminated when `-E` is in force (a failed
/// or timed-out handshake closes the client before any server is chosen), and the
/// X-Forwarded-For rewriter when `-H` / `http` is on.
async fn front_of(
    client_stream: Stream,
    client: &Client,
    who: &str,
    shared: &SharedState,
) -> Option<(Front, Option<Rewriter>)> {
    let (tls, http) = {
        let g = lock(shared);
        (g.io.tls.clone(), g.config.http)
    };
    let front = match tls {
        // Boxed: the handshake state is large and plain connections should not carry it.
        Some(t) => match Box::pin(t.accept(client_stream)).await {
            Ok(s) => Front::Tls(Box::new(s)),
            Err(e) => {
                tracing::debug!("{who}: TLS handshake failed: {e}");
                return None;
            }
        },
        None => Front::Plain(client_stream),
    };
    let rewriter = http.then(|| {
        let proto = if front.is_tls() {
            Proto::Https
        } else {
            Proto::Http
        };
        // Unix-socket clients have no address; "unknown" is the customary placeholder.
        let addr = client
            .ip
            .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        Rewriter::new(addr, proto)
    });
    Some((front, rewriter))
}

/// `-l` with TLS: the request log cannot peek at ciphertext, so it gets the first decrypted
/// bytes from the copy path instead. Plain connections are not handled here (the request
/// log peeks at their socket).
fn tls_request_log<'a>(
    front: &Front,
    client: &Client,
    target: Target,
    shared: &SharedState,
) -> Option<FirstChunk<'a>> {
    if !front.is_tls() {
        return None;
    }
    let log = request_logger(client, target, shared)?;
    Some(Box::new(move |chunk: &[u8]| log(chunk)))
}

/// `-l`: a logger of one connection's first request (client, server and the time of the
/// call), when a request log is open. Used by the TLS copy path and the io_uring loop.
pub(crate) fn request_logger(
    client: &Client,
    target: Target,
    shared: &SharedState,
) -> Option<impl Fn(&[u8]) + Send + 'static> {
    let log = crate::reqlog::current()?;
    let server = lock(shared)
        .balancer
        .addr(target)
        .map(crate::reqlog::backend_text)
        .unwrap_or_default();
    let client = client
        .ip
        .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    Some(move |chunk: &[u8]| {
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Err(e) = log.log(&client, &server, unix_time, chunk) {
            tracing::warn!("request log: {e}");
        }
    })
}

/// Walks the candidates: the first connect that succeeds wins. Each attempt is reported to the
/// balancer (started, then ok or failed). A connect that fails for want of local resources
/// (descriptors, ports, memory) is abandoned without blaming the server: the task waits for a
/// connection to close and tries the same server again, until the `-t` connect timeout.
async fn connect_first(
    candidates: &[Target],
    client: &Client,
    who: &str,
    shared: &SharedState,
    limits: &Limits,
    settings: &ConnSettings,
) -> Option<(Target, Stream)> {
    let mut short_until: Option<Instant> = None;
    for &target in candidates {
        loop {
            match try_connect(target, client, who, shared, limits, settings).await {
                Tried::Connected(stream) => return Some((target, stream)),
                Tried::Next => break,
                Tried::GiveUp => return None,
                Tried::Short => {
                    let deadline = *short_until
                        .get_or_insert_with(|| Instant::now() + settings.connect_timeout);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        tracing::debug!("{who}: no descriptors within the connect timeout");
                        return None;
                    }
                    limits.fds.wait(left.min(BACKOFF_MAX)).await;
                }
            }
        }
    }
    None
}

/// What one connect attempt to a candidate came to.
enum Tried {
    Connected(Stream),
    /// This candidate is out (unavailable now, failed, or refused by `transparent`).
    Next,
    /// Pen is short of descriptors, ports or memory: try the same candidate again later.
    Short,
    /// No candidate can work (`transparent` without the capability).
    GiveUp,
}

/// One connect to `target`, reported to the balancer: ok, failed (blacklisted), or abandoned
/// when the failure is not the server's (a local shortage, a refusal inside pen).
async fn try_connect(
    target: Target,
    client: &Client,
    who: &str,
    shared: &SharedState,
    limits: &Limits,
    settings: &ConnSettings,
) -> Tried {
    let addr: Option<BackendAddr> = {
        let mut g = lock(shared);
        let t = now();
        // Re-check: limits and blacklists may have changed since `select`.
        if !g.balancer.try_server(target, client, t) {
            return Tried::Next;
        }
        let addr = g.balancer.addr(target).cloned();
        if addr.is_some() {
            g.balancer.connect_started(client, target, t);
        }
        addr
    };
    let Some(addr) = addr else {
        return Tried::Next;
    };
    let attempt = Attempt {
        shared,
        target,
        done: false,
    };
    let permit: Option<OwnedSemaphorePermit> = limits.pending.clone().acquire_owned().await.ok();
    let upstream = UpstreamOptions {
        client: client.ip,
        ..settings.upstream
    };
    let result = sockets::connect(&addr, &upstream, settings.connect_timeout).await;
    drop(permit);
    let e = match result {
        Ok(stream) => {
            attempt.finish(Ok(()));
            tracing::debug!("{who}: connected to {target:?} at {}", show(&addr));
            return Tried::Connected(stream);
        }
        Err(e) => e,
    };
    if let Some(t) = transparent::error_of(&e) {
        // Logged and counted once. A local refusal (capability, bind) is not the backend's
        // fault; a timeout from the client's address is blacklisted like any other.
        transparent::record(shared, who, t);
        if t.is_local() {
            drop(attempt); // abandoned: not blacklisted
            return if t.affects_every_backend() {
                Tried::GiveUp
            } else {
                Tried::Next
            };
        }
        attempt.finish(Err(
            "connect from the client's address failed (transparent proxy, logged above)",
        ));
        return Tried::Next;
    }
    if resources::is_local_resource_error(&e) {
        drop(attempt); // abandoned: pen's shortage, not the server's failure
        shortage(shared, &format!("{who}: connect to {}", show(&addr)), &e);
        limits.fds.short.store(true, Ordering::Relaxed);
        return Tried::Short;
    }
    tracing::info!(
        "{who}: connect to {target:?} at {} failed: {e}",
        show(&addr)
    );
    attempt.finish(Err(&format!("connect failed: {e}")));
    Tried::Next
}

fn show(addr: &BackendAddr) -> String {
    match addr {
        BackendAddr::Inet(sa) => sa.to_string(),
        BackendAddr::Unix(p) => p.display().to_string(),
    }
}

/// A connect in progress. Reports its outcome once; if the task is dropped before that (pen
/// shutting down), the balancer is told the attempt was abandoned so its pending count stays
/// right.
struct Attempt<'a> {
    shared: &'a SharedState,
    target: Target,
    done: bool,
}

impl Attempt<'_> {
    /// Reports the outcome (`Err` says why it failed); a server that goes down or comes back
    /// with it is logged now.
    fn finish(mut self, result: Result<(), &str>) {
        self.done = true;
        let mut g = lock(self.shared);
        let t = now();
        match result {
            Ok(()) => {
                g.balancer.connect_ok(self.target, t);
                recovered(&mut g, t);
                crate::proxy::log_server_events(&mut g, None);
            }
            Err(reason) => {
                g.balancer.connect_failed(self.target, t);
                crate::proxy::log_server_events(&mut g, Some((self.target, reason)));
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(self.shared).balancer.connect_abandoned(self.target);
        }
    }
}

/// An established connection: reports `closed` with the byte counts when dropped, however the
/// task ends (normal close, error, or cancellation).
struct Established<'a> {
    shared: &'a SharedState,
    target: Target,
    client: Client,
    counters: &'a Counters,
    table: &'a ConnTable,
    idx: usize,
}

impl Drop for Established<'_> {
    fn drop(&mut self) {
        let (sx, rx) = (self.counters.to_server(), self.counters.from_server());
        let mut g = lock(self.shared);
        g.balancer.closed(self.target, &self.client, sx, rx, now());
        // Under the same lock: the bytes are now in the server's totals, not open any more.
        self.table.bytes_reported(self.idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_v4_client_is_tracked_as_v4() {
        let c = client_of("[::ffff:127.0.0.2]:4000".parse().unwrap());
        assert_eq!(c.ip, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(c.port, 4000);
    }

    #[test]
    fn conn_table_reuses_freed_slots_and_reports_rows() {
        let t = ConnTable::default();
        let entry = |c: &str| ConnEntry {
            client: c.to_string(),
            downfd: 7,
            upfd: -1,
            target: None,
            counters: Arc::new(Counters::default()),
            abort: None,
            remote: None,
            open: true,
        };
        let a = t.insert(entry("a"));
        let b = t.insert(entry("b"));
        assert_eq!((a, b), (0, 1));
        t.update(b, |e| e.target = Some(Target::Emergency));
        t.remove(a);
        assert!(!t.close(a), "a removed slot cannot be closed");
        assert_eq!(t.insert(entry("c")), 0);
        let rows = t.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].client.as_str(), rows[1].server), ("b", -2));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn limits_follow_config_and_never_zero() {
        let cfg = Config {
            conn_max: 0,
            pending_max: 7,
            ..Config::default()
        };
        let l = Limits::new(&cfg);
        assert_eq!(l.conn_slots.available_permits(), 1);
        assert_eq!(l.pending.available_permits(), 7);
    }

    #[test]
    fn settings_copy_socket_options_and_timeouts() {
        let cfg = Config {
            connect_timeout_secs: 0,
            idle_timeout_secs: 5,
            tcp_nodelay: true,
            keepalive: true,
            ..Config::default()
        };
        let s = ConnSettings::of(&cfg);
        assert_eq!(s.connect_timeout, Duration::from_secs(1));
        assert_eq!(s.forward.idle_timeout, Some(Duration::from_secs(5)));
        assert!(s.upstream.nodelay && s.upstream.keepalive && s.client_nodelay);
        let off = ConnSettings::of(&Config::default());
        assert_eq!(off.forward.idle_timeout, None);
    }
}
