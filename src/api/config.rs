//! The `[http]` section: the HTTP listener, its bounds, TLS and its admin token.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::conn::{check_limits, Limits};
use crate::base::duration::duration_str;
use crate::base::error::{check_addr, check_nonzero_duration, check_positive, ConfigError};

/// The `[http]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP server (`/metrics`, `/health`).
    pub listen: String,
    /// Bearer token for mutating API routes (alert test, queue admin) called from other hosts; empty = loopback only.
    pub admin_token: String,
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
