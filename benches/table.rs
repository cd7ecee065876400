//! A state table's shard maps as they grow to a provider's size: the
//! linear-hashing map the tables use (`credwatch::state::linear`) beside
//! `HashMap` with the same key hasher, on the same keys in the same order.
//! Prints a table; asserts nothing.
//!
//!     cargo bench --bench table                       # 2,000,000 keys
//!     CREDWATCH_BENCH_TABLE_KEYS=1000000 cargo bench --bench table
//!
//! The keys are spread over 64 maps, as a table spreads them over its 64
//! shards, and each value is 152 bytes, the size of an account's profile.
//! Measured per map kind: the time per insert, the longest single insert
//! (the pause a judge thread holding that shard's lock would cause), the
//! heap bytes per entry at half and at all of the keys, and the time per
//! lookup of a present key once all are in.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use credwatch::demo::sample::Rng;
use credwatch::state::linear::LinearMap;
use credwatch::state::KeyHasher;

/// Counts live heap bytes on top of mimalloc (the allocator the binary uses).
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const SHARDS: usize = 64;

/// A profile-sized value.
#[derive(Clone, Copy)]
struct Value([u64; 19]);

/// What the benchmark needs of a map.
trait Map: Default {
    fn upsert(&mut self, key: u64, v: Value) -> u64;
    fn lookup(&self, key: u64) -> Option<u64>;
}

impl Map for LinearMap<Value> {
    fn upsert(&mut self, key: u64, v: Value) -> u64 {
        self.get_or_insert_with(key, || v).0[0]
    }
    fn lookup(&self, key: u64) -> Option<u64> {
        self.get(key).map(|v| v.0[1])
    }
}

impl Map for HashMap<u64, Value, BuildHasherDefault<KeyHasher>> {
    fn upsert(&mut self, key: u64, v: Value) -> u64 {
        self.entry(key).or_insert(v).0[0]
    }
    fn lookup(&self, key: u64) -> Option<u64> {
        self.get(&key).map(|v| v.0[1])
    }
}

struct Row {
    name: &'static str,
    insert_ns: f64,
    max_pause_us: f64,
    pauses_over_1ms: usize,
    bytes_half: f64,
    bytes_all: f64,
    lookup_ns: f64,
}

fn shard(key: u64) -> usize {
    ((key << 7) >> 58) as usize
}

fn run<M: Map>(name: &'static str, keys: &[u64]) -> Row {
    let base = LIVE.load(Ordering::Relaxed);
    let mut maps: Vec<M> = (0..SHARDS).map(|_| M::default()).collect();
    let (mut max, mut over, mut bytes_half, mut sink) = (0f64, 0usize, 0f64, 0u64);
    let start = Instant::now();
    for (i, &k) in keys.iter().enumerate() {
        let t = Instant::now();
        sink ^= maps[shard(k)].upsert(k, Value([k; 19]));
        let us = t.elapsed().as_secs_f64() * 1e6;
        max = max.max(us);
        over += usize::from(us > 1000.0);
        if i + 1 == keys.len() / 2 {
            bytes_half = (LIVE.load(Ordering::Relaxed) - base) as f64 / (i + 1) as f64;
        }
    }
    let insert_ns = start.elapsed().as_secs_f64() * 1e9 / keys.len() as f64;
    let bytes_all = (LIVE.load(Ordering::Relaxed) - base) as f64 / keys.len() as f64;
    // Lookups in an order unrelated to the inserts'.
    let mut rng = Rng::new(99);
    let probes: Vec<u64> = (0..keys.len())
        .map(|_| keys[rng.below(keys.len() as u64) as usize])
        .collect();
    let start = Instant::now();
    for &k in &probes {
        sink ^= maps[shard(k)].lookup(k).expect("present");
    }
    let lookup_ns = start.elapsed().as_secs_f64() * 1e9 / probes.len() as f64;
    std::hint::black_box(sink);
    Row {
        name,
        insert_ns,
        max_pause_us: max,
        pauses_over_1ms: over,
        bytes_half,
        bytes_all,
        lookup_ns,
    }
}

fn main() {
    let n: usize = std::env::var("CREDWATCH_BENCH_TABLE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let mut rng = Rng::new(7);
    let keys: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
    println!(
        "State table shard maps growing to {n} keys over {SHARDS} maps, {}-byte values (median of 3 rounds by insert time)",
        std::mem::size_of::<Value>()
    );
    println!();
    println!("| map | ns per insert | longest insert µs | inserts over 1 ms | heap bytes per entry at {} keys | at {n} keys | ns per lookup |", n / 2);
    println!("|---|---|---|---|---|---|---|");
    // Rounds alternate the two, so that a noisy neighbour slows both alike.
    let mut linear = Vec::new();
    let mut hash = Vec::new();
    for _ in 0..3 {
        linear.push(run::<LinearMap<Value>>("linear hashing (credwatch)", &keys));
        hash.push(run::<HashMap<u64, Value, BuildHasherDefault<KeyHasher>>>(
            "HashMap, same hasher",
            &keys,
        ));
    }
    for mut rows in [linear, hash] {
        rows.sort_by(|a, b| a.insert_ns.total_cmp(&b.insert_ns));
        let r = &rows[1];
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.0} |",
            r.name,
            r.insert_ns,
            r.max_pause_us,
            r.pauses_over_1ms,
            r.bytes_half,
            r.bytes_all,
            r.lookup_ns
        );
    }
}
