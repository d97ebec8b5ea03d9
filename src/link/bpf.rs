//! Just enough eBPF for pen's kernel fast paths (DSR: [`crate::link::xdp`]; UDP:
//! [`crate::proxy::udp::offload`]): an instruction encoder with forward labels (pure,
//! unit-tested) and the few `bpf(2)` commands pen uses (create a map, read, write and delete an
//! element, load an XDP or tc program, attach it through a BPF link, run it on a test frame). No libbpf, no clang, no object files: the program is assembled at run time
//! from the balancer's configuration, its constants (VIP, port, MAC) baked in.
//!
//! Every `unsafe` block is one system call on a zero-initialised `bpf_attr` whose pointers
//! refer to buffers that outlive the call.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Registers. R0 = return value, R1-R5 = arguments (clobbered by calls), R6-R9 = callee-saved,
/// R10 = read-only frame pointer.
pub type Reg = u8;
pub const R0: Reg = 0;
pub const R1: Reg = 1;
pub const R2: Reg = 2;
pub const R3: Reg = 3;
pub const R4: Reg = 4;
pub const R5: Reg = 5;
pub const R6: Reg = 6;
pub const R7: Reg = 7;
pub const R8: Reg = 8;
pub const R9: Reg = 9;
pub const R10: Reg = 10;

/// Load/store sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    W = 0x00,
    H = 0x08,
    B = 0x10,
    DW = 0x18,
}

/// Conditional jump operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Eq = 0x10,
    Gt = 0x20,
    Ne = 0x50,
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const MODE_ATOMIC: u8 = 0xc0;
const SRC_X: u8 = 0x08;
const ALU_ADD: u8 = 0x00;
const ALU_AND: u8 = 0x50;
const ALU_MOV: u8 = 0xb0;
const ALU_END: u8 = 0xd0;
const JMP_JA: u8 = 0x00;
const JMP_CALL: u8 = 0x80;
const JMP_EXIT: u8 = 0x90;
const PSEUDO_MAP_FD: u8 = 1;
/// `bpf_map_lookup_elem(map, key)`.
pub const HELPER_MAP_LOOKUP: i32 = 1;
/// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC in nanoseconds.
pub const HELPER_KTIME_GET_NS: i32 = 5;
/// `bpf_skb_store_bytes(skb, offset, from, len, flags)`.
pub const HELPER_SKB_STORE_BYTES: i32 = 9;
/// `bpf_l3_csum_replace(skb, offset, from, to, flags)`.
pub const HELPER_L3_CSUM_REPLACE: i32 = 10;
/// `bpf_l4_csum_replace(skb, offset, from, to, flags)`.
pub const HELPER_L4_CSUM_REPLACE: i32 = 11;
/// `bpf_csum_diff(from, from_size, to, to_size, seed)`.
pub const HELPER_CSUM_DIFF: i32 = 28;
/// `bpf_redirect_neigh(ifindex, params, plen, flags)`: out of `ifindex`, with the L2 header
/// filled in by the kernel's route and neighbour lookup (tc programs only).
pub const HELPER_REDIRECT_NEIGH: i32 = 152;
/// `bpf_l4_csum_replace` flag: the change is in the pseudo header (addresses).
pub const F_PSEUDO_HDR: i32 = 1 << 4;
/// `bpf_l4_csum_replace` flag: leave a zero (absent) UDP checksum alone, never produce one.
pub const F_MARK_MANGLED_0: i32 = 1 << 5;

/// One `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: Reg,
    pub src: Reg,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The kernel's 8-byte encoding (little-endian machine).
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.dst & 0x0f) | ((self.src & 0x0f) << 4);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

/// A jump target, placed with [`Asm::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// An instruction list with labels; [`Asm::finish`] resolves the jumps.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    /// Label → instruction index, once placed.
    labels: Vec<Option<usize>>,
    /// (jump instruction index, label).
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> &mut Asm {
        self.insns.push(Insn {
            code,
            dst,
            src,
            off,
            imm,
        });
        self
    }

    /// A new, not yet placed, label.
    pub fn new_label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `l` at the next instruction.
    pub fn label(&mut self, l: Label) -> &mut Asm {
        if let Some(slot) = self.labels.get_mut(l.0) {
            *slot = Some(self.insns.len());
        }
        self
    }

    /// `dst = *(size *)(src + off)`.
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Asm {
        self.push(CLASS_LDX | MODE_MEM | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Asm {
        self.push(CLASS_STX | MODE_MEM | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Asm {
        self.push(CLASS_ST | MODE_MEM | size as u8, dst, 0, off, imm)
    }

    /// `lock *(u64 *)(dst + off) += src`.
    pub fn atomic_add64(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Asm {
        self.push(CLASS_STX | MODE_ATOMIC | Size::DW as u8, dst, src, off, 0)
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Asm {
        self.push(CLASS_ALU64 | ALU_MOV, dst, 0, 0, imm)
    }

    /// `dst = src` (64-bit).
    pub fn mov(&mut self, dst: Reg, src: Reg) -> &mut Asm {
        self.push(CLASS_ALU64 | ALU_MOV | SRC_X, dst, src, 0, 0)
    }

    /// `dst += imm` (64-bit).
    pub fn add_imm(&mut self, dst: Reg, imm: i32) -> &mut Asm {
        self.push(CLASS_ALU64 | ALU_ADD, dst, 0, 0, imm)
    }

    /// `dst &= imm` (64-bit, `imm` sign-extended).
    pub fn and_imm(&mut self, dst: Reg, imm: i32) -> &mut Asm {
        self.push(CLASS_ALU64 | ALU_AND, dst, 0, 0, imm)
    }

    /// `dst = be16(dst)`: the low 16 bits from network to host order (zero-extended).
    pub fn be16(&mut self, dst: Reg) -> &mut Asm {
        self.push(CLASS_ALU | ALU_END | SRC_X, dst, 0, 0, 16)
    }

    /// `dst = map` (the two-slot `ld_imm64` with a map file descriptor).
    pub fn ld_map(&mut self, dst: Reg, map: &impl AsRawFd) -> &mut Asm {
        let fd = map.as_raw_fd();
        self.push(
            CLASS_LD | MODE_IMM | Size::DW as u8,
            dst,
            PSEUDO_MAP_FD,
            0,
            fd,
        );
        self.push(0, 0, 0, 0, 0)
    }

    /// `if (u32)dst <cond> (u32)imm goto l` (a 32-bit compare, so constants of any bit pattern).
    pub fn jmp32_imm(&mut self, cond: Cond, dst: Reg, imm: u32, l: Label) -> &mut Asm {
        self.fixups.push((self.insns.len(), l));
        self.push(CLASS_JMP32 | cond as u8, dst, 0, 0, imm as i32)
    }

    /// `if dst <cond> imm goto l` (64-bit compare against a sign-extended `imm`).
    pub fn jmp_imm(&mut self, cond: Cond, dst: Reg, imm: i32, l: Label) -> &mut Asm {
        self.fixups.push((self.insns.len(), l));
        self.push(CLASS_JMP | cond as u8, dst, 0, 0, imm)
    }

    /// `if dst <cond> src goto l` (64-bit; pointer comparisons).
    pub fn jmp_reg(&mut self, cond: Cond, dst: Reg, src: Reg, l: Label) -> &mut Asm {
        self.fixups.push((self.insns.len(), l));
        self.push(CLASS_JMP | cond as u8 | SRC_X, dst, src, 0, 0)
    }

    /// `goto l`.
    pub fn ja(&mut self, l: Label) -> &mut Asm {
        self.fixups.push((self.insns.len(), l));
        self.push(CLASS_JMP | JMP_JA, 0, 0, 0, 0)
    }

    /// `r0 = helper(r1, ..., r5)`.
    pub fn call(&mut self, helper: i32) -> &mut Asm {
        self.push(CLASS_JMP | JMP_CALL, 0, 0, 0, helper)
    }

    /// `return r0`.
    pub fn exit(&mut self) -> &mut Asm {
        self.push(CLASS_JMP | JMP_EXIT, 0, 0, 0, 0)
    }

    /// The instructions with every jump resolved; an error names a label never placed or a
    /// jump too far for its 16-bit offset.
    pub fn finish(mut self) -> Result<Vec<Insn>, String> {
        for &(at, l) in &self.fixups {
            let Some(Some(target)) = self.labels.get(l.0).copied() else {
                return Err(format!(
                    "jump at instruction {at} to label {} never placed",
                    l.0
                ));
            };
            let off = target as i64 - at as i64 - 1;
            let off = i16::try_from(off)
                .map_err(|_| format!("jump at instruction {at} too far ({off} instructions)"))?;
            if let Some(i) = self.insns.get_mut(at) {
                i.off = off;
            }
        }
        Ok(self.insns)
    }
}

// ---- system calls ----

const CMD_MAP_CREATE: i32 = 0;
const CMD_MAP_LOOKUP_ELEM: i32 = 1;
const CMD_MAP_UPDATE_ELEM: i32 = 2;
const CMD_MAP_DELETE_ELEM: i32 = 3;
const CMD_PROG_LOAD: i32 = 5;
const CMD_PROG_TEST_RUN: i32 = 10;
const CMD_LINK_CREATE: i32 = 28;
pub const MAP_HASH: u32 = 1;
pub const MAP_ARRAY: u32 = 2;
pub const MAP_LRU_HASH: u32 = 9;
const PROG_TYPE_SCHED_CLS: u32 = 3;
const PROG_TYPE_XDP: u32 = 6;
const ATTACH_XDP: u32 = 37;
/// `BPF_TCX_INGRESS` (Linux 6.6+): tc ingress through a BPF link, several programs per
/// interface.
const ATTACH_TCX_INGRESS: u32 = 46;
/// `XDP_FLAGS_SKB_MODE`: the generic (driver-independent) XDP hook.
pub const XDP_FLAGS_SKB_MODE: u32 = 2;

/// A `union bpf_attr` (144 bytes on current kernels), written field by field at the kernel's
/// offsets.
struct Attr([u8; 144]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 144])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_ne_bytes(b)
    }
    fn name(&mut self, off: usize, name: &str) -> &mut Attr {
        let n = name.len().min(15);
        self.0[off..off + n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }
    /// `bpf(cmd, self)`: the raw return value or the OS error.
    fn call(&mut self, cmd: i32) -> io::Result<i64> {
        // SAFETY: bpf(2) reads (and for some commands writes) `self`, a buffer of the size
        // passed; any pointer inside it refers to memory the caller keeps alive for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                self.0.len() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }
    fn call_fd(&mut self, cmd: i32) -> io::Result<OwnedFd> {
        let fd = self.call(cmd)?;
        // SAFETY: the command returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

fn ptr<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// Creates a map (`kind` one of the `MAP_*` constants).
pub fn map_create(
    kind: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    Attr::new()
        .u32(0, kind)
        .u32(4, key_size)
        .u32(8, value_size)
        .u32(12, max_entries)
        .name(28, name)
        .call_fd(CMD_MAP_CREATE)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create BPF map {name}: {e}")))
}

/// Writes `value` under `key` (created or replaced).
pub fn map_update(map: &impl AsRawFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, ptr(key.as_ptr()))
        .u64(16, ptr(value.as_ptr()))
        .call(CMD_MAP_UPDATE_ELEM)
        .map(|_| ())
}

/// Reads the value under `key` into `value`; `Ok(false)` when there is none.
pub fn map_lookup(map: &impl AsRawFd, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    match Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, ptr(key.as_ptr()))
        .u64(16, ptr(value.as_mut_ptr()))
        .call(CMD_MAP_LOOKUP_ELEM)
    {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the element under `key`; `Ok(false)` when there was none.
pub fn map_delete(map: &impl AsRawFd, key: &[u8]) -> io::Result<bool> {
    match Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, ptr(key.as_ptr()))
        .call(CMD_MAP_DELETE_ELEM)
    {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Loads an XDP program; a refusal carries the tail of the verifier's log.
pub fn prog_load_xdp(insns: &[Insn], name: &str) -> io::Result<OwnedFd> {
    prog_load(PROG_TYPE_XDP, ATTACH_XDP, insns, name)
}

/// Loads a tc (`sched_cls`) program, for [`tcx_link`]; a refusal carries the tail of the
/// verifier's log.
pub fn prog_load_tc(insns: &[Insn], name: &str) -> io::Result<OwnedFd> {
    prog_load(PROG_TYPE_SCHED_CLS, 0, insns, name)
}

fn prog_load(kind: u32, attach: u32, insns: &[Insn], name: &str) -> io::Result<OwnedFd> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
    let license = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let r = Attr::new()
        .u32(0, kind)
        .u32(4, insns.len() as u32)
        .u64(8, ptr(code.as_ptr()))
        .u64(16, ptr(license.as_ptr()))
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, ptr(log.as_mut_ptr()))
        .name(48, name)
        .u32(68, attach)
        .call_fd(CMD_PROG_LOAD);
    r.map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::new(
            e.kind(),
            format!(
                "the kernel refused the BPF program {name}: {e}; verifier: {}",
                tail.join(" | ")
            ),
        )
    })
}

/// Attaches an XDP program to interface `ifindex` through a BPF link: detached when the
/// returned descriptor is closed (so also when the process dies).
pub fn xdp_link(prog: &impl AsRawFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, ATTACH_XDP)
        .u32(12, flags)
        .call_fd(CMD_LINK_CREATE)
}

/// Attaches a tc program to the ingress of interface `ifindex` through a tcx BPF link (after
/// any programs already there, which keep running): detached when the returned descriptor is
/// closed.
pub fn tcx_link(prog: &impl AsRawFd, ifindex: u32) -> io::Result<OwnedFd> {
    Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, ATTACH_TCX_INGRESS)
        .call_fd(CMD_LINK_CREATE)
}

/// For tests that load programs: whether this process may (root). Elsewhere the caller skips,
/// except in CI, where a skip would hide the test: there it fails.
#[cfg(test)]
pub fn may_load_programs() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs root (loading BPF programs)"
    );
    eprintln!("skipped: needs root");
    false
}

/// Runs `prog` once on a copy of `frame` (BPF_PROG_TEST_RUN): the return code and the frame
/// as the program left it.
pub fn test_run(prog: &impl AsRawFd, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(8, frame.len() as u32)
        .u32(12, out.len() as u32)
        .u64(16, ptr(frame.as_ptr()))
        .u64(24, ptr(out.as_mut_ptr()))
        .u32(32, 1);
    a.call(CMD_PROG_TEST_RUN)?;
    let len = (a.get_u32(12) as usize).min(out.len());
    out.truncate(len);
    Ok((a.get_u32(4), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_expects() {
        // r0 = 2; exit  →  b7 00 00 00 02 00 00 00, 95 00 ...
        let mut a = Asm::new();
        a.mov_imm(R0, 2).exit();
        let p = a.finish().unwrap();
        assert_eq!(p[0].encode(), [0xb7, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(p[1].encode(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        // r3 = *(u16 *)(r6 + 12): ldxh, dst 3, src 6.
        let mut a = Asm::new();
        a.ldx(Size::H, R3, R6, 12);
        assert_eq!(
            a.finish().unwrap()[0].encode(),
            [0x69, 0x63, 12, 0, 0, 0, 0, 0]
        );
        // lock *(u64 *)(r0 + 8) += r1.
        let mut a = Asm::new();
        a.atomic_add64(R0, 8, R1);
        assert_eq!(
            a.finish().unwrap()[0].encode(),
            [0xdb, 0x10, 8, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn jumps_resolve_forward_and_backward_relative_to_the_next_instruction() {
        let mut a = Asm::new();
        let top = a.new_label();
        let end = a.new_label();
        a.label(top);
        a.jmp32_imm(Cond::Ne, R3, 0xdead_beef, end); // 0
        a.mov_imm(R0, 1); // 1
        a.ja(top); // 2
        a.label(end);
        a.exit(); // 3
        let p = a.finish().unwrap();
        assert_eq!(p[0].off, 2);
        assert_eq!(p[0].imm as u32, 0xdead_beef);
        assert_eq!(p[0].code, 0x56);
        assert_eq!(p[2].off, -3);
    }

    #[test]
    fn an_unplaced_label_is_an_error_not_a_wild_jump() {
        let mut a = Asm::new();
        let l = a.new_label();
        a.ja(l);
        assert!(a.finish().unwrap_err().contains("never placed"));
    }

    #[test]
    fn map_fd_loads_take_two_slots() {
        struct Fd(i32);
        impl AsRawFd for Fd {
            fn as_raw_fd(&self) -> i32 {
                self.0
            }
        }
        let mut a = Asm::new();
        a.ld_map(R1, &Fd(7)).exit();
        let p = a.finish().unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].encode(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(p[1].encode(), [0; 8]);
    }
}
