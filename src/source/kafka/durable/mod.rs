//! Durable state on Kafka (`kafka.state_topic`): each partition's
//! checkpoints written by the worker that judges it, and read back by the
//! restorer when the partition is assigned ([`read`]), and the topic
//! itself: created, checked, and holding the group's hash key ([`topic`]).
//! The model and the format are in [`crate::state::snapshot`].

mod read;
mod topic;

pub(crate) use read::{restore, Restored};
pub use topic::{ensure_topic, establish_key, StateTopicError};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Input, Part};
use crate::sink::kafka::{Origin, Record};
use crate::state::snapshot::{chunk_key, Writer};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long reading a state partition may take before the restore falls
/// back to the input.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// What a partition knows of its durable state (kept on its [`Part`]).
#[derive(Debug)]
pub(crate) struct Chain {
    /// Every account of the partition that a table may hold: a base writes
    /// them all, and drops those nothing holds any more.
    pub(crate) all: HashSet<u64>,
    /// Accounts whose entries may have changed since the last checkpoint.
    pub(crate) dirty: HashSet<u64>,
    /// The chain's base and its last checkpoint (`None`: no base yet).
    base: Option<u64>,
    prev: u64,
    next_seq: u64,
    base_bytes: usize,
    delta_bytes: usize,
    /// The checkpoints of the chain as (seq, chunks), and those of
    /// superseded chains waiting for the committed offset to pass `.0`
    /// before they are removed.
    keys: Vec<(u64, u32)>,
    retiring: Vec<(i64, Vec<(u64, u32)>)>,
    last: Instant,
    last_offset: i64,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            all: HashSet::new(),
            dirty: HashSet::new(),
            base: None,
            prev: 0,
            next_seq: 1,
            base_bytes: 0,
            delta_bytes: 0,
            keys: Vec::new(),
            retiring: Vec::new(),
            last: Instant::now(),
            last_offset: -1,
        }
    }
}

/// Takes a checkpoint of `part` if one is due (`force`: now, if anything
/// changed). Called by the partition's own worker between batches, so the
/// state is exactly that after every message it has handed over.
pub(crate) fn checkpoint(part: &Arc<Part>, s: &Input, force: bool) {
    let Some(topic) = s.state_topic.as_ref() else {
        return;
    };
    if part.restoring.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let processed = part.tracker.processed_offset();
    if processed < 0 {
        return;
    }
    let offset = processed + 1;
    let mut c = part.chain.lock().unwrap_or_else(|e| e.into_inner());
    let every = Duration::from_secs(s.kafka.checkpoint_interval_secs);
    if !force && c.last.elapsed() < every {
        return;
    }
    c.last = Instant::now();
    let origin = Origin {
        part: part.clone(),
        offset: processed,
        received: Instant::now(),
    };
    let state_partition = part.partition.rem_euclid(s.state_partitions as i32);
    retire(&mut c, part, s, topic, state_partition, &origin);
    if offset == c.last_offset && c.dirty.is_empty() {
        return;
    }
    let base = c.base.is_none() || c.delta_bytes > c.base_bytes;
    let seq = c.next_seq;
    let prev = if base { seq } else { c.prev };
    let tables = s.engine.durable_tables();
    let clock = part.clock.load(std::sync::atomic::Ordering::Relaxed);
    let mut w = Writer::new(&tables, base, seq, prev, offset, clock);
    w.window_from(window_from(part, s, offset));
    let started = Instant::now();
    if base {
        // A restore reads the state partition from this base on: it names
        // what it supersedes, so that a restart before they are removed
        // does not leave them on the topic for ever.
        let mut old = c.keys.clone();
        old.extend(c.retiring.iter().flat_map(|(_, k)| k.iter().copied()));
        w.supersedes(old);
        // Every account known, and every one changed since the last
        // checkpoint (which the base is the first to write).
        let mut all = std::mem::take(&mut c.all);
        all.extend(c.dirty.drain());
        c.all = all.into_iter().filter(|&k| w.account(k)).collect();
    } else {
        let dirty = std::mem::take(&mut c.dirty);
        for k in &dirty {
            if w.account(*k) {
                c.all.insert(*k);
            }
        }
    }
    c.dirty.clear();
    let accounts = w.accounts;
    let chunks = w.finish();
    let bytes: usize = chunks.iter().map(Vec::len).sum();
    let n = chunks.len() as u32;
    part.tracker.begin(processed, n);
    for (i, chunk) in chunks.into_iter().enumerate() {
        s.producer.produce(Record::state(
            &origin,
            topic.clone(),
            state_partition,
            &chunk_key(&part.topic, part.partition, seq, i as u32),
            Some(chunk),
        ));
    }
    let keys = vec![(seq, n)];
    if base {
        let old = std::mem::replace(&mut c.keys, keys);
        if !old.is_empty() {
            c.retiring.push((offset, old));
        }
        c.base = Some(seq);
        c.base_bytes = bytes;
        c.delta_bytes = 0;
    } else {
        c.keys.extend(keys);
        c.delta_bytes += bytes;
    }
    c.prev = seq;
    c.next_seq = seq + 1;
    c.last_offset = offset;
    s.metrics
        .checkpoints
        .with_label_values(&[if base { "base" } else { "delta" }])
        .inc();
    tracing::debug!(
        topic = %part.topic,
        partition = part.partition,
        seq,
        base,
        offset,
        accounts,
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Checkpoint written."
    );
}

/// After the last checkpoints of `parts` are acknowledged (a revoke, a
/// shutdown): one more record on each one's state partition, a tombstone
/// of a key no checkpoint has. A broker may hold its end of a partition
/// behind the last batch written (tansu did: the next owner then saw the
/// last checkpoint cut short and restored an older chain); this batch
/// comes after it. Readers ignore the key.
pub(crate) fn mark_end(parts: &[Arc<Part>], s: &Input) {
    let Some(topic) = s.state_topic.as_ref() else {
        return;
    };
    for part in parts {
        let processed = part.tracker.processed_offset();
        if processed < 0 {
            continue;
        }
        let origin = Origin {
            part: part.clone(),
            offset: processed,
            received: Instant::now(),
        };
        let sp = part.partition.rem_euclid(s.state_partitions as i32);
        let key = format!("credwatch-end/{}/{}", part.topic, part.partition);
        part.tracker.begin(origin.offset, 1);
        s.producer
            .produce(Record::state(&origin, topic.clone(), sp, &key, None));
    }
}

/// Removes superseded chains once the committed offset has passed the base
/// that replaced them (a restart until then may still need them).
fn retire(c: &mut Chain, part: &Arc<Part>, s: &Input, topic: &Arc<str>, sp: i32, origin: &Origin) {
    let committed = part.tracker.committed_offset();
    let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut c.retiring)
        .into_iter()
        .partition(|(at, _)| committed >= *at);
    c.retiring = keep;
    let keys: Vec<String> = due
        .into_iter()
        .flat_map(|(_, k)| k)
        .flat_map(|(seq, n)| (0..n).map(move |i| chunk_key(&part.topic, part.partition, seq, i)))
        .collect();
    if keys.is_empty() {
        return;
    }
    part.tracker.begin(origin.offset, keys.len() as u32);
    for k in keys {
        s.producer
            .produce(Record::state(origin, topic.clone(), sp, &k, None));
    }
}

/// Where a restore from a checkpoint at `offset` starts re-reading the
/// input before it (the detectors keyed by source): the last message the
/// reader saw older than that window, measured as the restore measures it
/// (from the newest message before the checkpoint, less the search
/// margin). The newest mark is at most a mark's interval older than that
/// message, so the window errs early.
fn window_from(part: &Part, s: &Input, offset: i64) -> Option<i64> {
    let tail = s.engine.source_window();
    if tail == 0 {
        return None;
    }
    let marks = part.marks.lock().unwrap_or_else(|e| e.into_inner());
    let newest = marks.newest_before(offset)?;
    marks.before(newest - tail - super::by_time::SEARCH_MARGIN, offset)
}
