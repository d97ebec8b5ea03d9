//! Loading and validation: file → [`Plan`](super::Plan) for the topology, processes, captures and `[sim]`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::decode::parse_mac;
use crate::expect;

use super::*;

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

pub(super) fn valid_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

pub(super) fn valid_iface_name(s: &str) -> bool {
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
        let mut nodes: Vec<(String, PlannedNodeKind)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, s) in self.switches.iter().enumerate() {
            let key = format!("switch[{i}].name");
            check_node_name(&mut e, &key, &s.name, &mut seen);
            nodes.push((s.name.clone(), PlannedNodeKind::Switch));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let key = format!("host[{i}].name");
            check_node_name(&mut e, &key, &h.name, &mut seen);
            nodes.push((h.name.clone(), PlannedNodeKind::Host));
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
                    LinkEndEntry::Brief(s) => match s.split_once(':') {
                        Some((n, i)) => (n.to_string(), Some(i.to_string()), None),
                        None => (s.clone(), None, None),
                    },
                    LinkEndEntry::Full { node, iface, mac } => {
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
                    Some(PlannedNodeKind::Host) => {
                        *host_link_count.entry(node.clone()).or_default() += 1;
                    }
                    Some(PlannedNodeKind::Switch) => {}
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
        let mut links: Vec<PlannedLink> = Vec::new();
        let mut impairments: Vec<PlannedImpairment> = Vec::new();
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
                    (None, Some(PlannedNodeKind::Switch)) => {
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
                if kind_of(node) == Some(PlannedNodeKind::Host) {
                    ifaces.entry(node.clone()).or_default().push(iface.clone());
                }
                resolved.push(PlannedLinkEnd {
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
                links.push(PlannedLink {
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
                topo.addresses.push(PlannedAddress {
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
                topo.early_sysctls.push(PlannedSysctl {
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
                topo.sysctls.push(PlannedSysctl {
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
                topo.rules.push(PlannedRule {
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
                match refs
                    .resolve(c)
                    .map_err(String::from)
                    .and_then(|c| setup_command(&c))
                {
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
                topo.offloads.push(PlannedOffload {
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
        // Every link end, hosts' and switches' ports alike (fault steps take them down).
        let mut link_ends: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in &topo.links {
            for end in [&l.a, &l.b] {
                link_ends
                    .entry(end.node.clone())
                    .or_default()
                    .push(end.iface.clone());
            }
        }
        let steps = plan_steps(self, &refs, &host_names, &proc_names, &link_ends, &mut e);
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
        if self.balance.is_some() {
            let live = [
                ("host", self.hosts.len()),
                ("switch", self.switches.len()),
                ("link", self.links.len()),
                ("process", self.processes.len()),
                ("capture", self.captures.len()),
                ("step", self.steps.len()),
                ("expect", self.expects.len()),
                ("sim", usize::from(self.sim.is_some())),
            ];
            for (what, n) in live.iter().filter(|(_, n)| *n > 0) {
                e.push(
                    "balance",
                    format!(
                        "a [balance] scenario runs the simulation alone and may not have {what} entries (found {n}); expected only [balance] and [vars] (a live replay is the `replay` step)"
                    ),
                );
            }
        }
        let balance = match &self.balance {
            Some(b) => match crate::replay::plan_balance(b, &refs, &sim_root(file)) {
                Ok(p) => Some(p),
                Err(list) => {
                    for (sub, m) in list {
                        e.push(format!("balance.{sub}"), m);
                    }
                    None
                }
            },
            None => None,
        };
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
            balance,
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
pub(super) fn plan_sim(
    sc: &Scenario,
    s: &SimTable,
    file: &str,
    refs: &Refs,
    e: &mut Errs,
) -> Option<PlannedSim> {
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
    Some(PlannedSim {
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
pub(super) fn plan_impair(
    im: &ImpairTable,
    a: &PlannedLinkEnd,
    b: &PlannedLinkEnd,
    key: &str,
    e: &mut Errs,
) -> Vec<PlannedImpairment> {
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
    let ends: Vec<&PlannedLinkEnd> = match &im.from {
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
        .map(|end| PlannedImpairment {
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
pub(super) fn plan_window(
    x: &ExpectSpec,
    steps: &[PlannedStep],
    key: &str,
    e: &mut Errs,
) -> expect::Window {
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
pub(super) type RawEnd = (String, Option<String>, Option<String>);

pub(super) fn check_node_name(e: &mut Errs, key: &str, name: &str, seen: &mut BTreeSet<String>) {
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

pub(super) fn plan_route(
    refs: &Refs,
    node: &str,
    r: &RouteTable,
    ifaces: Option<&Vec<String>>,
) -> Result<PlannedRoute, String> {
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
    Ok(PlannedRoute {
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
pub(super) fn setup_command(line: &str) -> Result<Vec<String>, String> {
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

pub(super) fn resolve_opt(
    refs: &Refs,
    e: &mut Errs,
    key: &str,
    v: &Option<String>,
) -> Option<String> {
    let v = v.as_ref()?;
    match refs.resolve(v) {
        Ok(t) => Some(t),
        Err(m) => {
            e.push(key.to_string(), m);
            None
        }
    }
}

pub(super) fn resolve_ip(refs: &Refs, s: &str) -> Result<IpAddr, String> {
    let t = refs.resolve(s)?;
    t.parse()
        .map_err(|_| format!("expected an IP address, got {t:?}"))
}

pub(super) fn check_host(e: &mut Errs, key: &str, host: &str, hosts: &[String]) {
    if !hosts.iter().any(|h| h == host) {
        e.push(
            key,
            format!("expected a host name ({}), got {host:?}", hosts.join(", ")),
        );
    }
}

pub(super) fn plan_processes(
    sc: &Scenario,
    refs: &Refs,
    hosts: &[String],
    e: &mut Errs,
) -> Vec<PlannedProcess> {
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
            PlannedProcessKind::Pen(args)
        } else if let Some(argv) = &p.command {
            if argv.is_empty() {
                e.push(
                    format!("{key}.command"),
                    "expected a program and its arguments, got an empty list",
                );
            }
            PlannedProcessKind::Command(resolve_argv(argv, e, &format!("{key}.command")))
        } else if let Some(b) = &p.backend {
            let mut listen = Vec::new();
            for (j, l) in b.listen.iter().enumerate() {
                let r = refs.resolve(l).map_err(String::from).and_then(|t| {
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
                "http" => PlannedBackend::Http { name },
                "tcp-echo" => PlannedBackend::TcpEcho,
                "udp-echo" => PlannedBackend::UdpEcho,
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
                    PlannedBackend::Dns { name, answer }
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
            let udp = matches!(kind, PlannedBackend::Dns { .. } | PlannedBackend::UdpEcho);
            for a in &listen {
                default_ready.push(if udp {
                    ReadyCheck::Udp(*a)
                } else {
                    ReadyCheck::Tcp(*a)
                });
            }
            PlannedProcessKind::Backend { kind, listen }
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
        out.push(PlannedProcess {
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

pub(super) fn plan_ready(r: &ReadyTable, refs: &Refs, key: &str, e: &mut Errs) -> Vec<ReadyCheck> {
    let mut out = Vec::new();
    for (list, udp) in [(&r.tcp, false), (&r.udp, true)] {
        for a in list.as_ref().map(|l| l.to_vec()).unwrap_or_default() {
            let which = if udp { "udp" } else { "tcp" };
            match refs.resolve(&a).map(|t| parse_socket(&t, None)) {
                Ok(Some(s)) => out.push(if udp {
                    ReadyCheck::Udp(s)
                } else {
                    ReadyCheck::Tcp(s)
                }),
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
            Ok(p) => out.push(ReadyCheck::Path(PathBuf::from(p))),
            Err(m) => e.push(format!("{key}.ready.path"), m),
        }
    }
    if let Some(d) = r.delay_ms {
        out.push(ReadyCheck::Delay(Duration::from_millis(d)));
    }
    if out.is_empty() && !r.none {
        e.push(
            key,
            "expected one of tcp, udp, path, delay_ms or none = true",
        );
    }
    out
}

pub(super) fn plan_captures(
    sc: &Scenario,
    ifaces: &BTreeMap<String, Vec<String>>,
    hosts: &[String],
    switches: &[String],
    e: &mut Errs,
) -> Vec<PlannedCapture> {
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
        out.push(PlannedCapture {
            name: c.name.clone(),
            host: c.host.clone(),
            iface: c.iface.clone(),
            filter: c.filter.clone(),
        });
    }
    out
}
