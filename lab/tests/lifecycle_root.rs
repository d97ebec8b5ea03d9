//! pen-lab's run life cycle with real processes and namespaces: signals never give a false
//! PASSED, `clean` leaves live runs alone, start-up failures are reported at once with log
//! lines. Needs root: when not root these tests FAIL with the reason; they never skip.

mod common;
use common::require_root;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scenario file `<dir>/<name>.toml`: one host with no link, a capture on its `lo`, the
/// given steps and one expectation that holds.
fn scenario(dir: &Path, name: &str, steps: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
timeout = 30

[[host]]
name = "h"

[[capture]]
name = "h-lo"
host = "h"
iface = "lo"

{extra}

{steps}

[[expect]]
capture = "h-lo"
name = "anything goes"
count = {{ max = 1000000 }}
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A step that leaves a marker in the run directory, then sleeps `secs`.
fn marked_sleep(secs: &str) -> String {
    format!(
        r#"[[step]]
name = "long last step"
run = {{ host = "h", argv = ["sh", "-c", "touch {{run_dir}}/step-started; sleep {secs}"], timeout_ms = 20000 }}"#
    )
}

/// pen-lab with its output in `out` and run ids `<root>-<6 hex>`, where `root` is private to
/// this test process: a `clean` here never touches runs of other tests or other users of the
/// machine.
fn pen_lab(out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pen-lab"));
    c.env("PENLAB_OUT", out).env("PENLAB_PREFIX", root_prefix());
    c
}

fn root_prefix() -> String {
    format!("plt{:x}", std::process::id())
}

/// Waits (at most 20 s) until some run directory under `out` holds `step-started`; returns
/// that run's id.
fn wait_marker(out: &Path, child: &mut Child) -> String {
    let t0 = Instant::now();
    loop {
        for sc in std::fs::read_dir(out).into_iter().flatten().flatten() {
            for run in std::fs::read_dir(sc.path()).into_iter().flatten().flatten() {
                if run.path().join("step-started").exists() {
                    return run.file_name().to_string_lossy().into_owned();
                }
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("pen-lab exited ({st}) before the step started");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the step never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the PID of our own child process.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0);
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

fn namespaces_of(run_id: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{run_id}-")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sigint_during_the_last_step_ends_the_run_as_interrupted_never_passed() {
    require_root("pen-lab runs for real in network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario(dir.path(), "sig-last", &marked_sleep("1.5"), "");
    let mut child = pen_lab(&out)
        .args(["run", "--json"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run_id = wait_marker(&out, &mut child);
    signal(&child, libc::SIGINT);
    let o = finish(child);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let s = &report["scenarios"][0];
    assert_eq!(s["interrupted"], true, "{s}");
    assert_eq!(s["ok"], false, "{s}");
    assert_eq!(report["passed"], 0);
    assert_eq!(report["interrupted"], 1);
    assert!(stderr.contains("[sig-last] INTERRUPTED"), "{stderr}");
    assert!(!stderr.contains("PASSED"), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .ends_with("0 passed, 1 failed (1 interrupted), 0 not run"),
        "{stderr}"
    );
    // The expectations were not evaluated into a verdict, and the run was torn down.
    assert_eq!(s["expects"].as_array().unwrap().len(), 0, "{s}");
    assert!(namespaces_of(&run_id).is_empty());
}

#[test]
fn sigterm_in_run_all_says_how_many_scenarios_did_not_run() {
    require_root("pen-lab runs for real in network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let first = scenario(dir.path(), "sig-first", &marked_sleep("1"), "");
    let second = scenario(dir.path(), "sig-second", "", "");
    let third = scenario(dir.path(), "sig-third", "", "");
    let mut child = pen_lab(&out)
        .arg("run")
        .args([&first, &second, &third])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_marker(&out, &mut child);
    signal(&child, libc::SIGTERM);
    let o = finish(child);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("interrupted by SIGINT/SIGTERM: 2 of 3 scenarios did not run"),
        "{stdout}"
    );
    assert!(stdout.contains("sig-second.toml"), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with("0 passed, 1 failed (1 interrupted), 2 not run"),
        "{stdout}"
    );
    assert!(!stdout.contains("[sig-second]"), "{stdout}");
}

#[test]
fn clean_leaves_a_live_run_alone_and_cleans_a_kept_one() {
    require_root("pen-lab runs for real in network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = scenario(dir.path(), "clean-live", &marked_sleep("2"), "");
    let mut child = pen_lab(&out)
        .arg("run")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run_id = wait_marker(&out, &mut child);
    let before = namespaces_of(&run_id);
    assert_eq!(before, vec![format!("{run_id}-h")]);

    let c = pen_lab(&out).arg("clean").output().unwrap();
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(c.status.success(), "{text}");
    assert!(
        text.contains(&format!("left {run_id} alone")),
        "clean said:\n{text}"
    );
    assert_eq!(namespaces_of(&run_id), before, "clean removed a live run");

    let c = pen_lab(&out).args(["clean", &run_id]).output().unwrap();
    let text = String::from_utf8_lossy(&c.stdout);
    assert_eq!(c.status.code(), Some(1), "{text}");
    assert!(text.contains("is still running"), "{text}");
    assert_eq!(namespaces_of(&run_id), before);

    let o = finish(child);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "the live run was disturbed:\n{stdout}");
    assert!(stdout.contains("[clean-live] PASSED"), "{stdout}");
    assert!(namespaces_of(&run_id).is_empty());

    // A --keep run's owner is gone once it exits: clean <run-id> removes it.
    let kept = scenario(dir.path(), "clean-kept", "", "");
    let o = pen_lab(&out)
        .args(["run", "--keep"])
        .arg(&kept)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    let kept_id = stdout
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{}-", root_prefix())))
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert_eq!(namespaces_of(&kept_id), vec![format!("{kept_id}-h")]);
    let bad = pen_lab(&out).args(["clean", "web1"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains(&format!("expected {}-<6 hex>", root_prefix())),
        "{bad:?}"
    );
    let c = pen_lab(&out).args(["clean", &kept_id]).output().unwrap();
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(c.status.success(), "{text}");
    assert!(text.contains(&format!("removed {kept_id}-h")), "{text}");
    assert!(namespaces_of(&kept_id).is_empty());
}

#[test]
fn a_process_that_exits_at_start_fails_at_once_with_its_last_log_lines() {
    require_root("pen-lab runs for real in network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let proc = r#"[[process]]
host = "h"
name = "quitter"
command = ["sh", "-c", "sleep 0.2; echo 'first line'; echo 'pen: bad listen address \"x\": expected a port'; exit 3"]
ready = { tcp = "127.0.0.1:9" }
ready_timeout_ms = 8000"#;
    let file = scenario(dir.path(), "quits", "", proc);
    let t0 = Instant::now();
    let o = pen_lab(&out).arg("run").arg(&file).output().unwrap();
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(
        took < Duration::from_secs(4),
        "pen-lab waited {took:?} for a process that had exited (ready_timeout_ms is 8000)"
    );
    assert!(stdout.contains("exited (exit status: 3)"), "{stdout}");
    assert!(stdout.contains("      first line\n"), "{stdout}");
    assert!(
        stdout.contains("      pen: bad listen address \"x\": expected a port"),
        "{stdout}"
    );
}

#[test]
fn expectations_are_evaluated_and_marked_after_a_failed_step() {
    require_root("pen-lab runs for real in network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let steps = r#"[[step]]
name = "fails on purpose"
run = { host = "h", argv = ["false"] }
[[step]]
name = "never runs"
wait = 10"#;
    let extra = r#"[[expect]]
capture = "h-lo"
name = "a window on a step that never ran"
after = "never runs"
count = { max = 10 }"#;
    let file = scenario(dir.path(), "step-fails", steps, extra);
    let junit = dir.path().join("junit.xml");
    let o = pen_lab(&out)
        .args(["run", "--json", "--junit"])
        .arg(&junit)
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let s = &report["scenarios"][0];
    assert_eq!(s["ok"], false);
    assert_eq!(s["interrupted"], false);
    assert_eq!(s["expects_skipped"], 0, "{s}");
    let ex = s["expects"].as_array().unwrap();
    assert_eq!(ex.len(), 2, "{s}");
    assert!(ex.iter().all(|e| e["after_failure"] == true), "{s}");
    // The whole-capture one holds; the window on the step that never ran says so.
    assert_eq!(ex[1]["ok"], true, "{s}");
    assert_eq!(ex[0]["ok"], false, "{s}");
    assert!(
        ex[0]["detail"]
            .as_str()
            .unwrap()
            .contains("step 2 \"never runs\", which did not run"),
        "{s}"
    );
    assert!(stderr.contains("(after a failed step) ... ok"), "{stderr}");
    assert!(stderr.contains("[step-fails] FAILED"), "{stderr}");
    // The same verdicts in JUnit XML, beside the JSON.
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains(
            "<testsuite name=\"step-fails\" tests=\"3\" failures=\"2\" errors=\"0\" skipped=\"0\""
        ),
        "{x}"
    );
    assert!(x.contains("name=\"step 1: fails on purpose\""), "{x}");
    assert!(
        x.contains("name=\"expect on h-lo: anything goes (after a failed step)\" time=\"0.000\"/>"),
        "{x}"
    );
}
