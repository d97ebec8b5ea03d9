//! The io_uring loop's system calls per new connection (issue #19): the peer address comes
//! with the accept completion (no `getpeername`) and a closed connection's sockets are closed
//! by io_uring closes (no `close`). And its ring operations per new connection, counted with
//! `perf stat` on the kernel's io_uring tracepoints (needs `perf` and root): the connect
//! timeout is the loop's own timer (no `LINK_TIMEOUT` entry per connection) and successful
//! closes post no completion. Counted with `strace -c -f` on a running pen serving 100
//! connections, one request each, on the io_uring path (forced with `-O io_uring`, whatever
//! `PEN_TEST_TCP_ENGINE` says: this is about that loop). Needs `strace` and ptrace rights
//! (root here); fails with the reason otherwise.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Backend, Listen, Pen, get, wait_within};

const CONNS: usize = 100;

/// `strace -c` summary: calls per system call name.
fn parse_summary(text: &str) -> HashMap<String, u64> {
    let mut calls = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].starts_with('%') || f[0].starts_with('-') {
            continue;
        }
        let (Some(name), Ok(n)) = (f.last(), f[3].parse::<u64>()) else {
            continue;
        };
        if *name != "total" {
            calls.insert((*name).to_string(), n);
        }
    }
    calls
}

/// Runs `tool` (told to write its report to the file it is given, and to trace the process
/// `pid`) while `load` runs, stops it with SIGINT and returns its report.
fn traced(tool: &str, args: &[&str], pid: u32, load: impl FnOnce()) -> String {
    let out = std::env::temp_dir().join(format!("pen-uring-{tool}-{}.txt", std::process::id()));
    let mut t = Command::new(tool)
        .args(args)
        .arg("-o")
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            let pkg = if tool == "perf" { "linux-perf" } else { tool };
            panic!("this test needs {tool} (apt-get install {pkg}): {e}")
        });
    // The tool attaches to every thread within a moment.
    std::thread::sleep(Duration::from_millis(500));
    load();
    // The last connection's closes go to the kernel with the loop's next submission.
    std::thread::sleep(Duration::from_millis(400));
    let id = t.id().to_string();
    let killed = Command::new("kill").args(["-INT", &id]).status().unwrap();
    assert!(killed.success(), "kill -INT {id}");
    assert!(
        wait_within(Duration::from_secs(10), || matches!(
            t.try_wait(),
            Ok(Some(_))
        )),
        "{tool} did not stop"
    );
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    text
}

/// `strace -c -f` on `pid` while `load` runs: calls per system call name, and the summary.
fn strace_counts(pid: u32, load: impl FnOnce()) -> (HashMap<String, u64>, String) {
    let text = traced("strace", &["-f", "-c"], pid, load);
    (parse_summary(&text), text)
}

/// A pen on the io_uring path (forced, whatever `PEN_TEST_TCP_ENGINE` says) in front of
/// backend "a", which must live as long as the pen.
fn uring_pen() -> (Backend, Pen) {
    let a = Backend::start("a", "127.0.0.1");
    let pen = Pen::start_with(
        &["-O".into(), "io_uring".into()],
        &["127.0.0.1:0", &a.spec],
        &[],
        Listen::Reported,
    );
    assert_eq!(pen.data_path(), "io_uring", "stderr:\n{}", pen.stderr());
    (a, pen)
}

#[test]
fn an_idle_loop_sleeps_instead_of_ticking() {
    // No connection, none queued, nothing timed: the loop waits in the ring until a client or
    // a control request comes, rather than turning every 200 ms (15 turns in 3 s).
    let (_a, pen) = uring_pen();
    let (calls, text) = strace_counts(pen.pid(), || std::thread::sleep(Duration::from_secs(3)));
    let enters = calls.get("io_uring_enter").copied().unwrap_or(0);
    assert!(
        enters <= 4,
        "{enters} io_uring_enter in 3.9 s of idleness:\n{text}"
    );
    // And it still wakes at once for a client.
    assert_eq!(get(None, pen.addr()).unwrap(), "a");
}

#[test]
fn new_connections_make_no_getpeername_and_no_close_calls() {
    let (_a, pen) = uring_pen();
    for _ in 0..5 {
        assert_eq!(get(None, pen.addr()).unwrap(), "a");
    }
    let (calls, text) = strace_counts(pen.pid(), || {
        for _ in 0..CONNS {
            assert_eq!(get(None, pen.addr()).unwrap(), "a");
        }
    });
    assert!(
        calls.contains_key("io_uring_enter"),
        "strace saw no io_uring_enter (not attached? ptrace not permitted?):\n{text}"
    );
    let total: u64 = calls.values().sum();
    eprintln!(
        "system calls of pen for {CONNS} connections: {total} ({:.2} per connection): {calls:?}",
        total as f64 / CONNS as f64
    );
    assert_eq!(calls.get("getpeername"), None, "{text}");
    assert_eq!(calls.get("close"), None, "{text}");
    assert!(
        calls.get("socket").copied().unwrap_or(0) <= CONNS as u64,
        "one upstream socket per connection at most:\n{text}"
    );
}

/// Runs `perf stat` with `events` (each `-e` argument, filters included) on `pid` while `load`
/// runs; returns the counts in the order of `events`.
fn perf_counts(pid: u32, events: &[&str], load: impl FnOnce()) -> Vec<u64> {
    let mut args = vec!["stat", "-x", ","];
    for e in events {
        args.extend(e.split_whitespace());
    }
    let text = traced("perf", &args, pid, load);
    let counts: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("io_uring:"))
        .filter_map(|l| l.split(',').next()?.trim().parse().ok())
        .collect();
    assert_eq!(
        counts.len(),
        events.len(),
        "perf stat counted no io_uring tracepoints (not root? no tracefs?):\n{text}"
    );
    counts
}

#[test]
fn new_connections_submit_no_linked_timeout_and_post_no_close_completions() {
    let (_a, pen) = uring_pen();
    for _ in 0..5 {
        assert_eq!(get(None, pen.addr()).unwrap(), "a");
    }
    // Opcodes of include/uapi/linux/io_uring.h: CLOSE 19, LINK_TIMEOUT 15.
    let counts = perf_counts(
        pen.pid(),
        &[
            "-e io_uring:io_uring_submit_req",
            "-e io_uring:io_uring_submit_req --filter opcode==15",
            "-e io_uring:io_uring_submit_req --filter opcode==19",
            "-e io_uring:io_uring_complete",
        ],
        || {
            for _ in 0..CONNS {
                assert_eq!(get(None, pen.addr()).unwrap(), "a");
            }
        },
    );
    let (submitted, link_timeouts, closes, completions) =
        (counts[0], counts[1], counts[2], counts[3]);
    eprintln!(
        "ring operations of pen for {CONNS} connections: {submitted} submitted ({:.2} per \
         connection, {closes} closes), {completions} completions ({:.2} per connection)",
        submitted as f64 / CONNS as f64,
        completions as f64 / CONNS as f64
    );
    assert!(
        closes >= 2 * CONNS as u64,
        "both sockets of each connection closed in the ring: {closes} closes"
    );
    assert_eq!(link_timeouts, 0, "no linked timeout per connect");
    // Completions of a connection: accept, connect, a send each way, four receives (request,
    // response, the two EOFs); none for its two closes nor a linked timeout (main had 11).
    assert!(
        completions <= 8 * CONNS as u64,
        "{completions} completions for {CONNS} connections"
    );
}
