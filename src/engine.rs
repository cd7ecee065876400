//! The engine: one event in, decisions out. Shared by `replay` and `run`;
//! safe to call from many threads (events of one account must come from one
//! thread at a time, in roughly their order, as Kafka partitions give them).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::action::ActionKind;
use crate::config::Settings;
use crate::detect::{self, Context, Finding, Registered};
use crate::geo::{GeoError, GeoIp};
use crate::policy::{Decision, Policy};
use crate::source::event::{AuthResult, Event, Kind, Protocol};
use crate::state::TableStats;
use crate::time::{Millis, SECOND};

/// Counters of what the engine did, per detector in registration order.
#[derive(Debug, Default)]
pub struct DetectorCounts {
    pub findings: AtomicU64,
    pub locks: AtomicU64,
    pub alerts: AtomicU64,
    pub enriched: AtomicU64,
}

pub struct Engine {
    geo: Arc<GeoIp>,
    detectors: Vec<Registered>,
    counts: Vec<DetectorCounts>,
    policy: Policy,
    trusted: Vec<ipnet::IpNet>,
    watermark: AtomicI64,
    next_sweep: AtomicI64,
    sweep_every: Millis,
    slack: Millis,
    /// events by kind (auth, submission, bounce)
    pub events_by_kind: [AtomicU64; 3],
}

impl Engine {
    /// Opens the GeoIP databases and builds the detectors.
    pub fn new(settings: &Settings) -> Result<Engine, GeoError> {
        let geo = Arc::new(GeoIp::open(&settings.config.geoip)?);
        Ok(Self::with_geo(settings, geo))
    }

    pub fn with_geo(settings: &Settings, geo: Arc<GeoIp>) -> Engine {
        let c = &settings.config;
        let detectors = detect::build(settings);
        let counts = detectors
            .iter()
            .map(|_| DetectorCounts::default())
            .collect();
        Engine {
            geo,
            detectors,
            counts,
            policy: Policy::new(&c.policy, &c.state),
            trusted: settings.trusted.clone(),
            watermark: AtomicI64::new(Millis::MIN),
            next_sweep: AtomicI64::new(Millis::MIN),
            sweep_every: c.state.sweep_interval_secs as Millis * SECOND,
            slack: c.state.max_disorder_secs as Millis * SECOND,
            events_by_kind: Default::default(),
        }
    }

    /// Judges one event. `decided_at` stamps the actions (event time in
    /// `replay`, the wall clock in `run`).
    pub fn process(&self, event: &Event, decided_at: Option<Millis>, out: &mut Vec<Decision>) {
        let kind_idx = match event.kind {
            Kind::Auth => 0,
            Kind::Submission => 1,
            Kind::Bounce => 2,
        };
        self.events_by_kind[kind_idx].fetch_add(1, Ordering::Relaxed);
        self.advance(event.ts);
        self.policy.breaker.observe(event.key, event.ts);
        let ctx = Context::new(&self.geo, &self.trusted, event);
        let mut findings: Vec<Finding> = Vec::new();
        for (i, reg) in self.detectors.iter().enumerate() {
            let before = findings.len();
            reg.detector.observe(event, &ctx, &mut findings);
            let n = findings.len() - before;
            if n > 0 {
                self.counts[i]
                    .findings
                    .fetch_add(n as u64, Ordering::Relaxed);
                for f in findings.drain(before..) {
                    let d = self
                        .policy
                        .decide(f, reg.dry_run, decided_at.unwrap_or(event.ts));
                    match &d {
                        Decision::Emit(a) if a.data.action == ActionKind::Lock => {
                            self.counts[i].locks.fetch_add(1, Ordering::Relaxed);
                        }
                        Decision::Emit(_) => {
                            self.counts[i].alerts.fetch_add(1, Ordering::Relaxed);
                        }
                        Decision::Enrich { .. } => {
                            self.counts[i].enriched.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    out.push(d);
                }
            }
        }
    }

    /// Moves the event-time watermark and sweeps expired state every
    /// `state.sweep_interval_secs` of event time.
    fn advance(&self, ts: Millis) {
        let prev = self.watermark.fetch_max(ts, Ordering::Relaxed);
        if ts <= prev {
            return;
        }
        let due = self.next_sweep.load(Ordering::Relaxed);
        if due == Millis::MIN {
            let _ = self.next_sweep.compare_exchange(
                due,
                ts + self.sweep_every,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return;
        }
        if ts >= due
            && self
                .next_sweep
                .compare_exchange(
                    due,
                    ts + self.sweep_every,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.sweep(ts);
        }
    }

    /// Forgets everything older than each table needs.
    pub fn sweep(&self, watermark: Millis) {
        for reg in &self.detectors {
            reg.detector.sweep(watermark, self.slack);
        }
        self.policy.sweep(watermark, self.slack);
    }

    pub fn watermark(&self) -> Millis {
        self.watermark.load(Ordering::Relaxed)
    }

    pub fn geo(&self) -> &GeoIp {
        &self.geo
    }

    pub fn breaker_open(&self) -> bool {
        self.policy.breaker.is_open()
    }

    pub fn breaker_opened_total(&self) -> u64 {
        self.policy.breaker.opened_total.load(Ordering::Relaxed)
    }

    /// (detector name, dry_run, counts), in registration order.
    pub fn detector_counts(&self) -> impl Iterator<Item = (&'static str, bool, &DetectorCounts)> {
        self.detectors
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (r.detector.name(), r.dry_run, c))
    }

    /// Every state table with its size and evictions.
    pub fn tables(&self) -> Vec<TableStats> {
        let mut t: Vec<TableStats> = self
            .detectors
            .iter()
            .flat_map(|r| r.detector.tables())
            .collect();
        t.extend(self.policy.tables());
        t
    }

    /// Accounts tracked: the largest per-account table (each account with
    /// recent activity that matters is in at least the table of the detector
    /// that needs it; an account in two tables is counted once here only if
    /// it is in the largest).
    pub fn accounts_tracked(&self) -> usize {
        self.tables()
            .iter()
            .filter(|t| t.keyed_by == "account")
            .map(|t| t.len)
            .max()
            .unwrap_or(0)
    }
}

/// Labels of an event for the `credwatch_events_total` counter.
pub fn event_labels(e: &Event) -> (&'static str, &'static str, &'static str) {
    (
        e.kind.as_str(),
        e.protocol.map_or("none", Protocol::as_str),
        e.result.map_or("none", AuthResult::as_str),
    )
}
