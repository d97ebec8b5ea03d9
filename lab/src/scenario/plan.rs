//! The plan: what the runner executes, every address parsed and every reference resolved.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::expect::Expectation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlannedNodeKind {
    Host,
    Switch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedLinkEnd {
    pub node: String,
    pub iface: String,
    pub mac: Option<[u8; 6]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedLink {
    pub a: PlannedLinkEnd,
    pub b: PlannedLinkEnd,
    pub offloads: bool,
}

/// Impairment of the frames one link end sends (applied on its egress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedImpairment {
    pub node: String,
    pub iface: String,
    /// 0..=100.
    pub loss_percent: u32,
    /// Policer rate in bits per second.
    pub rate_bps: Option<u64>,
    pub burst_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedAddress {
    pub node: String,
    pub iface: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRoute {
    pub node: String,
    pub dest: Option<(IpAddr, u8)>,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    pub table: Option<u32>,
    pub local: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRule {
    pub node: String,
    pub fwmark: u32,
    pub table: u32,
    pub v6: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedSysctl {
    pub node: String,
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedOffload {
    pub node: String,
    pub iface: String,
    pub feature: String,
    pub on: bool,
}

/// Everything the topology needs, in the order the runner applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyPlan {
    pub nodes: Vec<(String, PlannedNodeKind)>,
    /// Applied right after the namespaces exist, before links (IPv6 back on, no DAD).
    pub early_sysctls: Vec<PlannedSysctl>,
    pub links: Vec<PlannedLink>,
    pub offloads: Vec<PlannedOffload>,
    pub addresses: Vec<PlannedAddress>,
    pub sysctls: Vec<PlannedSysctl>,
    pub routes: Vec<PlannedRoute>,
    pub rules: Vec<PlannedRule>,
    pub nft: Vec<(String, String)>,
    /// Link impairments, applied after the links exist.
    pub impairments: Vec<PlannedImpairment>,
    /// (host, argv) of the hosts' `commands`, in file order, run after `nft`.
    pub commands: Vec<(String, Vec<String>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlannedBackend {
    Http { name: String },
    Dns { name: String, answer: Ipv4Addr },
    TcpEcho,
    UdpEcho,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlannedProcessKind {
    Pen(Vec<String>),
    Backend {
        kind: PlannedBackend,
        listen: Vec<SocketAddr>,
    },
    Command(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyCheck {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Path(PathBuf),
    Delay(Duration),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedProcess {
    pub host: String,
    pub name: String,
    pub kind: PlannedProcessKind,
    pub env: Vec<(String, String)>,
    pub ready: Vec<ReadyCheck>,
    pub ready_timeout: Duration,
    pub autostart: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedCapture {
    pub name: String,
    pub host: String,
    pub iface: String,
    pub filter: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectExpect {
    Open,
    Closed,
    Timeout,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StepAction {
    HttpGet {
        host: String,
        addr: SocketAddr,
        path: String,
        src: Option<IpAddr>,
        expect_body: Option<String>,
        expect_body_contains: Option<String>,
        expect_status: Option<u16>,
        expect_fail: bool,
        timeout: Duration,
    },
    Dns {
        host: String,
        server: SocketAddr,
        qname: String,
        src: Option<IpAddr>,
        /// Acceptable answer sets (one for `expect`, several for `expect_any`).
        expect: Vec<Vec<Ipv4Addr>>,
        expect_fail: bool,
        timeout: Duration,
        count: u32,
    },
    TcpConnect {
        host: String,
        addr: SocketAddr,
        src: Option<IpAddr>,
        expect: ConnectExpect,
        timeout: Duration,
    },
    Load {
        host: String,
        addr: SocketAddr,
        path: String,
        requests: u64,
        concurrency: u64,
        src: Option<IpAddr>,
        min_ok: u64,
        share: BTreeMap<String, f64>,
        tolerance: f64,
        timeout: Duration,
        /// Paced load: request k at k × interval.
        interval: Option<Duration>,
        max_outage: Option<Duration>,
    },
    TcpSessions {
        host: String,
        addr: SocketAddr,
        src: Option<IpAddr>,
        sessions: u64,
        rounds: u64,
        interval: Duration,
        timeout: Duration,
        min_ok: u64,
        min_failed: u64,
    },
    /// Wait for the background step of this name and judge its result.
    Join(String),
    Stop(String),
    Start(String),
    Penctl {
        host: String,
        target: String,
        command: Vec<String>,
        expect_contains: Option<String>,
        timeout: Duration,
    },
    Run {
        host: String,
        argv: Vec<String>,
        expect_exit: i32,
        expect_contains: Option<String>,
        timeout: Duration,
    },
    Wait(Duration),
    Replay(Box<crate::replay::PlannedReplay>),
    /// Link down/up, blackhole/lift, signal ([`crate::fault`]).
    Fault(crate::fault::Fault),
    /// Frames out of a host's interface ([`crate::inject`]).
    Inject(Box<PlannedInject>),
}

/// Where injected frames come from.
#[derive(Clone, Debug, PartialEq)]
pub enum InjectSource {
    Pcap {
        path: std::path::PathBuf,
        /// As written, for labels.
        name: String,
        filter: Option<String>,
    },
    Generate(crate::inject::Generate),
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedInject {
    pub host: String,
    pub iface: String,
    pub source: InjectSource,
    /// `eth_src` `None`: the interface's own MAC (known at run time).
    pub rewrite: crate::inject::Rewrite,
    pub pace: crate::inject::Pace,
    pub count: usize,
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedStep {
    /// Progress-line label, e.g. `http_get client → 10.71.0.2:80`.
    pub label: String,
    /// The `name` as written (what `[[expect]]` windows refer to).
    pub name: Option<String>,
    pub kind: StepAction,
    /// Further attempts after a failed one (`dns`, `http_get`, `tcp_connect`).
    pub retries: u32,
    pub retry_delay: Duration,
    /// Started in the background (`load`, `tcp_sessions`); a later `join` step judges it.
    pub background: bool,
}

/// A scenario with everything parsed and resolved.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub timeout: Duration,
    pub topology: TopologyPlan,
    pub processes: Vec<PlannedProcess>,
    pub captures: Vec<PlannedCapture>,
    pub steps: Vec<PlannedStep>,
    pub expects: Vec<Expectation>,
    /// The offline run, for `[sim]` scenarios.
    pub sim: Option<PlannedSim>,
    /// `[balance]`: the whole-balancer simulation alone.
    pub balance: Option<crate::replay::PlannedBalance>,
}

/// A validated `[sim]` table: every path resolved and checked to exist.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedSim {
    pub input: PathBuf,
    pub pen: Vec<String>,
    pub output: String,
    pub expected_pcap: Option<PathBuf>,
    pub expected_log: Option<PathBuf>,
}

/// The capture name under which `[[expect]]` entries of a `[sim]` scenario see the input pcap.
pub const SIM_INPUT_CAPTURE: &str = "input";

impl Plan {
    /// True when the scenario needs no namespaces (no hosts or switches).
    pub fn is_offline(&self) -> bool {
        self.topology.nodes.is_empty()
    }
}
