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
/// - 3: the account profile's times in seconds of 32 bits and client
///   hashes of 32 bits (`account_profile` entries 104 bytes, not 128);
///   every chunk names where the input window before it starts
///   (`window_from`).
/// - 4: `impossible_travel`'s remembered logins are part of the account's
///   profile entry (the `travel_logins` table is gone).
pub const FORMAT: u32 = 4;

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
    /// Where a restore from this checkpoint starts re-reading the input
    /// before it for the detectors keyed by source (their state is not in
    /// checkpoints): an offset whose message is older than that window, as
    /// the partition's reader saw it. `None`: not known (the restore then
    /// looks the window's start up by time).
    pub window_from: Option<i64>,
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
        self.window_from.put(w);
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
            window_from: Option::<i64>::get(r)?,
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
    /// Names where a restore's re-read of the window before this
    /// checkpoint starts (every chunk carries it). Before any account.
    pub fn window_from(&mut self, offset: Option<i64>) {
        assert!(self.chunks.is_empty() && self.accounts == 0);
        self.head.window_from = offset;
        self.start_chunk();
    }

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
            window_from: None,
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
mod tests;
