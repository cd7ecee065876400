//! `canary`: a throwaway detector, compiled into tests only, that proves
//! adding a detector is this one file plus its line in `registry!`: its
//! `[detectors.canary]` section is parsed and checked, `build` makes it,
//! the engine runs it and the policy turns its finding into an action.
//! It alerts on every failed login of an account whose name starts with
//! `canary`, once `min_failures` of them were seen.

use serde_json::Map;

use super::{ev, Context, Detector, DetectorConfig, Finding, Registration, Severity, Strength};
use crate::section::Checks;
use crate::source::event::{AuthResult, Event};
use crate::source::event::AccountForm;
use crate::state::{Entry, KeyedBy, StateConfig, Swept, Table};
use crate::time::{Millis, HOUR};

pub const NAME: &str = "canary";

crate::detector_section! {
    enabled = false;
    /// `[detectors.canary]`: off unless a test turns it on, so no other
    /// test sees it.
    pub struct CanaryConfig {
        /// Failed logins of a `canary*` account before it alerts.
        pub min_failures: u32 = 2,
    }
}

impl DetectorConfig for CanaryConfig {
    fn check(&self, c: &mut Checks) {
        c.at_least("min_failures", self.min_failures.into(), 1);
    }
}

struct Seen {
    failures: u32,
    last_ts: Millis,
}

crate::codec_fields!(Seen { failures, last_ts });

impl Entry for Seen {
    fn last_seen(&self) -> Millis {
        self.last_ts
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        self.last_ts < horizon
    }
}

pub struct Canary {
    min_failures: u32,
    table: Table<Seen>,
}

impl Registration for Canary {
    const NAME: &'static str = NAME;
    const KEYED_BY: KeyedBy = KeyedBy::Account;
    type Config = CanaryConfig;

    fn new(cfg: &CanaryConfig, state: &StateConfig, _form: &AccountForm) -> Self {
        Canary {
            min_failures: cfg.min_failures,
            table: Table::new(NAME, KeyedBy::Account, state.max_accounts, HOUR),
        }
    }
}

impl Detector for Canary {
    fn observe(&self, event: &Event, _ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if event.result != Some(AuthResult::Failure) || !event.account.starts_with("canary") {
            return;
        }
        let now = event.ts;
        let failures = self.table.update(
            event.key,
            || Seen {
                failures: 0,
                last_ts: now,
            },
            |s| {
                s.failures += 1;
                s.last_ts = now;
                s.failures
            },
        );
        if failures < self.min_failures {
            return;
        }
        let mut evidence = Map::new();
        evidence.insert("failures".into(), ev(failures));
        out.push(Finding {
            detector: NAME,
            account: event.account.clone(),
            key: event.key,
            strength: Strength::Alert,
            severity: Severity::Low,
            reason: format!("{failures} failed logins of a canary account."),
            first_event_ts: now,
            last_event_ts: now,
            anchor_ts: now,
            evidence,
            source: None,
            account_since: None,
        });
    }

    fn state(&self) -> Vec<&dyn Swept> {
        vec![&self.table]
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::detect::{build, registry};
    use crate::engine::Engine;
    use crate::policy::Decision;
    use crate::source::event::{parse_event, ParseLimits};
    use crate::state::KeyedBy;

    const ON: &str = "[geoip]\ncity_db = \"\"\n[detectors.impossible_travel]\nenabled = false\n[detectors.canary]\nenabled = true\nmin_failures = 2\n";

    #[test]
    fn one_file_and_one_line_make_a_configured_checked_running_detector() {
        // Registered: listed with its key.
        let info = registry().into_iter().find(|d| d.name == super::NAME);
        let info = info.expect("the canary is in the registry");
        assert_eq!(info.keyed_by, KeyedBy::Account);
        assert!(info.fields.iter().any(|f| f.key == "min_failures"));

        // Configured: its section parses, and an unknown key in it is named.
        let s = Config::from_toml_with_env(ON, "t", &[]).unwrap();
        assert!(s.config.detectors.canary.enabled);
        let e = Config::from_toml_with_env(&format!("{ON}min_failure = 3\n"), "t", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_failure"), "{e}");

        // Checked: its own check runs, under its own key, with the others'.
        let bad = ON.replace("min_failures = 2", "min_failures = 0");
        let e = Config::from_toml_with_env(
            &format!("{bad}[detectors.backscatter]\nmin_bounces = 1\n"),
            "t",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("detectors.canary.min_failures"), "{e}");
        assert!(e.contains("detectors.backscatter.min_bounces"), "{e}");

        // Built where it belongs: by account, never in the source stage.
        let d = &s.config.detectors;
        let names = |only| -> Vec<&str> {
            build(d, &s.config.state, &Default::default(), only)
                .iter()
                .map(|r| r.name)
                .collect()
        };
        assert!(names(None).contains(&super::NAME));
        assert!(names(Some(KeyedBy::Account)).contains(&super::NAME));
        assert!(!names(Some(KeyedBy::Source)).contains(&super::NAME));
        // Asked of the registry: only the canary on is "some detector by
        // account, none by source".
        let only = |canary: bool| -> crate::detect::DetectorsConfig {
            let text: String = registry()
                .iter()
                .map(|d| {
                    let on = d.name == super::NAME && canary;
                    format!("[{}]\nenabled = {on}\n", d.name)
                })
                .collect();
            toml::from_str(&text).unwrap()
        };
        assert!(only(true).any_enabled(KeyedBy::Account));
        assert!(!only(true).any_enabled(KeyedBy::Source));
        assert!(!only(false).any_enabled(KeyedBy::Account));

        // Run: two failures of a canary account make its action.
        let engine = Engine::new(&s).unwrap();
        let limits = ParseLimits::new(65_536, crate::time::now_millis());
        let mut out = Vec::new();
        for ts in ["2026-11-05T09:00:00Z", "2026-11-05T09:00:05Z"] {
            let line = format!(
                r#"{{"ts":"{ts}","account":"canary@example.jp","protocol":"imap","src_ip":"192.0.2.1","result":"failure"}}"#
            );
            let event = parse_event(line.as_bytes(), &limits).unwrap();
            engine.process(&event, None, &mut out);
        }
        let emitted: Vec<_> = out
            .iter()
            .filter_map(|d| match d {
                Decision::Emit(a) => Some(a.data.detector),
                _ => None,
            })
            .collect();
        assert_eq!(emitted, [super::NAME]);
    }
}
