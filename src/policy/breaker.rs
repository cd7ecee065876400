//! The lock-storm breaker: when one detector's automatic locks of
//! established accounts exceed a share of the active accounts within a
//! window, that detector's locking stops (its alerts go on, and the other
//! detectors keep locking); it closes by itself when the share falls back.
//!
//! It is built to count what a bad GeoIP update or a broken detector would
//! cause, and to be hard to trip on purpose:
//!
//! * **per detector**: a storm of one detector (every login "travels" after
//!   a bad GeoIP update) suspends that detector only, so tripping
//!   `password_spray` does not silence `impossible_travel`;
//! * **established accounts only**: a lock counts when the account had
//!   logged in successfully at least `established_secs` before the evidence
//!   began (its profile). Throwaway accounts that an attacker signs up and
//!   locks on purpose are not counted;
//! * **active accounts** are accounts with a successful login or a
//!   submission in the window. Failures on made-up names do not inflate it;
//! * **its clock is the engine's watermark**, which one event stamped hours
//!   ahead cannot move by more than a sweep interval.
//!
//! When it opens, the log line says which detector, how many locks, and from
//! how many distinct networks they came: a storm comes from everywhere, a
//! deliberate trip from a few places (see the runbook).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use crate::section::Checks;
use crate::time::{Millis, SECOND};

crate::section! {
    /// `[policy.breaker]`: when one detector's automatic locks exceed a
    /// share of the active accounts within a window, stop its locking
    /// (alerts go on).
    pub struct BreakerConfig {
        /// Runs the breaker.
        pub enabled: bool = true,
        /// The window, in seconds of event time.
        pub window_secs: u64 = 3600,
        /// Share of the accounts active in the window that one detector may
        /// lock before its breaker opens: real campaigns compromise a few
        /// accounts per thousand; a bad GeoIP update moves everyone at once.
        pub max_lock_ratio: f64 = 0.01,
        /// The breaker never opens below this many locks in the window, so a
        /// small platform can still lock a handful.
        pub min_locks: u64 = 20,
        /// A lock counts only when its account had logged in successfully
        /// at least this many seconds before the evidence began
        /// (`[profile]`). A bad GeoIP update locks the platform's
        /// established customers; an attacker tripping the breaker on
        /// purpose would need accounts that old.
        pub established_secs: u64 = 86_400,
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
/// Networks of counted locks remembered per detector, for the log line.
const SOURCES_SHOWN: usize = 256;

struct Bucket {
    epoch: AtomicI64,
    /// Counted locks, per detector.
    locks: Vec<AtomicU64>,
    registers: Vec<AtomicU8>,
}

/// One detector's side of the breaker.
struct Side {
    name: &'static str,
    open: AtomicBool,
    /// (time, network) of its counted locks, newest last.
    sources: Mutex<Vec<(Millis, u64)>>,
}

/// The lock-storm breaker. Active accounts are counted with a HyperLogLog
/// sketch per twelfth of the window (1024 registers, about ±3 %), so the
/// count costs a few kilobytes whatever the platform's size.
pub struct Breaker {
    cfg: BreakerConfig,
    bucket_ms: Millis,
    buckets: Vec<Bucket>,
    sides: Vec<Side>,
    rotate: Mutex<()>,
    pub opened_total: AtomicU64,
    /// Locks not counted because their account was not established.
    pub uncounted_total: AtomicU64,
    newest_epoch: AtomicI64,
    /// Bumped whenever what `active_accounts` reads changes (a register
    /// raised, a bucket turned, the window moved on), so that the estimate
    /// is computed once per change, not once per lock.
    version: AtomicU64,
    /// (version, estimate) of the last estimate computed.
    estimate: Mutex<(u64, f64)>,
}

impl Breaker {
    /// A breaker with one side per detector, in registration order.
    pub fn new(cfg: &BreakerConfig, detectors: &[&'static str]) -> Self {
        let window = cfg.window_secs as Millis * SECOND;
        let n = detectors.len().max(1);
        Breaker {
            cfg: cfg.clone(),
            bucket_ms: (window / BUCKETS as Millis).max(1),
            buckets: (0..BUCKETS)
                .map(|_| Bucket {
                    epoch: AtomicI64::new(Millis::MIN),
                    locks: (0..n).map(|_| AtomicU64::new(0)).collect(),
                    registers: (0..HLL_REGISTERS).map(|_| AtomicU8::new(0)).collect(),
                })
                .collect(),
            sides: (0..n)
                .map(|i| Side {
                    name: detectors.get(i).copied().unwrap_or("detector"),
                    open: AtomicBool::new(false),
                    sources: Mutex::new(Vec::new()),
                })
                .collect(),
            rotate: Mutex::new(()),
            opened_total: AtomicU64::new(0),
            uncounted_total: AtomicU64::new(0),
            newest_epoch: AtomicI64::new(Millis::MIN),
            version: AtomicU64::new(0),
            estimate: Mutex::new((u64::MAX, 0.0)),
        }
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    /// How long before a lock's evidence its account must have been seen
    /// for the lock to count.
    pub fn established(&self) -> Millis {
        self.cfg.established_secs as Millis * SECOND
    }

    fn bucket(&self, ts: Millis) -> Option<&Bucket> {
        if ts == Millis::MIN {
            return None;
        }
        let epoch = ts.div_euclid(self.bucket_ms);
        // Read first: the epoch moves once a bucket, and a read does not
        // take the cache line away from the other threads.
        let seen = self.newest_epoch.load(Ordering::Relaxed);
        let newest = if epoch > seen {
            let was = self.newest_epoch.fetch_max(epoch, Ordering::Relaxed);
            if was < epoch {
                self.changed();
            }
            was.max(epoch)
        } else {
            seen
        };
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
                for l in &b.locks {
                    l.store(0, Ordering::Relaxed);
                }
                b.epoch.store(epoch, Ordering::Release);
                self.changed();
            }
        }
        Some(b)
    }

    /// Counts an account as active at `ts` (the engine's watermark): every
    /// successful login and every submission calls this.
    pub fn observe(&self, key: u64, ts: Millis) {
        if let Some(b) = self.bucket(ts) {
            let idx = (key >> (64 - HLL_BITS)) as usize;
            let rest = (key << HLL_BITS) | (1 << (HLL_BITS - 1));
            let rank = rest.leading_zeros() as u8 + 1;
            // Read first: most events do not raise a register, and a read
            // does not take the cache line away from the other threads.
            if b.registers[idx].load(Ordering::Relaxed) < rank
                && b.registers[idx].fetch_max(rank, Ordering::Relaxed) < rank
            {
                self.changed();
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

    /// Estimated distinct accounts active in the window. Asked at every
    /// lock once a detector has `min_locks` locks in the window (see
    /// [`Breaker::refresh`]): computed afresh only when a register or the
    /// window changed since the last time (the merge of twelve buckets'
    /// registers was 12 % of a replay in which one event in twenty was a
    /// lock, see BENCHMARKS.md).
    pub fn active_accounts(&self) -> f64 {
        // Read before the registers: a change during the merge makes the
        // next call compute again.
        let version = self.version.load(Ordering::Acquire);
        let mut cached = self.estimate.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 == version {
            return cached.1;
        }
        let estimate = self.estimate_now();
        *cached = (version, estimate);
        estimate
    }

    /// The estimate from the registers as they are (`powi` for its 1,024
    /// powers of two was 7 % of that replay).
    fn estimate_now(&self) -> f64 {
        let mut merged = [0u8; HLL_REGISTERS];
        for b in self.live() {
            for (m, r) in merged.iter_mut().zip(&b.registers) {
                *m = (*m).max(r.load(Ordering::Relaxed));
            }
        }
        let m = HLL_REGISTERS as f64;
        let sum: f64 = merged.iter().map(|&r| inverse_power_of_two(r)).sum();
        let zeros = merged.iter().filter(|&&r| r == 0).count();
        let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }

    /// Counted locks of detector `d` in the window.
    pub fn locks_in_window(&self, d: usize) -> u64 {
        self.live()
            .map(|b| b.locks.get(d).map_or(0, |l| l.load(Ordering::Relaxed)))
            .sum()
    }

    /// Counts a lock of detector `d` about to be sent at `ts` (the
    /// watermark), from `network`; `counted` is false for an account that
    /// is not established. Returns true when `d`'s breaker is open and the
    /// lock must become an alert.
    pub fn record_lock(&self, d: usize, ts: Millis, network: u64, counted: bool) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        if counted {
            if let Some(l) = self.bucket(ts).and_then(|b| b.locks.get(d)) {
                l.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(side) = self.sides.get(d) {
                let mut s = side.sources.lock().unwrap_or_else(|p| p.into_inner());
                if s.len() >= SOURCES_SHOWN {
                    s.remove(0);
                }
                s.push((ts, network));
            }
        } else {
            self.uncounted_total.fetch_add(1, Ordering::Relaxed);
        }
        self.refresh(ts);
        self.is_open_for(d)
    }

    /// Re-evaluates every detector's side at `ts`; returns whether any is open.
    pub fn refresh(&self, ts: Millis) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        let _ = self.bucket(ts);
        // Asked only when a side has the locks to open: below `min_locks`
        // (nearly always) the share does not matter.
        let active = std::cell::OnceCell::new();
        let active = || *active.get_or_init(|| self.active_accounts().max(1.0));
        let window = self.cfg.window_secs as Millis * SECOND;
        let mut any = false;
        for (d, side) in self.sides.iter().enumerate() {
            let locks = self.locks_in_window(d);
            let open =
                locks >= self.cfg.min_locks && locks as f64 > self.cfg.max_lock_ratio * active();
            any |= open;
            let was = side.open.swap(open, Ordering::Relaxed);
            if open && !was {
                self.opened_total.fetch_add(1, Ordering::Relaxed);
                let networks = {
                    let s = side.sources.lock().unwrap_or_else(|p| p.into_inner());
                    let mut n: Vec<u64> = s
                        .iter()
                        .filter(|x| x.0 >= ts - window)
                        .map(|x| x.1)
                        .collect();
                    n.sort_unstable();
                    n.dedup();
                    n.len()
                };
                tracing::warn!(
                    detector = side.name,
                    locks,
                    distinct_networks = networks,
                    active_accounts = active().round() as u64,
                    max_lock_ratio = self.cfg.max_lock_ratio,
                    "Lock-storm breaker opened: this detector's automatic locks are suspended, its alerts go on. Locks from many networks: a storm (a bad GeoIP update, a broken detector); from a few: someone tripping it on purpose (docs/runbooks.md#credwatchbreakeropen)."
                );
            } else if was && !open {
                tracing::warn!(
                    detector = side.name,
                    locks,
                    "Lock-storm breaker closed: automatic locking resumes; held locks are sent if their accounts are still used from where the finding came from."
                );
            }
        }
        any
    }

    /// True when any detector's side is open.
    pub fn is_open(&self) -> bool {
        self.sides.iter().any(|s| s.open.load(Ordering::Relaxed))
    }

    /// True when detector `d`'s side is open.
    pub fn is_open_for(&self, d: usize) -> bool {
        self.sides
            .get(d)
            .is_some_and(|s| s.open.load(Ordering::Relaxed))
    }

    /// (detector, open) for every side.
    pub fn sides(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        self.sides
            .iter()
            .map(|s| (s.name, s.open.load(Ordering::Relaxed)))
    }
}

/// 2 to the power of `-r`, exactly (what `2f64.powi(-r)` gives), built
/// from its bits: a register's rank is at most 55 and 2^-255 is still a
/// normal number.
fn inverse_power_of_two(r: u8) -> f64 {
    f64::from_bits((1023 - u64::from(r)) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::event::account_key;

    #[test]
    fn inverse_powers_of_two_are_those_of_powi() {
        for r in 0..=u8::MAX {
            assert_eq!(inverse_power_of_two(r), 2f64.powi(-i32::from(r)), "{r}");
        }
    }

    #[test]
    fn hyperloglog_counts_distinct_accounts() {
        let b = Breaker::new(&BreakerConfig::default(), &["d"]);
        for i in 0..20_000 {
            let k = account_key(&format!("user{i}"));
            b.observe(k, 1_000_000);
            b.observe(k, 1_000_500); // repeats do not count twice
        }
        let est = b.active_accounts();
        assert!((18_000.0..22_000.0).contains(&est), "{est}");
    }

    #[test]
    fn the_remembered_estimate_is_always_the_one_the_registers_give() {
        let b = Breaker::new(&BreakerConfig::default(), &["d"]);
        let bucket = b.bucket_ms;
        let mut ts = 1_000_000;
        for i in 0..30_000u64 {
            // Accounts come and go; time crosses buckets, then the window.
            let k = account_key(&format!("user{}", i % 7_000 + i / 10_000 * 3_000));
            ts += bucket / 500;
            b.observe(k, ts);
            if i % 29 == 0 {
                assert_eq!(b.active_accounts(), b.estimate_now(), "event {i}");
            }
        }
        // The window moves on with no new account: the buckets empty.
        for _ in 0..(2 * BUCKETS) {
            ts += bucket;
            let _ = b.bucket(ts);
            assert_eq!(b.active_accounts(), b.estimate_now());
        }
    }

    #[test]
    fn breaker_opens_on_a_storm_and_closes_after() {
        let cfg = BreakerConfig {
            min_locks: 5,
            max_lock_ratio: 0.01,
            ..BreakerConfig::default()
        };
        let b = Breaker::new(&cfg, &["travel", "spray"]);
        let t0 = 1_800_000_000_000;
        for i in 0..1000 {
            b.observe(account_key(&format!("u{i}")), t0);
        }
        let opened: Vec<bool> = (0..20).map(|i| b.record_lock(0, t0, i, true)).collect();
        assert!(!opened[0] && !opened[4], "a few locks are fine");
        assert!(
            opened[19],
            "twenty locks among a thousand accounts is a storm"
        );
        assert!(b.is_open_for(0));
        assert!(!b.is_open_for(1), "the other detector still locks");
        // Two windows later, with traffic but no locks, it closes.
        let later = t0 + 2 * 3600 * 1000;
        for i in 0..1000 {
            b.observe(account_key(&format!("u{i}")), later);
        }
        assert!(!b.refresh(later));
    }
}
