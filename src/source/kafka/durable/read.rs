//! A restore's read of the state topic: every checkpoint of the assigned
//! partitions, the chain at or before each one's committed offset, loaded
//! into the engine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{Chain, ADMIN_TIMEOUT, READ_TIMEOUT};
use crate::kafka::{client_config, Logger, Quiet, Role};
use crate::source::kafka::{Input, Part};
use crate::state::codec::Reader;
use crate::state::snapshot::{self, parse_key, Found, Header, SnapshotError};

/// How a partition's state came back.
pub(crate) enum Restored {
    /// From a checkpoint at this input offset (re-read the input from it).
    Checkpoint {
        offset: i64,
        /// Where the input window before it starts ([`crate::state::snapshot::Header::window_from`]).
        window_from: Option<i64>,
        accounts: usize,
        bytes: usize,
    },
    /// No checkpoint at or before the committed offset.
    Nothing,
    /// The state could not be read; the input is re-read instead.
    Failed(String),
}

/// Reads the durable state of `parts` (with their committed offsets) into
/// the engine.
pub(crate) fn restore(s: &Input, parts: &[(Arc<Part>, i64)]) -> HashMap<(Arc<str>, i32), Restored> {
    let mut out = HashMap::new();
    let Some(topic) = s.state_topic.as_ref() else {
        return out;
    };
    let n = s.state_partitions as i32;
    let wanted: HashMap<(Arc<str>, i32), i64> = parts
        .iter()
        .map(|(p, committed)| ((p.topic.clone(), p.partition), *committed))
        .collect();
    let found = match read_topic(
        s,
        topic,
        parts.iter().map(|(p, _)| p.partition.rem_euclid(n)),
        &wanted,
    ) {
        Ok(f) => f,
        Err(e) => {
            for (p, _) in parts {
                out.insert((p.topic.clone(), p.partition), Restored::Failed(e.clone()));
            }
            return out;
        }
    };
    // The partitions' chains are decoded side by side (the tables are
    // concurrent; each partition's accounts are its own).
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(parts.len())
        .max(1);
    let found = &found;
    let results: Vec<((Arc<str>, i32), Restored)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let tables = s.engine.durable_tables();
                    parts
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|(p, _)| ((p.topic.clone(), p.partition), load(s, &tables, p, found)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a restore thread"))
            .collect()
    });
    out.extend(results);
    out
}

/// Loads the chain of `p` found on the topic into `tables`.
fn load(
    s: &Input,
    tables: &[&dyn crate::state::Swept],
    p: &Arc<Part>,
    found: &HashMap<(Arc<str>, i32), Checkpoints>,
) -> Restored {
    let id = (p.topic.clone(), p.partition);
    let Some(checkpoints) = found.get(&id) else {
        return Restored::Nothing;
    };
    if let Some(e) = &checkpoints.error {
        return Restored::Failed(e.clone());
    }
    let chain = &checkpoints.chain;
    tracing::debug!(
        topic = %p.topic,
        partition = p.partition,
        ?chain,
        found = ?checkpoints
            .by_seq
            .iter()
            .map(|(seq, f)| {
                let h = f.head.as_ref();
                (
                    *seq,
                    h.map(|h| (h.base, h.prev, h.offset, h.chunks)),
                    f.chunks.len(),
                    f.complete(),
                )
            })
            .collect::<Vec<_>>(),
        "restore: checkpoints found (seq, (base, prev, offset, chunks), chunks read, complete)"
    );
    if chain.is_empty() {
        return Restored::Nothing;
    }
    let mut c = p.chain.lock().unwrap_or_else(|e| e.into_inner());
    let mut loaded: HashSet<u64> = HashSet::new();
    let mut bytes = 0;
    let mut last: Option<Header> = None;
    let mut failed = None;
    'chain: for seq in chain {
        for (_, value) in checkpoints.by_seq[seq].chunks.values() {
            bytes += value.len();
            let mut r = Reader::new(value);
            let head = match Header::read(&mut r) {
                Ok(h) => h,
                Err(e) => {
                    failed = Some(e.to_string());
                    break 'chain;
                }
            };
            let keys_at = r.remaining();
            if let Err(e) = collect_keys(value, value.len() - keys_at, &mut loaded)
                .and_then(|_| snapshot::load_chunk(tables, &head, &mut r).map_err(Into::into))
            {
                failed = Some(e.to_string());
                break 'chain;
            }
            last = Some(head);
        }
        let f = &checkpoints.by_seq[seq];
        let size: usize = f.chunks.values().map(|(_, v)| v.len()).sum();
        if f.head.as_ref().is_some_and(|h| h.base) {
            c.base = Some(*seq);
            c.base_bytes = size;
            c.delta_bytes = 0;
            c.keys.clear();
        } else {
            c.delta_bytes += size;
        }
        c.keys.push((*seq, f.chunks.len() as u32));
    }
    if let Some(e) = failed {
        s.engine.forget_accounts(&|k| loaded.contains(&k));
        *c = Chain::default();
        return Restored::Failed(e);
    }
    let last = last.expect("a chain has a chunk");
    c.prev = last.seq;
    c.next_seq = checkpoints.by_seq.keys().max().copied().unwrap_or(0) + 1;
    c.last_offset = last.offset;
    // Everything else of this partition read from the topic
    // (checkpoints cut short, ones past the committed offset), and what
    // the base says it supersedes (written before it, so not read) goes.
    let mut stale: Vec<(u64, u32)> = checkpoints
        .by_seq
        .iter()
        .filter(|(s, _)| !chain.contains(s))
        .filter_map(|(s, f)| f.chunks.keys().last().map(|&i| (*s, i + 1)))
        .collect();
    if let Some((_, first)) = checkpoints.by_seq[&chain[0]].chunks.get(&0) {
        if let Ok(h) = Header::read(&mut Reader::new(first)) {
            stale.extend(h.supersedes);
        }
    }
    if !stale.is_empty() {
        c.retiring.push((last.offset, stale));
    }
    p.clock
        .store(last.clock, std::sync::atomic::Ordering::Relaxed);
    let accounts = loaded.len();
    tracing::debug!(
        topic = %p.topic,
        partition = p.partition,
        tables = ?tables.iter().map(|t| (t.stats().name, t.stats().len)).collect::<Vec<_>>(),
        chain = ?chain,
        "restore: tables after the checkpoint chain"
    );
    c.all = loaded;
    Restored::Checkpoint {
        offset: last.offset,
        window_from: last.window_from,
        accounts,
        bytes,
    }
}

/// The account keys of a chunk (they are dropped again if the chain
/// cannot be read whole).
fn collect_keys(value: &[u8], at: usize, into: &mut HashSet<u64>) -> Result<(), SnapshotError> {
    let mut r = Reader::new(&value[at..]);
    while !r.is_empty() {
        into.insert(r.fixed64("account key")?);
        let n = r.varint("entry count")?;
        for _ in 0..n {
            r.varint("table index")?;
            let len = r.len("entry length")?;
            r.bytes(len, "entry")?;
        }
    }
    Ok(())
}

/// One input partition's checkpoints on the state topic.
#[derive(Default)]
struct Checkpoints {
    by_seq: BTreeMap<u64, Found>,
    /// Chunk keys removed by a tombstone (a key is written once, so a
    /// tombstone read before its chunk, in a later window, still counts).
    gone: HashSet<String>,
    error: Option<String>,
    /// The chain found so far (empty: read further back).
    chain: Vec<u64>,
}

/// How many records of a state partition the first window reads back from
/// its end; each further window reads twice as many.
const FIRST_WINDOW: i64 = 16;

/// One state partition being read backwards.
struct Window {
    low: i64,
    /// The window now read is `[from, to)`; everything from `to` on is read.
    from: i64,
    to: i64,
    width: i64,
    done: bool,
    /// Records and bytes read, and windows.
    records: u64,
    bytes: u64,
    windows: u32,
    high: i64,
}

/// Reads the chunks of the `wanted` input partitions (with their committed
/// offsets) from the state topic's `partitions`, backwards from their ends
/// in widening windows, until each one's chain is found or the partition's
/// beginning is reached. A chain is whole once its base is read (every
/// checkpoint and tombstone of it comes after its base), so a restore reads
/// what the chain takes, however much older state an uncompacted topic
/// still holds.
fn read_topic(
    s: &Input,
    topic: &str,
    partitions: impl Iterator<Item = i32>,
    wanted: &HashMap<(Arc<str>, i32), i64>,
) -> Result<HashMap<(Arc<str>, i32), Checkpoints>, String> {
    // A reader per window: one reused across windows delivered end-of-
    // partition events and positions of the window before, which ended the
    // next one before it was read.
    let reader = || -> Result<BaseConsumer<Quiet>, String> {
        client_config(&s.kafka, Role::Restorer)
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "8388608")
            .create_with_context(Quiet(Logger::new("state-restore", None)))
            .map_err(|e| format!("cannot create the state reader: {e}"))
    };
    let consumer = reader()?;
    let n = s.state_partitions as i32;
    let mut windows: BTreeMap<i32, Window> = BTreeMap::new();
    for p in partitions.collect::<HashSet<_>>() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, ADMIN_TIMEOUT)
            .map_err(|e| format!("reading the ends of {topic}[{p}]: {e}"))?;
        if high > low {
            windows.insert(
                p,
                Window {
                    low,
                    from: high,
                    to: high,
                    width: FIRST_WINDOW / 2,
                    done: false,
                    records: 0,
                    bytes: 0,
                    windows: 0,
                    high,
                },
            );
        }
    }
    let mut out: HashMap<(Arc<str>, i32), Checkpoints> = HashMap::new();
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        // The next window of every partition not done yet.
        let mut tpl = TopicPartitionList::new();
        for (p, w) in windows.iter_mut().filter(|(_, w)| !w.done) {
            w.to = w.from;
            w.width = w.width.saturating_mul(2);
            w.from = w.to.saturating_sub(w.width).max(w.low);
            w.windows += 1;
            tpl.add_partition_offset(topic, *p, Offset::Offset(w.from))
                .map_err(|e| e.to_string())?;
        }
        if tpl.count() == 0 {
            for (p, w) in &windows {
                tracing::info!(
                    topic,
                    partition = p,
                    records = w.records,
                    bytes = w.bytes,
                    windows = w.windows,
                    from = w.from,
                    low = w.low,
                    high = w.high,
                    "State partition read back to its chains."
                );
            }
            return Ok(out);
        }
        let consumer = reader()?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut reading: HashSet<i32> = windows
            .iter()
            .filter(|(_, w)| !w.done)
            .map(|(p, _)| *p)
            .collect();
        while !reading.is_empty() {
            if Instant::now() > deadline {
                return Err(format!(
                    "reading {topic} took longer than {} s",
                    READ_TIMEOUT.as_secs()
                ));
            }
            let m = match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // Past the window's end (a compacted partition has gaps).
                    let at = consumer.position().ok().and_then(|t| {
                        t.find_partition(topic, p).and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                    });
                    let Some(w) = windows.get_mut(&p) else {
                        continue;
                    };
                    if at.is_some_and(|o| o >= w.to) && !grown(&consumer, topic, p, w) {
                        reading.remove(&p);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "state read poll");
                    continue;
                }
                None => continue,
            };
            let Some(w) = windows.get_mut(&m.partition()) else {
                continue;
            };
            let newest = w.to == w.high;
            if m.offset() >= w.to {
                if newest {
                    // Written since the end was asked for: read it too.
                    w.to = m.offset() + 1;
                    w.high = w.to;
                } else {
                    // Read before, in a later window.
                    if reading.remove(&m.partition()) {
                        let mut one = TopicPartitionList::new();
                        one.add_partition(topic, m.partition());
                        let _ = consumer.pause(&one);
                    }
                    continue;
                }
            }
            if m.offset() + 1 >= w.to && !(newest && grown(&consumer, topic, m.partition(), w)) {
                reading.remove(&m.partition());
            }
            w.records += 1;
            w.bytes += m.payload_len() as u64;
            take(&m, wanted, &mut out);
        }
        // Which input partitions have their chain now; a state partition
        // whose input partitions all have one (or that is read to its
        // beginning) is done.
        for (id, cps) in out.iter_mut() {
            if cps.chain.is_empty() && cps.error.is_none() {
                cps.chain = snapshot::choose(&cps.by_seq, wanted[id]);
            }
        }
        for (p, w) in windows.iter_mut().filter(|(_, w)| !w.done) {
            let open = wanted.keys().any(|id| {
                id.1.rem_euclid(n) == *p
                    && out
                        .get(id)
                        .is_none_or(|c| c.chain.is_empty() && c.error.is_none())
            });
            w.done = !open || w.from <= w.low;
        }
    }
}

/// Whether the newest window's partition has grown since its end was
/// asked for (the last checkpoint of the instance before may still be
/// arriving, and a broker's end can lag what it acknowledged): if so, the
/// window reaches to the new end.
fn grown(consumer: &BaseConsumer<Quiet>, topic: &str, p: i32, w: &mut Window) -> bool {
    match consumer.fetch_watermarks(topic, p, ADMIN_TIMEOUT) {
        Ok((_, high)) if high > w.to => {
            w.to = high;
            w.high = high;
            true
        }
        _ => false,
    }
}

/// Keeps one record of the state topic if it is a chunk (or a tombstone)
/// of a wanted input partition.
fn take(
    m: &rdkafka::message::BorrowedMessage<'_>,
    wanted: &HashMap<(Arc<str>, i32), i64>,
    out: &mut HashMap<(Arc<str>, i32), Checkpoints>,
) {
    let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        return;
    };
    let Some((t, p, seq, chunk)) = parse_key(key) else {
        return;
    };
    let id = (Arc::<str>::from(t), p);
    if !wanted.contains_key(&id) {
        return;
    }
    let cps = out.entry(id).or_default();
    if !cps.chain.is_empty() {
        return;
    }
    match m.payload() {
        None => {
            if let Some(f) = cps.by_seq.get_mut(&seq) {
                f.chunks.remove(&chunk);
                if f.chunks.is_empty() {
                    cps.by_seq.remove(&seq);
                }
            }
            cps.gone.insert(key.to_string());
        }
        Some(_) if cps.gone.contains(key) => {}
        Some(v) => match Header::read(&mut Reader::new(v)) {
            Ok(h) if h.key_check != snapshot::key_check() => {
                // Of no use: skipped (without a usable checkpoint the
                // partition is rebuilt from its input).
                tracing::warn!(key, error = %SnapshotError::OtherKey, "A checkpoint chunk on the state topic is skipped.");
            }
            Ok(h) => {
                let f = cps.by_seq.entry(seq).or_default();
                if f.head.as_ref().is_none_or(|old| old.chunk < h.chunk) {
                    f.head = Some(h);
                }
                f.chunks.insert(chunk, (key.to_string(), v.to_vec()));
            }
            Err(e @ SnapshotError::Format { .. }) => {
                cps.error = Some(format!(
                    "{e}; the partition is rebuilt from its input instead"
                ));
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "A record on the state topic is not a checkpoint chunk; ignored.");
            }
        },
    }
}
