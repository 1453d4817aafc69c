//! Conversion tests: each OTLP shape into tallyd's model, tags, limits, and the OTLP JSON
//! mapping as the opentelemetry-proto serde layer decodes it.

use super::*;
use crate::otlp::config::InitialCumulative;
use crate::otlp::cumulative::{ExpBuckets, ExpData};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, summary_data_point::ValueAtQuantile,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
    ScopeMetrics, Sum, Summary,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

const NOW: Duration = Duration::from_secs(2_000_000_000);

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn converter(cfg: &OtlpConfig) -> Converter {
    let streams = Streams::new(
        cfg.max_streams,
        cfg.stream_expiry,
        cfg.initial_cumulative_value,
        1,
        cfg.max_buckets_per_point,
    );
    Converter::new(Settings::from_config(cfg), streams)
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout"), kv("process.pid", "42")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "meter.a".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn number(start: u64, time: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn sum(name: &str, temporality: i32, monotonic: bool, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

fn run(c: &mut Converter, req: &ExportMetricsServiceRequest) -> (Vec<Output>, Report) {
    let mut out = Vec::new();
    let report = c.convert(req, NOW, &mut out);
    (out, report)
}

fn counts(out: &[Output]) -> Vec<f64> {
    out.iter()
        .map(|o| match o.value {
            Value::Count(v) | Value::Gauge(v) => v,
            Value::Samples(_) => f64::NAN,
        })
        .collect()
}

#[test]
fn sums_gauges_and_tags() {
    let mut c = converter(&OtlpConfig::default());
    let req = request(vec![
        sum(
            "req",
            DELTA,
            true,
            vec![number(0, 1, 3.0, vec![kv("route", "/a")])],
        ),
        sum("queue", DELTA, false, vec![number(0, 1, 5.0, vec![])]),
        sum("conns", CUMULATIVE, false, vec![number(0, 1, 7.0, vec![])]),
        Metric {
            name: "temp".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    value: Some(number_data_point::Value::AsInt(-4)),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        },
    ]);
    let (out, report) = run(&mut c, &req);
    assert_eq!(report.points, 4);
    assert_eq!(report.total_rejected(), 0);
    let kinds: Vec<_> = out.iter().map(|o| (o.name.as_str(), o.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("req", MetricKind::Counter),
            ("queue", MetricKind::Gauge),
            ("conns", MetricKind::Gauge),
            ("temp", MetricKind::Gauge)
        ]
    );
    assert_eq!(counts(&out), vec![3.0, 5.0, 7.0, -4.0]);
    // Point attributes plus the mapped resource attribute; process.pid is not mapped.
    assert_eq!(out[0].tags, vec!["route:/a", "service:checkout"]);

    // A delta up-down counter reports its running total.
    let (out, _) = run(
        &mut c,
        &request(vec![sum(
            "queue",
            DELTA,
            false,
            vec![number(0, 2, -2.0, vec![])],
        )]),
    );
    assert_eq!(counts(&out), vec![3.0]);
}

#[test]
fn cumulative_counter_turns_into_increments() {
    let mut c = converter(&OtlpConfig::default());
    let mut feed = |t: u64, v: f64| {
        let req = request(vec![sum(
            "hits",
            CUMULATIVE,
            true,
            vec![number(10, t, v, vec![])],
        )]);
        counts(&run(&mut c, &req).0)
    };
    assert_eq!(feed(1, 5.0), vec![5.0]);
    assert_eq!(feed(2, 9.0), vec![4.0]);
    assert_eq!(feed(3, 1.0), vec![1.0], "reset counts from zero");
    assert_eq!(feed(2, 100.0), Vec::<f64>::new(), "stale point ignored");
}

#[test]
fn resource_attribute_rules() {
    let mut cfg = OtlpConfig {
        resource_attributes: ResourceAttributes::All,
        scope_name_tag: "scope".into(),
        ..OtlpConfig::default()
    };
    let mut c = converter(&cfg);
    let req = request(vec![sum(
        "x",
        DELTA,
        true,
        vec![number(0, 1, 1.0, vec![kv("service", "override")])],
    )]);
    let (out, _) = run(&mut c, &req);
    // The point attribute wins over the renamed resource attribute.
    assert_eq!(
        out[0].tags,
        vec!["service:override", "scope:meter.a", "process.pid:42"]
    );
    cfg.attribute_tags = vec!["process.pid=pid".into()];
    cfg.resource_attributes = ResourceAttributes::Mapped;
    cfg.scope_name_tag = String::new();
    let mut c = converter(&cfg);
    let (out, _) = run(&mut c, &req);
    assert_eq!(out[0].tags, vec!["service:override", "pid:42"]);
}

#[test]
fn bad_points_are_rejected_with_reasons() {
    let cfg = OtlpConfig {
        max_attributes_per_point: 1,
        max_buckets_per_point: 3,
        ..OtlpConfig::default()
    };
    let mut c = converter(&cfg);
    let no_value = NumberDataPoint::default();
    let hist = |buckets: Vec<u64>, bounds: Vec<f64>, count: u64| HistogramDataPoint {
        count,
        sum: Some(1.0),
        bucket_counts: buckets,
        explicit_bounds: bounds,
        ..Default::default()
    };
    let req = request(vec![
        sum("ok", DELTA, true, vec![number(0, 1, 1.0, vec![])]),
        sum("neg", DELTA, true, vec![number(0, 1, -1.0, vec![])]),
        sum(
            "nan",
            DELTA,
            true,
            vec![number(0, 1, f64::NAN, vec![]), no_value],
        ),
        sum("unspecified", 0, true, vec![number(0, 1, 1.0, vec![])]),
        sum(
            "wide",
            DELTA,
            true,
            vec![number(0, 1, 1.0, vec![kv("a", "1"), kv("b", "2")])],
        ),
        sum("", DELTA, true, vec![number(0, 1, 1.0, vec![])]),
        Metric {
            name: "h".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![
                    hist(vec![1, 1], vec![1.0], 2),
                    hist(vec![1, 1, 1, 1], vec![1.0, 2.0, 3.0], 4),
                    hist(vec![1, 1, 1], vec![1.0, 2.0], 2),
                ],
                aggregation_temporality: DELTA,
            })),
            ..Default::default()
        },
    ]);
    let (out, report) = run(&mut c, &req);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(report.points, 10);
    assert_eq!(report.rejected[Reject::Invalid as usize], 6);
    assert_eq!(report.rejected[Reject::TooManyAttributes as usize], 1);
    assert_eq!(report.rejected[Reject::TooManyBuckets as usize], 1);
    let msg = report.error_message();
    assert!(
        msg.starts_with("8 data points rejected: 6 invalid"),
        "{msg}"
    );
    assert!(msg.contains("otlp.max_attributes_per_point = 1"), "{msg}");
}

#[test]
fn explicit_buckets_are_interpolated_with_exact_moments() {
    let r = explicit_ranges(&[0.0, 5.0, 10.0], &[0, 2, 0, 1], Some(1.0), Some(30.0));
    assert_eq!(r, vec![(0.0, 5.0, 2), (10.0, 30.0, 1)]);
    // Without min/max the open-ended buckets are their finite bound.
    let r = explicit_ranges(&[0.0, 5.0], &[1, 0, 1], None, None);
    assert_eq!(r, vec![(0.0, 0.0, 1), (5.0, 5.0, 1)]);

    let mut c = converter(&OtlpConfig::default());
    let point = HistogramDataPoint {
        start_time_unix_nano: 5,
        time_unix_nano: 6,
        count: 3,
        sum: Some(33.0),
        bucket_counts: vec![0, 2, 0, 1],
        explicit_bounds: vec![0.0, 5.0, 10.0],
        min: Some(1.0),
        max: Some(30.0),
        ..Default::default()
    };
    let req = request(vec![Metric {
        name: "lat".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![point],
            aggregation_temporality: DELTA,
        })),
        ..Default::default()
    }]);
    let (out, _) = run(&mut c, &req);
    let Value::Samples(s) = &out[0].value else {
        panic!("samples expected")
    };
    let mut s = s.clone();
    assert_eq!(out[0].kind, MetricKind::Distribution);
    assert_eq!((s.count(), s.sum(), s.min(), s.max()), (3, 33.0, 1.0, 30.0));
    // The bucket (0, 5] clamped to [min, 5] and interpolated: its two values are spread over
    // [1, 5]; the last one sits in (10, 30].
    assert!(s.is_keyed());
    let (p50, p100) = (s.quantile(0.5), s.quantile(1.0));
    assert!((1.0..=5.0).contains(&p50), "{p50}");
    assert!((10.0..=30.0).contains(&p100), "{p100}");
}

#[test]
fn exponential_buckets_map_to_log_midpoints() {
    let d = ExpData {
        scale: 0,
        count: 4,
        zero: 1,
        pos: ExpBuckets {
            offset: 1,
            counts: vec![2],
        },
        neg: ExpBuckets {
            offset: 0,
            counts: vec![1],
        },
        ..Default::default()
    };
    // Scale 0: base 2; index 1 covers (2, 4]; negative index 0 covers [-2, -1).
    let r = exponential_ranges(&d).expect("finite");
    assert_eq!(r, vec![(0.0, 0.0, 1), (2.0, 4.0, 2), (-1.0, -2.0, 1)]);
    let huge = ExpData {
        scale: 0,
        count: 1,
        pos: ExpBuckets {
            offset: 5000,
            counts: vec![1],
        },
        ..Default::default()
    };
    assert_eq!(exponential_ranges(&huge), None);

    let mut c = converter(&OtlpConfig::default());
    let p = ExponentialHistogramDataPoint {
        count: 3,
        sum: Some(9.0),
        scale: 1,
        zero_count: 0,
        positive: Some(Buckets {
            offset: 2,
            bucket_counts: vec![1, 2],
        }),
        min: Some(2.1),
        max: Some(3.9),
        ..Default::default()
    };
    let req = request(vec![Metric {
        name: "e".into(),
        data: Some(Data::ExponentialHistogram(
            opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                data_points: vec![p],
                aggregation_temporality: DELTA,
            },
        )),
        ..Default::default()
    }]);
    let (out, report) = run(&mut c, &req);
    assert_eq!(report.total_rejected(), 0);
    let Value::Samples(s) = &out[0].value else {
        panic!("samples expected")
    };
    assert_eq!((s.count(), s.sum(), s.min(), s.max()), (3, 9.0, 2.1, 3.9));
}

#[test]
fn summaries_become_counters_and_quantile_gauges() {
    let mut c = converter(&OtlpConfig {
        initial_cumulative_value: InitialCumulative::Keep,
        ..OtlpConfig::default()
    });
    let point = |count: u64, sum: f64| SummaryDataPoint {
        start_time_unix_nano: 1,
        time_unix_nano: count,
        count,
        sum,
        quantile_values: vec![ValueAtQuantile {
            quantile: 0.5,
            value: 2.0,
        }],
        ..Default::default()
    };
    let req = |p| {
        request(vec![Metric {
            name: "rpc".into(),
            data: Some(Data::Summary(Summary {
                data_points: vec![p],
            })),
            ..Default::default()
        }])
    };
    let (out, _) = run(&mut c, &req(point(4, 10.0)));
    let names: Vec<_> = out.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, vec!["rpc.count", "rpc.sum", "rpc.quantile"]);
    assert_eq!(counts(&out), vec![4.0, 10.0, 2.0]);
    assert!(out[2].tags.contains(&"quantile:0.5".to_string()));
    let (out, _) = run(&mut c, &req(point(6, 13.0)));
    assert_eq!(counts(&out), vec![2.0, 3.0, 2.0]);
}

#[test]
fn otlp_json_mapping_decodes() {
    // camelCase keys, int64 as strings, enums as integers, unknown fields ignored.
    let json = r#"{"resourceMetrics":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"web"}}]},
      "scopeMetrics":[{"scope":{"name":"m"},"metrics":[
        {"name":"hits","unit":"1","futureField":true,"sum":{"aggregationTemporality":1,"isMonotonic":true,
          "dataPoints":[{"asInt":"7","timeUnixNano":"1700000000000000000",
            "attributes":[{"key":"code","value":{"intValue":"200"}}]}]}},
        {"name":"temp","gauge":{"dataPoints":[{"asDouble":21.5}]}},
        {"name":"lat","histogram":{"aggregationTemporality":1,"dataPoints":[
          {"count":"3","sum":6,"bucketCounts":["1","2"],"explicitBounds":[1.5],"min":1,"max":2.5}]}}
      ]}]}]}"#;
    let req: ExportMetricsServiceRequest = serde_json::from_str(json).expect("OTLP JSON decodes");
    let mut c = converter(&OtlpConfig::default());
    let (out, report) = run(&mut c, &req);
    assert_eq!(report.total_rejected(), 0, "{}", report.error_message());
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].tags, vec!["code:200", "service:web"]);
    assert_eq!(counts(&out[..2]), vec![7.0, 21.5]);
    let Value::Samples(s) = &out[2].value else {
        panic!("samples expected")
    };
    assert_eq!((s.count(), s.sum(), s.min(), s.max()), (3, 6.0, 1.0, 2.5));
}
