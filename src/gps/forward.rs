//! Point delivery to an HTTP endpoint through the durable `live_points` queue.
//!
//! The point writer hands each group of points to [`QueueSink::store`], which writes them as one
//! JSON batch (`{"points": [...]}`) into the same disk-backed queue Datadog delivery uses. Only
//! once the batch is on disk does the device get its acknowledgement; the queue's sender then
//! POSTs it to `gps.points_url`, retries with backoff, and moves permanent rejections to the
//! dead-letter queue, all visible under `/admin/queue/*` as `live_points`.

use std::sync::Arc;

use super::points::{Point, PointError, PointSink};
use crate::component::{Context, Error};
use crate::queue::deliver::{header_map, HttpDeliver};
use crate::queue::store::{Meta, Queue};
use crate::queue::{OpenError, Outbox};

/// The queue's name in `/admin/queue/*` and `tallyd_forwarder_*{queue=...}`.
pub const QUEUE_NAME: &str = "live_points";

/// Writes point batches into the `live_points` queue.
pub struct QueueSink {
    queue: Arc<Queue>,
}

#[derive(serde::Serialize)]
struct Body<'a> {
    points: &'a [Point],
}

impl PointSink for QueueSink {
    fn name(&self) -> &'static str {
        QUEUE_NAME
    }

    fn store(&mut self, points: &[Point]) -> Result<(), PointError> {
        let fail = |detail: String| PointError {
            sink: QUEUE_NAME,
            detail,
        };
        let body = serde_json::to_vec(&Body { points }).map_err(|e| fail(e.to_string()))?;
        let meta = Meta {
            content_type: "application/json".into(),
            ..Meta::default()
        };
        self.queue
            .push(meta, &body)
            .map(|_| ())
            .map_err(|e| fail(e.to_string()))
    }
}

/// The running forwarder: its sink for the point writer and its background sender.
pub struct Forwarder {
    outbox: Outbox,
}

impl Forwarder {
    /// Opens the queue and starts its sender when `gps.points_url` is set.
    ///
    /// # Errors
    /// The queue directory cannot be opened, or a header or the HTTP client is invalid; the
    /// message names the key.
    pub fn start(g: &super::GpsConfig, ctx: &Context) -> Result<Option<Forwarder>, Error> {
        if g.points_url.is_empty() {
            return Ok(None);
        }
        let outbox = Outbox::open(&ctx.queue, QUEUE_NAME, &ctx.queues, || {
            HttpDeliver::new(
                &g.points_url,
                header_map(&g.points_headers, "gps.points_headers")?,
                g.points_timeout,
                None,
            )
            .map_err(|e| OpenError::client("gps.points_url", e))
        })
        .map_err(|e| Error::start("gps", e))?;
        let depth = outbox.queue().depth();
        tracing::info!(component = "gps", url = %crate::base::redact::url(&g.points_url), queued = depth.pending, dead_letters = depth.dlq, "point delivery to HTTP on");
        Ok(Some(Forwarder { outbox }))
    }

    /// The sink handed to the point writer (shares the queue with the sender).
    pub fn sink(&self) -> QueueSink {
        QueueSink {
            queue: Arc::clone(self.outbox.queue()),
        }
    }

    /// Keeps delivering for at most `queue.shutdown_drain`, then stops; what is left stays on
    /// disk.
    pub async fn shutdown(self) {
        self.outbox.shutdown(|| false).await;
    }
}
