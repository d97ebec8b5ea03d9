//! A simulation's report as markdown, JSON and an SVG chart. Pure and deterministic: the same
//! report gives the same bytes.

use std::fmt::Write as _;
use std::time::Duration;

use super::balance::{SimReport, target_name};
use super::mapping::AddressMap;

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn secs(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}

/// Per-backend share of new flows, in percent.
pub fn shares(r: &SimReport) -> Vec<(String, u64, f64)> {
    let total: u64 = r.totals.values().map(|t| t.new).sum();
    r.backends
        .iter()
        .map(|b| {
            let n = r.totals.get(b).map_or(0, |t| t.new);
            let pct = if total == 0 {
                0.0
            } else {
                100.0 * n as f64 / total as f64
            };
            (target_name(*b), n, pct)
        })
        .collect()
}

/// The report as markdown.
pub fn markdown(r: &SimReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# pen-sim: {}\n", r.trace);
    let _ = writeln!(o, "pen {}\n", r.pen_args.join(" "));
    let _ = writeln!(
        o,
        "{} {} flows simulated ({} TCP sessions without their start and {} flows of the other \
         protocol left out); {} clients, {} of them on more than one backend.\n",
        r.flows.len(),
        r.proto,
        r.start_missing,
        r.other_protocol,
        r.clients,
        r.clients_moved
    );
    if !r.events.is_empty() {
        let _ = writeln!(o, "## Events\n");
        for e in &r.events {
            let _ = writeln!(o, "- {e}");
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "## Backends\n");
    let _ = writeln!(o, "| backend | new | share | peak active | clients |");
    let _ = writeln!(o, "|---|---:|---:|---:|---:|");
    for (b, (name, n, pct)) in r.backends.iter().zip(shares(r)) {
        let t = r.totals.get(b).cloned().unwrap_or_default();
        let _ = writeln!(
            o,
            "| {name} | {n} | {pct:.1} % | {} | {} |",
            t.peak_active, t.clients
        );
    }
    let _ = writeln!(
        o,
        "\nRefused: {}. Failed over: {}. Lost datagrams: {}. Cut by a server going down: {}. \
         Clients the client table had forgotten when they came back: {}.",
        r.refused, r.failovers, r.lost, r.cut, r.clients_forgotten
    );
    if let Some(u) = &r.udp {
        let _ = writeln!(
            o,
            "\nUDP flow table: {} flows created, {} expired, {} failed, {} evicted, {} dropped \
             (table full), {} dropped (no server).",
            u.flows_created,
            u.flows_expired,
            u.flows_failed,
            u.flows_evicted,
            u.dropped_table_full,
            u.dropped_no_server
        );
    }
    if !r.server_events.is_empty() {
        let _ = writeln!(o, "\n## Server events (blacklist intervals)\n");
        for (at, e) in &r.server_events {
            let _ = writeln!(o, "- {}s {e}", secs(*at));
        }
    }
    if !r.penctl_replies.is_empty() {
        let _ = writeln!(o, "\n## penctl replies\n");
        for (at, e) in &r.penctl_replies {
            let _ = writeln!(o, "- {}s {e}", secs(*at));
        }
    }
    let moved: Vec<_> = r.flows.iter().filter(|f| !f.moves.is_empty()).collect();
    if !moved.is_empty() {
        let _ = writeln!(o, "\n## Flows that moved ({})\n", moved.len());
        for f in moved.iter().take(50) {
            let m: Vec<String> = f
                .moves
                .iter()
                .map(|(at, t)| format!("{}s → {}", secs(*at), target_name(*t)))
                .collect();
            let _ = writeln!(
                o,
                "- {} (frame {}) on {}: {}",
                f.client,
                f.first_frame,
                f.backend.map_or("-".into(), target_name),
                m.join(", ")
            );
        }
    }
    o
}

/// The report as JSON (with the address map when given).
pub fn json(r: &SimReport, map: Option<&AddressMap>) -> String {
    let mut o = String::new();
    o.push_str("{\n");
    let _ = writeln!(o, "  \"trace\": {},", json_str(&r.trace));
    let args: Vec<String> = r.pen_args.iter().map(|a| json_str(a)).collect();
    let _ = writeln!(o, "  \"pen_args\": [{}],", args.join(", "));
    let _ = writeln!(o, "  \"proto\": \"{}\",", r.proto);
    let ev: Vec<String> = r.events.iter().map(|e| json_str(&e.to_string())).collect();
    let _ = writeln!(o, "  \"events\": [{}],", ev.join(", "));
    let _ = writeln!(
        o,
        "  \"totals\": {{\"flows\": {}, \"clients\": {}, \"clients_moved\": {}, \"refused\": {}, \
         \"failovers\": {}, \"lost\": {}, \"cut\": {}, \"clients_forgotten\": {}, \
         \"start_missing\": {}, \"other_protocol\": {}}},",
        r.flows.len(),
        r.clients,
        r.clients_moved,
        r.refused,
        r.failovers,
        r.lost,
        r.cut,
        r.clients_forgotten,
        r.start_missing,
        r.other_protocol
    );
    o.push_str("  \"backends\": [\n");
    let sh = shares(r);
    for (i, (b, (name, n, pct))) in r.backends.iter().zip(sh).enumerate() {
        let t = r.totals.get(b).cloned().unwrap_or_default();
        let _ = write!(
            o,
            "    {{\"backend\": {}, \"new\": {n}, \"share\": {pct:.3}, \"peak_active\": {}, \
             \"clients\": {}}}",
            json_str(&name),
            t.peak_active,
            t.clients
        );
        o.push_str(if i + 1 < r.backends.len() {
            ",\n"
        } else {
            "\n"
        });
    }
    o.push_str("  ],\n");
    let se: Vec<String> = r
        .server_events
        .iter()
        .map(|(at, e)| format!("{{\"at\": {}, \"event\": {}}}", secs(*at), json_str(e)))
        .collect();
    let _ = writeln!(o, "  \"server_events\": [{}],", se.join(", "));
    let tl: Vec<String> = r
        .timeline
        .iter()
        .map(|(at, a)| {
            let a: Vec<String> = a.iter().map(u32::to_string).collect();
            format!("[{}, [{}]]", secs(*at), a.join(", "))
        })
        .collect();
    let _ = writeln!(o, "  \"timeline\": [{}],", tl.join(", "));
    if let Some(m) = map {
        let c: Vec<String> = m
            .clients
            .iter()
            .map(|(a, b)| {
                format!(
                    "[{}, {}]",
                    json_str(&a.to_string()),
                    json_str(&b.to_string())
                )
            })
            .collect();
        let s: Vec<String> = m.servers.iter().map(|a| json_str(&a.to_string())).collect();
        let _ = writeln!(
            o,
            "  \"mapping\": {{\"listen\": {}, \"servers\": [{}], \"clients\": [{}]}},",
            json_str(&m.listen.to_string()),
            s.join(", "),
            c.join(", ")
        );
    }
    o.push_str("  \"flows\": [\n");
    for (i, f) in r.flows.iter().enumerate() {
        let moves: Vec<String> = f
            .moves
            .iter()
            .map(|(at, t)| format!("[{}, {}]", secs(*at), json_str(&target_name(*t))))
            .collect();
        let answers: Vec<String> = f
            .answers
            .iter()
            .map(|a| a.map_or("null".into(), |t| json_str(&target_name(t))))
            .collect();
        let _ = write!(
            o,
            "    {{\"proto\": \"{}\", \"client\": {}, \"lab_client\": {}, \"server\": {}, \
             \"frame\": {}, \"start\": {}, \"backend\": {}, \"moves\": [{}], \"datagrams\": {}, \
             \"answers\": [{}], \"lost\": {}, \"refused\": {}, \"failovers\": {}, \"cut\": {}}}",
            f.proto,
            json_str(&f.client.to_string()),
            json_str(&f.lab_client.to_string()),
            json_str(&f.server.to_string()),
            f.first_frame,
            secs(f.start),
            f.backend
                .map_or("null".into(), |t| json_str(&target_name(t))),
            moves.join(", "),
            f.datagrams,
            answers.join(", "),
            f.lost,
            f.refused,
            f.failovers,
            f.cut.map_or("null".into(), secs)
        );
        o.push_str(if i + 1 < r.flows.len() { ",\n" } else { "\n" });
    }
    o.push_str("  ]\n}\n");
    o
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Active connections per backend over time, with the events marked, as an SVG line chart.
pub fn svg(r: &SimReport) -> String {
    let (w, h) = (800.0f64, 360.0f64);
    let (left, right, top, bottom) = (60.0, 160.0, 30.0, 40.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let tmax = r
        .timeline
        .last()
        .map_or(1.0, |(t, _)| t.as_secs_f64())
        .max(1e-3);
    let ymax = r
        .timeline
        .iter()
        .flat_map(|(_, a)| a.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let x = |t: f64| left + pw * t / tmax;
    let y = |v: f64| top + ph - ph * v / ymax;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(o, "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>");
    let _ = writeln!(
        o,
        "<text x=\"{left}\" y=\"18\">active {} per backend: {}</text>",
        if r.proto == super::trace::Proto::Udp {
            "flows"
        } else {
            "connections"
        },
        xml(&r.trace)
    );
    // Axes with end labels.
    let _ = writeln!(
        o,
        "<path d=\"M{left} {top} V{:.1} H{:.1}\" stroke=\"black\" fill=\"none\"/>",
        top + ph,
        left + pw
    );
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
        left - 4.0,
        top + 4.0,
        ymax
    );
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">0</text>",
        left - 4.0,
        top + ph
    );
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{tmax:.1} s</text>",
        left + pw,
        h - 10.0
    );
    let _ = writeln!(o, "<text x=\"{left}\" y=\"{:.1}\">0 s</text>", h - 10.0);
    for e in &r.events {
        let ex = x(e.at.as_secs_f64().min(tmax));
        let _ = writeln!(
            o,
            "<line x1=\"{ex:.1}\" y1=\"{top}\" x2=\"{ex:.1}\" y2=\"{:.1}\" stroke=\"#999\" \
             stroke-dasharray=\"4 3\"><title>{}</title></line>",
            top + ph,
            xml(&e.to_string())
        );
    }
    for (k, b) in r.backends.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<String> = r
            .timeline
            .iter()
            .map(|(t, a)| {
                format!(
                    "{:.1},{:.1}",
                    x(t.as_secs_f64()),
                    y(f64::from(a.get(k).copied().unwrap_or(0)))
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
            pts.join(" ")
        );
        let ly = top + 16.0 * k as f64;
        let _ = writeln!(
            o,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"3\" fill=\"{color}\"/><text \
             x=\"{:.1}\" y=\"{:.1}\">backend {}</text>",
            left + pw + 12.0,
            ly,
            left + pw + 30.0,
            ly + 5.0,
            xml(&target_name(*b))
        );
    }
    o.push_str("</svg>\n");
    o
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
