//! Feeds the [`LockView`] from the actions topic: every instance reads every
//! partition of it, from the start of its retention, outside any consumer
//! group (nothing is committed), so that a lock decided by any instance is
//! refused by all, and a restarted instance refuses what was locked before.
//!
//! Until the topic has been read up to where it ended at start, the view
//! says it has not caught up (`credwatch_lock_view_caught_up` 0, `/readyz`
//! not ready): a lock decided earlier may not be refused yet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{Change, LockView};
use crate::kafka::{client_config, KafkaConfig, Logger, Quiet, Role};
use crate::metrics::Metrics;
use crate::time::now_millis;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often new partitions of the actions topic are looked for.
const METADATA_EVERY: Duration = Duration::from_secs(30);
/// How often expired locks and old unlocks are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Starts the thread; it stops when `stop` is set.
pub fn start(
    view: Arc<LockView>,
    k: &KafkaConfig,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, KafkaError> {
    let mut cfg = client_config(k, Role::Restorer);
    cfg.set("group.id", format!("{}.locks", k.group_id));
    cfg.set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer<Quiet> = cfg
        .create_with_context(Quiet(Logger::new("lock-view", None)))
        .map_err(crate::kafka::redact_error)?;
    let topic = k.actions_topic.clone();
    Ok(std::thread::Builder::new()
        .name("lock-view".into())
        .spawn(move || run(consumer, &topic, &view, &metrics, &stop))
        .expect("spawn the lock view thread"))
}

/// Where each partition is read to, and where it ended at start.
struct Progress {
    /// Partition → (high watermark at assignment, caught up).
    parts: HashMap<i32, (i64, bool)>,
}

fn partitions(c: &BaseConsumer<Quiet>, topic: &str) -> Option<Vec<i32>> {
    let md = c.fetch_metadata(Some(topic), ADMIN_TIMEOUT).ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    Some(t.partitions().iter().map(|p| p.id()).collect())
}

fn run(c: BaseConsumer<Quiet>, topic: &str, view: &LockView, metrics: &Metrics, stop: &AtomicBool) {
    let mut progress = Progress {
        parts: HashMap::new(),
    };
    let mut warned = false;
    let mut last_metadata = Instant::now() - METADATA_EVERY;
    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if last_metadata.elapsed() >= METADATA_EVERY || progress.parts.is_empty() {
            last_metadata = Instant::now();
            match partitions(&c, topic) {
                Some(ps) => {
                    let new: Vec<i32> = ps
                        .into_iter()
                        .filter(|p| !progress.parts.contains_key(p))
                        .collect();
                    if !new.is_empty() {
                        assign(&c, topic, &new, &mut progress);
                    }
                }
                None => {
                    if !warned {
                        tracing::warn!(topic, "The actions topic (kafka.actions_topic) cannot be read yet; the lock view retries, and the policy servers let everyone through until it can (fail open).");
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            }
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            view.sweep(now_millis());
            metrics.locks_enforced.set(view.locked());
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let change = match m.payload().map(Change::parse) {
                    Some(Ok(Some(ch))) => {
                        if view.apply(&ch) {
                            if ch.lock {
                                "lock"
                            } else {
                                "unlock"
                            }
                        } else {
                            "ignored"
                        }
                    }
                    Some(Ok(None)) => "ignored",
                    Some(Err(_)) | None => "unreadable",
                };
                metrics.lock_view_actions.with_label_values(&[change]).inc();
                metrics.locks_enforced.set(view.locked());
                if let Some((end, done)) = progress.parts.get_mut(&m.partition()) {
                    if m.offset() + 1 >= *end {
                        *done = true;
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some((_, done)) = progress.parts.get_mut(&p) {
                    *done = true;
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "lock view poll"),
            None => {}
        }
        if !view.caught_up()
            && !progress.parts.is_empty()
            && progress.parts.values().all(|(_, d)| *d)
        {
            view.set_caught_up();
            metrics.lock_view_caught_up.set(1);
            tracing::info!(
                locked = view.locked(),
                "The lock view has read the actions topic: locked accounts are refused by the policy servers."
            );
        }
    }
}

/// Reads `new` partitions from their start, beside those already read.
fn assign(c: &BaseConsumer<Quiet>, topic: &str, new: &[i32], progress: &mut Progress) {
    for &p in new {
        let end = c
            .fetch_watermarks(topic, p, ADMIN_TIMEOUT)
            .map(|(_, hi)| hi)
            .unwrap_or(0);
        // An empty partition has nothing to catch up on.
        let (lo, _) = c
            .fetch_watermarks(topic, p, ADMIN_TIMEOUT)
            .unwrap_or((0, 0));
        progress.parts.insert(p, (end, end <= lo));
    }
    let positions = c.position().ok();
    let mut tpl = TopicPartitionList::new();
    for &p in progress.parts.keys() {
        let at = positions
            .as_ref()
            .and_then(|t| t.find_partition(topic, p))
            .map(|e| e.offset())
            .filter(|o| matches!(o, Offset::Offset(_)))
            .unwrap_or(Offset::Beginning);
        let _ = tpl.add_partition_offset(topic, p, at);
    }
    if let Err(e) = c.assign(&tpl) {
        tracing::warn!(error = %e, "The lock view cannot read the actions topic's partitions; it retries.");
        for p in new {
            progress.parts.remove(p);
        }
    }
}
