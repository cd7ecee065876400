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
    let wanted: HashSet<(Arc<str>, i32)> = parts
        .iter()
        .map(|(p, _)| (p.topic.clone(), p.partition))
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
    let tables = s.engine.durable_tables();
    for (p, committed) in parts {
        let id = (p.topic.clone(), p.partition);
        let Some(checkpoints) = found.get(&id) else {
            out.insert(id, Restored::Nothing);
            continue;
        };
        if let Some(e) = &checkpoints.error {
            out.insert(id, Restored::Failed(e.clone()));
            continue;
        }
        let chain = snapshot::choose(&checkpoints.by_seq, *committed);
        if chain.is_empty() {
            out.insert(id, Restored::Nothing);
            continue;
        }
        let mut c = p.chain.lock().unwrap_or_else(|e| e.into_inner());
        let mut loaded: HashSet<u64> = HashSet::new();
        let mut bytes = 0;
        let mut last: Option<Header> = None;
        let mut failed = None;
        'chain: for seq in &chain {
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
                    .and_then(|_| snapshot::load_chunk(&tables, &head, &mut r).map_err(Into::into))
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
            c.keys.extend(f.chunks.values().map(|(k, _)| k.clone()));
        }
        if let Some(e) = failed {
            s.engine.forget_accounts(&|k| loaded.contains(&k));
            *c = Chain::default();
            out.insert(id, Restored::Failed(e));
            continue;
        }
        let last = last.expect("a chain has a chunk");
        c.prev = last.seq;
        c.next_seq = checkpoints.by_seq.keys().max().copied().unwrap_or(0) + 1;
        c.last_offset = last.offset;
        // Everything else of this partition on the topic (older chains,
        // checkpoints cut short, ones past the committed offset) goes.
        let stale: Vec<String> = checkpoints
            .by_seq
            .iter()
            .filter(|(s, _)| !chain.contains(s))
            .flat_map(|(_, f)| f.chunks.values().map(|(k, _)| k.clone()))
            .collect();
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
        out.insert(
            id,
            Restored::Checkpoint {
                offset: last.offset,
                accounts,
                bytes,
            },
        );
    }
    out
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
    error: Option<String>,
}

/// Reads the state topic's `partitions` to their end, keeping the chunks of
/// the `wanted` input partitions (a tombstone removes a chunk).
fn read_topic(
    s: &Input,
    topic: &str,
    partitions: impl Iterator<Item = i32>,
    wanted: &HashSet<(Arc<str>, i32)>,
) -> Result<HashMap<(Arc<str>, i32), Checkpoints>, String> {
    let consumer: BaseConsumer<Quiet> = client_config(&s.kafka, Role::Restorer)
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "8388608")
        .create_with_context(Quiet(Logger::new("state-restore", None)))
        .map_err(|e| format!("cannot create the state reader: {e}"))?;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions.collect::<HashSet<_>>() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, ADMIN_TIMEOUT)
            .map_err(|e| format!("reading the ends of {topic}[{p}]: {e}"))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
    }
    let mut out: HashMap<(Arc<str>, i32), Checkpoints> = HashMap::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(format!(
                "reading {topic} took longer than {} s",
                READ_TIMEOUT.as_secs()
            ));
        }
        let m = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => m,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                let at = consumer.position().ok().and_then(|t| {
                    t.find_partition(topic, p).and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                });
                if at.is_some_and(|o| ends.get(&p).is_some_and(|end| o >= *end)) {
                    ends.remove(&p);
                }
                continue;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "state read poll");
                continue;
            }
            None => continue,
        };
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        let Some((t, p, seq, chunk)) = parse_key(key) else {
            continue;
        };
        let id = (Arc::<str>::from(t), p);
        if !wanted.contains(&id) {
            continue;
        }
        let cps = out.entry(id).or_default();
        match m.payload() {
            None => {
                if let Some(f) = cps.by_seq.get_mut(&seq) {
                    f.chunks.remove(&chunk);
                    if f.chunks.is_empty() {
                        cps.by_seq.remove(&seq);
                    }
                }
            }
            Some(v) => match Header::read(&mut Reader::new(v)) {
                Ok(h) if h.key_check != snapshot::key_check() => {
                    // Of no use: skipped (without a usable checkpoint the
                    // partition is rebuilt from its input).
                    tracing::warn!(key, error = %SnapshotError::OtherKey, "A checkpoint chunk on the state topic is skipped.");
                }
                Ok(h) => {
                    let f = cps.by_seq.entry(seq).or_default();
                    f.head = Some(h);
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
    Ok(out)
}
