//! The TPACKET_V2 receive ring (`PACKET_RX_RING`, one frame per slot) of an `AF_PACKET`
//! socket, with libc's `tpacket_req`/`tpacket2_hdr`, and the one safe slot iterator that owns
//! the pointer arithmetic.
//!
//! Slots are shared with the kernel: a slot whose `tp_status` has `TP_STATUS_USER` set belongs
//! to us until we write `TP_STATUS_KERNEL` back. [`RxRing::take`] claims the ready slots in
//! ring order as an [`RxBatch`], whose slot iterator ([`RxBatch::iter_mut`]) hands out each
//! slot's frame once, writable, and which gives every slot back to the kernel when dropped.
//!
//! The slot layout is checked before any byte is handed out: a frame whose header points
//! outside its slot is reported ([`RxSlot::frame`] is `None`), never read.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};

/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: where the `sockaddr_ll` of a slot starts.
const HDR: usize = (size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT - 1)
    & !(libc::TPACKET_ALIGNMENT - 1);
/// Offset of `sll_pkttype` in the `sockaddr_ll` after the header.
const PKTTYPE: usize = HDR + std::mem::offset_of!(libc::sockaddr_ll, sll_pkttype);

/// Geometry of a ring: `frames` slots of `frame_size` bytes, `per_block` slots per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) frame_size: u32,
    pub(crate) frames: u32,
    pub(crate) per_block: u32,
}

impl Geometry {
    /// Checks what the kernel also checks (so a bad request fails with a message naming it):
    /// the slot holds at least the headers, is 16-byte aligned, and the slot count is a
    /// positive multiple of the slots per block.
    fn check(&self) -> io::Result<usize> {
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("receive ring geometry {self:?}: {why}"),
            )
        };
        let fs = self.frame_size as usize;
        if fs < libc::TPACKET2_HDRLEN || !fs.is_multiple_of(libc::TPACKET_ALIGNMENT) {
            return Err(bad(
                "a slot must hold the headers and be a multiple of 16 bytes",
            ));
        }
        if self.per_block == 0 || self.frames == 0 || !self.frames.is_multiple_of(self.per_block) {
            return Err(bad("frames must be a positive multiple of per_block"));
        }
        fs.checked_mul(self.frames as usize)
            .ok_or_else(|| bad("the ring does not fit in memory"))
    }
}

/// A TPACKET_V2 receive ring mapped from a packet socket; unmapped on drop. The socket must
/// outlive the ring (the mapping itself stays valid if it does not; only no frames arrive).
#[derive(Debug)]
pub(crate) struct RxRing {
    base: NonNull<u8>,
    len: usize,
    frame_size: usize,
    slots: usize,
    /// The next slot the kernel fills.
    next: usize,
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned, and no slice into the mapping
        // outlives `self` (batches borrow the ring).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl RxRing {
    /// Switches packet socket `fd` to TPACKET_V2 and sets up and maps a receive ring of
    /// `geometry`. Errors say which step failed.
    pub(crate) fn new(fd: RawFd, geometry: Geometry) -> io::Result<RxRing> {
        let len = geometry.check()?;
        let ctx = |what: &str| {
            let e = io::Error::last_os_error();
            io::Error::new(e.kind(), format!("{what}: {e}"))
        };
        super::sockopt::set_int(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V2 as libc::c_int,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("cannot select TPACKET_V2: {e}")))?;
        let req = libc::tpacket_req {
            tp_block_size: geometry.frame_size * geometry.per_block,
            tp_block_nr: geometry.frames / geometry.per_block,
            tp_frame_size: geometry.frame_size,
            tp_frame_nr: geometry.frames,
        };
        // SAFETY: setsockopt reads a tpacket_req of exactly the size we pass.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                (&req as *const libc::tpacket_req).cast(),
                size_of::<libc::tpacket_req>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(ctx("cannot set up PACKET_RX_RING"));
        }
        // SAFETY: maps exactly the ring the kernel has just set up on `fd` (len = frames ×
        // frame_size, blocks being whole numbers of slots); the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(ctx("cannot map the receive ring"));
        }
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null receive ring"))?;
        Ok(RxRing {
            base,
            len,
            frame_size: geometry.frame_size as usize,
            slots: geometry.frames as usize,
            next: 0,
        })
    }

    /// Pointer to the start of slot `i` (`i < slots`).
    fn slot_ptr(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.slots);
        // SAFETY: i < slots, so i * frame_size < len: the offset stays inside the mapping.
        unsafe { self.base.as_ptr().add(i * self.frame_size) }
    }

    /// `tp_status` of slot `i`, read volatile (the kernel writes it).
    fn status(&self, i: usize) -> u32 {
        // SAFETY: the slot starts with a tpacket2_hdr whose first field, tp_status, is a u32
        // at a 16-byte aligned address inside the mapping.
        unsafe { std::ptr::read_volatile(self.slot_ptr(i).cast::<u32>()) }
    }

    /// Whether the next slot holds a frame for us.
    pub(crate) fn ready(&self) -> bool {
        self.status(self.next) & libc::TP_STATUS_USER != 0
    }

    /// Claims up to `max` ready slots in ring order; they go back to the kernel when the
    /// batch is dropped.
    pub(crate) fn take(&mut self, max: usize) -> RxBatch<'_> {
        let first = self.next;
        let mut count = 0;
        while count < max.min(self.slots) && self.ready() {
            count += 1;
            self.next = (self.next + 1) % self.slots;
        }
        // Order the reads of the slots' contents after their status.
        fence(Ordering::Acquire);
        RxBatch {
            ring: self,
            first,
            count,
        }
    }
}

/// Ready slots claimed from an [`RxRing`], in ring order; given back to the kernel on drop.
#[derive(Debug)]
pub(crate) struct RxBatch<'r> {
    ring: &'r mut RxRing,
    first: usize,
    count: usize,
}

/// What a slot's `tpacket2_hdr` and `sockaddr_ll` say.
struct SlotHeader {
    status: u32,
    len: usize,
    pkttype: u8,
    /// Offset and length of the captured bytes, when they lie inside the slot.
    range: Option<(usize, usize)>,
}

/// One received frame in its slot.
#[derive(Debug)]
pub(crate) struct RxSlot<'b> {
    /// `tp_status` (`TP_STATUS_CSUMNOTREADY`, `TP_STATUS_VLAN_VALID`, ...).
    pub(crate) status: u32,
    /// `tp_len`: the frame's length on the wire.
    pub(crate) len: usize,
    /// `sll_pkttype` (`PACKET_OUTGOING` for our own frames).
    pub(crate) pkttype: u8,
    /// The captured bytes (`tp_snaplen` from `tp_mac`), `None` when the header places them
    /// outside the slot.
    pub(crate) frame: Option<&'b mut [u8]>,
}

impl RxBatch<'_> {
    /// How many slots the batch holds.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The batch's slots in ring order, each frame writable. The frames stay borrowed from
    /// the batch, so they can be read (sent) after the loop and before the batch is dropped.
    pub(crate) fn iter_mut(&mut self) -> Slots<'_> {
        Slots {
            ring: self.ring,
            first: self.first,
            count: self.count,
            k: 0,
        }
    }
}

/// The slot iterator of an [`RxBatch`] ([`RxBatch::iter_mut`]): yields every claimed slot
/// once; it owns all the pointer arithmetic on the ring.
#[derive(Debug)]
pub(crate) struct Slots<'b> {
    ring: &'b RxRing,
    first: usize,
    count: usize,
    k: usize,
}

impl Slots<'_> {
    /// The header of the slot at ring index `i`.
    fn header(&self, i: usize) -> SlotHeader {
        let p = self.ring.slot_ptr(i);
        // SAFETY: slot i is claimed by the batch (TP_STATUS_USER, not yet given back); a
        // tpacket2_hdr and the sockaddr_ll after it lie inside it (Geometry::check:
        // frame_size >= TPACKET2_HDRLEN), at a 16-byte aligned address.
        let (h, pkttype) = unsafe {
            (
                std::ptr::read(p.cast::<libc::tpacket2_hdr>()),
                std::ptr::read(p.add(PKTTYPE)),
            )
        };
        let (mac, snap) = (usize::from(h.tp_mac), h.tp_snaplen as usize);
        let range = mac
            .checked_add(snap)
            .filter(|&end| mac >= libc::TPACKET2_HDRLEN && end <= self.ring.frame_size)
            .map(|_| (mac, snap));
        SlotHeader {
            status: h.tp_status,
            len: h.tp_len as usize,
            pkttype,
            range,
        }
    }
}

impl<'b> Iterator for Slots<'b> {
    type Item = RxSlot<'b>;

    fn next(&mut self) -> Option<RxSlot<'b>> {
        if self.k >= self.count {
            return None;
        }
        let i = (self.first + self.k) % self.ring.slots;
        self.k += 1;
        let SlotHeader {
            status,
            len,
            pkttype,
            range,
        } = self.header(i);
        let p = self.ring.slot_ptr(i);
        let frame = range.map(|(at, n)| {
            // SAFETY: the range lies inside slot i (checked in `header`), which the batch
            // owns; each slot is yielded once, so the slices never overlap, and they live no
            // longer than the batch's mutable borrow ('b), so the batch cannot give the slot
            // back while one exists.
            unsafe { std::slice::from_raw_parts_mut(p.add(at), n) }
        });
        Some(RxSlot {
            status,
            len,
            pkttype,
            frame,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.k;
        (left, Some(left))
    }
}

impl Drop for RxBatch<'_> {
    fn drop(&mut self) {
        // Our reads and writes of the slots happen before the kernel may reuse them.
        fence(Ordering::Release);
        for k in 0..self.count {
            let i = (self.first + k) % self.ring.slots;
            // SAFETY: tp_status of a slot we own, a u32 at the slot's aligned start; writing
            // TP_STATUS_KERNEL gives the slot back.
            unsafe {
                std::ptr::write_volatile(
                    self.ring.slot_ptr(i).cast::<u32>(),
                    libc::TP_STATUS_KERNEL,
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_the_kernel() {
        assert_eq!(HDR, 32);
        assert_eq!(PKTTYPE, 42);
        assert_eq!(libc::TPACKET2_HDRLEN, 52);
    }

    #[test]
    fn bad_geometry_is_refused_with_its_numbers() {
        let g = Geometry {
            frame_size: 40,
            frames: 16,
            per_block: 16,
        };
        let e = RxRing::new(-1, g).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("frame_size: 40"), "{e}");
        let g = Geometry {
            frame_size: 2048,
            frames: 10,
            per_block: 16,
        };
        assert!(
            RxRing::new(-1, g)
                .unwrap_err()
                .to_string()
                .contains("per_block")
        );
        let g = Geometry {
            frame_size: 2048,
            frames: 16,
            per_block: 16,
        };
        let e = RxRing::new(-1, g).unwrap_err();
        assert!(e.to_string().contains("TPACKET_V2"), "{e}");
    }

    /// A live ring on the loopback of a fresh namespace: frames sent on `lo` come out of the
    /// slot iterator in order, with their headers, writable in place, and the slots go back to
    /// the kernel (eight rounds of six frames pass through sixteen slots).
    #[test]
    fn loopback_frames_come_out_of_the_slot_iterator_and_slots_are_reused() {
        crate::sys::in_fresh_netns("ring", ring_round_trips);
    }

    fn ring_round_trips() {
        let rx = super::super::packet::PacketSocket::open("lo").unwrap();
        let tx = super::super::packet::PacketSocket::open("lo").unwrap();
        let g = Geometry {
            frame_size: 2048,
            frames: 16,
            per_block: 4,
        };
        let mut ring = RxRing::new(rx.raw_fd(), g).unwrap();
        for round in 0u8..8 {
            let frames: Vec<Vec<u8>> = (0u8..6)
                .map(|i| {
                    let mut f = vec![0u8; 60];
                    f[12..14].copy_from_slice(&[0x88, 0xb5]);
                    f[14..20].copy_from_slice(b"penrng");
                    f[20] = round;
                    f[21] = i;
                    f
                })
                .collect();
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            assert_eq!(super::super::packet::send(tx.raw_fd(), &refs).unwrap(), 6);
            let mut seen = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while seen.len() < 6 && std::time::Instant::now() < deadline {
                if !ring.ready() {
                    let _ = super::super::sockopt::poll_in(
                        rx.raw_fd(),
                        std::time::Duration::from_millis(20),
                    );
                    continue;
                }
                let mut batch = ring.take(4);
                assert!(batch.len() >= 1 && batch.len() <= 4);
                let n = batch.len();
                let mut mine: Vec<&[u8]> = Vec::new();
                let mut slots = batch.iter_mut();
                assert_eq!(slots.size_hint(), (n, Some(n)));
                for s in slots.by_ref() {
                    let f = s.frame.expect("the frame lies inside its slot");
                    if f.get(14..20) == Some(b"penrng") && f[20] == round {
                        assert_eq!(s.len, 60);
                        seen.push(f[21]);
                        f[22] = 0xee; // writable in place
                        let f: &[u8] = f;
                        mine.push(f);
                    }
                }
                assert!(slots.next().is_none());
                // Still readable after the loop, before the batch gives the slots back.
                assert!(mine.iter().all(|f| f[22] == 0xee));
            }
            assert_eq!(seen, vec![0, 1, 2, 3, 4, 5], "round {round}");
        }
    }
}
