//! The `[http]` section: the HTTP listener, its bounds, TLS, its admin token and which
//! read-only views are public.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::conn::{check_limits, Limits};
use crate::base::duration::duration_str;
use crate::base::error::{check_addr, check_nonzero_duration, check_positive, ConfigError};

/// A group of read-only routes that `http.public_routes` may open to every peer. Routes that
/// change state have no group: they always need loopback or the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteGroup {
    /// `GET /health`, `/health/live`, `/health/ready`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /admin/queue/health`, `/admin/queue/stats`, `/api/monitoring/metrics/queues`.
    Queue,
    /// `GET /api/alerts`.
    Alerts,
    /// `GET /api/monitoring/metrics/devices`, `/live`, `/api/monitoring/gps/blacklist`:
    /// device identities, peer addresses and positions.
    Gps,
    /// `GET /api/monitoring/dashboard`, `/api/monitoring/history`: counts, rates and states
    /// of every component (no device position, peer address or endpoint). The status page
    /// `GET /` itself is static and always served; it reads these views.
    Dashboard,
}

impl RouteGroup {
    /// Every group, in bit order.
    pub const ALL: [RouteGroup; 6] = [
        RouteGroup::Health,
        RouteGroup::Metrics,
        RouteGroup::Queue,
        RouteGroup::Alerts,
        RouteGroup::Gps,
        RouteGroup::Dashboard,
    ];
}

/// The `[http]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP server (`/metrics`, `/health`).
    pub listen: String,
    /// Bearer token for the protected routes (every mutating one, and the read-only views not
    /// in `public_routes`) called from other hosts; empty = loopback only.
    pub admin_token: String,
    /// Read-only route groups any peer may call without the token.
    pub public_routes: Vec<RouteGroup>,
    /// Whether a loopback peer may call protected routes without the token; false when a proxy
    /// on the same host forwards other hosts' requests (they would all come from loopback).
    pub trust_loopback: bool,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Connections from one IP address at once.
    pub max_connections_per_peer: usize,
    /// Time for a request's head (and the TLS handshake) to arrive in full.
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// Time for a response to begin; 503 after it.
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// Largest request head (request line and headers), bytes; 431 beyond it.
    pub max_header_bytes: usize,
    /// Largest request body, bytes, on every route; 413 beyond it.
    pub max_body_bytes: usize,
    /// PEM certificate chain: serve HTTPS (with `tls_key_file`); empty = plain HTTP.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".into(),
            admin_token: String::new(),
            public_routes: vec![RouteGroup::Health, RouteGroup::Metrics],
            trust_loopback: true,
            max_connections: 256,
            max_connections_per_peer: 32,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl HttpConfig {
    /// A copy fit to be shown (`print-config`): `admin_token` hidden.
    pub fn redacted(&self) -> HttpConfig {
        HttpConfig {
            admin_token: crate::base::redact::secret(&self.admin_token),
            ..self.clone()
        }
    }

    /// The server's bounds, with `max_connections` as fitted to the descriptor limit.
    pub fn limits(&self, max_connections: usize) -> Limits {
        Limits {
            max_connections,
            max_connections_per_peer: self.max_connections_per_peer.min(max_connections),
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            request_timeout: Some(self.request_timeout),
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: Some(self.max_body_bytes),
        }
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_addr("http.listen", &self.listen, false)?;
        if !self.trust_loopback && self.admin_token.trim().is_empty() {
            return Err(ConfigError::invalid(
                "http.trust_loopback",
                " = false needs http.admin_token: without it no caller could use the protected routes",
            ));
        }
        check_limits(
            "http",
            self.max_connections,
            self.max_connections_per_peer,
            self.max_header_bytes,
        )?;
        check_positive("http.max_body_bytes", self.max_body_bytes as u64)?;
        for (key, d) in [
            ("http.header_read_timeout", self.header_read_timeout),
            ("http.idle_timeout", self.idle_timeout),
            ("http.request_timeout", self.request_timeout),
        ] {
            check_nonzero_duration(key, d)?;
        }
        crate::base::tls::check_pair("http", &self.tls_cert_file, &self.tls_key_file)
    }
}
