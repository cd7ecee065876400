//! `credwatch run`: Kafka in, the same engine as `replay`, actions out.
//!
//! Threads:
//! - the **consumer** thread owns the group member. It polls, hands each
//!   message to the worker that owns its partition (in batches), commits
//!   what is done, and answers rebalances (in librdkafka's callbacks, which
//!   run on this thread inside `poll`).
//! - **workers** (`kafka.workers`) judge events. A partition belongs to one
//!   worker, so an account's events are judged in partition order.
//! - the **restorer** rebuilds the state of newly assigned partitions from
//!   their own recent past before they are consumed (see [`restore`]).
//! - librdkafka's own threads, among them the idempotent producer's.
//!
//! At least once: an offset is committed only when every message before
//! it is judged and every record it caused (actions, dead letters) is
//! acknowledged by the broker ([`offsets::Tracker`]).

pub mod embedded;
pub mod kafka;
pub mod offsets;
mod restore;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::action::ActionKind;
use crate::config::Settings;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::policy::Decision;
use crate::source::event::{parse_event, ParseLimits, Reject};
use crate::time::now_millis;

use kafka::{client_config, Logger, Role};
use offsets::Tracker;

/// Header of a dead letter that says why the message was rejected.
pub const REASON_HEADER: &str = "credwatch-reject-reason";

/// One assigned input partition.
pub struct Part {
    pub topic: Arc<str>,
    pub partition: i32,
    worker: usize,
    pub tracker: Tracker,
    revoked: AtomicBool,
    restoring: AtomicBool,
    /// The accounts seen on this partition, so that their state can be
    /// dropped when the partition moves away. Two generations, each as
    /// long as the restore window: older accounts have expired anyway.
    accounts: Mutex<Accounts>,
}

struct Accounts {
    current: HashSet<u64>,
    previous: HashSet<u64>,
    since: Instant,
}

impl Part {
    fn new(topic: &str, partition: i32, workers: usize) -> Part {
        // Spread partitions over workers; the topic matters when several
        // topics have few partitions each.
        let h = topic
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        Part {
            topic: topic.into(),
            partition,
            worker: h.wrapping_add(partition as usize) % workers,
            tracker: Tracker::default(),
            revoked: AtomicBool::new(false),
            restoring: AtomicBool::new(true),
            accounts: Mutex::new(Accounts {
                current: HashSet::new(),
                previous: HashSet::new(),
                since: Instant::now(),
            }),
        }
    }

    fn seen_all(&self, keys: &[u64], generation: Duration) {
        if keys.is_empty() {
            return;
        }
        let mut a = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if a.since.elapsed() > generation {
            a.previous = std::mem::take(&mut a.current);
            a.since = Instant::now();
        }
        a.current.extend(keys.iter().copied());
    }

    fn label(&self) -> [String; 2] {
        [self.topic.to_string(), self.partition.to_string()]
    }
}

/// Messages of one partition for its worker, in one buffer.
pub(crate) struct Batch {
    part: Arc<Part>,
    restore: bool,
    data: Vec<u8>,
    msgs: Vec<Msg>,
}

struct Msg {
    offset: i64,
    /// The message's Kafka timestamp (milliseconds), if it has one.
    created: Option<i64>,
    key: (u32, u32),
    /// `None`: a message without a value (a tombstone).
    payload: Option<(u32, u32)>,
    received: Instant,
}

impl Batch {
    fn new(part: Arc<Part>, restore: bool) -> Batch {
        Batch {
            part,
            restore,
            data: Vec::with_capacity(64 * 1024),
            msgs: Vec::with_capacity(256),
        }
    }

    fn push(
        &mut self,
        offset: i64,
        created: Option<i64>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        let mut put = |b: &[u8]| {
            let start = self.data.len() as u32;
            self.data.extend_from_slice(b);
            (start, self.data.len() as u32)
        };
        let key = put(key.unwrap_or_default());
        let payload = payload.map(put);
        self.msgs.push(Msg {
            offset,
            created,
            key,
            payload,
            received: Instant::now(),
        });
    }

    fn slice(&self, r: (u32, u32)) -> &[u8] {
        &self.data[r.0 as usize..r.1 as usize]
    }
}

/// Collects messages into per-partition batches and sends them to the
/// workers when big enough or when asked.
pub(crate) struct Batcher {
    open: Vec<Batch>,
    last: usize,
    since: Instant,
    restore: bool,
}

const BATCH_MESSAGES: usize = 512;
const BATCH_BYTES: usize = 256 * 1024;
const BATCH_AGE: Duration = Duration::from_millis(5);

impl Batcher {
    pub(crate) fn new(restore: bool) -> Batcher {
        Batcher {
            open: Vec::new(),
            last: 0,
            since: Instant::now(),
            restore,
        }
    }

    fn push(
        &mut self,
        shared: &Shared,
        part: &Arc<Part>,
        offset: i64,
        created: Option<i64>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        let i = match self.open.get(self.last) {
            Some(b) if Arc::ptr_eq(&b.part, part) => self.last,
            _ => match self.open.iter().position(|b| Arc::ptr_eq(&b.part, part)) {
                Some(i) => i,
                None => {
                    if self.open.is_empty() {
                        self.since = Instant::now();
                    }
                    self.open.push(Batch::new(part.clone(), self.restore));
                    self.open.len() - 1
                }
            },
        };
        self.last = i;
        let b = &mut self.open[i];
        b.push(offset, created, key, payload);
        if b.msgs.len() >= BATCH_MESSAGES || b.data.len() >= BATCH_BYTES {
            let b = self.open.swap_remove(i);
            shared.send(b.part.worker, Work::Batch(b));
        }
    }

    fn due(&self) -> bool {
        !self.open.is_empty() && self.since.elapsed() >= BATCH_AGE
    }

    /// Sends every open batch (or only those of `only`).
    fn flush(&mut self, shared: &Shared, only: Option<&dyn Fn(&Part) -> bool>) {
        let mut i = 0;
        while i < self.open.len() {
            if only.is_none_or(|f| f(&self.open[i].part)) {
                let b = self.open.swap_remove(i);
                if !b.msgs.is_empty() {
                    shared.send(b.part.worker, Work::Batch(b));
                }
            } else {
                i += 1;
            }
        }
        self.last = 0;
        self.since = Instant::now();
    }
}

pub(crate) enum Work {
    Batch(Batch),
    /// Drop these partitions' accounts; answer when done.
    Revoke(Vec<Arc<Part>>, SyncSender<()>),
    /// The restore of this partition is complete (everything before this
    /// in the queue was its restore).
    Restored(Arc<Part>, Instant),
    /// Answer when everything before this is judged.
    Drain(SyncSender<()>),
    Stop,
}

/// A record (action or dead letter) being produced, carried through
/// librdkafka as the delivery opaque.
pub struct Ack {
    part: Arc<Part>,
    offset: i64,
    received: Instant,
    topic: Arc<str>,
    key: Arc<[u8]>,
    payload: Arc<[u8]>,
    headers: Vec<(&'static str, String)>,
    dead_letter: bool,
    /// A login forwarded to the sources topic (not an action).
    forwarded: bool,
    attempts: u32,
}

/// Records the broker refused, waiting to be sent again.
type Retries = Mutex<Vec<(Instant, Box<Ack>)>>;

pub struct ProduceCtx {
    logger: Logger,
    metrics: Arc<Metrics>,
    retries: Arc<Retries>,
}

impl ClientContext for ProduceCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.logger.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.logger.error(error, reason)
    }
}

impl ProducerContext for ProduceCtx {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Ack>) {
        match result {
            Ok(_) => {
                self.logger.up();
                ack.part.tracker.acked(ack.offset);
                if ack.dead_letter {
                    self.metrics
                        .dead_letters
                        .with_label_values(&["delivered"])
                        .inc();
                } else if !ack.forwarded {
                    self.metrics
                        .action_ack_duration
                        .observe(ack.received.elapsed().as_secs_f64());
                }
            }
            Err((e, _)) => self.retry(ack, e),
        }
    }
}

impl ProduceCtx {
    /// The broker refused a record for good (with `message.timeout.ms = 0`
    /// librdkafka itself retries everything transient). It is sent again
    /// after a back-off, and the partition's offset is held meanwhile.
    fn retry(&self, mut ack: Box<Ack>, e: &KafkaError) {
        ack.attempts += 1;
        let wait = Duration::from_millis(500u64 << ack.attempts.min(6));
        if self.logger.allow("produce-refused").is_some() {
            tracing::error!(
                topic = %ack.topic,
                error = %e,
                retry_in_ms = wait.as_millis() as u64,
                "Kafka refused a record credwatch must write; it is retried, and the offsets of its input partition are not committed until it is written. Check that the topic exists and that credwatch may write to it."
            );
        }
        if ack.dead_letter {
            self.metrics
                .dead_letters
                .with_label_values(&["failed"])
                .inc();
        }
        self.retries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Instant::now() + wait, ack));
    }
}

type Prod = ThreadedProducer<ProduceCtx>;

/// The assigned partitions by topic and number.
type Assigned = HashMap<(Arc<str>, i32), Arc<Part>>;

/// What every thread of the service shares.
pub struct Shared {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    settings: Settings,
    producer: Prod,
    retries: Arc<Retries>,
    parts: Mutex<Assigned>,
    workers: Vec<SyncSender<Work>>,
    batcher: Mutex<Batcher>,
    resume: Mutex<Vec<Arc<Part>>>,
    restores: Mutex<Option<mpsc::Sender<Vec<Arc<Part>>>>>,
    restoring: AtomicUsize,
    shutdown: AtomicBool,
    joined: AtomicBool,
    generation: Duration,
    log: Logger,
    /// The account stage of a split pipeline writes every login with an
    /// address here, keyed by the address (see `kafka.sources_topic`).
    forward: Option<Arc<str>>,
    /// The stage that owns the engine gauges and event counts (the source
    /// stage judges the same events again).
    primary: bool,
    /// Other stages of the pipeline: this one is ready when they are.
    others: Vec<Arc<Shared>>,
}

impl Shared {
    fn send(&self, worker: usize, w: Work) {
        // A worker only goes away at shutdown, after the consumer.
        let _ = self.workers[worker].send(w);
    }

    /// A worker's lane holds the sweep watermark back while the worker
    /// owns partitions (a quiet partition may still deliver events as old
    /// as its lane's time); a worker without partitions does not.
    fn update_lanes(&self) {
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

    fn part(&self, topic: &str, partition: i32) -> Option<Arc<Part>> {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(Arc::<str>::from(topic), partition))
            .cloned()
    }

    fn all_parts(&self) -> Vec<Arc<Part>> {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Produces a record, waiting while librdkafka's queue is full.
    fn produce(&self, ack: Box<Ack>) {
        let topic = ack.topic.clone();
        let key = ack.key.clone();
        let payload = ack.payload.clone();
        let mut headers = OwnedHeaders::new_with_capacity(ack.headers.len());
        for (k, v) in &ack.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = BaseRecord::with_opaque_to(&topic, ack)
            .key(&*key)
            .payload(&*payload)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, r)) => {
                    self.producer.context().retry(r.delivery_opaque, &e);
                    return;
                }
            }
        }
    }

    fn resend_due(&self) {
        let due: Vec<Box<Ack>> = {
            let mut r = self.retries.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_empty() {
                return;
            }
            let now = Instant::now();
            let (due, wait): (Vec<_>, Vec<_>) = r.drain(..).partition(|(at, _)| *at <= now);
            *r = wait;
            due.into_iter().map(|(_, a)| a).collect()
        };
        for ack in due {
            if ack.part.revoked.load(Ordering::Relaxed) && !ack.dead_letter {
                // The new owner re-reads the event and emits it again.
                continue;
            }
            self.produce(ack);
        }
    }

    fn ready(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
            && self.restoring.load(Ordering::Relaxed) == 0
            && !self.shutdown.load(Ordering::Relaxed)
            && self.others.iter().all(|o| o.ready())
    }

    /// Commits what is done, of `parts` (or of every partition).
    fn commit(&self, consumer: &BaseConsumer<ConsumerCtx>, parts: &[Arc<Part>], mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        let mut offered = Vec::new();
        for p in parts {
            if let Some(o) = p.tracker.committable() {
                if tpl
                    .add_partition_offset(&p.topic, p.partition, Offset::Offset(o))
                    .is_ok()
                {
                    offered.push((p.clone(), o));
                }
            }
        }
        if offered.is_empty() {
            return;
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                for (p, o) in offered {
                    p.tracker.committed(o);
                }
                if matches!(mode, CommitMode::Sync) {
                    self.metrics.commits.with_label_values(&["ok"]).inc();
                }
            }
            Err(e) => {
                self.metrics.commits.with_label_values(&["failed"]).inc();
                if self.log.allow("commit").is_some() {
                    tracing::warn!(error = %e, "Offset commit failed; it is retried. Events after the last commit may be judged twice after a restart (same action ids).");
                }
            }
        }
    }
}

pub struct ConsumerCtx {
    shared: Arc<Shared>,
}

impl ClientContext for ConsumerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.shared.log.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.log.error(error, reason)
    }
    fn stats(&self, stats: Statistics) {
        self.shared.log.stats(&stats);
        let m = &self.shared.metrics;
        for (topic, t) in &stats.topics {
            for (&partition, p) in &t.partitions {
                if partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                if let Some(part) = self.shared.part(topic, partition) {
                    let [t, p2] = part.label();
                    m.consumer_lag
                        .with_label_values(&[&t, &p2])
                        .set(p.consumer_lag);
                }
            }
        }
        if self.shared.primary {
            m.observe_engine(&self.shared.engine);
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                self.shared
                    .metrics
                    .rebalances
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(error = %e, "Consumer group rebalance failed; librdkafka retries it.");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.assign(consumer, tpl)
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.shared.metrics.commits.with_label_values(&["ok"]).inc(),
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                self.shared
                    .metrics
                    .commits
                    .with_label_values(&["failed"])
                    .inc();
                for p in self.shared.all_parts() {
                    p.tracker.commit_failed();
                }
                if self.shared.log.allow("commit").is_some() {
                    tracing::warn!(error = %e, "Offset commit failed; it is retried.");
                }
            }
        }
    }
}

impl ConsumerCtx {
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let s = &self.shared;
        s.metrics.rebalances.with_label_values(&["assign"]).inc();
        let workers = s.workers.len();
        let mut new = Vec::new();
        {
            let mut parts = s.parts.lock().unwrap_or_else(|e| e.into_inner());
            for e in tpl.elements() {
                let part = Arc::new(Part::new(e.topic(), e.partition(), workers));
                parts.insert((part.topic.clone(), part.partition), part.clone());
                new.push(part);
            }
            s.metrics.partitions_assigned.set(parts.len() as i64);
        }
        s.update_lanes();
        s.joined.store(true, Ordering::Relaxed);
        if new.is_empty() {
            return;
        }
        // Consume nothing of these until their state is rebuilt.
        if let Err(e) = consumer.pause(tpl) {
            tracing::warn!(error = %e, "Cannot pause newly assigned partitions during their restore.");
        }
        s.restoring.fetch_add(new.len(), Ordering::Relaxed);
        s.metrics.restoring_partitions.add(new.len() as i64);
        tracing::info!(
            partitions = %describe(&new),
            "Partitions assigned; rebuilding their state before consuming."
        );
        let sent = s
            .restores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|tx| tx.send(new.clone()).is_ok())
            .unwrap_or(false);
        if !sent {
            for p in new {
                s.send(p.worker, Work::Restored(p, Instant::now()));
            }
        }
    }

    /// Finishes the work of partitions that are leaving, commits it, and
    /// drops their accounts' state.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let s = &self.shared;
        s.metrics.rebalances.with_label_values(&["revoke"]).inc();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(s.settings.config.kafka.drain_timeout_secs);
        let gone: Vec<Arc<Part>> = {
            let mut parts = s.parts.lock().unwrap_or_else(|e| e.into_inner());
            let gone = tpl
                .elements()
                .iter()
                .filter_map(|e| parts.remove(&(Arc::<str>::from(e.topic()), e.partition())))
                .collect();
            s.metrics.partitions_assigned.set(parts.len() as i64);
            gone
        };
        s.update_lanes();
        if gone.is_empty() {
            return;
        }
        let finished = drain(s, &gone, deadline);
        s.commit(consumer, &gone, CommitMode::Sync);
        let mut restoring = 0;
        for p in &gone {
            p.revoked.store(true, Ordering::Relaxed);
            if p.restoring.swap(false, Ordering::Relaxed) {
                restoring += 1;
            }
            let [t, n] = p.label();
            let _ = s.metrics.consumer_lag.remove_label_values(&[&t, &n]);
        }
        if restoring > 0 {
            s.restoring.fetch_sub(restoring, Ordering::Relaxed);
            s.metrics.restoring_partitions.sub(restoring as i64);
        }
        tracing::info!(
            partitions = %describe(&gone),
            finished,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Partitions revoked: in-flight events judged, their actions acknowledged and offsets committed; their accounts' state dropped."
        );
        if !finished {
            tracing::warn!(
                drain_timeout_secs = s.settings.config.kafka.drain_timeout_secs,
                "Revoke: not everything in flight was finished in time; the new owner judges the rest again (same action ids)."
            );
        }
    }
}

/// Sends what is batched for `parts`, waits until their workers have
/// judged it (and dropped the partitions' accounts) and the broker has
/// acknowledged every record it caused. False if `deadline` came first.
fn drain(s: &Shared, parts: &[Arc<Part>], deadline: Instant) -> bool {
    s.batcher.lock().unwrap_or_else(|e| e.into_inner()).flush(
        s,
        Some(&|p: &Part| parts.iter().any(|q| std::ptr::eq(&**q, p))),
    );
    let mut by_worker: HashMap<usize, Vec<Arc<Part>>> = HashMap::new();
    for p in parts {
        by_worker.entry(p.worker).or_default().push(p.clone());
    }
    let mut answers = Vec::new();
    for (w, ps) in by_worker {
        let (tx, rx) = mpsc::sync_channel(1);
        s.send(w, Work::Revoke(ps, tx));
        answers.push(rx);
    }
    for rx in answers {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            return false;
        }
    }
    wait_acked(s, parts, deadline)
}

fn wait_acked(s: &Shared, parts: &[Arc<Part>], deadline: Instant) -> bool {
    loop {
        if parts.iter().all(|p| p.tracker.pending() == 0) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        s.resend_due();
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn describe(parts: &[Arc<Part>]) -> String {
    let mut v: Vec<String> = parts
        .iter()
        .map(|p| format!("{}[{}]", p.topic, p.partition))
        .collect();
    v.sort();
    v.join(",")
}

/// A running service.
pub struct Service {
    shared: Arc<Shared>,
    consumer: Option<JoinHandle<anyhow::Result<()>>>,
    workers: Vec<JoinHandle<()>>,
    restorer: Option<JoinHandle<()>>,
    /// The source stage, when `kafka.sources_topic` is set.
    sources: Option<Box<Service>>,
}

/// Where one stage of the pipeline stands.
struct Stage {
    forward: Option<Arc<str>>,
    primary: bool,
    others: Vec<Arc<Shared>>,
    sources: Option<Box<Service>>,
}

/// What the HTTP endpoint asks of the service.
pub trait Status: Send + Sync {
    fn ready(&self) -> bool;
}

impl Status for Shared {
    fn ready(&self) -> bool {
        Shared::ready(self)
    }
}

impl Service {
    /// Opens the GeoIP databases, connects to Kafka and starts consuming.
    /// Returns once the threads are running (the group join goes on).
    ///
    /// With `kafka.sources_topic` set (and `password_spray` enabled), two
    /// stages run: the account stage (every detector but `password_spray`)
    /// forwards each login with an address to the sources topic, keyed by
    /// the address; the source stage (group `<group_id>.sources`) judges
    /// `password_spray` from that topic.
    pub fn start(settings: Settings, metrics: Arc<Metrics>) -> anyhow::Result<Service> {
        let k = &settings.config.kafka;
        let topic = k.sources_topic.trim().to_string();
        if topic.is_empty() || !settings.config.detectors.password_spray.enabled {
            return Self::start_stage(
                settings,
                metrics,
                Stage {
                    forward: None,
                    primary: true,
                    others: Vec::new(),
                    sources: None,
                },
            );
        }
        let mut src = settings.clone();
        src.config.kafka.group_id = format!("{}.sources", k.group_id);
        src.config.kafka.input_topics = vec![topic.clone()];
        src.config.kafka.sources_topic = String::new();
        let d = &mut src.config.detectors;
        d.impossible_travel.enabled = false;
        d.failed_login_burst.enabled = false;
        d.send_volume.enabled = false;
        d.sender_mismatch.enabled = false;
        d.backscatter.enabled = false;
        let sources = Self::start_stage(
            src,
            metrics.clone(),
            Stage {
                forward: None,
                primary: false,
                others: Vec::new(),
                sources: None,
            },
        )?;
        let mut acc = settings;
        acc.config.detectors.password_spray.enabled = false;
        Self::start_stage(
            acc,
            metrics,
            Stage {
                forward: Some(topic.as_str().into()),
                primary: true,
                others: vec![sources.shared.clone()],
                sources: Some(Box::new(sources)),
            },
        )
    }

    fn start_stage(
        settings: Settings,
        metrics: Arc<Metrics>,
        stage: Stage,
    ) -> anyhow::Result<Service> {
        let k = &settings.config.kafka;
        let mut engine = Engine::new(&settings)?;
        let n = k.workers;
        engine.set_lanes(n);
        let engine = Arc::new(engine);
        let retries: Arc<Retries> = Arc::default();
        let producer: Prod = client_config(k, Role::Producer)
            .create_with_context(ProduceCtx {
                logger: Logger::new("producer", Some(metrics.clone())),
                metrics: metrics.clone(),
                retries: retries.clone(),
            })
            .with_context(|| {
                format!(
                    "cannot create the Kafka producer for brokers {:?} (check kafka.brokers and kafka.properties)",
                    k.brokers
                )
            })?;
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = mpsc::sync_channel(64);
            senders.push(tx);
            receivers.push(rx);
        }
        let (restore_tx, restore_rx) = mpsc::channel();
        let generation = Duration::from_secs(k.restore_secs.max(3600));
        let shared = Arc::new(Shared {
            engine,
            metrics: metrics.clone(),
            producer,
            retries,
            parts: Mutex::new(HashMap::new()),
            workers: senders,
            batcher: Mutex::new(Batcher::new(false)),
            resume: Mutex::new(Vec::new()),
            restores: Mutex::new(Some(restore_tx)),
            restoring: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            joined: AtomicBool::new(false),
            generation,
            log: Logger::new("consumer", Some(metrics.clone())),
            forward: stage.forward,
            primary: stage.primary,
            others: stage.others,
            settings,
        });
        let consumer: BaseConsumer<ConsumerCtx> = client_config(k_of(&shared), Role::Consumer)
            .create_with_context(ConsumerCtx {
                shared: shared.clone(),
            })
            .context(
                "cannot create the Kafka consumer (check kafka.brokers and kafka.properties)",
            )?;
        let topics: Vec<&str> = k_of(&shared)
            .input_topics
            .iter()
            .map(String::as_str)
            .collect();
        consumer
            .subscribe(&topics)
            .with_context(|| format!("cannot subscribe to kafka.input_topics {topics:?}"))?;
        let workers = receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("judge-{i}"))
                    .spawn(move || worker(i, rx, &s))
                    .expect("spawn a worker thread")
            })
            .collect();
        let restorer = {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("restorer".into())
                .spawn(move || restore::run(restore_rx, &s))
                .expect("spawn the restorer thread")
        };
        if shared.settings.config.geoip.reload_check_secs > 0 {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("geoip-watch".into())
                .spawn(move || watch_geoip(&s))
                .expect("spawn the GeoIP watcher");
        }
        let consumer = {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("consumer".into())
                .spawn(move || consume(consumer, &s))
                .expect("spawn the consumer thread")
        };
        tracing::info!(
            brokers = %k_of(&shared).brokers,
            group = %k_of(&shared).group_id,
            topics = ?topics_of(&shared),
            workers = n,
            "Service started; joining the consumer group."
        );
        Ok(Service {
            shared,
            consumer: Some(consumer),
            workers,
            restorer: Some(restorer),
            sources: stage.sources,
        })
    }

    /// Consuming, and the state of every assigned partition restored.
    pub fn ready(&self) -> bool {
        self.shared.ready()
    }

    pub fn status(&self) -> Arc<dyn Status> {
        self.shared.clone()
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.shared.engine
    }

    /// Input partitions assigned to this instance.
    pub fn partitions(&self) -> usize {
        self.shared
            .parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Offsets handed over by the workers, summed over assigned partitions
    /// (+1 each: how many messages were judged, if partitions start at 0).
    pub fn processed(&self) -> i64 {
        self.shared
            .all_parts()
            .iter()
            .map(|p| p.tracker.processed_offset() + 1)
            .sum()
    }

    /// True when a consumer thread stopped on its own (an error).
    pub fn stopped(&self) -> bool {
        self.consumer.as_ref().is_none_or(|c| c.is_finished())
            || self.sources.as_ref().is_some_and(|s| s.stopped())
    }

    /// Stops consuming, judges what is in flight, waits for its actions to
    /// be acknowledged, commits, leaves the group and stops the threads.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        let result = match self.consumer.take() {
            Some(c) => c
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the consumer thread panicked"))),
            None => Ok(()),
        };
        self.shared
            .restores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = self.restorer.take() {
            let _ = r.join();
        }
        for w in &self.shared.workers {
            let _ = w.send(Work::Stop);
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let _ = self.shared.producer.flush(Duration::from_secs(5));
        // The source stage last: what the account stage forwarded is
        // acknowledged by now, and is judged after a restart at the latest.
        match self.sources.take() {
            Some(src) => result.and(src.shutdown()),
            None => result,
        }
    }

    /// Messages of the sources topic judged by the source stage (0 without one).
    pub fn sources_processed(&self) -> i64 {
        self.sources.as_ref().map_or(0, |s| s.processed())
    }
}

fn k_of(s: &Shared) -> &crate::config::KafkaConfig {
    &s.settings.config.kafka
}

fn topics_of(s: &Shared) -> Vec<String> {
    k_of(s).input_topics.clone()
}

/// The consumer thread.
fn consume(consumer: BaseConsumer<ConsumerCtx>, s: &Arc<Shared>) -> anyhow::Result<()> {
    let commit_every = Duration::from_millis(k_of(s).commit_interval_ms);
    let mut last_commit = Instant::now();
    let mut last_engine = Instant::now();
    let mut cached: Option<Arc<Part>> = None;
    while !s.shutdown.load(Ordering::Relaxed) {
        resume_restored(&consumer, s);
        s.resend_due();
        // Take what is already fetched without waiting; when nothing is,
        // hand the open batches to the workers at once (latency), then wait.
        let mut polled = consumer.poll(Duration::ZERO);
        if polled.is_none() {
            s.batcher
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .flush(s, None);
            polled = consumer.poll(Duration::from_millis(10));
        }
        match polled {
            Some(Ok(m)) => {
                s.log.up();
                let part = match &cached {
                    Some(p)
                        if p.partition == m.partition()
                            && &*p.topic == m.topic()
                            && !p.revoked.load(Ordering::Relaxed) =>
                    {
                        p.clone()
                    }
                    _ => match s.part(m.topic(), m.partition()) {
                        Some(p) => {
                            cached = Some(p.clone());
                            p
                        }
                        None => continue,
                    },
                };
                let mut b = s.batcher.lock().unwrap_or_else(|e| e.into_inner());
                b.push(
                    s,
                    &part,
                    m.offset(),
                    m.timestamp().to_millis(),
                    m.key(),
                    m.payload(),
                );
                if b.due() {
                    b.flush(s, None);
                }
            }
            Some(Err(e)) => {
                if s.log.allow("poll").is_some() {
                    tracing::warn!(error = %e, "Kafka consumer error; consumption goes on.");
                }
            }
            None => {
                s.batcher
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .flush(s, None);
            }
        }
        if last_commit.elapsed() >= commit_every {
            s.commit(&consumer, &s.all_parts(), CommitMode::Async);
            last_commit = Instant::now();
        }
        if last_engine.elapsed() >= Duration::from_secs(1) && s.primary {
            s.metrics.observe_engine(&s.engine);
            last_engine = Instant::now();
        }
    }
    // Shutdown: judge what was read, wait for its actions, commit, leave.
    s.metrics.ready.set(0);
    let parts = s.all_parts();
    let deadline = Instant::now() + Duration::from_secs(k_of(s).drain_timeout_secs);
    s.batcher
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .flush(s, None);
    let mut answers = Vec::new();
    for w in 0..s.workers.len() {
        let (tx, rx) = mpsc::sync_channel(1);
        s.send(w, Work::Drain(tx));
        answers.push(rx);
    }
    let mut finished = answers.into_iter().all(|rx| {
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    });
    finished = finished && wait_acked(s, &parts, deadline);
    s.commit(&consumer, &parts, CommitMode::Sync);
    consumer.unsubscribe();
    drop(consumer);
    tracing::info!(
        finished,
        "Consumer stopped: in-flight events judged, actions acknowledged, offsets committed, group left."
    );
    Ok(())
}

fn resume_restored(consumer: &BaseConsumer<ConsumerCtx>, s: &Shared) {
    let done: Vec<Arc<Part>> =
        std::mem::take(&mut *s.resume.lock().unwrap_or_else(|e| e.into_inner()));
    if done.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for p in &done {
        if !p.revoked.load(Ordering::Relaxed) {
            tpl.add_partition(&p.topic, p.partition);
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.resume(&tpl) {
            tracing::error!(error = %e, "Cannot resume restored partitions.");
        }
    }
}

/// The size and modification time of each configured GeoIP file.
fn geoip_stamp(cfg: &crate::config::GeoIpConfig) -> Vec<Option<(u64, std::time::SystemTime)>> {
    [&cfg.city_db, &cfg.asn_db, &cfg.anonymous_db]
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

/// Reloads the GeoIP databases when a file changes (geoipupdate replaces
/// them in place), verified before use; until the service stops.
fn watch_geoip(s: &Shared) {
    let cfg = &s.settings.config.geoip;
    let every = Duration::from_secs(cfg.reload_check_secs);
    let mut seen = geoip_stamp(cfg);
    let mut slept = Duration::ZERO;
    while !s.shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        slept += Duration::from_millis(200);
        if slept < every {
            continue;
        }
        slept = Duration::ZERO;
        let now = geoip_stamp(cfg);
        if now == seen {
            continue;
        }
        match crate::geo::GeoIp::open(cfg) {
            Ok(geo) => {
                s.engine.reload_geo(geo);
                seen = now;
                if s.primary {
                    s.metrics.geoip_reloads.with_label_values(&["ok"]).inc();
                }
                tracing::info!("GeoIP databases changed on disk: reloaded and in use.");
            }
            Err(e) => {
                // The old databases stay in use until the files change
                // again (geoipupdate replaces a file whole; a bad copy by
                // hand is reported here, once).
                if s.primary {
                    s.metrics.geoip_reloads.with_label_values(&["failed"]).inc();
                }
                tracing::error!(error = %e, "GeoIP databases changed on disk but cannot be used; the previous ones stay in use.");
                seen = now;
            }
        }
    }
}

/// A worker: judges the events of its partitions.
fn worker(lane: usize, rx: Receiver<Work>, s: &Shared) {
    let mut decisions = Vec::new();
    let mut local = Local {
        events: s.metrics.event_counts(),
        decision: s.metrics.decision_duration.local(),
        lag: s.metrics.event_lag.local(),
        keys: Vec::new(),
    };
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Work::Batch(b)) => judge(lane, &b, s, &mut decisions, &mut local),
            Ok(Work::Revoke(parts, done)) => {
                let mut keys: HashSet<u64> = HashSet::new();
                for p in &parts {
                    p.revoked.store(true, Ordering::Relaxed);
                    let a = p.accounts.lock().unwrap_or_else(|e| e.into_inner());
                    keys.extend(a.current.iter().chain(a.previous.iter()));
                }
                let removed = s.engine.forget_accounts(&|k| keys.contains(&k));
                tracing::debug!(
                    accounts = keys.len(),
                    entries = removed,
                    "State of revoked partitions dropped."
                );
                let _ = done.send(());
            }
            Ok(Work::Restored(p, started)) => {
                tracing::debug!(
                    lane,
                    partition = p.partition,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "restore: partition judged"
                );
                if p.restoring.swap(false, Ordering::Relaxed) {
                    s.restoring.fetch_sub(1, Ordering::Relaxed);
                    s.metrics.restoring_partitions.dec();
                }
                s.metrics
                    .restore_duration
                    .observe(started.elapsed().as_secs_f64());
                s.resume.lock().unwrap_or_else(|e| e.into_inner()).push(p);
            }
            Ok(Work::Drain(done)) => {
                let _ = done.send(());
            }
            Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// What a worker counts locally and hands over once per batch.
struct Local {
    events: crate::metrics::EventCounts,
    decision: prometheus::local::LocalHistogram,
    lag: prometheus::local::LocalHistogram,
    keys: Vec<u64>,
}

fn judge(lane: usize, b: &Batch, s: &Shared, decisions: &mut Vec<Decision>, local: &mut Local) {
    let part = &b.part;
    if part.revoked.load(Ordering::Relaxed) {
        return;
    }
    judge_batch(lane, b, s, decisions, local);
    part.seen_all(&local.keys, s.generation);
    local.keys.clear();
    local.events.flush(&s.metrics);
    local.decision.flush();
    local.lag.flush();
}

fn judge_batch(
    lane: usize,
    b: &Batch,
    s: &Shared,
    decisions: &mut Vec<Decision>,
    local: &mut Local,
) {
    let part = &b.part;
    let config = &s.settings.config;
    let now = now_millis();
    let limits = ParseLimits::new(config.events.max_bytes, now);
    for m in &b.msgs {
        let parsed = match m.payload {
            None => Err(Reject::empty()),
            Some(r) if (r.1 - r.0) as usize > limits.max_bytes => {
                Err(Reject::too_large((r.1 - r.0) as usize, limits.max_bytes))
            }
            Some(r) => parse_event(b.slice(r), &limits),
        };
        match parsed {
            Err(_) if b.restore => {}
            Err(reject) => {
                s.metrics
                    .rejected
                    .with_label_values(&[reject.reason.as_str()])
                    .inc();
                if s.log.allow(reject.reason.as_str()).is_some() {
                    tracing::warn!(
                        reason = reject.reason.as_str(),
                        detail = %reject.detail,
                        topic = %part.topic,
                        partition = part.partition,
                        offset = m.offset,
                        "Rejected a message; copied to the dead-letter topic (logged at most every 30 s per reason)."
                    );
                }
                part.tracker.begin(m.offset, 1);
                s.produce(Box::new(Ack {
                    part: part.clone(),
                    offset: m.offset,
                    received: m.received,
                    topic: config.kafka.dead_letter_topic.as_str().into(),
                    key: b.slice(m.key).into(),
                    payload: m.payload.map(|r| b.slice(r)).unwrap_or_default().into(),
                    headers: vec![
                        (REASON_HEADER, reject.reason.as_str().to_string()),
                        ("credwatch-reject-detail", reject.detail.to_string()),
                        ("credwatch-source-topic", part.topic.to_string()),
                        ("credwatch-source-partition", part.partition.to_string()),
                        ("credwatch-source-offset", m.offset.to_string()),
                    ],
                    dead_letter: true,
                    forwarded: false,
                    attempts: 0,
                }));
            }
            Ok(event) => {
                local.keys.push(event.key);
                s.engine.process_in_lane(lane, &event, Some(now), decisions);
                if b.restore {
                    decisions.clear();
                    s.metrics.restored_events.inc();
                    continue;
                }
                if s.primary {
                    local.events.add(&event);
                }
                if let Some(c) = m.created {
                    local.lag.observe((now - c).max(0) as f64 / 1000.0);
                }
                local.decision.observe(m.received.elapsed().as_secs_f64());
                let emits = decisions
                    .iter()
                    .filter(|d| matches!(d, Decision::Emit(_)))
                    .count();
                let forward = s
                    .forward
                    .as_ref()
                    .zip(event.src_ip)
                    .filter(|_| event.kind == crate::source::event::Kind::Auth);
                part.tracker
                    .begin(m.offset, emits as u32 + forward.is_some() as u32);
                if let (Some((topic, ip)), Some(r)) = (forward, m.payload) {
                    s.produce(Box::new(Ack {
                        part: part.clone(),
                        offset: m.offset,
                        received: m.received,
                        topic: topic.clone(),
                        key: ip.to_string().into_bytes().into(),
                        payload: b.slice(r).into(),
                        headers: Vec::new(),
                        dead_letter: false,
                        forwarded: true,
                        attempts: 0,
                    }));
                }
                for d in decisions.drain(..) {
                    s.metrics.decision(&d);
                    match d {
                        Decision::Emit(a) => {
                            let action = match a.data.action {
                                ActionKind::Lock => "lock",
                                ActionKind::Alert => "alert",
                            };
                            s.metrics.actions.with_label_values(&[action]).inc();
                            tracing::info!(
                                account = %a.data.account,
                                detector = a.data.detector,
                                action,
                                id = %a.id,
                                "Action emitted."
                            );
                            s.produce(Box::new(Ack {
                                part: part.clone(),
                                offset: m.offset,
                                received: m.received,
                                topic: config.kafka.actions_topic.as_str().into(),
                                key: a.data.account.as_bytes().into(),
                                payload: a.to_json().into_bytes().into(),
                                headers: Vec::new(),
                                dead_letter: false,
                                forwarded: false,
                                attempts: 0,
                            }));
                        }
                        joined @ Decision::Enrich { .. } => joined.log_joined(),
                    }
                }
            }
        }
        if !b.restore {
            part.tracker.processed(m.offset);
        }
    }
}

pub(crate) const RESTORE_POLL: Duration = Duration::from_millis(100);
