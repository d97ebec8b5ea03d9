//! The client side: the listener loop (client → server). One `recvmmsg` batch at a time goes
//! through the table under one lock; the datagrams then leave on their upstream sockets, one
//! `sendmmsg` per socket, and established flows are offered to the kernel fast path.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::upstream::{UpstreamSocketError, handle_errqueue, recv_once, upstream_socket};
use super::{Inner, Lazy, UdpContext, lock};
use crate::acl::canonical;
use crate::proxy::transparent::TransparentError;
use crate::proxy::udp::flow::{ClientVerdict, DropReason, UpstreamId};
use crate::proxy::udp::mmsg::{BATCH, RecvBatch, send_batch};

pub(super) async fn client_loop<C: UdpContext>(inner: &Arc<Inner<C>>) -> io::Result<()> {
    let mut batch = if inner.wildcard {
        RecvBatch::with_destinations()
    } else {
        RecvBatch::new()
    };
    let fd = inner.listener.as_raw_fd();
    // (upstream, server, client, datagram index) of the current batch.
    let mut out: Vec<(UpstreamId, SocketAddr, SocketAddr, usize)> = Vec::with_capacity(BATCH);
    // Established flows of the batch to hand to the kernel once their datagram is sent.
    let mut offers: Vec<(SocketAddr, UpstreamId)> = Vec::new();
    let mut errors = 0u32;
    loop {
        let n = match recv_draining(&inner.listener, &mut batch, fd).await {
            Ok(n) => {
                errors = 0;
                n
            }
            Err(e) => {
                // ICMP errors about clients (ECONNREFUSED) and transient errors: keep going,
                // but do not spin on a broken socket.
                errors += 1;
                tracing::debug!(error = %e, "udp listener recv");
                if errors > 100 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        let now = inner.ctx.now();
        out.clear();
        let mut created = false;
        let pools_dropped = {
            let mut table = lock(&inner.table);
            let dropped_before = table.stats().client_pools_dropped;
            for i in 0..n {
                let Some((data, Some(client))) = batch.get(i) else {
                    continue;
                };
                match table.handle_client(now, client, data.len(), &mut Lazy(&inner.ctx)) {
                    ClientVerdict::Forward {
                        upstream,
                        server,
                        new_flow,
                    } => {
                        created |= new_flow;
                        if !new_flow && table.wants_offload(&client) {
                            offers.push((client, upstream));
                        }
                        out.push((upstream, server, client, i));
                        if let Some(local) = batch.dst(i) {
                            table.note_local(&client, local);
                        }
                    }
                    ClientVerdict::Drop(DropReason::FamilyMismatch { server }) => {
                        // No fallback to pen's own address: logged and counted, dropped.
                        let err = TransparentError::family_mismatch(canonical(client.ip()), server);
                        inner.ctx.transparent_failed(client, &err);
                    }
                    verdict => tracing::trace!(%client, ?verdict, "udp datagram dropped"),
                }
            }
            table.stats().client_pools_dropped != dropped_before
        };
        if pools_dropped {
            // Pools dropped to make room for new ones: close their sockets before the new
            // ones open, so the bound holds.
            let mut pools = lock(&inner.pools);
            pools.sync_clients(|ip| lock(&inner.table).client_pool(ip));
        }
        if created {
            inner.created.notify_one();
        }
        // One sendmmsg per upstream socket, in arrival order within each.
        out.sort_by_key(|&(u, _, _, i)| (u, i));
        let mut rest = &out[..];
        while let Some(&(upstream, ..)) = rest.first() {
            let k = rest.iter().take_while(|m| m.0 == upstream).count();
            let (group, tail) = rest.split_at(k);
            rest = tail;
            send_group(inner, &batch, upstream, group, now).await;
        }
        if !offers.is_empty() {
            offer(inner, &offers);
            offers.clear();
        }
        // Offers, and the flows that left (evicted, failed): to the kernel, outside the
        // table's lock.
        inner.kernel.drain(&inner.table);
    }
}

/// Offers established flows to the kernel fast path (not transparent ones: their datagrams
/// carry the client's address, which the fast path does not do). The table queues the
/// installs; [`super::KernelSlot::drain`] carries them out.
fn offer<C: UdpContext>(inner: &Inner<C>, offers: &[(SocketAddr, UpstreamId)]) {
    let locals: Vec<Option<SocketAddr>> = {
        let pools = lock(&inner.pools);
        offers
            .iter()
            .map(|(_, u)| {
                if u.bound.is_some() {
                    return None;
                }
                pools.get(*u)?.local_addr().ok()
            })
            .collect()
    };
    let mut table = lock(&inner.table);
    for ((client, _), local) in offers.iter().zip(locals) {
        if let Some(local) = local {
            table.offload(client, inner.listen, local);
        }
    }
}

/// Send one batch's datagrams for one upstream socket: `sendmmsg`, then one by one (awaiting
/// room, handling errors) for whatever it did not take.
async fn send_group<C: UdpContext>(
    inner: &Arc<Inner<C>>,
    batch: &RecvBatch,
    upstream: UpstreamId,
    group: &[(UpstreamId, SocketAddr, SocketAddr, usize)],
    now: Duration,
) {
    let first_server = group.first().map(|&(_, server, ..)| server);
    let sock = match upstream_socket(inner, upstream, first_server) {
        Ok(s) => s,
        Err(e) => {
            let mut table = lock(&inner.table);
            match &e {
                // A socket bound to the client's address (no CAP_NET_ADMIN, ...): the client's
                // flows cannot be transparent, and never fall back to pen's own address.
                UpstreamSocketError::Transparent(t) => {
                    for &(_, _, client, _) in group {
                        inner.ctx.transparent_failed(client, t);
                    }
                }
                UpstreamSocketError::Open { .. } | UpstreamSocketError::TooFar { .. } => {
                    tracing::warn!(error = %e, ?upstream, "cannot open a UDP upstream socket; dropping the flows")
                }
            }
            for &(_, _, client, _) in group {
                table.remove_flow(now, client, &mut Lazy(&inner.ctx));
            }
            return;
        }
    };
    let msgs: Vec<(&[u8], SocketAddr, Option<IpAddr>)> = group
        .iter()
        .map(|&(_, server, _, i)| (batch.get(i).map_or(&[][..], |(d, _)| d), server, None))
        .collect();
    let fd = sock.as_raw_fd();
    let sent = sock
        .try_io(Interest::WRITABLE, || send_batch(fd, &msgs))
        .unwrap_or(0);
    for &(data, server, _) in msgs.iter().skip(sent) {
        send_one(inner, &sock, upstream, data, server, now).await;
    }
}

async fn send_one<C: UdpContext>(
    inner: &Arc<Inner<C>>,
    sock: &UdpSocket,
    upstream: UpstreamId,
    data: &[u8],
    server: SocketAddr,
    now: Duration,
) {
    let mut result = sock.send_to(data, server).await;
    if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED)) {
        // A pending ICMP error of another server surfaced on this shared socket: account
        // for it from the error queue, then send ours again.
        handle_errqueue(inner, sock, upstream);
        result = sock.send_to(data, server).await;
    }
    if let Err(e) = result {
        if send_error_blames_server(&e) {
            tracing::debug!(error = %e, %server, "udp send failed; server unreachable");
            let mut table = lock(&inner.table);
            table.server_unreachable(now, upstream, server, &mut Lazy(&inner.ctx));
        } else {
            tracing::debug!(error = %e, %server, "udp send failed; datagram dropped");
        }
    }
}

/// Local shortages (no buffers, no memory, no usable local address) are pen's own problem and
/// never blame the server (see [`crate::proxy::resources::is_local_resource_error`]).
fn send_error_blames_server(e: &io::Error) -> bool {
    !crate::proxy::resources::is_local_resource_error(e)
        && matches!(
            e.raw_os_error(),
            Some(
                libc::ENETUNREACH
                    | libc::EHOSTUNREACH
                    | libc::ECONNREFUSED
                    | libc::EACCES
                    | libc::EPERM
                    | libc::EAFNOSUPPORT
            )
        )
}

/// Waits until `sock` is readable and receives one batch (see [`recv_once`]).
async fn recv_draining(sock: &UdpSocket, batch: &mut RecvBatch, fd: RawFd) -> io::Result<usize> {
    loop {
        sock.readable().await?;
        match recv_once(sock, batch, fd) {
            Ok((n, _)) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod send_error_tests {
    use super::send_error_blames_server;
    use std::io;

    #[test]
    fn local_shortages_never_blame_the_server() {
        for errno in [
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EADDRNOTAVAIL,
            libc::EMFILE,
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(!send_error_blames_server(&e), "{e}");
        }
        for errno in [libc::ENETUNREACH, libc::EHOSTUNREACH, libc::ECONNREFUSED] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(send_error_blames_server(&e), "{e}");
        }
    }
}
