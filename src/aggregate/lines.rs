//! Small helpers of `Shard::apply`: the sample store of a kind, a line's value count, tag
//! de-duplication.

use super::histogram::Samples;
use crate::model::dogstatsd::{self as parse, MetricLine};
use crate::model::MetricKind;

/// The empty sample store of a sampled kind: distributions key their values into the Agent's
/// DDSketch bins, timers and histograms use HDR histograms past their raw samples.
pub(super) fn store_for(kind: MetricKind) -> Samples {
    if kind == MetricKind::Distribution {
        Samples::keyed()
    } else {
        Samples::new()
    }
}

pub(super) fn value_count(m: &MetricLine<'_>) -> u64 {
    if m.kind == MetricKind::Set {
        1
    } else {
        parse::values(m.values).count() as u64
    }
}

/// Removes adjacent duplicates in place; returns the new length.
pub(super) fn dedup_sorted(tags: &mut [&[u8]]) -> usize {
    if tags.is_empty() {
        return 0;
    }
    let mut w = 1;
    for r in 1..tags.len() {
        if tags[r] != tags[w - 1] {
            tags[w] = tags[r];
            w += 1;
        }
    }
    w
}
