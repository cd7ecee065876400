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

use ipnet::IpNet;
use std::collections::HashSet;

use crate::action::{self, Action, ActionKind, Downgrade};
use crate::detect::{Finding, Strength};
use crate::section::Checks;
use crate::source::event::normalise_account;
use crate::state::StateConfig;
use crate::state::{Entry, KeyedBy, Swept, Table};
use crate::time::{Millis, SECOND};

mod breaker;

pub use breaker::{Breaker, BreakerConfig};

crate::section! {
    /// `[policy]`: how findings become actions.
    pub struct PolicyConfig {
        /// Accounts never locked automatically, only alerted (compared in
        /// their canonical form, case-insensitively).
        pub protected_accounts: Vec<String> = Vec::new(),
        /// CIDRs (office, VPN egress, webmail front ends) that never count
        /// as travel or attack.
        pub trusted_networks: Vec<String> = Vec::new(),
        /// After an action on an account, further findings within this many
        /// seconds (event time) join the same incident instead of emitting
        /// a new action; only an upgrade from alert to lock is emitted.
        pub cooldown_secs: u64 = 6 * 3600,
        /// The lock-storm breaker.
        pub breaker: BreakerConfig = BreakerConfig::default(),
    }
}

impl PolicyConfig {
    pub fn check(&self, c: &mut Checks) {
        for (i, cidr) in self.trusted_networks.iter().enumerate() {
            if parse_network(cidr).is_none() {
                c.fail(
                    &format!("trusted_networks[{i}]"),
                    "not a CIDR such as 192.0.2.0/24 or 2001:db8::/32",
                );
            }
        }
        c.under("breaker", |c| self.breaker.check(c));
    }

    /// `trusted_networks` parsed (those that parse; [`PolicyConfig::check`]
    /// names the others).
    pub fn trusted(&self) -> Vec<IpNet> {
        self.trusted_networks
            .iter()
            .filter_map(|n| parse_network(n))
            .collect()
    }
}

/// A CIDR, or a single address as its own network.
fn parse_network(text: &str) -> Option<IpNet> {
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .ok()?;
    Some(net.trunc())
}

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
            incidents: Table::new("incidents", KeyedBy::Account, state.max_accounts, cooldown),
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
