//! Settings (contract §6): a TOML file, every key documented with its
//! default, unknown keys rejected by name, and `CREDWATCH_<SECTION>_<KEY>`
//! environment variables that win over the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::detect::backscatter::BackscatterConfig;
use crate::detect::failed_login_burst::BurstConfig;
use crate::detect::impossible_travel::TravelConfig;
use crate::detect::password_spray::SprayConfig;
use crate::detect::send_volume::SendVolumeConfig;
use crate::detect::sender_mismatch::SenderMismatchConfig;

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
    #[error("setting `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
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
    pub events: EventsConfig,
    pub detectors: DetectorsConfig,
}

/// `[kafka]`: where events come from and actions go (used by `credwatch run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// Consumer group. Default `credwatch`.
    pub group_id: String,
    /// Topics with login, submission and bounce events. Default `["mail.auth"]`.
    pub input_topics: Vec<String>,
    /// Where actions go. Default `credwatch.actions`.
    pub actions_topic: String,
    /// Where rejected events go, with the reason. Default `credwatch.dlq`.
    pub dead_letter_topic: String,
    /// How far back (Kafka message time) the state of a newly assigned
    /// partition is rebuilt from the partition itself, in seconds. Default
    /// 86400: a day covers every detector's window except the two-week
    /// sending baseline of `send_volume`. Retention must keep at least this.
    pub restore_secs: u64,
    /// Threads that judge events; partitions are spread over them. Default 2.
    pub workers: usize,
    /// How often processed offsets are committed, in milliseconds. Default 1000.
    pub commit_interval_ms: u64,
    /// How long a revoke or a shutdown waits for in-flight events and their
    /// actions before committing what is done, in seconds. Default 20.
    pub drain_timeout_secs: u64,
    /// Where `password_spray` is judged when several instances share the
    /// input. Empty (the default): each instance judges it on its own
    /// partitions' accounts. A topic name (create it with as many
    /// partitions as the input): every login with an address is also
    /// written there keyed by the address, and a second stage in every
    /// instance (consumer group `<group_id>.sources`) judges
    /// `password_spray` from it, seeing all of an address's attempts
    /// whichever instance owns the accounts.
    pub sources_topic: String,
    /// Any other librdkafka property, passed through to the consumer and
    /// the producer (TLS, SASL, ...). `CREDWATCH_KAFKA_PROPERTIES_SASL_PASSWORD`
    /// sets `sasl.password`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "credwatch".into(),
            input_topics: vec!["mail.auth".into()],
            actions_topic: "credwatch.actions".into(),
            dead_letter_topic: "credwatch.dlq".into(),
            restore_secs: 86_400,
            sources_topic: String::new(),
            workers: 2,
            commit_interval_ms: 1000,
            drain_timeout_secs: 20,
            properties: BTreeMap::new(),
        }
    }
}

/// `[geoip]`: MaxMind databases.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    /// MaxMind City (or Country) database; required while
    /// `impossible_travel` is enabled. Default `/var/lib/GeoIP/GeoLite2-City.mmdb`
    /// (where `geoipupdate` writes it).
    pub city_db: String,
    /// Optional GeoLite2-ASN database (adds the network owner to evidence). Default empty.
    pub asn_db: String,
    /// Optional GeoIP2-Anonymous-IP database (VPN, Tor, hosting). Default empty.
    pub anonymous_db: String,
    /// Slots of the lookup cache (direct-mapped: an address takes the slot
    /// its hash picks). Default 65536 (about 4 MB).
    pub cache_size: usize,
    /// How long (event time) a cached lookup is used, in seconds. Default 3600.
    pub cache_ttl_secs: u64,
    /// `credwatch run` checks the database files this often (seconds) and
    /// reloads them, verified, when one changed (geoipupdate replaces them
    /// in place); a file that fails to open keeps the old databases in use.
    /// 0 turns this off. Default 60.
    pub reload_check_secs: u64,
}

impl Default for GeoIpConfig {
    fn default() -> Self {
        GeoIpConfig {
            city_db: "/var/lib/GeoIP/GeoLite2-City.mmdb".into(),
            asn_db: String::new(),
            anonymous_db: String::new(),
            cache_size: 65_536,
            cache_ttl_secs: 3600,
            reload_check_secs: 60,
        }
    }
}

/// `[webhook]`: Standard Webhooks delivery (used by `credwatch run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Endpoints; empty means no webhooks (actions still go to Kafka). Default `[]`.
    pub urls: Vec<String>,
    /// `whsec_` + base64 of the key, or from `CREDWATCH_WEBHOOK_SECRET`.
    /// Several, separated by spaces, while rotating keys: every request
    /// then carries one signature per key. Never printed. Default empty.
    pub secret: String,
    /// Time for one request (connect, send, answer), in seconds. Default 15.
    pub timeout_secs: u64,
    /// First retry after this many milliseconds, doubling (with ±20 %
    /// jitter) up to `max_backoff_secs`. Default 5000 (the spec's first retry).
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, in seconds. Default 3600.
    pub max_backoff_secs: u64,
    /// Give an action up (failed, copied to the dead-letter topic) when it
    /// is still not delivered this long after its first attempt, in
    /// seconds. Default 86400 (the spec's schedule reaches about a day).
    pub retry_horizon_secs: u64,
    /// Requests in flight per endpoint. Default 32.
    pub concurrency: usize,
    /// Extra CA certificate (PEM) to trust besides the system's. Default empty.
    pub ca_file: String,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            secret: String::new(),
            timeout_secs: 15,
            initial_backoff_ms: 5000,
            max_backoff_secs: 3600,
            retry_horizon_secs: 86_400,
            concurrency: 32,
            ca_file: String::new(),
        }
    }
}

/// `[http]`: metrics and health.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `/metrics`, `/healthz`, `/readyz`. Default `0.0.0.0:9898`.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:9898".into(),
        }
    }
}

/// `[policy]`: how findings become actions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Accounts never locked automatically, only alerted (compared case-insensitively). Default `[]`.
    pub protected_accounts: Vec<String>,
    /// CIDRs (office, VPN egress, webmail front ends) that never count as travel or attack. Default `[]`.
    pub trusted_networks: Vec<String>,
    /// After an action on an account, further findings within this many
    /// seconds (event time) join the same incident instead of emitting a new
    /// action; only an upgrade from alert to lock is emitted. Default 21600 (6 h).
    pub cooldown_secs: u64,
    /// The lock-storm breaker.
    pub breaker: BreakerConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            protected_accounts: Vec::new(),
            trusted_networks: Vec::new(),
            cooldown_secs: 6 * 3600,
            breaker: BreakerConfig::default(),
        }
    }
}

/// `[policy.breaker]`: when automatic locks exceed a share of the active
/// accounts within a window, stop locking (alerts go on).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Default true.
    pub enabled: bool,
    /// The window, in seconds of event time. Default 3600.
    pub window_secs: u64,
    /// Share of the accounts active in the window that may be locked before
    /// the breaker opens. Default 0.01 (1 %): real campaigns compromise a few
    /// accounts per thousand; a bad GeoIP update moves everyone at once.
    pub max_lock_ratio: f64,
    /// The breaker never opens below this many locks in the window, so a
    /// small platform can still lock a handful. Default 20.
    pub min_locks: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            window_secs: 3600,
            max_lock_ratio: 0.01,
            min_locks: 20,
        }
    }
}

/// `[state]`: bounds on what is remembered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Cap on accounts tracked by each per-account table. Default 2,000,000.
    pub max_accounts: usize,
    /// Cap on source addresses tracked. Default 1,000,000.
    pub max_sources: usize,
    /// Cap on entries (logins, failures) kept per account or source. Default 32.
    pub max_entries_per_key: usize,
    /// Events may arrive this many seconds out of order per account. Default 300.
    pub max_disorder_secs: u64,
    /// How often (event time) expired entries are swept, in seconds. Default 60.
    pub sweep_interval_secs: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            max_accounts: 2_000_000,
            max_sources: 1_000_000,
            max_entries_per_key: 32,
            max_disorder_secs: 300,
            sweep_interval_secs: 60,
        }
    }
}

/// `[events]`: input limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Longest accepted event in bytes. Default 65536.
    pub max_bytes: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { max_bytes: 65_536 }
    }
}

/// `[detectors.*]`: one table per detector; each has `enabled` and `dry_run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    pub impossible_travel: TravelConfig,
    pub failed_login_burst: BurstConfig,
    pub password_spray: SprayConfig,
    pub send_volume: SendVolumeConfig,
    pub sender_mismatch: SenderMismatchConfig,
    pub backscatter: BackscatterConfig,
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
            message: e.to_string(),
        })?;
        // Validate the file on its own first, so an unknown key is reported
        // against the file, not against a merged tree.
        Config::deserialize(toml::Value::Table(tree.clone())).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        apply_env(&mut tree, env)?;
        let config =
            Config::deserialize(toml::Value::Table(tree)).map_err(|e| ConfigError::Parse {
                path: format!("{name} with CREDWATCH_* environment"),
                message: e.to_string(),
            })?;
        config.check()
    }

    /// Cross-field checks; returns the derived settings.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let mut trusted = Vec::new();
        for (i, cidr) in self.policy.trusted_networks.iter().enumerate() {
            let net = cidr
                .parse::<IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        &format!("policy.trusted_networks[{i}]"),
                        "not a CIDR such as 192.0.2.0/24 or 2001:db8::/32",
                    )
                })?;
            trusted.push(net.trunc());
        }
        let travel = &self.detectors.impossible_travel;
        if travel.enabled && self.geoip.city_db.is_empty() {
            return Err(invalid(
                "geoip.city_db",
                "empty, but detectors.impossible_travel is enabled: set the path of a MaxMind City database, or set detectors.impossible_travel.enabled = false",
            ));
        }
        if self.geoip.cache_size == 0 {
            return Err(invalid("geoip.cache_size", "must be at least 1"));
        }
        let s = &self.state;
        for (key, v) in [
            ("state.max_accounts", s.max_accounts),
            ("state.max_sources", s.max_sources),
            ("state.max_entries_per_key", s.max_entries_per_key),
            ("state.sweep_interval_secs", s.sweep_interval_secs as usize),
            ("events.max_bytes", self.events.max_bytes),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        let k = &self.kafka;
        for (key, v) in [
            ("kafka.workers", k.workers as u64),
            ("kafka.commit_interval_ms", k.commit_interval_ms),
            ("kafka.drain_timeout_secs", k.drain_timeout_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if k.input_topics.is_empty() || k.input_topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                "kafka.input_topics",
                "must name at least one topic, and no empty names",
            ));
        }
        for (key, v) in [
            ("kafka.actions_topic", &k.actions_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
            ("kafka.group_id", &k.group_id),
        ] {
            if v.trim().is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        if self.events.max_bytes < 256 {
            return Err(invalid("events.max_bytes", "must be at least 256"));
        }
        let b = &self.policy.breaker;
        if !(b.max_lock_ratio > 0.0 && b.max_lock_ratio <= 1.0) {
            return Err(invalid(
                "policy.breaker.max_lock_ratio",
                "must be a share in (0, 1], e.g. 0.01 for 1 %",
            ));
        }
        if b.window_secs == 0 {
            return Err(invalid(
                "policy.breaker.window_secs",
                "must be greater than 0",
            ));
        }
        travel.check()?;
        self.detectors.failed_login_burst.check()?;
        self.detectors.password_spray.check()?;
        self.detectors.send_volume.check()?;
        self.detectors.sender_mismatch.check()?;
        self.detectors.backscatter.check()?;
        if let Some(bad) = self
            .webhook
            .urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            let _ = bad;
            return Err(invalid(
                "webhook.urls",
                "every URL must start with http:// or https://",
            ));
        }
        if let Err(message) = crate::webhook::parse_secrets(&self.webhook.secret) {
            return Err(invalid("webhook.secret", message));
        }
        if !self.webhook.urls.is_empty() && self.webhook.secret.trim().is_empty() {
            return Err(invalid(
                "webhook.secret",
                "webhook.urls are set but there is no secret: set webhook.secret or CREDWATCH_WEBHOOK_SECRET (whsec_ + base64 key)",
            ));
        }
        let w = &self.webhook;
        for (key, v) in [
            ("webhook.timeout_secs", w.timeout_secs),
            ("webhook.initial_backoff_ms", w.initial_backoff_ms),
            ("webhook.max_backoff_secs", w.max_backoff_secs),
            ("webhook.concurrency", w.concurrency as u64),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
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
            c.webhook.secret = "<redacted>".into();
        }
        for (k, v) in c.kafka.properties.iter_mut() {
            let k = k.to_ascii_lowercase();
            if k.contains("password") || k.contains("secret") || k.contains("key") {
                *v = "<redacted>".into();
            }
        }
        toml::to_string(&c).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// Shared shape of an error from a detector's own `check`.
pub fn detector_invalid(detector: &str, key: &str, message: &str) -> ConfigError {
    invalid(&format!("detectors.{detector}.{key}"), message)
}

/// `detectors.<detector>.<key>` must be at least `min`.
pub fn at_least(detector: &str, key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(detector_invalid(
            detector,
            key,
            &format!("must be at least {min}"),
        ));
    }
    Ok(())
}

/// `detectors.<detector>.<key>` must be a number of at least `min` (more
/// than `min` when `strict`).
pub fn number_at_least(
    detector: &str,
    key: &str,
    value: f64,
    min: f64,
    strict: bool,
) -> Result<(), ConfigError> {
    let ok = if strict { value > min } else { value >= min };
    if !ok || value.is_nan() {
        let rel = if strict { "greater than" } else { "at least" };
        return Err(detector_invalid(
            detector,
            key,
            &format!("must be {rel} {min}"),
        ));
    }
    Ok(())
}

/// Every leaf key of the default config, as (ENV_NAME, path).
fn env_keys() -> Vec<(String, Vec<String>)> {
    fn walk(prefix: &mut Vec<String>, v: &toml::Value, out: &mut Vec<(String, Vec<String>)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    prefix.push(k.clone());
                    walk(prefix, v, out);
                    prefix.pop();
                }
            }
            _ => {
                let name = format!("CREDWATCH_{}", prefix.join("_").to_ascii_uppercase());
                out.push((name, prefix.clone()));
            }
        }
    }
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialise");
    let mut out = Vec::new();
    walk(&mut Vec::new(), &defaults, &mut out);
    out
}

/// Applies `CREDWATCH_<SECTION>_<KEY>` variables. The value is parsed as the
/// default's type: booleans, numbers, strings; lists as comma-separated text
/// or a TOML array (`["a","b"]`). A `CREDWATCH_` variable that names no
/// setting is an error, so a typo cannot silently do nothing. A few
/// variables belong to the process, not the config, and are left alone.
fn apply_env(tree: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    const NOT_SETTINGS: &[&str] = &["CREDWATCH_LOG", "CREDWATCH_CONFIG"];
    let keys = env_keys();
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialise");
    for (var, raw) in env {
        if NOT_SETTINGS.contains(&var.as_str()) {
            continue;
        }
        if let Some(prop) = var.strip_prefix("CREDWATCH_KAFKA_PROPERTIES_") {
            // A librdkafka property: SASL_PASSWORD -> sasl.password.
            let name = prop.to_ascii_lowercase().replace('_', ".");
            if name.is_empty() {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: "names no librdkafka property (e.g. CREDWATCH_KAFKA_PROPERTIES_SASL_PASSWORD)".into(),
                });
            }
            let kafka = tree
                .entry("kafka")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| invalid("kafka", "is not a table"))?;
            let props = kafka
                .entry("properties")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| invalid("kafka.properties", "is not a table"))?;
            props.insert(name, toml::Value::String(raw.clone()));
            continue;
        }
        let Some((_, path)) = keys.iter().find(|(name, _)| name == var) else {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: "names no setting (expected CREDWATCH_<SECTION>_<KEY>, e.g. CREDWATCH_KAFKA_BROKERS)".into(),
            });
        };
        let mut default = &defaults;
        for p in path {
            default = &default[p.as_str()];
        }
        let value = env_value(default, raw).ok_or_else(|| ConfigError::Env {
            var: var.clone(),
            message: format!(
                "not a valid {} (the value is not shown)",
                default.type_str()
            ),
        })?;
        let mut table = &mut *tree;
        for p in &path[..path.len() - 1] {
            table = table
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| invalid(p, "is not a table"))?;
        }
        table.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

fn env_value(default: &toml::Value, raw: &str) -> Option<toml::Value> {
    use toml::Value;
    Some(match default {
        Value::String(_) => Value::String(raw.to_string()),
        Value::Boolean(_) => Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return None,
        }),
        Value::Integer(_) => Value::Integer(raw.trim().replace('_', "").parse().ok()?),
        Value::Float(_) => Value::Float(raw.trim().parse().ok()?),
        Value::Array(_) => {
            let t = raw.trim();
            if t.starts_with('[') {
                let wrapped: toml::Table = toml::from_str(&format!("v = {t}")).ok()?;
                wrapped.get("v")?.clone()
            } else if t.is_empty() {
                Value::Array(Vec::new())
            } else {
                Value::Array(
                    t.split(',')
                        .map(|s| Value::String(s.trim().to_string()))
                        .collect(),
                )
            }
        }
        _ => return None,
    })
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
}
