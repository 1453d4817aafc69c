//! Tests of `alert/eval.rs`.

use std::sync::Arc;

use super::*;
use crate::aggregate::{Series, SeriesValue};
use crate::alert::config::AlertsConfig;
use crate::alert::rules::build_rules;
use crate::base::metrics::{Families, Kind};
use crate::model::{Context, MetricKind};

const IV: u64 = 10;

fn rules(toml_text: &str) -> Vec<Rule> {
    let cfg: AlertsConfig =
        toml::from_str(&format!("default_rules = false\n{toml_text}")).expect("alerts toml");
    cfg.validate().expect("valid");
    build_rules(&cfg, true).expect("rules")
}

fn evaluator(toml_text: &str) -> Evaluator {
    Evaluator::new(
        rules(toml_text),
        "host-1".into(),
        Duration::from_secs(3600),
        100,
        50,
    )
}

fn series(kind: MetricKind, name: &str, tags: &[&str], value: SeriesValue) -> Series {
    Series::new(Arc::new(Context::from_unsorted(kind, name, tags)), value)
}
fn gauge(name: &str, tags: &[&str], v: f64) -> Series {
    series(MetricKind::Gauge, name, tags, SeriesValue::Gauge(v))
}
fn counter(name: &str, tags: &[&str], v: f64) -> Series {
    series(MetricKind::Counter, name, tags, SeriesValue::Counter(v))
}
fn timer(name: &str, values: &[f64]) -> Series {
    let mut samples = Samples::new();
    for v in values {
        samples.add(*v, 1);
    }
    series(
        MetricKind::Timer,
        name,
        &[],
        SeriesValue::Samples(Box::new(samples)),
    )
}

/// Evaluates the window that starts at `t` seconds.
fn at(e: &mut Evaluator, t: u64, series: Vec<Series>) -> Output {
    at_own(e, t, series, &[])
}
fn at_own(e: &mut Evaluator, t: u64, series: Vec<Series>, own: &[Family]) -> Output {
    let flush = Flush {
        timestamp: t,
        interval: Duration::from_secs(IV),
        percentiles: Arc::from(Vec::new()),
        series,
        events: vec![],
        service_checks: vec![],
        timestamped: vec![],
        recycle: Default::default(),
    };
    e.evaluate(&flush, own, true)
}

/// A snapshot of unlabelled self-metric families.
fn own(families: &[(Kind, &'static str, f64)]) -> Vec<Family> {
    let mut out = Families::new();
    for (kind, name, v) in families {
        out.family(*kind, name, "").value(*v);
    }
    out.into_vec()
}

fn kinds(o: &Output) -> Vec<(String, EventStatus, Severity)> {
    o.events
        .iter()
        .map(|e| (e.alert.clone(), e.status, e.severity))
        .collect()
}

#[test]
fn for_holds_before_firing() {
    let mut e = evaluator(
        "[[rules]]\nname = \"Q\"\nmetric = \"q\"\nwarn = 10.0\ncritical = 100.0\nfor = \"30s\"\n",
    );
    assert!(at(&mut e, 0, vec![gauge("q", &[], 20.0)]).events.is_empty());
    assert_eq!(e.snapshot().pending.len(), 1);
    assert!(at(&mut e, 10, vec![gauge("q", &[], 20.0)])
        .events
        .is_empty());
    assert!(at(&mut e, 20, vec![gauge("q", &[], 20.0)])
        .events
        .is_empty());
    let o = at(&mut e, 30, vec![gauge("q", &[], 200.0)]);
    assert_eq!(
        kinds(&o),
        vec![("Q".into(), EventStatus::Firing, Severity::Critical)]
    );
    assert_eq!(o.events[0].value, Some(200.0));
    assert_eq!(
        o.events[0].message,
        "Q is critical: q last = 200 (above 100)"
    );
    // A dip below the threshold resets `for`.
    let mut e = evaluator("[[rules]]\nname = \"Q\"\nmetric = \"q\"\nwarn = 10.0\nfor = \"20s\"\n");
    at(&mut e, 0, vec![gauge("q", &[], 20.0)]);
    at(&mut e, 10, vec![gauge("q", &[], 5.0)]);
    assert!(at(&mut e, 20, vec![gauge("q", &[], 20.0)])
        .events
        .is_empty());
    assert!(at(&mut e, 30, vec![gauge("q", &[], 20.0)])
        .events
        .is_empty());
    assert_eq!(kinds(&at(&mut e, 40, vec![gauge("q", &[], 20.0)])).len(), 1);
}

#[test]
fn repeat_interval_and_resolution() {
    let mut e = evaluator(
        "[[rules]]\nname = \"Q\"\nmetric = \"q\"\nwarn = 10.0\ncritical = 50.0\nrepeat_interval = \"30s\"\n",
    );
    assert_eq!(kinds(&at(&mut e, 0, vec![gauge("q", &[], 20.0)])).len(), 1);
    assert!(at(&mut e, 10, vec![gauge("q", &[], 20.0)])
        .events
        .is_empty());
    assert!(at(&mut e, 20, vec![gauge("q", &[], 20.0)])
        .events
        .is_empty());
    let o = at(&mut e, 30, vec![gauge("q", &[], 20.0)]);
    assert!(o.events[0].repeat, "repeat after 30 s");
    let o = at(&mut e, 40, vec![gauge("q", &[], 60.0)]);
    assert_eq!(o.events[0].previous_severity, Some(Severity::Warning));
    assert_eq!(o.events[0].severity, Severity::Critical);
    let o = at(&mut e, 50, vec![gauge("q", &[], 1.0)]);
    assert_eq!(
        kinds(&o),
        vec![("Q".into(), EventStatus::Resolved, Severity::Critical)]
    );
    assert_eq!(
        o.events[0].starts_at_ms, 10_000,
        "resolution carries the start of firing"
    );
    let snap = e.snapshot();
    assert!(snap.firing.is_empty());
    let events: Vec<&str> = snap.history.iter().map(|h| h.event).collect();
    assert_eq!(events, vec!["resolved", "changed", "repeated", "firing"]);
    // send_resolved = false keeps the recovery out of notifications (still in history).
    let mut e =
        evaluator("[[rules]]\nname = \"Q\"\nmetric = \"q\"\nwarn = 10.0\nsend_resolved = false\n");
    at(&mut e, 0, vec![gauge("q", &[], 20.0)]);
    assert!(at(&mut e, 10, vec![gauge("q", &[], 1.0)]).events.is_empty());
    assert_eq!(e.snapshot().history[0].event, "resolved");
}

#[test]
fn group_by_gives_one_alert_per_group() {
    let mut e = evaluator(
        "[[rules]]\nname = \"Pending\"\nmetric = \"queue.pending\"\ngroup_by = [\"queue_type\"]\nwarn = 1000.0\ncritical = 5000.0\nmessage = \"{{tags.queue_type}}: {{value}}\"\n",
    );
    let o = at(
        &mut e,
        0,
        vec![
            gauge("queue.pending", &["queue_type:email", "host:a"], 1500.0),
            gauge("queue.pending", &["queue_type:email", "host:b"], 7000.0),
            gauge("queue.pending", &["queue_type:sms"], 10.0),
            gauge("queue.pending", &["queue_type:push"], 2000.0),
        ],
    );
    let mut got: Vec<(String, Severity, String)> = o
        .events
        .iter()
        .map(|e| {
            (
                e.labels["queue_type"].clone(),
                e.severity,
                e.message.clone(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("email".into(), Severity::Critical, "email: 7000".into()),
            ("push".into(), Severity::Warning, "push: 2000".into())
        ]
    );
    assert_ne!(o.events[0].fingerprint, o.events[1].fingerprint);
    // Only push recovers.
    let o = at(
        &mut e,
        10,
        vec![
            gauge("queue.pending", &["queue_type:email"], 7000.0),
            gauge("queue.pending", &["queue_type:push"], 3.0),
        ],
    );
    assert_eq!(o.events.len(), 1);
    assert_eq!(
        (
            o.events[0].status,
            o.events[0].labels["queue_type"].as_str()
        ),
        (EventStatus::Resolved, "push")
    );
    assert_eq!(e.snapshot().firing.len(), 1);
}

#[test]
fn ratio_rules_in_percent() {
    let mut e = evaluator(
        "[[rules]]\nname = \"ErrRate\"\naggregation = \"sum\"\nwarn = 5.0\nnumerator = { metric = \"api.requests\", tags = [\"status:5xx\"] }\ndenominator = { metric = \"api.requests\" }\n",
    );
    let o = at(
        &mut e,
        0,
        vec![
            counter("api.requests", &["status:2xx"], 94.0),
            counter("api.requests", &["status:5xx"], 6.0),
        ],
    );
    assert_eq!(
        kinds(&o),
        vec![("ErrRate".into(), EventStatus::Firing, Severity::Warning)]
    );
    assert_eq!(o.events[0].value, Some(6.0));
    assert!(at(
        &mut e,
        10,
        vec![
            counter("api.requests", &["status:2xx"], 50.0),
            counter("api.requests", &["status:5xx"], 4.0)
        ]
    )
    .events
    .is_empty());
    // No errors at all this window: the numerator counts as 0 and the alert resolves.
    let o = at(
        &mut e,
        20,
        vec![counter("api.requests", &["status:2xx"], 100.0)],
    );
    assert_eq!(
        kinds(&o),
        vec![("ErrRate".into(), EventStatus::Resolved, Severity::Warning)]
    );
    assert_eq!(e.snapshot().history[0].value, Some(0.0));
    // No traffic: nothing to divide by, nothing fires.
    assert!(at(&mut e, 30, vec![]).events.is_empty());
}

#[test]
fn no_data_fires_and_resolves() {
    let mut e = evaluator("[[rules]]\nname = \"Live\"\nmetric = \"live.data\"\nno_data = \"30s\"\nno_data_severity = \"critical\"\n");
    assert!(at(&mut e, 0, vec![]).events.is_empty());
    assert!(at(&mut e, 10, vec![]).events.is_empty());
    // First evaluation ends at 10 s; 30 s later (window ending at 40 s) it fires.
    assert!(at(&mut e, 20, vec![]).events.is_empty());
    let o = at(&mut e, 30, vec![]);
    assert_eq!(
        kinds(&o),
        vec![("Live".into(), EventStatus::Firing, Severity::Critical)]
    );
    assert!(o.events[0].no_data);
    assert_eq!(o.events[0].labels["alert_kind"], "no_data");
    assert!(at(&mut e, 40, vec![]).events.is_empty(), "de-duplicated");
    let o = at(&mut e, 50, vec![gauge("live.data", &[], 1.0)]);
    assert_eq!(
        kinds(&o),
        vec![("Live".into(), EventStatus::Resolved, Severity::Critical)]
    );
}

#[test]
fn own_metrics_of_disabled_subsystems_never_fire_no_data() {
    let mut e = evaluator("[[rules]]\nname = \"Gps\"\nmetric = \"tallyd_gps_messages_total\"\naggregation = \"sum\"\nno_data = \"20s\"\n");
    for t in 0..10 {
        let flushes = own(&[(Kind::Counter, "tallyd_flush", 3.0)]);
        assert!(at_own(&mut e, t * IV, vec![], &flushes).events.is_empty());
    }
    // Once the family exists, its disappearance is an alert.
    let with = own(&[(Kind::Counter, "tallyd_gps_messages", 3.0)]);
    assert!(at_own(&mut e, 100, vec![], &with).events.is_empty());
    assert!(at_own(&mut e, 110, vec![], &[]).events.is_empty());
    assert_eq!(kinds(&at_own(&mut e, 120, vec![], &[])).len(), 1);
}

#[test]
fn default_rules_read_own_metrics_with_env_thresholds() {
    let env: Vec<(String, String)> = [
        ("ALERT_QUEUE_PENDING_WARN", "7"),
        ("ALERT_QUEUE_PENDING_CRIT", "70"),
        ("ALERT_NO_DATA_MINUTES", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let cfg = crate::config::Config::from_toml_with_env("", "t", &env).expect("config");
    assert_eq!(cfg.alerts.health.queue_pending_warn, 7.0);
    let rules = build_rules(&cfg.alerts, true).expect("rules");
    let mut e = Evaluator::new(rules, "h".into(), Duration::from_secs(3600), 100, 50);
    let own = |pending: u64, samples: u64| {
        own(&[
            (Kind::Gauge, "tallyd_forwarder_queue_depth", pending as f64),
            (Kind::Counter, "tallyd_statsd_samples", samples as f64),
            (Kind::Gauge, "tallyd_flush_duration_seconds", 0.001),
        ])
    };
    assert!(at_own(&mut e, 0, vec![], &own(6, 10)).events.is_empty());
    let o = at_own(&mut e, 10, vec![], &own(8, 20));
    assert_eq!(
        kinds(&o),
        vec![(
            "TallydForwarderQueuePending".into(),
            EventStatus::Firing,
            Severity::Warning
        )]
    );
    let o = at_own(&mut e, 20, vec![], &own(80, 30));
    assert_eq!(o.events[0].severity, Severity::Critical);
    // Samples stop growing: after a minute (ALERT_NO_DATA_MINUTES=1) "no data received" fires.
    let mut fired = None;
    for t in 3..12 {
        let o = at_own(&mut e, t * IV, vec![], &own(80, 30));
        if o.events.iter().any(|e| e.alert == "TallydNoDataReceived") {
            fired = Some(t);
            break;
        }
    }
    assert_eq!(
        fired,
        Some(9),
        "pending from the window at 30 s, firing 60 s later"
    );
    // An invalid environment value names the variable.
    let bad = vec![("ALERT_DLQ_WARN".to_string(), "lots".to_string())];
    let err = crate::config::Config::from_toml_with_env("", "t", &bad).expect_err("bad env");
    assert!(err.to_string().contains("ALERT_DLQ_WARN"), "{err}");
}

#[test]
fn counters_count_zero_when_absent_gauges_hold() {
    let mut e = evaluator(
        "[[rules]]\nname = \"Errs\"\nmetric = \"errors\"\naggregation = \"sum\"\nwarn = 5.0\n[[rules]]\nname = \"Temp\"\nmetric = \"temp\"\nwarn = 50.0\n",
    );
    let o = at(
        &mut e,
        0,
        vec![counter("errors", &[], 9.0), gauge("temp", &[], 80.0)],
    );
    assert_eq!(o.events.len(), 2);
    // Nothing sent next window: no errors counted (resolves); the gauge keeps its value.
    let o = at(&mut e, 10, vec![]);
    assert_eq!(
        kinds(&o),
        vec![("Errs".into(), EventStatus::Resolved, Severity::Warning)]
    );
    assert_eq!(e.snapshot().firing.len(), 1);
    // After GROUP_HOLD_MS without data the gauge's alert clears.
    let later = 10 + GROUP_HOLD_MS / 1000;
    let o = at(&mut e, later, vec![]);
    assert_eq!(
        kinds(&o),
        vec![("Temp".into(), EventStatus::Resolved, Severity::Warning)]
    );
}

#[test]
fn aggregations_over_timers_and_rates() {
    let mut e = evaluator(
        "[[rules]]\nname = \"P95\"\nmetric = \"lat\"\naggregation = \"p95\"\nwarn = 1000.0\n[[rules]]\nname = \"Rate\"\nmetric = \"hits\"\naggregation = \"rate\"\nwarn = 2.0\n[[rules]]\nname = \"Avg\"\nmetric = \"lat\"\naggregation = \"avg\"\nwarn = 2000.0\n",
    );
    let mut values: Vec<f64> = (1..=20).map(|i| i as f64 * 10.0).collect();
    values.extend([5000.0; 5]);
    let o = at(
        &mut e,
        0,
        vec![timer("lat", &values), counter("hits", &[], 30.0)],
    );
    let fired: Vec<String> = o.events.iter().map(|e| e.alert.clone()).collect();
    assert_eq!(
        fired,
        vec!["P95".to_string(), "Rate".to_string()],
        "p95 = 5000, rate = 3/s, avg = 1084"
    );
    assert_eq!(o.events[1].value, Some(3.0));
}

#[test]
fn groups_are_bounded() {
    let mut e = Evaluator::new(
        rules("[[rules]]\nname = \"G\"\nmetric = \"g\"\ngroup_by = [\"k\"]\nwarn = 1.0\n"),
        "h".into(),
        Duration::ZERO,
        3,
        10,
    );
    let s: Vec<Series> = (0..5)
        .map(|i| gauge("g", &[&format!("k:{i}")], 5.0))
        .collect();
    assert_eq!(at(&mut e, 0, s).events.len(), 3);
    assert_eq!(e.groups_dropped, 2);
}

#[test]
fn replacing_the_rules_keeps_the_state_of_the_rules_kept() {
    let mut e = evaluator(
        "[[rules]]\nname = \"Q\"\nmetric = \"q\"\nwarn = 10.0\n[[rules]]\nname = \"Gone\"\nmetric = \"q\"\nwarn = 1.0\n",
    );
    assert_eq!(kinds(&at(&mut e, 0, vec![gauge("q", &[], 20.0)])).len(), 2);
    // Q's threshold moves (still firing), Gone goes, New comes.
    e.replace_rules(
        rules("[[rules]]\nname = \"Q\"\nmetric = \"q\"\nwarn = 15.0\n[[rules]]\nname = \"New\"\nmetric = \"q\"\nwarn = 5.0\n"),
        Duration::from_secs(3600),
    );
    let o = at(&mut e, 10, vec![gauge("q", &[], 20.0)]);
    assert_eq!(
        kinds(&o),
        vec![("New".to_string(), EventStatus::Firing, Severity::Warning)],
        "Q keeps firing without a new notification"
    );
    let s = e.snapshot();
    assert_eq!(s.rules, 2);
    let firing: Vec<&str> = s.firing.iter().map(|a| a.alert.as_str()).collect();
    assert_eq!(firing.len(), 2, "{firing:?}");
    assert!(firing.contains(&"Q") && firing.contains(&"New"));
    // Under Q's new threshold it resolves, by the new rule.
    let o = at(&mut e, 20, vec![gauge("q", &[], 12.0)]);
    assert_eq!(
        kinds(&o),
        vec![("Q".to_string(), EventStatus::Resolved, Severity::Warning)]
    );
}
