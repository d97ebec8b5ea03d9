//! The UDP kernel fast path: established IPv4 flows forwarded by a tc program, without waking
//! pen.
//!
//! The flow table stays the one place where flows are made and ended. Once a flow has
//! completed an exchange through pen (the client sent again after its server answered), the
//! table asks for it to be handed to the kernel ([`FlowTable::offload`](super::FlowTable::offload)
//! queues an install command; the shell carries it out with [`KernelPath::install`], outside
//! the table's lock): two entries in a hash map, one per direction, each "datagrams from A to
//! B leave as from C to D through interface N":
//!
//! - client → listening address  ⇒  upstream socket's address → server, out of the server's
//!   interface;
//! - server → upstream socket's address  ⇒  listening address → client, out of the client's
//!   interface.
//!
//! A tc program on the ingress of those interfaces (a tcx BPF link, so other tc programs keep
//! running and the kernel detaches it when pen exits) looks every IPv4/UDP datagram up by its
//! four-tuple; on a hit it rewrites addresses and ports, updates the IP and UDP checksums
//! incrementally (a zero UDP checksum stays zero), notes the time and counts, and sends the
//! frame out with `bpf_redirect_neigh` (the kernel's route and neighbour tables fill in the
//! Ethernet header). Everything else (other protocols, IP options, fragments, frames not
//! addressed to this host, unknown four-tuples) goes on to the IP stack unchanged, so pen
//! sees it as before.
//!
//! The kernel entries are a cache of the table's flows: the shell reads their traffic
//! before the table judges a flow idle ([`KernelPath::activity`]) and withdraws them when the
//! table says the flow ended, for any reason ([`KernelPath::withdraw`]); the upstream socket
//! stays open meanwhile, so no other socket can be given its port. Pen's counters of an
//! offloaded flow catch up at those moments. Route look-ups are cached until the routing
//! changes ([`super::routes`]). Datagrams forwarded by the program bypass netfilter on the
//! balancer host and its packet taps on egress.
//!
//! IPv6, transparent mode and clients or servers on the host itself stay on the socket path.
//! When the kernel refuses (no tcx before Linux 6.6, no CAP_BPF/CAP_NET_ADMIN), pen logs why
//! and forwards every datagram itself; `PEN_UDP_OFFLOAD=0` turns the fast path off.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{self, MapData};
use aya::programs::{ProgramFd, SchedClassifier};

use super::flow::{Activity, OffloadRequest};
use super::routes::{RouteCache, Via};
use crate::engine::wire;
use crate::link::bpf;
use crate::link::route;
use crate::sys::bpf::{monotonic_ns, tcx_link};

/// Map key (`struct tuple` of `bpf/udp_tc.bpf.c`): source address, destination address,
/// source port, destination port, as on the wire (bytes 26..38 of an Ethernet frame carrying
/// IPv4 without options).
pub type Key = [u8; KEY_LEN];
pub const KEY_LEN: usize = 12;
/// Map value (`struct entry`): the new four-tuple in the key's layout (12 bytes), output
/// interface index (u32), then, written by the program: time of the last datagram (u64,
/// CLOCK_MONOTONIC ns), datagrams (u64) and payload bytes (u64). Native byte order for the
/// numbers.
pub type Entry = [u8; VALUE_LEN];
pub const VALUE_LEN: usize = 40;
const OFF_IFINDEX: usize = 12;
const OFF_LAST: usize = 16;
const OFF_PACKETS: usize = 24;
const OFF_BYTES: usize = 32;
/// Two entries per flow.
pub const MAX_ENTRIES: u32 = 2 * 65_536;
/// The program and its map, as named in `bpf/udp_tc.bpf.c`.
const PROG: &str = "pen_udp_fast";
const MAP: &str = "pen_udp_flows";

/// Where the IPv4 header starts (no VLAN tag), where the UDP header starts (no IP options),
/// and the shortest frame the program looks at: Ethernet + IPv4 without options + UDP header.
const IP: usize = wire::ETH_LEN;
const UDP: usize = IP + wire::ipv4::LEN;
const MIN_LEN: usize = UDP + wire::udp::LEN;
/// The map's key is the four-tuple as it sits in the frame: source and destination address,
/// then source and destination port (contiguous from the IPv4 source address).
const TUPLE: std::ops::Range<usize> = IP + wire::ipv4::SRC..UDP + wire::udp::LEN_FIELD;

/// One direction of an offloaded flow: datagrams `from → to` leave as `new_from → new_to`
/// through interface `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub from: SocketAddrV4,
    pub to: SocketAddrV4,
    pub new_from: SocketAddrV4,
    pub new_to: SocketAddrV4,
    pub out: u32,
}

fn tuple(from: &SocketAddrV4, to: &SocketAddrV4) -> Key {
    let mut k = [0u8; KEY_LEN];
    k[0..4].copy_from_slice(&from.ip().octets());
    k[4..8].copy_from_slice(&to.ip().octets());
    k[8..10].copy_from_slice(&from.port().to_be_bytes());
    k[10..12].copy_from_slice(&to.port().to_be_bytes());
    k
}

impl Rewrite {
    pub fn key(&self) -> Key {
        tuple(&self.from, &self.to)
    }

    /// The map value (counters zero).
    pub fn value(&self) -> [u8; VALUE_LEN] {
        let mut v = [0u8; VALUE_LEN];
        v[..KEY_LEN].copy_from_slice(&tuple(&self.new_from, &self.new_to));
        v[OFF_IFINDEX..OFF_IFINDEX + 4].copy_from_slice(&self.out.to_ne_bytes());
        v
    }
}

/// The two directions of a flow: `client` talks to `listen`, pen talks to `server` from
/// `local`; the client is reached through interface `client_if`, the server through
/// `server_if`.
pub fn rewrites(
    client: SocketAddrV4,
    listen: SocketAddrV4,
    local: SocketAddrV4,
    server: SocketAddrV4,
    client_if: u32,
    server_if: u32,
) -> [Rewrite; 2] {
    [
        Rewrite {
            from: client,
            to: listen,
            new_from: local,
            new_to: server,
            out: server_if,
        },
        Rewrite {
            from: server,
            to: local,
            new_from: listen,
            new_to: client,
            out: client_if,
        },
    ]
}

/// The key the program looks `frame` up with, if it looks it up at all: IPv4 (no VLAN tag),
/// no IP options, not a fragment, UDP, long enough for the UDP header.
pub fn frame_key(frame: &[u8]) -> Option<Key> {
    let f = frame.get(..MIN_LEN)?;
    if wire::be16(f, wire::eth::TYPE) != Some(wire::ETHERTYPE_IPV4)
        || f[IP + wire::ipv4::VER_IHL] != 0x45
        || f[IP + wire::ipv4::PROTO] != wire::PROTO_UDP
    {
        return None;
    }
    if wire::be16(f, IP + wire::ipv4::FRAG).is_none_or(|v| v & 0x3fff != 0) {
        return None; // MF set or a fragment offset
    }
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(&f[TUPLE]);
    Some(k)
}

/// What the program does to `frame` when `entry` is the map's value for its key: the frame as
/// it leaves (checksums recomputed from scratch, which the program's incremental updates
/// must agree with) and the output interface. `None` when the program passes the frame on.
pub fn model(frame: &[u8], entry: Option<&Rewrite>) -> Option<(Vec<u8>, u32)> {
    let key = frame_key(frame)?;
    let r = entry.filter(|r| r.key() == key)?;
    let mut out = frame.to_vec();
    out[TUPLE].copy_from_slice(&tuple(&r.new_from, &r.new_to));
    let ip_csum = IP + wire::ipv4::CSUM;
    out[ip_csum..ip_csum + 2].fill(0);
    let c = wire::ipv4_header_checksum(&out[IP..UDP]);
    out[ip_csum..ip_csum + 2].copy_from_slice(&c.to_be_bytes());
    let udp_csum = UDP + wire::udp::CSUM;
    if wire::be16(frame, udp_csum).unwrap_or(0) != 0 {
        let udp_len = usize::from(wire::be16(frame, UDP + wire::udp::LEN_FIELD).unwrap_or(0));
        let end = (UDP + udp_len).min(out.len());
        out[udp_csum..udp_csum + 2].fill(0);
        let c = match out.get(UDP..end) {
            Some(datagram) => {
                wire::l4_checksum_v4(*r.new_from.ip(), *r.new_to.ip(), wire::PROTO_UDP, datagram)
            }
            None => 0,
        };
        // Zero means "no checksum" in UDP over IPv4: a computed zero is sent as all ones.
        let c = if c == 0 { 0xffff } else { c };
        out[udp_csum..udp_csum + 2].copy_from_slice(&c.to_be_bytes());
    }
    Some((out, r.out))
}

/// Counters of one installed direction, as last read.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    packets: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Installed {
    up: Key,
    down: Key,
    seen_up: Seen,
    seen_down: Seen,
}

/// The loaded program, its map and attachments, and the flows installed in it.
#[derive(Debug)]
pub struct KernelPath {
    /// The loaded object (owns the program; unloaded when dropped).
    ebpf: Ebpf,
    map: maps::HashMap<MapData, Key, Entry>,
    /// Interface → its tcx link (`None`: attaching failed; not tried again).
    links: HashMap<u32, Option<OwnedFd>>,
    flows: HashMap<SocketAddr, Installed>,
    /// Route look-ups, dropped when routes change ([`KernelPath::routes_changed`]).
    routes: RouteCache,
}

impl KernelPath {
    /// Creates the map and loads the program (attached to interfaces as flows need them).
    pub fn new() -> io::Result<KernelPath> {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(MAP, MAX_ENTRIES)
            .load(bpf::UDP_TC)
            .map_err(|e| bpf::error("cannot load the UDP fast path", e))?;
        let map = bpf::hash_map(&mut ebpf, MAP)?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(PROG)
            .ok_or_else(|| bpf::missing("program", PROG))?
            .try_into()
            .map_err(|e| bpf::error(&format!("BPF program {PROG}"), e))?;
        prog.load()
            .map_err(|e| bpf::error("cannot load the UDP fast path", e))?;
        Ok(KernelPath {
            ebpf,
            map,
            links: HashMap::new(),
            flows: HashMap::new(),
            routes: RouteCache::default(),
        })
    }

    /// Whether `client`'s flow is in the kernel's map.
    pub fn holds(&self, client: &SocketAddr) -> bool {
        self.flows.contains_key(client)
    }

    /// The program (for `bpf::test_run` and attaching).
    pub fn prog(&self) -> io::Result<&ProgramFd> {
        self.ebpf
            .program(PROG)
            .ok_or_else(|| bpf::missing("program", PROG))?
            .fd()
            .map_err(|e| bpf::error("the UDP fast path", e))
    }

    /// Writes both directions of a flow into the map (tests call this directly).
    pub fn put(&mut self, client: SocketAddr, rw: &[Rewrite; 2]) -> io::Result<()> {
        for r in rw {
            self.map
                .insert(r.key(), r.value(), 0)
                .map_err(|e| bpf::error("cannot write a UDP flow's kernel entry", e))?;
        }
        self.flows.insert(
            client,
            Installed {
                up: rw[0].key(),
                down: rw[1].key(),
                seen_up: Seen::default(),
                seen_down: Seen::default(),
            },
        );
        Ok(())
    }

    /// How the kernel reaches `dst` over an interface (cached until routes change).
    fn via(&mut self, dst: Ipv4Addr) -> Result<Via, OffloadError> {
        let v = match self.routes.get(dst) {
            Some(v) => v,
            None => {
                let v = match route::route_get(IpAddr::V4(dst)) {
                    // Only destinations reached over an interface: not the host itself.
                    Ok(r) if r.kind == 1 && r.oif != 0 => Some(Via {
                        oif: r.oif,
                        src: match r.prefsrc {
                            Some(IpAddr::V4(s)) => Some(s),
                            _ => None,
                        },
                    }),
                    Ok(_) => None,
                    Err(source) => return Err(OffloadError::RouteLookup { dst, source }),
                };
                self.routes.insert(dst, v);
                v
            }
        };
        v.ok_or(OffloadError::NotOverAnInterface { dst })
    }

    /// The kernel's routing changed: route look-ups are made again for the flows installed
    /// from now on.
    pub fn routes_changed(&mut self) {
        self.routes.routes_changed();
    }

    /// The interface `dst` is reached through now, as the fast path would install it
    /// (`None`: not over an interface, or the look-up failed).
    pub fn route_to(&mut self, dst: Ipv4Addr) -> Option<u32> {
        self.via(dst).ok().map(|v| v.oif)
    }

    fn attach(&mut self, ifindex: u32) -> bool {
        if let Some(l) = self.links.get(&ifindex) {
            return l.is_some();
        }
        let link = self.prog().and_then(|prog| tcx_link(prog.as_fd(), ifindex));
        self.links
            .entry(ifindex)
            .or_insert(match link {
                Ok(l) => {
                    tracing::info!(ifindex, "udp: kernel fast path attached");
                    Some(l)
                }
                Err(e) => {
                    tracing::warn!(ifindex, error = %e, "udp: cannot attach the kernel fast path; flows through this interface stay in pen");
                    None
                }
            })
            .is_some()
    }

    fn read(&self, key: &Key) -> Option<(u64, Seen)> {
        match self.map.get(key, 0) {
            Ok(v) => Some((
                u64_at(&v, OFF_LAST),
                Seen {
                    packets: u64_at(&v, OFF_PACKETS),
                    bytes: u64_at(&v, OFF_BYTES),
                },
            )),
            Err(_) => None,
        }
    }
}

fn u64_at(v: &[u8; VALUE_LEN], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&v[off..off + 8]);
    u64::from_ne_bytes(b)
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// Why a flow stays in pen instead of going to the kernel fast path.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("{addr} is not an IPv4 address; the kernel fast path forwards IPv4 only")]
    NotIpv4 { addr: SocketAddr },
    #[error(
        "the listener's address {listen} is a wildcard and the client's destination is unknown"
    )]
    WildcardListener { listen: SocketAddr },
    #[error("cannot look up the route to {dst}")]
    RouteLookup {
        dst: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    #[error("{dst} is not reached over an interface (the host itself, or no route)")]
    NotOverAnInterface { dst: Ipv4Addr },
    #[error("the route to {dst} names no source address for the wildcard upstream socket")]
    NoSourceAddress { dst: Ipv4Addr },
    #[error("the fast path could not be attached to interface {ifindex}")]
    NotAttached { ifindex: u32 },
    #[error("cannot write the flow of {client} into the kernel's map")]
    MapUpdate {
        client: SocketAddr,
        #[source]
        source: io::Error,
    },
}

fn need_v4(a: SocketAddr) -> Result<SocketAddrV4, OffloadError> {
    v4(a).ok_or(OffloadError::NotIpv4 { addr: a })
}

/// The shell's side of the table's [`OffloadCommand`](super::flow::OffloadCommand)s: the
/// kernel calls (route look-ups, tcx attachment, map writes and reads). Never called with the
/// flow table's lock held.
impl KernelPath {
    /// Forward the flow in the kernel from now on (an `Install` command).
    pub fn install(&mut self, req: &OffloadRequest) -> Result<(), OffloadError> {
        let client = need_v4(req.client)?;
        let listen = need_v4(req.listen)?;
        let server = need_v4(req.server)?;
        let local = need_v4(req.upstream)?;
        if listen.ip().is_unspecified() {
            return Err(OffloadError::WildcardListener { listen: req.listen });
        }
        let to_client = self.via(*client.ip())?;
        let to_server = self.via(*server.ip())?;
        let local_ip = if local.ip().is_unspecified() {
            to_server
                .src
                .ok_or(OffloadError::NoSourceAddress { dst: *server.ip() })?
        } else {
            *local.ip()
        };
        let local = SocketAddrV4::new(local_ip, local.port());
        for ifindex in [to_client.oif, to_server.oif] {
            if !self.attach(ifindex) {
                return Err(OffloadError::NotAttached { ifindex });
            }
        }
        let rw = rewrites(client, listen, local, server, to_client.oif, to_server.oif);
        self.put(req.client, &rw).map_err(|source| {
            self.withdraw(&req.client);
            OffloadError::MapUpdate {
                client: req.client,
                source,
            }
        })
    }

    /// Traffic forwarded for `client`'s flow since the previous call (`now`: the table's clock).
    pub fn activity(&mut self, client: &SocketAddr, now: Duration) -> Activity {
        let Some(f) = self.flows.get(client) else {
            return Activity::default();
        };
        let (up, down) = (self.read(&f.up), self.read(&f.down));
        let mono = monotonic_ns();
        let mut act = Activity::default();
        let mut last = 0u64;
        if let Some((t, s)) = up {
            act.datagrams_up = s.packets.saturating_sub(f.seen_up.packets);
            act.bytes_up = s.bytes.saturating_sub(f.seen_up.bytes);
            last = last.max(t);
        }
        if let Some((t, s)) = down {
            act.datagrams_down = s.packets.saturating_sub(f.seen_down.packets);
            act.bytes_down = s.bytes.saturating_sub(f.seen_down.bytes);
            last = last.max(t);
        }
        if last != 0 {
            let age = Duration::from_nanos(mono.saturating_sub(last));
            act.last_seen = Some(now.saturating_sub(age));
        }
        if let Some(f) = self.flows.get_mut(client) {
            if let Some((_, s)) = up {
                f.seen_up = s;
            }
            if let Some((_, s)) = down {
                f.seen_down = s;
            }
        }
        act
    }

    /// Stop forwarding `client`'s flow in the kernel (a `Withdraw` command). Returns what the
    /// kernel forwarded for it since it was last read.
    pub fn withdraw(&mut self, client: &SocketAddr) -> Activity {
        let last = self.activity(client, Duration::ZERO);
        if let Some(f) = self.flows.remove(client) {
            for k in [f.up, f.down] {
                if let Err(e) = self.map.remove(&k) {
                    tracing::warn!(error = %e, %client, "udp fast path: cannot remove a flow's kernel entry");
                }
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    /// One's-complement sum of `data` added to `acc`, folded (0xffff over data that carries
    /// its own valid checksum).
    fn ones_sum(data: &[u8], acc: u32) -> u16 {
        !wire::fold(wire::sum16(data, u64::from(acc)))
    }

    /// The folded sum of the IPv4/UDP pseudo header and the UDP datagram in `frame[UDP..end]`.
    fn udp_sum(frame: &[u8], end: usize) -> u16 {
        let datagram = frame.get(UDP..end).unwrap_or(&[]);
        let mut pseudo = [0u8; 12];
        if let Some(addrs) = frame.get(IP + wire::ipv4::SRC..UDP) {
            pseudo[..8].copy_from_slice(addrs);
        }
        pseudo[9] = wire::PROTO_UDP;
        pseudo[10..12].copy_from_slice(&(datagram.len() as u16).to_be_bytes());
        ones_sum(datagram, u32::from(ones_sum(&pseudo, 0)))
    }

    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    /// An Ethernet/IPv4/UDP frame with valid checksums (`csum`: compute the UDP checksum, or
    /// leave it zero).
    pub(super) fn frame(
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
        csum: bool,
    ) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        // Destination MAC zero: the address of `lo`, where BPF_PROG_TEST_RUN receives, so the
        // frame is PACKET_HOST.
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        let total = (28 + payload.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        f[20] = 0x40; // DF
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&src.ip().octets());
        f[30..34].copy_from_slice(&dst.ip().octets());
        let c = !ones_sum(&f[14..34], 0);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&src.port().to_be_bytes());
        f[36..38].copy_from_slice(&dst.port().to_be_bytes());
        f[38..40].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(payload);
        if csum {
            let end = f.len();
            let c = !udp_sum(&f, end);
            let c = if c == 0 { 0xffff } else { c };
            f[40..42].copy_from_slice(&c.to_be_bytes());
        }
        f
    }

    pub(super) fn flow() -> [Rewrite; 2] {
        rewrites(
            a("10.1.0.10:40000"),
            a("10.1.0.2:53"),
            a("10.2.0.2:33000"),
            a("10.2.0.3:5353"),
            7,
            9,
        )
    }

    fn up_out() -> Key {
        tuple(&a("10.2.0.2:33000"), &a("10.2.0.3:5353"))
    }

    #[test]
    fn a_flow_is_two_mirrored_rewrites() {
        let [up, down] = flow();
        assert_eq!(up.key(), tuple(&a("10.1.0.10:40000"), &a("10.1.0.2:53")));
        assert_eq!(down.key(), tuple(&a("10.2.0.3:5353"), &a("10.2.0.2:33000")));
        // What leaves towards the server is what comes back, mirrored.
        let v = up.value();
        let k = down.key();
        assert_eq!((&v[0..4], &v[4..8]), (&k[4..8], &k[0..4]));
        assert_eq!((&v[8..10], &v[10..12]), (&k[10..12], &k[8..10]));
        assert_eq!(
            &down.value()[..12],
            &tuple(&a("10.1.0.2:53"), &a("10.1.0.10:40000"))
        );
        assert_eq!(up.value()[12..16], 9u32.to_ne_bytes());
        assert_eq!(down.value()[12..16], 7u32.to_ne_bytes());
        assert!(up.value()[16..].iter().all(|&b| b == 0));
        // Key bytes are the frame's bytes 26..38.
        let f = frame(a("10.1.0.10:40000"), a("10.1.0.2:53"), b"q", true);
        assert_eq!(frame_key(&f), Some(up.key()));
    }

    #[test]
    fn only_plain_ipv4_udp_is_looked_up() {
        let good = frame(a("10.1.0.10:40000"), a("10.1.0.2:53"), b"query", true);
        assert!(frame_key(&good).is_some());
        let mut tcp = good.clone();
        tcp[23] = 6;
        assert_eq!(frame_key(&tcp), None);
        let mut options = good.clone();
        options[14] = 0x46;
        assert_eq!(frame_key(&options), None);
        let mut mf = good.clone();
        mf[20] |= 0x20;
        assert_eq!(frame_key(&mf), None);
        let mut offset = good.clone();
        offset[21] = 1;
        assert_eq!(frame_key(&offset), None);
        let mut v6 = good.clone();
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(frame_key(&v6), None);
        for n in 0..MIN_LEN {
            assert_eq!(frame_key(&good[..n]), None);
        }
    }

    #[test]
    fn the_model_rewrites_the_tuple_and_keeps_checksums_valid() {
        let [up, down] = flow();
        for csum in [true, false] {
            let f = frame(a("10.1.0.10:40000"), a("10.1.0.2:53"), b"hello?", csum);
            let (out, oif) = model(&f, Some(&up)).unwrap();
            assert_eq!(oif, 9);
            assert_eq!(
                frame_key(&out),
                Some(tuple(&a("10.2.0.2:33000"), &a("10.2.0.3:5353")))
            );
            // What leaves towards the server is what the reverse entry expects back, mirrored.
            assert_eq!(&out[26..30], &down.key()[4..8]);
            assert_eq!(frame_key(&out), Some(up_out()));
            assert_eq!(ones_sum(&out[14..34], 0), 0xffff, "IP header checksum");
            if csum {
                assert_eq!(udp_sum(&out, out.len()), 0xffff, "UDP checksum");
            } else {
                assert_eq!(out[40..42], [0, 0], "no UDP checksum stays none");
            }
            assert_eq!(out[42..], f[42..]);
            assert_eq!(
                out[..14],
                f[..14],
                "the kernel fills in the Ethernet header"
            );
        }
        let other = frame(a("10.1.0.11:40000"), a("10.1.0.2:53"), b"x", true);
        assert_eq!(model(&other, Some(&up)), None);
        assert_eq!(model(&other, None), None);
    }

    /// Loads the program for real (root; the test fails without it, never skips).
    fn loaded() -> KernelPath {
        bpf::require_root_to_load();
        KernelPath::new().expect("the kernel accepts the UDP fast-path program")
    }

    const TCX_NEXT: u32 = u32::MAX;
    const TC_ACT_REDIRECT: u32 = 7;

    #[test]
    fn the_kernel_program_rewrites_installed_flows_as_the_model_does() {
        let mut kp = loaded();
        let rw = flow();
        let client: SocketAddr = "10.1.0.10:40000".parse().unwrap();
        let q = frame(a("10.1.0.10:40000"), a("10.1.0.2:53"), b"query", true);
        // Nothing installed: on to the stack, untouched.
        let (rc, out) = bpf::test_run(kp.prog().unwrap(), &q).unwrap();
        assert_eq!((rc, &out[..]), (TCX_NEXT, &q[..]));
        kp.put(client, &rw).unwrap();
        let answer = frame(a("10.2.0.3:5353"), a("10.2.0.2:33000"), b"answer!", true);
        for (f, r) in [(&q, &rw[0]), (&answer, &rw[1])] {
            let (rc, out) = bpf::test_run(kp.prog().unwrap(), f).unwrap();
            assert_eq!(rc, TC_ACT_REDIRECT);
            let (want, _) = model(f, Some(r)).unwrap();
            assert_eq!(out[..24], want[..24]);
            assert_eq!(out[26..40], want[26..40]);
            assert_eq!(out[42..], want[42..]);
            assert_eq!(ones_sum(&out[14..34], 0), 0xffff, "IP header checksum");
            assert_eq!(udp_sum(&out, out.len()), 0xffff, "UDP checksum");
        }
        // A zero UDP checksum stays zero.
        let plain = frame(a("10.1.0.10:40000"), a("10.1.0.2:53"), b"query", false);
        let (rc, out) = bpf::test_run(kp.prog().unwrap(), &plain).unwrap();
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_eq!(out[40..42], [0, 0]);
        assert_eq!(ones_sum(&out[14..34], 0), 0xffff);
        // Counters: 2 datagrams up (5 bytes each), 1 down (7 bytes), recent.
        let now = Duration::from_secs(1000);
        let act = kp.activity(&client, now);
        assert_eq!((act.datagrams_up, act.bytes_up), (2, 10));
        assert_eq!((act.datagrams_down, act.bytes_down), (1, 7));
        let last = act.last_seen.unwrap();
        assert!(now - last < Duration::from_secs(5), "{last:?}");
        // Read again: nothing new.
        let act = kp.activity(&client, now);
        assert_eq!((act.datagrams_up, act.datagrams_down), (0, 0));
        // Withdrawn: on to the stack again.
        kp.withdraw(&client);
        assert_eq!(bpf::test_run(kp.prog().unwrap(), &q).unwrap().0, TCX_NEXT);
        assert_eq!(kp.activity(&client, now), Activity::default());
    }

    #[test]
    fn the_kernel_program_passes_what_it_must_not_touch() {
        let mut kp = loaded();
        let rw = flow();
        kp.put("10.1.0.10:40000".parse().unwrap(), &rw).unwrap();
        let q = frame(a("10.1.0.10:40000"), a("10.1.0.2:53"), b"query", true);
        let mut cases = Vec::new();
        let mut tcp = q.clone();
        tcp[23] = 6;
        cases.push(tcp);
        let mut frag = q.clone();
        frag[20] |= 0x20;
        cases.push(frag);
        let mut options = q.clone();
        options[14] = 0x46;
        cases.push(options);
        let mut other_host = q.clone();
        other_host[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        cases.push(other_host);
        let mut other_port = q.clone();
        other_port[37] ^= 1;
        cases.push(other_port);
        // (BPF_PROG_TEST_RUN wants at least the IP header of an IPv4 frame.)
        for n in [34, 38, 41] {
            cases.push(q[..n].to_vec());
        }
        for f in &cases {
            let (rc, out) =
                bpf::test_run(kp.prog().unwrap(), f).unwrap_or_else(|e| panic!("{e}: {f:02x?}"));
            assert_eq!(rc, TCX_NEXT, "{f:02x?}");
            assert_eq!(&out, f);
        }
    }

    /// The program's cost per datagram, as the kernel times it: an installed flow's datagram
    /// (rewritten, `TC_ACT_REDIRECT`) and an unknown one (`TCX_NEXT`). The kernel reuses the
    /// frame across the runs, so the entry rewrites the tuple to itself: every run hits and
    /// does all the checksum and store work.
    #[test]
    #[ignore = "measurement, needs root; run by hand"]
    fn program_cost_per_datagram() {
        let mut kp = KernelPath::new().expect("loads");
        let (c, l) = (a("10.1.0.10:40000"), a("10.1.0.2:53"));
        let same = Rewrite {
            from: c,
            to: l,
            new_from: c,
            new_to: l,
            out: 1,
        };
        let client = SocketAddr::V4(c);
        kp.put(client, &[same, flow()[1]]).unwrap();
        let hit = frame(c, l, b"query", true);
        let miss = frame(a("10.1.0.11:40000"), l, b"query", true);
        let prog = kp.prog().unwrap();
        for (what, f, rc) in [("redirect", hit, TC_ACT_REDIRECT), ("next", miss, TCX_NEXT)] {
            assert_eq!(bpf::test_run(prog, &f).unwrap().0, rc);
            let ns = bpf::mean_run_ns(prog, &f, 1_000_000).unwrap();
            eprintln!("tc {what}: {ns} ns per datagram");
        }
        let act = kp.activity(&client, Duration::from_secs(1000));
        assert_eq!(act.datagrams_up, 1_000_001, "every run was a hit");
    }

    #[test]
    fn the_kernel_program_agrees_with_the_model_on_mutated_frames() {
        let mut kp = loaded();
        let rw = flow();
        kp.put("10.1.0.10:40000".parse().unwrap(), &rw).unwrap();
        let base = frame(
            a("10.1.0.10:40000"),
            a("10.1.0.2:53"),
            b"query-payload",
            true,
        );
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for i in 0..2000 {
            let mut f = base.clone();
            // Mutate one or two bytes of the headers (or none, every 10th frame).
            if i % 10 != 0 {
                for _ in 0..1 + (i % 2) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Ethertype, IP and UDP headers (the MACs decide PACKET_HOST).
                    let at = 12 + (seed % 30) as usize;
                    f[at] = (seed >> 32) as u8;
                }
            }
            let (rc, out) = bpf::test_run(kp.prog().unwrap(), &f).unwrap();
            match model(&f, Some(&rw[0])) {
                Some((want, _)) => {
                    assert_eq!(rc, TC_ACT_REDIRECT, "frame {i}: {f:02x?}");
                    assert_eq!(out[26..38], want[26..38], "frame {i}");
                    // Checksums move by the same amount as a full recomputation would.
                    let same = |x: u16, y: u16| x % 0xffff == y % 0xffff;
                    let ip = (ones_sum(&f[14..34], 0), ones_sum(&out[14..34], 0));
                    assert!(same(ip.0, ip.1), "frame {i}: IP sum {ip:x?}");
                    if f[40..42] != [0, 0] {
                        let udp = (udp_sum(&f, f.len()), udp_sum(&out, out.len()));
                        assert!(same(udp.0, udp.1), "frame {i}: UDP sum {udp:x?}");
                    } else {
                        assert_eq!(out[40..42], [0, 0], "frame {i}");
                    }
                }
                None => {
                    assert_eq!(rc, TCX_NEXT, "frame {i}: {f:02x?}");
                    assert_eq!(out, f, "frame {i}: passed frames are untouched");
                }
            }
        }
    }
}
