//! The live driver: a raw `AF_PACKET` socket on the DSR interface (reference §10: C Pen reads
//! one frame per `recvfrom`). The system calls live in [`crate::sys::packet`] (socket,
//! `recvmmsg`/`sendmmsg` in batches, `PACKET_AUXDATA`) and [`crate::sys::ring`] (the TPACKET_V2
//! receive ring); this module runs the engine over them and counts.
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
//! rates, where DSR matters most to the client; it was removed. The daemon uses
//! [`AfPacket::run_v2`]: a TPACKET_V2 ring with one slot per frame, where `poll` wakes for a
//! single frame (no added latency) and, under load, a pass takes every ready frame without a
//! receive system call; [`AfPacket::run`] (`recvmmsg`) is its fallback. In both, frames longer
//! than a ring slot or the receive buffer are counted as truncated.
//!
//! The socket is created in the calling thread's network namespace and keeps it: open it on a
//! thread that entered the namespace, then run it anywhere.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::engine::{Engine, MAX_FRAME, Mac, RxMeta};
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
    /// Frames came through the TPACKET_V2 ring ([`AfPacket::run_v2`]), not `recvmmsg`.
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
    /// The XDP fast path, when attached ([`AfPacket::set_fast_path`]): told of every frame
    /// the engine forwards.
    fast: Option<crate::link::xdp::FastPath>,
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

    /// Hands the engine's forwarding decisions to `fast` from now on (see
    /// [`crate::link::xdp`]).
    pub fn set_fast_path(&mut self, fast: crate::link::xdp::FastPath) {
        self.fast = Some(fast);
    }

    /// The attached fast path, if any.
    pub fn fast_path(&self) -> Option<&crate::link::xdp::FastPath> {
        self.fast.as_ref()
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether frame `i` of the last batch is one the driver skips (our own outgoing frame,
    /// VLAN-tagged).
    fn skipped(&self, i: usize) -> bool {
        self.rx_info.get(i).is_none_or(|r| r.outgoing || r.vlan)
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

    /// Runs `engine` on this interface until `stop` is set (checked at least every 100 ms).
    /// `tick` runs once per loop pass, after waiting and before the received batch is
    /// processed, with the engine and the current time: apply blacklist changes there
    /// ([`Engine::set_backends`]), read counters, and so on.
    pub fn run(
        &mut self,
        engine: &mut Engine,
        stop: &AtomicBool,
        mut tick: impl FnMut(&mut Engine, Duration),
    ) -> io::Result<()> {
        let start = Instant::now();
        let mut out: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        let mut fwd: Vec<(usize, usize)> = Vec::with_capacity(BATCH);
        while !stop.load(Ordering::Relaxed) {
            let now = start.elapsed();
            let n = match self.recv_batch(engine_wait(engine, now)) {
                Ok(n) => n,
                // The interface went down (or is being reconfigured): wait for it to come back
                // rather than ending DSR mode.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENETDOWN | libc::ENXIO)) => {
                    self.stats.rx_errors += 1;
                    std::thread::sleep(Duration::from_millis(100));
                    0
                }
                Err(e) => return Err(e),
            };
            let now = start.elapsed();
            // After the wait, before the batch: a change made while we slept (a blacklist
            // through penctl) applies to the very next frame.
            tick(engine, now);
            fwd.clear();
            for i in 0..n {
                if self.skipped(i) {
                    continue;
                }
                let r = self.rx_info[i];
                let meta = RxMeta {
                    csum_partial: r.csum_partial,
                };
                let Some(buf) = self.rx_bufs[i].get_mut(..r.len) else {
                    continue;
                };
                if let Some(tx) = engine.process_meta(now, buf, meta).transmit_len() {
                    fwd.push((i, tx));
                }
            }
            // The frames borrow self.rx_bufs; send through a second handle on the fd.
            Sender {
                fd: self.sock.raw_fd(),
                stats: &mut self.stats,
                fast: self.fast.as_mut(),
            }
            .send_pass(
                fwd.iter()
                    .filter_map(|&(i, len)| self.rx_bufs.get(i).and_then(|b| b.get(..len))),
                engine,
                now,
                &mut out,
            );
        }
        Ok(())
    }
}

/// How long a receive loop may sleep: until the engine's next timer, at most 100 ms (so `stop`
/// is seen in time).
fn engine_wait(engine: &Engine, now: Duration) -> Duration {
    engine
        .poll_timeout()
        .map_or(Duration::from_millis(100), |t| t.saturating_sub(now))
        .min(Duration::from_millis(100))
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

impl AfPacket {
    /// The daemon's receive loop: as [`AfPacket::run`], but frames arrive in a memory-mapped
    /// TPACKET_V2 ring (`PACKET_RX_RING`, one slot per frame) and are processed and sent
    /// (`sendmmsg`) in place. Under load a pass takes every frame that is ready without any
    /// receive system call; when the ring is empty it sleeps in `poll`, which wakes for the
    /// next single frame (no block timeout, unlike TPACKET_V3, so no added latency at low
    /// rates). Falls back to [`AfPacket::run`] when the ring cannot be set up.
    pub fn run_v2(
        &mut self,
        engine: &mut Engine,
        stop: &AtomicBool,
        tick: impl FnMut(&mut Engine, Duration),
    ) -> io::Result<()> {
        let geometry = Geometry {
            frame_size: v2_frame_size(mtu_of(&self.name)),
            frames: V2_FRAMES,
            per_block: V2_FRAMES_PER_BLOCK,
        };
        let ring = match RxRing::new(self.sock.raw_fd(), geometry) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{} on {}; receiving with recvmmsg instead", e, self.name);
                return self.run(engine, stop, tick);
            }
        };
        self.run_v2_on(ring, engine, stop, tick)
    }

    fn run_v2_on(
        &mut self,
        mut ring: RxRing,
        engine: &mut Engine,
        stop: &AtomicBool,
        mut tick: impl FnMut(&mut Engine, Duration),
    ) -> io::Result<()> {
        let fd = self.sock.raw_fd();
        self.stats.ring = true;
        let start = Instant::now();
        let mut out: Vec<Vec<u8>> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if !ring.ready() {
                let now = start.elapsed();
                let r = sockopt::poll_in(fd, engine_wait(engine, now))?;
                if r.error {
                    // An interface going down reports an error: take it (reading SO_ERROR
                    // clears it, so the next poll waits again) and carry on.
                    self.stats.rx_errors += 1;
                    let _ = sockopt::take_error(fd);
                }
                // Timers (ARP retries, held frames) may be due even without traffic.
                let now = start.elapsed();
                tick(engine, now);
                Sender {
                    fd,
                    stats: &mut self.stats,
                    fast: self.fast.as_mut(),
                }
                .send_pass(std::iter::empty(), engine, now, &mut out);
                continue;
            }
            let now = start.elapsed();
            // After the wait, before the batch: a change made while we slept (a blacklist
            // through penctl) applies to the very next frame.
            tick(engine, now);
            // The claimed slots go back to the kernel when `batch` is dropped, after sending.
            let mut batch = ring.take(BATCH);
            let mut forwarded: Vec<&[u8]> = Vec::with_capacity(batch.len());
            for slot in batch.iter_mut() {
                self.stats.rx_frames += 1;
                if slot.pkttype == libc::PACKET_OUTGOING {
                    self.stats.skipped_outgoing += 1;
                    continue;
                }
                if slot.status & libc::TP_STATUS_VLAN_VALID != 0 {
                    self.stats.skipped_vlan += 1;
                    continue;
                }
                let frame = match slot.frame {
                    Some(f) if f.len() >= slot.len => f,
                    _ => {
                        self.stats.truncated += 1;
                        continue;
                    }
                };
                let meta = RxMeta {
                    csum_partial: slot.status & libc::TP_STATUS_CSUMNOTREADY != 0,
                };
                if let Some(n) = engine.process_meta(now, &mut *frame, meta).transmit_len() {
                    let frame: &[u8] = frame;
                    if let Some(f) = frame.get(..n) {
                        forwarded.push(f);
                    }
                }
            }
            self.stats.rx_batches += 1;
            Sender {
                fd,
                stats: &mut self.stats,
                fast: self.fast.as_mut(),
            }
            .send_pass(forwarded.into_iter(), engine, now, &mut out);
            drop(batch);
        }
        Ok(())
    }
}

/// The sending half used inside [`AfPacket::run`] (the frames borrow the receive buffers).
struct Sender<'a> {
    fd: std::os::fd::RawFd,
    stats: &'a mut LinkStats,
    fast: Option<&'a mut crate::link::xdp::FastPath>,
}

impl Sender<'_> {
    /// Sends what one loop pass produced: the frames it forwarded (rewritten in place in the
    /// receive buffers or ring) and then the frames the engine queued (ARP answers and probes,
    /// tarpit SYN+ACKs, released held frames), `out` being the reusable list of the latter.
    fn send_pass<'f>(
        &mut self,
        forwarded: impl Iterator<Item = &'f [u8]>,
        engine: &mut Engine,
        now: Duration,
        out: &mut Vec<Vec<u8>>,
    ) {
        out.clear();
        while let Some(t) = engine.poll_transmit(now) {
            out.push(t.frame);
        }
        let mut frames: Vec<&[u8]> = forwarded.collect();
        let n_forwarded = frames.len();
        frames.extend(out.iter().map(Vec::as_slice));
        if !frames.is_empty() {
            self.send(&frames);
        }
        // After sending, so a client's next frame cannot overtake this one on the fast path.
        if let Some(fast) = self.fast.as_deref_mut() {
            fast.sync(engine.epoch());
            for f in &frames[..n_forwarded] {
                fast.learn(f);
            }
            fast.end_pass();
        }
    }

    fn send(&mut self, frames: &[&[u8]]) {
        let mut off = 0;
        while off < frames.len() {
            match packet::send(self.fd, &frames[off..]) {
                Ok(n) => {
                    off += n.max(1);
                    self.stats.tx_frames += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // One bad frame must not stall the rest of the batch.
                    self.stats.tx_errors += 1;
                    off += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Live test in two throw-away network namespaces joined by a veth pair (needs root).
    use super::*;
    use crate::engine::{BackendConfig, EngineConfig, frames};
    use std::net::Ipv4Addr;
    use std::process::Command;
    use std::sync::Arc;

    /// What the tests' peer sockets need besides the receive loops.
    impl AfPacket {
        /// Frame `i` of the last [`AfPacket::recv_batch`], `None` past its end or when the driver
        /// skips it (our own outgoing frame, VLAN-tagged).
        fn frame(&self, i: usize) -> Option<&[u8]> {
            if self.skipped(i) {
                return None;
            }
            self.rx_bufs.get(i)?.get(..self.rx_info.get(i)?.len)
        }

        /// Sends `frames` with as few `sendmmsg` calls as possible; returns how many were sent
        /// (a frame the kernel refuses, e.g. longer than the MTU, is counted in `tx_errors` and
        /// skipped).
        fn send_batch(&mut self, frames: &[&[u8]]) -> usize {
            let before = self.stats.tx_frames;
            Sender {
                fd: self.sock.raw_fd(),
                stats: &mut self.stats,
                fast: self.fast.as_mut(),
            }
            .send(frames);
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
                Driver::Mmsg => lb.run(&mut e, &stop2, |_, _| {}).unwrap(),
                Driver::RingV2 => lb.run_v2(&mut e, &stop2, |_, _| {}).unwrap(),
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
    /// receive ring ([`AfPacket::run_v2`]) instead of recvmmsg.
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
                lb.run_v2(&mut engine, &stop2, |_, _| {}).unwrap();
            } else {
                lb.run(&mut engine, &stop2, |_, _| {}).unwrap();
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
