//! `pen-lab bench`: throughput, DNS and memory of pen-rs side by side with direct access,
//! C Pen and HAProxy, in network namespaces (docs/benchmarks.md describes the method).
//!
//! Topology: one switch with a client (10.77.0.10), a balancer host (10.77.0.2) and two
//! backends (10.77.0.3, 10.77.0.4), each running nginx (Debian package, its own config file,
//! started by PID) and a `pen-lab backend dns` responder. Every veth has tx/tso/gso/gro
//! offloads off (the lab default, recorded in the report).
//!
//! Targets: `direct` (the client talks to backend 1), `pen-rs`, `C Pen` (`/usr/bin/pen`) and
//! `HAProxy` (mode tcp, nbthread 1, no UDP). The order of the targets is rotated between
//! repetitions; every figure is reported as median, min and max over the repetitions, with its
//! ratio to direct and to C Pen.
//!
//! The parsers, the statistics and the report rendering are pure and unit-tested; the rest
//! drives real processes and needs root.

pub mod chart;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::backends::{BackendKind, QTYPE_A, backend_argv, build_dns_query, parse_dns_response};
use crate::netns::in_netns;
use crate::node::{self, Proc, output_in_ns, wait_tcp_listening, wait_udp_bound};
use crate::runner::INTERRUPTED;
use crate::topology::{DEFAULT_OFFLOADS_OFF, LinkEnd, NodeKind, Topology, unique_prefix_with};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const WEB1_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const WEB2_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 4);
/// The DSR virtual IP (on the backends' `lo`) and the tarpit's address.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
const TARPIT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
/// The balancer's DSR interface (no IP address), on the same bridge.
const DSR_IF: &str = "eth1";

/// The nft ruleset of the balancer host: drop frames on the DSR interface at the ingress hook,
/// which runs after the packet taps (the balancer's raw socket has them; the host stack needs
/// none).
fn dsr_ingress_drop() -> String {
    format!(
        "table netdev pen_dsr {{\n  chain in {{\n    type filter hook ingress device {DSR_IF} priority 0; policy drop;\n  }}\n}}\n"
    )
}
const HTTP_PORT: u16 = 80;
const DNS_PORT: u16 = 53;
/// Balancer ports: TCP instance, UDP instance, memory instance, per target.
const PORTS_PEN_RS: (u16, u16, u16) = (8001, 5301, 9001);
const PORTS_C_PEN: (u16, u16, u16) = (8002, 5302, 9002);
const PORTS_HAPROXY: (u16, u16, u16) = (8003, 0, 9003);
/// Connection limit of the throughput instances (`-x`/`-c`, HAProxy `maxconn`).
const THROUGHPUT_MAXCONN: u32 = 2_000;
const SMALL_PAGE: &str = "/index.html";
const MIB1_FILE: &str = "/1m.bin";
const MIB100_FILE: &str = "/100m.bin";
const SMALL_PAGE_BYTES: usize = 100;
const MIB: u64 = 1 << 20;

/// The four things measured side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Direct,
    PenRs,
    CPen,
    HAProxy,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::Direct, Target::PenRs, Target::CPen, Target::HAProxy];

    pub fn label(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::PenRs => "pen-rs",
            Target::CPen => "C Pen",
            Target::HAProxy => "HAProxy",
        }
    }

    fn ports(self) -> (u16, u16, u16) {
        match self {
            Target::Direct => (HTTP_PORT, DNS_PORT, 0),
            Target::PenRs => PORTS_PEN_RS,
            Target::CPen => PORTS_C_PEN,
            Target::HAProxy => PORTS_HAPROXY,
        }
    }

    fn http_addr(self) -> SocketAddr {
        match self {
            Target::Direct => SocketAddr::new(IpAddr::V4(WEB1_IP), HTTP_PORT),
            t => SocketAddr::new(IpAddr::V4(LB_IP), t.ports().0),
        }
    }

    /// `None`: this target has no UDP load balancing (HAProxy 2.6).
    fn dns_addr(self) -> Option<SocketAddr> {
        match self {
            Target::Direct => Some(SocketAddr::new(IpAddr::V4(WEB1_IP), DNS_PORT)),
            Target::HAProxy => None,
            t => Some(SocketAddr::new(IpAddr::V4(LB_IP), t.ports().1)),
        }
    }
}

/// The targets in the order used by repetition `rep` (rotated by one per repetition).
pub fn rotated(rep: usize) -> Vec<Target> {
    let n = Target::ALL.len();
    (0..n).map(|i| Target::ALL[(i + rep) % n]).collect()
}

/// One reported figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Figure {
    AbKeepAlive,
    Ab,
    Wrk,
    BulkSeq,
    BulkPar,
    Mib1KeepAlive,
    Dnsperf,
    DnsperfLost,
    FreshQps,
    FreshLost,
    RssIdle,
    Rss10k,
    PerConn,
    DsrAbKeepAlive,
    DsrBulkSeq,
    DsrFps,
    TarpitRate,
    TarpitValid,
    AbKeepAliveCpu,
    AbCpu,
    /// Tarpit with `tarpit_persist` and `tarpit_rate` (issue #22): SYN+ACKs per second under
    /// the cap.
    TarpitHoldRate,
    /// Tarpit with `tarpit_persist`: growth of pen's RSS per held connection.
    TarpitHeldBytes,
}

/// What the issue asks of pen-rs for a figure: a ratio to direct, or an absolute bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// pen-rs / direct must be at least this; C Pen's measured ratio from the issue.
    RatioToDirect {
        min: f64,
        c_pen: f64,
    },
    /// The value must be at most this.
    AtMost(f64),
    /// The value must be at least this.
    AtLeast(f64),
    None,
}

impl Figure {
    pub const ALL: [Figure; 22] = [
        Figure::AbKeepAlive,
        Figure::Ab,
        Figure::Wrk,
        Figure::BulkSeq,
        Figure::BulkPar,
        Figure::Mib1KeepAlive,
        Figure::Dnsperf,
        Figure::DnsperfLost,
        Figure::FreshQps,
        Figure::FreshLost,
        Figure::RssIdle,
        Figure::Rss10k,
        Figure::PerConn,
        Figure::DsrAbKeepAlive,
        Figure::DsrBulkSeq,
        Figure::DsrFps,
        Figure::TarpitRate,
        Figure::TarpitValid,
        Figure::AbKeepAliveCpu,
        Figure::AbCpu,
        Figure::TarpitHoldRate,
        Figure::TarpitHeldBytes,
    ];

    pub fn unit(self) -> &'static str {
        match self {
            Figure::AbKeepAlive
            | Figure::Ab
            | Figure::Wrk
            | Figure::Mib1KeepAlive
            | Figure::DsrAbKeepAlive => "req/s",
            Figure::BulkSeq | Figure::BulkPar | Figure::DsrBulkSeq => "Gbit/s",
            Figure::DsrFps => "frames/s",
            Figure::TarpitRate | Figure::TarpitHoldRate => "SYN+ACK/s",
            Figure::TarpitHeldBytes => "bytes RSS/held conn",
            Figure::TarpitValid => "% valid checksums",
            Figure::AbKeepAliveCpu | Figure::AbCpu => "µs CPU/request",
            Figure::Dnsperf | Figure::FreshQps => "queries/s",
            Figure::DnsperfLost | Figure::FreshLost => "% lost",
            Figure::RssIdle | Figure::Rss10k => "MB RSS",
            Figure::PerConn => "bytes/conn",
        }
    }

    /// Higher is better (throughput) or lower is better (loss, memory).
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Figure::DnsperfLost
                | Figure::FreshLost
                | Figure::RssIdle
                | Figure::Rss10k
                | Figure::PerConn
                | Figure::AbKeepAliveCpu
                | Figure::AbCpu
                | Figure::TarpitHeldBytes
        )
    }

    pub fn goal(self) -> Goal {
        match self {
            Figure::AbKeepAlive | Figure::Wrk => Goal::RatioToDirect {
                min: 0.80,
                c_pen: 0.66,
            },
            Figure::Ab => Goal::RatioToDirect {
                min: 0.75,
                c_pen: 0.61,
            },
            Figure::BulkSeq => Goal::RatioToDirect {
                min: 0.70,
                c_pen: 0.35,
            },
            Figure::Mib1KeepAlive => Goal::RatioToDirect {
                min: 0.60,
                c_pen: 0.16,
            },
            Figure::Dnsperf => Goal::RatioToDirect {
                min: 0.85,
                c_pen: 0.59,
            },
            Figure::DsrAbKeepAlive => Goal::RatioToDirect {
                min: 0.97,
                c_pen: 0.93,
            },
            Figure::DsrBulkSeq => Goal::RatioToDirect {
                min: 0.95,
                c_pen: 0.77,
            },
            Figure::TarpitValid => Goal::AtLeast(100.0),
            Figure::FreshLost | Figure::DnsperfLost => Goal::AtMost(0.0),
            Figure::RssIdle => Goal::AtMost(10.0),
            _ => Goal::None,
        }
    }
}

/// Sizes of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub reps: usize,
    pub abk_n: u32,
    pub ab_n: u32,
    pub wrk_secs: u32,
    pub bulk_seq_n: u32,
    pub bulk_par_c: u32,
    pub bulk_par_each: u32,
    pub mib1_n: u32,
    pub dns_secs: u32,
    pub idle_conns: u32,
    pub tarpit_syns: u32,
}

impl Plan {
    /// The issue's settings, three repetitions.
    pub fn full() -> Plan {
        Plan {
            reps: 3,
            abk_n: 20_000,
            ab_n: 10_000,
            wrk_secs: 10,
            bulk_seq_n: 10,
            bulk_par_c: 4,
            bulk_par_each: 3,
            mib1_n: 2_000,
            dns_secs: 10,
            idle_conns: 10_000,
            tarpit_syns: 5_000,
        }
    }

    /// Smoke run for CI: one repetition, tiny counts (well under two minutes).
    pub fn quick() -> Plan {
        Plan {
            reps: 1,
            abk_n: 2_000,
            ab_n: 1_000,
            wrk_secs: 1,
            bulk_seq_n: 1,
            bulk_par_c: 2,
            bulk_par_each: 1,
            mib1_n: 100,
            dns_secs: 1,
            idle_conns: 500,
            tarpit_syns: 300,
        }
    }

    fn describe(&self, f: Figure) -> String {
        match f {
            Figure::AbKeepAlive => format!("ab -k -c 20 -n {} (100 B page)", self.abk_n),
            Figure::Ab => format!("ab -c 20 -n {} (100 B page)", self.ab_n),
            Figure::Wrk => format!("wrk -t2 -c50 -d{}s (100 B page)", self.wrk_secs),
            Figure::BulkSeq => format!("{} sequential 100 MiB downloads", self.bulk_seq_n),
            Figure::BulkPar => format!(
                "{}x{} parallel 100 MiB downloads",
                self.bulk_par_c, self.bulk_par_each
            ),
            Figure::Mib1KeepAlive => format!("ab -k -c 10 -n {} (1 MiB file)", self.mib1_n),
            Figure::Dnsperf => format!("dnsperf -c 20, {} s", self.dns_secs),
            Figure::DnsperfLost => "dnsperf lost queries".to_string(),
            Figure::FreshQps => format!(
                "DNS, fresh source port per query, 20 in flight, {} s",
                self.dns_secs
            ),
            Figure::FreshLost => "DNS fresh-port loop lost queries".to_string(),
            Figure::RssIdle => "balancer RSS, idle".to_string(),
            Figure::Rss10k => format!("balancer RSS, {} idle connections", self.idle_conns),
            Figure::PerConn => "memory per idle connection".to_string(),
            Figure::DsrAbKeepAlive => format!("DSR: ab -k -c 20 -n {} (100 B page)", self.abk_n),
            Figure::DsrBulkSeq => format!("DSR: {} sequential 100 MiB downloads", self.bulk_seq_n),
            Figure::DsrFps => "DSR: frames/s forwarded during ab -k".to_string(),
            Figure::TarpitRate => format!("tarpit: {} SYNs, SYN+ACKs answered", self.tarpit_syns),
            Figure::TarpitValid => "tarpit: SYN+ACKs with valid checksums".to_string(),
            Figure::AbKeepAliveCpu => "balancer CPU during ab -k".to_string(),
            Figure::AbCpu => "balancer CPU during ab (new connection per request)".to_string(),
            Figure::TarpitHoldRate => format!(
                "tarpit_persist, tarpit_rate {TARPIT_CAP} burst {TARPIT_CAP_BURST}: {} SYNs, SYN+ACKs",
                self.tarpit_syns
            ),
            Figure::TarpitHeldBytes => format!(
                "tarpit_persist: pen RSS growth per held connection ({} connects)",
                self.tarpit_syns
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pure parts: output parsers, statistics, report rendering.

/// Where the full run writes its report by default (committed to the repository).
pub const FULL_OUT_DIR: &str = "results";
/// Where `--quick` writes its report by default: under the build directory, so a smoke run
/// never overwrites the committed full report in [`FULL_OUT_DIR`].
pub const QUICK_OUT_DIR: &str = "target/bench-quick";

/// The report directory: `--out` when given, else the default of the run's kind.
pub fn out_dir(quick: bool, out: Option<PathBuf>) -> PathBuf {
    out.unwrap_or_else(|| PathBuf::from(if quick { QUICK_OUT_DIR } else { FULL_OUT_DIR }))
}

fn field_after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
}

/// What `ab` printed: requests/s, failed and non-2xx counts, bytes and seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbResult {
    pub rps: f64,
    pub failed: u64,
    pub non2xx: u64,
    pub total_bytes: u64,
    pub secs: f64,
    pub complete: u64,
}

impl AbResult {
    /// Gbit/s over the whole run (headers included).
    pub fn gbits(&self) -> f64 {
        if self.secs > 0.0 {
            self.total_bytes as f64 * 8.0 / self.secs / 1e9
        } else {
            0.0
        }
    }
}

pub fn parse_ab(text: &str) -> Result<AbResult> {
    let num = |label: &str| -> Result<f64> {
        field_after(text, label)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("ab output has no {label:?} line: {}", tail(text, 300)))
    };
    Ok(AbResult {
        rps: num("Requests per second:")?,
        failed: num("Failed requests:")? as u64,
        non2xx: field_after(text, "Non-2xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        total_bytes: num("Total transferred:")? as u64,
        secs: num("Time taken for tests:")?,
        complete: num("Complete requests:")? as u64,
    })
}

/// `wrk`'s requests/s and its error count (socket errors plus non-2xx/3xx responses).
pub fn parse_wrk(text: &str) -> Result<(f64, u64)> {
    let rps = field_after(text, "Requests/sec:")
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("wrk output has no Requests/sec line: {}", tail(text, 300)))?;
    let mut errors = field_after(text, "Non-2xx or 3xx responses:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if let Some(l) = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("Socket errors:"))
    {
        // "connect 0, read 0, write 0, timeout 12"
        for part in l.split(',') {
            if let Some(n) = part
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
            {
                errors += n;
            }
        }
    }
    Ok((rps, errors))
}

/// `dnsperf`'s queries/s and lost percentage.
pub fn parse_dnsperf(text: &str) -> Result<(f64, f64)> {
    let qps = field_after(text, "Queries per second:")
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| {
            anyhow!(
                "dnsperf output has no Queries per second line: {}",
                tail(text, 300)
            )
        })?;
    let sent = field_after(text, "Queries sent:")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let lost = field_after(text, "Queries lost:")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let pct = if sent > 0.0 { lost * 100.0 / sent } else { 0.0 };
    Ok((qps, pct))
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    let kb: u64 = field_after(status, "VmRSS:")?.parse().ok()?;
    Some(kb * 1024)
}

/// What a log file holds from byte `from` on, lossily decoded ("" if unreadable): the output
/// of the latest process appended to it.
fn read_from(path: &Path, from: u64) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(data.len());
    String::from_utf8_lossy(data.get(start..).unwrap_or_default()).into_owned()
}

fn tail(text: &str, max: usize) -> String {
    let t = text.trim();
    let start = t.len().saturating_sub(max);
    let start = (start..=t.len())
        .find(|i| t.is_char_boundary(*i))
        .unwrap_or(t.len());
    t.get(start..).unwrap_or_default().replace('\n', " | ")
}

/// Lines peers print at every start that say nothing about whether they work: C Pen's GeoIP
/// warnings (Debian's build looks for GeoIP databases that are not installed; pen works
/// without them) and its connection-table allocation lines.
const HARMLESS_OUTPUT: [&str; 3] = [
    "Error Opening file /usr/share/GeoIP/",
    "Before: conns =",
    "After: conns =",
];

/// What peers print when their listening port is still held by another socket (pen-rs, C Pen,
/// HAProxy): worth another attempt a second later.
const PORT_BUSY_OUTPUT: [&str; 3] = [
    "Address already in use",
    "can't bind local address",
    "cannot bind socket",
];

/// How a peer's start-up went.
#[derive(Debug, Clone, PartialEq)]
pub enum StartUp {
    /// It serves; whatever it printed is beside the point.
    Serving,
    /// It does not serve and its output says its port is taken: try again.
    PortBusy(String),
    /// It does not serve: why (the probe's finding and the output lines that matter).
    Failed(String),
}

/// Judges a peer's start-up by whether it serves (`serves`: the probe's finding, e.g. a
/// listening socket on its address, and the process still running), never by what it
/// printed: C Pen prints GeoIP warnings on every start. The output only explains a failure
/// (without the known-harmless lines) and tells a busy port from other failures.
pub fn judge_start_up(serves: Result<(), String>, output: &str) -> StartUp {
    let Err(why) = serves else {
        return StartUp::Serving;
    };
    let relevant: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !HARMLESS_OUTPUT.iter().any(|h| l.contains(h)))
        .collect();
    let said = if relevant.is_empty() {
        if output.trim().is_empty() {
            "it printed nothing".to_string()
        } else {
            "it printed only its usual start-up lines (GeoIP warnings, table sizes)".to_string()
        }
    } else {
        format!("it printed: {}", tail(&relevant.join("\n"), 400))
    };
    let msg = format!("{why}; {said}");
    if relevant
        .iter()
        .any(|l| PORT_BUSY_OUTPUT.iter().any(|b| l.contains(b)))
    {
        StartUp::PortBusy(msg)
    } else {
        StartUp::Failed(msg)
    }
}

/// The ports the balancers listen on, as a `net.ipv4.ip_local_reserved_ports` value for the
/// balancer host: outgoing connections to the backends must not take them as source ports,
/// or a closed connection's TIME_WAIT socket (no SO_REUSEADDR) keeps the next instance on
/// that port from binding for a minute ("can't bind local address").
pub fn balancer_reserved_ports() -> String {
    let mut ports: Vec<u16> = Target::ALL
        .iter()
        .filter(|t| **t != Target::Direct)
        .flat_map(|t| {
            let (a, b, c) = t.ports();
            [a, b, c]
        })
        .filter(|p| *p != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// min, median, max of a non-empty sample set (median of an even count: the mean of the two
/// middle values).
pub fn summary(samples: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], med, v[n - 1]))
}

/// `a / b`, or `None` when it means nothing (no reference, zero reference).
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.abs() > f64::EPSILON => Some(a / b),
        _ => None,
    }
}

fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}"))
        .unwrap_or_else(|| "—".to_string())
}

/// Everything a run measured, plus what the report says about its setting.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub samples: BTreeMap<(Figure, Target), Vec<f64>>,
    /// Measurements that failed, in order, as "figure / target: error".
    pub errors: Vec<String>,
    /// Notes (failed requests, unreachable peers, DSR state...).
    pub notes: Vec<String>,
    /// Key/value lines of the header: command, machine, versions, offloads.
    pub setting: Vec<(String, String)>,
}

impl Results {
    pub fn add(&mut self, f: Figure, t: Target, v: f64) {
        self.samples.entry((f, t)).or_default().push(v);
    }

    pub fn median(&self, f: Figure, t: Target) -> Option<f64> {
        self.samples
            .get(&(f, t))
            .and_then(|s| summary(s))
            .map(|s| s.1)
    }

    /// The markdown report.
    pub fn markdown(&self, plan: &Plan) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# pen-lab bench report\n");
        for (k, v) in &self.setting {
            let _ = writeln!(o, "- **{k}:** {v}");
        }
        let _ = writeln!(
            o,
            "\nEvery figure: median (min–max) over {} repetition(s), target order rotated between \
             repetitions; ×direct and ×C Pen are ratios of medians. \"—\": not applicable.\n",
            plan.reps
        );
        let _ = writeln!(
            o,
            "| figure | unit | target | median | min | max | ×direct | ×C Pen |"
        );
        let _ = writeln!(o, "|---|---|---|---:|---:|---:|---:|---:|");
        for f in Figure::ALL {
            for t in Target::ALL {
                let Some(samples) = self.samples.get(&(f, t)) else {
                    continue;
                };
                let Some((lo, med, hi)) = summary(samples) else {
                    continue;
                };
                let d = ratio(Some(med), self.median(f, Target::Direct));
                let c = ratio(Some(med), self.median(f, Target::CPen));
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    plan.describe(f),
                    f.unit(),
                    t.label(),
                    fmt_value(med),
                    fmt_value(lo),
                    fmt_value(hi),
                    fmt_ratio(d),
                    fmt_ratio(c)
                );
            }
        }
        let _ = writeln!(o, "\n## pen-rs against the issue's targets\n");
        let _ = writeln!(
            o,
            "| figure | goal | pen-rs | C Pen (this run) | C Pen (issue) | met |"
        );
        let _ = writeln!(o, "|---|---|---:|---:|---:|---|");
        for f in Figure::ALL {
            match f.goal() {
                Goal::RatioToDirect { min, c_pen } => {
                    let d = self.median(f, Target::Direct);
                    let p = ratio(self.median(f, Target::PenRs), d);
                    let c = ratio(self.median(f, Target::CPen), d);
                    let met = match p {
                        Some(p) if p >= min => "yes",
                        Some(_) => "no",
                        None => "not measured",
                    };
                    let _ = writeln!(
                        o,
                        "| {} | ≥ {min:.2} × direct | {} | {} | {c_pen:.2} | {met} |",
                        plan.describe(f),
                        fmt_ratio(p),
                        fmt_ratio(c)
                    );
                }
                Goal::AtMost(max) => {
                    let p = self.median(f, Target::PenRs);
                    let c = self.median(f, Target::CPen);
                    let met = match p {
                        Some(p) if p <= max => "yes",
                        Some(_) => "no",
                        None => "not measured",
                    };
                    let _ = writeln!(
                        o,
                        "| {} | ≤ {} {} | {} | {} | | {met} |",
                        plan.describe(f),
                        fmt_value(max),
                        f.unit(),
                        p.map(fmt_value).unwrap_or_else(|| "—".into()),
                        c.map(fmt_value).unwrap_or_else(|| "—".into()),
                    );
                }
                Goal::AtLeast(min) => {
                    let p = self.median(f, Target::PenRs);
                    let c = self.median(f, Target::CPen);
                    let met = match p {
                        Some(p) if p >= min => "yes",
                        Some(_) => "no",
                        None => "not measured",
                    };
                    let _ = writeln!(
                        o,
                        "| {} | ≥ {} {} | {} | {} | | {met} |",
                        plan.describe(f),
                        fmt_value(min),
                        f.unit(),
                        p.map(fmt_value).unwrap_or_else(|| "—".into()),
                        c.map(fmt_value).unwrap_or_else(|| "—".into()),
                    );
                }
                Goal::None => {}
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(o, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(o, "- {n}");
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(o, "\n## Failed measurements\n");
            for e in &self.errors {
                let _ = writeln!(o, "- {e}");
            }
        }
        o
    }

    /// The chart (SVG, see [`chart`]): for every throughput figure, each balancer's median as
    /// a ratio to direct's median, with whiskers from its lowest to its highest sample (over
    /// direct's median), pen-rs's goal marked, and a caption naming the run.
    pub fn svg(&self, plan: &Plan) -> String {
        chart::render(&self.chart(plan))
    }

    /// The chart's data.
    pub fn chart(&self, plan: &Plan) -> chart::Chart {
        let bal = [
            (Target::PenRs, "#d9480f"),
            (Target::CPen, "#1971c2"),
            (Target::HAProxy, "#5c940d"),
        ];
        let rows = Figure::ALL
            .into_iter()
            .filter(|f| f.higher_is_better())
            .filter_map(|f| {
                let d = self
                    .median(f, Target::Direct)
                    .filter(|d| d.abs() > f64::EPSILON)?;
                let bars = bal
                    .iter()
                    .map(|(t, color)| chart::Bar {
                        target: t.label().to_string(),
                        color: color.to_string(),
                        ratios: self
                            .samples
                            .get(&(f, *t))
                            .and_then(|s| summary(s))
                            .map(|(lo, med, hi)| (lo / d, med / d, hi / d)),
                    })
                    .collect();
                Some(chart::Row {
                    key: format!("{f:?}"),
                    label: plan.describe(f),
                    goal: match f.goal() {
                        Goal::RatioToDirect { min, .. } => Some(min),
                        _ => None,
                    },
                    bars,
                })
            })
            .collect();
        let get = |k: &str| {
            self.setting
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("unknown")
        };
        // "git c48fe2a, release build, /path/to/pen": the path stays in the report.
        let pen_rs: Vec<&str> = get("pen-rs").splitn(3, ", ").take(2).collect();
        chart::Chart {
            title: "pen-lab bench: throughput through each balancer as a ratio to direct (higher is better)"
                .into(),
            rows,
            reps: plan.reps,
            caption: vec![
                format!(
                    "Run of {}; pen-rs {}; {} repetition(s), target order rotated.",
                    get("date"),
                    pen_rs.join(", "),
                    plan.reps
                ),
                format!("Machine: {}.", get("machine")),
            ],
        }
    }
}

// ---------------------------------------------------------------------------------------
// The lab.

/// Where the programs are and where the report goes.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub quick: bool,
    pub out: PathBuf,
    pub pen_rs: PathBuf,
    pub c_pen: PathBuf,
    pub self_exe: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

impl BenchOptions {
    /// pen-rs: `$PEN_BIN`, else `target/release/pen` beside pen-lab's own target directory,
    /// else the `pen` next to pen-lab (a debug build: the report says so).
    pub fn from_env(quick: bool, out: PathBuf, command: String) -> Result<BenchOptions> {
        let self_exe = std::env::current_exe().context("finding pen-lab's own executable")?;
        let dir = self_exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let pen_rs = match std::env::var_os("PEN_BIN") {
            Some(p) => PathBuf::from(p),
            None => {
                let release = dir.join("../release/pen");
                if release.is_file() {
                    release
                } else {
                    dir.join("pen")
                }
            }
        };
        let c_pen = std::env::var_os("C_PEN_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/pen"));
        Ok(BenchOptions {
            quick,
            out,
            pen_rs,
            c_pen,
            self_exe,
            command,
        })
    }
}

fn find_program(name: &str, package: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{name} not found (Debian package {package}); run scripts/install-deps.sh as root to install the bench peers"
    )
}

struct Tools {
    nginx: PathBuf,
    haproxy: PathBuf,
    ab: PathBuf,
    wrk: PathBuf,
    dnsperf: PathBuf,
}

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

fn dpkg_version(pkg: &str) -> String {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", pkg])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "not installed".to_string())
}

fn pen_rs_version(pen: &Path) -> String {
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let profile = if pen.to_string_lossy().contains("/release/") {
        "release build"
    } else {
        "DEBUG build (figures not representative; cargo build --release --workspace --bins)"
    };
    format!("git {git}, {profile}, {}", pen.display())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| field_after(&t, "MemTotal:").and_then(|v| v.parse::<u64>().ok()))
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("nproc {cores}, {cpu}, {mem}, kernel {kernel}")
}

/// Raises the soft descriptor limit to the hard one (inherited by every process the bench
/// starts) and returns it: the memory test holds two descriptors per idle connection in one
/// balancer.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass; no other preconditions.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
    }
    lim.rlim_cur
}

/// Idle connections the memory test can open with `nofile` descriptors per process: the
/// balancer needs two per connection plus a margin (HAProxy asks for 2 × maxconn + 14).
pub fn idle_conns_within(wanted: u32, nofile: u64) -> u32 {
    let fit = nofile.saturating_sub(300) / 2;
    wanted.min(u32::try_from(fit).unwrap_or(u32::MAX))
}

/// A private scratch directory, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<ScratchDir> {
        let p = std::env::temp_dir().join(format!("pen-lab-bench-{}", std::process::id()));
        if p.exists() {
            std::fs::remove_dir_all(&p)
                .with_context(|| format!("removing stale {}", p.display()))?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(ScratchDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running lab: topology, backends and the balancers' throughput instances.
/// Field order is drop order: the topology (which kills every process in its namespaces)
/// goes first.
struct Lab {
    /// Bridge-netfilter sysctls that could not be switched off (empty: all off).
    bridge_nf: Vec<String>,
    topo: Topology,
    dir: ScratchDir,
    procs: Vec<Proc>,
    tools: Tools,
    opts: BenchOptions,
}

impl Lab {
    fn ns(&self, node: &str) -> String {
        self.topo.ns_name(node)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{name}.log"))
    }

    fn build(opts: &BenchOptions, tools: Tools) -> Result<Lab> {
        let dir = ScratchDir::new()?;
        let mut topo = Topology::new(&unique_prefix_with("penlab-bench"))?;
        topo.add_node("sw", NodeKind::Switch)?;
        let hosts = [
            ("client", CLIENT_IP),
            ("lb", LB_IP),
            ("web1", WEB1_IP),
            ("web2", WEB2_IP),
        ];
        for (name, ip) in hosts {
            topo.add_node(name, NodeKind::Host)?;
            topo.add_link(&LinkEnd::new(name, "eth0"), &LinkEnd::new("sw", name))?;
            topo.add_address(name, "eth0", IpAddr::V4(ip), 24)?;
        }
        for node in ["client", "lb"] {
            topo.sysctl(node, "net.ipv4.ip_local_port_range", "1024 65000")?;
            topo.sysctl(node, "net.ipv4.tcp_tw_reuse", "1")?;
        }
        // The balancers' own ports are never source ports of the balancer host's connections
        // to the backends (a TIME_WAIT socket on one would keep the next instance from binding).
        topo.sysctl(
            "lb",
            "net.ipv4.ip_local_reserved_ports",
            &balancer_reserved_ports(),
        )?;
        // Bridged frames need not traverse iptables (br_netfilter is loaded on this kernel and
        // costs every target the same); best effort, the report records the outcome.
        let mut bridge_nf = Vec::new();
        for key in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            if let Err(e) = topo.sysctl("sw", key, "0") {
                bridge_nf.push(format!("{key}: {e:#}"));
            }
        }
        // DSR: a dedicated interface without an address on the balancer host (the kernel
        // must not answer ARP on it), the VIP on the backends' lo, hidden from ARP.
        topo.add_link(&LinkEnd::new("lb", DSR_IF), &LinkEnd::new("sw", "lbdsr"))?;
        // The DSR interface belongs to the balancer's raw socket: the host's IP stack must not
        // process its frames a second time (README "DSR host setup").
        topo.nft("lb", &dsr_ingress_drop())?;
        topo.sysctl("lb", "net.ipv4.conf.all.arp_ignore", "1")?;
        for node in ["web1", "web2"] {
            topo.add_address(node, "lo", IpAddr::V4(VIP), 32)?;
            topo.sysctl(node, "net.ipv4.conf.all.arp_ignore", "1")?;
            topo.sysctl(node, "net.ipv4.conf.all.arp_announce", "2")?;
            topo.sysctl(node, "net.ipv4.conf.eth0.arp_ignore", "1")?;
            topo.sysctl(node, "net.ipv4.conf.eth0.arp_announce", "2")?;
        }
        let mut lab = Lab {
            bridge_nf,
            topo,
            dir,
            procs: Vec::new(),
            tools,
            opts: opts.clone(),
        };
        lab.write_content()?;
        lab.start_backends()?;
        Ok(lab)
    }

    fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    fn write_content(&self) -> Result<()> {
        let www = self.www();
        std::fs::create_dir_all(&www).with_context(|| format!("creating {}", www.display()))?;
        let mut page = String::from("pen-lab bench page ");
        while page.len() < SMALL_PAGE_BYTES - 1 {
            page.push('x');
        }
        page.push('\n');
        std::fs::write(www.join("index.html"), page).context("writing index.html")?;
        let chunk = vec![0x5a_u8; MIB as usize];
        std::fs::write(www.join("1m.bin"), &chunk).context("writing 1m.bin")?;
        let mut big = std::fs::File::create(www.join("100m.bin")).context("creating 100m.bin")?;
        for _ in 0..100 {
            std::io::Write::write_all(&mut big, &chunk).context("writing 100m.bin")?;
        }
        Ok(())
    }

    fn start_backends(&mut self) -> Result<()> {
        for (name, ip) in [("web1", WEB1_IP), ("web2", WEB2_IP)] {
            let d = self.dir.path().join(format!("nginx-{name}"));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            let conf = format!(
                "user root;\ndaemon off;\nworker_processes 1;\nworker_rlimit_nofile 65536;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                 events {{ worker_connections 30000; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
                 keepalive_requests 1000000;\n  keepalive_timeout 120s;\n\
                 default_type application/octet-stream;\n\
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n\
                 server {{ listen {ip}:{HTTP_PORT} backlog=4096; listen {VIP}:{HTTP_PORT} backlog=4096; root {www}; }}\n}}\n",
                d = d.display(),
                www = self.www().display()
            );
            let conf_path = d.join("nginx.conf");
            std::fs::write(&conf_path, conf)
                .with_context(|| format!("writing {}", conf_path.display()))?;
            let argv = vec![
                s(&self.tools.nginx),
                "-c".into(),
                s(&conf_path),
                "-p".into(),
                s(&d),
            ];
            let ns = self.ns(name);
            let log = self.log(&format!("nginx-{name}"));
            let mut p = node::spawn(&ns, &format!("nginx-{name}"), &argv, &[], &log)?;
            let addr = SocketAddr::new(IpAddr::V4(ip), HTTP_PORT);
            if let Err(e) = wait_tcp_listening(&ns, addr, Duration::from_secs(5)) {
                let _ = p.try_wait();
                bail!(
                    "nginx on {name} did not listen on {addr}: {e:#}; log: {}",
                    p.log_tail(600)
                );
            }
            self.procs.push(p);
            let kind = BackendKind::Dns {
                name: format!("dns-{name}"),
                answer: Ipv4Addr::new(10, 77, 9, 9),
            };
            let daddr = SocketAddr::new(IpAddr::V4(ip), DNS_PORT);
            let mut argv = vec![s(&self.opts.self_exe)];
            argv.extend(backend_argv(&kind, &[daddr]));
            let p = node::spawn(
                &ns,
                &format!("dns-{name}"),
                &argv,
                &[],
                &self.log(&format!("dns-{name}")),
            )?;
            wait_udp_bound(&ns, daddr, Duration::from_secs(5))
                .with_context(|| format!("DNS backend on {name}: {}", p.log_tail(400)))?;
            self.procs.push(p);
        }
        Ok(())
    }

    fn haproxy_conf(&self, port: u16, maxconn: u32) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("haproxy-{port}.cfg"));
        let conf = format!(
            "global\n  nbthread 1\n  maxconn {maxconn}\n\ndefaults\n  mode tcp\n  timeout connect 3s\n\
             timeout client 120s\n  timeout server 120s\n\nfrontend f{port}\n  bind {LB_IP}:{port}\n\
             default_backend b{port}\n\nbackend b{port}\n  balance roundrobin\n\
             server web1 {WEB1_IP}:{HTTP_PORT}\n  server web2 {WEB2_IP}:{HTTP_PORT}\n"
        );
        std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The argv of a TCP balancer instance of `t` on `port` (`max`: connection limit).
    fn balancer_argv(&self, t: Target, port: u16, max: u32) -> Result<Vec<String>> {
        let listen = format!("{LB_IP}:{port}");
        let b1 = format!("{WEB1_IP}:{HTTP_PORT}");
        let b2 = format!("{WEB2_IP}:{HTTP_PORT}");
        let pen = |bin: &Path| {
            vec![
                s(bin),
                "-f".into(),
                "-r".into(),
                "-x".into(),
                max.to_string(),
                "-c".into(),
                max.to_string(),
                listen.clone(),
                b1.clone(),
                b2.clone(),
            ]
        };
        Ok(match t {
            Target::Direct => bail!("direct has no balancer"),
            Target::PenRs => pen(&self.opts.pen_rs),
            Target::CPen => pen(&self.opts.c_pen),
            Target::HAProxy => vec![
                s(&self.tools.haproxy),
                "-db".into(),
                "-f".into(),
                s(self.haproxy_conf(port, max)?),
            ],
        })
    }

    /// Spawns `argv` as `name` on the balancer host and waits until it serves (`probe`, and
    /// the process still running), judged by [`judge_start_up`]: what it prints does not
    /// matter unless it fails. A busy port is tried again, up to three attempts a second
    /// apart.
    fn start_peer(
        &self,
        name: &str,
        argv: &[String],
        probe: impl Fn(&mut Proc) -> Result<()>,
    ) -> Result<Proc> {
        let ns = self.ns("lb");
        let log = self.log(name);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let mut p = node::spawn(&ns, name, argv, &[], &log)?;
            let serves = match probe(&mut p) {
                Err(e) => Err(format!("{e:#}")),
                Ok(()) => match p.try_wait() {
                    Ok(None) => Ok(()),
                    Ok(Some(st)) => Err(format!("it exited ({st})")),
                    Err(e) => Err(format!("{e:#}")),
                },
            };
            match judge_start_up(serves, &read_from(&log, from)) {
                StartUp::Serving => return Ok(p),
                StartUp::PortBusy(m) if attempt < 3 => {
                    eprintln!("  {name}, attempt {attempt}: {m}; trying again in 1 s");
                    let _ = p.stop(Duration::from_secs(2));
                    std::thread::sleep(Duration::from_secs(1));
                }
                StartUp::PortBusy(m) | StartUp::Failed(m) => {
                    let _ = p.stop(Duration::from_secs(2));
                    bail!("{name} ({}) did not start: {m}", argv.join(" "));
                }
            }
        }
    }

    /// Starts a TCP balancer instance of `t` on `port` and waits until it listens there.
    fn start_balancer(&self, t: Target, port: u16, max: u32, tag: &str) -> Result<Proc> {
        let argv = self.balancer_argv(t, port, max)?;
        self.start_tcp_peer(t, &argv, port, tag)
    }

    /// Starts `argv` (a balancer of `t` listening on `port` of the balancer host); started
    /// means listening there (read from /proc: no connection, so an idle instance stays idle).
    fn start_tcp_peer(&self, t: Target, argv: &[String], port: u16, tag: &str) -> Result<Proc> {
        let ns = self.ns("lb");
        let name = format!("{}-{tag}", t.label().replace(' ', "-"));
        let addr = SocketAddr::new(IpAddr::V4(LB_IP), port);
        self.start_peer(&name, argv, |p| {
            until_serving(p, || {
                wait_tcp_listening(&ns, addr, Duration::from_millis(100))
            })
        })
    }

    fn start_udp_balancer(&self, t: Target) -> Result<Option<Proc>> {
        let bin = match t {
            Target::PenRs => &self.opts.pen_rs,
            Target::CPen => &self.opts.c_pen,
            _ => return Ok(None),
        };
        let Some(addr) = t.dns_addr() else {
            return Ok(None);
        };
        let argv = vec![
            s(bin),
            "-f".into(),
            "-U".into(),
            "-r".into(),
            addr.to_string(),
            format!("{WEB1_IP}:{DNS_PORT}"),
            format!("{WEB2_IP}:{DNS_PORT}"),
        ];
        let ns = self.ns("lb");
        let name = format!("{}-udp", t.label().replace(' ', "-"));
        let p = self.start_peer(&name, &argv, |p| {
            until_serving(p, || wait_udp_bound(&ns, addr, Duration::from_millis(100)))
        })?;
        Ok(Some(p))
    }

    fn run_client(&self, argv: Vec<String>, timeout: Duration) -> Result<String> {
        let out = output_in_ns(&self.ns("client"), &argv, None, timeout)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "{:?} failed ({}): {}",
                argv.join(" "),
                out.status,
                tail(&text, 400)
            );
        }
        Ok(text)
    }

    fn ab(&self, flags: &[&str], url: &str, timeout: Duration) -> Result<AbResult> {
        let mut argv = vec![
            s(&self.tools.ab),
            "-q".into(),
            "-r".into(),
            "-s".into(),
            if self.opts.quick { "10" } else { "30" }.into(),
        ];
        argv.extend(flags.iter().map(|f| f.to_string()));
        argv.push(url.to_string());
        let text = self.run_client(argv, timeout)?;
        parse_ab(&text)
    }
}

/// Repeats `check` (a short probe) for up to 5 s until it succeeds; stops early with an
/// error when `p` exits first (a peer that cannot bind its port exits at once).
fn until_serving(p: &mut Proc, check: impl Fn() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = check();
        if r.is_ok() {
            return Ok(());
        }
        if let Some(st) = p.try_wait()? {
            bail!("it exited ({st}) before serving");
        }
        if Instant::now() >= deadline {
            return r.context("still not serving after 5 s");
        }
    }
}

/// One measurement of `fig` (and the figures measured with it) on `t`.
fn measure(
    lab: &Lab,
    plan: &Plan,
    test: Figure,
    t: Target,
    pid: Option<u32>,
    res: &mut Results,
) -> Result<()> {
    let base = format!("http://{}", t.http_addr());
    let cpu0 = pid.and_then(cpu_ns);
    // CPU time the balancer spent per completed request (all its threads).
    let add_cpu = |res: &mut Results, f: Figure, r: &AbResult| {
        if let (Some(p), Some(c0)) = (pid, cpu0)
            && let Some(c1) = cpu_ns(p)
            && r.complete > 0
        {
            res.add(f, t, c1.saturating_sub(c0) as f64 / 1e3 / r.complete as f64);
        }
    };
    let long = Duration::from_secs(600);
    let note_failures = |res: &mut Results, what: &str, r: &AbResult| {
        if r.failed > 0 || r.non2xx > 0 {
            res.notes.push(format!(
                "{what} on {}: {} failed, {} non-2xx of {} requests",
                t.label(),
                r.failed,
                r.non2xx,
                r.complete
            ));
        }
    };
    match test {
        Figure::AbKeepAlive => {
            let n = plan.abk_n.to_string();
            let r = lab.ab(
                &["-k", "-c", "20", "-n", &n],
                &format!("{base}{SMALL_PAGE}"),
                long,
            )?;
            note_failures(res, "ab -k", &r);
            add_cpu(res, Figure::AbKeepAliveCpu, &r);
            res.add(test, t, r.rps);
        }
        Figure::Ab => {
            let n = plan.ab_n.to_string();
            let r = lab.ab(
                &["-c", "20", "-n", &n],
                &format!("{base}{SMALL_PAGE}"),
                long,
            )?;
            note_failures(res, "ab", &r);
            add_cpu(res, Figure::AbCpu, &r);
            res.add(test, t, r.rps);
        }
        Figure::Wrk => {
            let argv = vec![
                s(&lab.tools.wrk),
                "-t2".into(),
                "-c50".into(),
                format!("-d{}s", plan.wrk_secs),
                format!("{base}{SMALL_PAGE}"),
            ];
            let text = lab.run_client(argv, Duration::from_secs(u64::from(plan.wrk_secs) + 60))?;
            let (rps, errors) = parse_wrk(&text)?;
            if errors > 0 {
                res.notes
                    .push(format!("wrk on {}: {errors} errors", t.label()));
            }
            res.add(test, t, rps);
        }
        Figure::BulkSeq => {
            let n = plan.bulk_seq_n.to_string();
            let r = lab.ab(
                &["-c", "1", "-n", &n],
                &format!("{base}{MIB100_FILE}"),
                long,
            )?;
            note_failures(res, "sequential bulk", &r);
            res.add(test, t, r.gbits());
        }
        Figure::BulkPar => {
            let c = plan.bulk_par_c.to_string();
            let n = (plan.bulk_par_c * plan.bulk_par_each).to_string();
            let r = lab.ab(&["-c", &c, "-n", &n], &format!("{base}{MIB100_FILE}"), long)?;
            note_failures(res, "parallel bulk", &r);
            res.add(test, t, r.gbits());
        }
        Figure::Mib1KeepAlive => {
            let n = plan.mib1_n.to_string();
            let r = lab.ab(
                &["-k", "-c", "10", "-n", &n],
                &format!("{base}{MIB1_FILE}"),
                long,
            )?;
            note_failures(res, "1 MiB keep-alive", &r);
            res.add(test, t, r.rps);
        }
        Figure::Dnsperf => {
            let Some(addr) = t.dns_addr() else {
                return Ok(());
            };
            let argv = vec![
                s(&lab.tools.dnsperf),
                "-s".into(),
                addr.ip().to_string(),
                "-p".into(),
                addr.port().to_string(),
                "-d".into(),
                s(lab.dir.path().join("queries.txt")),
                "-c".into(),
                "20".into(),
                "-l".into(),
                plan.dns_secs.to_string(),
                "-t".into(),
                "1".into(),
            ];
            let text = lab.run_client(argv, Duration::from_secs(u64::from(plan.dns_secs) + 60))?;
            let (qps, lost) = parse_dnsperf(&text)?;
            res.add(Figure::Dnsperf, t, qps);
            res.add(Figure::DnsperfLost, t, lost);
        }
        Figure::FreshQps => {
            let Some(addr) = t.dns_addr() else {
                return Ok(());
            };
            let (answered, lost, secs) = fresh_port_loop(
                &lab.ns("client"),
                addr,
                20,
                Duration::from_secs(u64::from(plan.dns_secs)),
            )?;
            res.add(Figure::FreshQps, t, answered as f64 / secs.max(1e-9));
            let total = answered + lost;
            res.add(
                Figure::FreshLost,
                t,
                if total > 0 {
                    lost as f64 * 100.0 / total as f64
                } else {
                    100.0
                },
            );
        }
        Figure::RssIdle => {
            if t == Target::Direct {
                return Ok(());
            }
            memory(lab, plan, t, res)?;
        }
        _ => {}
    }
    Ok(())
}

/// Queries `server` from a fresh UDP socket (so a fresh source port) per query, `inflight`
/// at a time, for `dur`; a query unanswered within one second is lost. Returns (answered,
/// lost, elapsed seconds).
pub fn fresh_port_loop(
    ns: &str,
    server: SocketAddr,
    inflight: usize,
    dur: Duration,
) -> Result<(u64, u64, f64)> {
    let r = in_netns(ns, move || -> Result<(u64, u64, f64)> {
        let start = Instant::now();
        let deadline = start + dur;
        // Threads created here inherit this thread's network namespace.
        let results: Vec<Result<(u64, u64)>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..inflight)
                .map(|w| {
                    sc.spawn(move || -> Result<(u64, u64)> {
                        let (mut ok, mut lost) = (0u64, 0u64);
                        let mut id = (w as u16).wrapping_mul(3001);
                        let mut buf = [0u8; 512];
                        while Instant::now() < deadline {
                            id = id.wrapping_add(1);
                            let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(CLIENT_IP), 0))
                                .context("binding a fresh UDP socket")?;
                            sock.set_read_timeout(Some(Duration::from_secs(1)))?;
                            let q = build_dns_query(id, &format!("q{id}.bench.example"), QTYPE_A)?;
                            sock.send_to(&q, server)
                                .with_context(|| format!("sending a DNS query to {server}"))?;
                            let answered = loop {
                                match sock.recv_from(&mut buf) {
                                    Ok((n, _)) => {
                                        if let Some(r) = buf.get(..n).and_then(parse_dns_response)
                                            && r.id == id
                                        {
                                            break true;
                                        }
                                    }
                                    Err(_) => break false,
                                }
                            };
                            if answered {
                                ok += 1;
                            } else {
                                lost += 1;
                            }
                        }
                        Ok((ok, lost))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("query thread panicked")))
                })
                .collect()
        });
        let (mut ok, mut lost) = (0, 0);
        for r in results {
            let (o, l) = r?;
            ok += o;
            lost += l;
        }
        Ok((ok, lost, start.elapsed().as_secs_f64()))
    })??;
    Ok(r)
}

/// Nanoseconds on CPU of every thread of `pid` (`/proc/PID/task/*/schedstat`, first field).
fn cpu_ns(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for e in dir.flatten() {
        if let Ok(t) = std::fs::read_to_string(e.path().join("schedstat"))
            && let Some(ns) = t
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        {
            total = total.saturating_add(ns);
        }
    }
    Some(total)
}

/// RSS of `pid` in bytes; a whole process tree is not needed: every balancer here is one
/// process.
fn rss_of(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vmrss(&status).ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// Open descriptors of `pid` (0 if unreadable).
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls every `step` until `pid` holds at least `want` descriptors or `deadline` passes.
fn wait_fds(pid: u32, want: usize, deadline: Instant, step: Duration) {
    while fd_count(pid) < want && Instant::now() < deadline {
        std::thread::sleep(step);
    }
}

/// Idle RSS of a fresh default instance, then RSS with `idle_conns` open idle client
/// connections on a fresh instance sized for them.
fn memory(lab: &Lab, plan: &Plan, t: Target, res: &mut Results) -> Result<()> {
    let port = t.ports().2;
    // Idle: default limits (HAProxy needs a maxconn; give it the same as pen's default -x).
    let mut p = match t {
        Target::HAProxy => lab.start_balancer(t, port, 500, "idle")?,
        _ => {
            let bin = if t == Target::PenRs {
                &lab.opts.pen_rs
            } else {
                &lab.opts.c_pen
            };
            let argv = vec![
                s(bin),
                "-f".into(),
                "-r".into(),
                format!("{LB_IP}:{port}"),
                format!("{WEB1_IP}:{HTTP_PORT}"),
                format!("{WEB2_IP}:{HTTP_PORT}"),
            ];
            lab.start_tcp_peer(t, &argv, port, "idle")?
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_of(p.pid)?;
    p.stop(Duration::from_secs(2))?;
    res.add(Figure::RssIdle, t, idle as f64 / 1e6);

    let n = plan.idle_conns;
    let mut p = lab.start_balancer(t, port, n + 50, "conns")?;
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_of(p.pid)?;
    let fds_before = fd_count(p.pid);
    let addr = SocketAddr::new(IpAddr::V4(LB_IP), port);
    let conns = open_idle(&lab.ns("client"), addr, n as usize, p.pid, fds_before)?;
    let after = rss_of(p.pid)?;
    let held = fd_count(p.pid).saturating_sub(fds_before);
    drop(conns);
    p.stop(Duration::from_secs(3))?;
    if held < 2 * n as usize * 95 / 100 {
        res.notes.push(format!(
            "{}: with {n} client connections open it held only {held} extra descriptors (expected about {})",
            t.label(),
            2 * n
        ));
    }
    res.add(Figure::Rss10k, t, after as f64 / 1e6);
    res.add(
        Figure::PerConn,
        t,
        after.saturating_sub(before) as f64 / f64::from(n.max(1)),
    );
    Ok(())
}

/// Opens `n` idle TCP connections to `addr` from namespace `ns`, in batches, and waits (at
/// most 30 s) until the balancer `pid` holds a client and a server descriptor for each.
fn open_idle(
    ns: &str,
    addr: SocketAddr,
    n: usize,
    pid: u32,
    fds_before: usize,
) -> Result<Vec<socket2::Socket>> {
    use socket2::{Domain, Socket, Type};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = Vec::with_capacity(n);
    let batch = 500;
    while all.len() < n {
        let k = batch.min(n - all.len());
        let socks = in_netns(ns, move || -> Result<Vec<Socket>> {
            let mut v = Vec::with_capacity(k);
            for _ in 0..k {
                let sk = Socket::new(Domain::IPV4, Type::STREAM, None)
                    .context("creating a client socket (file descriptor limit?)")?;
                sk.set_nonblocking(true)?;
                match sk.connect(&addr.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => return Err(anyhow!("connecting to {addr}: {e}")),
                }
                v.push(sk);
            }
            Ok(v)
        })??;
        all.extend(socks);
        // Let the balancer catch up before the next batch (its accept backlog is finite).
        let want = fds_before + 2 * all.len() * 95 / 100;
        wait_fds(pid, want, deadline, Duration::from_millis(20));
        if Instant::now() >= deadline {
            break;
        }
    }
    wait_fds(pid, fds_before + 2 * n, deadline, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(500));
    Ok(all)
}

/// The argv of a DSR instance (with the tarpit for `tarpit`), as in the wiki and the blog.
fn dsr_argv(bin: &Path, tarpit: bool) -> Vec<String> {
    let mut argv = vec![s(bin), "-f".into(), "-r".into()];
    if tarpit {
        argv.extend([
            "-O".into(),
            format!("acl 1 permit {TARPIT_IP}"),
            "-O".into(),
            "tarpit_acl 1".into(),
        ]);
    }
    argv.extend([
        "-O".into(),
        format!("dsr_if {DSR_IF}"),
        format!("{VIP}:{HTTP_PORT}"),
        format!("{WEB1_IP}:{HTTP_PORT}"),
        format!("{WEB2_IP}:{HTTP_PORT}"),
    ]);
    argv
}

/// Starts `t` in DSR mode on the balancer host; an instance that exits within 700 ms is an
/// error quoting what it printed (e.g. a build without DSR).
fn start_dsr(lab: &Lab, t: Target, tarpit: bool) -> Result<Proc> {
    let bin = match t {
        Target::PenRs => &lab.opts.pen_rs,
        Target::CPen => &lab.opts.c_pen,
        _ => bail!("{} has no DSR mode", t.label()),
    };
    let name = format!(
        "{}-{}",
        t.label().replace(' ', "-"),
        if tarpit { "tarpit" } else { "dsr" }
    );
    // A DSR instance has no socket to probe: it serves when it still runs after 700 ms (a
    // build without DSR, or a missing interface, makes it exit at once).
    lab.start_peer(&name, &dsr_argv(bin, tarpit), |p| {
        p.wait(Duration::from_millis(700))?;
        Ok(())
    })
    .with_context(|| format!("{} in DSR mode (-O \"dsr_if {DSR_IF}\")", t.label()))
}

/// Probes whether pen-rs runs with `-O "dsr_if IF"`; `Err` says why not.
fn probe_dsr(lab: &Lab) -> Result<()> {
    let mut p = start_dsr(lab, Target::PenRs, false)?;
    p.stop(Duration::from_millis(500))
}

/// Transmitted frames of `iface` in namespace `ns` (from `/proc/thread-self/net/dev`).
fn tx_frames(ns: &str, iface: &str) -> Result<u64> {
    let text = in_netns(ns, || std::fs::read_to_string("/proc/thread-self/net/dev"))?
        .context("reading /proc/thread-self/net/dev")?;
    parse_net_dev_tx(&text, iface)
        .ok_or_else(|| anyhow!("no interface {iface:?} in {ns:?}'s /proc/net/dev"))
}

/// The tx packet counter of `iface` in a `/proc/net/dev` text.
pub fn parse_net_dev_tx(text: &str, iface: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != iface {
            return None;
        }
        rest.split_whitespace().nth(9)?.parse().ok()
    })
}

/// DSR: ab -k and sequential bulk through the VIP, and the frames/s the balancer forwards
/// (its DSR interface's tx counter over the ab -k run). Direct is measured again in the same
/// phase, so the ratios compare like with like.
fn measure_dsr(lab: &Lab, plan: &Plan, t: Target, res: &mut Results) -> Result<()> {
    let long = Duration::from_secs(600);
    let abk_n = plan.abk_n.to_string();
    let seq_n = plan.bulk_seq_n.to_string();
    let base = match t {
        Target::Direct => format!("http://{WEB1_IP}:{HTTP_PORT}"),
        Target::PenRs | Target::CPen => format!("http://{VIP}:{HTTP_PORT}"),
        Target::HAProxy => return Ok(()),
    };
    let mut p = match t {
        Target::Direct => None,
        _ => Some(start_dsr(lab, t, false)?),
    };
    let lb = lab.ns("lb");
    let before = tx_frames(&lb, DSR_IF)?;
    let r = lab.ab(
        &["-k", "-c", "20", "-n", &abk_n],
        &format!("{base}{SMALL_PAGE}"),
        long,
    )?;
    let after = tx_frames(&lb, DSR_IF)?;
    if r.failed > 0 || r.non2xx > 0 {
        res.notes.push(format!(
            "DSR ab -k on {}: {} failed, {} non-2xx of {}",
            t.label(),
            r.failed,
            r.non2xx,
            r.complete
        ));
    }
    res.add(Figure::DsrAbKeepAlive, t, r.rps);
    if p.is_some() {
        res.add(
            Figure::DsrFps,
            t,
            after.saturating_sub(before) as f64 / r.secs.max(1e-9),
        );
    }
    let b = lab.ab(
        &["-c", "1", "-n", &seq_n],
        &format!("{base}{MIB100_FILE}"),
        long,
    )?;
    res.add(Figure::DsrBulkSeq, t, b.gbits());
    if let Some(p) = p.as_mut() {
        if !p.running() {
            bail!(
                "{} in DSR mode exited during the test: {}",
                t.label(),
                p.log_tail(300)
            );
        }
        p.stop(Duration::from_secs(2))?;
    }
    Ok(())
}

/// Tarpit: `tarpit_syns` SYNs from fresh client sockets to the tarpit address; counts the
/// SYN+ACKs captured at the client, their rate (first to last) and the share with valid
/// IPv4 and TCP checksums.
fn measure_tarpit(lab: &Lab, plan: &Plan, t: Target, res: &mut Results) -> Result<()> {
    use socket2::{Domain, Socket, Type};
    if !matches!(t, Target::PenRs | Target::CPen) {
        return Ok(());
    }
    let mut p = start_dsr(lab, t, true)?;
    let client = lab.ns("client");
    let pcap = lab
        .dir
        .path()
        .join(format!("tarpit-{}.pcap", t.label().replace(' ', "-")));
    let cap = crate::capture::start_capture(
        &client,
        "eth0",
        &format!("tcp and src host {TARPIT_IP}"),
        &pcap,
    )?;
    let dst = SocketAddr::new(IpAddr::V4(TARPIT_IP), HTTP_PORT);
    let n = plan.tarpit_syns as usize;
    let connect_all = move |k: usize| -> Result<Vec<Socket>> {
        let mut v = Vec::with_capacity(k);
        for _ in 0..k {
            let sk = Socket::new(Domain::IPV4, Type::STREAM, None)
                .context("creating a client socket")?;
            sk.set_nonblocking(true)?;
            match sk.connect(&dst.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(anyhow!("connecting to the tarpit {dst}: {e}")),
            }
            v.push(sk);
        }
        Ok(v)
    };
    // One SYN first, so the client has resolved the tarpit's ARP before the burst.
    let warm = in_netns(&client, move || connect_all(1))??;
    std::thread::sleep(Duration::from_millis(300));
    let socks = in_netns(&client, move || connect_all(n))??;
    std::thread::sleep(Duration::from_millis(500));
    let stats = cap.stop()?;
    drop(socks);
    drop(warm);
    let alive = p.running();
    p.stop(Duration::from_secs(2))?;
    if !alive {
        bail!(
            "{} exited during the tarpit test: {}",
            t.label(),
            p.log_tail(300)
        );
    }
    let frames = crate::decode::read_pcap(&pcap)?;
    let synacks: Vec<_> = frames
        .iter()
        .filter(|f| f.tcp.as_ref().is_some_and(|h| h.syn && h.ack))
        .collect();
    let valid = synacks.iter().filter(|f| f.checksums_valid()).count();
    // The first SYN+ACK answers the warm-up SYN, 300 ms before the burst.
    let burst = synacks.get(1..).unwrap_or_default();
    let span = match (burst.first(), burst.last()) {
        (Some(a), Some(b)) => b.ts.saturating_sub(a.ts).as_secs_f64().max(1e-3),
        _ => 1.0,
    };
    res.notes.push(format!(
        "tarpit on {}: {} SYN+ACKs for {} SYNs (+1 warm-up), {valid} with valid checksums, capture dropped {}",
        t.label(),
        synacks.len(),
        n,
        stats.dropped
    ));
    let _ = std::fs::remove_file(&pcap);
    res.add(Figure::TarpitRate, t, burst.len() as f64 / span);
    res.add(
        Figure::TarpitValid,
        t,
        if synacks.is_empty() {
            0.0
        } else {
            valid as f64 * 100.0 / synacks.len() as f64
        },
    );
    Ok(())
}

/// The reply rate cap of the `tarpit-hold` test (replies per second, and its burst).
const TARPIT_CAP: u32 = 1000;
const TARPIT_CAP_BURST: u32 = 100;

/// The tarpit's DSR command line with `tarpit_persist` and the cap, for `tarpit-hold`.
fn tarpit_hold_argv(bin: &Path) -> Vec<String> {
    let mut argv = dsr_argv(bin, true);
    let extra = [
        "-O".to_string(),
        "tarpit_persist".to_string(),
        "-O".to_string(),
        format!("tarpit_rate {TARPIT_CAP} burst {TARPIT_CAP_BURST}"),
    ];
    let at = argv.len().min(3);
    argv.splice(at..at, extra);
    argv
}

/// Tarpit hold (issue #22), pen-rs only (C Pen has neither persist mode nor a cap): the
/// tarpit with `tarpit_persist` and `tarpit_rate`; `tarpit_syns` connects from the client,
/// paced at twice the cap (rounds of 100), whose SYN+ACKs captured at the client during the
/// flood give the reply rate under the cap (the burst included), and pen's RSS before the
/// connects and with them held (every answered connection sits in a zero window) gives the
/// memory per held connection: none beyond noise, the engine keeps no state per connection.
fn measure_tarpit_hold(lab: &Lab, plan: &Plan, t: Target, res: &mut Results) -> Result<()> {
    use socket2::{Domain, Socket, Type};
    if t != Target::PenRs {
        return Ok(());
    }
    let argv = tarpit_hold_argv(&lab.opts.pen_rs);
    let name = "pen-rs-tarpit-hold";
    let mut p = node::spawn(&lab.ns("lb"), name, &argv, &[], &lab.log(name))?;
    if let Some(st) = p.wait(Duration::from_millis(700))? {
        bail!(
            "pen-rs tarpit (hold) exited ({st}): {}",
            p.log_tail(300).trim()
        );
    }
    let client = lab.ns("client");
    let pcap = lab.dir.path().join("tarpit-hold.pcap");
    let cap = crate::capture::start_capture(
        &client,
        "eth0",
        &format!("tcp and src host {TARPIT_IP}"),
        &pcap,
    )?;
    let dst = SocketAddr::new(IpAddr::V4(TARPIT_IP), HTTP_PORT);
    let connect_all = move |k: usize| -> Result<Vec<Socket>> {
        let mut v = Vec::with_capacity(k);
        for _ in 0..k {
            let sk = Socket::new(Domain::IPV4, Type::STREAM, None)
                .context("creating a client socket")?;
            sk.set_nonblocking(true)?;
            match sk.connect(&dst.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(anyhow!("connecting to the tarpit {dst}: {e}")),
            }
            v.push(sk);
        }
        Ok(v)
    };
    // One connection first (ARP resolved, pen's buffers touched), then the baseline RSS.
    let warm = in_netns(&client, move || connect_all(1))??;
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_of(p.pid)?;
    let n = plan.tarpit_syns as usize;
    let round = 100usize;
    let every = Duration::from_secs_f64(round as f64 / f64::from(2 * TARPIT_CAP));
    let flood = move || -> Result<(Vec<Socket>, Duration)> {
        let start = Instant::now();
        let mut all = Vec::with_capacity(n);
        let mut rounds = 0u32;
        while all.len() < n {
            all.extend(connect_all(round.min(n - all.len()))?);
            rounds += 1;
            let due = start + every * rounds;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        Ok((all, start.elapsed()))
    };
    let (socks, flood_time) = in_netns(&client, flood)??;
    // The held connections settle (clients retransmit unanswered SYNs after 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let rss_held = rss_of(p.pid)?;
    let stats = cap.stop()?;
    drop(socks);
    drop(warm);
    let alive = p.running();
    p.stop(Duration::from_secs(2))?;
    if !alive {
        bail!(
            "pen-rs exited during the tarpit hold test: {}",
            p.log_tail(300)
        );
    }
    let frames = crate::decode::read_pcap(&pcap)?;
    let _ = std::fs::remove_file(&pcap);
    let synacks: Vec<_> = frames
        .iter()
        .filter(|f| f.tcp.as_ref().is_some_and(|h| h.syn && h.ack))
        .collect();
    let held: std::collections::BTreeSet<u16> = synacks.iter().filter_map(|f| f.dst_port).collect();
    // The first SYN+ACK answers the warm-up; the flood's window starts at the next one.
    let span = flood_time.as_secs_f64().max(1e-3);
    let in_flood = match synacks.get(1) {
        Some(first) => synacks
            .iter()
            .skip(1)
            .filter(|f| f.ts.saturating_sub(first.ts) <= flood_time)
            .count(),
        None => 0,
    };
    let grown = rss_held.saturating_sub(rss_before);
    res.notes.push(format!(
        "tarpit hold on pen-rs (tarpit_persist, tarpit_rate {TARPIT_CAP} burst {TARPIT_CAP_BURST}): \
         {n} connects (+1 warm-up) in {span:.2} s, {in_flood} SYN+ACKs during them, {} in all \
         (client retransmissions included), {} connections held, \
         RSS {} kB before, {} kB held ({} kB more), capture dropped {}",
        synacks.len(),
        held.len(),
        rss_before / 1024,
        rss_held / 1024,
        grown / 1024,
        stats.dropped
    ));
    res.add(Figure::TarpitHoldRate, t, in_flood as f64 / span);
    res.add(
        Figure::TarpitHeldBytes,
        t,
        grown as f64 / held.len().max(1) as f64,
    );
    Ok(())
}

/// The tests of one repetition, in order, with the names `PENLAB_BENCH_TESTS` takes.
pub const TESTS: [(&str, Figure); 12] = [
    ("abk", Figure::AbKeepAlive),
    ("ab", Figure::Ab),
    ("wrk", Figure::Wrk),
    ("bulk-seq", Figure::BulkSeq),
    ("bulk-par", Figure::BulkPar),
    ("1mib", Figure::Mib1KeepAlive),
    ("dnsperf", Figure::Dnsperf),
    ("fresh", Figure::FreshQps),
    ("memory", Figure::RssIdle),
    ("dsr", Figure::DsrAbKeepAlive),
    ("tarpit", Figure::TarpitRate),
    ("tarpit-hold", Figure::TarpitHoldRate),
];

/// Parses a comma-separated list of test names (see [`TESTS`]), keeping the run order.
pub fn select_tests(list: &str) -> Result<Vec<Figure>> {
    let mut want = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match TESTS.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => want.push(*f),
            None => bail!(
                "unknown test {name:?} in PENLAB_BENCH_TESTS; expected a comma-separated list of {}",
                TESTS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    Ok(TESTS
        .iter()
        .map(|(_, f)| *f)
        .filter(|f| want.contains(f))
        .collect())
}

fn tools() -> Result<Tools> {
    Ok(Tools {
        nginx: find_program("nginx", "nginx-light")?,
        haproxy: find_program("haproxy", "haproxy")?,
        ab: find_program("ab", "apache2-utils")?,
        wrk: find_program("wrk", "wrk")?,
        dnsperf: find_program("dnsperf", "dnsperf")?,
    })
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs the whole bench and writes `report.md`, `chart.svg` and `samples.tsv` into
/// `opts.out`. Returns the results; `Err` when the lab could not be built at all.
pub fn run(opts: &BenchOptions) -> Result<Results> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("pen-lab bench needs root (network namespaces, veths)");
    }
    let tools = tools()?;
    for (bin, what) in [
        (
            &opts.pen_rs,
            "pen-rs (cargo build --release --workspace --bins, or set PEN_BIN)",
        ),
        (&opts.c_pen, "C Pen (Debian package pen, or set C_PEN_BIN)"),
    ] {
        if !bin.is_file() {
            bail!("{} not found: {what}", bin.display());
        }
    }
    let nofile = raise_nofile();
    let mut plan = if opts.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(n) = std::env::var("PENLAB_BENCH_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        plan.idle_conns = n;
    }
    let mut notes = Vec::new();
    let fit = idle_conns_within(plan.idle_conns, nofile);
    if fit < plan.idle_conns {
        notes.push(format!(
            "memory test: {fit} idle connections instead of {}: the descriptor limit here is {nofile} per process \
             (hard limit; no CAP_SYS_RESOURCE to raise it) and a proxy holds two per connection",
            plan.idle_conns
        ));
        plan.idle_conns = fit;
    }
    let setting = vec![
        ("command".into(), format!("`{}`", opts.command)),
        ("date".into(), date_utc()),
        ("machine".into(), machine()),
        ("pen-rs".into(), pen_rs_version(&opts.pen_rs)),
        (
            "peers".into(),
            format!(
                "C Pen {} ({}), HAProxy {} (mode tcp, nbthread 1, balance roundrobin), nginx-light {} (1 worker per backend, sendfile)",
                dpkg_version("pen"),
                opts.c_pen.display(),
                dpkg_version("haproxy"),
                dpkg_version("nginx-light")
            ),
        ),
        (
            "load generators".into(),
            format!(
                "ab (apache2-utils {}), wrk {}, dnsperf {}, pen-lab's fresh-port DNS loop",
                dpkg_version("apache2-utils"),
                dpkg_version("wrk"),
                dpkg_version("dnsperf")
            ),
        ),
        (
            "topology".into(),
            format!(
                "client {CLIENT_IP}, balancer host {LB_IP}, backends {WEB1_IP} and {WEB2_IP} on one bridge (network namespaces, veth); \
                 direct = client → backend 1; balancers use -r (round robin, no client tracking) over both backends; \
                 the balancers' ports ({}) are reserved on the balancer host (net.ipv4.ip_local_reserved_ports), never source ports",
                balancer_reserved_ports()
            ),
        ),
        (
            "offloads".into(),
            format!(
                "{} off on every veth end (ethtool -K), set explicitly by the lab",
                DEFAULT_OFFLOADS_OFF.join(", ")
            ),
        ),
        (
            "DSR interface".into(),
            format!(
                "the balancer host's {DSR_IF} has no address and an nft netdev ingress chain with policy drop \
                 (runs after the packet taps: the balancer's raw socket still gets every frame, the host's IP stack none)"
            ),
        ),
        (
            "balancer flags".into(),
            format!(
                "pen-rs and C Pen `-f -r -x {THROUGHPUT_MAXCONN} -c {THROUGHPUT_MAXCONN}`, HAProxy maxconn {THROUGHPUT_MAXCONN} \
                 (memory instances: `-f -r` / maxconn 500 idle, `-x`/`-c`/maxconn {} with connections); UDP `-f -U -r`",
                plan.idle_conns + 50
            ),
        ),
    ];
    let mut res = Results {
        setting,
        notes,
        ..Results::default()
    };
    eprintln!("pen-lab bench: building the lab...");
    let lab = Lab::build(opts, tools)?;
    res.setting.push((
        "bridge netfilter".into(),
        if lab.bridge_nf.is_empty() {
            "bridge-nf-call-iptables/ip6tables/arptables = 0 in the switch namespace".to_string()
        } else {
            format!("left on: {}", lab.bridge_nf.join("; "))
        },
    ));
    let mut queries = String::new();
    for i in 0..200 {
        let _ = writeln!(queries, "bench{i}.example A");
    }
    std::fs::write(lab.dir.path().join("queries.txt"), queries).context("writing queries.txt")?;
    let mut balancers = Vec::new();
    let mut tcp_pids = BTreeMap::new();
    for t in [Target::PenRs, Target::CPen, Target::HAProxy] {
        let p = lab.start_balancer(t, t.ports().0, THROUGHPUT_MAXCONN, "tcp")?;
        tcp_pids.insert(t, p.pid);
        balancers.push(p);
        if let Some(p) = lab.start_udp_balancer(t)? {
            balancers.push(p);
        }
    }
    let dsr_rs = probe_dsr(&lab);
    if let Err(e) = &dsr_rs {
        res.notes
            .push(format!("pen-rs DSR and tarpit rows: not yet — {e:#}"));
    }
    if Target::HAProxy.dns_addr().is_none() {
        res.notes
            .push("HAProxy 2.6 has no UDP load balancing: no DNS rows for it.".to_string());
    }
    let tests = match std::env::var("PENLAB_BENCH_TESTS") {
        Ok(list) if !list.trim().is_empty() => {
            let t = select_tests(&list)?;
            res.notes.push(format!(
                "only these tests ran (PENLAB_BENCH_TESTS): {}",
                list.trim()
            ));
            t
        }
        _ => TESTS.iter().map(|(_, f)| *f).collect(),
    };
    let started = Instant::now();
    for rep in 0..plan.reps {
        let order = rotated(rep);
        eprintln!(
            "pen-lab bench: repetition {}/{} (order: {})",
            rep + 1,
            plan.reps,
            order
                .iter()
                .map(|t| t.label())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for &test in &tests {
            for t in &order {
                interrupted()?;
                if dsr_rs.is_err()
                    && *t == Target::PenRs
                    && matches!(
                        test,
                        Figure::DsrAbKeepAlive | Figure::TarpitRate | Figure::TarpitHoldRate
                    )
                {
                    continue;
                }
                let t0 = Instant::now();
                let r = match test {
                    Figure::DsrAbKeepAlive => measure_dsr(&lab, &plan, *t, &mut res),
                    Figure::TarpitRate => measure_tarpit(&lab, &plan, *t, &mut res),
                    Figure::TarpitHoldRate => measure_tarpit_hold(&lab, &plan, *t, &mut res),
                    _ => measure(&lab, &plan, test, *t, tcp_pids.get(t).copied(), &mut res),
                };
                match r {
                    Ok(()) => {
                        if let Some(v) = res.samples.get(&(test, *t)).and_then(|v| v.last()) {
                            eprintln!(
                                "  {:<45} {:<8} {:>12} {} ({:.1} s)",
                                plan.describe(test),
                                t.label(),
                                fmt_value(*v),
                                test.unit(),
                                t0.elapsed().as_secs_f64()
                            );
                        }
                    }
                    Err(e) => {
                        let msg = format!("{} / {}: {e:#}", plan.describe(test), t.label());
                        eprintln!("  FAILED {msg}");
                        res.errors.push(msg);
                    }
                }
            }
        }
    }
    for mut p in balancers {
        if !p.running() {
            res.errors.push(format!(
                "{} exited during the bench: {}",
                p.name,
                p.log_tail(300)
            ));
        }
        let _ = p.stop(Duration::from_secs(2));
    }
    res.setting.push((
        "duration".into(),
        format!("{:.0} s of measurements", started.elapsed().as_secs_f64()),
    ));
    write_report(&opts.out, &plan, &res)?;
    drop(lab);
    Ok(res)
}

fn date_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Reads a `samples.tsv` written by [`write_report`] back (figure, unit, target, samples).
pub fn parse_samples_tsv(text: &str) -> Result<BTreeMap<(Figure, Target), Vec<f64>>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let [fig, _unit, target, samples] = cols[..] else {
            bail!(
                "samples.tsv line {}: {line:?} has {} columns; expected figure, unit, target, samples",
                i + 1,
                cols.len()
            );
        };
        let f = Figure::ALL
            .into_iter()
            .find(|f| format!("{f:?}") == fig)
            .ok_or_else(|| anyhow!("samples.tsv line {}: unknown figure {fig:?}", i + 1))?;
        let t = Target::ALL
            .into_iter()
            .find(|t| t.label() == target)
            .ok_or_else(|| {
                anyhow!(
                    "samples.tsv line {}: unknown target {target:?}; expected direct, pen-rs, C Pen or HAProxy",
                    i + 1
                )
            })?;
        let v = samples
            .split(',')
            .map(|x| {
                x.trim()
                    .parse::<f64>()
                    .map_err(|_| anyhow!("samples.tsv line {}: {x:?} is not a number", i + 1))
            })
            .collect::<Result<Vec<f64>>>()?;
        out.insert((f, t), v);
    }
    Ok(out)
}

/// Writes `report.md`, `chart.svg` and `samples.tsv` (every raw sample) into `out`.
pub fn write_report(out: &Path, plan: &Plan, res: &Results) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut md = res.markdown(plan);
    md.push_str("\n![ratio to direct](chart.svg)\n");
    std::fs::write(out.join("report.md"), md)
        .with_context(|| format!("writing {}/report.md", out.display()))?;
    std::fs::write(out.join("chart.svg"), res.svg(plan))
        .with_context(|| format!("writing {}/chart.svg", out.display()))?;
    let mut tsv = String::from("figure\tunit\ttarget\tsamples\n");
    for ((f, t), v) in &res.samples {
        let vals: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
        let _ = writeln!(
            tsv,
            "{f:?}\t{}\t{}\t{}",
            f.unit(),
            t.label(),
            vals.join(",")
        );
    }
    std::fs::write(out.join("samples.tsv"), tsv)
        .with_context(|| format!("writing {}/samples.tsv", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AB_OUT: &str = "This is ApacheBench, Version 2.3 <$Revision: 1903618 $>\n\
Server Software:        nginx/1.22.1\nDocument Length:        100 bytes\n\n\
Concurrency Level:      20\nTime taken for tests:   1.234 seconds\nComplete requests:      20000\n\
Failed requests:        3\n   (Connect: 0, Receive: 0, Length: 3, Exceptions: 0)\n\
Non-2xx responses:      2\nKeep-Alive requests:    19800\nTotal transferred:      7000000 bytes\n\
HTML transferred:       2000000 bytes\nRequests per second:    16207.46 [#/sec] (mean)\n";

    #[test]
    fn quick_run_defaults_to_its_own_directory_not_the_committed_results() {
        assert_eq!(out_dir(true, None), PathBuf::from("target/bench-quick"));
        assert_ne!(out_dir(true, None), out_dir(false, None));
        assert_eq!(out_dir(false, None), PathBuf::from("results"));
        // An explicit --out wins for both kinds.
        assert_eq!(
            out_dir(true, Some(PathBuf::from("/tmp/b"))),
            PathBuf::from("/tmp/b")
        );
        assert_eq!(out_dir(false, Some(PathBuf::from("x"))), PathBuf::from("x"));
    }

    /// What Debian's C Pen 0.34.1 prints on every start (no GeoIP databases installed).
    const C_PEN_START: &str = "Error Opening file /usr/share/GeoIP/GeoIP.dat\n\
Error Opening file /usr/share/GeoIP/GeoIPv6.dat\n\
2026-12-07 02:17:24: Before: conns = (nil), connections_max = 0, clients = (nil), clients_max = 0\n\
2026-12-07 02:17:24: After: conns = 0x55d3f5915550, connections_max = 500, clients = 0x7f4dee812010, clients_max = 2048\n";

    #[test]
    fn a_peer_that_serves_has_started_whatever_it_printed() {
        assert_eq!(judge_start_up(Ok(()), C_PEN_START), StartUp::Serving);
        assert_eq!(judge_start_up(Ok(()), ""), StartUp::Serving);
        // Even an alarming line does not fail a peer that serves.
        assert_eq!(
            judge_start_up(Ok(()), "warning: something odd\n"),
            StartUp::Serving
        );
    }

    #[test]
    fn a_peer_that_does_not_serve_fails_with_the_lines_that_matter() {
        let quiet = judge_start_up(
            Err("nothing listening on tcp 10.77.0.2:9002".into()),
            C_PEN_START,
        );
        let StartUp::Failed(m) = quiet else {
            panic!("{quiet:?}")
        };
        assert!(m.contains("nothing listening on tcp 10.77.0.2:9002"), "{m}");
        assert!(m.contains("only its usual start-up lines"), "{m}");
        assert!(
            !m.contains("GeoIP.dat"),
            "GeoIP noise quoted as the cause: {m}"
        );
        let crashed = judge_start_up(
            Err("it exited (exit status: 1)".into()),
            "pen: -O dsr_if eth9: no such interface\n",
        );
        assert_eq!(
            crashed,
            StartUp::Failed(
                "it exited (exit status: 1); it printed: pen: -O dsr_if eth9: no such interface"
                    .into()
            )
        );
        assert_eq!(
            judge_start_up(Err("it exited (exit status: 1)".into()), ""),
            StartUp::Failed("it exited (exit status: 1); it printed nothing".into())
        );
    }

    #[test]
    fn a_busy_port_is_told_apart_so_the_start_is_tried_again() {
        let c_pen = format!("{C_PEN_START}can't bind local address\n");
        let r = judge_start_up(Err("it exited (exit status: 1)".into()), &c_pen);
        assert_eq!(
            r,
            StartUp::PortBusy(
                "it exited (exit status: 1); it printed: can't bind local address".into()
            )
        );
        let pen_rs = "pen: cannot listen on 10.77.0.2:9001: Address already in use (os error 98)\n";
        assert!(matches!(
            judge_start_up(Err("x".into()), pen_rs),
            StartUp::PortBusy(_)
        ));
        let haproxy = "[ALERT]    (1) : Starting frontend f8003: cannot bind socket (Address already in use) [10.77.0.2:8003]\n";
        assert!(matches!(
            judge_start_up(Err("x".into()), haproxy),
            StartUp::PortBusy(_)
        ));
    }

    #[test]
    fn every_balancer_port_is_reserved_on_the_balancer_host() {
        let reserved: Vec<u16> = balancer_reserved_ports()
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        for t in [Target::PenRs, Target::CPen, Target::HAProxy] {
            let (tcp, udp, mem) = t.ports();
            for p in [tcp, udp, mem].into_iter().filter(|p| *p != 0) {
                assert!(
                    reserved.contains(&p),
                    "{} port {p} not in {reserved:?}",
                    t.label()
                );
            }
        }
        assert_eq!(
            balancer_reserved_ports(),
            "5301,5302,8001,8002,8003,9001,9002,9003"
        );
    }

    #[test]
    fn ab_output_yields_rate_failures_and_bytes() {
        let r = parse_ab(AB_OUT).unwrap();
        assert_eq!(r.rps, 16207.46);
        assert_eq!((r.failed, r.non2xx, r.complete), (3, 2, 20000));
        assert_eq!(r.total_bytes, 7_000_000);
        assert!((r.gbits() - 7_000_000.0 * 8.0 / 1.234 / 1e9).abs() < 1e-9);
    }

    #[test]
    fn ab_output_without_rate_is_an_error_quoting_the_output() {
        let e = parse_ab("apr_socket_recv: Connection refused (111)").unwrap_err();
        assert!(e.to_string().contains("Connection refused"), "{e}");
    }

    #[test]
    fn wrk_output_yields_rate_and_counts_socket_errors_and_bad_statuses() {
        let out = "Running 10s test @ http://10.77.0.2:8001/index.html\n  2 threads and 50 connections\n\
  Socket errors: connect 1, read 2, write 0, timeout 4\n  Non-2xx or 3xx responses: 5\n\
Requests/sec:  23456.78\nTransfer/sec:      8.12MB\n";
        assert_eq!(parse_wrk(out).unwrap(), (23456.78, 12));
        assert_eq!(parse_wrk("Requests/sec: 10.5\n").unwrap(), (10.5, 0));
        assert!(parse_wrk("unable to connect").is_err());
    }

    #[test]
    fn dnsperf_output_yields_rate_and_lost_share() {
        let out = "Statistics:\n\n  Queries sent:         1000\n  Queries completed:    990 (99.00%)\n\
  Queries lost:         10 (1.00%)\n\n  Response codes:       NOERROR 990 (100.00%)\n\
  Queries per second:   12345.678900\n";
        let (q, lost) = parse_dnsperf(out).unwrap();
        assert_eq!(q, 12345.6789);
        assert!((lost - 1.0).abs() < 1e-9);
    }

    #[test]
    fn idle_connections_are_capped_by_the_descriptor_limit() {
        assert_eq!(idle_conns_within(10_000, 20_000), 9_850);
        assert_eq!(idle_conns_within(10_000, 1_048_576), 10_000);
        assert_eq!(idle_conns_within(10_000, 100), 0);
    }

    #[test]
    fn net_dev_tx_counter_is_the_tenth_field_of_the_interface_line() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n\
  eth1: 1000      10    0    0    0     0          0         0    52000     777    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev_tx(text, "eth1"), Some(777));
        assert_eq!(parse_net_dev_tx(text, "lo"), Some(0));
        assert_eq!(parse_net_dev_tx(text, "eth0"), None);
    }

    #[test]
    fn dsr_command_line_is_the_wikis_with_the_tarpit_options_before_dsr_if() {
        let a = dsr_argv(Path::new("/usr/bin/pen"), true);
        let joined = a.join(" ");
        assert_eq!(
            joined,
            "/usr/bin/pen -f -r -O acl 1 permit 10.77.0.200 -O tarpit_acl 1 -O dsr_if eth1 10.77.0.100:80 10.77.0.3:80 10.77.0.4:80"
        );
    }

    #[test]
    fn test_selection_keeps_run_order_and_rejects_unknown_names() {
        assert_eq!(
            select_tests("tarpit, abk").unwrap(),
            vec![Figure::AbKeepAlive, Figure::TarpitRate]
        );
        let e = select_tests("abk,wrkk").unwrap_err().to_string();
        assert!(e.contains("\"wrkk\"") && e.contains("bulk-seq"), "{e}");
    }

    #[test]
    fn vmrss_is_read_in_bytes() {
        let st = "Name:\tpen\nVmPeak:\t   9000 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n";
        assert_eq!(parse_vmrss(st), Some(2048 * 1024));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
    }

    #[test]
    fn summary_gives_min_median_max_and_ignores_nan() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(summary(&[f64::NAN, 5.0]), Some((5.0, 5.0, 5.0)));
        assert_eq!(summary(&[]), None);
    }

    #[test]
    fn ratio_is_absent_without_a_usable_reference() {
        assert_eq!(ratio(Some(1.0), Some(2.0)), Some(0.5));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }

    #[test]
    fn target_order_rotates_so_every_target_runs_first_once() {
        let firsts: Vec<Target> = (0..4).map(|r| rotated(r)[0]).collect();
        assert_eq!(firsts, Target::ALL.to_vec());
        for r in 0..4 {
            let mut o = rotated(r);
            o.sort();
            assert_eq!(o, Target::ALL.to_vec());
        }
    }

    fn sample_results() -> Results {
        let mut r = Results::default();
        for (t, v) in [
            (Target::Direct, 100.0),
            (Target::PenRs, 85.0),
            (Target::CPen, 60.0),
            (Target::HAProxy, 80.0),
        ] {
            r.add(Figure::AbKeepAlive, t, v);
            r.add(Figure::AbKeepAlive, t, v + 10.0);
            r.add(Figure::AbKeepAlive, t, v - 10.0);
        }
        r.add(Figure::RssIdle, Target::PenRs, 3.5);
        r.add(Figure::RssIdle, Target::CPen, 1.2);
        r
    }

    #[test]
    fn report_has_ratios_to_direct_and_c_pen_and_judges_the_goals() {
        let r = sample_results();
        let md = r.markdown(&Plan::full());
        assert!(
            md.contains("| ab -k -c 20 -n 20000 (100 B page) | req/s | pen-rs | 85.0 | 75.0 | 95.0 | 0.85 | 1.42 |"),
            "{md}"
        );
        assert!(
            md.contains("| ≥ 0.80 × direct | 0.85 | 0.60 | 0.66 | yes |"),
            "{md}"
        );
        // wrk was not measured: the goal row says so instead of passing.
        assert!(
            md.contains(
                "wrk -t2 -c50 -d10s (100 B page) | ≥ 0.80 × direct | — | — | 0.66 | not measured |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| balancer RSS, idle | ≤ 10.0 MB RSS | 3.50 | 1.20 | | yes |"),
            "{md}"
        );
    }

    #[test]
    fn chart_draws_one_bar_per_balancer_and_marks_missing_ones() {
        let mut r = sample_results();
        r.add(Figure::Dnsperf, Target::Direct, 1000.0);
        r.add(Figure::Dnsperf, Target::PenRs, 900.0);
        let svg = r.svg(&Plan::quick());
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(">0.85<") && svg.contains(">0.60<") && svg.contains(">0.90<"));
        assert!(svg.contains("HAProxy: not measured"), "{svg}");
    }

    #[test]
    fn chart_whiskers_span_each_balancers_lowest_and_highest_sample_over_directs_median() {
        use chart::parse::{elements, scale};
        // Direct 90/100/110 (median 100); pen-rs 75/85/95, C Pen 50/60/70, HAProxy 70/80/90.
        let r = sample_results();
        let els = elements(&r.svg(&Plan::full()));
        let x = scale(&els);
        for (t, lo, hi) in [
            ("pen-rs", 0.75, 0.95),
            ("C Pen", 0.50, 0.70),
            ("HAProxy", 0.70, 0.90),
        ] {
            let w: Vec<_> = els
                .iter()
                .filter(|e| {
                    e.class() == "whisker"
                        && e.attr("data-figure") == "AbKeepAlive"
                        && e.attr("data-target") == t
                })
                .collect();
            assert_eq!(w.len(), 1, "{t}");
            assert!((w[0].num("x1") - x(lo)).abs() < 0.2, "{t} min");
            assert!((w[0].num("x2") - x(hi)).abs() < 0.2, "{t} max");
        }
    }

    #[test]
    fn chart_of_the_committed_full_run_has_no_overlapping_labels() {
        use chart::parse::{elements, overlap, text_box};
        let samples = parse_samples_tsv(include_str!("../../results/samples.tsv")).unwrap();
        assert!(samples.len() > 40, "{} rows", samples.len());
        let r = Results {
            samples,
            setting: vec![
                ("date".into(), "2026-12-06 19:25 UTC".into()),
                (
                    "machine".into(),
                    "nproc 2, Intel(R) Xeon(R) Processor, 24 GiB, kernel 6.18.44-fc-v1300".into(),
                ),
                ("pen-rs".into(), "git c48fe2a, release build, /x/pen".into()),
            ],
            ..Results::default()
        };
        let svg = r.svg(&Plan::full());
        let els = elements(&svg);
        let texts: Vec<_> = els.iter().filter(|e| e.name == "text").collect();
        let marks: Vec<_> = els
            .iter()
            .filter(|e| matches!(e.class(), "bar" | "whisker" | "goal" | "direct"))
            .collect();
        assert_eq!(els.iter().filter(|e| e.class() == "whisker").count(), 26);
        for (i, a) in texts.iter().enumerate() {
            for b in texts.iter().skip(i + 1) {
                assert!(
                    !overlap(text_box(a), text_box(b)),
                    "{:?} / {:?}",
                    a.text,
                    b.text
                );
            }
            for m in &marks {
                assert!(
                    !overlap(text_box(a), chart::parse::shape_box(m)),
                    "{:?} / {} {:?}",
                    a.text,
                    m.class(),
                    m.attrs
                );
            }
        }
    }

    #[test]
    fn samples_tsv_reads_back_what_the_report_wrote() {
        let t = "figure\tunit\ttarget\tsamples\nAb\treq/s\tC Pen\t1.5,2.000\n";
        let m = parse_samples_tsv(t).unwrap();
        assert_eq!(m.get(&(Figure::Ab, Target::CPen)), Some(&vec![1.5, 2.0]));
        let e = parse_samples_tsv("h\nAb\treq/s\tnginx\t1\n").unwrap_err();
        assert!(e.to_string().contains("\"nginx\""), "{e}");
        assert!(parse_samples_tsv("h\nAb\t1\n").is_err());
        assert!(parse_samples_tsv("h\nAb\tx\tdirect\t1,z\n").is_err());
    }

    #[test]
    fn chart_caption_names_the_runs_date_machine_and_commit() {
        let mut r = sample_results();
        r.setting = vec![
            ("date".into(), "2026-12-06 19:25 UTC".into()),
            (
                "machine".into(),
                "nproc 2, Intel(R) Xeon(R) Processor, 24 GiB, kernel 6.18.44".into(),
            ),
            (
                "pen-rs".into(),
                "git c48fe2a, release build, /work/main/target/release/pen".into(),
            ),
        ];
        let c = r.chart(&Plan::full());
        let caption = c.caption.join(" ");
        for want in [
            "2026-12-06 19:25 UTC",
            "nproc 2, Intel(R) Xeon(R) Processor, 24 GiB, kernel 6.18.44",
            "git c48fe2a, release build",
            "3 repetition(s)",
        ] {
            assert!(caption.contains(want), "caption lacks {want:?}: {caption}");
        }
        assert!(!caption.contains("/work/main"), "{caption}");
        let svg = r.svg(&Plan::full());
        assert!(
            svg.contains(r#"class="caption""#) && svg.contains("git c48fe2a"),
            "{svg}"
        );
    }

    #[test]
    fn tarpit_hold_runs_the_tarpit_with_persist_and_the_cap() {
        assert_eq!(
            tarpit_hold_argv(Path::new("/usr/bin/pen")).join(" "),
            "/usr/bin/pen -f -r -O tarpit_persist -O tarpit_rate 1000 burst 100 -O acl 1 permit 10.77.0.200 -O tarpit_acl 1 -O dsr_if eth1 10.77.0.100:80 10.77.0.3:80 10.77.0.4:80"
        );
        assert_eq!(
            select_tests("tarpit-hold").unwrap(),
            vec![Figure::TarpitHoldRate]
        );
        assert!(!Figure::TarpitHeldBytes.higher_is_better());
    }
}
