//! The live driver: a raw `AF_PACKET` socket on the DSR interface, frames moved in batches with
//! `recvmmsg`/`sendmmsg` (reference §10: C Pen reads one frame per `recvfrom`).
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
//! and a `PACKET_MMAP` TX ring no faster than `sendmmsg` on veth, so this driver uses batched
//! raw sockets (pnet was not re-measured here). [`AfPacket::run_ring`] receives through a
//! TPACKET_V3 `PACKET_RX_RING` instead; on a loaded 2-core machine (load average 3-5, the
//! generator and a counting sink on the same cores) the engine behind the ring took 179-236 k
//! of 300 k offered frames against 110-123 k behind `recvmmsg` (tests `live_forwarding_rate*`).
//! A V3 ring hands a block over only when it is full or its retire timer (10 ms) fires, which
//! adds up to 10 ms of latency at low rates, where DSR matters most to the client. The daemon
//! therefore uses [`AfPacket::run_v2`]: a TPACKET_V2 ring with one slot per frame, where `poll`
//! wakes for a single frame (no added latency) and, under load, a pass takes every ready frame
//! without a receive system call; [`AfPacket::run`] (`recvmmsg`) is its fallback. In both,
//! frames longer than a ring slot or the receive buffer are counted as truncated.
//!
//! The socket is created in the calling thread's network namespace and keeps it: open it on a
//! thread that entered the namespace, then run it anywhere.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::engine::{Engine, MAX_FRAME, Mac, RxMeta};

/// Frames per `recvmmsg`/`sendmmsg`.
pub const BATCH: usize = 64;

const ETH_P_ALL: u16 = 0x0003;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_OUTGOING: u8 = 4;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;

/// `struct tpacket_auxdata` of `<linux/if_packet.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// Room for one `cmsghdr` carrying a `tpacket_auxdata`, 8-byte aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct CmsgBuf([u8; 64]);

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
    fd: OwnedFd,
    ifindex: i32,
    mac: Mac,
    name: String,
    rx_bufs: Vec<Box<[u8]>>,
    rx_lens: Vec<usize>,
    rx_meta: Vec<RxMeta>,
    rx_skip: Vec<bool>,
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
            .field("ifindex", &self.ifindex)
            .field("mac", &self.mac)
            .finish()
    }
}

fn os_err(what: &str, name: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what} on {name}: {e}"))
}

impl AfPacket {
    /// Opens a raw socket on `ifname` (needs CAP_NET_RAW) and reads the interface's MAC.
    pub fn open(ifname: &str) -> io::Result<AfPacket> {
        let cname = std::ffi::CString::new(ifname).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {ifname:?} contains a NUL byte"),
            )
        })?;
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "dsr_if {ifname}: no such interface in this network namespace ({})",
                    io::Error::last_os_error()
                ),
            ));
        }
        let proto = ETH_P_ALL.to_be();
        // SAFETY: plain socket(2) call; the result is checked and owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        if raw < 0 {
            return Err(os_err(
                "cannot open a raw AF_PACKET socket (needs root or CAP_NET_RAW)",
                ifname,
            ));
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: bind with a correctly sized sockaddr_ll.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(os_err("cannot bind the raw socket", ifname));
        }
        let one: libc::c_int = 1;
        for (opt, required) in [(PACKET_AUXDATA, true), (PACKET_IGNORE_OUTGOING, false)] {
            // SAFETY: setsockopt with a c_int value of the right size.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r < 0 && required {
                return Err(os_err("cannot enable PACKET_AUXDATA", ifname));
            }
        }
        // The bound address carries the interface's hardware address.
        // SAFETY: getsockname fills at most `len` bytes of `addr`.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        let r = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                (&mut addr as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if r < 0 || addr.sll_halen != 6 {
            return Err(io::Error::other(format!(
                "dsr_if {ifname}: cannot read a 6-byte Ethernet address of the interface; DSR needs an Ethernet interface"
            )));
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&addr.sll_addr[..6]);
        Ok(AfPacket {
            fd,
            ifindex: ifindex as i32,
            mac,
            name: ifname.to_string(),
            rx_bufs: (0..BATCH)
                .map(|_| vec![0u8; MAX_FRAME + 1].into_boxed_slice())
                .collect(),
            rx_lens: vec![0; BATCH],
            rx_meta: vec![RxMeta::default(); BATCH],
            rx_skip: vec![false; BATCH],
            rx_short: false,
            fast: None,
            stats: LinkStats::default(),
        })
    }

    /// The interface's MAC.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The interface name.
    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex as u32
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

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Frame `i` of the last [`AfPacket::recv_batch`], `None` past its end or when the driver
    /// skips it (our own outgoing frame, VLAN-tagged).
    pub fn frame(&self, i: usize) -> Option<&[u8]> {
        if *self.rx_skip.get(i)? {
            return None;
        }
        self.rx_bufs.get(i)?.get(..*self.rx_lens.get(i)?)
    }

    /// Receives up to [`BATCH`] frames, waiting up to `timeout` only when none is queued
    /// (under load the socket is drained without a `poll` per batch). Returns how many were
    /// received (0 on timeout); read them with [`AfPacket::frame`].
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
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        if r == 0 {
            return Ok(0);
        }
        self.try_recv()
    }

    /// One non-blocking `recvmmsg`.
    fn try_recv(&mut self) -> io::Result<usize> {
        // SAFETY (all zeroed values below): plain C structs for which all-zero is valid.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut names: [libc::sockaddr_ll; BATCH] = unsafe { zeroed() };
        let mut cmsgs = [CmsgBuf([0; 64]); BATCH];
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            let buf = &mut self.rx_bufs[i];
            iovs[i].iov_base = buf.as_mut_ptr().cast();
            iovs[i].iov_len = buf.len();
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_ll).cast();
            h.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = cmsgs[i].0.as_mut_ptr().cast();
            h.msg_controllen = cmsgs[i].0.len() as _;
        }
        // SAFETY: every mmsghdr points at buffers that live until the call returns.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.rx_short = n < BATCH as libc::c_int;
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        self.stats.rx_batches += 1;
        for i in 0..n {
            let m = &msgs[i];
            let len = m.msg_len as usize;
            let mut skip = names[i].sll_pkttype == PACKET_OUTGOING;
            if skip {
                self.stats.skipped_outgoing += 1;
            }
            let mut meta = RxMeta::default();
            // Walk the control messages for the auxdata.
            // SAFETY: CMSG_* walk the control buffer the kernel filled, bounded by
            // msg_controllen; the auxdata is read unaligned.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                        let aux: TpacketAuxdata =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        meta.csum_partial = aux.tp_status & TP_STATUS_CSUMNOTREADY != 0;
                        if aux.tp_status & TP_STATUS_VLAN_VALID != 0 && !skip {
                            skip = true;
                            self.stats.skipped_vlan += 1;
                        }
                    }
                    c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
                }
            }
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.stats.truncated += 1;
            }
            self.rx_lens[i] = len.min(MAX_FRAME + 1);
            self.rx_meta[i] = meta;
            self.rx_skip[i] = skip;
        }
        self.stats.rx_frames += n as u64;
        Ok(n)
    }

    /// Sends `frames` with as few `sendmmsg` calls as possible; returns how many were sent
    /// (a frame the kernel refuses, e.g. longer than the MTU, is counted in `tx_errors` and
    /// skipped).
    pub fn send_batch(&mut self, frames: &[&[u8]]) -> usize {
        let before = self.stats.tx_frames;
        Sender {
            fd: self.fd.as_raw_fd(),
            stats: &mut self.stats,
            fast: self.fast.as_mut(),
        }
        .send(frames);
        (self.stats.tx_frames - before) as usize
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
                if self.rx_skip[i] {
                    continue;
                }
                let len = self.rx_lens[i];
                let meta = self.rx_meta[i];
                let Some(buf) = self.rx_bufs[i].get_mut(..len) else {
                    continue;
                };
                if let Some(tx) = engine.process_meta(now, buf, meta).transmit_len() {
                    fwd.push((i, tx));
                }
            }
            // The frames borrow self.rx_bufs; send through a second handle on the fd.
            Sender {
                fd: self.fd.as_raw_fd(),
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

/// Receive-ring geometry of [`AfPacket::run_ring`]: 8 blocks of 1 MiB.
const RING_BLOCK_SIZE: u32 = 1 << 20;
const RING_BLOCKS: u32 = 8;
const TPACKET_V3: libc::c_int = 2;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_RX_RING: libc::c_int = 5;
const TP_STATUS_USER: u32 = 1;

/// `struct tpacket_req3` of `<linux/if_packet.h>`.
#[repr(C)]
struct TpacketReq3 {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
    tp_retire_blk_tov: u32,
    tp_sizeof_priv: u32,
    tp_feature_req_word: u32,
}

/// A `PACKET_RX_RING` mapping (TPACKET_V2 or V3); unmapped on drop.
struct Ring {
    base: *mut u8,
    len: usize,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl AfPacket {
    /// As [`AfPacket::run`], but receiving through a memory-mapped TPACKET_V3 ring
    /// (`PACKET_RX_RING`) instead of `recvmmsg`: frames are processed in place in the ring and
    /// sent with `sendmmsg`. Switches the socket to the ring for good. Kept for measurement
    /// (see `live_forwarding_rate_ring`): its block timeout adds up to 10 ms at low rates; the
    /// daemon uses [`AfPacket::run_v2`].
    pub fn run_ring(
        &mut self,
        engine: &mut Engine,
        stop: &AtomicBool,
        mut tick: impl FnMut(&mut Engine, Duration),
    ) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        let req = TpacketReq3 {
            tp_block_size: RING_BLOCK_SIZE,
            tp_block_nr: RING_BLOCKS,
            tp_frame_size: 2048,
            tp_frame_nr: RING_BLOCK_SIZE / 2048 * RING_BLOCKS,
            tp_retire_blk_tov: 10,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        let ring = self.map_rx_ring(TPACKET_V3, &req, (RING_BLOCK_SIZE * RING_BLOCKS) as usize)?;
        let start = Instant::now();
        let mut block = 0usize;
        let mut txs: Vec<(usize, usize)> = Vec::with_capacity(256);
        let mut out: Vec<Vec<u8>> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now = start.elapsed();
            let bsize = RING_BLOCK_SIZE as usize;
            // SAFETY: the block descriptor lies inside the mapping; block_status is shared
            // with the kernel and read volatile, then an acquire fence orders the reads of
            // the block's contents after it.
            let desc = unsafe { ring.base.add(block * bsize) };
            let status = unsafe { std::ptr::read_volatile(desc.add(8).cast::<u32>()) };
            if status & TP_STATUS_USER == 0 {
                let wait = engine_wait(engine, now);
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, wait.as_millis().clamp(1, 100) as libc::c_int) };
                Sender {
                    fd,
                    stats: &mut self.stats,
                    fast: self.fast.as_mut(),
                }
                .send_pass(std::iter::empty(), engine, start.elapsed(), &mut out);
                continue;
            }
            std::sync::atomic::fence(Ordering::Acquire);
            tick(engine, start.elapsed());
            // SAFETY: the block belongs to us until we hand it back below.
            let (num, first) = unsafe {
                (
                    std::ptr::read(desc.add(12).cast::<u32>()),
                    std::ptr::read(desc.add(16).cast::<u32>()),
                )
            };
            let now = start.elapsed();
            txs.clear();
            let mut off = first as usize;
            for _ in 0..num {
                if off + 48 > bsize {
                    break;
                }
                // SAFETY: header fields read inside the block (checked above).
                let (next, snap, st, mac) = unsafe {
                    let h = desc.add(off);
                    (
                        std::ptr::read_unaligned(h.cast::<u32>()),
                        std::ptr::read_unaligned(h.add(12).cast::<u32>()) as usize,
                        std::ptr::read_unaligned(h.add(20).cast::<u32>()),
                        std::ptr::read_unaligned(h.add(24).cast::<u16>()) as usize,
                    )
                };
                let at = off + mac;
                if at + snap <= bsize && st & TP_STATUS_VLAN_VALID == 0 {
                    // SAFETY: the frame lies inside our block and nothing else refers to it.
                    let frame = unsafe { std::slice::from_raw_parts_mut(desc.add(at), snap) };
                    let meta = RxMeta {
                        csum_partial: st & TP_STATUS_CSUMNOTREADY != 0,
                    };
                    if let Some(len) = engine.process_meta(now, frame, meta).transmit_len() {
                        txs.push((at, len));
                    }
                }
                self.stats.rx_frames += 1;
                if next == 0 {
                    break;
                }
                off += next as usize;
            }
            self.stats.rx_batches += 1;
            Sender {
                fd,
                stats: &mut self.stats,
                fast: self.fast.as_mut(),
            }
            .send_pass(
                // SAFETY: the processed frames stay inside our block; only shared views now.
                txs.iter()
                    .map(|&(at, len)| unsafe { std::slice::from_raw_parts(desc.add(at), len) }),
                engine,
                now,
                &mut out,
            );
            std::sync::atomic::fence(Ordering::Release);
            // SAFETY: hand the block back to the kernel (TP_STATUS_KERNEL).
            unsafe { std::ptr::write_volatile(desc.add(8).cast::<u32>(), 0) };
            block = (block + 1) % RING_BLOCKS as usize;
        }
        Ok(())
    }
}

/// `struct tpacket_req` of `<linux/if_packet.h>` (TPACKET_V2 ring geometry).
#[repr(C)]
struct TpacketReq {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
}

const TPACKET_V2: libc::c_int = 1;
/// Frames in a TPACKET_V2 ring block.
const V2_FRAMES_PER_BLOCK: u32 = 16;
/// Frames in the TPACKET_V2 ring (a burst of this many frames waits without loss).
const V2_FRAMES: u32 = 1024;
/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: where the `sockaddr_ll` of a frame starts.
const V2_HDR: usize = 32;
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
        let frame_size = v2_frame_size(mtu_of(&self.name));
        let req = TpacketReq {
            tp_block_size: frame_size * V2_FRAMES_PER_BLOCK,
            tp_block_nr: V2_FRAMES / V2_FRAMES_PER_BLOCK,
            tp_frame_size: frame_size,
            tp_frame_nr: V2_FRAMES,
        };
        let ring = match self.map_rx_ring(TPACKET_V2, &req, (frame_size * V2_FRAMES) as usize) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{e}; receiving with recvmmsg instead");
                return self.run(engine, stop, tick);
            }
        };
        self.run_v2_on(&ring, frame_size as usize, engine, stop, tick)
    }

    /// Switches the socket to TPACKET `version` and maps the receive ring `req` (a
    /// `tpacket_req` or `tpacket_req3`) describes, `len` bytes in all.
    fn map_rx_ring<R>(&self, version: libc::c_int, req: &R, len: usize) -> io::Result<Ring> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: setsockopt with correctly sized values on our socket (`req` is one of the
        // kernel's ring request structs, passed with its own size); mmap of exactly the ring
        // the kernel has just set up, checked for failure.
        unsafe {
            if libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_VERSION,
                (&version as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) < 0
            {
                let what = if version == TPACKET_V2 {
                    "cannot select TPACKET_V2"
                } else {
                    "cannot select TPACKET_V3"
                };
                return Err(os_err(what, &self.name));
            }
            if libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_RX_RING,
                (req as *const R).cast(),
                size_of::<R>() as libc::socklen_t,
            ) < 0
            {
                return Err(os_err("cannot set up PACKET_RX_RING", &self.name));
            }
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(os_err("cannot map the receive ring", &self.name));
            }
            Ok(Ring {
                base: base.cast(),
                len,
            })
        }
    }

    fn run_v2_on(
        &mut self,
        ring: &Ring,
        frame_size: usize,
        engine: &mut Engine,
        stop: &AtomicBool,
        mut tick: impl FnMut(&mut Engine, Duration),
    ) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        self.stats.ring = true;
        let slots = V2_FRAMES as usize;
        let start = Instant::now();
        let mut next = 0usize;
        // (slot, offset of the frame in the slot, length to send) of this pass.
        let mut txs: Vec<(usize, usize, usize)> = Vec::with_capacity(BATCH);
        let mut taken: Vec<usize> = Vec::with_capacity(BATCH);
        let mut out: Vec<Vec<u8>> = Vec::new();
        let slot_ptr = |i: usize| -> *mut u8 {
            // SAFETY: i < slots, so the slot lies inside the mapping.
            unsafe { ring.base.add(i * frame_size) }
        };
        // SAFETY: tp_status is shared with the kernel: read volatile.
        let ready = |i: usize| unsafe {
            std::ptr::read_volatile(slot_ptr(i).cast::<u32>()) & TP_STATUS_USER != 0
        };
        while !stop.load(Ordering::Relaxed) {
            if !ready(next) {
                let now = start.elapsed();
                let wait = engine_wait(engine, now);
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let r = unsafe {
                    libc::poll(&mut pfd, 1, wait.as_millis().clamp(1, 100) as libc::c_int)
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                if pfd.revents & libc::POLLERR != 0 {
                    // An interface going down reports an error: take it (reading SO_ERROR
                    // clears it, so the next poll waits again) and carry on.
                    self.stats.rx_errors += 1;
                    let mut e: libc::c_int = 0;
                    let mut l = size_of::<libc::c_int>() as libc::socklen_t;
                    // SAFETY: getsockopt(SO_ERROR) into a c_int of the stated size.
                    unsafe {
                        libc::getsockopt(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_ERROR,
                            (&mut e as *mut libc::c_int).cast(),
                            &mut l,
                        )
                    };
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
            std::sync::atomic::fence(Ordering::Acquire);
            let now = start.elapsed();
            // After the wait, before the batch: a change made while we slept (a blacklist
            // through penctl) applies to the very next frame.
            tick(engine, now);
            txs.clear();
            taken.clear();
            while taken.len() < BATCH && ready(next) {
                let slot = next;
                taken.push(slot);
                next = (next + 1) % slots;
                let p = slot_ptr(slot);
                // SAFETY: the slot is ours (TP_STATUS_USER) until handed back; header fields
                // and the sockaddr_ll after it are inside the slot.
                let (st, len, snap, mac, pkttype) = unsafe {
                    (
                        std::ptr::read_volatile(p.cast::<u32>()),
                        std::ptr::read_unaligned(p.add(4).cast::<u32>()) as usize,
                        std::ptr::read_unaligned(p.add(8).cast::<u32>()) as usize,
                        std::ptr::read_unaligned(p.add(12).cast::<u16>()) as usize,
                        *p.add(V2_HDR + 10),
                    )
                };
                self.stats.rx_frames += 1;
                if pkttype == PACKET_OUTGOING {
                    self.stats.skipped_outgoing += 1;
                    continue;
                }
                if st & TP_STATUS_VLAN_VALID != 0 {
                    self.stats.skipped_vlan += 1;
                    continue;
                }
                if snap < len || mac + snap > frame_size {
                    self.stats.truncated += 1;
                    continue;
                }
                // SAFETY: the frame lies inside our slot (checked) and nothing else refers to it.
                let frame = unsafe { std::slice::from_raw_parts_mut(p.add(mac), snap) };
                let meta = RxMeta {
                    csum_partial: st & TP_STATUS_CSUMNOTREADY != 0,
                };
                if let Some(n) = engine.process_meta(now, frame, meta).transmit_len() {
                    txs.push((slot, mac, n));
                }
            }
            self.stats.rx_batches += 1;
            Sender {
                fd,
                stats: &mut self.stats,
                fast: self.fast.as_mut(),
            }
            .send_pass(
                // SAFETY: the processed frames stay inside slots we still own; shared views.
                txs.iter().map(|&(slot, at, n)| unsafe {
                    std::slice::from_raw_parts(slot_ptr(slot).add(at), n)
                }),
                engine,
                now,
                &mut out,
            );
            std::sync::atomic::fence(Ordering::Release);
            for &slot in &taken {
                // SAFETY: hand the slot back to the kernel (TP_STATUS_KERNEL).
                unsafe { std::ptr::write_volatile(slot_ptr(slot).cast::<u32>(), 0) };
            }
        }
        Ok(())
    }
}

/// The sending half used inside [`AfPacket::run`] (the frames borrow the receive buffers).
struct Sender<'a> {
    fd: libc::c_int,
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
        for chunk in frames.chunks(BATCH) {
            // SAFETY: plain C structs for which all-zero is valid.
            let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            for (i, f) in chunk.iter().enumerate() {
                iovs[i].iov_base = f.as_ptr() as *mut libc::c_void;
                iovs[i].iov_len = f.len();
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            let mut off = 0;
            while off < chunk.len() {
                // SAFETY: msgs[off..] point at frames that outlive the call.
                let n = unsafe {
                    libc::sendmmsg(
                        self.fd,
                        msgs[off..].as_mut_ptr(),
                        (chunk.len() - off) as libc::c_uint,
                        0,
                    )
                };
                if n < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // One bad frame must not stall the rest of the batch.
                    self.stats.tx_errors += 1;
                    off += 1;
                    continue;
                }
                off += (n as usize).max(1);
                self.stats.tx_frames += n as u64;
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
    use std::os::fd::AsRawFd;
    use std::process::Command;
    use std::sync::Arc;

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
            // SAFETY: setns on this fresh thread only, with a valid namespace fd.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
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

    #[test]
    fn live_ring_driver_answers_arp_learns_the_backend_and_forwards() {
        live_driver_round_trip(Driver::RingV3);
    }

    /// The receive loops of the driver.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Driver {
        Mmsg,
        RingV3,
        RingV2,
    }

    fn live_driver_round_trip(driver: Driver) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "this test needs root (network namespaces and raw sockets)"
            );
            eprintln!("skipped: needs root");
            return;
        }
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
                Driver::RingV3 => lb.run_ring(&mut e, &stop2, |_, _| {}).unwrap(),
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
        if driver == Driver::RingV3 {
            // (The V3 ring variant is a measurement tool; interface flaps are not handled there.)
            stop.store(true, Ordering::Relaxed);
            let (counters, _) = runner.join().unwrap();
            assert_eq!(counters.forwarded + counters.held, 1, "{counters}");
            return;
        }
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

    /// The measurement behind both `live_forwarding_rate*` tests; `ring` uses the TPACKET_V3
    /// receive ring instead of recvmmsg.
    fn measure_forwarding(name: &str, ring: bool) {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
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
                lb.run_ring(&mut engine, &stop2, |_, _| {}).unwrap();
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
