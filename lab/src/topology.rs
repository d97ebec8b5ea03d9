//! Lab topologies: named network namespaces (netns-rs), veth pairs, bridges, addresses, routes
//! and policy rules (rtnetlink), sysctls (`/proc/sys` from a namespace thread), nftables and
//! ethtool offloads (the `nft` and `ethtool` programs run inside the namespace).
//!
//! Each node is a namespace called `{prefix}-{node}`; a switch node also holds a bridge `br0`.
//! Both ends of every veth live in lab namespaces, never in the host namespace.
//!
//! Defaults that make captures deterministic:
//! - `add_node` disables IPv6 (`net.ipv6.conf.{all,default}.disable_ipv6=1`): no DAD, router
//!   solicitations or MLD in captures. `sysctl(node, "net.ipv6.conf.all.disable_ipv6", "0")`
//!   turns it back on (it also writes the `default` key, so later links get IPv6 too).
//! - `add_link` turns the offloads `tx`, `tso`, `gso` and `gro` off on both veth ends (see
//!   [`DEFAULT_OFFLOADS_OFF`]) so that captured frames are real wire-sized frames with correct
//!   checksums. `set_offload` turns a feature back on; `set_default_offloads(false)` skips it.
//!
//! The API is synchronous. It drives netlink on a private current-thread tokio runtime, so do not
//! call it from inside an async context (use `spawn_blocking` or a plain thread there).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::packet_route::route::{RouteScope, RouteType};
use rtnetlink::packet_route::rule::RuleAction;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::netns::{
    in_netns, list_netns, ns_identity, ns_path, open_ns, pids_in_namespaces, terminate_pids,
    validate_ns_name,
};
use crate::node::output_in_ns;

/// Offload features turned off on every lab veth end by `add_link` (unless disabled with
/// [`Topology::set_default_offloads`]).
pub const DEFAULT_OFFLOADS_OFF: &[&str] = &["tx", "tso", "gso", "gro"];

/// The bridge every switch node holds.
pub const BRIDGE: &str = "br0";

/// Linux limits interface names to 15 bytes.
pub const IFNAME_MAX: usize = 15;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A namespace for a host (client, balancer, backend).
    Host,
    /// A namespace holding bridge `br0`; veth ends added to it join the bridge.
    Switch,
}

/// One end of a veth link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEnd {
    pub node: String,
    pub iface: String,
    /// MAC address to give the interface; `None` lets the kernel pick a random one.
    pub mac: Option<[u8; 6]>,
}

impl LinkEnd {
    /// An end without a fixed MAC.
    pub fn new(node: &str, iface: &str) -> LinkEnd {
        LinkEnd {
            node: node.to_string(),
            iface: iface.to_string(),
            mac: None,
        }
    }
}

/// A route, like `ip route add [local] DEST|default [via GW] [dev IFACE] [table N]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination prefix; `None` is the default route (family taken from `via`, else IPv4).
    pub dest: Option<(IpAddr, u8)>,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    /// Routing table; `None` is the main table.
    pub table: Option<u32>,
    /// A `local` route (type local, scope host), as transparent proxying needs.
    pub local: bool,
}

/// A set of lab namespaces and everything inside them; torn down on `teardown()` or Drop.
pub struct Topology {
    prefix: String,
    nodes: BTreeMap<String, NodeKind>,
    /// Namespace names created by this topology, in creation order.
    created: Vec<String>,
    rt: Option<tokio::runtime::Runtime>,
    handles: HashMap<String, Handle>,
    default_offloads: bool,
    /// This process is recorded as the run's owner (`crate::owner`), so `pen-lab clean`
    /// leaves the namespaces alone while it runs.
    owner_recorded: bool,
}

/// A fresh `penlab-<6 hex>` prefix that no existing namespace uses.
pub fn unique_prefix() -> String {
    unique_prefix_with("penlab")
}

/// A fresh `{root}-<6 hex>` prefix that no existing namespace uses.
pub fn unique_prefix_with(root: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        let prefix = format!("{root}-{:06x}", h.finish() & 0xff_ffff);
        if list_netns(&format!("{prefix}-")).is_ok_and(|v| v.is_empty()) {
            return prefix;
        }
    }
}

fn validate_node_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("invalid node name {name:?}: expected 1-64 characters from [A-Za-z0-9_-]");
    }
    Ok(())
}

/// Checks a Linux interface name: 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
pub fn validate_ifname(iface: &str) -> Result<()> {
    if iface.is_empty()
        || iface.len() > IFNAME_MAX
        || iface == "."
        || iface == ".."
        || iface
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        bail!(
            "invalid interface name {iface:?}: expected 1-{IFNAME_MAX} bytes without '/', ':' or whitespace"
        );
    }
    Ok(())
}

/// Turns a sysctl key (`net.ipv4.ip_forward` or `net/ipv4/ip_forward`) into its /proc path.
pub fn sysctl_path(key: &str) -> Result<String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        && !key.split(['.', '/']).any(|p| p.is_empty() || p == "..");
    if !ok {
        bail!(
            "invalid sysctl key {key:?}: expected dotted or slashed components such as net.ipv4.ip_forward"
        );
    }
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    Ok(format!("/proc/sys/{rel}"))
}

/// A link-layer address of any length (a non-Ethernet one in an error message); Ethernet MACs
/// use pen's formatter through `decode::fmt_mac`.
fn fmt_hw_addr(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Creates an rtnetlink handle whose socket lives in namespace `ns` (call inside `rt`).
fn ns_handle(rt: &tokio::runtime::Runtime, ns: &str) -> Result<Handle> {
    use rtnetlink::sys::{Socket, TokioSocket, protocols::NETLINK_ROUTE};
    let sock: Socket = in_netns(ns, || Socket::new(NETLINK_ROUTE))?
        .with_context(|| format!("opening a netlink socket in namespace {ns:?}"))?;
    let _guard = rt.enter();
    sock.set_non_blocking(true)
        .with_context(|| format!("netlink socket in namespace {ns:?}"))?;
    // SAFETY: the fd comes from `into_raw_fd` of a socket we own; ownership moves to TokioSocket.
    let tsock = unsafe { TokioSocket::from_raw_fd(sock.into_raw_fd()) };
    let (conn, handle, _) = rtnetlink::from_socket(tsock);
    rt.spawn(conn);
    Ok(handle)
}

async fn link_index(h: &Handle, ns: &str, iface: &str) -> Result<u32> {
    let msg = h
        .link()
        .get()
        .match_name(iface.to_string())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("no interface {iface:?} in namespace {ns:?}"))?
        .ok_or_else(|| anyhow!("no interface {iface:?} in namespace {ns:?}"))?;
    Ok(msg.header.index)
}

impl Topology {
    /// An empty topology whose namespaces will be called `{prefix}-{node}`.
    pub fn new(prefix: &str) -> Result<Topology> {
        validate_ns_name(prefix).with_context(|| format!("topology prefix {prefix:?}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("creating the tokio runtime that drives netlink")?;
        Ok(Topology {
            prefix: prefix.to_string(),
            nodes: BTreeMap::new(),
            created: Vec::new(),
            rt: Some(rt),
            handles: HashMap::new(),
            default_offloads: true,
            owner_recorded: false,
        })
    }

    /// The prefix given to `new`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether `add_link` turns [`DEFAULT_OFFLOADS_OFF`] off (default true).
    pub fn set_default_offloads(&mut self, off: bool) {
        self.default_offloads = off;
    }

    /// Namespace name of `node`: `{prefix}-{node}`.
    pub fn ns_name(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// Node names and kinds.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, NodeKind)> {
        self.nodes.iter().map(|(n, k)| (n.as_str(), *k))
    }

    /// Names of the namespaces this topology created and has not removed yet.
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    fn node_ns(&self, node: &str) -> Result<String> {
        if !self.nodes.contains_key(node) {
            let known: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
            bail!("unknown node {node:?}: known nodes are {known:?}");
        }
        Ok(self.ns_name(node))
    }

    fn rt(&self) -> Result<&tokio::runtime::Runtime> {
        self.rt
            .as_ref()
            .ok_or_else(|| anyhow!("topology {:?} has been torn down", self.prefix))
    }

    fn handle(&mut self, node: &str) -> Result<Handle> {
        let ns = self.node_ns(node)?;
        if let Some(h) = self.handles.get(&ns) {
            return Ok(h.clone());
        }
        let h = ns_handle(self.rt()?, &ns)?;
        self.handles.insert(ns, h.clone());
        Ok(h)
    }

    /// Creates namespace `{prefix}-{name}` with `lo` up and IPv6 disabled; a switch also gets
    /// bridge `br0` (up, STP off).
    pub fn add_node(&mut self, name: &str, kind: NodeKind) -> Result<()> {
        validate_node_name(name)?;
        if self.nodes.contains_key(name) {
            bail!("node {name:?} is defined twice");
        }
        let ns = self.ns_name(name);
        validate_ns_name(&ns)?;
        self.rt()?;
        if ns_path(&ns).exists() {
            bail!(
                "network namespace {ns:?} already exists (left over from an interrupted run? `pen-lab clean` removes it)"
            );
        }
        if !self.owner_recorded {
            crate::owner::record(&self.prefix).with_context(|| {
                format!("recording the owner of run {:?} (root needed)", self.prefix)
            })?;
            self.owner_recorded = true;
        }
        netns_rs::NetNs::new(&ns)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| {
                format!("cannot create network namespace {ns:?} for node {name:?} (root needed)")
            })?;
        self.created.push(ns.clone());
        self.nodes.insert(name.to_string(), kind);
        let h = self.handle(name)?;
        let rt = self.rt()?;
        rt.block_on(async {
            let lo = link_index(&h, &ns, "lo").await?;
            h.link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .with_context(|| format!("bringing lo up in {ns:?}"))?;
            if kind == NodeKind::Switch {
                h.link()
                    .add(LinkBridge::new(BRIDGE).build())
                    .execute()
                    .await
                    .with_context(|| format!("creating bridge {BRIDGE} in {ns:?}"))?;
            }
            anyhow::Ok(())
        })?;
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            self.write_sysctl(&ns, key, "1")?;
        }
        Ok(())
    }

    /// Creates a veth pair `a.iface` (in `a.node`) ↔ `b.iface` (in `b.node`), both up, with
    /// the given MACs; an end on a switch joins `br0`. Offloads per [`DEFAULT_OFFLOADS_OFF`].
    pub fn add_link(&mut self, a: &LinkEnd, b: &LinkEnd) -> Result<()> {
        validate_ifname(&a.iface)?;
        validate_ifname(&b.iface)?;
        let what = format!("link {}:{} <-> {}:{}", a.node, a.iface, b.node, b.iface);
        let ns_a = self.node_ns(&a.node).with_context(|| what.clone())?;
        let ns_b = self.node_ns(&b.node).with_context(|| what.clone())?;
        if ns_a == ns_b && a.iface == b.iface {
            bail!("{what}: both ends have the same name in the same node");
        }
        let h_a = self.handle(&a.node)?;
        let h_b = self.handle(&b.node)?;
        let kind_a = self.nodes.get(&a.node).copied();
        let kind_b = self.nodes.get(&b.node).copied();
        let ns_b_file = open_ns(&ns_b)?;
        let rt = self.rt()?;
        rt.block_on(async {
            let mut peer = LinkUnspec::new_with_name(&b.iface).setns_by_fd(ns_b_file.as_raw_fd());
            if let Some(mac) = b.mac {
                peer = peer.address(mac.to_vec());
            }
            let mut veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(a.iface.clone())
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
            if let Some(mac) = a.mac {
                veth = veth.address(mac.to_vec());
            }
            h_a.link()
                .add(veth.build())
                .execute()
                .await
                .with_context(|| format!("creating veth pair for {what}"))?;
            for (h, ns, end, kind) in [(&h_a, &ns_a, a, kind_a), (&h_b, &ns_b, b, kind_b)] {
                let idx = link_index(h, ns, &end.iface).await?;
                let mut msg = LinkUnspec::new_with_index(idx).up();
                if kind == Some(NodeKind::Switch) {
                    let br = link_index(h, ns, BRIDGE).await?;
                    msg = msg.controller(br);
                }
                h.link()
                    .set(msg.build())
                    .execute()
                    .await
                    .with_context(|| format!("bringing {}:{} up", end.node, end.iface))?;
            }
            anyhow::Ok(())
        })?;
        drop(ns_b_file);
        if self.default_offloads {
            for end in [a, b] {
                self.set_offloads(&end.node, &end.iface, DEFAULT_OFFLOADS_OFF, false)?;
            }
        }
        Ok(())
    }

    /// Adds `addr/prefix_len` to `iface` of `node` (`lo` allowed, for VIPs).
    pub fn add_address(
        &mut self,
        node: &str,
        iface: &str,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<()> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            bail!("address {addr}/{prefix_len} on {node}:{iface}: prefix length must be 0-{max}");
        }
        let ns = self.node_ns(node)?;
        let h = self.handle(node)?;
        let hint = if addr.is_ipv6() {
            " (IPv6 is disabled in lab nodes unless sysctl net.ipv6.conf.all.disable_ipv6=0)"
        } else {
            ""
        };
        self.rt()?.block_on(async {
            let idx = link_index(&h, &ns, iface).await?;
            h.address()
                .add(idx, addr, prefix_len)
                .execute()
                .await
                .with_context(|| format!("adding {addr}/{prefix_len} to {node}:{iface}{hint}"))
        })
    }

    /// Adds a route in `node` (see [`RouteSpec`]).
    pub fn add_route(&mut self, node: &str, route: &RouteSpec) -> Result<()> {
        let ns = self.node_ns(node)?;
        let h = self.handle(node)?;
        let desc = describe_route(route);
        let v6 = match (route.dest, route.via) {
            (Some((d, _)), Some(v)) if d.is_ipv4() != v.is_ipv4() => {
                bail!(
                    "route {desc} in {node}: destination and gateway are of different IP families"
                )
            }
            (Some((d, _)), _) => d.is_ipv6(),
            (None, Some(v)) => v.is_ipv6(),
            (None, None) => false,
        };
        if let Some((d, len)) = route.dest {
            let max = if d.is_ipv4() { 32 } else { 128 };
            if len > max {
                bail!("route {desc} in {node}: prefix length must be 0-{max}");
            }
        }
        if route.via.is_none() && route.dev.is_none() && !route.local {
            bail!("route {desc} in {node}: needs a gateway (via) or a device (dev)");
        }
        let rt = self.rt()?;
        rt.block_on(async {
            let oif = match &route.dev {
                Some(dev) => Some(link_index(&h, &ns, dev).await?),
                None => None,
            };
            let scope = if route.local {
                RouteScope::Host
            } else if route.via.is_none() {
                RouteScope::Link
            } else {
                RouteScope::Universe
            };
            let kind = if route.local {
                RouteType::Local
            } else {
                RouteType::Unicast
            };
            let msg = if v6 {
                let mut b = RouteMessageBuilder::<Ipv6Addr>::new();
                if let Some((IpAddr::V6(d), len)) = route.dest {
                    b = b.destination_prefix(d, len);
                }
                if let Some(IpAddr::V6(g)) = route.via {
                    b = b.gateway(g);
                }
                if let Some(i) = oif {
                    b = b.output_interface(i);
                }
                if let Some(t) = route.table {
                    b = b.table_id(t);
                }
                b.scope(scope).kind(kind).build()
            } else {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new();
                if let Some((IpAddr::V4(d), len)) = route.dest {
                    b = b.destination_prefix(d, len);
                }
                if let Some(IpAddr::V4(g)) = route.via {
                    b = b.gateway(g);
                }
                if let Some(i) = oif {
                    b = b.output_interface(i);
                }
                if let Some(t) = route.table {
                    b = b.table_id(t);
                }
                b.scope(scope).kind(kind).build()
            };
            h.route()
                .add(msg)
                .execute()
                .await
                .with_context(|| format!("adding route {desc} in node {node:?}"))
        })
    }

    /// `ip rule add fwmark FWMARK lookup TABLE` (IPv6 when `v6`).
    pub fn add_rule_fwmark(&mut self, node: &str, fwmark: u32, table: u32, v6: bool) -> Result<()> {
        let h = self.handle(node)?;
        self.rt()?.block_on(async {
            let req = h
                .rule()
                .add()
                .fw_mark(fwmark)
                .table_id(table)
                .action(RuleAction::ToTable);
            let r = if v6 {
                req.v6().execute().await
            } else {
                req.v4().execute().await
            };
            r.with_context(|| {
                format!(
                    "adding rule fwmark {fwmark} lookup {table} ({}) in node {node:?}",
                    if v6 { "IPv6" } else { "IPv4" }
                )
            })
        })
    }

    fn write_sysctl(&self, ns: &str, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key)?;
        let v = value.to_string();
        let p = path.clone();
        in_netns(ns, move || std::fs::write(&p, v.as_bytes()))?
            .with_context(|| format!("setting sysctl {key}={value} ({path}) in namespace {ns:?}"))
    }

    /// Writes a sysctl inside `node` (`net.ipv4.ip_forward`, `net/ipv4/conf/eth0/arp_ignore`).
    /// Setting `net.ipv6.conf.all.disable_ipv6` also sets the `default` key.
    pub fn sysctl(&mut self, node: &str, key: &str, value: &str) -> Result<()> {
        let ns = self.node_ns(node)?;
        if value.is_empty() || value.contains(['\n', '\0']) {
            bail!("sysctl {key} in {node}: value {value:?} must be one non-empty line");
        }
        self.write_sysctl(&ns, key, value)?;
        if key == "net.ipv6.conf.all.disable_ipv6" || key == "net/ipv6/conf/all/disable_ipv6" {
            self.write_sysctl(&ns, "net.ipv6.conf.default.disable_ipv6", value)?;
        }
        Ok(())
    }

    /// Loads an nftables ruleset into `node` with `nft -f -`.
    pub fn nft(&mut self, node: &str, ruleset: &str) -> Result<()> {
        let ns = self.node_ns(node)?;
        let out = output_in_ns(
            &ns,
            &["nft".to_string(), "-f".to_string(), "-".to_string()],
            Some(ruleset.as_bytes()),
            Duration::from_secs(10),
        )
        .with_context(|| format!("running nft in node {node:?} (is nftables installed?)"))?;
        if !out.status.success() {
            bail!(
                "nft rejected the ruleset for node {node:?} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Impairs the frames `node` sends on `iface` (loss, rate) with an nftables `netdev`
    /// egress chain (see [`impair_ruleset`]).
    pub fn impair(&mut self, node: &str, iface: &str, im: &Impairment) -> Result<()> {
        validate_ifname(iface)?;
        let ruleset = impair_ruleset(iface, im);
        self.nft(node, &ruleset)
            .with_context(|| format!("impairing {node}:{iface} (kernel 5.16+ for netdev egress)"))
    }

    /// Runs one set-up command (a host's `commands`) inside `node`; a failure (non-zero exit,
    /// or 10 s without one) names the node, the command and its output.
    pub fn run_command(&mut self, node: &str, argv: &[String]) -> Result<()> {
        let ns = self.node_ns(node)?;
        let what = argv.join(" ");
        let out = output_in_ns(&ns, argv, None, Duration::from_secs(10))
            .with_context(|| format!("running {what:?} in node {node:?}"))?;
        if !out.status.success() {
            bail!(
                "{what:?} failed in node {node:?} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Turns one ethtool feature (`tx`, `tso`, `gso`, `gro`, `rx`, ...) on or off.
    pub fn set_offload(&mut self, node: &str, iface: &str, feature: &str, on: bool) -> Result<()> {
        self.set_offloads(node, iface, &[feature], on)
    }

    /// Turns several ethtool features on or off with one `ethtool -K`.
    pub fn set_offloads(
        &mut self,
        node: &str,
        iface: &str,
        features: &[&str],
        on: bool,
    ) -> Result<()> {
        validate_ifname(iface)?;
        let ns = self.node_ns(node)?;
        let mut argv = vec!["ethtool".to_string(), "-K".to_string(), iface.to_string()];
        for f in features {
            if f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                bail!(
                    "invalid offload feature {f:?}: expected an ethtool -K name such as tso or gro"
                );
            }
            argv.push((*f).to_string());
            argv.push(if on { "on" } else { "off" }.to_string());
        }
        let out = output_in_ns(&ns, &argv, None, Duration::from_secs(10)).with_context(|| {
            format!("running ethtool for {node}:{iface} (is ethtool installed?)")
        })?;
        if !out.status.success() {
            bail!(
                "ethtool -K {iface} {} {} failed in node {node:?} ({}): {}",
                features.join(","),
                if on { "on" } else { "off" },
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The MAC address of `iface` in `node`.
    pub fn mac(&self, node: &str, iface: &str) -> Result<[u8; 6]> {
        let ns = self.node_ns(node)?;
        let h = match self.handles.get(&ns) {
            Some(h) => h.clone(),
            None => ns_handle(self.rt()?, &ns)?,
        };
        self.rt()?.block_on(async {
            let msg = h
                .link()
                .get()
                .match_name(iface.to_string())
                .execute()
                .try_next()
                .await
                .with_context(|| format!("no interface {iface:?} in node {node:?}"))?
                .ok_or_else(|| anyhow!("no interface {iface:?} in node {node:?}"))?;
            for attr in msg.attributes {
                if let LinkAttribute::Address(bytes) = attr {
                    return <[u8; 6]>::try_from(bytes.as_slice()).map_err(|_| {
                        anyhow!(
                            "interface {node}:{iface} has a non-Ethernet address {}",
                            fmt_hw_addr(&bytes)
                        )
                    });
                }
            }
            bail!("interface {node}:{iface} has no link-layer address")
        })
    }

    /// Kills every process inside this topology's namespaces (by PID: SIGTERM, then SIGKILL
    /// after 500 ms), closes the netlink sockets and removes the namespaces. Idempotent;
    /// returns the first error after trying everything.
    pub fn teardown(&mut self) -> Result<()> {
        let mut first_err: Option<anyhow::Error> = None;
        let idents: Vec<(u64, u64)> = self
            .created
            .iter()
            .filter_map(|ns| ns_identity(&ns_path(ns)).ok())
            .collect();
        if !idents.is_empty() {
            let pids = pids_in_namespaces(&idents);
            terminate_pids(&pids, Duration::from_millis(500));
        }
        self.handles.clear();
        // Dropping the runtime drops the netlink connection tasks and closes their sockets.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        let mut remaining = Vec::new();
        for ns in std::mem::take(&mut self.created) {
            if let Err(e) = remove_netns(&ns) {
                remaining.push(ns);
                first_err.get_or_insert(e);
            }
        }
        if remaining.is_empty() && self.owner_recorded {
            match crate::owner::forget(&self.prefix) {
                Ok(()) => self.owner_recorded = false,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.created = remaining;
        self.nodes.clear();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("pen-lab: teardown of {}: {e:#}", self.prefix);
        }
    }
}

/// Loss and rate limits of the frames one interface sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Impairment {
    /// Frames dropped at random, 0..=100 percent.
    pub loss_percent: u32,
    /// Policer rate in bits per second: frames over it are dropped.
    pub rate_bps: Option<u64>,
    /// Burst above the rate, in bytes.
    pub burst_bytes: u64,
}

/// The nftables ruleset that impairs what `iface` sends: a `netdev` table with an `egress`
/// chain on the device, which runs before the packet taps, so a dropped frame appears in no
/// capture (it never was on the wire). Loss is `numgen random mod 100 < N drop`, the rate a
/// `limit rate over B bytes/second burst N bytes drop` policer. Frames that bypass the
/// qdisc layer (AF_PACKET sockets with PACKET_QDISC_BYPASS, XDP) are not impaired.
pub fn impair_ruleset(iface: &str, im: &Impairment) -> String {
    let table: String = iface
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut rules = String::new();
    match im.loss_percent {
        0 => {}
        // `numgen random mod 100` is 0..=99: "< 100" is out of its range for nft.
        100.. => rules.push_str("    counter drop\n"),
        n => rules.push_str(&format!("    numgen random mod 100 < {n} counter drop\n")),
    }
    if let Some(bps) = im.rate_bps {
        rules.push_str(&format!(
            "    limit rate over {} bytes/second burst {} bytes counter drop\n",
            (bps / 8).max(1),
            im.burst_bytes.max(1)
        ));
    }
    // Declare, delete, define: applying it again replaces the previous impairment.
    format!(
        "table netdev penlab_impair_{table}\ndelete table netdev penlab_impair_{table}\ntable netdev penlab_impair_{table} {{\n  chain egress {{\n    type filter hook egress device \"{iface}\" priority 0; policy accept;\n{rules}  }}\n}}\n"
    )
}

fn describe_route(r: &RouteSpec) -> String {
    let mut s = String::new();
    if r.local {
        s.push_str("local ");
    }
    match r.dest {
        Some((ip, len)) => s.push_str(&format!("{ip}/{len}")),
        None => s.push_str("default"),
    }
    if let Some(v) = r.via {
        s.push_str(&format!(" via {v}"));
    }
    if let Some(d) = &r.dev {
        s.push_str(&format!(" dev {d}"));
    }
    if let Some(t) = r.table {
        s.push_str(&format!(" table {t}"));
    }
    s
}

/// Unmounts and deletes `/run/netns/{ns}` (a missing namespace is not an error).
fn remove_netns(ns: &str) -> Result<()> {
    if !ns_path(ns).exists() {
        return Ok(());
    }
    let handle = netns_rs::NetNs::get(ns)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("opening network namespace {ns:?} for removal"))?;
    handle
        .remove()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("removing network namespace {ns:?}"))?;
    if ns_path(ns).exists() {
        std::fs::remove_file(ns_path(ns))
            .with_context(|| format!("deleting {}", ns_path(ns).display()))?;
    }
    Ok(())
}

/// What `pen-lab clean` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// Namespaces removed.
    pub removed: Vec<String>,
    /// Runs left alone because their pen-lab still runs: (run id, its PID).
    pub live: Vec<(String, u32)>,
}

/// `pen-lab clean [RUN]`: for every namespace named `{root_prefix}-*` (or `{run}-*`) whose
/// run's owner is gone (see [`crate::owner`]), kill the processes inside it (by PID) and
/// remove it. Runs whose pen-lab process still runs are left alone and listed.
pub fn clean_leftovers(root_prefix: &str, run: Option<&str>) -> Result<Cleaned> {
    if root_prefix.is_empty() {
        bail!("clean_leftovers needs a non-empty prefix such as \"penlab\"");
    }
    if let Some(r) = run {
        let ok = validate_ns_name(r).is_ok()
            && r.strip_prefix(root_prefix)
                .is_some_and(|x| x.len() > 1 && x.starts_with('-'));
        if !ok {
            bail!(
                "invalid run id {r:?}: expected {root_prefix}-<6 hex> as printed by `pen-lab run` (e.g. {root_prefix}-3f2a1c)"
            );
        }
    }
    let names = list_netns(&format!("{}-", run.unwrap_or(root_prefix)))?;
    let records = crate::owner::read_all()?;
    let plan = crate::owner::plan_clean(&names, &records, crate::owner::alive, run);
    let idents: Vec<(u64, u64)> = plan
        .remove
        .iter()
        .filter_map(|ns| ns_identity(&ns_path(ns)).ok())
        .collect();
    if !idents.is_empty() {
        terminate_pids(&pids_in_namespaces(&idents), Duration::from_millis(500));
    }
    let mut removed = Vec::new();
    let mut first_err = None;
    for ns in plan.remove {
        match remove_netns(&ns) {
            Ok(()) => removed.push(ns),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if first_err.is_none() {
        for r in &plan.stale_records {
            if r.starts_with(root_prefix)
                && let Err(e) = crate::owner::forget(r)
            {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e.context(format!("removed {removed:?} before the failure"))),
        None => Ok(Cleaned {
            removed,
            live: plan.live,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_longer_than_15_bytes_are_rejected() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("abcdefghijklmno").is_ok());
        let err = validate_ifname("abcdefghijklmnop").unwrap_err();
        assert!(err.to_string().contains("abcdefghijklmnop"));
        for bad in ["", "a/b", "a:b", "a b", ".", ".."] {
            assert!(validate_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sysctl_keys_map_to_proc_sys_and_cannot_escape_it() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/arp_ignore").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/arp_ignore"
        );
        for bad in [
            "",
            "net..ipv4",
            "net/../../etc/passwd",
            "net ipv4",
            "/net/ipv4",
        ] {
            assert!(sysctl_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unique_prefixes_have_six_hex_digits_and_differ() {
        let a = unique_prefix();
        let b = unique_prefix();
        assert_ne!(a, b);
        let hex = a.strip_prefix("penlab-").unwrap();
        assert_eq!(hex.len(), 6);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn impairments_become_one_egress_chain_per_interface() {
        let r = impair_ruleset(
            "eth0",
            &Impairment {
                loss_percent: 30,
                rate_bps: Some(800_000),
                burst_bytes: 10_000,
            },
        );
        assert_eq!(
            r,
            "table netdev penlab_impair_eth0\ndelete table netdev penlab_impair_eth0\ntable netdev penlab_impair_eth0 {\n  chain egress {\n    type filter hook egress device \"eth0\" priority 0; policy accept;\n    numgen random mod 100 < 30 counter drop\n    limit rate over 100000 bytes/second burst 10000 bytes counter drop\n  }\n}\n"
        );
        let r = impair_ruleset(
            "p-1.x",
            &Impairment {
                loss_percent: 100,
                rate_bps: None,
                burst_bytes: 0,
            },
        );
        assert!(r.contains("\ntable netdev penlab_impair_p_1_x {"), "{r}");
        assert!(r.contains("device \"p-1.x\""), "{r}");
        assert!(r.contains("policy accept;\n    counter drop\n"), "{r}");
        assert!(!r.contains("numgen"), "{r}");
        assert!(!r.contains("limit"), "{r}");
    }

    #[test]
    fn routes_describe_like_ip_route() {
        let r = RouteSpec {
            dest: None,
            via: Some("10.0.0.1".parse().unwrap()),
            dev: Some("eth0".into()),
            table: Some(100),
            local: false,
        };
        assert_eq!(
            describe_route(&r),
            "default via 10.0.0.1 dev eth0 table 100"
        );
        let l = RouteSpec {
            dest: Some(("0.0.0.0".parse().unwrap(), 0)),
            dev: Some("lo".into()),
            table: Some(100),
            local: true,
            ..RouteSpec::default()
        };
        assert_eq!(describe_route(&l), "local 0.0.0.0/0 dev lo table 100");
    }

    #[test]
    fn io_handles_can_move_to_other_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Topology>();
        assert_send::<crate::capture::Capture>();
        assert_send::<crate::node::Proc>();
    }

    #[test]
    fn unknown_node_errors_list_the_known_ones() {
        let t = Topology::new("penlab-unit00").unwrap();
        let err = t.mac("nope", "eth0").unwrap_err();
        assert!(err.to_string().contains("nope"));
    }
}
