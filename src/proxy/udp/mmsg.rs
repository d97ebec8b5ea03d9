//! Batched datagram IO for the shell: `recvmmsg` into a fixed set of buffers and `sendmmsg`
//! of slices to per-message destinations. Nonblocking (`MSG_DONTWAIT`); the shell drives
//! readiness through tokio's `try_io`/`async_io`. Linux only, like the rest of pen-rs.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 16;

/// Largest UDP payload plus one (IPv6 without jumbograms: 65,535 − 8 < this).
pub const SLOT: usize = 65_536;

/// Buffers for one `recvmmsg` call.
pub struct RecvBatch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
    addrs: [Option<SocketAddr>; BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            buf: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
            addrs: [None; BATCH],
        }
    }

    /// Datagram `i` of the last `recv`: its bytes and sender (`None` if not inet).
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        let len = *self.lens.get(i)?;
        let start = i.checked_mul(SLOT)?;
        let data = self.buf.get(start..start + len.min(SLOT))?;
        Some((data, *self.addrs.get(i)?))
    }

    /// Receive up to [`BATCH`] datagrams from `fd`; Err(WouldBlock) when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY (whole block): recvmmsg on a valid descriptor with BATCH headers, each pointing
        // at its own live iovec (a disjoint SLOT-sized part of `self.buf`) and its own
        // sockaddr_storage of the stated length; the kernel writes at most `rc` headers.
        unsafe {
            let mut names: [libc::sockaddr_storage; BATCH] = std::mem::zeroed();
            let mut iovs: [libc::iovec; BATCH] = std::mem::zeroed();
            let mut hdrs: [libc::mmsghdr; BATCH] = std::mem::zeroed();
            let base = self.buf.as_mut_ptr();
            for i in 0..BATCH {
                iovs[i] = libc::iovec {
                    iov_base: base.add(i * SLOT).cast(),
                    iov_len: SLOT,
                };
                hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                hdrs[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
            }
            let rc = libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            );
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = (rc as usize).min(BATCH);
            for i in 0..n {
                self.lens[i] = (hdrs[i].msg_len as usize).min(SLOT);
                self.addrs[i] = sockaddr_to_std(&names[i]);
            }
            Ok(n)
        }
    }
}

/// Send `msgs` (at most [`BATCH`]) on `fd` with one `sendmmsg`: how many were sent (the first
/// `k`), or the error of the first one when none was.
pub fn send_batch(fd: RawFd, msgs: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let n = msgs.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY (whole block): sendmmsg on a valid descriptor with `n` headers, each pointing at
    // its own live iovec (over a borrowed slice, only read by the kernel) and its own
    // sockaddr_storage of the stated length.
    unsafe {
        let mut names: [libc::sockaddr_storage; BATCH] = std::mem::zeroed();
        let mut iovs: [libc::iovec; BATCH] = std::mem::zeroed();
        let mut hdrs: [libc::mmsghdr; BATCH] = std::mem::zeroed();
        for (i, (data, to)) in msgs.iter().take(n).enumerate() {
            iovs[i] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            let len = std_to_sockaddr(to, &mut names[i]);
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = len;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let rc = libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT);
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

/// A kernel socket address as a std one (`None` for other families).
pub fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in, which fits in it.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned((ss as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6, which fits in it.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read_unaligned((ss as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Write `addr` into `ss`; returns the length to pass to the kernel.
fn std_to_sockaddr(addr: &SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: a sockaddr_in fits in a sockaddr_storage.
            unsafe { std::ptr::write_unaligned((ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: a sockaddr_in6 fits in a sockaddr_storage.
            unsafe { std::ptr::write_unaligned((ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_keeps_order_sizes_and_senders() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let big = vec![9u8; 65_507];
        let msgs: Vec<(&[u8], SocketAddr)> = vec![(b"one", to), (b"", to), (&big, to)];
        assert_eq!(send_batch(tx.as_raw_fd(), &msgs).unwrap(), 3);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut b = RecvBatch::new();
        let n = b.recv(rx.as_raw_fd()).unwrap();
        assert_eq!(n, 3);
        let from = Some(tx.local_addr().unwrap());
        assert_eq!(b.get(0), Some((&b"one"[..], from)));
        assert_eq!(b.get(1), Some((&b""[..], from)));
        assert_eq!(b.get(2).unwrap().0.len(), 65_507);
        let e = b.recv(rx.as_raw_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn ipv6_addresses_round_trip() {
        let a: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
        // SAFETY: zeroed sockaddr_storage is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        std_to_sockaddr(&a, &mut ss);
        assert_eq!(sockaddr_to_std(&ss), Some(a));
    }
}
