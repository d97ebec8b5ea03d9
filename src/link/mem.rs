//! The in-memory driver: frames in with their times, frames out with where they came from,
//! no IO. For tests and benchmarks; run it with [`crate::link::io::drive_to_end`].

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use crate::engine::{RxMeta, TxKind, Verdict};
use crate::link::io::{Batch, FrameIo, Output};

/// Where an output frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The rewritten input frame, with the verdict that sent it.
    Processed(Verdict),
    /// A frame the engine originated.
    Engine(TxKind),
}

/// One frame the engine sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub at: Duration,
    pub frame: Vec<u8>,
    pub origin: Origin,
}

/// An input: a frame, or an idle pass (only the engine's timers run) at its time.
#[derive(Debug, Clone)]
struct Input {
    at: Duration,
    frame: Option<(Vec<u8>, RxMeta)>,
}

/// Frames queued for the engine and the frames it sent. Each pass takes the next input and
/// the inputs after it with the same time, up to [`MemIo::batch_max`]; time never goes back
/// (an earlier input runs at the latest time seen).
#[derive(Debug, Clone)]
pub struct MemIo {
    rx: VecDeque<Input>,
    now: Duration,
    /// Frames per batch at most (1 by default: one frame per pass, as the pcap driver).
    pub batch_max: usize,
    /// What was sent, in order.
    pub sent: Vec<Sent>,
    /// Every verdict, with the time of its frame.
    pub verdicts: Vec<(Duration, Verdict)>,
}

impl Default for MemIo {
    fn default() -> MemIo {
        MemIo::new()
    }
}

impl MemIo {
    pub fn new() -> MemIo {
        MemIo {
            rx: VecDeque::new(),
            now: Duration::ZERO,
            batch_max: 1,
            sent: Vec::new(),
            verdicts: Vec::new(),
        }
    }

    /// Queues `frame`, received at `at`.
    pub fn push(&mut self, at: Duration, frame: Vec<u8>) {
        self.push_meta(at, frame, RxMeta::default());
    }

    /// Queues `frame` with driver metadata.
    pub fn push_meta(&mut self, at: Duration, frame: Vec<u8>, meta: RxMeta) {
        self.rx.push_back(Input {
            at,
            frame: Some((frame, meta)),
        });
    }

    /// Queues a pass without a frame at `at` (the engine's timers run).
    pub fn push_idle(&mut self, at: Duration) {
        self.rx.push_back(Input { at, frame: None });
    }

    /// Inputs not taken yet.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    /// Takes the sent frames.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }
}

impl FrameIo for MemIo {
    fn now(&self) -> Duration {
        self.now
    }

    fn batch<R>(
        &mut self,
        _timeout: Duration,
        pass: impl FnOnce(&mut dyn Batch) -> R,
    ) -> io::Result<Option<R>> {
        let Some(first) = self.rx.pop_front() else {
            return Ok(None);
        };
        self.now = self.now.max(first.at);
        let mut frames: Vec<(Vec<u8>, RxMeta)> = first.frame.into_iter().collect();
        while frames.len() < self.batch_max.max(1) {
            match self.rx.front() {
                Some(next) if next.at == first.at && next.frame.is_some() => {
                    frames.extend(self.rx.pop_front().and_then(|i| i.frame));
                }
                _ => break,
            }
        }
        let mut b = MemBatch {
            now: self.now,
            frames,
            io: self,
        };
        Ok(Some(pass(&mut b)))
    }
}

struct MemBatch<'a> {
    now: Duration,
    frames: Vec<(Vec<u8>, RxMeta)>,
    io: &'a mut MemIo,
}

impl Batch for MemBatch<'_> {
    fn now(&self) -> Duration {
        self.now
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn frame(&mut self, i: usize) -> Option<(&mut [u8], RxMeta)> {
        self.frames.get_mut(i).map(|(f, m)| (f.as_mut_slice(), *m))
    }

    fn peek(&self, i: usize) -> Option<&[u8]> {
        self.frames.get(i).map(|(f, _)| f.as_slice())
    }

    fn send(&mut self, out: &Output<'_>) -> io::Result<()> {
        let at = self.now;
        let engine = |t: &crate::engine::Transmit| Sent {
            at,
            frame: t.frame.clone(),
            origin: Origin::Engine(t.kind),
        };
        self.io.sent.extend(out.before.iter().map(engine));
        for (i, v) in out.verdicts {
            self.io.verdicts.push((at, *v));
            if let Some(len) = v.transmit_len()
                && let Some((f, _)) = self.frames.get(*i)
            {
                self.io.sent.push(Sent {
                    at,
                    frame: f.get(..len).unwrap_or(f).to_vec(),
                    origin: Origin::Processed(*v),
                });
            }
        }
        self.io.sent.extend(out.after.iter().map(engine));
        Ok(())
    }
}
