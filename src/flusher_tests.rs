//! The flusher on an injected clock: windows are stamped from it, so alert `for:` durations
//! and no-data, which run on window time, are tested in a second instead of a minute.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::aggregate::shard::Value;
use crate::aggregate::{Aggregator, Flush, Sink};
use crate::base::clock::Clock;
use crate::base::lock;
use crate::component::Context;
use crate::config::Config;
use crate::model::MetricKind;
use crate::telemetry::Telemetry;

/// Records every window's timestamp.
#[derive(Default)]
struct Stamps(Mutex<Vec<u64>>);

impl Sink for Stamps {
    fn name(&self) -> &'static str {
        "stamps"
    }

    fn consume(&self, flush: &Arc<Flush>) {
        lock(&self.0).push(flush.timestamp);
    }
}

const RULES: &str = r#"
[aggregate]
flush_interval = "100ms"
[alerts]
enabled = true
[[alerts.rules]]
name = "Hot"
metric = "temp"
warn = 50.0
for = "20s"
no_data = "30s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_for_and_no_data_follow_the_injected_clock() {
    let cfg = Config::from_toml_with_env(RULES, "t", &[]).expect("config");
    let start = 1_700_000_000;
    let clock = Clock::manual(Duration::from_secs(start));
    let telemetry = Arc::new(Telemetry::default());
    let aggregator = Arc::new(Aggregator::new(
        &cfg.aggregate,
        cfg.statsd.gauge_mode,
        Arc::clone(&telemetry),
    ));
    let mut ctx = Context::new(
        clock.clone(),
        telemetry,
        Arc::clone(&aggregator),
        cfg.queue.clone(),
        "test-host".into(),
    );
    let alerts = crate::alert::start(&cfg.alerts, false, &mut ctx)
        .expect("alerts")
        .handle
        .expect("alerts on");
    let stamps = Arc::new(Stamps::default());
    ctx.add_sink(stamps.clone());
    super::start(&cfg.aggregate, &mut ctx).expect("flusher");
    let shard = aggregator.new_shard();
    let firing = |no_data: bool| {
        lock(&alerts.snapshot)
            .firing
            .iter()
            .any(|a| a.alert == "Hot" && a.no_data == no_data)
    };

    // 10 s of window time every 150 ms of real time; the rule must hold for 20 s.
    let mut seq = 0;
    let mut step = |send: bool| {
        if send {
            seq += 1;
            let applied = lock(&shard).apply_value(
                MetricKind::Gauge,
                "temp",
                &mut vec![],
                Value::Gauge(80.0),
                seq,
            );
            assert!(applied);
        }
        clock.advance(Duration::from_secs(10));
    };
    let mut fired_after = None;
    for i in 0..8 {
        step(true);
        tokio::time::sleep(Duration::from_millis(150)).await;
        if firing(false) {
            fired_after = Some(i + 1);
            break;
        }
    }
    let fired_after = fired_after.expect("Hot fires once it has held for 20 s of window time");
    assert!(
        fired_after >= 2,
        "fired after {fired_after} steps of 10 s: too early for `for = 20s`"
    );

    // Nothing more arrives: no-data after 30 s of window time.
    let mut no_data = false;
    for _ in 0..10 {
        step(false);
        tokio::time::sleep(Duration::from_millis(150)).await;
        if firing(true) {
            no_data = true;
            break;
        }
    }
    assert!(
        no_data,
        "no-data fires once 30 s of window time pass without the metric"
    );

    let seen = lock(&stamps.0).clone();
    let (first, last) = (seen[0], seen[seen.len() - 1]);
    assert!(
        first >= start,
        "windows are stamped from the injected clock: {first}"
    );
    assert!(
        last - first >= 40,
        "window time ran ahead of real time: {first}..{last}"
    );
    ctx.shutdown.drain().await;
}
