//! Environment overrides: `TALLYD_<SECTION>__<KEY>`, the Datadog Agent's `DD_*` variables
//! and the alert health thresholds, applied to the parsed file before it is typed.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::base::redact::serde_message;

/// Environment variables understood besides the general `TALLYD_SECTION__KEY` form.
const DD_VARS: &[(&str, &str, &str)] = &[
    ("DD_API_KEY", "datadog", "api_key"),
    ("DD_SITE", "datadog", "site"),
    ("DD_HOSTNAME", "datadog", "hostname"),
    ("DD_ENV", "datadog", "env"),
    ("DD_VERSION", "datadog", "version"),
    ("DD_DD_URL", "datadog", "url"),
];

/// How a Datadog Agent variable's text is read.
#[derive(Clone, Copy)]
enum Form {
    /// A string, as is.
    Text,
    /// A list of strings: the Agent's space-separated form (commas accepted too), or a TOML
    /// or JSON array.
    List,
    /// A list of numbers, in the same forms.
    Numbers,
    /// An integer.
    Int,
    /// `true` or `false` (also `1`/`0`).
    Bool,
}

/// The Agent's DogStatsD settings read from the environment, with the key each sets (the
/// same settings in the file: `docs/dogstatsd.md` lists them key by key).
const DD_DOGSTATSD_VARS: &[(&str, &str, &str, Form)] = &[
    (
        "DD_HISTOGRAM_AGGREGATES",
        "datadog",
        "histogram_aggregates",
        Form::List,
    ),
    (
        "DD_HISTOGRAM_PERCENTILES",
        "datadog",
        "histogram_percentiles",
        Form::Numbers,
    ),
    (
        "DD_DOGSTATSD_EXPIRY_SECONDS",
        "datadog",
        "expiry_seconds",
        Form::Int,
    ),
    ("DD_DOGSTATSD_TAGS", "statsd", "tags", Form::List),
    (
        "DD_STATSD_METRIC_NAMESPACE",
        "statsd",
        "metric_namespace",
        Form::Text,
    ),
    (
        "DD_STATSD_METRIC_NAMESPACE_BLOCKLIST",
        "statsd",
        "metric_namespace_blocklist",
        Form::List,
    ),
    (
        "DD_STATSD_METRIC_NAMESPACE_BLACKLIST",
        "statsd",
        "metric_namespace_blocklist",
        Form::List,
    ),
    (
        "DD_HISTOGRAM_COPY_TO_DISTRIBUTION",
        "statsd",
        "histogram_copy_to_distribution",
        Form::Bool,
    ),
    (
        "DD_HISTOGRAM_COPY_TO_DISTRIBUTION_PREFIX",
        "statsd",
        "histogram_copy_to_distribution_prefix",
        Form::Text,
    ),
    ("DD_DOGSTATSD_SOCKET", "statsd", "unix_socket", Form::Text),
    (
        "DD_DOGSTATSD_BUFFER_SIZE",
        "statsd",
        "max_packet_size",
        Form::Int,
    ),
    (
        "DD_DOGSTATSD_SO_RCVBUF",
        "statsd",
        "udp_recv_buffer",
        Form::Int,
    ),
];

/// Reads `value` of the variable `name` in `form`.
fn read_form(name: &str, value: &str, form: Form) -> Result<toml::Value, ConfigError> {
    let bad = |what: &str| {
        ConfigError::environment(
            "",
            format!("invalid value from the environment: {name}={value:?} is not {what}"),
        )
    };
    let items = || -> Vec<String> {
        let v = value.trim();
        if v.starts_with('[') {
            if let Ok(serde_json::Value::Array(a)) = serde_json::from_str::<serde_json::Value>(v) {
                return a
                    .into_iter()
                    .map(|x| match x {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect();
            }
        }
        v.trim_matches(|c| c == '[' || c == ']')
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(|s| s.trim_matches(|c| c == '"' || c == '\''))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(match form {
        Form::Text => toml::Value::String(value.to_string()),
        Form::List => toml::Value::Array(items().into_iter().map(toml::Value::String).collect()),
        Form::Numbers => toml::Value::Array(
            items()
                .iter()
                .map(|s| s.parse::<f64>().map(toml::Value::Float))
                .collect::<Result<_, _>>()
                .map_err(|_| bad("a list of numbers"))?,
        ),
        Form::Int => toml::Value::Integer(value.trim().parse().map_err(|_| bad("an integer"))?),
        Form::Bool => toml::Value::Boolean(match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(bad("true or false")),
        }),
    })
}

/// The order variables are applied in, so the result never depends on the environment's
/// order: the Datadog Agent's aliases first, then the alert thresholds, then `TALLYD_*`, which
/// therefore wins over an alias for the same key (`TALLYD_STATSD__UDP_LISTEN` over
/// `DD_DOGSTATSD_PORT`, `TALLYD_DATADOG__API_KEY` over `DD_API_KEY`).
fn rank(name: &str) -> u8 {
    if name.starts_with("TALLYD_") {
        2
    } else if name.starts_with("ALERT_") {
        1
    } else {
        0
    }
}

/// Applies environment overrides to the parsed file. The default config serves as the schema:
/// a key whose default is a string takes the variable's text as is; any other key takes the text
/// as a TOML value (`5`, `true`, `[0.5, 0.99]`, `"10s"`).
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let schema = toml::Table::try_from(Config::default())
        .map_err(|e| ConfigError::environment("", format!("internal: {e}")))?;
    let mut env: Vec<&(String, String)> = env.iter().collect();
    env.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    // `TALLYD_*` names are case-insensitive: two spellings of one key would otherwise make
    // the result depend on the sort above.
    let mut set_by: Vec<(String, String, &str)> = Vec::new();
    for (name, value) in env {
        if let Some((_, section, key)) = DD_VARS.iter().find(|(v, _, _)| v == name) {
            set_key(table, section, key, toml::Value::String(value.clone()));
        } else if let Some((_, section, key, form)) =
            DD_DOGSTATSD_VARS.iter().find(|(v, ..)| v == name)
        {
            let v = read_form(name, value, *form)?;
            // The Agent's 0 means "the OS default"; tallyd keeps its own then.
            if !(name == "DD_DOGSTATSD_SO_RCVBUF" && v.as_integer() == Some(0)) {
                check_type(name, section, key, &v)?;
                set_key(table, section, key, v);
            }
        } else if name == "DD_DOGSTATSD_MAPPER_PROFILES" {
            // The Agent takes this variable as JSON: a list of profiles.
            let bad = |why: String| {
                ConfigError::environment(
                    "",
                    format!(
                        "environment variable {name}: not a JSON list of mapper profiles: {why}"
                    ),
                )
            };
            let json: serde_json::Value =
                serde_json::from_str(value).map_err(|e| bad(e.to_string()))?;
            let v = toml::Value::try_from(json).map_err(|e| bad(e.to_string()))?;
            check_type(name, "statsd", "mapper_profiles", &v)?;
            set_key(table, "statsd", "mapper_profiles", v);
        } else if name == "DD_DOGSTATSD_NON_LOCAL_TRAFFIC" {
            let non_local = match read_form(name, value, Form::Bool)? {
                toml::Value::Boolean(b) => b,
                _ => false,
            };
            // As in the Agent: false listens on localhost only, true on every interface.
            for key in ["udp_listen", "tcp_listen"] {
                let current = table
                    .get("statsd")
                    .and_then(|s| s.get(key))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .or_else(|| schema["statsd"][key].as_str().map(str::to_string))
                    .unwrap_or_default();
                if current.is_empty() {
                    continue;
                }
                let port = current
                    .parse::<SocketAddr>()
                    .map(|a| a.port())
                    .unwrap_or(8125);
                let host = if non_local { "0.0.0.0" } else { "127.0.0.1" };
                set_key(
                    table,
                    "statsd",
                    key,
                    toml::Value::String(format!("{host}:{port}")),
                );
            }
        } else if let Some((_, key)) = crate::alert::config::HEALTH_ENV
            .iter()
            .find(|(v, _)| v == name)
        {
            let v: f64 = value.trim().parse().map_err(|_| {
                ConfigError::environment(
                    "",
                    format!("invalid value from the environment: {name}={value:?} is not a number"),
                )
            })?;
            let alerts = table
                .entry("alerts")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(alerts) = alerts {
                let health = alerts
                    .entry("health")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(h) = health {
                    h.insert(key.to_string(), toml::Value::Float(v));
                }
            }
        } else if name == "DD_TAGS" {
            let tags = value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|t| !t.is_empty())
                .map(|t| toml::Value::String(t.to_string()))
                .collect();
            set_key(table, "datadog", "tags", toml::Value::Array(tags));
        } else if name == "DD_DOGSTATSD_PORT" {
            let port: u16 = value.trim().parse().map_err(|_| {
                ConfigError::environment(
                    "",
                    format!(
                    "invalid value from the environment: DD_DOGSTATSD_PORT={value:?} is not a port"
                ),
                )
            })?;
            for key in ["udp_listen", "tcp_listen"] {
                let current = table
                    .get("statsd")
                    .and_then(|s| s.get(key))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .or_else(|| schema["statsd"][key].as_str().map(str::to_string))
                    .unwrap_or_default();
                // As in the Datadog Agent, port 0 closes the UDP listener.
                let new = if port == 0 && key == "udp_listen" {
                    String::new()
                } else {
                    replace_port(&current, port)
                };
                set_key(table, "statsd", key, toml::Value::String(new));
            }
        } else if let Some(rest) = name.strip_prefix("TALLYD_") {
            let Some((section, key)) = rest.split_once("__") else {
                return Err(ConfigError::environment(
                    "",
                    format!("environment variable {name}: expected TALLYD_<SECTION>__<KEY>"),
                ));
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            if let Some((_, _, other)) = set_by.iter().find(|(s, k, _)| *s == section && *k == key)
            {
                return Err(ConfigError::environment(
                    "",
                    format!("environment variables {other} and {name} both set {section}.{key}"),
                ));
            }
            set_by.push((section.clone(), key.clone(), name));
            let Some(default) = schema.get(&section).and_then(|s| s.get(&key)) else {
                return Err(ConfigError::environment(
                    "",
                    format!("environment variable {name}: there is no key {section}.{key}"),
                ));
            };
            // The errors never quote the value: it may be a credential
            // (`TALLYD_REMOTE_WRITE__HEADERS`).
            let parsed = if default.is_str() {
                toml::Value::String(value.clone())
            } else {
                let wrapped = format!("v = {value}");
                let mut t: toml::Table = toml::from_str(&wrapped).map_err(|_| {
                    ConfigError::environment(
                        "",
                        format!(
                            "environment variable {name}: not a valid value for {section}.{key}, which takes a TOML {}",
                            default.type_str()
                        ),
                    )
                })?;
                t.remove("v").unwrap_or(toml::Value::String(value.clone()))
            };
            check_type(name, &section, &key, &parsed)?;
            set_key(table, &section, &key, parsed);
        }
    }
    Ok(())
}

/// Whether `value` is of the type `section.key` takes, so that a wrong one is reported with
/// the variable's name (and without the value).
fn check_type(
    name: &str,
    section: &str,
    key: &str,
    value: &toml::Value,
) -> Result<(), ConfigError> {
    let mut t = toml::Table::new();
    set_key(&mut t, section, key, value.clone());
    match Config::deserialize(toml::Value::Table(t)) {
        Ok(_) => Ok(()),
        Err(e) => Err(ConfigError::environment(
            "",
            format!(
                "environment variable {name}: invalid value for {section}.{key}: {}",
                serde_message(&e.to_string()).replace('\n', " ")
            ),
        )),
    }
}

fn set_key(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    }
}

fn replace_port(addr: &str, port: u16) -> String {
    match addr.parse::<SocketAddr>() {
        Ok(mut a) => {
            a.set_port(port);
            a.to_string()
        }
        Err(_) => format!("0.0.0.0:{port}"),
    }
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
