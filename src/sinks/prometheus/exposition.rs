//! The exposed state: one entry per series with cumulative counters, last gauges and
//! last-window quantiles, bounded and expiring, and the family layout that resolves name
//! clashes when it is visited.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::HashTable;

use super::labels::{render_labels_into, LabelScratch};
use crate::aggregate::{Flush, Quantiles, SeriesValue};
use crate::base::cpu::{prefetch_write, PREFETCH_AHEAD};
use crate::base::expo::sanitize_name_into;
use crate::model::{Context, MetricKind};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Counter(f64),
    Gauge(f64),
    /// Boxed: most series are counters and gauges, which then stay small.
    Summary(Box<Summary>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Summary {
    /// Inline for up to four percentiles: a new summary series is one allocation.
    quantiles: Quantiles,
    sum: f64,
    count: u64,
}

/// One exposed series. The family and label strings are not kept: they are rendered from
/// the context (shared with the aggregator) at scrape time, which keeps the entry small.
#[derive(Debug)]
pub(super) struct Entry {
    /// `Context::hash_code`.
    hash: u64,
    ctx: Arc<Context>,
    /// Unix seconds of the last flush that carried this series.
    updated: u64,
    value: Value,
}

/// One sample of the exposed state, as [`Exposition::visit`] hands it out.
#[derive(Debug, Clone, Copy)]
pub struct SampleRef<'a> {
    /// The family's exposed name (after clash renaming), without `suffix`.
    pub name: &'a str,
    /// `""`, `"_total"`, `"_sum"` or `"_count"`.
    pub suffix: &'static str,
    /// The series' context: its labels are [`label_pairs`](super::label_pairs) of it.
    pub ctx: &'a Context,
    /// The same labels, rendered for the text format.
    pub labels: &'a str,
    /// The `quantile` label of a summary quantile sample.
    pub quantile: Option<f64>,
    /// The sample's value.
    pub value: f64,
}

/// Receives the exposed state family by family.
pub trait Visitor {
    /// A new family starts: its exposed name, statsd kind and name before sanitising.
    fn family(&mut self, name: &str, kind: MetricKind, original: &str);
    /// One sample of the current family.
    fn sample(&mut self, s: &SampleRef<'_>);
}

/// What a Prometheus scrape would see: one entry per series, with cumulative counters and
/// summary sums and counts, last gauge values and last-window quantiles. Bounded by
/// `max_series`; a series unseen for `ttl` is forgotten. The scrape endpoint and remote write
/// each keep one, so both expose the same names, labels and values.
pub struct Exposition {
    series: HashTable<Entry>,
    /// No entry was updated before this (unix seconds): while `now - oldest < ttl` nothing can
    /// expire and the expiry pass is skipped.
    oldest: u64,
    percentiles: Arc<[f64]>,
    ttl_secs: u64,
    max_series: usize,
}

impl Exposition {
    /// An empty state keeping at most `max_series` series, each for `ttl` (at least a second)
    /// after its last window.
    pub fn new(ttl: std::time::Duration, max_series: usize) -> Exposition {
        Exposition {
            series: HashTable::new(),
            oldest: 0,
            percentiles: Arc::from(Vec::new()),
            ttl_secs: ttl.as_secs().max(1),
            max_series,
        }
    }

    /// Series currently exposed.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series is exposed.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Folds one window in; returns how many new series were refused at `max_series`.
    pub fn update(&mut self, flush: &Flush) -> u64 {
        self.percentiles = Arc::clone(&flush.percentiles);
        let now = flush.timestamp;
        let mut dropped = 0;
        // Grow once, not by doubling, when a window brings many new series (the first one).
        let room = self.max_series.saturating_sub(self.series.len());
        let more = flush
            .series
            .len()
            .saturating_sub(self.series.len())
            .min(room);
        self.series.reserve(more, |e| e.hash);
        // A new series clones its context's Arc, a write to a context no recent pass has
        // touched. When most of the window is new (the first one), ask for those lines ahead.
        let creating = more > flush.series.len() / 2;
        for (i, s) in flush.series.iter().enumerate() {
            if creating {
                if let Some(next) = flush.series.get(i + PREFETCH_AHEAD) {
                    prefetch_write(Arc::as_ptr(&next.ctx) as usize);
                }
            }
            let hash = s.hash;
            let full = self.series.len() >= self.max_series;
            // The aggregator hands over the same Arc window after window while it holds the
            // context, so the pointer comparison settles almost every lookup.
            let e = match self.series.entry(
                hash,
                |e| e.hash == hash && (Arc::ptr_eq(&e.ctx, &s.ctx) || *e.ctx == *s.ctx),
                |e| e.hash,
            ) {
                TableEntry::Occupied(o) => o.into_mut(),
                TableEntry::Vacant(v) => {
                    if full {
                        dropped += 1;
                        continue;
                    }
                    let value = match s.ctx.kind() {
                        MetricKind::Counter => Value::Counter(0.0),
                        MetricKind::Gauge | MetricKind::Set => Value::Gauge(0.0),
                        _ => Value::Summary(Box::new(Summary {
                            quantiles: Quantiles::new(),
                            sum: 0.0,
                            count: 0,
                        })),
                    };
                    v.insert(Entry {
                        hash,
                        ctx: Arc::clone(&s.ctx),
                        updated: now,
                        value,
                    })
                    .into_mut()
                }
            };
            e.updated = now;
            match (&mut e.value, &s.value) {
                (Value::Counter(total), SeriesValue::Counter(v)) => {
                    *total = cumulate(*total, *v);
                }
                (Value::Gauge(g), SeriesValue::Gauge(v)) if v.is_finite() => *g = *v,
                (Value::Gauge(g), SeriesValue::Set(n)) => *g = *n as f64,
                (Value::Summary(sm), SeriesValue::Samples(h)) => {
                    sm.quantiles.clear();
                    sm.quantiles.extend_from_slice(h.quantiles());
                    if (sm.sum + h.sum()).is_finite() {
                        sm.sum += h.sum();
                        sm.count += h.count();
                    } else if h.sum().is_finite() {
                        // Starts again from this window, sum and count together (a reset).
                        sm.sum = h.sum();
                        sm.count = h.count();
                    }
                }
                _ => {}
            }
        }
        let ttl = self.ttl_secs;
        if now.saturating_sub(self.oldest) >= ttl {
            let mut oldest = now;
            self.series.retain(|e| {
                let keep = now.saturating_sub(e.updated) < ttl;
                if keep {
                    oldest = oldest.min(e.updated);
                }
                keep
            });
            self.oldest = oldest;
        } else if self.series.is_empty() {
            self.oldest = now;
        }
        dropped
    }

    /// A copy of what is exposed, to visit without holding whatever guards `self`.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rows: self
                .series
                .iter()
                .map(|e| (Arc::clone(&e.ctx), e.value.clone()))
                .collect(),
            percentiles: Arc::clone(&self.percentiles),
        }
    }

    /// Hands every exposed sample to `v`, families in order of name then statsd kind, clashes
    /// resolved as the module docs say; returns how many series were left out for clashes.
    pub fn visit(&self, v: &mut impl Visitor) -> u64 {
        let rows: Vec<(&Arc<Context>, &Value)> =
            self.series.iter().map(|e| (&e.ctx, &e.value)).collect();
        visit_rows(&rows, &self.percentiles, v)
    }
}

/// The exposed series copied out of an [`Exposition`].
pub struct Snapshot {
    pub(super) rows: Vec<(Arc<Context>, Value)>,
    percentiles: Arc<[f64]>,
}

impl Snapshot {
    /// As [`Exposition::visit`].
    pub fn visit(&self, v: &mut impl Visitor) -> u64 {
        let rows: Vec<(&Arc<Context>, &Value)> = self.rows.iter().map(|(c, x)| (c, x)).collect();
        visit_rows(&rows, &self.percentiles, v)
    }
}

/// A series to visit: its family and labels are ranges of one shared string.
pub(super) struct Row<'a> {
    start: u32,
    family_end: u32,
    end: u32,
    ctx: &'a Arc<Context>,
    value: &'a Value,
}

pub(super) fn visit_rows(
    rows: &[(&Arc<Context>, &Value)],
    percentiles: &[f64],
    v: &mut impl Visitor,
) -> u64 {
    // Every family and label string goes into one buffer: no allocation per series.
    let mut text = String::with_capacity(rows.len() * 64);
    let mut scratch = LabelScratch::default();
    let mut entries: Vec<Row<'_>> = Vec::with_capacity(rows.len());
    for (ctx, value) in rows {
        let start = text.len() as u32;
        sanitize_name_into(&mut text, ctx.name());
        let family_end = text.len() as u32;
        render_labels_into(&mut text, ctx, &mut scratch);
        entries.push(Row {
            start,
            family_end,
            end: text.len() as u32,
            ctx,
            value,
        });
    }
    let text = text.as_str();
    let family = |r: &Row<'_>| &text[r.start as usize..r.family_end as usize];
    let labels = |r: &Row<'_>| &text[r.family_end as usize..r.end as usize];
    entries.sort_unstable_by(|a, b| {
        (family(a), a.ctx.kind(), labels(a)).cmp(&(family(b), b.ctx.kind(), labels(b)))
    });
    // Names claimed by the families laid out so far. A claim is kept as where to rebuild it
    // (the family's first row, renamed or not, which suffix) rather than as a string: with one
    // family per context, 100,000 families claim about 210,000 names, and a string each was
    // the largest part of a scrape's memory.
    let mut taken: HashTable<Claim> = HashTable::new();
    // Seeded per scrape: metric names come from clients, and must not be able to line up
    // collisions.
    let hasher = foldhash::quality::RandomState::default();
    let (mut name, mut probe, mut other) = (String::new(), String::new(), String::new());
    let mut left_out = 0u64;
    let mut i = 0;
    while i < entries.len() {
        let (fam, kind) = (family(&entries[i]), entries[i].ctx.kind());
        let mut j = i;
        while j < entries.len() && family(&entries[j]) == fam && entries[j].ctx.kind() == kind {
            j += 1;
        }
        let group = &entries[i..j];
        let row = i as u32;
        i = j;
        let free = |renamed: bool, probe: &mut String, other: &mut String| {
            claim_name(probe, fam, kind, renamed, 0);
            if probe.starts_with("tallyd_") {
                return false;
            }
            claim_suffixes(kind).iter().all(|&suffix| {
                claim_name(probe, fam, kind, renamed, suffix);
                let hash = hasher.hash_one(probe.as_str());
                taken
                    .find(hash, |c| {
                        let e = &entries[c.row as usize];
                        c.hash == hash && {
                            claim_name(other, family(e), e.ctx.kind(), c.renamed, c.suffix);
                            other == probe
                        }
                    })
                    .is_none()
            })
        };
        let renamed = if free(false, &mut probe, &mut other) {
            false
        } else if free(true, &mut probe, &mut other) {
            true
        } else {
            left_out += group.len() as u64;
            continue;
        };
        for &suffix in claim_suffixes(kind) {
            claim_name(&mut probe, fam, kind, renamed, suffix);
            let hash = hasher.hash_one(probe.as_str());
            let claim = Claim {
                hash,
                row,
                renamed,
                suffix,
            };
            taken.insert_unique(hash, claim, |c| c.hash);
        }
        claim_name(&mut name, fam, kind, renamed, 0);
        v.family(&name, kind, fam);
        let mut last_labels: Option<&str> = None;
        for e in group {
            let l = labels(e);
            if last_labels == Some(l) {
                left_out += 1;
                continue;
            }
            last_labels = Some(l);
            let sample = |suffix, quantile, value| SampleRef {
                name: &name,
                suffix,
                ctx: e.ctx,
                labels: l,
                quantile,
                value,
            };
            match e.value {
                Value::Counter(x) => v.sample(&sample("_total", None, *x)),
                Value::Gauge(x) => v.sample(&sample("", None, *x)),
                Value::Summary(sm) => {
                    for (q, x) in percentiles.iter().zip(&sm.quantiles) {
                        v.sample(&sample("", Some(*q), *x));
                    }
                    v.sample(&sample("_sum", None, sm.sum));
                    v.sample(&sample("_count", None, sm.count as f64));
                }
            }
        }
    }
    left_out
}

pub(super) fn prom_type(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge | MetricKind::Set => "gauge",
        _ => "summary",
    }
}

/// A name a family claims in the exposition, kept as where to rebuild it (see
/// [`claim_name`]): the family's first row, whether it was renamed `<name>_<type>`, and
/// which of [`SUFFIXES`] it ends with.
#[derive(Clone, Copy)]
pub(super) struct Claim {
    hash: u64,
    row: u32,
    renamed: bool,
    suffix: u8,
}

/// The sample-name suffixes a family may use.
pub(super) const SUFFIXES: [&str; 4] = ["", "_total", "_sum", "_count"];

/// Which [`SUFFIXES`] a family of `kind` claims: its own name and every sample name.
pub(super) fn claim_suffixes(kind: MetricKind) -> &'static [u8] {
    match prom_type(kind) {
        "counter" => &[0, 1],
        "summary" => &[0, 2, 3],
        _ => &[0],
    }
}

/// Writes into `out` the name the family `base` of `kind` claims with `suffix`.
pub(super) fn claim_name(
    out: &mut String,
    base: &str,
    kind: MetricKind,
    renamed: bool,
    suffix: u8,
) {
    out.clear();
    out.push_str(base);
    if renamed {
        out.push('_');
        out.push_str(kind.name());
    }
    out.push_str(SUFFIXES[usize::from(suffix)]);
}

/// A cumulative total after adding a window's `v`. A total that would stop being a finite
/// number starts again from `v`, which Prometheus reads as a counter reset; a non-finite `v`
/// (which intake already refuses) is left out. `/metrics` never shows `+Inf` or `NaN`.
pub(super) fn cumulate(total: f64, v: f64) -> f64 {
    if !v.is_finite() {
        return total;
    }
    let next = total + v;
    if next.is_finite() {
        next
    } else {
        v
    }
}
