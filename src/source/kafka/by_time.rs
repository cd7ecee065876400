//! Finding the first offset of a restore window by message time on a
//! broker whose answer to offsets-by-time is wrong (tansu answers the start
//! of the partition whatever the time): the answer is checked by reading
//! the message it names, and a wrong one is replaced by a binary search
//! over single messages.

use std::collections::HashMap;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::restore::{ADMIN_TIMEOUT, RESTORE_POLL};
use crate::kafka::Quiet;
use crate::time::{Millis, SECOND};

/// How much earlier than its window a searched start is taken: message
/// times are only about in the order of their offsets.
pub(super) const SEARCH_MARGIN: Millis = 10 * 60 * SECOND;

/// A probed message's offset and time.
pub(super) type Probed = (i64, Option<Millis>);

/// A topic's partition.
type Tp = (String, i32);

/// The first message at or after each `(topic, partition) → offset`:
/// its offset and time (`None`: nothing there before the end). Missing
/// from the answer: it could not be read in time.
fn probe(
    consumer: &BaseConsumer<Quiet>,
    at: &HashMap<(String, i32), i64>,
) -> HashMap<(String, i32), Option<Probed>> {
    let mut out = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in at {
        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
    }
    if tpl.count() == 0 || consumer.assign(&tpl).is_err() {
        return out;
    }
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    while out.len() < at.len() && Instant::now() < deadline {
        match consumer.poll(RESTORE_POLL) {
            Some(Ok(m)) => {
                let key = (m.topic().to_string(), m.partition());
                // Not fetched for an earlier probe.
                if at.get(&key).is_some_and(|o| m.offset() >= *o) {
                    out.entry(key)
                        .or_insert(Some((m.offset(), m.timestamp().to_millis())));
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                for key in at.keys().filter(|k| k.1 == p) {
                    out.entry(key.clone()).or_insert(None);
                }
            }
            _ => {}
        }
    }
    let _ = consumer.unassign();
    out
}

/// Whether the broker's answers to "the first offset at this time" hold:
/// a broker without a time index (tansu) answers the start of the
/// partition whatever the time. Returns the answers that do not (their
/// first message is older than the time asked for), and the messages read
/// (a search's first lower end).
pub(super) fn wrong_answers(
    consumer: &BaseConsumer<Quiet>,
    answers: &[(String, i32, i64, Millis)],
) -> (Vec<Tp>, HashMap<Tp, Probed>) {
    let at: HashMap<(String, i32), i64> = answers
        .iter()
        .map(|(t, p, o, _)| ((t.clone(), *p), *o))
        .collect();
    let found = probe(consumer, &at);
    tracing::debug!(
        ?found,
        "restore: the messages at the broker's offsets by time"
    );
    let wrong = answers
        .iter()
        .filter(|(t, p, _, target)| {
            matches!(found.get(&(t.clone(), *p)), Some(Some((_, Some(ts)))) if ts < target)
        })
        .map(|(t, p, _, _)| (t.clone(), *p))
        .collect();
    let read = found
        .into_iter()
        .filter_map(|(k, m)| Some((k, m?)))
        .collect();
    (wrong, read)
}

/// A search stops once its interval is at most this many messages, or
/// 1/256 of where it began: reading them (they are skipped by message time)
/// costs less than another round trip to the broker.
const CLOSE_ENOUGH: i64 = 4096;

/// One partition's search: every message before `lo` is older than the
/// target; the message at `hi` (or the window's end) is not.
#[derive(Debug)]
struct Search {
    lo: i64,
    lo_ts: Option<Millis>,
    hi: i64,
    hi_ts: Option<Millis>,
    target: Millis,
    close: i64,
    /// The last step moved `lo` (true) or `hi` (false).
    raised: bool,
    steps: u32,
}

impl Search {
    fn new(lo: i64, lo_ts: Option<Millis>, hi: i64, target: Millis) -> Search {
        Search {
            lo,
            lo_ts,
            hi,
            hi_ts: None,
            target,
            close: CLOSE_ENOUGH.max((hi - lo) / 256),
            raised: false,
            steps: 0,
        }
    }

    /// The offset to probe next, or none: close enough.
    ///
    /// Interpolation on the message times of the interval's ends, since a
    /// partition's times grow about evenly (3 or 4 steps at a million
    /// messages, against about 20 halvings). The guess is put a little past
    /// the estimate after a step that raised `lo`, and a little before it
    /// after one that lowered `hi`, so that the next step brackets the
    /// target closely. Every third step halves instead, which bounds a
    /// search over uneven times.
    fn next(&self) -> Option<i64> {
        if self.hi - self.lo <= self.close {
            return None;
        }
        let half = self.lo + (self.hi - self.lo) / 2;
        let guess = match (self.lo_ts, self.hi_ts) {
            (Some(a), Some(b)) if b > a && self.steps % 3 != 2 => {
                let f = ((self.target - a) as f64 / (b - a) as f64).clamp(0.0, 1.0);
                let estimate = self.lo + (f * (self.hi - self.lo) as f64) as i64;
                let nudge = self.close / 2;
                if self.raised {
                    estimate + nudge
                } else {
                    estimate - nudge
                }
            }
            _ => half,
        };
        Some(guess.clamp(self.lo + 1, self.hi - 1))
    }

    /// What the message at or after `at` turned out to be.
    fn update(&mut self, at: i64, found: Option<Probed>) {
        self.steps += 1;
        match found {
            Some((o, Some(ts))) if ts < self.target => {
                self.lo = (o + 1).min(self.hi);
                self.lo_ts = Some(ts);
                self.raised = true;
            }
            Some((_, ts)) => {
                self.hi = at;
                self.hi_ts = ts.or(self.hi_ts);
                self.raised = false;
            }
            None => {
                self.hi = at;
                self.raised = false;
            }
        }
    }
}

/// The first offset of each `(topic, partition, target, upto)` whose
/// message time is at or after `target`, before `upto`, found by a search
/// over single messages (all partitions a step at a time): for a broker
/// without a time index. `known` gives a message already read per
/// partition (the broker's wrong answer) as the search's first lower end,
/// `newest` the newest message time of each window.
/// Message times are only about in offset order: the search errs early
/// (reading more), never late. A partition whose message cannot be read
/// in time is read from the search's lower end so far.
pub(super) fn search_by_time(
    consumer: &BaseConsumer<Quiet>,
    wanted: &[(String, i32, Millis, i64)],
    known: &HashMap<(String, i32), Probed>,
    newest: &HashMap<(String, i32), Millis>,
) -> HashMap<(String, i32), i64> {
    let mut all: HashMap<(String, i32), Search> = HashMap::new();
    for (t, p, target, upto) in wanted {
        if let Ok((low, _)) = consumer.fetch_watermarks(t, *p, ADMIN_TIMEOUT) {
            let key = (t.clone(), *p);
            // A message read before, older than the target, is a better
            // lower end than the partition's start.
            let mut s = match known.get(&key) {
                Some(&(o, Some(ts))) if ts < *target && o >= low && o < *upto => {
                    Search::new(o + 1, Some(ts), *upto, *target)
                }
                _ => Search::new(low, None, *upto, *target),
            };
            // The window's newest message time (read before: the
            // reference the window is measured from) is the upper end's.
            s.hi_ts = newest.get(&key).copied().filter(|&t| t >= *target);
            all.insert(key, s);
        }
    }
    let mut steps = 0;
    loop {
        let next: HashMap<(String, i32), i64> = all
            .iter()
            .filter_map(|(k, s)| Some((k.clone(), s.next()?)))
            .collect();
        if next.is_empty() || steps > 64 {
            break;
        }
        steps += 1;
        let found = probe(consumer, &next);
        tracing::debug!(
            steps,
            ?next,
            ?found,
            "restore: a step of the search by time"
        );
        for (key, at) in next {
            let s = all.get_mut(&key).expect("searched");
            match found.get(&key) {
                Some(m) => s.update(at, *m),
                None => {
                    // Not read in time: the search stops where it is; its
                    // lower end is still early, so only more is read.
                    tracing::warn!(
                        topic = %key.0,
                        partition = key.1,
                        offset = at,
                        from = s.lo,
                        "A message of the restore window's search by time could not be read in time; the window is read from the search's lower end."
                    );
                    s.hi = s.lo;
                }
            }
        }
    }
    tracing::info!(
        steps,
        partitions = all.len(),
        "The broker's offsets by time were wrong (it has no time index): found the restore windows' first offsets by a search over message times."
    );
    wanted
        .iter()
        .filter_map(|(t, p, _, upto)| {
            let s = all.get(&(t.clone(), *p))?;
            Some(((t.clone(), *p), s.lo.min(*upto)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search over `times` (message times by offset) as the
    /// restorer would, with `probe` answered from the slice.
    fn search(times: &[Millis], target: Millis) -> (i64, u32) {
        let mut s = Search::new(0, times.first().copied(), times.len() as i64, target);
        s.hi_ts = times.last().copied();
        while let Some(at) = s.next() {
            s.update(at, Some((at, Some(times[at as usize]))));
            assert!(s.steps < 64, "the search does not end");
        }
        (s.lo, s.steps)
    }

    fn first_at(times: &[Millis], target: Millis) -> i64 {
        times
            .iter()
            .position(|&t| t >= target)
            .unwrap_or(times.len()) as i64
    }

    #[test]
    fn even_times_are_found_in_a_few_steps_and_never_late() {
        let times: Vec<Millis> = (0..2_500_000).map(|i| i * 35).collect();
        for target in [1_000, 20_000_000, 60_000_000, 87_000_000] {
            let (lo, steps) = search(&times, target);
            let want = first_at(&times, target);
            assert!(lo <= want, "late: {lo} > {want}");
            assert!(
                want - lo <= CLOSE_ENOUGH.max(2_500_000 / 256),
                "far: {lo} vs {want}"
            );
            assert!(steps <= 3, "{steps} steps for {target}");
        }
    }

    #[test]
    fn a_day_of_uneven_traffic_is_still_found_early_and_close() {
        // Quiet nights and busy days: messages per second vary 20-fold.
        let mut times = Vec::new();
        let mut t: Millis = 0;
        while times.len() < 1_000_000 {
            let hour = (t / 3_600_000) % 24;
            t += if (8..20).contains(&hour) { 20 } else { 400 };
            times.push(t);
        }
        for target in [5_000_000, 40_000_000, times[700_000], t - 1_000] {
            let (lo, steps) = search(&times, target);
            let want = first_at(&times, target);
            assert!(lo <= want, "late: {lo} > {want}");
            assert!(want - lo <= CLOSE_ENOUGH, "far: {lo} vs {want}");
            assert!(steps <= 8, "{steps} steps for {target}");
        }
    }

    #[test]
    fn times_out_of_order_make_it_err_early() {
        // Every tenth message is a minute late.
        let times: Vec<Millis> = (0..500_000)
            .map(|i| i * 100 - if i % 10 == 0 { 60_000 } else { 0 })
            .collect();
        let target = 30_000_000;
        let (lo, _) = search(&times, target);
        // Within the disorder (the restore's SEARCH_MARGIN covers it).
        assert!(lo <= first_at(&times, target + 60_000));
        assert!(first_at(&times, target) - lo <= 2 * CLOSE_ENOUGH);
    }
}
