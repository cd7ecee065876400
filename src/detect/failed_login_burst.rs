//! `failed_login_burst`: many failed logins on one account in a short
//! window, from one source or many.
//!
//! The password hash (`pwhash`) tells a guesser from a device: a phone
//! retrying one stale saved password fails with the same hash again and
//! again, a guesser tries many. So the burst counts *distinct* hashes. A
//! burst of distinct passwords followed by a success is the strongest signal
//! there is (the guess worked): lock. A burst without a success is an alert.

use std::net::IpAddr;

use serde_json::Map;

use super::{DetectorConfig, Registration, ev, Context, Detector, Finding, Severity, Strength};
use crate::section::Checks;
use crate::source::event::{AuthResult, Event, Kind};
use crate::source::event::AccountForm;
use crate::state::{KeyedBy, StateConfig, insert_sorted, prune_sorted, Entry, Items, Swept, Table};
use crate::time::{format_rfc3339, human_duration, Millis, SECOND};

pub const NAME: &str = "failed_login_burst";

crate::detector_section! {
    enabled = true;
    /// `[detectors.failed_login_burst]`
    pub struct BurstConfig {
        /// The window, in seconds: fail2ban's `findtime` for its `dovecot`
        /// and `postfix-sasl` jails.
        pub window_secs: u64 = 600,
        /// Failures in the window that make a burst: twice fail2ban's
        /// `maxretry` of 5, since we lock accounts rather than ban addresses
        /// and a lock costs a customer more.
        pub min_failures: usize = 10,
        /// Distinct password hashes among them that make it a guesser, not a
        /// device with a stale password.
        pub min_distinct_passwords: usize = 4,
        /// With no `pwhash` in the events, a burst then a success cannot be
        /// told from a user who finally typed it right: alert (false) or
        /// lock (true).
        pub lock_without_pwhash: bool = false,
    }
}

impl DetectorConfig for BurstConfig {
    fn check(&self, c: &mut Checks) {
        c.at_least("window_secs", self.window_secs, 1);
        c.at_least("min_failures", self.min_failures as u64, 2);
        c.at_least(
            "min_distinct_passwords",
            self.min_distinct_passwords as u64,
            2,
        );
        if self.min_distinct_passwords > self.min_failures {
            c.fail("min_distinct_passwords", "must be at most min_failures");
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failure {
    ts: Millis,
    pwhash: Option<u64>,
    ip: IpAddr,
}

struct Failures {
    items: Items<Failure>,
    /// When the last burst alert was raised, so one burst alerts once.
    alerted: Millis,
    /// When the owner's own login during a burst was last reported.
    owner_alerted: Millis,
}

crate::codec_fields!(Failure { ts, pwhash, ip });
crate::codec_fields!(Failures { items, alerted, owner_alerted });

impl Entry for Failures {
    fn last_seen(&self) -> Millis {
        self.items.last().map_or(Millis::MIN, |f| f.ts)
    }
    fn weight(&self) -> usize {
        self.items.len()
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        prune_sorted(&mut self.items, horizon, |f| f.ts);
        self.items.is_empty()
    }
}

/// What the failures in a window add up to.
struct Burst {
    failures: usize,
    distinct: usize,
    with_hash: usize,
    sources: Vec<IpAddr>,
    first: Millis,
    last: Millis,
}

pub struct FailedLoginBurst {
    cfg: BurstConfig,
    window: Millis,
    table: Table<Failures>,
    cap: usize,
}

impl FailedLoginBurst {
    fn tally(&self, items: &[Failure], until: Millis) -> Option<Burst> {
        let from = until - self.window;
        let inside: Vec<&Failure> = items
            .iter()
            .filter(|f| f.ts >= from && f.ts <= until)
            .collect();
        if inside.len() < self.cfg.min_failures {
            return None;
        }
        let mut hashes: Vec<u64> = inside.iter().filter_map(|f| f.pwhash).collect();
        let with_hash = hashes.len();
        hashes.sort_unstable();
        hashes.dedup();
        let mut sources: Vec<IpAddr> = inside.iter().map(|f| f.ip).collect();
        sources.sort_unstable();
        sources.dedup();
        Some(Burst {
            failures: inside.len(),
            distinct: hashes.len(),
            with_hash,
            sources,
            first: inside[0].ts,
            last: inside[inside.len() - 1].ts,
        })
    }

    /// A guesser when hashes say so; "unknown" when no failure had a hash.
    fn verdict(&self, b: &Burst) -> Verdict {
        if b.with_hash == 0 {
            Verdict::NoHashes
        } else if b.distinct >= self.cfg.min_distinct_passwords {
            Verdict::Guessing
        } else {
            Verdict::StalePassword
        }
    }

    fn evidence(&self, b: &Burst) -> Map<String, serde_json::Value> {
        let mut e = Map::new();
        e.insert("failures".into(), ev(b.failures));
        e.insert("distinct_passwords".into(), ev(b.distinct));
        e.insert("failures_with_pwhash".into(), ev(b.with_hash));
        e.insert("distinct_sources".into(), ev(b.sources.len()));
        let shown: Vec<String> = b.sources.iter().take(10).map(|ip| ip.to_string()).collect();
        e.insert("sources".into(), ev(shown));
        e.insert("first_failure".into(), ev(format_rfc3339(b.first)));
        e.insert("last_failure".into(), ev(format_rfc3339(b.last)));
        e.insert("window_seconds".into(), ev(self.cfg.window_secs));
        e.insert("min_failures".into(), ev(self.cfg.min_failures));
        e.insert(
            "min_distinct_passwords".into(),
            ev(self.cfg.min_distinct_passwords),
        );
        e
    }
}

/// How a success after a burst relates to the guessing.
struct Tie {
    /// From one of the failing addresses.
    source: bool,
    /// From the network of one of them.
    network: bool,
    /// From a network and country the account had used before the burst.
    familiar: bool,
}

impl Tie {
    fn tied(&self) -> bool {
        self.source || self.network || !self.familiar
    }
}

#[derive(PartialEq, Eq)]
enum Verdict {
    Guessing,
    StalePassword,
    NoHashes,
}

impl Registration for FailedLoginBurst {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Account;
    type Config = BurstConfig;

    fn new(cfg: &BurstConfig, state: &StateConfig, _form: &AccountForm) -> Self {
        let window = cfg.window_secs as Millis * SECOND;
        FailedLoginBurst {
            cfg: cfg.clone(),
            window,
            table: Table::sparse("burst_failures", KeyedBy::Account, state.max_accounts, window),
            cap: state.max_entries_per_key.max(cfg.min_failures),
        }
    }
}

impl Detector for FailedLoginBurst {
    fn warm(&self, accounts: &[u64]) {
        self.table.warm_presence(accounts);
    }
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if event.kind != Kind::Auth || ctx.source_trusted() {
            return;
        }
        let Some(ip) = event.src_ip else { return };
        match event.result {
            Some(AuthResult::Failure) => {
                let failure = Failure {
                    ts: event.ts,
                    pwhash: event.pwhash,
                    ip,
                };
                let cap = self.cap;
                let found = self.table.update(
                    event.key,
                    || Failures {
                        items: Items::new(),
                        alerted: Millis::MIN,
                        owner_alerted: Millis::MIN,
                    },
                    |f| {
                        insert_sorted(&mut f.items, failure, cap, |x| x.ts);
                        let b = self.tally(&f.items, event.ts)?;
                        if self.verdict(&b) == Verdict::StalePassword
                            || f.alerted >= event.ts - self.window
                        {
                            return None;
                        }
                        f.alerted = event.ts;
                        Some(b)
                    },
                );
                if let Some(b) = found {
                    let what = if self.verdict(&b) == Verdict::Guessing {
                        format!("with {} different passwords", b.distinct)
                    } else {
                        "(password hashes unknown)".to_string()
                    };
                    out.push(Finding {
                        detector: NAME,
                        account: event.account.clone(),
                        key: event.key,
                        strength: Strength::Alert,
                        severity: Severity::Medium,
                        reason: format!(
                            "{} failed logins in {} {what} from {} address(es); none has succeeded yet.",
                            b.failures,
                            human_duration(b.last - b.first),
                            b.sources.len()
                        ),
                        first_event_ts: b.first,
                        last_event_ts: b.last,
                        anchor_ts: b.first,
                        evidence: self.evidence(&b),
                        source: None,
                        account_since: None,
                    });
                }
            }
            Some(AuthResult::Success) => {
                // Is this success tied to the guessing? From a failing
                // source or its network, or from somewhere the account had
                // never used before the burst began. Otherwise it is the
                // owner, who happened to log in while someone else guessed:
                // an alert, and the failures stay counted for the guesser's
                // own success.
                let network = ctx.network(ip);
                let found = self.table.with(event.key, |f| {
                    let b = self.tally(&f.items, event.ts)?;
                    let verdict = self.verdict(&b);
                    if verdict == Verdict::StalePassword {
                        return None;
                    }
                    let tie = Tie {
                        source: b.sources.contains(&ip),
                        network: network.is_some_and(|n| {
                            b.sources.iter().any(|s| ctx.network(*s) == Some(n))
                        }),
                        familiar: ctx.seen().is_some_and(|s| {
                            s.familiar_before(b.first, ctx.point().as_ref())
                        }),
                    };
                    if tie.tied() {
                        // Settled: the failures before this success are used up.
                        f.items.retain(|x| x.ts > event.ts);
                    } else if f.owner_alerted >= b.first {
                        return None; // this burst already had its owner alert
                    } else {
                        f.owner_alerted = event.ts;
                    }
                    Some((b, verdict, tie))
                });
                let Some(Some((b, verdict, tie))) = found else {
                    return;
                };
                let lock =
                    tie.tied() && (verdict == Verdict::Guessing || self.cfg.lock_without_pwhash);
                let mut evidence = self.evidence(&b);
                let mut success = Map::new();
                success.insert("ts".into(), ev(format_rfc3339(event.ts)));
                success.insert("ip".into(), ev(ip.to_string()));
                if let Some(p) = event.protocol {
                    success.insert("protocol".into(), ev(p.as_str()));
                }
                success.insert("from_a_failing_source".into(), ev(tie.source));
                success.insert("from_a_failing_network".into(), ev(tie.network));
                success.insert("familiar_network".into(), ev(tie.familiar));
                success.insert("tied_to_the_guessing".into(), ev(tie.tied()));
                evidence.insert("success".into(), serde_json::Value::Object(success));
                let passwords = if verdict == Verdict::Guessing {
                    format!("{} different passwords", b.distinct)
                } else {
                    "unknown passwords".to_string()
                };
                let reason = if tie.tied() {
                    format!(
                        "Successful login after {} failed attempts with {passwords} in {}: the password was probably guessed.",
                        b.failures,
                        human_duration(event.ts - b.first)
                    )
                } else {
                    format!(
                        "{} failed attempts with {passwords} in {} from {} address(es): someone is guessing this password. A successful login followed from a network and country the account uses regularly, so it was not locked.",
                        b.failures,
                        human_duration(b.last - b.first),
                        b.sources.len()
                    )
                };
                out.push(Finding {
                    detector: NAME,
                    account: event.account.clone(),
                    key: event.key,
                    strength: if lock { Strength::Lock } else { Strength::Alert },
                    severity: if lock { Severity::Critical } else { Severity::High },
                    reason,
                    first_event_ts: b.first,
                    last_event_ts: event.ts,
                    anchor_ts: b.first,
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

#[cfg(all(test, feature = "demo"))]
mod findings {
    use super::*;
    use crate::demo::sample::auth;
    use crate::detect::testing::{ip, Bench, T0};
    use crate::time::{MINUTE, SECOND};

    const A: &str = "bob@example.net";

    fn guess(i: i64, pwhash: &str) -> crate::demo::sample::Line {
        auth(T0 + i * 20 * SECOND, A, "imap", ip("Lagos", 9), false, Some(pwhash))
    }

    #[test]
    fn the_burst_alerts_then_the_success_from_the_guesser_locks() {
        let b = Bench::new();
        let d = Bench::detector::<FailedLoginBurst>("");
        let mut lines: Vec<_> = (0..12).map(|i| guess(i, &format!("{:x}", 0xdead00 + i))).collect();
        lines.push(auth(T0 + 5 * MINUTE, A, "imap", ip("Lagos", 9), true, Some("c0ffee00")));
        let f = b.observe(&d, &lines);
        let strengths: Vec<Strength> = f.iter().map(|f| f.strength).collect();
        assert_eq!(strengths, [Strength::Alert, Strength::Lock], "{f:?}");
        assert_eq!(f[1].severity, Severity::Critical);
    }

    #[test]
    fn a_phone_retrying_one_stale_password_finds_nothing() {
        let b = Bench::new();
        let d = Bench::detector::<FailedLoginBurst>("");
        let lines: Vec<_> = (0..30).map(|i| guess(i, "5ca1ab1e")).collect();
        assert!(b.observe(&d, &lines).is_empty());
    }
}
