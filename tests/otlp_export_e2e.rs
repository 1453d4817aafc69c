//! OTLP export end to end, with the real binary on both sides.
//!
//! - tallyd A exports to tallyd B's OTLP receiver (tonic/axum servers on the official
//!   `opentelemetry-proto` definitions) over OTLP/HTTP with gzip, OTLP/HTTP uncompressed and
//!   OTLP/gRPC; B's `/metrics` shows A's counters, gauges, sets and summary count/sum.
//! - B stopped while A keeps counting, then restarted on the same port: B receives exactly what
//!   was counted while it was down, nothing missing and nothing twice.
//! - A stand-in OTLP/HTTP receiver answers a partial success, then 400: the rejected points are
//!   counted, the 400 request is dead-lettered (with the response) and shows in
//!   `/admin/queue/stats`, and is never retried; a 503 with `Retry-After: 1` is retried after
//!   a second, once.
//! - A stand-in OTLP/gRPC receiver (tonic, the official service) answers RESOURCE_EXHAUSTED with
//!   `RetryInfo`, UNAVAILABLE, a partial success and INVALID_ARGUMENT.
//! - HTTPS and gRPC over TLS with a test CA given as `otlp_export.tls_ca_file`.
//! - Points A received over OTLP leave with their resource and scope (from the tags A's
//!   receiver made of them), a StatsD point under A's own resource and scope.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{value, Tallyd};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use serde_json::Value;

fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// B's renames: A's StatsD `env` tag leaves as the resource attribute
/// `deployment.environment.name` (A's receiver renames it to `env` by default) and comes back
/// as `env`; A's own `host.name` and `service.name` add no tags (so B's series equal A's).
const B_RENAMES: &str = "attribute_tags = [\"deployment.environment.name=env\"]";

/// B: a tallyd receiving A's export.
fn receiver(http_listen: &str) -> Tallyd {
    receiver_with(http_listen, "")
}

fn receiver_with(http_listen: &str, extra: &str) -> Tallyd {
    Tallyd::start(&format!(
        "[otlp]\nhttp_listen = \"{http_listen}\"\n{B_RENAMES}\n{extra}\n"
    ))
}

/// A: a tallyd exporting to `endpoint`.
fn exporter(protocol: &str, endpoint: &str, compression: &str) -> Tallyd {
    exporter_with(protocol, endpoint, compression, "")
}

/// A with `extra` keys in `[otlp_export]`.
fn exporter_with(protocol: &str, endpoint: &str, compression: &str, extra: &str) -> Tallyd {
    Tallyd::start(&format!(
        r#"
[otlp_export]
enabled = true
protocol = "{protocol}"
endpoint = "{endpoint}"
compression = "{compression}"
service_name = "e2e"
{extra}
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "300ms"
"#
    ))
}

/// Values the exporter's and the receiver's `/metrics` must agree on.
const SERIES: &[&str] = &[
    "ox_hits_total{env=\"prod\"}",
    "ox_temp",
    "ox_users",
    "ox_lat_count",
    "ox_lat_sum",
    "ox_size_count",
    "ox_size_sum",
];

fn roundtrip(protocol: &str, compression: &str) {
    roundtrip_with(protocol, compression, "", "");
}

fn roundtrip_with(protocol: &str, compression: &str, extra: &str, b_extra: &str) {
    let b = receiver_with("127.0.0.1:0", b_extra);
    let target = match protocol {
        "grpc" => b.otlp_grpc.expect("gRPC listener"),
        _ => b.otlp_http.expect("HTTP listener"),
    };
    let a = exporter_with(protocol, &format!("http://{target}"), compression, extra);
    a.send_tcp(
        "ox.hits:3|c|#env:prod\nox.temp:21.5|g\nox.users:alice|s\nox.users:bob|s\n\
         ox.lat:10|ms\nox.lat:30|ms\nox.lat:0.5|ms\nox.size:100|h\nox.size:250000|h\n",
    );
    a.wait_value("ox_hits_total{env=\"prod\"}", 3.0);
    a.send_tcp("ox.hits:2|c|#env:prod\nox.lat:7|ms\n");
    a.wait_value("ox_hits_total{env=\"prod\"}", 5.0);
    let am = a.wait_metrics(
        |m| value(m, "ox_lat_count") == Some(4.0),
        "A's 4 timer samples",
    );
    let want: Vec<(String, f64)> = SERIES
        .iter()
        .map(|s| {
            (
                s.to_string(),
                value(&am, s).unwrap_or_else(|| panic!("{s} on A:\n{am}")),
            )
        })
        .collect();
    assert_eq!(want[0].1, 5.0);
    assert_eq!(want[2].1, 2.0, "the set's distinct count");
    assert_eq!(want[4].1, 47.5);
    let bm = b.wait_metrics(
        |m| want.iter().all(|(s, v)| value(m, s) == Some(*v)),
        &format!("B to show A's values {want:?}"),
    );
    // Nothing was dead-lettered or retried for good measure.
    let (_, stats) = a.get("/admin/queue/stats");
    let v: Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(v["queues"]["otlp"]["dead_lettered"], 0, "{stats}");
    if extra.contains("exponential") {
        assert!(
            value(&bm, "ox_lat{quantile=\"0.99\"}").is_some(),
            "B keeps a summary of an exponential histogram:\n{bm}"
        );
    } else {
        // B exports an explicit-bucket histogram with the bounds A sent (the OpenTelemetry
        // SDK's defaults): 0.5 in (0, 5], 7 and 10 in (5, 10], 30 in (25, 50].
        assert_eq!(value(&bm, "ox_lat_bucket{le=\"5\"}"), Some(1.0), "{bm}");
        assert_eq!(value(&bm, "ox_lat_bucket{le=\"10\"}"), Some(3.0), "{bm}");
        assert_eq!(value(&bm, "ox_lat_bucket{le=\"25\"}"), Some(3.0), "{bm}");
        assert_eq!(value(&bm, "ox_lat_bucket{le=\"+Inf\"}"), Some(4.0), "{bm}");
    }
    let am = a.metrics();
    assert!(
        value(&am, "tallyd_otlp_export_points_total").unwrap_or(0.0) >= 7.0,
        "{am}"
    );
    assert_eq!(
        value(&am, "tallyd_otlp_export_rejected_points_total"),
        Some(0.0),
        "{am}"
    );
}

#[test]
fn http_gzip_to_a_tallyd_receiver() {
    roundtrip("http/protobuf", "gzip");
}

#[test]
fn http_uncompressed_to_a_tallyd_receiver() {
    roundtrip("http/protobuf", "none");
}

#[test]
fn grpc_to_a_tallyd_receiver() {
    roundtrip("grpc", "gzip");
}

#[test]
fn cumulative_counters_and_exponential_histograms() {
    // B turns the cumulative totals back into increases; its totals equal A's. B counts a
    // stream's first total in full only when the stream started after B did ("auto"); A's
    // first window may start before B's start (windows are wall-clock aligned), so B is told
    // to keep first points, as a receiver that knows its senders' streams are new would.
    roundtrip_with(
        "http/protobuf",
        "gzip",
        "counter_temporality = \"cumulative\"\nhistogram = \"exponential\"",
        "initial_cumulative_value = \"keep\"",
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn queue_empty(t: &Tallyd) -> bool {
    let m = t.metrics();
    value(&m, "tallyd_forwarder_queue_depth{queue=\"otlp\"}") == Some(0.0)
}

#[test]
fn receiver_outage_loses_nothing_and_doubles_nothing() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut b = receiver(&listen);
    let a = exporter("http/protobuf", &format!("http://{listen}"), "gzip");
    let series = "ox_hits_total{env=\"prod\"}";
    a.send_tcp("ox.hits:4|c|#env:prod\n");
    b.wait_value(series, 4.0);
    wait_until(10, "A's queue to empty", || queue_empty(&a).then_some(()));
    assert!(b.terminate().success());

    // Counted while B is down, over several windows.
    let mut sent = 0.0;
    for i in 1..=5 {
        a.send_tcp(&format!("ox.hits:{i}|c|#env:prod\n"));
        sent += f64::from(i);
        a.wait_value(series, 4.0 + sent);
    }
    let m = a.wait_metrics(
        |m| {
            value(m, "tallyd_forwarder_retries_total{queue=\"otlp\"}").unwrap_or(0.0) >= 1.0
                && value(m, "tallyd_forwarder_queue_depth{queue=\"otlp\"}").unwrap_or(0.0) >= 1.0
        },
        "failed attempts and a backlog while B is down",
    );
    assert_eq!(
        value(&m, "tallyd_forwarder_dead_lettered_total{queue=\"otlp\"}"),
        Some(0.0),
        "{m}"
    );

    // B comes back on the same address; its counter starts from zero.
    let b = receiver(&listen);
    b.wait_value(series, sent);
    wait_until(15, "A's queue to drain", || queue_empty(&a).then_some(()));
    // Every payload is acknowledged only after B took it: once the queue is empty, a second
    // delivery of anything would already show.
    let bm = b.metrics();
    assert_eq!(value(&bm, series), Some(sent), "{bm}");
    let (_, stats) = a.get("/admin/queue/stats");
    let v: Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(v["queues"]["otlp"]["dead_lettered"], 0, "{stats}");
}

// ---------------------------------------------------------------------------------------------
// A stand-in OTLP/HTTP receiver with scripted answers.

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    status: u16,
    headers: Vec<(String, String)>,
    request: ExportMetricsServiceRequest,
}

struct StandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// One answer: status, body, extra header lines (each ending in CRLF).
type Answer = (u16, Vec<u8>, &'static str);

impl StandIn {
    /// Answers the scripted `answers` in order, then 200 with an empty response.
    fn start(answers: Vec<Answer>) -> StandIn {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            for c in l.incoming().map_while(Result::ok) {
                let (s, script) = (Arc::clone(&s), Arc::clone(&script));
                std::thread::spawn(move || serve(c, &s, &script));
            }
        });
        StandIn { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

fn serve(
    c: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    script: &Mutex<std::collections::VecDeque<Answer>>,
) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
    let mut w = c.try_clone().expect("clone");
    let mut r = BufReader::new(c);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(line.starts_with("POST /v1/metrics "), "{line}");
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .expect("length");
        let mut body = vec![0; len];
        r.read_exact(&mut body).expect("body");
        assert_eq!(
            get("content-type").as_deref(),
            Some("application/x-protobuf")
        );
        if get("content-encoding").as_deref() == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .expect("gzip");
            body = out;
        }
        let request = ExportMetricsServiceRequest::decode(&body[..]).expect("protobuf");
        let (status, answer, extra) =
            script
                .lock()
                .expect("script")
                .pop_front()
                .unwrap_or((200, Vec::new(), ""));
        seen.lock().expect("seen").push(Seen {
            at: Instant::now(),
            status,
            headers: headers.clone(),
            request,
        });
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-protobuf\r\n{extra}content-length: {}\r\n\r\n",
            answer.len()
        );
        if w.write_all(head.as_bytes())
            .and_then(|()| w.write_all(&answer))
            .is_err()
        {
            return;
        }
    }
}

fn points(r: &ExportMetricsServiceRequest) -> usize {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .map(|sm| sm.metrics.len())
        .sum()
}

fn names(r: &ExportMetricsServiceRequest) -> Vec<String> {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| m.name.clone())
        .collect()
}

#[test]
fn partial_success_is_counted_and_a_400_is_dead_lettered() {
    let partial = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 2,
            error_message: "2 points had bad names".into(),
        }),
    }
    .encode_to_vec();
    let rx = StandIn::start(vec![
        (200, partial, ""),
        (400, b"malformed request".to_vec(), ""),
    ]);
    let a = Tallyd::start(&format!(
        r#"
[otlp_export]
enabled = true
endpoint = "http://{}"
headers = {{ "api-key" = "s3cr3t-key" }}
[gps]
# Its fleet gauges would be windows of their own; here every request is one the test sent.
enabled = false
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "300ms"
"#,
        rx.addr
    ));
    a.send_tcp("ox.first:1|c\n");
    wait_until(15, "the first request", || {
        (!rx.seen().is_empty()).then_some(())
    });
    a.send_tcp("ox.second:1|c\n");
    a.wait_value("ox_second_total", 1.0);
    let seen = wait_until(15, "the rejected request", || {
        let s = rx.seen();
        (s.len() >= 2).then_some(s)
    });
    assert_eq!(seen[0].status, 200);
    assert!(seen[0]
        .headers
        .contains(&("api-key".to_string(), "s3cr3t-key".to_string())));
    assert_eq!(names(&seen[0].request), ["ox.first"]);
    assert_eq!(seen[1].status, 400);
    assert_eq!(names(&seen[1].request), ["ox.second"]);
    assert!(points(&seen[1].request) == 1);

    let m = a.wait_metrics(
        |m| value(m, "tallyd_forwarder_dead_lettered_total{queue=\"otlp\"}") == Some(1.0),
        "one dead letter",
    );
    assert_eq!(
        value(&m, "tallyd_otlp_export_rejected_points_total"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "tallyd_otlp_export_partial_success_responses_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "tallyd_forwarder_retries_total{queue=\"otlp\"}"),
        Some(0.0),
        "{m}"
    );
    let (code, body) = a.get("/admin/queue/stats");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let q = &v["queues"]["otlp"];
    assert_eq!(q["dlq_size"], 1, "{body}");
    assert_eq!(q["dead_lettered"], 1, "{body}");
    // The dead letter keeps the answer.
    let dlq = a.path("queue/otlp/dlq");
    let meta = wait_until(5, "the dead letter's metadata", || {
        std::fs::read_dir(&dlq)
            .ok()?
            .filter_map(Result::ok)
            .find_map(|e| {
                let text = String::from_utf8_lossy(&std::fs::read(e.path()).ok()?).into_owned();
                text.contains("malformed request").then_some(text)
            })
    });
    assert!(meta.contains("400"), "{meta}");
    // The 400 was not retried: the next windows' requests are new ones.
    a.send_tcp("ox.third:1|c\n");
    let seen = wait_until(15, "a request after the rejected one", || {
        let s = rx.seen();
        (s.len() >= 3).then_some(s)
    });
    assert_eq!(names(&seen[2].request), ["ox.third"]);
    // The header's value shows neither in the log nor in print-config.
    assert!(
        !a.logs().iter().any(|l| l.contains("s3cr3t-key")),
        "the header value leaked into the log"
    );
    let out = common::command()
        .args(["print-config", "--config"])
        .arg(a.path("tallyd.toml"))
        .output()
        .expect("print-config");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("[otlp_export]"), "{printed}");
    assert!(
        printed.contains("[otlp_export.headers]\napi-key = \"<redacted>\""),
        "{printed}"
    );
    assert!(!printed.contains("s3cr3t-key"), "{printed}");
}

// ---------------------------------------------------------------------------------------------
// A stand-in OTLP/gRPC receiver (tonic, the official service definition) with scripted answers.

mod grpc {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use tonic::codec::CompressionEncoding;
    use tonic::{Request, Response, Status};

    pub type Answer = Result<ExportMetricsServiceResponse, Status>;
    /// A request's metric names and whether it was answered OK.
    pub type Seen = (Vec<String>, bool);

    #[derive(Clone)]
    pub struct Script {
        pub answers: Arc<Mutex<VecDeque<Answer>>>,
        pub seen: Arc<Mutex<Vec<Seen>>>,
    }

    #[tonic::async_trait]
    impl MetricsService for Script {
        async fn export(
            &self,
            req: Request<ExportMetricsServiceRequest>,
        ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
            let names = super::names(req.get_ref());
            let answer = self
                .answers
                .lock()
                .expect("answers")
                .pop_front()
                .unwrap_or_else(|| Ok(ExportMetricsServiceResponse::default()));
            self.seen
                .lock()
                .expect("seen")
                .push((names, answer.is_ok()));
            answer.map(Response::new)
        }
    }

    struct Incoming(tokio::net::TcpListener);

    impl futures_core::Stream for Incoming {
        type Item = std::io::Result<tokio::net::TcpStream>;
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_accept(cx).map(|r| Some(r.map(|(s, _)| s)))
        }
    }

    /// Serves `script` on a loopback port until the process ends.
    pub fn start(script: Script) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).expect("listener");
                let svc =
                    MetricsServiceServer::new(script).accept_compressed(CompressionEncoding::Gzip);
                let _ = tonic::transport::Server::builder()
                    .serve_with_incoming(svc, Incoming(l))
                    .await;
            });
        });
        addr
    }
}

/// A `google.rpc.Status` with a `RetryInfo` of `secs`, as `grpc-status-details-bin` carries it.
fn retry_info_details(secs: i64) -> Vec<u8> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Dur {
        #[prost(int64, tag = "1")]
        seconds: i64,
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
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(message, repeated, tag = "3")]
        details: Vec<Any>,
    }
    RpcStatus {
        code: 8,
        details: vec![Any {
            t: "type.googleapis.com/google.rpc.RetryInfo".into(),
            v: Info {
                d: Some(Dur { seconds: secs }),
            }
            .encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

#[test]
fn grpc_codes_retry_info_partial_success_and_dead_letters() {
    use tonic::{Code, Status};
    let answers = vec![
        // Retryable only because RetryInfo says when.
        Err(Status::with_details(
            Code::ResourceExhausted,
            "slow down",
            retry_info_details(1).into(),
        )),
        Err(Status::unavailable("restarting")),
        Ok(ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 3,
                error_message: "3 points out of order".into(),
            }),
        }),
        Err(Status::invalid_argument("bad request")),
    ];
    let script = grpc::Script {
        answers: Arc::new(Mutex::new(answers.into())),
        seen: Arc::default(),
    };
    let addr = grpc::start(script.clone());
    let a = Tallyd::start(&format!(
        r#"
[otlp_export]
enabled = true
protocol = "grpc"
endpoint = "http://{addr}"
[gps]
enabled = false
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "300ms"
"#
    ));
    a.send_tcp("ox.first:1|c\n");
    wait_until(20, "the first request delivered", || {
        let s = script.seen.lock().expect("seen").clone();
        (s.len() >= 3).then_some(())
    });
    a.send_tcp("ox.second:1|c\n");
    let m = a.wait_metrics(
        |m| value(m, "tallyd_forwarder_dead_lettered_total{queue=\"otlp\"}") == Some(1.0),
        "the INVALID_ARGUMENT request dead-lettered",
    );
    let seen = script.seen.lock().expect("seen").clone();
    let first = vec!["ox.first".to_string()];
    assert_eq!(
        seen[..3],
        [
            (first.clone(), false),
            (first.clone(), false),
            (first, true)
        ],
        "RESOURCE_EXHAUSTED with RetryInfo and UNAVAILABLE are retried, then accepted once"
    );
    assert_eq!(seen[3], (vec!["ox.second".to_string()], false));
    assert_eq!(
        value(&m, "tallyd_forwarder_retries_total{queue=\"otlp\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "tallyd_otlp_export_rejected_points_total"),
        Some(3.0),
        "{m}"
    );
    let (_, body) = a.get("/admin/queue/stats");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["queues"]["otlp"]["dlq_size"], 1, "{body}");
    // Not retried: the next request is a new window's.
    a.send_tcp("ox.third:1|c\n");
    let seen = wait_until(15, "the next request", || {
        let s = script.seen.lock().expect("seen").clone();
        (s.len() >= 5).then_some(s)
    });
    assert_eq!(seen[4], (vec!["ox.third".to_string()], true));
}

// ---------------------------------------------------------------------------------------------
// TLS: B's OTLP listeners with a certificate signed by a test CA that A trusts through
// otlp_export.tls_ca_file (and only through it: the built-in roots do not know it).

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (CA file, server certificate, server key) for 127.0.0.1.
fn test_ca(dir: &std::path::Path) -> (String, String, String) {
    let p = |n: &str| dir.join(n).display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=tallyd test CA"];
    ca.extend(ec);
    let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
    ca.extend(["-keyout", &ca_key, "-out", &ca_pem]);
    openssl(&ca);
    let (key, csr, cert, ext) = (p("key.pem"), p("leaf.csr"), p("cert.pem"), p("ext.cnf"));
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    let mut req = vec!["req", "-subj", "/CN=127.0.0.1"];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr]);
    openssl(&req);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca_pem, cert, key)
}

fn tls_roundtrip(protocol: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = test_ca(dir.path());
    let b = Tallyd::start(&format!(
        "[otlp]\n{B_RENAMES}\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n"
    ));
    let target = match protocol {
        "grpc" => b.otlp_grpc.expect("gRPC listener"),
        _ => b.otlp_http.expect("HTTP listener"),
    };
    let endpoint = format!("https://{target}");
    let a = exporter_with(
        protocol,
        &endpoint,
        "gzip",
        &format!("tls_ca_file = {ca:?}"),
    );
    a.send_tcp("ox.tls:6|c|#env:prod\nox.tls_temp:3.25|g\n");
    a.wait_value("ox_tls_total{env=\"prod\"}", 6.0);
    b.wait_value("ox_tls_total{env=\"prod\"}", 6.0);
    b.wait_value("ox_tls_temp", 3.25);

    // Without the CA file the certificate is not trusted: retried, never delivered, never
    // dead-lettered.
    let c = exporter(protocol, &endpoint, "gzip");
    c.send_tcp("ox.untrusted:1|c\n");
    let m = c.wait_metrics(
        |m| {
            value(
                m,
                "tallyd_forwarder_failures_total{queue=\"otlp\",class=\"connection\"}",
            )
            .unwrap_or(0.0)
                >= 1.0
        },
        "a refused TLS handshake",
    );
    assert_eq!(
        value(&m, "tallyd_forwarder_dead_lettered_total{queue=\"otlp\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(value(&b.metrics(), "ox_untrusted_total"), None);
}

#[test]
fn https_with_a_ca_file() {
    tls_roundtrip("http/protobuf");
}

#[test]
fn grpc_over_tls_with_a_ca_file() {
    tls_roundtrip("grpc");
}

/// The `ox.lat` histogram points of the accepted requests.
fn timer_points(seen: &[Seen]) -> Vec<opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint> {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    seen.iter()
        .filter(|s| s.status == 200)
        .flat_map(|s| &s.request.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter(|m| m.name == "ox.lat")
        .flat_map(|m| {
            assert_eq!(m.unit, "ms");
            match &m.data {
                Some(Data::Histogram(h)) => h.data_points.clone(),
                other => panic!("not a histogram: {other:?}"),
            }
        })
        .collect()
}

#[test]
fn retry_after_is_honoured() {
    // 503 with Retry-After: 1, then accepted. The queue's own backoff is at most 300 ms, so a
    // second attempt a second later is Retry-After's doing.
    let rx = StandIn::start(vec![(503, Vec::new(), "retry-after: 1\r\n")]);
    let a = Tallyd::start(&format!(
        r#"
[otlp_export]
enabled = true
endpoint = "http://{}"
[gps]
enabled = false
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "300ms"
"#,
        rx.addr
    ));
    a.send_tcp("ox.later:5|c\nox.lat:2|ms\nox.lat:9|ms\nox.lat:0.25|ms\n");
    let seen = wait_until(15, "the retried request accepted", || {
        let s = rx.seen();
        (s.len() >= 2).then_some(s)
    });
    assert_eq!((seen[0].status, seen[1].status), (503, 200));
    assert_eq!(seen[0].request, seen[1].request, "the same request again");
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    // What a receiver gets for a timer: count, sum, min and max exact (the samples may span
    // two windows, so the accepted points are added up), unit ms, the window's times.
    let seen = wait_until(10, "all three timer samples accepted", || {
        let s = rx.seen();
        (timer_points(&s).iter().map(|p| p.count).sum::<u64>() == 3).then_some(s)
    });
    let points = timer_points(&seen);
    assert_eq!(points.iter().filter_map(|p| p.sum).sum::<f64>(), 11.25);
    let min = points
        .iter()
        .filter_map(|p| p.min)
        .fold(f64::INFINITY, f64::min);
    let max = points
        .iter()
        .filter_map(|p| p.max)
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!((min, max), (0.25, 9.0));
    for p in &points {
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
        assert!(p.start_time_unix_nano < p.time_unix_nano, "{p:?}");
    }
    let res = seen[1].request.resource_metrics[0]
        .resource
        .as_ref()
        .expect("resource");
    assert!(
        res.attributes.iter().any(|kv| kv.key == "host.name"),
        "{res:?}"
    );
    let m = a.wait_metrics(
        |m| value(m, "tallyd_forwarder_queue_depth{queue=\"otlp\"}") == Some(0.0),
        "the queue empty",
    );
    assert_eq!(
        value(&m, "tallyd_forwarder_retries_total{queue=\"otlp\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "tallyd_forwarder_failures_total{queue=\"otlp\",class=\"5xx\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

fn string_attr(
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    kvs.iter()
        .find(|k| k.key == key)
        .and_then(|k| match k.value.as_ref()?.value.as_ref()? {
            V::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

#[test]
fn received_resource_and_scope_are_exported_statsd_stays_under_tallyd() {
    received_resource(true);
}

#[test]
fn received_resource_false_keeps_every_tag_on_the_points() {
    received_resource(false);
}

fn received_resource(keep: bool) {
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let rx = StandIn::start(Vec::new());
    let a = Tallyd::start(&format!(
        r#"
[otlp]
attribute_tags = ["service.name=service", "host.name=host"]
scope_name_tag = "otel.scope"
[otlp_export]
enabled = true
endpoint = "http://{}"
service_name = "e2e"
received_resource = {keep}
[queue]
directory = "@DIR@/queue"
"#,
        rx.addr
    ));
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "cart"), kv("host.name", "db-7")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "io.example.cart".into(),
                    ..Default::default()
                }),
                metrics: vec![Metric {
                    name: "ox.rx".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv("route", "/a")],
                            time_unix_nano: 1,
                            value: Some(number_data_point::Value::AsDouble(2.5)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, _, body) = common::http_bytes(
        a.otlp_http.expect("OTLP/HTTP listener"),
        "POST",
        "/v1/metrics",
        &[("content-type", "application/x-protobuf")],
        &req.encode_to_vec(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    a.send_tcp("ox.local:1|c|#route:/b\n");
    // (resource, scope name, point attribute keys) of each exported point, by metric name.
    let find = |seen: &[Seen], name: &str| {
        seen.iter()
            .flat_map(|s| &s.request.resource_metrics)
            .flat_map(|rm| rm.scope_metrics.iter().map(move |sm| (rm, sm)))
            .flat_map(|(rm, sm)| sm.metrics.iter().map(move |m| (rm, sm, m)))
            .find(|(_, _, m)| m.name == name)
            .map(|(rm, sm, m)| {
                let attrs = match &m.data {
                    Some(metric::Data::Gauge(g)) => g.data_points[0].attributes.clone(),
                    Some(metric::Data::Sum(g)) => g.data_points[0].attributes.clone(),
                    other => panic!("{other:?}"),
                };
                (
                    rm.resource.clone().expect("resource").attributes,
                    sm.scope.clone().expect("scope").name,
                    attrs.into_iter().map(|k| k.key).collect::<Vec<_>>(),
                )
            })
    };
    let seen = wait_until(15, "both points exported", || {
        let s = rx.seen();
        (find(&s, "ox.rx").is_some() && find(&s, "ox.local").is_some()).then_some(s)
    });
    let (res, scope, mut attrs) = find(&seen, "ox.rx").expect("ox.rx");
    if keep {
        assert_eq!(string_attr(&res, "service.name").as_deref(), Some("cart"));
        assert_eq!(string_attr(&res, "host.name").as_deref(), Some("db-7"));
        assert_eq!(scope, "io.example.cart");
        assert_eq!(
            attrs,
            ["route"],
            "only the point's own attribute stays on it"
        );
    } else {
        assert_eq!(string_attr(&res, "service.name").as_deref(), Some("e2e"));
        assert_eq!(scope, "tallyd");
        attrs.sort();
        assert_eq!(attrs, ["host", "otel.scope", "route", "service"]);
    }
    let (res, scope, attrs) = find(&seen, "ox.local").expect("ox.local");
    assert_eq!(string_attr(&res, "service.name").as_deref(), Some("e2e"));
    let host = string_attr(&res, "host.name").expect("A's host.name");
    assert_ne!(host, "db-7");
    assert_eq!(scope, "tallyd");
    assert_eq!(attrs, ["route"]);
}
