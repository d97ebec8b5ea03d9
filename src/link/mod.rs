//! Frame drivers for the [`crate::engine`]: they move bytes, the engine decides.
//!
//! - [`mem`]: an in-memory driver for tests and benchmarks.
//! - [`pcapfile`]: offline, a pcap file in, the frames the engine sends to another pcap file,
//!   and a verdict log.
//! - [`afpacket`] (Linux): live on the DSR interface, raw `AF_PACKET` with batched
//!   `recvmmsg`/`sendmmsg`.
//! - [`dsr`] (Linux): DSR mode for the daemon, the engine on the live driver fed by the
//!   balancer's servers and blacklist.
//! - [`xdp`] (Linux): the DSR fast path, an XDP program (C in `bpf/`, loaded by [`bpf`]) that
//!   forwards the frames of clients the engine has already placed without waking pen.
//!
//! Every driver follows the same loop: before handing a frame received at `now` to
//! [`Engine::process_meta`](crate::engine::Engine::process_meta), it sends everything
//! [`Engine::poll_transmit`](crate::engine::Engine::poll_transmit) returns at `now`; then it
//! sends the processed frame when the verdict says so.

#[cfg(target_os = "linux")]
pub(crate) mod afpacket;
#[cfg(target_os = "linux")]
pub mod bpf;
#[cfg(target_os = "linux")]
pub(crate) mod dsr;
pub mod mem;
pub mod pcapfile;
pub(crate) mod route;
#[cfg(target_os = "linux")]
pub mod xdp;
