//! Runs one scenario: topology → captures → processes → steps → stop captures →
//! expectations → teardown. Teardown happens on success, failure, timeout and interrupt
//! (the [`Topology`] is dropped on every path; `--keep` leaves it for inspection).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::backends::{BackendKind, backend_argv};
use crate::capture::{Capture, start_capture};
use crate::decode::{FrameInfo, read_pcap};
use crate::expect::{StepTime, Window, evaluate};
use crate::node::{self, Proc};
use crate::report::{CaptureResult, ExpectResult, Progress, ScenarioReport, StepResult};
use crate::scenario::{
    self, ConnectExpect, Plan, PlannedBackend, PlannedNodeKind, PlannedProcess, PlannedProcessKind,
    PlannedSim, PlannedStep, ReadyCheck, SIM_INPUT_CAPTURE, Scenario, StepAction,
};
use crate::topology::{Impairment, LinkEnd, NodeKind, RouteSpec, Topology, unique_prefix_with};
use crate::traffic;

/// Set by SIGINT/SIGTERM; checked between phases and steps.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handler that sets [`INTERRUPTED`] (the run then tears down and
/// reports the scenario as interrupted).
pub fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output root; each run writes `<out_root>/<scenario>/<run-id>/`.
    pub out_root: PathBuf,
    /// Leave namespaces and processes in place after the run.
    pub keep: bool,
    pub progress: Progress,
    /// The workspace's `pen` binary.
    pub pen_bin: PathBuf,
    /// The workspace's `penctl` binary.
    pub penctl_bin: PathBuf,
    /// `pen-lab` itself (for built-in backends).
    pub self_exe: PathBuf,
    /// Run ids are `<prefix_root>-<6 hex>` (`penlab`, or `$PENLAB_PREFIX`).
    pub prefix_root: String,
}

/// The root of run ids and namespace names: `$PENLAB_PREFIX` (1-16 lowercase letters and
/// digits, so that CI jobs sharing a machine can each `clean` only their own runs), else
/// `penlab`.
pub fn prefix_root() -> Result<String> {
    match std::env::var("PENLAB_PREFIX") {
        Err(std::env::VarError::NotPresent) => Ok("penlab".to_string()),
        Ok(p) if valid_prefix_root(&p) => Ok(p),
        Ok(p) => bail!(
            "PENLAB_PREFIX={p:?}: expected 1-16 lowercase letters or digits, starting with a letter (default penlab)"
        ),
        Err(e) => bail!("PENLAB_PREFIX: {e}"),
    }
}

/// 1-16 lowercase ASCII letters or digits, starting with a letter.
pub fn valid_prefix_root(p: &str) -> bool {
    (1..=16).contains(&p.len())
        && p.starts_with(|c: char| c.is_ascii_lowercase())
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

impl RunOptions {
    /// Defaults: binaries next to the running executable (or `$PEN_BIN`, `$PENCTL_BIN`),
    /// output under `captures/runs` beside the scenarios directory.
    pub fn from_env(keep: bool, json: bool) -> Result<RunOptions> {
        let self_exe = std::env::current_exe().context("finding pen-lab's own executable")?;
        let dir = self_exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let pick = |var: &str, name: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join(name))
        };
        let out_root = match std::env::var_os("PENLAB_OUT") {
            Some(d) => PathBuf::from(d),
            None => scenario::scenarios_dir()
                .and_then(|d| d.parent().map(|p| p.join("captures").join("runs")))
                .unwrap_or_else(|| PathBuf::from("captures/runs")),
        };
        Ok(RunOptions {
            out_root,
            keep,
            progress: Progress { json },
            pen_bin: pick("PEN_BIN", "pen"),
            penctl_bin: pick("PENCTL_BIN", "penctl"),
            self_exe,
            prefix_root: prefix_root()?,
        })
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs one scenario file. Never panics on scenario content; every problem ends up in the
/// report.
pub fn run_file(path: &Path, opts: &RunOptions) -> ScenarioReport {
    let started = Instant::now();
    let mut report = ScenarioReport {
        file: path.to_path_buf(),
        ..ScenarioReport::default()
    };
    let (sc, plan) = match scenario::load(path) {
        Ok(x) => x,
        Err(e) => {
            report.scenario = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            report.errors.push(e.to_string());
            report.finish();
            return report;
        }
    };
    report.scenario = plan.name.clone();
    if let Some(sim) = plan.sim.clone() {
        run_sim(&plan, &sim, path, opts, &mut report);
        report.elapsed_ms = ms(started.elapsed());
        mark_if_interrupted(&mut report, "during the offline run");
        finish_report(&mut report, opts);
        return report;
    }
    if let Some(b) = plan.balance.clone() {
        run_balance(&plan, &b, path, opts, &mut report);
        report.elapsed_ms = ms(started.elapsed());
        mark_if_interrupted(&mut report, "during the offline run");
        finish_report(&mut report, opts);
        return report;
    }
    if plan.is_offline() {
        opts.progress.line(&format!(
            "[{}] no hosts: nothing to build or run",
            plan.name
        ));
        report.elapsed_ms = ms(started.elapsed());
        report.finish();
        opts.progress.scenario_end(&report);
        return report;
    }
    let prefix = unique_prefix_with(&opts.prefix_root);
    report.run_id = prefix.clone();
    let dir = opts.out_root.join(&plan.name).join(&prefix);
    report.dir = Some(dir.clone());
    opts.progress.line(&format!(
        "[{}] run {prefix}: {}",
        plan.name,
        if plan.description.is_empty() {
            path.display().to_string()
        } else {
            plan.description.clone()
        }
    ));
    let mut run = Run {
        plan,
        sc,
        file: path.display().to_string(),
        opts,
        dir,
        deadline: started,
        topo: None,
        procs: BTreeMap::new(),
        captures: Vec::new(),
        step_times: Vec::new(),
        background: BTreeMap::new(),
        replays: Vec::new(),
    };
    run.deadline = started + run.plan.timeout;
    run.execute(&mut report);
    report.replays = std::mem::take(&mut run.replays);
    // Teardown on every path.
    if let Some(mut topo) = run.topo.take() {
        if opts.keep {
            report.kept_namespaces = topo.namespaces().to_vec();
            for (_, p) in std::mem::take(&mut run.procs) {
                // Leave the processes running: forget the handles instead of killing them.
                std::mem::forget(p);
            }
            std::mem::forget(topo);
        } else {
            for (_, mut p) in std::mem::take(&mut run.procs) {
                let _ = p.stop(Duration::from_millis(300));
            }
            if let Err(e) = topo.teardown() {
                report.errors.push(format!("teardown: {e:#}"));
            }
        }
    }
    report.elapsed_ms = ms(started.elapsed());
    mark_if_interrupted(&mut report, "while the scenario ran");
    finish_report(&mut report, opts);
    report
}

/// True once SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A signal that arrived at any point before the verdict makes the scenario interrupted:
/// it never passes, however far it got.
fn mark_if_interrupted(report: &mut ScenarioReport, when: &str) {
    if interrupted() && !report.interrupted {
        report.interrupted = true;
        if !report.errors.iter().any(|e| e.starts_with("interrupted")) {
            report
                .errors
                .push(format!("interrupted by SIGINT/SIGTERM {when}"));
        }
    }
}

/// Settles the verdict, writes `report.json` into the run directory and prints the summary.
fn finish_report(report: &mut ScenarioReport, opts: &RunOptions) {
    report.finish();
    if let Some(d) = &report.dir
        && d.is_dir()
    {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(d.join("report.json"), json) {
            report
                .errors
                .push(format!("writing {}: {e}", d.join("report.json").display()));
            report.finish();
        }
    }
    opts.progress.scenario_end(report);
}

/// The run directory of an offline (`[sim]` or `[balance]`) scenario, with its run id in the
/// report and its progress line; `None` (and the error reported) when it cannot be created.
fn offline_run_dir(
    kind: &str,
    plan: &Plan,
    file: &Path,
    opts: &RunOptions,
    report: &mut ScenarioReport,
) -> Option<PathBuf> {
    let run_id = unique_prefix_with("sim");
    report.run_id = run_id.clone();
    let dir = opts.out_root.join(&plan.name).join(&run_id);
    opts.progress.line(&format!(
        "[{}] {kind} {run_id}: {}",
        plan.name,
        if plan.description.is_empty() {
            file.display().to_string()
        } else {
            plan.description.clone()
        }
    ));
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            report.errors.push(format!(
                "cannot create the run directory {}: {e}",
                dir.display()
            ));
            None
        }
    }
}

/// A `[sim]` scenario: replays the input pcap through the packet engine with
/// [`pen::link::pcapfile::run_sim`] into `<run dir>/<output>.pcap` and `<output>.log`, compares
/// them with the golden files, then evaluates `[[expect]]` on the output (or on `input`).
/// Needs no root and no namespaces.
fn run_sim(
    plan: &Plan,
    sim: &PlannedSim,
    file: &Path,
    opts: &RunOptions,
    report: &mut ScenarioReport,
) {
    let Some(dir) = offline_run_dir("sim", plan, file, opts, report) else {
        report.expects_skipped = plan.expects.len();
        return;
    };
    report.dir = Some(dir.clone());
    if interrupted() {
        report.interrupted = true;
        report
            .errors
            .push("interrupted by SIGINT/SIGTERM before the replay".into());
        report.expects_skipped = plan.expects.len();
        return;
    }
    let out = dir.join(format!("{}.pcap", sim.output));
    let log = dir.join(format!("{}.log", sim.output));
    let summary = match pen::link::pcapfile::run_sim(&sim.pen, &sim.input, &out, &log) {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(format!("sim: {e}"));
            report.expects_skipped = plan.expects.len();
            return;
        }
    };
    opts.progress.line(&format!(
        "[{}] replayed {} frames of {}; the engine sent {} ({})",
        plan.name,
        summary.frames_in,
        sim.input.display(),
        summary.frames_out,
        summary.counters
    ));
    report.captures.push(CaptureResult {
        name: SIM_INPUT_CAPTURE.into(),
        host: "sim".into(),
        iface: "input".into(),
        path: sim.input.clone(),
        frames: summary.frames_in,
        dropped: 0,
    });
    report.captures.push(CaptureResult {
        name: sim.output.clone(),
        host: "sim".into(),
        iface: "engine".into(),
        path: out.clone(),
        frames: summary.frames_out,
        dropped: 0,
    });
    report.logs.push(log.clone());
    let goldens = [
        (&sim.expected_pcap, &out, true),
        (&sim.expected_log, &log, false),
    ];
    for (golden, got, is_pcap) in goldens {
        let Some(golden) = golden else { continue };
        let (ok, detail) = match compare_golden(got, golden, is_pcap) {
            Ok(None) => (true, format!("{} bytes, identical", file_len(got))),
            Ok(Some(why)) => (false, why),
            Err(why) => (false, why),
        };
        let res = ExpectResult {
            name: format!(
                "the {} equals {}",
                if is_pcap {
                    "output pcap"
                } else {
                    "verdict log"
                },
                golden.display()
            ),
            capture: sim.output.clone(),
            rule: format!("same bytes as {}", golden.display()),
            ok,
            detail,
            offending: Vec::new(),
            offending_total: 0,
            // Only pcaps: the report prints `pen-lab show <capture_path>`.
            capture_path: is_pcap.then(|| got.clone()),
            after_failure: false,
        };
        opts.progress.expect(&plan.name, &res);
        report.expects.push(res);
    }
    evaluate_expects(
        plan,
        |cap| {
            if cap == SIM_INPUT_CAPTURE {
                sim.input.clone()
            } else {
                dir.join(format!("{cap}.pcap"))
            }
        },
        opts,
        report,
        EvalCtx::default(),
    );
}

/// A `[balance]` scenario: the whole-balancer simulation of a trace (no root), its report
/// files in the run directory, the golden report and the assertions as expectations.
fn run_balance(
    plan: &Plan,
    b: &crate::replay::PlannedBalance,
    file: &Path,
    opts: &RunOptions,
    report: &mut ScenarioReport,
) {
    let Some(dir) = offline_run_dir("balance", plan, file, opts, report) else {
        return;
    };
    report.dir = Some(dir.clone());
    let listen = pen::sim::balance::shared_from_args(&b.sim.pen)
        .ok()
        .and_then(|s| pen::sim::balance::listen_of(&s))
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (trace, map, r) = match crate::replay::simulate_plan(&b.sim, listen) {
        Ok(x) => x,
        Err(e) => {
            report.errors.push(format!("balance: {e:#}"));
            return;
        }
    };
    let json = pen::sim::report::json(&r, Some(&map));
    let files = [
        ("report.md", pen::sim::report::markdown(&r)),
        ("sim-report.json", json.clone()),
        ("chart.svg", pen::sim::report::svg(&r)),
        ("mapping.txt", map.to_text()),
    ];
    for (name, text) in &files {
        if let Err(e) = std::fs::write(dir.join(name), text) {
            report
                .errors
                .push(format!("writing {}: {e}", dir.join(name).display()));
        }
    }
    opts.progress.line(&format!(
        "[{}] {}; {} {} flows simulated, {} clients ({} on several backends), {} lost, {} refused; \
         report.md, sim-report.json, chart.svg, mapping.txt in {}",
        plan.name,
        trace.summary(),
        r.flows.len(),
        r.proto,
        r.clients,
        r.clients_moved,
        r.lost,
        r.refused,
        dir.display()
    ));
    let mut results: Vec<(String, bool, String)> = Vec::new();
    if let Some(golden) = &b.expected_report {
        let got = dir.join("sim-report.json");
        if std::env::var_os("PEN_REGEN_TRACES").is_some() {
            let _ = std::fs::write(golden, &json);
        }
        let (ok, detail) = match compare_golden(&got, golden, false) {
            Ok(None) => (true, format!("{} bytes, identical", file_len(&got))),
            Ok(Some(why)) => (false, why),
            Err(why) => (false, why),
        };
        results.push((
            format!("the simulation report equals {}", golden.display()),
            ok,
            detail,
        ));
    }
    results.extend(crate::replay::check_balance(b, &r));
    for (name, ok, detail) in results {
        let res = ExpectResult {
            name: name.clone(),
            capture: "balance".into(),
            rule: name,
            ok,
            detail,
            offending: Vec::new(),
            offending_total: 0,
            capture_path: None,
            after_failure: false,
        };
        opts.progress.expect(&plan.name, &res);
        report.expects.push(res);
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// `Ok(None)` when `got` and `golden` hold the same bytes, `Ok(Some(where they differ))`
/// otherwise (first differing frame for pcaps, first differing line for logs).
pub fn compare_golden(got: &Path, golden: &Path, is_pcap: bool) -> Result<Option<String>, String> {
    let a = std::fs::read(got).map_err(|e| format!("cannot read {}: {e}", got.display()))?;
    let b = std::fs::read(golden).map_err(|e| format!("cannot read {}: {e}", golden.display()))?;
    if a == b {
        return Ok(None);
    }
    let hint = format!(
        "compare `pen-lab show {}` with `pen-lab show {}`",
        got.display(),
        golden.display()
    );
    if is_pcap {
        let fa = pen::link::pcapfile::read_frames(a.as_slice());
        let fb = pen::link::pcapfile::read_frames(b.as_slice());
        let why = match (fa, fb) {
            (Ok(fa), Ok(fb)) => match fa.iter().zip(&fb).position(|(x, y)| x != y) {
                Some(i) => {
                    let len = |v: &[(Duration, Vec<u8>)]| v.get(i).map_or(0, |f| f.1.len());
                    format!(
                        "frame {} differs (got {} bytes, expected {} bytes); {} frames, expected {}",
                        i + 1,
                        len(&fa),
                        len(&fb),
                        fa.len(),
                        fb.len()
                    )
                }
                None if fa.len() != fb.len() => format!(
                    "the first {} frames agree, but there are {} frames, expected {}",
                    fa.len().min(fb.len()),
                    fa.len(),
                    fb.len()
                ),
                None => "the frames agree but the file headers differ".to_string(),
            },
            (Err(e), _) => format!("the output is not a readable pcap: {e}"),
            (_, Err(e)) => format!("the golden file is not a readable pcap: {e}"),
        };
        return Ok(Some(format!("{why}; {hint}")));
    }
    let (ta, tb) = (String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
    let (la, lb): (Vec<&str>, Vec<&str>) = (ta.lines().collect(), tb.lines().collect());
    let why = match la.iter().zip(&lb).position(|(x, y)| x != y) {
        Some(i) => format!(
            "line {} is {:?}, expected {:?}",
            i + 1,
            la.get(i).copied().unwrap_or_default(),
            lb.get(i).copied().unwrap_or_default()
        ),
        None => format!(
            "the first {} lines agree, but there are {} lines, expected {}",
            la.len().min(lb.len()),
            la.len(),
            lb.len()
        ),
    };
    Ok(Some(format!(
        "{why}; diff {} {}",
        got.display(),
        golden.display()
    )))
}

/// What the expectations are evaluated against besides the captures.
#[derive(Clone, Copy, Debug, Default)]
struct EvalCtx<'a> {
    /// When each step ran (`None`: it did not), for `after`/`before` windows.
    times: &'a [Option<StepTime>],
    /// A step failed first: the results are evidence, marked as such.
    after_failure: bool,
}

/// Evaluates every `[[expect]]` of `plan` on the pcap `path_of(capture name)` and records the
/// results (each pcap is decoded once).
fn evaluate_expects(
    plan: &Plan,
    path_of: impl Fn(&str) -> PathBuf,
    opts: &RunOptions,
    report: &mut ScenarioReport,
    ctx: EvalCtx<'_>,
) {
    let mut cache: BTreeMap<String, Result<(PathBuf, Vec<FrameInfo>), String>> = BTreeMap::new();
    for x in &plan.expects {
        let entry = cache.entry(x.capture.clone()).or_insert_with(|| {
            let path = path_of(&x.capture);
            read_pcap(&path)
                .map(|f| (path, f))
                .map_err(|e| format!("{e:#}"))
        });
        let rule = if x.window.is_all() {
            x.kind.to_string()
        } else {
            format!("{} ({})", x.kind, x.window)
        };
        let failed = |detail: String, capture_path: Option<PathBuf>| ExpectResult {
            name: x.name.clone(),
            capture: x.capture.clone(),
            rule: rule.clone(),
            ok: false,
            detail,
            offending: Vec::new(),
            offending_total: 0,
            capture_path,
            after_failure: ctx.after_failure,
        };
        let res = match entry {
            Err(e) => failed(e.clone(), None),
            Ok((path, frames)) => match x.window.bounds(ctx.times) {
                Err(why) => failed(why, Some(path.clone())),
                Ok((from, to)) => {
                    let windowed;
                    let seen: &[FrameInfo] = if x.window.is_all() {
                        frames
                    } else {
                        windowed = Window::select(frames, from, to);
                        &windowed
                    };
                    let o = evaluate(&x.kind, seen);
                    // Offending indices refer to the whole capture (what `pen-lab show` numbers).
                    let offending = o
                        .offending
                        .iter()
                        .take(10)
                        .filter_map(|i| frames.get(*i))
                        .map(|f| f.to_string())
                        .collect();
                    let detail = if x.window.is_all() {
                        o.detail
                    } else {
                        format!(
                            "{} ({} of {} frames in the window {})",
                            o.detail,
                            seen.len(),
                            frames.len(),
                            x.window
                        )
                    };
                    ExpectResult {
                        name: x.name.clone(),
                        capture: x.capture.clone(),
                        rule: rule.clone(),
                        ok: o.pass,
                        detail,
                        offending,
                        offending_total: o.offending.len(),
                        capture_path: Some(path.clone()),
                        after_failure: ctx.after_failure,
                    }
                }
            },
        };
        opts.progress.expect(&plan.name, &res);
        report.expects.push(res);
    }
}

struct Run<'a> {
    plan: Plan,
    sc: Scenario,
    file: String,
    opts: &'a RunOptions,
    dir: PathBuf,
    deadline: Instant,
    topo: Option<Topology>,
    procs: BTreeMap<String, Proc>,
    captures: Vec<(String, Capture)>,
    /// When each step ran, for `[[expect]]` windows.
    step_times: Vec<Option<StepTime>>,
    /// Background steps (`background = true`) not joined yet, by name.
    background: BTreeMap<String, std::thread::JoinHandle<Result<String>>>,
    /// Per-flow results of the `replay` steps run so far, for `report.json`.
    replays: Vec<crate::report::ReplayDetails>,
}

impl Run<'_> {
    fn check_time(&self, phase: &str) -> Result<()> {
        if interrupted() {
            bail!("interrupted by SIGINT/SIGTERM during {phase}; tearing down");
        }
        if Instant::now() > self.deadline {
            bail!(
                "scenario timeout of {} s exceeded during {phase}",
                self.plan.timeout.as_secs()
            );
        }
        Ok(())
    }

    fn ns(&self, node: &str) -> String {
        self.topo
            .as_ref()
            .map(|t| t.ns_name(node))
            .unwrap_or_default()
    }

    fn execute(&mut self, report: &mut ScenarioReport) {
        if let Err(e) = self.build_topology() {
            report.errors.push(format!("topology: {e:#}"));
            return;
        }
        if let Err(e) = self.replan_with_macs() {
            report.errors.push(format!("references: {e:#}"));
            return;
        }
        if let Err(e) = self.start_captures() {
            report.errors.push(format!("captures: {e:#}"));
            self.stop_captures(report);
            return;
        }
        let procs: Vec<PlannedProcess> = self
            .plan
            .processes
            .iter()
            .filter(|p| p.autostart)
            .cloned()
            .collect();
        for p in &procs {
            if let Err(e) = self
                .check_time("process start")
                .and_then(|()| self.start_proc(p))
            {
                report.errors.push(format!("process {}: {e:#}", p.name));
                self.collect_logs(report);
                self.stop_captures(report);
                return;
            }
        }
        let total = self.plan.steps.len();
        let steps = self.plan.steps.clone();
        self.step_times = vec![None; total];
        let mut failed = false;
        for (i, st) in steps.iter().enumerate() {
            if let Err(e) = self.check_time(&format!("step {}", i + 1)) {
                report.errors.push(e.to_string());
                failed = true;
                break;
            }
            let t0 = Instant::now();
            let start = epoch_now();
            let (r, attempts) = if st.background {
                (self.start_background(st), 1)
            } else {
                self.step_with_retries(st)
            };
            if let Some(t) = self.step_times.get_mut(i) {
                *t = Some(StepTime {
                    start,
                    end: epoch_now(),
                });
            }
            let tries = |d: String| {
                if attempts > 1 {
                    format!("attempt {attempts} of {}: {d}", st.retries + 1)
                } else {
                    d
                }
            };
            let res = StepResult {
                index: i + 1,
                label: st.label.clone(),
                ok: r.is_ok(),
                detail: match r {
                    Ok(d) => tries(d),
                    Err(e) => tries(format!("{e:#}")),
                },
                elapsed_ms: ms(t0.elapsed()),
            };
            self.opts.progress.step(&self.plan.name, total, &res);
            let ok = res.ok;
            report.steps.push(res);
            if !ok {
                failed = true;
                break;
            }
        }
        self.wait_background();
        self.stop_captures(report);
        self.collect_logs(report);
        // A signal during the last step (or any step that does not poll for it) must not let
        // the run go on to a verdict.
        if interrupted() {
            mark_if_interrupted(report, "during the steps; expectations not evaluated");
            report.expects_skipped = self.plan.expects.len();
            return;
        }
        // After a failed step the expectations still run: the captures are the evidence.
        self.evaluate(report, failed);
    }

    /// Starts a background step on its own thread; a later `join` step judges it.
    fn start_background(&mut self, st: &PlannedStep) -> Result<String> {
        let (StepAction::Load { host, .. } | StepAction::TcpSessions { host, .. }) = &st.kind
        else {
            bail!("only load and tcp_sessions steps run in the background");
        };
        let name = st
            .name
            .clone()
            .ok_or_else(|| anyhow!("a background step needs a name"))?;
        let (ns, kind) = (self.ns(host), st.kind.clone());
        let h = std::thread::Builder::new()
            .name(format!("bg-{name}"))
            .spawn(move || traffic_step(&ns, &kind))
            .context("starting a background step thread")?;
        self.background.insert(name.clone(), h);
        Ok(format!("running in the background until join {name:?}"))
    }

    /// After a failed step: lets background steps that no `join` collected finish (they are
    /// bounded by their own counts and timeouts) before the captures stop and the namespaces
    /// go, unless a signal or the scenario timeout comes first.
    fn wait_background(&mut self) {
        for (_, h) in std::mem::take(&mut self.background) {
            while !h.is_finished() && !interrupted() && Instant::now() <= self.deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Runs a step, again up to `retries` times while it fails (each attempt bounded by its
    /// own timeout; a signal or the scenario timeout stops the retries). Returns the last
    /// result and the number of attempts.
    fn step_with_retries(&mut self, st: &PlannedStep) -> (Result<String>, u32) {
        let (delay, deadline) = (st.retry_delay, self.deadline);
        let pause = move || -> bool {
            let end = Instant::now() + delay;
            while Instant::now() < end && !interrupted() {
                std::thread::sleep(
                    end.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(20)),
                );
            }
            !interrupted() && Instant::now() <= deadline
        };
        with_retries(st.retries, |_| self.step(&st.kind), pause)
    }

    fn build_topology(&mut self) -> Result<()> {
        let tp = self.plan.topology.clone();
        let prefix = self
            .dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let topo = self.topo.insert(Topology::new(&prefix)?);
        for (name, kind) in &tp.nodes {
            let k = match kind {
                PlannedNodeKind::Host => NodeKind::Host,
                PlannedNodeKind::Switch => NodeKind::Switch,
            };
            topo.add_node(name, k)?;
        }
        for s in &tp.early_sysctls {
            topo.sysctl(&s.node, &s.key, &s.value)?;
        }
        for l in &tp.links {
            topo.set_default_offloads(!l.offloads);
            let end = |e: &scenario::PlannedLinkEnd| LinkEnd {
                node: e.node.clone(),
                iface: e.iface.clone(),
                mac: e.mac,
            };
            topo.add_link(&end(&l.a), &end(&l.b))?;
        }
        topo.set_default_offloads(true);
        for o in &tp.offloads {
            topo.set_offload(&o.node, &o.iface, &o.feature, o.on)?;
        }
        for a in &tp.addresses {
            topo.add_address(&a.node, &a.iface, a.addr, a.prefix_len)?;
        }
        for s in &tp.sysctls {
            topo.sysctl(&s.node, &s.key, &s.value)?;
        }
        for r in &tp.routes {
            topo.add_route(
                &r.node,
                &RouteSpec {
                    dest: r.dest,
                    via: r.via,
                    dev: r.dev.clone(),
                    table: r.table,
                    local: r.local,
                },
            )?;
        }
        for r in &tp.rules {
            topo.add_rule_fwmark(&r.node, r.fwmark, r.table, r.v6)?;
        }
        for (node, rules) in &tp.nft {
            topo.nft(node, rules)?;
        }
        for (node, argv) in &tp.commands {
            topo.run_command(node, argv)?;
        }
        // After the hosts' own rulesets and commands, so that a `flush ruleset` there cannot
        // undo them.
        for im in &tp.impairments {
            topo.impair(
                &im.node,
                &im.iface,
                &Impairment {
                    loss_percent: im.loss_percent,
                    rate_bps: im.rate_bps,
                    burst_bytes: im.burst_bytes,
                },
            )?;
        }
        self.check_time("topology")
    }

    fn replan_with_macs(&mut self) -> Result<()> {
        let Some(topo) = &self.topo else {
            bail!("no topology");
        };
        let mut macs = BTreeMap::new();
        for l in &self.plan.topology.links {
            for e in [&l.a, &l.b] {
                macs.insert(
                    (e.node.clone(), e.iface.clone()),
                    topo.mac(&e.node, &e.iface)?,
                );
            }
        }
        // `{run_dir}`: this run's output directory, for files processes make at run time
        // (certificates, sockets) so that parallel runs never share a path.
        self.sc
            .vars
            .insert("run_dir".into(), self.dir.display().to_string());
        let plan = self
            .sc
            .plan(&self.file, &self.plan.name, Some(macs))
            .map_err(|e| anyhow!("{e}"))?;
        self.plan = plan;
        Ok(())
    }

    fn start_captures(&mut self) -> Result<()> {
        for c in self.plan.captures.clone() {
            let path = self.dir.join(format!("{}.pcap", c.name));
            let cap = start_capture(&self.ns(&c.host), &c.iface, &c.filter, &path)
                .with_context(|| format!("capture {:?} ({}:{})", c.name, c.host, c.iface))?;
            self.captures.push((c.name.clone(), cap));
        }
        Ok(())
    }

    fn stop_captures(&mut self, report: &mut ScenarioReport) {
        for (name, cap) in std::mem::take(&mut self.captures) {
            let path = cap.path.clone();
            let spec = self.plan.captures.iter().find(|c| c.name == name);
            let (host, iface) = spec
                .map(|c| (c.host.clone(), c.iface.clone()))
                .unwrap_or_default();
            match cap.stop() {
                Ok(st) => report.captures.push(CaptureResult {
                    name,
                    host,
                    iface,
                    path,
                    frames: st.frames,
                    dropped: st.dropped,
                }),
                Err(e) => report
                    .errors
                    .push(format!("stopping capture {name}: {e:#}")),
            }
        }
    }

    fn collect_logs(&self, report: &mut ScenarioReport) {
        for p in &self.plan.processes {
            let log = self.dir.join(format!("{}.log", p.name));
            if log.is_file() && !report.logs.contains(&log) {
                report.logs.push(log);
            }
        }
    }

    fn argv(&self, p: &PlannedProcess) -> Vec<String> {
        match &p.kind {
            PlannedProcessKind::Pen(args) => {
                let mut v = vec![self.opts.pen_bin.display().to_string()];
                v.extend(args.iter().cloned());
                v
            }
            PlannedProcessKind::Backend { kind, listen } => {
                let k = match kind {
                    PlannedBackend::Http { name } => BackendKind::Http { name: name.clone() },
                    PlannedBackend::Dns { name, answer } => BackendKind::Dns {
                        name: name.clone(),
                        answer: *answer,
                    },
                    PlannedBackend::TcpEcho => BackendKind::TcpEcho,
                    PlannedBackend::UdpEcho => BackendKind::UdpEcho,
                };
                let mut v = vec![self.opts.self_exe.display().to_string()];
                v.extend(backend_argv(&k, listen));
                v
            }
            PlannedProcessKind::Command(argv) => argv.clone(),
        }
    }

    fn start_proc(&mut self, p: &PlannedProcess) -> Result<()> {
        if let Some(old) = self.procs.get_mut(&p.name) {
            if old.running() {
                bail!("already running (pid {})", old.pid);
            }
            self.procs.remove(&p.name);
        }
        let argv = self.argv(p);
        if let PlannedProcessKind::Pen(_) = p.kind
            && !self.opts.pen_bin.is_file()
        {
            bail!(
                "pen binary {} not found; build it (cargo build -p pen) or set PEN_BIN",
                self.opts.pen_bin.display()
            );
        }
        let ns = self.ns(&p.host);
        let log = self.dir.join(format!("{}.log", p.name));
        let mut proc = node::spawn(&ns, &p.name, &argv, &p.env, &log)?;
        let t0 = Instant::now();
        let pid = proc.pid;
        // Every wait gives up as soon as the process exits: a pen that rejects its arguments
        // fails the scenario at once, not after `ready_timeout_ms`.
        let res = (|| -> Result<()> {
            for r in &p.ready {
                let left = p.ready_timeout.saturating_sub(t0.elapsed());
                match r {
                    ReadyCheck::Tcp(a) => node::wait_tcp_listening_by(&ns, *a, left, pid)?,
                    ReadyCheck::Udp(a) => node::wait_udp_bound_by(&ns, *a, left, pid)?,
                    ReadyCheck::Path(f) => node::wait_path_by(f, left, Some(pid))?,
                    ReadyCheck::Delay(d) => node::sleep_by(*d, pid)?,
                }
            }
            Ok(())
        })();
        if let Some(st) = proc.try_wait()? {
            bail!(
                "exited ({st}) {} ms after start, before it was ready; last log lines ({}):\n{}",
                ms(t0.elapsed()),
                proc.log.display(),
                indent(&proc.log_lines(LOG_LINES))
            );
        }
        if let Err(e) = res {
            let tail = indent(&proc.log_lines(LOG_LINES));
            let _ = proc.stop(Duration::from_millis(200));
            bail!(
                "{e:#}; not ready after {} ms; last log lines:\n{tail}",
                ms(p.ready_timeout)
            );
        }
        self.opts.progress.line(&format!(
            "[{}] started {} on {} (pid {}, ready in {} ms)",
            self.plan.name,
            p.name,
            p.host,
            proc.pid,
            ms(t0.elapsed())
        ));
        self.procs.insert(p.name.clone(), proc);
        Ok(())
    }

    /// A `replay` step: simulate the trace, replay it live from `r.host` while the events
    /// stop/start their processes at their times, write the details into
    /// `<run dir>/replay-N/`, and check that simulation and replay agree.
    fn replay_step(&mut self, r: &crate::replay::PlannedReplay) -> Result<String> {
        let ns = self.ns(&r.host);
        let n = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|x| x.ok())
                    .filter(|x| x.file_name().to_string_lossy().starts_with("replay-"))
                    .count()
            })
            .unwrap_or(0);
        let out_dir = self.dir.join(format!("replay-{}", n + 1));
        let deadline = self.deadline;
        let keep_going = move || !interrupted() && Instant::now() <= deadline;
        let res = crate::replay::replay_and_compare(&ns, r, &out_dir, keep_going, |action| {
            let (i, up) = match action {
                pen::sim::balance::Action::Down(i) => (*i, false),
                pen::sim::balance::Action::Up(i) => (*i, true),
                pen::sim::balance::Action::Penctl(_) => return Ok(String::new()),
            };
            let step = crate::fault::live_event(&self.plan, r, i, up)?;
            self.step(&step)
        });
        // Per-flow results into report.json too (the step may have failed on agreement).
        if let Some(flows) = std::fs::read_to_string(out_dir.join("flows.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
        {
            self.replays.push(crate::report::ReplayDetails {
                dir: out_dir.clone(),
                flows,
            });
        }
        // The summary on its own progress line: the step line shortens long details.
        if let Ok(detail) = &res {
            self.opts
                .progress
                .line(&format!("[{}] replay: {detail}", self.plan.name));
        }
        res
    }

    /// Runs one step; `Ok(detail)` or `Err(why it failed)`.
    fn step(&mut self, k: &StepAction) -> Result<String> {
        match k {
            StepAction::HttpGet {
                host,
                addr,
                path,
                src,
                expect_body,
                expect_body_contains,
                expect_status,
                expect_fail,
                timeout,
            } => {
                let r = traffic::http_get(&self.ns(host), *addr, path, *src, *timeout);
                match (r, expect_fail) {
                    (Err(e), true) => Ok(format!("failed as expected: {e:#}")),
                    (Err(e), false) => Err(e),
                    (Ok(rep), true) => bail!(
                        "expected the request to fail, got status {} body {:?}",
                        rep.status,
                        rep.body
                    ),
                    (Ok(rep), false) => {
                        let want_status = expect_status.unwrap_or(200);
                        if rep.status != want_status {
                            bail!("status {}, expected {want_status}", rep.status);
                        }
                        if let Some(b) = expect_body
                            && rep.body.trim_end() != b.trim_end()
                        {
                            bail!("body {:?}, expected {b:?}", rep.body);
                        }
                        if let Some(b) = expect_body_contains
                            && !rep.body.contains(b.as_str())
                        {
                            bail!("body {:?} does not contain {b:?}", rep.body);
                        }
                        Ok(format!("{} {:?}", rep.status, rep.body.trim_end()))
                    }
                }
            }
            StepAction::Dns {
                host,
                server,
                qname,
                src,
                expect,
                expect_fail,
                timeout,
                count,
            } => {
                let r =
                    traffic::dns_queries(&self.ns(host), *server, qname, *src, *timeout, *count);
                match (r, expect_fail) {
                    (Err(e), true) => Ok(format!("failed as expected: {e:#}")),
                    (Err(e), false) => Err(e),
                    (Ok(a), true) => bail!("expected no answer, got {a:?}"),
                    (Ok(a), false) => check_dns_answer(&a, expect).map_err(|m| anyhow!(m)),
                }
            }
            StepAction::TcpConnect {
                host,
                addr,
                src,
                expect,
                timeout,
            } => {
                let got = tcp_probe(&self.ns(host), *addr, *src, *timeout)?;
                if got != *expect {
                    bail!("got {got:?}, expected {expect:?}");
                }
                Ok(format!("{got:?}"))
            }
            StepAction::Load { host, .. } | StepAction::TcpSessions { host, .. } => {
                traffic_step(&self.ns(host), k)
            }
            StepAction::Join(name) => {
                let handle = self
                    .background
                    .remove(name)
                    .ok_or_else(|| anyhow!("background step {name:?} is not running"))?;
                // The background step is bounded by its own counts and timeouts; poll so that
                // Ctrl-C and the scenario timeout are seen while it runs.
                while !handle.is_finished() {
                    self.check_time(&format!("join {name}"))?;
                    std::thread::sleep(Duration::from_millis(20));
                }
                handle
                    .join()
                    .map_err(|_| anyhow!("background step {name:?} panicked"))?
            }
            StepAction::Stop(name) => {
                let p = self
                    .procs
                    .get_mut(name)
                    .ok_or_else(|| anyhow!("process {name:?} is not running"))?;
                p.stop(Duration::from_millis(500))?;
                self.procs.remove(name);
                Ok(String::new())
            }
            StepAction::Start(name) => {
                let p = self
                    .plan
                    .processes
                    .iter()
                    .find(|p| &p.name == name)
                    .cloned()
                    .ok_or_else(|| anyhow!("no process {name:?}"))?;
                self.start_proc(&p)?;
                Ok(String::new())
            }
            StepAction::Penctl {
                host,
                target,
                command,
                expect_contains,
                timeout,
            } => {
                if !self.opts.penctl_bin.is_file() {
                    bail!(
                        "penctl binary {} not found; build it (cargo build -p pen) or set PENCTL_BIN",
                        self.opts.penctl_bin.display()
                    );
                }
                let mut argv = vec![self.opts.penctl_bin.display().to_string(), target.clone()];
                argv.extend(command.iter().cloned());
                let out = traffic::run_command(&self.ns(host), &argv, *timeout)?;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                if !out.status.success() {
                    bail!("penctl exited with {}: {}", out.status, text.trim_end());
                }
                if let Some(w) = expect_contains
                    && !text.contains(w.as_str())
                {
                    bail!("reply {:?} does not contain {w:?}", text.trim_end());
                }
                Ok(short(&text))
            }
            StepAction::Run {
                host,
                argv,
                expect_exit,
                expect_contains,
                timeout,
            } => {
                let out = traffic::run_command(&self.ns(host), argv, *timeout)?;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let code = out.status.code();
                if code != Some(*expect_exit) {
                    bail!(
                        "exit {}, expected {expect_exit}; output: {}",
                        code.map_or_else(|| out.status.to_string(), |c| c.to_string()),
                        short(&text)
                    );
                }
                if let Some(w) = expect_contains
                    && !text.contains(w.as_str())
                {
                    bail!("output does not contain {w:?}: {}", short(&text));
                }
                Ok(format!("exit {expect_exit}"))
            }
            StepAction::Replay(r) => self.replay_step(r),
            StepAction::Fault(f) => {
                let topo = self
                    .topo
                    .as_mut()
                    .ok_or_else(|| anyhow!("{f}: there is no topology"))?;
                crate::fault::apply(topo, &mut self.procs, f)
            }
            StepAction::Inject(i) => {
                let topo = self
                    .topo
                    .as_ref()
                    .ok_or_else(|| anyhow!("inject: there is no topology"))?;
                let deadline = self.deadline;
                crate::inject::run_step(topo, i, move || {
                    !interrupted() && Instant::now() <= deadline
                })
            }
            StepAction::Wait(d) => {
                // Sleep in slices so that Ctrl-C and the scenario timeout cut it short.
                let end = Instant::now() + *d;
                while Instant::now() < end {
                    self.check_time("wait")?;
                    std::thread::sleep(
                        end.saturating_duration_since(Instant::now())
                            .min(Duration::from_millis(50)),
                    );
                }
                Ok(String::new())
            }
        }
    }

    fn evaluate(&self, report: &mut ScenarioReport, after_failure: bool) {
        evaluate_expects(
            &self.plan,
            |cap| self.dir.join(format!("{cap}.pcap")),
            self.opts,
            report,
            EvalCtx {
                times: &self.step_times,
                after_failure,
            },
        );
    }
}

/// Calls `attempt(n)` for n = 1, 2, ... until it succeeds or `retries` further attempts have
/// failed; before each further attempt `pause()` waits and says whether to go on (false on a
/// signal or the scenario deadline). Returns the last result and the number of attempts.
/// Runs a `load` or `tcp_sessions` step in namespace `ns` and judges it; free of the runner, so
/// that it can run on a background thread.
fn traffic_step(ns: &str, k: &StepAction) -> Result<String> {
    match k {
        StepAction::Load {
            addr,
            path,
            requests,
            concurrency,
            src,
            min_ok,
            share,
            tolerance,
            timeout,
            interval,
            max_outage,
            ..
        } => {
            let (r, outage) = match interval {
                Some(i) => {
                    let p = traffic::http_paced(ns, *addr, path, *requests, *i, *src, *timeout)?;
                    (p.load, Some(p.outage))
                }
                None => (
                    traffic::http_load(ns, *addr, path, *requests, *concurrency, *src, *timeout)?,
                    None,
                ),
            };
            let bodies: Vec<String> = r
                .by_body
                .iter()
                .map(|(b, n)| format!("{}: {n}", b.trim_end()))
                .collect();
            let mut detail = format!(
                "{} ok, {} failed in {} ms ({})",
                r.ok,
                r.failed,
                ms(r.elapsed),
                bodies.join(", ")
            );
            if let Some(o) = outage {
                let _ = write!(
                    detail,
                    "; longest outage {} ms ({} failed in a row)",
                    ms(o.duration),
                    o.failed
                );
            }
            if r.ok < *min_ok {
                bail!("{detail}; expected at least {min_ok} ok");
            }
            if let (Some(o), Some(max)) = (outage, max_outage)
                && o.duration > *max
            {
                bail!("{detail}; expected an outage of at most {} ms", ms(*max));
            }
            check_load_share(&r.by_body, r.ok, share, *tolerance)
                .map_err(|m| anyhow!("{detail}; {m}"))?;
            Ok(detail)
        }
        StepAction::TcpSessions {
            addr,
            src,
            sessions,
            rounds,
            interval,
            timeout,
            min_ok,
            min_failed,
            ..
        } => {
            let r =
                traffic::tcp_sessions(ns, *addr, *src, *sessions, *rounds, *interval, *timeout)?;
            let mut detail = format!(
                "{} of {sessions} sessions completed, {} failed in {} ms",
                r.ok,
                r.failed,
                ms(r.elapsed)
            );
            if !r.errors.is_empty() {
                let _ = write!(detail, " ({})", r.errors.join("; "));
            }
            if r.ok < *min_ok {
                bail!("{detail}; expected at least {min_ok} to complete");
            }
            if r.failed < *min_failed {
                bail!("{detail}; expected at least {min_failed} to fail");
            }
            Ok(detail)
        }
        _ => bail!("not a traffic step"),
    }
}

pub fn with_retries<T>(
    retries: u32,
    mut attempt: impl FnMut(u32) -> Result<T>,
    mut pause: impl FnMut() -> bool,
) -> (Result<T>, u32) {
    let mut n = 1;
    loop {
        let r = attempt(n);
        if r.is_ok() || n > retries || !pause() {
            return (r, n);
        }
        n += 1;
    }
}

/// Wall-clock time since the epoch (what pcap timestamps count).
fn epoch_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Checks DNS answers against the acceptable sets (order inside a set does not matter).
pub fn check_dns_answer(got: &[Ipv4Addr], acceptable: &[Vec<Ipv4Addr>]) -> Result<String, String> {
    let mut a = got.to_vec();
    a.sort();
    let sorted: Vec<Vec<Ipv4Addr>> = acceptable
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.sort();
            s
        })
        .collect();
    if sorted.contains(&a) {
        return Ok(format!("answer {a:?}"));
    }
    match sorted.as_slice() {
        [one] => Err(format!("answer {a:?}, expected {one:?}")),
        many => Err(format!(
            "answer {a:?}, expected one of {}",
            many.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Lines of a process log shown with a start-up failure.
const LOG_LINES: usize = 10;

fn indent(s: &str) -> String {
    if s.is_empty() {
        return "      (the log is empty)".to_string();
    }
    s.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn short(s: &str) -> String {
    let t = s.trim();
    if t.chars().count() > 200 {
        format!("{}…", t.chars().take(200).collect::<String>())
    } else {
        t.to_string()
    }
}

/// Checks a load's distribution of bodies against the expected shares.
pub fn check_load_share(
    by_body: &BTreeMap<String, u64>,
    ok: u64,
    share: &BTreeMap<String, f64>,
    tolerance: f64,
) -> Result<(), String> {
    if share.is_empty() {
        return Ok(());
    }
    if ok == 0 {
        return Err("no successful request to measure shares on".into());
    }
    let mut why = Vec::new();
    for (body, want) in share {
        let n: u64 = by_body
            .iter()
            .filter(|(b, _)| b.trim_end() == body.trim_end())
            .map(|(_, n)| *n)
            .sum();
        let have = n as f64 / ok as f64;
        if (have - want).abs() > tolerance {
            why.push(format!(
                "{body} got {have:.2}, expected {want:.2}±{tolerance}"
            ));
        }
    }
    for (b, n) in by_body {
        if !share.keys().any(|k| k.trim_end() == b.trim_end()) {
            why.push(format!("{n} answers from unlisted {:?}", b.trim_end()));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// A TCP connect that tells "refused" (RST) from "no answer" — what the tarpit and the
/// closed-port checks need.
pub fn tcp_probe(
    ns: &str,
    addr: SocketAddr,
    src: Option<IpAddr>,
    timeout: Duration,
) -> Result<ConnectExpect> {
    crate::netns::in_netns(ns, move || -> Result<ConnectExpect> {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let dom = if addr.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let s = Socket::new(dom, Type::STREAM, Some(Protocol::TCP)).context("creating a socket")?;
        if let Some(ip) = src {
            s.bind(&SockAddr::from(SocketAddr::new(ip, 0)))
                .with_context(|| format!("binding source {ip}"))?;
        }
        match s.connect_timeout(&SockAddr::from(addr), timeout) {
            Ok(()) => Ok(ConnectExpect::Open),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Ok(ConnectExpect::Closed)
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                Ok(ConnectExpect::Timeout)
            }
            Err(e) => Err(anyhow!("connect to {addr}: {e}")),
        }
    })?
    .with_context(|| format!("TCP probe of {addr} from namespace {ns:?}"))
}
