//! The in-memory driver: frames in, frames out, no IO. For tests and benchmarks.

use std::time::Duration;

use crate::engine::{Engine, RxMeta, TxKind, Verdict};

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

/// An engine with an output queue.
#[derive(Debug, Clone)]
pub struct MemLink {
    pub engine: Engine,
    pub sent: Vec<Sent>,
}

impl MemLink {
    pub fn new(engine: Engine) -> MemLink {
        MemLink {
            engine,
            sent: Vec::new(),
        }
    }

    /// Sends what the engine has due at `now`.
    pub fn poll(&mut self, now: Duration) {
        while let Some(t) = self.engine.poll_transmit(now) {
            self.sent.push(Sent {
                at: now,
                frame: t.frame,
                origin: Origin::Engine(t.kind),
            });
        }
    }

    /// Delivers one received frame at `now` (after [`MemLink::poll`]) and returns the verdict;
    /// a transmitted result lands in [`MemLink::sent`].
    pub fn receive(&mut self, now: Duration, frame: &[u8]) -> Verdict {
        self.receive_meta(now, frame, RxMeta::default())
    }

    /// As [`MemLink::receive`], with driver metadata.
    pub fn receive_meta(&mut self, now: Duration, frame: &[u8], meta: RxMeta) -> Verdict {
        self.poll(now);
        let mut buf = frame.to_vec();
        let v = self.engine.process_meta(now, &mut buf, meta);
        if let Some(len) = v.transmit_len() {
            buf.truncate(len);
            self.sent.push(Sent {
                at: now,
                frame: buf,
                origin: Origin::Processed(v),
            });
        }
        v
    }

    /// Takes the sent frames.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }
}
