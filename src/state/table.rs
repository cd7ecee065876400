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

type Map<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

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
        self.map.get_mut(&key)
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
                Some(e.insert(new()))
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
                return f(e);
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
            new()
        });
        f(e)
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
        if self.write(key).insert(key, v).is_none() {
            stripe(&self.count, key).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `f` on the entry of `key` if there is one.
    pub fn with<R>(&self, key: u64, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        if self.absent(key) {
            return None;
        }
        self.write(key).get_mut(&key).map(f)
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
        let v = self.write(key).remove(&key)?;
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
mod tests {
    use super::*;
    use crate::state::presence::{presence_bits, MIN_BITS};
    use crate::state::{insert_sorted, prune_sorted, Items};

    struct E(Items<Millis>);
    impl Codec for E {
        fn put(&self, w: &mut Vec<u8>) {
            self.0.put(w)
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            Ok(E(Items::get(r)?))
        }
    }
    impl Entry for E {
        fn last_seen(&self) -> Millis {
            self.0.last().copied().unwrap_or(0)
        }
        fn prune(&mut self, horizon: Millis) -> bool {
            prune_sorted(&mut self.0, horizon, |t| *t);
            self.0.is_empty()
        }
    }

    #[test]
    fn sweep_evicts_by_event_time() {
        let t: Table<E> = Table::new("t", KeyedBy::Account, 100, 1000);
        t.update(1, || E(Items::new()), |e| e.0.push(100));
        t.update(2, || E(Items::new()), |e| e.0.push(5000));
        t.sweep(5500, 0);
        assert_eq!(t.len(), 1);
        assert!(t.with(2, |_| ()).is_some());
        assert_eq!(t.stats().evicted_expired, 1);
    }

    #[test]
    fn warming_finds_what_is_held_and_changes_nothing() {
        for t in [
            Table::new("t", KeyedBy::Account, 10_000, 1000),
            Table::sparse("s", KeyedBy::Account, 10_000, 1000),
        ] {
            let key = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for i in 0..500 {
                t.update(key(i), || E(Items::new()), |e| e.0.push(i as Millis));
            }
            // Held and not held, over every shard, one twice.
            let mut keys: Vec<u64> = (250..750).map(key).chain([key(3)]).collect();
            assert_eq!(t.warm(&mut keys), 251, "{}", t.name);
            assert!(keys.windows(2).all(|w| shard_of(w[0]) <= shard_of(w[1])));
            t.warm_presence(&keys);
            assert_eq!(t.len(), 500);
            for i in 0..750 {
                let held = t.with(key(i), |e| e.0.to_vec());
                assert_eq!(held, (i < 500).then(|| vec![i as Millis]), "{i}");
            }
        }
    }

    #[test]
    fn cap_evicts_the_stalest_first() {
        let t: Table<E> = Table::new("t", KeyedBy::Account, 100, 1_000_000);
        for k in 0..100u64 {
            t.update(k, || E(Items::new()), |e| e.0.push(k as Millis));
        }
        t.update(1000, || E(Items::new()), |e| e.0.push(10_000));
        assert!(t.len() <= 100);
        assert!(t.stats().evicted_cap >= 10);
        assert!(t.with(1000, |_| ()).is_some(), "the newest survives");
        assert!(t.with(99, |_| ()).is_some(), "recent ones survive");
        assert!(t.with(0, |_| ()).is_none(), "the stalest went first");
    }

    struct W(Millis, usize);
    impl Codec for W {
        fn put(&self, w: &mut Vec<u8>) {
            self.0.put(w);
            self.1.put(w);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            Ok(W(Millis::get(r)?, usize::get(r)?))
        }
    }
    impl Entry for W {
        fn last_seen(&self) -> Millis {
            self.0
        }
        fn prune(&mut self, _: Millis) -> bool {
            false
        }
        fn weight(&self) -> usize {
            self.1
        }
    }

    #[test]
    fn an_entry_with_history_outlives_a_flood_of_one_event_keys() {
        let t: Table<W> = Table::new("t", KeyedBy::Account, 100, 600_000);
        t.update(7, || W(0, 12), |_| ());
        for k in 1000..5000u64 {
            let ts = (k as Millis - 1000) * 50; // 200 s of flood at 20 per second
            t.update(k, || W(ts, 1), |_| ());
        }
        assert!(t.len() <= 100);
        assert!(
            t.with(7, |_| ()).is_some(),
            "the account with history stays"
        );
    }

    #[test]
    fn a_sparse_table_finds_what_it_holds_across_sweeps() {
        let t: Table<E> = Table::sparse("t", KeyedBy::Account, 10_000, 1000);
        for k in 0..2000u64 {
            t.update(k * 7919, || E(Items::new()), |e| e.0.push(k as Millis * 10));
        }
        assert!(t.with(3 * 7919, |_| ()).is_some());
        assert!(t.with(123_456_789, |_| ()).is_none());
        // Sweep away the first half; the rest must still be found.
        t.sweep(10_000 + 1000, 0);
        for k in 0..2000u64 {
            assert_eq!(t.with(k * 7919, |_| ()).is_some(), k >= 1000, "{k}");
        }
        t.update(5, || E(Items::new()), |e| e.0.push(20_000));
        assert!(t.with(5, |_| ()).is_some());
    }

    #[test]
    fn a_sparse_tables_bitmap_grows_with_it_and_never_hides_a_key() {
        let t: Table<E> = Table::sparse("t", KeyedBy::Account, 1_000_000, 1000);
        let mask = |t: &Table<E>| t.presence.as_ref().unwrap().used_bits() - 1;
        assert_eq!(mask(&t) + 1, MIN_BITS, "an empty table's bitmap is small");
        // Two threads insert while the bitmap is rebuilt bigger under them.
        let keys = |from: u64| (from..from + 20_000).map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        std::thread::scope(|s| {
            for from in [0, 20_000] {
                let t = &t;
                s.spawn(move || {
                    for k in keys(from) {
                        t.update(k, || E(Items::new()), |e| e.0.push(1));
                    }
                });
            }
        });
        assert_eq!(t.len(), 40_000);
        assert!(
            mask(&t) + 1 >= presence_bits(20_000),
            "grew: {}",
            mask(&t) + 1
        );
        for k in keys(0).chain(keys(20_000)) {
            assert!(t.with(k, |_| ()).is_some(), "key {k} hidden");
        }
        // Most absent keys are told absent without the map.
        let others = (0..20_000u64).map(|k| k.wrapping_mul(0xd6e8_feb8_6659_fd93) | 1 << 63);
        let absent = others.filter(|k| t.absent(*k)).count();
        assert!(
            absent > 18_000,
            "{absent} of 20000 absent keys skipped the map"
        );
        // A sweep sizes the bitmap it rebuilds to the table as it finds it.
        t.sweep(1_000_000, 0);
        assert_eq!(t.len(), 0);
        t.update(5, || E(Items::new()), |e| e.0.push(3_000_000));
        t.sweep(2_500_000, 0);
        assert!(t.with(5, |_| ()).is_some());
        assert_eq!(mask(&t) + 1, MIN_BITS, "shrunk with the table");
    }

    #[test]
    fn a_sweep_in_steps_waits_for_no_judge_and_misses_no_shard() {
        let t: Table<E> = Table::sparse("t", KeyedBy::Account, 10_000, 1000);
        let keys: Vec<u64> = (0..4000u64)
            .map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        for (i, &k) in keys.iter().enumerate() {
            // Every other key is old enough to go.
            let ts = if i % 2 == 0 { 0 } else { 20_000 };
            t.update(k, || E(Items::new()), |e| e.0.push(ts));
        }
        assert!(t.sweep_begin(20_000, 0));
        // A judge holds one shard while the steps go by: the steps do not
        // wait for it, and the end sweeps it.
        let held = keys[1];
        t.with(held, |_| t.sweep_shards(0..SHARDS));
        t.sweep_end();
        assert_eq!(t.len(), 2000);
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(t.with(k, |_| ()).is_some(), i % 2 == 1, "key {i}");
        }
        assert_eq!(t.stats().evicted_expired, 2000);
    }

    #[test]
    fn a_held_shard_creates_entries_only_under_the_cap() {
        let key = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let new = || E(Items::new());
        let t: Table<E> = Table::new("t", KeyedBy::Account, 2, 1000);
        {
            let mut h = t.hold(key(1));
            assert!(h.covers(key(1)));
            assert!(h.get_mut(key(1)).is_none());
            h.get_or_insert(key(1), new)
                .expect("under the cap")
                .0
                .push(7);
            assert_eq!(h.get_mut(key(1)).map(|e| e.0.len()), Some(1));
        }
        assert_eq!(t.len(), 1, "counted as an insert");
        assert!(t.hold(key(2)).get_or_insert(key(2), new).is_some());
        assert_eq!(t.len(), 2);
        // At the cap: declined (making room visits every shard), nothing
        // changed; an entry already there is still given.
        assert!(t.hold(key(3)).get_or_insert(key(3), new).is_none());
        assert_eq!(t.len(), 2);
        assert!(t.with(key(3), |_| ()).is_none());
        let mut h = t.hold(key(1));
        assert_eq!(h.get_or_insert(key(1), new).map(|e| e.0[0]), Some(7));
        let other = (4..).map(key).find(|k| shard_of(*k) != shard_of(key(1)));
        assert!(!h.covers(other.expect("a key of another shard")));
        drop(h);
        // A sparse table's bitmap may have to grow: declined too.
        let s: Table<E> = Table::sparse("s", KeyedBy::Account, 100, 1000);
        assert!(s.hold(key(1)).get_or_insert(key(1), new).is_none());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn sorted_insert_keeps_order_and_cap() {
        let mut v = Items::new();
        for t in [5, 1, 3, 9, 7] {
            insert_sorted(&mut v, t, 4, |x| *x);
        }
        assert_eq!(&v[..], &[3, 5, 7, 9]);
        prune_sorted(&mut v, 6, |x| *x);
        assert_eq!(&v[..], &[7, 9]);
    }
}
