//! Alert routes on the HTTP server: `GET /api/alerts` (firing, pending, recent history) and
//! `POST /api/monitoring/alert/test` (a test notification through every notifier).
//!
//! The test route changes the outside world, so a caller that is not on loopback must send
//! `Authorization: Bearer <http.admin_token>`; with no token configured it is loopback-only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::base::lock;

use super::config::{Direction, Severity};
use super::notify::{AlertEvent, EventStatus};
use super::Shared;

#[derive(Clone)]
pub struct ApiState {
    pub shared: Arc<Shared>,
    pub admin_token: Arc<str>,
}

/// The alert routes, to merge into the main router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/alerts", get(alerts))
        .route("/api/monitoring/alert/test", post(test))
        .with_state(state)
}

async fn alerts(State(s): State<ApiState>) -> Response {
    let snap = lock(&s.shared.snapshot).clone();
    json(StatusCode::OK, &snap)
}

#[derive(Deserialize)]
struct TestQuery {
    alert_type: Option<String>,
    message: Option<String>,
}

/// Checks the admin rule for mutating routes.
///
/// # Errors
/// The status and message to answer with.
pub fn authorize(
    peer: SocketAddr,
    headers: &HeaderMap,
    token: &str,
) -> Result<(), (StatusCode, &'static str)> {
    if peer.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    if token.is_empty() {
        return Err((
            StatusCode::FORBIDDEN,
            "this endpoint is loopback-only unless http.admin_token is set",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            "missing or wrong Authorization: Bearer token",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn test(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<TestQuery>,
) -> Response {
    if let Err((code, msg)) = authorize(peer, &headers, &s.admin_token) {
        return json(code, &serde_json::json!({ "error": msg }));
    }
    let severity = match q.alert_type.as_deref().unwrap_or("info") {
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        "critical" => Severity::Critical,
        other => {
            let msg = format!("alert_type {other:?} must be warning, critical or info");
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": msg }),
            );
        }
    };
    let message = q
        .message
        .unwrap_or_else(|| "tallyd test notification".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let labels: BTreeMap<String, String> = [("test".to_string(), "true".to_string())].into();
    let event = AlertEvent {
        status: EventStatus::Test,
        alert: "TallydTestAlert".into(),
        severity,
        previous_severity: None,
        fingerprint: super::eval::fingerprint("TallydTestAlert", &labels),
        labels,
        metric: String::new(),
        value: None,
        warn: None,
        critical: None,
        direction: Direction::Above,
        message: message.clone(),
        runbook: String::new(),
        starts_at_ms: now,
        at_ms: now,
        repeat: false,
        no_data: false,
        host: s.shared.host.clone(),
        notify: Vec::new(),
    };
    let results = s.shared.dispatcher.test(&event).await;
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

fn json<T: serde::Serialize>(code: StatusCode, body: &T) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    (code, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_rules() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let lo6: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().expect("addr");
        let remote: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        let none = HeaderMap::new();
        assert!(authorize(lo, &none, "").is_ok());
        assert!(authorize(lo6, &none, "").is_ok());
        assert_eq!(
            authorize(remote, &none, "").map_err(|e| e.0),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            authorize(remote, &none, "s3cret").map_err(|e| e.0),
            Err(StatusCode::UNAUTHORIZED)
        );
        let mut wrong = HeaderMap::new();
        wrong.insert(header::AUTHORIZATION, "Bearer nope".parse().expect("hdr"));
        assert_eq!(
            authorize(remote, &wrong, "s3cret").map_err(|e| e.0),
            Err(StatusCode::UNAUTHORIZED)
        );
        let mut right = HeaderMap::new();
        right.insert(header::AUTHORIZATION, "Bearer s3cret".parse().expect("hdr"));
        assert!(authorize(remote, &right, "s3cret").is_ok());
    }
}
