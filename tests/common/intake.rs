//! A local stand-in for the Datadog intake, written from the published API documents
//! (docs.datadoghq.com/api/latest/metrics, .../service-checks, .../events, .../authentication)
//! and DataDog/agent-payload's `agent_payload.proto` field numbers. It has its own protobuf
//! decoder (the structs below), independent of tallyd's encoder types.
//!
//! It checks `DD-API-KEY` (403 otherwise), decompresses by `Content-Encoding` (zstd, gzip,
//! deflate), enforces the payload size limits (413), decodes, records what it accepted, and
//! injects faults on request: a status, 429 with `Retry-After`, slow answers, and connections
//! dropped without a response.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub const SERIES_MAX_COMPRESSED: usize = 512_000;
pub const SERIES_MAX_UNCOMPRESSED: usize = 5_242_880;
pub const SERIES_MAX_POINTS: usize = 10_000;
pub const GENERIC_MAX_COMPRESSED: usize = 2_621_440;
pub const GENERIC_MAX_UNCOMPRESSED: usize = 4_194_304;

// ---- the intake's own view of agent_payload.proto ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct InMetricPayload {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<InSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InSeries {
    #[prost(message, repeated, tag = "1")]
    pub resources: Vec<InResource>,
    #[prost(string, tag = "2")]
    pub metric: String,
    #[prost(string, repeated, tag = "3")]
    pub tags: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    pub points: Vec<InPoint>,
    /// 0 unspecified, 1 count, 2 rate, 3 gauge.
    #[prost(int32, tag = "5")]
    pub mtype: i32,
    #[prost(string, tag = "6")]
    pub unit: String,
    #[prost(string, tag = "7")]
    pub source_type_name: String,
    #[prost(int64, tag = "8")]
    pub interval: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InResource {
    #[prost(string, tag = "1")]
    pub rtype: String,
    #[prost(string, tag = "2")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InPoint {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InSketchPayload {
    #[prost(message, repeated, tag = "1")]
    pub sketches: Vec<InSketch>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InSketch {
    #[prost(string, tag = "1")]
    pub metric: String,
    #[prost(string, tag = "2")]
    pub host: String,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub legacy_distributions: Vec<Vec<u8>>,
    #[prost(string, repeated, tag = "4")]
    pub tags: Vec<String>,
    #[prost(message, repeated, tag = "7")]
    pub dogsketches: Vec<InDogsketch>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InDogsketch {
    #[prost(int64, tag = "1")]
    pub ts: i64,
    #[prost(int64, tag = "2")]
    pub cnt: i64,
    #[prost(double, tag = "3")]
    pub min: f64,
    #[prost(double, tag = "4")]
    pub max: f64,
    #[prost(double, tag = "5")]
    pub avg: f64,
    #[prost(double, tag = "6")]
    pub sum: f64,
    #[prost(sint32, repeated, tag = "7")]
    pub k: Vec<i32>,
    #[prost(uint32, repeated, tag = "8")]
    pub n: Vec<u32>,
}

/// What the intake does with the next requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    None,
    /// Answer every POST with this status (and a JSON error body).
    Status(u16),
    /// Answer this status to POSTs on this path only.
    StatusFor(&'static str, u16),
    /// 429 with `Retry-After: secs`.
    TooMany {
        retry_after: u64,
    },
    /// Wait this long, then answer 503.
    Slow(Duration),
    /// Close the connection without answering.
    Drop,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub status: u16,
    pub payload_id: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
pub struct Accepted {
    pub series: Vec<InSeries>,
    pub sketches: Vec<InSketch>,
    pub checks: Vec<serde_json::Value>,
    pub events: Vec<serde_json::Value>,
    /// Payload ids of accepted POSTs, in order.
    pub ids: Vec<String>,
}

pub struct IntakeState {
    pub api_key: String,
    pub fault: Mutex<Fault>,
    pub seen: Mutex<Vec<Seen>>,
    pub accepted: Mutex<Accepted>,
    pub dropped_connections: AtomicU64,
}

pub struct Intake {
    pub addr: SocketAddr,
    pub state: Arc<IntakeState>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Intake {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A listener that drops connections while the fault is `Drop`.
struct FaultyListener {
    inner: tokio::net::TcpListener,
    state: Arc<IntakeState>,
}

impl axum::serve::Listener for FaultyListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((mut s, a)) = self.inner.accept().await else {
                continue;
            };
            if *self.state.fault.lock().expect("fault") == Fault::Drop {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
                self.state.dropped_connections.fetch_add(1, Relaxed);
                drop(s);
                continue;
            }
            return (s, a);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Intake {
    pub fn start(api_key: &str) -> Intake {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let state = Arc::new(IntakeState {
            api_key: api_key.to_string(),
            fault: Mutex::new(Fault::None),
            seen: Mutex::new(Vec::new()),
            accepted: Mutex::new(Accepted::default()),
            dropped_connections: AtomicU64::new(0),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind intake");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route("/api/v1/validate", get(validate))
            .route("/api/v2/series", post(series))
            .route("/api/beta/sketches", post(sketches))
            .route("/api/v1/check_run", post(check_run))
            .route("/api/v1/events", post(events))
            .with_state(Arc::clone(&state))
            // No keep-alive: every request opens a connection, so a `Drop` fault reaches it.
            .layer(axum::middleware::map_response(close_connection));
        let l = FaultyListener {
            inner: listener,
            state: Arc::clone(&state),
        };
        rt.spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Intake {
            addr,
            state,
            rt: Some(rt),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_fault(&self, f: Fault) {
        *self.state.fault.lock().expect("fault") = f;
    }

    pub fn accepted(&self) -> std::sync::MutexGuard<'_, Accepted> {
        self.state.accepted.lock().expect("accepted")
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen").clone()
    }

    /// Polls `pred` over what was accepted until true, or panics after `secs`.
    pub fn wait(&self, secs: u64, what: &str, pred: impl Fn(&Accepted) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if pred(&self.accepted()) {
                return;
            }
            if Instant::now() > deadline {
                let a = self.accepted();
                let names: Vec<&str> = a.series.iter().map(|s| s.metric.as_str()).collect();
                panic!(
                    "intake: timed out waiting for {what}; series seen: {names:?}; requests: {:?}",
                    self.seen()
                        .iter()
                        .map(|s| (&s.path, s.status))
                        .collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sum over accepted points of a RATE series of value × interval: the count it stands for.
    pub fn counted(&self, metric: &str) -> f64 {
        self.accepted()
            .series
            .iter()
            .filter(|s| s.metric == metric)
            .flat_map(|s| s.points.iter().map(move |p| p.value * s.interval as f64))
            .sum()
    }
}

async fn close_connection(mut r: Response) -> Response {
    r.headers_mut()
        .insert("connection", axum::http::HeaderValue::from_static("close"));
    r
}

fn error(status: u16, msg: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [("content-type", "application/json")],
        serde_json::json!({"errors": [msg]}).to_string(),
    )
        .into_response()
}

async fn validate(State(s): State<Arc<IntakeState>>, h: HeaderMap) -> Response {
    if h.get("dd-api-key").and_then(|v| v.to_str().ok()) == Some(s.api_key.as_str()) {
        (
            StatusCode::OK,
            serde_json::json!({"valid": true}).to_string(),
        )
            .into_response()
    } else {
        error(403, "Forbidden")
    }
}

fn decompress(h: &HeaderMap, body: &[u8], max: usize) -> Result<Vec<u8>, (u16, String)> {
    let enc = h
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut out = Vec::new();
    let limited = |r: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), (u16, String)> {
        r.take(max as u64 + 1)
            .read_to_end(out)
            .map_err(|e| (400, format!("cannot decompress: {e}")))?;
        Ok(())
    };
    match enc {
        "" | "identity" => out = body.to_vec(),
        "zstd" => limited(
            &mut zstd::stream::read::Decoder::new(body).map_err(|e| (400, e.to_string()))?,
            &mut out,
        )?,
        "gzip" => limited(&mut flate2::read::GzDecoder::new(body), &mut out)?,
        "deflate" => limited(&mut flate2::read::ZlibDecoder::new(body), &mut out)?,
        other => return Err((415, format!("unsupported Content-Encoding {other}"))),
    }
    if out.len() > max {
        return Err((413, format!("decompressed payload larger than {max} bytes")));
    }
    Ok(out)
}

/// Common checks and fault injection. `Ok` carries the decompressed body.
async fn admit(
    s: &IntakeState,
    path: &str,
    h: &HeaderMap,
    body: &[u8],
    max_c: usize,
    max_u: usize,
    ctype: &str,
) -> Result<Vec<u8>, Response> {
    let id = h
        .get("x-tallyd-payload-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let headers = h
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let record = |status: u16| {
        s.seen.lock().expect("seen").push(Seen {
            at: Instant::now(),
            path: path.into(),
            status,
            payload_id: id.clone(),
            headers: Vec::clone(&headers),
        });
    };
    let fault = s.fault.lock().expect("fault").clone();
    match fault {
        Fault::Status(code) => {
            record(code);
            return Err(error(code, "injected"));
        }
        Fault::StatusFor(p, code) if p == path => {
            record(code);
            return Err(error(code, "injected rejection"));
        }
        Fault::TooMany { retry_after } => {
            record(429);
            let mut r = error(429, "rate limited");
            r.headers_mut()
                .insert("retry-after", retry_after.to_string().parse().expect("hv"));
            return Err(r);
        }
        Fault::Slow(d) => {
            tokio::time::sleep(d).await;
            record(503);
            return Err(error(503, "slow"));
        }
        _ => {}
    }
    if h.get("dd-api-key").and_then(|v| v.to_str().ok()) != Some(s.api_key.as_str()) {
        record(403);
        return Err(error(403, "Forbidden"));
    }
    if h.get("content-type").and_then(|v| v.to_str().ok()) != Some(ctype) {
        record(415);
        return Err(error(415, "wrong Content-Type"));
    }
    if body.len() > max_c {
        record(413);
        return Err(error(413, "payload too large"));
    }
    match decompress(h, body, max_u) {
        Ok(b) => {
            record(202);
            Ok(b)
        }
        Err((code, msg)) => {
            record(code);
            Err(error(code, &msg))
        }
    }
}

fn accept_id(s: &IntakeState, h: &HeaderMap) {
    let id = h
        .get("x-tallyd-payload-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    s.accepted.lock().expect("accepted").ids.push(id);
}

fn ok() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        "{\"errors\":[]}",
    )
        .into_response()
}

async fn series(State(s): State<Arc<IntakeState>>, h: HeaderMap, body: Bytes) -> Response {
    let raw = match admit(
        &s,
        "/api/v2/series",
        &h,
        &body,
        SERIES_MAX_COMPRESSED,
        SERIES_MAX_UNCOMPRESSED,
        "application/x-protobuf",
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let p: InMetricPayload = match prost::Message::decode(raw.as_slice()) {
        Ok(p) => p,
        Err(e) => return error(400, &format!("bad protobuf: {e}")),
    };
    let points: usize = p.series.iter().map(|s| s.points.len()).sum();
    if points > SERIES_MAX_POINTS {
        return error(413, "too many points");
    }
    accept_id(&s, &h);
    s.accepted.lock().expect("accepted").series.extend(p.series);
    ok()
}

async fn sketches(State(s): State<Arc<IntakeState>>, h: HeaderMap, body: Bytes) -> Response {
    let raw = match admit(
        &s,
        "/api/beta/sketches",
        &h,
        &body,
        GENERIC_MAX_COMPRESSED,
        GENERIC_MAX_UNCOMPRESSED,
        "application/x-protobuf",
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let p: InSketchPayload = match prost::Message::decode(raw.as_slice()) {
        Ok(p) => p,
        Err(e) => return error(400, &format!("bad protobuf: {e}")),
    };
    accept_id(&s, &h);
    s.accepted
        .lock()
        .expect("accepted")
        .sketches
        .extend(p.sketches);
    ok()
}

async fn check_run(State(s): State<Arc<IntakeState>>, h: HeaderMap, body: Bytes) -> Response {
    let raw = match admit(
        &s,
        "/api/v1/check_run",
        &h,
        &body,
        GENERIC_MAX_COMPRESSED,
        GENERIC_MAX_UNCOMPRESSED,
        "application/json",
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(serde_json::Value::Array(items)) = serde_json::from_slice::<serde_json::Value>(&raw)
    else {
        return error(400, "expected a JSON array of checks");
    };
    for c in &items {
        let status_ok = c["status"].as_u64().is_some_and(|s| s <= 3);
        if c["check"].as_str().is_none() || !status_ok {
            return error(400, "check and status (0..3) are required");
        }
    }
    accept_id(&s, &h);
    s.accepted.lock().expect("accepted").checks.extend(items);
    (StatusCode::ACCEPTED, "{\"status\":\"ok\"}").into_response()
}

async fn events(State(s): State<Arc<IntakeState>>, h: HeaderMap, body: Bytes) -> Response {
    let raw = match admit(
        &s,
        "/api/v1/events",
        &h,
        &body,
        GENERIC_MAX_COMPRESSED,
        GENERIC_MAX_UNCOMPRESSED,
        "application/json",
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&raw) else {
        return error(400, "bad JSON");
    };
    if ev["title"].as_str().is_none() || ev["text"].as_str().is_none() {
        return error(400, "title and text are required");
    }
    if ev["text"]
        .as_str()
        .is_some_and(|t| t.chars().count() > 4000)
    {
        return error(400, "text longer than 4000 characters");
    }
    accept_id(&s, &h);
    s.accepted.lock().expect("accepted").events.push(ev);
    (StatusCode::ACCEPTED, "{\"status\":\"ok\"}").into_response()
}

/// The Agent's DDSketch key, computed independently: eps 1/128, min 1e-9.
pub fn sketch_key(v: f64) -> i32 {
    let gamma_ln = (1.0f64 + 2.0 / 128.0).ln();
    let bias = -((1e-9f64).ln() / gamma_ln).floor() as i32 + 1;
    if v < 0.0 {
        return -sketch_key(-v);
    }
    if v < 1e-9 {
        return 0;
    }
    ((v.ln() / gamma_ln).round() as i32 + bias).clamp(1, i16::MAX as i32)
}
