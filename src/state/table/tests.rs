//! The bounded table's unit tests.
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
