//! penctl: send one command to a running pen's control socket and print the reply.
//!
//! `penctl host:port|/path/to/socket command...` — the words of the command are joined with
//! spaces and sent as one line, as C Pen's penctl does; the reply is printed until pen closes
//! the connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
const USAGE: &str = "usage: penctl host:port|[v6addr]:port|port|/path/to/socket command...\n       penctl --version | -V";
const VERSION: &str = concat!(
    "penctl (pen-rs ",
    env!("CARGO_PKG_VERSION"),
    ", a Rust rewrite of C Pen 0.34)"
);

/// A control address as C Pen accepts it: a path (contains `/`), `port`, `host:port`, or
/// `[v6]:port` / `v6addr:port` (the last `:` separates the port).
fn resolve(target: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = match target.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => ("127.0.0.1", target),
    };
    let port: u16 = port.parse().map_err(|_| {
        format!("bad control address \"{target}\": expected host:port, port or /path")
    })?;
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    (host, port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|e| format!("cannot resolve \"{host}\": {e}"))
}

fn exchange<S: Read + Write>(mut s: S, line: &str) -> io::Result<Vec<u8>> {
    s.write_all(line.as_bytes())?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    Ok(reply)
}

fn run(target: &str, command: &str) -> Result<Vec<u8>, String> {
    let line = format!("{command}\n");
    if target.contains('/') {
        let s = UnixStream::connect(target)
            .map_err(|e| format!("cannot connect to control socket {target}: {e}"))?;
        s.set_read_timeout(Some(REPLY_TIMEOUT)).ok();
        return exchange(s, &line).map_err(|e| format!("{target}: {e}"));
    }
    let mut last = format!("no address for {target}");
    for addr in resolve(target)? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(REPLY_TIMEOUT)).ok();
                return exchange(s, &line).map_err(|e| format!("{addr}: {e}"));
            }
            Err(e) => last = format!("cannot connect to control port {addr}: {e}"),
        }
    }
    Err(last)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((target, words)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(1);
    };
    if target == "--version" || target == "-V" {
        println!("{VERSION}");
        return ExitCode::SUCCESS;
    }
    if target == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if words.is_empty() || target == "-h" {
        eprintln!("{USAGE}");
        return ExitCode::from(1);
    }
    match run(target, &words.join(" ")) {
        Ok(reply) => {
            let mut out = io::stdout().lock();
            if out.write_all(&reply).and_then(|_| out.flush()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("penctl: {msg}");
            ExitCode::from(1)
        }
    }
}
