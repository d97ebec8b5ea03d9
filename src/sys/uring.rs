//! io_uring for the completion-based TCP data path (`proxy::uring`), behind a safe [`Ring`].
//!
//! The `io-uring` crate's `push` (and the buffer-ring registration) are `unsafe` because the
//! kernel keeps pointers from a submission until its completion. [`Ring`] owns every piece of
//! memory such a pointer can name, so the callers pass only descriptors, buffer ids and values:
//!
//! - the receive buffers live in one provided-buffer ring ([`BUF_GROUP`]) that `Ring` allocated
//!   and never frees while the kernel may use it (the memory is leaked when the ring is dropped,
//!   since the kernel tears a ring down asynchronously). A buffer is either in the kernel's ring
//!   or handed out by a completion; only a handed-out buffer can be read ([`Ring::buf`]) or
//!   sent ([`Ring::send_buf`]), and only one that no send is using can be given back
//!   ([`Ring::recycle`]);
//! - socket addresses (connect) and the address buffers of single-shot accepts are boxed and
//!   kept, by the user data of their operation, until that
//!   operation's completion has been reaped (an accept's address is copied into its
//!   [`Completion`], so the loop needs no `getpeername`);
//! - descriptors given to [`Ring::close`] are owned by the ring from then on (closed by the
//!   kernel with the next submission, or at once if they cannot be queued).
//!
//! A descriptor given to an operation is a plain number: closing it while an operation is in
//! flight is a logic error of the caller (the operation keeps its file alive), never memory
//! unsafety.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::squeue::Entry;
use io_uring::types::{BufRingEntry, CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};
use socket2::SockAddr;

/// The buffer group id of the receive buffers.
pub(crate) const BUF_GROUP: u16 = 0;

/// One completion, copied out of the completion queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completion {
    pub user_data: u64,
    /// The operation's result: a count or descriptor (>= 0), or `-errno`.
    pub result: i32,
    /// The receive buffer the kernel picked (a handed-out buffer: read it with [`Ring::buf`],
    /// give it back with [`Ring::recycle`]).
    pub buf: Option<u16>,
    /// A multishot operation stays armed (`IORING_CQE_F_MORE`).
    pub more: bool,
    /// The peer of a successful [`Ring::accept`] (`None` for other operations, and for a peer
    /// that is not an IP address).
    pub peer: Option<SocketAddr>,
}

/// The address buffer of a single-shot accept, written by the kernel.
struct AcceptAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl AcceptAddr {
    fn new() -> Box<AcceptAddr> {
        Box::new(AcceptAddr {
            // SAFETY: all zeros is a valid `sockaddr_storage` (plain integers and arrays).
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        })
    }

    /// The IP address the kernel wrote (after the accept completed successfully).
    fn peer(&self) -> Option<SocketAddr> {
        let mut st = socket2::SockAddrStorage::zeroed();
        // SAFETY: `sockaddr_storage` is one of this platform's `sockaddr_*` types, as
        // `view_as` requires; the copy is a plain value copy.
        unsafe { *st.view_as::<libc::sockaddr_storage>() = self.storage };
        let len = self
            .len
            .min(std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t);
        // SAFETY: the storage holds what the kernel's accept wrote, `len` bytes of it (capped
        // to the storage's size), which is a valid socket address of the listener's family.
        let sa = unsafe { SockAddr::new(st, len) };
        sa.as_socket()
    }
}

/// Hashes the user data keys of [`Ring`]'s kept memory: one multiply and fold instead of
/// SipHash (a send inserts and removes one entry; the keys are pen's own tokens, not input).
#[derive(Default, Clone, Copy)]
struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        let h = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

type KeepMap = HashMap<u64, Keep, BuildHasherDefault<TokenHasher>>;

/// What the kernel may still read while an operation is in flight.
enum Keep {
    Addr(#[allow(dead_code)] Box<SockAddr>),
    /// The address buffer of a single-shot accept.
    Accept(Box<AcceptAddr>),
    /// A send from this receive buffer.
    Send(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BufState {
    InRing,
    Out,
    Sending,
}

/// The provided-buffer ring and its buffers.
struct Bufs {
    /// `entries` ring entries, page aligned, registered with the kernel.
    ring: *mut BufRingEntry,
    /// `entries * size` bytes of buffers.
    mem: *mut u8,
    entries: u16,
    size: u32,
    tail: u16,
    state: Vec<BufState>,
}

// SAFETY: the pointers name heap memory owned by this value alone (no aliasing `Rc` or thread
// locals); the kernel side is synchronised through the ring's tail (Release store).
unsafe impl Send for Bufs {}

impl Bufs {
    fn layout_ring(entries: u16) -> Option<std::alloc::Layout> {
        std::alloc::Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .ok()
    }

    fn new(entries: u16, size: u32) -> io::Result<Bufs> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, "bad buffer ring size");
        if !entries.is_power_of_two() || size == 0 {
            return Err(bad());
        }
        let ring_layout = Bufs::layout_ring(entries).ok_or_else(bad)?;
        let mem_len = usize::from(entries)
            .checked_mul(usize::try_from(size).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        let mem_layout = std::alloc::Layout::from_size_align(mem_len, 64).map_err(|_| bad())?;
        // SAFETY: both layouts have a non-zero size (entries >= 1, size >= 1); a null result
        // is checked below.
        let (ring, mem) = unsafe {
            (
                std::alloc::alloc_zeroed(ring_layout).cast::<BufRingEntry>(),
                std::alloc::alloc(mem_layout),
            )
        };
        if ring.is_null() || mem.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        Ok(Bufs {
            ring,
            mem,
            entries,
            size,
            tail: 0,
            state: vec![BufState::Out; usize::from(entries)],
        })
    }

    /// Puts buffer `bid` into the kernel's ring (published at once).
    fn give(&mut self, bid: u16) {
        let Some(st) = self.state.get_mut(usize::from(bid)) else {
            return;
        };
        if *st != BufState::Out {
            return;
        }
        *st = BufState::InRing;
        let slot = usize::from(self.tail & (self.entries - 1));
        let addr = self.mem as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `slot < entries`, inside the ring allocation; the kernel only reads entries
        // between its head and the published tail, and this one is past the tail until the
        // store below.
        let e = unsafe { &mut *self.ring.add(slot) };
        e.set_addr(addr);
        e.set_len(self.size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: `ring` is the page-aligned, initialised first entry of the registered ring,
        // as `BufRingEntry::tail` requires; the tail is a u16 the kernel reads atomically.
        let tail = unsafe { &*BufRingEntry::tail(self.ring).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    fn slice(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(self.size as usize);
        if self.state.get(usize::from(bid)) == Some(&BufState::InRing) || bid >= self.entries {
            return &[];
        }
        // SAFETY: bid < entries, so the range lies inside `mem`; the buffer is not in the
        // kernel's ring (checked above), so the kernel does not write it meanwhile.
        unsafe {
            std::slice::from_raw_parts(self.mem.add(usize::from(bid) * self.size as usize), len)
        }
    }
}

/// An io_uring instance with its receive buffers (see the module docs).
pub(crate) struct Ring {
    ring: IoUring,
    bufs: Bufs,
    keep: KeepMap,
    /// Made disabled, waiting for [`Ring::enable`] on the loop's thread.
    disabled: bool,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The kernel may still be writing buffers while it tears the ring down: never free
        // them (the ring lives as long as its event loop, normally until pen exits).
        let leaked = std::mem::take(&mut self.keep);
        std::mem::forget(leaked);
    }
}

/// Takes ownership of the descriptor an accept completion returned (`result` >= 0), so that it
/// is closed when dropped. Only for that use: the number must be a descriptor nothing else owns.
pub(crate) fn adopt_accepted(result: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if result < 0 {
        return None;
    }
    // SAFETY: a successful accept completion hands the loop a new descriptor that nothing
    // else in the process refers to; wrapping it once makes its owner close it once.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(result) })
}

/// Whether io_uring can run pen's TCP data path here: a ring can be created (not disabled by
/// `kernel.io_uring_disabled` or a seccomp filter), the provided-buffer ring can be registered
/// (5.19) and every opcode the loop uses is supported. `Err` says why not, naming the cause.
pub(crate) fn probe() -> Result<(), String> {
    let ring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::EPERM) => {
                    "not permitted (kernel.io_uring_disabled or a seccomp profile)".to_string()
                }
                Some(libc::ENOSYS) => "the kernel has no io_uring (older than 5.1?)".to_string(),
                _ => e.to_string(),
            };
            return Err(format!("io_uring_setup failed: {why}"));
        }
    };
    let mut p = Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("io_uring probe failed (kernel older than 5.6?): {e}"))?;
    let ops = [
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Close::CODE, "CLOSE"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::Connect::CODE, "CONNECT"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::AsyncCancel2::CODE, "ASYNC_CANCEL"),
    ];
    for (code, name) in ops {
        if !p.is_supported(code) {
            return Err(format!("the kernel's io_uring lacks the {name} opcode"));
        }
    }
    drop(ring);
    Ring::new(8, 2, 64).map(drop).map_err(|e| {
        format!("cannot register a provided-buffer ring (needs Linux 5.19 or later): {e}")
    })
}

impl Ring {
    /// A ring of `sq_entries` submission entries and `buffers` receive buffers (a power of two)
    /// of `buf_size` bytes each, all given to the kernel.
    pub(crate) fn new(sq_entries: u32, buffers: u16, buf_size: u32) -> io::Result<Ring> {
        Ring::build(sq_entries, buffers, buf_size, false)
    }

    /// As [`Ring::new`], for a loop that one thread runs: the kernel runs completion work only
    /// when that thread enters the ring to wait (`IORING_SETUP_SINGLE_ISSUER` +
    /// `DEFER_TASKRUN`, Linux 6.1), instead of interrupting it for each completion. The ring
    /// starts disabled: the loop's thread calls [`Ring::enable`] first (it becomes the only
    /// thread allowed to submit). Falls back to a plain ring where the flags are unknown.
    pub(crate) fn new_single_thread(
        sq_entries: u32,
        buffers: u16,
        buf_size: u32,
    ) -> io::Result<Ring> {
        match Ring::build(sq_entries, buffers, buf_size, true) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                Ring::build(sq_entries, buffers, buf_size, false)
            }
            r => r,
        }
    }

    fn build(sq_entries: u32, buffers: u16, buf_size: u32, single: bool) -> io::Result<Ring> {
        let mut b = IoUring::builder();
        b.setup_cqsize(sq_entries.saturating_mul(4));
        if single {
            b.setup_r_disabled()
                .setup_single_issuer()
                .setup_defer_taskrun();
        }
        let ring = b.build(sq_entries)?;
        let mut bufs = Bufs::new(buffers, buf_size)?;
        // SAFETY: the ring memory is page aligned, `buffers` entries long, and never freed
        // (see `Drop for Ring`), so it stays valid as long as the kernel's ring does.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring as u64,
                buffers,
                BUF_GROUP,
                0,
            )?;
        }
        for bid in 0..buffers {
            bufs.give(bid);
        }
        Ok(Ring {
            ring,
            bufs,
            keep: KeepMap::default(),
            disabled: single,
        })
    }

    /// Enables a ring made by [`Ring::new_single_thread`] for the calling thread (a no-op for
    /// other rings and after the first call).
    pub(crate) fn enable(&mut self) -> io::Result<()> {
        if self.disabled {
            self.ring.submitter().register_enable_rings()?;
            self.disabled = false;
        }
        Ok(())
    }

    fn push(&mut self, e: &Entry) -> io::Result<()> {
        loop {
            // SAFETY: every pointer an entry carries names memory in `self.bufs` (never freed)
            // or in `self.keep` (kept until the operation's completion is reaped); see the
            // builders below.
            let pushed = unsafe { self.ring.submission().push(e) };
            if pushed.is_ok() {
                return Ok(());
            }
            // Full: hand what is queued to the kernel and retry.
            self.ring.submit()?;
        }
    }

    fn keep(&mut self, user_data: u64, k: Keep) {
        if let Some(old) = self.keep.insert(user_data, k) {
            // Two operations in flight with one user data is the caller's bug; never free
            // what the first may still use.
            std::mem::forget(old);
        }
    }

    /// One accept on a listening socket (the new descriptor closes on exec); its completion
    /// carries the peer's address ([`Completion::peer`]), so no `getpeername` is needed.
    pub(crate) fn accept(&mut self, listener: RawFd, user_data: u64) -> io::Result<()> {
        let mut a = AcceptAddr::new();
        let e = opcode::Accept::new(
            Fd(listener),
            (&raw mut a.storage).cast::<libc::sockaddr>(),
            &raw mut a.len,
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(user_data);
        // The box's heap memory does not move when the box does.
        self.keep(user_data, Keep::Accept(a));
        self.push(&e)
    }

    /// Closes `fd` in the ring (done by the kernel during the next submission). When the entry
    /// cannot be queued the descriptor is closed here, so it is closed exactly once either way.
    /// A successful close posts no completion (`IOSQE_CQE_SKIP_SUCCESS`); a failed one does.
    pub(crate) fn close(&mut self, fd: OwnedFd, user_data: u64) {
        let e = opcode::Close::new(Fd(std::os::fd::AsRawFd::as_raw_fd(&fd)))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(user_data);
        if self.push(&e).is_ok() {
            // The queued entry owns the number now; the kernel closes it.
            let _ = fd.into_raw_fd();
        }
    }

    /// Hands what is queued to the kernel without waiting (before the loop ends, so that
    /// queued closes happen).
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        self.ring.submit().map(drop)
    }

    /// Multishot receive on `fd`: a completion (with `more`) each time data arrives, each in a
    /// buffer the kernel picks from the group (an idle socket holds none). Ends with a
    /// completion without `more`: EOF (0), `-ENOBUFS` when the group ran dry, an error, or
    /// `-ECANCELED` after [`Ring::cancel`].
    pub(crate) fn recv_multi(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let e = opcode::RecvMulti::new(Fd(fd), BUF_GROUP)
            .build()
            .user_data(user_data);
        self.push(&e)
    }

    /// Sends bytes `off..off+len` of handed-out buffer `bid` on `fd` (`MSG_NOSIGNAL`). `more`
    /// adds `MSG_MORE`: the bytes stay in the socket until the caller's next send or its
    /// `shutdown`, which then goes out in the same segment (data and FIN in one packet).
    pub(crate) fn send_buf(
        &mut self,
        fd: RawFd,
        bid: u16,
        off: u32,
        len: u32,
        more: bool,
        user_data: u64,
    ) -> io::Result<()> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, "buffer not handed out");
        let end = off.checked_add(len).ok_or_else(bad)?;
        if end > self.bufs.size || self.bufs.state.get(usize::from(bid)) != Some(&BufState::Out) {
            return Err(bad());
        }
        let ptr = self.bufs.slice(bid, end as usize);
        let ptr = ptr.get(off as usize..).ok_or_else(bad)?.as_ptr();
        let flags = if more {
            libc::MSG_NOSIGNAL | libc::MSG_MORE
        } else {
            libc::MSG_NOSIGNAL
        };
        let e = opcode::Send::new(Fd(fd), ptr, len)
            .flags(flags)
            .build()
            .user_data(user_data);
        self.push(&e)?;
        if let Some(s) = self.bufs.state.get_mut(usize::from(bid)) {
            *s = BufState::Sending;
        }
        self.keep(user_data, Keep::Send(bid));
        Ok(())
    }

    /// Connects `fd` to `addr`. The loop times it out itself (its timer wheel, then
    /// [`Ring::cancel`]): no linked timeout entry, timer and completion per connection.
    pub(crate) fn connect(&mut self, fd: RawFd, addr: SockAddr, user_data: u64) -> io::Result<()> {
        let addr = Box::new(addr);
        let c = opcode::Connect::new(Fd(fd), addr.as_ptr().cast(), addr.len())
            .build()
            .user_data(user_data);
        self.keep(user_data, Keep::Addr(addr));
        self.push(&c)
    }

    /// Multishot poll for input on `fd` (an eventfd the loop is woken through).
    pub(crate) fn poll_in_multi(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let e = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data);
        self.push(&e)
    }

    /// Cancels every operation in flight on `fd` (a completion only when that fails).
    pub(crate) fn cancel_fd(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let e = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(user_data);
        self.push(&e)
    }

    /// Cancels the operation submitted with `target` (a completion only when that fails, e.g.
    /// `-ENOENT`: it had completed).
    pub(crate) fn cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let e = opcode::AsyncCancel2::new(CancelBuilder::user_data(target))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(user_data);
        self.push(&e)
    }

    /// Submits what is queued and waits for at least one completion or `max_wait`: the one
    /// `io_uring_enter` of a loop turn.
    pub(crate) fn submit_and_wait(&mut self, max_wait: Duration) -> io::Result<()> {
        let ts = Timespec::from(max_wait);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves the completions out (appended to `out`), releasing what their operations kept.
    pub(crate) fn reap(&mut self, out: &mut Vec<Completion>) {
        let first = out.len();
        let mut cq = self.ring.completion();
        cq.sync();
        for c in &mut cq {
            let flags = c.flags();
            let buf = cqueue::buffer_select(flags);
            let done = Completion {
                user_data: c.user_data(),
                result: c.result(),
                buf,
                more: cqueue::more(flags),
                peer: None,
            };
            out.push(done);
        }
        drop(cq);
        for c in out[first..].iter_mut() {
            if let Some(b) = c.buf
                && let Some(s) = self.bufs.state.get_mut(usize::from(b))
            {
                *s = BufState::Out;
            }
            if c.more {
                continue;
            }
            match self.keep.remove(&c.user_data) {
                Some(Keep::Send(b)) => {
                    if let Some(s) = self.bufs.state.get_mut(usize::from(b)) {
                        *s = BufState::Out;
                    }
                }
                Some(Keep::Accept(a)) if c.result >= 0 => c.peer = a.peer(),
                _ => {}
            }
        }
    }

    /// The first `len` bytes of handed-out buffer `bid` (empty if it is in the kernel's ring).
    pub(crate) fn buf(&self, bid: u16, len: usize) -> &[u8] {
        self.bufs.slice(bid, len)
    }

    /// Gives handed-out buffer `bid` back to the kernel. Returns false (and keeps it) while a
    /// send still uses it.
    pub(crate) fn recycle(&mut self, bid: u16) -> bool {
        if self.bufs.state.get(usize::from(bid)) != Some(&BufState::Out) {
            return false;
        }
        self.bufs.give(bid);
        true
    }

    #[cfg(test)]
    /// Buffers handed out and not yet given back.
    pub(crate) fn bufs_out(&self) -> usize {
        self.bufs
            .state
            .iter()
            .filter(|s| **s != BufState::InRing)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn wait(ring: &mut Ring, out: &mut Vec<Completion>, ud: u64) -> Completion {
        for _ in 0..100 {
            ring.submit_and_wait(Duration::from_millis(20)).unwrap();
            ring.reap(out);
            if let Some(i) = out.iter().position(|c| c.user_data == ud) {
                return out.remove(i);
            }
        }
        panic!("no completion for {ud}");
    }

    #[test]
    fn the_probe_passes_here() {
        probe().expect("io_uring usable on the test machine (kernel 6.x, not disabled)");
    }

    /// A ring of 4 × 64-byte buffers and a loopback connection accepted through it (user data
    /// 1): (ring, the client end, the accepted end).
    fn ring_with_accepted() -> (Ring, std::net::TcpStream, socket2::Socket) {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut ring = Ring::new(16, 4, 64).unwrap();
        ring.accept(l.as_raw_fd(), 1).unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let a = wait(&mut ring, &mut Vec::new(), 1);
        assert!(a.result >= 0 && !a.more, "{a:?}");
        let s = socket2::Socket::from(adopt_accepted(a.result).expect("a descriptor"));
        (ring, c, s)
    }

    #[test]
    fn accept_recv_into_a_provided_buffer_send_it_back_and_recycle() {
        use std::os::fd::AsRawFd;
        let (mut ring, mut c, s) = ring_with_accepted();
        let mut out = Vec::new();
        assert_eq!(ring.bufs_out(), 0);
        ring.recv_multi(s.as_raw_fd(), 2).unwrap();
        c.write_all(b"hello").unwrap();
        let r = wait(&mut ring, &mut out, 2);
        assert_eq!(r.result, 5);
        assert!(r.more, "the multishot receive stays armed");
        let bid = r.buf.expect("a provided buffer");
        assert_eq!(ring.buf(bid, 5), b"hello");
        assert_eq!(ring.bufs_out(), 1);
        ring.send_buf(s.as_raw_fd(), bid, 1, 4, false, 3).unwrap();
        assert!(!ring.recycle(bid), "a buffer being sent is not given back");
        let w = wait(&mut ring, &mut out, 3);
        assert_eq!(w.result, 4);
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ello");
        assert!(ring.recycle(bid));
        assert_eq!(ring.bufs_out(), 0);
        assert!(
            ring.buf(bid, 5).is_empty(),
            "a buffer in the ring cannot be read"
        );
        assert!(ring.send_buf(s.as_raw_fd(), bid, 0, 1, false, 4).is_err());
    }

    #[test]
    fn a_send_with_more_waits_for_the_half_close_and_goes_with_it() {
        use std::os::fd::AsRawFd;
        let (mut ring, mut c, s) = ring_with_accepted();
        let mut out = Vec::new();
        // A buffer to send: what the client sends, received into the ring.
        ring.recv_multi(s.as_raw_fd(), 2).unwrap();
        c.write_all(b"last bytes").unwrap();
        let r = wait(&mut ring, &mut out, 2);
        let bid = r.buf.expect("a provided buffer");
        ring.send_buf(s.as_raw_fd(), bid, 0, 10, true, 3).unwrap();
        assert_eq!(wait(&mut ring, &mut out, 3).result, 10);
        // Held in the socket (MSG_MORE): nothing reaches the peer yet.
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut got = [0u8; 16];
        let early = c.read(&mut got);
        assert!(
            early
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut),
            "bytes sent with MSG_MORE were not held: {early:?}"
        );
        // The half-close sends them, then EOF.
        s.shutdown(std::net::Shutdown::Write).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"last bytes");
    }

    #[test]
    fn a_hanging_connect_is_cancelled_by_its_user_data() {
        use std::os::fd::AsRawFd;
        // A listener with a full backlog: SYNs are dropped, the connect hangs.
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        l.listen(0).unwrap();
        let addr = l.local_addr().unwrap();
        let _filler = std::net::TcpStream::connect(addr.as_socket().unwrap()).unwrap();
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let mut ring = Ring::new(16, 2, 64).unwrap();
        ring.connect(s.as_raw_fd(), addr, 7).unwrap();
        let mut out = Vec::new();
        // Still connecting after a while (nothing else completes it).
        ring.submit_and_wait(Duration::from_millis(100)).unwrap();
        ring.reap(&mut out);
        assert!(out.is_empty(), "{out:?}");
        // What the loop's timer does when the connect timeout passes.
        ring.cancel(7, 8).unwrap();
        let c = wait(&mut ring, &mut out, 7);
        assert_eq!(c.result, -libc::ECANCELED, "{c:?}");
        assert!(
            out.iter().all(|c| c.user_data != 8),
            "a successful cancel posts no completion: {out:?}"
        );
        // One that finds nothing to cancel says so.
        ring.cancel(7, 9).unwrap();
        let k = wait(&mut ring, &mut out, 9);
        assert_eq!(k.result, -libc::ENOENT, "{k:?}");
    }

    #[test]
    fn an_accept_completion_carries_the_peer_address() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut ring = Ring::new(16, 2, 64).unwrap();
        ring.accept(l.as_raw_fd(), 11).unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut out = Vec::new();
        let a = wait(&mut ring, &mut out, 11);
        assert!(a.result >= 0 && !a.more, "{a:?}");
        assert_eq!(a.peer, Some(c.local_addr().unwrap()), "{a:?}");
        let s = socket2::Socket::from(adopt_accepted(a.result).expect("a descriptor"));
        assert_eq!(s.peer_addr().unwrap().as_socket(), a.peer);
        // IPv6 too (the address buffer holds either family).
        if let Ok(l6) = std::net::TcpListener::bind("[::1]:0") {
            ring.accept(l6.as_raw_fd(), 12).unwrap();
            let c6 = std::net::TcpStream::connect(l6.local_addr().unwrap()).unwrap();
            let a6 = wait(&mut ring, &mut out, 12);
            assert_eq!(a6.peer, Some(c6.local_addr().unwrap()), "{a6:?}");
            drop(adopt_accepted(a6.result));
        }
    }

    #[test]
    fn close_runs_in_the_ring() {
        use std::os::fd::OwnedFd;
        let mut ring = Ring::new(16, 2, 64).unwrap();
        let mut out = Vec::new();
        let mut one = [0u8; 1];
        // Close: the other end of a socket pair sees EOF once the ring closed this one (std's
        // pair is close-on-exec, so no child of another test holds a copy).
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        ring.close(OwnedFd::from(a), 22);
        ring.submit_and_wait(Duration::from_millis(20)).unwrap();
        ring.reap(&mut out);
        assert!(
            out.is_empty(),
            "a successful close posts no completion: {out:?}"
        );
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            b.read(&mut one).unwrap(),
            0,
            "EOF: the ring closed the descriptor"
        );
    }

    #[test]
    fn a_single_thread_ring_runs_on_the_thread_that_enables_it() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Made on this thread, run on another (as the loop is).
        let mut ring = Ring::new_single_thread(16, 4, 64).unwrap();
        let t = std::thread::spawn(move || {
            ring.enable().unwrap();
            ring.accept(l.as_raw_fd(), 1).unwrap();
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            let mut out = Vec::new();
            let a = wait(&mut ring, &mut out, 1);
            let s = socket2::Socket::from(adopt_accepted(a.result).expect("a descriptor"));
            ring.recv_multi(s.as_raw_fd(), 2).unwrap();
            c.write_all(b"hi").unwrap();
            let r = wait(&mut ring, &mut out, 2);
            assert_eq!(r.result, 2, "{r:?}");
            assert_eq!(ring.buf(r.buf.unwrap(), 2), b"hi");
        });
        t.join().unwrap();
    }
}
