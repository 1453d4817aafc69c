//! Prometheus scrape endpoint state and rendering (text format 0.0.4 and OpenMetrics 1.0).
//!
//! Each flush updates one entry per series: counters accumulate into cumulative `_total`
//! counters, gauges and sets keep their last value, and timers, histograms and distributions
//! become summaries (quantiles of the last window that had samples, cumulative `_sum` and
//! `_count`). A series that receives nothing for `prometheus.series_ttl` disappears.
//!
//! Naming rules (also in the README):
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
mod tests {
    use super::exposition::Value;
    use super::*;
    use crate::aggregate::{Series, SeriesValue};
    use crate::model::Context;
    use std::time::Duration;

    use crate::sinks::testutil::summary;

    fn flush(ts: u64, series: Vec<(MetricKind, &str, &[&str], SeriesValue)>) -> Arc<Flush> {
        Arc::new(crate::sinks::testutil::flush(ts, series))
    }

    fn sink() -> Prometheus {
        Prometheus::new(
            Duration::from_secs(300),
            1000,
            Arc::new(Telemetry::default()),
        )
    }

    fn user_part(text: &str) -> String {
        text.split("# HELP tallyd_build_info")
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn exposition_of_each_kind() {
        let p = sink();
        p.consume(&flush(
            0,
            vec![
                (
                    MetricKind::Counter,
                    "page.views",
                    &["env:prod", "flag"],
                    SeriesValue::Counter(3.0),
                ),
                (MetricKind::Gauge, "temp-c", &[], SeriesValue::Gauge(-1.5)),
                (MetricKind::Set, "users", &[], SeriesValue::Set(4)),
                (
                    MetricKind::Timer,
                    "db.query",
                    &["db:main"],
                    summary(&[1.0, 2.0, 3.0]),
                ),
            ],
        ));
        p.consume(&flush(
            10,
            vec![(
                MetricKind::Counter,
                "page.views",
                &["env:prod", "flag"],
                SeriesValue::Counter(2.0),
            )],
        ));
        let text = user_part(&p.render(false));
        let want = "\
# HELP db_query statsd timer db_query
# TYPE db_query summary
db_query{db=\"main\",quantile=\"0.5\"} 2
db_query{db=\"main\",quantile=\"0.99\"} 3
db_query_sum{db=\"main\"} 6
db_query_count{db=\"main\"} 3
# HELP page_views_total statsd counter page_views
# TYPE page_views_total counter
page_views_total{env=\"prod\"} 5
# HELP temp_c statsd gauge temp_c
# TYPE temp_c gauge
temp_c -1.5
# HELP users statsd set users
# TYPE users gauge
users 4
";
        assert_eq!(text, want);
        let om = p.render(true);
        assert!(
            om.contains("# TYPE page_views counter\npage_views_total{env=\"prod\"} 5\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn windows_are_folded_in_order_off_the_flusher_and_scrapes_see_the_newest() {
        let p = sink();
        let counter = |ts, v| {
            flush(
                ts,
                vec![(MetricKind::Counter, "hits", &[], SeriesValue::Counter(v))],
            )
        };
        // While the state is held (by a scrape's copy, say), consume only queues: on this
        // thread, waiting for the lock would deadlock the test.
        let held = lock(&p.shared.state);
        for (ts, v) in [(0, 1.0), (10, 2.0), (20, 4.0)] {
            p.consume(&counter(ts, v));
        }
        assert_eq!(held.len(), 0);
        drop(held);
        // A scrape folds what is still queued, oldest first, before it copies.
        assert!(user_part(&p.render(false)).contains("hits_total 7\n"));

        // Without a scrape, the sink's own thread folds the window.
        p.consume(&counter(30, 8.0));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !lock(&p.shared.pending).is_empty() {
            assert!(std::time::Instant::now() < deadline, "folding thread");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Folded by that thread (nothing else ran): the state holds the new total already.
        let rows = lock(&p.shared.state).snapshot().rows;
        assert!(
            matches!(rows.as_slice(), [(_, Value::Counter(v))] if *v == 15.0),
            "{rows:?}"
        );

        // Racing a scraper thread and the folding thread: every window is folded exactly once.
        let p = Arc::new(sink());
        let scraper = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                for _ in 0..100 {
                    p.render(false);
                }
            })
        };
        for i in 0..200u64 {
            p.consume(&counter(i * 10, 1.0));
        }
        scraper.join().expect("scraper");
        assert!(user_part(&p.render(false)).contains("hits_total 200\n"));
    }

    #[test]
    fn label_rules() {
        let c = Context::from_unsorted(
            MetricKind::Gauge,
            "m",
            &[
                "env:b",
                "env:a",
                "1st:x",
                "__name__:y",
                "quantile:q",
                "my.key:va\"l\\ue",
                "bare",
                "empty:",
                "url:http://x",
            ],
        );
        assert_eq!(
            render_labels(&c),
            "_1st=\"x\",env=\"a,b\",exported___name__=\"y\",exported_quantile=\"q\",my_key=\"va\\\"l\\\\ue\",url=\"http://x\""
        );
        assert_eq!(sanitize_name("9lives.x-y:z"), "_9lives_x_y:z");
    }

    #[test]
    fn clashes_never_break_the_scrape() {
        let p = sink();
        p.consume(&flush(
            0,
            vec![
                (MetricKind::Counter, "foo", &[], SeriesValue::Counter(1.0)),
                (MetricKind::Timer, "foo", &[], summary(&[1.0])),
                (MetricKind::Histogram, "foo", &[], summary(&[2.0])),
                (
                    MetricKind::Gauge,
                    "foo_timer_count",
                    &[],
                    SeriesValue::Gauge(1.0),
                ),
                (MetricKind::Gauge, "bar", &["flag"], SeriesValue::Gauge(1.0)),
                (
                    MetricKind::Gauge,
                    "bar",
                    &["other"],
                    SeriesValue::Gauge(2.0),
                ),
                (
                    MetricKind::Gauge,
                    "tallyd_uptime_seconds",
                    &[],
                    SeriesValue::Gauge(2.0),
                ),
            ],
        ));
        let text = user_part(&p.render(false));
        assert!(text.contains("foo_total 1\n"), "{text}");
        assert!(text.contains("foo_timer_count 1\n"), "{text}");
        assert!(text.contains("foo_histogram_count 1\n"), "{text}");
        assert!(!text.contains("tallyd_uptime_seconds"), "{text}");
        // The gauge foo_timer_count sorts after the timer that claimed that name: renamed.
        assert!(text.contains("foo_timer_count_gauge 1\n"), "{text}");
        // Valueless tags are not labels, so the two `bar` series clash: one is left out, and
        // so is the reserved name.
        assert_eq!(
            text.lines().filter(|l| l.starts_with("bar ")).count(),
            1,
            "{text}"
        );
        assert_eq!(p.shared.telemetry.prom_conflicts.load(Relaxed), 2);
        let names: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let unique: std::collections::HashSet<&&str> = names.iter().collect();
        assert_eq!(names.len(), unique.len());
    }

    #[test]
    fn series_expire_after_ttl() {
        let p = Prometheus::new(
            Duration::from_secs(30),
            1000,
            Arc::new(Telemetry::default()),
        );
        p.consume(&flush(
            0,
            vec![(MetricKind::Gauge, "old", &[], SeriesValue::Gauge(1.0))],
        ));
        p.consume(&flush(
            20,
            vec![(MetricKind::Gauge, "new", &[], SeriesValue::Gauge(1.0))],
        ));
        assert!(user_part(&p.render(false)).contains("old 1"));
        p.consume(&flush(30, vec![]));
        let text = user_part(&p.render(false));
        assert!(!text.contains("old 1"), "{text}");
        assert!(text.contains("new 1"), "{text}");
    }

    #[test]
    fn expiry_follows_each_series_own_age() {
        let p = Prometheus::new(
            Duration::from_secs(30),
            1000,
            Arc::new(Telemetry::default()),
        );
        let g = |name: &'static str| (MetricKind::Gauge, name, &[][..], SeriesValue::Gauge(1.0));
        p.consume(&flush(0, vec![g("a")]));
        p.consume(&flush(10, vec![g("b")]));
        p.consume(&flush(20, vec![g("c")]));
        p.consume(&flush(30, vec![]));
        let text = user_part(&p.render(false));
        assert!(
            !text.contains("\na 1") && !text.starts_with("a 1"),
            "{text}"
        );
        assert!(text.contains("b 1") && text.contains("c 1"), "{text}");
        p.consume(&flush(40, vec![g("c")]));
        let text = user_part(&p.render(false));
        assert!(!text.contains("b 1"), "{text}");
        assert!(text.contains("c 1"), "{text}");
        p.consume(&flush(69, vec![]));
        assert!(user_part(&p.render(false)).contains("c 1"));
        p.consume(&flush(70, vec![]));
        assert_eq!(user_part(&p.render(false)), "");
        assert_eq!(p.shared.telemetry.prom_series.load(Relaxed), 0);
    }

    #[test]
    fn one_series_per_context_whatever_the_arc() {
        // The aggregator may hand over a new Arc for a context it forgot and saw again.
        let p = sink();
        let ctx = Arc::new(Context::from_unsorted(MetricKind::Counter, "c", &["a:1"]));
        let with = |ctx: Arc<Context>, ts: u64| {
            Arc::new(Flush {
                timestamp: ts,
                interval: Duration::from_secs(10),
                percentiles: Arc::from(vec![0.5]),
                series: vec![Series::new(ctx, SeriesValue::Counter(1.0))],
                events: vec![],
                service_checks: vec![],
                recycle: Default::default(),
            })
        };
        p.consume(&with(Arc::clone(&ctx), 0));
        p.consume(&with(Arc::clone(&ctx), 10));
        p.consume(&with(Arc::new((*ctx).clone()), 20));
        assert!(user_part(&p.render(false)).contains("c_total{a=\"1\"} 3\n"));
        assert_eq!(p.shared.telemetry.prom_series.load(Relaxed), 1);
    }

    #[test]
    fn a_scrape_is_handed_on_in_pieces() {
        let p = sink();
        let names: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
        let series = names
            .iter()
            .map(|n| {
                let (kind, value) = if n.len() % 2 == 0 {
                    (MetricKind::Counter, SeriesValue::Counter(1.0))
                } else {
                    (MetricKind::Gauge, SeriesValue::Gauge(2.0))
                };
                (kind, n.as_str(), &["env:prod"][..], value)
            })
            .collect();
        p.consume(&flush(0, series));
        let whole = p.render(false);
        let mut pieces: Vec<String> = Vec::new();
        p.render_to(false, 4096, &mut |piece| {
            pieces.push(piece);
            true
        });
        assert!(pieces.len() > 3, "{}", pieces.len());
        // Every piece but the last is handed on as soon as it reaches the size: by the end of
        // the line (a family header or a sample) that crossed it.
        for piece in &pieces[..pieces.len() - 1] {
            assert!(
                piece.len() >= 4096 && piece.len() < 4096 + 200,
                "{}",
                piece.len()
            );
            assert!(piece.ends_with('\n'));
        }
        // The same text as in one piece (tallyd's own metrics, uptime say, move between the
        // two renders).
        let joined = pieces.concat();
        assert_eq!(user_part(&joined), user_part(&whole));
        assert!(joined.contains("\n# HELP tallyd_prometheus_update_seconds "));
        // A scraper that goes away: nothing more is formatted or handed on.
        let mut handed = 0;
        p.render_to(false, 4096, &mut |_| {
            handed += 1;
            false
        });
        assert_eq!(handed, 1);
    }

    #[test]
    fn series_limit() {
        let p = Prometheus::new(Duration::from_secs(30), 1, Arc::new(Telemetry::default()));
        p.consume(&flush(
            0,
            vec![
                (MetricKind::Gauge, "a", &[], SeriesValue::Gauge(1.0)),
                (MetricKind::Gauge, "b", &[], SeriesValue::Gauge(1.0)),
            ],
        ));
        p.sync();
        assert_eq!(p.shared.telemetry.prom_series_dropped.load(Relaxed), 1);
        assert_eq!(p.shared.telemetry.prom_series.load(Relaxed), 1);
    }
}
