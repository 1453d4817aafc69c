//! PagerDuty Events API v2: `POST https://events.pagerduty.com/v2/enqueue` with
//! `{routing_key, event_action: trigger|resolve, dedup_key, payload{summary, source, severity,
//! timestamp, component, group, class, custom_details}, links, client}`; PagerDuty answers
//! `202 {"status":"success","dedup_key":...}`
//! (<https://developer.pagerduty.com/docs/events-api-v2/trigger-events/>).
//!
//! The dedup key is stable per alert instance (rule + labels), so a repeat updates the open
//! incident and the recovery resolves it.

use serde_json::{json, Value};

use super::{AlertEvent, EventStatus};

/// `payload.summary` is limited to 1024 characters.
const SUMMARY_MAX: usize = 1024;
/// `dedup_key` is limited to 255 characters.
const DEDUP_MAX: usize = 255;

/// The dedup key of an event's alert instance.
pub fn dedup_key(e: &AlertEvent) -> String {
    let mut k = if e.status == EventStatus::Test {
        format!("tallyd-test-{}-{}", e.host, e.at_ms)
    } else {
        format!("tallyd-{}-{}", e.alert, e.fingerprint)
    };
    let mut cut = k.len().min(DEDUP_MAX);
    while !k.is_char_boundary(cut) {
        cut -= 1;
    }
    k.truncate(cut);
    k
}

/// The event for one alert event.
pub fn body(e: &AlertEvent, routing_key: &str) -> Value {
    let dedup = dedup_key(e);
    if e.status == EventStatus::Resolved {
        return json!({ "routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup });
    }
    let summary: String = e.message.chars().take(SUMMARY_MAX).collect();
    let mut v = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "client": "tallyd",
        "payload": {
            "summary": summary,
            "source": e.host,
            "severity": e.severity.as_str(),
            "timestamp": crate::alert::eval::rfc3339(e.at_ms),
            "component": e.metric,
            "group": e.alert,
            "class": if e.no_data { "no_data" } else if e.status == EventStatus::Test { "test" } else { "threshold" },
            "custom_details": {
                "value": e.value,
                "warn": e.warn,
                "critical": e.critical,
                "direction": e.direction.as_str(),
                "labels": e.labels,
                "runbook": e.runbook,
                "repeat": e.repeat,
            },
        },
    });
    if e.runbook.starts_with("http://") || e.runbook.starts_with("https://") {
        v["links"] = json!([{ "href": e.runbook, "text": "Runbook" }]);
    }
    v
}
