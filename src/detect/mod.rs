//! Detectors: an event in, zero or more findings out.
//!
//! A detector is one file and one line. The file implements [`Detector`]
//! (how it judges) and [`Registration`] (its name, its config section, what
//! it is keyed by, how it is made); the line in the [`registry!`] below
//! generates its module, its `[detectors.<name>]` section with its checks,
//! and its place in [`build`]. It keeps its own bounded state
//! ([`crate::state::Table`]) and judges only; whether a finding locks,
//! alerts or joins an incident already open is the policy's business
//! ([`crate::policy`]).

#[macro_use]
mod registry;

registry! {
    impossible_travel::ImpossibleTravel,
    failed_login_burst::FailedLoginBurst,
    password_spray::PasswordSpray,
    send_volume::SendVolume,
    sender_mismatch::SenderMismatch,
    backscatter::Backscatter,
    unfamiliar_login::UnfamiliarLogin,
    slow_guessing::SlowGuessing,
    credential_stuffing::CredentialStuffing,
    // A throwaway detector that proves the line above is all it takes
    // (see its tests); compiled into tests only.
    #[cfg(test)]
    canary::Canary,
}

pub use registry::{DetectorConfig, DetectorInfo, Registered, Registration};

#[cfg(all(test, feature = "demo"))]
mod testing;

use std::cell::{OnceCell, RefCell};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::geo::{GeoIp, Place, Point};
use crate::source::event::{AuthResult, Event};
use crate::state::profile::{Habits, Profile, Seen};
use crate::state::{Held, Swept};
use crate::time::Millis;

/// How bad a finding is (contract §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// What the detector's evidence is strong enough for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strength {
    /// Worth telling someone; not enough to lock.
    Alert,
    /// Strong enough to lock the account.
    Lock,
}

/// One detector's judgement about one account.
#[derive(Debug, Clone)]
pub struct Finding {
    pub detector: &'static str,
    /// The account it is about (normalised), and its state key.
    pub account: crate::source::event::AccountName,
    pub key: u64,
    pub strength: Strength,
    pub severity: Severity,
    /// One sentence a support desk can read to the customer.
    pub reason: String,
    pub first_event_ts: Millis,
    pub last_event_ts: Millis,
    /// A time from the account's *own* events that identifies the incident
    /// (the action id is derived from it). It must not depend on the order
    /// in which other accounts' events were judged, so that a parallel
    /// replay or a restart gives the same ids.
    pub anchor_ts: Millis,
    /// The detector's own facts; documented per detector in the README.
    pub evidence: Map<String, Value>,
    /// The address the finding came from (the attacker's login or
    /// submission), when there is one: a lock the breaker held back is
    /// sent once the breaker closes if the account is still used from its
    /// network.
    pub source: Option<IpAddr>,
    /// When the account was first seen, where the finding knows better than
    /// the engine's profiles (the source stage of a split pipeline, from
    /// the account stage's hint); the breaker counts established accounts.
    pub account_since: Option<Millis>,
}

/// What a detector may ask about the event besides the event itself.
///
/// **The event's profile.** The account's profile is read and written by
/// several detectors and then learned into, about six accesses per
/// successful login. The engine locks its shard once, before the
/// detectors ([`Context::hold_profile`]), and every access of the event
/// goes through that hold until the context is dropped. So that two
/// threads can never wait on each other, a thread waits for a profile
/// shard only while it holds no other lock: at the start of an event, or
/// in the engine between detectors. Holding one, it may wait for any
/// other table's lock, because nobody holding one of those waits for a
/// profile. A profile of another account, in another shard, is read by
/// letting the hold go first ([`Context::first_seen`]). A closure given
/// to [`Context::habits`] must not ask the context for the profile again
/// (that panics).
pub struct Context<'a> {
    geo: &'a GeoIp,
    trusted: &'a [IpNet],
    point: OnceCell<Option<(Point, bool)>>,
    profile: Option<&'a Profile>,
    held: RefCell<Option<Held<'a, Habits>>>,
    seen: OnceCell<Option<Seen>>,
    /// The profiles' key of the event's address's network.
    network: OnceCell<Option<u64>>,
    trusted_source: OnceCell<bool>,
    key: u64,
    ip: Option<IpAddr>,
    ts: Millis,
}

impl<'a> Context<'a> {
    pub fn new(geo: &'a GeoIp, trusted: &'a [IpNet], event: &Event) -> Self {
        Context {
            geo,
            trusted,
            point: OnceCell::new(),
            profile: None,
            held: RefCell::new(None),
            seen: OnceCell::new(),
            network: OnceCell::new(),
            trusted_source: OnceCell::new(),
            key: event.key,
            ip: event.src_ip,
            ts: event.ts,
        }
    }

    /// With the accounts' profiles (the engine of a stage keyed by account).
    pub fn with_profile(mut self, profile: Option<&'a Profile>) -> Self {
        self.profile = profile;
        self
    }

    /// What the event's account had used that the event's address shows
    /// (`None`: no profiles here, or no address). Before this event: the
    /// engine learns it after the detectors have judged it.
    pub fn seen(&self) -> Option<Seen> {
        *self.seen.get_or_init(|| {
            let prefix = self.own_network()?;
            let point = self.point();
            Some(
                self.habits(|h| h.seen(prefix, point.as_ref()))
                    .unwrap_or_default(),
            )
        })
    }

    /// Locks the shard of the event's account's profile until the context
    /// is dropped (see [`Context`]), when the event has an address: every
    /// detector that reads the profile needs one. The engine calls it
    /// before the detectors, holding no other lock.
    pub fn hold_profile(&self) {
        if let (Some(p), Some(_)) = (self.profile, self.ip) {
            *self.held.borrow_mut() = Some(p.hold(self.key));
        }
    }

    /// Runs `f` on the event's account's profile (`None`: no profiles
    /// here, or the account has none).
    pub fn habits<R>(&self, f: impl FnOnce(&mut Habits) -> R) -> Option<R> {
        let profile = self.profile?;
        match self.held.borrow_mut().as_mut() {
            Some(h) => h.get_mut(self.key).map(f),
            None => profile.with(self.key, f),
        }
    }

    /// Runs `f` on the event's account's profile, giving it an empty one
    /// first if it has none (`None`: no profiles here). At the table's cap
    /// it lets the hold go and takes it again, so it is called holding no
    /// other lock (`impossible_travel` and the engine's learning do).
    pub fn habits_or_new<R>(&self, f: impl FnOnce(&mut Habits) -> R) -> Option<R> {
        let profile = self.profile?;
        let mut held = self.held.borrow_mut();
        if let Some(h) = held.as_mut() {
            if let Some(e) = h.get_or_insert(self.key, Habits::empty) {
                return Some(f(e));
            }
            // It cannot be created in the held shard (the table is full):
            // the usual insert makes room, holding nothing.
            *held = None;
            let r = profile.update(self.key, f);
            *held = Some(profile.hold(self.key));
            return Some(r);
        }
        Some(profile.update(self.key, f))
    }

    /// When `account` (any account) first logged in successfully, among
    /// what its profile remembers. Called by the engine between detectors.
    pub fn first_seen(&self, account: u64) -> Option<Millis> {
        let profile = self.profile?;
        let mut held = self.held.borrow_mut();
        match held.as_mut() {
            Some(h) if h.covers(account) => h.get_mut(account).and_then(|h| h.first_seen()),
            Some(_) => {
                // Another shard: waiting for it while holding this one
                // could wait on a thread that holds it and wants this one.
                *held = None;
                let first = profile.first_seen(account);
                *held = Some(profile.hold(self.key));
                first
            }
            None => profile.first_seen(account),
        }
    }

    /// The network of an address as the profiles key it (`None`: no profiles).
    pub fn network(&self, ip: IpAddr) -> Option<u64> {
        if Some(ip) == self.ip {
            return self.own_network();
        }
        self.profile.map(|p| p.network(ip))
    }

    /// The network of the event's own address, keyed once per event.
    fn own_network(&self) -> Option<u64> {
        *self
            .network
            .get_or_init(|| self.profile.zip(self.ip).map(|(p, ip)| p.network(ip)))
    }

    /// The accounts' profiles (`None`: a stage keyed by source address).
    pub fn profile(&self) -> Option<&'a Profile> {
        self.profile
    }

    /// Learns the event (a successful login or a submission from an
    /// untrusted address) into the account's profile.
    pub fn learn(&self, event: &Event) {
        let Some(p) = self.profile else { return };
        if self.ip.is_none() || self.source_trusted() {
            return;
        }
        if event.is_auth(AuthResult::Success) {
            if let Some(net) = self.own_network() {
                let point = self.point();
                self.habits_or_new(|h| {
                    p.learn_into(
                        h,
                        net,
                        point.as_ref(),
                        event.ts,
                        event.protocol,
                        event.client.as_deref(),
                    );
                });
            }
        } else if event.kind == crate::source::event::Kind::Submission {
            self.habits(|h| h.learn_sent(event.ts));
        }
    }

    /// Where the event's source address is; looked up on first use only.
    pub fn point(&self) -> Option<Point> {
        self.point
            .get_or_init(|| self.ip.map(|ip| self.geo.point(ip, self.ts)))
            .map(|(p, _)| p)
    }

    /// Whether this event needed a GeoIP lookup, and if it was a cache hit.
    pub fn geo_lookup(&self) -> Option<bool> {
        self.point.get().copied().flatten().map(|(_, hit)| hit)
    }

    /// Where any address is, with names (for evidence).
    pub fn place_of(&self, ip: IpAddr) -> Place {
        self.geo.place(ip)
    }

    /// True when the event's source is in `policy.trusted_networks`
    /// (checked once per event; every detector asks).
    pub fn source_trusted(&self) -> bool {
        *self
            .trusted_source
            .get_or_init(|| self.ip.is_some_and(|ip| is_trusted(self.trusted, ip)))
    }
}

pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// A detector: how it judges. What it is called, how it is configured
/// and keyed is its [`Registration`].
pub trait Detector: Send + Sync {
    /// Judges one event, pushing any findings to `out`.
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>);
    /// This detector's tables, which the engine sweeps (each by its own
    /// time-to-live) and reports on.
    fn state(&self) -> Vec<&dyn Swept> {
        Vec::new()
    }
    /// Brings what this detector will first read of `accounts` (the next
    /// few dozen events' of a lane) into the processor's cache (see
    /// `Engine::warm`). Changes nothing.
    fn warm(&self, _accounts: &[u64]) {}
}

/// The submitted message a mail-side finding is about, for evidence: when,
/// from which address and place, as whom, to how many.
pub fn message_evidence(event: &Event, ctx: &Context<'_>) -> Value {
    let mut msg = Map::new();
    msg.insert("ts".into(), ev(crate::time::format_rfc3339(event.ts)));
    if let Some(ip) = event.src_ip {
        msg.insert("from".into(), place_evidence(ip, &ctx.place_of(ip)));
    }
    for (k, v) in [
        ("mail_from", &event.mail_from),
        ("header_from", &event.header_from),
        ("queue_id", &event.queue_id),
    ] {
        if let Some(v) = v {
            msg.insert(k.into(), ev(v));
        }
    }
    if let Some(n) = event.rcpt_count {
        msg.insert("rcpt_count".into(), ev(n));
    }
    Value::Object(msg)
}

/// Evidence helpers shared by the detectors.
pub fn ev<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Describes a place for evidence: `{ "place": "London, GB", "country": "GB", ... }`.
pub fn place_evidence(ip: IpAddr, place: &Place) -> Value {
    let mut m = Map::new();
    m.insert("ip".into(), ev(ip.to_string()));
    m.insert("place".into(), ev(place.describe()));
    if let Some(cc) = &place.country {
        m.insert("country".into(), ev(cc));
    }
    if let Some((lat, lon)) = place.coords {
        let round = |x: f32| (f64::from(x) * 1e4).round() / 1e4;
        m.insert("lat".into(), ev(round(lat)));
        m.insert("lon".into(), ev(round(lon)));
        m.insert("accuracy_km".into(), ev(place.accuracy_km));
    }
    if let Some(asn) = place.asn {
        m.insert("asn".into(), ev(asn));
    }
    if let Some(org) = &place.asn_org {
        m.insert("asn_org".into(), ev(org));
    }
    if place.anonymity.any() {
        m.insert("anonymous".into(), ev(place.anonymity.labels()));
    }
    Value::Object(m)
}

/// `8,600`: a whole number with thousands separators.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc, Barrier};
    use std::time::Duration;

    use super::Context;
    use crate::geo::{GeoIp, GeoIpConfig};
    use crate::source::event::{parse_event, Event, ParseLimits};
    use crate::state::profile::{Profile, ProfileConfig};
    use crate::state::{shard_of, StateConfig};

    /// 2026-11-05T00:00:00Z
    const T: i64 = 1_793_836_800_000;

    fn login(account: &str, ip: &str, ts: i64) -> Event {
        let line = format!(
            r#"{{"ts":{ts},"kind":"auth","account":"{account}","protocol":"imap","src_ip":"{ip}","result":"success"}}"#
        );
        parse_event(line.as_bytes(), &ParseLimits::new(65_536, ts + 1000)).expect("a valid login")
    }

    fn no_geo() -> GeoIp {
        let none = GeoIpConfig {
            city_db: String::new(),
            ..GeoIpConfig::default()
        };
        GeoIp::open(&none).expect("no databases")
    }

    /// Two accounts whose profiles are in different shards.
    fn two_shards() -> (Event, Event) {
        let a = login("a@example.net", "198.51.100.7", T);
        let b = (0..)
            .map(|i| login(&format!("b{i}@example.net"), "203.0.113.9", T))
            .find(|b| shard_of(b.key) != shard_of(a.key))
            .expect("another shard");
        (a, b)
    }

    #[test]
    fn a_held_profile_learns_as_the_table_would_even_at_the_cap() {
        let geo = no_geo();
        // Room for one profile: the second account's is made room for by
        // the table (which the held shard cannot do).
        let state = StateConfig {
            max_accounts: 1,
            ..StateConfig::default()
        };
        let profile = Profile::new(&ProfileConfig::default(), &state);
        let (a, b) = two_shards();
        for e in [&a, &b] {
            let ctx = Context::new(&geo, &[], e).with_profile(Some(&profile));
            ctx.hold_profile();
            assert_eq!(ctx.seen().and_then(|s| s.network), None);
            ctx.learn(e);
            // Held again after making room: the event's profile is there.
            assert_eq!(ctx.habits(|h| h.days), Some(1));
            assert_eq!(ctx.first_seen(e.key), Some(e.ts));
        }
        let ip = b.src_ip.expect("an address");
        assert_eq!(profile.seen(b.key, ip, None).network, Some(b.ts));
        assert_eq!(profile.first_seen(a.key), None, "made room for b");
    }

    #[test]
    fn two_events_each_asking_for_the_others_profile_do_not_wait_on_each_other() {
        let geo = no_geo();
        let profile = Profile::new(&ProfileConfig::default(), &StateConfig::default());
        let (a, b) = two_shards();
        for e in [&a, &b] {
            let ctx = Context::new(&geo, &[], e).with_profile(Some(&profile));
            ctx.learn(e);
        }
        // Both threads hold their own event's shard, then ask for the
        // other's: holding on while waiting would deadlock (and leave the
        // two threads behind, not hang the test).
        let shared = Arc::new((geo, profile, Barrier::new(2)));
        let (done, finished) = mpsc::channel();
        for (mine, theirs) in [(a.clone(), b.key), (b, a.key)] {
            let (shared, done) = (Arc::clone(&shared), done.clone());
            std::thread::spawn(move || {
                let (geo, profile, both) = &*shared;
                let ctx = Context::new(geo, &[], &mine).with_profile(Some(profile));
                ctx.hold_profile();
                both.wait();
                let first = ctx.first_seen(theirs);
                // Still held, and still this event's profile.
                let own = ctx.habits(|h| h.first_seen()).flatten();
                done.send((first, own)).expect("the test waits");
            });
        }
        for _ in 0..2 {
            let (first, own) = finished
                .recv_timeout(Duration::from_secs(10))
                .expect("both events finish (a deadlock would not)");
            assert_eq!(first, Some(T));
            assert_eq!(own, Some(T));
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(8600), "8,600");
        assert_eq!(super::thousands(16_600_000), "16,600,000");
        assert_eq!(super::thousands(999), "999");
    }
}
