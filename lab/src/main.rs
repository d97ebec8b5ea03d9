//! pen-lab: builds network topologies out of Linux namespaces, runs pen and real clients and
//! backends in them, captures traffic with libpcap and asserts on the captured frames.
//!
//! Exit codes: 0 all passed, 1 a scenario failed, 2 usage or validation errors, 130 the run
//! was interrupted (SIGINT/SIGTERM).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use pen_lab::report::RunReport;
use pen_lab::{decode, runner, scenario};

#[derive(Parser)]
#[command(
    name = "pen-lab",
    version,
    about = "Network-namespace lab for pen: scenarios, captures, assertions"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios (names in scenarios/, paths to .toml files, or `all`). Needs root unless
    /// every scenario is a `[sim]` (offline) one.
    Run {
        #[arg(required = true)]
        scenarios: Vec<String>,
        /// Print a machine-readable report on stdout (progress goes to stderr).
        #[arg(long)]
        json: bool,
        /// Leave namespaces and processes in place after the run (`pen-lab clean` removes them).
        #[arg(long)]
        keep: bool,
        /// Also write the results as JUnit XML to FILE (one testsuite per scenario).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Parse and validate scenarios without running them (no root needed).
    Check {
        #[arg(required = true)]
        scenarios: Vec<String>,
        /// Print the result as JSON on stdout (`scenarios[]` with `errors[]` of file, key,
        /// message; `valid`; `invalid`).
        #[arg(long)]
        json: bool,
    },
    /// List the scenarios with their descriptions.
    List,
    /// Remove namespaces and processes left by interrupted or `--keep` runs (names `penlab-*`
    /// only). Runs whose pen-lab process still runs are left alone.
    Clean {
        /// Only this run (`penlab-3f2a1c`, as `pen-lab run` prints it).
        run: Option<String>,
    },
    /// Print a pcap file one frame per line, decoded like the expectations see it.
    Show {
        pcap: PathBuf,
        /// A BPF filter (tcpdump syntax), e.g. "tcp port 80".
        #[arg(long)]
        filter: Option<String>,
    },
    /// Benchmark pen-rs against direct access, C Pen and HAProxy in namespaces (needs root;
    /// docs/benchmarks.md). Writes report.md, chart.svg and samples.tsv.
    Bench {
        /// Smoke run: one repetition, tiny counts (CI).
        #[arg(long)]
        quick: bool,
        /// Output directory for the report (default: `results` for the full run,
        /// `target/bench-quick` with --quick, so a smoke run never overwrites the committed
        /// full report).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Replay a trace's client traffic through a pen that already runs in a lab (a `--keep`
    /// run's namespace, e.g. penlab-3f2a1c-client), simulate the same trace, and compare
    /// (docs/scenario-format.md, `replay`). Needs root. Exit 1 when they disagree.
    Replay(Box<ReplayArgs>),
    /// Run a built-in backend (used by scenarios).
    #[command(hide = true)]
    Backend {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Network namespace to replay from (it must route to `--to`; pen's host must route
    /// the pool back to it).
    #[arg(long)]
    pub netns: String,
    /// pen's listen address, IP:PORT.
    #[arg(long)]
    pub to: String,
    /// pen's arguments as one string, for the simulation.
    #[arg(long, allow_hyphen_values = true)]
    pub pen: String,
    /// Flow selection: [tcp:|udp:][IP:]PORT (repeatable).
    #[arg(long)]
    pub server: Vec<String>,
    /// Frame selection by a BPF filter (tcpdump syntax), before --server.
    #[arg(long)]
    pub filter: Option<String>,
    /// Per server slot, how its answers name it (DNS answer address or HTTP backend name),
    /// comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub backends: Vec<String>,
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    #[arg(long, default_value_t = 10_000)]
    pub max_flows: usize,
    #[arg(long, default_value_t = 512)]
    pub max_concurrency: usize,
    /// "flows" or "shares".
    #[arg(long, default_value = "shares")]
    pub agree: String,
    #[arg(long, default_value_t = 0.05)]
    pub tolerance: f64,
    #[arg(long, default_value_t = 0)]
    pub max_disagree: usize,
    #[arg(long, default_value = "10.200.0.0/16")]
    pub pool4: String,
    /// Where the reports go.
    #[arg(long, default_value = "captures/runs/replay")]
    pub out: PathBuf,
    pub trace: PathBuf,
}

fn main() -> ExitCode {
    // Hidden: man pages and completions for packaging (scripts/build-deb.sh).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "gen-docs") {
        use clap::CommandFactory;
        return pen::docgen::main(Cli::command(), argv.get(2).map(|a| a.as_os_str()));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.cmd {
        Cmd::Run {
            scenarios,
            json,
            keep,
            junit,
        } => cmd_run(&scenarios, json, keep, junit.as_deref()),
        Cmd::Check { scenarios, json } => cmd_check(&scenarios, json),
        Cmd::Replay(args) => {
            let ReplayArgs {
                netns,
                to,
                pen,
                server,
                filter,
                backends,
                speed,
                max_flows,
                max_concurrency,
                agree,
                tolerance,
                max_disagree,
                pool4,
                out,
                trace,
            } = *args;
            let pen = match pen::link::pcapfile::split_args(&pen) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("pen-lab replay: --pen: {e}");
                    return ExitCode::from(2);
                }
            };
            let t = pen_lab::replay::ReplayTable {
                host: netns.clone(),
                to,
                sim: pen_lab::replay::TraceSimTable {
                    trace: trace.display().to_string(),
                    server,
                    filter,
                    pen,
                    events: Vec::new(),
                    pool4,
                    pool6: "fd00:200::/64".into(),
                },
                backends,
                processes: Vec::new(),
                speed,
                max_flows,
                max_concurrency,
                timeout_ms: 600_000,
                reply_timeout_ms: 1000,
                agree,
                max_disagree,
                tolerance,
                sticky: false,
                down: "stop".into(),
                reply_bytes: None,
            };
            let refs = pen_lab::scenario::Refs::default();
            let plan = match pen_lab::replay::plan_replay(&t, &refs, std::path::Path::new("."), &[])
            {
                Ok(p) => p,
                Err(list) => {
                    for (k, m) in list {
                        eprintln!("pen-lab replay: {k}: {m}");
                    }
                    return ExitCode::from(2);
                }
            };
            let dir = out.join(format!("{}-{}", netns, std::process::id()));
            match pen_lab::replay::replay_and_compare(
                &netns,
                &plan,
                &dir,
                || true,
                |_| Ok(String::new()),
            ) {
                Ok(d) => {
                    println!("{d}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pen-lab replay: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::List => cmd_list(),
        Cmd::Clean { run } => cmd_clean(run.as_deref()),
        Cmd::Show { pcap, filter } => {
            let frames = match filter {
                Some(f) => decode::read_pcap_filtered(&pcap, &f),
                None => decode::read_pcap(&pcap),
            };
            match frames {
                Ok(frames) => {
                    for f in frames {
                        println!("{f}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pen-lab show: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Bench { quick, out } => cmd_bench(quick, out),
        Cmd::Backend { args } => {
            let r = pen_lab::backends::parse_backend_args(&args)
                .and_then(|(k, l)| pen_lab::backends::run_backend(k, l));
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pen-lab backend: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn cmd_clean(run: Option<&str>) -> ExitCode {
    let root = match runner::prefix_root() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pen-lab clean: {e:#}");
            return ExitCode::from(2);
        }
    };
    match pen_lab::topology::clean_leftovers(&root, run) {
        Ok(c) => {
            for n in &c.removed {
                println!("removed {n}");
            }
            for (r, pid) in &c.live {
                println!(
                    "left {r} alone: its pen-lab (pid {pid}) is still running; stop that run first (kill -INT {pid})"
                );
            }
            if c.removed.is_empty() && c.live.is_empty() {
                match run {
                    Some(r) => println!("nothing to clean for {r}"),
                    None => println!("nothing to clean"),
                }
            }
            // Asked for one run and it is still live: it was not cleaned.
            if run.is_some() && !c.live.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("pen-lab clean: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(names: &[String]) -> Result<Vec<PathBuf>, ExitCode> {
    scenario::resolve_names(names).map_err(|e| {
        eprintln!("pen-lab: {e}");
        ExitCode::from(2)
    })
}

fn cmd_check(names: &[String], json: bool) -> ExitCode {
    let paths = match resolve(names) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let mut bad = 0;
    let mut results = Vec::new();
    for p in &paths {
        match scenario::load(p) {
            Ok((_, plan)) => {
                let line = format!(
                    "{}: ok ({} hosts/switches, {} processes, {} steps, {} expectations)",
                    p.display(),
                    plan.topology.nodes.len(),
                    plan.processes.len(),
                    plan.steps.len(),
                    plan.expects.len()
                );
                if json {
                    results.push(serde_json::json!({
                        "file": p.display().to_string(),
                        "scenario": plan.name,
                        "ok": true,
                        "errors": [],
                        "nodes": plan.topology.nodes.len(),
                        "processes": plan.processes.len(),
                        "steps": plan.steps.len(),
                        "expectations": plan.expects.len(),
                    }));
                } else {
                    println!("{line}");
                }
            }
            Err(e) => {
                bad += 1;
                if json {
                    let errors: Vec<_> =
                        e.0.iter()
                            .map(|x| {
                                serde_json::json!({
                                    "file": x.file,
                                    "key": x.key,
                                    "message": x.message,
                                })
                            })
                            .collect();
                    results.push(serde_json::json!({
                        "file": p.display().to_string(),
                        "ok": false,
                        "errors": errors,
                    }));
                }
                eprintln!("{e}");
            }
        }
    }
    let summary = format!("{} valid, {bad} invalid", paths.len() - bad);
    if json {
        let doc = serde_json::json!({
            "scenarios": results,
            "valid": paths.len() - bad,
            "invalid": bad,
        });
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("pen-lab: JSON report: {e}"),
        }
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    if bad > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn cmd_list() -> ExitCode {
    let Some(dir) = scenario::scenarios_dir() else {
        eprintln!("pen-lab: no scenarios/ directory here or above; set PENLAB_SCENARIOS");
        return ExitCode::from(2);
    };
    let paths = match scenario::list_scenarios(&dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pen-lab: reading {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    for p in paths {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match scenario::load(&p) {
            Ok((_, plan)) => println!("{name:<20} {}", plan.description),
            Err(_) => println!("{name:<20} (invalid: run `pen-lab check {name}`)"),
        }
    }
    ExitCode::SUCCESS
}

fn cmd_run(names: &[String], json: bool, keep: bool, junit: Option<&Path>) -> ExitCode {
    let paths = match resolve(names) {
        Ok(p) => p,
        Err(c) => return c,
    };
    // Validate everything first: a typo should not cost a half-run.
    let mut invalid = false;
    let mut live = Vec::new();
    for p in &paths {
        match scenario::load(p) {
            Ok((_, plan)) if !plan.is_offline() => live.push(plan.name),
            Ok(_) => {}
            Err(e) => {
                eprintln!("{e}");
                invalid = true;
            }
        }
    }
    if invalid {
        return ExitCode::from(2);
    }
    // Only scenarios with hosts need root; `[sim]` ones run offline.
    // SAFETY: geteuid has no preconditions.
    if !live.is_empty() && unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "pen-lab run: {} need root (network namespaces, veths, libpcap); `pen-lab check` validates without root, and [sim] scenarios run as any user",
            live.join(", ")
        );
        return ExitCode::from(2);
    }
    let opts = match runner::RunOptions::from_env(keep, json) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pen-lab run: {e:#}");
            return ExitCode::from(2);
        }
    };
    runner::install_signal_handlers();
    let mut all = RunReport::default();
    for p in &paths {
        if runner::interrupted() {
            all.not_run.push(p.display().to_string());
            continue;
        }
        all.push(runner::run_file(p, &opts));
    }
    if json {
        match serde_json::to_string_pretty(&all) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("pen-lab: JSON report: {e}"),
        }
    }
    let mut junit_failed = false;
    if let Some(f) = junit
        && let Err(e) = std::fs::write(f, pen_lab::report::junit_xml(&all))
    {
        eprintln!(
            "pen-lab run: cannot write the JUnit report {}: {e}; expected a writable file path",
            f.display()
        );
        junit_failed = true;
    }
    // The last line stays `N passed, N failed[...]`; the interruption is said just before.
    let mut line = String::new();
    if runner::interrupted() {
        line.push_str(&format!(
            "interrupted by SIGINT/SIGTERM: {} of {} scenarios did not run{}\n",
            all.not_run.len(),
            paths.len(),
            if all.not_run.is_empty() {
                String::new()
            } else {
                format!(" ({})", all.not_run.join(", "))
            }
        ));
    }
    line.push_str(&all.summary_line());
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    if runner::interrupted() || all.interrupted > 0 {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if all.all_passed() && all.scenarios.len() == paths.len() && !junit_failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Exit code of a run cut short by SIGINT/SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

fn cmd_bench(quick: bool, out: Option<PathBuf>) -> ExitCode {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let out = pen_lab::bench::out_dir(quick, out);
    eprintln!("pen-lab bench: the report goes to {}", out.display());
    let opts = match pen_lab::bench::BenchOptions::from_env(quick, out, command) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pen-lab bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    runner::install_signal_handlers();
    match pen_lab::bench::run(&opts) {
        Ok(res) => {
            println!("pen-lab bench: report in {}/report.md", opts.out.display());
            if res.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "pen-lab bench: {} measurement(s) failed (listed in the report)",
                    res.errors.len()
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("pen-lab bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
