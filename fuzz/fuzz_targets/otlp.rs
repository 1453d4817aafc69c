//! OTLP metrics requests, protobuf or JSON, decoded as the receivers decode them, then
//! converted and aggregated by `otlp::Receiver::export` (twice, ten seconds apart, so that
//! cumulative streams produce deltas), flushed and exposed: no panic, no more points rejected
//! than the request holds, and `/metrics` stays a valid exposition.
//!
//! Input: byte 0 bit 0 selects JSON (else protobuf), bit 1 the OpenMetrics format; the rest
//! is the body.

#![no_main]

mod common;

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use tallyd::aggregate::{Aggregator, Sink};
use tallyd::base::clock::Clock;
use tallyd::config::Config;
use tallyd::otlp::convert::count_points;
use tallyd::otlp::Receiver;
use tallyd::sinks::prometheus::Prometheus;
use tallyd::telemetry::Telemetry;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let req = if flags & 1 != 0 {
        match serde_json::from_slice::<ExportMetricsServiceRequest>(body) {
            Ok(r) => r,
            Err(_) => return,
        }
    } else {
        match ExportMetricsServiceRequest::decode(body) {
            Ok(r) => r,
            Err(_) => return,
        }
    };
    let mut cfg = Config::default();
    cfg.aggregate.max_contexts = 64;
    cfg.otlp.max_streams = 64;
    let telemetry = Arc::new(Telemetry::default());
    let aggregator = Aggregator::new(
        &cfg.aggregate,
        cfg.statsd.gauge_mode,
        Arc::clone(&telemetry),
    );
    let start = Duration::from_secs(1_750_000_000);
    let receiver = Receiver::new(&cfg.otlp, &aggregator, Clock::manual(start));
    let prom = Prometheus::new(Duration::from_secs(300), 64, Arc::clone(&telemetry));
    let points = count_points(&req);
    for (i, at) in [start, start + Duration::from_secs(10)]
        .into_iter()
        .enumerate()
    {
        if let Ok(a) = receiver.export(&req, at) {
            assert!(a.rejected <= points, "{} rejected of {points}", a.rejected);
        }
        prom.consume(&Arc::new(aggregator.flush(1_750_000_000 + 10 * i as u64)));
    }
    let om = flags & 2 != 0;
    common::check_exposition(&prom.render(om), om);
});
