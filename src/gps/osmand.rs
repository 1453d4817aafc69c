//! The OsmAnd / Traccar Client listener (`gps.osmand_listen`, 5055 as in Traccar): phones
//! report positions over HTTP.
//!
//! Three request forms, as Traccar's `osmand` decoder reads them:
//! - `GET` or `POST` with the fields in the query string:
//!   `/?id=ID&lat=..&lon=..&timestamp=..&speed=..&bearing=..&altitude=..&accuracy=..&batt=..`;
//! - `POST` with the same fields as a form body (used when the query string is empty);
//! - `POST` with `Content-Type: application/json`, the body newer Traccar Client versions send:
//!   `{"device_id": ID, "location": {"timestamp": ISO-8601, "coords": {"latitude", "longitude",
//!   "speed" (m/s), "heading", "accuracy", "altitude"}, "is_moving", "odometer", "event",
//!   "battery": {"level" (0..1), "is_charging"}, "activity": {"type"}, "extras": {...}}}`
//!   (`location` may also be an array of such objects).
//!
//! Field semantics follow that decoder: `id` or `deviceid` names the device; `timestamp` is Unix
//! seconds, Unix milliseconds (any value of 2^31 or more), ISO 8601 UTC or
//! `yyyy-MM-dd HH:mm:ss` (read as UTC); missing, the time of receipt. `speed` is knots in the
//! query form and m/s in JSON (stored as km/h, like every point); `bearing` or `heading` is the
//! course; `location=lat,lon` may replace `lat` and `lon`; `valid=false|0` marks the fix invalid;
//! other fields are kept as attributes (numbers as numbers, `true`/`false`, else text). A report
//! without coordinates updates the registry only.
//!
//! The request is answered 200 only once its point is stored by every point sink (as the TCP
//! protocols' ACKs are); 503 when it could not be (the app keeps the position and retries),
//! 400 for a missing id or a field that does not parse (counted as invalid GPS messages).
//! Served by `base::serve` (connection caps, header/idle/request timeouts, body bound).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::command::Commands;
use super::fix::{Attr, Fix, FrameError, Protocol};
use super::metrics::GpsStats;
use super::points::{Delivery, Point};
use super::registry::{Pool, Registry};
use super::server::now_ms;
use crate::base::conn::{Limits, Stats};

/// Largest request body accepted, bytes (a JSON batch of a few hundred locations).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What the handler shares with the TCP server.
pub struct Osmand {
    /// Known devices.
    pub registry: Arc<Registry>,
    /// The `tallyd_gps_*` counters.
    pub stats: Arc<GpsStats>,
    /// Where valid fixes go.
    pub delivery: Delivery,
    /// Commands waiting for devices (an OsmAnd device gets a custom one in the answer body).
    pub commands: Arc<Commands>,
}

/// The connection bounds of the listener, from `[gps]`.
pub fn limits(cfg: &super::GpsConfig) -> Limits {
    Limits {
        max_connections: cfg.osmand_max_connections,
        max_connections_per_peer: cfg.max_connections_per_ip.min(cfg.osmand_max_connections),
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        request_timeout: Some(cfg.points_timeout + Duration::from_secs(5)),
        max_header_bytes: 16 * 1024,
        max_body_bytes: Some(MAX_BODY_BYTES),
    }
}

/// Serves the listener until `cancel`; requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    limits: Limits,
    osmand: Arc<Osmand>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) {
    let router = Router::new().fallback(report).with_state(osmand);
    crate::base::serve::http(
        listener,
        limits,
        None,
        stats,
        router,
        ConnectInfo::<SocketAddr>,
        cancel,
    )
    .await;
}

/// One decoded request: the device and its fixes (none: a report without coordinates).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The device's id.
    pub id: String,
    /// Its positions, oldest first as sent.
    pub fixes: Vec<Fix>,
}

async fn report(
    State(s): State<Arc<Osmand>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != Method::GET && method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "GET or POST\n").into_response();
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    let now = now_ms();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    let parsed = parse(uri.query().unwrap_or(""), json, &body, now);
    let idx = Protocol::Osmand.index();
    let r = match parsed {
        Ok(r) => r,
        Err(e) => {
            s.stats.message(idx, Some(FrameError::Malformed), now);
            log_rejected(peer, &e);
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    s.stats.message(idx, None, now);
    let reg = &s.registry;
    let tracked = reg.connected(&r.id, Pool::Identified, Protocol::Osmand, peer, now);
    reg.message(
        &r.id,
        Pool::Identified,
        true,
        r.fixes.iter().max_by_key(|f| f.time_ms),
        now,
    );
    if tracked {
        reg.disconnected(&r.id, Pool::Identified);
    }
    let mut points = Vec::new();
    for fix in r.fixes.into_iter().filter(|f| f.valid) {
        s.stats.location_valid(Protocol::Osmand);
        if s.delivery.enabled() {
            points.push(Point::new(&r.id, Protocol::Osmand, fix, now));
        }
    }
    if !points.is_empty() && !s.delivery.deliver(points).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "points not stored, retry\n",
        )
            .into_response();
    }
    match s.commands.http_text(&r.id) {
        Some(text) => (StatusCode::OK, text).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

/// Decodes one request: the query string when it has fields, else the body (JSON when
/// `json`, else a form). `now_ms` dates a report without a timestamp.
///
/// # Errors
/// The reason, for the 400 answer: no device id, or a field that does not parse.
pub fn parse(query: &str, json: bool, body: &[u8], now_ms: i64) -> Result<Report, String> {
    if query.is_empty() && json {
        return parse_json(body, now_ms);
    }
    let pairs: Vec<(String, String)> = if query.is_empty() {
        form_urlencoded::parse(body).into_owned().collect()
    } else {
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    };
    parse_fields(&pairs, now_ms)
}

fn num(key: &str, v: &str) -> Result<f64, String> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("{key}={v:?} is not a number"))
}

fn parse_fields(pairs: &[(String, String)], now_ms: i64) -> Result<Report, String> {
    let mut id = None;
    let (mut lat, mut lon) = (None, None);
    let mut fix = Fix {
        time_ms: now_ms,
        lat: 0.0,
        lon: 0.0,
        altitude: None,
        speed_kmh: 0.0,
        course: 0.0,
        satellites: None,
        valid: true,
        attributes: BTreeMap::new(),
    };
    for (k, v) in pairs {
        match k.as_str() {
            "id" | "deviceid" => id = Some(v.trim().to_string()),
            "valid" => fix.valid = v.eq_ignore_ascii_case("true") || v == "1",
            "timestamp" => fix.time_ms = timestamp(v)?,
            "lat" => lat = Some(num(k, v)?),
            "lon" => lon = Some(num(k, v)?),
            "location" => {
                let (a, b) = v
                    .split_once(',')
                    .ok_or_else(|| format!("location={v:?} is not lat,lon"))?;
                lat = Some(num("location", a)?);
                lon = Some(num("location", b)?);
            }
            "speed" => fix.speed_kmh = num(k, v)? * 1.852,
            "bearing" | "heading" => fix.course = num(k, v)?,
            "altitude" => fix.altitude = Some(num(k, v)?),
            "accuracy" | "hdop" | "batt" => {
                fix.attributes.insert(k.clone(), Attr::Float(num(k, v)?));
            }
            _ => {
                fix.attributes.insert(k.clone(), attr(v));
            }
        }
    }
    let id = id.filter(|i| !i.is_empty()).ok_or("no id or deviceid")?;
    check_id(&id)?;
    let fixes = match (lat, lon) {
        (Some(lat), Some(lon)) => {
            fix.lat = lat;
            fix.lon = lon;
            check_position(&fix)?;
            vec![fix]
        }
        (None, None) => Vec::new(),
        _ => return Err("lat without lon, or lon without lat".into()),
    };
    Ok(Report { id, fixes })
}

/// A free-form field value: a number, a boolean as 1/0, else the text.
fn attr(v: &str) -> Attr {
    if let Ok(i) = v.parse::<i64>() {
        return Attr::Int(i);
    }
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() => Attr::Float(f),
        _ => match v {
            "true" => Attr::Int(1),
            "false" => Attr::Int(0),
            _ => Attr::Text(v.chars().take(256).collect()),
        },
    }
}

fn check_id(id: &str) -> Result<(), String> {
    if id.len() > 64 || id.chars().any(|c| c.is_control()) {
        return Err("the id must be at most 64 printable characters".into());
    }
    Ok(())
}

fn check_position(f: &Fix) -> Result<(), String> {
    if !(-90.0..=90.0).contains(&f.lat) || !(-180.0..=180.0).contains(&f.lon) {
        return Err(format!("position {},{} is out of range", f.lat, f.lon));
    }
    Ok(())
}

/// `timestamp` as Traccar reads it: Unix seconds below 2^31 - 1, milliseconds above; else ISO
/// 8601 (UTC) or `yyyy-MM-dd HH:mm:ss` (taken as UTC).
fn timestamp(v: &str) -> Result<i64, String> {
    let v = v.trim();
    if let Ok(t) = v.parse::<i64>() {
        let ms = if t < i64::from(i32::MAX) {
            t.checked_mul(1000)
        } else {
            Some(t)
        };
        return ms
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| format!("timestamp={v:?} is before 1970"));
    }
    if let Ok(t) = v.parse::<f64>() {
        if t.is_finite() && t > 0.0 {
            return Ok(if t < f64::from(i32::MAX) {
                t * 1000.0
            } else {
                t
            } as i64);
        }
    }
    humantime::parse_rfc3339_weak(v.trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| format!("timestamp={v:?} is neither Unix time nor ISO 8601"))
}

fn parse_json(body: &[u8], now_ms: i64) -> Result<Report, String> {
    use serde_json::Value;
    let root: Value = serde_json::from_slice(body).map_err(|e| format!("JSON body: {e}"))?;
    let id = root
        .get("device_id")
        .and_then(|v| match v {
            Value::String(s) => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .filter(|s| !s.is_empty())
        .ok_or("JSON body without device_id")?;
    check_id(&id)?;
    let locations: Vec<&Value> = match root.get("location") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(o @ Value::Object(_)) => vec![o],
        _ => return Err("JSON body without a location object".into()),
    };
    let mut fixes = Vec::new();
    for l in locations {
        if let Some(f) = json_fix(l, now_ms)? {
            fixes.push(f);
        }
    }
    Ok(Report { id, fixes })
}

fn json_fix(l: &serde_json::Value, now_ms: i64) -> Result<Option<Fix>, String> {
    use serde_json::Value;
    let time_ms = match l.get("timestamp") {
        Some(Value::String(s)) => timestamp(s)?,
        Some(Value::Number(n)) => timestamp(&n.to_string())?,
        _ => now_ms,
    };
    let Some(c) = l.get("coords") else {
        return Ok(None);
    };
    let f = |k: &str| c.get(k).and_then(Value::as_f64);
    let (Some(lat), Some(lon)) = (f("latitude"), f("longitude")) else {
        return Err("coords without latitude and longitude".into());
    };
    let mut fix = Fix {
        time_ms,
        lat,
        lon,
        altitude: f("altitude"),
        speed_kmh: f("speed").filter(|s| *s >= 0.0).map_or(0.0, |s| s * 3.6),
        course: f("heading").filter(|h| *h >= 0.0).unwrap_or(0.0),
        satellites: None,
        valid: true,
        attributes: BTreeMap::new(),
    };
    check_position(&fix)?;
    let a = &mut fix.attributes;
    if let Some(acc) = f("accuracy").filter(|a| *a >= 0.0) {
        a.insert("accuracy".into(), Attr::Float(acc));
    }
    if let Some(b) = l.get("battery") {
        if let Some(level) = b.get("level").and_then(Value::as_f64).filter(|v| *v >= 0.0) {
            a.insert("batt".into(), Attr::Float((level * 100.0).round()));
        }
        if b.get("is_charging").and_then(Value::as_bool) == Some(true) {
            a.insert("charge".into(), Attr::Int(1));
        }
    }
    for (k, name) in [
        ("is_moving", "motion"),
        ("odometer", "odometer"),
        ("event", "event"),
        ("mock", "mock"),
        ("alarm", "alarm"),
    ] {
        if let Some(v) = l.get(k).and_then(scalar) {
            a.insert(name.into(), v);
        }
    }
    if let Some(t) = l.pointer("/activity/type").and_then(Value::as_str) {
        a.insert("activity".into(), Attr::Text(t.chars().take(64).collect()));
    }
    if let Some(Value::Object(extras)) = l.get("extras") {
        for (k, v) in extras.iter().take(32) {
            if let Some(v) = scalar(v) {
                a.entry(k.chars().take(64).collect()).or_insert(v);
            }
        }
    }
    Ok(Some(fix))
}

fn scalar(v: &serde_json::Value) -> Option<Attr> {
    use serde_json::Value;
    match v {
        Value::Bool(b) => Some(Attr::Int(i64::from(*b))),
        Value::Number(n) => n
            .as_i64()
            .map(Attr::Int)
            .or_else(|| n.as_f64().map(Attr::Float)),
        Value::String(s) => Some(Attr::Text(s.chars().take(256).collect())),
        _ => None,
    }
}

/// Logs a refused request at most once per second.
fn log_rejected(peer: SocketAddr, e: &str) {
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let sec = now_ms() / 1000;
    if LAST.swap(sec, Relaxed) != sec {
        tracing::warn!(component = "gps", %peer, protocol = "osmand", reason = %e, "rejected an OsmAnd report (further rejections this second are counted, not logged)");
    }
}

#[cfg(test)]
#[path = "osmand_tests.rs"]
mod tests;
