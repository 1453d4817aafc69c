//! Counters of one queue, and the `tallyd_forwarder_*` families collected from them.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use super::deliver::FailureClass;
use super::store::{unix_ms, Queue};
use crate::base::lock;
use crate::base::metrics::{Families, Histogram, Kind};

/// Upper bounds (seconds) of the request latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How long a queue's health stays `degraded` after the last payload it could not take: a loss
/// at 03:02 is still reported at 03:06, even if the payloads after it were queued again.
pub const LOSS_WINDOW: Duration = Duration::from_secs(300);

/// A run of payloads the queue could not take, with no gap of [`LOSS_WINDOW`] between them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Losses {
    /// Payloads lost in this run.
    pub count: u64,
    /// Unix milliseconds of the first of them.
    pub first_ms: u64,
    /// Unix milliseconds of the latest.
    pub last_ms: u64,
    /// Why the latest could not be queued.
    pub last_error: String,
}

impl Losses {
    /// The health reason, e.g. `3 payloads could not be queued in the last 42s (last: …)`.
    pub fn reason(&self, now_ms: u64) -> String {
        let secs = now_ms.saturating_sub(self.first_ms).div_ceil(1000).max(1);
        let noun = if self.count == 1 {
            "payload"
        } else {
            "payloads"
        };
        format!(
            "{} {noun} could not be queued in the last {secs}s (last: {})",
            self.count, self.last_error
        )
    }
}

/// Everything a queue counts about itself. Plain atomics: updated once per request.
#[derive(Default)]
pub struct QueueStats {
    /// Payloads written to the queue.
    pub enqueued: AtomicU64,
    /// Payloads delivered (2xx).
    pub delivered: AtomicU64,
    /// Payload bytes delivered, as sent.
    pub bytes_sent: AtomicU64,
    /// Attempts that will be retried.
    pub retries: AtomicU64,
    /// Failed attempts, by [`FailureClass`].
    pub failures: [AtomicU64; FailureClass::ALL.len()],
    /// Payloads dropped at the byte limit or refused as too large.
    pub dropped: AtomicU64,
    /// Payloads moved to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Dead letters dropped at `queue.dlq_max_bytes`.
    pub dlq_dropped: AtomicU64,
    /// Dead letters moved back for delivery.
    pub requeued: AtomicU64,
    /// Queue files that failed their checksum.
    pub corrupt: AtomicU64,
    /// Payloads that could not be written to disk.
    pub write_errors: AtomicU64,
    /// Reads of a pending payload that failed (it stays queued and is tried again).
    pub read_errors: AtomicU64,
    /// Payloads [`Queue::push`] refused (too large, or the write failed): lost.
    pub enqueue_failed: AtomicU64,
    /// The current run of those losses; locked only when a push fails or after one did.
    losses: Mutex<Losses>,
    /// 1 while a request is in flight.
    pub in_flight: AtomicU64,
    /// Unix seconds of the last delivery; 0 = none yet.
    pub last_success_unix: AtomicU64,
    /// Unix seconds of the last failed attempt, and the failures in a row since the last success.
    pub last_failure_unix: AtomicU64,
    /// Failed attempts since the last success.
    pub consecutive_failures: AtomicU64,
    /// Requests no slower than each of [`LATENCY_BUCKETS`] (cumulative).
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Requests timed.
    pub latency_count: AtomicU64,
    /// Total request time, microseconds.
    pub latency_sum_us: AtomicU64,
}

impl QueueStats {
    /// Records one request's duration.
    pub fn observe_latency(&self, secs: f64) {
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
    }

    /// Counts a payload that could not be queued, and why.
    pub fn enqueue_failure(&self, error: &dyn Display) {
        self.enqueue_failure_at(unix_ms(), error.to_string());
    }

    /// [`QueueStats::enqueue_failure`] at `now_ms` (Unix milliseconds).
    pub fn enqueue_failure_at(&self, now_ms: u64, error: String) {
        let mut l = lock(&self.losses);
        let window = LOSS_WINDOW.as_millis() as u64;
        if l.count == 0 || now_ms.saturating_sub(l.last_ms) >= window {
            *l = Losses {
                first_ms: now_ms,
                ..Losses::default()
            };
        }
        l.count += 1;
        l.last_ms = now_ms;
        l.last_error = error;
        self.enqueue_failed.fetch_add(1, Relaxed);
    }

    /// The current run of losses if its latest is less than [`LOSS_WINDOW`] before `now_ms`.
    pub fn recent_losses(&self, now_ms: u64) -> Option<Losses> {
        if self.enqueue_failed.load(Relaxed) == 0 {
            return None;
        }
        let l = lock(&self.losses);
        let window = LOSS_WINDOW.as_millis() as u64;
        (l.count > 0 && now_ms.saturating_sub(l.last_ms) < window).then(|| l.clone())
    }

    /// Counts a failed attempt of `class`.
    pub fn failure(&self, class: FailureClass) {
        self.failures[class as usize].fetch_add(1, Relaxed);
        self.consecutive_failures.fetch_add(1, Relaxed);
        self.last_failure_unix
            .store(super::store::unix_ms() / 1000, Relaxed);
    }
}

/// Appends the `tallyd_forwarder_*` families of every queue in `queues`.
pub fn collect(queues: &[&Queue], out: &mut Families) {
    let g = |a: &AtomicU64| a.load(Relaxed) as f64;
    type Read<'a> = &'a dyn Fn(&Queue) -> f64;
    let per_queue: [(Kind, &'static str, &'static str, Read); 17] = [
        (
            Kind::Counter,
            "tallyd_forwarder_payloads_sent",
            "Payloads delivered (2xx).",
            &|q| g(&q.stats.delivered),
        ),
        (
            Kind::Counter,
            "tallyd_forwarder_bytes_sent",
            "Payload bytes delivered (as sent, compressed).",
            &|q| g(&q.stats.bytes_sent),
        ),
        (
            Kind::Counter,
            "tallyd_forwarder_payloads_enqueued",
            "Payloads written to the durable queue.",
            &|q| g(&q.stats.enqueued),
        ),
        (
            Kind::Counter,
            "tallyd_forwarder_retries",
            "Delivery attempts that will be retried.",
            &|q| g(&q.stats.retries),
        ),
        (
            Kind::Counter,
            "tallyd_forwarder_payloads_dropped",
            "Payloads dropped at queue.max_bytes (oldest first) or too large for the queue.",
            &|q| g(&q.stats.dropped),
        ),
        (
            Kind::Counter,
            "tallyd_forwarder_dead_lettered",
            "Payloads moved to the dead-letter queue.",
            &|q| g(&q.stats.dead_lettered),
        ),
        (
            Kind::Counter,
            "tallyd_forwarder_dlq_dropped",
            "Dead letters dropped at queue.dlq_max_bytes.",
            &|q| g(&q.stats.dlq_dropped),
        ),
        (
            Kind::Counter,
            "tallyd_forwarder_corrupt_files",
            "Queue files that failed their checksum and were set aside.",
            &|q| g(&q.stats.corrupt),
        ),
        (
            Kind::Counter,
            "tallyd_forwarder_write_errors",
            "Payloads that could not be written to disk (lost).",
            &|q| g(&q.stats.write_errors),
        ),
        (
            Kind::Counter,
            "tallyd_forwarder_read_errors",
            "Reads of a queued payload that failed; the payload stays queued and is retried.",
            &|q| g(&q.stats.read_errors),
        ),
        (
            Kind::Counter,
            "tallyd_forwarder_enqueue_failures",
            "Payloads the queue could not take (disk write failed, or too large), lost.",
            &|q| g(&q.stats.enqueue_failed),
        ),
        (
            Kind::Gauge,
            "tallyd_forwarder_queue_depth",
            "Payloads waiting for delivery.",
            &|q| q.depth().pending as f64,
        ),
        (
            Kind::Gauge,
            "tallyd_forwarder_queue_bytes",
            "Bytes on disk of payloads waiting for delivery.",
            &|q| q.depth().pending_bytes as f64,
        ),
        (
            Kind::Gauge,
            "tallyd_forwarder_dlq_size",
            "Payloads in the dead-letter queue.",
            &|q| q.depth().dlq as f64,
        ),
        (
            Kind::Gauge,
            "tallyd_forwarder_dlq_bytes",
            "Bytes on disk of the dead-letter queue.",
            &|q| q.depth().dlq_bytes as f64,
        ),
        (
            Kind::Gauge,
            "tallyd_forwarder_last_success_timestamp_seconds",
            "Unix time of the last delivered payload; 0 = none yet.",
            &|q| g(&q.stats.last_success_unix),
        ),
        (
            Kind::Gauge,
            "tallyd_forwarder_queue_oldest_age_seconds",
            "Age of the oldest payload waiting for delivery; 0 when none waits.",
            &|q| {
                q.depth().oldest_ms.map_or(0.0, |ms| {
                    super::store::unix_ms().saturating_sub(ms) as f64 / 1000.0
                })
            },
        ),
    ];
    for (kind, name, help, read) in per_queue {
        let f = out.family(kind, name, help);
        for q in queues {
            f.sample(&[("queue", q.name())], read(q));
        }
    }

    // Requests by outcome, so an error rate is one ratio (the alert health rules use it).
    let f = out.counter(
        "tallyd_forwarder_requests",
        "Delivery attempts by result (ok = 2xx).",
    );
    for q in queues {
        let failed: f64 = q.stats.failures.iter().map(g).sum();
        f.sample(
            &[("queue", q.name()), ("result", "ok")],
            g(&q.stats.delivered),
        );
        f.sample(&[("queue", q.name()), ("result", "error")], failed);
    }

    let f = out.counter(
        "tallyd_forwarder_failures",
        "Failed delivery attempts, by class (4xx, 5xx, timeout, connection).",
    );
    for q in queues {
        for c in FailureClass::ALL {
            f.sample(
                &[("queue", q.name()), ("class", c.as_str())],
                g(&q.stats.failures[c as usize]),
            );
        }
    }

    let f = out.histogram(
        "tallyd_forwarder_request_duration_seconds",
        "Duration of delivery requests.",
    );
    for q in queues {
        let s = &q.stats;
        let h = Histogram {
            buckets: LATENCY_BUCKETS
                .iter()
                .zip(&s.latency_buckets)
                .map(|(b, n)| (*b, g(n)))
                .collect(),
            count: g(&s.latency_count),
            sum: g(&s.latency_sum_us) / 1e6,
        };
        f.histogram(&[("queue", q.name())], h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_reported_until_five_quiet_minutes() {
        let s = QueueStats::default();
        let t0 = 1_000_000_000;
        assert_eq!(s.recent_losses(t0), None);
        s.enqueue_failure_at(t0, "disk full".into());
        let one = s.recent_losses(t0 + 400).expect("one loss");
        assert_eq!(
            one.reason(t0 + 400),
            "1 payload could not be queued in the last 1s (last: disk full)"
        );
        s.enqueue_failure_at(t0 + 10_000, "no such directory".into());
        let window = LOSS_WINDOW.as_millis() as u64;
        let last = t0 + 10_000;
        let two = s.recent_losses(last + window - 1).expect("still recent");
        assert_eq!((two.count, two.first_ms, two.last_ms), (2, t0, last));
        assert_eq!(
            two.reason(t0 + 42_000),
            "2 payloads could not be queued in the last 42s (last: no such directory)"
        );
        assert_eq!(s.recent_losses(last + window), None, "five quiet minutes");
        // A new loss after the quiet period starts a new run; the counter keeps the total.
        s.enqueue_failure_at(last + window, "disk full".into());
        let again = s.recent_losses(last + window).expect("new run");
        assert_eq!((again.count, again.first_ms), (1, last + window));
        assert_eq!(s.enqueue_failed.load(Relaxed), 3);
    }
}
