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

/// Socket options for upstream (server-side) connections, from the `Config`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// `source IP`: bind the upstream socket to this address (port 0) before connecting.
    pub source: Option<IpAddr>,
    /// `keepalive`: SO_KEEPALIVE.
    pub keepalive: bool,
    /// `tcp_nodelay`: TCP_NODELAY.
    pub nodelay: bool,
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
/// `io::ErrorKind::TimedOut`.
pub async fn connect(
    addr: &BackendAddr,
    opts: &UpstreamOptions,
    timeout: Duration,
) -> io::Result<Stream> {
    let fut = async {
        match addr {
            BackendAddr::Inet(sa) => connect_tcp(*sa, opts).await.map(Stream::Tcp),
            BackendAddr::Unix(path) => UnixStream::connect(path).await.map(Stream::Unix),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {} s", timeout.as_secs_f64()),
        )),
    }
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
    if let Some(src) = opts.source.and_then(|s| source_for(s, addr)) {
        socket.bind(SocketAddr::new(src, 0))?;
    }
    socket.connect(addr).await
}

/// The `source` address usable for a backend of `dst`'s family; a family mismatch means "no
/// source binding" (the kernel picks the address).
fn source_for(src: IpAddr, dst: SocketAddr) -> Option<IpAddr> {
    match (src, dst) {
        (IpAddr::V4(_), SocketAddr::V4(_)) | (IpAddr::V6(_), SocketAddr::V6(_)) => Some(src),
        _ => None,
    }
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
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6_dst: SocketAddr = "[::1]:80".parse().unwrap();
        let v4_dst: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(source_for(v4, v6_dst), None);
        assert_eq!(source_for(v4, v4_dst), Some(v4));
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
