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
use crate::source::event::{canonical_account, AccountForm};
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
        /// How long the policy servers refuse a locked account, in seconds
        /// after the lock (0: until an `unlock` event lifts it). Only the
        /// refusal expires; the lock action stands.
        pub lock_ttl_secs: u64 = 0,
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
        account: crate::source::event::AccountName,
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
    /// Earliest and latest event time of all its findings (the latest of
    /// the account's own findings only: see [`Judged::third_party`]).
    first: Millis,
    last: Millis,
    /// The strongest action it emitted: [`ALERT`], [`HELD`] or [`LOCK`].
    level: u8,
    /// Its findings in event-time order (at most `STORY_MAX`).
    story: Vec<Chapter>,
}

/// What an incident has emitted: an alert; a lock that became an alert
/// (dry run, protected, breaker); a lock.
const ALERT: u8 = 0;
const HELD: u8 = 1;
const LOCK: u8 = 2;

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

mod durable {
    //! The incidents' and held locks' binary form (durable state).
    use super::{Chapter, Held, Incident};
    use crate::detect::Severity;
    use crate::state::codec::{detector_name, Codec, CodecError, Reader};

    impl Codec for Chapter {
        fn put(&self, w: &mut Vec<u8>) {
            self.ts.put(w);
            self.detector.to_string().put(w);
            self.reason.put(w);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            Ok(Chapter {
                ts: i64::get(r)?,
                detector: detector_name(r)?,
                reason: String::get(r)?,
            })
        }
    }

    crate::codec_fields!(Incident {
        start,
        first,
        last,
        level,
        story
    });

    fn severity(s: crate::detect::Severity) -> u8 {
        s as u8
    }

    impl Codec for Held {
        fn put(&self, w: &mut Vec<u8>) {
            self.detector.to_string().put(w);
            self.index.put(w);
            self.network.put(w);
            self.start.put(w);
            self.first.put(w);
            self.last.put(w);
            severity(self.severity).put(w);
            self.reason.put(w);
            self.dry_run.put(w);
            serde_json::Value::Object(self.evidence.clone())
                .to_string()
                .put(w);
            self.released.put(w);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            Ok(Held {
                detector: detector_name(r)?,
                index: usize::get(r)?,
                network: u64::get(r)?,
                start: i64::get(r)?,
                first: i64::get(r)?,
                last: i64::get(r)?,
                severity: match u8::get(r)? {
                    0 => Severity::Low,
                    1 => Severity::Medium,
                    2 => Severity::High,
                    3 => Severity::Critical,
                    _ => return Err(CodecError::Invalid("severity")),
                },
                reason: String::get(r)?,
                dry_run: bool::get(r)?,
                evidence: match serde_json::from_str(&String::get(r)?) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => return Err(CodecError::Invalid("evidence")),
                },
                released: bool::get(r)?,
            })
        }
    }
}

/// A lock the breaker turned into an alert, waiting for the breaker to
/// close: it is sent then if the account is still used from the network
/// the finding came from.
struct Held {
    detector: &'static str,
    index: usize,
    network: u64,
    start: Millis,
    first: Millis,
    last: Millis,
    severity: crate::detect::Severity,
    reason: String,
    dry_run: bool,
    evidence: serde_json::Map<String, serde_json::Value>,
    released: bool,
}

impl Entry for Held {
    fn last_seen(&self) -> Millis {
        if self.released {
            Millis::MIN
        } else {
            self.last
        }
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        self.released || self.last < horizon
    }
}

/// What the policy needs to know about a finding besides the finding.
#[derive(Debug, Clone, Copy)]
pub struct Judged {
    /// The detector's place in the registry (its breaker side).
    pub detector: usize,
    pub dry_run: bool,
    /// Its findings are about third parties' mail (bounces): they join an
    /// open incident but never keep it open.
    pub third_party: bool,
    /// The account had logged in long enough before the evidence for its
    /// lock to count on the breaker.
    pub established: bool,
    /// The network the finding came from (its source), as the profile keys it.
    pub network: u64,
    /// The engine's watermark: the breaker's clock.
    pub now: Millis,
    /// The action's `timestamp` (event time in `replay`, the wall clock in `run`).
    pub decided_at: Millis,
}

pub struct Policy {
    incidents: Table<Incident>,
    held: Table<Held>,
    protected: HashSet<crate::source::event::AccountName>,
    cooldown: Millis,
    pub breaker: Breaker,
}

impl Policy {
    /// `detectors`: the names of the detectors in registry order (one
    /// breaker side each).
    pub fn new(
        cfg: &PolicyConfig,
        state: &StateConfig,
        form: &AccountForm,
        detectors: &[&'static str],
    ) -> Self {
        let cooldown = cfg.cooldown_secs as Millis * SECOND;
        Policy {
            incidents: Table::new("incidents", KeyedBy::Account, state.max_accounts, cooldown),
            held: Table::sparse("held_locks", KeyedBy::Account, state.max_accounts, cooldown),
            protected: cfg
                .protected_accounts
                .iter()
                .filter_map(|a| canonical_account(a, form).ok())
                .collect(),
            cooldown,
            breaker: Breaker::new(&cfg.breaker, detectors),
        }
    }

    /// Decides what a finding becomes.
    pub fn decide(&self, f: Finding, j: Judged) -> Decision {
        let mut kind = match f.strength {
            Strength::Lock => ActionKind::Lock,
            Strength::Alert => ActionKind::Alert,
        };
        let mut downgraded_by = None;
        if kind == ActionKind::Lock && j.dry_run {
            kind = ActionKind::Alert;
            downgraded_by = Some(Downgrade::DryRun);
        }
        if kind == ActionKind::Lock && self.protected.contains(&f.account) {
            kind = ActionKind::Alert;
            downgraded_by = Some(Downgrade::Protected);
        }
        let level = match (kind, f.strength) {
            (ActionKind::Lock, _) => LOCK,
            (_, Strength::Lock) => HELD,
            _ => ALERT,
        };
        let cooldown = self.cooldown;
        // Decide under the incident's lock, so two findings on one account
        // racing in from two threads cannot both emit.
        let outcome = self.incidents.update(
            f.key,
            || Incident {
                start: f.anchor_ts,
                first: f.first_event_ts,
                last: Millis::MIN,
                level: ALERT,
                story: Vec::new(),
            },
            |inc| {
                let fresh =
                    inc.last == Millis::MIN || f.last_event_ts > inc.last.saturating_add(cooldown);
                let emit = if fresh {
                    inc.start = f.anchor_ts;
                    inc.first = f.first_event_ts;
                    inc.last = f.last_event_ts;
                    inc.level = level;
                    inc.story.clear();
                    true
                } else if level > inc.level {
                    inc.level = level;
                    true
                } else {
                    false
                };
                inc.first = inc.first.min(f.first_event_ts);
                if !j.third_party {
                    // Forged bounces must not hold an incident open.
                    inc.last = inc.last.max(f.last_event_ts);
                }
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
                    inc.start,
                    inc.first,
                    inc.last.max(f.last_event_ts),
                    story,
                )
            },
        );
        let (emit, start, first, last, story) = outcome;
        if !emit {
            return Decision::Enrich {
                incident: action::stable_id(&[&f.account, &start.to_string()]),
                account: f.account,
                detector: f.detector,
                reason: f.reason,
            };
        }
        let mut reason = f.reason;
        let mut evidence = f.evidence;
        if kind == ActionKind::Lock
            && self
                .breaker
                .record_lock(j.detector, j.now, j.network, j.established)
        {
            kind = ActionKind::Alert;
            downgraded_by = Some(Downgrade::Breaker);
            // The incident stays open to a real lock once the breaker
            // closes, and the lock is held for that moment.
            self.incidents.with(f.key, |inc| inc.level = HELD);
            let held = Held {
                detector: f.detector,
                index: j.detector,
                network: j.network,
                start,
                first,
                last,
                severity: f.severity,
                reason: reason.clone(),
                dry_run: j.dry_run,
                evidence: evidence.clone(),
                released: false,
            };
            self.held.update(f.key, || held, |_| {});
        }
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
                " (Not locked yet: this detector's automatic locking is suspended by the lock-storm breaker; it locks when the breaker closes if the account is still used from this network.)",
            );
        }
        Decision::Emit(Box::new(action::build(
            &f.account,
            f.detector,
            kind,
            f.severity,
            reason,
            j.dry_run,
            downgraded_by,
            start,
            first,
            last,
            j.decided_at,
            evidence,
        )))
    }

    /// A lock the breaker held back, sent now: its breaker side has closed
    /// and `key` (`account`) is being used again at `ts` from `network`,
    /// where the finding came from.
    pub fn release(
        &self,
        key: u64,
        account: &str,
        network: u64,
        ts: Millis,
        now: Millis,
        decided_at: Millis,
    ) -> Option<Decision> {
        // The breaker's flags are refreshed by sweeps and locks; a held
        // lock asks for the current answer.
        self.breaker.refresh(now);
        let h = self.held.with(key, |h| {
            if h.released || h.network != network || self.breaker.is_open_for(h.index) {
                return None;
            }
            h.released = true;
            Some((
                h.detector,
                h.index,
                h.start,
                h.first,
                h.severity,
                std::mem::take(&mut h.reason),
                h.dry_run,
                std::mem::take(&mut h.evidence),
            ))
        })??;
        let (detector, index, start, first, severity, reason, dry_run, mut evidence) = h;
        self.incidents.with(key, |inc| {
            inc.level = LOCK;
            inc.last = inc.last.max(ts);
        });
        self.breaker.record_lock(index, now, network, true);
        evidence.insert(
            "held_by_breaker_until".into(),
            serde_json::Value::String(crate::time::format_rfc3339(ts)),
        );
        Some(Decision::Emit(Box::new(action::build(
            account,
            detector,
            ActionKind::Lock,
            severity,
            format!("{reason} Locked now: the lock-storm breaker has closed and the account is still being used from the same network."),
            dry_run,
            None,
            start,
            first,
            ts,
            decided_at,
            evidence,
        ))))
    }

    /// Ends `key`'s incident and held lock: the provider unlocked `account`
    /// at `ts` (an `unlock` event). Gives the `account.unlock` action and,
    /// when there was an incident, its first event (what the account did
    /// since then is forgotten too, see [`crate::engine::Engine`]).
    pub fn unlock(
        &self,
        key: u64,
        account: &str,
        ts: Millis,
        decided_at: Millis,
        why: Option<&str>,
    ) -> (Action, Option<Millis>) {
        let incident = self.incidents.remove(key);
        self.held.remove(key);
        let mut evidence = serde_json::Map::new();
        evidence.insert(
            "unlock_reason".into(),
            why.map_or(serde_json::Value::Null, |w| w.into()),
        );
        let (start, first) = match &incident {
            Some(inc) => {
                let level = match inc.level {
                    LOCK => "lock",
                    HELD => "lock_held",
                    _ => "alert",
                };
                evidence.insert("ended_incident_level".into(), level.into());
                let mut detectors: Vec<&str> = inc.story.iter().map(|c| c.detector).collect();
                detectors.dedup();
                evidence.insert("ended_incident_detectors".into(), detectors.into());
                (inc.start, inc.first.min(ts))
            }
            None => (ts, ts),
        };
        let reason = match why {
            Some(w) if !w.trim().is_empty() => format!(
                "Unlocked by the provider ({}): credwatch no longer refuses this account's logins and messages, and judges it afresh.",
                w.trim()
            ),
            _ => "Unlocked by the provider: credwatch no longer refuses this account's logins and messages, and judges it afresh.".to_string(),
        };
        let mut a = action::build(
            account,
            "unlock",
            ActionKind::Unlock,
            crate::detect::Severity::Low,
            reason,
            false,
            None,
            start,
            first,
            ts,
            decided_at,
            evidence,
        );
        if incident.is_none() {
            // No incident known here (another instance's, or one that
            // expired): the unlock names none.
            a.data.incident = String::new();
        }
        // One id per unlock event, so that a second unlock of the same
        // incident is not deduplicated away.
        a.id = action::stable_id(&[account, "unlock", &ts.to_string()]);
        (a, incident.map(|i| i.first))
    }

    /// Brings the held-lock table's presence bits of `accounts` into the
    /// processor's cache (see `Engine::warm`).
    pub fn warm(&self, accounts: &[u64]) {
        self.held.warm_presence(accounts);
    }

    /// True when a lock of `key` is held by the breaker (cheap: a bitmap
    /// answers for almost every account).
    pub fn has_held(&self, key: u64) -> bool {
        self.held.with(key, |h| !h.released).unwrap_or(false)
    }

    /// The incident and held-lock tables (swept by the engine with the
    /// detectors' tables).
    pub fn state(&self) -> [&dyn Swept; 2] {
        [&self.incidents, &self.held]
    }
}
