//! tallyd as a drop-in for statsd_exporter, from the outside: the real binary, real UDP lines.
//!
//! - a mapping file using every feature of statsd_exporter's format, read back from `/metrics`
//!   line by line; each expected line is what statsd_exporter's documentation says the same
//!   rule and input give (the comments say which rule), and `promtool check metrics` is clean;
//! - classic histograms from two tallyd instances scraped by a real Prometheus (Debian
//!   `prometheus`), where `histogram_quantile(0.9, sum by (le) (rate(x_bucket[1m])))` falls in
//!   the bucket of the true 0.9 quantile the test computes;
//! - a negative counter increment leaves `_total` unchanged and is counted;
//! - a series that expires ends at once in a real Prometheus receiving remote write (a
//!   staleness marker), instead of lingering for the 5-minute lookback.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{start_external, External, Tallyd};
use serde_json::Value;

const MAPPING: &str = r#"
defaults:
  observer_type: summary
  summary_options:
    quantiles:
      - quantile: 0.5
        error: 0.05
      - quantile: 0.9
        error: 0.01
  match_type: glob
  glob_disable_ordering: true
  ttl: 10m
mappings:
# The README's first example.
- match: test.dispatcher.*.*.*
  name: "dispatcher_events_total"
  labels:
    processor: "$1"
    action: "$2"
    outcome: "$3"
    job: "test_dispatcher"
- match: "*.signup.*.*"
  name: "signup_events_total"
  labels:
    provider: "$2"
    outcome: "$3"
    job: "${1}_server"
# Regex, with captures in the name.
- match: 'regex\.(\w+)\.status\.(\d+)'
  match_type: regex
  name: "http_${1}_responses_total"
  labels:
    code: "$2"
# One statsd name, two types.
- match: typed.*
  match_metric_type: gauge
  name: "typed_level"
  labels:
    which: "$1"
- match: typed.*
  match_metric_type: counter
  name: "typed_events_total"
  labels:
    which: "$1"
# A tag sent with the metric wins over the rule's label.
- match: honor.*
  honor_labels: true
  name: "honored_total"
  labels:
    env: "default"
    kind: "$1"
# ms timer as a histogram, in seconds.
- match: api.*.latency
  observer_type: histogram
  histogram_options:
    buckets: [0.01, 0.1, 1]
  name: "api_latency_seconds"
  labels:
    endpoint: "$1"
# Deprecated spellings (timer_type, top-level buckets) and scale: bits to bytes.
- match: payload.*.bits
  timer_type: histogram
  buckets: [500, 5000]
  scale: 0.125
  name: "payload_bytes"
  labels:
    route: "$1"
# A summary with its own quantiles and help text.
- match: job.*.duration
  quantiles:
    - quantile: 0.99
      error: 0.001
  help: "How long jobs took."
  name: "job_duration_seconds"
  labels:
    job: "$1"
# Its own ttl.
- match: short.*
  ttl: 1s
  name: "short_lived"
  labels:
    x: "$1"
# Without ordering, the literal rule wins over the earlier wildcard one.
- match: order.*.c
  name: "order_wild_total"
- match: order.b.c
  name: "order_literal_total"
- match: debug.*
  action: drop
  name: "dropped"
"#;

/// Every line sent, in one datagram per line.
const LINES: &[&str] = &[
    "test.dispatcher.FooProcessor.send.success:1|c",
    "test.dispatcher.FooProcessor.send.success:1|c",
    "foo_product.signup.facebook.failure:1|c",
    "regex.api.status.404:3|c",
    "typed.a:7|g",
    "typed.a:2|c",
    "honor.x:1|c|#env:prod",
    "honor.y:1|c",
    "api.login.latency:250|ms",
    "api.login.latency:500|ms",
    "api.login.latency:1000|ms",
    "api.login.latency:4000|ms",
    "payload.home.bits:800|h",
    "payload.home.bits:8000|h",
    "job.backup.duration:1000|ms",
    "job.backup.duration:2000|ms",
    "job.backup.duration:3000|ms",
    "order.b.c:1|c",
    "order.x.c:1|c",
    "debug.noise:1|c",
    "test.web-server.foo.bar:1|c",
    "plain.timer:100|ms",
    "plain.timer:300|ms",
];

/// What statsd_exporter's documented semantics give for `MAPPING` and `LINES`, line by line
/// (samples, then the TYPE and HELP lines that say how a family is exposed).
const EXPECTED: &[&str] = &[
    // README: test.dispatcher.FooProcessor.send.success => dispatcher_events_total{...}.
    "dispatcher_events_total{action=\"send\",job=\"test_dispatcher\",outcome=\"success\",processor=\"FooProcessor\"} 2",
    // README: foo_product.signup.facebook.failure => signup_events_total{..., job="foo_product_server"}.
    "signup_events_total{job=\"foo_product_server\",outcome=\"failure\",provider=\"facebook\"} 1",
    // Regex: ${1} in the name, $2 in a label.
    "http_api_responses_total{code=\"404\"} 3",
    // match_metric_type picks the rule by type.
    "typed_level{which=\"a\"} 7",
    "typed_events_total{which=\"a\"} 2",
    // honor_labels: the sent env wins; without one the rule's applies.
    "honored_total{env=\"prod\",kind=\"x\"} 1",
    "honored_total{env=\"default\",kind=\"y\"} 1",
    // ms timers are observed in seconds: 0.25, 0.5, 1, 4.
    "# TYPE api_latency_seconds histogram",
    "api_latency_seconds_bucket{endpoint=\"login\",le=\"0.01\"} 0",
    "api_latency_seconds_bucket{endpoint=\"login\",le=\"0.1\"} 0",
    "api_latency_seconds_bucket{endpoint=\"login\",le=\"1\"} 3",
    "api_latency_seconds_bucket{endpoint=\"login\",le=\"+Inf\"} 4",
    "api_latency_seconds_sum{endpoint=\"login\"} 5.75",
    "api_latency_seconds_count{endpoint=\"login\"} 4",
    // h values are not converted; scale 0.125: 100 and 1000 bytes.
    "# TYPE payload_bytes histogram",
    "payload_bytes_bucket{route=\"home\",le=\"500\"} 1",
    "payload_bytes_bucket{route=\"home\",le=\"5000\"} 2",
    "payload_bytes_bucket{route=\"home\",le=\"+Inf\"} 2",
    "payload_bytes_sum{route=\"home\"} 1100",
    "payload_bytes_count{route=\"home\"} 2",
    // A summary with the rule's quantile: 1, 2, 3 s.
    "# HELP job_duration_seconds How long jobs took.",
    "# TYPE job_duration_seconds summary",
    "job_duration_seconds{job=\"backup\",quantile=\"0.99\"} 3",
    "job_duration_seconds_sum{job=\"backup\"} 6",
    "job_duration_seconds_count{job=\"backup\"} 3",
    // glob_disable_ordering: literal beats wildcard.
    "order_literal_total 1",
    "order_wild_total 1",
    // Unmapped: escaped name. statsd_exporter exposes this counter without a _total suffix;
    // tallyd adds it (docs/statsd_exporter.md, "What differs").
    "test_web_server_foo_bar_total 1",
    // Unmapped timer: a summary with the defaults' quantiles, in seconds: 0.1, 0.3.
    "# TYPE plain_timer summary",
    "plain_timer{quantile=\"0.5\"} 0.1",
    "plain_timer{quantile=\"0.9\"} 0.3",
    "plain_timer_sum 0.4",
    "plain_timer_count 2",
];

/// The user series of a scrape (tallyd's own left out), with their TYPE and HELP lines.
fn user_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.contains("tallyd_"))
        .map(str::to_string)
        .collect()
}

fn promtool_check(text: &str) -> (i32, String) {
    let bin = common::system_tool("PROMTOOL_BIN", &["promtool"], "prometheus");
    let mut child = Command::new(bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = child.stdin.take().expect("stdin");
    let body = text.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
    let out = child.wait_with_output().expect("promtool output");
    writer.join().expect("writer").expect("write to promtool");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), findings)
}

#[test]
fn a_statsd_exporter_mapping_file_gives_its_documented_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mapping.yml");
    std::fs::write(&path, MAPPING).expect("write mapping");
    // Without the GPS service, whose fleet gauges would be user series too.
    let base =
        common::BASE_CONFIG.replace("[gps]\nlisten = \"127.0.0.1:0\"", "[gps]\nlisten = \"\"");
    let t = Tallyd::start_raw(
        &format!(
            "{base}[prometheus]\nmapping_file = \"{}\"\n",
            path.display()
        ),
        &[],
    );
    for l in LINES {
        t.send_udp(l);
    }
    let text = t.wait_metrics(
        |m| {
            let lines = user_lines(m);
            EXPECTED.iter().all(|e| lines.iter().any(|l| l == e))
        },
        "every expected line",
    );
    let lines = user_lines(&text);
    // Nothing else: the dropped metric is absent, and every sample line is one expected.
    for l in lines.iter().filter(|l| !l.starts_with('#')) {
        assert!(
            EXPECTED.contains(&l.as_str()) || l.starts_with("short_lived{"),
            "unexpected line {l:?} in\n{text}"
        );
    }
    assert!(!text.contains("debug"), "{text}");
    assert!(!text.contains("_total_total"), "{text}");
    assert_eq!(
        common::value(
            &text,
            "tallyd_prometheus_mapping_contexts_total{result=\"dropped\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let (code, findings) = promtool_check(&text);
    assert_eq!(code, 0, "promtool check metrics: {findings}\n{text}");

    // The rule's ttl (1 s) ends short_lived; the defaults' 10 m keep the rest.
    t.send_udp("short.a:1|g");
    t.wait_metrics(|m| m.contains("short_lived{x=\"a\"} 1\n"), "short_lived");
    let text = t.wait_metrics(|m| !m.contains("short_lived"), "short_lived to expire");
    assert!(text.contains("order_wild_total 1\n"), "{text}");
}

#[test]
fn a_bad_mapping_file_fails_the_start_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mapping.yml");
    std::fs::write(&path, "mappings:\n- match: a.b\n  name: ok\n  nmae: typo\n").expect("write");
    let cfg = dir.path().join("tallyd.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}[prometheus]\nmapping_file = \"{}\"\n",
            common::BASE_CONFIG,
            path.display()
        ),
    )
    .expect("write config");
    let out = common::command()
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .expect("run tallyd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("prometheus.mapping_file"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("nmae"), "{err}");
}

#[test]
fn a_negative_counter_increment_leaves_total_unchanged_and_is_counted() {
    let t = Tallyd::start("");
    t.send_udp("jobs.done:5|c");
    t.wait_value("jobs_done_total", 5.0);
    t.send_udp("jobs.done:-3|c");
    let text = t.wait_metrics(
        |m| {
            common::value(
                m,
                "tallyd_prometheus_samples_rejected_total{reason=\"negative_counter\"}",
            ) == Some(1.0)
        },
        "the negative increment counted",
    );
    assert_eq!(common::value(&text, "jobs_done_total"), Some(5.0), "{text}");
    t.send_udp("jobs.done:2|c");
    t.wait_value("jobs_done_total", 7.0);
}

// ---------------------------------------------------------------------------------------------
// A real Prometheus.

fn prometheus(config: &str, extra: &[&str]) -> External {
    let bin = common::system_tool("PROMETHEUS_BIN", &["prometheus"], "prometheus");
    let config = config.to_string();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    start_external("prometheus", &bin, 30, move |dir, addr| {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, config).expect("write config");
        let mut args = extra;
        args.extend([
            format!("--web.listen-address={addr}"),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--config.file={}", cfg.display()),
        ]);
        args
    })
}

fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn histogram_quantile_over_two_instances_falls_in_the_true_bucket() {
    let cfg = "[prometheus]\nobserver_type = \"histogram\"\n";
    let (a, b) = (Tallyd::start(cfg), Tallyd::start(cfg));
    let prom = prometheus(
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1h\n\
             scrape_configs:\n  - job_name: tallyd\n    static_configs:\n      - targets: ['{}', '{}']\n",
            a.http, b.http
        ),
        &[],
    );
    // A first sample each, so that the series exist in Prometheus before the real traffic
    // (rate needs two scrapes of them); it lands in the lowest bucket, before the increase.
    a.send_udp("req.latency:0.001|h");
    b.send_udp("req.latency:0.001|h");
    wait_until(30, "both instances' series in Prometheus", || {
        let r = prom.query("count(req_latency_count)");
        (r.first().map(|x| x.1.as_str()) == Some("2")).then_some(())
    });
    // Instance a: fast requests (20 ms .. 400 ms), b: slow ones (0.36 s .. 7.2 s).
    let mut values = Vec::new();
    for i in 1..=20 {
        let fast = 0.02 * f64::from(i);
        let slow = 0.36 * f64::from(i);
        a.send_udp(&format!("req.latency:{fast}|h"));
        b.send_udp(&format!("req.latency:{slow}|h"));
        values.push(fast);
        values.push(slow);
    }
    values.sort_by(f64::total_cmp);
    // The nearest-rank 0.9 quantile of the 40 values, and the default bucket it falls in.
    let truth = values[(0.9 * values.len() as f64).ceil() as usize - 1];
    let bounds = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let upper = *bounds.iter().find(|b| **b >= truth).expect("bucket");
    let lower = bounds
        .iter()
        .rev()
        .find(|b| **b < truth)
        .copied()
        .unwrap_or(0.0);
    wait_until(10, "tallyd to expose the traffic", || {
        let ok = [&a, &b]
            .iter()
            .all(|t| common::value(&t.metrics(), "req_latency_count") == Some(21.0));
        ok.then_some(())
    });
    let q = "histogram_quantile(0.9, sum by (le) (rate(req_latency_bucket[1m])))";
    let got: f64 = wait_until(30, "the quantile over both instances", || {
        // Both instances' buckets must have been scraped with the traffic.
        let n = prom.query("sum(req_latency_count)");
        if n.first().map(|x| x.1.as_str()) != Some("42") {
            return None;
        }
        let r = prom.query(q);
        r.first()
            .and_then(|x| x.1.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    });
    assert!(
        got >= lower && got <= upper,
        "histogram_quantile gave {got}, true 0.9 quantile {truth} is in ({lower}, {upper}]"
    );
}

#[test]
fn an_expired_series_is_stale_at_once_in_prometheus_over_remote_write() {
    let prom = prometheus(
        "global:\n  evaluation_interval: 1h\nscrape_configs: []\n",
        &["--web.enable-remote-write-receiver"],
    );
    let t = Tallyd::start(&format!(
        r#"
[prometheus]
series_ttl = "2s"
[remote_write]
url = "http://{}/api/v1/write"
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "1s"
"#,
        prom.addr
    ));
    t.send_udp("door.open:1|g");
    t.send_udp("door.kept:1|g");
    wait_until(20, "the gauge in Prometheus", || {
        (prom.query("door_open").len() == 1).then_some(())
    });
    // Keep one gauge alive while the other expires in tallyd.
    let expired_at = wait_until(20, "door_open to expire in tallyd", || {
        t.send_udp("door.kept:1|g");
        let m = t.metrics();
        (!m.contains("door_open")).then(Instant::now)
    });
    // Without a staleness marker Prometheus would return the last value for 5 minutes.
    wait_until(10, "door_open to be stale in Prometheus", || {
        t.send_udp("door.kept:1|g");
        prom.query("door_open").is_empty().then_some(())
    });
    assert!(expired_at.elapsed() < Duration::from_secs(10));
    assert_eq!(prom.query("door_kept").len(), 1, "the live gauge stays");
}

#[test]
fn influxdb_librato_and_signalfx_tags_are_labels_when_switched_on() {
    let t = Tallyd::start("");
    // Off by default: the name is sent as it is (and sanitised).
    t.send_udp("off.influx,env=prod:1|c");
    t.wait_value("off_influx_env_prod_total", 1.0);
    drop(t);

    let t = Tallyd::start("[statsd]\ntag_styles = [\"influxdb\", \"librato\", \"signalfx\"]\n");
    t.send_udp("influx.hits,env=prod,code=200:1|c");
    t.send_udp("librato.hits#env=prod,code=404:2|c");
    t.send_udp("signalfx[env=prod,code=500].hits:3|c");
    // A malformed tag is left out and counted; mixed styles reject the line.
    t.send_udp("influx.hits,env=prod,code=200,bare:1|c");
    t.send_udp("influx.hits,env=prod:1|c|#dd:tag");
    let text = t.wait_metrics(
        |m| {
            m.contains("influx_hits_total{code=\"200\",env=\"prod\"} 2\n")
                && m.contains("librato_hits_total{code=\"404\",env=\"prod\"} 2\n")
                && m.contains("signalfx_hits_total{code=\"500\",env=\"prod\"} 3\n")
        },
        "the three styles as labels",
    );
    for style in ["influxdb", "mixed"] {
        assert_eq!(
            common::value(
                &text,
                &format!("tallyd_statsd_tag_style_errors_total{{style=\"{style}\"}}")
            ),
            Some(1.0),
            "{style}: {text}"
        );
    }
    assert!(!text.contains("dd=\"tag\""), "{text}");
}

fn hup(t: &Tallyd) {
    let pid = libc::pid_t::try_from(t.pid()).expect("pid");
    // SAFETY: kill only sends a signal to the child this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

/// Waits until `/health` shows the `n`-th reload; returns it.
fn wait_reload(t: &Tallyd, n: usize) -> Value {
    let mut seen = Vec::new();
    wait_until(10, "the reload", || {
        let h: Value = serde_json::from_str(&t.get("/health").1).expect("health JSON");
        let r = h["last_reload"].clone();
        if !r.is_null() && seen.last() != Some(&r) {
            seen.push(r.clone());
        }
        (seen.len() >= n).then_some(r)
    })
}

#[test]
fn sighup_reads_the_mapping_file_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mapping.yml");
    let rule = |name: &str| {
        format!("mappings:\n- match: app.*.hits\n  name: {name}\n  labels:\n    svc: $1\n")
    };
    std::fs::write(&path, rule("v1_hits_total")).expect("write mapping");
    let t = Tallyd::start(&format!(
        "[prometheus]\nmapping_file = \"{}\"\n",
        path.display()
    ));
    t.send_udp("app.web.hits:1|c");
    t.wait_value("v1_hits_total{svc=\"web\"}", 1.0);

    // The same file name, new text: a reload reads it again.
    std::fs::write(&path, rule("v2_hits_total")).expect("rewrite mapping");
    hup(&t);
    let r = wait_reload(&t, 1);
    assert_eq!(r["result"], "ok", "{r}");
    t.send_udp("app.web.hits:2|c");
    t.wait_value("v2_hits_total{svc=\"web\"}", 2.0);

    // A file that does not compile is rejected; the running mapping stays.
    std::fs::write(&path, "mappings:\n- match: a\n  name: x\n  typo: 1\n").expect("rewrite");
    hup(&t);
    let r = wait_reload(&t, 2);
    assert_eq!(r["result"], "invalid", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("prometheus.mapping_file"),
        "{r}"
    );
    t.send_udp("app.web.hits:3|c");
    t.wait_value("v2_hits_total{svc=\"web\"}", 5.0);
}
