//! The GPS views:
//! - `GET /api/monitoring/metrics/devices?active_only=true`: the device registry;
//! - `GET /api/monitoring/metrics/live?window_minutes=5`: messages/s, active devices, points
//!   received/processed/failed and latency percentiles over the last 1..=60 minutes;
//! - `GET /api/monitoring/gps/blacklist`: the IPs refused now, why and until when.
//!
//! They show device identities, peer addresses and positions: behind the admin rule unless
//! `http.public_routes` has `gps`.

use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::admin::{get, Admin};
use super::config::RouteGroup::Gps;
use super::{error, json};
use crate::gps::metrics::LIVE_MINUTES;
use crate::gps::server::now_ms;
use crate::gps::service::GpsState;

/// The GPS routes.
pub(super) fn router(state: GpsState, admin: &Admin) -> Router {
    Router::new()
        .route("/api/monitoring/metrics/devices", get(devices, admin, Gps))
        .route("/api/monitoring/metrics/live", get(live, admin, Gps))
        .route("/api/monitoring/gps/blacklist", get(blacklist, admin, Gps))
        .with_state(state)
}

#[derive(Deserialize)]
struct DevicesQuery {
    #[serde(default)]
    active_only: bool,
}

async fn devices(State(s): State<GpsState>, Query(q): Query<DevicesQuery>) -> Response {
    let devices = s.registry.snapshot(q.active_only, now_ms());
    json(
        StatusCode::OK,
        &serde_json::json!({
            "active_window_secs": s.active_window.as_secs(),
            "count": devices.len(),
            "devices": devices,
        }),
    )
}

#[derive(Deserialize)]
struct LiveQuery {
    window_minutes: Option<i64>,
}

#[derive(Serialize)]
struct Latency {
    count: u64,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

async fn live(State(s): State<GpsState>, Query(q): Query<LiveQuery>) -> Response {
    let minutes = q.window_minutes.unwrap_or(5);
    if !(1..=LIVE_MINUTES as i64).contains(&minutes) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("window_minutes must be between 1 and {LIVE_MINUTES}, got {minutes}"),
        );
    }
    let now = now_ms();
    let (messages, received, processed, failed, mut lat) = s.stats.window(minutes, now);
    let (devices, active) = s.registry.counts(now);
    let count = lat.count();
    let mut q = |p: f64| (count > 0).then(|| lat.quantile(p));
    let latency = Latency {
        p50: q(0.5),
        p95: q(0.95),
        p99: q(0.99),
        max: None,
        count,
    };
    let latency = Latency {
        max: (count > 0).then(|| lat.max()),
        ..latency
    };
    json(
        StatusCode::OK,
        &serde_json::json!({
            "window_minutes": minutes,
            "messages": messages,
            "messages_per_second": messages as f64 / (minutes as f64 * 60.0),
            "active_devices": active.iter().sum::<u64>(),
            "devices_total": devices,
            "points": {"received": received, "processed": processed, "failed": failed},
            "latency_ms": latency,
        }),
    )
}

async fn blacklist(State(s): State<GpsState>) -> Response {
    let list = s.guard.blacklist(Instant::now(), now_ms());
    json(
        StatusCode::OK,
        &serde_json::json!({"count": list.len(), "blacklist": list}),
    )
}
