//! The data path (tokio). Thin: every decision comes from `select`.
//!
//! - [`health`]: runs the active health checks' probes (TCP connect, HTTP), bounded in
//!   number and time, and feeds their results to the state.
//! - [`forward`]: moves bytes between a client and its upstream (splice or copy).
//! - [`sockets`]: listeners and upstream connects with pen's socket options.
//! - [`tcp`]: the accept loop and the per-connection task (select, connect walk, forward).
//! - `uring` (Linux): the completion-based TCP path, one io_uring loop thread serving plain
//!   TCP (the default where io_uring works); [`tcp`] serves TLS, `-H`, `-l`, the PROXY
//!   protocol and Unix sockets.
//!
//! Shared state: one [`Shared`] per pen process behind a std mutex ([`SharedState`]), held only
//! for short non-async sections (never across an `.await`). The daemon owns it and hands clones
//! of the `Arc` to the listener tasks (TCP, UDP, DSR) and the control plane. It is the pure
//! [`State`] (what the decisions and reports read) plus the IO [`Handles`] (TLS terminator, UDP
//! table, servers-changed hook, connection table), which the shells use and the pure modules
//! never see.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::state::{OpenConns, State};

pub mod forward;
pub mod health;
pub mod http;
pub mod resources;
pub(crate) mod sockets;
pub mod tcp;
pub mod tls;
pub(crate) mod transparent;
pub mod udp;
#[cfg(target_os = "linux")]
pub mod uring;

/// The running state of the process: the pure [`State`] (configuration, balancer, counters,
/// published UDP and tarpit status) and the IO [`Handles`] beside it, behind one lock.
///
/// `Shared` dereferences to its [`State`], so the data path reads `g.config` and
/// `g.balancer` as before, and a guard passes as `&mut State` to the pure
/// [`crate::ctl::reply`] and [`crate::stats`]; the handles are reached as `g.io`.
#[derive(Debug)]
pub struct Shared {
    pub state: State,
    pub io: Handles,
}

/// What the daemon holds beside the pure state: live objects that do IO when used.
#[derive(Debug, Default)]
pub struct Handles {
    /// The open TCP connections (`close N`, and the [`OpenConns`] view the reports read).
    /// Lock order: the state, then the table.
    pub conns: Arc<tcp::ConnTable>,
    /// TLS termination in force (`-E`); `None` = plain TCP. Replaced on reload (`tls::reload`).
    pub tls: Option<Arc<tls::Terminator>>,
    /// The live UDP flow table (`-U`), for `close N`. Lock order: the table, then the state.
    pub udp_table: Option<udp::UdpHandle>,
    /// Told when a control command or a configuration re-read may have changed the servers
    /// (DSR's kernel fast path drops its cached choices at once; see [`crate::link::xdp`]).
    pub on_servers_changed: Option<ChangeHook>,
}

/// A callback for [`Handles::on_servers_changed`].
#[derive(Clone)]
pub struct ChangeHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ChangeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeHook")
    }
}

impl Shared {
    /// A fresh balancer for `config` (servers with literal addresses only; the daemon sets
    /// resolved host names with `Balancer::set_server`), no IO handles yet.
    pub fn new(config: Config) -> Shared {
        Shared {
            state: State::new(config),
            io: Handles::default(),
        }
    }
}

impl std::ops::Deref for Shared {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Shared {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Handles {
    /// The open connections for the reports. Call with the state's lock held (see
    /// [`OpenConns`]).
    pub fn open_conns(&self) -> OpenConns {
        OpenConns {
            rows: self.conns.rows(),
            unreported: self.conns.open_bytes(),
        }
    }
}

/// Runs the [`Handles::on_servers_changed`] hook, if any, without holding the state's lock
/// (the hook may talk to the kernel: DSR's fast path drops its cached choices).
pub fn tell_servers_changed(shared: &SharedState) {
    let hook = lock(shared).io.on_servers_changed.clone();
    if let Some(h) = hook {
        (h.0)();
    }
}

/// The handle every task holds.
pub type SharedState = Arc<Mutex<Shared>>;

/// Logs (at the default level, warn) the servers that went down or came back since the last
/// call. `failure` names the reason of a `Down` for that target; other `Down`s were recorded
/// elsewhere (a UDP flow's failure) and get a generic reason.
pub fn log_server_events(g: &mut State, failure: Option<(crate::select::Target, &str)>) {
    let (events, dropped) = g.balancer.take_events();
    for e in &events {
        let reason = match (e, failure) {
            (crate::select::ServerEvent::Down { target, .. }, Some((t, r))) if *target == t => r,
            _ => "no answer (connect failed or an ICMP error came back)",
        };
        tracing::warn!(
            "{}",
            crate::stats::server_event_line(e, &g.balancer, reason)
        );
    }
    if dropped > 0 {
        tracing::warn!("{dropped} more server state changes were not logged");
    }
}

/// How often [`watch_server_events`] looks for server state changes the data path did not log
/// itself (UDP flows).
pub const SERVER_EVENTS_EVERY: Duration = Duration::from_secs(1);

/// Logs server state changes every [`SERVER_EVENTS_EVERY`]; runs until aborted.
pub async fn watch_server_events(shared: SharedState) {
    loop {
        tokio::time::sleep(SERVER_EVENTS_EVERY).await;
        log_server_events(&mut lock(&shared), None);
    }
}

/// Locks the shared state. A panic in another holder does not leave the data half-updated in
/// a way that matters here (every section is a few counter updates), so a poisoned lock is
/// used as is rather than taking the whole balancer down.
pub fn lock(shared: &SharedState) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The balancer's clock: monotonic time since the first call in this process.
pub fn now() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// One non-blocking read through a tokio socket's `try_io` (`try_io` is that call, bound to the
/// socket and `Interest::READABLE`) that also tells whether it emptied the source.
///
/// When `drained` says the value read left the receive queue empty (a short read of a stream
/// socket, a short `recvmmsg` batch), the readiness is cleared with this very call instead of by
/// a further read that ends in EAGAIN. That is safe because tokio clears only the readiness it
/// observed before the call: an edge that arrived meanwhile keeps it set, and "read closed" is
/// never cleared, so neither new data nor a FIN that came with the data is missed.
///
/// Returns the value and whether the source was drained; `Err(WouldBlock)` when there was
/// nothing to read.
pub(crate) fn read_draining<T: Copy>(
    try_io: impl FnOnce(&mut dyn FnMut() -> io::Result<T>) -> io::Result<T>,
    mut read: impl FnMut() -> io::Result<T>,
    drained: impl Fn(&T) -> bool,
) -> io::Result<(T, bool)> {
    let mut got = None;
    let r = try_io(&mut || {
        let v = read()?;
        if drained(&v) {
            got = Some(v);
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(v)
        }
    });
    match (r, got) {
        (Ok(v), _) => Ok((v, false)),
        (Err(e), Some(v)) if e.kind() == io::ErrorKind::WouldBlock => Ok((v, true)),
        (Err(e), _) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_conns_leaves_out_the_bytes_already_in_the_totals() {
        use crate::select::Target;
        let io = Handles::default();
        let counters = Arc::new(forward::Counters::default());
        let idx = io
            .conns
            .insert_open_for_test(Target::Server(1), counters.clone());
        counters.add_to_server(100);
        counters.add_from_server(2000);
        let open = io.open_conns();
        assert_eq!(open.rows.len(), 1);
        assert_eq!((open.rows[0].index, open.rows[0].server), (idx, 1));
        assert_eq!(open.unreported(Target::Server(1)), (100, 2000));
        // Closing: the bytes move to the server's totals (under the state's lock); the row
        // stays listed until the task ends, its bytes are no longer "open".
        io.conns.bytes_reported(idx);
        let open = io.open_conns();
        assert_eq!(open.rows.len(), 1);
        assert_eq!(open.unreported(Target::Server(1)), (0, 0));
    }

    /// `try_io` as tokio runs it on a ready socket: calls the closure once and returns its
    /// result (tokio clears the readiness when that result is `WouldBlock`).
    fn ready_try_io<T>(f: &mut dyn FnMut() -> io::Result<T>) -> io::Result<T> {
        f()
    }

    #[test]
    fn read_draining_reports_a_short_read_as_drained_and_keeps_its_value() {
        let r = read_draining(ready_try_io, || Ok(10usize), |&n| n < 32);
        assert_eq!(r.unwrap(), (10, true));
    }

    #[test]
    fn read_draining_passes_a_full_read_as_not_drained() {
        let r = read_draining(ready_try_io, || Ok(32usize), |&n| n < 32);
        assert_eq!(r.unwrap(), (32, false));
    }

    #[test]
    fn read_draining_passes_nothing_to_read_and_errors_through() {
        let e = read_draining(
            ready_try_io,
            || Err::<usize, _>(io::ErrorKind::WouldBlock.into()),
            |_| true,
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let e = read_draining(
            ready_try_io,
            || Err::<usize, _>(io::ErrorKind::ConnectionReset.into()),
            |_| true,
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn read_draining_clears_the_readiness_only_through_try_io() {
        // The drained case must reach try_io as WouldBlock (that is what clears tokio's
        // readiness); the full case must reach it as Ok.
        let mut seen = Vec::new();
        for n in [5usize, 32] {
            let _ = read_draining(
                |f| {
                    let r = f();
                    seen.push(r.as_ref().map_err(io::Error::kind).copied());
                    r
                },
                || Ok(n),
                |&n| n < 32,
            );
        }
        assert_eq!(seen, vec![Err(io::ErrorKind::WouldBlock), Ok(32)]);
    }
}
