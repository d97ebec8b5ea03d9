//! The completion-based TCP data path on io_uring (Linux): plain TCP proxying without a tokio
//! task per connection.
//!
//! One thread runs one ring ([`event_loop`]) that owns the listening socket:
//!
//! - a single-shot accept (re-armed in the turn it completes) delivers each new client with
//!   its address (no `getpeername`); when `conn_max` is reached the accept is cancelled (the
//!   kernel backlog holds new clients) and re-armed when a slot frees;
//! - each connection lives in a slot of a generation-checked slab ([`slab`]) whose index and
//!   generation, with the operation, make the user data of every submission;
//! - each direction has one multishot receive (re-armed only when it ends) that takes a
//!   buffer from a provided-buffer ring only when data arrives (an idle connection holds
//!   none); the bytes are sent from that same buffer, which goes back to the ring once sent
//!   (no copy in user space). Buffers that arrive while a send is in flight queue in order; at
//!   four the receive is cancelled (back-pressure) and re-armed once the queue is sent; EOF
//!   half-closes the other side after the queue (a plain `shutdown`: io_uring would run it in
//!   a worker thread), and a freed connection's sockets are closed by io_uring closes;
//! - the upstream connect is an io_uring connect, timed out (`-t`) by the loop's timer wheel
//!   ([`timers`]: a cancel when it fires, no linked timeout per connect); candidates are
//!   walked and failures blacklisted as on the tokio path ([`glue`] holds every call into the
//!   shared state, so reports, `close N` and penctl see these connections the same way);
//! - everything queued in a turn goes to the kernel with the one `io_uring_enter` that also
//!   waits (`submit_and_wait`); a 200 ms tick in the loop advances the timer wheel (connect
//!   and idle timeouts) and handles queued clients and a paused accept; closes and
//!   cancellations post a completion only when they fail;
//! - other threads reach the loop through [`event_loop::Control`]: a request list and a
//!   socket pair the ring polls (`close N`, stop on `listen` or exit).
//!
//! Which path serves a TCP listener is decided once per listener by [`use_uring`]: the
//! `io_uring` command forces this one, `epoll`/`poll`/`select`/`kqueue` force tokio, and by
//! default this path runs when io_uring works here ([`probe`]) and nothing needs tokio (TLS,
//! `-H`, PROXY protocol); otherwise one log line says why tokio serves. Unix sockets and UDP
//! stay on their tokio paths. All `unsafe` is in [`crate::sys::uring`].

pub(crate) mod event_loop;
pub(crate) mod glue;
pub mod slab;
pub mod timers;

use std::io;
use std::net::TcpListener;
use std::sync::{Arc, OnceLock};

use crate::proxy::tcp::{ConnTable, Limits};
use crate::proxy::{SharedState, lock};

/// Tests only: set to a reason to make the start-up probe fail as if io_uring were unusable.
pub const PROBE_FAIL_ENV: &str = "PEN_RS_TEST_IO_URING_FAIL";

/// Whether io_uring can run the TCP data path here (cached: probed once per process). `Err`
/// names the cause (disabled by sysctl or seccomp, old kernel, missing opcode).
pub fn probe() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            if let Ok(why) = std::env::var(PROBE_FAIL_ENV) {
                return Err(format!("{why} ({PROBE_FAIL_ENV} is set)"));
            }
            crate::sys::uring::probe()
        })
        .clone()
}

/// The choice between the two TCP paths, from the event-backend command in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// No command: io_uring when it works and the configuration allows.
    Auto,
    /// `io_uring`.
    Uring,
    /// `epoll`, `poll`, `select`, `kqueue`.
    Tokio,
}

impl Choice {
    /// The choice for `Config::event_backend`.
    pub fn of(event_backend: Option<&str>) -> Choice {
        match event_backend {
            None => Choice::Auto,
            Some("io_uring") => Choice::Uring,
            Some(_) => Choice::Tokio,
        }
    }
}

/// Pure: the path for a choice, what forbids io_uring (a feature that needs tokio) and the
/// probe's result. `Err` is the one line to log when tokio serves although io_uring was asked
/// for or could have been used; `Ok(false)` is a plain request for tokio.
pub fn decide(
    choice: Choice,
    tokio_only: Option<&str>,
    probe: &Result<(), String>,
) -> Result<bool, String> {
    match (choice, tokio_only, probe) {
        (Choice::Tokio, _, _) => Ok(false),
        (_, Some(why), _) => Err(format!("TCP data path: tokio ({why})")),
        (_, None, Err(why)) => Err(format!(
            "TCP data path: tokio (io_uring unavailable: {why})"
        )),
        (_, None, Ok(())) => Ok(true),
    }
}

/// Whether this TCP listener is served by the io_uring loop; logs once why not when it could
/// have been.
pub fn use_uring(shared: &SharedState) -> bool {
    let backend = lock(shared).config.event_backend.clone();
    let choice = Choice::of(backend.as_deref());
    let tokio_only = glue::tokio_only_feature(shared);
    let probed = if choice == Choice::Tokio {
        Ok(())
    } else {
        probe()
    };
    match decide(choice, tokio_only, &probed) {
        Ok(true) => {
            tracing::info!("TCP data path: io_uring");
            true
        }
        Ok(false) => {
            tracing::info!("TCP data path: tokio ({})", backend.unwrap_or_default());
            false
        }
        Err(line) => {
            tracing::warn!("{line}");
            false
        }
    }
}

/// Serves `listener` on an io_uring loop thread until the loop fails; dropping the future
/// (the listener replaced, pen exiting) stops accepting while open connections carry on.
pub async fn serve(
    listener: TcpListener,
    shared: SharedState,
    limits: Limits,
    conns: Arc<ConnTable>,
) -> io::Result<()> {
    let control = Arc::new(event_loop::Control::new()?);
    let mut lp = event_loop::Loop::new(listener, shared, limits, conns, control.clone())?;
    let ended = control.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pen-uring".to_string())
        .spawn(move || {
            let r = lp.run();
            drop(lp);
            ended.listener_closed();
            if let Err(e) = &r {
                tracing::error!("io_uring loop failed: {e}");
            }
            let _ = tx.send(r);
        })?;
    struct StopOnDrop(Arc<event_loop::Control>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.stop();
            // Bounded: the loop cancels its accept and closes the listener within a turn.
            self.0
                .wait_listener_closed(std::time::Duration::from_millis(500));
        }
    }
    let _stop = StopOnDrop(control);
    match rx.await {
        Ok(r) => r,
        Err(_) => Err(io::Error::other("the io_uring loop thread ended")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_backend_command_chooses_the_path() {
        assert_eq!(Choice::of(None), Choice::Auto);
        assert_eq!(Choice::of(Some("io_uring")), Choice::Uring);
        for w in ["epoll", "poll", "select", "kqueue"] {
            assert_eq!(Choice::of(Some(w)), Choice::Tokio);
        }
    }

    #[test]
    fn io_uring_runs_by_default_only_when_it_works_and_nothing_needs_tokio() {
        let ok = Ok(());
        let off = Err("io_uring_setup failed: not permitted".to_string());
        assert_eq!(decide(Choice::Auto, None, &ok), Ok(true));
        assert_eq!(decide(Choice::Uring, None, &ok), Ok(true));
        assert_eq!(decide(Choice::Tokio, None, &ok), Ok(false));
        let e = decide(Choice::Auto, None, &off).unwrap_err();
        assert!(
            e.contains("io_uring unavailable: io_uring_setup failed"),
            "{e}"
        );
        let e = decide(Choice::Uring, Some("TLS termination (-E)"), &ok).unwrap_err();
        assert!(e.contains("tokio (TLS termination (-E))"), "{e}");
        assert_eq!(decide(Choice::Tokio, None, &off), Ok(false));
    }
}
