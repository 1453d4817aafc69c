//! The GPS views:
//! - `GET /api/monitoring/metrics/devices?active_only=true`: the device registry;
//! - `GET /api/monitoring/metrics/live?window_minutes=5`: messages/s, active devices, points
//!   received/processed/failed and latency percentiles over the last 1..=60 minutes;
//! - `GET /api/monitoring/gps/blacklist`: the IPs refused now, why and until when;
//! - `POST /api/monitoring/gps/devices/{id}/command` (admin): queues a command
//!   (`{"type": "locate"}`, `{"type": "interval", "seconds": 30}`,
//!   `{"type": "custom", "text": "..."}`; `"wait": false` answers at once). For a connected
//!   device it waits up to `gps.command_timeout` (at most 25 s) for the answer: 200 with the
//!   command's record (`status`: answered, no_answer, unsupported, send_failed, or still
//!   `sent` when the answer is later than 25 s); offline, 202 with status
//!   `queued`; 429 at `gps.commands_per_device` / `gps.commands_max`, 422 when the device's
//!   protocol has no such command;
//! - `GET /api/monitoring/gps/devices/{id}/commands`: that device's recent commands.
//!
//! They show device identities, peer addresses and positions: behind the admin rule unless
//! `http.public_routes` has `gps`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::admin::{get, post, Admin};
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
        .route(
            "/api/monitoring/gps/devices/{id}/command",
            post(command, admin),
        )
        .route(
            "/api/monitoring/gps/devices/{id}/commands",
            get(commands, admin, Gps),
        )
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

#[derive(Deserialize)]
struct CommandBody {
    #[serde(flatten)]
    kind: crate::gps::encode::Kind,
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

async fn command(State(s): State<GpsState>, Path(id): Path<String>, body: Bytes) -> Response {
    use crate::gps::command::{Refused, Status};
    let req: CommandBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be {{\"type\": \"locate\" | \"interval\" | \"custom\", ...}}: {e}"
                ),
            )
        }
    };
    if let Err(e) = req.kind.check() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let known = s.registry.protocol(&id);
    let (cmd, connected) = match s.commands.submit(&id, req.kind, known) {
        Ok(c) => c,
        Err(Refused::Full(key)) => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{key} commands are waiting already"),
            )
        }
        Err(Refused::Unsupported(p)) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("protocol {} has no such command", p.as_str()),
            )
        }
    };
    if !(connected && req.wait) {
        let code = if connected {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        return json(
            code,
            &serde_json::json!({"answered": false, "command": cmd.record()}),
        );
    }
    // Bounded under http.request_timeout's default (30 s): a later answer still shows in
    // the device's command list.
    let wait = (s.commands.timeout() + std::time::Duration::from_millis(500))
        .min(std::time::Duration::from_secs(25));
    let r = cmd.wait(wait).await;
    json(
        StatusCode::OK,
        &serde_json::json!({"answered": r.status == Status::Answered, "command": r}),
    )
}

async fn commands(State(s): State<GpsState>, Path(id): Path<String>) -> Response {
    let list = s.commands.list(&id);
    json(
        StatusCode::OK,
        &serde_json::json!({"device_id": id, "count": list.len(), "commands": list}),
    )
}
