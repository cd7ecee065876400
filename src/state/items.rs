//! What entries hold: short lists of timed items kept in order, and
//! counts over a sliding hour.

use smallvec::SmallVec;

use crate::time::Millis;

/// A detector's list of remembered items: one item is stored inline in the
/// table entry (no extra allocation and no extra cache miss for the many
/// accounts that have just one), more spill to the heap.
pub type Items<T> = SmallVec<[T; 1]>;

/// Inserts `item` into `items` kept sorted by `ts(item)`, appending in the
/// common in-order case, and drops the oldest items beyond `cap`. Grows the
/// list one slot at a time: most accounts hold one or two items, and
/// doubling would waste most of their memory.
pub fn insert_sorted<T>(
    items: &mut Items<T>,
    item: T,
    cap: usize,
    ts: impl Fn(&T) -> Millis,
) -> usize {
    let t = ts(&item);
    let at = items.partition_point(|x| ts(x) <= t);
    if items.len() == items.capacity() && items.len() < cap {
        items.reserve_exact(1);
    }
    items.insert(at, item);
    if items.len() > cap {
        let excess = items.len() - cap;
        items.drain(..excess);
        return at.saturating_sub(excess);
    }
    at
}

/// Drops items older than `horizon` from a vector sorted by time.
pub fn prune_sorted<T>(items: &mut Items<T>, horizon: Millis, ts: impl Fn(&T) -> Millis) {
    let n = items.partition_point(|x| ts(x) < horizon);
    if n > 0 {
        items.drain(..n);
        if items.capacity() > items.len() * 2 + 2 {
            items.shrink_to_fit();
        }
    }
}

/// A count over a sliding hour of event time, in two whole-hour buckets:
/// the current hour, plus the share of the previous hour still inside the
/// sliding hour. 16 bytes; late events count in the current hour.
#[derive(Debug, Clone, Copy, Default)]
pub struct HourCount {
    hour: i64,
    this: u32,
    prev: u32,
}

crate::codec_fields!(HourCount { hour, this, prev });

impl HourCount {
    /// Moves to the hour of `ts`; returns the count of the hour that was
    /// completed, if the hour changed.
    pub fn roll(&mut self, ts: Millis) -> Option<u32> {
        let hour = ts.div_euclid(crate::time::HOUR);
        if hour <= self.hour {
            return None;
        }
        let done = self.this;
        self.prev = if hour == self.hour + 1 { self.this } else { 0 };
        self.this = 0;
        self.hour = hour;
        Some(done)
    }

    pub fn add(&mut self, ts: Millis, n: u32) {
        self.roll(ts);
        self.this = self.this.saturating_add(n);
    }

    /// The count over the hour up to `ts`.
    pub fn last_hour(&self, ts: Millis) -> u32 {
        let into = ts.rem_euclid(crate::time::HOUR) as f64 / crate::time::HOUR as f64;
        self.this + (f64::from(self.prev) * (1.0 - into)) as u32
    }

    /// Hours since the hour of the last roll (0 in the same hour).
    pub fn hours_to(&self, ts: Millis) -> i64 {
        ts.div_euclid(crate::time::HOUR) - self.hour
    }
}
