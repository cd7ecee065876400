//! A short-lived, write-mostly table: small lists of timed items per key,
//! kept in an append-only log per shard instead of a hash-map entry (and a
//! list) per key.
//!
//! Made for `password_spray`'s successes at sources with no failures yet:
//! almost every successful login writes one, almost none is ever read
//! again, and each lives only for the allowed disorder. As a [`super::Table`]
//! that cost a fresh entry of ~100 bytes in a table of 10⁵–10⁶ keys per
//! login, each a cache miss to create and another to sweep. Here an item is
//! appended to its shard's log (memory written in order), and the per-key
//! index holds only where its newest item is and how many it has: 16 bytes,
//! small enough to stay in cache.
//!
//! **The same lists as a table.** A key's items are chained newest to
//! oldest, and the chain always holds exactly the list that
//! [`remember`]ing each item in turn would have built, in its order: an
//! item that would take a key past `per_key` is folded in the same way
//! (the oldest goes, the newest takes its place), and a sweep keeps the
//! survivors in their order. Taking a key's items gives that list.
//!
//! **Bounds.** At most `cap / SHARDS` keys per shard (a full shard forgets
//! the tenth of its keys with the oldest newest item, as a table forgets
//! its stalest entries), `per_key` items per key. Items taken or forgotten
//! leave a hole in the log until the shard is compacted: by the sweep, or
//! as soon as holes are more than half of a log of some size.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::codec::{Codec, CodecError, Reader};
use super::sweep::{try_locked, unpoisoned, SweepRun, Sweeper};
use super::{shard_of, Items, KeyHasher, KeyedBy, Swept, TableStats, SHARDS};
use crate::time::Millis;

/// What a [`RecentLog`] needs of its items.
pub trait Timed {
    fn ts(&self) -> Millis;
}

/// Adds `item` to `list` kept to `cap` items: when full, the item with the
/// oldest time goes (its place taken by the last), then `item` is appended.
pub fn remember<T: Timed>(list: &mut Items<T>, item: T, cap: usize) {
    if list.len() >= cap {
        if let Some(i) = (0..list.len()).min_by_key(|&i| list[i].ts()) {
            list.swap_remove(i);
        }
    }
    list.push(item);
}

const NONE: u32 = u32::MAX;

/// Compact a log whose holes are more than half of it, once it is this long.
const COMPACT_AT: usize = 1024;

struct Rec<T> {
    /// The key's item before this one in its list, or `NONE`.
    prev: u32,
    /// `None`: a hole (taken, folded out or forgotten).
    item: Option<T>,
}

/// Where a key's newest item is, and how many it has.
#[derive(Clone, Copy)]
struct Head {
    newest: u32,
    len: u32,
}

struct Log<T> {
    /// In order of arrival, and each key's list in its order: a record's
    /// `prev` is always before it (so the log compacts in place).
    recs: Vec<Rec<T>>,
    heads: HashMap<u64, Head, BuildHasherDefault<KeyHasher>>,
    holes: usize,
    /// Where each record went in the last compaction (kept to be reused).
    moved: Vec<u32>,
}

impl<T: Timed> Log<T> {
    /// The record indices of a key's list, oldest first.
    fn chain(&self, head: Head) -> Vec<u32> {
        let mut at = Vec::with_capacity(head.len as usize);
        let mut i = head.newest;
        while i != NONE {
            at.push(i);
            i = self.recs[i as usize].prev;
        }
        at.reverse();
        at
    }

    fn hole(&mut self, i: u32) -> Option<T> {
        let item = self.recs[i as usize].item.take();
        if item.is_some() {
            self.holes += 1;
        }
        item
    }

    /// Appends `item` after `prev` (`NONE`: first of its list).
    fn append(&mut self, prev: u32, item: T) -> u32 {
        self.recs.push(Rec {
            prev,
            item: Some(item),
        });
        (self.recs.len() - 1) as u32
    }

    /// Takes a key's list out of the log.
    fn take(&mut self, key: u64) -> Option<Items<T>> {
        let head = self.heads.remove(&key)?;
        let list = self
            .chain(head)
            .into_iter()
            .filter_map(|i| self.hole(i))
            .collect();
        self.compact_if_holey();
        Some(list)
    }

    /// The newest time of a key's list.
    fn newest(&self, head: &Head) -> Millis {
        walk(&self.recs, head.newest).1
    }

    /// Compacts the log in place, dropping its holes and the items older
    /// than `horizon`, and the keys left with none. Returns the keys
    /// dropped and the oldest newest time among the survivors.
    fn compact(&mut self, horizon: Millis) -> (u64, Millis) {
        let mut moved = std::mem::take(&mut self.moved);
        moved.clear();
        let mut kept = 0;
        for i in 0..self.recs.len() {
            let prev = self.recs[i].prev;
            // A record's predecessor is before it: already moved (or, if
            // dropped, pointing at its own nearest kept predecessor).
            let prev = if prev == NONE {
                NONE
            } else {
                moved[prev as usize]
            };
            let keep = self.recs[i]
                .item
                .as_ref()
                .is_some_and(|x| x.ts() >= horizon);
            if keep {
                self.recs.swap(kept, i);
                self.recs[kept].prev = prev;
                moved.push(kept as u32);
                kept += 1;
            } else {
                moved.push(prev);
            }
        }
        self.recs.truncate(kept);
        self.holes = 0;
        let mut removed = 0;
        let mut oldest = Millis::MAX;
        let recs = &self.recs;
        self.heads.retain(|_, head| {
            head.newest = moved[head.newest as usize];
            if head.newest == NONE {
                removed += 1;
                return false;
            }
            let (len, newest) = walk(recs, head.newest);
            head.len = len;
            oldest = oldest.min(newest);
            true
        });
        self.moved = moved;
        (removed, oldest)
    }

    fn compact_if_holey(&mut self) {
        if self.recs.len() >= COMPACT_AT && self.holes * 2 > self.recs.len() {
            self.compact(Millis::MIN);
        }
    }
}

/// The length and the newest time of the list whose newest record is at
/// `newest`.
fn walk<T: Timed>(recs: &[Rec<T>], newest: u32) -> (u32, Millis) {
    let (mut len, mut ts, mut i) = (0, Millis::MIN, newest);
    while i != NONE {
        let r = &recs[i as usize];
        ts = ts.max(r.item.as_ref().map_or(Millis::MIN, Timed::ts));
        len += 1;
        i = r.prev;
    }
    (len, ts)
}

/// One shard: its own lock and log, on its own cache lines.
#[repr(align(128))]
struct Shard<T>(Mutex<Log<T>>);

/// Small lists of timed items per 64-bit key, in an append-only log per
/// shard (see the module documentation).
pub struct RecentLog<T> {
    name: &'static str,
    keyed_by: KeyedBy,
    shards: Box<[Shard<T>]>,
    cap: usize,
    per_shard: usize,
    per_key: usize,
    sweeps: Sweeper,
    evicted_cap: AtomicU64,
}

impl<T: Timed + Send> RecentLog<T> {
    /// `cap` keys in all, `per_key` items each, kept `ttl` after their
    /// newest item (plus the sweep's slack).
    pub fn new(
        name: &'static str,
        keyed_by: KeyedBy,
        cap: usize,
        per_key: usize,
        ttl: Millis,
    ) -> Self {
        RecentLog {
            name,
            keyed_by,
            shards: (0..SHARDS)
                .map(|_| {
                    Shard(Mutex::new(Log {
                        recs: Vec::new(),
                        heads: HashMap::default(),
                        holes: 0,
                        moved: Vec::new(),
                    }))
                })
                .collect(),
            cap: cap.max(1),
            per_shard: cap.max(1).div_ceil(SHARDS),
            per_key: per_key.max(1),
            sweeps: Sweeper::new(ttl),
            evicted_cap: AtomicU64::new(0),
        }
    }

    fn lock(&self, key: u64) -> MutexGuard<'_, Log<T>> {
        unpoisoned(self.shards[shard_of(key)].0.lock())
    }

    /// Adds `item` to `key`'s list, as [`remember`] with `per_key` would.
    pub fn push(&self, key: u64, item: T) {
        let mut log = self.lock(key);
        let head = match log.heads.get(&key).copied() {
            Some(h) if (h.len as usize) < self.per_key => Head {
                newest: log.append(h.newest, item),
                len: h.len + 1,
            },
            Some(h) => {
                // Full: fold the new item in exactly as `remember` would,
                // and write the list again at the end, in its new order.
                let mut order = log.chain(h);
                let ts = |i: &u32| {
                    log.recs[*i as usize]
                        .item
                        .as_ref()
                        .map_or(Millis::MIN, Timed::ts)
                };
                if let Some(i) = (0..order.len()).min_by_key(|&i| ts(&order[i])) {
                    let gone = order.swap_remove(i);
                    log.hole(gone);
                }
                let mut prev = NONE;
                for i in order {
                    if let Some(x) = log.hole(i) {
                        prev = log.append(prev, x);
                    }
                }
                Head {
                    newest: log.append(prev, item),
                    len: h.len,
                }
            }
            None => {
                if log.heads.len() >= self.per_shard {
                    self.evict_for_cap(&mut log);
                }
                Head {
                    newest: log.append(NONE, item),
                    len: 1,
                }
            }
        };
        log.heads.insert(key, head);
        log.compact_if_holey();
    }

    /// Takes `key`'s list out, if it has one.
    pub fn take(&self, key: u64) -> Option<Items<T>> {
        self.lock(key).take(key)
    }

    /// Forgets the tenth of a full shard's keys whose newest item is oldest.
    fn evict_for_cap(&self, log: &mut Log<T>) {
        let mut keys: Vec<(Millis, u64)> =
            log.heads.iter().map(|(k, h)| (log.newest(h), *k)).collect();
        if keys.is_empty() {
            return;
        }
        keys.sort_unstable();
        let cutoff = keys[keys.len() / 10].0;
        let mut dropped = 0;
        for (_, k) in keys.into_iter().take_while(|(t, _)| *t <= cutoff) {
            log.take(k);
            dropped += 1;
        }
        self.evicted_cap.fetch_add(dropped, Ordering::Relaxed);
    }

    /// Keys held.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| unpoisoned(s.0.lock()).heads.len())
            .sum()
    }

    fn sweep_shard(&self, run: &mut SweepRun, log: &mut Log<T>) {
        let (removed, oldest) = log.compact(run.horizon);
        run.removed += removed;
        run.oldest = run.oldest.min(oldest);
    }
}

impl<T: Timed + Codec + Send> Swept for RecentLog<T> {
    fn sweep_begin(&self, watermark: Millis, slack: Millis) -> bool {
        self.sweeps.begin(watermark, slack, || None)
    }

    fn sweep_shards(&self, shards: Range<usize>) {
        self.sweeps.shards(shards, |i, run| {
            try_locked(self.shards[i].0.try_lock())
                .map(|mut log| self.sweep_shard(run, &mut log))
                .is_some()
        });
    }

    fn sweep_end(&self) {
        self.sweeps.end(|i, run| {
            let mut log = unpoisoned(self.shards[i].0.lock());
            self.sweep_shard(run, &mut log);
        });
    }

    /// A log lives for the allowed disorder only; left to the accounts'
    /// sweep, at a million accounts it held an hour of logins, and every
    /// push wrote to memory last touched that long ago.
    fn short_lived(&self) -> bool {
        true
    }

    /// The records in the logs, holes included (a sweep visits them all).
    fn items(&self) -> usize {
        self.shards
            .iter()
            .map(|s| unpoisoned(s.0.lock()).recs.len())
            .sum()
    }

    fn stats(&self) -> TableStats {
        TableStats {
            name: self.name,
            keyed_by: self.keyed_by,
            len: self.len(),
            cap: self.cap,
            evicted_expired: self.sweeps.expired(),
            evicted_cap: self.evicted_cap.load(Ordering::Relaxed),
            ttl: self.sweeps.ttl(),
        }
    }

    fn forget(&self, drop: &dyn Fn(u64) -> bool) -> usize {
        let mut n = 0;
        for shard in self.shards.iter() {
            let mut log = unpoisoned(shard.0.lock());
            let keys: Vec<u64> = log.heads.keys().copied().filter(|k| drop(*k)).collect();
            for k in keys {
                log.take(k);
                n += 1;
            }
        }
        n
    }

    fn remove(&self, key: u64) -> bool {
        self.take(key).is_some()
    }

    fn save(&self, key: u64, out: &mut Vec<u8>) -> bool {
        let log = self.lock(key);
        let Some(head) = log.heads.get(&key).copied() else {
            return false;
        };
        // The list as a table holds it: the same bytes as a `Table` of
        // `Items<T>` wrote (snapshots of either read back into both).
        let order = log.chain(head);
        let n = order.len() as u64;
        super::codec::put_varint(out, n);
        for i in order {
            if let Some(item) = &log.recs[i as usize].item {
                item.put(out);
            }
        }
        true
    }

    fn load(&self, key: u64, r: &mut Reader<'_>) -> Result<(), CodecError> {
        let items = Items::<T>::get(r)?;
        self.take(key);
        for item in items {
            self.push(key, item);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct It {
        ts: Millis,
        n: u32,
    }
    #[allow(non_snake_case)]
    fn It(ts: Millis, n: u32) -> It {
        It { ts, n }
    }
    impl Timed for It {
        fn ts(&self) -> Millis {
            self.ts
        }
    }
    crate::codec_fields!(It { ts, n });

    /// A tiny deterministic generator (no dependency for a test).
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn lists_are_exactly_what_remembering_each_item_builds() {
        // Against the obvious model: a map of lists built with `remember`,
        // pruned by the same sweeps (skipped, as a table's, while nothing
        // can be old enough), taken the same way.
        let per_key = 4;
        let log: RecentLog<It> = RecentLog::new("t", KeyedBy::Source, 1_000_000, per_key, 0);
        let mut model: HashMap<u64, Items<It>> = HashMap::new();
        let mut oldest = Millis::MIN;
        let mut seed = 0x2545_f491_4f6c_dd1d;
        let keys: Vec<u64> = (0..40u64)
            .map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        for step in 0..20_000u32 {
            let key = keys[(rng(&mut seed) % keys.len() as u64) as usize];
            // Times out of order, as lanes deliver them.
            let ts = Millis::from(step) * 10 - (rng(&mut seed) % 500) as Millis;
            match rng(&mut seed) % 10 {
                0 => assert_eq!(log.take(key), model.remove(&key), "take at step {step}"),
                _ => {
                    log.push(key, It(ts, step));
                    remember(model.entry(key).or_default(), It(ts, step), per_key);
                }
            }
            if step % 997 == 0 {
                let horizon = Millis::from(step) * 10 - 300;
                assert_eq!(log.sweep_begin(horizon, 0), horizon > oldest);
                log.sweep_shards(0..SHARDS);
                log.sweep_end();
                if horizon > oldest {
                    model.retain(|_, l| {
                        l.retain(|i| i.ts >= horizon);
                        !l.is_empty()
                    });
                    oldest = model
                        .values()
                        .map(|l| l.iter().map(|i| i.ts).max().unwrap())
                        .min()
                        .unwrap_or(horizon);
                }
            }
        }
        assert_eq!(log.len(), model.len());
        for k in keys {
            let mut saved = Vec::new();
            assert_eq!(log.save(k, &mut saved), model.contains_key(&k));
            assert_eq!(log.take(k), model.remove(&k));
        }
    }

    #[test]
    fn saved_lists_read_back_as_a_table_of_lists_writes_them() {
        let log: RecentLog<It> = RecentLog::new("t", KeyedBy::Source, 100, 8, 0);
        for i in 0..5u32 {
            log.push(7, It(Millis::from(10 - i), i));
        }
        let mut saved = Vec::new();
        assert!(log.save(7, &mut saved));
        let list: Items<It> = (0..5u32).map(|i| It(Millis::from(10 - i), i)).collect();
        let mut table_form = Vec::new();
        list.put(&mut table_form);
        assert_eq!(saved, table_form);
        let back: RecentLog<It> = RecentLog::new("t", KeyedBy::Source, 100, 8, 0);
        back.load(7, &mut Reader::new(&saved)).unwrap();
        assert_eq!(back.take(7), Some(list));
        assert!(!back.save(7, &mut Vec::new()));
    }

    #[test]
    fn a_flood_of_keys_stays_within_the_cap_and_forgets_the_stalest() {
        let log: RecentLog<It> = RecentLog::new("t", KeyedBy::Source, 64 * 10, 4, 0);
        for k in 0..10_000u64 {
            log.push(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), It(k as Millis, 0));
        }
        assert!(log.len() <= 64 * 10, "{}", log.len());
        assert!(log.stats().evicted_cap > 0);
        let newest = 9_999u64.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        assert!(log.take(newest).is_some(), "the newest key stays");
        let first = 0u64;
        assert!(log.take(first).is_none(), "the stalest went first");
    }

    #[test]
    fn taking_and_forgetting_leave_no_unbounded_holes() {
        let log: RecentLog<It> = RecentLog::new("t", KeyedBy::Source, 1_000_000, 4, 0);
        // Every key lands in shard 0: the worst case for one log.
        let key = |k: u64| k;
        for k in 0..100_000u64 {
            log.push(key(k), It(0, 0));
            log.take(key(k));
        }
        let shard = unpoisoned(log.shards[0].0.lock());
        assert!(shard.recs.len() <= 2 * COMPACT_AT, "{}", shard.recs.len());
        drop(shard);
        for k in 0..100u64 {
            log.push(key(k), It(0, 0));
        }
        assert_eq!(log.forget(&|k| k % 2 == 0), 50);
        assert_eq!(log.len(), 50);
    }
}
