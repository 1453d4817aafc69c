//! Prometheus Alertmanager API v2: `POST /api/v2/alerts` with a JSON array of
//! `{labels, annotations, startsAt, endsAt, generatorURL}`
//! (<https://prometheus.io/docs/alerting/latest/clients/>, alertmanager api/v2/openapi.yaml).
//!
//! Labels identify an alert (`alertname`, `severity`, `instance`, the group's tags and the
//! rule's labels), so Alertmanager's grouping, routing and inhibition work on them. A firing
//! alert is sent with `endsAt` four resend intervals ahead, as Prometheus does, and re-sent
//! every resend interval; it resolves with `endsAt` = now. When a firing alert changes
//! severity its label set changes, so the old one is resolved in the same request.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::{AlertEvent, EventStatus};
use crate::alert::config::Severity;
use crate::alert::eval::rfc3339;
use crate::base::expo::sanitize_label;

fn labels(e: &AlertEvent, severity: Severity) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = e
        .labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (sanitize_label(k), v.clone()))
        .collect();
    l.insert("alertname".into(), e.alert.clone());
    l.insert("severity".into(), severity.as_str().into());
    l.insert("instance".into(), e.host.clone());
    l.insert("source".into(), "tallyd".into());
    l
}

fn alert(e: &AlertEvent, severity: Severity, resolved: bool, resend: Duration) -> Value {
    let mut annotations = BTreeMap::new();
    annotations.insert("summary", e.message.clone());
    if let Some(v) = e.value {
        annotations.insert("value", crate::alert::rules::format_value(v));
    }
    if !e.runbook.is_empty() {
        annotations.insert("runbook_url", e.runbook.clone());
    }
    let ends = if resolved {
        e.at_ms
    } else {
        e.at_ms + 4 * resend.as_millis() as u64
    };
    json!({
        "labels": labels(e, severity),
        "annotations": annotations,
        "startsAt": rfc3339(e.starts_at_ms.min(e.at_ms)),
        "endsAt": rfc3339(ends),
    })
}

/// The array for a batch of events.
pub fn body(events: &[AlertEvent], resend: Duration) -> Value {
    let mut out = Vec::new();
    for e in events {
        if let Some(prev) = e.previous_severity {
            out.push(alert(e, prev, true, resend));
        }
        out.push(alert(
            e,
            e.severity,
            e.status == EventStatus::Resolved,
            resend,
        ));
    }
    Value::Array(out)
}
