//! Slack incoming webhooks: `POST` `{"text": ...}` as JSON to the hook URL; Slack answers
//! `200 ok`, or an error status with a short text such as `invalid_payload`
//! (<https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks>).

use serde_json::{json, Value};

use super::{AlertEvent, EventStatus};
use crate::alert::config::Severity;

/// The message for one event, in Slack's mrkdwn.
pub fn body(e: &AlertEvent) -> Value {
    let (icon, state) = match (e.status, e.severity) {
        (EventStatus::Resolved, _) => (":white_check_mark:", "RESOLVED".to_string()),
        (EventStatus::Test, s) => (
            ":information_source:",
            format!("TEST {}", s.as_str().to_uppercase()),
        ),
        (EventStatus::Firing, Severity::Critical) => (":red_circle:", "CRITICAL".to_string()),
        (EventStatus::Firing, Severity::Warning) => (":warning:", "WARNING".to_string()),
        (EventStatus::Firing, Severity::Info) => (":information_source:", "INFO".to_string()),
    };
    let mut text = format!(
        "{icon} *[{state}] {}* on `{}`\n{}",
        escape(&e.alert),
        escape(&e.host),
        escape(&e.message)
    );
    if !e.labels.is_empty() {
        let l: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!("\nLabels: {}", escape(&l.join(", "))));
    }
    if !e.runbook.is_empty() {
        text.push_str(&format!("\nRunbook: {}", escape(&e.runbook)));
    }
    json!({ "text": text })
}

/// Slack's three control characters in text
/// (<https://docs.slack.dev/messaging/formatting-message-text>).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
