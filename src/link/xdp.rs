//! The DSR fast path: an XDP program on the DSR interface that forwards the frames of clients
//! the engine has already placed, without waking pen.
//!
//! The engine stays the one place where decisions are made. When it forwards an IPv4 frame to
//! the VIP, the driver wrapper [`Learning`] records "this client → this backend MAC" in a
//! kernel LRU map ([`FastPath::learn`]); the XDP program looks every received frame up in that
//! map and, on a hit, rewrites the two MACs and sends the frame back out of the same interface (`XDP_TX`),
//! before the frame reaches the packet socket. Everything else (ARP, IPv6, fragments, IP
//! options, tarpitted addresses, clients not yet seen, frames for other ports) passes to the
//! engine unchanged. The map is a cache of the engine's choices, never a second selection:
//! an entry carries the *generation* it was made in, and [`FastPath::sync`] moves the
//! generation on whenever the engine's decisions change (table rebuilt after a blacklist or
//! weight change, a backend's MAC changed), which invalidates every entry at once; the
//! clients' next frames go through the engine again and are re-learned.
//!
//! The program is attached in generic (SKB) mode through a BPF link, so it works on any
//! interface (veth included) and is detached by the kernel when pen exits, however it exits.
//! When the kernel refuses (no BPF, no CAP_BPF/CAP_NET_ADMIN), pen logs why and runs the
//! engine on every frame as before; `PEN_DSR_XDP=0` turns the fast path off.
//!
//! Frames sent by `XDP_TX` in generic mode bypass the packet taps of the DSR interface:
//! `tcpdump` on it shows the frames the engine handled, not the fast-pathed ones (capture on
//! the switch or the backends to see those).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData};
use aya::programs::{ProgramFd, Xdp};

use super::bpf;
use crate::engine::{EngineConfig, Mac, wire};
use crate::link::io::{Batch, FrameIo, Output};

/// What the program matches, taken from the engine's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastPathConfig {
    /// The DSR interface's MAC: frames must be addressed to it, and leave from it.
    pub mac: Mac,
    pub vip: Ipv4Addr,
    /// 0 = every port.
    pub port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP (`-U`).
    pub proto: u8,
    /// `-r`: the client's source port is part of the key.
    pub per_flow: bool,
}

impl FastPathConfig {
    /// `None` for an IPv6 VIP (the fast path is IPv4 only; IPv6 stays with the engine).
    pub fn from_engine(c: &EngineConfig) -> Option<FastPathConfig> {
        let std::net::IpAddr::V4(vip) = c.vip else {
            return None;
        };
        Some(FastPathConfig {
            mac: c.mac,
            vip,
            port: c.port,
            proto: if c.udp { 17 } else { 6 },
            per_flow: c.per_flow,
        })
    }
}

/// Map key (`struct client` of `bpf/dsr_xdp.bpf.c`): client IPv4 address and (with `-r`)
/// source port, both as on the wire, then two bytes of zero padding.
pub type Key = [u8; 8];
/// Map value (`struct backend`): backend MAC (6 bytes), 6 bytes of padding, generation (u32,
/// native order) at [`OFF_GENERATION`].
pub type Entry = [u8; 16];
const OFF_GENERATION: usize = 12;
/// The program and its maps, as named in `bpf/dsr_xdp.bpf.c`.
const PROG: &str = "pen_dsr";
const MAP_FLOWS: &str = "pen_dsr_flows";
const MAP_GENERATION: &str = "pen_dsr_gen";
const MAP_COUNTERS: &str = "pen_dsr_count";
/// Capacity of the client map (LRU: the least recently used client is dropped when full and
/// simply goes through the engine again).
pub const MAX_CLIENTS: u32 = 65_536;

/// Where the IPv4 header and the ports start in an untagged frame.
const IP: usize = wire::ETH_LEN;
const L4: usize = IP + wire::ipv4::LEN;
/// Ethernet + IPv4 without options + the two ports.
const MIN_LEN: usize = L4 + 4;

/// The key the program computes for `frame`, if the program would look it up: IPv4 (no
/// VLAN tag), no IP options, not a fragment, to the VIP, the configured protocol and port.
/// The destination MAC is not checked here (the driver calls this on frames the engine has
/// already rewritten); the program checks it against ours.
pub fn flow_key(cfg: &FastPathConfig, frame: &[u8]) -> Option<Key> {
    use wire::{eth, ipv4, tcp};
    let f = frame.get(..MIN_LEN)?;
    if f[eth::TYPE..eth::TYPE + 2] != wire::ETHERTYPE_IPV4.to_be_bytes()
        || f[IP + ipv4::VER_IHL] != 0x45
    {
        return None;
    }
    // MF flag and fragment offset (DF and the reserved bit do not matter).
    if f[IP + ipv4::FRAG] & 0x3f != 0 || f[IP + ipv4::FRAG + 1] != 0 {
        return None;
    }
    if f[IP + ipv4::PROTO] != cfg.proto || f[IP + ipv4::DST..IP + ipv4::DST + 4] != cfg.vip.octets()
    {
        return None;
    }
    // The ports are at the same offsets in TCP and UDP.
    if cfg.port != 0 && f[L4 + tcp::DPORT..L4 + tcp::DPORT + 2] != cfg.port.to_be_bytes() {
        return None;
    }
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&f[IP + ipv4::SRC..IP + ipv4::SRC + 4]);
    if cfg.per_flow {
        k[4..6].copy_from_slice(&f[L4 + tcp::SPORT..L4 + tcp::SPORT + 2]);
    }
    Some(k)
}

/// `XDP_PASS`: on to the stack (and pen's packet socket).
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`: back out of the interface it came in on.
pub const XDP_TX: u32 = 3;

/// Frames and bytes the program forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounts {
    pub frames: u64,
    pub bytes: u64,
}

/// The generation entries must carry to be used, shared between the DSR thread and the
/// control path (a `server` command invalidates the cache at once, before its reply).
pub struct Generation {
    /// The one-entry map and the value in it; the lock orders the writes so the map never
    /// goes backwards.
    state: Mutex<(Array<MapData, u32>, u32)>,
}

impl Generation {
    /// Moves to a new generation (every entry written before stops matching) and returns it.
    pub fn bump(&self) -> io::Result<u32> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, g) = &mut *state;
        let next = g.wrapping_add(1);
        map.set(0, next, 0)
            .map_err(|e| bpf::error("cannot write the DSR fast path's generation", e))?;
        *g = next;
        Ok(next)
    }

    /// The generation in force.
    pub fn current(&self) -> u32 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

/// The attached program and its maps (detached when dropped).
///
/// Per loop pass of the driver: the engine's tick (which reads the blacklist), the frames,
/// then [`FastPath::sync`] with the engine's epoch, [`FastPath::learn`] for each forwarded
/// frame, and [`FastPath::end_pass`]. Entries are written with the generation read at the end
/// of the previous pass (or made by this pass's own `sync`), never a newer one: a
/// [`Generation::bump`] from the control path between the tick and the learning leaves the
/// pass's entries stale-by-generation, so a decision made with the old server list never
/// outlives the bump.
pub struct FastPath {
    cfg: FastPathConfig,
    /// The loaded object: owns the program (unloaded when dropped).
    ebpf: Ebpf,
    /// The attachment, a BPF link (detached when dropped); `None` when only loaded (tests run
    /// the program with `bpf::test_run`).
    link: Option<OwnedFd>,
    flows: HashMap<MapData, Key, Entry>,
    generation: Arc<Generation>,
    counters: Array<MapData, [u64; 2]>,
    /// The engine epoch the last `sync` saw.
    epoch: Option<u64>,
    /// The generation this pass writes entries with (`None`: write none).
    pass_gen: Option<u32>,
    /// The key last written in this pass: a burst of one client's frames in one pass (same
    /// table, same generation) is written once.
    last_key: Option<Key>,
    /// Entries written, and writes the kernel refused.
    pub learned: u64,
    pub learn_errors: u64,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("cfg", &self.cfg)
            .field("attached", &self.link.is_some())
            .field("generation", &self.generation)
            .field("epoch", &self.epoch)
            .field("learned", &self.learned)
            .field("learn_errors", &self.learn_errors)
            .finish_non_exhaustive()
    }
}

impl FastPath {
    /// Creates the maps and loads the program for `cfg` (needs CAP_BPF or root) without
    /// attaching it.
    pub fn load(cfg: FastPathConfig) -> io::Result<FastPath> {
        // `struct eth`'s view of the MAC: three 16-bit words as loaded from the frame.
        let [m0, m1, m2, m3, m4, m5] = cfg.mac;
        let mac = [
            u16::from_ne_bytes([m0, m1]),
            u16::from_ne_bytes([m2, m3]),
            u16::from_ne_bytes([m4, m5]),
        ];
        let vip = u32::from_ne_bytes(cfg.vip.octets());
        let port = u16::from_ne_bytes(cfg.port.to_be_bytes());
        let per_flow = u8::from(cfg.per_flow);
        let mut ebpf = aya::EbpfLoader::new()
            .override_global("pen_mac", &mac, true)
            .override_global("pen_vip", &vip, true)
            .override_global("pen_port", &port, true)
            .override_global("pen_proto", &cfg.proto, true)
            .override_global("pen_per_flow", &per_flow, true)
            .map_max_entries(MAP_FLOWS, MAX_CLIENTS)
            .load(bpf::DSR_XDP)
            .map_err(|e| bpf::error("cannot load the DSR fast path", e))?;
        let flows = bpf::hash_map(&mut ebpf, MAP_FLOWS)?;
        let generation = bpf::array(&mut ebpf, MAP_GENERATION)?;
        let counters = bpf::array(&mut ebpf, MAP_COUNTERS)?;
        xdp(&mut ebpf)?
            .load()
            .map_err(|e| bpf::error("cannot load the DSR fast path", e))?;
        Ok(FastPath {
            cfg,
            ebpf,
            link: None,
            flows,
            generation: Arc::new(Generation {
                state: Mutex::new((generation, 0)),
            }),
            counters,
            epoch: None,
            pass_gen: None,
            last_key: None,
            learned: 0,
            learn_errors: 0,
        })
    }

    /// Loads the program and attaches it to interface `ifindex` in generic XDP mode, through a
    /// BPF link (detached by the kernel when pen exits, however it exits).
    pub fn attach(cfg: FastPathConfig, ifindex: u32, ifname: &str) -> io::Result<FastPath> {
        let mut fp = FastPath::load(cfg)?;
        let link = crate::sys::bpf::xdp_link(fp.prog()?.as_fd(), ifindex).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot attach the XDP program to {ifname}: {e}"),
            )
        })?;
        fp.link = Some(link);
        Ok(fp)
    }

    /// Loads the program and swaps it into `link`, an XDP link another pen attached and handed
    /// over (binary upgrade): no moment without a program, and no second attachment (the
    /// kernel allows one XDP link per interface).
    pub fn adopt(cfg: FastPathConfig, link: OwnedFd, ifname: &str) -> io::Result<FastPath> {
        let mut fp = FastPath::load(cfg)?;
        crate::sys::bpf::link_update(link.as_fd(), fp.prog()?.as_fd()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot take over the XDP link of {ifname}: {e}"),
            )
        })?;
        fp.link = Some(link);
        Ok(fp)
    }

    /// The attachment (a BPF link), to hand over to a new pen.
    pub fn link_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.link.as_ref().map(|l| l.as_fd())
    }

    /// The program (for `bpf::test_run`).
    pub fn prog(&self) -> io::Result<&ProgramFd> {
        self.ebpf
            .program(PROG)
            .ok_or_else(|| bpf::missing("program", PROG))?
            .fd()
            .map_err(|e| bpf::error("the DSR fast path", e))
    }

    /// The generation handle, for the control path.
    pub fn generation(&self) -> Arc<Generation> {
        self.generation.clone()
    }

    /// Starts a new generation when the engine's `epoch` differs from the last one seen (the
    /// table was rebuilt or a backend's MAC changed).
    pub fn sync(&mut self, epoch: u64) {
        if self.epoch == Some(epoch) {
            return;
        }
        match self.generation.bump() {
            Ok(g) => {
                self.pass_gen = Some(g);
                self.epoch = Some(epoch);
                self.last_key = None;
            }
            // Keep the old epoch (the next pass tries again) and write nothing meanwhile.
            Err(_) => {
                self.pass_gen = None;
                self.learn_errors += 1;
            }
        }
    }

    /// Records the choice the engine made for `frame`, a frame it has just forwarded (already
    /// rewritten: its destination MAC is the backend's). Frames the program would not look up
    /// are ignored.
    pub fn learn(&mut self, frame: &[u8]) {
        let Some(g) = self.pass_gen else {
            return;
        };
        let Some(key) = flow_key(&self.cfg, frame).filter(|k| self.last_key != Some(*k)) else {
            return;
        };
        let mut value: Entry = [0; 16];
        value[..6].copy_from_slice(&frame[wire::eth::DST..wire::eth::DST + 6]);
        value[OFF_GENERATION..].copy_from_slice(&g.to_ne_bytes());
        match self.flows.insert(key, value, 0) {
            Ok(()) => {
                self.learned += 1;
                self.last_key = Some(key);
            }
            Err(_) => self.learn_errors += 1,
        }
    }

    /// Ends a pass: the next pass writes with the generation in force now (read before its
    /// tick reads the server list).
    pub fn end_pass(&mut self) {
        self.last_key = None;
        if self.epoch.is_some() {
            self.pass_gen = Some(self.generation.current());
        }
    }

    /// What the program has forwarded so far.
    pub fn counts(&self) -> KernelCounts {
        match self.counters.get(&0, 0) {
            Ok([frames, bytes]) => KernelCounts { frames, bytes },
            Err(_) => KernelCounts::default(),
        }
    }
}

/// The learning step as a driver wrapper: after each pass is sent, the fast path is synced
/// with the engine's epoch ([`Output::epoch`]) and learns every frame the engine forwarded
/// ([`FastPath::sync`], [`FastPath::learn`], [`FastPath::end_pass`]). After sending, so a
/// client's next frame cannot overtake this one on the fast path.
#[derive(Debug)]
pub struct Learning<I> {
    inner: I,
    /// The fast path being taught.
    pub fast: FastPath,
}

impl<I: FrameIo> Learning<I> {
    /// Teaches `fast` the choices the engine makes on `inner`'s frames.
    pub fn new(inner: I, fast: FastPath) -> Learning<I> {
        Learning { inner, fast }
    }

    /// The wrapped driver.
    pub fn inner(&self) -> &I {
        &self.inner
    }

    /// The wrapped driver, mutable.
    pub fn inner_mut(&mut self) -> &mut I {
        &mut self.inner
    }
}

impl<I: FrameIo> FrameIo for Learning<I> {
    fn now(&self) -> std::time::Duration {
        self.inner.now()
    }

    fn batch<R>(
        &mut self,
        timeout: std::time::Duration,
        pass: impl FnOnce(&mut dyn Batch) -> R,
    ) -> io::Result<Option<R>> {
        let fast = &mut self.fast;
        self.inner
            .batch(timeout, |b| pass(&mut LearnBatch { inner: b, fast }))
    }
}

struct LearnBatch<'a, 'b> {
    inner: &'b mut dyn Batch,
    fast: &'a mut FastPath,
}

impl Batch for LearnBatch<'_, '_> {
    fn now(&self) -> std::time::Duration {
        self.inner.now()
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn frame(&mut self, i: usize) -> Option<(&mut [u8], crate::engine::RxMeta)> {
        self.inner.frame(i)
    }

    fn peek(&self, i: usize) -> Option<&[u8]> {
        self.inner.peek(i)
    }

    fn send(&mut self, out: &Output<'_>) -> io::Result<()> {
        let r = self.inner.send(out);
        self.fast.sync(out.epoch);
        for (i, len) in out.forwarded() {
            if let Some(f) = self.inner.peek(i) {
                self.fast.learn(f.get(..len).unwrap_or(f));
            }
        }
        self.fast.end_pass();
        r
    }
}

/// The XDP program of a loaded DSR object.
fn xdp(ebpf: &mut Ebpf) -> io::Result<&mut Xdp> {
    let p = ebpf
        .program_mut(PROG)
        .ok_or_else(|| bpf::missing("program", PROG))?;
    p.try_into()
        .map_err(|e| bpf::error(&format!("BPF program {PROG}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::frames;

    const OUR: Mac = [0x02, 0, 0, 0, 0, 0x10];
    const CLIENT: Mac = [0x02, 0, 0, 0, 0, 0x01];
    const WEB: Mac = [0x02, 0, 0, 0, 0, 0x03];

    fn cfg() -> FastPathConfig {
        FastPathConfig {
            mac: OUR,
            vip: Ipv4Addr::new(10, 0, 0, 100),
            port: 80,
            proto: 6,
            per_flow: false,
        }
    }

    /// A TCP frame from 10.0.0.10:`sport` to the VIP:`dport`, addressed to `dst`.
    fn tcp(dst: Mac, sport: u16, dport: u16) -> Vec<u8> {
        frames::tcp(
            CLIENT,
            dst,
            std::net::SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10), sport),
            std::net::SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100), dport),
            frames::ACK,
            1,
            1,
            &[],
            b"hello",
        )
    }

    #[test]
    fn the_key_is_the_client_address_and_with_r_its_port() {
        let f = tcp(OUR, 40000, 80);
        assert_eq!(flow_key(&cfg(), &f), Some([10, 0, 0, 10, 0, 0, 0, 0]));
        let c = FastPathConfig {
            per_flow: true,
            ..cfg()
        };
        let p = 40000u16.to_be_bytes();
        assert_eq!(flow_key(&c, &f), Some([10, 0, 0, 10, p[0], p[1], 0, 0]));
    }

    #[test]
    fn frames_the_engine_must_see_have_no_key() {
        let c = cfg();
        // Another port, another protocol, a fragment, IP options, too short, not IPv4.
        assert_eq!(flow_key(&c, &tcp(OUR, 1, 81)), None);
        let mut f = tcp(OUR, 1, 80);
        f[23] = 17;
        assert_eq!(flow_key(&c, &f), None);
        let mut f = tcp(OUR, 1, 80);
        f[20] = 0x20; // MF
        assert_eq!(flow_key(&c, &f), None);
        let mut f = tcp(OUR, 1, 80);
        f[21] = 1; // offset 8
        assert_eq!(flow_key(&c, &f), None);
        let mut f = tcp(OUR, 1, 80);
        f[20] = 0x40; // DF only: still a whole datagram
        assert!(flow_key(&c, &f).is_some());
        let mut f = tcp(OUR, 1, 80);
        f[14] = 0x46;
        assert_eq!(flow_key(&c, &f), None);
        assert_eq!(flow_key(&c, &tcp(OUR, 1, 80)[..37]), None);
        let mut f = tcp(OUR, 1, 80);
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(flow_key(&c, &f), None);
        // Port 0 = every port.
        let any = FastPathConfig { port: 0, ..c };
        assert!(flow_key(&any, &tcp(OUR, 1, 81)).is_some());
    }

    /// Loads the program for real and runs it on frames with BPF_PROG_TEST_RUN (root).
    fn loaded(c: FastPathConfig) -> FastPath {
        bpf::require_root_to_load();
        FastPath::load(c).expect("the kernel accepts the fast-path program")
    }

    fn run(fp: &FastPath, f: &[u8]) -> (u32, Vec<u8>) {
        bpf::test_run(fp.prog().unwrap(), f).unwrap()
    }

    /// The learning step as a driver wrapper: the drive loop over the memory driver, wrapped
    /// in [`Learning`], teaches the loaded program the engine's choice for a forwarded client
    /// (the kernel then forwards that client's next frame itself), and nothing for frames the
    /// engine answered or held.
    #[test]
    fn the_learning_wrapper_teaches_the_kernel_what_the_engine_forwarded() {
        crate::sys::process::require_root("loading an XDP program");
        let fp = FastPath::load(cfg()).expect("the kernel accepts the fast-path program");
        let mut ec = crate::engine::EngineConfig::new(OUR, Ipv4Addr::new(10, 0, 0, 100), 80);
        let web = Ipv4Addr::new(10, 0, 0, 3);
        ec.backends = vec![crate::engine::BackendConfig {
            ip: Some(web.into()),
            weight: 0,
            available: true,
        }];
        let mut engine = crate::engine::Engine::new(ec);
        let mut mem = crate::link::mem::MemIo::new();
        let ms = std::time::Duration::from_millis;
        // Held (backend MAC unknown): not learned.
        mem.push(ms(0), tcp(OUR, 40000, 80));
        mem.push(
            ms(1),
            frames::arp_reply(WEB, web, OUR, Ipv4Addr::new(10, 0, 0, 100)),
        );
        mem.push(
            ms(2),
            frames::arp_request(
                CLIENT,
                Ipv4Addr::new(10, 0, 0, 10),
                Ipv4Addr::new(10, 0, 0, 100),
            ),
        );
        let mut l = Learning::new(&mut mem, fp);
        crate::link::io::drive_to_end(&mut engine, &mut l).unwrap();
        assert_eq!(
            l.fast.learned, 0,
            "held, learned and ARP frames teach nothing"
        );
        assert_eq!(run(&l.fast, &tcp(OUR, 40000, 80)).0, XDP_PASS);
        l.inner_mut().push(ms(3), tcp(OUR, 40000, 80));
        crate::link::io::drive_to_end(&mut engine, &mut l).unwrap();
        assert_eq!(l.fast.learned, 1);
        let (rc, out) = run(&l.fast, &tcp(OUR, 40000, 80));
        assert_eq!(rc, XDP_TX);
        assert_eq!(&out[..6], &WEB, "to the backend the engine chose");
        assert_eq!(&out[6..12], &OUR);
        assert_eq!(engine.counters().forwarded, 1, "{}", engine.counters());
    }

    #[test]
    fn the_kernel_forwards_a_learned_client_and_passes_everything_else() {
        let mut fp = loaded(cfg());
        let f = tcp(OUR, 40000, 80);
        // Not learned yet, and nothing learned before the first sync.
        assert_eq!(run(&fp, &f).0, XDP_PASS);
        let mut fwd = f.clone();
        fwd[..6].copy_from_slice(&WEB);
        fwd[6..12].copy_from_slice(&OUR);
        fp.learn(&fwd);
        assert_eq!(fp.learned, 0);
        assert_eq!(run(&fp, &f).0, XDP_PASS);
        fp.sync(1);
        fp.learn(&fwd);
        fp.learn(&fwd);
        assert_eq!(fp.learned, 1, "one write per client per pass");
        let (rc, out) = run(&fp, &f);
        assert_eq!(rc, XDP_TX);
        assert_eq!(out, fwd, "MACs rewritten, nothing else touched");
        // Another source port of the same client: same entry without -r.
        assert_eq!(run(&fp, &tcp(OUR, 40001, 80)).0, XDP_TX);
        // Counters: two frames of 14 + IP total length.
        let n = fp.counts();
        assert_eq!(n.frames, 2);
        assert_eq!(n.bytes, 2 * f.len() as u64);
        // Not addressed to us, another port, a fragment: the engine's.
        assert_eq!(run(&fp, &tcp(WEB, 40000, 80)).0, XDP_PASS);
        assert_eq!(run(&fp, &tcp(OUR, 40000, 81)).0, XDP_PASS);
        let mut frag = f.clone();
        frag[20] = 0x20;
        assert_eq!(run(&fp, &frag).0, XDP_PASS);
        // Truncated frames pass (and the verifier proved no read beyond them).
        for n in [0, 13, 14, 33, 37] {
            assert_eq!(run(&fp, &f[..n.max(14)]).0, XDP_PASS, "{n} bytes");
        }
        // A new engine epoch invalidates every entry at once.
        fp.sync(2);
        assert_eq!(run(&fp, &f).0, XDP_PASS);
        fp.learn(&fwd);
        assert_eq!(run(&fp, &f).0, XDP_TX);
        fp.sync(2);
        assert_eq!(run(&fp, &f).0, XDP_TX, "the same epoch keeps the entries");
        // The control path bumps the generation (a `server` command) while a pass is under
        // way: entries that pass writes are stale at once; the next pass writes valid ones.
        fp.generation().bump().unwrap();
        assert_eq!(run(&fp, &f).0, XDP_PASS);
        fp.learn(&fwd);
        assert_eq!(
            run(&fp, &f).0,
            XDP_PASS,
            "decided before the bump: not trusted"
        );
        fp.end_pass();
        fp.learn(&fwd);
        assert_eq!(run(&fp, &f).0, XDP_TX);
    }

    /// A veth pair of this test's own (no `dummy` module on every kernel), deleted when
    /// dropped, also when the test fails.
    struct Dummy(String);

    impl Dummy {
        fn new() -> Dummy {
            // One per test of this process (tests run in parallel).
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
            let name = format!("penxdp{}{n}", std::process::id() % 100_000);
            let _ = ip(&["link", "del", &name]);
            let peer = format!("{name}p");
            let out = ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
            assert!(out.status.success(), "ip link add {name}: {out:?}");
            Dummy(name)
        }
        fn ifindex(&self) -> u32 {
            let path = format!("/sys/class/net/{}/ifindex", self.0);
            let text = std::fs::read_to_string(&path).unwrap();
            text.trim().parse().unwrap()
        }
        /// What `ip -d link show` says about XDP on it.
        fn xdp(&self) -> bool {
            let out = ip(&["-d", "link", "show", "dev", &self.0]);
            String::from_utf8_lossy(&out.stdout).contains("xdpgeneric")
        }
    }

    impl Drop for Dummy {
        fn drop(&mut self) {
            let _ = ip(&["link", "del", &self.0]);
        }
    }

    fn ip(args: &[&str]) -> std::process::Output {
        std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("ip (iproute2) runs")
    }

    /// The program is attached in generic mode through a BPF link, never by netlink, so the
    /// kernel detaches it when the link's descriptor closes (a dropped fast path, or pen
    /// killed).
    #[test]
    fn the_attachment_is_a_link_that_goes_with_the_fast_path() {
        bpf::require_root_to_load();
        let dummy = Dummy::new();
        assert!(!dummy.xdp());
        let mut fp = FastPath::attach(cfg(), dummy.ifindex(), &dummy.0).expect("attaches");
        assert!(dummy.xdp(), "attached in generic (SKB) mode");
        // Closing the link's descriptor alone (the program stays loaded) detaches it, as the
        // kernel does when pen is killed; a netlink attachment would stay.
        drop(fp.link.take());
        assert!(!dummy.xdp(), "detached with the link");
        drop(fp);
    }

    /// Binary upgrade: a second attachment is refused while the first link is there; the new
    /// fast path swaps its program into the handed-over link instead, and the attachment then
    /// lives as long as the new fast path, whatever happens to the old one.
    #[test]
    fn a_new_fast_path_adopts_the_old_ones_link() {
        bpf::require_root_to_load();
        let dummy = Dummy::new();
        let old = FastPath::attach(cfg(), dummy.ifindex(), &dummy.0).expect("attaches");
        let Err(e) = FastPath::attach(cfg(), dummy.ifindex(), &dummy.0) else {
            panic!("a second XDP link on one interface was accepted");
        };
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy, "{e}");
        let handed = old
            .link_fd()
            .expect("attached")
            .try_clone_to_owned()
            .unwrap();
        let new = FastPath::adopt(cfg(), handed, &dummy.0).expect("adopts the link");
        drop(old);
        assert!(
            dummy.xdp(),
            "still attached: the new fast path holds the link"
        );
        drop(new);
        // A child another test forks meanwhile holds every descriptor until it execs: wait.
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !dummy.xdp()
        });
        assert!(gone, "detached with the last holder of the link");
    }

    #[test]
    fn with_r_each_source_port_is_its_own_entry() {
        let mut fp = loaded(FastPathConfig {
            per_flow: true,
            ..cfg()
        });
        fp.sync(0);
        let mut fwd = tcp(WEB, 40000, 80);
        fwd[6..12].copy_from_slice(&OUR);
        fp.learn(&fwd);
        assert_eq!(run(&fp, &tcp(OUR, 40000, 80)).0, XDP_TX);
        assert_eq!(run(&fp, &tcp(OUR, 40001, 80)).0, XDP_PASS);
    }

    /// The program's cost per frame, as the kernel times it: a learned client's frame
    /// (`XDP_TX`) and a frame for another port (`XDP_PASS`). The kernel reuses the frame
    /// across the runs, so the learned backend is our own MAC: the rewrite leaves a frame
    /// that hits again.
    #[test]
    #[ignore = "measurement, needs root; run by hand"]
    fn program_cost_per_frame() {
        let mut fp = FastPath::load(cfg()).expect("loads");
        fp.sync(0);
        fp.learn(&tcp(OUR, 40000, 80));
        let prog = fp.prog().unwrap();
        for (what, f, rc) in [
            ("tx", tcp(OUR, 40000, 80), XDP_TX),
            ("pass", tcp(OUR, 40000, 81), XDP_PASS),
        ] {
            assert_eq!(bpf::test_run(prog, &f).unwrap().0, rc);
            let ns = bpf::mean_run_ns(prog, &f, 1_000_000).unwrap();
            eprintln!("xdp {what}: {ns} ns per frame");
        }
        assert_eq!(fp.counts().frames, 1_000_001, "every run was a hit");
    }

    /// The program looks a frame up exactly when [`flow_key`] gives it a key (and the frame is
    /// addressed to us): random mutations of a learned frame never reach XDP_TX with a key
    /// that differs from the learned one.
    #[test]
    fn the_program_and_flow_key_agree_on_mutated_frames() {
        let mut fp = loaded(FastPathConfig { port: 0, ..cfg() });
        fp.sync(0);
        let base = tcp(OUR, 40000, 80);
        let mut fwd = base.clone();
        fwd[..6].copy_from_slice(&WEB);
        fp.learn(&fwd);
        let learned = flow_key(&fp.cfg, &base);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut f = base.clone();
            for _ in 0..(rnd() % 3 + 1) {
                let at = (rnd() % 40) as usize;
                f[at] = rnd() as u8;
            }
            let (rc, _) = run(&fp, &f);
            let expect_tx = f[..6] == OUR
                && flow_key(&fp.cfg, &f).is_some()
                && flow_key(&fp.cfg, &f) == learned;
            assert_eq!(rc == XDP_TX, expect_tx, "frame {:02x?}", &f[..40]);
        }
    }
}
