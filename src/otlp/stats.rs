//! The OTLP receiver's own metrics (`tallyd_otlp_*`), collected for `/metrics` through the
//! self-metrics registry ([`Collect`]). Counters only; both transports count into one instance.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::base::metrics::{Collect, Families, Kind};

/// The two OTLP transports, as label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/HTTP (protobuf or JSON).
    Http = 0,
    /// OTLP/gRPC.
    Grpc = 1,
}

impl Transport {
    /// Every transport, in label order.
    pub const ALL: [Transport; 2] = [Transport::Http, Transport::Grpc];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
        }
    }
}

/// How a request ended, as label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every point accepted.
    Success = 0,
    /// Accepted with some points rejected (`partial_success`).
    Partial = 1,
    /// Undecodable body or bad compression (HTTP 400).
    BadRequest = 2,
    /// Content type or content encoding not understood (HTTP 415).
    UnsupportedMediaType = 3,
    /// Body or point count over the limits (HTTP 413).
    TooLarge = 4,
    /// `max_concurrent_requests` reached (HTTP 429, gRPC UNAVAILABLE).
    Throttled = 5,
    /// tallyd is shutting down (HTTP 503, gRPC UNAVAILABLE).
    Unavailable = 6,
    /// The body did not arrive within `otlp.request_timeout` (HTTP 408, gRPC DEADLINE_EXCEEDED).
    Timeout = 7,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Success,
        Outcome::Partial,
        Outcome::BadRequest,
        Outcome::UnsupportedMediaType,
        Outcome::TooLarge,
        Outcome::Throttled,
        Outcome::Unavailable,
        Outcome::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::BadRequest => "bad_request",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::TooLarge => "too_large",
            Outcome::Throttled => "throttled",
            Outcome::Unavailable => "unavailable",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Why a data point was rejected, as label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// No value, a non-finite value, a negative increment on a monotonic sum, inconsistent
    /// histogram buckets, an empty metric name or an unspecified temporality.
    Invalid = 0,
    /// More attributes than `otlp.max_attributes_per_point`.
    TooManyAttributes = 1,
    /// More buckets than `otlp.max_buckets_per_point`.
    TooManyBuckets = 2,
    /// A new cumulative stream beyond `otlp.max_streams`.
    StreamLimit = 3,
    /// A new context beyond `aggregate.max_contexts`.
    ContextLimit = 4,
}

impl Reject {
    /// Every reason, in label order.
    pub const ALL: [Reject; 5] = [
        Reject::Invalid,
        Reject::TooManyAttributes,
        Reject::TooManyBuckets,
        Reject::StreamLimit,
        Reject::ContextLimit,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Invalid => "invalid",
            Reject::TooManyAttributes => "too_many_attributes",
            Reject::TooManyBuckets => "too_many_buckets",
            Reject::StreamLimit => "stream_limit",
            Reject::ContextLimit => "context_limit",
        }
    }
}

/// Every `tallyd_otlp_*` counter.
#[derive(Default)]
pub struct OtlpStats {
    requests: [[AtomicU64; Outcome::ALL.len()]; 2],
    bytes: [AtomicU64; 2],
    /// Data points accepted into aggregation.
    pub points_accepted: AtomicU64,
    rejected: [AtomicU64; 5],
    /// Cumulative streams held (a gauge, set after each request).
    pub streams: AtomicU64,
    /// Cumulative streams forgotten after `otlp.stream_expiry`.
    pub streams_expired: AtomicU64,
    /// Resets seen on cumulative streams (value went down or start time moved).
    pub resets: AtomicU64,
    /// OTLP/HTTP bodies being read, not yet admitted (a gauge; slow uploads show here).
    pub bodies_reading: AtomicU64,
}

impl OtlpStats {
    /// Counts a request on `t` that ended with `o`.
    pub fn request(&self, t: Transport, o: Outcome) {
        self.requests[t as usize][o as usize].fetch_add(1, Relaxed);
    }

    /// Requests on `t` that ended with `o`.
    pub fn requests(&self, t: Transport, o: Outcome) -> u64 {
        self.requests[t as usize][o as usize].load(Relaxed)
    }

    /// Counts `n` request bytes received on `t`.
    pub fn bytes(&self, t: Transport, n: usize) {
        self.bytes[t as usize].fetch_add(n as u64, Relaxed);
    }

    /// Counts `n` points rejected for `r`.
    pub fn reject(&self, r: Reject, n: u64) {
        if n > 0 {
            self.rejected[r as usize].fetch_add(n, Relaxed);
        }
    }

    /// Points rejected for `r`.
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected[r as usize].load(Relaxed)
    }
}

impl Collect for OtlpStats {
    fn collect(&self, out: &mut Families) {
        let f = out.counter(
            "tallyd_otlp_requests",
            "OTLP export requests, by transport and outcome.",
        );
        for t in Transport::ALL {
            for o in Outcome::ALL {
                f.sample(
                    &[("transport", t.as_str()), ("outcome", o.as_str())],
                    self.requests(t, o) as f64,
                );
            }
        }
        let f = out.counter(
            "tallyd_otlp_bytes",
            "OTLP request bytes received (HTTP: as sent, before decompression; gRPC: decoded message size).",
        );
        f.by(
            "transport",
            Transport::ALL.map(|t| (t.as_str(), self.bytes[t as usize].load(Relaxed) as f64)),
        );
        out.counter(
            "tallyd_otlp_points_accepted",
            "OTLP data points accepted into aggregation.",
        )
        .value(self.points_accepted.load(Relaxed) as f64);
        let f = out.counter(
            "tallyd_otlp_points_rejected",
            "OTLP data points rejected (reported to the client as partial success), by reason.",
        );
        for r in Reject::ALL {
            f.sample(&[("reason", r.as_str())], self.rejected(r) as f64);
        }
        let rest = [
            (
                Kind::Gauge,
                "tallyd_otlp_streams",
                "Cumulative OTLP streams remembered for delta conversion.",
                &self.streams,
            ),
            (
                Kind::Counter,
                "tallyd_otlp_streams_expired",
                "Cumulative OTLP streams forgotten after otlp.stream_expiry.",
                &self.streams_expired,
            ),
            (
                Kind::Counter,
                "tallyd_otlp_cumulative_resets",
                "Resets seen on cumulative OTLP streams (value went down or start time moved).",
                &self.resets,
            ),
            (
                Kind::Gauge,
                "tallyd_otlp_bodies_reading",
                "OTLP/HTTP request bodies being read, before admission (slow uploads show here).",
                &self.bodies_reading,
            ),
        ];
        for (kind, name, help, a) in rest {
            out.family(kind, name, help).value(a.load(Relaxed) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::metrics::{collect_one, render_to_string};

    #[test]
    fn renders_every_family() {
        let s = OtlpStats::default();
        s.request(Transport::Grpc, Outcome::Partial);
        s.reject(Reject::StreamLimit, 3);
        s.bytes(Transport::Http, 10);
        let families = collect_one(&s);
        let requests = families
            .iter()
            .find(|f| f.name == "tallyd_otlp_requests")
            .expect("requests");
        assert_eq!(
            requests.get(&[("transport", "grpc"), ("outcome", "partial")]),
            Some(1.0)
        );
        let out = render_to_string(&families, false);
        assert!(
            out.contains("tallyd_otlp_requests_total{transport=\"grpc\",outcome=\"partial\"} 1\n")
        );
        assert!(out.contains("tallyd_otlp_points_rejected_total{reason=\"stream_limit\"} 3\n"));
        assert!(out.contains("tallyd_otlp_bytes_total{transport=\"http\"} 10\n"));
        assert!(out.contains("tallyd_otlp_streams 0\n"));
        assert!(out.contains("tallyd_otlp_cumulative_resets_total 0\n"));
    }
}
