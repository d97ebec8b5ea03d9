//! `pen-lab bench` command line: where the report goes. Runs the real binary with a C Pen
//! path that does not exist, so it stops before building any namespace (root or not) and
//! writes nothing.

use std::path::Path;
use std::process::Command;

fn bench_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pen-lab"))
        .arg("bench")
        .args(args)
        .current_dir(dir)
        .env("C_PEN_BIN", "/nonexistent/c-pen")
        .env("PEN_BIN", "/nonexistent/pen-rs")
        .output()
        .expect("running pen-lab bench");
    assert!(
        !out.status.success(),
        "bench with missing binaries must fail early"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn quick_run_without_out_does_not_target_the_committed_results_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = bench_in(dir.path(), &["--quick"]);
    assert!(
        err.contains("the report goes to target/bench-quick"),
        "stderr: {err}"
    );
    assert!(!dir.path().join("results").exists());
}

#[test]
fn full_run_defaults_to_results_and_out_overrides_both() {
    let dir = tempfile::tempdir().unwrap();
    let err = bench_in(dir.path(), &[]);
    assert!(
        err.contains("the report goes to results\n"),
        "stderr: {err}"
    );
    let err = bench_in(dir.path(), &["--quick", "--out", "mine"]);
    assert!(err.contains("the report goes to mine\n"), "stderr: {err}");
}
