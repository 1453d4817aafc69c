//! Live reload end to end: the real binary under StatsD traffic takes a new rule threshold, a
//! new notifier URL, new percentiles and a new log level on SIGHUP, keeps every count and the
//! state of an alert already firing, reports the keys that need a restart, and rejects an
//! invalid file with the error `check-config` gives while the old configuration keeps running.

mod common;
mod receiver;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::intake::Intake;
use common::remote_write::StandIn;
use common::{command, http_request, merge, value, Tallyd, BASE_CONFIG};
use receiver::{Receiver, Service};
use serde_json::Value;

fn config(warn: f64, url: &str, extra: &str) -> String {
    let rules = format!(
        r#"
[aggregate]
percentiles = [0.5]
[alerts]
default_rules = false
[[alerts.rules]]
name = "Always"
metric = "reload.temp"
warn = 10.0
[[alerts.rules]]
name = "Hot"
metric = "reload.temp"
warn = {warn:.1}
[alerts.notifiers.hook]
type = "webhook"
url = "{url}"
{extra}"#
    );
    merge(BASE_CONFIG, &rules)
}

fn hup(t: &Tallyd) {
    let pid = libc::pid_t::try_from(t.pid()).expect("pid");
    // SAFETY: kill only sends a signal to the child this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

fn health(t: &Tallyd) -> Value {
    serde_json::from_str(&t.get("/health").1).expect("health JSON")
}

/// Waits (at most 10 s) until `/health` shows a reload with `result`.
fn wait_reload(t: &Tallyd, result: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = health(t);
        if h["last_reload"]["result"] == result {
            return h["last_reload"].clone();
        }
        assert!(Instant::now() < deadline, "no {result} reload: {h:#}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn alert_names(reqs: &[receiver::Request]) -> Vec<String> {
    reqs.iter()
        .map(|r| r.json()["alert"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn sighup_applies_a_new_threshold_and_notifier_and_loses_no_count() {
    let rx = Receiver::start();
    let a = rx.route("/a", Service::Webhook, &[]);
    let b = rx.route("/b", Service::Webhook, &[]);
    let t = Tallyd::start_raw(&config(100.0, &a, ""), &[]);

    // Traffic flows through the reload: counter increments and the gauge, from two threads.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let udp = t.udp.expect("udp listener");
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            std::thread::spawn(move || {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Relaxed) && Instant::now() < deadline {
                    for _ in 0..10 {
                        s.send_to(b"reload.hits:1|c\nreload.temp:80|g\nreload.lat:7|ms", udp)
                            .expect("send");
                        sent.fetch_add(1, Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    // Before: Always fires to /a; Hot (warn 100) does not fire.
    let before = rx.wait("/a", "Always firing", |r| {
        alert_names(r).contains(&"Always".to_string())
    });
    assert!(!alert_names(&before).contains(&"Hot".to_string()));
    t.wait_metrics(
        |m| value(m, "reload_lat{quantile=\"0.5\"}").is_some(),
        "the 0.5 quantile",
    );

    // Hot's threshold drops below the gauge, the notifier moves to /b, the percentiles and the
    // log level change, and a listener key changes (it needs a restart).
    let mut text = config(50.0, &b, "");
    text = text.replace("percentiles = [0.5]", "percentiles = [0.9]");
    text = text.replace("level = \"info\"", "level = \"debug\"");
    text = text.replace("udp_receivers = 2", "udp_receivers = 1");
    std::fs::write(t.path("tallyd.toml"), text).expect("rewrite config");
    hup(&t);
    let r = wait_reload(&t, "ok");
    assert_eq!(r["trigger"], "signal");
    let applied: Vec<&str> = r["applied"]
        .as_array()
        .expect("applied")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for key in [
        "aggregate.percentiles",
        "alerts.notifiers",
        "alerts.rules",
        "log.level",
    ] {
        assert!(applied.contains(&key), "{key} applied: {r:#}");
    }
    assert_eq!(
        r["restart_required"],
        serde_json::json!(["statsd.udp_receivers"])
    );

    // The new rule fires, to the new notifier only; Always, already firing, is not notified
    // again as new (its state survived the reload).
    let got = rx.wait("/b", "Hot firing", |r| {
        alert_names(r).contains(&"Hot".to_string())
    });
    assert!(
        !alert_names(&got).contains(&"Always".to_string()),
        "{:?}",
        alert_names(&got)
    );
    let at_a = alert_names(&rx.received("/a"));
    assert!(
        !at_a.contains(&"Hot".to_string()),
        "old notifier got Hot: {at_a:?}"
    );
    t.wait_metrics(
        |m| value(m, "reload_lat{quantile=\"0.9\"}").is_some(),
        "the 0.9 quantile after the reload",
    );
    assert!(
        t.logs().iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "log.level debug took effect"
    );

    // Every increment sent across the reload is counted, exactly.
    stop.store(true, Relaxed);
    for s in senders {
        s.join().expect("sender");
    }
    let n = sent.load(Relaxed) as f64;
    assert!(n > 0.0);
    let m = t.wait_value("reload_hits_total", n);
    assert_eq!(
        value(&m, "tallyd_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "tallyd_config_reloads_total{result=\"invalid\"}"),
        Some(0.0)
    );
    // The restart-only key kept its running value: still two UDP sockets.
    let h = health(&t);
    assert!(
        h["components"]["statsd_udp"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("2 sockets")),
        "{h:#}"
    );
}

#[test]
fn an_invalid_file_is_rejected_as_check_config_says_and_the_old_one_keeps_running() {
    let rx = Receiver::start();
    let a = rx.route("/a", Service::Webhook, &[]);
    let t = Tallyd::start_raw(&config(100.0, &a, ""), &[]);
    let path = t.path("tallyd.toml");
    for (bad, names) in [
        (
            config(50.0, &a, "").replace("percentiles = [0.5]", "percentiles = [1.5]"),
            "aggregate.percentiles",
        ),
        (
            config(50.0, &a, "").replace("[[alerts.rules]]", "[[alerts.rules]]\nbogus = 1"),
            "bogus",
        ),
    ] {
        std::fs::write(&path, bad).expect("write");
        let check = command()
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("check-config");
        assert_eq!(check.status.code(), Some(1));
        let said = String::from_utf8_lossy(&check.stderr).trim().to_string();
        let (code, body) = t.post("/admin/reload");
        assert_eq!(code, 422, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["result"], "invalid");
        let error = v["error"].as_str().expect("error");
        assert_eq!(
            format!("error: {error}"),
            said,
            "same words as check-config"
        );
        assert!(error.contains(names), "{error}");
        assert_eq!(v["trigger"], "api");
    }
    let m = t.metrics();
    assert_eq!(
        value(&m, "tallyd_config_reloads_total{result=\"invalid\"}"),
        Some(2.0)
    );
    assert_eq!(value(&m, "tallyd_alert_rules"), Some(2.0));
    // The old rules still run: Always fires to /a.
    t.send_udp("reload.temp:80|g");
    rx.wait("/a", "Always firing", |r| {
        alert_names(r).contains(&"Always".to_string())
    });
    assert_eq!(health(&t)["last_reload"]["result"], "invalid");
}

#[test]
fn post_admin_reload_is_behind_the_admin_rule() {
    let extra = "[http]\nadmin_token = \"s3cret\"\ntrust_loopback = false\n";
    let t = Tallyd::start(extra);
    let (code, _) = t.post("/admin/reload");
    assert!(code == 401 || code == 403, "no token: {code}");
    let (code, body) = http_request(
        t.http,
        "POST",
        "/admin/reload",
        &[("Authorization", "Bearer s3cret")],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["result"], "ok");
    assert_eq!(v["applied"], serde_json::json!([]));
    assert_eq!(v["restart_required"], serde_json::json!([]));
}

fn rw_config(url: &str, token: &str, tenant: &str) -> String {
    merge(
        BASE_CONFIG,
        &format!(
            r#"
[remote_write]
url = "{url}"
bearer_token = "{token}"
headers = {{ "X-Scope-OrgID" = "{tenant}" }}
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "200ms"
"#
        ),
    )
}

fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_new_remote_write_url_and_credentials_take_the_queued_payloads_along() {
    let (a, b) = (StandIn::start(&[]), StandIn::start(&[]));
    let url_a = format!("http://{}/push", a.addr);
    let t = Tallyd::start_raw(&rw_config(&url_a, "one", "t-1"), &[]);
    t.send_tcp("rw.reload:1|c\n");
    wait_until("A takes the first window", || {
        a.seen()
            .iter()
            .any(|r| r.status == 204 && r.series.iter().any(|l| l == "rw_reload_total{} 1"))
            .then_some(())
    });
    // A fails from now on: what tallyd sends waits in the queue, on disk.
    a.set_status(Some(503));
    t.send_tcp("rw.reload:2|c\n");
    t.wait_metrics(
        |m| {
            value(m, "tallyd_forwarder_queue_depth{queue=\"remote_write\"}")
                .is_some_and(|v| v >= 1.0)
        },
        "payloads queued while A fails",
    );
    let path = t.path("tallyd.toml");
    let text = rw_config(&format!("http://{}/push", b.addr), "two", "t-2")
        .replace("@DIR@", &t.dir.path().display().to_string());
    std::fs::write(path, text).expect("rewrite config");
    let (code, body) = t.post("/admin/reload");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let applied = v["applied"].to_string();
    for key in [
        "remote_write.url",
        "remote_write.bearer_token",
        "remote_write.headers",
    ] {
        assert!(applied.contains(key), "{key}: {v:#}");
    }
    // The payloads A refused go to B with the new credentials, and so does what follows.
    t.send_tcp("rw.reload:4|c\n");
    let seen = wait_until("B takes the whole count", || {
        let s = b.seen();
        s.iter()
            .any(|r| r.status == 204 && r.series.iter().any(|l| l == "rw_reload_total{} 7"))
            .then_some(s)
    });
    assert!(
        seen.iter()
            .any(|r| r.series.iter().any(|l| l == "rw_reload_total{} 3")),
        "the window queued while A failed reached B: {seen:#?}"
    );
    for r in &seen {
        assert_eq!(r.headers["authorization"], "Bearer two");
        assert_eq!(r.headers["x-scope-orgid"], "t-2");
    }
    let after = a.seen().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.seen().len(), after, "nothing more goes to A");
}

fn dd_config(intake: &Intake, tags: &str, env: &str) -> String {
    merge(
        BASE_CONFIG,
        &format!(
            r#"
[aggregate]
flush_interval = "1s"
[datadog]
api_key = "0123456789abcdef0123456789abcdef"
url = "{}"
hostname = "test-host"
env = "{env}"
tags = [{tags}]
[queue]
directory = "@DIR@/queue"
backoff_initial = "50ms"
backoff_max = "200ms"
"#,
            intake.url()
        ),
    )
}

#[test]
fn new_datadog_tags_and_env_apply_from_the_next_window_and_every_count_arrives() {
    let intake = Intake::start("0123456789abcdef0123456789abcdef");
    let t = Tallyd::start_raw(&dd_config(&intake, "\"team:core\"", "ci"), &[]);
    let tagged = |want: &'static [&'static str]| {
        move |a: &common::intake::Accepted| {
            a.series.iter().any(|s| {
                s.metric == "dd.reload" && want.iter().all(|w| s.tags.iter().any(|t| t == w))
            })
        }
    };
    t.send_udp("dd.reload:2|c");
    intake.wait(
        15,
        "the first window, old tags",
        tagged(&["team:core", "env:ci"]),
    );
    let text = dd_config(&intake, "\"team:edge\"", "prod")
        .replace("@DIR@", &t.dir.path().display().to_string());
    std::fs::write(t.path("tallyd.toml"), text).expect("rewrite config");
    hup(&t);
    let r = wait_reload(&t, "ok");
    assert!(r["applied"].to_string().contains("datadog.tags"), "{r:#}");
    assert_eq!(r["restart_required"], serde_json::json!([]));
    t.send_udp("dd.reload:5|c");
    intake.wait(
        15,
        "a window with the new tags",
        tagged(&["team:edge", "env:prod"]),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while intake.counted("dd.reload") < 7.0 {
        assert!(
            Instant::now() < deadline,
            "counted {}",
            intake.counted("dd.reload")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(intake.counted("dd.reload"), 7.0, "nothing counted twice");
    let a = intake.accepted();
    let late: Vec<_> = a
        .series
        .iter()
        .filter(|s| s.metric == "dd.reload" && s.tags.iter().any(|t| t == "team:edge"))
        .collect();
    assert!(
        late.iter()
            .all(|s| !s.tags.iter().any(|t| t == "team:core" || t == "env:ci")),
        "old constant tags gone: {late:?}"
    );
}
