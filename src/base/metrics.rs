//! tallyd's own metrics as structured data: typed families that components emit into one
//! [`Registry`], and the one renderer that writes them as Prometheus text or OpenMetrics.
//!
//! Components keep counting into their own atomics on the hot path. At read time (a scrape,
//! an alert evaluation) each registered [`Collect`] appends its families to a [`Families`]
//! buffer; the result is a plain `Vec<Family>` that [`render`] formats and that other readers
//! (alert rules over `tallyd_*`) use directly, without formatting and parsing text.
//!
//! A family is rendered when it was created, even without samples (its `# HELP` and `# TYPE`
//! lines alone), so a collector that has nothing to say should not create it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::expo;
use super::lock;

/// What a family measures, which decides its `# TYPE` and sample names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets at restart). Its samples are named `<name>_total`, and so is the
    /// family in the text format; OpenMetrics names the family by its base name.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets with a sum and a count (`_bucket`, `_sum`, `_count` samples).
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A histogram sample's data: cumulative bucket counts, total count and sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// `(upper bound, observations <= bound)`, in increasing bound order, without `+Inf`
    /// (the `+Inf` bucket is `count`).
    pub buckets: Vec<(f64, f64)>,
    /// Observations.
    pub count: f64,
    /// Sum of the observed values.
    pub sum: f64,
}

/// A sample's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter's total or a gauge's value.
    Number(f64),
    /// A histogram's buckets, count and sum.
    Histogram(Histogram),
}

/// One sample of a family: its labels, in rendering order, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `(name, value)` label pairs, unescaped, in the order they are rendered.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: Value,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The number of a counter or gauge sample (`None` for a histogram).
    pub fn number(&self) -> Option<f64> {
        match self.value {
            Value::Number(v) => Some(v),
            Value::Histogram(_) => None,
        }
    }
}

/// A metric family: a name, a help text, a kind and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The base name (a counter's without `_total`).
    pub name: &'static str,
    /// The `# HELP` text, unescaped.
    pub help: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The samples, in rendering order.
    pub samples: Vec<Sample>,
}

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl Family {
    /// Adds a counter or gauge sample with `labels` (rendered in this order).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Family {
        debug_assert!(self.kind != Kind::Histogram, "{}: number sample", self.name);
        self.samples.push(Sample {
            labels: owned(labels),
            value: Value::Number(value),
        });
        self
    }

    /// Adds one sample per `(label value, value)`, each labelled `label` with its value: the
    /// shape of a count kept per reason, transport or notifier.
    pub fn by<L: AsRef<str>>(
        &mut self,
        label: &str,
        values: impl IntoIterator<Item = (L, f64)>,
    ) -> &mut Family {
        for (l, v) in values {
            self.sample(&[(label, l.as_ref())], v);
        }
        self
    }

    /// Adds a counter or gauge sample without labels.
    pub fn value(&mut self, value: f64) -> &mut Family {
        self.sample(&[], value)
    }

    /// Adds a histogram sample with `labels` (the `le` label is added after them).
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: Histogram) -> &mut Family {
        debug_assert!(
            self.kind == Kind::Histogram,
            "{}: histogram sample",
            self.name
        );
        self.samples.push(Sample {
            labels: owned(labels),
            value: Value::Histogram(h),
        });
        self
    }

    /// The number of the sample whose labels are exactly `labels` (in order).
    pub fn get(&self, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.labels.len() == labels.len()
                    && s.labels
                        .iter()
                        .zip(labels)
                        .all(|((k, v), (wk, wv))| k == wk && v == wv)
            })
            .and_then(Sample::number)
    }
}

/// The families being collected, in the order they were first created.
#[derive(Debug, Default)]
pub struct Families {
    families: Vec<Family>,
}

impl Families {
    /// An empty collection.
    pub fn new() -> Families {
        Families::default()
    }

    /// The family `name`, created (empty, with `kind` and `help`) when not there yet: two
    /// collectors emitting the same family share one `# HELP`/`# TYPE` block. The first
    /// creator's kind and help win.
    pub fn family(&mut self, kind: Kind, name: &'static str, help: &'static str) -> &mut Family {
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(i) => {
                debug_assert_eq!(self.families[i].kind, kind, "{name}: two kinds");
                i
            }
            None => {
                self.families.push(Family {
                    name,
                    help,
                    kind,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[at]
    }

    /// The counter family `name` (see [`Families::family`]).
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(Kind::Counter, name, help)
    }

    /// The gauge family `name` (see [`Families::family`]).
    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(Kind::Gauge, name, help)
    }

    /// One family of `kind` per `(name, help, value)`, each with one sample labelled `labels`:
    /// the shape of a component whose counters are plain atomics.
    pub fn atomics(
        &mut self,
        kind: Kind,
        labels: &[(&str, &str)],
        list: &[(&'static str, &'static str, &AtomicU64)],
    ) {
        for (name, help, v) in list {
            self.family(kind, name, help)
                .sample(labels, v.load(Relaxed) as f64);
        }
    }

    /// The histogram family `name` (see [`Families::family`]).
    pub fn histogram(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(Kind::Histogram, name, help)
    }

    /// The families collected so far.
    pub fn as_slice(&self) -> &[Family] {
        &self.families
    }

    /// The collected families.
    pub fn into_vec(self) -> Vec<Family> {
        self.families
    }
}

/// A component's metrics: appends its families to `out` when metrics are read.
pub trait Collect: Send + Sync {
    /// Appends this component's families (current values) to `out`.
    fn collect(&self, out: &mut Families);
}

/// Collects `c` alone into a new vector of families (tests and one-off readers).
pub fn collect_one(c: &dyn Collect) -> Vec<Family> {
    let mut out = Families::new();
    c.collect(&mut out);
    out.into_vec()
}

/// The registered collectors, read in registration order.
#[derive(Default)]
pub struct Registry {
    collectors: Mutex<Vec<Arc<dyn Collect>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a collector; its families come after those of the collectors registered before.
    pub fn register(&self, c: Arc<dyn Collect>) {
        lock(&self.collectors).push(c);
    }

    /// Every registered collector's families, now.
    pub fn snapshot(&self) -> Vec<Family> {
        let mut out = Families::new();
        self.collect(&mut out);
        out.into_vec()
    }
}

impl Collect for Registry {
    fn collect(&self, out: &mut Families) {
        // Collectors run outside the lock: one may take a while (reading /proc, a queue's
        // depth) and must not hold up a registration.
        let collectors = lock(&self.collectors).clone();
        for c in collectors {
            c.collect(out);
        }
    }
}

/// Appends `labels` as `k="v",...` (values escaped) to `out`.
fn labels_into(out: &mut String, labels: &[(String, String)]) {
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        expo::escape_label_value(out, v);
        out.push('"');
    }
}

/// Renders `families` in the Prometheus text format 0.0.4, or OpenMetrics 1.0 when `om`
/// (without the final `# EOF`, which belongs to the whole exposition).
pub fn render(families: &[Family], out: &mut String, om: bool) {
    let mut labels = String::new();
    for f in families {
        expo::family_header(out, f.name, f.kind.as_str(), f.help, om);
        let suffix = if f.kind == Kind::Counter {
            "_total"
        } else {
            ""
        };
        for s in &f.samples {
            labels.clear();
            labels_into(&mut labels, &s.labels);
            match &s.value {
                Value::Number(v) => expo::sample(out, f.name, suffix, &labels, *v),
                Value::Histogram(h) => histogram_into(out, f.name, &mut labels, h),
            }
        }
    }
}

/// A histogram sample's `_bucket` lines (`le` after the sample's labels), `_sum` and `_count`.
fn histogram_into(out: &mut String, name: &str, labels: &mut String, h: &Histogram) {
    use std::fmt::Write as _;
    let base = labels.len();
    let sep = if base > 0 { "," } else { "" };
    for (le, n) in &h.buckets {
        labels.truncate(base);
        let _ = write!(labels, "{sep}le=\"{le}\"");
        expo::sample(out, name, "_bucket", labels, *n);
    }
    labels.truncate(base);
    let _ = write!(labels, "{sep}le=\"+Inf\"");
    expo::sample(out, name, "_bucket", labels, h.count);
    labels.truncate(base);
    expo::sample(out, name, "_sum", labels, h.sum);
    expo::sample(out, name, "_count", labels, h.count);
}

/// Renders `families` into a new string (see [`render`]).
pub fn render_to_string(families: &[Family], om: bool) -> String {
    let mut out = String::new();
    render(families, &mut out, om);
    out
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
