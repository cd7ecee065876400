//! `credwatch replay --report FILE.html`: one self-contained page of a run
//! (contract §7), for whoever decides whether to trust credwatch with
//! locking customers' mailboxes.
//!
//! A [`Collector`] is fed as the run goes: every judged event's time and
//! kind (for the timeline: one counter per hour, nothing per account) and
//! every action and joined finding (few: findings are rare next to events).
//! [`Collector::write`] then renders the page ([`html`]) with its maps
//! ([`map`]); nothing on the page is fetched when it is opened.

mod charts;
mod hours;
mod html;
pub mod map;
mod more;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde_json::Value;

use crate::source::event::Kind;
use crate::time::{parse_rfc3339, Millis};

pub use hours::{Hours, Series};
pub use html::render;

/// One thing that happened in an incident, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub ts: Millis,
    pub detector: String,
    pub reason: String,
    /// `lock`, `alert` or `unlock` when it was sent as an action; `None`
    /// for a finding that joined the incident after its action.
    pub action: Option<String>,
    pub severity: Option<String>,
    pub downgraded_by: Option<String>,
    pub dry_run: bool,
}

/// Where a login or a message came from, as the evidence gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spot {
    pub lat: f64,
    pub lon: f64,
    pub label: String,
    pub ip: String,
    pub ts: Option<Millis>,
    pub what: &'static str,
}

/// An impossible journey: from one login to the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    pub from: Spot,
    pub to: Spot,
    pub km: f64,
    pub kmh: f64,
    pub minutes: f64,
}

/// A message the account sent, as the evidence gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub ts: Option<Millis>,
    pub header_from: String,
    pub mail_from: String,
    pub rcpt_count: u64,
    pub from: Option<String>,
}

/// One account's incident, gathered from its actions and joined findings.
#[derive(Debug, Clone, Default)]
pub struct Incident {
    pub id: String,
    pub account: String,
    pub findings: Vec<Finding>,
    pub spots: Vec<Spot>,
    pub journeys: Vec<Journey>,
    pub messages: Vec<Message>,
    /// Addresses sent as that the account does not own.
    pub senders: BTreeSet<String>,
    /// The most bounces in an hour the evidence reported.
    pub bounces: Option<u64>,
    /// Sources that failed logins (bursts) or sprayed.
    pub sources: BTreeSet<String>,
    pub sprayer: Option<String>,
}

impl Incident {
    pub fn first_ts(&self) -> Millis {
        self.findings.iter().map(|f| f.ts).min().unwrap_or(0)
    }
    pub fn locked(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.action.as_deref() == Some("lock"))
    }
    pub fn unlocked(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.action.as_deref() == Some("unlock"))
    }
    /// The detectors, in the order they first spoke.
    pub fn detectors(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in &self.findings {
            if f.action.as_deref() != Some("unlock") && !out.contains(&f.detector.as_str()) {
                out.push(&f.detector);
            }
        }
        out
    }
    /// The highest severity of its actions.
    pub fn severity(&self) -> &str {
        const ORDER: [&str; 4] = ["low", "medium", "high", "critical"];
        self.findings
            .iter()
            .filter_map(|f| f.severity.as_deref())
            .max_by_key(|s| ORDER.iter().position(|o| o == s))
            .unwrap_or("low")
    }
    /// What was done, as the page's filter keys: `lock` or `alert-only`,
    /// then `dry-run` and `unlock` when they apply.
    pub fn action_keys(&self) -> String {
        let mut keys = String::from(if self.locked() { "lock" } else { "alert-only" });
        if self.dry_run_lock() {
            keys.push_str(" dry-run");
        }
        if self.unlocked() {
            keys.push_str(" unlock");
        }
        keys
    }

    /// Would a lock have been sent without dry run?
    pub fn dry_run_lock(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.downgraded_by.as_deref() == Some("dry_run"))
    }
}

/// What the run knew of itself, for the summary.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// What was replayed (file names), for the title.
    pub source: String,
    pub lines: u64,
    pub rejects: Vec<(String, u64)>,
    pub accounts_seen: Option<u64>,
    /// Per detector: name, dry run, findings, locks, alerts, joined.
    pub detectors: Vec<DetectorFacts>,
    pub breaker_opened: Option<u64>,
    pub breaker_open: Option<bool>,
    pub elapsed_secs: Option<f64>,
    /// When the page was written (epoch ms).
    pub written_at: Millis,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DetectorFacts {
    pub name: String,
    pub dry_run: bool,
    pub findings: u64,
    pub locks: u64,
    pub alerts: u64,
    pub joined: u64,
}

/// Gathers a run for its report.
#[derive(Debug, Default)]
pub struct Collector {
    pub hours: Hours,
    incidents: Vec<Incident>,
    by_id: HashMap<String, usize>,
    /// Actions that could not be read (a demo reading a topic back).
    pub unreadable: u64,
}

impl Collector {
    pub fn new() -> Collector {
        Collector::default()
    }

    #[inline]
    pub fn event(&mut self, ts: Millis, kind: Kind) {
        self.hours.add(ts, kind);
    }

    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    fn incident(&mut self, id: &str, account: &str) -> &mut Incident {
        let i = match self.by_id.get(id) {
            Some(&i) => i,
            None => {
                self.incidents.push(Incident {
                    id: id.to_string(),
                    account: account.to_string(),
                    ..Incident::default()
                });
                self.by_id.insert(id.to_string(), self.incidents.len() - 1);
                self.incidents.len() - 1
            }
        };
        &mut self.incidents[i]
    }

    /// A finding that joined an open incident, judged from an event at `ts`.
    pub fn joined(
        &mut self,
        incident: &str,
        account: &str,
        detector: &str,
        reason: &str,
        ts: Millis,
    ) {
        let f = Finding {
            ts,
            detector: detector.to_string(),
            reason: reason.to_string(),
            action: None,
            severity: None,
            downgraded_by: None,
            dry_run: false,
        };
        let inc = self.incident(incident, account);
        if !inc.findings.contains(&f) {
            inc.findings.push(f);
        }
    }

    /// An action (contract §2) as sent.
    pub fn action(&mut self, a: &crate::action::Action) {
        match serde_json::to_value(a) {
            Ok(v) => self.action_json(&v),
            Err(_) => self.unreadable += 1,
        }
    }

    /// An action as JSON (the demo reads them back from the topic).
    pub fn action_json(&mut self, a: &Value) {
        let d = &a["data"];
        let (Some(id), Some(account)) = (d["incident"].as_str(), d["account"].as_str()) else {
            self.unreadable += 1;
            return;
        };
        let text = |v: &Value| v.as_str().map(str::to_string);
        let ts = d["last_event_ts"]
            .as_str()
            .and_then(parse_rfc3339)
            .unwrap_or(0);
        let detector = text(&d["detector"]).unwrap_or_default();
        let ev = &d["evidence"];
        let inc = self.incident(id, account);
        // What happened before, as the action told it: findings that joined
        // without this collector seeing them (a demo reading the topic).
        if let Some(story) = ev["incident_story"].as_array() {
            for s in story {
                let ts = s["ts"].as_str().and_then(parse_rfc3339).unwrap_or(0);
                let (det, reason) = (text(&s["detector"]), text(&s["reason"]));
                let (Some(det), Some(reason)) = (det, reason) else {
                    continue;
                };
                let seen = inc
                    .findings
                    .iter()
                    .any(|f| f.detector == det && f.reason == reason);
                if !seen {
                    inc.findings.push(Finding {
                        ts,
                        detector: det,
                        reason,
                        action: None,
                        severity: None,
                        downgraded_by: None,
                        dry_run: false,
                    });
                }
            }
        }
        inc.findings.push(Finding {
            ts,
            detector: detector.clone(),
            reason: text(&d["reason"]).unwrap_or_default(),
            action: text(&d["action"]),
            severity: text(&d["severity"]),
            downgraded_by: text(&d["downgraded_by"]),
            dry_run: d["dry_run"].as_bool().unwrap_or(false),
        });
        inc.findings.sort_by_key(|f| f.ts);
        gather_evidence(inc, &detector, ev);
    }

    /// Renders the page into `out`; `geo` places the sources that sprayed.
    pub fn write(
        &self,
        facts: &Facts,
        geo: Option<&crate::geo::GeoIp>,
        out: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        let page = render(self, facts, geo);
        out.write_all(page.as_bytes())
    }
}

fn spot(v: &Value, what: &'static str) -> Option<Spot> {
    Some(Spot {
        lat: v["lat"].as_f64()?,
        lon: v["lon"].as_f64()?,
        label: v["place"]
            .as_str()
            .or(v["country"].as_str())
            .unwrap_or("unknown place")
            .to_string(),
        ip: v["ip"].as_str().unwrap_or("").to_string(),
        ts: v["ts"].as_str().and_then(parse_rfc3339),
        what,
    })
}

fn push_spot(inc: &mut Incident, s: Spot) {
    if !inc.spots.iter().any(|o| o.ip == s.ip && o.ts == s.ts) {
        inc.spots.push(s);
    }
}

/// The strings of a JSON array (none if it is no array).
fn strings(v: &Value) -> impl Iterator<Item = String> + '_ {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str())
        .map(str::to_string)
}

/// Places, journeys, messages, bounces and sources out of one action's
/// evidence (whatever the detector: the keys are the evidence's own).
fn gather_evidence(inc: &mut Incident, detector: &str, ev: &Value) {
    let login = spot(&ev["login"], "login");
    let previous = spot(&ev["previous_login"], "login");
    if detector == "impossible_travel" {
        if let (Some(from), Some(to)) = (&previous, &login) {
            let j = Journey {
                from: from.clone(),
                to: to.clone(),
                km: ev["distance_km"].as_f64().unwrap_or(0.0),
                kmh: ev["speed_kmh"].as_f64().unwrap_or(0.0),
                minutes: ev["elapsed_seconds"].as_f64().unwrap_or(0.0) / 60.0,
            };
            if !inc.journeys.contains(&j) {
                inc.journeys.push(j);
            }
        }
    }
    for s in [previous, login].into_iter().flatten() {
        push_spot(inc, s);
    }
    let m = &ev["message"];
    if m.is_object() {
        let from = spot(&m["from"], "sent from");
        let msg = Message {
            ts: m["ts"].as_str().and_then(parse_rfc3339),
            header_from: m["header_from"].as_str().unwrap_or("").to_string(),
            mail_from: m["mail_from"].as_str().unwrap_or("").to_string(),
            rcpt_count: m["rcpt_count"].as_u64().unwrap_or(0),
            from: from.as_ref().map(|s| format!("{} ({})", s.label, s.ip)),
        };
        if !inc.messages.contains(&msg) {
            inc.messages.push(msg);
        }
        if let Some(s) = from {
            push_spot(inc, s);
        }
    }
    inc.senders.extend(strings(&ev["senders"]));
    if let Some(b) = ev["bounces_last_hour"].as_u64().filter(|b| *b > 0) {
        inc.bounces = Some(inc.bounces.unwrap_or(0).max(b));
    }
    inc.sources.extend(strings(&ev["sources"]));
    if let Some(ip) = ev["source_ip"].as_str() {
        inc.sources.insert(ip.to_string());
        if detector == "password_spray" {
            inc.sprayer = Some(ip.to_string());
        }
    }
}

/// Per-detector counts worked out from the incidents, for a run that did
/// not count them itself (the demo).
pub fn detector_facts(incidents: &[Incident]) -> Vec<DetectorFacts> {
    let mut m: BTreeMap<&str, DetectorFacts> = BTreeMap::new();
    for inc in incidents {
        for f in &inc.findings {
            if f.action.as_deref() == Some("unlock") {
                continue;
            }
            let e = m.entry(&f.detector).or_insert_with(|| DetectorFacts {
                name: f.detector.clone(),
                ..Default::default()
            });
            e.findings += 1;
            e.dry_run |= f.dry_run;
            match f.action.as_deref() {
                Some("lock") => e.locks += 1,
                Some("alert") => e.alerts += 1,
                _ => e.joined += 1,
            }
        }
    }
    m.into_values().collect()
}

/// Distinct source addresses placed at most (GeoIP lookups when the page
/// is written; the rest stay addresses on their cards).
const PLACED_SOURCES: usize = 20_000;

/// The places of the incidents' sources (addresses that failed to log in
/// or sprayed), looked up in the GeoIP databases when the page is written:
/// the evidence names them as addresses only.
#[derive(Default)]
pub(crate) struct Placed(HashMap<String, (f64, f64, String)>);

impl Placed {
    pub(crate) fn look_up(incidents: &[Incident], geo: Option<&crate::geo::GeoIp>) -> Placed {
        let mut placed = HashMap::new();
        let Some(geo) = geo else {
            return Placed(placed);
        };
        'all: for inc in incidents {
            for s in &inc.sources {
                if placed.len() >= PLACED_SOURCES {
                    break 'all;
                }
                if placed.contains_key(s) {
                    continue;
                }
                let Ok(ip) = s.parse::<IpAddr>() else {
                    continue;
                };
                let place = geo.place(ip);
                if let Some((lat, lon)) = place.coords {
                    placed.insert(
                        s.clone(),
                        (f64::from(lat), f64::from(lon), place.describe()),
                    );
                }
            }
        }
        Placed(placed)
    }

    /// Where an address is, if the databases know.
    pub(crate) fn get(&self, ip: &str) -> Option<&(f64, f64, String)> {
        self.0.get(ip)
    }

    /// An incident's sources as places: `sprayed from` for the address that
    /// sprayed, `failed logins from` for the others.
    pub(crate) fn spots(&self, inc: &Incident) -> Vec<Spot> {
        inc.sources
            .iter()
            .filter_map(|ip| {
                let (lat, lon, label) = self.0.get(ip)?;
                Some(Spot {
                    lat: *lat,
                    lon: *lon,
                    label: label.clone(),
                    ip: ip.clone(),
                    ts: None,
                    what: if inc.sprayer.as_deref() == Some(ip.as_str()) {
                        "sprayed from"
                    } else {
                        "failed logins from"
                    },
                })
            })
            .collect()
    }
}

impl Facts {
    /// The facts of a `replay`, from its summary.
    pub fn of_replay(s: &crate::cli::replay::Summary, inputs: &[String], now: Millis) -> Facts {
        Facts {
            source: inputs
                .iter()
                .map(|i| {
                    if i == "-" {
                        "standard input"
                    } else {
                        i.as_str()
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            lines: s.lines,
            rejects: s
                .rejects
                .iter()
                .map(|(r, n)| (r.as_str().to_string(), *n))
                .collect(),
            accounts_seen: Some(s.accounts_tracked as u64),
            detectors: s
                .detectors
                .iter()
                .map(|d| DetectorFacts {
                    name: d.name.to_string(),
                    dry_run: d.dry_run,
                    findings: d.findings,
                    locks: d.locks,
                    alerts: d.alerts,
                    joined: d.enriched,
                })
                .collect(),
            breaker_opened: Some(s.breaker_opened),
            breaker_open: Some(s.breaker_open),
            elapsed_secs: Some(s.elapsed.as_secs_f64()),
            written_at: now,
        }
    }
}
