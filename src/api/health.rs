//! `/health` (every component's status), `/health/live` and `/health/ready`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::json;
use crate::base::health::{Component, Health, LastReload, Status};

/// The health routes.
pub(super) fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/health", get(all))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(health)
}

#[derive(Serialize)]
struct HealthBody {
    status: Status,
    ready: bool,
    version: &'static str,
    components: BTreeMap<&'static str, Component>,
    /// The last configuration reload since start (absent before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_reload: Option<LastReload>,
}

async fn all(State(h): State<Arc<Health>>) -> Response {
    let (status, components) = h.snapshot();
    let code = if status == Status::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = HealthBody {
        status,
        ready: h.is_ready(),
        version: env!("CARGO_PKG_VERSION"),
        components,
        last_reload: h.last_reload(),
    };
    json(code, &body)
}

async fn live() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

async fn ready(State(h): State<Arc<Health>>) -> Response {
    if h.is_ready() {
        json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "starting"}),
        )
    }
}
