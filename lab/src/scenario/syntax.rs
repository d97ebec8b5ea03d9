//! The file, as written: serde structs that mirror the TOML keys one to one.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// A whole scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Defaults to the file name without `.toml`.
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Seconds for the whole scenario (topology to teardown).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Named values usable as `{NAME}` in any string.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default, rename = "switch")]
    pub switches: Vec<Switch>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<Host>,
    #[serde(default, rename = "link")]
    pub links: Vec<Link>,
    #[serde(default, rename = "process")]
    pub processes: Vec<Process>,
    #[serde(default, rename = "capture")]
    pub captures: Vec<CaptureSpec>,
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    #[serde(default, rename = "expect")]
    pub expects: Vec<ExpectSpec>,
    /// An offline packet-engine run over a pcap fixture (`sim-*` scenarios): no hosts, no
    /// root; see docs/scenario-format.md.
    pub sim: Option<SimTable>,
    /// The whole-balancer simulation of a trace alone (no hosts, no root); see
    /// docs/scenario-format.md and [`crate::replay`].
    pub balance: Option<crate::replay::BalanceTable>,
}

/// `[sim]`: replay a pcap through pen's packet engine (as `pen-sim` does) and check the
/// frames it emits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimTable {
    /// The input pcap, relative to the repository root (`scenarios/..`) or absolute.
    pub input: String,
    /// pen's arguments (without the program name), e.g. `["-O", "dsr_if eth1", "10.0.0.100:80", ...]`.
    pub pen: Vec<String>,
    /// The capture name `[[expect]]` entries use for the frames the engine emits.
    #[serde(default = "default_sim_output")]
    pub output: String,
    /// A golden pcap the output must equal byte for byte.
    pub expected_pcap: Option<String>,
    /// A golden verdict log the run's log must equal byte for byte.
    pub expected_log: Option<String>,
}

pub(super) fn default_sim_output() -> String {
    "output".into()
}

pub(super) fn default_timeout() -> u64 {
    15
}
pub(super) fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    /// `"10.0.0.1/24"` (on the host's single link) or `"iface:10.0.0.1/24"` (`lo:` for VIPs).
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RouteTable>,
    /// `ip rule add fwmark M lookup T`.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// sysctl key → value, applied after links and addresses exist.
    #[serde(default)]
    pub sysctl: BTreeMap<String, toml::Value>,
    /// An nftables ruleset fed to `nft -f -` inside the host.
    pub nft: Option<String>,
    /// Set-up commands run inside the host after `nft`, in order, e.g. the blog's
    /// `"iptables -t mangle -N DIVERT"`: each is split at whitespace (no shell).
    #[serde(default)]
    pub commands: Vec<String>,
    /// Explicit offload settings (links already turn tx/tso/gso/gro off unless `offloads = true`).
    #[serde(default)]
    pub offload: Vec<OffloadSpec>,
    /// Keep IPv6 enabled. Default: only when the host has an IPv6 address.
    pub ipv6: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// `"default"`, `"10.1.0.0/16"`, `"0.0.0.0/0"`, `"::/0"`.
    pub to: String,
    pub via: Option<String>,
    pub dev: Option<String>,
    pub table: Option<u32>,
    /// `"unicast"` (default) or `"local"`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub fwmark: u32,
    pub table: u32,
    #[serde(default)]
    pub ipv6: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffloadSpec {
    pub iface: String,
    pub feature: String,
    pub on: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Two ends: `"node:iface"`, `"switch"` or `{ node, iface, mac }`.
    pub ends: Vec<LinkEndEntry>,
    /// Leave the veth offloads on (default: tx, tso, gso and gro off on both ends, so captures
    /// show real frames with correct checksums).
    #[serde(default)]
    pub offloads: bool,
    /// Loss and rate limits on the link (nftables egress hooks; no netem needed).
    pub impair: Option<ImpairTable>,
}

/// `impair = { loss_percent = 20, rate_kbit = 800, burst_kbytes = 16, from = "client" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpairTable {
    /// Frames dropped at random, 0..=100 percent.
    pub loss_percent: Option<u32>,
    /// Frames over this rate (kbit/s) are dropped (a policer, not a shaper).
    pub rate_kbit: Option<u64>,
    /// Burst allowed above the rate, in kbytes (default: 1/10 s of the rate, at least 4).
    pub burst_kbytes: Option<u64>,
    /// Only frames sent by this end's node (default: both directions).
    pub from: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum LinkEndEntry {
    Brief(String),
    Full {
        node: String,
        iface: Option<String>,
        mac: Option<String>,
    },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub host: String,
    pub name: String,
    /// argv for the workspace's pen (after the binary).
    pub pen: Option<Vec<String>>,
    /// A built-in backend.
    pub backend: Option<BackendTable>,
    /// An external program: argv with the program first.
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub ready: Option<ReadyTable>,
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_ms: u64,
    /// Start with the scenario (default) or only from a `start` step.
    #[serde(default = "default_true")]
    pub autostart: bool,
}

pub(super) fn default_ready_timeout() -> u64 {
    5000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTable {
    /// `"http"`, `"dns"`, `"tcp-echo"`, `"udp-echo"`.
    pub kind: String,
    /// Body of the HTTP answers; defaults to the process name.
    pub name: Option<String>,
    pub listen: Vec<String>,
    /// DNS: the A record every query gets.
    pub answer: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyTable {
    pub tcp: Option<OneOrMany<String>>,
    pub udp: Option<OneOrMany<String>>,
    pub path: Option<String>,
    /// A plain delay, for programs with nothing to poll.
    pub delay_ms: Option<u64>,
    /// `none = true`: do not wait at all.
    #[serde(default)]
    pub none: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    pub name: String,
    pub host: String,
    pub iface: String,
    /// A BPF filter (tcpdump syntax); empty = everything.
    #[serde(default)]
    pub filter: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// A label for the progress line.
    pub name: Option<String>,
    pub http_get: Option<HttpGetTable>,
    pub dns: Option<DnsTable>,
    pub tcp_connect: Option<TcpConnectTable>,
    pub load: Option<LoadTable>,
    pub stop: Option<String>,
    pub start: Option<String>,
    pub penctl: Option<PenctlTable>,
    pub run: Option<RunTable>,
    pub wait: Option<u64>,
    /// Long-lived TCP connections to an echo server.
    pub tcp_sessions: Option<TcpSessionsTable>,
    /// Waits for the background step of this name and judges its result.
    pub join: Option<String>,
    /// Live replay of a trace through pen, checked against the simulation ([`crate::replay`]).
    pub replay: Option<Box<crate::replay::ReplayTable>>,
    /// Faults ([`crate::fault`]): `"node"` or `"node:iface"`, a `[[link]]` end taken down/up.
    pub link_down: Option<String>,
    pub link_up: Option<String>,
    /// nftables drop of a host's traffic (or one port's) in its namespace, and its lifting.
    pub blackhole: Option<BlackholeTable>,
    pub lift_blackhole: Option<BlackholeTable>,
    /// A signal (KILL, STOP, CONT...) to a process the scenario started.
    pub signal: Option<SignalTable>,
    /// Waits for a process of the scenario to exit by itself (a pen handing over to a new
    /// binary, [`crate::fault::Fault::Exited`]).
    pub exited: Option<ExitedTable>,
    /// Frames sent out of a host's interface ([`crate::inject`]).
    pub inject: Option<InjectTable>,
}

/// `inject = { host, pcap | generate, ... }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectTable {
    pub host: String,
    /// Default: the host's only link interface.
    pub iface: Option<String>,
    /// An Ethernet pcap/pcapng, relative to the repository root or absolute.
    pub pcap: Option<String>,
    /// BPF over the pcap's frames.
    pub filter: Option<String>,
    /// `"syn"`, `"arp"`, `"ndp"` or `"malformed"`.
    pub generate: Option<String>,
    /// syn: the spoofed sources `"NET/LEN"`; arp/ndp: the sender address.
    pub src: Option<String>,
    /// syn/malformed: the destination; arp/ndp: the address asked for.
    pub dst: Option<String>,
    pub dport: Option<u16>,
    pub eth_src: Option<String>,
    pub eth_dst: Option<String>,
    pub ip_src: Option<String>,
    pub ip_dst: Option<String>,
    /// `"recorded"` (default) or `"fast"`.
    pub pace: Option<String>,
    pub rate_pps: Option<f64>,
    pub count: usize,
    #[serde(default = "default_inject_timeout")]
    pub timeout_ms: u64,
}

fn default_inject_timeout() -> u64 {
    10_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeTable {
    pub host: String,
    pub port: Option<u16>,
    /// `"tcp"` or `"udp"`; absent: both (with a port) or every IP packet (without).
    pub proto: Option<String>,
}

/// `exited = { process, within_ms, expect_exit }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitedTable {
    pub process: String,
    /// How long it may take (1..=60000).
    #[serde(default = "default_exited_within")]
    pub within_ms: u64,
    /// The exit code it must have.
    #[serde(default)]
    pub expect_exit: i32,
}

fn default_exited_within() -> u64 {
    10_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalTable {
    pub process: String,
    pub signal: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGetTable {
    pub host: String,
    pub url: String,
    pub src: Option<String>,
    pub expect_body: Option<String>,
    pub expect_body_contains: Option<String>,
    pub expect_status: Option<u16>,
    #[serde(default)]
    pub expect_fail: bool,
    #[serde(default = "default_step_timeout")]
    pub timeout_ms: u64,
    /// Further attempts after a failed one (each bounded by `timeout_ms`).
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: u64,
}

pub(super) fn default_retry_delay() -> u64 {
    200
}

/// At most this many retries per step (each attempt is bounded by the step's timeout, the
/// whole scenario by its `timeout`).
pub const MAX_RETRIES: u32 = 20;

pub(super) fn default_step_timeout() -> u64 {
    2000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsTable {
    pub host: String,
    /// `"10.0.0.2"` (port 53) or `"10.0.0.2:5353"`.
    pub server: String,
    #[serde(default = "default_qname")]
    pub qname: String,
    pub src: Option<String>,
    /// The A records expected (order does not matter).
    #[serde(default)]
    pub expect: Vec<String>,
    /// Several acceptable answers: the A records must equal one of these sets.
    #[serde(default)]
    pub expect_any: Vec<Vec<String>>,
    #[serde(default)]
    pub expect_fail: bool,
    #[serde(default = "default_step_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: u64,
    /// Queries sent one after the other from one socket (one source port, one flow); every
    /// one must get the expected answer. Default 1.
    #[serde(default = "default_dns_count")]
    pub count: u32,
}

pub(super) fn default_dns_count() -> u32 {
    1
}

pub(super) fn default_qname() -> String {
    "www.example.test".to_string()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConnectTable {
    pub host: String,
    pub addr: String,
    pub src: Option<String>,
    /// `"open"` (handshake completes), `"closed"` (refused) or `"timeout"` (no answer).
    pub expect: String,
    #[serde(default = "default_step_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadTable {
    pub host: String,
    pub url: String,
    pub requests: u64,
    #[serde(default = "default_concurrency")]
    pub concurrency: u64,
    pub src: Option<String>,
    /// Minimum successful requests (default: all of them).
    pub min_ok: Option<u64>,
    /// Expected fraction of answers per body (e.g. `{ "web1" = 0.5, "web2" = 0.5 }`).
    #[serde(default)]
    pub share: BTreeMap<String, f64>,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    #[serde(default = "default_load_timeout")]
    pub timeout_ms: u64,
    /// Paced (open-loop) load: request k starts at k × interval_ms, whatever the others do;
    /// `concurrency` is then not used. The step reports the longest outage.
    pub interval_ms: Option<u64>,
    /// With `interval_ms`: the longest outage allowed.
    pub max_outage_ms: Option<u64>,
    /// Run while the following steps run; a later `join = "NAME"` step judges it.
    #[serde(default)]
    pub background: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSessionsTable {
    pub host: String,
    /// An echo server (`"IP:PORT"`).
    pub addr: String,
    pub src: Option<String>,
    /// Connections open at once (1..256).
    #[serde(default = "default_sessions")]
    pub sessions: u64,
    /// Lines each connection sends and reads back (1..10000).
    #[serde(default = "default_rounds")]
    pub rounds: u64,
    /// Pause between rounds (0..10000 ms).
    #[serde(default = "default_session_interval")]
    pub interval_ms: u64,
    /// Connect and each round (1..60000 ms).
    #[serde(default = "default_step_timeout")]
    pub timeout_ms: u64,
    /// Sessions that must complete (default: all).
    pub min_ok: Option<u64>,
    /// Sessions that must fail (default 0): to show that moved flows break.
    #[serde(default)]
    pub min_failed: u64,
    #[serde(default)]
    pub background: bool,
}

pub(super) fn default_sessions() -> u64 {
    8
}
pub(super) fn default_rounds() -> u64 {
    10
}
pub(super) fn default_session_interval() -> u64 {
    100
}

pub(super) fn default_concurrency() -> u64 {
    4
}
pub(super) fn default_tolerance() -> f64 {
    0.1
}
pub(super) fn default_load_timeout() -> u64 {
    10000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PenctlTable {
    pub host: String,
    /// The control socket: `"127.0.0.1:10080"` or a Unix path.
    pub target: String,
    pub command: String,
    pub expect_contains: Option<String>,
    #[serde(default = "default_step_timeout")]
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTable {
    pub host: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub expect_exit: i32,
    /// Substring expected in stdout or stderr.
    pub expect_contains: Option<String>,
    #[serde(default = "default_run_timeout")]
    pub timeout_ms: u64,
}

pub(super) fn default_run_timeout() -> u64 {
    5000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    pub capture: String,
    pub name: Option<String>,
    /// Only frames captured after the step of this `name` finished.
    pub after: Option<String>,
    /// Only frames captured before the step of this `name` started.
    pub before: Option<String>,
    pub count: Option<CountTable>,
    pub every: Option<EveryTable>,
    pub none: Option<NoneTable>,
    pub sticky: Option<StickyTable>,
    pub share: Option<ShareTable>,
    pub order: Option<OrderTable>,
    pub checksums_valid: Option<ChecksumsTable>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountTable {
    #[serde(default, rename = "match")]
    pub matcher: MatchTable,
    pub exact: Option<u64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EveryTable {
    #[serde(default, rename = "match")]
    pub matcher: MatchTable,
    pub also: MatchTable,
    /// Frames that must match `match` (so that "every" is never vacuous). Default 1.
    #[serde(default = "default_min_one")]
    pub min: u64,
}

pub(super) fn default_min_one() -> u64 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoneTable {
    #[serde(default, rename = "match")]
    pub matcher: MatchTable,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyTable {
    #[serde(default, rename = "match")]
    pub matcher: MatchTable,
    pub key: String,
    pub value: String,
    /// Distinct keys that must be seen. Default 1.
    #[serde(default = "default_min_one")]
    pub min_keys: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareTable {
    #[serde(default, rename = "match")]
    pub matcher: MatchTable,
    pub field: String,
    /// Expected fraction per value of `field`; values not listed must not appear.
    pub shares: BTreeMap<String, f64>,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    #[serde(default = "default_min_one")]
    pub min: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderTable {
    pub first: MatchTable,
    pub then: MatchTable,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksumsTable {
    #[serde(default, rename = "match")]
    pub matcher: MatchTable,
    #[serde(default = "default_min_one")]
    pub min: u64,
}

/// A scalar in a matcher: string, integer or boolean.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Frame matcher: every field given must match (lists mean "any of").
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchTable {
    pub eth_src: Option<OneOrMany<Scalar>>,
    pub eth_dst: Option<OneOrMany<Scalar>>,
    pub ethertype: Option<OneOrMany<Scalar>>,
    pub vlan: Option<OneOrMany<Scalar>>,
    pub arp_op: Option<OneOrMany<Scalar>>,
    pub arp_sender_mac: Option<OneOrMany<Scalar>>,
    pub arp_target_mac: Option<OneOrMany<Scalar>>,
    pub arp_sender_ip: Option<OneOrMany<Scalar>>,
    pub arp_target_ip: Option<OneOrMany<Scalar>>,
    pub ip_src: Option<OneOrMany<Scalar>>,
    pub ip_dst: Option<OneOrMany<Scalar>>,
    pub ip: Option<OneOrMany<Scalar>>,
    pub from: Option<OneOrMany<Scalar>>,
    pub to: Option<OneOrMany<Scalar>>,
    pub proto: Option<OneOrMany<Scalar>>,
    pub src_port: Option<OneOrMany<Scalar>>,
    pub dst_port: Option<OneOrMany<Scalar>>,
    pub port: Option<OneOrMany<Scalar>>,
    pub ttl: Option<OneOrMany<Scalar>>,
    pub tcp_window: Option<OneOrMany<Scalar>>,
    pub tcp_options_len: Option<OneOrMany<Scalar>>,
    /// The TCP/UDP payload starts with this text, 1-48 bytes (TOML escapes: `"\r\n"`,
    /// `"\u0000"`).
    pub payload_prefix: Option<OneOrMany<Scalar>>,
    pub syn: Option<bool>,
    pub ack: Option<bool>,
    pub fin: Option<bool>,
    pub rst: Option<bool>,
    pub psh: Option<bool>,
    pub has_payload: Option<bool>,
    pub checksums_ok: Option<bool>,
}

impl MatchTable {
    /// The fields given, as `(key, values)` in a fixed order.
    pub fn fields(&self) -> Vec<(&'static str, Vec<Scalar>)> {
        let mut out = Vec::new();
        let lists: [(&'static str, &Option<OneOrMany<Scalar>>); 22] = [
            ("eth_src", &self.eth_src),
            ("eth_dst", &self.eth_dst),
            ("ethertype", &self.ethertype),
            ("vlan", &self.vlan),
            ("arp_op", &self.arp_op),
            ("arp_sender_mac", &self.arp_sender_mac),
            ("arp_target_mac", &self.arp_target_mac),
            ("arp_sender_ip", &self.arp_sender_ip),
            ("arp_target_ip", &self.arp_target_ip),
            ("ip_src", &self.ip_src),
            ("ip_dst", &self.ip_dst),
            ("ip", &self.ip),
            ("from", &self.from),
            ("to", &self.to),
            ("proto", &self.proto),
            ("src_port", &self.src_port),
            ("dst_port", &self.dst_port),
            ("port", &self.port),
            ("ttl", &self.ttl),
            ("tcp_window", &self.tcp_window),
            ("tcp_options_len", &self.tcp_options_len),
            ("payload_prefix", &self.payload_prefix),
        ];
        for (k, v) in lists {
            if let Some(v) = v {
                out.push((k, v.to_vec()));
            }
        }
        let bools: [(&'static str, Option<bool>); 7] = [
            ("syn", self.syn),
            ("ack", self.ack),
            ("fin", self.fin),
            ("rst", self.rst),
            ("psh", self.psh),
            ("has_payload", self.has_payload),
            ("checksums_ok", self.checksums_ok),
        ];
        for (k, v) in bools {
            if let Some(b) = v {
                out.push((k, vec![Scalar::Bool(b)]));
            }
        }
        out
    }
}
