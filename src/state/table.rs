//! The bounded table itself: a sharded concurrent map with a time bound
//! (swept, in steps), a size bound (scored eviction) and, for sparse
//! tables, a presence bitmap in front.

use std::collections::hash_map::Entry as Slot;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockWriteGuard};

use super::codec::{Codec, CodecError, Reader};
use super::presence::Presence;
use super::sweep::{try_locked, unpoisoned, SweepRun, Sweeper};
use super::{shard_of, Entry, KeyedBy, Swept, TableStats, SHARDS};
use crate::time::Millis;

/// The keys are already uniformly distributed hashes: use them as they are.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b) ^ (self.0 >> 56);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const STRIPES: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicUsize);

fn stripe(s: &[Stripe; STRIPES], key: u64) -> &AtomicUsize {
    &s[(key >> 59) as usize % STRIPES].0
}

/// Entries are boxed: a map that outgrows itself moves what its slots hold
/// into a new array twice the size, and with the entries themselves in the
/// slots (a profile is 152 bytes) that was 10–20 MB per shard at one to
/// two million accounts, copied while every event of the shard waited,
/// into memory the kernel had to zero first: a quarter of a replay's time.
/// Boxed, a slot is 16 bytes, an entry is allocated once and never moves,
/// and the slots a map keeps empty (up to half of them after growing) cost
/// 16 bytes, not an entry's size. The price is one more dependent load per
/// lookup, which [`Table::warm`] takes ahead of the events where it is
/// used, and a miss per entry in a pass over a whole table (an eviction at
/// the cap reads every score: a junk-username flood runs 22–28 % longer)
/// (BENCHMARKS.md, issue 18, eleventh look).
type Map<V> = HashMap<u64, Box<V>, BuildHasherDefault<KeyHasher>>;

/// One shard: its own lock and map, on its own cache lines.
#[repr(align(128))]
struct Shard<V>(RwLock<Map<V>>);

impl<V: Entry + Codec> Swept for Table<V> {
    fn sweep_begin(&self, watermark: Millis, slack: Millis) -> bool {
        Table::sweep_begin(self, watermark, slack)
    }
    fn sweep_shards(&self, shards: Range<usize>) {
        Table::sweep_shards(self, shards)
    }
    fn sweep_end(&self) {
        Table::sweep_end(self)
    }
    fn stats(&self) -> TableStats {
        Table::stats(self)
    }
    fn forget(&self, drop: &dyn Fn(u64) -> bool) -> usize {
        Table::forget(self, drop)
    }
    fn remove(&self, key: u64) -> bool {
        Table::remove(self, key).is_some()
    }
    fn save(&self, key: u64, out: &mut Vec<u8>) -> bool {
        if self.absent(key) {
            return false;
        }
        match self.read(key).get(&key) {
            Some(e) => {
                e.put(out);
                true
            }
            None => false,
        }
    }
    fn load(&self, key: u64, r: &mut Reader<'_>) -> Result<(), CodecError> {
        let v = V::get(r)?;
        self.put(key, v);
        Ok(())
    }
}

/// A bounded concurrent map from a 64-bit key to `V`.
pub struct Table<V> {
    name: &'static str,
    keyed_by: KeyedBy,
    shards: Box<[Shard<V>]>,
    cap: usize,
    sweeps: Sweeper,
    evicted_cap: AtomicU64,
    /// Entry count, kept beside the map (`DashMap::len` locks every shard),
    /// striped by key so that threads inserting different keys do not
    /// fight over one cache line.
    count: [Stripe; STRIPES],
    presence: Option<Presence>,
}

/// A shard of a [`Table`], locked by [`Table::hold`].
pub struct Held<'a, V> {
    table: &'a Table<V>,
    shard: usize,
    map: RwLockWriteGuard<'a, Map<V>>,
}

impl<V: Entry> Held<'_, V> {
    /// Whether the entry of `key` would be in the held shard.
    pub fn covers(&self, key: u64) -> bool {
        shard_of(key) == self.shard
    }

    /// The entry of `key` (a key the shard covers), if there is one.
    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        debug_assert!(self.covers(key), "a key of another shard");
        self.map.get_mut(&key).map(|b| &mut **b)
    }

    /// The entry of `key` (a key the shard covers), created with `new` if
    /// absent. `None` when it is absent and cannot be created here: the
    /// table is at its cap (making room visits every shard) or has a
    /// presence bitmap (growing it reads every shard). Then the caller
    /// lets the shard go and uses [`Table::update`].
    pub fn get_or_insert(&mut self, key: u64, new: impl FnOnce() -> V) -> Option<&mut V> {
        debug_assert!(self.covers(key), "a key of another shard");
        let t = self.table;
        match self.map.entry(key) {
            Slot::Occupied(e) => Some(e.into_mut()),
            Slot::Vacant(_) if t.presence.is_some() || t.len() >= t.cap => None,
            Slot::Vacant(e) => {
                stripe(&t.count, key).fetch_add(1, Ordering::Relaxed);
                Some(&mut **e.insert(Box::new(new())))
            }
        }
    }
}

impl<V: Entry> Table<V> {
    /// `ttl`: how long after its last event an entry is still needed.
    pub fn new(name: &'static str, keyed_by: KeyedBy, cap: usize, ttl: Millis) -> Self {
        Table {
            name,
            keyed_by,
            shards: (0..SHARDS)
                .map(|_| Shard(RwLock::new(Map::default())))
                .collect(),
            cap: cap.max(1),
            sweeps: Sweeper::new(ttl),
            evicted_cap: AtomicU64::new(0),
            count: Default::default(),
            presence: None,
        }
    }

    fn write(&self, key: u64) -> RwLockWriteGuard<'_, Map<V>> {
        unpoisoned(self.shards[shard_of(key)].0.write())
    }

    fn read(&self, key: u64) -> std::sync::RwLockReadGuard<'_, Map<V>> {
        unpoisoned(self.shards[shard_of(key)].0.read())
    }

    /// Keeps the entries `keep` accepts, one shard locked at a time;
    /// counts what it removes.
    fn retain_in(&self, shards: Range<usize>, mut keep: impl FnMut(u64, &mut V) -> bool) -> u64 {
        self.shards[shards]
            .iter()
            .map(|shard| {
                let mut m = unpoisoned(shard.0.write());
                self.retain(&mut m, &mut keep)
            })
            .sum()
    }

    /// Keeps the entries of one locked shard that `keep` accepts; counts
    /// what it removes.
    fn retain(&self, m: &mut Map<V>, keep: &mut impl FnMut(u64, &mut V) -> bool) -> u64 {
        let mut removed = 0;
        m.retain(|k, v| {
            let kept = keep(*k, v);
            if !kept {
                removed += 1;
                stripe(&self.count, *k).fetch_sub(1, Ordering::Relaxed);
            }
            kept
        });
        removed
    }

    /// A table expected to hold few of the keys it is asked about (256 KB
    /// of bitmap in front of it; see `Presence`).
    pub fn sparse(name: &'static str, keyed_by: KeyedBy, cap: usize, ttl: Millis) -> Self {
        Table {
            presence: Some(Presence::new()),
            ..Self::new(name, keyed_by, cap, ttl)
        }
    }

    fn absent(&self, key: u64) -> bool {
        self.presence.as_ref().is_some_and(|p| !p.may_contain(key))
    }

    /// Grows the presence bitmap if the table, at `len` keys, outgrew it
    /// (see [`Presence::grow`]). Called holding no shard.
    fn grow_presence(&self, len: usize) {
        if let Some(p) = &self.presence {
            p.grow(len, |set| {
                for shard in self.shards.iter() {
                    unpoisoned(shard.0.read()).keys().for_each(|k| set(*k));
                }
            });
        }
    }

    pub fn ttl(&self) -> Millis {
        self.sweeps.ttl()
    }

    /// Runs `f` on the entry of `key`, creating it with `new` first if absent.
    /// The entry's lock is held only while `f` runs; `f` must not touch this
    /// table again.
    pub fn update<R>(&self, key: u64, new: impl FnOnce() -> V, f: impl FnOnce(&mut V) -> R) -> R {
        if !self.absent(key) {
            if let Some(e) = self.write(key).get_mut(&key) {
                return f(&mut **e);
            }
        }
        let len = self.len();
        if len >= self.cap {
            self.evict_for_cap();
        }
        self.grow_presence(len);
        let _insert = self.presence.as_ref().map(|p| p.insert(key));
        let mut m = self.write(key);
        let e = m.entry(key).or_insert_with(|| {
            stripe(&self.count, key).fetch_add(1, Ordering::Relaxed);
            Box::new(new())
        });
        f(&mut **e)
    }

    /// Brings the entries of `keys` into the cache ahead of their events,
    /// and answers how many are there. One lock per shard, the probes back
    /// to back, so that their cache misses can overlap; the events, each
    /// taking its shard's lock (on x86 a locked instruction waits for the
    /// loads before it), pay them one after another. Reorders `keys` by
    /// shard.
    pub fn warm(&self, keys: &mut [u64]) -> usize {
        keys.sort_unstable_by_key(|k| shard_of(*k));
        let mut found = 0;
        for group in keys.chunk_by(|a, b| shard_of(*a) == shard_of(*b)) {
            let m = self.read(group[0]);
            for k in group.iter().filter(|k| !self.absent(**k)) {
                if let Some(v) = m.get(k) {
                    std::hint::black_box(v.touch());
                    found += 1;
                }
            }
        }
        found
    }

    /// For a sparse table, brings the presence bits of `keys` into the
    /// processor's cache ahead of their events (see [`Table::warm`]).
    pub fn warm_presence(&self, keys: &[u64]) {
        if let Some(p) = &self.presence {
            for k in keys {
                std::hint::black_box(p.may_contain(*k));
            }
        }
    }

    /// Sets the entry of `key` (a restore), replacing any.
    pub fn put(&self, key: u64, v: V) {
        let len = self.len();
        if (self.absent(key) || !self.read(key).contains_key(&key)) && len >= self.cap {
            self.evict_for_cap();
        }
        self.grow_presence(len);
        let _insert = self.presence.as_ref().map(|p| p.insert(key));
        if self.write(key).insert(key, Box::new(v)).is_none() {
            stripe(&self.count, key).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `f` on the entry of `key` if there is one.
    pub fn with<R>(&self, key: u64, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        if self.absent(key) {
            return None;
        }
        self.write(key).get_mut(&key).map(|b| f(&mut **b))
    }

    /// Locks the shard of `key` for a run of accesses to its entry: one
    /// lock where each access would take its own (an event's profile is
    /// read and written by several detectors in turn). While a thread holds
    /// it, it must wait for no other shard of this table (see
    /// [`crate::detect::Context`]).
    pub fn hold(&self, key: u64) -> Held<'_, V> {
        Held {
            table: self,
            shard: shard_of(key),
            map: self.write(key),
        }
    }

    /// Removes the entry of `key` and gives it back. Its presence bit may
    /// stay until the next sweep (it only costs a lookup).
    pub fn remove(&self, key: u64) -> Option<V> {
        if self.absent(key) {
            return None;
        }
        let v = *self.write(key).remove(&key)?;
        stripe(&self.count, key).fetch_sub(1, Ordering::Relaxed);
        Some(v)
    }

    /// Entries held (kept beside the map, see `count`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.count
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0usize, usize::wrapping_add)
    }

    /// Removes what is older than `watermark - ttl - slack`, all at once
    /// (the tests' form: the engine sweeps in steps).
    #[cfg(test)]
    pub fn sweep(&self, watermark: Millis, slack: Millis) {
        if self.sweep_begin(watermark, slack) {
            self.sweep_shards(0..SHARDS);
            self.sweep_end();
        }
    }

    /// Begins a sweep of what is older than `watermark - ttl - slack`,
    /// carried out shard by shard with [`Table::sweep_shards`] and closed
    /// with [`Table::sweep_end`] (the engine spreads it over many events,
    /// so that no event waits for a whole table to be visited). False:
    /// nothing can be that old yet, and there is nothing to carry out.
    pub fn sweep_begin(&self, watermark: Millis, slack: Millis) -> bool {
        // The survivors rebuild the presence bitmap (see `Presence`).
        self.sweeps.begin(watermark, slack, || {
            self.presence.as_ref().map(|p| p.begin_rebuild(self.len()))
        })
    }

    /// Sweeps the shards `shards` (of [`SHARDS`]) of the sweep under way.
    /// A shard a judge holds is not waited for: it is swept at the end.
    pub fn sweep_shards(&self, shards: Range<usize>) {
        self.sweeps.shards(shards, |i, run| {
            try_locked(self.shards[i].0.try_write())
                .map(|mut m| self.sweep_shard(run, &mut m))
                .is_some()
        });
    }

    fn sweep_shard(&self, run: &mut SweepRun, m: &mut Map<V>) {
        let (horizon, next) = (run.horizon, run.presence);
        let mut oldest = run.oldest;
        run.removed += self.retain(m, &mut |k, v: &mut V| {
            let keep = !v.prune(horizon);
            if keep {
                oldest = oldest.min(v.last_seen());
                if let (Some(p), Some(next)) = (&self.presence, next) {
                    p.set(next, k);
                }
            }
            keep
        });
        run.oldest = oldest;
    }

    /// Closes the sweep under way.
    pub fn sweep_end(&self) {
        let ended = self.sweeps.end(|i, run| {
            let mut m = unpoisoned(self.shards[i].0.write());
            self.sweep_shard(run, &mut m);
        });
        if let (true, Some(p)) = (ended, &self.presence) {
            p.end_rebuild();
        }
    }

    fn score(&self, v: &V) -> Millis {
        let extra = (v.weight().clamp(1, 4) - 1) as Millis;
        v.last_seen().saturating_add(extra * (self.ttl() / 4))
    }

    fn evict_for_cap(&self) {
        let mut sample: Vec<Millis> = Vec::with_capacity(1024);
        for shard in self.shards.iter() {
            let m = unpoisoned(shard.0.read());
            sample.extend(m.values().take(1024 - sample.len()).map(|v| self.score(v)));
            if sample.len() >= 1024 {
                break;
            }
        }
        if sample.is_empty() {
            return;
        }
        sample.sort_unstable();
        let cutoff = sample[sample.len() / 10];
        let removed = self.retain_in(0..SHARDS, |_, v| self.score(v) > cutoff);
        self.evicted_cap.fetch_add(removed, Ordering::Relaxed);
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            name: self.name,
            keyed_by: self.keyed_by,
            len: self.len(),
            cap: self.cap,
            evicted_expired: self.sweeps.expired(),
            evicted_cap: self.evicted_cap.load(Ordering::Relaxed),
            ttl: self.ttl(),
        }
    }

    /// Removes the entries whose key `drop` picks; returns how many. The
    /// presence bitmap may keep their bits until the next sweep (a bit set
    /// for an absent key only costs a lookup).
    pub fn forget(&self, drop: &dyn Fn(u64) -> bool) -> usize {
        self.retain_in(0..SHARDS, |k, _| !drop(k)) as usize
    }
}

#[cfg(test)]
mod tests;
