//! Everything the io_uring loop asks of the shared state, in one place (so a change to
//! `proxy::Shared` or the connection table touches only this file). Each function takes the
//! shared lock once, for a few counter updates, exactly as the tokio path
//! ([`crate::proxy::tcp`]) does at the same step of a connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use crate::config::{BackendAddr, FastClose};
use crate::proxy::forward::Counters;
use crate::proxy::sockets::{UpstreamOptions, upstream_source};
use crate::proxy::tcp::{self, ConnTable, RemoteClose};
use crate::proxy::transparent::{self, TransparentError, UpstreamSource};
use crate::proxy::{SharedState, lock, now, resources};
use crate::select::{Client, Target};

/// Per-connection settings, copied out of the configuration when the connection is accepted
/// (as the tokio path's `ConnSettings`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub connect_timeout: Duration,
    pub upstream: UpstreamOptions,
    pub client_nodelay: bool,
    pub fastclose: FastClose,
    pub idle_timeout: Option<Duration>,
}

/// Why a connection cannot take the io_uring path with the configuration in force (TLS, `-H`,
/// the request log: they stay on tokio), or `None` when it can.
pub(crate) fn tokio_only_feature(shared: &SharedState) -> Option<&'static str> {
    let g = lock(shared);
    if g.io.tls.is_some() {
        Some("TLS termination (-E) runs on the tokio path")
    } else if g.config.http {
        Some("-H (X-Forwarded-For) runs on the tokio path")
    } else if g.config.proxy_protocol_in_use() {
        Some("PROXY protocol (proxy_protocol, accept_proxy, server N proxy) runs on the tokio path")
    } else {
        None
    }
}

/// `Balancer::select` for a new client, and the settings in force.
pub(crate) fn select(shared: &SharedState, client: &Client) -> (Vec<Target>, Settings) {
    let mut g = lock(shared);
    let candidates = g.balancer.select(client, now());
    let c = &g.config;
    let s = Settings {
        connect_timeout: Duration::from_secs(c.connect_timeout_secs.max(1)),
        upstream: UpstreamOptions {
            source: c.source,
            keepalive: c.keepalive,
            nodelay: c.tcp_nodelay,
            transparent: c.transparent,
            client: client.ip,
        },
        client_nodelay: c.tcp_nodelay,
        fastclose: c.tcp_fastclose,
        idle_timeout: (c.idle_timeout_secs > 0).then(|| Duration::from_secs(c.idle_timeout_secs)),
    };
    (candidates, s)
}

/// `-l`: logs the first bytes the client sent on a connection to `target` (the loop calls
/// this with its first receive, as the tokio path peeks them), when a request log is open.
pub(crate) fn log_first_request(
    shared: &SharedState,
    client: &Client,
    target: Target,
    chunk: &[u8],
) {
    if let Some(log) = crate::proxy::tcp::request_logger(client, target, shared) {
        log(chunk);
    }
}

/// Starts a connect attempt to `target` (re-checked: limits and blacklists may have changed
/// since `select`): its address, or `None` when the candidate is out.
pub(crate) fn begin_attempt(
    shared: &SharedState,
    target: Target,
    client: &Client,
) -> Option<BackendAddr> {
    let mut g = lock(shared);
    let t = now();
    if !g.balancer.try_server(target, client, t) {
        return None;
    }
    let addr = g.balancer.addr(target).cloned()?;
    g.balancer.connect_started(client, target, t);
    Some(addr)
}

/// The attempt connected.
pub(crate) fn attempt_ok(shared: &SharedState, target: Target) {
    let mut g = lock(shared);
    let t = now();
    g.balancer.connect_ok(target, t);
    tcp::recovered(&mut g, t);
    crate::proxy::log_server_events(&mut g, None);
}

/// The attempt ended without a verdict on the server (pen's own shortage or refusal, or pen
/// closing the client meanwhile).
pub(crate) fn attempt_abandoned(shared: &SharedState, target: Target) {
    lock(shared).balancer.connect_abandoned(target);
}

/// What a failed attempt means for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Try the next candidate.
    Next,
    /// Pen is short of descriptors, ports or memory: not the server's fault.
    Short,
    /// No candidate can work (`transparent` without the capability).
    GiveUp,
}

/// A failed attempt (`e` from the socket set-up or the connect): blacklists the server when it
/// is its fault, exactly as the tokio path's `try_connect`.
pub(crate) fn attempt_failed(
    shared: &SharedState,
    who: &str,
    target: Target,
    addr: &BackendAddr,
    e: &io::Error,
) -> AfterFailure {
    if let Some(t) = transparent::error_of(e) {
        transparent::record(shared, who, t);
        if t.is_local() {
            attempt_abandoned(shared, target);
            return if t.affects_every_backend() {
                AfterFailure::GiveUp
            } else {
                AfterFailure::Next
            };
        }
        failed(
            shared,
            target,
            "connect from the client's address failed (transparent proxy, logged above)",
        );
        return AfterFailure::Next;
    }
    if resources::is_local_resource_error(e) {
        attempt_abandoned(shared, target);
        tcp::shortage(shared, &format!("{who}: connect to {}", show(addr)), e);
        return AfterFailure::Short;
    }
    tracing::info!("{who}: connect to {target:?} at {} failed: {e}", show(addr));
    failed(shared, target, &format!("connect failed: {e}"));
    AfterFailure::Next
}

fn failed(shared: &SharedState, target: Target, reason: &str) {
    let mut g = lock(shared);
    g.balancer.connect_failed(target, now());
    crate::proxy::log_server_events(&mut g, Some((target, reason)));
}

/// A local resource error of `accept`.
pub(crate) fn accept_shortage(shared: &SharedState, e: &io::Error) {
    tcp::shortage(shared, "accept", e);
}

/// The error of a connect completion (`errno`), as the tokio path reports it: a timeout or
/// `EADDRNOTAVAIL` with `transparent` become the transparent errors.
pub(crate) fn connect_error(
    errno: i32,
    timed_out: bool,
    addr: &BackendAddr,
    opts: &UpstreamOptions,
    timeout: Duration,
) -> io::Error {
    let spoofed = match addr {
        BackendAddr::Inet(sa) => match upstream_source(opts, *sa) {
            UpstreamSource::Client(ip) => Some((ip, *sa)),
            _ => None,
        },
        BackendAddr::Unix(_) => None,
    };
    match (timed_out, spoofed) {
        (true, Some((c, b))) => TransparentError::timed_out(c, b, timeout).into_io(),
        (true, None) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {} s", timeout.as_secs_f64()),
        ),
        (false, Some((c, b))) if errno == libc::EADDRNOTAVAIL => {
            TransparentError::connect(c, b, io::Error::from_raw_os_error(errno)).into_io()
        }
        (false, _) => io::Error::from_raw_os_error(errno),
    }
}

/// The upstream socket to `addr` with pen's options (keepalive, nodelay, `source`,
/// `transparent` as [`crate::proxy::sockets`] sets them), not yet connected: the loop connects
/// it through the ring.
pub(crate) fn upstream_socket(
    addr: &BackendAddr,
    opts: &UpstreamOptions,
) -> io::Result<(Socket, SockAddr)> {
    match addr {
        BackendAddr::Unix(p) => {
            let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
            Ok((s, SockAddr::unix(p)?))
        }
        BackendAddr::Inet(sa) => {
            let s = Socket::new(Domain::for_address(*sa), Type::STREAM.cloexec(), None)?;
            if opts.keepalive {
                s.set_keepalive(true)?;
            }
            if opts.nodelay {
                s.set_tcp_nodelay(true)?;
            }
            match upstream_source(opts, *sa) {
                UpstreamSource::Kernel => {}
                UpstreamSource::Configured(src) => s.bind(&SocketAddr::new(src, 0).into())?,
                UpstreamSource::Client(ip) => {
                    transparent::bind_as_client(SockRef::from(&s), ip, *sa)
                        .map_err(TransparentError::into_io)?
                }
                UpstreamSource::FamilyMismatch { client } => {
                    return Err(TransparentError::family_mismatch(client, *sa).into_io());
                }
            }
            Ok((s, SockAddr::from(*sa)))
        }
    }
}

/// Lists a new connection in the table (`close N` calls `close`).
pub(crate) fn register(
    conns: &ConnTable,
    who: String,
    fd: i32,
    counters: Arc<Counters>,
    close: RemoteClose,
) -> usize {
    conns.insert_remote(who, fd, counters, close)
}

/// The connection is connected to `target`.
pub(crate) fn connected(conns: &ConnTable, idx: usize, target: Target, upfd: i32) {
    conns.set_upstream(idx, target, upfd);
}

/// An established connection closed: its byte counts go to the balancer, under the same lock
/// as the table's `bytes_reported` (as the tokio path's `Established`).
pub(crate) fn closed(
    shared: &SharedState,
    conns: &ConnTable,
    idx: usize,
    target: Target,
    client: &Client,
    counters: &Counters,
) {
    let (sx, rx) = (counters.to_server(), counters.from_server());
    let mut g = lock(shared);
    g.balancer.closed(target, client, sx, rx, now());
    conns.bytes_reported(idx);
}

/// The connection is gone from the table.
pub(crate) fn unregister(conns: &ConnTable, idx: usize) {
    conns.remove_entry(idx);
}

fn show(addr: &BackendAddr) -> String {
    match addr {
        BackendAddr::Inet(sa) => sa.to_string(),
        BackendAddr::Unix(p) => p.display().to_string(),
    }
}
