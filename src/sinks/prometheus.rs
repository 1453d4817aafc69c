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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use crate::aggregate::{lock, Flush, SeriesValue};
use crate::model::{Context, MetricKind};
use crate::sinks::Sink;
use crate::telemetry::Telemetry;

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Low-level writers for the exposition formats, shared with tallyd's own telemetry.
pub mod expo {
    use std::fmt::Write as _;

    /// `# HELP` and `# TYPE` lines. In the text format a counter family is named by its
    /// `_total` sample; in OpenMetrics by its base name.
    pub fn family_header(out: &mut String, name: &str, kind: &str, help: &str, om: bool) {
        let suffix = if kind == "counter" && !om {
            "_total"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "# HELP {name}{suffix} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
    }

    /// One sample line. `labels` is already rendered (`a="b",c="d"`), possibly empty.
    pub fn sample(out: &mut String, name: &str, suffix: &str, labels: &str, value: f64) {
        out.push_str(name);
        out.push_str(suffix);
        if !labels.is_empty() {
            out.push('{');
            out.push_str(labels);
            out.push('}');
        }
        out.push(' ');
        value_into(out, value);
        out.push('\n');
    }

    pub fn value_into(out: &mut String, v: f64) {
        if v.is_nan() {
            out.push_str("NaN");
        } else if v == f64::INFINITY {
            out.push_str("+Inf");
        } else if v == f64::NEG_INFINITY {
            out.push_str("-Inf");
        } else {
            let _ = write!(out, "{v}");
        }
    }

    /// Appends `v` escaped for a label value.
    pub fn escape_label_value(out: &mut String, v: &str) {
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
    }
}

/// Sanitises a statsd name into the Prometheus metric-name charset.
pub fn sanitize_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) || s.is_empty() {
        s.insert(0, '_');
    }
    s
}

/// Sanitises a tag key into a label name (see the module docs).
pub fn sanitize_label(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    if s.starts_with("__") || s == "quantile" || s == "le" {
        s.insert_str(0, "exported_");
    }
    s
}

/// A context's tags as labels, sorted by name: sanitised keys (see the module docs), valueless
/// tags left out, several values of one key joined with `,` in sorted order. Both the scrape
/// endpoint and remote write name series with this.
pub fn label_pairs(ctx: &Context) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, &str)> = ctx
        .tags()
        .filter_map(|t| t.split_once(':'))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .map(|(k, v)| (sanitize_label(k), v))
        .collect();
    pairs.sort_unstable();
    let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match out.last_mut() {
            Some((lk, lv)) if *lk == k => {
                lv.push(',');
                lv.push_str(v);
            }
            _ => out.push((k, v.to_string())),
        }
    }
    out
}

/// Renders a context's tags as a label string (without braces).
pub fn render_labels(ctx: &Context) -> String {
    let mut out = String::new();
    for (k, v) in label_pairs(ctx) {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&k);
        out.push_str("=\"");
        expo::escape_label_value(&mut out, &v);
        out.push('"');
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Counter(f64),
    Gauge(f64),
    Summary {
        quantiles: Vec<f64>,
        sum: f64,
        count: u64,
    },
}

#[derive(Debug)]
struct Entry {
    kind: MetricKind,
    family: String,
    labels: String,
    value: Value,
    /// Unix seconds of the last flush that carried this series.
    updated: u64,
}

/// One sample of the exposed state, as [`Exposition::visit`] hands it out.
#[derive(Debug, Clone, Copy)]
pub struct SampleRef<'a> {
    /// The family's exposed name (after clash renaming), without `suffix`.
    pub name: &'a str,
    /// `""`, `"_total"`, `"_sum"` or `"_count"`.
    pub suffix: &'static str,
    /// The series' context: its labels are [`label_pairs`] of it.
    pub ctx: &'a Context,
    /// The same labels, rendered for the text format.
    pub labels: &'a str,
    /// The `quantile` label of a summary quantile sample.
    pub quantile: Option<f64>,
    pub value: f64,
}

/// Receives the exposed state family by family.
pub trait Visitor {
    /// A new family starts: its exposed name, statsd kind and name before sanitising.
    fn family(&mut self, name: &str, kind: MetricKind, original: &str);
    fn sample(&mut self, s: &SampleRef<'_>);
}

/// What a Prometheus scrape would see: one entry per series, with cumulative counters and
/// summary sums and counts, last gauge values and last-window quantiles. Bounded by
/// `max_series`; a series unseen for `ttl` is forgotten. The scrape endpoint and remote write
/// each keep one, so both expose the same names, labels and values.
pub struct Exposition {
    series: HashMap<Arc<Context>, Entry>,
    percentiles: Arc<[f64]>,
    ttl_secs: u64,
    max_series: usize,
}

impl Exposition {
    pub fn new(ttl: std::time::Duration, max_series: usize) -> Exposition {
        Exposition {
            series: HashMap::new(),
            percentiles: Arc::from(Vec::new()),
            ttl_secs: ttl.as_secs().max(1),
            max_series,
        }
    }

    /// Series currently exposed.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Folds one window in; returns how many new series were refused at `max_series`.
    pub fn update(&mut self, flush: &Flush) -> u64 {
        self.percentiles = Arc::clone(&flush.percentiles);
        let mut dropped = 0;
        for s in &flush.series {
            if !self.series.contains_key(&s.ctx) {
                if self.series.len() >= self.max_series {
                    dropped += 1;
                    continue;
                }
                let value = match s.ctx.kind() {
                    MetricKind::Counter => Value::Counter(0.0),
                    MetricKind::Gauge | MetricKind::Set => Value::Gauge(0.0),
                    _ => Value::Summary {
                        quantiles: Vec::new(),
                        sum: 0.0,
                        count: 0,
                    },
                };
                let entry = Entry {
                    kind: s.ctx.kind(),
                    family: sanitize_name(s.ctx.name()),
                    labels: render_labels(&s.ctx),
                    value,
                    updated: flush.timestamp,
                };
                self.series.insert(Arc::clone(&s.ctx), entry);
            }
            let Some(e) = self.series.get_mut(&s.ctx) else {
                continue;
            };
            e.updated = flush.timestamp;
            match (&mut e.value, &s.value) {
                (Value::Counter(total), SeriesValue::Counter(v)) => *total += v,
                (Value::Gauge(g), SeriesValue::Gauge(v)) => *g = *v,
                (Value::Gauge(g), SeriesValue::Set(n)) => *g = *n as f64,
                (
                    Value::Summary {
                        quantiles,
                        sum,
                        count,
                    },
                    SeriesValue::Samples(h),
                ) => {
                    quantiles.clone_from(&h.quantiles);
                    *sum += h.samples.sum();
                    *count += h.samples.count();
                }
                _ => {}
            }
        }
        let ttl = self.ttl_secs;
        let now = flush.timestamp;
        self.series
            .retain(|_, e| now.saturating_sub(e.updated) < ttl);
        dropped
    }

    /// Hands every exposed sample to `v`, families in order of name then statsd kind, clashes
    /// resolved as the module docs say; returns how many series were left out for clashes.
    pub fn visit(&self, v: &mut impl Visitor) -> u64 {
        let mut entries: Vec<(&Arc<Context>, &Entry)> = self.series.iter().collect();
        entries.sort_unstable_by(|(_, a), (_, b)| {
            (&a.family, a.kind, &a.labels).cmp(&(&b.family, b.kind, &b.labels))
        });
        let mut taken: HashSet<String> = HashSet::new();
        let mut left_out = 0u64;
        let mut i = 0;
        while i < entries.len() {
            let (family, kind) = (&entries[i].1.family, entries[i].1.kind);
            let mut j = i;
            while j < entries.len() && entries[j].1.family == *family && entries[j].1.kind == kind {
                j += 1;
            }
            let group = &entries[i..j];
            i = j;
            let free = |name: &str| {
                !name.starts_with("tallyd_")
                    && claims(name, kind).iter().all(|c| !taken.contains(c))
            };
            let renamed = format!("{family}_{}", kind.name());
            let name = if free(family) {
                family.clone()
            } else if free(&renamed) {
                renamed
            } else {
                left_out += group.len() as u64;
                continue;
            };
            taken.extend(claims(&name, kind));
            v.family(&name, kind, family);
            let mut last_labels: Option<&str> = None;
            for (ctx, e) in group {
                if last_labels == Some(e.labels.as_str()) {
                    left_out += 1;
                    continue;
                }
                last_labels = Some(&e.labels);
                let sample = |suffix, quantile, value| SampleRef {
                    name: &name,
                    suffix,
                    ctx,
                    labels: &e.labels,
                    quantile,
                    value,
                };
                match &e.value {
                    Value::Counter(x) => v.sample(&sample("_total", None, *x)),
                    Value::Gauge(x) => v.sample(&sample("", None, *x)),
                    Value::Summary {
                        quantiles,
                        sum,
                        count,
                    } => {
                        for (q, x) in self.percentiles.iter().zip(quantiles) {
                            v.sample(&sample("", Some(*q), *x));
                        }
                        v.sample(&sample("_sum", None, *sum));
                        v.sample(&sample("_count", None, *count as f64));
                    }
                }
            }
        }
        left_out
    }
}

/// The Prometheus sink: keeps the exposed state, renders it on scrape.
pub struct Prometheus {
    state: Mutex<Exposition>,
    telemetry: Arc<Telemetry>,
}

impl Prometheus {
    pub fn new(
        ttl: std::time::Duration,
        max_series: usize,
        telemetry: Arc<Telemetry>,
    ) -> Prometheus {
        Prometheus {
            state: Mutex::new(Exposition::new(ttl, max_series)),
            telemetry,
        }
    }

    /// Renders every exposed series, then tallyd's own metrics.
    pub fn render(&self, om: bool) -> String {
        let mut out = String::with_capacity(64 * 1024);
        let conflicts = {
            let state = lock(&self.state);
            state.visit(&mut TextWriter { out: &mut out, om })
        };
        self.telemetry.prom_conflicts.store(conflicts, Relaxed);
        self.telemetry.render(&mut out, om);
        if om {
            out.push_str("# EOF\n");
        }
        out
    }
}

impl Sink for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn consume(&self, flush: &Arc<Flush>) {
        let mut state = lock(&self.state);
        let dropped = state.update(flush);
        self.telemetry
            .prom_series
            .store(state.len() as u64, Relaxed);
        self.telemetry
            .prom_series_dropped
            .fetch_add(dropped, Relaxed);
    }
}

fn prom_type(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge | MetricKind::Set => "gauge",
        _ => "summary",
    }
}

/// Names a family would claim: its own name and every sample name.
fn claims(base: &str, kind: MetricKind) -> Vec<String> {
    match prom_type(kind) {
        "counter" => vec![base.to_string(), format!("{base}_total")],
        "summary" => vec![
            base.to_string(),
            format!("{base}_sum"),
            format!("{base}_count"),
        ],
        _ => vec![base.to_string()],
    }
}

/// Writes the text format (or OpenMetrics).
struct TextWriter<'a> {
    out: &'a mut String,
    om: bool,
}

impl Visitor for TextWriter<'_> {
    fn family(&mut self, name: &str, kind: MetricKind, original: &str) {
        expo::family_header(
            self.out,
            name,
            prom_type(kind),
            &format!("statsd {} {original}", kind.name()),
            self.om,
        );
    }

    fn sample(&mut self, s: &SampleRef<'_>) {
        match s.quantile {
            None => expo::sample(self.out, s.name, s.suffix, s.labels, s.value),
            Some(q) => {
                let mut l = s.labels.to_string();
                if !l.is_empty() {
                    l.push(',');
                }
                l.push_str("quantile=\"");
                expo::value_into(&mut l, q);
                l.push('"');
                expo::sample(self.out, s.name, s.suffix, &l, s.value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{SampleSummary, Samples, Series};
    use std::time::Duration;

    fn flush(ts: u64, series: Vec<(MetricKind, &str, &[&str], SeriesValue)>) -> Arc<Flush> {
        Arc::new(Flush {
            timestamp: ts,
            interval: Duration::from_secs(10),
            percentiles: Arc::from(vec![0.5, 0.99]),
            series: series
                .into_iter()
                .map(|(k, n, t, value)| Series {
                    ctx: Arc::new(Context::from_unsorted(k, n, t)),
                    value,
                })
                .collect(),
            events: vec![],
            service_checks: vec![],
        })
    }

    fn summary(values: &[f64]) -> SeriesValue {
        let mut samples = Samples::new();
        for v in values {
            samples.add(*v, 1);
        }
        let quantiles = vec![samples.quantile(0.5), samples.quantile(0.99)];
        SeriesValue::Samples(Box::new(SampleSummary { samples, quantiles }))
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
        assert_eq!(p.telemetry.prom_conflicts.load(Relaxed), 2);
        let names: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let unique: HashSet<&&str> = names.iter().collect();
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
    fn series_limit() {
        let p = Prometheus::new(Duration::from_secs(30), 1, Arc::new(Telemetry::default()));
        p.consume(&flush(
            0,
            vec![
                (MetricKind::Gauge, "a", &[], SeriesValue::Gauge(1.0)),
                (MetricKind::Gauge, "b", &[], SeriesValue::Gauge(1.0)),
            ],
        ));
        assert_eq!(p.telemetry.prom_series_dropped.load(Relaxed), 1);
        assert_eq!(p.telemetry.prom_series.load(Relaxed), 1);
    }
}
