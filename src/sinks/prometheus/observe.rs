//! Folding a window's samples into an exposed summary or classic histogram, scaled.

use std::sync::Arc;

use crate::aggregate::{Quantiles, Samples};

/// An exposed summary: the quantiles of the last window that had samples, cumulative `_sum`
/// and `_count`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Summary {
    /// Inline for up to four percentiles: a new summary series is one allocation.
    pub(super) quantiles: Quantiles,
    /// The quantiles' ranks; `None`: the window's `aggregate.percentiles`.
    pub(super) qs: Option<Arc<[f64]>>,
    pub(super) sum: f64,
    pub(super) count: u64,
}

/// An exposed classic histogram: cumulative counts per bucket.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Hist {
    /// Upper bounds, sorted, without `+Inf`.
    pub(super) bounds: Arc<[f64]>,
    /// Samples per bucket (not cumulative), one more than `bounds` (the `+Inf` bucket).
    pub(super) counts: Box<[u64]>,
    pub(super) sum: f64,
    pub(super) count: u64,
}

impl Hist {
    pub(super) fn new(bounds: Arc<[f64]>) -> Hist {
        let n = bounds.len() + 1;
        Hist {
            bounds,
            counts: vec![0; n].into_boxed_slice(),
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds a window's samples, each divided by `div`, then multiplied by `scale`. Values come from
    /// [`Samples::for_each_bin`]: exact while the window's samples are raw, HDR bucket
    /// representatives (about 1 % off) once a busy context's samples were compacted.
    pub(super) fn add(&mut self, s: &Samples, div: f64, scale: f64) {
        let sum = s.sum() / div * scale;
        if !(self.sum + sum).is_finite() {
            return;
        }
        let (bounds, counts) = (&self.bounds, &mut self.counts);
        s.for_each_bin(|v, w| {
            let i = bounds.partition_point(|b| *b < v / div * scale);
            counts[i] += w;
        });
        self.sum += sum;
        self.count += s.count();
    }
}

impl Summary {
    /// Takes a window's samples: its quantiles (the flush's, or `qs` computed here), divided
    /// by `div` and multiplied by `scale`, and adds its sum and count.
    pub(super) fn add(&mut self, s: &Samples, div: f64, scale: f64, scratch: &mut Vec<(f64, u64)>) {
        self.quantiles.clear();
        match &self.qs {
            None => self
                .quantiles
                .extend(s.quantiles().iter().map(|q| q / div * scale)),
            Some(qs) => {
                scratch.clear();
                s.for_each_bin(|v, w| scratch.push((v, w)));
                scratch.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
                let count: u64 = scratch.iter().map(|p| p.1).sum();
                for &q in qs.iter() {
                    let rank = ((q * count as f64).ceil() as u64).clamp(1, count.max(1));
                    let mut seen = 0;
                    let mut val = f64::NAN;
                    for &(v, w) in scratch.iter() {
                        seen += w;
                        if seen >= rank {
                            val = v;
                            break;
                        }
                    }
                    self.quantiles.push(val / div * scale);
                }
            }
        }
        let sum = s.sum() / div * scale;
        if (self.sum + sum).is_finite() {
            self.sum += sum;
            self.count += s.count();
        } else if sum.is_finite() {
            // Starts again from this window, sum and count together (a reset).
            self.sum = sum;
            self.count = s.count();
        }
    }
}
