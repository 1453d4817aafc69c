//! The status page in a real browser: the real binary gets StatsD traffic over UDP and TCP
//! (good and bad lines), a GT06 tracker's login and position over a connection it keeps open,
//! a gauge over an alert threshold, and a Datadog intake stand-in that first rejects every
//! payload (so the queue holds dead letters) and then answers 503 (so payloads wait). Headless Chromium (Debian `chromium`) loads `GET /`,
//! runs its script (which fetches the dashboard API), and the numbers in the rendered DOM
//! (every `data-field` element) are compared with `/api/monitoring/dashboard` and
//! `/api/monitoring/metrics/devices` read just before and just after. A screenshot is taken
//! too (set `TALLYD_STATUS_SCREENSHOT=docs/status-page.png` to keep it).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::gt06::gt06_frame;
use common::intake::{Fault, Intake};
use common::{system_tool, Tallyd};
use serde_json::Value;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn chromium() -> String {
    system_tool(
        "TALLYD_CHROMIUM",
        &["chromium", "chromium-browser"],
        "chromium",
    )
}

/// Runs headless Chromium with `args` on a fresh profile, at most 90 s; returns its stdout.
fn run_chromium(args: &[String], profile: &Path) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            // CI runs as root, where Chromium's sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().expect("wait chromium") {
            assert!(status.success(), "chromium failed: {status}");
            return reader.join().expect("stdout reader");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get_json(t: &Tallyd, path: &str) -> Value {
    let (code, body) = t.get(path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The value at a dotted path (`a.b.0.c`), arrays indexed by number.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| match v {
        Value::Array(a) => a.get(k.parse::<usize>().ok()?),
        Value::Object(m) => m.get(k),
        _ => None,
    })
}

/// Polls the dashboard until `pred` holds (at most 30 s).
fn wait_dashboard(t: &Tallyd, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = get_json(t, "/api/monitoring/dashboard");
        if pred(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {d:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn num(d: &Value, path: &str) -> f64 {
    at(d, path).and_then(Value::as_f64).unwrap_or(-1.0)
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// One marked element of the dumped DOM.
#[derive(Debug)]
struct Shown {
    field: String,
    src: String,
    value: Value,
    volatile: bool,
    formatted: bool,
    text: String,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

fn has_attr(tag: &str, name: &str) -> bool {
    tag.contains(&format!(" {name}="))
        || tag.contains(&format!(" {name}>"))
        || tag.contains(&format!(" {name} "))
}

/// Every element carrying `data-field`, with its `data-value` and its own text.
fn shown(dom: &str) -> Vec<Shown> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(" data-field=\"") {
        let open = rest[..i].rfind('<').expect("tag start");
        let close = rest[i..].find('>').expect("tag end") + i;
        let tag = &rest[open..close];
        let after = &rest[close + 1..];
        let text = unescape(&after[..after.find('<').unwrap_or(after.len())]);
        let raw = attr(tag, "data-value").unwrap_or_default();
        out.push(Shown {
            field: attr(tag, "data-field").expect("data-field"),
            src: attr(tag, "data-src").unwrap_or_else(|| "dashboard".into()),
            value: serde_json::from_str(&raw).unwrap_or(Value::Null),
            volatile: has_attr(tag, "data-volatile"),
            formatted: has_attr(tag, "data-format"),
            text,
        });
        rest = &rest[close..];
    }
    out
}

/// What the page shows for an unformatted value.
fn display(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.into()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// GT06 login for IMEI 863586038760942 (BCD with a leading 0 nibble).
fn gt06_login() -> Vec<u8> {
    let imei = [0x08, 0x63, 0x58, 0x60, 0x38, 0x76, 0x09, 0x42];
    let mut c = imei.to_vec();
    c.extend_from_slice(&[0x00, 0x01, 0x00, 0x00]);
    gt06_frame(0x01, &c, 1)
}

/// A GT06 location at 2024-03-01 12:05 UTC, 52.52 N 13.405 E, 36 km/h.
fn gt06_location() -> Vec<u8> {
    let mut c = vec![24, 3, 1, 12, 5, 0, 0xC8];
    let raw = |deg: f64| ((deg * 60.0 * 30_000.0).round() as u32).to_be_bytes();
    c.extend_from_slice(&raw(52.52));
    c.extend_from_slice(&raw(13.405));
    c.push(36);
    c.extend_from_slice(&((1u16 << 12) | (1 << 10) | 90).to_be_bytes());
    c.extend_from_slice(&[0x01, 0xCC, 0x00, 0x28, 0x7D, 0x00, 0x1F, 0xB8]);
    gt06_frame(0x12, &c, 2)
}

fn config(intake: &Intake) -> String {
    format!(
        r#"
[log]
level = "info"
format = "json"
[statsd]
udp_listen = "127.0.0.1:0"
tcp_listen = "127.0.0.1:0"
[aggregate]
flush_interval = "500ms"
[http]
listen = "127.0.0.1:0"
[gps]
listen = "127.0.0.1:0"
[otlp]
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
[datadog]
api_key = "{KEY}"
url = "{url}"
[queue]
directory = "@DIR@/queue"
[alerts]
default_rules = false
[[alerts.rules]]
name = "BoilerHot"
metric = "boiler.temp"
warn = 80.0
"#,
        url = intake.url()
    )
}

#[test]
fn the_status_page_shows_what_the_dashboard_api_says() {
    let intake = Intake::start(KEY);
    // Every payload refused for good: the Datadog queue fills its dead-letter queue.
    intake.set_fault(Fault::Status(400));
    let t = Tallyd::start_raw(&config(&intake), &[]);

    // The page is static and self-contained.
    let (code, page) = t.get("/");
    assert_eq!(code, 200);
    let headers = common::http_headers(t.http, "/", &[]);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let ct = header("content-type");
    assert!(ct.starts_with("text/html"), "{ct}");
    let csp = header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(page.contains("/api/monitoring/dashboard"));

    // Traffic: 3 good UDP lines and 2 bad ones, 2 good TCP lines; a gauge over the threshold.
    t.send_udp(
        "page.hits:1|c|#route:a\npage.hits:2|c|#route:b\nboiler.temp:93|g\nnot a line\nx:1|q\n",
    );
    t.send_tcp("page.latency:12|ms\npage.latency:30|ms\n");
    let mut tracker = TcpStream::connect(t.gps.expect("gps listener")).expect("gps connect");
    tracker
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tracker.write_all(&gt06_login()).expect("login");
    let mut ack = [0u8; 10];
    tracker.read_exact(&mut ack).expect("login ack");
    tracker.write_all(&gt06_location()).expect("location");

    wait_dashboard(&t, "the traffic, the alert and a dead letter", |d| {
        num(d, "ingest.transports.statsd_udp.total") == 5.0
            && num(d, "ingest.transports.statsd_tcp.total") == 2.0
            && num(d, "ingest.parse_errors.total") == 2.0
            && num(d, "gps_tcp_server.messages_total") == 2.0
            && num(d, "gps_tcp_server.active_connections") == 1.0
            && num(d, "live_tracking.active_devices") == 1.0
            && num(d, "alerts.firing_count") == 1.0
            && num(d, "queues.queues.datadog.dlq_size") >= 1.0
    });
    // From now on the intake answers 503: payloads stay queued (retried with backoff) and the
    // dead letters stay as they are, so every queue number only grows while the page loads.
    intake.set_fault(Fault::Status(503));
    let before = wait_dashboard(&t, "payloads held in the queue", |d| {
        num(d, "queues.queues.datadog.pending") >= 2.0
    });
    // The platform documents' shape.
    for path in [
        "timestamp",
        "platform_health.status",
        "platform_health.issues",
        "platform_health.components_checked",
        "live_tracking.messages_per_second",
        "live_tracking.queue_pending",
        "live_tracking.dlq_size",
        "gps_tcp_server.status",
        "gps_tcp_server.devices_total",
        "queues.status",
        "queues.queues.datadog.pending",
        "queues.queues.datadog.processing",
        "queues.queues.datadog.status",
        "queues.summary.total_pending",
        "queues.summary.total_dlq",
        "ingest.busiest_metrics",
        "alerts.firing",
    ] {
        assert!(at(&before, path).is_some(), "{path} missing: {before:#}");
    }
    assert_eq!(before["gps_tcp_server"]["status"], "running");
    assert_eq!(before["alerts"]["firing"][0]["alert"], "BoilerHot");
    let queues = get_json(&t, "/api/monitoring/metrics/queues");
    assert_eq!(queues["dlq"]["status"], "has_dead_letters", "{queues:#}");
    assert_eq!(
        queues["queues"]["datadog"]["dlq_status"],
        "has_dead_letters"
    );

    // The charts come from the ring (a point every 5 s): wait for two rates, three points.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&t, "/api/monitoring/history")["points"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(Instant::now() < deadline, "no history points");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A configuration reload (the file unchanged): the page shows its time and outcome.
    let (code, body) = t.post("/admin/reload");
    assert_eq!(code, 200, "{body}");
    let before = get_json(&t, "/api/monitoring/dashboard");
    assert_eq!(before["last_reload"]["result"], "ok", "{before:#}");
    let devices_before = get_json(&t, "/api/monitoring/metrics/devices");
    let profile = tempfile::tempdir().expect("profile");
    let url = format!("http://{}/", t.http);
    let dom = run_chromium(
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
        profile.path(),
    );
    let after = get_json(&t, "/api/monitoring/dashboard");
    let devices_after = get_json(&t, "/api/monitoring/metrics/devices");

    assert!(
        dom.contains("data-loaded=\"") && !dom.contains("data-loaded=\"0\""),
        "the page never rendered the API's answer:\n{dom}"
    );
    assert!(
        dom.contains("<div id=\"banner\" hidden"),
        "an error banner is shown:\n{dom}"
    );
    let sorted = |v: &Value| {
        let mut v = v.clone();
        if let Some(list) = v["devices"].as_array_mut() {
            list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        }
        v
    };
    let (devices_before, devices_after) = (sorted(&devices_before), sorted(&devices_after));

    let mut compared = BTreeSet::new();
    for s in shown(&dom) {
        if s.volatile {
            continue;
        }
        let (a, b) = match s.src.as_str() {
            "devices" => (&devices_before, &devices_after),
            _ => (&before, &after),
        };
        let (a, b) = (at(a, &s.field), at(b, &s.field));
        let Some(a) = a else {
            assert!(
                s.value.is_null(),
                "{}: the page shows {} for a field the API lacks",
                s.field,
                s.value
            );
            continue;
        };
        let b = b.unwrap_or(a);
        if a == b {
            // JSON numbers compare as numbers: the browser writes 36.0 as 36.
            let same = match (s.value.as_f64(), a.as_f64()) {
                (Some(p), Some(x)) => p == x,
                _ => &s.value == a,
            };
            assert!(same, "{} ({}): page {} != API {a}", s.field, s.src, s.value);
        } else {
            // A counter that moved while the page loaded: the page's value lies between.
            let (x, y, p) = (a.as_f64(), b.as_f64(), s.value.as_f64());
            let (Some(x), Some(y), Some(p)) = (x, y, p) else {
                panic!(
                    "{}: the API changed from {a} to {b}, page shows {}",
                    s.field, s.value
                );
            };
            assert!(
                x.min(y) <= p && p <= x.max(y),
                "{}: page {p} outside the API's {x}..{y}",
                s.field
            );
        }
        if !s.formatted {
            if let Some(want) = display(&s.value) {
                assert_eq!(s.text, want, "{}: the text shown", s.field);
            }
        }
        compared.insert(format!("{}:{}", s.src, s.field));
    }
    for must in [
        "dashboard:platform_health.status",
        "dashboard:platform_health.components_checked",
        "dashboard:platform_health.components.gps.status",
        "dashboard:platform_health.components.datadog.status",
        "dashboard:ingest.transports.statsd_udp.total",
        "dashboard:ingest.transports.statsd_tcp.total",
        "dashboard:ingest.transports.gps_tcp.total",
        "dashboard:ingest.parse_errors.total",
        "dashboard:ingest.parse_errors.by_reason.statsd:invalid_format",
        "dashboard:ingest.drops.total",
        "dashboard:alerts.firing_count",
        "dashboard:alerts.firing.0.alert",
        "dashboard:alerts.firing.0.state",
        "dashboard:queues.queues.datadog.pending",
        "dashboard:queues.queues.datadog.dlq_size",
        "dashboard:queues.summary.total_pending",
        "dashboard:queues.summary.total_dlq",
        "dashboard:gps_tcp_server.active_connections",
        "dashboard:gps_tcp_server.messages_total",
        "dashboard:gps_tcp_server.devices_total",
        "dashboard:live_tracking.active_devices",
        "dashboard:last_reload.at_unix",
        "dashboard:last_reload.result",
        "dashboard:last_reload.trigger",
        "devices:count",
        "devices:devices.0.id",
        "devices:devices.0.last_fix.lat",
        "devices:devices.0.last_fix.lon",
        "devices:devices.0.last_fix.speed_kmh",
    ] {
        assert!(
            compared.contains(must),
            "{must} not shown; shown: {compared:#?}"
        );
    }
    // Values the test sent, as the page shows them.
    assert!(dom.contains("data-field=\"devices.0.id\""));
    assert_eq!(devices_after["devices"][0]["id"], "863586038760942");
    let lat = devices_after["devices"][0]["last_fix"]["lat"]
        .as_f64()
        .unwrap_or(0.0);
    assert!((lat - 52.52).abs() < 1e-6, "{lat}");
    // The charts drew the ring's points.
    let points = dom
        .split("id=\"chart-ingest\" data-points=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    assert!(points >= 2, "the ingest chart has {points} points");
    assert!(dom.contains("<polyline"), "no chart line drawn");

    // A screenshot of the same page.
    let shot = profile.path().join("status.png");
    run_chromium(
        &[
            "--virtual-time-budget=5000".into(),
            "--window-size=1400,1250".into(),
            format!("--screenshot={}", shot.display()),
            url,
        ],
        profile.path(),
    );
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("TALLYD_STATUS_SCREENSHOT") {
        std::fs::write(&keep, &png).expect("keep the screenshot");
    }
    drop(tracker);
}

#[test]
fn without_the_token_the_page_asks_for_it() {
    // Loopback is not trusted here, so the page's own requests need the token, as from
    // another host: the page is served, its data is refused, and it asks for the token.
    let t = Tallyd::start_raw(
        r#"
[log]
level = "info"
format = "json"
[statsd]
udp_listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
admin_token = "s3cret-token"
trust_loopback = false
[gps]
listen = "127.0.0.1:0"
[otlp]
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
"#,
        &[],
    );
    assert_eq!(t.get("/").0, 200, "the page itself is public");
    assert_eq!(t.get("/api/monitoring/dashboard").0, 401);
    let profile = tempfile::tempdir().expect("profile");
    let dom = run_chromium(
        &[
            "--virtual-time-budget=3000".into(),
            "--dump-dom".into(),
            format!("http://{}/", t.http),
        ],
        profile.path(),
    );
    assert!(
        dom.contains("data-loaded=\"0\""),
        "rendered without the token:\n{dom}"
    );
    assert!(
        dom.contains("<div id=\"banner\">"),
        "no banner shown:\n{dom}"
    );
    assert!(
        dom.contains("<form id=\"auth\">"),
        "no token form shown:\n{dom}"
    );
    assert!(dom.contains("need the admin token"), "{dom}");
    assert!(!dom.contains("s3cret-token"), "the page learnt the token");
}
