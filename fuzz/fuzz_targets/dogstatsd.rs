//! DogStatsD packets through the parser, a shard, the aggregator's flush and the Prometheus
//! sink: no panic, every accepted value finite, and every `/metrics` body (text and
//! OpenMetrics) a valid exposition.
//!
//! Input: packets separated by 0xFF (never valid in a line, which must be UTF-8); each packet
//! is one window. The first byte's bit 0 marks the last packet truncated (as `MSG_TRUNC`
//! does), bit 1 selects `statsd.gauge_mode = "delta"`, bit 2 the OpenMetrics format.

#![no_main]

mod common;

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tallyd::aggregate::{Aggregator, GaugeMode, Sink};
use tallyd::config::Config;
use tallyd::model::dogstatsd::{self, Line};
use tallyd::sinks::prometheus::Prometheus;
use tallyd::statsd::Ingest;
use tallyd::telemetry::{LocalStats, Telemetry};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let mut cfg = Config::default();
    cfg.aggregate.max_contexts = 64;
    let mode = if flags & 2 != 0 {
        GaugeMode::Delta
    } else {
        cfg.statsd.gauge_mode
    };
    let telemetry = Arc::new(Telemetry::default());
    let aggregator = Arc::new(Aggregator::new(
        &cfg.aggregate,
        mode,
        Arc::clone(&telemetry),
    ));
    let ingest = Ingest {
        aggregator: Arc::clone(&aggregator),
        max_tags: 16,
        tag_styles: Default::default(),
    };
    let prom = Prometheus::new(Duration::from_secs(300), 64, Arc::clone(&telemetry));
    let shard = aggregator.new_shard();
    let packets: Vec<&[u8]> = data.split(|&b| b == 0xFF).collect();
    let mut ts = 1_700_000_000;
    for (i, packet) in packets.iter().enumerate() {
        for line in dogstatsd::lines(packet) {
            if let Ok(Line::Metric(m)) = dogstatsd::parse_line(line, 16) {
                assert!(m.sample_rate > 0.0 && m.sample_rate <= 1.0, "{m:?}");
                for v in dogstatsd::values(m.values) {
                    assert!(v.value.is_finite(), "{m:?}");
                }
            }
        }
        let truncated = flags & 1 != 0 && i + 1 == packets.len();
        let mut stats = LocalStats::default();
        {
            let mut s = shard.lock().unwrap();
            ingest.packet(
                packet,
                truncated,
                &mut s,
                aggregator.shared().seq(),
                &mut stats,
            );
        }
        let flush = Arc::new(aggregator.flush(ts));
        for s in &flush.series {
            if let tallyd::aggregate::SeriesValue::Counter(v) = s.value {
                assert!(v.is_finite(), "window sum {v} of {:?}", s.ctx);
            }
        }
        prom.consume(&flush);
        ts += 10;
    }
    // One format per run: a render also reads the process's own figures from /proc.
    let om = flags & 4 != 0;
    common::check_exposition(&prom.render(om), om);
});
