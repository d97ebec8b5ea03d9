//! Passing descriptors over a Unix stream socket (`SCM_RIGHTS`), for the binary upgrade
//! ([`crate::upgrade`]): one `sendmsg` carries a message and the descriptors, one `recvmsg`
//! takes them (closed on exec); and the peer's user (`SO_PEERCRED`), so that only root or
//! pen's own user may take the listening sockets.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::cmsg;

/// Most descriptors one message carries.
pub(crate) const MAX_FDS: usize = 8;
/// Their control message fits the shared control buffer.
const _: () = assert!(cmsg::space(MAX_FDS * 4) <= std::mem::size_of::<cmsg::Buf>());

/// Sends `data` with `fds` attached (all of `data` in one call: a short write is an error, the
/// header is small).
pub(crate) fn send_with_fds(
    sock: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} descriptors to pass, at most {MAX_FDS}", fds.len()),
        ));
    }
    let mut payload = Vec::with_capacity(fds.len() * 4);
    for fd in fds {
        payload.extend_from_slice(&fd.as_raw_fd().to_ne_bytes());
    }
    let mut ctl = cmsg::Buf::default();
    let controllen = if fds.is_empty() {
        0
    } else {
        cmsg::write(&mut ctl.0, libc::SOL_SOCKET, libc::SCM_RIGHTS, &payload)
            .ok_or_else(|| io::Error::other("control buffer too small"))?
    };
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if controllen > 0 {
        msg.msg_control = ctl.0.as_mut_ptr().cast();
        msg.msg_controllen = controllen as _;
    }
    // SAFETY: `msg` points at `iov` (over `data`, only read by the kernel) and at `ctl`, both
    // alive for the call; the descriptors in the control message are borrowed, open ones.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::try_from(n).ok() != Some(data.len()) {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {n} of {} bytes", data.len()),
        ));
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and the descriptors that came with them (owned, closed on
/// exec). A truncated control message (more descriptors than [`MAX_FDS`]) is an error; the
/// ones that did arrive are closed.
pub(crate) fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut ctl = cmsg::Buf::default();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg::space(MAX_FDS * 4) as _;
    // SAFETY: `msg` points at `iov` (over `buf`) and `ctl` (>= msg_controllen, checked above), both
    // alive and writable for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    let used = msg.msg_controllen as usize;
    for c in cmsg::parse(&ctl.0, used) {
        if c.level != libc::SOL_SOCKET || c.kind != libc::SCM_RIGHTS {
            continue;
        }
        for i in 0..c.data.len() / 4 {
            if let Some(raw) = cmsg::u32_at(c.data, i * 4) {
                let raw = raw as RawFd;
                // SAFETY: the kernel installed this descriptor in our table for us with this
                // message; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(format!(
            "more than {MAX_FDS} descriptors were passed; the extra ones were lost"
        )));
    }
    Ok((usize::try_from(n).unwrap_or(0), fds))
}

/// The uid of the process at the other end of `sock` (`SO_PEERCRED`).
pub(crate) fn peer_uid(sock: &UnixStream) -> io::Result<u32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    getsockopt(sock, PeerCredentials)
        .map(|c| c.uid())
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_and_bytes_arrive_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (p1, mut p2) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"hello", &[l.as_fd(), p1.as_fd()]).unwrap();
        drop(l);
        drop(p1);
        let mut buf = [0u8; 64];
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 2);
        let mut it = fds.into_iter();
        let l2 = std::net::TcpListener::from(it.next().unwrap());
        assert_eq!(l2.local_addr().unwrap(), addr, "the same listening socket");
        let mut p1b = UnixStream::from(it.next().unwrap());
        p1b.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        p2.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
        assert_eq!(peer_uid(&a).unwrap(), nix::unistd::geteuid().as_raw());
        // Plain bytes without descriptors.
        send_with_fds(&a, b"ready 1\n", &[]).unwrap();
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"ready 1\n"[..], 0));
    }

    #[test]
    fn too_many_descriptors_are_refused_before_sending() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fds: Vec<BorrowedFd<'_>> = (0..=MAX_FDS).map(|_| a.as_fd()).collect();
        assert!(send_with_fds(&a, b"x", &fds).is_err());
    }
}
