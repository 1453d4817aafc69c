//! What rules read in one window: the flushed series, plus tallyd's own `tallyd_*` metrics read
//! back from their exposition text (so families other subsystems register later are usable
//! without any change here).
//!
//! Self counters are cumulative on `/metrics`; here they become the window's increase, like a
//! StatsD counter, so `sum`/`rate` mean the same for both.

use std::collections::HashMap;

use crate::aggregate::{Flush, Samples, SeriesValue};

use super::rules::Selector;

/// One series' contribution to a window.
pub enum Point<'a> {
    Counter(f64),
    Gauge(f64),
    Set(u64),
    Samples(&'a Samples),
}

/// A `tallyd_*` sample read from the exposition text.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfSeries {
    /// The family name (`_total` removed for counters).
    pub name: String,
    /// Labels as `k:v` tags, sorted.
    pub tags: Vec<String>,
    pub counter: bool,
    /// Gauges: the value; counters: the increase since the previous read.
    pub value: f64,
}

/// Counter values remembered between reads; more distinct series than this are not tracked
/// (counted in `tallyd_alert_self_series_dropped_total`).
pub const MAX_SELF_SERIES: usize = 10_000;

/// Turns successive renderings of tallyd's own metrics into per-window values.
#[derive(Default)]
pub struct SelfMetrics {
    previous: HashMap<String, f64>,
    pub dropped: u64,
}

impl SelfMetrics {
    /// Parses the text exposition format. A counter seen for the first time contributes its
    /// whole value: every tallyd counter starts at zero when its subsystem starts.
    pub fn read(&mut self, text: &str) -> Vec<SelfSeries> {
        let mut counters: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                if let (Some(name), Some("counter")) = (it.next(), it.next()) {
                    counters.push(name);
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.strip_suffix('}').unwrap_or(l)),
                None => (series, ""),
            };
            let counter = counters.contains(&name);
            let mut tags = parse_labels(labels);
            tags.sort();
            let (family, value) = if counter {
                let room = self.previous.len() < MAX_SELF_SERIES;
                let prev = match self.previous.get_mut(series) {
                    Some(p) => std::mem::replace(p, value),
                    None if room => {
                        self.previous.insert(series.to_string(), value);
                        0.0
                    }
                    None => {
                        self.dropped += 1;
                        continue;
                    }
                };
                // A counter that went down was reset (its subsystem restarted).
                let inc = if value >= prev { value - prev } else { value };
                (name.strip_suffix("_total").unwrap_or(name), inc)
            } else {
                (name, value)
            };
            out.push(SelfSeries {
                name: family.to_string(),
                tags,
                counter,
                value,
            });
        }
        out
    }
}

/// `a="b",c="d\"e"` into `["a:b", "c:d\"e"]`.
fn parse_labels(s: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').trim();
        let mut val = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => val.push('\n'),
                    Some((_, c)) => val.push(c),
                    None => {}
                },
                '"' => {
                    end = eq + 2 + i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        tags.push(format!("{key}:{val}"));
        rest = &rest[end.min(rest.len())..];
    }
    tags
}

/// Everything rules can see in one window.
pub struct Window<'a> {
    pub flush: &'a Flush,
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

    #[test]
    fn self_counters_become_increases() {
        let mut m = SelfMetrics::default();
        let text = "# HELP tallyd_x_total X.\n# TYPE tallyd_x_total counter\ntallyd_x_total{reason=\"a b\",k=\"q\\\"z\"} 5\n# TYPE tallyd_g gauge\ntallyd_g 3.5\n";
        let first = m.read(text);
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
        let second = m.read(&text.replace("} 5", "} 12"));
        assert_eq!(second[0].value, 7.0);
        let reset = m.read(&text.replace("} 5", "} 2"));
        assert_eq!(reset[0].value, 2.0);
    }
}
