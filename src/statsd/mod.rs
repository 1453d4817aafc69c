//! StatsD/DogStatsD intake: the parser and the UDP, TCP and Unix datagram listeners.
//!
//! Listeners only decode and hand on: every packet goes through [`Ingest::packet`] into the
//! listener's own aggregation shard. They never wait on a sink.

pub mod config;
pub mod tcp;
pub mod udp;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use config::StatsdConfig;

use crate::aggregate::{Aggregator, Shard, Timestamped};
use crate::component::{bind_tcp, Context, Error, Running, Stage};
use crate::model::dogstatsd::{self as parse, Line, ParseError};
use crate::model::tagstyles::{Rewrite, TagStyles};
use crate::model::{Context as MetricContext, MetricKind};
use crate::telemetry::LocalStats;

/// Starts the newline-delimited TCP listener (`statsd.tcp_listen`) on a shard of its own.
///
/// # Errors
/// The address does not parse or cannot be bound.
pub async fn start_tcp(cfg: &StatsdConfig, ctx: &mut Context) -> Result<Running, Error> {
    if cfg.tcp_listen.is_empty() {
        return Ok(Running::disabled(
            "statsd_tcp",
            Stage::Intake,
            "statsd.tcp_listen is empty",
        ));
    }
    let (listener, local) =
        bind_tcp("statsd TCP listener", "statsd.tcp_listen", &cfg.tcp_listen).await?;
    tracing::info!(component = "statsd_tcp", addr = %local, "listening");
    let server = Arc::new(tcp::TcpServer {
        ingest: Arc::new(Ingest {
            aggregator: Arc::clone(&ctx.aggregator),
            max_tags: cfg.max_tags,
            tag_styles: cfg.tag_styles().map_err(Error::Config)?,
        }),
        shard: {
            let s = ctx.aggregator.new_shard();
            crate::base::lock(&s).set_line_options(cfg.line_options());
            s
        },
        telemetry: Arc::clone(&ctx.telemetry),
        max_connections: cfg.tcp_max_connections,
        idle_timeout: cfg.tcp_idle_timeout,
        max_line: cfg.tcp_max_line_length,
    });
    let token = ctx.shutdown.token(Stage::Intake);
    ctx.shutdown
        .spawn(Stage::Intake, server.run(listener, token));
    Ok(Running::ok(
        "statsd_tcp",
        Stage::Intake,
        local.to_string(),
        (),
    ))
}

/// What every listener needs to turn packets into aggregated samples.
pub struct Ingest {
    /// The aggregator whose shards the lines go to; its
    /// [`Shared::seq`](crate::aggregate::Shared::seq) orders gauge writes.
    pub aggregator: Arc<Aggregator>,
    /// `statsd.max_tags`: a line with more tags is rejected.
    pub max_tags: usize,
    /// `statsd.tag_styles`: the other clients' tag styles read.
    pub tag_styles: TagStyles,
}

impl Ingest {
    /// Parses every line of `packet` into `shard`. A bad line is counted and skipped; the
    /// rest of the packet still counts. When `truncated`, the last line is incomplete and is
    /// counted as such instead of being misread.
    pub fn packet(
        &self,
        packet: &[u8],
        truncated: bool,
        shard: &mut Shard,
        seq: u64,
        stats: &mut LocalStats,
    ) {
        self.packet_with(packet, truncated, stats, |line, m, stats| {
            if let Err(e) = shard.apply(&m, seq, stats) {
                bad_line(stats, e, line);
            }
        });
    }

    /// Like [`Ingest::packet`], but hands each metric line (with its raw text) to `metric`
    /// instead of applying it, so a receiver can route lines to the shard that owns them.
    /// Events and service checks are queued here; bad lines are counted here.
    pub fn packet_with<'a>(
        &self,
        packet: &'a [u8],
        truncated: bool,
        stats: &mut LocalStats,
        mut metric: impl FnMut(&'a [u8], parse::MetricLine<'a>, &mut LocalStats),
    ) {
        let mut lines = parse::lines(packet).peekable();
        while let Some(line) = lines.next() {
            stats.lines += 1;
            if truncated && lines.peek().is_none() {
                bad_line(stats, ParseError::Truncated, line);
                continue;
            }
            if self.tag_styles.any() && !line.starts_with(b"_") {
                let mut buf = Vec::new();
                let rw = self.tag_styles.rewrite(line, &mut buf, |e| {
                    stats.style_errors[e as usize] += 1;
                });
                match rw {
                    Rewrite::Unchanged => {}
                    Rewrite::Reject => continue,
                    Rewrite::Rewritten => {
                        self.apply_rewritten(&buf, stats);
                        continue;
                    }
                }
            }
            match parse::parse_line(line, self.max_tags) {
                Ok(Line::Metric(m)) if m.timestamp.is_some() => {
                    self.timestamped(line, m, stats, &mut metric)
                }
                Ok(Line::Metric(m)) => metric(line, m, stats),
                Ok(Line::Event(ev)) => {
                    skipped_fields(stats, ev.skipped_fields, line);
                    if self.aggregator.push_event(ev) {
                        stats.events += 1;
                    }
                }
                Ok(Line::ServiceCheck(sc)) => {
                    skipped_fields(stats, sc.skipped_fields, line);
                    if self.aggregator.push_check(sc) {
                        stats.service_checks += 1;
                    }
                }
                Err(e) => bad_line(stats, e, line),
            }
        }
    }
}

impl Ingest {
    /// Applies a line rewritten from another client's tag style (owned, so it cannot join a
    /// receiver's batch of borrowed lines) to the datagram receivers' shard at once.
    fn apply_rewritten(&self, line: &[u8], stats: &mut LocalStats) {
        match parse::parse_metric(line, self.max_tags) {
            Ok(m) => {
                let seq = self.aggregator.shared().seq();
                let shard = self.aggregator.datagram_shard();
                if let Err(e) = crate::base::lock(shard).apply(&m, seq, stats) {
                    bad_line(stats, e, line);
                }
            }
            Err(e) => bad_line(stats, e, line),
        }
    }

    /// A line with `|T`. As in the Datadog Agent's no-aggregation pipeline, gauges and counts
    /// keep their timestamp: each value is handed on as its own point, not merged into the
    /// window. Other types are aggregated as usual, the timestamp ignored (and counted).
    fn timestamped<'a>(
        &self,
        line: &'a [u8],
        m: parse::MetricLine<'a>,
        stats: &mut LocalStats,
        metric: &mut impl FnMut(&'a [u8], parse::MetricLine<'a>, &mut LocalStats),
    ) {
        let kind = m.kind;
        if !matches!(kind, MetricKind::Gauge | MetricKind::Counter) {
            let n = if kind == MetricKind::Set {
                1
            } else {
                parse::values(m.values).count() as u64
            };
            self.aggregator.timestamps_ignored(n);
            return metric(line, m, stats);
        }
        let (Ok(name), Some(ts)) = (std::str::from_utf8(m.name), m.timestamp) else {
            return bad_line(stats, ParseError::Utf8, line);
        };
        let mut tags = Vec::new();
        for tag in parse::tags(m.tags) {
            match std::str::from_utf8(tag) {
                Ok(s) => tags.push(s),
                Err(_) => return bad_line(stats, ParseError::Utf8, line),
            }
        }
        let ctx = Arc::new(MetricContext::from_unsorted(kind, name, &tags));
        let rate = if kind == MetricKind::Counter {
            m.sample_rate
        } else {
            1.0
        };
        let points: Vec<Timestamped> = parse::values(m.values)
            .map(|v| Timestamped {
                ctx: Arc::clone(&ctx),
                value: v.value / rate,
                timestamp: ts,
            })
            .collect();
        if points.iter().any(|p| !p.value.is_finite()) {
            return bad_line(stats, ParseError::Value, line);
        }
        let n = points.len() as u64;
        stats.samples += n;
        self.aggregator.push_timestamped(points);
    }
}

/// Counts the optional fields skipped in an event or service check, and logs the line at most
/// once per second for the whole process.
fn skipped_fields(stats: &mut LocalStats, n: u32, line: &[u8]) {
    if n == 0 {
        return;
    }
    stats.fields_skipped += u64::from(n);
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST.load(Relaxed);
    if now > last && LAST.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        let shown = &line[..line.len().min(200)];
        tracing::warn!(
            fields = n,
            line = %String::from_utf8_lossy(shown),
            "skipped unreadable optional fields of an event or service check, kept the rest (further ones this second are counted in tallyd_statsd_fields_skipped_total, not logged)"
        );
    }
}

/// Counts a rejected line and logs it, at most once per second for the whole process.
pub fn bad_line(stats: &mut LocalStats, reason: ParseError, line: &[u8]) {
    stats.error(reason);
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST.load(Relaxed);
    if now > last && LAST.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        let shown = &line[..line.len().min(200)];
        tracing::warn!(
            reason = reason.as_str(),
            line = %String::from_utf8_lossy(shown),
            "rejected a statsd line (further rejections this second are counted in tallyd_statsd_parse_errors_total, not logged)"
        );
    }
}
