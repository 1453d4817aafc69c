//! Per-stream memory that turns cumulative OTLP points into per-window deltas.
//!
//! A stream is one metric + its point attributes + its resource and scope, identified by a
//! 64-bit hash (the same trade the Datadog Agent makes for its context keys). For each stream the
//! last total is kept; the next point yields the difference. A reset, seen as a total that went
//! down or a start time that moved forward, yields the new total in full (it counts from the
//! reset). A point older than the last one seen (out of order, or from a previous incarnation)
//! is ignored. The map is bounded by `otlp.max_streams` (new streams beyond it are refused) and
//! streams idle for `otlp.stream_expiry` are forgotten. Time is passed in, never read here.

use std::collections::HashMap;
use std::time::Duration;

use super::stats::Reject;
use crate::otlp::config::InitialCumulative;

/// What a cumulative point turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<T> {
    /// The increase since the previous point (or the whole total after a reset or for a first
    /// point counted in full).
    Delta(T),
    /// First point used only as the baseline for later ones.
    Baseline,
    /// Older than what the stream has already seen; ignored.
    Stale,
}

/// Buckets of an exponential histogram at one scale: `counts[i]` covers index `offset + i`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpBuckets {
    /// The bucket index of `counts[0]`.
    pub offset: i32,
    /// Count per bucket, from index `offset` up.
    pub counts: Vec<u64>,
}

/// An exponential histogram point in owned form (cumulative totals or a delta).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpData {
    /// The OTLP scale: bucket boundaries are powers of `2^(2^-scale)`.
    pub scale: i32,
    /// Number of values.
    pub count: u64,
    /// Sum of the values; `None` when the point has none.
    pub sum: Option<f64>,
    /// Values in the zero bucket.
    pub zero: u64,
    /// Buckets of the positive values.
    pub pos: ExpBuckets,
    /// Buckets of the negative values (by magnitude).
    pub neg: ExpBuckets,
    /// Smallest value, when the point has it.
    pub min: Option<f64>,
    /// Largest value, when the point has it.
    pub max: Option<f64>,
}

/// An explicit-bucket histogram point in owned form (cumulative totals or a delta).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistData {
    /// Number of values.
    pub count: u64,
    /// Sum of the values; `None` when the point has none.
    pub sum: Option<f64>,
    /// Count per bucket, one more than the explicit bounds.
    pub buckets: Vec<u64>,
    /// Smallest value, when the point has it.
    pub min: Option<f64>,
    /// Largest value, when the point has it.
    pub max: Option<f64>,
}

#[derive(Debug)]
enum Prev {
    Number(f64),
    Running(f64),
    /// `layout` is a hash of the explicit bounds; a change is treated as a new baseline.
    Hist {
        layout: u64,
        data: HistData,
    },
    Exp(ExpData),
}

#[derive(Debug)]
struct Stream {
    start: u64,
    time: u64,
    seen: Duration,
    prev: Prev,
}

/// Where a known stream stands relative to a new point.
enum Order {
    Stale,
    /// The start time moved forward: the stream restarted.
    Restarted,
    Next,
}

/// The bounded stream table.
pub struct Streams {
    map: HashMap<u64, Stream>,
    max: usize,
    expiry: Duration,
    initial: InitialCumulative,
    /// Unix nanoseconds at which tallyd started; `auto` compares start times against it.
    started_unix_nanos: u64,
    last_sweep: Duration,
    /// Longest aligned exponential bucket span kept while subtracting.
    max_span: usize,
    /// Streams forgotten and resets seen since the last [`Streams::take_counts`].
    expired: u64,
    resets: u64,
}

impl Streams {
    /// An empty table of at most `max` streams forgetting them after `expiry` idle;
    /// `initial` is `otlp.initial_cumulative_value`, `started_unix_nanos` tallyd's start, and
    /// `max_buckets` `otlp.max_buckets_per_point`.
    pub fn new(
        max: usize,
        expiry: Duration,
        initial: InitialCumulative,
        started_unix_nanos: u64,
        max_buckets: usize,
    ) -> Streams {
        Streams {
            map: HashMap::new(),
            max,
            expiry,
            initial,
            started_unix_nanos,
            last_sweep: Duration::ZERO,
            max_span: max_buckets.saturating_mul(2),
            expired: 0,
            resets: 0,
        }
    }

    /// Streams remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no stream is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// (streams expired, resets seen) since the last call.
    pub fn take_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.expired),
            std::mem::take(&mut self.resets),
        )
    }

    /// Forgets idle streams, at most every quarter of the expiry (or at once when full).
    fn sweep(&mut self, now: Duration) {
        let due = now.saturating_sub(self.last_sweep) >= self.expiry / 4;
        if !due && self.map.len() < self.max {
            return;
        }
        self.last_sweep = now;
        let before = self.map.len();
        let expiry = self.expiry;
        self.map.retain(|_, s| now.saturating_sub(s.seen) < expiry);
        self.expired += (before - self.map.len()) as u64;
    }

    fn counts_first(&self, start: u64) -> bool {
        match self.initial {
            InitialCumulative::Keep => true,
            InitialCumulative::Drop => false,
            InitialCumulative::Auto => start != 0 && start >= self.started_unix_nanos,
        }
    }

    /// Inserts a new stream, or refuses it at the limit.
    fn insert(
        &mut self,
        key: u64,
        start: u64,
        time: u64,
        now: Duration,
        prev: Prev,
    ) -> Result<(), Reject> {
        self.sweep(now);
        if self.map.len() >= self.max {
            return Err(Reject::StreamLimit);
        }
        self.map.insert(
            key,
            Stream {
                start,
                time,
                seen: now,
                prev,
            },
        );
        Ok(())
    }

    /// Orders a point against its known stream and records its times.
    fn order(s: &mut Stream, start: u64, time: u64, now: Duration) -> Order {
        s.seen = now;
        if (start != 0 && start < s.start) || (start == s.start && time < s.time) {
            return Order::Stale;
        }
        let restarted = start != 0 && start > s.start;
        s.start = start;
        s.time = time;
        if restarted {
            Order::Restarted
        } else {
            Order::Next
        }
    }

    /// A cumulative monotonic sum (or a summary's count or sum).
    pub fn number(
        &mut self,
        key: u64,
        start: u64,
        time: u64,
        value: f64,
        now: Duration,
    ) -> Result<Step<f64>, Reject> {
        let Some(s) = self.map.get_mut(&key) else {
            self.insert(key, start, time, now, Prev::Number(value))?;
            return Ok(if self.counts_first(start) {
                Step::Delta(value)
            } else {
                Step::Baseline
            });
        };
        let order = Self::order(s, start, time, now);
        let prev = match s.prev {
            Prev::Number(p) => p,
            _ => f64::NAN,
        };
        match order {
            Order::Stale => Ok(Step::Stale),
            Order::Restarted => {
                s.prev = Prev::Number(value);
                self.resets += 1;
                Ok(Step::Delta(value))
            }
            Order::Next if prev.is_nan() || value < prev => {
                s.prev = Prev::Number(value);
                self.resets += 1;
                Ok(Step::Delta(value))
            }
            Order::Next => {
                s.prev = Prev::Number(value);
                Ok(Step::Delta(value - prev))
            }
        }
    }

    /// A delta non-monotonic sum (an up-down counter sending changes): returns the running total
    /// since tallyd first saw the stream.
    pub fn running(&mut self, key: u64, delta: f64, now: Duration) -> Result<f64, Reject> {
        if let Some(s) = self.map.get_mut(&key) {
            s.seen = now;
            if let Prev::Running(total) = &mut s.prev {
                *total += delta;
                return Ok(*total);
            }
            s.prev = Prev::Running(delta);
            return Ok(delta);
        }
        self.insert(key, 0, 0, now, Prev::Running(delta))?;
        Ok(delta)
    }

    /// A cumulative explicit-bucket histogram; `layout` identifies its bucket bounds.
    pub fn histogram(
        &mut self,
        key: u64,
        start: u64,
        time: u64,
        layout: u64,
        cur: HistData,
        now: Duration,
    ) -> Result<Step<HistData>, Reject> {
        let Some(s) = self.map.get_mut(&key) else {
            let first = self.counts_first(start);
            let out = if first {
                Step::Delta(cur.clone())
            } else {
                Step::Baseline
            };
            self.insert(key, start, time, now, Prev::Hist { layout, data: cur })?;
            return Ok(out);
        };
        let order = Self::order(s, start, time, now);
        if matches!(order, Order::Stale) {
            return Ok(Step::Stale);
        }
        let delta = match (&s.prev, &order) {
            (Prev::Hist { layout: l, data: p }, Order::Next) if *l == layout => hist_delta(&cur, p),
            _ => None,
        };
        let same_layout = matches!(&s.prev, Prev::Hist { layout: l, .. } if *l == layout);
        let out = match delta {
            Some(d) => Step::Delta(d),
            // Totals went down or the stream restarted: everything since the reset counts.
            None if same_layout => {
                self.resets += 1;
                Step::Delta(cur.clone())
            }
            // New bucket bounds: the totals cannot be compared, start over from here.
            None => {
                self.resets += 1;
                Step::Baseline
            }
        };
        s.prev = Prev::Hist { layout, data: cur };
        Ok(out)
    }

    /// A cumulative exponential histogram.
    pub fn exponential(
        &mut self,
        key: u64,
        start: u64,
        time: u64,
        cur: ExpData,
        now: Duration,
    ) -> Result<Step<ExpData>, Reject> {
        let Some(s) = self.map.get_mut(&key) else {
            let out = if self.counts_first(start) {
                Step::Delta(cur.clone())
            } else {
                Step::Baseline
            };
            self.insert(key, start, time, now, Prev::Exp(cur))?;
            return Ok(out);
        };
        let order = Self::order(s, start, time, now);
        if matches!(order, Order::Stale) {
            return Ok(Step::Stale);
        }
        let delta = match (&s.prev, &order) {
            (Prev::Exp(p), Order::Next) => exp_delta(&cur, p, self.max_span),
            _ => None,
        };
        let out = match delta {
            Some(d) => Step::Delta(d),
            None => {
                self.resets += 1;
                Step::Delta(cur.clone())
            }
        };
        s.prev = Prev::Exp(cur);
        Ok(out)
    }
}

/// `cur - prev` for explicit buckets with the same bounds; None when anything went down.
fn hist_delta(cur: &HistData, prev: &HistData) -> Option<HistData> {
    if cur.buckets.len() != prev.buckets.len() || cur.count < prev.count {
        return None;
    }
    let mut buckets = Vec::with_capacity(cur.buckets.len());
    for (c, p) in cur.buckets.iter().zip(&prev.buckets) {
        buckets.push(c.checked_sub(*p)?);
    }
    Some(HistData {
        count: cur.count - prev.count,
        sum: match (cur.sum, prev.sum) {
            (Some(c), Some(p)) => Some(c - p),
            _ => None,
        },
        buckets,
        // Lifetime extremes say nothing about one window.
        min: None,
        max: None,
    })
}

/// Re-buckets `b` from scale `s` to scale `s - by` (each step merges pairs of buckets).
pub fn downscale(b: &ExpBuckets, by: u32) -> ExpBuckets {
    if by == 0 || b.counts.is_empty() {
        return b.clone();
    }
    let by = by.min(63);
    let first = i64::from(b.offset) >> by;
    let last = (i64::from(b.offset) + b.counts.len() as i64 - 1) >> by;
    let mut counts = vec![0u64; (last - first + 1) as usize];
    for (i, c) in b.counts.iter().enumerate() {
        let idx = ((i64::from(b.offset) + i as i64) >> by) - first;
        counts[idx as usize] = counts[idx as usize].saturating_add(*c);
    }
    ExpBuckets {
        offset: first as i32,
        counts,
    }
}

/// `a - b` at one scale, aligned by index; None when a count went down or the aligned span
/// would exceed `max_span`.
fn sub_buckets(a: &ExpBuckets, b: &ExpBuckets, max_span: usize) -> Option<ExpBuckets> {
    if b.counts.is_empty() {
        return Some(a.clone());
    }
    if a.counts.is_empty() {
        return b.counts.iter().all(|c| *c == 0).then(ExpBuckets::default);
    }
    let lo = i64::from(a.offset.min(b.offset));
    let hi = (i64::from(a.offset) + a.counts.len() as i64)
        .max(i64::from(b.offset) + b.counts.len() as i64);
    if (hi - lo) as usize > max_span {
        return None;
    }
    let at = |x: &ExpBuckets, idx: i64| -> u64 {
        let i = idx - i64::from(x.offset);
        if i >= 0 && (i as usize) < x.counts.len() {
            x.counts[i as usize]
        } else {
            0
        }
    };
    let mut counts = Vec::with_capacity((hi - lo) as usize);
    for idx in lo..hi {
        counts.push(at(a, idx).checked_sub(at(b, idx))?);
    }
    Some(ExpBuckets {
        offset: lo as i32,
        counts,
    })
}

/// `cur - prev` for exponential histograms, at the coarser of the two scales.
fn exp_delta(cur: &ExpData, prev: &ExpData, max_span: usize) -> Option<ExpData> {
    if cur.count < prev.count || cur.zero < prev.zero {
        return None;
    }
    let scale = cur.scale.min(prev.scale);
    let dc = cur.scale.abs_diff(scale);
    let dp = prev.scale.abs_diff(scale);
    let pos = sub_buckets(
        &downscale(&cur.pos, dc),
        &downscale(&prev.pos, dp),
        max_span,
    )?;
    let neg = sub_buckets(
        &downscale(&cur.neg, dc),
        &downscale(&prev.neg, dp),
        max_span,
    )?;
    Some(ExpData {
        scale,
        count: cur.count - prev.count,
        sum: match (cur.sum, prev.sum) {
            (Some(c), Some(p)) => Some(c - p),
            _ => None,
        },
        zero: cur.zero - prev.zero,
        pos,
        neg,
        min: None,
        max: None,
    })
}

#[cfg(test)]
#[path = "cumulative_tests.rs"]
mod tests;
