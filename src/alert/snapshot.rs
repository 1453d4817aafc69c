//! What readers see of alerting: the evaluator's snapshot (firing and pending alerts, recent
//! history) for the API and `/metrics`, and the identities and times notifications carry.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::config::Severity;

/// Unix milliseconds as RFC 3339 (UTC).
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A stable identity for one alert instance (FNV-1a 64 over name and labels), used as the
/// PagerDuty dedup key and the webhook fingerprint.
pub fn fingerprint(alert: &str, labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= u64::from(*x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(alert.as_bytes());
    for (k, v) in labels {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    format!("{h:016x}")
}

/// One line of `GET /api/alerts` history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// The rule's name.
    pub alert: String,
    /// The group's labels (`group_by` tags, the rule's own labels).
    pub labels: BTreeMap<String, String>,
    /// What happened: `pending`, `firing`, `resolved`, `repeat`, `no_data`, ...
    pub event: &'static str,
    /// The rule's severity.
    pub severity: Severity,
    /// The value that caused it; `None` for no-data.
    pub value: Option<f64>,
    /// When, as RFC 3339.
    pub at: String,
}

/// A pending or firing alert instance.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveAlert {
    /// The rule's name.
    pub alert: String,
    /// The group's labels.
    pub labels: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: &'static str,
    /// The rule's severity.
    pub severity: Severity,
    /// The group's last value; `None` for a no-data alert.
    pub value: Option<f64>,
    /// When it entered this state, as RFC 3339.
    pub since: String,
    /// One of the shipped health rules (`[alerts.health]`) rather than a configured one.
    pub builtin: bool,
    /// Raised because the rule's metric stopped arriving.
    pub no_data: bool,
}

/// What the API and `/metrics` show, replaced after every evaluation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// The end of the last window evaluated, as RFC 3339; `None` before the first.
    pub evaluated_at: Option<String>,
    /// Rules in effect.
    pub rules: usize,
    /// Alerts firing.
    pub firing: Vec<ActiveAlert>,
    /// Alerts waiting out their `for` duration.
    pub pending: Vec<ActiveAlert>,
    /// The latest transitions, newest last, at most `alerts.history_size`.
    pub history: Vec<HistoryEntry>,
}
