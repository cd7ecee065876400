//! `password_spray`: one source failing on many different accounts in a
//! window (a few common passwords tried against many users).
//!
//! A source is an address, or for IPv6 its /64 (`source_prefix_v6`): one
//! machine owns a whole /64, so fifteen addresses inside it are one sprayer.
//! A window of `window_secs` in which the source failed on `min_accounts`
//! distinct accounts makes it a spraying source from `max_disorder_secs`
//! before that window's first failure until `window_secs` after its last.
//! Every account that logged in successfully from it in that span is locked,
//! unless the account's own profile had used the address's network before
//! the span began (the office NAT's or the carrier's everyday users; a
//! sprayer's address the account never used still locks it). Accounts that
//! only saw failures kept their password: they are not locked.
//!
//! **Order does not matter.** Windows count only failures inside them, on
//! both sides, and what is remembered does not depend on the order in which
//! events were judged (failures are kept per account and per sixteenth of
//! the window as their earliest and latest time; successes at an address
//! with no failures yet are kept for `max_disorder_secs` behind the slowest
//! thread). So a parallel replay, a service whose workers lag one another,
//! and `--threads 1` lock the same accounts; only the counts in the
//! evidence, which describe the moment of the decision, can differ.

use std::net::IpAddr;

use serde_json::Map;

use super::{ev, Context, Detector, DetectorConfig, Finding, Registration, Severity, Strength};
use crate::section::Checks;
use crate::source::event::{network_key, truncate, AccountName, AuthResult, Event, Kind};
use crate::source::event::AccountForm;
use crate::state::{remember, Entry, Items, KeyedBy, RecentLog, StateConfig, Swept, Table, Timed};
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
        /// IPv4 addresses sharing this prefix are one source (32: each
        /// address on its own; a CGNAT shares one address among many).
        pub source_prefix_v4: u8 = 32,
        /// IPv6 addresses sharing this prefix are one source: a /64 is one
        /// subscriber's or one server's (RFC 6177).
        pub source_prefix_v6: u8 = 64,
    }
}

impl DetectorConfig for SprayConfig {
    fn check(&self, c: &mut Checks) {
        c.at_least("window_secs", self.window_secs, 16);
        c.at_least("min_accounts", self.min_accounts as u64, 2);
        c.at_least(
            "max_successes_per_source",
            self.max_successes_per_source as u64,
            1,
        );
        if !(8..=32).contains(&self.source_prefix_v4) {
            c.fail("source_prefix_v4", "must be a prefix length from 8 to 32");
        }
        if !(16..=128).contains(&self.source_prefix_v6) {
            c.fail("source_prefix_v6", "must be a prefix length from 16 to 128");
        }
    }
}

/// The failures of one account from one source within one sixteenth of the
/// window: the earliest and the latest. Exact for counting windows (a window
/// is wider than a slot), and the same whatever the order of arrival.
#[derive(Debug, Clone, Copy)]
struct Failed {
    key: u64,
    first: Millis,
    last: Millis,
}

#[derive(Debug, Clone)]
struct Success {
    ts: Millis,
    account: AccountName,
    key: u64,
    /// Since when the account had used this address's network (its profile).
    familiar_since: Option<Millis>,
    /// Since when the account is known (the split pipeline's hint).
    account_since: Option<Millis>,
    reported: bool,
}

/// When a source was spraying: from `max_disorder_secs` before the first
/// failure of a window that counted `min_accounts` until `window_secs` after
/// that window's end.
#[derive(Debug, Clone, Copy)]
struct Spraying {
    from: Millis,
    until: Millis,
    first_failure: Millis,
    peak: usize,
}

#[derive(Default)]
struct Source {
    failed: Items<Failed>,
    successes: Items<Success>,
    spraying: Items<Spraying>,
}

crate::codec_fields!(Failed { key, first, last });
crate::codec_fields!(Success { ts, account, key, familiar_since, account_since, reported });
crate::codec_fields!(Spraying { from, until, first_failure, peak });
crate::codec_fields!(Source { failed, successes, spraying });

impl Timed for Success {
    fn ts(&self) -> Millis {
        self.ts
    }
}

impl Entry for Source {
    fn last_seen(&self) -> Millis {
        let f = self.failed.iter().map(|x| x.last).max().unwrap_or(Millis::MIN);
        let s = self.successes.iter().map(|x| x.ts).max().unwrap_or(Millis::MIN);
        let p = self.spraying.iter().map(|x| x.until).max().unwrap_or(Millis::MIN);
        f.max(s).max(p)
    }
    fn weight(&self) -> usize {
        self.failed.len() + self.successes.len()
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        self.failed.retain(|x| x.last >= horizon);
        self.successes.retain(|x| x.ts >= horizon);
        self.spraying.retain(|x| x.until >= horizon);
        self.failed.is_empty() && self.successes.is_empty() && self.spraying.is_empty()
    }
}

pub struct PasswordSpray {
    cfg: SprayConfig,
    window: Millis,
    slot: Millis,
    disorder: Millis,
    sources: Table<Source>,
    /// Successes at sources with no failures yet, for `max_disorder_secs`.
    recent: RecentLog<Success>,
    max_failed: usize,
}

impl PasswordSpray {
    fn source(&self, ip: IpAddr) -> (u64, IpAddr) {
        let (v4, v6) = (self.cfg.source_prefix_v4, self.cfg.source_prefix_v6);
        (network_key(ip, v4, v6), truncate(ip, v4, v6))
    }

    fn source_text(&self, ip: IpAddr) -> String {
        let (_, net) = self.source(ip);
        let len = if ip.is_ipv4() {
            self.cfg.source_prefix_v4
        } else {
            self.cfg.source_prefix_v6
        };
        if (ip.is_ipv4() && len == 32) || (ip.is_ipv6() && len == 128) {
            ip.to_string()
        } else {
            format!("{net}/{len}")
        }
    }

    /// Records a failure; returns the spans in which the source is now seen
    /// spraying that were not known before (new or grown).
    fn add_failure(&self, src: &mut Source, key: u64, ts: Millis) -> Vec<Spraying> {
        let slot = ts.div_euclid(self.slot);
        match src
            .failed
            .iter_mut()
            .find(|f| f.key == key && f.first.div_euclid(self.slot) == slot)
        {
            Some(f) => {
                f.first = f.first.min(ts);
                f.last = f.last.max(ts);
            }
            None => {
                if src.failed.len() >= self.max_failed {
                    // The oldest goes.
                    if let Some(i) = (0..src.failed.len()).min_by_key(|&i| src.failed[i].last) {
                        src.failed.swap_remove(i);
                    }
                }
                src.failed.push(Failed {
                    key,
                    first: ts,
                    last: ts,
                });
            }
        }
        // Only windows ending within [ts, ts + window] changed; each is
        // checked at the failures that can end it.
        let mut ends: Vec<Millis> = src
            .failed
            .iter()
            .flat_map(|f| [f.first, f.last])
            .filter(|t| *t >= ts && *t <= ts + self.window)
            .collect();
        ends.sort_unstable();
        ends.dedup();
        let mut found = Vec::new();
        for end in ends {
            let start = end - self.window;
            let mut keys: Vec<u64> = Vec::new();
            let mut first = Millis::MAX;
            for f in src.failed.iter().filter(|f| f.first <= end && f.last >= start) {
                keys.push(f.key);
                first = first.min(f.first.max(start));
            }
            keys.sort_unstable();
            keys.dedup();
            if keys.len() < self.cfg.min_accounts {
                continue;
            }
            let span = Spraying {
                from: first - self.disorder,
                until: end + self.window,
                first_failure: first,
                peak: keys.len(),
            };
            if let Some(grown) = merge(&mut src.spraying, span) {
                found.push(grown);
            }
        }
        found
    }

    /// The span that makes `s` a spray victim, if any: `s` is inside it, the
    /// account had not used the network before it began, and the account
    /// was not already reported for it.
    fn judged(&self, src: &Source, s: &Success) -> Option<Spraying> {
        src.spraying.iter().copied().find(|p| {
            s.ts >= p.from
                && s.ts <= p.until
                && s.familiar_since.is_none_or(|f| f >= p.from)
                && !src
                    .successes
                    .iter()
                    .any(|o| o.key == s.key && o.reported && o.ts >= p.from && o.ts <= p.until)
        })
    }

    fn finding(&self, ip: IpAddr, p: &Spraying, s: &Success, now: Millis) -> Finding {
        let source = self.source_text(ip);
        let mut e = Map::new();
        e.insert("source_ip".into(), ev(source.clone()));
        e.insert("accounts_failed_from_source".into(), ev(p.peak));
        e.insert(
            "first_failure_from_source".into(),
            ev(format_rfc3339(p.first_failure)),
        );
        e.insert("spraying_from".into(), ev(format_rfc3339(p.from)));
        e.insert("spraying_until".into(), ev(format_rfc3339(p.until)));
        e.insert("successful_login".into(), ev(format_rfc3339(s.ts)));
        e.insert(
            "account_used_this_network_since".into(),
            ev(s.familiar_since.map(format_rfc3339)),
        );
        e.insert("window_seconds".into(), ev(self.cfg.window_secs));
        e.insert("min_accounts".into(), ev(self.cfg.min_accounts));
        Finding {
            detector: NAME,
            account: s.account.clone(),
            key: s.key,
            strength: Strength::Lock,
            severity: Severity::High,
            reason: format!(
                "Successful login from {source}, a source that failed to log in to {} different accounts within {} (password spraying), and that this account had not used before.",
                p.peak,
                human_duration(self.window)
            ),
            first_event_ts: p.first_failure.min(s.ts),
            last_event_ts: now.max(s.ts),
            anchor_ts: s.ts,
            evidence: e,
            source: Some(ip),
            account_since: s.account_since,
        }
    }

    /// Reports every remembered success that a new span makes a victim.
    fn sweep_victims(&self, ip: IpAddr, src: &mut Source, now: Millis, out: &mut Vec<Finding>) {
        src.successes.sort_by_key(|s| s.ts);
        for i in 0..src.successes.len() {
            if src.successes[i].reported {
                continue;
            }
            if let Some(p) = self.judged(src, &src.successes[i]) {
                out.push(self.finding(ip, &p, &src.successes[i], now));
                src.successes[i].reported = true;
            }
        }
    }

    fn remember(&self, list: &mut Items<Success>, s: Success) {
        remember(list, s, self.cfg.max_successes_per_source)
    }
}

/// Adds `span` to the spans (merging overlaps); returns the merged span if
/// it covers anything that was not covered before.
fn merge(spans: &mut Items<Spraying>, span: Spraying) -> Option<Spraying> {
    let mut merged = span;
    let mut covered = false;
    spans.retain(|p| {
        if p.from <= merged.until && merged.from <= p.until {
            if p.from <= span.from && p.until >= span.until {
                covered = true;
            }
            merged.from = merged.from.min(p.from);
            merged.until = merged.until.max(p.until);
            merged.first_failure = merged.first_failure.min(p.first_failure);
            merged.peak = merged.peak.max(p.peak);
            false
        } else {
            true
        }
    });
    spans.push(merged);
    (!covered).then_some(merged)
}

impl Registration for PasswordSpray {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Source;
    type Config = SprayConfig;

    fn new(cfg: &SprayConfig, state: &StateConfig, _form: &AccountForm) -> Self {
        let window = cfg.window_secs as Millis * SECOND;
        PasswordSpray {
            cfg: cfg.clone(),
            window,
            slot: (window / 16).max(SECOND),
            disorder: state.max_disorder_secs as Millis * SECOND,
            sources: Table::sparse("spray_sources", KeyedBy::Source, state.max_sources, window),
            // Kept for the allowed disorder only (the sweep's slack).
            recent: RecentLog::new(
                "spray_recent_successes",
                KeyedBy::Source,
                state.max_sources,
                cfg.max_successes_per_source,
                0,
            ),
            // Enough to recognise the source; beyond that only the newest matter.
            max_failed: state.max_entries_per_key.max(cfg.min_accounts * 4),
        }
    }
}

impl Detector for PasswordSpray {
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if event.kind != Kind::Auth || ctx.source_trusted() {
            return;
        }
        let Some(ip) = event.src_ip else { return };
        let (key, _) = self.source(ip);
        let now = event.ts;
        match event.result {
            Some(AuthResult::Failure) => {
                self.sources.update(key, Source::default, |src| {
                        // Successes judged while this source had no
                        // failures (before its first, or another thread ran
                        // ahead): they join it now.
                        if let Some(list) = self.recent.take(key) {
                            for s in list {
                                self.remember(&mut src.successes, s);
                            }
                        }
                        if !self.add_failure(src, event.key, now).is_empty() {
                            self.sweep_victims(ip, src, now, out);
                        }
                });
            }
            Some(AuthResult::Success) => {
                let s = Success {
                    ts: now,
                    account: event.account.clone(),
                    key: event.key,
                    familiar_since: match ctx.seen() {
                        Some(seen) => seen.network,
                        // The source stage: what the account stage knew.
                        None => event.hint.and_then(|h| h.network_since),
                    },
                    account_since: event.hint.and_then(|h| h.account_since),
                    reported: false,
                };
                let kept = self.sources.with(key, |src| {
                    if let Some(p) = self.judged(src, &s) {
                        out.push(self.finding(ip, &p, &s, now));
                        let s = Success {
                            reported: true,
                            ..s.clone()
                        };
                        self.remember(&mut src.successes, s);
                    } else {
                        self.remember(&mut src.successes, s.clone());
                    }
                });
                if kept.is_none() {
                    self.recent.push(key, s);
                }
            }
            None => {}
        }
    }

    fn state(&self) -> Vec<&dyn Swept> {
        vec![&self.sources, &self.recent]
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
