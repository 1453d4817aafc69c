//! Counters of one queue, and the `tallyd_forwarder_*` families collected from them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::deliver::FailureClass;
use super::store::Queue;
use crate::base::metrics::{Families, Histogram, Kind};

/// Upper bounds (seconds) of the request latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

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
    let per_queue: [(Kind, &'static str, &'static str, Read); 15] = [
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
