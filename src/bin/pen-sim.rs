//! pen-sim: runs the DSR + tarpit engine offline over a pcap file.
//!
//! ```text
//! pen-sim --config "<pen args>" [--mac MAC] [--key HEX32] [--log FILE] IN.pcap OUT.pcap
//! pen-sim --config '-r -O "dsr_if eth1" 192.168.100.1:0 192.168.100.3 192.168.100.4' in.pcap out.pcap
//! ```
//! The frames the engine sends go to OUT.pcap; the verdict log (one line per frame) goes to
//! `--log` or standard output; counters go to standard error. No root, no network.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pen::engine::{Engine, config_from_pen_args, parse_mac};
use pen::link::pcapfile::{replay, split_args};

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

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
