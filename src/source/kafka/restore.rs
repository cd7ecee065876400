//! State follows the partitions.
//!
//! When partitions are assigned (start-up, a rebalance, scale-out), this
//! instance knows nothing of their accounts. Before it consumes them, the
//! restorer re-reads each partition's recent past: from the first message
//! of the last `kafka.restore_secs` (found by timestamp) up to the group's
//! committed offset. Those events go through the same workers and the same
//! engine, so every window (and every open incident) is rebuilt, but the
//! decisions are thrown away: they were acted on before the commit. Then
//! the partition is resumed from the committed offset.
//!
//! Limits: retention must keep `kafka.restore_secs` of each input topic;
//! what is older is not restored (the two-week sending baseline of
//! `send_volume` starts again from its floor). A partition without a
//! committed offset has nothing to restore: it is read from
//! `auto.offset.reset` (earliest by default).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::by_time::{search_by_time, wrong_answers, SEARCH_MARGIN};
use super::{describe, Batcher, Input, Part, Work};
use crate::kafka::{client_config, Logger, Quiet, Role};
use crate::time::{now_millis, Millis, SECOND};

/// How long the restorer waits for a message.
pub(super) const RESTORE_POLL: Duration = Duration::from_millis(100);

/// Why a restore stopped early; the partitions are then judged from
/// whatever state was rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot create the restore consumer: {0}")]
    Client(#[source] KafkaError),
    #[error("reading the group's committed offsets: {0}")]
    Committed(#[source] KafkaError),
    #[error("finding the first offset of the restore window: {0}")]
    Offsets(#[source] KafkaError),
    #[error("assigning the partitions to the restore consumer: {0}")]
    Assign(#[source] KafkaError),
    #[error("the restore took longer than {0} s; lower kafka.restore_secs")]
    Timeout(u64),
    #[error("the committed offset is outside the partition: {0}")]
    OutOfRange(#[source] KafkaError),
}

/// How long one restore may take before the partitions are consumed with
/// whatever state was rebuilt.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// The restorer thread: one job per assignment.
pub(crate) fn run(jobs: Receiver<Vec<Arc<Part>>>, s: &Arc<Input>) {
    while let Ok(parts) = jobs.recv() {
        let started = Instant::now();
        match restore(&parts, s) {
            Ok(events) => tracing::info!(
                partitions = %describe(&parts),
                events,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "State restored from the partitions' recent past; consuming."
            ),
            Err(e) => tracing::warn!(
                partitions = %describe(&parts),
                error = %e,
                "State of these partitions could not be rebuilt; they are judged from an empty state (windows that began before now may be missed)."
            ),
        }
        // Behind the restore's batches in each worker's queue: the worker
        // marks the partition restored once it has judged all of them.
        for p in parts {
            s.send(p.worker, Work::Restored(p.clone(), started));
        }
    }
}

struct Range {
    part: Arc<Part>,
    /// The committed offset: everything before it was already acted on.
    end: i64,
    done: bool,
    /// Messages older than this (Kafka message time) are not re-read
    /// (`Millis::MIN`: from a checkpoint, every message after it is).
    since: Millis,
    /// Restored from a checkpoint: re-read from this offset.
    from: Option<i64>,
    /// The checkpoint named where the window before it starts.
    window_from: Option<i64>,
}

/// Re-reads the recent past of `parts` into the engine; returns the number
/// of messages read.
fn restore(parts: &[Arc<Part>], s: &Arc<Input>) -> Result<u64, RestoreError> {
    let k = &s.kafka;
    if k.restore_secs == 0 && s.state_topic.is_none() {
        return Ok(0);
    }
    let t0 = Instant::now();
    let consumer: BaseConsumer<Quiet> = client_config(k, Role::Restorer)
        .create_with_context(Quiet(Logger::new("restorer", None)))
        .map_err(|e| RestoreError::Client(crate::kafka::redact_error(e)))?;
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition(&p.topic, p.partition);
    }
    let committed = consumer
        .committed_offsets(tpl, ADMIN_TIMEOUT)
        .map_err(RestoreError::Committed)?;
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "restore: committed offsets read"
    );
    let mut ranges: HashMap<(String, i32), Range> = HashMap::new();
    for e in committed.elements() {
        if let Offset::Offset(end) = e.offset() {
            if end > 0 {
                if let Some(p) = parts
                    .iter()
                    .find(|p| &*p.topic == e.topic() && p.partition == e.partition())
                {
                    ranges.insert(
                        (e.topic().to_string(), e.partition()),
                        Range {
                            part: p.clone(),
                            end,
                            done: false,
                            since: Millis::MIN,
                            from: None,
                            window_from: None,
                        },
                    );
                }
            }
        }
    }
    tracing::debug!(
        with_commits = ranges.len(),
        "restore: partitions with a committed offset"
    );
    if ranges.is_empty() {
        return Ok(0);
    }
    // Durable state first: a partition restored from a checkpoint re-reads
    // only the input after it.
    if s.state_topic.is_some() {
        let with: Vec<(Arc<Part>, i64)> =
            ranges.values().map(|r| (r.part.clone(), r.end)).collect();
        let got = super::durable::restore(s, &with);
        for r in ranges.values_mut() {
            let label = match got.get(&(r.part.topic.clone(), r.part.partition)) {
                Some(super::durable::Restored::Checkpoint {
                    offset,
                    window_from,
                    accounts,
                    bytes,
                }) => {
                    s.metrics.state_restored_bytes.inc_by(*bytes as u64);
                    tracing::info!(
                        topic = %r.part.topic,
                        partition = r.part.partition,
                        checkpoint_offset = offset,
                        committed = r.end,
                        accounts,
                        bytes,
                        window_from = ?window_from,
                        "Durable state read; re-reading the input after its checkpoint."
                    );
                    // Nothing after it to re-read, perhaps; the window
                    // before it may still be (below).
                    r.from = Some(*offset);
                    r.window_from = window_from.filter(|&w| w <= *offset);
                    "checkpoint"
                }
                Some(super::durable::Restored::Failed(why)) => {
                    tracing::warn!(
                        topic = %r.part.topic,
                        partition = r.part.partition,
                        error = %why,
                        restore_secs = k.restore_secs,
                        "The durable state of this partition cannot be used; its state is rebuilt from kafka.restore_secs of its input instead."
                    );
                    "fallback"
                }
                _ => {
                    tracing::info!(
                        topic = %r.part.topic,
                        partition = r.part.partition,
                        restore_secs = k.restore_secs,
                        "No durable state for this partition at or before its committed offset (the first start with kafka.state_topic, or the topic was lost); its state is rebuilt from kafka.restore_secs of its input."
                    );
                    "input"
                }
            };
            s.metrics.state_restores.with_label_values(&[label]).inc();
        }
    } else {
        s.metrics
            .state_restores
            .with_label_values(&["input"])
            .inc_by(ranges.len() as u64);
    }
    // The rest: `restore_secs` of message time before the last committed
    // message (event time, as everything else: a group that was down for
    // longer than the window still restores its last window). A partition
    // restored from a checkpoint re-reads the input after it, and, when
    // detectors keyed by source address run here (their state mixes every
    // partition's events, so no checkpoint holds it), the window before it
    // for those detectors only.
    let tail = s.engine.source_window();
    let last = last_times(&consumer, &ranges, tail > 0);
    let mut by_time = TopicPartitionList::new();
    let mut assign = TopicPartitionList::new();
    for ((t, p), r) in ranges.iter_mut() {
        if r.done {
            continue;
        }
        let window = match r.from {
            Some(_) if tail == 0 => None,
            Some(_) => Some(tail),
            None if k.restore_secs == 0 => {
                r.done = true;
                continue;
            }
            None => Some(k.restore_secs as Millis * SECOND),
        };
        let reference = last.get(&(t.clone(), *p));
        match (window, reference, r.from, r.window_from) {
            // The checkpoint named where its window starts: no lookup by
            // time (on a broker without a time index, a search).
            (Some(w), Some(&ts), _, Some(start)) => {
                r.since = ts - w;
                assign
                    .add_partition_offset(t, *p, Offset::Offset(start))
                    .map_err(RestoreError::Assign)?;
            }
            (Some(w), Some(&ts), _, None) => {
                r.since = ts - w;
                by_time
                    .add_partition_offset(t, *p, Offset::Offset(r.since))
                    .map_err(RestoreError::Offsets)?;
            }
            (_, _, Some(from), _) if from < r.end => {
                assign
                    .add_partition_offset(t, *p, Offset::Offset(from))
                    .map_err(RestoreError::Assign)?;
            }
            _ => r.done = true,
        }
    }
    let starts = if by_time.count() == 0 {
        by_time
    } else {
        match consumer.offsets_for_times(by_time.clone(), ADMIN_TIMEOUT) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "The broker cannot look up offsets by time; restoring from the start of each partition, filtered by message time.");
                let mut t = TopicPartitionList::new();
                for e in by_time.elements() {
                    t.add_partition_offset(e.topic(), e.partition(), Offset::Beginning)
                        .map_err(RestoreError::Offsets)?;
                }
                t
            }
        }
    };
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "restore: offsets by time read"
    );
    // A broker without a time index (tansu answers the start of the
    // partition, or "end", to every time): the window's first offset by a
    // binary search over message times.
    let target = |e: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>| {
        ranges
            .get(&(e.topic().to_string(), e.partition()))
            .map(|r| (r.since - SEARCH_MARGIN, r.from.unwrap_or(r.end)))
    };
    let answered: Vec<(String, i32, i64, Millis)> = starts
        .elements()
        .iter()
        .filter_map(|e| match (e.offset(), target(e)) {
            (Offset::Offset(o), Some((since, _))) => {
                Some((e.topic().to_string(), e.partition(), o, since))
            }
            _ => None,
        })
        .collect();
    // Single messages, fetched as soon as they are there.
    let prober: Option<BaseConsumer<Quiet>> = (starts.count() > 0)
        .then(|| {
            client_config(k, Role::Restorer)
                .set("fetch.wait.max.ms", "5")
                // One batch per fetch, not megabytes: a busy broker answers
                // a small fetch sooner (tansu reads every batch it sends).
                .set("fetch.max.bytes", "1024")
                .set("max.partition.fetch.bytes", "1")
                .set("message.max.bytes", "1000")
                .create_with_context(Quiet(Logger::new("restorer", None)))
                .ok()
        })
        .flatten();
    let (wrong, read) = match &prober {
        Some(c) if !answered.is_empty() => wrong_answers(c, &answered),
        _ => Default::default(),
    };
    tracing::debug!(
        ?answered,
        ?wrong,
        "restore: the broker's offsets by time checked"
    );
    let unanswered: Vec<(String, i32, Millis, i64)> = starts
        .elements()
        .iter()
        .filter(|e| {
            !matches!(e.offset(), Offset::Offset(_))
                || wrong.contains(&(e.topic().to_string(), e.partition()))
        })
        .filter_map(|e| {
            let (since, upto) = target(e)?;
            Some((e.topic().to_string(), e.partition(), since, upto))
        })
        .collect();
    let searched = match &prober {
        Some(c) if !unanswered.is_empty() => search_by_time(c, &unanswered, &read, &last),
        _ => HashMap::new(),
    };
    for e in starts.elements() {
        let key = (e.topic().to_string(), e.partition());
        let Some(r) = ranges.get_mut(&key) else {
            continue;
        };
        // Where the window ends: the checkpoint, or the committed offset.
        let upto = r.from.unwrap_or(r.end);
        let offset = match (searched.get(&key), e.offset()) {
            (Some(&o), _) => Offset::Offset(o),
            (None, o) => o,
        };
        let at = match offset {
            Offset::Offset(start) if start < upto => Offset::Offset(start),
            // Nothing of the window before its end.
            Offset::Offset(_) => match r.from {
                Some(from) if from < r.end => Offset::Offset(from),
                _ => {
                    r.done = true;
                    continue;
                }
            },
            // Nothing within the window before its end, or a broker without
            // a time index (librdkafka's mock cluster and tansu answer "end"
            // to every time): read from the start of retention, keeping
            // only messages within the window.
            _ => Offset::Beginning,
        };
        if let Some(from) = r.from {
            if !matches!(at, Offset::Offset(start) if start >= from) {
                // What comes before the checkpoint is judged by the
                // detectors keyed by source only.
                r.part.tail_until.store(from, Ordering::Relaxed);
            }
        }
        assign
            .add_partition_offset(e.topic(), e.partition(), at)
            .map_err(RestoreError::Assign)?;
    }
    if assign.count() == 0 {
        return Ok(0);
    }
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "restore: assigning"
    );
    consumer.assign(&assign).map_err(RestoreError::Assign)?;
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    let mut batcher = Batcher::new(true);
    let mut read = 0u64;
    while ranges.values().any(|r| !r.done) {
        // One clock reading per message, for the deadline and the batch.
        let now = Instant::now();
        if now >= deadline {
            batcher.flush(&mut |b| s.send_batch(b), None);
            return Err(RestoreError::Timeout(RESTORE_TIMEOUT.as_secs()));
        }
        if s.shutdown.load(Ordering::Relaxed) {
            break;
        }
        match consumer.poll(RESTORE_POLL) {
            Some(Ok(m)) => {
                // A handful of partitions: a scan, no key to allocate per message.
                let (topic, partition) = (m.topic(), m.partition());
                let Some(r) = ranges
                    .values_mut()
                    .find(|r| r.part.partition == partition && &*r.part.topic == topic)
                else {
                    continue;
                };
                if r.done || r.part.revoked.load(Ordering::Relaxed) {
                    r.done = true;
                    continue;
                }
                if m.offset() >= r.end {
                    r.done = true;
                    continue;
                }
                let stamp = m.timestamp().to_millis();
                if let Some(ts) = stamp {
                    r.part.saw(ts, m.offset());
                }
                let in_window =
                    r.from.is_some_and(|f| m.offset() >= f) || stamp.is_none_or(|t| t >= r.since);
                if in_window {
                    batcher.push(
                        &mut |b| s.send_batch(b),
                        &r.part,
                        super::batch::Incoming::of(&m, s.trusts_hints),
                        now,
                    );
                    read += 1;
                }
                if m.offset() + 1 >= r.end {
                    r.done = true;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // End of what the broker has: done only if the position
                // really reached the committed offset (an end reported
                // before the data is there, as after a broker restart,
                // must not cut the restore short).
                let positions = consumer.position().ok();
                for r in ranges.values_mut().filter(|r| r.part.partition == p) {
                    let at = positions.as_ref().and_then(|t| {
                        t.find_partition(&r.part.topic, p)
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            })
                    });
                    if at.is_some_and(|o| o >= r.end) {
                        r.done = true;
                    }
                }
            }
            Some(Err(e)) => {
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetOutOfRange) {
                    return Err(RestoreError::OutOfRange(e));
                }
                tracing::debug!(error = %e, "restore poll");
            }
            None => batcher.flush(&mut |b| s.send_batch(b), None),
        }
    }
    batcher.flush(&mut |b| s.send_batch(b), None);
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        read,
        "restore: read"
    );
    Ok(read)
}

/// The Kafka timestamp of each range's last committed message (the one
/// before its committed offset): where its restore window ends.
fn last_times(
    consumer: &BaseConsumer<Quiet>,
    ranges: &HashMap<(String, i32), Range>,
    tails: bool,
) -> HashMap<(String, i32), Millis> {
    let mut out = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for ((t, p), r) in ranges {
        if let Some(at) = reference(r, tails) {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(at));
        }
    }
    if tpl.count() == 0 || consumer.assign(&tpl).is_err() {
        return out;
    }
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    while out.len() < tpl.count() && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(RESTORE_POLL) {
            let key = (m.topic().to_string(), m.partition());
            if let Some(r) = ranges.get(&key) {
                if Some(m.offset()) == reference(r, tails) {
                    // A message without a timestamp: the wall clock, as before.
                    out.insert(key, m.timestamp().to_millis().unwrap_or_else(now_millis));
                }
            }
        }
    }
    for ((t, p), r) in ranges {
        if reference(r, tails).is_some() && !out.contains_key(&(t.clone(), *p)) {
            tracing::warn!(topic = %t, partition = p, "Could not read the last committed message's time; restoring the window before the wall clock.");
            out.insert((t.clone(), *p), now_millis());
        }
    }
    let _ = consumer.unassign();
    out
}

/// The offset whose message time a range's window is measured back from:
/// the last committed message, or the last one a checkpoint holds (when
/// the detectors keyed by source need the window before it).
fn reference(r: &Range, tails: bool) -> Option<i64> {
    if r.done {
        return None;
    }
    match r.from {
        Some(from) if tails && from > 0 => Some(from - 1),
        Some(_) => None,
        None => Some(r.end - 1),
    }
}
