//! The dashboard API, with the platform documents' field names:
//!
//! - `GET /api/monitoring/dashboard`: `timestamp`, `platform_health` (`status`, `issues`,
//!   `components_checked`, and each component), `live_tracking`, `gps_tcp_server`, `queues`,
//!   and tallyd's own `ingest` and `alerts` sections, and `last_reload` (as `/health` has it);
//! - `GET /api/monitoring/metrics/queues`: the `queues` part alone, with the dead-letter status;
//! - `GET /api/monitoring/history`: the status page's ring (`history.rs`) as rates and levels.
//!
//! Every number is read from what `/metrics` shows (the self-metric families), the health
//! table, the queue registry, the alert snapshot and the GPS registry at request time, so the
//! page, this API and a scrape agree. Rates (`*_per_second`) are taken over the ring's last
//! minute. The dashboard and history are route group `dashboard` (counts only: no device
//! position, address or endpoint), the queue view is group `queue`; both are behind the admin
//! rule unless `http.public_routes` has their group.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use serde_json::{json, Map, Value};

use super::admin::{get, Admin};
use super::config::RouteGroup;
use super::history::{per_second, History, Point, SAMPLE_EVERY};
use super::json;
use crate::alert;
use crate::base::health::{Health, Status};
use crate::base::metrics::{Family, Kind};
use crate::gps::server::now_ms;
use crate::gps::service::GpsState;
use crate::queue::health::judge;
use crate::queue::Registry;
use crate::telemetry::Telemetry;

/// Alerts listed per state; the counts are always whole.
const MAX_ALERTS_LISTED: usize = 50;

/// What the dashboard reads.
#[derive(Clone)]
pub struct Sources {
    /// tallyd's counters and every registered self-metric source.
    pub telemetry: Arc<Telemetry>,
    /// Every component's health.
    pub health: Arc<Health>,
    /// The delivery queues.
    pub queues: Arc<Registry>,
    /// Alerting, when enabled.
    pub alerts: Option<Arc<alert::Shared>>,
    /// The GPS server, when it runs.
    pub gps: Option<GpsState>,
    /// The status page's ring.
    pub history: Arc<History>,
}

/// The dashboard routes.
pub(super) fn router(src: Sources, admin: &Admin) -> Router {
    Router::new()
        .route(
            "/api/monitoring/dashboard",
            get(dashboard, admin, RouteGroup::Dashboard),
        )
        .route(
            "/api/monitoring/history",
            get(history, admin, RouteGroup::Dashboard),
        )
        .route(
            "/api/monitoring/metrics/queues",
            get(queues_view, admin, RouteGroup::Queue),
        )
        .with_state(src)
}

/// Takes one point every [`SAMPLE_EVERY`] until `stop` is cancelled.
pub async fn sample(src: Sources, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let families = src.telemetry.snapshot();
                src.history.push(point(&src, &families, now_ms()));
            }
        }
    }
}

fn rfc3339(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn family<'a>(families: &'a [Family], name: &str) -> Option<&'a Family> {
    families.iter().find(|f| f.name == name)
}

/// The sum of a family's number samples whose `label` is `value` (every sample when `None`).
fn sum(families: &[Family], name: &str, label: Option<(&str, &str)>) -> u64 {
    family(families, name).map_or(0, |f| {
        f.samples
            .iter()
            .filter(|s| label.is_none_or(|(k, v)| s.label(k) == Some(v)))
            .filter_map(|s| s.number())
            .filter(|v| v.is_finite() && *v > 0.0)
            .map(|v| v as u64)
            .sum()
    })
}

/// Whether a counter family counts something dropped at a bound.
fn is_drop(f: &Family) -> bool {
    f.kind == Kind::Counter
        && (f.name.ends_with("_dropped")
            || f.name.ends_with("_drops")
            || f.name.ends_with("_truncated"))
}

fn drops(families: &[Family]) -> BTreeMap<&'static str, u64> {
    families
        .iter()
        .filter(|f| is_drop(f))
        .map(|f| (f.name, sum(families, f.name, None)))
        .collect()
}

/// Rejected input by source and reason: `statsd:<reason>`, `otlp:<reason>`, `gps:invalid`.
fn parse_errors(families: &[Family]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (source, name) in [
        ("statsd", "tallyd_statsd_parse_errors"),
        ("otlp", "tallyd_otlp_points_rejected"),
    ] {
        for s in family(families, name).map_or(&[][..], |f| &f.samples) {
            let reason = s.label("reason").unwrap_or("other");
            let n = s
                .number()
                .filter(|v| v.is_finite() && *v > 0.0)
                .unwrap_or(0.0);
            *out.entry(format!("{source}:{reason}")).or_insert(0) += n as u64;
        }
    }
    if family(families, "tallyd_gps_invalid_messages").is_some() {
        out.insert(
            "gps:invalid".into(),
            sum(families, "tallyd_gps_invalid_messages", None),
        );
    }
    out
}

struct QueueTotals {
    pending: u64,
    dlq: u64,
}

fn queue_totals(src: &Sources) -> QueueTotals {
    let mut t = QueueTotals { pending: 0, dlq: 0 };
    for h in src.queues.all() {
        let d = h.queue.depth();
        t.pending += d.pending;
        t.dlq += d.dlq;
    }
    t
}

fn alert_counts(src: &Sources) -> (u64, u64) {
    src.alerts.as_ref().map_or((0, 0), |s| {
        let snap = crate::base::lock(&s.snapshot);
        (snap.firing.len() as u64, snap.pending.len() as u64)
    })
}

fn active_devices(src: &Sources, now: i64) -> (u64, u64) {
    src.gps.as_ref().map_or((0, 0), |g| {
        let (total, active) = g.registry.counts(now);
        (total as u64, active.iter().sum())
    })
}

/// The totals now, as the ring keeps them.
pub fn point(src: &Sources, families: &[Family], now: i64) -> Point {
    let q = queue_totals(src);
    let (firing, pending) = alert_counts(src);
    let lines = |t| sum(families, "tallyd_statsd_lines", Some(("transport", t)));
    Point {
        t_ms: u64::try_from(now).unwrap_or(0),
        statsd_udp: lines("udp"),
        statsd_tcp: lines("tcp"),
        statsd_uds: lines("uds"),
        otlp_requests: sum(families, "tallyd_otlp_requests", None),
        gps_messages: sum(families, "tallyd_gps_messages", None),
        samples: sum(families, "tallyd_statsd_samples", None)
            + sum(families, "tallyd_otlp_points_accepted", None),
        parse_errors: parse_errors(families).values().sum(),
        drops: drops(families).values().sum(),
        queue_pending: q.pending,
        queue_dlq: q.dlq,
        alerts_firing: firing,
        alerts_pending: pending,
        active_devices: active_devices(src, now).1,
    }
}

/// The platform's words for the health states.
fn platform_status(s: Status) -> &'static str {
    match s {
        Status::Ok => "healthy",
        Status::Degraded => "degraded",
        Status::Down => "unhealthy",
        Status::Disabled => "disabled",
    }
}

type Components = BTreeMap<&'static str, crate::base::health::Component>;

fn platform_health(src: &Sources, overall: Status, components: &Components) -> Value {
    let mut issues = Vec::new();
    if !src.health.is_ready() {
        issues.push("tallyd is not ready (starting or shutting down)".to_string());
    }
    for (name, c) in components {
        if matches!(c.status, Status::Degraded | Status::Down) {
            issues.push(format!("{name}: {}", c.detail));
        }
    }
    json!({
        "status": platform_status(overall),
        "issues": issues,
        "components_checked": components.len(),
        "components": components,
    })
}

/// The `queues` part: each queue's depth and state, the summary and the dead-letter status.
pub fn queues(src: &Sources) -> Value {
    let mut per = Map::new();
    let (mut pending, mut processing, mut dlq) = (0u64, 0u64, 0u64);
    let mut worst = 0;
    let mut with_letters = Vec::new();
    for h in src.queues.all() {
        let q = &h.queue;
        let d = q.depth();
        let j = judge(q);
        let in_flight = q.stats.in_flight.load(Relaxed);
        worst = worst.max(match j.status {
            "critical" => 2,
            "degraded" => 1,
            _ => 0,
        });
        pending += d.pending;
        processing += in_flight;
        dlq += d.dlq;
        if d.dlq > 0 {
            with_letters.push(q.name().to_string());
        }
        per.insert(
            q.name().to_string(),
            json!({
                "pending": d.pending,
                "processing": in_flight,
                "dlq_size": d.dlq,
                "status": j.status,
                "dlq_status": if d.dlq > 0 { "has_dead_letters" } else { "empty" },
                "reasons": j.reasons,
            }),
        );
    }
    let status = ["healthy", "degraded", "critical"][worst];
    json!({
        "status": status,
        "queues": per,
        "summary": {
            "total_pending": pending,
            "total_processing": processing,
            "total_dlq": dlq,
            "queue_count": per.len(),
        },
        "dlq": {
            "status": if dlq > 0 { "has_dead_letters" } else { "empty" },
            "total": dlq,
            "queues_with_dead_letters": with_letters,
        },
    })
}

fn live_and_gps(
    src: &Sources,
    families: &[Family],
    components: &Components,
    now: i64,
) -> (Value, Value) {
    let span = src.history.rate_span();
    let (devices, active) = active_devices(src, now);
    let live = src
        .queues
        .get(crate::gps::forward::QUEUE_NAME)
        .map(|h| h.queue.depth());
    let live_tracking = json!({
        "active_devices": active,
        "messages_per_second": per_second(span, |p| p.gps_messages),
        "queue_pending": live.map_or(0, |d| d.pending),
        "dlq_size": live.map_or(0, |d| d.dlq),
    });
    let status = match components.get("gps").map(|c| c.status) {
        Some(Status::Ok) => "running",
        Some(Status::Degraded) => "degraded",
        Some(Status::Down) => "down",
        Some(Status::Disabled) | None => "disabled",
    };
    let connections: u64 = src
        .gps
        .as_ref()
        .map_or(0, |g| g.stats.active.iter().map(|a| a.load(Relaxed)).sum());
    let gps_tcp_server = json!({
        "status": status,
        "active_connections": connections,
        "messages_total": sum(families, "tallyd_gps_messages", None),
        "devices_total": devices,
    });
    (live_tracking, gps_tcp_server)
}

fn ingest(src: &Sources, families: &[Family], now: Point) -> Value {
    let span = src.history.rate_span();
    let transport = |unit: &str, total: u64, field: fn(&Point) -> u64| json!({"unit": unit, "total": total, "per_second": per_second(span, field)});
    let errors = parse_errors(families);
    let dropped = drops(families);
    json!({
        "transports": {
            "statsd_udp": transport("lines", now.statsd_udp, |p| p.statsd_udp),
            "statsd_tcp": transport("lines", now.statsd_tcp, |p| p.statsd_tcp),
            "statsd_uds": transport("lines", now.statsd_uds, |p| p.statsd_uds),
            "otlp": transport("requests", now.otlp_requests, |p| p.otlp_requests),
            "gps_tcp": transport("frames", now.gps_messages, |p| p.gps_messages),
        },
        "samples_total": now.samples,
        "samples_per_second": per_second(span, |p| p.samples),
        "parse_errors": {
            "total": now.parse_errors,
            "per_second": per_second(span, |p| p.parse_errors),
            "by_reason": errors,
        },
        "drops": {
            "total": now.drops,
            "per_second": per_second(span, |p| p.drops),
            "by_counter": dropped,
        },
        "contexts": sum(families, "tallyd_aggregate_contexts", None),
        "flush": {
            "windows_total": sum(families, "tallyd_flush", None),
            "last_series": sum(families, "tallyd_flush_series", None),
            "last_unix": sum(families, "tallyd_flush_last_timestamp_seconds", None),
            "last_duration_seconds": family(families, "tallyd_flush_duration_seconds")
                .and_then(|f| f.get(&[])),
        },
        "busiest_metrics": src.history.busiest(),
    })
}

fn alerts_section(src: &Sources) -> Value {
    let Some(shared) = &src.alerts else {
        return json!({"enabled": false, "rules": 0, "firing_count": 0, "pending_count": 0,
                      "firing": [], "pending": [], "evaluated_at": null});
    };
    let snap = crate::base::lock(&shared.snapshot).clone();
    let listed = |v: &[alert::snapshot::ActiveAlert]| {
        v.iter()
            .take(MAX_ALERTS_LISTED)
            .cloned()
            .collect::<Vec<_>>()
    };
    json!({
        "enabled": true,
        "rules": snap.rules,
        "evaluated_at": snap.evaluated_at,
        "firing_count": snap.firing.len(),
        "pending_count": snap.pending.len(),
        "firing": listed(&snap.firing),
        "pending": listed(&snap.pending),
    })
}

/// The whole dashboard now.
pub fn build(src: &Sources) -> Value {
    let now = now_ms();
    let families = src.telemetry.snapshot();
    let totals = point(src, &families, now);
    let (overall, components) = src.health.snapshot();
    let (live_tracking, gps_tcp_server) = live_and_gps(src, &families, &components, now);
    let uptime = family(&families, "tallyd_uptime_seconds").and_then(|f| f.get(&[]));
    json!({
        "timestamp": rfc3339(now),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "platform_health": platform_health(src, overall, &components),
        "live_tracking": live_tracking,
        "gps_tcp_server": gps_tcp_server,
        "queues": queues(src),
        "ingest": ingest(src, &families, totals),
        "alerts": alerts_section(src),
        "last_reload": src.health.last_reload(),
    })
}

async fn dashboard(State(src): State<Sources>) -> Response {
    json(StatusCode::OK, &build(&src))
}

async fn queues_view(State(src): State<Sources>) -> Response {
    let mut v = queues(&src);
    if let Some(m) = v.as_object_mut() {
        m.insert("timestamp".into(), Value::String(rfc3339(now_ms())));
    }
    json(StatusCode::OK, &v)
}

/// The ring as the page charts it: per point, rates since the point before and levels.
pub fn history_view(h: &History) -> Value {
    let points = h.points();
    let rate = |a: &Point, b: &Point, f: fn(&Point) -> u64| per_second(Some((*a, *b)), f);
    let rows: Vec<Value> = points
        .windows(2)
        .map(|w| {
            let (a, b) = (&w[0], &w[1]);
            json!({
                "t_ms": b.t_ms,
                "statsd_lines_per_second": rate(a, b, |p| p.statsd_udp + p.statsd_tcp + p.statsd_uds),
                "otlp_requests_per_second": rate(a, b, |p| p.otlp_requests),
                "gps_messages_per_second": rate(a, b, |p| p.gps_messages),
                "samples_per_second": rate(a, b, |p| p.samples),
                "parse_errors_per_second": rate(a, b, |p| p.parse_errors),
                "drops_per_second": rate(a, b, |p| p.drops),
                "queue_pending": b.queue_pending,
                "queue_dlq": b.queue_dlq,
                "alerts_firing": b.alerts_firing,
                "alerts_pending": b.alerts_pending,
                "active_devices": b.active_devices,
            })
        })
        .collect();
    json!({
        "interval_seconds": SAMPLE_EVERY.as_secs(),
        "capacity": super::history::POINTS,
        "points": rows,
    })
}

async fn history(State(src): State<Sources>) -> Response {
    json(StatusCode::OK, &history_view(&src.history))
}

#[cfg(test)]
#[path = "dashboard_tests.rs"]
mod tests;
