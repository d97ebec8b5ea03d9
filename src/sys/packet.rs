//! `AF_PACKET` raw sockets: open and bind one to an interface, receive frames in batches with
//! `recvmmsg` (with each frame's `PACKET_AUXDATA`), send frames with `sendmmsg`.
//!
//! - The socket is bound with `ETH_P_ALL`; the kernel's own copies of frames we send are
//!   filtered out with `PACKET_IGNORE_OUTGOING` where the kernel has it, and reported per frame
//!   ([`RxInfo::outgoing`]) where it does not.
//! - `PACKET_AUXDATA` tells per frame whether its L4 checksum is only partial
//!   (`TP_STATUS_CSUMNOTREADY`) and whether the kernel stripped a VLAN tag.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cmsg;

/// Frames per `recvmmsg`/`sendmmsg`.
pub(crate) const BATCH: usize = 64;

const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;

/// What the kernel said about one received frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RxInfo {
    /// Bytes written to the buffer (at most its length).
    pub(crate) len: usize,
    /// Our own frame on its way out (`PACKET_OUTGOING`).
    pub(crate) outgoing: bool,
    /// The L4 checksum is only partial (`TP_STATUS_CSUMNOTREADY`).
    pub(crate) csum_partial: bool,
    /// The kernel stripped a VLAN tag (`TP_STATUS_VLAN_VALID`).
    pub(crate) vlan: bool,
    /// The frame was longer than the buffer (`MSG_TRUNC`).
    pub(crate) truncated: bool,
}

/// A raw `AF_PACKET` socket bound to one interface.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    mac: [u8; 6],
}

fn os_err(what: &str, name: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what} on {name}: {e}"))
}

impl PacketSocket {
    /// Opens a raw socket on `ifname` (needs CAP_NET_RAW) in the calling thread's network
    /// namespace, with `PACKET_AUXDATA` on, and reads the interface's Ethernet address.
    pub(crate) fn open(ifname: &str) -> io::Result<PacketSocket> {
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
        // SAFETY: plain socket(2) call; the result is checked and owned at once below.
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
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: bind reads a sockaddr_ll of exactly the size we pass.
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
        super::sockopt::set_int(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot enable PACKET_AUXDATA on {ifname}: {e}"),
                )
            })?;
        // Older kernels lack it; their outgoing copies are flagged per frame instead.
        let _ = super::sockopt::set_int(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            1,
        );
        // The bound address carries the interface's hardware address.
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: getsockname writes at most `len` bytes into `addr`, which we own.
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
        Ok(PacketSocket { fd, ifindex, mac })
    }

    pub(crate) fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub(crate) fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// One non-blocking `recvmmsg` into `bufs` (at most [`BATCH`] of them); frame `i` is
    /// described by `info[i]`. Returns how many frames arrived; Err(WouldBlock) when none
    /// was queued.
    pub(crate) fn recv(&self, bufs: &mut [Box<[u8]>], info: &mut [RxInfo]) -> io::Result<usize> {
        let n = bufs.len().min(info.len()).min(BATCH);
        // SAFETY: iovec (and below, sockaddr_ll and mmsghdr) are plain C structs
        // for which all-zero is a valid value.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut names: [libc::sockaddr_ll; BATCH] = unsafe { std::mem::zeroed() };
        let mut cmsgs = [cmsg::Buf::default(); BATCH];
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, buf) in bufs.iter_mut().take(n).enumerate() {
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
        // SAFETY: the first `n` mmsghdrs point at buffers (frames, names, control buffers)
        // that live until the call returns, each with its stated length.
        let rc = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = (rc as usize).min(n);
        for i in 0..got {
            let m = &msgs[i];
            let mut r = RxInfo {
                len: (m.msg_len as usize).min(bufs[i].len()),
                outgoing: names[i].sll_pkttype == libc::PACKET_OUTGOING,
                truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                ..RxInfo::default()
            };
            if let Some(status) = auxdata_status(&cmsgs[i].0, m.msg_hdr.msg_controllen) {
                r.csum_partial = status & libc::TP_STATUS_CSUMNOTREADY != 0;
                r.vlan = status & libc::TP_STATUS_VLAN_VALID != 0;
            }
            info[i] = r;
        }
        Ok(got)
    }
}

/// `tp_status` of the `PACKET_AUXDATA` control message in a received message's control
/// buffer (`used` bytes of it filled), if any.
fn auxdata_status(control: &[u8], used: usize) -> Option<u32> {
    cmsg::parse(control, used)
        .filter(|c| c.level == libc::SOL_PACKET && c.kind == libc::PACKET_AUXDATA)
        .filter(|c| c.data.len() >= size_of::<libc::tpacket_auxdata>())
        .find_map(|c| {
            cmsg::u32_at(
                c.data,
                std::mem::offset_of!(libc::tpacket_auxdata, tp_status),
            )
        })
}

/// One `sendmmsg` of up to [`BATCH`] of `frames` on the packet socket `fd`: how many were sent
/// (the first `k`), or the error of the first one.
pub(crate) fn send(fd: RawFd, frames: &[&[u8]]) -> io::Result<usize> {
    let n = frames.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is a valid value.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, f) in frames.iter().take(n).enumerate() {
        iovs[i].iov_base = f.as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = f.len();
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` mmsghdrs point at iovecs over borrowed frames, which outlive the
    // call and are only read by the kernel.
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_names_the_interface_it_cannot_find() {
        let e = PacketSocket::open("nope-pen0").unwrap_err();
        assert!(e.to_string().contains("nope-pen0"), "{e}");
        let e = PacketSocket::open("a\0b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn sending_nothing_sends_nothing_and_a_bad_descriptor_is_an_error() {
        assert_eq!(send(-1, &[]).unwrap(), 0);
        assert_eq!(
            send(-1, &[b"x"]).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }

    #[test]
    fn loopback_frames_round_trip_with_their_auxdata() {
        crate::sys::in_fresh_netns("packet", frames_round_trip);
    }

    fn frames_round_trip() {
        // Loopback has an all-zero 6-byte address and is in every namespace.
        let rx = PacketSocket::open("lo").unwrap();
        let tx = PacketSocket::open("lo").unwrap();
        assert_eq!(rx.mac(), [0; 6]);
        assert!(rx.ifindex() > 0);
        let mut frame = vec![0u8; 60];
        frame[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        frame[14..24].copy_from_slice(b"pen-sys-lo");
        assert_eq!(send(tx.raw_fd(), &[&frame]).unwrap(), 1);
        let mut bufs: Vec<Box<[u8]>> = (0..4).map(|_| vec![0u8; 128].into_boxed_slice()).collect();
        let mut info = [RxInfo::default(); 4];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let _ =
                super::super::sockopt::poll_in(rx.raw_fd(), std::time::Duration::from_millis(50));
            let n = match rx.recv(&mut bufs, &mut info) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            };
            for i in 0..n {
                if bufs[i][..info[i].len].get(14..24) == Some(b"pen-sys-lo") && !info[i].outgoing {
                    assert_eq!(info[i].len, 60);
                    assert!(!info[i].vlan && !info[i].truncated, "{:?}", info[i]);
                    return;
                }
            }
        }
        panic!("the frame sent on lo did not come back");
    }
}
