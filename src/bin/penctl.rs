//! penctl: send one command to a running pen's control socket and print the reply.
//!
//! `penctl host:port|/path/to/socket command...` — the words of the command are joined with
//! spaces and sent as one line, as C Pen's penctl does; the reply is printed until pen closes
//! the connection.
//!
//! `penctl --each TARGET,TARGET,... [--same] command...` (pen-rs addition) sends the same
//! line to several pens (one cluster behind ECMP or VRRP), one after the other, and prints
//! every reply line prefixed with `TARGET: `. It exits 1 if any pen could not be reached
//! (after trying all of them) and, with `--same`, 2 if the replies are not all equal:
//! `penctl --each /run/pen1.ctl,/run/pen2.ctl --same table_hash` checks that they agree.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
const USAGE: &str = "usage: penctl host:port|[v6addr]:port|port|/path/to/socket command...\n       penctl --each TARGET,TARGET,... [--same] command...\n       penctl --version | -V";
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

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Invocation {
    Version,
    Help,
    One {
        target: String,
        command: String,
    },
    /// `--each T1,T2,... [--same] command...`.
    Each {
        targets: Vec<String>,
        same: bool,
        command: String,
    },
}

/// Parses penctl's arguments (without the program name). Errors say what is accepted.
fn parse_args(args: &[String]) -> Result<Invocation, String> {
    let Some((first, rest)) = args.split_first() else {
        return Err(USAGE.to_string());
    };
    match first.as_str() {
        "--version" | "-V" => return Ok(Invocation::Version),
        "--help" => return Ok(Invocation::Help),
        "-h" => return Err(USAGE.to_string()),
        "--each" => {}
        _ if rest.is_empty() => return Err(USAGE.to_string()),
        _ => {
            return Ok(Invocation::One {
                target: first.clone(),
                command: rest.join(" "),
            });
        }
    }
    let Some((list, mut rest)) = rest.split_first() else {
        return Err(format!(
            "--each needs a comma-separated list of control addresses\n{USAGE}"
        ));
    };
    let targets: Vec<String> = list.split(',').map(str::to_string).collect();
    if let Some(bad) = targets.iter().find(|t| t.trim().is_empty()) {
        return Err(format!(
            "--each {list:?}: empty control address {bad:?}; expected TARGET,TARGET,... (host:port, port or /path)"
        ));
    }
    let mut same = false;
    if rest.first().is_some_and(|w| w == "--same") {
        same = true;
        rest = rest.get(1..).unwrap_or(&[]);
    }
    if rest.is_empty() {
        return Err(format!("--each {list}: no command given\n{USAGE}"));
    }
    Ok(Invocation::Each {
        targets,
        same,
        command: rest.join(" "),
    })
}

/// Every line of `reply` prefixed with `target: ` (a last line without newline gets one).
fn prefixed(target: &str, reply: &[u8]) -> String {
    String::from_utf8_lossy(reply)
        .lines()
        .map(|l| format!("{target}: {l}\n"))
        .collect()
}

/// With `--same`: `None` when all answered replies are equal, else a message naming the
/// first target whose reply differs from the first one's.
fn differing(replies: &[(String, Vec<u8>)]) -> Option<String> {
    let (t0, r0) = replies.first()?;
    replies
        .iter()
        .find(|(_, r)| r != r0)
        .map(|(t, _)| format!("replies differ: {t} does not reply what {t0} replies"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inv = match parse_args(&args) {
        Ok(i) => i,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(1);
        }
    };
    let (targets, same, command) = match inv {
        Invocation::Version => {
            println!("{VERSION}");
            return ExitCode::SUCCESS;
        }
        Invocation::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Invocation::One { target, command } => {
            return match run(&target, &command) {
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
            };
        }
        Invocation::Each {
            targets,
            same,
            command,
        } => (targets, same, command),
    };
    let mut failed = false;
    let mut replies = Vec::new();
    let mut out = io::stdout().lock();
    for t in &targets {
        match run(t, &command) {
            Ok(reply) => {
                if out.write_all(prefixed(t, &reply).as_bytes()).is_err() {
                    return ExitCode::from(1);
                }
                replies.push((t.clone(), reply));
            }
            Err(msg) => {
                eprintln!("penctl: {msg}");
                failed = true;
            }
        }
    }
    if out.flush().is_err() || failed {
        return ExitCode::from(1);
    }
    if same && let Some(msg) = differing(&replies) {
        eprintln!("penctl: {msg}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn one_target_is_c_pens_form() {
        assert_eq!(
            parse_args(&args("127.0.0.1:10080 server 1 weight 2")),
            Ok(Invocation::One {
                target: "127.0.0.1:10080".into(),
                command: "server 1 weight 2".into()
            })
        );
        assert_eq!(parse_args(&args("-V")), Ok(Invocation::Version));
        assert!(parse_args(&args("10080")).is_err());
        assert!(parse_args(&[]).is_err());
    }

    #[test]
    fn each_takes_a_list_an_optional_same_and_a_command() {
        assert_eq!(
            parse_args(&args("--each /r/a.ctl,10.0.0.2:10080 --same table_hash")),
            Ok(Invocation::Each {
                targets: vec!["/r/a.ctl".into(), "10.0.0.2:10080".into()],
                same: true,
                command: "table_hash".into()
            })
        );
        assert_eq!(
            parse_args(&args("--each 1,2 server 0 blacklist 5")),
            Ok(Invocation::Each {
                targets: vec!["1".into(), "2".into()],
                same: false,
                command: "server 0 blacklist 5".into()
            })
        );
        let e = parse_args(&args("--each a,,b servers")).unwrap_err();
        assert!(e.contains("empty control address"), "{e}");
        assert!(parse_args(&args("--each a,b --same")).is_err());
        assert!(parse_args(&args("--each")).is_err());
    }

    #[test]
    fn replies_are_prefixed_and_compared() {
        assert_eq!(prefixed("p1", b"a\nb"), "p1: a\np1: b\n");
        assert_eq!(prefixed("p1", b""), "");
        let r = |t: &str, b: &str| (t.to_string(), b.as_bytes().to_vec());
        assert_eq!(differing(&[r("a", "x\n"), r("b", "x\n")]), None);
        let d = differing(&[r("a", "x\n"), r("b", "x\n"), r("c", "y\n")]).unwrap();
        assert!(d.contains("c does not reply what a replies"), "{d}");
    }
}
