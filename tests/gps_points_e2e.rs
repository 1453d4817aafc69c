//! End-to-end: GPS points delivered to an HTTP endpoint through the durable `live_points`
//! queue, surviving an outage of the endpoint, with rejections in the dead-letter queue.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::Tallyd;

/// A points endpoint that answers with a settable status and records every request. It
/// asserts nothing itself (a panic in a handler would only show up as a timeout elsewhere):
/// the tests check what it recorded.
struct Endpoint {
    addr: SocketAddr,
    state: Arc<EndpointState>,
    _rt: tokio::runtime::Runtime,
}

/// One request as received, and the status it was answered.
#[derive(Debug, Clone)]
struct Received {
    content_type: Option<String>,
    token: Option<String>,
    body: String,
    status: u16,
}

#[derive(Default)]
struct EndpointState {
    status: AtomicU16,
    requests: Mutex<Vec<Received>>,
    refused: AtomicU16,
}

async fn receive(
    State(s): State<Arc<EndpointState>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let header = |k: &str| {
        headers
            .get(k)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let status = StatusCode::from_u16(s.status.load(Relaxed)).unwrap_or(StatusCode::OK);
    if !status.is_success() {
        s.refused.fetch_add(1, Relaxed);
    }
    s.requests.lock().expect("requests").push(Received {
        content_type: header("content-type"),
        token: header("x-token"),
        body,
        status: status.as_u16(),
    });
    status
}

impl Endpoint {
    fn start() -> Endpoint {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let state = Arc::new(EndpointState::default());
        state.status.store(200, Relaxed);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route("/points", post(receive))
            .with_state(Arc::clone(&state));
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Endpoint {
            addr,
            state,
            _rt: rt,
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().expect("requests").clone()
    }

    /// Every point of every accepted batch, flattened (an accepted body that is not a JSON
    /// batch is left out here and fails [`Endpoint::check_requests`]).
    fn points(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
            .flat_map(|b| b["points"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Every request so far (at least one) carried the configured headers and a JSON batch.
    fn check_requests(&self) {
        let all = self.requests();
        assert!(!all.is_empty(), "no request reached the endpoint");
        for r in &all {
            assert_eq!(r.content_type.as_deref(), Some("application/json"), "{r:?}");
            assert_eq!(r.token.as_deref(), Some("s3cret"), "{r:?}");
            let v: serde_json::Value = serde_json::from_str(&r.body)
                .unwrap_or_else(|e| panic!("not a JSON batch ({e}): {r:?}"));
            assert!(v["points"].is_array(), "{r:?}");
        }
    }
}

fn nmea(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n").into_bytes()
}

fn rmc(second: u32) -> Vec<u8> {
    nmea(&format!(
        "GPRMC,1235{second:02},A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
    ))
}

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn queue_stats(t: &Tallyd) -> serde_json::Value {
    let (code, body) = t.get("/admin/queue/stats");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).expect("json")["queues"]["live_points"].clone()
}

fn start(endpoint: &Endpoint) -> Tallyd {
    Tallyd::start(&format!(
        r#"
[gps]
points_url = "http://{}/points"
points_headers = {{ x-token = "s3cret" }}
points_timeout = "2s"
[queue]
directory = "@DIR@/queue"
backoff_initial = "50ms"
backoff_max = "200ms"
"#,
        endpoint.addr
    ))
}

#[test]
fn points_survive_an_endpoint_outage() {
    let endpoint = Endpoint::start();
    endpoint.state.status.store(503, Relaxed);
    let t = start(&endpoint);
    let mut device = TcpStream::connect(t.gps.expect("gps")).expect("connect");
    device.write_all(&nmea("PGID,truck-1")).expect("id");
    for s in 0..5 {
        device.write_all(&rmc(s)).expect("fix");
    }
    wait_until(10, "retries against the down endpoint", || {
        endpoint.state.refused.load(Relaxed) >= 2
    });
    let during = queue_stats(&t);
    assert!(during["pending"].as_u64().unwrap_or(0) >= 1, "{during}");

    endpoint.state.status.store(200, Relaxed);
    for s in 5..8 {
        device.write_all(&rmc(s)).expect("fix");
    }
    wait_until(15, "all points delivered", || endpoint.points().len() >= 8);
    wait_until(10, "queue drained", || queue_stats(&t)["pending"] == 0);
    let points = endpoint.points();
    let mut times: Vec<&str> = points.iter().filter_map(|p| p["time"].as_str()).collect();
    times.sort();
    times.dedup();
    assert_eq!(times.len(), 8, "{points:#?}");
    for p in &points {
        assert_eq!(p["device_id"], "truck-1");
        assert_eq!(p["protocol"], "nmea");
        assert!(
            (p["lat"].as_f64().unwrap_or(0.0) - 48.1173).abs() < 1e-4,
            "{p}"
        );
        assert!(
            (p["lon"].as_f64().unwrap_or(0.0) - 11.516_666).abs() < 1e-4,
            "{p}"
        );
    }
    let text = t.metrics();
    assert!(
        common::value(
            &text,
            "tallyd_forwarder_retries_total{queue=\"live_points\"}"
        )
        .unwrap_or(0.0)
            > 0.0,
        "{text}"
    );
    assert_eq!(
        common::value(
            &text,
            "tallyd_forwarder_payloads_dropped_total{queue=\"live_points\"}"
        ),
        Some(0.0)
    );
    endpoint.check_requests();
}

#[test]
fn rejected_points_go_to_the_dead_letter_queue_and_back() {
    let endpoint = Endpoint::start();
    endpoint.state.status.store(400, Relaxed);
    let t = start(&endpoint);
    let mut device = TcpStream::connect(t.gps.expect("gps")).expect("connect");
    device.write_all(&nmea("PGID,boat-2")).expect("id");
    device.write_all(&rmc(1)).expect("fix");
    wait_until(10, "a dead letter", || {
        queue_stats(&t)["dlq_size"].as_u64().unwrap_or(0) >= 1
    });
    endpoint.state.status.store(200, Relaxed);
    let (code, body) = common::http_request(
        t.http,
        "POST",
        "/admin/queue/process-dlq/live_points?dry_run=false",
        &[],
        "",
    );
    assert_eq!(code, 200, "{body}");
    wait_until(10, "the requeued point delivered", || {
        endpoint.points().iter().any(|p| p["device_id"] == "boat-2")
    });
    assert_eq!(queue_stats(&t)["dlq_size"], 0);
    // The requeued request is the rejected batch, sent again unchanged.
    let boat: Vec<Received> = endpoint
        .requests()
        .into_iter()
        .filter(|r| r.body.contains("boat-2"))
        .collect();
    let first = boat.first().expect("the rejected batch");
    assert_eq!(first.status, 400, "{boat:#?}");
    let again = boat
        .iter()
        .find(|r| r.status == 200)
        .expect("the requeued batch");
    assert_eq!(again.body, first.body);
    endpoint.check_requests();
}
