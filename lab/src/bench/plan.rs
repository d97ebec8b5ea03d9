//! Sizes of a run and the tests of one repetition.

use anyhow::{Result, bail};

use super::*;

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
    /// Runs of the `vrrp-failover` scenario per balancer (the failover figures are medians
    /// over these, not over `reps`).
    pub failover_runs: usize,
}

impl Plan {
    /// The settings, three repetitions.
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
            failover_runs: 5,
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
            failover_runs: 1,
        }
    }

    pub(super) fn describe(&self, f: Figure) -> String {
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
            Figure::FailoverOutage => format!(
                "VRRP pair, master's balancer killed: outage ({} runs)",
                self.failover_runs
            ),
            Figure::FailoverLost => format!(
                "VRRP pair, master's balancer killed: requests lost ({} runs)",
                self.failover_runs
            ),
            Figure::LinkDownOutage => format!(
                "VRRP pair, master's link down: outage ({} runs)",
                self.failover_runs
            ),
            Figure::LinkDownLost => format!(
                "VRRP pair, master's link down: requests lost ({} runs)",
                self.failover_runs
            ),
        }
    }
}

/// The tests of one repetition, in order, with the names `PENLAB_BENCH_TESTS` takes.
pub const TESTS: [(&str, Figure); 13] = [
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
    // Runs after the repetitions, `failover_runs` times per balancer (its own topology).
    ("failover", Figure::FailoverOutage),
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
