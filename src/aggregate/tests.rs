//! Tests of `aggregate/mod.rs`.

use super::*;
use crate::config::Config;
use crate::model::dogstatsd::{parse_line, Line, ParseError};
use crate::telemetry::LocalStats;

fn agg(cfg: Config) -> Aggregator {
    Aggregator::new(
        &cfg.aggregate,
        cfg.statsd.gauge_mode,
        Arc::new(Telemetry::default()),
    )
}

fn feed(shard: &Mutex<Shard>, shared: &Shared, lines: &[&str]) -> LocalStats {
    let mut stats = LocalStats::default();
    let mut s = lock(shard);
    for l in lines {
        match parse_line(l.as_bytes(), 100) {
            Ok(Line::Metric(m)) => s.apply(&m, shared.seq(), &mut stats).expect("apply"),
            other => panic!("{l}: {other:?}"),
        }
    }
    stats
}

fn find<'a>(f: &'a Flush, name: &str, tags: &[&str]) -> &'a SeriesValue {
    let want = Context::from_unsorted(
        f.series
            .iter()
            .find(|s| s.ctx.name() == name)
            .map(|s| s.ctx.kind())
            .expect("name present"),
        name,
        tags,
    );
    &f.series
        .iter()
        .find(|s| *s.ctx == want)
        .unwrap_or_else(|| panic!("{name} {tags:?}"))
        .value
}

#[test]
fn a_line_that_would_overflow_its_window_is_rejected_whole() {
    let a = agg(Config::default());
    let s = a.new_shard();
    let shared = a.shared();
    let mut stats = LocalStats::default();
    let apply = |line: &str, stats: &mut LocalStats| {
        let Ok(Line::Metric(m)) = parse_line(line.as_bytes(), 100) else {
            panic!("{line} parses")
        };
        lock(&s).apply(&m, shared.seq(), stats)
    };
    assert!(apply("c:1e308|c", &mut stats).is_ok());
    assert_eq!(apply("c:1e308|c", &mut stats), Err(ParseError::Value));
    assert!(apply("t:1e308|ms", &mut stats).is_ok());
    assert_eq!(apply("t:1e308|ms", &mut stats), Err(ParseError::Value));
    assert_eq!(stats.samples, 2, "the rejected lines counted nothing");
    let f = a.flush(100);
    assert!(matches!(find(&f, "c", &[]), SeriesValue::Counter(v) if *v == 1e308));
    let SeriesValue::Samples(h) = find(&f, "t", &[]) else {
        panic!("samples")
    };
    assert_eq!((h.count(), h.sum()), (1, 1e308));
}

#[test]
fn delta_gauges_refuse_to_overflow() {
    let mut cfg = Config::default();
    cfg.statsd.gauge_mode = crate::aggregate::GaugeMode::Delta;
    let a = agg(cfg);
    let s = a.new_shard();
    let mut stats = LocalStats::default();
    for (line, ok) in [
        ("g:+1e308|g", true),
        ("g:+1e308|g", false),
        ("g:-1e308|g", true),
    ] {
        let Ok(Line::Metric(m)) = parse_line(line.as_bytes(), 100) else {
            panic!("{line} parses")
        };
        assert_eq!(
            lock(&s).apply(&m, a.shared().seq(), &mut stats).is_ok(),
            ok,
            "{line}"
        );
    }
    let f = a.flush(100);
    assert!(matches!(find(&f, "g", &[]), SeriesValue::Gauge(v) if v.is_finite()));
}

#[test]
fn counters_gauges_sets_samples() {
    let a = agg(Config::default());
    let s = a.new_shard();
    let stats = feed(
        &s,
        a.shared(),
        &[
            "hits:1|c|#b:2,a:1",
            "hits:2|c|#a:1,b:2,a:1",
            "hits:1|c|@0.5|#a:1,b:2",
            "temp:10|g",
            "temp:12|g",
            "users:al|s",
            "users:bo|s",
            "users:al|s",
            "lat:1:2:3:4|ms",
        ],
    );
    assert_eq!(stats.samples, 12);
    let f = a.flush(100);
    assert_eq!(f.series.len(), 4);
    assert!(matches!(find(&f, "hits", &["a:1", "b:2"]), SeriesValue::Counter(v) if *v == 5.0));
    assert!(matches!(find(&f, "temp", &[]), SeriesValue::Gauge(v) if *v == 12.0));
    assert!(matches!(find(&f, "users", &[]), SeriesValue::Set(2)));
    let SeriesValue::Samples(h) = find(&f, "lat", &[]) else {
        panic!("samples")
    };
    assert_eq!(h.count(), 4);
    assert_eq!(h.sum(), 10.0);
    assert_eq!(h.quantiles(), [2.0, 4.0, 4.0]);

    // The next window starts empty; idle contexts are not flushed.
    assert!(a.flush(110).series.is_empty());
}

#[test]
fn a_dropped_flush_gives_its_series_buffer_back() {
    let a = agg(Config::default());
    let s = a.new_shard();
    feed(&s, a.shared(), &["a:1|c", "b:1|c", "t:1:2|ms"]);
    let first = a.flush(0);
    let buffer = first.series.as_ptr();

    // Still held (by a queuing sink, say): the next window gets a buffer of its own.
    feed(&s, a.shared(), &["a:1|c"]);
    let second = a.flush(10);
    assert_ne!(second.series.as_ptr(), buffer);

    // Dropped on another thread, as the alert sink does: the buffer comes back, emptied,
    // and the next window fills it.
    drop(second);
    std::thread::spawn(move || drop(first))
        .join()
        .expect("drop thread");
    feed(&s, a.shared(), &["b:2|c"]);
    let third = a.flush(20);
    assert_eq!(third.series.as_ptr(), buffer);
    assert_eq!(third.series.len(), 1);
    assert!(matches!(find(&third, "b", &[]), SeriesValue::Counter(v) if *v == 2.0));
}

#[test]
fn shards_merge_at_flush() {
    let a = agg(Config::default());
    let (s1, s2) = (a.new_shard(), a.new_shard());
    feed(&s1, a.shared(), &["c:1|c", "g:1|g", "u:x|s", "h:1|h"]);
    feed(
        &s2,
        a.shared(),
        &["c:2|c", "g:2|g", "u:y|s", "u:x|s", "h:3|h"],
    );
    let f = a.flush(0);
    assert_eq!(f.series.len(), 4);
    assert!(matches!(find(&f, "c", &[]), SeriesValue::Counter(v) if *v == 3.0));
    assert!(matches!(find(&f, "g", &[]), SeriesValue::Gauge(v) if *v == 2.0));
    assert!(matches!(find(&f, "u", &[]), SeriesValue::Set(2)));
    let SeriesValue::Samples(h) = find(&f, "h", &[]) else {
        panic!()
    };
    assert_eq!((h.count(), h.min(), h.max()), (2, 1.0, 3.0));
}

#[test]
fn shards_merge_whichever_is_largest() {
    // The largest shard is the middle one; the small ones share a context with it and one
    // with each other only, and each has one of its own.
    let a = agg(Config::default());
    let (s1, s2, s3) = (a.new_shard(), a.new_shard(), a.new_shard());
    feed(&s1, a.shared(), &["c:1|c", "x:1|c", "only1:5|g"]);
    let many: Vec<String> = (0..50).map(|i| format!("n{i}:1|c")).collect();
    let mut lines: Vec<&str> = many.iter().map(String::as_str).collect();
    lines.extend(["c:10|c", "h:1|h"]);
    feed(&s2, a.shared(), &lines);
    feed(&s3, a.shared(), &["c:100|c", "x:2|c", "h:3|h", "only3:1|c"]);
    let f = a.flush(0);
    assert_eq!(f.series.len(), 50 + 5);
    assert!(matches!(find(&f, "c", &[]), SeriesValue::Counter(v) if *v == 111.0));
    assert!(matches!(find(&f, "x", &[]), SeriesValue::Counter(v) if *v == 3.0));
    assert!(matches!(find(&f, "only1", &[]), SeriesValue::Gauge(v) if *v == 5.0));
    assert!(matches!(find(&f, "only3", &[]), SeriesValue::Counter(v) if *v == 1.0));
    assert!(matches!(find(&f, "n49", &[]), SeriesValue::Counter(v) if *v == 1.0));
    let SeriesValue::Samples(h) = find(&f, "h", &[]) else {
        panic!()
    };
    assert_eq!((h.count(), h.min(), h.max()), (2, 1.0, 3.0));
}

#[test]
fn delta_gauges_move_the_previous_value() {
    let mut cfg = Config::default();
    cfg.statsd.gauge_mode = GaugeMode::Delta;
    let a = agg(cfg);
    let s = a.new_shard();
    feed(&s, a.shared(), &["g:10|g", "g:+3|g", "g:-1|g"]);
    assert!(matches!(find(&a.flush(0), "g", &[]), SeriesValue::Gauge(v) if *v == 12.0));
    feed(&s, a.shared(), &["g:-2|g"]);
    assert!(matches!(find(&a.flush(10), "g", &[]), SeriesValue::Gauge(v) if *v == 10.0));

    // In absolute mode the sign is part of the number.
    let a = agg(Config::default());
    let s = a.new_shard();
    feed(&s, a.shared(), &["g:10|g", "g:-2|g"]);
    assert!(matches!(find(&a.flush(0), "g", &[]), SeriesValue::Gauge(v) if *v == -2.0));
}

#[test]
fn sample_rates() {
    let a = agg(Config::default());
    let s = a.new_shard();
    feed(
        &s,
        a.shared(),
        &["c:1|c|@0.1", "t:10|ms|@0.25", "g:5|g|@0.5"],
    );
    let f = a.flush(0);
    assert!(matches!(find(&f, "c", &[]), SeriesValue::Counter(v) if (*v - 10.0).abs() < 1e-9));
    let SeriesValue::Samples(h) = find(&f, "t", &[]) else {
        panic!()
    };
    assert_eq!((h.count(), h.sum()), (4, 40.0));
    assert!(matches!(find(&f, "g", &[]), SeriesValue::Gauge(v) if *v == 5.0));
}

#[test]
fn context_limit_drops_and_counts() {
    let mut cfg = Config::default();
    cfg.aggregate.max_contexts = 2;
    let a = agg(cfg);
    let s = a.new_shard();
    let stats = feed(&s, a.shared(), &["a:1|c", "b:1|c", "c:1:2|d", "a:1|c"]);
    assert_eq!(stats.dropped_context_limit, 2);
    assert_eq!(stats.samples, 3);
    assert_eq!(a.flush(0).series.len(), 2);
}

#[test]
fn idle_contexts_expire() {
    let mut cfg = Config::default();
    cfg.aggregate.flush_interval = Duration::from_secs(10);
    cfg.aggregate.context_expiry = Duration::from_secs(20);
    let a = agg(cfg);
    let s = a.new_shard();
    feed(&s, a.shared(), &["a:1|c"]);
    a.flush(0);
    assert_eq!(lock(&s).len(), 1);
    a.flush(10);
    assert_eq!(lock(&s).len(), 1);
    a.flush(20);
    assert_eq!(lock(&s).len(), 0);
    assert_eq!(a.shared().contexts.load(Relaxed), 0);
}

#[test]
fn set_limit() {
    let mut cfg = Config::default();
    cfg.aggregate.max_set_size = 2;
    let a = agg(cfg);
    let (s1, s2) = (a.new_shard(), a.new_shard());
    let st = feed(&s1, a.shared(), &["u:a|s", "u:b|s", "u:c|s", "u:a|s"]);
    assert_eq!(st.set_members_dropped, 1);
    feed(&s2, a.shared(), &["u:d|s"]);
    let f = a.flush(0);
    assert!(matches!(find(&f, "u", &[]), SeriesValue::Set(2)));
    assert_eq!(a.shared().telemetry.set_members_dropped.load(Relaxed), 1);
}

#[test]
fn events_are_bounded() {
    let a = agg(Config::default());
    let sc = ServiceCheck {
        name: "x".into(),
        status: crate::model::CheckStatus::Ok,
        timestamp: None,
        hostname: None,
        message: None,
        tags: vec![],
        origin: Default::default(),
        skipped_fields: 0,
    };
    for _ in 0..MAX_EVENTS_PER_WINDOW {
        assert!(a.push_check(sc.clone()));
    }
    assert!(!a.push_check(sc));
    let f = a.flush(0);
    assert_eq!(f.service_checks.len(), MAX_EVENTS_PER_WINDOW);
    assert_eq!(a.shared().telemetry.events_dropped.load(Relaxed), 1);
}
