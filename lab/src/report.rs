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
    /// Per-flow results of each `replay` step (also in its `replay-N/flows.json`).
    pub replays: Vec<ReplayDetails>,
    pub elapsed_ms: u64,
}

/// One `replay` step's flows: pool address, start, bytes each way, latency, answering backend.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayDetails {
    /// The step's directory under the run (`replay-1`, ...).
    pub dir: PathBuf,
    pub flows: serde_json::Value,
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

// ---------------------------------------------------------------------------------------------
// JUnit XML (`pen-lab run --junit FILE`)
// ---------------------------------------------------------------------------------------------

/// Escapes text for XML 1.0 attributes and content; characters XML 1.0 cannot carry (most
/// control characters) become U+FFFD.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// One `<testcase>`: `None` passed, `Some(("failure"|"error"|"skipped", message, text))`.
fn testcase(
    out: &mut String,
    class: &str,
    name: &str,
    ms: u64,
    outcome: Option<(&str, &str, &str)>,
) {
    out.push_str(&format!(
        "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
        xml_escape(class),
        xml_escape(name),
        secs(ms)
    ));
    match outcome {
        None => out.push_str("/>\n"),
        Some((tag, message, text)) => {
            out.push_str(">\n");
            if text.is_empty() {
                out.push_str(&format!(
                    "      <{tag} message=\"{}\"/>\n",
                    xml_escape(message)
                ));
            } else {
                out.push_str(&format!(
                    "      <{tag} message=\"{}\">{}</{tag}>\n",
                    xml_escape(message),
                    xml_escape(text)
                ));
            }
            out.push_str("    </testcase>\n");
        }
    }
}

/// The run as JUnit XML: one `<testsuite>` per scenario, one `<testcase>` per step and per
/// expectation; set-up/teardown errors and interruptions are `<error>`s, expectations not
/// evaluated and scenarios that never ran are `<skipped>`. Expectations evaluated after a
/// failed step carry "(after a failed step)" in their name.
pub fn junit_xml(r: &RunReport) -> String {
    struct Suite {
        body: String,
        tests: usize,
        failures: usize,
        errors: usize,
        skipped: usize,
        ms: u64,
    }
    let mut suites: Vec<(String, Suite)> = Vec::new();
    for s in &r.scenarios {
        let class = format!("pen-lab.{}", s.scenario);
        let mut su = Suite {
            body: String::new(),
            tests: 0,
            failures: 0,
            errors: 0,
            skipped: 0,
            ms: s.elapsed_ms,
        };
        for e in &s.errors {
            su.tests += 1;
            su.errors += 1;
            let name = if e.starts_with("interrupted") {
                "interrupted"
            } else {
                "set-up and teardown"
            };
            testcase(&mut su.body, &class, name, 0, Some(("error", e, "")));
        }
        if s.interrupted && !s.errors.iter().any(|e| e.starts_with("interrupted")) {
            su.tests += 1;
            su.errors += 1;
            let m = "interrupted by SIGINT/SIGTERM";
            testcase(
                &mut su.body,
                &class,
                "interrupted",
                0,
                Some(("error", m, "")),
            );
        }
        for st in &s.steps {
            su.tests += 1;
            let name = format!("step {}: {}", st.index, st.label);
            let outcome = (!st.ok).then(|| {
                su.failures += 1;
                ("failure", st.detail.as_str(), "")
            });
            testcase(&mut su.body, &class, &name, st.elapsed_ms, outcome);
        }
        for e in &s.expects {
            su.tests += 1;
            let name = format!(
                "expect on {}: {}{}",
                e.capture,
                e.name,
                if e.after_failure {
                    " (after a failed step)"
                } else {
                    ""
                }
            );
            let mut text = format!("rule: {}\nwhy: {}", e.rule, e.detail);
            if !e.offending.is_empty() {
                text.push_str(&format!(
                    "\noffending frames ({} of {}):",
                    e.offending.len(),
                    e.offending_total
                ));
                for f in &e.offending {
                    text.push_str("\n  ");
                    text.push_str(f);
                }
            }
            if let Some(p) = &e.capture_path {
                text.push_str(&format!(
                    "\ncapture: {} (pen-lab show {})",
                    p.display(),
                    p.display()
                ));
            }
            let outcome = (!e.ok).then(|| {
                su.failures += 1;
                ("failure", e.detail.as_str(), text.as_str())
            });
            testcase(&mut su.body, &class, &name, 0, outcome);
        }
        if s.expects_skipped > 0 {
            su.tests += 1;
            su.skipped += 1;
            let m = format!("{} expectations not evaluated", s.expects_skipped);
            testcase(
                &mut su.body,
                &class,
                "expectations",
                0,
                Some(("skipped", &m, "")),
            );
        }
        let mut sysout = String::new();
        if let Some(d) = &s.dir {
            sysout.push_str(&format!("output: {}\n", d.display()));
        }
        for l in &s.logs {
            sysout.push_str(&format!("log: {}\n", l.display()));
        }
        if !s.kept_namespaces.is_empty() {
            sysout.push_str(&format!(
                "kept namespaces: {}\n",
                s.kept_namespaces.join(" ")
            ));
        }
        if !sysout.is_empty() {
            su.body.push_str(&format!(
                "    <system-out>{}</system-out>\n",
                xml_escape(&sysout)
            ));
        }
        suites.push((s.scenario.clone(), su));
    }
    for f in &r.not_run {
        let mut su = Suite {
            body: String::new(),
            tests: 1,
            failures: 0,
            errors: 0,
            skipped: 1,
            ms: 0,
        };
        let m = "not run: the run was interrupted (SIGINT/SIGTERM) before this scenario started";
        testcase(&mut su.body, "pen-lab", f, 0, Some(("skipped", m, "")));
        suites.push((f.clone(), su));
    }
    let total = |f: fn(&Suite) -> usize| suites.iter().map(|(_, s)| f(s)).sum::<usize>();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"pen-lab\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\">\n",
        total(|s| s.tests),
        total(|s| s.failures),
        total(|s| s.errors),
        total(|s| s.skipped),
        secs(suites.iter().map(|(_, s)| s.ms).sum())
    ));
    for (name, s) in &suites {
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\">\n",
            xml_escape(name),
            s.tests,
            s.failures,
            s.errors,
            s.skipped,
            secs(s.ms)
        ));
        out.push_str(&s.body);
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escape_covers_markup_quotes_and_control_characters() {
        assert_eq!(
            xml_escape("a<b>&\"c\" 'd'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;c&quot; &apos;d&apos;\u{fffd}\n"
        );
    }

    fn sample() -> RunReport {
        let mut r = RunReport::default();
        let mut ok = ScenarioReport {
            scenario: "good".into(),
            elapsed_ms: 1500,
            dir: Some(PathBuf::from("captures/runs/good/penlab-000001")),
            ..ScenarioReport::default()
        };
        ok.steps.push(StepResult {
            index: 1,
            label: "dns client → 10.0.0.2:53".into(),
            ok: true,
            detail: "answer [10.0.0.3]".into(),
            elapsed_ms: 12,
        });
        ok.finish();
        r.push(ok);
        let mut bad = ScenarioReport {
            scenario: "bad".into(),
            elapsed_ms: 2000,
            ..ScenarioReport::default()
        };
        bad.steps.push(StepResult {
            index: 1,
            label: "stop dns2".into(),
            ok: false,
            detail: "process \"dns2\" is not running".into(),
            elapsed_ms: 3,
        });
        bad.expects.push(ExpectResult {
            name: "nothing reaches <dns2>".into(),
            capture: "pen-eth0".into(),
            rule: "none {to=dns2} (after \"stop dns2\")".into(),
            ok: false,
            detail: "2 frames matched".into(),
            offending: vec!["IP 10.0.0.2.4000 > 10.0.0.4.53: UDP".into()],
            offending_total: 2,
            capture_path: Some(PathBuf::from("/tmp/x/pen-eth0.pcap")),
            after_failure: true,
        });
        bad.finish();
        r.push(bad);
        let mut int = ScenarioReport {
            scenario: "cut".into(),
            interrupted: true,
            errors: vec!["interrupted by SIGINT/SIGTERM during step 1; tearing down".into()],
            expects_skipped: 3,
            ..ScenarioReport::default()
        };
        int.finish();
        r.push(int);
        r.not_run.push("scenarios/later.toml".into());
        r
    }

    #[test]
    fn junit_counts_failures_errors_and_skips_per_suite_and_in_total() {
        let x = junit_xml(&sample());
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"pen-lab\" tests=\"6\" failures=\"2\" errors=\"1\" skipped=\"2\" time=\"3.500\">"), "{x}");
        assert!(x.contains("<testsuite name=\"good\" tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"0\" time=\"1.500\">"), "{x}");
        assert!(x.contains("<testcase classname=\"pen-lab.good\" name=\"step 1: dns client → 10.0.0.2:53\" time=\"0.012\"/>"), "{x}");
        assert!(
            x.contains("<testsuite name=\"bad\" tests=\"2\" failures=\"2\""),
            "{x}"
        );
        assert!(
            x.contains(
                "name=\"expect on pen-eth0: nothing reaches &lt;dns2&gt; (after a failed step)\""
            ),
            "{x}"
        );
        assert!(x.contains("<failure message=\"2 frames matched\">rule: none {to=dns2} (after &quot;stop dns2&quot;)\nwhy: 2 frames matched\noffending frames (1 of 2):\n  IP 10.0.0.2.4000 &gt; 10.0.0.4.53: UDP\ncapture: /tmp/x/pen-eth0.pcap"), "{x}");
        assert!(
            x.contains(
                "<testsuite name=\"cut\" tests=\"2\" failures=\"0\" errors=\"1\" skipped=\"1\""
            ),
            "{x}"
        );
        assert!(x.contains("<testcase classname=\"pen-lab.cut\" name=\"interrupted\" time=\"0.000\">\n      <error message=\"interrupted by SIGINT/SIGTERM during step 1; tearing down\"/>"), "{x}");
        assert!(
            x.contains("<skipped message=\"3 expectations not evaluated\"/>"),
            "{x}"
        );
        assert!(x.contains("<testsuite name=\"scenarios/later.toml\" tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"1\""), "{x}");
        assert!(
            x.contains("<system-out>output: captures/runs/good/penlab-000001\n</system-out>"),
            "{x}"
        );
        assert!(x.trim_end().ends_with("</testsuites>"));
        // Well-formed enough for any parser: every testsuite closed, tags balanced.
        assert_eq!(
            x.matches("<testsuite ").count(),
            x.matches("</testsuite>").count()
        );
    }

    #[test]
    fn an_interrupted_scenario_never_passes_and_the_summary_says_what_did_not_run() {
        let r = sample();
        assert!(!r.scenarios[2].ok);
        assert_eq!(verdict(&r.scenarios[2]), "INTERRUPTED");
        assert!(!r.all_passed());
        assert_eq!(
            r.summary_line(),
            "1 passed, 2 failed (1 interrupted), 1 not run"
        );
        let mut clean = RunReport::default();
        clean.push(r.scenarios[0].clone());
        assert_eq!(clean.summary_line(), "1 passed, 0 failed");
        assert!(clean.all_passed());
    }
}
