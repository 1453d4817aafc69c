//! Generic webhook: one JSON object per event, `POST`ed to the configured URL.
//!
//! The body is tallyd's own format (documented in docs/alerting.md), versioned by `version`:
//! `{version, status, alert, severity, previous_severity, labels, metric, value, warn, critical,
//! direction, message, runbook, starts_at, at, fingerprint, repeat, no_data, host}`.

use serde_json::{json, Value};

use super::AlertEvent;
use crate::alert::eval::rfc3339;

/// The body for one event.
pub fn body(e: &AlertEvent) -> Value {
    json!({
        "version": "1",
        "status": e.status.as_str(),
        "alert": e.alert,
        "severity": e.severity.as_str(),
        "previous_severity": e.previous_severity.map(|s| s.as_str()),
        "labels": e.labels,
        "metric": e.metric,
        "value": e.value,
        "warn": e.warn,
        "critical": e.critical,
        "direction": e.direction.as_str(),
        "message": e.message,
        "runbook": e.runbook,
        "starts_at": rfc3339(e.starts_at_ms),
        "at": rfc3339(e.at_ms),
        "fingerprint": e.fingerprint,
        "repeat": e.repeat,
        "no_data": e.no_data,
        "host": e.host,
    })
}
