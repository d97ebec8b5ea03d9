//! The data path (tokio). Thin: every decision comes from `select`.
//!
//! - [`forward`]: moves bytes between a client and its upstream (splice or copy).
//! - [`sockets`]: listeners and upstream connects with pen's socket options.
//! - [`tcp`]: the accept loop and the per-connection task (select, connect walk, forward).
//!
//! Shared state: one [`Shared`] per pen process behind a std mutex ([`SharedState`]), held only
//! for short non-async sections (never across an `.await`). The daemon owns it and hands clones
//! of the `Arc` to the listener tasks (TCP, UDP, later the control socket).

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::select::Balancer;

pub mod forward;
pub mod http;
pub mod sockets;
pub mod tcp;
pub mod tls;
pub mod transparent;
pub mod udp;

/// The running configuration and the balancer built from it.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub balancer: Balancer,
    /// Upstream connections that `transparent` could not open from the client's address
    /// (no CAP_NET_ADMIN, missing routing setup, family mismatch); see [`transparent`].
    pub transparent_failures: u64,
    /// TLS termination in force (`-E`); `None` = plain TCP. Replaced on reload (`tls::reload`).
    pub tls: Option<Arc<tls::Terminator>>,
    /// The UDP flow table (`-U`) as the UDP shell last published it, for the reports: at
    /// every tick ([`udp::shell::TICK`]) and [`udp::shell::PUBLISH_EVERY`] after new flows.
    /// The shell writes it without holding its table lock (lock order: table, then this).
    pub udp: Option<udp::UdpStatus>,
}

impl Shared {
    /// A fresh balancer for `config` (servers with literal addresses only; the daemon sets
    /// resolved host names with `Balancer::set_server`).
    pub fn new(config: Config) -> Shared {
        let balancer = Balancer::new(&config);
        Shared {
            config,
            balancer,
            transparent_failures: 0,
            tls: None,
            udp: None,
        }
    }
}

/// The handle every task holds.
pub type SharedState = Arc<Mutex<Shared>>;

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
