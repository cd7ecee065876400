//! The sweep's bookkeeping, the same for every kind of table: when a sweep
//! may begin, which shards a step found held by a judge, what it removed
//! and the oldest thing that survived it. Each table sweeps its own shards
//! ([`super::Table`]'s maps, [`super::RecentLog`]'s logs) through it.

use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};

use crate::time::Millis;

/// A lock's guard, whether or not a thread panicked holding it (what a
/// table holds stays usable: every change to it is whole).
pub(super) fn unpoisoned<T>(r: Result<T, PoisonError<T>>) -> T {
    r.unwrap_or_else(PoisonError::into_inner)
}

/// A try-lock's guard; `None` when another thread holds the lock.
pub(super) fn try_locked<T>(r: Result<T, TryLockError<T>>) -> Option<T> {
    match r {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// A sweep in progress: begun with [`Sweeper::begin`], carried through the
/// shards by [`Sweeper::shards`], closed by [`Sweeper::end`].
pub(super) struct SweepRun {
    /// What is older than this goes.
    pub horizon: Millis,
    /// Entries removed so far.
    pub removed: u64,
    /// The oldest `last_seen` among the survivors so far.
    pub oldest: Millis,
    /// The presence buffer the survivors are written to (sparse tables).
    pub presence: Option<usize>,
    /// Shards a step found held by a judge, swept at the end.
    busy: Vec<usize>,
}

/// One table's sweeps.
pub(super) struct Sweeper {
    ttl: Millis,
    /// The oldest `last_seen` that survived the last sweep: until the
    /// horizon passes it, a sweep would find nothing and is skipped.
    oldest: AtomicI64,
    expired: AtomicU64,
    run: Mutex<Option<SweepRun>>,
}

impl Sweeper {
    /// `ttl`: how long after its last event an entry is still needed.
    pub fn new(ttl: Millis) -> Sweeper {
        Sweeper {
            ttl,
            oldest: AtomicI64::new(Millis::MIN),
            expired: AtomicU64::new(0),
            run: Mutex::new(None),
        }
    }

    pub fn ttl(&self) -> Millis {
        self.ttl
    }

    /// Entries removed by sweeps since start.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Begins a sweep of what is older than `watermark - ttl - slack`;
    /// `start` runs once it does begin and names the presence buffer the
    /// survivors go to. False: nothing can be that old yet, or a sweep is
    /// already under way (it goes on).
    pub fn begin(
        &self,
        watermark: Millis,
        slack: Millis,
        start: impl FnOnce() -> Option<usize>,
    ) -> bool {
        let horizon = watermark.saturating_sub(self.ttl).saturating_sub(slack);
        if horizon <= self.oldest.load(Ordering::Relaxed) {
            return false;
        }
        let mut run = unpoisoned(self.run.lock());
        if run.is_some() {
            return false;
        }
        *run = Some(SweepRun {
            horizon,
            removed: 0,
            oldest: Millis::MAX,
            presence: start(),
            busy: Vec::new(),
        });
        true
    }

    /// Sweeps the shards `shards` of the sweep under way with `try_one`,
    /// which returns false for a shard a judge holds: it is not waited
    /// for, and is swept at the end.
    pub fn shards(
        &self,
        shards: Range<usize>,
        mut try_one: impl FnMut(usize, &mut SweepRun) -> bool,
    ) {
        let mut guard = unpoisoned(self.run.lock());
        let Some(run) = guard.as_mut() else { return };
        for i in shards {
            if !try_one(i, run) {
                run.busy.push(i);
            }
        }
    }

    /// Closes the sweep under way, sweeping the shards the steps found
    /// held with `one` (which waits for them). False: none was under way.
    pub fn end(&self, mut one: impl FnMut(usize, &mut SweepRun)) -> bool {
        let Some(mut run) = unpoisoned(self.run.lock()).take() else {
            return false;
        };
        for i in std::mem::take(&mut run.busy) {
            one(i, &mut run);
        }
        // Entries created meanwhile are newer than the horizon, except those
        // within the allowed disorder, which the slack already covers.
        self.oldest.store(
            if run.oldest == Millis::MAX {
                run.horizon
            } else {
                run.oldest
            },
            Ordering::Relaxed,
        );
        self.expired.fetch_add(run.removed, Ordering::Relaxed);
        true
    }
}
