//! OTLP/HTTP: `POST /v1/metrics` on its own listener.
//!
//! Behaviour follows the OTLP specification (opentelemetry-proto `docs/specification.md`,
//! "OTLP/HTTP"): protobuf (`application/x-protobuf`) and JSON (`application/json`) bodies on the
//! same port, optional `Content-Encoding: gzip`, the response in the request's encoding. Success
//! and partial success are 200 with an `ExportMetricsServiceResponse`; failures carry a
//! `google.rpc.Status`: 400 bad data, 413 over the size limits (checked before and after
//! decompression; clients do not retry it), 408 for a body not received in full within
//! `otlp.request_timeout`, 415 unknown content type or encoding, 429 with `Retry-After` at the
//! concurrency limit and 503 with `Retry-After` while shutting down (both retried by clients).
//!
//! The body is read in full (bounded in size and time) before the request takes one of the
//! `otlp.max_concurrent_requests` slots, which it holds only to decode, convert and apply: a
//! slow or stalled upload keeps no other request out.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::base::conn::{Limits, Stats};
use crate::base::duration::format_duration;

use super::receiver::{Accepted, ExportError, Receiver, Refusal};
use super::stats::{Outcome, Transport};

/// The content type of protobuf bodies.
const PROTOBUF: &str = "application/x-protobuf";
/// The content type of JSON bodies.
const JSON: &str = "application/json";
/// Seconds a throttled or refused client is asked to wait.
const RETRY_AFTER_SECS: &str = "1";

/// gRPC status codes used in `google.rpc.Status.code` (the specification lets clients ignore
/// them; they help when debugging).
mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNAVAILABLE: i32 = 14;
}

/// `google.rpc.Status` without details: the failure body of OTLP/HTTP.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    /// A gRPC status code (see [`code`]).
    #[prost(int32, tag = "1")]
    code: i32,
    /// What went wrong, for people.
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

/// A finished request: its response and how it is counted.
struct Reply {
    outcome: Outcome,
    response: Response,
}

/// The router for the OTLP/HTTP listener.
pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/v1/metrics", post(export))
        .with_state(receiver)
}

/// Serves OTLP/HTTP on `listener` within `limits` (TLS when `tls` is set) until `cancel`,
/// letting requests in flight finish (`base::serve`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    receiver: Arc<Receiver>,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) {
    crate::base::serve::http(
        listener,
        limits,
        tls,
        stats,
        router(receiver),
        axum::extract::ConnectInfo::<std::net::SocketAddr>,
        cancel,
    )
    .await;
}

async fn export(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    let reply = handle(&r, &headers, body).await;
    r.stats.request(Transport::Http, reply.outcome);
    reply.response
}

async fn handle(r: &Arc<Receiver>, headers: &HeaderMap, body: Body) -> Reply {
    let enc = match media_type(headers).as_deref() {
        Some(PROTOBUF) => Encoding::Protobuf,
        Some(JSON) => Encoding::Json,
        other => {
            let msg = format!(
                "unsupported content type {:?}: send {PROTOBUF} or {JSON}",
                other.unwrap_or("")
            );
            return failure(
                Outcome::UnsupportedMediaType,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Encoding::Protobuf,
                code::INVALID_ARGUMENT,
                msg,
            );
        }
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return failure(
                Outcome::UnsupportedMediaType,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                enc,
                code::INVALID_ARGUMENT,
                format!("unsupported content encoding {other:?}: send gzip or nothing"),
            )
        }
    };
    if r.is_closing() {
        return refused(Refusal::Closing, enc);
    }
    let max = r.max_body;
    let too_large = |what: &str| {
        failure(
            Outcome::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            enc,
            code::RESOURCE_EXHAUSTED,
            format!("{what} is larger than otlp.max_body_bytes = {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large("request body");
    }
    // The whole body first, in bounded time, holding no admission slot: a slow or stalled
    // upload must not keep other requests out.
    // The memory the body holds is taken from the body byte budget as it arrives.
    let read = {
        let _reading = Reading::start(&r.stats.bodies_reading);
        tokio::time::timeout(r.request_timeout, read_body(r, body, max)).await
    };
    let (raw, _held) = match read {
        Ok(Ok(b)) => b,
        Ok(Err(BodyError::TooLarge)) => return too_large("request body"),
        Ok(Err(BodyError::Budget)) => return refused(Refusal::BodyBudget, enc),
        Ok(Err(BodyError::Read(e))) => {
            return bad_request(enc, format!("cannot read the request body: {e}"))
        }
        Err(_) => return timed_out(enc, r.request_timeout),
    };
    r.stats.bytes(Transport::Http, raw.len());
    let permit = match r.admit() {
        Ok(p) => p,
        Err(refusal) => return refused(refusal, enc),
    };
    let receiver = Arc::clone(r);
    let work = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        decode_and_export(&receiver, &raw, gzip, enc)
    });
    match work.await {
        Ok(Ok(accepted)) => success(enc, accepted),
        Ok(Err(Failure::TooLarge)) => too_large("decompressed request body"),
        Ok(Err(Failure::Points(e))) => failure(
            Outcome::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            enc,
            code::INVALID_ARGUMENT,
            e.to_string(),
        ),
        Ok(Err(Failure::Bad(msg))) => bad_request(enc, msg),
        Err(e) => failure(
            Outcome::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            enc,
            code::UNAVAILABLE,
            format!("internal error while handling the request: {e}"),
        ),
    }
}

enum Failure {
    TooLarge,
    Points(ExportError),
    Bad(String),
}

fn decode_and_export(
    r: &Receiver,
    raw: &[u8],
    gzip: bool,
    enc: Encoding,
) -> Result<Accepted, Failure> {
    let inflated;
    let bytes = if gzip {
        inflated = gunzip(raw, r.max_body)?;
        &inflated[..]
    } else {
        raw
    };
    let req = match enc {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(bytes).map_err(|e| {
            Failure::Bad(format!("invalid protobuf ExportMetricsServiceRequest: {e}"))
        })?,
        Encoding::Json => {
            serde_json::from_slice::<ExportMetricsServiceRequest>(bytes).map_err(|e| {
                Failure::Bad(format!(
                    "invalid OTLP JSON ExportMetricsServiceRequest: {e}"
                ))
            })?
        }
    };
    r.export(&req, r.now()).map_err(Failure::Points)
}

/// Inflates a gzip body, refusing to produce more than `max` bytes.
fn gunzip(raw: &[u8], max: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Failure::Bad(format!("invalid gzip body: {e}")))?;
    if out.len() > max {
        return Err(Failure::TooLarge);
    }
    Ok(out)
}

/// The media type of the request, lower-cased, without parameters (`; charset=utf-8`).
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn success(enc: Encoding, a: Accepted) -> Reply {
    let outcome = if a.rejected > 0 {
        Outcome::Partial
    } else {
        Outcome::Success
    };
    let body = match enc {
        Encoding::Protobuf => ExportMetricsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: i64::try_from(a.rejected).unwrap_or(i64::MAX),
                error_message: a.message.clone(),
            }),
        }
        .encode_to_vec(),
        // The OTLP JSON mapping writes int64 as a decimal string.
        Encoding::Json if a.rejected > 0 => serde_json::json!({
            "partialSuccess": {
                "rejectedDataPoints": a.rejected.to_string(),
                "errorMessage": a.message,
            }
        })
        .to_string()
        .into_bytes(),
        Encoding::Json => b"{}".to_vec(),
    };
    Reply {
        outcome,
        response: with_type(StatusCode::OK, enc, body),
    }
}

fn bad_request(enc: Encoding, msg: String) -> Reply {
    failure(
        Outcome::BadRequest,
        StatusCode::BAD_REQUEST,
        enc,
        code::INVALID_ARGUMENT,
        msg,
    )
}

/// Counts a body being read for as long as it lives.
struct Reading<'a>(&'a AtomicU64);

impl<'a> Reading<'a> {
    fn start(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Relaxed);
        Reading(gauge)
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Why a body could not be read.
enum BodyError {
    /// Over `otlp.max_body_bytes`.
    TooLarge,
    /// The body byte budget is held by other bodies.
    Budget,
    /// The connection failed.
    Read(axum::Error),
}

/// Reads the whole body, at most `max` bytes, taking what arrives from the body byte budget;
/// gives back the bytes and what they hold of the budget.
async fn read_body(
    r: &Receiver,
    body: Body,
    max: usize,
) -> Result<(bytes::Bytes, Option<OwnedSemaphorePermit>), BodyError> {
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > max {
            return Err(BodyError::TooLarge);
        }
        let more = r.reserve_body(data.len()).map_err(|_| BodyError::Budget)?;
        match &mut held {
            Some(h) => h.merge(more),
            None => held = Some(more),
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), held))
}

/// A request not admitted: 429 at the concurrency limit, 503 while shutting down.
fn refused(refusal: Refusal, enc: Encoding) -> Reply {
    match refusal {
        Refusal::BodyBudget => retry_later(
            Outcome::Throttled,
            StatusCode::TOO_MANY_REQUESTS,
            enc,
            "too many OTLP request bytes being received (otlp.max_concurrent_requests x otlp.max_body_bytes); retry later",
        ),
        Refusal::Busy => retry_later(
            Outcome::Throttled,
            StatusCode::TOO_MANY_REQUESTS,
            enc,
            "too many OTLP requests in flight (otlp.max_concurrent_requests); retry later",
        ),
        Refusal::Closing => retry_later(
            Outcome::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            enc,
            "tallyd is shutting down; retry later",
        ),
    }
}

/// 408 for a body that did not arrive within `otlp.request_timeout`; the connection is closed
/// (the rest of the body is never read).
fn timed_out(enc: Encoding, timeout: Duration) -> Reply {
    let mut reply = failure(
        Outcome::Timeout,
        StatusCode::REQUEST_TIMEOUT,
        enc,
        code::DEADLINE_EXCEEDED,
        format!(
            "the request body did not arrive within otlp.request_timeout = {}",
            format_duration(timeout)
        ),
    );
    reply
        .response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    reply
}

fn retry_later(outcome: Outcome, status: StatusCode, enc: Encoding, msg: &str) -> Reply {
    let mut reply = failure(outcome, status, enc, code::UNAVAILABLE, msg.to_string());
    reply.response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    reply
}

fn failure(
    outcome: Outcome,
    status: StatusCode,
    enc: Encoding,
    grpc_code: i32,
    message: String,
) -> Reply {
    let body = match enc {
        Encoding::Protobuf => RpcStatus {
            code: grpc_code,
            message,
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": grpc_code, "message": message })
            .to_string()
            .into_bytes(),
    };
    Reply {
        outcome,
        response: with_type(status, enc, body),
    }
}

fn with_type(status: StatusCode, enc: Encoding, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, enc.content_type())], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gunzip_is_bounded() {
        let data = vec![b'a'; 10_000];
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).expect("gzip");
        let gz = enc.finish().expect("gzip");
        assert_eq!(gunzip(&gz, 10_000).ok(), Some(data));
        assert!(matches!(gunzip(&gz, 9_999), Err(Failure::TooLarge)));
        assert!(matches!(gunzip(b"not gzip", 100), Err(Failure::Bad(_))));
    }

    #[test]
    fn media_type_ignores_parameters_and_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(media_type(&h).as_deref(), Some(JSON));
        assert_eq!(media_type(&HeaderMap::new()), None);
    }
}
