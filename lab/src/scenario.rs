//! Scenario files: TOML → validated model. Needs no root: `pen-lab check` runs all of this.
//!
//! Two layers: the serde structs mirror the file (`Scenario`, `Host`, ...), and
//! [`Scenario::plan`] turns them into a [`Plan`] with every address parsed, every reference
//! resolved and every expectation compiled. The runner builds the plan twice: once before the
//! topology exists (MAC references get a placeholder, which is also what `check` does) and once
//! after, with the real MACs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::decode::parse_mac;
use crate::expect::{self, Expectation};

// ---------------------------------------------------------------------------------------------
// The file, as written
// ---------------------------------------------------------------------------------------------

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
    pub sim: Option<SimToml>,
}

/// `[sim]`: replay a pcap through pen's packet engine (as `pen-sim` does) and check the
/// frames it emits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimToml {
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

fn default_sim_output() -> String {
    "output".into()
}

fn default_timeout() -> u64 {
    15
}
fn default_true() -> bool {
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
    pub routes: Vec<RouteSpecToml>,
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
pub struct RouteSpecToml {
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
    pub ends: Vec<LinkEndToml>,
    /// Leave the veth offloads on (default: tx, tso, gso and gro off on both ends, so captures
    /// show real frames with correct checksums).
    #[serde(default)]
    pub offloads: bool,
    /// Loss and rate limits on the link (nftables egress hooks; no netem needed).
    pub impair: Option<ImpairToml>,
}

/// `impair = { loss_percent = 20, rate_kbit = 800, burst_kbytes = 16, from = "client" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpairToml {
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
pub enum LinkEndToml {
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
    pub backend: Option<BackendToml>,
    /// An external program: argv with the program first.
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub ready: Option<ReadyToml>,
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_ms: u64,
    /// Start with the scenario (default) or only from a `start` step.
    #[serde(default = "default_true")]
    pub autostart: bool,
}

fn default_ready_timeout() -> u64 {
    5000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendToml {
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
pub struct ReadyToml {
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
    pub http_get: Option<HttpGetToml>,
    pub dns: Option<DnsToml>,
    pub tcp_connect: Option<TcpConnectToml>,
    pub load: Option<LoadToml>,
    pub stop: Option<String>,
    pub start: Option<String>,
    pub penctl: Option<PenctlToml>,
    pub run: Option<RunToml>,
    pub wait: Option<u64>,
    /// Long-lived TCP connections to an echo server.
    pub tcp_sessions: Option<TcpSessionsToml>,
    /// Waits for the background step of this name and judges its result.
    pub join: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGetToml {
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

fn default_retry_delay() -> u64 {
    200
}

/// At most this many retries per step (each attempt is bounded by the step's timeout, the
/// whole scenario by its `timeout`).
pub const MAX_RETRIES: u32 = 20;

fn default_step_timeout() -> u64 {
    2000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsToml {
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

fn default_dns_count() -> u32 {
    1
}

fn default_qname() -> String {
    "www.example.test".to_string()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConnectToml {
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
pub struct LoadToml {
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
pub struct TcpSessionsToml {
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

fn default_sessions() -> u64 {
    8
}
fn default_rounds() -> u64 {
    10
}
fn default_session_interval() -> u64 {
    100
}

fn default_concurrency() -> u64 {
    4
}
fn default_tolerance() -> f64 {
    0.1
}
fn default_load_timeout() -> u64 {
    10000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PenctlToml {
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
pub struct RunToml {
    pub host: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub expect_exit: i32,
    /// Substring expected in stdout or stderr.
    pub expect_contains: Option<String>,
    #[serde(default = "default_run_timeout")]
    pub timeout_ms: u64,
}

fn default_run_timeout() -> u64 {
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
    pub count: Option<CountToml>,
    pub every: Option<EveryToml>,
    pub none: Option<NoneToml>,
    pub sticky: Option<StickyToml>,
    pub share: Option<ShareToml>,
    pub order: Option<OrderToml>,
    pub checksums_valid: Option<ChecksumsToml>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountToml {
    #[serde(default, rename = "match")]
    pub matcher: MatchToml,
    pub exact: Option<u64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EveryToml {
    #[serde(default, rename = "match")]
    pub matcher: MatchToml,
    pub also: MatchToml,
    /// Frames that must match `match` (so that "every" is never vacuous). Default 1.
    #[serde(default = "default_min_one")]
    pub min: u64,
}

fn default_min_one() -> u64 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoneToml {
    #[serde(default, rename = "match")]
    pub matcher: MatchToml,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyToml {
    #[serde(default, rename = "match")]
    pub matcher: MatchToml,
    pub key: String,
    pub value: String,
    /// Distinct keys that must be seen. Default 1.
    #[serde(default = "default_min_one")]
    pub min_keys: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareToml {
    #[serde(default, rename = "match")]
    pub matcher: MatchToml,
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
pub struct OrderToml {
    pub first: MatchToml,
    pub then: MatchToml,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksumsToml {
    #[serde(default, rename = "match")]
    pub matcher: MatchToml,
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
pub struct MatchToml {
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
    pub syn: Option<bool>,
    pub ack: Option<bool>,
    pub fin: Option<bool>,
    pub rst: Option<bool>,
    pub psh: Option<bool>,
    pub has_payload: Option<bool>,
    pub checksums_ok: Option<bool>,
}

impl MatchToml {
    /// The fields given, as `(key, values)` in a fixed order.
    pub fn fields(&self) -> Vec<(&'static str, Vec<Scalar>)> {
        let mut out = Vec::new();
        let lists: [(&'static str, &Option<OneOrMany<Scalar>>); 21] = [
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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One validation error: `file: key.path: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

/// All errors found in one file.
#[derive(Clone, Debug)]
pub struct ScenarioErrors(pub Vec<ScenarioError>);

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioErrors {}

/// Collects errors while walking the file.
struct Errs {
    file: String,
    list: Vec<ScenarioError>,
}

impl Errs {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(ScenarioError {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------------------------

/// Placeholder MAC used for `{mac.*}` before the topology exists.
pub const PLACEHOLDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0];

/// Resolves `{NAME}`, `{ip.HOST}`, `{ip.HOST.IFACE}`, `{mac.HOST}` and `{mac.HOST.IFACE}`.
///
/// A reference is `{` + letters, digits, `_`, `.` or `-` + `}`; any other brace (an nft block
/// such as `{ type filter hook ... }`) is left alone.
#[derive(Clone, Debug, Default)]
pub struct Refs {
    pub vars: BTreeMap<String, String>,
    /// host → (iface, address) in file order.
    pub ips: BTreeMap<String, Vec<(String, IpAddr)>>,
    /// host → interfaces, the default one first.
    pub ifaces: BTreeMap<String, Vec<String>>,
    /// (host, iface) → MAC, once the topology exists; `None` = placeholder mode.
    pub macs: Option<BTreeMap<(String, String), [u8; 6]>>,
}

impl Refs {
    /// Resolves every reference in `s`.
    pub fn resolve(&self, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('}');
            let inner = close.map(|c| &after[..c]);
            match inner {
                Some(name)
                    if !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) =>
                {
                    out.push_str(&self.lookup(name)?);
                    rest = &after[name.len() + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, name: &str) -> Result<String, String> {
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["ip", host] => self
                .ips
                .get(*host)
                .and_then(|v| v.first())
                .map(|(_, ip)| ip.to_string())
                .ok_or_else(|| format!("{{{name}}}: host {host:?} has no address in this file")),
            ["ip", host, iface] => self
                .ips
                .get(*host)
                .and_then(|v| v.iter().find(|(i, _)| i == iface))
                .map(|(_, ip)| ip.to_string())
                .ok_or_else(|| {
                    format!("{{{name}}}: host {host:?} has no address on {iface:?} in this file")
                }),
            ["mac", host] => {
                let iface = self
                    .ifaces
                    .get(*host)
                    .and_then(|v| v.first())
                    .ok_or_else(|| format!("{{{name}}}: {host:?} is not a host with a link"))?;
                self.mac(host, iface, name)
            }
            ["mac", host, iface] => {
                let known = self
                    .ifaces
                    .get(*host)
                    .is_some_and(|v| v.iter().any(|i| i == iface));
                if !known {
                    return Err(format!(
                        "{{{name}}}: host {host:?} has no interface {iface:?} (interfaces: {})",
                        self.ifaces
                            .get(*host)
                            .map(|v| v.join(", "))
                            .unwrap_or_default()
                    ));
                }
                self.mac(host, iface, name)
            }
            [var] => self.vars.get(*var).cloned().ok_or_else(|| {
                format!(
                    "{{{name}}}: unknown reference; expected a [vars] name ({}), {{ip.HOST}}, {{ip.HOST.IFACE}}, {{mac.HOST}} or {{mac.HOST.IFACE}}",
                    self.vars.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }),
            _ => Err(format!(
                "{{{name}}}: unknown reference; expected {{NAME}}, {{ip.HOST}}, {{ip.HOST.IFACE}}, {{mac.HOST}} or {{mac.HOST.IFACE}}"
            )),
        }
    }

    fn mac(&self, host: &str, iface: &str, name: &str) -> Result<String, String> {
        match &self.macs {
            None => Ok(crate::decode::fmt_mac(&PLACEHOLDER_MAC)),
            Some(m) => m
                .get(&(host.to_string(), iface.to_string()))
                .map(crate::decode::fmt_mac)
                .ok_or_else(|| format!("{{{name}}}: no MAC known for {host}:{iface}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKindP {
    Host,
    Switch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEndP {
    pub node: String,
    pub iface: String,
    pub mac: Option<[u8; 6]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkP {
    pub a: LinkEndP,
    pub b: LinkEndP,
    pub offloads: bool,
}

/// Impairment of the frames one link end sends (applied on its egress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImpairP {
    pub node: String,
    pub iface: String,
    /// 0..=100.
    pub loss_percent: u32,
    /// Policer rate in bits per second.
    pub rate_bps: Option<u64>,
    pub burst_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressP {
    pub node: String,
    pub iface: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteP {
    pub node: String,
    pub dest: Option<(IpAddr, u8)>,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    pub table: Option<u32>,
    pub local: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleP {
    pub node: String,
    pub fwmark: u32,
    pub table: u32,
    pub v6: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlP {
    pub node: String,
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffloadP {
    pub node: String,
    pub iface: String,
    pub feature: String,
    pub on: bool,
}

/// Everything the topology needs, in the order the runner applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyPlan {
    pub nodes: Vec<(String, NodeKindP)>,
    /// Applied right after the namespaces exist, before links (IPv6 back on, no DAD).
    pub early_sysctls: Vec<SysctlP>,
    pub links: Vec<LinkP>,
    pub offloads: Vec<OffloadP>,
    pub addresses: Vec<AddressP>,
    pub sysctls: Vec<SysctlP>,
    pub routes: Vec<RouteP>,
    pub rules: Vec<RuleP>,
    pub nft: Vec<(String, String)>,
    /// Link impairments, applied after the links exist.
    pub impairments: Vec<ImpairP>,
    /// (host, argv) of the hosts' `commands`, in file order, run after `nft`.
    pub commands: Vec<(String, Vec<String>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKindP {
    Http { name: String },
    Dns { name: String, answer: Ipv4Addr },
    TcpEcho,
    UdpEcho,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcKindP {
    Pen(Vec<String>),
    Backend {
        kind: BackendKindP,
        listen: Vec<SocketAddr>,
    },
    Command(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyP {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Path(PathBuf),
    Delay(Duration),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcP {
    pub host: String,
    pub name: String,
    pub kind: ProcKindP,
    pub env: Vec<(String, String)>,
    pub ready: Vec<ReadyP>,
    pub ready_timeout: Duration,
    pub autostart: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureP {
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
pub enum StepKindP {
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
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepP {
    /// Progress-line label, e.g. `http_get client → 10.71.0.2:80`.
    pub label: String,
    /// The `name` as written (what `[[expect]]` windows refer to).
    pub name: Option<String>,
    pub kind: StepKindP,
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
    pub processes: Vec<ProcP>,
    pub captures: Vec<CaptureP>,
    pub steps: Vec<StepP>,
    pub expects: Vec<Expectation>,
    /// The offline run, for `[sim]` scenarios.
    pub sim: Option<SimP>,
}

/// A validated `[sim]` table: every path resolved and checked to exist.
#[derive(Clone, Debug, PartialEq)]
pub struct SimP {
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

// ---------------------------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------------------------

/// Parses and validates a scenario file, returning the plan with placeholder MACs (what
/// `pen-lab check` reports) together with the raw scenario the runner re-plans after the
/// topology exists.
pub fn load(path: &Path) -> Result<(Scenario, Plan), ScenarioErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ScenarioErrors(vec![ScenarioError {
            file: file.clone(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    let default_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sc = parse_str(&text, &file)?;
    let plan = sc.plan(&file, &default_name, None)?;
    Ok((sc, plan))
}

/// Parses TOML text (no validation beyond the file's shape).
pub fn parse_str(text: &str, file: &str) -> Result<Scenario, ScenarioErrors> {
    toml::from_str::<Scenario>(text).map_err(|e| {
        let msg = e.message().to_string();
        let loc = e
            .span()
            .map(|s| {
                let line = text.get(..s.start).map_or(0, |p| p.matches('\n').count()) + 1;
                format!("line {line}")
            })
            .unwrap_or_default();
        ScenarioErrors(vec![ScenarioError {
            file: file.to_string(),
            key: loc,
            message: format!("{msg} (see docs/scenario-format.md for the keys)"),
        }])
    })
}

fn valid_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

fn valid_iface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// Parses `addr/len`.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = s.split_once('/')?;
    let ip: IpAddr = a.trim().parse().ok()?;
    let len: u8 = l.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// Parses `"iface:addr/len"` or `"addr/len"`.
pub fn parse_host_address(s: &str) -> Option<(Option<String>, IpAddr, u8)> {
    if let Some((ip, len)) = parse_cidr(s) {
        return Some((None, ip, len));
    }
    let (iface, rest) = s.split_once(':')?;
    let (ip, len) = parse_cidr(rest)?;
    valid_iface_name(iface).then(|| (Some(iface.to_string()), ip, len))
}

/// Parses `"ip:port"` / `"[v6]:port"`; with `default_port`, a bare IP is accepted too.
pub fn parse_socket(s: &str, default_port: Option<u16>) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip: IpAddr = s.trim_matches(['[', ']']).parse().ok()?;
    default_port.map(|p| SocketAddr::new(ip, p))
}

/// Parses `http://IP[:port][/path]` into the address and the path.
pub fn parse_http_url(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = parse_socket(hostport, Some(80))?;
    Some((addr, path.to_string()))
}

impl Scenario {
    /// Validates and resolves everything. `macs = None` uses placeholder MACs.
    pub fn plan(
        &self,
        file: &str,
        default_name: &str,
        macs: Option<BTreeMap<(String, String), [u8; 6]>>,
    ) -> Result<Plan, ScenarioErrors> {
        let mut e = Errs {
            file: file.to_string(),
            list: Vec::new(),
        };
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| default_name.to_string());
        if !valid_node_name(&name) {
            e.push(
                "name",
                format!("expected lowercase letters, digits and '-', got {name:?}"),
            );
        }
        if self.timeout == 0 || self.timeout > 600 {
            e.push(
                "timeout",
                format!("expected seconds between 1 and 600, got {}", self.timeout),
            );
        }

        // Nodes.
        let mut nodes: Vec<(String, NodeKindP)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, s) in self.switches.iter().enumerate() {
            let key = format!("switch[{i}].name");
            check_node_name(&mut e, &key, &s.name, &mut seen);
            nodes.push((s.name.clone(), NodeKindP::Switch));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let key = format!("host[{i}].name");
            check_node_name(&mut e, &key, &h.name, &mut seen);
            nodes.push((h.name.clone(), NodeKindP::Host));
        }
        let kind_of = |n: &str| nodes.iter().find(|(m, _)| m == n).map(|(_, k)| *k);
        let host_names: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();

        // Links: first pass to count host ends, so "host" alone can default to eth0.
        let mut host_link_count: BTreeMap<String, usize> = BTreeMap::new();
        let mut raw_ends: Vec<Vec<RawEnd>> = Vec::new();
        for (i, l) in self.links.iter().enumerate() {
            let mut ends = Vec::new();
            if l.ends.len() != 2 {
                e.push(
                    format!("link[{i}].ends"),
                    format!(
                        "expected exactly two ends like [\"client:eth0\", \"lan\"], got {}",
                        l.ends.len()
                    ),
                );
            }
            for (j, end) in l.ends.iter().enumerate() {
                let (node, iface, mac) = match end {
                    LinkEndToml::Brief(s) => match s.split_once(':') {
                        Some((n, i)) => (n.to_string(), Some(i.to_string()), None),
                        None => (s.clone(), None, None),
                    },
                    LinkEndToml::Full { node, iface, mac } => {
                        (node.clone(), iface.clone(), mac.clone())
                    }
                };
                let key = format!("link[{i}].ends[{j}]");
                match kind_of(&node) {
                    None => e.push(
                        &key,
                        format!(
                            "expected a host or switch name ({}), got {node:?}",
                            nodes
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                    Some(NodeKindP::Host) => {
                        *host_link_count.entry(node.clone()).or_default() += 1;
                    }
                    Some(NodeKindP::Switch) => {}
                }
                if let Some(i) = &iface
                    && !valid_iface_name(i)
                {
                    e.push(
                        &key,
                        format!(
                            "expected an interface name of 1-15 letters, digits, '_', '-' or '.', got {i:?}"
                        ),
                    );
                }
                ends.push((node, iface, mac));
            }
            raw_ends.push(ends);
        }
        let mut links: Vec<LinkP> = Vec::new();
        let mut impairments: Vec<ImpairP> = Vec::new();
        let mut ifaces: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut used_ifaces: BTreeSet<(String, String)> = BTreeSet::new();
        for (i, ends) in raw_ends.iter().enumerate() {
            let [a, b] = ends.as_slice() else { continue };
            let mut resolved = Vec::new();
            for (j, (node, iface, mac)) in [a, b].into_iter().enumerate() {
                let other = if j == 0 { &b.0 } else { &a.0 };
                let key = format!("link[{i}].ends[{j}]");
                let iface = match (iface, kind_of(node)) {
                    (Some(f), _) => f.clone(),
                    (None, Some(NodeKindP::Switch)) => {
                        let cand = other.chars().take(15).collect::<String>();
                        if used_ifaces.contains(&(node.clone(), cand.clone())) {
                            format!("p{i}")
                        } else {
                            cand
                        }
                    }
                    (None, _) => {
                        if host_link_count.get(node).copied().unwrap_or(0) > 1 {
                            e.push(
                                &key,
                                format!(
                                    "host {node:?} has several links: name the interface, e.g. \"{node}:eth1\""
                                ),
                            );
                        }
                        "eth0".to_string()
                    }
                };
                if iface == "lo" || !used_ifaces.insert((node.clone(), iface.clone())) {
                    e.push(
                        &key,
                        format!(
                            "interface {node}:{iface} is used twice; expected a new interface name"
                        ),
                    );
                }
                let mac = match mac {
                    None => None,
                    Some(m) => match parse_mac(m) {
                        Some(m) => Some(m),
                        None => {
                            e.push(
                                format!("{key}.mac"),
                                format!("expected a MAC like \"02:00:00:00:00:01\", got {m:?}"),
                            );
                            None
                        }
                    },
                };
                if kind_of(node) == Some(NodeKindP::Host) {
                    ifaces.entry(node.clone()).or_default().push(iface.clone());
                }
                resolved.push(LinkEndP {
                    node: node.clone(),
                    iface,
                    mac,
                });
            }
            if let [ra, rb] = resolved.as_slice() {
                if ra.node == rb.node {
                    e.push(
                        format!("link[{i}].ends"),
                        "expected two different nodes, got the same node twice",
                    );
                }
                if let Some(im) = self.links.get(i).and_then(|l| l.impair.as_ref()) {
                    impairments.extend(plan_impair(
                        im,
                        ra,
                        rb,
                        &format!("link[{i}].impair"),
                        &mut e,
                    ));
                }
                links.push(LinkP {
                    a: ra.clone(),
                    b: rb.clone(),
                    offloads: self.links.get(i).is_some_and(|l| l.offloads),
                });
            }
        }

        // Vars must not contain references themselves (one level only).
        let mut vars = self.vars.clone();
        // The runner sets the real `{run_dir}` before it plans with MACs; `check` sees this.
        vars.entry("run_dir".into())
            .or_insert_with(|| "/tmp/pen-lab-run".into());
        if self.sim.is_some() {
            // `{sim_mac}`: the MAC the offline engine uses (pen-sim's default).
            vars.entry("sim_mac".into())
                .or_insert_with(|| crate::decode::fmt_mac(&pen::link::pcapfile::SIM_MAC));
        }
        let mut refs = Refs {
            vars,
            ips: BTreeMap::new(),
            ifaces: ifaces.clone(),
            macs: None,
        };
        for k in self.vars.keys() {
            if !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                || k == "ip"
                || k == "mac"
            {
                e.push(
                    format!("vars.{k}"),
                    "expected a name of letters, digits, '_' or '-' (not \"ip\" or \"mac\")",
                );
            }
        }

        // Addresses, routes, sysctls...
        let mut topo = TopologyPlan {
            nodes: nodes.clone(),
            links: links.clone(),
            impairments,
            ..TopologyPlan::default()
        };
        for (hi, h) in self.hosts.iter().enumerate() {
            let mut has_v6 = false;
            for (ai, a) in h.addresses.iter().enumerate() {
                let key = format!("host[{hi}].addresses[{ai}]");
                let text = match refs.resolve(a) {
                    Ok(t) => t,
                    Err(m) => {
                        e.push(&key, m);
                        continue;
                    }
                };
                let Some((iface, addr, prefix_len)) = parse_host_address(&text) else {
                    e.push(
                        &key,
                        format!(
                            "expected \"ADDR/LEN\" or \"IFACE:ADDR/LEN\" (e.g. \"10.71.0.2/24\", \"lo:10.71.0.100/32\"), got {a:?}"
                        ),
                    );
                    continue;
                };
                has_v6 |= addr.is_ipv6();
                let host_ifaces = ifaces.get(&h.name).cloned().unwrap_or_default();
                let iface = match iface {
                    Some(i) => {
                        if i != "lo" && !host_ifaces.contains(&i) {
                            e.push(
                                &key,
                                format!(
                                    "host {:?} has no interface {i:?}; expected lo or one of: {}",
                                    h.name,
                                    host_ifaces.join(", ")
                                ),
                            );
                        }
                        i
                    }
                    None => match host_ifaces.as_slice() {
                        [only] => only.clone(),
                        [] => {
                            e.push(
                                &key,
                                format!(
                                    "host {:?} has no link; expected \"lo:{text}\" or a [[link]] for it",
                                    h.name
                                ),
                            );
                            continue;
                        }
                        many => {
                            e.push(
                                &key,
                                format!(
                                    "host {:?} has several interfaces ({}); expected \"IFACE:{text}\"",
                                    h.name,
                                    many.join(", ")
                                ),
                            );
                            continue;
                        }
                    },
                };
                refs.ips
                    .entry(h.name.clone())
                    .or_default()
                    .push((iface.clone(), addr));
                topo.addresses.push(AddressP {
                    node: h.name.clone(),
                    iface,
                    addr,
                    prefix_len,
                });
            }
            // Namespaces start with IPv6 disabled (no DAD/RS noise); hosts that use it get it
            // back without duplicate address detection, so addresses are usable at once.
            let ipv6 = h.ipv6.unwrap_or(has_v6);
            let early: Vec<(&str, &str)> = if ipv6 {
                vec![
                    ("net.ipv6.conf.all.disable_ipv6", "0"),
                    ("net.ipv6.conf.all.accept_dad", "0"),
                    ("net.ipv6.conf.default.accept_dad", "0"),
                ]
            } else {
                Vec::new()
            };
            for (k, v) in early {
                topo.early_sysctls.push(SysctlP {
                    node: h.name.clone(),
                    key: k.to_string(),
                    value: v.to_string(),
                });
            }
            for (k, v) in &h.sysctl {
                let key = format!("host[{hi}].sysctl.{k}");
                let value = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => u8::from(*b).to_string(),
                    other => {
                        e.push(
                            &key,
                            format!("expected a string or an integer, got {}", other.type_str()),
                        );
                        continue;
                    }
                };
                if !k.starts_with("net.") || k.contains("..") || k.contains('/') {
                    e.push(
                        &key,
                        "expected a network sysctl such as \"net.ipv4.ip_forward\"",
                    );
                    continue;
                }
                topo.sysctls.push(SysctlP {
                    node: h.name.clone(),
                    key: k.clone(),
                    value,
                });
            }
            for (ri, r) in h.rules.iter().enumerate() {
                if r.table == 0 || r.table > 0xffff_fff0 {
                    e.push(
                        format!("host[{hi}].rules[{ri}].table"),
                        format!("expected a table number such as 100, got {}", r.table),
                    );
                }
                topo.rules.push(RuleP {
                    node: h.name.clone(),
                    fwmark: r.fwmark,
                    table: r.table,
                    v6: r.ipv6,
                });
            }
            if let Some(n) = &h.nft {
                match refs.resolve(n) {
                    Ok(t) => topo.nft.push((h.name.clone(), t)),
                    Err(m) => e.push(format!("host[{hi}].nft"), m),
                }
            }
            for (ci, c) in h.commands.iter().enumerate() {
                let key = format!("host[{hi}].commands[{ci}]");
                match refs.resolve(c).and_then(|c| setup_command(&c)) {
                    Ok(argv) => topo.commands.push((h.name.clone(), argv)),
                    Err(m) => e.push(key, m),
                }
            }
            for (oi, o) in h.offload.iter().enumerate() {
                let host_ifaces = ifaces.get(&h.name).cloned().unwrap_or_default();
                if !host_ifaces.contains(&o.iface) {
                    e.push(
                        format!("host[{hi}].offload[{oi}].iface"),
                        format!(
                            "expected one of the host's interfaces ({}), got {:?}",
                            host_ifaces.join(", "),
                            o.iface
                        ),
                    );
                }
                topo.offloads.push(OffloadP {
                    node: h.name.clone(),
                    iface: o.iface.clone(),
                    feature: o.feature.clone(),
                    on: o.on,
                });
            }
        }
        // Routes after all addresses are known (they may reference {ip.X}).
        for (hi, h) in self.hosts.iter().enumerate() {
            for (ri, r) in h.routes.iter().enumerate() {
                let key = format!("host[{hi}].routes[{ri}]");
                match plan_route(&refs, &h.name, r, ifaces.get(&h.name)) {
                    Ok(rp) => topo.routes.push(rp),
                    Err(m) => e.push(key, m),
                }
            }
        }
        refs.macs = macs;
        let processes = plan_processes(self, &refs, &host_names, &mut e);
        let proc_names: Vec<String> = self.processes.iter().map(|p| p.name.clone()).collect();
        let switch_names: Vec<String> = self.switches.iter().map(|w| w.name.clone()).collect();
        let captures = plan_captures(self, &ifaces, &host_names, &switch_names, &mut e);
        let steps = plan_steps(self, &refs, &host_names, &proc_names, &mut e);
        let mut expects = Vec::new();
        let mut cap_names: Vec<String> = self.captures.iter().map(|c| c.name.clone()).collect();
        let sim = self
            .sim
            .as_ref()
            .and_then(|s| plan_sim(self, s, file, &refs, &mut e));
        if let Some(s) = &self.sim {
            cap_names = vec![s.output.clone(), SIM_INPUT_CAPTURE.to_string()];
        }
        for (i, x) in self.expects.iter().enumerate() {
            let key = format!("expect[{i}]");
            if !cap_names.contains(&x.capture) {
                e.push(
                    format!("{key}.capture"),
                    format!(
                        "expected a capture name ({}), got {:?}",
                        cap_names.join(", "),
                        x.capture
                    ),
                );
            }
            match expect::compile(x, &refs, &host_names) {
                Ok(mut c) => {
                    c.window = plan_window(x, &steps, &key, &mut e);
                    expects.push(c);
                }
                Err((sub, m)) => e.push(format!("{key}{sub}"), m),
            }
        }
        if !e.list.is_empty() {
            return Err(ScenarioErrors(e.list));
        }
        Ok(Plan {
            name,
            description: self.description.clone(),
            timeout: Duration::from_secs(self.timeout),
            topology: topo,
            processes,
            captures,
            steps,
            expects,
            sim,
        })
    }
}

/// The directory `[sim]` paths are relative to: the parent of the scenario file's directory
/// (`scenarios/..`, the repository root), else the parent of the scenarios directory, else `.`.
pub fn sim_root(file: &str) -> PathBuf {
    std::fs::canonicalize(file)
        .ok()
        .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
        .or_else(|| scenarios_dir().and_then(|d| d.parent().map(Path::to_path_buf)))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Validates `[sim]`: no live parts, existing files, pen arguments the engine accepts.
fn plan_sim(sc: &Scenario, s: &SimToml, file: &str, refs: &Refs, e: &mut Errs) -> Option<SimP> {
    let live = [
        ("host", sc.hosts.len()),
        ("switch", sc.switches.len()),
        ("link", sc.links.len()),
        ("process", sc.processes.len()),
        ("capture", sc.captures.len()),
        ("step", sc.steps.len()),
    ];
    for (what, n) in live {
        if n > 0 {
            e.push(
                "sim",
                format!(
                    "a [sim] scenario runs offline and may not have [[{what}]] entries (found {n}); expected only [sim], [vars] and [[expect]]"
                ),
            );
        }
    }
    let root = sim_root(file);
    let mut ok = true;
    let mut path = |key: &str, v: &str, what: &str| -> Option<PathBuf> {
        let v = match refs.resolve(v) {
            Ok(v) => v,
            Err(m) => {
                e.push(format!("sim.{key}"), m);
                return None;
            }
        };
        if v.trim().is_empty() {
            e.push(
                format!("sim.{key}"),
                format!("expected the path of {what}, got an empty string"),
            );
            return None;
        }
        let p = root.join(&v);
        if !p.is_file() {
            e.push(
                format!("sim.{key}"),
                format!(
                    "expected an existing file ({what}, relative to {} or absolute), got {v:?}: {} does not exist",
                    root.display(),
                    p.display()
                ),
            );
            return None;
        }
        Some(p)
    };
    let input = path(
        "input",
        &s.input,
        "a pcap file, e.g. captures/fixtures/dsr-tcp.pcap",
    );
    let expected_pcap = match &s.expected_pcap {
        Some(v) => {
            let p = path("expected_pcap", v, "a golden pcap under captures/expected/");
            ok &= p.is_some();
            p
        }
        None => None,
    };
    let expected_log = match &s.expected_log {
        Some(v) => {
            let p = path(
                "expected_log",
                v,
                "a golden verdict log under captures/expected/",
            );
            ok &= p.is_some();
            p
        }
        None => None,
    };
    let mut pen = Vec::new();
    for (i, a) in s.pen.iter().enumerate() {
        match refs.resolve(a) {
            Ok(v) => pen.push(v),
            Err(m) => {
                e.push(format!("sim.pen[{i}]"), m);
                ok = false;
            }
        }
    }
    if s.pen.is_empty() {
        e.push(
            "sim.pen",
            "expected pen's arguments, e.g. [\"-O\", \"dsr_if eth1\", \"10.0.0.100:80\", \"10.0.0.3\"], got an empty list",
        );
        ok = false;
    } else if ok
        && let Err(m) =
            pen::engine::config_from_pen_args(&pen, pen::link::pcapfile::SIM_MAC, [0; 16])
    {
        e.push(
            "sim.pen",
            format!("the packet engine does not accept {pen:?}: {m}"),
        );
        ok = false;
    }
    if !valid_node_name(&s.output) || s.output == SIM_INPUT_CAPTURE {
        e.push(
            "sim.output",
            format!(
                "expected a capture name of 1-32 lowercase letters, digits or '-' other than {SIM_INPUT_CAPTURE:?}, got {:?}",
                s.output
            ),
        );
        ok = false;
    }
    Some(SimP {
        input: input?,
        pen,
        output: s.output.clone(),
        expected_pcap,
        expected_log,
    })
    .filter(|_| ok)
}

/// Upper bound of `rate_kbit` (10 Gbit/s).
pub const MAX_RATE_KBIT: u64 = 10_000_000;

/// The impairments of one link: one per sending end (`from`, or both ends).
fn plan_impair(
    im: &ImpairToml,
    a: &LinkEndP,
    b: &LinkEndP,
    key: &str,
    e: &mut Errs,
) -> Vec<ImpairP> {
    let loss = im.loss_percent.unwrap_or(0);
    if loss > 100 {
        e.push(
            format!("{key}.loss_percent"),
            format!("expected 0..=100 (percent of frames dropped), got {loss}"),
        );
    }
    if let Some(r) = im.rate_kbit
        && !(1..=MAX_RATE_KBIT).contains(&r)
    {
        e.push(
            format!("{key}.rate_kbit"),
            format!("expected 1..={MAX_RATE_KBIT} kbit/s, got {r}"),
        );
    }
    if im.burst_kbytes.is_some() && im.rate_kbit.is_none() {
        e.push(
            format!("{key}.burst_kbytes"),
            "a burst needs a rate: add rate_kbit",
        );
    }
    if let Some(b) = im.burst_kbytes
        && !(1..=1_000_000).contains(&b)
    {
        e.push(
            format!("{key}.burst_kbytes"),
            format!("expected 1..=1000000 kbytes, got {b}"),
        );
    }
    if im.loss_percent.unwrap_or(0) == 0 && im.rate_kbit.is_none() {
        e.push(
            key,
            "expected loss_percent (1..=100) and/or rate_kbit; an empty impair does nothing",
        );
    }
    let ends: Vec<&LinkEndP> = match &im.from {
        None => vec![a, b],
        Some(n) if *n == a.node => vec![a],
        Some(n) if *n == b.node => vec![b],
        Some(n) => {
            e.push(
                format!("{key}.from"),
                format!(
                    "expected one of the link's ends ({:?} or {:?}), got {n:?}",
                    a.node, b.node
                ),
            );
            Vec::new()
        }
    };
    let rate_bps = im.rate_kbit.map(|k| k.saturating_mul(1000));
    let burst_bytes = match (im.burst_kbytes, rate_bps) {
        (Some(k), _) => k.saturating_mul(1000),
        (None, Some(bps)) => (bps / 8 / 10).max(4000),
        (None, None) => 0,
    };
    ends.into_iter()
        .map(|end| ImpairP {
            node: end.node.clone(),
            iface: end.iface.clone(),
            loss_percent: loss.min(100),
            rate_bps,
            burst_bytes,
        })
        .collect()
}

/// Resolves `after`/`before` of an `[[expect]]` to named steps; `after` must come before
/// `before`.
fn plan_window(x: &ExpectSpec, steps: &[StepP], key: &str, e: &mut Errs) -> expect::Window {
    let mut find = |which: &str, name: &Option<String>| -> Option<expect::StepRef> {
        let name = name.as_ref()?;
        let hits: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name.as_deref() == Some(name.as_str()))
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => Some(expect::StepRef {
                index: *i,
                name: name.clone(),
            }),
            [] => {
                let named: Vec<String> = steps
                    .iter()
                    .filter_map(|s| s.name.as_ref().map(|n| format!("{n:?}")))
                    .collect();
                e.push(
                    format!("{key}.{which}"),
                    format!(
                        "expected the name of a step ({}), got {name:?}",
                        if named.is_empty() {
                            "no step has a name; give one with name = \"...\"".to_string()
                        } else {
                            named.join(", ")
                        }
                    ),
                );
                None
            }
            many => {
                e.push(
                    format!("{key}.{which}"),
                    format!(
                        "step name {name:?} is ambiguous: steps {} share it; expected a unique step name",
                        many.iter()
                            .map(|i| (i + 1).to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
        }
    };
    let after = find("after", &x.after);
    let before = find("before", &x.before);
    if let (Some(a), Some(b)) = (&after, &before)
        && a.index >= b.index
    {
        e.push(
            format!("{key}.before"),
            format!(
                "expected a step after {:?} (step {}), got {:?} (step {}): the window would be empty",
                a.name,
                a.index + 1,
                b.name,
                b.index + 1
            ),
        );
    }
    expect::Window { after, before }
}

/// (node, iface, mac) as written.
type RawEnd = (String, Option<String>, Option<String>);

fn check_node_name(e: &mut Errs, key: &str, name: &str, seen: &mut BTreeSet<String>) {
    if !valid_node_name(name) {
        e.push(
            key,
            format!("expected 1-32 lowercase letters, digits or '-', got {name:?}"),
        );
    } else if !seen.insert(name.to_string()) {
        e.push(
            key,
            format!("expected a unique host/switch name, got {name:?} twice"),
        );
    }
}

fn plan_route(
    refs: &Refs,
    node: &str,
    r: &RouteSpecToml,
    ifaces: Option<&Vec<String>>,
) -> Result<RouteP, String> {
    let to = refs.resolve(&r.to)?;
    let dest = if to == "default" {
        None
    } else {
        Some(parse_cidr(&to).ok_or_else(|| {
            format!("to: expected \"default\" or \"ADDR/LEN\" such as \"10.72.0.0/24\", got {to:?}")
        })?)
    };
    let via = match &r.via {
        None => None,
        Some(v) => {
            let v = refs.resolve(v)?;
            Some(
                v.parse::<IpAddr>()
                    .map_err(|_| format!("via: expected an IP address, got {v:?}"))?,
            )
        }
    };
    if let Some(d) = &r.dev
        && d != "lo"
        && !ifaces.is_some_and(|v| v.contains(d))
    {
        return Err(format!(
            "dev: expected lo or one of the host's interfaces ({}), got {d:?}",
            ifaces.map(|v| v.join(", ")).unwrap_or_default()
        ));
    }
    let local = match r.kind.as_deref() {
        None | Some("unicast") => false,
        Some("local") => true,
        Some(k) => {
            return Err(format!(
                "type: expected \"unicast\" or \"local\", got {k:?}"
            ));
        }
    };
    if via.is_none() && r.dev.is_none() {
        return Err("expected `via` or `dev`".to_string());
    }
    if let (Some((d, _)), Some(v)) = (dest, via)
        && d.is_ipv4() != v.is_ipv4()
    {
        return Err(format!("via {v} is not of the same family as to {to:?}"));
    }
    Ok(RouteP {
        node: node.to_string(),
        dest,
        via,
        dev: r.dev.clone(),
        table: r.table,
        local,
    })
}

/// Resolves the references in an optional text field, reporting a bad one under `key`.
/// One host set-up command: split at whitespace (no shell, no quoting).
fn setup_command(line: &str) -> Result<Vec<String>, String> {
    if let Some(c) = line.chars().find(|c| "'\"|;&<>$`\\".contains(*c)) {
        return Err(format!(
            "expected a plain command line such as \"iptables -t mangle -N DIVERT\", got {line:?}: \
             {c:?} would need a shell, and commands are split at whitespace and run without one"
        ));
    }
    let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    if argv.is_empty() {
        return Err(
            "expected a command line such as \"iptables -t mangle -N DIVERT\", got an empty string"
                .to_string(),
        );
    }
    Ok(argv)
}

fn resolve_opt(refs: &Refs, e: &mut Errs, key: &str, v: &Option<String>) -> Option<String> {
    let v = v.as_ref()?;
    match refs.resolve(v) {
        Ok(t) => Some(t),
        Err(m) => {
            e.push(key.to_string(), m);
            None
        }
    }
}

fn resolve_ip(refs: &Refs, s: &str) -> Result<IpAddr, String> {
    let t = refs.resolve(s)?;
    t.parse()
        .map_err(|_| format!("expected an IP address, got {t:?}"))
}

fn check_host(e: &mut Errs, key: &str, host: &str, hosts: &[String]) {
    if !hosts.iter().any(|h| h == host) {
        e.push(
            key,
            format!("expected a host name ({}), got {host:?}", hosts.join(", ")),
        );
    }
}

fn plan_processes(sc: &Scenario, refs: &Refs, hosts: &[String], e: &mut Errs) -> Vec<ProcP> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (i, p) in sc.processes.iter().enumerate() {
        let key = format!("process[{i}]");
        check_host(e, &format!("{key}.host"), &p.host, hosts);
        if !valid_node_name(&p.name) {
            e.push(
                format!("{key}.name"),
                format!(
                    "expected 1-32 lowercase letters, digits or '-', got {:?}",
                    p.name
                ),
            );
        } else if !names.insert(p.name.clone()) {
            e.push(
                format!("{key}.name"),
                format!("expected a unique process name, got {:?} twice", p.name),
            );
        }
        let given = [p.pen.is_some(), p.backend.is_some(), p.command.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given != 1 {
            e.push(
                &key,
                format!("expected exactly one of `pen`, `backend` or `command`, got {given}"),
            );
            continue;
        }
        let resolve_argv = |argv: &[String], e: &mut Errs, k: &str| -> Vec<String> {
            argv.iter()
                .enumerate()
                .filter_map(|(j, a)| match refs.resolve(a) {
                    Ok(t) => Some(t),
                    Err(m) => {
                        e.push(format!("{k}[{j}]"), m);
                        None
                    }
                })
                .collect()
        };
        let mut default_ready = Vec::new();
        let kind = if let Some(argv) = &p.pen {
            let args = resolve_argv(argv, e, &format!("{key}.pen"));
            if args.len() == argv.len()
                && let Err(m) = pen::cli::parse(args.iter().cloned())
            {
                e.push(
                    format!("{key}.pen"),
                    format!(
                        "pen rejects {args:?}: {}; expected pen's command line after the program name, e.g. [\"-f\", \"10.71.0.2:80\", \"10.71.0.3\"]",
                        m.to_string().trim_start_matches("pen: ")
                    ),
                );
            }
            ProcKindP::Pen(args)
        } else if let Some(argv) = &p.command {
            if argv.is_empty() {
                e.push(
                    format!("{key}.command"),
                    "expected a program and its arguments, got an empty list",
                );
            }
            ProcKindP::Command(resolve_argv(argv, e, &format!("{key}.command")))
        } else if let Some(b) = &p.backend {
            let mut listen = Vec::new();
            for (j, l) in b.listen.iter().enumerate() {
                let r = refs.resolve(l).and_then(|t| {
                    parse_socket(&t, None).ok_or_else(|| {
                        format!("expected \"IP:PORT\" such as \"10.71.0.3:80\", got {t:?}")
                    })
                });
                match r {
                    Ok(a) => listen.push(a),
                    Err(m) => e.push(format!("{key}.backend.listen[{j}]"), m),
                }
            }
            if b.listen.is_empty() {
                e.push(
                    format!("{key}.backend.listen"),
                    "expected at least one \"IP:PORT\"",
                );
            }
            let name = b.name.clone().unwrap_or_else(|| p.name.clone());
            let kind = match b.kind.as_str() {
                "http" => BackendKindP::Http { name },
                "tcp-echo" => BackendKindP::TcpEcho,
                "udp-echo" => BackendKindP::UdpEcho,
                "dns" => {
                    let answer = match &b.answer {
                        None => {
                            e.push(
                                format!("{key}.backend.answer"),
                                "expected the IPv4 address the DNS backend answers with",
                            );
                            Ipv4Addr::UNSPECIFIED
                        }
                        Some(a) => match refs.resolve(a).map(|t| t.parse::<Ipv4Addr>()) {
                            Ok(Ok(ip)) => ip,
                            Ok(Err(_)) => {
                                e.push(
                                    format!("{key}.backend.answer"),
                                    format!("expected an IPv4 address, got {a:?}"),
                                );
                                Ipv4Addr::UNSPECIFIED
                            }
                            Err(m) => {
                                e.push(format!("{key}.backend.answer"), m);
                                Ipv4Addr::UNSPECIFIED
                            }
                        },
                    };
                    BackendKindP::Dns { name, answer }
                }
                k => {
                    e.push(
                        format!("{key}.backend.kind"),
                        format!(
                            "expected \"http\", \"dns\", \"tcp-echo\" or \"udp-echo\", got {k:?}"
                        ),
                    );
                    continue;
                }
            };
            let udp = matches!(kind, BackendKindP::Dns { .. } | BackendKindP::UdpEcho);
            for a in &listen {
                default_ready.push(if udp {
                    ReadyP::Udp(*a)
                } else {
                    ReadyP::Tcp(*a)
                });
            }
            ProcKindP::Backend { kind, listen }
        } else {
            continue;
        };
        let ready = match &p.ready {
            None => {
                if default_ready.is_empty() {
                    e.push(
                        format!("{key}.ready"),
                        "expected a readiness condition: { tcp = \"IP:PORT\" }, { udp = \"IP:PORT\" }, { path = \"/file\" }, { delay_ms = N } or { none = true }",
                    );
                }
                default_ready
            }
            Some(r) => plan_ready(r, refs, &format!("{key}.ready"), e),
        };
        if p.ready_timeout_ms == 0 || p.ready_timeout_ms > 60_000 {
            e.push(
                format!("{key}.ready_timeout_ms"),
                format!("expected 1..60000 ms, got {}", p.ready_timeout_ms),
            );
        }
        let mut env = Vec::new();
        for (k, v) in &p.env {
            match refs.resolve(v) {
                Ok(t) => env.push((k.clone(), t)),
                Err(m) => e.push(format!("{key}.env.{k}"), m),
            }
        }
        out.push(ProcP {
            host: p.host.clone(),
            name: p.name.clone(),
            kind,
            env,
            ready,
            ready_timeout: Duration::from_millis(p.ready_timeout_ms),
            autostart: p.autostart,
        });
    }
    out
}

fn plan_ready(r: &ReadyToml, refs: &Refs, key: &str, e: &mut Errs) -> Vec<ReadyP> {
    let mut out = Vec::new();
    for (list, udp) in [(&r.tcp, false), (&r.udp, true)] {
        for a in list.as_ref().map(|l| l.to_vec()).unwrap_or_default() {
            let which = if udp { "udp" } else { "tcp" };
            match refs.resolve(&a).map(|t| parse_socket(&t, None)) {
                Ok(Some(s)) => out.push(if udp { ReadyP::Udp(s) } else { ReadyP::Tcp(s) }),
                Ok(None) => e.push(
                    format!("{key}.{which}"),
                    format!("expected \"IP:PORT\", got {a:?}"),
                ),
                Err(m) => e.push(format!("{key}.{which}"), m),
            }
        }
    }
    if let Some(p) = &r.path {
        match refs.resolve(p) {
            Ok(p) => out.push(ReadyP::Path(PathBuf::from(p))),
            Err(m) => e.push(format!("{key}.ready.path"), m),
        }
    }
    if let Some(d) = r.delay_ms {
        out.push(ReadyP::Delay(Duration::from_millis(d)));
    }
    if out.is_empty() && !r.none {
        e.push(
            key,
            "expected one of tcp, udp, path, delay_ms or none = true",
        );
    }
    out
}

fn plan_captures(
    sc: &Scenario,
    ifaces: &BTreeMap<String, Vec<String>>,
    hosts: &[String],
    switches: &[String],
    e: &mut Errs,
) -> Vec<CaptureP> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (i, c) in sc.captures.iter().enumerate() {
        let key = format!("capture[{i}]");
        if !valid_node_name(&c.name) {
            e.push(
                format!("{key}.name"),
                format!(
                    "expected 1-32 lowercase letters, digits or '-', got {:?}",
                    c.name
                ),
            );
        } else if !names.insert(c.name.clone()) {
            e.push(
                format!("{key}.name"),
                format!("expected a unique capture name, got {:?} twice", c.name),
            );
        }
        // A switch's bridge: the capture puts br0 in promiscuous mode, so it sees every frame
        // the bridge forwards between its ports (the whole segment, each frame once).
        if switches.contains(&c.host) {
            if c.iface != crate::topology::BRIDGE {
                e.push(
                    format!("{key}.iface"),
                    format!(
                        "{:?} is a switch: expected its bridge \"{}\", got {:?}",
                        c.host,
                        crate::topology::BRIDGE,
                        c.iface
                    ),
                );
            }
        } else {
            check_host(e, &format!("{key}.host"), &c.host, hosts);
        }
        let hif = ifaces.get(&c.host).cloned().unwrap_or_default();
        if switches.contains(&c.host) {
            // checked above
        } else if c.iface != "lo" && !hif.contains(&c.iface) {
            e.push(
                format!("{key}.iface"),
                format!(
                    "expected lo or one of {:?}'s interfaces ({}), got {:?}",
                    c.host,
                    hif.join(", "),
                    c.iface
                ),
            );
        }
        if let Err(m) = crate::capture::check_filter(&c.filter) {
            e.push(
                format!("{key}.filter"),
                format!(
                    "libpcap rejects the BPF filter {:?}: {m}; expected tcpdump syntax such as \"tcp port 80\" or \"arp or udp port 53\"",
                    c.filter
                ),
            );
        }
        out.push(CaptureP {
            name: c.name.clone(),
            host: c.host.clone(),
            iface: c.iface.clone(),
            filter: c.filter.clone(),
        });
    }
    out
}

fn plan_steps(
    sc: &Scenario,
    refs: &Refs,
    hosts: &[String],
    procs: &[String],
    e: &mut Errs,
) -> Vec<StepP> {
    let mut out = Vec::new();
    for (i, s) in sc.steps.iter().enumerate() {
        let key = format!("step[{i}]");
        let given = [
            s.http_get.is_some(),
            s.dns.is_some(),
            s.tcp_connect.is_some(),
            s.load.is_some(),
            s.stop.is_some(),
            s.start.is_some(),
            s.penctl.is_some(),
            s.run.is_some(),
            s.wait.is_some(),
            s.tcp_sessions.is_some(),
            s.join.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            e.push(
                &key,
                format!(
                    "expected exactly one of http_get, dns, tcp_connect, load, tcp_sessions, join, stop, start, penctl, run, wait; got {given}"
                ),
            );
            continue;
        }
        let src = |s: &Option<String>, e: &mut Errs, k: &str| -> Option<IpAddr> {
            let s = s.as_ref()?;
            match resolve_ip(refs, s) {
                Ok(ip) => Some(ip),
                Err(m) => {
                    e.push(format!("{k}.src"), m);
                    None
                }
            }
        };
        let ms = Duration::from_millis;
        let kind = if let Some(h) = &s.http_get {
            let k = format!("{key}.http_get");
            check_host(e, &format!("{k}.host"), &h.host, hosts);
            let Some((addr, path)) = refs.resolve(&h.url).ok().and_then(|u| parse_http_url(&u))
            else {
                e.push(
                    format!("{k}.url"),
                    format!("expected \"http://IP[:PORT]/path\", got {:?}", h.url),
                );
                continue;
            };
            StepKindP::HttpGet {
                host: h.host.clone(),
                addr,
                path,
                src: src(&h.src, e, &k),
                expect_body: resolve_opt(refs, e, &format!("{k}.expect_body"), &h.expect_body),
                expect_body_contains: resolve_opt(
                    refs,
                    e,
                    &format!("{k}.expect_body_contains"),
                    &h.expect_body_contains,
                ),
                expect_status: h.expect_status,
                expect_fail: h.expect_fail,
                timeout: ms(h.timeout_ms),
            }
        } else if let Some(d) = &s.dns {
            let k = format!("{key}.dns");
            check_host(e, &format!("{k}.host"), &d.host, hosts);
            let Some(server) = refs
                .resolve(&d.server)
                .ok()
                .and_then(|t| parse_socket(&t, Some(53)))
            else {
                e.push(
                    format!("{k}.server"),
                    format!("expected \"IP\" or \"IP:PORT\", got {:?}", d.server),
                );
                continue;
            };
            let ipv4s = |list: &[String], key: &str, e: &mut Errs| -> Vec<Ipv4Addr> {
                let mut out = Vec::new();
                for (j, a) in list.iter().enumerate() {
                    match refs.resolve(a).map(|t| t.parse::<Ipv4Addr>()) {
                        Ok(Ok(ip)) => out.push(ip),
                        _ => e.push(
                            format!("{key}[{j}]"),
                            format!("expected an IPv4 address, got {a:?}"),
                        ),
                    }
                }
                out
            };
            let mut expect = Vec::new();
            if !d.expect.is_empty() {
                expect.push(ipv4s(&d.expect, &format!("{k}.expect"), e));
            }
            for (j, set) in d.expect_any.iter().enumerate() {
                let key = format!("{k}.expect_any[{j}]");
                if set.is_empty() {
                    e.push(
                        &key,
                        "expected a non-empty list of IPv4 addresses (one acceptable answer)",
                    );
                }
                expect.push(ipv4s(set, &key, e));
            }
            match (d.expect.is_empty(), d.expect_any.is_empty(), d.expect_fail) {
                (true, true, false) => e.push(
                    format!("{k}.expect"),
                    "expected the answer addresses (expect = [...] or expect_any = [[...], [...]]), or expect_fail = true",
                ),
                (false, false, _) => e.push(
                    format!("{k}.expect_any"),
                    "expected either expect (one answer) or expect_any (several acceptable answers), not both",
                ),
                (_, _, true) if !expect.is_empty() => e.push(
                    format!("{k}.expect_fail"),
                    "expect_fail = true asserts that no answer comes; drop expect/expect_any",
                ),
                _ => {}
            }
            StepKindP::Dns {
                host: d.host.clone(),
                server,
                qname: d.qname.clone(),
                src: src(&d.src, e, &k),
                expect,
                expect_fail: d.expect_fail,
                timeout: ms(d.timeout_ms),
                count: d.count.max(1),
            }
        } else if let Some(t) = &s.tcp_connect {
            let k = format!("{key}.tcp_connect");
            check_host(e, &format!("{k}.host"), &t.host, hosts);
            let Some(addr) = refs
                .resolve(&t.addr)
                .ok()
                .and_then(|a| parse_socket(&a, None))
            else {
                e.push(
                    format!("{k}.addr"),
                    format!("expected \"IP:PORT\", got {:?}", t.addr),
                );
                continue;
            };
            let expect = match t.expect.as_str() {
                "open" => ConnectExpect::Open,
                "closed" => ConnectExpect::Closed,
                "timeout" => ConnectExpect::Timeout,
                x => {
                    e.push(
                        format!("{k}.expect"),
                        format!("expected \"open\", \"closed\" or \"timeout\", got {x:?}"),
                    );
                    continue;
                }
            };
            StepKindP::TcpConnect {
                host: t.host.clone(),
                addr,
                src: src(&t.src, e, &k),
                expect,
                timeout: ms(t.timeout_ms),
            }
        } else if let Some(l) = &s.load {
            let k = format!("{key}.load");
            check_host(e, &format!("{k}.host"), &l.host, hosts);
            let Some((addr, path)) = refs.resolve(&l.url).ok().and_then(|u| parse_http_url(&u))
            else {
                e.push(
                    format!("{k}.url"),
                    format!("expected \"http://IP[:PORT]/path\", got {:?}", l.url),
                );
                continue;
            };
            if l.requests == 0 || l.requests > 100_000 {
                e.push(
                    format!("{k}.requests"),
                    format!("expected 1..100000, got {}", l.requests),
                );
            }
            if l.concurrency == 0 || l.concurrency > 256 {
                e.push(
                    format!("{k}.concurrency"),
                    format!("expected 1..256, got {}", l.concurrency),
                );
            }
            let sum: f64 = l.share.values().sum();
            if !l.share.is_empty() && (sum - 1.0).abs() > 0.01 {
                e.push(
                    format!("{k}.share"),
                    format!("expected fractions adding up to 1, got {sum}"),
                );
            }
            if let Some(i) = l.interval_ms
                && !(1..=10_000).contains(&i)
            {
                e.push(
                    format!("{k}.interval_ms"),
                    format!("expected 1..10000 ms, got {i}"),
                );
            }
            if l.max_outage_ms.is_some() && l.interval_ms.is_none() {
                e.push(
                    format!("{k}.max_outage_ms"),
                    "the outage is measured by a paced load: give interval_ms too",
                );
            }
            StepKindP::Load {
                host: l.host.clone(),
                addr,
                path,
                requests: l.requests,
                concurrency: l.concurrency,
                src: src(&l.src, e, &k),
                min_ok: l.min_ok.unwrap_or(l.requests),
                share: l.share.clone(),
                tolerance: l.tolerance,
                timeout: ms(l.timeout_ms),
                interval: l.interval_ms.map(ms),
                max_outage: l.max_outage_ms.map(ms),
            }
        } else if let Some(t) = &s.tcp_sessions {
            let k = format!("{key}.tcp_sessions");
            check_host(e, &format!("{k}.host"), &t.host, hosts);
            let Some(addr) = refs
                .resolve(&t.addr)
                .ok()
                .and_then(|a| parse_socket(&a, None))
            else {
                e.push(
                    format!("{k}.addr"),
                    format!("expected \"IP:PORT\", got {:?}", t.addr),
                );
                continue;
            };
            for (field, v, lo, hi) in [
                ("sessions", t.sessions, 1, 256),
                ("rounds", t.rounds, 1, 10_000),
                ("interval_ms", t.interval_ms, 0, 10_000),
            ] {
                if !(lo..=hi).contains(&v) {
                    e.push(
                        format!("{k}.{field}"),
                        format!("expected {lo}..{hi}, got {v}"),
                    );
                }
            }
            let min_ok = t.min_ok.unwrap_or(t.sessions.saturating_sub(t.min_failed));
            if min_ok + t.min_failed > t.sessions {
                e.push(
                    format!("{k}.min_failed"),
                    format!(
                        "min_ok {min_ok} + min_failed {} is more than the {} sessions",
                        t.min_failed, t.sessions
                    ),
                );
            }
            StepKindP::TcpSessions {
                host: t.host.clone(),
                addr,
                src: src(&t.src, e, &k),
                sessions: t.sessions,
                rounds: t.rounds,
                interval: ms(t.interval_ms),
                timeout: ms(t.timeout_ms),
                min_ok,
                min_failed: t.min_failed,
            }
        } else if let Some(j) = &s.join {
            // Which background step it joins is checked below, once every step is known.
            StepKindP::Join(j.clone())
        } else if let Some(p) = s.stop.as_ref().or(s.start.as_ref()) {
            let which = if s.stop.is_some() { "stop" } else { "start" };
            if !procs.contains(p) {
                e.push(
                    format!("{key}.{which}"),
                    format!("expected a process name ({}), got {p:?}", procs.join(", ")),
                );
            }
            if s.stop.is_some() {
                StepKindP::Stop(p.clone())
            } else {
                StepKindP::Start(p.clone())
            }
        } else if let Some(p) = &s.penctl {
            let k = format!("{key}.penctl");
            check_host(e, &format!("{k}.host"), &p.host, hosts);
            let target = refs.resolve(&p.target).unwrap_or_else(|m| {
                e.push(format!("{k}.target"), m);
                String::new()
            });
            let command = refs.resolve(&p.command).unwrap_or_else(|m| {
                e.push(format!("{k}.command"), m);
                String::new()
            });
            let command: Vec<String> = command.split_whitespace().map(String::from).collect();
            if command.is_empty() {
                e.push(
                    format!("{k}.command"),
                    "expected a penctl command such as \"servers\"",
                );
            }
            StepKindP::Penctl {
                host: p.host.clone(),
                target,
                command,
                expect_contains: resolve_opt(
                    refs,
                    e,
                    &format!("{k}.expect_contains"),
                    &p.expect_contains,
                ),
                timeout: ms(p.timeout_ms),
            }
        } else if let Some(r) = &s.run {
            let k = format!("{key}.run");
            check_host(e, &format!("{k}.host"), &r.host, hosts);
            if r.argv.is_empty() {
                e.push(
                    format!("{k}.argv"),
                    "expected a program and its arguments, got an empty list",
                );
            }
            let mut argv = Vec::new();
            for (j, a) in r.argv.iter().enumerate() {
                match refs.resolve(a) {
                    Ok(t) => argv.push(t),
                    Err(m) => e.push(format!("{k}.argv[{j}]"), m),
                }
            }
            StepKindP::Run {
                host: r.host.clone(),
                argv,
                expect_exit: r.expect_exit,
                expect_contains: resolve_opt(
                    refs,
                    e,
                    &format!("{k}.expect_contains"),
                    &r.expect_contains,
                ),
                timeout: ms(r.timeout_ms),
            }
        } else if let Some(w) = s.wait {
            if w > 30_000 {
                e.push(
                    format!("{key}.wait"),
                    format!("expected at most 30000 ms, got {w}"),
                );
            }
            StepKindP::Wait(ms(w))
        } else {
            continue;
        };
        let timeout_ok = match &kind {
            StepKindP::HttpGet { timeout, .. }
            | StepKindP::Dns { timeout, .. }
            | StepKindP::TcpConnect { timeout, .. }
            | StepKindP::Load { timeout, .. }
            | StepKindP::TcpSessions { timeout, .. }
            | StepKindP::Penctl { timeout, .. }
            | StepKindP::Run { timeout, .. } => {
                !timeout.is_zero() && *timeout <= Duration::from_secs(60)
            }
            _ => true,
        };
        if !timeout_ok {
            e.push(key.clone(), "timeout_ms: expected 1..60000");
        }
        let (retries, delay, which) = if let Some(h) = &s.http_get {
            (h.retries, h.retry_delay_ms, "http_get")
        } else if let Some(d) = &s.dns {
            (d.retries, d.retry_delay_ms, "dns")
        } else if let Some(t) = &s.tcp_connect {
            (t.retries, t.retry_delay_ms, "tcp_connect")
        } else {
            (0, 0, "")
        };
        if retries > MAX_RETRIES {
            e.push(
                format!("{key}.{which}.retries"),
                format!("expected 0..={MAX_RETRIES}, got {retries}"),
            );
        }
        if delay > 10_000 {
            e.push(
                format!("{key}.{which}.retry_delay_ms"),
                format!("expected 0..=10000 ms, got {delay}"),
            );
        }
        if let Some(n) = &s.name
            && n.trim().is_empty()
        {
            e.push(format!("{key}.name"), "expected a non-empty step name");
        }
        let label = s.name.clone().unwrap_or_else(|| step_label(&kind));
        let background = s.load.as_ref().is_some_and(|l| l.background)
            || s.tcp_sessions.as_ref().is_some_and(|t| t.background);
        out.push(StepP {
            label,
            name: s.name.clone(),
            kind,
            retries,
            retry_delay: ms(delay),
            background,
        });
    }
    check_joins(&out, e);
    out
}

/// Every background step has a name and is joined once by a later `join` step; every `join`
/// names an earlier background step.
fn check_joins(steps: &[StepP], e: &mut Errs) {
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    for (i, st) in steps.iter().enumerate() {
        let key = format!("step[{i}]");
        if st.background {
            match &st.name {
                None => e.push(
                    format!("{key}.name"),
                    "a background step needs a name, which a later join = \"NAME\" step refers to",
                ),
                Some(n) => {
                    if let Some(j) = open.insert(n.clone(), i) {
                        e.push(
                            format!("{key}.name"),
                            format!(
                                "background step {n:?} is still running from step[{j}]: give each background step its own name"
                            ),
                        );
                    }
                }
            }
        }
        if let StepKindP::Join(n) = &st.kind
            && open.remove(n).is_none()
        {
            let bg: Vec<&str> = steps
                .iter()
                .take(i)
                .filter(|s| s.background)
                .filter_map(|s| s.name.as_deref())
                .collect();
            e.push(
                format!("{key}.join"),
                format!(
                    "expected the name of an earlier background step not joined yet ({}), got {n:?}",
                    if bg.is_empty() { "none".to_string() } else { bg.join(", ") }
                ),
            );
        }
    }
    for (n, i) in open {
        e.push(
            format!("step[{i}].background"),
            format!("background step {n:?} is never joined: add a later step join = {n:?}"),
        );
    }
}

/// The default progress label of a step.
pub fn step_label(k: &StepKindP) -> String {
    let from = |src: &Option<IpAddr>| src.map(|s| format!(" from {s}")).unwrap_or_default();
    match k {
        StepKindP::HttpGet {
            host,
            addr,
            path,
            src,
            ..
        } => format!("http_get {host}{} → {addr}{path}", from(src)),
        StepKindP::Dns {
            host,
            server,
            qname,
            src,
            count,
            ..
        } => {
            let times = if *count > 1 {
                format!(" x{count} from one port")
            } else {
                String::new()
            };
            format!("dns {host}{} → {server} {qname}{times}", from(src))
        }
        StepKindP::TcpConnect {
            host, addr, expect, ..
        } => format!("tcp_connect {host} → {addr} (expect {expect:?})"),
        StepKindP::Load {
            host,
            addr,
            requests,
            concurrency,
            interval,
            ..
        } => match interval {
            Some(i) => format!(
                "load {host} → {addr} {requests} requests, one every {} ms",
                i.as_millis()
            ),
            None => format!("load {host} → {addr} {requests} requests x{concurrency}"),
        },
        StepKindP::TcpSessions {
            host,
            addr,
            sessions,
            rounds,
            interval,
            ..
        } => format!(
            "tcp_sessions {host} → {addr} {sessions} connections x {rounds} echoes every {} ms",
            interval.as_millis()
        ),
        StepKindP::Join(n) => format!("join {n}"),
        StepKindP::Stop(p) => format!("stop {p}"),
        StepKindP::Start(p) => format!("start {p}"),
        StepKindP::Penctl {
            host,
            target,
            command,
            ..
        } => format!("penctl {host} {target} {}", command.join(" ")),
        StepKindP::Run { host, argv, .. } => format!("run {host}: {}", argv.join(" ")),
        StepKindP::Wait(d) => format!("wait {} ms", d.as_millis()),
    }
}

// ---------------------------------------------------------------------------------------------
// Finding scenario files
// ---------------------------------------------------------------------------------------------

/// The scenarios directory: `$PENLAB_SCENARIOS`, else `scenarios/` in the current directory or
/// the nearest ancestor that has one.
pub fn scenarios_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PENLAB_SCENARIOS") {
        return Some(PathBuf::from(d));
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|a| a.join("scenarios"))
        .find(|d| d.is_dir())
}

/// Every `*.toml` in the scenarios directory, sorted.
pub fn list_scenarios(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    out.sort();
    Ok(out)
}

/// Resolves command-line names: `all`, a path to a `.toml`, or a name in the scenarios dir.
pub fn resolve_names(names: &[String]) -> Result<Vec<PathBuf>, String> {
    let dir = scenarios_dir();
    let mut out = Vec::new();
    for n in names {
        if n == "all" {
            let d = dir
                .as_ref()
                .ok_or("no scenarios/ directory here or above; set PENLAB_SCENARIOS".to_string())?;
            out.extend(list_scenarios(d).map_err(|e| format!("reading {}: {e}", d.display()))?);
            continue;
        }
        let p = PathBuf::from(n);
        if n.ends_with(".toml") || p.is_file() {
            if !p.is_file() {
                return Err(format!("{n}: no such scenario file"));
            }
            out.push(p);
            continue;
        }
        let Some(d) = &dir else {
            return Err(format!(
                "{n}: no scenarios/ directory here or above; give a path or set PENLAB_SCENARIOS"
            ));
        };
        let f = d.join(format!("{n}.toml"));
        if !f.is_file() {
            let known: Vec<String> = list_scenarios(d)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            return Err(format!(
                "{n}: no scenario {} (known: {})",
                f.display(),
                known.join(", ")
            ));
        }
        out.push(f);
    }
    Ok(out)
}
