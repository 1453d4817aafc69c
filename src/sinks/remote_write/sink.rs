//! The remote write [`Sink`]: a bounded [`Handoff`] from the flusher to an encoder thread that
//! owns the exposed state, encodes each window and writes the requests into the durable queue
//! `remote_write` (an [`Outbox`]); the queue's sender posts them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, USER_AGENT};
use tracing::{error, info};

use super::encode::Encoder;
use crate::aggregate::Flush;
use crate::base::error::ConfigError;
use crate::base::handoff::{DropCounter, Handoff};
use crate::base::metrics::{Collect, Families, Kind};
use crate::component::{Context, Error};
use crate::queue::deliver::{header_map, HttpDeliver, RetryPolicy};
use crate::queue::store::{unix_ms, Meta, Queue};
use crate::queue::{OpenError, Outbox};
use crate::sinks::delivery::{Delivery, Names};
use crate::sinks::prometheus::config::PrometheusConfig;
use crate::sinks::prometheus::{Exposition, Reshaper};
use crate::sinks::Sink;

/// The queue's name, in its directory, the admin API and metric labels.
pub const QUEUE_NAME: &str = "remote_write";
/// Windows waiting for the encoder before new ones are dropped (and counted).
pub const WINDOW_BACKLOG: usize = 4;
/// `Content-Type` of every request.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// `Content-Encoding` of every request.
pub const CONTENT_ENCODING: &str = "snappy";
/// `X-Prometheus-Remote-Write-Version` of every request.
pub const PROTOCOL_VERSION: &str = "0.1.0";

/// A window and the Unix milliseconds at which the flusher handed it over.
type Window = (Arc<Flush>, u64);

#[derive(Default)]
struct Counters {
    windows_dropped: AtomicU64,
    series_dropped: AtomicU64,
    conflicts: AtomicU64,
    samples: AtomicU64,
    requests: AtomicU64,
    compress_errors: AtomicU64,
    enqueue_errors: AtomicU64,
    series: AtomicU64,
}

impl DropCounter for Counters {
    fn dropped(&self) -> &AtomicU64 {
        &self.windows_dropped
    }
}

/// Remote write delivery, wired by `lib.rs` when `remote_write.url` is set.
pub struct RemoteWriteSink {
    delivery: Delivery<Window, Counters>,
    counters: Arc<Counters>,
}

/// The headers every request carries (besides Content-Type and Content-Encoding, which come
/// with each queued payload).
///
/// # Errors
/// A header name or value is invalid; the error names the key.
pub fn headers(cfg: &super::RemoteWriteConfig) -> Result<HeaderMap, ConfigError> {
    let mut h = header_map(&cfg.headers, "remote_write.headers")?;
    h.insert(
        HeaderName::from_static("x-prometheus-remote-write-version"),
        HeaderValue::from_static(PROTOCOL_VERSION),
    );
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("tallyd/", env!("CARGO_PKG_VERSION"))),
    );
    let auth = if !cfg.bearer_token.is_empty() {
        Some(format!("Bearer {}", cfg.bearer_token))
    } else if !cfg.basic_auth_user.is_empty() {
        let pair = format!("{}:{}", cfg.basic_auth_user, cfg.basic_auth_password);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    } else {
        None
    };
    if let Some(a) = auth {
        let mut v = HeaderValue::from_str(&a).map_err(|_| {
            ConfigError::invalid(
                "remote_write",
                ": the credentials contain characters not allowed in a header",
            )
        })?;
        v.set_sensitive(true);
        h.insert(AUTHORIZATION, v);
    }
    Ok(h)
}

impl RemoteWriteSink {
    /// Opens the queue, starts the encoder thread, the sender and the health watcher. Call
    /// from inside the runtime.
    ///
    /// # Errors
    /// The queue directory cannot be used, a header is invalid, or the HTTP client cannot be
    /// built; the message names the setting.
    pub fn start(
        rw: &super::RemoteWriteConfig,
        prometheus: &PrometheusConfig,
        reshaper: &Arc<Reshaper>,
        ctx: &Context,
    ) -> Result<Arc<RemoteWriteSink>, Error> {
        let outbox = Outbox::open(&ctx.queue, QUEUE_NAME, &ctx.queues, || {
            let mut deliver = HttpDeliver::new(&rw.url, headers(rw)?, rw.timeout, None)
                .map_err(|e| OpenError::client("remote_write.url", e))?;
            deliver.policy = RetryPolicy::RemoteWrite;
            Ok(deliver)
        })
        .map_err(|e| Error::start("remote_write", e))?;
        let d0 = outbox.queue().depth();
        info!(component = "remote_write", url = %crate::base::redact::url(&rw.url), queued = d0.pending, dead_letters = d0.dlq, "remote write on");
        let health = Arc::clone(&ctx.health);
        outbox.watch_health("remote_write", health, |_: &crate::queue::store::Depth| {
            None
        });

        let counters = Arc::new(Counters::default());
        let encoder = Encoder::new(&rw.external_labels, rw.max_samples_per_request);
        let opts = prometheus.expose_options().map_err(Error::Config)?;
        let mut state =
            Exposition::with_options(prometheus.series_ttl, prometheus.max_series, &opts);
        state.track_expired();
        state.follow(Arc::clone(reshaper));
        let mut window = WindowEncoder {
            state,
            encoder,
            queue: Arc::clone(outbox.queue()),
            counters: Arc::clone(&counters),
            last_error_log: None,
            last_ms: None,
        };
        let windows = Handoff::start_counting(
            "remote-write-encode",
            WINDOW_BACKLOG,
            Arc::clone(&counters),
            move |w: Window| window.encode(w),
        )
        .map_err(|e| {
            Error::start(
                "remote_write",
                format!("cannot start the remote write encoder thread: {e}"),
            )
        })?;
        let names = Names {
            component: "remote_write",
            behind: "remote write encoder behind (disk stalled?); window dropped",
            stopped: "remote write stopped",
        };
        Ok(Arc::new(RemoteWriteSink {
            delivery: Delivery::new(windows, outbox, names),
            counters,
        }))
    }

    /// Stops after the final flush: encodes what was handed over, lets the sender deliver for
    /// up to `queue.shutdown_drain`, then stops it. Whatever is left stays on disk.
    pub async fn shutdown(&self) {
        self.delivery.shutdown(|| false).await;
    }
}

impl Sink for RemoteWriteSink {
    fn name(&self) -> &'static str {
        "remote_write"
    }

    fn consume(&self, flush: &Arc<Flush>) {
        // The hand-off time: the flusher runs right at the window boundary.
        self.delivery.offer((Arc::clone(flush), unix_ms()));
    }
}

/// The sample time of a window handed over at `now_ms`: the window's end, which is the
/// interval boundary the flusher just passed. The final flush at shutdown ends a partial window
/// early: its boundary is the previous window's end, so it gets the hand-off time instead. A
/// receiver refuses a second, different sample at a time it already holds ("duplicate sample for
/// timestamp"), so times never repeat or go back, whatever the clock does.
fn window_time_ms(interval: Duration, now_ms: u64, last_ms: Option<u64>) -> u64 {
    let iv = (interval.as_millis() as u64).max(1);
    let boundary = now_ms / iv * iv;
    match last_ms {
        Some(last) if boundary <= last => now_ms.max(last + 1),
        _ => boundary,
    }
}

/// The encoder thread's own state: the exposed series, and what it remembers between windows.
struct WindowEncoder {
    state: Exposition,
    encoder: Encoder,
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    last_error_log: Option<Instant>,
    last_ms: Option<u64>,
}

impl WindowEncoder {
    /// Folds one window into the state, encodes the state and writes the requests into the
    /// queue; a write error is counted and logged at most once a minute.
    fn encode(&mut self, (flush, handed_ms): Window) {
        let c = &*self.counters;
        let dropped = self.state.update(&flush);
        c.series_dropped.fetch_add(dropped, Relaxed);
        c.series.store(self.state.len() as u64, Relaxed);
        let ts = window_time_ms(flush.interval, handed_ms, self.last_ms);
        self.last_ms = Some(ts);
        let stale = self.state.take_expired();
        let out = self
            .encoder
            .encode_with_stale(&self.state, Some(&stale), ts as i64);
        c.conflicts.store(out.conflicts, Relaxed);
        c.compress_errors.fetch_add(out.compress_errors, Relaxed);
        c.samples.fetch_add(out.samples, Relaxed);
        for body in out.bodies {
            let meta = Meta {
                content_type: CONTENT_TYPE.into(),
                content_encoding: CONTENT_ENCODING.into(),
                ..Meta::default()
            };
            match self.queue.push(meta, &body) {
                Ok(_) => {
                    c.requests.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    c.enqueue_errors.fetch_add(1, Relaxed);
                    if self
                        .last_error_log
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
                    {
                        error!(component = "remote_write", error = %e, kind = e.as_label(), "cannot queue a request; it is lost");
                        self.last_error_log = Some(Instant::now());
                    }
                }
            }
        }
    }
}

impl Collect for RemoteWriteSink {
    fn collect(&self, out: &mut Families) {
        let c = &self.counters;
        let counters = [
            (
                "tallyd_remote_write_windows_dropped",
                "Windows not encoded because the remote write encoder was behind.",
                &c.windows_dropped,
            ),
            (
                "tallyd_remote_write_series_dropped",
                "New series not sent because prometheus.max_series was reached.",
                &c.series_dropped,
            ),
            (
                "tallyd_remote_write_samples",
                "Samples written into the remote_write queue.",
                &c.samples,
            ),
            (
                "tallyd_remote_write_requests",
                "Requests written into the remote_write queue.",
                &c.requests,
            ),
            (
                "tallyd_remote_write_compress_errors",
                "Requests that failed to encode or compress, dropped.",
                &c.compress_errors,
            ),
            (
                "tallyd_remote_write_enqueue_errors",
                "Requests that could not be written to the queue, lost.",
                &c.enqueue_errors,
            ),
        ];
        out.atomics(Kind::Counter, &[], &counters);
        let gauges = [
            (
                "tallyd_remote_write_series",
                "Series in the remote write state (sent every window).",
                &c.series,
            ),
            (
                "tallyd_remote_write_conflicting_series",
                "Series left out of the last window for name clashes.",
                &c.conflicts,
            ),
        ];
        out.atomics(Kind::Gauge, &[], &gauges);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::remote_write::RemoteWriteConfig;

    #[test]
    fn sample_time_is_the_window_end_and_never_repeats() {
        let iv = Duration::from_millis(200);
        // Regular flushes, just after their boundary.
        assert_eq!(window_time_ms(iv, 1_000_003, None), 1_000_000);
        assert_eq!(window_time_ms(iv, 1_000_201, Some(1_000_000)), 1_000_200);
        // The final flush mid-window: the hand-off time, not the previous window's end.
        assert_eq!(window_time_ms(iv, 1_000_290, Some(1_000_200)), 1_000_290);
        // A clock that stepped back still moves forward.
        assert_eq!(window_time_ms(iv, 999_000, Some(1_000_290)), 1_000_291);
        let ten = Duration::from_secs(10);
        assert_eq!(
            window_time_ms(ten, 1_700_000_010_050, None),
            1_700_000_010_000
        );
    }

    #[test]
    fn request_headers() {
        let mut cfg = RemoteWriteConfig {
            bearer_token: "tok".into(),
            ..RemoteWriteConfig::default()
        };
        cfg.headers.insert("X-Scope-OrgID".into(), "team-a".into());
        let h = headers(&cfg).expect("headers");
        assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
        assert_eq!(h["authorization"], "Bearer tok");
        assert_eq!(h["x-scope-orgid"], "team-a");
        assert!(h["user-agent"]
            .to_str()
            .expect("ascii")
            .starts_with("tallyd/"));
        let cfg = RemoteWriteConfig {
            basic_auth_user: "Aladdin".into(),
            basic_auth_password: "open sesame".into(),
            ..RemoteWriteConfig::default()
        };
        // RFC 7617's example.
        assert_eq!(
            headers(&cfg).expect("headers")["authorization"],
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let bad = |f: &dyn Fn(&mut RemoteWriteConfig), key: &str| {
            let mut c = RemoteWriteConfig::default();
            f(&mut c);
            let e = c.validate().expect_err(key);
            assert!(e.key.starts_with(key), "{e} should name {key}");
        };
        bad(&|c| c.url = "prom:9090".into(), "remote_write.url");
        bad(
            &|c| c.max_samples_per_request = 0,
            "remote_write.max_samples_per_request",
        );
        bad(&|c| c.timeout = Duration::ZERO, "remote_write.timeout");
        bad(
            &|c| {
                c.bearer_token = "t".into();
                c.basic_auth_user = "u".into();
            },
            "remote_write.bearer_token",
        );
        bad(
            &|c| c.basic_auth_password = "p".into(),
            "remote_write.basic_auth_password",
        );
        bad(
            &|c| {
                c.headers.insert("Content-Type".into(), "text/plain".into());
            },
            "remote_write.headers",
        );
        bad(
            &|c| {
                c.headers.insert("bad header".into(), "x".into());
            },
            "remote_write.headers",
        );
        bad(
            &|c| {
                c.external_labels.insert("__name__".into(), "x".into());
            },
            "remote_write.external_labels",
        );
        bad(
            &|c| {
                c.external_labels.insert("cluster".into(), String::new());
            },
            "remote_write.external_labels",
        );
        assert!(RemoteWriteConfig::default().validate().is_ok());
    }
}
