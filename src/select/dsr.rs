//! The DSR backend table (reference §10, C Pen's `rebuild_hash_index` / `select_server` in
//! dsr.c). Pure and stateless per frame: the same configuration picks the same backend on
//! every pen, so several balancers can share one VIP.
//!
//! - Hash: `o1 ^ o2 ^ o3 ^ o4` of the client's IPv4 address (0-255); with `-r` also XOR both
//!   bytes of the source port (per flow instead of per client).
//! - Table: 256 slots. Available servers (IPv4 address, not blacklisted; the port does not
//!   matter: DSR backends are often `host` with listen port 0) get slots in proportion to their
//!   weight (weight 0 counts as 1), `w = t * s / tw` in index order so the total is exactly 256;
//!   slots are filled walking the table with stride 3.
//!
//! Deliberate difference: C Pen builds the table on the first forwarded frame and never again,
//! so later blacklists, weight changes and new servers are ignored until restart. Here
//! [`DsrTable::build`] is cheap (256 slots) and the engine rebuilds it whenever it likes
//! (e.g. once per second and after every control command); [`Balancer::dsr_table`] is the
//! convenient entry point.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::{Balancer, ServerState};
use crate::config::BackendAddr;

/// Number of hash slots.
pub const DSR_SLOTS: usize = 256;

/// Which server each hash value goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsrTable {
    slots: [usize; DSR_SLOTS],
}

/// C Pen's DSR hash of a client: XOR of the address octets, with `-r` also of the port bytes.
pub fn dsr_hash(src: Ipv4Addr, src_port: u16, roundrobin: bool) -> u8 {
    let [a, b, c, d] = src.octets();
    let mut h = a ^ b ^ c ^ d;
    if roundrobin {
        let [p, q] = src_port.to_be_bytes();
        h ^= p ^ q;
    }
    h
}

/// The IPv4 address of a server usable in DSR (port ignored).
pub fn dsr_addr(s: &ServerState) -> Option<Ipv4Addr> {
    match &s.addr {
        Some(BackendAddr::Inet(sa)) => match sa.ip() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        },
        _ => None,
    }
}

impl DsrTable {
    /// Build the table from the servers available at `now`; `None` when none is (C Pen then
    /// drops the frame: "nowhere to put it").
    pub fn build(servers: &[ServerState], now: Duration, blacklist_secs: u64) -> Option<DsrTable> {
        let mut share: Vec<u64> = servers
            .iter()
            .map(|s| {
                let available = dsr_addr(s).is_some() && !s.is_blacklisted(now, blacklist_secs);
                if available {
                    u64::from(s.config.weight.max(1))
                } else {
                    0
                }
            })
            .collect();
        let mut tw: u64 = share.iter().sum();
        if tw == 0 {
            return None;
        }
        let mut t = DSR_SLOTS as u64;
        for s in share.iter_mut().filter(|s| **s > 0) {
            let w = t * *s / tw;
            t -= w;
            tw -= *s;
            *s = w;
        }
        // The last available server takes what is left, so the shares sum to 256.
        let mut slots = [0usize; DSR_SLOTS];
        let mut j = 0;
        let mut i = 0;
        for _ in 0..DSR_SLOTS {
            while share.get(j).is_some_and(|&s| s == 0) {
                j += 1;
            }
            let s = share.get_mut(j)?;
            *s -= 1;
            if let Some(slot) = slots.get_mut(i) {
                *slot = j;
            }
            i = (i + 3) % DSR_SLOTS;
        }
        Some(DsrTable { slots })
    }

    /// The server for a frame from `src:src_port`.
    pub fn pick(&self, src: Ipv4Addr, src_port: u16, roundrobin: bool) -> usize {
        let h = dsr_hash(src, src_port, roundrobin);
        self.slots[usize::from(h)]
    }

    /// Slot → server index.
    pub fn slots(&self) -> &[usize; DSR_SLOTS] {
        &self.slots
    }
}

/// What the `table_hash` control command replies (pen-rs addition): digests that N pens of
/// one cluster (ECMP or a VRRP pair) can be compared by. Pure.
///
/// - `servers_hash`: FNV-1a over the selection mode (`hash`, `roundrobin`, `stubborn`,
///   `weight`, `prio`) and every server slot (address, port, weight, prio, max, hard, acl),
///   configuration only, so it does not move with traffic;
/// - `maglev_hash`: [`crate::engine::maglev::Maglev::digest`] of the table a DSR engine
///   builds from these servers now (blacklisted servers are left out, as the engine does),
///   `none` when no server is available. Equal on two pens = every flow hash goes to the
///   same backend on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDigest {
    pub servers: usize,
    /// Servers with an address that are not blacklisted now.
    pub available: usize,
    pub servers_hash: u64,
    pub maglev_hash: Option<u64>,
}

impl TableDigest {
    pub fn of(balancer: &Balancer, mode: crate::config::Mode, now: Duration) -> TableDigest {
        use crate::engine::maglev::Fnv64;
        let mut h = Fnv64::new();
        for on in [
            mode.hash,
            mode.roundrobin,
            mode.stubborn,
            mode.weight,
            mode.prio,
        ] {
            h.write(&[u8::from(on)]);
        }
        let servers = balancer.servers();
        h.write_u64(servers.len() as u64);
        for s in servers {
            let (addr, port) = crate::stats::server_address(s);
            let c = &s.config;
            let acl = c.acl.map_or(-1, i32::from);
            let line = format!(
                "{addr} {port} {} {} {} {} {acl}\n",
                c.weight, c.prio, c.maxc, c.hard
            );
            h.write(line.as_bytes());
        }
        let backends = crate::link::dsr::backends_from(balancer, now);
        let available = backends
            .iter()
            .filter(|b| b.available && b.ip.is_some())
            .count();
        TableDigest {
            servers: servers.len(),
            available,
            servers_hash: h.finish(),
            maglev_hash: crate::engine::table_for(&backends).map(|t| t.digest()),
        }
    }
}

impl std::fmt::Display for TableDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "servers {} available {} servers_hash {:016x} maglev_hash ",
            self.servers, self.available, self.servers_hash
        )?;
        match self.maglev_hash {
            Some(m) => write!(f, "{m:016x}"),
            None => write!(f, "none"),
        }
    }
}

impl Balancer {
    /// The DSR table for the current servers, weights and blacklists at `now`.
    pub fn dsr_table(&self, now: Duration) -> Option<DsrTable> {
        DsrTable::build(self.servers(), now, self.blacklist_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HostSpec, ServerConfig};

    fn balancer(weights: &[u32]) -> Balancer {
        let cfg = Config {
            servers: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| ServerConfig {
                    host: Some(HostSpec::Ip(IpAddr::V4(Ipv4Addr::new(
                        192,
                        168,
                        100,
                        3 + i as u8,
                    )))),
                    port: 0,
                    weight: w,
                    ..ServerConfig::default()
                })
                .collect(),
            ..Config::default()
        };
        Balancer::new(&cfg)
    }

    fn counts(t: &DsrTable, n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| t.slots().iter().filter(|&&s| s == i).count())
            .collect()
    }

    #[test]
    fn dsr_slots_follow_weights_and_weight_zero_counts_as_one() {
        let t = balancer(&[0, 0]).dsr_table(Duration::ZERO).unwrap();
        assert_eq!(counts(&t, 2), vec![128, 128]);
        let t = balancer(&[1, 3]).dsr_table(Duration::ZERO).unwrap();
        assert_eq!(counts(&t, 2), vec![64, 192]);
        let t = balancer(&[1, 1, 1]).dsr_table(Duration::ZERO).unwrap();
        assert_eq!(counts(&t, 3), vec![85, 85, 86]);
    }

    #[test]
    fn dsr_table_is_filled_with_stride_three() {
        let t = balancer(&[1, 1]).dsr_table(Duration::ZERO).unwrap();
        // 10.0.0.1 hashes to 11 = slot 3*89 mod 256: server 0 fills the first 128 steps.
        assert_eq!(dsr_hash(Ipv4Addr::new(10, 0, 0, 1), 0, false), 11);
        assert_eq!(t.pick(Ipv4Addr::new(10, 0, 0, 1), 0, false), 0);
        // 10.0.0.11 hashes to 1 = slot 3*171 mod 256: server 1.
        assert_eq!(t.pick(Ipv4Addr::new(10, 0, 0, 11), 0, false), 1);
    }

    #[test]
    fn dsr_hash_uses_port_with_roundrobin() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(dsr_hash(a, 0x0102, false), 11);
        assert_eq!(dsr_hash(a, 0x0102, true), 11 ^ 1 ^ 2);
    }

    fn digest(b: &Balancer, now: u64) -> TableDigest {
        TableDigest::of(b, crate::config::Mode::default(), Duration::from_secs(now))
    }

    #[test]
    fn table_digest_agrees_between_pens_of_one_config_and_with_the_engine() {
        let (a, b) = (balancer(&[1, 2, 1]), balancer(&[1, 2, 1]));
        let d = digest(&a, 0);
        assert_eq!(d, digest(&b, 0));
        assert_eq!((d.servers, d.available), (3, 3));
        // The engine's own table for these servers has the same digest.
        let engine =
            crate::engine::table_for(&crate::link::dsr::backends_from(&a, Duration::ZERO)).unwrap();
        assert_eq!(d.maglev_hash, Some(engine.digest()));
        let shown = d.to_string();
        assert!(
            shown.starts_with("servers 3 available 3 servers_hash "),
            "{shown}"
        );
        assert_eq!(shown.split(' ').count(), 8, "{shown}");
    }

    #[test]
    fn table_digest_moves_with_weights_servers_mode_and_blacklists() {
        let d = digest(&balancer(&[1, 1]), 0);
        let w = digest(&balancer(&[1, 3]), 0);
        assert_ne!(d.servers_hash, w.servers_hash);
        assert_ne!(d.maglev_hash, w.maglev_hash);
        let more = digest(&balancer(&[1, 1, 1]), 0);
        assert_ne!(d.servers_hash, more.servers_hash);
        let hashed = TableDigest::of(
            &balancer(&[1, 1]),
            crate::config::Mode {
                hash: true,
                ..Default::default()
            },
            Duration::ZERO,
        );
        assert_ne!(d.servers_hash, hashed.servers_hash);
        assert_eq!(d.maglev_hash, hashed.maglev_hash);
        // A blacklist changes the table (not the configuration) until it expires.
        let mut b = balancer(&[1, 1]);
        b.blacklist(0, 10, Duration::ZERO).unwrap();
        let bl = digest(&b, 1);
        assert_eq!(bl.servers_hash, d.servers_hash);
        assert_eq!(bl.available, 1);
        assert_ne!(bl.maglev_hash, d.maglev_hash);
        assert_eq!(digest(&b, 10), d);
        b.blacklist(1, 10, Duration::from_secs(10)).unwrap();
        b.blacklist(0, 10, Duration::from_secs(10)).unwrap();
        let none = digest(&b, 11);
        assert_eq!(none.maglev_hash, None);
        assert!(none.to_string().ends_with("maglev_hash none"), "{none}");
    }

    #[test]
    fn dsr_table_skips_blacklisted_servers_and_is_rebuilt() {
        let mut b = balancer(&[1, 1]);
        b.blacklist(0, 10, Duration::ZERO).unwrap();
        let t = b.dsr_table(Duration::from_secs(1)).unwrap();
        assert_eq!(counts(&t, 2), vec![0, 256]);
        let t = b.dsr_table(Duration::from_secs(10)).unwrap();
        assert_eq!(counts(&t, 2), vec![128, 128]);
        b.blacklist(1, 10, Duration::from_secs(10)).unwrap();
        b.blacklist(0, 10, Duration::from_secs(10)).unwrap();
        assert!(b.dsr_table(Duration::from_secs(11)).is_none());
        assert!(balancer(&[]).dsr_table(Duration::ZERO).is_none());
    }
}
