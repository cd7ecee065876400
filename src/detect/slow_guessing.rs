//! `slow_guessing`: a patient guesser: failed logins on one account for
//! hours, too slow for `failed_login_burst`'s ten minutes, from rotating
//! addresses, with many different passwords.
//!
//! Failures form a **run** while they come at most `max_gap_secs` apart (a
//! guesser who pauses longer starts a new run). A run is guessing when it
//! has `min_failures` failures with `min_distinct_passwords` different
//! password hashes, or, for events without `pwhash` (the daemons' own log
//! lines carry none), from `min_distinct_networks` different networks: a
//! phone retrying one stale password all day fails from one or two
//! networks with one hash, and stays quiet.
//!
//! A guessing run alerts once. A successful login during it is tied to
//! the guessing (lock) when it comes from one of the failing networks, or
//! from a network and country the account had not used before the run
//! began; the owner's own login from home meanwhile is an alert that
//! someone is guessing, not a lock (the same rule as
//! `failed_login_burst`).

use serde_json::Map;

use super::{ev, Context, Detector, DetectorConfig, Finding, Registration, Severity, Strength};
use crate::section::Checks;
use crate::source::event::{AccountForm, AuthResult, Event, Kind};
use crate::state::{Entry, Items, KeyedBy, StateConfig, Swept, Table};
use crate::time::{format_rfc3339, human_duration, Millis, SECOND};

pub const NAME: &str = "slow_guessing";

crate::detector_section! {
    enabled = true;
    /// `[detectors.slow_guessing]`
    pub struct SlowConfig {
        /// Failures at most this far apart, in seconds, are one run
        /// (fail2ban's `recidive` jail looks back a day; a run here follows
        /// the guesser for as long as it keeps coming).
        pub max_gap_secs: u64 = 1800,
        /// Failures in a run that make it a guesser (fail2ban's
        /// `recidive` bans after 5 bans, i.e. some 25 failures).
        pub min_failures: u64 = 30,
        /// Different password hashes among them (a device with a stale
        /// password has one).
        pub min_distinct_passwords: u64 = 10,
        /// Without password hashes: different networks they came from.
        pub min_distinct_networks: u64 = 5,
        /// A success tied to a guessing run locks also when the run was
        /// judged by networks, not password hashes.
        pub lock_without_pwhash: bool = true,
    }
}

impl DetectorConfig for SlowConfig {
    fn check(&self, c: &mut Checks) {
        c.at_least("max_gap_secs", self.max_gap_secs, 60);
        c.at_least("min_failures", self.min_failures, 2);
        c.at_least("min_distinct_passwords", self.min_distinct_passwords, 2);
        c.at_least("min_distinct_networks", self.min_distinct_networks, 2);
    }
}

/// Distinct networks remembered per run.
const MAX_NETWORKS: usize = 16;

struct Run {
    first: Millis,
    last: Millis,
    failures: u32,
    with_hash: u32,
    /// Distinct password hashes (low 32 bits), up to the threshold.
    hashes: Items<u32>,
    /// Distinct failing networks, up to [`MAX_NETWORKS`].
    networks: Items<u64>,
    alerted: bool,
    owner_alerted: bool,
}

crate::codec_fields!(Run {
    first,
    last,
    failures,
    with_hash,
    hashes,
    networks,
    alerted,
    owner_alerted
});

impl Run {
    fn starting(ts: Millis) -> Run {
        Run {
            first: ts,
            last: ts,
            failures: 0,
            with_hash: 0,
            hashes: Items::new(),
            networks: Items::new(),
            alerted: false,
            owner_alerted: false,
        }
    }
}

impl Entry for Run {
    fn last_seen(&self) -> Millis {
        self.last
    }
    fn weight(&self) -> usize {
        self.hashes.len() + self.networks.len()
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        self.last < horizon
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Passwords,
    Networks,
    No,
}

pub struct SlowGuessing {
    cfg: SlowConfig,
    gap: Millis,
    table: Table<Run>,
}

impl Registration for SlowGuessing {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Account;
    type Config = SlowConfig;

    fn new(cfg: &SlowConfig, state: &StateConfig, _form: &AccountForm) -> Self {
        let gap = cfg.max_gap_secs as Millis * SECOND;
        SlowGuessing {
            cfg: cfg.clone(),
            gap,
            table: Table::sparse("slow_guessing_runs", KeyedBy::Account, state.max_accounts, gap),
        }
    }
}

impl SlowGuessing {
    fn verdict(&self, r: &Run) -> Verdict {
        let c = &self.cfg;
        if u64::from(r.failures) < c.min_failures {
            Verdict::No
        } else if r.hashes.len() as u64 >= c.min_distinct_passwords {
            Verdict::Passwords
        } else if r.with_hash == 0 && r.networks.len() as u64 >= c.min_distinct_networks {
            Verdict::Networks
        } else {
            Verdict::No
        }
    }

    fn evidence(&self, r: &Run) -> Map<String, serde_json::Value> {
        let mut e = Map::new();
        e.insert("failures".into(), ev(r.failures));
        e.insert("distinct_passwords".into(), ev(r.hashes.len()));
        e.insert("failures_with_pwhash".into(), ev(r.with_hash));
        e.insert("distinct_networks".into(), ev(r.networks.len()));
        e.insert("first_failure".into(), ev(format_rfc3339(r.first)));
        e.insert("last_failure".into(), ev(format_rfc3339(r.last)));
        e.insert("max_gap_seconds".into(), ev(self.cfg.max_gap_secs));
        e.insert("min_failures".into(), ev(self.cfg.min_failures));
        e.insert(
            "min_distinct_passwords".into(),
            ev(self.cfg.min_distinct_passwords),
        );
        e.insert(
            "min_distinct_networks".into(),
            ev(self.cfg.min_distinct_networks),
        );
        e
    }

    fn what(&self, r: &Run, v: Verdict) -> String {
        let nets = if r.networks.len() >= MAX_NETWORKS {
            format!("{MAX_NETWORKS} or more networks")
        } else {
            format!("{} networks", r.networks.len())
        };
        match v {
            Verdict::Passwords => format!(
                "{} failed logins with {} different passwords over {} from {nets}",
                r.failures,
                r.hashes.len(),
                human_duration(r.last - r.first)
            ),
            _ => format!(
                "{} failed logins over {} from {nets}",
                r.failures,
                human_duration(r.last - r.first)
            ),
        }
    }
}

impl Detector for SlowGuessing {
    fn warm(&self, accounts: &[u64]) {
        self.table.warm_presence(accounts);
    }
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if event.kind != Kind::Auth || ctx.source_trusted() {
            return;
        }
        let Some(ip) = event.src_ip else { return };
        let Some(network) = ctx.network(ip) else { return };
        let gap = self.gap;
        match event.result {
            Some(AuthResult::Failure) => {
                let min_distinct = self.cfg.min_distinct_passwords as usize;
                let found = self.table.update(
                    event.key,
                    || Run::starting(event.ts),
                    |r| {
                        if event.ts > r.last + gap {
                            *r = Run::starting(event.ts);
                        }
                        r.first = r.first.min(event.ts);
                        r.last = r.last.max(event.ts);
                        r.failures = r.failures.saturating_add(1);
                        if let Some(h) = event.pwhash {
                            r.with_hash = r.with_hash.saturating_add(1);
                            let h = h as u32;
                            if r.hashes.len() < min_distinct && !r.hashes.contains(&h) {
                                r.hashes.push(h);
                            }
                        }
                        if r.networks.len() < MAX_NETWORKS && !r.networks.contains(&network) {
                            r.networks.push(network);
                        }
                        let v = self.verdict(r);
                        if v == Verdict::No || r.alerted {
                            return None;
                        }
                        r.alerted = true;
                        Some((self.what(r, v), self.evidence(r), r.first, r.last))
                    },
                );
                if let Some((what, evidence, first, last)) = found {
                    out.push(Finding {
                        detector: NAME,
                        account: event.account.clone(),
                        key: event.key,
                        strength: Strength::Alert,
                        severity: Severity::Medium,
                        reason: format!("{what}: someone is guessing this password slowly; none has succeeded yet."),
                        first_event_ts: first,
                        last_event_ts: last,
                        anchor_ts: first,
                        evidence,
                        source: None,
                        account_since: None,
                    });
                }
            }
            Some(AuthResult::Success) => {
                let found = self.table.with(event.key, |r| {
                    if event.ts > r.last + gap {
                        return None;
                    }
                    let v = self.verdict(r);
                    if v == Verdict::No {
                        return None;
                    }
                    let from_failing = r.networks.contains(&network);
                    let familiar = ctx
                        .seen()
                        .is_some_and(|s| s.familiar_before(r.first, ctx.point().as_ref()));
                    let tied = from_failing || !familiar;
                    if !tied {
                        if r.owner_alerted {
                            return None;
                        }
                        r.owner_alerted = true;
                    }
                    let lock = tied && (v == Verdict::Passwords || self.cfg.lock_without_pwhash);
                    let mut evidence = self.evidence(r);
                    let mut s = Map::new();
                    s.insert("ts".into(), ev(format_rfc3339(event.ts)));
                    s.insert("ip".into(), ev(ip.to_string()));
                    s.insert("from_a_failing_network".into(), ev(from_failing));
                    s.insert("familiar_network".into(), ev(familiar));
                    s.insert("tied_to_the_guessing".into(), ev(tied));
                    evidence.insert("success".into(), serde_json::Value::Object(s));
                    let what = self.what(r, v);
                    let first = r.first;
                    if tied {
                        // Settled: the run is used up.
                        r.failures = 0;
                        r.hashes.clear();
                        r.networks.clear();
                        r.alerted = false;
                    }
                    Some((lock, tied, what, evidence, first))
                });
                let Some(Some((lock, tied, what, evidence, first))) = found else {
                    return;
                };
                let reason = if tied {
                    format!("Successful login after {what}: the password was probably guessed.")
                } else {
                    format!("{what}: someone is guessing this password slowly. A successful login followed from a network and country the account uses regularly, so it was not locked.")
                };
                out.push(Finding {
                    detector: NAME,
                    account: event.account.clone(),
                    key: event.key,
                    strength: if lock { Strength::Lock } else { Strength::Alert },
                    severity: if lock { Severity::Critical } else { Severity::High },
                    reason,
                    first_event_ts: first,
                    last_event_ts: event.ts,
                    anchor_ts: first,
                    evidence,
                    source: Some(ip),
                    account_since: None,
                });
            }
            None => {}
        }
    }

    fn state(&self) -> Vec<&dyn Swept> {
        vec![&self.table]
    }
}
