//! `impossible_travel`: two successful logins of one account farther apart
//! than anyone can travel in the time between them.
//!
//! Each account keeps its last few successful logins with their place, in
//! time order. A new login is compared with its neighbours in time (the one
//! before it, and, when events arrive out of order, the one after it). The
//! distance counted is the great-circle distance minus both places' accuracy
//! radii, so GeoIP's uncertainty never adds distance. Logins from trusted
//! networks are ignored; logins from anonymous or hosting networks (when the
//! Anonymous-IP database is configured) are kept as evidence but never
//! measured, because their place is the provider's, not the person's.

use serde_json::Map;

use super::{DetectorConfig, Registration, ev, place_evidence, thousands, Context, Detector, Finding, Severity, Strength};
use crate::section::Checks;
use crate::geo::distance_km;
use crate::source::event::{AuthResult, Event};
use crate::source::event::AccountForm;
use crate::state::profile::Login;
use crate::state::{insert_sorted, prune_sorted, KeyedBy, StateConfig, Swept};
use crate::time::{format_rfc3339, human_duration, Millis, HOUR, SECOND};

pub const NAME: &str = "impossible_travel";

crate::detector_section! {
    enabled = true;
    /// `[detectors.impossible_travel]`
    pub struct TravelConfig {
        /// Fastest plausible travel in km/h: MozDef's geomodel uses 1000
        /// km/h; Elastic's rule uses 800 km/h, which a long-haul flight with
        /// a tail wind can approach.
        pub max_speed_kmh: f64 = 1000.0,
        /// Distances (after subtracting accuracy radii) below this never
        /// fire, so GeoIP noise between nearby cities is not travel
        /// (Elastic's impossible-travel rule uses 500 km).
        pub min_distance_km: f64 = 500.0,
        /// Accuracy radius assumed when the database gives none.
        pub default_accuracy_km: f64 = 100.0,
        /// How long a login is remembered, in seconds: at 1000 km/h, 20 h
        /// reach the antipode, so logins older than a day cannot prove
        /// anything.
        pub history_secs: u64 = 86_400,
        /// Logins remembered per account (the newest win).
        pub max_logins: usize = 4,
    }
}

impl DetectorConfig for TravelConfig {
    fn check(&self, c: &mut Checks) {
        c.number_at_least("max_speed_kmh", self.max_speed_kmh, 0.0, true);
        c.number_at_least("min_distance_km", self.min_distance_km, 0.0, false);
        c.number_at_least("default_accuracy_km", self.default_accuracy_km, 0.0, false);
        c.at_least("history_secs", self.history_secs, 1);
        c.at_least("max_logins", self.max_logins as u64, 2);
    }
}

/// Its state is in the account's profile ([`Login`], kept with the rest
/// of what the account did, so that a login reaches one table).
pub struct ImpossibleTravel {
    cfg: TravelConfig,
    /// How long a login is remembered, and how long past that it may still
    /// be there (the allowed disorder, as a table's sweep would leave it).
    history: Millis,
    slack: Millis,
    cap: usize,
}

/// A pair of logins too far apart for the time between them.
struct Jump {
    from: Login,
    to: Login,
    distance: f64,
    effective: f64,
    speed: f64,
}

impl ImpossibleTravel {
    fn radius(&self, l: &Login) -> f64 {
        if l.accuracy_km == 0 {
            self.cfg.default_accuracy_km
        } else {
            f64::from(l.accuracy_km)
        }
    }

    fn judge(&self, a: &Login, b: &Login) -> Option<Jump> {
        if a.ip == b.ip {
            return None;
        }
        let (from, to) = if a.ts <= b.ts { (*a, *b) } else { (*b, *a) };
        let distance = distance_km((from.lat, from.lon), (to.lat, to.lon));
        let effective = (distance - self.radius(&from) - self.radius(&to)).max(0.0);
        if effective < self.cfg.min_distance_km || effective == 0.0 {
            return None;
        }
        let hours = ((to.ts - from.ts).max(SECOND)) as f64 / HOUR as f64;
        let speed = effective / hours;
        (speed > self.cfg.max_speed_kmh).then_some(Jump {
            from,
            to,
            distance,
            effective,
            speed,
        })
    }

    fn finding(&self, event: &Event, ctx: &Context<'_>, j: Jump, anonymous: Vec<Login>) -> Finding {
        let from_place = ctx.place_of(j.from.ip);
        let to_place = ctx.place_of(j.to.ip);
        let elapsed = j.to.ts - j.from.ts;
        let round = |x: f64| {
            if x >= 1000.0 {
                (x / 100.0).round() * 100.0
            } else {
                (x / 10.0).round() * 10.0
            }
        };
        let reason = format!(
            "Login from {} {} km from {} {} after the previous one ({} km/h).",
            to_place.describe(),
            thousands(round(j.distance) as u64),
            from_place.describe(),
            human_duration(elapsed),
            thousands(round(j.speed) as u64),
        );
        let mut e = Map::new();
        let mut prev = place_evidence(j.from.ip, &from_place);
        prev["ts"] = ev(format_rfc3339(j.from.ts));
        let mut cur = place_evidence(j.to.ip, &to_place);
        cur["ts"] = ev(format_rfc3339(j.to.ts));
        if j.to.ts == event.ts && j.to.ip == event.src_ip.unwrap_or(j.to.ip) {
            if let Some(p) = event.protocol {
                cur["protocol"] = ev(p.as_str());
            }
            if let Some(c) = &event.client {
                cur["client"] = ev(c);
            }
        }
        e.insert("previous_login".into(), prev);
        e.insert("login".into(), cur);
        e.insert("distance_km".into(), ev(j.distance.round()));
        e.insert("distance_after_accuracy_km".into(), ev(j.effective.round()));
        e.insert("elapsed_seconds".into(), ev(elapsed / SECOND));
        e.insert("speed_kmh".into(), ev(j.speed.round()));
        e.insert("max_speed_kmh".into(), ev(self.cfg.max_speed_kmh));
        e.insert("min_distance_km".into(), ev(self.cfg.min_distance_km));
        if !anonymous.is_empty() {
            let list: Vec<_> = anonymous
                .iter()
                .map(|l| {
                    let mut v = place_evidence(l.ip, &ctx.place_of(l.ip));
                    v["ts"] = ev(format_rfc3339(l.ts));
                    v
                })
                .collect();
            e.insert("anonymous_logins".into(), ev(list));
        }
        let severity =
            if j.speed > 4.0 * self.cfg.max_speed_kmh && from_place.country != to_place.country {
                Severity::High
            } else {
                Severity::Medium
            };
        Finding {
            detector: NAME,
            account: event.account.clone(),
            key: event.key,
            strength: Strength::Lock,
            severity,
            reason,
            first_event_ts: j.from.ts,
            last_event_ts: j.to.ts,
            anchor_ts: j.from.ts,
            evidence: e,
            source: Some(j.to.ip),
            account_since: None,
        }
    }
}

impl Registration for ImpossibleTravel {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Account;
    type Config = TravelConfig;

    fn new(cfg: &TravelConfig, state: &StateConfig, _form: &AccountForm) -> Self {
        ImpossibleTravel {
            cfg: cfg.clone(),
            history: cfg.history_secs as Millis * SECOND,
            slack: state.max_disorder_secs as Millis * SECOND,
            cap: cfg.max_logins.min(state.max_entries_per_key).max(2),
        }
    }
}

impl Detector for ImpossibleTravel {
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if !event.is_auth(AuthResult::Success) || ctx.source_trusted() {
            return;
        }
        let Some(ip) = event.src_ip else { return };
        // The source stage has no profiles, and this detector is keyed by
        // account: it never runs there.
        if ctx.profile().is_none() {
            return;
        }
        // What a sweep of a table of logins `history` long would have
        // removed by now goes first (the profile keeps its entry longer).
        let stale = event.ts - self.history - self.slack;
        // The same address as the account's latest login (the common case:
        // a mail client polling from home) is the same place: only its time
        // moves, and no GeoIP lookup is needed.
        let repeat = ctx.habits(|p| {
            let h = &mut p.logins;
            prune_sorted(h, stale, |l| l.ts);
            match h.last_mut() {
                Some(last) if last.ip == ip && event.ts >= last.ts => {
                    last.ts = event.ts;
                    true
                }
                _ => false,
            }
        });
        if repeat == Some(true) {
            return;
        }
        let Some(place) = ctx.point() else { return };
        let Some((lat, lon)) = place.coords else {
            return; // an unknown place proves nothing
        };
        let login = Login {
            ts: event.ts,
            ip,
            lat,
            lon,
            accuracy_km: place.accuracy_km,
            anonymous: place.anonymity.any(),
        };
        let horizon = event.ts - self.history;
        let cap = self.cap;
        let found = ctx.habits_or_new(|p| {
            let h = &mut p.logins;
            let at = insert_sorted(h, login, cap, |l| l.ts);
            if login.anonymous {
                return None;
            }
            let measured = |l: &&Login| !l.anonymous && l.ts >= horizon;
            let before = h[..at].iter().rev().find(measured);
            let after = h[at + 1..].iter().find(measured);
            let jump = before
                .and_then(|b| self.judge(b, &login))
                .or_else(|| after.and_then(|a| self.judge(&login, a)))?;
            let anonymous: Vec<Login> = h.iter().filter(|l| l.anonymous).copied().collect();
            // The pair is settled: forget the older login so the same
            // journey is not reported again by the next login.
            let keep_from = h.iter().position(|l| l.ts >= jump.to.ts && l.ip == jump.to.ip);
            if let Some(k) = keep_from {
                h.drain(..k);
            }
            Some((jump, anonymous))
        });
        if let Some(Some((jump, anonymous))) = found {
            out.push(self.finding(event, ctx, jump, anonymous));
        }
    }

    fn state(&self) -> Vec<&dyn Swept> {
        Vec::new() // in the profile
    }
}

#[cfg(all(test, feature = "demo"))]
mod findings {
    use super::*;
    use crate::demo::sample::auth;
    use crate::detect::testing::{ip, Bench, T0};
    use crate::time::MINUTE;

    fn ok(ts: Millis, city: &str) -> crate::demo::sample::Line {
        auth(ts, "alice@example.jp", "imap", ip(city, 7), true, Some("c0ffee00"))
    }

    #[test]
    fn every_impossible_jump_is_a_finding_even_the_one_an_incident_would_absorb() {
        let b = Bench::new();
        let d = Bench::detector::<ImpossibleTravel>("");
        let f = b.observe(
            &d,
            &[
                ok(T0, "London"),
                ok(T0 + 30 * MINUTE, "Sydney"),
                ok(T0 + 60 * MINUTE, "London"),
            ],
        );
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|f| f.strength == Strength::Lock && f.detector == NAME));
        assert!(f[0].reason.contains("Sydney"), "{}", f[0].reason);
        assert_eq!(f[0].first_event_ts, T0);
        assert_eq!(f[1].last_event_ts, T0 + 60 * MINUTE);
    }

    #[test]
    fn a_long_haul_flight_and_nearby_towns_are_not_travel() {
        let b = Bench::new();
        let d = Bench::detector::<ImpossibleTravel>("");
        let f = b.observe(
            &d,
            &[
                ok(T0, "Tokyo"),
                ok(T0 + 14 * HOUR, "London"),
                ok(T0 + 15 * HOUR, "Boxford"),
            ],
        );
        assert!(f.is_empty(), "{f:?}");
    }
}
