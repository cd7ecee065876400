//! The presence bitmap in front of a sparse [`super::Table`]
//! ([`Presence`]).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

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
/// one at once ([`Presence::grow`]).
pub(super) struct Presence {
    bits: [Vec<AtomicU64>; 2],
    /// The bit-index mask of each buffer (its used size - 1).
    masks: [AtomicU64; 2],
    current: AtomicUsize,
    rebuilding: AtomicBool,
    switch: RwLock<()>,
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

    /// Marks `key` as inserted. The guard keeps a rebuild from switching
    /// buffers until the insert it marks is in the table.
    pub(super) fn insert(&self, key: u64) -> RwLockReadGuard<'_, ()> {
        let g = self.switch.read().unwrap_or_else(PoisonError::into_inner);
        self.set(self.current.load(Ordering::Acquire), key);
        g
    }

    /// Begins a sweep's rebuild for a table of `keys` keys: lookups check
    /// both buffers until [`Presence::end_rebuild`], and the survivors are
    /// [`Presence::set`] into the buffer returned.
    pub(super) fn begin_rebuild(&self, keys: usize) -> usize {
        let _g = self.switch.write().unwrap_or_else(PoisonError::into_inner);
        let next = self.prepare(keys);
        self.rebuilding.store(true, Ordering::Release);
        self.current.store(next, Ordering::Release);
        next
    }

    pub(super) fn end_rebuild(&self) {
        self.rebuilding.store(false, Ordering::Release);
    }

    /// Rebuilds into a bigger buffer when a table of `keys` keys has
    /// outgrown the current one (more than one key per `BITS_PER_KEY / 2`
    /// bits); `each_key` hands every key of the table to its argument. Not
    /// during a sweep, which sizes the buffer it rebuilds. Inserts wait;
    /// lookups go on against the current buffer, which stays right until
    /// the switch. The caller holds no shard of the table.
    pub(super) fn grow(&self, keys: usize, each_key: impl FnOnce(&mut dyn FnMut(u64))) {
        if !self.outgrown(keys) {
            return;
        }
        let _g = self.switch.write().unwrap_or_else(PoisonError::into_inner);
        // Another insert may have grown it meanwhile.
        if !self.outgrown(keys) {
            return;
        }
        let next = self.prepare(keys);
        each_key(&mut |k| self.set(next, k));
        self.current.store(next, Ordering::Release);
    }

    /// Empties the buffer that is not current and sizes it for `keys`
    /// keys; returns it. The caller holds `switch` for writing.
    fn prepare(&self, keys: usize) -> usize {
        let next = 1 - self.current.load(Ordering::Acquire);
        let used = (self.masks[next].load(Ordering::Acquire) + 1) / 64;
        for w in &self.bits[next][..used as usize] {
            w.store(0, Ordering::Relaxed);
        }
        self.masks[next].store(presence_bits(keys) - 1, Ordering::Release);
        next
    }

    /// Whether a table of `keys` keys has outgrown the current buffer
    /// (never while a sweep rebuilds it).
    fn outgrown(&self, keys: usize) -> bool {
        let cur = self.current.load(Ordering::Relaxed);
        !self.rebuilding.load(Ordering::Acquire)
            && presence_bits(keys) > (self.masks[cur].load(Ordering::Relaxed) + 1) * 2
    }

    /// The bits the current buffer uses.
    #[cfg(test)]
    pub(super) fn used_bits(&self) -> u64 {
        self.masks[self.current.load(Ordering::Relaxed)].load(Ordering::Relaxed) + 1
    }
}
