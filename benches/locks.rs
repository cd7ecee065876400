//! What a lock per lookup costs in a table far larger than the cache:
//! `state::SHARDS` `HashMap` shards, keys already hashes, values of a
//! profile's size in the slots (the tables' layout until they boxed their
//! entries, BENCHMARKS.md issue 18, eleventh look), looked up at random keys with no
//! lock, a read lock, or a write lock per lookup (as the tables take), and
//! with a `Mutex` per shard. Then what one shard map's doubling holds its
//! shard for, with 16 and with 64 shards: the fewer the shards, the more
//! entries one doubling moves; and with the entries boxed, as the tables
//! keep them, so that a doubling moves 16-byte slots. Prints tables;
//! asserts nothing.
//!
//!     cargo bench --bench locks                     # 1,000,000 keys
//!     CREDWATCH_BENCH_TABLE_KEYS=200000 cargo bench --bench locks
//!
//! On x86 a locked instruction waits for the loads before it, so a lock per
//! lookup keeps the lookups' cache misses from overlapping.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A profile entry's size.
type Value = [u64; 19];
type Map = HashMap<u64, Value, BuildHasherDefault<KeyHasher>>;

#[repr(align(128))]
struct Locked<T>(T);

fn shard_of(k: u64) -> usize {
    credwatch::state::shard_of(k)
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Nanoseconds per lookup of every key of `q` through `get`.
fn time(q: &[u64], get: impl Fn(u64) -> u64) -> f64 {
    let start = Instant::now();
    let mut sum = 0u64;
    for &k in q {
        sum = sum.wrapping_add(get(k));
    }
    black_box(sum);
    start.elapsed().as_nanos() as f64 / q.len() as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there are no tests here.
    }
    let n = credwatch_testkit::env_usize("CREDWATCH_BENCH_TABLE_KEYS", 1_000_000) as u64;
    let shards = credwatch::state::SHARDS;
    let rw: Vec<Locked<RwLock<Map>>> = (0..shards)
        .map(|_| Locked(RwLock::new(Map::default())))
        .collect();
    for i in 0..n {
        let k = mix(i);
        let mut m = rw[shard_of(k)].0.write().expect("unpoisoned");
        m.insert(k, [i; 19]);
    }
    let mutexes: Vec<Locked<Mutex<Map>>> = rw
        .iter()
        .map(|s| Locked(Mutex::new(s.0.read().expect("unpoisoned").clone())))
        .collect();
    let q: Vec<u64> = (0..4_000_000u64)
        .map(|i| mix(mix(i ^ 0x5555) % n))
        .collect();
    let value = |v: Option<&Value>| v.map_or(0, |v| v[0]);

    println!("lookups of 4,000,000 random keys in {shards} maps holding {n} entries of 152 bytes, ns per lookup");
    println!();
    println!("| round | no lock (every read guard held) | a read lock per lookup | a write lock per lookup | a `Mutex` per shard |");
    println!("|---|---|---|---|---|");
    for round in 1..=3 {
        let guards: Vec<_> = rw.iter().map(|s| s.0.read().expect("unpoisoned")).collect();
        let none = time(&q, |k| value(guards[shard_of(k)].get(&k)));
        drop(guards);
        let read = time(&q, |k| {
            value(rw[shard_of(k)].0.read().expect("unpoisoned").get(&k))
        });
        let write = time(&q, |k| {
            value(rw[shard_of(k)].0.write().expect("unpoisoned").get(&k))
        });
        let mutex = time(&q, |k| {
            value(mutexes[shard_of(k)].0.lock().expect("unpoisoned").get(&k))
        });
        println!("| {round} | {none:.0} | {read:.0} | {write:.0} | {mutex:.0} |");
    }
    drop((rw, mutexes, q));
    doublings(n);
}

/// The insert that doubles one shard map, timed for the map that `n`
/// entries spread over 16 and over 64 shards would next double from, with
/// the entries in the map's slots and (as the tables keep them) boxed.
fn doublings(n: u64) {
    println!();
    println!(
        "one shard map doubling, for {n} entries in all: the insert that doubles it, ms (5 rounds)"
    );
    println!();
    println!("| shards | entries | entries in the map before | mean | worst |");
    println!("|---|---|---|---|---|");
    for shards in [16u64, 64] {
        let (mean, worst, full) = doubling(n, shards, |i| [i; 19]);
        println!("| {shards} | in the slots | {full} | {mean:.2} | {worst:.2} |");
    }
    let (mean, worst, full) = doubling(n, 16, |i| Box::new([i; 19]));
    println!("| 16 | boxed | {full} | {mean:.2} | {worst:.2} |");
}

/// Mean and worst milliseconds of the doubling insert, and the entries
/// before it, for a map of values `value(i)`.
fn doubling<V>(n: u64, shards: u64, value: impl Fn(u64) -> V) -> (f64, f64, usize) {
    // The bucket count the map has (a power of two, at most 7/8 full)
    // and the entry count at which it next doubles.
    let buckets = (n.div_ceil(shards) * 8).div_ceil(7).next_power_of_two();
    let full = (buckets / 8 * 7) as usize;
    let (mut sum, mut worst) = (0.0f64, 0.0f64);
    for round in 0..5u64 {
        let mut m: HashMap<u64, V, BuildHasherDefault<KeyHasher>> =
            HashMap::with_capacity_and_hasher(full, Default::default());
        for i in 0..full as u64 {
            m.insert(mix(i ^ (round << 40)), value(i));
        }
        let before = m.capacity();
        let start = Instant::now();
        m.insert(mix(u64::MAX - round), value(0));
        let ms = start.elapsed().as_secs_f64() * 1e3;
        assert!(m.capacity() > before, "the insert doubled the map");
        black_box(&m);
        sum += ms;
        worst = worst.max(ms);
    }
    (sum / 5.0, worst, full)
}
