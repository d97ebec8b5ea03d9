//! Expectations: predicates over the decoded frames of one capture.
//!
//! [`compile`] turns an `[[expect]]` table into an [`Expectation`] (references resolved,
//! values parsed); [`evaluate`] runs it over frames and says why it failed, with the offending
//! frame indices.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::decode::{self, FrameInfo, fmt_mac, ip_in_net, parse_mac};
use crate::scenario::{ExpectSpec, MatchTable, Refs, Scalar, parse_cidr};

/// A frame field usable as a sticky key/value or a share field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Field {
    EthSrc,
    EthDst,
    Ethertype,
    Vlan,
    ArpOp,
    ArpSenderMac,
    ArpTargetMac,
    ArpSenderIp,
    ArpTargetIp,
    IpSrc,
    IpDst,
    Proto,
    SrcPort,
    DstPort,
    Ttl,
}

const FIELD_NAMES: [(&str, Field); 15] = [
    ("eth_src", Field::EthSrc),
    ("eth_dst", Field::EthDst),
    ("ethertype", Field::Ethertype),
    ("vlan", Field::Vlan),
    ("arp_op", Field::ArpOp),
    ("arp_sender_mac", Field::ArpSenderMac),
    ("arp_target_mac", Field::ArpTargetMac),
    ("arp_sender_ip", Field::ArpSenderIp),
    ("arp_target_ip", Field::ArpTargetIp),
    ("ip_src", Field::IpSrc),
    ("ip_dst", Field::IpDst),
    ("proto", Field::Proto),
    ("src_port", Field::SrcPort),
    ("dst_port", Field::DstPort),
    ("ttl", Field::Ttl),
];

impl Field {
    pub fn parse(s: &str) -> Option<Field> {
        FIELD_NAMES.iter().find(|(n, _)| *n == s).map(|(_, f)| *f)
    }

    pub fn name(self) -> &'static str {
        FIELD_NAMES
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    /// The field's value in canonical text form (IPs as `Display`, MACs lowercase).
    pub fn value(self, f: &FrameInfo) -> Option<String> {
        let arp = f.arp.as_ref();
        match self {
            Field::EthSrc => f.eth_src.as_ref().map(fmt_mac),
            Field::EthDst => f.eth_dst.as_ref().map(fmt_mac),
            Field::Ethertype => f.ethertype.map(|v| v.to_string()),
            Field::Vlan => f.vlan.map(|v| v.to_string()),
            Field::ArpOp => arp.map(|a| a.op.to_string()),
            Field::ArpSenderMac => arp.map(|a| fmt_mac(&a.sender_mac)),
            Field::ArpTargetMac => arp.map(|a| fmt_mac(&a.target_mac)),
            Field::ArpSenderIp => arp.map(|a| a.sender_ip.to_string()),
            Field::ArpTargetIp => arp.map(|a| a.target_ip.to_string()),
            Field::IpSrc => f.ip_src.map(|v| v.to_string()),
            Field::IpDst => f.ip_dst.map(|v| v.to_string()),
            Field::Proto => f.proto.map(|v| v.to_string()),
            Field::SrcPort => f.src_port.map(|v| v.to_string()),
            Field::DstPort => f.dst_port.map(|v| v.to_string()),
            Field::Ttl => f.ttl.map(|v| v.to_string()),
        }
    }
}

/// Canonical text of a value written in a file, so it compares equal to [`Field::value`].
pub fn canonical_value(field: Field, s: &str) -> String {
    match field {
        Field::EthSrc | Field::EthDst | Field::ArpSenderMac | Field::ArpTargetMac => {
            parse_mac(s).map_or_else(|| s.to_string(), |m| fmt_mac(&m))
        }
        Field::ArpSenderIp | Field::ArpTargetIp | Field::IpSrc | Field::IpDst => s
            .parse::<IpAddr>()
            .map_or_else(|_| s.to_string(), |ip| ip.to_string()),
        Field::Ethertype | Field::ArpOp | Field::Proto => {
            named_number(field_key(field), s).map_or_else(|| s.to_string(), |n| n.to_string())
        }
        _ => s.to_string(),
    }
}

fn field_key(f: Field) -> &'static str {
    f.name()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MacField {
    EthSrc,
    EthDst,
    ArpSender,
    ArpTarget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NetField {
    Src,
    Dst,
    Either,
    /// IP source, or the ARP sender address.
    From,
    /// IP destination, or the ARP target address.
    To,
    ArpSender,
    ArpTarget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumField {
    Ethertype,
    Vlan,
    ArpOp,
    Proto,
    SrcPort,
    DstPort,
    EitherPort,
    Ttl,
    /// TCP window (only TCP frames match).
    TcpWindow,
    /// TCP options length in bytes (only TCP frames match).
    TcpOptionsLen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BoolField {
    Syn,
    Ack,
    Fin,
    Rst,
    Psh,
    HasPayload,
    ChecksumsOk,
}

#[derive(Clone, Debug, PartialEq)]
enum Cond {
    Mac(MacField, Vec<[u8; 6]>),
    Net(NetField, Vec<(IpAddr, u8)>),
    Num(NumField, Vec<u32>),
    Bool(BoolField, bool),
    /// The payload starts with one of these byte strings.
    Prefix(Vec<Vec<u8>>),
}

/// A compiled frame matcher: all conditions must hold; within one condition any value may.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matcher {
    conds: Vec<Cond>,
    /// The matcher as written, with references resolved, e.g. `{dst_port=80, syn=true}`.
    pub desc: String,
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.desc)
    }
}

fn any_net(ip: Option<IpAddr>, nets: &[(IpAddr, u8)]) -> bool {
    ip.is_some_and(|ip| nets.iter().any(|(n, l)| ip_in_net(ip, *n, *l)))
}

impl Matcher {
    /// A matcher that matches every frame.
    pub fn all() -> Matcher {
        Matcher {
            conds: Vec::new(),
            desc: "{}".to_string(),
        }
    }

    pub fn matches(&self, f: &FrameInfo) -> bool {
        self.conds.iter().all(|c| cond_matches(c, f))
    }
}

fn cond_matches(c: &Cond, f: &FrameInfo) -> bool {
    let arp = f.arp.as_ref();
    match c {
        Cond::Mac(which, macs) => {
            let v = match which {
                MacField::EthSrc => f.eth_src,
                MacField::EthDst => f.eth_dst,
                MacField::ArpSender => arp.map(|a| a.sender_mac),
                MacField::ArpTarget => arp.map(|a| a.target_mac),
            };
            v.is_some_and(|v| macs.contains(&v))
        }
        Cond::Net(which, nets) => {
            let asip = |ip: Option<std::net::Ipv4Addr>| ip.map(IpAddr::V4);
            match which {
                NetField::Src => any_net(f.ip_src, nets),
                NetField::Dst => any_net(f.ip_dst, nets),
                NetField::Either => any_net(f.ip_src, nets) || any_net(f.ip_dst, nets),
                NetField::From => {
                    any_net(f.ip_src, nets) || any_net(asip(arp.map(|a| a.sender_ip)), nets)
                }
                NetField::To => {
                    any_net(f.ip_dst, nets) || any_net(asip(arp.map(|a| a.target_ip)), nets)
                }
                NetField::ArpSender => any_net(asip(arp.map(|a| a.sender_ip)), nets),
                NetField::ArpTarget => any_net(asip(arp.map(|a| a.target_ip)), nets),
            }
        }
        Cond::Num(which, vals) => {
            let has = |v: Option<u32>| v.is_some_and(|v| vals.contains(&v));
            match which {
                NumField::Ethertype => has(f.ethertype.map(u32::from)),
                NumField::Vlan => has(f.vlan.map(u32::from)),
                NumField::ArpOp => has(arp.map(|a| u32::from(a.op))),
                NumField::Proto => has(f.proto.map(u32::from)),
                NumField::SrcPort => has(f.src_port.map(u32::from)),
                NumField::DstPort => has(f.dst_port.map(u32::from)),
                NumField::EitherPort => {
                    has(f.src_port.map(u32::from)) || has(f.dst_port.map(u32::from))
                }
                NumField::Ttl => has(f.ttl.map(u32::from)),
                NumField::TcpWindow => has(f.tcp.as_ref().map(|t| u32::from(t.window))),
                NumField::TcpOptionsLen => has(f
                    .tcp
                    .as_ref()
                    .and_then(|t| u32::try_from(t.options_len).ok())),
            }
        }
        Cond::Prefix(prefixes) => prefixes
            .iter()
            .any(|p| !p.is_empty() && f.payload_head.as_slice().starts_with(p)),
        Cond::Bool(which, want) => {
            let tcp = f.tcp.as_ref();
            let v = match which {
                BoolField::Syn => tcp.is_some_and(|t| t.syn),
                BoolField::Ack => tcp.is_some_and(|t| t.ack),
                BoolField::Fin => tcp.is_some_and(|t| t.fin),
                BoolField::Rst => tcp.is_some_and(|t| t.rst),
                BoolField::Psh => tcp.is_some_and(|t| t.psh),
                BoolField::HasPayload => f.payload_len > 0,
                BoolField::ChecksumsOk => f.checksums_valid(),
            };
            // A TCP flag condition only matches TCP frames, whichever value is asked for.
            let needs_tcp = matches!(
                which,
                BoolField::Syn | BoolField::Ack | BoolField::Fin | BoolField::Rst | BoolField::Psh
            );
            (!needs_tcp || tcp.is_some()) && v == *want
        }
    }
}

fn named_number(key: &str, s: &str) -> Option<u32> {
    let named = match (key, s.to_ascii_lowercase().as_str()) {
        ("ethertype", "ipv4" | "ip") => Some(u32::from(decode::ETHERTYPE_IPV4)),
        ("ethertype", "ipv6" | "ip6") => Some(u32::from(decode::ETHERTYPE_IPV6)),
        ("ethertype", "arp") => Some(u32::from(decode::ETHERTYPE_ARP)),
        ("arp_op", "request") => Some(1),
        ("arp_op", "reply") => Some(2),
        ("proto", "tcp") => Some(u32::from(decode::PROTO_TCP)),
        ("proto", "udp") => Some(u32::from(decode::PROTO_UDP)),
        ("proto", "icmp") => Some(u32::from(decode::PROTO_ICMP)),
        ("proto", "icmpv6" | "icmp6") => Some(u32::from(decode::PROTO_ICMPV6)),
        _ => None,
    };
    named.or_else(|| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        }
    })
}

fn scalar_text(refs: &Refs, v: &Scalar) -> Result<String, String> {
    match v {
        Scalar::Str(s) => refs.resolve(s).map_err(String::from),
        Scalar::Int(i) => Ok(i.to_string()),
        Scalar::Bool(b) => Ok(b.to_string()),
    }
}

/// Compiles a matcher table. Errors are `(".key", message)`.
pub fn compile_matcher(
    m: &MatchTable,
    refs: &Refs,
    hosts: &[String],
) -> Result<Matcher, (String, String)> {
    let mut conds = Vec::new();
    let mut desc = Vec::new();
    for (key, values) in m.fields() {
        let err = |msg: String| (format!(".{key}"), msg);
        let texts = values
            .iter()
            .map(|v| scalar_text(refs, v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let shown = if key == "payload_prefix" {
            // Escaped: the text may hold CR, LF, NUL.
            format!("{texts:?}")
        } else if texts.len() == 1 {
            texts.first().cloned().unwrap_or_default()
        } else {
            format!("[{}]", texts.join(", "))
        };
        desc.push(format!("{key}={shown}"));
        if key == "payload_prefix" {
            let mut prefixes = Vec::new();
            for t in &texts {
                if t.is_empty() || t.len() > decode::PAYLOAD_HEAD {
                    return Err(err(format!(
                        "expected 1-{} bytes of text, got {} bytes",
                        decode::PAYLOAD_HEAD,
                        t.len()
                    )));
                }
                prefixes.push(t.as_bytes().to_vec());
            }
            conds.push(Cond::Prefix(prefixes));
            continue;
        }
        let mac_field = match key {
            "eth_src" => Some(MacField::EthSrc),
            "eth_dst" => Some(MacField::EthDst),
            "arp_sender_mac" => Some(MacField::ArpSender),
            "arp_target_mac" => Some(MacField::ArpTarget),
            _ => None,
        };
        if let Some(mf) = mac_field {
            let macs = texts
                .iter()
                .map(|t| {
                    parse_mac(t).ok_or_else(|| {
                        err(format!(
                            "expected a MAC such as \"02:00:00:00:00:01\" or \"{{mac.HOST}}\", got {t:?}"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            conds.push(Cond::Mac(mf, macs));
            continue;
        }
        let net_field = match key {
            "ip_src" => Some(NetField::Src),
            "ip_dst" => Some(NetField::Dst),
            "ip" => Some(NetField::Either),
            "arp_sender_ip" => Some(NetField::ArpSender),
            "arp_target_ip" => Some(NetField::ArpTarget),
            _ => None,
        };
        if let Some(nf) = net_field {
            let nets = texts
                .iter()
                .map(|t| {
                    parse_net(t).ok_or_else(|| {
                        err(format!(
                            "expected an IP address, \"ADDR/LEN\" or \"{{ip.HOST}}\", got {t:?}"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            conds.push(Cond::Net(nf, nets));
            continue;
        }
        if key == "from" || key == "to" {
            let mut nets = Vec::new();
            for t in &texts {
                if !hosts.contains(t) {
                    return Err(err(format!(
                        "expected a host name ({}), got {t:?}",
                        hosts.join(", ")
                    )));
                }
                let ips = refs.ips.get(t).cloned().unwrap_or_default();
                if ips.is_empty() {
                    return Err(err(format!(
                        "host {t:?} has no address in this file; match on eth_src = \"{{mac.{t}}}\" instead"
                    )));
                }
                for (_, ip) in ips {
                    nets.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
                }
            }
            let nf = if key == "from" {
                NetField::From
            } else {
                NetField::To
            };
            conds.push(Cond::Net(nf, nets));
            continue;
        }
        let num_field = match key {
            "ethertype" => Some((NumField::Ethertype, 0xffff)),
            "vlan" => Some((NumField::Vlan, 4095)),
            "arp_op" => Some((NumField::ArpOp, 0xffff)),
            "proto" => Some((NumField::Proto, 255)),
            "src_port" => Some((NumField::SrcPort, 65535)),
            "dst_port" => Some((NumField::DstPort, 65535)),
            "port" => Some((NumField::EitherPort, 65535)),
            "ttl" => Some((NumField::Ttl, 255)),
            "tcp_window" => Some((NumField::TcpWindow, 65535)),
            "tcp_options_len" => Some((NumField::TcpOptionsLen, 40)),
            _ => None,
        };
        if let Some((nf, max)) = num_field {
            let nums = texts
                .iter()
                .map(|t| {
                    named_number(key, t).filter(|n| *n <= max).ok_or_else(|| {
                        let names = match key {
                            "ethertype" => " or \"arp\", \"ipv4\", \"ipv6\"",
                            "arp_op" => " or \"request\", \"reply\"",
                            "proto" => " or \"tcp\", \"udp\", \"icmp\", \"icmpv6\"",
                            _ => "",
                        };
                        err(format!("expected a number 0..={max}{names}, got {t:?}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            conds.push(Cond::Num(nf, nums));
            continue;
        }
        let bool_field = match key {
            "syn" => BoolField::Syn,
            "ack" => BoolField::Ack,
            "fin" => BoolField::Fin,
            "rst" => BoolField::Rst,
            "psh" => BoolField::Psh,
            "has_payload" => BoolField::HasPayload,
            _ => BoolField::ChecksumsOk,
        };
        let want = matches!(values.first(), Some(Scalar::Bool(true)));
        conds.push(Cond::Bool(bool_field, want));
    }
    Ok(Matcher {
        conds,
        desc: format!("{{{}}}", desc.join(", ")),
    })
}

fn parse_net(t: &str) -> Option<(IpAddr, u8)> {
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some((ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    parse_cidr(t)
}

/// The kinds of expectation.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Count {
        m: Matcher,
        exact: Option<u64>,
        min: Option<u64>,
        max: Option<u64>,
    },
    Every {
        m: Matcher,
        also: Matcher,
        min: u64,
    },
    None {
        m: Matcher,
    },
    Sticky {
        m: Matcher,
        key: Field,
        value: Field,
        min_keys: u64,
    },
    Share {
        m: Matcher,
        field: Field,
        shares: Vec<(String, f64)>,
        tolerance: f64,
        min: u64,
    },
    Order {
        first: Matcher,
        then: Matcher,
    },
    ChecksumsValid {
        m: Matcher,
        min: u64,
    },
}

/// A compiled `[[expect]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    pub name: String,
    pub capture: String,
    pub kind: Kind,
    /// The part of the capture it looks at (`after`/`before` a named step).
    pub window: Window,
}

/// A step an expectation window refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRef {
    /// 0-based position among the scenario's steps.
    pub index: usize,
    /// The step's `name`.
    pub name: String,
}

/// `after = "step"`: frames captured once that step finished; `before = "step"`: frames
/// captured before that step started. Both: the frames in between. Neither: the whole capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub after: Option<StepRef>,
    pub before: Option<StepRef>,
}

/// When one step ran: wall-clock start and end, since the epoch (the clock pcap timestamps
/// use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepTime {
    pub start: Duration,
    pub end: Duration,
}

impl Window {
    /// True for the whole capture.
    pub fn is_all(&self) -> bool {
        self.after.is_none() && self.before.is_none()
    }

    /// The time bounds `[from, to)` of the window, given when each step ran (`None` for a
    /// step that did not run). A window whose step did not run cannot be evaluated: the error
    /// says which step.
    pub fn bounds(
        &self,
        times: &[Option<StepTime>],
    ) -> Result<(Option<Duration>, Option<Duration>), String> {
        let when = |r: &StepRef| {
            times.get(r.index).copied().flatten().ok_or_else(|| {
                format!(
                    "the window needs step {} {:?}, which did not run",
                    r.index + 1,
                    r.name
                )
            })
        };
        let from = self.after.as_ref().map(when).transpose()?.map(|t| t.end);
        let to = self.before.as_ref().map(when).transpose()?.map(|t| t.start);
        Ok((from, to))
    }

    /// The frames of `frames` inside `[from, to)` (their `index` still refers to the whole
    /// capture).
    pub fn select(
        frames: &[FrameInfo],
        from: Option<Duration>,
        to: Option<Duration>,
    ) -> Vec<FrameInfo> {
        frames
            .iter()
            .filter(|f| from.is_none_or(|t| f.ts >= t) && to.is_none_or(|t| f.ts < t))
            .cloned()
            .collect()
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.after, &self.before) {
            (None, None) => Ok(()),
            (Some(a), None) => write!(f, "after {:?}", a.name),
            (None, Some(b)) => write!(f, "before {:?}", b.name),
            (Some(a), Some(b)) => write!(f, "after {:?} and before {:?}", a.name, b.name),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Count { m, exact, min, max } => {
                write!(f, "count {m}")?;
                if let Some(x) = exact {
                    write!(f, " == {x}")?;
                }
                if let Some(x) = min {
                    write!(f, " >= {x}")?;
                }
                if let Some(x) = max {
                    write!(f, " <= {x}")?;
                }
                Ok(())
            }
            Kind::Every { m, also, .. } => write!(f, "every {m} also {also}"),
            Kind::None { m } => write!(f, "none {m}"),
            Kind::Sticky { m, key, value, .. } => {
                write!(f, "sticky {m}: {} → {}", key.name(), value.name())
            }
            Kind::Share {
                m,
                field,
                shares,
                tolerance,
                ..
            } => {
                let s: Vec<String> = shares.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(
                    f,
                    "share {m} by {}: {} ±{tolerance}",
                    field.name(),
                    s.join(", ")
                )
            }
            Kind::Order { first, then } => write!(f, "order {first} before {then}"),
            Kind::ChecksumsValid { m, .. } => write!(f, "checksums_valid {m}"),
        }
    }
}

fn parse_field(s: &str, key: &str) -> Result<Field, (String, String)> {
    Field::parse(s).ok_or_else(|| {
        (
            format!(".{key}"),
            format!(
                "expected a field name ({}), got {s:?}",
                FIELD_NAMES.map(|(n, _)| n).join(", ")
            ),
        )
    })
}

/// Compiles one `[[expect]]` table. Errors are `(".sub.key", message)`.
pub fn compile(
    x: &ExpectSpec,
    refs: &Refs,
    hosts: &[String],
) -> Result<Expectation, (String, String)> {
    let given = [
        x.count.is_some(),
        x.every.is_some(),
        x.none.is_some(),
        x.sticky.is_some(),
        x.share.is_some(),
        x.order.is_some(),
        x.checksums_valid.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err((
            String::new(),
            format!(
                "expected exactly one of count, every, none, sticky, share, order, checksums_valid; got {given}"
            ),
        ));
    }
    let cm = |m: &MatchTable, k: &str| {
        compile_matcher(m, refs, hosts).map_err(|(s, msg)| (format!(".{k}{s}"), msg))
    };
    let kind = if let Some(c) = &x.count {
        if c.exact.is_none() && c.min.is_none() && c.max.is_none() {
            return Err((
                ".count".to_string(),
                "expected exact, min or max".to_string(),
            ));
        }
        Kind::Count {
            m: cm(&c.matcher, "count.match")?,
            exact: c.exact,
            min: c.min,
            max: c.max,
        }
    } else if let Some(c) = &x.every {
        Kind::Every {
            m: cm(&c.matcher, "every.match")?,
            also: cm(&c.also, "every.also")?,
            min: c.min,
        }
    } else if let Some(c) = &x.none {
        Kind::None {
            m: cm(&c.matcher, "none.match")?,
        }
    } else if let Some(c) = &x.sticky {
        Kind::Sticky {
            m: cm(&c.matcher, "sticky.match")?,
            key: parse_field(&c.key, "sticky.key")?,
            value: parse_field(&c.value, "sticky.value")?,
            min_keys: c.min_keys,
        }
    } else if let Some(c) = &x.share {
        let field = parse_field(&c.field, "share.field")?;
        let mut shares = Vec::new();
        for (k, v) in &c.shares {
            let key = refs
                .resolve(k)
                .map_err(|m| (format!(".share.shares.{k}"), m.into()))?;
            if !(0.0..=1.0).contains(v) {
                return Err((
                    format!(".share.shares.{k}"),
                    format!("expected a fraction between 0 and 1, got {v}"),
                ));
            }
            shares.push((canonical_value(field, &key), *v));
        }
        let sum: f64 = shares.iter().map(|(_, v)| v).sum();
        if shares.is_empty() || (sum - 1.0).abs() > 0.01 {
            return Err((
                ".share.shares".to_string(),
                format!("expected fractions per value adding up to 1, got a sum of {sum}"),
            ));
        }
        if !(0.0..=1.0).contains(&c.tolerance) {
            return Err((
                ".share.tolerance".to_string(),
                format!("expected a fraction between 0 and 1, got {}", c.tolerance),
            ));
        }
        Kind::Share {
            m: cm(&c.matcher, "share.match")?,
            field,
            shares,
            tolerance: c.tolerance,
            min: c.min,
        }
    } else if let Some(c) = &x.order {
        Kind::Order {
            first: cm(&c.first, "order.first")?,
            then: cm(&c.then, "order.then")?,
        }
    } else if let Some(c) = &x.checksums_valid {
        Kind::ChecksumsValid {
            m: cm(&c.matcher, "checksums_valid.match")?,
            min: c.min,
        }
    } else {
        return Err((String::new(), "no expectation kind".to_string()));
    };
    let name = x.name.clone().unwrap_or_else(|| kind.to_string());
    Ok(Expectation {
        name,
        capture: x.capture.clone(),
        kind,
        window: Window::default(),
    })
}

/// The result of one expectation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub pass: bool,
    /// What was found, e.g. "12 frames matched; expected at least 14".
    pub detail: String,
    /// Indices (into the capture) of the frames that violate the expectation.
    pub offending: Vec<usize>,
}

fn outcome(pass: bool, detail: String, offending: Vec<usize>) -> Outcome {
    Outcome {
        pass,
        detail,
        offending,
    }
}

/// Evaluates an expectation over the frames of its capture.
pub fn evaluate(kind: &Kind, frames: &[FrameInfo]) -> Outcome {
    let matching =
        |m: &Matcher| -> Vec<&FrameInfo> { frames.iter().filter(|f| m.matches(f)).collect() };
    match kind {
        Kind::Count { m, exact, min, max } => {
            let hits = matching(m);
            let n = hits.len() as u64;
            let mut why = Vec::new();
            if let Some(x) = exact
                && n != *x
            {
                why.push(format!("expected exactly {x}"));
            }
            if let Some(x) = min
                && n < *x
            {
                why.push(format!("expected at least {x}"));
            }
            if let Some(x) = max
                && n > *x
            {
                why.push(format!("expected at most {x}"));
            }
            let offending = if why.is_empty() || min.is_some_and(|x| n < x) {
                Vec::new()
            } else {
                hits.iter().map(|f| f.index).collect()
            };
            let detail = format!("{n} of {} frames matched {m}", frames.len());
            if why.is_empty() {
                outcome(true, detail, Vec::new())
            } else {
                outcome(false, format!("{detail}; {}", why.join(", ")), offending)
            }
        }
        Kind::Every { m, also, min } => {
            let hits = matching(m);
            let bad: Vec<usize> = hits
                .iter()
                .filter(|f| !also.matches(f))
                .map(|f| f.index)
                .collect();
            let n = hits.len() as u64;
            if n < *min {
                outcome(
                    false,
                    format!(
                        "{n} frames matched {m}; expected at least {min} (so that \"every\" is not vacuous)"
                    ),
                    Vec::new(),
                )
            } else if bad.is_empty() {
                outcome(
                    true,
                    format!("all {n} frames matching {m} also match {also}"),
                    Vec::new(),
                )
            } else {
                outcome(
                    false,
                    format!(
                        "{} of {n} frames matching {m} do not match {also}",
                        bad.len()
                    ),
                    bad,
                )
            }
        }
        Kind::None { m } => {
            let hits: Vec<usize> = matching(m).iter().map(|f| f.index).collect();
            if hits.is_empty() {
                outcome(
                    true,
                    format!("no frame of {} matched {m}", frames.len()),
                    hits,
                )
            } else {
                outcome(
                    false,
                    format!("{} frames matched {m}; expected none", hits.len()),
                    hits,
                )
            }
        }
        Kind::Sticky {
            m,
            key,
            value,
            min_keys,
        } => {
            let mut seen: BTreeMap<String, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
            for f in matching(m) {
                if let (Some(k), Some(v)) = (key.value(f), value.value(f)) {
                    seen.entry(k)
                        .or_default()
                        .entry(v)
                        .or_default()
                        .push(f.index);
                }
            }
            let mut bad = Vec::new();
            let mut why = Vec::new();
            for (k, vals) in &seen {
                if vals.len() > 1 {
                    why.push(format!(
                        "{} {k} → {} {}",
                        key.name(),
                        value.name(),
                        vals.keys().cloned().collect::<Vec<_>>().join(" and ")
                    ));
                    // The first value is taken as the established one; the rest offend.
                    for idx in vals.values().skip(1) {
                        bad.extend(idx.iter().copied());
                    }
                }
            }
            bad.sort_unstable();
            let nkeys = seen.len() as u64;
            if !why.is_empty() {
                outcome(false, format!("not sticky: {}", why.join("; ")), bad)
            } else if nkeys < *min_keys {
                outcome(
                    false,
                    format!(
                        "{nkeys} distinct {} seen in frames matching {m}; expected at least {min_keys}",
                        key.name()
                    ),
                    Vec::new(),
                )
            } else {
                outcome(
                    true,
                    format!("each of {nkeys} {} kept one {}", key.name(), value.name()),
                    Vec::new(),
                )
            }
        }
        Kind::Share {
            m,
            field,
            shares,
            tolerance,
            min,
        } => {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let mut unexpected = Vec::new();
            let expected: BTreeSet<&String> = shares.iter().map(|(k, _)| k).collect();
            for f in matching(m) {
                if let Some(v) = field.value(f) {
                    if !expected.contains(&v) {
                        unexpected.push(f.index);
                    }
                    *counts.entry(v).or_default() += 1;
                }
            }
            let total: u64 = counts.values().sum();
            let got: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let got = format!("{} ({total} frames)", got.join(", "));
            if total < *min || total == 0 {
                return outcome(
                    false,
                    format!(
                        "{total} frames matched {m} with a {}; expected at least {}",
                        field.name(),
                        (*min).max(1)
                    ),
                    Vec::new(),
                );
            }
            let mut why = Vec::new();
            for (k, want) in shares {
                let have = counts.get(k).copied().unwrap_or(0) as f64 / total as f64;
                if (have - want).abs() > *tolerance {
                    why.push(format!("{k} got {have:.2}, expected {want:.2}±{tolerance}"));
                }
            }
            if !unexpected.is_empty() {
                why.push(format!(
                    "{} frames with an unlisted {}",
                    unexpected.len(),
                    field.name()
                ));
            }
            if why.is_empty() {
                outcome(
                    true,
                    format!("shares by {}: {got}", field.name()),
                    Vec::new(),
                )
            } else {
                outcome(
                    false,
                    format!("{}; counted {got}", why.join("; ")),
                    unexpected,
                )
            }
        }
        Kind::Order { first, then } => {
            let a = frames.iter().find(|f| first.matches(f)).map(|f| f.index);
            let b = frames.iter().find(|f| then.matches(f)).map(|f| f.index);
            match (a, b) {
                (Some(a), Some(b)) if a < b => outcome(
                    true,
                    format!("first {first} at #{a}, first {then} at #{b}"),
                    Vec::new(),
                ),
                (Some(a), Some(b)) => outcome(
                    false,
                    format!("first {then} at #{b} comes before the first {first} at #{a}"),
                    vec![b, a],
                ),
                (None, _) => outcome(false, format!("no frame matched {first}"), Vec::new()),
                (Some(_), None) => outcome(false, format!("no frame matched {then}"), Vec::new()),
            }
        }
        Kind::ChecksumsValid { m, min } => {
            let hits = matching(m);
            let bad: Vec<usize> = hits
                .iter()
                .filter(|f| !f.checksums_valid())
                .map(|f| f.index)
                .collect();
            let n = hits.len() as u64;
            if n < *min {
                outcome(
                    false,
                    format!("{n} frames matched {m}; expected at least {min}"),
                    Vec::new(),
                )
            } else if bad.is_empty() {
                outcome(
                    true,
                    format!("all {n} frames matching {m} have valid checksums"),
                    Vec::new(),
                )
            } else {
                outcome(
                    false,
                    format!(
                        "{} of {n} frames matching {m} have bad checksums (offloads on?)",
                        bad.len()
                    ),
                    bad,
                )
            }
        }
    }
}
