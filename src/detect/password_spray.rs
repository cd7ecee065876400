//! `password_spray`: one source address failing on many different accounts
//! in a window (a few common passwords tried against many users).
//!
//! Each source that has failed remembers which accounts it failed on and
//! which accounts logged in successfully from it since. Once it has failed on
//! `min_accounts` distinct accounts it is a spraying source, and every
//! account that logged in successfully from it within the window (before or
//! after it was recognised) is locked. The accounts that only saw failures
//! kept their password: they are not locked.
//!
//! Limit: a success judged before the address's *first* failure is not
//! remembered (with several threads or partitions, "before" is the order in
//! which they were judged).

use std::net::IpAddr;

use serde_json::Map;

use super::{DetectorConfig, Registration, ev, Context, Detector, Finding, Severity, Strength};
use crate::section::Checks;
use crate::source::event::{AuthResult, Event, Kind};
use crate::state::{KeyedBy, StateConfig, prune_sorted, Entry, Items, Swept, Table};
use crate::time::{format_rfc3339, human_duration, Millis, SECOND};

pub const NAME: &str = "password_spray";

crate::detector_section! {
    enabled = true;
    /// `[detectors.password_spray]`
    pub struct SprayConfig {
        /// The window, in seconds.
        pub window_secs: u64 = 3600,
        /// Distinct accounts one source must fail on to be a spraying
        /// source: Okta's password-spray rule (≥ 15 users from one address).
        pub min_accounts: usize = 15,
        /// Successful logins remembered per source.
        pub max_successes_per_source: usize = 64,
    }
}

impl DetectorConfig for SprayConfig {
    fn check(&self, c: &mut Checks) {
        c.at_least("window_secs", self.window_secs, 1);
        c.at_least("min_accounts", self.min_accounts as u64, 2);
        c.at_least(
            "max_successes_per_source",
            self.max_successes_per_source as u64,
            1,
        );
    }
}

struct Success {
    ts: Millis,
    account: Box<str>,
    key: u64,
    reported: bool,
}

struct Source {
    /// (last failure time, account key), one per account, sorted by time.
    failed: Items<(Millis, u64)>,
    successes: Items<Success>,
    first_failure: Millis,
    /// When this source was recognised as spraying, if it was.
    recognised: Option<Millis>,
}

impl Entry for Source {
    fn last_seen(&self) -> Millis {
        let f = self.failed.last().map_or(Millis::MIN, |x| x.0);
        let s = self.successes.last().map_or(Millis::MIN, |x| x.ts);
        f.max(s)
    }
    fn weight(&self) -> usize {
        self.failed.len() + self.successes.len()
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        prune_sorted(&mut self.failed, horizon, |x| x.0);
        prune_sorted(&mut self.successes, horizon, |x| x.ts);
        if self.recognised.is_some_and(|r| r < horizon) {
            self.recognised = None;
        }
        if let Some(f) = self.failed.first() {
            // The oldest failure still remembered (approximate: one per account).
            self.first_failure = self.first_failure.max(horizon).min(f.0);
        }
        self.failed.is_empty() && self.successes.is_empty()
    }
}

pub struct PasswordSpray {
    cfg: SprayConfig,
    window: Millis,
    sources: Table<Source>,
    max_failed: usize,
}

impl PasswordSpray {
    fn finding(
        &self,
        ip: IpAddr,
        src: &Source,
        s: &Success,
        failed_accounts: usize,
        now: Millis,
    ) -> Finding {
        let mut e = Map::new();
        e.insert("source_ip".into(), ev(ip.to_string()));
        e.insert("accounts_failed_from_source".into(), ev(failed_accounts));
        e.insert(
            "first_failure_from_source".into(),
            ev(format_rfc3339(src.first_failure)),
        );
        e.insert(
            "source_recognised".into(),
            ev(src.recognised.map(format_rfc3339)),
        );
        e.insert("successful_login".into(), ev(format_rfc3339(s.ts)));
        e.insert("window_seconds".into(), ev(self.cfg.window_secs));
        e.insert("min_accounts".into(), ev(self.cfg.min_accounts));
        Finding {
            detector: NAME,
            account: s.account.clone(),
            key: s.key,
            strength: Strength::Lock,
            severity: Severity::High,
            reason: format!(
                "Successful login from {ip}, an address that failed to log in to {failed_accounts} different accounts within {} (password spraying).",
                human_duration(self.window)
            ),
            first_event_ts: src.first_failure.min(s.ts),
            last_event_ts: now.max(s.ts),
            anchor_ts: s.ts,
            evidence: e,
        }
    }
}

fn source_key(ip: IpAddr) -> u64 {
    crate::source::event::address_key(ip)
}

impl Registration for PasswordSpray {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Source;
    type Config = SprayConfig;

    fn new(cfg: &SprayConfig, state: &StateConfig) -> Self {
        let window = cfg.window_secs as Millis * SECOND;
        PasswordSpray {
            cfg: cfg.clone(),
            window,
            sources: Table::sparse("spray_sources", KeyedBy::Source, state.max_sources, window),
            // Enough to recognise the source; beyond that only the newest matter.
            max_failed: state.max_entries_per_key.max(cfg.min_accounts * 2),
        }
    }
}

impl Detector for PasswordSpray {
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if event.kind != Kind::Auth || ctx.source_trusted() {
            return;
        }
        let Some(ip) = event.src_ip else { return };
        let now = event.ts;
        let from = now - self.window;
        match event.result {
            Some(AuthResult::Failure) => {
                let max_failed = self.max_failed;
                self.sources.update(
                    source_key(ip),
                    || Source {
                        failed: Items::new(),
                        successes: Items::new(),
                        first_failure: now,
                        recognised: None,
                    },
                    |src| {
                        src.failed.retain(|(_, k)| *k != event.key);
                        crate::state::insert_sorted(
                            &mut src.failed,
                            (now, event.key),
                            max_failed,
                            |x| x.0,
                        );
                        src.first_failure = src.first_failure.min(now);
                        let failed = src.failed.iter().filter(|(t, _)| *t >= from).count();
                        if failed < self.cfg.min_accounts {
                            return;
                        }
                        if src.recognised.is_none_or(|r| r < from) {
                            src.recognised = Some(now);
                        }
                        // Everyone who got in from here within the window.
                        let mut hits = Vec::new();
                        for (i, s) in src.successes.iter().enumerate() {
                            if !s.reported && s.ts >= from {
                                hits.push(i);
                            }
                        }
                        for i in hits {
                            out.push(self.finding(ip, src, &src.successes[i], failed, now));
                            src.successes[i].reported = true;
                        }
                    },
                );
            }
            Some(AuthResult::Success) => {
                // Successful logins are remembered at addresses that have
                // failed within the window (a spray is often recognised only
                // after some of its guesses worked). Remembering every
                // success of every address would cost about 80 bytes per
                // account (BENCHMARKS.md) for the rare success that comes
                // before the address's first failure.
                let max = self.cfg.max_successes_per_source;
                self.sources.with(source_key(ip), |src| {
                    let failed = src.failed.iter().filter(|(t, _)| *t >= from).count();
                    let spraying = src.recognised.is_some_and(|r| r >= from) && failed >= 1;
                    let at = match src.successes.iter().position(|x| x.key == event.key) {
                        // The same account again from here: one entry, newest time.
                        Some(i) => {
                            let mut s = src.successes.remove(i);
                            s.ts = s.ts.max(now);
                            s
                        }
                        None => Success {
                            ts: now,
                            account: event.account.clone(),
                            key: event.key,
                            reported: false,
                        },
                    };
                    let mut s = at;
                    if spraying && !s.reported {
                        out.push(self.finding(ip, src, &s, failed.max(self.cfg.min_accounts), now));
                        s.reported = true;
                    }
                    if src.successes.len() >= max {
                        src.successes.remove(0);
                    }
                    let pos = src.successes.partition_point(|x| x.ts <= s.ts);
                    src.successes.insert(pos, s);
                });
            }
            None => {}
        }
    }

    fn state(&self) -> Vec<&dyn Swept> {
        vec![&self.sources]
    }
}

#[cfg(all(test, feature = "demo"))]
mod findings {
    use super::*;
    use crate::demo::sample::auth;
    use crate::detect::testing::{ip, Bench, T0};
    use crate::time::{MINUTE, SECOND};

    #[test]
    fn a_success_from_a_spraying_address_locks_that_account_only() {
        let b = Bench::new();
        let d = Bench::detector::<PasswordSpray>("");
        let from = ip("Moscow", 3);
        let mut lines: Vec<_> = (0..15)
            .map(|i| {
                let who = format!("user{i}@example.net");
                auth(T0 + i * SECOND, &who, "imap", from, false, Some("5b4a7"))
            })
            .collect();
        lines.push(auth(T0 + MINUTE, "victim@example.net", "imap", from, true, None));
        let f = b.observe(&d, &lines);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(&*f[0].account, "victim@example.net");
        assert_eq!(f[0].strength, Strength::Lock);
        assert_eq!(f[0].evidence["accounts_failed_from_source"], 15);
    }

    #[test]
    fn fourteen_accounts_are_not_a_spray() {
        let b = Bench::new();
        let d = Bench::detector::<PasswordSpray>("");
        let from = ip("Moscow", 3);
        let mut lines: Vec<_> = (0..14)
            .map(|i| {
                let who = format!("user{i}@example.net");
                auth(T0 + i * SECOND, &who, "imap", from, false, None)
            })
            .collect();
        lines.push(auth(T0 + MINUTE, "victim@example.net", "imap", from, true, None));
        assert!(b.observe(&d, &lines).is_empty());
    }
}
