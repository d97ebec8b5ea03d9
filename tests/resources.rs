//! pen's own resources and the visibility of server state, through the real `pen` binary on
//! loopback: running out of descriptors is not a server failure (pen under a low
//! RLIMIT_NOFILE), the start-up descriptor limit and its warning, an unwritable `-w` path,
//! servers going DOWN and coming back UP in the default log (TCP and UDP), and Prometheus
//! byte counters that include open connections.
//!
//! Each test starts its own pen (killed by PID when the test ends) and its own backends on
//! free ports; every loop is bounded in count and time.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{STEP, pen_bin, scrape, tcp_listening, wait_until, wait_within};

/// A backend that echoes every connection until the client closes it (connections stay open
/// as long as the test holds them).
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start() -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind echo backend");
        let addr = l.local_addr().expect("echo addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut s) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Echo { addr, stop }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// A pen child process (killed by PID on drop) with its stderr in a temp file.
struct PenProc {
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl PenProc {
    /// `pen -f <args>` with RLIMIT_NOFILE set to (`soft`, `hard`) when given.
    fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], nofile: Option<(u64, u64)>) -> PenProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = dir.path().join("pen.stderr");
        let err = std::fs::File::create(&stderr).expect("stderr file");
        let mut cmd = Command::new(pen_bin());
        cmd.arg("-f")
            .args(common::engine_args())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        if let Some((soft, hard)) = nofile {
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setrlimit, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let l = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn pen");
        PenProc {
            child,
            stderr,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The address pen reported after `prefix` for a port-0 socket (bounded wait).
    fn reported(&mut self, prefix: &str) -> SocketAddr {
        let mut found = None;
        let ok = wait_until(|| {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("pen exited early ({st}); stderr:\n{}", self.stderr());
            }
            found = common::reported_in(&self.stderr(), prefix);
            found.is_some()
        });
        assert!(ok, "pen reported no {prefix:?}; stderr:\n{}", self.stderr());
        found.expect("reported")
    }

    /// Where pen, started on `127.0.0.1:0`, listens (`pen: listening on ADDR`).
    fn listen_addr(&mut self) -> SocketAddr {
        self.reported("pen: listening on ")
    }

    /// The port pen's `-C 0` control socket got (`pen: control port on ADDR`).
    fn control_port(&mut self) -> u16 {
        self.reported("pen: control port on ").port()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time of pen so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }
}

impl Drop for PenProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pen stderr ---\n{}", self.stderr());
        }
    }
}

fn ctl(port: u16, cmd: &str) -> io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(STEP))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// One echo round trip through pen on a fresh connection (bounded by `STEP`).
fn echo_once(pen: SocketAddr, msg: &[u8]) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&pen, STEP)?;
    s.set_read_timeout(Some(STEP))?;
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    if got != msg {
        return Err(io::Error::other("echo mismatch"));
    }
    Ok(s)
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const SHORTAGE_LOG: &str = "pen is out of local resources";

/// `-C ADDR`, preceded by `-u root` when the tests run as root (as root pen opens a control
/// socket only together with `-u`; other users need nothing).
fn control_args(addr: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    if common::is_root() {
        v.extend(["-u".to_string(), "root".to_string()]);
    }
    v.extend(["-C".to_string(), addr.to_string()]);
    v
}

fn with(first: &[String], rest: &[&str]) -> Vec<String> {
    first
        .iter()
        .cloned()
        .chain(rest.iter().map(|s| s.to_string()))
        .collect()
}

/// `-x 1000` under a descriptor limit of 64 (soft = hard, so raising cannot help): a burst of
/// clients runs pen out of descriptors. The server must not be blacklisted, pen must not exit
/// or spin, the shortage is logged once, and clients are served again once the burst closes.
#[test]
fn running_out_of_descriptors_blacklists_no_server() {
    let echo = Echo::start();
    let (l, c, b) = ("127.0.0.1:0", "0", echo.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("status.html").display().to_string();
    let mut pen = PenProc::spawn(
        &with(
            &control_args(c),
            &["-w", &w, "-x", "1000", "-b", "30", l, &b],
        ),
        Some((64, 64)),
    );
    let listen = pen.listen_addr();
    let cport = pen.control_port();

    // The burst: more clients than 64 descriptors can serve (two each), bounded at 60.
    let mut burst = Vec::new();
    let mut served = 0;
    for i in 0..60u32 {
        let Ok(mut s) = TcpStream::connect_timeout(&listen, Duration::from_millis(500)) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let msg = format!("client {i}\n");
        let _ = s.write_all(msg.as_bytes());
        let mut got = vec![0u8; msg.len()];
        if s.read_exact(&mut got).is_ok() && got == msg.as_bytes() {
            served += 1;
        }
        burst.push(s);
    }
    assert!(
        (10..60).contains(&served),
        "{served} of 60 clients served: the limit should allow some, not all"
    );
    assert!(
        wait_within(Duration::from_secs(3), || pen
            .stderr()
            .contains(SHORTAGE_LOG)),
        "no shortage logged; stderr:\n{}",
        pen.stderr()
    );

    // While the burst holds every descriptor: pen waits instead of spinning.
    let cpu0 = pen.cpu();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = pen.cpu() - cpu0;
    eprintln!("pen CPU while out of descriptors: {cpu:?} in 2 s; {served} of 60 clients served");
    assert!(
        cpu < Duration::from_millis(400),
        "pen used {cpu:?} of CPU in 2 s while out of descriptors"
    );
    assert!(pen.running(), "pen exited: {}", pen.stderr());

    // The burst closes: new clients are served at once (a blacklisted server would reset
    // them for -b 30 seconds).
    drop(burst);
    let back = wait_within(Duration::from_secs(5), || {
        echo_once(listen, b"after the burst\n").is_ok()
    });
    assert!(back, "no client served after the burst");
    let status = ctl(cport, "status").expect("status after the burst");
    assert!(
        status.contains(&format!(
            "<td>{}</td>\n<td>up</td>\n<td>{}</td>",
            echo.addr.ip(),
            echo.addr.port()
        )),
        "{status}"
    );
    let err = pen.stderr();
    assert_eq!(
        err.matches(SHORTAGE_LOG).count(),
        1,
        "one log per burst:\n{err}"
    );
    assert!(!err.contains("is DOWN"), "{err}");
    // Quiet for 2 s and a success: the end of the burst is logged with its count.
    std::thread::sleep(Duration::from_millis(2100));
    echo_once(listen, b"later\n").expect("served later");
    assert!(
        wait_until(|| pen.stderr().contains("local resources available again")),
        "{}",
        pen.stderr()
    );
    assert!(pen.running());
}

/// At start-up pen raises its soft descriptor limit to the hard one and warns when `-x` needs
/// more than that.
#[test]
fn startup_raises_the_descriptor_limit_and_warns_when_x_does_not_fit() {
    let echo = Echo::start();
    let b = echo.addr.to_string();
    let mut pen = PenProc::spawn(&["-x", "1000", "127.0.0.1:0", &b], Some((64, 128)));
    pen.listen_addr();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pen.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums, ["128", "128"], "{line}");
    let err = pen.stderr();
    assert!(
        err.contains("-x 1000 connections need up to 2000 descriptors")
            && err.contains("the descriptor limit is 128"),
        "{err}"
    );
    // A limit that fits: no warning, until `conn_max` grows past it at run time.
    let mut quiet = PenProc::spawn(
        &with(&control_args("0"), &["-x", "20", "127.0.0.1:0", &b]),
        Some((64, 128)),
    );
    quiet.listen_addr();
    let cport = quiet.control_port();
    assert!(
        !quiet.stderr().contains("descriptor limit"),
        "{}",
        quiet.stderr()
    );
    assert_eq!(ctl(cport, "conn_max 100").unwrap(), "100\n");
    assert!(
        wait_until(|| quiet
            .stderr()
            .contains("conn_max 100: -x 100 connections need up to 200 descriptors")),
        "{}",
        quiet.stderr()
    );
}

/// An unwritable `-w` path is reported at start-up (not only at the first SIGUSR1).
#[test]
fn unwritable_web_stats_path_is_reported_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("no-such-dir").join("status.html");
    let bad_s = bad.display().to_string();
    let mut pen = PenProc::spawn(&["-w", &bad_s, "127.0.0.1:0", "127.0.0.1:9"], None);
    pen.listen_addr();
    assert!(
        wait_until(|| pen.stderr().contains(&format!(
            "-w {bad_s}: the status page cannot be written there"
        ))),
        "{}",
        pen.stderr()
    );
    // A writable path: nothing said, nothing created before SIGUSR1.
    let good = dir.path().join("status.html");
    let good_s = good.display().to_string();
    let mut ok = PenProc::spawn(&["-w", &good_s, "127.0.0.1:0", "127.0.0.1:9"], None);
    ok.listen_addr();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!ok.stderr().contains("-w "), "{}", ok.stderr());
    assert!(!good.exists());
}

/// A server that refuses a connect goes DOWN, and comes back UP on the next successful
/// connect after its blacklist; both at the default log level (no -d), once each.
#[test]
fn server_down_and_up_are_logged_at_the_default_level() {
    let b = common::dead_spec();
    let mut pen = PenProc::spawn(&["-b", "1", "127.0.0.1:0", &b], None);
    let listen = pen.listen_addr();
    // Nothing listens on the backend port: the connect is refused, pen closes the client.
    for _ in 0..2 {
        let _ = echo_once(listen, b"x\n");
        std::thread::sleep(Duration::from_millis(1100));
    }
    let down = format!("server 0 ({b}) is DOWN: connect failed: ");
    assert!(
        wait_until(|| pen.stderr().contains(&down)),
        "{}",
        pen.stderr()
    );
    assert!(
        pen.stderr().contains("blacklisted for 1 s"),
        "{}",
        pen.stderr()
    );
    assert_eq!(
        pen.stderr().matches(" is DOWN").count(),
        1,
        "{}",
        pen.stderr()
    );
    // The backend comes up; after the 1 s blacklist the next client is served.
    let backend = TcpListener::bind(&b).expect("bind the backend port");
    std::thread::spawn(move || {
        for mut s in backend.incoming().flatten().take(4) {
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..n]);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1100));
    echo_once(listen, b"y\n").expect("served once the backend is up");
    let up = format!("server 0 ({b}) is UP again after ");
    assert!(
        wait_until(|| pen.stderr().contains(&up)),
        "{}",
        pen.stderr()
    );
}

/// UDP: an ICMP port unreachable from the backend takes it DOWN, and a flow after its blacklist
/// brings it back UP; both logged at the default level.
#[test]
fn udp_server_down_after_icmp_error_and_back_up_are_logged() {
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = dead.local_addr().unwrap().to_string();
    drop(dead);
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let lport = probe.local_addr().unwrap().port();
    drop(probe);
    let l = format!("127.0.0.1:{lport}");
    let mut pen = PenProc::spawn(&["-U", "-b", "1", &l, &b], None);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let down = format!("server 0 ({b}) is DOWN");
    let seen = wait_within(Duration::from_secs(5), || {
        assert!(pen.running(), "pen exited: {}", pen.stderr());
        let _ = client.send_to(b"query", &l);
        std::thread::sleep(Duration::from_millis(100));
        pen.stderr().contains(&down)
    });
    assert!(seen, "{}", pen.stderr());
    // The server comes up: once the 1 s blacklist is over, a new flow reaches it.
    let server = UdpSocket::bind(&b).expect("bind the backend's port");
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let up = format!("server 0 ({b}) is UP again after ");
    let mut buf = [0u8; 64];
    let back = wait_within(Duration::from_secs(6), || {
        let fresh = UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = fresh.send_to(b"query", &l);
        let _ = server.recv_from(&mut buf);
        pen.stderr().contains(&up)
    });
    assert!(back, "{}", pen.stderr());
    assert_eq!(
        pen.stderr().matches(" is DOWN").count(),
        1,
        "{}",
        pen.stderr()
    );
}

/// Prometheus byte counters include a connection that is still open.
#[test]
fn prometheus_counts_bytes_of_open_connections_and_exposes_process_metrics() {
    let echo = Echo::start();
    let mport = common::probe_port();
    let m = format!("prometheus 127.0.0.1:{mport}");
    let b = echo.addr.to_string();
    let mut pen = PenProc::spawn(&["-O", &m, "127.0.0.1:0", &b], None);
    let listen = pen.listen_addr();
    assert!(wait_until(|| tcp_listening(mport)));
    let payload = vec![b'z'; 5000];
    let held = echo_once(listen, &payload).expect("echo through pen");
    let series = format!("pen_server_sent_bytes_total{{server=\"0\",address=\"{b}\"}}");
    let rx = format!("pen_server_received_bytes_total{{server=\"0\",address=\"{b}\"}}");
    let t0 = Instant::now();
    let metrics = scrape(mport);
    assert_eq!(value(&metrics, &series), Some(5000.0), "{metrics}");
    assert_eq!(value(&metrics, &rx), Some(5000.0), "{metrics}");
    // Closing it moves the bytes to the server's totals: still 5000, not 10000 or 0.
    drop(held);
    assert!(wait_until(|| {
        let m = scrape(mport);
        value(&m, "pen_connections ") == Some(0.0) && value(&m, &series) == Some(5000.0)
    }));
    let metrics = scrape(mport);
    assert!(metrics.contains("pen_build_info{version=\""), "{metrics}");
    let fds = value(&metrics, "process_open_fds ").expect("process_open_fds");
    let max = value(&metrics, "process_max_fds ").expect("process_max_fds");
    assert!(fds >= 3.0 && fds < max, "{fds} {max}");
    assert!(value(&metrics, "process_resident_memory_bytes ").unwrap() > 1e6);
    let start = value(&metrics, "process_start_time_seconds ").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - start) < 60.0 + t0.elapsed().as_secs_f64() && now >= start - 2.0,
        "start {start}, now {now}"
    );
    assert!(pen.running());
}
