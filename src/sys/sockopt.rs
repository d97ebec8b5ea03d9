//! Socket options that take a C `int`, `SO_ERROR`, and `poll(2)` on one descriptor.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// `setsockopt(fd, level, opt, &value)` for an option that takes a C `int`.
pub(crate) fn set_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live c_int and its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes (and so clears) the pending error of socket `fd` (`SO_ERROR`); 0 when there is none.
pub(crate) fn take_error(fd: RawFd) -> io::Result<libc::c_int> {
    let mut e: libc::c_int = 0;
    let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(SO_ERROR) writes at most `l` bytes into the c_int we own.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut e as *mut libc::c_int).cast(),
            &mut l,
        )
    };
    if rc == 0 {
        Ok(e)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What [`poll_in`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub(crate) readable: bool,
    /// `POLLERR` (or `POLLHUP`/`POLLNVAL`): the socket has a pending error (an interface
    /// went down) for the next receive call to report.
    pub(crate) error: bool,
}

/// Waits up to `timeout` (at least 1 ms, at most `i32::MAX` ms) for `fd` to become readable.
/// An interrupted wait reports nothing ready.
pub(crate) fn poll_in(fd: RawFd, timeout: Duration) -> io::Result<Readiness> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: poll reads and writes exactly one pollfd we own.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Readiness {
                readable: false,
                error: false,
            })
        } else {
            Err(e)
        };
    }
    Ok(Readiness {
        readable: r > 0 && pfd.revents & libc::POLLIN != 0,
        error: pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn int_options_are_set_and_errors_name_the_cause() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST, 1).unwrap();
        assert!(s.broadcast().unwrap());
        let e = set_int(-1, libc::SOL_SOCKET, libc::SO_BROADCAST, 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        assert_eq!(take_error(s.as_raw_fd()).unwrap(), 0);
    }

    #[test]
    fn poll_in_sees_a_queued_datagram_and_times_out_without_one() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = poll_in(rx.as_raw_fd(), Duration::from_millis(1)).unwrap();
        assert!(!r.readable && !r.error);
        rx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let r = poll_in(rx.as_raw_fd(), Duration::from_secs(2)).unwrap();
        assert!(r.readable);
    }
}
