//! The OTLP export [`Sink`]: a bounded [`Handoff`] from the flusher to an encoder thread that
//! maps each window (`encode.rs`), writes the protobuf requests (gzip-compressed unless
//! configured otherwise) into the durable queue `otlp`, whose sender delivers them with
//! [`OtlpDeliver`].

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use reqwest::header::{HeaderValue, USER_AGENT};
use tracing::{error, info};

use super::config::{Compression, OtlpExportConfig};
use super::deliver::{OtlpDeliver, Partial};
use super::encode::Encoder;
use super::received::Received;
use crate::aggregate::Flush;
use crate::base::handoff::{DropCounter, Handoff};
use crate::base::metrics::{Collect, Families, Kind};
use crate::component::{Context, Error};
use crate::queue::deliver::header_map;
use crate::queue::store::{unix_ms, Meta, Queue};
use crate::queue::{OpenError, Outbox};
use crate::sinks::delivery::{Delivery, Names};
use crate::sinks::Sink;

/// The queue's name, in its directory, the admin API and metric labels.
pub const QUEUE_NAME: &str = "otlp";
/// Windows waiting for the encoder before new ones are dropped (and counted).
pub const WINDOW_BACKLOG: usize = 4;

/// A window and the Unix milliseconds at which the flusher handed it over.
type Window = (Arc<Flush>, u64);

#[derive(Default)]
struct Counters {
    windows_dropped: AtomicU64,
    points: AtomicU64,
    requests: AtomicU64,
    encode_errors: AtomicU64,
    enqueue_errors: AtomicU64,
    streams_dropped: AtomicU64,
    streams: AtomicU64,
}

impl DropCounter for Counters {
    fn dropped(&self) -> &AtomicU64 {
        &self.windows_dropped
    }
}

/// OTLP export, wired by the topology when `otlp_export.enabled`.
pub struct OtlpSink {
    delivery: Delivery<Window, Counters, OtlpDeliver>,
    counters: Arc<Counters>,
    partial: Arc<Partial>,
}

/// The start and end (Unix milliseconds) of a window handed over at `handed_ms`, the previous
/// one having ended at `last_end`: the interval boundary the flusher just passed is the end
/// (`Flush.timestamp` is whole seconds, too coarse for short intervals). The final flush at
/// shutdown ends a partial window early, at the hand-off. Windows never overlap or go back.
pub fn window_span(interval: Duration, handed_ms: u64, last_end: Option<u64>) -> (u64, u64) {
    let iv = (interval.as_millis() as u64).max(1);
    let boundary = handed_ms / iv * iv;
    match last_end {
        Some(l) if boundary <= l => (l, handed_ms.max(l + 1)),
        Some(l) => (boundary.saturating_sub(iv).max(l), boundary),
        None => (boundary.saturating_sub(iv), boundary),
    }
}

impl OtlpSink {
    /// Opens the queue, starts the encoder thread, the sender and the health watcher. Call
    /// from inside the runtime.
    ///
    /// # Errors
    /// The queue directory cannot be used, a header is invalid, the CA file cannot be read or
    /// the HTTP client cannot be built; the message names the setting.
    pub fn start(
        cfg: &OtlpExportConfig,
        received: Received,
        ctx: &Context,
    ) -> Result<Arc<OtlpSink>, Error> {
        let partial = Arc::new(Partial::default());
        let outbox = Outbox::open(&ctx.queue, QUEUE_NAME, &ctx.queues, || {
            let mut h = header_map(&cfg.headers, "otlp_export.headers")?;
            for v in h.values_mut() {
                v.set_sensitive(true);
            }
            h.insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("tallyd/", env!("CARGO_PKG_VERSION"))),
            );
            OtlpDeliver::new(cfg, h, Arc::clone(&partial)).map_err(OpenError::Setup)
        })
        .map_err(|e| Error::start("otlp_export", e))?;
        let d0 = outbox.queue().depth();
        info!(component = "otlp_export", endpoint = %crate::base::redact::url(&cfg.endpoint), protocol = ?cfg.protocol, queued = d0.pending, dead_letters = d0.dlq, "OTLP export on");
        outbox.watch_health("otlp_export", Arc::clone(&ctx.health), |_| None);

        let counters = Arc::new(Counters::default());
        let mut window = WindowEncoder {
            encoder: Encoder::new(cfg, &ctx.host).with_received(received),
            gzip: cfg.compression == Compression::Gzip,
            queue: Arc::clone(outbox.queue()),
            counters: Arc::clone(&counters),
            last_error_log: None,
            last_end: None,
        };
        let windows = Handoff::start_counting(
            "otlp-export-encode",
            WINDOW_BACKLOG,
            Arc::clone(&counters),
            move |w: Window| window.encode(w),
        )
        .map_err(|e| {
            Error::start(
                "otlp_export",
                format!("cannot start the OTLP export encoder thread: {e}"),
            )
        })?;
        let names = Names {
            component: "otlp_export",
            behind: "OTLP export encoder behind (disk stalled?); window dropped",
            stopped: "OTLP export stopped",
        };
        Ok(Arc::new(OtlpSink {
            delivery: Delivery::new(windows, outbox, names),
            counters,
            partial,
        }))
    }

    /// Stops after the final flush: encodes what was handed over, lets the sender deliver for
    /// up to `queue.shutdown_drain`, then stops it. Whatever is left stays on disk.
    pub async fn shutdown(&self) {
        self.delivery.shutdown(|| false).await;
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> &'static str {
        "otlp_export"
    }

    fn consume(&self, flush: &Arc<Flush>) {
        self.delivery.offer((Arc::clone(flush), unix_ms()));
    }
}

/// The encoder thread's state.
struct WindowEncoder {
    encoder: Encoder,
    gzip: bool,
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    last_error_log: Option<Instant>,
    last_end: Option<u64>,
}

/// `body` gzip-compressed.
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    e.write_all(body)?;
    e.finish()
}

impl WindowEncoder {
    fn log_error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if self
            .last_error_log
            .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            error!(component = "otlp_export", error = %e, "{what}");
            self.last_error_log = Some(Instant::now());
        }
    }

    fn encode(&mut self, (flush, handed_ms): Window) {
        let (start, end) = window_span(flush.interval, handed_ms, self.last_end);
        self.last_end = Some(end);
        let ms = 1_000_000;
        let out = self.encoder.encode(&flush, start * ms, end * ms);
        let c = Arc::clone(&self.counters);
        c.streams_dropped.fetch_add(out.streams_dropped, Relaxed);
        c.streams.store(self.encoder.streams() as u64, Relaxed);
        c.points.fetch_add(out.points, Relaxed);
        for req in out.requests {
            let raw = req.encode_to_vec();
            let body = if self.gzip {
                match gzip(&raw) {
                    Ok(b) => b,
                    Err(e) => {
                        c.encode_errors.fetch_add(1, Relaxed);
                        self.log_error("cannot compress a request; it is lost", &e);
                        continue;
                    }
                }
            } else {
                raw
            };
            let meta = Meta {
                content_type: "application/x-protobuf".into(),
                content_encoding: if self.gzip {
                    "gzip".into()
                } else {
                    String::new()
                },
                ..Meta::default()
            };
            match self.queue.push(meta, &body) {
                Ok(_) => {
                    c.requests.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    c.enqueue_errors.fetch_add(1, Relaxed);
                    self.log_error("cannot queue a request; it is lost", &e);
                }
            }
        }
    }
}

impl Collect for OtlpSink {
    fn collect(&self, out: &mut Families) {
        let c = &self.counters;
        let p = &self.partial;
        let counters = [
            (
                "tallyd_otlp_export_windows_dropped",
                "Windows not encoded because the OTLP export encoder was behind.",
                &c.windows_dropped,
            ),
            (
                "tallyd_otlp_export_points",
                "Data points written into the otlp queue.",
                &c.points,
            ),
            (
                "tallyd_otlp_export_requests",
                "Export requests written into the otlp queue.",
                &c.requests,
            ),
            (
                "tallyd_otlp_export_encode_errors",
                "Requests that failed to compress, dropped.",
                &c.encode_errors,
            ),
            (
                "tallyd_otlp_export_enqueue_errors",
                "Requests that could not be written to the queue, lost.",
                &c.enqueue_errors,
            ),
            (
                "tallyd_otlp_export_streams_dropped",
                "Cumulative counter points not sent because the stream memory was full.",
                &c.streams_dropped,
            ),
            (
                "tallyd_otlp_export_partial_success_responses",
                "Delivered requests whose answer reported a partial success.",
                &p.responses,
            ),
            (
                "tallyd_otlp_export_rejected_points",
                "Data points the receiver rejected in partial successes.",
                &p.rejected_points,
            ),
        ];
        out.atomics(Kind::Counter, &[], &counters);
        let gauges = [(
            "tallyd_otlp_export_cumulative_streams",
            "Counter series whose running totals are remembered (cumulative temporality).",
            &c.streams,
        )];
        out.atomics(Kind::Gauge, &[], &gauges);
    }
}
