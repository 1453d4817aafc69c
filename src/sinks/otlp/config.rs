//! `[otlp_export]`: the OTLP export sink. Key names follow the OpenTelemetry Collector's
//! `otlphttp`/`otlp` exporters and the SDK's `OTEL_EXPORTER_OTLP_*` variables (endpoint,
//! headers, compression, timeout, protocol, the CA file).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::duration::duration_str;
use crate::base::error::{check_nonzero_duration, ConfigError};

/// The wire protocol (the SDK's `OTEL_EXPORTER_OTLP_PROTOCOL` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies, `POST <endpoint>/v1/metrics`.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/gRPC, `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.
    #[serde(rename = "grpc")]
    Grpc,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (`Content-Encoding: gzip`, `grpc-encoding: gzip`).
    Gzip,
    /// None.
    None,
}

/// How counters are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Each window's increase, starting at the window's start.
    Delta,
    /// The running total since tallyd first saw the series (its start time stays the same).
    Cumulative,
}

/// How timers, histograms and distributions are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistogramMapping {
    /// Explicit-bucket histograms with `histogram_bounds`.
    Explicit,
    /// Base-2 exponential histograms of at most `exponential_max_size` buckets per sign.
    Exponential,
}

/// `[otlp_export]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpExportConfig {
    /// Turns the sink on.
    pub enabled: bool,
    /// `http/protobuf` or `grpc`.
    pub protocol: Protocol,
    /// Base URL: `/v1/metrics` is appended for OTLP/HTTP; for gRPC the server's address.
    pub endpoint: String,
    /// Extra request headers (API keys of SaaS backends); shown redacted.
    pub headers: BTreeMap<String, String>,
    /// `gzip` or `none`.
    pub compression: Compression,
    /// Timeout of one export request.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// PEM file of CA certificates trusted besides the built-in roots; empty = built-in only.
    pub tls_ca_file: String,
    /// Data points in one request; a window with more is split.
    pub max_points_per_request: usize,
    /// `delta` or `cumulative`: how counters are reported.
    pub counter_temporality: Temporality,
    /// `explicit` or `exponential`.
    pub histogram: HistogramMapping,
    /// Upper bounds of the explicit buckets, strictly increasing.
    pub histogram_bounds: Vec<f64>,
    /// Most buckets per sign of an exponential histogram (the scale is lowered to fit).
    pub exponential_max_size: usize,
    /// `service.name` of the resource; empty = not sent.
    pub service_name: String,
    /// Further resource attributes (`host.name` is the host's name unless given here).
    pub resource_attributes: BTreeMap<String, String>,
    /// Rebuild the resource and scope of points received over OTLP from the tags the receiver
    /// made of them (`[otlp] attribute_tags`, `scope_name_tag`); false: every point under
    /// tallyd's resource, every tag a point attribute.
    pub received_resource: bool,
}

/// The OpenTelemetry SDK's default explicit bounds.
pub const DEFAULT_BOUNDS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// Upper bound of `max_points_per_request`.
pub const MAX_POINTS_LIMIT: usize = 1_000_000;

impl Default for OtlpExportConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            protocol: Protocol::HttpProtobuf,
            endpoint: "http://localhost:4318".into(),
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            timeout: Duration::from_secs(10),
            tls_ca_file: String::new(),
            max_points_per_request: 2000,
            counter_temporality: Temporality::Delta,
            histogram: HistogramMapping::Explicit,
            histogram_bounds: DEFAULT_BOUNDS.to_vec(),
            exponential_max_size: 160,
            service_name: String::new(),
            resource_attributes: BTreeMap::new(),
            received_resource: true,
        }
    }
}

/// Headers tallyd sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "content-encoding",
    "content-type",
    "content-length",
    "te",
    "grpc-encoding",
    "grpc-accept-encoding",
    "grpc-timeout",
];

impl OtlpExportConfig {
    /// A copy fit to be shown: header values hidden, the endpoint's password too.
    pub fn redacted(&self) -> OtlpExportConfig {
        use crate::base::redact;
        OtlpExportConfig {
            endpoint: redact::url(&self.endpoint),
            headers: redact::header_values(&self.headers),
            ..self.clone()
        }
    }

    /// Checks what types alone cannot.
    ///
    /// # Errors
    /// The first value not allowed, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "otlp_export.endpoint",
                format!(
                    " = {:?} must start with http:// or https://",
                    crate::base::redact::url(&self.endpoint)
                ),
            ));
        }
        if reqwest::Url::parse(&self.endpoint).is_err() {
            return Err(ConfigError::invalid(
                "otlp_export.endpoint",
                " is not a valid URL",
            ));
        }
        if !(1..=MAX_POINTS_LIMIT).contains(&self.max_points_per_request) {
            return Err(ConfigError::invalid(
                "otlp_export.max_points_per_request",
                format!(" must be between 1 and {MAX_POINTS_LIMIT}"),
            ));
        }
        check_nonzero_duration("otlp_export.timeout", self.timeout)?;
        const BOUNDS: &str = "otlp_export.histogram_bounds";
        if self.histogram_bounds.iter().any(|b| !b.is_finite()) {
            return Err(ConfigError::invalid(BOUNDS, " must be finite numbers"));
        }
        if self.histogram_bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ConfigError::invalid(BOUNDS, " must be strictly increasing"));
        }
        if self.histogram_bounds.len() > 1000 {
            return Err(ConfigError::invalid(
                BOUNDS,
                " may hold at most 1000 bounds",
            ));
        }
        if !(2..=10_000).contains(&self.exponential_max_size) {
            return Err(ConfigError::invalid(
                "otlp_export.exponential_max_size",
                " must be between 2 and 10000",
            ));
        }
        const HEADERS: &str = "otlp_export.headers";
        crate::queue::deliver::header_map(&self.headers, HEADERS)?;
        for k in self.headers.keys() {
            if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                return Err(ConfigError::invalid(
                    HEADERS,
                    format!(": {k:?} is set by tallyd as OTLP requires"),
                ));
            }
        }
        for (k, v) in &self.resource_attributes {
            if k.is_empty() || v.is_empty() {
                return Err(ConfigError::invalid(
                    "otlp_export.resource_attributes",
                    format!(": {k:?} needs a non-empty name and value"),
                ));
            }
        }
        Ok(())
    }
}
