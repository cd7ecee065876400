//! The engine: one event in, decisions out. Shared by `replay` and `run`;
//! safe to call from many threads (events of one account must come from one
//! thread at a time, in roughly their order, as Kafka partitions give them).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::action::ActionKind;
use crate::config::Settings;
use crate::detect::{self, Context, Finding, Registered};
use crate::geo::{GeoError, GeoIp};
use crate::policy::{Decision, Judged, Policy};
use crate::source::event::{AccountForm, AuthResult, Event, Kind, ProfileHint};
use crate::state::profile::Profile;
use crate::state::{KeyedBy, Swept, TableStats};
use crate::time::{Millis, SECOND};

/// Counters of what the engine did, per detector in registration order.
#[derive(Debug, Default)]
pub struct DetectorCounts {
    pub findings: AtomicU64,
    pub locks: AtomicU64,
    pub alerts: AtomicU64,
    pub enriched: AtomicU64,
}

/// How many events a lane warms at a time before judging them
/// ([`Engine::warm`]): the parallel replay's judges and the service's
/// workers (which also parse that many messages at a time).
pub const WARM_AHEAD: usize = 32;

/// What one lane (a thread judging a share of the events) writes on every
/// event, on its own cache line so lanes never contend.
#[repr(align(128))]
#[derive(Default)]
struct Lane {
    ts: AtomicI64,
    since_sweep: AtomicU64,
    events_by_kind: [AtomicU64; 4],
    geo_lookups: AtomicU64,
    geo_hits: AtomicU64,
    /// The low watermark as this lane last read it from all lanes, and
    /// the events it has judged since (see `Engine::lane_watermark`).
    low: AtomicI64,
    /// This lane's own time when it last read them.
    low_at: AtomicI64,
    since_low: AtomicU64,
    /// An idle lane (a service worker between partitions, a finished
    /// restore) does not hold the watermark back.
    idle: std::sync::atomic::AtomicBool,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            ts: AtomicI64::new(Millis::MIN),
            low: AtomicI64::new(Millis::MIN),
            low_at: AtomicI64::new(Millis::MIN),
            ..Lane::default()
        }
    }
}

mod lanes;
mod sweep;

pub struct Engine {
    /// Swapped whole when the database files change (see `reload_geo`).
    geo: arc_swap::ArcSwap<GeoIp>,
    detectors: Vec<Registered>,
    counts: Vec<DetectorCounts>,
    policy: Policy,
    /// The accounts' profiles (none in a stage keyed by source address).
    profile: Option<Profile>,
    /// How accounts are spelled (`[events]`): what the events judged here
    /// must be parsed with.
    form: AccountForm,
    trusted: Vec<ipnet::IpNet>,
    lanes: Vec<Lane>,
    next_sweep: AtomicI64,
    /// When the short-lived tables are next swept (event time), and
    /// after how many events (a quarter of the items they held after the
    /// last sweep; counted in lanes' looks, see `sweep_short_lived`).
    next_short_sweep: AtomicI64,
    short_events: AtomicU64,
    short_sweep_after: AtomicU64,
    /// Locks the breaker held back and sent later.
    held_released: AtomicU64,
    unlocks: AtomicU64,
    sweep_every: Millis,
    /// How many events (over all lanes) must pass between sweeps: a sweep
    /// visits every entry, so it waits for at least an eighth of the
    /// entries' count in events (amortised: at most 8 entry visits per
    /// event, however fast event time runs in a replay).
    sweep_after_events: AtomicU64,
    /// The next shard of the sweep under way (`None`: none is).
    sweeping: std::sync::Mutex<Option<usize>>,
    sweep_under_way: std::sync::atomic::AtomicBool,
    slack: Millis,
}

impl Engine {
    /// Opens the GeoIP databases and builds every enabled detector.
    pub fn new(settings: &Settings) -> Result<Engine, GeoError> {
        Self::for_stage(settings, None)
    }

    /// [`Engine::new`] with only the detectors keyed by `keyed_by` (one
    /// stage of a split pipeline); `None`: all of them.
    pub fn for_stage(settings: &Settings, keyed_by: Option<KeyedBy>) -> Result<Engine, GeoError> {
        let geo = Arc::new(GeoIp::open(&settings.config.geoip)?);
        Ok(Self::build(settings, geo, keyed_by))
    }

    pub fn with_geo(settings: &Settings, geo: Arc<GeoIp>) -> Engine {
        Self::build(settings, geo, None)
    }

    fn build(settings: &Settings, geo: Arc<GeoIp>, keyed_by: Option<KeyedBy>) -> Engine {
        let c = &settings.config;
        let detectors = detect::build(&c.detectors, &c.state, &c.events.form(), keyed_by);
        let counts = detectors
            .iter()
            .map(|_| DetectorCounts::default())
            .collect();
        Engine {
            policy: Policy::new(
                &c.policy,
                &c.state,
                &c.events.form(),
                &detectors.iter().map(|r| r.name).collect::<Vec<_>>(),
            ),
            geo: arc_swap::ArcSwap::new(geo),
            detectors,
            counts,
            form: c.events.form(),
            profile: (keyed_by != Some(KeyedBy::Source))
                .then(|| Profile::new(&c.profile, &c.state)),
            trusted: settings.trusted.clone(),
            lanes: vec![Lane::new()],
            next_sweep: AtomicI64::new(Millis::MIN),
            next_short_sweep: AtomicI64::new(Millis::MIN),
            short_events: AtomicU64::new(0),
            short_sweep_after: AtomicU64::new(0),
            held_released: AtomicU64::new(0),
            unlocks: AtomicU64::new(0),
            sweep_every: c.state.sweep_interval_secs as Millis * SECOND,
            sweep_after_events: AtomicU64::new(sweep::MIN_EVENTS_BETWEEN_SWEEPS),
            sweeping: std::sync::Mutex::new(None),
            sweep_under_way: std::sync::atomic::AtomicBool::new(false),
            slack: c.state.max_disorder_secs as Millis * SECOND,
        }
    }

    /// Judges one event. `decided_at` stamps the actions (event time in
    /// `replay`, the wall clock in `run`).
    pub fn process(&self, event: &Event, decided_at: Option<Millis>, out: &mut Vec<Decision>) {
        self.process_in_lane(0, event, decided_at, out)
    }

    /// [`Engine::process`] for one of several lanes (see [`Engine::set_lanes`]).
    pub fn process_in_lane(
        &self,
        lane: usize,
        event: &Event,
        decided_at: Option<Millis>,
        out: &mut Vec<Decision>,
    ) {
        self.process_at(lane, None, event, decided_at, out)
    }

    /// [`Engine::process_in_lane`] with the lane's time given: the service
    /// passes the slowest of the worker's partitions' clocks (each moved
    /// with [`Engine::step_clock`]), so a partition behind is never swept
    /// by a faster one that shares its worker.
    pub fn process_clocked(
        &self,
        lane: usize,
        clock: Millis,
        event: &Event,
        decided_at: Option<Millis>,
        out: &mut Vec<Decision>,
    ) {
        self.process_at(lane, Some(clock), event, decided_at, out)
    }

    /// Brings what judging `events` (the next few dozen of a lane) will
    /// read first into the processor's cache: their accounts' profiles,
    /// their addresses' GeoIP cache slots and the sparse tables' presence
    /// bits. Their memory misses then overlap, where judging meets them
    /// one after another. Changes nothing; `keys` is room for the accounts.
    pub fn warm<'a>(&self, events: impl Iterator<Item = &'a Event>, keys: &mut Vec<u64>) {
        keys.clear();
        let geo = self.geo.load();
        for e in events {
            keys.push(e.key);
            if let Some(ip) = e.src_ip {
                geo.warm(ip);
            }
        }
        self.policy.warm(keys);
        for reg in &self.detectors {
            reg.detector.warm(keys);
        }
        if let Some(p) = &self.profile {
            p.warm(keys);
        }
    }

    /// Judges `event` with the detectors keyed by source address only, and
    /// drops their findings: a restore from a checkpoint rebuilds their
    /// windows from the input before it (the accounts' state is in the
    /// checkpoint and must not see these events twice).
    pub fn process_sources(&self, lane: usize, clock: Millis, event: &Event) {
        self.advance(lane, event.ts, Some(clock));
        if event.kind == Kind::Unlock {
            return;
        }
        let geo = self.geo.load();
        let ctx = Context::new(&geo, &self.trusted, event).with_profile(self.profile.as_ref());
        let mut findings = Vec::new();
        for reg in self
            .detectors
            .iter()
            .filter(|r| r.keyed_by == KeyedBy::Source)
        {
            reg.detector.observe(event, &ctx, &mut findings);
            findings.clear();
        }
    }

    /// How far back the tables keyed by source address reach (their
    /// longest time-to-live and the allowed disorder); 0 without any.
    pub fn source_window(&self) -> Millis {
        self.detectors
            .iter()
            .filter(|r| r.keyed_by == KeyedBy::Source)
            .flat_map(|r| r.detector.state())
            .map(|t| t.stats().ttl)
            .max()
            .map_or(0, |ttl| ttl + self.slack)
    }

    fn process_at(
        &self,
        lane: usize,
        clock: Option<Millis>,
        event: &Event,
        decided_at: Option<Millis>,
        out: &mut Vec<Decision>,
    ) {
        let kind_idx = match event.kind {
            Kind::Auth => 0,
            Kind::Submission => 1,
            Kind::Bounce => 2,
            Kind::Unlock => 3,
        };
        if let Some(l) = self.lanes.get(lane) {
            l.events_by_kind[kind_idx].fetch_add(1, Ordering::Relaxed);
        }
        self.advance(lane, event.ts, clock);
        if event.kind == Kind::Unlock {
            self.unlock(event, decided_at.unwrap_or(event.ts), out);
            return;
        }
        // The breaker's clock is the watermark (one event stamped hours
        // ahead cannot move it), and its active accounts are accounts that
        // logged in or sent (failures on made-up names are not accounts).
        let now = self.lane_watermark(lane).max(Millis::MIN + 1);
        let used = event.is_auth(AuthResult::Success) || event.kind == Kind::Submission;
        if used {
            self.policy.breaker.observe(event.key, now);
        }
        let geo = self.geo.load();
        let ctx = Context::new(&geo, &self.trusted, event).with_profile(self.profile.as_ref());
        ctx.hold_profile();
        let decided_at = decided_at.unwrap_or(event.ts);
        if used && self.policy.has_held(event.key) {
            self.release_held(event, now, decided_at, out);
        }
        let mut findings: Vec<Finding> = Vec::new();
        for (i, reg) in self.detectors.iter().enumerate() {
            reg.detector.observe(event, &ctx, &mut findings);
            if !findings.is_empty() {
                self.counts[i]
                    .findings
                    .fetch_add(findings.len() as u64, Ordering::Relaxed);
                for f in findings.drain(..) {
                    let judged = Judged {
                        detector: i,
                        dry_run: reg.dry_run,
                        third_party: reg.third_party,
                        established: self.established(&f, &ctx),
                        network: f.source.map_or(0, |ip| self.network(ip)),
                        now,
                        decided_at,
                    };
                    let d = self.policy.decide(f, judged);
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
        ctx.learn(event);
        self.count_geo(lane, &ctx);
    }

    /// The provider unlocked the account: its incident ends, and it starts
    /// afresh. Every detector forgets it (the attacker's logins and sending
    /// must not make the owner's next login look like travel, or the
    /// attack's volume a habit), and its profile forgets the networks
    /// first used during the incident; what it used before stays.
    fn unlock(&self, event: &Event, decided_at: Millis, out: &mut Vec<Decision>) {
        let (action, since) = self.policy.unlock(
            event.key,
            &event.account,
            event.ts,
            decided_at,
            event.reason.as_deref(),
        );
        for t in self.detectors.iter().flat_map(|r| r.detector.state()) {
            if t.stats().keyed_by == KeyedBy::Account {
                t.remove(event.key);
            }
        }
        if let Some(p) = &self.profile {
            // The detectors' part of the profile goes with their tables.
            p.forget_logins(event.key);
            if let Some(since) = since {
                p.forget_since(event.key, since);
            }
        }
        self.unlocks.fetch_add(1, Ordering::Relaxed);
        out.push(Decision::Emit(Box::new(action)));
    }

    /// Unlock events judged since start.
    pub fn unlocks(&self) -> u64 {
        self.unlocks.load(Ordering::Relaxed)
    }

    /// Sends a lock the breaker held back, if its breaker has closed and the
    /// event comes from the network the finding came from.
    fn release_held(
        &self,
        event: &Event,
        now: Millis,
        decided_at: Millis,
        out: &mut Vec<Decision>,
    ) {
        let Some(ip) = event.src_ip else { return };
        if let Some(d) = self.policy.release(
            event.key,
            &event.account,
            self.network(ip),
            event.ts,
            now,
            decided_at,
        ) {
            if let Decision::Emit(a) = &d {
                if let Some(i) = self
                    .detectors
                    .iter()
                    .position(|r| r.name == a.data.detector)
                {
                    self.counts[i].locks.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.held_released.fetch_add(1, Ordering::Relaxed);
            out.push(d);
        }
    }

    /// The network of an address, as profiles and held locks compare them.
    fn network(&self, ip: std::net::IpAddr) -> u64 {
        match &self.profile {
            Some(p) => p.network(ip),
            None => crate::source::event::address_key(ip),
        }
    }

    /// Whether a finding's account had logged in long enough before its
    /// evidence for its lock to count on the breaker. Without profiles (the
    /// source stage of a split pipeline) every lock counts.
    fn established(&self, f: &Finding, ctx: &Context<'_>) -> bool {
        match &self.profile {
            Some(_) => ctx
                .first_seen(f.key)
                .is_some_and(|t| t <= f.first_event_ts - self.policy.breaker.established()),
            // The source stage: the account stage's hint, when it came.
            None => f
                .account_since
                .is_none_or(|t| t <= f.first_event_ts - self.policy.breaker.established()),
        }
    }

    /// Held locks sent since start, and locks the breaker did not count.
    pub fn breaker_counts(&self) -> (u64, u64) {
        (
            self.held_released.load(Ordering::Relaxed),
            self.policy.breaker.uncounted_total.load(Ordering::Relaxed),
        )
    }

    /// (detector, open) of every side of the breaker.
    pub fn breaker_sides(&self) -> Vec<(&'static str, bool)> {
        self.policy.breaker.sides().collect()
    }

    fn count_geo(&self, lane: usize, ctx: &Context<'_>) {
        if let (Some(hit), Some(l)) = (ctx.geo_lookup(), self.lanes.get(lane)) {
            l.geo_lookups.fetch_add(1, Ordering::Relaxed);
            if hit {
                l.geo_hits.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// What this engine's profiles know of an event's account, for the
    /// source stage of a split pipeline (`None`: no profiles here).
    pub fn hint(&self, event: &Event) -> Option<ProfileHint> {
        let (p, ip) = (self.profile.as_ref()?, event.src_ip?);
        Some(ProfileHint {
            network_since: p.seen(event.key, ip, None).network,
            account_since: p.first_seen(event.key),
        })
    }

    /// The account form the events judged here are parsed with.
    pub fn account_form(&self) -> &AccountForm {
        &self.form
    }

    /// Replaces the GeoIP databases (already opened and verified); events
    /// judged from now on use them, with a fresh cache.
    pub fn reload_geo(&self, geo: GeoIp) {
        self.geo.store(Arc::new(geo));
    }

    /// The GeoIP databases in use (the report places addresses with them).
    pub fn geo(&self) -> Arc<GeoIp> {
        self.geo.load_full()
    }

    /// GeoIP lookups and how many came from the cache.
    pub fn geo_lookups(&self) -> (u64, u64) {
        self.lanes.iter().fold((0, 0), |(n, h), l| {
            (
                n + l.geo_lookups.load(Ordering::Relaxed),
                h + l.geo_hits.load(Ordering::Relaxed),
            )
        })
    }

    /// Removes every account that `drop` picks from every per-account
    /// table (the accounts of a partition revoked from this instance);
    /// returns the entries removed.
    pub fn forget_accounts(&self, drop: &dyn Fn(u64) -> bool) -> usize {
        self.state()
            .filter(|t| t.stats().keyed_by == KeyedBy::Account)
            .map(|t| t.forget(drop))
            .sum()
    }

    /// The longest time any table keeps an entry after its last event: how
    /// far back the state of an account reaches.
    pub fn longest_window(&self) -> Millis {
        self.state().map(|t| t.stats().ttl).max().unwrap_or(0)
    }

    /// Events judged, by kind (auth, submission, bounce, unlock).
    pub fn events_by_kind(&self) -> [u64; 4] {
        let mut n = [0; 4];
        for l in &self.lanes {
            for (i, c) in l.events_by_kind.iter().enumerate() {
                n[i] += c.load(Ordering::Relaxed);
            }
        }
        n
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
            .map(|(r, c)| (r.name, r.dry_run, c))
    }

    /// Every state table: the detectors' and the incidents'.
    fn state(&self) -> impl Iterator<Item = &dyn Swept> {
        self.detectors
            .iter()
            .flat_map(|r| r.detector.state())
            .chain(self.profile.as_ref().map(Profile::state))
            .chain(self.policy.state())
    }

    /// The tables a partition's durable state holds: every table keyed by
    /// account (the source stage's tables, keyed by address, are rebuilt
    /// from input).
    pub fn durable_tables(&self) -> Vec<&dyn Swept> {
        self.state()
            .filter(|t| t.stats().keyed_by == KeyedBy::Account)
            .collect()
    }

    /// Every state table with its size and evictions.
    pub fn tables(&self) -> Vec<TableStats> {
        self.state().map(|t| t.stats()).collect()
    }

    /// Accounts tracked: the size of the largest per-account table. (Each
    /// detector keeps its own table; an account with successful logins is in
    /// the travel table, one with recent failures in the burst table, so the
    /// largest is a lower bound of the distinct accounts held.)
    pub fn accounts_tracked(&self) -> usize {
        self.tables()
            .iter()
            .filter(|t| t.keyed_by == KeyedBy::Account)
            .map(|t| t.len)
            .max()
            .unwrap_or(0)
    }
}
