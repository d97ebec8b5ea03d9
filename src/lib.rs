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
//! - [`ctl::apply`]: a command (or a config file's text, read by the caller) applied to a
//!   configuration; a configuration written back out as commands.
//! - [`health`]: active health checks: per-server check settings and their penctl grammar,
//!   the up/down state machine (rise/fall), which probes are due, HTTP answers judged.
//! - [`select`]: server pool, client table and the algorithms; returns an ordered candidate list.
//! - [`state`]: the running state as plain data (configuration, balancer, counters, the UDP
//!   and tarpit status last published) and the open connections as the shell lists them.
//! - [`ctl::reply`]: a command against the running state → C Pen's reply and follow-up actions
//!   (close a connection, tell the servers changed, write a file, ...) for the shell to do.
//! - [`stats`]: the status page, the SIGUSR1 text report and the Prometheus exposition.
//! - [`proxyproto`]: the PROXY protocol v1/v2: headers encoded for backends, parsed
//!   incrementally (and bounded) from clients of an `accept_proxy` listener.
//! - [`engine`]: the DSR + tarpit packet engine (frame in → verdict and in-place rewrite;
//!   ARP/NDP, weighted Maglev table, keyed-hash tarpit ISN).
//! - [`upgrade`]: the binary upgrade's header (the sockets a running pen hands over), its
//!   checks against the new command line, the `ready`/`stopped` lines, the hand-over path.
//!
//! IO:
//! - [`proxy`]: the tokio TCP data path (splice where both ends are TCP) and the active
//!   health checks' probes (`proxy::health`); `proxy::Shared` is
//!   the [`state::State`] behind the daemon's lock with the IO handles beside it (TLS
//!   terminator, UDP table, servers-changed hook, connection table).
//! - [`daemon`]: wires configuration, listeners, signals and the proxy together; its
//!   `upgrade_io` part runs the binary upgrade's hand-over (both sides).
//! - [`ctl::server`]: the control socket, config re-reads, SIGUSR1, the Prometheus endpoint.
//! - [`reqlog`]: the `-l` request log (its line formats are pure functions).
//! - [`logging`]: where log lines go (terminal, file, journald with `<N>` priorities, syslog
//!   when daemonized) and how they look (the choice is a pure function).
//! - [`notify`]: systemd readiness (`sd_notify` READY/RELOADING/STOPPING datagrams).
//! - [`link`]: frame drivers for the engine, all run by one loop (`link::io::drive`): live
//!   `AF_PACKET` (DSR mode of the daemon), offline pcap files (`pen-sim`), in memory; a pcap
//!   tap and the XDP fast path's learning step wrap any of them.
//! - `sys` (crate-private): the kernel layer. Every `unsafe` block of the crate lives there,
//!   behind small safe functions: batched datagram IO and control messages, socket options,
//!   `AF_PACKET` sockets and the TPACKET_V2 ring, netlink route requests, daemonizing and the
//!   user switch, the splice pipe, descriptors passed over Unix sockets (`SCM_RIGHTS`).
//!
//! `tests/purity.rs` scans the modules listed under "Pure:" and fails when one uses the
//! runtime, sockets, files, clocks, randomness, locks, callbacks, logging or an IO module.
//!
//! `testing` (hidden): `require_root()` for the unit and integration tests. `docgen` (hidden):
//! man pages and shell completions of `pen-lab` and `pen-sim` from their clap definitions.

// Every `unsafe` block says why it is sound (all of them live in `sys`, see
// `tests/unsafe_confined.rs`).
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod acl;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
#[doc(hidden)]
pub mod docgen;
pub mod engine;
pub mod health;
pub mod link;
pub mod logging;
pub mod notify;
pub mod proxy;
pub mod proxyproto;
pub mod reqlog;
pub mod select;
pub mod sim;
pub mod state;
pub mod stats;
pub(crate) mod sys;
#[doc(hidden)]
pub mod testing;
pub mod upgrade;
