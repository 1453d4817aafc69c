//! Prometheus scrape endpoint state and rendering (text format 0.0.4 and OpenMetrics 1.0).
//!
//! Each flush updates one entry per series: counters accumulate into cumulative `_total`
//! counters, gauges and sets keep their last value, and timers, histograms and distributions
//! become summaries (quantiles of the last window that had samples, cumulative `_sum` and
//! `_count`). A series that receives nothing for `prometheus.series_ttl` disappears.
//!
//! Naming rules (also in docs/prometheus.md):
//! - metric names: every character outside `[a-zA-Z0-9_:]` becomes `_`; a leading digit gets a
//!   `_` prefix. The `tallyd_` prefix is reserved for tallyd's own metrics.
//! - tags `key:value` become labels; the key is sanitised to `[a-zA-Z0-9_]` (leading digit gets a
//!   `_` prefix; `__*`, `quantile` and `le` get an `exported_` prefix). Tags without a value, or
//!   with an empty one, are not labels (as in statsd_exporter). Several values for one key are
//!   joined with `,` in sorted order.
//! - clashes: families are laid out in order of name, then statsd type (counter, gauge, set,
//!   timer, histogram, distribution). A family whose names are taken by an earlier one is
//!   renamed `<name>_<type>` (for example `latency_timer`); if that is taken too, it is left out.
//!   Two series of one family with the same labels keep the first. What is left out is counted
//!   in `tallyd_prometheus_conflicting_series`; a scrape never fails.

pub mod config;
mod exposition;
mod labels;

use exposition::prom_type;
pub use exposition::{Exposition, SampleRef, Snapshot, Visitor};
pub use labels::{label_pairs, render_labels};

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::aggregate::Flush;
use crate::base::expo::{self};
pub use crate::base::expo::{sanitize_label, sanitize_name};
pub use crate::base::expo::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::base::lock;
use crate::component::{self, Error, Running, Stage};
use crate::model::MetricKind;
use crate::sinks::Sink;
use crate::telemetry::Telemetry;

/// The Prometheus sink: keeps the exposed state, renders it on scrape.
///
/// Folding a window into the state (a table probe and a write per series, which adds up with
/// many series; BENCHMARKS.md has the measurement) happens on the sink's own thread, as the
/// Datadog and alert sinks do their work on theirs, so the flusher only queues the window. A
/// scrape folds whatever is still queued before it copies the state, so `/metrics` always
/// shows the newest window.
pub struct Prometheus {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<Exposition>,
    /// Windows not folded in yet, oldest first. One arrives per flush interval and the
    /// folding thread takes it at once, so this holds one or two; past [`MAX_PENDING`] (the
    /// state held by something for whole windows) the flusher folds them itself.
    pending: Mutex<VecDeque<Arc<Flush>>>,
    wake: Condvar,
    telemetry: Arc<Telemetry>,
}

/// Windows queued before the flusher stops handing them over and folds them itself.
const MAX_PENDING: usize = 4;

impl Prometheus {
    /// A sink keeping at most `max_series` series, each for `ttl` after its last window, and
    /// its folding thread.
    pub fn new(
        ttl: std::time::Duration,
        max_series: usize,
        telemetry: Arc<Telemetry>,
    ) -> Prometheus {
        let shared = Arc::new(Shared {
            state: Mutex::new(Exposition::new(ttl, max_series)),
            pending: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            telemetry,
        });
        let weak = Arc::downgrade(&shared);
        // Without the thread the sink still works (consume folds windows itself past
        // MAX_PENDING and every scrape folds the rest), so a spawn failure is only logged.
        if let Err(e) = std::thread::Builder::new()
            .name("prometheus".into())
            .spawn(move || fold_loop(&weak))
        {
            tracing::warn!(error = %e, "cannot start the Prometheus folding thread");
        }
        Prometheus { shared }
    }

    /// Folds every queued window into the state now, waiting for the state's lock. Benches
    /// call it to time the whole update; the sink's own thread does this otherwise.
    pub fn sync(&self) {
        let s = &*self.shared;
        s.fold(&mut lock(&s.state));
    }

    /// Renders every exposed series, then tallyd's own metrics, as one string.
    pub fn render(&self, om: bool) -> String {
        let mut body = String::new();
        self.render_to(om, usize::MAX, &mut |piece| {
            if body.is_empty() {
                body = piece;
            } else {
                body.push_str(&piece);
            }
            true
        });
        body
    }

    /// Renders as [`Prometheus::render`] does, handing the text to `emit` in pieces of about
    /// `chunk` bytes as it is produced, so that a scrape of 100,000 series never holds the
    /// whole body (tens of megabytes) at once. When `emit` returns false (the scraper went
    /// away), the rest is not formatted.
    pub fn render_to(&self, om: bool, chunk: usize, emit: &mut dyn FnMut(String) -> bool) {
        // Fold what is still queued, copy what is exposed and let go of the lock before the
        // slow part (names, labels, sorting, formatting): a scrape holds up the folding thread
        // only for the copy, and never the flusher, which only queues.
        let s = &*self.shared;
        let snapshot = {
            let mut state = lock(&s.state);
            s.fold(&mut state);
            state.snapshot()
        };
        let mut w = TextWriter {
            out: String::with_capacity(chunk.min(64 * 1024) + 4096),
            om,
            with_quantile: String::new(),
            chunk,
            emit,
            open: true,
        };
        let conflicts = snapshot.visit(&mut w);
        drop(snapshot);
        s.telemetry.prom_conflicts.store(conflicts, Relaxed);
        if !w.open {
            return;
        }
        let mut out = w.out;
        s.telemetry.render(&mut out, om);
        if om {
            out.push_str("# EOF\n");
        }
        (w.emit)(out);
    }
}

impl Sink for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn consume(&self, flush: &Arc<Flush>) {
        let s = &*self.shared;
        let queued = {
            let mut pending = lock(&s.pending);
            pending.push_back(Arc::clone(flush));
            pending.len()
        };
        if queued > MAX_PENDING {
            // Never expected (see `Shared::pending`); bounded all the same.
            s.fold(&mut lock(&s.state));
        } else {
            s.wake.notify_one();
        }
    }
}

impl Shared {
    /// Folds the queued windows into `state`, oldest first.
    fn fold(&self, state: &mut Exposition) {
        // Not `while let`: the pending lock must not be held across the update.
        loop {
            let next = lock(&self.pending).pop_front();
            let Some(flush) = next else { return };
            let t0 = Instant::now();
            let dropped = state.update(&flush);
            let t = &self.telemetry;
            t.prom_update_ns
                .store(t0.elapsed().as_nanos() as u64, Relaxed);
            t.prom_series.store(state.len() as u64, Relaxed);
            t.prom_series_dropped.fetch_add(dropped, Relaxed);
        }
    }
}

/// The folding thread: waits for queued windows and folds them in; ends once the sink is gone.
fn fold_loop(shared: &Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        {
            let pending = lock(&s.pending);
            if pending.is_empty() {
                // The timeout only bounds how long a dropped sink keeps this thread.
                drop(
                    s.wake
                        .wait_timeout(pending, Duration::from_secs(1))
                        .unwrap_or_else(|p| p.into_inner()),
                );
            }
        }
        s.fold(&mut lock(&s.state));
    }
}

/// Writes the text format (or OpenMetrics), handing it on in pieces (see
/// [`Prometheus::render_to`]).
struct TextWriter<'a> {
    out: String,
    om: bool,
    /// Reused for the labels of quantile samples.
    with_quantile: String,
    /// `out` is handed to `emit` once it holds this many bytes.
    chunk: usize,
    emit: &'a mut dyn FnMut(String) -> bool,
    /// False once `emit` refused a piece: nothing more is formatted.
    open: bool,
}

impl TextWriter<'_> {
    fn hand_on_if_full(&mut self) {
        if self.out.len() >= self.chunk {
            let next = String::with_capacity(self.out.capacity());
            self.open = (self.emit)(std::mem::replace(&mut self.out, next));
        }
    }
}

impl Visitor for TextWriter<'_> {
    fn family(&mut self, name: &str, kind: MetricKind, original: &str) {
        if !self.open {
            return;
        }
        expo::family_header(
            &mut self.out,
            name,
            prom_type(kind),
            &format!("statsd {} {original}", kind.name()),
            self.om,
        );
        self.hand_on_if_full();
    }

    fn sample(&mut self, s: &SampleRef<'_>) {
        if !self.open {
            return;
        }
        match s.quantile {
            None => expo::sample(&mut self.out, s.name, s.suffix, s.labels, s.value),
            Some(q) => {
                let l = &mut self.with_quantile;
                l.clear();
                l.push_str(s.labels);
                if !l.is_empty() {
                    l.push(',');
                }
                l.push_str("quantile=\"");
                expo::value_into(l, q);
                l.push('"');
                expo::sample(&mut self.out, s.name, s.suffix, l, s.value);
            }
        }
        self.hand_on_if_full();
    }
}

/// Starts the Prometheus sink (always on): the state `/metrics` renders, folded from every
/// window on its own thread.
pub fn start(
    cfg: &config::PrometheusConfig,
    ctx: &mut component::Context,
) -> Result<Running<Arc<Prometheus>>, Error> {
    let p = Arc::new(Prometheus::new(
        cfg.series_ttl,
        cfg.max_series,
        Arc::clone(&ctx.telemetry),
    ));
    ctx.add_sink(p.clone());
    Ok(Running::ok(
        "prometheus",
        Stage::Flush,
        format!("at most {} series", cfg.max_series),
        p,
    ))
}

#[cfg(test)]
mod tests;
