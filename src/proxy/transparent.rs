//! Transparent reverse proxy (`transparent`, `-O transparent`): pen opens its upstream
//! connection with the client's own address as source, so backends see the real client
//! (reference §9, the blog's "Transparent Reverse Proxy").
//!
//! - [`choose_source`] (pure) decides which source address an upstream socket gets: `source
//!   IP` takes precedence (as in C Pen), then the client's address with `transparent`.
//! - TCP: [`bind_as_client`] sets `IP_TRANSPARENT` / `IPV6_TRANSPARENT` on the upstream
//!   socket and binds it to the client's address (port 0). IPv6 works too (C Pen is IPv4 only).
//! - UDP: a transparent flow goes out on a socket bound to its client's address with the
//!   same [`bind_as_client`] (as C Pen does), shared by that client's flows to different
//!   servers (`proxy::udp::flow`, "Transparent flows"). The backend's answers are addressed
//!   to that socket, so both nftables' `socket transparent 1` and the blog's iptables `-m
//!   socket` (which ignores sockets bound to the wildcard address) find it. The choice is made
//!   per flow when it is created.
//! - Every failure is a [`TransparentError`] carried inside the `io::Error` the connect path
//!   returns ([`error_of`] finds it). The proxy logs it once, counts it in
//!   `Shared::transparent_failures` ([`record`]) and never falls back to pen's own address
//!   (C Pen only prints a debug message and connects from its own address).
//!
//! - `-u`: [`keep_caps_across_setuid`] / [`retain_cap_net_admin`] keep CAP_NET_ADMIN (only)
//!   when the daemon switches user, so `transparent` set at start-up survives dropping root.
//!
//! The host must route the backends' replies to the client's address back into pen; see the
//! README section "Transparent proxy" (DIVERT/mark rules, `ip rule add fwmark 1 lookup 100`,
//! `ip route add local 0.0.0.0/0 dev lo table 100`, backends routing the clients via pen).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::SockRef;

use crate::acl::canonical;
use crate::proxy::{SharedState, lock};

/// Where an upstream socket's source address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamSource {
    /// The kernel picks one of pen's own addresses.
    Kernel,
    /// `source IP`: bind to this local address (port 0).
    Configured(IpAddr),
    /// `transparent`: bind to the client's address with IP(V6)_TRANSPARENT.
    Client(IpAddr),
    /// `transparent` is on but the client's address cannot be the source for this backend
    /// (an IPv4 client and an IPv6 backend, or the reverse): the connect fails.
    FamilyMismatch { client: IpAddr },
}

/// Decides the source of an upstream connection to `backend`. Pure.
///
/// - `source` of the backend's family takes precedence over `transparent` (C Pen: `source`
///   first, spoofing only without it); a `source` of the other family is ignored.
/// - With `transparent`, the client's address (an IPv4-mapped IPv6 client counts as IPv4);
///   a client of the other family than the backend is [`UpstreamSource::FamilyMismatch`].
/// - A client without an address (Unix socket client) has nothing to preserve: the kernel
///   picks the source.
pub fn choose_source(
    source: Option<IpAddr>,
    transparent: bool,
    client: Option<IpAddr>,
    backend: SocketAddr,
) -> UpstreamSource {
    if let Some(src) = source
        && src.is_ipv4() == backend.is_ipv4()
    {
        return UpstreamSource::Configured(src);
    }
    if !transparent {
        return UpstreamSource::Kernel;
    }
    match client.map(canonical) {
        None => UpstreamSource::Kernel,
        Some(ip) if ip.is_ipv4() == backend.is_ipv4() => UpstreamSource::Client(ip),
        Some(ip) => UpstreamSource::FamilyMismatch { client: ip },
    }
}

/// Why a transparent upstream connection failed, as the log line and the README name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `setsockopt(IP_TRANSPARENT)` refused (EPERM/EACCES): pen lacks CAP_NET_ADMIN.
    NeedsCapNetAdmin,
    /// EADDRNOTAVAIL, or the connect timed out: the replies to the client's address do not
    /// come back to pen (mark rule, `ip rule`, local route, or the backend's return route).
    MissingRouting,
    /// The client and the backend are of different address families.
    FamilyMismatch,
    /// Anything else (the error says what).
    Other,
}

impl Reason {
    /// Classifies an OS error of the given stage.
    pub fn of(stage: Stage, e: &io::Error) -> Reason {
        match (stage, e.raw_os_error()) {
            (Stage::SetOption, Some(libc::EPERM | libc::EACCES)) => Reason::NeedsCapNetAdmin,
            (Stage::Bind, Some(libc::EPERM | libc::EACCES)) => Reason::NeedsCapNetAdmin,
            (_, Some(libc::EADDRNOTAVAIL)) => Reason::MissingRouting,
            (Stage::Connect, _) if e.kind() == io::ErrorKind::TimedOut => Reason::MissingRouting,
            _ => Reason::Other,
        }
    }

    /// The hint appended to the log line.
    pub fn hint(self) -> &'static str {
        match self {
            Reason::NeedsCapNetAdmin => {
                "needs CAP_NET_ADMIN: run pen as root (before -u) or grant it the capability \
                 (setcap cap_net_admin+ep)"
            }
            Reason::MissingRouting => {
                "missing routing setup? replies to the client's address must come back to pen: \
                 mark them (nftables 'socket transparent 1 meta mark set 1' or iptables \
                 '-m socket -j MARK --set-mark 1'), 'ip rule add fwmark 1 lookup 100', \
                 'ip route add local 0.0.0.0/0 dev lo table 100', and the backend must route \
                 the client's subnet via pen (README \"Transparent proxy\")"
            }
            Reason::FamilyMismatch => {
                "use backends of the clients' address family, or 'no transparent'"
            }
            Reason::Other => "see README \"Transparent proxy\"",
        }
    }
}

/// Which step of a transparent upstream connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    SetOption,
    Bind,
    Connect,
}

/// One failed transparent upstream connection. Its `Display` is the whole log line (without
/// the connection prefix): client, backend, what failed, and the hint.
#[derive(Debug)]
pub struct TransparentError {
    pub client: IpAddr,
    pub backend: SocketAddr,
    pub stage: Stage,
    pub reason: Reason,
    pub cause: io::Error,
}

impl TransparentError {
    fn new(client: IpAddr, backend: SocketAddr, stage: Stage, cause: io::Error) -> Self {
        TransparentError {
            client,
            backend,
            stage,
            reason: Reason::of(stage, &cause),
            cause,
        }
    }

    /// The error for a client/backend family mismatch.
    pub fn family_mismatch(client: IpAddr, backend: SocketAddr) -> Self {
        let (c, b) = if client.is_ipv4() {
            ("IPv4", "IPv6")
        } else {
            ("IPv6", "IPv4")
        };
        TransparentError {
            client,
            backend,
            stage: Stage::Bind,
            reason: Reason::FamilyMismatch,
            cause: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("an {c} client address cannot be the source of an {b} connection"),
            ),
        }
    }

    /// The error for a connect from the client's address that the kernel refused.
    pub fn connect(client: IpAddr, backend: SocketAddr, cause: io::Error) -> Self {
        TransparentError::new(client, backend, Stage::Connect, cause)
    }

    /// The error for a connect from the client's address that timed out.
    pub fn timed_out(client: IpAddr, backend: SocketAddr, after: Duration) -> Self {
        TransparentError::new(
            client,
            backend,
            Stage::Connect,
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {} s", after.as_secs_f64()),
            ),
        )
    }

    /// True when pen itself refused before anything was sent (no capability, bind refused,
    /// family mismatch): the backend is not to blame, so it must not be blacklisted.
    pub fn is_local(&self) -> bool {
        self.stage != Stage::Connect
    }

    /// True when every other backend would fail the same way (no capability): the candidate
    /// walk stops instead of logging the same error once per server.
    pub fn affects_every_backend(&self) -> bool {
        self.reason == Reason::NeedsCapNetAdmin
    }

    /// Wraps this error into an `io::Error` of the cause's kind ([`error_of`] gets it back).
    pub fn into_io(self) -> io::Error {
        io::Error::new(self.cause.kind(), self)
    }
}

impl fmt::Display for TransparentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (self.stage, self.backend) {
            (Stage::SetOption, SocketAddr::V4(_)) => "setting IP_TRANSPARENT",
            (Stage::SetOption, SocketAddr::V6(_)) => "setting IPV6_TRANSPARENT",
            (Stage::Bind, _) if self.reason == Reason::FamilyMismatch => "choosing the source",
            (Stage::Bind, _) => "binding to the client's address",
            (Stage::Connect, _) => "connecting from the client's address",
        };
        write!(
            f,
            "transparent proxy: cannot connect to {} as client {}: {what} failed: {}; {}; \
             not falling back to pen's own address",
            self.backend,
            self.client,
            self.cause,
            self.reason.hint()
        )
    }
}

impl std::error::Error for TransparentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// The transparent failure inside an upstream connect error, if it is one.
pub fn error_of(e: &io::Error) -> Option<&TransparentError> {
    e.get_ref()?.downcast_ref::<TransparentError>()
}

/// Sets IP_TRANSPARENT (IPv4 backend) or IPV6_TRANSPARENT (IPv6 backend) on `sock` and binds
/// it to `(client, 0)`. `client` must be of `backend`'s family (see [`choose_source`]).
/// Works for TCP and UDP sockets.
pub fn bind_as_client(
    sock: SockRef<'_>,
    client: IpAddr,
    backend: SocketAddr,
) -> Result<(), TransparentError> {
    if client.is_ipv4() != backend.is_ipv4() {
        return Err(TransparentError::family_mismatch(client, backend));
    }
    set_transparent(&sock, backend)
        .map_err(|e| TransparentError::new(client, backend, Stage::SetOption, e))?;
    sock.bind(&SocketAddr::new(client, 0).into())
        .map_err(|e| TransparentError::new(client, backend, Stage::Bind, e))
}

/// Sets IP_TRANSPARENT (IPv4 `family_of`) or IPV6_TRANSPARENT on `sock`.
pub fn set_transparent(sock: &SockRef<'_>, family_of: SocketAddr) -> io::Result<()> {
    match family_of {
        SocketAddr::V4(_) => sock.set_ip_transparent_v4(true),
        SocketAddr::V6(_) => sock.set_ip_transparent_v6(true),
    }
}

/// Keeps CAP_NET_ADMIN across `-u`: call [`keep_caps_across_setuid`] right before
/// setgid/setuid and [`retain_cap_net_admin`] right after, on the thread that drops the
/// privileges, before any other thread exists (capabilities are per thread; threads created
/// later inherit them). Without this, `transparent` with `-u user` could never work: the switch
/// to a non-root user clears every capability. Only CAP_NET_ADMIN is kept (permitted and
/// effective), as HAProxy's `setcap` does.
pub fn keep_caps_across_setuid() -> io::Result<()> {
    crate::sys::process::set_keep_caps(true)
}

/// After setuid (see [`keep_caps_across_setuid`]): reduces this thread's capabilities to
/// CAP_NET_ADMIN, effective and permitted, and turns the keep-caps flag off again.
pub fn retain_cap_net_admin() -> io::Result<()> {
    let result = crate::sys::process::retain_only_cap_net_admin();
    let _ = crate::sys::process::set_keep_caps(false);
    result
}

/// Logs `err` once (at error level, prefixed with the connection's `who`) and counts it in
/// `Shared::transparent_failures`.
pub fn record(shared: &SharedState, who: &str, err: &TransparentError) {
    lock(shared).transparent_failures += 1;
    tracing::error!("{who}: {err}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn source_takes_precedence_over_transparent() {
        let got = choose_source(
            Some(ip("10.0.0.9")),
            true,
            Some(ip("10.1.0.2")),
            sa("10.2.0.3:80"),
        );
        assert_eq!(got, UpstreamSource::Configured(ip("10.0.0.9")));
    }

    #[test]
    fn source_of_other_family_leaves_transparent_in_charge() {
        let got = choose_source(
            Some(ip("10.0.0.9")),
            true,
            Some(ip("fd00::2")),
            sa("[fd01::3]:80"),
        );
        assert_eq!(got, UpstreamSource::Client(ip("fd00::2")));
    }

    #[test]
    fn transparent_uses_the_client_address() {
        let got = choose_source(None, true, Some(ip("10.1.0.2")), sa("10.2.0.3:80"));
        assert_eq!(got, UpstreamSource::Client(ip("10.1.0.2")));
    }

    #[test]
    fn mapped_v4_client_is_spoofed_as_v4() {
        let got = choose_source(None, true, Some(ip("::ffff:10.1.0.2")), sa("10.2.0.3:80"));
        assert_eq!(got, UpstreamSource::Client(ip("10.1.0.2")));
    }

    #[test]
    fn no_transparent_lets_the_kernel_choose() {
        let got = choose_source(None, false, Some(ip("10.1.0.2")), sa("10.2.0.3:80"));
        assert_eq!(got, UpstreamSource::Kernel);
    }

    #[test]
    fn family_mismatch_is_not_a_silent_fallback() {
        let got = choose_source(None, true, Some(ip("10.1.0.2")), sa("[fd01::3]:80"));
        assert_eq!(
            got,
            UpstreamSource::FamilyMismatch {
                client: ip("10.1.0.2")
            }
        );
    }

    #[test]
    fn unix_client_has_nothing_to_preserve() {
        assert_eq!(
            choose_source(None, true, None, sa("10.2.0.3:80")),
            UpstreamSource::Kernel
        );
    }

    #[test]
    fn eperm_on_the_option_means_cap_net_admin() {
        let e = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(Reason::of(Stage::SetOption, &e), Reason::NeedsCapNetAdmin);
    }

    #[test]
    fn eaddrnotavail_and_timeouts_mean_missing_routing() {
        let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(Reason::of(Stage::Bind, &e), Reason::MissingRouting);
        let t =
            TransparentError::timed_out(ip("10.1.0.2"), sa("10.2.0.3:80"), Duration::from_secs(3));
        assert_eq!(t.reason, Reason::MissingRouting);
        assert!(!t.is_local(), "a timeout is the backend path's failure");
    }

    #[test]
    fn refused_connect_is_not_blamed_on_transparent_setup() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(Reason::of(Stage::Connect, &e), Reason::Other);
    }

    #[test]
    fn message_names_client_backend_and_reason() {
        let e = TransparentError::new(
            ip("10.1.0.2"),
            sa("10.2.0.3:80"),
            Stage::SetOption,
            io::Error::from_raw_os_error(libc::EPERM),
        );
        let text = e.to_string();
        for part in [
            "10.1.0.2",
            "10.2.0.3:80",
            "IP_TRANSPARENT",
            "needs CAP_NET_ADMIN",
            "not falling back",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        assert!(e.is_local() && e.affects_every_backend());
    }

    #[test]
    fn error_survives_the_io_error_round_trip() {
        let io_err =
            TransparentError::family_mismatch(ip("10.1.0.2"), sa("[fd01::3]:80")).into_io();
        let back = error_of(&io_err).unwrap();
        assert_eq!(back.reason, Reason::FamilyMismatch);
        assert!(back.is_local() && !back.affects_every_backend());
        assert!(error_of(&io::Error::other("plain")).is_none());
    }

    #[test]
    fn bind_as_client_to_own_loopback_address_works() {
        // Binding to a local address with the option set needs CAP_NET_ADMIN (or CAP_NET_RAW);
        // without it the error must say so.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        match bind_as_client(SockRef::from(&s), ip("127.0.0.1"), sa("127.0.0.1:80")) {
            Ok(()) => assert_eq!(
                s.local_addr().unwrap().as_socket().unwrap().ip(),
                ip("127.0.0.1")
            ),
            Err(e) => assert_eq!(e.reason, Reason::NeedsCapNetAdmin, "{e}"),
        }
    }

    mod udp {
        use super::*;
        use crate::proxy::udp::{Candidate, Limits, Selector, UdpContext, serve_with};
        use crate::select::Target;
        use std::sync::{Arc, Mutex};

        /// One server, transparent on, failures collected.
        struct Ctx {
            server: SocketAddr,
            transparent: bool,
            source: Option<IpAddr>,
            idle: Duration,
            max_flows: usize,
            failures: Mutex<Vec<String>>,
        }

        impl Ctx {
            fn new(server: SocketAddr, transparent: bool) -> Arc<Ctx> {
                Arc::new(Ctx {
                    server,
                    transparent,
                    source: None,
                    idle: Duration::from_secs(60),
                    max_flows: 16,
                    failures: Mutex::default(),
                })
            }
        }

        /// Transparent UDP sockets are bound to the client's address with IP_TRANSPARENT,
        /// which needs CAP_NET_ADMIN even for a local address.
        fn require_root() {
            crate::testing::require_root("sets IP_TRANSPARENT (needs CAP_NET_ADMIN)");
        }

        /// Whether a UDP socket is bound to exactly `addr` (IPv4), per /proc/net/udp.
        fn bound_to(addr: SocketAddr) -> bool {
            let SocketAddr::V4(a) = addr else {
                return false;
            };
            let want = format!(
                "{:08X}:{:04X} ",
                u32::from_le_bytes(a.ip().octets()),
                a.port()
            );
            std::fs::read_to_string("/proc/net/udp")
                .is_ok_and(|t| t.lines().skip(1).any(|l| l.contains(&want)))
        }

        impl Selector for &Ctx {
            fn candidates(&mut self, _c: SocketAddr, _now: Duration) -> Vec<Candidate> {
                vec![Candidate {
                    target: Target::Server(0),
                    addr: Some(self.server),
                }]
            }
            fn flow_opened(&mut self, _c: SocketAddr, _t: Target, _now: Duration) {}
            fn flow_closed(&mut self, _c: SocketAddr, _t: Target, _s: u64, _r: u64, _n: Duration) {}
            fn server_failed(&mut self, _t: Target, _now: Duration) {}
        }

        impl UdpContext for Arc<Ctx> {
            fn with_selector<R>(&self, f: impl FnOnce(&mut dyn Selector) -> R) -> R {
                f(&mut &**self)
            }
            fn limits(&self) -> Limits {
                Limits {
                    max_flows: self.max_flows,
                    idle: self.idle,
                    source: self.source,
                }
            }
            fn now(&self) -> Duration {
                crate::proxy::now()
            }
            fn transparent(&self) -> bool {
                self.transparent
            }
            fn transparent_failed(&self, client: SocketAddr, err: &TransparentError) {
                self.failures
                    .lock()
                    .unwrap()
                    .push(format!("{client}: {err}"));
            }
        }

        /// A UDP backend answering each datagram with the sender's address.
        async fn whoami(bind: &str) -> SocketAddr {
            let s = tokio::net::UdpSocket::bind(bind).await.unwrap();
            let addr = s.local_addr().unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok((_, from)) = s.recv_from(&mut buf).await {
                    let _ = s.send_to(from.ip().to_string().as_bytes(), from).await;
                }
            });
            addr
        }

        async fn ask(client: &str, pen: SocketAddr) -> Option<String> {
            let c = tokio::net::UdpSocket::bind(client).await.unwrap();
            c.send_to(b"?", pen).await.unwrap();
            let mut buf = [0u8; 256];
            let r = tokio::time::timeout(Duration::from_secs(2), c.recv_from(&mut buf)).await;
            match r {
                Ok(Ok((n, from))) => {
                    assert_eq!(from, pen, "replies come from pen's listener");
                    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
                }
                _ => None,
            }
        }

        async fn pen(ctx: Arc<Ctx>, listen: &str) -> SocketAddr {
            let l = tokio::net::UdpSocket::bind(listen).await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(serve_with(l, ctx));
            addr
        }

        #[tokio::test]
        async fn udp_flow_sends_from_the_client_address() {
            require_root();
            let server = whoami("127.0.0.1:0").await;
            let ctx = Ctx::new(server, true);
            let pen = pen(ctx.clone(), "127.0.0.1:0").await;
            assert_eq!(ask("127.0.0.2:0", pen).await.as_deref(), Some("127.0.0.2"));
            assert_eq!(ask("127.0.0.3:0", pen).await.as_deref(), Some("127.0.0.3"));
            assert!(ctx.failures.lock().unwrap().is_empty());
        }

        #[tokio::test]
        async fn udp_without_transparent_sends_from_pen() {
            let server = whoami("127.0.0.1:0").await;
            let ctx = Ctx::new(server, false);
            let pen = pen(ctx, "127.0.0.1:0").await;
            assert_eq!(ask("127.0.0.2:0", pen).await.as_deref(), Some("127.0.0.1"));
        }

        #[tokio::test]
        async fn udp_family_mismatch_is_reported_not_sent_from_pen() {
            let server = whoami("[::1]:0").await;
            let ctx = Ctx::new(server, true);
            let pen = pen(ctx.clone(), "127.0.0.1:0").await;
            assert_eq!(ask("127.0.0.2:0", pen).await, None);
            let failures = ctx.failures.lock().unwrap().clone();
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert!(failures[0].contains("cannot be the source"), "{failures:?}");
        }

        #[tokio::test]
        async fn udp_source_takes_precedence_over_transparent() {
            let server = whoami("127.0.0.1:0").await;
            let ctx = Arc::new(Ctx {
                source: Some(ip("127.0.0.3")),
                ..Arc::into_inner(Ctx::new(server, true)).unwrap()
            });
            let pen = pen(ctx, "127.0.0.1:0").await;
            assert_eq!(ask("127.0.0.2:0", pen).await.as_deref(), Some("127.0.0.3"));
        }

        #[tokio::test]
        async fn udp_mapped_v4_client_of_a_dual_stack_listener_is_spoofed_as_v4() {
            require_root();
            let server = whoami("127.0.0.1:0").await;
            let ctx = Ctx::new(server, true);
            let l = tokio::net::UdpSocket::bind("[::]:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(serve_with(l, ctx.clone()));
            let c = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
            c.send_to(b"?", ("127.0.0.1", port)).await.unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = tokio::time::timeout(Duration::from_secs(2), c.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], b"127.0.0.2");
            assert!(ctx.failures.lock().unwrap().is_empty());
        }

        #[tokio::test]
        async fn udp_sockets_are_bound_to_the_client_and_closed_with_their_flows() {
            require_root();
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let server = s.local_addr().unwrap();
            let heard = Arc::new(Mutex::new(Vec::new()));
            let h = heard.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok((_, from)) = s.recv_from(&mut buf).await {
                    h.lock().unwrap().push(from);
                    let _ = s.send_to(from.ip().to_string().as_bytes(), from).await;
                }
            });
            let ctx = Arc::new(Ctx {
                idle: Duration::from_secs(1),
                ..Arc::into_inner(Ctx::new(server, true)).unwrap()
            });
            let handle = crate::proxy::udp::new_table(&ctx.limits());
            let l = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let pen = l.local_addr().unwrap();
            let serving = tokio::spawn(crate::proxy::udp::serve_table(
                l,
                ctx.clone(),
                handle.clone(),
            ));
            // Two live flows of 127.0.0.2 to the one server need two of its sockets; 127.0.0.3
            // gets its own.
            for (client, want) in [
                ("127.0.0.2:0", "127.0.0.2"),
                ("127.0.0.2:0", "127.0.0.2"),
                ("127.0.0.3:0", "127.0.0.3"),
            ] {
                assert_eq!(ask(client, pen).await.as_deref(), Some(want));
            }
            let heard = heard.lock().unwrap().clone();
            assert_eq!(heard.len(), 3, "{heard:?}");
            assert_ne!(heard[0], heard[1], "two sockets of 127.0.0.2");
            for from in &heard {
                assert!(
                    bound_to(*from),
                    "{from} is not a socket bound to the client's address"
                );
            }
            assert_eq!(handle.with_table(|t| t.client_sockets()), 3);
            // The flows expire after 1 s idle; the next tick closes their sockets.
            let t0 = std::time::Instant::now();
            while heard.iter().any(|a| bound_to(*a)) && t0.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                !heard.iter().any(|a| bound_to(*a)),
                "sockets still open after their flows expired: {heard:?}"
            );
            assert_eq!(handle.with_table(|t| (t.len(), t.client_sockets())), (0, 0));
            assert!(ctx.failures.lock().unwrap().is_empty());
            serving.abort();
        }

        #[tokio::test]
        async fn udp_a_full_socket_bound_makes_room_by_closing_a_finished_clients_socket() {
            require_root();
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let server = s.local_addr().unwrap();
            let heard = Arc::new(Mutex::new(Vec::new()));
            let h = heard.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok((_, from)) = s.recv_from(&mut buf).await {
                    h.lock().unwrap().push(from);
                    let _ = s.send_to(from.ip().to_string().as_bytes(), from).await;
                }
            });
            // conn_max 2: two flows, and two sockets bound to clients' addresses.
            let ctx = Arc::new(Ctx {
                max_flows: 2,
                ..Arc::into_inner(Ctx::new(server, true)).unwrap()
            });
            let handle = crate::proxy::udp::new_table(&ctx.limits());
            let l = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let pen = l.local_addr().unwrap();
            let serving = tokio::spawn(crate::proxy::udp::serve_table(
                l,
                ctx.clone(),
                handle.clone(),
            ));
            assert_eq!(
                ask("127.0.0.12:0", pen).await.as_deref(),
                Some("127.0.0.12")
            );
            assert_eq!(
                ask("127.0.0.13:0", pen).await.as_deref(),
                Some("127.0.0.13")
            );
            let first = heard.lock().unwrap()[0];
            assert!(
                bound_to(first),
                "{first} is not bound to the client's address"
            );
            // A third client: the answered flow of 127.0.0.12 is evicted, its socket closed
            // to make room, and the new client is served from its own address at once.
            assert_eq!(
                ask("127.0.0.14:0", pen).await.as_deref(),
                Some("127.0.0.14")
            );
            let (sockets, stats) = handle.with_table(|t| (t.client_sockets(), t.stats()));
            assert_eq!(sockets, 2);
            assert_eq!((stats.flows_evicted, stats.client_pools_dropped), (1, 1));
            assert_eq!(stats.skipped_no_client_socket, 0);
            assert!(!bound_to(first), "the socket {first} is still open");
            serving.abort();
        }
    }
}
