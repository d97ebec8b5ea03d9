//! The kernel layer: every system call pen-rs makes that the standard library, `socket2`, `nix`
//! or `netlink-*` do not wrap safely, behind small safe functions.
//!
//! Every `unsafe` block of the crate lives under this folder, each with its own `// SAFETY:`
//! comment (clippy's `undocumented_unsafe_blocks` is denied crate-wide, and
//! `tests/unsafe_confined.rs` fails on an `unsafe` anywhere else in `src/`). The rest of the
//! crate sees plain Rust types: slices, `std::net` addresses, `OwnedFd`s and `io::Result`s.
//!
//! - [`cmsg`]: control messages parsed from and written to bytes (no pointer walking).
//! - [`handover`]: descriptors passed over a Unix socket (`SCM_RIGHTS`) and the peer's uid
//!   (`SO_PEERCRED`), for the binary upgrade.
//! - [`mmsg`]: batched UDP IO (`recvmmsg`/`sendmmsg`) with `IP_PKTINFO`/`IPV6_PKTINFO` control
//!   messages, and the socket error queue (`MSG_ERRQUEUE`).
//! - [`sockopt`]: integer socket options, `SO_ERROR`, `poll` on one descriptor.
//! - [`packet`]: `AF_PACKET` raw sockets: open/bind, `recvmmsg` of frames with their
//!   `PACKET_AUXDATA`, `sendmmsg` of frames.
//! - [`ring`]: the TPACKET_V2 receive ring (libc's `tpacket_req`/`tpacket2_hdr`) and the one
//!   safe slot iterator that owns its pointer arithmetic.
//! - [`netlink`]: `RTM_GETROUTE` over `NETLINK_ROUTE` with `netlink-packet-route`.
//! - [`process`]: daemonizing, chroot, the user switch and capabilities (`nix` where it has a
//!   safe call), resource limits, random bytes, syslog.
//! - [`ifaddrs`]: the addresses of an interface.
//! - [`pipe`]: the splice pipe of the TCP forwarder and raw `read(2)`.
//! - [`uring`]: io_uring behind a safe `Ring` (provided-buffer ring, accepts with the peer
//!   address, sends from handed-out buffers, connects with linked timeouts, closes) for
//!   `proxy::uring`.
//! - `bpf`: attaching BPF programs by links, the programs' clock, `BPF_PROG_TEST_RUN`
//!   (the programs and typed maps themselves are loaded with aya in `link::bpf`).
//!
//! Items are `pub(crate)`: nothing here is part of pen's library API.

#[cfg(target_os = "linux")]
pub(crate) mod bpf;
pub(crate) mod cmsg;
pub(crate) mod handover;
pub(crate) mod ifaddrs;
pub(crate) mod mmsg;
pub(crate) mod netlink;
pub(crate) mod packet;
pub(crate) mod pipe;
pub(crate) mod process;
pub(crate) mod ring;
pub(crate) mod sockopt;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

/// Test support: runs `f` on a new thread inside a throw-away network namespace (loopback up,
/// nothing else), removed afterwards. Fails with a reason when not root.
#[cfg(test)]
pub(crate) fn in_fresh_netns<T: Send + 'static>(
    tag: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    use std::process::Command;
    process::require_root("a network namespace");
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let name = format!("penrs-sys-{tag}-{}", std::process::id());
    let ip = |args: &[&str]| {
        let st = Command::new("ip").args(args).status().expect("runs ip");
        assert!(st.success(), "ip {args:?} failed");
    };
    ip(&["netns", "add", &name]);
    let _guard = Guard(name.clone());
    ip(&["-n", &name, "link", "set", "lo", "up"]);
    let file = std::fs::File::open(format!("/run/netns/{name}")).expect("the namespace file");
    std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("the test thread")
}
