//! Frame drivers for the [`crate::engine`]: they move bytes, the engine decides.
//!
//! - [`io`]: the one receive → engine → send loop ([`io::drive`]) and the [`io::FrameIo`]
//!   trait every driver below implements.
//! - [`mem`]: an in-memory driver for tests and benchmarks.
//! - [`pcapfile`]: offline, a pcap file in, the frames the engine sends to another pcap file,
//!   and a verdict log.
//! - [`afpacket`] (Linux): live on the DSR interface, raw `AF_PACKET` with batched
//!   `recvmmsg`/`sendmmsg`.
//! - [`dsr`] (Linux): DSR mode for the daemon, the engine on the live driver fed by the
//!   balancer's servers and blacklist.
//! - [`xdp`] (Linux): the DSR fast path, an XDP program (C in `bpf/`, loaded by [`bpf`]) that
//!   forwards the frames of clients the engine has already placed without waking pen; its
//!   userspace learning step is a driver wrapper, [`xdp::Learning`].
//! - [`tap`]: a wrapper around any driver that writes every frame in and out to a pcap file
//!   (`PEN_DSR_TAP=FILE` for the daemon's DSR interface).
//!
//! Every driver runs under the same loop, [`io::drive`]: before handing the frames received at
//! `now` to [`Engine::process_meta`](crate::engine::Engine::process_meta), it sends everything
//! [`Engine::poll_transmit`](crate::engine::Engine::poll_transmit) returns at `now`; then the
//! processed frames the verdicts transmit, then what the engine queued meanwhile.

#[cfg(target_os = "linux")]
pub(crate) mod afpacket;
#[cfg(target_os = "linux")]
pub mod bpf;
#[cfg(target_os = "linux")]
pub(crate) mod dsr;
pub mod io;
pub mod mem;
pub mod pcapfile;
pub(crate) mod route;
pub mod tap;
#[cfg(target_os = "linux")]
pub mod xdp;
