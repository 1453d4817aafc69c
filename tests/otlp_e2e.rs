//! End-to-end OTLP: the real binary, the OpenTelemetry Rust SDK's own OTLP exporters (HTTP
//! protobuf and gRPC/tonic, gzip on), hand-made bad requests, and scrapes of /metrics.
//!
//! The SDK runs with a manual reader: each test records, collects and exports explicitly, so
//! what reaches tallyd is known exactly and no periodic timer is involved.

mod common;

use std::io::Write;
use std::sync::{Arc, Weak};
use std::time::Duration;

use common::{http_bytes, value, Tallyd};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    Compression, MetricExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics as SdkResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::Resource;
use prost::Message;

/// Lets the test keep a handle on the reader the provider owns.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut SdkResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// An SDK pipeline whose exports the test triggers.
struct Sdk {
    rt: tokio::runtime::Runtime,
    provider: SdkMeterProvider,
    reader: SharedReader,
    exporter: MetricExporter,
}

#[derive(Clone, Copy)]
enum Transport {
    Http,
    Grpc,
}

impl Sdk {
    fn new(t: &Tallyd, transport: Transport, temporality: Temporality) -> Sdk {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let exporter = rt.block_on(async {
            match transport {
                Transport::Http => MetricExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(format!(
                        "http://{}/v1/metrics",
                        t.otlp_http.expect("otlp http")
                    ))
                    .with_compression(Compression::Gzip)
                    .with_timeout(Duration::from_secs(10))
                    .build(),
                Transport::Grpc => MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(format!("http://{}", t.otlp_grpc.expect("otlp grpc")))
                    .with_compression(Compression::Gzip)
                    .with_timeout(Duration::from_secs(10))
                    .build(),
            }
            .expect("exporter")
        });
        let reader = SharedReader(Arc::new(
            ManualReader::builder()
                .with_temporality(temporality)
                .build(),
        ));
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("checkout")
                    .with_attribute(KeyValue::new("process.pid", 4242))
                    .build(),
            )
            .build();
        Sdk {
            rt,
            provider,
            reader,
            exporter,
        }
    }

    /// Collects what was recorded and exports it; panics if tallyd does not accept it.
    fn export(&self) {
        let mut rm = SdkResourceMetrics::default();
        self.reader.collect(&mut rm).expect("collect");
        self.rt
            .block_on(self.exporter.export(&rm))
            .expect("tallyd accepts the export");
    }
}

/// Counters (delta), an up-down counter, a gauge and a histogram, in two exports.
fn delta_instruments(transport: Transport) {
    let t = Tallyd::start("");
    let sdk = Sdk::new(&t, transport, Temporality::Delta);
    let meter = sdk.provider.meter("shop");
    let orders = meter.u64_counter("orders").build();
    let queue = meter.i64_up_down_counter("queue.depth").build();
    let temp = meter.f64_gauge("room.temp").build();
    let lat = meter
        .f64_histogram("latency")
        .with_boundaries(vec![0.0, 5.0, 10.0, 25.0, 50.0])
        .build();
    let a = [KeyValue::new("kind", "a")];
    orders.add(3, &a);
    orders.add(2, &a);
    orders.add(7, &[KeyValue::new("kind", "b")]);
    queue.add(5, &[]);
    queue.add(-2, &[]);
    temp.record(21.5, &[]);
    for v in [1.0, 2.0, 30.0] {
        lat.record(v, &[]);
    }
    sdk.export();

    let text = t.wait_value("orders_total{kind=\"a\",service=\"checkout\"}", 5.0);
    let text = if value(&text, "latency_count{service=\"checkout\"}") == Some(3.0) {
        text
    } else {
        t.wait_value("latency_count{service=\"checkout\"}", 3.0)
    };
    assert_eq!(
        value(&text, "orders_total{kind=\"b\",service=\"checkout\"}"),
        Some(7.0)
    );
    assert_eq!(value(&text, "queue_depth{service=\"checkout\"}"), Some(3.0));
    assert_eq!(value(&text, "room_temp{service=\"checkout\"}"), Some(21.5));
    assert_eq!(
        value(&text, "latency_sum{service=\"checkout\"}"),
        Some(33.0)
    );
    // A histogram with the bounds it came with (issue 14): two values in (0, 5], the third in
    // (25, 50]. Within a bucket the values are spread over sketch bins (issue 17), each within
    // about 1 % of the range, so only bounds well away from the values are checked exactly.
    for (le, n) in [("0", 0.0), ("10", 2.0), ("50", 3.0), ("+Inf", 3.0)] {
        assert_eq!(
            value(
                &text,
                &format!("latency_bucket{{service=\"checkout\",le=\"{le}\"}}")
            ),
            Some(n),
            "le={le}: {text}"
        );
    }
    assert!(text.contains("# TYPE latency histogram\n"), "{text}");
    // process.pid is not a mapped resource attribute.
    assert!(!text.contains("4242"), "{text}");

    orders.add(4, &a);
    queue.add(-4, &[]);
    sdk.export();
    let text = t.wait_value("orders_total{kind=\"a\",service=\"checkout\"}", 9.0);
    let text = if value(&text, "queue_depth{service=\"checkout\"}") == Some(-1.0) {
        text
    } else {
        t.wait_value("queue_depth{service=\"checkout\"}", -1.0)
    };
    let transport_label = match transport {
        Transport::Http => "http",
        Transport::Grpc => "grpc",
    };
    let ok = format!(
        "tallyd_otlp_requests_total{{transport=\"{transport_label}\",outcome=\"success\"}}"
    );
    assert_eq!(value(&text, &ok), Some(2.0), "{text}");
    assert_eq!(
        value(
            &text,
            "tallyd_otlp_points_rejected_total{reason=\"invalid\"}"
        ),
        Some(0.0)
    );
}

/// Cumulative counters and histograms become per-window increments.
fn cumulative_instruments(transport: Transport) {
    let t = Tallyd::start("");
    let sdk = Sdk::new(&t, transport, Temporality::Cumulative);
    let meter = sdk.provider.meter("shop");
    let hits = meter.u64_counter("hits").build();
    let lat = meter
        .f64_histogram("wait")
        .with_boundaries(vec![0.0, 5.0, 10.0, 25.0, 50.0])
        .build();
    hits.add(5, &[]);
    lat.record(1.0, &[]);
    lat.record(2.0, &[]);
    sdk.export();
    t.wait_value("hits_total{service=\"checkout\"}", 5.0);
    t.wait_value("wait_count{service=\"checkout\"}", 2.0);

    hits.add(3, &[]);
    lat.record(30.0, &[]);
    sdk.export();
    let text = t.wait_value("hits_total{service=\"checkout\"}", 8.0);
    let text = if value(&text, "wait_count{service=\"checkout\"}") == Some(3.0) {
        text
    } else {
        t.wait_value("wait_count{service=\"checkout\"}", 3.0)
    };
    assert_eq!(value(&text, "wait_sum{service=\"checkout\"}"), Some(33.0));

    // An export with nothing new adds nothing. Its points are in the aggregator once counted
    // as accepted; a StatsD marker sent after that is exposed in the same window or a later
    // one, so once the marker shows, so would anything the export added.
    sdk.export();
    t.wait_metrics(
        |m| value(m, "tallyd_otlp_points_accepted_total") == Some(6.0),
        "six points accepted",
    );
    t.send_udp("after.empty.export:1|c");
    let text = t.wait_value("after_empty_export_total", 1.0);
    assert_eq!(value(&text, "hits_total{service=\"checkout\"}"), Some(8.0));
    assert_eq!(value(&text, "wait_count{service=\"checkout\"}"), Some(3.0));
}

#[test]
fn sdk_http_exporter_delta() {
    delta_instruments(Transport::Http);
}

#[test]
fn sdk_grpc_exporter_delta() {
    delta_instruments(Transport::Grpc);
}

#[test]
fn sdk_http_exporter_cumulative() {
    cumulative_instruments(Transport::Http);
}

#[test]
fn sdk_grpc_exporter_cumulative() {
    cumulative_instruments(Transport::Grpc);
}

fn counter_request(name: &str, value: f64) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            value: Some(number_data_point::Value::AsDouble(value)),
                            ..Default::default()
                        }],
                        aggregation_temporality: 1,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn post(
    t: &Tallyd,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_bytes(
        t.otlp_http.expect("otlp http"),
        "POST",
        "/v1/metrics",
        headers,
        body,
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The `message` of a protobuf `google.rpc.Status` body (field 2).
fn status_message(body: &[u8]) -> String {
    #[derive(Clone, PartialEq, Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    RpcStatus::decode(body)
        .expect("google.rpc.Status body")
        .message
}

#[test]
fn http_bad_requests_get_clear_statuses_and_harm_nothing() {
    let t = Tallyd::start("[otlp]\nmax_body_bytes = 4096\nmax_points_per_request = 3\n");
    let proto = [("Content-Type", "application/x-protobuf")];

    // Malformed protobuf: 400 with a Status body naming the problem.
    let (status, headers, body) = post(&t, &proto, b"\xff\xff\xff\xff not protobuf");
    assert_eq!(status, 400);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/x-protobuf")
    );
    assert!(
        status_message(&body).contains("invalid protobuf"),
        "{body:?}"
    );

    // Wrong content type: 415.
    let (status, _, body) = post(&t, &[("Content-Type", "text/plain")], b"x:1|c");
    assert_eq!(status, 415);
    assert!(status_message(&body).contains("text/plain"));

    // Oversized body: 413 (declared length), and after decompression (a gzip bomb).
    let big = counter_request(&"n".repeat(5000), 1.0).encode_to_vec();
    let (status, _, _) = post(&t, &proto, &big);
    assert_eq!(status, 413);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&big).expect("gzip");
    let bomb = gz.finish().expect("gzip");
    assert!(bomb.len() < 4096);
    let (status, _, body) = post(
        &t,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        &bomb,
    );
    assert_eq!(status, 413);
    assert!(status_message(&body).contains("otlp.max_body_bytes"));

    // Too many points in one request: refused whole.
    let mut four = counter_request("p", 1.0);
    let dp = four.resource_metrics[0].scope_metrics[0].metrics[0].clone();
    for _ in 0..3 {
        four.resource_metrics[0].scope_metrics[0]
            .metrics
            .push(dp.clone());
    }
    let (status, _, body) = post(&t, &proto, &four.encode_to_vec());
    assert_eq!(status, 413);
    assert!(status_message(&body).contains("max_points_per_request"));

    // Unknown content encoding: 415; a broken gzip body: 400.
    let (status, _, _) = post(
        &t,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "br"),
        ],
        b"x",
    );
    assert_eq!(status, 415);
    let (status, _, _) = post(
        &t,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        b"not gzip",
    );
    assert_eq!(status, 400);

    // Bad JSON: 400 with a JSON Status body.
    let (status, headers, body) = post(
        &t,
        &[("Content-Type", "application/json")],
        b"{\"resourceMetrics\":7}",
    );
    assert_eq!(status, 400);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON status");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("invalid OTLP JSON"),
        "{v}"
    );

    // Nothing else was affected: a good request and a statsd line still count.
    let (status, _, body) = post(&t, &proto, &counter_request("good", 2.0).encode_to_vec());
    assert_eq!(status, 200);
    let resp = ExportMetricsServiceResponse::decode(&body[..]).expect("response");
    assert_eq!(resp.partial_success, None);
    t.send_udp("statsd.line:1|c");
    let text = t.wait_value("good_total", 2.0);
    let text = if value(&text, "statsd_line_total") == Some(1.0) {
        text
    } else {
        t.wait_value("statsd_line_total", 1.0)
    };
    assert!(
        !text.contains("p_total"),
        "nothing of the refused request was counted"
    );
    let outcome = |o: &str| {
        value(
            &text,
            &format!("tallyd_otlp_requests_total{{transport=\"http\",outcome=\"{o}\"}}"),
        )
    };
    assert_eq!(outcome("bad_request"), Some(3.0));
    assert_eq!(outcome("unsupported_media_type"), Some(2.0));
    assert_eq!(outcome("too_large"), Some(3.0));
    assert_eq!(outcome("success"), Some(1.0));
}

#[test]
fn http_json_and_gzip_bodies_and_partial_success() {
    let t = Tallyd::start("[otlp]\nmax_attributes_per_point = 1\n");
    let json = br#"{"resourceMetrics":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"web"}}]},
      "scopeMetrics":[{"scope":{"name":"m"},"metrics":[
        {"name":"jhits","sum":{"aggregationTemporality":1,"isMonotonic":true,
          "dataPoints":[{"asInt":"7","attributes":[{"key":"code","value":{"intValue":"200"}}]},
                        {"asInt":"1","attributes":[{"key":"a","value":{"intValue":"1"}},
                                                   {"key":"b","value":{"intValue":"2"}}]}]}},
        {"name":"jtemp","gauge":{"dataPoints":[{"asDouble":-3.5}]}}
      ]}]}]}"#;
    let (status, headers, body) = post(&t, &[("Content-Type", "application/json")], json);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON response");
    // int64 as a decimal string, per the OTLP JSON mapping.
    assert_eq!(v["partialSuccess"]["rejectedDataPoints"], "1");
    let msg = v["partialSuccess"]["errorMessage"].as_str().unwrap_or("");
    assert!(msg.contains("too_many_attributes"), "{msg}");

    // The same as protobuf, gzip-compressed.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&counter_request("zhits", 4.0).encode_to_vec())
        .expect("gzip");
    let (status, _, body) = post(
        &t,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        &gz.finish().expect("gzip"),
    );
    assert_eq!(status, 200);
    assert_eq!(
        ExportMetricsServiceResponse::decode(&body[..]).expect("response"),
        ExportMetricsServiceResponse::default()
    );

    let text = t.wait_value("jhits_total{code=\"200\",service=\"web\"}", 7.0);
    let text = if value(&text, "zhits_total") == Some(4.0) {
        text
    } else {
        t.wait_value("zhits_total", 4.0)
    };
    assert_eq!(value(&text, "jtemp{service=\"web\"}"), Some(-3.5));
    assert_eq!(
        value(
            &text,
            "tallyd_otlp_points_rejected_total{reason=\"too_many_attributes\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "tallyd_otlp_requests_total{transport=\"http\",outcome=\"partial\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn grpc_oversized_message_is_refused_and_harms_nothing() {
    let t = Tallyd::start("[otlp]\nmax_body_bytes = 2048\n");
    let sdk = Sdk::new(&t, Transport::Grpc, Temporality::Delta);
    let meter = sdk.provider.meter("shop");
    let c = meter.u64_counter("fat").build();
    c.add(1, &[KeyValue::new("blob", "x".repeat(4096))]);
    let mut rm = SdkResourceMetrics::default();
    sdk.reader.collect(&mut rm).expect("collect");
    let refused = sdk.rt.block_on(sdk.exporter.export(&rm));
    assert!(refused.is_err(), "an oversized message must be refused");
    c.add(2, &[KeyValue::new("blob", "small")]);
    sdk.export();
    let text = t.wait_value("fat_total{blob=\"small\",service=\"checkout\"}", 2.0);
    assert!(
        !text.contains("xxxx"),
        "nothing of the refused message was counted"
    );
    // tonic refuses it before tallyd's handler runs; it is counted all the same.
    assert_eq!(
        value(
            &text,
            "tallyd_otlp_requests_total{transport=\"grpc\",outcome=\"too_large\"}"
        ),
        Some(1.0)
    );
}

/// A gRPC codec that sends and receives message bytes as they are, to send what no SDK would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// One OTLP/gRPC Export call carrying `message` byte for byte; the status tallyd answers.
fn grpc_export_raw(t: &Tallyd, message: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            t.otlp_grpc.expect("grpc")
        ))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        );
        grpc.unary(tonic::Request::new(message), path, RawCodec)
            .await
            .map(|r| r.into_inner())
    })
}

#[test]
fn grpc_undecodable_message_is_refused_counted_and_harms_nothing() {
    let t = Tallyd::start("");
    // Field 1 (resource_metrics), length-delimited, says 5 bytes and carries 1.
    let refused = grpc_export_raw(&t, vec![0x0a, 0x05, 0x01]).expect_err("undecodable");
    assert_eq!(refused.code(), tonic::Code::Internal, "{refused:?}");

    // The connection-level path still serves a good request afterwards.
    let good = counter_request("after.garbage", 4.0);
    let reply = grpc_export_raw(&t, good.encode_to_vec()).expect("good request accepted");
    assert!(ExportMetricsServiceResponse::decode(reply.as_slice()).is_ok());
    let text = t.wait_value("after_garbage_total", 4.0);
    for (outcome, want) in [("bad_request", 1.0), ("success", 1.0)] {
        assert_eq!(
            value(
                &text,
                &format!("tallyd_otlp_requests_total{{transport=\"grpc\",outcome=\"{outcome}\"}}")
            ),
            Some(want),
            "{outcome}"
        );
    }
}

#[test]
fn otlp_listeners_can_be_disabled() {
    let t = Tallyd::start("[otlp]\nenabled = false\n");
    assert_eq!((t.otlp_http, t.otlp_grpc), (None, None));
    let (status, body) = t.get("/health");
    assert_eq!(status, 200);
    assert!(body.contains("otlp.enabled is false"), "{body}");
}
