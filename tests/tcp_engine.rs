//! The two TCP data paths: which one serves (io_uring by default, `epoll` forcing tokio, the
//! fallback with one line saying why), and behaviour both must have that the other TCP test
//! files do not cover end to end: half-close from the server side, `tcp_fastclose`,
//! `pending_max`, bulk data both ways and more busy connections than receive buffers. The
//! behaviour tests run on the engine `PEN_TEST_TCP_ENGINE` forces (see `tests/common`), so
//! `scripts/test.sh` runs them on both.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Backend, Blackhole, Listen, Pen, STEP, connect_from, get};

#[test]
fn plain_tcp_runs_on_the_io_uring_loop_by_default() {
    let a = Backend::start("a", "127.0.0.1");
    let pen = Pen::start_with(&[], &["127.0.0.1:0", &a.spec], &[], Listen::Reported);
    assert_eq!(pen.data_path(), "io_uring", "stderr:\n{}", pen.stderr());
    assert_eq!(get(None, pen.addr()).unwrap(), "a");
    let forced = Pen::start_with(
        &["-O".into(), "io_uring".into()],
        &["127.0.0.1:0", &a.spec],
        &[],
        Listen::Reported,
    );
    assert_eq!(forced.data_path(), "io_uring");
    assert_eq!(get(None, forced.addr()).unwrap(), "a");
}

#[test]
fn epoll_forces_the_tokio_path() {
    let a = Backend::start("a", "127.0.0.1");
    let pen = Pen::start_with(
        &["-O".into(), "epoll".into()],
        &["127.0.0.1:0", &a.spec],
        &[],
        Listen::Reported,
    );
    assert_eq!(pen.data_path(), "tokio");
    assert_eq!(get(None, pen.addr()).unwrap(), "a");
    assert!(
        !pen.stderr().contains("io_uring unavailable"),
        "{}",
        pen.stderr()
    );
}

#[test]
fn without_io_uring_pen_serves_on_tokio_with_one_line_saying_why() {
    let a = Backend::start("a", "127.0.0.1");
    for pre in [vec![], vec!["-O".to_string(), "io_uring".to_string()]] {
        let pen = Pen::start_with(
            &pre,
            &["127.0.0.1:0", &a.spec],
            &[("PEN_RS_TEST_IO_URING_FAIL", "seccomp says no")],
            Listen::Reported,
        );
        assert_eq!(pen.data_path(), "tokio");
        assert_eq!(get(None, pen.addr()).unwrap(), "a");
        let why: Vec<String> = pen
            .stderr()
            .lines()
            .filter(|l| l.contains("TCP data path"))
            .map(str::to_string)
            .collect();
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(
            why[0].contains("tokio (io_uring unavailable: seccomp says no"),
            "{why:?}"
        );
    }
}

/// A backend for one connection that says `hello`, half-closes, then reports (through the
/// channel) everything the client sent until its EOF.
fn half_closing_backend() -> (String, mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = l.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(STEP)).unwrap();
        let _ = s.write_all(b"hello");
        let _ = s.shutdown(Shutdown::Write);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let _ = tx.send(got);
    });
    (spec, rx)
}

#[test]
fn a_server_that_half_closes_first_still_receives_the_client_data() {
    let (spec, rx) = half_closing_backend();
    let pen = Pen::start(&["127.0.0.1:0", &spec], Listen::Reported);
    let mut c = connect_from(None, pen.addr()).unwrap();
    let mut greeting = Vec::new();
    c.read_to_end(&mut greeting).unwrap();
    assert_eq!(greeting, b"hello", "the server's EOF reaches the client");
    c.write_all(b"late data").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rx.recv_timeout(STEP).unwrap(), b"late data");
}

#[test]
fn tcp_fastclose_up_closes_the_client_when_the_server_closes() {
    let (spec, rx) = half_closing_backend();
    let pen = Pen::start(
        &["-O", "tcp_fastclose up", "127.0.0.1:0", &spec],
        Listen::Reported,
    );
    let mut c = connect_from(None, pen.addr()).unwrap();
    let mut greeting = Vec::new();
    c.read_to_end(&mut greeting).unwrap();
    assert_eq!(greeting, b"hello");
    // Pen closed both sides when the server half-closed: the server sees EOF although the
    // client never closed.
    let got = rx
        .recv_timeout(STEP)
        .expect("the server side was closed by pen");
    assert!(got.is_empty(), "{got:?}");
    drop(c);
}

#[test]
fn pending_max_one_holds_the_second_connect_until_the_first_is_done() {
    let hole = Blackhole::new();
    let a = Backend::start("a", "127.0.0.1");
    let pen = Pen::start(
        &[
            "-r",
            "-t",
            "1",
            "-O",
            "pending_max 1",
            "127.0.0.1:0",
            &hole.spec,
            &a.spec,
        ],
        Listen::Reported,
    );
    let addr = pen.addr();
    // The first client's connect hangs on the black hole for the 1 s connect timeout.
    let first = std::thread::spawn(move || get(None, addr));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(get(None, addr).unwrap(), "a");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "the second connect did not wait for the pending one: {waited:?}"
    );
    assert_eq!(first.join().unwrap().unwrap(), "a", "failed over");
}

/// An echo backend: every connection gets back what it sent, then EOF after the client's.
fn echo_backend() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(STEP)).unwrap();
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    spec
}

/// Sends `data` through pen to the echo backend and returns what came back.
fn echo_through(pen: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let c = connect_from(None, pen).unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    let mut r = c;
    r.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    back
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn what_the_client_sends_and_its_eof_while_the_connect_hangs_reach_the_next_server() {
    // The io_uring loop takes the client's bytes while connecting; a connect that then times
    // out must hand them, and the client's EOF, to the next server (nothing lost or doubled).
    let spec = echo_backend();
    let hole = Blackhole::new();
    let pen = Pen::start(
        &["-r", "-t", "1", "127.0.0.1:0", &spec, &hole.spec],
        Listen::Reported,
    );
    // Round robin starts after slot 0: the first client tries the black hole first.
    let data = pattern(700_000, 7);
    let t = Instant::now();
    let back = echo_through(pen.addr(), data.clone());
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "the first connect did not hang: {:?}",
        t.elapsed()
    );
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the echoed bytes differ");
}

#[test]
fn bulk_data_crosses_intact_both_ways() {
    let spec = echo_backend();
    let pen = Pen::start(&["127.0.0.1:0", &spec], Listen::Reported);
    let data = pattern(8 << 20, 7);
    let back = echo_through(pen.addr(), data.clone());
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the echoed bytes differ");
}

#[test]
fn more_busy_connections_than_receive_buffers_all_complete() {
    // 300 connections × 2 directions is more than the io_uring loop's 256 receive buffers:
    // receives that find none wait for one to come back.
    let spec = echo_backend();
    let pen = Pen::start(&["-x", "1000", "127.0.0.1:0", &spec], Listen::Reported);
    let addr = pen.addr();
    let clients: Vec<_> = (0..300u16)
        .map(|i| {
            let data = pattern(64 << 10, i as u8);
            std::thread::spawn(move || echo_through(addr, data.clone()) == data)
        })
        .collect();
    let ok = clients
        .into_iter()
        .filter_map(|h| h.join().ok())
        .filter(|same| *same)
        .count();
    assert_eq!(ok, 300, "every connection echoed its bytes intact");
}

#[test]
fn a_connection_is_listed_with_its_byte_counts_and_close_n_ends_it() {
    let spec = echo_backend();
    let pen = Pen::start(
        &["-u", "root", "-C", "0", "127.0.0.1:0", &spec],
        Listen::Reported,
    );
    let cport = pen.control_port();
    let mut c = connect_from(None, pen.addr()).unwrap();
    c.write_all(b"0123456789").unwrap();
    let mut buf = [0u8; 10];
    c.read_exact(&mut buf).unwrap();
    let mut conn = String::new();
    assert!(
        common::wait_until(|| {
            conn = common::ctl(cport, "connection 0");
            conn.contains("server = 0")
        }),
        "{conn}"
    );
    common::ctl(cport, "close 0");
    let mut rest = Vec::new();
    c.set_read_timeout(Some(STEP)).unwrap();
    let r = c.read_to_end(&mut rest);
    assert!(
        matches!(r, Ok(0)) || r.is_err(),
        "pen closed the client: {r:?}"
    );
    let mut servers = String::new();
    assert!(
        common::wait_until(|| {
            servers = common::ctl(cport, "servers");
            servers.contains("sx 10 rx 10")
        }),
        "{servers}"
    );
}

/// The connect timeout `-t` (the io_uring loop's timer wheel cancels the connect; tokio's
/// timer on the other path): reported as a timeout, not as a cancelled operation, and about
/// `-t` seconds after the connect started.
#[test]
fn a_connect_timeout_is_reported_as_a_timeout_after_t_seconds() {
    let a = Backend::start("a", "127.0.0.1");
    let hole = Blackhole::new();
    let pen = Pen::start_with(
        &[],
        &["-r", "-t", "1", "127.0.0.1:0", &a.spec, &hole.spec],
        &[],
        Listen::Reported,
    );
    // Round robin starts after slot 0: the first client tries the black hole.
    let t = Instant::now();
    assert_eq!(get(None, pen.addr()).unwrap(), "a");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "failed over after {took:?}, expected the 1 s connect timeout"
    );
    let err = pen.stderr();
    assert!(
        err.contains("connect timed out after 1 s"),
        "no timeout named in pen's log:\n{err}"
    );
    assert!(!err.contains("canceled"), "{err}");
}
