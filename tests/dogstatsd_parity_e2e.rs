//! End-to-end parity with the Datadog Agent's DogStatsD (issue 17): the real binary, DogStatsD
//! over real sockets, the Datadog intake stand-in (tests/common/intake.rs) decoding what
//! arrives. Sketch accuracy is checked from the outside: the test decodes keys and counts and
//! computes quantiles from them with the Agent's mapping, written here independently.

mod common;

use common::intake::{Accepted, InSketch, Intake};
use common::{merge, Tallyd, BASE_CONFIG};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn config(intake: &Intake, extra: &str) -> String {
    let dd = format!(
        r#"
[aggregate]
flush_interval = "1s"
[datadog]
api_key = "{KEY}"
url = "{}"
hostname = "test-host"
request_timeout = "2s"
[queue]
directory = "@DIR@/queue"
backoff_initial = "50ms"
backoff_max = "200ms"
"#,
        intake.url()
    );
    merge(&merge(BASE_CONFIG, &dd), extra)
}

fn start(intake: &Intake, extra: &str) -> Tallyd {
    Tallyd::start_raw(&config(intake, extra), &[])
}

/// A small deterministic generator (xorshift64*), and standard normals by Box-Muller.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Log-normal with median `median` and shape `sigma`.
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

/// The Agent's key → value mapping: gamma^(k - bias), gamma = 1 + 2/128, bias 1338.
fn key_value(k: i32) -> f64 {
    let gamma_ln = (2.0f64 / 128.0).ln_1p();
    let bias = -((1e-9f64).ln() / gamma_ln).floor() as i32 + 1;
    match k {
        0 => 0.0,
        k if k < 0 => -key_value(-k),
        k => (f64::from(k - bias) * gamma_ln).exp(),
    }
}

/// Every sketch of `metric` merged (keys and counts added, as the intake merges them), with
/// min, max and count.
fn merged(a: &Accepted, metric: &str) -> (Vec<(i32, u64)>, f64, f64, i64) {
    let mut bins = std::collections::BTreeMap::<i32, u64>::new();
    let (mut min, mut max, mut cnt) = (f64::INFINITY, f64::NEG_INFINITY, 0);
    for s in a.sketches.iter().filter(|s: &&InSketch| s.metric == metric) {
        for d in &s.dogsketches {
            assert_eq!(d.k.len(), d.n.len());
            assert!(d.k.windows(2).all(|w| w[0] <= w[1]), "keys ascending");
            for (k, n) in d.k.iter().zip(&d.n) {
                *bins.entry(*k).or_default() += u64::from(*n);
            }
            min = min.min(d.min);
            max = max.max(d.max);
            cnt += d.cnt;
        }
    }
    (bins.into_iter().collect(), min, max, cnt)
}

/// The sketch's nearest-rank quantile: the value of the bin holding rank ceil(q·n).
fn sketch_quantile(bins: &[(i32, u64)], q: f64, n: u64) -> f64 {
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    for (k, c) in bins {
        seen += c;
        if seen >= rank {
            return key_value(*k);
        }
    }
    f64::NAN
}

/// Sends `values` as one distribution over TCP, 500 values a line.
fn send_distribution(t: &Tallyd, name: &str, values: &[f64]) {
    let mut text = String::new();
    for chunk in values.chunks(500) {
        text.push_str(name);
        for v in chunk {
            text.push_str(&format!(":{v:.6e}"));
        }
        text.push_str("|d|#case:accuracy\n");
    }
    t.send_tcp(&text);
}

fn check_accuracy(intake: &Intake, t: &Tallyd, name: &str, values: &[f64]) {
    // Seven significant digits on the wire; the exact quantiles are of the values as sent.
    let values: Vec<f64> = values
        .iter()
        .map(|v| format!("{v:.6e}").parse().expect("float"))
        .collect();
    send_distribution(t, name, &values);
    let n = values.len() as i64;
    intake.wait(30, name, |a| merged(a, name).3 == n);
    let a = intake.accepted();
    let (bins, min, max, cnt) = merged(&a, name);
    let total: u64 = bins.iter().map(|b| b.1).sum();
    assert_eq!((cnt, total), (n, n as u64), "{name}: every sample counted");
    let mut exact = values.to_vec();
    exact.sort_by(f64::total_cmp);
    assert_eq!((min, max), (exact[0], exact[exact.len() - 1]), "{name}");
    for q in [0.5, 0.75, 0.9, 0.95, 0.99] {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, exact.len());
        let want = exact[rank - 1];
        let got = sketch_quantile(&bins, q, n as u64);
        let err = (got - want).abs() / want;
        assert!(
            err <= 1.0 / 128.0,
            "{name} p{}: sketch {got} vs exact {want}: relative error {err}",
            q * 100.0
        );
    }
    // The top bin is the maximum's.
    let top = key_value(bins[bins.len() - 1].0);
    assert!(
        (top - max).abs() / max <= 1.0 / 128.0,
        "{name} max {top} vs {max}"
    );
}

#[test]
fn distribution_sketches_keep_the_agents_accuracy_at_any_count() {
    let intake = Intake::start(KEY);
    let t = start(&intake, "");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Latencies in seconds (median 40 ms, long tail), in milliseconds, and a small window.
    let secs: Vec<f64> = (0..100_000).map(|_| rng.lognormal(0.04, 1.2)).collect();
    check_accuracy(&intake, &t, "lat.seconds", &secs);
    let ms: Vec<f64> = (0..100_000).map(|_| rng.lognormal(40.0, 1.2)).collect();
    check_accuracy(&intake, &t, "lat.millis", &ms);
    let few: Vec<f64> = (0..100).map(|_| rng.lognormal(0.04, 1.2)).collect();
    check_accuracy(&intake, &t, "lat.few", &few);
}

#[test]
fn internal_tags_reach_no_sink() {
    let intake = Intake::start(KEY);
    let rw = common::remote_write::StandIn::start(&[]);
    let t = start(
        &intake,
        &format!(
            r#"
[remote_write]
url = "http://{}/api/v1/write"
"#,
            rw.addr
        ),
    );
    t.send_udp(
        "it.hits:1|c|#env:prod,dd.internal.entity_id:abc\n\
         it.temp:2|g|#env:prod,dd.internal.card:high\n\
         it.dist:3|d|#dd.internal.jmx_check_name:kafka,env:prod|c:container-1\n\
         _e{5,4}:title|text|#env:prod,dd.internal.entity_id:abc,dd.internal.card:low\n\
         _sc|it.up|0|#env:prod,dd.internal.card:orchestrator,dd.internal.entity_id:abc\n",
    );
    intake.wait(15, "series, sketch, event and check", |a| {
        ["it.hits", "it.temp"]
            .iter()
            .all(|n| a.series.iter().any(|s| s.metric == *n))
            && a.sketches.iter().any(|s| s.metric == "it.dist")
            && !a.events.is_empty()
            && !a.checks.is_empty()
    });
    {
        let a = intake.accepted();
        for s in a.series.iter().filter(|s| s.metric.starts_with("it.")) {
            assert_eq!(s.tags, vec!["env:prod"], "{}", s.metric);
        }
        for s in a.sketches.iter().filter(|s| s.metric == "it.dist") {
            assert_eq!(s.tags, vec!["env:prod"]);
        }
        assert_eq!(a.events[0]["tags"], serde_json::json!(["env:prod"]));
        assert_eq!(a.checks[0]["tags"], serde_json::json!(["env:prod"]));
    }
    let m = t.wait_metrics(|m| m.contains("it_hits_total"), "it_hits_total on /metrics");
    for line in m.lines().filter(|l| l.starts_with("it_")) {
        assert!(
            !line.contains("dd_internal") && !line.contains("abc") && line.contains("env=\"prod\""),
            "{line}"
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let series = loop {
        let s: Vec<String> = rw
            .seen()
            .into_iter()
            .flat_map(|r| r.series)
            .filter(|s| s.starts_with("it_"))
            .collect();
        if s.iter().any(|s| s.starts_with("it_hits")) && s.iter().any(|s| s.starts_with("it_temp"))
        {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "remote_write: {s:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for s in &series {
        assert!(
            !s.contains("dd_internal") && s.contains("env=\"prod\""),
            "{s}"
        );
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[test]
fn a_counter_reads_zero_for_the_expiry_then_disappears() {
    let intake = Intake::start(KEY);
    let t = start(&intake, "[datadog]\nexpiry_seconds = 3\n");
    t.send_udp("zf.errors:4|c|#env:prod\n");
    intake.wait(15, "the counter", |a| {
        a.series.iter().any(|s| s.metric == "zf.errors")
    });
    // A heartbeat keeps windows coming; wait for windows well past the expiry.
    let first = {
        let a = intake.accepted();
        a.series
            .iter()
            .find(|s| s.metric == "zf.errors")
            .map(|s| s.points[0].timestamp)
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        t.send_udp("zf.hb:1|g\n");
        let done = intake
            .accepted()
            .series
            .iter()
            .any(|s| s.metric == "zf.hb" && s.points[0].timestamp >= first + 6);
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "heartbeat windows");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let a = intake.accepted();
    let mut points: Vec<(i64, f64)> = a
        .series
        .iter()
        .filter(|s| s.metric == "zf.errors")
        .map(|s| {
            assert_eq!((s.mtype, s.interval), (2, 1), "a RATE with its interval");
            assert_eq!(s.tags, vec!["env:prod"]);
            (s.points[0].timestamp, s.points[0].value)
        })
        .collect();
    points.sort_by_key(|p| p.0);
    assert_eq!(
        points,
        vec![
            (first, 4.0),
            (first + 1, 0.0),
            (first + 2, 0.0),
            (first + 3, 0.0)
        ],
        "the sample, then zeros for 3 s, then nothing"
    );
}

#[test]
fn timestamped_gauges_and_counts_keep_their_timestamp() {
    let intake = Intake::start(KEY);
    let t = start(&intake, "");
    let past = unix_now() - 60;
    t.send_udp(&format!(
        "ts.temp:5|g|#env:prod|T{past}\n\
         ts.hits:3|c|#env:prod|T{past}\n\
         ts.temp:7|g|#env:prod\n\
         ts.hits:2|c|#env:prod\n\
         ts.lat:9|d|T{past}\n"
    ));
    intake.wait(15, "timestamped and windowed points", |a| {
        a.series
            .iter()
            .filter(|s| s.metric.starts_with("ts."))
            .count()
            >= 4
            && a.sketches.iter().any(|s| s.metric == "ts.lat")
    });
    let a = intake.accepted();
    let of = |m: &str| -> Vec<(i32, i64, f64, i64)> {
        a.series
            .iter()
            .filter(|s| s.metric == m)
            .map(|s| {
                (
                    s.mtype,
                    s.points[0].timestamp,
                    s.points[0].value,
                    s.interval,
                )
            })
            .collect()
    };
    let (temp, hits) = (of("ts.temp"), of("ts.hits"));
    // GAUGE = 3, COUNT = 1, RATE = 2.
    assert!(temp.contains(&(3, past, 5.0, 0)), "{temp:?}");
    assert!(hits.contains(&(1, past, 3.0, 0)), "{hits:?}");
    let now_temp: Vec<_> = temp.iter().filter(|p| p.1 != past).collect();
    let now_hits: Vec<_> = hits.iter().filter(|p| p.1 != past).collect();
    assert_eq!(now_temp.len(), 1, "{temp:?}");
    assert_eq!((now_temp[0].0, now_temp[0].2), (3, 7.0));
    assert_eq!(
        (now_hits[0].0, now_hits[0].2),
        (2, 2.0),
        "the window holds the untimed count alone: {hits:?}"
    );
    assert!(now_temp[0].1 > past + 30);
    // A distribution with a timestamp is aggregated, its timestamp ignored (as the Agent does).
    let d = a
        .sketches
        .iter()
        .find(|s| s.metric == "ts.lat")
        .expect("sketch");
    assert!(d.dogsketches[0].ts > past + 30);
    drop(a);
    let m = t.wait_metrics(
        |m| m.contains("tallyd_statsd_timestamps_ignored_total 1"),
        "counted",
    );
    assert!(m.contains("tallyd_statsd_timestamped_total 2"), "{m}");
}

/// One Agent setting given as its DD_* variable: what to send, what the intake must then show.
struct SettingCase {
    env: &'static [(&'static str, &'static str)],
    send: &'static str,
    /// Series or sketch names that must arrive...
    present: &'static [&'static str],
    /// ...and ones that must not (checked once the present ones are in).
    absent: &'static [&'static str],
    /// Tags every series and sketch must carry.
    tags: &'static [&'static str],
}

fn names(a: &Accepted) -> Vec<String> {
    a.series
        .iter()
        .map(|s| s.metric.clone())
        .chain(a.sketches.iter().map(|s| format!("sketch:{}", s.metric)))
        .collect()
}

#[test]
fn each_agent_dogstatsd_setting_changes_what_the_intake_receives() {
    let cases = [
        SettingCase {
            env: &[("DD_HISTOGRAM_AGGREGATES", "min max")],
            send: "set.lat:1|h\nset.lat:3|h\n",
            present: &["set.lat.min", "set.lat.max"],
            absent: &["set.lat.avg", "set.lat.count", "set.lat.median"],
            tags: &[],
        },
        SettingCase {
            env: &[("DD_HISTOGRAM_PERCENTILES", "0.5 0.99")],
            send: "set.lat:1|ms\n",
            present: &["set.lat.50percentile", "set.lat.99percentile"],
            absent: &["set.lat.95percentile"],
            tags: &[],
        },
        SettingCase {
            env: &[("DD_DOGSTATSD_TAGS", "team:a region:eu")],
            send: "set.hits:1|c|#env:prod\nset.d:1|d\n",
            present: &["set.hits", "sketch:set.d"],
            absent: &[],
            tags: &["team:a", "region:eu"],
        },
        SettingCase {
            env: &[("DD_STATSD_METRIC_NAMESPACE", "app")],
            send: "set.hits:1|c\njvm.heap:5|g\n",
            present: &["app.set.hits", "jvm.heap"],
            absent: &["set.hits", "app.jvm.heap"],
            tags: &[],
        },
        SettingCase {
            env: &[
                ("DD_STATSD_METRIC_NAMESPACE", "app."),
                ("DD_STATSD_METRIC_NAMESPACE_BLOCKLIST", "keep"),
            ],
            send: "keep.hits:1|c\njvm.heap:5|g\n",
            present: &["keep.hits", "app.jvm.heap"],
            absent: &["app.keep.hits"],
            tags: &[],
        },
        SettingCase {
            env: &[
                ("DD_HISTOGRAM_COPY_TO_DISTRIBUTION", "true"),
                ("DD_HISTOGRAM_COPY_TO_DISTRIBUTION_PREFIX", "dist."),
            ],
            send: "set.lat:7|h\n",
            present: &["set.lat.max", "sketch:dist.set.lat"],
            absent: &[],
            tags: &[],
        },
        SettingCase {
            env: &[(
                "DD_DOGSTATSD_MAPPER_PROFILES",
                r#"[{"name":"airflow","prefix":"airflow.","mappings":[{"match":"airflow.job.duration_sec.*","name":"airflow.job.duration","tags":{"job_type":"$1"}}]}]"#,
            )],
            send: "airflow.job.duration_sec.scheduler:2|g\n",
            present: &["airflow.job.duration"],
            absent: &["airflow.job.duration_sec.scheduler"],
            tags: &["job_type:scheduler"],
        },
        SettingCase {
            env: &[("DD_DOGSTATSD_BUFFER_SIZE", "512")],
            // A 600-byte datagram: the kernel cuts it at 512 and its last line is dropped.
            send: "",
            present: &["set.first"],
            absent: &["set.last"],
            tags: &[],
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let intake = Intake::start(KEY);
        let t = Tallyd::start_raw(&config(&intake, ""), c.env);
        if c.send.is_empty() {
            let pad = "x".repeat(560);
            t.send_udp(&format!(
                "set.first:1|c\nset.pad:1|c|#{pad}\nset.last:1|c\n"
            ));
        } else {
            t.send_udp(c.send);
        }
        let what = format!("case {i} {:?}", c.env);
        intake.wait(15, &what, |a| {
            let n = names(a);
            c.present.iter().all(|p| n.iter().any(|x| x == p))
        });
        // One more window, so that anything else sent with the lines has arrived too.
        t.send_udp("set.hb:1|g\n");
        // (Namespaced in some cases.)
        intake.wait(15, &what, |a| {
            names(a).iter().any(|x| x.ends_with("set.hb"))
        });
        let a = intake.accepted();
        let n = names(&a);
        for x in c.absent {
            assert!(!n.iter().any(|y| y == x), "{what}: {x} arrived: {n:?}");
        }
        for tag in c.tags {
            for s in a
                .series
                .iter()
                .filter(|s| c.present.contains(&s.metric.as_str()))
            {
                assert!(
                    s.tags.iter().any(|t| t == tag),
                    "{what}: {} lacks {tag}",
                    s.metric
                );
            }
            for s in &a.sketches {
                assert!(
                    s.tags.iter().any(|t| t == tag),
                    "{what}: sketch lacks {tag}"
                );
            }
        }
    }
}

#[test]
fn agent_listener_settings_from_the_environment() {
    // DD_DOGSTATSD_SOCKET: the Unix socket the lines arrive on.
    let intake = Intake::start(KEY);
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("dsd.socket");
    let sock_s = sock.display().to_string();
    let t = Tallyd::start_raw(
        &config(&intake, ""),
        &[
            ("DD_DOGSTATSD_SOCKET", sock_s.as_str()),
            ("DD_DOGSTATSD_NON_LOCAL_TRAFFIC", "true"),
            ("DD_DOGSTATSD_EXPIRY_SECONDS", "0"),
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sock.exists() {
        assert!(std::time::Instant::now() < deadline, "socket {sock_s}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let c = std::os::unix::net::UnixDatagram::unbound().expect("unix socket");
    c.send_to(b"uds.hits:2|c\n", &sock)
        .expect("send to the socket");
    intake.wait(15, "a line over the socket", |a| {
        a.series.iter().any(|s| s.metric == "uds.hits")
    });
    // DD_DOGSTATSD_NON_LOCAL_TRAFFIC=true: every interface, the configured port kept.
    let udp = t.udp.expect("udp");
    assert!(udp.ip().is_unspecified(), "{udp}");
    // DD_DOGSTATSD_EXPIRY_SECONDS=0: no zero-fill.
    let first = intake
        .accepted()
        .series
        .iter()
        .find(|s| s.metric == "uds.hits")
        .map(|s| s.points[0].timestamp)
        .unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        t.send_udp("uds.hb:1|g\n");
        let a = intake.accepted();
        if a.series
            .iter()
            .any(|s| s.metric == "uds.hb" && s.points[0].timestamp >= first + 3)
        {
            assert_eq!(
                a.series.iter().filter(|s| s.metric == "uds.hits").count(),
                1,
                "no zeros with expiry 0"
            );
            break;
        }
        drop(a);
        assert!(std::time::Instant::now() < deadline, "heartbeat windows");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn otlp_delta_monotonic_sums_reach_datadog_as_counts() {
    let intake = Intake::start(KEY);
    let t = start(&intake, "");
    t.send_udp("dsd.hits:4|c\n");
    let body = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
        {"name":"otlp.hits","sum":{"aggregationTemporality":1,"isMonotonic":true,
          "dataPoints":[{"asInt":"7","timeUnixNano":"1700000000000000000"}]}}]}]}]}"#;
    let (code, answer) = common::http_request(
        t.otlp_http.expect("otlp http"),
        "POST",
        "/v1/metrics",
        &[("Content-Type", "application/json")],
        body,
    );
    assert_eq!(code, 200, "{answer}");
    intake.wait(15, "both counters", |a| {
        ["dsd.hits", "otlp.hits"]
            .iter()
            .all(|n| a.series.iter().any(|s| s.metric == *n))
    });
    let a = intake.accepted();
    let get = |m: &str| {
        let s = a.series.iter().find(|s| s.metric == m).expect("series");
        (s.mtype, s.points[0].value, s.interval)
    };
    // COUNT = 1 with the delta as its value; a DogStatsD counter stays a RATE (2) per second.
    assert_eq!(get("otlp.hits"), (1, 7.0, 1));
    assert_eq!(get("dsd.hits"), (2, 4.0, 1));
}
