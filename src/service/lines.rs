//! The log stage's work (`kafka.log_topics`): each partition's Dovecot
//! and Postfix lines go through a [`Joiner`] of their own, and each event
//! they make is written to the first input topic as the contract's JSON,
//! keyed by its account, where the account stage judges it like any other.
//!
//! At least once: an event's record is pending on the offset of the line
//! that completed it, and the partition's commit stays before the oldest
//! line still held for an event to come ([`crate::kafka::Tracker::hold_from`]).
//! A restart reads the held lines again and makes their events then; what
//! was forwarded after the last commit is forwarded again (duplicates, as
//! at-least-once allows; see `docs/maillog.md`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::sink::kafka::{Origin, Record};
use crate::source::event::ParseLimits;
use crate::source::kafka::{Batch, Input, Part};
use crate::source::maillog::{Joiner, LogEvent, MaillogConfig, Skip};
use crate::time::{now_millis, Millis};

/// Where the log stage writes events, and how it reads lines.
#[derive(Clone)]
pub(crate) struct LineMode {
    pub target: Arc<str>,
    pub cfg: MaillogConfig,
}

/// One partition's join state.
struct PartLines {
    part: Arc<Part>,
    joiner: Joiner,
    /// The log time of the last line, when (wall clock) it came, and its
    /// offset: a quiet partition's held lines still time out.
    last_ts: Millis,
    last_wall: Instant,
    last_offset: i64,
}

/// What one worker of the log stage keeps.
pub(crate) struct Lines {
    mode: LineMode,
    parts: HashMap<(Arc<str>, i32), PartLines>,
    events: Vec<LogEvent>,
    last_tick: Instant,
}

impl Lines {
    pub(crate) fn new(mode: LineMode) -> Lines {
        Lines {
            mode,
            parts: HashMap::new(),
            events: Vec::new(),
            last_tick: Instant::now(),
        }
    }

    /// The partitions moved away: their held lines are the new owner's.
    pub(crate) fn revoke(&mut self, parts: &[Arc<Part>]) {
        for p in parts {
            self.parts.remove(&(p.topic.clone(), p.partition));
        }
    }

    /// Reads a batch of lines; writes the events they complete.
    pub(crate) fn read(&mut self, b: &Batch, s: &Input) {
        let part = &b.part;
        let key = (part.topic.clone(), part.partition);
        let fresh = self
            .parts
            .get(&key)
            .is_none_or(|p| !Arc::ptr_eq(&p.part, part));
        if fresh {
            self.parts.insert(
                key.clone(),
                PartLines {
                    part: part.clone(),
                    joiner: Joiner::new(&self.mode.cfg),
                    last_ts: Millis::MIN,
                    last_wall: Instant::now(),
                    last_offset: -1,
                },
            );
        }
        let pl = self.parts.get_mut(&key).expect("just inserted");
        let now = now_millis();
        let limits = ParseLimits::new(s.events.max_bytes, now).with_form(s.events.form());
        for m in &b.msgs {
            let outcome = match m.payload {
                None => Some(Skip::NotUsed),
                Some(r) if (r.1 - r.0) as usize > limits.max_bytes => {
                    pl.joiner.skipped(Skip::TooLong);
                    Some(Skip::TooLong)
                }
                Some(r) => {
                    let text = String::from_utf8_lossy(b.slice(r));
                    // Classic stamps have no year: the message's own time
                    // is the latest the line can be.
                    let clock = self.mode.cfg.clock(m.created.unwrap_or(now));
                    let mut o = None;
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        o = pl
                            .joiner
                            .feed(line, m.offset as u64, &clock, &mut self.events);
                    }
                    o
                }
            };
            s.metrics
                .log_lines
                .with_label_values(&[outcome.map_or("used", Skip::as_str)])
                .inc();
            pl.last_ts = pl.last_ts.max(pl.joiner.now());
            pl.last_wall = Instant::now();
            pl.last_offset = m.offset;
            let origin = Origin {
                part: part.clone(),
                offset: m.offset,
                received: m.received,
            };
            forward(&mut self.events, &origin, &self.mode.target, &limits, s);
            part.tracker
                .hold_from(pl.joiner.oldest_held().map(|o| o as i64));
            part.tracker.processed(m.offset);
        }
        if self.last_tick.elapsed().as_millis() >= 1000 {
            self.tick(s);
        }
        self.gauge(s);
    }

    /// Once a second: a partition with no new lines moves its log clock
    /// on by the wall clock, so what waits for lines that never come is
    /// made an event (or dropped) in time.
    pub(crate) fn tick(&mut self, s: &Input) {
        let now = now_millis();
        let limits = ParseLimits::new(s.events.max_bytes, now).with_form(s.events.form());
        self.last_tick = Instant::now();
        let Lines {
            mode,
            parts,
            events,
            ..
        } = self;
        for pl in parts.values_mut() {
            if pl.last_offset < 0 || pl.part.revoked.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            let idle = pl.last_wall.elapsed().as_millis() as Millis;
            if idle < 1000 {
                continue;
            }
            pl.joiner
                .advance_to(pl.last_ts.saturating_add(idle), events);
            if pl.joiner.holding() == 0 && events.is_empty() {
                pl.part.tracker.hold_from(None);
                continue;
            }
            let origin = Origin {
                part: pl.part.clone(),
                offset: pl.last_offset,
                received: Instant::now(),
            };
            forward(events, &origin, &mode.target, &limits, s);
            pl.part
                .tracker
                .hold_from(pl.joiner.oldest_held().map(|o| o as i64));
        }
        self.gauge(s);
    }

    fn gauge(&self, s: &Input) {
        let held: usize = self.parts.values().map(|p| p.joiner.holding()).sum();
        s.metrics.log_lines_held.set(held as i64);
    }
}

/// Writes each event to the target topic, keyed by its account; an event
/// that fails the contract's checks is counted and logged instead.
fn forward(
    events: &mut Vec<LogEvent>,
    origin: &Origin,
    target: &Arc<str>,
    limits: &ParseLimits,
    s: &Input,
) {
    for e in events.drain(..) {
        match e.fields.to_event(limits) {
            Ok(event) => {
                origin.part.tracker.begin(origin.offset, 1);
                s.producer.produce(Record::forward(
                    origin,
                    target.clone(),
                    &event.account,
                    &e.fields.to_json(),
                    None,
                ));
            }
            Err(reject) => {
                s.metrics
                    .log_lines
                    .with_label_values(&[Skip::Invalid.as_str()])
                    .inc();
                if s.log.allow("log-invalid").is_some() {
                    tracing::warn!(
                        reason = reject.reason.as_str(),
                        detail = %reject.detail,
                        topic = %origin.part.topic,
                        partition = origin.part.partition,
                        offset = origin.offset,
                        "A log line made an event that is not valid; it is counted and not judged (logged at most every 30 s)."
                    );
                }
            }
        }
    }
}
