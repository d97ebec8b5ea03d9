//! Process life through a real `pen`: SIGHUP under a bounded loopback load (no failed request,
//! new config in force), SIGTERM (clean exit, pid file removed, sockets closed), SIGUSR1
//! statistics (the `-w` file or text on stderr), the `-l` request log (file and penlogd UDP,
//! reopened on SIGHUP) and `-d` levels.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Backend, Listen, Pen, STEP, ctl, get, tcp_listening, wait_until};

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn port_of(spec: &str) -> &str {
    spec.rsplit_once(':').map_or("", |(_, p)| p)
}

fn signal(pen: &Pen, sig: i32) {
    let pid = i32::try_from(pen.pid()).unwrap();
    // SAFETY: kill(2) on the PID of our own child.
    unsafe { libc::kill(pid, sig) };
}

/// 4 clients × 750 requests while the config file is rewritten (server 0: a → b) and SIGHUP
/// is sent 10 times: no request fails, and afterwards every request goes to b.
#[test]
fn sighup_under_load_fails_no_request_and_applies_the_new_config() {
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pen.cfg");
    let cfg = |spec: &str| {
        format!(
            "roundrobin\nserver 0 address 127.0.0.1 port {}\n",
            port_of(spec)
        )
    };
    std::fs::write(&file, cfg(&a.spec)).unwrap();
    let (f, l) = (file.display().to_string(), "127.0.0.1:0".to_string());
    let pen = Pen::start(&["-x", "2000", "-F", &f, &l], Listen::Reported);
    let lport = pen.port();

    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (failures, done, stop) = (failures.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                for _ in 0..750 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match get(None, at(lport)) {
                        Ok(body) if body == "a" || body == "b" => {}
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    assert!(wait_until(|| done.load(Ordering::Relaxed) >= 200));
    std::fs::write(&file, cfg(&b.spec)).unwrap();
    for _ in 0..10 {
        signal(&pen, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(30));
    }
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(done.load(Ordering::Relaxed), 3000);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during SIGHUP; stderr:\n{}",
        pen.stderr()
    );
    for _ in 0..5 {
        assert_eq!(get(None, at(lport)).unwrap(), "b");
    }
}

#[test]
fn sigterm_exits_cleanly_closing_sockets_and_removing_the_pid_file() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pen.pid");
    let (p, c, l) = (
        pid_file.display().to_string(),
        "127.0.0.1:0".to_string(),
        "127.0.0.1:0".to_string(),
    );
    let mut pen = Pen::start(
        &["-u", "root", "-p", &p, "-C", &c, &l, &a.spec],
        Listen::Reported,
    );
    let (lport, cport) = (pen.port(), pen.control_port());
    // The pid file is written after the listeners open (and are reported).
    assert!(wait_until(
        || std::fs::read_to_string(&pid_file).is_ok_and(|t| t.trim() == pen.pid().to_string())
    ));
    assert_eq!(pen.signal_and_wait(libc::SIGTERM), Some(0));
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(
        !tcp_listening(lport) && !tcp_listening(cport),
        "sockets left open"
    );
}

/// A restart on the same port finds it free: once pen has exited after SIGTERM its listener
/// is gone at once, on either TCP engine. (An io_uring accept still in flight at exit kept the
/// socket listening until the kernel's clean-up of the ring ran after the exit, so a pen
/// restarted at once could find the port busy: seen here in 2 of 8 exits.)
#[test]
fn after_sigterm_the_port_is_free_at_once_for_a_restart() {
    let a = Backend::start("a", "127.0.0.1");
    let port = common::probe_port();
    let listen = format!("127.0.0.1:{port}");
    for round in 0..12 {
        let mut pen = Pen::start(&[&listen, &a.spec], Listen::Tcp(port));
        assert_eq!(pen.signal_and_wait(libc::SIGTERM), Some(0), "round {round}");
        assert!(
            !tcp_listening(port),
            "round {round}: port {port} still listening after pen exited"
        );
    }
}

/// A supervisor signals as soon as the pid file appears: SIGTERM sent at that moment (before
/// the runtime is up) still ends pen cleanly, every time.
#[test]
fn sigterm_right_after_the_pid_file_appears_still_exits_cleanly() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let pid_file = dir.path().join(format!("pen{round}.pid"));
        let p = pid_file.display().to_string();
        let mut child = std::process::Command::new(common::pen_bin())
            .args(["-f", "-p", &p, "127.0.0.1:0", &a.spec])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Polled without sleeping: the signal must land as close to the write as possible.
        let deadline = std::time::Instant::now() + STEP;
        while !std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n')) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no pid file"
            );
            std::thread::yield_now();
        }
        let pid = i32::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on the PID of our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: SIGTERM right after the pid file killed pen ({status})"
        );
        assert!(!pid_file.exists(), "round {round}: pid file left behind");
    }
}

#[test]
fn sigusr1_writes_the_web_stats_file() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("stats.html");
    let (ws, l) = (w.display().to_string(), "127.0.0.1:0".to_string());
    let pen = Pen::start(&["-w", &ws, &l, &a.spec], Listen::Reported);
    let lport = pen.port();
    get(None, at(lport)).unwrap();
    signal(&pen, libc::SIGUSR1);
    assert!(wait_until(
        || std::fs::read_to_string(&w).is_ok_and(|t| t.ends_with("</html>\n"))
    ));
    let page = std::fs::read_to_string(&w).unwrap();
    assert!(page.contains("<title>Pen status page</title>"), "{page}");
    assert!(
        page.contains(&format!("<td>{}</td>", port_of(&a.spec))),
        "{page}"
    );
}

#[test]
fn sigusr1_without_w_writes_the_text_report_to_stderr() {
    let a = Backend::start("a", "127.0.0.1");
    let l = "127.0.0.1:0".to_string();
    let pen = Pen::start(&[&l, &a.spec], Listen::Reported);
    let lport = pen.port();
    get(None, at(lport)).unwrap();
    signal(&pen, libc::SIGUSR1);
    assert!(
        wait_until(|| pen.stderr().contains("Max number of connections: 500")),
        "{}",
        pen.stderr()
    );
    let err = pen.stderr();
    assert!(err.contains("Server 0 status:"), "{err}");
    assert!(err.contains("1 servers"), "{err}");
    assert!(pen.child.id() > 0);
}

#[test]
fn request_log_file_gets_one_line_per_request_and_reopens_on_sighup() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("req.log");
    let (lg, l) = (log.display().to_string(), "127.0.0.1:0".to_string());
    let pen = Pen::start(&["-l", &lg, &l, &a.spec], Listen::Reported);
    let lport = pen.port();
    get(None, at(lport)).unwrap();
    assert!(wait_until(
        || std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1)
    ));
    let text = std::fs::read_to_string(&log).unwrap();
    let words: Vec<&str> = text.trim_end().split(' ').collect();
    assert_eq!(words.len(), 6, "{text:?}");
    assert_eq!(words[0], "127.0.0.1");
    assert!(words[1].parse::<u64>().unwrap() > 1_600_000_000, "{text:?}");
    assert_eq!(words[2], "127.0.0.1");
    assert_eq!(&words[3..], ["GET", "/", "HTTP/1.0"]);
    // Log rotation: move the file away, HUP, the next request goes to a new file.
    let rotated = dir.path().join("req.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(&pen, libc::SIGHUP);
    // Requests before the reopen go to the old (renamed) file, later ones to the new file.
    assert!(
        wait_until(|| {
            get(None, at(lport)).is_ok()
                && std::fs::read_to_string(&log).is_ok_and(|t| t.contains("GET / HTTP/1.0"))
        }),
        "SIGHUP did not reopen the log"
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.lines().count() >= 1, "{old:?}");
    assert!(
        old.lines().all(|l| l.ends_with(" GET / HTTP/1.0")),
        "{old:?}"
    );
}

#[test]
fn request_log_to_penlogd_sends_udp_lines() {
    let a = Backend::start("a", "127.0.0.1");
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(STEP)).unwrap();
    let (lg, l) = (
        format!("127.0.0.1:{}", rx.local_addr().unwrap().port()),
        "127.0.0.1:0".to_string(),
    );
    let pen = Pen::start(&["-l", &lg, &l, &a.spec], Listen::Reported);
    let lport = pen.port();
    get(None, at(lport)).unwrap();
    let mut buf = [0u8; 2048];
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        "+ 127.0.0.1 127.0.0.1 GET / HTTP/1.0\n"
    );
}

#[test]
fn debug_level_changes_what_pen_logs() {
    let a = Backend::start("a", "127.0.0.1");
    let (c, l) = ("127.0.0.1:0".to_string(), "127.0.0.1:0".to_string());
    let pen = Pen::start(&["-u", "root", "-C", &c, &l, &a.spec], Listen::Reported);
    let (lport, cport) = (pen.port(), pen.control_port());
    get(None, at(lport)).unwrap();
    assert!(!pen.stderr().contains("accepted"), "{}", pen.stderr());
    assert_eq!(ctl(cport, "debug 2"), "2\n");
    get(None, at(lport)).unwrap();
    assert!(
        wait_until(|| pen.stderr().contains("accepted")),
        "{}",
        pen.stderr()
    );
}

#[test]
fn chroot_and_user_take_effect_after_the_sockets_are_open() {
    let a = Backend::start("a", "127.0.0.1");
    let jail = tempfile::tempdir().unwrap();
    let (j, l) = (jail.path().display().to_string(), "127.0.0.1:0".to_string());
    let pen = Pen::start(&["-j", &j, "-u", "nobody", &l, &a.spec], Listen::Reported);
    let lport = pen.port();
    assert_eq!(
        get(None, at(lport)).unwrap(),
        "a",
        "serves after dropping privileges"
    );
    let root = std::fs::read_link(format!("/proc/{}/root", pen.pid())).unwrap_or_else(|e| {
        panic!(
            "reading /proc/{}/root: {e}; pen's stderr: {}",
            pen.pid(),
            pen.stderr()
        )
    });
    assert_eq!(root, jail.path().canonicalize().unwrap());
    let status = std::fs::read_to_string(format!("/proc/{}/status", pen.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "not running as nobody: {uid_line}"
    );
}

#[test]
fn log_command_starts_and_stops_the_request_log_at_run_time() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    let (c, l) = ("127.0.0.1:0".to_string(), "127.0.0.1:0".to_string());
    // `log FILE` from a TCP control client needs control_any_file.
    let pen = Pen::start(
        &[
            "-u",
            "root",
            "-O",
            "control_any_file",
            "-C",
            &c,
            &l,
            &a.spec,
        ],
        Listen::Reported,
    );
    let (lport, cport) = (pen.port(), pen.control_port());
    get(None, at(lport)).unwrap();
    assert!(!log.exists());
    let lg = log.display().to_string();
    assert_eq!(ctl(cport, &format!("log {lg}")), format!("{lg}\n"));
    get(None, at(lport)).unwrap();
    assert!(wait_until(
        || std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1)
    ));
    assert_eq!(ctl(cport, "no log"), "");
    assert_eq!(ctl(cport, "log"), "");
    get(None, at(lport)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
}
