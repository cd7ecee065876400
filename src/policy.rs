//! Policy: findings become actions.
//!
//! * One incident per account: findings on an account within
//!   `policy.cooldown_secs` of its last finding join the open incident. The
//!   first finding emits an action; later ones only enrich the incident,
//!   except an upgrade from alert to lock, which emits the lock.
//! * A detector in `dry_run`, and an account in `policy.protected_accounts`,
//!   turn a lock into an alert.
//! * The breaker: when automatic locks within `policy.breaker.window_secs`
//!   exceed `max_lock_ratio` of the accounts active in that window (and at
//!   least `min_locks`), locking stops and alerts go on; it closes by itself
//!   when the share falls back.
//! * Ids are deterministic (account, detector, incident start, action), so a
//!   re-run or a restart produces the same ids and receivers dedupe on them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use crate::action::{self, Action, ActionKind, Downgrade};
use crate::config::{BreakerConfig, PolicyConfig, StateConfig};
use crate::detect::{Finding, Strength};
use crate::source::event::normalise_account;
use crate::state::{Entry, Swept, Table};
use crate::time::{Millis, SECOND};

/// What became of a finding.
#[derive(Debug, Clone)]
pub enum Decision {
    /// A new action to send.
    Emit(Box<Action>),
    /// The finding joined an incident that already had its action.
    Enrich {
        account: Box<str>,
        detector: &'static str,
        incident: String,
        reason: String,
    },
}

impl Decision {
    /// Logs a finding that joined an open incident (one line, at info), so
    /// the incident's story reads in the logs; an action is left to the caller.
    pub fn log_joined(&self) {
        if let Decision::Enrich {
            account,
            detector,
            incident,
            reason,
        } = self
        {
            tracing::info!(%account, detector, %incident, %reason, "Finding joined an open incident.");
        }
    }
}

struct Incident {
    start: Millis,
    /// Earliest and latest event time of all its findings.
    first: Millis,
    last: Millis,
    emitted: ActionKind,
    /// Its findings in event-time order (at most `STORY_MAX`).
    story: Vec<Chapter>,
}

/// One finding of an incident, as the story in an action's evidence tells it.
#[derive(Clone, Debug, serde::Serialize)]
struct Chapter {
    #[serde(serialize_with = "ts_text")]
    ts: Millis,
    detector: &'static str,
    reason: String,
}

fn ts_text<S: serde::Serializer>(ts: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format_rfc3339(*ts))
}

const STORY_MAX: usize = 16;

impl Entry for Incident {
    fn last_seen(&self) -> Millis {
        self.last
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        self.last < horizon
    }
}

pub struct Policy {
    incidents: Table<Incident>,
    protected: HashSet<Box<str>>,
    cooldown: Millis,
    pub breaker: Breaker,
}

impl Policy {
    pub fn new(cfg: &PolicyConfig, state: &StateConfig) -> Self {
        let cooldown = cfg.cooldown_secs as Millis * SECOND;
        Policy {
            incidents: Table::new("incidents", "account", state.max_accounts, cooldown),
            protected: cfg
                .protected_accounts
                .iter()
                .filter_map(|a| normalise_account(a).ok())
                .collect(),
            cooldown,
            breaker: Breaker::new(&cfg.breaker),
        }
    }

    /// Decides what a finding becomes. `decided_at` is the action's
    /// `timestamp` (the event time in `replay`, the wall clock in `run`).
    pub fn decide(&self, f: Finding, dry_run: bool, decided_at: Millis) -> Decision {
        let mut kind = match f.strength {
            Strength::Lock => ActionKind::Lock,
            Strength::Alert => ActionKind::Alert,
        };
        let mut downgraded_by = None;
        if kind == ActionKind::Lock && dry_run {
            kind = ActionKind::Alert;
            downgraded_by = Some(Downgrade::DryRun);
        }
        if kind == ActionKind::Lock && self.protected.contains(&f.account) {
            kind = ActionKind::Alert;
            downgraded_by = Some(Downgrade::Protected);
        }
        let cooldown = self.cooldown;
        // Decide under the incident's lock, so two findings on one account
        // racing in from two threads cannot both emit.
        let outcome = self.incidents.update(
            f.key,
            || Incident {
                start: f.anchor_ts,
                first: f.first_event_ts,
                last: Millis::MIN,
                emitted: ActionKind::Alert,
                story: Vec::new(),
            },
            |inc| {
                let fresh =
                    inc.last == Millis::MIN || f.last_event_ts > inc.last.saturating_add(cooldown);
                let emit = if fresh {
                    inc.start = f.anchor_ts;
                    inc.first = f.first_event_ts;
                    inc.last = f.last_event_ts;
                    inc.emitted = kind;
                    inc.story.clear();
                    true
                } else if inc.emitted == ActionKind::Alert && kind == ActionKind::Lock {
                    inc.emitted = ActionKind::Lock;
                    true
                } else {
                    false
                };
                inc.first = inc.first.min(f.first_event_ts);
                inc.last = inc.last.max(f.last_event_ts);
                let chapter = Chapter {
                    ts: f.last_event_ts,
                    detector: f.detector,
                    reason: f.reason.clone(),
                };
                let at = inc.story.partition_point(|c| c.ts <= chapter.ts);
                inc.story.insert(at, chapter);
                if inc.story.len() > STORY_MAX {
                    // Keep the beginning (how it started) and the newest.
                    inc.story.remove(STORY_MAX / 2);
                }
                let story = (emit && inc.story.len() > 1).then(|| inc.story.clone());
                (
                    emit,
                    kind,
                    downgraded_by,
                    inc.start,
                    inc.first,
                    inc.last,
                    story,
                )
            },
        );
        let (emit, mut kind, mut downgraded_by, start, first, last, story) = outcome;
        if !emit {
            return Decision::Enrich {
                incident: action::stable_id(&[&f.account, &start.to_string()]),
                account: f.account,
                detector: f.detector,
                reason: f.reason,
            };
        }
        if kind == ActionKind::Lock && self.breaker.record_lock(f.last_event_ts) {
            kind = ActionKind::Alert;
            downgraded_by = Some(Downgrade::Breaker);
            // The incident stays open to a real lock once the breaker closes.
            self.incidents
                .with(f.key, |inc| inc.emitted = ActionKind::Alert);
        }
        let mut reason = f.reason;
        let mut evidence = f.evidence;
        if let Some(story) = story {
            // What happened before, in order: the login from where, what was
            // sent as whom, how many bounces came back.
            evidence.insert(
                "incident_story".into(),
                serde_json::to_value(story).unwrap_or_default(),
            );
        }
        if downgraded_by == Some(Downgrade::Breaker) {
            reason.push_str(
                " (Not locked: automatic locking is suspended by the lock-storm breaker.)",
            );
        }
        Decision::Emit(Box::new(action::build(
            &f.account,
            f.detector,
            kind,
            f.severity,
            reason,
            dry_run,
            downgraded_by,
            start,
            first,
            last,
            decided_at,
            evidence,
        )))
    }

    /// The incident table (swept by the engine with the detectors' tables).
    pub fn state(&self) -> &dyn Swept {
        &self.incidents
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
