//! The Datadog [`Sink`]: a bounded [`Handoff`] from the flusher to an encoder thread, which
//! writes payloads into the durable queue `datadog` (an [`Outbox`]); its sender posts them.
//!
//! `consume` never blocks: it offers the window to a channel of [`WINDOW_BACKLOG`] slots and
//! counts the window as dropped if the encoder is that far behind (a stalled disk). The API key
//! is checked once at start; the `datadog` component in `/health` follows the key's state and
//! the queue's delivery.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::config::DatadogConfig;
use super::encode::{EncodeStats, Encoder};
use super::events::EventQueue;
use super::zerofill::ZeroFill;
use crate::aggregate::Flush;
use crate::base::error::ConfigError;
use crate::base::handoff::{DropCounter, Handoff};
use crate::base::lock;
use crate::base::metrics::{Collect, Families, Kind};
use crate::base::redact;
use crate::component::{Context, Error};
use crate::queue::deliver::{HttpDeliver, KeyState, KeyStatus};
use crate::queue::store::{unix_ms, Meta, Queue};
use crate::queue::{Backoff, OpenError, Outbox};
use crate::sinks::delivery::{Delivery, Names};
use crate::sinks::Sink;

/// The queue's name, in its directory, the admin API and metric labels.
pub const QUEUE_NAME: &str = "datadog";
/// Windows waiting for the encoder before new ones are dropped (and counted).
pub const WINDOW_BACKLOG: usize = 4;
const VALIDATE_PATH: &str = "/api/v1/validate";

#[derive(Default)]
struct Counters {
    windows_dropped: AtomicU64,
    oversized: AtomicU64,
    compress_errors: AtomicU64,
    queue_errors: AtomicU64,
}

impl DropCounter for Counters {
    fn dropped(&self) -> &AtomicU64 {
        &self.windows_dropped
    }
}

/// Datadog delivery, wired by `lib.rs` when an API key is set.
pub struct DatadogSink {
    delivery: Delivery<Arc<Flush>, Counters>,
    counters: Arc<Counters>,
    key: Arc<KeyStatus>,
    events: EventQueue,
    /// Replaced by a reload ([`DatadogSink::set_encoding`]); read once per window.
    encoder: Arc<Mutex<Arc<Encoder>>>,
    host: String,
}

/// `DD-Agent-Payload`: the agent-payload (v5) release the protobuf messages match.
pub const AGENT_PAYLOAD_VERSION: &str = "5.0.182";

/// The headers every request carries.
///
/// # Errors
/// `datadog.api_key` is not a valid header value.
pub fn headers(api_key: &str) -> Result<HeaderMap, ConfigError> {
    let mut h = HeaderMap::new();
    let key = HeaderValue::from_str(api_key).map_err(|_| {
        ConfigError::invalid(
            "datadog.api_key",
            " contains characters not allowed in a header",
        )
    })?;
    h.insert(HeaderName::from_static("dd-api-key"), key);
    h.insert(
        HeaderName::from_static("dd-agent-version"),
        HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    // The version of DataDog/agent-payload whose messages the bodies follow, as the Agent's
    // serializer sends it (it does so on protobuf payloads; here every request carries it,
    // which the JSON intakes ignore).
    h.insert(
        HeaderName::from_static("dd-agent-payload"),
        HeaderValue::from_static(AGENT_PAYLOAD_VERSION),
    );
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("tallyd/", env!("CARGO_PKG_VERSION"))),
    );
    Ok(h)
}

impl DatadogSink {
    /// Opens the queue, starts the encoder thread, the sender, the key check and the health
    /// watcher. Call from inside the runtime.
    ///
    /// # Errors
    /// The queue directory cannot be used, or the HTTP client cannot be built; the message
    /// names the setting.
    pub fn start(d: &DatadogConfig, ctx: &Context) -> Result<Arc<DatadogSink>, Error> {
        let host = crate::base::host::host_name(&d.hostname);
        let base = d.base_url();
        let outbox = Outbox::open(&ctx.queue, QUEUE_NAME, &ctx.queues, || {
            HttpDeliver::new(
                &base,
                headers(&d.api_key)?,
                d.request_timeout,
                Some(VALIDATE_PATH.into()),
            )
            .map_err(|e| OpenError::client(format!("{} (datadog.url)", redact::url(&base)), e))
        })
        .map_err(|e| Error::start("datadog", e))?;
        let key = Arc::clone(&outbox.deliver().key);

        let d0 = outbox.queue().depth();
        info!(component = "datadog", url = %redact::url(&base), host = %host, queued = d0.pending, dead_letters = d0.dlq, "datadog delivery on");
        if d.validate_api_key {
            let (deliver, backoff) = (Arc::clone(outbox.deliver()), outbox.backoff());
            outbox.spawn(move |cancel| validate_loop(deliver, backoff, cancel));
        }
        let key_state = Arc::clone(&key);
        let key_down = move |d: &crate::queue::store::Depth| {
            (key_state.get() == KeyState::Invalid).then(|| {
                format!(
                    "API key rejected by the intake; {} payloads queued",
                    d.pending
                )
            })
        };
        outbox.watch_health("datadog", Arc::clone(&ctx.health), key_down);

        let counters = Arc::new(Counters::default());
        let queue = Arc::clone(outbox.queue());
        // One encoder for windows and events, swapped by a reload (`set_encoding`).
        let encoder = Arc::new(Mutex::new(Arc::new(Encoder::new(d, host.clone()))));
        let events = EventQueue::new(Arc::clone(&queue), Arc::clone(&key), Arc::clone(&encoder));
        let windows = {
            let c = Arc::clone(&counters);
            let encoder = Arc::clone(&encoder);
            let mut last_error_log = None;
            let mut zero = ZeroFill::new(d.expiry_seconds);
            Handoff::start_counting(
                "datadog-encode",
                WINDOW_BACKLOG,
                Arc::clone(&counters),
                move |flush: Arc<Flush>| {
                    let enc = Arc::clone(&lock(&encoder));
                    encode_window(&flush, &enc, &mut zero, &queue, &c, &mut last_error_log);
                },
            )
            .map_err(|e| {
                Error::start(
                    "datadog",
                    format!("cannot start the datadog encoder thread: {e}"),
                )
            })?
        };
        let names = Names {
            component: "datadog",
            behind: "datadog encoder behind (disk stalled?); window dropped",
            stopped: "datadog delivery stopped",
        };
        Ok(Arc::new(DatadogSink {
            delivery: Delivery::new(windows, outbox, names),
            counters,
            key,
            events,
            encoder,
            host,
        }))
    }

    /// Encodes from the next window (and event) on with `d`'s constant tags, `env`, `version` and
    /// histogram aggregates and percentiles (a configuration reload). The host name stays the
    /// start's.
    pub fn set_encoding(&self, d: &DatadogConfig) {
        *lock(&self.encoder) = Arc::new(Encoder::new(d, self.host.clone()));
    }

    /// A handle that queues single events (alert notifications) for the same intake.
    pub fn event_queue(&self) -> EventQueue {
        self.events.clone()
    }

    /// Stops after the final flush: encodes what was handed over, lets the sender deliver for
    /// up to `queue.shutdown_drain`, then stops it. Whatever is left stays on disk.
    pub async fn shutdown(&self) {
        self.delivery
            .shutdown(|| self.key.get() == KeyState::Invalid)
            .await;
    }
}

impl Sink for DatadogSink {
    fn name(&self) -> &'static str {
        "datadog"
    }

    fn consume(&self, flush: &Arc<Flush>) {
        self.delivery.offer(Arc::clone(flush));
    }
}

/// Encodes one window and writes its payloads into the queue; a write error is counted and
/// logged at most once a minute (`last_error_log`).
fn encode_window(
    flush: &Flush,
    enc: &Encoder,
    zero: &mut ZeroFill,
    queue: &Queue,
    c: &Counters,
    last_error_log: &mut Option<Instant>,
) {
    let now = (unix_ms() / 1000) as i64;
    let (payloads, stats) = enc.encode_window(flush, now, zero);
    let EncodeStats {
        oversized,
        compress_errors,
    } = stats;
    c.oversized.fetch_add(oversized, Relaxed);
    c.compress_errors.fetch_add(compress_errors, Relaxed);
    if oversized > 0 {
        warn!(
            component = "datadog",
            oversized, "items larger than a whole payload were dropped"
        );
    }
    for p in payloads {
        let meta = Meta {
            endpoint: p.endpoint.into(),
            content_type: p.content_type.into(),
            content_encoding: p.encoding.into(),
            ..Default::default()
        };
        if let Err(e) = queue.push(meta, &p.body) {
            c.queue_errors.fetch_add(1, Relaxed);
            if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                error!(component = "datadog", error = %e, kind = e.as_label(), "cannot queue a payload; it is lost");
                *last_error_log = Some(Instant::now());
            }
        }
    }
}

/// Checks the key until the intake gives an answer; an invalid key is logged once.
async fn validate_loop(deliver: Arc<HttpDeliver>, backoff: Backoff, cancel: CancellationToken) {
    let mut failures = 0u32;
    loop {
        match deliver.validate_key().await {
            Ok(KeyState::Invalid) => {
                error!(component = "datadog", url = %redact::url(&format!("{}{VALIDATE_PATH}", deliver.target().base_url)), "the Datadog API key was rejected (403): payloads the intake refuses with 403 go to the dead-letter queue; fix datadog.api_key, then POST /admin/queue/process-dlq/datadog to send them again");
                return;
            }
            Ok(_) => {
                info!(component = "datadog", "Datadog API key is valid");
                return;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!(component = "datadog", error = %e, "cannot check the Datadog API key yet; will retry");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.delay(failures, 0.5)) => {}
            () = cancel.cancelled() => return,
        }
    }
}

impl Collect for DatadogSink {
    fn collect(&self, out: &mut Families) {
        let c = &self.counters;
        let rows = [
            (
                "tallyd_forwarder_windows_dropped",
                "Windows not encoded because the encoder was behind.",
                &c.windows_dropped,
            ),
            (
                "tallyd_forwarder_items_oversized",
                "Series or sketches larger than a whole payload, dropped.",
                &c.oversized,
            ),
            (
                "tallyd_forwarder_compress_errors",
                "Payloads that failed to compress, dropped.",
                &c.compress_errors,
            ),
            (
                "tallyd_forwarder_enqueue_errors",
                "Payloads that could not be written to the queue, lost.",
                &c.queue_errors,
            ),
        ];
        out.atomics(Kind::Counter, &[("queue", "datadog")], &rows);
        let v = match self.key.get() {
            KeyState::Valid => 1.0,
            KeyState::Invalid => 0.0,
            KeyState::Unknown => -1.0,
        };
        out.gauge(
            "tallyd_forwarder_api_key_valid",
            "1 valid, 0 rejected, -1 not known yet.",
        )
        .sample(&[("queue", "datadog")], v);
    }
}
