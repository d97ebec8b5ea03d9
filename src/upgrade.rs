//! Zero-downtime binary upgrade, the pure part: the header that travels with the listening
//! sockets from the running pen to the new one, its checks against the new command line, and
//! the short line protocol that follows (see the README, "Upgrading the binary without
//! dropping connections").
//!
//! The exchange on the hand-over socket (a Unix stream socket, `upgrade_socket PATH` or
//! `PIDFILE.upgrade`; the descriptors themselves are passed by [`crate::sys::handover`]):
//!
//! 1. the new pen (`-O upgrade`) connects; the running pen sends one message: the
//!    [`Header`] text with its sockets as `SCM_RIGHTS` (listener, control socket, the
//!    hand-over socket itself; DSR's raw socket is not passed, the new pen opens its own);
//! 2. the new pen checks the header against its own configuration ([`check`]): a different
//!    listen address or mode is an error naming both; it starts serving on the sockets and
//!    writes `ready PID`;
//! 3. the old pen stops accepting, answers `stopped`, finishes its connections (bounded by
//!    `drain_timeout`) and exits. Anything else than `ready` (the new pen failed, crashed, or
//!    closed the connection) leaves the old pen serving as before.

use std::fmt;

/// First line of a header: the protocol and its version.
pub const MAGIC: &str = "pen-upgrade 1";

/// Largest header accepted (bytes): a few lines.
pub const MAX_HEADER: usize = 4096;

/// Seconds the old pen waits for its connections after the new one took over, unless
/// `drain_timeout N` says otherwise.
pub const DEFAULT_DRAIN_TIMEOUT: u64 = 30;

/// What a passed socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The balanced listener (TCP, Unix or UDP), or the DSR interface (no descriptor).
    Listen,
    /// The `-C` control socket.
    Control,
    /// The hand-over socket itself, so the next upgrade finds it at the same path.
    Handover,
    /// DSR's XDP attachment (a BPF link): the new pen swaps its program into it.
    Xdp,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Listen => "listen",
            Role::Control => "control",
            Role::Handover => "handover",
            Role::Xdp => "xdp",
        }
    }
    fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "listen" => Role::Listen,
            "control" => Role::Control,
            "handover" => Role::Handover,
            "xdp" => Role::Xdp,
            _ => return None,
        })
    }
}

/// The kind of socket, with its address as text (`127.0.0.1:8080`, `[::]:53`, a Unix path,
/// an interface name for DSR).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Socket {
    Tcp(String),
    Udp(String),
    Unix(String),
    /// DSR mode on this interface: nothing is passed, the new pen opens its own raw socket.
    Dsr(String),
    /// A BPF link attached to this interface (DSR's XDP fast path).
    Link(String),
}

impl Socket {
    /// Whether a descriptor travels with this entry.
    pub fn has_fd(&self) -> bool {
        !matches!(self, Socket::Dsr(_))
    }

    fn kind(&self) -> &'static str {
        match self {
            Socket::Tcp(_) => "tcp",
            Socket::Udp(_) => "udp",
            Socket::Unix(_) => "unix",
            Socket::Dsr(_) => "dsr",
            Socket::Link(_) => "link",
        }
    }

    fn addr(&self) -> &str {
        match self {
            Socket::Tcp(a)
            | Socket::Udp(a)
            | Socket::Unix(a)
            | Socket::Dsr(a)
            | Socket::Link(a) => a,
        }
    }

    /// Whether this (received) socket is the one `want` (from the new command line) names: same
    /// kind and address, where a wanted port 0 matches any port.
    pub fn matches(&self, want: &Socket) -> bool {
        if self.kind() != want.kind() {
            return false;
        }
        match (self, want) {
            (Socket::Tcp(got), Socket::Tcp(w)) | (Socket::Udp(got), Socket::Udp(w)) => {
                match (
                    got.parse::<std::net::SocketAddr>(),
                    w.parse::<std::net::SocketAddr>(),
                ) {
                    (Ok(g), Ok(w)) => g.ip() == w.ip() && (w.port() == 0 || g.port() == w.port()),
                    _ => got == w,
                }
            }
            _ => self.addr() == want.addr(),
        }
    }
}

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.addr())
    }
}

/// One line of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub role: Role,
    pub socket: Socket,
}

/// What the running pen sends: its pid and its sockets, in the order of the descriptors (the
/// entries without one, DSR, are skipped in that order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub pid: u32,
    pub entries: Vec<Entry>,
}

/// A header that cannot be read. Displays what was wrong and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the running pen sent no upgrade header (expected a first line {MAGIC:?})")]
    Empty,
    #[error(
        "the running pen speaks {0:?}, not {MAGIC:?}: upgrade between these versions is not possible; restart instead"
    )]
    Version(String),
    #[error(
        "bad upgrade header line {0:?}: expected `pid N`, or `ROLE KIND ADDRESS` with ROLE listen, control, handover or xdp and KIND tcp, udp, unix, dsr or link"
    )]
    Line(String),
    #[error("the upgrade header has no `pid` line")]
    NoPid,
    #[error("the upgrade header is longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("the upgrade header names {want} socket(s) but {got} descriptor(s) came with it")]
    FdCount { want: usize, got: usize },
}

impl Header {
    /// The header as sent.
    pub fn encode(&self) -> String {
        let mut s = format!("{MAGIC}\npid {}\n", self.pid);
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.role.as_str(), e.socket));
        }
        s
    }

    /// Reads a header (trailing bytes after the last newline are ignored only if empty).
    pub fn decode(text: &str) -> Result<Header, HeaderError> {
        if text.len() > MAX_HEADER {
            return Err(HeaderError::TooLong);
        }
        let mut lines = text.lines();
        let first = lines.next().ok_or(HeaderError::Empty)?;
        if first != MAGIC {
            if first.is_empty() {
                return Err(HeaderError::Empty);
            }
            return Err(HeaderError::Version(first.chars().take(40).collect()));
        }
        let mut pid = None;
        let mut entries = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let bad = || HeaderError::Line(line.chars().take(80).collect());
            let mut w = line.splitn(3, ' ');
            let (a, b, c) = (w.next(), w.next(), w.next());
            match (a, b, c) {
                (Some("pid"), Some(n), None) => {
                    pid = Some(n.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(bad)?);
                }
                (Some(role), Some(kind), Some(addr)) if !addr.is_empty() => {
                    let role = Role::parse(role).ok_or_else(bad)?;
                    let addr = addr.to_string();
                    let socket = match kind {
                        "tcp" => Socket::Tcp(addr),
                        "udp" => Socket::Udp(addr),
                        "unix" => Socket::Unix(addr),
                        "dsr" => Socket::Dsr(addr),
                        "link" => Socket::Link(addr),
                        _ => return Err(bad()),
                    };
                    entries.push(Entry { role, socket });
                }
                _ => return Err(bad()),
            }
        }
        Ok(Header {
            pid: pid.ok_or(HeaderError::NoPid)?,
            entries,
        })
    }

    /// How many descriptors travel with this header.
    pub fn fd_count(&self) -> usize {
        self.entries.iter().filter(|e| e.socket.has_fd()).count()
    }

    /// The entry for `role`, with its index among the descriptors (`None` for DSR).
    pub fn find(&self, role: Role) -> Option<(&Socket, Option<usize>)> {
        let mut fd = 0;
        for e in &self.entries {
            let idx = e.socket.has_fd().then_some(fd);
            if e.role == role {
                return Some((&e.socket, idx));
            }
            if e.socket.has_fd() {
                fd += 1;
            }
        }
        None
    }
}

/// What the new pen's configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub listen: Socket,
    /// The `-C` spec as a socket (`None`: no control socket).
    pub control: Option<Socket>,
}

/// What to do with each received socket, once [`check`] passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Index of the listener's descriptor (`None`: DSR, the new pen opens its own).
    pub listen: Option<usize>,
    /// Index of the control socket's descriptor, when the running pen's is the one wanted;
    /// `None`: the new pen opens its own (or has none).
    pub control: Option<usize>,
    /// Index of the hand-over socket's descriptor.
    pub handover: Option<usize>,
    /// Index of DSR's XDP link, when the DSR interface is the one wanted.
    pub xdp: Option<usize>,
}

/// A header that does not fit the new command line. Displays both sides and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error(
        "the running pen (pid {pid}) listens on {got}, this command line asks for {want}; give the same listen address and mode (-U, dsr_if), or stop the running pen and start this one"
    )]
    Listen { pid: u32, got: Socket, want: Socket },
    #[error("the running pen (pid {pid}) sent no listener; it cannot be upgraded")]
    NoListener { pid: u32 },
}

/// Checks `got` against `want` and says which descriptor serves what. The listener must match
/// (same kind, same address; a wanted port 0 takes whatever port the running pen has); a
/// control socket with the same spec is taken over, a different one is left to the old pen
/// (the new pen opens its own).
pub fn check(got: &Header, want: &Wanted) -> Result<Plan, Mismatch> {
    let (listen, listen_fd) = got
        .find(Role::Listen)
        .ok_or(Mismatch::NoListener { pid: got.pid })?;
    if !listen.matches(&want.listen) {
        return Err(Mismatch::Listen {
            pid: got.pid,
            got: listen.clone(),
            want: want.listen.clone(),
        });
    }
    let control = match (got.find(Role::Control), &want.control) {
        (Some((s, idx)), Some(w)) if s.matches(w) => idx,
        _ => None,
    };
    let xdp = match (got.find(Role::Xdp), &want.listen) {
        (Some((Socket::Link(i), idx)), Socket::Dsr(w)) if i == w => idx,
        _ => None,
    };
    Ok(Plan {
        listen: listen_fd,
        control,
        handover: got.find(Role::Handover).and_then(|(_, i)| i),
        xdp,
    })
}

/// What the new pen writes back once it serves (`ready PID`).
pub fn ready_line(pid: u32) -> String {
    format!("ready {pid}\n")
}

/// The old pen's answer once it stopped accepting.
pub const STOPPED: &str = "stopped\n";

/// The pid in a `ready PID` line; `None` for anything else (the new pen failed).
pub fn parse_ready(line: &str) -> Option<u32> {
    line.trim_end()
        .strip_prefix("ready ")
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p > 0)
}

/// The hand-over socket's path: `upgrade_socket PATH` if given, else the pid file's path with
/// `.upgrade` appended; `None` when there is neither (no upgrade possible).
pub fn socket_path(
    upgrade_socket: Option<&std::path::Path>,
    pid_file: Option<&std::path::Path>,
) -> Option<std::path::PathBuf> {
    if let Some(p) = upgrade_socket {
        return Some(p.to_path_buf());
    }
    pid_file.map(|p| {
        let mut s = p.as_os_str().to_os_string();
        s.push(".upgrade");
        s.into()
    })
}

/// Whether the pid file's content names `pid` (the old pen removes the file at exit only
/// then: after an upgrade it names the new pen).
pub fn pid_file_names(content: &str, pid: u32) -> bool {
    content.trim().parse::<u32>().ok() == Some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(a: &str) -> Socket {
        Socket::Tcp(a.into())
    }

    fn header() -> Header {
        Header {
            pid: 42,
            entries: vec![
                Entry {
                    role: Role::Listen,
                    socket: tcp("127.0.0.1:8080"),
                },
                Entry {
                    role: Role::Control,
                    socket: Socket::Unix("/run/pen ctl".into()),
                },
                Entry {
                    role: Role::Handover,
                    socket: Socket::Unix("/run/pen.pid.upgrade".into()),
                },
            ],
        }
    }

    #[test]
    fn a_header_round_trips() {
        let h = header();
        let text = h.encode();
        assert!(text.starts_with("pen-upgrade 1\npid 42\nlisten tcp 127.0.0.1:8080\n"));
        assert_eq!(Header::decode(&text), Ok(h.clone()));
        assert_eq!(h.fd_count(), 3);
        let dsr = Header {
            pid: 7,
            entries: vec![Entry {
                role: Role::Listen,
                socket: Socket::Dsr("eth0".into()),
            }],
        };
        assert_eq!(Header::decode(&dsr.encode()), Ok(dsr.clone()));
        assert_eq!(dsr.fd_count(), 0);
        assert_eq!(
            dsr.find(Role::Listen),
            Some((&Socket::Dsr("eth0".into()), None))
        );
        // DSR with its XDP link: the link is the only descriptor, and is taken for the same
        // interface only.
        let mut xdp = dsr.clone();
        xdp.entries.push(Entry {
            role: Role::Xdp,
            socket: Socket::Link("eth0".into()),
        });
        assert_eq!(Header::decode(&xdp.encode()), Ok(xdp.clone()));
        assert_eq!(xdp.fd_count(), 1);
        let want = |i: &str| Wanted {
            listen: Socket::Dsr(i.into()),
            control: None,
        };
        let plan = check(&xdp, &want("eth0")).unwrap();
        assert_eq!((plan.listen, plan.xdp), (None, Some(0)));
        assert!(matches!(
            check(&xdp, &want("eth1")),
            Err(Mismatch::Listen { .. })
        ));
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        assert_eq!(Header::decode(""), Err(HeaderError::Empty));
        assert!(matches!(
            Header::decode("pen-upgrade 2\npid 1\n"),
            Err(HeaderError::Version(v)) if v == "pen-upgrade 2"
        ));
        assert_eq!(
            Header::decode("pen-upgrade 1\nlisten tcp 1.2.3.4:5\n"),
            Err(HeaderError::NoPid)
        );
        for bad in [
            "pid x",
            "pid 0",
            "pid",
            "listen sctp 1.2.3.4:5",
            "somewhere tcp 1.2.3.4:5",
            "listen tcp",
        ] {
            let e = Header::decode(&format!("{MAGIC}\n{bad}\n")).unwrap_err();
            assert!(
                matches!(&e, HeaderError::Line(l) if l == bad),
                "{bad}: {e:?}"
            );
            assert!(e.to_string().contains("ROLE KIND ADDRESS"), "{e}");
        }
        let long = format!("{MAGIC}\npid 1\n{}", "x".repeat(MAX_HEADER));
        assert_eq!(Header::decode(&long), Err(HeaderError::TooLong));
        // Arbitrary bytes never panic.
        for n in 0..300usize {
            let junk: String = (0..n)
                .map(|i| char::from(b' ' + ((i * 31 + n) % 90) as u8))
                .collect();
            let _ = Header::decode(&junk);
            let _ = Header::decode(&format!("{MAGIC}\n{junk}"));
        }
    }

    #[test]
    fn the_listener_must_match_and_the_error_names_both() {
        let h = header();
        let want = Wanted {
            listen: tcp("127.0.0.1:8081"),
            control: None,
        };
        let e = check(&h, &want).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("pid 42"), "{text}");
        assert!(text.contains("tcp 127.0.0.1:8080"), "{text}");
        assert!(text.contains("tcp 127.0.0.1:8081"), "{text}");
        // UDP for TCP is a mismatch too.
        let want = Wanted {
            listen: Socket::Udp("127.0.0.1:8080".into()),
            control: None,
        };
        assert!(matches!(check(&h, &want), Err(Mismatch::Listen { .. })));
        // Same address: the listener, no control (not wanted), the hand-over socket.
        let want = Wanted {
            listen: tcp("127.0.0.1:8080"),
            control: None,
        };
        assert_eq!(
            check(&h, &want),
            Ok(Plan {
                listen: Some(0),
                control: None,
                handover: Some(2),
                xdp: None,
            })
        );
        // Port 0 takes the running pen's port; the same control spec is taken over.
        let want = Wanted {
            listen: tcp("127.0.0.1:0"),
            control: Some(Socket::Unix("/run/pen ctl".into())),
        };
        assert_eq!(check(&h, &want).unwrap().control, Some(1));
        // A different control socket is not taken.
        let want = Wanted {
            listen: tcp("127.0.0.1:8080"),
            control: Some(tcp("127.0.0.1:9000")),
        };
        assert_eq!(check(&h, &want).unwrap().control, None);
        // Another IP is not the same listener, even with the same port.
        assert!(!tcp("127.0.0.1:8080").matches(&tcp("127.0.0.2:8080")));
        assert!(tcp("[::]:53").matches(&tcp("[::]:53")));
        let none = Header {
            pid: 5,
            entries: vec![],
        };
        assert_eq!(check(&none, &want), Err(Mismatch::NoListener { pid: 5 }));
    }

    #[test]
    fn ready_lines_and_paths() {
        assert_eq!(parse_ready(&ready_line(1234)), Some(1234));
        assert_eq!(parse_ready("ready 0\n"), None);
        assert_eq!(parse_ready("error: bad config\n"), None);
        assert_eq!(parse_ready(""), None);
        let p = std::path::Path::new("/run/pen.pid");
        assert_eq!(
            socket_path(None, Some(p)),
            Some("/run/pen.pid.upgrade".into())
        );
        assert_eq!(
            socket_path(Some(std::path::Path::new("/run/up")), Some(p)),
            Some("/run/up".into())
        );
        assert_eq!(socket_path(None, None), None);
        assert!(pid_file_names("1234\n", 1234));
        assert!(!pid_file_names("1235\n", 1234));
        assert!(!pid_file_names("", 1234));
    }
}
