//! One assigned input partition: which worker judges it, its commit
//! bookkeeping, and the accounts it brought (dropped when it moves away).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kafka::Tracker;

/// One assigned input partition.
pub struct Part {
    pub topic: Arc<str>,
    pub partition: i32,
    pub(crate) worker: usize,
    pub tracker: Tracker,
    pub(crate) revoked: AtomicBool,
    pub(crate) restoring: AtomicBool,
    /// The accounts seen on this partition, so that their state can be
    /// dropped when the partition moves away. Two generations, each as
    /// long as the restore window, and within the stage's key budget
    /// ([`KeyBudget`]): an account not remembered here is not dropped on a
    /// revoke, and leaves the tables by their own time and size bounds.
    pub(crate) accounts: Mutex<Accounts>,
    /// Its durable state's chain and changed accounts (`kafka.state_topic`).
    pub(crate) chain: Mutex<super::durable::Chain>,
    /// The partition's own event-time clock: the time its events have
    /// reached, moving as a lane's does ([`crate::engine::Engine::step_clock`]).
    /// State is swept by the slowest partition's clock, never by a faster
    /// one that shares its worker.
    pub(crate) clock: AtomicI64,
    /// When its worker last judged a batch of it: a partition quiet for
    /// long does not hold the sweep back.
    pub(crate) active: Mutex<Instant>,
    /// Restored from a checkpoint at this offset: restore messages before
    /// it are judged by the detectors keyed by source only (their state is
    /// not in checkpoints); `i64::MIN`: none.
    pub(crate) tail_until: AtomicI64,
    /// Where its recent messages are by message time, for checkpoints to
    /// name where a restore's window before them starts ([`TimeMarks`]).
    pub(crate) marks: Mutex<TimeMarks>,
    /// The message time before which no new mark is due: the reader checks
    /// it per message without taking the lock.
    next_mark: AtomicI64,
}

/// (message time, offset) of a partition's messages, one every
/// [`TimeMarks::EVERY`] of message time, over the last
/// [`TimeMarks::KEEP`]: a checkpoint names the offset from which a
/// restore re-reads the window before it (the detectors keyed by source),
/// so the restore need not ask the broker for an offset by time (a broker
/// without a time index makes that a search).
#[derive(Debug, Default)]
pub(crate) struct TimeMarks {
    marks: std::collections::VecDeque<(crate::time::Millis, i64)>,
}

impl TimeMarks {
    const EVERY: crate::time::Millis = 10 * crate::time::SECOND;
    const KEEP: crate::time::Millis = 6 * crate::time::HOUR;

    /// The consumer read `offset`, stamped `ts`.
    pub(crate) fn saw(&mut self, ts: crate::time::Millis, offset: i64) {
        let newer = self
            .marks
            .back()
            .is_none_or(|&(t, o)| ts >= t + Self::EVERY && offset > o);
        if !newer {
            return;
        }
        self.marks.push_back((ts, offset));
        while self
            .marks
            .front()
            .is_some_and(|&(t, _)| t < ts - Self::KEEP)
        {
            self.marks.pop_front();
        }
    }

    /// The message time from which the next mark is taken.
    fn next_due(&self) -> crate::time::Millis {
        self.marks
            .back()
            .map_or(crate::time::Millis::MIN, |&(t, _)| t + Self::EVERY)
    }

    /// The time of the newest mark before `upto`.
    pub(crate) fn newest_before(&self, upto: i64) -> Option<crate::time::Millis> {
        self.marks
            .iter()
            .rev()
            .find(|&&(_, o)| o < upto)
            .map(|&(t, _)| t)
    }

    /// The offset of the last mark older than `since` and before `upto`:
    /// every message from `since` on is at or after it, as far as message
    /// times are in order. `None`: the marks do not reach back that far.
    pub(crate) fn before(&self, since: crate::time::Millis, upto: i64) -> Option<i64> {
        let first = self.marks.front()?;
        if first.0 >= since {
            return None;
        }
        self.marks
            .iter()
            .take_while(|&&(t, o)| t < since && o < upto)
            .last()
            .map(|&(_, o)| o)
    }
}

/// How many account keys a stage's partitions may remember in all
/// (`state.max_accounts`, like each table): a flood of one-off usernames
/// through `run` cannot grow them without bound.
pub(crate) struct KeyBudget {
    held: std::sync::atomic::AtomicUsize,
    cap: usize,
}

impl KeyBudget {
    pub(crate) fn new(cap: usize) -> KeyBudget {
        KeyBudget {
            held: Default::default(),
            cap,
        }
    }

    fn take(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                (h < self.cap).then_some(h + 1)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        use std::sync::atomic::Ordering;
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(n))
            });
    }

    /// Keys remembered now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Account keys are already keyed hashes (an outsider cannot aim them at
/// one bucket): the set uses them as they are, as the state tables do.
pub(crate) type Keys = HashSet<u64, std::hash::BuildHasherDefault<crate::state::KeyHasher>>;

pub(crate) struct Accounts {
    pub(crate) current: Keys,
    pub(crate) previous: Keys,
    since: Instant,
}

impl Part {
    pub(crate) fn new(topic: &str, partition: i32, workers: usize) -> Part {
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
                current: Keys::default(),
                previous: Keys::default(),
                since: Instant::now(),
            }),
            chain: Mutex::new(Default::default()),
            clock: AtomicI64::new(crate::time::Millis::MIN),
            active: Mutex::new(Instant::now()),
            tail_until: AtomicI64::new(i64::MIN),
            marks: Mutex::default(),
            next_mark: AtomicI64::new(crate::time::Millis::MIN),
        }
    }

    /// Remembers the accounts of a batch; returns how many could not be
    /// remembered because the budget is spent.
    pub(crate) fn seen_all(&self, keys: &[u64], generation: Duration, budget: &KeyBudget) -> usize {
        if keys.is_empty() {
            return 0;
        }
        let mut a = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if a.since.elapsed() > generation {
            let old = std::mem::take(&mut a.previous);
            budget.give_back(old.len());
            a.previous = std::mem::take(&mut a.current);
            a.since = Instant::now();
        }
        let mut refused = 0;
        for &k in keys {
            // One probe for the common case (a key already remembered).
            if a.current.insert(k) && !budget.take() {
                a.current.remove(&k);
                refused += 1;
            }
        }
        refused
    }

    /// Every account remembered, emptied (the partition moved away).
    pub(crate) fn take_accounts(&self, budget: &KeyBudget) -> Keys {
        let mut a = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = std::mem::take(&mut a.current);
        let previous = std::mem::take(&mut a.previous);
        budget.give_back(all.len() + previous.len());
        all.extend(previous);
        all
    }

    /// The reader read `offset`, stamped `ts` (see [`TimeMarks`]).
    pub(crate) fn saw(&self, ts: crate::time::Millis, offset: i64) {
        use std::sync::atomic::Ordering;
        if ts < self.next_mark.load(Ordering::Relaxed) {
            return;
        }
        let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        m.saw(ts, offset);
        self.next_mark.store(m.next_due(), Ordering::Relaxed);
    }

    pub(crate) fn label(&self) -> [String; 2] {
        [self.topic.to_string(), self.partition.to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::TimeMarks;
    use crate::time::{HOUR, SECOND};

    #[test]
    fn marks_name_an_offset_older_than_the_window_and_no_later() {
        let mut m = TimeMarks::default();
        // A message a second for three hours, offsets from 1,000.
        for i in 0..3 * 3600 {
            m.saw(i * SECOND, 1_000 + i);
        }
        // One every 10 s of message time, not one per message.
        assert!(m.marks.len() <= 3 * 360 + 1, "{}", m.marks.len());
        let since = 2 * HOUR;
        let at = m.before(since, i64::MAX).expect("within the marks");
        assert!(at <= 1_000 + 2 * 3600, "{at} is after the window's start");
        assert!(at >= 1_000 + 2 * 3600 - 10, "{at} is far before it");
        // Not past the checkpoint's offset.
        assert_eq!(m.before(since, 1_500), Some(1_490));
        assert_eq!(m.newest_before(1_500), Some(490 * SECOND));
        // A window reaching back before the first mark is not known.
        assert_eq!(m.before(0, i64::MAX), None);
    }

    #[test]
    fn marks_keep_only_hours_of_message_time() {
        let mut m = TimeMarks::default();
        for i in 0..24 * 360 {
            m.saw(i * 10 * SECOND, i);
        }
        let span = m.marks.back().unwrap().0 - m.marks.front().unwrap().0;
        assert!(span <= TimeMarks::KEEP, "{span}");
        assert_eq!(m.before(HOUR, i64::MAX), None, "forgotten");
    }
}
