//! Durable state on Kafka (`kafka.state_topic`): each partition's
//! checkpoints written by the worker that judges it, and read back by the
//! restorer when the partition is assigned. The model and the format are
//! in [`crate::state::snapshot`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{Input, Part};
use crate::kafka::{client_config, KafkaConfig, Logger, Quiet, Role};
use crate::sink::kafka::{Origin, Record};
use crate::state::codec::Reader;
use crate::state::snapshot::{self, chunk_key, parse_key, Found, Header, SnapshotError, Writer};

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
    /// The record keys of the chain, and of superseded chains waiting for
    /// the committed offset to pass `.0` before they are removed.
    keys: Vec<String>,
    retiring: Vec<(i64, Vec<String>)>,
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

/// Why the state topic cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateTopicError {
    #[error("cannot create kafka.state_topic {topic:?}: {source}. Create it with cleanup.policy=compact and as many partitions as the input topic, or give credwatch the right to create topics")]
    Create { topic: String, source: KafkaError },
    #[error("kafka.state_topic {topic:?} has cleanup.policy={policy}: durable state needs a compacted topic (cleanup.policy=compact), or old checkpoints would be deleted by retention while still needed. Change it with kafka-configs --alter --add-config cleanup.policy=compact")]
    NotCompacted { topic: String, policy: String },
    #[error("cannot read the metadata of kafka.state_topic {topic:?}: {source}")]
    Metadata { topic: String, source: KafkaError },
    #[error("cannot read or write the hash key on kafka.state_topic {topic:?}: {why}")]
    Key { topic: String, why: String },
    #[error("this process already keys its state with another hash key than the one on kafka.state_topic {topic:?}")]
    KeyInUse { topic: String },
}

/// The prefix of the records that hold the group's hash key.
const KEY_PREFIX: &str = "credwatch-hash-key/";

/// Establishes the hash key of the state tables that every instance of the
/// group shares (accounts are keyed by a secret-keyed hash, and a restored
/// table must be keyed as the process that wrote it): the first key record
/// on partition 0 of the state topic, written by the first instance that
/// found none. Each candidate has a key of its own, so compaction keeps them
/// all, and every instance agrees on the one with the lowest offset.
pub fn establish_key(k: &KafkaConfig) -> Result<(), StateTopicError> {
    let topic = k.state_topic.trim().to_string();
    let err = |why: String| StateTopicError::Key {
        topic: topic.clone(),
        why,
    };
    let first = |consumer: &BaseConsumer<Quiet>| -> Result<Option<[u64; 2]>, StateTopicError> {
        let (low, high) = consumer
            .fetch_watermarks(&topic, 0, ADMIN_TIMEOUT)
            .map_err(|e| err(e.to_string()))?;
        if high <= low {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .map_err(|e| err(e.to_string()))?;
        consumer.assign(&tpl).map_err(|e| err(e.to_string()))?;
        let deadline = Instant::now() + READ_TIMEOUT;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let ours = m
                        .key()
                        .is_some_and(|key| key.starts_with(KEY_PREFIX.as_bytes()));
                    if let (true, Some(v)) = (ours, m.payload()) {
                        if v.len() == 16 {
                            let a = u64::from_le_bytes(v[..8].try_into().expect("8"));
                            let b = u64::from_le_bytes(v[8..].try_into().expect("8"));
                            return Ok(Some([a, b]));
                        }
                    }
                    if m.offset() + 1 >= high {
                        return Ok(None);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(None),
                _ => {}
            }
        }
        Err(err(format!(
            "reading partition 0 took longer than {} s",
            READ_TIMEOUT.as_secs()
        )))
    };
    let consumer: BaseConsumer<Quiet> = client_config(k, Role::Restorer)
        .create_with_context(Quiet(Logger::new("state-key", None)))
        .map_err(|e| err(e.to_string()))?;
    let key = match first(&consumer)? {
        Some(key) => key,
        None => {
            let r = std::hash::RandomState::new();
            use std::hash::BuildHasher;
            let mine = [r.hash_one(1u8), r.hash_one(2u8)];
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&mine[0].to_le_bytes());
            v.extend_from_slice(&mine[1].to_le_bytes());
            let producer: rdkafka::producer::BaseProducer = client_config(k, Role::Producer)
                .create()
                .map_err(|e| err(e.to_string()))?;
            let name = format!("{KEY_PREFIX}{:016x}", r.hash_one(3u8));
            producer
                .send(
                    rdkafka::producer::BaseRecord::<str, [u8]>::to(&topic)
                        .partition(0)
                        .key(name.as_str())
                        .payload(&v[..]),
                )
                .map_err(|(e, _)| err(e.to_string()))?;
            rdkafka::producer::Producer::flush(&producer, ADMIN_TIMEOUT)
                .map_err(|e| err(e.to_string()))?;
            tracing::info!(topic = %topic, "No hash key on the state topic yet: wrote one.");
            // Another instance may have written one first: the lowest wins.
            first(&consumer)?.ok_or_else(|| err("the key just written is not there".into()))?
        }
    };
    if !crate::source::event::set_state_key(key) {
        return Err(StateTopicError::KeyInUse { topic });
    }
    Ok(())
}

/// Makes sure the state topic exists and is compacted; returns its
/// partition count. A broker that cannot describe topic configs is
/// trusted, with a warning.
pub fn ensure_topic(k: &KafkaConfig) -> Result<usize, StateTopicError> {
    let topic = k.state_topic.trim().to_string();
    let probe: BaseConsumer<Quiet> = client_config(k, Role::Restorer)
        .create_with_context(Quiet(Logger::new("state", None)))
        .map_err(|source| StateTopicError::Metadata {
            topic: topic.clone(),
            source,
        })?;
    let partitions = |name: &str| -> Result<usize, StateTopicError> {
        let md = probe
            .fetch_metadata(Some(name), ADMIN_TIMEOUT)
            .map_err(|source| StateTopicError::Metadata {
                topic: name.to_string(),
                source,
            })?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map_or(0, |t| t.partitions().len()))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the admin client");
    let admin: AdminClient<DefaultClientContext> = client_config(k, Role::Restorer)
        .create()
        .map_err(|source| StateTopicError::Metadata {
            topic: topic.clone(),
            source,
        })?;
    let opts = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    let mut n = partitions(&topic)?;
    if n == 0 {
        let want = k
            .input_topics
            .iter()
            .map(|t| partitions(t))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .max()
            .unwrap_or(1)
            .max(1);
        let new = NewTopic::new(&topic, want as i32, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let created = rt.block_on(admin.create_topics([&new], &opts));
        match created.map(|mut r| r.pop()) {
            Ok(Some(Ok(_))) | Ok(None) => {}
            Ok(Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)))) => {}
            Ok(Some(Err((_, code)))) => {
                return Err(StateTopicError::Create {
                    topic,
                    source: KafkaError::AdminOp(code),
                })
            }
            Err(source) => return Err(StateTopicError::Create { topic, source }),
        }
        tracing::info!(topic = %topic, partitions = want, "Created the durable state topic (cleanup.policy=compact).");
        for _ in 0..50 {
            n = partitions(&topic)?;
            if n > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let described = rt.block_on(admin.describe_configs([&ResourceSpecifier::Topic(&topic)], &opts));
    let policy = described
        .ok()
        .and_then(|mut v| v.pop())
        .and_then(|r| r.ok())
        .and_then(|r| {
            r.entries
                .iter()
                .find(|e| e.name == "cleanup.policy")
                .and_then(|e| e.value.clone())
        });
    match policy {
        Some(p) if !p.split(',').any(|x| x.trim() == "compact") => {
            return Err(StateTopicError::NotCompacted { topic, policy: p })
        }
        Some(_) => {}
        None => {
            tracing::warn!(topic = %topic, "The broker did not say the state topic's cleanup.policy; make sure it is compact, or retention will delete checkpoints still needed.")
        }
    }
    Ok(n.max(1))
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
    let started = Instant::now();
    if base {
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
    let keys: Vec<String> = (0..chunks.len())
        .map(|i| chunk_key(&part.topic, part.partition, seq, i as u32))
        .collect();
    part.tracker.begin(processed, chunks.len() as u32);
    for (chunk, key) in chunks.into_iter().zip(&keys) {
        s.producer.produce(Record::state(
            &origin,
            topic.clone(),
            state_partition,
            key,
            Some(chunk),
        ));
    }
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

/// Removes superseded chains once the committed offset has passed the base
/// that replaced them (a restart until then may still need them).
fn retire(c: &mut Chain, part: &Arc<Part>, s: &Input, topic: &Arc<str>, sp: i32, origin: &Origin) {
    let committed = part.tracker.committed_offset();
    let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut c.retiring)
        .into_iter()
        .partition(|(at, _)| committed >= *at);
    c.retiring = keep;
    let keys: Vec<String> = due.into_iter().flat_map(|(_, k)| k).collect();
    if keys.is_empty() {
        return;
    }
    part.tracker.begin(origin.offset, keys.len() as u32);
    for k in keys {
        s.producer
            .produce(Record::state(origin, topic.clone(), sp, &k, None));
    }
}

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
