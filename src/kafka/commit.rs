//! Which offset of a partition may be committed: at least once, on purpose.
//!
//! A worker hands each message over in order. A message that caused
//! records (actions, or its copy on the dead-letter topic) is pending until
//! the broker acknowledged every one of them. The committable offset is the
//! lowest offset not yet done: everything before it is judged and every
//! record it caused is durable. A crash at any point re-reads from there;
//! the re-read messages give the same action ids, so a receiver dedupes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

#[derive(Debug, Default)]
struct Inner {
    /// The highest offset the worker has handed over (-1: none yet).
    processed: i64,
    /// Offsets with records not yet acknowledged, and how many.
    pending: BTreeMap<i64, u32>,
    /// The last offset committed (the next one to read), -1 if none.
    committed: i64,
    /// Nothing at or after this offset may be committed yet: a line held
    /// for the rest of its message (the log stage, [`Tracker::hold_from`]).
    floor: Option<i64>,
}

/// The commit bookkeeping of one assigned partition.
#[derive(Debug)]
pub struct Tracker {
    inner: Mutex<Inner>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            inner: Mutex::new(Inner {
                processed: -1,
                pending: BTreeMap::new(),
                committed: -1,
                floor: None,
            }),
        }
    }
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `offset` caused `records` records that are being produced; call
    /// before producing them, so an acknowledgement cannot come first.
    pub fn begin(&self, offset: i64, records: u32) {
        if records > 0 {
            *self.lock().pending.entry(offset).or_default() += records;
        }
    }

    /// The worker is done with `offset` (and every offset before it).
    pub fn processed(&self, offset: i64) {
        let mut i = self.lock();
        i.processed = i.processed.max(offset);
    }

    /// The broker acknowledged one record caused by `offset`.
    pub fn acked(&self, offset: i64) {
        let mut i = self.lock();
        if let Some(n) = i.pending.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                i.pending.remove(&offset);
            }
        }
    }

    /// The oldest offset still held for records to come (a log line whose
    /// message is not complete yet), or none: the commit stays before it,
    /// so a restart reads it again.
    pub fn hold_from(&self, offset: Option<i64>) {
        self.lock().floor = offset;
    }

    /// The offset to commit (the next to read), if it moved since the last
    /// call to [`Tracker::committed`].
    pub fn committable(&self) -> Option<i64> {
        let i = self.lock();
        let mut next = match i.pending.keys().next() {
            Some(&first) => first.min(i.processed + 1),
            None => i.processed + 1,
        };
        if let Some(f) = i.floor {
            next = next.min(f);
        }
        (next > i.committed && i.processed >= 0).then_some(next)
    }

    /// Records that `offset` was committed.
    pub fn committed(&self, offset: i64) {
        let mut i = self.lock();
        i.committed = i.committed.max(offset);
    }

    /// Forgets the last commit, so the next [`Tracker::committable`]
    /// offers the offset again (after a failed commit).
    pub fn commit_failed(&self) {
        self.lock().committed = -1;
    }

    /// Records not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.lock().pending.values().map(|&n| n as usize).sum()
    }

    /// The last offset committed (the next one to read), -1 if none.
    pub fn committed_offset(&self) -> i64 {
        self.lock().committed
    }

    /// The highest offset handed over by the worker.
    pub fn processed_offset(&self) -> i64 {
        self.lock().processed
    }
}

/// Commits what `parts` (topic, partition, tracker) have finished, in one
/// request, and records it on each tracker when the commit succeeded. The
/// one offset-commit loop of credwatch: the input consumer and each webhook
/// endpoint's consumer of the actions topic both use it. `Ok(false)`:
/// nothing new to commit.
pub fn commit_finished<'a, C, X>(
    consumer: &C,
    parts: impl IntoIterator<Item = (&'a str, i32, &'a Tracker)>,
    mode: CommitMode,
) -> KafkaResult<bool>
where
    C: Consumer<X>,
    X: ConsumerContext + 'static,
{
    let mut tpl = TopicPartitionList::new();
    let mut offered = Vec::new();
    for (topic, partition, tracker) in parts {
        if let Some(o) = tracker.committable() {
            if tpl
                .add_partition_offset(topic, partition, Offset::Offset(o))
                .is_ok()
            {
                offered.push((tracker, o));
            }
        }
    }
    if offered.is_empty() {
        return Ok(false);
    }
    consumer.commit(&tpl, mode)?;
    for (tracker, o) in offered {
        tracker.committed(o);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_processed_nothing_to_commit() {
        assert_eq!(Tracker::default().committable(), None);
    }

    #[test]
    fn commit_waits_for_the_oldest_unacknowledged_action() {
        let t = Tracker::default();
        t.processed(0);
        t.begin(1, 2);
        t.processed(1);
        t.begin(2, 1);
        t.processed(2);
        t.processed(3);
        assert_eq!(
            t.committable(),
            Some(1),
            "offset 1 has two actions in flight"
        );
        t.acked(2);
        assert_eq!(
            t.committable(),
            Some(1),
            "an ack of a later offset does not help"
        );
        t.acked(1);
        assert_eq!(
            t.committable(),
            Some(1),
            "one of offset 1's two is still out"
        );
        t.acked(1);
        assert_eq!(t.committable(), Some(4));
        t.committed(4);
        assert_eq!(t.committable(), None, "nothing new since the commit");
        t.processed(4);
        assert_eq!(t.committable(), Some(5));
        t.commit_failed();
        assert_eq!(t.committable(), Some(5));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn begin_before_processed_holds_the_offset() {
        let t = Tracker::default();
        t.begin(7, 1);
        t.processed(7);
        assert_eq!(t.committable(), Some(7));
        t.acked(7);
        assert_eq!(t.committable(), Some(8));
    }
}

#[cfg(test)]
mod floor_tests {
    use super::Tracker;

    #[test]
    fn a_held_offset_keeps_the_commit_before_it() {
        let t = Tracker::default();
        t.processed(9);
        assert_eq!(t.committable(), Some(10));
        t.hold_from(Some(4));
        assert_eq!(t.committable(), Some(4));
        t.committed(4);
        assert_eq!(t.committable(), None, "nothing new past the hold");
        t.hold_from(None);
        assert_eq!(t.committable(), Some(10));
    }
}
