//! Unit tests of the status page history (`history.rs`): the ring bound, rates, the ranking.

use super::*;
use crate::model::MetricKind;
use crate::sinks::testutil::{flush, summary};

fn point(t_ms: u64, udp: u64) -> Point {
    Point {
        t_ms,
        statsd_udp: udp,
        ..Point::default()
    }
}

#[test]
fn the_ring_is_bounded_and_counts_what_it_overwrites() {
    let h = History::new();
    for i in 0..(POINTS as u64 + 7) {
        h.push(point(i * 5000, i));
    }
    let points = h.points();
    assert_eq!(points.len(), POINTS);
    assert_eq!(points[0].statsd_udp, 7, "the 7 oldest are gone");
    assert_eq!(h.evicted.load(Relaxed), 7);
    let text = crate::base::metrics::render_to_string(
        &crate::base::metrics::collect_one(h.as_ref()),
        false,
    );
    assert!(
        text.contains("tallyd_status_history_points 120\n"),
        "{text}"
    );
    assert!(
        text.contains("tallyd_status_history_evicted_total 7\n"),
        "{text}"
    );
}

#[test]
fn rates_span_the_last_minute_of_points() {
    let h = History::new();
    assert_eq!(h.rate_span(), None);
    assert_eq!(per_second(h.rate_span(), |p| p.statsd_udp), 0.0);
    h.push(point(0, 0));
    assert_eq!(
        per_second(h.rate_span(), |p| p.statsd_udp),
        0.0,
        "one point"
    );
    // 0, 10 s, ..., 100 s with 50 lines a second: the span starts 60 s before the newest.
    for i in 1..=10u64 {
        h.push(point(i * 10_000, i * 500));
    }
    let (a, b) = h.rate_span().expect("points");
    assert_eq!((a.t_ms, b.t_ms), (40_000, 100_000));
    assert_eq!(per_second(Some((a, b)), |p| p.statsd_udp), 50.0);
    // A counter that went backwards (never, but) reads as 0, not as a huge number.
    assert_eq!(
        per_second(Some((b, point(110_000, 0))), |p| p.statsd_udp),
        0.0
    );
}

#[test]
fn busiest_ranks_by_series_then_values() {
    let one: &[&str] = &[];
    let f = flush(
        1000,
        vec![
            (
                MetricKind::Counter,
                "hits",
                &["a:1"],
                SeriesValue::Counter(5.0),
            ),
            (
                MetricKind::Counter,
                "hits",
                &["a:2"],
                SeriesValue::Counter(2.0),
            ),
            (MetricKind::Gauge, "temp", one, SeriesValue::Gauge(21.5)),
            (MetricKind::Timer, "lat", one, summary(&[1.0, 2.0, 3.0])),
            (MetricKind::Set, "users", one, SeriesValue::Set(2)),
        ],
    );
    let b = rank(&f);
    assert_eq!(b.window_unix, Some(1000));
    assert_eq!(b.window_series, 5);
    let got: Vec<(&str, &str, u64, f64)> = b
        .metrics
        .iter()
        .map(|m| (m.name.as_str(), m.kind, m.series, m.values))
        .collect();
    assert_eq!(
        got,
        vec![
            ("hits", "counter", 2, 7.0),
            ("lat", "timer", 1, 3.0),
            ("users", "set", 1, 2.0),
            ("temp", "gauge", 1, 1.0),
        ]
    );
}

#[test]
fn busiest_keeps_the_top_names_only() {
    let one: &[&str] = &[];
    let names: Vec<String> = (0..BUSIEST + 5).map(|i| format!("m{i:02}")).collect();
    let f = flush(
        1,
        names
            .iter()
            .map(|n| {
                (
                    MetricKind::Counter,
                    n.as_str(),
                    one,
                    SeriesValue::Counter(f64::NAN),
                )
            })
            .collect(),
    );
    let b = rank(&f);
    assert_eq!(b.metrics.len(), BUSIEST);
    assert_eq!(b.metrics[0].name, "m00", "ties go by name");
    assert_eq!(b.metrics[0].values, 0.0, "a non-finite value counts 0");
}

#[test]
fn the_sink_hands_a_window_to_the_ranking_thread() {
    let h = History::new();
    let f = Arc::new(flush(
        42,
        vec![(MetricKind::Gauge, "g", &[], SeriesValue::Gauge(1.0))],
    ));
    // The thread waits for its first window: offer it until it took one (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.busiest().window_unix.is_none() {
        h.consume(&f);
        assert!(std::time::Instant::now() < deadline, "never ranked");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h.busiest().metrics[0].name, "g");
    assert_eq!(Arc::strong_count(&f), 1, "the ranked window is not kept");
}
