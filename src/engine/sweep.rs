//! Sweeping expired state: the accounts' tables in steps of a sixteenth
//! of their shards (a whole sweep of a million accounts held up the event
//! that started it), and the short-lived tables whole, on event time (see
//! [`Swept::short_lived`]). `lanes::advance` decides when.

use std::sync::atomic::Ordering;

use super::Engine;
use crate::state::{Swept, SHARDS};
use crate::time::Millis;

/// The fewest events (over all lanes) between two sweeps of the
/// accounts' tables; more when they hold more (an eighth of their
/// entries).
pub(super) const MIN_EVENTS_BETWEEN_SWEEPS: u64 = 1024;
/// A sweep visits this many of the tables' shards (a sixteenth) at a
/// time, one step every `EVENTS_PER_SWEEP_STEP` events of a lane: a whole
/// sweep of a million accounts held up the event that happened to start
/// it (and all behind it) for tens of milliseconds.
const SWEEP_SHARDS_PER_STEP: usize = SHARDS.div_ceil(16);
pub(super) const EVENTS_PER_SWEEP_STEP: u64 = 32;
/// How many events of a lane pass between its looks at whether the
/// short-lived tables are due a sweep ([`Swept::short_lived`]).
pub(super) const EVENTS_PER_SHORT_SWEEP_CHECK: u64 = 256;

impl Engine {
    /// The tables swept in steps: the accounts', all but the short-lived.
    fn stepped(&self) -> impl Iterator<Item = &dyn Swept> {
        self.state().filter(|t| !t.short_lived())
    }

    /// Begins a sweep up to `watermark`, carried out in steps of
    /// `SWEEP_SHARDS_PER_STEP` shards (see `lanes::advance`).
    pub(super) fn begin_sweep(&self, watermark: Millis, next: &mut Option<usize>) {
        if next.is_some() {
            return;
        }
        for table in self.stepped() {
            table.sweep_begin(watermark, self.slack);
        }
        self.policy.breaker.refresh(watermark);
        *next = Some(0);
        self.sweep_under_way.store(true, Ordering::Relaxed);
    }

    /// Sweeps the next shards of every table; the last step closes the
    /// sweep and sets when the next one may begin.
    pub(super) fn sweep_step(&self, next: &mut Option<usize>) {
        let Some(from) = *next else { return };
        let to = (from + SWEEP_SHARDS_PER_STEP).min(SHARDS);
        for table in self.stepped() {
            table.sweep_shards(from..to);
        }
        if to < SHARDS {
            *next = Some(to);
            return;
        }
        let mut entries = 0;
        for table in self.stepped() {
            table.sweep_end();
            entries += table.stats().len;
        }
        for l in &self.lanes {
            l.since_sweep.store(0, Ordering::Relaxed);
        }
        self.sweep_after_events.store(
            (entries as u64 / 8).max(MIN_EVENTS_BETWEEN_SWEEPS),
            Ordering::Relaxed,
        );
        *next = None;
        self.sweep_under_way.store(false, Ordering::Relaxed);
    }

    /// Sweeps the short-lived tables whole, once `state.sweep_interval_secs`
    /// of event time has passed since the last time (the first call only
    /// sets when) and a quarter of the items they then held in events: a
    /// sweep visits every item, so at most four visits per event, however
    /// far a slow lane holds the watermark back. Called every
    /// `EVENTS_PER_SHORT_SWEEP_CHECK` events of a lane.
    pub(super) fn sweep_short_lived(&self) {
        let events = self
            .short_events
            .fetch_add(EVENTS_PER_SHORT_SWEEP_CHECK, Ordering::Relaxed)
            + EVENTS_PER_SHORT_SWEEP_CHECK;
        if events < self.short_sweep_after.load(Ordering::Relaxed) {
            return;
        }
        let low = self.low_watermark();
        let due = self.next_short_sweep.load(Ordering::Relaxed);
        if due != Millis::MIN && low < due {
            return;
        }
        let next = low.saturating_add(self.sweep_every);
        let swap =
            self.next_short_sweep
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed);
        // Another lane took this sweep, or this was the first look.
        if swap.is_err() || due == Millis::MIN {
            return;
        }
        let mut held = 0;
        for table in self.state().filter(|t| t.short_lived()) {
            if table.sweep_begin(low, self.slack) {
                table.sweep_shards(0..SHARDS);
                table.sweep_end();
            }
            held += table.items();
        }
        self.short_events.store(0, Ordering::Relaxed);
        self.short_sweep_after
            .store(held as u64 / 4, Ordering::Relaxed);
    }
}
