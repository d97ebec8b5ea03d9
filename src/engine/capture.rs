//! LaBrea-style address capture for the tarpit (`tarpit_capture SUBNET [wait S] [max N]`). Pure:
//! the table is fixed-size, takes `now` as input, and does no IO.
//!
//! An address of the subnet is *captured* (the tarpit answers ARP/NDP and SYNs for it) once one
//! host has asked for it, with ARP requests or neighbor solicitations, for at least `wait`
//! without an answer: the request that comes `wait` or more after the first one of an unbroken
//! streak (consecutive requests from the same requester less than [`STREAK_GAP`] apart) is the
//! one the tarpit answers. A real host on the address never lets a streak grow: its answer
//! stops the requester from asking again.
//!
//! An address is *alive* (never captured while its entry lives, and released at once when it
//! was captured) as soon as the engine sees it speak: any ARP packet with it as sender (reply,
//! gratuitous ARP, request), an RFC 5227 ARP probe or an IPv6 duplicate-address-detection
//! solicitation for it (a host about to take it), a neighbor advertisement for it or any IP
//! frame from it.
//!
//! The table holds at most `max` entries. A new entry, when the table is full, evicts the least
//! recently touched pending entry; failing that the least recently touched captured one;
//! failing that the least recently touched alive one (a live host is forgotten last, and even
//! then it would need a new unanswered streak to be captured).
//!
//! Never captured: the subnet's network and (IPv4) broadcast addresses and every address given
//! in `excluded` (the engine passes the VIP, the backends, its link-local address and the DSR
//! interface's own addresses).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Consecutive requests further apart than this start a new streak (the earlier request was
/// probably answered by a host the engine does not hear).
pub const STREAK_GAP: Duration = Duration::from_secs(10);
/// Default `wait` (LaBrea's default too).
pub const DEFAULT_WAIT_SECS: u64 = 3;
/// Default table size.
pub const DEFAULT_MAX: usize = 4096;
/// Largest table size accepted.
pub const MAX_MAX: usize = 1 << 20;

/// The `tarpit_capture` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaptureConfig {
    /// The subnet's address (host bits zero) and prefix length.
    pub net: IpAddr,
    pub prefix: u8,
    /// How long requests for an address must go unanswered, in seconds (at least 1).
    pub wait_secs: u64,
    /// Table size.
    pub max: usize,
}

impl CaptureConfig {
    /// Parses `ADDR/LEN` (host bits are cleared) with the given wait and size; errors name the
    /// input and say what is accepted.
    pub fn parse_subnet(s: &str) -> Result<(IpAddr, u8), String> {
        let bad =
            || format!("bad subnet {s:?}; expected ADDR/LEN such as 10.0.0.0/24 or fd00::/64");
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = crate::ctl::command::parse_num(l, 0u8, max).ok_or_else(bad)?;
        Ok((mask(ip, len), len))
    }

    /// Does the subnet contain `ip`?
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }

    fn wait(&self) -> Duration {
        Duration::from_secs(self.wait_secs.max(1))
    }
}

impl fmt::Display for CaptureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} wait {} max {}",
            self.net, self.prefix, self.wait_secs, self.max
        )
    }
}

/// `ip` with every bit past `len` cleared.
pub fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// What the table knows about one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Asked for by `requester` since `first`, last at `last`, no answer seen.
    Pending {
        requester: IpAddr,
        first: Duration,
        last: Duration,
    },
    /// Answered by the tarpit since `since`.
    Captured { since: Duration },
    /// A real host: never captured while this entry lives.
    Alive,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    touched: Duration,
}

/// Counters of the capture table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureCounters {
    /// Addresses captured (transitions, not the current number).
    pub captures: u64,
    /// Captured addresses released because a host showed up.
    pub releases: u64,
    /// Entries evicted because the table was full.
    pub evictions: u64,
}

/// The capture table. See the module documentation.
#[derive(Debug, Clone)]
pub struct CaptureTable {
    cfg: CaptureConfig,
    excluded: Vec<IpAddr>,
    entries: HashMap<IpAddr, Entry>,
    counters: CaptureCounters,
}

impl CaptureTable {
    /// An empty table for `cfg`; addresses in `excluded` are never captured.
    pub fn new(cfg: CaptureConfig, excluded: Vec<IpAddr>) -> CaptureTable {
        let max = cfg.max.clamp(1, MAX_MAX);
        CaptureTable {
            cfg: CaptureConfig { max, ..cfg },
            excluded,
            entries: HashMap::with_capacity(max),
            counters: CaptureCounters::default(),
        }
    }

    pub fn config(&self) -> &CaptureConfig {
        &self.cfg
    }

    pub fn counters(&self) -> CaptureCounters {
        self.counters
    }

    /// Replaces the never-captured addresses (an entry for one of them is dropped).
    pub fn set_excluded(&mut self, excluded: Vec<IpAddr>) {
        if excluded != self.excluded {
            self.entries.retain(|ip, _| !excluded.contains(ip));
            self.excluded = excluded;
        }
    }

    /// Is `ip` one the table may track (in the subnet, not excluded, not the network or
    /// broadcast address)?
    pub fn eligible(&self, ip: IpAddr) -> bool {
        if !self.cfg.contains(ip) || ip == self.cfg.net || self.excluded.contains(&ip) {
            return false;
        }
        match ip {
            IpAddr::V4(a) => {
                let host_bits = 32 - u32::from(self.cfg.prefix.min(32));
                let ones = if host_bits == 0 {
                    0
                } else {
                    u32::MAX >> (32 - host_bits)
                };
                host_bits < 2 || u32::from(a) & ones != ones
            }
            IpAddr::V6(_) => true,
        }
    }

    /// Is `ip` captured now?
    pub fn is_captured(&self, ip: IpAddr) -> bool {
        matches!(
            self.entries.get(&ip).map(|e| e.state),
            Some(State::Captured { .. })
        )
    }

    /// The state of `ip`, if the table has an entry for it.
    pub fn state(&self, ip: IpAddr) -> Option<State> {
        self.entries.get(&ip).map(|e| e.state)
    }

    /// Number of entries in each state: (pending, captured, alive).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let mut n = (0, 0, 0);
        for e in self.entries.values() {
            match e.state {
                State::Pending { .. } => n.0 += 1,
                State::Captured { .. } => n.1 += 1,
                State::Alive => n.2 += 1,
            }
        }
        n
    }

    /// Captured addresses, in address order, at most `limit`.
    pub fn captured(&self, limit: usize) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Captured { .. }))
            .map(|(ip, _)| *ip)
            .collect();
        v.sort();
        v.truncate(limit);
        v
    }

    /// A request (ARP who-has / neighbor solicitation) from `requester` for `target` at
    /// `now`. Returns whether `target` is captured after it.
    pub fn request(&mut self, target: IpAddr, requester: IpAddr, now: Duration) -> bool {
        if !self.eligible(target) || requester == target {
            return false;
        }
        let wait = self.cfg.wait();
        if let Some(e) = self.entries.get_mut(&target) {
            e.touched = now;
            match e.state {
                State::Captured { .. } => return true,
                State::Alive => return false,
                State::Pending {
                    requester: r,
                    first,
                    last,
                } => {
                    if r == requester && now.saturating_sub(last) < STREAK_GAP {
                        if now.saturating_sub(first) >= wait {
                            e.state = State::Captured { since: now };
                            self.counters.captures += 1;
                            return true;
                        }
                        e.state = State::Pending {
                            requester: r,
                            first,
                            last: now,
                        };
                    } else if r != requester && now.saturating_sub(last) < STREAK_GAP {
                        // another host's streak is running: leave it
                    } else {
                        e.state = State::Pending {
                            requester,
                            first: now,
                            last: now,
                        };
                    }
                    return false;
                }
            }
        }
        self.insert(
            target,
            State::Pending {
                requester,
                first: now,
                last: now,
            },
            now,
        );
        false
    }

    /// `ip` showed itself (see the module documentation): it is alive from now on, and
    /// released at once when it was captured. Returns whether it was captured.
    pub fn alive(&mut self, ip: IpAddr, now: Duration) -> bool {
        if !self.eligible(ip) {
            return false;
        }
        if let Some(e) = self.entries.get_mut(&ip) {
            let was = matches!(e.state, State::Captured { .. });
            e.state = State::Alive;
            e.touched = now;
            if was {
                self.counters.releases += 1;
            }
            return was;
        }
        self.insert(ip, State::Alive, now);
        false
    }

    fn insert(&mut self, ip: IpAddr, state: State, now: Duration) {
        if self.entries.len() >= self.cfg.max {
            let rank = |s: &State| match s {
                State::Pending { .. } => 0u8,
                State::Captured { .. } => 1,
                State::Alive => 2,
            };
            let victim = self
                .entries
                .iter()
                .min_by_key(|(a, e)| (rank(&e.state), e.touched, **a))
                .map(|(a, _)| *a);
            if let Some(v) = victim {
                self.entries.remove(&v);
                self.counters.evictions += 1;
            }
        }
        self.entries.insert(
            ip,
            Entry {
                state,
                touched: now,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table(max: usize) -> CaptureTable {
        let (net, prefix) = CaptureConfig::parse_subnet("10.0.0.0/24").unwrap();
        CaptureTable::new(
            CaptureConfig {
                net,
                prefix,
                wait_secs: 2,
                max,
            },
            vec![ip("10.0.0.100")],
        )
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn an_address_is_captured_after_the_wait_of_unanswered_requests() {
        let mut t = table(16);
        let c = ip("10.0.0.2");
        assert!(!t.request(ip("10.0.0.50"), c, s(10)));
        assert!(!t.request(ip("10.0.0.50"), c, s(11)));
        assert!(t.request(ip("10.0.0.50"), c, s(12)), "2 s after the first");
        assert!(t.is_captured(ip("10.0.0.50")));
        assert_eq!(t.counters().captures, 1);
        assert_eq!(t.captured(10), vec![ip("10.0.0.50")]);
    }

    #[test]
    fn a_broken_streak_or_another_requester_does_not_capture() {
        let mut t = table(16);
        let (a, b) = (ip("10.0.0.2"), ip("10.0.0.3"));
        let x = ip("10.0.0.60");
        assert!(!t.request(x, a, s(0)));
        // another requester inside a's streak neither captures nor restarts it
        assert!(!t.request(x, b, s(5)));
        // a live host's address asked again long after: a new streak
        assert!(!t.request(x, a, s(30)));
        assert!(!t.request(x, a, s(31)));
        assert!(t.request(x, a, s(32)));
    }

    #[test]
    fn a_host_that_speaks_is_released_at_once_and_never_captured_again() {
        let mut t = table(16);
        let c = ip("10.0.0.2");
        let x = ip("10.0.0.70");
        t.request(x, c, s(0));
        assert!(t.request(x, c, s(3)));
        assert!(t.alive(x, s(4)), "it was captured");
        assert!(!t.is_captured(x));
        assert_eq!(t.counters().releases, 1);
        for k in 5..40 {
            assert!(!t.request(x, c, s(k)));
        }
        // the requester itself is eligible and is alive once it speaks
        assert!(!t.alive(c, s(41)));
        assert_eq!(t.state(c), Some(State::Alive));
    }

    #[test]
    fn excluded_network_and_broadcast_addresses_are_never_captured() {
        let mut t = table(16);
        let c = ip("10.0.0.2");
        for x in [
            "10.0.0.100",
            "10.0.0.0",
            "10.0.0.255",
            "10.0.1.5",
            "fd00::5",
        ] {
            for k in 0..5 {
                assert!(!t.request(ip(x), c, s(k)), "{x}");
            }
        }
        assert_eq!(t.sizes(), (0, 0, 0));
    }

    #[test]
    fn a_full_table_evicts_pending_before_captured_before_alive() {
        let mut t = table(3);
        let c = ip("10.0.0.2");
        t.alive(ip("10.0.0.9"), s(0));
        t.request(ip("10.0.0.10"), c, s(0));
        assert!(t.request(ip("10.0.0.10"), c, s(2)));
        t.request(ip("10.0.0.11"), c, s(3));
        assert_eq!(t.sizes(), (1, 1, 1));
        // a fourth address evicts the pending one
        t.request(ip("10.0.0.12"), c, s(4));
        assert_eq!(t.state(ip("10.0.0.11")), None);
        assert_eq!(t.sizes(), (1, 1, 1));
        // then (only pending ones go first) the newest pending is evicted again, never
        // the live host
        for k in 13..200u32 {
            t.request(
                IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, k as u8)),
                c,
                s(5),
            );
        }
        assert_eq!(t.state(ip("10.0.0.9")), Some(State::Alive));
        assert!(t.is_captured(ip("10.0.0.10")));
        assert!(t.counters().evictions > 100);
        assert!(t.entries.len() <= 3);
    }

    #[test]
    fn subnets_parse_and_name_bad_input() {
        assert_eq!(
            CaptureConfig::parse_subnet("10.1.2.3/16").unwrap(),
            (ip("10.1.0.0"), 16)
        );
        assert_eq!(
            CaptureConfig::parse_subnet("fd00::7/64").unwrap(),
            (ip("fd00::"), 64)
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "x/24",
            "fd00::/129",
            "10.0.0.0/-1",
        ] {
            let e = CaptureConfig::parse_subnet(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("ADDR/LEN"), "{e}");
        }
    }

    #[test]
    fn ipv6_addresses_are_captured_too() {
        let (net, prefix) = CaptureConfig::parse_subnet("fd00::/64").unwrap();
        let mut t = CaptureTable::new(
            CaptureConfig {
                net,
                prefix,
                wait_secs: 1,
                max: 8,
            },
            vec![],
        );
        let c = ip("fd00::2");
        assert!(!t.request(ip("fd00::50"), c, s(0)));
        assert!(t.request(ip("fd00::50"), c, s(1)));
        assert!(!t.request(ip("fd00::"), c, s(1)));
    }
}
