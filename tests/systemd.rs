//! pen as a system daemon: log format by destination (file, journald, syslog when
//! daemonized) and systemd readiness notification (`$NOTIFY_SOCKET`).

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, pen_bin, wait_until};

fn spawn(args: &[&str], env: &[(&str, &str)], stderr_file: &Path) -> Child {
    let err = std::fs::File::options()
        .append(true)
        .create(true)
        .open(stderr_file)
        .unwrap();
    let mut cmd = Command::new(pen_bin());
    cmd.args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn pen")
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started.
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill {pid} {sig}"
    );
}

fn stop(mut child: Child) {
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("pen did not exit on SIGTERM");
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Runs `pen -f -d` with stderr to a file and `env`, until it logged that it listens; returns
/// the log.
fn foreground_log(dir: &Path, env: &[(&str, &str)], journal: bool) -> String {
    let b = Backend::start("b0", "127.0.0.1");
    let err = dir.join("pen.stderr");
    std::fs::write(&err, "").unwrap();
    let id = std::fs::metadata(&err).unwrap();
    let stream = format!("{}:{}", id.dev(), id.ino());
    let mut env = env.to_vec();
    if journal {
        env.push(("JOURNAL_STREAM", &stream));
    }
    let pen = spawn(&["-f", "-d", "127.0.0.1:0", &b.spec], &env, &err);
    assert!(
        wait_until(|| read(&err).contains("0.1.0 listening on")),
        "pen did not log that it listens:\n{}",
        read(&err)
    );
    stop(pen);
    read(&err)
}

#[test]
fn a_log_written_to_a_file_has_no_ansi_colour() {
    let dir = tempfile::tempdir().unwrap();
    let log = foreground_log(dir.path(), &[], false);
    assert!(
        !log.contains("\x1b["),
        "ANSI escape in a log file:\n{log:?}"
    );
    assert!(
        log.contains(" INFO ") && log.contains("SIGTERM: exiting"),
        "{log}"
    );
}

#[test]
fn under_journald_lines_carry_priorities_and_no_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = foreground_log(dir.path(), &[], true);
    assert!(!log.contains("\x1b["), "{log:?}");
    let logged: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("pen: listening on"))
        .collect();
    assert!(
        logged
            .iter()
            .any(|l| l.starts_with("<6>pen 0.1.0 listening on 127.0.0.1:")),
        "{log}"
    );
    assert!(logged.contains(&"<6>SIGTERM: exiting"), "{log}");
    for l in &logged {
        let prio = l
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .map(|(n, _)| n);
        assert!(
            matches!(prio, Some("3" | "4" | "6" | "7")),
            "line without a <N> priority: {l:?}"
        );
        assert!(
            !l.contains(" INFO ") && !l.contains("Z "),
            "timestamp or level: {l:?}"
        );
    }
}

#[test]
fn a_journal_stream_of_another_file_is_not_the_journal() {
    // Inherited from a parent whose stderr was the journal: pen's stderr is a file.
    let dir = tempfile::tempdir().unwrap();
    let log = foreground_log(dir.path(), &[("JOURNAL_STREAM", "1:2")], false);
    assert!(!log.contains("<6>") && log.contains(" INFO "), "{log}");
}

/// The next datagram within 10 s, as text.
fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = sock
        .recv(&mut buf)
        .expect("no sd_notify datagram within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn readiness_reload_and_stop_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start("b0", "127.0.0.1");
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let cfg = dir.path().join("pen.cfg");
    std::fs::write(&cfg, "timeout 7\n").unwrap();
    let err = dir.path().join("pen.stderr");
    let pen = spawn(
        &["-f", "-F", cfg.to_str().unwrap(), "127.0.0.1:0", &b.spec],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
        &err,
    );
    let ready = recv(&sock);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(
        ready.contains("STATUS=listening on 127.0.0.1:"),
        "{ready:?}"
    );

    signal(pen.id(), libc::SIGHUP);
    let reloading = recv(&sock);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading:?}");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec > 0);
    let again = recv(&sock);
    assert!(again.starts_with("READY=1\n"), "{again:?}");

    signal(pen.id(), libc::SIGTERM);
    let stopping = recv(&sock);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    stop(pen);
}

#[test]
fn an_abstract_notify_socket_is_reached() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("pen-rs-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start("b0", "127.0.0.1");
    let pen = spawn(
        &["-f", "127.0.0.1:0", &b.spec],
        &[("NOTIFY_SOCKET", &format!("@{name}"))],
        &dir.path().join("pen.stderr"),
    );
    assert!(recv(&sock).starts_with("READY=1"));
    stop(pen);
    assert!(recv(&sock).starts_with("STOPPING=1"));
}

#[test]
fn a_bad_notify_socket_does_not_stop_pen() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start("b0", "127.0.0.1");
    let err = dir.path().join("pen.stderr");
    let mut pen = spawn(
        &["-f", "-d", "-d", "127.0.0.1:0", &b.spec],
        &[("NOTIFY_SOCKET", "relative/nowhere")],
        &err,
    );
    assert!(
        wait_until(|| read(&err).contains("sd_notify")),
        "{}",
        read(&err)
    );
    assert!(
        pen.try_wait().unwrap().is_none(),
        "pen exited: {}",
        read(&err)
    );
    let log = read(&err);
    assert!(
        log.contains("relative/nowhere") && log.contains("absolute path"),
        "{log}"
    );
    stop(pen);
}

/// A daemonized pen (no `-f`) logs to syslog, as C Pen. The test runs pen in a private mount
/// namespace whose /dev is a fresh tmpfs holding /dev/null and a /dev/log bound to this test's
/// datagram socket, so the host's /dev and any system logger are left alone.
#[test]
fn a_daemonized_pen_logs_to_syslog_with_priorities() {
    pen::testing::require_root("a private mount namespace with its own /dev/log");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = UnixDatagram::bind(d.join("log")).unwrap();
    std::fs::write(d.join("null"), "").unwrap();
    let b = Backend::start("b0", "127.0.0.1");
    let pid_file = d.join("pen.pid");
    let script = r#"set -e
mount --bind /dev/null "$T/null"
mount -t tmpfs -o size=64k pen-test-dev /dev
touch /dev/null /dev/log
mount --bind "$T/null" /dev/null
mount --bind "$T/log" /dev/log
exec "$PEN" -d -p "$T/pen.pid" 127.0.0.1:0 "$BACKEND""#;
    let err = d.join("pen.stderr");
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("T", d)
        .env("PEN", pen_bin())
        .env("BACKEND", &b.spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .expect("run unshare");
    assert!(status.success(), "unshare/pen failed: {}", read(&err));
    assert!(wait_until(|| read(&pid_file).trim().parse::<u32>().is_ok()));
    let pid: u32 = read(&pid_file).trim().parse().unwrap();
    let first = recv(&log);
    signal(pid, libc::SIGTERM);
    let mut got = vec![first];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !got.iter().any(|m| m.contains("SIGTERM: exiting")) {
        got.push(recv(&log));
    }
    assert!(
        wait_until(|| !Path::new(&format!("/proc/{pid}")).exists()),
        "pen {pid} did not exit"
    );
    // facility user (8) + info (6) = <14>, tagged pen[pid].
    let tag = format!("pen[{pid}]: ");
    let listening = got
        .iter()
        .find(|m| m.contains("listening on 127.0.0.1:"))
        .unwrap_or_else(|| panic!("no listening line in syslog: {got:?}"));
    assert!(
        listening.starts_with("<14>") && listening.contains(&tag),
        "{listening:?}"
    );
    assert!(
        !listening.contains(" INFO ") && !listening.contains("\x1b["),
        "{listening:?}"
    );
    assert!(
        got.iter()
            .any(|m| m.starts_with("<14>") && m.ends_with("SIGTERM: exiting"))
    );
    // A redirected stderr keeps its log too.
    assert!(read(&err).contains("SIGTERM: exiting"), "{}", read(&err));
}

/// `setpriv` arguments that give pen what the unit gives it: the unit's
/// CapabilityBoundingSet and NoNewPrivileges (the other sandboxing settings need systemd).
fn unit_privileges(without: Option<&str>) -> Vec<String> {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/pen-rs@.service"),
    )
    .unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet in the unit")
        .split_whitespace()
        .filter(|c| Some(*c) != without)
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(unit.contains("\nNoNewPrivileges=yes\n"));
    vec![
        "setpriv".into(),
        format!("--bounding-set=-all,{}", caps.join(",")),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

/// Runs `pen -f ARGS` with the unit's privileges, in a new network namespace after `setup`
/// (shell commands) when `setup` is given; returns pen (or its shell) and the notify socket.
fn spawn_with_unit_privileges(
    dir: &Path,
    without: Option<&str>,
    setup: Option<&str>,
    args: &[&str],
) -> (Child, UnixDatagram) {
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut argv: Vec<String> = Vec::new();
    if let Some(setup) = setup {
        argv.extend(["unshare", "-n", "sh", "-c"].map(String::from));
        argv.push(format!("set -e; {setup}; exec \"$@\""));
        argv.push("sh".into());
    }
    argv.extend(unit_privileges(without));
    argv.push(pen_bin().into());
    argv.push("-f".into());
    argv.extend(args.iter().map(|a| a.to_string()));
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("pen.stderr")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    (child, notify)
}

/// READY=1 within 10 s, or pen's stderr.
fn wait_ready(dir: &Path, notify: &UnixDatagram, child: &mut Child) -> Result<(), String> {
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut buf)
            && buf[..n].starts_with(b"READY=1")
        {
            return Ok(());
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
    }
    Err(read(&dir.join("pen.stderr")))
}

const VETH: &str = "ip link set lo up; ip link add d0 type veth peer name d1; \
                    ip link set d1 up; ip link set d0 up";

/// The unit's hardening must not break a mode: DSR (AF_PACKET, CAP_NET_RAW; the XDP fast
/// path, CAP_BPF), transparent (IP_TRANSPARENT, CAP_NET_ADMIN), a port below 1024, `-u` and
/// `-j`. pen runs with the unit's capability bounding set and no-new-privs; DSR without
/// CAP_NET_RAW fails, which shows the check can fail.
#[test]
fn the_units_capabilities_keep_every_mode_working() {
    pen::testing::require_root("network namespaces and a reduced capability bounding set");
    let b = Backend::start("b0", "127.0.0.1");

    // DSR on a veth in a namespace of its own, XDP fast path included.
    let dir = tempfile::tempdir().unwrap();
    let dsr = [
        "-d",
        "-O",
        "dsr_if d0",
        "10.9.0.100:80",
        "10.9.0.2",
        "10.9.0.3",
    ];
    let (mut pen, notify) = spawn_with_unit_privileges(dir.path(), None, Some(VETH), &dsr);
    let ready = wait_ready(dir.path(), &notify, &mut pen);
    stop(pen);
    ready.unwrap_or_else(|log| panic!("DSR under the unit's capabilities:\n{log}"));
    assert!(read(&dir.path().join("pen.stderr")).contains("XDP fast path attached"));

    let dir = tempfile::tempdir().unwrap();
    let (mut pen, notify) =
        spawn_with_unit_privileges(dir.path(), Some("CAP_NET_RAW"), Some(VETH), &dsr);
    let log = wait_ready(dir.path(), &notify, &mut pen).expect_err("DSR without CAP_NET_RAW");
    let _ = pen.kill();
    let _ = pen.wait();
    assert!(log.contains("CAP_NET_RAW"), "{log}");

    // Port 80 in a namespace of its own (the host's port 80 is none of this test's business).
    let dir = tempfile::tempdir().unwrap();
    let (mut pen, notify) = spawn_with_unit_privileges(
        dir.path(),
        None,
        Some("ip link set lo up"),
        &["127.0.0.1:80", "127.0.0.1:9"],
    );
    let ready = wait_ready(dir.path(), &notify, &mut pen);
    stop(pen);
    ready.unwrap_or_else(|log| panic!("port 80 under the unit's capabilities:\n{log}"));

    // Transparent, with -u nobody and -j /: the backend sees the client's address.
    let dir = tempfile::tempdir().unwrap();
    let (pen, _notify) = spawn_with_unit_privileges(
        dir.path(),
        None,
        None,
        &[
            "-O",
            "transparent",
            "-u",
            "nobody",
            "-j",
            "/",
            "127.0.0.1:0",
            &b.spec,
        ],
    );
    let err = dir.path().join("pen.stderr");
    assert!(
        wait_until(|| common::reported_in(&read(&err), "pen: listening on ").is_some()),
        "{}",
        read(&err)
    );
    let addr = common::reported_in(&read(&err), "pen: listening on ").expect("reported");
    let reply = common::get(Some(common::ip("127.0.0.2")), addr);
    let seen = b.seen();
    stop(pen);
    assert_eq!(reply.ok().as_deref(), Some("b0"), "{}", read(&err));
    assert_eq!(
        seen.last().copied().flatten().map(|a| a.ip()),
        Some(common::ip("127.0.0.2"))
    );
}
