//! `/metrics` in both formats (Prometheus text 0.0.4 and OpenMetrics 1.0) through
//! `promtool check metrics` (Debian package `prometheus`; CI and tests/run.sh install it), with
//! a configuration that produces every kind of series: StatsD counters, gauges, timers,
//! histograms, distributions and sets, label values that need escaping, OTLP histograms,
//! exponential histograms and summaries, GPS series, alert state, and the self-metrics of every
//! subsystem (Datadog and remote write forwarders included). Then a real Prometheus scrapes the
//! same endpoint: it asks for OpenMetrics first and parses it with its strict parser.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::intake::Intake;
use common::{closed_port, http_request, start_external, value, Tallyd};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, summary_data_point::ValueAtQuantile,
    ExponentialHistogram, ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric,
    ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint,
};
use prost::Message;
use serde_json::Value;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

/// `PROMTOOL_BIN`, else `promtool` on PATH or in /usr/bin.
fn promtool() -> String {
    common::system_tool("PROMTOOL_BIN", &["promtool"], "prometheus")
}

/// `promtool check metrics` on `text`: its exit code (0 clean, 3 lint findings, 1 not
/// parseable) and its findings, one per line.
fn promtool_check(text: &str) -> (i32, Vec<String>) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = child.stdin.take().expect("stdin");
    let body = text.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
    let out = child.wait_with_output().expect("promtool output");
    writer.join().expect("writer").expect("write to promtool");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .lines()
    .map(str::to_string)
    .filter(|l| !l.trim().is_empty())
    .collect();
    (out.status.code().unwrap_or(-1), findings)
}

fn otlp_request() -> ExportMetricsServiceRequest {
    let metric = |name: &str, data: Data| Metric {
        name: name.into(),
        data: Some(data),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(
                        "otlp.latency",
                        Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                count: 4,
                                sum: Some(40.0),
                                bucket_counts: vec![1, 2, 1, 0],
                                explicit_bounds: vec![5.0, 10.0, 25.0],
                                min: Some(1.0),
                                max: Some(20.0),
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        }),
                    ),
                    metric(
                        "otlp.size",
                        Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                count: 3,
                                sum: Some(7.0),
                                scale: 0,
                                positive: Some(Buckets {
                                    offset: 0,
                                    bucket_counts: vec![1, 1, 1],
                                }),
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        }),
                    ),
                    metric(
                        "otlp.rpc",
                        Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                count: 2,
                                sum: 3.0,
                                quantile_values: vec![ValueAtQuantile {
                                    quantile: 0.5,
                                    value: 1.5,
                                }],
                                ..Default::default()
                            }],
                        }),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn nmea(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n").into_bytes()
}

/// Every kind of series tallyd exposes, with Datadog delivering to a stand-in intake and
/// remote write failing against a closed port (so forwarder failure series exist too).
fn start_everything(intake: &Intake, rw_port: u16) -> Tallyd {
    let t = Tallyd::start(&format!(
        r#"
[datadog]
api_key = "{KEY}"
url = "{}"
hostname = "test-host"
[remote_write]
url = "http://127.0.0.1:{rw_port}/api/v1/write"
[queue]
directory = "@DIR@/queue"
backoff_initial = "50ms"
backoff_max = "200ms"
[alerts]
default_rules = true
[[alerts.rules]]
name = "Hot"
metric = "room.temp"
warn = 50.0
"#,
        intake.url()
    ));
    t.send_udp(
        "c.hits:3|c|#env:prod\n\
         room.temp:80|g\n\
         t.lat:10|ms\nt.lat:20|ms|#db:main\n\
         h.size:5|h\n\
         d.dist:1:2:3|d\n\
         s.users:al|s\ns.users:bo|s\n\
         odd.name-with/chars:1|c\n\
         esc:1|c|#path:C:\\dir,quote:a\"b\n\
         not a metric\n",
    );
    let (status, _, body) = common::http_bytes(
        t.otlp_http.expect("otlp http"),
        "POST",
        "/v1/metrics",
        &[("Content-Type", "application/x-protobuf")],
        &otlp_request().encode_to_vec(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut device = std::net::TcpStream::connect(t.gps.expect("gps")).expect("gps connect");
    device.write_all(&nmea("PGID,boat-7")).expect("id");
    device
        .write_all(&nmea(
            "GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E",
        ))
        .expect("fix");
    t
}

/// The text has a sample of every kind sent above (so a lint pass is not a pass over an empty
/// or partial scrape).
fn has_everything(m: &str) -> bool {
    let present = |s: &str| value(m, s).is_some();
    present("c_hits_total{env=\"prod\"}")
        && present("room_temp")
        && present("t_lat_count")
        && present("t_lat_count{db=\"main\"}")
        && present("h_size_sum")
        && present("d_dist{quantile=\"0.5\"}")
        && value(m, "s_users") == Some(2.0)
        && m.lines().any(|l| l.starts_with("odd_name_with"))
        && present("esc_total{path=\"C:\\\\dir\",quote=\"a\\\"b\"}")
        && present("otlp_latency_count")
        && present("otlp_size_count")
        && m.lines().any(|l| l.starts_with("otlp_rpc"))
        && m.lines()
            .any(|l| l.starts_with("gps_tcp_locations_valid_total"))
        && m.lines()
            .any(|l| l.starts_with("live_points_received_total"))
        && m.lines()
            .any(|l| l.starts_with("tallyd_alert_state{alert=\"Hot\""))
        && m.lines().any(|l| {
            l.starts_with("tallyd_forwarder_payloads_sent_total{queue=\"datadog\"}")
                && !l.ends_with(" 0")
        })
        && m.lines().any(|l| {
            l.starts_with("tallyd_forwarder_failures_total{queue=\"remote_write\"")
                && !l.ends_with(" 0")
        })
        && present("tallyd_statsd_parse_errors_total{reason=\"invalid_format\"}")
        && m.contains("tallyd_build_info{")
}

fn scrape(t: &Tallyd, accept: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    let (status, body) = http_request(t.http, "GET", "/metrics", &headers, "");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn both_formats_pass_promtool_and_a_real_prometheus_scrape() {
    let intake = Intake::start(KEY);
    let rw = closed_port();
    let t = start_everything(&intake, rw.port);
    t.wait_metrics(has_everything, "every kind of series");

    // Prometheus text format: parseable, and no finding besides the names renamed elsewhere.
    let plain = scrape(&t, None);
    assert!(has_everything(&plain));
    let (code, findings) = promtool_check(&plain);
    assert!(
        code == 0 || code == 3,
        "promtool exit {code}: {findings:#?}"
    );
    let unexpected: Vec<&String> = findings.iter().collect();
    assert!(
        unexpected.is_empty(),
        "promtool on the text format: {unexpected:#?}\n{plain}"
    );

    // OpenMetrics: promtool reads it with the text-format parser, which takes a counter's
    // `<name>_total` samples for a family of their own and then says that family has no HELP.
    // That finding is allowed exactly when the OpenMetrics family does have its TYPE counter
    // and HELP lines; anything else (and any parse error) fails.
    let om = scrape(&t, Some(OPENMETRICS));
    assert!(om.ends_with("# EOF\n"), "{om}");
    let (code, findings) = promtool_check(&om);
    assert!(
        code == 0 || code == 3,
        "promtool exit {code}: {findings:#?}"
    );
    let unexpected: Vec<&String> = findings
        .iter()
        .filter(|f| {
            let family = f
                .strip_suffix(" no help text")
                .and_then(|n| n.strip_suffix("_total"));
            !family.is_some_and(|fam| {
                om.contains(&format!("\n# TYPE {fam} counter\n"))
                    && (om.starts_with(&format!("# HELP {fam} "))
                        || om.contains(&format!("\n# HELP {fam} ")))
            })
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "promtool on OpenMetrics: {unexpected:#?}\n{om}"
    );

    // A real Prometheus scrapes the same endpoint; it prefers OpenMetrics and parses it
    // strictly. The target is up, no error, and the samples are there.
    let bin = prometheus_bin();
    let target = t.http;
    let prom = start_external("prometheus", &bin, 30, |dir, addr| {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1h\n\
                 scrape_configs:\n  - job_name: tallyd\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write config");
        vec![
            format!("--web.listen-address={addr}"),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--config.file={}", cfg.display()),
        ]
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = http_request(prom.addr, "GET", "/api/v1/targets", &[], "");
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("targets json");
        let target = v["data"]["activeTargets"][0].clone();
        if target["health"] == "up" {
            assert_eq!(target["lastError"], "", "{target}");
            break;
        }
        assert!(
            target["health"] != "down",
            "Prometheus could not scrape tallyd: {target}"
        );
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape tallyd: {target}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, body) = http_request(
        prom.addr,
        "GET",
        "/api/v1/query?query=c_hits_total",
        &[],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("query json");
    assert_eq!(v["data"]["result"][0]["value"][1], "3", "{body}");
}

/// `PROMETHEUS_BIN`, else `/usr/bin/prometheus` (Debian) or `prometheus` on PATH.
fn prometheus_bin() -> String {
    common::system_tool("PROMETHEUS_BIN", &["prometheus"], "prometheus")
}
