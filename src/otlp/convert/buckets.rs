//! Histogram points (explicit and exponential buckets) into the window's sample store.
//!
//! Each bucket's count is interpolated across its range into the Datadog Agent's DDSketch bins
//! (`Samples::add_ranges`, as the Agent's OTLP ingest does), rather than put at one
//! representative value; count, sum, min and max stay exact where the point carries them and
//! ranges are clamped to [min, max], so percentiles never leave the observed range.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, ExponentialHistogramDataPoint, HistogramDataPoint,
};

use super::{
    invalid, stream_limit, Converter, MetricCtx, Output, Report, CUMULATIVE, DELTA, MAX_SCALE,
    MIN_SCALE, NO_RECORDED_VALUE,
};
use crate::aggregate::shard::Value;
use crate::aggregate::Samples;
use crate::model::MetricKind;
use crate::otlp::cumulative::{ExpBuckets, ExpData, HistData, Step};
use crate::otlp::stats::Reject;

impl Converter {
    pub(super) fn histogram_point(
        &mut self,
        ctx: &MetricCtx<'_>,
        p: &HistogramDataPoint,
        temporality: i32,
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
        let bounds = &p.explicit_bounds;
        if p.bucket_counts.len() > self.settings.max_buckets {
            return too_many_buckets(
                report,
                ctx.name,
                p.bucket_counts.len(),
                self.settings.max_buckets,
            );
        }
        let consistent = if bounds.is_empty() {
            p.bucket_counts.len() <= 1
        } else {
            p.bucket_counts.len() == bounds.len() + 1
                && bounds.iter().all(|b| b.is_finite())
                && bounds.windows(2).all(|w| w[0] < w[1])
        };
        let total = p
            .bucket_counts
            .iter()
            .fold(0u64, |a, c| a.saturating_add(*c));
        if !consistent || (!p.bucket_counts.is_empty() && total != p.count) {
            return invalid(
                report,
                ctx.name,
                "histogram buckets do not match its bounds or count",
            );
        }
        let data = HistData {
            count: p.count,
            sum: p.sum.filter(|s| s.is_finite()),
            buckets: p.bucket_counts.clone(),
            min: p.min.filter(|v| v.is_finite()),
            max: p.max.filter(|v| v.is_finite()),
        };
        let data = match temporality {
            DELTA => data,
            CUMULATIVE => {
                let mut h = self.hasher.build_hasher();
                for b in bounds {
                    h.write_u64(b.to_bits());
                }
                let layout = h.finish();
                match self.streams.histogram(
                    key ^ 0x4849_5354,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    layout,
                    data,
                    now,
                ) {
                    Ok(Step::Delta(d)) => d,
                    Ok(_) => return,
                    Err(r) => return stream_limit(report, r, ctx.name),
                }
            }
            _ => return invalid(report, ctx.name, "aggregation temporality is unspecified"),
        };
        if data.count == 0 {
            return;
        }
        let ranges = if data.buckets.is_empty() || bounds.is_empty() {
            // Only count and sum are known: the values sit at their mean.
            match data.sum {
                Some(s) => {
                    let mean = s / data.count as f64;
                    vec![(mean, mean, data.count)]
                }
                None => return invalid(report, ctx.name, "histogram has neither buckets nor sum"),
            }
        } else {
            explicit_ranges(bounds, &data.buckets, data.min, data.max)
        };
        if !bounds.is_empty() && !data.buckets.is_empty() {
            // So that /metrics exports it with the bounds it came with.
            crate::model::bounds::record(MetricKind::Distribution, ctx.name, &tags, bounds);
        }
        let mut samples = Samples::keyed();
        samples.add_ranges(&ranges, data.sum, data.min, data.max);
        out.push(Output {
            point,
            kind: MetricKind::Distribution,
            name: ctx.name.to_string(),
            tags,
            value: Value::Samples(samples),
        });
    }

    pub(super) fn exp_point(
        &mut self,
        ctx: &MetricCtx<'_>,
        p: &ExponentialHistogramDataPoint,
        temporality: i32,
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
        let buckets = |b: &Option<Buckets>| {
            b.as_ref().map_or_else(ExpBuckets::default, |b| ExpBuckets {
                offset: b.offset,
                counts: b.bucket_counts.clone(),
            })
        };
        let data = ExpData {
            scale: p.scale,
            count: p.count,
            sum: p.sum.filter(|s| s.is_finite()),
            zero: p.zero_count,
            pos: buckets(&p.positive),
            neg: buckets(&p.negative),
            min: p.min.filter(|v| v.is_finite()),
            max: p.max.filter(|v| v.is_finite()),
        };
        let n = data.pos.counts.len() + data.neg.counts.len();
        if n > self.settings.max_buckets {
            return too_many_buckets(report, ctx.name, n, self.settings.max_buckets);
        }
        let total = data
            .pos
            .counts
            .iter()
            .chain(&data.neg.counts)
            .fold(data.zero, |a, c| a.saturating_add(*c));
        if !(MIN_SCALE..=MAX_SCALE).contains(&p.scale) || total != p.count {
            return invalid(
                report,
                ctx.name,
                "exponential histogram scale out of range or buckets do not add up to its count",
            );
        }
        let data = match temporality {
            DELTA => data,
            CUMULATIVE => {
                match self.streams.exponential(
                    key ^ 0x4558_5048,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    data,
                    now,
                ) {
                    Ok(Step::Delta(d)) => d,
                    Ok(_) => return,
                    Err(r) => return stream_limit(report, r, ctx.name),
                }
            }
            _ => return invalid(report, ctx.name, "aggregation temporality is unspecified"),
        };
        if data.count == 0 {
            return;
        }
        let Some(ranges) = exponential_ranges(&data) else {
            return invalid(
                report,
                ctx.name,
                "exponential bucket beyond the range of f64",
            );
        };
        let mut samples = Samples::keyed();
        samples.add_ranges(&ranges, data.sum, data.min, data.max);
        out.push(Output {
            point,
            kind: MetricKind::Distribution,
            name: ctx.name.to_string(),
            tags,
            value: Value::Samples(samples),
        });
    }
}

fn too_many_buckets(report: &mut Report, name: &str, n: usize, max: usize) {
    report.reject(Reject::TooManyBuckets, || {
        format!(
            "metric {name:?}: a point has {n} buckets, more than otlp.max_buckets_per_point = {max}"
        )
    });
}

/// The ranges of explicit buckets: `buckets[i]` covers `(bounds[i-1], bounds[i]]`; the two
/// open-ended ones run from their finite bound to the point's min or max (or are the bound
/// alone without them). Empty buckets are left out.
pub fn explicit_ranges(
    bounds: &[f64],
    buckets: &[u64],
    min: Option<f64>,
    max: Option<f64>,
) -> Vec<(f64, f64, u64)> {
    let n = bounds.len();
    buckets
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| {
            let (lo, hi) = if i == 0 {
                match min {
                    Some(m) if m < bounds[0] => (m, bounds[0]),
                    _ => (bounds[0], bounds[0]),
                }
            } else if i >= n {
                match max {
                    Some(m) if m > bounds[n - 1] => (bounds[n - 1], m),
                    _ => (bounds[n - 1], bounds[n - 1]),
                }
            } else {
                (bounds[i - 1], bounds[i])
            };
            (lo, hi, *c)
        })
        .collect()
}

/// The ranges of exponential buckets: index `i` at scale `s` covers (base^i, base^(i+1)] with
/// base = 2^(2^-s); negative buckets mirror it and the zero bucket is the point 0. None if a
/// bucket is beyond f64.
pub fn exponential_ranges(d: &ExpData) -> Option<Vec<(f64, f64, u64)>> {
    let mut out = Vec::with_capacity(1 + d.pos.counts.len() + d.neg.counts.len());
    if d.zero > 0 {
        out.push((0.0, 0.0, d.zero));
    }
    let factor = (-f64::from(d.scale)).exp2();
    for (sign, b) in [(1.0, &d.pos), (-1.0, &d.neg)] {
        for (i, c) in b.counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            let idx = f64::from(b.offset) + i as f64;
            let (lo, hi) = ((idx * factor).exp2(), ((idx + 1.0) * factor).exp2());
            if !hi.is_finite() {
                return None;
            }
            out.push((sign * lo, sign * hi, *c));
        }
    }
    Some(out)
}
