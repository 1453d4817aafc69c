//! The queue administration API, merged into the HTTP server by `lib.rs`:
//!
//! - `GET  /admin/queue/health`: per queue `healthy`, `degraded` or `critical`, and why (503 if
//!   any is critical);
//! - `GET  /admin/queue/stats`: per queue counts, sizes and the age of the oldest payload;
//! - `POST /admin/queue/process-dlq/{queue}?dry_run=true|false`: list dead letters, or move
//!   them back to the pending queue (`dry_run` defaults to true);
//! - `POST /admin/queue/force-process/{queue}?batch_size=N`: send up to N payloads now,
//!   skipping backoff (default 100).
//!
//! The POST endpoints change state: they need `Authorization: Bearer <http.admin_token>` unless
//! the peer is on loopback. With no token configured they are loopback-only.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::sender::{Handle, Registry};
use super::store::unix_ms;

/// Longest list returned by a dry run.
const MAX_LISTED: usize = 100;
/// Largest forced batch.
const MAX_BATCH: usize = 10_000;

#[derive(Clone)]
pub struct AdminState {
    pub registry: Arc<Registry>,
    /// Empty: mutating endpoints answer only loopback peers.
    pub token: Arc<str>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/queue/health", get(health))
        .route("/admin/queue/stats", get(stats))
        .route("/admin/queue/process-dlq/{queue}", post(process_dlq))
        .route("/admin/queue/force-process/{queue}", post(force_process))
        .with_state(state)
}

/// True when the peer may change queue state.
pub fn authorized(peer: Option<SocketAddr>, headers: &HeaderMap, token: &str) -> bool {
    if peer.is_some_and(|p| p.ip().is_loopback() || p.ip().to_canonical().is_loopback()) {
        return true;
    }
    if token.is_empty() {
        return false;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Serialize)]
struct QueueHealth {
    status: &'static str,
    reasons: Vec<String>,
}

fn judge(h: &Handle) -> QueueHealth {
    let q = &h.queue;
    let d = q.depth();
    let lim = q.limits();
    let fails = q.stats.consecutive_failures.load(Relaxed);
    let age = d
        .oldest_ms
        .map(|ms| unix_ms().saturating_sub(ms) / 1000)
        .unwrap_or(0);
    let fill = d.pending_bytes as f64 / lim.max_bytes.max(1) as f64;
    let mut critical = Vec::new();
    let mut degraded = Vec::new();
    if fill >= 0.9 {
        critical.push(format!(
            "queue {:.0}% full; oldest payloads will be dropped",
            fill * 100.0
        ));
    } else if fill >= 0.5 {
        degraded.push(format!("queue {:.0}% full", fill * 100.0));
    }
    if fails > 0 && age >= 300 {
        critical.push(format!(
            "{fails} failed attempts in a row; oldest payload waiting {age}s"
        ));
    } else if fails > 0 {
        degraded.push(format!("{fails} failed attempts in a row"));
    }
    if d.dlq > 0 {
        degraded.push(format!("{} payloads in the dead-letter queue", d.dlq));
    }
    let status = if !critical.is_empty() {
        "critical"
    } else if !degraded.is_empty() {
        "degraded"
    } else {
        "healthy"
    };
    critical.extend(degraded);
    QueueHealth {
        status,
        reasons: critical,
    }
}

async fn health(State(s): State<AdminState>) -> Response {
    let mut out = serde_json::Map::new();
    let mut any_critical = false;
    for h in s.registry.all() {
        let j = judge(&h);
        any_critical |= j.status == "critical";
        out.insert(
            h.queue.name().to_string(),
            serde_json::to_value(j).unwrap_or_default(),
        );
    }
    let code = if any_critical {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(code, &serde_json::json!({ "queues": out }))
}

async fn stats(State(s): State<AdminState>) -> Response {
    let mut out = serde_json::Map::new();
    for h in s.registry.all() {
        let q = &h.queue;
        let d = q.depth();
        let st = &q.stats;
        let v = serde_json::json!({
            "pending": d.pending,
            "processing": st.in_flight.load(Relaxed),
            "enqueued": st.enqueued.load(Relaxed),
            "delivered": st.delivered.load(Relaxed),
            "retried": st.retries.load(Relaxed),
            "dropped": st.dropped.load(Relaxed),
            "dead_lettered": st.dead_lettered.load(Relaxed),
            "dlq_size": d.dlq,
            "oldest_item_age_seconds": d.oldest_ms.map(|ms| unix_ms().saturating_sub(ms) as f64 / 1000.0),
            "pending_bytes": d.pending_bytes,
            "dlq_bytes": d.dlq_bytes,
            "bytes_on_disk": d.pending_bytes + d.dlq_bytes,
            "max_bytes": q.limits().max_bytes,
            "consecutive_failures": st.consecutive_failures.load(Relaxed),
            "last_success_unix": st.last_success_unix.load(Relaxed),
        });
        out.insert(q.name().to_string(), v);
    }
    json(StatusCode::OK, &serde_json::json!({ "queues": out }))
}

#[derive(Deserialize)]
struct DlqParams {
    dry_run: Option<String>,
}

async fn process_dlq(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Query(p): Query<DlqParams>,
) -> Response {
    if !authorized(Some(peer), &headers, &s.token) {
        return unauthorized();
    }
    let Some(h) = s.registry.get(&queue) else {
        return not_found(&queue);
    };
    let dry_run = match p.dry_run.as_deref() {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": format!("dry_run must be true or false, not {other:?}")}),
            )
        }
    };
    if dry_run {
        let q = Arc::clone(&h.queue);
        let letters = tokio::task::spawn_blocking(move || q.dead_letters(MAX_LISTED))
            .await
            .unwrap_or_default();
        let now = unix_ms();
        let items: Vec<_> = letters
            .iter()
            .map(|l| {
                serde_json::json!({
                    "seq": l.seq, "id": l.meta.id, "endpoint": l.meta.endpoint, "status": l.meta.status,
                    "response": l.meta.response, "bytes": l.bytes, "attempts": l.meta.attempts,
                    "age_seconds": now.saturating_sub(l.meta.created_ms) / 1000,
                })
            })
            .collect();
        return json(
            StatusCode::OK,
            &serde_json::json!({"queue": queue, "dry_run": true, "dlq_size": h.queue.depth().dlq, "items": items}),
        );
    }
    let q = Arc::clone(&h.queue);
    match tokio::task::spawn_blocking(move || q.requeue_dead_letters()).await {
        Ok(Ok(moved)) => {
            tracing::info!(queue = %queue, moved, "dead letters moved back to the queue");
            json(
                StatusCode::OK,
                &serde_json::json!({"queue": queue, "dry_run": false, "requeued": moved}),
            )
        }
        Ok(Err(e)) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": e.to_string()}),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": e.to_string()}),
        ),
    }
}

#[derive(Deserialize)]
struct ForceParams {
    batch_size: Option<usize>,
}

async fn force_process(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Query(p): Query<ForceParams>,
) -> Response {
    if !authorized(Some(peer), &headers, &s.token) {
        return unauthorized();
    }
    let Some(h) = s.registry.get(&queue) else {
        return not_found(&queue);
    };
    let n = p.batch_size.unwrap_or(100);
    if n == 0 || n > MAX_BATCH {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": format!("batch_size must be 1..={MAX_BATCH}")}),
        );
    }
    let r = h.force(n).await;
    json(
        StatusCode::OK,
        &serde_json::json!({"queue": queue, "result": r, "pending": h.queue.depth().pending}),
    )
}

fn unauthorized() -> Response {
    let body = serde_json::json!({"error": "this endpoint needs Authorization: Bearer <http.admin_token> (or a loopback peer)"});
    let mut r = json(StatusCode::UNAUTHORIZED, &body);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

fn not_found(queue: &str) -> Response {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": format!("no queue named {queue:?}")}),
    )
}

fn json<T: Serialize>(code: StatusCode, body: &T) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    (code, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_or_token() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let lo6: SocketAddr = "[::1]:5000".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().expect("addr");
        let far: SocketAddr = "192.0.2.7:5000".parse().expect("addr");
        let none = HeaderMap::new();
        let mut good = HeaderMap::new();
        good.insert(header::AUTHORIZATION, "Bearer s3cret".parse().expect("hv"));
        let mut bad = HeaderMap::new();
        bad.insert(header::AUTHORIZATION, "Bearer nope".parse().expect("hv"));
        assert!(authorized(Some(lo), &none, ""));
        assert!(authorized(Some(lo6), &none, ""));
        assert!(authorized(Some(mapped), &none, ""));
        assert!(!authorized(Some(far), &none, ""));
        assert!(!authorized(Some(far), &good, ""));
        assert!(!authorized(Some(far), &none, "s3cret"));
        assert!(!authorized(Some(far), &bad, "s3cret"));
        assert!(authorized(Some(far), &good, "s3cret"));
        assert!(!authorized(None, &none, "s3cret"));
    }
}
