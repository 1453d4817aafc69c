//! The keyed (DDSketch) form of [`Samples`], for distributions: staging, merging, reading the
//! keys, and pre-aggregated ranges interpolated into the bins.

use super::ddsketch::{self, KeyBins};
use super::{Samples, RAW_LIMIT};

impl Samples {
    /// Keys the staged values into the bins (creating them the first time) and empties the
    /// staging buffer, keeping its allocation.
    pub(super) fn spill_keys(&mut self) {
        let bins = self.keys.get_or_insert_with(Box::default);
        let mut batch: Vec<(i16, u64)> = Vec::with_capacity(self.raw.len());
        if self.weights.is_empty() {
            batch.extend(self.raw.iter().map(|&v| (ddsketch::key(v), 1)));
        } else {
            batch.extend(
                self.raw
                    .iter()
                    .zip(&self.weights)
                    .map(|(&v, &w)| (ddsketch::key(v), u64::from(w))),
            );
        }
        bins.insert(&mut batch);
        self.raw.clear();
        self.weights.clear();
    }

    /// The merge of [`Samples::merge`] when either side is keyed; moments are already added.
    pub(super) fn merge_keyed(&mut self, mut other: Samples) {
        if !self.keyed {
            // A sampled store merged with a distribution's (kinds agree, so only in tests or
            // hand-built values): its HDR representatives are keyed as they are.
            self.make_keyed();
        }
        if !other.keyed {
            other.make_keyed();
        }
        if self.keys.is_none()
            && other.keys.is_none()
            && self.raw.len() + other.raw.len() <= RAW_LIMIT
        {
            for (v, w) in other.raw_pairs() {
                self.push_raw(v, w);
            }
            return;
        }
        self.spill_keys();
        other.spill_keys();
        if let (Some(mine), Some(theirs)) = (self.keys.as_deref_mut(), other.keys.as_deref()) {
            mine.merge(theirs);
        }
    }

    /// Turns a non-keyed store into a keyed one (HDR representatives keyed as they are).
    fn make_keyed(&mut self) {
        self.keyed = true;
        if let Some(h) = self.hdr.take() {
            let mut batch = Vec::new();
            let tmp = Samples {
                hdr: Some(h),
                ..Samples::default()
            };
            tmp.for_each_bin(|v, n| batch.push((ddsketch::key(v), n)));
            self.keys
                .get_or_insert_with(Box::default)
                .insert(&mut batch);
        }
    }

    /// Each bin of the Agent's DDSketch with its count: the keyed bins, then the staged (or
    /// still raw) values keyed one by one. Not sorted, and a key may repeat. For a store that
    /// is not keyed, the values [`Samples::for_each_bin`] gives are keyed.
    pub fn for_each_key(&self, mut f: impl FnMut(i16, u64)) {
        if let Some(k) = self.keys.as_deref() {
            for b in k.bins() {
                f(b.k, b.n);
            }
            for (v, w) in self.raw_pairs() {
                f(ddsketch::key(v), u64::from(w));
            }
            return;
        }
        self.for_each_bin(|v, n| f(ddsketch::key(v), n));
    }

    /// Adds pre-aggregated ranges to a keyed store: each (lo, hi, count) is a histogram
    /// bucket whose count is interpolated across the bins its range covers
    /// ([`ddsketch::interpolate`]). Moments as in [`Samples::add_bins`]: exact when given,
    /// derived from the ranges' midpoints otherwise; ranges are clamped to [min, max].
    /// Ranges with a non-finite bound or a zero count are skipped. Returns the count added.
    pub fn add_ranges(
        &mut self,
        ranges: &[(f64, f64, u64)],
        sum: Option<f64>,
        min: Option<f64>,
        max: Option<f64>,
    ) -> u64 {
        let live = || {
            ranges
                .iter()
                .filter(|(l, h, c)| *c > 0 && l.is_finite() && h.is_finite())
        };
        let total = live().fold(0u64, |a, r| a.saturating_add(r.2));
        if total == 0 {
            return 0;
        }
        let lo = live().map(|r| r.0.min(r.1)).fold(f64::INFINITY, f64::min);
        let hi = live()
            .map(|r| r.0.max(r.1))
            .fold(f64::NEG_INFINITY, f64::max);
        let (mut pmin, mut pmax) = (
            min.filter(|m| m.is_finite()).unwrap_or(lo),
            max.filter(|m| m.is_finite()).unwrap_or(hi),
        );
        if pmin > pmax {
            (pmin, pmax) = (lo, hi);
        }
        let clamp = |v: f64| v.clamp(pmin, pmax);
        let derived: f64 = live()
            .map(|r| (clamp(r.0) + clamp(r.1)) / 2.0 * r.2 as f64)
            .sum();
        let psum = sum.filter(|s| s.is_finite()).unwrap_or(derived);
        self.keyed = true;
        let mut batch = Vec::new();
        for &(l, h, c) in live() {
            ddsketch::interpolate(clamp(l), clamp(h), c, &mut batch);
        }
        if self.keys.is_none() && self.hdr.is_some() {
            self.make_keyed();
        }
        self.keys
            .get_or_insert_with(Box::<KeyBins>::default)
            .insert(&mut batch);
        if self.count == 0 {
            self.min = pmin;
            self.max = pmax;
        } else {
            self.min = self.min.min(pmin);
            self.max = self.max.max(pmax);
        }
        self.count = self.count.saturating_add(total);
        self.sum += psum;
        total
    }
}
