//! The `[alerts]` configuration: rules, notifiers, the thresholds of tallyd's own health rules,
//! and the validation that names the offending key.
//!
//! This module only describes and checks settings; `rules.rs` turns them into compiled rules.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::duration::duration_str;
use crate::base::error::{check_nonzero_duration, check_positive, ConfigError};

/// `[alerts]`: edge alerting. Every key has a default; the section may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Master switch: false evaluates nothing and sends nothing.
    pub enabled: bool,
    /// Adds tallyd's own health rules (see `[alerts.health]`) to the rules below.
    pub default_rules: bool,
    /// How often a still-firing alert is notified again; a rule may override it; 0 = never.
    #[serde(with = "duration_str")]
    pub repeat_interval: Duration,
    /// Alert transitions kept for `GET /api/alerts`.
    pub history_size: usize,
    /// Groups (alert instances) tracked per rule; new groups beyond it are ignored and counted.
    pub max_groups_per_rule: usize,
    /// Flushed windows waiting for evaluation; more are dropped and counted.
    pub eval_queue: usize,
    /// Notifications waiting per notifier; more are dropped and counted.
    pub notify_queue: usize,
    /// Attempts per notification (1 = no retry).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `retry_max`.
    #[serde(with = "duration_str")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "duration_str")]
    pub retry_max: Duration,
    /// Timeout of one notification request.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Thresholds of the shipped health rules (`ALERT_*` environment variables).
    pub health: HealthThresholds,
    /// User rules (`[[alerts.rules]]`).
    pub rules: Vec<RuleConfig>,
    /// Named notifiers (`[alerts.notifiers.NAME]`).
    pub notifiers: BTreeMap<String, NotifierConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default_rules: true,
            repeat_interval: Duration::from_secs(4 * 3600),
            history_size: 200,
            max_groups_per_rule: 1000,
            eval_queue: 16,
            notify_queue: 1000,
            max_attempts: 6,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            health: HealthThresholds::default(),
            rules: Vec::new(),
            notifiers: BTreeMap::new(),
        }
    }
}

/// `[alerts.health]`: thresholds of the shipped rules. All but the GPS ones are also read from
/// the environment variables the platform documents use (named in [`HEALTH_ENV`]).
/// A `_warn` value raises the rule's warning, a `_crit` value its critical alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthThresholds {
    /// Payloads waiting in the forwarder queue (`TallydForwarderQueuePending`).
    pub queue_pending_warn: f64,
    /// Payloads waiting in the forwarder queue (`TallydForwarderQueuePending`).
    pub queue_pending_crit: f64,
    /// Payloads in the dead-letter queue (`TallydDeadLetterQueue`).
    pub dlq_warn: f64,
    /// Payloads in the dead-letter queue (`TallydDeadLetterQueue`).
    pub dlq_crit: f64,
    /// Age in seconds of the oldest queued payload (`TallydProcessingLag`, warning only).
    pub processing_lag_secs: f64,
    /// Minutes without any StatsD sample before `TallydNoDataReceived` fires (only when a
    /// StatsD listener is on).
    pub no_data_minutes: f64,
    /// Percent of the window's forwarder requests that failed (`TallydForwarderErrorRate`).
    pub error_rate_percent: f64,
    /// Longest flush of a window, in milliseconds (`TallydFlushSlow`).
    pub latency_warn_ms: f64,
    /// Longest flush of a window, in milliseconds (`TallydFlushSlow`).
    pub latency_crit_ms: f64,
    /// IP addresses the GPS server has blacklisted (`TallydGpsBlacklistedIps`).
    pub gps_blacklisted_warn: f64,
    /// IP addresses the GPS server has blacklisted (`TallydGpsBlacklistedIps`).
    pub gps_blacklisted_crit: f64,
    /// Percent of the window's GPS messages that were invalid (`TallydGpsInvalidMessageRate`).
    pub gps_invalid_rate_percent: f64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self {
            queue_pending_warn: 1000.0,
            queue_pending_crit: 5000.0,
            dlq_warn: 10.0,
            dlq_crit: 100.0,
            processing_lag_secs: 300.0,
            no_data_minutes: 5.0,
            error_rate_percent: 5.0,
            latency_warn_ms: 1000.0,
            latency_crit_ms: 5000.0,
            gps_blacklisted_warn: 5.0,
            gps_blacklisted_crit: 20.0,
            gps_invalid_rate_percent: 10.0,
        }
    }
}

/// Environment variables that set `[alerts.health]` keys (platform names, same defaults).
pub const HEALTH_ENV: &[(&str, &str)] = &[
    ("ALERT_QUEUE_PENDING_WARN", "queue_pending_warn"),
    ("ALERT_QUEUE_PENDING_CRIT", "queue_pending_crit"),
    ("ALERT_DLQ_WARN", "dlq_warn"),
    ("ALERT_DLQ_CRIT", "dlq_crit"),
    ("ALERT_PROCESSING_LAG", "processing_lag_secs"),
    ("ALERT_NO_DATA_MINUTES", "no_data_minutes"),
    ("ALERT_ERROR_RATE", "error_rate_percent"),
    ("ALERT_LATENCY_WARN", "latency_warn_ms"),
    ("ALERT_LATENCY_CRIT", "latency_crit_ms"),
];

/// Which side of a threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A value above the threshold is bad.
    #[default]
    Above,
    /// A value below the threshold is bad.
    Below,
}

impl Direction {
    /// The configuration spelling: `above` or `below`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Above => "above",
            Direction::Below => "below",
        }
    }
}

/// Alert severity, lowest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational: test notifications (`alert_type=info`); no rule threshold produces it.
    Info,
    /// The `warn` threshold is crossed.
    #[default]
    Warning,
    /// The `critical` threshold is crossed.
    Critical,
}

impl Severity {
    /// The configuration and API spelling: `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which metric a rule (or one side of a ratio) reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SelectorConfig {
    /// StatsD name as sent (`queue.pending`) or a `tallyd_*` name from `/metrics`.
    pub metric: String,
    /// Tag filter, all must hold: `k:v` (equal), `k:*` (present), `!k:v` (not equal), `flag`.
    pub tags: Vec<String>,
}

/// One `[[alerts.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Alert name (Alertmanager's `alertname`); unique.
    pub name: String,
    /// Metric read by a threshold rule; leave empty for a ratio rule.
    pub metric: String,
    /// Tag filter for `metric` (see [`SelectorConfig::tags`]).
    pub tags: Vec<String>,
    /// Ratio rule: value = 100 * numerator / denominator (percent), each aggregated alike.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numerator: Option<SelectorConfig>,
    /// Ratio rule: the metric that `numerator` is divided by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denominator: Option<SelectorConfig>,
    /// `last`, `avg`, `min`, `max`, `sum`, `count`, `rate` (per second) or `pNN` (`p95`, `p99.9`).
    pub aggregation: String,
    /// Warning threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn: Option<f64>,
    /// Critical threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
    /// `above` (value > threshold is bad) or `below` (value < threshold is bad).
    pub direction: Direction,
    /// How long the condition must hold before the alert fires; 0 = at once.
    #[serde(rename = "for", with = "duration_str")]
    pub for_: Duration,
    /// Tags that split the rule into one alert per value combination.
    pub group_by: Vec<String>,
    /// Fire when no matching series has been seen for this long; 0 = off.
    #[serde(with = "duration_str")]
    pub no_data: Duration,
    /// Severity of the no-data alert.
    pub no_data_severity: Severity,
    /// Message template (see docs/alerting.md for placeholders); empty = the built-in message.
    pub message: String,
    /// Runbook URL or text template; empty = none.
    pub runbook: String,
    /// Notifiers (by name) this rule goes to; empty = all. Each notifier may also filter by severity.
    pub notify: Vec<String>,
    /// Overrides `alerts.repeat_interval` for this rule.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub repeat_interval: Option<Duration>,
    /// Send a recovery notification when the alert resolves.
    pub send_resolved: bool,
    /// Extra labels sent with the alert (Alertmanager labels, webhook `labels`).
    pub labels: BTreeMap<String, String>,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            metric: String::new(),
            tags: Vec::new(),
            numerator: None,
            denominator: None,
            aggregation: "last".into(),
            warn: None,
            critical: None,
            direction: Direction::Above,
            for_: Duration::ZERO,
            group_by: Vec::new(),
            no_data: Duration::ZERO,
            no_data_severity: Severity::Warning,
            message: String::new(),
            runbook: String::new(),
            notify: Vec::new(),
            repeat_interval: None,
            send_resolved: true,
            labels: BTreeMap::new(),
        }
    }
}

/// Notifier kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// tallyd's own JSON body, one `POST` per event.
    #[default]
    Webhook,
    /// A Slack incoming webhook (`{"text": ...}`).
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Prometheus Alertmanager API v2 (`POST /api/v2/alerts`).
    Alertmanager,
    /// Datadog events through the durable `datadog` queue; needs `datadog.api_key`.
    Datadog,
}

impl NotifierKind {
    /// The `type` spelling: `webhook`, `slack`, `pagerduty`, `alertmanager` or `datadog`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifierKind::Webhook => "webhook",
            NotifierKind::Slack => "slack",
            NotifierKind::Pagerduty => "pagerduty",
            NotifierKind::Alertmanager => "alertmanager",
            NotifierKind::Datadog => "datadog",
        }
    }
}

/// PagerDuty Events API v2 endpoint (developer.pagerduty.com/docs/events-api-v2/trigger-events).
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// One `[alerts.notifiers.NAME]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifierConfig {
    /// `webhook`, `slack`, `pagerduty`, `alertmanager` or `datadog`.
    #[serde(rename = "type")]
    pub kind: NotifierKind,
    /// Endpoint: the webhook URL, the Slack incoming-webhook URL, the PagerDuty enqueue URL
    /// (empty = PagerDuty's), or Alertmanager's base URL (`http://am:9093`). Not used by
    /// `datadog`, which sends to the `[datadog]` intake.
    pub url: String,
    /// PagerDuty integration (routing) key.
    pub routing_key: String,
    /// Severities sent to this notifier; empty = all.
    pub severities: Vec<Severity>,
    /// Extra HTTP headers (for example `Authorization`).
    pub headers: BTreeMap<String, String>,
    /// Alertmanager: how often firing alerts are sent again (Alertmanager forgets alerts that
    /// are not refreshed).
    #[serde(with = "duration_str")]
    pub resend_interval: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            kind: NotifierKind::Webhook,
            url: String::new(),
            routing_key: String::new(),
            severities: Vec::new(),
            headers: BTreeMap::new(),
            resend_interval: Duration::from_secs(60),
        }
    }
}

mod opt_duration {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&crate::base::duration::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        crate::base::duration::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

impl NotifierConfig {
    /// How `url` is shown in errors and the log: a Slack incoming-webhook URL carries its
    /// token in the path, so only its origin is shown; other URLs lose their password.
    pub fn shown_url(&self, url: &str) -> String {
        match self.kind {
            NotifierKind::Slack => crate::base::redact::origin(url),
            _ => crate::base::redact::url(url),
        }
    }

    /// A copy fit to be shown (`print-config`): `routing_key` and the header values hidden, a
    /// Slack URL entirely, the password of any other URL.
    pub fn redacted(&self) -> NotifierConfig {
        use crate::base::redact;
        let url = match self.kind {
            NotifierKind::Slack => redact::secret(&self.url),
            _ => redact::url(&self.url),
        };
        NotifierConfig {
            url,
            routing_key: redact::secret(&self.routing_key),
            headers: redact::header_values(&self.headers),
            ..self.clone()
        }
    }
}

impl AlertsConfig {
    /// A copy fit to be shown (`print-config`): every notifier [`NotifierConfig::redacted`].
    pub fn redacted(&self) -> AlertsConfig {
        AlertsConfig {
            notifiers: self
                .notifiers
                .iter()
                .map(|(name, n)| (name.clone(), n.redacted()))
                .collect(),
            ..self.clone()
        }
    }

    /// A `datadog` notifier needs Datadog delivery, which is on exactly when an API key is set.
    /// Checked only while alerting is enabled (a disabled `[alerts]` starts no notifier).
    ///
    /// # Errors
    /// The first `datadog` notifier, naming the key to set.
    pub fn validate_datadog_notifiers(&self, api_key_set: bool) -> Result<(), ConfigError> {
        if !self.enabled || api_key_set {
            return Ok(());
        }
        match self
            .notifiers
            .iter()
            .find(|(_, n)| n.kind == NotifierKind::Datadog)
        {
            Some((name, _)) => Err(ConfigError::invalid(
                format!("alerts.notifiers.{name}"),
                " has type \"datadog\" but Datadog delivery is off: set datadog.api_key (or DD_API_KEY), or remove the notifier",
            )),
            None => Ok(()),
        }
    }

    /// Checks every rule and notifier; errors name the key (`alerts.rules[2].aggregation`).
    ///
    /// # Errors
    /// The first invalid key, with what is wrong with it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("alerts.max_groups_per_rule", self.max_groups_per_rule),
            ("alerts.eval_queue", self.eval_queue),
            ("alerts.notify_queue", self.notify_queue),
            ("alerts.max_attempts", self.max_attempts as usize),
        ] {
            check_positive(key, v as u64)?;
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(ConfigError::invalid(
                "alerts.retry_initial",
                " must be > 0 and at most alerts.retry_max",
            ));
        }
        check_nonzero_duration("alerts.timeout", self.timeout)?;
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("alerts.rules[{i}]");
            if r.name.trim().is_empty() {
                return Err(ConfigError::invalid(format!("{at}.name"), " must be set"));
            }
            if !names.insert(r.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!(" {:?} is used by an earlier rule", r.name),
                ));
            }
            let at = format!("{at} ({:?})", r.name);
            crate::alert::rules::Rule::compile(r, &self.notifiers).map_err(|e| e.within(&at))?;
        }
        for (name, n) in &self.notifiers {
            let at = format!("alerts.notifiers.{name}");
            if name == "log" {
                return Err(ConfigError::invalid(
                    at,
                    ": the name \"log\" is reserved for the built-in log notifier",
                ));
            }
            if n.kind == NotifierKind::Datadog {
                if !n.url.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{at}.url"),
                        " is not used by type \"datadog\": events go to the [datadog] intake (datadog.url / datadog.site)",
                    ));
                }
                if !n.headers.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{at}.headers"),
                        " is not used by type \"datadog\": events carry the [datadog] intake's headers",
                    ));
                }
            }
            let needs_url = !matches!(n.kind, NotifierKind::Pagerduty | NotifierKind::Datadog);
            if needs_url && n.url.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.url"),
                    format!(" must be set for type {:?}", n.kind.as_str()),
                ));
            }
            if !(n.url.is_empty() || n.url.starts_with("http://") || n.url.starts_with("https://"))
            {
                return Err(ConfigError::invalid(
                    format!("{at}.url"),
                    format!(
                        " {:?} must start with http:// or https://",
                        n.shown_url(&n.url)
                    ),
                ));
            }
            if n.kind == NotifierKind::Pagerduty && n.routing_key.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.routing_key"),
                    " must be set for type \"pagerduty\"",
                ));
            }
            if n.kind == NotifierKind::Alertmanager {
                check_nonzero_duration(&format!("{at}.resend_interval"), n.resend_interval)?;
            }
            // Names the header, never its value (a credential such as `Authorization`).
            crate::queue::deliver::header_map(&n.headers, &format!("{at}.headers"))?;
        }
        let h = &self.health;
        for (key, v) in [
            ("queue_pending_warn", h.queue_pending_warn),
            ("queue_pending_crit", h.queue_pending_crit),
            ("dlq_warn", h.dlq_warn),
            ("dlq_crit", h.dlq_crit),
            ("processing_lag_secs", h.processing_lag_secs),
            ("no_data_minutes", h.no_data_minutes),
            ("error_rate_percent", h.error_rate_percent),
            ("latency_warn_ms", h.latency_warn_ms),
            ("latency_crit_ms", h.latency_crit_ms),
            ("gps_blacklisted_warn", h.gps_blacklisted_warn),
            ("gps_blacklisted_crit", h.gps_blacklisted_crit),
            ("gps_invalid_rate_percent", h.gps_invalid_rate_percent),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(ConfigError::invalid(
                    format!("alerts.health.{key}"),
                    format!(" = {v} must be a number >= 0"),
                ));
            }
        }
        Ok(())
    }
}
