//! Events per hour of a run, by kind, for the report's timeline.

use std::collections::BTreeMap;

use crate::source::event::Kind;
use crate::time::{Millis, HOUR};

/// The longest timeline drawn, in hours: a run whose events spread wider
/// (a broken timestamp years away, old logs replayed with new ones) is
/// drawn over the busiest stretch of this length, the rest counted apart.
const MAX_SPAN_HOURS: i64 = 24 * 400;

/// Events per hour of the run, by kind. Kept sparse (any hour, however far
/// from the others) with the current hour's counters at hand, as events
/// come mostly in time order.
#[derive(Debug, Default, Clone)]
pub struct Hours {
    by_hour: BTreeMap<i64, [u64; 4]>,
    hour: i64,
    current: [u64; 4],
}

/// The timeline to draw: counts per hour from `first`, and the events of
/// hours outside it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Series {
    pub first: i64,
    pub counts: Vec<[u64; 4]>,
    pub outside: u64,
}

impl Hours {
    #[inline]
    pub fn add(&mut self, ts: Millis, kind: Kind) {
        let hour = ts.div_euclid(HOUR);
        if hour != self.hour {
            self.settle();
            self.hour = hour;
        }
        self.current[kind as usize] += 1;
    }

    /// Moves the current hour's counters into the map.
    fn settle(&mut self) {
        if self.current != [0; 4] {
            let e = self.by_hour.entry(self.hour).or_default();
            for (total, n) in e.iter_mut().zip(self.current) {
                *total += n;
            }
            self.current = [0; 4];
        }
    }

    /// Every hour with events, the current one included.
    fn all(&self) -> BTreeMap<i64, [u64; 4]> {
        let mut m = self.by_hour.clone();
        if self.current != [0; 4] {
            let e = m.entry(self.hour).or_default();
            for (total, n) in e.iter_mut().zip(self.current) {
                *total += n;
            }
        }
        m
    }

    /// The busiest stretch of at most [`MAX_SPAN_HOURS`], hour by hour.
    pub fn series(&self) -> Series {
        let all: Vec<(i64, [u64; 4])> = self.all().into_iter().collect();
        if all.is_empty() {
            return Series::default();
        }
        let sum = |c: &[u64; 4]| c.iter().sum::<u64>();
        // Two pointers over the hours: the window holding the most events.
        let (mut best, mut best_at, mut in_window, mut lo) = (0u64, (0, 0), 0u64, 0usize);
        for hi in 0..all.len() {
            in_window += sum(&all[hi].1);
            while all[hi].0 - all[lo].0 >= MAX_SPAN_HOURS {
                in_window -= sum(&all[lo].1);
                lo += 1;
            }
            if in_window > best {
                best = in_window;
                best_at = (lo, hi);
            }
        }
        let (lo, hi) = best_at;
        let first = all[lo].0;
        let mut counts = vec![[0u64; 4]; (all[hi].0 - first + 1) as usize];
        for (hour, c) in &all[lo..=hi] {
            counts[(hour - first) as usize] = *c;
        }
        let total: u64 = all.iter().map(|(_, c)| sum(c)).sum();
        Series {
            first,
            counts,
            outside: total - best,
        }
    }

    pub fn total(&self, kind: Kind) -> u64 {
        self.by_hour.values().map(|c| c[kind as usize]).sum::<u64>() + self.current[kind as usize]
    }
}
