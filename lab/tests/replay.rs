//! The `replay` step and `[balance]` scenarios: validation (no root) and the offline
//! simulation scenarios run through the `pen-lab` binary (no root). The live replays
//! (replay-dns, replay-http) run with every scenario in `scenarios_root.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pen_lab::scenario::parse_str;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn pen_lab(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pen-lab"))
        .args(args)
        .current_dir(root())
        .env_remove("PENLAB_SCENARIOS")
        .env_remove("PEN_REGEN_TRACES")
        .env("PENLAB_OUT", out)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn replay_scenarios_check_and_the_simulations_run_without_root() {
    let out = tempfile::tempdir().unwrap();
    let o = pen_lab(
        &[
            "check",
            "replay-dns",
            "replay-http",
            "replay-dns-sim",
            "replay-http-sim",
        ],
        out.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = pen_lab(&["run", "replay-dns-sim", "replay-http-sim"], out.path());
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("the simulation report equals"), "{t}");
    assert!(t.contains("clients on several backends = 32"), "{t}");
    assert!(t.contains("2 passed, 0 failed"), "{t}");
    // The run directory has the report, the chart and the address map.
    let runs = out.path().join("replay-dns-sim");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in ["report.md", "sim-report.json", "chart.svg", "mapping.txt"] {
        assert!(run.join(f).is_file(), "{} missing", run.join(f).display());
    }
}

#[test]
fn a_balance_assertion_that_does_not_hold_fails_the_scenario_readably() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scenarios/bad-balance.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::create_dir_all(dir.path().join("captures/traces")).unwrap();
    std::fs::copy(
        root().join("captures/traces/http.pcap"),
        dir.path().join("captures/traces/http.pcap"),
    )
    .unwrap();
    std::fs::write(
        &file,
        r#"
[balance]
trace = "captures/traces/http.pcap"
pen = ["80", "10.0.0.3:80", "10.0.0.4:80"]
events = ["at 5s server 0 down"]
expect_moved = 0
"#,
    )
    .unwrap();
    let o = pen_lab(&["run", file.to_str().unwrap()], dir.path());
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("clients on several backends = 0"), "{t}");
    assert!(t.contains("FAILED"), "{t}");
}

/// `filter` selects the trace's frames by BPF before the simulation: half the DNS clients
/// (198.51.100.0/25) make other figures than the whole trace (32 moved, 25 lost).
#[test]
fn a_balance_filter_selects_the_frames_by_bpf() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scenarios/filtered.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::create_dir_all(dir.path().join("captures/traces")).unwrap();
    std::fs::copy(
        root().join("captures/traces/dns.pcap"),
        dir.path().join("captures/traces/dns.pcap"),
    )
    .unwrap();
    std::fs::write(
        &file,
        r#"
[balance]
trace = "captures/traces/dns.pcap"
server = ["udp:53"]
filter = "udp and src net 198.51.100.0/25"
pen = ["-U", "10.77.0.2:53", "10.77.0.3:53", "10.77.0.4:53"]
events = ["at 10s server 1 down"]
expect_moved = 31
expect_lost = 30
"#,
    )
    .unwrap();
    let o = pen_lab(&["run", file.to_str().unwrap()], dir.path());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("522 UDP flows") && t.contains("filtered out 1391"),
        "{t}"
    );
}

#[test]
fn bad_replay_keys_are_named_with_what_is_accepted() {
    let sc = parse_str(
        r#"
[[host]]
name = "client"
addresses = ["10.1.0.2/24"]
[[process]]
host = "client"
name = "dns1"
backend = { kind = "dns", answer = "192.0.2.3", listen = ["10.1.0.2:53"] }
[[step]]
replay = { host = "client", to = "nowhere", trace = "captures/traces/dns.pcap", pen = ["-U", "53", "10.1.0.3:53"], events = ["at 5s server 1 down", "whenever"], processes = ["dns9"], backends = [], speed = -1.0, agree = "maybe", filter = "udp prot 53", reply_bytes = "roughly", down = "unplug" }
"#,
        "scenarios/bad.toml",
    )
    .unwrap();
    let errs = sc
        .plan("scenarios/bad.toml", "bad", None)
        .unwrap_err()
        .to_string();
    for want in [
        "step[0].replay.to: expected pen's listen address IP:PORT",
        "step[0].replay.events[1]: bad event \"whenever\"",
        "step[0].replay.processes: expected process names (dns1), got \"dns9\"",
        "step[0].replay.backends: expected per server slot",
        "step[0].replay.speed: expected 0 (as fast as possible) to 1000",
        "step[0].replay.agree: expected \"flows\" or \"shares\"",
        "step[0].replay.filter: filter \"udp prot 53\": not a valid BPF expression",
        "step[0].replay.reply_bytes: expected \"match\" or a tolerance 0.0..=1.0 (a fraction of the captured bytes), got \"roughly\"",
        "step[0].replay.down: expected \"stop\", \"kill\", \"pause\", \"blackhole\" or \"link\", got \"unplug\"",
    ] {
        assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
    }
}

#[test]
fn a_balance_scenario_may_not_have_live_parts() {
    let sc = parse_str(
        r#"
[[host]]
name = "client"
[balance]
trace = "captures/traces/http.pcap"
pen = ["80", "10.0.0.3:80"]
"#,
        "scenarios/mixed.toml",
    )
    .unwrap();
    let errs = sc
        .plan("scenarios/mixed.toml", "mixed", None)
        .unwrap_err()
        .to_string();
    assert!(
        errs.contains("balance: a [balance] scenario runs the simulation alone and may not have host entries (found 1)"),
        "{errs}"
    );
}

#[test]
fn pen_lab_replay_names_bad_arguments() {
    let out = tempfile::tempdir().unwrap();
    let o = pen_lab(
        &[
            "replay",
            "--netns",
            "nowhere",
            "--to",
            "10.0.0.1:80",
            "--pen",
            "80 10.0.0.3:80",
            "--backends",
            "web1",
            "--agree",
            "maybe",
            "captures/traces/http.pcap",
        ],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("agree: expected \"flows\" or \"shares\""),
        "{}",
        text(&o)
    );
}

/// `pen-lab replay` against a kept run: the HTTP trace again through the same pen, compared
/// with the simulation. Root: namespaces.
#[test]
fn pen_lab_replay_replays_through_a_kept_run() {
    common::require_root("this test builds network namespaces");
    let out = tempfile::tempdir().unwrap();
    let o = pen_lab(&["run", "replay-http", "--keep", "--json"], out.path());
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The replay step's per-flow results are in the report too (issue #16: report.json).
    let flows = report["scenarios"][0]["replays"][0]["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no replays[0].flows in the report: {report}"));
    assert_eq!(flows.len(), 412);
    let answered = flows
        .iter()
        .filter(|f| f["bytes_down"].as_u64().unwrap_or(0) > 0 && f["lab_client"].is_string())
        .count();
    assert_eq!(answered, 412, "flows: {:?}", flows.first());
    let run = report["scenarios"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = pen_lab(
        &[
            "replay",
            "--netns",
            &format!("{run}-client"),
            "--to",
            "10.78.0.2:80",
            "--pen",
            "10.78.0.2:80 10.78.0.3:80 10.78.0.4:80",
            "--server",
            "tcp:80",
            "--backends",
            "web1,web2",
            "--speed",
            "4",
            "--out",
            out.path().to_str().unwrap(),
            "captures/traces/http.pcap",
        ],
        out.path(),
    );
    let cleaned = pen_lab(&["clean", &run], out.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(cleaned.status.success(), "{}", text(&cleaned));
    let t = text(&o);
    assert!(t.contains("412 tcp flows replayed"), "{t}");
    assert!(
        t.contains("clients on several backends 0 simulated / 0 observed"),
        "{t}"
    );
}

/// The HTTP trace's replies are what pen-lab's HTTP backend sends for its requests
/// (`GET /bytes/N`), byte for byte in count: so `reply_bytes = "match"` can hold live.
#[test]
fn the_http_trace_replies_have_the_backends_byte_counts() {
    use pen::sim::trace::{ParseOptions, Trace};
    use pen_lab::backends::{http_body, http_response, parse_http_head};
    let t = Trace::open(
        &root().join("captures/traces/http.pcap"),
        &ParseOptions::default(),
    )
    .unwrap();
    let peer: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let mut checked = 0;
    for s in t.tcp.iter().filter(|s| !s.start_missing).take(50) {
        let mut rest = &s.client_data[..];
        let mut want = 0u64;
        while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            let req = parse_http_head(&rest[..end + 4]).unwrap();
            let body = http_body("web1", &req, peer);
            want += http_response(200, &body, req.keep_alive(), false).len() as u64;
            rest = &rest[end + 4..];
        }
        assert_eq!(want, s.server_bytes, "session from {}", s.client);
        checked += 1;
    }
    assert_eq!(checked, 50);
}

#[test]
fn reply_bytes_are_compared_per_tcp_session() {
    use pen::sim::trace::Proto;
    use pen_lab::replay::{FlowResult, ReplayFlow, ReplyBytes, Sends, reply_bytes_ok};
    assert!(reply_bytes_ok(100, 100, 0.0));
    assert!(!reply_bytes_ok(99, 100, 0.0));
    assert!(reply_bytes_ok(99, 100, 0.01));
    let flow = |i: usize, captured: u64| ReplayFlow {
        index: i,
        proto: Proto::Tcp,
        client: "198.51.100.1:1000".parse().unwrap(),
        lab_client: "10.200.0.1:1000".parse().unwrap(),
        first_frame: 7 + i as u64,
        start: Duration::ZERO,
        sends: Sends::Tcp(Vec::new()),
        captured_reply_bytes: captured,
    };
    let live = |i: usize, got: u64, error: Option<&str>| FlowResult {
        index: i,
        bytes_down: got,
        error: error.map(String::from),
        ..FlowResult::default()
    };
    let flows = [flow(0, 500), flow(1, 800), flow(2, 900)];
    let results = [
        live(0, 500, None),
        live(1, 700, None),
        live(2, 0, Some("connect: refused")),
    ];
    let b = ReplyBytes::compare(&flows, &results, 0.0);
    assert_eq!((b.compared, b.matching), (2, 1));
    assert_eq!(b.differing, vec![(1, 700, 800)]);
    assert_eq!(
        b.summary(),
        "reply bytes: 1 of 2 TCP sessions as captured (live 1200 B, captured 1300 B)"
    );
    let d = b.describe(&flows, "t.pcap", 10);
    assert!(d.contains("flow 1 198.51.100.1:1000 (lab 10.200.0.1:1000): got 700 bytes back, the capture has 800 (t.pcap frame 8)"), "{d}");
}

/// A replay's `server N down`/`up` happen live as the fault its `down` names.
#[test]
fn replay_events_map_to_fault_steps() {
    use pen_lab::fault::{BlackholeTarget, Fault, FaultSignal, live_event};
    use pen_lab::scenario::StepAction;
    let file = root().join("scenarios/replay-dns.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    for (down, want_down, want_up) in [
        (
            "stop",
            StepAction::Stop("dns2".into()),
            StepAction::Start("dns2".into()),
        ),
        (
            "kill",
            StepAction::Fault(Fault::Signal {
                process: "dns2".into(),
                signal: FaultSignal::Kill,
            }),
            StepAction::Start("dns2".into()),
        ),
        (
            "pause",
            StepAction::Fault(Fault::Signal {
                process: "dns2".into(),
                signal: FaultSignal::Stop,
            }),
            StepAction::Fault(Fault::Signal {
                process: "dns2".into(),
                signal: FaultSignal::Cont,
            }),
        ),
        (
            "blackhole",
            StepAction::Fault(Fault::Blackhole {
                host: "dns2".into(),
                target: BlackholeTarget {
                    proto: None,
                    port: None,
                },
                lift: false,
            }),
            StepAction::Fault(Fault::Blackhole {
                host: "dns2".into(),
                target: BlackholeTarget {
                    proto: None,
                    port: None,
                },
                lift: true,
            }),
        ),
        (
            "link",
            StepAction::Fault(Fault::Link {
                node: "dns2".into(),
                iface: "eth0".into(),
                up: false,
            }),
            StepAction::Fault(Fault::Link {
                node: "dns2".into(),
                iface: "eth0".into(),
                up: true,
            }),
        ),
    ] {
        let t = text.replace("down = \"kill\"", &format!("down = \"{down}\""));
        let f = file.display().to_string();
        let plan = parse_str(&t, &f)
            .unwrap()
            .plan(&f, "replay-dns", None)
            .unwrap();
        let StepAction::Replay(r) = &plan.steps[0].kind else {
            panic!("{:?}", plan.steps[0].kind)
        };
        assert_eq!(live_event(&plan, r, 1, false).unwrap(), want_down, "{down}");
        assert_eq!(live_event(&plan, r, 1, true).unwrap(), want_up, "{down}");
    }
}
