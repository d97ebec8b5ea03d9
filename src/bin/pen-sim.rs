//! pen-sim: runs the DSR + tarpit engine offline over a pcap file.
//!
//! ```text
//! pen-sim --config "<pen args>" [--mac MAC] [--key HEX32] [--log FILE] IN.pcap OUT.pcap
//! pen-sim --config '-r -O "dsr_if eth1" 192.168.100.1:0 192.168.100.3 192.168.100.4' in.pcap out.pcap
//! ```
//! The frames the engine sends go to OUT.pcap; the verdict log (one line per frame) goes to
//! `--log` or standard output; counters go to standard error. No root, no network.
//!
//! The whole balancer (proxy and UDP modes) over a capture's flows, in virtual time:
//! ```text
//! pen-sim balance --pen "<pen args>" [--server SEL]... [--filter BPF] [--event "at 5s server 1 down"]...
//!                 [--pool4 10.200.0.0/16] [--pool6 fd00:200::/64] [--sample 1s] [--out DIR] TRACE
//! pen-sim trace [--server SEL]... [--filter BPF] [--flows] TRACE   # what the trace model makes of a capture
//! pen-sim gen dns|http|mix [--clients N] [--secs S] [--seed X] OUT.pcap   # synthetic captures
//! ```
//! `balance` prints the markdown report, or with `--out` writes `report.md`, `report.json`
//! (per-flow backends and the address map), `chart.svg` and `mapping.txt` into DIR.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pen::engine::{Engine, config_from_pen_args, parse_mac};
use pen::link::pcapfile::{replay, split_args};
use pen::sim::balance::{Event, SimOptions, listen_of, parse_time, shared_from_args, simulate};
use pen::sim::filter::open_trace;
use pen::sim::mapping::{AddressMap, Pool, default_pools};
use pen::sim::trace::{ParseOptions, Selection, ServerSel};
use pen::sim::{report, synth};

/// Simulate the whole balancer over a capture's flows (virtual time, no root, no network).
#[derive(Parser, Debug)]
#[command(name = "pen-sim balance", version)]
struct BalanceArgs {
    /// pen's arguments as one string, e.g. '-U 53 10.0.0.3:53 10.0.0.4:53'.
    #[arg(long, allow_hyphen_values = true)]
    pen: String,
    /// Keep only flows to this server: [tcp:|udp:]PORT or [tcp:|udp:]IP:PORT (repeatable).
    #[arg(long)]
    server: Vec<String>,
    /// Keep only the frames this BPF filter (tcpdump syntax) matches, e.g.
    /// 'udp and net 198.51.100.0/24'; --server then applies to what it kept.
    #[arg(long)]
    filter: Option<String>,
    /// A scheduled event: 'at 5s server 1 down', 'at 8s server 1 up',
    /// 'at 10s penctl "server 0 weight 3"' (repeatable).
    #[arg(long)]
    event: Vec<String>,
    /// Lab addresses for IPv4 clients.
    #[arg(long)]
    pool4: Option<String>,
    /// Lab addresses for IPv6 clients.
    #[arg(long)]
    pool6: Option<String>,
    /// Timeline sampling period.
    #[arg(long, default_value = "1s")]
    sample: String,
    /// Write report.md, report.json, chart.svg and mapping.txt here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The capture (pcap or pcapng).
    trace: PathBuf,
}

/// Write a synthetic capture (documentation addresses only, deterministic by seed).
#[derive(Parser, Debug)]
#[command(name = "pen-sim gen", version)]
struct GenArgs {
    /// dns, http or mix.
    kind: String,
    /// Number of clients.
    #[arg(long, default_value_t = 300)]
    clients: u32,
    /// Length of the capture in seconds.
    #[arg(long, default_value_t = 20.0)]
    secs: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output pcap.
    output: PathBuf,
}

fn run_gen(a: GenArgs) -> Result<(), String> {
    let kind = synth::Kind::parse(&a.kind).map_err(|e| format!("pen-sim gen: {e}"))?;
    if a.clients == 0 || a.clients > 1_000_000 || !(a.secs > 0.0 && a.secs <= 86_400.0) {
        return Err(format!(
            "pen-sim gen: --clients {} --secs {}: expected 1-1000000 clients over 0-86400 seconds",
            a.clients, a.secs
        ));
    }
    let bytes = synth::generate(kind, a.clients, a.secs, a.seed);
    std::fs::write(&a.output, &bytes)
        .map_err(|e| format!("pen-sim gen: cannot write {}: {e}", a.output.display()))?;
    eprintln!(
        "pen-sim gen: {} bytes to {}",
        bytes.len(),
        a.output.display()
    );
    Ok(())
}

/// What the trace model makes of a capture: flows, sessions, skipped frames.
#[derive(Parser, Debug)]
#[command(name = "pen-sim trace", version)]
struct TraceArgs {
    /// Keep only flows to this server (repeatable).
    #[arg(long)]
    server: Vec<String>,
    /// Keep only the frames this BPF filter (tcpdump syntax) matches.
    #[arg(long)]
    filter: Option<String>,
    /// One line per flow as well.
    #[arg(long)]
    flows: bool,
    trace: PathBuf,
}

fn selection(servers: &[String]) -> Result<Selection, String> {
    let servers = servers
        .iter()
        .map(|s| ServerSel::parse(s).map_err(|e| format!("pen-sim: --server: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Selection { servers })
}

fn run_trace(a: TraceArgs) -> Result<(), String> {
    let opts = ParseOptions {
        selection: selection(&a.server)?,
    };
    let t =
        open_trace(&a.trace, &opts, a.filter.as_deref()).map_err(|e| format!("pen-sim: {e}"))?;
    println!("{}", t.summary());
    if a.flows {
        for f in &t.udp {
            println!(
                "udp {} -> {} frame {} at {:.6}s: {} datagrams, {} replies",
                f.client,
                f.server,
                f.first_frame,
                f.start().as_secs_f64(),
                f.queries.len(),
                f.replies.len()
            );
        }
        for s in &t.tcp {
            println!(
                "tcp {} -> {} frame {} at {:.6}s: {} bytes up, {} down{}{}",
                s.client,
                s.server,
                s.first_frame,
                s.opened.as_secs_f64(),
                s.client_data.len(),
                s.server_bytes,
                if s.start_missing {
                    ", start missing"
                } else {
                    ""
                },
                if s.lost_bytes > 0 {
                    format!(", {} bytes after a hole", s.lost_bytes)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

fn run_balance(a: BalanceArgs) -> Result<(), String> {
    let mut pen_args = split_args(&a.pen).map_err(|e| format!("pen-sim: --pen: {e}"))?;
    if pen_args.first().map(String::as_str) == Some("pen") {
        pen_args.remove(0);
    }
    let shared =
        shared_from_args(&pen_args).map_err(|e| format!("pen-sim: --pen {:?}: {e}", a.pen))?;
    let listen = listen_of(&shared).ok_or_else(|| {
        format!(
            "pen-sim: --pen {:?}: the listen address must be [IP:]PORT",
            a.pen
        )
    })?;
    let events = a
        .event
        .iter()
        .map(|e| Event::parse(e).map_err(|e| format!("pen-sim: --event: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let (d4, d6) = default_pools();
    let pool = |s: &Option<String>, d: Pool, what: &str| match s {
        Some(s) => Pool::parse(s).map_err(|e| format!("pen-sim: {what}: {e}")),
        None => Ok(d),
    };
    let v4 = pool(&a.pool4, d4, "--pool4")?;
    let v6 = pool(&a.pool6, d6, "--pool6")?;
    let sample = parse_time(&a.sample).map_err(|e| format!("pen-sim: --sample: {e}"))?;
    let opts = ParseOptions {
        selection: selection(&a.server)?,
    };
    let t =
        open_trace(&a.trace, &opts, a.filter.as_deref()).map_err(|e| format!("pen-sim: {e}"))?;
    eprintln!("pen-sim: {}", t.summary());
    let map = AddressMap::build(&t, v4, v6, listen).map_err(|e| format!("pen-sim: {e}"))?;
    let sim = SimOptions {
        pen_args,
        events,
        sample,
    };
    let r = simulate(&t, &map, &sim).map_err(|e| format!("pen-sim: {e}"))?;
    let md = report::markdown(&r);
    match &a.out {
        None => print!("{md}"),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("pen-sim: cannot create {}: {e}", dir.display()))?;
            for (name, text) in [
                ("report.md", md),
                ("report.json", report::json(&r, Some(&map))),
                ("chart.svg", report::svg(&r)),
                ("mapping.txt", map.to_text()),
            ] {
                let p = dir.join(name);
                std::fs::write(&p, text)
                    .map_err(|e| format!("pen-sim: cannot write {}: {e}", p.display()))?;
            }
            eprintln!(
                "pen-sim: {} flows; report.md, report.json, chart.svg, mapping.txt in {}",
                r.flows.len(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Replay a pcap file through pen's DSR + tarpit engine and write what it sends.
#[derive(Parser, Debug)]
#[command(name = "pen-sim", version)]
struct Args {
    /// pen's arguments as one string (without "pen"), as on a pen command line; `dsr_if` may be
    /// left out. Example: '-O "acl 1 permit 10.0.0.200" -O "tarpit_acl 1" 10.0.0.100:80 10.0.0.3 10.0.0.4'
    #[arg(long, allow_hyphen_values = true)]
    config: String,
    /// MAC address of the simulated DSR interface.
    #[arg(long, default_value = "02:00:00:00:00:01")]
    mac: String,
    /// Key of the tarpit's ISN hash: 32 hex digits (default: all zero, for reproducible output).
    #[arg(long)]
    key: Option<String>,
    /// Write the verdict log here instead of standard output.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Input pcap (Ethernet).
    input: PathBuf,
    /// Output pcap.
    output: PathBuf,
}

fn parse_key(s: &str) -> Result<[u8; 16], String> {
    let bad = || format!("bad --key {s:?}; expected 32 hex digits");
    if s.len() != 32 || !s.is_ascii() {
        return Err(bad());
    }
    let mut k = [0u8; 16];
    for (i, b) in k.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2).ok_or_else(bad)?;
        *b = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(k)
}

fn run(a: Args) -> Result<(), String> {
    let mac = parse_mac(&a.mac).map_err(|e| format!("pen-sim: --mac: {e}"))?;
    let key = match &a.key {
        Some(k) => parse_key(k).map_err(|e| format!("pen-sim: {e}"))?,
        None => [0; 16],
    };
    let mut words = split_args(&a.config).map_err(|e| format!("pen-sim: --config: {e}"))?;
    if words.first().map(String::as_str) == Some("pen") {
        words.remove(0);
    }
    let cfg = config_from_pen_args(&words, mac, key)
        .map_err(|e| format!("pen-sim: --config {:?}: {e}", a.config))?;
    let input = File::open(&a.input)
        .map_err(|e| format!("pen-sim: cannot open {}: {e}", a.input.display()))?;
    let output = File::create(&a.output)
        .map_err(|e| format!("pen-sim: cannot create {}: {e}", a.output.display()))?;
    let mut log: Box<dyn Write> = match &a.log {
        Some(p) => {
            Box::new(BufWriter::new(File::create(p).map_err(|e| {
                format!("pen-sim: cannot create {}: {e}", p.display())
            })?))
        }
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let mut engine = Engine::new(cfg);
    let s = replay(
        &mut engine,
        BufReader::new(input),
        BufWriter::new(output),
        &mut log,
    )
    .map_err(|e| format!("pen-sim: {}: {e}", a.input.display()))?;
    log.flush()
        .map_err(|e| format!("pen-sim: cannot write the log: {e}"))?;
    eprintln!(
        "pen-sim: {} frames in, {} frames out; {}",
        s.frames_in, s.frames_out, s.counters
    );
    Ok(())
}

/// The whole command line for the man page and completions: the default form and the
/// `balance`, `trace` and `gen` subcommands.
fn command() -> clap::Command {
    use clap::CommandFactory;
    Args::command()
        .name("pen-sim")
        .subcommand(BalanceArgs::command().name("balance"))
        .subcommand(TraceArgs::command().name("trace"))
        .subcommand(GenArgs::command().name("gen"))
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let sub = argv.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let rest = || std::iter::once(argv[0].clone()).chain(argv.iter().skip(2).cloned());
    let result = match sub {
        "balance" => run_balance(BalanceArgs::parse_from(rest())),
        "trace" => run_trace(TraceArgs::parse_from(rest())),
        "gen" => run_gen(GenArgs::parse_from(rest())),
        // Hidden: man pages and completions for packaging (scripts/build-deb.sh).
        "gen-docs" => return pen::docgen::main(command(), argv.get(2).map(|a| a.as_os_str())),
        _ => run(Args::parse()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
