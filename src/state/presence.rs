//! The presence bitmap in front of a sparse [`super::Table`]
//! ([`Presence`]).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

/// A lock-free "might this key be here?" bitmap in front of a sparse
/// table (failures, spraying sources), so that the many events whose key is
/// not in it (every successful login) skip the map and its shard lock.
///
/// Bits are set on insert and never cleared, except by a sweep, which
/// rebuilds the bitmap from the surviving keys into the second buffer while
/// lookups check both; inserts hold a read lock so none can slip between
/// the switch and the rebuild. A false "might be here" only costs a lookup.
///
/// **Sized to the table.** A buffer uses only as many of its bits as the
/// table needs (`BITS_PER_KEY` a key, from `MIN_BITS`): an event checks
/// half a dozen of these, and a few kilobytes each stay in the cache where
/// the full 128 KB each did not. A sweep sizes the buffer it rebuilds; a
/// table that outgrows its buffer between sweeps is rebuilt into a bigger
/// one at once (`Table::grow_presence`).
pub(super) struct Presence {
    pub(super) bits: [Vec<AtomicU64>; 2],
    /// The bit-index mask of each buffer (its used size - 1).
    pub(super) masks: [AtomicU64; 2],
    pub(super) current: AtomicUsize,
    pub(super) rebuilding: AtomicBool,
    pub(super) switch: RwLock<()>,
}

const PRESENCE_BITS: u64 = 1 << 20;
pub(super) const MIN_BITS: u64 = 1 << 12;
const BITS_PER_KEY: u64 = 32;

/// The bits a bitmap for `keys` keys uses.
pub(super) fn presence_bits(keys: usize) -> u64 {
    (keys as u64)
        .saturating_mul(BITS_PER_KEY)
        .next_power_of_two()
        .clamp(MIN_BITS, PRESENCE_BITS)
}

impl Presence {
    pub(super) fn new() -> Presence {
        let words = (PRESENCE_BITS / 64) as usize;
        Presence {
            bits: [
                (0..words).map(|_| AtomicU64::new(0)).collect(),
                (0..words).map(|_| AtomicU64::new(0)).collect(),
            ],
            masks: [AtomicU64::new(MIN_BITS - 1), AtomicU64::new(MIN_BITS - 1)],
            current: AtomicUsize::new(0),
            rebuilding: AtomicBool::new(false),
            switch: RwLock::new(()),
        }
    }

    fn slot(&self, which: usize, key: u64) -> (usize, u64) {
        // The low bits: the map's shard and bucket use the high ones.
        let bit = key & self.masks[which].load(Ordering::Acquire);
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    pub(super) fn set(&self, which: usize, key: u64) {
        let (w, m) = self.slot(which, key);
        let word = &self.bits[which][w];
        if word.load(Ordering::Relaxed) & m == 0 {
            word.fetch_or(m, Ordering::Relaxed);
        }
    }

    fn has(&self, which: usize, key: u64) -> bool {
        let (w, m) = self.slot(which, key);
        self.bits[which][w].load(Ordering::Acquire) & m != 0
    }

    pub(super) fn may_contain(&self, key: u64) -> bool {
        let cur = self.current.load(Ordering::Acquire);
        self.has(cur, key) || (self.rebuilding.load(Ordering::Acquire) && self.has(1 - cur, key))
    }

    /// Empties the buffer that is not current and sizes it for `keys`
    /// keys; returns it. The caller holds `switch` for writing.
    pub(super) fn prepare(&self, keys: usize) -> usize {
        let next = 1 - self.current.load(Ordering::Acquire);
        let used = (self.masks[next].load(Ordering::Acquire) + 1) / 64;
        for w in &self.bits[next][..used as usize] {
            w.store(0, Ordering::Relaxed);
        }
        self.masks[next].store(presence_bits(keys) - 1, Ordering::Release);
        next
    }

    /// Whether a table of `keys` keys has outgrown the current buffer.
    pub(super) fn outgrown(&self, keys: usize) -> bool {
        let cur = self.current.load(Ordering::Relaxed);
        presence_bits(keys) > (self.masks[cur].load(Ordering::Relaxed) + 1) * 2
    }
}
