//! The `[datadog]` section: key, site, tags and what is sent for histograms.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::duration::duration_str;
use crate::base::error::{check_nonzero_duration, ConfigError};

/// Payload compression for the Datadog intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `Content-Encoding: zstd`, the current Agent's default.
    Zstd,
    /// `Content-Encoding: gzip`.
    Gzip,
    /// `Content-Encoding: deflate` (zlib).
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

/// The `[datadog]` section.
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
    /// A counter that stops receiving samples is sent as 0 for this many seconds after its
    /// last one (the Agent's `dogstatsd_expiry_seconds`, `DD_DOGSTATSD_EXPIRY_SECONDS`); 0 = off.
    pub expiry_seconds: u64,
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
            expiry_seconds: 300,
        }
    }
}

impl DatadogConfig {
    /// A copy fit to be shown (`print-config`): `api_key` hidden, the password of `url` too.
    pub fn redacted(&self) -> DatadogConfig {
        DatadogConfig {
            api_key: crate::base::redact::secret(&self.api_key),
            url: crate::base::redact::url(&self.url),
            ..self.clone()
        }
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.url.is_empty() && !DATADOG_SITES.contains(&self.site.as_str()) {
            return Err(ConfigError::invalid(
                "datadog.site",
                format!(
                    " = {:?} is not a Datadog site (one of {}); set datadog.url for anything else",
                    self.site,
                    DATADOG_SITES.join(", ")
                ),
            ));
        }
        if !(self.url.is_empty()
            || self.url.starts_with("http://")
            || self.url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "datadog.url",
                format!(
                    " = {:?} must start with http:// or https://",
                    crate::base::redact::url(&self.url)
                ),
            ));
        }
        for a in &self.histogram_aggregates {
            if !HISTOGRAM_AGGREGATES.contains(&a.as_str()) {
                return Err(ConfigError::invalid(
                    "datadog.histogram_aggregates",
                    format!(": {a:?} is not one of {}", HISTOGRAM_AGGREGATES.join(", ")),
                ));
            }
        }
        for p in &self.histogram_percentiles {
            if !(*p > 0.0 && *p < 1.0) || ((p * 100.0).round() - p * 100.0).abs() > 1e-9 {
                return Err(ConfigError::invalid(
                    "datadog.histogram_percentiles",
                    format!(": {p} must be in (0, 1) with at most two decimals"),
                ));
            }
        }
        check_nonzero_duration("datadog.request_timeout", self.request_timeout)
    }

    /// The intake base URL: `url` if set, else `https://api.<site>`.
    pub fn base_url(&self) -> String {
        if self.url.is_empty() {
            format!("https://api.{}", self.site)
        } else {
            self.url.trim_end_matches('/').to_string()
        }
    }
}
