//! A tiny DNS responder and query load generator, for the UDP tests and `scripts/bench-udp.sh`.
//!
//! ```text
//! dns_responder serve ADDR:PORT A.B.C.D        answer every A query with A.B.C.D (TTL 0)
//! dns_responder qps ADDR:PORT SECONDS INFLIGHT  send queries for SECONDS keeping INFLIGHT
//!                                               outstanding on one socket; print "qps N lost L"
//! ```
//! The integration tests include this file as a module for its wire-format helpers.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A standard query (RD set) for `name`, type A, class IN.
pub fn build_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = label.as_bytes();
        let len = bytes.len().min(63);
        q.push(len as u8);
        q.extend_from_slice(&bytes[..len]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The answer to `query`: the question echoed and one A record `ip`; `None` when the query is
/// not a well-formed single-question query (the responder stays silent, never panics).
pub fn answer(query: &[u8], ip: Ipv4Addr) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    if header[2] & 0x80 != 0 || u16::from_be_bytes([header[4], header[5]]) != 1 {
        return None;
    }
    // Walk the question name.
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        i += 1 + len;
    }
    let qend = i + 4;
    let question = query.get(12..qend)?;
    let mut r = Vec::with_capacity(qend + 16);
    r.extend_from_slice(&query[..2]);
    r.extend_from_slice(&[0x81 | (header[2] & 0x01), 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
    r.extend_from_slice(&ip.octets());
    Some(r)
}

/// The id and first A record of a reply built by [`answer`] (or any single-answer reply).
pub fn parse_a(reply: &[u8]) -> Option<(u16, Ipv4Addr)> {
    let id = u16::from_be_bytes([*reply.first()?, *reply.get(1)?]);
    if reply.get(2)? & 0x80 == 0 || u16::from_be_bytes([*reply.get(6)?, *reply.get(7)?]) == 0 {
        return None;
    }
    let tail = reply.get(reply.len().checked_sub(4)?..)?;
    Some((id, Ipv4Addr::new(tail[0], tail[1], tail[2], tail[3])))
}

/// Answer queries on `sock` forever with `ip`.
pub fn serve(sock: &UdpSocket, ip: Ipv4Addr) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        if let Some(r) = buf.get(..n).and_then(|q| answer(q, ip)) {
            let _ = sock.send_to(&r, from);
        }
    }
}

/// Queries per second to `target` over `secs` seconds with `inflight` outstanding queries.
/// Returns (answered, lost) counts; lost = queries not answered within 200 ms (re-sent).
pub fn qps(target: SocketAddr, secs: f64, inflight: usize) -> std::io::Result<(u64, u64, f64)> {
    let bind: SocketAddr = if target.is_ipv4() {
        "127.0.0.1:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::1]:0".parse().map_err(std::io::Error::other)?
    };
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut next_id: u16 = 0;
    let mut send = |sock: &UdpSocket| -> std::io::Result<()> {
        next_id = next_id.wrapping_add(1);
        sock.send_to(&build_query(next_id, "bench.example"), target)
            .map(|_| ())
    };
    for _ in 0..inflight {
        send(&sock)?;
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let (mut answered, mut lost) = (0u64, 0u64);
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        match sock.recv_from(&mut buf) {
            Ok(_) => {
                answered += 1;
                send(&sock)?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Everything outstanding is presumed lost: refill the window.
                lost += inflight as u64;
                for _ in 0..inflight {
                    send(&sock)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
    }
    Ok((answered, lost, start.elapsed().as_secs_f64()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: dns_responder serve ADDR:PORT A.B.C.D | dns_responder qps ADDR:PORT SECONDS INFLIGHT";
    let result = match args.get(1).map(String::as_str) {
        Some("serve") => {
            let (Some(addr), Some(ip)) = (args.get(2), args.get(3)) else {
                eprintln!("{usage}");
                std::process::exit(2);
            };
            let ip: Ipv4Addr = ip.parse().unwrap_or_else(|_| {
                eprintln!("dns_responder: {ip:?} is not an IPv4 address (expected A.B.C.D)");
                std::process::exit(2)
            });
            UdpSocket::bind(addr.as_str()).and_then(|s| serve(&s, ip))
        }
        Some("qps") => {
            let parsed = (
                args.get(2).and_then(|a| a.parse::<SocketAddr>().ok()),
                args.get(3).and_then(|a| a.parse::<f64>().ok()),
                args.get(4).and_then(|a| a.parse::<usize>().ok()),
            );
            let (Some(target), Some(secs), Some(inflight)) = parsed else {
                eprintln!("{usage}");
                std::process::exit(2);
            };
            qps(target, secs, inflight.max(1)).map(|(answered, lost, elapsed)| {
                println!(
                    "qps {:.0} answered {answered} lost {lost} seconds {elapsed:.2}",
                    answered as f64 / elapsed
                );
            })
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("dns_responder: {e}");
        std::process::exit(1);
    }
}
