//! Server selection, as C Pen's server.c does it (reference §4-§6). Pure: time comes in as
//! `now` (a monotonic `std::time::Duration` since an arbitrary origin), nothing here does IO.
//!
//! The proxy asks [`Balancer::select`] for an ordered list of candidates and walks it: it
//! tries the first, reports the outcome (`connect_started`, `connect_ok`, `connect_failed`),
//! and moves on to the next only after a failure. An empty list means: close the client.
//!
//! API contract used by `proxy` and `daemon` (keep these signatures stable):
//! ```text
//! Balancer::new(&Config) -> Balancer
//! Balancer::set_server(idx, ServerConfig, Option<BackendAddr>)    // grows the table
//! Balancer::set_emergency(Option<(ServerConfig, BackendAddr)>) / set_abuse(...)
//! Balancer::update_settings(&Config)          // mode flags, times, clients_max (grow only)
//! Balancer::select(&Client, now) -> Vec<Target>
//! Balancer::addr(Target) -> Option<&BackendAddr>
//! Balancer::connect_started(&Client, Target, now)   // records the client's server (as C Pen)
//! Balancer::connect_ok(Target, now)                  // counts an established connection
//! Balancer::connect_failed(Target, now)              // passive blacklist for blacklist_secs
//! Balancer::closed(Target, &Client, sent_to_server: u64, received_from_server: u64, now)
//! Balancer::blacklist(idx, secs, now)               // penctl `server N blacklist T`
//! Balancer::servers() -> &[ServerState]              // for `servers`, stats
//! ```
//! `Target` and `Client` are defined below.

use std::net::IpAddr;

/// Which backend a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Regular server slot N.
    Server(usize),
    /// `-e`: server of last resort.
    Emergency,
    /// `-B`: where clients denied by `client_acl` go.
    Abuse,
}

/// Who is asking: the client's address (`None` for a Unix-socket client; all such clients share
/// one table entry, as in C Pen) and source port (used by hash with `-r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub port: u16,
}
