//! Address mapping: every client address of a capture gets an address of a lab pool, in order
//! of first appearance (so the same trace always gives the same mapping, and "the same client"
//! stays one client for pen's client table); every original server maps to pen's listen
//! address. Source ports are kept. Pure.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::trace::Trace;

/// A pool of lab addresses: `base` + 1, + 2, ... within `prefix` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub base: IpAddr,
    pub prefix: u8,
}

impl Pool {
    /// `10.200.0.0/16`, `fd00:200::/64`.
    pub fn parse(s: &str) -> Result<Pool, String> {
        let bad = || {
            format!(
                "bad address pool {s:?}; expected ADDRESS/PREFIX with at least 2 host bits, \
                 e.g. 10.200.0.0/16 or fd00:200::/64"
            )
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let base: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let bits = if base.is_ipv4() { 32 } else { 128 };
        if prefix > bits - 2 {
            return Err(bad());
        }
        Ok(Pool { base, prefix })
    }

    /// Usable host addresses (the network and, for IPv4, broadcast addresses excluded).
    pub fn capacity(&self) -> u128 {
        let host_bits = if self.base.is_ipv4() { 32 } else { 128 } - u32::from(self.prefix);
        (1u128 << host_bits.min(127)) - 2
    }

    /// The `n`-th address (0-based) of the pool; `None` beyond its capacity.
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        if n >= self.capacity() {
            return None;
        }
        Some(match self.base {
            IpAddr::V4(b) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from((u32::from(b) & mask) + 1 + n as u32))
            }
            IpAddr::V6(b) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from((u128::from(b) & mask) + 1 + n))
            }
        })
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The default pools: `10.200.0.0/16` and `fd00:200::/64`.
pub fn default_pools() -> (Pool, Pool) {
    (
        Pool {
            base: IpAddr::V4(Ipv4Addr::new(10, 200, 0, 0)),
            prefix: 16,
        },
        Pool {
            base: IpAddr::V6(Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0)),
            prefix: 64,
        },
    )
}

/// Original → lab addresses of one trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressMap {
    /// Client address → lab address, in order of first appearance.
    pub clients: Vec<(IpAddr, IpAddr)>,
    index: BTreeMap<IpAddr, usize>,
    /// Original server endpoints, all mapped to `listen`.
    pub servers: Vec<SocketAddr>,
    pub listen: SocketAddr,
}

impl AddressMap {
    /// Maps the clients of `trace` (UDP flows and TCP sessions, by first appearance) into
    /// `v4` / `v6` by family; servers to `listen`.
    pub fn build(
        trace: &Trace,
        v4: Pool,
        v6: Pool,
        listen: SocketAddr,
    ) -> Result<AddressMap, String> {
        // First appearance across both protocols: by first frame.
        let mut firsts: Vec<(u64, IpAddr, SocketAddr)> = trace
            .udp
            .iter()
            .map(|f| (f.first_frame, f.client.ip(), f.server))
            .chain(
                trace
                    .tcp
                    .iter()
                    .map(|s| (s.first_frame, s.client.ip(), s.server)),
            )
            .collect();
        firsts.sort();
        let mut map = AddressMap {
            clients: Vec::new(),
            index: BTreeMap::new(),
            servers: Vec::new(),
            listen,
        };
        let mut used = [0u128; 2];
        for (_, ip, server) in firsts {
            if !map.servers.contains(&server) {
                map.servers.push(server);
            }
            if map.index.contains_key(&ip) {
                continue;
            }
            let (pool, n) = match ip {
                IpAddr::V4(_) => (v4, &mut used[0]),
                IpAddr::V6(_) => (v6, &mut used[1]),
            };
            let lab = pool.nth(*n).ok_or_else(|| {
                format!(
                    "{}: more {} clients than pool {pool} holds ({}); give a larger pool",
                    trace.file,
                    if ip.is_ipv4() { "IPv4" } else { "IPv6" },
                    pool.capacity()
                )
            })?;
            *n += 1;
            map.index.insert(ip, map.clients.len());
            map.clients.push((ip, lab));
        }
        Ok(map)
    }

    /// The lab address of an original client address.
    pub fn client_ip(&self, ip: IpAddr) -> Option<IpAddr> {
        self.index.get(&ip).map(|&i| self.clients[i].1)
    }

    /// The lab endpoint of an original client endpoint (port kept).
    pub fn client(&self, c: SocketAddr) -> Option<SocketAddr> {
        self.client_ip(c.ip())
            .map(|ip| SocketAddr::new(ip, c.port()))
    }

    /// Lab addresses per family, for the lab to add to a host.
    pub fn lab_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.clients.iter().map(|(_, l)| *l)
    }

    /// The mapping as text, one line per address (`client ORIGINAL LAB`, `server ORIGINAL LISTEN`).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (o, l) in &self.clients {
            s.push_str(&format!("client {o} {l}\n"));
        }
        for o in &self.servers {
            s.push_str(&format!("server {o} {}\n", self.listen));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::trace::{Datagram, UdpFlow};
    use std::time::Duration;

    fn flow(client: &str, frame: u64) -> UdpFlow {
        UdpFlow {
            client: client.parse().unwrap(),
            server: "192.0.2.53:53".parse().unwrap(),
            first_frame: frame,
            queries: vec![Datagram {
                at: Duration::ZERO,
                frame,
                len: 1,
                payload: vec![0],
            }],
            replies: vec![],
        }
    }

    #[test]
    fn clients_map_in_order_of_first_appearance_and_keep_their_ports() {
        let t = Trace {
            file: "t.pcap".into(),
            udp: vec![
                flow("198.51.100.9:1000", 3),
                flow("198.51.100.7:1000", 1),
                flow("198.51.100.9:2000", 5),
                flow("[2001:db8::5]:53000", 4),
            ],
            ..Trace::default()
        };
        let (v4, v6) = default_pools();
        let m = AddressMap::build(&t, v4, v6, "10.0.0.100:53".parse().unwrap()).unwrap();
        assert_eq!(
            m.client("198.51.100.7:1000".parse().unwrap()),
            Some("10.200.0.1:1000".parse().unwrap())
        );
        assert_eq!(
            m.client("198.51.100.9:2000".parse().unwrap()),
            Some("10.200.0.2:2000".parse().unwrap())
        );
        assert_eq!(
            m.client("[2001:db8::5]:1".parse().unwrap()),
            Some("[fd00:200::1]:1".parse().unwrap())
        );
        assert_eq!(
            m.to_text(),
            "client 198.51.100.7 10.200.0.1\nclient 198.51.100.9 10.200.0.2\nclient 2001:db8::5 \
             fd00:200::1\nserver 192.0.2.53:53 10.0.0.100:53\n"
        );
        // Deterministic: the same trace, the same map.
        assert_eq!(
            m,
            AddressMap::build(&t, v4, v6, "10.0.0.100:53".parse().unwrap()).unwrap()
        );
    }

    #[test]
    fn a_pool_too_small_is_an_error_naming_it() {
        let t = Trace {
            file: "t.pcap".into(),
            udp: (0..3)
                .map(|i| flow(&format!("198.51.100.{i}:1"), i))
                .collect(),
            ..Trace::default()
        };
        let v4 = Pool::parse("10.1.0.0/30").unwrap();
        let (_, v6) = default_pools();
        let e = AddressMap::build(&t, v4, v6, "10.0.0.1:53".parse().unwrap()).unwrap_err();
        assert!(e.contains("pool 10.1.0.0/30 holds (2)"), "{e}");
        assert!(
            Pool::parse("10.0.0.0/31")
                .unwrap_err()
                .contains("2 host bits")
        );
        assert!(Pool::parse("nonsense").is_err());
    }
}
