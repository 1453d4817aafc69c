//! Sending one payload and judging the answer: delivered, retry later, or reject for good.
//!
//! The retry policy follows the Datadog Agent (REFERENCE.md §3.5, DDA `transaction.go`) except
//! that nothing is silently dropped: connection errors, timeouts, 404, 408, 429 and 5xx are
//! retried (429 and 503 honour `Retry-After`); 400, 413 and other 4xx go to the dead-letter
//! queue; 403 goes there only once the key is known bad (checked against a validation endpoint
//! when one is configured), and is retried otherwise.
//!
//! Prometheus remote write 1.0 is stricter ([`RetryPolicy::RemoteWrite`], REFERENCE.md §4.4):
//! a sender MUST retry 5xx and MUST NOT retry 4xx except 429, so there 403, 404 and 408 go to
//! the dead-letter queue too.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};

use super::error::KeyCheckError;
use super::store::Meta;
use crate::base::error::ConfigError;
use crate::base::redact;

/// Why an attempt failed, as a telemetry label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// A 4xx answer.
    Client4xx = 0,
    /// A 5xx answer.
    Server5xx = 1,
    /// No answer within the request timeout.
    Timeout = 2,
    /// No connection (refused, reset, DNS, TLS).
    Connection = 3,
}

impl FailureClass {
    /// Every class, in label order.
    pub const ALL: [FailureClass; 4] = [
        FailureClass::Client4xx,
        FailureClass::Server5xx,
        FailureClass::Timeout,
        FailureClass::Connection,
    ];

    /// The `class` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Client4xx => "4xx",
            FailureClass::Server5xx => "5xx",
            FailureClass::Timeout => "timeout",
            FailureClass::Connection => "connection",
        }
    }
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The far side took it (2xx).
    Delivered {
        /// The HTTP status.
        status: u16,
    },
    /// Try again later; `after` is the far side's `Retry-After` when it gave one.
    Retry {
        /// Why, as a telemetry label.
        class: FailureClass,
        /// The HTTP status, if there was an answer.
        status: Option<u16>,
        /// The far side's `Retry-After`.
        after: Option<Duration>,
        /// The error or the answer, for the log.
        why: String,
    },
    /// Rejected for good: to the dead-letter queue with this status and body.
    Reject {
        /// The HTTP status.
        status: u16,
        /// The response body, for the dead letter.
        body: String,
    },
}

/// A boxed future, as [`Deliver`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends one payload somewhere.
pub trait Deliver: Send + Sync {
    /// Sends `body` once and judges the answer.
    fn deliver<'a>(&'a self, meta: &'a Meta, body: Vec<u8>) -> BoxFuture<'a, Attempt>;

    /// Points later attempts at `base_url` with `headers` (a configuration reload); false
    /// when this delivery has no such target. Payloads already queued stay queued and go to
    /// the new target.
    fn retarget(&self, base_url: &str, headers: HeaderMap) -> bool {
        let _ = (base_url, headers);
        false
    }
}

/// Where an [`HttpDeliver`] sends: the base URL and the headers every request carries.
#[derive(Debug, Clone)]
pub struct Target {
    /// `Meta::endpoint` is appended to it.
    pub base_url: String,
    /// Sent with every request (API key, agent identification).
    pub headers: HeaderMap,
}

/// What is known about the credentials a target uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyState {
    /// Not checked yet, or the check gave no answer.
    Unknown = 0,
    /// Accepted by the target.
    Valid = 1,
    /// Rejected by the target (401 or 403 from the validation endpoint).
    Invalid = 2,
}

/// Shared, updatable [`KeyState`]: the start-up check and the sender both write it, health reads it.
#[derive(Default)]
pub struct KeyStatus(AtomicU8);

impl KeyStatus {
    /// The state known now.
    pub fn get(&self) -> KeyState {
        match self.0.load(Relaxed) {
            1 => KeyState::Valid,
            2 => KeyState::Invalid,
            _ => KeyState::Unknown,
        }
    }
    /// Records what was learnt.
    pub fn set(&self, s: KeyState) {
        self.0.store(s as u8, Relaxed);
    }
}

/// Which HTTP statuses are worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryPolicy {
    /// The Datadog Agent's rules (module docs).
    #[default]
    Intake,
    /// Remote write 1.0: 429 and 5xx are retried; every other 4xx is rejected for good.
    RemoteWrite,
}

/// Delivers payloads as HTTP POSTs to `base_url` + [`Meta::endpoint`].
pub struct HttpDeliver {
    /// The HTTP client (timeouts, connection pool).
    pub client: reqwest::Client,
    /// Where payloads go, replaced by [`Deliver::retarget`]: read it with
    /// [`HttpDeliver::target`].
    target: std::sync::RwLock<Arc<Target>>,
    /// GET path that answers 2xx for a good key and 403 for a bad one; used on a 403.
    pub validate_path: Option<String>,
    /// What is known about the key, shared with health and telemetry.
    pub key: Arc<KeyStatus>,
    /// Which statuses are retried.
    pub policy: RetryPolicy,
}

impl HttpDeliver {
    /// # Errors
    /// The HTTP client cannot be built (TLS roots unavailable).
    pub fn new(
        base_url: &str,
        headers: HeaderMap,
        timeout: Duration,
        validate_path: Option<String>,
    ) -> Result<HttpDeliver, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(45))
            // reqwest's http2 feature is on for OTLP/gRPC; these targets stay on HTTP/1.1.
            .http1_only()
            .build()?;
        Ok(HttpDeliver {
            client,
            target: std::sync::RwLock::new(Arc::new(Target {
                base_url: base_url.trim_end_matches('/').to_string(),
                headers,
            })),
            validate_path,
            key: Arc::new(KeyStatus::default()),
            policy: RetryPolicy::Intake,
        })
    }

    /// Where payloads go now.
    pub fn target(&self) -> Arc<Target> {
        Arc::clone(&self.target.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Asks the validation endpoint about the key; records and returns what it learnt.
    ///
    /// # Errors
    /// The endpoint answered something other than 2xx, 401 or 403, or did not answer.
    pub async fn validate_key(&self) -> Result<KeyState, KeyCheckError> {
        let Some(path) = &self.validate_path else {
            return Ok(KeyState::Unknown);
        };
        let t = self.target();
        let url = format!("{}{path}", t.base_url);
        match self
            .client
            .get(&url)
            .headers(t.headers.clone())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                self.key.set(KeyState::Valid);
                Ok(KeyState::Valid)
            }
            Ok(r) if r.status().as_u16() == 403 || r.status().as_u16() == 401 => {
                self.key.set(KeyState::Invalid);
                Ok(KeyState::Invalid)
            }
            Ok(r) => Err(KeyCheckError::Status {
                url: redact::url(&url),
                status: r.status().as_u16(),
            }),
            Err(source) => Err(KeyCheckError::Request {
                url: redact::url(&url),
                source,
            }),
        }
    }

    async fn post(&self, meta: &Meta, body: Vec<u8>) -> Attempt {
        let t = self.target();
        let url = format!("{}{}", t.base_url, meta.endpoint);
        let mut req = self.client.post(&url).headers(t.headers.clone());
        if let Ok(v) = HeaderValue::from_str(&meta.content_type) {
            req = req.header(CONTENT_TYPE, v);
        }
        if !meta.content_encoding.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&meta.content_encoding) {
                req = req.header(CONTENT_ENCODING, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&meta.id) {
            req = req.header(HeaderName::from_static("x-tallyd-payload-id"), v);
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let class = if e.is_timeout() {
                    FailureClass::Timeout
                } else {
                    FailureClass::Connection
                };
                return Attempt::Retry {
                    class,
                    status: None,
                    after: None,
                    why: describe(&e),
                };
            }
        };
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers(), SystemTime::now());
        // Reading the body may fail on a dropped connection; the status already decides.
        let text = match resp.bytes().await {
            Ok(b) => String::from_utf8_lossy(&b[..b.len().min(super::store::MAX_RESPONSE_BODY)])
                .into_owned(),
            Err(e) if (200..300).contains(&status) => {
                tracing::debug!(error = %describe(&e), "response body lost after a 2xx status");
                String::new()
            }
            Err(e) => describe(&e),
        };
        match classify_with(self.policy, status, after) {
            Verdict::Forbidden => {
                if matches!(self.validate_key().await, Ok(KeyState::Invalid)) {
                    Attempt::Reject { status, body: text }
                } else {
                    Attempt::Retry {
                        class: FailureClass::Client4xx,
                        status: Some(status),
                        after,
                        why: format!("{status} {text}"),
                    }
                }
            }
            Verdict::Done(Attempt::Retry {
                class,
                status,
                after,
                ..
            }) => Attempt::Retry {
                class,
                status,
                after,
                why: format!("{} {text}", status.unwrap_or(0)),
            },
            Verdict::Done(Attempt::Reject { status, .. }) => Attempt::Reject { status, body: text },
            Verdict::Done(a) => a,
        }
    }
}

impl Deliver for HttpDeliver {
    fn deliver<'a>(&'a self, meta: &'a Meta, body: Vec<u8>) -> BoxFuture<'a, Attempt> {
        Box::pin(self.post(meta, body))
    }

    /// Also forgets what was known about the old credentials.
    fn retarget(&self, base_url: &str, headers: HeaderMap) -> bool {
        let t = Arc::new(Target {
            base_url: base_url.trim_end_matches('/').to_string(),
            headers,
        });
        *self.target.write().unwrap_or_else(|p| p.into_inner()) = t;
        self.key.set(KeyState::Unknown);
        true
    }
}

/// A status judged without the body.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Settled by the status alone.
    Done(Attempt),
    /// 403: depends on whether the key is known bad.
    Forbidden,
}

/// The [`RetryPolicy::Intake`] verdict for an HTTP status.
pub fn classify(status: u16, after: Option<Duration>) -> Verdict {
    classify_with(RetryPolicy::Intake, status, after)
}

/// The verdict for an HTTP status under `policy`.
pub fn classify_with(policy: RetryPolicy, status: u16, after: Option<Duration>) -> Verdict {
    if policy == RetryPolicy::RemoteWrite && (400..=499).contains(&status) && status != 429 {
        return Verdict::Done(Attempt::Reject {
            status,
            body: String::new(),
        });
    }
    let retry = |class| {
        Verdict::Done(Attempt::Retry {
            class,
            status: Some(status),
            after,
            why: String::new(),
        })
    };
    match status {
        200..=299 => Verdict::Done(Attempt::Delivered { status }),
        403 => Verdict::Forbidden,
        // 404: a regional endpoint or proxy glitch (the Agent retries it too).
        404 | 408 | 429 => retry(FailureClass::Client4xx),
        500..=599 => retry(FailureClass::Server5xx),
        // 1xx/3xx are not expected from an intake; a redirect reqwest did not follow is a
        // configuration problem that retrying will not fix, but losing data would be worse.
        100..=199 | 300..=399 => retry(FailureClass::Client4xx),
        _ => Verdict::Done(Attempt::Reject {
            status,
            body: String::new(),
        }),
    }
}

/// `Retry-After` as seconds or an HTTP date, capped at one hour.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(d.min(Duration::from_secs(3600)))
}

/// Request headers from configured `name = value` pairs; `key` (`gps.points_headers`) names
/// the setting in errors.
///
/// # Errors
/// A name or a value is not valid in a header; the error has key `key` and names the header.
pub fn header_map<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
    key: &str,
) -> Result<HeaderMap, ConfigError> {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| ConfigError::invalid(key, format!(": {k:?} is not a header name")))?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            ConfigError::invalid(
                key,
                format!(": the value of {k:?} is not a valid header value"),
            )
        })?;
        h.insert(name, value);
    }
    Ok(h)
}

/// A reqwest error with its cause chain, which is where "connection refused" lives; a URL in
/// it is shown without its password.
pub fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), &redact::url(u.as_str()));
    }
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            classify(202, None),
            Verdict::Done(Attempt::Delivered { status: 202 })
        );
        for s in [404, 408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(s, None), Verdict::Done(Attempt::Retry { .. })),
                "{s}"
            );
        }
        for s in [400, 401, 413, 422] {
            assert!(
                matches!(classify(s, None), Verdict::Done(Attempt::Reject { .. })),
                "{s}"
            );
        }
        assert_eq!(classify(403, None), Verdict::Forbidden);
    }

    #[test]
    fn remote_write_statuses() {
        let rw = |s| classify_with(RetryPolicy::RemoteWrite, s, None);
        assert_eq!(rw(204), Verdict::Done(Attempt::Delivered { status: 204 }));
        for s in [429, 500, 502, 503] {
            assert!(matches!(rw(s), Verdict::Done(Attempt::Retry { .. })), "{s}");
        }
        for s in [400, 401, 403, 404, 408, 413, 422] {
            assert!(
                matches!(rw(s), Verdict::Done(Attempt::Reject { .. })),
                "{s}"
            );
        }
    }

    #[test]
    fn header_map_names_the_key() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("X-Tenant".to_string(), "a".to_string());
        assert_eq!(header_map(&m, "k").expect("valid")["x-tenant"], "a");
        m.insert("bad name".to_string(), "x".to_string());
        let e = header_map(&m, "gps.points_headers").expect_err("bad name");
        assert_eq!(e.key, "gps.points_headers");
        assert_eq!(
            e.sentence(),
            "gps.points_headers: \"bad name\" is not a header name"
        );
        let mut m = std::collections::BTreeMap::new();
        m.insert("X-A".to_string(), "line\nbreak".to_string());
        let e = header_map(&m, "remote_write.headers").expect_err("bad value");
        assert_eq!(e.key, "remote_write.headers");
        assert_eq!(
            e.sentence(),
            "remote_write.headers: the value of \"X-A\" is not a valid header value"
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&date).expect("header"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("999999"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3600)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }
}
