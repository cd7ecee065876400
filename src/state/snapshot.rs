//! Durable state: what a Kafka partition's accounts are known by, written
//! as checkpoints to a compacted topic and read back when the partition is
//! assigned (the Kafka side is in [`crate::source::kafka::durable`]).
//!
//! ## Model
//!
//! Flink's checkpoints, with Kafka as the store. A **checkpoint** of input
//! partition `p` is taken by the worker that judges `p`, between two of its
//! batches, so it is exactly the state after every message before its
//! `offset` and none after. It is either
//!
//! - a **base**: every account of `p` that any table holds, or
//! - a **delta**: only the accounts whose entries changed since the
//!   previous checkpoint (a hot account costs one write per checkpoint,
//!   however many events it had), each with its whole current entry, or
//!   with nothing (it is gone: swept, unlocked).
//!
//! A new base is taken when the deltas since the last one add up to more
//! bytes than it, so a restore never reads more than about twice a base.
//!
//! A checkpoint is cut into **chunks** (records of at most
//! [`CHUNK_BYTES`]), each keyed `topic/partition/seq/chunk`: every key is
//! written once, so a checkpoint cut short by a crash overwrites nothing;
//! the last chunk says how many there are. Superseded chains are removed
//! with tombstones once the group's committed offset has passed the newer
//! base (until then a restart may still need the older chain).
//!
//! **Restore**: the newest complete base at or before the committed offset,
//! then each complete delta that follows it (by `prev`) at or before the
//! committed offset; then the input from that checkpoint's offset to the
//! committed offset is judged again with its decisions thrown away (they
//! were acted on before the commit), exactly as the old restore did with a
//! day of input.
//!
//! ## Format
//!
//! Every chunk starts with [`FORMAT`]. A chunk of another format is not
//! read: the partition falls back to re-reading its input
//! (`kafka.restore_secs`), and says so. Within a chunk, the tables are
//! named once in a header, and each account's entry in each table is
//! length-prefixed, so a table this build does not have (a detector
//! removed or disabled) is skipped, and one it has that the snapshot lacks
//! starts empty.

use std::collections::BTreeMap;

use super::codec::{put_varint, Codec, CodecError, Reader};
use super::Swept;

/// The snapshot format this build writes and reads. Bump it with any
/// change to the chunk layout or to any entry's [`Codec`].
///
/// - 1: the first.
/// - 2: a base's first chunk names the checkpoints it supersedes, so that a
///   restore that reads the state partition from the base on (not from its
///   beginning) can still remove them.
pub const FORMAT: u32 = 2;

/// Chunks stay below Kafka's default `message.max.bytes` (1 MB) with room
/// for the record's framing.
pub const CHUNK_BYTES: usize = 768 * 1024;

const MAGIC: &[u8; 4] = b"CWS\0";

/// What a chunk says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub format: u32,
    pub base: bool,
    /// This checkpoint's number (unique per input partition).
    pub seq: u64,
    /// The checkpoint a delta follows (a base: its own `seq`).
    pub prev: u64,
    /// The next input offset: the state is that of every message before it.
    pub offset: i64,
    /// The partition's event clock then.
    pub clock: i64,
    pub chunk: u32,
    /// Set on the last chunk: how many there are.
    pub chunks: Option<u32>,
    /// The tables the entries name, by index.
    pub tables: Vec<String>,
    /// A fingerprint of the hash key the accounts are keyed with
    /// ([`key_check`]): a chunk keyed otherwise is of no use (its accounts
    /// would never be found) and is refused.
    pub key_check: u64,
    /// On a base's first chunk: the checkpoints of this input partition
    /// written before it and not yet removed, as (seq, chunks). The chain
    /// it starts removes them once the committed offset passes it.
    pub supersedes: Vec<(u64, u32)>,
}

/// The fingerprint of the process's state hash key that checkpoints carry.
pub fn key_check() -> u64 {
    crate::source::event::account_key("\u{0}credwatch state key check")
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a credwatch state record")]
    NotOurs,
    #[error("state format {found}, and this credwatch reads format {FORMAT}")]
    Format { found: u32 },
    #[error("the state was keyed with another hash key (the state topic's key record was lost or replaced while it was written)")]
    OtherKey,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl Header {
    fn put(&self, w: &mut Vec<u8>) {
        w.extend_from_slice(MAGIC);
        self.format.put(w);
        self.base.put(w);
        self.seq.put(w);
        self.prev.put(w);
        self.offset.put(w);
        self.clock.put(w);
        self.chunk.put(w);
        self.chunks.put(w);
        self.tables.put(w);
        w.extend_from_slice(&self.key_check.to_le_bytes());
        self.supersedes.put(w);
    }

    /// Reads a chunk's header; the reader is left at its entries.
    pub fn read(r: &mut Reader<'_>) -> Result<Header, SnapshotError> {
        if r.bytes(4, "magic").ok() != Some(&MAGIC[..]) {
            return Err(SnapshotError::NotOurs);
        }
        let format = u32::get(r)?;
        if format != FORMAT {
            return Err(SnapshotError::Format { found: format });
        }
        Ok(Header {
            format,
            base: bool::get(r)?,
            seq: u64::get(r)?,
            prev: u64::get(r)?,
            offset: i64::get(r)?,
            clock: i64::get(r)?,
            chunk: u32::get(r)?,
            chunks: Option::<u32>::get(r)?,
            tables: Vec::<String>::get(r)?,
            key_check: r.fixed64("key check")?,
            supersedes: Vec::<(u64, u32)>::get(r)?,
        })
    }
}

/// Writes one checkpoint as chunks.
pub struct Writer<'a> {
    head: Header,
    chunks: Vec<Vec<u8>>,
    cur: Vec<u8>,
    entry: Vec<u8>,
    tables: &'a [&'a dyn Swept],
    /// What the first chunk's header names as superseded.
    supersedes: Vec<(u64, u32)>,
    /// Accounts written (with entries, or as gone).
    pub accounts: usize,
}

impl<'a> Writer<'a> {
    pub fn new(
        tables: &'a [&'a dyn Swept],
        base: bool,
        seq: u64,
        prev: u64,
        offset: i64,
        clock: i64,
    ) -> Self {
        let names: Vec<String> = tables.iter().map(|t| t.stats().name.to_string()).collect();
        let head = Header {
            format: FORMAT,
            base,
            seq,
            prev,
            offset,
            clock,
            chunk: 0,
            chunks: None,
            tables: names,
            key_check: key_check(),
            supersedes: Vec::new(),
        };
        let mut w = Writer {
            head,
            chunks: Vec::new(),
            cur: Vec::new(),
            entry: Vec::new(),
            tables,
            supersedes: Vec::new(),
            accounts: 0,
        };
        w.start_chunk();
        w
    }

    /// Names the checkpoints this base supersedes (in its first chunk).
    pub fn supersedes(&mut self, old: Vec<(u64, u32)>) {
        assert!(self.head.base && self.chunks.is_empty() && self.accounts == 0);
        self.supersedes = old;
        self.start_chunk();
    }

    fn start_chunk(&mut self) {
        self.cur.clear();
        self.head.chunk = self.chunks.len() as u32;
        self.put_head();
    }

    fn put_head(&mut self) {
        if self.head.chunk == 0 {
            self.head.supersedes = std::mem::take(&mut self.supersedes);
            self.head.put(&mut self.cur);
            self.supersedes = std::mem::take(&mut self.head.supersedes);
        } else {
            self.head.put(&mut self.cur);
        }
    }

    /// Writes `key`: its entries, or (in a delta) that it is gone. Returns
    /// false if no table holds it (a base then writes nothing).
    pub fn account(&mut self, key: u64) -> bool {
        let mut body = std::mem::take(&mut self.entry);
        body.clear();
        let mut n = 0u64;
        let mut one = Vec::new();
        for (t, table) in self.tables.iter().enumerate() {
            one.clear();
            if table.save(key, &mut one) {
                put_varint(&mut body, t as u64);
                put_varint(&mut body, one.len() as u64);
                body.extend_from_slice(&one);
                n += 1;
            }
        }
        let held = n > 0;
        if held || !self.head.base {
            if self.cur.len() + body.len() + 20 > CHUNK_BYTES && self.accounts > 0 {
                let done = std::mem::take(&mut self.cur);
                self.chunks.push(done);
                self.start_chunk();
            }
            self.cur.extend_from_slice(&key.to_le_bytes());
            put_varint(&mut self.cur, n);
            self.cur.extend_from_slice(&body);
            self.accounts += 1;
        }
        self.entry = body;
        held
    }

    /// The chunks, the last one marked with the count.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        // The last chunk's header says how many there are: rewrite it.
        let body_at = {
            let cur = std::mem::take(&mut self.cur);
            self.put_head();
            std::mem::replace(&mut self.cur, cur).len()
        };
        let body = self.cur.split_off(body_at);
        self.head.chunks = Some(self.chunks.len() as u32 + 1);
        self.cur.clear();
        self.put_head();
        self.cur.extend_from_slice(&body);
        let last = std::mem::take(&mut self.cur);
        self.chunks.push(last);
        self.chunks
    }
}

/// Reads one chunk's accounts into `tables`; returns how many.
pub fn load_chunk(
    tables: &[&dyn Swept],
    head: &Header,
    r: &mut Reader<'_>,
) -> Result<usize, CodecError> {
    let map: Vec<Option<&dyn Swept>> = head
        .tables
        .iter()
        .map(|t| tables.iter().find(|x| x.stats().name == t).copied())
        .collect();
    let mut accounts = 0;
    while !r.is_empty() {
        let key = r.fixed64("account key")?;
        let n = r.varint("entry count")?;
        if !head.base {
            // A delta carries the account's whole entry: what it does not
            // name is gone.
            for t in tables {
                t.remove(key);
            }
        }
        for _ in 0..n {
            let t = r.varint("table index")? as usize;
            let len = r.len("entry length")?;
            let bytes = r.bytes(len, "entry")?;
            match map.get(t) {
                Some(Some(mine)) => {
                    let mut e = Reader::new(bytes);
                    mine.load(key, &mut e)?;
                    if !e.is_empty() {
                        return Err(CodecError::Invalid("entry length"));
                    }
                }
                Some(None) => {} // a table this build does not have
                None => return Err(CodecError::Invalid("table index")),
            }
        }
        accounts += 1;
    }
    Ok(accounts)
}

/// A checkpoint found on the topic, complete or not.
#[derive(Debug, Default)]
pub struct Found {
    pub head: Option<Header>,
    /// Chunk number → (record key, value).
    pub chunks: BTreeMap<u32, (String, Vec<u8>)>,
}

impl Found {
    pub fn complete(&self) -> bool {
        let Some(n) = self.chunks.values().last().and_then(|(_, v)| {
            Header::read(&mut Reader::new(v))
                .ok()
                .and_then(|h| h.chunks)
        }) else {
            return false;
        };
        self.chunks.len() as u32 == n && self.chunks.keys().copied().eq(0..n)
    }
}

/// The chain to restore: a base and the deltas that follow it, all at or
/// before `committed`. `found` maps seq → checkpoint.
pub fn choose(found: &BTreeMap<u64, Found>, committed: i64) -> Vec<u64> {
    let usable = |f: &Found| f.complete() && f.head.as_ref().is_some_and(|h| h.offset <= committed);
    let Some(base) = found
        .iter()
        .rev()
        .find(|(_, f)| usable(f) && f.head.as_ref().is_some_and(|h| h.base))
        .map(|(s, _)| *s)
    else {
        return Vec::new();
    };
    let mut chain = vec![base];
    let mut at = base;
    loop {
        // The newest complete delta that follows `at` (a checkpoint cut
        // short and retried leaves two with the same `prev`; the later
        // one was written after the earlier was given up).
        let next = found
            .iter()
            .rev()
            .find(|(s, f)| {
                **s > at && usable(f) && f.head.as_ref().is_some_and(|h| !h.base && h.prev == at)
            })
            .map(|(s, _)| *s);
        match next {
            Some(s) => {
                chain.push(s);
                at = s;
            }
            None => return chain,
        }
    }
}

/// The record key of a chunk, and its parts read back.
pub fn chunk_key(topic: &str, partition: i32, seq: u64, chunk: u32) -> String {
    format!("{topic}/{partition}/{seq}/{chunk}")
}

/// (topic, partition, seq, chunk) of a chunk's key.
pub fn parse_key(key: &str) -> Option<(&str, i32, u64, u32)> {
    let mut it = key.rsplitn(4, '/');
    let chunk = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let partition = it.next()?.parse().ok()?;
    let topic = it.next()?;
    Some((topic, partition, seq, chunk))
}

#[cfg(test)]
mod tests {
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
}
