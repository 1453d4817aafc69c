//! Tests of `gps/metrics.rs`.

use super::*;
use crate::aggregate::{Aggregator, SeriesValue};
use crate::config::Config;
use crate::telemetry::Telemetry;

#[test]
fn publishes_counters_as_deltas_into_its_shard() {
    let cfg = Config::default();
    let agg = Arc::new(Aggregator::new(
        &cfg.aggregate,
        cfg.statsd.gauge_mode,
        Arc::new(Telemetry::default()),
    ));
    let stats = Arc::new(GpsStats::default());
    let registry = Arc::new(Registry::new(10, 10, std::time::Duration::from_secs(300)));
    let guard = Arc::new(Guard::new(&cfg.gps));
    let mut p = Publisher::new(
        agg.new_shard(),
        Arc::clone(agg.shared()),
        Arc::clone(&stats),
        registry,
        guard,
        "gps_tcp.",
        "live.",
    );
    let t0 = Instant::now();
    stats.message(Protocol::Gt06.index(), None, 0);
    stats.message(Protocol::Gt06.index(), Some(FrameError::Checksum), 0);
    stats.points(2, 0, 0, 0);
    stats.points(0, 2, 0, 0);
    stats.latencies([100.0, 300.0].into_iter(), 0);
    p.publish(t0, 0);
    stats.message(Protocol::Gt06.index(), None, 0);
    p.publish(t0 + std::time::Duration::from_secs(2), 0);
    let f = agg.flush(0);
    let find = |name: &str, tags: &[&str]| {
        f.series
            .iter()
            .find(|s| s.ctx.name() == name && s.ctx.tags().collect::<Vec<_>>() == tags)
            .map(|s| &s.value)
            .unwrap_or_else(|| panic!("{name} {tags:?}"))
    };
    assert!(
        matches!(find("gps_tcp.messages_received", &["protocol:gt06"]), SeriesValue::Counter(v) if *v == 3.0)
    );
    assert!(
        matches!(find("gps_tcp.messages_invalid", &["protocol:gt06", "reason:bad_checksum"]), SeriesValue::Counter(v) if *v == 1.0)
    );
    assert!(matches!(find("gps_tcp.messages_per_second", &[]), SeriesValue::Gauge(v) if *v == 0.5));
    assert!(matches!(find("live.points_processed", &[]), SeriesValue::Counter(v) if *v == 2.0));
    let SeriesValue::Samples(h) = find("live.latency", &[]) else {
        panic!("latency")
    };
    assert_eq!((h.count(), h.sum()), (2, 400.0));
    let (messages, received, processed, failed, mut lat) = stats.window(5, 0);
    assert_eq!(
        (messages, received, processed, failed, lat.count()),
        (3, 2, 2, 0, 2)
    );
    assert_eq!(lat.quantile(0.99), 300.0);
}

#[test]
fn tallyd_gps_families() {
    let cfg = Config::default();
    let stats = Arc::new(GpsStats::default());
    stats.closed(Close::IdleTimeout);
    stats.queue_full();
    let t = GpsTelemetry {
        stats,
        registry: Arc::new(Registry::new(10, 10, std::time::Duration::from_secs(300))),
        guard: Arc::new(Guard::new(&cfg.gps)),
    };
    let families = crate::base::metrics::collect_one(&t);
    let get = |name: &str, labels: &[(&str, &str)]| {
        families
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.get(labels))
    };
    assert_eq!(
        get(
            "tallyd_gps_connections_closed",
            &[("reason", "idle_timeout")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get("tallyd_gps_connections_closed", &[("reason", "eof")]),
        Some(0.0)
    );
    assert_eq!(get("tallyd_gps_points_queue_full", &[]), Some(1.0));
    assert_eq!(get("tallyd_gps_tracked_ips", &[]), Some(0.0));
    let text = crate::base::metrics::render_to_string(&families, false);
    assert!(text.contains(
        "# TYPE tallyd_gps_connections_closed_total counter\ntallyd_gps_connections_closed_total{reason=\"eof\"} 0\n"
    ));
}
