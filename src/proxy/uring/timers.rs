//! Pure: the io_uring loop's timer wheel (connect and idle timeouts).
//!
//! Time is counted in ticks of the loop's clock. A timer is a small copyable value filed in
//! the slot of the tick it is due at; [`Wheel::advance`] hands back every timer due up to a
//! tick, visiting only the slots of the ticks that passed (one slot per tick, or each slot
//! once when more than a turn of the wheel passed). Timers are never removed: the loop checks
//! an expired one against its connection (a generation-checked key and the attempt or
//! activity it was set for) and ignores it when it no longer applies, so setting a timer is
//! one push and a connection that closes costs nothing here.

/// Timers filed by the tick they are due at.
#[derive(Debug)]
pub struct Wheel<T> {
    slots: Vec<Vec<(T, u64)>>,
    /// The last tick handed out by `advance`.
    now: u64,
    len: usize,
}

impl<T: Copy> Wheel<T> {
    /// A wheel of `slots` slots (rounded up to a power of two, at least 1), at tick 0.
    pub fn new(slots: usize) -> Wheel<T> {
        let n = slots.max(1).next_power_of_two();
        Wheel {
            slots: (0..n).map(|_| Vec::new()).collect(),
            now: 0,
            len: 0,
        }
    }

    fn slot_of(&self, tick: u64) -> usize {
        (tick & (self.slots.len() as u64 - 1)) as usize
    }

    /// Files `item` to expire at tick `due`; a due tick already passed expires at the next
    /// `advance`.
    pub fn insert(&mut self, item: T, due: u64) {
        let due = due.max(self.now + 1);
        let s = self.slot_of(due);
        if let Some(slot) = self.slots.get_mut(s) {
            slot.push((item, due));
            self.len += 1;
        }
    }

    /// Moves to tick `to` (never back), appending the timers due at or before it to `out`
    /// (in no particular order).
    pub fn advance(&mut self, to: u64, out: &mut Vec<T>) {
        if to <= self.now {
            return;
        }
        let n = self.slots.len() as u64;
        let passed = to - self.now;
        let ticks = if passed >= n {
            // A full turn or more: every slot once.
            0..n
        } else {
            self.now + 1..to + 1
        };
        for t in ticks {
            let s = self.slot_of(t);
            let Some(slot) = self.slots.get_mut(s) else {
                continue;
            };
            let before = slot.len();
            slot.retain(|&(item, due)| {
                if due <= to {
                    out.push(item);
                    false
                } else {
                    true
                }
            });
            self.len -= before - slot.len();
        }
        self.now = to;
    }

    /// The tick of the last `advance`.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Timers filed and not yet expired.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No timer is filed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Bench entry point (`benches/uring.rs`): files `n` timers due over the next `spread` ticks
/// and advances tick by tick until all have expired; returns how many expired.
pub fn bench_wheel(wheel: &mut Wheel<u32>, n: u32, spread: u64) -> usize {
    let base = wheel.now();
    for i in 0..n {
        wheel.insert(i, base + 1 + u64::from(i) % spread.max(1));
    }
    let mut out = Vec::with_capacity(n as usize);
    for t in 1..=spread.max(1) {
        wheel.advance(base + t, &mut out);
    }
    out.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expired(w: &mut Wheel<u32>, to: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.advance(to, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn timers_expire_at_their_tick_and_not_before() {
        let mut w = Wheel::new(8);
        w.insert(1, 3);
        w.insert(2, 5);
        w.insert(3, 5);
        assert_eq!(w.len(), 3);
        assert_eq!(expired(&mut w, 2), Vec::<u32>::new());
        assert_eq!(expired(&mut w, 3), vec![1]);
        assert_eq!(expired(&mut w, 4), Vec::<u32>::new());
        assert_eq!(expired(&mut w, 5), vec![2, 3]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_timer_due_beyond_one_turn_waits_for_its_own_tick() {
        let mut w = Wheel::new(4);
        // Slot of tick 9 is the slot of tick 1 and 5: those passes must keep it.
        w.insert(7, 9);
        assert_eq!(expired(&mut w, 1), Vec::<u32>::new());
        assert_eq!(expired(&mut w, 5), Vec::<u32>::new());
        assert_eq!(expired(&mut w, 8), Vec::<u32>::new());
        assert_eq!(expired(&mut w, 9), vec![7]);
    }

    #[test]
    fn a_long_jump_expires_everything_due_and_keeps_the_rest() {
        let mut w = Wheel::new(4);
        for i in 0..20u32 {
            w.insert(i, u64::from(i) + 1);
        }
        // 12 ticks pass at once (the loop was busy): 3 turns of a 4-slot wheel.
        assert_eq!(expired(&mut w, 12), (0..12).collect::<Vec<_>>());
        assert_eq!(w.len(), 8);
        assert_eq!(expired(&mut w, 100), (12..20).collect::<Vec<_>>());
        assert!(w.is_empty());
    }

    #[test]
    fn a_timer_due_in_the_past_expires_at_the_next_advance() {
        let mut w = Wheel::new(8);
        let mut out = Vec::new();
        w.advance(10, &mut out);
        w.insert(4, 3);
        assert_eq!(
            expired(&mut w, 10),
            Vec::<u32>::new(),
            "time does not go back"
        );
        assert_eq!(expired(&mut w, 11), vec![4]);
    }

    #[test]
    fn the_bench_entry_point_expires_every_timer() {
        let mut w = Wheel::new(64);
        assert_eq!(bench_wheel(&mut w, 1000, 25), 1000);
        assert_eq!(bench_wheel(&mut w, 1000, 200), 1000);
        assert!(w.is_empty());
    }
}
