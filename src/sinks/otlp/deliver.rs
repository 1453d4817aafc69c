//! Sending one queued `ExportMetricsServiceRequest` and judging the answer as the OTLP spec
//! says (opentelemetry-proto `docs/specification.md`, "OTLP/HTTP Response" and "OTLP/gRPC
//! Response"):
//!
//! - HTTP: 2xx is success (a body with `partial_success` is counted and logged); 429, 502, 503
//!   and 504 are retried, honouring `Retry-After`; every other status MUST NOT be retried and
//!   goes to the dead-letter queue with the response.
//! - gRPC: OK is success (with `partial_success` as above); CANCELLED, DEADLINE_EXCEEDED,
//!   ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retried; RESOURCE_EXHAUSTED only when
//!   the server sent `RetryInfo`; a `RetryInfo` delay is honoured; every other code goes to the
//!   dead-letter queue.
//! - No answer (connection, timeout): retried.
//!
//! gRPC is spoken over the same reqwest client as OTLP/HTTP (HTTP/2, the 5-byte message framing,
//! `grpc-status` from the headers or the trailers): one client, one TLS setup (roots, CA file)
//! and one timeout for both protocols, instead of a tonic channel beside reqwest.

use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};

use super::config::{OtlpExportConfig, Protocol};
use crate::base::lock;
use crate::queue::deliver::{describe, retry_after, Attempt, BoxFuture, Deliver, FailureClass};
use crate::queue::store::{Meta, MAX_RESPONSE_BODY};

/// The gRPC method path.
pub const GRPC_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// The OTLP/HTTP metrics path.
pub const HTTP_PATH: &str = "/v1/metrics";

/// What partial successes told.
#[derive(Default)]
pub struct Partial {
    /// Answers carrying a `partial_success`.
    pub responses: AtomicU64,
    /// Data points the receiver said it rejected.
    pub rejected_points: AtomicU64,
}

/// Delivers OTLP payloads over HTTP or gRPC.
pub struct OtlpDeliver {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    protocol: Protocol,
    timeout: Duration,
    partial: Arc<Partial>,
    last_log: Mutex<Option<Instant>>,
}

/// `google.rpc.Status`, `google.protobuf.Any`, `google.rpc.RetryInfo` and
/// `google.protobuf.Duration`: the parts of a gRPC error's details OTLP uses.
mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// The `RetryInfo` delay in a `google.rpc.Status`, capped at one hour.
pub fn retry_info(status: &[u8]) -> Option<Duration> {
    let s = rpc::Status::decode(status).ok()?;
    let any = s
        .details
        .iter()
        .find(|a| a.type_url.ends_with("/google.rpc.RetryInfo"))?;
    let d = rpc::RetryInfo::decode(any.value.as_slice())
        .ok()?
        .retry_delay?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).unwrap_or(0).min(999_999_999);
    Some(Duration::new(secs, nanos).min(Duration::from_secs(3600)))
}

/// How a gRPC status code is handled.
#[derive(Debug, PartialEq, Eq)]
pub enum GrpcVerdict {
    /// OK.
    Ok,
    /// Try again (with the class it counts under).
    Retry(FailureClass),
    /// Never again.
    Reject,
}

/// The spec's table of retryable gRPC codes.
pub fn grpc_verdict(code: i32, has_retry_info: bool) -> GrpcVerdict {
    match code {
        0 => GrpcVerdict::Ok,
        4 => GrpcVerdict::Retry(FailureClass::Timeout),
        1 | 10 | 11 | 14 | 15 => GrpcVerdict::Retry(FailureClass::Server5xx),
        8 if has_retry_info => GrpcVerdict::Retry(FailureClass::Client4xx),
        _ => GrpcVerdict::Reject,
    }
}

/// gRPC's mapping of an HTTP status without `grpc-status` to a code.
pub fn grpc_code_of_http(status: u16) -> i32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// Whether an OTLP/HTTP status is retried.
pub fn http_retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("?")
}

/// `grpc-message` is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn truncate(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(MAX_RESPONSE_BODY)]).into_owned()
}

/// The readable part of an OTLP/HTTP error body (a `google.rpc.Status`, or text).
fn error_text(body: &[u8]) -> String {
    match rpc::Status::decode(body) {
        Ok(s) if !s.message.is_empty() => s.message,
        _ => truncate(body),
    }
}

/// A gRPC message from its 5-byte framing (gzip-compressed or not).
fn unframe(body: &[u8]) -> Option<Vec<u8>> {
    let (head, rest) = (body.get(..5)?, body.get(5..)?);
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let msg = rest.get(..len)?;
    if head[0] == 1 {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(msg)
            .take(64 * 1024 * 1024)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    } else {
        Some(msg.to_vec())
    }
}

/// Most of an answer's body read: an OTLP answer is a small message.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// An answer's body (at most [`MAX_ANSWER_BYTES`]) and its trailers.
async fn read_limited(body: reqwest::Body) -> Result<(bytes::Bytes, Option<HeaderMap>), String> {
    let c = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let t = c.trailers().cloned();
    Ok((c.to_bytes(), t))
}

impl OtlpDeliver {
    /// A delivery for `cfg`.
    ///
    /// # Errors
    /// The CA file cannot be read or parsed, or the client cannot be built; the message says
    /// which.
    pub fn new(
        cfg: &OtlpExportConfig,
        headers: HeaderMap,
        partial: Arc<Partial>,
    ) -> Result<OtlpDeliver, String> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(45));
        if cfg.protocol == Protocol::Grpc {
            b = b.http2_prior_knowledge();
        }
        if !cfg.tls_ca_file.is_empty() {
            let pem = std::fs::read(&cfg.tls_ca_file)
                .map_err(|e| format!("otlp_export.tls_ca_file {:?}: {e}", cfg.tls_ca_file))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                format!(
                    "otlp_export.tls_ca_file {:?}: not PEM certificates: {e}",
                    cfg.tls_ca_file
                )
            })?;
            if certs.is_empty() {
                return Err(format!(
                    "otlp_export.tls_ca_file {:?} holds no certificate",
                    cfg.tls_ca_file
                ));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| format!("otlp_export: cannot build the HTTP client: {e}"))?;
        let path = match cfg.protocol {
            Protocol::HttpProtobuf => HTTP_PATH,
            Protocol::Grpc => GRPC_PATH,
        };
        Ok(OtlpDeliver {
            client,
            url: format!("{}{path}", cfg.endpoint.trim_end_matches('/')),
            headers,
            protocol: cfg.protocol,
            timeout: cfg.timeout,
            partial,
            last_log: Mutex::new(None),
        })
    }

    /// Counts a `partial_success` and logs it (the first, then at most once a minute).
    fn partial_success(&self, body: &[u8]) {
        let Ok(r) = ExportMetricsServiceResponse::decode(body) else {
            return;
        };
        let Some(p) = r.partial_success else {
            return;
        };
        if p.rejected_data_points == 0 && p.error_message.is_empty() {
            return;
        }
        let rejected = u64::try_from(p.rejected_data_points).unwrap_or(0);
        self.partial.responses.fetch_add(1, Relaxed);
        self.partial.rejected_points.fetch_add(rejected, Relaxed);
        let mut last = lock(&self.last_log);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(component = "otlp_export", rejected_points = rejected, message = %p.error_message, total_rejected = self.partial.rejected_points.load(Relaxed), "the OTLP receiver rejected part of a request");
        }
    }

    fn no_answer(e: &reqwest::Error) -> Attempt {
        Attempt::Retry {
            class: if e.is_timeout() {
                FailureClass::Timeout
            } else {
                FailureClass::Connection
            },
            status: None,
            after: None,
            why: describe(e),
        }
    }

    async fn http(&self, meta: &Meta, body: Vec<u8>) -> Attempt {
        let mut req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/x-protobuf");
        if meta.content_encoding == "gzip" {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => return Self::no_answer(&e),
        };
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers(), SystemTime::now());
        let resp: http::Response<reqwest::Body> = resp.into();
        // Unreadable or oversized: the status decides alone.
        let bytes = read_limited(resp.into_body())
            .await
            .map(|(b, _)| b)
            .unwrap_or_default();
        if (200..300).contains(&status) {
            self.partial_success(&bytes);
            return Attempt::Delivered { status };
        }
        let text = error_text(&bytes);
        if http_retryable(status) {
            let class = if status == 429 {
                FailureClass::Client4xx
            } else {
                FailureClass::Server5xx
            };
            return Attempt::Retry {
                class,
                status: Some(status),
                after,
                why: format!("{status} {text}"),
            };
        }
        Attempt::Reject { status, body: text }
    }

    async fn grpc(&self, meta: &Meta, body: Vec<u8>) -> Attempt {
        let compressed = meta.content_encoding == "gzip";
        let mut framed = Vec::with_capacity(body.len() + 5);
        framed.push(u8::from(compressed));
        framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        framed.extend_from_slice(&body);
        drop(body);
        let mut req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/grpc")
            .header(HeaderName::from_static("te"), "trailers")
            .header(
                HeaderName::from_static("grpc-timeout"),
                format!("{}m", self.timeout.as_millis().clamp(1, 99_999_999)),
            );
        if compressed {
            req = req.header(HeaderName::from_static("grpc-encoding"), "gzip");
        }
        let resp = match req.body(framed).send().await {
            Ok(r) => r,
            Err(e) => return Self::no_answer(&e),
        };
        let http_status = resp.status().as_u16();
        let resp: http::Response<reqwest::Body> = resp.into();
        let (parts, rbody) = resp.into_parts();
        // A trailers-only answer (every error) has the status in the headers.
        let (bytes, trailers) = match read_limited(rbody).await {
            Ok(x) => x,
            Err(why) if parts.headers.contains_key("grpc-status") => {
                tracing::debug!(error = %why, "gRPC body lost after a status");
                (Default::default(), None)
            }
            Err(why) => {
                return Attempt::Retry {
                    class: FailureClass::Connection,
                    status: Some(http_status),
                    after: None,
                    why,
                }
            }
        };
        let field = |name: &str| -> Option<HeaderValue> {
            trailers
                .as_ref()
                .and_then(|t| t.get(name))
                .or_else(|| parts.headers.get(name))
                .cloned()
        };
        let code = match field("grpc-status") {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .unwrap_or(2),
            None if http_status == 200 => 2,
            None => grpc_code_of_http(http_status),
        };
        let message = field("grpc-message")
            .and_then(|v| v.to_str().ok().map(percent_decode))
            .unwrap_or_default();
        let after = field("grpc-status-details-bin").and_then(|v| {
            let s = v.to_str().ok()?.trim_end_matches('=').to_string();
            let raw = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(s)
                .ok()?;
            retry_info(&raw)
        });
        let why = format!("grpc-status {code} ({}): {message}", grpc_code_name(code));
        match grpc_verdict(code, after.is_some()) {
            GrpcVerdict::Ok => {
                if let Some(msg) = unframe(&bytes) {
                    self.partial_success(&msg);
                }
                Attempt::Delivered {
                    status: http_status,
                }
            }
            GrpcVerdict::Retry(class) => Attempt::Retry {
                class,
                status: Some(http_status),
                after,
                why,
            },
            GrpcVerdict::Reject => Attempt::Reject {
                status: http_status,
                body: why,
            },
        }
    }
}

impl Deliver for OtlpDeliver {
    fn deliver<'a>(&'a self, meta: &'a Meta, body: Vec<u8>) -> BoxFuture<'a, Attempt> {
        match self.protocol {
            Protocol::HttpProtobuf => Box::pin(self.http(meta, body)),
            Protocol::Grpc => Box::pin(self.grpc(meta, body)),
        }
    }
}
