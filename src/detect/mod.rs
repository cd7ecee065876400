//! Detectors: an event in, zero or more findings out.
//!
//! A detector is one file implementing [`Detector`] and one line in
//! [`build`]. It keeps its own bounded state ([`crate::state::Table`]) and
//! judges only; whether a finding locks, alerts or joins an incident already
//! open is the policy's business ([`crate::policy`]).

pub mod backscatter;
pub mod failed_login_burst;
pub mod impossible_travel;
pub mod password_spray;
pub mod send_volume;
pub mod sender_mismatch;

use std::cell::OnceCell;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Settings;
use crate::geo::{GeoIp, Place, Point};
use crate::source::event::Event;
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
    pub account: Box<str>,
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
}

/// What a detector may ask about the event besides the event itself.
pub struct Context<'a> {
    geo: &'a GeoIp,
    trusted: &'a [IpNet],
    point: OnceCell<Option<(Point, bool)>>,
    ip: Option<IpAddr>,
    ts: Millis,
}

impl<'a> Context<'a> {
    pub fn new(geo: &'a GeoIp, trusted: &'a [IpNet], event: &Event) -> Self {
        Context {
            geo,
            trusted,
            point: OnceCell::new(),
            ip: event.src_ip,
            ts: event.ts,
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

    /// True when the event's source is in `policy.trusted_networks`.
    pub fn source_trusted(&self) -> bool {
        self.ip.is_some_and(|ip| is_trusted(self.trusted, ip))
    }
}

pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// A detector.
pub trait Detector: Send + Sync {
    /// The contract's name (`impossible_travel`, ...).
    fn name(&self) -> &'static str;
    /// Judges one event, pushing any findings to `out`.
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>);
    /// This detector's tables, which the engine sweeps (each by its own
    /// time-to-live) and reports on.
    fn state(&self) -> Vec<&dyn Swept> {
        Vec::new()
    }
}

/// Common switches every `[detectors.<name>]` table has.
pub trait Switches {
    fn enabled(&self) -> bool;
    fn dry_run(&self) -> bool;
}

/// Implements [`Switches`] for a config struct with `enabled` and `dry_run`.
macro_rules! switches {
    ($config:ty) => {
        impl $crate::detect::Switches for $config {
            fn enabled(&self) -> bool {
                self.enabled
            }
            fn dry_run(&self) -> bool {
                self.dry_run
            }
        }
    };
}
pub(crate) use switches;

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

/// A detector with its switches.
pub struct Registered {
    pub detector: Box<dyn Detector>,
    pub dry_run: bool,
}

/// Every enabled detector. Adding a detector is one file and one line here
/// (plus its `[detectors.<name>]` table in the config).
pub fn build(settings: &Settings) -> Vec<Registered> {
    let c = &settings.config;
    let mut all = Vec::new();
    let mut add = |switches: &dyn Switches, make: &dyn Fn() -> Box<dyn Detector>| {
        if switches.enabled() {
            all.push(Registered {
                detector: make(),
                dry_run: switches.dry_run(),
            });
        }
    };
    let d = &c.detectors;
    add(&d.impossible_travel, &|| {
        Box::new(impossible_travel::ImpossibleTravel::new(
            &d.impossible_travel,
            &c.state,
        ))
    });
    add(&d.failed_login_burst, &|| {
        Box::new(failed_login_burst::FailedLoginBurst::new(
            &d.failed_login_burst,
            &c.state,
        ))
    });
    add(&d.password_spray, &|| {
        Box::new(password_spray::PasswordSpray::new(
            &d.password_spray,
            &c.state,
        ))
    });
    add(&d.send_volume, &|| {
        Box::new(send_volume::SendVolume::new(&d.send_volume, &c.state))
    });
    add(&d.sender_mismatch, &|| {
        Box::new(sender_mismatch::SenderMismatch::new(
            &d.sender_mismatch,
            &c.state,
        ))
    });
    add(&d.backscatter, &|| {
        Box::new(backscatter::Backscatter::new(&d.backscatter, &c.state))
    });
    all
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
