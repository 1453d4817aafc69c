//! Tests of `otlp/cumulative.rs`.

use super::*;

const T0: Duration = Duration::from_secs(1_000);

fn streams(initial: InitialCumulative) -> Streams {
    Streams::new(3, Duration::from_secs(60), initial, 100, 64)
}

#[test]
fn cumulative_sum_becomes_deltas_with_resets() {
    let mut s = streams(InitialCumulative::Auto);
    // Started after tallyd (100): counted in full.
    assert_eq!(s.number(1, 200, 1, 5.0, T0), Ok(Step::Delta(5.0)));
    assert_eq!(s.number(1, 200, 2, 8.0, T0), Ok(Step::Delta(3.0)));
    assert_eq!(s.number(1, 200, 3, 8.0, T0), Ok(Step::Delta(0.0)));
    // Out of order: ignored, and the baseline stays 8.
    assert_eq!(s.number(1, 200, 2, 6.0, T0), Ok(Step::Stale));
    // The value went down: a reset, the new total counts in full.
    assert_eq!(s.number(1, 200, 4, 2.0, T0), Ok(Step::Delta(2.0)));
    assert_eq!(s.number(1, 200, 5, 4.0, T0), Ok(Step::Delta(2.0)));
    // The start time moved: a restart, even though the value went up.
    assert_eq!(s.number(1, 300, 6, 10.0, T0), Ok(Step::Delta(10.0)));
    // A point of the previous incarnation arriving late is ignored.
    assert_eq!(s.number(1, 200, 7, 50.0, T0), Ok(Step::Stale));
    assert_eq!(s.take_counts(), (0, 2));
    // Started before tallyd (or unknown): only a baseline.
    assert_eq!(s.number(2, 50, 1, 70.0, T0), Ok(Step::Baseline));
    assert_eq!(s.number(2, 50, 2, 75.0, T0), Ok(Step::Delta(5.0)));
    assert_eq!(s.number(3, 0, 1, 7.0, T0), Ok(Step::Baseline));
}

#[test]
fn initial_value_policies() {
    let mut keep = streams(InitialCumulative::Keep);
    assert_eq!(keep.number(1, 0, 1, 7.0, T0), Ok(Step::Delta(7.0)));
    let mut drop = streams(InitialCumulative::Drop);
    assert_eq!(drop.number(1, 500, 1, 7.0, T0), Ok(Step::Baseline));
}

#[test]
fn streams_are_bounded_and_expire() {
    let mut s = streams(InitialCumulative::Keep);
    for k in 0..3 {
        assert!(s.number(k, 1, 1, 1.0, T0).is_ok());
    }
    assert_eq!(s.number(9, 1, 1, 1.0, T0), Err(Reject::StreamLimit));
    assert_eq!(s.running(9, 1.0, T0), Err(Reject::StreamLimit));
    // Known streams still work at the limit.
    assert_eq!(s.number(0, 1, 2, 3.0, T0), Ok(Step::Delta(2.0)));
    // After the expiry the idle ones are forgotten and the new stream fits.
    let later = T0 + Duration::from_secs(61);
    assert_eq!(s.number(9, 1, 1, 1.0, later), Ok(Step::Delta(1.0)));
    assert_eq!(s.len(), 1);
    assert_eq!(s.take_counts(), (3, 0));
}

#[test]
fn delta_up_down_counter_keeps_a_running_total() {
    let mut s = streams(InitialCumulative::Auto);
    assert_eq!(s.running(4, 5.0, T0), Ok(5.0));
    assert_eq!(s.running(4, -2.0, T0), Ok(3.0));
    assert_eq!(s.running(4, -4.0, T0), Ok(-1.0));
}

fn hist(count: u64, sum: f64, buckets: &[u64]) -> HistData {
    HistData {
        count,
        sum: Some(sum),
        buckets: buckets.to_vec(),
        min: Some(1.0),
        max: Some(9.0),
    }
}

#[test]
fn cumulative_histogram_deltas() {
    let mut s = streams(InitialCumulative::Keep);
    let first = s.histogram(1, 10, 1, 7, hist(3, 6.0, &[1, 2, 0]), T0);
    assert_eq!(first, Ok(Step::Delta(hist(3, 6.0, &[1, 2, 0]))));
    let Ok(Step::Delta(d)) = s.histogram(1, 10, 2, 7, hist(5, 26.0, &[1, 3, 1]), T0) else {
        panic!("delta expected")
    };
    assert_eq!(
        (d.count, d.sum, d.buckets.clone()),
        (2, Some(20.0), vec![0, 1, 1])
    );
    assert_eq!((d.min, d.max), (None, None));
    // A bucket went down: reset, the whole point counts (with its min and max).
    let r = s.histogram(1, 10, 3, 7, hist(1, 2.0, &[0, 1, 0]), T0);
    assert_eq!(r, Ok(Step::Delta(hist(1, 2.0, &[0, 1, 0]))));
    // New bounds: a new baseline.
    assert_eq!(
        s.histogram(1, 10, 4, 8, hist(9, 9.0, &[9, 0]), T0),
        Ok(Step::Baseline)
    );
    assert_eq!(s.take_counts().1, 2);
}

#[test]
fn downscaling_merges_buckets() {
    let b = ExpBuckets {
        offset: -3,
        counts: vec![1, 2, 3, 4, 5],
    };
    // Indices -3..=1 at scale s map to -2, -1, -1, 0, 0 at scale s-1.
    let d = downscale(&b, 1);
    assert_eq!((d.offset, d.counts), (-2, vec![1, 5, 9]));
    assert_eq!(downscale(&b, 0), b);
}

#[test]
fn cumulative_exponential_deltas_across_scales() {
    let mut s = streams(InitialCumulative::Keep);
    let p1 = ExpData {
        scale: 2,
        count: 4,
        sum: Some(10.0),
        zero: 1,
        pos: ExpBuckets {
            offset: 0,
            counts: vec![1, 2],
        },
        ..Default::default()
    };
    assert!(matches!(s.exponential(1, 5, 1, p1, T0), Ok(Step::Delta(_))));
    // The SDK downscaled to 1: indices 0,1 at scale 2 are index 0 at scale 1.
    let p2 = ExpData {
        scale: 1,
        count: 7,
        sum: Some(20.0),
        zero: 1,
        pos: ExpBuckets {
            offset: 0,
            counts: vec![4, 2],
        },
        ..Default::default()
    };
    let Ok(Step::Delta(d)) = s.exponential(1, 5, 2, p2, T0) else {
        panic!("delta expected")
    };
    assert_eq!(d.scale, 1);
    assert_eq!((d.count, d.sum, d.zero), (3, Some(10.0), 0));
    assert_eq!((d.pos.offset, d.pos.counts), (0, vec![1, 2]));
}
