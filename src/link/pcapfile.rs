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
use std::io::{self, Read, Write};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::engine::{Counters, Engine, RxMeta};
use crate::link::io::{Batch, FrameIo, Output};

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

/// The offline driver: frames from a pcap reader, one per pass, at their capture time
/// relative to the first (never going backwards); what the engine sends to a pcap writer and
/// the verdict log to `log`. Run it with [`crate::link::io::drive_to_end`]; a failure is kept
/// in [`PcapIo::take_error`] with the side at fault.
pub struct PcapIo<R: Read, W: Write, L: Write> {
    reader: PcapReader<R>,
    writer: PcapWriter<W>,
    log: L,
    base: Option<Duration>,
    now: Duration,
    buf: Vec<u8>,
    /// Frames read and written so far.
    pub frames_in: u64,
    pub frames_out: u64,
    error: Option<ReplayError>,
}

impl<R: Read, W: Write, L: Write> PcapIo<R, W, L> {
    /// Opens `input` (an Ethernet pcap) and starts `output` with [`output_header`].
    pub fn new(input: R, output: W, log: L) -> Result<Self, ReplayError> {
        let reader = PcapReader::new(input)
            .map_err(|e| ReplayError::Input(format!("input is not a pcap file: {e}")))?;
        let dl = reader.header().datalink;
        if dl != DataLink::ETHERNET {
            return Err(ReplayError::Input(format!(
                "input link type is {dl:?}; only Ethernet (DLT_EN10MB, 1) captures can be replayed"
            )));
        }
        let writer = PcapWriter::with_header(output, output_header())
            .map_err(|e| ReplayError::Output(format!("cannot write the output pcap: {e}")))?;
        Ok(PcapIo {
            reader,
            writer,
            log,
            base: None,
            now: Duration::ZERO,
            buf: Vec::with_capacity(2048),
            frames_in: 0,
            frames_out: 0,
            error: None,
        })
    }

    /// The failure that ended the run, if any.
    pub fn take_error(&mut self) -> Option<ReplayError> {
        self.error.take()
    }

    /// Flushes the output and returns the writers.
    pub fn finish(self) -> Result<(W, L), ReplayError> {
        let mut w = self.writer.into_writer();
        w.flush().map_err(|e| out_err(&e))?;
        Ok((w, self.log))
    }

    /// Keeps `e` and returns it as an IO error for the loop.
    fn fail(&mut self, e: ReplayError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.error = Some(e);
        err
    }
}

fn out_err(e: &dyn fmt::Display) -> ReplayError {
    ReplayError::Output(format!("cannot write output: {e}"))
}

impl<R: Read, W: Write, L: Write> FrameIo for PcapIo<R, W, L> {
    fn now(&self) -> Duration {
        self.now
    }

    fn batch<T>(
        &mut self,
        _timeout: Duration,
        pass: impl FnOnce(&mut dyn Batch) -> T,
    ) -> io::Result<Option<T>> {
        let pkt = match self.reader.next_packet() {
            None => return Ok(None),
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                let n = self.frames_in + 1;
                return Err(self.fail(ReplayError::Input(format!(
                    "input frame {n}: damaged record: {e}"
                ))));
            }
        };
        self.frames_in += 1;
        let b = *self.base.get_or_insert(pkt.timestamp);
        self.now = self.now.max(pkt.timestamp.saturating_sub(b));
        self.buf.clear();
        self.buf.extend_from_slice(&pkt.data);
        let mut batch = PcapBatch {
            now: self.now,
            ts: b.saturating_add(self.now),
            n: self.frames_in,
            frame: &mut self.buf,
            writer: &mut self.writer,
            log: &mut self.log,
            written: 0,
            error: None,
        };
        let r = pass(&mut batch);
        self.frames_out += batch.written;
        if let Some(e) = batch.error {
            self.error = Some(e);
        }
        Ok(Some(r))
    }
}

/// One input frame of a [`PcapIo`].
struct PcapBatch<'a, W: Write, L: Write> {
    now: Duration,
    /// Output timestamp: the input's first timestamp plus `now`.
    ts: Duration,
    /// The frame's number in the input (from 1).
    n: u64,
    frame: &'a mut Vec<u8>,
    writer: &'a mut PcapWriter<W>,
    log: &'a mut L,
    written: u64,
    error: Option<ReplayError>,
}

impl<W: Write, L: Write> PcapBatch<'_, W, L> {
    fn write(&mut self, f: &[u8]) -> Result<(), ReplayError> {
        self.writer
            .write_packet(&PcapPacket::new(self.ts, f.len() as u32, f))
            .map_err(|e| out_err(&e))?;
        self.written += 1;
        Ok(())
    }

    /// Writes and logs frames the engine originated.
    fn write_engine(&mut self, out: &[crate::engine::Transmit]) -> Result<(), ReplayError> {
        for t in out {
            writeln!(
                self.log,
                "- {} out {} len={}",
                secs(self.now),
                t.kind,
                t.frame.len()
            )
            .map_err(|e| out_err(&e))?;
            self.write(&t.frame)?;
        }
        Ok(())
    }

    fn send_all(&mut self, out: &Output<'_>) -> Result<(), ReplayError> {
        self.write_engine(out.before)?;
        for (_, v) in out.verdicts {
            writeln!(
                self.log,
                "{} {} in len={} -> {v}",
                self.n,
                secs(self.now),
                self.frame.len()
            )
            .map_err(|e| out_err(&e))?;
            if let Some(len) = v.transmit_len() {
                let frame = std::mem::take(self.frame);
                let r = self.write(frame.get(..len).unwrap_or(&frame));
                *self.frame = frame;
                r?;
            }
        }
        self.write_engine(out.after)
    }
}

impl<W: Write, L: Write> Batch for PcapBatch<'_, W, L> {
    fn now(&self) -> Duration {
        self.now
    }

    fn len(&self) -> usize {
        1
    }

    fn frame(&mut self, i: usize) -> Option<(&mut [u8], RxMeta)> {
        (i == 0).then(|| (self.frame.as_mut_slice(), RxMeta::default()))
    }

    fn peek(&self, i: usize) -> Option<&[u8]> {
        (i == 0).then_some(self.frame.as_slice())
    }

    fn send(&mut self, out: &Output<'_>) -> io::Result<()> {
        self.send_all(out).map_err(|e| {
            let err = io::Error::other(e.to_string());
            self.error = Some(e);
            err
        })
    }
}

/// Runs `engine` over the frames of `input` and writes the frames it sends to `output` and
/// the verdict log to `log` ([`PcapIo`] under [`crate::link::io::drive_to_end`]).
pub fn replay<R: Read, W: Write, L: Write>(
    engine: &mut Engine,
    input: R,
    output: W,
    log: &mut L,
) -> Result<ReplaySummary, ReplayError> {
    let mut io = PcapIo::new(input, output, &mut *log)?;
    if let Err(e) = crate::link::io::drive_to_end(engine, &mut io) {
        return Err(io
            .take_error()
            .unwrap_or_else(|| ReplayError::Output(e.to_string())));
    }
    let (frames_in, frames_out) = (io.frames_in, io.frames_out);
    let (_, log) = io.finish()?;
    writeln!(log, "# {}", engine.counters()).map_err(|e| out_err(&e))?;
    Ok(ReplaySummary {
        frames_in,
        frames_out,
        counters: engine.counters().clone(),
    })
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
