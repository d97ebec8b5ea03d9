//! Pure statistics and report rendering (`report.md`, `samples.tsv`; the chart is in `chart`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::*;

/// Where the full run writes its report by default (committed to the repository).
pub const FULL_OUT_DIR: &str = "results";
/// Where `--quick` writes its report by default: under the build directory, so a smoke run
/// never overwrites the committed full report in [`FULL_OUT_DIR`].
pub const QUICK_OUT_DIR: &str = "target/bench-quick";

/// The report directory: `--out` when given, else the default of the run's kind.
pub fn out_dir(quick: bool, out: Option<PathBuf>) -> PathBuf {
    out.unwrap_or_else(|| PathBuf::from(if quick { QUICK_OUT_DIR } else { FULL_OUT_DIR }))
}

/// min, median, max of a non-empty sample set (median of an even count: the mean of the two
/// middle values).
pub fn summary(samples: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], med, v[n - 1]))
}

/// `a / b`, or `None` when it means nothing (no reference, zero reference).
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.abs() > f64::EPSILON => Some(a / b),
        _ => None,
    }
}

pub(super) fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub(super) fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}"))
        .unwrap_or_else(|| "—".to_string())
}

/// Everything a run measured, plus what the report says about its setting.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub samples: BTreeMap<(Figure, Target), Vec<f64>>,
    /// Measurements that failed, in order, as "figure / target: error".
    pub errors: Vec<String>,
    /// Notes (failed requests, unreachable peers, DSR state...).
    pub notes: Vec<String>,
    /// Key/value lines of the header: command, machine, versions, offloads.
    pub setting: Vec<(String, String)>,
}

impl Results {
    pub fn add(&mut self, f: Figure, t: Target, v: f64) {
        self.samples.entry((f, t)).or_default().push(v);
    }

    pub fn median(&self, f: Figure, t: Target) -> Option<f64> {
        self.samples
            .get(&(f, t))
            .and_then(|s| summary(s))
            .map(|s| s.1)
    }

    /// The markdown report.
    pub fn markdown(&self, plan: &Plan) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# pen-lab bench report\n");
        for (k, v) in &self.setting {
            let _ = writeln!(o, "- **{k}:** {v}");
        }
        let _ = writeln!(
            o,
            "\nEvery figure: median (min–max) over {} repetition(s), target order rotated between \
             repetitions; ×direct and ×C Pen are ratios of medians. \"—\": not applicable.\n",
            plan.reps
        );
        let _ = writeln!(
            o,
            "| figure | unit | target | median | min | max | ×direct | ×C Pen |"
        );
        let _ = writeln!(o, "|---|---|---|---:|---:|---:|---:|---:|");
        for f in Figure::ALL {
            for t in Target::ALL {
                let Some(samples) = self.samples.get(&(f, t)) else {
                    continue;
                };
                let Some((lo, med, hi)) = summary(samples) else {
                    continue;
                };
                let d = ratio(Some(med), self.median(f, Target::Direct));
                let c = ratio(Some(med), self.median(f, Target::CPen));
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    plan.describe(f),
                    f.unit(),
                    t.label(),
                    fmt_value(med),
                    fmt_value(lo),
                    fmt_value(hi),
                    fmt_ratio(d),
                    fmt_ratio(c)
                );
            }
        }
        let _ = writeln!(o, "\n## pen-rs against the issue's targets\n");
        let _ = writeln!(
            o,
            "| figure | goal | pen-rs | C Pen (this run) | C Pen (issue) | met |"
        );
        let _ = writeln!(o, "|---|---|---:|---:|---:|---|");
        for f in Figure::ALL {
            match f.goal() {
                Goal::RatioToDirect { min, c_pen } => {
                    let d = self.median(f, Target::Direct);
                    let p = ratio(self.median(f, Target::PenRs), d);
                    let c = ratio(self.median(f, Target::CPen), d);
                    let met = match p {
                        Some(p) if p >= min => "yes",
                        Some(_) => "no",
                        None => "not measured",
                    };
                    let _ = writeln!(
                        o,
                        "| {} | ≥ {min:.2} × direct | {} | {} | {c_pen:.2} | {met} |",
                        plan.describe(f),
                        fmt_ratio(p),
                        fmt_ratio(c)
                    );
                }
                Goal::AtMost(max) => {
                    let p = self.median(f, Target::PenRs);
                    let c = self.median(f, Target::CPen);
                    let met = match p {
                        Some(p) if p <= max => "yes",
                        Some(_) => "no",
                        None => "not measured",
                    };
                    let _ = writeln!(
                        o,
                        "| {} | ≤ {} {} | {} | {} | | {met} |",
                        plan.describe(f),
                        fmt_value(max),
                        f.unit(),
                        p.map(fmt_value).unwrap_or_else(|| "—".into()),
                        c.map(fmt_value).unwrap_or_else(|| "—".into()),
                    );
                }
                Goal::AtLeast(min) => {
                    let p = self.median(f, Target::PenRs);
                    let c = self.median(f, Target::CPen);
                    let met = match p {
                        Some(p) if p >= min => "yes",
                        Some(_) => "no",
                        None => "not measured",
                    };
                    let _ = writeln!(
                        o,
                        "| {} | ≥ {} {} | {} | {} | | {met} |",
                        plan.describe(f),
                        fmt_value(min),
                        f.unit(),
                        p.map(fmt_value).unwrap_or_else(|| "—".into()),
                        c.map(fmt_value).unwrap_or_else(|| "—".into()),
                    );
                }
                Goal::None => {}
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(o, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(o, "- {n}");
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(o, "\n## Failed measurements\n");
            for e in &self.errors {
                let _ = writeln!(o, "- {e}");
            }
        }
        o
    }

    /// The chart (SVG, see [`chart`]): for every throughput figure, each balancer's median as
    /// a ratio to direct's median, with whiskers from its lowest to its highest sample (over
    /// direct's median), pen-rs's goal marked, and a caption naming the run.
    pub fn svg(&self, plan: &Plan) -> String {
        chart::render(&self.chart(plan))
    }

    /// The chart's data.
    pub fn chart(&self, plan: &Plan) -> chart::Chart {
        let bal = [
            (Target::PenRs, "#d9480f"),
            (Target::PenRsTokio, "#f59f00"),
            (Target::CPen, "#1971c2"),
            (Target::HAProxy, "#5c940d"),
        ];
        let rows = Figure::ALL
            .into_iter()
            .filter(|f| f.higher_is_better())
            .filter_map(|f| {
                let d = self
                    .median(f, Target::Direct)
                    .filter(|d| d.abs() > f64::EPSILON)?;
                let bars = bal
                    .iter()
                    .map(|(t, color)| chart::Bar {
                        target: t.label().to_string(),
                        color: color.to_string(),
                        ratios: self
                            .samples
                            .get(&(f, *t))
                            .and_then(|s| summary(s))
                            .map(|(lo, med, hi)| (lo / d, med / d, hi / d)),
                    })
                    .collect();
                Some(chart::Row {
                    key: format!("{f:?}"),
                    label: plan.describe(f),
                    goal: match f.goal() {
                        Goal::RatioToDirect { min, .. } => Some(min),
                        _ => None,
                    },
                    bars,
                })
            })
            .collect();
        let get = |k: &str| {
            self.setting
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("unknown")
        };
        // "git c48fe2a, release build, /path/to/pen": the path stays in the report.
        let pen_rs: Vec<&str> = get("pen-rs").splitn(3, ", ").take(2).collect();
        chart::Chart {
            title: "pen-lab bench: throughput through each balancer as a ratio to direct (higher is better)"
                .into(),
            rows,
            reps: plan.reps,
            caption: vec![
                format!(
                    "Run of {}; pen-rs {}; {} repetition(s), target order rotated.",
                    get("date"),
                    pen_rs.join(", "),
                    plan.reps
                ),
                format!("Machine: {}.", get("machine")),
            ],
        }
    }
}

pub(super) fn date_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Writes `report.md`, `chart.svg` and `samples.tsv` (every raw sample) into `out`.
pub fn write_report(out: &Path, plan: &Plan, res: &Results) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut md = res.markdown(plan);
    md.push_str("\n![ratio to direct](chart.svg)\n");
    std::fs::write(out.join("report.md"), md)
        .with_context(|| format!("writing {}/report.md", out.display()))?;
    std::fs::write(out.join("chart.svg"), res.svg(plan))
        .with_context(|| format!("writing {}/chart.svg", out.display()))?;
    let mut tsv = String::from("figure\tunit\ttarget\tsamples\n");
    for ((f, t), v) in &res.samples {
        let vals: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
        let _ = writeln!(
            tsv,
            "{f:?}\t{}\t{}\t{}",
            f.unit(),
            t.label(),
            vals.join(",")
        );
    }
    std::fs::write(out.join("samples.tsv"), tsv)
        .with_context(|| format!("writing {}/samples.tsv", out.display()))?;
    Ok(())
}
