//! What one stage's threads share: the partitions this instance owns, the
//! queues to the workers, the batcher, the restore bookkeeping, and the
//! engine and producer the partitions' events go through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::partition::KeyBudget;
use super::{Batch, Feed, Part, Work};
use crate::engine::Engine;
use crate::geo::GeoIpConfig;
use crate::kafka::{KafkaConfig, Logger};
use crate::metrics::Metrics;
use crate::sink::kafka::Producer;
use crate::source::event::EventsConfig;

/// The assigned partitions by topic and number.
type Assigned = HashMap<(Arc<str>, i32), Arc<Part>>;

/// What the consumer, the restorer, the workers and the GeoIP watcher of
/// one pipeline stage share.
pub struct Input {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    /// The sections the stage's threads read.
    pub(crate) kafka: KafkaConfig,
    pub(crate) events: EventsConfig,
    pub(crate) geoip: GeoIpConfig,
    pub(crate) producer: Producer,
    pub(crate) parts: Mutex<Assigned>,
    pub(crate) workers: Vec<SyncSender<Work>>,
    /// The consumer thread's open and held batches (a revoke, in a
    /// callback on the same thread, hands them over too).
    pub(crate) feed: Mutex<Feed>,
    pub(crate) resume: Mutex<Vec<Arc<Part>>>,
    pub(crate) restores: Mutex<Option<mpsc::Sender<Vec<Arc<Part>>>>>,
    pub(crate) restoring: AtomicUsize,
    pub(crate) shutdown: AtomicBool,
    pub(crate) joined: AtomicBool,
    pub(crate) generation: Duration,
    /// The source stage of a split pipeline: events carry the account
    /// stage's profile hints (`ProfileHint`).
    pub(crate) trusts_hints: bool,
    /// What the partitions may remember of their accounts, in all.
    pub(crate) keys: KeyBudget,
    pub(crate) log: Logger,
    /// The stage that owns the engine gauges and event counts (the source
    /// stage judges the same events again).
    pub(crate) primary: bool,
    /// The lock view this stage's own locks and unlocks go to at once
    /// (the judging stage, with a policy server configured).
    pub(crate) locks: Option<Arc<crate::enforce::LockView>>,
    /// `kafka.state_topic` (durable state), and its partition count.
    pub(crate) state_topic: Option<Arc<str>>,
    pub(crate) state_partitions: usize,
}

impl Input {
    pub(crate) fn send(&self, worker: usize, w: Work) {
        // A worker only goes away at shutdown, after the consumer.
        let _ = self.workers[worker].send(w);
    }

    /// Hands a batch to the worker that owns its partition, waiting for
    /// room (the restorer; the consumer holds batches back instead).
    pub(crate) fn send_batch(&self, b: Batch) {
        self.send(b.part.worker, Work::Batch(b));
    }

    pub(crate) fn feed(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn kafka(&self) -> &KafkaConfig {
        &self.kafka
    }

    /// A worker's lane holds the sweep watermark back while the worker
    /// owns partitions (a quiet partition may still deliver events as old
    /// as its lane's time); a worker without partitions does not.
    pub(crate) fn update_lanes(&self) {
        let mut owned = vec![0usize; self.workers.len()];
        for p in self
            .parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            owned[p.worker] += 1;
        }
        for (lane, n) in owned.into_iter().enumerate() {
            if n == 0 {
                self.engine.lane_reset(lane);
            } else {
                self.engine.lane_wake(lane);
            }
        }
    }

    pub(crate) fn part(&self, topic: &str, partition: i32) -> Option<Arc<Part>> {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(Arc::<str>::from(topic), partition))
            .cloned()
    }

    pub(crate) fn all_parts(&self) -> Vec<Arc<Part>> {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// In the group, every assigned partition's state restored, not
    /// stopping.
    pub(crate) fn consuming(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
            && self.restoring.load(Ordering::Relaxed) == 0
            && !self.shutdown.load(Ordering::Relaxed)
    }
}
