//! The Datadog Agent's flavour of DDSketch, built from a window's samples.
//!
//! The mapping (relative accuracy 1/128, key = round_half_even(log_gamma(v)) + 1338, at most
//! 4096 bins) is `aggregate::ddsketch`'s: distributions are keyed with it at ingest, so this
//! module only gathers the window's keys, folds the low end past the bin limit, and splits bin
//! counts at 65,535 (the wire's uint16 bins, a key repeated when its count is larger), as the
//! Agent's sketch does. Keys and bins are what the intake merges, so Datadog computes the same
//! percentiles the Agent's sketch would give.

use std::collections::BTreeMap;

pub use crate::aggregate::ddsketch::{key, value, BIN_LIMIT, EPS, MIN_VALUE};
use crate::aggregate::Samples;

/// Largest count of one bin; larger counts are split over several bins with the same key.
pub const MAX_BIN_COUNT: u64 = u16::MAX as u64;

#[cfg(test)]
fn bias() -> i32 {
    crate::aggregate::ddsketch::bias()
}

/// One Agent sketch: summary plus sorted bins.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSketch {
    /// Weighted number of samples.
    pub cnt: i64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Weighted sum of the samples.
    pub sum: f64,
    /// Weighted mean.
    pub avg: f64,
    /// Bin keys, ascending (a key may repeat when its count was split).
    pub keys: Vec<i32>,
    /// Count of each bin of `keys`, at most [`MAX_BIN_COUNT`].
    pub counts: Vec<u32>,
}

/// Builds the sketch of `samples` from their keys (or, for a store that is not keyed, from its
/// stored values and weights).
pub fn from_samples(samples: &Samples) -> AgentSketch {
    let mut bins: BTreeMap<i16, u64> = BTreeMap::new();
    samples.for_each_key(|k, n| *bins.entry(k).or_insert(0) += n);
    // Over the bin limit, fold the lowest keys into the lowest key kept (the Agent trims the
    // low end too): the upper percentiles, which users watch, stay exact.
    if bins.len() > BIN_LIMIT {
        let excess = bins.len() - BIN_LIMIT;
        let low: Vec<i16> = bins.keys().take(excess + 1).copied().collect();
        let keep = low[excess];
        let mut folded = 0;
        for k in &low[..excess] {
            folded += bins.remove(k).unwrap_or(0);
        }
        *bins.entry(keep).or_insert(0) += folded;
    }
    let mut keys = Vec::with_capacity(bins.len());
    let mut counts = Vec::with_capacity(bins.len());
    for (k, mut n) in bins {
        while n > 0 {
            let part = n.min(MAX_BIN_COUNT);
            keys.push(i32::from(k));
            counts.push(part as u32);
            n -= part;
        }
    }
    let cnt = samples.count() as i64;
    AgentSketch {
        cnt,
        min: samples.min(),
        max: samples.max(),
        sum: samples.sum(),
        avg: samples.avg(),
        keys,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_monotonic_and_within_accuracy() {
        assert_eq!(key(0.0), 0);
        assert_eq!(key(1e-12), 0);
        assert_eq!(key(-1e-12), 0);
        assert_eq!(key(MIN_VALUE), 1);
        let mut prev = 0;
        for i in 1..2000 {
            let v = 1.07f64.powi(i) * 1e-6;
            let k = key(v);
            assert!(k >= prev, "{v}");
            prev = k;
            let back = value(k);
            // The key's value is within gamma of the original (relative accuracy 2·eps).
            assert!(
                (back - v).abs() / v <= 2.0 * EPS + 1e-12,
                "{v} -> {k} -> {back}"
            );
            assert_eq!(key(-v), -k);
        }
        assert_eq!(key(f64::MAX), i16::MAX);
    }

    #[test]
    fn known_keys() {
        // ln(1)/ln(1.015625) = 0, so 1.0 sits exactly at the bias.
        assert_eq!(i32::from(key(1.0)), bias());
        assert_eq!(bias(), 1338);
        assert_eq!(key(1.015625), key(1.0) + 1);
    }

    #[test]
    fn sketch_of_samples() {
        let mut s = Samples::new();
        for v in 1..=10 {
            s.add(f64::from(v), 1);
        }
        s.add(5.0, 70_000);
        let sk = from_samples(&s);
        assert_eq!(sk.cnt, 70_010);
        assert_eq!((sk.min, sk.max), (1.0, 10.0));
        assert_eq!(sk.counts.iter().map(|&n| u64::from(n)).sum::<u64>(), 70_010);
        assert!(sk.counts.iter().all(|&n| u64::from(n) <= MAX_BIN_COUNT));
        assert!(sk.keys.windows(2).all(|w| w[0] <= w[1]));
        // 5 appears in two bins (70001 > 65535).
        let k5 = i32::from(key(5.0));
        assert_eq!(sk.keys.iter().filter(|&&k| k == k5).count(), 2);
    }

    #[test]
    fn bin_limit_folds_the_low_end() {
        let mut s = Samples::new();
        for i in 0..3500 {
            let v = 0.01 * 1.01f64.powi(i);
            s.add(v, 1);
            s.add(-v, 1);
        }
        let sk = from_samples(&s);
        assert_eq!(sk.keys.len(), BIN_LIMIT);
        assert_eq!(sk.counts.iter().map(|&n| u64::from(n)).sum::<u64>(), 7000);
        // The most negative values were folded upwards; the top end is intact.
        let top = i32::from(key(0.01 * 1.01f64.powi(3499)));
        assert!(sk.keys[0] > -top + 100, "{}", sk.keys[0]);
        assert!((sk.keys[BIN_LIMIT - 1] - top).abs() <= 1);
    }
}
