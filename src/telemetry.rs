//! tallyd's own metrics (`tallyd_*` on `/metrics`).
//!
//! Counters are plain atomics. Receive loops count into a [`LocalStats`] on their own stack and
//! publish it once per batch, so the hot path never touches a shared cache line per line.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::base::metrics::{self, Collect, Families, Family, Registry};
use crate::model::dogstatsd::ParseError;
use crate::model::tagstyles::StyleError;

/// The statsd transports, as label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams on a UDP socket.
    Udp = 0,
    /// Newline-separated lines on a TCP connection.
    Tcp = 1,
    /// Datagrams on a Unix domain socket.
    Uds = 2,
}

impl Transport {
    /// Every transport, in label order.
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Uds];
    /// The `transport` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Uds => "uds",
        }
    }
}

const REASONS: usize = ParseError::ALL.len();

/// Receive counters of one transport.
#[derive(Default)]
pub struct TransportStats {
    /// Datagrams (UDP, UDS) or reads (TCP).
    pub packets: AtomicU64,
    /// Bytes received.
    pub bytes: AtomicU64,
    /// Non-empty lines, good or bad.
    pub lines: AtomicU64,
}

/// Every counter and gauge tallyd keeps about itself.
pub struct Telemetry {
    started: Instant,
    /// Receive counters, by [`Transport`] index.
    pub transports: [TransportStats; 3],
    /// Rejected lines, by [`ParseError::index`].
    pub parse_errors: [AtomicU64; REASONS],
    /// Tag-style faults (`statsd.tag_styles`), by [`StyleError`] discriminant.
    pub tag_style_errors: [AtomicU64; 4],
    /// Metric values accepted into aggregation.
    pub samples: AtomicU64,
    /// Events accepted.
    pub events: AtomicU64,
    /// Service checks accepted.
    pub service_checks: AtomicU64,
    /// Events and service checks dropped at the per-window limit.
    pub events_dropped: AtomicU64,
    /// Optional fields of events and service checks skipped as unreadable (the line kept).
    pub fields_skipped: AtomicU64,
    /// Timestamped (`|T`) gauge and count values handed on as their own points.
    pub timestamped: AtomicU64,
    /// Timestamped points dropped at the per-window limit.
    pub timestamped_dropped: AtomicU64,
    /// Values of other types sent with `|T`, aggregated with the timestamp ignored.
    pub timestamps_ignored: AtomicU64,
    /// Datagrams larger than `statsd.max_packet_size`.
    pub udp_truncated: AtomicU64,
    /// Failed UDP/UDS receive calls.
    pub udp_receive_errors: AtomicU64,
    /// Open statsd TCP connections (a gauge).
    pub tcp_active: AtomicU64,
    /// Accepted statsd TCP connections.
    pub tcp_total: AtomicU64,
    /// TCP connections refused at `statsd.tcp_max_connections`.
    pub tcp_refused: AtomicU64,
    /// TCP connections closed after `statsd.tcp_idle_timeout`.
    pub tcp_idle_closed: AtomicU64,
    /// Contexts held by the aggregator (a gauge).
    pub contexts: AtomicU64,
    /// Samples dropped because `aggregate.max_contexts` was reached.
    pub samples_dropped_context_limit: AtomicU64,
    /// Set members dropped at `aggregate.max_set_size`.
    pub set_members_dropped: AtomicU64,
    /// Samples beyond the histogram range, recorded at its bound.
    pub histogram_clamped: AtomicU64,
    /// Windows flushed.
    pub flushes: AtomicU64,
    /// Duration of the last flush, nanoseconds.
    pub flush_last_ns: AtomicU64,
    /// The longest flush since start: the last one's time alone hides a slow window between
    /// two scrapes.
    pub flush_max_ns: AtomicU64,
    /// Time the last flush held the shards' locks (ingest waits meanwhile).
    pub flush_locked_ns: AtomicU64,
    /// CPU time the flusher thread spent on the last flush.
    pub flush_cpu_ns: AtomicU64,
    /// Series in the last flush.
    pub flush_series: AtomicU64,
    /// Unix seconds of the last flush.
    pub flush_last_unix: AtomicU64,
    /// Series exposed on `/metrics`.
    pub prom_series: AtomicU64,
    /// Series left out of the last scrape for name and label clashes.
    pub prom_conflicts: AtomicU64,
    /// New series refused at `prometheus.max_series`.
    pub prom_series_dropped: AtomicU64,
    /// Time the Prometheus sink took to fold the last window into its state (on its own
    /// thread, after the flush handed the window over).
    pub prom_update_ns: AtomicU64,
    /// Counter windows `/metrics` refused because their increment was negative.
    pub prom_negative_counters: AtomicU64,
    /// Contexts the mapping file mapped, left unmapped, and dropped.
    pub prom_mapped: AtomicU64,
    /// See `prom_mapped`.
    pub prom_unmapped: AtomicU64,
    /// See `prom_mapped`.
    pub prom_mapping_dropped: AtomicU64,
    /// UDP ports whose kernel drop counters are read from /proc/net/udp at scrape time.
    pub udp_ports: std::sync::Mutex<Vec<u16>>,
    /// Subsystems that collect their own `tallyd_*` families (forwarder, alerts, ...).
    sources: Registry,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            started: Instant::now(),
            transports: Default::default(),
            parse_errors: Default::default(),
            tag_style_errors: Default::default(),
            samples: AtomicU64::new(0),
            events: AtomicU64::new(0),
            service_checks: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            fields_skipped: AtomicU64::new(0),
            timestamped: AtomicU64::new(0),
            timestamped_dropped: AtomicU64::new(0),
            timestamps_ignored: AtomicU64::new(0),
            udp_truncated: AtomicU64::new(0),
            udp_receive_errors: AtomicU64::new(0),
            tcp_active: AtomicU64::new(0),
            tcp_total: AtomicU64::new(0),
            tcp_refused: AtomicU64::new(0),
            tcp_idle_closed: AtomicU64::new(0),
            contexts: AtomicU64::new(0),
            samples_dropped_context_limit: AtomicU64::new(0),
            set_members_dropped: AtomicU64::new(0),
            histogram_clamped: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_last_ns: AtomicU64::new(0),
            flush_max_ns: AtomicU64::new(0),
            flush_locked_ns: AtomicU64::new(0),
            flush_cpu_ns: AtomicU64::new(0),
            flush_series: AtomicU64::new(0),
            flush_last_unix: AtomicU64::new(0),
            prom_series: AtomicU64::new(0),
            prom_conflicts: AtomicU64::new(0),
            prom_series_dropped: AtomicU64::new(0),
            prom_update_ns: AtomicU64::new(0),
            prom_negative_counters: AtomicU64::new(0),
            prom_mapped: AtomicU64::new(0),
            prom_unmapped: AtomicU64::new(0),
            prom_mapping_dropped: AtomicU64::new(0),
            udp_ports: std::sync::Mutex::new(Vec::new()),
            sources: Registry::new(),
        }
    }
}

/// Per-loop counters, published with [`LocalStats::publish`].
#[derive(Default, Debug)]
pub struct LocalStats {
    /// Datagrams or reads.
    pub packets: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Non-empty lines.
    pub lines: u64,
    /// Metric values accepted.
    pub samples: u64,
    /// Events accepted.
    pub events: u64,
    /// Service checks accepted.
    pub service_checks: u64,
    /// Optional fields of events and service checks skipped as unreadable.
    pub fields_skipped: u64,
    /// Rejected lines, by [`ParseError::index`].
    pub errors: [u64; REASONS],
    /// Samples dropped at `aggregate.max_contexts`.
    pub dropped_context_limit: u64,
    /// Set members dropped at `aggregate.max_set_size`.
    pub set_members_dropped: u64,
    /// Tag-style faults, by [`StyleError`] discriminant.
    pub style_errors: [u64; 4],
}

impl LocalStats {
    /// Counts a line rejected for `e`.
    pub fn error(&mut self, e: ParseError) {
        self.errors[e.index()] += 1;
    }

    /// Adds these counts to `t` and zeroes them.
    pub fn publish(&mut self, t: &Telemetry, transport: Transport) {
        let ts = &t.transports[transport as usize];
        add(&ts.packets, self.packets);
        add(&ts.bytes, self.bytes);
        add(&ts.lines, self.lines);
        add(&t.samples, self.samples);
        add(&t.events, self.events);
        add(&t.service_checks, self.service_checks);
        add(&t.fields_skipped, self.fields_skipped);
        add(&t.samples_dropped_context_limit, self.dropped_context_limit);
        add(&t.set_members_dropped, self.set_members_dropped);
        for (i, n) in self.errors.iter().enumerate() {
            add(&t.parse_errors[i], *n);
        }
        for (i, n) in self.style_errors.iter().enumerate() {
            add(&t.tag_style_errors[i], *n);
        }
        *self = LocalStats::default();
    }
}

fn add(a: &AtomicU64, n: u64) {
    if n != 0 {
        a.fetch_add(n, Relaxed);
    }
}

impl Telemetry {
    /// Adds a subsystem whose metrics are collected after tallyd's core ones.
    pub fn register(&self, source: Arc<dyn Collect>) {
        self.sources.register(source);
    }

    /// Total parse errors for `reason` (tests and the smoke check read this).
    pub fn parse_errors(&self, reason: ParseError) -> u64 {
        self.parse_errors[reason.index()].load(Relaxed)
    }

    /// Every `tallyd_*` family now: the core ones, then each registered subsystem's.
    pub fn snapshot(&self) -> Vec<Family> {
        let mut out = Families::new();
        self.collect(&mut out);
        self.sources.collect(&mut out);
        out.into_vec()
    }

    /// Appends every `tallyd_*` family in the text format (or OpenMetrics when `om`).
    pub fn render(&self, out: &mut String, om: bool) {
        metrics::render(&self.snapshot(), out, om);
    }

    /// Sums the `drops` column of /proc/net/udp and /proc/net/udp6 over tallyd's UDP ports.
    pub fn kernel_drops(&self) -> u64 {
        let ports = match self.udp_ports.lock() {
            Ok(p) => p.clone(),
            Err(_) => return 0,
        };
        if ports.is_empty() {
            return 0;
        }
        let mut total = 0;
        for file in ["/proc/net/udp", "/proc/net/udp6"] {
            if let Ok(text) = std::fs::read_to_string(file) {
                total += drops_for_ports(&text, &ports);
            }
        }
        total
    }
}

/// The core families, in the order `/metrics` has always listed them.
impl Collect for Telemetry {
    fn collect(&self, out: &mut Families) {
        let g = |a: &AtomicU64| a.load(Relaxed) as f64;
        let secs = |a: &AtomicU64| a.load(Relaxed) as f64 / 1e9;
        out.gauge("tallyd_build_info", "tallyd build; always 1.")
            .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        out.gauge("tallyd_uptime_seconds", "Seconds since tallyd started.")
            .value(self.started.elapsed().as_secs_f64());
        if let Some((rss, cpu)) = process_stats() {
            out.gauge("tallyd_process_resident_memory_bytes", "Resident set size.")
                .value(rss);
            out.counter("tallyd_process_cpu_seconds", "User and system CPU time.")
                .value(cpu);
        }
        if let Some(n) = crate::base::fds::open_fds() {
            out.gauge("tallyd_process_open_fds", "Open file descriptors.")
                .value(n as f64);
        }
        if let Some(n) = crate::base::fds::soft_limit() {
            out.gauge(
                "tallyd_process_max_fds",
                "The soft RLIMIT_NOFILE (raised to the hard limit at start).",
            )
            .value(n as f64);
        }
        type Field = fn(&TransportStats) -> &AtomicU64;
        let per_transport: [(&'static str, &'static str, Field); 3] = [
            (
                "tallyd_statsd_packets",
                "Datagrams (UDP, UDS) or reads (TCP) received.",
                |t| &t.packets,
            ),
            ("tallyd_statsd_bytes", "Bytes received.", |t| &t.bytes),
            (
                "tallyd_statsd_lines",
                "Non-empty lines received, good or bad.",
                |t| &t.lines,
            ),
        ];
        for (name, help, field) in per_transport {
            let f = out.counter(name, help);
            f.by(
                "transport",
                Transport::ALL.map(|tr| (tr.as_str(), g(field(&self.transports[tr as usize])))),
            );
        }
        let f = out.counter("tallyd_statsd_parse_errors", "Lines rejected, by reason.");
        for r in ParseError::ALL {
            f.sample(&[("reason", r.as_str())], g(&self.parse_errors[r.index()]));
        }
        out.counter(
            "tallyd_statsd_tag_style_errors",
            "Faults in InfluxDB, Librato and SignalFX tags (statsd.tag_styles), by style: a malformed tag is left out, a lone SignalFX bracket leaves the name as sent, mixed (name tags and |# tags on one line) rejects the line.",
        )
        .by(
            "style",
            StyleError::ALL
                .iter()
                .map(|e| (e.as_str(), g(&self.tag_style_errors[*e as usize]))),
        );
        let counters = [
            (
                "tallyd_statsd_samples",
                "Metric values accepted into aggregation.",
                &self.samples,
            ),
            ("tallyd_statsd_events", "Events accepted.", &self.events),
            (
                "tallyd_statsd_service_checks",
                "Service checks accepted.",
                &self.service_checks,
            ),
            (
                "tallyd_statsd_events_dropped",
                "Events and service checks dropped at the per-window limit.",
                &self.events_dropped,
            ),
            (
                "tallyd_statsd_timestamped",
                "Timestamped (|T) gauge and count values sent on as their own points, not aggregated.",
                &self.timestamped,
            ),
            (
                "tallyd_statsd_timestamped_dropped",
                "Timestamped points dropped at the per-window limit (100,000).",
                &self.timestamped_dropped,
            ),
            (
                "tallyd_statsd_timestamps_ignored",
                "Values of types other than gauge and count sent with |T: aggregated, the timestamp ignored.",
                &self.timestamps_ignored,
            ),
            (
                "tallyd_statsd_fields_skipped",
                "Optional fields of events and service checks that could not be read, skipped (the event or check was kept).",
                &self.fields_skipped,
            ),
            (
                "tallyd_statsd_udp_truncated",
                "Datagrams larger than statsd.max_packet_size.",
                &self.udp_truncated,
            ),
            (
                "tallyd_statsd_udp_receive_errors",
                "Failed UDP/UDS receive calls.",
                &self.udp_receive_errors,
            ),
        ];
        for (name, help, a) in counters {
            out.counter(name, help).value(g(a));
        }
        out.counter(
            "tallyd_udp_kernel_drops",
            "Datagrams the kernel dropped on tallyd's UDP sockets (receive buffer full), from /proc/net/udp.",
        )
        .value(self.kernel_drops() as f64);
        out.gauge(
            "tallyd_tcp_connections_active",
            "Open statsd TCP connections.",
        )
        .value(g(&self.tcp_active));
        out.counter("tallyd_tcp_connections", "Accepted statsd TCP connections.")
            .value(g(&self.tcp_total));
        out.counter(
            "tallyd_tcp_connections_refused",
            "TCP connections refused at statsd.tcp_max_connections.",
        )
        .value(g(&self.tcp_refused));
        out.counter(
            "tallyd_tcp_idle_closed",
            "TCP connections closed after statsd.tcp_idle_timeout.",
        )
        .value(g(&self.tcp_idle_closed));
        out.gauge(
            "tallyd_aggregate_contexts",
            "Contexts held by the aggregator.",
        )
        .value(g(&self.contexts));
        out.counter(
            "tallyd_aggregate_samples_dropped",
            "Samples dropped because aggregate.max_contexts was reached.",
        )
        .sample(
            &[("reason", "context_limit")],
            g(&self.samples_dropped_context_limit),
        );
        out.counter(
            "tallyd_aggregate_set_members_dropped",
            "Set members dropped at aggregate.max_set_size.",
        )
        .value(g(&self.set_members_dropped));
        out.counter(
            "tallyd_aggregate_samples_clamped",
            "Samples beyond the histogram range, recorded at its bound.",
        )
        .value(g(&self.histogram_clamped));
        out.counter("tallyd_flush", "Windows flushed.")
            .value(g(&self.flushes));
        out.gauge(
            "tallyd_flush_duration_seconds",
            "Duration of the last flush (aggregation and hand-off to every sink).",
        )
        .value(secs(&self.flush_last_ns));
        out.gauge(
            "tallyd_flush_duration_max_seconds",
            "Duration of the longest flush since tallyd started.",
        )
        .value(secs(&self.flush_max_ns));
        out.gauge(
            "tallyd_flush_locked_seconds",
            "Time the last flush held the aggregation shards' locks; ingest into a shard waits while it is held.",
        )
        .value(secs(&self.flush_locked_ns));
        out.gauge(
            "tallyd_flush_cpu_seconds",
            "CPU time the flusher thread spent on the last flush; well below the duration means it waited for a core.",
        )
        .value(secs(&self.flush_cpu_ns));
        out.gauge("tallyd_flush_series", "Series in the last flush.")
            .value(g(&self.flush_series));
        out.gauge(
            "tallyd_flush_last_timestamp_seconds",
            "Unix time of the last flush.",
        )
        .value(g(&self.flush_last_unix));
        out.gauge("tallyd_prometheus_series", "Series exposed on /metrics.")
            .value(g(&self.prom_series));
        out.gauge(
            "tallyd_prometheus_conflicting_series",
            "Series left out of the last scrape because their name and labels clashed with another series.",
        )
        .value(g(&self.prom_conflicts));
        out.counter(
            "tallyd_prometheus_series_dropped",
            "New series refused at prometheus.max_series.",
        )
        .value(g(&self.prom_series_dropped));
        out.gauge(
            "tallyd_prometheus_update_seconds",
            "Time the Prometheus sink took to fold the last window into the exposed state, on its own thread.",
        )
        .value(secs(&self.prom_update_ns));
        out.counter(
            "tallyd_prometheus_samples_rejected",
            "Counter windows /metrics refused, by reason: negative_counter (the window's increments added up to less than zero, which would lower a cumulative _total).",
        )
        .sample(
            &[("reason", "negative_counter")],
            g(&self.prom_negative_counters),
        );
        out.counter(
            "tallyd_prometheus_mapping_contexts",
            "Contexts looked up in prometheus.mapping_file (once each, when first seen), by result: mapped, unmapped, dropped.",
        )
        .by(
            "result",
            [
                ("mapped", g(&self.prom_mapped)),
                ("unmapped", g(&self.prom_unmapped)),
                ("dropped", g(&self.prom_mapping_dropped)),
            ],
        );
    }
}

/// Parses /proc/net/udp text: `sl local_address rem_address st ... drops` (drops is the last column).
fn drops_for_ports(text: &str, ports: &[u16]) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port_hex = cols.get(1)?.rsplit(':').next()?;
            let port = u16::from_str_radix(port_hex, 16).ok()?;
            ports
                .contains(&port)
                .then(|| cols.last()?.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// (resident bytes, cpu seconds) of this process, from /proc.
pub fn process_stats() -> Option<(f64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // Linux reports in pages and clock ticks; 4 KiB pages and 100 Hz ticks on every mainstream target.
    Some((pages * 4096.0, (utime + stime) / 100.0))
}

/// Renders telemetry alone (handy in tests).
pub fn render_to_string(t: &Telemetry) -> String {
    let mut s = String::new();
    t.render(&mut s, false);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_udp_drops() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
   10: 00000000:1FBD 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12345 2 0000000000000000 17\n\
   11: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12346 2 0000000000000000 4\n";
        assert_eq!(drops_for_ports(text, &[8125]), 17);
        assert_eq!(drops_for_ports(text, &[8125, 53]), 21);
        assert_eq!(drops_for_ports(text, &[9]), 0);
    }

    #[test]
    fn local_stats_publish_and_reset() {
        let t = Telemetry::default();
        let mut l = LocalStats {
            packets: 2,
            lines: 5,
            ..Default::default()
        };
        l.error(ParseError::Value);
        l.publish(&t, Transport::Tcp);
        assert_eq!(
            t.transports[Transport::Tcp as usize].packets.load(Relaxed),
            2
        );
        assert_eq!(t.parse_errors(ParseError::Value), 1);
        assert_eq!(l.packets, 0);
        let text = render_to_string(&t);
        assert!(
            text.contains("tallyd_statsd_parse_errors_total{reason=\"invalid_value\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tallyd_statsd_lines_total{transport=\"tcp\"} 5\n"),
            "{text}"
        );
    }
}
