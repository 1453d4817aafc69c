//! A tallyd window as OTLP metrics: pure mapping and splitting, no I/O.
//!
//! - counter → Sum (delta: the window's increase from the window's start; cumulative: the
//!   running total from the time tallyd first saw the series), monotonic unless the value
//!   went down (a DogStatsD counter may be sent negative increments);
//! - gauge → Gauge; set → Gauge with the window's distinct count;
//! - timer, histogram, distribution → delta Histogram (explicit bounds) or
//!   ExponentialHistogram, count, sum, min and max exact, buckets from the window's stored
//!   values (exact while raw, HDR bucket representatives once compact);
//! - tags → attributes (`k:v` → `k = "v"`, a bare tag → `tag = ""`; the first of two tags with
//!   one key wins, as OTLP keys must be unique);
//! - resource and scope: tallyd's resource (`host.name`, `service.name`, the configured
//!   attributes) and scope `tallyd`, except where the tags say the point came in through the
//!   OTLP receiver (`received.rs`): those tags go back into the Resource and the scope name,
//!   one ResourceMetrics per resource attribute set, one ScopeMetrics per scope in it; tallyd's
//!   own resource attributes are merged in, the received ones winning (a received `host.name`
//!   names the host the data came from).

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::config::{HistogramMapping, OtlpExportConfig, Temporality};
use super::received::{Origin, Received};
use crate::aggregate::{Flush, Samples, SeriesValue};
use crate::model::{Context, MetricKind};

/// `AggregationTemporality` values.
pub const DELTA: i32 = 1;
/// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
pub const CUMULATIVE: i32 = 2;
/// Cumulative counter series remembered; new ones past this are not sent (and counted).
pub const MAX_STREAMS: usize = 200_000;
/// A cumulative series not seen for this long is forgotten (it restarts with a new start time).
pub const STREAM_EXPIRY_NS: u64 = 15 * 60 * 1_000_000_000;
/// The finest exponential scale used (the data model allows 20).
const MAX_SCALE: i32 = 20;
const MIN_SCALE: i32 = -10;

/// What one window became.
#[derive(Debug, Default)]
pub struct Encoded {
    /// The requests, each with at most `max_points_per_request` points.
    pub requests: Vec<ExportMetricsServiceRequest>,
    /// Data points in them.
    pub points: u64,
    /// Cumulative series not sent because [`MAX_STREAMS`] were remembered.
    pub streams_dropped: u64,
}

struct Stream {
    total: f64,
    start_ns: u64,
    seen_ns: u64,
}

/// Encodes windows; remembers cumulative counter totals between them.
pub struct Encoder {
    resource: Resource,
    max_points: usize,
    temporality: Temporality,
    histogram: HistogramMapping,
    bounds: Vec<f64>,
    exp_max: usize,
    streams: HashMap<Arc<Context>, Stream>,
    last_sweep_ns: u64,
    received: Received,
}

/// One request's metrics, grouped by origin in first-seen order.
#[derive(Default)]
struct Batch {
    groups: Vec<(Origin, Vec<Metric>)>,
    index: HashMap<Origin, usize>,
    points: usize,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// The attributes of a context's tags (none moved to a resource or scope).
pub fn attributes(ctx: &Context) -> Vec<KeyValue> {
    Received::default().split(ctx.tags(), kv).0
}

impl Encoder {
    /// An encoder for `cfg`, its resource naming `host`.
    pub fn new(cfg: &OtlpExportConfig, host: &str) -> Encoder {
        let mut attrs = Vec::new();
        if !cfg.resource_attributes.contains_key("host.name") && !host.is_empty() {
            attrs.push(kv("host.name", host));
        }
        if !cfg.service_name.is_empty() && !cfg.resource_attributes.contains_key("service.name") {
            attrs.push(kv("service.name", &cfg.service_name));
        }
        for (k, v) in &cfg.resource_attributes {
            attrs.push(kv(k, v));
        }
        Encoder {
            resource: Resource {
                attributes: attrs,
                ..Default::default()
            },
            max_points: cfg.max_points_per_request.max(1),
            temporality: cfg.counter_temporality,
            histogram: cfg.histogram,
            bounds: cfg.histogram_bounds.clone(),
            exp_max: cfg.exponential_max_size.max(2),
            streams: HashMap::new(),
            last_sweep_ns: 0,
            received: Received::default(),
        }
    }

    /// Puts the resource and scope of points received over OTLP back (`received.rs`).
    pub fn with_received(mut self, received: Received) -> Encoder {
        self.received = received;
        self
    }

    /// Cumulative series remembered.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Encodes `flush`, a window from `start_ns` to `end_ns` (Unix nanoseconds).
    pub fn encode(&mut self, flush: &Flush, start_ns: u64, end_ns: u64) -> Encoded {
        self.sweep(end_ns);
        let mut out = Encoded::default();
        let mut batch = Batch::default();
        for s in &flush.series {
            let Some((origin, m)) = self.metric(&s.ctx, &s.value, start_ns, end_ns, &mut out)
            else {
                continue;
            };
            let i = match batch.index.get(&origin) {
                Some(&i) => i,
                None => {
                    batch.index.insert(origin.clone(), batch.groups.len());
                    batch.groups.push((origin, Vec::new()));
                    batch.groups.len() - 1
                }
            };
            batch.groups[i].1.push(m);
            batch.points += 1;
            out.points += 1;
            if batch.points == self.max_points {
                out.requests.push(self.request(std::mem::take(&mut batch)));
            }
        }
        if batch.points > 0 {
            out.requests.push(self.request(batch));
        }
        out
    }

    /// tallyd's resource, or the received attributes with tallyd's merged in under them.
    fn resource(&self, received: &[(String, String)]) -> Resource {
        if received.is_empty() {
            return self.resource.clone();
        }
        let mut attributes: Vec<KeyValue> = received.iter().map(|(k, v)| kv(k, v)).collect();
        for a in &self.resource.attributes {
            if !received.iter().any(|(k, _)| *k == a.key) {
                attributes.push(a.clone());
            }
        }
        Resource {
            attributes,
            ..Default::default()
        }
    }

    fn request(&self, batch: Batch) -> ExportMetricsServiceRequest {
        let mut resource_metrics: Vec<ResourceMetrics> = Vec::new();
        let mut by_resource: HashMap<Vec<(String, String)>, usize> = HashMap::new();
        for ((res, scope), metrics) in batch.groups {
            let scope = match scope {
                Some(name) => InstrumentationScope {
                    name,
                    ..Default::default()
                },
                None => InstrumentationScope {
                    name: "tallyd".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                },
            };
            let sm = ScopeMetrics {
                scope: Some(scope),
                metrics,
                ..Default::default()
            };
            if let Some(&i) = by_resource.get(&res) {
                resource_metrics[i].scope_metrics.push(sm);
                continue;
            }
            resource_metrics.push(ResourceMetrics {
                resource: Some(self.resource(&res)),
                scope_metrics: vec![sm],
                ..Default::default()
            });
            by_resource.insert(res, resource_metrics.len() - 1);
        }
        ExportMetricsServiceRequest { resource_metrics }
    }

    fn sweep(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sweep_ns) < 60_000_000_000 {
            return;
        }
        self.last_sweep_ns = now_ns;
        self.streams
            .retain(|_, s| now_ns.saturating_sub(s.seen_ns) <= STREAM_EXPIRY_NS);
    }

    fn metric(
        &mut self,
        ctx: &Arc<Context>,
        value: &SeriesValue,
        start_ns: u64,
        end_ns: u64,
        out: &mut Encoded,
    ) -> Option<(Origin, Metric)> {
        let (attributes, origin) = self.received.split(ctx.tags(), kv);
        let number = |v: number_data_point::Value, start: u64, attributes| NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: end_ns,
            value: Some(v),
            ..Default::default()
        };
        let data = match value {
            SeriesValue::Counter(v) => {
                let (v, start, temporality) = match self.temporality {
                    Temporality::Delta => (*v, start_ns, DELTA),
                    Temporality::Cumulative => {
                        if !self.streams.contains_key(ctx) && self.streams.len() >= MAX_STREAMS {
                            out.streams_dropped += 1;
                            return None;
                        }
                        let s = self.streams.entry(Arc::clone(ctx)).or_insert(Stream {
                            total: 0.0,
                            start_ns,
                            seen_ns: end_ns,
                        });
                        s.total += v;
                        s.seen_ns = end_ns;
                        (s.total, s.start_ns, CUMULATIVE)
                    }
                };
                Data::Sum(Sum {
                    data_points: vec![number(
                        number_data_point::Value::AsDouble(v),
                        start,
                        attributes,
                    )],
                    aggregation_temporality: temporality,
                    is_monotonic: v >= 0.0,
                })
            }
            SeriesValue::Gauge(v) => Data::Gauge(Gauge {
                data_points: vec![number(
                    number_data_point::Value::AsDouble(*v),
                    start_ns,
                    attributes,
                )],
            }),
            SeriesValue::Set(n) => Data::Gauge(Gauge {
                data_points: vec![number(
                    number_data_point::Value::AsInt(i64::try_from(*n).unwrap_or(i64::MAX)),
                    start_ns,
                    attributes,
                )],
            }),
            SeriesValue::Samples(s) => match self.histogram {
                HistogramMapping::Explicit => Data::Histogram(Histogram {
                    data_points: vec![explicit(s, &self.bounds, start_ns, end_ns, attributes)],
                    aggregation_temporality: DELTA,
                }),
                HistogramMapping::Exponential => Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![exponential(s, self.exp_max, start_ns, end_ns, attributes)],
                    aggregation_temporality: DELTA,
                }),
            },
        };
        let metric = Metric {
            name: ctx.name().to_string(),
            unit: if ctx.kind() == MetricKind::Timer {
                "ms".into()
            } else {
                String::new()
            },
            data: Some(data),
            ..Default::default()
        };
        Some((origin, metric))
    }
}

/// The window's stored values with their weights, clamped to the exact [min, max].
fn bins(s: &Samples) -> Vec<(f64, u64)> {
    let (lo, hi) = (s.min(), s.max());
    let mut v = Vec::new();
    s.for_each_bin(|x, w| {
        if w > 0 && x.is_finite() {
            v.push((x.clamp(lo, hi), w));
        }
    });
    v
}

/// Makes the bucket counts add up to `count` (they do unless a value was not finite): the
/// difference goes to the bucket `fix` names.
fn reconcile(counts: &mut [u64], count: u64, fix: usize) {
    let total: u64 = counts.iter().sum();
    if let Some(c) = counts.get_mut(fix) {
        if total < count {
            *c += count - total;
        } else {
            *c = c.saturating_sub(total - count);
        }
    }
}

/// An explicit-bucket point: bucket i holds (bounds[i-1], bounds[i]].
pub fn explicit(
    s: &Samples,
    bounds: &[f64],
    start_ns: u64,
    end_ns: u64,
    attributes: Vec<KeyValue>,
) -> HistogramDataPoint {
    let mut counts = vec![0u64; bounds.len() + 1];
    let bucket = |x: f64| bounds.partition_point(|b| *b < x);
    for (x, w) in bins(s) {
        counts[bucket(x)] += w;
    }
    reconcile(&mut counts, s.count(), bucket(s.max()));
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: start_ns,
        time_unix_nano: end_ns,
        count: s.count(),
        sum: Some(s.sum()),
        bucket_counts: counts,
        explicit_bounds: bounds.to_vec(),
        min: Some(s.min()),
        max: Some(s.max()),
        ..Default::default()
    }
}

/// The bucket index of magnitude `m` (> 0) at `scale`: bucket i holds (base^i, base^(i+1)],
/// base = 2^(2^-scale).
pub fn exp_index(m: f64, scale: i32) -> i64 {
    (m.log2() * 2f64.powi(scale)).ceil() as i64 - 1
}

/// An exponential point at the finest scale whose buckets per sign fit `max_size`.
pub fn exponential(
    s: &Samples,
    max_size: usize,
    start_ns: u64,
    end_ns: u64,
    attributes: Vec<KeyValue>,
) -> ExponentialHistogramDataPoint {
    let bins = bins(s);
    let mut zero = 0u64;
    // (index at MAX_SCALE, weight) per sign.
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for &(x, w) in &bins {
        if x == 0.0 {
            zero += w;
        } else if x > 0.0 {
            pos.push((exp_index(x, MAX_SCALE), w));
        } else {
            neg.push((exp_index(-x, MAX_SCALE), w));
        }
    }
    // Each scale step down halves the indices (floor); find the first that fits.
    let fits = |v: &[(i64, u64)], shift: u32| {
        let lo = v.iter().map(|p| p.0 >> shift).min();
        let hi = v.iter().map(|p| p.0 >> shift).max();
        match (lo, hi) {
            (Some(lo), Some(hi)) => (hi - lo) < max_size as i64,
            _ => true,
        }
    };
    let mut shift = 0u32;
    while MAX_SCALE - (shift as i32) > MIN_SCALE && !(fits(&pos, shift) && fits(&neg, shift)) {
        shift += 1;
    }
    let buckets = |v: &[(i64, u64)]| -> Option<Buckets> {
        let lo = v.iter().map(|p| p.0 >> shift).min()?;
        let hi = v.iter().map(|p| p.0 >> shift).max()?;
        let mut counts = vec![0u64; (hi - lo + 1) as usize];
        for &(i, w) in v {
            counts[((i >> shift) - lo) as usize] += w;
        }
        Some(Buckets {
            offset: i32::try_from(lo).unwrap_or(i32::MIN),
            bucket_counts: counts,
        })
    };
    let (positive, negative) = (buckets(&pos), buckets(&neg));
    let total = zero
        + [&positive, &negative]
            .iter()
            .filter_map(|b| b.as_ref())
            .flat_map(|b| b.bucket_counts.iter())
            .sum::<u64>();
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: start_ns,
        time_unix_nano: end_ns,
        // The buckets' total: equal to the exact count, as every stored value is finite.
        count: total,
        sum: Some(s.sum()),
        scale: MAX_SCALE - shift as i32,
        zero_count: zero,
        positive,
        negative,
        min: Some(s.min()),
        max: Some(s.max()),
        ..Default::default()
    }
}
