//! Overlays `CREDWATCH_<SECTION>_<KEY>` environment variables on the file's
//! settings; the environment wins.

use super::{Config, ConfigError};

fn not_a_table(key: &str) -> ConfigError {
    ConfigError::Parse {
        path: "(environment)".into(),
        message: format!("`{key}` is not a table"),
    }
}

/// Every leaf key of the default config, as (ENV_NAME, path).
pub(super) fn env_keys() -> Vec<(String, Vec<String>)> {
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
pub(super) fn apply_env(
    tree: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
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
                .ok_or_else(|| not_a_table("kafka"))?;
            let props = kafka
                .entry("properties")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| not_a_table("kafka.properties"))?;
            props.insert(name, toml::Value::String(raw.clone()));
            continue;
        }
        let Some((_, path)) = keys.iter().find(|(name, _)| name == var) else {
            if is_service_link(var) {
                // Kubernetes injects these for a Service named
                // `credwatch` (or `credwatch-*`) into every pod of the
                // namespace: they are not settings.
                tracing::debug!(%var, "Ignoring a Kubernetes service-link variable.");
                continue;
            }
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
                .ok_or_else(|| not_a_table(p))?;
        }
        table.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

/// A variable Kubernetes injects for a Service (`enableServiceLinks`):
/// `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT NAME>]`,
/// `<NAME>_PORT` and `<NAME>_PORT_<n>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]`,
/// where `<NAME>` is the Service's name upper-cased with `-` as `_`.
pub(super) fn is_service_link(var: &str) -> bool {
    let Some(rest) = var.strip_prefix("CREDWATCH") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('_').collect();
    // `rest` starts with `_` (or is empty): parts[0] is "".
    (1..parts.len()).any(|i| {
        let tail = &parts[i..];
        match tail {
            ["SERVICE", "HOST"] => true,
            ["SERVICE", "PORT", ..] => true,
            ["PORT"] => true,
            ["PORT", n, proto, more @ ..] => {
                n.parse::<u16>().is_ok()
                    && matches!(*proto, "TCP" | "UDP" | "SCTP")
                    && matches!(more, [] | ["PROTO"] | ["PORT"] | ["ADDR"])
            }
            _ => false,
        }
    })
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
    use super::is_service_link;

    #[test]
    fn kubernetes_service_links_are_recognised_and_settings_are_not() {
        for v in [
            "CREDWATCH_SERVICE_HOST",
            "CREDWATCH_SERVICE_PORT",
            "CREDWATCH_SERVICE_PORT_HTTP",
            "CREDWATCH_PORT",
            "CREDWATCH_PORT_9898_TCP",
            "CREDWATCH_PORT_9898_TCP_PROTO",
            "CREDWATCH_PORT_9898_TCP_PORT",
            "CREDWATCH_PORT_9898_TCP_ADDR",
            "CREDWATCH_METRICS_SERVICE_HOST",
            "CREDWATCH_KAFKA_PORT_9092_TCP_ADDR",
        ] {
            assert!(is_service_link(v), "{v}");
        }
        for v in [
            "CREDWATCH_KAFKA_BROKERS",
            "CREDWATCH_HTTP_LISTEN",
            "CREDWATCH_PORT_ABC_TCP",
            "CREDWATCH_KAFKA_BROKRES",
        ] {
            assert!(!is_service_link(v), "{v}");
        }
    }
}
