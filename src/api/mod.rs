//! The HTTP server: `/metrics` (Prometheus text or OpenMetrics), `/health`, `/health/live`,
//! `/health/ready`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body::Frame;
use serde::Serialize;

use crate::aggregate::lock;
use crate::sinks::prometheus::{Prometheus, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::telemetry::Telemetry;

/// A component's state as shown by `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
    Down,
    Disabled,
}

#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub status: Status,
    pub detail: String,
}

/// Health of every component, and readiness (set once all listeners are bound).
pub struct Health {
    components: Mutex<BTreeMap<&'static str, Component>>,
    ready: AtomicBool,
    flush_interval: Duration,
    telemetry: Arc<Telemetry>,
}

impl Health {
    pub fn new(flush_interval: Duration, telemetry: Arc<Telemetry>) -> Health {
        Health {
            components: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            flush_interval,
            telemetry,
        }
    }

    pub fn set(&self, name: &'static str, status: Status, detail: impl Into<String>) {
        lock(&self.components).insert(
            name,
            Component {
                status,
                detail: detail.into(),
            },
        );
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// All components, with the aggregator's judged from its last flush.
    pub fn snapshot(&self) -> (Status, BTreeMap<&'static str, Component>) {
        let mut c = lock(&self.components).clone();
        let last = self.telemetry.flush_last_unix.load(Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let late = 3 * self.flush_interval.as_secs().max(1);
        let agg = if last == 0 {
            Component {
                status: Status::Ok,
                detail: "waiting for the first flush".into(),
            }
        } else if now.saturating_sub(last) > late {
            Component {
                status: Status::Down,
                detail: format!("no flush for {}s", now - last),
            }
        } else {
            Component {
                status: Status::Ok,
                detail: format!("last flush {}s ago", now.saturating_sub(last)),
            }
        };
        c.insert("aggregator", agg);
        let overall = if !self.is_ready() || c.values().any(|x| x.status == Status::Down) {
            Status::Down
        } else if c.values().any(|x| x.status == Status::Degraded) {
            Status::Degraded
        } else {
            Status::Ok
        };
        (overall, c)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub prometheus: Arc<Prometheus>,
    pub health: Arc<Health>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(state)
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

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let om = wants_openmetrics(&headers);
    let prom = Arc::clone(&s.prometheus);
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

#[derive(Serialize)]
struct HealthBody {
    status: Status,
    ready: bool,
    version: &'static str,
    components: BTreeMap<&'static str, Component>,
}

async fn health(State(s): State<AppState>) -> Response {
    let (status, components) = s.health.snapshot();
    let code = if status == Status::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = HealthBody {
        status,
        ready: s.health.is_ready(),
        version: env!("CARGO_PKG_VERSION"),
        components,
    };
    json(code, &body)
}

async fn live() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

async fn ready(State(s): State<AppState>) -> Response {
    if s.health.is_ready() {
        json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "starting"}),
        )
    }
}

fn json<T: Serialize>(code: StatusCode, body: &T) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    (code, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}
