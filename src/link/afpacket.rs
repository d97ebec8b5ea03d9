//! The live driver: a raw `AF_PACKET` socket on the DSR interface (reference §10: C Pen reads
//! one frame per `recvfrom`). The system calls live in [`crate::sys::packet`] (socket,
//! `recvmmsg`/`sendmmsg` in batches, `PACKET_AUXDATA`) and [`crate::sys::ring`] (the TPACKET_V2
//! receive ring); this module implements [`FrameIo`] over them (so [`crate::link::io::drive`]
//! runs the engine on it) and counts.
//!
//! - The socket is bound to the interface with `ETH_P_ALL`; the kernel's own copies of frames
//!   we send are filtered out (`PACKET_IGNORE_OUTGOING`, and `PACKET_OUTGOING` per frame on
//!   kernels without it).
//! - `PACKET_AUXDATA` tells per frame whether its L4 checksum is only partial (veth and other
//!   offloading senders: `TP_STATUS_CSUMNOTREADY`); the engine then completes it, so forwarded
//!   frames never carry a bad checksum. Frames whose VLAN tag the kernel stripped are skipped.
//! - Frames longer than the receive buffer ([`MAX_FRAME`], e.g. GRO super-frames) are handed to
//!   the engine truncated-but-flagged oversized: turn GRO off on the DSR interface.
//!
//! Choice of mechanism: `../shared/lab-notes.md` measured, on this kind of machine, pnet's
//! channel at 176-193 k frames/s forwarding against 312-376 k for raw `recvmmsg`/`sendmmsg` ×64,
//! and a `PACKET_MMAP` TX ring no faster than `sendmmsg` on veth, so this driver sends with
//! batched `sendmmsg`. A TPACKET_V3 receive ring was measured faster than `recvmmsg` under load
//! (179-236 k of 300 k offered frames against 110-123 k), but a V3 ring hands a block over only
//! when it is full or its retire timer (10 ms) fires, which adds up to 10 ms of latency at low
//! rates, where DSR matters most to the client; it was removed. The daemon calls
//! [`AfPacket::use_ring`]: a TPACKET_V2 ring with one slot per frame, where `poll` wakes for a
//! single frame (no added latency) and, under load, a pass takes every ready frame without a
//! receive system call; `recvmmsg` is its fallback. In both, frames longer than a ring slot or
//! the receive buffer are counted as truncated.
//!
//! The socket is created in the calling thread's network namespace and keeps it: open it on a
//! thread that entered the namespace, then run it anywhere.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::engine::{MAX_FRAME, Mac, RxMeta};
use crate::link::io::{Batch, FrameIo, MAX_WAIT, Output};
use crate::sys::packet::{self, PacketSocket, RxInfo};
use crate::sys::ring::{Geometry, RxRing};
use crate::sys::sockopt;

/// Frames per `recvmmsg`/`sendmmsg`.
pub const BATCH: usize = packet::BATCH;

/// Counters of the driver itself (the engine counts verdicts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_batches: u64,
    /// Our own frames seen on the way out (kernels without `PACKET_IGNORE_OUTGOING`).
    pub skipped_outgoing: u64,
    /// VLAN-tagged frames (the engine handles untagged frames only).
    pub skipped_vlan: u64,
    /// Frames longer than the receive buffer.
    pub truncated: u64,
    /// Receive errors survived (interface down).
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// Frames came through the TPACKET_V2 ring ([`AfPacket::use_ring`]), not `recvmmsg`.
    pub ring: bool,
}

/// A raw socket bound to one interface.
pub struct AfPacket {
    sock: PacketSocket,
    name: String,
    rx_bufs: Vec<Box<[u8]>>,
    rx_info: Vec<RxInfo>,
    /// The last `recvmmsg` returned less than a full batch: the queue was empty then.
    rx_short: bool,
    /// The XDP fast path attached to the interface at open ([`AfPacket::set_fast_path`]),
    /// until the DSR thread takes it to wrap the driver in [`crate::link::xdp::Learning`].
    fast: Option<crate::link::xdp::FastPath>,
    /// The driver's clock starts at open.
    start: Instant,
    pub stats: LinkStats,
}

impl std::fmt::Debug for AfPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacket")
            .field("interface", &self.name)
            .field("ifindex", &self.sock.ifindex())
            .field("mac", &self.sock.mac())
            .finish()
    }
}

impl AfPacket {
    /// Opens a raw socket on `ifname` (needs CAP_NET_RAW) and reads the interface's MAC.
    pub fn open(ifname: &str) -> io::Result<AfPacket> {
        let sock = PacketSocket::open(ifname)?;
        Ok(AfPacket {
            sock,
            name: ifname.to_string(),
            rx_bufs: (0..BATCH)
                .map(|_| vec![0u8; MAX_FRAME + 1].into_boxed_slice())
                .collect(),
            rx_info: vec![RxInfo::default(); BATCH],
            rx_short: false,
            fast: None,
            start: Instant::now(),
            stats: LinkStats::default(),
        })
    }

    /// The interface's MAC.
    pub fn mac(&self) -> Mac {
        self.sock.mac()
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.sock.ifindex()
    }

    /// Keeps `fast`, the XDP fast path attached to this interface (see [`crate::link::xdp`]),
    /// until [`AfPacket::take_fast_path`].
    pub fn set_fast_path(&mut self, fast: crate::link::xdp::FastPath) {
        self.fast = Some(fast);
    }

    /// Takes the attached fast path (to wrap the driver in [`crate::link::xdp::Learning`]).
    pub fn take_fast_path(&mut self) -> Option<crate::link::xdp::FastPath> {
        self.fast.take()
    }

    /// The attached fast path, if any.
    pub fn fast_path(&self) -> Option<&crate::link::xdp::FastPath> {
        self.fast.as_ref()
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Receives up to [`BATCH`] frames, waiting up to `timeout` only when none is queued
    /// (under load the socket is drained without a `poll` per batch). Returns how many were
    /// received (0 on timeout); they are in `rx_bufs`/`rx_info`.
    ///
    /// After a short batch (the queue was empty then) it polls first instead of paying a
    /// `recvmmsg` that ends in EAGAIN; `poll` is level-triggered, so frames that came in
    /// meanwhile make it return at once.
    pub fn recv_batch(&mut self, timeout: Duration) -> io::Result<usize> {
        if !self.rx_short || timeout.is_zero() {
            let n = self.try_recv()?;
            if n > 0 || timeout.is_zero() {
                return Ok(n);
            }
        }
        let ready = sockopt::poll_in(self.sock.raw_fd(), timeout)?;
        // A pending error (the interface went down) is taken by the receive call, which
        // reports it; returning without it would make the next poll return at once again.
        if !ready.readable && !ready.error {
            return Ok(0);
        }
        self.try_recv()
    }

    /// One non-blocking `recvmmsg`.
    fn try_recv(&mut self) -> io::Result<usize> {
        let n = match self.sock.recv(&mut self.rx_bufs, &mut self.rx_info) {
            Ok(n) => n,
            Err(e) => {
                self.rx_short = true;
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                    _ => Err(e),
                };
            }
        };
        self.rx_short = n < BATCH;
        self.stats.rx_batches += 1;
        for r in &self.rx_info[..n] {
            if r.outgoing {
                self.stats.skipped_outgoing += 1;
            } else if r.vlan {
                self.stats.skipped_vlan += 1;
            }
            if r.truncated {
                self.stats.truncated += 1;
            }
        }
        self.stats.rx_frames += n as u64;
        Ok(n)
    }

    /// Receives through a memory-mapped TPACKET_V2 ring (`PACKET_RX_RING`, one slot per
    /// frame) from now on instead of `recvmmsg`: under load a pass takes every frame that is
    /// ready without any receive system call; when the ring is empty it sleeps in `poll`,
    /// which wakes for the next single frame (no block timeout, unlike TPACKET_V3, so no
    /// added latency at low rates). The ring is the returned driver's (it is not `Send`:
    /// set it up on the thread that runs it); on error the socket is left as it was.
    pub fn use_ring(&mut self) -> io::Result<RingLink<'_>> {
        let geometry = Geometry {
            frame_size: v2_frame_size(mtu_of(&self.name)),
            frames: V2_FRAMES,
            per_block: V2_FRAMES_PER_BLOCK,
        };
        let ring = RxRing::new(self.sock.raw_fd(), geometry)?;
        self.stats.ring = true;
        Ok(RingLink { link: self, ring })
    }

    /// One pass with `recvmmsg`.
    fn mmsg_batch<R>(
        &mut self,
        timeout: Duration,
        pass: impl FnOnce(&mut dyn Batch) -> R,
    ) -> io::Result<Option<R>> {
        let n = match self.recv_batch(timeout) {
            Ok(n) => n,
            // The interface went down (or is being reconfigured): wait for it to come back
            // rather than ending DSR mode.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENETDOWN | libc::ENXIO)) => {
                self.stats.rx_errors += 1;
                std::thread::sleep(MAX_WAIT);
                0
            }
            Err(e) => return Err(e),
        };
        let mut b = MmsgBatch {
            now: self.start.elapsed(),
            bufs: &mut self.rx_bufs[..n],
            info: &self.rx_info[..n],
            fd: self.sock.raw_fd(),
            stats: &mut self.stats,
        };
        Ok(Some(pass(&mut b)))
    }
}

impl FrameIo for AfPacket {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Waits (at most `timeout`), receives one batch with `recvmmsg` and runs `pass` over it.
    /// Never ends by itself; an interface going down is counted and waited out.
    fn batch<R>(
        &mut self,
        timeout: Duration,
        pass: impl FnOnce(&mut dyn Batch) -> R,
    ) -> io::Result<Option<R>> {
        self.mmsg_batch(timeout, pass)
    }
}

/// The live driver receiving through its TPACKET_V2 ring ([`AfPacket::use_ring`]).
#[derive(Debug)]
pub struct RingLink<'a> {
    link: &'a mut AfPacket,
    ring: RxRing,
}

impl FrameIo for RingLink<'_> {
    fn now(&self) -> Duration {
        self.link.start.elapsed()
    }

    /// Waits (at most `timeout`) unless a frame is ready, claims up to [`BATCH`] ready
    /// slots and runs `pass` over them: the frames are processed and sent in place, and the
    /// slots go back to the kernel after sending. Never ends by itself.
    fn batch<R>(
        &mut self,
        timeout: Duration,
        pass: impl FnOnce(&mut dyn Batch) -> R,
    ) -> io::Result<Option<R>> {
        let fd = self.link.sock.raw_fd();
        let ring = &mut self.ring;
        if !ring.ready() {
            let r = sockopt::poll_in(fd, timeout)?;
            if r.error {
                // An interface going down reports an error: take it (reading SO_ERROR
                // clears it, so the next poll waits again) and carry on.
                self.link.stats.rx_errors += 1;
                let _ = sockopt::take_error(fd);
            }
        }
        let now = self.link.start.elapsed();
        // The claimed slots go back to the kernel when `batch` is dropped, after sending.
        let mut batch = ring.take(BATCH);
        let stats = &mut self.link.stats;
        if batch.len() > 0 {
            stats.rx_batches += 1;
        }
        let slots: Vec<Option<(&mut [u8], RxMeta)>> = batch
            .iter_mut()
            .map(|slot| {
                stats.rx_frames += 1;
                if slot.pkttype == libc::PACKET_OUTGOING {
                    stats.skipped_outgoing += 1;
                    return None;
                }
                if slot.status & libc::TP_STATUS_VLAN_VALID != 0 {
                    stats.skipped_vlan += 1;
                    return None;
                }
                let meta = RxMeta {
                    csum_partial: slot.status & libc::TP_STATUS_CSUMNOTREADY != 0,
                };
                match slot.frame {
                    Some(f) if f.len() >= slot.len => Some((f, meta)),
                    _ => {
                        stats.truncated += 1;
                        None
                    }
                }
            })
            .collect();
        let mut b = RingBatch {
            now,
            slots,
            fd,
            stats,
        };
        let r = pass(&mut b);
        drop(b);
        drop(batch);
        Ok(Some(r))
    }
}

/// Whether the driver hands a received frame on (not our own outgoing frame, not VLAN-tagged).
fn kept(r: &RxInfo) -> bool {
    !(r.outgoing || r.vlan)
}

/// A `recvmmsg` batch: the frames in the driver's receive buffers.
struct MmsgBatch<'a> {
    now: Duration,
    bufs: &'a mut [Box<[u8]>],
    info: &'a [RxInfo],
    fd: RawFd,
    stats: &'a mut LinkStats,
}

impl Batch for MmsgBatch<'_> {
    fn now(&self) -> Duration {
        self.now
    }

    fn len(&self) -> usize {
        self.info.len()
    }

    fn frame(&mut self, i: usize) -> Option<(&mut [u8], RxMeta)> {
        let r = self.info.get(i).filter(|r| kept(r))?;
        let meta = RxMeta {
            csum_partial: r.csum_partial,
        };
        Some((self.bufs.get_mut(i)?.get_mut(..r.len)?, meta))
    }

    fn peek(&self, i: usize) -> Option<&[u8]> {
        let r = self.info.get(i).filter(|r| kept(r))?;
        self.bufs.get(i)?.get(..r.len)
    }

    fn send(&mut self, out: &Output<'_>) -> io::Result<()> {
        let bufs = &*self.bufs;
        send_output(self.fd, self.stats, out, |i| bufs.get(i).map(|b| &b[..]));
        Ok(())
    }
}

/// A ring batch: the frames in their claimed slots.
struct RingBatch<'a, 'b> {
    now: Duration,
    slots: Vec<Option<(&'b mut [u8], RxMeta)>>,
    fd: RawFd,
    stats: &'a mut LinkStats,
}

impl Batch for RingBatch<'_, '_> {
    fn now(&self) -> Duration {
        self.now
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn frame(&mut self, i: usize) -> Option<(&mut [u8], RxMeta)> {
        self.slots.get_mut(i)?.as_mut().map(|(f, m)| (&mut **f, *m))
    }

    fn peek(&self, i: usize) -> Option<&[u8]> {
        self.slots.get(i)?.as_ref().map(|(f, _)| &**f)
    }

    fn send(&mut self, out: &Output<'_>) -> io::Result<()> {
        let slots = &self.slots;
        send_output(self.fd, self.stats, out, |i| {
            slots.get(i)?.as_ref().map(|(f, _)| &**f)
        });
        Ok(())
    }
}

/// Sends a pass's output with as few `sendmmsg` calls as possible: the engine's earlier
/// frames, the forwarded received frames (`frame(i)`, cut to their length), its later ones.
fn send_output<'f>(
    fd: RawFd,
    stats: &mut LinkStats,
    out: &Output<'_>,
    frame: impl Fn(usize) -> Option<&'f [u8]>,
) {
    let mut frames: Vec<&[u8]> = Vec::with_capacity(out.frames());
    frames.extend(out.before.iter().map(|t| t.frame.as_slice()));
    frames.extend(
        out.forwarded()
            .filter_map(|(i, len)| frame(i).and_then(|f| f.get(..len))),
    );
    frames.extend(out.after.iter().map(|t| t.frame.as_slice()));
    if !frames.is_empty() {
        send_frames(fd, stats, &frames);
    }
}

/// Sends `frames` (`sendmmsg` in batches); a frame the kernel refuses is counted in
/// `tx_errors` and skipped.
fn send_frames(fd: RawFd, stats: &mut LinkStats, frames: &[&[u8]]) {
    let mut off = 0;
    while off < frames.len() {
        match packet::send(fd, &frames[off..]) {
            Ok(n) => {
                off += n.max(1);
                stats.tx_frames += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // One bad frame must not stall the rest of the batch.
                stats.tx_errors += 1;
                off += 1;
            }
        }
    }
}

/// Frames in a TPACKET_V2 ring block.
const V2_FRAMES_PER_BLOCK: u32 = 16;
/// Frames in the TPACKET_V2 ring (a burst of this many frames waits without loss).
const V2_FRAMES: u32 = 1024;
/// Room before the frame's first byte (`tp_mac` is about 66 with a 14-byte header).
const V2_HEADROOM: usize = 128;

/// Slot size of the TPACKET_V2 ring for an interface MTU: the largest Ethernet frame the
/// interface can carry (with a VLAN tag) after the ring's headers, rounded up to a power of
/// two, between 2 KiB and 16 KiB.
fn v2_frame_size(mtu: usize) -> u32 {
    let need = (mtu + 18 + V2_HEADROOM).next_power_of_two();
    u32::try_from(need.clamp(2048, 16 * 1024)).unwrap_or(16 * 1024)
}

/// The MTU of interface `name` (1500 when it cannot be read).
fn mtu_of(name: &str) -> usize {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1500)
}

#[cfg(test)]
mod tests {
    //! Live test in two throw-away network namespaces joined by a veth pair (needs root).
    use super::*;
    use crate::engine::{BackendConfig, Engine, EngineConfig, frames};
    use crate::link::io::drive;
    use std::net::Ipv4Addr;
    use std::process::Command;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// What the tests' peer sockets need besides the receive loops.
    impl AfPacket {
        /// Frame `i` of the last [`AfPacket::recv_batch`], `None` past its end or when the driver
        /// skips it (our own outgoing frame, VLAN-tagged).
        fn frame(&self, i: usize) -> Option<&[u8]> {
            let r = self.rx_info.get(i).filter(|r| kept(r))?;
            self.rx_bufs.get(i)?.get(..r.len)
        }

        /// Sends `frames` with as few `sendmmsg` calls as possible; returns how many were sent
        /// (a frame the kernel refuses, e.g. longer than the MTU, is counted in `tx_errors` and
        /// skipped).
        fn send_batch(&mut self, frames: &[&[u8]]) -> usize {
            let before = self.stats.tx_frames;
            send_frames(self.sock.raw_fd(), &mut self.stats, frames);
            (self.stats.tx_frames - before) as usize
        }
    }

    struct Netns(Vec<String>);

    impl Drop for Netns {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", n]).status();
            }
        }
    }

    fn ip(args: &[&str]) {
        let st = Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?} failed");
    }

    /// Runs `f` on a new thread inside namespace `ns`.
    fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        std::thread::spawn(move || {
            // On this fresh thread only.
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap()
    }

    /// A pending socket error (the interface went down) is handed to the caller by the next
    /// `recv_batch`, even after a short batch, where it polls first: `poll` reports the error
    /// without readable data, and returning "nothing" would leave it pending and make every
    /// later `poll` return at once (a busy loop while the interface is down).
    #[test]
    fn recv_batch_reports_the_interface_going_down_instead_of_spinning() {
        crate::sys::process::require_root("network namespaces and raw sockets");
        let tag = std::process::id();
        let (a, b) = (format!("penrs-afd-a-{tag}"), format!("penrs-afd-b-{tag}"));
        let _guard = Netns(vec![a.clone(), b.clone()]);
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&[
            "link", "add", "va", "netns", &a, "type", "veth", "peer", "name", "vb", "netns", &b,
        ]);
        ip(&["-n", &a, "link", "set", "va", "up"]);
        ip(&["-n", &b, "link", "set", "vb", "up"]);
        let ns = a.clone();
        let got = in_ns(&a, move || {
            let mut l = AfPacket::open("va").unwrap();
            // A short (empty) batch: the next call polls first.
            let _ = l.recv_batch(Duration::from_millis(20));
            assert!(l.rx_short);
            ip(&["-n", &ns, "link", "set", "va", "down"]);
            let start = Instant::now();
            let mut results = Vec::new();
            while start.elapsed() < Duration::from_millis(300) && results.len() < 1000 {
                match l.recv_batch(Duration::from_millis(100)) {
                    Ok(n) => results.push(Ok(n)),
                    Err(e) => {
                        results.push(Err(e.raw_os_error()));
                        break;
                    }
                }
            }
            results
        });
        assert!(
            got.len() < 10,
            "recv_batch returned {} times in 300 ms without reporting the error: {:?}",
            got.len(),
            &got[..got.len().min(5)]
        );
        assert_eq!(got.last(), Some(&Err(Some(libc::ENETDOWN))), "{got:?}");
    }

    fn wait_for(link: &mut AfPacket, pred: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let n = link.recv_batch(Duration::from_millis(50)).unwrap();
            for i in 0..n {
                if let Some(f) = link.frame(i)
                    && pred(f)
                {
                    return Some(f.to_vec());
                }
            }
        }
        None
    }

    #[test]
    fn live_driver_answers_arp_learns_the_backend_and_forwards() {
        live_driver_round_trip(Driver::Mmsg);
    }

    #[test]
    fn live_v2_ring_driver_answers_arp_learns_the_backend_forwards_and_survives_a_flap() {
        live_driver_round_trip(Driver::RingV2);
    }

    /// The receive loops of the driver.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Driver {
        Mmsg,
        RingV2,
    }

    fn live_driver_round_trip(driver: Driver) {
        crate::sys::process::require_root("network namespaces and raw sockets");
        let tag = std::process::id();
        let (a, b) = (
            format!("penrs-afp-a-{tag}-{driver:?}"),
            format!("penrs-afp-b-{tag}-{driver:?}"),
        );
        let _guard = Netns(vec![a.clone(), b.clone()]);
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&[
            "link", "add", "va", "netns", &a, "type", "veth", "peer", "name", "vb", "netns", &b,
        ]);
        ip(&["-n", &a, "link", "set", "va", "up"]);
        ip(&["-n", &b, "link", "set", "vb", "up"]);
        let mut lb = in_ns(&a, || AfPacket::open("va")).unwrap();
        let mut peer = in_ns(&b, || AfPacket::open("vb")).unwrap();
        assert!(
            in_ns(&a, || AfPacket::open("nope0"))
                .unwrap_err()
                .to_string()
                .contains("nope0")
        );
        let (lb_mac, peer_mac) = (lb.mac(), peer.mac());
        let vip = Ipv4Addr::new(10, 9, 0, 100);
        let backend = Ipv4Addr::new(10, 9, 0, 3);
        let mut cfg = EngineConfig::new(lb_mac, vip, 80);
        cfg.backends = vec![BackendConfig {
            ip: Some(backend.into()),
            weight: 0,
            available: true,
        }];
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let runner = std::thread::spawn(move || {
            let mut e = Engine::new(cfg);
            match driver {
                Driver::Mmsg => drive(&mut e, &mut lb, &stop2, |_, _| {}).unwrap(),
                Driver::RingV2 => {
                    let mut ring = lb.use_ring().unwrap();
                    drive(&mut e, &mut ring, &stop2, |_, _| {}).unwrap()
                }
            }
            (e.counters().clone(), lb.stats.clone())
        });
        // The engine probes for the backend; the peer plays the backend and answers.
        let probe = wait_for(&mut peer, |f| {
            f.len() >= 42 && f[12..14] == [8, 6] && f[38..42] == backend.octets()
        })
        .expect("an ARP probe for the backend");
        assert_eq!(&probe[6..12], &lb_mac);
        let client = Ipv4Addr::new(10, 9, 0, 2);
        peer.send_batch(&[
            &frames::arp_reply(peer_mac, backend, lb_mac, Ipv4Addr::UNSPECIFIED),
            &frames::arp_request(peer_mac, client, vip),
        ]);
        let reply = wait_for(&mut peer, |f| {
            f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2]
        })
        .expect("an ARP reply for the VIP");
        assert_eq!(&reply[22..28], &lb_mac);
        assert_eq!(&reply[28..32], &vip.octets());
        let syn = frames::tcp(
            peer_mac,
            lb_mac,
            std::net::SocketAddrV4::new(client, 40000),
            std::net::SocketAddrV4::new(vip, 80),
            frames::SYN,
            1,
            0,
            &frames::syn_options(20),
            b"",
        );
        peer.send_batch(&[&syn]);
        let fwd = wait_for(&mut peer, |f| f.len() == syn.len() && f[12..] == syn[12..])
            .expect("the SYN forwarded to the backend");
        assert_eq!(&fwd[..6], &peer_mac, "to the backend's MAC");
        assert_eq!(&fwd[6..12], &lb_mac, "from ours");
        // The DSR interface goes down and comes back: the driver carries on.
        ip(&["-n", &a, "link", "set", "va", "down"]);
        std::thread::sleep(Duration::from_millis(150));
        ip(&["-n", &a, "link", "set", "va", "up"]);
        std::thread::sleep(Duration::from_millis(150));
        let again = frames::tcp(
            peer_mac,
            lb_mac,
            std::net::SocketAddrV4::new(client, 40000),
            std::net::SocketAddrV4::new(vip, 80),
            frames::SYN,
            2,
            0,
            &frames::syn_options(20),
            b"",
        );
        peer.send_batch(&[&again]);
        let fwd2 = wait_for(&mut peer, |f| {
            f.len() == again.len() && f[12..] == again[12..]
        })
        .expect("forwarding resumes after the interface comes back up");
        assert_eq!(&fwd2[6..12], &lb_mac);
        stop.store(true, Ordering::Relaxed);
        let (counters, stats) = runner.join().unwrap();
        assert_eq!(stats.ring, driver == Driver::RingV2, "{stats:?}");
        assert_eq!(counters.forwarded + counters.held, 2, "{counters}");
        assert_eq!(counters.arp_replies, 1, "{counters}");
        assert!(stats.tx_frames >= 3, "{stats:?}");
    }
    /// Forwarding rate of the live driver on a veth pair (root; run by hand, prints the
    /// figure): `cargo test --release -p pen --lib link::afpacket::tests::live_forwarding_rate
    /// -- --ignored --nocapture`. A generator in one namespace sends 64-byte-payload TCP
    /// frames to the VIP in `sendmmsg` batches; the engine forwards them back out to the
    /// generator's MAC (playing the backend), where a second socket counts them.
    #[test]
    #[ignore = "measurement, needs root; run by hand"]
    fn live_forwarding_rate() {
        measure_forwarding("fwd", false);
    }
    #[test]
    #[ignore = "measurement, needs root; run by hand"]
    fn live_forwarding_rate_ring() {
        measure_forwarding("fwr", true);
    }

    /// The measurement behind both `live_forwarding_rate*` tests; `ring` uses the TPACKET_V2
    /// receive ring ([`AfPacket::use_ring`]) instead of recvmmsg.
    fn measure_forwarding(name: &str, ring: bool) {
        crate::sys::process::require_root("network namespaces and raw sockets");
        let tag = std::process::id();
        let (a, b) = (
            format!("penrs-{name}-a-{tag}"),
            format!("penrs-{name}-b-{tag}"),
        );
        let _guard = Netns(vec![a.clone(), b.clone()]);
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&[
            "link", "add", "va", "netns", &a, "type", "veth", "peer", "name", "vb", "netns", &b,
        ]);
        ip(&["-n", &a, "link", "set", "va", "up"]);
        ip(&["-n", &b, "link", "set", "vb", "up"]);
        let mut lb = in_ns(&a, || AfPacket::open("va")).unwrap();
        let mut gen_link = in_ns(&b, || AfPacket::open("vb")).unwrap();
        let mut sink = in_ns(&b, || AfPacket::open("vb")).unwrap();
        let (lb_mac, peer_mac) = (lb.mac(), gen_link.mac());
        let vip = Ipv4Addr::new(10, 9, 0, 100);
        let backend = Ipv4Addr::new(10, 9, 0, 3);
        let mut cfg = EngineConfig::new(lb_mac, vip, 80);
        cfg.backends = vec![BackendConfig {
            ip: Some(backend.into()),
            weight: 0,
            available: true,
        }];
        let mut engine = Engine::new(cfg);
        let mut learn = frames::arp_reply(peer_mac, backend, lb_mac, vip);
        engine.process(Duration::ZERO, &mut learn);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let runner = std::thread::spawn(move || {
            if ring {
                drive(&mut engine, &mut lb.use_ring().unwrap(), &stop2, |_, _| {}).unwrap();
            } else {
                drive(&mut engine, &mut lb, &stop2, |_, _| {}).unwrap();
            }
            (engine.counters().clone(), lb.stats.clone())
        });
        let total: u32 = 300_000;
        let frames_out: Vec<Vec<u8>> = (0..256u32)
            .map(|i| {
                frames::tcp(
                    peer_mac,
                    lb_mac,
                    std::net::SocketAddrV4::new(Ipv4Addr::from(0x0a09_1000 + i), 40000),
                    std::net::SocketAddrV4::new(vip, 80),
                    frames::ACK,
                    i,
                    1,
                    &[],
                    &[0u8; 64],
                )
            })
            .collect();
        let stop_sink = Arc::new(AtomicBool::new(false));
        let stop_sink2 = stop_sink.clone();
        let counter = std::thread::spawn(move || {
            let mut got = 0u64;
            let mut last = Instant::now();
            while !stop_sink2.load(Ordering::Relaxed) {
                let n = sink.recv_batch(Duration::from_millis(50)).unwrap();
                for i in 0..n {
                    if sink.frame(i).is_some_and(|f| f[6..12] == lb_mac) {
                        got += 1;
                        last = Instant::now();
                    }
                }
            }
            (got, last)
        });
        let start = Instant::now();
        let mut sent = 0u32;
        while sent < total {
            let batch: Vec<&[u8]> = frames_out.iter().take(64).map(Vec::as_slice).collect();
            sent += gen_link.send_batch(&batch) as u32;
        }
        let sent_in = start.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        stop_sink.store(true, Ordering::Relaxed);
        let (got, last) = counter.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        let (counters, stats) = runner.join().unwrap();
        let secs = last.duration_since(start).as_secs_f64();
        eprintln!(
            "sent {sent} frames in {:.3} s ({:.0}/s); forwarded and received {got} in {secs:.3} s = {:.0} frames/s; engine {counters}; link {stats:?}",
            sent_in.as_secs_f64(),
            f64::from(sent) / sent_in.as_secs_f64(),
            got as f64 / secs
        );
        assert!(got > 0);
    }
}
