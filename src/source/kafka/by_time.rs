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
type Probed = (i64, Option<Millis>);

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
/// first message is older than the time asked for).
pub(super) fn wrong_answers(
    consumer: &BaseConsumer<Quiet>,
    answers: &[(String, i32, i64, Millis)],
) -> Vec<(String, i32)> {
    let at: HashMap<(String, i32), i64> = answers
        .iter()
        .map(|(t, p, o, _)| ((t.clone(), *p), *o))
        .collect();
    let found = probe(consumer, &at);
    tracing::debug!(
        ?found,
        "restore: the messages at the broker's offsets by time"
    );
    answers
        .iter()
        .filter(|(t, p, _, target)| {
            matches!(found.get(&(t.clone(), *p)), Some(Some((_, Some(ts)))) if ts < target)
        })
        .map(|(t, p, _, _)| (t.clone(), *p))
        .collect()
}

/// The first offset of each `(topic, partition, target, upto)` whose
/// message time is at or after `target`, before `upto`, found by a binary
/// search over single messages (all partitions a step at a time): for a
/// broker without a time index. Message times are only about in offset
/// order: the search errs early (reading more), never late. A partition
/// the search cannot finish is left out (read from its start, filtered by
/// message time, as before).
pub(super) fn search_by_time(
    consumer: &BaseConsumer<Quiet>,
    wanted: &[(String, i32, Millis, i64)],
) -> HashMap<(String, i32), i64> {
    struct Search {
        lo: i64,
        hi: i64,
        target: Millis,
    }
    let mut all: HashMap<(String, i32), Search> = HashMap::new();
    for (t, p, target, upto) in wanted {
        if let Ok((low, _)) = consumer.fetch_watermarks(t, *p, ADMIN_TIMEOUT) {
            let s = Search {
                lo: low,
                hi: *upto,
                target: *target,
            };
            all.insert((t.clone(), *p), s);
        }
    }
    let mut steps = 0;
    loop {
        let mids: HashMap<(String, i32), i64> = all
            .iter()
            .filter(|(_, s)| s.lo < s.hi)
            .map(|(k, s)| (k.clone(), s.lo + (s.hi - s.lo) / 2))
            .collect();
        if mids.is_empty() || steps > 64 {
            break;
        }
        steps += 1;
        let found = probe(consumer, &mids);
        if found.len() < mids.len() {
            tracing::warn!("The restore window's first offsets could not be found by message time; reading from the start of the partitions.");
            return HashMap::new();
        }
        for (key, mid) in mids {
            let s = all.get_mut(&key).expect("searched");
            match found.get(&key) {
                Some(Some((o, Some(ts)))) if *ts < s.target => s.lo = o + 1,
                _ => s.hi = mid,
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
