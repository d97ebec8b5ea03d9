//! A weighted Maglev-style lookup table (Eisenbud et al., NSDI 2016). Pure and deterministic.
//!
//! Every available backend gets a permutation of the [`TABLE_SIZE`] slots derived from its IPv4
//! address only (not from its slot number or from anything random), and backends take turns
//! claiming their next free preferred slot until the table is full. A backend of weight `w`
//! claims `w / w_max` slots per turn on average (credit scheme), so its share of the table is
//! proportional to its weight; weight 0 counts as 1, as in C Pen's DSR table.
//!
//! Consequences the tests check:
//! - the table depends only on the set of (address, weight) pairs and their order of slot
//!   numbers, so several pens with the same configuration pick the same backend for a client;
//! - removing (or blacklisting) one of `n` backends moves only the clients that were on it plus
//!   a small fraction of the others (Maglev's bound; measured well under 1/n here);
//! - a flow's slot is `hash % TABLE_SIZE`, one memory read per decision.
//!
//! Deliberate difference from C Pen: C Pen's 256-slot XOR-of-octets table is built on the first
//! frame and never rebuilt; this one is rebuilt on every change of the backend set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Number of slots: a prime well above 100 × the number of backends anyone runs in DSR.
pub const TABLE_SIZE: usize = 65_537;

/// Most backends a table can hold (slot values are `u16` positions).
pub const MAX_MEMBERS: usize = 65_535;

/// One member of the table: the engine's backend index, its address and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub backend: usize,
    /// The backend's address (IPv4 or IPv6; only its value matters here).
    pub ip: IpAddr,
    pub weight: u32,
}

/// The lookup table.
#[derive(Clone, PartialEq, Eq)]
pub struct Maglev {
    /// Position in `members` for each slot.
    slots: Box<[u16]>,
    /// Backend index of each position.
    members: Vec<usize>,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev")
            .field("members", &self.members)
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// 64-bit finaliser of MurmurHash3: a fast, well-mixing bijection.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The flow hash of a client: its IPv4 address, and its source port with `-r`. A fixed
/// function (no per-process seed), so every pen agrees.
#[inline]
pub fn flow_hash(src: Ipv4Addr, port: u16) -> u64 {
    mix64((u64::from(u32::from(src)) << 16 | u64::from(port)) ^ 0x9e37_79b9_7f4a_7c15)
}

/// The flow hash of an IPv6 client (and port with `-r`).
#[inline]
pub fn flow_hash_v6(src: Ipv6Addr, port: u16) -> u64 {
    let a = u128::from(src);
    mix64((a >> 64) as u64 ^ mix64(a as u64 ^ u64::from(port)) ^ 0x2545_f491_4f6c_dd1d)
}

/// [`flow_hash`] or [`flow_hash_v6`] by address family.
#[inline]
pub fn flow_hash_ip(src: IpAddr, port: u16) -> u64 {
    match src {
        IpAddr::V4(a) => flow_hash(a, port),
        IpAddr::V6(a) => flow_hash_v6(a, port),
    }
}

/// The 64-bit value a backend's permutation is derived from: the IPv4 address as is (so
/// IPv4 tables are what they always were), an IPv6 address folded.
fn member_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            mix64((v >> 64) as u64) ^ v as u64 ^ (1 << 63)
        }
    }
}

/// FNV-1a, 64 bits: a small fixed hash for digests compared across processes and hosts
/// (unlike `std`'s `DefaultHasher`, whose algorithm may change between Rust releases).
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64::new()
    }
}

impl Fnv64 {
    pub const fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Maglev {
    /// Builds the table; `None` when `members` is empty. At most [`MAX_MEMBERS`] are used
    /// (the rest are ignored; the engine's configuration check refuses more).
    pub fn build(members: &[Member]) -> Option<Maglev> {
        let members = members.get(..members.len().min(MAX_MEMBERS))?;
        if members.is_empty() {
            return None;
        }
        let m = TABLE_SIZE as u64;
        let perms: Vec<(u64, u64)> = members
            .iter()
            .map(|b| {
                let ip = member_key(b.ip);
                let offset = mix64(ip ^ 0x5851_f42d_4c95_7f2d) % m;
                let skip = mix64(ip ^ 0x1405_7b7e_f767_814f) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let weights: Vec<u64> = members.iter().map(|b| u64::from(b.weight.max(1))).collect();
        let wmax = weights.iter().copied().max().unwrap_or(1);
        let mut next = vec![0u64; members.len()];
        let mut credit = vec![0u64; members.len()];
        const EMPTY: u16 = u16::MAX;
        let mut slots = vec![EMPTY; TABLE_SIZE];
        let mut filled = 0usize;
        'fill: loop {
            for (i, ((&(offset, skip), &w), (n, c))) in perms
                .iter()
                .zip(&weights)
                .zip(next.iter_mut().zip(credit.iter_mut()))
                .enumerate()
            {
                *c += w;
                while *c >= wmax {
                    *c -= wmax;
                    // The permutation visits every slot once in TABLE_SIZE steps (skip and the
                    // prime size are coprime), so a free slot is always found while filled < M.
                    loop {
                        let slot = ((offset + *n * skip) % m) as usize;
                        *n += 1;
                        if let Some(s) = slots.get_mut(slot)
                            && *s == EMPTY
                        {
                            *s = i as u16;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == TABLE_SIZE {
                        break 'fill;
                    }
                }
            }
        }
        Some(Maglev {
            slots: slots.into_boxed_slice(),
            members: members.iter().map(|b| b.backend).collect(),
        })
    }

    /// The backend index for a flow hash.
    #[inline]
    pub fn lookup(&self, hash: u64) -> usize {
        let slot = (hash % TABLE_SIZE as u64) as usize;
        let pos = self.slots.get(slot).copied().unwrap_or(0);
        self.members
            .get(usize::from(pos))
            .or(self.members.first())
            .copied()
            .unwrap_or(0)
    }

    /// The backend indices in the table, in build order.
    pub fn members(&self) -> &[usize] {
        &self.members
    }

    /// A digest of the whole table: FNV-1a (64 bits) over the member list and, slot by slot,
    /// the backend index each slot leads to. Two pens whose digests are equal send every flow
    /// hash to the same backend index; a fixed function, so it can be compared across hosts.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv64::new();
        h.write_u64(self.members.len() as u64);
        for &m in &self.members {
            h.write_u64(m as u64);
        }
        for &s in self.slots.iter() {
            let b = self
                .members
                .get(usize::from(s))
                .copied()
                .unwrap_or(usize::MAX);
            h.write_u64(b as u64);
        }
        h.finish()
    }

    /// How many slots each member owns (same order as [`Maglev::members`]).
    pub fn shares(&self) -> Vec<usize> {
        let mut v = vec![0usize; self.members.len()];
        for &s in self.slots.iter() {
            if let Some(c) = v.get_mut(usize::from(s)) {
                *c += 1;
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: usize, w: u32) -> Member {
        Member {
            backend: i,
            ip: Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8).into(),
            weight: w,
        }
    }

    #[test]
    fn fnv64_matches_the_published_test_vectors() {
        let h = |s: &str| {
            let mut f = Fnv64::new();
            f.write(s.as_bytes());
            f.finish()
        };
        assert_eq!(h(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(h("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(h("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn digest_is_equal_for_equal_tables_and_moves_with_any_change() {
        let ms: Vec<Member> = (0..3).map(|i| member(i, 1)).collect();
        let a = Maglev::build(&ms).unwrap();
        let b = Maglev::build(&ms).unwrap();
        assert_eq!(a.digest(), b.digest());
        let mut heavier = ms.clone();
        heavier[1].weight = 2;
        assert_ne!(a.digest(), Maglev::build(&heavier).unwrap().digest());
        let fewer = Maglev::build(&ms[..2]).unwrap();
        assert_ne!(a.digest(), fewer.digest());
        // Same addresses, other backend indices: other answers, other digest.
        let mut renumbered = ms.clone();
        renumbered[0].backend = 7;
        assert_ne!(a.digest(), Maglev::build(&renumbered).unwrap().digest());
    }

    #[test]
    fn empty_member_list_has_no_table() {
        assert!(Maglev::build(&[]).is_none());
    }

    #[test]
    fn equal_weights_get_near_equal_shares() {
        let ms: Vec<Member> = (0..5).map(|i| member(i, 1)).collect();
        let t = Maglev::build(&ms).unwrap();
        for s in t.shares() {
            let ideal = TABLE_SIZE / 5;
            assert!(s.abs_diff(ideal) <= 1, "share {s} vs {ideal}");
        }
    }

    #[test]
    fn shares_follow_weights() {
        let ms = [member(0, 1), member(1, 3)];
        let t = Maglev::build(&ms).unwrap();
        let sh = t.shares();
        let ratio = sh[1] as f64 / sh[0] as f64;
        assert!((ratio - 3.0).abs() < 0.01, "{sh:?}");
    }

    #[test]
    fn weight_zero_counts_as_one() {
        let t = Maglev::build(&[member(0, 0), member(1, 1)]).unwrap();
        let sh = t.shares();
        assert!(sh[0].abs_diff(sh[1]) <= 1, "{sh:?}");
    }

    #[test]
    fn removing_a_backend_moves_few_other_clients() {
        let ms: Vec<Member> = (0..10).map(|i| member(i, 1)).collect();
        let before = Maglev::build(&ms).unwrap();
        let without: Vec<Member> = ms.iter().copied().filter(|m| m.backend != 3).collect();
        let after = Maglev::build(&without).unwrap();
        let mut moved_others = 0;
        let n = 100_000u32;
        for c in 0..n {
            let h = flow_hash(Ipv4Addr::from(0x0a10_0000 + c), 0);
            let (a, b) = (before.lookup(h), after.lookup(h));
            assert_ne!(b, 3);
            if a != 3 && a != b {
                moved_others += 1;
            }
        }
        assert!(
            f64::from(moved_others) / f64::from(n) < 0.02,
            "{moved_others} of {n} clients not on the removed backend moved"
        );
    }

    #[test]
    fn same_members_build_the_same_table_whatever_else() {
        let ms: Vec<Member> = (0..4).map(|i| member(i, i as u32)).collect();
        assert_eq!(Maglev::build(&ms), Maglev::build(&ms.clone()));
    }
}
