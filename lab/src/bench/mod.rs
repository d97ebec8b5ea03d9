//! `pen-lab bench`: throughput, DNS and memory of pen-rs side by side with direct access,
//! C Pen and HAProxy, in network namespaces (docs/benchmarks.md describes the method).
//!
//! Topology: one switch with a client (10.77.0.10), a balancer host (10.77.0.2) and two
//! backends (10.77.0.3, 10.77.0.4), each running nginx (Debian package, its own config file,
//! started by PID) and a `pen-lab backend dns` responder. Every veth has tx/tso/gso/gro
//! offloads off (the lab default, recorded in the report).
//!
//! Targets: `direct` (the client talks to backend 1), `pen-rs` (its default paths: io_uring
//! for plain TCP), `pen-rs (tokio)` (the same binary forced onto the tokio TCP path with
//! `-O epoll`: TCP rows only), `C Pen` (`/usr/bin/pen`) and `HAProxy` (mode tcp, nbthread 1,
//! no UDP). The order of the targets is rotated between
//! repetitions; every figure is reported as median, min and max over the repetitions, with its
//! ratio to direct and to C Pen.
//!
//! The parsers, the statistics and the report rendering are pure and unit-tested; the rest
//! drives real processes and needs root.
//!
//! Files: `plan` (sizes and tests of a run), `parse` (tool output parsers), `report`
//! (statistics, `report.md`, `samples.tsv`), `chart` (`chart.svg`), `measure` (the lab and the
//! measurements, root); this file has the targets and figures they share.

pub mod chart;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
const PORTS_PEN_RS_TOKIO: (u16, u16, u16) = (8004, 0, 9004);
/// Connection limit of the throughput instances (`-x`/`-c`, HAProxy `maxconn`).
const THROUGHPUT_MAXCONN: u32 = 2_000;
const SMALL_PAGE: &str = "/index.html";
const MIB1_FILE: &str = "/1m.bin";
const MIB100_FILE: &str = "/100m.bin";
const SMALL_PAGE_BYTES: usize = 100;
const MIB: u64 = 1 << 20;

/// The things measured side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Direct,
    PenRs,
    /// pen-rs on its tokio TCP path (`-O epoll`), beside its default io_uring path: the TCP
    /// figures only (UDP, DSR and the tarpit do not depend on the TCP engine).
    PenRsTokio,
    CPen,
    HAProxy,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Direct,
        Target::PenRs,
        Target::PenRsTokio,
        Target::CPen,
        Target::HAProxy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::PenRs => "pen-rs",
            Target::CPen => "C Pen",
            Target::HAProxy => "HAProxy",
            Target::PenRsTokio => "pen-rs (tokio)",
        }
    }

    /// The label as a file-name part (`pen-rs-tokio`, `C-Pen`).
    fn slug(self) -> String {
        self.label().replace(['(', ')'], "").replace(' ', "-")
    }

    /// Arguments added to a pen-rs command line to pick this target's TCP path.
    fn engine_args(self) -> &'static [&'static str] {
        match self {
            Target::PenRsTokio => &["-O", "epoll"],
            _ => &[],
        }
    }

    fn ports(self) -> (u16, u16, u16) {
        match self {
            Target::Direct => (HTTP_PORT, DNS_PORT, 0),
            Target::PenRs => PORTS_PEN_RS,
            Target::CPen => PORTS_C_PEN,
            Target::HAProxy => PORTS_HAPROXY,
            Target::PenRsTokio => PORTS_PEN_RS_TOKIO,
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
            Target::HAProxy | Target::PenRsTokio => None,
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
    /// VRRP pair (scenario `vrrp-failover`, issue #18): the client-seen outage when the
    /// master's balancer is killed under a paced load, and the requests lost in it.
    FailoverOutage,
    FailoverLost,
    /// The same when the master's link goes down.
    LinkDownOutage,
    LinkDownLost,
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
    pub const ALL: [Figure; 26] = [
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
        Figure::FailoverOutage,
        Figure::FailoverLost,
        Figure::LinkDownOutage,
        Figure::LinkDownLost,
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
            Figure::FailoverOutage | Figure::LinkDownOutage => "ms outage",
            Figure::FailoverLost | Figure::LinkDownLost => "requests lost",
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
                | Figure::FailoverOutage
                | Figure::FailoverLost
                | Figure::LinkDownOutage
                | Figure::LinkDownLost
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

mod measure;
mod parse;
mod plan;
mod report;
#[cfg(test)]
mod tests;

pub use measure::*;
pub use parse::*;
pub use plan::*;
pub use report::*;
