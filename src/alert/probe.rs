//! The test notification: one synthetic event sent through every notifier at once, so an
//! operator can see each notifier's answer (served by `POST /api/monitoring/alert/test`).

use std::collections::BTreeMap;

use super::config::{Direction, Severity};
use super::notify::{AlertEvent, EventStatus, TestResult};
use super::Shared;

/// The alert name test notifications carry.
pub const TEST_ALERT: &str = "TallydTestAlert";

/// The message of a test notification when the caller gives none.
pub const DEFAULT_MESSAGE: &str = "tallyd test notification";

/// The test event for `severity` and `message`, from `host`, at Unix milliseconds `now_ms`.
pub fn test_event(host: &str, severity: Severity, message: String, now_ms: u64) -> AlertEvent {
    let labels: BTreeMap<String, String> = [("test".to_string(), "true".to_string())].into();
    AlertEvent {
        status: EventStatus::Test,
        alert: TEST_ALERT.into(),
        severity,
        previous_severity: None,
        fingerprint: super::eval::fingerprint(TEST_ALERT, &labels),
        labels,
        metric: String::new(),
        value: None,
        warn: None,
        critical: None,
        direction: Direction::Above,
        message,
        runbook: String::new(),
        starts_at_ms: now_ms,
        at_ms: now_ms,
        repeat: false,
        no_data: false,
        host: host.to_string(),
        notify: Vec::new(),
    }
}

/// Sends a test event through every notifier now (one attempt each, the log included) and
/// returns each one's answer.
pub async fn send_test(shared: &Shared, severity: Severity, message: String) -> Vec<TestResult> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let event = test_event(&shared.host, severity, message, now);
    shared.dispatcher().test(&event).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_event_is_labelled_and_marked_as_a_test() {
        let e = test_event("web-1", Severity::Critical, "hi".into(), 1_000);
        assert_eq!(e.status, EventStatus::Test);
        assert_eq!(e.alert, TEST_ALERT);
        assert_eq!(e.host, "web-1");
        assert_eq!(e.labels.get("test").map(String::as_str), Some("true"));
        assert_eq!((e.starts_at_ms, e.at_ms), (1_000, 1_000));
        assert_eq!(e.message, "hi");
    }
}
