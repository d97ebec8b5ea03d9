//! Pen's kernel fast paths as BPF programs (DSR: [`crate::link::xdp`]; UDP:
//! [`crate::proxy::udp::offload`]): written in C under `bpf/`, compiled by clang at build time
//! (`build.rs`), embedded in the binary and loaded with [aya](https://aya-rs.dev), as Katran
//! and Cilium keep theirs. The per-instance constants (VIP, port, MAC) are `volatile const`
//! globals the loader fills in; the maps are aya's typed maps, whose key and value types the
//! loader checks against the map's sizes, so a read can never make the kernel write past a
//! Rust buffer.
//!
//! Each program has a Rust model beside its loader (`xdp::flow_key`, `offload::model`); the
//! tests run the loaded program on mutated frames with `BPF_PROG_TEST_RUN` ([`test_run`]) and
//! compare.

use std::io;
#[cfg(test)]
use std::os::fd::AsFd;

use aya::maps::{Array, HashMap, MapData};
use aya::programs::ProgramError;
use aya::{Ebpf, EbpfError, Pod};

/// `bpf/dsr_xdp.bpf.c`, compiled.
pub(crate) static DSR_XDP: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dsr_xdp.bpf.o"));
/// `bpf/udp_tc.bpf.c`, compiled.
pub(crate) static UDP_TC: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/udp_tc.bpf.o"));

/// An aya error as an `io::Error` that says what pen was doing (`what`); a verifier refusal
/// carries the tail of the verifier's log.
pub(crate) fn error(what: &str, e: impl Into<Failure>) -> io::Error {
    let (kind, text) = match e.into() {
        Failure::Ebpf(EbpfError::ProgramError(p)) | Failure::Program(p) => describe(p),
        Failure::Ebpf(e) => (io::ErrorKind::Other, e.to_string()),
        Failure::Map(e) => (io::ErrorKind::Other, e.to_string()),
    };
    io::Error::new(kind, format!("{what}: {text}"))
}

fn describe(p: ProgramError) -> (io::ErrorKind, String) {
    match p {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            (
                io_error.kind(),
                format!(
                    "the kernel refused the program: {io_error}; verifier: {}",
                    tail.join(" | ")
                ),
            )
        }
        ProgramError::SyscallError(s) => (s.io_error.kind(), s.to_string()),
        p => (io::ErrorKind::Other, p.to_string()),
    }
}

/// What [`error`] accepts.
#[derive(Debug)]
pub(crate) enum Failure {
    Ebpf(EbpfError),
    Program(ProgramError),
    Map(aya::maps::MapError),
}

impl From<EbpfError> for Failure {
    fn from(e: EbpfError) -> Failure {
        Failure::Ebpf(e)
    }
}

impl From<ProgramError> for Failure {
    fn from(e: ProgramError) -> Failure {
        Failure::Program(e)
    }
}

impl From<aya::maps::MapError> for Failure {
    fn from(e: aya::maps::MapError) -> Failure {
        Failure::Map(e)
    }
}

/// Takes the hash map `name` out of `ebpf` as keys `K` and values `V`; an error when the
/// object has no such map or its key or value size differs from `K`'s or `V`'s.
pub(crate) fn hash_map<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
) -> io::Result<HashMap<MapData, K, V>> {
    let map = ebpf.take_map(name).ok_or_else(|| missing("map", name))?;
    HashMap::try_from(map).map_err(|e| error(&format!("BPF map {name}"), e))
}

/// Takes the array `name` out of `ebpf` as values `V` (see [`hash_map`]).
pub(crate) fn array<V: Pod>(ebpf: &mut Ebpf, name: &str) -> io::Result<Array<MapData, V>> {
    let map = ebpf.take_map(name).ok_or_else(|| missing("map", name))?;
    Array::try_from(map).map_err(|e| error(&format!("BPF map {name}"), e))
}

/// The error for a program or map the embedded object lacks (a build out of step with
/// `bpf/`).
pub(crate) fn missing(what: &str, name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "the embedded BPF object has no {what} named {name}: rebuild pen (cargo build) so build.rs recompiles bpf/"
        ),
    )
}

/// Runs `prog` once on a copy of `frame` (`BPF_PROG_TEST_RUN`): the return code and the frame
/// as the program left it.
#[cfg(test)]
pub(crate) fn test_run(prog: &impl AsFd, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
    crate::sys::bpf::test_run(prog.as_fd(), frame)
}

/// The kernel's mean time for one run of `prog` on `frame`, in nanoseconds, over `repeat`
/// runs (`BPF_PROG_TEST_RUN`; for measurements).
#[cfg(test)]
pub(crate) fn mean_run_ns(prog: &impl AsFd, frame: &[u8], repeat: u32) -> io::Result<u32> {
    crate::sys::bpf::test_run_repeat(prog.as_fd(), frame, repeat).map(|(_, _, ns)| ns)
}

/// For tests that load programs: they need root, and fail (never skip) without it.
#[cfg(test)]
pub(crate) fn require_root_to_load() {
    crate::testing::require_root("loads BPF programs");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build embedded both objects, BPF ELF files (little-endian, machine EM_BPF = 247)
    /// with their programs, maps and the BTF aya needs for the map definitions.
    #[test]
    fn the_objects_are_embedded_bpf_elf_with_btf() {
        for (obj, names) in [
            (
                DSR_XDP,
                &["pen_dsr", "pen_dsr_flows", "pen_dsr_gen", "pen_dsr_count"][..],
            ),
            (UDP_TC, &["pen_udp_fast", "pen_udp_flows"][..]),
        ] {
            assert_eq!(&obj[..4], b"\x7fELF");
            assert_eq!(u16::from_le_bytes([obj[18], obj[19]]), 247, "EM_BPF");
            let has = |s: &[u8]| obj.windows(s.len()).any(|w| w == s);
            assert!(has(b".BTF\0"), "BTF section");
            for n in names {
                assert!(has(n.as_bytes()), "{n}");
            }
        }
    }

    /// Maps are typed: taking a map as keys or values of another size than the C program's is
    /// an error, never a read that lets the kernel write past a short buffer.
    #[test]
    fn a_map_taken_with_the_wrong_key_or_value_size_is_refused() {
        require_root_to_load();
        let load = || Ebpf::load(UDP_TC).expect("the UDP object loads");
        let mut e = load();
        let err = hash_map::<[u8; 11], [u8; 40]>(&mut e, "pen_udp_flows").unwrap_err();
        assert!(err.to_string().contains("pen_udp_flows"), "{err}");
        let mut e = load();
        assert!(hash_map::<[u8; 12], [u8; 16]>(&mut e, "pen_udp_flows").is_err());
        let mut e = load();
        let m = hash_map::<[u8; 12], [u8; 40]>(&mut e, "pen_udp_flows");
        assert!(m.is_ok(), "{:?}", m.err());
        let mut e = load();
        let err = hash_map::<[u8; 12], [u8; 40]>(&mut e, "no_such_map").unwrap_err();
        assert!(err.to_string().contains("no_such_map"), "{err}");
    }
}
