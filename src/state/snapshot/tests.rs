//! The snapshot model's round trips, cuts and refusals.

use super::*;
use crate::state::{Entry, KeyedBy, Table};

/// A number with a time.
#[derive(Debug, PartialEq)]
struct N {
    ts: i64,
    n: u64,
}
#[allow(non_snake_case)]
fn N(ts: i64, n: u64) -> N {
    N { ts, n }
}
impl Entry for N {
    fn last_seen(&self) -> i64 {
        self.ts
    }
    fn prune(&mut self, horizon: i64) -> bool {
        self.ts < horizon
    }
}
crate::codec_fields!(N { ts, n });

fn two() -> [Table<N>; 2] {
    [
        Table::new("a", KeyedBy::Account, 1 << 20, 1000),
        Table::sparse("b", KeyedBy::Account, 1 << 20, 1000),
    ]
}

fn found(chunks: Vec<Vec<u8>>) -> Found {
    let mut f = Found::default();
    for (i, c) in chunks.into_iter().enumerate() {
        f.head = Some(Header::read(&mut Reader::new(&c)).unwrap());
        f.chunks.insert(i as u32, (format!("k{i}"), c));
    }
    f
}

fn load_all(into: &[&dyn Swept], f: &Found) {
    for (_, v) in f.chunks.values() {
        let mut r = Reader::new(v);
        let h = Header::read(&mut r).unwrap();
        load_chunk(into, &h, &mut r).unwrap();
    }
}

fn same(a: &[Table<N>; 2], b: &[Table<N>; 2], keys: impl Iterator<Item = u64> + Clone) {
    for t in 0..2 {
        assert_eq!(a[t].len(), b[t].len(), "table {t}");
        for k in keys.clone() {
            assert_eq!(
                a[t].with(k, |n| (n.ts, n.n)),
                b[t].with(k, |n| (n.ts, n.n)),
                "table {t} key {k}"
            );
        }
    }
}

#[test]
fn a_base_and_a_delta_give_back_the_state() {
    let src = two();
    for k in 0..50_000u64 {
        src[0].put(k, N(k as i64, k * 3));
        if k % 7 == 0 {
            src[1].put(k, N(5, k));
        }
    }
    let tables: Vec<&dyn Swept> = src.iter().map(|t| t as &dyn Swept).collect();
    let mut w = Writer::new(&tables, true, 1, 1, 1000, 5);
    for k in 0..50_001u64 {
        w.account(k);
    }
    assert_eq!(w.accounts, 50_000, "a base skips accounts nothing holds");
    let base = w.finish();
    assert!(base.len() > 1, "cut into chunks");
    assert!(base.iter().all(|c| c.len() <= CHUNK_BYTES));
    // Changes: key 7 gone, key 8 changed, key 99_999 new.
    src[0].remove(7);
    src[1].remove(7);
    src[0].put(8, N(9, 1));
    src[1].put(99_999, N(9, 2));
    let mut d = Writer::new(&tables, false, 2, 1, 2000, 6);
    for k in [7, 8, 99_999] {
        d.account(k);
    }
    let delta = d.finish();

    let dst = two();
    let into: Vec<&dyn Swept> = dst.iter().map(|t| t as &dyn Swept).collect();
    let mut all = BTreeMap::new();
    all.insert(1, found(base));
    all.insert(2, found(delta));
    assert!(all[&1].complete() && all[&2].complete());
    assert_eq!(choose(&all, 2000), vec![1, 2]);
    assert_eq!(choose(&all, 1999), vec![1], "a delta past the commit waits");
    assert_eq!(choose(&all, 999), Vec::<u64>::new());
    for s in choose(&all, 2000) {
        load_all(&into, &all[&s]);
    }
    same(&src, &dst, (0..50_001).chain([99_999]));
}

#[test]
fn a_base_names_what_it_supersedes_in_its_first_chunk_only() {
    let src = two();
    for k in 0..50_000u64 {
        src[0].put(k, N(k as i64, k));
    }
    let tables: Vec<&dyn Swept> = src.iter().map(|t| t as &dyn Swept).collect();
    for (accounts, chunks) in [(50_000u64, 2..100), (10, 1..2)] {
        let mut w = Writer::new(&tables, true, 9, 9, 100, 5);
        w.supersedes(vec![(3, 4), (7, 1)]);
        for k in 0..accounts {
            w.account(k);
        }
        let out = w.finish();
        assert!(chunks.contains(&out.len()), "{}", out.len());
        let heads: Vec<Header> = out
            .iter()
            .map(|c| Header::read(&mut Reader::new(c)).unwrap())
            .collect();
        assert_eq!(heads[0].supersedes, vec![(3, 4), (7, 1)]);
        assert!(heads[1..].iter().all(|h| h.supersedes.is_empty()));
        assert_eq!(heads.last().unwrap().chunks, Some(out.len() as u32));
        let dst = two();
        let into: Vec<&dyn Swept> = dst.iter().map(|t| t as &dyn Swept).collect();
        let f = found(out);
        assert!(f.complete());
        load_all(&into, &f);
        assert_eq!(dst[0].len(), accounts as usize);
    }
}

#[test]
fn a_table_the_snapshot_lacks_starts_empty_and_one_it_has_extra_is_skipped() {
    let src = two();
    src[0].put(1, N(1, 1));
    src[1].put(1, N(1, 2));
    let only_b: Vec<&dyn Swept> = vec![&src[1]];
    let mut w = Writer::new(&only_b, true, 1, 1, 0, 0);
    w.account(1);
    let c = w.finish().remove(0);
    let dst = [Table::<N>::new("a", KeyedBy::Account, 10, 1000)];
    let into: Vec<&dyn Swept> = vec![&dst[0]];
    let mut r = Reader::new(&c);
    let h = Header::read(&mut r).unwrap();
    assert_eq!(load_chunk(&into, &h, &mut r).unwrap(), 1);
    assert_eq!(dst[0].len(), 0);
}

#[test]
fn a_checkpoint_cut_short_is_not_used() {
    let src = two();
    for k in 0..200_000u64 {
        src[0].put(k, N(1, k));
    }
    let tables: Vec<&dyn Swept> = src.iter().map(|t| t as &dyn Swept).collect();
    let mut w = Writer::new(&tables, true, 3, 3, 10, 0);
    for k in 0..200_000u64 {
        w.account(k);
    }
    let mut chunks = w.finish();
    assert!(chunks.len() > 1);
    let mut all = BTreeMap::new();
    let last = chunks.pop().unwrap();
    all.insert(3, found(chunks.clone()));
    assert!(!all[&3].complete(), "the last chunk is missing");
    assert!(choose(&all, 100).is_empty());
    chunks.push(last);
    chunks.remove(0);
    let mut f = found(chunks);
    f.chunks = f
        .chunks
        .into_values()
        .enumerate()
        .map(|(i, c)| (i as u32 + 1, c))
        .collect();
    all.insert(3, f);
    assert!(!all[&3].complete(), "the first chunk is missing");
}

#[test]
fn a_corrupt_chunk_is_an_error_not_a_panic() {
    let src = two();
    for k in 0..100u64 {
        src[0].put(k, N(1, k));
    }
    let tables: Vec<&dyn Swept> = src.iter().map(|t| t as &dyn Swept).collect();
    let mut w = Writer::new(&tables, true, 1, 1, 0, 0);
    for k in 0..100u64 {
        w.account(k);
    }
    let c = w.finish().remove(0);
    let dst = two();
    let into: Vec<&dyn Swept> = dst.iter().map(|t| t as &dyn Swept).collect();
    let head_len = {
        let mut r = Reader::new(&c);
        Header::read(&mut r).unwrap();
        c.len() - r.remaining()
    };
    for cut in head_len..c.len() {
        let mut r = Reader::new(&c[..cut]);
        let h = Header::read(&mut r).unwrap();
        // Cut anywhere in the entries: an error or fewer accounts, never a panic.
        let _ = load_chunk(&into, &h, &mut r);
    }
    let mut bad = c.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let mut r = Reader::new(&bad);
    let h = Header::read(&mut r).unwrap();
    let _ = load_chunk(&into, &h, &mut r);
}

#[test]
fn another_format_is_refused_plainly() {
    let src = two();
    let tables: Vec<&dyn Swept> = src.iter().map(|t| t as &dyn Swept).collect();
    let mut c = Writer::new(&tables, true, 1, 1, 0, 0).finish().remove(0);
    c[4] = 9; // the format varint
    match Header::read(&mut Reader::new(&c)) {
        Err(e @ SnapshotError::Format { found: 9 }) => {
            assert!(e.to_string().contains("format 9"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Header::read(&mut Reader::new(b"{\"json\":1}")),
        Err(SnapshotError::NotOurs)
    ));
}

#[test]
fn keys_name_their_partition() {
    let k = chunk_key("mail/events", 3, 17, 2);
    assert_eq!(parse_key(&k), Some(("mail/events", 3, 17, 2)));
    assert_eq!(parse_key("junk"), None);
}
