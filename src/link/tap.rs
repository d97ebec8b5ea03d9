//! A pcap tap around any [`FrameIo`]: every frame the driver receives (as received, before the
//! engine rewrites it) and every frame it sends, in the order they are sent, go to a pcap file
//! (Ethernet, microsecond timestamps, [`crate::link::pcapfile::output_header`]), as smoltcp's
//! `PcapWriter` does for its devices. Frames the driver skips (our own outgoing copies, VLAN,
//! truncated) are not written.
//!
//! The daemon taps its DSR interface when `PEN_DSR_TAP=FILE` is set
//! (`link::dsr`). Timestamps are the wall clock at the tap's start plus the driver's
//! clock; the file is flushed at most every [`FLUSH_EVERY`] and when the tap is dropped. A
//! write error is logged once and ends the tapping, not the data path.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use crate::engine::RxMeta;
use crate::link::io::{Batch, FrameIo, Output};
use crate::link::pcapfile::output_header;

/// How often the tap flushes what it wrote.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// A driver whose frames in and out are also written to a pcap file.
pub struct Tap<I, W: Write> {
    inner: I,
    /// `None` once a write failed.
    writer: Option<W>,
    /// Added to the driver's clock for the file's timestamps.
    base: Duration,
    last_flush: Duration,
    dirty: bool,
    /// Frames written, received and sent.
    pub frames_in: u64,
    pub frames_out: u64,
    /// The write error that ended the tapping.
    pub error: Option<String>,
}

impl<I, W: Write> std::fmt::Debug for Tap<I, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("frames_in", &self.frames_in)
            .field("frames_out", &self.frames_out)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<I: FrameIo, W: Write> Tap<I, W> {
    /// Taps `inner` into `out`, timestamps on the wall clock.
    pub fn new(inner: I, out: W) -> io::Result<Tap<I, W>> {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let base = wall.saturating_sub(inner.now());
        Tap::with_base(inner, out, base)
    }

    /// Taps `inner` into `out`, a frame at driver time `t` stamped `base + t` (deterministic
    /// files for tests).
    pub fn with_base(inner: I, out: W, base: Duration) -> io::Result<Tap<I, W>> {
        let mut writer = out;
        output_header()
            .write_to(&mut writer)
            .map_err(|e| io::Error::other(format!("cannot write the pcap header: {e}")))?;
        Ok(Tap {
            last_flush: inner.now(),
            inner,
            writer: Some(writer),
            base,
            dirty: false,
            frames_in: 0,
            frames_out: 0,
            error: None,
        })
    }

    /// The wrapped driver.
    pub fn inner(&self) -> &I {
        &self.inner
    }

    /// The wrapped driver, mutable.
    pub fn inner_mut(&mut self) -> &mut I {
        &mut self.inner
    }

    /// Flushes the file and returns the driver and the writer (`None` after a write error).
    pub fn finish(self) -> (I, Option<W>) {
        let w = self.writer.map(|mut w| {
            let _ = w.flush();
            w
        });
        (self.inner, w)
    }
}

impl<I: FrameIo, W: Write> FrameIo for Tap<I, W> {
    fn now(&self) -> Duration {
        self.inner.now()
    }

    fn batch<R>(
        &mut self,
        timeout: Duration,
        pass: impl FnOnce(&mut dyn Batch) -> R,
    ) -> io::Result<Option<R>> {
        let Tap {
            inner,
            writer,
            base,
            last_flush,
            dirty,
            frames_in,
            frames_out,
            error,
        } = self;
        inner.batch(timeout, |b| {
            let now = b.now();
            let mut file = File {
                ts: base.saturating_add(now),
                writer,
                dirty,
                error,
            };
            for i in 0..b.len() {
                if let Some(f) = b.peek(i)
                    && file.write(f)
                {
                    *frames_in += 1;
                }
            }
            let mut tb = TapBatch {
                inner: b,
                file,
                sent: 0,
            };
            let r = pass(&mut tb);
            *frames_out += tb.sent;
            if *tb.file.dirty && now.saturating_sub(*last_flush) >= FLUSH_EVERY {
                tb.file.flush();
                *last_flush = now;
            }
            r
        })
    }
}

/// The tap's file during one pass.
struct File<'a, W: Write> {
    ts: Duration,
    writer: &'a mut Option<W>,
    dirty: &'a mut bool,
    error: &'a mut Option<String>,
}

impl<W: Write> File<'_, W> {
    /// Writes one frame; false when the tap is off or the write failed (which turns it off).
    fn write(&mut self, f: &[u8]) -> bool {
        let Some(w) = self.writer.as_mut() else {
            return false;
        };
        match write_record(w, self.ts, f) {
            Ok(()) => {
                *self.dirty = true;
                true
            }
            Err(e) => {
                self.fail(e.to_string());
                false
            }
        }
    }

    fn flush(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            *self.dirty = false;
            if let Err(e) = w.flush() {
                self.fail(e.to_string());
            }
        }
    }

    fn fail(&mut self, e: String) {
        tracing::warn!("pcap tap: cannot write: {e}; tapping stops");
        *self.error = Some(e);
        *self.writer = None;
    }
}

/// One pcap record in the layout of [`output_header`] (little-endian, microseconds, snaplen
/// 65535).
fn write_record<W: Write>(w: &mut W, ts: Duration, f: &[u8]) -> io::Result<()> {
    let orig = u32::try_from(f.len()).unwrap_or(u32::MAX);
    let data = f.get(..65535).unwrap_or(f);
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&(ts.as_secs() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&ts.subsec_micros().to_le_bytes());
    h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
    h[12..].copy_from_slice(&orig.to_le_bytes());
    w.write_all(&h)?;
    w.write_all(data)
}

struct TapBatch<'a, 'b, W: Write> {
    inner: &'b mut dyn Batch,
    file: File<'a, W>,
    sent: u64,
}

impl<W: Write> Batch for TapBatch<'_, '_, W> {
    fn now(&self) -> Duration {
        self.inner.now()
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn frame(&mut self, i: usize) -> Option<(&mut [u8], RxMeta)> {
        self.inner.frame(i)
    }

    fn peek(&self, i: usize) -> Option<&[u8]> {
        self.inner.peek(i)
    }

    fn send(&mut self, out: &Output<'_>) -> io::Result<()> {
        let mut n = 0u64;
        for t in out.before {
            n += u64::from(self.file.write(&t.frame));
        }
        for (i, len) in out.forwarded() {
            if let Some(f) = self.inner.peek(i) {
                n += u64::from(self.file.write(f.get(..len).unwrap_or(f)));
            }
        }
        for t in out.after {
            n += u64::from(self.file.write(&t.frame));
        }
        self.sent += n;
        self.inner.send(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig, frames};
    use crate::link::io::drive_to_end;
    use crate::link::io::tests::{BACKEND, OUR, PEER, VIP, engine, syn};
    use crate::link::mem::MemIo;
    use std::net::Ipv4Addr;

    /// The tap writes the frames in as received and the frames out as sent, in order, with
    /// base + driver time as timestamps, and the driver under it sends the same frames.
    #[test]
    fn the_tap_writes_every_frame_in_and_out_to_a_pcap_file() {
        let mut e = engine();
        let ms = Duration::from_millis;
        let arp = frames::arp_reply(PEER, BACKEND, OUR, VIP);
        let syn = syn(1);
        let mut mem = MemIo::new();
        mem.push(ms(0), arp.clone());
        mem.push(ms(7), syn.clone());
        let base = Duration::from_secs(1_700_000_000);
        let mut tap = Tap::with_base(mem, Vec::new(), base).unwrap();
        drive_to_end(&mut e, &mut tap).unwrap();
        assert_eq!((tap.frames_in, tap.frames_out), (2, 2), "{tap:?}");
        let (mem, file) = tap.finish();
        let file = file.unwrap();
        let got = crate::link::pcapfile::read_frames(file.as_slice()).unwrap();
        // The ARP probe goes out first (before the first frame), then the ARP reply in,
        // then the SYN in and the SYN forwarded.
        let probe = &mem.sent[0].frame;
        let fwd = &mem.sent[1].frame;
        assert_eq!(
            got,
            vec![
                (base, arp),
                (base, probe.clone()),
                (base + ms(7), syn.clone()),
                (base + ms(7), fwd.clone()),
            ]
        );
        assert_eq!(&fwd[..6], &PEER, "the out frame is the rewritten one");
        assert_ne!(fwd[..6], syn[..6]);
        // The header is the pcap one libpcap reads: Ethernet, microseconds.
        assert_eq!(&file[..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes([file[20], file[21], file[22], file[23]]),
            1
        );
    }

    /// A writer that fails: the tap logs, stops writing, and the data path carries on.
    #[test]
    fn a_failing_tap_stops_tapping_not_the_driver() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.0 < b.len() {
                    return Err(io::Error::other("disk full"));
                }
                self.0 -= b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut e = Engine::new(EngineConfig::new(OUR, VIP, 80));
        let mut mem = MemIo::new();
        for i in 0..3 {
            mem.push(
                Duration::from_millis(i),
                frames::arp_request(PEER, Ipv4Addr::new(10, 9, 0, 2), VIP),
            );
        }
        let mut tap = Tap::with_base(mem, Full(24 + 16 + 42), Duration::ZERO).unwrap();
        drive_to_end(&mut e, &mut tap).unwrap();
        assert_eq!(tap.error.as_deref(), Some("disk full"), "{tap:?}");
        assert_eq!(tap.frames_in, 1);
        let (mem, w) = tap.finish();
        assert!(w.is_none());
        assert_eq!(mem.sent.len(), 3, "every ARP request still answered");
    }
}
