//! Prometheus remote write end to end.
//!
//! - A real Prometheus server (Debian package `prometheus`, run with
//!   `--web.enable-remote-write-receiver`) receives StatsD traffic through tallyd, and its
//!   query API returns exactly the counter, gauge and summary values tallyd's `/metrics` shows.
//!   The binary is required: CI installs it; a missing binary fails the test with instructions.
//! - A local stand-in receiver, written from the remote write 1.0 spec (it checks the headers,
//!   the snappy block body, the protobuf and the label rules, and answers 204), injects faults:
//!   a 503 is retried and the request is then accepted exactly once; a 400 sends the request to
//!   the dead-letter queue and is never retried.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http_request, start_external, External, Tallyd};
use prost::Message as _;
use serde_json::Value;

/// The remote write 1.0 messages, written from the spec for the stand-in.
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// A real Prometheus.

/// `PROMETHEUS_BIN`, else `/usr/bin/prometheus` (Debian) or `prometheus` on PATH.
fn prometheus_bin() -> String {
    if let Ok(b) = std::env::var("PROMETHEUS_BIN") {
        return b;
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').chain(["/usr/bin"]) {
        let p = std::path::Path::new(dir).join("prometheus");
        if p.is_file() {
            return p.display().to_string();
        }
    }
    panic!(
        "the Prometheus server binary was not found: install it with `apt-get update && apt-get \
         install -y prometheus` (CI does this; tests/run.sh too), or set PROMETHEUS_BIN to its path"
    );
}

fn start_prometheus() -> External {
    let bin = prometheus_bin();
    start_external("prometheus", &bin, 30, |dir, addr| {
        // No scrape jobs: everything it stores comes through remote write.
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            "global:\n  evaluation_interval: 1h\nscrape_configs: []\n",
        )
        .expect("write config");
        vec![
            "--web.enable-remote-write-receiver".into(),
            format!("--web.listen-address={addr}"),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--config.file={}", cfg.display()),
        ]
    })
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The results of an instant query: (labels, value) pairs.
fn query(p: &External, q: &str) -> Vec<(HashMap<String, String>, String)> {
    let path = format!("/api/v1/query?query={}", percent_encode(q));
    let (code, body) = http_request(p.addr, "GET", &path, &[], "");
    assert_eq!(code, 200, "{q}: {body}");
    let v: Value = serde_json::from_str(&body).expect("query json");
    v["data"]["result"]
        .as_array()
        .expect("vector result")
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .expect("metric")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            (
                labels,
                r["value"][1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits (bounded) until `q` returns exactly one series with value `want`; returns its labels.
fn wait_query(p: &External, q: &str, want: &str) -> HashMap<String, String> {
    let mut last;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        last = query(p, q);
        if last.len() == 1 && last[0].1 == want {
            return last.remove(0).0;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus query {q} did not return {want}; last result {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn statsd_traffic_lands_in_a_real_prometheus() {
    let prom = start_prometheus();
    let t = Tallyd::start(&format!(
        r#"
[remote_write]
url = "http://{}/api/v1/write"
external_labels = {{ cluster = "e2e" }}
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "1s"
"#,
        prom.addr
    ));
    t.send_tcp("rw.hits:3|c|#env:prod\nrw.temp:21.5|g\nrw.lat:10|ms\nrw.lat:20|ms\nrw.lat:30|ms\n");
    // tallyd's own view first, so the comparison below is with what /metrics shows.
    t.wait_value("rw_hits_total{env=\"prod\"}", 3.0);
    t.send_tcp("rw.hits:2|c|#env:prod\n");
    let m = t.wait_value("rw_hits_total{env=\"prod\"}", 5.0);
    assert_eq!(
        common::value(&m, "rw_lat{quantile=\"0.5\"}"),
        Some(20.0),
        "{m}"
    );

    // The counter is cumulative across windows, as on /metrics.
    let labels = wait_query(&prom, "rw_hits_total", "5");
    assert_eq!(labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(labels.get("cluster").map(String::as_str), Some("e2e"));
    wait_query(&prom, "rw_temp{cluster=\"e2e\"}", "21.5");
    wait_query(&prom, "rw_lat{quantile=\"0.5\"}", "20");
    wait_query(&prom, "rw_lat{quantile=\"0.99\"}", "30");
    wait_query(&prom, "rw_lat_sum", "60");
    wait_query(&prom, "rw_lat_count", "3");

    // Nothing went to the dead-letter queue, the final (partial) window at shutdown included:
    // Prometheus answers 400 to a second sample at a time it already holds.
    let m = t.metrics();
    let mut t = t;
    assert!(t.terminate().success());
    let rejected: Vec<String> = t
        .logs()
        .into_iter()
        .filter(|l| l.contains("rejected") || l.contains("remote write stopped"))
        .collect();
    assert!(
        rejected.len() == 1 && rejected[0].contains("\"dead_letters\":0"),
        "{rejected:#?}"
    );
    assert_eq!(
        common::value(
            &m,
            "tallyd_forwarder_dead_lettered_total{queue=\"remote_write\"}"
        ),
        Some(0.0),
        "{m}"
    );
    assert!(
        common::value(
            &m,
            "tallyd_forwarder_requests_total{queue=\"remote_write\",result=\"ok\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------------
// A stand-in receiver with faults.

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    payload_id: String,
    headers: HashMap<String, String>,
    /// `__name__{labels} value` per series, when the body was valid.
    series: Vec<String>,
    timestamps: Vec<i64>,
}

#[derive(Clone)]
struct StandIn {
    addr: SocketAddr,
    faults: Arc<Mutex<VecDeque<u16>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    fn start(faults: &[u16]) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = StandIn {
            addr: listener.local_addr().expect("addr"),
            faults: Arc::new(Mutex::new(faults.iter().copied().collect())),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let me = s.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || {
                    let _ = me.serve(stream);
                });
            }
        });
        s
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Keep-alive HTTP/1.1: requests until the peer closes.
    fn serve(&self, stream: std::net::TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut out = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let method = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h)?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            let (mut status, msg, series, timestamps) = match check(&method, &headers, &body) {
                Ok((s, ts)) => (204, String::new(), s, ts),
                Err(e) => (400, e, Vec::new(), Vec::new()),
            };
            if let Some(f) = self.faults.lock().expect("faults").pop_front() {
                status = f;
            }
            self.seen.lock().expect("seen").push(Seen {
                status,
                payload_id: headers
                    .get("x-tallyd-payload-id")
                    .cloned()
                    .unwrap_or_default(),
                headers,
                series,
                timestamps,
            });
            write!(
                out,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{msg}",
                msg.len()
            )?;
            out.flush()?;
        }
    }
}

type Checked = (Vec<String>, Vec<i64>);

/// What a remote write 1.0 receiver requires of a request.
fn check(method: &str, h: &HashMap<String, String>, body: &[u8]) -> Result<Checked, String> {
    let header = |k: &str| h.get(k).map(String::as_str).unwrap_or_default();
    if method != "POST" {
        return Err(format!("method {method}"));
    }
    if header("content-encoding") != "snappy"
        || header("content-type") != "application/x-protobuf"
        || header("x-prometheus-remote-write-version") != "0.1.0"
        || header("user-agent").is_empty()
    {
        return Err(format!("headers {h:?}"));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("not snappy block format: {e}"))?;
    let req = wire::WriteRequest::decode(raw.as_slice()).map_err(|e| e.to_string())?;
    let mut series = Vec::new();
    let mut ts = Vec::new();
    for s in req.timeseries {
        let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
        if names.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("labels not sorted or repeated: {names:?}"));
        }
        if s.labels
            .iter()
            .any(|l| l.name.is_empty() || l.value.is_empty())
        {
            return Err("empty label".into());
        }
        let name = s
            .labels
            .iter()
            .find(|l| l.name == "__name__")
            .ok_or("no __name__")?;
        let rest: Vec<String> = s
            .labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| format!("{}=\"{}\"", l.name, l.value))
            .collect();
        for sample in &s.samples {
            series.push(format!(
                "{}{{{}}} {}",
                name.value,
                rest.join(","),
                sample.value
            ));
            ts.push(sample.timestamp);
        }
    }
    Ok((series, ts))
}

fn stand_in_config(url: &str) -> String {
    format!(
        r#"
[remote_write]
url = "{url}"
bearer_token = "s3cret"
headers = {{ "X-Scope-OrgID" = "tenant-1" }}
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "200ms"
"#
    )
}

#[test]
fn server_error_is_retried_and_delivered_once() {
    let rx = StandIn::start(&[503]);
    let t = Tallyd::start(&stand_in_config(&format!("http://{}/push", rx.addr)));
    t.send_tcp("rw.fault:7|g|#zone:a\n");
    let seen = wait_until(15, "an accepted request carrying the gauge", || {
        let s = rx.seen();
        s.iter()
            .any(|r| r.status == 204 && r.series.iter().any(|l| l == "rw_fault{zone=\"a\"} 7"))
            .then_some(s)
    });
    let first = &seen[0];
    assert_eq!(first.status, 503);
    assert_eq!(first.headers["authorization"], "Bearer s3cret");
    assert_eq!(first.headers["x-scope-orgid"], "tenant-1");
    // The refused request came again and was accepted; no request was accepted twice.
    let retried: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.payload_id == first.payload_id)
        .collect();
    assert_eq!(
        retried.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 204]
    );
    let mut accepted: Vec<&str> = seen
        .iter()
        .filter(|r| r.status == 204)
        .map(|r| r.payload_id.as_str())
        .collect();
    let n = accepted.len();
    accepted.sort_unstable();
    accepted.dedup();
    assert_eq!(accepted.len(), n, "a request was accepted twice: {seen:#?}");
    // Windows arrive in time order.
    let ts: Vec<i64> = seen
        .iter()
        .filter(|r| r.status == 204)
        .filter_map(|r| r.timestamps.first().copied())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    let m = t.wait_metrics(
        |m| common::value(m, "tallyd_forwarder_retries_total{queue=\"remote_write\"}") == Some(1.0),
        "one retry",
    );
    assert_eq!(
        common::value(
            &m,
            "tallyd_forwarder_failures_total{queue=\"remote_write\",class=\"5xx\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn client_error_goes_to_the_dead_letter_queue() {
    let rx = StandIn::start(&[400]);
    let t = Tallyd::start(&stand_in_config(&format!("http://{}/push", rx.addr)));
    t.send_tcp("rw.bad:1|c\n");
    let seen = wait_until(15, "a request after the rejected one", || {
        let s = rx.seen();
        s.iter().any(|r| r.status == 204).then_some(s)
    });
    let rejected = &seen[0];
    assert_eq!(rejected.status, 400);
    assert_eq!(
        seen.iter()
            .filter(|r| r.payload_id == rejected.payload_id)
            .count(),
        1,
        "a 400 must not be retried"
    );
    let stats = wait_until(10, "the dead letter in /admin/queue/stats", || {
        let (code, body) = t.get("/admin/queue/stats");
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let q = v["queues"]["remote_write"].clone();
        (q["dlq_size"] == 1).then_some(q)
    });
    assert_eq!(stats["dead_lettered"], 1, "{stats}");
    let m = t.metrics();
    assert_eq!(
        common::value(
            &m,
            "tallyd_forwarder_dead_lettered_total{queue=\"remote_write\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        common::value(&m, "tallyd_forwarder_retries_total{queue=\"remote_write\"}"),
        Some(0.0),
        "{m}"
    );
}
