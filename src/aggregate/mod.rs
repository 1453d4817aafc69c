//! Aggregation per flush window.
//!
//! Producers each own a [`Shard`] (see `shard.rs`). At every flush the [`Aggregator`] drains all
//! shards, merges the same context counted in several shards, computes percentiles once, and
//! returns an immutable [`Flush`] that every sink reads. Sinks never reach back in here.

pub mod config;
pub mod ddsketch;
mod gauge;
pub mod histogram;
mod line_options;
mod lines;
pub mod mapper;
pub mod shard;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::HashTable;

pub use config::{AggregateConfig, GaugeMode};
pub use histogram::{Quantiles, Samples};
use shard::State;
pub use shard::{LineOptions, Shard, Shared};

use crate::base::cpu::{prefetch, PREFETCH_AHEAD};
use crate::base::lock;
use crate::model::{Context, Event, ServiceCheck};
use crate::telemetry::Telemetry;

/// A consumer of every window's [`Flush`]: the Prometheus, Datadog and remote_write sinks and
/// the alert evaluator. `consume` runs on the flusher thread and must not block: a sink takes
/// what it needs from the shared window and hands it to its own thread.
pub trait Sink: Send + Sync {
    /// The sink's name, for logs.
    fn name(&self) -> &'static str;
    /// Takes one window.
    fn consume(&self, flush: &Arc<Flush>);
}

/// Events and service checks held per window; more are dropped and counted.
pub const MAX_EVENTS_PER_WINDOW: usize = 10_000;
/// Timestamped points (`|T` gauges and counts) held per window; more are dropped and counted.
pub const MAX_TIMESTAMPED_PER_WINDOW: usize = 100_000;

/// A gauge or count sent with its own timestamp (`|T`): as in the Datadog Agent's
/// no-aggregation pipeline it is not merged into the window but handed on as its own point.
#[derive(Debug, Clone, PartialEq)]
pub struct Timestamped {
    /// Kind (gauge or counter), name and sorted tags.
    pub ctx: Arc<Context>,
    /// The value; for a count, divided by its sample rate.
    pub value: f64,
    /// Unix seconds, as sent.
    pub timestamp: i64,
}

/// One window's worth of aggregated data, shared read-only by all sinks.
#[derive(Debug)]
pub struct Flush {
    /// Unix seconds at which the window started.
    pub timestamp: u64,
    /// Length of the window (`aggregate.flush_interval`).
    pub interval: Duration,
    /// The quantiles in `SeriesValue::Samples`, in this order.
    pub percentiles: Arc<[f64]>,
    /// One entry per context that had samples in the window, each context once.
    pub series: Vec<Series>,
    /// Events received in the window, in arrival order (at most [`MAX_EVENTS_PER_WINDOW`]
    /// together with `service_checks`).
    pub events: Vec<Event>,
    /// Service checks received in the window, in arrival order.
    pub service_checks: Vec<ServiceCheck>,
    /// Timestamped gauges and counts received in the window, in arrival order (at most
    /// [`MAX_TIMESTAMPED_PER_WINDOW`]).
    pub timestamped: Vec<Timestamped>,
    /// Where `series` goes when the last holder drops the flush (see [`Recycle`]).
    pub(crate) recycle: Recycle,
}

/// The aggregator's spare series buffer, which a dropped [`Flush`] refills with its own
/// (emptied) buffer. At 100,000 contexts that buffer is megabytes: allocated afresh each window
/// it was fresh pages to fault in during every flush. Sinks that queue the flush (alerts,
/// Datadog) usually hold it past the flusher's return, so the buffer comes back from whichever
/// thread drops the flush last, which also pays for dropping its series there.
#[derive(Debug, Default)]
pub(crate) struct Recycle(Option<Arc<Mutex<Vec<Series>>>>);

impl Drop for Flush {
    fn drop(&mut self) {
        if let Some(spare) = self.recycle.0.take() {
            let mut series = std::mem::take(&mut self.series);
            series.clear();
            if series.capacity() > 0 {
                *lock(&spare) = series;
            }
        }
    }
}

/// One context's aggregate for one window.
#[derive(Debug)]
pub struct Series {
    /// The context (kind, name and sorted tags) the value belongs to.
    pub ctx: Arc<Context>,
    /// `ctx.hash_code()`, carried here so that a sink indexing series by context (the
    /// Prometheus exposition) need not read the context itself: one cache miss less per series.
    pub hash: u64,
    /// The window's value, of the kind `ctx` names.
    pub value: SeriesValue,
    /// A counter whose increments did not come as StatsD lines but as OTLP delta monotonic
    /// sums (their shard was made with [`Shard::set_counts`]): Datadog gets it as a COUNT, as
    /// the Agent's OTLP ingest sends such sums, rather than as a DogStatsD RATE.
    pub count: bool,
}

impl Series {
    /// A series for `ctx`, with its hash computed here.
    pub fn new(ctx: Arc<Context>, value: SeriesValue) -> Series {
        Series {
            hash: ctx.hash_code(),
            ctx,
            value,
            count: false,
        }
    }
}

/// The aggregated value of one context in one window.
#[derive(Debug)]
pub enum SeriesValue {
    /// Sum of the window's increments, corrected for sample rate.
    Counter(f64),
    /// The gauge's value at the end of the window (in delta mode, after applying the window's
    /// relative changes to the value remembered from earlier windows).
    Gauge(f64),
    /// Distinct members seen in the window.
    Set(u64),
    /// Timers, histograms, distributions: the box the shard allocated for the window's
    /// samples, handed on as it is, with [`Samples::quantiles`] holding one value per entry of
    /// `Flush::percentiles`.
    Samples(Box<Samples>),
}

#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    checks: Vec<ServiceCheck>,
    timestamped: Vec<Timestamped>,
}

/// What the flusher remembers between windows: gauge values for delta mode.
#[derive(Default)]
struct Memory {
    gauges: HashMap<Arc<Context>, (f64, u64)>,
    window: u64,
}

/// Owns every shard and closes the windows: producers apply lines to the shards it hands out,
/// and the flusher calls [`Aggregator::flush`] once per interval.
pub struct Aggregator {
    shared: Arc<Shared>,
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    /// The shard every datagram receiver (UDP sockets, Unix socket) applies to: a context
    /// sent from many client sockets, which SO_REUSEPORT spreads over the receivers, is held
    /// once and counted once against `aggregate.max_contexts`.
    datagrams: Arc<Mutex<Shard>>,
    pending: Mutex<Pending>,
    memory: Mutex<Memory>,
    /// The drained-state buffer of the last flush, kept for the next: at 100,000 contexts it is
    /// megabytes, and a fresh one per flush was fresh pages to fault in every window.
    spare: Mutex<Vec<shard::Drained>>,
    /// The series buffer of the last flush every holder dropped (see [`Recycle`]).
    spare_series: Arc<Mutex<Vec<Series>>>,
    /// `aggregate.percentiles`, replaced by a reload ([`Aggregator::set_percentiles`]).
    percentiles: Mutex<Arc<[f64]>>,
    interval: Duration,
    expiry_windows: u64,
}

impl Aggregator {
    /// An aggregator with the datagram receivers' shard; `gauge_mode` is how signed gauge
    /// values are read (`statsd.gauge_mode`).
    pub fn new(
        a: &AggregateConfig,
        gauge_mode: GaugeMode,
        telemetry: Arc<Telemetry>,
    ) -> Aggregator {
        let interval = a.flush_interval;
        let expiry_windows =
            (a.context_expiry.as_millis() / interval.as_millis().max(1)).max(1) as u64;
        let shared = Arc::new(Shared::new(
            a.max_contexts,
            a.max_set_size,
            gauge_mode,
            telemetry,
        ));
        let datagrams = Arc::new(Mutex::new(Shard::new(Arc::clone(&shared))));
        Aggregator {
            shared,
            shards: Mutex::new(vec![Arc::clone(&datagrams)]),
            datagrams,
            pending: Mutex::new(Pending::default()),
            memory: Mutex::new(Memory::default()),
            spare: Mutex::new(Vec::new()),
            spare_series: Arc::default(),
            percentiles: Mutex::new(a.percentiles.clone().into()),
            interval,
            expiry_windows,
        }
    }

    /// The settings and counters all shards share (and [`Shared::seq`], the gauge order).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Sets the percentiles computed from the next flush on (a configuration reload).
    pub fn set_percentiles(&self, percentiles: &[f64]) {
        *lock(&self.percentiles) = percentiles.into();
    }

    /// The flush interval (`aggregate.flush_interval`).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The shard shared by the datagram receivers. They parse outside its lock and take it
    /// once per receive batch to apply the batch's lines in arrival order.
    pub fn datagram_shard(&self) -> &Arc<Mutex<Shard>> {
        &self.datagrams
    }

    /// A new shard for one producer, drained at every flush.
    pub fn new_shard(&self) -> Arc<Mutex<Shard>> {
        let s = Arc::new(Mutex::new(Shard::new(Arc::clone(&self.shared))));
        lock(&self.shards).push(Arc::clone(&s));
        s
    }

    /// Queues an event for the current window; false when the window's limit is reached.
    pub fn push_event(&self, ev: Event) -> bool {
        let mut p = lock(&self.pending);
        if p.events.len() + p.checks.len() >= MAX_EVENTS_PER_WINDOW {
            self.shared.telemetry.events_dropped.fetch_add(1, Relaxed);
            return false;
        }
        p.events.push(ev);
        true
    }

    /// Queues a service check for the current window; false when the window's limit is reached.
    pub fn push_check(&self, sc: ServiceCheck) -> bool {
        let mut p = lock(&self.pending);
        if p.events.len() + p.checks.len() >= MAX_EVENTS_PER_WINDOW {
            self.shared.telemetry.events_dropped.fetch_add(1, Relaxed);
            return false;
        }
        p.checks.push(sc);
        true
    }

    /// Queues timestamped points for the current window; false (and counted) for those past
    /// the window's limit.
    pub fn push_timestamped(&self, points: impl IntoIterator<Item = Timestamped>) -> bool {
        let mut p = lock(&self.pending);
        let mut all = true;
        for t in points {
            if p.timestamped.len() >= MAX_TIMESTAMPED_PER_WINDOW {
                self.shared
                    .telemetry
                    .timestamped_dropped
                    .fetch_add(1, Relaxed);
                all = false;
            } else {
                p.timestamped.push(t);
                self.shared.telemetry.timestamped.fetch_add(1, Relaxed);
            }
        }
        all
    }

    /// Counts `n` values of types other than gauge and count that came with a timestamp
    /// (aggregated, the timestamp ignored).
    pub fn timestamps_ignored(&self, n: u64) {
        self.shared
            .telemetry
            .timestamps_ignored
            .fetch_add(n, Relaxed);
    }

    /// Closes the current window, stamped `timestamp` (unix seconds of its start).
    pub fn flush(&self, timestamp: u64) -> Flush {
        let percentiles = Arc::clone(&lock(&self.percentiles));
        let shards: Vec<Arc<Mutex<Shard>>> = lock(&self.shards).clone();
        let mut merged = std::mem::take(&mut *lock(&self.spare));
        let mut largest = 0..0;
        let mut locked = Duration::ZERO;
        for s in &shards {
            // Each shard is locked only while its touched entries are moved out.
            let start = merged.len();
            let mut shard = lock(s);
            let t0 = Instant::now();
            shard.drain(self.expiry_windows, &mut merged);
            drop(shard);
            locked += t0.elapsed();
            if merged.len() - start > largest.len() {
                largest = start..merged.len();
            }
        }
        let set_dropped = merge_shards(&mut merged, largest, self.shared.max_set_size);

        let mut memory = lock(&self.memory);
        memory.window += 1;
        let window = memory.window;
        let delta_mode = self.shared.gauge_mode == GaugeMode::Delta;
        let mut clamped = 0;
        let mut series = std::mem::take(&mut *lock(&self.spare_series));
        series.reserve(merged.len());
        let mut items = merged.drain(..);
        while let Some(d) = items.next() {
            // A sample store is a box and its raw values another allocation, both scattered:
            // prefetch the box far ahead and, once it has arrived, the values it points to.
            let rest = items.as_slice();
            if let Some(State::Samples(s)) = rest.get(PREFETCH_AHEAD).map(|d| &d.state) {
                prefetch(&**s as *const Samples as usize);
            }
            if let Some(State::Samples(s)) = rest.get(PREFETCH_AHEAD / 2).map(|d| &d.state) {
                prefetch(s.raw_addr());
            }
            let value = match d.state {
                State::Counter(v) => SeriesValue::Counter(v),
                State::Gauge(g) if delta_mode => {
                    let prev = memory.gauges.get(&d.ctx).map(|(v, _)| *v);
                    let v = g.resolve(prev);
                    memory.gauges.insert(Arc::clone(&d.ctx), (v, window));
                    SeriesValue::Gauge(v)
                }
                State::Gauge(g) => SeriesValue::Gauge(g.resolve(None)),
                State::Set(s) => SeriesValue::Set(s.len() as u64),
                State::Samples(mut samples) => {
                    samples.settle();
                    clamped += samples.clamped();
                    samples.summarize(&percentiles);
                    SeriesValue::Samples(samples)
                }
            };
            // The shard keys its table by the context's own hash (`model::key_hash`).
            series.push(Series {
                ctx: d.ctx,
                hash: d.hash,
                value,
                count: d.count,
            });
        }
        drop(items);
        // Keep the buffers for the next window, unless this window needed far less of them.
        if merged.capacity() > 4 * series.len().max(1024) {
            merged.shrink_to(series.len());
            series.shrink_to_fit();
        }
        *lock(&self.spare) = merged;
        if delta_mode {
            let keep = self.expiry_windows;
            memory.gauges.retain(|_, (_, w)| window - *w < keep);
        }
        drop(memory);

        let pending = std::mem::take(&mut *lock(&self.pending));
        let t = &self.shared.telemetry;
        t.set_members_dropped.fetch_add(set_dropped, Relaxed);
        t.histogram_clamped.fetch_add(clamped, Relaxed);
        t.flush_locked_ns.store(locked.as_nanos() as u64, Relaxed);
        t.contexts
            .store(self.shared.contexts.load(Relaxed) as u64, Relaxed);
        Flush {
            timestamp,
            interval: self.interval,
            percentiles,
            series,
            events: pending.events,
            service_checks: pending.checks,
            timestamped: pending.timestamped,
            recycle: Recycle(Some(Arc::clone(&self.spare_series))),
        }
    }
}

/// Folds the contexts that several shards counted into one entry each, so that `drained` holds
/// every context once; returns the set members dropped at `max_set_size`. `largest` is the
/// range of `drained` that the shard with the most entries filled. A shard holds a context
/// once, so every duplicate involves one of the other shards: only their entries are indexed,
/// and the largest shard's are walked once, probing that small index with the hash each entry
/// carries. Indexing all of them cost a 100,000-entry table and a copy of every entry in each
/// window where a second shard contributed a handful, which in a default deployment is every
/// window: the GPS service publishes its fleet gauges through a shard of its own.
fn merge_shards(
    drained: &mut Vec<shard::Drained>,
    largest: Range<usize>,
    max_set_size: usize,
) -> u64 {
    if largest.len() == drained.len() {
        return 0;
    }
    let mut others: Vec<shard::Drained> = drained.drain(largest.end..).collect();
    others.extend(drained.drain(..largest.start));
    let mut dropped = 0;
    let mut index: HashTable<(u64, usize)> = HashTable::with_capacity(others.len());
    let mut extra: Vec<(shard::Drained, bool)> = Vec::with_capacity(others.len());
    for d in others {
        let found = index.entry(
            d.hash,
            |&(h, i)| h == d.hash && extra[i].0.ctx == d.ctx,
            |&(h, _)| h,
        );
        match found {
            TableEntry::Occupied(o) => {
                let i = o.get().1;
                extra[i].0.count |= d.count;
                dropped += extra[i].0.state.merge(d.state, max_set_size);
            }
            TableEntry::Vacant(v) => {
                v.insert((d.hash, extra.len()));
                extra.push((d, false));
            }
        }
    }
    for d in drained.iter_mut() {
        let hash = d.hash;
        if let Some(&(_, i)) = index.find(hash, |&(h, i)| h == hash && extra[i].0.ctx == d.ctx) {
            let (other, taken) = &mut extra[i];
            let state = std::mem::replace(&mut other.state, State::Counter(0.0));
            d.count |= other.count;
            dropped += d.state.merge(state, max_set_size);
            *taken = true;
        }
    }
    drained.extend(
        extra
            .into_iter()
            .filter(|(_, taken)| !taken)
            .map(|(d, _)| d),
    );
    dropped
}

#[cfg(test)]
mod tests;
