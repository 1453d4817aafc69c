//! Tests of `aggregate/shard.rs`.

use super::*;

#[test]
fn dedup() {
    let mut v: Vec<&[u8]> = vec![b"a", b"a", b"b", b"c", b"c"];
    let n = dedup_sorted(&mut v);
    assert_eq!(&v[..n], &[&b"a"[..], b"b", b"c"]);
}

#[test]
fn values_from_outside_statsd() {
    let telemetry = Arc::new(Telemetry::default());
    let shared = Arc::new(Shared::new(2, 10, GaugeMode::Absolute, telemetry));
    let mut shard = Shard::new(Arc::clone(&shared));
    let mut tags = vec!["b:2", "a:1", "b:2", ""];
    assert!(shard.apply_value(MetricKind::Counter, "c", &mut tags, Value::Count(2.0), 1));
    let mut same = vec!["a:1", "b:2"];
    assert!(shard.apply_value(MetricKind::Counter, "c", &mut same, Value::Count(3.0), 2));
    let mut s = Samples::new();
    s.add(4.0, 1);
    assert!(!shard.apply_value(
        MetricKind::Counter,
        "c",
        &mut vec![],
        Value::Samples(s.clone()),
        3
    ));
    assert!(shard.apply_value(
        MetricKind::Distribution,
        "d",
        &mut vec![],
        Value::Samples(s),
        3
    ));
    // The context limit (2) refuses a third context and counts it.
    assert!(!shard.apply_value(MetricKind::Gauge, "g", &mut vec![], Value::Gauge(1.0), 4));
    assert_eq!(
        shared.telemetry.samples_dropped_context_limit.load(Relaxed),
        1
    );
    let mut out = Vec::new();
    shard.drain(10, &mut out);
    assert_eq!(out.len(), 2);
    let c = out.iter().find(|d| d.ctx.name() == "c").expect("counter");
    assert_eq!(c.ctx.tags().collect::<Vec<_>>(), vec!["a:1", "b:2"]);
    assert!(matches!(c.state, State::Counter(v) if v == 5.0));
    // Sinks rely on the drained hash being the context's own.
    assert!(out.iter().all(|d| d.hash == d.ctx.hash_code()));
}

#[test]
fn statsd_lines_resolve_in_any_tag_order() {
    let telemetry = Arc::new(Telemetry::default());
    let shared = Arc::new(Shared::new(10, 10, GaugeMode::Absolute, telemetry));
    let mut shard = Shard::new(Arc::clone(&shared));
    let mut stats = LocalStats::default();
    for line in [
        "x:1|c|#b:2,a:1",
        "x:1|c|#a:1,b:2,a:1",
        "x:1|c|#,a:1,,b:2",
        // Same bytes as the key "x,a:1": another name, another context.
        "x,a:1:1|c",
        "x:1|g|#a:1,b:2",
    ] {
        let Ok(parse::Line::Metric(m)) = parse::parse_line(line.as_bytes(), 100) else {
            panic!("{line}");
        };
        shard.apply(&m, 1, &mut stats).expect(line);
    }
    let mut out = Vec::new();
    shard.drain(10, &mut out);
    assert_eq!(out.len(), 3);
    let x = out
        .iter()
        .find(|d| d.ctx.name() == "x" && d.ctx.kind() == MetricKind::Counter)
        .expect("x");
    assert!(matches!(x.state, State::Counter(v) if v == 3.0));
    assert!(out.iter().all(|d| d.hash == d.ctx.hash_code()));
}

#[test]
fn gauge_merge_orders_by_sequence() {
    let mut a = GaugeState::default();
    a.set(1.0, 10);
    let mut b = GaugeState::default();
    b.set(2.0, 20);
    a.merge(b);
    assert_eq!(a.resolve(None), 2.0);

    // Delta after the winning absolute value counts; one before it does not.
    let mut x = GaugeState::default();
    x.set(5.0, 10);
    let mut late = GaugeState::default();
    late.shift(3.0, 11);
    let mut early = GaugeState::default();
    early.shift(100.0, 5);
    x.merge(late);
    x.merge(early);
    assert_eq!(x.resolve(Some(1000.0)), 8.0);

    // Only deltas: they move the previous value.
    let mut d = GaugeState::default();
    d.shift(-2.0, 1);
    let mut e = GaugeState::default();
    e.shift(5.0, 2);
    d.merge(e);
    assert_eq!(d.resolve(Some(10.0)), 13.0);
    assert_eq!(d.resolve(None), 3.0);
}

#[test]
fn line_options_namespace_tags_and_distribution_copy() {
    let telemetry = Arc::new(Telemetry::default());
    let shared = Arc::new(Shared::new(100, 10, GaugeMode::Absolute, telemetry));
    let mut shard = Shard::new(Arc::clone(&shared));
    shard.set_line_options(Arc::new(LineOptions {
        namespace: b"app.".to_vec(),
        namespace_blocklist: vec![b"jvm".to_vec()],
        tags: vec![b"team:a".to_vec()],
        copy_to_distribution: Some(b"dist.".to_vec()),
        mapper: None,
    }));
    let mut stats = LocalStats::default();
    for line in ["hits:1|c|#z:1", "jvm.heap:2|g", "lat:3|h"] {
        let m = parse::parse_metric(line.as_bytes(), 100).expect("line");
        shard.apply(&m, 1, &mut stats).expect("applied");
    }
    let mut out = Vec::new();
    shard.drain(10, &mut out);
    let mut got: Vec<(MetricKind, String, Vec<String>)> = out
        .iter()
        .map(|d| {
            (
                d.ctx.kind(),
                d.ctx.name().to_string(),
                d.ctx.tags().map(str::to_string).collect(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.1.cmp(&b.1));
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            (
                MetricKind::Counter,
                "app.hits".into(),
                tags(&["team:a", "z:1"])
            ),
            (MetricKind::Histogram, "app.lat".into(), tags(&["team:a"])),
            (
                MetricKind::Distribution,
                "dist.app.lat".into(),
                tags(&["team:a"])
            ),
            (MetricKind::Gauge, "jvm.heap".into(), tags(&["team:a"])),
        ]
    );
}
