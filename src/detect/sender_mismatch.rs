//! `sender_mismatch`: the authenticated login sending as addresses it does
//! not own — the envelope `mail_from` or the `header_from`.
//!
//! The platform lets an authenticated user send as other addresses it
//! hosts, so the spam of a phished account claims to come from other
//! customers and passes SPF, DKIM and DMARC. An account owns:
//!
//! * its own address (the login, when it is an address), compared
//!   case-insensitively and ignoring a `+tag` sub-address;
//! * the addresses the alias map gives it (`alias_map`: a file of
//!   `login  sender, sender, @domain`, in the spirit of Postfix's
//!   `smtpd_sender_login_maps`, re-read when it changes);
//! * every address of its own domain, when the login is one of the
//!   domain's administrators (`domain_admins`).
//!
//! A null sender (`<>`) is not a mismatch. One foreign sender in a window
//! is an alert (a forwarding rule, a shared mailbox nobody put in the alias
//! map); `min_foreign_senders` distinct ones lock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Map;

use super::{DetectorConfig, Registration, ev, message_evidence, Context, Detector, Finding, Severity, Strength};
use crate::section::Checks;
use crate::source::event::{
    account_key, canonical_account, mailboxes, AccountForm, AccountName, Event, Kind,
};
use crate::state::{KeyedBy, StateConfig, insert_sorted, prune_sorted, Entry, Items, Swept, Table};
use crate::time::{human_duration, Millis, SECOND};

pub const NAME: &str = "sender_mismatch";

crate::detector_section! {
    enabled = true;
    /// `[detectors.sender_mismatch]`
    pub struct SenderMismatchConfig {
        /// The window, in seconds.
        pub window_secs: u64 = 3600,
        /// Distinct foreign senders in the window that lock: one is a
        /// forgotten alias, three different customers' addresses in an hour
        /// is someone sending as the platform's customers.
        pub min_foreign_senders: usize = 3,
        /// The alias map file; empty for none.
        pub alias_map: String = String::new(),
        /// How often (wall clock) the alias map file is checked for
        /// changes, in seconds.
        pub alias_map_reload_secs: u64 = 10,
        /// Logins that may send as any address of their own domain (a
        /// domain's administrators).
        pub domain_admins: Vec<String> = Vec::new(),
    }
}

impl DetectorConfig for SenderMismatchConfig {
    fn check(&self, c: &mut Checks) {
        c.at_least("window_secs", self.window_secs, 1);
        c.at_least("min_foreign_senders", self.min_foreign_senders as u64, 2);
        if !self.alias_map.is_empty() {
            if let Err(e) = read_alias_map(&PathBuf::from(&self.alias_map), &AccountForm::default()) {
                c.fail("alias_map", e);
            }
        }
    }
}

/// The addresses of a sender field (an envelope `MAIL FROM` or a `From:`
/// header), each in the canonical account form: `"Alice" <Alice+news@Example.COM>`
/// is `alice@example.com`; `<>`, a display name alone and empty are none.
pub fn sender_addresses(raw: &str, form: &AccountForm) -> Vec<String> {
    mailboxes(raw)
        .iter()
        .filter_map(|spec| canonical_account(spec, form).ok())
        .map(String::from)
        .collect()
}

fn domain_of(addr: &str) -> Option<&str> {
    addr.rsplit_once('@').map(|(_, d)| d)
}

type Aliases = HashMap<String, Vec<String>>;

/// Parses the alias map: `login  allowed, allowed @domain` per line, `#`
/// comments; logins and addresses in the canonical account form.
fn read_alias_map(path: &PathBuf, form: &AccountForm) -> Result<Aliases, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut map = Aliases::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(2, char::is_whitespace);
        let login = parts.next().unwrap_or("");
        let rest = parts.next().unwrap_or("").trim();
        let login = canonical_account(login, form)
            .map_err(|_| format!("{}:{}: not a login", path.display(), n + 1))?;
        let allowed: Vec<String> = rest
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                if let Some(d) = s.strip_prefix('@') {
                    let c = canonical_account(&format!("x@{d}"), form).ok()?;
                    domain_of(&c).map(|d| format!("@{d}"))
                } else {
                    sender_addresses(s, form).into_iter().next()
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(format!(
                "{}:{}: expected `login  sender[, sender...]`",
                path.display(),
                n + 1
            ));
        }
        map.entry(login.to_string()).or_default().extend(allowed);
    }
    Ok(map)
}

/// The alias map, re-read when the file changes (checked at most every
/// `alias_map_reload_secs`). A file that has become unreadable or invalid
/// keeps the previous map in force and is logged.
struct AliasMap {
    path: Option<PathBuf>,
    form: AccountForm,
    every: Duration,
    map: RwLock<Arc<Aliases>>,
    checked: Mutex<(Instant, Option<(SystemTime, u64)>)>,
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl AliasMap {
    fn new(cfg: &SenderMismatchConfig, form: &AccountForm) -> AliasMap {
        let path = (!cfg.alias_map.is_empty()).then(|| PathBuf::from(&cfg.alias_map));
        let (map, st) = match &path {
            Some(p) => match read_alias_map(p, form) {
                Ok(m) => (m, stamp(p)),
                Err(e) => {
                    tracing::error!(error = %e, "The alias map cannot be read; no aliases are in force.");
                    (Aliases::new(), None)
                }
            },
            None => (Aliases::new(), None),
        };
        AliasMap {
            path,
            form: form.clone(),
            every: Duration::from_secs(cfg.alias_map_reload_secs),
            map: RwLock::new(Arc::new(map)),
            checked: Mutex::new((Instant::now(), st)),
        }
    }

    fn current(&self) -> Arc<Aliases> {
        if let Some(path) = &self.path {
            if let Ok(mut c) = self.checked.try_lock() {
                if c.0.elapsed() >= self.every {
                    c.0 = Instant::now();
                    let st = stamp(path);
                    if st != c.1 {
                        c.1 = st;
                        match read_alias_map(path, &self.form) {
                            Ok(m) => {
                                tracing::info!(entries = m.len(), "Alias map reloaded.");
                                *self.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(m);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "The changed alias map is invalid; the previous one stays in force.");
                            }
                        }
                    }
                }
            }
        }
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Foreign senders an account used recently: (time, sender hash, domain hash).
struct Foreign {
    senders: Items<(Millis, u64, u64)>,
    /// Last sender addresses, for evidence (at most 10).
    shown: Vec<Box<str>>,
    alerted: Millis,
    locked: Millis,
}

crate::codec_fields!(Foreign { senders, shown, alerted, locked });

impl Entry for Foreign {
    fn last_seen(&self) -> Millis {
        self.senders.last().map_or(Millis::MIN, |x| x.0)
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        prune_sorted(&mut self.senders, horizon, |x| x.0);
        self.senders.is_empty()
    }
    fn weight(&self) -> usize {
        self.senders.len()
    }
}

/// Which senders a login owns: its own address, the alias map, and every
/// address of its domain for the domain's administrators. Shared with the
/// Postfix policy server's sender check ([`crate::enforce::postfix`]).
pub struct Owners {
    aliases: AliasMap,
    form: AccountForm,
    admins: Vec<AccountName>,
}

impl Owners {
    pub fn new(cfg: &SenderMismatchConfig, form: &AccountForm) -> Owners {
        Owners {
            aliases: AliasMap::new(cfg, form),
            form: form.clone(),
            admins: cfg
                .domain_admins
                .iter()
                .filter_map(|a| canonical_account(a, form).ok())
                .collect(),
        }
    }

    /// The addresses of a sender field that `account` (canonical) does not
    /// own, in the canonical form.
    pub fn foreign(&self, account: &str, raw: &str) -> Vec<String> {
        let mut foreign = Vec::new();
        if raw == account {
            return foreign;
        }
        let mut aliases = None;
        for sender in sender_addresses(raw, &self.form) {
            if sender == account || foreign.contains(&sender) {
                continue;
            }
            let aliases = aliases.get_or_insert_with(|| self.aliases.current());
            if !self.allowed(account, &sender, aliases) {
                foreign.push(sender);
            }
        }
        foreign
    }

    /// Whether `account` (normalised) may send as `sender` (normalised),
    /// other than as its own address (the caller checks that first, cheaply).
    fn allowed(&self, account: &str, sender: &str, aliases: &Aliases) -> bool {
        if let Some(allowed) = aliases.get(account) {
            let domain = domain_of(sender);
            if allowed
                .iter()
                .any(|a| a == sender || a.strip_prefix('@').is_some_and(|d| Some(d) == domain))
            {
                return true;
            }
        }
        self.admins.iter().any(|a| &**a == account)
            && domain_of(account).is_some()
            && domain_of(account) == domain_of(sender)
    }
}

pub struct SenderMismatch {
    cfg: SenderMismatchConfig,
    window: Millis,
    owners: Owners,
    table: Table<Foreign>,
    cap: usize,
}

impl Registration for SenderMismatch {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Account;
    type Config = SenderMismatchConfig;

    fn new(cfg: &SenderMismatchConfig, state: &StateConfig, form: &AccountForm) -> Self {
        let window = cfg.window_secs as Millis * SECOND;
        SenderMismatch {
            cfg: cfg.clone(),
            window,
            owners: Owners::new(cfg, form),
            table: Table::sparse(NAME, KeyedBy::Account, state.max_accounts, window),
            cap: state.max_entries_per_key.max(cfg.min_foreign_senders),
        }
    }
}

impl Detector for SenderMismatch {
    fn warm(&self, accounts: &[u64]) {
        self.table.warm_presence(accounts);
    }
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if event.kind != Kind::Submission {
            return;
        }
        // Almost every message is sent as the account's own address: that
        // is settled without the alias map.
        let mut foreign: Vec<String> = Vec::new();
        for raw in [event.mail_from.as_deref(), event.header_from.as_deref()]
            .into_iter()
            .flatten()
        {
            for sender in self.owners.foreign(&event.account, raw) {
                if !foreign.contains(&sender) {
                    foreign.push(sender);
                }
            }
        }
        if foreign.is_empty() {
            return;
        }
        let now = event.ts;
        let from = now - self.window;
        let (cap, min) = (self.cap, self.cfg.min_foreign_senders);
        let found = self.table.update(
            event.key,
            || Foreign {
                senders: Items::new(),
                shown: Vec::new(),
                alerted: Millis::MIN,
                locked: Millis::MIN,
            },
            |f| {
                for s in &foreign {
                    let h = account_key(s);
                    let d = account_key(domain_of(s).unwrap_or(""));
                    f.senders.retain(|x| x.1 != h);
                    insert_sorted(&mut f.senders, (now, h, d), cap, |x| x.0);
                    if !f.shown.iter().any(|x| **x == **s) {
                        if f.shown.len() >= 10 {
                            f.shown.remove(0);
                        }
                        f.shown.push(s.as_str().into());
                    }
                }
                let inside: Vec<&(Millis, u64, u64)> =
                    f.senders.iter().filter(|x| x.0 >= from).collect();
                let senders = inside.len();
                let mut domains: Vec<u64> = inside.iter().map(|x| x.2).collect();
                domains.sort_unstable();
                domains.dedup();
                let first = inside.first().map_or(now, |x| x.0);
                if senders >= min {
                    if f.locked >= from {
                        return None;
                    }
                    f.locked = now;
                    return Some((
                        Strength::Lock,
                        senders,
                        domains.len(),
                        first,
                        f.shown.clone(),
                    ));
                }
                if f.alerted >= from || f.locked >= from {
                    return None;
                }
                f.alerted = now;
                Some((
                    Strength::Alert,
                    senders,
                    domains.len(),
                    first,
                    f.shown.clone(),
                ))
            },
        );
        let Some((strength, senders, domains, first, shown)) = found else {
            return;
        };
        let severity = match strength {
            Strength::Lock if domains >= 2 => Severity::Critical,
            Strength::Lock => Severity::High,
            _ => Severity::Medium,
        };
        let mut e = Map::new();
        e.insert("foreign_senders".into(), ev(senders));
        e.insert("foreign_domains".into(), ev(domains));
        e.insert("senders".into(), ev(&shown));
        e.insert("window_seconds".into(), ev(self.cfg.window_secs));
        e.insert("min_foreign_senders".into(), ev(min));
        e.insert("message".into(), message_evidence(event, ctx));
        let reason = if strength == Strength::Lock {
            format!(
                "The account sent as {senders} addresses it does not own, in {domains} domain(s), within {}.",
                human_duration(self.window)
            )
        } else {
            format!(
                "The account sent as {}, an address it does not own.",
                foreign[0]
            )
        };
        out.push(Finding {
            detector: NAME,
            account: event.account.clone(),
            key: event.key,
            strength,
            severity,
            reason,
            first_event_ts: first,
            last_event_ts: now,
            anchor_ts: first,
            evidence: e,
            source: event.src_ip,
            account_since: None,
        });
    }

    fn state(&self) -> Vec<&dyn Swept> {
        vec![&self.table]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalise() {
        let f = AccountForm::default();
        assert_eq!(
            sender_addresses(" <Alice+News@Example.COM> ", &f),
            ["alice@example.com"]
        );
        assert_eq!(
            sender_addresses("\"Alice\" <ａｌｉｃｅ@example.com.>", &f),
            ["alice@example.com"]
        );
        assert!(sender_addresses("<>", &f).is_empty());
        assert!(sender_addresses("", &f).is_empty());
        assert!(sender_addresses("Yamada Taro", &f).is_empty());
    }

    #[test]
    fn the_alias_map_parses_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("aliases");
        std::fs::write(&p, "# login  senders\nAlice@example.com  sales@example.com, @example.org\n\nbob@x.net bob@y.net\n").unwrap();
        let m = read_alias_map(&p, &AccountForm::default()).unwrap();
        assert_eq!(
            m["alice@example.com"],
            vec!["sales@example.com", "@example.org"]
        );
        std::fs::write(&p, "alice@example.com\n").unwrap();
        let e = read_alias_map(&p, &AccountForm::default()).unwrap_err();
        assert!(e.contains(":1:"), "{e}");
    }
}

#[cfg(all(test, feature = "demo"))]
mod findings {
    use super::*;
    use crate::demo::sample::submission;
    use crate::detect::testing::{ip, Bench, T0};
    use crate::time::MINUTE;

    const A: &str = "alice@example.jp";

    fn sent_as(i: i64, sender: &str) -> crate::demo::sample::Line {
        submission(T0 + i * MINUTE, A, ip("Lagos", 5), sender, None, 1)
    }

    #[test]
    fn one_foreign_sender_alerts_the_third_locks_the_rest_are_absorbed() {
        let b = Bench::new();
        let d = Bench::detector::<SenderMismatch>("");
        let f = b.observe(
            &d,
            &[
                sent_as(0, "bob@example.net"),
                sent_as(1, "carol@example.org"),
                sent_as(2, "dave@example.com"),
                sent_as(3, "erin@example.com"),
            ],
        );
        let seen: Vec<(Strength, u64)> = f
            .iter()
            .map(|f| (f.strength, f.evidence["foreign_senders"].as_u64().unwrap()))
            .collect();
        assert_eq!(seen, [(Strength::Alert, 1), (Strength::Lock, 3)], "{f:?}");
        assert_eq!(f[1].severity, Severity::Critical, "three domains");
    }

    #[test]
    fn its_own_tagged_and_differently_cased_address_is_its_own() {
        let b = Bench::new();
        let d = Bench::detector::<SenderMismatch>("");
        let f = b.observe(
            &d,
            &[
                sent_as(0, "Alice@Example.JP"),
                sent_as(1, "alice+news@example.jp"),
                sent_as(2, "<>"),
            ],
        );
        assert!(f.is_empty(), "{f:?}");
    }
}
