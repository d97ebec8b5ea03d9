//! Built-in backends run as `pen-lab backend <kind> ...` processes inside a lab namespace:
//! an HTTP responder whose body names it, a DNS responder answering A queries with a fixed
//! address, and TCP/UDP echo. The protocol parsing and answer building are pure functions
//! (unit-tested below) on independent parsers, `httparse` and `hickory-proto`, so the lab's
//! oracle is no copy of pen's own code; `run_backend` is the thin tokio shell around them.
//!
//! HTTP/1.1 with keep-alive: `GET /remote_addr` → `"{peer_ip}\n"`, or
//! `"{peer_ip} xff={X-Forwarded-For}\n"` when that header is present; `GET /bytes/N` → a
//! body of N bytes (up to 16 MiB) that starts with `"{name}\n"` and is padded with dots (the
//! replies of the HTTP trace, so that a replay can compare byte counts with the capture);
//! every other path → `"{name}\n"`. Status is always 200 for a parseable request, 400 otherwise.
//! DNS over UDP: an A/IN question gets one answer (`answer`, TTL 0, authoritative); other
//! types get NOERROR with no answer; other opcodes NOTIMP; malformed packets and responses are
//! ignored.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which built-in backend to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    Http { name: String },
    Dns { name: String, answer: Ipv4Addr },
    TcpEcho,
    UdpEcho,
}

impl BackendKind {
    /// The subcommand word: `http`, `dns`, `tcp-echo`, `udp-echo`.
    pub fn word(&self) -> &'static str {
        match self {
            BackendKind::Http { .. } => "http",
            BackendKind::Dns { .. } => "dns",
            BackendKind::TcpEcho => "tcp-echo",
            BackendKind::UdpEcho => "udp-echo",
        }
    }

    fn is_udp(&self) -> bool {
        matches!(self, BackendKind::Dns { .. } | BackendKind::UdpEcho)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendKind::Http { name } => write!(f, "http {name}"),
            BackendKind::Dns { name, answer } => write!(f, "dns {name} (A {answer})"),
            other => f.write_str(other.word()),
        }
    }
}

/// The arguments after the `pen-lab` binary path that start this backend, e.g.
/// `["backend", "http", "--name", "web1", "--listen", "10.0.0.2:80"]`.
pub fn backend_argv(kind: &BackendKind, listen: &[SocketAddr]) -> Vec<String> {
    let mut v = vec!["backend".to_string(), kind.word().to_string()];
    match kind {
        BackendKind::Http { name } => {
            v.extend(["--name".to_string(), name.clone()]);
        }
        BackendKind::Dns { name, answer } => {
            v.extend([
                "--name".to_string(),
                name.clone(),
                "--answer".to_string(),
                answer.to_string(),
            ]);
        }
        BackendKind::TcpEcho | BackendKind::UdpEcho => {}
    }
    for a in listen {
        v.extend(["--listen".to_string(), a.to_string()]);
    }
    v
}

/// Parses what [`backend_argv`] builds. A leading `"backend"` word is optional, so both the
/// full argument list and the list after the subcommand are accepted. `--listen` may repeat
/// and may hold a comma-separated list; `--opt=value` is accepted too.
pub fn parse_backend_args(args: &[String]) -> Result<(BackendKind, Vec<SocketAddr>)> {
    const USAGE: &str = "expected: backend http|dns|tcp-echo|udp-echo [--name NAME] [--answer IPV4] --listen IP:PORT [--listen IP:PORT ...]";
    let mut it = args.iter().map(String::as_str).peekable();
    if it.peek() == Some(&"backend") {
        it.next();
    }
    let word = it
        .next()
        .ok_or_else(|| anyhow!("missing backend kind; {USAGE}"))?;
    let mut name: Option<String> = None;
    let mut answer: Option<Ipv4Addr> = None;
    let mut listen: Vec<SocketAddr> = Vec::new();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("option {key} needs a value; {USAGE}")),
            }
        };
        match key {
            "--name" => name = Some(value()?),
            "--answer" => {
                let v = value()?;
                answer = Some(v.parse().map_err(|_| {
                    anyhow!("--answer {v:?} is not an IPv4 address (expected e.g. 10.0.0.53)")
                })?);
            }
            "--listen" => {
                for part in value()?.split(',').filter(|p| !p.is_empty()) {
                    listen.push(part.parse().map_err(|_| {
                        anyhow!("--listen {part:?} is not IP:PORT (expected e.g. 10.0.0.2:80 or [fd00::2]:80)")
                    })?);
                }
            }
            other => bail!("unknown backend option {other:?}; {USAGE}"),
        }
    }
    if listen.is_empty() {
        bail!("backend {word}: at least one --listen IP:PORT is required");
    }
    let kind = match word {
        "http" => BackendKind::Http {
            name: name
                .ok_or_else(|| anyhow!("backend http needs --name NAME (the body it serves)"))?,
        },
        "dns" => BackendKind::Dns {
            name: name.unwrap_or_else(|| "dns".to_string()),
            answer: answer.ok_or_else(|| {
                anyhow!("backend dns needs --answer IPV4 (the A record it returns)")
            })?,
        },
        "tcp-echo" => BackendKind::TcpEcho,
        "udp-echo" => BackendKind::UdpEcho,
        other => bail!("unknown backend kind {other:?}; {USAGE}"),
    };
    Ok((kind, listen))
}

// ---------------------------------------------------------------------------------------------
// HTTP (pure)

/// Largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read (and discarded).
pub const MAX_BODY: usize = 1024 * 1024;
/// Most header lines in one request head.
pub const MAX_HEADERS: usize = 64;

/// Why a request head is refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpHeadError {
    /// What `httparse` found wrong: request line, version (HTTP/1.0 or 1.1), a header line.
    #[error("malformed request head: {0}")]
    Malformed(#[from] httparse::Error),
    /// No blank line after the headers.
    #[error("request head is incomplete: no blank line after the headers")]
    Incomplete,
    /// A method that is not upper-case letters (`get` is not `GET`).
    #[error("bad method {0:?}: upper-case ASCII letters are accepted, e.g. GET")]
    BadMethod(String),
    /// A header value that is not UTF-8.
    #[error("header {0:?} has a value that is not UTF-8")]
    NotUtf8(String),
}

/// Why a declared body length is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad Content-Length {0:?}: a decimal byte count is accepted")]
pub struct BadContentLength(pub String);

/// A parsed HTTP/1.x request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(String, String)>,
}

impl HttpRequest {
    /// All values of header `name` (case-insensitive), joined with ", ".
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(", "))
        }
    }

    /// Declared body length (0 when absent).
    pub fn content_length(&self) -> Result<usize, BadContentLength> {
        match self.header("content-length") {
            None => Ok(0),
            Some(v) => v.trim().parse::<usize>().map_err(|_| BadContentLength(v)),
        }
    }

    /// Whether the connection stays open after the response.
    pub fn keep_alive(&self) -> bool {
        let conn = self
            .header("connection")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if self.minor == 0 {
            conn.split(',').any(|t| t.trim() == "keep-alive")
        } else {
            !conn.split(',').any(|t| t.trim() == "close")
        }
    }
}

/// Parses the request head at the start of `buf` with `httparse` (an independent parser, so
/// the backend is no copy of pen's own HTTP code): `Ok(None)` while the head is incomplete,
/// else the request and the length of its head.
pub fn parse_http_request(buf: &[u8]) -> Result<Option<(HttpRequest, usize)>, HttpHeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf)? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    // A complete parse has all three parts; `Incomplete` only guards the types.
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpHeadError::Incomplete);
    };
    if !method.bytes().all(|c| c.is_ascii_uppercase()) {
        return Err(HttpHeadError::BadMethod(method.to_string()));
    }
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let v = std::str::from_utf8(h.value).map_err(|_| HttpHeadError::NotUtf8(h.name.into()))?;
        headers.push((h.name.to_string(), v.trim().to_string()));
    }
    let request = HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        minor,
        headers,
    };
    Ok(Some((request, len)))
}

/// Parses a whole request head (request line and headers, up to and including the blank line).
pub fn parse_http_head(head: &[u8]) -> Result<HttpRequest, HttpHeadError> {
    parse_http_request(head)?
        .map(|(req, _)| req)
        .ok_or(HttpHeadError::Incomplete)
}

/// The largest body `GET /bytes/N` makes.
pub const MAX_SIZED_BODY: usize = 16 << 20;

/// The body the HTTP backend `name` sends for `req` from `peer`.
pub fn http_body(name: &str, req: &HttpRequest, peer: IpAddr) -> String {
    let path = req.path.split(['?', '#']).next().unwrap_or_default();
    if path == "/remote_addr" {
        match req.header("x-forwarded-for") {
            Some(xff) => format!("{peer} xff={xff}\n"),
            None => format!("{peer}\n"),
        }
    } else if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n <= MAX_SIZED_BODY)
    {
        let mut body = format!("{name}\n");
        let pad = n.saturating_sub(body.len());
        body.extend(std::iter::repeat_n('.', pad));
        body
    } else {
        format!("{name}\n")
    }
}

/// A complete response with Content-Length (body omitted for HEAD).
pub fn http_response(status: u16, body: &str, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// DNS (pure, on hickory-proto: an independent codec, so the lab's DNS oracle is not pen's code)

/// DNS type A.
pub const QTYPE_A: u16 = 1;
/// DNS class IN.
pub const QCLASS_IN: u16 = 1;
/// RCODE not implemented.
pub const RCODE_NOTIMP: u8 = 4;

/// The question of a DNS query (exactly one question is accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuestion {
    pub id: u16,
    /// The header's opcode (0 = QUERY).
    pub opcode: u8,
    /// The header's RD bit, copied into the answer.
    pub recursion_desired: bool,
    /// Dotted name as received, without the trailing dot ("" for the root).
    pub qname: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question as decoded, copied into the answer.
    pub query: Query,
}

/// Parses a DNS query: QR=0 and exactly one question, no compression in the question.
/// Returns `None` for anything malformed (the responder ignores it).
pub fn parse_dns_query(buf: &[u8]) -> Option<DnsQuestion> {
    let msg = Message::from_vec(buf).ok()?;
    let md = &msg.metadata;
    if md.message_type != MessageType::Query || msg.queries.len() != 1 {
        return None;
    }
    // A query's question is never compressed (nothing precedes it to point to).
    if buf.get(12).is_some_and(|b| b & 0xC0 != 0) {
        return None;
    }
    let query = msg.queries.first()?.clone();
    Some(DnsQuestion {
        id: md.id,
        opcode: u8::from(md.op_code),
        recursion_desired: md.recursion_desired,
        qname: query.name().to_ascii().trim_end_matches('.').to_string(),
        qtype: u16::from(query.query_type()),
        qclass: u16::from(query.query_class()),
        query,
    })
}

/// The answer to `q`: A/IN → one A record `answer` with TTL 0; other types → NOERROR, no
/// answer; opcodes other than QUERY → NOTIMP. Always authoritative, RD copied.
pub fn dns_answer(q: &DnsQuestion, answer: Ipv4Addr) -> Vec<u8> {
    let mut msg = Message::response(q.id, OpCode::from_u8(q.opcode));
    msg.metadata.authoritative = true;
    msg.metadata.recursion_desired = q.recursion_desired;
    msg.add_query(q.query.clone());
    if q.opcode != 0 {
        msg.metadata.response_code = ResponseCode::NotImp;
    } else if q.qtype == QTYPE_A && q.qclass == QCLASS_IN {
        msg.add_answer(Record::from_rdata(
            q.query.name().clone(),
            0,
            RData::A(A(answer)),
        ));
    }
    // Encoding a message built from a decoded question cannot fail; an empty reply would
    // only be ignored by the client.
    msg.to_vec().unwrap_or_default()
}

/// A DNS query for `qname` (type `qtype`, class IN, recursion desired).
pub fn build_dns_query(id: u16, qname: &str, qtype: u16) -> Result<Vec<u8>> {
    let mut total = 0;
    for label in qname
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            bail!("DNS name {qname:?}: label {label:?} is longer than 63 bytes");
        }
        total += label.len() + 1;
        if total > 254 {
            bail!("DNS name {qname:?} is longer than 253 characters");
        }
    }
    let name = Name::from_ascii(format!("{}.", qname.trim_end_matches('.')))
        .with_context(|| format!("DNS name {qname:?}"))?;
    let mut msg = Message::query();
    msg.metadata.id = id;
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name, RecordType::from(qtype)));
    msg.to_vec()
        .with_context(|| format!("encoding a DNS query for {qname:?}"))
}

/// What a DNS response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsResponse {
    pub id: u16,
    pub rcode: u8,
    /// A records of the answer section, in order.
    pub a: Vec<Ipv4Addr>,
}

/// Parses a DNS response (QR=1); collects the A records of the answer section.
pub fn parse_dns_response(buf: &[u8]) -> Option<DnsResponse> {
    let msg = Message::from_vec(buf).ok()?;
    let md = &msg.metadata;
    if md.message_type != MessageType::Response {
        return None;
    }
    let a = msg
        .answers
        .iter()
        .filter(|r| r.dns_class == DNSClass::IN)
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    Some(DnsResponse {
        id: md.id,
        rcode: (u16::from(md.response_code) & 0x0F) as u8,
        a,
    })
}

// ---------------------------------------------------------------------------------------------
// The tokio shell

fn bind_tcp(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .with_context(|| format!("creating a TCP socket for {addr}"))?;
    sock.set_reuse_address(true)
        .with_context(|| format!("SO_REUSEADDR on {addr}"))?;
    sock.bind(&addr.into()).with_context(|| {
        format!("cannot bind TCP {addr} (is the address on an interface here?)")
    })?;
    sock.listen(1024)
        .with_context(|| format!("cannot listen on TCP {addr}"))?;
    sock.set_nonblocking(true)?;
    let std: std::net::TcpListener = sock.into();
    tokio::net::TcpListener::from_std(std).with_context(|| format!("registering TCP {addr}"))
}

fn bind_udp(addr: SocketAddr) -> Result<tokio::net::UdpSocket> {
    let std = std::net::UdpSocket::bind(addr).with_context(|| {
        format!("cannot bind UDP {addr} (is the address on an interface here?)")
    })?;
    std.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(std).with_context(|| format!("registering UDP {addr}"))
}

/// Runs the backend on every address in `listen` until SIGTERM or SIGINT. Binds in the
/// calling thread's network namespace (the process is normally started inside one).
pub fn run_backend(kind: BackendKind, listen: Vec<SocketAddr>) -> Result<()> {
    if listen.is_empty() {
        bail!("backend {kind}: no --listen address given");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("creating the backend's tokio runtime")?;
    rt.block_on(serve(kind, listen))
}

async fn serve(kind: BackendKind, listen: Vec<SocketAddr>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut tasks = tokio::task::JoinSet::new();
    for &addr in &listen {
        if kind.is_udp() {
            let sock = bind_udp(addr)?;
            tasks.spawn(udp_loop(kind.clone(), sock));
        } else {
            let l = bind_tcp(addr)?;
            tasks.spawn(tcp_accept_loop(kind.clone(), l));
        }
    }
    let addrs: Vec<String> = listen.iter().map(ToString::to_string).collect();
    println!("pen-lab backend {kind} listening on {}", addrs.join(" "));
    tokio::select! {
        _ = term.recv() => println!("pen-lab backend {kind}: SIGTERM, exiting"),
        _ = int.recv() => println!("pen-lab backend {kind}: SIGINT, exiting"),
        Some(r) = tasks.join_next() => {
            // A listener loop only ends on a fatal error.
            match r {
                Ok(Err(e)) => return Err(e),
                Ok(Ok(())) => bail!("backend {kind}: a listener stopped unexpectedly"),
                Err(e) => bail!("backend {kind}: a listener task failed: {e}"),
            }
        }
    }
    tasks.abort_all();
    Ok(())
}

async fn udp_loop(kind: BackendKind, sock: tokio::net::UdpSocket) -> Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("pen-lab backend {kind}: recv: {e}");
                continue;
            }
        };
        let data = buf.get(..n).unwrap_or(&[]);
        let reply = match &kind {
            BackendKind::Dns { name, answer } => match parse_dns_query(data) {
                Some(q) => {
                    println!("{name} {peer} query {} type {}", q.qname, q.qtype);
                    dns_answer(&q, *answer)
                }
                None => {
                    println!("{name} {peer} ignored a malformed {n}-byte packet");
                    continue;
                }
            },
            _ => data.to_vec(),
        };
        if let Err(e) = sock.send_to(&reply, peer).await {
            eprintln!("pen-lab backend {kind}: send to {peer}: {e}");
        }
    }
}

async fn tcp_accept_loop(kind: BackendKind, l: tokio::net::TcpListener) -> Result<()> {
    loop {
        let (stream, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("pen-lab backend {kind}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let kind = kind.clone();
        tokio::spawn(async move {
            let r = match &kind {
                BackendKind::Http { name } => http_conn(name, stream, peer).await,
                _ => tcp_echo(stream).await,
            };
            if let Err(e) = r {
                eprintln!("pen-lab backend {kind}: {peer}: {e:#}");
            }
        });
    }
}

async fn tcp_echo(mut stream: tokio::net::TcpStream) -> Result<()> {
    let (mut r, mut w) = stream.split();
    tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await?;
    Ok(())
}

/// Idle time after which an HTTP connection is closed.
const HTTP_IDLE: Duration = Duration::from_secs(30);

/// Appends what `s` has next to `buf`; `false` at end of stream or after [`HTTP_IDLE`].
async fn read_more(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Result<bool> {
    let mut chunk = [0u8; 4096];
    let n = match tokio::time::timeout(HTTP_IDLE, s.read(&mut chunk)).await {
        Ok(r) => r?,
        Err(_) => return Ok(false),
    };
    buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
    Ok(n > 0)
}

async fn http_conn(name: &str, mut s: tokio::net::TcpStream, peer: SocketAddr) -> Result<()> {
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Read one request head.
        let (req, head_end) = loop {
            match parse_http_request(&buf) {
                Ok(Some(done)) => break done,
                Ok(None) => {}
                Err(why) => {
                    s.write_all(&http_response(400, &format!("{why}\n"), false, false))
                        .await?;
                    return Ok(());
                }
            }
            if buf.len() > MAX_HEAD {
                s.write_all(&http_response(
                    400,
                    "request head too large\n",
                    false,
                    false,
                ))
                .await?;
                return Ok(());
            }
            if !read_more(&mut s, &mut buf).await? {
                return Ok(());
            }
        };
        let body_len = match req.content_length() {
            Ok(n) if n <= MAX_BODY && req.header("transfer-encoding").is_none() => n,
            _ => {
                s.write_all(&http_response(
                    400,
                    "unsupported request body\n",
                    false,
                    false,
                ))
                .await?;
                return Ok(());
            }
        };
        // Discard the body.
        while buf.len() < head_end + body_len {
            if !read_more(&mut s, &mut buf).await? {
                return Ok(());
            }
        }
        buf.drain(..head_end + body_len);
        let body = http_body(name, &req, peer.ip());
        let keep = req.keep_alive();
        println!(
            "{name} {peer} {} {} xff={}",
            req.method,
            req.path,
            req.header("x-forwarded-for").unwrap_or_else(|| "-".into())
        );
        s.write_all(&http_response(200, &body, keep, req.method == "HEAD"))
            .await?;
        if !keep {
            s.shutdown().await?;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn backend_argv_round_trips_through_parse_backend_args() {
        let listen: Vec<SocketAddr> = vec![
            "10.0.0.2:80".parse().unwrap(),
            "[fd00::2]:8080".parse().unwrap(),
        ];
        for kind in [
            BackendKind::Http {
                name: "web1".into(),
            },
            BackendKind::Dns {
                name: "dns1".into(),
                answer: Ipv4Addr::new(10, 9, 9, 1),
            },
            BackendKind::TcpEcho,
            BackendKind::UdpEcho,
        ] {
            let argv = backend_argv(&kind, &listen);
            assert_eq!(argv.first().map(String::as_str), Some("backend"));
            assert_eq!(
                parse_backend_args(&argv).unwrap(),
                (kind.clone(), listen.clone())
            );
            // Also without the leading "backend" word.
            assert_eq!(
                parse_backend_args(&argv[1..]).unwrap(),
                (kind, listen.clone())
            );
        }
        assert_eq!(
            backend_argv(
                &BackendKind::Http {
                    name: "web1".into()
                },
                &listen[..1]
            ),
            sv(&[
                "backend",
                "http",
                "--name",
                "web1",
                "--listen",
                "10.0.0.2:80"
            ])
        );
    }

    #[test]
    fn backend_args_accept_inline_values_and_comma_lists() {
        let (kind, listen) =
            parse_backend_args(&sv(&["tcp-echo", "--listen=10.0.0.2:7,10.0.0.3:7"])).unwrap();
        assert_eq!(kind, BackendKind::TcpEcho);
        assert_eq!(listen.len(), 2);
    }

    #[test]
    fn bad_backend_args_say_what_is_expected() {
        let cases: &[(&[&str], &str)] = &[
            (&["http", "--listen", "10.0.0.2:80"], "--name"),
            (&["dns", "--listen", "10.0.0.2:53"], "--answer"),
            (&["http", "--name", "w"], "--listen"),
            (&["ftp", "--listen", "1.2.3.4:21"], "ftp"),
            (&["http", "--name", "w", "--listen", "10.0.0.2"], "IP:PORT"),
            (
                &["dns", "--answer", "example", "--listen", "1.2.3.4:53"],
                "IPv4",
            ),
            (&["http", "--bogus", "x"], "--bogus"),
            (&["http", "--name"], "needs a value"),
            (&[], "missing backend kind"),
        ];
        for (args, needle) in cases {
            let err = format!("{:#}", parse_backend_args(&sv(args)).unwrap_err());
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn http_head_parses_request_line_and_headers() {
        let raw = b"GET /remote_addr?x=1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.9\r\nx-forwarded-for: 10.0.0.8\r\n\r\n";
        let (req, len) = parse_http_request(raw).unwrap().unwrap();
        assert_eq!(len, raw.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/remote_addr?x=1");
        assert_eq!(req.minor, 1);
        assert_eq!(req.header("HOST").as_deref(), Some("a"));
        assert_eq!(
            req.header("x-forwarded-for").as_deref(),
            Some("10.0.0.9, 10.0.0.8")
        );
        assert!(req.keep_alive());
    }

    #[test]
    fn remote_addr_reports_peer_and_xff_other_paths_report_the_name() {
        let peer: IpAddr = "10.0.1.1".parse().unwrap();
        let plain = parse_http_head(b"GET /remote_addr HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(http_body("web1", &plain, peer), "10.0.1.1\n");
        let xff =
            parse_http_head(b"GET /remote_addr HTTP/1.1\r\nX-Forwarded-For: 10.0.0.2\r\n\r\n")
                .unwrap();
        assert_eq!(http_body("web1", &xff, peer), "10.0.1.1 xff=10.0.0.2\n");
        let sized = parse_http_head(b"GET /bytes/500?obj=7 HTTP/1.1\r\n\r\n").unwrap();
        let body = http_body("web1", &sized, peer);
        assert_eq!(body.len(), 500);
        assert!(body.starts_with("web1\n..."));
        let huge = parse_http_head(b"GET /bytes/99999999999 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(http_body("web1", &huge, peer), "web1\n");
        for path in ["/", "/index.html", "/remote_addr/x", "/bytes/x"] {
            let req = parse_http_head(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
            assert_eq!(http_body("web1", &req, peer), "web1\n", "{path}");
        }
    }

    #[test]
    fn keep_alive_follows_http_version_and_connection_header() {
        let h = |s: &str| parse_http_head(s.as_bytes()).unwrap();
        assert!(!h("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(h("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
    }

    #[test]
    fn malformed_http_heads_are_rejected_not_panicked_on() {
        for raw in [
            &b"\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse_http_head(raw).is_err(), "{raw:?}");
        }
        let req = parse_http_head(b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n").unwrap();
        assert!(req.content_length().is_err());
    }

    #[test]
    fn request_heads_follow_the_http_grammar_not_a_lenient_split() {
        // Accepted by the old hand-written split, refused by httparse's grammar: a header
        // name with a separator, a control character in the target.
        for raw in [
            &b"GET / HTTP/1.1\r\nBad(Name): x\r\n\r\n"[..],
            b"GET /a\x01b HTTP/1.1\r\n\r\n",
        ] {
            let err = parse_http_head(raw).unwrap_err();
            assert!(matches!(err, HttpHeadError::Malformed(_)), "{raw:?}: {err}");
        }
        assert_eq!(
            parse_http_head(b"get / HTTP/1.1\r\n\r\n").unwrap_err(),
            HttpHeadError::BadMethod("get".into())
        );
        // An incomplete head is "not yet", a pipelined one ends where its head does.
        assert_eq!(
            parse_http_request(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Ok(None)
        );
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let (req, len) = parse_http_request(two).unwrap().unwrap();
        assert_eq!((req.path.as_str(), len), ("/a", 19));
        let err = parse_http_head(b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
            .unwrap()
            .content_length()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad Content-Length \"nope\": a decimal byte count is accepted"
        );
    }

    #[test]
    fn dns_messages_declaring_records_they_lack_are_malformed() {
        // The old hand-written parser read only the question and accepted these.
        let good = build_dns_query(1, "a.b", QTYPE_A).unwrap();
        let mut lying_query = good.clone();
        lying_query[7] = 3; // ANCOUNT 3, no answer present
        assert!(parse_dns_query(&lying_query).is_none());
        let ans = dns_answer(&parse_dns_query(&good).unwrap(), Ipv4Addr::LOCALHOST);
        let mut lying_answer = ans.clone();
        lying_answer[11] = 1; // ARCOUNT 1, no additional record present
        assert!(parse_dns_response(&lying_answer).is_none());
        assert!(parse_dns_response(&ans).is_some());
    }

    #[test]
    fn http_response_has_length_and_connection_headers() {
        let r = String::from_utf8(http_response(200, "web1\n", true, false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 5\r\n"));
        assert!(r.contains("Connection: keep-alive\r\n"));
        assert!(r.ends_with("\r\n\r\nweb1\n"));
        let head = String::from_utf8(http_response(200, "web1\n", false, true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn dns_a_query_gets_the_configured_address_with_ttl_zero() {
        let q = build_dns_query(0x1234, "www.example.com", QTYPE_A).unwrap();
        let parsed = parse_dns_query(&q).unwrap();
        assert_eq!(parsed.id, 0x1234);
        assert_eq!(parsed.qname, "www.example.com");
        assert_eq!(parsed.qtype, QTYPE_A);
        let ans = dns_answer(&parsed, Ipv4Addr::new(10, 0, 2, 53));
        let resp = parse_dns_response(&ans).unwrap();
        assert_eq!(resp.id, 0x1234);
        assert_eq!(resp.rcode, 0);
        assert_eq!(resp.a, vec![Ipv4Addr::new(10, 0, 2, 53)]);
        // Flags: QR, AA and the query's RD.
        assert_eq!(
            u16::from_be_bytes([ans[2], ans[3]]),
            0x8000 | 0x0400 | 0x0100
        );
        // TTL is zero: the last 10 bytes are TTL(4) RDLEN(2) ADDR(4).
        assert_eq!(&ans[ans.len() - 10..ans.len() - 6], &[0, 0, 0, 0]);
    }

    #[test]
    fn dns_other_types_get_an_empty_answer_and_other_opcodes_notimp() {
        let q = build_dns_query(7, "example.com", 28).unwrap(); // AAAA
        let ans = dns_answer(&parse_dns_query(&q).unwrap(), Ipv4Addr::LOCALHOST);
        let resp = parse_dns_response(&ans).unwrap();
        assert_eq!((resp.rcode, resp.a.len()), (0, 0));
        let mut status = build_dns_query(8, "example.com", QTYPE_A).unwrap();
        status[2] |= 2 << 3; // opcode STATUS
        let ans = dns_answer(&parse_dns_query(&status).unwrap(), Ipv4Addr::LOCALHOST);
        let resp = parse_dns_response(&ans).unwrap();
        assert_eq!((resp.rcode, resp.a.len()), (RCODE_NOTIMP, 0));
    }

    #[test]
    fn dns_parser_ignores_malformed_packets() {
        let good = build_dns_query(1, "a.b", QTYPE_A).unwrap();
        // Every truncation of a valid query is rejected, never panics.
        for n in 0..good.len() {
            assert!(parse_dns_query(&good[..n]).is_none(), "truncated to {n}");
        }
        let mut response = good.clone();
        response[2] |= 0x80;
        assert!(
            parse_dns_query(&response).is_none(),
            "a response is not a query"
        );
        let mut two_q = good.clone();
        two_q[5] = 2;
        assert!(parse_dns_query(&two_q).is_none(), "QDCOUNT 2");
        let mut pointer = good.clone();
        pointer[12] = 0xC0;
        assert!(parse_dns_query(&pointer).is_none(), "compressed question");
        let mut long = vec![0u8; 12];
        long[5] = 1;
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(parse_dns_query(&long).is_none(), "name over 255 bytes");
        // Arbitrary bytes never panic either parser.
        let mut x: u32 = 12345;
        for len in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = parse_dns_query(&buf);
            let _ = parse_dns_response(&buf);
        }
    }

    #[test]
    fn dns_query_builder_rejects_overlong_labels() {
        let label = "a".repeat(64);
        assert!(build_dns_query(1, &format!("{label}.com"), QTYPE_A).is_err());
        assert_eq!(
            build_dns_query(1, "example.com.", QTYPE_A).unwrap(),
            build_dns_query(1, "example.com", QTYPE_A).unwrap()
        );
    }
}
