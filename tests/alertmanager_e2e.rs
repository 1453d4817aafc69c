//! A real Prometheus Alertmanager (Debian package `prometheus-alertmanager`) receives an alert
//! that tallyd fired from StatsD traffic, notifies its own webhook receiver, and then sees the
//! alert resolve. The Alertmanager binary is required: CI installs it; a missing binary fails
//! the test with instructions rather than skipping it.

mod common;
mod receiver;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{http_request, start_external, External, Tallyd};
use receiver::{Receiver, Service};
use serde_json::Value;

/// `ALERTMANAGER_BIN`, else `prometheus-alertmanager` (Debian) or `alertmanager` on PATH.
fn alertmanager_bin() -> String {
    common::system_tool(
        "ALERTMANAGER_BIN",
        &["prometheus-alertmanager", "alertmanager"],
        "prometheus-alertmanager",
    )
}

fn start_alertmanager(webhook: &str) -> External {
    let bin = alertmanager_bin();
    let config = format!(
        "route:\n  receiver: tallyd-test\n  group_by: ['alertname']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: tallyd-test\n    webhook_configs:\n      - url: '{webhook}'\n        send_resolved: true\n"
    );
    start_external("alertmanager", &bin, 20, |dir, addr| {
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(&cfg, config).expect("write config");
        vec![
            format!("--config.file={}", cfg.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address={addr}"),
            "--cluster.listen-address=".into(),
        ]
    })
}

/// Active alerts Alertmanager holds with this alertname.
fn active(am: SocketAddr, name: &str) -> Vec<Value> {
    let (code, body) = http_request(am, "GET", "/api/v2/alerts", &[], "");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("alerts json");
    v.as_array()
        .expect("array")
        .iter()
        .filter(|a| a["labels"]["alertname"] == name)
        .cloned()
        .collect()
}

fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn statsd_traffic_fires_and_resolves_in_a_real_alertmanager() {
    let rx = Receiver::start();
    let hook = rx.route("/am-webhook", Service::Webhook, &[]);
    let am = start_alertmanager(&hook);
    let t = Tallyd::start(&format!(
        r#"
[alerts]
default_rules = false
[[alerts.rules]]
name = "CheckoutSlow"
metric = "checkout.latency"
aggregation = "p95"
group_by = ["service"]
warn = 500.0
critical = 800.0
message = "p95 checkout latency of {{{{tags.service}}}} is {{{{value}}}} ms"
[alerts.notifiers.am]
type = "alertmanager"
url = "http://{}"
resend_interval = "1s"
"#,
        am.addr
    ));

    t.send_udp("checkout.latency:900|ms|#service:cart\ncheckout.latency:950|ms|#service:cart\ncheckout.latency:20|ms|#service:search");
    wait_until("the alert in Alertmanager", || {
        !active(am.addr, "CheckoutSlow").is_empty()
    });
    let alerts = active(am.addr, "CheckoutSlow");
    assert_eq!(
        alerts.len(),
        1,
        "only the cart service is slow: {alerts:#?}"
    );
    let a = &alerts[0];
    assert_eq!(a["labels"]["service"], "cart");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["source"], "tallyd");
    assert_eq!(a["status"]["state"], "active");
    assert_eq!(
        a["annotations"]["summary"],
        "p95 checkout latency of cart is 950 ms"
    );
    // Alertmanager routes it to its receiver.
    let got = rx.wait("/am-webhook", "Alertmanager's firing notification", |r| {
        r.iter().any(|x| x.json()["status"] == "firing")
    });
    let n = got
        .iter()
        .find(|x| x.json()["status"] == "firing")
        .expect("firing")
        .json();
    assert_eq!(n["alerts"][0]["labels"]["alertname"], "CheckoutSlow");
    assert_eq!(n["alerts"][0]["labels"]["service"], "cart");

    // Fast again: tallyd resolves it, Alertmanager drops it and sends the recovery.
    t.send_udp("checkout.latency:40|ms|#service:cart");
    wait_until("the alert to resolve in Alertmanager", || {
        active(am.addr, "CheckoutSlow").is_empty()
    });
    let got = rx.wait("/am-webhook", "Alertmanager's resolved notification", |r| {
        r.iter().any(|x| x.json()["status"] == "resolved")
    });
    let n = got
        .iter()
        .find(|x| x.json()["status"] == "resolved")
        .expect("resolved")
        .json();
    assert_eq!(n["alerts"][0]["labels"]["service"], "cart");
    assert_eq!(n["alerts"][0]["status"], "resolved");
}
