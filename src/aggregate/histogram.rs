//! Per-window sample store for timers, histograms and distributions.
//!
//! Most contexts see a handful of samples per window, so samples are first kept raw (exact
//! percentiles, 8 bytes each, at most [`RAW_LIMIT`]). Past that they move into HDR histograms,
//! whose memory depends on the value range and not on the sample count.
//!
//! A busy context does not record each sample into its histogram as it arrives: the raw vector
//! stays on as a staging buffer and is recorded in bulk each time it fills (and before reading
//! percentiles). An HDR histogram is a few KiB of counts hit at value-dependent positions;
//! recording one sample at a time, between other contexts' lines, missed the cache on almost
//! every sample (the largest single cost of the ingest path in a profile). Appending to the
//! staging vector touches one cache line, and a bulk record runs while the histogram is hot.
//!
//! What stays exact and what is bounded:
//! - `count`, `sum`, `min` and `max` are always exact (f64 sums of the values as sent).
//! - Percentiles are exact while samples are raw. In HDR form, `|value|` is recorded in
//!   thousandths (so 0.0004 reads back as 0) with two significant digits (about 1 % relative
//!   error), negative values in a second histogram, and the result is clamped to [min, max].
//! - A `|value|` above [`MAX_TRACKABLE`] is recorded at that bound (its percentile rank still
//!   counts) and reported by [`Samples::clamped`]; nothing is dropped.

use hdrhistogram::Histogram;
use smallvec::SmallVec;

/// Quantiles of one summary, one per configured percentile: inline up to four (the default
/// configuration has three), so a summary costs no allocation of its own for them.
pub type Quantiles = SmallVec<[f64; 4]>;

/// Raw samples kept before switching to HDR histograms, and the size of the staging buffer
/// after the switch. 256 values are 2 KiB: small next to a histogram, and enough that a bulk
/// record reuses the histogram's hot cache lines many times.
pub const RAW_LIMIT: usize = 256;
/// Values are recorded in units of 1/SCALE.
const SCALE: f64 = 1000.0;
/// Largest `|value|` an HDR histogram tracks exactly enough (1e15 in value units).
pub const MAX_TRACKABLE: f64 = 1.0e15;
const SIGFIG: u8 = 2;

#[derive(Debug, Clone)]
struct Hdr {
    pos: Histogram<u64>,
    neg: Option<Histogram<u64>>,
}

/// Samples of one context in one window.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Raw values; their weights are in `weights`. Once `hdr` exists, values not yet recorded
    /// into it.
    raw: Vec<f64>,
    /// Weights of `raw`, empty while every weight is 1 (the usual case): the raw store then
    /// costs 8 bytes per value instead of 16.
    weights: Vec<u32>,
    hdr: Option<Box<Hdr>>,
    clamped: u64,
    /// The window's quantiles, filled in at flush by [`Samples::summarize`]. They live here,
    /// beside the moments sinks read with them, rather than in a box of their own: one
    /// allocation and one cache miss less per summary and window.
    summary: Quantiles,
}

fn new_hdr() -> Histogram<u64> {
    // Auto-resizing histograms start small and grow with the largest value recorded.
    let mut h = Histogram::<u64>::new(SIGFIG).unwrap_or_else(|_| unreachable_hdr());
    h.auto(true);
    h
}

#[cold]
fn unreachable_hdr() -> Histogram<u64> {
    // SIGFIG is a valid constant (0..=5), so `new` cannot fail; keep a fallback anyway.
    Histogram::<u64>::new_with_bounds(1, 2, 1).expect("hdr fallback")
}

impl Samples {
    /// An empty store (no samples, raw form).
    pub fn new() -> Samples {
        Samples::default()
    }

    /// Adds `value` with `weight` (the inverse sample rate, at least 1).
    pub fn add(&mut self, value: f64, weight: u32) {
        let w = weight.max(1);
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += u64::from(w);
        self.sum += value * f64::from(w);
        self.store(value, w);
    }

    /// Appends a raw value (the caller checked `RAW_LIMIT`).
    fn push_raw(&mut self, value: f64, w: u32) {
        if w != 1 && self.weights.is_empty() {
            self.weights.resize(self.raw.len(), 1);
        }
        self.raw.push(value);
        if !self.weights.is_empty() || w != 1 {
            self.weights.push(w);
        }
    }

    /// The raw values with their weights.
    fn raw_pairs(&self) -> impl Iterator<Item = (f64, u32)> + '_ {
        let weights = &self.weights;
        self.raw
            .iter()
            .enumerate()
            .map(move |(i, &v)| (v, weights.get(i).copied().unwrap_or(1)))
    }

    /// Records the raw values into the HDR histograms (creating them the first time) and empties
    /// the raw store, keeping its allocation for the next values.
    fn spill(&mut self) {
        let h = self.hdr.get_or_insert_with(|| {
            Box::new(Hdr {
                pos: new_hdr(),
                neg: None,
            })
        });
        let mut clamped = 0;
        if self.weights.is_empty() {
            for &v in &self.raw {
                clamped += record(h, v, 1);
            }
        } else {
            for (&v, &w) in self.raw.iter().zip(&self.weights) {
                clamped += record(h, v, w);
            }
        }
        self.clamped += clamped;
        self.raw.clear();
        self.weights.clear();
    }

    /// Moves staged values into the histograms, so that [`Samples::clamped`] and the HDR form
    /// are complete. Does nothing while the samples are raw.
    pub fn settle(&mut self) {
        if self.hdr.is_some() && !self.raw.is_empty() {
            self.spill();
        }
    }

    /// Folds `other` (same context, another shard) into `self`.
    pub fn merge(&mut self, mut other: Samples) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other;
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if self.hdr.is_none()
            && other.hdr.is_none()
            && self.raw.len() + other.raw.len() <= RAW_LIMIT
        {
            self.clamped += other.clamped;
            if self.weights.is_empty() && other.weights.is_empty() {
                self.raw.append(&mut other.raw);
            } else {
                for (v, w) in other.raw_pairs() {
                    self.push_raw(v, w);
                }
            }
            return;
        }
        self.spill();
        other.spill();
        let Some(mine) = self.hdr.as_deref_mut() else {
            return;
        };
        self.clamped += other.clamped;
        if let Some(theirs) = other.hdr {
            // Both histograms auto-resize, so adding cannot fail for range reasons.
            let _ = mine.pos.add(&theirs.pos);
            if let Some(tn) = theirs.neg {
                let n = mine.neg.get_or_insert_with(new_hdr);
                let _ = n.add(&tn);
            }
        }
    }

    /// Weighted number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// Weighted sum of the values (each value times its weight).
    pub fn sum(&self) -> f64 {
        self.sum
    }
    /// Smallest value added (0 when there is none).
    pub fn min(&self) -> f64 {
        self.min
    }
    /// Largest value added (0 when there is none).
    pub fn max(&self) -> f64 {
        self.max
    }
    /// Weighted mean, `sum / count` (0 when there is no sample).
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
    /// Samples whose magnitude exceeded [`MAX_TRACKABLE`] and were recorded at the bound
    /// (complete after [`Samples::settle`]).
    pub fn clamped(&self) -> u64 {
        self.clamped
    }
    /// True once the samples moved to HDR form.
    pub fn is_compact(&self) -> bool {
        self.hdr.is_some()
    }

    /// The 1-based nearest rank of quantile `q` (count must be non-zero).
    fn rank(&self, q: f64) -> u64 {
        ((q * self.count as f64).ceil() as u64).clamp(1, self.count)
    }

    /// Computes the nearest-rank quantiles `qs`, each in (0, 1] (NaN with no samples), and
    /// keeps them for [`Samples::quantiles`]. Raw unit-weight samples (the usual case) are
    /// sorted once for all of them.
    pub fn summarize(&mut self, qs: &[f64]) {
        let mut summary = std::mem::take(&mut self.summary);
        summary.clear();
        if self.count > 0 && self.hdr.is_none() && self.weights.is_empty() {
            self.raw.sort_unstable_by(f64::total_cmp);
            summary.extend(qs.iter().map(|&q| {
                let rank = self.rank(q);
                self.raw.get(rank as usize - 1).copied().unwrap_or(self.max)
            }));
        } else {
            summary.extend(qs.iter().map(|&q| self.quantile(q)));
        }
        self.summary = summary;
    }

    /// Where the raw values are (0 when there are none), for the flush to prefetch.
    pub(crate) fn raw_addr(&self) -> usize {
        if self.raw.is_empty() {
            0
        } else {
            self.raw.as_ptr() as usize
        }
    }

    /// The quantiles the last [`Samples::summarize`] computed (in a flush: one per entry of
    /// `Flush::percentiles`); empty before any.
    pub fn quantiles(&self) -> &[f64] {
        &self.summary
    }

    /// The nearest-rank quantile `q` in (0, 1]; NaN with no samples.
    pub fn quantile(&mut self, q: f64) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        let rank = self.rank(q);
        self.settle();
        if let Some(h) = self.hdr.as_deref() {
            let n_neg = h.neg.as_ref().map_or(0, |n| n.len());
            let n_pos = h.pos.len();
            let v = if rank <= n_neg {
                let neg = h.neg.as_ref().map_or(0, |n| {
                    let r = n_neg - rank + 1;
                    n.median_equivalent(n.value_at_quantile(r as f64 / n_neg as f64))
                });
                -(neg as f64) / SCALE
            } else if n_pos > 0 {
                let r = rank - n_neg;
                h.pos
                    .median_equivalent(h.pos.value_at_quantile(r as f64 / n_pos as f64))
                    as f64
                    / SCALE
            } else {
                self.max
            };
            return v.clamp(self.min, self.max);
        }
        if self.weights.is_empty() {
            // Every weight is 1: the rank-th smallest value.
            self.raw.sort_unstable_by(f64::total_cmp);
            return self.raw.get(rank as usize - 1).copied().unwrap_or(self.max);
        }
        let mut pairs: Vec<(f64, u32)> = self.raw_pairs().collect();
        pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        for (i, &(v, w)) in pairs.iter().enumerate() {
            self.raw[i] = v;
            self.weights[i] = w;
        }
        let mut seen = 0u64;
        for &(v, w) in &pairs {
            seen += u64::from(w);
            if seen >= rank {
                return v;
            }
        }
        self.max
    }

    /// Each stored value with its weight: exact values while raw, bucket representatives in
    /// HDR form (followed by the staged values not yet recorded). Sinks that ship
    /// distributions (sketches) read this.
    pub fn for_each_bin(&self, mut f: impl FnMut(f64, u64)) {
        if let Some(h) = self.hdr.as_deref() {
            if let Some(n) = &h.neg {
                for it in n.iter_recorded() {
                    f(
                        -(n.median_equivalent(it.value_iterated_to()) as f64) / SCALE,
                        it.count_at_value(),
                    );
                }
            }
            for it in h.pos.iter_recorded() {
                f(
                    h.pos.median_equivalent(it.value_iterated_to()) as f64 / SCALE,
                    it.count_at_value(),
                );
            }
        }
        for (v, w) in self.raw_pairs() {
            f(v, u64::from(w));
        }
    }
}

/// Pre-aggregated input (OTLP histogram points), added without restructuring the store above.
impl Samples {
    /// Adds pre-aggregated data: `bins` are (representative value, count) pairs, such as bucket
    /// midpoints. `sum`, `min` and `max` are the exact moments when the source carries them;
    /// without them they are derived from the representatives. Representatives are clamped to
    /// [min, max] so that percentiles never leave the range the source observed. Non-finite
    /// moments are ignored; bins with a non-finite value or a zero count are skipped.
    /// Returns the number of values added.
    pub fn add_bins(
        &mut self,
        bins: &[(f64, u64)],
        sum: Option<f64>,
        min: Option<f64>,
        max: Option<f64>,
    ) -> u64 {
        let live = || bins.iter().filter(|(v, c)| *c > 0 && v.is_finite());
        let total = live().fold(0u64, |a, (_, c)| a.saturating_add(*c));
        if total == 0 {
            return 0;
        }
        let lo = live().map(|(v, _)| *v).fold(f64::INFINITY, f64::min);
        let hi = live().map(|(v, _)| *v).fold(f64::NEG_INFINITY, f64::max);
        let (mut pmin, mut pmax) = (
            min.filter(|m| m.is_finite()).unwrap_or(lo),
            max.filter(|m| m.is_finite()).unwrap_or(hi),
        );
        if pmin > pmax {
            // Inconsistent moments from the source: fall back to the bins' own range.
            (pmin, pmax) = (lo, hi);
        }
        let derived: f64 = live().map(|(v, c)| v.clamp(pmin, pmax) * *c as f64).sum();
        let psum = sum.filter(|s| s.is_finite()).unwrap_or(derived);
        for &(v, c) in live() {
            let v = v.clamp(pmin, pmax);
            let mut left = c;
            while left > 0 {
                let w = left.min(u64::from(u32::MAX)) as u32;
                self.store(v, w);
                left -= u64::from(w);
            }
        }
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

    /// Records a value in the raw store (spilling a full one first) without touching the
    /// moments.
    fn store(&mut self, value: f64, w: u32) {
        if self.raw.len() >= RAW_LIMIT {
            self.spill();
        }
        self.push_raw(value, w);
    }
}

/// Records `value` with `weight`; returns 1 when the value had to be clamped.
fn record(h: &mut Hdr, value: f64, weight: u32) -> u64 {
    let mag = value.abs();
    let (mag, clamped) = if mag > MAX_TRACKABLE {
        (MAX_TRACKABLE, 1)
    } else {
        (mag, 0)
    };
    let scaled = (mag * SCALE).round() as u64;
    let target = if value < 0.0 {
        h.neg.get_or_insert_with(new_hdr)
    } else {
        &mut h.pos
    };
    // Auto-resize makes `record_n` infallible for values below u64::MAX / 2.
    let _ = target.record_n(scaled, u64::from(weight));
    clamped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(values: &[f64]) -> Samples {
        let mut s = Samples::new();
        for &v in values {
            s.add(v, 1);
        }
        s
    }

    #[test]
    fn raw_percentiles_are_exact() {
        let mut s = from(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert!(!s.is_compact());
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum(), 15.0);
        assert_eq!((s.min(), s.max(), s.avg()), (1.0, 5.0, 3.0));
        assert_eq!(s.quantile(0.5), 3.0);
        assert_eq!(s.quantile(0.95), 5.0);
        assert_eq!(s.quantile(0.2), 1.0);
        assert_eq!(s.quantile(0.21), 2.0);
    }

    #[test]
    fn weights_count_like_repeated_samples() {
        let mut s = Samples::new();
        s.add(10.0, 4);
        s.add(20.0, 1);
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum(), 60.0);
        assert_eq!(s.quantile(0.8), 10.0);
        assert_eq!(s.quantile(0.81), 20.0);
    }

    #[test]
    fn weights_after_unit_samples_and_merged() {
        let mut s = from(&[3.0, 1.0]);
        s.add(2.0, 3);
        assert_eq!((s.count(), s.sum()), (5, 10.0));
        assert_eq!(s.quantile(0.2), 1.0);
        assert_eq!(s.quantile(0.8), 2.0);
        assert_eq!(s.quantile(1.0), 3.0);
        let mut bins = Vec::new();
        s.for_each_bin(|v, c| bins.push((v, c)));
        bins.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(bins, vec![(1.0, 1), (2.0, 3), (3.0, 1)]);
        // Unit-weight samples merged into weighted ones, and the other way round.
        let mut a = from(&[10.0]);
        a.merge(s.clone());
        assert_eq!(
            (a.count(), a.quantile(0.5), a.quantile(1.0)),
            (6, 2.0, 10.0)
        );
        let mut b = s;
        b.merge(from(&[0.5, 0.5]));
        assert_eq!(
            (b.count(), b.quantile(2.0 / 7.0), b.quantile(0.3)),
            (7, 0.5, 1.0)
        );
        // Spilling to HDR keeps the weights.
        let mut h = Samples::new();
        h.add(1.0, 1000);
        for _ in 0..RAW_LIMIT {
            h.add(50.0, 1);
        }
        assert!(h.is_compact());
        assert_eq!(h.count(), 1000 + RAW_LIMIT as u64);
        assert!((h.quantile(0.5) - 1.0).abs() < 0.01);
    }

    #[test]
    fn hdr_form_keeps_exact_moments_and_close_percentiles() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let mut s = from(&values);
        assert!(s.is_compact());
        assert_eq!(s.count(), 1000);
        assert_eq!(s.sum(), 500_500.0);
        assert_eq!((s.min(), s.max()), (1.0, 1000.0));
        for (q, want) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = s.quantile(q);
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(s.quantile(1.0), 1000.0);
    }

    #[test]
    fn negative_and_fractional_values() {
        let mut values: Vec<f64> = (1..=100).map(|i| -f64::from(i)).collect();
        values.extend((1..=100).map(|i| f64::from(i) / 10.0));
        // Repeated, so that the samples outnumber the raw store and move to HDR form.
        let values = values.repeat(RAW_LIMIT / 200 + 1);
        let mut s = from(&values);
        assert!(s.is_compact());
        assert_eq!(s.min(), -100.0);
        assert_eq!(s.max(), 10.0);
        let p25 = s.quantile(0.25);
        assert!((p25 - -51.0).abs() <= 0.6, "{p25}");
        let p75 = s.quantile(0.75);
        assert!((p75 - 5.0).abs() <= 0.06, "{p75}");
    }

    #[test]
    fn huge_values_are_clamped_not_lost() {
        let mut s = Samples::new();
        for _ in 0..RAW_LIMIT {
            s.add(1.0, 1);
        }
        s.add(1.0e300, 1);
        assert_eq!(s.count(), RAW_LIMIT as u64 + 1);
        assert_eq!(s.max(), 1.0e300);
        s.settle();
        assert_eq!(s.clamped(), 1);
        assert!(s.quantile(1.0) >= MAX_TRACKABLE * 0.99);
    }

    #[test]
    fn merge_raw_and_hdr() {
        let mut a = from(&[1.0, 2.0]);
        let b = from(&[3.0]);
        a.merge(b);
        assert!(!a.is_compact());
        assert_eq!((a.count(), a.sum(), a.quantile(1.0)), (3, 6.0, 3.0));
        let n = RAW_LIMIT + 100;
        let big = from(&(0..n).map(|i| i as f64).collect::<Vec<_>>());
        a.merge(big);
        assert!(a.is_compact());
        assert_eq!(a.count(), n as u64 + 3);
        assert_eq!(a.max(), (n - 1) as f64);
        let mut empty = Samples::new();
        empty.merge(from(&[7.0]));
        assert_eq!(empty.quantile(0.5), 7.0);
        let mut c = from(&[-1.0; RAW_LIMIT]);
        c.merge(from(&[-2.0; RAW_LIMIT]));
        assert!(c.is_compact());
        assert_eq!(c.count(), 2 * RAW_LIMIT as u64);
        assert!((c.quantile(0.25) - -2.0).abs() < 0.05);
    }

    #[test]
    fn bins_keep_exact_moments_and_clamp_representatives() {
        let mut s = Samples::new();
        // Two values in a bucket represented by 2.5, one represented by 37.5 but observed at 30.
        let n = s.add_bins(
            &[(2.5, 2), (37.5, 1), (99.0, 0)],
            Some(33.0),
            Some(1.0),
            Some(30.0),
        );
        assert_eq!(n, 3);
        assert_eq!((s.count(), s.sum(), s.min(), s.max()), (3, 33.0, 1.0, 30.0));
        assert_eq!(s.quantile(0.5), 2.5);
        assert_eq!(s.quantile(1.0), 30.0);
        // Without moments they come from the representatives.
        let mut t = Samples::new();
        t.add(100.0, 1);
        t.add_bins(&[(4.0, 3)], None, None, None);
        assert_eq!(
            (t.count(), t.sum(), t.min(), t.max()),
            (4, 112.0, 4.0, 100.0)
        );
        // Counts beyond u32 are split into several weights.
        let mut h = Samples::new();
        h.add_bins(
            &[(1.0, 5_000_000_000), (2.0, 1)],
            Some(5_000_000_002.0),
            None,
            None,
        );
        assert_eq!(h.count(), 5_000_000_001);
        assert_eq!(h.quantile(0.5), 1.0);
        assert_eq!(
            Samples::new().add_bins(&[(f64::NAN, 3), (1.0, 0)], None, None, None),
            0
        );
    }

    #[test]
    fn staged_values_count_after_the_switch() {
        // Past RAW_LIMIT, values are staged and recorded in bulk; reading percentiles, bins or
        // the clamped count must see the staged ones too.
        let mut s = Samples::new();
        for i in 0..RAW_LIMIT * 2 + 3 {
            s.add((i % 10) as f64, 1);
        }
        s.add(1.0e300, 1);
        assert!(s.is_compact());
        let mut total = 0;
        s.for_each_bin(|_, c| total += c);
        assert_eq!(total, s.count());
        let mut settled = s.clone();
        settled.settle();
        assert_eq!(settled.clamped(), 1);
        let p50 = s.quantile(0.5);
        assert!((p50 - 4.0).abs() <= 0.05, "{p50}");
        assert_eq!(s.clamped(), 1);
        // Merging two stores that both staged values keeps every sample.
        let mut a = s.clone();
        a.merge(s.clone());
        assert_eq!(a.count(), 2 * s.count());
        let mut total = 0;
        a.for_each_bin(|_, c| total += c);
        assert_eq!(total, a.count());
        a.settle();
        assert_eq!(a.clamped(), 2);
    }

    #[test]
    fn bins_cover_every_sample() {
        for n in [5usize, 500, RAW_LIMIT * 3 + 7] {
            let s = from(&(0..n).map(|i| i as f64 - 2.0).collect::<Vec<_>>());
            let mut total = 0;
            s.for_each_bin(|_, c| total += c);
            assert_eq!(total, n as u64);
        }
    }
}
