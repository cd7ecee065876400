//! A worker: judges the events of the partitions it owns, hands their
//! records to the producer, and tells each partition's tracker what is done.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::Forward;
use crate::engine::WARM_AHEAD;
use crate::policy::Decision;
use crate::sink::kafka::{Origin, Record};
use crate::source::event::{parse_event, Event, Kind, ParseLimits, Reject};
use crate::source::kafka::{durable, Batch, Input, Part, Work};
use crate::time::{now_millis, Millis};
use std::sync::Arc;

/// A worker: judges the events of its partitions.
pub(super) fn run(
    lane: usize,
    rx: Receiver<Work>,
    s: &Input,
    forward: Option<Forward>,
    lines: Option<super::lines::LineMode>,
) {
    let mut lines = lines.map(super::lines::Lines::new);
    let mut decisions = Vec::new();
    let mut local = Local {
        events: s.metrics.event_counts(),
        decision: s.metrics.decision_duration.local(),
        lag: s.metrics.event_lag.local(),
        keys: Vec::new(),
        forward,
        parsed: Vec::new(),
        warm: Vec::new(),
    };
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Work::Batch(b)) => match lines.as_mut() {
                Some(l) if !b.part.revoked.load(Ordering::Relaxed) => l.read(&b, s),
                Some(_) => {}
                None => judge(lane, &b, s, &mut decisions, &mut local),
            },
            Ok(Work::Revoke(parts, done)) => {
                if let Some(l) = lines.as_mut() {
                    l.revoke(&parts);
                }
                // The next owner restores from this checkpoint and reads
                // nothing of the input again.
                for p in &parts {
                    durable::checkpoint(p, s, true);
                }
                let mut keys: HashSet<u64> = HashSet::new();
                for p in &parts {
                    p.revoked.store(true, Ordering::Relaxed);
                    keys.extend(p.take_accounts(&s.keys));
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
                for p in s.all_parts().iter().filter(|p| p.worker == lane) {
                    durable::checkpoint(p, s, true);
                }
                let _ = done.send(());
            }
            Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(l) = lines.as_mut() {
                    l.tick(s);
                }
            }
        }
    }
}

/// What a worker counts locally and hands over once per batch.
struct Local {
    events: crate::metrics::EventCounts,
    decision: prometheus::local::LocalHistogram,
    lag: prometheus::local::LocalHistogram,
    keys: Vec<u64>,
    /// Where logins are forwarded, keyed by source (the account stage of
    /// a split pipeline).
    forward: Option<Forward>,
    /// The next few messages of a batch parsed, before they are judged
    /// (room kept from batch to batch).
    parsed: Vec<Option<Result<Event, Reject>>>,
    /// Room for the accounts `Engine::warm` brings into the cache.
    warm: Vec<u64>,
}

fn judge(lane: usize, b: &Batch, s: &Input, decisions: &mut Vec<Decision>, local: &mut Local) {
    let part = &b.part;
    if part.revoked.load(Ordering::Relaxed) {
        return;
    }
    judge_batch(lane, b, s, decisions, local);
    if s.state_topic.is_some() {
        part.chain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dirty
            .extend(local.keys.iter().copied());
    }
    let refused = part.seen_all(&local.keys, s.generation, &s.keys);
    if refused > 0 {
        s.metrics
            .partition_accounts_untracked
            .inc_by(refused as u64);
        if s.log.allow("partition-keys-full").is_some() {
            tracing::warn!(
                refused,
                cap = s.keys.held(),
                "The partitions' account lists are full (state.max_accounts): accounts beyond it are not dropped when their partition moves away, and leave the tables by their time and size bounds (logged at most every 30 s)."
            );
        }
    }
    if s.primary {
        s.metrics
            .partition_accounts_tracked
            .set(s.keys.held() as i64);
    }
    local.keys.clear();
    local.events.flush(&s.metrics);
    local.decision.flush();
    local.lag.flush();
    if !b.restore {
        durable::checkpoint(part, s, false);
    }
}

/// A partition that has had no batch for this long does not hold the
/// sweep back (its next event is judged against the others' time).
const QUIET: Duration = Duration::from_secs(30);

/// The slowest clock of the worker's other partitions that are not quiet
/// (`Millis::MAX`: none).
fn others_clock(lane: usize, part: &Arc<Part>, s: &Input) -> Millis {
    s.all_parts()
        .iter()
        .filter(|p| p.worker == lane && !Arc::ptr_eq(p, part))
        .filter(|p| p.active.lock().unwrap_or_else(|e| e.into_inner()).elapsed() < QUIET)
        .map(|p| p.clock.load(Ordering::Relaxed))
        .filter(|&c| c != Millis::MIN)
        .min()
        .unwrap_or(Millis::MAX)
}

fn judge_batch(
    lane: usize,
    b: &Batch,
    s: &Input,
    decisions: &mut Vec<Decision>,
    local: &mut Local,
) {
    let part = &b.part;
    let now = now_millis();
    let limits = ParseLimits::new(s.events.max_bytes, now).with_form(s.events.form());
    *part.active.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
    let others = others_clock(lane, part, s);
    let mut clock = part.clock.load(Ordering::Relaxed);
    // Produced once the batch is judged: each produce may wake the
    // producer's threads, which on a busy machine take the core from the
    // events still to judge. The trackers hear of every record first.
    let mut records = Vec::new();
    // Parsed a few dozen at a time, then brought into the cache and judged
    // while the parsed events are still in the processor's own cache.
    let mut parsed = std::mem::take(&mut local.parsed);
    for (i, m) in b.msgs.iter().enumerate() {
        if i % WARM_AHEAD == 0 {
            parsed.clear();
            let ahead = &b.msgs[i..b.msgs.len().min(i + WARM_AHEAD)];
            parsed.extend(ahead.iter().map(|m| {
                Some(match m.payload {
                    None => Err(Reject::empty()),
                    Some(r) if (r.1 - r.0) as usize > limits.max_bytes => {
                        Err(Reject::too_large((r.1 - r.0) as usize, limits.max_bytes))
                    }
                    Some(r) => parse_event(b.slice(r), &limits),
                })
            }));
            let events = parsed.iter().filter_map(|p| p.as_ref()?.as_ref().ok());
            s.engine.warm(events, &mut local.warm);
        }
        let origin = || Origin {
            part: part.clone(),
            offset: m.offset,
            received: m.received,
        };
        let Some(parsed) = parsed[i % WARM_AHEAD].take() else {
            continue;
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
                records.push(Record::dead_letter(
                    &origin(),
                    s.kafka.dead_letter_topic.as_str().into(),
                    b.slice(m.key),
                    m.payload.map(|r| b.slice(r)).unwrap_or_default(),
                    reject.reason.as_str(),
                    &reject.detail,
                ));
            }
            Ok(mut event) => {
                if s.trusts_hints {
                    // Only the source stage, and only from the sources
                    // topic's header, which credwatch itself wrote.
                    event.hint = m.hint;
                }
                clock = s.engine.step_clock(clock, event.ts);
                part.clock.store(clock, Ordering::Relaxed);
                if b.restore && m.offset < part.tail_until.load(Ordering::Relaxed) {
                    // Before the partition's checkpoint: its accounts'
                    // state already holds this event.
                    s.engine.process_sources(lane, clock.min(others), &event);
                    s.metrics.restored_events.inc();
                    continue;
                }
                local.keys.push(event.key);
                s.engine
                    .process_clocked(lane, clock.min(others), &event, Some(now), decisions);
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
                let forward = local
                    .forward
                    .as_ref()
                    .zip(event.src_ip)
                    .filter(|_| event.kind == Kind::Auth);
                part.tracker
                    .begin(m.offset, emits as u32 + forward.is_some() as u32);
                if let (Some((f, ip)), Some(r)) = (forward, m.payload) {
                    let source = crate::source::event::truncate(ip, f.v4, f.v6);
                    records.push(Record::forward(
                        &origin(),
                        f.topic.clone(),
                        &source.to_string(),
                        b.slice(r),
                        s.engine.hint(&event),
                    ));
                }
                for d in decisions.drain(..) {
                    s.metrics.decision(&d);
                    match d {
                        Decision::Emit(a) => {
                            let action = a.data.action.as_str();
                            s.metrics.actions.with_label_values(&[action]).inc();
                            tracing::info!(
                                account = %a.data.account,
                                detector = a.data.detector,
                                action,
                                id = %a.id,
                                "Action emitted."
                            );
                            if let Some(c) = s.locks.as_ref().zip(crate::enforce::Change::of(&a)) {
                                // Refused here at once; every other instance
                                // within a poll of the actions topic.
                                c.0.apply(&c.1);
                                s.metrics.locks_enforced.set(c.0.locked());
                            }
                            records.push(Record::action(
                                &origin(),
                                s.kafka.actions_topic.as_str().into(),
                                &a,
                            ));
                        }
                        joined @ Decision::Enrich { .. } => joined.log_joined(),
                    }
                }
            }
        }
    }
    local.parsed = parsed;
    // Once per batch, not per message: the tracker's lock is also taken by
    // the committing thread, and its line would travel between the cores
    // on every message. Every message of the batch is judged by now, and
    // each one that caused records began them above.
    if let Some(last) = b.msgs.last().filter(|_| !b.restore) {
        part.tracker.processed(last.offset);
    }
    for r in records {
        s.producer.produce(r);
    }
}
