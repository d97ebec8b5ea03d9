//! The `bpf(2)` commands aya does not offer in the shape pen needs: running a loaded program
//! once on a test frame (`BPF_PROG_TEST_RUN`, for the differential tests) and attaching a
//! program to an interface *by index* through a BPF link and nothing else (aya's tcx attach
//! takes an interface name, and its XDP attach falls back to a netlink attachment that
//! outlives a killed pen; pen's fast paths must be detached by the kernel however pen exits).
//! Also the clock `bpf_ktime_get_ns` reads, so pen can age the program's timestamps.
//!
//! Programs and maps are loaded and accessed through aya ([`crate::link::bpf`]); nothing here
//! touches a map, so no call can make the kernel write past a Rust buffer of the wrong size.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

#[cfg(test)]
const CMD_PROG_TEST_RUN: i32 = 10;
const CMD_LINK_CREATE: i32 = 28;
const CMD_LINK_UPDATE: i32 = 29;
/// `BPF_XDP`.
const ATTACH_XDP: u32 = 37;
/// `BPF_TCX_INGRESS` (Linux 6.6+): tc ingress through a BPF link, several programs per
/// interface.
const ATTACH_TCX_INGRESS: u32 = 46;
/// `XDP_FLAGS_SKB_MODE`: the generic (driver-independent) XDP hook.
const XDP_FLAGS_SKB_MODE: u32 = 2;

/// A `union bpf_attr` (144 bytes on current kernels, zero beyond the fields a command uses),
/// written field by field at the kernel's offsets.
struct Attr([u8; 144]);

/// Field offsets of `bpf_attr.test` (`BPF_PROG_TEST_RUN`).
#[cfg(test)]
mod test {
    pub const PROG_FD: usize = 0;
    pub const RETVAL: usize = 4;
    pub const DATA_SIZE_IN: usize = 8;
    pub const DATA_SIZE_OUT: usize = 12;
    pub const DATA_IN: usize = 16;
    pub const DATA_OUT: usize = 24;
    pub const REPEAT: usize = 32;
    pub const DURATION: usize = 36;
}

/// Field offsets of `bpf_attr.link_update` (`BPF_LINK_UPDATE`).
mod link_update {
    pub const LINK_FD: usize = 0;
    pub const NEW_PROG_FD: usize = 4;
}

/// Field offsets of `bpf_attr.link_create` (`BPF_LINK_CREATE`).
mod link {
    pub const PROG_FD: usize = 0;
    pub const TARGET_IFINDEX: usize = 4;
    pub const ATTACH_TYPE: usize = 8;
    pub const FLAGS: usize = 12;
}

impl Attr {
    fn new() -> Attr {
        Attr([0; 144])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    #[cfg(test)]
    fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    #[cfg(test)]
    fn get_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_ne_bytes(b)
    }
    /// `bpf(cmd, self)`: the raw return value or the OS error. Private: only the commands
    /// below, whose pointers (if any) point into buffers that outlive the call and are as
    /// large as the sizes beside them, reach it.
    fn call(&mut self, cmd: i32) -> io::Result<i64> {
        // SAFETY: bpf(2) reads (and for BPF_PROG_TEST_RUN writes) `self`, a buffer of the size
        // passed. The only pointers in it are set by `test_run`, to `frame` (read, at most
        // `frame.len()` bytes) and `out` (written, at most `out.len()` bytes: the kernel
        // truncates to data_size_out), both alive until `test_run` returns.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                self.0.len() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }
}

#[cfg(test)]
fn ptr<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// Runs `prog` once on a copy of `frame` (`BPF_PROG_TEST_RUN`, for the differential tests):
/// the return code and the frame as the program left it (at most 256 bytes longer than
/// `frame`).
#[cfg(test)]
pub(crate) fn test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
    test_run_repeat(prog, frame, 1).map(|(rc, out, _)| (rc, out))
}

/// [`test_run`] `repeat` times in the kernel: also the kernel's mean time per run, in
/// nanoseconds (for measurements).
#[cfg(test)]
pub(crate) fn test_run_repeat(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
) -> io::Result<(u32, Vec<u8>, u32)> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut a = Attr::new();
    a.u32(test::PROG_FD, prog.as_raw_fd() as u32)
        .u32(test::DATA_SIZE_IN, frame.len() as u32)
        .u32(test::DATA_SIZE_OUT, out.len() as u32)
        .u64(test::DATA_IN, ptr(frame.as_ptr()))
        .u64(test::DATA_OUT, ptr(out.as_mut_ptr()))
        .u32(test::REPEAT, repeat.max(1));
    a.call(CMD_PROG_TEST_RUN)?;
    let len = (a.get_u32(test::DATA_SIZE_OUT) as usize).min(out.len());
    out.truncate(len);
    Ok((a.get_u32(test::RETVAL), out, a.get_u32(test::DURATION)))
}

/// Attaches a tc program to the ingress of interface `ifindex` through a tcx BPF link (after
/// any programs already there, which keep running): detached when the returned descriptor is
/// closed, so also when the process dies.
pub(crate) fn tcx_link(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    link_create(prog, ifindex, ATTACH_TCX_INGRESS, 0)
}

/// Attaches an XDP program to interface `ifindex` in generic (SKB) mode through a BPF link:
/// detached when the returned descriptor is closed, so also when the process dies.
pub(crate) fn xdp_link(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    link_create(prog, ifindex, ATTACH_XDP, XDP_FLAGS_SKB_MODE)
}

/// Replaces the program of an existing BPF link (`BPF_LINK_UPDATE`) atomically: frames go
/// to the old program until the call, to `prog` after it. For a binary upgrade: the new pen
/// swaps its XDP program into the link the old pen handed over.
pub(crate) fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    Attr::new()
        .u32(link_update::LINK_FD, link.as_raw_fd() as u32)
        .u32(link_update::NEW_PROG_FD, prog.as_raw_fd() as u32)
        .call(CMD_LINK_UPDATE)
        .map(|_| ())
}

fn link_create(prog: BorrowedFd<'_>, ifindex: u32, attach: u32, flags: u32) -> io::Result<OwnedFd> {
    let fd = Attr::new()
        .u32(link::PROG_FD, prog.as_raw_fd() as u32)
        .u32(link::TARGET_IFINDEX, ifindex)
        .u32(link::ATTACH_TYPE, attach)
        .u32(link::FLAGS, flags)
        .call(CMD_LINK_CREATE)?;
    // SAFETY: BPF_LINK_CREATE returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// CLOCK_MONOTONIC now in nanoseconds, the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives across the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
