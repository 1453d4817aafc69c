//! The built-in log notifier: every transition is written to tallyd's log, whatever else is
//! configured, so an alert is never lost even with no notifier reachable.

use super::{AlertEvent, EventStatus};
use crate::alert::config::Severity;

/// Writes one event: firing at `warn` (critical at `error`), resolved and tests at `info`.
pub fn write(e: &AlertEvent) {
    let value = e
        .value
        .map(crate::alert::rules::format_value)
        .unwrap_or_default();
    let labels = e
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    match (e.status, e.severity) {
        (EventStatus::Firing, Severity::Critical) => tracing::error!(
            alert = %e.alert, state = "firing", severity = e.severity.as_str(), value = %value, labels = %labels,
            repeat = e.repeat, "{}", e.message
        ),
        (EventStatus::Firing, _) => tracing::warn!(
            alert = %e.alert, state = "firing", severity = e.severity.as_str(), value = %value, labels = %labels,
            repeat = e.repeat, "{}", e.message
        ),
        (status, _) => tracing::info!(
            alert = %e.alert, state = status.as_str(), severity = e.severity.as_str(), value = %value, labels = %labels,
            "{}", e.message
        ),
    }
}
