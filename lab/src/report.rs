//! Results of scenario runs: progress lines, human summaries and the `--json` report.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

/// One step's result.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    /// 1-based.
    pub index: usize,
    pub label: String,
    pub ok: bool,
    pub detail: String,
    pub elapsed_ms: u64,
}

/// One expectation's result.
#[derive(Clone, Debug, Serialize)]
pub struct ExpectResult {
    pub name: String,
    pub capture: String,
    /// The expectation in compiled form, e.g. `every {dst_port=80} also {ip_src=10.71.0.2}`.
    pub rule: String,
    pub ok: bool,
    pub detail: String,
    /// Up to 10 offending frames, decoded one per line.
    pub offending: Vec<String>,
    /// How many frames offended in total.
    pub offending_total: usize,
    pub capture_path: Option<PathBuf>,
    /// Evaluated after a step had failed: evidence from the captures, not a verdict on a
    /// scenario that ran to the end.
    #[serde(default)]
    pub after_failure: bool,
}

/// One capture file written by the run.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureResult {
    pub name: String,
    pub host: String,
    pub iface: String,
    pub path: PathBuf,
    pub frames: u64,
    pub dropped: u64,
}

/// Everything about one scenario run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub file: PathBuf,
    pub run_id: String,
    pub dir: Option<PathBuf>,
    pub ok: bool,
    /// SIGINT/SIGTERM arrived while this scenario ran (at any point up to its report): the
    /// scenario never counts as passed.
    pub interrupted: bool,
    /// Setup, timeout, interrupt or teardown problems (outside steps and expectations).
    pub errors: Vec<String>,
    pub steps: Vec<StepResult>,
    pub expects: Vec<ExpectResult>,
    /// Expectations not evaluated (set-up failed, or the run was interrupted).
    pub expects_skipped: usize,
    pub captures: Vec<CaptureResult>,
    pub logs: Vec<PathBuf>,
    /// Namespaces left in place by `--keep`.
    pub kept_namespaces: Vec<String>,
    pub elapsed_ms: u64,
}

impl ScenarioReport {
    /// Recomputes `ok` from the parts.
    pub fn finish(&mut self) {
        self.ok = !self.interrupted
            && self.errors.is_empty()
            && self.steps.iter().all(|s| s.ok)
            && self.expects.iter().all(|e| e.ok)
            && self.expects_skipped == 0;
    }
}

/// The whole invocation (`pen-lab run a b c --json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub scenarios: Vec<ScenarioReport>,
    pub passed: usize,
    /// Scenarios that did not pass, interrupted ones included.
    pub failed: usize,
    /// Of `failed`, the scenarios a SIGINT/SIGTERM cut short.
    pub interrupted: usize,
    /// Scenarios named on the command line that never started (the run was interrupted).
    pub not_run: Vec<String>,
}

impl RunReport {
    pub fn push(&mut self, r: ScenarioReport) {
        if r.ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        if r.interrupted {
            self.interrupted += 1;
        }
        self.scenarios.push(r);
    }

    /// True when every scenario ran and passed.
    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.interrupted == 0 && self.not_run.is_empty()
    }

    /// The final line: `N passed, N failed`, then `, N interrupted, N not run` when a signal
    /// cut the run short.
    pub fn summary_line(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed, self.failed);
        if self.interrupted > 0 || !self.not_run.is_empty() {
            s.push_str(&format!(
                " ({} interrupted), {} not run",
                self.interrupted,
                self.not_run.len()
            ));
        }
        s
    }
}

/// `PASSED`, `FAILED` or `INTERRUPTED`.
pub fn verdict(r: &ScenarioReport) -> &'static str {
    if r.interrupted {
        "INTERRUPTED"
    } else if r.ok {
        "PASSED"
    } else {
        "FAILED"
    }
}

/// Where progress lines go: stdout for humans, stderr when stdout carries JSON.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub json: bool,
}

impl Progress {
    pub fn line(&self, s: &str) {
        if self.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
            let _ = std::io::stdout().flush();
        }
    }

    pub fn step(&self, scenario: &str, total: usize, r: &StepResult) {
        let status = if r.ok { "ok" } else { "FAILED" };
        let detail = if r.detail.is_empty() || r.ok && r.detail.len() > 120 {
            String::new()
        } else {
            format!(": {}", r.detail)
        };
        self.line(&format!(
            "[{scenario}] step {}/{total} {} ... {status} ({} ms){detail}",
            r.index, r.label, r.elapsed_ms
        ));
    }

    pub fn expect(&self, scenario: &str, r: &ExpectResult) {
        let after = if r.after_failure {
            " (after a failed step)"
        } else {
            ""
        };
        if r.ok {
            self.line(&format!(
                "[{scenario}] expect {:?} on {}{after} ... ok: {}",
                r.name, r.capture, r.detail
            ));
            return;
        }
        let mut s = format!(
            "[{scenario}] expect {:?} on {}{after} ... FAILED\n    rule: {}\n    why:  {}",
            r.name, r.capture, r.rule, r.detail
        );
        if !r.offending.is_empty() {
            s.push_str(&format!(
                "\n    offending frames ({} of {}):",
                r.offending.len(),
                r.offending_total
            ));
            for f in &r.offending {
                s.push_str("\n      ");
                s.push_str(f);
            }
        }
        if let Some(p) = &r.capture_path {
            s.push_str(&format!(
                "\n    capture: {} (pen-lab show {})",
                p.display(),
                p.display()
            ));
        }
        self.line(&s);
    }

    pub fn scenario_end(&self, r: &ScenarioReport) {
        let steps_ok = r.steps.iter().filter(|s| s.ok).count();
        let exp_ok = r.expects.iter().filter(|e| e.ok).count();
        let after = r.expects.iter().filter(|e| e.after_failure).count();
        let mut s = format!(
            "[{}] {}: steps {steps_ok}/{}, expectations {exp_ok}/{}{}{}, {} ms",
            r.scenario,
            verdict(r),
            r.steps.len(),
            r.expects.len() + r.expects_skipped,
            if after > 0 {
                " (evaluated after a failed step)".to_string()
            } else {
                String::new()
            },
            if r.expects_skipped > 0 {
                format!(" ({} not evaluated)", r.expects_skipped)
            } else {
                String::new()
            },
            r.elapsed_ms
        );
        for e in &r.errors {
            s.push_str(&format!("\n    error: {e}"));
        }
        if !r.ok {
            for l in &r.logs {
                s.push_str(&format!("\n    log: {}", l.display()));
            }
        }
        if let Some(d) = &r.dir {
            s.push_str(&format!("\n    output: {}", d.display()));
        }
        if !r.kept_namespaces.is_empty() {
            s.push_str(&format!(
                "\n    kept namespaces: {} (remove with `pen-lab clean`)",
                r.kept_namespaces.join(" ")
            ));
        }
        self.line(&s);
    }
}
