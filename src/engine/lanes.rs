//! The engine's clocks: each lane (a thread judging a share of the events)
//! has an event time, and state is swept up to the slowest lane's, so a
//! lane that is behind never finds state missing that it still needs.

use std::sync::atomic::Ordering;

use super::sweep::{EVENTS_PER_SHORT_SWEEP_CHECK, EVENTS_PER_SWEEP_STEP};
use super::{Engine, Lane};
use crate::time::Millis;

/// How many events a lane judges between reads of the other lanes'
/// times, and how far its own time may move before it reads them anyway
/// (the breaker counts locks by the watermark: after a jump in event
/// time, a stale one would put the first locks outside its window).
const WATERMARK_EVERY: u64 = 64;
const WATERMARK_LAG: Millis = 1000;

impl Engine {
    /// Where a clock at `cur` goes with an event at `ts`: forward by at
    /// most one sweep interval per event (see `move_lane`), never back.
    pub fn step_clock(&self, cur: Millis, ts: Millis) -> Millis {
        if cur == Millis::MIN {
            ts
        } else {
            cur.max(ts.min(cur.saturating_add(self.sweep_every)))
        }
    }

    /// Moves the event-time watermark and sweeps expired state every
    /// `state.sweep_interval_secs` of event time (and only after enough
    /// events, see `sweep_after_events`).
    ///
    /// Several threads (lanes: replay's judges, the service's partitions)
    /// may be at different event times. State is swept up to the *slowest*
    /// lane's time, so a lane that is behind never finds state missing that
    /// it still needs.
    pub(super) fn advance(&self, lane: usize, ts: Millis, clock: Option<Millis>) {
        let Some(l) = self.lanes.get(lane) else {
            return;
        };
        match clock {
            Some(c) => {
                if l.idle.load(Ordering::Relaxed) {
                    l.idle.store(false, Ordering::Relaxed);
                }
                l.ts.store(c, Ordering::Relaxed);
            }
            None => self.move_lane(l, ts),
        }
        let since = l.since_sweep.fetch_add(1, Ordering::Relaxed) + 1;
        if since.is_multiple_of(EVENTS_PER_SHORT_SWEEP_CHECK) {
            self.sweep_short_lived();
        }
        if self.sweep_under_way.load(Ordering::Relaxed) {
            // Another lane may be taking a step: this one does not wait.
            if since.is_multiple_of(EVENTS_PER_SWEEP_STEP) {
                if let Ok(mut next) = self.sweeping.try_lock() {
                    self.sweep_step(&mut next);
                }
            }
            return;
        }
        if since * (self.lanes.len() as u64) < self.sweep_after_events.load(Ordering::Relaxed) {
            return;
        }
        let low = self.low_watermark();
        let due = self.next_sweep.load(Ordering::Relaxed);
        if due == Millis::MIN {
            let _ = self.next_sweep.compare_exchange(
                due,
                low.saturating_add(self.sweep_every),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return;
        }
        if low >= due
            && self
                .next_sweep
                .compare_exchange(
                    due,
                    low + self.sweep_every,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let mut next = self.sweeping.lock().unwrap_or_else(|e| e.into_inner());
            self.begin_sweep(low, &mut next);
        }
    }

    /// The low watermark as `lane` sees it: with one lane its own time;
    /// with several, read from all of them every `WATERMARK_EVERY` events
    /// or when its own time moved a second past the last read, and in
    /// between the time read then (lanes' times only move forward,
    /// so that time is one every lane has reached; a lane back from idle
    /// behind the others is seen at the next read). Reading the other
    /// lanes' times on every event made their cache lines travel between
    /// the cores on every event.
    pub(super) fn lane_watermark(&self, lane: usize) -> Millis {
        let Some(l) = self.lanes.get(lane).filter(|_| self.lanes.len() > 1) else {
            return self.low_watermark();
        };
        let n = l.since_low.load(Ordering::Relaxed);
        l.since_low.store(n.wrapping_add(1), Ordering::Relaxed);
        let own = l.ts.load(Ordering::Relaxed);
        if n % WATERMARK_EVERY == 0
            || own.saturating_sub(l.low_at.load(Ordering::Relaxed)) > WATERMARK_LAG
        {
            let low = self.low_watermark();
            l.low.store(low, Ordering::Relaxed);
            l.low_at.store(own, Ordering::Relaxed);
            low
        } else {
            l.low.load(Ordering::Relaxed)
        }
    }

    /// The event time every lane has reached.
    pub fn low_watermark(&self) -> Millis {
        self.lanes
            .iter()
            .filter(|l| !l.idle.load(Ordering::Relaxed))
            .map(|l| l.ts.load(Ordering::Relaxed))
            .min()
            .unwrap_or(Millis::MIN)
    }

    /// Declares `n` lanes (threads that each judge a share of the events).
    pub fn set_lanes(&mut self, n: usize) {
        self.lanes = (0..n.max(1)).map(|_| Lane::new()).collect();
    }

    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Tells the engine that `lane` has seen everything up to `ts`, also
    /// when none of it was its own (a batch with no events of its shard).
    pub fn lane_progress(&self, lane: usize, ts: Millis) {
        if let Some(l) = self.lanes.get(lane) {
            self.move_lane(l, ts);
        }
    }

    /// A lane's time moves forward by at most one sweep interval per event:
    /// a single event stamped hours ahead (the contract accepts up to 24 h)
    /// then cannot make the next sweep forget what the detectors still
    /// need. A real jump (a replay with a gap) is caught up within a few
    /// hundred events; meanwhile state is only kept a little longer.
    fn move_lane(&self, l: &Lane, ts: Millis) {
        if l.idle.load(Ordering::Relaxed) {
            l.idle.store(false, Ordering::Relaxed);
        }
        let cur = l.ts.load(Ordering::Relaxed);
        let target = if cur == Millis::MIN {
            ts
        } else {
            ts.min(cur.saturating_add(self.sweep_every))
        };
        if target > cur {
            l.ts.fetch_max(target, Ordering::Relaxed);
        }
    }

    /// Declares `lane` idle (the service: its worker owns no partition): it
    /// no longer holds the sweep watermark back. It is active again with
    /// [`Engine::lane_wake`] or its next event; events it then judges that
    /// are older than the watermark may find their state swept.
    pub fn lane_idle(&self, lane: usize) {
        if let Some(l) = self.lanes.get(lane) {
            l.idle.store(true, Ordering::Relaxed);
        }
    }

    /// Forgets `lane`'s time and declares it idle (the service: its worker
    /// lost every partition, and their state with them). When it is woken
    /// again it starts from the time of its next event, so a partition
    /// re-read from an older offset rebuilds its windows instead of having
    /// them swept against a time its lane had reached before.
    pub fn lane_reset(&self, lane: usize) {
        if let Some(l) = self.lanes.get(lane) {
            l.idle.store(true, Ordering::Relaxed);
            l.ts.store(Millis::MIN, Ordering::Relaxed);
        }
    }

    /// `lane` holds the watermark back again, at the time it had reached
    /// (the service: its worker owns partitions again).
    pub fn lane_wake(&self, lane: usize) {
        if let Some(l) = self.lanes.get(lane) {
            l.idle.store(false, Ordering::Relaxed);
        }
    }
}
