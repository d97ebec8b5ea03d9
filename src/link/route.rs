//! Route lookups over rtnetlink, like `ip route get ADDR`.
//!
//! The UDP kernel fast path needs to know, for one flow, which interface the kernel would send
//! its packets out of and which local address it would put in them as the source. This module
//! asks the kernel directly: one `RTM_GETROUTE` request with `RTA_DST` on a `NETLINK_ROUTE`
//! socket, one `RTM_NEWROUTE` (or `NLMSG_ERROR`) reply.
//!
//! The messages are built and parsed with `netlink-packet-route` (the crate `rtnetlink`, and
//! so the lab, uses); [`encode_request`] and [`parse_reply`] are pure, so the wire format is
//! tested without a kernel, byte for byte against the layout of `<linux/rtnetlink.h>`;
//! [`route_get`] does the round trip through [`crate::sys::netlink`].
#![cfg(target_os = "linux")]

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, Parseable,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// What the kernel's routing table says about reaching one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Output interface index (RTA_OIF).
    pub oif: u32,
    /// Preferred source address (RTA_PREFSRC), when the kernel names one.
    pub prefsrc: Option<IpAddr>,
    /// Next hop (RTA_GATEWAY), when not on-link.
    pub gateway: Option<IpAddr>,
    /// rtm_type (RTN_UNICAST = 1, RTN_LOCAL = 2, ...).
    pub kind: u8,
}

/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32.
const NLMSG_HDRLEN: usize = 16;

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad rtnetlink route reply: {}", what.into()),
    )
}

/// Pure: builds the request bytes (nlmsghdr + rtmsg + RTA_DST) with sequence number `seq`.
///
/// The request asks for the route to the single address `dst` (`rtm_dst_len` 32 or 128),
/// with `NLM_F_REQUEST` only and port id 0 (the kernel fills it in).
pub fn encode_request(dst: IpAddr, seq: u32) -> Vec<u8> {
    let mut route = RouteMessage::default();
    let (family, len) = match dst {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    route.header.address_family = family;
    route.header.destination_prefix_length = len;
    route.header.table = RouteHeader::RT_TABLE_UNSPEC;
    route
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetRoute(route)),
    );
    msg.finalize();
    let mut out = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut out);
    out
}

/// An address attribute of a route of `family` as an IP address.
fn addr_attr(name: &str, family: AddressFamily, a: &RouteAddress) -> io::Result<IpAddr> {
    match (family, a) {
        (AddressFamily::Inet, RouteAddress::Inet(v4)) => Ok(IpAddr::V4(*v4)),
        (AddressFamily::Inet6, RouteAddress::Inet6(v6)) => Ok(IpAddr::V6(*v6)),
        (f, other) => Err(bad(format!("{name} {other:?} in a {f:?} route"))),
    }
}

/// The fields of one `RTM_NEWROUTE` message pen needs.
fn route_of(msg: &RouteMessage) -> io::Result<Route> {
    let family = msg.header.address_family;
    if !matches!(family, AddressFamily::Inet | AddressFamily::Inet6) {
        return Err(bad(format!("route of address family {family:?}")));
    }
    let mut oif = None;
    let mut prefsrc = None;
    let mut gateway = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(a) => prefsrc = Some(addr_attr("RTA_PREFSRC", family, a)?),
            RouteAttribute::Gateway(a) => gateway = Some(addr_attr("RTA_GATEWAY", family, a)?),
            _ => {}
        }
    }
    let oif = oif.ok_or_else(|| bad("route without an output interface (no RTA_OIF)"))?;
    Ok(Route {
        oif,
        prefsrc,
        gateway,
        kind: u8::from(msg.header.kind),
    })
}

/// Pure: parses the kernel's reply buffer (may hold one RTM_NEWROUTE or an NLMSG_ERROR); an
/// error names what was wrong.
///
/// An `NLMSG_ERROR` carrying a negative errno becomes [`io::Error::from_raw_os_error`] of that
/// errno (for instance `ENETUNREACH`); anything malformed, a sequence number other than `seq`,
/// or a reply without a route is an [`io::ErrorKind::InvalidData`] error. Never panics.
pub fn parse_reply(buf: &[u8], seq: u32) -> io::Result<Route> {
    let mut at = 0usize;
    while at < buf.len() {
        let rest = &buf[at..];
        let nl = NetlinkBuffer::new_checked(rest).map_err(|e| {
            bad(format!(
                "netlink message at offset {at} ({} bytes left): {e}",
                rest.len()
            ))
        })?;
        let len = nl.length() as usize;
        if nl.sequence_number() != seq {
            return Err(bad(format!(
                "reply has sequence number {}, expected {seq}",
                nl.sequence_number()
            )));
        }
        let msg = NetlinkMessage::<RouteNetlinkMessage>::parse(&NetlinkBuffer::new(&rest))
            .map_err(|e| bad(format!("netlink message at offset {at}: {e}")))?;
        match msg.payload {
            NetlinkPayload::Error(e) => {
                return Err(match e.code.map(|c| c.get()) {
                    None => bad("kernel acknowledged the request but sent no route"),
                    Some(c) => match c.checked_neg() {
                        Some(errno) if errno > 0 => io::Error::from_raw_os_error(errno),
                        _ => bad(format!("NLMSG_ERROR with error code {c}")),
                    },
                });
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => return route_of(&r),
            NetlinkPayload::Noop => {}
            NetlinkPayload::Done(_) => return Err(bad("NLMSG_DONE before any route")),
            _ => {
                return Err(bad(format!(
                    "unexpected netlink message type {}",
                    nl.message_type()
                )));
            }
        }
        at = match at.checked_add(len).and_then(|e| e.checked_add(3)) {
            Some(next) if len >= NLMSG_HDRLEN => next & !3,
            _ => break,
        };
    }
    Err(bad(if buf.is_empty() {
        "empty reply".to_string()
    } else {
        "reply holds no route".to_string()
    }))
}

/// Sequence numbers for requests; only need to differ between consecutive requests.
fn next_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(1);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Asks the kernel which interface and source address it would use to reach `dst`, like
/// `ip route get DST`.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is looked up as the IPv4 address it maps,
/// so the answer is then about IPv4. Waits at most one second for the reply. Errors name the
/// address: "no route to 10.9.9.9: Network is unreachable (os error 101)".
pub fn route_get(dst: IpAddr) -> io::Result<Route> {
    let dst = dst.to_canonical();
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {dst}: {e}"));
    let seq = next_seq();
    let req = encode_request(dst, seq);
    let reply = crate::sys::netlink::route_request(&req)
        .map_err(|e| ctx("cannot ask the kernel for the route to", e))?;
    parse_reply(&reply, seq).map_err(|e| ctx("no route to", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    fn nlmsg(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&1234u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn rta(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((RTA_HDRLEN + data.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn rtmsg(family: u8, kind: u8) -> Vec<u8> {
        let dst_len = if family == AF_INET { 32 } else { 128 };
        let mut r = vec![family, dst_len, 0, 0, 254, 2, 0, kind];
        r.extend_from_slice(&0u32.to_ne_bytes());
        r
    }

    fn v4_route_reply(seq: u32) -> Vec<u8> {
        let mut body = rtmsg(AF_INET, 1);
        body.extend(rta(RTA_DST, &[10, 9, 9, 9]));
        body.extend(rta(RTA_OIF, &7u32.to_ne_bytes()));
        body.extend(rta(RTA_PREFSRC, &[192, 168, 1, 10]));
        body.extend(rta(RTA_GATEWAY, &[192, 168, 1, 1]));
        body.extend(rta(15, &254u32.to_ne_bytes())); // RTA_TABLE, ignored
        nlmsg(RTM_NEWROUTE, seq, &body)
    }

    // Values from <linux/netlink.h> and <linux/rtnetlink.h>, to build replies by hand.
    const NLMSG_NOOP: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const RTM_NEWROUTE: u16 = 24;
    const RTM_GETROUTE: u16 = 26;
    const NLM_F_REQUEST: u16 = 1;
    const RTA_DST: u16 = 1;
    const RTA_OIF: u16 = 4;
    const RTA_GATEWAY: u16 = 5;
    const RTA_PREFSRC: u16 = 7;
    const AF_INET: u8 = libc::AF_INET as u8;
    const AF_INET6: u8 = libc::AF_INET6 as u8;
    const RTA_HDRLEN: usize = 4;
    use std::mem::size_of;
    use std::net::Ipv6Addr;

    fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
        let b = buf.get(at..at + 2)?;
        Some(u16::from_ne_bytes([b[0], b[1]]))
    }

    fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
        let b = buf.get(at..at + 4)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[test]
    fn constants_match_libc() {
        assert_eq!(NLMSG_NOOP, libc::NLMSG_NOOP as u16);
        assert_eq!(NLMSG_ERROR, libc::NLMSG_ERROR as u16);
        assert_eq!(NLMSG_DONE, libc::NLMSG_DONE as u16);
        assert_eq!(RTM_NEWROUTE, libc::RTM_NEWROUTE);
        assert_eq!(RTM_GETROUTE, libc::RTM_GETROUTE);
        assert_eq!(NLM_F_REQUEST, libc::NLM_F_REQUEST as u16);
        assert_eq!(RTA_DST, libc::RTA_DST);
        assert_eq!(RTA_OIF, libc::RTA_OIF);
        assert_eq!(RTA_GATEWAY, libc::RTA_GATEWAY);
        assert_eq!(RTA_PREFSRC, libc::RTA_PREFSRC);
        assert_eq!(NLMSG_HDRLEN, size_of::<libc::nlmsghdr>());
    }

    #[test]
    fn encode_request_v4_layout() {
        let req = encode_request(v4("10.9.9.9"), 0x0102_0304);
        assert_eq!(req.len(), 16 + 12 + 8);
        assert_eq!(u32_at(&req, 0), Some(36)); // nlmsg_len
        assert_eq!(u16_at(&req, 4), Some(26)); // RTM_GETROUTE
        assert_eq!(u16_at(&req, 6), Some(1)); // NLM_F_REQUEST only
        assert_eq!(u32_at(&req, 8), Some(0x0102_0304)); // seq
        assert_eq!(u32_at(&req, 12), Some(0)); // pid
        assert_eq!(req[16], libc::AF_INET as u8);
        assert_eq!(req[17], 32); // dst_len
        assert_eq!(&req[18..24], &[0; 6]);
        assert_eq!(u32_at(&req, 24), Some(0)); // rtm_flags
        assert_eq!(u16_at(&req, 28), Some(8)); // rta_len
        assert_eq!(u16_at(&req, 30), Some(1)); // RTA_DST
        assert_eq!(&req[32..36], &[10, 9, 9, 9]);
    }

    #[test]
    fn encode_request_v6_layout() {
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let req = encode_request(IpAddr::V6(dst), 7);
        assert_eq!(req.len(), 16 + 12 + 20);
        assert_eq!(u32_at(&req, 0), Some(48));
        assert_eq!(u16_at(&req, 4), Some(RTM_GETROUTE));
        assert_eq!(u16_at(&req, 6), Some(NLM_F_REQUEST));
        assert_eq!(u32_at(&req, 8), Some(7));
        assert_eq!(req[16], libc::AF_INET6 as u8);
        assert_eq!(req[17], 128);
        assert_eq!(u16_at(&req, 28), Some(20));
        assert_eq!(u16_at(&req, 30), Some(RTA_DST));
        assert_eq!(&req[32..48], &dst.octets());
    }

    #[test]
    fn parse_reply_v4_route_with_oif_prefsrc_gateway() {
        let r = parse_reply(&v4_route_reply(42), 42).unwrap();
        assert_eq!(
            r,
            Route {
                oif: 7,
                prefsrc: Some(v4("192.168.1.10")),
                gateway: Some(v4("192.168.1.1")),
                kind: 1,
            }
        );
    }

    #[test]
    fn parse_reply_v6_route_without_gateway() {
        let src: Ipv6Addr = "fd00::2".parse().unwrap();
        let mut body = rtmsg(AF_INET6, 1);
        body.extend(rta(RTA_OIF, &3u32.to_ne_bytes()));
        body.extend(rta(RTA_PREFSRC, &src.octets()));
        let r = parse_reply(&nlmsg(RTM_NEWROUTE, 5, &body), 5).unwrap();
        assert_eq!(
            r,
            Route {
                oif: 3,
                prefsrc: Some(v6("fd00::2")),
                gateway: None,
                kind: 1,
            }
        );
    }

    #[test]
    fn parse_reply_skips_noop_and_accepts_unpadded_last_attribute() {
        let mut body = rtmsg(AF_INET, 2);
        body.extend(rta(RTA_OIF, &1u32.to_ne_bytes()));
        // A 1-byte attribute, last, without its padding.
        body.extend_from_slice(&5u16.to_ne_bytes());
        body.extend_from_slice(&100u16.to_ne_bytes());
        body.push(9);
        let mut buf = nlmsg(NLMSG_NOOP, 9, &[]);
        let mut m = nlmsg(RTM_NEWROUTE, 9, &body);
        m.truncate(NLMSG_HDRLEN + body.len());
        buf.extend(m);
        let r = parse_reply(&buf, 9).unwrap();
        assert_eq!(r.oif, 1);
        assert_eq!(r.kind, 2);
        assert_eq!(r.prefsrc, None);
    }

    #[test]
    fn parse_reply_nlmsg_error_gives_the_errno() {
        let mut body = (-libc::ENETUNREACH).to_ne_bytes().to_vec();
        body.extend(encode_request(v4("10.9.9.9"), 3)); // the echoed request
        let e = parse_reply(&nlmsg(NLMSG_ERROR, 3, &body), 3).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH));

        // An ACK (error 0) is not a route.
        let e = parse_reply(&nlmsg(NLMSG_ERROR, 3, &0i32.to_ne_bytes()), 3).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // A positive code is nonsense.
        let e = parse_reply(&nlmsg(NLMSG_ERROR, 3, &5i32.to_ne_bytes()), 3).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // i32::MIN must not overflow on negation.
        let e = parse_reply(&nlmsg(NLMSG_ERROR, 3, &i32::MIN.to_ne_bytes()), 3).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Too short for the error code.
        let e = parse_reply(&nlmsg(NLMSG_ERROR, 3, &[]), 3).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn parse_reply_wrong_seq_is_an_error() {
        let e = parse_reply(&v4_route_reply(42), 43).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("sequence"), "{e}");
    }

    #[test]
    fn parse_reply_rejects_malformed_routes() {
        // No RTA_OIF.
        let body = rtmsg(AF_INET, 1);
        let e = parse_reply(&nlmsg(RTM_NEWROUTE, 1, &body), 1).unwrap_err();
        assert!(e.to_string().contains("RTA_OIF"), "{e}");
        // An IPv6 gateway in an IPv4 route.
        let mut body = rtmsg(AF_INET, 1);
        body.extend(rta(RTA_OIF, &2u32.to_ne_bytes()));
        body.extend(rta(RTA_GATEWAY, &[0; 16]));
        let e = parse_reply(&nlmsg(RTM_NEWROUTE, 1, &body), 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("IPv4 address"), "{e}");
        // Unknown family.
        let body = rtmsg(7, 1);
        assert!(parse_reply(&nlmsg(RTM_NEWROUTE, 1, &body), 1).is_err());
        // Attribute shorter than its header.
        let mut body = rtmsg(AF_INET, 1);
        body.extend_from_slice(&2u16.to_ne_bytes());
        body.extend_from_slice(&RTA_OIF.to_ne_bytes());
        assert!(parse_reply(&nlmsg(RTM_NEWROUTE, 1, &body), 1).is_err());
        // Unexpected type, DONE, empty.
        assert!(parse_reply(&nlmsg(RTM_GETROUTE, 1, &body), 1).is_err());
        assert!(parse_reply(&nlmsg(NLMSG_DONE, 1, &[0; 4]), 1).is_err());
        assert!(parse_reply(&[], 1).is_err());
        assert!(parse_reply(&nlmsg(NLMSG_NOOP, 1, &[]), 1).is_err());
    }

    #[test]
    fn parse_reply_truncated_never_panics() {
        let full = v4_route_reply(11);
        for n in 0..full.len() {
            // Cut anywhere before the end: header length no longer fits, always an error.
            assert!(parse_reply(&full[..n], 11).is_err(), "len {n}");
        }
        // Truncating the message and fixing up nlmsg_len must not panic either.
        for n in NLMSG_HDRLEN..full.len() {
            let mut m = full[..n].to_vec();
            m[..4].copy_from_slice(&(n as u32).to_ne_bytes());
            let _ = parse_reply(&m, 11);
        }
    }

    #[test]
    fn parse_reply_garbage_never_panics() {
        let mut x: u32 = 0x9e37_79b9;
        for len in 0..64usize {
            for fill in [0x00u8, 0xff, 0x04, 0x10] {
                let buf = vec![fill; len];
                let _ = parse_reply(&buf, 0);
                let _ = parse_reply(&buf, u32::from_ne_bytes([fill; 4]));
            }
            for _ in 0..200 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                let _ = parse_reply(&buf, 0);
                // Same bytes behind a plausible header: exercises the route parser.
                let mut framed = nlmsg(RTM_NEWROUTE, 0, &buf);
                let _ = parse_reply(&framed, 0);
                framed[NLMSG_HDRLEN..NLMSG_HDRLEN + len.min(2)].fill(AF_INET);
                let _ = parse_reply(&framed, 0);
                let _ = parse_reply(&nlmsg(NLMSG_ERROR, 0, &buf), 0);
            }
        }
    }

    fn lo_ifindex() -> u32 {
        std::fs::read_to_string("/sys/class/net/lo/ifindex")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn route_get_loopback_v4() {
        let r = route_get(v4("127.0.0.1")).unwrap();
        assert_eq!(r.oif, lo_ifindex());
        assert_eq!(r.kind, libc::RTN_LOCAL);
        assert_eq!(r.gateway, None);
        assert_eq!(r.prefsrc, Some(v4("127.0.0.1")));
    }

    #[test]
    fn route_get_loopback_v6() {
        let has_v6_lo = std::fs::read_to_string("/proc/net/if_inet6")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("00000000000000000000000000000001"))
            })
            .unwrap_or(false);
        if !has_v6_lo {
            eprintln!("skipping: ::1 is not configured");
            return;
        }
        let r = route_get(v6("::1")).unwrap();
        assert_eq!(r.oif, lo_ifindex());
        assert_eq!(r.kind, libc::RTN_LOCAL);
        assert_eq!(r.gateway, None);
    }

    #[test]
    fn route_get_mapped_v4_is_looked_up_as_v4() {
        let r = route_get(v6("::ffff:127.0.0.1")).unwrap();
        assert_eq!(r.oif, lo_ifindex());
        assert_eq!(r.kind, libc::RTN_LOCAL);
    }
}
