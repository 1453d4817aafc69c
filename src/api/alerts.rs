//! Alert routes: `GET /api/alerts` (firing, pending, recent history; behind the admin rule
//! unless `http.public_routes` has `alerts`) and `POST /api/monitoring/alert/test` (a test
//! notification through every notifier, always behind the admin rule).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use serde::Deserialize;

use super::admin::{self, Admin};
use super::config::RouteGroup;
use super::{error, json};
use crate::alert::config::Severity;
use crate::alert::{probe, Shared};
use crate::base::lock;

/// The alert routes.
pub(super) fn router(shared: Arc<Shared>, admin: &Admin) -> Router {
    Router::new()
        .route("/api/alerts", admin::get(alerts, admin, RouteGroup::Alerts))
        .route("/api/monitoring/alert/test", admin::post(test, admin))
        .with_state(shared)
}

async fn alerts(State(s): State<Arc<Shared>>) -> Response {
    let snap = lock(&s.snapshot).clone();
    json(StatusCode::OK, &snap)
}

#[derive(Deserialize)]
struct TestQuery {
    alert_type: Option<String>,
    message: Option<String>,
}

async fn test(State(s): State<Arc<Shared>>, Query(q): Query<TestQuery>) -> Response {
    let severity = match q.alert_type.as_deref().unwrap_or("info") {
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        "critical" => Severity::Critical,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("alert_type {other:?} must be warning, critical or info"),
            )
        }
    };
    let message = q.message.unwrap_or_else(|| probe::DEFAULT_MESSAGE.into());
    let results = probe::send_test(&s, severity, message.clone()).await;
    let ok = results.iter().all(|r| r.ok);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    json(
        code,
        &serde_json::json!({ "alert_type": severity.as_str(), "message": message, "ok": ok, "results": results }),
    )
}
