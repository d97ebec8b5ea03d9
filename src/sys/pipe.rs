//! The splice pipe of the TCP forwarder, `splice(2)` and a raw `read(2)`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `read(2)` on a (non-blocking) descriptor the caller keeps open.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes for the whole call; a stale
    // `fd` only makes the call fail (EBADF).
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// A non-blocking, close-on-exec pipe used as the splice buffer of one direction.
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Capacity in bytes: the most one socket → pipe splice asks for.
    pub(crate) cap: usize,
}

impl Pipe {
    /// A pipe whose capacity is raised to `size` when the system allows (`F_SETPIPE_SZ`, best
    /// effort); `default_cap` when the capacity cannot be read back.
    pub(crate) fn new(size: usize, default_cap: usize) -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: pipe2 writes two fds into the array we own; we check the return value.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let [r, w] = fds;
        // SAFETY: both fds were just returned by pipe2 and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w)) };
        let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a pipe fd we own; a failure (size above the system limit) only
        // leaves the default capacity, which F_GETPIPE_SZ then reports.
        let cap = unsafe {
            libc::fcntl(w, libc::F_SETPIPE_SZ, size);
            libc::fcntl(w, libc::F_GETPIPE_SZ)
        };
        let cap = usize::try_from(cap)
            .ok()
            .filter(|&c| c > 0)
            .unwrap_or(default_cap);
        Ok(Pipe { read, write, cap })
    }
}

/// `splice(fd_in, NULL, fd_out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)`.
pub(crate) fn splice(fd_in: RawFd, fd_out: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on fds the caller keeps open for the duration of the call; null
    // offsets mean "use the file position" (required for sockets and pipes).
    let n = unsafe {
        libc::splice(
            fd_in,
            std::ptr::null_mut(),
            fd_out,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn bytes_go_through_the_pipe_and_an_empty_pipe_would_block() {
        let p = Pipe::new(256 * 1024, 64 * 1024).unwrap();
        assert!(p.cap >= 4096, "{}", p.cap);
        let mut buf = [0u8; 8];
        let e = read(p.read.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let q = Pipe::new(4096, 4096).unwrap();
        let n = nix::unistd::write(&q.write, b"hello").unwrap();
        assert_eq!(n, 5);
        assert_eq!(
            splice(q.read.as_raw_fd(), p.write.as_raw_fd(), 5).unwrap(),
            5
        );
        assert_eq!(read(p.read.as_raw_fd(), &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert!(read(-1, &mut buf).is_err());
    }
}
