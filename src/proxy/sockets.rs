//! Socket setup: listeners (TCP v4/v6, Unix), upstream connects with pen's socket options.
//!
//! Everything here is a thin wrapper over `socket2`/tokio; the decisions (which address, which
//! options) come from the caller.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpSocket, TcpStream, UnixListener, UnixStream};

use crate::config::BackendAddr;
use crate::proxy::forward::Stream;
use crate::proxy::transparent::{self, TransparentError, UpstreamSource};

/// Socket options for upstream (server-side) connections, from the `Config`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// `source IP`: bind the upstream socket to this address (port 0) before connecting.
    pub source: Option<IpAddr>,
    /// `keepalive`: SO_KEEPALIVE.
    pub keepalive: bool,
    /// `tcp_nodelay`: TCP_NODELAY.
    pub nodelay: bool,
    /// `transparent`: connect from the client's own address (see [`transparent`]); `source`
    /// takes precedence.
    pub transparent: bool,
    /// The client's address, for `transparent` (`None` for a Unix-socket client).
    pub client: Option<IpAddr>,
}

/// Opens a TCP listener on `addr` with SO_REUSEADDR and the given backlog. An IPv6 wildcard
/// (`::`) also accepts IPv4 clients (IPV6_V6ONLY off); a specific IPv6 address leaves the
/// system default alone. The listener is non-blocking, ready for tokio.
pub fn listen_tcp(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if let SocketAddr::V6(v6) = addr
        && v6.ip().is_unspecified()
    {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog_arg(backlog))?;
    Ok(socket.into())
}

/// `setsockopt(fd, level, opt, &value)` for an option that takes a C `int`.
pub(crate) use crate::sys::sockopt::set_int as set_int_option;

/// Opens a UDP socket bound to `addr` (SO_REUSEADDR, IPV6_V6ONLY off for `::`), non-blocking.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if let SocketAddr::V6(v6) = addr
        && v6.ip().is_unspecified()
    {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Opens a Unix stream listener at `path`. A stale socket file at `path` is removed first (as
/// C Pen does); any other kind of file there is left alone and reported as an error.
pub fn listen_unix(path: &Path, backlog: u32) -> io::Result<std::os::unix::net::UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket exists at this path; remove it or choose another path",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(backlog_arg(backlog))?;
    Ok(socket.into())
}

/// Converts a std Unix listener into a tokio one (must run inside the runtime).
pub fn unix_listener_to_tokio(l: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
    l.set_nonblocking(true)?;
    UnixListener::from_std(l)
}

fn backlog_arg(backlog: u32) -> i32 {
    i32::try_from(backlog).unwrap_or(i32::MAX)
}

/// Sets TCP_NODELAY on an accepted client socket (C Pen sets it on both sides with `tcp_nodelay`).
pub fn set_nodelay(stream: &TcpStream, on: bool) -> io::Result<()> {
    stream.set_nodelay(on)
}

/// Connects to `addr` within `timeout` with the upstream options. A timeout is reported as
/// `io::ErrorKind::TimedOut`. With `transparent`, a failure to connect from the client's
/// address (socket option, bind, `EADDRNOTAVAIL`, timeout) is an `io::Error` wrapping a
/// [`TransparentError`] (see [`transparent::error_of`]); there is no fallback to pen's own
/// address.
pub async fn connect(
    addr: &BackendAddr,
    opts: &UpstreamOptions,
    timeout: Duration,
) -> io::Result<Stream> {
    let spoofed = match addr {
        BackendAddr::Inet(sa) => match upstream_source(opts, *sa) {
            UpstreamSource::Client(ip) => Some((ip, *sa)),
            _ => None,
        },
        BackendAddr::Unix(_) => None,
    };
    let fut = async {
        match addr {
            BackendAddr::Inet(sa) => connect_tcp(*sa, opts).await.map(Stream::Tcp),
            BackendAddr::Unix(path) => UnixStream::connect(path).await.map(Stream::Unix),
        }
    };
    match (tokio::time::timeout(timeout, fut).await, spoofed) {
        (Ok(Err(e)), Some((client, backend)))
            if transparent::error_of(&e).is_none()
                && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
        {
            Err(TransparentError::connect(client, backend, e).into_io())
        }
        (Ok(r), _) => r,
        (Err(_), Some((client, backend))) => {
            Err(TransparentError::timed_out(client, backend, timeout).into_io())
        }
        (Err(_), None) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {} s", timeout.as_secs_f64()),
        )),
    }
}

/// Where an upstream socket to `dst` takes its source address from.
pub fn upstream_source(opts: &UpstreamOptions, dst: SocketAddr) -> UpstreamSource {
    transparent::choose_source(opts.source, opts.transparent, opts.client, dst)
}

async fn connect_tcp(addr: SocketAddr, opts: &UpstreamOptions) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if opts.keepalive {
        socket.set_keepalive(true)?;
    }
    if opts.nodelay {
        socket.set_nodelay(true)?;
    }
    match upstream_source(opts, addr) {
        UpstreamSource::Kernel => {}
        UpstreamSource::Configured(src) => socket.bind(SocketAddr::new(src, 0))?,
        UpstreamSource::Client(ip) => transparent::bind_as_client(SockRef::from(&socket), ip, addr)
            .map_err(TransparentError::into_io)?,
        UpstreamSource::FamilyMismatch { client } => {
            return Err(TransparentError::family_mismatch(client, addr).into_io());
        }
    }
    socket.connect(addr).await
}

/// Half-closes the write side of a socket (`shutdown(SHUT_WR)`). A peer that is already gone
/// (`ENOTCONN`) is not an error here.
pub fn shutdown_write<S: std::os::fd::AsFd>(s: &S) -> io::Result<()> {
    match SockRef::from(s).shutdown(std::net::Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_of_other_family_is_not_bound() {
        let opts = UpstreamOptions {
            source: Some("127.0.0.1".parse().unwrap()),
            ..UpstreamOptions::default()
        };
        let v6_dst: SocketAddr = "[::1]:80".parse().unwrap();
        let v4_dst: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(upstream_source(&opts, v6_dst), UpstreamSource::Kernel);
        assert_eq!(
            upstream_source(&opts, v4_dst),
            UpstreamSource::Configured("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn wildcard_v6_listener_accepts_v4_clients() {
        let l = listen_tcp("[::]:0".parse().unwrap(), 50).unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port));
        assert!(c.is_ok(), "v4 client could not reach [::]:{port}: {c:?}");
    }

    #[test]
    fn unix_listener_replaces_stale_socket_but_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        drop(listen_unix(&sock, 50).unwrap());
        assert!(
            listen_unix(&sock, 50).is_ok(),
            "stale socket was not replaced"
        );
        let file = dir.path().join("f");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(listen_unix(&file, 50).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }

    #[tokio::test]
    async fn connect_to_closed_port_fails_fast() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let r = connect(
            &BackendAddr::Inet(addr),
            &UpstreamOptions::default(),
            Duration::from_secs(1),
        )
        .await;
        assert!(r.is_err());
    }
}
