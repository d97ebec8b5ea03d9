//! The io_uring event loop: one thread, one ring, owning the listening socket and every
//! connection it accepted (see the module docs of [`crate::proxy::uring`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::Socket;
use tokio::sync::OwnedSemaphorePermit;

use super::glue::{self, AfterFailure, Settings};
use super::slab::{Key, Op, Slab, token, untoken};
use super::timers::Wheel;
use crate::config::{BackendAddr, FastClose};
use crate::proxy::SharedState;
use crate::proxy::forward::Counters;
use crate::proxy::tcp::{ConnTable, Limits, RemoteClose, client_of};
use crate::select::{Client, Target};
use crate::sys::uring::{Completion, Ring, adopt_accepted};

/// Submission queue entries of the ring.
const SQ_ENTRIES: u32 = 1024;
/// Receive buffers (a power of two) and their size, shared by all connections (an idle one
/// holds none). 64 KiB: a direction sends one buffer at a time, so the size sets the bytes per
/// send on bulk transfers; in the lab bench (3 repetitions, side by side) 64 KiB against 16 KiB
/// took 1 MiB keep-alive downloads from 0.92x to 1.08x C Pen and 4x3 parallel 100 MiB from
/// 1.01x to 1.49x, with small requests, idle RSS and memory per idle connection unchanged
/// (the pool's 16 MiB is address space; pages become resident only as they are used).
const BUFFERS: u16 = 256;
const BUF_SIZE: u32 = 64 * 1024;
/// Single-shot accepts kept in flight on the listener. Each carries its own address buffer,
/// so the peer comes with the completion (no `getpeername`); a completed one is re-armed in
/// the same turn, and its submission accepts at once when the backlog is not empty.
const ACCEPTS: u32 = 1;
/// The loop's clock tick: connect and idle timeouts, queued connections, a paused accept.
const TICK: Duration = Duration::from_millis(200);
/// The wait of an idle loop (no connection, none queued, the accept armed): nothing is due,
/// and a client, `close N` or a stop wakes it through the ring. (A `conn_max` raised at run
/// time matters only once clients queue, which ends the idleness.)
const IDLE_WAIT: Duration = Duration::from_secs(2);
/// Slots of the timer wheel (ticks in one turn: 51.2 s; later timers wait for their turn).
const WHEEL_SLOTS: usize = 256;

/// A timeout filed in the loop's wheel; checked against its connection when it expires.
#[derive(Debug, Clone, Copy)]
struct Timer {
    key: Key,
    kind: TimerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    /// The connect attempt with this number (`Conn::attempts`) times out.
    Connect(u32),
    /// The idle timeout, counted from the connection's last activity.
    Idle,
}

/// What other threads ask of the loop (`close N`, stop), and the socket that wakes it.
pub(crate) struct Control {
    closes: Mutex<Vec<Key>>,
    stop: AtomicBool,
    /// Set (and `closed_cv` notified) once the loop has closed its listener after a stop.
    listener_closed: Mutex<bool>,
    closed_cv: std::sync::Condvar,
    waker: UnixStream,
    woken: UnixStream,
}

impl Control {
    pub(crate) fn new() -> io::Result<Control> {
        let (waker, woken) = UnixStream::pair()?;
        waker.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        Ok(Control {
            closes: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            listener_closed: Mutex::new(false),
            closed_cv: std::sync::Condvar::new(),
            waker,
            woken,
        })
    }

    fn wake(&self) {
        // A full socket buffer means a wake-up is pending already.
        let _ = (&self.waker).write(&[1]);
    }

    /// `close N` of connection `key`.
    pub(crate) fn close(&self, key: Key) {
        self.closes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(key);
        self.wake();
    }

    /// Stop accepting (the listener was replaced or pen is exiting); open connections carry
    /// on and the loop ends when the last one closes.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Waits up to `bound` for the loop to close its listener after [`Control::stop`]: its
    /// accept is cancelled and the socket closed, so the port is free at once. (A process that
    /// exits with an accept still in the ring keeps the socket listening until the kernel's
    /// ring clean-up runs after the exit, and a restarted pen may find the port busy.)
    pub(crate) fn wait_listener_closed(&self, bound: Duration) -> bool {
        let g = self
            .listener_closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (g, _) = self
            .closed_cv
            .wait_timeout_while(g, bound, |closed| !*closed)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *g
    }

    /// The loop closed its listener (or ended).
    pub(crate) fn listener_closed(&self) {
        *self
            .listener_closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.closed_cv.notify_all();
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted; waiting for a `conn_max` slot.
    Queued,
    /// Waiting for a `pending_max` permit before its next connect.
    WaitPending,
    Connecting,
    Open,
    /// Operations are being cancelled; freed when none is in flight.
    Closing,
}

/// Received buffers a direction may hold while its destination is slow before its multishot
/// receive is cancelled (re-armed once they are sent).
const QUEUE_MAX: usize = 4;

/// One direction's state: `Up` = client → server (index 0), `Down` = server → client (1).
#[derive(Debug, Default, Clone)]
struct Dir {
    /// Its source sent EOF and everything before it was sent on.
    eof: bool,
    /// EOF came while buffers were still queued: applied once they are sent.
    eof_pending: bool,
    /// The buffer being sent to the destination: id, bytes sent, bytes received.
    sending: Option<(u16, u32, u32)>,
    /// Buffers received after it, in order (id, length); empty = no allocation.
    queue: VecDeque<(u16, u32)>,
    /// The multishot receive is armed on the source.
    recv_armed: bool,
    /// Its cancellation (back-pressure) was asked for.
    recv_cancelling: bool,
}

const UP: usize = 0;
const DOWN: usize = 1;

/// A connection's record.
struct Conn {
    client_sock: Socket,
    server_sock: Option<Socket>,
    client: Client,
    /// The client's address (formatted only when logged or listed).
    peer: SocketAddr,
    table: Option<usize>,
    counters: Arc<Counters>,
    settings: Option<Settings>,
    candidates: Vec<Target>,
    next: usize,
    phase: Phase,
    /// The target of the connect attempt in progress (started, not yet reported).
    attempt: Option<(Target, BackendAddr)>,
    /// Connected to this target (its close is reported with the byte counts).
    established: Option<Target>,
    inflight: u32,
    /// The first bytes of the connection have come (`-l` logs them if the client spoke first).
    spoke: bool,
    dirs: [Dir; 2],
    last: Instant,
    slot: Option<OwnedSemaphorePermit>,
    pending: Option<OwnedSemaphorePermit>,
    /// Out of descriptors (or ports, memory) since: the same candidate is retried when a
    /// connection closes, until the connect timeout (as the tokio path).
    short_since: Option<Instant>,
    /// Connect attempts submitted (numbers the connect timers).
    attempts: u32,
    /// The connect in flight was cancelled by its timer.
    connect_timed_out: bool,
}

impl Conn {
    fn fd(&self, dir_src: usize) -> Option<i32> {
        if dir_src == UP {
            Some(self.client_sock.as_raw_fd())
        } else {
            self.server_sock.as_ref().map(AsRawFd::as_raw_fd)
        }
    }
}

/// The loop's state.
pub(crate) struct Loop {
    ring: Ring,
    listener: Option<TcpListener>,
    /// Accepts in flight (at most [`ACCEPTS`]).
    accepts_armed: u32,
    /// Numbers the accepts' user data (unique among those in flight).
    accept_seq: u32,
    /// Accept was cancelled for want of a `conn_max` slot or of descriptors.
    accept_paused: bool,
    conns: Slab<Conn>,
    wait_slot: VecDeque<Key>,
    wait_pending: VecDeque<Key>,
    wait_buf: VecDeque<(Key, usize)>,
    /// Connections whose connect hit a local shortage, retried when descriptors free.
    wait_fds: VecDeque<Key>,
    shared: SharedState,
    limits: Limits,
    table: Arc<ConnTable>,
    control: Arc<Control>,
    now: Instant,
    /// Tick 0 of the timer wheel.
    epoch: Instant,
    timers: Wheel<Timer>,
    expired: Vec<Timer>,
    /// Receives that ended in EOF in this loop turn's completions (their user data): data
    /// received before such an EOF is sent with `MSG_MORE`, so that the half-close that
    /// follows goes out with it in one segment (the peer then also acknowledges both at once).
    eofs_this_turn: Vec<u64>,
}

const NO_KEY: Key = Key {
    idx: 0,
    generation: 0,
};

impl Loop {
    pub(crate) fn new(
        listener: TcpListener,
        shared: SharedState,
        limits: Limits,
        table: Arc<ConnTable>,
        control: Arc<Control>,
    ) -> io::Result<Loop> {
        // Blocking sockets: the ring does the waiting.
        listener.set_nonblocking(false)?;
        Ok(Loop {
            ring: Ring::new_single_thread(SQ_ENTRIES, BUFFERS, BUF_SIZE)?,
            listener: Some(listener),
            accepts_armed: 0,
            accept_seq: 0,
            accept_paused: false,
            conns: Slab::default(),
            wait_slot: VecDeque::new(),
            wait_pending: VecDeque::new(),
            wait_buf: VecDeque::new(),
            wait_fds: VecDeque::new(),
            shared,
            limits,
            table,
            control,
            now: Instant::now(),
            epoch: Instant::now(),
            timers: Wheel::new(WHEEL_SLOTS),
            expired: Vec::new(),
            eofs_this_turn: Vec::new(),
        })
    }

    /// Runs until stopped and every connection has closed; `Err` when the ring fails.
    pub(crate) fn run(&mut self) -> io::Result<()> {
        // This thread is the ring's only submitter from now on.
        self.ring.enable()?;
        self.ring
            .poll_in_multi(self.control.woken.as_raw_fd(), token(Op::Wake, NO_KEY))?;
        self.arm_accept();
        let mut cqes = Vec::with_capacity(256);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = if self.idle() {
                IDLE_WAIT
            } else {
                next_tick
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
            };
            self.ring.submit_and_wait(wait)?;
            self.ring.reap(&mut cqes);
            self.now = Instant::now();
            self.eofs_this_turn.clear();
            self.eofs_this_turn.extend(
                cqes.iter()
                    .filter(|c| {
                        c.result == 0
                            && matches!(
                                untoken(c.user_data),
                                Some((Op::RecvClient | Op::RecvServer, _))
                            )
                    })
                    .map(|c| c.user_data),
            );
            for c in cqes.drain(..) {
                self.complete(c);
            }
            if self.now >= next_tick {
                next_tick = self.now + TICK;
                self.tick();
            }
            if self.control.stop.load(Ordering::SeqCst) {
                self.stop_accepting();
                if self.conns.len() == 0 && self.accepts_armed == 0 {
                    // The last connections' closes are queued: hand them to the kernel.
                    self.ring.submit()?;
                    return Ok(());
                }
            }
        }
    }

    fn arm_accept(&mut self) {
        if self.control.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(l) = &self.listener else { return };
        let fd = l.as_raw_fd();
        while self.accepts_armed < ACCEPTS {
            self.accept_seq = self.accept_seq.wrapping_add(1);
            let key = Key {
                idx: self.accept_seq,
                generation: 0,
            };
            match self.ring.accept(fd, token(Op::Accept, key)) {
                Ok(()) => {
                    self.accepts_armed += 1;
                    self.accept_paused = false;
                }
                Err(e) => {
                    tracing::warn!("io_uring: cannot arm accept: {e}");
                    return;
                }
            }
        }
    }

    fn pause_accept(&mut self) {
        if self.accepts_armed > 0
            && !self.accept_paused
            && let Some(l) = &self.listener
        {
            // Every accept in flight is on the listener.
            let _ = self
                .ring
                .cancel_fd(l.as_raw_fd(), token(Op::Cancel, NO_KEY));
        }
        self.accept_paused = true;
    }

    fn stop_accepting(&mut self) {
        if self.accepts_armed > 0 {
            self.pause_accept();
        } else {
            self.close_listener();
        }
    }

    /// Closes the listener once no accept is in flight on it (after a stop).
    fn close_listener(&mut self) {
        self.listener = None;
        self.control.listener_closed();
    }

    fn complete(&mut self, c: Completion) {
        let Some((op, key)) = untoken(c.user_data) else {
            self.drop_buf(c.buf);
            return;
        };
        match op {
            Op::Accept => self.accepted(c),
            Op::Wake => self.woken(c.more),
            Op::Cancel => {}
            _ => {
                if self.conns.get_mut(key).is_none() {
                    self.drop_buf(c.buf);
                    return;
                }
                self.conn_completion(op, key, c);
            }
        }
    }

    fn drop_buf(&mut self, buf: Option<u16>) {
        if let Some(b) = buf {
            self.ring.recycle(b);
            self.retry_bufs();
        }
    }

    fn accepted(&mut self, c: Completion) {
        self.accepts_armed = self.accepts_armed.saturating_sub(1);
        if c.result >= 0 {
            if let Some(fd) = adopt_accepted(c.result) {
                self.new_conn(fd, c.peer);
            }
        } else {
            let e = io::Error::from_raw_os_error(-c.result);
            if crate::proxy::resources::is_local_resource_error(&e) {
                glue::accept_shortage(&self.shared, &e);
                // Re-armed when a connection closes or at the next tick.
                self.pause_accept();
            } else if c.result != -libc::ECANCELED {
                tracing::debug!("accept failed: {e}");
            }
        }
        if self.control.stop.load(Ordering::SeqCst) {
            if self.accepts_armed == 0 {
                self.close_listener();
            }
        } else if !self.accept_paused {
            self.arm_accept();
        }
    }

    fn woken(&mut self, more: bool) {
        let mut sink = [0u8; 64];
        while matches!((&self.control.woken).read(&mut sink), Ok(n) if n > 0) {}
        let closes = std::mem::take(
            &mut *self
                .control
                .closes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for k in closes {
            if self.conns.get_mut(k).is_some() {
                tracing::debug!("close: connection closed by request");
                self.teardown(k);
            }
        }
        if !more {
            let _ = self
                .ring
                .poll_in_multi(self.control.woken.as_raw_fd(), token(Op::Wake, NO_KEY));
        }
    }

    /// A new client; `peer` from the accept completion (asked of the socket when missing).
    fn new_conn(&mut self, fd: OwnedFd, peer: Option<SocketAddr>) {
        let sock = Socket::from(fd);
        let Some(peer) = peer.or_else(|| sock.peer_addr().ok().and_then(|a| a.as_socket())) else {
            // Gone already.
            return;
        };
        tracing::debug!("accepted {peer}");
        let conn = Conn {
            client_sock: sock,
            server_sock: None,
            client: client_of(peer),
            peer,
            table: None,
            counters: Arc::new(Counters::default()),
            settings: None,
            candidates: Vec::new(),
            next: 0,
            phase: Phase::Queued,
            attempt: None,
            established: None,
            inflight: 0,
            spoke: false,
            dirs: [Dir::default(), Dir::default()],
            last: self.now,
            slot: None,
            pending: None,
            short_since: None,
            attempts: 0,
            connect_timed_out: false,
        };
        let Some(key) = self.conns.insert(conn) else {
            return;
        };
        match self.limits.conn_slots.clone().try_acquire_owned() {
            Ok(p) => {
                if let Some(c) = self.conns.get_mut(key) {
                    c.slot = Some(p);
                }
                self.start(key);
            }
            Err(_) => {
                // The table is full: this client waits, and so does the backlog.
                self.wait_slot.push_back(key);
                self.pause_accept();
            }
        }
    }

    /// A connection that has its `conn_max` slot: listed, selected, connecting.
    fn start(&mut self, key: Key) {
        let control = self.control.clone();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let close = RemoteClose(Arc::new(move || control.close(key)));
        c.table = Some(glue::register(
            &self.table,
            c.peer.to_string(),
            c.client_sock.as_raw_fd(),
            c.counters.clone(),
            close,
        ));
        let (candidates, settings) = glue::select(&self.shared, &c.client);
        if candidates.is_empty() {
            tracing::debug!("{}: no server available; closing the client", c.peer);
            self.teardown(key);
            return;
        }
        if settings.client_nodelay
            && let Err(e) = c.client_sock.set_tcp_nodelay(true)
        {
            tracing::debug!("{}: TCP_NODELAY on the client socket failed: {e}", c.peer);
        }
        c.candidates = candidates;
        c.settings = Some(settings);
        self.connect_next(key);
    }

    /// Walks the candidates from `next`: the first whose socket can be set up gets a connect.
    fn connect_next(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Some(settings) = c.settings else { return };
        if c.pending.is_none() {
            match self.limits.pending.clone().try_acquire_owned() {
                Ok(p) => c.pending = Some(p),
                Err(_) => {
                    c.phase = Phase::WaitPending;
                    self.wait_pending.push_back(key);
                    return;
                }
            }
        }
        loop {
            let Some(&target) = c.candidates.get(c.next) else {
                tracing::debug!("{}: every candidate failed; closing the client", c.peer);
                self.teardown(key);
                return;
            };
            let Some(addr) = glue::begin_attempt(&self.shared, target, &c.client) else {
                c.next += 1;
                continue;
            };
            let sock = glue::upstream_socket(&addr, &settings.upstream);
            let (sock, sa) = match sock {
                Ok(s) => s,
                Err(e) => {
                    match glue::attempt_failed(&self.shared, &c.peer.to_string(), target, &addr, &e)
                    {
                        AfterFailure::Next => {
                            c.next += 1;
                            continue;
                        }
                        AfterFailure::Short => {
                            self.short(key);
                            return;
                        }
                        AfterFailure::GiveUp => {
                            self.teardown(key);
                            return;
                        }
                    }
                }
            };
            let r = self
                .ring
                .connect(sock.as_raw_fd(), sa, token(Op::Connect, key));
            if let Err(e) = r {
                tracing::warn!("{}: io_uring connect: {e}", c.peer);
                glue::attempt_abandoned(&self.shared, target);
                self.teardown(key);
                return;
            }
            c.inflight += 1;
            c.server_sock = Some(sock);
            c.attempt = Some((target, addr));
            c.phase = Phase::Connecting;
            c.attempts = c.attempts.wrapping_add(1);
            c.connect_timed_out = false;
            let timer = Timer {
                key,
                kind: TimerKind::Connect(c.attempts),
            };
            let due = self.due(self.now, settings.connect_timeout);
            self.timers.insert(timer, due);
            self.arm_recv(key, UP);
            return;
        }
    }

    fn conn_completion(&mut self, op: Op, key: Key, cq: Completion) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        // A multishot receive stays in flight until its last completion.
        let multishot = matches!(op, Op::RecvClient | Op::RecvServer) && cq.more;
        if !multishot {
            c.inflight = c.inflight.saturating_sub(1);
        }
        match op {
            Op::Connect => self.connect_done(key, cq.result),
            Op::RecvClient => self.received(key, UP, cq),
            Op::RecvServer => self.received(key, DOWN, cq),
            Op::SendServer => self.sent(key, UP, cq.result),
            Op::SendClient => self.sent(key, DOWN, cq.result),
            Op::Accept | Op::Wake | Op::Cancel => {}
        }
        self.maybe_free(key);
    }

    fn connect_done(&mut self, key: Key, result: i32) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        // The permit covers the connect only.
        let freed_pending = c.pending.take().is_some();
        let timed_out = std::mem::take(&mut c.connect_timed_out) && result == -libc::ECANCELED;
        let Some((target, addr)) = c.attempt.take() else {
            return;
        };
        if c.phase == Phase::Closing {
            glue::attempt_abandoned(&self.shared, target);
        } else if result == 0 {
            glue::attempt_ok(&self.shared, target);
            tracing::debug!("{}: connected to {target:?}", c.peer);
            let upfd = c.fd(DOWN).unwrap_or(-1);
            if let Some(i) = c.table {
                glue::connected(&self.table, i, target, upfd);
            }
            c.established = Some(target);
            c.phase = Phase::Open;
            c.last = self.now;
            if let Some(idle) = c.settings.and_then(|s| s.idle_timeout) {
                let due = self.due(self.now, idle);
                self.timers.insert(
                    Timer {
                        key,
                        kind: TimerKind::Idle,
                    },
                    due,
                );
            }
            self.flush_early(key);
            self.arm_recv(key, UP);
            self.arm_recv(key, DOWN);
        } else {
            let settings = c
                .settings
                .unwrap_or_else(|| glue::select(&self.shared, &c.client).1);
            let e = glue::connect_error(
                -result,
                timed_out,
                &addr,
                &settings.upstream,
                settings.connect_timeout,
            );
            c.server_sock = None;
            match glue::attempt_failed(&self.shared, &c.peer.to_string(), target, &addr, &e) {
                AfterFailure::Next => {
                    c.next += 1;
                    self.connect_next(key);
                }
                AfterFailure::Short => self.short(key),
                AfterFailure::GiveUp => self.teardown(key),
            }
        }
        if freed_pending {
            self.retry_pending();
        }
    }

    /// Connected: logs and sends what the client sent while the connect was in flight (or
    /// applies its EOF, or receives on).
    fn flush_early(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if let (false, Some(&(bid, len)), Some(t)) =
            (c.spoke, c.dirs[UP].queue.front(), c.established)
        {
            c.spoke = true;
            let chunk = self.ring.buf(bid, len as usize);
            glue::log_first_request(&self.shared, &c.client, t, chunk);
        }
        if c.dirs[UP].sending.is_none() {
            self.send_next(key, UP);
        }
    }

    /// A connect hit pen's own shortage: wait for a connection to close (or the tick) and try
    /// the same candidate again, until the connect timeout has passed since the first one.
    fn short(&mut self, key: Key) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let since = *c.short_since.get_or_insert(now);
        let limit = c.settings.map_or(Duration::ZERO, |s| s.connect_timeout);
        c.server_sock = None;
        if c.pending.take().is_some() {
            self.retry_pending();
        }
        if now.duration_since(since) >= limit {
            if let Some(c) = self.conns.get_mut(key) {
                tracing::debug!("{}: no descriptors within the connect timeout", c.peer);
            }
            self.teardown(key);
            return;
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.phase = Phase::WaitPending;
        }
        self.wait_fds.push_back(key);
        // Leave new clients in the backlog until descriptors are freed.
        self.pause_accept();
    }

    fn retry_fds(&mut self) {
        let n = self.wait_fds.len();
        for _ in 0..n {
            let Some(key) = self.wait_fds.pop_front() else {
                return;
            };
            self.connect_next(key);
        }
    }

    fn arm_recv(&mut self, key: Key, d: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let dir = &c.dirs[d];
        // The client's bytes are taken while the connect is in flight (queued, sent when it
        // completes): the request then follows the handshake at once, and the server finds
        // its new connection readable when it accepts it.
        let phase_ok = c.phase == Phase::Open || (d == UP && c.phase == Phase::Connecting);
        if !phase_ok || dir.eof || dir.eof_pending || dir.recv_armed || dir.queue.len() >= QUEUE_MAX
        {
            return;
        }
        let Some(fd) = c.fd(d) else { return };
        if self.ring.recv_multi(fd, token(recv_op(d), key)).is_ok() {
            c.inflight += 1;
            c.dirs[d].recv_armed = true;
            c.dirs[d].recv_cancelling = false;
        }
    }

    fn received(&mut self, key: Key, d: usize, cq: Completion) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if !cq.more {
            c.dirs[d].recv_armed = false;
        }
        // Before the connection to the server is open (connecting, or waiting to connect
        // again after a failed attempt) the client's bytes and EOF are kept for it.
        let connecting = d == UP && matches!(c.phase, Phase::Connecting | Phase::WaitPending);
        if c.phase != Phase::Open && !connecting {
            self.drop_buf(cq.buf);
            return;
        }
        if cq.result > 0 {
            let Some(bid) = cq.buf else {
                self.teardown(key);
                return;
            };
            c.last = self.now;
            let len = cq.result.unsigned_abs();
            if !c.spoke && !connecting {
                c.spoke = true;
                if let (UP, Some(t)) = (d, c.established) {
                    let chunk = self.ring.buf(bid, len as usize);
                    glue::log_first_request(&self.shared, &c.client, t, chunk);
                }
            }
            let dir = &mut c.dirs[d];
            if !connecting && dir.sending.is_none() && dir.queue.is_empty() {
                self.send(key, d, bid, 0, len);
            } else {
                dir.queue.push_back((bid, len));
                if dir.queue.len() >= QUEUE_MAX && dir.recv_armed && !dir.recv_cancelling {
                    // The destination is slow: stop taking buffers for this direction.
                    dir.recv_cancelling = true;
                    let _ = self
                        .ring
                        .cancel(token(recv_op(d), key), token(Op::Cancel, key));
                }
            }
            if !cq.more {
                self.arm_recv(key, d);
            }
        } else if cq.result == 0 {
            let dir = &mut c.dirs[d];
            let drained = !connecting && dir.sending.is_none() && dir.queue.is_empty();
            if !drained {
                dir.eof_pending = true;
            }
            self.drop_buf(cq.buf);
            if drained {
                self.eof(key, d);
            }
        } else if cq.result == -libc::ENOBUFS {
            // Every buffer is in use: receive again when one comes back.
            self.wait_buf.push_back((key, d));
        } else if cq.result == -libc::ECANCELED {
            // Back-pressure: re-armed when the queue is sent.
            self.arm_recv(key, d);
        } else {
            tracing::debug!(
                "{}: closed on error: {}",
                c.peer,
                io::Error::from_raw_os_error(-cq.result)
            );
            self.drop_buf(cq.buf);
            self.teardown(key);
        }
    }

    fn send(&mut self, key: Key, d: usize, bid: u16, off: u32, len: u32) {
        let Some(c) = self.conns.get_mut(key) else {
            self.drop_buf(Some(bid));
            return;
        };
        let (dst, op) = if d == UP {
            (c.fd(DOWN), Op::SendServer)
        } else {
            (c.fd(UP), Op::SendClient)
        };
        // The last bytes before the source's EOF: held for the half-close that follows.
        let dir = &c.dirs[d];
        let more = dir.queue.is_empty()
            && (dir.eof_pending || self.eofs_this_turn.contains(&token(recv_op(d), key)));
        let Some(dst) = dst else {
            self.drop_buf(Some(bid));
            self.teardown(key);
            return;
        };
        match self
            .ring
            .send_buf(dst, bid, off, len.saturating_sub(off), more, token(op, key))
        {
            Ok(()) => {
                c.inflight += 1;
                c.dirs[d].sending = Some((bid, off, len));
                // Counted when handed to the kernel: the peer may read the bytes before the
                // loop sees the send complete, and the reports must already show them.
                if off == 0 {
                    if d == UP {
                        c.counters.add_to_server(u64::from(len));
                    } else {
                        c.counters.add_from_server(u64::from(len));
                    }
                }
            }
            Err(e) => {
                tracing::debug!("{}: io_uring send: {e}", c.peer);
                self.drop_buf(Some(bid));
                self.teardown(key);
            }
        }
    }

    fn sent(&mut self, key: Key, d: usize, result: i32) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Some((bid, off, len)) = c.dirs[d].sending.take() else {
            return;
        };
        if c.phase != Phase::Open || result <= 0 {
            let open = c.phase == Phase::Open;
            if open {
                tracing::debug!(
                    "{}: closed on error: {}",
                    c.peer,
                    io::Error::from_raw_os_error(-result)
                );
            }
            self.drop_buf(Some(bid));
            if open {
                self.teardown(key);
            }
            return;
        }
        let n = result.unsigned_abs();
        c.last = self.now;
        let off = off + n;
        if off < len {
            self.send(key, d, bid, off, len);
            return;
        }
        self.drop_buf(Some(bid));
        self.send_next(key, d);
    }

    /// Direction `d` has nothing in flight: sends its next queued buffer, or applies the EOF
    /// that came after the queue, or receives again.
    fn send_next(&mut self, key: Key, d: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let dir = &mut c.dirs[d];
        if let Some((next, n)) = dir.queue.pop_front() {
            self.send(key, d, next, 0, n);
        } else if dir.eof_pending {
            dir.eof_pending = false;
            self.eof(key, d);
        } else {
            self.arm_recv(key, d);
        }
    }

    /// The source of direction `d` closed its side: half-close the destination, or close
    /// everything (`tcp_fastclose`, or both directions done).
    fn eof(&mut self, key: Key, d: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.dirs[d].eof = true;
        let fastclose = c.settings.map_or(FastClose::Off, |s| s.fastclose);
        let close_all = match d {
            UP => matches!(fastclose, FastClose::Down | FastClose::Both),
            _ => matches!(fastclose, FastClose::Up | FastClose::Both),
        };
        if close_all || (c.dirs[UP].eof && c.dirs[DOWN].eof) {
            tracing::debug!(
                "{}: closed; {} bytes to the server, {} back",
                c.peer,
                c.counters.to_server(),
                c.counters.from_server()
            );
            self.teardown(key);
            return;
        }
        // A plain system call: io_uring runs IORING_OP_SHUTDOWN in a worker thread (it cannot
        // be issued without blocking), which costs more than the call.
        let dst = if d == UP {
            c.server_sock.as_ref()
        } else {
            Some(&c.client_sock)
        };
        if let Some(s) = dst
            && let Err(e) = s.shutdown(std::net::Shutdown::Write)
            && e.kind() != io::ErrorKind::NotConnected
        {
            tracing::debug!("{}: half-close failed: {e}", c.peer);
        }
    }

    /// Starts closing: cancels what is in flight; the record goes when nothing is.
    fn teardown(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.phase == Phase::Closing {
            return;
        }
        let queued = matches!(c.phase, Phase::Queued | Phase::WaitPending);
        c.phase = Phase::Closing;
        if c.inflight > 0 {
            let fds = [c.fd(UP), c.fd(DOWN)];
            for fd in fds.into_iter().flatten() {
                let _ = self.ring.cancel_fd(fd, token(Op::Cancel, key));
            }
        }
        if queued {
            self.wait_slot.retain(|k| *k != key);
            self.wait_pending.retain(|k| *k != key);
            self.wait_fds.retain(|k| *k != key);
        }
        self.maybe_free(key);
    }

    /// Frees a closing connection once no operation of it is in flight: reports it, unlists
    /// it, closes its sockets, returns its permits.
    fn maybe_free(&mut self, key: Key) {
        match self.conns.get_mut(key) {
            Some(c) if c.phase == Phase::Closing && c.inflight == 0 => {}
            _ => return,
        }
        let Some(c) = self.conns.remove(key) else {
            return;
        };
        if let Some((target, _)) = &c.attempt {
            glue::attempt_abandoned(&self.shared, *target);
        }
        if let Some(i) = c.table {
            if let Some(t) = c.established {
                glue::closed(&self.shared, &self.table, i, t, &c.client, &c.counters);
            }
            glue::unregister(&self.table, i);
        }
        for d in &c.dirs {
            if let Some((bid, _, _)) = d.sending {
                self.ring.recycle(bid);
            }
            for &(bid, _) in &d.queue {
                self.ring.recycle(bid);
            }
        }
        let Conn {
            client_sock,
            server_sock,
            slot,
            pending,
            ..
        } = c;
        let had_slot = slot.is_some();
        let had_pending = pending.is_some();
        drop((slot, pending));
        // The closes go in the ring with the next submission (no system call each).
        self.ring
            .close(OwnedFd::from(client_sock), token(Op::Cancel, NO_KEY));
        if let Some(s) = server_sock {
            self.ring.close(OwnedFd::from(s), token(Op::Cancel, NO_KEY));
        }
        if had_pending {
            self.retry_pending();
        }
        // Its descriptors are free: connects that were short go first, then new clients.
        self.retry_fds();
        if had_slot {
            self.retry_slots();
        }
        self.retry_bufs();
    }

    fn retry_slots(&mut self) {
        while let Some(&key) = self.wait_slot.front() {
            let Ok(p) = self.limits.conn_slots.clone().try_acquire_owned() else {
                return;
            };
            self.wait_slot.pop_front();
            if let Some(c) = self.conns.get_mut(key) {
                c.slot = Some(p);
                self.start(key);
            }
        }
        if self.accept_paused && self.accepts_armed == 0 && self.wait_fds.is_empty() {
            self.arm_accept();
        }
    }

    fn retry_pending(&mut self) {
        while let Some(key) = self.wait_pending.pop_front() {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            match self.limits.pending.clone().try_acquire_owned() {
                Ok(p) => {
                    c.pending = Some(p);
                    self.connect_next(key);
                }
                Err(_) => {
                    self.wait_pending.push_front(key);
                    return;
                }
            }
        }
    }

    fn retry_bufs(&mut self) {
        // Each waiting receive is re-armed; one that still finds no buffer queues again.
        let n = self.wait_buf.len();
        for _ in 0..n {
            let Some((key, d)) = self.wait_buf.pop_front() else {
                return;
            };
            self.arm_recv(key, d);
        }
    }

    /// The wheel tick at which `after` has passed since `from` (rounded up: never early).
    fn due(&self, from: Instant, after: Duration) -> u64 {
        let at = from.saturating_duration_since(self.epoch) + after;
        let t = TICK.as_nanos();
        u64::try_from(at.as_nanos().div_ceil(t)).unwrap_or(u64::MAX)
    }

    /// The wheel tick `now` is in.
    fn tick_now(&self) -> u64 {
        let t = TICK.as_nanos();
        u64::try_from(self.now.saturating_duration_since(self.epoch).as_nanos() / t)
            .unwrap_or(u64::MAX)
    }

    /// Acts on the timers due: cancels a connect still in flight, closes an idle connection
    /// (or files its timer again from its last activity).
    fn expire_timers(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        self.timers.advance(self.tick_now(), &mut expired);
        for t in expired.drain(..) {
            let now = self.now;
            let Some(c) = self.conns.get_mut(t.key) else {
                continue;
            };
            match t.kind {
                TimerKind::Connect(n) => {
                    if c.phase == Phase::Connecting
                        && c.attempts == n
                        && c.attempt.is_some()
                        && !c.connect_timed_out
                    {
                        c.connect_timed_out = true;
                        let _ = self
                            .ring
                            .cancel(token(Op::Connect, t.key), token(Op::Cancel, t.key));
                    }
                }
                TimerKind::Idle => {
                    let Some(idle) = c.settings.and_then(|s| s.idle_timeout) else {
                        continue;
                    };
                    if c.phase != Phase::Open {
                        continue;
                    }
                    if now.duration_since(c.last) >= idle {
                        tracing::debug!("{}: idle timeout", c.peer);
                        self.teardown(t.key);
                    } else {
                        let last = c.last;
                        let due = self.due(last, idle);
                        self.timers.insert(t, due);
                    }
                }
            }
        }
        self.expired = expired;
    }

    /// Nothing for the tick to do: no connection (so none waiting in a queue), no timer left,
    /// the accept armed.
    fn idle(&self) -> bool {
        self.conns.len() == 0 && self.accepts_armed > 0 && self.timers.is_empty()
    }

    fn tick(&mut self) {
        self.expire_timers();
        // `conn_max` / `pending_max` may have grown; a shortage may be over.
        self.retry_fds();
        self.retry_slots();
        self.retry_pending();
        self.retry_bufs();
        if self.accepts_armed == 0 && self.wait_slot.is_empty() && self.wait_fds.is_empty() {
            self.arm_accept();
        }
    }
}

/// The multishot receive of direction `d` (its source: the client for `UP`).
fn recv_op(d: usize) -> Op {
    if d == UP {
        Op::RecvClient
    } else {
        Op::RecvServer
    }
}
