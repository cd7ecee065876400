//! The group member: polls, hands each message to the worker that owns its
//! partition (in batches), commits what is done, and answers rebalances
//! (in librdkafka's callbacks, which run on the consumer thread inside
//! `poll`): an assigned partition is paused until the restorer rebuilt its
//! state; a revoked one is drained, committed and its accounts dropped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;

use super::queue::PartQueue;
use super::{Input, Part, Work};
use crate::kafka::commit::commit_finished;

/// Commits what is done, of `parts`.
fn commit(s: &Input, consumer: &BaseConsumer<ConsumerCtx>, parts: &[Arc<Part>], mode: CommitMode) {
    let done = parts.iter().map(|p| (&*p.topic, p.partition, &p.tracker));
    match commit_finished(consumer, done, mode) {
        Ok(false) => {}
        Ok(true) => {
            if matches!(mode, CommitMode::Sync) {
                s.metrics.commits.with_label_values(&["ok"]).inc();
            }
        }
        Err(e) => {
            s.metrics.commits.with_label_values(&["failed"]).inc();
            if s.log.allow("commit").is_some() {
                tracing::warn!(error = %e, "Offset commit failed; it is retried. Events after the last commit may be judged twice after a restart (same action ids).");
            }
        }
    }
}

pub struct ConsumerCtx {
    pub(crate) shared: Arc<Input>,
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
            // The gauge is the judging stage's; the source and log stages
            // would overwrite it with their own topics' partitions.
            if s.primary {
                s.metrics.partitions_assigned.set(parts.len() as i64);
            }
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
        let deadline = started + Duration::from_secs(s.kafka.drain_timeout_secs);
        let gone: Vec<Arc<Part>> = {
            let mut parts = s.parts.lock().unwrap_or_else(|e| e.into_inner());
            let gone = tpl
                .elements()
                .iter()
                .filter_map(|e| parts.remove(&(Arc::<str>::from(e.topic()), e.partition())))
                .collect();
            if s.primary {
                s.metrics.partitions_assigned.set(parts.len() as i64);
            }
            gone
        };
        s.update_lanes();
        if gone.is_empty() {
            return;
        }
        let finished = drain(s, &gone, deadline);
        commit(s, consumer, &gone, CommitMode::Sync);
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
                drain_timeout_secs = s.kafka.drain_timeout_secs,
                "Revoke: not everything in flight was finished in time; the new owner judges the rest again (same action ids)."
            );
        }
    }
}

/// Sends what is batched for `parts`, waits until their workers have
/// judged it (and dropped the partitions' accounts) and the broker has
/// acknowledged every record it caused. False if `deadline` came first.
fn drain(s: &Input, parts: &[Arc<Part>], deadline: Instant) -> bool {
    s.feed().send_all(
        &s.workers,
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
    if !wait_acked(s, parts, deadline) {
        return false;
    }
    super::durable::mark_end(parts, s);
    wait_acked(s, parts, deadline)
}

pub(crate) fn wait_acked(s: &Input, parts: &[Arc<Part>], deadline: Instant) -> bool {
    loop {
        if parts.iter().all(|p| p.tracker.pending() == 0) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        s.producer.resend_due();
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn describe(parts: &[Arc<Part>]) -> String {
    let mut v: Vec<String> = parts
        .iter()
        .map(|p| format!("{}[{}]", p.topic, p.partition))
        .collect();
    v.sort();
    v.join(",")
}

/// A partition read from its own queue, split from the consumer's: a
/// worker with batches held back ([`super::batch::Held`]) has its
/// partitions left unread, in librdkafka, while the others' are read.
struct Split {
    part: Arc<Part>,
    queue: PartQueue<ConsumerCtx>,
}

/// At most this many messages of one partition before the next
/// partition's turn.
const TURN: usize = 256;

/// The consumer thread.
pub(crate) fn consume(consumer: BaseConsumer<ConsumerCtx>, s: &Arc<Input>) {
    let consumer = Arc::new(consumer);
    let commit_every = Duration::from_millis(s.kafka().commit_interval_ms);
    let mut last_commit = Instant::now();
    let mut last_engine = Instant::now();
    let mut cached: Option<Arc<Part>> = None;
    let mut splits: Vec<Split> = Vec::new();
    let mut turn = 0usize;
    let mut held_seen = 0u64;
    while !s.shutdown.load(Ordering::Relaxed) {
        resume_restored(&consumer, s, &mut splits);
        splits.retain(|x| !x.part.revoked.load(Ordering::Relaxed));
        s.producer.resend_due();
        let mut got = 0usize;
        let mut drained = true;
        // The consumer's own queue: callbacks (rebalances, commits,
        // statistics), and the messages of a partition not split yet.
        match consumer.poll(Duration::ZERO) {
            Some(Ok(m)) => {
                got += 1;
                drained = false;
                let part = match &cached {
                    Some(p)
                        if p.partition == m.partition()
                            && &*p.topic == m.topic()
                            && !p.revoked.load(Ordering::Relaxed) =>
                    {
                        Some(p.clone())
                    }
                    _ => s.part(m.topic(), m.partition()).inspect(|p| {
                        cached = Some(p.clone());
                    }),
                };
                if let Some(part) = part {
                    take(s, &part, &m);
                }
            }
            Some(Err(e)) => poll_error(s, e),
            None => {}
        }
        // The partitions' queues, in turn, skipping a worker that has
        // batches held back.
        s.feed().held.retry(&s.workers);
        let n = splits.len();
        for i in 0..n {
            let x = &mut splits[(turn + i) % n];
            let w = x.part.worker;
            // Revoked in a callback of this round's poll: what is left on
            // its queue is the new owner's (the queue goes next round).
            if x.part.revoked.load(Ordering::Relaxed) || !s.feed().held.room(w) {
                continue;
            }
            let read = match x.queue.fill(TURN) {
                Ok(read) => read,
                Err(e) => {
                    poll_error(s, e);
                    continue;
                }
            };
            if read == 0 {
                continue;
            }
            got += read;
            if read == TURN {
                drained = false;
            }
            // One clock reading for the turn: its messages' receipt and
            // the batches' age (the clock was a third of this thread).
            let now = Instant::now();
            s.log.up();
            let mut f = s.feed();
            for m in x.queue.messages(s.trusts_hints) {
                match m {
                    Ok(m) => {
                        if let Some(ts) = m.created {
                            x.part.saw(ts, m.offset);
                        }
                        f.push(&s.workers, &x.part, m, now);
                    }
                    Err(e) => poll_error(s, e),
                }
            }
        }
        turn = turn.wrapping_add(1);
        if drained {
            // Nothing more is fetched now: hand the open batches to the
            // workers at once (latency).
            s.feed().flush(&s.workers);
        }
        if got == 0 {
            // Woken by a partition queue's first message (the callback set
            // at its split) or after a while for the consumer's own queue;
            // soon while batches are held, to hand them over.
            let held = s.feed().held.any();
            std::thread::park_timeout(Duration::from_millis(if held { 1 } else { 10 }));
        }
        let now = Instant::now();
        if now.saturating_duration_since(last_commit) >= commit_every {
            commit(s, &consumer, &s.all_parts(), CommitMode::Async);
            last_commit = Instant::now();
        }
        if now.saturating_duration_since(last_engine) >= Duration::from_secs(1) {
            if s.primary {
                s.metrics.observe_engine(&s.engine);
            }
            let held = s.feed().held.times;
            s.metrics.consumer_held_batches.inc_by(held - held_seen);
            held_seen = held;
            last_engine = Instant::now();
        }
    }
    // Shutdown: judge what was read, wait for its actions, commit, leave.
    s.metrics.ready.set(0);
    s.metrics
        .consumer_held_batches
        .inc_by(s.feed().held.times - held_seen);
    let parts = s.all_parts();
    let deadline = Instant::now() + Duration::from_secs(s.kafka().drain_timeout_secs);
    s.feed().send_all(&s.workers, None);
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
    if finished {
        super::durable::mark_end(&parts, s);
        finished = wait_acked(s, &parts, deadline);
    }
    commit(s, &consumer, &parts, CommitMode::Sync);
    consumer.unsubscribe();
    // The split queues hold the consumer too.
    drop(splits);
    drop(consumer);
    tracing::info!(
        finished,
        "Consumer stopped: in-flight events judged, actions acknowledged, offsets committed, group left."
    );
}

/// Batches one message of `part` from the consumer's own queue.
fn take<M: Message>(s: &Input, part: &Arc<Part>, m: &M) {
    s.log.up();
    let now = Instant::now();
    if let Some(ts) = m.timestamp().to_millis() {
        part.saw(ts, m.offset());
    }
    s.feed().push(
        &s.workers,
        part,
        super::batch::Incoming::of(m, s.trusts_hints),
        now,
    );
}

fn poll_error(s: &Input, e: KafkaError) {
    if s.log.allow("poll").is_some() {
        tracing::warn!(error = %e, "Kafka consumer error; consumption goes on.");
    }
}

/// Resumes the partitions whose state is restored, each split to its own
/// queue first. Every assigned partition is paused until then, so none of
/// its messages can be waiting in the consumer's queue, where they could
/// be read after newer ones from the split queue. (librdkafka keeps the
/// split through its own restarts of the partition's fetching; a message
/// that still comes on the consumer's queue is read from there.)
fn resume_restored(consumer: &Arc<BaseConsumer<ConsumerCtx>>, s: &Input, splits: &mut Vec<Split>) {
    let done: Vec<Arc<Part>> =
        std::mem::take(&mut *s.resume.lock().unwrap_or_else(|e| e.into_inner()));
    if done.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for p in &done {
        if p.revoked.load(Ordering::Relaxed) {
            continue;
        }
        splits.retain(|x| !(x.part.partition == p.partition && x.part.topic == p.topic));
        match PartQueue::split(consumer, &p.topic, p.partition) {
            Some(mut queue) => {
                let me = std::thread::current();
                queue.on_arrival(move || me.unpark());
                splits.push(Split {
                    part: p.clone(),
                    queue,
                });
            }
            None => tracing::warn!(
                topic = %p.topic,
                partition = p.partition,
                "Cannot give a partition its own queue; it is read from the consumer's."
            ),
        }
        tpl.add_partition(&p.topic, p.partition);
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.resume(&tpl) {
            tracing::error!(error = %e, "Cannot resume restored partitions.");
        }
    }
}
