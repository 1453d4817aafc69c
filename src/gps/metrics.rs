//! GPS counters and how they reach the sinks.
//!
//! Connections count into [`GpsStats`] (atomics). A [`Publisher`] turns them, at every tick,
//! into typed values (`gps_tcp.messages_received` += 3 with tag `protocol:gt06`) and applies
//! them to an aggregation shard of its own ([`Shard::apply_value`]), the same state a StatsD
//! line would reach: the GPS metrics are aggregated per window and exposed by every sink like
//! any StatsD metric. Counters are sent as deltas, gauges as current values, and the latency
//! of each delivered point (device time to storage, milliseconds) as histogram samples.
//! A per-minute ring of the last hour backs `GET /api/monitoring/metrics/live`.
//! tallyd's own `tallyd_gps_*` families (bounds, closes) are rendered by [`GpsTelemetry`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::fix::{FrameError, Protocol};
use super::guard::{Guard, Refusal};
use super::registry::Registry;
use crate::aggregate::shard::Value;
use crate::aggregate::{Samples, Shard, Shared};
use crate::base::lock;
use crate::base::metrics::{Collect, Families, Kind};
use crate::model::MetricKind;

/// Index used for connections whose protocol is not known yet (or never was).
pub const UNKNOWN: usize = PROTOCOLS;
/// Protocols known, the length of the per-protocol counter arrays.
pub const PROTOCOLS: usize = Protocol::ALL.len();
/// Protocol label values, by index; `UNKNOWN` last.
pub const PROTOCOL_LABELS: [&str; PROTOCOLS + 1] = [
    "nmea",
    "h02",
    "gps103",
    "gt06",
    "teltonika",
    "tk103",
    "queclink",
    "meitrack",
    "watch",
    "osmand",
    "unknown",
];
/// Latency samples held between two publishes; more are counted as dropped.
pub const MAX_PENDING_LATENCIES: usize = 20_000;
/// Minutes kept for the live API.
pub const LIVE_MINUTES: usize = 60;

/// Why a connection ended before a device identified itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused by the abuse guard.
    Refused(Refusal),
    /// Refused at `gps.max_connections`.
    MaxConnections,
    /// The first bytes matched no protocol.
    UnknownProtocol,
    /// No identification within the handshake timeout.
    HandshakeTimeout,
    /// The stream broke the protocol before the device identified itself.
    BadHandshake,
    /// The peer closed before identifying itself.
    ClosedBeforeLogin,
}

impl Failure {
    /// Every failure, in label order.
    pub const ALL: [Failure; 8] = [
        Failure::Refused(Refusal::Blacklisted),
        Failure::Refused(Refusal::PerIpLimit),
        Failure::Refused(Refusal::TableFull),
        Failure::MaxConnections,
        Failure::UnknownProtocol,
        Failure::HandshakeTimeout,
        Failure::BadHandshake,
        Failure::ClosedBeforeLogin,
    ];

    /// The `reason` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Failure::Refused(r) => r.as_label(),
            Failure::MaxConnections => "max_connections",
            Failure::UnknownProtocol => "unknown_protocol",
            Failure::HandshakeTimeout => "handshake_timeout",
            Failure::BadHandshake => "bad_handshake",
            Failure::ClosedBeforeLogin => "closed_before_login",
        }
    }

    fn index(self) -> usize {
        Failure::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// Why an identified connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The device closed the connection.
    Eof,
    /// Nothing received within the idle timeout.
    IdleTimeout,
    /// A frame was not completed in time.
    FrameTimeout,
    /// The stream broke the protocol.
    BadStream,
    /// The peer was blacklisted meanwhile.
    Blacklisted,
    /// A reply could not be written.
    WriteFailed,
    /// tallyd is shutting down.
    Shutdown,
}

impl Close {
    /// Every reason, in label order.
    pub const ALL: [Close; 7] = [
        Close::Eof,
        Close::IdleTimeout,
        Close::FrameTimeout,
        Close::BadStream,
        Close::Blacklisted,
        Close::WriteFailed,
        Close::Shutdown,
    ];

    /// The `reason` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Close::Eof => "eof",
            Close::IdleTimeout => "idle_timeout",
            Close::FrameTimeout => "frame_timeout",
            Close::BadStream => "bad_stream",
            Close::Blacklisted => "blacklisted",
            Close::WriteFailed => "write_failed",
            Close::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Minute {
    minute: i64,
    messages: u64,
    received: u64,
    processed: u64,
    failed: u64,
    latency: Samples,
}

/// Every GPS counter. Cheap to update from any connection.
#[derive(Default)]
pub struct GpsStats {
    /// Open connections, by protocol index ([`UNKNOWN`] before detection).
    pub active: [AtomicU64; PROTOCOLS + 1],
    /// Accepted connections.
    pub connections_total: AtomicU64,
    failed: [AtomicU64; 8],
    closed: [AtomicU64; 7],
    received: [AtomicU64; PROTOCOLS + 1],
    invalid: [[AtomicU64; 5]; PROTOCOLS + 1],
    locations_valid: [AtomicU64; PROTOCOLS],
    locations_without_fix: [AtomicU64; PROTOCOLS],
    points_received: AtomicU64,
    points_processed: AtomicU64,
    points_failed: AtomicU64,
    queue_full: AtomicU64,
    latency_dropped: AtomicU64,
    pending_latencies: Mutex<Vec<f64>>,
    minutes: Mutex<Vec<Minute>>,
}

fn bucket(ring: &mut Vec<Minute>, now_ms: i64) -> &mut Minute {
    let minute = now_ms.div_euclid(60_000);
    if ring.len() < LIVE_MINUTES {
        ring.resize(LIVE_MINUTES, Minute::default());
    }
    let slot = &mut ring[minute.rem_euclid(LIVE_MINUTES as i64) as usize];
    if slot.minute != minute {
        *slot = Minute {
            minute,
            ..Minute::default()
        };
    }
    slot
}

impl GpsStats {
    /// Counts a connection that ended before identification.
    pub fn failure(&self, f: Failure) {
        self.failed[f.index()].fetch_add(1, Relaxed);
    }

    /// Counts an identified connection closed for `c`.
    pub fn closed(&self, c: Close) {
        self.closed[c as usize].fetch_add(1, Relaxed);
    }

    /// A message (good or bad) from a connection speaking `protocol` (`UNKNOWN` before detection).
    pub fn message(&self, protocol: usize, error: Option<FrameError>, now_ms: i64) {
        self.received[protocol].fetch_add(1, Relaxed);
        if let Some(e) = error {
            self.invalid[protocol][e.index()].fetch_add(1, Relaxed);
        }
        bucket(&mut lock(&self.minutes), now_ms).messages += 1;
    }

    /// Counts a valid location decoded from protocol `p`.
    pub fn location_valid(&self, p: Protocol) {
        self.locations_valid[p.index()].fetch_add(1, Relaxed);
    }

    /// Counts a position report without a usable fix (WiFi/LBS-only, or not positioned).
    pub fn location_without_fix(&self, p: Protocol) {
        self.locations_without_fix[p.index()].fetch_add(1, Relaxed);
    }

    /// Points handed to delivery, stored, and failed.
    pub fn points(&self, received: u64, processed: u64, failed: u64, now_ms: i64) {
        self.points_received.fetch_add(received, Relaxed);
        self.points_processed.fetch_add(processed, Relaxed);
        self.points_failed.fetch_add(failed, Relaxed);
        let mut ring = lock(&self.minutes);
        let b = bucket(&mut ring, now_ms);
        b.received += received;
        b.processed += processed;
        b.failed += failed;
    }

    /// Counts a point batch refused because the queue was full.
    pub fn queue_full(&self) {
        self.queue_full.fetch_add(1, Relaxed);
    }

    /// Latencies (ms) of points just stored.
    pub fn latencies(&self, values: impl Iterator<Item = f64>, now_ms: i64) {
        let mut pending = lock(&self.pending_latencies);
        let mut ring = lock(&self.minutes);
        let b = bucket(&mut ring, now_ms);
        for v in values {
            b.latency.add(v, 1);
            if pending.len() < MAX_PENDING_LATENCIES {
                pending.push(v);
            } else {
                self.latency_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// (received, processed, failed) since start.
    pub fn point_counts(&self) -> (u64, u64, u64) {
        (
            self.points_received.load(Relaxed),
            self.points_processed.load(Relaxed),
            self.points_failed.load(Relaxed),
        )
    }

    /// Totals over the last `minutes` minutes: (messages, received, processed, failed, latency).
    pub fn window(&self, minutes: i64, now_ms: i64) -> (u64, u64, u64, u64, Samples) {
        let now_min = now_ms.div_euclid(60_000);
        let ring = lock(&self.minutes);
        let mut t = (0, 0, 0, 0, Samples::new());
        for m in ring
            .iter()
            .filter(|m| m.minute > now_min - minutes && m.minute <= now_min)
        {
            t.0 += m.messages;
            t.1 += m.received;
            t.2 += m.processed;
            t.3 += m.failed;
            t.4.merge(m.latency.clone());
        }
        t
    }
}

/// Counter values at the last publish, to send deltas.
#[derive(Default)]
struct Last {
    connections_total: u64,
    failed: [u64; 8],
    received: [u64; PROTOCOLS + 1],
    invalid: [[u64; 5]; PROTOCOLS + 1],
    locations_valid: [u64; PROTOCOLS],
    locations_without_fix: [u64; PROTOCOLS],
    points: [u64; 3],
}

/// Publishes [`GpsStats`] into its own aggregation shard.
pub struct Publisher {
    /// The shard the GPS metrics are applied to.
    pub shard: Arc<Mutex<Shard>>,
    /// Orders this shard's gauge writes against the other shards' ([`Shared::seq`]).
    pub shared: Arc<Shared>,
    /// The counters published.
    pub stats: Arc<GpsStats>,
    /// Devices, for the device gauges.
    pub registry: Arc<Registry>,
    /// The abuse guard, for the blacklist gauge.
    pub guard: Arc<Guard>,
    /// Prefix of the fleet metrics' names (`gps.metric_prefix`).
    pub prefix: String,
    /// Prefix of the point metrics' names (`gps.live_metric_prefix`).
    pub live_prefix: String,
    last: Last,
    last_at: Option<Instant>,
}

/// Typed values on their way into the publisher's shard, each named `prefix + name`.
struct Put<'a> {
    shard: &'a mut Shard,
    seq: u64,
    name: String,
    /// Values the shard refused (a new context at `aggregate.max_contexts`).
    refused: u64,
}

impl Put<'_> {
    fn value(&mut self, kind: MetricKind, prefix: &str, name: &str, tags: &[&str], v: Value) {
        self.name.clear();
        self.name.push_str(prefix);
        self.name.push_str(name);
        let mut tags = tags.to_vec();
        if !self
            .shard
            .apply_value(kind, &self.name, &mut tags, v, self.seq)
        {
            self.refused += 1;
        }
    }

    /// Sets the gauge `prefix + name` with `tags` (`k:v`) to `v`.
    fn gauge(&mut self, prefix: &str, name: &str, tags: &[&str], v: f64) {
        self.value(MetricKind::Gauge, prefix, name, tags, Value::Gauge(v));
    }

    /// Adds `n` to the counter `prefix + name` with `tags` (`k:v`).
    fn count(&mut self, prefix: &str, name: &str, tags: &[&str], n: u64) {
        self.value(
            MetricKind::Counter,
            prefix,
            name,
            tags,
            Value::Count(n as f64),
        );
    }
}

impl Publisher {
    /// A publisher whose first publish sends every counter's whole value.
    pub fn new(
        shard: Arc<Mutex<Shard>>,
        shared: Arc<Shared>,
        stats: Arc<GpsStats>,
        registry: Arc<Registry>,
        guard: Arc<Guard>,
        prefix: &str,
        live_prefix: &str,
    ) -> Publisher {
        Publisher {
            shard,
            shared,
            stats,
            registry,
            guard,
            prefix: prefix.to_string(),
            live_prefix: live_prefix.to_string(),
            last: Last::default(),
            last_at: None,
        }
    }

    /// Sends every GPS metric once: counters as deltas since the last call, gauges as now.
    pub fn publish(&mut self, now: Instant, now_ms: i64) {
        let s = Arc::clone(&self.stats);
        let (p, lp) = (self.prefix.as_str(), self.live_prefix.as_str());
        let load = |a: &AtomicU64| a.load(Relaxed);
        let (devices, active) = self.registry.counts(now_ms);
        let blacklisted = self.guard.counts(now).0;
        let latencies = std::mem::take(&mut *lock(&s.pending_latencies));
        // Tags, built before the shard is locked. `Protocol::index` indexes `PROTOCOL_LABELS`.
        let tags = |k: &str, v: &mut dyn Iterator<Item = &str>| -> Vec<String> {
            v.map(|v| format!("{k}:{v}")).collect()
        };
        let protocol = tags("protocol", &mut PROTOCOL_LABELS.iter().copied());
        let failure = tags("reason", &mut Failure::ALL.iter().map(|f| f.as_label()));
        let invalid = tags("reason", &mut FrameError::ALL.iter().map(|e| e.as_label()));
        let last = &mut self.last;

        let mut shard = lock(&self.shard);
        let mut out = Put {
            shard: &mut shard,
            seq: self.shared.seq(),
            name: String::new(),
            refused: 0,
        };
        for (i, tag) in protocol.iter().enumerate() {
            out.gauge(p, "active_connections", &[tag], load(&s.active[i]) as f64);
        }
        let total = load(&s.connections_total);
        out.count(p, "connections", &[], total - last.connections_total);
        last.connections_total = total;
        for f in Failure::ALL {
            let v = load(&s.failed[f.index()]);
            if v > 0 {
                let d = v - last.failed[f.index()];
                out.count(p, "connections_failed", &[&failure[f.index()]], d);
            }
            last.failed[f.index()] = v;
        }
        for proto in Protocol::ALL {
            let tag = &protocol[proto.index()];
            out.gauge(p, "active_devices", &[tag], active[proto.index()] as f64);
        }
        out.gauge(p, "devices", &[], devices as f64);
        out.gauge(p, "blacklisted_ips", &[], blacklisted as f64);

        let mut messages = 0;
        for (i, tag) in protocol.iter().enumerate() {
            let v = load(&s.received[i]);
            messages += v - last.received[i];
            out.count(p, "messages_received", &[tag], v - last.received[i]);
            last.received[i] = v;
            for e in FrameError::ALL {
                let v = load(&s.invalid[i][e.index()]);
                if v > 0 {
                    let d = v - last.invalid[i][e.index()];
                    out.count(p, "messages_invalid", &[tag, &invalid[e.index()]], d);
                }
                last.invalid[i][e.index()] = v;
            }
        }
        let elapsed = self
            .last_at
            .map(|t| now.duration_since(t).as_secs_f64())
            .filter(|e| *e > 0.0);
        if let Some(secs) = elapsed {
            out.gauge(p, "messages_per_second", &[], messages as f64 / secs);
        }
        self.last_at = Some(now);
        for proto in Protocol::ALL {
            let v = load(&s.locations_valid[proto.index()]);
            let tag = &protocol[proto.index()];
            let d = v - last.locations_valid[proto.index()];
            out.count(p, "locations_valid", &[tag], d);
            last.locations_valid[proto.index()] = v;
            let v = load(&s.locations_without_fix[proto.index()]);
            let d = v - last.locations_without_fix[proto.index()];
            out.count(p, "locations_without_fix", &[tag], d);
            last.locations_without_fix[proto.index()] = v;
        }
        let (r, pr, f) = s.point_counts();
        for (k, (name, v)) in [
            ("points_received", r),
            ("points_processed", pr),
            ("points_failed", f),
        ]
        .into_iter()
        .enumerate()
        {
            out.count(lp, name, &[], v - last.points[k]);
            last.points[k] = v;
        }
        if !latencies.is_empty() {
            let mut h = Samples::new();
            for v in latencies {
                h.add(v, 1);
            }
            out.value(MetricKind::Histogram, lp, "latency", &[], Value::Samples(h));
        }
        if out.refused > 0 {
            tracing::warn!(
                refused = out.refused,
                "some GPS metrics were not aggregated (aggregate.max_contexts reached)"
            );
        }
    }
}

/// `tallyd_gps_*`: the subsystem's own health and bounds.
pub struct GpsTelemetry {
    /// Connection and point counters.
    pub stats: Arc<GpsStats>,
    /// Devices (evictions, refusals).
    pub registry: Arc<Registry>,
    /// The abuse guard (blacklistings, tracked IPs).
    pub guard: Arc<Guard>,
}

impl Collect for GpsTelemetry {
    fn collect(&self, out: &mut Families) {
        let s = &self.stats;
        let f = out.counter(
            "tallyd_gps_connections_closed",
            "GPS connections closed after identification, by reason.",
        );
        f.by(
            "reason",
            Close::ALL.map(|c| (c.as_label(), s.closed[c as usize].load(Relaxed) as f64)),
        );
        let counters = [
            (
                "tallyd_gps_registry_evicted",
                "Disconnected devices forgotten at gps.max_devices.",
                &self.registry.evicted,
            ),
            (
                "tallyd_gps_registry_refused",
                "New devices not tracked because gps.max_devices devices were connected.",
                &self.registry.refused,
            ),
            (
                "tallyd_gps_registry_unidentified_evicted",
                "Disconnected plain-NMEA devices (nmea:<ip>:<port>) forgotten at \
                 gps.max_unidentified_devices.",
                &self.registry.unidentified_evicted,
            ),
            (
                "tallyd_gps_registry_unidentified_refused",
                "New plain-NMEA devices not tracked because gps.max_unidentified_devices \
                 were connected.",
                &self.registry.unidentified_refused,
            ),
            (
                "tallyd_gps_blacklistings",
                "IPs put on the GPS blacklist.",
                &self.guard.blacklistings,
            ),
            (
                "tallyd_gps_points_queue_full",
                "Point batches refused because gps.points_queue_batches were waiting.",
                &s.queue_full,
            ),
            (
                "tallyd_gps_latency_samples_dropped",
                "Latency samples dropped between two publishes (bound 20000).",
                &s.latency_dropped,
            ),
        ];
        out.atomics(Kind::Counter, &[], &counters);
        // The families the shipped GPS health rules watch (alert::rules::names).
        let received: u64 = s.received.iter().map(|a| a.load(Relaxed)).sum();
        let invalid: u64 = s.invalid.iter().flatten().map(|a| a.load(Relaxed)).sum();
        out.counter(
            "tallyd_gps_messages",
            "GPS frames received, valid or not, every protocol.",
        )
        .value(received as f64);
        out.counter(
            "tallyd_gps_invalid_messages",
            "GPS frames rejected as invalid, every protocol and reason.",
        )
        .value(invalid as f64);
        let (identified, unidentified) = self.registry.sizes();
        out.gauge(
            "tallyd_gps_registry_devices",
            "Devices in the registry, by pool: identified (bound gps.max_devices), unidentified \
             (plain NMEA, bound gps.max_unidentified_devices).",
        )
        .by(
            "pool",
            [
                ("identified", identified as f64),
                ("unidentified", unidentified as f64),
            ],
        );
        let (banned, ips) = self.guard.counts(Instant::now());
        out.gauge(
            "tallyd_gps_blacklisted_ips",
            "IPs on the GPS blacklist now (refused at accept).",
        )
        .value(banned as f64);
        out.gauge(
            "tallyd_gps_tracked_ips",
            "Remote IPs tracked by the abuse guard (bound gps.max_tracked_ips).",
        )
        .value(ips as f64);
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
