//! Tests of `aggregate/histogram.rs`.

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

#[test]
fn keyed_store_keys_every_value_with_the_agents_mapping() {
    use crate::aggregate::ddsketch::{key, EPS};
    let mut s = Samples::keyed();
    let mut exact = Vec::new();
    for i in 0..10_000u32 {
        // Values from 1e-4 to about 3e2, the range where thousandths lost precision.
        let v = 1e-4 * 1.0015f64.powi(i as i32);
        s.add(v, 1);
        exact.push(v);
    }
    assert!(s.is_compact() && s.is_keyed());
    for q in [0.01, 0.5, 0.9, 0.99, 1.0] {
        let want = exact[((q * 10_000.0) as usize).clamp(1, 10_000) - 1];
        let got = s.quantile(q);
        assert!((got - want).abs() / want <= EPS, "q{q}: {got} vs {want}");
    }
    let mut keys = std::collections::BTreeMap::new();
    s.for_each_key(|k, n| *keys.entry(k).or_insert(0) += n);
    let mut want = std::collections::BTreeMap::new();
    for v in &exact {
        *want.entry(key(*v)).or_insert(0u64) += 1;
    }
    assert_eq!(keys, want, "the bins are the keys of the values, exactly");
    // Merging two keyed stores adds their bins.
    let mut other = Samples::keyed();
    for v in &exact[..300] {
        other.add(*v, 2);
    }
    s.merge(other);
    assert_eq!(s.count(), 10_600);
    let mut total = 0;
    s.for_each_key(|_, n| total += n);
    assert_eq!(total, 10_600);
}

#[test]
fn ranges_are_interpolated_into_a_keyed_store() {
    let mut s = Samples::keyed();
    let n = s.add_ranges(
        &[(0.0, 10.0, 1000), (10.0, 20.0, 0)],
        Some(5000.0),
        None,
        None,
    );
    assert_eq!(n, 1000);
    assert_eq!(
        (s.count(), s.sum(), s.min(), s.max()),
        (1000, 5000.0, 0.0, 10.0)
    );
    let p50 = s.quantile(0.5);
    assert!((p50 - 5.0).abs() < 0.1, "{p50}");
    let p90 = s.quantile(0.9);
    assert!((p90 - 9.0).abs() < 0.1, "{p90}");
}
