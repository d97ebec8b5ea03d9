//! The offline driver: a pcap file in, the frames the engine sends to another pcap file, and a
//! verdict log. Deterministic: the same input, configuration and key give the same bytes.
//!
//! Time: `now` is the input frame's timestamp minus the first frame's (never going backwards).
//! Before and after each input frame, everything `poll_transmit(now)` returns is written.
//! Output frames carry the input's first timestamp plus `now`, in a little-endian
//! microsecond pcap with snaplen 65535, so golden files are the same on every machine.
//!
//! Verdict log, one line per input frame and per engine-originated frame:
//! ```text
//! 1 0.000000 in len=42 -> arp-reply len=42
//! - 0.000000 out arp-probe backend=0 len=42
//! ```

use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::engine::{Counters, Engine};

/// A failed replay, naming the file side and frame.
#[derive(Debug)]
pub enum ReplayError {
    /// The input is not a pcap file, or a record is damaged.
    Input(String),
    /// Writing the output pcap or the log failed.
    Output(String),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Input(m) | ReplayError::Output(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ReplayError {}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub frames_in: u64,
    pub frames_out: u64,
    pub counters: Counters,
}

/// The pcap header of every output file.
pub fn output_header() -> PcapHeader {
    PcapHeader {
        snaplen: 65535,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    }
}

fn secs(d: Duration) -> String {
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

/// Runs `engine` over the frames of `input` and writes the frames it sends to `output` and
/// the verdict log to `log`.
pub fn replay<R: Read, W: Write, L: Write>(
    engine: &mut Engine,
    input: R,
    output: W,
    log: &mut L,
) -> Result<ReplaySummary, ReplayError> {
    let mut reader = PcapReader::new(input)
        .map_err(|e| ReplayError::Input(format!("input is not a pcap file: {e}")))?;
    let dl = reader.header().datalink;
    if dl != DataLink::ETHERNET {
        return Err(ReplayError::Input(format!(
            "input link type is {dl:?}; only Ethernet (DLT_EN10MB, 1) captures can be replayed"
        )));
    }
    let mut writer = PcapWriter::with_header(output, output_header())
        .map_err(|e| ReplayError::Output(format!("cannot write the output pcap: {e}")))?;
    let out_err = |e: &dyn fmt::Display| ReplayError::Output(format!("cannot write output: {e}"));
    let mut base: Option<Duration> = None;
    let mut now = Duration::ZERO;
    let (mut n_in, mut n_out) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(2048);
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|e| {
            ReplayError::Input(format!("input frame {}: damaged record: {e}", n_in + 1))
        })?;
        n_in += 1;
        let b = *base.get_or_insert(pkt.timestamp);
        now = now.max(pkt.timestamp.saturating_sub(b));
        let ts = b.saturating_add(now);
        n_out += drain(engine, now, ts, &mut writer, log)?;
        buf.clear();
        buf.extend_from_slice(&pkt.data);
        let v = engine.process(now, &mut buf);
        writeln!(log, "{n_in} {} in len={} -> {v}", secs(now), buf.len())
            .map_err(|e| out_err(&e))?;
        if let Some(len) = v.transmit_len() {
            let f = buf.get(..len).unwrap_or(&buf);
            writer
                .write_packet(&PcapPacket::new(ts, f.len() as u32, f))
                .map_err(|e| out_err(&e))?;
            n_out += 1;
        }
        n_out += drain(engine, now, ts, &mut writer, log)?;
    }
    writeln!(log, "# {}", engine.counters()).map_err(|e| out_err(&e))?;
    writer.into_writer().flush().map_err(|e| out_err(&e))?;
    Ok(ReplaySummary {
        frames_in: n_in,
        frames_out: n_out,
        counters: engine.counters().clone(),
    })
}

/// Writes what the engine has due at `now` (timers, released frames); returns how many.
fn drain<W: Write, L: Write>(
    engine: &mut Engine,
    now: Duration,
    ts: Duration,
    writer: &mut PcapWriter<W>,
    log: &mut L,
) -> Result<u64, ReplayError> {
    let out_err = |e: &dyn fmt::Display| ReplayError::Output(format!("cannot write output: {e}"));
    let mut n = 0;
    while let Some(t) = engine.poll_transmit(now) {
        writeln!(log, "- {} out {} len={}", secs(now), t.kind, t.frame.len())
            .map_err(|e| out_err(&e))?;
        writer
            .write_packet(&PcapPacket::new(ts, t.frame.len() as u32, &t.frame))
            .map_err(|e| out_err(&e))?;
        n += 1;
    }
    Ok(n)
}

/// Writes `frames` (timestamp, bytes) as a pcap file with [`output_header`] (fixtures, tests).
pub fn write_frames<W: Write>(out: W, frames: &[(Duration, Vec<u8>)]) -> Result<(), ReplayError> {
    let mut w = PcapWriter::with_header(out, output_header())
        .map_err(|e| ReplayError::Output(format!("cannot write pcap: {e}")))?;
    for (ts, f) in frames {
        w.write_packet(&PcapPacket::new(*ts, f.len() as u32, f))
            .map_err(|e| ReplayError::Output(format!("cannot write pcap: {e}")))?;
    }
    w.into_writer()
        .flush()
        .map_err(|e| ReplayError::Output(format!("cannot write pcap: {e}")))
}

/// Reads every frame of a pcap file.
pub fn read_frames<R: Read>(input: R) -> Result<Vec<(Duration, Vec<u8>)>, ReplayError> {
    let mut r =
        PcapReader::new(input).map_err(|e| ReplayError::Input(format!("not a pcap file: {e}")))?;
    let mut v = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.map_err(|e| ReplayError::Input(format!("frame {}: {e}", v.len() + 1)))?;
        v.push((p.timestamp, p.data.into_owned()));
    }
    Ok(v)
}

/// The MAC address `pen-sim` and [`run_sim`] give the simulated DSR interface by default.
pub const SIM_MAC: crate::engine::Mac = [0x02, 0, 0, 0, 0, 0x01];

/// One offline run as `pen-sim` does it (MAC [`SIM_MAC`], ISN key all zero): pen's arguments
/// (without `argv[0]`), an input pcap, and where to write the output pcap and the verdict log.
/// For pen-lab's `[sim]` scenarios and other tools; errors name the file or argument at fault.
pub fn run_sim(
    pen_args: &[String],
    input: &std::path::Path,
    output: &std::path::Path,
    log: &std::path::Path,
) -> Result<ReplaySummary, String> {
    let cfg = crate::engine::config_from_pen_args(pen_args, SIM_MAC, [0; 16])
        .map_err(|e| format!("pen arguments {pen_args:?}: {e}"))?;
    let inp =
        std::fs::File::open(input).map_err(|e| format!("cannot open {}: {e}", input.display()))?;
    let out = std::fs::File::create(output)
        .map_err(|e| format!("cannot create {}: {e}", output.display()))?;
    let mut lg = std::io::BufWriter::new(
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?,
    );
    let mut engine = Engine::new(cfg);
    let s = replay(
        &mut engine,
        std::io::BufReader::new(inp),
        std::io::BufWriter::new(out),
        &mut lg,
    )
    .map_err(|e| format!("{}: {e}", input.display()))?;
    lg.flush()
        .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    Ok(s)
}

/// Splits a command line into words as a POSIX shell would for plain words, `'single'` and
/// `"double"` quotes (with `\` escapes outside single quotes). Typographic quotes (`“…”`, as in
/// blog posts) count as double quotes. Used for `pen-sim --config "<pen args>"`.
pub fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated ' quote in {s:?}")),
                    }
                }
            }
            '"' | '“' | '”' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"' | '“' | '”') => break,
                        Some('\\') => match chars.next() {
                            Some(x) => cur.push(x),
                            None => return Err(format!("unterminated \" quote in {s:?}")),
                        },
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated \" quote in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_args_handles_quotes_like_a_shell() {
        assert_eq!(
            split_args(r#"-df -O "acl 1 permit 192.168.2.11" -O 'tarpit_acl 1' a\ b"#).unwrap(),
            [
                "-df",
                "-O",
                "acl 1 permit 192.168.2.11",
                "-O",
                "tarpit_acl 1",
                "a b"
            ]
        );
        assert_eq!(
            split_args("-O “dsr_if eth1” 10.0.0.1:80").unwrap(),
            ["-O", "dsr_if eth1", "10.0.0.1:80"]
        );
        assert_eq!(split_args(r#""""#).unwrap(), [""]);
        assert!(
            split_args("-O \"open")
                .unwrap_err()
                .contains("unterminated")
        );
    }
}
