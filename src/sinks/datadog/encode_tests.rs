//! Tests of `sinks/datadog/encode.rs`.

use super::*;
use crate::aggregate::{Samples, Series};
use crate::model::Context;
use std::sync::Arc;
use std::time::Duration;

fn flush(series: Vec<Series>) -> Flush {
    Flush {
        timestamp: 1_700_000_000,
        interval: Duration::from_secs(10),
        percentiles: Arc::from(vec![0.5, 0.95, 0.99]),
        series,
        events: vec![],
        service_checks: vec![],
        timestamped: vec![],
        recycle: Default::default(),
    }
}

fn ser(kind: MetricKind, name: &str, tags: &[&str], value: SeriesValue) -> Series {
    Series::new(Arc::new(Context::from_unsorted(kind, name, tags)), value)
}

fn samples(values: &[f64]) -> SeriesValue {
    let mut s = Samples::new();
    for v in values {
        s.add(*v, 1);
    }
    s.summarize(&[0.5, 0.95, 0.99]);
    SeriesValue::Samples(Box::new(s))
}

fn encoder(cfg: DatadogConfig) -> Encoder {
    Encoder::new(&cfg, "box".into())
}

#[test]
fn agent_semantics_per_type() {
    let mut cfg = DatadogConfig {
        env: "prod".into(),
        tags: vec!["team:a".into()],
        ..Default::default()
    };
    cfg.histogram_percentiles = vec![0.95, 0.75];
    let e = encoder(cfg);
    let f = flush(vec![
        ser(
            MetricKind::Counter,
            "hits",
            &["a:1", "host:web-9"],
            SeriesValue::Counter(50.0),
        ),
        ser(MetricKind::Gauge, "temp", &[], SeriesValue::Gauge(-3.5)),
        ser(MetricKind::Set, "users", &[], SeriesValue::Set(7)),
        ser(
            MetricKind::Timer,
            "lat",
            &[],
            samples(&[1.0, 2.0, 3.0, 4.0]),
        ),
    ]);
    let s = e.series(&f, f.series.iter());
    let get = |m: &str| {
        s.iter()
            .find(|x| x.metric == m)
            .unwrap_or_else(|| panic!("{m}"))
    };
    let hits = get("hits");
    assert_eq!(
        (hits.r#type, hits.interval, hits.points[0].value),
        (MetricType::Rate as i32, 10, 5.0)
    );
    assert_eq!(hits.points[0].timestamp, 1_700_000_000);
    assert_eq!(hits.resources[0].name, "web-9");
    assert_eq!(hits.tags, vec!["a:1", "team:a", "env:prod"]);
    assert_eq!(
        (get("temp").r#type, get("temp").points[0].value),
        (MetricType::Gauge as i32, -3.5)
    );
    assert_eq!(get("temp").resources[0].name, "box");
    assert_eq!(get("temp").interval, 10, "gauges carry the interval too");
    assert_eq!(get("users").points[0].value, 7.0);
    assert_eq!(get("lat.max").points[0].value, 4.0);
    assert_eq!(get("lat.median").points[0].value, 2.0);
    assert_eq!(get("lat.avg").points[0].value, 2.5);
    assert_eq!(
        (get("lat.count").r#type, get("lat.count").points[0].value),
        (MetricType::Rate as i32, 0.4)
    );
    assert_eq!(get("lat.95percentile").points[0].value, 4.0);
    assert_eq!(get("lat.75percentile").points[0].value, 3.0);
    assert!(s
        .iter()
        .all(|x| x.metric != "lat.min" && x.metric != "lat.sum"));
    assert_eq!(s.len(), 3 + 6);
}

#[test]
fn series_split_within_limits() {
    let e = encoder(DatadogConfig {
        compression: Compression::Gzip,
        ..Default::default()
    });
    let series: Vec<Series> = (0..25_000)
        .map(|i| {
            ser(
                MetricKind::Gauge,
                &format!("m.{i}"),
                &[&format!("i:{i}")],
                SeriesValue::Gauge(i as f64),
            )
        })
        .collect();
    let (payloads, stats) = e.encode(&flush(series), 0);
    assert_eq!(stats, EncodeStats::default());
    assert!(payloads.len() >= 3);
    assert_eq!(payloads.iter().map(|p| p.items).sum::<usize>(), 25_000);
    for p in &payloads {
        assert!(p.items <= 10_000 && p.body.len() <= SERIES_LIMITS.max_compressed);
    }
}

#[test]
fn incompressible_batches_are_halved() {
    let e = encoder(DatadogConfig::default());
    let mut seed = 1u64;
    let mut noise = || {
        (0..200)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'a' + (seed >> 59) as u8)
            })
            .collect::<String>()
    };
    let series: Vec<Series> = (0..4000)
        .map(|_| {
            ser(
                MetricKind::Gauge,
                &noise(),
                &[&noise()],
                SeriesValue::Gauge(1.0),
            )
        })
        .collect();
    let (payloads, _) = e.encode(&flush(series), 0);
    assert!(payloads.len() >= 2);
    assert_eq!(payloads.iter().map(|p| p.items).sum::<usize>(), 4000);
    assert!(payloads
        .iter()
        .all(|p| p.body.len() <= SERIES_LIMITS.max_compressed));
}

#[test]
fn a_sketch_whose_sum_is_not_finite_is_not_sent() {
    // Found by fuzz/fuzz_targets/encoders.rs: OTLP histogram buckets whose weighted values add
    // up past f64::MAX gave a sketch with `sum: -inf`, sent to the intake as it was.
    let mut huge = Samples::new();
    huge.add_bins(&[(-1e308, 5)], None, None, None);
    assert!(!huge.sum().is_finite());
    let mut fine = Samples::new();
    fine.add_bins(&[(2.0, 5)], None, None, None);
    let f = flush(vec![
        ser(
            MetricKind::Distribution,
            "huge",
            &[],
            SeriesValue::Samples(Box::new(huge)),
        ),
        ser(
            MetricKind::Distribution,
            "fine",
            &[],
            SeriesValue::Samples(Box::new(fine)),
        ),
    ]);
    let (payloads, _) = encoder(DatadogConfig::default()).encode(&f, 0);
    let sketches: Vec<&Payload> = payloads
        .iter()
        .filter(|p| p.endpoint == SKETCH_ENDPOINT)
        .collect();
    assert_eq!(sketches.len(), 1);
    assert_eq!(sketches[0].items, 1);
}

#[test]
fn a_device_tag_becomes_the_device_resource() {
    let e = encoder(DatadogConfig::default());
    let f = flush(vec![ser(
        MetricKind::Gauge,
        "disk.used",
        &["device:sda1", "fs:ext4"],
        SeriesValue::Gauge(1.0),
    )]);
    let s = e.series(&f, f.series.iter());
    let res: Vec<(&str, &str)> = s[0]
        .resources
        .iter()
        .map(|r| (r.r#type.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(res[1], ("device", "sda1"));
    assert_eq!(res[0].0, "host");
    assert_eq!(s[0].tags, vec!["fs:ext4"]);
}
