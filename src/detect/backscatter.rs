//! `backscatter`: a surge of bounces delivered to an account.
//!
//! When spam goes out under a customer's address, the bounces come back to
//! that customer. An account that is bounced at while sending little itself
//! is being *impersonated*: it is a victim, so this detector only ever
//! alerts (support can tell the customer what is happening), never locks.
//! An account that is bounced at while sending a lot is the sender of the
//! spam: that is `send_volume`'s finding, which the bounces raise to a lock.

use serde_json::Map;

use super::{DetectorConfig, Registration, ev, Context, Detector, Finding, Severity, Strength};
use crate::section::Checks;
use crate::source::event::{Event, Kind};
use crate::source::event::AccountForm;
use crate::state::{KeyedBy, StateConfig, Entry, HourCount, Swept, Table};
use crate::time::{Millis, HOUR};

pub const NAME: &str = "backscatter";

crate::detector_section! {
    enabled = true;
    /// `[detectors.backscatter]`
    pub struct BackscatterConfig {
        /// Bounces in the last hour that make a surge. A mailbox gets a few
        /// bounces a day of its own (typos, full mailboxes).
        pub min_bounces: u32 = 50,
        /// The account counts as "sending little" while the recipients it
        /// sent to in the last hour are fewer than this share of the
        /// bounces: a sender of spam gets back a fraction of what it sent; a
        /// victim gets back far more than it sent.
        pub own_sending_ratio: f64 = 0.5,
    }
}

impl DetectorConfig for BackscatterConfig {
    fn check(&self, c: &mut Checks) {
        c.at_least("min_bounces", self.min_bounces.into(), 2);
        c.number_at_least("own_sending_ratio", self.own_sending_ratio, 0.0, false);
    }
}

struct Mailbox {
    bounces: HourCount,
    sent: HourCount,
    alerted: Millis,
    last_ts: Millis,
}

crate::codec_fields!(Mailbox { bounces, sent, alerted, last_ts });

impl Entry for Mailbox {
    fn last_seen(&self) -> Millis {
        self.last_ts
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        self.last_ts < horizon
    }
}

pub struct Backscatter {
    cfg: BackscatterConfig,
    table: Table<Mailbox>,
}

impl Registration for Backscatter {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Account;
    const THIRD_PARTY: bool = true;
    type Config = BackscatterConfig;

    fn new(cfg: &BackscatterConfig, state: &StateConfig, _form: &AccountForm) -> Self {
        Backscatter {
            cfg: cfg.clone(),
            table: Table::new(NAME, KeyedBy::Account, state.max_accounts, 2 * HOUR),
        }
    }
}

impl Detector for Backscatter {
    fn observe(&self, event: &Event, _ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let now = event.ts;
        let new = || Mailbox {
            bounces: HourCount::default(),
            sent: HourCount::default(),
            alerted: Millis::MIN,
            last_ts: now,
        };
        match event.kind {
            Kind::Submission => {
                let n = event.rcpt_count.unwrap_or(0);
                self.table.update(event.key, new, |m| {
                    m.sent.add(now, n);
                    m.bounces.roll(now);
                    m.last_ts = m.last_ts.max(now);
                });
            }
            Kind::Bounce => {
                let found = self.table.update(event.key, new, |m| {
                    m.bounces.add(now, 1);
                    m.sent.roll(now);
                    m.last_ts = m.last_ts.max(now);
                    let bounces = m.bounces.last_hour(now);
                    let sent = m.sent.last_hour(now);
                    if bounces < self.cfg.min_bounces
                        || f64::from(sent) >= self.cfg.own_sending_ratio * f64::from(bounces)
                        || m.alerted >= now - HOUR
                    {
                        return None;
                    }
                    m.alerted = now;
                    Some((bounces, sent))
                });
                let Some((bounces, sent)) = found else { return };
                let mut e = Map::new();
                e.insert("bounces_last_hour".into(), ev(bounces));
                e.insert("recipients_sent_last_hour".into(), ev(sent));
                e.insert("min_bounces".into(), ev(self.cfg.min_bounces));
                e.insert("own_sending_ratio".into(), ev(self.cfg.own_sending_ratio));
                out.push(Finding {
                    detector: NAME,
                    account: event.account.clone(),
                    key: event.key,
                    strength: Strength::Alert,
                    severity: Severity::Medium,
                    reason: format!(
                        "{bounces} bounces in the last hour for mail this account did not send (it sent to {sent} recipient(s) itself): someone is sending in its name."
                    ),
                    first_event_ts: now - HOUR,
                    last_event_ts: now,
                    anchor_ts: now.div_euclid(HOUR) * HOUR,
                    evidence: e,
                    source: None,
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

#[cfg(all(test, feature = "demo"))]
mod findings {
    use super::*;
    use crate::demo::sample::{bounce, submission};
    use crate::detect::testing::{ip, Bench, T0};
    use crate::time::{MINUTE, SECOND};

    const A: &str = "victim@example.net";

    #[test]
    fn a_surge_of_bounces_to_a_quiet_account_alerts_once_an_hour() {
        let b = Bench::new();
        let d = Bench::detector::<Backscatter>("");
        let lines: Vec<_> = (0..80).map(|i| bounce(T0 + i * 10 * SECOND, A)).collect();
        let f = b.observe(&d, &lines);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].strength, Strength::Alert, "a victim is never locked");
        assert_eq!(f[0].evidence["bounces_last_hour"], 50);
    }

    #[test]
    fn bounces_of_an_account_that_sends_a_lot_are_not_backscatter() {
        let b = Bench::new();
        let d = Bench::detector::<Backscatter>("");
        let mut lines = vec![submission(T0, A, ip("Paris", 4), A, None, 200)];
        lines.extend((0..80).map(|i| bounce(T0 + MINUTE + i * 10 * SECOND, A)));
        assert!(b.observe(&d, &lines).is_empty());
    }
}
