//! Client actions inside a lab namespace, each bounded in time and count.
//!
//! Every function runs on a fresh thread that entered the namespace; where it needs async IO
//! it drives a current-thread tokio runtime on that thread, so every socket is created inside
//! the namespace (lab-notes pitfall 1).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backends::{QTYPE_A, build_dns_query, parse_dns_response};
use crate::netns::in_netns;

/// Status and body of an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

/// Outcome of [`http_load`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests that failed (connect error, timeout, bad response, non-2xx).
    pub failed: u64,
    /// Count of 2xx responses per body (bodies are trimmed of surrounding whitespace).
    pub by_body: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

/// Largest response accepted.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("creating a tokio runtime for client traffic")
}

/// Connects a TCP socket to `addr`, bound to `src` (port chosen by the kernel) when given.
async fn connect(addr: SocketAddr, src: Option<IpAddr>) -> Result<tokio::net::TcpStream> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .context("creating a TCP socket")?;
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip, 0)).with_context(|| {
            format!("cannot bind source address {ip} (is it on an interface of this node?)")
        })?;
    }
    sock.connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// The head of an HTTP/1.x response, parsed by `httparse` (an independent parser).
struct ResponseHead {
    status: u16,
    /// Length of the head, blank line included.
    len: usize,
    content_length: Option<usize>,
    chunked: bool,
}

/// Parses the response head at the start of `raw`: `Ok(None)` while it is incomplete.
fn response_head(raw: &[u8]) -> Result<Option<ResponseHead>> {
    let mut slots = [httparse::EMPTY_HEADER; crate::backends::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            let line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
            bail!(
                "bad HTTP response head ({e}): {:?}",
                String::from_utf8_lossy(line).trim_end()
            )
        }
    };
    let status = resp
        .code
        .ok_or_else(|| anyhow!("HTTP response without a status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let v = String::from_utf8_lossy(h.value);
        let v = v.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                v.parse()
                    .map_err(|_| anyhow!("bad Content-Length {v:?} in HTTP response"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && v.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    Ok(Some(ResponseHead {
        status,
        len,
        content_length,
        chunked,
    }))
}

/// Splits a raw HTTP/1.x response into status and body (Content-Length, chunked, or
/// read-to-close bodies).
pub fn parse_http_response(raw: &[u8]) -> Result<HttpReply> {
    let head = response_head(raw)?.ok_or_else(|| {
        anyhow!(
            "incomplete HTTP response ({} bytes, no end of headers)",
            raw.len()
        )
    })?;
    let rest = raw.get(head.len..).unwrap_or(&[]);
    let body = if head.chunked {
        decode_chunked(rest)?
    } else if let Some(n) = head.content_length {
        rest.get(..n)
            .ok_or_else(|| anyhow!("HTTP body truncated: {} of {n} bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpReply {
        status: head.status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Decodes a chunked body; chunk-size lines are parsed by `httparse`.
fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let (at, size) = match httparse::parse_chunk_size(data) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => bail!("truncated chunked HTTP body"),
            Err(_) => {
                let line = data.split(|&b| b == b'\r').next().unwrap_or_default();
                bail!(
                    "bad chunk size {:?} in HTTP body",
                    String::from_utf8_lossy(line)
                )
            }
        };
        data = data.get(at..).unwrap_or(&[]);
        if size == 0 {
            return Ok(out);
        }
        let size = usize::try_from(size).map_err(|_| anyhow!("chunk of {size} bytes"))?;
        out.extend_from_slice(
            data.get(..size)
                .ok_or_else(|| anyhow!("truncated chunked HTTP body"))?,
        );
        data = data.get(size.saturating_add(2)..).unwrap_or(&[]);
    }
}

/// Whether `raw` holds a complete response (so we need not wait for the peer to close).
fn response_complete(raw: &[u8]) -> bool {
    let Ok(Some(head)) = response_head(raw) else {
        return false;
    };
    let rest = raw.len() - head.len.min(raw.len());
    if head.chunked {
        return raw.ends_with(b"0\r\n\r\n");
    }
    head.content_length.is_some_and(|n| rest >= n)
}

async fn http_once(addr: SocketAddr, path: &str, src: Option<IpAddr>) -> Result<HttpReply> {
    let mut s = connect(addr, src).await?;
    let _ = s.set_nodelay(true);
    let host = match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => a.to_string(),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pen-lab\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .with_context(|| format!("sending the request to {addr}"))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .with_context(|| format!("reading the response from {addr}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        if raw.len() > MAX_RESPONSE {
            bail!("response from {addr} is larger than {MAX_RESPONSE} bytes");
        }
        if response_complete(&raw) {
            break;
        }
    }
    if raw.is_empty() {
        bail!("{addr} closed the connection without a response");
    }
    parse_http_response(&raw).with_context(|| format!("response from {addr}"))
}

/// One `GET path` to `addr` from namespace `ns` (source `src` if given), new connection,
/// `Connection: close`; the whole exchange is bounded by `timeout`.
pub fn http_get(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<HttpReply> {
    if !path.starts_with('/') || path.contains(['\r', '\n', ' ']) {
        bail!("HTTP path {path:?} must start with '/' and contain no spaces or line breaks");
    }
    let p = path.to_string();
    in_netns(ns, move || -> Result<HttpReply> {
        runtime()?.block_on(async move {
            match tokio::time::timeout(timeout, http_once(addr, &p, src)).await {
                Ok(r) => r,
                Err(_) => bail!("no complete response from {addr} within {timeout:?}"),
            }
        })
    })?
    .with_context(|| format!("GET http://{addr}{path} from namespace {ns:?}"))
}

/// Sends one A query for `qname` to `server` over UDP and returns the A records of the answer.
/// Errors on timeout or a non-zero RCODE.
pub fn dns_query(
    ns: &str,
    server: SocketAddr,
    qname: &str,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<Vec<Ipv4Addr>> {
    dns_queries(ns, server, qname, src, timeout, 1)
}

/// `count` A queries for `qname`, one after the other from one socket (so one source port:
/// one flow for a balancer), each with its own id and `timeout`. Every answer must be the
/// same; returns it.
pub fn dns_queries(
    ns: &str,
    server: SocketAddr,
    qname: &str,
    src: Option<IpAddr>,
    timeout: Duration,
    count: u32,
) -> Result<Vec<Ipv4Addr>> {
    let first_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(std::process::id()) as u16;
    let name = qname.to_string();
    in_netns(ns, move || -> Result<Vec<Ipv4Addr>> {
        let bind_ip = src.unwrap_or(if server.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        });
        let sock = std::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0))
            .with_context(|| format!("cannot bind UDP source {bind_ip}"))?;
        sock.connect(server)
            .with_context(|| format!("connecting UDP socket to {server}"))?;
        let mut first: Option<Vec<Ipv4Addr>> = None;
        for k in 0..count.max(1) {
            let id = first_id.wrapping_add(k as u16);
            let query = build_dns_query(id, &name, QTYPE_A)?;
            let a = one_exchange(&sock, server, &query, id, timeout)
                .with_context(|| format!("query {} of {count}", k + 1))?;
            match &first {
                None => first = Some(a),
                Some(f) if *f != a => bail!("query {} answered {a:?}, query 1 {f:?}", k + 1),
                Some(_) => {}
            }
        }
        Ok(first.unwrap_or_default())
    })?
    .with_context(|| format!("DNS A query for {qname:?} to {server} from namespace {ns:?}"))
}

/// Sends `query` (id `id`) on the connected `sock` and waits for its answer.
fn one_exchange(
    sock: &std::net::UdpSocket,
    server: SocketAddr,
    query: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<Vec<Ipv4Addr>> {
    sock.send(query)
        .with_context(|| format!("sending the query to {server}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no answer from {server} within {timeout:?}");
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("no answer from {server} within {timeout:?}")
            }
            Err(e) => return Err(e).with_context(|| format!("receiving from {server}")),
        };
        // Ignore stray or mismatched datagrams until the deadline.
        if let Some(resp) = parse_dns_response(buf.get(..n).unwrap_or(&[]))
            && resp.id == id
        {
            if resp.rcode != 0 {
                bail!("{server} answered with RCODE {}", resp.rcode);
            }
            return Ok(resp.a);
        }
    }
}

/// Tries a TCP handshake with `addr`; `Ok(true)` if it completed, `Ok(false)` if it was
/// refused, unreachable or timed out. The connection is closed at once.
pub fn tcp_connect(
    ns: &str,
    addr: SocketAddr,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<bool> {
    in_netns(ns, move || -> Result<bool> {
        runtime()?.block_on(async move {
            let sock = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .context("creating a TCP socket")?;
            if let Some(ip) = src {
                sock.bind(SocketAddr::new(ip, 0)).with_context(|| {
                    format!("cannot bind source address {ip} (is it on an interface of this node?)")
                })?;
            }
            match tokio::time::timeout(timeout, sock.connect(addr)).await {
                Ok(Ok(_stream)) => Ok(true),
                Ok(Err(_)) | Err(_) => Ok(false),
            }
        })
    })?
    .with_context(|| format!("TCP connect to {addr} from namespace {ns:?}"))
}

/// `requests` GETs of `path` to `addr`, at most `concurrency` at a time, each on its own
/// connection and bounded by `timeout`. Counts successes per body.
pub fn http_load(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    requests: u64,
    concurrency: u64,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<LoadReport> {
    if !path.starts_with('/') || path.contains(['\r', '\n', ' ']) {
        bail!("HTTP path {path:?} must start with '/' and contain no spaces or line breaks");
    }
    if requests > 1_000_000 {
        bail!("http_load: {requests} requests is more than the limit of 1000000");
    }
    let workers = concurrency.clamp(1, 256).min(requests.max(1));
    let p: Arc<str> = Arc::from(path);
    in_netns(ns, move || -> Result<LoadReport> {
        let start = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let results = runtime()?.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..workers {
                let (next, p) = (next.clone(), p.clone());
                set.spawn(async move {
                    let mut mine: Vec<Option<String>> = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < requests {
                        let r = tokio::time::timeout(timeout, http_once(addr, &p, src)).await;
                        mine.push(match r {
                            Ok(Ok(reply)) if (200..300).contains(&reply.status) => {
                                Some(reply.body.trim().to_string())
                            }
                            _ => None,
                        });
                    }
                    mine
                });
            }
            let mut all = Vec::new();
            while let Some(r) = set.join_next().await {
                all.extend(r.unwrap_or_default());
            }
            all
        });
        let mut report = LoadReport::default();
        for r in results {
            match r {
                Some(body) => {
                    report.ok += 1;
                    *report.by_body.entry(body).or_insert(0) += 1;
                }
                None => report.failed += 1,
            }
        }
        report.elapsed = start.elapsed();
        Ok(report)
    })?
    .with_context(|| format!("HTTP load on http://{addr}{path} from namespace {ns:?}"))
}

/// Outcome of [`http_paced`]: the load report plus the longest outage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacedReport {
    pub load: LoadReport,
    /// See [`longest_outage`].
    pub outage: Outage,
}

/// The longest run of failed requests in a paced load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outage {
    /// From the start of the run's first failed request to the start of the next request that
    /// succeeded (or to the end of the load when none did): what a client saw as downtime,
    /// to within one pacing interval.
    pub duration: Duration,
    /// Failed requests in that run.
    pub failed: u64,
}

/// The longest outage among `results` (`(start offset, ok)` in any order). Pure.
pub fn longest_outage(results: &[(Duration, bool)], end: Duration) -> Outage {
    let mut sorted = results.to_vec();
    sorted.sort_by_key(|r| r.0);
    let mut best = Outage::default();
    let mut run: Option<(Duration, u64)> = None;
    for &(t, ok) in &sorted {
        match (ok, run) {
            (false, None) => run = Some((t, 1)),
            (false, Some((t0, n))) => run = Some((t0, n + 1)),
            (true, Some((t0, n))) => {
                let o = Outage {
                    duration: t.saturating_sub(t0),
                    failed: n,
                };
                if o.duration > best.duration || (o.duration == best.duration && n > best.failed) {
                    best = o;
                }
                run = None;
            }
            (true, None) => {}
        }
    }
    if let Some((t0, n)) = run {
        let o = Outage {
            duration: end.saturating_sub(t0),
            failed: n,
        };
        if o.duration > best.duration || (o.duration == best.duration && n > best.failed) {
            best = o;
        }
    }
    best
}

/// `requests` GETs of `path` to `addr`, request k started at k × `interval` whatever the
/// earlier ones do (an open-loop client, as users are), each on its own connection and
/// bounded by `timeout`; at most 256 in flight (a request that would exceed that counts as
/// failed). Measures the longest outage.
pub fn http_paced(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    requests: u64,
    interval: Duration,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<PacedReport> {
    if !path.starts_with('/') || path.contains(['\r', '\n', ' ']) {
        bail!("HTTP path {path:?} must start with '/' and contain no spaces or line breaks");
    }
    if requests > 100_000 {
        bail!("http_paced: {requests} requests is more than the limit of 100000");
    }
    let p: Arc<str> = Arc::from(path);
    in_netns(ns, move || -> Result<PacedReport> {
        let start = Instant::now();
        let results = runtime()?.block_on(async move {
            let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
            let mut set = tokio::task::JoinSet::new();
            let t0 = tokio::time::Instant::now();
            for k in 0..requests {
                let at = t0 + interval.saturating_mul(u32::try_from(k).unwrap_or(u32::MAX));
                tokio::time::sleep_until(at).await;
                let offset = at - t0;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    set.spawn(async move { (offset, None) });
                    continue;
                };
                let p = p.clone();
                set.spawn(async move {
                    let r = tokio::time::timeout(timeout, http_once(addr, &p, src)).await;
                    drop(permit);
                    let body = match r {
                        Ok(Ok(reply)) if (200..300).contains(&reply.status) => {
                            Some(reply.body.trim().to_string())
                        }
                        _ => None,
                    };
                    (offset, body)
                });
            }
            let mut all = Vec::new();
            while let Some(r) = set.join_next().await {
                if let Ok(r) = r {
                    all.push(r);
                }
            }
            all
        });
        let mut report = PacedReport::default();
        let mut marks = Vec::with_capacity(results.len());
        for (offset, r) in results {
            marks.push((offset, r.is_some()));
            match r {
                Some(body) => {
                    report.load.ok += 1;
                    *report.load.by_body.entry(body).or_insert(0) += 1;
                }
                None => report.load.failed += 1,
            }
        }
        let end = interval.saturating_mul(u32::try_from(requests).unwrap_or(u32::MAX));
        report.outage = longest_outage(&marks, end);
        report.load.elapsed = start.elapsed();
        Ok(report)
    })?
    .with_context(|| format!("paced HTTP load on http://{addr}{path} from namespace {ns:?}"))
}

/// Outcome of [`tcp_sessions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionsReport {
    /// Sessions that completed every round.
    pub ok: u64,
    /// Sessions that failed, with the first few reasons (`session N, round R: why`).
    pub failed: u64,
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

/// `sessions` long-lived TCP connections to an echo server at `addr`, all open at once: each
/// sends `rounds` short lines, `interval` apart, and must read each one back within
/// `timeout` (so a connection lives about `rounds` × `interval`). A session fails at its first
/// connect error, reset, timeout, early close or wrong echo.
pub fn tcp_sessions(
    ns: &str,
    addr: SocketAddr,
    src: Option<IpAddr>,
    sessions: u64,
    rounds: u64,
    interval: Duration,
    timeout: Duration,
) -> Result<SessionsReport> {
    in_netns(ns, move || -> Result<SessionsReport> {
        let start = Instant::now();
        let results = runtime()?.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for n in 0..sessions {
                set.spawn(async move {
                    let r: Result<()> = async {
                        let mut s = tokio::time::timeout(timeout, connect(addr, src))
                            .await
                            .map_err(|_| anyhow!("no connection within {timeout:?}"))??;
                        let _ = s.set_nodelay(true);
                        let mut buf = [0u8; 256];
                        for r in 0..rounds {
                            let line = format!("session {n} round {r}\n");
                            let exchange = async {
                                s.write_all(line.as_bytes()).await.context("sending")?;
                                let mut got = Vec::new();
                                while got.len() < line.len() {
                                    let k = s.read(&mut buf).await.context("reading")?;
                                    if k == 0 {
                                        bail!("closed by the peer");
                                    }
                                    got.extend_from_slice(buf.get(..k).unwrap_or(&[]));
                                }
                                if got != line.as_bytes() {
                                    bail!("echo {:?} for {line:?}", String::from_utf8_lossy(&got));
                                }
                                Ok(())
                            };
                            tokio::time::timeout(timeout, exchange)
                                .await
                                .map_err(|_| anyhow!("no echo within {timeout:?}"))?
                                .with_context(|| format!("round {r}"))?;
                            if r + 1 < rounds {
                                tokio::time::sleep(interval).await;
                            }
                        }
                        Ok(())
                    }
                    .await;
                    r.map_err(|e| format!("session {n}: {e:#}"))
                });
            }
            let mut all = Vec::new();
            while let Some(r) = set.join_next().await {
                all.push(r.unwrap_or_else(|e| Err(format!("session task: {e}"))));
            }
            all
        });
        let mut report = SessionsReport::default();
        for r in results {
            match r {
                Ok(()) => report.ok += 1,
                Err(e) => {
                    report.failed += 1;
                    if report.errors.len() < 5 {
                        report.errors.push(e);
                    }
                }
            }
        }
        report.errors.sort();
        report.elapsed = start.elapsed();
        Ok(report)
    })?
    .with_context(|| format!("TCP sessions to {addr} from namespace {ns:?}"))
}

/// Runs an external program (curl, dig, ab, nmap, penctl, ...) inside `ns`; it is killed
/// after `timeout`. The exit status is returned, not judged.
pub fn run_command(ns: &str, argv: &[String], timeout: Duration) -> Result<Output> {
    crate::node::output_in_ns(ns, argv, None, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_response_with_content_length_is_split() {
        let r = parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nweb1\nextra")
            .unwrap();
        assert_eq!(
            r,
            HttpReply {
                status: 200,
                body: "web1\n".into()
            }
        );
    }

    #[test]
    fn chunked_and_read_to_close_bodies_decode() {
        let r = parse_http_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nweb\r\n2;x=y\r\n1\n\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, "web1\n");
        let r = parse_http_response(b"HTTP/1.0 503 Unavailable\r\n\r\ndown").unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "down"));
    }

    #[test]
    fn bad_http_responses_are_errors() {
        for raw in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(parse_http_response(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn response_heads_follow_the_http_grammar() {
        // Accepted by the old line split (it skipped lines without a colon), refused by
        // httparse: a header line without a colon, a header name with a space.
        for raw in [
            &b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\nweb1\n"[..],
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\nweb1\n",
        ] {
            let e = parse_http_response(raw).unwrap_err().to_string();
            assert!(e.starts_with("bad HTTP response head"), "{raw:?}: {e}");
            assert!(!response_complete(raw), "{raw:?}");
        }
    }

    #[test]
    fn longest_outage_is_the_longest_run_of_failures() {
        let ms = Duration::from_millis;
        let r = |v: &[(u64, bool)]| -> Vec<(Duration, bool)> {
            v.iter().map(|&(t, ok)| (ms(t), ok)).collect()
        };
        assert_eq!(
            longest_outage(&r(&[(0, true), (50, true)]), ms(100)),
            Outage::default()
        );
        // Two runs: 100..250 (2 failed) and 300..700 (3 failed), given out of order.
        let o = longest_outage(
            &r(&[
                (700, true),
                (100, false),
                (150, false),
                (250, true),
                (300, false),
                (0, true),
                (500, false),
                (600, false),
            ]),
            ms(800),
        );
        assert_eq!(
            o,
            Outage {
                duration: ms(400),
                failed: 3
            }
        );
        // A run that never ends lasts until the end of the load.
        let o = longest_outage(&r(&[(0, true), (100, false)]), ms(1000));
        assert_eq!(
            o,
            Outage {
                duration: ms(900),
                failed: 1
            }
        );
    }

    #[test]
    fn completeness_detection_follows_content_length() {
        assert!(!response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nweb"
        ));
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nweb1\n"
        ));
        assert!(!response_complete(b"HTTP/1.0 200 OK\r\n\r\nbody"));
    }
}
