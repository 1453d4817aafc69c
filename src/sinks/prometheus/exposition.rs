//! The exposed state: one entry per series with cumulative counters, last gauges, summaries
//! and classic histograms, bounded and expiring, renamed by the mapping file once per
//! context. The family layout that resolves name clashes when it is visited is `visit.rs`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::HashTable;

use super::mapping::{Mapper, Observer};
use super::mapping_match::{mapped_context, Mapped};
use super::observe::{Hist, Summary};
use super::visit::{visit_rows, FamilyRef, RowIn};
use crate::aggregate::{Flush, Quantiles, SeriesValue};
use crate::base::cpu::{prefetch_write, PREFETCH_AHEAD};
use crate::model::{Context, MetricKind};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Counter(f64),
    Gauge(f64),
    /// Boxed: most series are counters and gauges, which then stay small.
    Summary(Box<Summary>),
    Histogram(Box<Hist>),
}

/// One exposed series. The family and label strings are not kept: they are rendered from
/// the context (shared with the aggregator, or made once by the mapping) at scrape time,
/// which keeps the entry small.
#[derive(Debug)]
pub(super) struct Entry {
    /// `Context::hash_code` of `ctx`.
    hash: u64,
    ctx: Arc<Context>,
    /// Unix seconds of the last flush that carried this series.
    updated: u64,
    /// Index into `Exposition::shapes`.
    shape: u32,
    value: Value,
}

/// One sample of the exposed state, as [`Exposition::visit`] hands it out.
#[derive(Debug, Clone, Copy)]
pub struct SampleRef<'a> {
    /// The family's exposed name (after clash renaming), without `suffix`.
    pub name: &'a str,
    /// `""`, `"_total"`, `"_sum"`, `"_count"` or `"_bucket"`.
    pub suffix: &'static str,
    /// The series' context: its labels are [`label_pairs`](super::label_pairs) of it.
    pub ctx: &'a Context,
    /// The same labels, rendered for the text format.
    pub labels: &'a str,
    /// The `quantile` label of a summary quantile sample.
    pub quantile: Option<f64>,
    /// The `le` label of a histogram bucket sample (`+Inf` for the last).
    pub le: Option<f64>,
    /// The sample's value.
    pub value: f64,
}

/// Receives the exposed state family by family.
pub trait Visitor {
    /// A new family starts.
    fn family(&mut self, f: &FamilyRef<'_>);
    /// One sample of the current family.
    fn sample(&mut self, s: &SampleRef<'_>);
}

/// How series are named and shaped beyond the defaults: the mapping file and the default
/// export of timers, histograms and distributions (`prometheus.observer_type`).
#[derive(Debug, Clone)]
pub struct ExposeOptions {
    /// statsd_exporter's mapping file, compiled.
    pub mapper: Option<Arc<Mapper>>,
    /// Sampled kinds no rule shapes: a summary (the default) or a histogram.
    pub observer: Observer,
}

impl Default for ExposeOptions {
    fn default() -> Self {
        ExposeOptions {
            mapper: None,
            observer: Observer::Summary(None),
        }
    }
}

/// The mapping file and histogram defaults a reload put in effect, for every exposition that
/// follows it (the scrape endpoint's and remote write's): each takes the new options at its
/// next window. One atomic load per window otherwise.
#[derive(Debug, Default)]
pub struct Reshaper {
    generation: std::sync::atomic::AtomicU64,
    options: std::sync::Mutex<Option<ExposeOptions>>,
}

impl Reshaper {
    /// Puts `opts` in effect from the next window.
    pub fn set(&self, opts: ExposeOptions) {
        *crate::base::lock(&self.options) = Some(opts);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The options set since generation `seen` (which it moves on), if any.
    fn since(&self, seen: &mut u64) -> Option<ExposeOptions> {
        let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if g == *seen {
            return None;
        }
        *seen = g;
        crate::base::lock(&self.options).clone()
    }
}

/// A shape with every default filled in.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    observer: Observer,
    /// Seconds; `u64::MAX`: never expires.
    ttl: u64,
    scale: f64,
    /// What a timer's values are divided by before `scale`: 1000 with a mapping file
    /// (statsd_exporter exports `ms` timers in seconds), else 1.
    timer_div: f64,
    help: Option<Arc<str>>,
}

/// What the mapping made of one context, kept while the context is seen.
struct Cached {
    hash: u64,
    orig: Arc<Context>,
    /// The exported context and its hash; `None`: dropped by a rule.
    target: Option<(u64, Arc<Context>)>,
    shape: u32,
    seen: u64,
}

/// What a Prometheus scrape would see: one entry per series, with cumulative counters,
/// summary and histogram sums and counts, last gauge values and last-window quantiles.
/// Bounded by `max_series`; a series unseen for its ttl is forgotten. The scrape endpoint and
/// remote write each keep one, so both expose the same names, labels and values.
pub struct Exposition {
    series: HashTable<Entry>,
    /// No entry was updated before this (unix seconds): while `now - oldest < min_ttl` nothing
    /// can expire and the expiry pass is skipped.
    oldest: u64,
    percentiles: Arc<[f64]>,
    /// Shape 0: series no rule shaped; then one per mapping rule.
    shapes: Arc<[Resolved]>,
    min_ttl: u64,
    max_series: usize,
    mapper: Option<Arc<Mapper>>,
    /// The mapping's outcome per context (keyed by the context's own hash): mapping runs once
    /// per context, when it is first seen, not per line or window.
    mapped: HashTable<Cached>,
    /// Series that expired since the last [`Exposition::take_expired`], when tracked.
    expired: Option<Vec<(Arc<Context>, Value, u32)>>,
    /// Counter windows refused because they would have lowered a `_total`.
    negative: u64,
    /// Contexts mapped, left unmapped, dropped by a rule.
    outcomes: [u64; 3],
    /// `prometheus.series_ttl`, which shapes without a ttl of their own get.
    default_ttl: Duration,
    /// Where reloaded options come from, and the generation taken last.
    reshaper: Option<(Arc<Reshaper>, u64)>,
}
impl Exposition {
    /// An empty state keeping at most `max_series` series, each for `ttl` (at least a second)
    /// after its last window, without a mapping file, exporting sampled kinds as summaries.
    pub fn new(ttl: Duration, max_series: usize) -> Exposition {
        Exposition::with_options(ttl, max_series, &ExposeOptions::default())
    }

    /// As [`Exposition::new`], shaped by `opts`.
    pub fn with_options(ttl: Duration, max_series: usize, opts: &ExposeOptions) -> Exposition {
        let mut e = Exposition {
            series: HashTable::new(),
            oldest: 0,
            percentiles: Arc::from(Vec::new()),
            min_ttl: 1,
            shapes: Arc::from(Vec::new()),
            max_series,
            mapper: None,
            mapped: HashTable::new(),
            expired: None,
            negative: 0,
            outcomes: [0; 3],
            default_ttl: ttl,
            reshaper: None,
        };
        e.set_options(opts);
        e
    }

    /// Takes the options a reload sets in `r` from the next window on.
    pub fn follow(&mut self, r: Arc<Reshaper>) {
        let seen = r.generation.load(std::sync::atomic::Ordering::Acquire);
        self.reshaper = Some((r, seen));
    }

    /// Puts `opts` in effect: the mapping is applied anew to every context (the outcomes
    /// kept so far are forgotten); series already exposed keep their values, and a series
    /// whose context now maps elsewhere stops being updated and expires.
    pub fn set_options(&mut self, opts: &ExposeOptions) {
        let secs = |d: Duration| {
            if d.is_zero() {
                u64::MAX
            } else {
                d.as_secs().max(1)
            }
        };
        let default_ttl = self.default_ttl.as_secs().max(1);
        let timer_div = if opts.mapper.is_some() { 1000.0 } else { 1.0 };
        let resolve = |s: Option<&super::mapping::Shape>| Resolved {
            observer: {
                let global_hist = matches!(opts.observer, Observer::Histogram(_));
                let buckets = || match &opts.observer {
                    Observer::Histogram(b) => Arc::clone(b),
                    Observer::Summary(_) => super::mapping::DEFAULT_BUCKETS.into(),
                };
                match s {
                    None => opts.observer.clone(),
                    Some(s) if s.histogram.unwrap_or(global_hist) => {
                        Observer::Histogram(s.buckets.clone().unwrap_or_else(buckets))
                    }
                    Some(s) => Observer::Summary(s.quantiles.clone()),
                }
            },
            ttl: s.and_then(|s| s.ttl).map_or(default_ttl, secs),
            scale: s.and_then(|s| s.scale).unwrap_or(1.0),
            timer_div,
            help: s.and_then(|s| s.help.as_deref()).map(Arc::from),
        };
        let shapes: Vec<Resolved> = match &opts.mapper {
            None => vec![resolve(None)],
            Some(m) => m.shapes.iter().map(|s| resolve(Some(s))).collect(),
        };
        self.min_ttl = shapes.iter().map(|s| s.ttl).min().unwrap_or(default_ttl);
        let n = shapes.len() as u32;
        self.shapes = shapes.into();
        self.mapper = opts.mapper.clone();
        self.mapped.clear();
        // Rows of rules the new file does not have take the defaults' shape (ttl, help).
        for e in self.series.iter_mut() {
            if e.shape >= n {
                e.shape = 0;
            }
        }
        // Expiry is checked again at the next window with the new ttls.
        self.oldest = 0;
    }

    /// Keeps the series that expire for [`Exposition::take_expired`] (remote write sends a
    /// staleness marker for each).
    pub fn track_expired(&mut self) {
        self.expired.get_or_insert_with(Vec::new);
    }

    /// The series that expired since the last call, to visit as they were last exposed.
    pub fn take_expired(&mut self) -> Snapshot {
        Snapshot {
            rows: self
                .expired
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default(),
            percentiles: Arc::clone(&self.percentiles),
            shapes: Arc::clone(&self.shapes),
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

    /// Counter windows refused so far because their increment was negative.
    pub fn negative_rejected(&self) -> u64 {
        self.negative
    }

    /// Contexts the mapping file mapped, left unmapped and dropped, so far.
    pub fn mapping_outcomes(&self) -> [u64; 3] {
        self.outcomes
    }

    /// Folds one window in; returns how many new series were refused at `max_series`.
    pub fn update(&mut self, flush: &Flush) -> u64 {
        let reloaded = self.reshaper.as_mut().and_then(|(r, seen)| r.since(seen));
        if let Some(opts) = reloaded {
            self.set_options(&opts);
        }
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
        let mapper = self.mapper.clone();
        let shapes = Arc::clone(&self.shapes);
        let mut scratch = Vec::new();
        for (i, s) in flush.series.iter().enumerate() {
            if creating {
                if let Some(next) = flush.series.get(i + PREFETCH_AHEAD) {
                    prefetch_write(Arc::as_ptr(&next.ctx) as usize);
                }
            }
            if let SeriesValue::Counter(v) = s.value {
                // A cumulative counter never goes down (as in statsd_exporter): a window whose
                // increments add up to less than zero is refused and counted.
                if v < 0.0 {
                    self.negative += 1;
                    continue;
                }
            }
            let mapped;
            let (ctx, hash, shape) = match &mapper {
                None => (&s.ctx, s.hash, 0),
                Some(m) => {
                    let max = self.max_series;
                    match resolve(&mut self.mapped, &mut self.outcomes, max, m, s, now) {
                        None => continue,
                        Some((c, h, sh)) => {
                            mapped = c;
                            (&*mapped, h, sh)
                        }
                    }
                }
            };
            let full = self.series.len() >= self.max_series;
            let rs = &shapes[shape as usize];
            // The aggregator hands over the same Arc window after window while it holds the
            // context, so the pointer comparison settles almost every lookup.
            let e = match self.series.entry(
                hash,
                |e| e.hash == hash && (Arc::ptr_eq(&e.ctx, ctx) || *e.ctx == **ctx),
                |e| e.hash,
            ) {
                TableEntry::Occupied(o) => o.into_mut(),
                TableEntry::Vacant(v) => {
                    if full {
                        dropped += 1;
                        continue;
                    }
                    // An OTLP histogram keeps the bounds it came with.
                    let otlp = match ctx.kind() {
                        MetricKind::Distribution => crate::model::bounds::lookup(s.hash),
                        _ => None,
                    };
                    let value = match (ctx.kind(), otlp) {
                        (MetricKind::Counter, _) => Value::Counter(0.0),
                        (MetricKind::Gauge | MetricKind::Set, _) => Value::Gauge(0.0),
                        (_, Some(b)) => Value::Histogram(Box::new(Hist::new(b))),
                        _ => match &rs.observer {
                            Observer::Summary(qs) => Value::Summary(Box::new(Summary {
                                quantiles: Quantiles::new(),
                                qs: qs.clone(),
                                sum: 0.0,
                                count: 0,
                            })),
                            Observer::Histogram(b) => {
                                Value::Histogram(Box::new(Hist::new(Arc::clone(b))))
                            }
                        },
                    };
                    v.insert(Entry {
                        hash,
                        ctx: Arc::clone(ctx),
                        updated: now,
                        shape,
                        value,
                    })
                    .into_mut()
                }
            };
            e.updated = now;
            let (div, scale) = if ctx.kind() == MetricKind::Timer {
                (rs.timer_div, rs.scale)
            } else {
                (1.0, rs.scale)
            };
            match (&mut e.value, &s.value) {
                (Value::Counter(total), SeriesValue::Counter(v)) => {
                    *total = cumulate(*total, *v * rs.scale);
                }
                (Value::Gauge(g), SeriesValue::Gauge(v)) if v.is_finite() => *g = *v * rs.scale,
                (Value::Gauge(g), SeriesValue::Set(n)) => *g = *n as f64,
                (Value::Summary(sm), SeriesValue::Samples(h)) => {
                    sm.add(h, div, scale, &mut scratch)
                }
                (Value::Histogram(hi), SeriesValue::Samples(h)) => hi.add(h, div, scale),
                _ => {}
            }
        }
        if now.saturating_sub(self.oldest) >= self.min_ttl {
            let mut oldest = now;
            let expired = &mut self.expired;
            self.series.retain(|e| {
                let keep = now.saturating_sub(e.updated) < shapes[e.shape as usize].ttl;
                if keep {
                    oldest = oldest.min(e.updated);
                } else if let Some(x) = expired.as_mut() {
                    x.push((Arc::clone(&e.ctx), e.value.clone(), e.shape));
                }
                keep
            });
            self.oldest = oldest;
            let longest = shapes
                .iter()
                .map(|s| s.ttl)
                .filter(|t| *t != u64::MAX)
                .max()
                .unwrap_or(self.min_ttl);
            self.mapped
                .retain(|c| now.saturating_sub(c.seen) < longest.max(self.min_ttl));
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
                .map(|e| (Arc::clone(&e.ctx), e.value.clone(), e.shape))
                .collect(),
            percentiles: Arc::clone(&self.percentiles),
            shapes: Arc::clone(&self.shapes),
        }
    }

    /// Hands every exposed sample to `v`, families in order of name then statsd kind, clashes
    /// resolved as the module docs say; returns how many series were left out for clashes.
    pub fn visit(&self, v: &mut impl Visitor) -> u64 {
        let rows: Vec<RowIn<'_>> = self
            .series
            .iter()
            .map(|e| (&e.ctx, &e.value, help(&self.shapes, e.shape)))
            .collect();
        visit_rows(&rows, &self.percentiles, v)
    }
}

/// The exported context, its hash and shape for the series `s` (`None`: a rule drops it),
/// from the mapping's outcome for its context, computed the first time it is seen and kept in
/// `cache` (borrowed from there: a known context costs one probe, no reference count).
fn resolve<'t>(
    cache: &'t mut HashTable<Cached>,
    outcomes: &mut [u64; 3],
    max: usize,
    mapper: &Mapper,
    s: &crate::aggregate::Series,
    now: u64,
) -> Option<(Cow<'t, Arc<Context>>, u64, u32)> {
    let (ctx, hash) = (&s.ctx, s.hash);
    let full = cache.len() >= max;
    let eq = |c: &Cached| c.hash == hash && (Arc::ptr_eq(&c.orig, ctx) || *c.orig == **ctx);
    let c = match cache.entry(hash, eq, |c| c.hash) {
        TableEntry::Occupied(o) => {
            let c = o.into_mut();
            c.seen = now;
            c
        }
        TableEntry::Vacant(v) => {
            let (target, shape) = match mapper.map(ctx.name(), ctx.kind()) {
                Mapped::Unmapped => {
                    outcomes[1] += 1;
                    (Some((hash, Arc::clone(ctx))), 0)
                }
                Mapped::Drop => {
                    outcomes[2] += 1;
                    (None, 0)
                }
                Mapped::Map {
                    name,
                    labels,
                    honor_labels,
                    shape,
                } => {
                    outcomes[0] += 1;
                    let t = Arc::new(mapped_context(ctx, &name, &labels, honor_labels));
                    (Some((t.hash_code(), t)), shape)
                }
            };
            // Bounded like the series: past `max` contexts the outcome is computed again
            // each window instead of kept (correct, only slower).
            if full {
                return target.map(|(h, t)| (Cow::Owned(t), h, shape));
            }
            v.insert(Cached {
                hash,
                orig: Arc::clone(ctx),
                target,
                shape,
                seen: now,
            })
            .into_mut()
        }
    };
    let shape = c.shape;
    c.target
        .as_ref()
        .map(|(h, t)| (Cow::Borrowed(t), *h, shape))
}

fn help(shapes: &[Resolved], shape: u32) -> Option<&str> {
    shapes.get(shape as usize).and_then(|s| s.help.as_deref())
}

/// The exposed series copied out of an [`Exposition`].
pub struct Snapshot {
    pub(super) rows: Vec<(Arc<Context>, Value, u32)>,
    percentiles: Arc<[f64]>,
    shapes: Arc<[Resolved]>,
}

impl Snapshot {
    /// As [`Exposition::visit`].
    pub fn visit(&self, v: &mut impl Visitor) -> u64 {
        let rows: Vec<RowIn<'_>> = self
            .rows
            .iter()
            .map(|(c, x, sh)| (c, x, help(&self.shapes, *sh)))
            .collect();
        visit_rows(&rows, &self.percentiles, v)
    }

    /// Whether it holds no series.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
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
