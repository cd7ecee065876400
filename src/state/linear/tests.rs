use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use super::*;
use crate::demo::sample::Rng;

/// A value that counts how many of its kind are alive, so that a value
/// dropped twice or never shows.
struct Counted {
    n: u64,
    alive: Rc<Cell<i64>>,
    /// Big enough that moves of the wrong bytes would show in `n`.
    _pad: [u64; 5],
}

impl Counted {
    fn new(n: u64, alive: &Rc<Cell<i64>>) -> Counted {
        alive.set(alive.get() + 1);
        Counted {
            n,
            alive: alive.clone(),
            _pad: [n; 5],
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        assert_eq!(self._pad, [self.n; 5], "a value's bytes were torn");
        self.alive.set(self.alive.get() - 1);
    }
}

fn check(map: &LinearMap<Counted>, model: &HashMap<u64, u64>) {
    assert_eq!(map.len(), model.len());
    for (k, n) in model {
        assert_eq!(map.get(*k).map(|c| c.n), Some(*n), "key {k:#x}");
    }
    let mut seen: Vec<(u64, u64)> = map.iter().map(|(k, c)| (k, c.n)).collect();
    seen.sort_unstable();
    let mut want: Vec<(u64, u64)> = model.iter().map(|(k, n)| (*k, *n)).collect();
    want.sort_unstable();
    assert_eq!(seen, want, "iteration gives each entry once");
}

/// Random inserts, replacements, removals and retains against `HashMap`.
/// `spread` maps a random number to a key: uniform, or with few distinct
/// low bits so that buckets overflow.
fn against_model(seed: u64, ops: usize, keys: u64, spread: impl Fn(u64) -> u64) {
    let alive = Rc::new(Cell::new(0));
    let mut rng = Rng::new(seed);
    let mut map = LinearMap::default();
    let mut model = HashMap::new();
    for step in 0..ops {
        let k = spread(rng.below(keys));
        let n = rng.next_u64();
        match rng.below(100) {
            0..=54 => {
                let got = map.get_or_insert_with(k, || Counted::new(n, &alive));
                let want = *model.entry(k).or_insert(n);
                assert_eq!(got.n, want);
                got.n = n ^ 1;
                got._pad = [n ^ 1; 5];
                model.insert(k, n ^ 1);
            }
            55..=69 => {
                let old = map.insert(k, Counted::new(n, &alive)).map(|c| c.n);
                assert_eq!(old, model.insert(k, n));
            }
            70..=89 => {
                assert_eq!(map.remove(k).map(|c| c.n), model.remove(&k));
            }
            90..=91 => {
                let cut = rng.next_u64();
                map.retain(|_, c| c.n < cut);
                model.retain(|_, n| *n < cut);
            }
            _ => {
                assert_eq!(map.get_mut(k).map(|c| c.n), model.get(&k).copied());
                assert_eq!(map.contains_key(k), model.contains_key(&k));
            }
        }
        if step % 997 == 0 {
            check(&map, &model);
        }
        assert_eq!(alive.get(), model.len() as i64, "step {step}");
    }
    check(&map, &model);
    drop(map);
    assert_eq!(alive.get(), 0, "every value dropped once");
}

#[test]
fn behaves_as_a_hash_map_with_uniform_keys() {
    for seed in 0..4 {
        against_model(seed, 40_000, 5_000, |x| {
            x.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        });
    }
}

#[test]
fn behaves_as_a_hash_map_when_buckets_overflow() {
    // Keys that differ only above bit 40 all land in bucket 0 for as long
    // as the map has fewer than 2^40 buckets: one long overflow list.
    against_model(9, 20_000, 300, |x| x << 40);
    // A few low bits: a handful of crowded buckets.
    against_model(10, 20_000, 2_000, |x| (x << 40) | (x & 3));
}

#[test]
fn grows_a_bucket_at_a_time_and_stays_mostly_full() {
    let mut map: LinearMap<u64> = LinearMap::default();
    let mut rng = Rng::new(1);
    let mut worst = 1.0f64;
    for i in 0..200_000u64 {
        let before = map.buckets();
        map.get_or_insert_with(rng.next_u64(), || i);
        assert!(map.buckets() - before <= 1, "one split per insert at most");
        if map.len() > 1000 {
            let fill = map.len() as f64 / (map.buckets() * SLOTS) as f64;
            worst = worst.min(fill);
        }
    }
    assert_eq!(map.len(), 200_000);
    assert!(worst > 0.75, "the slots stay about 80 % used: {worst}");
    let spilled: usize = (0..map.buckets()).map(|i| map.bucket(i).1.more.len()).sum();
    assert!(
        spilled < map.len() / 5,
        "few entries overflow: {spilled} of {}",
        map.len()
    );
}

#[test]
fn addresses_buckets_across_segments() {
    // Bucket after bucket, each segment filled in order.
    let (mut s, mut at) = (0, 0);
    for i in 0..5000usize {
        assert_eq!(locate(i), (s, at), "bucket {i}");
        at += 1;
        if at == segment_len(s) {
            (s, at) = (s + 1, 0);
        }
    }
}
