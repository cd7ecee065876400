//! `credential_stuffing`: a leaked list of passwords tried against the
//! platform from many addresses (residential proxies), each trying an
//! account or three once. No address sprays and no account sees a burst;
//! what gives it away is that the failures come from networks the accounts
//! have never used (**cold** failures), and that they add up per network
//! (its prefix, `/24` or `/48` as `[profile]` keys them, and its autonomous
//! system) and over the platform.
//!
//! A **network wave**: `min_network_failures` cold failures on
//! `min_network_accounts` accounts from one network in the window, of which
//! at most `max_success_ratio` succeeded (a hotel or an office with new
//! users succeeds far more often than a list does). A **platform wave**:
//! `min_platform_failures` cold failures in the window, and `platform_factor`
//! times the usual rate (an hourly average that follows the platform).
//!
//! An account's first successful login from a network (cold) locks when
//! that network is in a wave, or when the platform is and its prefix
//! failed on another account in the window: the account fell to the list.
//! Only accounts with an established profile (`learning_days`) count, on
//! both sides: a new account's first logins, and every login in the first
//! week after a start without durable state, come from networks the
//! account has never used. Trusted networks (`policy.trusted_networks`:
//! the platform's own front ends) are not counted. The owner's logins from networks they use are
//! never cold, so their own typos and stale phones count for nothing.
//!
//! The counts are this instance's: with several instances each sees its
//! share of the platform (its partitions), and the thresholds apply to it.
//! They are counted in windows of event time, so the order in which threads
//! judged other accounts' events changes them only for events less than
//! `state.max_disorder_secs` apart; a restart starts them afresh (they are
//! not in the durable checkpoints: an hour is rebuilt within the hour).

use std::sync::Mutex;

use serde_json::Map;

use super::{ev, Context, Detector, DetectorConfig, Finding, Registration, Severity, Strength};
use crate::section::Checks;
use crate::source::event::{truncate, AccountForm, AuthResult, Event, Kind};
use crate::state::{Entry, Items, KeyedBy, StateConfig, Swept, Table};
use crate::time::{format_rfc3339, Millis, SECOND};

pub const NAME: &str = "credential_stuffing";

crate::detector_section! {
    enabled = true;
    /// `[detectors.credential_stuffing]`
    pub struct StuffingConfig {
        /// The window, in seconds (Elastic's and Sentinel's
        /// credential-stuffing rules count over an hour).
        pub window_secs: u64 = 3600,
        /// Cold failures from one network that make a wave.
        pub min_network_failures: u64 = 20,
        /// Distinct accounts they must be on.
        pub min_network_accounts: u64 = 10,
        /// A network whose cold logins succeed more often than this is not
        /// stuffing (a list succeeds for about 0.1 to 2 % of its tries).
        pub max_success_ratio: f64 = 0.2,
        /// Cold failures across the platform in the window that make a
        /// platform wave (with `platform_factor`).
        pub min_platform_failures: u64 = 200,
        /// A platform wave is also this many times the usual hourly rate.
        pub platform_factor: f64 = 5.0,
        /// Only accounts whose profile is this many days old (with logins
        /// on `min_active_days` days) count: a new account's first logins,
        /// and every login after a start without durable state, come from
        /// networks it has never used, and must not make a wave or fall
        /// to one.
        pub learning_days: u64 = 7,
        /// Days with a successful login an account needs to count.
        pub min_active_days: u64 = 3,
    }
}

impl DetectorConfig for StuffingConfig {
    fn check(&self, c: &mut Checks) {
        c.at_least("window_secs", self.window_secs, 60);
        c.at_least("min_network_failures", self.min_network_failures, 2);
        c.at_least("min_network_accounts", self.min_network_accounts, 2);
        if !(0.0..=1.0).contains(&self.max_success_ratio) {
            c.fail("max_success_ratio", "must be between 0 and 1");
        }
        if self.platform_factor < 1.0 {
            c.fail("platform_factor", "must be at least 1");
        }
    }
}

/// Accounts remembered per network and window.
const MAX_ACCOUNTS: usize = 64;

/// One network's cold logins in one window of event time.
#[derive(Debug, Clone, Default)]
struct Slot {
    window: i64,
    failures: u32,
    successes: u32,
    /// Distinct accounts (low 32 bits of their keys), up to [`MAX_ACCOUNTS`].
    accounts: Items<u32>,
}

/// A network's current and previous window.
struct Cold {
    last: Millis,
    slots: [Slot; 2],
}

crate::codec_fields!(Slot {
    window,
    failures,
    successes,
    accounts
});

impl crate::state::codec::Codec for Cold {
    fn put(&self, w: &mut Vec<u8>) {
        self.last.put(w);
        self.slots[0].put(w);
        self.slots[1].put(w);
    }
    fn get(r: &mut crate::state::codec::Reader<'_>) -> Result<Self, crate::state::codec::CodecError> {
        Ok(Cold {
            last: Millis::get(r)?,
            slots: [Slot::get(r)?, Slot::get(r)?],
        })
    }
}

impl Entry for Cold {
    fn last_seen(&self) -> Millis {
        self.last
    }
    fn weight(&self) -> usize {
        self.slots.iter().map(|s| s.accounts.len()).sum()
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        self.last < horizon
    }
}

impl Cold {
    fn slot(&mut self, window: i64) -> &mut Slot {
        let i = (window & 1) as usize;
        if self.slots[i].window != window {
            self.slots[i] = Slot {
                window,
                ..Slot::default()
            };
        }
        &mut self.slots[i]
    }

    /// (failures, distinct accounts, successes) in `window` and the one before.
    fn tally(&self, window: i64) -> (u64, usize, u64) {
        let mut accounts: Vec<u32> = Vec::new();
        let (mut f, mut s) = (0, 0);
        for slot in self.slots.iter().filter(|x| x.window == window || x.window == window - 1) {
            f += u64::from(slot.failures);
            s += u64::from(slot.successes);
            accounts.extend(slot.accounts.iter().copied());
        }
        accounts.sort_unstable();
        accounts.dedup();
        (f, accounts.len(), s)
    }
}

/// The platform's cold failures per window, and its usual rate.
#[derive(Default)]
struct Platform {
    window: i64,
    current: u64,
    previous: u64,
    /// Cold failures per window, averaged over about a day of windows.
    usual: f64,
}

pub struct CredentialStuffing {
    cfg: StuffingConfig,
    window: Millis,
    table: Table<Cold>,
    platform: Mutex<Platform>,
}

impl Registration for CredentialStuffing {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Account;
    type Config = StuffingConfig;

    fn new(cfg: &StuffingConfig, state: &StateConfig, _form: &AccountForm) -> Self {
        let window = cfg.window_secs as Millis * SECOND;
        CredentialStuffing {
            cfg: cfg.clone(),
            window,
            // Keyed by network, not account: swept by time, never
            // checkpointed or cleared by an unlock.
            table: Table::sparse("stuffing_networks", KeyedBy::Source, state.max_accounts, 2 * window),
            platform: Mutex::new(Platform::default()),
        }
    }
}

/// The key of an autonomous system in the networks' table (prefix keys
/// are keyed hashes; these have the top bit set and the number below).
fn asn_key(asn: u32) -> u64 {
    (1 << 63) | u64::from(asn)
}

impl CredentialStuffing {
    fn count(&self, key: u64, ts: Millis, account: u64, failure: bool) {
        let window = ts.div_euclid(self.window);
        self.table.update(
            key,
            || Cold {
                last: ts,
                slots: [Slot::default(), Slot::default()],
            },
            |c| {
                c.last = c.last.max(ts);
                let s = c.slot(window);
                if failure {
                    s.failures = s.failures.saturating_add(1);
                    let a = account as u32;
                    if s.accounts.len() < MAX_ACCOUNTS && !s.accounts.contains(&a) {
                        s.accounts.push(a);
                    }
                } else {
                    s.successes = s.successes.saturating_add(1);
                }
            },
        );
    }

    fn platform_failure(&self, window: i64) {
        let mut p = self.platform.lock().unwrap_or_else(|e| e.into_inner());
        if window > p.window {
            // Windows passed: the usual rate follows (about a day of them).
            let passed = window - p.window;
            let w = 1.0 / 24.0;
            let mut last = p.current as f64;
            for _ in 0..passed.min(48) {
                p.usual = p.usual * (1.0 - w) + last * w;
                last = 0.0;
            }
            p.previous = if passed == 1 { p.current } else { 0 };
            p.current = 0;
            p.window = window;
        }
        if window == p.window {
            p.current += 1;
        } else if window == p.window - 1 {
            p.previous += 1;
        }
    }

    /// (cold failures in the window, the usual rate, a wave?)
    fn platform_wave(&self, window: i64) -> (u64, f64, bool) {
        let p = self.platform.lock().unwrap_or_else(|e| e.into_inner());
        let n = match window - p.window {
            0 => p.current + p.previous,
            1 => p.current,
            _ => 0,
        };
        let wave = n >= self.cfg.min_platform_failures
            && n as f64 >= self.cfg.platform_factor * p.usual.max(1.0);
        (n, p.usual, wave)
    }

    fn network_wave(&self, tally: (u64, usize, u64)) -> bool {
        let (f, accounts, s) = tally;
        f >= self.cfg.min_network_failures
            && accounts as u64 >= self.cfg.min_network_accounts
            && (s as f64) <= self.cfg.max_success_ratio * (f + s) as f64
    }
}

impl Detector for CredentialStuffing {
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if event.kind != Kind::Auth || ctx.source_trusted() {
            return;
        }
        let (Some(ip), Some(result)) = (event.src_ip, event.result) else {
            return;
        };
        let Some(prefix) = ctx.network(ip) else { return };
        // Only established accounts count (see `learning_days`).
        let (learning, days) = (self.cfg.learning_days, self.cfg.min_active_days);
        let established = ctx
            .habits(|h| h.established(event.ts, learning, days))
            .unwrap_or(false);
        if !established {
            return;
        }
        // Cold: the account has never logged in from this network.
        let seen = ctx.seen().unwrap_or_default();
        if seen.network.is_some_and(|t| t < event.ts) || seen.asn.is_some_and(|t| t < event.ts) {
            return;
        }
        let asn = ctx.point().and_then(|p| p.asn());
        let window = event.ts.div_euclid(self.window);
        let failure = result == AuthResult::Failure;
        if failure {
            self.count(prefix, event.ts, event.key, true);
            if let Some(a) = asn {
                self.count(asn_key(a), event.ts, event.key, true);
            }
            self.platform_failure(window);
            return;
        }
        // A cold success: did the account fall to a wave?
        let tally = |key: u64| self.table.with(key, |c| c.tally(window)).unwrap_or_default();
        let by_prefix = tally(prefix);
        let by_asn = asn.map(|a| tally(asn_key(a))).unwrap_or_default();
        let (platform, usual, platform_wave) = self.platform_wave(window);
        let prefix_wave = self.network_wave(by_prefix);
        let asn_wave = asn.is_some() && self.network_wave(by_asn);
        // The prefix failed on another account than this one.
        let prefix_tried_others = self
            .table
            .with(prefix, |c| {
                c.slots
                    .iter()
                    .filter(|s| s.window == window || s.window == window - 1)
                    .any(|s| s.accounts.iter().any(|&a| a != event.key as u32))
            })
            .unwrap_or(false);
        self.count(prefix, event.ts, event.key, false);
        if let Some(a) = asn {
            self.count(asn_key(a), event.ts, event.key, false);
        }
        let why = if prefix_wave {
            "its network"
        } else if (asn_wave || platform_wave) && prefix_tried_others {
            if asn_wave {
                "its autonomous system"
            } else {
                "the platform"
            }
        } else if (asn_wave || platform_wave) && !usual_client(event, ctx) {
            "a wave, untied"
        } else {
            return;
        };
        let lock = why != "a wave, untied";
        let place = ctx.place_of(ip);
        let net = truncate(ip, 24, 48);
        let (f, accounts, _) = if prefix_wave || !asn_wave { by_prefix } else { by_asn };
        let mut e = Map::new();
        e.insert("success".into(), super::place_evidence(ip, &place));
        e.insert("success_ts".into(), ev(format_rfc3339(event.ts)));
        e.insert("wave".into(), ev(why));
        e.insert("network".into(), ev(net.to_string()));
        e.insert("network_cold_failures".into(), ev(by_prefix.0));
        e.insert("network_accounts".into(), ev(by_prefix.1));
        if let Some(a) = asn {
            e.insert("asn".into(), ev(a));
            e.insert("asn_cold_failures".into(), ev(by_asn.0));
            e.insert("asn_accounts".into(), ev(by_asn.1));
        }
        e.insert("platform_cold_failures".into(), ev(platform));
        e.insert("platform_usual_per_window".into(), ev((usual * 10.0).round() / 10.0));
        e.insert("window_seconds".into(), ev(self.cfg.window_secs));
        e.insert("min_network_failures".into(), ev(self.cfg.min_network_failures));
        e.insert("min_network_accounts".into(), ev(self.cfg.min_network_accounts));
        e.insert("min_platform_failures".into(), ev(self.cfg.min_platform_failures));
        let reason = if !lock {
            format!(
                "First login ever from {} ({net}), without a mail program this account uses, while a credential-stuffing wave is under way from {}: the password may be on a leaked list.",
                place.describe(),
                if asn_wave { "that provider's networks" } else { "networks the accounts never used" }
            )
        } else if why == "the platform" {
            format!(
                "First login ever from {} ({net}) while a credential-stuffing wave hits the platform ({platform} failed logins from networks the accounts never used in the last hour, about {:.0} usually), and that network failed on other accounts: the password was probably on a leaked list.",
                place.describe(),
                usual
            )
        } else {
            format!(
                "First login ever from {} ({net}), whose {} failed on {} accounts {} times in the last hour from networks they never used: the password was probably on a leaked list.",
                place.describe(),
                if why == "its network" { "network" } else { "provider" },
                accounts,
                f
            )
        };
        out.push(Finding {
            detector: NAME,
            account: event.account.clone(),
            key: event.key,
            strength: if lock { Strength::Lock } else { Strength::Alert },
            severity: if lock { Severity::Critical } else { Severity::High },
            reason,
            first_event_ts: event.ts,
            last_event_ts: event.ts,
            anchor_ts: event.ts,
            evidence: e,
            source: Some(ip),
            account_since: None,
        });
    }

    fn state(&self) -> Vec<&dyn Swept> {
        vec![&self.table]
    }
}

/// Whether the login names a mail program the account has used.
fn usual_client(event: &Event, ctx: &Context<'_>) -> bool {
    let Some(c) = event.client.as_deref().and_then(crate::state::profile::client_key) else {
        return false;
    };
    ctx.habits(|h| h.clients.iter().any(|x| x.hash == c))
        .unwrap_or(false)
}

