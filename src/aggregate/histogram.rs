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
//! Distributions (`d`, and OTLP histograms) do not use HDR histograms: a store made with
//! [`Samples::keyed`] keys every value into the Datadog Agent's DDSketch bins
//! ([`super::ddsketch`]) when its staging buffer is recorded, so that what a Datadog sink
//! ships is the sketch the Agent would have built, whatever the number of samples, and the
//! percentiles read here are within 1/128 relative of the exact ones.
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

use super::ddsketch::{self, KeyBins};

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
    /// The DDSketch bins of a keyed store (see [`Samples::keyed`]), once its staging buffer
    /// was first recorded.
    keys: Option<Box<KeyBins>>,
    /// Staged values go into `keys` rather than `hdr`.
    keyed: bool,
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

    /// An empty store for a distribution: past [`RAW_LIMIT`] values, each value is keyed into
    /// the Agent's DDSketch bins instead of an HDR histogram.
    pub fn keyed() -> Samples {
        Samples {
            keyed: true,
            ..Samples::default()
        }
    }

    /// True for a store made by [`Samples::keyed`] (or merged with one).
    pub fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// The DDSketch bins, once a keyed store recorded its first batch (staged values are not
    /// in them: see [`Samples::for_each_key`]).
    pub fn key_bins(&self) -> Option<&KeyBins> {
        self.keys.as_deref()
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
        if self.keyed {
            return self.spill_keys();
        }
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
        if (self.hdr.is_some() || self.keys.is_some()) && !self.raw.is_empty() {
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
        if self.keyed || other.keyed {
            return self.merge_keyed(other);
        }
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
        self.hdr.is_some() || self.keys.is_some()
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
        if self.count > 0 && !self.is_compact() && self.weights.is_empty() {
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
        if let Some(k) = self.keys.as_deref() {
            return k
                .value_at_rank(rank)
                .unwrap_or(self.max)
                .clamp(self.min, self.max);
        }
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
        if let Some(k) = self.keys.as_deref() {
            for b in k.bins() {
                f(ddsketch::value(b.k), b.n);
            }
        }
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

#[path = "histogram_keyed.rs"]
mod keyed;

#[cfg(test)]
#[path = "histogram_tests.rs"]
mod tests;
