//! The client table (reference §4 step 2): who came before, and to which server. Pure.
//!
//! C Pen scans an array of `clients_max` slots linearly on every connection, matching by IP
//! address only; a new client takes the first empty slot, else the least-recently-used one.
//! This table gives the same answers in O(1): a `HashMap` from [`ClientKey`] to a slot, plus an
//! intrusive doubly linked list of the slots in least-recently-used order. Because `now` never
//! goes backwards, the LRU order is also the order of `last_seen`, so entries idle longer than
//! the tracking time are always at the old end and expire in amortised O(1).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::{Client, Target};
use crate::acl::canonical;

/// What the client table is keyed by: the client's address, never its port. All Unix-socket
/// clients share the single [`ClientKey::Unix`] entry, as in C Pen. IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`, seen on a dual-stack listener) count as the IPv4 client they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Unix,
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl ClientKey {
    /// The key of `client`.
    pub fn of(client: &Client) -> ClientKey {
        match client.ip.map(canonical) {
            None => ClientKey::Unix,
            Some(IpAddr::V4(a)) => ClientKey::V4(a),
            Some(IpAddr::V6(a)) => ClientKey::V6(a),
        }
    }

    /// The address, `None` for Unix-socket clients.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            ClientKey::Unix => None,
            ClientKey::V4(a) => Some(IpAddr::V4(a)),
            ClientKey::V6(a) => Some(IpAddr::V6(a)),
        }
    }
}

/// What pen remembers about one client (`recent`, the status page, tracking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub key: ClientKey,
    /// Connections since this entry was (re)created.
    pub connects: u64,
    /// Bytes this client's closed connections sent to servers.
    pub sx: u64,
    /// Bytes this client's closed connections received from servers.
    pub rx: u64,
    /// The server of the client's last connect attempt (recorded when the connect starts).
    pub server: Option<Target>,
    /// When the client last connected.
    pub last_seen: Duration,
}

const NIL: usize = usize::MAX;

#[derive(Debug, Clone)]
struct Slot {
    info: ClientInfo,
    /// Towards the least recently used end.
    prev: usize,
    /// Towards the most recently used end.
    next: usize,
}

/// `clients_max` entries; see the module doc.
#[derive(Debug, Clone)]
pub struct ClientTable {
    slots: Vec<Slot>,
    free: Vec<usize>,
    index: HashMap<ClientKey, usize>,
    /// Least recently used.
    head: usize,
    /// Most recently used.
    tail: usize,
    capacity: usize,
}

impl ClientTable {
    /// A table of `capacity` entries (at least 1: C Pen indexes slot -1 with `-c 0`; we keep one).
    pub fn new(capacity: usize) -> ClientTable {
        ClientTable {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            head: NIL,
            tail: NIL,
            capacity: capacity.max(1),
        }
    }

    /// How many clients the table holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries in use.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// `clients_max N`: the table grows, never shrinks (as C Pen's `expand_clienttable`).
    pub fn grow(&mut self, capacity: usize) {
        self.capacity = self.capacity.max(capacity);
    }

    /// Forget clients idle for longer than `tracking_secs` (0 = never forget by age).
    pub fn expire(&mut self, now: Duration, tracking_secs: u64) {
        if tracking_secs == 0 {
            return;
        }
        let limit = Duration::from_secs(tracking_secs);
        while let Some(slot) = self.slots.get(self.head) {
            if now.saturating_sub(slot.info.last_seen) > limit {
                self.remove_slot(self.head);
            } else {
                break;
            }
        }
    }

    /// C Pen's `store_client`: find the client (or make room for it, evicting the least
    /// recently used entry when full), count the connection, mark it seen `now`.
    pub fn touch(&mut self, key: ClientKey, now: Duration) -> &ClientInfo {
        let idx = match self.index.get(&key) {
            Some(&idx) => {
                self.unlink(idx);
                idx
            }
            None => {
                if self.index.len() >= self.capacity {
                    self.remove_slot(self.head);
                }
                let info = ClientInfo {
                    key,
                    connects: 0,
                    sx: 0,
                    rx: 0,
                    server: None,
                    last_seen: now,
                };
                let slot = Slot {
                    info,
                    prev: NIL,
                    next: NIL,
                };
                let idx = match self.free.pop() {
                    Some(idx) if idx < self.slots.len() => {
                        self.slots[idx] = slot;
                        idx
                    }
                    _ => {
                        self.slots.push(slot);
                        self.slots.len() - 1
                    }
                };
                self.index.insert(key, idx);
                idx
            }
        };
        self.push_back(idx);
        let info = &mut self.slots[idx].info;
        info.connects = info.connects.saturating_add(1);
        info.last_seen = now;
        info
    }

    pub fn get(&self, key: &ClientKey) -> Option<&ClientInfo> {
        let idx = *self.index.get(key)?;
        self.slots.get(idx).map(|s| &s.info)
    }

    pub fn get_mut(&mut self, key: &ClientKey) -> Option<&mut ClientInfo> {
        let idx = *self.index.get(key)?;
        self.slots.get_mut(idx).map(|s| &mut s.info)
    }

    /// Entries, most recently seen first.
    pub fn iter(&self) -> impl Iterator<Item = &ClientInfo> + '_ {
        let mut cur = self.tail;
        std::iter::from_fn(move || {
            let slot = self.slots.get(cur)?;
            cur = slot.prev;
            Some(&slot.info)
        })
    }

    fn remove_slot(&mut self, idx: usize) {
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        let key = slot.info.key;
        self.unlink(idx);
        self.index.remove(&key);
        self.free.push(idx);
    }

    fn unlink(&mut self, idx: usize) {
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        let (prev, next) = (slot.prev, slot.next);
        match self.slots.get_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.prev = NIL;
            slot.next = NIL;
        }
    }

    fn push_back(&mut self, idx: usize) {
        let old_tail = self.tail;
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.prev = old_tail;
            slot.next = NIL;
        }
        match self.slots.get_mut(old_tail) {
            Some(t) => t.next = idx,
            None => self.head = idx,
        }
        self.tail = idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> ClientKey {
        ClientKey::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn touch_counts_connects_of_the_same_address() {
        let mut t = ClientTable::new(4);
        t.touch(v4(1), secs(1));
        let info = t.touch(v4(1), secs(2));
        assert_eq!(info.connects, 2);
        assert_eq!(info.last_seen, secs(2));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn full_table_evicts_least_recently_used() {
        let mut t = ClientTable::new(3);
        t.touch(v4(1), secs(1));
        t.touch(v4(2), secs(2));
        t.touch(v4(3), secs(3));
        t.touch(v4(1), secs(4)); // 2 is now the oldest
        t.touch(v4(4), secs(5));
        assert!(t.get(&v4(2)).is_none());
        assert!(t.get(&v4(1)).is_some());
        assert!(t.get(&v4(3)).is_some());
        assert!(t.get(&v4(4)).is_some());
        let order: Vec<_> = t.iter().map(|c| c.key).collect();
        assert_eq!(order, vec![v4(4), v4(1), v4(3)]);
    }

    #[test]
    fn expire_forgets_only_idle_entries() {
        let mut t = ClientTable::new(8);
        t.touch(v4(1), secs(0));
        t.touch(v4(2), secs(5));
        t.expire(secs(10), 10);
        assert_eq!(t.len(), 2, "idle exactly tracking_secs is still tracked");
        t.expire(secs(11), 10);
        assert!(t.get(&v4(1)).is_none());
        assert!(t.get(&v4(2)).is_some());
        t.expire(secs(1000), 0);
        assert_eq!(t.len(), 1, "tracking 0 never expires");
    }

    #[test]
    fn freed_slots_are_reused_and_table_grows_only() {
        let mut t = ClientTable::new(2);
        t.touch(v4(1), secs(0));
        t.touch(v4(2), secs(0));
        t.expire(secs(100), 1);
        assert!(t.is_empty());
        t.touch(v4(3), secs(100));
        t.touch(v4(4), secs(100));
        t.touch(v4(5), secs(100));
        assert_eq!(t.len(), 2);
        assert!(t.slots.len() <= 2);
        t.grow(1);
        assert_eq!(t.capacity(), 2);
        t.grow(3);
        t.touch(v4(6), secs(101));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn mapped_ipv6_client_is_the_ipv4_client() {
        let a = Client {
            ip: Some("::ffff:10.0.0.1".parse().unwrap()),
            port: 1,
        };
        let b = Client {
            ip: Some("10.0.0.1".parse().unwrap()),
            port: 2,
        };
        assert_eq!(ClientKey::of(&a), ClientKey::of(&b));
    }
}
