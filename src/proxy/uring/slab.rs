//! Pure bookkeeping of the io_uring loop: the connection slab and the user-data tokens that
//! tie a completion to its connection and operation.
//!
//! A slot's generation grows each time it is freed, so a completion that arrives for a slot
//! reused since (a late cancellation) does not match its new tenant.

/// Which operation a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// An accept on the listener (its sequence number in the key's index).
    Accept = 1,
    /// The wake-up socket (control requests: `close N`, stop).
    Wake = 2,
    /// A cancellation request (its own completion; nothing to do).
    Cancel = 3,
    /// Receive from the client (client → server direction).
    RecvClient = 4,
    /// Receive from the server (server → client direction).
    RecvServer = 5,
    /// Send to the server.
    SendServer = 6,
    /// Send to the client.
    SendClient = 7,
    /// The upstream connect (timed out by the loop's timer wheel).
    Connect = 8,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Wake,
            3 => Op::Cancel,
            4 => Op::RecvClient,
            5 => Op::RecvServer,
            6 => Op::SendServer,
            7 => Op::SendClient,
            8 => Op::Connect,
            _ => return None,
        })
    }
}

/// A connection's slot and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub idx: u32,
    pub generation: u32,
}

/// Most slots a slab holds (the token keeps 24 bits of index).
pub(crate) const MAX_SLOTS: usize = 1 << 24;

/// The user data of operation `op` of connection `key` (`key` is ignored by loop-wide ops).
pub(crate) fn token(op: Op, key: Key) -> u64 {
    (u64::from(key.generation) << 32) | (u64::from(key.idx & 0x00ff_ffff) << 8) | op as u64
}

/// The operation and connection of a user data; `None` for a value no token has.
pub(crate) fn untoken(t: u64) -> Option<(Op, Key)> {
    let op = Op::from_u8((t & 0xff) as u8)?;
    let idx = ((t >> 8) & 0x00ff_ffff) as u32;
    let generation = (t >> 32) as u32;
    Some((op, Key { idx, generation }))
}

/// Fixed-size records reused lowest-freed-last, addressed by [`Key`].
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `v`; `None` when the slab is full ([`MAX_SLOTS`]).
    pub(crate) fn insert(&mut self, v: T) -> Option<Key> {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.slots.len() >= MAX_SLOTS {
                    return None;
                }
                self.slots.push((0, None));
                u32::try_from(self.slots.len() - 1).ok()?
            }
        };
        let slot = self.slots.get_mut(idx as usize)?;
        slot.1 = Some(v);
        self.len += 1;
        Some(Key {
            idx,
            generation: slot.0,
        })
    }

    pub(crate) fn get_mut(&mut self, k: Key) -> Option<&mut T> {
        match self.slots.get_mut(k.idx as usize) {
            Some((g, Some(v))) if *g == k.generation => Some(v),
            _ => None,
        }
    }

    /// Takes the record out; the slot's generation moves on.
    pub(crate) fn remove(&mut self, k: Key) -> Option<T> {
        let slot = self.slots.get_mut(k.idx as usize)?;
        if slot.0 != k.generation {
            return None;
        }
        let v = slot.1.take()?;
        slot.0 = slot.0.wrapping_add(1);
        self.free.push(k.idx);
        self.len -= 1;
        Some(v)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The keys of the records for which `f` holds.
    #[cfg(test)]
    pub(crate) fn keys_where(&self, mut f: impl FnMut(&T) -> bool) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, (g, v))| {
                let v = v.as_ref()?;
                let idx = u32::try_from(i).ok()?;
                f(v).then_some(Key {
                    idx,
                    generation: *g,
                })
            })
            .collect()
    }
}

/// Bench entry point (`benches/uring.rs`): insert `n` records,
/// look each up, remove them; returns how many were found.
pub fn bench_churn(slab: &mut Slab<[u64; 8]>, n: u32) -> usize {
    let keys: Vec<Key> = (0..n)
        .filter_map(|i| slab.insert([u64::from(i); 8]))
        .collect();
    let mut found = 0;
    for k in &keys {
        if slab.get_mut(*k).is_some() {
            found += 1;
        }
    }
    for k in keys {
        slab.remove(k);
    }
    found
}

/// Bench entry point: `n` token encodings and decodings; returns the sum of decoded indices.
pub fn bench_tokens(n: u32) -> u64 {
    (0..n)
        .filter_map(|i| {
            untoken(token(
                Op::RecvClient,
                Key {
                    idx: i,
                    generation: i ^ 0x5555,
                },
            ))
        })
        .map(|(_, k)| u64::from(k.idx))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_unknown_ops() {
        let k = Key {
            idx: 0x12_3456,
            generation: 0xdead_beef,
        };
        for op in [Op::Accept, Op::RecvClient, Op::SendServer, Op::Connect] {
            assert_eq!(untoken(token(op, k)), Some((op, k)));
        }
        assert_eq!(untoken(0), None);
        assert_eq!(untoken(0xff), None);
    }

    #[test]
    fn a_reused_slot_does_not_answer_to_its_old_key() {
        let mut s = Slab::default();
        let a = s.insert("a").unwrap();
        let b = s.insert("b").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None, "removed twice");
        let c = s.insert("c").unwrap();
        assert_eq!(c.idx, a.idx, "the freed slot is reused");
        assert_ne!(c.generation, a.generation);
        assert!(s.get_mut(a).is_none(), "a stale key misses the new tenant");
        assert_eq!(s.get_mut(c).copied(), Some("c"));
        assert_eq!(s.keys_where(|v| *v == "b"), vec![b]);
        assert_eq!(bench_churn(&mut Slab::default(), 100), 100);
    }
}
