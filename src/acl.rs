//! Access lists, as C Pen's acl.c defines them (reference §6). Pure.
//!
//! Ten lists (0-9). Entries are IPv4 address/mask, IPv6 prefix, or a GeoIP country code.
//! Evaluation: the first matching entry decides; when none matches, the result is the opposite
//! of the last entry's action; an empty list permits everything. Unix-socket clients (no IP
//! address) always pass.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Number of access lists (0..=9).
pub const ACLS_MAX: usize = 10;

/// What one entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclMatch {
    /// `A.B.C.D [mask]`, mask defaults to 255.255.255.255.
    V4 { addr: Ipv4Addr, mask: Ipv4Addr },
    /// `v6addr[/len]`, len defaults to 128.
    V6 { addr: Ipv6Addr, prefix: u8 },
    /// `country CC`: accepted and stored; never matches (no GeoIP database in pen-rs).
    Country(String),
}

/// One entry: permit or deny, and what it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    pub permit: bool,
    pub matcher: AclMatch,
}

/// One access list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub entries: Vec<AclEntry>,
}

/// The ten access lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acls {
    pub lists: [Acl; ACLS_MAX],
}

impl AclMatch {
    /// Does this entry match `addr`? IPv4-mapped IPv6 addresses are matched as IPv4.
    pub fn matches(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        match (self, addr) {
            (AclMatch::V4 { addr: a, mask }, IpAddr::V4(x)) => {
                let m = u32::from(*mask);
                u32::from(*a) & m == u32::from(x) & m
            }
            (AclMatch::V6 { addr: a, prefix }, IpAddr::V6(x)) => {
                let p = u32::from((*prefix).min(128));
                let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                u128::from(*a) & m == u128::from(x) & m
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4; everything else is unchanged.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

impl Acl {
    /// C Pen's rule: first match decides; no match → opposite of the last entry; empty → permit.
    /// `None` stands for a client without an IP address (Unix socket): always permitted.
    pub fn permits(&self, addr: Option<IpAddr>) -> bool {
        let Some(addr) = addr else { return true };
        for e in &self.entries {
            if e.matcher.matches(addr) {
                return e.permit;
            }
        }
        match self.entries.last() {
            Some(last) => !last.permit,
            None => true,
        }
    }
}

impl Acls {
    /// List `n`, or `None` when `n` is not 0-9 (C Pen's bounds check is off by one; ours is not).
    pub fn get(&self, n: usize) -> Option<&Acl> {
        self.lists.get(n)
    }

    /// Does list `n` permit `addr`? An out-of-range list number permits (it cannot be configured).
    pub fn permits(&self, n: usize, addr: Option<IpAddr>) -> bool {
        self.get(n).is_none_or(|a| a.permits(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(permit: bool, a: &str, m: &str) -> AclEntry {
        AclEntry {
            permit,
            matcher: AclMatch::V4 {
                addr: a.parse().unwrap(),
                mask: m.parse().unwrap(),
            },
        }
    }

    #[test]
    fn empty_list_permits_everything() {
        assert!(Acl::default().permits(Some("10.1.2.3".parse().unwrap())));
    }

    #[test]
    fn first_match_decides() {
        let acl = Acl {
            entries: vec![
                v4(false, "10.0.0.1", "255.255.255.255"),
                v4(true, "10.0.0.0", "255.0.0.0"),
            ],
        };
        assert!(!acl.permits(Some("10.0.0.1".parse().unwrap())));
        assert!(acl.permits(Some("10.0.0.2".parse().unwrap())));
    }

    #[test]
    fn no_match_gives_opposite_of_last_entry() {
        let deny_only = Acl {
            entries: vec![v4(false, "192.168.2.1", "255.255.255.255")],
        };
        assert!(deny_only.permits(Some("192.168.2.99".parse().unwrap())));
        let permit_only = Acl {
            entries: vec![v4(true, "192.168.2.11", "255.255.255.255")],
        };
        assert!(!permit_only.permits(Some("192.168.2.12".parse().unwrap())));
    }

    #[test]
    fn unix_clients_always_pass() {
        let acl = Acl {
            entries: vec![v4(true, "1.2.3.4", "255.255.255.255")],
        };
        assert!(acl.permits(None));
    }

    #[test]
    fn ipv6_prefix_matches() {
        let acl = Acl {
            entries: vec![AclEntry {
                permit: true,
                matcher: AclMatch::V6 {
                    addr: "2001:db8::".parse().unwrap(),
                    prefix: 32,
                },
            }],
        };
        assert!(acl.permits(Some("2001:db8:1::5".parse().unwrap())));
        assert!(!acl.permits(Some("2001:db9::5".parse().unwrap())));
        assert!(!acl.permits(Some("10.0.0.1".parse().unwrap())));
    }

    #[test]
    fn v4_mapped_v6_client_matches_v4_entry() {
        let acl = Acl {
            entries: vec![v4(true, "127.0.0.0", "255.0.0.0")],
        };
        assert!(acl.permits(Some("::ffff:127.0.0.2".parse().unwrap())));
    }

    #[test]
    fn out_of_range_list_number_is_rejected_by_get() {
        assert!(Acls::default().get(10).is_none());
    }
}
