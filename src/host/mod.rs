//! Host and container metrics: a source component that reads `/proc`, `statvfs` and this
//! process's cgroup v2 every `host_metrics.interval` and applies the values, under Datadog's
//! system check names (`system.cpu.user`, `system.mem.used`, `system.net.bytes_rcvd`), to an
//! aggregation shard of its own, as the GPS publisher does. Values Datadog reports as rates
//! (bytes, packets, I/Os, context switches) are counters of the change since the last reading
//! (the first reading is the baseline); everything else is a gauge. Collection runs on its
//! own thread: a `statvfs` on a hung network mount stalls only this collector.

pub mod cgroup;
pub mod collect;
pub mod config;
pub mod process;
pub mod procfs;
pub mod statvfs;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use collect::{Collector, Point};
pub use config::HostMetricsConfig;

use crate::aggregate::shard::Value;
use crate::aggregate::{Shard, Shared};
use crate::base::lock;
use crate::base::metrics::{Collect, Families, Kind};
use crate::component::{Context, Error, Running, Stage};
use crate::model::MetricKind;

/// The collector's own counters (`tallyd_host_metrics_*`).
#[derive(Default)]
pub struct HostStats {
    /// Collections done.
    pub collections: AtomicU64,
    /// Files that could not be read or parsed (a group's file missing counts once per reading).
    pub read_errors: AtomicU64,
    /// Values the shard refused (new series at `aggregate.max_contexts`).
    pub refused: AtomicU64,
    /// Series applied by the last collection.
    pub last_series: AtomicU64,
    /// Duration of the last collection, nanoseconds.
    pub last_nanos: AtomicU64,
}

impl Collect for HostStats {
    fn collect(&self, out: &mut Families) {
        out.atomics(
            Kind::Counter,
            &[],
            &[
                (
                    "tallyd_host_metrics_collections",
                    "Host metric collections done.",
                    &self.collections,
                ),
                (
                    "tallyd_host_metrics_read_errors",
                    "Host metric files that could not be read or parsed.",
                    &self.read_errors,
                ),
                (
                    "tallyd_host_metrics_refused",
                    "Host metric values refused by the aggregator (aggregate.max_contexts).",
                    &self.refused,
                ),
            ],
        );
        out.gauge(
            "tallyd_host_metrics_series",
            "Series applied by the last host metric collection.",
        )
        .value(self.last_series.load(Relaxed) as f64);
        out.gauge(
            "tallyd_host_metrics_collect_seconds",
            "Duration of the last host metric collection.",
        )
        .value(self.last_nanos.load(Relaxed) as f64 / 1e9);
    }
}

/// Applies `points` to `shard` with `host_tag`; returns how many the shard refused.
pub fn apply(shard: &Mutex<Shard>, shared: &Shared, host_tag: &str, points: &[Point]) -> u64 {
    let seq = shared.seq();
    let mut shard = lock(shard);
    let mut refused = 0;
    let mut tags: Vec<&str> = Vec::with_capacity(4);
    for p in points {
        tags.clear();
        tags.push(host_tag);
        tags.extend(p.tags.iter().map(String::as_str));
        let (kind, v) = if p.counter {
            (MetricKind::Counter, Value::Count(p.value))
        } else {
            (MetricKind::Gauge, Value::Gauge(p.value))
        };
        if !shard.apply_value(kind, &p.name, &mut tags, v, seq) {
            refused += 1;
        }
    }
    refused
}

/// Starts the collector when `host_metrics.enabled`.
///
/// # Errors
/// The collector thread cannot be spawned.
pub fn start(cfg: &HostMetricsConfig, ctx: &mut Context) -> Result<Running, Error> {
    if !cfg.enabled {
        return Ok(Running::disabled(
            "host_metrics",
            Stage::Intake,
            "host_metrics.enabled is false",
        ));
    }
    let every = cfg.interval_or(ctx.aggregator.interval());
    let stats = Arc::new(HostStats::default());
    ctx.telemetry.register(stats.clone());
    let mut collector = Collector::new(cfg.clone(), PathBuf::from(&cfg.root));
    if cfg.root != "/" {
        collector.find_cgroup(std::path::Path::new("/"));
    }
    let cgroup = collector.cgroup_summary();
    let shard = ctx.aggregator.new_shard();
    let shared = Arc::clone(ctx.aggregator.shared());
    let host_tag = format!("host:{}", ctx.host);
    let flush = ctx.aggregator.interval();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread_stats = Arc::clone(&stats);
    let thread = std::thread::Builder::new()
        .name("host-metrics".into())
        .spawn(move || {
            let mut first = true;
            loop {
                let started = Instant::now();
                let points = collector.collect();
                let refused = apply(&shard, &shared, &host_tag, &points);
                let s = &thread_stats;
                s.collections.fetch_add(1, Relaxed);
                s.read_errors.store(collector.read_errors, Relaxed);
                s.refused.fetch_add(refused, Relaxed);
                s.last_series.store(points.len() as u64, Relaxed);
                s.last_nanos
                    .store(started.elapsed().as_nanos() as u64, Relaxed);
                // The first reading is a baseline for the rates: the next follows soon, so
                // that the first window already has them.
                let wait = if first {
                    first = false;
                    Duration::from_millis(200).min(every)
                } else {
                    until_next(every, flush)
                };
                match stop_rx.recv_timeout(wait) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
        .map_err(|e| Error::start("host_metrics", format!("cannot start its thread: {e}")))?;
    ctx.shutdown.on_stop(Stage::Intake, async move {
        drop(stop_tx);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    });
    let detail = format!(
        "every {}; {cgroup}",
        crate::base::duration::format_duration(every)
    );
    tracing::info!(component = "host_metrics", interval = ?every, cgroup = %cgroup, "collecting");
    Ok(
        Running::ok("host_metrics", Stage::Intake, detail, ()).with_part(
            "host_metrics_cgroup",
            crate::base::health::Status::Ok,
            cgroup,
        ),
    )
}

/// How long until the next reading: on multiples of `every` offset by half a flush interval
/// (wall clock), so that a reading does not race the flush at the window's boundary.
fn until_next(every: Duration, flush: Duration) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let every_ns = every.as_nanos().max(1);
    let offset = (flush.as_nanos() / 2) % every_ns;
    let now_ns = now.as_nanos();
    let phase = (now_ns + every_ns - offset) % every_ns;
    let wait = every_ns - phase;
    // Never twice in a row: at least a tenth of the interval apart.
    Duration::from_nanos(wait.max(every_ns / 10) as u64)
}
