//! The HTTP server's one router: `/metrics` (Prometheus text or OpenMetrics), `/health`,
//! `/health/live`, `/health/ready`, the queue administration (`/admin/queue/*`), the alert
//! routes (`/api/alerts`, `/api/monitoring/alert/test`), the GPS views
//! (`/api/monitoring/metrics/*`, `/api/monitoring/gps/blacklist`), the dashboard API
//! (`/api/monitoring/dashboard`, `/api/monitoring/metrics/queues`, `/api/monitoring/history`)
//! the status page (`GET /`, with its history ring sampled every 5 s) and `POST /admin/reload`.
//!
//! The components expose plain Rust state ([`Prometheus`], [`Health`],
//! [`queue::Registry`](crate::queue::Registry), [`alert::Shared`], [`GpsState`]); the HTTP
//! concerns (routes, query parameters, status codes, JSON bodies) live here. Every route that
//! changes state, and every read-only view whose group is not in `http.public_routes`
//! (default: `health`, `metrics`), goes through the one admin rule in `admin.rs`. `server.rs`
//! binds `http.listen` and serves the router.

mod admin;
mod alerts;
pub mod config;
pub mod dashboard;
mod gps;
mod health;
pub mod history;
mod metrics;
mod queue;
mod reload;
pub mod server;
mod status;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;

pub use crate::base::health::{Component, Health, Status};
use crate::component::{Context, Stage};
use crate::gps::service::GpsState;
use crate::sinks::prometheus::Prometheus;
use crate::telemetry::Telemetry;
use crate::{alert, queue as queues};
pub use admin::Admin;
use config::RouteGroup;
pub use history::History;
pub use metrics::Scrapes;

/// What the router serves; the optional parts add their routes only when present.
pub struct Parts<'a> {
    /// Renders `/metrics`.
    pub prometheus: Arc<Prometheus>,
    /// The bounds on `/metrics` scrapes (register it with the telemetry for its counts).
    pub scrapes: Arc<Scrapes>,
    /// Answers `/health*`.
    pub health: Arc<Health>,
    /// The delivery queues behind `/admin/queue/*`.
    pub queues: Arc<queues::Registry>,
    /// Alerting's state when `alerts.enabled`: `/api/alerts` and the test notification.
    pub alerts: Option<Arc<alert::Shared>>,
    /// The GPS server's registry, guard and counters when it runs.
    pub gps: Option<GpsState>,
    /// tallyd's counters and self-metric sources, for the dashboard.
    pub telemetry: Arc<Telemetry>,
    /// The status page's ring and busiest metrics ([`History::attach`] it before the flusher
    /// starts, and start its sampler with [`start_sampler`]).
    pub history: Arc<History>,
    /// The admin rule (`http.admin_token`, `http.public_routes`); register it with the
    /// telemetry for its refusal counts.
    pub admin: &'a Admin,
    /// Takes `POST /admin/reload` when the topology runs the reload task.
    pub reloader: Option<crate::component::reload::Reloader>,
}

/// The whole HTTP router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`:
/// the admin rule needs the peer's address to recognise loopback callers.
pub fn router(parts: Parts<'_>) -> Router {
    let admin = parts.admin;
    let dashboard = dashboard::router(sources(&parts), admin);
    let metrics = metrics::router(parts.prometheus, parts.scrapes);
    let health = health::router(parts.health);
    let mut app = Router::new()
        .merge(admin::guard(metrics, admin, RouteGroup::Metrics))
        .merge(admin::guard(health, admin, RouteGroup::Health))
        .merge(queue::router(parts.queues, admin))
        .merge(dashboard)
        .merge(status::router());
    if let Some(shared) = parts.alerts {
        app = app.merge(alerts::router(shared, admin));
    }
    if let Some(state) = parts.gps {
        app = app.merge(gps::router(state, admin));
    }
    if let Some(r) = parts.reloader {
        app = app.merge(reload::router(r, admin));
    }
    app
}

fn sources(parts: &Parts<'_>) -> dashboard::Sources {
    dashboard::Sources {
        telemetry: Arc::clone(&parts.telemetry),
        health: Arc::clone(&parts.health),
        queues: Arc::clone(&parts.queues),
        alerts: parts.alerts.clone(),
        gps: parts.gps.clone(),
        history: Arc::clone(&parts.history),
    }
}

/// Starts the status page's sampler: a point into `parts.history` every
/// [`history::SAMPLE_EVERY`], on the HTTP stage (it stops with the API).
pub fn start_sampler(parts: &Parts<'_>, ctx: &Context) {
    let stop = ctx.shutdown.token(Stage::Http);
    ctx.shutdown
        .spawn(Stage::Http, dashboard::sample(sources(parts), stop));
}

/// A JSON response.
fn json<T: Serialize>(code: StatusCode, body: &T) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    (code, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// A JSON error response: `{"error": message}`.
fn error(code: StatusCode, message: impl std::fmt::Display) -> Response {
    json(code, &serde_json::json!({ "error": message.to_string() }))
}
