//! Enforcement at the door: credwatch as the policy server of the mail
//! servers, so that a locked account cannot log in or send the moment it is
//! locked.
//!
//! * [`dovecot`]: Dovecot's auth policy protocol (`auth_policy_server_url`):
//!   `allow` is answered from the lock view, every `report` becomes a login
//!   event.
//! * [`postfix`]: Postfix's SMTP access policy delegation
//!   (`check_policy_service`): a message from a locked login is refused, and
//!   each authenticated message becomes a submission event.
//! * [`LockView`]: the accounts locked now, built from the actions topic
//!   ([`feed`]), which every instance reads whole, and from this instance's
//!   own decisions as they are made; so a lock decided by any instance is
//!   enforced by all.
//! * [`emit`]: the events both servers make go to the input topic without
//!   ever making a mail server wait (a full or lost broker drops and counts).
//!
//! Both servers answer from memory and fail open: credwatch down, or not
//! caught up with the actions topic yet, costs enforcement, never mail.

pub mod dovecot;
pub mod emit;
pub mod feed;
mod listen;
pub mod postfix;
mod tarpit;

use dashmap::DashMap;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::action::{Action, ActionKind};
use crate::source::event::account_key;
use crate::time::{parse_rfc3339, Millis, SECOND};

/// How long an unlock is remembered after it was applied, so that an
/// older lock read later (from the topic, after this instance applied the
/// unlock itself) cannot lock the account again.
const TOMBSTONE: Millis = 24 * 3600 * SECOND;

/// What the lock view knows of one account.
#[derive(Debug, Clone)]
struct Standing {
    locked: bool,
    /// Event time of the action's decisive event: a later action wins.
    order: Millis,
    /// When the action was decided (its `timestamp`, the wall clock in `run`).
    at: Millis,
    detector: Box<str>,
    id: Box<str>,
}

/// A lock in force, as a refusal reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub detector: Box<str>,
    pub id: Box<str>,
    /// When it was decided.
    pub since: Millis,
}

/// An action as the lock view reads it: only what decides a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub account: Box<str>,
    pub lock: bool,
    pub order: Millis,
    pub at: Millis,
    pub detector: Box<str>,
    pub id: Box<str>,
}

impl Change {
    /// A lock or an unlock; `None` for an alert (alerts never refuse).
    pub fn of(a: &Action) -> Option<Change> {
        let lock = match a.data.action {
            ActionKind::Lock if !a.data.dry_run => true,
            ActionKind::Unlock => false,
            _ => return None,
        };
        Some(Change {
            account: a.data.account.as_str().into(),
            lock,
            order: parse_rfc3339(&a.data.last_event_ts).unwrap_or(Millis::MIN),
            at: parse_rfc3339(&a.timestamp).unwrap_or(Millis::MIN),
            detector: a.data.detector.into(),
            id: a.id.as_str().into(),
        })
    }

    /// The same from an action's JSON, as the actions topic has it.
    /// `Ok(None)`: an alert; `Err`: not an action credwatch wrote.
    pub fn parse(json: &[u8]) -> Result<Option<Change>, String> {
        #[derive(Deserialize)]
        struct Data<'a> {
            #[serde(borrow)]
            account: std::borrow::Cow<'a, str>,
            action: &'a str,
            #[serde(default)]
            dry_run: bool,
            #[serde(borrow, default)]
            detector: std::borrow::Cow<'a, str>,
            last_event_ts: &'a str,
        }
        #[derive(Deserialize)]
        struct Raw<'a> {
            #[serde(borrow)]
            id: std::borrow::Cow<'a, str>,
            timestamp: &'a str,
            #[serde(borrow)]
            data: Data<'a>,
        }
        let r: Raw = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let lock = match r.data.action {
            "lock" if !r.data.dry_run => true,
            "unlock" => false,
            "lock" | "alert" => return Ok(None),
            other => return Err(format!("unknown action {other:?}")),
        };
        let ts = |s: &str| parse_rfc3339(s).ok_or_else(|| format!("bad time {s:?}"));
        Ok(Some(Change {
            account: r.data.account.as_ref().into(),
            lock,
            order: ts(r.data.last_event_ts)?,
            at: ts(r.timestamp)?,
            detector: r.data.detector.as_ref().into(),
            id: r.id.as_ref().into(),
        }))
    }
}

/// The accounts locked now, by the canonical account's key.
pub struct LockView {
    map: DashMap<u64, Standing>,
    /// `policy.lock_ttl_secs` in milliseconds; `None`: until unlocked.
    ttl: Option<Millis>,
    locked: AtomicI64,
    /// The actions topic has been read up to where it was at start.
    caught_up: AtomicBool,
}

impl LockView {
    /// `ttl_secs`: refusals expire this long after the lock (0: never).
    pub fn new(ttl_secs: u64) -> LockView {
        LockView {
            map: DashMap::new(),
            ttl: (ttl_secs > 0).then_some(ttl_secs as Millis * SECOND),
            locked: AtomicI64::new(0),
            caught_up: AtomicBool::new(false),
        }
    }

    /// Applies a lock or an unlock; an action older (in event time) than
    /// what the account's standing already reflects changes nothing, so
    /// the same action read twice, or a lock read after its unlock, is
    /// harmless. Returns whether the standing changed.
    pub fn apply(&self, c: &Change) -> bool {
        let key = account_key(&c.account);
        let new = Standing {
            locked: c.lock,
            order: c.order,
            at: c.at,
            detector: c.detector.clone(),
            id: c.id.clone(),
        };
        let mut changed = false;
        let mut delta = 0i64;
        self.map
            .entry(key)
            .and_modify(|s| {
                // At the same event time the later arrival wins (an unlock
                // sent right after the lock it lifts).
                if c.order >= s.order && (s.locked != c.lock || s.id != new.id) {
                    delta = c.lock as i64 - s.locked as i64;
                    changed = true;
                    *s = new.clone();
                }
            })
            .or_insert_with(|| {
                changed = true;
                delta = c.lock as i64;
                new.clone()
            });
        self.locked.fetch_add(delta, Ordering::Relaxed);
        changed
    }

    /// The lock in force on `account` (canonical) at wall-clock `now`.
    pub fn lookup(&self, account: &str, now: Millis) -> Option<Lock> {
        self.lookup_key(account_key(account), now)
    }

    pub fn lookup_key(&self, key: u64, now: Millis) -> Option<Lock> {
        let s = self.map.get(&key)?;
        if !s.locked || self.ttl.is_some_and(|t| s.at.saturating_add(t) <= now) {
            return None;
        }
        Some(Lock {
            detector: s.detector.clone(),
            id: s.id.clone(),
            since: s.at,
        })
    }

    /// Forgets expired locks and old unlocks; returns how many.
    pub fn sweep(&self, now: Millis) -> usize {
        let before = self.map.len();
        let ttl = self.ttl;
        let mut expired = 0i64;
        self.map.retain(|_, s| {
            let keep = if s.locked {
                ttl.is_none_or(|t| s.at.saturating_add(t) > now)
            } else {
                s.at.saturating_add(TOMBSTONE) > now
            };
            if !keep && s.locked {
                expired += 1;
            }
            keep
        });
        self.locked.fetch_sub(expired, Ordering::Relaxed);
        before - self.map.len()
    }

    /// Accounts with a lock (expired ones count until the next sweep).
    pub fn locked(&self) -> i64 {
        self.locked.load(Ordering::Relaxed)
    }

    /// Whether the actions topic has been read up to its end at start: until
    /// then a lock decided before this instance started may be missing.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::Relaxed);
    }
}

/// The policy servers of a running service, and where they listen.
pub struct Servers {
    pub dovecot: Option<std::net::SocketAddr>,
    pub postfix: Option<String>,
    emitter: std::sync::Arc<emit::Emitter>,
}

/// Why a policy server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Dovecot(#[from] dovecot::BindError),
    #[error(transparent)]
    Postfix(#[from] postfix::BindError),
    #[error("cannot create the Kafka producer for the policy servers' events (check kafka.brokers and kafka.properties): {0}")]
    Producer(rdkafka::error::KafkaError),
}

impl Servers {
    /// Starts the configured servers on the current tokio runtime, answering
    /// from `locks`.
    pub async fn start(
        settings: &crate::config::Settings,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        locks: std::sync::Arc<LockView>,
    ) -> Result<Servers, ServeError> {
        use std::sync::Arc;
        let c = &settings.config;
        let emitter = Arc::new(
            emit::Emitter::new(&c.kafka, &c.events, metrics.clone())
                .map_err(ServeError::Producer)?,
        );
        let form = c.events.form();
        let dovecot = match c.dovecot_policy.enabled() {
            true => Some(
                dovecot::Server::new(
                    &c.dovecot_policy,
                    locks.clone(),
                    emitter.clone(),
                    metrics.clone(),
                    form.clone(),
                    settings.trusted.clone(),
                )
                .serve()
                .await?
                .addr,
            ),
            false => None,
        };
        let postfix = match c.postfix_policy.enabled() {
            true => Some(
                postfix::Server::new(
                    &c.postfix_policy,
                    &c.detectors.sender_mismatch,
                    locks,
                    emitter.clone(),
                    metrics,
                    form,
                )
                .serve()
                .await?
                .addr,
            ),
            false => None,
        };
        Ok(Servers {
            dovecot,
            postfix,
            emitter,
        })
    }

    /// Sends what the servers' events still queue (at most `timeout`).
    pub fn flush(&self, timeout: std::time::Duration) {
        self.emitter.flush(timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(account: &str, lock: bool, order: Millis, id: &str) -> Change {
        Change {
            account: account.into(),
            lock,
            order,
            at: order,
            detector: "impossible_travel".into(),
            id: id.into(),
        }
    }

    #[test]
    fn a_lock_stands_until_its_unlock_and_older_actions_change_nothing() {
        let v = LockView::new(0);
        assert!(v.apply(&change("a@x.jp", true, 100, "cw_1")));
        assert_eq!(v.lookup("a@x.jp", 200).unwrap().id.as_ref(), "cw_1");
        assert_eq!(v.lookup("b@x.jp", 200), None);
        // The same lock again (the topic after the local decision).
        assert!(!v.apply(&change("a@x.jp", true, 100, "cw_1")));
        assert_eq!(v.locked(), 1);
        assert!(v.apply(&change("a@x.jp", false, 300, "cw_u")));
        assert_eq!(v.lookup("a@x.jp", 400), None);
        assert_eq!(v.locked(), 0);
        // The lock read from the topic after the unlock was applied locally.
        assert!(!v.apply(&change("a@x.jp", true, 100, "cw_1")));
        assert_eq!(v.lookup("a@x.jp", 400), None);
        // A new lock after the unlock stands.
        assert!(v.apply(&change("a@x.jp", true, 500, "cw_2")));
        assert!(v.lookup("a@x.jp", 600).is_some());
        assert_eq!(v.locked(), 1);
    }

    #[test]
    fn refusals_expire_with_a_ttl_and_sweeps_keep_the_count() {
        let v = LockView::new(60);
        v.apply(&change("a@x.jp", true, 0, "cw_1"));
        assert!(v.lookup("a@x.jp", 59 * SECOND).is_some());
        assert!(v.lookup("a@x.jp", 60 * SECOND).is_none());
        assert_eq!(v.sweep(61 * SECOND), 1);
        assert_eq!(v.locked(), 0);
    }

    #[test]
    fn actions_are_read_from_their_json_and_alerts_are_not_refusals() {
        let lock = br#"{"type":"account.lock","id":"cw_1","timestamp":"2026-11-05T09:42:01.250Z","data":{"account":"alice@example.jp","action":"lock","detector":"impossible_travel","severity":"high","reason":"r","dry_run":false,"first_event_ts":"2026-11-05T09:11:02.000Z","last_event_ts":"2026-11-05T09:42:01.000Z","evidence":{}}}"#;
        let c = Change::parse(lock).unwrap().unwrap();
        assert!(c.lock);
        assert_eq!(&*c.account, "alice@example.jp");
        let alert =
            String::from_utf8_lossy(lock).replace("\"action\":\"lock\"", "\"action\":\"alert\"");
        assert_eq!(Change::parse(alert.as_bytes()).unwrap(), None);
        let dry = String::from_utf8_lossy(lock).replace("\"dry_run\":false", "\"dry_run\":true");
        assert_eq!(Change::parse(dry.as_bytes()).unwrap(), None);
        assert!(Change::parse(b"{}").is_err());
        assert!(Change::parse(b"not json").is_err());
    }
}
