//! pen-rs: a Rust rewrite of Pen, the TCP/UDP load balancer.
//!
//! # Module map and the purity contract
//!
//! Pure cores, thin shells. The modules in the first group make every decision and never touch
//! a socket, a clock, a file or a random number generator; time comes in as a `now` parameter.
//! The second group only moves bytes between the world and those cores.
//!
//! Pure:
//! - [`acl`]: access lists 0-9 (IPv4 mask, IPv6 prefix), first match decides.
//! - [`cli`]: C-Pen-compatible argv (getopt string of C Pen 0.34) and backend specs.
//! - [`config`]: the typed configuration with C Pen's defaults.
//! - [`ctl::command`]: the penctl command language shared by `-o`/`-O`, `-F`, HUP and the
//!   control socket.
//! - [`select`]: server pool, client table and the algorithms; returns an ordered candidate list.
//! - [`ctl::reply`]: a command against the running state → C Pen's reply and follow-up actions.
//! - [`stats`]: the status page, the SIGUSR1 text report and the Prometheus exposition.
//! - [`engine`]: the DSR + tarpit packet engine (frame in → verdict and in-place rewrite;
//!   ARP/NDP, weighted Maglev table, keyed-hash tarpit ISN).
//!
//! IO:
//! - [`proxy`]: the tokio TCP data path (splice where both ends are TCP).
//! - [`daemon`]: wires configuration, listeners, signals and the proxy together.
//! - [`ctl::server`]: the control socket, config re-reads, SIGUSR1, the Prometheus endpoint.
//! - [`reqlog`]: the `-l` request log (its line formats are pure functions).
//! - [`link`]: frame drivers for the engine, all run by one loop (`link::io::drive`): live
//!   `AF_PACKET` (DSR mode of the daemon), offline pcap files (`pen-sim`), in memory; a pcap
//!   tap and the XDP fast path's learning step wrap any of them.
//! - `sys` (crate-private): the kernel layer. Every `unsafe` block of the crate lives there,
//!   behind small safe functions: batched datagram IO and control messages, socket options,
//!   `AF_PACKET` sockets and the TPACKET_V2 ring, netlink route requests, daemonizing and the
//!   user switch, the splice pipe.
//!
//! `testing` (hidden): `require_root()` for the unit and integration tests.

// Every `unsafe` block says why it is sound (all of them live in `sys`, see
// `tests/unsafe_confined.rs`).
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod acl;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod engine;
pub mod link;
pub mod proxy;
pub mod reqlog;
pub mod select;
pub mod sim;
pub mod stats;
pub(crate) mod sys;
#[doc(hidden)]
pub mod testing;
