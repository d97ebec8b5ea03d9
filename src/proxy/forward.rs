//! Bidirectional forwarding of one client connection and one upstream connection.
//!
//! Two directions run concurrently in one task: client → server ("up") and server → client
//! ("down"). EOF from one side half-closes the other (`shutdown(SHUT_WR)`); the connection ends
//! when both directions are done, when the side chosen by `tcp_fastclose` closes, when nothing
//! moved for `idle_timeout`, or on the first error.
//!
//! Each direction starts with a copy loop through a per-thread scratch buffer: read once, write
//! what came in at once, keep only what the destination could not take (so an idle connection
//! holds no buffer and a small request/response costs two syscalls per chunk, no pipe). The
//! first read that fills the buffer marks bulk traffic: when both ends are TCP that direction
//! switches to `splice(2)` through its own pipe (zero copy) for the rest of the connection.
//! Unix sockets, or a pipe that cannot be created, stay on the copy loop.
//!
//! With TLS termination or `-H`, [`forward_front`] uses a copy path over `AsyncRead` /
//! `AsyncWrite` ([`forward_io`]): the client side may be a TLS stream, and the client → server
//! direction may run through the X-Forwarded-For [`Rewriter`]. Plain TCP without `-H` keeps
//! splice.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

// tokio's clock (the same as std's unless a test pauses it).
use tokio::time::Instant;

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

use crate::config::FastClose;
use crate::proxy::http::Rewriter;
use crate::proxy::read_draining;
use crate::proxy::sockets::shutdown_write;
use crate::sys::pipe::{Pipe, read as read_fd, splice};

/// Size of the copy loop's scratch buffer (C Pen's read buffer); a read that fills it switches
/// the direction to splice.
pub(crate) const COPY_BUF: usize = 32 * 1024;

/// Pipe capacity asked for with `F_SETPIPE_SZ` (best effort; the default is 64 KiB).
const PIPE_SIZE: usize = 256 * 1024;

/// Bytes moved per `splice` round when the pipe size cannot be read back.
const PIPE_CHUNK_DEFAULT: usize = 64 * 1024;

/// One end of a proxied connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Tcp(s)
    }
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Self {
        Stream::Unix(s)
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Stream {
    /// The raw descriptor number (for reports only).
    pub fn as_fd_raw(&self) -> i32 {
        self.as_fd().as_raw_fd()
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            Stream::Unix(s) => s.readable().await,
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.writable().await,
            Stream::Unix(s) => s.writable().await,
        }
    }

    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Stream::Tcp(s) => s.try_io(interest, f),
            Stream::Unix(s) => s.try_io(interest, f),
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    /// Half-close: `shutdown(SHUT_WR)`.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The client side of a connection after accept: plain, or TLS terminated by pen.
#[derive(Debug)]
pub(crate) enum Front {
    Plain(Stream),
    Tls(Box<TlsStream<Stream>>),
}

impl Front {
    /// The client's socket under any TLS layer.
    pub fn socket(&self) -> &Stream {
        match self {
            Front::Plain(s) => s,
            Front::Tls(t) => t.get_ref().0,
        }
    }

    /// Whether pen terminated TLS on this connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Front::Tls(_))
    }
}

/// Called once with the first bytes read from the client (after TLS decryption, before any
/// rewriting): the request log's view of a connection it cannot peek at (TLS).
pub(crate) type FirstChunk<'a> = Box<dyn FnOnce(&[u8]) + Send + 'a>;

/// Forwards a client ([`Front`]) and its upstream: splice/copy as [`forward`] for a plain
/// client without a rewriter or tap, else [`forward_io`] (TLS and/or X-Forwarded-For).
pub(crate) async fn forward_front(
    client: Front,
    server: Stream,
    opts: &Options,
    counters: &Counters,
    rewriter: Option<Rewriter>,
    first: Option<FirstChunk<'_>>,
) -> io::Result<Ending> {
    match (client, rewriter, first) {
        (Front::Plain(c), None, None) => forward(c, server, opts, counters).await,
        // The copy paths are boxed: their state is large and only TLS or `-H` connections
        // pay for it (every connection task is as large as its largest state).
        (Front::Plain(c), rw, f) => Box::pin(forward_io(c, server, opts, counters, rw, f)).await,
        (Front::Tls(t), rw, f) => Box::pin(forward_io(*t, server, opts, counters, rw, f)).await,
    }
}

/// The copy path over any async streams: client → server through `rewriter` (if any),
/// server → client as is; EOF half-closes the other side (`shutdown`, which for a TLS client
/// also sends close_notify). Same endings as [`forward`].
pub(crate) async fn forward_io<C, S>(
    client: C,
    server: S,
    opts: &Options,
    counters: &Counters,
    rewriter: Option<Rewriter>,
    first: Option<FirstChunk<'_>>,
) -> io::Result<Ending>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new(opts);
    let (client_r, client_w) = tokio::io::split(client);
    let (server_r, server_w) = tokio::io::split(server);
    let up = pump_io(
        client_r,
        server_w,
        &counters.to_server,
        &activity,
        rewriter,
        first,
    );
    let down = pump_io(
        server_r,
        client_w,
        &counters.from_server,
        &activity,
        None,
        None,
    );
    run(up, down, opts, &activity).await
}

/// One direction of [`forward_io`].
async fn pump_io<R, W>(
    mut src: R,
    mut dst: W,
    counter: &AtomicU64,
    activity: &Activity,
    mut rewriter: Option<Rewriter>,
    mut first: Option<FirstChunk<'_>>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUF];
    let mut out = Vec::new();
    loop {
        let n = match src.read(&mut buf).await {
            Ok(n) => n,
            // A TLS peer that closes TCP without close_notify: treat as EOF (curl and
            // browsers often do; the bytes already received were authenticated).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        if n > 0
            && let Some(tap) = first.take()
        {
            tap(buf.get(..n).unwrap_or(&[]));
        }
        let data: &[u8] = match (&mut rewriter, n) {
            (Some(rw), 0) => {
                out.clear();
                rw.finish(&mut out);
                &out
            }
            (Some(rw), n) => {
                out.clear();
                rw.feed(buf.get(..n).unwrap_or(&[]), &mut out);
                &out
            }
            (None, n) => buf.get(..n).unwrap_or(&[]),
        };
        if n > 0 {
            activity.touch();
        }
        if !data.is_empty() {
            dst.write_all(data).await?;
            dst.flush().await?;
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            activity.touch();
        }
        if n == 0 {
            break;
        }
    }
    dst.shutdown().await
}

/// Live byte counters of one connection (readable while it runs, e.g. by the control plane).
#[derive(Debug, Default)]
pub struct Counters {
    to_server: AtomicU64,
    from_server: AtomicU64,
}

impl Counters {
    /// Bytes written to the server so far.
    pub fn to_server(&self) -> u64 {
        self.to_server.load(Ordering::Relaxed)
    }

    /// Bytes written to the client (received from the server) so far.
    pub fn from_server(&self) -> u64 {
        self.from_server.load(Ordering::Relaxed)
    }

    pub(crate) fn add_to_server(&self, n: u64) {
        self.to_server.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_from_server(&self, n: u64) {
        self.from_server.fetch_add(n, Ordering::Relaxed);
    }
}

/// How a connection is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `tcp_fastclose`: `Up` = close both sides when the server (upstream) closes, `Down` =
    /// when the client (downstream) closes, `Both` = either.
    pub fastclose: FastClose,
    /// `idle_timeout`; `None` = off.
    pub idle_timeout: Option<Duration>,
    /// Use `splice(2)` when both ends are TCP (default). `false` forces the copy loop.
    pub splice: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fastclose: FastClose::Off,
            idle_timeout: None,
            splice: true,
        }
    }
}

/// Which side of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The downstream side (the client).
    Client,
    /// The upstream side (the server).
    Server,
}

/// Why [`forward`] returned without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Both directions reached EOF and were half-closed.
    Finished,
    /// `tcp_fastclose` closed everything when this side closed.
    FastClose(Side),
    /// Nothing moved for `idle_timeout`.
    IdleTimeout,
}

/// Which path moved the bytes (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Splice,
    Copy,
}

/// Last time any byte moved, in milliseconds since `base`; kept only when the connection has
/// an idle timeout (the clock read on every round was 1 % of pen's CPU per keep-alive request).
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    on: bool,
}

impl Activity {
    fn new(opts: &Options) -> Self {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            on: opts.idle_timeout.is_some_and(|d| !d.is_zero()),
        }
    }

    fn touch(&self) {
        if !self.on {
            return;
        }
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Forwards between `client` and `server` until the connection ends; see the module doc.
/// Both streams are closed when it returns (which is why the direction that reaches EOF
/// second does not half-close). Byte counts are in `counters`.
pub async fn forward(
    client: Stream,
    server: Stream,
    opts: &Options,
    counters: &Counters,
) -> io::Result<Ending> {
    forward_with_method(client, server, opts, counters)
        .await
        .map(|(e, _)| e)
}

/// [`forward`], also reporting which method moved the bytes: `Splice` when at least one
/// direction switched to `splice(2)`.
pub(crate) async fn forward_with_method(
    client: Stream,
    server: Stream,
    opts: &Options,
    counters: &Counters,
) -> io::Result<(Ending, Method)> {
    let shared = Shared::new(opts);
    let splice_ok = opts.splice && matches!((&client, &server), (Stream::Tcp(_), Stream::Tcp(_)));
    let up = pump(&client, &server, splice_ok, &counters.to_server, &shared);
    let down = pump(&server, &client, splice_ok, &counters.from_server, &shared);
    let ending = run(up, down, opts, &shared.activity).await?;
    let method = if shared.spliced.load(Ordering::Relaxed) {
        Method::Splice
    } else {
        Method::Copy
    };
    Ok((ending, method))
}

async fn run(
    up: impl Future<Output = io::Result<()>>,
    down: impl Future<Output = io::Result<()>>,
    opts: &Options,
    activity: &Activity,
) -> io::Result<Ending> {
    let close_on_client = matches!(opts.fastclose, FastClose::Down | FastClose::Both);
    let close_on_server = matches!(opts.fastclose, FastClose::Up | FastClose::Both);
    let idle = async {
        match opts.idle_timeout {
            // Boxed: only connections with an idle timeout carry the timer.
            Some(d) if !d.is_zero() => Box::pin(activity.idle_for(d)).await,
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(up, down, idle);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        tokio::select! {
            r = &mut up, if !up_done => {
                r?;
                up_done = true;
                if close_on_client {
                    return Ok(Ending::FastClose(Side::Client));
                }
            }
            r = &mut down, if !down_done => {
                r?;
                down_done = true;
                if close_on_server {
                    return Ok(Ending::FastClose(Side::Server));
                }
            }
            () = &mut idle => return Ok(Ending::IdleTimeout),
        }
        if up_done && down_done {
            return Ok(Ending::Finished);
        }
    }
}

/// State the two directions of one connection share.
struct Shared {
    activity: Activity,
    /// Some direction switched to splice.
    spliced: AtomicBool,
    /// Some direction reached EOF already.
    one_eof: AtomicBool,
}

impl Shared {
    fn new(opts: &Options) -> Self {
        Shared {
            activity: Activity::new(opts),
            spliced: AtomicBool::new(false),
            one_eof: AtomicBool::new(false),
        }
    }

    /// At EOF of one direction: half-close its destination so the peer sees EOF, unless the
    /// other direction ended already; then the connection is about to be closed whole and
    /// the `shutdown` would only cost a syscall.
    fn half_close<S: AsFd>(&self, dst: &S) -> io::Result<()> {
        if self.one_eof.swap(true, Ordering::Relaxed) {
            Ok(())
        } else {
            shutdown_write(dst)
        }
    }
}

thread_local! {
    /// The copy buffer of every connection served by this thread: a round reads into it and
    /// writes from it without awaiting in between, so an idle connection holds no buffer.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; COPY_BUF]);
}

/// What one synchronous read-then-write round of the copy path did.
enum Round {
    /// The source reached EOF.
    Eof,
    /// The source had nothing after all (spurious readiness).
    Again,
    /// `read` bytes came in; `written` of them went out at once, `pending` still has to.
    Moved {
        read: usize,
        written: usize,
        pending: Vec<u8>,
    },
}

/// Reads once from `src` into the thread's scratch buffer and writes what came in to `dst`
/// straight away; only bytes `dst` could not take are copied out (into `pending`).
///
/// A short read means the socket's receive queue is empty (a stream socket's read drains it up
/// to the buffer size), so it also clears the readiness ([`read_draining`]): the next round
/// waits for the next epoll edge instead of paying a `read` that ends in EAGAIN.
fn copy_round(src: &Stream, dst: &Stream) -> io::Result<Round> {
    SCRATCH.with_borrow_mut(|buf| {
        let (fd, len) = (src.as_fd_raw(), buf.len());
        let read = read_draining(
            |f| src.try_io(Interest::READABLE, f),
            || read_fd(fd, buf),
            |&n| n > 0 && n < len,
        );
        let n = match read {
            Ok((0, _)) => return Ok(Round::Eof),
            Ok((n, _)) => n,
            Err(e) if retry(&e) => return Ok(Round::Again),
            Err(e) => return Err(e),
        };
        let data = buf.get(..n).unwrap_or(&[]);
        let written = match dst.try_write(data) {
            Ok(w) => w,
            Err(e) if retry(&e) => 0,
            Err(e) => return Err(e),
        };
        let pending = data.get(written..).map(<[u8]>::to_vec).unwrap_or_default();
        Ok(Round::Moved {
            read: n,
            written,
            pending,
        })
    })
}

/// One direction: copy rounds through the thread's scratch buffer while the traffic is small
/// (requests, small replies: no pipe, two syscalls per chunk); the first read that fills the
/// buffer marks bulk traffic and, when `splice_ok`, switches this direction to `splice(2)`
/// through its own pipe for the rest of the connection. At EOF half-close `dst`.
async fn pump(
    src: &Stream,
    dst: &Stream,
    mut splice_ok: bool,
    counter: &AtomicU64,
    shared: &Shared,
) -> io::Result<()> {
    let activity = &shared.activity;
    loop {
        src.readable().await?;
        let (read, pending) = match copy_round(src, dst)? {
            Round::Eof => break,
            Round::Again => continue,
            Round::Moved {
                read,
                written,
                pending,
            } => {
                counter.fetch_add(written as u64, Ordering::Relaxed);
                (read, pending)
            }
        };
        activity.touch();
        write_all(dst, &pending, counter, activity).await?;
        if splice_ok
            && read == COPY_BUF
            && let (Stream::Tcp(s), Stream::Tcp(d)) = (src, dst)
        {
            match Pipe::new(PIPE_SIZE, PIPE_CHUNK_DEFAULT) {
                Ok(pipe) => {
                    shared.spliced.store(true, Ordering::Relaxed);
                    // Boxed: only bulk directions need the splice loop's state.
                    return Box::pin(pump_splice(s, d, &pipe, counter, shared)).await;
                }
                Err(e) => {
                    tracing::debug!("pipe creation failed ({e}); staying on the copy loop");
                    splice_ok = false;
                }
            }
        }
    }
    shared.half_close(dst)
}

/// Writes all of `data` to `dst`, waiting for room as needed.
async fn write_all(
    dst: &Stream,
    mut data: &[u8],
    counter: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    while !data.is_empty() {
        dst.writable().await?;
        match dst.try_write(data) {
            Ok(w) => {
                data = data.get(w..).unwrap_or(&[]);
                counter.fetch_add(w as u64, Ordering::Relaxed);
                activity.touch();
            }
            Err(e) if retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Splice loop for one direction: socket → pipe (only when the pipe is empty, so an EAGAIN
/// always comes from the socket), then pipe → socket until the pipe is empty; at EOF half-close
/// `dst`.
async fn pump_splice(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &Pipe,
    counter: &AtomicU64,
    shared: &Shared,
) -> io::Result<()> {
    let activity = &shared.activity;
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    loop {
        src.readable().await?;
        let mut in_pipe = match src.try_io(Interest::READABLE, || {
            splice(src_fd, pipe.write.as_raw_fd(), pipe.cap)
        }) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if retry(&e) => continue,
            Err(e) => return Err(e),
        };
        activity.touch();
        while in_pipe > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), dst_fd, in_pipe)
            }) {
                Ok(w) => {
                    in_pipe = in_pipe.saturating_sub(w);
                    counter.fetch_add(w as u64, Ordering::Relaxed);
                    activity.touch();
                }
                Err(e) if retry(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    shared.half_close(dst)
}

fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of TCP streams on loopback: (our end, the forwarder's end).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    fn unix_pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().unwrap()
    }

    /// Client sends `req`, half-closes; server reads everything, replies `reply`, closes.
    async fn exchange(
        mut client: impl AsyncReadExt + AsyncWriteExt + Unpin,
        mut server: impl AsyncReadExt + AsyncWriteExt + Unpin,
        req: Vec<u8>,
        reply: Vec<u8>,
    ) -> (Vec<u8>, Vec<u8>) {
        let c = async {
            client.write_all(&req).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        };
        let s = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            server.write_all(&reply).await.unwrap();
            server.shutdown().await.unwrap();
            got
        };
        tokio::join!(c, s)
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    async fn half_close_roundtrip(splice: bool) -> Method {
        let (client, fwd_client) = tcp_pair().await;
        let (fwd_server, server) = tcp_pair().await;
        let (fc, fs) = (Stream::Tcp(fwd_client), Stream::Tcp(fwd_server));
        let counters = Counters::default();
        let opts = Options {
            splice,
            ..Options::default()
        };
        let req = pattern(300_000, 1);
        let reply = pattern(500_000, 2);
        let fwd = forward_with_method(fc, fs, &opts, &counters);
        let ((got_reply, got_req), res) =
            tokio::join!(exchange(client, server, req.clone(), reply.clone()), fwd);
        let (ending, method) = res.unwrap();
        assert_eq!(ending, Ending::Finished);
        assert!(got_req == req, "server got a different request");
        assert!(got_reply == reply, "client got a different reply");
        assert_eq!(counters.to_server(), req.len() as u64);
        assert_eq!(counters.from_server(), reply.len() as u64);
        method
    }

    #[tokio::test]
    async fn splice_delivers_reply_after_client_half_close() {
        assert_eq!(half_close_roundtrip(true).await, Method::Splice);
    }

    #[tokio::test]
    async fn copy_delivers_reply_after_client_half_close() {
        assert_eq!(half_close_roundtrip(false).await, Method::Copy);
    }

    #[tokio::test]
    async fn small_exchange_stays_on_the_copy_loop_without_a_pipe() {
        let (client, fwd_client) = tcp_pair().await;
        let (fwd_server, server) = tcp_pair().await;
        let (fc, fs) = (Stream::Tcp(fwd_client), Stream::Tcp(fwd_server));
        let counters = Counters::default();
        let opts = Options::default();
        let fwd = forward_with_method(fc, fs, &opts, &counters);
        let req = pattern(500, 3);
        let reply = pattern(COPY_BUF - 1, 4);
        let ((got_reply, got_req), res) =
            tokio::join!(exchange(client, server, req.clone(), reply.clone()), fwd);
        assert_eq!(res.unwrap(), (Ending::Finished, Method::Copy));
        assert!(got_req == req && got_reply == reply);
        assert_eq!(counters.from_server(), reply.len() as u64);
    }

    #[tokio::test]
    async fn unix_ends_use_copy_loop() {
        let (client, fwd_client) = unix_pair();
        let (fwd_server, server) = tcp_pair().await;
        let (fc, fs) = (Stream::Unix(fwd_client), Stream::Tcp(fwd_server));
        let counters = Counters::default();
        let opts = Options::default();
        let fwd = forward_with_method(fc, fs, &opts, &counters);
        let ((reply, req), res) = tokio::join!(
            exchange(client, server, b"ping".to_vec(), b"pong".to_vec()),
            fwd
        );
        assert_eq!(res.unwrap(), (Ending::Finished, Method::Copy));
        assert_eq!(
            (req.as_slice(), reply.as_slice()),
            (&b"ping"[..], &b"pong"[..])
        );
    }

    #[tokio::test]
    async fn fastclose_down_closes_server_side_when_client_closes() {
        let (mut client, fwd_client) = tcp_pair().await;
        let (fwd_server, mut server) = tcp_pair().await;
        let (fc, fs) = (Stream::Tcp(fwd_client), Stream::Tcp(fwd_server));
        let opts = Options {
            fastclose: FastClose::Down,
            ..Options::default()
        };
        let counters = Counters::default();
        client.shutdown().await.unwrap();
        let ending = forward(fc, fs, &opts, &counters).await.unwrap();
        assert_eq!(ending, Ending::FastClose(Side::Client));
        // The server sees EOF although it never closed its side.
        let mut buf = Vec::new();
        server.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn without_fastclose_server_can_still_reply_after_client_eof() {
        let (mut client, fwd_client) = tcp_pair().await;
        let (fwd_server, mut server) = tcp_pair().await;
        let (fc, fs) = (Stream::Tcp(fwd_client), Stream::Tcp(fwd_server));
        let counters = Counters::default();
        client.shutdown().await.unwrap();
        let opts = Options::default();
        let fwd = forward(fc, fs, &opts, &counters);
        let srv = async {
            let mut b = Vec::new();
            server.read_to_end(&mut b).await.unwrap();
            server.write_all(b"late").await.unwrap();
            drop(server);
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        };
        let (ending, got) = tokio::join!(fwd, srv);
        assert_eq!(ending.unwrap(), Ending::Finished);
        assert_eq!(got, b"late");
    }

    /// On paused time: the timeout fires exactly when due, however slow the machine is.
    #[tokio::test(start_paused = true)]
    async fn idle_timeout_closes_a_silent_connection() {
        let (_client, fwd_client) = tcp_pair().await;
        let (fwd_server, _server) = tcp_pair().await;
        let (fc, fs) = (Stream::Tcp(fwd_client), Stream::Tcp(fwd_server));
        let opts = Options {
            idle_timeout: Some(Duration::from_millis(200)),
            ..Options::default()
        };
        let start = Instant::now();
        let ending = forward(fc, fs, &opts, &Counters::default()).await.unwrap();
        assert_eq!(ending, Ending::IdleTimeout);
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    /// On paused time: four messages 150 ms apart keep a 300 ms timeout from firing; it fires
    /// 300 ms after the last one.
    #[tokio::test(start_paused = true)]
    async fn idle_timeout_is_reset_by_traffic() {
        let (mut client, fwd_client) = tcp_pair().await;
        let (fwd_server, mut server) = tcp_pair().await;
        let (fc, fs) = (Stream::Tcp(fwd_client), Stream::Tcp(fwd_server));
        let opts = Options {
            idle_timeout: Some(Duration::from_millis(300)),
            ..Options::default()
        };
        let counters = Counters::default();
        let fwd = forward(fc, fs, &opts, &counters);
        let talk = async {
            let mut b = [0u8; 1];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                client.write_all(b"x").await.unwrap();
                server.read_exact(&mut b).await.unwrap();
            }
            Instant::now()
        };
        let start = Instant::now();
        let (ending, talked_until) = tokio::join!(fwd, talk);
        assert_eq!(ending.unwrap(), Ending::IdleTimeout);
        assert_eq!(talked_until - start, Duration::from_millis(600));
        assert_eq!(start.elapsed(), Duration::from_millis(900));
    }

    #[tokio::test]
    async fn copy_path_runs_the_rewriter_and_counts_what_reached_the_server() {
        let (client, fwd_client) = tcp_pair().await;
        let (fwd_server, server) = tcp_pair().await;
        let counters = Counters::default();
        let rw = Rewriter::new("192.0.2.7", crate::proxy::http::Proto::Http);
        let opts = Options::default();
        let first_seen = std::sync::Mutex::new(Vec::new());
        let tap: FirstChunk<'_> = Box::new(|b| first_seen.lock().unwrap().extend_from_slice(b));
        let fwd = forward_front(
            Front::Plain(Stream::Tcp(fwd_client)),
            Stream::Tcp(fwd_server),
            &opts,
            &counters,
            Some(rw),
            Some(tap),
        );
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n\r\n".to_vec();
        let ((reply, got), ending) =
            tokio::join!(exchange(client, server, req, b"ok".to_vec()), fwd);
        assert_eq!(ending.unwrap(), Ending::Finished);
        let got = String::from_utf8(got).unwrap();
        assert_eq!(
            got.matches("X-Forwarded-For: 192.0.2.7\r\n").count(),
            2,
            "{got}"
        );
        assert_eq!(reply, b"ok");
        assert_eq!(counters.to_server(), got.len() as u64);
        assert_eq!(counters.from_server(), 2);
        let first = first_seen.into_inner().unwrap();
        assert!(
            first.starts_with(b"GET / HTTP/1.1\r\n"),
            "the tap sees the client's bytes"
        );
        assert!(
            !first.windows(9).any(|w| w == b"Forwarded"),
            "before any rewriting"
        );
    }

    #[tokio::test]
    async fn copy_path_holds_an_incomplete_head_until_eof_then_forwards_it() {
        let (client, fwd_client) = tcp_pair().await;
        let (fwd_server, server) = tcp_pair().await;
        let counters = Counters::default();
        let rw = Rewriter::new("192.0.2.7", crate::proxy::http::Proto::Http);
        let opts = Options::default();
        let fwd = forward_io(
            Stream::Tcp(fwd_client),
            Stream::Tcp(fwd_server),
            &opts,
            &counters,
            Some(rw),
            None,
        );
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        let ((_, got), ending) = tokio::join!(exchange(client, server, req.clone(), vec![]), fwd);
        assert_eq!(ending.unwrap(), Ending::Finished);
        assert_eq!(got, req);
    }

    #[tokio::test]
    async fn reset_by_server_ends_with_error_or_finish_not_hang() {
        let (_client, fwd_client) = tcp_pair().await;
        let (fwd_server, server) = tcp_pair().await;
        let (fc, fs) = (Stream::Tcp(fwd_client), Stream::Tcp(fwd_server));
        let sock = socket2::SockRef::from(&server);
        sock.set_linger(Some(Duration::ZERO)).unwrap();
        drop(server);
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            forward(
                fc,
                fs,
                &Options {
                    fastclose: FastClose::Up,
                    ..Options::default()
                },
                &Counters::default(),
            ),
        )
        .await;
        assert!(r.is_ok(), "forward hung after a server reset");
    }
}
