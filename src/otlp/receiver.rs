//! The OTLP receiver both transports hand decoded requests to: admission (concurrency limit,
//! shutdown), the per-request point limit, conversion, and application to the receiver's own
//! aggregation shard. It never touches a sink; the flusher drains its shard like any other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::convert::{count_points, Converter, Output, Settings};
use super::cumulative::Streams;
use super::stats::{OtlpStats, Reject};
use crate::aggregate::{Aggregator, Shard, Shared};
use crate::base::clock::Clock;
use crate::base::lock;
use crate::otlp::config::OtlpConfig;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `otlp.max_concurrent_requests` requests are being handled.
    Busy,
    /// The request bodies being read already hold the byte budget
    /// (`otlp.max_concurrent_requests` × `otlp.max_body_bytes`).
    BodyBudget,
    /// tallyd is shutting down.
    Closing,
}

/// A request refused after decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportError {
    /// The request has more data points than `otlp.max_points_per_request`.
    TooManyPoints {
        /// Data points in the request.
        points: u64,
        /// `otlp.max_points_per_request`.
        max: usize,
    },
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::TooManyPoints { points, max } => write!(
                f,
                "request has {points} data points, more than otlp.max_points_per_request = {max}; send smaller batches"
            ),
        }
    }
}

/// The result of an accepted request: zero or more points rejected, with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Data points rejected (OTLP's `rejected_data_points`).
    pub rejected: u64,
    /// Why, one line per reason; empty when none was rejected.
    pub message: String,
}

/// Seconds between two warnings about rejected points.
const WARN_EVERY_SECS: u64 = 10;

/// The OTLP receiver shared by the HTTP and gRPC servers.
pub struct Receiver {
    converter: Mutex<Converter>,
    shard: Arc<Mutex<Shard>>,
    shared: Arc<Shared>,
    /// Request, point and stream counters, for `/metrics`.
    pub stats: Arc<OtlpStats>,
    max_points: usize,
    /// Largest body, before and after decompression.
    pub max_body: usize,
    /// `otlp.request_timeout`: how long a request's body may take to arrive.
    pub request_timeout: Duration,
    permits: Arc<Semaphore>,
    /// Bytes of request bodies held in memory (read, not yet decoded), in KiB.
    body_budget: Arc<Semaphore>,
    closing: AtomicBool,
    last_warn: AtomicU64,
    clock: Clock,
}

impl Receiver {
    /// A receiver feeding a new shard of `aggregator`, reading time from `clock`; the time it
    /// is made is tallyd's start time (for `otlp.initial_cumulative_value = "auto"`).
    pub fn new(cfg: &OtlpConfig, aggregator: &Aggregator, clock: Clock) -> Receiver {
        let started = clock.unix();
        let streams = Streams::new(
            cfg.max_streams,
            cfg.stream_expiry,
            cfg.initial_cumulative_value,
            u64::try_from(started.as_nanos()).unwrap_or(u64::MAX),
            cfg.max_buckets_per_point,
        );
        Receiver {
            converter: Mutex::new(Converter::new(Settings::from_config(cfg), streams)),
            shard: {
                // OTLP sums arrive as deltas: Datadog gets them as COUNTs (issue 17).
                let s = aggregator.new_shard();
                crate::base::lock(&s).set_counts();
                s
            },
            shared: Arc::clone(aggregator.shared()),
            stats: Arc::new(OtlpStats::default()),
            max_points: cfg.max_points_per_request,
            max_body: cfg.max_body_bytes,
            request_timeout: cfg.request_timeout,
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
            body_budget: Arc::new(Semaphore::new(body_budget_kib(cfg))),
            closing: AtomicBool::new(false),
            last_warn: AtomicU64::new(0),
            clock,
        }
    }

    /// The current time since the Unix epoch, from the receiver's clock.
    pub fn now(&self) -> Duration {
        self.clock.unix()
    }

    /// Takes one of the `otlp.max_concurrent_requests` slots, without waiting.
    ///
    /// # Errors
    /// [`Refusal::Closing`] during shutdown, [`Refusal::Busy`] when every slot is taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        if self.closing.load(Relaxed) {
            return Err(Refusal::Closing);
        }
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy)
    }

    /// Takes `bytes` of the body byte budget for a body being read, without waiting: bodies
    /// are read before a request takes a slot, so the memory they hold is bounded here, by
    /// what has arrived (a slow client holds only what it sent), and released with the permit.
    ///
    /// # Errors
    /// [`Refusal::BodyBudget`] when the bodies in memory already hold the whole budget.
    pub fn reserve_body(&self, bytes: usize) -> Result<OwnedSemaphorePermit, Refusal> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        Arc::clone(&self.body_budget)
            .try_acquire_many_owned(kib)
            .map_err(|_| Refusal::BodyBudget)
    }

    /// Whether tallyd is shutting down (new requests are refused).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    /// Refuses new requests from now on (requests already admitted complete).
    pub fn close(&self) {
        self.closing.store(true, Relaxed);
    }

    /// Converts and aggregates one request.
    ///
    /// # Errors
    /// [`ExportError::TooManyPoints`] when the request is over `otlp.max_points_per_request`;
    /// nothing of it is aggregated then.
    pub fn export(
        &self,
        req: &ExportMetricsServiceRequest,
        now: Duration,
    ) -> Result<Accepted, ExportError> {
        let points = count_points(req);
        if points > self.max_points as u64 {
            return Err(ExportError::TooManyPoints {
                points,
                max: self.max_points,
            });
        }
        let mut out: Vec<Output> = Vec::new();
        let mut report = {
            let mut c = lock(&self.converter);
            let report = c.convert(req, now, &mut out);
            self.stats.streams.store(c.streams().len() as u64, Relaxed);
            report
        };
        let seq = self.shared.seq();
        {
            let mut shard = lock(&self.shard);
            let mut last_refused = None;
            for o in out {
                let mut tags: Vec<&str> = o.tags.iter().map(String::as_str).collect();
                if !shard.apply_value(o.kind, &o.name, &mut tags, o.value, seq)
                    && last_refused != Some(o.point)
                {
                    // A summary point gives several outputs; count the point once.
                    last_refused = Some(o.point);
                    report.reject(Reject::ContextLimit, || {
                        format!("metric {:?}: aggregate.max_contexts reached", o.name)
                    });
                }
            }
        }
        let rejected = report.total_rejected();
        let s = &self.stats;
        s.points_accepted
            .fetch_add(report.points.saturating_sub(rejected), Relaxed);
        for r in Reject::ALL {
            s.reject(r, report.rejected[r as usize]);
        }
        s.streams_expired.fetch_add(report.streams_expired, Relaxed);
        s.resets.fetch_add(report.resets, Relaxed);
        let message = report.error_message();
        if rejected > 0 {
            self.warn_limited(now, &message);
        }
        Ok(Accepted { rejected, message })
    }

    /// Logs at most one warning per `WARN_EVERY_SECS`; the counters carry the rest.
    pub fn warn_limited(&self, now: Duration, message: &str) {
        let secs = now.as_secs();
        let last = self.last_warn.load(Relaxed);
        if secs >= last + WARN_EVERY_SECS
            && self
                .last_warn
                .compare_exchange(last, secs, Relaxed, Relaxed)
                .is_ok()
        {
            tracing::warn!(component = "otlp", "{message}");
        }
    }
}

/// The body byte budget in KiB: as many bodies of `otlp.max_body_bytes` as requests may be
/// handled at once, which is what the concurrency slots bounded when bodies were read inside
/// them.
fn body_budget_kib(cfg: &OtlpConfig) -> usize {
    let per = cfg.max_body_bytes.div_ceil(1024);
    per.saturating_mul(cfg.max_concurrent_requests)
        .clamp(1, Semaphore::MAX_PERMITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::telemetry::Telemetry;
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics,
    };

    fn gauges(names: &[&str]) -> ExportMetricsServiceRequest {
        let metrics = names
            .iter()
            .map(|n| Metric {
                name: n.to_string(),
                data: Some(Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        value: Some(number_data_point::Value::AsDouble(1.0)),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            })
            .collect();
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn bodies_being_read_share_a_byte_budget() {
        let mut cfg = Config::default();
        cfg.otlp.max_concurrent_requests = 2;
        cfg.otlp.max_body_bytes = 10 * 1024;
        let agg = Aggregator::new(
            &cfg.aggregate,
            cfg.statsd.gauge_mode,
            Arc::new(Telemetry::default()),
        );
        let r = Receiver::new(&cfg.otlp, &agg, Clock::manual(Duration::ZERO));
        // Two bodies' worth (20 KiB): a slow client's byte counts for 1 KiB only.
        let slow = r.reserve_body(1).expect("one byte");
        let big = r.reserve_body(19 * 1024).expect("the rest");
        assert_eq!(r.reserve_body(1).err(), Some(Refusal::BodyBudget));
        drop(big);
        assert!(r.reserve_body(10 * 1024).is_ok(), "released with the body");
        drop(slow);
    }

    #[test]
    fn admission_limits_and_shutdown() {
        let mut cfg = Config::default();
        cfg.otlp.max_concurrent_requests = 1;
        let agg = Aggregator::new(
            &cfg.aggregate,
            cfg.statsd.gauge_mode,
            Arc::new(Telemetry::default()),
        );
        let r = Receiver::new(&cfg.otlp, &agg, Clock::manual(Duration::ZERO));
        let held = r.admit().expect("first request admitted");
        assert_eq!(r.admit().err(), Some(Refusal::Busy));
        drop(held);
        assert!(r.admit().is_ok());
        r.close();
        assert_eq!(r.admit().err(), Some(Refusal::Closing));
    }

    #[test]
    fn point_and_context_limits() {
        let mut cfg = Config::default();
        cfg.otlp.max_points_per_request = 3;
        cfg.aggregate.max_contexts = 2;
        let agg = Aggregator::new(
            &cfg.aggregate,
            cfg.statsd.gauge_mode,
            Arc::new(Telemetry::default()),
        );
        let r = Receiver::new(&cfg.otlp, &agg, Clock::manual(Duration::ZERO));
        let e = r.export(&gauges(&["a", "b", "c", "d"]), Duration::ZERO);
        assert_eq!(e, Err(ExportError::TooManyPoints { points: 4, max: 3 }));
        let a = r
            .export(&gauges(&["a", "b", "c"]), Duration::ZERO)
            .expect("accepted");
        assert_eq!(a.rejected, 1);
        assert!(
            a.message.contains("aggregate.max_contexts"),
            "{}",
            a.message
        );
        assert_eq!(r.stats.rejected(Reject::ContextLimit), 1);
        assert_eq!(r.stats.points_accepted.load(Relaxed), 2);
        assert_eq!(agg.flush(0).series.len(), 2);
    }
}
