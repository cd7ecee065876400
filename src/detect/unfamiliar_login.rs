//! `unfamiliar_login`: a successful login that is new for an established
//! account on several counts at once, and what the session does next.
//!
//! Each successful login from an untrusted address is compared with the
//! account's profile ([`crate::state::profile`]) as it was before the login:
//!
//! | count | points (setting) |
//! |---|---|
//! | a country the account has never logged in from | `country_points` (2) |
//! | a network (prefix and autonomous system) it has never used | `network_points` (1) |
//! | that new network is a hosting, VPN, proxy or Tor network | `anonymous_points` (2) |
//! | a client program it has not used (when the login names one) | `client_points` (2) |
//! | an hour of the day it is never used at | `hour_points` (1) |
//! | the first login after `dormant_days` of silence | `dormant_points` (2) |
//!
//! `alert_score` (5) points alert. A traveller abroad with their own phone
//! scores 3 (country, network), 4 at an odd hour; a new phone at home 3;
//! the account's daily VPN nothing (its network is known). A login from
//! a hosting network abroad, or abroad with another client, scores 5.
//!
//! The alert opens a watch on the login's network (its prefix or its
//! autonomous system) for `watch_hours`; what attackers do next locks:
//! sending `lock_recipients` recipients from there; logging in over SMTP
//! AUTH from there when the account never had; IMAP logins from there
//! spanning `lock_imap_minutes` (a mailbox being downloaded). The owner's
//! own logins from their usual networks meanwhile change nothing.
//!
//! Only an account whose profile is `learning_days` old, with successful
//! logins on `min_active_days` days, is judged (Microsoft Entra ID
//! Protection learns an account's sign-in properties for 5 to 14 days
//! before its "unfamiliar sign-in properties" detection trusts them).

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::{ev, place_evidence, Context, Detector, DetectorConfig, Finding, Registration, Severity, Strength};
use crate::geo::Point;
use crate::section::Checks;
use crate::source::event::{AccountForm, AuthResult, Event, Kind, Protocol};
use crate::state::profile::{client_key, hour_of, Habits, Seen};
use crate::state::{Entry, KeyedBy, StateConfig, Swept, Table};
use crate::time::{format_rfc3339, human_duration, Millis, DAY, HOUR, MINUTE};

pub const NAME: &str = "unfamiliar_login";

crate::detector_section! {
    enabled = true;
    /// `[detectors.unfamiliar_login]`
    pub struct UnfamiliarConfig {
        /// Days from an account's first remembered login before its profile
        /// is trusted (Entra ID Protection learns for 5 to 14 days).
        pub learning_days: u64 = 7,
        /// Days with a successful login it must have had by then.
        pub min_active_days: u64 = 3,
        /// Points at which a login alerts.
        pub alert_score: u64 = 5,
        /// Points for a country the account has never logged in from.
        pub country_points: u64 = 2,
        /// Points for a network (prefix and autonomous system) never used.
        pub network_points: u64 = 1,
        /// Points when that new network is a hosting, VPN, proxy or Tor
        /// network (per the Anonymous-IP database).
        pub anonymous_points: u64 = 2,
        /// Points for a client program the account has not used, when the
        /// login names one and the account has used any.
        pub client_points: u64 = 2,
        /// Points for an hour of the day (UTC, with the hours either side)
        /// at which the account never logs in.
        pub hour_points: u64 = 1,
        /// Successful logins an account needs before an hour without any
        /// counts as odd.
        pub min_logins_for_hours: u64 = 20,
        /// Points for the first login after `dormant_days` of silence.
        pub dormant_points: u64 = 2,
        /// Days without a successful login that make an account dormant.
        pub dormant_days: u64 = 14,
        /// How long, in hours, the network of an unfamiliar login is
        /// watched for what the session does next.
        pub watch_hours: u64 = 12,
        /// Recipients sent from the watched network that lock (0: sending
        /// does not lock).
        pub lock_recipients: u64 = 20,
        /// IMAP logins from the watched network spanning this many minutes
        /// lock: the mailbox is being downloaded (0: they do not).
        pub lock_imap_minutes: u64 = 120,
        /// An SMTP AUTH login from the watched network by an account that
        /// had never logged in over SMTP locks.
        pub lock_first_smtp: bool = true,
    }
}

impl DetectorConfig for UnfamiliarConfig {
    fn check(&self, c: &mut Checks) {
        c.at_least("alert_score", self.alert_score, 1);
        c.at_least("dormant_days", self.dormant_days, 1);
        c.at_least("watch_hours", self.watch_hours, 1);
    }
}

/// The counts a login is new on (bits of [`Watch::axes`]).
const COUNTRY: u8 = 1;
const NETWORK: u8 = 2;
const ANONYMOUS: u8 = 4;
const CLIENT: u8 = 8;
const HOUR_OF_DAY: u8 = 16;
const DORMANT: u8 = 32;

const AXES: [(u8, &str); 6] = [
    (COUNTRY, "country"),
    (NETWORK, "network"),
    (ANONYMOUS, "anonymous_network"),
    (CLIENT, "client"),
    (HOUR_OF_DAY, "hour"),
    (DORMANT, "dormant"),
];

/// An unfamiliar login that alerted, and what followed from its network.
struct Watch {
    ip: IpAddr,
    prefix: u64,
    asn: u32,
    since: Millis,
    last: Millis,
    score: u8,
    axes: u8,
    /// Whether the account had logged in over SMTP before it.
    smtp_before: bool,
    recipients: u32,
    imap_first: Millis,
    imap_last: Millis,
    locked: bool,
}

crate::codec_fields!(Watch {
    ip,
    prefix,
    asn,
    since,
    last,
    score,
    axes,
    smtp_before,
    recipients,
    imap_first,
    imap_last,
    locked
});

impl Entry for Watch {
    fn last_seen(&self) -> Millis {
        self.since
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        self.since < horizon
    }
}

/// How a login compares with the account's profile.
struct Judged {
    axes: u8,
    score: u64,
    silent: Option<Millis>,
    usual: Map<String, Value>,
    usual_words: String,
    smtp_before: bool,
}

pub struct UnfamiliarLogin {
    cfg: UnfamiliarConfig,
    watch: Millis,
    table: Table<Watch>,
}

impl Registration for UnfamiliarLogin {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Account;
    type Config = UnfamiliarConfig;

    fn new(cfg: &UnfamiliarConfig, state: &StateConfig, _form: &AccountForm) -> Self {
        let watch = cfg.watch_hours as Millis * HOUR;
        UnfamiliarLogin {
            cfg: cfg.clone(),
            watch,
            table: Table::sparse("unfamiliar_watch", KeyedBy::Account, state.max_accounts, watch),
        }
    }
}

impl UnfamiliarLogin {
    fn points(&self, axes: u8) -> u64 {
        let c = &self.cfg;
        [
            (COUNTRY, c.country_points),
            (NETWORK, c.network_points),
            (ANONYMOUS, c.anonymous_points),
            (CLIENT, c.client_points),
            (HOUR_OF_DAY, c.hour_points),
            (DORMANT, c.dormant_points),
        ]
        .iter()
        .filter(|(a, _)| axes & a != 0)
        .map(|(_, p)| p)
        .sum()
    }

    /// Compares a login with `h` (`None`: the profile is still learning).
    fn judge(&self, h: &Habits, event: &Event, point: Option<&Point>, seen: Seen) -> Option<Judged> {
        let ts = event.ts;
        if !h.established(ts, self.cfg.learning_days, self.cfg.min_active_days) {
            return None;
        }
        let mut axes = 0u8;
        let country = point.and_then(Point::country);
        if country.is_some_and(|c| !h.networks.iter().any(|n| n.country == c)) {
            axes |= COUNTRY;
        }
        if seen.network.is_none() && seen.asn.is_none() {
            axes |= NETWORK;
            if point.is_some_and(|p| p.anonymity.any()) {
                axes |= ANONYMOUS;
            }
        }
        if let Some(c) = event.client.as_deref().and_then(client_key) {
            if !h.clients.is_empty() && !h.clients.iter().any(|x| x.hash == c) {
                axes |= CLIENT;
            }
        }
        if u64::from(h.logins()) >= self.cfg.min_logins_for_hours && h.near_hour(hour_of(ts)) == 0 {
            axes |= HOUR_OF_DAY;
        }
        let silent = (h.last() > Millis::MIN && h.last() < ts).then(|| ts - h.last());
        if silent.is_some_and(|s| s >= self.cfg.dormant_days as Millis * DAY) {
            axes |= DORMANT;
        }
        let score = self.points(axes);
        // What the account normally uses is evidence: only written for a
        // login that alerts (most logins score below it, and this is a
        // score of allocations).
        let (usual, usual_words) = if score >= self.cfg.alert_score {
            usual(h, ts)
        } else {
            (Map::new(), String::new())
        };
        Some(Judged {
            axes,
            score,
            silent,
            usual,
            usual_words,
            smtp_before: h.used(Protocol::Smtp),
        })
    }

    fn lock(&self, event: &Event, ctx: &Context<'_>, w: &Watch, what: String, out: &mut Vec<Finding>) {
        let place = ctx.place_of(w.ip);
        let mut e = Map::new();
        e.insert("unfamiliar_login".into(), place_evidence(w.ip, &place));
        e.insert("unfamiliar_login_ts".into(), ev(format_rfc3339(w.since)));
        e.insert("new".into(), ev(axis_names(w.axes)));
        e.insert("score".into(), ev(w.score));
        e.insert("then".into(), ev(&what));
        e.insert("recipients_from_there".into(), ev(w.recipients));
        if w.imap_first > Millis::MIN {
            e.insert(
                "imap_from_there_minutes".into(),
                ev((w.imap_last - w.imap_first) / MINUTE),
            );
        }
        e.insert("watch_hours".into(), ev(self.cfg.watch_hours));
        e.insert("lock_recipients".into(), ev(self.cfg.lock_recipients));
        e.insert("lock_imap_minutes".into(), ev(self.cfg.lock_imap_minutes));
        out.push(Finding {
            detector: NAME,
            account: event.account.clone(),
            key: event.key,
            strength: Strength::Lock,
            severity: Severity::Critical,
            reason: format!(
                "After a login from {} that was new for this account ({}), {what}.",
                place.describe(),
                axis_words(w.axes)
            ),
            first_event_ts: w.since,
            last_event_ts: event.ts,
            anchor_ts: w.since,
            evidence: e,
            source: Some(w.ip),
            account_since: None,
        });
    }

    /// Follows a watched network: returns what locks, if anything.
    fn follow(&self, w: &mut Watch, event: &Event) -> Option<String> {
        if w.locked {
            return None;
        }
        let c = &self.cfg;
        let what = match event.kind {
            Kind::Submission => {
                w.recipients = w.recipients.saturating_add(event.rcpt_count.unwrap_or(0));
                (c.lock_recipients > 0 && u64::from(w.recipients) >= c.lock_recipients).then(|| {
                    format!(
                        "{} recipients were sent from there within {}",
                        w.recipients,
                        human_duration(event.ts - w.since)
                    )
                })
            }
            Kind::Auth => match event.protocol {
                Some(Protocol::Smtp) if c.lock_first_smtp && !w.smtp_before => Some(
                    "it logged in over SMTP AUTH to send mail, which this account had never done"
                        .to_string(),
                ),
                Some(Protocol::Imap) => {
                    if w.imap_first == Millis::MIN {
                        w.imap_first = event.ts;
                    }
                    w.imap_first = w.imap_first.min(event.ts);
                    w.imap_last = w.imap_last.max(event.ts);
                    let span = w.imap_last - w.imap_first;
                    (c.lock_imap_minutes > 0 && span >= c.lock_imap_minutes as Millis * MINUTE).then(|| {
                        format!(
                            "it kept reading the mailbox over IMAP from there for {}",
                            human_duration(span)
                        )
                    })
                }
                _ => None,
            },
            _ => None,
        };
        w.last = w.last.max(event.ts);
        if what.is_some() {
            w.locked = true;
        }
        what
    }
}

impl Detector for UnfamiliarLogin {
    fn warm(&self, accounts: &[u64]) {
        self.table.warm_presence(accounts);
    }
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if !matches!(event.kind, Kind::Auth | Kind::Submission) || ctx.source_trusted() {
            return;
        }
        let Some(ip) = event.src_ip else { return };
        if ctx.profile().is_none() {
            return;
        }
        let success = event.is_auth(AuthResult::Success);
        if event.kind == Kind::Auth && !success {
            return;
        }
        let point = ctx.point();
        let Some(prefix) = ctx.network(ip) else { return };
        let asn = point.as_ref().map_or(0, |p| p.asn);
        // A session from a watched network: what it does next.
        let followed = self.table.with(event.key, |w| {
            let same = w.prefix == prefix || (w.asn != 0 && w.asn == asn);
            if !same || event.ts < w.since || event.ts > w.since + self.watch {
                return None;
            }
            self.follow(w, event).map(|what| (what, Watch { ..*w }))
        });
        match followed {
            Some(Some((what, w))) => return self.lock(event, ctx, &w, what, out),
            Some(None) if event.kind == Kind::Submission => return,
            _ => {}
        }
        if !success {
            return;
        }
        // Asked before: a closure given to `habits` must not ask the
        // context for the profile again (`seen` reads it too).
        let seen = ctx.seen().unwrap_or_default();
        let Some(Some(j)) = ctx.habits(|h| self.judge(h, event, point.as_ref(), seen)) else {
            return;
        };
        if j.score < self.cfg.alert_score {
            return;
        }
        // A second unfamiliar login from the network already watched
        // changes nothing (the profile has learned it by now anyway).
        let watched = self
            .table
            .with(event.key, |w| w.prefix == prefix && event.ts <= w.since + self.watch)
            .unwrap_or(false);
        if watched {
            return;
        }
        let mut w = Watch {
            ip,
            prefix,
            asn,
            since: event.ts,
            last: event.ts,
            score: j.score.min(255) as u8,
            axes: j.axes,
            smtp_before: j.smtp_before,
            recipients: 0,
            imap_first: Millis::MIN,
            imap_last: Millis::MIN,
            locked: false,
        };
        let then = self.follow(&mut w, event);
        self.table.put(event.key, Watch { ..w });
        let place = ctx.place_of(ip);
        let mut e = Map::new();
        let mut login = match place_evidence(ip, &place) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        login.insert("ts".into(), ev(format_rfc3339(event.ts)));
        if let Some(p) = event.protocol {
            login.insert("protocol".into(), ev(p.as_str()));
        }
        if let Some(c) = &event.client {
            login.insert("client".into(), ev(c));
        }
        e.insert("login".into(), Value::Object(login));
        e.insert("new".into(), ev(axis_names(j.axes)));
        e.insert("score".into(), ev(j.score));
        e.insert("alert_score".into(), ev(self.cfg.alert_score));
        if let Some(s) = j.silent {
            e.insert("silent_days".into(), ev(s / DAY));
        }
        e.insert("usual".into(), Value::Object(j.usual));
        let how = event.protocol.map_or(String::new(), |p| format!(" over {}", p.as_str().to_uppercase()));
        let reason = format!(
            "Login{how} from {} that is new for this account on {} counts ({}); {}.",
            place.describe(),
            j.axes.count_ones(),
            axis_words(j.axes),
            j.usual_words
        );
        if let Some(what) = then {
            return self.lock(event, ctx, &w, what, out);
        }
        out.push(Finding {
            detector: NAME,
            account: event.account.clone(),
            key: event.key,
            strength: Strength::Alert,
            severity: Severity::High,
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

fn axis_names(axes: u8) -> Vec<&'static str> {
    AXES.iter().filter(|(a, _)| axes & a != 0).map(|(_, n)| *n).collect()
}

/// The counts in words a support desk can read out.
fn axis_words(axes: u8) -> String {
    let words: Vec<&str> = [
        (COUNTRY, "a country it has never logged in from"),
        (NETWORK, "a network it has never used"),
        (ANONYMOUS, "a hosting, VPN or proxy network"),
        (CLIENT, "a mail program it has not used before"),
        (HOUR_OF_DAY, "an hour of the day it is never used at"),
        (DORMANT, "the first login after a long silence"),
    ]
    .iter()
    .filter(|(a, _)| axes & a != 0)
    .map(|(_, w)| *w)
    .collect();
    words.join(", ")
}

fn cc(c: [u8; 2]) -> Option<String> {
    (c != [0, 0]).then(|| String::from_utf8_lossy(&c).into_owned())
}

/// What the account normally uses, as evidence and in words.
fn usual(h: &Habits, ts: Millis) -> (Map<String, Value>, String) {
    let mut countries: Vec<String> = h.networks.iter().filter_map(|n| cc(n.country)).collect();
    countries.sort();
    countries.dedup();
    let mut asns: Vec<u32> = h.networks.iter().map(|n| n.asn).filter(|&a| a != 0).collect();
    asns.sort_unstable();
    asns.dedup();
    let protocols: Vec<&str> = [
        Protocol::Smtp,
        Protocol::Imap,
        Protocol::Pop3,
        Protocol::Webmail,
        Protocol::Other,
    ]
    .into_iter()
    .filter(|p| h.used(*p))
    .map(Protocol::as_str)
    .collect();
    let hours: Vec<usize> = (0..24).filter(|&i| h.hours[i] > 0).collect();
    let mut m = Map::new();
    m.insert("countries".into(), ev(&countries));
    m.insert("asns".into(), ev(&asns));
    m.insert("networks".into(), ev(h.networks.len()));
    m.insert("clients".into(), ev(h.clients.len()));
    m.insert("protocols".into(), ev(&protocols));
    m.insert("hours_utc".into(), ev(&hours));
    m.insert("active_days".into(), ev(h.days));
    m.insert("profile_since".into(), ev(format_rfc3339(h.since())));
    m.insert("last_login".into(), ev(format_rfc3339(h.last())));
    if h.sent_days > 0 {
        m.insert("days_with_mail_sent".into(), ev(h.sent_days));
    }
    let from = if countries.is_empty() {
        "an unknown place".to_string()
    } else {
        countries.join(", ")
    };
    let nets = if asns.is_empty() {
        String::new()
    } else {
        format!(
            " on {}",
            asns.iter().map(|a| format!("AS{a}")).collect::<Vec<_>>().join(", ")
        )
    };
    let with = if protocols.is_empty() {
        String::new()
    } else {
        format!(" over {}", protocols.join(", ").to_uppercase())
    };
    let clients = match h.clients.len() {
        0 => String::new(),
        1 => " with one mail program".to_string(),
        n => format!(" with {n} mail programs"),
    };
    let last = if h.last() < ts {
        format!(", last {} before", human_duration(ts - h.last()))
    } else {
        String::new()
    };
    let words = format!("it normally logs in from {from}{nets}{with}{clients}{last}");
    (m, words)
}
