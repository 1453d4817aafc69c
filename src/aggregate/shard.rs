//! One aggregation shard: the contexts and window state fed by one producer.
//!
//! The datagram receivers (UDP and Unix socket) share one shard, TCP connections another; a
//! producer locks its shard once per batch, and the flusher locks it to drain it. A line's
//! context key is written into a buffer the shard reuses, hashed once (the same hash the
//! `Context` keeps) and compared with one byte comparison, so the hot path allocates only when a
//! context is seen for the first time.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use foldhash::quality::FixedState;
use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::{HashSet, HashTable};
use smallvec::SmallVec;

pub(super) use super::gauge::GaugeState;
use super::histogram::Samples;
pub use super::line_options::LineOptions;
use super::lines::{dedup_sorted, store_for, value_count};
use crate::aggregate::GaugeMode;
use crate::model::dogstatsd::{self as parse, MetricLine, ParseError};
use crate::model::{key_hash, write_key, Context, MetricKind};
use crate::telemetry::{LocalStats, Telemetry};

/// Tags sorted on the stack; lines with more use a heap vector.
const STACK_TAGS: usize = 16;

/// Settings and counters every shard shares.
pub struct Shared {
    /// Hashes set members (one seed for all shards, so that sets from several shards merge).
    /// Contexts hash with `model::key_hash`, seeded once per process.
    pub(super) hasher: FixedState,
    /// `aggregate.max_contexts`.
    pub(super) max_contexts: usize,
    /// `aggregate.max_set_size`.
    pub(super) max_set_size: usize,
    /// `statsd.gauge_mode`.
    pub(super) gauge_mode: GaugeMode,
    pub(super) telemetry: Arc<Telemetry>,
    /// Contexts held across all shards, checked against `max_contexts`.
    pub(super) contexts: AtomicUsize,
    origin: Instant,
}

impl Shared {
    pub(super) fn new(
        max_contexts: usize,
        max_set_size: usize,
        gauge_mode: GaugeMode,
        telemetry: Arc<Telemetry>,
    ) -> Shared {
        Shared {
            hasher: FixedState::with_seed(rand_seed()),
            max_contexts,
            max_set_size,
            gauge_mode,
            telemetry,
            contexts: AtomicUsize::new(0),
            origin: Instant::now(),
        }
    }

    /// A monotonic sequence number (nanoseconds since start) that orders gauge writes across
    /// shards. Callers read it once per batch.
    pub fn seq(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; one draw per process keeps hash flooding impractical.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7a11);
    h.finish()
}

/// A context's window state as drained at flush.
#[derive(Debug, Clone)]
pub(super) enum State {
    Counter(f64),
    Gauge(GaugeState),
    Set(HashSet<u64, FixedState>),
    Samples(Box<Samples>),
}

/// A context's window state inside the shard. Only a counter's sum is inline: everything
/// larger is boxed so that the many counters (and idle contexts) keep the table entry at
/// 40 bytes, and a sample store exists only while the window has samples.
#[derive(Debug)]
enum Slot {
    Counter(f64),
    Gauge(Box<GaugeState>),
    Set(Box<HashSet<u64, FixedState>>),
    Samples(Option<Box<Samples>>),
}

impl Slot {
    fn new(kind: MetricKind, hasher: FixedState) -> Slot {
        match kind {
            MetricKind::Counter => Slot::Counter(0.0),
            MetricKind::Gauge => Slot::Gauge(Box::default()),
            MetricKind::Set => Slot::Set(Box::new(HashSet::with_hasher(hasher))),
            _ => Slot::Samples(None),
        }
    }

    /// The address of the boxed state a [`Slot::take`] reads (0 when it reads none).
    fn boxed_addr(&self) -> usize {
        match self {
            Slot::Gauge(g) => &**g as *const GaugeState as usize,
            Slot::Set(s) => &**s as *const HashSet<u64, FixedState> as usize,
            Slot::Counter(_) | Slot::Samples(_) => 0,
        }
    }

    /// Moves the window's state out, leaving an empty state of the same kind.
    fn take(&mut self) -> State {
        match self {
            Slot::Counter(v) => State::Counter(std::mem::take(v)),
            Slot::Gauge(g) => State::Gauge(std::mem::take(&mut **g)),
            Slot::Set(s) => {
                let empty = HashSet::with_hasher(*s.hasher());
                State::Set(std::mem::replace(&mut **s, empty))
            }
            Slot::Samples(s) => State::Samples(s.take().unwrap_or_default()),
        }
    }
}

impl State {
    /// Folds the same context's state from another shard into this one. Returns the set
    /// members dropped at `max_set_size`.
    pub fn merge(&mut self, other: State, max_set_size: usize) -> u64 {
        match (self, other) {
            (State::Counter(a), State::Counter(b)) => *a += b,
            (State::Gauge(a), State::Gauge(b)) => a.merge(b),
            (State::Samples(a), State::Samples(b)) => a.merge(*b),
            (State::Set(a), State::Set(b)) => {
                let mut dropped = 0;
                for m in b {
                    if a.len() < max_set_size || a.contains(&m) {
                        a.insert(m);
                    } else {
                        dropped += 1;
                    }
                }
                return dropped;
            }
            // A context's kind is part of its identity, so kinds always agree.
            _ => {}
        }
        0
    }
}

struct Entry {
    hash: u64,
    ctx: Arc<Context>,
    slot: Slot,
    /// Window number (wrapping, as u32 to keep the entry small) of the last sample, for expiry.
    last_window: u32,
    touched: bool,
}

/// A context's state drained from a shard at flush.
pub(super) struct Drained {
    /// `ctx.hash_code()`.
    pub(super) hash: u64,
    pub(super) ctx: Arc<Context>,
    pub(super) state: State,
    /// A counter of a shard made with [`Shard::set_counts`].
    pub(super) count: bool,
}

/// The contexts one producer (the datagram receivers together, the StatsD TCP server, the OTLP
/// receiver, the GPS service) applies to, with their current window's state. Locked by the
/// producer once per batch and by the flusher to drain it.
pub struct Shard {
    shared: Arc<Shared>,
    table: Table,
    /// The Agent's DogStatsD settings for StatsD lines (none by default).
    opts: Arc<LineOptions>,
    /// `opts` changes nothing (the usual case): lines take the path without them.
    plain: bool,
    /// Counters here are sums of deltas (OTLP), sent to Datadog as COUNTs.
    counts: bool,
}

/// The contexts of a shard and the bookkeeping of its current window.
struct Table {
    entries: HashTable<Entry>,
    /// The key of the line being resolved, built here so that a known context costs one hash
    /// and one comparison of contiguous bytes, and no allocation.
    key: Vec<u8>,
    /// Flushes so far, wrapping (see `Entry::last_window`).
    window: u32,
    /// Entries touched in this window: what the next drain moves out.
    touched: usize,
    /// The addresses the drain will read for each touched entry (context, boxed state), in
    /// visiting order, so that it can prefetch a few entries ahead. Scratch: at most one pair
    /// per context.
    ahead: Vec<[usize; 2]>,
}

/// A key scratch buffer grown past this (by a huge line) is given back after use.
const KEY_KEEP: usize = 4096;

/// Why a context could not be resolved.
enum Unresolved {
    /// The name or a tag is not UTF-8 (found only when the context is new).
    Utf8,
    /// The context is new and `aggregate.max_contexts` is reached.
    Full,
}

impl Table {
    /// Finds the entry of (`kind`, `name`, `sorted_tags`), creating it when new, and marks it
    /// touched in this window.
    fn resolve(
        &mut self,
        shared: &Shared,
        kind: MetricKind,
        name: &[u8],
        sorted_tags: &[&[u8]],
    ) -> Result<&mut Entry, Unresolved> {
        self.resolve_prefixed(shared, kind, &[], name, sorted_tags)
    }

    /// [`Table::resolve`] for the name `prefix` parts followed by `name`.
    fn resolve_prefixed(
        &mut self,
        shared: &Shared,
        kind: MetricKind,
        prefix: &[&[u8]],
        name: &[u8],
        sorted_tags: &[&[u8]],
    ) -> Result<&mut Entry, Unresolved> {
        write_key(&mut self.key, name, sorted_tags.iter().copied());
        let name_len = if prefix.is_empty() {
            name.len()
        } else {
            let pre: Vec<u8> = prefix.concat();
            self.key.splice(0..0, pre.iter().copied());
            pre.len() + name.len()
        };
        let key = &self.key[..];
        let hash = key_hash(kind, name_len, key);
        let window = self.window;
        let entry = match self.entries.entry(
            hash,
            |e| e.hash == hash && e.ctx.is(kind, name_len, key),
            |e| e.hash,
        ) {
            TableEntry::Occupied(o) => o.into_mut(),
            TableEntry::Vacant(v) => {
                let key = std::str::from_utf8(key).map_err(|_| Unresolved::Utf8)?;
                if shared.contexts.fetch_add(1, Relaxed) >= shared.max_contexts {
                    shared.contexts.fetch_sub(1, Relaxed);
                    return Err(Unresolved::Full);
                }
                v.insert(Entry {
                    hash,
                    ctx: Arc::new(Context::from_key(kind, name_len, key)),
                    slot: Slot::new(kind, shared.hasher),
                    last_window: window,
                    touched: false,
                })
                .into_mut()
            }
        };
        if self.key.capacity() > KEY_KEEP {
            self.key = Vec::new();
        }
        if !entry.touched {
            entry.touched = true;
            self.touched += 1;
        }
        entry.last_window = window;
        Ok(entry)
    }
}

impl Shard {
    pub(super) fn new(shared: Arc<Shared>) -> Shard {
        Shard {
            shared,
            opts: Arc::default(),
            plain: true,
            counts: false,
            table: Table {
                entries: HashTable::new(),
                key: Vec::new(),
                window: 0,
                touched: 0,
                ahead: Vec::new(),
            },
        }
    }

    /// Number of contexts held.
    pub fn len(&self) -> usize {
        self.table.entries.len()
    }

    /// Whether the shard holds no context.
    pub fn is_empty(&self) -> bool {
        self.table.entries.is_empty()
    }

    /// Marks this shard's counters as sums of deltas from another protocol (OTLP), which the
    /// Datadog sink sends as COUNTs.
    pub fn set_counts(&mut self) {
        self.counts = true;
    }

    /// Sets the DogStatsD settings applied to the lines given to [`Shard::apply`].
    pub fn set_line_options(&mut self, opts: Arc<LineOptions>) {
        self.plain = *opts == LineOptions::default();
        self.opts = opts;
    }

    /// Adds a parsed metric line. `seq` comes from [`Shared::seq`].
    pub fn apply(
        &mut self,
        m: &MetricLine<'_>,
        seq: u64,
        stats: &mut LocalStats,
    ) -> Result<(), ParseError> {
        // Inline storage is left uninitialised until pushed to: a zeroed array of slices cost
        // a visible share of every line.
        if self.plain {
            let mut tags: SmallVec<[&[u8]; STACK_TAGS]> = parse::tags(m.tags).collect();
            tags.sort_unstable();
            let n = dedup_sorted(&mut tags);
            return self.apply_as(m, (m.kind, &[], m.name), &tags[..n], seq, stats);
        }
        let opts = Arc::clone(&self.opts);
        let mapped = opts
            .mapper
            .as_ref()
            .and_then(|mp| mp.map(std::str::from_utf8(m.name).ok()?));
        let name: &[u8] = mapped.as_ref().map_or(m.name, |(n, _)| n.as_bytes());
        let mut tags: SmallVec<[&[u8]; STACK_TAGS]> = parse::tags(m.tags).collect();
        tags.extend(opts.tags.iter().map(|t| &t[..]));
        if let Some((_, extra)) = &mapped {
            tags.extend(extra.iter().map(|t| t.as_bytes()));
        }
        tags.sort_unstable();
        let n = dedup_sorted(&mut tags);
        let tags = &tags[..n];
        let ns: &[u8] = if opts.namespace.is_empty()
            || opts.namespace_blocklist.iter().any(|p| name.starts_with(p))
        {
            &[]
        } else {
            &opts.namespace
        };
        self.apply_as(m, (m.kind, &[ns], name), tags, seq, stats)?;
        match &opts.copy_to_distribution {
            Some(p) if matches!(m.kind, MetricKind::Timer | MetricKind::Histogram) => {
                let target = (MetricKind::Distribution, &[&p[..], ns][..], name);
                self.apply_as(m, target, tags, seq, stats)
            }
            _ => Ok(()),
        }
    }

    /// Applies `m`'s values to the context (`kind`, `prefix` parts + `name`, `tags`).
    fn apply_as(
        &mut self,
        m: &MetricLine<'_>,
        (kind, prefix, name): (MetricKind, &[&[u8]], &[u8]),
        tags: &[&[u8]],
        seq: u64,
        stats: &mut LocalStats,
    ) -> Result<(), ParseError> {
        let shared = &*self.shared;
        let entry = match self
            .table
            .resolve_prefixed(shared, kind, prefix, name, tags)
        {
            Ok(e) => e,
            Err(Unresolved::Utf8) => return Err(ParseError::Utf8),
            Err(Unresolved::Full) => {
                stats.dropped_context_limit += value_count(m);
                return Ok(());
            }
        };
        match &mut entry.slot {
            // The parser checked each weighted value. Only a huge one, or a window sum already
            // huge, can overflow the sum: such a line is checked first and rejected whole.
            Slot::Counter(sum) if m.huge || sum.abs() > parse::HUGE => {
                let next = parse::values(m.values).fold(*sum, |t, v| t + v.value / m.sample_rate);
                if !next.is_finite() {
                    return Err(ParseError::Value);
                }
                for _ in parse::values(m.values) {
                    stats.samples += 1;
                }
                *sum = next;
            }
            Slot::Counter(sum) => {
                for v in parse::values(m.values) {
                    *sum += v.value / m.sample_rate;
                    stats.samples += 1;
                }
            }
            Slot::Gauge(g) => {
                let delta = shared.gauge_mode == GaugeMode::Delta;
                if delta {
                    let shifted = parse::values(m.values)
                        .filter(|v| v.signed)
                        .fold(g.delta, |d, v| d + v.value);
                    if !shifted.is_finite() {
                        return Err(ParseError::Value);
                    }
                }
                for v in parse::values(m.values) {
                    if v.signed && delta {
                        g.shift(v.value, seq);
                    } else {
                        g.set(v.value, seq);
                    }
                    stats.samples += 1;
                }
            }
            Slot::Set(set) => {
                let member = shared.hasher.hash_one(m.values);
                if set.len() < shared.max_set_size || set.contains(&member) {
                    set.insert(member);
                    stats.samples += 1;
                } else {
                    stats.set_members_dropped += 1;
                }
            }
            Slot::Samples(s) => {
                let s = s.get_or_insert_with(|| Box::new(store_for(kind)));
                // As the Datadog Agent does, a sampled value counts as trunc(1/rate) values.
                let w = parse::sample_weight(m.sample_rate);
                // Only a huge value, or a window sum already huge, can overflow the sum.
                if m.huge || s.sum().abs() > parse::HUGE {
                    let sum = parse::values(m.values).fold(s.sum(), |t, v| t + v.value * w);
                    if !sum.is_finite() {
                        return Err(ParseError::Value);
                    }
                }
                let weight = w as u32;
                for v in parse::values(m.values) {
                    s.add(v.value, weight);
                    stats.samples += 1;
                }
            }
        }
        Ok(())
    }

    /// Moves out the state of every context touched in this window and forgets contexts idle
    /// for `expiry_windows` windows.
    pub(super) fn drain(&mut self, expiry_windows: u64, out: &mut Vec<Drained>) {
        let table = &mut self.table;
        let window = table.window;
        let mut expired = 0;
        out.reserve(table.touched);
        table.touched = 0;
        // Taking a touched entry clones its context's Arc (an atomic write to the context's
        // cache line, which waits for it) and may read its boxed state: two scattered cache
        // lines per entry. Listing them first (a sequential pass over the table) lets the
        // drain prefetch them a few entries ahead. `retain` visits entries in `iter` order.
        let ahead = &mut table.ahead;
        ahead.clear();
        ahead.extend(
            table
                .entries
                .iter()
                .filter(|e| e.touched)
                .map(|e| [Arc::as_ptr(&e.ctx) as usize, e.slot.boxed_addr()]),
        );
        let mut k = 0;
        let counts = self.counts;
        table.entries.retain(|e| {
            if e.touched {
                if let Some(&[ctx, state]) = ahead.get(k + crate::base::cpu::PREFETCH_AHEAD) {
                    crate::base::cpu::prefetch_write(ctx);
                    crate::base::cpu::prefetch_write(state);
                }
                k += 1;
                e.touched = false;
                out.push(Drained {
                    hash: e.hash,
                    ctx: Arc::clone(&e.ctx),
                    state: e.slot.take(),
                    count: counts && e.ctx.kind() == MetricKind::Counter,
                });
                true
            } else if u64::from(window.wrapping_sub(e.last_window)) >= expiry_windows {
                expired += 1;
                false
            } else {
                true
            }
        });
        // Kept for the next window, unless this one needed far less of it.
        if table.ahead.capacity() > 4 * table.ahead.len().max(1024) {
            table.ahead.shrink_to(table.ahead.len());
        }
        self.shared.contexts.fetch_sub(expired, Relaxed);
        table.window = window.wrapping_add(1);
    }
}

/// A value that does not come from a statsd line (OTLP points), for [`Shard::apply_value`].
#[derive(Debug)]
pub enum Value {
    /// Added to a counter's window sum.
    Count(f64),
    /// Sets a gauge; the latest `seq` wins across shards.
    Gauge(f64),
    /// Folded into a timer, histogram or distribution's window sample store.
    Samples(Samples),
}

impl Shard {
    /// Applies `value` to the context (`kind`, `name`, `tags`). `tags` need not be sorted; they
    /// are sorted and de-duplicated in place. Returns false, and counts the drop, when the
    /// context is new and `aggregate.max_contexts` is reached, or when `value` does not fit
    /// `kind` (a counter given samples, say).
    pub fn apply_value(
        &mut self,
        kind: MetricKind,
        name: &str,
        tags: &mut Vec<&str>,
        value: Value,
        seq: u64,
    ) -> bool {
        let fits = match &value {
            Value::Count(_) => kind == MetricKind::Counter,
            Value::Gauge(_) => kind == MetricKind::Gauge,
            Value::Samples(_) => kind.is_sampled(),
        };
        if !fits {
            return false;
        }
        tags.retain(|t| !t.is_empty());
        tags.sort_unstable();
        tags.dedup();
        let bytes: Vec<&[u8]> = tags.iter().map(|t| t.as_bytes()).collect();
        let shared = &*self.shared;
        let entry = match self.table.resolve(shared, kind, name.as_bytes(), &bytes) {
            Ok(e) => e,
            // `name` and `tags` are `&str`, so only the limit can refuse them.
            Err(_) => {
                shared
                    .telemetry
                    .samples_dropped_context_limit
                    .fetch_add(1, Relaxed);
                return false;
            }
        };
        match (&mut entry.slot, value) {
            (Slot::Counter(sum), Value::Count(v)) => *sum += v,
            (Slot::Gauge(g), Value::Gauge(v)) => g.set(v, seq),
            (Slot::Samples(s), Value::Samples(other)) => s
                .get_or_insert_with(|| Box::new(store_for(kind)))
                .merge(other),
            // The kind decides the state, and `fits` checked the kind.
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;
