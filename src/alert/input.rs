//! What rules read in one window: the flushed series, plus tallyd's own `tallyd_*` metrics as
//! the self-metrics registry collects them (so families other subsystems register later are
//! usable without any change here).
//!
//! Self counters are cumulative on `/metrics`; here they become the window's increase, like a
//! StatsD counter, so `sum`/`rate` mean the same for both.

use std::collections::HashMap;

use crate::aggregate::{Flush, Samples, SeriesValue};
use crate::base::metrics::{Family, Kind, Value};

use super::rules::Selector;

/// One series' contribution to a window.
pub enum Point<'a> {
    /// A counter's increase in the window.
    Counter(f64),
    /// A gauge's value.
    Gauge(f64),
    /// A set's distinct members in the window.
    Set(u64),
    /// A timer's, histogram's or distribution's samples in the window.
    Samples(&'a Samples),
}

/// A `tallyd_*` sample, as rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfSeries {
    /// The family name (a counter's without `_total`; a histogram's samples are gauges named
    /// `<family>_bucket`, `_sum` and `_count`, as on `/metrics`).
    pub name: String,
    /// Labels as `k:v` tags, sorted.
    pub tags: Vec<String>,
    /// Whether the family is a counter.
    pub counter: bool,
    /// Gauges: the value; counters: the increase since the previous read.
    pub value: f64,
}

/// Counter values remembered between reads; more distinct series than this are not tracked
/// (counted in `tallyd_alert_self_series_dropped_total`).
pub const MAX_SELF_SERIES: usize = 10_000;

/// A self series: its family name and labels.
type SeriesKey = (&'static str, Vec<(String, String)>);

/// Turns successive snapshots of tallyd's own metrics into per-window values.
#[derive(Default)]
pub struct SelfMetrics {
    /// Each counter series' last total.
    previous: HashMap<SeriesKey, f64>,
    /// Counter series not tracked at [`MAX_SELF_SERIES`].
    pub dropped: u64,
}

/// Labels as sorted `k:v` tags.
fn tags(labels: &[(String, String)], extra: Option<(&str, &str)>) -> Vec<String> {
    let mut tags: Vec<String> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra)
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    tags.sort();
    tags
}

impl SelfMetrics {
    /// Reads a registry snapshot. A counter seen for the first time contributes its whole
    /// value: every tallyd counter starts at zero when its subsystem starts.
    pub fn read(&mut self, families: &[Family]) -> Vec<SelfSeries> {
        let mut out = Vec::new();
        for f in families {
            for s in &f.samples {
                match (&s.value, f.kind) {
                    (Value::Number(value), Kind::Counter) => {
                        let value = *value;
                        let room = self.previous.len() < MAX_SELF_SERIES;
                        let key = (f.name, s.labels.clone());
                        let prev = match self.previous.get_mut(&key) {
                            Some(p) => std::mem::replace(p, value),
                            None if room => {
                                self.previous.insert(key, value);
                                0.0
                            }
                            None => {
                                self.dropped += 1;
                                continue;
                            }
                        };
                        // A counter that went down was reset (its subsystem restarted).
                        let inc = if value >= prev { value - prev } else { value };
                        out.push(SelfSeries {
                            name: f.name.to_string(),
                            tags: tags(&s.labels, None),
                            counter: true,
                            value: inc,
                        });
                    }
                    (Value::Number(value), _) => out.push(SelfSeries {
                        name: f.name.to_string(),
                        tags: tags(&s.labels, None),
                        counter: false,
                        value: *value,
                    }),
                    (Value::Histogram(h), _) => {
                        let gauge = |suffix: &str, tags: Vec<String>, value: f64| SelfSeries {
                            name: format!("{}{suffix}", f.name),
                            tags,
                            counter: false,
                            value,
                        };
                        for (le, n) in &h.buckets {
                            let le = le.to_string();
                            out.push(gauge("_bucket", tags(&s.labels, Some(("le", &le))), *n));
                        }
                        let inf = tags(&s.labels, Some(("le", "+Inf")));
                        out.push(gauge("_bucket", inf, h.count));
                        out.push(gauge("_sum", tags(&s.labels, None), h.sum));
                        out.push(gauge("_count", tags(&s.labels, None), h.count));
                    }
                }
            }
        }
        out
    }
}

/// Everything rules can see in one window.
pub struct Window<'a> {
    /// The flushed window.
    pub flush: &'a Flush,
    /// tallyd's own metrics at the end of the window.
    pub own: &'a [SelfSeries],
    /// Window length in seconds (for `rate`).
    pub secs: f64,
}

impl<'a> Window<'a> {
    /// Calls `f(tags, point)` for every series the selector matches.
    pub fn for_each(
        &self,
        sel: &Selector,
        mut f: impl FnMut(&mut dyn Iterator<Item = &str>, Point<'a>),
    ) {
        if sel.is_self_metric() {
            let want = sel.metric.strip_suffix("_total").unwrap_or(&sel.metric);
            for s in self
                .own
                .iter()
                .filter(|s| s.name == want || (!s.counter && s.name == sel.metric))
            {
                if sel.matches_tags(|| s.tags.iter().map(String::as_str)) {
                    let p = if s.counter {
                        Point::Counter(s.value)
                    } else {
                        Point::Gauge(s.value)
                    };
                    f(&mut s.tags.iter().map(String::as_str), p);
                }
            }
            return;
        }
        for s in self
            .flush
            .series
            .iter()
            .filter(|s| s.ctx.name() == sel.metric)
        {
            if !sel.matches_tags(|| s.ctx.tags()) {
                continue;
            }
            let p = match &s.value {
                SeriesValue::Counter(v) => Point::Counter(*v),
                SeriesValue::Gauge(v) => Point::Gauge(*v),
                SeriesValue::Set(n) => Point::Set(*n),
                SeriesValue::Samples(h) => Point::Samples(h),
            };
            f(&mut s.ctx.tags(), p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::base::metrics::{Families, Histogram};

    fn snapshot(x: f64) -> Vec<Family> {
        let mut f = Families::new();
        f.counter("tallyd_x", "X.")
            .sample(&[("reason", "a b"), ("k", "q\"z")], x);
        f.gauge("tallyd_g", "G.").value(3.5);
        f.into_vec()
    }

    #[test]
    fn self_counters_become_increases() {
        let mut m = SelfMetrics::default();
        let first = m.read(&snapshot(5.0));
        assert_eq!(
            first[0],
            SelfSeries {
                name: "tallyd_x".into(),
                tags: vec!["k:q\"z".into(), "reason:a b".into()],
                counter: true,
                value: 5.0
            }
        );
        assert_eq!(
            first[1],
            SelfSeries {
                name: "tallyd_g".into(),
                tags: vec![],
                counter: false,
                value: 3.5
            }
        );
        let second = m.read(&snapshot(12.0));
        assert_eq!(second[0].value, 7.0);
        let reset = m.read(&snapshot(2.0));
        assert_eq!(reset[0].value, 2.0);
    }

    #[test]
    fn histogram_samples_read_as_gauges_named_like_their_lines() {
        let mut f = Families::new();
        f.histogram("tallyd_d_seconds", "D.").histogram(
            &[("queue", "dd")],
            Histogram {
                buckets: vec![(0.5, 1.0)],
                count: 2.0,
                sum: 1.5,
            },
        );
        let got: Vec<(String, Vec<String>, f64)> = SelfMetrics::default()
            .read(&f.into_vec())
            .into_iter()
            .inspect(|s| assert!(!s.counter))
            .map(|s| (s.name, s.tags, s.value))
            .collect();
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (
                    "tallyd_d_seconds_bucket".into(),
                    t(&["le:0.5", "queue:dd"]),
                    1.0
                ),
                (
                    "tallyd_d_seconds_bucket".into(),
                    t(&["le:+Inf", "queue:dd"]),
                    2.0
                ),
                ("tallyd_d_seconds_sum".into(), t(&["queue:dd"]), 1.5),
                ("tallyd_d_seconds_count".into(), t(&["queue:dd"]), 2.0),
            ]
        );
    }
}
