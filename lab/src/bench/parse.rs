//! Pure parsers of what the measuring tools and peers print, and start-up judgement.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow, bail};

use super::*;

pub(super) fn field_after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
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
pub(super) fn read_from(path: &Path, from: u64) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(data.len());
    String::from_utf8_lossy(data.get(start..).unwrap_or_default()).into_owned()
}

pub(super) fn tail(text: &str, max: usize) -> String {
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
pub(super) const HARMLESS_OUTPUT: [&str; 3] = [
    "Error Opening file /usr/share/GeoIP/",
    "Before: conns =",
    "After: conns =",
];

/// What peers print when their listening port is still held by another socket (pen-rs, C Pen,
/// HAProxy): worth another attempt a second later.
pub(super) const PORT_BUSY_OUTPUT: [&str; 3] = [
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

/// The client-seen outage (ms) and the requests lost in one measured step of the
/// `vrrp-failover` scenario, from its detail line: `67 ok, 13 failed in 3953 ms (web2: 67);
/// longest outage 650 ms (13 failed in a row)`.
pub fn parse_failover_detail(detail: &str) -> Result<(f64, f64)> {
    let number_before = |text: &str, marker: &str| -> Option<f64> {
        let at = text.find(marker)?;
        text[..at].split_whitespace().last()?.parse::<f64>().ok()
    };
    let outage = detail
        .split_once("longest outage ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    let lost = number_before(detail, " failed in ");
    match (outage, lost) {
        (Some(o), Some(l)) => Ok((o, l)),
        _ => bail!(
            "expected \"N ok, M failed in T ms ...; longest outage O ms ...\" from a measured load step, got {detail:?}"
        ),
    }
}
