//! One assigned input partition: which worker judges it, its commit
//! bookkeeping, and the accounts it brought (dropped when it moves away).

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
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
    /// long as the restore window: older accounts have expired anyway.
    pub(crate) accounts: Mutex<Accounts>,
}

pub(crate) struct Accounts {
    pub(crate) current: HashSet<u64>,
    pub(crate) previous: HashSet<u64>,
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
                current: HashSet::new(),
                previous: HashSet::new(),
                since: Instant::now(),
            }),
        }
    }

    pub(crate) fn seen_all(&self, keys: &[u64], generation: Duration) {
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

    pub(crate) fn label(&self) -> [String; 2] {
        [self.topic.to_string(), self.partition.to_string()]
    }
}
