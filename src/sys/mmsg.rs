//! Batched datagram IO for the UDP shell: `recvmmsg` into a fixed set of buffers and `sendmmsg`
//! of slices to per-message destinations, with `IP_PKTINFO`/`IPV6_PKTINFO` control messages,
//! and the socket error queue ([`recv_err`]). Nonblocking (`MSG_DONTWAIT`); the shell drives
//! readiness through tokio's `try_io`/`async_io`. Linux only, like the rest of pen-rs.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use super::cmsg;

/// Datagrams per system call.
pub(crate) const BATCH: usize = 16;

/// Largest UDP payload plus one (IPv6 without jumbograms: 65,535 − 8 < this).
pub(crate) const SLOT: usize = 65_536;

/// Buffers for one `recvmmsg` call.
pub(crate) struct RecvBatch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
    addrs: [Option<SocketAddr>; BATCH],
    /// Each datagram's destination address, when asked for ([`RecvBatch::with_destinations`]).
    dsts: [Option<IpAddr>; BATCH],
    /// One control buffer per datagram when destinations are recorded, else empty.
    ctl: Vec<cmsg::Buf>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    pub(crate) fn new() -> RecvBatch {
        RecvBatch {
            buf: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
            addrs: [None; BATCH],
            dsts: [None; BATCH],
            ctl: Vec::new(),
        }
    }

    /// A batch that also records each datagram's destination address (the socket must have
    /// `IP_PKTINFO` / `IPV6_RECVPKTINFO` on: [`enable_pktinfo`]); see [`RecvBatch::dst`].
    pub(crate) fn with_destinations() -> RecvBatch {
        RecvBatch {
            ctl: vec![cmsg::Buf::default(); BATCH],
            ..RecvBatch::new()
        }
    }

    /// The address datagram `i` of the last `recv` was sent to (`None` unless recorded).
    pub(crate) fn dst(&self, i: usize) -> Option<IpAddr> {
        self.dsts.get(i).copied().flatten()
    }

    /// Datagram `i` of the last `recv`: its bytes and sender (`None` if not inet).
    pub(crate) fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        let len = *self.lens.get(i)?;
        let start = i.checked_mul(SLOT)?;
        let data = self.buf.get(start..start + len.min(SLOT))?;
        Some((data, *self.addrs.get(i)?))
    }

    /// Receive up to [`BATCH`] datagrams from `fd`; Err(WouldBlock) when none is queued.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
        // is a valid value.
        let (mut names, mut iovs, mut hdrs): (
            [libc::sockaddr_storage; BATCH],
            [libc::iovec; BATCH],
            [libc::mmsghdr; BATCH],
        ) = unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
        for (i, slot) in self.buf.chunks_mut(SLOT).take(BATCH).enumerate() {
            if let Some(c) = self.ctl.get_mut(i) {
                hdrs[i].msg_hdr.msg_control = c.0.as_mut_ptr().cast();
                hdrs[i].msg_hdr.msg_controllen = c.0.len() as _;
            }
            iovs[i] = libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            };
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: BATCH headers, each pointing at its own live iovec (a disjoint SLOT-sized
        // part of `self.buf`), its own sockaddr_storage and, when recorded, its own control
        // buffer, each of the stated length; all outlive the call. A bad `fd` only fails.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (rc as usize).min(BATCH);
        for i in 0..n {
            self.lens[i] = (hdrs[i].msg_len as usize).min(SLOT);
            self.addrs[i] = sockaddr_to_std(&names[i]);
            self.dsts[i] = self
                .ctl
                .get(i)
                .and_then(|c| pktinfo_dst(&c.0, hdrs[i].msg_hdr.msg_controllen));
        }
        Ok(n)
    }
}

/// Turns on the destination-address control messages [`RecvBatch::with_destinations`] reads
/// (`IP_PKTINFO` for IPv4 sockets; `IPV6_RECVPKTINFO`, and `IP_PKTINFO` for IPv4-mapped
/// traffic, on IPv6 ones).
pub(crate) fn enable_pktinfo(fd: RawFd, v6: bool) -> io::Result<()> {
    let opts: &[(libc::c_int, libc::c_int)] = if v6 {
        &[
            (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
            (libc::IPPROTO_IP, libc::IP_PKTINFO),
        ]
    } else {
        &[(libc::IPPROTO_IP, libc::IP_PKTINFO)]
    };
    for &(level, opt) in opts {
        super::sockopt::set_int(fd, level, opt, 1)?;
    }
    Ok(())
}

/// The destination address in a received message's `IP_PKTINFO`/`IPV6_PKTINFO`, if any
/// (`control`: its control buffer, of which the kernel used `used` bytes).
fn pktinfo_dst(control: &[u8], used: usize) -> Option<IpAddr> {
    use std::mem::{offset_of, size_of};
    cmsg::parse(control, used).find_map(|c| {
        if c.level == libc::IPPROTO_IP
            && c.kind == libc::IP_PKTINFO
            && c.data.len() >= size_of::<libc::in_pktinfo>()
        {
            let at = offset_of!(libc::in_pktinfo, ipi_addr);
            let a: [u8; 4] = c.data.get(at..at + 4)?.try_into().ok()?;
            return Some(IpAddr::V4(Ipv4Addr::from(a)));
        }
        if c.level == libc::IPPROTO_IPV6
            && c.kind == libc::IPV6_PKTINFO
            && c.data.len() >= size_of::<libc::in6_pktinfo>()
        {
            let at = offset_of!(libc::in6_pktinfo, ipi6_addr);
            let a: [u8; 16] = c.data.get(at..at + 16)?.try_into().ok()?;
            return Some(IpAddr::V6(Ipv6Addr::from(a)));
        }
        None
    })
}

/// Writes into `buf` a control message that makes the kernel send from `src`; returns its
/// length (`None` when `src` cannot be expressed in the family of the socket, which `to`
/// has: then the kernel picks).
fn pktinfo_src(src: IpAddr, to: &SocketAddr, buf: &mut cmsg::Buf) -> Option<usize> {
    use std::mem::{offset_of, size_of};
    // An IPv4 source for an IPv6 socket is written as IPv4-mapped (and the reverse is not
    // possible): the family of the destination's sockaddr is the socket's.
    let src = match (src, to) {
        (IpAddr::V4(a), SocketAddr::V6(_)) => IpAddr::V6(a.to_ipv6_mapped()),
        (IpAddr::V6(a), SocketAddr::V4(_)) => IpAddr::V4(a.to_ipv4_mapped()?),
        (s, _) => s,
    };
    match src {
        IpAddr::V4(a) => {
            // in_pktinfo { ipi_ifindex: 0, ipi_spec_dst: src, ipi_addr: 0 }
            let mut p = [0u8; size_of::<libc::in_pktinfo>()];
            let at = offset_of!(libc::in_pktinfo, ipi_spec_dst);
            p[at..at + 4].copy_from_slice(&a.octets());
            cmsg::write(&mut buf.0, libc::IPPROTO_IP, libc::IP_PKTINFO, &p)
        }
        IpAddr::V6(a) => {
            // in6_pktinfo { ipi6_addr: src, ipi6_ifindex: 0 }
            let mut p = [0u8; size_of::<libc::in6_pktinfo>()];
            let at = offset_of!(libc::in6_pktinfo, ipi6_addr);
            p[at..at + 16].copy_from_slice(&a.octets());
            cmsg::write(&mut buf.0, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &p)
        }
    }
}

/// Send `msgs` (at most [`BATCH`]) on `fd` with one `sendmmsg`: how many were sent (the first
/// `k`), or the error of the first one when none was. A message with a source address is
/// sent from it (`IP_PKTINFO`/`IPV6_PKTINFO`: replies of a wildcard listener leave from the
/// address the client sent to; transparent flows send from the client's address).
pub(crate) fn send_batch(
    fd: RawFd,
    msgs: &[(&[u8], SocketAddr, Option<IpAddr>)],
) -> io::Result<usize> {
    let n = msgs.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero is
    // a valid value.
    let (mut names, mut iovs, mut hdrs): (
        [libc::sockaddr_storage; BATCH],
        [libc::iovec; BATCH],
        [libc::mmsghdr; BATCH],
    ) = unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
    // Control buffers only for batches that need one.
    let mut ctl: Option<[cmsg::Buf; BATCH]> = None;
    for (i, (data, to, src)) in msgs.iter().take(n).enumerate() {
        iovs[i] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let len = std_to_sockaddr(to, &mut names[i]);
        hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdrs[i].msg_hdr.msg_namelen = len;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        if let Some(src) = src {
            let buf = &mut ctl.get_or_insert([cmsg::Buf::default(); BATCH])[i];
            if let Some(used) = pktinfo_src(*src, to, buf) {
                hdrs[i].msg_hdr.msg_control = buf.0.as_mut_ptr().cast();
                hdrs[i].msg_hdr.msg_controllen = used;
            }
        }
    }
    // SAFETY: `n` headers, each pointing at its own live iovec (over a borrowed slice, only
    // read by the kernel), its own sockaddr_storage of the stated length and, for messages
    // with a source, its own control buffer; all outlive the call. A bad `fd` only fails.
    let rc =
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// A kernel socket address as a std one (`None` for other families).
pub(crate) fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
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

/// One entry of the error queue of `fd` (`MSG_ERRQUEUE`, needs `IP_RECVERR`/`IPV6_RECVERR`):
/// the original destination of the failed datagram and the error (`ee_errno`).
/// Err(WouldBlock) when the queue is empty.
pub(crate) fn recv_err(fd: RawFd) -> io::Result<(Option<SocketAddr>, u32)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let (mut name, mut msg): (libc::sockaddr_storage, libc::msghdr) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [cmsg::Buf::default(); 4];
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg with MSG_ERRQUEUE on a descriptor the caller keeps open; every pointer
    // in `msg` refers to a live local buffer of the stated size.
    let rc = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let addr = sockaddr_to_std(&name);
    // The four buffers are one contiguous, aligned control area.
    let bytes: Vec<u8> = control.iter().flat_map(|b| b.0).collect();
    let errno = cmsg::parse(&bytes, msg.msg_controllen)
        .filter(|c| {
            (c.level == libc::SOL_IP && c.kind == libc::IP_RECVERR)
                || (c.level == libc::SOL_IPV6 && c.kind == libc::IPV6_RECVERR)
        })
        .filter(|c| c.data.len() >= std::mem::size_of::<libc::sock_extended_err>())
        .find_map(|c| {
            cmsg::u32_at(
                c.data,
                std::mem::offset_of!(libc::sock_extended_err, ee_errno),
            )
        })
        .unwrap_or(0);
    Ok((addr, errno))
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
        let msgs: Vec<(&[u8], SocketAddr, Option<IpAddr>)> =
            vec![(b"one", to, None), (b"", to, None), (&big, to, None)];
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
    fn the_error_queue_names_the_unreachable_destination_and_the_errno() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        super::super::sockopt::set_int(s.as_raw_fd(), libc::SOL_IP, libc::IP_RECVERR, 1).unwrap();
        assert_eq!(
            recv_err(s.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        s.send_to(b"q", dead).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match recv_err(s.as_raw_fd()) {
                Ok((to, errno)) => {
                    assert_eq!(to, Some(dead));
                    assert_eq!(errno, libc::ECONNREFUSED as u32);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no ICMP error queued");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A dual-stack socket: an IPv4 client's destination is recorded (IP_PKTINFO) and the
    /// reply leaves from it, written as IPv4-mapped in IPV6_PKTINFO; an IPv6 client's too.
    #[test]
    fn dual_stack_destinations_are_recorded_and_replies_leave_from_them() {
        let rx = crate::proxy::sockets::bind_udp("[::]:0".parse().unwrap()).unwrap();
        enable_pktinfo(rx.as_raw_fd(), true).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx4.send_to(b"q", SocketAddr::from(([127, 0, 0, 5], port)))
            .unwrap();
        let has_v6 = std::net::UdpSocket::bind("[::1]:0").ok();
        if let Some(tx6) = &has_v6 {
            tx6.send_to(b"q", SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
                .unwrap();
        }
        let mut b = RecvBatch::with_destinations();
        let want = if has_v6.is_some() { 2 } else { 1 };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut got = Vec::new();
        while got.len() < want && std::time::Instant::now() < deadline {
            match b.recv(rx.as_raw_fd()) {
                Ok(n) => got.extend((0..n).map(|i| (b.get(i).unwrap().1.unwrap(), b.dst(i)))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), want, "{got:?}");
        // Recorded as the kernel reports it (IPv4-mapped on this socket).
        assert_eq!(
            got[0].1.map(|a| a.to_canonical()),
            Some(IpAddr::from([127, 0, 0, 5]))
        );
        if want == 2 {
            assert_eq!(got[1].1, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        }
        let msgs: Vec<(&[u8], SocketAddr, Option<IpAddr>)> = got
            .iter()
            .map(|&(from, dst)| (&b"r"[..], from, dst))
            .collect();
        assert_eq!(send_batch(rx.as_raw_fd(), &msgs).unwrap(), want);
        tx4.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 4];
        let (_, from) = tx4.recv_from(&mut buf).unwrap();
        assert_eq!(from.ip(), IpAddr::from([127, 0, 0, 5]));
        if let Some(tx6) = has_v6 {
            tx6.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let (_, from) = tx6.recv_from(&mut buf).unwrap();
            assert_eq!(from.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
    }

    #[test]
    fn ipv6_addresses_round_trip() {
        let a: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
        // SAFETY: zeroed sockaddr_storage is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        std_to_sockaddr(&a, &mut ss);
        assert_eq!(sockaddr_to_std(&ss), Some(a));
    }

    #[test]
    fn destinations_are_recorded_and_replies_leave_from_them() {
        let rx = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        enable_pktinfo(rx.as_raw_fd(), false).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for ip in [[127, 0, 0, 2], [127, 0, 0, 3]] {
            tx.send_to(b"q", SocketAddr::from((ip, port))).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut b = RecvBatch::with_destinations();
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 2);
        assert_eq!(b.dst(0), Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!(b.dst(1), Some(IpAddr::from([127, 0, 0, 3])));
        assert_eq!(b.dst(2), None);
        // Replies from each recorded address, and one with no preference.
        let to = tx.local_addr().unwrap();
        let msgs: Vec<(&[u8], SocketAddr, Option<IpAddr>)> =
            vec![(b"a", to, b.dst(0)), (b"b", to, b.dst(1)), (b"c", to, None)];
        assert_eq!(send_batch(rx.as_raw_fd(), &msgs).unwrap(), 3);
        tx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 8];
        let mut got = Vec::new();
        for _ in 0..3 {
            let (n, from) = tx.recv_from(&mut buf).unwrap();
            got.push((buf[..n].to_vec(), from.ip()));
        }
        assert_eq!(got[0], (b"a".to_vec(), IpAddr::from([127, 0, 0, 2])));
        assert_eq!(got[1], (b"b".to_vec(), IpAddr::from([127, 0, 0, 3])));
        assert_eq!(got[2], (b"c".to_vec(), IpAddr::from([127, 0, 0, 1])));
        // A plain batch records nothing.
        tx.send_to(b"q", SocketAddr::from(([127, 0, 0, 2], port)))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut plain = RecvBatch::new();
        assert_eq!(plain.recv(rx.as_raw_fd()).unwrap(), 1);
        assert_eq!(plain.dst(0), None);
    }
}
