//! Typed configuration: defaults for every key, the TOML file, environment overrides, validation.
//!
//! Precedence is defaults < file < environment. A file is checked twice: once as text (so a bad
//! key or value is reported with its line and column) and once after the environment has been
//! applied (so a bad environment value is reported with the variable's name). `config/tallyd.toml`
//! must deserialize to exactly `Config::default()`; a test pins that.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration. Every section and key has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: LogConfig,
    pub statsd: StatsdConfig,
    pub aggregate: AggregateConfig,
    pub http: HttpConfig,
    pub prometheus: PrometheusConfig,
    pub datadog: DatadogConfig,
    pub alerts: crate::alert::AlertsConfig,
    pub queue: QueueConfig,
    pub gps: crate::gps::GpsConfig,
    pub otlp: OtlpConfig,
    pub remote_write: crate::sinks::remote_write::RemoteWriteConfig,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How a gauge value with a leading sign (`+3|g`, `-2|g`) is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GaugeMode {
    /// The Datadog Agent's reading: the sign belongs to the number; `-2|g` sets the gauge to -2.
    Absolute,
    /// etsy statsd's and statsd_exporter's reading: a signed value moves the previous value.
    Delta,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsdConfig {
    /// UDP listen address; empty disables UDP.
    pub udp_listen: String,
    /// TCP listen address (newline-delimited); empty disables TCP.
    pub tcp_listen: String,
    /// Path of a Unix datagram socket; empty disables it.
    pub unix_socket: String,
    /// Number of UDP receiver threads, each with its own SO_REUSEPORT socket; 0 = one per two
    /// cores, at least 1, at most 4.
    pub udp_receivers: usize,
    /// SO_RCVBUF requested for each UDP socket, in bytes.
    pub udp_recv_buffer: usize,
    /// Datagrams read per recvmmsg call.
    pub udp_batch: usize,
    /// Pause after a recvmmsg call that returned fewer than `udp_batch` datagrams (it emptied
    /// the socket), so that the next call returns a fuller batch; 0 reads as soon as a datagram
    /// arrives.
    #[serde(with = "duration_str")]
    pub udp_batch_wait: Duration,
    /// Largest datagram accepted, in bytes; larger ones are truncated, counted, and their last line dropped.
    pub max_packet_size: usize,
    /// Concurrent TCP connections; further connections are refused and counted.
    pub tcp_max_connections: usize,
    /// A TCP connection that sends nothing for this long is closed.
    #[serde(with = "duration_str")]
    pub tcp_idle_timeout: Duration,
    /// Longest TCP line accepted, in bytes; a longer line is discarded and counted.
    pub tcp_max_line_length: usize,
    /// Tags per line; a line with more is rejected and counted.
    pub max_tags: usize,
    /// `absolute` (Datadog Agent) or `delta` (etsy statsd, statsd_exporter).
    pub gauge_mode: GaugeMode,
}

impl Default for StatsdConfig {
    fn default() -> Self {
        Self {
            udp_listen: "0.0.0.0:8125".into(),
            tcp_listen: "0.0.0.0:8125".into(),
            unix_socket: String::new(),
            udp_receivers: 0,
            udp_recv_buffer: 8 * 1024 * 1024,
            udp_batch: 32,
            udp_batch_wait: Duration::from_micros(500),
            max_packet_size: 8192,
            tcp_max_connections: 1024,
            tcp_idle_timeout: Duration::from_secs(300),
            tcp_max_line_length: 65536,
            max_tags: 100,
            gauge_mode: GaugeMode::Absolute,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateConfig {
    /// Length of one aggregation window.
    #[serde(with = "duration_str")]
    pub flush_interval: Duration,
    /// Distinct contexts (name + tags + type) kept at once; samples for new contexts beyond it are dropped and counted.
    pub max_contexts: usize,
    /// Quantiles computed for timers, histograms and distributions, each in (0, 1).
    pub percentiles: Vec<f64>,
    /// Distinct members counted per set per window; members beyond it are dropped and counted.
    pub max_set_size: usize,
    /// A context with no sample for this long is forgotten by the aggregator (its memory freed).
    #[serde(with = "duration_str")]
    pub context_expiry: Duration,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(10),
            max_contexts: 200_000,
            percentiles: vec![0.5, 0.95, 0.99],
            max_set_size: 100_000,
            context_expiry: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP server (`/metrics`, `/health`).
    pub listen: String,
    /// Bearer token for mutating API routes (alert test, queue admin) called from other hosts; empty = loopback only.
    pub admin_token: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".into(),
            admin_token: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// A series that receives nothing for this long disappears from `/metrics`.
    #[serde(with = "duration_str")]
    pub series_ttl: Duration,
    /// Series kept for `/metrics`; new series beyond it are dropped and counted.
    pub max_series: usize,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            series_ttl: Duration::from_secs(300),
            max_series: 200_000,
        }
    }
}

/// Payload compression for the Datadog intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Gzip,
    Deflate,
}

/// Sites listed by the Datadog Agent's config template and the public API docs (REFERENCE.md §3.2).
pub const DATADOG_SITES: &[&str] = &[
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "uk1.datadoghq.com",
    "ddog-gov.com",
    "us2.ddog-gov.com",
];

/// Histogram aggregates the Datadog Agent knows (`histogram_aggregates`).
pub const HISTOGRAM_AGGREGATES: &[&str] = &["min", "max", "median", "avg", "sum", "count"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatadogConfig {
    /// API key (`DD_API_KEY`). Delivery to Datadog is on exactly when this is set.
    pub api_key: String,
    /// Datadog site (`DD_SITE`).
    pub site: String,
    /// Base URL overriding the one derived from `site` (proxies, tests); empty = `https://api.<site>`.
    pub url: String,
    /// Host name reported with metrics (`DD_HOSTNAME`); empty = the system host name.
    pub hostname: String,
    /// `env:` tag (`DD_ENV`).
    pub env: String,
    /// `version:` tag (`DD_VERSION`).
    pub version: String,
    /// Constant tags (`DD_TAGS`, space or comma separated in the environment).
    pub tags: Vec<String>,
    /// `zstd` (the Agent's default), `gzip` or `deflate`.
    pub compression: Compression,
    /// Aggregates sent for timers and histograms: min, max, median, avg, sum, count.
    pub histogram_aggregates: Vec<String>,
    /// Percentiles sent for timers and histograms, each in (0, 1), as `<name>.<N>percentile`.
    pub histogram_percentiles: Vec<f64>,
    /// Timeout of one request to the intake.
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// Check the key against `/api/v1/validate` at start.
    pub validate_api_key: bool,
}

impl Default for DatadogConfig {
    fn default() -> Self {
        Self {
            api_key: String::new(),
            site: "datadoghq.com".into(),
            url: String::new(),
            hostname: String::new(),
            env: String::new(),
            version: String::new(),
            tags: Vec::new(),
            compression: Compression::Zstd,
            histogram_aggregates: ["max", "median", "avg", "count"].map(String::from).to_vec(),
            histogram_percentiles: vec![0.95],
            request_timeout: Duration::from_secs(20),
            validate_api_key: true,
        }
    }
}

impl DatadogConfig {
    /// The intake base URL: `url` if set, else `https://api.<site>`.
    pub fn base_url(&self) -> String {
        if self.url.is_empty() {
            format!("https://api.{}", self.site)
        } else {
            self.url.trim_end_matches('/').to_string()
        }
    }
}

/// The durable delivery queues (Datadog today; other sinks share the directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Directory holding one sub-directory per queue.
    pub directory: String,
    /// Bytes of pending payloads per queue; at the limit the oldest are dropped and counted.
    pub max_bytes: u64,
    /// Bytes of dead letters per queue; at the limit the oldest are dropped and counted.
    pub dlq_max_bytes: u64,
    /// Wait after the first failed attempt; doubles per failure up to `backoff_max`, with jitter.
    #[serde(with = "duration_str")]
    pub backoff_initial: Duration,
    /// Longest wait between attempts (a `Retry-After` from the far side is honoured even if longer).
    #[serde(with = "duration_str")]
    pub backoff_max: Duration,
    /// At shutdown, how long the senders may keep delivering what is queued (it stays on disk).
    #[serde(with = "duration_str")]
    pub shutdown_drain: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            directory: "/var/lib/tallyd/queue".into(),
            max_bytes: 256 * 1024 * 1024,
            dlq_max_bytes: 64 * 1024 * 1024,
            backoff_initial: Duration::from_secs(2),
            backoff_max: Duration::from_secs(64),
            shutdown_drain: Duration::from_secs(2),
        }
    }
}

/// What the first point of a cumulative stream counts for (see `[otlp] initial_cumulative_value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialCumulative {
    /// Counted in full when the stream started after tallyd did, else only a baseline.
    Auto,
    /// Always counted in full.
    Keep,
    /// Always only a baseline.
    Drop,
}

/// Which resource and scope attributes become tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceAttributes {
    /// Only those named in `attribute_tags`.
    Mapped,
    /// Those named in `attribute_tags` renamed, every other one under its own name.
    All,
}

/// The OTLP metrics receiver (OTLP/HTTP and OTLP/gRPC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Turns both OTLP listeners on or off.
    pub enabled: bool,
    /// OTLP/HTTP address (`POST /v1/metrics`); empty disables it.
    pub http_listen: String,
    /// OTLP/gRPC address (`MetricsService/Export`); empty disables it.
    pub grpc_listen: String,
    /// Largest request body, in bytes, before and after gzip decompression.
    pub max_body_bytes: usize,
    /// Data points per request; a larger request is refused whole.
    pub max_points_per_request: usize,
    /// Attributes on one data point; a point with more is rejected.
    pub max_attributes_per_point: usize,
    /// Histogram buckets on one data point; a point with more is rejected.
    pub max_buckets_per_point: usize,
    /// Requests handled at once across both transports; more are told to retry later.
    pub max_concurrent_requests: usize,
    /// Cumulative streams remembered (to turn totals into per-window deltas).
    pub max_streams: usize,
    /// A stream not seen for this long is forgotten.
    #[serde(with = "duration_str")]
    pub stream_expiry: Duration,
    /// `auto`, `keep` or `drop`: what the first point of a cumulative stream counts for.
    pub initial_cumulative_value: InitialCumulative,
    /// `attribute=tag` renames for resource and scope attributes.
    pub attribute_tags: Vec<String>,
    /// `mapped` or `all`: which resource and scope attributes become tags.
    pub resource_attributes: ResourceAttributes,
    /// Tag that carries the instrumentation scope name; empty = none.
    pub scope_name_tag: String,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            http_listen: "0.0.0.0:4318".into(),
            grpc_listen: "0.0.0.0:4317".into(),
            max_body_bytes: 20 * 1024 * 1024,
            max_points_per_request: 100_000,
            max_attributes_per_point: 128,
            max_buckets_per_point: 2048,
            max_concurrent_requests: 64,
            max_streams: 200_000,
            stream_expiry: Duration::from_secs(900),
            initial_cumulative_value: InitialCumulative::Auto,
            attribute_tags: [
                "service.name=service",
                "service.version=version",
                "deployment.environment.name=env",
                "deployment.environment=env",
                "host.name=host",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            resource_attributes: ResourceAttributes::Mapped,
            scope_name_tag: String::new(),
        }
    }
}

impl OtlpConfig {
    /// `attribute_tags` as (attribute, tag) pairs; call after [`Config::validate`].
    pub fn attribute_renames(&self) -> Vec<(String, String)> {
        self.attribute_tags
            .iter()
            .filter_map(|r| r.split_once('='))
            .map(|(a, t)| (a.trim().to_string(), t.trim().to_string()))
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_addr("otlp.http_listen", &self.http_listen, true)?;
        check_addr("otlp.grpc_listen", &self.grpc_listen, true)?;
        for (key, v) in [
            ("otlp.max_body_bytes", self.max_body_bytes),
            ("otlp.max_points_per_request", self.max_points_per_request),
            (
                "otlp.max_attributes_per_point",
                self.max_attributes_per_point,
            ),
            ("otlp.max_buckets_per_point", self.max_buckets_per_point),
            ("otlp.max_concurrent_requests", self.max_concurrent_requests),
            ("otlp.max_streams", self.max_streams),
        ] {
            if v == 0 {
                return Err(err(format!("invalid config: {key} must be greater than 0")));
            }
        }
        if self.stream_expiry.is_zero() {
            return Err(err(
                "invalid config: otlp.stream_expiry must be greater than 0s",
            ));
        }
        for rule in &self.attribute_tags {
            let ok = rule.split_once('=').is_some_and(|(a, t)| {
                let t = t.trim();
                !a.trim().is_empty() && !t.is_empty() && !t.contains([',', ':'])
            });
            if !ok {
                return Err(err(format!(
                    "invalid config: otlp.attribute_tags: {rule:?} is not \"attribute=tag\" (the tag may not contain ',' or ':')"
                )));
            }
        }
        if self.scope_name_tag.contains([',', ':']) {
            return Err(err(
                "invalid config: otlp.scope_name_tag may not contain ',' or ':'",
            ));
        }
        Ok(())
    }
}

/// A configuration error, already phrased for the operator: it names the key and, for a file,
/// the line and column.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error with a message already phrased for the operator.
    pub fn new(msg: impl Into<String>) -> ConfigError {
        ConfigError(msg.into())
    }
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl Config {
    /// Loads defaults, then the file (if any), then the process environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| err(format!("cannot read config file {}: {e}", p.display())))?,
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
        // First pass: the text alone, so errors carry line, column and key.
        toml::from_str::<Config>(text).map_err(|e| err(format!("invalid config {origin}: {e}")))?;
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| err(format!("invalid config {origin}: {e}")))?;
        apply_env(&mut table, env)?;
        let cfg = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| err(format!("invalid value from the environment: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what types alone cannot: addresses, ranges, non-zero sizes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_addr("statsd.udp_listen", &self.statsd.udp_listen, true)?;
        check_addr("statsd.tcp_listen", &self.statsd.tcp_listen, true)?;
        check_addr("http.listen", &self.http.listen, false)?;
        let positive = [
            ("statsd.udp_recv_buffer", self.statsd.udp_recv_buffer),
            ("statsd.udp_batch", self.statsd.udp_batch),
            (
                "statsd.tcp_max_connections",
                self.statsd.tcp_max_connections,
            ),
            (
                "statsd.tcp_max_line_length",
                self.statsd.tcp_max_line_length,
            ),
            ("aggregate.max_contexts", self.aggregate.max_contexts),
            ("aggregate.max_set_size", self.aggregate.max_set_size),
            ("prometheus.max_series", self.prometheus.max_series),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(err(format!("invalid config: {key} must be greater than 0")));
            }
        }
        if !(512..=65535).contains(&self.statsd.max_packet_size) {
            return Err(err(
                "invalid config: statsd.max_packet_size must be between 512 and 65535",
            ));
        }
        if self.statsd.udp_batch_wait > Duration::from_millis(50) {
            return Err(err(
                "invalid config: statsd.udp_batch_wait must be at most 50ms",
            ));
        }
        if self.statsd.udp_batch > 1024 {
            return Err(err("invalid config: statsd.udp_batch must be at most 1024"));
        }
        if self.statsd.udp_receivers > 64 {
            return Err(err(
                "invalid config: statsd.udp_receivers must be at most 64",
            ));
        }
        if self.aggregate.flush_interval < Duration::from_millis(100) {
            return Err(err(
                "invalid config: aggregate.flush_interval must be at least 100ms",
            ));
        }
        for (key, d) in [
            ("statsd.tcp_idle_timeout", self.statsd.tcp_idle_timeout),
            ("aggregate.context_expiry", self.aggregate.context_expiry),
            ("prometheus.series_ttl", self.prometheus.series_ttl),
        ] {
            if d.is_zero() {
                return Err(err(format!(
                    "invalid config: {key} must be greater than 0s"
                )));
            }
        }
        self.gps
            .validate()
            .map_err(|e| err(format!("invalid config: {e}")))?;
        for p in &self.aggregate.percentiles {
            if !(*p > 0.0 && *p < 1.0) {
                return Err(err(format!(
                    "invalid config: aggregate.percentiles: {p} is not between 0 and 1 (exclusive)"
                )));
            }
        }
        self.validate_datadog()?;
        self.otlp.validate()?;
        self.remote_write
            .validate()
            .map_err(|e| err(format!("invalid config: {e}")))?;
        if self.aggregate.percentiles.len() > 16 {
            return Err(err(
                "invalid config: aggregate.percentiles holds at most 16 values",
            ));
        }
        self.alerts.validate()?;
        self.alerts
            .validate_datadog_notifiers(!self.datadog.api_key.is_empty())?;
        Ok(())
    }

    fn validate_datadog(&self) -> Result<(), ConfigError> {
        let d = &self.datadog;
        if d.url.is_empty() && !DATADOG_SITES.contains(&d.site.as_str()) {
            return Err(err(format!(
                "invalid config: datadog.site = {:?} is not a Datadog site (one of {}); set datadog.url for anything else",
                d.site,
                DATADOG_SITES.join(", ")
            )));
        }
        if !(d.url.is_empty() || d.url.starts_with("http://") || d.url.starts_with("https://")) {
            return Err(err(format!(
                "invalid config: datadog.url = {:?} must start with http:// or https://",
                d.url
            )));
        }
        for a in &d.histogram_aggregates {
            if !HISTOGRAM_AGGREGATES.contains(&a.as_str()) {
                return Err(err(format!(
                    "invalid config: datadog.histogram_aggregates: {a:?} is not one of {}",
                    HISTOGRAM_AGGREGATES.join(", ")
                )));
            }
        }
        for p in &d.histogram_percentiles {
            if !(*p > 0.0 && *p < 1.0) || ((p * 100.0).round() - p * 100.0).abs() > 1e-9 {
                return Err(err(format!(
                    "invalid config: datadog.histogram_percentiles: {p} must be in (0, 1) with at most two decimals"
                )));
            }
        }
        if d.request_timeout.is_zero() {
            return Err(err(
                "invalid config: datadog.request_timeout must be greater than 0s",
            ));
        }
        let q = &self.queue;
        if q.directory.is_empty() {
            return Err(err("invalid config: queue.directory must not be empty"));
        }
        if q.max_bytes < 1024 * 1024 {
            return Err(err(
                "invalid config: queue.max_bytes must be at least 1048576 (1 MiB)",
            ));
        }
        if q.dlq_max_bytes < 1024 * 1024 {
            return Err(err(
                "invalid config: queue.dlq_max_bytes must be at least 1048576 (1 MiB)",
            ));
        }
        if q.backoff_initial.is_zero() {
            return Err(err(
                "invalid config: queue.backoff_initial must be greater than 0s",
            ));
        }
        if q.backoff_max < q.backoff_initial {
            return Err(err(
                "invalid config: queue.backoff_max must be at least queue.backoff_initial",
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of strings, numbers and arrays cannot fail.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The UDP receiver thread count, resolving 0 to one per two cores (at least 1, at most 4).
    /// Every receiver applies its lines to the one shard the datagram receivers share, so a
    /// receiver per core makes them take turns on that shard and move its cache lines between
    /// cores: on 2 cores, two receivers cost about 30 % more CPU per line than one and
    /// received less before dropping (BENCHMARKS.md).
    pub fn udp_receivers(&self) -> usize {
        if self.statsd.udp_receivers > 0 {
            return self.statsd.udp_receivers;
        }
        std::thread::available_parallelism()
            .map(|n| n.get() / 2)
            .unwrap_or(1)
            .clamp(1, 4)
    }
}

fn check_addr(key: &str, value: &str, may_be_empty: bool) -> Result<(), ConfigError> {
    if value.is_empty() && may_be_empty {
        return Ok(());
    }
    value.parse::<SocketAddr>().map(|_| ()).map_err(|_| {
        err(format!(
            "invalid config: {key} = {value:?} is not an address like \"0.0.0.0:8125\""
        ))
    })
}

/// Environment variables understood besides the general `TALLYD_SECTION__KEY` form.
const DD_VARS: &[(&str, &str, &str)] = &[
    ("DD_API_KEY", "datadog", "api_key"),
    ("DD_SITE", "datadog", "site"),
    ("DD_HOSTNAME", "datadog", "hostname"),
    ("DD_ENV", "datadog", "env"),
    ("DD_VERSION", "datadog", "version"),
    ("DD_DD_URL", "datadog", "url"),
];

/// Applies environment overrides to the parsed file. The default config serves as the schema:
/// a key whose default is a string takes the variable's text as is; any other key takes the text
/// as a TOML value (`5`, `true`, `[0.5, 0.99]`, `"10s"`).
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let schema =
        toml::Table::try_from(Config::default()).map_err(|e| err(format!("internal: {e}")))?;
    for (name, value) in env {
        if let Some((_, section, key)) = DD_VARS.iter().find(|(v, _, _)| v == name) {
            set_key(table, section, key, toml::Value::String(value.clone()));
        } else if let Some((_, key)) = crate::alert::config::HEALTH_ENV
            .iter()
            .find(|(v, _)| v == name)
        {
            let v: f64 = value.trim().parse().map_err(|_| {
                err(format!(
                    "invalid value from the environment: {name}={value:?} is not a number"
                ))
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
                err(format!(
                    "invalid value from the environment: DD_DOGSTATSD_PORT={value:?} is not a port"
                ))
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
                return Err(err(format!(
                    "environment variable {name}: expected TALLYD_<SECTION>__<KEY>"
                )));
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let Some(default) = schema.get(&section).and_then(|s| s.get(&key)) else {
                return Err(err(format!(
                    "environment variable {name}: there is no key {section}.{key}"
                )));
            };
            let parsed = if default.is_str() {
                toml::Value::String(value.clone())
            } else {
                let wrapped = format!("v = {value}");
                let mut t: toml::Table = toml::from_str(&wrapped)
                    .map_err(|_| err(format!("environment variable {name}: {value:?} is not a valid value for {section}.{key}")))?;
                t.remove("v").unwrap_or(toml::Value::String(value.clone()))
            };
            set_key(table, &section, &key, parsed);
        }
    }
    Ok(())
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

pub use crate::base::duration::{duration_str, format_duration, parse_duration};

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
    fn shipped_config_file_equals_defaults() {
        let text = include_str!("../config/tallyd.toml");
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
