//! The upstream side: the pools of upstream sockets (shared per family, or bound to a
//! client's address for transparent flows), one reader task per socket (server → client,
//! replies sent from the listener), and ICMP errors through `IP_RECVERR`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::{Inner, Lazy, UdpContext, lock};
use crate::proxy::read_draining;
use crate::proxy::transparent::{self, TransparentError};
use crate::proxy::udp::flow::{Family, UpstreamId};
use crate::proxy::udp::mmsg::{BATCH, RecvBatch, recv_err, send_batch};

/// Why an upstream socket could not be had.
#[derive(Debug, thiserror::Error)]
pub(super) enum UpstreamSocketError {
    #[error("cannot open upstream socket {index} of {pool}")]
    Open {
        /// "the shared IPv4 pool", "the pool bound to 192.0.2.7", ...
        pool: String,
        index: u32,
        #[source]
        source: io::Error,
    },
    /// A socket bound to the client's address (transparent flows): no CAP_NET_ADMIN, ...
    #[error(transparent)]
    Transparent(#[from] TransparentError),
    #[error("upstream socket index {index} is beyond this platform's address space")]
    TooFar { index: u32 },
}

/// The upstream socket `id`, creating its pool up to it (and their reader tasks) if needed.
/// `server`: where the flows go (names the backend in a transparent failure).
pub(super) fn upstream_socket<C: UdpContext>(
    inner: &Arc<Inner<C>>,
    id: UpstreamId,
    server: Option<SocketAddr>,
) -> Result<Arc<UdpSocket>, UpstreamSocketError> {
    let too_far = UpstreamSocketError::TooFar { index: id.index };
    let index = usize::try_from(id.index).map_err(|_| too_far)?;
    let mut pools = lock(&inner.pools);
    if let Some(s) = pools.get(id) {
        return Ok(Arc::clone(s));
    }
    let source = *lock(&inner.source);
    while pools.list(id).len() <= index {
        let i = pools.list(id).len();
        // `i` is below `index`, a u32.
        let uid = UpstreamId {
            index: u32::try_from(i).map_err(|_| UpstreamSocketError::TooFar { index: id.index })?,
            ..id
        };
        let open = |source| UpstreamSocketError::Open {
            pool: match (id.bound, id.family) {
                (Some(ip), _) => format!("the pool bound to {ip}"),
                (None, Family::V4) => "the shared IPv4 pool".to_string(),
                (None, Family::V6) => "the shared IPv6 pool".to_string(),
            },
            index: uid.index,
            source,
        };
        let sock = Arc::new(match id.bound {
            None => new_upstream(id.family, source).map_err(open)?,
            Some(ip) => match new_client_upstream(ip, server) {
                Ok(s) => s,
                Err(ClientSocketError::Transparent(t)) => return Err(t.into()),
                Err(ClientSocketError::Io(e)) => return Err(open(e)),
            },
        });
        let task = tokio::spawn(upstream_loop(Arc::clone(inner), Arc::clone(&sock), uid));
        pools.tasks.push((uid, task.abort_handle()));
        pools.list(id).push(sock);
    }
    pools
        .get(id)
        .cloned()
        .ok_or(UpstreamSocketError::TooFar { index: id.index })
}

/// Why a socket bound to a client's address could not be opened.
#[derive(Debug, thiserror::Error)]
enum ClientSocketError {
    #[error(transparent)]
    Transparent(#[from] TransparentError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// An unconnected UDP socket on an ephemeral port with `IP_RECVERR`/`IPV6_RECVERR`, so that
/// ICMP errors (port unreachable) are queued with the address of the server that caused them.
fn new_upstream(family: Family, source: Option<IpAddr>) -> io::Result<UdpSocket> {
    let (domain, any, level, opt): (Domain, IpAddr, libc::c_int, libc::c_int) = match family {
        Family::V4 => (
            Domain::IPV4,
            Ipv4Addr::UNSPECIFIED.into(),
            libc::SOL_IP,
            libc::IP_RECVERR,
        ),
        Family::V6 => (
            Domain::IPV6,
            Ipv6Addr::UNSPECIFIED.into(),
            libc::SOL_IPV6,
            libc::IPV6_RECVERR,
        ),
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if family == Family::V6 {
        sock.set_only_v6(true)?;
    }
    crate::proxy::sockets::set_int_option(sock.as_raw_fd(), level, opt, 1)?;
    let ip = match source {
        Some(ip) if ip.is_ipv4() == (family == Family::V4) => ip,
        _ => any,
    };
    sock.bind(&SocketAddr::new(ip, 0).into())?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

/// A socket of a transparent flow: `IP_TRANSPARENT` / `IPV6_TRANSPARENT`, bound to the
/// client's address `ip` (port chosen by the kernel) as C Pen binds its upstream socket, with
/// `IP_RECVERR` / `IPV6_RECVERR` as [`new_upstream`]. Answers are addressed to this socket,
/// so the host's mark rule finds it with iptables' `-m socket` too (which ignores sockets
/// bound to the wildcard address unless given `--nowildcard`). Binding to the client's
/// address fails as a [`TransparentError`] (no CAP_NET_ADMIN, ...).
fn new_client_upstream(
    ip: IpAddr,
    server: Option<SocketAddr>,
) -> Result<UdpSocket, ClientSocketError> {
    let (domain, level, opt) = match ip {
        IpAddr::V4(_) => (Domain::IPV4, libc::SOL_IP, libc::IP_RECVERR),
        IpAddr::V6(_) => (Domain::IPV6, libc::SOL_IPV6, libc::IPV6_RECVERR),
    };
    let backend = server.unwrap_or_else(|| SocketAddr::new(ip, 0));
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if ip.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    crate::proxy::sockets::set_int_option(sock.as_raw_fd(), level, opt, 1)?;
    transparent::bind_as_client(socket2::SockRef::from(&sock), ip, backend)?;
    sock.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(sock.into())?)
}

thread_local! {
    /// The reply path's buffers, shared by the upstream readers of the data path's thread
    /// (never held across an `.await`).
    static REPLY_BATCH: std::cell::RefCell<RecvBatch> = std::cell::RefCell::new(RecvBatch::new());
}

/// `recvmmsg` calls per readiness event before waiting again.
const ROUNDS: usize = 8;

async fn upstream_loop<C: UdpContext>(inner: Arc<Inner<C>>, sock: Arc<UdpSocket>, id: UpstreamId) {
    loop {
        let ready = match sock.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, ?id, "udp upstream socket failed");
                return;
            }
        };
        // An ICMP error can also cut a batch short while datagrams are still queued (the
        // kernel reports a pending socket error before the queue): after one, read on
        // without trusting a short batch until the queue says EAGAIN.
        let after_error = ready.is_error();
        if after_error {
            handle_errqueue(&inner, &sock, id);
        }
        if ready.is_readable() || after_error {
            for _ in 0..ROUNDS {
                match forward_replies(&inner, &sock, id, after_error) {
                    Ok(Drained::Yes) => break,
                    Ok(Drained::Maybe) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) || is_icmp_error(&e) => {
                        handle_errqueue(&inner, &sock, id);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, ?id, "udp upstream recv");
                        break;
                    }
                }
            }
        }
    }
}

fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENONET)
    )
}

/// Whether a `recvmmsg` emptied the socket's queue.
pub(super) enum Drained {
    /// It returned fewer datagrams than it asked for: the queue is empty and the readiness
    /// was cleared (the next datagram brings a new epoll edge).
    Yes,
    /// A full batch: there may be more.
    Maybe,
}

/// One `recvmmsg` on a readable socket. A short batch means the receive queue is empty, so
/// the readiness is cleared with it ([`read_draining`]) instead of by a further call that ends
/// in EAGAIN.
pub(super) fn recv_once(
    sock: &UdpSocket,
    batch: &mut RecvBatch,
    fd: RawFd,
) -> io::Result<(usize, Drained)> {
    let (n, drained) = read_draining(
        |f| sock.try_io(Interest::READABLE, f),
        || batch.recv(fd),
        |&n| n > 0 && n < BATCH,
    )?;
    Ok((
        n,
        if drained {
            Drained::Yes
        } else {
            Drained::Maybe
        },
    ))
}

/// Receive a batch of datagrams from servers on `sock` and send each to its flow's client from
/// the listening socket. Err(WouldBlock) when there is nothing to read.
/// `direct`: call `recvmmsg` whatever tokio's readiness says, and never report `Drained::Yes`
/// (used after an ICMP error).
fn forward_replies<C: UdpContext>(
    inner: &Inner<C>,
    sock: &UdpSocket,
    id: UpstreamId,
    direct: bool,
) -> io::Result<Drained> {
    REPLY_BATCH.with(|cell| {
        let mut batch = cell.borrow_mut();
        let fd = sock.as_raw_fd();
        let (n, drained) = if direct {
            (batch.recv(fd)?, Drained::Maybe)
        } else {
            recv_once(sock, &mut batch, fd)?
        };
        let now = inner.ctx.now();
        let mut msgs: Vec<(&[u8], SocketAddr, Option<IpAddr>)> = Vec::with_capacity(n);
        {
            let mut table = lock(&inner.table);
            for i in 0..n {
                let Some((data, Some(from))) = batch.get(i) else {
                    continue;
                };
                if let Some(client) = table.handle_server(now, id, from, data.len()) {
                    let local = if inner.wildcard {
                        table.local_of(&client)
                    } else {
                        None
                    };
                    msgs.push((data, client, local));
                }
            }
        }
        let lfd = inner.listener.as_raw_fd();
        let sent = inner
            .listener
            .try_io(Interest::WRITABLE, || send_batch(lfd, &msgs))
            .unwrap_or(0);
        for m in msgs.iter().skip(sent) {
            let one = inner.listener.try_io(Interest::WRITABLE, || {
                send_batch(lfd, std::slice::from_ref(m))
            });
            if let Err(e) = one {
                // Listener send buffer full (or the client is gone): UDP may drop.
                tracing::trace!(error = %e, client = %m.1, "udp reply dropped");
            }
        }
        Ok(drained)
    })
}

/// Drain the socket's error queue and report every unreachable server to the table.
pub(super) fn handle_errqueue<C: UdpContext>(inner: &Inner<C>, sock: &UdpSocket, id: UpstreamId) {
    let fd = sock.as_raw_fd();
    let mut offenders = Vec::new();
    // try_io clears the ERROR readiness when the queue is empty (WouldBlock).
    let _ = sock.try_io(Interest::ERROR, || {
        for _ in 0..64 {
            let (addr, errno) = recv_err(fd)?;
            if let Some(addr) = addr
                && matches!(
                    i32::try_from(errno).unwrap_or(0),
                    libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN
                )
            {
                offenders.push(addr);
            }
        }
        Ok(())
    });
    if offenders.is_empty() {
        return;
    }
    let now = inner.ctx.now();
    {
        let mut table = lock(&inner.table);
        for server in offenders {
            let client = table.server_unreachable(now, id, server, &mut Lazy(&inner.ctx));
            tracing::debug!(%server, ?client, "udp server unreachable (ICMP)");
        }
    }
    // Their flows leave the kernel fast path too.
    inner.kernel.drain(&inner.table);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_upstream_socket_error_names_its_pool_and_keeps_its_cause() {
        let e = UpstreamSocketError::Open {
            pool: "the pool bound to 192.0.2.7".to_string(),
            index: 3,
            source: io::Error::from_raw_os_error(libc::EMFILE),
        };
        assert_eq!(
            e.to_string(),
            "cannot open upstream socket 3 of the pool bound to 192.0.2.7"
        );
        let cause = e.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(cause.and_then(io::Error::raw_os_error), Some(libc::EMFILE));
        // A transparent failure stays a `TransparentError`, for the transparent report.
        let t = TransparentError::family_mismatch(
            "192.0.2.7".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap(),
        );
        let e = UpstreamSocketError::from(t);
        assert!(matches!(e, UpstreamSocketError::Transparent(_)));
        assert!(e.to_string().contains("2001:db8::1"), "{e}");
    }
}
