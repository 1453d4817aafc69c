//! Tests of `sinks/prometheus/mod.rs`.

use super::exposition::Value;
use super::*;
use crate::aggregate::{Series, SeriesValue};
use crate::model::{Context, MetricKind};
use std::time::Duration;

use crate::sinks::testutil::summary;

fn flush(ts: u64, series: Vec<(MetricKind, &str, &[&str], SeriesValue)>) -> Arc<Flush> {
    Arc::new(crate::sinks::testutil::flush(ts, series))
}

fn sink() -> Prometheus {
    Prometheus::new(
        Duration::from_secs(300),
        1000,
        Arc::new(Telemetry::default()),
    )
}

fn user_part(text: &str) -> String {
    text.split("# HELP tallyd_build_info")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn exposition_of_each_kind() {
    let p = sink();
    p.consume(&flush(
        0,
        vec![
            (
                MetricKind::Counter,
                "page.views",
                &["env:prod", "flag"],
                SeriesValue::Counter(3.0),
            ),
            (MetricKind::Gauge, "temp-c", &[], SeriesValue::Gauge(-1.5)),
            (MetricKind::Set, "users", &[], SeriesValue::Set(4)),
            (
                MetricKind::Timer,
                "db.query",
                &["db:main"],
                summary(&[1.0, 2.0, 3.0]),
            ),
        ],
    ));
    p.consume(&flush(
        10,
        vec![(
            MetricKind::Counter,
            "page.views",
            &["env:prod", "flag"],
            SeriesValue::Counter(2.0),
        )],
    ));
    let text = user_part(&p.render(false));
    let want = "\
# HELP db_query statsd timer db_query
# TYPE db_query summary
db_query{db=\"main\",quantile=\"0.5\"} 2
db_query{db=\"main\",quantile=\"0.99\"} 3
db_query_sum{db=\"main\"} 6
db_query_count{db=\"main\"} 3
# HELP page_views_total statsd counter page_views
# TYPE page_views_total counter
page_views_total{env=\"prod\"} 5
# HELP temp_c statsd gauge temp_c
# TYPE temp_c gauge
temp_c -1.5
# HELP users statsd set users
# TYPE users gauge
users 4
";
    assert_eq!(text, want);
    let om = p.render(true);
    assert!(
        om.contains("# TYPE page_views counter\npage_views_total{env=\"prod\"} 5\n"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"));
}

#[test]
fn windows_are_folded_in_order_off_the_flusher_and_scrapes_see_the_newest() {
    let p = sink();
    let counter = |ts, v| {
        flush(
            ts,
            vec![(MetricKind::Counter, "hits", &[], SeriesValue::Counter(v))],
        )
    };
    // While the state is held (by a scrape's copy, say), consume only queues: on this
    // thread, waiting for the lock would deadlock the test.
    let held = lock(&p.shared.state);
    for (ts, v) in [(0, 1.0), (10, 2.0), (20, 4.0)] {
        p.consume(&counter(ts, v));
    }
    assert_eq!(held.len(), 0);
    drop(held);
    // A scrape folds what is still queued, oldest first, before it copies.
    assert!(user_part(&p.render(false)).contains("hits_total 7\n"));

    // Without a scrape, the sink's own thread folds the window.
    p.consume(&counter(30, 8.0));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lock(&p.shared.pending).is_empty() {
        assert!(std::time::Instant::now() < deadline, "folding thread");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Folded by that thread (nothing else ran): the state holds the new total already.
    let rows = lock(&p.shared.state).snapshot().rows;
    assert!(
        matches!(rows.as_slice(), [(_, Value::Counter(v), _)] if *v == 15.0),
        "{rows:?}"
    );

    // Racing a scraper thread and the folding thread: every window is folded exactly once.
    let p = Arc::new(sink());
    let scraper = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || {
            for _ in 0..100 {
                p.render(false);
            }
        })
    };
    for i in 0..200u64 {
        p.consume(&counter(i * 10, 1.0));
    }
    scraper.join().expect("scraper");
    assert!(user_part(&p.render(false)).contains("hits_total 200\n"));
}

#[test]
fn label_rules() {
    let c = Context::from_unsorted(
        MetricKind::Gauge,
        "m",
        &[
            "env:b",
            "env:a",
            "1st:x",
            "__name__:y",
            "quantile:q",
            "my.key:va\"l\\ue",
            "bare",
            "empty:",
            "url:http://x",
        ],
    );
    assert_eq!(
        render_labels(&c),
        "_1st=\"x\",env=\"a,b\",exported___name__=\"y\",exported_quantile=\"q\",my_key=\"va\\\"l\\\\ue\",url=\"http://x\""
    );
    assert_eq!(sanitize_name("9lives.x-y:z"), "_9lives_x_y:z");
}

#[test]
fn clashes_never_break_the_scrape() {
    let p = sink();
    p.consume(&flush(
        0,
        vec![
            (MetricKind::Counter, "foo", &[], SeriesValue::Counter(1.0)),
            (MetricKind::Timer, "foo", &[], summary(&[1.0])),
            (MetricKind::Histogram, "foo", &[], summary(&[2.0])),
            (
                MetricKind::Gauge,
                "foo_timer_count",
                &[],
                SeriesValue::Gauge(1.0),
            ),
            (MetricKind::Gauge, "bar", &["flag"], SeriesValue::Gauge(1.0)),
            (
                MetricKind::Gauge,
                "bar",
                &["other"],
                SeriesValue::Gauge(2.0),
            ),
            (
                MetricKind::Gauge,
                "tallyd_uptime_seconds",
                &[],
                SeriesValue::Gauge(2.0),
            ),
        ],
    ));
    let text = user_part(&p.render(false));
    assert!(text.contains("foo_total 1\n"), "{text}");
    assert!(text.contains("foo_timer_count 1\n"), "{text}");
    assert!(text.contains("foo_histogram_count 1\n"), "{text}");
    assert!(!text.contains("tallyd_uptime_seconds"), "{text}");
    // The gauge foo_timer_count sorts after the timer that claimed that name: renamed.
    assert!(text.contains("foo_timer_count_gauge 1\n"), "{text}");
    // Valueless tags are not labels, so the two `bar` series clash: one is left out, and
    // so is the reserved name.
    assert_eq!(
        text.lines().filter(|l| l.starts_with("bar ")).count(),
        1,
        "{text}"
    );
    assert_eq!(p.shared.telemetry.prom_conflicts.load(Relaxed), 2);
    let names: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
    let unique: std::collections::HashSet<&&str> = names.iter().collect();
    assert_eq!(names.len(), unique.len());
}

#[test]
fn series_expire_after_ttl() {
    let p = Prometheus::new(
        Duration::from_secs(30),
        1000,
        Arc::new(Telemetry::default()),
    );
    p.consume(&flush(
        0,
        vec![(MetricKind::Gauge, "old", &[], SeriesValue::Gauge(1.0))],
    ));
    p.consume(&flush(
        20,
        vec![(MetricKind::Gauge, "new", &[], SeriesValue::Gauge(1.0))],
    ));
    assert!(user_part(&p.render(false)).contains("old 1"));
    p.consume(&flush(30, vec![]));
    let text = user_part(&p.render(false));
    assert!(!text.contains("old 1"), "{text}");
    assert!(text.contains("new 1"), "{text}");
}

#[test]
fn expiry_follows_each_series_own_age() {
    let p = Prometheus::new(
        Duration::from_secs(30),
        1000,
        Arc::new(Telemetry::default()),
    );
    let g = |name: &'static str| (MetricKind::Gauge, name, &[][..], SeriesValue::Gauge(1.0));
    p.consume(&flush(0, vec![g("a")]));
    p.consume(&flush(10, vec![g("b")]));
    p.consume(&flush(20, vec![g("c")]));
    p.consume(&flush(30, vec![]));
    let text = user_part(&p.render(false));
    assert!(
        !text.contains("\na 1") && !text.starts_with("a 1"),
        "{text}"
    );
    assert!(text.contains("b 1") && text.contains("c 1"), "{text}");
    p.consume(&flush(40, vec![g("c")]));
    let text = user_part(&p.render(false));
    assert!(!text.contains("b 1"), "{text}");
    assert!(text.contains("c 1"), "{text}");
    p.consume(&flush(69, vec![]));
    assert!(user_part(&p.render(false)).contains("c 1"));
    p.consume(&flush(70, vec![]));
    assert_eq!(user_part(&p.render(false)), "");
    assert_eq!(p.shared.telemetry.prom_series.load(Relaxed), 0);
}

#[test]
fn one_series_per_context_whatever_the_arc() {
    // The aggregator may hand over a new Arc for a context it forgot and saw again.
    let p = sink();
    let ctx = Arc::new(Context::from_unsorted(MetricKind::Counter, "c", &["a:1"]));
    let with = |ctx: Arc<Context>, ts: u64| {
        Arc::new(Flush {
            timestamp: ts,
            interval: Duration::from_secs(10),
            percentiles: Arc::from(vec![0.5]),
            series: vec![Series::new(ctx, SeriesValue::Counter(1.0))],
            events: vec![],
            service_checks: vec![],
            timestamped: vec![],
            recycle: Default::default(),
        })
    };
    p.consume(&with(Arc::clone(&ctx), 0));
    p.consume(&with(Arc::clone(&ctx), 10));
    p.consume(&with(Arc::new((*ctx).clone()), 20));
    assert!(user_part(&p.render(false)).contains("c_total{a=\"1\"} 3\n"));
    assert_eq!(p.shared.telemetry.prom_series.load(Relaxed), 1);
}

#[test]
fn a_scrape_is_handed_on_in_pieces() {
    let p = sink();
    let names: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
    let series = names
        .iter()
        .map(|n| {
            let (kind, value) = if n.len() % 2 == 0 {
                (MetricKind::Counter, SeriesValue::Counter(1.0))
            } else {
                (MetricKind::Gauge, SeriesValue::Gauge(2.0))
            };
            (kind, n.as_str(), &["env:prod"][..], value)
        })
        .collect();
    p.consume(&flush(0, series));
    let whole = p.render(false);
    let mut pieces: Vec<String> = Vec::new();
    p.render_to(false, 4096, &mut |piece| {
        pieces.push(piece);
        true
    });
    assert!(pieces.len() > 3, "{}", pieces.len());
    // Every piece but the last is handed on as soon as it reaches the size: by the end of
    // the line (a family header or a sample) that crossed it.
    for piece in &pieces[..pieces.len() - 1] {
        assert!(
            piece.len() >= 4096 && piece.len() < 4096 + 200,
            "{}",
            piece.len()
        );
        assert!(piece.ends_with('\n'));
    }
    // The same text as in one piece (tallyd's own metrics, uptime say, move between the
    // two renders).
    let joined = pieces.concat();
    assert_eq!(user_part(&joined), user_part(&whole));
    assert!(joined.contains("\n# HELP tallyd_prometheus_update_seconds "));
    // A scraper that goes away: nothing more is formatted or handed on.
    let mut handed = 0;
    p.render_to(false, 4096, &mut |_| {
        handed += 1;
        false
    });
    assert_eq!(handed, 1);
}

#[test]
fn series_limit() {
    let p = Prometheus::new(Duration::from_secs(30), 1, Arc::new(Telemetry::default()));
    p.consume(&flush(
        0,
        vec![
            (MetricKind::Gauge, "a", &[], SeriesValue::Gauge(1.0)),
            (MetricKind::Gauge, "b", &[], SeriesValue::Gauge(1.0)),
        ],
    ));
    p.sync();
    assert_eq!(p.shared.telemetry.prom_series_dropped.load(Relaxed), 1);
    assert_eq!(p.shared.telemetry.prom_series.load(Relaxed), 1);
}

#[test]
fn cumulative_totals_never_leave_the_finite_numbers() {
    use super::exposition::cumulate;
    assert_eq!(cumulate(1.0, 2.0), 3.0);
    // A total that would overflow starts again from the window's value (a counter reset).
    assert_eq!(cumulate(f64::MAX, f64::MAX), f64::MAX);
    assert_eq!(cumulate(1e308, -1e308), 0.0);
    assert_eq!(cumulate(-f64::MAX, -f64::MAX), -f64::MAX);
    assert_eq!(cumulate(5.0, f64::NAN), 5.0);
    assert_eq!(cumulate(5.0, f64::INFINITY), 5.0);
}

#[test]
fn scrape_bounds_must_be_positive() {
    use super::config::PrometheusConfig;
    assert!(PrometheusConfig::default().validate().is_ok());
    let zero = PrometheusConfig {
        max_concurrent_scrapes: 0,
        ..PrometheusConfig::default()
    };
    let e = zero.validate().expect_err("zero scrapes");
    assert!(
        e.to_string().contains("prometheus.max_concurrent_scrapes"),
        "{e}"
    );
    let instant = PrometheusConfig {
        scrape_write_timeout: Duration::ZERO,
        ..PrometheusConfig::default()
    };
    let e = instant.validate().expect_err("zero timeout");
    assert!(
        e.to_string().contains("prometheus.scrape_write_timeout"),
        "{e}"
    );
}

fn opts(yaml: &str, observer: Observer) -> ExposeOptions {
    ExposeOptions {
        mapper: (!yaml.is_empty()).then(|| Arc::new(Mapper::parse(yaml).unwrap())),
        observer,
    }
}

fn samples(values: &[f64]) -> SeriesValue {
    summary(values)
}

#[test]
fn histograms_are_cumulative_and_typed() {
    let o = opts("", Observer::Histogram(vec![1.0, 5.0].into()));
    let p = Prometheus::with_options(
        Duration::from_secs(300),
        100,
        &o,
        Arc::new(Telemetry::default()),
    );
    let series = vec![(
        MetricKind::Histogram,
        "lat",
        &["a:b"][..],
        samples(&[0.5, 1.0, 3.0, 9.0]),
    )];
    p.consume(&flush(10, series));
    let series = vec![(MetricKind::Histogram, "lat", &["a:b"][..], samples(&[2.0]))];
    p.consume(&flush(20, series));
    let text = p.render(false);
    for line in [
        "# TYPE lat histogram\n",
        "lat_bucket{a=\"b\",le=\"1\"} 2\n",
        "lat_bucket{a=\"b\",le=\"5\"} 4\n",
        "lat_bucket{a=\"b\",le=\"+Inf\"} 5\n",
        "lat_sum{a=\"b\"} 15.5\n",
        "lat_count{a=\"b\"} 5\n",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(p.render(true).contains("# TYPE lat histogram\n"));
}

#[test]
fn total_is_not_doubled_and_negative_counters_are_refused() {
    let t = Arc::new(Telemetry::default());
    let p = Prometheus::new(Duration::from_secs(300), 100, Arc::clone(&t));
    p.consume(&flush(
        10,
        vec![(
            MetricKind::Counter,
            "req_total",
            &[],
            SeriesValue::Counter(3.0),
        )],
    ));
    p.consume(&flush(
        20,
        vec![(
            MetricKind::Counter,
            "req_total",
            &[],
            SeriesValue::Counter(-2.0),
        )],
    ));
    p.consume(&flush(
        30,
        vec![(
            MetricKind::Counter,
            "fresh",
            &[],
            SeriesValue::Counter(-1.0),
        )],
    ));
    let text = p.render(false);
    assert!(text.contains("\nreq_total 3\n"), "{text}");
    assert!(!text.contains("req_total_total"), "{text}");
    assert!(!text.contains("\nfresh"), "{text}");
    assert!(
        text.contains("tallyd_prometheus_samples_rejected_total{reason=\"negative_counter\"} 2\n"),
        "{text}"
    );
}

#[test]
fn mapping_renames_scales_timers_and_drops() {
    let yaml = r#"
mappings:
- match: app.*.latency
  name: "app_latency_seconds"
  observer_type: histogram
  histogram_options:
    buckets: [0.1, 1]
  labels:
    handler: "$1"
- match: app.*.hits
  name: "app_hits_total"
  labels:
    handler: "$1"
- match: noise.*
  action: drop
  name: "x"
"#;
    let t = Arc::new(Telemetry::default());
    let p = Prometheus::with_options(
        Duration::from_secs(300),
        100,
        &opts(yaml, Observer::Summary(None)),
        Arc::clone(&t),
    );
    let series = vec![
        (
            MetricKind::Timer,
            "app.login.latency",
            &[][..],
            samples(&[50.0, 500.0, 5000.0]),
        ),
        (
            MetricKind::Counter,
            "app.login.hits",
            &[],
            SeriesValue::Counter(2.0),
        ),
        (
            MetricKind::Counter,
            "app.logout.hits",
            &["env:x"],
            SeriesValue::Counter(1.0),
        ),
        (MetricKind::Gauge, "noise.a", &[], SeriesValue::Gauge(1.0)),
    ];
    p.consume(&flush(10, series));
    let text = p.render(false);
    for line in [
        "app_latency_seconds_bucket{handler=\"login\",le=\"0.1\"} 1\n",
        "app_latency_seconds_bucket{handler=\"login\",le=\"1\"} 2\n",
        "app_latency_seconds_bucket{handler=\"login\",le=\"+Inf\"} 3\n",
        "app_latency_seconds_sum{handler=\"login\"} 5.55\n",
        "app_hits_total{handler=\"login\"} 2\n",
        "app_hits_total{env=\"x\",handler=\"logout\"} 1\n",
        "tallyd_prometheus_mapping_contexts_total{result=\"dropped\"} 1\n",
        "tallyd_prometheus_mapping_contexts_total{result=\"mapped\"} 3\n",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(!text.contains("noise"), "{text}");
    // Known contexts are not mapped again.
    let series = vec![(
        MetricKind::Counter,
        "app.login.hits",
        &[][..],
        SeriesValue::Counter(1.0),
    )];
    p.consume(&flush(20, series));
    let text = p.render(false);
    assert!(
        text.contains("app_hits_total{handler=\"login\"} 3\n"),
        "{text}"
    );
    assert!(text.contains("tallyd_prometheus_mapping_contexts_total{result=\"mapped\"} 3\n"));
}

#[test]
fn expired_series_are_kept_for_staleness_markers() {
    let mut e = Exposition::new(Duration::from_secs(10), 100);
    e.track_expired();
    e.update(&flush(
        0,
        vec![(MetricKind::Gauge, "g", &[], SeriesValue::Gauge(1.0))],
    ));
    assert!(e.take_expired().is_empty());
    e.update(&flush(
        20,
        vec![(MetricKind::Gauge, "h", &[], SeriesValue::Gauge(1.0))],
    ));
    let gone = e.take_expired();
    assert_eq!(gone.rows.len(), 1);
    assert_eq!(gone.rows[0].0.name(), "g");
    assert!(e.take_expired().is_empty());
}

#[test]
fn a_reshaper_puts_new_options_in_effect_at_the_next_window() {
    let first = "mappings:\n- match: a.*\n  name: first_total\n  labels:\n    x: $1\n";
    let second = "mappings:\n- match: a.*\n  name: second_total\n  labels:\n    x: $1\n";
    let mut e = Exposition::with_options(
        Duration::from_secs(300),
        100,
        &opts(first, Observer::Summary(None)),
    );
    let r = Arc::new(Reshaper::default());
    e.follow(Arc::clone(&r));
    let c = |v| {
        flush(
            0,
            vec![(MetricKind::Counter, "a.b", &[][..], SeriesValue::Counter(v))],
        )
    };
    e.update(&c(1.0));
    r.set(opts(second, Observer::Histogram(vec![1.0].into())));
    e.update(&c(2.0));
    let names: Vec<String> = e
        .snapshot()
        .rows
        .iter()
        .map(|(ctx, _, _)| ctx.name().to_string())
        .collect();
    assert!(names.contains(&"first_total".to_string()), "{names:?}");
    assert!(names.contains(&"second_total".to_string()), "{names:?}");
    assert_eq!(
        e.mapping_outcomes(),
        [2, 0, 0],
        "mapped again after the reload"
    );
}
