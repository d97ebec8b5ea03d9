//! Validation of `[[step]]`: step kinds, background steps and their joins, progress labels.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

pub(super) fn plan_steps(
    sc: &Scenario,
    refs: &Refs,
    hosts: &[String],
    procs: &[String],
    ifaces: &BTreeMap<String, Vec<String>>,
    e: &mut Errs,
) -> Vec<PlannedStep> {
    let mut out = Vec::new();
    // Blackholes set by earlier steps and not lifted yet: (host, target).
    let mut holes: Vec<(String, crate::fault::BlackholeTarget)> = Vec::new();
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
            s.replay.is_some(),
            s.tcp_sessions.is_some(),
            s.join.is_some(),
            s.link_down.is_some(),
            s.link_up.is_some(),
            s.blackhole.is_some(),
            s.lift_blackhole.is_some(),
            s.signal.is_some(),
            s.inject.is_some(),
            s.exited.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            e.push(
                &key,
                format!(
                    "expected exactly one of http_get, dns, tcp_connect, load, tcp_sessions, join, stop, start, penctl, run, wait, replay, link_down, link_up, blackhole, lift_blackhole, signal, inject, exited; got {given}"
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
            StepAction::HttpGet {
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
            StepAction::Dns {
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
            let Some(addr) = socket_field(refs, e, &k, &t.addr) else {
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
            StepAction::TcpConnect {
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
            StepAction::Load {
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
            let Some(addr) = socket_field(refs, e, &k, &t.addr) else {
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
            StepAction::TcpSessions {
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
            StepAction::Join(j.clone())
        } else if let Some(p) = s.stop.as_ref().or(s.start.as_ref()) {
            let which = if s.stop.is_some() { "stop" } else { "start" };
            if !procs.contains(p) {
                e.push(
                    format!("{key}.{which}"),
                    format!("expected a process name ({}), got {p:?}", procs.join(", ")),
                );
            }
            if s.stop.is_some() {
                StepAction::Stop(p.clone())
            } else {
                StepAction::Start(p.clone())
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
            StepAction::Penctl {
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
            StepAction::Run {
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
            StepAction::Wait(ms(w))
        } else if let Some(r) = &s.replay {
            let k = format!("{key}.replay");
            check_host(e, &format!("{k}.host"), &r.host, hosts);
            match crate::replay::plan_replay(r, refs, &sim_root(&e.file), procs) {
                Ok(p) => StepAction::Replay(Box::new(p)),
                Err(list) => {
                    for (sub, m) in list {
                        e.push(format!("{k}.{sub}"), m);
                    }
                    continue;
                }
            }
        } else if let Some(l) = s.link_down.as_ref().or(s.link_up.as_ref()) {
            let up = s.link_up.is_some();
            let k = format!("{key}.{}", if up { "link_up" } else { "link_down" });
            match plan_link_end(l, ifaces) {
                Ok((node, iface)) => {
                    StepAction::Fault(crate::fault::Fault::Link { node, iface, up })
                }
                Err(m) => {
                    e.push(&k, m);
                    continue;
                }
            }
        } else if let Some(b) = s.blackhole.as_ref().or(s.lift_blackhole.as_ref()) {
            let lift = s.lift_blackhole.is_some();
            let k = format!(
                "{key}.{}",
                if lift { "lift_blackhole" } else { "blackhole" }
            );
            check_host(e, &format!("{k}.host"), &b.host, hosts);
            let proto = match b.proto.as_deref().map(crate::fault::L4::parse) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(m)) => {
                    e.push(format!("{k}.proto"), m);
                    continue;
                }
            };
            if b.port == Some(0) {
                e.push(format!("{k}.port"), "expected a port 1..65535, got 0");
                continue;
            }
            let target = crate::fault::BlackholeTarget {
                proto,
                port: b.port,
            };
            let hole = (b.host.clone(), target.clone());
            if lift {
                match holes.iter().position(|h| *h == hole) {
                    Some(j) => {
                        holes.remove(j);
                    }
                    None => {
                        let open: Vec<String> =
                            holes.iter().map(|(h, t)| format!("{t} on {h}")).collect();
                        e.push(
                            &k,
                            format!(
                                "no earlier blackhole step drops {target} on {} (blackholes in place: {})",
                                b.host,
                                if open.is_empty() { "none".to_string() } else { open.join(", ") }
                            ),
                        );
                    }
                }
            } else if holes.contains(&hole) {
                e.push(
                    &k,
                    format!(
                        "{target} on {} is already blackholed by an earlier step",
                        b.host
                    ),
                );
            } else {
                holes.push(hole);
            }
            StepAction::Fault(crate::fault::Fault::Blackhole {
                host: b.host.clone(),
                target,
                lift,
            })
        } else if let Some(sg) = &s.signal {
            let k = format!("{key}.signal");
            if !procs.contains(&sg.process) {
                e.push(
                    format!("{k}.process"),
                    format!(
                        "expected a process name ({}), got {:?}",
                        procs.join(", "),
                        sg.process
                    ),
                );
            }
            match crate::fault::FaultSignal::parse(&sg.signal) {
                Ok(signal) => StepAction::Fault(crate::fault::Fault::Signal {
                    process: sg.process.clone(),
                    signal,
                }),
                Err(m) => {
                    e.push(format!("{k}.signal"), m);
                    continue;
                }
            }
        } else if let Some(x) = &s.exited {
            let k = format!("{key}.exited");
            if !procs.contains(&x.process) {
                e.push(
                    format!("{k}.process"),
                    format!(
                        "expected a process name ({}), got {:?}",
                        procs.join(", "),
                        x.process
                    ),
                );
            }
            if x.within_ms == 0 || x.within_ms > 60_000 {
                e.push(format!("{k}.within_ms"), "expected 1..60000");
            }
            StepAction::Fault(crate::fault::Fault::Exited {
                process: x.process.clone(),
                within: Duration::from_millis(x.within_ms),
                expect_exit: x.expect_exit,
            })
        } else if let Some(inj) = &s.inject {
            let k = format!("{key}.inject");
            match plan_inject(inj, refs, hosts, ifaces, &sim_root(&e.file)) {
                Ok(p) => StepAction::Inject(Box::new(p)),
                Err(list) => {
                    for (sub, m) in list {
                        e.push(format!("{k}{sub}"), m);
                    }
                    continue;
                }
            }
        } else {
            continue;
        };
        let timeout_ok = match &kind {
            StepAction::HttpGet { timeout, .. }
            | StepAction::Dns { timeout, .. }
            | StepAction::TcpConnect { timeout, .. }
            | StepAction::Load { timeout, .. }
            | StepAction::TcpSessions { timeout, .. }
            | StepAction::Penctl { timeout, .. }
            | StepAction::Run { timeout, .. } => {
                !timeout.is_zero() && *timeout <= Duration::from_secs(60)
            }
            StepAction::Inject(i) => !i.timeout.is_zero() && i.timeout <= Duration::from_secs(60),
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
        out.push(PlannedStep {
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

/// Validates an `inject` step; errors are (".key" or "", message).
fn plan_inject(
    t: &InjectTable,
    refs: &Refs,
    hosts: &[String],
    ifaces: &BTreeMap<String, Vec<String>>,
    root: &std::path::Path,
) -> Result<PlannedInject, Vec<(String, String)>> {
    use crate::inject::{Generate, MAX_FRAMES, Pace, Rewrite};
    let mut e: Vec<(String, String)> = Vec::new();
    let res = |k: &str, v: &Option<String>, e: &mut Vec<(String, String)>| -> Option<String> {
        let v = v.as_ref()?;
        refs.resolve(v)
            .map_err(|m| e.push((format!(".{k}"), m.to_string())))
            .ok()
    };
    if !hosts.contains(&t.host) {
        e.push((
            ".host".into(),
            format!(
                "expected a host name ({}), got {:?}",
                hosts.join(", "),
                t.host
            ),
        ));
    }
    let list = ifaces.get(&t.host).cloned().unwrap_or_default();
    let iface = match &t.iface {
        Some(i) if list.contains(i) => i.clone(),
        Some(i) => {
            e.push((
                ".iface".into(),
                format!(
                    "{} has no link interface {i:?} (it has {})",
                    t.host,
                    list.join(", ")
                ),
            ));
            String::new()
        }
        None if list.len() == 1 => list[0].clone(),
        None => {
            e.push((
                ".iface".into(),
                format!(
                    "{} has {} link interfaces ({}): say which with iface",
                    t.host,
                    list.len(),
                    list.join(", ")
                ),
            ));
            String::new()
        }
    };
    if t.count == 0 || t.count > MAX_FRAMES {
        e.push((
            ".count".into(),
            format!("expected 1..={MAX_FRAMES} frames, got {}", t.count),
        ));
    }
    let ip = |k: &str, v: Option<String>, e: &mut Vec<(String, String)>| -> Option<IpAddr> {
        let v = v?;
        v.parse()
            .map_err(|_| {
                e.push((
                    format!(".{k}"),
                    format!("expected an IP address, got {v:?}"),
                ))
            })
            .ok()
    };
    let mac = |k: &str, v: Option<String>, e: &mut Vec<(String, String)>| -> Option<[u8; 6]> {
        let v = v?;
        crate::decode::parse_mac(&v)
            .ok_or_else(|| {
                e.push((
                    format!(".{k}"),
                    format!(
                        "expected a MAC like \"02:00:00:00:00:01\" or \"{{mac.HOST}}\", got {v:?}"
                    ),
                ))
            })
            .ok()
    };
    let eth_src = res("eth_src", &t.eth_src, &mut e);
    let eth_dst = res("eth_dst", &t.eth_dst, &mut e);
    let ip_src = res("ip_src", &t.ip_src, &mut e);
    let ip_dst = res("ip_dst", &t.ip_dst, &mut e);
    let rewrite = Rewrite {
        eth_src: mac("eth_src", eth_src, &mut e),
        eth_dst: mac("eth_dst", eth_dst, &mut e),
        ip_src: ip("ip_src", ip_src, &mut e),
        ip_dst: ip("ip_dst", ip_dst, &mut e),
    };
    let src = res("src", &t.src, &mut e);
    let dst = res("dst", &t.dst, &mut e);
    let source = match (&t.pcap, &t.generate) {
        (Some(p), None) => {
            let name = res("pcap", &Some(p.clone()), &mut e).unwrap_or_default();
            let path = root.join(&name);
            if !path.is_file() {
                e.push((
                    ".pcap".into(),
                    format!(
                        "expected an existing Ethernet pcap/pcapng file (relative to {} or absolute), got {name:?}",
                        root.display()
                    ),
                ));
            }
            let filter = res("filter", &t.filter, &mut e);
            if let Some(f) = &filter
                && let Err(m) = crate::capture::check_filter(f)
            {
                e.push((
                    ".filter".into(),
                    format!("filter {f:?}: not a valid BPF expression: {m}"),
                ));
            }
            for (k, given) in [
                ("generate keys src", src.is_some()),
                ("dst", dst.is_some()),
                ("dport", t.dport.is_some()),
            ] {
                if given {
                    e.push((
                        ".pcap".into(),
                        format!("{k}: only for generate, not with pcap"),
                    ));
                }
            }
            Some(InjectSource::Pcap { path, name, filter })
        }
        (None, Some(g)) => {
            if t.filter.is_some() {
                e.push((
                    ".filter".into(),
                    "a filter selects a pcap's frames: give pcap, or drop filter".into(),
                ));
            }
            let dst_ip = ip("dst", dst, &mut e);
            let need = |what: &str, e: &mut Vec<(String, String)>| {
                e.push((format!(".{what}"), format!("generate = {g:?} needs {what}")));
            };
            match g.as_str() {
                "syn" => {
                    let net = src.as_deref().and_then(crate::scenario::parse_cidr);
                    if src.is_some() && net.is_none() {
                        e.push((
                            ".src".into(),
                            format!(
                                "expected the spoofed sources as \"NET/LEN\", got {:?}",
                                src.unwrap_or_default()
                            ),
                        ));
                    }
                    match (net, dst_ip, t.dport) {
                        (Some(n), Some(d), Some(p)) if n.0.is_ipv4() == d.is_ipv4() => {
                            Some(InjectSource::Generate(Generate::Syn {
                                src: n,
                                dst: d,
                                dport: p,
                            }))
                        }
                        (Some(_), Some(_), Some(_)) => {
                            e.push((".src".into(), "src and dst must be of one family".into()));
                            None
                        }
                        (n, d, p) => {
                            if n.is_none() && t.src.is_none() {
                                need("src", &mut e);
                            }
                            if d.is_none() && t.dst.is_none() {
                                need("dst", &mut e);
                            }
                            if p.is_none() {
                                need("dport", &mut e);
                            }
                            None
                        }
                    }
                }
                "arp" | "ndp" => {
                    let sender = ip("src", src, &mut e);
                    match (g.as_str(), sender, dst_ip) {
                        ("arp", Some(IpAddr::V4(s)), Some(IpAddr::V4(d))) => {
                            Some(InjectSource::Generate(Generate::Arp {
                                sender: s,
                                target: d,
                            }))
                        }
                        ("ndp", Some(IpAddr::V6(s)), Some(IpAddr::V6(d))) => {
                            Some(InjectSource::Generate(Generate::Ndp {
                                sender: s,
                                target: d,
                            }))
                        }
                        _ => {
                            e.push((
                                ".src".into(),
                                format!(
                                    "generate = {g:?} needs src (the sender) and dst (the address asked for), both {}",
                                    if g == "arp" { "IPv4" } else { "IPv6" }
                                ),
                            ));
                            None
                        }
                    }
                }
                "malformed" => match dst_ip {
                    Some(IpAddr::V4(d)) => {
                        Some(InjectSource::Generate(Generate::Malformed { dst: d }))
                    }
                    _ => {
                        e.push((
                            ".dst".into(),
                            "generate = \"malformed\" needs dst, an IPv4 address".into(),
                        ));
                        None
                    }
                },
                other => {
                    e.push((
                        ".generate".into(),
                        format!(
                            "expected \"syn\", \"arp\", \"ndp\" or \"malformed\", got {other:?}"
                        ),
                    ));
                    None
                }
            }
        }
        _ => {
            e.push((
                String::new(),
                "expected exactly one of pcap (frames of a capture) and generate (\"syn\", \"arp\", \"ndp\", \"malformed\")".into(),
            ));
            None
        }
    };
    let pace = match (t.pace.as_deref(), t.rate_pps) {
        (_, Some(r)) if !(r > 0.0 && r <= 1_000_000.0) => {
            e.push((
                ".rate_pps".into(),
                format!("expected 0 < rate_pps <= 1000000, got {r}"),
            ));
            Pace::Fast
        }
        (None, Some(r)) => Pace::Rate(r),
        (Some(_), Some(_)) => {
            e.push((".pace".into(), "give pace or rate_pps, not both".into()));
            Pace::Fast
        }
        (None | Some("recorded"), None) => Pace::Recorded,
        (Some("fast"), None) => Pace::Fast,
        (Some(x), None) => {
            e.push((
                ".pace".into(),
                format!("expected \"recorded\" or \"fast\" (or rate_pps = N), got {x:?}"),
            ));
            Pace::Fast
        }
    };
    match (e.is_empty(), source) {
        (true, Some(source)) => Ok(PlannedInject {
            host: t.host.clone(),
            iface,
            source,
            rewrite,
            pace,
            count: t.count,
            timeout: Duration::from_millis(t.timeout_ms),
        }),
        _ => Err(e),
    }
}

/// A `link_down`/`link_up` target: `"node:iface"`, or `"node"` when the node has one link.
fn plan_link_end(
    s: &str,
    ifaces: &BTreeMap<String, Vec<String>>,
) -> Result<(String, String), String> {
    let (node, iface) = match s.split_once(':') {
        Some((n, i)) => (n, Some(i)),
        None => (s, None),
    };
    let Some(list) = ifaces.get(node) else {
        let nodes: Vec<&str> = ifaces.keys().map(String::as_str).collect();
        return Err(format!(
            "expected \"NODE\" or \"NODE:IFACE\", a link end of a host or switch ({}), got {s:?}",
            nodes.join(", ")
        ));
    };
    match iface {
        Some(i) if list.iter().any(|x| x == i) => Ok((node.to_string(), i.to_string())),
        Some(i) => Err(format!(
            "{node} has no link interface {i:?} (it has {})",
            list.join(", ")
        )),
        None if list.len() == 1 => Ok((node.to_string(), list[0].clone())),
        None => Err(format!(
            "{node} has {} link interfaces ({}): say which, as \"{node}:IFACE\"",
            list.len(),
            list.join(", ")
        )),
    }
}

/// Every background step has a name and is joined once by a later `join` step; every `join`
/// names an earlier background step.
pub(super) fn check_joins(steps: &[PlannedStep], e: &mut Errs) {
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
        if let StepAction::Join(n) = &st.kind
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
pub fn step_label(k: &StepAction) -> String {
    let from = |src: &Option<IpAddr>| src.map(|s| format!(" from {s}")).unwrap_or_default();
    match k {
        StepAction::HttpGet {
            host,
            addr,
            path,
            src,
            ..
        } => format!("http_get {host}{} → {addr}{path}", from(src)),
        StepAction::Dns {
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
        StepAction::TcpConnect {
            host, addr, expect, ..
        } => format!("tcp_connect {host} → {addr} (expect {expect:?})"),
        StepAction::Load {
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
        StepAction::TcpSessions {
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
        StepAction::Join(n) => format!("join {n}"),
        StepAction::Stop(p) => format!("stop {p}"),
        StepAction::Start(p) => format!("start {p}"),
        StepAction::Penctl {
            host,
            target,
            command,
            ..
        } => format!("penctl {host} {target} {}", command.join(" ")),
        StepAction::Run { host, argv, .. } => format!("run {host}: {}", argv.join(" ")),
        StepAction::Wait(d) => format!("wait {} ms", d.as_millis()),
        StepAction::Fault(f) => f.to_string(),
        StepAction::Inject(i) => {
            let what = match &i.source {
                InjectSource::Pcap { name, filter, .. } => match filter {
                    Some(f) => format!("{name} [{f}]"),
                    None => name.clone(),
                },
                InjectSource::Generate(g) => g.to_string(),
            };
            format!(
                "inject {} frames of {what} out of {}:{}",
                i.count, i.host, i.iface
            )
        }
        StepAction::Replay(r) => format!(
            "replay {} from {} → {}",
            r.sim.trace.display(),
            r.host,
            r.to
        ),
    }
}

/// A step's `addr` ("IP:PORT", references resolved), or the error recorded at `{key}.addr`.
fn socket_field(refs: &Refs, e: &mut Errs, key: &str, addr: &str) -> Option<std::net::SocketAddr> {
    let parsed = refs.resolve(addr).ok().and_then(|a| parse_socket(&a, None));
    if parsed.is_none() {
        e.push(
            format!("{key}.addr"),
            format!("expected \"IP:PORT\", got {addr:?}"),
        );
    }
    parsed
}
