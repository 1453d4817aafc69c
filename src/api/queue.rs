//! The queue administration routes:
//!
//! - `GET  /admin/queue/health`: per queue `healthy`, `degraded` or `critical`, and why (503 if
//!   any is critical);
//! - `GET  /admin/queue/stats`: per queue counts, sizes and the age of the oldest payload;
//! - `POST /admin/queue/process-dlq/{queue}?dry_run=true|false`: list dead letters, or move
//!   them back to the pending queue (`dry_run` defaults to true);
//! - `POST /admin/queue/force-process/{queue}?batch_size=N`: send up to N payloads now,
//!   skipping backoff (default 100).
//!
//! The POST routes change state: they are always behind the admin rule (`admin.rs`). The GET
//! views name endpoints and delivery errors: behind it too unless `http.public_routes` has
//! `queue`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use serde::Deserialize;

use super::admin::{self, Admin};
use super::config::RouteGroup::Queue;
use super::{error, json};
use crate::queue::health::judge;
use crate::queue::store::unix_ms;
use crate::queue::Registry;

/// Longest list returned by a dry run.
const MAX_LISTED: usize = 100;
/// Largest forced batch.
const MAX_BATCH: usize = 10_000;

/// The queue routes.
pub(super) fn router(registry: Arc<Registry>, admin: &Admin) -> Router {
    Router::new()
        .route("/admin/queue/health", admin::get(health, admin, Queue))
        .route("/admin/queue/stats", admin::get(stats, admin, Queue))
        .route(
            "/admin/queue/process-dlq/{queue}",
            admin::post(process_dlq, admin),
        )
        .route(
            "/admin/queue/force-process/{queue}",
            admin::post(force_process, admin),
        )
        .with_state(registry)
}

async fn health(State(registry): State<Arc<Registry>>) -> Response {
    let mut out = serde_json::Map::new();
    let mut any_critical = false;
    for h in registry.all() {
        let j = judge(&h.queue);
        any_critical |= j.is_critical();
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

async fn stats(State(registry): State<Arc<Registry>>) -> Response {
    let mut out = serde_json::Map::new();
    for h in registry.all() {
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
            "enqueue_failed": st.enqueue_failed.load(Relaxed),
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
    State(registry): State<Arc<Registry>>,
    Path(queue): Path<String>,
    Query(p): Query<DlqParams>,
) -> Response {
    let Some(h) = registry.get(&queue) else {
        return not_found(&queue);
    };
    let dry_run = match p.dry_run.as_deref() {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("dry_run must be true or false, not {other:?}"),
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
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize)]
struct ForceParams {
    batch_size: Option<usize>,
}

async fn force_process(
    State(registry): State<Arc<Registry>>,
    Path(queue): Path<String>,
    Query(p): Query<ForceParams>,
) -> Response {
    let Some(h) = registry.get(&queue) else {
        return not_found(&queue);
    };
    let n = p.batch_size.unwrap_or(100);
    if n == 0 || n > MAX_BATCH {
        return error(
            StatusCode::BAD_REQUEST,
            format!("batch_size must be 1..={MAX_BATCH}"),
        );
    }
    let r = h.force(n).await;
    json(
        StatusCode::OK,
        &serde_json::json!({"queue": queue, "result": r, "pending": h.queue.depth().pending}),
    )
}

fn not_found(queue: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no queue named {queue:?}"))
}
