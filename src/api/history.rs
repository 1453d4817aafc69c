//! The status page's memory: a bounded ring of [`Point`]s, one taken every [`SAMPLE_EVERY`]
//! by the sampler (`dashboard::sample`), and the busiest metrics of a recent window.
//!
//! Bounds: the ring holds at most [`POINTS`] points (10 minutes at the default pace); the
//! oldest is overwritten and counted (`tallyd_status_history_evicted_total`). A point is a
//! fixed set of numbers, so the ring is a few kilobytes whatever the traffic.
//!
//! The busiest metrics are computed off the flush path: [`History`] is an aggregation sink
//! whose `consume` hands the window over a rendezvous channel to its own thread, and only when
//! that thread is waiting for one (once per [`SAMPLE_EVERY`]); every other window is not
//! touched. The thread ranks the window's metric names and drops the window at once, so it
//! holds no flush for longer than the ranking takes. It ends when the sink is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;

use crate::aggregate::{Flush, SeriesValue, Sink};
use crate::base::lock;
use crate::base::metrics::{Collect, Families};

/// How often the sampler takes a point (and the busiest metrics are ranked).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Points kept: 120 × 5 s = the last 10 minutes.
pub const POINTS: usize = 120;
/// Metric names listed as the busiest.
pub const BUSIEST: usize = 10;
/// Rates are taken over the points of this last stretch of time.
pub const RATE_WINDOW_MS: u64 = 60_000;

/// The totals at one instant. Counters are cumulative since start (rates come from the
/// difference of two points); the rest are levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Point {
    /// Unix milliseconds.
    pub t_ms: u64,
    /// StatsD lines received over UDP.
    pub statsd_udp: u64,
    /// StatsD lines received over TCP.
    pub statsd_tcp: u64,
    /// StatsD lines received over the Unix socket.
    pub statsd_uds: u64,
    /// OTLP requests received, both transports.
    pub otlp_requests: u64,
    /// GPS frames received.
    pub gps_messages: u64,
    /// Values accepted into aggregation (StatsD samples and OTLP points).
    pub samples: u64,
    /// Rejected input: StatsD lines, GPS frames, OTLP points.
    pub parse_errors: u64,
    /// Everything dropped at a bound (every `*_dropped`, `*_drops`, `*_truncated` counter).
    pub drops: u64,
    /// Payloads waiting in every delivery queue (a level).
    pub queue_pending: u64,
    /// Dead letters in every delivery queue (a level).
    pub queue_dlq: u64,
    /// Alerts firing (a level).
    pub alerts_firing: u64,
    /// Alerts pending (a level).
    pub alerts_pending: u64,
    /// GPS devices active within `gps.active_window` (a level).
    pub active_devices: u64,
}

/// One metric name of the ranked window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Busy {
    /// The metric name as sent.
    pub name: String,
    /// Its kind (`counter`, `gauge`, `timer`, ...).
    pub kind: &'static str,
    /// Series (tag combinations) of that name in the window.
    pub series: u64,
    /// Values in the window: samples for timers, histograms and distributions, the summed
    /// increments for counters, distinct members for sets, one per series for gauges.
    pub values: f64,
}

/// The busiest metric names of the last ranked window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Busiest {
    /// Unix seconds at which the ranked window started; `None` before the first.
    pub window_unix: Option<u64>,
    /// Series in that window, every name.
    pub window_series: u64,
    /// At most [`BUSIEST`] names, most series first, then most values.
    pub metrics: Vec<Busy>,
}

/// The ring, the busiest metrics and the sink that feeds them.
pub struct History {
    ring: Mutex<VecDeque<Point>>,
    evicted: AtomicU64,
    busiest: Mutex<Busiest>,
    to_ranker: Mutex<Option<SyncSender<Arc<Flush>>>>,
}

impl History {
    /// An empty history and its ranking thread (without it, if the thread cannot start: the
    /// busiest metrics then stay empty, and a warning says why).
    pub fn new() -> Arc<History> {
        let h = Arc::new(History {
            ring: Mutex::new(VecDeque::with_capacity(POINTS)),
            evicted: AtomicU64::new(0),
            busiest: Mutex::new(Busiest::default()),
            to_ranker: Mutex::new(None),
        });
        let (tx, rx) = sync_channel(0);
        let weak = Arc::downgrade(&h);
        match std::thread::Builder::new()
            .name("tallyd-busiest".into())
            .spawn(move || rank_loop(rx, weak))
        {
            Ok(_) => *lock(&h.to_ranker) = Some(tx),
            Err(e) => tracing::warn!(
                component = "http",
                error = %e,
                "cannot start the status page's ranking thread; busiest metrics stay empty"
            ),
        }
        h
    }

    /// A new history added to `ctx` as a sink (before the flusher starts, so that it is fed)
    /// and as a self-metric source.
    pub fn attach(ctx: &mut crate::component::Context) -> Arc<History> {
        let h = History::new();
        ctx.add_sink(h.clone());
        ctx.telemetry.register(h.clone());
        h
    }

    /// Appends `p`, overwriting (and counting) the oldest point when full.
    pub fn push(&self, p: Point) {
        let mut ring = lock(&self.ring);
        if ring.len() == POINTS {
            ring.pop_front();
            self.evicted.fetch_add(1, Relaxed);
        }
        ring.push_back(p);
    }

    /// Every point, oldest first.
    pub fn points(&self) -> Vec<Point> {
        lock(&self.ring).iter().copied().collect()
    }

    /// The newest point and the oldest one within [`RATE_WINDOW_MS`] before it (the same one
    /// when only one is kept); `None` when the ring is empty.
    pub fn rate_span(&self) -> Option<(Point, Point)> {
        let ring = lock(&self.ring);
        let last = *ring.back()?;
        let first = ring
            .iter()
            .find(|p| last.t_ms.saturating_sub(p.t_ms) <= RATE_WINDOW_MS)
            .copied()
            .unwrap_or(last);
        Some((first, last))
    }

    /// The busiest metrics of the last ranked window.
    pub fn busiest(&self) -> Busiest {
        lock(&self.busiest).clone()
    }
}

/// Per second between two points of a cumulative count (0 over no time).
pub fn per_second(span: Option<(Point, Point)>, field: fn(&Point) -> u64) -> f64 {
    match span {
        Some((a, b)) if b.t_ms > a.t_ms => {
            field(&b).saturating_sub(field(&a)) as f64 * 1000.0 / (b.t_ms - a.t_ms) as f64
        }
        _ => 0.0,
    }
}

impl Sink for History {
    fn name(&self) -> &'static str {
        "status_history"
    }

    fn consume(&self, flush: &Arc<Flush>) {
        // Succeeds only while the ranking thread waits (a rendezvous channel): the flusher
        // never blocks and most windows are left alone.
        if let Some(tx) = lock(&self.to_ranker).as_ref() {
            let _ = tx.try_send(Arc::clone(flush));
        }
    }
}

fn rank_loop(rx: Receiver<Arc<Flush>>, history: Weak<History>) {
    while let Ok(flush) = rx.recv() {
        let ranked = rank(&flush);
        drop(flush);
        match history.upgrade() {
            Some(h) => *lock(&h.busiest) = ranked,
            None => return,
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// Ranks the metric names of one window: most series first, then most values, then by name.
pub fn rank(flush: &Flush) -> Busiest {
    let mut by_name: HashMap<(&str, &'static str), (u64, f64)> = HashMap::new();
    for s in &flush.series {
        let values = match &s.value {
            SeriesValue::Counter(v) => *v,
            SeriesValue::Gauge(_) => 1.0,
            SeriesValue::Set(n) => *n as f64,
            SeriesValue::Samples(samples) => samples.count() as f64,
        };
        let e = by_name
            .entry((s.ctx.name(), s.ctx.kind().name()))
            .or_insert((0, 0.0));
        e.0 += 1;
        e.1 += if values.is_finite() { values } else { 0.0 };
    }
    let mut all: Vec<Busy> = by_name
        .into_iter()
        .map(|((name, kind), (series, values))| Busy {
            name: name.to_string(),
            kind,
            series,
            values,
        })
        .collect();
    all.sort_by(|a, b| {
        b.series
            .cmp(&a.series)
            .then(b.values.total_cmp(&a.values))
            .then_with(|| a.name.cmp(&b.name))
    });
    all.truncate(BUSIEST);
    Busiest {
        window_unix: Some(flush.timestamp),
        window_series: flush.series.len() as u64,
        metrics: all,
    }
}

impl Collect for History {
    fn collect(&self, out: &mut Families) {
        out.gauge(
            "tallyd_status_history_points",
            "Points held in the status page's in-memory history (bound 120, one every 5 s).",
        )
        .value(lock(&self.ring).len() as f64);
        out.counter(
            "tallyd_status_history_evicted",
            "Oldest points of the status page's history overwritten at its bound.",
        )
        .value(self.evicted.load(Relaxed) as f64);
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
