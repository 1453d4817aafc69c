//! Compiled alert rules: the aggregation, tag filters, thresholds and templates of one
//! `[[alerts.rules]]` entry checked once at startup, and the shipped health rules.
//!
//! Nothing here looks at data; `eval.rs` applies these rules to each flushed window.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::base::error::ConfigError;

pub use super::template::{format_value, Template, TEMPLATE_VARS};

use super::config::{
    AlertsConfig, Direction, HealthThresholds, NotifierConfig, RuleConfig, SelectorConfig, Severity,
};

/// How a window's values are reduced to one number per group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    /// Gauges: the worst series (highest for `above`, lowest for `below`); timers: the mean;
    /// counters and sets: the window total.
    Last,
    /// Mean of the window's values.
    Avg,
    /// Smallest of the window's values.
    Min,
    /// Largest of the window's values.
    Max,
    /// Sum of the window's values.
    Sum,
    /// Number of samples (counters: their total; sets: the distinct members).
    Count,
    /// Per second: the count over the window's length; gauges: the change since the previous
    /// window's value.
    Rate,
    /// A quantile in (0, 1).
    Quantile(f64),
}

impl Aggregation {
    /// Parses `last`, `avg`, …, `p95`, `p99.9`: a rule's `aggregation`.
    ///
    /// # Errors
    /// Key `aggregation` (relative: the caller prefixes the rule's key), with a message naming
    /// the accepted forms.
    pub fn parse(s: &str) -> Result<Aggregation, ConfigError> {
        let invalid = |reason: String| ConfigError::invalid("aggregation", format!(": {reason}"));
        Ok(match s {
            "last" => Aggregation::Last,
            "avg" => Aggregation::Avg,
            "min" => Aggregation::Min,
            "max" => Aggregation::Max,
            "sum" => Aggregation::Sum,
            "count" => Aggregation::Count,
            "rate" => Aggregation::Rate,
            p if p.starts_with('p') => {
                let q: f64 = p[1..]
                    .parse()
                    .map_err(|_| invalid(format!("{s:?} is not a percentile like p95 or p99.9")))?;
                if !(q > 0.0 && q < 100.0) {
                    return Err(invalid(format!(
                        "{s:?}: the percentile must be between 0 and 100 (exclusive)"
                    )));
                }
                Aggregation::Quantile(q / 100.0)
            }
            _ => {
                return Err(invalid(format!(
                    "{s:?} is not one of last, avg, min, max, sum, count, rate, pNN"
                )))
            }
        })
    }

    /// Aggregations whose value for a window without samples is 0 (nothing was counted).
    pub fn counts(self) -> bool {
        matches!(
            self,
            Aggregation::Sum | Aggregation::Count | Aggregation::Rate
        )
    }
}

/// One tag condition.
#[derive(Debug, Clone, PartialEq)]
enum TagFilter {
    /// `k:v`, or a bare `flag` (matches the tag exactly).
    Equals(String),
    /// `k:*`.
    Present(String),
    /// `!k:v`.
    NotEquals(String),
}

/// A metric name plus tag conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// The metric name, as sent or as on `/metrics`.
    pub metric: String,
    filters: Vec<TagFilter>,
}

impl Selector {
    /// Errors name `metric` or `tags`, relative to the selector.
    fn compile(metric: &str, tags: &[String]) -> Result<Selector, ConfigError> {
        if metric.trim().is_empty() {
            return Err(ConfigError::invalid("metric", " must be set"));
        }
        let mut filters = Vec::new();
        for t in tags {
            let f = if let Some(rest) = t.strip_prefix('!') {
                TagFilter::NotEquals(rest.to_string())
            } else if let Some(k) = t.strip_suffix(":*") {
                TagFilter::Present(format!("{k}:"))
            } else {
                TagFilter::Equals(t.clone())
            };
            if t.is_empty() || t == "!" || t.contains(',') {
                return Err(ConfigError::invalid(
                    "tags",
                    format!(": {t:?} is not a tag condition (k:v, k:*, !k:v or flag)"),
                ));
            }
            filters.push(f);
        }
        Ok(Selector {
            metric: metric.to_string(),
            filters,
        })
    }

    /// True when every condition holds for these tags.
    pub fn matches_tags<'a, I: Iterator<Item = &'a str>>(&self, tags: impl Fn() -> I) -> bool {
        self.filters.iter().all(|f| match f {
            TagFilter::Equals(t) => tags().any(|x| x == t),
            TagFilter::Present(prefix) => tags().any(|x| x.starts_with(prefix.as_str())),
            TagFilter::NotEquals(t) => !tags().any(|x| x == t),
        })
    }

    /// tallyd's own metrics are watched for no-data only once they have been seen, because a
    /// family that was never rendered belongs to a subsystem that is off (see docs/alerting.md).
    pub fn is_self_metric(&self) -> bool {
        self.metric.starts_with("tallyd_")
    }
}

/// What a rule reads: one metric, or a ratio of two.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A threshold rule's one metric.
    Metric(Selector),
    /// A ratio rule: `100 * numerator / denominator`, in percent.
    Ratio {
        /// The counted part.
        numerator: Selector,
        /// The whole it is a share of.
        denominator: Selector,
    },
}

impl Source {
    /// The metric, or the numerator then the denominator.
    pub fn selectors(&self) -> Vec<&Selector> {
        match self {
            Source::Metric(s) => vec![s],
            Source::Ratio {
                numerator,
                denominator,
            } => vec![numerator, denominator],
        }
    }

    /// The metric named in messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Metric(s) => s.metric.clone(),
            Source::Ratio {
                numerator,
                denominator,
            } => format!("{} / {}", numerator.metric, denominator.metric),
        }
    }
}

/// A rule ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The alert name (`alertname`), unique among the rules.
    pub name: String,
    /// The metric, or the two of a ratio.
    pub source: Source,
    /// How each group's window values become one number.
    pub aggregation: Aggregation,
    /// Warning threshold; `None` = no warning.
    pub warn: Option<f64>,
    /// Critical threshold; `None` = no critical alert.
    pub critical: Option<f64>,
    /// Which side of the thresholds is bad.
    pub direction: Direction,
    /// How long (ms) the condition must hold before the alert fires; 0 = at once.
    pub for_ms: u64,
    /// Tag keys that split the rule into one alert per value combination.
    pub group_by: Vec<String>,
    /// Silence (ms) after which the no-data alert fires; 0 = off.
    pub no_data_ms: u64,
    /// Severity of the no-data alert.
    pub no_data_severity: Severity,
    /// The notification message.
    pub message: Template,
    /// The runbook text or URL; empty = none.
    pub runbook: Template,
    /// Notifier names this rule goes to; empty = all.
    pub notify: Vec<String>,
    /// `None` = the global `alerts.repeat_interval`.
    pub repeat_ms: Option<u64>,
    /// Whether a recovery is notified.
    pub send_resolved: bool,
    /// Extra labels sent with every alert of the rule.
    pub labels: BTreeMap<String, String>,
    /// Shipped health rule (shown as such in the API).
    pub builtin: bool,
}

/// The built-in message when a rule has none.
pub const DEFAULT_MESSAGE: &str =
    "{{alert}} is {{severity}}: {{metric}} {{aggregation}} = {{value}} ({{direction}} {{threshold}}){{tags}}";

impl Rule {
    /// Checks and compiles one rule.
    ///
    /// # Errors
    /// The first invalid setting, its key relative to the rule (`aggregation`,
    /// `numerator.metric`), for the caller to prefix with the rule's position
    /// ([`ConfigError::within`]).
    pub fn compile(
        r: &RuleConfig,
        notifiers: &BTreeMap<String, NotifierConfig>,
    ) -> Result<Rule, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::invalid(key, reason);
        let source = match (&r.numerator, &r.denominator, r.metric.is_empty()) {
            (None, None, false) => Source::Metric(Selector::compile(&r.metric, &r.tags)?),
            (Some(n), Some(d), true) => {
                if !r.tags.is_empty() {
                    return Err(invalid(
                        "tags",
                        ": a ratio rule takes its tags in numerator.tags and denominator.tags"
                            .into(),
                    ));
                }
                let side = |s: &SelectorConfig, key: &str| {
                    Selector::compile(&s.metric, &s.tags).map_err(|e| e.within(key))
                };
                Source::Ratio {
                    numerator: side(n, "numerator")?,
                    denominator: side(d, "denominator")?,
                }
            }
            (None, None, true) => {
                return Err(invalid(
                    "metric",
                    " must be set (or numerator and denominator for a ratio rule)".into(),
                ))
            }
            _ => {
                return Err(invalid(
                    "metric",
                    ": set either metric, or both numerator and denominator".into(),
                ))
            }
        };
        let aggregation = Aggregation::parse(&r.aggregation)?;
        if r.warn.is_none() && r.critical.is_none() && r.no_data.is_zero() {
            return Err(invalid(
                "warn",
                ": set warn, critical, or no_data (a rule with none of them never fires)".into(),
            ));
        }
        for (k, v) in [("warn", r.warn), ("critical", r.critical)] {
            if let Some(v) = v {
                if !v.is_finite() {
                    return Err(invalid(k, format!(": {v} is not a finite number")));
                }
            }
        }
        if let (Some(w), Some(c)) = (r.warn, r.critical) {
            let ordered = match r.direction {
                Direction::Above => w <= c,
                Direction::Below => w >= c,
            };
            if !ordered {
                return Err(invalid(
                    "critical",
                    format!(
                        ": {c} is less severe than warn {w} for direction {:?}",
                        r.direction.as_str()
                    ),
                ));
            }
        }
        for g in &r.group_by {
            if g.is_empty() || g.contains(':') || g.contains(',') {
                return Err(invalid("group_by", format!(": {g:?} is not a tag key")));
            }
        }
        for n in &r.notify {
            if n != "log" && !notifiers.contains_key(n) {
                return Err(invalid(
                    "notify",
                    format!(": there is no notifier named {n:?} in [alerts.notifiers]"),
                ));
            }
        }
        let message = if r.message.is_empty() {
            DEFAULT_MESSAGE
        } else {
            &r.message
        };
        Ok(Rule {
            name: r.name.clone(),
            source,
            aggregation,
            warn: r.warn,
            critical: r.critical,
            direction: r.direction,
            for_ms: r.for_.as_millis() as u64,
            group_by: r.group_by.clone(),
            no_data_ms: r.no_data.as_millis() as u64,
            no_data_severity: r.no_data_severity,
            message: Template::parse(message).map_err(|e| e.within("message"))?,
            runbook: Template::parse(&r.runbook).map_err(|e| e.within("runbook"))?,
            notify: r.notify.clone(),
            repeat_ms: r.repeat_interval.map(|d| d.as_millis() as u64),
            send_resolved: r.send_resolved,
            labels: r.labels.clone(),
            builtin: false,
        })
    }

    /// The severity the value calls for, if any.
    pub fn classify(&self, v: f64) -> Option<Severity> {
        if v.is_nan() {
            return None;
        }
        let crossed = |t: Option<f64>| {
            t.is_some_and(|t| match self.direction {
                Direction::Above => v > t,
                Direction::Below => v < t,
            })
        };
        if crossed(self.critical) {
            Some(Severity::Critical)
        } else if crossed(self.warn) {
            Some(Severity::Warning)
        } else {
            None
        }
    }

    /// The threshold that `severity` corresponds to.
    pub fn threshold(&self, severity: Severity) -> Option<f64> {
        match severity {
            Severity::Critical => self.critical,
            _ => self.warn.or(self.critical),
        }
    }
}

/// All rules in effect: the shipped health rules (when `alerts.default_rules`), then the
/// user's. A user rule with the same name as a health rule replaces it.
///
/// # Errors
/// The first rule that does not compile, keyed `alerts.rules[i] ("name").key` (user rules
/// are validated with their key first).
pub fn build_rules(cfg: &AlertsConfig, statsd_enabled: bool) -> Result<Vec<Rule>, ConfigError> {
    let mut user = Vec::new();
    for (i, r) in cfg.rules.iter().enumerate() {
        user.push(
            Rule::compile(r, &cfg.notifiers)
                .map_err(|e| e.within(&format!("alerts.rules[{i}] ({:?})", r.name)))?,
        );
    }
    let mut rules: Vec<Rule> = if cfg.default_rules {
        health_rules(&cfg.health, statsd_enabled)
            .into_iter()
            .filter(|h| !user.iter().any(|u| u.name == h.name))
            .collect()
    } else {
        Vec::new()
    };
    rules.extend(user);
    Ok(rules)
}

/// Metric names the health rules watch. Families other subsystems register (forwarder, GPS)
/// are rendered only when that subsystem runs; until then their rules see no data.
mod names {
    pub const FORWARDER_QUEUE_PENDING: &str = "tallyd_forwarder_queue_depth";
    pub const FORWARDER_DLQ: &str = "tallyd_forwarder_dlq_size";
    pub const FORWARDER_OLDEST_AGE: &str = "tallyd_forwarder_queue_oldest_age_seconds";
    pub const FORWARDER_REQUESTS: &str = "tallyd_forwarder_requests";
    pub const STATSD_SAMPLES: &str = "tallyd_statsd_samples";
    pub const GPS_BLACKLISTED: &str = "tallyd_gps_blacklisted_ips";
    pub const GPS_MESSAGES: &str = "tallyd_gps_messages";
    pub const GPS_INVALID: &str = "tallyd_gps_invalid_messages";
    pub const FLUSH_DURATION: &str = "tallyd_flush_duration_seconds";
}

/// tallyd's own health rules with the given thresholds.
pub fn health_rules(h: &HealthThresholds, statsd_enabled: bool) -> Vec<Rule> {
    let base =
        |name: &str, metric: &str, agg: &str, warn: Option<f64>, crit: Option<f64>, msg: &str| {
            RuleConfig {
                name: name.into(),
                metric: metric.into(),
                aggregation: agg.into(),
                warn,
                critical: crit,
                message: msg.into(),
                ..RuleConfig::default()
            }
        };
    let mut cfgs = vec![
        base(
            "TallydForwarderQueuePending",
            names::FORWARDER_QUEUE_PENDING,
            "last",
            Some(h.queue_pending_warn),
            Some(h.queue_pending_crit),
            "{{value}} payloads are waiting in the forwarder queue (warn {{warn}}, critical {{critical}})",
        ),
        base(
            "TallydDeadLetterQueue",
            names::FORWARDER_DLQ,
            "last",
            Some(h.dlq_warn),
            Some(h.dlq_crit),
            "{{value}} payloads are in the dead-letter queue (warn {{warn}}, critical {{critical}})",
        ),
        base(
            "TallydProcessingLag",
            names::FORWARDER_OLDEST_AGE,
            "last",
            Some(h.processing_lag_secs),
            None,
            "the oldest queued payload is {{value}} s old (warn {{warn}} s)",
        ),
        base(
            "TallydFlushSlow",
            names::FLUSH_DURATION,
            "max",
            Some(h.latency_warn_ms / 1000.0),
            Some(h.latency_crit_ms / 1000.0),
            "flushing a window took {{value}} s (warn {{warn}} s, critical {{critical}} s)",
        ),
        base(
            "TallydGpsBlacklistedIps",
            names::GPS_BLACKLISTED,
            "last",
            Some(h.gps_blacklisted_warn),
            Some(h.gps_blacklisted_crit),
            "{{value}} IP addresses are blacklisted by the GPS server (warn {{warn}}, critical {{critical}})",
        ),
    ];
    let ratio = |name: &str, num: (&str, &[&str]), den: &str, warn: f64, msg: &str| RuleConfig {
        name: name.into(),
        numerator: Some(SelectorConfig {
            metric: num.0.into(),
            tags: num.1.iter().map(|s| s.to_string()).collect(),
        }),
        denominator: Some(SelectorConfig {
            metric: den.into(),
            tags: Vec::new(),
        }),
        aggregation: "sum".into(),
        warn: Some(warn),
        message: msg.into(),
        ..RuleConfig::default()
    };
    cfgs.push(ratio(
        "TallydGpsInvalidMessageRate",
        (names::GPS_INVALID, &[]),
        names::GPS_MESSAGES,
        h.gps_invalid_rate_percent,
        "{{value}} % of GPS messages were invalid in the last window (warn {{warn}} %)",
    ));
    cfgs.push(ratio(
        "TallydForwarderErrorRate",
        (names::FORWARDER_REQUESTS, &["result:error"]),
        names::FORWARDER_REQUESTS,
        h.error_rate_percent,
        "{{value}} % of forwarder requests failed in the last window (warn {{warn}} %)",
    ));
    if statsd_enabled {
        // "No data received": the agent took in no sample for the whole period. Self counters
        // are always rendered, so this is a threshold on the window's increase.
        let minutes = h.no_data_minutes;
        cfgs.push(RuleConfig {
            direction: Direction::Below,
            for_: Duration::from_secs_f64((minutes * 60.0).max(0.0)),
            ..base(
                "TallydNoDataReceived",
                names::STATSD_SAMPLES,
                "sum",
                Some(1.0),
                None,
                "no StatsD sample received for {{for}}",
            )
        });
    }
    cfgs.iter()
        .filter_map(|c| {
            let mut r = Rule::compile(c, &BTreeMap::new()).ok()?;
            r.builtin = true;
            Some(r)
        })
        .collect()
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;

#[cfg(test)]
mod example_tests {
    #[test]
    fn platform_example_is_valid_and_complete() {
        let text = include_str!("../../config/examples/platform-alerts.toml");
        let cfg = crate::config::Config::from_toml_with_env(text, "platform-alerts.toml", &[])
            .expect("example parses");
        let rules = super::build_rules(&cfg.alerts, true).expect("rules compile");
        let user: Vec<&str> = rules
            .iter()
            .filter(|r| !r.builtin)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(user.len(), 21, "{user:?}");
        assert!(rules.iter().any(|r| r.builtin), "health rules stay on");
        assert!(
            cfg.host_metrics.enabled,
            "the infrastructure rules need host metrics"
        );
        // Every host and container metric a rule reads is one the collector emits (two
        // collections over the fixture root, with this process as a named process).
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("me.pid");
        std::fs::write(&pidfile, std::process::id().to_string()).expect("pidfile");
        let mut host = cfg.host_metrics.clone();
        host.process_pidfiles
            .insert("me".into(), pidfile.display().to_string());
        // The fixture root has a container's cgroup with limits; its /proc/stat does not move
        // between two readings, so CPU comes from this machine's.
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host/root");
        let mut emitted: Vec<String> = Vec::new();
        for root in [fixture, std::path::PathBuf::from("/")] {
            let mut c = crate::host::Collector::new(host.clone(), root);
            emitted.extend(c.collect().into_iter().map(|p| p.name));
            std::thread::sleep(std::time::Duration::from_millis(50));
            emitted.extend(c.collect().into_iter().map(|p| p.name));
        }
        for r in &cfg.alerts.rules {
            let sel = [r.numerator.as_ref(), r.denominator.as_ref()];
            let names = std::iter::once(r.metric.as_str())
                .chain(sel.into_iter().flatten().map(|s| s.metric.as_str()));
            for n in names.filter(|n| n.starts_with("system.") || n.starts_with("container.")) {
                assert!(
                    emitted.iter().any(|e| e == n),
                    "{}: {n} is not collected",
                    r.name
                );
            }
        }
    }
}
