//! Prometheus scrape endpoint state and rendering (text format 0.0.4 and OpenMetrics 1.0).
//!
//! Each flush updates one entry per series: counters accumulate into cumulative `_total`
//! counters, gauges and sets keep their last value, and timers, histograms and distributions
//! become summaries (quantiles of the last window that had samples, cumulative `_sum` and
//! `_count`). A series that receives nothing for `prometheus.series_ttl` disappears.
//!
//! Naming rules (also in the README):
//! - metric names: every character outside `[a-zA-Z0-9_:]` becomes `_`; a leading digit gets a
//!   `_` prefix. The `tallyd_` prefix is reserved for tallyd's own metrics.
//! - tags `key:value` become labels; the key is sanitised to `[a-zA-Z0-9_]` (leading digit gets a
//!   `_` prefix; `__*`, `quantile` and `le` get an `exported_` prefix). Tags without a value, or
//!   with an empty one, are not labels (as in statsd_exporter). Several values for one key are
//!   joined with `,` in sorted order.
//! - clashes: families are laid out in order of name, then statsd type (counter, gauge, set,
//!   timer, histogram, distribution). A family whose names are taken by an earlier one is
//!   renamed `<name>_<type>` (for example `latency_timer`); if that is taken too, it is left out.
//!   Two series of one family with the same labels keep the first. What is left out is counted
//!   in `tallyd_prometheus_conflicting_series`; a scrape never fails.

pub mod config;

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::HashTable;

use crate::aggregate::{Flush, Quantiles, SeriesValue};
use crate::base::cpu::{prefetch_write, PREFETCH_AHEAD};
use crate::base::expo;
pub use crate::base::expo::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::base::lock;
use crate::component::{self, Error, Running, Stage};
use crate::model::{Context, MetricKind};
use crate::sinks::Sink;
use crate::telemetry::Telemetry;

/// Sanitises a statsd name into the Prometheus metric-name charset.
pub fn sanitize_name(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 1);
    sanitize_name_into(&mut s, name);
    s
}

/// Appends `name` sanitised (see [`sanitize_name`]) to `out`.
fn sanitize_name_into(out: &mut String, name: &str) {
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
}

/// Sanitises a tag key into a label name (see the module docs).
pub fn sanitize_label(key: &str) -> String {
    let mut s = String::with_capacity(key.len() + 1);
    sanitize_label_into(&mut s, key);
    s
}

/// Appends `key` sanitised (see [`sanitize_label`]) to `out`.
fn sanitize_label_into(out: &mut String, key: &str) {
    let start = out.len();
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    let s = &out[start..];
    if s.starts_with("__") || s == "quantile" || s == "le" {
        out.insert_str(start, "exported_");
    }
}

/// Renders a context's tags as a label string (without braces).
pub fn render_labels(ctx: &Context) -> String {
    let mut out = String::new();
    render_labels_into(&mut out, ctx, &mut LabelScratch::default());
    out
}

/// Reusable buffers for [`render_labels_into`], so that rendering many series allocates
/// nothing per series.
#[derive(Default)]
struct LabelScratch<'a> {
    keys: String,
    /// Sanitised key (a range of `keys`) and value of each label.
    pairs: Vec<(u32, u32, &'a str)>,
}

/// Appends a context's tags as a label string (without braces) to `out`.
fn render_labels_into<'a>(out: &mut String, ctx: &'a Context, scratch: &mut LabelScratch<'a>) {
    scratch.keys.clear();
    scratch.pairs.clear();
    for (k, v) in ctx
        .tags()
        .filter_map(|t| t.split_once(':'))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
    {
        let ks = scratch.keys.len() as u32;
        sanitize_label_into(&mut scratch.keys, k);
        scratch.pairs.push((ks, scratch.keys.len() as u32, v));
    }
    let keys = &scratch.keys;
    let key = |p: &(u32, u32, &str)| &keys[p.0 as usize..p.1 as usize];
    // Stable: the values of one key stay in their (sorted) tag order.
    scratch.pairs.sort_by(|a, b| key(a).cmp(key(b)));
    let pairs = &scratch.pairs;
    let mut i = 0;
    while i < pairs.len() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key(&pairs[i]));
        out.push_str("=\"");
        expo::escape_label_value(out, pairs[i].2);
        let mut j = i + 1;
        while j < pairs.len() && key(&pairs[j]) == key(&pairs[i]) {
            out.push(',');
            expo::escape_label_value(out, pairs[j].2);
            j += 1;
        }
        out.push('"');
        i = j;
    }
}

/// A context's tags as labels, sorted by name: sanitised keys (see the module docs), valueless
/// tags left out, several values of one key joined with `,` in sorted order. Both the scrape
/// endpoint and remote write name series with this.
pub fn label_pairs(ctx: &Context) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, &str)> = ctx
        .tags()
        .filter_map(|t| t.split_once(':'))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .map(|(k, v)| (sanitize_label(k), v))
        .collect();
    // Stable by key: the values of one key stay in tag order, as in the text format.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match out.last_mut() {
            Some((lk, lv)) if *lk == k => {
                lv.push(',');
                lv.push_str(v);
            }
            _ => out.push((k, v.to_string())),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Counter(f64),
    Gauge(f64),
    /// Boxed: most series are counters and gauges, which then stay small.
    Summary(Box<Summary>),
}

#[derive(Debug, Clone, PartialEq)]
struct Summary {
    /// Inline for up to four percentiles: a new summary series is one allocation.
    quantiles: Quantiles,
    sum: f64,
    count: u64,
}

/// One exposed series. The family and label strings are not kept: they are rendered from
/// the context (shared with the aggregator) at scrape time, which keeps the entry small.
#[derive(Debug)]
struct Entry {
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
    /// The series' context: its labels are [`label_pairs`] of it.
    pub ctx: &'a Context,
    /// The same labels, rendered for the text format.
    pub labels: &'a str,
    /// The `quantile` label of a summary quantile sample.
    pub quantile: Option<f64>,
    pub value: f64,
}

/// Receives the exposed state family by family.
pub trait Visitor {
    /// A new family starts: its exposed name, statsd kind and name before sanitising.
    fn family(&mut self, name: &str, kind: MetricKind, original: &str);
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
                (Value::Counter(total), SeriesValue::Counter(v)) => *total += v,
                (Value::Gauge(g), SeriesValue::Gauge(v)) => *g = *v,
                (Value::Gauge(g), SeriesValue::Set(n)) => *g = *n as f64,
                (Value::Summary(sm), SeriesValue::Samples(h)) => {
                    sm.quantiles.clear();
                    sm.quantiles.extend_from_slice(h.quantiles());
                    sm.sum += h.sum();
                    sm.count += h.count();
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
    rows: Vec<(Arc<Context>, Value)>,
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
struct Row<'a> {
    start: u32,
    family_end: u32,
    end: u32,
    ctx: &'a Arc<Context>,
    value: &'a Value,
}

fn visit_rows(rows: &[(&Arc<Context>, &Value)], percentiles: &[f64], v: &mut impl Visitor) -> u64 {
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

/// The Prometheus sink: keeps the exposed state, renders it on scrape.
///
/// Folding a window into the state (a table probe and a write per series: milliseconds at
/// 100,000 series) happens on the sink's own thread, as the Datadog and alert sinks do their
/// work on theirs, so the flusher only queues the window. A scrape folds whatever is still
/// queued before it copies the state, so `/metrics` always shows the newest window.
pub struct Prometheus {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<Exposition>,
    /// Windows not folded in yet, oldest first. One arrives per flush interval and the
    /// folding thread takes it at once, so this holds one or two; past [`MAX_PENDING`] (the
    /// state held by something for whole windows) the flusher folds them itself.
    pending: Mutex<VecDeque<Arc<Flush>>>,
    wake: Condvar,
    telemetry: Arc<Telemetry>,
}

/// Windows queued before the flusher stops handing them over and folds them itself.
const MAX_PENDING: usize = 4;

impl Prometheus {
    pub fn new(
        ttl: std::time::Duration,
        max_series: usize,
        telemetry: Arc<Telemetry>,
    ) -> Prometheus {
        let shared = Arc::new(Shared {
            state: Mutex::new(Exposition::new(ttl, max_series)),
            pending: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            telemetry,
        });
        let weak = Arc::downgrade(&shared);
        // Without the thread the sink still works (consume folds windows itself past
        // MAX_PENDING and every scrape folds the rest), so a spawn failure is only logged.
        if let Err(e) = std::thread::Builder::new()
            .name("prometheus".into())
            .spawn(move || fold_loop(&weak))
        {
            tracing::warn!(error = %e, "cannot start the Prometheus folding thread");
        }
        Prometheus { shared }
    }

    /// Folds every queued window into the state now, waiting for the state's lock. Benches
    /// call it to time the whole update; the sink's own thread does this otherwise.
    pub fn sync(&self) {
        let s = &*self.shared;
        s.fold(&mut lock(&s.state));
    }

    /// Renders every exposed series, then tallyd's own metrics, as one string.
    pub fn render(&self, om: bool) -> String {
        let mut body = String::new();
        self.render_to(om, usize::MAX, &mut |piece| {
            if body.is_empty() {
                body = piece;
            } else {
                body.push_str(&piece);
            }
            true
        });
        body
    }

    /// Renders as [`Prometheus::render`] does, handing the text to `emit` in pieces of about
    /// `chunk` bytes as it is produced, so that a scrape of 100,000 series never holds the
    /// whole body (tens of megabytes) at once. When `emit` returns false (the scraper went
    /// away), the rest is not formatted.
    pub fn render_to(&self, om: bool, chunk: usize, emit: &mut dyn FnMut(String) -> bool) {
        // Fold what is still queued, copy what is exposed and let go of the lock before the
        // slow part (names, labels, sorting, formatting): a scrape holds up the folding thread
        // only for the copy, and never the flusher, which only queues.
        let s = &*self.shared;
        let snapshot = {
            let mut state = lock(&s.state);
            s.fold(&mut state);
            state.snapshot()
        };
        let mut w = TextWriter {
            out: String::with_capacity(chunk.min(64 * 1024) + 4096),
            om,
            with_quantile: String::new(),
            chunk,
            emit,
            open: true,
        };
        let conflicts = snapshot.visit(&mut w);
        drop(snapshot);
        s.telemetry.prom_conflicts.store(conflicts, Relaxed);
        if !w.open {
            return;
        }
        let mut out = w.out;
        s.telemetry.render(&mut out, om);
        if om {
            out.push_str("# EOF\n");
        }
        (w.emit)(out);
    }
}

impl Sink for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn consume(&self, flush: &Arc<Flush>) {
        let s = &*self.shared;
        let queued = {
            let mut pending = lock(&s.pending);
            pending.push_back(Arc::clone(flush));
            pending.len()
        };
        if queued > MAX_PENDING {
            // Never expected (see `Shared::pending`); bounded all the same.
            s.fold(&mut lock(&s.state));
        } else {
            s.wake.notify_one();
        }
    }
}

impl Shared {
    /// Folds the queued windows into `state`, oldest first.
    fn fold(&self, state: &mut Exposition) {
        // Not `while let`: the pending lock must not be held across the update.
        loop {
            let next = lock(&self.pending).pop_front();
            let Some(flush) = next else { return };
            let t0 = Instant::now();
            let dropped = state.update(&flush);
            let t = &self.telemetry;
            t.prom_update_ns
                .store(t0.elapsed().as_nanos() as u64, Relaxed);
            t.prom_series.store(state.len() as u64, Relaxed);
            t.prom_series_dropped.fetch_add(dropped, Relaxed);
        }
    }
}

/// The folding thread: waits for queued windows and folds them in; ends once the sink is gone.
fn fold_loop(shared: &Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        {
            let pending = lock(&s.pending);
            if pending.is_empty() {
                // The timeout only bounds how long a dropped sink keeps this thread.
                drop(
                    s.wake
                        .wait_timeout(pending, Duration::from_secs(1))
                        .unwrap_or_else(|p| p.into_inner()),
                );
            }
        }
        s.fold(&mut lock(&s.state));
    }
}

fn prom_type(kind: MetricKind) -> &'static str {
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
struct Claim {
    hash: u64,
    row: u32,
    renamed: bool,
    suffix: u8,
}

/// The sample-name suffixes a family may use.
const SUFFIXES: [&str; 4] = ["", "_total", "_sum", "_count"];

/// Which [`SUFFIXES`] a family of `kind` claims: its own name and every sample name.
fn claim_suffixes(kind: MetricKind) -> &'static [u8] {
    match prom_type(kind) {
        "counter" => &[0, 1],
        "summary" => &[0, 2, 3],
        _ => &[0],
    }
}

/// Writes into `out` the name the family `base` of `kind` claims with `suffix`.
fn claim_name(out: &mut String, base: &str, kind: MetricKind, renamed: bool, suffix: u8) {
    out.clear();
    out.push_str(base);
    if renamed {
        out.push('_');
        out.push_str(kind.name());
    }
    out.push_str(SUFFIXES[usize::from(suffix)]);
}

/// Writes the text format (or OpenMetrics), handing it on in pieces (see
/// [`Prometheus::render_to`]).
struct TextWriter<'a> {
    out: String,
    om: bool,
    /// Reused for the labels of quantile samples.
    with_quantile: String,
    /// `out` is handed to `emit` once it holds this many bytes.
    chunk: usize,
    emit: &'a mut dyn FnMut(String) -> bool,
    /// False once `emit` refused a piece: nothing more is formatted.
    open: bool,
}

impl TextWriter<'_> {
    fn hand_on_if_full(&mut self) {
        if self.out.len() >= self.chunk {
            let next = String::with_capacity(self.out.capacity());
            self.open = (self.emit)(std::mem::replace(&mut self.out, next));
        }
    }
}

impl Visitor for TextWriter<'_> {
    fn family(&mut self, name: &str, kind: MetricKind, original: &str) {
        if !self.open {
            return;
        }
        expo::family_header(
            &mut self.out,
            name,
            prom_type(kind),
            &format!("statsd {} {original}", kind.name()),
            self.om,
        );
        self.hand_on_if_full();
    }

    fn sample(&mut self, s: &SampleRef<'_>) {
        if !self.open {
            return;
        }
        match s.quantile {
            None => expo::sample(&mut self.out, s.name, s.suffix, s.labels, s.value),
            Some(q) => {
                let l = &mut self.with_quantile;
                l.clear();
                l.push_str(s.labels);
                if !l.is_empty() {
                    l.push(',');
                }
                l.push_str("quantile=\"");
                expo::value_into(l, q);
                l.push('"');
                expo::sample(&mut self.out, s.name, s.suffix, l, s.value);
            }
        }
        self.hand_on_if_full();
    }
}

/// Starts the Prometheus sink (always on): the state `/metrics` renders, folded from every
/// window on its own thread.
pub fn start(
    cfg: &config::PrometheusConfig,
    ctx: &mut component::Context,
) -> Result<Running<Arc<Prometheus>>, Error> {
    let p = Arc::new(Prometheus::new(
        cfg.series_ttl,
        cfg.max_series,
        Arc::clone(&ctx.telemetry),
    ));
    ctx.add_sink(p.clone());
    Ok(Running::ok(
        "prometheus",
        Stage::Flush,
        format!("at most {} series", cfg.max_series),
        p,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Series;
    use std::time::Duration;

    use crate::sinks::testutil::summary;

    fn flush(ts: u64, series: Vec<(MetricKind, &str, &[&str], SeriesValue)>) -> Arc<Flush> {
        Arc::new(crate::sinks::testutil::flush(ts, series))
    }

    fn sink() -> Prometheus {
        Prometheus::new(
            Duration::from_secs(300),
            1000,
            Arc::new(Telemetry::default()),
        )
    }

    fn user_part(text: &str) -> String {
        text.split("# HELP tallyd_build_info")
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn exposition_of_each_kind() {
        let p = sink();
        p.consume(&flush(
            0,
            vec![
                (
                    MetricKind::Counter,
                    "page.views",
                    &["env:prod", "flag"],
                    SeriesValue::Counter(3.0),
                ),
                (MetricKind::Gauge, "temp-c", &[], SeriesValue::Gauge(-1.5)),
                (MetricKind::Set, "users", &[], SeriesValue::Set(4)),
                (
                    MetricKind::Timer,
                    "db.query",
                    &["db:main"],
                    summary(&[1.0, 2.0, 3.0]),
                ),
            ],
        ));
        p.consume(&flush(
            10,
            vec![(
                MetricKind::Counter,
                "page.views",
                &["env:prod", "flag"],
                SeriesValue::Counter(2.0),
            )],
        ));
        let text = user_part(&p.render(false));
        let want = "\
# HELP db_query statsd timer db_query
# TYPE db_query summary
db_query{db=\"main\",quantile=\"0.5\"} 2
db_query{db=\"main\",quantile=\"0.99\"} 3
db_query_sum{db=\"main\"} 6
db_query_count{db=\"main\"} 3
# HELP page_views_total statsd counter page_views
# TYPE page_views_total counter
page_views_total{env=\"prod\"} 5
# HELP temp_c statsd gauge temp_c
# TYPE temp_c gauge
temp_c -1.5
# HELP users statsd set users
# TYPE users gauge
users 4
";
        assert_eq!(text, want);
        let om = p.render(true);
        assert!(
            om.contains("# TYPE page_views counter\npage_views_total{env=\"prod\"} 5\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn windows_are_folded_in_order_off_the_flusher_and_scrapes_see_the_newest() {
        let p = sink();
        let counter = |ts, v| {
            flush(
                ts,
                vec![(MetricKind::Counter, "hits", &[], SeriesValue::Counter(v))],
            )
        };
        // While the state is held (by a scrape's copy, say), consume only queues: on this
        // thread, waiting for the lock would deadlock the test.
        let held = lock(&p.shared.state);
        for (ts, v) in [(0, 1.0), (10, 2.0), (20, 4.0)] {
            p.consume(&counter(ts, v));
        }
        assert_eq!(held.len(), 0);
        drop(held);
        // A scrape folds what is still queued, oldest first, before it copies.
        assert!(user_part(&p.render(false)).contains("hits_total 7\n"));

        // Without a scrape, the sink's own thread folds the window.
        p.consume(&counter(30, 8.0));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !lock(&p.shared.pending).is_empty() {
            assert!(std::time::Instant::now() < deadline, "folding thread");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Folded by that thread (nothing else ran): the state holds the new total already.
        let rows = lock(&p.shared.state).snapshot().rows;
        assert!(
            matches!(rows.as_slice(), [(_, Value::Counter(v))] if *v == 15.0),
            "{rows:?}"
        );

        // Racing a scraper thread and the folding thread: every window is folded exactly once.
        let p = Arc::new(sink());
        let scraper = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                for _ in 0..100 {
                    p.render(false);
                }
            })
        };
        for i in 0..200u64 {
            p.consume(&counter(i * 10, 1.0));
        }
        scraper.join().expect("scraper");
        assert!(user_part(&p.render(false)).contains("hits_total 200\n"));
    }

    #[test]
    fn label_rules() {
        let c = Context::from_unsorted(
            MetricKind::Gauge,
            "m",
            &[
                "env:b",
                "env:a",
                "1st:x",
                "__name__:y",
                "quantile:q",
                "my.key:va\"l\\ue",
                "bare",
                "empty:",
                "url:http://x",
            ],
        );
        assert_eq!(
            render_labels(&c),
            "_1st=\"x\",env=\"a,b\",exported___name__=\"y\",exported_quantile=\"q\",my_key=\"va\\\"l\\\\ue\",url=\"http://x\""
        );
        assert_eq!(sanitize_name("9lives.x-y:z"), "_9lives_x_y:z");
    }

    #[test]
    fn clashes_never_break_the_scrape() {
        let p = sink();
        p.consume(&flush(
            0,
            vec![
                (MetricKind::Counter, "foo", &[], SeriesValue::Counter(1.0)),
                (MetricKind::Timer, "foo", &[], summary(&[1.0])),
                (MetricKind::Histogram, "foo", &[], summary(&[2.0])),
                (
                    MetricKind::Gauge,
                    "foo_timer_count",
                    &[],
                    SeriesValue::Gauge(1.0),
                ),
                (MetricKind::Gauge, "bar", &["flag"], SeriesValue::Gauge(1.0)),
                (
                    MetricKind::Gauge,
                    "bar",
                    &["other"],
                    SeriesValue::Gauge(2.0),
                ),
                (
                    MetricKind::Gauge,
                    "tallyd_uptime_seconds",
                    &[],
                    SeriesValue::Gauge(2.0),
                ),
            ],
        ));
        let text = user_part(&p.render(false));
        assert!(text.contains("foo_total 1\n"), "{text}");
        assert!(text.contains("foo_timer_count 1\n"), "{text}");
        assert!(text.contains("foo_histogram_count 1\n"), "{text}");
        assert!(!text.contains("tallyd_uptime_seconds"), "{text}");
        // The gauge foo_timer_count sorts after the timer that claimed that name: renamed.
        assert!(text.contains("foo_timer_count_gauge 1\n"), "{text}");
        // Valueless tags are not labels, so the two `bar` series clash: one is left out, and
        // so is the reserved name.
        assert_eq!(
            text.lines().filter(|l| l.starts_with("bar ")).count(),
            1,
            "{text}"
        );
        assert_eq!(p.shared.telemetry.prom_conflicts.load(Relaxed), 2);
        let names: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let unique: std::collections::HashSet<&&str> = names.iter().collect();
        assert_eq!(names.len(), unique.len());
    }

    #[test]
    fn series_expire_after_ttl() {
        let p = Prometheus::new(
            Duration::from_secs(30),
            1000,
            Arc::new(Telemetry::default()),
        );
        p.consume(&flush(
            0,
            vec![(MetricKind::Gauge, "old", &[], SeriesValue::Gauge(1.0))],
        ));
        p.consume(&flush(
            20,
            vec![(MetricKind::Gauge, "new", &[], SeriesValue::Gauge(1.0))],
        ));
        assert!(user_part(&p.render(false)).contains("old 1"));
        p.consume(&flush(30, vec![]));
        let text = user_part(&p.render(false));
        assert!(!text.contains("old 1"), "{text}");
        assert!(text.contains("new 1"), "{text}");
    }

    #[test]
    fn expiry_follows_each_series_own_age() {
        let p = Prometheus::new(
            Duration::from_secs(30),
            1000,
            Arc::new(Telemetry::default()),
        );
        let g = |name: &'static str| (MetricKind::Gauge, name, &[][..], SeriesValue::Gauge(1.0));
        p.consume(&flush(0, vec![g("a")]));
        p.consume(&flush(10, vec![g("b")]));
        p.consume(&flush(20, vec![g("c")]));
        p.consume(&flush(30, vec![]));
        let text = user_part(&p.render(false));
        assert!(
            !text.contains("\na 1") && !text.starts_with("a 1"),
            "{text}"
        );
        assert!(text.contains("b 1") && text.contains("c 1"), "{text}");
        p.consume(&flush(40, vec![g("c")]));
        let text = user_part(&p.render(false));
        assert!(!text.contains("b 1"), "{text}");
        assert!(text.contains("c 1"), "{text}");
        p.consume(&flush(69, vec![]));
        assert!(user_part(&p.render(false)).contains("c 1"));
        p.consume(&flush(70, vec![]));
        assert_eq!(user_part(&p.render(false)), "");
        assert_eq!(p.shared.telemetry.prom_series.load(Relaxed), 0);
    }

    #[test]
    fn one_series_per_context_whatever_the_arc() {
        // The aggregator may hand over a new Arc for a context it forgot and saw again.
        let p = sink();
        let ctx = Arc::new(Context::from_unsorted(MetricKind::Counter, "c", &["a:1"]));
        let with = |ctx: Arc<Context>, ts: u64| {
            Arc::new(Flush {
                timestamp: ts,
                interval: Duration::from_secs(10),
                percentiles: Arc::from(vec![0.5]),
                series: vec![Series::new(ctx, SeriesValue::Counter(1.0))],
                events: vec![],
                service_checks: vec![],
                recycle: Default::default(),
            })
        };
        p.consume(&with(Arc::clone(&ctx), 0));
        p.consume(&with(Arc::clone(&ctx), 10));
        p.consume(&with(Arc::new((*ctx).clone()), 20));
        assert!(user_part(&p.render(false)).contains("c_total{a=\"1\"} 3\n"));
        assert_eq!(p.shared.telemetry.prom_series.load(Relaxed), 1);
    }

    #[test]
    fn a_scrape_is_handed_on_in_pieces() {
        let p = sink();
        let names: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
        let series = names
            .iter()
            .map(|n| {
                let (kind, value) = if n.len() % 2 == 0 {
                    (MetricKind::Counter, SeriesValue::Counter(1.0))
                } else {
                    (MetricKind::Gauge, SeriesValue::Gauge(2.0))
                };
                (kind, n.as_str(), &["env:prod"][..], value)
            })
            .collect();
        p.consume(&flush(0, series));
        let whole = p.render(false);
        let mut pieces: Vec<String> = Vec::new();
        p.render_to(false, 4096, &mut |piece| {
            pieces.push(piece);
            true
        });
        assert!(pieces.len() > 3, "{}", pieces.len());
        // Every piece but the last is handed on as soon as it reaches the size: by the end of
        // the line (a family header or a sample) that crossed it.
        for piece in &pieces[..pieces.len() - 1] {
            assert!(
                piece.len() >= 4096 && piece.len() < 4096 + 200,
                "{}",
                piece.len()
            );
            assert!(piece.ends_with('\n'));
        }
        // The same text as in one piece (tallyd's own metrics, uptime say, move between the
        // two renders).
        let joined = pieces.concat();
        assert_eq!(user_part(&joined), user_part(&whole));
        assert!(joined.contains("\n# HELP tallyd_prometheus_update_seconds "));
        // A scraper that goes away: nothing more is formatted or handed on.
        let mut handed = 0;
        p.render_to(false, 4096, &mut |_| {
            handed += 1;
            false
        });
        assert_eq!(handed, 1);
    }

    #[test]
    fn series_limit() {
        let p = Prometheus::new(Duration::from_secs(30), 1, Arc::new(Telemetry::default()));
        p.consume(&flush(
            0,
            vec![
                (MetricKind::Gauge, "a", &[], SeriesValue::Gauge(1.0)),
                (MetricKind::Gauge, "b", &[], SeriesValue::Gauge(1.0)),
            ],
        ));
        p.sync();
        assert_eq!(p.shared.telemetry.prom_series_dropped.load(Relaxed), 1);
        assert_eq!(p.shared.telemetry.prom_series.load(Relaxed), 1);
    }
}
