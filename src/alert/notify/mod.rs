//! Notification delivery: one bounded queue and one worker task per configured notifier, so a
//! slow or failing endpoint never blocks evaluation or the other notifiers. Deliveries retry
//! with exponential backoff on network errors, 429 and 5xx; other answers fail for good. Every
//! outcome is counted. The log notifier is built in and always on.
//!
//! Payload shapes live one per file: `webhook.rs`, `slack.rs`, `pagerduty.rs`,
//! `alertmanager.rs`, `datadog.rs`, and `log.rs` for the built-in one. The `datadog` notifier
//! does not post itself: it writes each event to the durable Datadog queue (a disk write is its
//! "delivery"), whose sender posts it to the intake with the queue's own retries.

pub mod alertmanager;
pub mod datadog;
pub mod log;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::{AlertsConfig, Direction, NotifierConfig, NotifierKind, Severity};
use super::eval::Output;
use crate::component::{Error, EventOutbox};
use crate::queue::deliver::{describe, KeyState};

/// The Datadog queue alert events go to (see [`EventOutbox`]).
pub type EventQueue = Arc<dyn EventOutbox>;

/// Why an alert event is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// The alert fired, changed severity, or is still firing (a repeat).
    Firing,
    /// The alert's condition no longer holds.
    Resolved,
    /// From `POST /api/monitoring/alert/test`.
    Test,
}

impl EventStatus {
    /// `firing`, `resolved` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Firing => "firing",
            EventStatus::Resolved => "resolved",
            EventStatus::Test => "test",
        }
    }
}

/// One alert instance at one moment, as every notifier receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// Why the event is sent.
    pub status: EventStatus,
    /// The rule's name.
    pub alert: String,
    /// The severity firing (for a resolution: the one that fired last).
    pub severity: Severity,
    /// Set when a firing alert changed severity.
    pub previous_severity: Option<Severity>,
    /// Group tags and the rule's extra labels.
    pub labels: BTreeMap<String, String>,
    /// The metric the rule reads (`a / b` for a ratio).
    pub metric: String,
    /// The group's aggregated value; `None` for a no-data alert or a group with no value.
    pub value: Option<f64>,
    /// The rule's warning threshold.
    pub warn: Option<f64>,
    /// The rule's critical threshold.
    pub critical: Option<f64>,
    /// Which side of the thresholds is bad.
    pub direction: Direction,
    /// The rendered message template.
    pub message: String,
    /// The rendered runbook template (empty when the rule has none).
    pub runbook: String,
    /// When the alert started firing (unix ms).
    pub starts_at_ms: u64,
    /// The evaluation time of this event (unix ms).
    pub at_ms: u64,
    /// Identifies the alert instance (a hash of the rule name and labels), stable across
    /// its events: PagerDuty's dedup key and Datadog's aggregation key are built from it.
    pub fingerprint: String,
    /// A repeat of a still-firing alert.
    pub repeat: bool,
    /// The event is about the rule's metric having no data, not about a threshold.
    pub no_data: bool,
    /// The host name tallyd runs on.
    pub host: String,
    /// Notifier names from the rule (empty = all).
    pub notify: Vec<String>,
}

/// What a notifier's endpoint answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The HTTP status; `None` when nothing was posted (the `datadog` notifier queues).
    pub status: Option<u16>,
    /// The answer's body, cut to a bounded length.
    pub body: String,
}

/// A failed delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    /// Worth retrying: connection error, timeout, 429, 5xx.
    Retryable(String),
    /// Rejected for good (other 4xx).
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retryable(e) | SendError::Permanent(e) => f.write_str(e),
        }
    }
}

/// Answers are kept this long (bytes) for the API and logs.
const ANSWER_LIMIT: usize = 512;

/// Delivery counters of one notifier, counted per notification (one event, or one
/// Alertmanager batch).
#[derive(Default)]
pub struct NotifierStats {
    /// Delivered.
    pub sent: AtomicU64,
    /// Given up on: rejected for good, out of attempts, or cut short by shutdown.
    pub failed: AtomicU64,
    /// Not queued because the notifier's queue (`alerts.notify_queue`) was full.
    pub dropped: AtomicU64,
    /// Attempts repeated after a retryable failure.
    pub retries: AtomicU64,
    /// Waiting in the queue now (a gauge).
    pub queued: AtomicU64,
}

/// One configured notifier.
pub struct Notifier {
    /// The `NAME` of `[alerts.notifiers.NAME]`.
    pub name: String,
    /// Its configuration.
    pub cfg: NotifierConfig,
    client: reqwest::Client,
    /// Its delivery counters.
    pub stats: Arc<NotifierStats>,
    last_refresh: AtomicU64,
    /// The Datadog queue, for `datadog` notifiers only.
    datadog: Option<EventQueue>,
}

impl Notifier {
    /// The requests (URL, JSON body) that deliver `events`.
    pub fn requests(&self, events: &[AlertEvent]) -> Vec<(String, serde_json::Value)> {
        match self.cfg.kind {
            NotifierKind::Webhook => events
                .iter()
                .map(|e| (self.cfg.url.clone(), webhook::body(e)))
                .collect(),
            NotifierKind::Slack => events
                .iter()
                .map(|e| (self.cfg.url.clone(), slack::body(e)))
                .collect(),
            NotifierKind::Pagerduty => {
                let url = if self.cfg.url.is_empty() {
                    super::config::PAGERDUTY_URL.to_string()
                } else {
                    self.cfg.url.clone()
                };
                events
                    .iter()
                    .map(|e| (url.clone(), pagerduty::body(e, &self.cfg.routing_key)))
                    .collect()
            }
            NotifierKind::Alertmanager => {
                let url = format!("{}/api/v2/alerts", self.cfg.url.trim_end_matches('/'));
                vec![(url, alertmanager::body(events, self.cfg.resend_interval))]
            }
            // Queued, not posted: see `queue_datadog`.
            NotifierKind::Datadog => Vec::new(),
        }
    }

    /// Writes `events` to the Datadog queue; the queue's sender delivers them.
    ///
    /// # Errors
    /// The disk write failed (retryable) or an event is larger than the queue (permanent).
    async fn queue_datadog(&self, events: &[AlertEvent]) -> Result<Answer, SendError> {
        let Some(q) = self.datadog.clone() else {
            return Err(SendError::Permanent(
                "Datadog delivery is off (datadog.api_key is not set)".into(),
            ));
        };
        let evs: Vec<crate::model::Event> = events.iter().map(datadog::event).collect();
        let pushed = tokio::task::spawn_blocking(move || {
            for ev in &evs {
                q.push(ev)?;
            }
            Ok::<_, crate::queue::QueueError>(q)
        })
        .await;
        match pushed {
            Ok(Ok(q)) => {
                let key = match q.key_state() {
                    KeyState::Valid => "valid",
                    KeyState::Invalid => "REJECTED by the intake",
                    KeyState::Unknown => "not checked yet",
                };
                Ok(Answer {
                    status: None,
                    body: format!(
                        "queued {} event(s) for the Datadog intake (queue \"{}\"); API key {key}",
                        events.len(),
                        q.queue_name()
                    ),
                })
            }
            Ok(Err(e @ crate::queue::QueueError::TooLarge { .. })) => {
                Err(SendError::Permanent(format!("cannot queue the event: {e}")))
            }
            Ok(Err(e)) => Err(SendError::Retryable(format!("cannot queue the event: {e}"))),
            Err(e) => Err(SendError::Retryable(format!("queue writer failed: {e}"))),
        }
    }

    /// One delivery attempt of every request; the last answer on success.
    ///
    /// # Errors
    /// The first request that failed, classified for retry.
    pub async fn send(&self, events: &[AlertEvent]) -> Result<Answer, SendError> {
        if self.cfg.kind == NotifierKind::Datadog {
            return self.queue_datadog(events).await;
        }
        let mut last = Answer {
            status: None,
            body: String::new(),
        };
        for (url, body) in self.requests(events) {
            let mut req = self.client.post(&url).json(&body);
            for (k, v) in &self.cfg.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            // Errors are logged and answered by the test route: never the URL's credentials
            // (a Slack URL is one), and never reqwest's own copy of the URL.
            let shown = self.cfg.shown_url(&url);
            let resp = req.send().await.map_err(|e| {
                SendError::Retryable(format!("{shown}: {}", describe(&e.without_url())))
            })?;
            let status = resp.status().as_u16();
            let mut text = resp.text().await.unwrap_or_default();
            truncate(&mut text, ANSWER_LIMIT);
            if (200..300).contains(&status) {
                last = Answer {
                    status: Some(status),
                    body: text,
                };
            } else if status == 429 || status >= 500 || status == 408 {
                return Err(SendError::Retryable(format!(
                    "{shown}: HTTP {status}: {text}"
                )));
            } else {
                return Err(SendError::Permanent(format!(
                    "{shown}: HTTP {status}: {text}"
                )));
            }
        }
        Ok(last)
    }

    /// True when this notifier takes events of `severity` from a rule routed to `notify`.
    fn routes(&self, severity: Severity, notify: &[String]) -> bool {
        (notify.is_empty() || notify.contains(&self.name))
            && (self.cfg.severities.is_empty() || self.cfg.severities.contains(&severity))
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Retry timing.
#[derive(Debug, Clone, Copy)]
struct Retry {
    /// Attempts per notification, the first included (`alerts.max_attempts`).
    attempts: u32,
    /// Delay before the first retry; doubles per retry.
    initial: Duration,
    /// Longest delay.
    max: Duration,
}

impl Retry {
    /// Delay before attempt `n` (1-based retry number).
    fn delay(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The outcome of a test notification through one notifier.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// The notifier's name (`log` for the built-in one).
    pub notifier: String,
    /// The notifier's type (`log`, `webhook`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Whether the endpoint took the event.
    pub ok: bool,
    /// The HTTP status of a successful answer (`None` for `log` and `datadog`, which post
    /// nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The answer's body, on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Why it failed, on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Routes events to the notifiers' queues.
pub struct Dispatcher {
    /// The configured notifiers, in name order.
    pub notifiers: Vec<Arc<Notifier>>,
    /// Emptied by [`Dispatcher::close`], which lets the workers finish.
    queues: std::sync::Mutex<Vec<mpsc::Sender<Vec<AlertEvent>>>>,
    /// Events written by the built-in log notifier.
    pub logged: AtomicU64,
}

impl Dispatcher {
    /// Builds the notifiers and starts one worker per notifier on `tracker`. `datadog` is the
    /// Datadog queue when Datadog delivery is on. After a reload, `previous` is the dispatcher
    /// being replaced: a notifier of the same name keeps its counters (so
    /// `tallyd_alert_notifications_total` stays monotonic) and its Alertmanager refresh time,
    /// and the log notifier's count carries over.
    ///
    /// # Errors
    /// The HTTP client cannot be built (TLS setup), or a `datadog` notifier is configured while
    /// Datadog delivery is off.
    pub fn start(
        cfg: &AlertsConfig,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
        datadog: Option<EventQueue>,
        previous: Option<&Dispatcher>,
    ) -> Result<Arc<Dispatcher>, Error> {
        let before = |name: &str| previous?.notifiers.iter().find(|n| n.name == name);
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("tallyd/", env!("CARGO_PKG_VERSION")))
            // reqwest's http2 feature is on for OTLP/gRPC; notifiers stay on HTTP/1.1.
            .http1_only()
            .build()
            .map_err(|e| {
                Error::start(
                    "alerts",
                    format!("cannot build the HTTP client for alert notifiers: {e}"),
                )
            })?;
        let retry = Retry {
            attempts: cfg.max_attempts,
            initial: cfg.retry_initial,
            max: cfg.retry_max,
        };
        let mut notifiers = Vec::new();
        let mut queues = Vec::new();
        for (name, n) in &cfg.notifiers {
            let dd = if n.kind == NotifierKind::Datadog {
                let q = datadog.clone().ok_or_else(|| {
                    Error::start("alerts", format!("alerts.notifiers.{name} has type \"datadog\" but Datadog delivery is off: set datadog.api_key (or DD_API_KEY)"))
                })?;
                Some(q)
            } else {
                None
            };
            let was = before(name);
            let notifier = Arc::new(Notifier {
                name: name.clone(),
                cfg: n.clone(),
                client: client.clone(),
                stats: was.map(|w| Arc::clone(&w.stats)).unwrap_or_default(),
                last_refresh: AtomicU64::new(was.map_or(0, |w| w.last_refresh.load(Relaxed))),
                datadog: dd,
            });
            let (tx, rx) = mpsc::channel(cfg.notify_queue);
            tracker.spawn(worker(Arc::clone(&notifier), rx, retry, cancel.clone()));
            notifiers.push(notifier);
            queues.push(tx);
        }
        Ok(Arc::new(Dispatcher {
            notifiers,
            queues: std::sync::Mutex::new(queues),
            logged: AtomicU64::new(previous.map_or(0, |p| p.logged.load(Relaxed))),
        }))
    }

    /// Stops taking notifications; workers end after delivering what is queued.
    pub fn close(&self) {
        crate::base::lock(&self.queues).clear();
    }

    /// True when some notifier wants every firing alert re-sent (Alertmanager).
    pub fn wants_firing(&self) -> bool {
        self.notifiers
            .iter()
            .any(|n| n.cfg.kind == NotifierKind::Alertmanager)
    }

    /// Logs the evaluation's events and queues them for each notifier; never waits.
    pub fn dispatch(&self, out: &Output) {
        for e in &out.events {
            log::write(e);
            self.logged.fetch_add(1, Relaxed);
        }
        let queues = crate::base::lock(&self.queues).clone();
        for (n, q) in self.notifiers.iter().zip(&queues) {
            let routed = |e: &&AlertEvent| n.routes(e.severity, &e.notify);
            if n.cfg.kind == NotifierKind::Alertmanager {
                // Alertmanager takes one array; transitions go at once, and every firing alert
                // is re-sent each resend_interval so Alertmanager keeps it active.
                let mut batch: Vec<AlertEvent> =
                    out.events.iter().filter(routed).cloned().collect();
                let last = n.last_refresh.load(Relaxed);
                let due =
                    out.now_ms.saturating_sub(last) >= n.cfg.resend_interval.as_millis() as u64;
                if due && !out.firing.is_empty() {
                    n.last_refresh.store(out.now_ms, Relaxed);
                    let fresh: Vec<AlertEvent> = out
                        .firing
                        .iter()
                        .filter(routed)
                        .filter(|f| !batch.iter().any(|e| e.fingerprint == f.fingerprint))
                        .cloned()
                        .collect();
                    batch.extend(fresh);
                }
                if !batch.is_empty() {
                    enqueue(n, q, batch);
                }
            } else {
                for e in out.events.iter().filter(routed) {
                    enqueue(n, q, vec![e.clone()]);
                }
            }
        }
    }

    /// Sends `event` through every notifier now (one attempt each) and reports the answers.
    pub async fn test(&self, event: &AlertEvent) -> Vec<TestResult> {
        log::write(event);
        self.logged.fetch_add(1, Relaxed);
        let mut results = vec![TestResult {
            notifier: "log".into(),
            kind: "log",
            ok: true,
            status: None,
            answer: None,
            error: None,
        }];
        let sends = self.notifiers.iter().map(|n| {
            let (n, event) = (Arc::clone(n), event.clone());
            async move {
                let mut r = n.send(std::slice::from_ref(&event)).await;
                // Queued is not delivered: with a key the intake rejected, the event will not
                // arrive, and the operator testing the setup must hear so.
                let rejected = n.datadog.as_ref().map(|q| q.key_state()) == Some(KeyState::Invalid);
                if rejected && r.is_ok() {
                    r = Err(SendError::Permanent("the event is queued, but the intake rejected the Datadog API key (403): fix datadog.api_key".into()));
                }
                match &r {
                    Ok(_) => n.stats.sent.fetch_add(1, Relaxed),
                    Err(_) => n.stats.failed.fetch_add(1, Relaxed),
                };
                (n, r)
            }
        });
        for (n, r) in futures_join_all(sends).await {
            let kind = n.cfg.kind.as_str();
            results.push(match r {
                Ok(a) => TestResult {
                    notifier: n.name.clone(),
                    kind,
                    ok: true,
                    status: a.status,
                    answer: Some(a.body),
                    error: None,
                },
                Err(e) => TestResult {
                    notifier: n.name.clone(),
                    kind,
                    ok: false,
                    status: None,
                    answer: None,
                    error: Some(e.to_string()),
                },
            });
        }
        results
    }
}

/// Runs futures concurrently and returns their outputs in order (a tiny join_all on tokio).
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for (i, f) in futs.enumerate() {
        set.spawn(async move { (i, f.await) });
    }
    let mut out: Vec<(usize, F::Output)> = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(x) = r {
            out.push(x);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, x)| x).collect()
}

fn enqueue(n: &Notifier, q: &mpsc::Sender<Vec<AlertEvent>>, batch: Vec<AlertEvent>) {
    match q.try_send(batch) {
        Ok(()) => {
            n.stats.queued.fetch_add(1, Relaxed);
        }
        Err(_) => {
            n.stats.dropped.fetch_add(1, Relaxed);
            tracing::warn!(notifier = %n.name, "alert notification queue full; notification dropped");
        }
    }
}

/// Delivers one notifier's queue in order, retrying each batch with backoff.
async fn worker(
    n: Arc<Notifier>,
    mut rx: mpsc::Receiver<Vec<AlertEvent>>,
    retry: Retry,
    cancel: CancellationToken,
) {
    while let Some(batch) = rx.recv().await {
        n.stats.queued.fetch_sub(1, Relaxed);
        let mut attempt = 1;
        loop {
            match n.send(&batch).await {
                Ok(a) => {
                    n.stats.sent.fetch_add(1, Relaxed);
                    tracing::debug!(notifier = %n.name, status = a.status, answer = %a.body, "alert notification delivered");
                    break;
                }
                Err(SendError::Retryable(e)) if attempt < retry.attempts => {
                    n.stats.retries.fetch_add(1, Relaxed);
                    let delay = retry.delay(attempt);
                    tracing::warn!(notifier = %n.name, error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "alert notification failed; retrying");
                    attempt += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => {
                            n.stats.failed.fetch_add(1, Relaxed);
                            return;
                        }
                    }
                }
                Err(e) => {
                    n.stats.failed.fetch_add(1, Relaxed);
                    tracing::error!(notifier = %n.name, error = %e, attempts = attempt, "alert notification failed; giving up");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Retry {
            attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(700),
        };
        assert_eq!(r.delay(1), Duration::from_millis(100));
        assert_eq!(r.delay(2), Duration::from_millis(200));
        assert_eq!(r.delay(3), Duration::from_millis(400));
        assert_eq!(r.delay(4), Duration::from_millis(700));
        assert_eq!(r.delay(40), Duration::from_millis(700));
    }
}
