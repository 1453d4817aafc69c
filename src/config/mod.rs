//! Typed configuration: defaults for every key, the TOML file, environment overrides, validation.
//!
//! Precedence is defaults < file < environment. A file is checked twice: once as text (so a bad
//! key or value is reported with its line and column) and once after the environment has been
//! applied (so a bad environment value is reported with the variable's name). `config/tallyd.toml`
//! must deserialize to exactly `Config::default()`; a test pins that.

mod env;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::aggregate::{AggregateConfig, GaugeMode};
pub use crate::alert::AlertsConfig;
pub use crate::api::config::HttpConfig;
pub use crate::base::duration::{format_duration, parse_duration};
pub use crate::base::error::{ConfigError, ErrorKind};
use crate::base::redact::serde_message;
pub use crate::base::redact::MARKER as REDACTED;
pub use crate::gps::GpsConfig;
pub use crate::host::HostMetricsConfig;
pub use crate::otlp::config::{InitialCumulative, OtlpConfig, ResourceAttributes};
pub use crate::queue::QueueConfig;
pub use crate::sinks::datadog::config::{Compression, DatadogConfig};
pub use crate::sinks::otlp::config::{
    Compression as OtlpCompression, HistogramMapping, OtlpExportConfig, Protocol as OtlpProtocol,
    Temporality,
};
pub use crate::sinks::prometheus::config::PrometheusConfig;
pub use crate::sinks::remote_write::RemoteWriteConfig;
pub use crate::statsd::config::StatsdConfig;

/// The whole configuration. Every section and key has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[log]`: level and format of tallyd's own log.
    pub log: LogConfig,
    /// `[statsd]`: the StatsD/DogStatsD listeners.
    pub statsd: StatsdConfig,
    /// `[aggregate]`: windows, limits, percentiles.
    pub aggregate: AggregateConfig,
    /// `[http]`: the HTTP server (`/metrics`, `/health`, the API).
    pub http: HttpConfig,
    /// `[prometheus]`: the `/metrics` exposition of aggregated series.
    pub prometheus: PrometheusConfig,
    /// `[datadog]`: forwarding to the Datadog intake.
    pub datadog: DatadogConfig,
    /// `[alerts]`: rules and notifiers.
    pub alerts: AlertsConfig,
    /// `[queue]`: the durable on-disk queues of the forwarders.
    pub queue: QueueConfig,
    /// `[gps]`: the GPS tracker server.
    pub gps: GpsConfig,
    /// `[otlp]`: the OpenTelemetry metrics receiver.
    pub otlp: OtlpConfig,
    /// `[remote_write]`: forwarding with Prometheus remote write.
    pub remote_write: RemoteWriteConfig,
    /// `[host_metrics]`: host and container metrics.
    pub host_metrics: HostMetricsConfig,
    /// `[otlp_export]`: forwarding over OTLP (HTTP or gRPC).
    pub otlp_export: OtlpExportConfig,
}

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// How log records are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per record.
    Text,
    /// One JSON object per line.
    Json,
}

/// The process environment as text. `std::env::vars` panics on a name or value that is not
/// UTF-8; such a variable is skipped unless tallyd reads it (`TALLYD_*`, `DD_*`, `ALERT_*`),
/// where it is an error naming it.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(n), Ok(v)) => env.push((n, v)),
            (n, _) => {
                let n = match n {
                    Ok(n) => n,
                    Err(raw) => raw.to_string_lossy().into_owned(),
                };
                if ["TALLYD_", "DD_", "ALERT_"]
                    .iter()
                    .any(|p| n.starts_with(p))
                {
                    let why = format!("{n}: the variable's name or value is not valid UTF-8");
                    return Err(ConfigError::environment(n, why));
                }
            }
        }
    }
    Ok(env)
}

impl Config {
    /// Loads defaults, then the file (if any), then the process environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = process_env()?;
        Self::load_with_env(path, &env)
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError::read(p.display().to_string(), e))?,
            None => String::new(),
        };
        let origin = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        Self::from_toml_with_env(&text, &origin, env)
    }

    /// Parses TOML text (checked with line and column), applies `env`, validates.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        // First pass: the text alone, so errors carry line, column and key. The parser's
        // message is shown without the offending line and without a value it quotes: either
        // may be a credential.
        let syntax = |e: toml::de::Error| {
            let reason = serde_message(e.message());
            match key_path(text) {
                Some(key) => {
                    let mut e =
                        ConfigError::syntax(origin, text, e.span(), format!("{key}: {reason}"));
                    e.key = key;
                    e
                }
                None => ConfigError::syntax(origin, text, e.span(), reason),
            }
        };
        toml::from_str::<Config>(text).map_err(syntax)?;
        let mut table: toml::Table = toml::from_str(text).map_err(syntax)?;
        env::apply_env(&mut table, env)?;
        let cfg = Config::deserialize(toml::Value::Table(table)).map_err(|e| {
            ConfigError::environment(
                "",
                format!(
                    "invalid value from the environment: {}",
                    serde_message(&e.to_string())
                ),
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what types alone cannot, section by section, then what spans sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.statsd.validate()?;
        self.http.validate()?;
        self.aggregate.validate()?;
        self.prometheus.validate()?;
        self.gps.validate()?;
        self.datadog.validate()?;
        self.queue.validate()?;
        self.otlp.validate()?;
        self.remote_write.validate()?;
        self.host_metrics.validate()?;
        self.otlp_export.validate()?;
        self.alerts.validate()?;
        self.alerts
            .validate_datadog_notifiers(!self.datadog.api_key.is_empty())
    }

    /// The effective configuration as TOML, secrets included (see [`Config::to_toml_redacted`]
    /// for what may be shown).
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of strings, numbers and arrays cannot fail.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// A copy fit to be shown: every credential (API key, admin token, bearer token, basic
    /// auth password, PagerDuty routing key, Slack webhook URL, every configured header value)
    /// replaced by [`REDACTED`] when set (an empty one stays empty, so the defaults print as
    /// they are), and the password of every URL by `***`. The running configuration is not
    /// touched.
    pub fn redacted(&self) -> Config {
        Config {
            http: self.http.redacted(),
            datadog: self.datadog.redacted(),
            alerts: self.alerts.redacted(),
            gps: self.gps.redacted(),
            remote_write: self.remote_write.redacted(),
            otlp_export: self.otlp_export.redacted(),
            ..self.clone()
        }
    }

    /// What `print-config` prints: [`Config::redacted`] as TOML.
    pub fn to_toml_redacted(&self) -> String {
        self.redacted().to_toml()
    }

    /// Whether any configured component keeps a durable queue (Datadog delivery, remote write,
    /// GPS point forwarding).
    pub fn uses_queues(&self) -> bool {
        !self.datadog.api_key.is_empty()
            || !self.remote_write.url.is_empty()
            || self.otlp_export.enabled
            || (self.gps.enabled && !self.gps.listen.is_empty() && !self.gps.points_url.is_empty())
    }

    /// For `check-config`: when a component keeps a durable queue, `queue.directory` (or, if
    /// it does not exist yet, the nearest directory above it, where tallyd would create it)
    /// must take a file. A probe file is written and removed; nothing else is created.
    pub fn check_queue_directory(&self) -> Result<(), ConfigError> {
        if !self.uses_queues() {
            return Ok(());
        }
        let dir = Path::new(&self.queue.directory);
        let existing = dir
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let probe = existing.join(format!(".tallyd-check-{}", std::process::id()));
        let written = std::fs::write(&probe, b"");
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| {
            let what = if existing == dir {
                String::new()
            } else {
                format!(
                    " (it does not exist yet; {} cannot be written)",
                    existing.display()
                )
            };
            ConfigError::invalid(
                "queue.directory",
                format!(
                    " = {:?} is not a writable directory{what}: {e}",
                    self.queue.directory
                ),
            )
        })
    }
}

/// The dotted key a typing error in `text` concerns (`datadog.compression`), when the text is
/// TOML: the error from the parsed table names it, the one from the text shows the line instead.
fn key_path(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let e = Config::deserialize(toml::Value::Table(table)).err()?;
    let msg = e.to_string();
    let line = msg.lines().find_map(|l| l.strip_prefix("in `"))?;
    Some(line.strip_suffix('`').unwrap_or(line).to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn shipped_config_file_equals_defaults() {
        let text = include_str!("../../config/tallyd.toml");
        let cfg = Config::from_toml_with_env(text, "config/tallyd.toml", &[])
            .expect("shipped config parses");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn print_config_round_trips() {
        let cfg = Config::default();
        let back = Config::from_toml_with_env(&cfg.to_toml(), "printed", &[])
            .expect("printed config parses");
        assert_eq!(back, cfg);
        // What print-config shows: the defaults set no secret, so nothing is redacted.
        let back = Config::from_toml_with_env(&cfg.to_toml_redacted(), "printed", &[])
            .expect("printed config parses");
        assert_eq!(back, cfg);
    }

    #[test]
    fn redacted_hides_every_secret_and_keeps_the_rest() {
        assert_eq!(Config::default().redacted(), Config::default());
        let text = r#"
[http]
admin_token = "s3cr3t-1"
[datadog]
api_key = "s3cr3t-2"
url = "http://dd:s3cr3t-3@127.0.0.1:1"
[remote_write]
url = "http://rw:s3cr3t-4@127.0.0.1:1/w"
bearer_token = "s3cr3t-5"
headers = { X-Scope-OrgID = "s3cr3t-6" }
[gps]
points_url = "http://s3cr3t-7@127.0.0.1:1/p"
points_headers = { Authorization = "s3cr3t-8" }
[alerts.notifiers.chat]
type = "slack"
url = "https://hooks.slack.com/services/T/B/s3cr3t-9"
headers = { Authorization = "s3cr3t-10" }
[alerts.notifiers.pd]
type = "pagerduty"
routing_key = "s3cr3t-11"
[alerts.notifiers.hook]
type = "webhook"
url = "http://u:s3cr3t-12@127.0.0.1:1/hook"
"#;
        let cfg = Config::from_toml_with_env(text, "t", &[]).expect("valid");
        let env = env(&[
            ("TALLYD_REMOTE_WRITE__BEARER_TOKEN", ""),
            ("TALLYD_REMOTE_WRITE__BASIC_AUTH_USER", "rw"),
            ("TALLYD_REMOTE_WRITE__BASIC_AUTH_PASSWORD", "s3cr3t-13"),
        ]);
        let basic = Config::from_toml_with_env(text, "t", &env).expect("valid");
        for c in [&cfg, &basic] {
            let shown = c.to_toml_redacted();
            assert!(!shown.contains("s3cr3t"), "{shown}");
            let r = c.redacted();
            assert_eq!(r.http.admin_token, REDACTED);
            assert_eq!(r.datadog.api_key, REDACTED);
            assert_eq!(r.datadog.url, "http://dd:***@127.0.0.1:1");
            assert_eq!(r.remote_write.url, "http://rw:***@127.0.0.1:1/w");
            assert_eq!(r.remote_write.headers["X-Scope-OrgID"], REDACTED);
            assert_eq!(r.gps.points_url, "http://***@127.0.0.1:1/p");
            assert_eq!(r.gps.points_headers["Authorization"], REDACTED);
            let n = &r.alerts.notifiers;
            assert_eq!(n["chat"].url, REDACTED);
            assert_eq!(n["chat"].headers["Authorization"], REDACTED);
            assert_eq!(n["pd"].routing_key, REDACTED);
            assert_eq!(n["hook"].url, "http://u:***@127.0.0.1:1/hook");
            // Everything that is not a credential is shown as it is.
            let mut back = r.clone();
            back.http.admin_token = c.http.admin_token.clone();
            back.datadog = c.datadog.clone();
            back.remote_write = c.remote_write.clone();
            back.gps = c.gps.clone();
            back.alerts.notifiers = c.alerts.notifiers.clone();
            assert_eq!(&back, c);
        }
        assert_eq!(basic.redacted().remote_write.basic_auth_password, REDACTED);
        assert_eq!(basic.redacted().remote_write.basic_auth_user, "rw");
        assert_eq!(cfg.redacted().remote_write.bearer_token, REDACTED);
        // The running configuration keeps its secrets.
        assert_eq!(cfg.datadog.api_key, "s3cr3t-2");
    }

    #[test]
    fn unknown_key_names_key_line_and_column() {
        let e = Config::from_toml_with_env(
            "[statsd]\nudp_listen = \"0.0.0.0:8125\"\nbogus = 1\n",
            "t.toml",
            &[],
        )
        .expect_err("unknown key must fail");
        let msg = e.to_string();
        assert!(msg.contains("bogus"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("column 1"), "{msg}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let e = Config::from_toml_with_env("[aggregate]\nflush_interval = 10\n", "t.toml", &[])
            .expect_err("type");
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Config::from_toml_with_env(
            "[aggregate]\nflush_interval = \"10 parsecs\"\n",
            "t.toml",
            &[],
        )
        .expect_err("unit");
        assert!(e.to_string().contains("unit"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let e = Config::from_toml_with_env("[http]\nlisten = \"nowhere\"\n", "t", &[])
            .expect_err("addr");
        assert!(e.to_string().contains("http.listen"), "{e}");
        let e = Config::from_toml_with_env("[aggregate]\npercentiles = [1.5]\n", "t", &[])
            .expect_err("pct");
        assert!(e.to_string().contains("aggregate.percentiles"), "{e}");
    }

    #[test]
    fn datadog_environment_overrides() {
        let cfg = Config::from_toml_with_env(
            "",
            "t",
            &env(&[
                ("DD_API_KEY", "0123456789"),
                ("DD_SITE", "datadoghq.eu"),
                ("DD_HOSTNAME", "web-1"),
                ("DD_ENV", "prod"),
                ("DD_VERSION", "1.2.3"),
                ("DD_TAGS", "team:core, region:eu  tier:web"),
                ("DD_DOGSTATSD_PORT", "9125"),
            ]),
        )
        .expect("valid env");
        assert_eq!(cfg.datadog.api_key, "0123456789");
        assert_eq!(cfg.datadog.site, "datadoghq.eu");
        assert_eq!(cfg.datadog.hostname, "web-1");
        assert_eq!(cfg.datadog.env, "prod");
        assert_eq!(cfg.datadog.version, "1.2.3");
        assert_eq!(cfg.datadog.tags, vec!["team:core", "region:eu", "tier:web"]);
        assert_eq!(cfg.statsd.udp_listen, "0.0.0.0:9125");
        assert_eq!(cfg.statsd.tcp_listen, "0.0.0.0:9125");
    }

    #[test]
    fn datadog_and_queue_validation_names_the_key() {
        let cases = [
            ("[datadog]\nsite = \"example.com\"", "datadog.site"),
            ("[datadog]\nurl = \"ftp://x\"", "datadog.url"),
            (
                "[datadog]\nhistogram_aggregates = [\"p99\"]",
                "datadog.histogram_aggregates",
            ),
            (
                "[datadog]\nhistogram_percentiles = [0.999]",
                "datadog.histogram_percentiles",
            ),
            ("[datadog]\ncompression = \"lz4\"", "compression"),
            ("[queue]\nmax_bytes = 10", "queue.max_bytes"),
            (
                "[statsd]\nudp_batch_wait = \"100ms\"",
                "statsd.udp_batch_wait",
            ),
            (
                "[queue]\nbackoff_initial = \"10s\"\nbackoff_max = \"1s\"",
                "queue.backoff_max",
            ),
        ];
        for (text, key) in cases {
            let e = Config::from_toml_with_env(text, "t", &[])
                .expect_err(text)
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let ok = Config::from_toml_with_env(
            "[datadog]\nsite = \"nowhere\"\nurl = \"http://127.0.0.1:1\"",
            "t",
            &[],
        );
        assert_eq!(
            ok.expect("url overrides site").datadog.base_url(),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            Config::default().datadog.base_url(),
            "https://api.datadoghq.com"
        );
    }

    #[test]
    fn datadog_notifier_needs_datadog_delivery() {
        let text = "[alerts.notifiers.dd]\ntype = \"datadog\"\nseverities = [\"critical\"]\n";
        let e = Config::from_toml_with_env(text, "t", &[])
            .expect_err("no key")
            .to_string();
        assert!(
            e.contains("alerts.notifiers.dd") && e.contains("datadog.api_key"),
            "{e}"
        );
        // The key from the environment turns delivery on, and the notifier is accepted.
        let cfg = Config::from_toml_with_env(text, "t", &env(&[("DD_API_KEY", "k")]))
            .expect("key from DD_API_KEY");
        assert_eq!(
            cfg.alerts.notifiers["dd"].kind,
            crate::alert::config::NotifierKind::Datadog
        );
        // With alerting off no notifier starts, so nothing needs the key.
        let off = format!("[alerts]\nenabled = false\n{text}");
        assert!(Config::from_toml_with_env(&off, "t", &[]).is_ok());
        let with_url = format!("{text}url = \"http://x\"\n");
        let e = Config::from_toml_with_env(&with_url, "t", &env(&[("DD_API_KEY", "k")]))
            .expect_err("url")
            .to_string();
        assert!(e.contains("alerts.notifiers.dd.url"), "{e}");
    }

    #[test]
    fn dogstatsd_port_zero_closes_udp() {
        let cfg = Config::from_toml_with_env("", "t", &env(&[("DD_DOGSTATSD_PORT", "0")]))
            .expect("valid");
        assert_eq!(cfg.statsd.udp_listen, "");
        assert_eq!(cfg.statsd.tcp_listen, "0.0.0.0:0");
    }

    #[test]
    fn general_environment_form() {
        let cfg = Config::from_toml_with_env(
            "[statsd]\nudp_listen = \"127.0.0.1:1\"\n",
            "t",
            &env(&[
                ("TALLYD_STATSD__UDP_LISTEN", "127.0.0.1:7000"),
                ("TALLYD_AGGREGATE__FLUSH_INTERVAL", "1s"),
                ("TALLYD_AGGREGATE__PERCENTILES", "[0.9]"),
                ("TALLYD_STATSD__GAUGE_MODE", "delta"),
                ("TALLYD_STATSD__MAX_TAGS", "7"),
            ]),
        )
        .expect("valid env");
        assert_eq!(cfg.statsd.udp_listen, "127.0.0.1:7000");
        assert_eq!(cfg.aggregate.flush_interval, Duration::from_secs(1));
        assert_eq!(cfg.aggregate.percentiles, vec![0.9]);
        assert_eq!(cfg.statsd.gauge_mode, GaugeMode::Delta);
        assert_eq!(cfg.statsd.max_tags, 7);
    }

    #[test]
    fn bad_environment_names_the_variable() {
        let e = Config::from_toml_with_env("", "t", &env(&[("TALLYD_STATSD__NOPE", "1")]))
            .expect_err("unknown");
        assert!(e.to_string().contains("TALLYD_STATSD__NOPE"), "{e}");
        let e = Config::from_toml_with_env("", "t", &env(&[("TALLYD_STATSD__MAX_TAGS", "many")]))
            .expect_err("type");
        assert!(e.to_string().contains("TALLYD_STATSD__MAX_TAGS"), "{e}");
        let e = Config::from_toml_with_env("", "t", &env(&[("DD_DOGSTATSD_PORT", "x")]))
            .expect_err("port");
        assert!(e.to_string().contains("DD_DOGSTATSD_PORT"), "{e}");
    }

    #[test]
    fn errors_never_quote_a_secret_value() {
        let envs = [
            ("TALLYD_REMOTE_WRITE__HEADERS", "{ A = \"s3cr3t"),
            ("TALLYD_REMOTE_WRITE__HEADERS", "\"s3cr3t\""),
            ("TALLYD_GPS__POINTS_HEADERS", "{ A = \"s3cr3t\\n\" }"),
            ("TALLYD_REMOTE_WRITE__URL", "ftp://u:s3cr3t@h"),
        ];
        for (var, value) in envs {
            let e = Config::from_toml_with_env("", "t", &env(&[(var, value)]))
                .expect_err(value)
                .to_string();
            assert!(!e.contains("s3cr3t"), "{var}={value}: {e}");
            let key = var.trim_start_matches("TALLYD_").replace("__", ".");
            assert!(
                e.contains(var) || e.contains(&key.to_ascii_lowercase()),
                "{var}={value}: {e}"
            );
        }
        let files = [
            (
                "[remote_write]\nheaders = \"s3cr3t\"\n",
                "remote_write.headers",
            ),
            ("[remote_write]\nbearer_token = \"s3cr3t\n", "line 2"),
            ("[http]\nadmin_token = 12345\n", "http.admin_token"),
            (
                "[alerts.notifiers.x]\ntype = \"slack\"\nurl = \"h/s3cr3t\"\n",
                "alerts.notifiers.x.url",
            ),
            (
                "[alerts.notifiers.x]\nurl = \"http://h\"\nheaders = { A = \"s3cr3t\\u0000\" }\n",
                "alerts.notifiers.x.headers",
            ),
        ];
        for (text, names) in files {
            let e = Config::from_toml_with_env(text, "t", &[])
                .expect_err(text)
                .to_string();
            assert!(!e.contains("s3cr3t") && !e.contains("12345"), "{text}: {e}");
            assert!(e.contains(names), "{text}: {e}");
        }
    }

    #[test]
    fn otlp_settings_are_validated() {
        let e =
            Config::from_toml_with_env("[otlp]\nattribute_tags = [\"service.name\"]\n", "t", &[])
                .expect_err("rule");
        assert!(e.to_string().contains("otlp.attribute_tags"), "{e}");
        let e =
            Config::from_toml_with_env("[otlp]\nmax_body_bytes = 0\n", "t", &[]).expect_err("zero");
        assert!(e.to_string().contains("otlp.max_body_bytes"), "{e}");
        let e = Config::from_toml_with_env("[otlp]\ngrpc_listen = \"x\"\n", "t", &[])
            .expect_err("addr");
        assert!(e.to_string().contains("otlp.grpc_listen"), "{e}");
        let cfg = Config::from_toml_with_env(
            "[otlp]\nattribute_tags = [\" k8s.pod.name = pod \"]\n",
            "t",
            &env(&[("TALLYD_OTLP__HTTP_LISTEN", "")]),
        )
        .expect("valid");
        assert_eq!(
            cfg.otlp.attribute_renames(),
            vec![("k8s.pod.name".to_string(), "pod".to_string())]
        );
        assert_eq!(cfg.otlp.http_listen, "");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(format_duration(Duration::from_micros(500)), "500us");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
    }
}
