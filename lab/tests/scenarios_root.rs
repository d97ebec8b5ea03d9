//! Runs every scenario in scenarios/ for real, in network namespaces. Needs root: when not
//! root these tests FAIL with the reason (CI runs as root); they never pass by skipping.

mod common;
use common::{require_root, root};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace's pen and penctl, built once (cargo builds only pen-lab's own binary for
/// this test target).
fn pen_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let st = Command::new(cargo)
                .args([
                    "build", "-q", "-p", "pen", "--bin", "pen", "--bin", "penctl",
                ])
                .current_dir(root())
                .status()
                .expect("running cargo build for pen");
            assert!(st.success(), "cargo build -p pen failed");
            let dir = Path::new(env!("CARGO_BIN_EXE_pen-lab")).parent().unwrap();
            let pen = dir.join("pen");
            assert!(pen.is_file(), "{} missing after the build", pen.display());
            pen
        })
        .clone()
}

fn pen_lab(args: &[&str]) -> Output {
    let pen = pen_bin();
    Command::new(env!("CARGO_BIN_EXE_pen-lab"))
        .args(args)
        .current_dir(root())
        .env("PEN_BIN", &pen)
        .env("PENCTL_BIN", pen.with_file_name("penctl"))
        .env("PENLAB_SCENARIOS", root().join("scenarios"))
        .output()
        .expect("running pen-lab")
}

fn no_namespaces_left(run_id: &str) {
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{run_id}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces leaked: {left:?}");
}

#[test]
fn all_scenarios_pass_as_root_in_under_15_seconds_each() {
    require_root("lab scenarios: network namespaces, veth pairs, libpcap");
    let o = pen_lab(&["run", "all", "--json"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{stdout}\n{stderr}"));
    assert!(o.status.success(), "pen-lab run all failed:\n{stderr}");
    assert_eq!(report["failed"], 0, "{stderr}");
    let scenarios = report["scenarios"].as_array().unwrap();
    let files = std::fs::read_dir(root().join("scenarios")).unwrap().count();
    assert_eq!(scenarios.len(), files, "every scenario file runs");
    for s in scenarios {
        let name = s["scenario"].as_str().unwrap();
        assert_eq!(s["ok"], true, "{name}: {s}");
        let ms = s["elapsed_ms"].as_u64().unwrap();
        // A scenario whose subject is a duration has its own bound: tarpit-persist holds a
        // connection for the 20 s issue #22 asks for.
        let bound_ms = match name {
            "tarpit-persist" => 30_000,
            _ => 15_000,
        };
        assert!(
            ms < bound_ms,
            "{name} took {ms} ms; it must finish in under {} s",
            bound_ms / 1000
        );
        no_namespaces_left(s["run_id"].as_str().unwrap());
        // The pcaps are there and readable by the same decoder the expectations use.
        for c in s["captures"].as_array().unwrap() {
            let path = c["path"].as_str().unwrap();
            pen_lab::decode::read_pcap(Path::new(path)).unwrap();
        }
    }
    assert!(
        stderr
            .trim_end()
            .ends_with(&format!("{} passed, 0 failed", scenarios.len())),
        "{stderr}"
    );
}

#[test]
fn wrong_expectation_makes_run_fail_with_a_readable_message() {
    require_root("lab scenarios: network namespaces, veth pairs, libpcap");
    let o = pen_lab(&["run", "lab/tests/fixtures/proxy-tcp-wrong.toml"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for want in [
        "expect \"web1 sees the client's address (wrong on purpose)\" on web1-eth0 ... FAILED",
        "rule: every {dst_port=80} also {from=client}",
        "why:  ",
        "do not match {from=client}",
        "offending frames",
        "IP 10.79.0.2.",
        "capture: ",
        "web1-eth0.pcap",
        "[proxy-tcp-wrong] FAILED",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(out.trim_end().ends_with("0 passed, 1 failed"), "{out}");
    let run_id = out
        .split_whitespace()
        .find(|w| w.starts_with("penlab-"))
        .unwrap()
        .trim_end_matches(':');
    no_namespaces_left(run_id);
}
