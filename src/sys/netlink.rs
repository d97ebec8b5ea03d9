//! One request/reply exchange with the kernel on a `NETLINK_ROUTE` socket (`netlink-sys`),
//! bounded to one second.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// How long [`route_request`] waits for the kernel's reply.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);
/// Receive buffer; a route reply is a few dozen bytes.
const RECV_BUF: usize = 8192;

/// Sends the netlink message `req` to the kernel on a fresh `NETLINK_ROUTE` socket and returns
/// the kernel's reply datagram (messages from other processes are skipped). Times out after
/// one second.
pub(crate) fn route_request(req: &[u8]) -> io::Result<Vec<u8>> {
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let mut socket =
        Socket::new(NETLINK_ROUTE).map_err(|e| ctx("cannot open a NETLINK_ROUTE socket", e))?;
    socket
        .bind_auto()
        .map_err(|e| ctx("cannot bind the NETLINK_ROUTE socket", e))?;
    let kernel = SocketAddr::new(0, 0);
    let sent = socket
        .send_to(req, &kernel, 0)
        .map_err(|e| ctx("cannot send the request", e))?;
    if sent != req.len() {
        return Err(io::Error::other(format!(
            "short send of the request: {sent} of {} bytes",
            req.len()
        )));
    }
    let deadline = Instant::now() + RECV_TIMEOUT;
    // Only the kernel's answer counts; skip anything another process sends to our port.
    for _ in 0..16 {
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = super::sockopt::poll_in(socket.as_raw_fd(), left)?;
        if !ready.readable && !ready.error {
            if left.is_zero() {
                break;
            }
            continue;
        }
        let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUF);
        let (n, from) = match socket.recv_from(&mut buf, libc::MSG_DONTWAIT) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(ctx("cannot receive the reply", e)),
        };
        if from.port_number() != 0 {
            continue;
        }
        if n > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("reply too large: {n} bytes, buffer holds {}", buf.len()),
            ));
        }
        return Ok(buf);
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "no reply from the kernel within 1 s",
    ))
}

/// Registers a netlink socket with the tokio reactor (for [`crate::proxy::udp::routes`]'s route
/// watch).
pub(crate) fn async_fd(
    sock: netlink_sys::Socket,
) -> std::io::Result<tokio::io::unix::AsyncFd<netlink_sys::Socket>> {
    // SAFETY: `netlink_sys::Socket` owns its descriptor (it closes it when dropped, and not
    // before), its `as_raw_fd` always returns that one, and the `AsyncFd` owns the socket for
    // as long as it is registered.
    unsafe { tokio::io::unix::AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)
}
