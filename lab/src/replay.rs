//! Live replay of a trace's client traffic through pen, and its agreement with the simulation.
//!
//! - [`plan_flows`] (pure): the trace's UDP flows or TCP sessions, mapped to lab addresses
//!   ([`pen::sim::mapping`]), bounded in number, as what to send and when.
//! - [`replay`] (IO): real kernel sockets inside a lab namespace. UDP: each flow's datagrams
//!   from its lab address (and original source port when it is free) at their recorded times
//!   divided by `speed`; each reply is matched (DNS id) and the backend that answered is read
//!   from it. TCP: each session connects at its time, sends the client's bytes with the recorded
//!   gaps, half-closes, and reads until EOF; the backend is read from the first response. At
//!   most `max_concurrency` flows at once; everything bounded by `timeout`.
//! - [`agree`] (pure): the simulation against what was observed, per flow (per datagram for
//!   UDP) or as per-backend shares, listing the flows that differ.
//!
//! Which backend answered: the built-in backends say it. A DNS backend answers A queries with
//! its own address (`answer`), an HTTP backend's body is its name: the step's `backends` list
//! gives, per server slot, that address or name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pen::select::Target;
use pen::sim::balance::{SimReport, target_name};
use pen::sim::mapping::AddressMap;
use pen::sim::trace::{Proto, Trace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backends::parse_dns_response;
use crate::netns::in_netns;

/// What one flow sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sends {
    /// UDP datagrams: offset from the flow's start, payload.
    Udp(Vec<(Duration, Vec<u8>)>),
    /// TCP: offset from the session's open, bytes to write then.
    Tcp(Vec<(Duration, Vec<u8>)>),
}

/// One flow to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayFlow {
    /// Index into the simulation's flows (same order).
    pub index: usize,
    pub proto: Proto,
    pub client: SocketAddr,
    pub lab_client: SocketAddr,
    pub first_frame: u64,
    /// Since the trace's first frame.
    pub start: Duration,
    pub sends: Sends,
    /// Bytes the capture has from the server.
    pub captured_reply_bytes: u64,
}

/// The flows of `trace` pen would see in `proto` mode, in the simulation's order (UDP: by
/// first datagram; TCP: by open time; sessions without their start left out), at most `max`.
pub fn plan_flows(trace: &Trace, map: &AddressMap, proto: Proto, max: usize) -> Vec<ReplayFlow> {
    let mut out = Vec::new();
    match proto {
        Proto::Udp => {
            let mut order: Vec<usize> = (0..trace.udp.len())
                .filter(|&i| !trace.udp[i].queries.is_empty())
                .collect();
            order.sort_by_key(|&i| (trace.udp[i].start(), i));
            for i in order.into_iter().take(max) {
                let f = &trace.udp[i];
                let start = f.start();
                let sends = f
                    .queries
                    .iter()
                    .map(|d| {
                        let mut p = d.payload.clone();
                        p.resize(d.len as usize, 0);
                        (d.at.saturating_sub(start), p)
                    })
                    .collect();
                out.push(ReplayFlow {
                    index: out.len(),
                    proto,
                    client: f.client,
                    lab_client: map.client(f.client).unwrap_or(f.client),
                    first_frame: f.first_frame,
                    start,
                    sends: Sends::Udp(sends),
                    captured_reply_bytes: f.replies.iter().map(|r| u64::from(r.len)).sum(),
                });
            }
        }
        Proto::Tcp => {
            let mut order: Vec<usize> = (0..trace.tcp.len())
                .filter(|&i| !trace.tcp[i].start_missing)
                .collect();
            order.sort_by_key(|&i| (trace.tcp[i].opened, i));
            for i in order.into_iter().take(max) {
                let s = &trace.tcp[i];
                let mut prev = 0usize;
                let mut sends = Vec::new();
                for c in &s.client_chunks {
                    let end = (c.end as usize).min(s.client_data.len());
                    if end > prev {
                        sends.push((
                            c.at.saturating_sub(s.opened),
                            s.client_data[prev..end].to_vec(),
                        ));
                        prev = end;
                    }
                }
                out.push(ReplayFlow {
                    index: out.len(),
                    proto,
                    client: s.client,
                    lab_client: map.client(s.client).unwrap_or(s.client),
                    first_frame: s.first_frame,
                    start: s.opened,
                    sends: Sends::Tcp(sends),
                    captured_reply_bytes: s.server_bytes,
                });
            }
        }
    }
    out
}

/// What one flow did live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowResult {
    pub index: usize,
    /// The source the flow really used.
    pub local: Option<SocketAddr>,
    /// Since the replay's start.
    pub started: Duration,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// UDP: per datagram, who answered (the backend's address or name); TCP: one entry.
    pub answers: Vec<Option<String>>,
    /// First answer's delay after its request.
    pub latency: Option<Duration>,
    pub error: Option<String>,
}

/// Bounds of a replay.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub speed: f64,
    pub max_concurrency: usize,
    /// The whole replay.
    pub timeout: Duration,
    /// How long a UDP datagram waits for its reply (or a TCP read for more bytes).
    pub reply_timeout: Duration,
}

fn scaled(d: Duration, speed: f64) -> Duration {
    if speed <= 0.0 {
        Duration::ZERO
    } else {
        d.div_f64(speed)
    }
}

/// The backend named in a DNS answer (its first A record), if it is one.
fn dns_backend(buf: &[u8], id: Option<u16>) -> Option<Option<String>> {
    let r = parse_dns_response(buf)?;
    if id.is_some_and(|i| i != r.id) {
        return None;
    }
    Some(r.a.first().map(|a| a.to_string()))
}

/// The backend named by the built-in HTTP backend: the first line of the first body.
pub fn http_backend(raw: &[u8]) -> Option<String> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body = raw.get(head_end..)?;
    let line = body.split(|&b| b == b'\n').next()?;
    let s = String::from_utf8_lossy(line).trim().to_string();
    (!s.is_empty()).then_some(s)
}

async fn replay_udp(
    f: &ReplayFlow,
    to: SocketAddr,
    t0: tokio::time::Instant,
    b: Bounds,
) -> FlowResult {
    let mut r = FlowResult {
        index: f.index,
        ..FlowResult::default()
    };
    let Sends::Udp(sends) = &f.sends else {
        return r;
    };
    r.started = t0.elapsed();
    // The original source port when it is free, else any.
    let sock = match tokio::net::UdpSocket::bind(f.lab_client).await {
        Ok(s) => s,
        Err(_) => match tokio::net::UdpSocket::bind(SocketAddr::new(f.lab_client.ip(), 0)).await {
            Ok(s) => s,
            Err(e) => {
                r.error = Some(format!("cannot bind {}: {e}", f.lab_client.ip()));
                return r;
            }
        },
    };
    r.local = sock.local_addr().ok();
    let begin = tokio::time::Instant::now();
    let mut buf = vec![0u8; 65536];
    for (at, payload) in sends {
        tokio::time::sleep_until(begin + scaled(*at, b.speed)).await;
        let id = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        let sent = tokio::time::Instant::now();
        if let Err(e) = sock.send_to(payload, to).await {
            r.error.get_or_insert(format!("send: {e}"));
            r.answers.push(None);
            continue;
        }
        r.bytes_up += payload.len() as u64;
        let deadline = sent + b.reply_timeout;
        let mut answer = None;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => {
                    let data = buf.get(..n).unwrap_or(&[]);
                    if let Some(who) = dns_backend(data, id) {
                        r.bytes_down += n as u64;
                        if r.latency.is_none() {
                            r.latency = Some(sent.elapsed());
                        }
                        answer = who;
                        break;
                    }
                }
                // ICMP errors surface as receive errors on Linux: keep waiting for the bound.
                Ok(Err(_)) => {}
                Err(_) => break,
            }
        }
        r.answers.push(answer);
    }
    r
}

async fn replay_tcp(
    f: &ReplayFlow,
    to: SocketAddr,
    t0: tokio::time::Instant,
    b: Bounds,
) -> FlowResult {
    let mut r = FlowResult {
        index: f.index,
        ..FlowResult::default()
    };
    let Sends::Tcp(sends) = &f.sends else {
        return r;
    };
    r.started = t0.elapsed();
    let sock = match if to.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    } {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("socket: {e}"));
            return r;
        }
    };
    if let Err(e) = sock.bind(SocketAddr::new(f.lab_client.ip(), 0)) {
        r.error = Some(format!("cannot bind {}: {e}", f.lab_client.ip()));
        return r;
    }
    let begin = tokio::time::Instant::now();
    let stream = match tokio::time::timeout(b.reply_timeout, sock.connect(to)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            r.error = Some(format!("connect: {e}"));
            r.answers.push(None);
            return r;
        }
        Err(_) => {
            r.error = Some("connect timed out".into());
            r.answers.push(None);
            return r;
        }
    };
    r.local = stream.local_addr().ok();
    let (mut rd, mut wr) = stream.into_split();
    let reply_timeout = b.reply_timeout;
    let reader = tokio::spawn(async move {
        let mut raw = Vec::new();
        let mut first: Option<tokio::time::Instant> = None;
        let mut total = 0u64;
        let mut chunk = vec![0u8; 65536];
        loop {
            match tokio::time::timeout(reply_timeout, rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => {
                    first.get_or_insert_with(tokio::time::Instant::now);
                    total += n as u64;
                    if raw.len() < 4096 {
                        raw.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                    }
                }
            }
        }
        (raw, first, total)
    });
    for (at, bytes) in sends {
        tokio::time::sleep_until(begin + scaled(*at, b.speed)).await;
        if let Err(e) = wr.write_all(bytes).await {
            r.error.get_or_insert(format!("write: {e}"));
            break;
        }
        r.bytes_up += bytes.len() as u64;
    }
    let _ = wr.shutdown().await;
    let (raw, first, total) = reader.await.unwrap_or_default();
    r.bytes_down = total;
    r.latency = first.map(|t| t.saturating_duration_since(begin));
    r.answers.push(http_backend(&raw));
    drop(wr);
    r
}

/// Replays `flows` from namespace `ns` to `to` (pen's listen address), flow starts at their
/// recorded offsets divided by `speed` (0: as fast as possible), at most `max_concurrency` at
/// once. Flows still running at `timeout` are reported with an error.
pub fn replay(
    ns: &str,
    to: SocketAddr,
    flows: Vec<ReplayFlow>,
    b: Bounds,
) -> Result<Vec<FlowResult>> {
    let n = flows.len();
    in_netns(ns, move || -> Result<Vec<FlowResult>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("creating a tokio runtime for the replay")?;
        rt.block_on(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(b.max_concurrency.max(1)));
            let t0 = tokio::time::Instant::now();
            let base = flows.first().map_or(Duration::ZERO, |f| f.start);
            let mut set = tokio::task::JoinSet::new();
            for f in flows {
                let sem = sem.clone();
                set.spawn(async move {
                    tokio::time::sleep_until(t0 + scaled(f.start.saturating_sub(base), b.speed))
                        .await;
                    let _permit = sem.acquire_owned().await.ok();
                    match f.proto {
                        Proto::Udp => replay_udp(&f, to, t0, b).await,
                        Proto::Tcp => replay_tcp(&f, to, t0, b).await,
                    }
                });
            }
            let mut out: Vec<Option<FlowResult>> = vec![None; n];
            let deadline = t0 + b.timeout;
            loop {
                match tokio::time::timeout_at(deadline, set.join_next()).await {
                    Ok(Some(Ok(r))) => {
                        let i = r.index;
                        if let Some(slot) = out.get_mut(i) {
                            *slot = Some(r);
                        }
                    }
                    Ok(Some(Err(_))) => {}
                    Ok(None) => break,
                    Err(_) => {
                        set.abort_all();
                        break;
                    }
                }
            }
            Ok(out
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    r.unwrap_or(FlowResult {
                        index: i,
                        error: Some(format!("not finished within {:?}", b.timeout)),
                        ..FlowResult::default()
                    })
                })
                .collect())
        })
    })?
    .with_context(|| format!("replaying {n} flows to {to} from namespace {ns:?}"))
}

/// How simulation and replay must agree.
#[derive(Debug, Clone, PartialEq)]
pub enum AgreeMode {
    /// Per flow (per datagram for UDP): the same backend, or lost in both; at most
    /// `max_disagree` flows may differ.
    Flows { max_disagree: usize },
    /// Per-backend shares of new flows within `tolerance` (fraction, e.g. 0.05), and every
    /// client on one backend in both when `sticky`.
    Shares { tolerance: f64, sticky: bool },
}

/// A flow on which simulation and replay differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub index: usize,
    pub client: SocketAddr,
    pub lab_client: SocketAddr,
    pub first_frame: u64,
    pub simulated: Vec<Option<String>>,
    pub observed: Vec<Option<String>>,
}

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    pub ok: bool,
    pub summary: String,
    pub differing: Vec<Disagreement>,
    /// Shares per backend name: (simulated, observed).
    pub shares: BTreeMap<String, (f64, f64)>,
}

fn name_of(t: Option<Target>) -> Option<String> {
    t.map(target_name)
}

/// Observed answers as backend names via `backends` (slot i's answer address or HTTP name).
fn observed_names(r: &FlowResult, backends: &[String]) -> Vec<Option<String>> {
    r.answers
        .iter()
        .map(|a| {
            a.as_ref().map(|who| {
                backends
                    .iter()
                    .position(|b| b == who)
                    .map_or_else(|| format!("unknown {who}"), |i| i.to_string())
            })
        })
        .collect()
}

/// Compares the simulation's flows with the replay's results (same order as [`plan_flows`]).
pub fn agree(
    sim: &SimReport,
    flows: &[ReplayFlow],
    live: &[FlowResult],
    backends: &[String],
    mode: &AgreeMode,
) -> Agreement {
    let mut differing = Vec::new();
    let mut lost_sim = 0usize;
    let mut lost_live = 0usize;
    let mut lost_unpredicted = 0usize;
    let mut new_sim: BTreeMap<String, u64> = BTreeMap::new();
    let mut new_live: BTreeMap<String, u64> = BTreeMap::new();
    let mut clients_sim: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    let mut clients_live: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    for (f, r) in flows.iter().zip(live) {
        let Some(s) = sim.flows.get(f.index) else {
            continue;
        };
        let simulated: Vec<Option<String>> = match f.proto {
            Proto::Udp => s.answers.iter().map(|a| name_of(*a)).collect(),
            Proto::Tcp => vec![name_of(s.backend)],
        };
        let observed = observed_names(r, backends);
        lost_sim += simulated.iter().filter(|a| a.is_none()).count();
        lost_live += observed.iter().filter(|a| a.is_none()).count();
        lost_unpredicted += simulated
            .iter()
            .zip(&observed)
            .filter(|(s, o)| s.is_some() && o.is_none())
            .count();
        // New flows per backend: a change of backend is a new flow (UDP), as in pen.
        for (v, counts, clients) in [
            (&simulated, &mut new_sim, &mut clients_sim),
            (&observed, &mut new_live, &mut clients_live),
        ] {
            let mut prev: Option<&String> = None;
            for b in v.iter().flatten() {
                if prev != Some(b) {
                    *counts.entry(b.clone()).or_insert(0) += 1;
                }
                prev = Some(b);
                clients.entry(f.client.ip()).or_default().insert(b.clone());
            }
        }
        if simulated != observed {
            differing.push(Disagreement {
                index: f.index,
                client: f.client,
                lab_client: f.lab_client,
                first_frame: f.first_frame,
                simulated,
                observed,
            });
        }
    }
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>().max(1) as f64;
    let (ts, tl) = (total(&new_sim), total(&new_live));
    let names: BTreeSet<&String> = new_sim.keys().chain(new_live.keys()).collect();
    let shares: BTreeMap<String, (f64, f64)> = names
        .into_iter()
        .map(|n| {
            let s = new_sim.get(n).copied().unwrap_or(0) as f64 / ts;
            let l = new_live.get(n).copied().unwrap_or(0) as f64 / tl;
            (n.clone(), (s, l))
        })
        .collect();
    let moved = |m: &BTreeMap<IpAddr, BTreeSet<String>>| m.values().filter(|s| s.len() > 1).count();
    let share_text: Vec<String> = shares
        .iter()
        .map(|(n, (s, l))| format!("{n}: {:.1}%/{:.1}%", s * 100.0, l * 100.0))
        .collect();
    let mut summary = format!(
        "{} flows, {} differ; lost {} simulated / {} observed ({} not predicted); clients on \
         several backends {} simulated / {} observed; shares sim/live {}",
        flows.len(),
        differing.len(),
        lost_sim,
        lost_live,
        lost_unpredicted,
        moved(&clients_sim),
        moved(&clients_live),
        share_text.join(", ")
    );
    let ok = match mode {
        AgreeMode::Flows { max_disagree } => {
            let ok = differing.len() <= *max_disagree && lost_unpredicted <= *max_disagree;
            if !ok {
                summary.push_str(&format!("; at most {max_disagree} may differ"));
            }
            ok
        }
        AgreeMode::Shares { tolerance, sticky } => {
            let worst = shares
                .values()
                .map(|(s, l)| (s - l).abs())
                .fold(0.0f64, f64::max);
            let sticky_ok = !sticky || (moved(&clients_sim) == 0 && moved(&clients_live) == 0);
            let ok = worst <= *tolerance && sticky_ok;
            if !ok {
                summary.push_str(&format!(
                    "; worst share difference {:.1}% (tolerance {:.1}%){}",
                    worst * 100.0,
                    tolerance * 100.0,
                    if sticky_ok {
                        ""
                    } else {
                        "; clients must stick to one backend"
                    }
                ));
            }
            ok
        }
    };
    Agreement {
        ok,
        summary,
        differing,
        shares,
    }
}

/// The first differing flows as text (simulated vs observed, and the capture frame).
pub fn describe(a: &Agreement, trace_file: &str, max: usize) -> String {
    let show = |v: &[Option<String>]| {
        v.iter()
            .map(|x| x.clone().unwrap_or_else(|| "lost".into()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut s = String::new();
    for d in a.differing.iter().take(max) {
        s.push_str(&format!(
            "\n  flow {} client {} (lab {}): simulated [{}], observed [{}]; first frame {} of {}",
            d.index,
            d.client,
            d.lab_client,
            show(&d.simulated),
            show(&d.observed),
            d.first_frame,
            trace_file
        ));
    }
    if a.differing.len() > max {
        s.push_str(&format!("\n  ... and {} more", a.differing.len() - max));
    }
    s
}

/// Per-flow details as JSON lines for the run directory.
/// Do the bytes a TCP session got back live equal the capture's server → client count, within
/// `tolerance` (a fraction of the captured count; 0: exactly)?
pub fn reply_bytes_ok(live: u64, captured: u64, tolerance: f64) -> bool {
    (live as f64 - captured as f64).abs() <= tolerance * captured as f64
}

/// Reply byte counts of the TCP sessions that ran without an error, live against captured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplyBytes {
    pub compared: usize,
    pub matching: usize,
    pub live_total: u64,
    pub captured_total: u64,
    /// The sessions that differ: (flow index, live bytes, captured bytes).
    pub differing: Vec<(usize, u64, u64)>,
}

impl ReplyBytes {
    pub fn compare(flows: &[ReplayFlow], live: &[FlowResult], tolerance: f64) -> ReplyBytes {
        let mut out = ReplyBytes::default();
        for (f, r) in flows.iter().zip(live) {
            if f.proto != Proto::Tcp || r.error.is_some() {
                continue;
            }
            out.compared += 1;
            out.live_total += r.bytes_down;
            out.captured_total += f.captured_reply_bytes;
            if reply_bytes_ok(r.bytes_down, f.captured_reply_bytes, tolerance) {
                out.matching += 1;
            } else {
                out.differing
                    .push((f.index, r.bytes_down, f.captured_reply_bytes));
            }
        }
        out
    }

    /// `reply bytes: 412 of 412 TCP sessions as captured (live 12 B, captured 12 B)`.
    pub fn summary(&self) -> String {
        format!(
            "reply bytes: {} of {} TCP sessions as captured (live {} B, captured {} B)",
            self.matching, self.compared, self.live_total, self.captured_total
        )
    }

    /// Up to `max` differing sessions, one per line.
    pub fn describe(&self, flows: &[ReplayFlow], trace_file: &str, max: usize) -> String {
        let mut o = String::new();
        for (i, got, want) in self.differing.iter().take(max) {
            if let Some(f) = flows.get(*i) {
                o.push_str(&format!(
                    "\n  flow {i} {} (lab {}): got {got} bytes back, the capture has {want} \
                     ({trace_file} frame {})",
                    f.client, f.lab_client, f.first_frame
                ));
            }
        }
        o
    }
}

pub fn results_json(flows: &[ReplayFlow], live: &[FlowResult], backends: &[String]) -> String {
    use pen::sim::report::json_str;
    let mut o = String::from("[\n");
    for (i, (f, r)) in flows.iter().zip(live).enumerate() {
        let answers: Vec<String> = observed_names(r, backends)
            .iter()
            .map(|a| a.as_ref().map_or("null".into(), |s| json_str(s)))
            .collect();
        o.push_str(&format!(
            "  {{\"flow\": {}, \"proto\": \"{}\", \"client\": {}, \"lab_client\": {}, \"local\": {}, \
             \"frame\": {}, \"started_ms\": {}, \"bytes_up\": {}, \"bytes_down\": {}, \
             \"captured_reply_bytes\": {}, \"reply_bytes_match\": {}, \"latency_ms\": {}, \"backends\": [{}], \"error\": {}}}{}\n",
            f.index,
            f.proto,
            json_str(&f.client.to_string()),
            json_str(&f.lab_client.to_string()),
            r.local.map_or("null".into(), |l| json_str(&l.to_string())),
            f.first_frame,
            r.started.as_millis(),
            r.bytes_up,
            r.bytes_down,
            f.captured_reply_bytes,
            if f.proto == Proto::Tcp && r.error.is_none() {
                (r.bytes_down == f.captured_reply_bytes).to_string()
            } else {
                "null".to_string()
            },
            r.latency
                .map_or("null".into(), |l| format!("{:.3}", l.as_secs_f64() * 1000.0)),
            answers.join(", "),
            r.error.as_ref().map_or("null".into(), |e| json_str(e)),
            if i + 1 < flows.len() { "," } else { "" }
        ));
    }
    o.push_str("]\n");
    o
}

/// Wall-clock helper for the runner: sleeps until `at` after `t0`, in slices, while `keep_going`.
pub fn sleep_until(t0: Instant, at: Duration, keep_going: impl Fn() -> bool) -> bool {
    let end = t0 + at;
    while Instant::now() < end {
        if !keep_going() {
            return false;
        }
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use pen::sim::balance::{Event, SimOptions, simulate};
    use pen::sim::mapping::default_pools;
    use pen::sim::synth::{Kind, generate};
    use pen::sim::trace::ParseOptions;

    fn sim_and_flows(kind: Kind, args: &str, events: &[&str]) -> (SimReport, Vec<ReplayFlow>) {
        let data = generate(kind, 30, 10.0, 7);
        let t = Trace::parse("t.pcap", &data, &ParseOptions::default()).unwrap();
        let (v4, v6) = default_pools();
        let map = AddressMap::build(&t, v4, v6, "10.0.0.1:53".parse().unwrap()).unwrap();
        let opts = SimOptions {
            pen_args: args.split_whitespace().map(String::from).collect(),
            events: events.iter().map(|e| Event::parse(e).unwrap()).collect(),
            sample: Duration::from_secs(1),
        };
        let r = simulate(&t, &map, &opts).unwrap();
        let proto = r.proto;
        (r, plan_flows(&t, &map, proto, usize::MAX))
    }

    /// A "live" run that saw exactly what the simulation predicted.
    fn perfect(r: &SimReport, backends: &[String]) -> Vec<FlowResult> {
        r.flows
            .iter()
            .enumerate()
            .map(|(i, f)| FlowResult {
                index: i,
                answers: match f.proto {
                    Proto::Udp => f.answers.clone(),
                    Proto::Tcp => vec![f.backend],
                }
                .into_iter()
                .map(|a| match a {
                    Some(Target::Server(n)) => Some(backends[n].clone()),
                    _ => None,
                })
                .collect(),
                ..FlowResult::default()
            })
            .collect()
    }

    #[test]
    fn plan_flows_follows_the_simulations_order_and_mapping() {
        let (r, flows) = sim_and_flows(Kind::Dns, "-U 53 10.0.0.3:53 10.0.0.4:53", &[]);
        assert_eq!(flows.len(), r.flows.len());
        for (f, s) in flows.iter().zip(&r.flows) {
            assert_eq!(
                (f.client, f.lab_client, f.first_frame),
                (s.client, s.lab_client, s.first_frame)
            );
            let Sends::Udp(d) = &f.sends else { panic!() };
            assert_eq!(d.len(), s.datagrams as usize);
            assert_eq!(d[0].0, Duration::ZERO);
        }
        let (_, flows) = sim_and_flows(Kind::Http, "80 10.0.0.3:80 10.0.0.4:80", &[]);
        let Sends::Tcp(chunks) = &flows[0].sends else {
            panic!()
        };
        assert!(chunks[0].1.starts_with(b"GET /bytes/"));
    }

    #[test]
    fn agreement_holds_for_what_was_predicted_and_names_the_flows_that_differ() {
        let backends = vec!["192.0.2.3".to_string(), "192.0.2.4".to_string()];
        let (r, flows) = sim_and_flows(
            Kind::Dns,
            "-U 53 10.0.0.3:53 10.0.0.4:53",
            &["at 5s server 1 down"],
        );
        let mut live = perfect(&r, &backends);
        let mode = AgreeMode::Flows { max_disagree: 0 };
        let a = agree(&r, &flows, &live, &backends, &mode);
        assert!(a.ok, "{}", a.summary);
        assert!(a.differing.is_empty());
        // One answer from the other backend, one query lost that was not predicted.
        live[0].answers[0] = Some("192.0.2.4".into());
        let i = live
            .iter()
            .position(|l| l.answers.iter().all(Option::is_some))
            .unwrap();
        let n = live[i].answers.len();
        live[i].answers[n - 1] = None;
        let a = agree(&r, &flows, &live, &backends, &mode);
        assert!(!a.ok);
        assert!(a.summary.contains("1 not predicted"), "{}", a.summary);
        let text = describe(&a, "t.pcap", 5);
        assert!(
            text.contains("observed [lost") || text.contains(",lost]"),
            "{text}"
        );
        assert!(text.contains("first frame"), "{text}");
    }

    #[test]
    fn shares_mode_checks_tolerance_and_stickiness() {
        let backends = vec!["web1".to_string(), "web2".to_string()];
        let (r, flows) = sim_and_flows(Kind::Http, "80 10.0.0.3:80 10.0.0.4:80", &[]);
        let live = perfect(&r, &backends);
        let mode = AgreeMode::Shares {
            tolerance: 0.05,
            sticky: true,
        };
        assert!(agree(&r, &flows, &live, &backends, &mode).ok);
        // Every flow observed on web1: shares far apart.
        let skewed: Vec<FlowResult> = live
            .iter()
            .map(|l| FlowResult {
                answers: vec![Some("web1".into())],
                ..l.clone()
            })
            .collect();
        let a = agree(&r, &flows, &skewed, &backends, &mode);
        assert!(
            !a.ok && a.summary.contains("worst share difference"),
            "{}",
            a.summary
        );
    }

    #[test]
    fn backends_are_read_from_http_bodies() {
        assert_eq!(
            http_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nweb2\nHTTP/1.1 200"),
            Some("web2".into())
        );
        assert_eq!(http_backend(b"HTTP/1.1 200 OK\r\n"), None);
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario keys: the `replay` step and the offline `[balance]` table
// ---------------------------------------------------------------------------------------------

use crate::scenario::Refs;
use pen::sim::balance::Event;
use pen::sim::mapping::Pool;
use pen::sim::trace::ServerSel;
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn default_speed() -> f64 {
    1.0
}
fn default_max_flows() -> usize {
    10_000
}
fn default_max_concurrency() -> usize {
    512
}
fn default_replay_timeout() -> u64 {
    120_000
}
fn default_reply_timeout() -> u64 {
    1000
}
fn default_agree() -> String {
    "flows".into()
}
fn default_tolerance() -> f64 {
    0.05
}
fn default_pool4() -> String {
    "10.200.0.0/16".into()
}
fn default_pool6() -> String {
    "fd00:200::/64".into()
}

/// What the simulation needs (shared by the `replay` step and `[balance]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSimTable {
    /// The capture, relative to the repository root or absolute.
    pub trace: String,
    /// Flow selection: `["udp:53"]`, `["tcp:192.0.2.80:80"]`; empty: everything.
    #[serde(default)]
    pub server: Vec<String>,
    /// Frame selection by a BPF filter (tcpdump syntax, `"udp and net 198.51.100.0/24"`),
    /// applied before `server`; compiled by `check`.
    pub filter: Option<String>,
    /// pen's arguments for the simulation (the same as the pen process's, without `-f`, `-u`).
    pub pen: Vec<String>,
    /// `["at 10s server 1 down", "at 15s server 1 up", "at 2s penctl \"server 0 weight 3\""]`.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default = "default_pool4")]
    pub pool4: String,
    #[serde(default = "default_pool6")]
    pub pool6: String,
}

/// `replay = { host, to, backends, processes, ... }` plus the simulation keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayTable {
    pub host: String,
    /// pen's listen address.
    pub to: String,
    #[serde(flatten)]
    pub sim: TraceSimTable,
    /// Per server slot, how its answers name it: the DNS backend's `answer` or the HTTP
    /// backend's name.
    pub backends: Vec<String>,
    /// Per server slot, the process that `server N down/up` stops/starts live.
    #[serde(default)]
    pub processes: Vec<String>,
    #[serde(default = "default_speed")]
    pub speed: f64,
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "default_replay_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_reply_timeout")]
    pub reply_timeout_ms: u64,
    /// `"flows"` (per flow, at most `max_disagree` differ) or `"shares"` (within `tolerance`).
    #[serde(default = "default_agree")]
    pub agree: String,
    #[serde(default)]
    pub max_disagree: usize,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// `shares`: every client must stay on one backend, in both.
    #[serde(default)]
    pub sticky: bool,
    /// How `server N down`/`up` happen live to `processes[N]` (fault steps): `"stop"`
    /// (SIGTERM / start again), `"kill"` (SIGKILL / start again), `"pause"` (SIGSTOP /
    /// SIGCONT), `"blackhole"` (its host's traffic dropped by nftables / lifted), `"link"`
    /// (its host's link down / up).
    #[serde(default = "default_down")]
    pub down: String,
    /// Compare the bytes each TCP session gets back with the capture's server → client count:
    /// `"match"` (exactly) or a tolerance (a fraction, `0.01`); absent: reported only.
    pub reply_bytes: Option<ReplyBytesSpec>,
}

/// `reply_bytes = "match"` or `reply_bytes = 0.01`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ReplyBytesSpec {
    Word(String),
    Tolerance(f64),
}

fn default_down() -> String {
    "stop".into()
}

/// How a replay's `server N down`/`up` events happen live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownMode {
    Stop,
    Kill,
    Pause,
    Blackhole,
    Link,
}

impl DownMode {
    pub fn parse(s: &str) -> Result<DownMode, String> {
        Ok(match s {
            "stop" => DownMode::Stop,
            "kill" => DownMode::Kill,
            "pause" => DownMode::Pause,
            "blackhole" => DownMode::Blackhole,
            "link" => DownMode::Link,
            x => {
                return Err(format!(
                    "expected \"stop\", \"kill\", \"pause\", \"blackhole\" or \"link\", got {x:?}"
                ));
            }
        })
    }
}

/// `[balance]`: the simulation alone (no root), with assertions on its report.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceTable {
    #[serde(flatten)]
    pub sim: TraceSimTable,
    /// The JSON report must equal this file byte for byte.
    pub expected_report: Option<String>,
    /// Clients served by more than one backend: exactly this many.
    pub expect_moved: Option<u64>,
    /// Lost datagrams / refused connections: exactly this many.
    pub expect_lost: Option<u64>,
    pub expect_refused: Option<u64>,
    /// Backend name (`"0"`, `"1"`, `"emergency"`) → share of new flows.
    #[serde(default)]
    pub expect_share: BTreeMap<String, f64>,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

/// The simulation part, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTraceSim {
    pub trace: PathBuf,
    /// As written in the scenario (reports name it so, whatever the checkout's path).
    pub trace_name: String,
    pub selection: Vec<ServerSel>,
    /// BPF filter over the trace's frames.
    pub filter: Option<String>,
    pub pen: Vec<String>,
    pub events: Vec<Event>,
    pub pool4: Pool,
    pub pool6: Pool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedReplay {
    pub host: String,
    pub to: SocketAddr,
    pub sim: PlannedTraceSim,
    pub backends: Vec<String>,
    pub processes: Vec<String>,
    pub speed: f64,
    pub max_flows: usize,
    pub max_concurrency: usize,
    pub timeout: Duration,
    pub reply_timeout: Duration,
    pub agree: AgreeMode,
    pub down: DownMode,
    /// `Some(tolerance)`: every TCP session without an error gets back the captured byte
    /// count within it (0: exactly).
    pub reply_bytes: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedBalance {
    pub sim: PlannedTraceSim,
    pub expected_report: Option<PathBuf>,
    pub expect_moved: Option<u64>,
    pub expect_lost: Option<u64>,
    pub expect_refused: Option<u64>,
    pub expect_share: BTreeMap<String, f64>,
    pub tolerance: f64,
}

/// Validation errors: (key below the table, message).
pub type KeyErrors = Vec<(String, String)>;

fn plan_trace_sim(
    t: &TraceSimTable,
    refs: &Refs,
    root: &Path,
    e: &mut KeyErrors,
) -> Option<PlannedTraceSim> {
    let res = |k: &str, v: &str, e: &mut KeyErrors| -> String {
        refs.resolve(v).unwrap_or_else(|m| {
            e.push((k.into(), m.to_string()));
            String::new()
        })
    };
    let tv = res("trace", &t.trace, e);
    let trace = root.join(&tv);
    if !trace.is_file() {
        e.push((
            "trace".into(),
            format!(
                "expected an existing pcap/pcapng file (relative to {} or absolute), got {tv:?}",
                root.display()
            ),
        ));
    }
    let mut selection = Vec::new();
    for (i, s) in t.server.iter().enumerate() {
        let v = res(&format!("server[{i}]"), s, e);
        match ServerSel::parse(&v) {
            Ok(x) => selection.push(x),
            Err(m) => e.push((format!("server[{i}]"), m)),
        }
    }
    let filter = t.filter.as_ref().map(|f| res("filter", f, e));
    if let Some(f) = &filter
        && let Err(m) = pen::sim::filter::FrameFilter::new(f)
    {
        e.push(("filter".into(), m));
    }
    let pen: Vec<String> = t
        .pen
        .iter()
        .enumerate()
        .map(|(i, a)| res(&format!("pen[{i}]"), a, e))
        .collect();
    if let Err(m) = pen::sim::balance::shared_from_args(&pen) {
        e.push((
            "pen".into(),
            format!("the simulation does not accept {pen:?}: {m}"),
        ));
    }
    let mut events = Vec::new();
    for (i, s) in t.events.iter().enumerate() {
        let v = res(&format!("events[{i}]"), s, e);
        match Event::parse(&v) {
            Ok(x) => events.push(x),
            Err(m) => e.push((format!("events[{i}]"), m)),
        }
    }
    let p4 = Pool::parse(&res("pool4", &t.pool4, e)).map_err(|m| e.push(("pool4".into(), m)));
    let p6 = Pool::parse(&res("pool6", &t.pool6, e)).map_err(|m| e.push(("pool6".into(), m)));
    Some(PlannedTraceSim {
        trace,
        trace_name: tv,
        selection,
        filter,
        pen,
        events,
        pool4: p4.ok()?,
        pool6: p6.ok()?,
    })
}

/// Validates a `replay` step (no root, no IO but checking the trace file exists).
pub fn plan_replay(
    r: &ReplayTable,
    refs: &Refs,
    root: &Path,
    procs: &[String],
) -> Result<PlannedReplay, KeyErrors> {
    let mut e = KeyErrors::new();
    let sim = plan_trace_sim(&r.sim, refs, root, &mut e);
    let to = refs
        .resolve(&r.to)
        .ok()
        .and_then(|s| s.parse::<SocketAddr>().ok());
    if to.is_none() {
        e.push((
            "to".into(),
            format!("expected pen's listen address IP:PORT, got {:?}", r.to),
        ));
    }
    let backends: Vec<String> = r
        .backends
        .iter()
        .map(|b| {
            refs.resolve(b).unwrap_or_else(|m| {
                e.push(("backends".into(), m.to_string()));
                String::new()
            })
        })
        .collect();
    if backends.is_empty() {
        e.push((
            "backends".into(),
            "expected per server slot the DNS backend's answer or the HTTP backend's name".into(),
        ));
    }
    for p in &r.processes {
        if !procs.contains(p) {
            e.push((
                "processes".into(),
                format!("expected process names ({}), got {p:?}", procs.join(", ")),
            ));
        }
    }
    if let Some(s) = &sim {
        for ev in &s.events {
            match &ev.action {
                pen::sim::balance::Action::Down(n) | pen::sim::balance::Action::Up(n) => {
                    if *n >= r.processes.len() {
                        e.push((
                            "processes".into(),
                            format!("event `{ev}` needs the process of server {n} in `processes`"),
                        ));
                    }
                }
                pen::sim::balance::Action::Penctl(_) => e.push((
                    "events".into(),
                    format!("event `{ev}`: live replays run only `server N down|up` events"),
                )),
            }
        }
    }
    if !(r.speed >= 0.0 && r.speed <= 1000.0) {
        e.push((
            "speed".into(),
            format!("expected 0 (as fast as possible) to 1000, got {}", r.speed),
        ));
    }
    if r.max_flows == 0 || r.max_flows > 100_000 {
        e.push((
            "max_flows".into(),
            format!("expected 1..=100000, got {}", r.max_flows),
        ));
    }
    if r.max_concurrency == 0 || r.max_concurrency > 4096 {
        e.push((
            "max_concurrency".into(),
            format!("expected 1..=4096, got {}", r.max_concurrency),
        ));
    }
    if r.timeout_ms == 0 || r.timeout_ms > 600_000 {
        e.push((
            "timeout_ms".into(),
            format!("expected 1..=600000, got {}", r.timeout_ms),
        ));
    }
    if r.reply_timeout_ms == 0 || r.reply_timeout_ms > 60_000 {
        e.push((
            "reply_timeout_ms".into(),
            format!("expected 1..=60000, got {}", r.reply_timeout_ms),
        ));
    }
    let agree = match r.agree.as_str() {
        "flows" => AgreeMode::Flows {
            max_disagree: r.max_disagree,
        },
        "shares" => AgreeMode::Shares {
            tolerance: r.tolerance,
            sticky: r.sticky,
        },
        other => {
            e.push((
                "agree".into(),
                format!("expected \"flows\" or \"shares\", got {other:?}"),
            ));
            AgreeMode::Flows { max_disagree: 0 }
        }
    };
    let down = DownMode::parse(&r.down).unwrap_or_else(|m| {
        e.push(("down".into(), m));
        DownMode::Stop
    });
    let reply_bytes = match &r.reply_bytes {
        None => None,
        Some(ReplyBytesSpec::Word(w)) if w == "match" => Some(0.0),
        Some(ReplyBytesSpec::Tolerance(t)) if (0.0..=1.0).contains(t) => Some(*t),
        Some(x) => {
            e.push((
                "reply_bytes".into(),
                format!(
                    "expected \"match\" or a tolerance 0.0..=1.0 (a fraction of the captured bytes), got {}",
                    match x {
                        ReplyBytesSpec::Word(w) => format!("{w:?}"),
                        ReplyBytesSpec::Tolerance(t) => t.to_string(),
                    }
                ),
            ));
            None
        }
    };
    match (e.is_empty(), sim, to) {
        (true, Some(sim), Some(to)) => Ok(PlannedReplay {
            host: r.host.clone(),
            to,
            sim,
            backends,
            processes: r.processes.clone(),
            speed: r.speed,
            max_flows: r.max_flows,
            max_concurrency: r.max_concurrency,
            timeout: Duration::from_millis(r.timeout_ms),
            reply_timeout: Duration::from_millis(r.reply_timeout_ms),
            agree,
            down,
            reply_bytes,
        }),
        _ => Err(e),
    }
}

/// Validates `[balance]`.
pub fn plan_balance(
    b: &BalanceTable,
    refs: &Refs,
    root: &Path,
) -> Result<PlannedBalance, KeyErrors> {
    let mut e = KeyErrors::new();
    let sim = plan_trace_sim(&b.sim, refs, root, &mut e);
    let expected_report = b.expected_report.as_ref().map(|p| {
        let p = root.join(p);
        if !p.is_file() && std::env::var_os("PEN_REGEN_TRACES").is_none() {
            e.push((
                "expected_report".into(),
                format!(
                    "{} does not exist (PEN_REGEN_TRACES=1 pen-lab run writes it)",
                    p.display()
                ),
            ));
        }
        p
    });
    let sum: f64 = b.expect_share.values().sum();
    if !b.expect_share.is_empty() && (sum - 1.0).abs() > 0.01 {
        e.push((
            "expect_share".into(),
            format!("expected fractions adding up to 1, got {sum}"),
        ));
    }
    match (e.is_empty(), sim) {
        (true, Some(sim)) => Ok(PlannedBalance {
            sim,
            expected_report,
            expect_moved: b.expect_moved,
            expect_lost: b.expect_lost,
            expect_refused: b.expect_refused,
            expect_share: b.expect_share.clone(),
            tolerance: b.tolerance,
        }),
        _ => Err(e),
    }
}

/// Reads the trace, maps it and simulates: what both `[balance]` and `replay` start with.
pub fn simulate_plan(
    s: &PlannedTraceSim,
    listen: SocketAddr,
) -> Result<(Trace, AddressMap, SimReport)> {
    let opts = pen::sim::trace::ParseOptions {
        selection: pen::sim::trace::Selection {
            servers: s.selection.clone(),
        },
    };
    let mut trace = pen::sim::filter::open_trace(&s.trace, &opts, s.filter.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    trace.file = s.trace_name.clone();
    let map =
        AddressMap::build(&trace, s.pool4, s.pool6, listen).map_err(|e| anyhow::anyhow!(e))?;
    let report = pen::sim::balance::simulate(
        &trace,
        &map,
        &pen::sim::balance::SimOptions {
            pen_args: s.pen.clone(),
            events: s.events.clone(),
            sample: Duration::from_secs(1),
        },
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    Ok((trace, map, report))
}

/// `[balance]` assertions on a report: (name, ok, detail) per assertion.
pub fn check_balance(b: &PlannedBalance, r: &SimReport) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    let mut exact = |name: &str, want: Option<u64>, got: u64| {
        if let Some(w) = want {
            out.push((format!("{name} = {w}"), got == w, format!("{got}")));
        }
    };
    exact(
        "clients on several backends",
        b.expect_moved,
        r.clients_moved,
    );
    exact("lost datagrams", b.expect_lost, r.lost);
    exact("refused connections", b.expect_refused, r.refused);
    let shares = pen::sim::report::shares(r);
    for (name, want) in &b.expect_share {
        let got = shares
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or(0.0, |(_, _, p)| p / 100.0);
        out.push((
            format!(
                "backend {name} has {:.0}% of new flows (± {:.0}%)",
                want * 100.0,
                b.tolerance * 100.0
            ),
            (got - want).abs() <= b.tolerance,
            format!("{:.1}%", got * 100.0),
        ));
    }
    out
}

/// The `replay` step's work: simulate, make the pool local on `ns`, replay while `on_event`
/// carries out each event at its time, write the details into `out_dir`, and judge the
/// agreement (`Err` when they disagree). `keep_going` is polled while waiting for events.
pub fn replay_and_compare(
    ns: &str,
    r: &PlannedReplay,
    out_dir: &Path,
    keep_going: impl Fn() -> bool,
    mut on_event: impl FnMut(&pen::sim::balance::Action) -> Result<String>,
) -> Result<String> {
    use crate::replay;
    let (trace, map, sim) = replay::simulate_plan(&r.sim, r.to)?;
    let flows = replay::plan_flows(&trace, &map, sim.proto, r.max_flows);
    let ns = ns.to_string();
    // The client pool is local on the replaying host (every address of it can be bound).
    for (pool, used) in [
        (r.sim.pool4, map.clients.iter().any(|(o, _)| o.is_ipv4())),
        (r.sim.pool6, map.clients.iter().any(|(o, _)| o.is_ipv6())),
    ] {
        if !used {
            continue;
        }
        let argv: Vec<String> = [
            "ip",
            "route",
            "replace",
            "local",
            &pool.to_string(),
            "dev",
            "lo",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = crate::traffic::run_command(&ns, &argv, Duration::from_secs(5))?;
        if !out.status.success() {
            anyhow::bail!(
                "{}: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let bounds = replay::Bounds {
        speed: r.speed,
        max_concurrency: r.max_concurrency,
        timeout: r.timeout,
        reply_timeout: r.reply_timeout,
    };
    let base = flows.first().map_or(Duration::ZERO, |f| f.start);
    let (to, to_ns, live_flows) = (r.to, ns.clone(), flows.clone());
    let t0 = Instant::now();
    let worker = std::thread::spawn(move || replay::replay(&to_ns, to, live_flows, bounds));
    // The live counterparts of the events, at their times.
    let mut events = r.sim.events.clone();
    events.sort_by_key(|e| e.at);
    let mut done_events = Vec::new();
    for ev in &events {
        let at = ev.at.saturating_sub(base);
        let at = if r.speed > 0.0 {
            at.div_f64(r.speed)
        } else {
            Duration::ZERO
        };
        if !replay::sleep_until(t0, at, &keep_going) {
            break;
        }
        let res = on_event(&ev.action);
        done_events.push(format!(
            "{ev} at {} ms{}",
            t0.elapsed().as_millis(),
            res.err()
                .map(|e| format!(" failed: {e:#}"))
                .unwrap_or_default()
        ));
    }
    let live = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the replay thread panicked"))??;
    let elapsed = t0.elapsed();
    let agreement = replay::agree(&sim, &flows, &live, &r.backends, &r.agree);
    let bytes = replay::ReplyBytes::compare(&flows, &live, r.reply_bytes.unwrap_or(0.0));
    let files = [
        ("sim-report.md", pen::sim::report::markdown(&sim)),
        ("sim-report.json", pen::sim::report::json(&sim, Some(&map))),
        ("chart.svg", pen::sim::report::svg(&sim)),
        ("mapping.txt", map.to_text()),
        (
            "flows.json",
            replay::results_json(&flows, &live, &r.backends),
        ),
        (
            "agreement.txt",
            format!(
                "{}\n{}\nevents: {}\n{}{}\n",
                agreement.summary,
                replay::describe(&agreement, &trace.file, usize::MAX),
                done_events.join("; "),
                bytes.summary(),
                bytes.describe(&flows, &trace.file, usize::MAX)
            ),
        ),
    ];
    for (name, text) in &files {
        std::fs::write(out_dir.join(name), text)
            .with_context(|| format!("writing {}", out_dir.join(name).display()))?;
    }
    let errors = live.iter().filter(|l| l.error.is_some()).count();
    let first_error = live
        .iter()
        .find_map(|l| l.error.clone())
        .map(|e| format!(" (first: {e})"))
        .unwrap_or_default();
    let bytes_line = if bytes.compared > 0 {
        format!("; {}", bytes.summary())
    } else {
        String::new()
    };
    let detail = format!(
        "{} {} flows replayed in {} ms, {errors} with errors{first_error}; {}{bytes_line}; details in {}",
        flows.len(),
        sim.proto,
        elapsed.as_millis(),
        agreement.summary,
        out_dir.display()
    );
    if !agreement.ok {
        anyhow::bail!("{detail}{}", replay::describe(&agreement, &trace.file, 10));
    }
    if let Some(tol) = r.reply_bytes
        && !bytes.differing.is_empty()
    {
        anyhow::bail!(
            "{detail}\n{} TCP sessions got back other byte counts than the capture has (reply_bytes = {}):{}",
            bytes.differing.len(),
            if tol == 0.0 {
                "\"match\"".to_string()
            } else {
                tol.to_string()
            },
            bytes.describe(&flows, &trace.file, 10)
        );
    }
    Ok(detail)
}
