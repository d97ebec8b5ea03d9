//! Helpers for integration tests on loopback: backends that answer with their own name and
//! record the peers they saw, an HTTP-ish client that can pick its source address, and a
//! handle on a `pen` process that is killed (by PID) when dropped.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any single network step of a test may take before it counts as a failure.
pub const STEP: Duration = Duration::from_secs(3);

/// A TCP port on 127.0.0.1 where nothing listens, for "dead backend" specs: bound and
/// released, so nothing listens there unless another process grabs it meanwhile (which can only
/// make a dead-backend test see a live one). Pen itself is started on port 0 and reports the
/// port it got ([`Listen::Reported`], [`Pen::control_addr`]): no probe-then-bind race.
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local_addr").port()
}

/// A free port to write into a command where pen must be given a concrete port: a run-time
/// `listen`/`prometheus` command, or a test of how pen shows the address as it was given.
/// Everything else starts pen on port 0.
///
/// Still probed and released before pen binds it, but never handed out twice in one test
/// binary, and taken below the kernel's ephemeral range (32768–60999), so that neither a
/// second probe nor another test's outgoing connection can land on it in between (a port
/// from `bind(0)` could be both: CI once saw the control and listen ports of one pen equal).
pub fn probe_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test binary starts at its own place in the range (by pid) so binaries run side
    // by side do not walk the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        // Free on every address (so both `PORT` and `0.0.0.0:PORT` will bind), TCP and UDP.
        let free = TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

/// `127.0.0.1:<port where nothing listens>` (see [`dead_port`]).
pub fn dead_spec() -> String {
    format!("127.0.0.1:{}", dead_port())
}

#[allow(unused_imports)] // each test binary uses its own subset
pub use pen::testing::{is_root, require_root};

/// The socket address pen reported after `prefix` (`pen: listening on `, `pen: control port
/// on `) in its stderr `text`. Complete lines only: pen may be half-way through writing the
/// line (several writes), and a half-written address must not be read.
#[allow(dead_code)] // each test binary uses its own subset
pub fn reported_in(text: &str, prefix: &str) -> Option<SocketAddr> {
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|a| a.trim().parse().expect("pen reports a socket address"))
}

enum BackendListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A test backend: for each connection it reads the request (up to a blank line or EOF),
/// replies `HTTP/1.0 200 OK` with its name as the body, and closes. It records the peer
/// address of every connection it accepted.
pub struct Backend {
    pub name: String,
    /// `ip:port` for TCP backends, the socket path for Unix ones.
    pub spec: String,
    seen: Arc<Mutex<Vec<Option<SocketAddr>>>>,
    stop: Arc<AtomicBool>,
    wake: Option<SocketAddr>,
    unix_path: Option<PathBuf>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// A backend on `ip`, on a free port.
    pub fn start(name: &str, ip: &str) -> Backend {
        let l = TcpListener::bind((ip, 0)).expect("bind backend");
        let addr = l.local_addr().expect("backend addr");
        let spec = match addr {
            SocketAddr::V4(_) => addr.to_string(),
            SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
        };
        Self::run(name, spec, BackendListener::Tcp(l), Some(addr), None)
    }

    /// A backend on a Unix socket at `path`.
    pub fn start_unix(name: &str, path: &Path) -> Backend {
        let l = UnixListener::bind(path).expect("bind unix backend");
        Self::run(
            name,
            path.display().to_string(),
            BackendListener::Unix(l),
            None,
            Some(path.to_path_buf()),
        )
    }

    fn run(
        name: &str,
        spec: String,
        listener: BackendListener,
        wake: Option<SocketAddr>,
        unix_path: Option<PathBuf>,
    ) -> Backend {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2, body) = (seen.clone(), stop.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            loop {
                let conn: io::Result<(Box<dyn Conn>, Option<SocketAddr>)> = match &listener {
                    BackendListener::Tcp(l) => l
                        .accept()
                        .map(|(s, peer)| (Box::new(s) as Box<dyn Conn>, Some(peer))),
                    BackendListener::Unix(l) => l
                        .accept()
                        .map(|(s, _)| (Box::new(s) as Box<dyn Conn>, None)),
                };
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok((conn, peer)) = conn else { continue };
                seen2.lock().unwrap().push(peer);
                let body = body.clone();
                std::thread::spawn(move || serve_one(conn, &body));
            }
        });
        Backend {
            name: name.to_string(),
            spec,
            seen,
            stop,
            wake,
            unix_path,
            thread: Some(thread),
        }
    }

    /// The peers this backend accepted so far.
    pub fn seen(&self) -> Vec<Option<SocketAddr>> {
        self.seen.lock().unwrap().clone()
    }

    /// Number of connections this backend accepted.
    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread sees the flag.
        if let Some(a) = self.wake {
            let _ = TcpStream::connect_timeout(&a, Duration::from_millis(200));
        }
        if let Some(p) = &self.unix_path {
            let _ = UnixStream::connect(p);
            let _ = std::fs::remove_file(p);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

trait Conn: Read + Write + Send {
    fn shutdown_write(&self);
    fn set_timeout(&self, d: Duration);
}

impl Conn for TcpStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn set_timeout(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
    }
}

impl Conn for UnixStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn set_timeout(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
    }
}

fn serve_one(mut conn: Box<dyn Conn>, body: &str) {
    conn.set_timeout(STEP);
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                req.extend_from_slice(buf.get(..n).unwrap_or_default());
                if req.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => return,
        }
    }
    let reply = format!(
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(reply.as_bytes());
    conn.shutdown_write();
}

/// The body of an HTTP-ish reply (after the blank line).
pub fn body_of(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Connects to `target` from `source` (any port), e.g. 127.0.0.2, with the test timeouts.
pub fn connect_from(source: Option<IpAddr>, target: SocketAddr) -> io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(target);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if let Some(src) = source {
        s.bind(&SocketAddr::new(src, 0).into())?;
    }
    s.connect_timeout(&target.into(), STEP)?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(STEP))?;
    s.set_write_timeout(Some(STEP))?;
    Ok(s)
}

/// One request through pen from `source`; returns the body, or an error if pen closed the
/// connection without a reply (the reply is then empty).
pub fn get(source: Option<IpAddr>, target: SocketAddr) -> io::Result<String> {
    let mut s = connect_from(source, target)?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    read_reply(&mut s)
}

/// Reads a whole reply; an empty one (pen closed) is an `UnexpectedEof` error.
pub fn read_reply(s: &mut impl Read) -> io::Result<String> {
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // A reset after a close without reply counts as "no reply".
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset && out.is_empty() => {}
        Err(e) => return Err(e),
    }
    if out.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "pen closed the connection without a reply",
        ));
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(body_of(&text).to_string())
}

/// `get` from a Unix socket client.
pub fn get_unix(path: &Path) -> io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(STEP))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    read_reply(&mut s)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test ip literal")
}

/// A running `pen -f ...`, killed by PID when dropped. Its stderr goes to a temp file that is
/// printed if the test panics.
pub struct Pen {
    pub child: Child,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// What happened when pen was started with arguments that should fail.
pub struct Failed {
    pub code: Option<i32>,
    pub stderr: String,
    pub elapsed: Duration,
}

pub fn pen_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pen")
}

/// Names the TCP data path the integration tests force on pen: `PEN_TEST_TCP_ENGINE=io_uring`
/// or `=epoll` (the tokio path); unset or empty = pen's default (io_uring where it works).
/// `scripts/test.sh` runs the TCP test files a second time with `epoll`.
pub const ENGINE_ENV: &str = "PEN_TEST_TCP_ENGINE";

/// The engine `PEN_TEST_TCP_ENGINE` forces, if any (a value other than `io_uring` or `epoll`
/// fails the test, naming what would be accepted).
pub fn forced_engine() -> Option<String> {
    match std::env::var(ENGINE_ENV) {
        Ok(w) if w.is_empty() => None,
        Ok(w) if w == "io_uring" || w == "epoll" => Some(w),
        Ok(w) => panic!("{ENGINE_ENV}={w:?}: expected io_uring or epoll (or unset)"),
        Err(_) => None,
    }
}

/// The pen arguments that force the engine of [`forced_engine`] (`-O io_uring`, `-O epoll`).
pub fn engine_args() -> Vec<String> {
    forced_engine().map_or_else(Vec::new, |w| vec!["-O".to_string(), w])
}

impl Pen {
    /// Starts `pen -f <args>` and waits until it listens on `listen` (a TCP port on any
    /// address, or a Unix socket path). The TCP engine is the one `PEN_TEST_TCP_ENGINE`
    /// forces ([`engine_args`]), else pen's default.
    pub fn start(args: &[&str], listen: Listen) -> Pen {
        Pen::start_with(&engine_args(), args, &[], listen)
    }

    /// Starts `pen -f <pre> <args>` with extra environment variables `env` (no engine forced
    /// unless `pre` does) and waits until it listens.
    pub fn start_with(pre: &[String], args: &[&str], env: &[(&str, &str)], listen: Listen) -> Pen {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr_path = dir.path().join("pen.stderr");
        let err = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = Command::new(pen_bin())
            .arg("-f")
            .args(pre)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn pen");
        let mut pen = Pen {
            child,
            stderr_path,
            _dir: dir,
        };
        pen.wait_listening(&listen);
        pen
    }

    fn wait_listening(&mut self, listen: &Listen) {
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pen exited early ({status}); stderr:\n{}", self.stderr());
            }
            let ready = match listen {
                Listen::Tcp(port) => tcp_listening(*port),
                Listen::Unix(path) => unix_listening(path),
                Listen::Reported => self.reported("pen: listening on ").is_some(),
            };
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "pen did not start listening within {STEP:?}; stderr:\n{}",
            self.stderr()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The TCP data path serving the listener: `io_uring` once the loop thread (`pen-uring`)
    /// runs, else `tokio` (waits up to `STEP` for the thread to appear).
    pub fn data_path(&self) -> &'static str {
        let uring = || {
            std::fs::read_dir(format!("/proc/{}/task", self.pid()))
                .into_iter()
                .flatten()
                .flatten()
                .any(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "pen-uring")
                })
        };
        if wait_within(Duration::from_millis(500), uring) {
            "io_uring"
        } else {
            "tokio"
        }
    }

    /// The address after `prefix` on pen's stderr, if pen printed it.
    fn reported(&self, prefix: &str) -> Option<SocketAddr> {
        reported_in(&self.stderr(), prefix)
    }

    /// Where pen listens, as it reported it (started with [`Listen::Reported`]).
    pub fn addr(&self) -> SocketAddr {
        self.reported("pen: listening on ")
            .unwrap_or_else(|| panic!("pen reported no listen address; stderr:\n{}", self.stderr()))
    }

    /// The port pen listens on (see [`Pen::addr`]).
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The control port pen reported for `-C 0` (`pen: control port on ADDR`); it is
    /// printed right after the listen address, before pen serves.
    pub fn control_addr(&self) -> SocketAddr {
        let mut found = None;
        wait_until(|| {
            found = self.reported("pen: control port on ");
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "pen reported no control port (start it with -C 0); stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// The control port as `penctl` takes it.
    pub fn control_port(&self) -> u16 {
        self.control_addr().port()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends `sig` to pen and waits (bounded) for it to exit; returns its exit code.
    pub fn signal_and_wait(&mut self, sig: i32) -> Option<i32> {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) on the PID of our own child process.
        unsafe { libc::kill(pid, sig) };
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("pen did not exit after signal {sig}");
    }
}

impl Drop for Pen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pen stderr ---\n{}", self.stderr());
        }
    }
}

/// Runs pen with arguments that must fail; bounded (kills it after `STEP`).
pub fn pen_fails(args: &[&str]) -> Failed {
    let start = Instant::now();
    let mut child = Command::new(pen_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pen");
    let deadline = start + STEP;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            return Failed {
                code: status.code(),
                stderr,
                elapsed: start.elapsed(),
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pen {args:?} was expected to fail but kept running");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where pen is expected to listen.
pub enum Listen {
    Tcp(u16),
    Unix(PathBuf),
    /// Pen listens on port 0 and reports the bound address on stderr
    /// (`pen: listening on ADDR`); read it with [`Pen::addr`].
    Reported,
}

/// Is some socket in LISTEN state on `port` (IPv4 or IPv6) in this network namespace?
pub fn tcp_listening(port: u16) -> bool {
    let want = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let mut cols = l.split_whitespace();
                let local = cols.nth(1).unwrap_or_default();
                let state = cols.nth(1).unwrap_or_default();
                format!("{local} ").ends_with(&want) && state == "0A"
            })
        })
    })
}

/// Is a listening Unix stream socket bound at `path`?
pub fn unix_listening(path: &Path) -> bool {
    let want = path.display().to_string();
    std::fs::read_to_string("/proc/net/unix").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = listening.
            cols.len() >= 8 && cols[3] == "00010000" && cols[7] == want
        })
    })
}

/// Sends one command line to the TCP control port on 127.0.0.1 and returns pen's whole reply
/// (read until pen closes; bounded by `STEP`).
pub fn ctl(port: u16, cmd: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the control port");
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the control reply");
    out
}

/// `GET /metrics` from the Prometheus endpoint on 127.0.0.1 (bounded by `STEP`).
pub fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the metrics");
    out
}

/// Polls `f` until it returns true or `STEP` passes.
pub fn wait_until(f: impl FnMut() -> bool) -> bool {
    wait_within(STEP, f)
}

/// Polls `f` until it returns true or `within` passes.
pub fn wait_within(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A TCP address whose connects hang (SYNs dropped): a listener with backlog 0 whose only queue
/// slot is taken by a connection that is never accepted. Keep it alive while in use.
pub struct Blackhole {
    pub spec: String,
    _listener: socket2::Socket,
    _filler: TcpStream,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind blackhole");
        l.listen(0).expect("listen blackhole");
        let addr = l
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet addr");
        let filler = TcpStream::connect_timeout(&addr, STEP).expect("fill the accept queue");
        Blackhole {
            spec: addr.to_string(),
            _listener: l,
            _filler: filler,
        }
    }
}
