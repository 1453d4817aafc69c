//! The Datadog Agent's DDSketch mapping, and the keyed bins a distribution's samples go into.
//!
//! Mapping (as the Agent's `pkg/quantile` defines it): relative accuracy eps = 1/128, so
//! gamma = 1 + 2·eps and ln(gamma) = ln_1p(2·eps); the smallest magnitude told apart from 0 is
//! 1e-9, and the bias (offset) is -floor(log_gamma(1e-9)) + 1 = 1338, so that key 1 is the
//! smallest positive key. key(v) = round_half_even(ln(v) / ln(gamma)) + bias, at most
//! `i16::MAX` (the +inf key); a magnitude below 1e-9 has key 0 and a negative value the key
//! -key(|v|). The value of a key (the one the Agent and the intake compute quantiles with) is
//! gamma^(key - bias): every value of its bin is within 1/128 of it. A sketch holds at most
//! 4096 bins; past that the lowest ones are folded into the lowest bin kept, as the Agent's
//! store trims its low end.
//!
//! Keys are what the intake merges, so keying every sample with the Agent's function, at
//! ingest and not from some other representation, is what makes a window of a million
//! samples as accurate in Datadog as a window of ten.

/// Relative accuracy of a bin's value.
pub const EPS: f64 = 1.0 / 128.0;
/// Smallest magnitude told apart from 0 (smaller ones go to key 0).
pub const MIN_VALUE: f64 = 1e-9;
/// Most bins in one sketch; past it the lowest keys are folded together.
pub const BIN_LIMIT: usize = 4096;
/// The key of +inf (values beyond the largest finite key), as in the Agent.
pub const INF_KEY: i16 = i16::MAX;

/// ln(gamma).
#[inline]
pub fn gamma_ln() -> f64 {
    (2.0 * EPS).ln_1p()
}

/// `-floor(log_gamma(MIN_VALUE)) + 1` (1338).
#[inline]
pub fn bias() -> i32 {
    -((MIN_VALUE.ln() / gamma_ln()).floor() as i32) + 1
}

/// The bin key of `v`.
#[inline]
pub fn key(v: f64) -> i16 {
    if v < 0.0 {
        return -key(-v);
    }
    if v.is_nan() || v < MIN_VALUE {
        return 0;
    }
    let k = (v.ln() / gamma_ln()).round_ties_even() as i64 + i64::from(bias());
    // Over the largest finite key the Agent uses its +inf key, which is i16::MAX.
    k.clamp(1, i64::from(INF_KEY)) as i16
}

/// The value a key stands for, gamma^(key - bias) (0 for key 0, ±inf for the inf keys).
pub fn value(k: i16) -> f64 {
    match k {
        0 => 0.0,
        INF_KEY => f64::INFINITY,
        k if k == -INF_KEY => f64::NEG_INFINITY,
        k if k < 0 => -value(-k),
        k => ((i32::from(k) - bias()) as f64 * gamma_ln()).exp(),
    }
}

/// The largest value that still has key `k` (its bin's upper edge), for interpolation.
fn upper_edge(k: i32) -> f64 {
    let b = bias();
    match k {
        0 => MIN_VALUE,
        k if k > 0 => ((f64::from(k - b) + 0.5) * gamma_ln()).exp(),
        // A negative key's bin ends (towards +inf) where the mirrored bin begins.
        k => -((f64::from(-k - b) - 0.5) * gamma_ln()).exp(),
    }
}

/// One bin: a key and its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bin {
    /// The key.
    pub k: i16,
    /// Weighted samples with this key.
    pub n: u64,
}

/// The bins of one sketch, ascending by key, at most [`BIN_LIMIT`] of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyBins {
    bins: Vec<Bin>,
    /// Bins folded into the lowest kept bin because of the limit (in sample counts).
    folded: u64,
}

impl KeyBins {
    /// The bins, ascending by key.
    pub fn bins(&self) -> &[Bin] {
        &self.bins
    }

    /// Samples whose bin was folded into a higher one at [`BIN_LIMIT`].
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Total weighted count.
    pub fn count(&self) -> u64 {
        self.bins.iter().fold(0u64, |a, b| a.saturating_add(b.n))
    }

    /// Merges `keys` (any order; sorted here, and left sorted) with their weights: each entry
    /// is (key, weight). One sort and one linear merge per batch, as the Agent's buffer does.
    pub fn insert(&mut self, batch: &mut [(i16, u64)]) {
        if batch.is_empty() {
            return;
        }
        batch.sort_unstable_by_key(|e| e.0);
        // A busy context already has most of its keys: add to those in place (a binary search
        // each), and merge only the keys it did not have, without a new allocation otherwise.
        let mut fresh = 0;
        let mut i = 0;
        while i < batch.len() {
            let (k, mut n) = batch[i];
            let mut j = i + 1;
            while j < batch.len() && batch[j].0 == k {
                n = n.saturating_add(batch[j].1);
                j += 1;
            }
            match self.bins.binary_search_by_key(&k, |b| b.k) {
                Ok(at) => self.bins[at].n = self.bins[at].n.saturating_add(n),
                Err(_) => {
                    batch[fresh] = (k, n);
                    fresh += 1;
                }
            }
            i = j;
        }
        if fresh == 0 {
            return;
        }
        let batch = &batch[..fresh];
        let mut merged = Vec::with_capacity(self.bins.len() + batch.len());
        let (mut i, mut j) = (0, 0);
        while i < self.bins.len() || j < batch.len() {
            let take_bin =
                j >= batch.len() || (i < self.bins.len() && self.bins[i].k <= batch[j].0);
            let (k, n) = if take_bin {
                let b = self.bins[i];
                i += 1;
                (b.k, b.n)
            } else {
                let e = batch[j];
                j += 1;
                (e.0, e.1)
            };
            match merged.last_mut() {
                Some(Bin { k: lk, n: ln }) if *lk == k => *ln = ln.saturating_add(n),
                _ => merged.push(Bin { k, n }),
            }
        }
        self.bins = merged;
        self.trim();
    }

    /// Adds the bins of `other`.
    pub fn merge(&mut self, other: &KeyBins) {
        let mut batch: Vec<(i16, u64)> = other.bins.iter().map(|b| (b.k, b.n)).collect();
        self.folded += other.folded;
        self.insert(&mut batch);
    }

    /// Folds the lowest bins into the lowest one kept while there are more than the limit.
    fn trim(&mut self) {
        if self.bins.len() <= BIN_LIMIT {
            return;
        }
        let excess = self.bins.len() - BIN_LIMIT;
        let moved = self.bins[..excess]
            .iter()
            .fold(0u64, |a, b| a.saturating_add(b.n));
        self.bins.drain(..excess);
        self.bins[0].n = self.bins[0].n.saturating_add(moved);
        self.folded = self.folded.saturating_add(moved);
    }

    /// The value of the bin holding the `rank`-th (1-based) smallest sample.
    pub fn value_at_rank(&self, rank: u64) -> Option<f64> {
        let mut seen = 0u64;
        for b in &self.bins {
            seen = seen.saturating_add(b.n);
            if seen >= rank {
                return Some(value(b.k));
            }
        }
        self.bins.last().map(|b| value(b.k))
    }

    /// Heap bytes held.
    pub fn heap_size(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<Bin>()
    }
}

/// Spreads `n` samples over the bins that the range [`lo`, `hi`] covers, in proportion to how
/// much of the range each bin's values take (a linear interpolation of the counts across the
/// range, as the Agent's OTLP ingest does for a histogram bucket, rather than all of them at one
/// point). Pushes (key, count) pairs with non-zero counts onto `out`; their counts add up to `n`.
pub fn interpolate(lo: f64, hi: f64, n: u64, out: &mut Vec<(i16, u64)>) {
    if n == 0 {
        return;
    }
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    let (kl, kh) = (i32::from(key(lo)), i32::from(key(hi)));
    if kl == kh || hi - lo <= 0.0 || !(hi - lo).is_finite() {
        out.push((key(lo), n));
        return;
    }
    let width = hi - lo;
    let nf = n as f64;
    let mut given = 0u64;
    for k in kl..kh {
        // Samples up to this bin's upper edge, by linear interpolation; rounded cumulatively so
        // that the parts add up to `n` exactly.
        let edge = upper_edge(k).clamp(lo, hi);
        let upto = (((edge - lo) / width) * nf).round().clamp(0.0, nf) as u64;
        if upto > given {
            out.push((k as i16, upto - given));
            given = upto;
        }
    }
    if n > given {
        out.push((kh as i16, n - given));
    }
}

#[cfg(test)]
#[path = "ddsketch_tests.rs"]
mod tests;
