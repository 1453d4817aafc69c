//! `/metrics`: the Prometheus text format, or OpenMetrics when the scraper asks for it.
//!
//! A scrape's memory is bounded: at most `prometheus.max_concurrent_scrapes` render at once
//! (one more is answered 503 with `Retry-After: 1`, never queued), each holds one copy of the
//! exposed rows and at most [`METRICS_CHUNKS_QUEUED`] pieces of [`METRICS_CHUNK`] bytes waiting
//! for the connection, and a scraper that takes no piece for `prometheus.scrape_write_timeout`
//! loses the scrape (the render stops, its copy is freed and its permit released).

use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::Semaphore;

use crate::base::metrics::{Collect, Families};
use crate::sinks::prometheus::config::PrometheusConfig;
use crate::sinks::prometheus::{Prometheus, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

/// The bounds on scrapes of `/metrics` and their counts (`tallyd_prometheus_scrapes_total`).
pub struct Scrapes {
    permits: Arc<Semaphore>,
    write_timeout: Duration,
    ok: AtomicU64,
    refused: AtomicU64,
    timeout: AtomicU64,
    closed: AtomicU64,
}

impl Scrapes {
    /// The bounds `cfg` sets (`max_concurrent_scrapes`, `scrape_write_timeout`).
    pub fn new(cfg: &PrometheusConfig) -> Arc<Scrapes> {
        Arc::new(Scrapes {
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_scrapes.max(1))),
            write_timeout: cfg.scrape_write_timeout,
            ok: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            timeout: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        })
    }
}

impl Collect for Scrapes {
    fn collect(&self, out: &mut Families) {
        out.counter(
            "tallyd_prometheus_scrapes",
            "Scrapes of /metrics by result: ok, refused (over prometheus.max_concurrent_scrapes), \
             timeout (no piece taken for prometheus.scrape_write_timeout), closed (the scraper \
             went away).",
        )
        .by(
            "result",
            [
                ("ok", self.ok.load(Relaxed) as f64),
                ("refused", self.refused.load(Relaxed) as f64),
                ("timeout", self.timeout.load(Relaxed) as f64),
                ("closed", self.closed.load(Relaxed) as f64),
            ],
        );
    }
}

#[derive(Clone)]
struct Scrape {
    prom: Arc<Prometheus>,
    scrapes: Arc<Scrapes>,
}

/// The `/metrics` route.
pub(super) fn router(prometheus: Arc<Prometheus>, scrapes: Arc<Scrapes>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Scrape {
            prom: prometheus,
            scrapes,
        })
}

/// OpenMetrics when the scraper lists it in Accept (Prometheus does), the text format otherwise.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// Size of the pieces a `/metrics` body is sent in.
pub const METRICS_CHUNK: usize = 64 * 1024;
/// Pieces that may wait for the connection; the render waits (at most the write timeout) for
/// room beyond them.
pub const METRICS_CHUNKS_QUEUED: usize = 4;

async fn metrics(State(s): State<Scrape>, headers: HeaderMap) -> Response {
    let Ok(permit) = Arc::clone(&s.scrapes.permits).try_acquire_owned() else {
        s.scrapes.refused.fetch_add(1, Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many concurrent scrapes\n",
        )
            .into_response();
    };
    let om = wants_openmetrics(&headers);
    // Rendering a large state takes a while: it runs off the async workers, and its text goes
    // out piece by piece as it is produced (chunked encoding), so a scrape of 100,000 series
    // holds a few pieces of the body instead of all of it (tens of megabytes, which set the
    // process's peak RSS).
    let (tx, mut rx) = tokio::sync::mpsc::channel(METRICS_CHUNKS_QUEUED);
    let complete = Arc::new(AtomicBool::new(false));
    let complete_tx = Arc::clone(&complete);
    let rt = tokio::runtime::Handle::current();
    let Scrape { prom, scrapes } = s;
    tokio::task::spawn_blocking(move || {
        let mut outcome = &scrapes.ok;
        prom.render_to(om, METRICS_CHUNK, &mut |piece| {
            let sent = rt.block_on(tx.send_timeout(Bytes::from(piece), scrapes.write_timeout));
            outcome = match sent {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(_)) => &scrapes.timeout,
                Err(SendTimeoutError::Closed(_)) => &scrapes.closed,
            };
            false
        });
        // `render_to` has dropped its copy of the rows; the permit is released here, and the
        // sender (dropped with this closure) closes the channel after `complete` is set.
        complete_tx.store(std::ptr::eq(outcome, &scrapes.ok), Release);
        outcome.fetch_add(1, Relaxed);
        drop(permit);
    });
    let ct = if om {
        OPENMETRICS_CONTENT_TYPE
    } else {
        TEXT_CONTENT_TYPE
    };
    // A body of one piece (most hosts) goes out whole, with its length; a longer one in
    // pieces as the render produces them.
    let first = rx.recv().await;
    let second = rx.recv().await;
    let body = match (first, second) {
        (Some(first), None) if complete.load(Acquire) => Body::from(first),
        (Some(first), Some(second)) => Body::new(ChannelBody {
            ready: vec![second, first],
            rx,
            complete,
        }),
        // The render panicked (the channel closes as the thread unwinds).
        _ => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    ([(header::CONTENT_TYPE, ct)], body).into_response()
}

/// A response body whose pieces arrive on a channel, after the ones already `ready` (kept in
/// reverse order). It ends when the sender is dropped after the last piece (`complete`); a
/// render that stopped early (write timeout) ends it with an error instead, so the connection
/// is closed without the final chunk and the scraper never takes a truncated body as whole.
struct ChannelBody {
    ready: Vec<Bytes>,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    complete: Arc<AtomicBool>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(piece) = self.ready.pop() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(None) if self.complete.load(Acquire) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the scrape stopped before its end",
            )))),
        }
    }
}
