//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2). Pure.
//!
//! A balancer in front of a server prepends one header to the TCP stream that names the
//! client's address and the address the client connected to, so the server learns them
//! without transparent proxying.
//!
//! - Sending: [`encode`] builds the header pen writes first on a backend connection
//!   (`proxy_protocol v1|v2`, `server N proxy v1|v2|off`): version 1 is the text line
//!   `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` (`TCP6`, or `PROXY UNKNOWN\r\n` when the
//!   client has no IP address), version 2 the binary form (12-byte signature, version and
//!   command, family and protocol, length, addresses; no TLVs).
//! - Accepting: [`parse`] is incremental. Given the bytes read so far from a client of an
//!   `accept_proxy` listener it answers [`Parsed::Incomplete`] (read more),
//!   [`Parsed::Header`] (the addresses and the header's length, the bytes after it are the
//!   client's data) or [`Parsed::Error`] with the [`Reason`] the connection is closed and
//!   counted for. It detects the version from the first byte, bounds the header
//!   ([`V1_MAX`], [`V2_MAX`]), checks every field (signature, version, command, family,
//!   protocol, lengths, CRLF, decimal ports without sign or leading zero, addresses of the
//!   family announced), walks the v2 TLVs without interpreting them, and never panics (the
//!   unit tests feed it random and truncated input).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest v1 header, CRLF included (the spec's 107 bytes).
pub const V1_MAX: usize = 107;

/// The longest v2 header pen accepts, 16-byte fixed part included. The spec allows up to
/// 65 551; pen reads the header into a bounded buffer, and real senders (HAProxy, AWS, GCP)
/// stay far below this even with their TLVs.
pub const V2_MAX: usize = 4096;

/// The 12-byte signature that starts a v2 header.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

const V1_PREFIX: &[u8] = b"PROXY ";

/// A version of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// The penctl word (`v1`, `v2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which headers an accepting listener takes (`accept_proxy v1|v2|any`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accept {
    V1,
    V2,
    Any,
}

impl Accept {
    /// The penctl word.
    pub fn as_str(self) -> &'static str {
        match self {
            Accept::V1 => "v1",
            Accept::V2 => "v2",
            Accept::Any => "any",
        }
    }

    fn takes(self, v: Version) -> bool {
        matches!(
            (self, v),
            (Accept::Any, _) | (Accept::V1, Version::V1) | (Accept::V2, Version::V2)
        )
    }
}

impl fmt::Display for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A complete, valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// The client's address; `None` for `PROXY UNKNOWN`, a v2 `LOCAL` command (the sender's
    /// own connection, e.g. its health check) and the families pen cannot use (`AF_UNSPEC`,
    /// `AF_UNIX`): pen then uses the connection's own peer address.
    pub src: Option<SocketAddr>,
    /// The address the client connected to (`None` as for `src`).
    pub dst: Option<SocketAddr>,
    /// Bytes the header takes at the start of the stream (the client's data follows).
    pub len: usize,
}

/// Why a connection's header was refused: the label of the counter
/// (`pen_proxy_header_errors_total{reason=...}`). [`parse`] gives the first four; the shell
/// adds `Truncated` and `Timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The stream does not start with a PROXY header at all (missing header, other data).
    Missing,
    /// A header of the version this listener does not accept.
    Version,
    /// A PROXY header with a bad field (command, family, address, port, length, CRLF, TLV).
    Malformed,
    /// Longer than [`V1_MAX`] / [`V2_MAX`] without ending.
    TooLong,
    /// The client closed (or the read failed) before the header was complete.
    Truncated,
    /// The header was not complete within the `accept_proxy` timeout.
    Timeout,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Missing,
        Reason::Version,
        Reason::Malformed,
        Reason::TooLong,
        Reason::Truncated,
        Reason::Timeout,
    ];

    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Version => "version",
            Reason::Malformed => "malformed",
            Reason::TooLong => "too_long",
            Reason::Truncated => "truncated",
            Reason::Timeout => "timeout",
        }
    }

    /// Position in [`Reason::ALL`] (for counter arrays).
    pub fn index(self) -> usize {
        match self {
            Reason::Missing => 0,
            Reason::Version => 1,
            Reason::Malformed => 2,
            Reason::TooLong => 3,
            Reason::Truncated => 4,
            Reason::Timeout => 5,
        }
    }
}

/// Headers accepted and refused (by reason) on the `accept_proxy` listener: what the text
/// stats, the status page, `accept_proxy` and Prometheus show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderCounts {
    pub accepted: u64,
    /// By [`Reason::index`].
    pub errors: [u64; 6],
}

impl HeaderCounts {
    pub fn refused(&mut self, r: Reason) {
        if let Some(n) = self.errors.get_mut(r.index()) {
            *n = n.saturating_add(1);
        }
    }

    pub fn errors_of(&self, r: Reason) -> u64 {
        self.errors.get(r.index()).copied().unwrap_or(0)
    }

    /// `accepted N, refused: missing N, version N, ...` (one line, no newline).
    pub fn line(&self) -> String {
        let by: Vec<String> = Reason::ALL
            .iter()
            .map(|r| format!("{} {}", r.as_str(), self.errors_of(*r)))
            .collect();
        format!("accepted {}, refused: {}", self.accepted, by.join(", "))
    }
}

/// A refused header: the counted reason and a detail for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    pub reason: Reason,
    pub detail: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.detail, self.reason.as_str())
    }
}

/// What the bytes read so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A valid prefix of a header: read more (at most up to the bound).
    Incomplete,
    Header(Header),
    Error(ParseError),
}

fn err(reason: Reason, detail: &'static str) -> Parsed {
    Parsed::Error(ParseError { reason, detail })
}

fn malformed(detail: &'static str) -> Parsed {
    err(Reason::Malformed, detail)
}

/// Parses the start of a stream as a PROXY header of a version `accept` takes.
pub fn parse(buf: &[u8], accept: Accept) -> Parsed {
    let version = match buf.first() {
        None => return Parsed::Incomplete,
        Some(b'P') => Version::V1,
        Some(0x0D) => Version::V2,
        Some(_) => return err(Reason::Missing, "no PROXY header"),
    };
    let (sig, what): (&[u8], _) = match version {
        Version::V1 => (V1_PREFIX, "no PROXY header (expected \"PROXY \")"),
        Version::V2 => (&V2_SIGNATURE, "no PROXY header (bad v2 signature)"),
    };
    let n = buf.len().min(sig.len());
    if buf.get(..n) != sig.get(..n) {
        return err(Reason::Missing, what);
    }
    if !accept.takes(version) {
        return err(
            Reason::Version,
            match version {
                Version::V1 => "a v1 header where only v2 is accepted",
                Version::V2 => "a v2 header where only v1 is accepted",
            },
        );
    }
    match version {
        Version::V1 => parse_v1(buf),
        Version::V2 => parse_v2(buf),
    }
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = buf.get(..buf.len().min(V1_MAX)).unwrap_or(buf);
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            err(Reason::TooLong, "v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    let Some(line) = lf
        .checked_sub(1)
        .and_then(|cr| (window.get(cr) == Some(&b'\r')).then(|| window.get(..cr)))
        .flatten()
    else {
        return malformed("v1 header ends with LF without CR");
    };
    let len = lf + 1;
    let Ok(text) = std::str::from_utf8(line) else {
        return malformed("v1 header is not ASCII");
    };
    if !text.is_ascii() || text.contains('\r') {
        return malformed("v1 header is not ASCII");
    }
    let rest = text.get(V1_PREFIX.len()..).unwrap_or("");
    let mut fields = rest.split(' ');
    let proto = fields.next().unwrap_or("");
    let family_v6 = match proto {
        // The rest of the line is ignored (the spec).
        "UNKNOWN" => {
            return Parsed::Header(Header {
                version: Version::V1,
                src: None,
                dst: None,
                len,
            });
        }
        "TCP4" => false,
        "TCP6" => true,
        _ => return malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let f: Vec<&str> = fields.collect();
    let [sa, da, sp, dp] = f.as_slice() else {
        return malformed("v1 header needs four fields separated by single spaces");
    };
    let (Some(sa), Some(da)) = (v1_addr(sa, family_v6), v1_addr(da, family_v6)) else {
        return malformed("v1 address is not an address of the family announced");
    };
    let (Some(sp), Some(dp)) = (v1_port(sp), v1_port(dp)) else {
        return malformed("v1 port is not a decimal number 0-65535 without leading zero");
    };
    Parsed::Header(Header {
        version: Version::V1,
        src: Some(SocketAddr::new(sa, sp)),
        dst: Some(SocketAddr::new(da, dp)),
        len,
    })
}

fn v1_addr(s: &str, v6: bool) -> Option<IpAddr> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
    {
        return None;
    }
    if v6 {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        // Rust's parser refuses leading zeros in an octet ("010.0.0.1") as the spec wants.
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

fn v1_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let Some(fixed) = buf.get(..16) else {
        // The signature matched so far; the other fixed bytes are checked below once here.
        return match (buf.get(12), buf.get(13)) {
            (Some(&vc), _) if vc >> 4 != 2 => malformed("v2 version is not 2"),
            (Some(&vc), _) if vc & 0x0F > 1 => malformed("v2 command is not LOCAL or PROXY"),
            (_, Some(&fp)) if !fam_proto_ok(fp) => {
                malformed("v2 family or protocol is not one the spec defines")
            }
            _ => Parsed::Incomplete,
        };
    };
    let (vc, fp) = (
        fixed.get(12).copied().unwrap_or(0),
        fixed.get(13).copied().unwrap_or(0),
    );
    if vc >> 4 != 2 {
        return malformed("v2 version is not 2");
    }
    let local = match vc & 0x0F {
        0 => true,
        1 => false,
        _ => return malformed("v2 command is not LOCAL or PROXY"),
    };
    if !fam_proto_ok(fp) {
        return malformed("v2 family or protocol is not one the spec defines");
    }
    let body_len = usize::from(u16::from_be_bytes([
        fixed.get(14).copied().unwrap_or(0),
        fixed.get(15).copied().unwrap_or(0),
    ]));
    let len = 16 + body_len;
    if len > V2_MAX {
        return err(
            Reason::TooLong,
            "v2 header longer than pen accepts (4096 bytes)",
        );
    }
    let (fam, proto) = (fp >> 4, fp & 0x0F);
    let addr_len = match fam {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body_len < addr_len {
        return malformed("v2 length is shorter than the addresses of its family");
    }
    if proto == 2 && !local {
        return malformed("v2 header announces a datagram (UDP) connection on a TCP listener");
    }
    let Some(body) = buf.get(16..len) else {
        return Parsed::Incomplete;
    };
    if !tlvs_ok(body.get(addr_len..).unwrap_or(&[])) {
        return malformed("v2 TLV runs past the header's length");
    }
    let addrs = if local || proto == 0 {
        None
    } else {
        v2_addrs(fam, body)
    };
    Parsed::Header(Header {
        version: Version::V2,
        src: addrs.map(|a| a.0),
        dst: addrs.map(|a| a.1),
        len,
    })
}

/// Family 0-3 (UNSPEC, INET, INET6, UNIX), protocol 0-2 (UNSPEC, STREAM, DGRAM).
fn fam_proto_ok(fp: u8) -> bool {
    fp >> 4 <= 3 && fp & 0x0F <= 2
}

fn v2_addrs(fam: u8, body: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]))
    };
    match fam {
        1 => {
            let a: [u8; 4] = body.get(0..4)?.try_into().ok()?;
            let b: [u8; 4] = body.get(4..8)?.try_into().ok()?;
            Some((
                SocketAddr::new(IpAddr::from(a), port(8)?),
                SocketAddr::new(IpAddr::from(b), port(10)?),
            ))
        }
        2 => {
            let a: [u8; 16] = body.get(0..16)?.try_into().ok()?;
            let b: [u8; 16] = body.get(16..32)?.try_into().ok()?;
            Some((
                SocketAddr::new(IpAddr::from(a), port(32)?),
                SocketAddr::new(IpAddr::from(b), port(34)?),
            ))
        }
        // AF_UNSPEC and AF_UNIX: no IP address to use.
        _ => None,
    }
}

/// Each TLV (type, 2-byte length, value) fits in what is left.
fn tlvs_ok(mut rest: &[u8]) -> bool {
    while !rest.is_empty() {
        let (Some(&hi), Some(&lo)) = (rest.get(1), rest.get(2)) else {
            return false;
        };
        let end = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        match rest.get(end..) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    true
}

/// Both addresses in one family: IPv4-mapped IPv6 addresses as IPv4 when both are, an IPv4
/// address as IPv4-mapped IPv6 beside an IPv6 one.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v4 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    match (v4(src), v4(dst)) {
        (Some(s), Some(d)) => (
            SocketAddr::new(IpAddr::V4(s), src.port()),
            SocketAddr::new(IpAddr::V4(d), dst.port()),
        ),
        _ => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
                IpAddr::V6(_) => a,
            };
            (v6(src), v6(dst))
        }
    }
}

/// The header announcing a connection from `src` to `dst`; `None` (a client without an IP
/// address, e.g. on a Unix socket listener) gives `PROXY UNKNOWN` / a v2 header of family
/// `AF_UNSPEC`.
pub fn encode(version: Version, addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let addrs = addrs.map(|(s, d)| same_family(s, d));
    match version {
        Version::V1 => match addrs {
            None => b"PROXY UNKNOWN\r\n".to_vec(),
            Some((s, d)) => {
                let proto = if s.is_ipv4() { "TCP4" } else { "TCP6" };
                format!(
                    "PROXY {proto} {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                )
                .into_bytes()
            }
        },
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.push(0x21); // version 2, PROXY
            let mut body = Vec::with_capacity(36);
            let fam = match addrs {
                None => 0x00,
                Some((s, d)) => {
                    match (s.ip(), d.ip()) {
                        (IpAddr::V4(a), IpAddr::V4(b)) => {
                            body.extend_from_slice(&a.octets());
                            body.extend_from_slice(&b.octets());
                        }
                        (a, b) => {
                            body.extend_from_slice(&v6_octets(a));
                            body.extend_from_slice(&v6_octets(b));
                        }
                    }
                    body.extend_from_slice(&s.port().to_be_bytes());
                    body.extend_from_slice(&d.port().to_be_bytes());
                    if s.is_ipv4() { 0x11 } else { 0x21 }
                }
            };
            out.push(fam);
            // At most 36 bytes: always fits.
            let n = u16::try_from(body.len()).unwrap_or(0);
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(&body);
            out
        }
    }
}

/// The header of a connection pen makes on its own behalf (a health check's probe): v2's
/// `LOCAL` command, v1's `PROXY UNKNOWN` (what HAProxy's `check-send-proxy` sends); the
/// server keeps the connection's own addresses.
pub fn encode_local(version: Version) -> Vec<u8> {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.extend_from_slice(&[0x20, 0x00, 0, 0]);
            out
        }
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::XorShift;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn header(buf: &[u8], accept: Accept) -> Header {
        match parse(buf, accept) {
            Parsed::Header(h) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn reason(buf: &[u8], accept: Accept) -> Reason {
        match parse(buf, accept) {
            Parsed::Error(e) => e.reason,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn v1_tcp4_is_encoded_as_the_spec_shows_and_parses_back() {
        let (src, dst) = (sa("192.0.2.7:56324"), sa("10.0.0.1:443"));
        let b = encode(Version::V1, Some((src, dst)));
        assert_eq!(b, b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n");
        let mut stream = b.clone();
        stream.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        let h = header(&stream, Accept::Any);
        assert_eq!(
            (h.version, h.src, h.dst, h.len),
            (Version::V1, Some(src), Some(dst), b.len())
        );
    }

    #[test]
    fn v1_tcp6_and_mixed_families_and_unknown() {
        let b = encode(Version::V1, Some((sa("[2001:db8::1]:1"), sa("[::1]:2"))));
        assert_eq!(b, b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n");
        // An IPv4 client of an IPv6 listener address: both as IPv6.
        let b = encode(
            Version::V1,
            Some((sa("192.0.2.1:5"), sa("[2001:db8::2]:6"))),
        );
        assert_eq!(b, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 5 6\r\n");
        // Both mapped: both IPv4.
        let b = encode(
            Version::V1,
            Some((sa("[::ffff:192.0.2.1]:5"), sa("[::ffff:10.0.0.1]:6"))),
        );
        assert_eq!(b, b"PROXY TCP4 192.0.2.1 10.0.0.1 5 6\r\n");
        assert_eq!(encode(Version::V1, None), b"PROXY UNKNOWN\r\n");
        let h = header(
            b"PROXY UNKNOWN ffff:f...f ffff:f...f 65535 65535\r\nx",
            Accept::V1,
        );
        assert_eq!((h.src, h.len), (None, 49));
    }

    #[test]
    fn v2_is_encoded_byte_for_byte_and_parses_back() {
        let b = encode(
            Version::V2,
            Some((sa("192.0.2.7:56324"), sa("10.0.0.1:443"))),
        );
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1, 0xDC, 0x04, 1, 0xBB,
        ]);
        assert_eq!(b, want);
        let h = header(&b, Accept::V2);
        assert_eq!(h.src, Some(sa("192.0.2.7:56324")));
        assert_eq!(h.dst, Some(sa("10.0.0.1:443")));
        assert_eq!(h.len, 28);
        let b6 = encode(Version::V2, Some((sa("[2001:db8::1]:1"), sa("[::1]:2"))));
        assert_eq!(b6.len(), 16 + 36);
        assert_eq!((b6[13], b6[15]), (0x21, 36));
        let h = header(&b6, Accept::Any);
        assert_eq!(h.src, Some(sa("[2001:db8::1]:1")));
        let unspec = encode(Version::V2, None);
        assert_eq!(unspec.len(), 16);
        assert_eq!(header(&unspec, Accept::Any).src, None);
    }

    #[test]
    fn v2_local_unspec_unix_and_tlvs_are_skipped() {
        let mut b = encode(Version::V2, Some((sa("192.0.2.7:1"), sa("10.0.0.1:2"))));
        // LOCAL: addresses ignored.
        b[12] = 0x20;
        assert_eq!(header(&b, Accept::Any).src, None);
        b[12] = 0x21;
        // TLVs after the addresses: a NOOP (type 4) of 3 bytes, an ALPN of 2.
        let tlvs = [4u8, 0, 3, 0, 0, 0, 1, 0, 2, b'h', b'2'];
        b[15] = 12 + tlvs.len() as u8;
        b.extend_from_slice(&tlvs);
        b.extend_from_slice(b"data");
        let h = header(&b, Accept::Any);
        assert_eq!((h.src, h.len), (Some(sa("192.0.2.7:1")), 28 + tlvs.len()));
        // A TLV whose length runs past the header.
        let mut bad = b.clone();
        bad[28 + 2] = 9;
        assert_eq!(reason(&bad, Accept::Any), Reason::Malformed);
        // AF_UNIX: 216 bytes of addresses, no IP address.
        let mut u = V2_SIGNATURE.to_vec();
        u.extend_from_slice(&[0x21, 0x31, 0, 216]);
        u.extend_from_slice(&[0u8; 216]);
        assert_eq!(header(&u, Accept::V2).src, None);
    }

    #[test]
    fn local_headers_parse_without_addresses() {
        for v in [Version::V1, Version::V2] {
            let b = encode_local(v);
            let h = header(&b, Accept::Any);
            assert_eq!((h.version, h.src, h.len), (v, None, b.len()));
        }
        assert_eq!(encode_local(Version::V2)[12], 0x20);
    }

    #[test]
    fn v1_refuses_every_bad_field() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2\r\r\n",
            b"PROXY TCP5 192.0.2.1 10.0.0.1 1 2\r\n",
            b"PROXY tcp4 192.0.2.1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.1  10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2 \r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 +1 2\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 -1 2\r\n",
            b"PROXY TCP4 192.0.2.01 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 ::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2\0\r\n",
            b"PROXY TCP4 x192.0.2.1 10.0.0.1 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4\r\n",
            b"PROXY TCP4 \xff 10.0.0.1 1 2\r\n",
        ];
        for b in bad {
            assert_eq!(
                reason(b, Accept::Any),
                Reason::Malformed,
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn v1_is_bounded_to_107_bytes() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX - 2, b'a');
        long.extend_from_slice(b"\r\n");
        assert_eq!(header(&long, Accept::Any).len, V1_MAX);
        let mut too = b"PROXY UNKNOWN ".to_vec();
        too.resize(V1_MAX, b'a');
        assert_eq!(parse(&too[..V1_MAX - 1], Accept::Any), Parsed::Incomplete);
        assert_eq!(reason(&too, Accept::Any), Reason::TooLong);
        too.extend_from_slice(b"\r\n");
        assert_eq!(reason(&too, Accept::Any), Reason::TooLong);
    }

    #[test]
    fn v2_refuses_bad_fixed_fields_and_lengths() {
        let good = encode(Version::V2, Some((sa("192.0.2.7:1"), sa("10.0.0.1:2"))));
        let with = |at: usize, v: u8| {
            let mut b = good.clone();
            b[at] = v;
            b
        };
        for (at, v, what) in [
            (12, 0x11, "version 1"),
            (12, 0x22, "command 2"),
            (13, 0x41, "family 4"),
            (13, 0x13, "protocol 3"),
            (13, 0x12, "UDP"),
        ] {
            assert_eq!(
                reason(&with(at, v), Accept::Any),
                Reason::Malformed,
                "{what}"
            );
        }
        // Length shorter than the INET addresses.
        assert_eq!(reason(&with(15, 8), Accept::Any), Reason::Malformed);
        // Length longer than what came: incomplete until the bound.
        assert_eq!(parse(&with(15, 40), Accept::Any), Parsed::Incomplete);
        assert_eq!(reason(&with(14, 0xFF), Accept::Any), Reason::TooLong);
        // Errors in the fixed part are seen before the length arrives.
        assert_eq!(
            reason(&with(12, 0x31)[..13], Accept::Any),
            Reason::Malformed
        );
        assert_eq!(reason(&with(11, 0x0B)[..12], Accept::Any), Reason::Missing);
    }

    #[test]
    fn modes_and_missing_headers() {
        let v1 = encode(Version::V1, None);
        let v2 = encode(Version::V2, None);
        assert_eq!(reason(&v1, Accept::V2), Reason::Version);
        assert_eq!(reason(&v2, Accept::V1), Reason::Version);
        assert_eq!(reason(b"GET / HTTP/1.1\r\n", Accept::Any), Reason::Missing);
        assert_eq!(reason(b"PROXX", Accept::Any), Reason::Missing);
        assert_eq!(reason(b"\r\n\r\n\x01", Accept::Any), Reason::Missing);
        assert_eq!(parse(b"", Accept::Any), Parsed::Incomplete);
        assert_eq!(parse(b"PRO", Accept::Any), Parsed::Incomplete);
        assert_eq!(parse(&v2[..5], Accept::Any), Parsed::Incomplete);
        for r in Reason::ALL {
            assert_eq!(Reason::ALL[r.index()], r);
        }
    }

    #[test]
    fn every_prefix_of_a_valid_header_is_incomplete_and_then_complete() {
        let mut g = XorShift(0x9E37_79B9_7F4A_7C15);
        for i in 0..500 {
            let (s, d) = if i % 2 == 0 {
                (
                    SocketAddr::new(
                        IpAddr::from((g.next_u64() as u32).to_be_bytes()),
                        g.next_u64() as u16,
                    ),
                    SocketAddr::new(
                        IpAddr::from((g.next_u64() as u32).to_be_bytes()),
                        g.next_u64() as u16,
                    ),
                )
            } else {
                (
                    SocketAddr::new(
                        IpAddr::from(Ipv6Addr::from(
                            (g.next_u64() as u128) << 64 | g.next_u64() as u128,
                        )),
                        g.next_u64() as u16,
                    ),
                    SocketAddr::new(
                        IpAddr::from(Ipv6Addr::from(
                            (g.next_u64() as u128) << 64 | g.next_u64() as u128,
                        )),
                        g.next_u64() as u16,
                    ),
                )
            };
            for v in [Version::V1, Version::V2] {
                let b = encode(v, Some((s, d)));
                assert!(b.len() <= if v == Version::V1 { V1_MAX } else { V2_MAX });
                for n in 0..b.len() {
                    assert_eq!(
                        parse(&b[..n], Accept::Any),
                        Parsed::Incomplete,
                        "{v} {n} {b:?}"
                    );
                }
                let h = header(&b, Accept::Any);
                let (es, ed) = same_family(s, d);
                assert_eq!((h.src, h.dst, h.len), (Some(es), Some(ed), b.len()));
            }
        }
    }

    #[test]
    fn random_and_mutated_input_never_panics_and_stays_in_bounds() {
        let mut g = XorShift(0xDEAD_BEEF_CAFE_F00D);
        let seeds = [
            encode(Version::V1, Some((sa("192.0.2.7:1"), sa("10.0.0.1:2")))),
            encode(Version::V1, Some((sa("[2001:db8::1]:1"), sa("[::1]:2")))),
            encode(Version::V2, Some((sa("192.0.2.7:1"), sa("10.0.0.1:2")))),
            encode(Version::V2, Some((sa("[2001:db8::1]:1"), sa("[::1]:2")))),
        ];
        for i in 0..20_000 {
            let mut b: Vec<u8> = if i % 4 == 0 {
                (0..g.next_u64() % 200).map(|_| g.byte()).collect()
            } else {
                let mut b = seeds[(g.next_u64() % 4) as usize].clone();
                for _ in 0..=(g.next_u64() % 3) {
                    let at = (g.next_u64() as usize) % b.len();
                    b[at] = g.byte();
                }
                let cut = (g.next_u64() as usize) % (b.len() + 1);
                b.truncate(cut);
                b
            };
            if i % 7 == 0 {
                b.extend((0..g.next_u64() % 64).map(|_| g.byte()));
            }
            for a in [Accept::V1, Accept::V2, Accept::Any] {
                match parse(&b, a) {
                    Parsed::Header(h) => {
                        assert!(h.len <= b.len(), "{b:?}");
                        assert!(h.len <= V2_MAX);
                    }
                    Parsed::Incomplete => assert!(b.len() < V2_MAX),
                    Parsed::Error(_) => {}
                }
            }
        }
    }
}
