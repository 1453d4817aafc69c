use super::*;

#[test]
fn agent_constants() {
    assert_eq!(bias(), 1338);
    assert_eq!(i32::from(key(1.0)), bias());
    assert_eq!(key(1.015625), key(1.0) + 1);
    assert_eq!(key(MIN_VALUE), 1);
    assert_eq!(key(0.0), 0);
    assert_eq!(key(1e-12), 0);
    assert_eq!(key(-1e-12), 0);
    assert_eq!(key(f64::MAX), INF_KEY);
    assert_eq!(key(-f64::MAX), -INF_KEY);
}

#[test]
fn every_key_round_trips_and_is_within_accuracy() {
    let mut prev = 0;
    for i in 1..4000 {
        let v = 1.013f64.powi(i) * 1e-8;
        let k = key(v);
        assert!(k >= prev, "{v}");
        prev = k;
        assert_eq!(key(value(k)), k, "{v}");
        let back = value(k);
        assert!((back - v).abs() / v <= EPS, "{v} -> {k} -> {back}");
        assert_eq!(key(-v), -k);
    }
}

#[test]
fn insert_merges_and_sorts() {
    let mut b = KeyBins::default();
    b.insert(&mut [(5, 1), (-3, 2), (5, 4)]);
    b.insert(&mut [(0, 1), (5, 1), (7, 1)]);
    let got: Vec<(i16, u64)> = b.bins().iter().map(|x| (x.k, x.n)).collect();
    assert_eq!(got, vec![(-3, 2), (0, 1), (5, 6), (7, 1)]);
    assert_eq!(b.count(), 10);
    assert_eq!(b.value_at_rank(3), Some(0.0));
    assert_eq!(b.value_at_rank(4), Some(value(5)));
    assert_eq!(b.value_at_rank(10), Some(value(7)));
}

#[test]
fn trim_keeps_the_high_end() {
    let mut b = KeyBins::default();
    let mut batch: Vec<(i16, u64)> = (0..5000).map(|k| (k as i16, 1)).collect();
    b.insert(&mut batch);
    assert_eq!(b.bins().len(), BIN_LIMIT);
    assert_eq!(b.count(), 5000);
    assert_eq!(b.folded(), 5000 - BIN_LIMIT as u64);
    assert_eq!(b.bins()[0].k, (5000 - BIN_LIMIT) as i16);
    assert_eq!(b.bins().last().map(|x| x.k), Some(4999));
}

#[test]
fn interpolation_spreads_the_count_over_the_range() {
    let mut out = Vec::new();
    interpolate(1.0, 2.0, 1000, &mut out);
    assert_eq!(out.iter().map(|e| e.1).sum::<u64>(), 1000);
    // ln 2 / ln 1.015625 = 44.7 bins between 1 and 2.
    assert!(out.len() >= 40, "{}", out.len());
    assert_eq!(out[0].0, key(1.0));
    assert_eq!(out.last().map(|e| e.0), Some(key(2.0)));
    // Linear in value: a bin near 2 (wider) gets more than one near 1.
    assert!(out[out.len() - 2].1 > out[1].1);
    // The median of the spread is near 1.5.
    let mut seen = 0;
    let mid = out
        .iter()
        .find(|e| {
            seen += e.1;
            seen >= 500
        })
        .map(|e| value(e.0));
    assert!((mid.unwrap_or(0.0) - 1.5).abs() < 0.02, "{mid:?}");
    out.clear();
    interpolate(3.0, 3.0, 7, &mut out);
    assert_eq!(out, vec![(key(3.0), 7)]);
    out.clear();
    interpolate(-1.0, 1.0, 100, &mut out);
    assert_eq!(out.iter().map(|e| e.1).sum::<u64>(), 100);
    assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
}
