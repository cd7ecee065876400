//! The lock-storm breaker: when automatic locks exceed a share of the
//! active accounts within a window, locking stops (alerts go on); it
//! closes by itself when the share falls back.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use crate::section::Checks;
use crate::time::{Millis, SECOND};

crate::section! {
    /// `[policy.breaker]`: when automatic locks exceed a share of the
    /// active accounts within a window, stop locking (alerts go on).
    pub struct BreakerConfig {
        /// Runs the breaker.
        pub enabled: bool = true,
        /// The window, in seconds of event time.
        pub window_secs: u64 = 3600,
        /// Share of the accounts active in the window that may be locked
        /// before the breaker opens: real campaigns compromise a few
        /// accounts per thousand; a bad GeoIP update moves everyone at once.
        pub max_lock_ratio: f64 = 0.01,
        /// The breaker never opens below this many locks in the window, so a
        /// small platform can still lock a handful.
        pub min_locks: u64 = 20,
    }
}

impl BreakerConfig {
    pub fn check(&self, c: &mut Checks) {
        if !(self.max_lock_ratio > 0.0 && self.max_lock_ratio <= 1.0) {
            c.fail(
                "max_lock_ratio",
                "must be a share in (0, 1], e.g. 0.01 for 1 %",
            );
        }
        c.positive("window_secs", self.window_secs);
    }
}
const HLL_BITS: u32 = 10;
const HLL_REGISTERS: usize = 1 << HLL_BITS;
const BUCKETS: usize = 12;

struct Bucket {
    epoch: AtomicI64,
    locks: AtomicU64,
    registers: Vec<AtomicU8>,
}

/// The lock-storm breaker. Active accounts are counted with a HyperLogLog
/// sketch per twelfth of the window (1024 registers, about ±3 %), so the
/// count costs a few kilobytes whatever the platform's size.
pub struct Breaker {
    cfg: BreakerConfig,
    bucket_ms: Millis,
    buckets: Vec<Bucket>,
    rotate: Mutex<()>,
    open: AtomicBool,
    pub opened_total: AtomicU64,
    newest_epoch: AtomicI64,
}

impl Breaker {
    pub fn new(cfg: &BreakerConfig) -> Self {
        let window = cfg.window_secs as Millis * SECOND;
        Breaker {
            cfg: cfg.clone(),
            bucket_ms: (window / BUCKETS as Millis).max(1),
            buckets: (0..BUCKETS)
                .map(|_| Bucket {
                    epoch: AtomicI64::new(Millis::MIN),
                    locks: AtomicU64::new(0),
                    registers: (0..HLL_REGISTERS).map(|_| AtomicU8::new(0)).collect(),
                })
                .collect(),
            rotate: Mutex::new(()),
            open: AtomicBool::new(false),
            opened_total: AtomicU64::new(0),
            newest_epoch: AtomicI64::new(Millis::MIN),
        }
    }

    fn bucket(&self, ts: Millis) -> Option<&Bucket> {
        let epoch = ts.div_euclid(self.bucket_ms);
        let newest = self
            .newest_epoch
            .fetch_max(epoch, Ordering::Relaxed)
            .max(epoch);
        if epoch <= newest - BUCKETS as i64 {
            return None; // older than the window
        }
        let b = &self.buckets[epoch.rem_euclid(BUCKETS as i64) as usize];
        if b.epoch.load(Ordering::Acquire) != epoch {
            let _g = self.rotate.lock().unwrap_or_else(|p| p.into_inner());
            let cur = b.epoch.load(Ordering::Acquire);
            if cur > epoch {
                return None;
            }
            if cur != epoch {
                for r in &b.registers {
                    r.store(0, Ordering::Relaxed);
                }
                b.locks.store(0, Ordering::Relaxed);
                b.epoch.store(epoch, Ordering::Release);
            }
        }
        Some(b)
    }

    /// Counts an account as active at `ts` (every event calls this).
    pub fn observe(&self, key: u64, ts: Millis) {
        if let Some(b) = self.bucket(ts) {
            let idx = (key >> (64 - HLL_BITS)) as usize;
            let rest = (key << HLL_BITS) | (1 << (HLL_BITS - 1));
            let rank = rest.leading_zeros() as u8 + 1;
            // Read first: most events do not raise a register, and a read
            // does not take the cache line away from the other threads.
            if b.registers[idx].load(Ordering::Relaxed) < rank {
                b.registers[idx].fetch_max(rank, Ordering::Relaxed);
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = &Bucket> {
        let newest = self.newest_epoch.load(Ordering::Relaxed);
        self.buckets.iter().filter(move |b| {
            let e = b.epoch.load(Ordering::Acquire);
            e != Millis::MIN && e > newest - BUCKETS as i64
        })
    }

    /// Estimated distinct accounts active in the window.
    pub fn active_accounts(&self) -> f64 {
        let mut merged = [0u8; HLL_REGISTERS];
        for b in self.live() {
            for (m, r) in merged.iter_mut().zip(&b.registers) {
                *m = (*m).max(r.load(Ordering::Relaxed));
            }
        }
        let m = HLL_REGISTERS as f64;
        let sum: f64 = merged.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
        let zeros = merged.iter().filter(|&&r| r == 0).count();
        let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }

    /// Automatic locks counted in the window.
    pub fn locks_in_window(&self) -> u64 {
        self.live().map(|b| b.locks.load(Ordering::Relaxed)).sum()
    }

    /// Counts a lock about to be sent; returns true when the breaker is
    /// open and the lock must become an alert.
    pub fn record_lock(&self, ts: Millis) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        if let Some(b) = self.bucket(ts) {
            b.locks.fetch_add(1, Ordering::Relaxed);
        }
        self.refresh(ts)
    }

    /// Re-evaluates the breaker; returns whether it is open.
    pub fn refresh(&self, ts: Millis) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        let _ = self.bucket(ts);
        let locks = self.locks_in_window();
        let active = self.active_accounts().max(1.0);
        let open = locks >= self.cfg.min_locks && locks as f64 > self.cfg.max_lock_ratio * active;
        let was = self.open.swap(open, Ordering::Relaxed);
        if open && !was {
            self.opened_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                locks,
                active_accounts = active.round() as u64,
                max_lock_ratio = self.cfg.max_lock_ratio,
                "Lock-storm breaker opened: automatic locking is suspended, alerts go on."
            );
        } else if was && !open {
            tracing::warn!(
                locks,
                "Lock-storm breaker closed: automatic locking resumes."
            );
        }
        open
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::event::account_key;

    #[test]
    fn hyperloglog_counts_distinct_accounts() {
        let b = Breaker::new(&BreakerConfig::default());
        for i in 0..20_000 {
            let k = account_key(&format!("user{i}"));
            b.observe(k, 1_000_000);
            b.observe(k, 1_000_500); // repeats do not count twice
        }
        let est = b.active_accounts();
        assert!((18_000.0..22_000.0).contains(&est), "{est}");
    }

    #[test]
    fn breaker_opens_on_a_storm_and_closes_after() {
        let cfg = BreakerConfig {
            min_locks: 5,
            max_lock_ratio: 0.01,
            ..BreakerConfig::default()
        };
        let b = Breaker::new(&cfg);
        let t0 = 1_800_000_000_000;
        for i in 0..1000 {
            b.observe(account_key(&format!("u{i}")), t0);
        }
        let opened: Vec<bool> = (0..20).map(|_| b.record_lock(t0)).collect();
        assert!(!opened[0] && !opened[4], "a few locks are fine");
        assert!(
            opened[19],
            "twenty locks among a thousand accounts is a storm"
        );
        assert!(b.is_open());
        // Two windows later, with traffic but no locks, it closes.
        let later = t0 + 2 * 3600 * 1000;
        for i in 0..1000 {
            b.observe(account_key(&format!("u{i}")), later);
        }
        assert!(!b.refresh(later));
    }
}
