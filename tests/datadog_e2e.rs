//! End-to-end: the real binary sends to a local Datadog intake stand-in (tests/common/intake.rs)
//! over real loopback HTTP. DogStatsD traffic in, exact series, sketches, checks and events out;
//! outages, faults, kill -9 and the dead-letter queue.

mod common;

use std::time::{Duration, Instant};

use common::intake::{sketch_key, Fault, Intake};
use common::{merge, Tallyd, BASE_CONFIG};

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// tallyd pointed at `intake`, flushing every second, with short backoffs and timeouts.
fn config(intake: &Intake, queue_dir: &str, extra: &str) -> String {
    let dd = format!(
        r#"
[aggregate]
flush_interval = "1s"
[datadog]
api_key = "{KEY}"
url = "{}"
hostname = "test-host"
env = "ci"
tags = ["team:core"]
request_timeout = "500ms"
[queue]
directory = "{queue_dir}"
backoff_initial = "50ms"
backoff_max = "200ms"
"#,
        intake.url()
    );
    merge(&merge(BASE_CONFIG, &dd), extra)
}

fn start(intake: &Intake, extra: &str) -> Tallyd {
    Tallyd::start_raw(&config(intake, "@DIR@/queue", extra), &[])
}

fn stats(t: &Tallyd) -> serde_json::Value {
    let (code, body) = t.get("/admin/queue/stats");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).expect("stats json")["queues"]["datadog"]
        .clone()
}

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn dogstatsd_traffic_arrives_as_the_agent_would_send_it() {
    let intake = Intake::start(KEY);
    let t = start(&intake, "");
    // One packet, one line per metric: each lands in a single window.
    t.send_udp(
        "hits:3|c|#route:/a\n\
         temp:21.5|g\n\
         users:al|s\nusers:bo|s\nusers:al|s\n\
         lat:10:20:30:40|ms|#db:main\n\
         moved:5|c|#host:other-box\n\
         dist:1:2:3:4:5:6:7:8:9:10|d|#shard:1\n\
         _e{5,4}:title|text|#a:b|t:warning|p:low|k:agg1\n\
         _sc|db.up|2|#env:prod|m:down again\n",
    );
    intake.wait(15, "every kind of payload", |a| {
        let names = ["hits", "temp", "users", "lat.max", "moved"];
        names
            .iter()
            .all(|n| a.series.iter().any(|s| s.metric == *n))
            && !a.sketches.is_empty()
            && !a.checks.is_empty()
            && !a.events.is_empty()
    });
    let a = intake.accepted();
    let find = |m: &str| {
        a.series
            .iter()
            .find(|s| s.metric == m)
            .unwrap_or_else(|| panic!("{m}"))
    };

    let hits = find("hits");
    assert_eq!(
        (hits.mtype, hits.interval, hits.points[0].value),
        (2, 1, 3.0),
        "counter = RATE per second"
    );
    assert_eq!(hits.tags, vec!["route:/a", "team:core", "env:ci"]);
    assert_eq!(
        (
            hits.resources[0].rtype.as_str(),
            hits.resources[0].name.as_str()
        ),
        ("host", "test-host")
    );
    assert_eq!(
        (find("temp").mtype, find("temp").points[0].value),
        (3, 21.5)
    );
    assert_eq!(
        (find("users").mtype, find("users").points[0].value),
        (3, 2.0)
    );
    assert_eq!(
        find("moved").resources[0].name,
        "other-box",
        "host: tag sets the host"
    );
    assert!(!find("moved").tags.iter().any(|t| t.starts_with("host:")));
    let lat = |suffix: &str| {
        let s = find(&format!("lat{suffix}"));
        assert_eq!(s.tags, vec!["db:main", "team:core", "env:ci"]);
        (s.mtype, s.points[0].value)
    };
    assert_eq!(lat(".max"), (3, 40.0));
    assert_eq!(lat(".median"), (3, 20.0));
    assert_eq!(lat(".avg"), (3, 25.0));
    assert_eq!(lat(".count"), (2, 4.0));
    assert_eq!(lat(".95percentile"), (3, 40.0));
    assert!(!a
        .series
        .iter()
        .any(|s| s.metric == "lat" || s.metric == "lat.min" || s.metric == "dist"));

    let sk = &a.sketches[0];
    assert_eq!(
        (sk.metric.as_str(), sk.host.as_str()),
        ("dist", "test-host")
    );
    assert_eq!(sk.tags, vec!["shard:1", "team:core", "env:ci"]);
    assert!(sk.legacy_distributions.is_empty());
    let d = &sk.dogsketches[0];
    assert_eq!(
        (d.cnt, d.min, d.max, d.sum, d.avg),
        (10, 1.0, 10.0, 55.0, 5.5)
    );
    let want: Vec<i32> = (1..=10).map(|v| sketch_key(f64::from(v))).collect();
    assert_eq!(d.k, want);
    assert_eq!(d.n, vec![1; 10]);

    let c = &a.checks[0];
    assert_eq!(c["check"], "db.up");
    assert_eq!(c["status"], 2);
    assert_eq!(c["host_name"], "test-host");
    assert_eq!(c["message"], "down again");
    assert_eq!(
        c["tags"],
        serde_json::json!(["env:prod", "team:core", "env:ci"])
    );
    let e = &a.events[0];
    assert_eq!(
        (e["title"].as_str(), e["text"].as_str()),
        (Some("title"), Some("text"))
    );
    assert_eq!(
        (e["alert_type"].as_str(), e["priority"].as_str()),
        (Some("warning"), Some("low"))
    );
    assert_eq!(e["aggregation_key"], "agg1");
    assert_eq!(e["tags"], serde_json::json!(["a:b", "team:core", "env:ci"]));
    drop(a);

    // Headers and encodings as sent.
    let seen = intake.seen();
    let series_req = seen
        .iter()
        .find(|s| s.path == "/api/v2/series" && s.status == 202)
        .expect("series request");
    let h = |k: &str| {
        series_req
            .headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(h("dd-api-key"), KEY);
    assert_eq!(h("content-encoding"), "zstd");
    assert_eq!(h("content-type"), "application/x-protobuf");
    assert_eq!(h("dd-agent-version"), env!("CARGO_PKG_VERSION"));
    assert!(h("user-agent").starts_with("tallyd/"));

    let text = t.metrics();
    assert!(
        common::value(
            &text,
            "tallyd_forwarder_payloads_sent_total{queue=\"datadog\"}"
        )
        .unwrap_or(0.0)
            >= 4.0,
        "{text}"
    );
    let (code, body) = t.get("/health");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"datadog\":{\"status\":\"ok\""), "{body}");
}

#[test]
fn gzip_and_deflate_are_selectable() {
    for (name, _) in [("gzip", ()), ("deflate", ())] {
        let intake = Intake::start(KEY);
        let t = start(&intake, &format!("[datadog]\ncompression = \"{name}\"\n"));
        t.send_udp("z.count:2|c\n_sc|z.check|0\n");
        intake.wait(15, "series and check", |a| {
            a.series.iter().any(|s| s.metric == "z.count") && !a.checks.is_empty()
        });
        let seen = intake.seen();
        assert!(seen.iter().filter(|s| s.status == 202).all(|s| s
            .headers
            .iter()
            .any(|(k, v)| k == "content-encoding" && v == name)));
    }
}

#[test]
fn outage_with_traffic_flowing_loses_nothing_and_duplicates_nothing() {
    let intake = Intake::start(KEY);
    let t = start(&intake, "");
    intake.set_fault(Fault::Status(503));
    let mut sent = 0;
    let phases = [
        Fault::Status(503),
        Fault::Drop,
        Fault::Slow(Duration::from_millis(800)),
        Fault::TooMany { retry_after: 1 },
        Fault::Status(500),
    ];
    let failures = |class: &str| {
        common::value(
            &t.metrics(),
            &format!("tallyd_forwarder_failures_total{{queue=\"datadog\",class=\"{class}\"}}"),
        )
        .unwrap_or(0.0)
    };
    for f in phases {
        let class = match &f {
            Fault::Status(_) => "5xx",
            Fault::Drop => "connection",
            Fault::Slow(_) => "timeout",
            Fault::TooMany { .. } => "4xx",
            _ => "none",
        };
        let before = failures(class);
        intake.set_fault(f);
        // Traffic keeps flowing until the sender has met this fault at least once (bounded),
        // so every failure class is exercised however slow the machine is.
        let deadline = Instant::now() + Duration::from_secs(15);
        for round in 0.. {
            t.send_udp("outage.hits:1|c\n");
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
            if round >= 7 && failures(class) > before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the sender never met a {class} failure"
            );
        }
    }
    wait_until(10, "payloads queued during the outage", || {
        stats(&t)["pending"].as_u64().unwrap_or(0) >= 2
    });
    intake.set_fault(Fault::None);
    wait_until(30, "every point delivered", || {
        intake.counted("outage.hits") >= f64::from(sent)
    });
    // Pending counts a payload until its 2xx is recorded, so once it is 0 every payload that
    // carried outage.hits has been answered: a duplicate would already be counted.
    wait_until(10, "queue drained", || stats(&t)["pending"] == 0);
    assert_eq!(
        intake.counted("outage.hits"),
        f64::from(sent),
        "exactly once"
    );
    let a = intake.accepted();
    let mut ids = a.ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), a.ids.len(), "a payload was delivered twice");
    drop(a);
    assert!(
        intake
            .state
            .dropped_connections
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let text = t.metrics();
    for class in ["5xx", "4xx", "connection", "timeout"] {
        let v = common::value(
            &text,
            &format!("tallyd_forwarder_failures_total{{queue=\"datadog\",class=\"{class}\"}}"),
        );
        assert!(v.unwrap_or(0.0) > 0.0, "class {class}: {text}");
    }
    assert!(
        common::value(&text, "tallyd_forwarder_retries_total{queue=\"datadog\"}").unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(
        common::value(
            &text,
            "tallyd_forwarder_payloads_dropped_total{queue=\"datadog\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn retry_after_is_honoured() {
    let intake = Intake::start(KEY);
    intake.set_fault(Fault::TooMany { retry_after: 2 });
    let t = start(&intake, "");
    t.send_udp("ra.hits:1|c\n");
    wait_until(10, "a 429", || {
        intake.seen().iter().any(|s| s.status == 429)
    });
    intake.set_fault(Fault::None);
    intake.wait(15, "delivery after Retry-After", |a| {
        a.series.iter().any(|s| s.metric == "ra.hits")
    });
    let seen = intake.seen();
    let first = seen.iter().find(|s| s.status == 429).expect("429");
    let next = seen
        .iter()
        .find(|s| s.at > first.at && s.payload_id == first.payload_id && s.status != 429)
        .expect("retry of the same payload");
    // Backoff alone would have retried after at most 200 ms.
    assert!(
        next.at - first.at >= Duration::from_millis(1900),
        "retried after {:?}",
        next.at - first.at
    );
    drop(t);
}

#[test]
fn kill9_while_the_intake_is_down_then_restart_delivers_the_queue() {
    let intake = Intake::start(KEY);
    intake.set_fault(Fault::Drop);
    let dir = tempfile::tempdir().expect("tempdir");
    let qdir = dir.path().join("queue").display().to_string();
    let mut t = Tallyd::start_raw(&config(&intake, &qdir, ""), &[]);
    // Spread over several one-second windows, so several payloads.
    for _ in 0..5 {
        t.send_udp("k9.hits:2|c\n");
        std::thread::sleep(Duration::from_millis(400));
    }
    // Every point is on disk before the kill (read back from the queue files themselves), so
    // the exact count after the restart is not a race with the last flush.
    let pending = dir.path().join("queue/datadog/pending");
    wait_until(15, "all 10 points in the queue files", || {
        queued_count(&pending, "k9.hits") == 10.0
    });
    // The sender did try, and the intake answered nothing.
    assert!(
        intake
            .state
            .dropped_connections
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    t.kill9();
    let files = std::fs::read_dir(&pending).expect("pending dir").count();
    assert!(files >= 2, "{files} files on disk");
    assert_eq!(
        queued_count(&pending, "k9.hits"),
        10.0,
        "kill -9 lost a file"
    );

    intake.set_fault(Fault::None);
    let t2 = Tallyd::start_raw(&config(&intake, &qdir, ""), &[]);
    wait_until(20, "queued points delivered after restart", || {
        intake.counted("k9.hits") >= 10.0
    });
    // Pending counts a payload until its 2xx: at 0, every old file has been answered.
    wait_until(10, "queue empty", || stats(&t2)["pending"] == 0);
    assert_eq!(intake.counted("k9.hits"), 10.0, "delivered exactly once");
    let a = intake.accepted();
    let mut ids = a.ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), a.ids.len(), "a payload was delivered twice");
}

/// The count that the queued series payloads in `pending` carry for RATE series `metric`
/// (value × interval summed), decoded with the intake's own protobuf types.
fn queued_count(pending: &std::path::Path, metric: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir(pending) else {
        return 0.0;
    };
    let mut sum = 0.0;
    for entry in dir.flatten() {
        // A file may be delivered and removed while this reads; the caller polls again.
        let Ok(raw) = std::fs::read(entry.path()) else {
            continue;
        };
        let (meta, body) = tallyd::queue::store::decode(&raw).expect("a readable queue file");
        if meta.endpoint != "/api/v2/series" {
            continue;
        }
        assert_eq!(meta.content_encoding, "zstd", "{meta:?}");
        let proto = zstd::decode_all(body.as_slice()).expect("zstd payload");
        let p: common::intake::InMetricPayload =
            prost::Message::decode(proto.as_slice()).expect("series payload");
        sum += p
            .series
            .iter()
            .filter(|s| s.metric == metric)
            .flat_map(|s| s.points.iter().map(move |pt| pt.value * s.interval as f64))
            .sum::<f64>();
    }
    sum
}

#[test]
fn a_400_goes_to_the_dlq_and_process_dlq_moves_it_back() {
    let intake = Intake::start(KEY);
    intake.set_fault(Fault::StatusFor("/api/v2/series", 400));
    let t = start(&intake, "");
    t.send_udp("dlq.hits:7|c\n");
    wait_until(15, "a dead letter", || {
        stats(&t)["dlq_size"].as_u64().unwrap_or(0) >= 1
    });

    let (code, body) = t.post("/admin/queue/process-dlq/datadog?dry_run=true");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let item = &v["items"][0];
    assert_eq!(item["status"], 400);
    assert_eq!(item["endpoint"], "/api/v2/series");
    assert!(
        item["response"]
            .as_str()
            .unwrap_or("")
            .contains("injected rejection"),
        "{body}"
    );
    let (_, health) = t.get("/admin/queue/health");
    assert!(
        health.contains("degraded") && health.contains("dead-letter"),
        "{health}"
    );
    let dlq_before = stats(&t)["dlq_size"].as_u64().unwrap_or(0);

    intake.set_fault(Fault::None);
    let (code, body) = t.post("/admin/queue/process-dlq/datadog?dry_run=false");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(v["requeued"].as_u64().unwrap_or(0) >= dlq_before, "{body}");
    wait_until(15, "the requeued series", || {
        intake.counted("dlq.hits") >= 7.0
    });
    assert_eq!(intake.counted("dlq.hits"), 7.0);
    assert_eq!(stats(&t)["dlq_size"], 0);

    assert_eq!(t.post("/admin/queue/process-dlq/nope").0, 404);
    assert_eq!(
        t.post("/admin/queue/process-dlq/datadog?dry_run=maybe").0,
        400
    );
    let (code, body) = t.post("/admin/queue/force-process/datadog?batch_size=5");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        t.post("/admin/queue/force-process/datadog?batch_size=0").0,
        400
    );
}

#[test]
fn force_process_skips_a_long_backoff() {
    let intake = Intake::start(KEY);
    intake.set_fault(Fault::Status(503));
    let extra = "[queue]\nbackoff_initial = \"1h\"\nbackoff_max = \"1h\"\n";
    let t = start(&intake, extra);
    t.send_udp("fp.hits:4|c\n");
    wait_until(10, "a failed attempt", || {
        intake.seen().iter().any(|s| s.status == 503)
    });
    intake.set_fault(Fault::None);
    // A negative check needs some time to pass: a sender that ignored the backoff (or used
    // the 50 ms default) would have retried several times within it.
    std::thread::sleep(Duration::from_millis(300));
    let posts = intake.seen().len();
    assert_eq!(posts, 1, "one attempt, then the one-hour backoff");
    assert_eq!(
        intake.counted("fp.hits"),
        0.0,
        "still in its one-hour backoff"
    );
    let (code, body) = t.post("/admin/queue/force-process/datadog?batch_size=100");
    assert_eq!(code, 200, "{body}");
    wait_until(10, "forced delivery", || intake.counted("fp.hits") >= 4.0);
}

#[test]
fn an_invalid_key_is_one_log_line_and_an_unhealthy_component() {
    let intake = Intake::start("another-key");
    let t = start(&intake, "");
    wait_until(10, "datadog down in /health", || {
        let (code, body) = t.get("/health");
        code == 503 && body.contains("\"datadog\":{\"status\":\"down\"")
    });
    // Several payloads refused with 403 (traffic keeps coming until then, bounded) ...
    wait_until(20, "three payloads in the dead-letter queue", || {
        t.send_udp("bad.key:1|c\n");
        std::thread::sleep(Duration::from_millis(100));
        stats(&t)["dead_lettered"].as_u64().unwrap_or(0) >= 3
    });
    // ... are one log line: the first rejection is logged before its dead letter is written,
    // so it is in the log now (once the reader thread has it).
    let lines = |what: &str| t.logs().iter().filter(|l| l.contains(what)).count();
    wait_until(5, "the rejection log line", || {
        lines("moved to the dead-letter queue") >= 1
    });
    let logs = t.logs();
    assert_eq!(lines("API key was rejected"), 1, "{logs:#?}");
    assert_eq!(lines("moved to the dead-letter queue"), 1, "{logs:#?}");
    assert!(logs.len() < 40, "log flood: {logs:#?}");
}

#[test]
fn alerts_become_datadog_events_through_the_durable_queue() {
    let intake = Intake::start(KEY);
    // The intake is down when the alert fires: the event must wait in the queue, not vanish.
    intake.set_fault(Fault::Status(503));
    let t = start(
        &intake,
        r#"
[alerts]
default_rules = false
[[alerts.rules]]
name = "QueueBacklog"
metric = "queue.pending"
group_by = ["queue_type"]
warn = 1000.0
critical = 5000.0
message = "{{tags.queue_type}} queue holds {{value}} jobs"
runbook = "https://runbooks.example/queues/{{tags.queue_type}}"
labels = { team = "core" }
[alerts.notifiers.dd]
type = "datadog"
"#,
    );
    t.send_udp("queue.pending:7000|g|#queue_type:email");
    t.wait_metrics(
        |m| {
            common::value(
                m,
                "tallyd_alert_notifications_total{notifier=\"dd\",type=\"datadog\",result=\"sent\"}",
            ) == Some(1.0)
        },
        "the event counted as sent once queued",
    );
    // "Sent" means on disk: the event's file is in the queue while the intake refuses everything.
    let pending = t.dir.path().join("queue/datadog/pending");
    let on_disk = std::fs::read_dir(&pending)
        .expect("pending dir")
        .filter_map(|f| std::fs::read(f.expect("entry").path()).ok())
        .any(|b| String::from_utf8_lossy(&b).contains("[Triggered] QueueBacklog"));
    assert!(
        on_disk,
        "the alert event is queued on disk during the outage"
    );
    intake.set_fault(Fault::None);
    intake.wait(15, "the firing event after the outage", |a| {
        a.events.iter().any(|e| e["alert_type"] == "error")
    });

    // Recovery: a success event in the same aggregation group.
    t.send_udp("queue.pending:10|g|#queue_type:email");
    intake.wait(15, "the recovery event", |a| {
        a.events.iter().any(|e| e["alert_type"] == "success")
    });
    let events = intake.accepted().events.clone();
    assert_eq!(events.len(), 2, "one firing, one recovery: {events:#?}");
    let (fire, resolve) = (&events[0], &events[1]);
    assert_eq!(fire["alert_type"], "error");
    assert_eq!(resolve["alert_type"], "success");
    let key = fire["aggregation_key"].as_str().expect("aggregation_key");
    assert!(
        key.len() == 16 && key.chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );
    assert_eq!(
        resolve["aggregation_key"], key,
        "firing and recovery group together"
    );
    for e in [fire, resolve] {
        assert_eq!(e["host"], "test-host");
        assert_eq!(e["source_type_name"], "tallyd");
        assert_eq!(e["priority"], "normal");
        let tags: Vec<&str> = e["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        for want in [
            "queue_type:email",
            "team:core",
            "alertname:QueueBacklog",
            "severity:critical",
            "env:ci",
        ] {
            assert!(tags.contains(&want), "{want} missing from {tags:?}");
        }
    }
    assert_eq!(
        fire["title"],
        "[Triggered] QueueBacklog (queue_type=email, team=core)"
    );
    assert!(resolve["title"]
        .as_str()
        .expect("title")
        .starts_with("[Recovered] QueueBacklog"));
    let text = fire["text"].as_str().expect("text");
    for want in [
        "email queue holds 7000 jobs",
        "value: 7000",
        "thresholds: warn above 1000, critical above 5000",
        "runbook: https://runbooks.example/queues/email",
    ] {
        assert!(text.contains(want), "{want:?} missing from {text}");
    }
    let fired_at = fire["date_happened"].as_i64().expect("date_happened");
    assert!(resolve["date_happened"].as_i64().expect("date") >= fired_at);

    // The test notification goes the same way and reports that it was queued.
    let (code, body) = t.post("/api/monitoring/alert/test?alert_type=warning&message=hi");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let dd = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["notifier"] == "dd")
        .cloned()
        .expect("dd result");
    assert_eq!(
        (dd["type"].as_str(), dd["ok"].as_bool()),
        (Some("datadog"), Some(true))
    );
    assert!(
        dd["answer"]
            .as_str()
            .expect("answer")
            .contains("queued 1 event"),
        "{dd}"
    );
    intake.wait(15, "the test event", |a| a.events.len() >= 3);
    let test = intake.accepted().events[2].clone();
    assert_eq!(test["alert_type"], "warning");
    assert!(test["title"]
        .as_str()
        .expect("title")
        .starts_with("[Test] "));
    assert!(test["text"].as_str().expect("text").starts_with("hi"));
}

#[test]
fn a_datadog_notifier_without_an_api_key_is_a_config_error() {
    let mut cmd = common::command();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tallyd.toml");
    std::fs::write(
        &path,
        "[alerts.notifiers.events]\ntype = \"datadog\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    let out = cmd
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("alerts.notifiers.events") && err.contains("datadog.api_key"),
        "{err}"
    );
}
