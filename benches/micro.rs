//! Micro-benchmarks of the ingest core: parse ns/line per metric type and for tag-heavy lines,
//! aggregate ns/sample on known contexts, the whole in-process ingest of a datagram, and the
//! flush of 10k and 100k contexts (aggregator flush plus the Prometheus sink's consume; and
//! with a second, small shard to merge, as the GPS service's in the running agent).
//!
//! And busy distributions: ns per `d` sample into contexts past their raw samples, and the
//! flush of such a window with the Datadog sketch built for every context (issue 17's exact
//! keying).
//!
//! Run with `cargo bench --bench micro`; results are described in BENCHMARKS.md.

mod workload;

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use tallyd::aggregate::{Aggregator, Shard};
use tallyd::base::lock;
use tallyd::config::Config;
use tallyd::model::dogstatsd::{self as parse, Line, MetricLine};
use tallyd::sinks::datadog::sketch;
use tallyd::sinks::prometheus::Prometheus;
use tallyd::sinks::Sink;
use tallyd::statsd::Ingest;
use tallyd::telemetry::{LocalStats, Telemetry};
use workload::Rng;

const MAX_TAGS: usize = 100;

fn parse_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let mut rng = Rng::new(7);
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "counter",
            (0..1000)
                .map(|i| workload::line_of_kind("c", i, &mut rng))
                .collect(),
        ),
        (
            "gauge",
            (0..1000)
                .map(|i| workload::line_of_kind("g", i, &mut rng))
                .collect(),
        ),
        (
            "timer",
            (0..1000)
                .map(|i| workload::line_of_kind("ms", i, &mut rng))
                .collect(),
        ),
        (
            "histogram",
            (0..1000)
                .map(|i| workload::line_of_kind("h", i, &mut rng))
                .collect(),
        ),
        (
            "distribution",
            (0..1000)
                .map(|i| workload::line_of_kind("d", i, &mut rng))
                .collect(),
        ),
        (
            "set",
            (0..1000)
                .map(|i| workload::line_of_kind("s", i, &mut rng))
                .collect(),
        ),
        (
            "tag_heavy_20_tags",
            (0..1000).map(workload::tag_heavy_line).collect(),
        ),
    ];
    for (name, lines) in &cases {
        g.throughput(Throughput::Elements(lines.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| {
                for l in lines {
                    let _ = black_box(parse::parse_line(black_box(l.as_bytes()), MAX_TAGS));
                }
            })
        });
    }
    g.finish();
}

fn aggregator(max_contexts: usize) -> Aggregator {
    let mut cfg = Config::default();
    cfg.aggregate.max_contexts = max_contexts;
    Aggregator::new(
        &cfg.aggregate,
        cfg.statsd.gauge_mode,
        Arc::new(Telemetry::default()),
    )
}

fn parsed(lines: &[String]) -> Vec<MetricLine<'_>> {
    lines
        .iter()
        .map(|l| match parse::parse_line(l.as_bytes(), MAX_TAGS) {
            Ok(Line::Metric(m)) => m,
            other => panic!("{l}: {other:?}"),
        })
        .collect()
}

fn apply_all(shard: &Mutex<Shard>, lines: &[MetricLine<'_>], seq: u64, stats: &mut LocalStats) {
    let mut s = lock(shard);
    for m in lines {
        let _ = s.apply(m, seq, stats);
    }
}

fn aggregate_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregate");
    // The standard mix over its 1,000 known contexts.
    let mut rng = Rng::new(11);
    let mut mix = Vec::new();
    for i in 0..workload::CONTEXTS {
        let mut s = String::new();
        workload::push_line(&mut s, "", i, &mut rng);
        mix.push(s);
    }
    let mut rng = Rng::new(13);
    let counters: Vec<String> = (0..1000)
        .map(|i| workload::line_of_kind("c", i, &mut rng))
        .collect();
    let timers: Vec<String> = (0..1000)
        .map(|i| workload::line_of_kind("ms", i, &mut rng))
        .collect();
    let heavy: Vec<String> = (0..1000).map(workload::tag_heavy_line).collect();
    for (name, lines) in [
        ("standard_mix", &mix),
        ("counter", &counters),
        ("timer", &timers),
        ("tag_heavy_20_tags", &heavy),
    ] {
        let a = aggregator(1_000_000);
        let shard = a.new_shard();
        let ms = parsed(lines);
        let mut stats = LocalStats::default();
        apply_all(&shard, &ms, 1, &mut stats);
        g.throughput(Throughput::Elements(ms.len() as u64));
        let mut windows = 0u32;
        g.bench_function(name, |b| {
            b.iter(|| {
                apply_all(&shard, black_box(&ms), 1, &mut stats);
                // Keep sampled contexts from growing past their raw form forever: close the
                // window now and then, as the flusher would (not timed separately; rare).
                windows += 1;
                if windows.is_multiple_of(64) {
                    black_box(a.flush(0));
                }
            })
        });
    }

    // Parse and aggregate together, as a receive loop does with one 20-line datagram.
    let (dgrams, _) = workload::datagrams(50, 20, workload::CONTEXTS, "", 17);
    let a = Arc::new(aggregator(1_000_000));
    let ingest = Ingest {
        aggregator: Arc::clone(&a),
        max_tags: MAX_TAGS,
        tag_styles: Default::default(),
    };
    let shard = a.new_shard();
    let mut stats = LocalStats::default();
    for d in &dgrams {
        ingest.packet(d, false, &mut lock(&shard), 1, &mut stats);
    }
    g.throughput(Throughput::Elements(dgrams.len() as u64 * 20));
    let mut windows = 0u32;
    g.bench_function("ingest_datagrams_20_lines", |b| {
        b.iter(|| {
            let mut s = lock(&shard);
            for d in &dgrams {
                ingest.packet(black_box(d), false, &mut s, 1, &mut stats);
            }
            drop(s);
            windows += 1;
            if windows.is_multiple_of(64) {
                black_box(a.flush(0));
            }
        })
    });
    g.finish();
}

/// `n` contexts of the standard mix, one or two samples each, in the shard the datagram
/// receivers share; then flush + Prometheus consume, in steady state (the sink already knows
/// every series).
fn flush_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("flush");
    g.sample_size(10);
    for n in [10_000usize, 100_000] {
        let mut rng = Rng::new(19);
        let lines: Vec<String> = (0..n)
            .map(|i| {
                let mut s = String::new();
                workload::push_line(&mut s, "", i, &mut rng);
                s
            })
            .collect();
        let ms = parsed(&lines);
        let (half_a, half_b) = ms.split_at(n / 2);
        let a = aggregator(4 * n);
        let s1 = Arc::clone(a.datagram_shard());
        let telemetry = Arc::new(Telemetry::default());
        let prom = Prometheus::new(Duration::from_secs(300), 4 * n, telemetry);
        let mut stats = LocalStats::default();
        let mut ts = 0u64;
        let fill = |stats: &mut LocalStats| {
            // Every context gets a sample; half of them a second one.
            apply_all(&s1, half_a, 1, stats);
            apply_all(&s1, half_b, 1, stats);
            apply_all(&s1, half_b, 2, stats);
        };
        fill(&mut stats);
        prom.consume(&Arc::new(a.flush(0)));
        prom.sync();
        g.bench_function(format!("flush_and_prometheus_{n}"), |b| {
            b.iter_batched(
                || fill(&mut stats),
                |_| {
                    ts += 10;
                    let f = Arc::new(a.flush(ts));
                    prom.consume(&f);
                    // The sink folds on its own thread; time the fold here as well.
                    prom.sync();
                    f
                },
                BatchSize::PerIteration,
            )
        });
        // The same with a statsd_exporter mapping file that renames every context
        // (`app.svcN.metric_i` to `app_metric_i{svc="svcN"}`): after the first window each
        // context's outcome is kept, so a known context costs one more table probe per window,
        // and the ingest path (parse, shard) does not see the mapping at all.
        let mapper = tallyd::sinks::prometheus::Mapper::parse(
            "mappings:\n- match: app.*.*\n  name: app_${2}\n  labels:\n    svc: $1\n",
        )
        .expect("mapping");
        let opts = tallyd::sinks::prometheus::ExposeOptions {
            mapper: Some(Arc::new(mapper)),
            ..Default::default()
        };
        let mapped = Prometheus::with_options(
            Duration::from_secs(300),
            4 * n,
            &opts,
            Arc::new(Telemetry::default()),
        );
        fill(&mut stats);
        mapped.consume(&Arc::new(a.flush(ts + 5)));
        mapped.sync();
        g.bench_function(format!("flush_and_prometheus_mapped_{n}"), |b| {
            b.iter_batched(
                || fill(&mut stats),
                |_| {
                    ts += 10;
                    let f = Arc::new(a.flush(ts));
                    mapped.consume(&f);
                    mapped.sync();
                    f
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(format!("flush_only_{n}"), |b| {
            b.iter_batched(
                || fill(&mut stats),
                |_| {
                    ts += 10;
                    a.flush(ts)
                },
                BatchSize::PerIteration,
            )
        });
        // As in the running agent, where the GPS service publishes its fleet gauges through a
        // shard of its own: a second, small shard to merge with the large one.
        let two = aggregator(4 * n);
        let (big, small) = (Arc::clone(two.datagram_shard()), two.new_shard());
        let fleet: Vec<String> = (0..29).map(|i| format!("gps.fleet.g{i}:1|g")).collect();
        let fleet = parsed(&fleet);
        g.bench_function(format!("flush_two_shards_{n}"), |b| {
            b.iter_batched(
                || {
                    apply_all(&big, &ms, 1, &mut stats);
                    apply_all(&small, &fleet, 1, &mut stats);
                },
                |_| {
                    ts += 10;
                    two.flush(ts)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Log-normal latencies in seconds (median 40 ms), as `d` lines of 10 values over `contexts`
/// contexts.
fn distribution_lines(contexts: usize, lines: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut unit = move || ((rng.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (0..lines)
        .map(|i| {
            let mut s = format!("lat.{}", i % contexts);
            for _ in 0..10 {
                let (u, v) = (unit(), unit());
                let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                s.push_str(&format!(":{:.6}", 0.04 * (1.2 * z).exp()));
            }
            s.push_str("|d|#svc:api");
            s
        })
        .collect()
}

fn sketch_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("sketch");
    // 10 busy contexts, 10,000 samples an iteration; a window closes every 64 iterations, so
    // contexts hold up to 64,000 samples (far past the raw form).
    let lines = distribution_lines(10, 1000, 23);
    let ms = parsed(&lines);
    let a = aggregator(1_000_000);
    let shard = a.new_shard();
    let mut stats = LocalStats::default();
    apply_all(&shard, &ms, 1, &mut stats);
    g.throughput(Throughput::Elements(ms.len() as u64 * 10));
    let mut windows = 0u32;
    g.bench_function("distribution_ingest_busy", |b| {
        b.iter(|| {
            apply_all(&shard, black_box(&ms), 1, &mut stats);
            windows += 1;
            if windows.is_multiple_of(64) {
                black_box(a.flush(0));
            }
        })
    });
    // A window of 100 contexts with 10,000 samples each: flush, then the sketch of each, as
    // the Datadog encoder builds them.
    let lines = distribution_lines(100, 100_000, 29);
    let ms = parsed(&lines);
    let a = aggregator(1_000_000);
    let shard = a.new_shard();
    g.throughput(Throughput::Elements(ms.len() as u64 * 10));
    g.sample_size(10);
    g.bench_function("flush_and_sketch_100x10000", |b| {
        b.iter_batched(
            || apply_all(&shard, &ms, 1, &mut stats),
            |_| {
                let f = a.flush(0);
                let mut bins = 0;
                for s in &f.series {
                    if let tallyd::aggregate::SeriesValue::Samples(h) = &s.value {
                        bins += sketch::from_samples(h).keys.len();
                    }
                }
                black_box(bins)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! { name = benches; config = config(); targets = parse_benches, aggregate_benches, flush_benches, sketch_benches }
criterion_main!(benches);
