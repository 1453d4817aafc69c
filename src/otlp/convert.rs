//! OTLP metrics into tallyd's model: pure conversion of a decoded `ExportMetricsServiceRequest`
//! into (kind, name, tags, value) outputs for an aggregation shard. No I/O and no clock here;
//! the caller passes the time in.
//!
//! The mapping (also in docs/otlp.md):
//! - Gauge → gauge (last value wins).
//! - Sum, monotonic, delta → counter increment; cumulative → the per-stream increase since the
//!   previous point (see `cumulative.rs`), as a counter increment.
//! - Sum, non-monotonic (up-down counter): cumulative → gauge with the value; delta → gauge with
//!   the running total of the deltas since tallyd first saw the stream.
//! - Histogram (explicit buckets) and ExponentialHistogram → the window's sample store of a
//!   distribution: each bucket adds its count at a representative value (the bucket's midpoint,
//!   its log-midpoint for exponential buckets), count/sum/min/max exact where the point has them.
//! - Summary → `<name>.count` and `<name>.sum` counters (cumulative, turned into increments) and
//!   a `<name>.quantile` gauge per quantile with a `quantile:<q>` tag.
//! - Tags: point attributes under their own names; resource and scope attributes through the
//!   configured renames (`otlp.attribute_tags`, `otlp.resource_attributes`); a point attribute
//!   wins over a scope one, which wins over a resource one. Exemplars are ignored.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use foldhash::quality::FixedState;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, NumberDataPoint, SummaryDataPoint,
};

use super::cumulative::{Step, Streams};
use super::stats::Reject;
use super::tags::{clean_key, clean_value, render_value};
use crate::aggregate::shard::Value;
use crate::model::MetricKind;
use crate::otlp::config::{OtlpConfig, ResourceAttributes};

/// OTLP `AggregationTemporality` values.
const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;
/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`: the point marks a gap, it carries no value.
const NO_RECORDED_VALUE: u32 = 1;
/// Exponential histogram scales the OTLP data model allows.
const MIN_SCALE: i32 = -10;
const MAX_SCALE: i32 = 20;

/// One value for the aggregator.
#[derive(Debug)]
pub struct Output {
    /// Index of the data point (in request order) it came from.
    pub point: u64,
    /// The tallyd metric kind the point maps to.
    pub kind: MetricKind,
    /// The metric name (with `.count`, `.sum` or `.quantile` for a summary's parts).
    pub name: String,
    /// `key:value` tags from point, scope and resource attributes, in no particular order.
    pub tags: Vec<String>,
    /// What to apply to the context.
    pub value: Value,
}

/// What happened to the points of one request.
#[derive(Debug, Default)]
pub struct Report {
    /// Data points seen.
    pub points: u64,
    /// Data points rejected, per [`Reject`] reason (indexed by the reason's discriminant).
    pub rejected: [u64; Reject::ALL.len()],
    /// The first rejection message per reason, for the client's `error_message`.
    pub messages: [Option<String>; Reject::ALL.len()],
    /// Cumulative streams forgotten (idle) while handling the request.
    pub streams_expired: u64,
    /// Resets seen on cumulative streams.
    pub resets: u64,
}

impl Report {
    /// Counts a point rejected for `r`; `msg` is built only for the reason's first one.
    pub fn reject(&mut self, r: Reject, msg: impl FnOnce() -> String) {
        self.rejected[r as usize] += 1;
        if self.messages[r as usize].is_none() {
            self.messages[r as usize] = Some(msg());
        }
    }

    /// Points rejected for any reason.
    pub fn total_rejected(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// A one-line English summary of the rejections, empty when there were none.
    pub fn error_message(&self) -> String {
        let mut parts = Vec::new();
        for r in Reject::ALL {
            let n = self.rejected[r as usize];
            if n > 0 {
                let first = self.messages[r as usize].as_deref().unwrap_or("");
                parts.push(format!("{n} {} (first: {first})", r.as_str()));
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(
                "{} data points rejected: {}",
                self.total_rejected(),
                parts.join("; ")
            )
        }
    }
}

/// Converter settings, from `[otlp]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// (attribute, tag) renames for resource and scope attributes (`otlp.attribute_tags`);
    /// the first listed wins when two give the same tag.
    pub renames: Vec<(String, String)>,
    /// `otlp.resource_attributes = "all"`: attributes not renamed become tags too.
    pub all_resource_attributes: bool,
    /// The tag carrying the scope name (`otlp.scope_name_tag`); `None` = no such tag.
    pub scope_name_tag: Option<String>,
    /// `otlp.max_attributes_per_point`.
    pub max_attributes: usize,
    /// `otlp.max_buckets_per_point`.
    pub max_buckets: usize,
}

impl Settings {
    /// The settings `c` asks for; call after [`OtlpConfig::validate`].
    pub fn from_config(c: &OtlpConfig) -> Settings {
        Settings {
            renames: c.attribute_renames(),
            all_resource_attributes: c.resource_attributes == ResourceAttributes::All,
            scope_name_tag: (!c.scope_name_tag.is_empty()).then(|| c.scope_name_tag.clone()),
            max_attributes: c.max_attributes_per_point,
            max_buckets: c.max_buckets_per_point,
        }
    }
}

/// Counts the data points of a request without converting anything.
pub fn count_points(req: &ExportMetricsServiceRequest) -> u64 {
    let mut n = 0u64;
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                n += match &m.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                } as u64;
            }
        }
    }
    n
}

/// The converter: settings plus the cumulative stream memory.
pub struct Converter {
    settings: Settings,
    streams: Streams,
    hasher: FixedState,
}

/// A tag key and value, before they are joined as `key:value`.
type Pair = (String, String);

/// Per-metric context shared by its points.
struct MetricCtx<'a> {
    name: &'a str,
    /// Resource and scope tags, in priority order (scope first).
    base: &'a [Pair],
    /// Identity of the resource + scope, part of every stream key.
    origin: u64,
}

impl Converter {
    /// A converter with `settings`, keeping cumulative streams in `streams`.
    pub fn new(settings: Settings, streams: Streams) -> Converter {
        Converter {
            settings,
            streams,
            hasher: FixedState::with_seed(0x0719_7e11),
        }
    }

    /// The cumulative stream table (for its size and counts).
    pub fn streams(&mut self) -> &mut Streams {
        &mut self.streams
    }

    /// Converts every point of `req` into `out`; `now` is the wall-clock time (for stream
    /// expiry). Rejected points are counted in the report and produce nothing.
    pub fn convert(
        &mut self,
        req: &ExportMetricsServiceRequest,
        now: Duration,
        out: &mut Vec<Output>,
    ) -> Report {
        let mut report = Report::default();
        for rm in &req.resource_metrics {
            let res_attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let res_tags = self.mapped(res_attrs);
            let res_id = self.attrs_hash(res_attrs);
            for sm in &rm.scope_metrics {
                let (scope_name, scope_version, scope_attrs) = match &sm.scope {
                    Some(s) => (s.name.as_str(), s.version.as_str(), &s.attributes[..]),
                    None => ("", "", &[][..]),
                };
                let mut base = Vec::new();
                if let Some(tag) = &self.settings.scope_name_tag {
                    if !scope_name.is_empty() {
                        base.push((tag.clone(), clean_value(scope_name)));
                    }
                }
                base.extend(self.mapped(scope_attrs));
                base.extend(res_tags.iter().cloned());
                let mut h = self.hasher.build_hasher();
                h.write_u64(res_id);
                h.write(scope_name.as_bytes());
                h.write_u8(0);
                h.write(scope_version.as_bytes());
                h.write_u64(self.attrs_hash(scope_attrs));
                let origin = h.finish();
                for m in &sm.metrics {
                    let ctx = MetricCtx {
                        name: &m.name,
                        base: &base,
                        origin,
                    };
                    self.metric(&ctx, m.data.as_ref(), now, out, &mut report);
                }
            }
        }
        (report.streams_expired, report.resets) = self.streams.take_counts();
        report
    }

    fn metric(
        &mut self,
        ctx: &MetricCtx<'_>,
        data: Option<&Data>,
        now: Duration,
        out: &mut Vec<Output>,
        report: &mut Report,
    ) {
        let Some(data) = data else { return };
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    self.number_point(ctx, p, Shape::Gauge, now, out, report);
                }
            }
            Data::Sum(s) => {
                let shape = match (s.aggregation_temporality, s.is_monotonic) {
                    (DELTA, true) => Shape::DeltaCounter,
                    (CUMULATIVE, true) => Shape::CumulativeCounter,
                    (DELTA, false) => Shape::DeltaUpDown,
                    (CUMULATIVE, false) => Shape::Gauge,
                    _ => Shape::Unspecified,
                };
                for p in &s.data_points {
                    self.number_point(ctx, p, shape, now, out, report);
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    self.histogram_point(ctx, p, h.aggregation_temporality, now, out, report);
                }
            }
            Data::ExponentialHistogram(h) => {
                for p in &h.data_points {
                    self.exp_point(ctx, p, h.aggregation_temporality, now, out, report);
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    self.summary_point(ctx, p, now, out, report);
                }
            }
        }
    }

    /// Common checks and tags for a point; None when the point is rejected.
    fn begin(
        &self,
        ctx: &MetricCtx<'_>,
        attrs: &[KeyValue],
        report: &mut Report,
    ) -> Option<(u64, Vec<String>, u64)> {
        let index = report.points;
        report.points += 1;
        if ctx.name.is_empty() {
            report.reject(Reject::Invalid, || "a metric has an empty name".into());
            return None;
        }
        if attrs.len() > self.settings.max_attributes {
            report.reject(Reject::TooManyAttributes, || {
                format!(
                    "metric {:?}: a point has {} attributes, more than otlp.max_attributes_per_point = {}",
                    ctx.name,
                    attrs.len(),
                    self.settings.max_attributes
                )
            });
            return None;
        }
        let mut pairs: Vec<Pair> = attrs
            .iter()
            .map(|kv| (clean_key(&kv.key), render_value(kv.value.as_ref())))
            .collect();
        for (k, v) in ctx.base {
            if !pairs.iter().any(|(pk, _)| pk == k) {
                pairs.push((k.clone(), v.clone()));
            }
        }
        let tags = pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let mut h = self.hasher.build_hasher();
        h.write_u64(ctx.origin);
        h.write(ctx.name.as_bytes());
        h.write_u64(self.attrs_hash(attrs));
        Some((index, tags, h.finish()))
    }

    fn number_point(
        &mut self,
        ctx: &MetricCtx<'_>,
        p: &NumberDataPoint,
        shape: Shape,
        now: Duration,
        out: &mut Vec<Output>,
        report: &mut Report,
    ) {
        let Some((point, tags, key)) = self.begin(ctx, &p.attributes, report) else {
            return;
        };
        if p.flags & NO_RECORDED_VALUE != 0 {
            return;
        }
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => f64::NAN,
        };
        if !value.is_finite() {
            report.reject(Reject::Invalid, || {
                format!("metric {:?}: a point has no finite value", ctx.name)
            });
            return;
        }
        let key = key ^ shape as u64;
        let (kind, value) = match shape {
            Shape::Gauge => (MetricKind::Gauge, Value::Gauge(value)),
            Shape::DeltaCounter if value < 0.0 => {
                report.reject(Reject::Invalid, || {
                    format!(
                        "metric {:?}: a monotonic sum has a negative increment",
                        ctx.name
                    )
                });
                return;
            }
            Shape::DeltaCounter => (MetricKind::Counter, Value::Count(value)),
            Shape::CumulativeCounter => {
                match self
                    .streams
                    .number(key, p.start_time_unix_nano, p.time_unix_nano, value, now)
                {
                    Ok(Step::Delta(d)) => (MetricKind::Counter, Value::Count(d)),
                    // Keeps the series alive (and visible at 0) without counting history.
                    Ok(Step::Baseline) => (MetricKind::Counter, Value::Count(0.0)),
                    Ok(Step::Stale) => return,
                    Err(r) => return stream_limit(report, r, ctx.name),
                }
            }
            Shape::DeltaUpDown => match self.streams.running(key, value, now) {
                Ok(total) => (MetricKind::Gauge, Value::Gauge(total)),
                Err(r) => return stream_limit(report, r, ctx.name),
            },
            Shape::Unspecified => {
                report.reject(Reject::Invalid, || {
                    format!(
                        "metric {:?}: aggregation temporality is unspecified",
                        ctx.name
                    )
                });
                return;
            }
        };
        out.push(Output {
            point,
            kind,
            name: ctx.name.to_string(),
            tags,
            value,
        });
    }

    fn summary_point(
        &mut self,
        ctx: &MetricCtx<'_>,
        p: &SummaryDataPoint,
        now: Duration,
        out: &mut Vec<Output>,
        report: &mut Report,
    ) {
        let Some((point, tags, key)) = self.begin(ctx, &p.attributes, report) else {
            return;
        };
        if p.flags & NO_RECORDED_VALUE != 0 {
            return;
        }
        if !p.sum.is_finite() || p.quantile_values.iter().any(|q| !q.value.is_finite()) {
            return invalid(report, ctx.name, "summary has a non-finite sum or quantile");
        }
        // Summaries are cumulative by definition: count and sum become increments.
        let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
        for (suffix, salt, v) in [
            ("count", 0x0043_4e54_u64, p.count as f64),
            ("sum", 0x0053_554d, p.sum),
        ] {
            match self.streams.number(key ^ salt, start, time, v, now) {
                Ok(Step::Delta(d)) => out.push(Output {
                    point,
                    kind: MetricKind::Counter,
                    name: format!("{}.{suffix}", ctx.name),
                    tags: tags.clone(),
                    value: Value::Count(d),
                }),
                Ok(Step::Baseline) => out.push(Output {
                    point,
                    kind: MetricKind::Counter,
                    name: format!("{}.{suffix}", ctx.name),
                    tags: tags.clone(),
                    value: Value::Count(0.0),
                }),
                Ok(Step::Stale) => return,
                Err(r) => return stream_limit(report, r, ctx.name),
            }
        }
        for q in &p.quantile_values {
            let mut t = tags.clone();
            t.retain(|tag| !tag.starts_with("quantile:"));
            t.push(format!("quantile:{}", q.quantile));
            out.push(Output {
                point,
                kind: MetricKind::Gauge,
                name: format!("{}.quantile", ctx.name),
                tags: t,
                value: Value::Gauge(q.value),
            });
        }
    }

    /// Resource or scope attributes turned into tags by the configured rule.
    fn mapped(&self, attrs: &[KeyValue]) -> Vec<Pair> {
        let mut out: Vec<Pair> = Vec::new();
        // Renames first, in their configured order, so that the first listed wins a clash
        // (deployment.environment.name before deployment.environment).
        for (attr, tag) in &self.settings.renames {
            if out.iter().any(|(k, _)| k == tag) {
                continue;
            }
            if let Some(kv) = attrs.iter().find(|kv| &kv.key == attr) {
                out.push((tag.clone(), render_value(kv.value.as_ref())));
            }
        }
        if self.settings.all_resource_attributes {
            for kv in attrs {
                let renamed = self.settings.renames.iter().any(|(a, _)| *a == kv.key);
                let key = clean_key(&kv.key);
                if !renamed && !out.iter().any(|(k, _)| *k == key) {
                    out.push((key, render_value(kv.value.as_ref())));
                }
            }
        }
        out
    }

    /// Order-independent identity of an attribute set.
    fn attrs_hash(&self, attrs: &[KeyValue]) -> u64 {
        let mut sorted: Vec<(&str, String)> = attrs
            .iter()
            .map(|kv| (kv.key.as_str(), render_value(kv.value.as_ref())))
            .collect();
        sorted.sort_unstable();
        let mut h = self.hasher.build_hasher();
        for (k, v) in sorted {
            h.write(k.as_bytes());
            h.write_u8(0xff);
            h.write(v.as_bytes());
            h.write_u8(0xfe);
        }
        h.finish()
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Gauge = 0x100,
    DeltaCounter = 0x200,
    CumulativeCounter = 0x300,
    DeltaUpDown = 0x400,
    Unspecified = 0x500,
}

fn invalid(report: &mut Report, name: &str, what: &str) {
    report.reject(Reject::Invalid, || format!("metric {name:?}: {what}"));
}

fn stream_limit(report: &mut Report, r: Reject, name: &str) {
    report.reject(r, || {
        format!("metric {name:?}: a new cumulative stream beyond otlp.max_streams")
    });
}

mod buckets;

pub use buckets::{explicit_ranges, exponential_ranges};

#[cfg(test)]
mod tests;
