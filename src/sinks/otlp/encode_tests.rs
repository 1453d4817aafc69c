//! The OTLP mapping, splitting and answer classification.

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};

use super::config::{HistogramMapping, OtlpExportConfig, Temporality};
use super::deliver::{grpc_verdict, http_retryable, retry_info, GrpcVerdict};
use super::encode::{exp_index, Encoder, CUMULATIVE, DELTA};
use super::received::Received;
use super::sink::window_span;
use crate::aggregate::SeriesValue;
use crate::model::MetricKind;
use crate::queue::FailureClass;
use crate::sinks::testutil::{flush, summary};

const S: u64 = 1_000_000_000;

fn cfg() -> OtlpExportConfig {
    OtlpExportConfig {
        enabled: true,
        service_name: "checkout".into(),
        ..OtlpExportConfig::default()
    }
}

fn attr(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<String> {
    kvs.iter()
        .find(|k| k.key == key)
        .and_then(|k| match k.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

#[test]
fn counters_gauges_sets_and_resource() {
    let f = flush(
        100,
        vec![
            (
                MetricKind::Counter,
                "req",
                &["env:prod", "canary"],
                SeriesValue::Counter(5.0),
            ),
            (MetricKind::Gauge, "temp", &[], SeriesValue::Gauge(-3.5)),
            (MetricKind::Set, "users", &[], SeriesValue::Set(7)),
        ],
    );
    let mut e = Encoder::new(&cfg(), "web-1");
    let out = e.encode(&f, 100 * S, 110 * S);
    assert_eq!(out.points, 3);
    assert_eq!(out.requests.len(), 1);
    let rm = &out.requests[0].resource_metrics[0];
    let res = &rm.resource.as_ref().expect("resource").attributes;
    assert_eq!(attr(res, "host.name").as_deref(), Some("web-1"));
    assert_eq!(attr(res, "service.name").as_deref(), Some("checkout"));
    let sm = &rm.scope_metrics[0];
    assert_eq!(sm.scope.as_ref().expect("scope").name, "tallyd");
    let by = |n: &str| sm.metrics.iter().find(|m| m.name == n).expect(n);
    let Some(Data::Sum(sum)) = &by("req").data else {
        panic!("sum")
    };
    assert_eq!(sum.aggregation_temporality, DELTA);
    assert!(sum.is_monotonic);
    let p = &sum.data_points[0];
    assert_eq!(
        (p.start_time_unix_nano, p.time_unix_nano),
        (100 * S, 110 * S)
    );
    assert_eq!(p.value, Some(number_data_point::Value::AsDouble(5.0)));
    assert_eq!(attr(&p.attributes, "env").as_deref(), Some("prod"));
    assert_eq!(attr(&p.attributes, "canary").as_deref(), Some(""));
    let Some(Data::Gauge(g)) = &by("temp").data else {
        panic!("gauge")
    };
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsDouble(-3.5))
    );
    let Some(Data::Gauge(g)) = &by("users").data else {
        panic!("set gauge")
    };
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsInt(7))
    );
}

#[test]
fn cumulative_counters_keep_their_start_and_add_up() {
    let c = OtlpExportConfig {
        counter_temporality: Temporality::Cumulative,
        ..cfg()
    };
    let mut e = Encoder::new(&c, "h");
    let w = |v| {
        flush(
            0,
            vec![(MetricKind::Counter, "c", &[], SeriesValue::Counter(v))],
        )
    };
    let point = |out: &super::encode::Encoded| {
        let m = &out.requests[0].resource_metrics[0].scope_metrics[0].metrics[0];
        let Some(Data::Sum(s)) = &m.data else {
            panic!("sum")
        };
        assert_eq!(s.aggregation_temporality, CUMULATIVE);
        let p = &s.data_points[0];
        (p.start_time_unix_nano, p.value)
    };
    let a = e.encode(&w(2.0), 10 * S, 20 * S);
    let b = e.encode(&w(3.0), 20 * S, 30 * S);
    assert_eq!(
        point(&a),
        (10 * S, Some(number_data_point::Value::AsDouble(2.0)))
    );
    assert_eq!(
        point(&b),
        (10 * S, Some(number_data_point::Value::AsDouble(5.0)))
    );
    assert_eq!(e.streams(), 1);
}

#[test]
fn explicit_histogram_is_exact_in_count_sum_min_max() {
    let f = flush(
        0,
        vec![(
            MetricKind::Timer,
            "lat",
            &[],
            summary(&[1.0, 5.0, 7.0, 30.0, 20000.0]),
        )],
    );
    let mut e = Encoder::new(&cfg(), "h");
    let out = e.encode(&f, 0, 10 * S);
    let m = &out.requests[0].resource_metrics[0].scope_metrics[0].metrics[0];
    assert_eq!(m.unit, "ms");
    let Some(Data::Histogram(h)) = &m.data else {
        panic!("histogram")
    };
    let p = &h.data_points[0];
    assert_eq!(p.count, 5);
    assert_eq!(p.sum, Some(20043.0));
    assert_eq!((p.min, p.max), (Some(1.0), Some(20000.0)));
    assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
    // (0,5]: 1 and 5; (5,10]: 7; (25,50]: 30; (10000, +inf): 20000.
    assert_eq!(p.bucket_counts[1], 2);
    assert_eq!(p.bucket_counts[2], 1);
    assert_eq!(p.bucket_counts[4], 1);
    assert_eq!(*p.bucket_counts.last().expect("overflow"), 1);
    assert_eq!(p.bucket_counts.iter().sum::<u64>(), 5);
}

#[test]
fn exponential_histogram_fits_its_size_and_keeps_values_in_their_bucket() {
    let values: Vec<f64> = (1..=1000)
        .map(|i| i as f64 * 0.37)
        .chain([0.0, -2.0])
        .collect();
    let f = flush(
        0,
        vec![(MetricKind::Distribution, "d", &[], summary(&values))],
    );
    let c = OtlpExportConfig {
        histogram: HistogramMapping::Exponential,
        exponential_max_size: 20,
        ..cfg()
    };
    let out = Encoder::new(&c, "h").encode(&f, 0, S);
    let m = &out.requests[0].resource_metrics[0].scope_metrics[0].metrics[0];
    let Some(Data::ExponentialHistogram(h)) = &m.data else {
        panic!("exp")
    };
    let p = &h.data_points[0];
    assert_eq!(p.count, 1002);
    assert_eq!(p.zero_count, 1);
    let pos = p.positive.as_ref().expect("positive");
    assert!(pos.bucket_counts.len() <= 20, "{}", pos.bucket_counts.len());
    assert_eq!(pos.bucket_counts.iter().sum::<u64>(), 1000);
    assert_eq!(
        p.negative.as_ref().expect("negative").bucket_counts,
        vec![1]
    );
    let want: f64 = values.iter().sum();
    assert!((p.sum.expect("sum") - want).abs() < 1e-6);
    assert_eq!((p.min, p.max), (Some(-2.0), Some(370.0)));
    // 0.37 and 370 land in the first and last bucket at the chosen scale.
    let base = 2f64.powf(2f64.powi(-p.scale));
    let lo = pos.offset as i64;
    assert!(base.powi(lo as i32) < 0.37 && 0.37 <= base.powi(lo as i32 + 1));
    let hi = lo + pos.bucket_counts.len() as i64 - 1;
    assert!(base.powi(hi as i32) < 370.0 && 370.0 <= base.powi(hi as i32 + 1) * (1.0 + 1e-12));
}

#[test]
fn exponential_index_boundaries() {
    // Scale 0: bucket i is (2^i, 2^(i+1)].
    assert_eq!(exp_index(1.0, 0), -1);
    assert_eq!(exp_index(1.5, 0), 0);
    assert_eq!(exp_index(2.0, 0), 0);
    assert_eq!(exp_index(4.0, 0), 1);
    assert_eq!(exp_index(4.0, 1), 3);
}

#[test]
fn windows_split_at_max_points() {
    let series: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    let f = flush(
        0,
        series
            .iter()
            .map(|n| {
                (
                    MetricKind::Gauge,
                    n.as_str(),
                    &[][..],
                    SeriesValue::Gauge(1.0),
                )
            })
            .collect(),
    );
    let c = OtlpExportConfig {
        max_points_per_request: 10,
        ..cfg()
    };
    let out = Encoder::new(&c, "h").encode(&f, 0, S);
    let sizes: Vec<usize> = out
        .requests
        .iter()
        .map(|r| r.resource_metrics[0].scope_metrics[0].metrics.len())
        .collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    assert_eq!(out.points, 25);
}

/// The receiver's default renames, plus a scope tag.
fn received() -> Received {
    let renames: Vec<(String, String)> = [
        ("service.name", "service"),
        ("deployment.environment.name", "env"),
        ("deployment.environment", "env"),
        ("host.name", "host"),
    ]
    .iter()
    .map(|(a, t)| (a.to_string(), t.to_string()))
    .collect();
    Received::new(&renames, "otel.scope")
}

#[test]
fn received_resources_and_scopes_are_put_back_and_grouped() {
    let f = flush(
        0,
        vec![
            // Two resources (cart on db-7, pay on db-8), cart with two scopes.
            (
                MetricKind::Counter,
                "a",
                &["service:cart", "host:db-7", "otel.scope:io.x", "route:/a"],
                SeriesValue::Counter(1.0),
            ),
            (
                MetricKind::Gauge,
                "b",
                &["host:db-7", "service:cart", "otel.scope:io.y"],
                SeriesValue::Gauge(2.0),
            ),
            (
                MetricKind::Gauge,
                "c",
                &["service:cart", "host:db-7", "otel.scope:io.x"],
                SeriesValue::Gauge(3.0),
            ),
            (
                MetricKind::Gauge,
                "d",
                &["service:pay", "env:prod", "host:db-8"],
                SeriesValue::Gauge(4.0),
            ),
            // Not from OTLP: tallyd's resource and scope.
            (
                MetricKind::Gauge,
                "statsd",
                &["route:/b"],
                SeriesValue::Gauge(5.0),
            ),
            // A bare tag with a renamed key stays a point attribute.
            (
                MetricKind::Gauge,
                "bare",
                &["service"],
                SeriesValue::Gauge(6.0),
            ),
        ],
    );
    let mut e = Encoder::new(&cfg(), "web-1").with_received(received());
    let out = e.encode(&f, 0, S);
    assert_eq!((out.points, out.requests.len()), (6, 1));
    let rms = &out.requests[0].resource_metrics;
    assert_eq!(rms.len(), 3, "cart@db-7, pay@db-8, tallyd: {rms:?}");
    let res = |i: usize| &rms[i].resource.as_ref().expect("resource").attributes;
    let scopes = |i: usize| -> Vec<(String, String, Vec<String>)> {
        rms[i]
            .scope_metrics
            .iter()
            .map(|sm| {
                let sc = sm.scope.clone().expect("scope");
                let names = sm.metrics.iter().map(|m| m.name.clone()).collect();
                (sc.name, sc.version, names)
            })
            .collect()
    };
    // The received host.name and service.name win over tallyd's; tallyd's fill in the rest.
    assert_eq!(attr(res(0), "host.name").as_deref(), Some("db-7"));
    assert_eq!(attr(res(0), "service.name").as_deref(), Some("cart"));
    assert_eq!(res(0).len(), 2, "{:?}", res(0));
    let s = |n: &str, v: &str, m: &[&str]| {
        (
            n.to_string(),
            v.to_string(),
            m.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        scopes(0),
        vec![s("io.x", "", &["a", "c"]), s("io.y", "", &["b"])]
    );
    assert_eq!(attr(res(1), "host.name").as_deref(), Some("db-8"));
    assert_eq!(attr(res(1), "service.name").as_deref(), Some("pay"));
    // The first rename listed for `env` names the attribute.
    assert_eq!(
        attr(res(1), "deployment.environment.name").as_deref(),
        Some("prod")
    );
    assert_eq!(attr(res(1), "deployment.environment"), None);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(scopes(1), vec![s("tallyd", version, &["d"])]);
    assert_eq!(attr(res(2), "host.name").as_deref(), Some("web-1"));
    assert_eq!(attr(res(2), "service.name").as_deref(), Some("checkout"));
    assert_eq!(scopes(2), vec![s("tallyd", version, &["statsd", "bare"])]);
    // Moved tags are not point attributes; the others are.
    let point = |rm: usize, sm: usize, m: usize| match &rms[rm].scope_metrics[sm].metrics[m].data {
        Some(Data::Sum(x)) => x.data_points[0].attributes.clone(),
        Some(Data::Gauge(x)) => x.data_points[0].attributes.clone(),
        other => panic!("{other:?}"),
    };
    let keys = |a: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>| {
        a.into_iter().map(|k| k.key).collect::<Vec<_>>()
    };
    assert_eq!(keys(point(0, 0, 0)), ["route"]);
    assert!(keys(point(0, 1, 0)).is_empty());
    assert!(keys(point(1, 0, 0)).is_empty());
    assert_eq!(keys(point(2, 0, 0)), ["route"]);
    assert_eq!(keys(point(2, 0, 1)), ["service"]);
}

#[test]
fn grouped_windows_still_split_at_max_points() {
    let tags = [["service:a"], ["service:b"]];
    let names: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    let f = flush(
        0,
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    MetricKind::Gauge,
                    n.as_str(),
                    &tags[i % 2][..],
                    SeriesValue::Gauge(1.0),
                )
            })
            .collect(),
    );
    let c = OtlpExportConfig {
        max_points_per_request: 3,
        ..cfg()
    };
    let out = Encoder::new(&c, "h")
        .with_received(received())
        .encode(&f, 0, S);
    let shape: Vec<Vec<usize>> = out
        .requests
        .iter()
        .map(|r| {
            r.resource_metrics
                .iter()
                .map(|rm| rm.scope_metrics.iter().map(|sm| sm.metrics.len()).sum())
                .collect()
        })
        .collect();
    assert_eq!(shape, vec![vec![2, 1], vec![1, 1]]);
}

#[test]
fn without_the_receivers_renames_tags_stay_on_the_points() {
    let f = flush(
        0,
        vec![(
            MetricKind::Gauge,
            "g",
            &["service:cart", "host:db-7"],
            SeriesValue::Gauge(1.0),
        )],
    );
    let out = Encoder::new(&cfg(), "web-1").encode(&f, 0, S);
    let rm = &out.requests[0].resource_metrics[0];
    let res = &rm.resource.as_ref().expect("resource").attributes;
    assert_eq!(attr(res, "host.name").as_deref(), Some("web-1"));
    let Some(Data::Gauge(g)) = &rm.scope_metrics[0].metrics[0].data else {
        panic!("gauge")
    };
    assert_eq!(
        attr(&g.data_points[0].attributes, "service").as_deref(),
        Some("cart")
    );
}

#[test]
fn window_end_is_the_boundary_or_the_final_hand_off() {
    let iv = std::time::Duration::from_millis(200);
    assert_eq!(window_span(iv, 1_000_003, None), (999_800, 1_000_000));
    assert_eq!(
        window_span(iv, 1_000_201, Some(1_000_000)),
        (1_000_000, 1_000_200)
    );
    // The final flush mid-window ends at the hand-off.
    assert_eq!(
        window_span(iv, 1_000_290, Some(1_000_200)),
        (1_000_200, 1_000_290)
    );
    // A dropped window leaves a gap rather than a window twice as long.
    assert_eq!(
        window_span(iv, 1_001_005, Some(1_000_200)),
        (1_000_800, 1_001_000)
    );
    // A clock that stepped back still moves forward.
    assert_eq!(
        window_span(iv, 999_000, Some(1_000_290)),
        (1_000_290, 1_000_291)
    );
}

#[test]
fn retry_classification_follows_the_spec() {
    for s in [429, 502, 503, 504] {
        assert!(http_retryable(s), "{s}");
    }
    for s in [400, 401, 403, 404, 413, 500, 501] {
        assert!(!http_retryable(s), "{s}");
    }
    assert_eq!(grpc_verdict(0, false), GrpcVerdict::Ok);
    assert_eq!(
        grpc_verdict(14, false),
        GrpcVerdict::Retry(FailureClass::Server5xx)
    );
    assert_eq!(
        grpc_verdict(4, false),
        GrpcVerdict::Retry(FailureClass::Timeout)
    );
    assert_eq!(grpc_verdict(8, false), GrpcVerdict::Reject);
    assert!(matches!(grpc_verdict(8, true), GrpcVerdict::Retry(_)));
    for code in [3, 7, 12, 13, 16] {
        assert_eq!(grpc_verdict(code, false), GrpcVerdict::Reject, "{code}");
    }
}

#[test]
fn retry_info_is_read_from_status_details() {
    use prost::Message as _;
    // google.rpc.Status{code 14, details [Any{RetryInfo{retry_delay 3.5 s}}]}, built by hand.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Dur {
        #[prost(int64, tag = "1")]
        seconds: i64,
        #[prost(int32, tag = "2")]
        nanos: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Info {
        #[prost(message, optional, tag = "1")]
        d: Option<Dur>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Any {
        #[prost(string, tag = "1")]
        t: String,
        #[prost(bytes = "vec", tag = "2")]
        v: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Status {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(message, repeated, tag = "3")]
        details: Vec<Any>,
    }
    let info = Info {
        d: Some(Dur {
            seconds: 3,
            nanos: 500_000_000,
        }),
    };
    let st = Status {
        code: 14,
        details: vec![Any {
            t: "type.googleapis.com/google.rpc.RetryInfo".into(),
            v: info.encode_to_vec(),
        }],
    };
    assert_eq!(
        retry_info(&st.encode_to_vec()),
        Some(std::time::Duration::from_millis(3500))
    );
    assert_eq!(
        retry_info(
            &Status {
                code: 14,
                details: vec![]
            }
            .encode_to_vec()
        ),
        None
    );
}

#[test]
fn config_errors_name_the_key() {
    let bad = |f: &dyn Fn(&mut OtlpExportConfig), key: &str| {
        let mut c = OtlpExportConfig::default();
        f(&mut c);
        let e = c.validate().expect_err(key);
        assert!(e.key.starts_with(key), "{e} should name {key}");
    };
    bad(
        &|c| c.endpoint = "collector:4318".into(),
        "otlp_export.endpoint",
    );
    bad(
        &|c| c.max_points_per_request = 0,
        "otlp_export.max_points_per_request",
    );
    bad(
        &|c| c.timeout = std::time::Duration::ZERO,
        "otlp_export.timeout",
    );
    bad(
        &|c| c.histogram_bounds = vec![5.0, 1.0],
        "otlp_export.histogram_bounds",
    );
    bad(
        &|c| c.exponential_max_size = 1,
        "otlp_export.exponential_max_size",
    );
    bad(
        &|c| {
            c.headers.insert("Content-Type".into(), "x".into());
        },
        "otlp_export.headers",
    );
    bad(
        &|c| {
            c.resource_attributes.insert("k".into(), String::new());
        },
        "otlp_export.resource_attributes",
    );
    assert!(OtlpExportConfig::default().validate().is_ok());
    let mut c = OtlpExportConfig::default();
    c.headers.insert("api-key".into(), "s3cr3t".into());
    assert_eq!(c.redacted().headers["api-key"], crate::base::redact::MARKER);
}
