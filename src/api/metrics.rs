//! `/metrics`: the Prometheus text format, or OpenMetrics when the scraper asks for it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body::Frame;

use crate::sinks::prometheus::{Prometheus, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

/// The `/metrics` route.
pub(super) fn router(prometheus: Arc<Prometheus>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(prometheus)
}

/// OpenMetrics when the scraper lists it in Accept (Prometheus does), the text format otherwise.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// Size of the pieces a `/metrics` body is sent in, and how many may wait for the connection.
const METRICS_CHUNK: usize = 64 * 1024;
const METRICS_CHUNKS_QUEUED: usize = 4;

async fn metrics(State(prom): State<Arc<Prometheus>>, headers: HeaderMap) -> Response {
    let om = wants_openmetrics(&headers);
    // Rendering a large state takes a while: it runs off the async workers, and its text goes
    // out piece by piece as it is produced (chunked encoding), so a scrape of 100,000 series
    // holds a few pieces of the body instead of all of it (tens of megabytes, which set the
    // process's peak RSS).
    let (tx, mut rx) = tokio::sync::mpsc::channel(METRICS_CHUNKS_QUEUED);
    tokio::task::spawn_blocking(move || {
        prom.render_to(om, METRICS_CHUNK, &mut |piece| {
            tx.blocking_send(Bytes::from(piece)).is_ok()
        });
    });
    let ct = if om {
        OPENMETRICS_CONTENT_TYPE
    } else {
        TEXT_CONTENT_TYPE
    };
    // A body of one piece (most hosts) goes out whole, with its length; a longer one in
    // pieces as the render produces them.
    let first = rx.recv().await.unwrap_or_default();
    let body = match rx.recv().await {
        None => Body::from(first),
        Some(second) => Body::new(ChannelBody {
            ready: vec![second, first],
            rx,
        }),
    };
    ([(header::CONTENT_TYPE, ct)], body).into_response()
}

/// A response body whose pieces arrive on a channel, after the ones already `ready` (kept in
/// reverse order); it ends when the sender is dropped.
struct ChannelBody {
    ready: Vec<Bytes>,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(piece) = self.ready.pop() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        self.rx
            .poll_recv(cx)
            .map(|piece| piece.map(|b| Ok(Frame::data(b))))
    }
}
