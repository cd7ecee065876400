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

use std::cell::OnceCell;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::geo::{GeoIp, Place, Point};
use crate::source::event::{AuthResult, Event};
use crate::state::profile::{Profile, Seen};
use crate::state::Swept;
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
pub struct Context<'a> {
    geo: &'a GeoIp,
    trusted: &'a [IpNet],
    point: OnceCell<Option<(Point, bool)>>,
    profile: Option<&'a Profile>,
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
            let profile = self.profile?;
            Some(profile.seen_in(self.key, self.own_network()?, self.point().as_ref()))
        })
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
                p.learn_in(
                    self.key,
                    net,
                    self.point().as_ref(),
                    event.ts,
                    event.protocol,
                    event.client.as_deref(),
                );
            }
        } else if event.kind == crate::source::event::Kind::Submission {
            p.learn_sent(self.key, event.ts);
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
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(8600), "8,600");
        assert_eq!(super::thousands(16_600_000), "16,600,000");
        assert_eq!(super::thousands(999), "999");
    }
}
