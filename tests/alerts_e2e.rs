//! Alerting end to end: the real binary fires alerts from StatsD traffic and delivers them to
//! local stand-ins of a webhook, Slack, PagerDuty and Alertmanager (tests/receiver), which
//! check each payload the way the real service documents it.

mod common;
mod receiver;

use common::{http_request, value, Tallyd};
use receiver::{Receiver, Service};
use serde_json::Value;

const PD_KEY: &str = "0123456789abcdef0123456789abcdef";

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
}

fn ms(v: &Value) -> u128 {
    let t = humantime::parse_rfc3339(v.as_str().expect("time string")).expect("rfc3339");
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("after epoch")
        .as_millis()
}

/// `tallyd_alert_evaluations_total` now.
fn evaluations(t: &Tallyd) -> f64 {
    value(&t.metrics(), "tallyd_alert_evaluations_total").unwrap_or(0.0)
}

/// Waits until `n` more windows have been evaluated than when called.
fn wait_evaluations(t: &Tallyd, n: u32) {
    let want = evaluations(t) + f64::from(n);
    t.wait_metrics(
        |m| value(m, "tallyd_alert_evaluations_total").is_some_and(|v| v >= want),
        &format!("{n} more alert evaluations"),
    );
}

#[test]
fn notifier_payloads_match_the_published_apis() {
    let rx = Receiver::start();
    let hook = rx.route("/hook", Service::Webhook, &[]);
    let slack = rx.route("/services/T000/B000/XXXX", Service::Slack, &[]);
    let pd = rx.route("/v2/enqueue", Service::PagerDuty, &[]);
    let am = rx.route("/am", Service::Alertmanager, &[]);
    let t = Tallyd::start(&format!(
        r#"
[alerts]
default_rules = false
[[alerts.rules]]
name = "QueueBacklog"
metric = "queue.pending"
group_by = ["queue_type"]
warn = 1000.0
critical = 5000.0
message = "{{{{tags.queue_type}}}} queue holds {{{{value}}}} jobs ({{{{severity}}}})"
runbook = "https://runbooks.example/queues/{{{{tags.queue_type}}}}"
labels = {{ team = "core" }}
[alerts.notifiers.hook]
type = "webhook"
url = "{hook}"
headers = {{ Authorization = "Bearer abc" }}
[alerts.notifiers.chat]
type = "slack"
url = "{slack}"
[alerts.notifiers.pager]
type = "pagerduty"
url = "{pd}"
routing_key = "{PD_KEY}"
severities = ["critical"]
[alerts.notifiers.am]
type = "alertmanager"
url = "{am}"
"#
    ));

    // Warning: webhook, Slack and Alertmanager; PagerDuty takes critical only.
    t.send_udp("queue.pending:1500|g|#queue_type:email,host:a");
    let got = rx.wait("/hook", "firing webhook", |r| !r.is_empty());
    let w = got[0].json();
    assert_eq!(got[0].header("authorization"), Some("Bearer abc"));
    assert_eq!(w["version"], "1");
    assert_eq!(w["status"], "firing");
    assert_eq!(w["alert"], "QueueBacklog");
    assert_eq!(w["severity"], "warning");
    assert_eq!(w["value"], 1500.0);
    assert_eq!(w["warn"], 1000.0);
    assert_eq!(w["critical"], 5000.0);
    assert_eq!(
        w["labels"],
        serde_json::json!({"queue_type": "email", "team": "core"})
    );
    assert_eq!(w["message"], "email queue holds 1500 jobs (warning)");
    assert_eq!(w["runbook"], "https://runbooks.example/queues/email");
    assert!(ms(&w["at"]) <= now_ms() && ms(&w["starts_at"]) <= ms(&w["at"]));
    let s = rx.wait("/services", "slack", |r| !r.is_empty());
    assert_eq!(s[0].status, 200, "{:?}", s[0]);
    let text = s[0].json()["text"].as_str().expect("text").to_string();
    assert!(
        text.contains("[WARNING] QueueBacklog") && text.contains("email queue holds 1500 jobs"),
        "{text}"
    );
    let a = rx.wait("/am", "alertmanager", |r| !r.is_empty());
    assert_eq!(a[0].path, "/am/api/v2/alerts");
    assert_eq!(a[0].status, 200, "{:?}", a[0]);
    let alerts = a[0].json();
    let first = &alerts[0];
    assert_eq!(first["labels"]["alertname"], "QueueBacklog");
    assert_eq!(first["labels"]["severity"], "warning");
    assert_eq!(first["labels"]["queue_type"], "email");
    assert_eq!(first["labels"]["team"], "core");
    assert_eq!(
        first["annotations"]["runbook_url"],
        "https://runbooks.example/queues/email"
    );
    assert!(
        ms(&first["endsAt"]) > now_ms(),
        "a firing alert ends in the future"
    );
    // Two more windows evaluated with the gauge unchanged (it is held): no second notification.
    wait_evaluations(&t, 2);
    assert_eq!(
        rx.received("/hook").len(),
        1,
        "de-duplicated while unchanged"
    );
    assert!(
        rx.received("/v2/enqueue").is_empty(),
        "warning is not routed to PagerDuty"
    );

    // Critical: PagerDuty triggers; Alertmanager resolves the warning instance and fires the critical one.
    t.send_udp("queue.pending:7000|g|#queue_type:email");
    let p = rx.wait("/v2/enqueue", "pagerduty trigger", |r| !r.is_empty());
    assert_eq!(p[0].status, 202, "{:?}", p[0]);
    let trig = p[0].json();
    assert_eq!(trig["event_action"], "trigger");
    assert_eq!(trig["routing_key"], PD_KEY);
    assert_eq!(trig["payload"]["severity"], "critical");
    assert_eq!(trig["payload"]["group"], "QueueBacklog");
    assert_eq!(trig["payload"]["custom_details"]["value"], 7000.0);
    assert_eq!(
        trig["links"][0]["href"],
        "https://runbooks.example/queues/email"
    );
    let dedup = trig["dedup_key"].as_str().expect("dedup").to_string();
    let a = rx.wait("/am", "alertmanager change", |r| r.len() >= 2);
    let change = a[1].json();
    let sev: Vec<&str> = change
        .as_array()
        .expect("array")
        .iter()
        .map(|x| x["labels"]["severity"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(sev, vec!["warning", "critical"]);
    assert!(
        ms(&change[0]["endsAt"]) <= now_ms(),
        "the warning instance is resolved"
    );
    let text = t.wait_metrics(
        |m| value(m, "tallyd_alert_state{alert=\"QueueBacklog\",severity=\"critical\",state=\"firing\",queue_type=\"email\",team=\"core\"}") == Some(1.0),
        "alert state on /metrics",
    );
    assert!(text.contains("# TYPE tallyd_alert_state gauge"));
    let (code, body) = t.get("/api/alerts");
    assert_eq!(code, 200);
    let api: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(api["firing"][0]["alert"], "QueueBacklog");
    assert_eq!(api["firing"][0]["severity"], "critical");

    // Recovery: every notifier hears it; PagerDuty resolves the same dedup key.
    t.send_udp("queue.pending:10|g|#queue_type:email");
    let p = rx.wait("/v2/enqueue", "pagerduty resolve", |r| r.len() >= 2);
    let res = p[1].json();
    assert_eq!(res["event_action"], "resolve");
    assert_eq!(res["dedup_key"], dedup.as_str());
    assert_eq!(p[1].status, 202);
    let h = rx.wait("/hook", "resolved webhook", |r| {
        r.iter().any(|x| x.json()["status"] == "resolved")
    });
    assert_eq!(h.last().expect("hook").json()["severity"], "critical");
    let s = rx.wait("/services", "resolved slack", |r| {
        r.iter().any(|x| x.body.contains("RESOLVED"))
    });
    assert!(s.iter().all(|x| x.status == 200));
    let a = rx.wait("/am", "alertmanager resolve", |r| {
        r.iter().any(|x| {
            x.json().as_array().is_some_and(|v| {
                v.iter().any(|al| {
                    al["labels"]["severity"] == "critical" && ms(&al["endsAt"]) <= now_ms()
                })
            })
        })
    });
    assert!(a.iter().all(|x| x.status == 200));
    let text = t.wait_metrics(
        |m| value(m, "tallyd_alert_notifications_total{notifier=\"pager\",type=\"pagerduty\",result=\"sent\"}") == Some(2.0),
        "pagerduty deliveries counted",
    );
    assert!(
        !text.contains("tallyd_alert_state{"),
        "nothing firing any more:\n{text}"
    );
    let (_, body) = t.get("/api/alerts");
    let api: Value = serde_json::from_str(&body).expect("json");
    let events: Vec<&str> = api["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(events, vec!["resolved", "changed", "firing"]);
}

#[test]
fn retries_with_backoff_and_counts_failures() {
    let rx = Receiver::start();
    let flaky = rx.route("/flaky", Service::Webhook, &[503, 429]);
    let gone = rx.route("/gone", Service::Slack, &[404]);
    let t = Tallyd::start(&format!(
        r#"
[alerts]
default_rules = false
retry_initial = "50ms"
retry_max = "100ms"
max_attempts = 4
[[alerts.rules]]
name = "Hot"
metric = "temp"
warn = 50.0
[alerts.notifiers.flaky]
type = "webhook"
url = "{flaky}"
[alerts.notifiers.gone]
type = "slack"
url = "{gone}"
"#
    ));
    t.send_udp("temp:80|g");
    let got = rx.wait("/flaky", "third attempt", |r| r.len() >= 3);
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 429, 200]
    );
    assert_eq!(got[0].body, got[2].body, "the same notification is retried");
    t.wait_metrics(
        |m| {
            value(m, "tallyd_alert_notifications_total{notifier=\"flaky\",type=\"webhook\",result=\"sent\"}") == Some(1.0)
                && value(m, "tallyd_alert_notification_retries_total{notifier=\"flaky\"}") == Some(2.0)
                && value(m, "tallyd_alert_notifications_total{notifier=\"gone\",type=\"slack\",result=\"failed\"}") == Some(1.0)
        },
        "delivery counters",
    );
    // 404 (channel_not_found) is not retried.
    assert_eq!(rx.received("/gone").len(), 1);
}

#[test]
fn test_endpoint_reports_every_notifier() {
    let rx = Receiver::start();
    let hook = rx.route("/hook", Service::Webhook, &[]);
    let slack = rx.route("/slack", Service::Slack, &[500]);
    let pd = rx.route("/pd", Service::PagerDuty, &[]);
    let t = Tallyd::start(&format!(
        r#"
[http]
admin_token = "s3cret"
[alerts]
default_rules = false
max_attempts = 1
[alerts.notifiers.hook]
type = "webhook"
url = "{hook}"
[alerts.notifiers.chat]
type = "slack"
url = "{slack}"
[alerts.notifiers.pager]
type = "pagerduty"
url = "{pd}"
routing_key = "{PD_KEY}"
severities = ["critical"]
"#
    ));
    let (code, body) = http_request(
        t.http,
        "POST",
        "/api/monitoring/alert/test?alert_type=critical&message=hello%20world",
        &[],
        "",
    );
    assert_eq!(code, 502, "one notifier failed: {body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["alert_type"], "critical");
    assert_eq!(v["ok"], false);
    let by = |name: &str| {
        v["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["notifier"] == name)
            .cloned()
            .expect(name)
    };
    assert_eq!(by("log")["ok"], true);
    assert_eq!(by("hook")["status"], 200);
    assert_eq!(by("chat")["ok"], false);
    assert!(by("chat")["error"].as_str().expect("error").contains("500"));
    assert_eq!(by("pager")["status"], 202);
    assert!(by("pager")["answer"]
        .as_str()
        .expect("answer")
        .contains("Event processed"));
    let pd_body = rx.received("/pd")[0].json();
    assert_eq!(pd_body["payload"]["summary"], "hello world");
    assert_eq!(pd_body["payload"]["class"], "test");
    assert_eq!(rx.received("/hook")[0].json()["status"], "test");

    // The second try reaches a healthy Slack.
    let (code, body) = http_request(
        t.http,
        "POST",
        "/api/monitoring/alert/test?alert_type=info",
        &[],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_request(
        t.http,
        "POST",
        "/api/monitoring/alert/test?alert_type=page",
        &[],
        "",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("alert_type"));
    assert_eq!(t.get("/api/monitoring/alert/test").0, 405);
}

#[test]
fn health_rules_use_env_thresholds_and_own_metrics() {
    let rx = Receiver::start();
    let hook = rx.route("/hook", Service::Webhook, &[]);
    // Neither GPS nor a forwarder runs (BASE_CONFIG turns GPS on: off here, explicitly), so
    // their health rules have no data and must never fire.
    let config = common::merge(
        common::BASE_CONFIG,
        &format!(
            "[gps]\nenabled = false\n[alerts.notifiers.hook]\ntype = \"webhook\"\nurl = \"{hook}\"\n"
        ),
    );
    // Any flush is "too slow" with a 0 ms warning threshold from the platform variable.
    let t = Tallyd::start_raw(
        &config,
        &[
            ("ALERT_LATENCY_WARN", "0"),
            ("ALERT_LATENCY_CRIT", "600000"),
        ],
    );
    let got = rx.wait("/hook", "flush-slow alert", |r| {
        r.iter().any(|x| x.json()["alert"] == "TallydFlushSlow")
    });
    let w = got
        .iter()
        .find(|x| x.json()["alert"] == "TallydFlushSlow")
        .expect("alert")
        .json();
    assert_eq!(w["severity"], "warning");
    assert_eq!(w["warn"], 0.0);
    assert_eq!(w["metric"], "tallyd_flush_duration_seconds");
    // Forwarder and GPS are not running here: their rules never fire, however many windows
    // are evaluated.
    wait_evaluations(&t, 3);
    let (_, body) = t.get("/health");
    let health: Value = serde_json::from_str(&body).expect("health json");
    assert_eq!(health["components"]["gps"]["status"], "disabled", "{body}");
    let names: Vec<String> = rx
        .received("/hook")
        .iter()
        .map(|x| x.json()["alert"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(names.iter().all(|n| n == "TallydFlushSlow"), "{names:?}");
}
