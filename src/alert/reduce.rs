//! Reduces one group's series in one window to a single value, per aggregation and metric
//! kind (the table in docs/alerting.md).

use crate::aggregate::Samples;

use super::config::Direction;
use super::input::Point;
use super::rules::Aggregation;

/// A window's values of one group, before aggregation.
#[derive(Default)]
pub struct Acc {
    total: f64,
    count: f64,
    series: usize,
    /// How many of the added series are gauges.
    pub gauges: usize,
    sampled: bool,
    values: Samples,
}

impl Acc {
    /// Adds one series' window value.
    pub fn add(&mut self, p: Point<'_>) {
        self.series += 1;
        match p {
            Point::Counter(v) => {
                self.total += v;
                self.count += v;
                self.values.add(v, 1);
            }
            Point::Gauge(v) => {
                self.gauges += 1;
                self.total += v;
                self.count += 1.0;
                self.values.add(v, 1);
            }
            Point::Set(n) => {
                self.total += n as f64;
                self.count += n as f64;
                self.values.add(n as f64, 1);
            }
            Point::Samples(s) => {
                self.sampled = true;
                self.total += s.sum();
                self.count += s.count() as f64;
                self.values.merge(s.clone());
            }
        }
    }

    /// The aggregated value; `prev` is the group's previous `last` (for a gauge's rate).
    pub fn value(
        &mut self,
        agg: Aggregation,
        dir: Direction,
        secs: f64,
        prev: Option<(f64, u64)>,
        now: u64,
    ) -> Option<f64> {
        if self.series == 0 {
            return None;
        }
        let v = match agg {
            Aggregation::Sum => self.total,
            Aggregation::Count => self.count,
            Aggregation::Min => self.values.min(),
            Aggregation::Max => self.values.max(),
            Aggregation::Avg => self.values.avg(),
            Aggregation::Quantile(q) => self.values.quantile(q),
            Aggregation::Last => self.last(dir),
            Aggregation::Rate if self.gauges > 0 => {
                let (p, at) = prev?;
                let dt = now.saturating_sub(at) as f64 / 1000.0;
                if dt <= 0.0 {
                    return None;
                }
                (self.last(dir) - p) / dt
            }
            Aggregation::Rate => self.count / secs.max(1e-3),
        };
        Some(v)
    }

    /// Gauges: the worst series (highest for `above`, lowest for `below`); timers: the mean;
    /// counters and sets: the window total.
    pub fn last(&self, dir: Direction) -> f64 {
        if self.gauges > 0 {
            match dir {
                Direction::Above => self.values.max(),
                Direction::Below => self.values.min(),
            }
        } else if self.sampled {
            self.values.avg()
        } else {
            self.total
        }
    }
}
