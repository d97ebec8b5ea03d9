//! Control messages (`cmsg(3)`) read and written as bytes, without the pointer-walking `CMSG_*`
//! macros: a received control buffer is parsed from the bytes the kernel filled, a control
//! message to send is written into a byte buffer. Payloads are decoded field by field.
//!
//! Layout (`<sys/socket.h>`): each message is a `struct cmsghdr` (`cmsg_len: size_t`,
//! `cmsg_level: int`, `cmsg_type: int`) padded to the alignment of `size_t`, then the payload;
//! `cmsg_len` counts header and payload, and the next message starts at the next aligned
//! offset.

use std::mem::size_of;

/// Alignment of control messages (`CMSG_ALIGN`): that of `size_t`.
const ALIGN: usize = size_of::<usize>();
/// `CMSG_ALIGN(sizeof(struct cmsghdr))`: where a message's payload starts.
const HDR: usize = align(size_of::<libc::cmsghdr>());

const fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// `CMSG_LEN(n)`: the `cmsg_len` of a message with an `n`-byte payload.
pub(crate) const fn len(n: usize) -> usize {
    HDR + n
}

/// `CMSG_SPACE(n)`: the room a message with an `n`-byte payload takes in a buffer.
pub(crate) const fn space(n: usize) -> usize {
    HDR + align(n)
}

/// A control buffer for a few messages, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct Buf(pub(crate) [u8; 64]);

impl Default for Buf {
    fn default() -> Self {
        Buf([0; 64])
    }
}

/// One control message: its level, type and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cmsg<'a> {
    pub(crate) level: libc::c_int,
    pub(crate) kind: libc::c_int,
    pub(crate) data: &'a [u8],
}

/// The control messages in the first `used` bytes of `buf` (the `msg_controllen` the kernel
/// returned). Stops at the first malformed header.
pub(crate) fn parse(buf: &[u8], used: usize) -> impl Iterator<Item = Cmsg<'_>> {
    let buf = &buf[..used.min(buf.len())];
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let hdr = buf.get(at..at.checked_add(HDR)?)?;
        let mut l = [0u8; size_of::<usize>()];
        l.copy_from_slice(&hdr[..size_of::<usize>()]);
        let cmsg_len = usize::from_ne_bytes(l);
        let int = |o: usize| -> Option<libc::c_int> {
            let b = hdr.get(o..o + size_of::<libc::c_int>())?;
            Some(libc::c_int::from_ne_bytes(b.try_into().ok()?))
        };
        let level = int(size_of::<usize>())?;
        let kind = int(size_of::<usize>() + size_of::<libc::c_int>())?;
        if cmsg_len < HDR {
            return None;
        }
        let data = buf.get(at + HDR..at.checked_add(cmsg_len)?)?;
        at = at.checked_add(align(cmsg_len))?;
        Some(Cmsg { level, kind, data })
    })
}

/// Writes one control message (`level`, `kind`, `payload`) at the start of `buf`; returns
/// the `msg_controllen` to pass ([`space`] of the payload), or `None` when it does not fit.
pub(crate) fn write(
    buf: &mut [u8],
    level: libc::c_int,
    kind: libc::c_int,
    payload: &[u8],
) -> Option<usize> {
    let total = space(payload.len());
    let out = buf.get_mut(..total)?;
    out.fill(0);
    let w = size_of::<usize>();
    let i = size_of::<libc::c_int>();
    out[..w].copy_from_slice(&len(payload.len()).to_ne_bytes());
    out[w..w + i].copy_from_slice(&level.to_ne_bytes());
    out[w + i..w + 2 * i].copy_from_slice(&kind.to_ne_bytes());
    out[HDR..HDR + payload.len()].copy_from_slice(payload);
    Some(total)
}

/// The native-endian `u32` at `at` in `data`.
pub(crate) fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_the_libc_macros() {
        for n in [0usize, 1, 4, 12, 16, 20, 32] {
            // SAFETY: CMSG_LEN and CMSG_SPACE are pure arithmetic on their argument.
            let (l, s) = unsafe { (libc::CMSG_LEN(n as u32), libc::CMSG_SPACE(n as u32)) };
            assert_eq!(len(n), l as usize, "CMSG_LEN({n})");
            assert_eq!(space(n), s as usize, "CMSG_SPACE({n})");
        }
    }

    #[test]
    fn a_written_message_is_what_the_libc_macros_read() {
        let mut b = Buf::default();
        let payload = [1u8, 2, 3, 4, 5];
        let used = write(&mut b.0, libc::IPPROTO_IP, libc::IP_PKTINFO, &payload).unwrap();
        // SAFETY: a msghdr pointing at our 64-byte, 8-aligned buffer, walked with the libc
        // macros within msg_controllen; the payload is read inside the buffer.
        let (level, kind, data) = unsafe {
            let mut m: libc::msghdr = std::mem::zeroed();
            m.msg_control = b.0.as_mut_ptr().cast();
            m.msg_controllen = used;
            let c = libc::CMSG_FIRSTHDR(&m);
            assert!(!c.is_null());
            let d = std::slice::from_raw_parts(libc::CMSG_DATA(c), (*c).cmsg_len as usize - len(0));
            ((*c).cmsg_level, (*c).cmsg_type, d.to_vec())
        };
        assert_eq!(
            (level, kind, &data[..]),
            (libc::IPPROTO_IP, libc::IP_PKTINFO, &payload[..])
        );
        let got: Vec<Cmsg<'_>> = parse(&b.0, used).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, &payload);
    }

    #[test]
    fn two_messages_parse_and_garbage_stops_the_walk() {
        let mut b = [0u8; 128];
        let a = write(&mut b, 1, 2, &[9; 5]).unwrap();
        let c = write(&mut b[a..], 3, 4, &[7; 16]).unwrap();
        let got: Vec<(i32, i32, usize)> = parse(&b, a + c)
            .map(|m| (m.level, m.kind, m.data.len()))
            .collect();
        assert_eq!(got, vec![(1, 2, 5), (3, 4, 16)]);
        // Lengths that lie: shorter than a header, longer than the buffer.
        let mut bad = b;
        bad[..8].copy_from_slice(&3usize.to_ne_bytes());
        assert_eq!(parse(&bad, a + c).count(), 0);
        bad[..8].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(parse(&bad, a + c).count(), 0);
        assert_eq!(parse(&b, 5).count(), 0);
        assert_eq!(parse(&b, 1000).count(), 2);
        assert!(write(&mut [0u8; 8], 1, 2, &[0; 4]).is_none());
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse(&junk, n).count();
        }
    }
}
