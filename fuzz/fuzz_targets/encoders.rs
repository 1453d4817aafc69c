//! The remote_write and Datadog encoders fed fuzzed windows. A window is built the way the
//! agent builds one: DogStatsD lines through the parser (metrics, events, service checks) and
//! values applied as the OTLP receiver applies them (any name and tags, finite values), then
//! the aggregator's flush. Every output is decoded with independent decoders (message types
//! declared here from the published field numbers, `snap`, `zstd`, `flate2`, `serde_json`):
//!
//! - remote_write: each body snappy-decompresses and decodes as a `WriteRequest`; samples add
//!   up to what the encoder reported, at most `max_samples_per_request` per request; labels are
//!   valid, sorted, unique, `__name__` among them; values finite; and (without external labels)
//!   every series is on `/metrics` with the same value.
//! - Datadog: each body decompresses per its `Content-Encoding`, within the payload limits;
//!   series and sketches decode as `MetricPayload` / `SketchPayload` with `items` entries,
//!   every value finite, sketch bins consistent; checks and events are JSON.

#![no_main]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tallyd::aggregate::{shard::Value, Aggregator, Samples, Sink};
use tallyd::config::Config;
use tallyd::model::MetricKind;
use tallyd::sinks::datadog::config::Compression;
use tallyd::sinks::datadog::encode::{self as dd, Encoder as DdEncoder};
use tallyd::sinks::prometheus::{Exposition, Prometheus};
use tallyd::sinks::remote_write::encode::Encoder as RwEncoder;
use tallyd::statsd::Ingest;
use tallyd::telemetry::{LocalStats, Telemetry};

#[derive(Arbitrary, Debug)]
enum Op {
    /// A DogStatsD packet, through the parser.
    Lines(String),
    /// A value applied directly, as the OTLP receiver does.
    Direct {
        kind: u8,
        name: String,
        tags: Vec<String>,
        values: Vec<(f64, u8)>,
    },
    /// Closes the window.
    Flush,
}

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
    compression: u8,
    max_samples: u8,
    external: Vec<(String, String)>,
}

// Independent declarations of the remote write 1.0 messages (prompb/remote.proto, types.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

// Independent declarations of DataDog/agent-payload proto/metrics/agent_payload.proto.
#[derive(Clone, PartialEq, prost::Message)]
struct MetricPayload {
    #[prost(message, repeated, tag = "1")]
    series: Vec<MetricSeries>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct MetricSeries {
    #[prost(message, repeated, tag = "1")]
    resources: Vec<Resource>,
    #[prost(string, tag = "2")]
    metric: String,
    #[prost(string, repeated, tag = "3")]
    tags: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    points: Vec<MetricPoint>,
    #[prost(int32, tag = "5")]
    r#type: i32,
    #[prost(int64, tag = "8")]
    interval: i64,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Resource {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(string, tag = "2")]
    name: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct MetricPoint {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}
#[derive(Clone, PartialEq, prost::Message)]
struct SketchPayload {
    #[prost(message, repeated, tag = "1")]
    sketches: Vec<Sketch>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Sketch {
    #[prost(string, tag = "1")]
    metric: String,
    #[prost(string, tag = "2")]
    host: String,
    #[prost(string, repeated, tag = "4")]
    tags: Vec<String>,
    #[prost(message, repeated, tag = "7")]
    dogsketches: Vec<Dogsketch>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Dogsketch {
    #[prost(int64, tag = "1")]
    ts: i64,
    #[prost(int64, tag = "2")]
    cnt: i64,
    #[prost(double, tag = "3")]
    min: f64,
    #[prost(double, tag = "4")]
    max: f64,
    #[prost(double, tag = "5")]
    avg: f64,
    #[prost(double, tag = "6")]
    sum: f64,
    #[prost(sint32, repeated, tag = "7")]
    k: Vec<i32>,
    #[prost(uint32, repeated, tag = "8")]
    n: Vec<u32>,
}

fn decompress(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "" => out.extend_from_slice(body),
        "zstd" => {
            zstd::stream::read::Decoder::new(body)
                .and_then(|mut d| d.read_to_end(&mut out))
                .expect("zstd body decodes");
        }
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .expect("gzip body decodes");
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut out)
                .expect("zlib body decodes");
        }
        e => panic!("unknown Content-Encoding {e:?}"),
    }
    out
}

fn check_datadog(payloads: &[dd::Payload], window_ts: i64) {
    for p in payloads {
        let raw = decompress(p.encoding, &p.body);
        let limits = if p.endpoint == dd::SERIES_ENDPOINT {
            dd::SERIES_LIMITS
        } else {
            dd::GENERIC_LIMITS
        };
        if p.endpoint != dd::EVENT_ENDPOINT {
            assert!(
                p.body.len() <= limits.max_compressed,
                "{} over its compressed limit",
                p.endpoint
            );
            assert!(
                raw.len() <= limits.max_uncompressed,
                "{} over its size limit",
                p.endpoint
            );
            assert!(p.items <= limits.max_items);
        }
        match p.endpoint {
            dd::SERIES_ENDPOINT => {
                assert_eq!(p.content_type, "application/x-protobuf");
                let m = MetricPayload::decode(raw.as_slice()).expect("series decode");
                assert_eq!(m.series.len(), p.items);
                for s in &m.series {
                    assert!(!s.points.is_empty());
                    assert!((1..=3).contains(&s.r#type), "type {}", s.r#type);
                    for pt in &s.points {
                        assert!(pt.value.is_finite(), "non-finite point {s:?}");
                        assert_eq!(pt.timestamp, window_ts);
                    }
                    assert_eq!(s.resources.len(), 1);
                    assert_eq!(s.resources[0].r#type, "host");
                }
            }
            dd::SKETCH_ENDPOINT => {
                let m = SketchPayload::decode(raw.as_slice()).expect("sketch decode");
                assert_eq!(m.sketches.len(), p.items);
                for s in &m.sketches {
                    for d in &s.dogsketches {
                        for v in [d.min, d.max, d.avg, d.sum] {
                            assert!(v.is_finite(), "non-finite sketch {d:?}");
                        }
                        assert!(d.min <= d.max, "{d:?}");
                        assert!(d.cnt > 0, "{d:?}");
                        assert_eq!(d.k.len(), d.n.len(), "{d:?}");
                        assert!(
                            d.k.windows(2).all(|w| w[0] <= w[1]),
                            "keys not ascending {d:?}"
                        );
                        let total: u64 = d.n.iter().map(|&n| u64::from(n)).sum();
                        assert_eq!(total, d.cnt as u64, "bins do not add up to the count {d:?}");
                    }
                }
            }
            dd::CHECK_ENDPOINT => {
                let v: serde_json::Value = serde_json::from_slice(&raw).expect("check JSON");
                assert_eq!(v.as_array().map(Vec::len), Some(p.items));
            }
            dd::EVENT_ENDPOINT => {
                let v: serde_json::Value = serde_json::from_slice(&raw).expect("event JSON");
                assert!(v.is_object() && v["title"].is_string());
            }
            e => panic!("unknown endpoint {e}"),
        }
    }
}

type SeriesKey = (String, BTreeMap<String, String>);

/// The user series of a `/metrics` body with their values (the body is checked as a whole
/// by `common::check_exposition` first).
fn scraped(text: &str) -> HashMap<SeriesKey, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("checked");
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().expect("checked"),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((n, rest)) => (
                n.to_string(),
                parse_labels(rest.strip_suffix('}').expect("checked")),
            ),
        };
        out.insert((name, labels), value);
    }
    out
}

fn parse_labels(mut s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (k, rest) = s.split_once("=\"").expect("checked");
        let mut v = String::new();
        let mut it = rest.char_indices();
        let end = loop {
            match it.next().expect("checked") {
                (i, '"') => break i,
                (_, '\\') => match it.next().expect("checked").1 {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                (_, c) => v.push(c),
            }
        };
        out.insert(k.to_string(), v);
        s = rest[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&rest[end + 1..]);
    }
    out
}

fn check_remote_write(
    bodies: &[Vec<u8>],
    samples: u64,
    max_samples: usize,
    ts_ms: i64,
    scrape: Option<&HashMap<SeriesKey, f64>>,
) {
    let mut n = 0u64;
    for b in bodies {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(b)
            .expect("snappy block decodes");
        let req = WriteRequest::decode(raw.as_slice()).expect("WriteRequest decodes");
        assert!(!req.timeseries.is_empty() && req.timeseries.len() <= max_samples);
        for ts in &req.timeseries {
            assert!(
                ts.labels.windows(2).all(|w| w[0].name < w[1].name),
                "labels not sorted and unique: {:?}",
                ts.labels
            );
            for l in &ts.labels {
                assert!(
                    common::valid_label_name(&l.name),
                    "bad label name {:?}",
                    l.name
                );
            }
            let name = ts
                .labels
                .iter()
                .find(|l| l.name == "__name__")
                .expect("__name__ label");
            assert!(
                common::valid_metric_name(&name.value),
                "bad name {:?}",
                name.value
            );
            assert_eq!(ts.samples.len(), 1);
            let s = &ts.samples[0];
            assert_eq!(s.timestamp, ts_ms);
            assert!(s.value.is_finite(), "non-finite sample {ts:?}");
            n += 1;
            if let Some(scrape) = scrape {
                let labels: BTreeMap<String, String> = ts
                    .labels
                    .iter()
                    .filter(|l| l.name != "__name__")
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                let key = (name.value.clone(), labels);
                let on_metrics = scrape
                    .get(&key)
                    .unwrap_or_else(|| panic!("{key:?} sent by remote_write but not on /metrics"));
                // Compared as numbers: protobuf leaves out a double equal to 0, so a -0 is
                // decoded as 0.
                assert!(
                    *on_metrics == s.value || (on_metrics.is_nan() && s.value.is_nan()),
                    "{key:?}: remote_write {} but /metrics {on_metrics}",
                    s.value
                );
            }
        }
    }
    assert_eq!(n, samples, "the encoder's sample count");
}

fn kind(k: u8) -> MetricKind {
    MetricKind::ALL[usize::from(k) % MetricKind::ALL.len()]
}

fuzz_target!(|input: Input| {
    let mut cfg = Config::default();
    cfg.aggregate.max_contexts = 64;
    let telemetry = Arc::new(Telemetry::default());
    let aggregator = Arc::new(Aggregator::new(
        &cfg.aggregate,
        cfg.statsd.gauge_mode,
        Arc::clone(&telemetry),
    ));
    let ingest = Ingest {
        aggregator: Arc::clone(&aggregator),
        max_tags: 16,
        tag_styles: Default::default(),
    };
    let shard = aggregator.new_shard();
    cfg.datadog.compression = match input.compression % 3 {
        0 => Compression::Zstd,
        1 => Compression::Gzip,
        _ => Compression::Deflate,
    };
    let datadog = DdEncoder::new(&cfg.datadog, "fuzz-host".into());
    let max_samples = usize::from(input.max_samples).max(1);
    let plain = RwEncoder::new(&BTreeMap::new(), max_samples);
    let external: BTreeMap<String, String> = input
        .external
        .iter()
        .filter(|(k, v)| common::valid_label_name(k) && !k.starts_with("__") && !v.is_empty())
        .take(4)
        .cloned()
        .collect();
    let with_external = RwEncoder::new(&external, max_samples);
    let ttl = Duration::from_secs(300);
    let mut exposition = Exposition::new(ttl, 64);
    let prom = Prometheus::new(ttl, 64, Arc::clone(&telemetry));
    let mut ts = 1_750_000_000u64;
    let mut ops = input.ops.iter().peekable();
    while ops.peek().is_some() {
        for op in ops.by_ref().take(64) {
            let mut s = shard.lock().unwrap();
            match op {
                Op::Lines(text) => {
                    let mut stats = LocalStats::default();
                    ingest.packet(
                        text.as_bytes(),
                        false,
                        &mut s,
                        aggregator.shared().seq(),
                        &mut stats,
                    );
                }
                Op::Direct {
                    kind: k,
                    name,
                    tags,
                    values,
                } => {
                    let k = kind(*k);
                    let mut tags: Vec<&str> = tags.iter().map(String::as_str).take(16).collect();
                    // The OTLP converter refuses non-finite values; sums may still overflow.
                    let finite = values.iter().filter(|(v, _)| v.is_finite());
                    let value = match k {
                        MetricKind::Counter => Value::Count(finite.map(|(v, _)| v).sum()),
                        MetricKind::Gauge | MetricKind::Set => {
                            Value::Gauge(finite.map(|(v, _)| *v).last().unwrap_or(0.0))
                        }
                        _ => {
                            // As the converter turns a histogram point into samples: bins
                            // of (value, count); it drops points with a zero count.
                            let bins: Vec<(f64, u64)> =
                                finite.map(|(v, w)| (*v, u64::from(*w).max(1))).collect();
                            let mut smp = Samples::new();
                            if smp.add_bins(&bins, None, None, None) == 0 {
                                continue;
                            }
                            Value::Samples(smp)
                        }
                    };
                    let seq = aggregator.shared().seq();
                    s.apply_value(k, name, &mut tags, value, seq);
                }
                Op::Flush => break,
            }
        }
        let flush = Arc::new(aggregator.flush(ts));
        let (payloads, _) = datadog.encode(&flush, ts as i64 + 10);
        check_datadog(&payloads, ts as i64);
        exposition.update(&flush);
        prom.consume(&flush);
        let text = prom.render(false);
        common::check_exposition(&text, false);
        let ts_ms = ts as i64 * 1000;
        let enc = plain.encode(&exposition, ts_ms);
        check_remote_write(
            &enc.bodies,
            enc.samples,
            max_samples,
            ts_ms,
            Some(&scraped(&text)),
        );
        let enc = with_external.encode(&exposition, ts_ms);
        check_remote_write(&enc.bodies, enc.samples, max_samples, ts_ms, None);
        ts += 10;
    }
});
