//! Route facts for the kernel fast path ([`super::offload`]): which interface a flow's
//! datagrams leave through and which source address the kernel gives them.
//!
//! [`RouteCache`] is pure: look-up results per destination, bounded, and dropped whenever the
//! routing changes ([`RouteCache::routes_changed`], an input like any other). [`RouteWatch`]
//! is the IO side: an rtnetlink socket subscribed to the kernel's IPv4 route notifications
//! (`RTNLGRP_IPV4_ROUTE`; adding or removing an address or taking a link down changes routes
//! too, so those are seen as well), which the shell turns into that input. Flows already in the
//! kernel keep the interface they were installed with until they end.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// What a route look-up says about reaching one destination over an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    /// Output interface index.
    pub oif: u32,
    /// The source address the kernel would choose, when it names one.
    pub src: Option<Ipv4Addr>,
}

/// Bound on the cached destinations (the cache starts over when it is reached).
pub const ROUTE_CACHE: usize = 4096;

/// Route look-up results per destination (`None`: not reached over an interface, e.g. the
/// host itself). Valid until the routing changes.
#[derive(Debug, Clone)]
pub struct RouteCache {
    entries: HashMap<Ipv4Addr, Option<Via>>,
    cap: usize,
    /// Times the cache was dropped because routes changed.
    changes: u64,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache::new(ROUTE_CACHE)
    }
}

impl RouteCache {
    /// A cache of at most `cap` destinations (at least one).
    pub fn new(cap: usize) -> RouteCache {
        RouteCache {
            entries: HashMap::new(),
            cap: cap.max(1),
            changes: 0,
        }
    }

    /// The cached result for `dst`: `None` when it must be looked up.
    pub fn get(&self, dst: Ipv4Addr) -> Option<Option<Via>> {
        self.entries.get(&dst).copied()
    }

    /// Remembers the look-up result for `dst`.
    pub fn insert(&mut self, dst: Ipv4Addr, via: Option<Via>) {
        if self.entries.len() >= self.cap && !self.entries.contains_key(&dst) {
            self.entries.clear();
        }
        self.entries.insert(dst, via);
    }

    /// The kernel's routing changed: every cached result may be wrong.
    pub fn routes_changed(&mut self) {
        self.entries.clear();
        self.changes += 1;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many times routes changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }
}

/// The kernel's IPv4 route notifications, as "routes changed" events.
#[cfg(target_os = "linux")]
pub struct RouteWatch {
    sock: tokio::io::unix::AsyncFd<netlink_sys::Socket>,
}

#[cfg(target_os = "linux")]
impl std::fmt::Debug for RouteWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteWatch")
    }
}

/// `RTNLGRP_IPV4_ROUTE` from `<linux/rtnetlink.h>`.
#[cfg(target_os = "linux")]
const RTNLGRP_IPV4_ROUTE: u32 = 7;

#[cfg(target_os = "linux")]
impl RouteWatch {
    /// Subscribes to the notifications of the calling thread's network namespace (within a
    /// tokio runtime).
    pub fn new() -> std::io::Result<RouteWatch> {
        let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.add_membership(RTNLGRP_IPV4_ROUTE)?;
        sock.set_non_blocking(true)?;
        let sock = crate::sys::netlink::async_fd(sock)?;
        Ok(RouteWatch { sock })
    }

    /// Waits until routes change (one or more notifications, all read), or until the kernel
    /// dropped notifications for want of buffer space (`ENOBUFS`: something may have changed).
    pub async fn changed(&mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let mut guard = self.sock.readable().await?;
            let mut seen = false;
            loop {
                let mut slice: &mut [u8] = &mut buf[..];
                match guard.get_inner().recv(&mut slice, libc::MSG_DONTWAIT) {
                    Ok(_) => seen = true,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => seen = true,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if seen {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(oif: u32) -> Option<Via> {
        Some(Via {
            oif,
            src: Some(Ipv4Addr::new(10, 0, 0, 1)),
        })
    }

    #[test]
    fn a_route_change_drops_every_cached_result() {
        let mut c = RouteCache::default();
        let (a, b) = (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 2, 0, 1));
        assert_eq!(c.get(a), None, "not looked up yet");
        c.insert(a, via(3));
        c.insert(b, None);
        assert_eq!((c.get(a), c.get(b)), (Some(via(3)), Some(None)));
        c.routes_changed();
        assert_eq!((c.get(a), c.get(b)), (None, None), "looked up again");
        assert_eq!((c.len(), c.changes()), (0, 1));
        c.insert(a, via(4));
        assert_eq!(c.get(a), Some(via(4)));
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = RouteCache::new(3);
        for i in 0..10u8 {
            c.insert(Ipv4Addr::new(10, 0, 0, i), via(1));
            assert!(c.len() <= 3);
        }
        // Refreshing a cached destination in a full cache keeps the others.
        let mut c = RouteCache::new(2);
        c.insert(Ipv4Addr::new(10, 0, 0, 1), via(1));
        c.insert(Ipv4Addr::new(10, 0, 0, 2), via(1));
        c.insert(Ipv4Addr::new(10, 0, 0, 2), via(2));
        assert_eq!(c.len(), 2);
    }
}
