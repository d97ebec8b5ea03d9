//! `[sim]` scenarios: the packet engine run offline over a pcap fixture through the `pen-lab`
//! binary, without root and without namespaces; failures and validation errors that say what is
//! wrong.

mod common;
use common::{errors, is_root, require_root, root};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether `setpriv` can run the binary as nobody and nobody can read the scenario files
/// (only root can drop to nobody).
fn nobody_can_run() -> bool {
    Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "sh", "-c"])
            .arg(format!(
                "test -r scenarios/sim-dsr.toml && test -r captures/fixtures/dsr-tcp.pcap && test -x {}",
                env!("CARGO_BIN_EXE_pen-lab")
            ))
            .current_dir(root())
            .status()
            .is_ok_and(|s| s.success())
}

/// A temporary directory the runs write into, writable by nobody too.
fn out_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Runs `pen-lab ARGS` from the repository root, as nobody when `as_nobody`.
fn pen_lab(args: &[&str], out: &Path, as_nobody: bool) -> Output {
    let mut c = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_pen-lab"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_pen-lab"))
    };
    c.args(args)
        .current_dir(root())
        .env_remove("PENLAB_SCENARIOS")
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

fn netns_list() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn sim_scenarios_pass_without_root_or_namespaces() {
    // As root the run drops to nobody, so it proves that no root is needed; as anyone else it
    // runs as that user, which proves it as well.
    let nobody = is_root();
    assert!(
        !nobody || nobody_can_run(),
        "as root this test runs pen-lab as nobody: setpriv must be installed and nobody must read scenarios/ and captures/fixtures/"
    );
    let out = out_dir();
    let o = pen_lab(
        &["run", "--json", "sim-dsr", "sim-tarpit"],
        out.path(),
        nobody,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "as nobody: {nobody}\n{}",
        text(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["passed"], 2, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    for (sc, golden, frames_out) in [("sim-dsr", "dsr-tcp", 13), ("sim-tarpit", "dsr-tarpit", 9)] {
        let r = report["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["scenario"] == sc)
            .unwrap_or_else(|| panic!("no {sc} in {report:#}"));
        assert_eq!(r["ok"], true, "{r:#}");
        assert!(r["run_id"].as_str().unwrap().starts_with("sim-"), "{r:#}");
        assert!(r["kept_namespaces"].as_array().unwrap().is_empty());
        let dir = PathBuf::from(r["dir"].as_str().unwrap());
        assert!(dir.starts_with(out.path()), "{}", dir.display());
        // The golden comparisons are reported as expectations and hold byte for byte.
        let expects = r["expects"].as_array().unwrap();
        assert!(expects.len() >= 5, "{r:#}");
        let goldens: Vec<_> = expects
            .iter()
            .filter(|x| x["rule"].as_str().unwrap().starts_with("same bytes as"))
            .collect();
        assert_eq!(goldens.len(), 2, "{r:#}");
        assert_eq!(
            std::fs::read(dir.join("engine.pcap")).unwrap(),
            std::fs::read(root().join(format!("captures/expected/{golden}.pcap"))).unwrap()
        );
        assert_eq!(
            std::fs::read(dir.join("engine.log")).unwrap(),
            std::fs::read(root().join(format!("captures/expected/{golden}.log"))).unwrap()
        );
        assert!(dir.join("report.json").is_file());
        let engine = r["captures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "engine")
            .unwrap();
        assert_eq!(engine["frames"], frames_out, "{r:#}");
        // Some expectations look at the input.
        assert!(expects.iter().any(|x| x["capture"] == "input"), "{r:#}");
    }
}

#[test]
fn sim_run_creates_no_namespace() {
    // Whatever the user: a [sim] run never touches /run/netns (other tests may create
    // namespaces concurrently, so only names of this run's shape are compared).
    let out = out_dir();
    let before: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with("sim-"))
        .collect();
    let o = pen_lab(&["run", "sim-tarpit"], out.path(), false);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let after: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with("sim-"))
        .collect();
    assert_eq!(before, after);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("[sim-tarpit] PASSED"), "{}", text(&o));
    assert!(
        !stdout.contains("started "),
        "no process is started: {stdout}"
    );
}

#[test]
fn live_scenarios_still_demand_root_and_say_which() {
    require_root("to run pen-lab as nobody with setpriv");
    assert!(
        nobody_can_run(),
        "setpriv must be installed and nobody must read scenarios/ and captures/fixtures/"
    );
    let out = out_dir();
    let o = pen_lab(&["run", "sim-dsr", "proxy-tcp"], out.path(), true);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("proxy-tcp need root"), "{err}");
    assert!(!err.contains("sim-dsr"), "{err}");
    assert!(err.contains("[sim] scenarios run as any user"), "{err}");
}

/// A `[sim]` scenario over the DSR fixture with absolute paths, plus `extra` TOML.
fn dsr_scenario(name: &str, sim_extra: &str, extra: &str) -> String {
    let r = root();
    format!(
        "name = \"{name}\"\n[sim]\ninput = {:?}\npen = [\"-O\", \"dsr_if eth1\", \"10.0.0.100:80\", \"10.0.0.3\", \"10.0.0.4\"]\noutput = \"engine\"\n{sim_extra}\n{extra}",
        r.join("captures/fixtures/dsr-tcp.pcap")
            .display()
            .to_string()
    )
}

#[test]
fn wrong_sim_expectations_fail_with_readable_messages() {
    let r = root();
    let out = out_dir();
    let file = out.path().join("sim-wrong.toml");
    let text_toml = dsr_scenario(
        "sim-wrong",
        &format!(
            "expected_pcap = {:?}\nexpected_log = {:?}\n",
            r.join("captures/expected/dsr-tarpit.pcap")
                .display()
                .to_string(),
            r.join("captures/expected/dsr-tarpit.log")
                .display()
                .to_string()
        ),
        "[[expect]]\ncapture = \"engine\"\nname = \"three segments forwarded\"\ncount = { match = { ip_dst = \"10.0.0.100\", dst_port = 80, proto = \"tcp\" }, exact = 3 }\n\
         [[expect]]\ncapture = \"engine\"\nname = \"everything goes to web1\"\nevery = { match = { ethertype = \"ipv4\" }, also = { eth_dst = \"02:00:00:00:00:03\" } }\n\
         [[expect]]\ncapture = \"input\"\nname = \"the input has 12 frames\"\ncount = { exact = 12 }\n",
    );
    std::fs::write(&file, text_toml).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = pen_lab(&["run", file.to_str().unwrap()], out.path(), false);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = text(&o);
    assert!(s.contains("[sim-wrong] FAILED"), "{s}");
    // The count names what it saw and what it wanted.
    assert!(s.contains("\"three segments forwarded\""), "{s}");
    assert!(s.contains("7 of 13 frames"), "{s}");
    assert!(s.contains("expected exactly 3"), "{s}");
    // `every` lists the offending frames, decoded.
    assert!(s.contains("\"everything goes to web1\""), "{s}");
    assert!(
        s.contains("02:00:00:00:00:01 > 02:00:00:00:00:04 IP 10.0.0.2.41000 > 10.0.0.100.80"),
        "{s}"
    );
    // The golden mismatches say where the files first differ.
    assert!(
        s.contains("frame 3 differs (got 42 bytes, expected 42 bytes); 13 frames, expected 9"),
        "{s}"
    );
    assert!(
        !s.contains("engine.log (pen-lab show"),
        "a log is not a capture: {s}"
    );
    assert!(s.contains("line 3 is \"1 0.000000 in len=42 -> arp-reply len=42\", expected \"1 0.000000 in len=42 -> learned backend=0\""), "{s}");
    // An expectation on the input that holds is still reported as passing.
    assert!(
        s.contains("\"the input has 12 frames\" on input ... ok"),
        "{s}"
    );
}

#[test]
fn a_broken_input_is_a_scenario_error_not_a_panic() {
    let out = out_dir();
    let bad = out.path().join("not-a.pcap");
    std::fs::write(&bad, b"this is not a pcap file").unwrap();
    let file = out.path().join("sim-bad.toml");
    std::fs::write(
        &file,
        format!(
            "[sim]\ninput = {:?}\npen = [\"-O\", \"dsr_if eth1\", \"10.0.0.100:80\", \"10.0.0.3\"]\n[[expect]]\ncapture = \"output\"\ncount = {{ min = 1 }}\n",
            bad.display().to_string()
        ),
    )
    .unwrap();
    let o = pen_lab(&["run", file.to_str().unwrap()], out.path(), false);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = text(&o);
    assert!(s.contains("not-a.pcap"), "{s}");
    assert!(s.contains("input is not a pcap file"), "{s}");
}

#[test]
fn bad_sim_keys_are_validation_errors_naming_the_key() {
    let e = errors("[sim]\ninptu = \"captures/fixtures/dsr-tcp.pcap\"\npen = [\"1.2.3.4:80\"]\n");
    assert!(e.contains("unknown field `inptu`"), "{e}");
    assert!(e.contains("expected one of `input`, `pen`"), "{e}");

    let e = errors(
        "[sim]\ninput = \"captures/fixtures/no-such.pcap\"\npen = [\"-O\", \"dsr_if eth1\", \"10.0.0.100:80\", \"10.0.0.3\"]\n",
    );
    assert!(
        e.contains("scenarios/x.toml: sim.input: expected an existing file"),
        "{e}"
    );
    assert!(e.contains("\"captures/fixtures/no-such.pcap\""), "{e}");

    let ok_input = dsr_scenario("x", "", "");
    let e = errors(&ok_input.replace(
        "pen = [\"-O\", \"dsr_if eth1\", \"10.0.0.100:80\", \"10.0.0.3\", \"10.0.0.4\"]",
        "pen = []",
    ));
    assert!(e.contains("sim.pen: expected pen's arguments"), "{e}");

    let e = errors(&ok_input.replace("\"10.0.0.100:80\"", "\"--no-such-option\""));
    assert!(
        e.contains("sim.pen: the packet engine does not accept"),
        "{e}"
    );

    let e = errors(&ok_input.replace("output = \"engine\"", "output = \"input\""));
    assert!(e.contains("sim.output: expected a capture name"), "{e}");
    assert!(e.contains("other than \"input\""), "{e}");

    let e = errors(&dsr_scenario(
        "x",
        "expected_log = \"captures/expected/nope.log\"",
        "",
    ));
    assert!(
        e.contains("sim.expected_log: expected an existing file"),
        "{e}"
    );

    let e = errors(&dsr_scenario(
        "x",
        "",
        "[[expect]]\ncapture = \"output\"\ncount = { min = 1 }\n",
    ));
    assert!(
        e.contains("expect[0].capture: expected a capture name (engine, input), got \"output\""),
        "{e}"
    );

    let e = errors(&dsr_scenario(
        "x",
        "",
        "[[host]]\nname = \"a\"\n[[step]]\nwait = 5\n",
    ));
    assert!(
        e.contains(
            "sim: a [sim] scenario runs offline and may not have [[host]] entries (found 1)"
        ),
        "{e}"
    );
    assert!(e.contains("may not have [[step]] entries"), "{e}");

    let e = errors(&dsr_scenario("x", "", "").replace("\"10.0.0.3\"", "\"{web9}\""));
    assert!(e.contains("sim.pen[3]: {web9}: unknown reference"), "{e}");
}

#[test]
fn sim_paths_are_relative_to_the_repository_root_and_sim_mac_resolves() {
    let (_, plan) = pen_lab::scenario::load(&root().join("scenarios/sim-dsr.toml")).unwrap();
    let sim = plan.sim.unwrap();
    assert_eq!(
        sim.input.canonicalize().unwrap(),
        root()
            .join("captures/fixtures/dsr-tcp.pcap")
            .canonicalize()
            .unwrap()
    );
    assert_eq!(
        sim.pen[2], "10.0.0.100:80",
        "[vars] resolve in pen's arguments"
    );
    let rule = plan.expects[1].kind.to_string();
    assert!(
        rule.contains("02:00:00:00:00:01"),
        "{{sim_mac}} is the engine's MAC: {rule}"
    );
}

#[test]
fn check_reports_bad_sim_keys_with_exit_2() {
    let out = out_dir();
    let file = out.path().join("sim-typo.toml");
    std::fs::write(
        &file,
        "[sim]\ninput = \"x.pcap\"\npen = [\"1.2.3.4:80\"]\noutptu = \"e\"\n",
    )
    .unwrap();
    let o = pen_lab(&["check", file.to_str().unwrap()], out.path(), false);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let s = text(&o);
    assert!(s.contains("sim-typo.toml: line"), "{s}");
    assert!(s.contains("unknown field `outptu`"), "{s}");
}
