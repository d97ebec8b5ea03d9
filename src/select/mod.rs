//! Server selection, as C Pen's server.c does it (reference §4-§6). Pure: time comes in as
//! `now` (a monotonic `std::time::Duration` since an arbitrary origin), nothing here does IO.
//!
//! The proxy asks [`Balancer::select`] for an ordered list of candidates and walks it: it
//! tries the first, reports the outcome (`connect_started`, `connect_ok`, `connect_failed`),
//! and moves on to the next only after a failure. An empty list means: close the client.
//!
//! API contract used by `proxy` and `daemon` (keep these signatures stable):
//! ```text
//! Balancer::new(&Config) -> Balancer         // servers with IP/Unix hosts get their address
//! Balancer::set_server(idx, ServerConfig, Option<BackendAddr>) -> Result<(), ServerIndexError>
//!                                             // grows the table; idx < MAX_SERVERS (65536)
//! Balancer::set_emergency(Option<(ServerConfig, BackendAddr)>) / set_abuse(...)
//! Balancer::update_settings(&Config)          // mode flags, times, ACLs, clients_max (grow only)
//! Balancer::select(&Client, now) -> Vec<Target>
//! Balancer::try_server(Target, &Client, now) -> bool // optional re-check of a later candidate
//! Balancer::addr(Target) -> Option<&BackendAddr>
//! Balancer::connect_started(&Client, Target, now)   // records the client's server (as C Pen)
//! Balancer::connect_ok(Target, now)                  // counts an established connection
//! Balancer::connect_failed(Target, now)              // passive blacklist for blacklist_secs
//! Balancer::take_events() -> (Vec<ServerEvent>, dropped) // servers gone down / come back
//! Balancer::connect_abandoned(Target)                // started, then given up (client left)
//! Balancer::closed(Target, &Client, sent_to_server: u64, received_from_server: u64, now)
//! Balancer::blacklist(idx, secs, now) -> Result<(), ServerIndexError> // `server N blacklist T`
//! Balancer::servers() -> &[ServerState]              // for `servers`, stats
//! Balancer::clients() -> impl Iterator<Item = &ClientInfo>   // for `recent`, status page
//! Balancer::is_blacklisted(idx, now), mode(), current(), clients_max(), ...
//! Balancer::dsr_table(now) -> Option<DsrTable>      // DSR: 256-slot weighted table, see [`dsr`]
//! DsrTable::pick(src_ipv4, src_port, roundrobin) -> usize
//! ```
//! Every started connect must end in exactly one of `connect_ok`, `connect_failed` or
//! `connect_abandoned`; every `connect_ok` in exactly one `closed`. UDP flows do the same
//! (`connect_started` + `connect_ok` when the upstream socket is connected).
//!
//! # The rules (C Pen's `initial_server`, `try_server`, `failover_server`, `store_client`)
//! 1. The client is recorded in the client table (by address only; all Unix clients share one
//!    entry): connects + 1, last seen = now. See [`clients`].
//! 2. `client_acl` denies → `[Abuse]` if `-B` is set (and passes the checks of 5), else `[]`.
//! 3. Initial choice. Tracking (unless `roundrobin`): the client's last server, if it is a
//!    regular server, even when it is blacklisted or full now. Otherwise the first enabled of
//!    prio > weight > hash > roundrobin:
//!    - prio: the available server with the lowest `prio`, ties to the lowest index;
//!    - weight: among available servers with weight > 0, least `256 * load / weight`
//!      (integer division, ties to the lowest index);
//!    - hash: IPv4 `u32::from_le_bytes(octets) % n` (x86's `s_addr`), with `-r` XORed with
//!      the port as the raw network-order `sin_port` (`u16::from_le_bytes(port.to_be_bytes())`);
//!      `n` counts every slot, and the result is not checked for availability (4 does that);
//!    - roundrobin: the next available server after the cursor, which starts at 0, so the
//!      first client of a fresh pen goes to server 1 (as in C Pen); the cursor moves only here.
//!
//!    "Available" = has a usable address (Unix path, or IP with port != 0) and not blacklisted.
//! 4. The initial choice is the first candidate if it passes `try_server`: usable address, not
//!    blacklisted, limits (`maxc != 0 && load >= maxc` is full unless the client's last server
//!    is this one and `load < hard`), the server's ACL (`server N acl A`) permits the client.
//! 5. Unless `stubborn`: then `s+1, s+2, ...` round the table (each passing `try_server`), then
//!    the emergency server if it passes `try_server`. Stubborn: only the initial choice.
//!    Abuse and emergency never fail over (they are always last).
//! 6. Outcomes: `connect_started` sets the client's server; `connect_failed` blacklists for
//!    `blacklist_secs` (passive: the server is skipped until that has passed, no probe);
//!    `connect_ok` clears the blacklist. A server is blacklisted while
//!    `now - since < blacklist_secs`; `blacklist_secs` is read at check time, so changing it
//!    applies to servers already blacklisted (as C Pen). `server N blacklist T` blacklists for
//!    exactly `T` seconds whatever `blacklist_secs` says; `T = 0` un-blacklists.
//!
//! # Deliberate differences from C Pen 0.34
//! - **Pending connects count as load** for `maxc`/`hard` and for weight (C Pen counts only
//!   established connections: `c` is incremented when the connect completes). With many
//!   connects in flight at once, C Pen's rule lets a burst of new clients overshoot `maxc`
//!   and sends the whole burst to the same "least loaded" server. `ServerState::established`
//!   is still C Pen's `c`, which `servers` prints.
//! - **No initial choice → emergency**: when prio/weight/roundrobin find no available server
//!   (all blacklisted or unusable), C Pen closes the client without trying `-e`, although it
//!   does use `-e` for a returning client whose tracked server is down. We go to the emergency
//!   server in both cases (never when stubborn).
//! - **Tracking time really expires**: C Pen's `-T` only lets an idle slot be reused; if nobody
//!   reused it, the returning client is still matched by address and keeps its old server.
//!   Here a client idle for more than `tracking_secs` is forgotten (server and counters).
//! - **IPv6 hash** uses FNV-1a over the whole address (plus the port with `-r`); C Pen takes
//!   only the last byte, so every `...::1` lands on the same server. IPv4-mapped IPv6 clients
//!   hash and track as the IPv4 address they are.
//! - **Unusable slots** (no address, or port 0) are not "available", so prio/weight/roundrobin
//!   never choose them (C Pen's `unused_server_slot` only knew `0.0.0.0`, so port-0 slots could
//!   become the initial choice, fail, and pull their share to the next server).
//! - **Server ACLs default to none** (`ServerConfig::acl == None` = everyone); C Pen's slots
//!   default to list 0. Emergency and abuse slots follow their `ServerConfig` too, so a client
//!   denied by `client_acl 0` is not also refused by the abuse server's default list 0.
//! - **O(1) client table** (`HashMap` + LRU list) instead of a linear scan; same answers.
//! - The failover scan does not retry the initial choice at its end (it has just failed), and
//!   the candidate list has no duplicates.
//! - `-c 0` keeps one client slot (C Pen would index slot -1); at most [`MAX_SERVERS`] slots.

mod balancer;
pub mod clients;
pub mod dsr;

pub use balancer::{
    Balancer, MAX_EVENTS, MAX_SERVERS, ServerEvent, ServerIndexError, ServerState, hash_index,
    literal_addr,
};
pub use clients::{ClientInfo, ClientKey};
pub use dsr::{DsrTable, dsr_hash};

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

#[cfg(test)]
mod tests;
