//! Turns one [`Flush`] into compressed Datadog payloads, with the Datadog Agent's semantics
//! (REFERENCE.md §2) and within its payload limits (§3.4):
//!
//! - counter → RATE, value = sum / interval, `interval` = the window in whole seconds;
//! - gauge → GAUGE; set → GAUGE of the distinct count;
//! - timer / histogram → `<name>.<aggregate>` per `histogram_aggregates` (`.count` a RATE, the
//!   others GAUGE) and `<name>.<N>percentile` GAUGEs per `histogram_percentiles`;
//! - distribution → an Agent DDSketch in a `SketchPayload`;
//! - service checks → one JSON array per payload for `/api/v1/check_run`;
//! - events → one JSON object per payload for `/api/v1/events`.
//!
//! A `host:<name>` tag sets the host of that metric and is removed from its tags, as the
//! Agent's enrichment does; a `device:<name>` tag becomes the series' `device` resource, as
//! the Agent's v2 series serializer does. Every point carries the window's start time and
//! every series the window's interval, gauges included (as the Agent sets it).

use std::collections::HashSet;

use prost::Message;
use serde_json::json;

use super::proto::{
    Dogsketch, MetricPayload, MetricPoint, MetricSeries, MetricType, Resource, Sketch,
    SketchPayload,
};
use super::sketch;
use super::zerofill::ZeroFill;
use crate::aggregate::{Flush, Series, SeriesValue};
use crate::model::{AlertType, Event, MetricKind, Priority};
use crate::sinks::datadog::config::{Compression, DatadogConfig};

/// The resources of a series: its host, and a `device:` tag moved out of the tags into a
/// `device` resource, as the Agent's v2 series serializer does.
fn resources(host: String, mut tags: Vec<String>) -> (Vec<String>, Vec<Resource>) {
    let mut res = vec![Resource {
        r#type: "host".into(),
        name: host,
    }];
    tags.retain(|t| match t.strip_prefix("device:") {
        Some(d) => {
            res.push(Resource {
                r#type: "device".into(),
                name: d.to_string(),
            });
            false
        }
        None => true,
    });
    (tags, res)
}

/// Limits of one payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest body after compression, in bytes.
    pub max_compressed: usize,
    /// Largest body before compression, in bytes.
    pub max_uncompressed: usize,
    /// Most series, sketches, checks or events in one payload.
    pub max_items: usize,
}

/// v2 series: the Agent's `serializer_max_series_payload_size` (512,000 B compressed),
/// `serializer_max_series_uncompressed_payload_size` (5,242,880 B) and
/// `serializer_max_series_points_per_payload` (10,000) (DDA pkg/config/setup/config.go).
pub const SERIES_LIMITS: Limits = Limits {
    max_compressed: 512_000,
    max_uncompressed: 5_242_880,
    max_items: 10_000,
};
/// Sketches and JSON payloads: the Agent's generic `serializer_max_payload_size` (2.5 MB
/// compressed) and `serializer_max_uncompressed_payload_size` (4 MB).
pub const GENERIC_LIMITS: Limits = Limits {
    max_compressed: 2_621_440,
    max_uncompressed: 4_194_304,
    max_items: 10_000,
};
/// Longest event text the events API accepts (docs: "limited to 4000 characters").
pub const MAX_EVENT_TEXT: usize = 4000;

/// Path of the v2 series intake (protobuf `MetricPayload`).
pub const SERIES_ENDPOINT: &str = "/api/v2/series";
/// Path of the sketch intake (protobuf `SketchPayload`).
pub const SKETCH_ENDPOINT: &str = "/api/beta/sketches";
/// Path of the service check intake (JSON array).
pub const CHECK_ENDPOINT: &str = "/api/v1/check_run";
/// Path of the events intake (one JSON object).
pub const EVENT_ENDPOINT: &str = "/api/v1/events";

/// One encoded, compressed request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The intake path it is posted to (one of the `*_ENDPOINT`s).
    pub endpoint: &'static str,
    /// `Content-Type`: `application/x-protobuf` or `application/json`.
    pub content_type: &'static str,
    /// `Content-Encoding`, or "" for none.
    pub encoding: &'static str,
    /// The request body, compressed as `encoding` says.
    pub body: Vec<u8>,
    /// Series, sketches, checks or events inside.
    pub items: usize,
}

/// Why something could not be encoded (counted, never fatal).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EncodeStats {
    /// Single items larger than a whole payload may be, dropped.
    pub oversized: u64,
    /// Payloads the codec failed to compress, dropped.
    pub compress_errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Aggregate {
    Min,
    Max,
    Median,
    Avg,
    Sum,
    Count,
}

/// The Datadog encoding settings, resolved once at start.
pub struct Encoder {
    host: String,
    const_tags: Vec<String>,
    compression: Compression,
    aggregates: Vec<Aggregate>,
    /// (quantile, name suffix such as `.95percentile`)
    percentiles: Vec<(f64, String)>,
}

impl Encoder {
    /// The encoder for `cfg`; `host` is the host name reported with metrics.
    pub fn new(cfg: &DatadogConfig, host: String) -> Encoder {
        let mut const_tags: Vec<String> = cfg.tags.clone();
        if !cfg.env.is_empty() {
            const_tags.push(format!("env:{}", cfg.env));
        }
        if !cfg.version.is_empty() {
            const_tags.push(format!("version:{}", cfg.version));
        }
        let mut seen = HashSet::new();
        const_tags.retain(|t| seen.insert(t.clone()));
        let aggregates = cfg
            .histogram_aggregates
            .iter()
            .filter_map(|a| match a.as_str() {
                "min" => Some(Aggregate::Min),
                "max" => Some(Aggregate::Max),
                "median" => Some(Aggregate::Median),
                "avg" => Some(Aggregate::Avg),
                "sum" => Some(Aggregate::Sum),
                "count" => Some(Aggregate::Count),
                _ => None,
            })
            .collect();
        let percentiles = cfg
            .histogram_percentiles
            .iter()
            .map(|p| (*p, format!(".{}percentile", (p * 100.0).round() as u32)))
            .collect();
        Encoder {
            host,
            const_tags,
            compression: cfg.compression,
            aggregates,
            percentiles,
        }
    }

    /// The host name reported for contexts without a `host:` tag.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Host and tags of a context: a `host:` tag moves into the host.
    fn host_and_tags<'a>(&'a self, tags: impl Iterator<Item = &'a str>) -> (String, Vec<String>) {
        let mut host = None;
        let mut out = Vec::new();
        for t in tags {
            match t.strip_prefix("host:") {
                Some(h) => host = Some(h.to_string()),
                None => out.push(t.to_string()),
            }
        }
        for t in &self.const_tags {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        (host.unwrap_or_else(|| self.host.clone()), out)
    }

    /// Every payload of one window (without zero-fill).
    pub fn encode(&self, flush: &Flush, now_unix: i64) -> (Vec<Payload>, EncodeStats) {
        self.encode_window(flush, now_unix, &mut ZeroFill::new(0))
    }

    /// Every payload of one window: its series, the zeros `zero` owes counters that stopped,
    /// the timestamped points, sketches, checks and events.
    pub fn encode_window(
        &self,
        flush: &Flush,
        now_unix: i64,
        zero: &mut ZeroFill,
    ) -> (Vec<Payload>, EncodeStats) {
        let mut stats = EncodeStats::default();
        let mut out = Vec::new();
        let zeros: Vec<Series> = zero
            .window(flush)
            .into_iter()
            .map(|ctx| Series::new(ctx, SeriesValue::Counter(0.0)))
            .collect();
        let mut series = self.series(flush, flush.series.iter().chain(&zeros));
        self.timestamped(flush, &mut series);
        self.split(
            series,
            SERIES_LIMITS,
            SERIES_ENDPOINT,
            |s| MetricPayload { series: s }.encode_to_vec(),
            &mut out,
            &mut stats,
        );
        let sketches = self.sketches(flush);
        self.split(
            sketches,
            GENERIC_LIMITS,
            SKETCH_ENDPOINT,
            |s| SketchPayload { sketches: s }.encode_to_vec(),
            &mut out,
            &mut stats,
        );
        self.checks(flush, now_unix, &mut out, &mut stats);
        self.events(flush, now_unix, &mut out);
        (out, stats)
    }

    /// The timestamped gauges (GAUGE) and counts (COUNT, the value as sent over its rate),
    /// each with its own timestamp, as the Agent's no-aggregation pipeline sends them.
    fn timestamped(&self, flush: &Flush, out: &mut Vec<MetricSeries>) {
        for p in &flush.timestamped {
            if !p.value.is_finite() {
                continue;
            }
            let (host, tags) = self.host_and_tags(p.ctx.tags());
            let (tags, resources) = resources(host, tags);
            let t = if p.ctx.kind() == MetricKind::Counter {
                MetricType::Count
            } else {
                MetricType::Gauge
            };
            out.push(MetricSeries {
                resources,
                metric: p.ctx.name().to_string(),
                tags,
                points: vec![MetricPoint {
                    value: p.value,
                    timestamp: p.timestamp,
                }],
                r#type: t as i32,
                unit: String::new(),
                source_type_name: String::new(),
                interval: 0,
            });
        }
    }

    /// The v2 series of a window's `items`.
    fn series<'a>(
        &self,
        flush: &Flush,
        items: impl Iterator<Item = &'a Series>,
    ) -> Vec<MetricSeries> {
        let ts = flush.timestamp as i64;
        let secs = flush.interval.as_secs_f64().max(1e-3);
        let interval = (secs.round() as i64).max(1);
        let mut out = Vec::with_capacity(flush.series.len());
        for s in items {
            let kind = s.ctx.kind();
            if kind == MetricKind::Distribution {
                continue;
            }
            let (host, tags) = self.host_and_tags(s.ctx.tags());
            let (tags, resources) = resources(host, tags);
            let mk = |suffix: &str, t: MetricType, v: f64| MetricSeries {
                resources: resources.clone(),
                metric: format!("{}{suffix}", s.ctx.name()),
                tags: tags.clone(),
                points: vec![MetricPoint {
                    value: v,
                    timestamp: ts,
                }],
                r#type: t as i32,
                unit: String::new(),
                source_type_name: String::new(),
                interval,
            };
            match &s.value {
                // OTLP delta sums as the Agent's OTLP ingest sends them: a COUNT of the sum.
                SeriesValue::Counter(v) if s.count => out.push(mk("", MetricType::Count, *v)),
                SeriesValue::Counter(v) => out.push(mk("", MetricType::Rate, v / secs)),
                SeriesValue::Gauge(v) => out.push(mk("", MetricType::Gauge, *v)),
                SeriesValue::Set(n) => out.push(mk("", MetricType::Gauge, *n as f64)),
                SeriesValue::Samples(h) => {
                    let smp = &**h;
                    if smp.count() == 0 {
                        continue;
                    }
                    let quantile = |q: f64| -> f64 {
                        match flush.percentiles.iter().position(|p| (p - q).abs() < 1e-12) {
                            Some(i) if i < smp.quantiles().len() => smp.quantiles()[i],
                            _ => smp.clone().quantile(q),
                        }
                    };
                    for a in &self.aggregates {
                        out.push(match a {
                            Aggregate::Min => mk(".min", MetricType::Gauge, smp.min()),
                            Aggregate::Max => mk(".max", MetricType::Gauge, smp.max()),
                            Aggregate::Median => mk(".median", MetricType::Gauge, quantile(0.5)),
                            Aggregate::Avg => mk(".avg", MetricType::Gauge, smp.avg()),
                            Aggregate::Sum => mk(".sum", MetricType::Gauge, smp.sum()),
                            Aggregate::Count => {
                                mk(".count", MetricType::Rate, smp.count() as f64 / secs)
                            }
                        });
                    }
                    for (q, suffix) in &self.percentiles {
                        out.push(mk(suffix, MetricType::Gauge, quantile(*q)));
                    }
                }
            }
        }
        // Intake refuses what would not be finite; this keeps the promise should any path
        // still produce one: the intake never receives `inf` or `NaN`.
        out.retain(|m| m.points.iter().all(|p| p.value.is_finite()));
        out
    }

    /// The sketches of a window's distributions.
    fn sketches(&self, flush: &Flush) -> Vec<Sketch> {
        let ts = flush.timestamp as i64;
        let mut out = Vec::new();
        for s in &flush.series {
            if s.ctx.kind() != MetricKind::Distribution {
                continue;
            }
            let SeriesValue::Samples(h) = &s.value else {
                continue;
            };
            if h.count() == 0 {
                continue;
            }
            let sk = sketch::from_samples(h);
            // As for series: the intake never receives `inf` or `NaN`. Pre-aggregated OTLP
            // histograms can add up to a sum past f64::MAX.
            if ![sk.min, sk.max, sk.sum, sk.avg]
                .iter()
                .all(|v| v.is_finite())
            {
                continue;
            }
            let (host, tags) = self.host_and_tags(s.ctx.tags());
            out.push(Sketch {
                metric: s.ctx.name().to_string(),
                host,
                tags,
                dogsketches: vec![Dogsketch {
                    ts,
                    cnt: sk.cnt,
                    min: sk.min,
                    max: sk.max,
                    avg: sk.avg,
                    sum: sk.sum,
                    k: sk.keys,
                    n: sk.counts,
                }],
            });
        }
        out
    }

    /// Packs `items` into payloads within `limits`, halving a batch whose compressed size is
    /// still too large. An item that alone exceeds the limits is dropped and counted.
    fn split<T: Message + Clone>(
        &self,
        items: Vec<T>,
        limits: Limits,
        endpoint: &'static str,
        wrap: impl Fn(Vec<T>) -> Vec<u8> + Copy,
        out: &mut Vec<Payload>,
        stats: &mut EncodeStats,
    ) {
        let mut batch: Vec<T> = Vec::new();
        let mut size = 0usize;
        for it in items {
            let len = it.encoded_len();
            let framed = 1 + prost::length_delimiter_len(len) + len;
            if framed > limits.max_uncompressed {
                stats.oversized += 1;
                continue;
            }
            if !batch.is_empty()
                && (size + framed > limits.max_uncompressed || batch.len() >= limits.max_items)
            {
                self.emit(
                    std::mem::take(&mut batch),
                    limits,
                    endpoint,
                    wrap,
                    out,
                    stats,
                );
                size = 0;
            }
            size += framed;
            batch.push(it);
        }
        if !batch.is_empty() {
            self.emit(batch, limits, endpoint, wrap, out, stats);
        }
    }

    fn emit<T: Message + Clone>(
        &self,
        mut batch: Vec<T>,
        limits: Limits,
        endpoint: &'static str,
        wrap: impl Fn(Vec<T>) -> Vec<u8> + Copy,
        out: &mut Vec<Payload>,
        stats: &mut EncodeStats,
    ) {
        let n = batch.len();
        let raw = wrap(batch.clone());
        let body = match self.compression.compress(&raw) {
            Ok(b) => b,
            Err(_) => {
                stats.compress_errors += 1;
                return;
            }
        };
        if body.len() <= limits.max_compressed {
            out.push(Payload {
                endpoint,
                content_type: "application/x-protobuf",
                encoding: self.compression.encoding(),
                body,
                items: n,
            });
        } else if n > 1 {
            let second = batch.split_off(n / 2);
            self.emit(batch, limits, endpoint, wrap, out, stats);
            self.emit(second, limits, endpoint, wrap, out, stats);
        } else {
            stats.oversized += 1;
        }
    }

    fn checks(&self, flush: &Flush, now: i64, out: &mut Vec<Payload>, stats: &mut EncodeStats) {
        let mut batch: Vec<serde_json::Value> = Vec::new();
        let mut size = 2;
        let push = |batch: &mut Vec<serde_json::Value>,
                    out: &mut Vec<Payload>,
                    stats: &mut EncodeStats| {
            if batch.is_empty() {
                return;
            }
            let items = batch.len();
            let raw = serde_json::to_vec(&std::mem::take(batch)).unwrap_or_default();
            match self.compression.compress(&raw) {
                Ok(body) => out.push(Payload {
                    endpoint: CHECK_ENDPOINT,
                    content_type: "application/json",
                    encoding: self.compression.encoding(),
                    body,
                    items,
                }),
                Err(_) => stats.compress_errors += 1,
            }
        };
        for sc in &flush.service_checks {
            let (host, tags) = self.host_and_tags(sc.tags.iter().map(String::as_str));
            let v = json!({
                "check": sc.name,
                "host_name": sc.hostname.clone().unwrap_or(host),
                "status": sc.status as u8,
                "timestamp": sc.timestamp.unwrap_or(now),
                "message": sc.message.clone().unwrap_or_default(),
                "tags": tags,
            });
            let len = v.to_string().len() + 1;
            if size + len > GENERIC_LIMITS.max_uncompressed
                || batch.len() >= GENERIC_LIMITS.max_items
            {
                push(&mut batch, out, stats);
                size = 2;
            }
            size += len;
            batch.push(v);
        }
        push(&mut batch, out, stats);
    }

    fn events(&self, flush: &Flush, now: i64, out: &mut Vec<Payload>) {
        out.extend(flush.events.iter().map(|ev| self.event(ev, now)));
    }

    /// One event as the body of a `POST /api/v1/events` (the events API takes one per request).
    /// DogStatsD `_e` packets and alert notifications (`alert::notify::datadog`) both go through
    /// here, so host, constant tags and the text limit are applied the same way to both.
    pub fn event(&self, ev: &Event, now: i64) -> Payload {
        let (host, tags) = self.host_and_tags(ev.tags.iter().map(String::as_str));
        let mut text = ev.text.clone();
        if text.chars().count() > MAX_EVENT_TEXT {
            text = text.chars().take(MAX_EVENT_TEXT).collect();
        }
        let mut v = json!({
            "title": ev.title,
            "text": text,
            "date_happened": ev.timestamp.unwrap_or(now),
            "priority": match ev.priority { Priority::Normal => "normal", Priority::Low => "low" },
            "host": ev.hostname.clone().unwrap_or(host),
            "tags": tags,
            "alert_type": match ev.alert_type {
                AlertType::Info => "info",
                AlertType::Warning => "warning",
                AlertType::Error => "error",
                AlertType::Success => "success",
            },
        });
        if let Some(k) = &ev.aggregation_key {
            v["aggregation_key"] = json!(k);
        }
        if let Some(s) = &ev.source_type {
            v["source_type_name"] = json!(s);
        }
        Payload {
            endpoint: EVENT_ENDPOINT,
            content_type: "application/json",
            encoding: "",
            body: serde_json::to_vec(&v).unwrap_or_default(),
            items: 1,
        }
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
