//! Counters of one queue, and their rendering as `tallyd_forwarder_*` families.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::deliver::FailureClass;
use super::store::Queue;
use crate::base::expo;

/// Upper bounds (seconds) of the request latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Everything a queue counts about itself. Plain atomics: updated once per request.
#[derive(Default)]
pub struct QueueStats {
    pub enqueued: AtomicU64,
    pub delivered: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub retries: AtomicU64,
    pub failures: [AtomicU64; FailureClass::ALL.len()],
    /// Payloads dropped at the byte limit or refused as too large.
    pub dropped: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dlq_dropped: AtomicU64,
    pub requeued: AtomicU64,
    pub corrupt: AtomicU64,
    pub write_errors: AtomicU64,
    /// 1 while a request is in flight.
    pub in_flight: AtomicU64,
    pub last_success_unix: AtomicU64,
    /// Unix seconds of the last failed attempt, and the failures in a row since the last success.
    pub last_failure_unix: AtomicU64,
    pub consecutive_failures: AtomicU64,
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    pub latency_count: AtomicU64,
    pub latency_sum_us: AtomicU64,
}

impl QueueStats {
    pub fn observe_latency(&self, secs: f64) {
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
    }

    pub fn failure(&self, class: FailureClass) {
        self.failures[class as usize].fetch_add(1, Relaxed);
        self.consecutive_failures.fetch_add(1, Relaxed);
        self.last_failure_unix
            .store(super::store::unix_ms() / 1000, Relaxed);
    }
}

/// Renders the `tallyd_forwarder_*` families for every queue in `queues`.
pub fn render(queues: &[&Queue], out: &mut String, om: bool) {
    let g = |a: &AtomicU64| a.load(Relaxed) as f64;
    let per_queue =
        |out: &mut String, name: &str, kind: &str, help: &str, f: &dyn Fn(&Queue) -> f64| {
            expo::family_header(out, name, kind, help, om);
            let suffix = if kind == "counter" { "_total" } else { "" };
            for q in queues {
                expo::sample(out, name, suffix, &label(q), f(q));
            }
        };
    per_queue(
        out,
        "tallyd_forwarder_payloads_sent",
        "counter",
        "Payloads delivered (2xx).",
        &|q| g(&q.stats.delivered),
    );
    per_queue(
        out,
        "tallyd_forwarder_bytes_sent",
        "counter",
        "Payload bytes delivered (as sent, compressed).",
        &|q| g(&q.stats.bytes_sent),
    );
    per_queue(
        out,
        "tallyd_forwarder_payloads_enqueued",
        "counter",
        "Payloads written to the durable queue.",
        &|q| g(&q.stats.enqueued),
    );
    per_queue(
        out,
        "tallyd_forwarder_retries",
        "counter",
        "Delivery attempts that will be retried.",
        &|q| g(&q.stats.retries),
    );
    per_queue(
        out,
        "tallyd_forwarder_payloads_dropped",
        "counter",
        "Payloads dropped at queue.max_bytes (oldest first) or too large for the queue.",
        &|q| g(&q.stats.dropped),
    );
    per_queue(
        out,
        "tallyd_forwarder_dead_lettered",
        "counter",
        "Payloads moved to the dead-letter queue.",
        &|q| g(&q.stats.dead_lettered),
    );
    per_queue(
        out,
        "tallyd_forwarder_dlq_dropped",
        "counter",
        "Dead letters dropped at queue.dlq_max_bytes.",
        &|q| g(&q.stats.dlq_dropped),
    );
    per_queue(
        out,
        "tallyd_forwarder_corrupt_files",
        "counter",
        "Queue files that failed their checksum and were set aside.",
        &|q| g(&q.stats.corrupt),
    );
    per_queue(
        out,
        "tallyd_forwarder_write_errors",
        "counter",
        "Payloads that could not be written to disk (lost).",
        &|q| g(&q.stats.write_errors),
    );
    per_queue(
        out,
        "tallyd_forwarder_queue_depth",
        "gauge",
        "Payloads waiting for delivery.",
        &|q| q.depth().pending as f64,
    );
    per_queue(
        out,
        "tallyd_forwarder_queue_bytes",
        "gauge",
        "Bytes on disk of payloads waiting for delivery.",
        &|q| q.depth().pending_bytes as f64,
    );
    per_queue(
        out,
        "tallyd_forwarder_dlq_size",
        "gauge",
        "Payloads in the dead-letter queue.",
        &|q| q.depth().dlq as f64,
    );
    per_queue(
        out,
        "tallyd_forwarder_dlq_bytes",
        "gauge",
        "Bytes on disk of the dead-letter queue.",
        &|q| q.depth().dlq_bytes as f64,
    );
    per_queue(
        out,
        "tallyd_forwarder_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last delivered payload; 0 = none yet.",
        &|q| g(&q.stats.last_success_unix),
    );

    per_queue(
        out,
        "tallyd_forwarder_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest payload waiting for delivery; 0 when none waits.",
        &|q| {
            q.depth().oldest_ms.map_or(0.0, |ms| {
                super::store::unix_ms().saturating_sub(ms) as f64 / 1000.0
            })
        },
    );

    // Requests by outcome, so an error rate is one ratio (the alert health rules use it).
    let name = "tallyd_forwarder_requests";
    expo::family_header(
        out,
        name,
        "counter",
        "Delivery attempts by result (ok = 2xx).",
        om,
    );
    for q in queues {
        let failed: f64 = q.stats.failures.iter().map(g).sum();
        expo::sample(
            out,
            name,
            "_total",
            &format!("{},result=\"ok\"", label(q)),
            g(&q.stats.delivered),
        );
        expo::sample(
            out,
            name,
            "_total",
            &format!("{},result=\"error\"", label(q)),
            failed,
        );
    }

    let name = "tallyd_forwarder_failures";
    expo::family_header(
        out,
        name,
        "counter",
        "Failed delivery attempts, by class (4xx, 5xx, timeout, connection).",
        om,
    );
    for q in queues {
        for c in FailureClass::ALL {
            let l = format!("{},class=\"{}\"", label(q), c.as_str());
            expo::sample(out, name, "_total", &l, g(&q.stats.failures[c as usize]));
        }
    }

    let name = "tallyd_forwarder_request_duration_seconds";
    expo::family_header(out, name, "histogram", "Duration of delivery requests.", om);
    for q in queues {
        let base = label(q);
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let mut l = base.clone();
            let _ = write!(l, ",le=\"{b}\"");
            expo::sample(out, name, "_bucket", &l, g(&q.stats.latency_buckets[i]));
        }
        expo::sample(
            out,
            name,
            "_bucket",
            &format!("{base},le=\"+Inf\""),
            g(&q.stats.latency_count),
        );
        expo::sample(out, name, "_sum", &base, g(&q.stats.latency_sum_us) / 1e6);
        expo::sample(out, name, "_count", &base, g(&q.stats.latency_count));
    }
}

fn label(q: &Queue) -> String {
    let mut l = String::from("queue=\"");
    expo::escape_label_value(&mut l, q.name());
    l.push('"');
    l
}
