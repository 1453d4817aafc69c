//! Datadog events: each alert event becomes one event for `POST /api/v1/events`
//! (<https://docs.datadoghq.com/api/latest/events/#post-an-event>): `title` (at most 100
//! characters), `text` (at most 4000), `alert_type` (`error`, `warning`, `info`, `success`),
//! `aggregation_key` (at most 100 characters; events with the same key are grouped in the
//! event stream), `tags`, `host`, `date_happened`, `priority`, `source_type_name`.
//!
//! This file only decides what the event says. The JSON is written by the Datadog sink's
//! encoder (`sinks::datadog::encode::Encoder::event`, which adds host and constant tags) and the
//! event travels through the durable `datadog` queue, so an intake outage delays it instead of
//! losing it. The aggregation key is the alert instance's fingerprint, so a firing event and its
//! recovery land in one group.

use super::{AlertEvent, EventStatus};
use crate::alert::config::{Direction, Severity};
use crate::alert::eval::rfc3339;
use crate::alert::rules::format_value;
use crate::model::{AlertType, Event, Priority};

/// `source_type_name` of every alert event.
pub const SOURCE_TYPE: &str = "tallyd";
/// The events API's limits on `title` and `aggregation_key`.
const TITLE_MAX: usize = 100;
const KEY_MAX: usize = 100;

/// Datadog's `alert_type` for an alert event: firing by severity, recovery `success`, and a
/// test by the severity it was asked for.
pub fn alert_type(e: &AlertEvent) -> AlertType {
    match (e.status, e.severity) {
        (EventStatus::Resolved, _) => AlertType::Success,
        (_, Severity::Critical) => AlertType::Error,
        (_, Severity::Warning) => AlertType::Warning,
        (_, Severity::Info) => AlertType::Info,
    }
}

fn title(e: &AlertEvent) -> String {
    // The prefixes of Datadog's own monitor notifications, so the stream reads alike.
    let state = match (e.status, e.severity) {
        (EventStatus::Resolved, _) => "Recovered",
        (EventStatus::Test, _) => "Test",
        (EventStatus::Firing, Severity::Critical) => "Triggered",
        (EventStatus::Firing, Severity::Warning) => "Warn",
        (EventStatus::Firing, Severity::Info) => "Info",
    };
    let mut t = format!("[{state}] {}", e.alert);
    if !e.labels.is_empty() {
        let l: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.push_str(&format!(" ({})", l.join(", ")));
    }
    truncate_chars(t, TITLE_MAX)
}

fn text(e: &AlertEvent) -> String {
    let mut lines = vec![e.message.clone(), String::new()];
    let op = match e.direction {
        Direction::Above => "above",
        Direction::Below => "below",
    };
    let mut thresholds = Vec::new();
    if let Some(w) = e.warn {
        thresholds.push(format!("warn {op} {}", format_value(w)));
    }
    if let Some(c) = e.critical {
        thresholds.push(format!("critical {op} {}", format_value(c)));
    }
    match (e.value, e.no_data) {
        (_, true) => lines.push("value: no data".into()),
        (Some(v), false) => lines.push(format!("value: {}", format_value(v))),
        (None, false) => {}
    }
    if !thresholds.is_empty() {
        lines.push(format!("thresholds: {}", thresholds.join(", ")));
    }
    if !e.metric.is_empty() {
        lines.push(format!("metric: {}", e.metric));
    }
    let mut severity = format!("severity: {}", e.severity.as_str());
    if let Some(prev) = e.previous_severity {
        severity.push_str(&format!(" (was {})", prev.as_str()));
    }
    lines.push(severity);
    match e.status {
        EventStatus::Firing if e.repeat => {
            lines.push(format!("still firing since {}", rfc3339(e.starts_at_ms)))
        }
        EventStatus::Firing => lines.push(format!("firing since {}", rfc3339(e.starts_at_ms))),
        EventStatus::Resolved => lines.push(format!(
            "resolved at {} (firing since {})",
            rfc3339(e.at_ms),
            rfc3339(e.starts_at_ms)
        )),
        EventStatus::Test => lines.push("test notification from tallyd".into()),
    }
    if !e.runbook.is_empty() {
        lines.push(format!("runbook: {}", e.runbook));
    }
    lines.join("\n")
}

/// Tags: the alert's labels (`key:value`, or `key` for an empty value) and the alert's name
/// and severity. The sink's encoder adds the constant tags (`datadog.tags`, `env:`,
/// `version:`), and a `host` label becomes the event's host, as for DogStatsD events.
fn tags(e: &AlertEvent) -> Vec<String> {
    let mut t: Vec<String> = e
        .labels
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}:{v}")
            }
        })
        .collect();
    t.push(format!("alertname:{}", e.alert));
    t.push(format!("severity:{}", e.severity.as_str()));
    t
}

/// The Datadog event for one alert event.
pub fn event(e: &AlertEvent) -> Event {
    Event {
        title: title(e),
        text: text(e),
        timestamp: Some((e.at_ms / 1000) as i64),
        // The encoder's host (datadog.hostname or the system's), or a `host` label.
        hostname: None,
        aggregation_key: Some(truncate_chars(e.fingerprint.clone(), KEY_MAX)),
        priority: Priority::Normal,
        source_type: Some(SOURCE_TYPE.into()),
        alert_type: alert_type(e),
        tags: tags(e),
        origin: Default::default(),
        skipped_fields: 0,
    }
}

fn truncate_chars(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        s
    } else {
        s.chars().take(max).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::datadog::config::DatadogConfig;
    use crate::sinks::datadog::encode::{Encoder, EVENT_ENDPOINT};
    use serde_json::Value;
    use std::collections::BTreeMap;

    fn firing(severity: Severity) -> AlertEvent {
        let labels: BTreeMap<String, String> = [
            ("queue_type".to_string(), "email".to_string()),
            ("team".to_string(), "core".to_string()),
        ]
        .into();
        AlertEvent {
            status: EventStatus::Firing,
            alert: "QueueBacklog".into(),
            severity,
            previous_severity: None,
            fingerprint: crate::alert::eval::fingerprint("QueueBacklog", &labels),
            labels,
            metric: "queue.pending".into(),
            value: Some(7000.0),
            warn: Some(1000.0),
            critical: Some(5000.0),
            direction: Direction::Above,
            message: "email queue holds 7000 jobs".into(),
            runbook: "https://runbooks.example/queues/email".into(),
            starts_at_ms: 1_700_000_000_000,
            at_ms: 1_700_000_060_000,
            repeat: false,
            no_data: false,
            host: "box".into(),
            notify: Vec::new(),
        }
    }

    /// The JSON body the Datadog sink's encoder writes, as the intake would read it.
    fn body(e: &AlertEvent) -> Value {
        let cfg = DatadogConfig {
            env: "prod".into(),
            version: "1.2.3".into(),
            tags: vec!["region:eu".into()],
            ..Default::default()
        };
        let p = Encoder::new(&cfg, "box".into()).event(&event(e), 0);
        assert_eq!(p.endpoint, EVENT_ENDPOINT);
        assert_eq!((p.content_type, p.encoding), ("application/json", ""));
        serde_json::from_slice(&p.body).expect("json")
    }

    #[test]
    fn firing_critical_is_an_error_event_with_labels_and_constant_tags() {
        let e = firing(Severity::Critical);
        let v = body(&e);
        assert_eq!(v["alert_type"], "error");
        assert_eq!(
            v["title"],
            "[Triggered] QueueBacklog (queue_type=email, team=core)"
        );
        assert_eq!(v["aggregation_key"], e.fingerprint.as_str());
        assert_eq!(v["source_type_name"], "tallyd");
        assert_eq!(v["host"], "box");
        assert_eq!(v["priority"], "normal");
        assert_eq!(v["date_happened"], 1_700_000_060);
        assert_eq!(
            v["tags"],
            serde_json::json!([
                "queue_type:email",
                "team:core",
                "alertname:QueueBacklog",
                "severity:critical",
                "region:eu",
                "env:prod",
                "version:1.2.3"
            ])
        );
        let text = v["text"].as_str().expect("text");
        assert!(text.starts_with("email queue holds 7000 jobs\n"), "{text}");
        for want in [
            "value: 7000",
            "thresholds: warn above 1000, critical above 5000",
            "metric: queue.pending",
            "severity: critical",
            "runbook: https://runbooks.example/queues/email",
        ] {
            assert!(text.contains(want), "{want:?} missing from {text}");
        }
    }

    #[test]
    fn each_transition_has_its_alert_type_and_one_aggregation_key() {
        let warn = firing(Severity::Warning);
        let mut changed = firing(Severity::Critical);
        changed.previous_severity = Some(Severity::Warning);
        let mut resolved = firing(Severity::Critical);
        resolved.status = EventStatus::Resolved;
        let info = firing(Severity::Info);
        let types: Vec<Value> = [&warn, &changed, &resolved, &info]
            .iter()
            .map(|e| body(e)["alert_type"].clone())
            .collect();
        assert_eq!(types, vec!["warning", "error", "success", "info"]);
        let keys: Vec<Value> = [&warn, &changed, &resolved]
            .iter()
            .map(|e| body(e)["aggregation_key"].clone())
            .collect();
        assert!(keys.iter().all(|k| *k == keys[0] && k.is_string()));
        assert!(body(&changed)["text"]
            .as_str()
            .expect("text")
            .contains("severity: critical (was warning)"));
        let r = body(&resolved);
        assert!(r["title"]
            .as_str()
            .expect("title")
            .starts_with("[Recovered] QueueBacklog"));
        assert!(r["text"]
            .as_str()
            .expect("text")
            .contains("resolved at 2023-11-14T22:14:20"));
    }

    #[test]
    fn test_events_follow_the_requested_severity() {
        for (sev, want) in [
            (Severity::Info, "info"),
            (Severity::Warning, "warning"),
            (Severity::Critical, "error"),
        ] {
            let mut e = firing(sev);
            e.status = EventStatus::Test;
            let v = body(&e);
            assert_eq!(v["alert_type"], want);
            assert!(v["title"].as_str().expect("title").starts_with("[Test] "));
        }
    }

    #[test]
    fn limits_and_no_data() {
        let mut e = firing(Severity::Warning);
        e.alert = "A".repeat(300);
        e.message = "m".repeat(5000);
        e.no_data = true;
        e.value = None;
        e.labels.insert("host".into(), "web-7".into());
        e.labels.insert("flag".into(), String::new());
        let v = body(&e);
        assert_eq!(v["title"].as_str().expect("title").chars().count(), 100);
        assert_eq!(v["text"].as_str().expect("text").chars().count(), 4000);
        // A host label names the event's host, as a DogStatsD `host:` tag does.
        assert_eq!(v["host"], "web-7");
        let tags: Vec<&str> = v["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(tags.contains(&"flag") && !tags.iter().any(|t| t.starts_with("host:")));
        let mut e = firing(Severity::Warning);
        e.no_data = true;
        e.value = None;
        assert!(body(&e)["text"]
            .as_str()
            .expect("text")
            .contains("value: no data"));
    }
}
