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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::remote_write::{Seen, StandIn};
use common::{start_external, External, Tallyd};
use serde_json::Value;

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
    common::system_tool("PROMETHEUS_BIN", &["prometheus"], "prometheus")
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

/// The results of an instant query: (labels, value) pairs.
/// Waits (bounded) until `q` returns exactly one series with value `want`; returns its labels.
fn wait_query(p: &External, q: &str, want: &str) -> HashMap<String, String> {
    let mut last;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        last = p.query(q);
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
