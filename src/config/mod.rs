//! Settings (contract §6): loads a TOML file, overlays the
//! `CREDWATCH_<SECTION>_<KEY>` environment (which wins), and cross-checks
//! the result. Each section is declared by the component that owns it
//! ([`crate::section!`]); this module only puts them together. Every
//! problem of a config is reported at once. The reference page
//! (`docs/configuration.md`) is generated from the sections' own doc
//! comments and defaults by [`reference::markdown`].

mod env;
pub mod reference;

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::detect::DetectorsConfig;
use crate::geo::GeoIpConfig;
use crate::http::HttpConfig;
use crate::kafka::KafkaConfig;
use crate::policy::PolicyConfig;
use crate::section::{Checks, Problem};
use crate::sink::webhook::WebhookConfig;
use crate::source::event::EventsConfig;
use crate::state::profile::ProfileConfig;
use crate::state::StateConfig;

/// A configuration that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// Every problem the checks found, not only the first.
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} settings are wrong:", many.len());
            for p in many {
                s.push_str("\n  - ");
                s.push_str(&p.to_string());
            }
            s
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub geoip: GeoIpConfig,
    pub webhook: WebhookConfig,
    pub http: HttpConfig,
    pub policy: PolicyConfig,
    pub state: StateConfig,
    pub profile: ProfileConfig,
    pub events: EventsConfig,
    pub maillog: crate::source::maillog::MaillogConfig,
    pub dovecot_policy: crate::enforce::dovecot::DovecotPolicyConfig,
    pub postfix_policy: crate::enforce::postfix::PostfixPolicyConfig,
    pub detectors: DetectorsConfig,
}

/// A config that has been checked, with its derived values.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub trusted: Vec<IpNet>,
}

impl Config {
    /// Reads a file (or only defaults when `path` is `None`), applies the
    /// environment, and checks the result.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("CREDWATCH_"))
            .collect();
        Self::load_with_env(path, &vars)
    }

    /// [`Config::load`] with the environment given explicitly (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        let (text, name) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "(defaults)".to_string()),
        };
        Self::from_toml_with_env(&text, &name, env)
    }

    pub fn from_toml_with_env(
        text: &str,
        name: &str,
        env: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        let mut tree: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: safe_message(&e, text),
        })?;
        // Validate the file on its own first, so an unknown key is reported
        // against the file, not against a merged tree.
        Config::deserialize(toml::Value::Table(tree.clone())).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: safe_message(&e, text),
        })?;
        env::apply_env(&mut tree, env)?;
        let config =
            Config::deserialize(toml::Value::Table(tree)).map_err(|e| ConfigError::Parse {
                path: format!("{name} with CREDWATCH_* environment"),
                message: safe_message(&e, ""),
            })?;
        config.check()
    }

    /// Every section's own checks, then the checks across sections; all
    /// problems at once. Returns the derived settings.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let mut c = Checks::new();
        c.under("kafka", |c| self.kafka.check(c));
        c.under("geoip", |c| self.geoip.check(c));
        c.under("webhook", |c| self.webhook.check(c));
        c.under("http", |c| self.http.check(c));
        c.under("policy", |c| self.policy.check(c));
        c.under("state", |c| self.state.check(c));
        c.under("profile", |c| self.profile.check(c));
        c.under("events", |c| self.events.check(c));
        c.under("maillog", |c| self.maillog.check(c));
        c.under("dovecot_policy", |c| self.dovecot_policy.check(c));
        c.under("postfix_policy", |c| self.postfix_policy.check(c));
        if (self.dovecot_policy.enabled() || self.postfix_policy.enabled())
            && self.kafka.input_topics.is_empty()
        {
            c.fail(
                "kafka.input_topics",
                "empty, but a policy server is enabled: its events go to the first input topic",
            );
        }
        c.under("detectors", |c| self.detectors.check(c));
        if self.detectors.impossible_travel.enabled && self.geoip.city_db.is_empty() {
            c.fail(
                "geoip.city_db",
                "empty, but detectors.impossible_travel is enabled: set the path of a MaxMind City database, or set detectors.impossible_travel.enabled = false",
            );
        }
        let trusted = self.policy.trusted();
        if !c.is_empty() {
            return Err(ConfigError::Invalid(c.into_problems()));
        }
        Ok(Settings {
            config: self,
            trusted,
        })
    }

    /// The effective configuration as TOML, secrets replaced by `<redacted>`.
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        if !c.webhook.secret.is_empty() {
            c.webhook.secret = REDACTED.into();
        }
        if !c.dovecot_policy.secret.is_empty() {
            c.dovecot_policy.secret = REDACTED.into();
        }
        for u in c.webhook.urls.iter_mut() {
            *u = redact_url(u);
        }
        for (k, v) in c.kafka.properties.iter_mut() {
            if is_secret_property(k) {
                *v = REDACTED.into();
            }
        }
        toml::to_string(&c).unwrap_or_else(|_| "# cannot print config\n".into())
    }
}

const REDACTED: &str = "<redacted>";

/// A librdkafka property that holds a credential (`sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.config`, `sasl.oauthbearer.client.secret`, ...).
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key",
        "token",
        "oauthbearer.config",
        "jaas",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// A URL with its credentials taken out: `user:password@` and the value of
/// every query parameter (`?token=...`) become `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{REDACTED}@{host}"),
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let q: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) => format!("{k}={REDACTED}"),
                    None => p.to_string(),
                })
                .collect();
            let mut t = format!("{path}?{}", q.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

/// A TOML error without the text of the config: where (line and column)
/// and what, never the line itself or the value found (either may hold a
/// secret).
fn safe_message(e: &toml::de::Error, text: &str) -> String {
    let mut what = redact_values(e.message()).replace('\n', "; ");
    // Where a value was wrong (`in `kafka.properties.sasl.password``): a
    // key path, never a value.
    if let Some(key) = e.to_string().lines().find(|l| l.starts_with("in `")) {
        what.push(' ');
        what.push_str(key);
    }
    match e.span() {
        Some(span) if !text.is_empty() => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {what} (the line is not shown: it may hold a secret)")
        }
        _ => what,
    }
}

/// serde's "invalid type: integer `12345`, expected a string": the value
/// found goes, what was expected and where stay.
fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("invalid ") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        // `invalid type: integer `v``, `invalid value: string "v"`.
        let Some(colon) = after.find(':') else {
            out.push_str(after);
            rest = "";
            break;
        };
        let (head, tail) = after.split_at(colon + 1);
        out.push_str(head);
        let literal = tail.find(['`', '"']).filter(|&q| !tail[..q].contains(','));
        match literal {
            Some(q) => {
                let quote = tail.as_bytes()[q] as char;
                out.push_str(&tail[..q]);
                let close = tail[q + 1..]
                    .find(quote)
                    .map_or(tail.len(), |c| q + 1 + c + 1);
                out.push_str("(value not shown)");
                rest = &tail[close.min(tail.len())..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let s = Config::from_toml_with_env("", "t", &[]).unwrap();
        assert_eq!(s.config.kafka.brokers, "127.0.0.1:9092");
        assert!(s.config.detectors.impossible_travel.enabled);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml_with_env(
            "[detectors.impossible_travel]\nmax_sped_kmh = 5\n",
            "f.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_sped_kmh") && e.contains("f.toml"), "{e}");
        let e = Config::from_toml_with_env("[kafak]\n", "f.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kafak"), "{e}");
    }

    #[test]
    fn environment_wins_over_file() {
        let s = Config::from_toml_with_env(
            "[kafka]\nbrokers = \"file:9092\"\n",
            "t",
            &env(&[
                ("CREDWATCH_KAFKA_BROKERS", "env:9092"),
                ("CREDWATCH_POLICY_TRUSTED_NETWORKS", "10.0.0.0/8, 192.0.2.1"),
                ("CREDWATCH_DETECTORS_IMPOSSIBLE_TRAVEL_DRY_RUN", "true"),
                ("CREDWATCH_DETECTORS_IMPOSSIBLE_TRAVEL_MAX_SPEED_KMH", "900"),
                ("CREDWATCH_WEBHOOK_SECRET", "whsec_c2VjcmV0"),
            ]),
        )
        .unwrap();
        assert_eq!(s.config.kafka.brokers, "env:9092");
        assert_eq!(s.trusted.len(), 2);
        assert!(s.config.detectors.impossible_travel.dry_run);
        assert_eq!(s.config.detectors.impossible_travel.max_speed_kmh, 900.0);
        assert!(!s.config.to_redacted_toml().contains("c2VjcmV0"));
    }

    #[test]
    fn bad_environment_is_named() {
        let e = Config::from_toml_with_env("", "t", &env(&[("CREDWATCH_KAFKA_BROKRS", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CREDWATCH_KAFKA_BROKRS"), "{e}");
        let e = Config::from_toml_with_env(
            "",
            "t",
            &env(&[("CREDWATCH_DETECTORS_PASSWORD_SPRAY_ENABLED", "maybe")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("boolean"), "{e}");
    }

    #[test]
    fn a_bad_detector_setting_is_named_exactly() {
        for (toml, key) in [
            (
                "[detectors.impossible_travel]\nhistory_secs = 0\n",
                "detectors.impossible_travel.history_secs",
            ),
            (
                "[detectors.impossible_travel]\ndefault_accuracy_km = -1.0\n",
                "detectors.impossible_travel.default_accuracy_km",
            ),
            (
                "[detectors.send_volume]\nhourly_ceiling = 50\n",
                "detectors.send_volume.hourly_ceiling",
            ),
            (
                "[detectors.failed_login_burst]\nmin_distinct_passwords = 11\n",
                "detectors.failed_login_burst.min_distinct_passwords",
            ),
            (
                "[detectors.backscatter]\nown_sending_ratio = nan\n",
                "detectors.backscatter.own_sending_ratio",
            ),
        ] {
            let e = Config::from_toml_with_env(toml, "t", &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn cross_field_checks() {
        let e = Config::from_toml_with_env("[geoip]\ncity_db = \"\"\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("geoip.city_db"), "{e}");
        let ok = Config::from_toml_with_env(
            "[geoip]\ncity_db = \"\"\n[detectors.impossible_travel]\nenabled = false\n",
            "t",
            &[],
        );
        assert!(ok.is_ok());
        let e =
            Config::from_toml_with_env("[policy]\ntrusted_networks = [\"10.0.0/8\"]\n", "t", &[])
                .unwrap_err()
                .to_string();
        assert!(e.contains("policy.trusted_networks[0]"), "{e}");
        let e = Config::from_toml_with_env("[webhook]\nsecret = \"hunter2\"\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("webhook.secret") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = Config::from_toml_with_env(
            "[state]\nmax_accounts = 0\n[kafka]\nworkers = 0\n[policy.breaker]\nmax_lock_ratio = 2.0\n[detectors.impossible_travel]\nmax_logins = 1\n",
            "t",
            &[],
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = &e else {
            panic!("{e}");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "kafka.workers",
                "policy.breaker.max_lock_ratio",
                "state.max_accounts",
                "detectors.impossible_travel.max_logins",
            ]
        );
        let text = e.to_string();
        assert!(text.starts_with("4 settings are wrong:"), "{text}");
    }
}
