//! `send_volume`: an account sending to far more recipients than it
//! normally does — the spam run after a password was phished, or malware on
//! the customer's own PC sending from the customer's usual address (this
//! detector does not depend on where the login came from).
//!
//! Per account it keeps the recipients of the current and the previous hour
//! and a *decayed peak* of its past hours: the largest hourly count it has
//! sent, halving every `baseline_half_life_hours`. A peak (not an average)
//! is what lets the account that sends a newsletter every morning go on
//! doing so. A finding needs the last hour's recipients to exceed
//! `multiple` × that peak *and* the absolute `floor`, so a quiet account
//! sending one 30-person invitation is fine; the hourly and daily `ceiling`s
//! fire whatever the history.
//!
//! The same entry counts the bounces delivered to the account. Bounces are
//! sent by third parties (anyone can forge one), so they never decide a
//! lock: they raise the severity of what the account's own sending already
//! shows. A surge against the account's own habits is an alert, a `high`
//! one with bounces coming back; a ceiling locks, `critical` with bounces.

use serde_json::Map;

use super::{DetectorConfig, Registration, ev, message_evidence, thousands, Context, Detector, Finding, Severity, Strength};
use crate::section::Checks;
use crate::source::event::{Event, Kind};
use crate::source::event::AccountForm;
use crate::state::{KeyedBy, StateConfig, Entry, HourCount, Swept, Table};
use crate::time::{format_rfc3339, Millis, HOUR};

pub const NAME: &str = "send_volume";

crate::detector_section! {
    enabled = true;
    /// `[detectors.send_volume]`
    pub struct SendVolumeConfig {
        /// The last hour's recipients must exceed this many times the
        /// account's decayed peak hour.
        pub multiple: f64 = 10.0,
        /// ... and at least this many recipients in the last hour: rspamd's
        /// ratelimit examples allow a user about 100 messages an hour; an
        /// invitation to 30 people stays well below.
        pub floor: u32 = 100,
        /// Recipients in the last hour that fire whatever the history (a
        /// tenth of the daily ceiling in one hour).
        pub hourly_ceiling: u32 = 1000,
        /// Recipients in a UTC day that fire whatever the history: Exchange
        /// Online's recipient rate limit per mailbox and day.
        pub daily_ceiling: u32 = 10_000,
        /// How fast the remembered peak fades, in hours (a week: a weekly
        /// newsletter still counts as normal a week later).
        pub baseline_half_life_hours: f64 = 168.0,
        /// How long an account's sending is remembered after its last
        /// message, in hours (two weeks).
        pub history_hours: u64 = 336,
        /// Bounces to the account in the last hour that raise a send
        /// surge's severity (never its action: bounces can be forged).
        pub bounces_for_lock: u32 = 20,
    }
}

impl DetectorConfig for SendVolumeConfig {
    fn check(&self, c: &mut Checks) {
        c.number_at_least("multiple", self.multiple, 1.0, false);
        c.at_least("floor", self.floor.into(), 1);
        c.at_least(
            "hourly_ceiling",
            self.hourly_ceiling.into(),
            u64::from(self.floor) + 1,
        );
        c.at_least(
            "daily_ceiling",
            self.daily_ceiling.into(),
            self.hourly_ceiling.into(),
        );
        c.number_at_least(
            "baseline_half_life_hours",
            self.baseline_half_life_hours,
            0.0,
            true,
        );
        c.at_least("history_hours", self.history_hours, 1);
        c.at_least("bounces_for_lock", self.bounces_for_lock.into(), 1);
    }
}

/// One account's sending, in whole UTC hours of event time.
struct Sending {
    sent: HourCount,
    bounces: HourCount,
    /// Decayed peak of completed hours.
    peak: f32,
    day: i64,
    today: u32,
    /// Hour of the last finding, and whether it was strong enough to lock:
    /// a surge is reported once an hour, and again if it becomes a lock.
    reported_hour: i64,
    reported_lock: bool,
    first_ts: Millis,
    last_ts: Millis,
}

impl Sending {
    fn new(ts: Millis) -> Sending {
        Sending {
            sent: HourCount::default(),
            bounces: HourCount::default(),
            peak: 0.0,
            day: ts.div_euclid(24 * HOUR),
            today: 0,
            reported_hour: i64::MIN,
            reported_lock: false,
            first_ts: ts,
            last_ts: ts,
        }
    }

    /// Moves to the hour of `ts`: the hour just completed joins the (one
    /// hour older) peak, and empty hours after it only let the peak fade.
    fn roll(&mut self, ts: Millis, decay_per_hour: f32) {
        let gap = self.sent.hours_to(ts);
        if let Some(done) = self.sent.roll(ts) {
            let fade = decay_per_hour.powi((gap - 1).clamp(0, 1 << 20) as i32);
            self.peak = (self.peak * decay_per_hour).max(done as f32) * fade;
            let day = ts.div_euclid(24 * HOUR);
            if day != self.day {
                self.day = day;
                self.today = 0;
            }
        }
        self.bounces.roll(ts);
        self.last_ts = self.last_ts.max(ts);
    }
}

crate::codec_fields!(Sending { sent, bounces, peak, day, today, reported_hour, reported_lock, first_ts, last_ts });

impl Entry for Sending {
    fn last_seen(&self) -> Millis {
        self.last_ts
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        self.last_ts < horizon
    }
    fn weight(&self) -> usize {
        if self.peak > 0.0 {
            2
        } else {
            1
        }
    }
}

pub struct SendVolume {
    cfg: SendVolumeConfig,
    decay: f32,
    table: Table<Sending>,
}

/// What crossed which line.
enum Trigger {
    Baseline,
    HourlyCeiling,
    DailyCeiling,
}

impl SendVolume {
    /// A ceiling locks; the baseline rule alerts, bounces or not (they only
    /// raise its severity).
    fn locks(&self, trigger: &Trigger) -> bool {
        !matches!(trigger, Trigger::Baseline)
    }

    fn trigger(&self, s: &Sending, last_hour: u32) -> Option<Trigger> {
        if s.today >= self.cfg.daily_ceiling {
            return Some(Trigger::DailyCeiling);
        }
        if last_hour >= self.cfg.hourly_ceiling {
            return Some(Trigger::HourlyCeiling);
        }
        let baseline = f64::from(s.peak);
        (last_hour >= self.cfg.floor && f64::from(last_hour) > self.cfg.multiple * baseline)
            .then_some(Trigger::Baseline)
    }
}

impl Registration for SendVolume {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Account;
    type Config = SendVolumeConfig;

    fn new(cfg: &SendVolumeConfig, state: &StateConfig, _form: &AccountForm) -> Self {
        SendVolume {
            cfg: cfg.clone(),
            decay: 0.5f64.powf(1.0 / cfg.baseline_half_life_hours) as f32,
            table: Table::new(
                NAME,
                KeyedBy::Account,
                state.max_accounts,
                cfg.history_hours as Millis * HOUR,
            ),
        }
    }
}

impl Detector for SendVolume {
    fn observe(&self, event: &Event, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let decay = self.decay;
        match event.kind {
            Kind::Bounce => {
                // Only accounts that send are followed: a bounce to an
                // account that never sent is backscatter's business.
                self.table.with(event.key, |s| {
                    s.roll(event.ts, decay);
                    s.bounces.add(event.ts, 1);
                });
            }
            Kind::Submission => {
                let rcpts = event.rcpt_count.unwrap_or(0);
                let found = self.table.update(
                    event.key,
                    || Sending::new(event.ts),
                    |s| {
                        s.roll(event.ts, decay);
                        s.sent.add(event.ts, rcpts);
                        s.today = s.today.saturating_add(rcpts);
                        let last_hour = s.sent.last_hour(event.ts);
                        let trigger = self.trigger(s, last_hour)?;
                        let hour = event.ts.div_euclid(HOUR);
                        let bounces = s.bounces.last_hour(event.ts);
                        let lock = self.locks(&trigger);
                        if s.reported_hour >= hour && (s.reported_lock || !lock) {
                            return None;
                        }
                        s.reported_hour = hour;
                        s.reported_lock = lock;
                        Some((trigger, last_hour, s.today, s.peak, bounces, s.first_ts))
                    },
                );
                let Some((trigger, last_hour, today, peak, bounces, first_ts)) = found else {
                    return;
                };
                let bounced = bounces >= self.cfg.bounces_for_lock;
                let (strength, severity) = match (self.locks(&trigger), bounced) {
                    (false, false) => (Strength::Alert, Severity::Medium),
                    (false, true) => (Strength::Alert, Severity::High),
                    (true, false) => (Strength::Lock, Severity::High),
                    (true, true) => (Strength::Lock, Severity::Critical),
                };
                let why = match trigger {
                    Trigger::Baseline => format!(
                        "{} recipients in the last hour, more than {} times its usual peak of {} an hour",
                        thousands(u64::from(last_hour)),
                        self.cfg.multiple,
                        peak.round()
                    ),
                    Trigger::HourlyCeiling => format!(
                        "{} recipients in the last hour, over the limit of {} an hour",
                        thousands(u64::from(last_hour)),
                        thousands(u64::from(self.cfg.hourly_ceiling))
                    ),
                    Trigger::DailyCeiling => format!(
                        "{} recipients today, over the limit of {} a day",
                        thousands(u64::from(today)),
                        thousands(u64::from(self.cfg.daily_ceiling))
                    ),
                };
                let bounce_note = if bounced {
                    format!(", and {bounces} bounces came back")
                } else {
                    String::new()
                };
                let mut e = Map::new();
                e.insert(
                    "trigger".into(),
                    ev(match trigger {
                        Trigger::Baseline => "baseline",
                        Trigger::HourlyCeiling => "hourly_ceiling",
                        Trigger::DailyCeiling => "daily_ceiling",
                    }),
                );
                e.insert("recipients_last_hour".into(), ev(last_hour));
                e.insert("recipients_today".into(), ev(today));
                e.insert("usual_peak_per_hour".into(), ev(f64::from(peak).round()));
                e.insert("bounces_last_hour".into(), ev(bounces));
                e.insert("multiple".into(), ev(self.cfg.multiple));
                e.insert("floor".into(), ev(self.cfg.floor));
                e.insert("hourly_ceiling".into(), ev(self.cfg.hourly_ceiling));
                e.insert("daily_ceiling".into(), ev(self.cfg.daily_ceiling));
                e.insert("sending_since".into(), ev(format_rfc3339(first_ts)));
                e.insert("message".into(), message_evidence(event, ctx));
                out.push(Finding {
                    detector: NAME,
                    account: event.account.clone(),
                    key: event.key,
                    strength,
                    severity,
                    reason: format!("The account sent to {why}{bounce_note}."),
                    first_event_ts: event.ts - HOUR,
                    last_event_ts: event.ts,
                    anchor_ts: event.ts.div_euclid(HOUR) * HOUR,
                    evidence: e,
                    source: event.src_ip,
                    account_since: None,
                });
            }
            Kind::Auth | Kind::Unlock => {}
        }
    }

    fn state(&self) -> Vec<&dyn Swept> {
        vec![&self.table]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_decays_by_half_in_a_half_life() {
        let decay = 0.5f64.powf(1.0 / 10.0) as f32;
        let mut s = Sending::new(0);
        s.roll(0, decay);
        s.sent.add(0, 400);
        s.roll(HOUR, decay);
        assert_eq!(s.peak, 400.0, "a completed hour is the peak");
        s.roll(11 * HOUR, decay);
        assert!((s.peak - 200.0).abs() < 2.0, "{}", s.peak);
        assert_eq!(
            s.sent.last_hour(11 * HOUR),
            0,
            "a gap empties the previous hour"
        );
    }
}

#[cfg(all(test, feature = "demo"))]
mod findings {
    use super::*;
    use crate::demo::sample::{bounce, submission};
    use crate::detect::testing::{ip, Bench, T0};
    use crate::time::{MINUTE, SECOND};

    const A: &str = "club@example.org";

    #[test]
    fn the_floor_alerts_the_ceiling_locks_and_locks_again_a_day_later() {
        let b = Bench::new();
        let d = Bench::detector::<SendVolume>("");
        let from = ip("Paris", 4);
        let mut lines: Vec<_> = (0..11)
            .map(|i| submission(T0 + i * MINUTE, A, from, A, None, 100))
            .collect();
        // A day later, the same again: a new finding the detector makes
        // whether or not the policy still has the incident open.
        lines.extend((0..11).map(|i| submission(T0 + 25 * HOUR + i * MINUTE, A, from, A, None, 100)));
        let f = b.observe(&d, &lines);
        let seen: Vec<(Strength, &str)> = f
            .iter()
            .map(|f| (f.strength, f.evidence["trigger"].as_str().unwrap()))
            .collect();
        // A new account at the floor alerts (no history to compare with);
        // the ceiling locks; a day later the ceiling locks again though
        // its peak is now known.
        assert_eq!(
            seen,
            [
                (Strength::Alert, "baseline"),
                (Strength::Lock, "hourly_ceiling"),
                (Strength::Lock, "hourly_ceiling"),
            ],
            "{f:?}"
        );
    }

    #[test]
    fn an_invitation_to_thirty_people_is_ordinary() {
        let b = Bench::new();
        let d = Bench::detector::<SendVolume>("");
        let lines = [submission(T0, A, ip("Paris", 4), A, None, 30)];
        assert!(b.observe(&d, &lines).is_empty());
    }

    #[test]
    fn bounces_alone_are_not_sending() {
        let b = Bench::new();
        let d = Bench::detector::<SendVolume>("");
        let lines: Vec<_> = (0..200).map(|i| bounce(T0 + i * SECOND, A)).collect();
        assert!(b.observe(&d, &lines).is_empty());
    }
}
