//! The one receive → engine → send loop: the [`FrameIo`] trait every driver implements and
//! [`drive`], which runs an [`Engine`] over any of them.
//!
//! A driver hands the loop one *batch* at a time ([`FrameIo::batch`]): the frames received
//! together (possibly none: the wait ended), readable and writable in place through [`Batch`],
//! at the driver's clock ([`Batch::now`]). The loop runs the engine over them and gives the
//! pass's [`Output`] back to the same batch ([`Batch::send`]), so a driver whose frames live in
//! a kernel ring sends the rewritten frames from where they were received, without a copy.
//!
//! Per pass, in this order: `tick(engine, now)` (the daemon applies blacklist and ACL changes
//! there, so they apply to the very next frame); everything [`Engine::poll_transmit`] has due
//! at `now` ([`Output::before`]); each received frame through [`Engine::process_meta`]
//! ([`Output::verdicts`]); what the engine queued meanwhile ([`Output::after`]: ARP answers,
//! released held frames). The driver sends `before`, the forwarded frames, then `after`.
//!
//! Wrappers are drivers too: [`crate::link::tap::Tap`] writes every frame in and out to a
//! pcap file, [`crate::link::xdp::Learning`] teaches the XDP fast path the engine's choices.
//! (The shape follows smoltcp's `phy::Device` and its `PcapWriter` wrapper, with batches
//! instead of single-frame tokens.)

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::engine::{Engine, RxMeta, Transmit, Verdict};

/// The longest a live driver may wait for frames in one pass (so `stop` and timers are seen).
pub const MAX_WAIT: Duration = Duration::from_millis(100);

/// One received batch, lent by a driver to the loop for one pass.
pub trait Batch {
    /// The driver's clock when the batch was received: the engine runs at this time.
    fn now(&self) -> Duration;
    /// How many frames the batch holds (including ones the driver skips).
    fn len(&self) -> usize;
    /// Whether the batch holds no frame.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Frame `i`, writable (the engine rewrites it in place), with what the driver knows of it;
    /// `None` past the end or for a frame the driver skips (our own outgoing frame, VLAN-tagged,
    /// truncated).
    fn frame(&mut self, i: usize) -> Option<(&mut [u8], RxMeta)>;
    /// Frame `i` read-only, `None` as for [`Batch::frame`] (for wrappers).
    fn peek(&self, i: usize) -> Option<&[u8]>;
    /// Sends the pass's output: [`Output::before`], the received frames the verdicts forward
    /// (their first `len` bytes, as rewritten), [`Output::after`]. Live drivers count send
    /// errors and carry on; an error here ends [`drive`] (an output file cannot be written).
    fn send(&mut self, out: &Output<'_>) -> io::Result<()>;
}

/// What one pass of [`drive`] produced.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    /// The batch's time.
    pub now: Duration,
    /// [`Engine::epoch`] after the pass (it moves when the engine's decisions change).
    pub epoch: u64,
    /// Frames the engine had due at `now` before the batch (timers, released frames).
    pub before: &'a [Transmit],
    /// One entry per frame handed to the engine: its index in the batch and the verdict.
    pub verdicts: &'a [(usize, Verdict)],
    /// Frames the engine queued while processing the batch.
    pub after: &'a [Transmit],
}

impl Output<'_> {
    /// The received frames to send: index in the batch and length.
    pub fn forwarded(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.verdicts
            .iter()
            .filter_map(|(i, v)| v.transmit_len().map(|len| (*i, len)))
    }

    /// How many frames the pass sends.
    pub fn frames(&self) -> usize {
        self.before.len() + self.forwarded().count() + self.after.len()
    }
}

/// A frame driver: live (`AF_PACKET`), offline (pcap file), in memory, or a wrapper around one.
pub trait FrameIo {
    /// The driver's clock now (time since it started, or the input's time offline).
    fn now(&self) -> Duration;
    /// Waits up to `timeout` for frames (not at all when some are queued), receives one batch
    /// (possibly empty) and runs `pass` over it. `Ok(None)`: the input has ended (offline
    /// drivers); live drivers never end by themselves.
    fn batch<R>(
        &mut self,
        timeout: Duration,
        pass: impl FnOnce(&mut dyn Batch) -> R,
    ) -> io::Result<Option<R>>;
}

/// A driver lent out: wrappers and [`drive`] can run over a borrowed driver.
impl<T: FrameIo + ?Sized> FrameIo for &mut T {
    fn now(&self) -> Duration {
        (**self).now()
    }

    fn batch<R>(
        &mut self,
        timeout: Duration,
        pass: impl FnOnce(&mut dyn Batch) -> R,
    ) -> io::Result<Option<R>> {
        (**self).batch(timeout, pass)
    }
}

/// How long a pass may wait for frames: until the engine's next timer, at most [`MAX_WAIT`].
pub fn engine_wait(engine: &Engine, now: Duration) -> Duration {
    engine
        .poll_timeout()
        .map_or(MAX_WAIT, |t| t.saturating_sub(now))
        .min(MAX_WAIT)
}

/// Runs `engine` over `io` until `stop` is set (checked once per pass, and a live driver's
/// pass lasts at most [`MAX_WAIT`]) or the input ends. `tick` runs at the start of every pass,
/// after the wait and before the batch, with the engine and the batch's time. See the module
/// doc for the order of a pass.
pub fn drive<I: FrameIo>(
    engine: &mut Engine,
    io: &mut I,
    stop: &AtomicBool,
    mut tick: impl FnMut(&mut Engine, Duration),
) -> io::Result<()> {
    let mut before: Vec<Transmit> = Vec::new();
    let mut after: Vec<Transmit> = Vec::new();
    let mut verdicts: Vec<(usize, Verdict)> = Vec::with_capacity(64);
    while !stop.load(Ordering::Relaxed) {
        let wait = engine_wait(engine, io.now());
        let pass = io.batch(wait, |b| {
            let now = b.now();
            tick(engine, now);
            before.clear();
            before.extend(std::iter::from_fn(|| engine.poll_transmit(now)));
            verdicts.clear();
            for i in 0..b.len() {
                if let Some((frame, meta)) = b.frame(i) {
                    verdicts.push((i, engine.process_meta(now, frame, meta)));
                }
            }
            after.clear();
            after.extend(std::iter::from_fn(|| engine.poll_transmit(now)));
            b.send(&Output {
                now,
                epoch: engine.epoch(),
                before: &before,
                verdicts: &verdicts,
                after: &after,
            })
        })?;
        match pass {
            Some(r) => r?,
            None => break,
        }
    }
    Ok(())
}

/// [`drive`] until the input ends (offline and in-memory drivers), with no tick.
pub fn drive_to_end<I: FrameIo>(engine: &mut Engine, io: &mut I) -> io::Result<()> {
    drive(engine, io, &AtomicBool::new(false), |_, _| {})
}

#[cfg(test)]
pub(crate) mod tests {
    //! Also the fixtures of the wrappers' tests (one backend, a client's SYN).
    use super::*;
    use crate::engine::{BackendConfig, EngineConfig, TxKind, frames};
    use crate::link::mem::{MemIo, Origin};
    use std::net::{Ipv4Addr, SocketAddrV4};

    pub(crate) const OUR: crate::engine::Mac = [2, 0, 0, 0, 0, 1];
    pub(crate) const PEER: crate::engine::Mac = [2, 0, 0, 0, 0, 9];
    pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 100);
    pub(crate) const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 3);

    /// An engine for VIP:80 with one backend, BACKEND, whose MAC is not known yet.
    pub(crate) fn engine() -> Engine {
        let mut cfg = EngineConfig::new(OUR, VIP, 80);
        cfg.backends = vec![BackendConfig {
            ip: Some(BACKEND.into()),
            weight: 0,
            available: true,
        }];
        Engine::new(cfg)
    }

    /// A SYN from 10.9.0.2:40000 to VIP:80, addressed to OUR.
    pub(crate) fn syn(seq: u32) -> Vec<u8> {
        frames::tcp(
            PEER,
            OUR,
            SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 2), 40000),
            SocketAddrV4::new(VIP, 80),
            frames::SYN,
            seq,
            0,
            &[],
            b"",
        )
    }

    /// The loop over the memory driver: the engine's ARP probe goes out before the first
    /// frame, a SYN for an unresolved backend is held and released (after the ARP reply that
    /// resolves it, in the same pass), a later SYN is forwarded in place, the tick runs once
    /// per pass with the batch's time, and the run ends with the input.
    #[test]
    fn drive_over_memory_frames_sends_in_engine_order_and_ends_with_the_input() {
        let ms = Duration::from_millis;
        let mut io = MemIo::new();
        io.push(ms(0), syn(1));
        io.push(ms(5), frames::arp_reply(PEER, BACKEND, OUR, VIP));
        io.push(ms(10), syn(2));
        let mut e = engine();
        let mut ticks = Vec::new();
        drive(&mut e, &mut io, &AtomicBool::new(false), |_, now| {
            ticks.push(now)
        })
        .unwrap();
        assert_eq!(ticks, [ms(0), ms(5), ms(10)]);
        let sent: Vec<(Duration, Origin)> = io.sent.iter().map(|s| (s.at, s.origin)).collect();
        assert!(
            matches!(sent[0], (t, Origin::Engine(TxKind::ArpProbe { .. })) if t == ms(0)),
            "{sent:?}"
        );
        assert!(
            matches!(sent.last(), Some((t, Origin::Processed(Verdict::Forward { .. }))) if *t == ms(10)),
            "{sent:?}"
        );
        // The held SYN is released when the ARP reply comes in, at 5 ms.
        assert!(
            sent.iter()
                .any(|(t, o)| *t == ms(5) && matches!(o, Origin::Engine(TxKind::Released { .. }))),
            "{sent:?}"
        );
        let fwd = &io.sent.last().unwrap().frame;
        assert_eq!(&fwd[..6], &PEER, "rewritten to the backend's MAC");
        assert_eq!(&fwd[6..12], &OUR);
        assert_eq!(io.verdicts.len(), 3);
        assert_eq!(e.counters().forwarded, 1, "{}", e.counters());
    }

    /// `stop` ends the loop before the next pass, even with input left.
    #[test]
    fn drive_stops_when_told() {
        let mut io = MemIo::new();
        io.push(Duration::ZERO, syn(1));
        let mut e = engine();
        drive(&mut e, &mut io, &AtomicBool::new(true), |_, _| {}).unwrap();
        assert_eq!(io.verdicts.len(), 0);
        assert_eq!(io.pending(), 1);
    }

    /// An idle pass (no frame) still runs the engine's timers: the ARP probe is retried.
    #[test]
    fn idle_passes_send_what_the_timers_have_due() {
        let mut io = MemIo::new();
        io.push_idle(Duration::ZERO);
        io.push_idle(Duration::from_secs(5));
        let mut e = engine();
        drive_to_end(&mut e, &mut io).unwrap();
        let probes: Vec<Duration> = io
            .sent
            .iter()
            .filter(|s| matches!(s.origin, Origin::Engine(TxKind::ArpProbe { .. })))
            .map(|s| s.at)
            .collect();
        assert!(probes.len() >= 2, "{probes:?}");
        assert_eq!(probes[0], Duration::ZERO);
    }

    #[test]
    fn the_wait_is_capped_and_follows_the_timers() {
        let e = engine();
        assert!(engine_wait(&e, Duration::ZERO) <= MAX_WAIT);
        assert_eq!(engine_wait(&e, Duration::from_secs(3600)), Duration::ZERO);
    }
}
