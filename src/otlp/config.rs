//! The `[otlp]` section: the OTLP/HTTP and OTLP/gRPC receivers and their limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::conn::{check_limits, Limits};
use crate::base::duration::duration_str;
use crate::base::error::{check_addr, check_nonzero_duration, check_positive, ConfigError};

/// What the first point of a cumulative stream counts for (see `[otlp] initial_cumulative_value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialCumulative {
    /// Counted in full when the stream started after tallyd did, else only a baseline.
    Auto,
    /// Always counted in full.
    Keep,
    /// Always only a baseline.
    Drop,
}

/// Which resource and scope attributes become tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceAttributes {
    /// Only those named in `attribute_tags`.
    Mapped,
    /// Those named in `attribute_tags` renamed, every other one under its own name.
    All,
}

/// The OTLP metrics receiver (OTLP/HTTP and OTLP/gRPC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Turns both OTLP listeners on or off.
    pub enabled: bool,
    /// OTLP/HTTP address (`POST /v1/metrics`); empty disables it.
    pub http_listen: String,
    /// OTLP/gRPC address (`MetricsService/Export`); empty disables it.
    pub grpc_listen: String,
    /// Largest request body, in bytes, before and after gzip decompression.
    pub max_body_bytes: usize,
    /// Data points per request; a larger request is refused whole.
    pub max_points_per_request: usize,
    /// Attributes on one data point; a point with more is rejected.
    pub max_attributes_per_point: usize,
    /// Histogram buckets on one data point; a point with more is rejected.
    pub max_buckets_per_point: usize,
    /// Requests handled at once across both transports; more are told to retry later.
    pub max_concurrent_requests: usize,
    /// Time a request's body has to arrive in full (HTTP: 408 after it; gRPC: the message must
    /// be received and decoded in it, else DEADLINE_EXCEEDED). A request waiting for its body
    /// holds no `max_concurrent_requests` slot.
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// Cumulative streams remembered (to turn totals into per-window deltas).
    pub max_streams: usize,
    /// A stream not seen for this long is forgotten.
    #[serde(with = "duration_str")]
    pub stream_expiry: Duration,
    /// `auto`, `keep` or `drop`: what the first point of a cumulative stream counts for.
    pub initial_cumulative_value: InitialCumulative,
    /// `attribute=tag` renames for resource and scope attributes.
    pub attribute_tags: Vec<String>,
    /// `mapped` or `all`: which resource and scope attributes become tags.
    pub resource_attributes: ResourceAttributes,
    /// Tag that carries the instrumentation scope name; empty = none.
    pub scope_name_tag: String,
    /// Connections each OTLP listener serves at once; more are closed at once.
    pub max_connections: usize,
    /// Connections from one IP address at once, per listener.
    pub max_connections_per_peer: usize,
    /// Time for the TLS handshake and (OTLP/HTTP) a request's head to arrive in full.
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// Largest request head (HTTP headers; gRPC header list), bytes.
    pub max_header_bytes: usize,
    /// PEM certificate chain: both OTLP listeners use TLS (with `tls_key_file`).
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            http_listen: "0.0.0.0:4318".into(),
            grpc_listen: "0.0.0.0:4317".into(),
            max_body_bytes: 20 * 1024 * 1024,
            max_points_per_request: 100_000,
            max_attributes_per_point: 128,
            max_buckets_per_point: 2048,
            max_concurrent_requests: 64,
            request_timeout: Duration::from_secs(10),
            max_streams: 200_000,
            stream_expiry: Duration::from_secs(900),
            initial_cumulative_value: InitialCumulative::Auto,
            attribute_tags: [
                "service.name=service",
                "service.version=version",
                "deployment.environment.name=env",
                "deployment.environment=env",
                "host.name=host",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            resource_attributes: ResourceAttributes::Mapped,
            scope_name_tag: String::new(),
            max_connections: 1024,
            max_connections_per_peer: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_header_bytes: 16 * 1024,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl OtlpConfig {
    /// `attribute_tags` as (attribute, tag) pairs; call after [`OtlpConfig::validate`].
    pub fn attribute_renames(&self) -> Vec<(String, String)> {
        self.attribute_tags
            .iter()
            .filter_map(|r| r.split_once('='))
            .map(|(a, t)| (a.trim().to_string(), t.trim().to_string()))
            .collect()
    }

    /// One listener's bounds, with `max_connections` as fitted to the descriptor limit. The
    /// request body and its time are bounded by the route (`max_body_bytes`,
    /// `request_timeout`), which answers in OTLP's own terms.
    pub fn limits(&self, max_connections: usize) -> Limits {
        Limits {
            max_connections,
            max_connections_per_peer: self.max_connections_per_peer.min(max_connections),
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            request_timeout: None,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: None,
        }
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_limits(
            "otlp",
            self.max_connections,
            self.max_connections_per_peer,
            self.max_header_bytes,
        )?;
        check_nonzero_duration("otlp.header_read_timeout", self.header_read_timeout)?;
        check_nonzero_duration("otlp.idle_timeout", self.idle_timeout)?;
        crate::base::tls::check_pair("otlp", &self.tls_cert_file, &self.tls_key_file)?;
        check_addr("otlp.http_listen", &self.http_listen, true)?;
        check_addr("otlp.grpc_listen", &self.grpc_listen, true)?;
        for (key, v) in [
            ("otlp.max_body_bytes", self.max_body_bytes),
            ("otlp.max_points_per_request", self.max_points_per_request),
            (
                "otlp.max_attributes_per_point",
                self.max_attributes_per_point,
            ),
            ("otlp.max_buckets_per_point", self.max_buckets_per_point),
            ("otlp.max_concurrent_requests", self.max_concurrent_requests),
            ("otlp.max_streams", self.max_streams),
        ] {
            check_positive(key, v as u64)?;
        }
        check_nonzero_duration("otlp.stream_expiry", self.stream_expiry)?;
        check_nonzero_duration("otlp.request_timeout", self.request_timeout)?;
        for rule in &self.attribute_tags {
            let ok = rule.split_once('=').is_some_and(|(a, t)| {
                let t = t.trim();
                !a.trim().is_empty() && !t.is_empty() && !t.contains([',', ':'])
            });
            if !ok {
                return Err(ConfigError::invalid(
                    "otlp.attribute_tags",
                    format!(
                        ": {rule:?} is not \"attribute=tag\" (the tag may not contain ',' or ':')"
                    ),
                ));
            }
        }
        if self.scope_name_tag.contains([',', ':']) {
            return Err(ConfigError::invalid(
                "otlp.scope_name_tag",
                " may not contain ',' or ':'",
            ));
        }
        Ok(())
    }
}
