//! Prometheus remote write 1.0: each window's state goes to a remote-write receiver
//! (Prometheus with `--web.enable-remote-write-receiver`, Mimir, Cortex, Thanos Receive,
//! VictoriaMetrics, ...) through the durable queue `remote_write`.
//!
//! What is sent is what a Prometheus server would have stored had it scraped tallyd's
//! `/metrics` at the end of every window: the same [`Exposition`](crate::sinks::prometheus::Exposition)
//! state (cumulative `_total` counters, gauges, sets, summaries with `quantile`, `_sum`,
//! `_count`; the same names, labels, clash renaming, series bound and TTL), plus the configured
//! external labels, every series stamped with the window's end. The flusher hands the window to
//! an encoder thread through a bounded channel; the encoder writes snappy-compressed
//! `WriteRequest`s to the queue, whose sender posts them, retrying 5xx and 429 with backoff and
//! moving other 4xx answers to the dead-letter queue, as the spec requires.

pub mod encode;
mod proto;
pub mod sink;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::duration::duration_str;
use crate::base::error::{check_nonzero_duration, ConfigError};

pub use sink::{RemoteWriteSink, QUEUE_NAME};

use crate::component::{Context, Error, Running, Stage};
use crate::sinks::prometheus::config::PrometheusConfig;
use crate::sinks::prometheus::Reshaper;

/// Starts remote write when a URL is set: the encoder thread, which keeps an exposition of its
/// own with the `[prometheus]` series bounds (so it sends what a scrape would store), and the
/// durable queue, drained in the delivery stage.
///
/// # Errors
/// The queue directory cannot be used, or the HTTP client cannot be built.
pub fn start(
    cfg: &RemoteWriteConfig,
    prometheus: &PrometheusConfig,
    reshaper: &Arc<Reshaper>,
    ctx: &mut Context,
) -> Result<Running, Error> {
    if cfg.url.is_empty() {
        return Ok(Running::disabled(
            "remote_write",
            Stage::Delivery,
            "remote_write.url is empty",
        ));
    }
    let rw = RemoteWriteSink::start(cfg, prometheus, reshaper, ctx)?;
    ctx.telemetry.register(rw.clone());
    ctx.add_sink(rw.clone());
    ctx.shutdown
        .on_stop(Stage::Delivery, async move { rw.shutdown().await });
    Ok(Running::reporting_itself(
        "remote_write",
        Stage::Delivery,
        (),
    ))
}

/// `[remote_write]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    /// The receiver's write URL (e.g. `http://prometheus:9090/api/v1/write`); empty = off.
    pub url: String,
    /// Extra request headers (tenant ids such as `X-Scope-OrgID`, ...).
    pub headers: BTreeMap<String, String>,
    /// `Authorization: Bearer <token>`; empty = none.
    pub bearer_token: String,
    /// Basic authentication user; empty = none.
    pub basic_auth_user: String,
    /// Basic authentication password, sent with `basic_auth_user`.
    pub basic_auth_password: String,
    /// Labels added to every series that does not carry a label of that name already.
    pub external_labels: BTreeMap<String, String>,
    /// Samples in one request; a window with more is split.
    pub max_samples_per_request: usize,
    /// Timeout of one request.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            headers: BTreeMap::new(),
            bearer_token: String::new(),
            basic_auth_user: String::new(),
            basic_auth_password: String::new(),
            external_labels: BTreeMap::new(),
            max_samples_per_request: 2000,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Headers tallyd sets itself and a user may not replace.
const RESERVED_HEADERS: &[&str] = &[
    "content-encoding",
    "content-type",
    "content-length",
    "user-agent",
    "x-prometheus-remote-write-version",
];

/// Upper bound of `max_samples_per_request`: far above what receivers accept in one request.
pub const MAX_SAMPLES_LIMIT: usize = 1_000_000;

impl RemoteWriteConfig {
    /// A copy fit to be shown (`print-config`): `bearer_token`, `basic_auth_password` and the
    /// header values hidden, the password of `url` too.
    pub fn redacted(&self) -> RemoteWriteConfig {
        use crate::base::redact;
        RemoteWriteConfig {
            url: redact::url(&self.url),
            headers: redact::header_values(&self.headers),
            bearer_token: redact::secret(&self.bearer_token),
            basic_auth_password: redact::secret(&self.basic_auth_password),
            ..self.clone()
        }
    }

    /// Checks what types alone cannot.
    ///
    /// # Errors
    /// The first value not allowed, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.is_empty()
            || self.url.starts_with("http://")
            || self.url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "remote_write.url",
                format!(
                    " = {:?} must start with http:// or https://",
                    crate::base::redact::url(&self.url)
                ),
            ));
        }
        if !(1..=MAX_SAMPLES_LIMIT).contains(&self.max_samples_per_request) {
            return Err(ConfigError::invalid(
                "remote_write.max_samples_per_request",
                format!(" must be between 1 and {MAX_SAMPLES_LIMIT}"),
            ));
        }
        check_nonzero_duration("remote_write.timeout", self.timeout)?;
        if !self.bearer_token.is_empty() && !self.basic_auth_user.is_empty() {
            return Err(ConfigError::invalid(
                "remote_write.bearer_token",
                " and remote_write.basic_auth_user are both set; use one",
            ));
        }
        if self.basic_auth_user.is_empty() && !self.basic_auth_password.is_empty() {
            return Err(ConfigError::invalid(
                "remote_write.basic_auth_password",
                " is set but remote_write.basic_auth_user is empty",
            ));
        }
        if self.basic_auth_user.contains(':') {
            return Err(ConfigError::invalid(
                "remote_write.basic_auth_user",
                " may not contain ':'",
            ));
        }
        const HEADERS: &str = "remote_write.headers";
        for (k, v) in &self.headers {
            let lower = k.to_ascii_lowercase();
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(ConfigError::invalid(
                    HEADERS,
                    format!(": {k:?} is not a header name"),
                ));
            }
            if reqwest::header::HeaderValue::from_str(v).is_err() {
                return Err(ConfigError::invalid(
                    HEADERS,
                    format!(": the value of {k:?} is not a valid header value"),
                ));
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(ConfigError::invalid(
                    HEADERS,
                    format!(": {k:?} is set by tallyd as the remote write spec requires"),
                ));
            }
            if lower == "authorization"
                && (!self.bearer_token.is_empty() || !self.basic_auth_user.is_empty())
            {
                return Err(ConfigError::invalid(
                    HEADERS,
                    ": \"Authorization\" conflicts with remote_write.bearer_token / basic_auth_user",
                ));
            }
        }
        if reqwest::header::HeaderValue::from_str(&self.bearer_token).is_err() {
            return Err(ConfigError::invalid(
                "remote_write.bearer_token",
                " contains characters not allowed in a header",
            ));
        }
        const LABELS: &str = "remote_write.external_labels";
        for (k, v) in &self.external_labels {
            let valid = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid || k.starts_with("__") {
                return Err(ConfigError::invalid(
                    LABELS,
                    format!(
                        ": {k:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with \"__\")"
                    ),
                ));
            }
            if v.is_empty() {
                return Err(ConfigError::invalid(
                    LABELS,
                    format!(": the value of {k:?} is empty"),
                ));
            }
        }
        Ok(())
    }
}
