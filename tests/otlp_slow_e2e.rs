//! End-to-end: slow or stalled OTLP/HTTP uploads cannot shut off OTLP intake (issue 20, defect
//! 3). `otlp.max_concurrent_requests` connections that send their headers and one body byte
//! hold no admission slot: a normal request sent while they are open is accepted, and each of
//! them is answered 408 after `otlp.request_timeout` and counted.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{http_bytes, value, Tallyd};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use prost::Message;

/// Slow uploads opened, as many as there are admission slots.
const SLOTS: usize = 2;
/// `otlp.request_timeout`, in seconds.
const TIMEOUT_SECS: u64 = 2;

fn gauge_request(name: &str) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            value: Some(number_data_point::Value::AsDouble(7.0)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Whether the server has neither answered nor closed `s` yet.
fn still_waiting(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    let waiting = matches!(s.peek(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).expect("blocking");
    waiting
}

#[test]
fn stalled_uploads_hold_no_admission_slot_and_time_out() {
    let t = Tallyd::start(&format!(
        "[otlp]\nmax_concurrent_requests = {SLOTS}\nrequest_timeout = \"{TIMEOUT_SECS}s\"\n"
    ));
    let addr = t.otlp_http.expect("otlp http");

    // Headers announcing a large body, then one byte of it, then nothing.
    let opened = Instant::now();
    let slow: Vec<TcpStream> = (0..SLOTS)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(TIMEOUT_SECS + 10)))
                .expect("timeout");
            let head = format!(
                "POST /v1/metrics HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\n\x0a"
            );
            s.write_all(head.as_bytes()).expect("write");
            s
        })
        .collect();
    // Every one of them is in the handler, reading its body.
    t.wait_value("tallyd_otlp_bodies_reading", SLOTS as f64);

    let (status, _, body) = http_bytes(
        addr,
        "POST",
        "/v1/metrics",
        &[("Content-Type", "application/x-protobuf")],
        &gauge_request("slow.neighbour"),
    );
    assert_eq!(
        status,
        200,
        "a normal request is refused while {SLOTS} uploads stall: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        opened.elapsed() < Duration::from_secs(TIMEOUT_SECS),
        "the machine is too slow for this test: the normal request finished after the timeout"
    );
    for s in &slow {
        assert!(
            still_waiting(s),
            "a slow upload was answered before the timeout"
        );
    }
    t.wait_value("slow_neighbour", 7.0);

    // Each slow upload is answered 408 once the timeout passes (and the connection closed).
    for mut s in slow {
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "slow upload answered {text:?}"
        );
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(TIMEOUT_SECS)
            && waited < Duration::from_secs(TIMEOUT_SECS + 8),
        "slow uploads answered after {waited:?}"
    );
    let text = t.wait_value(
        "tallyd_otlp_requests_total{transport=\"http\",outcome=\"timeout\"}",
        SLOTS as f64,
    );
    assert_eq!(
        value(&text, "tallyd_otlp_bodies_reading"),
        Some(0.0),
        "no body is still being read"
    );
    assert_eq!(
        value(
            &text,
            "tallyd_otlp_requests_total{transport=\"http\",outcome=\"success\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "tallyd_otlp_requests_total{transport=\"http\",outcome=\"throttled\"}"
        ),
        Some(0.0)
    );
}
