//! The `[http]` section: the HTTP listener, its admin token and which read-only views are
//! public.

use serde::{Deserialize, Serialize};

use crate::base::error::{check_addr, ConfigError};

/// A group of read-only routes that `http.public_routes` may open to every peer. Routes that
/// change state have no group: they always need loopback or the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteGroup {
    /// `GET /health`, `/health/live`, `/health/ready`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /admin/queue/health`, `/admin/queue/stats`.
    Queue,
    /// `GET /api/alerts`.
    Alerts,
    /// `GET /api/monitoring/metrics/devices`, `/live`, `/api/monitoring/gps/blacklist`:
    /// device identities, peer addresses and positions.
    Gps,
}

impl RouteGroup {
    /// Every group, in bit order.
    pub const ALL: [RouteGroup; 5] = [
        RouteGroup::Health,
        RouteGroup::Metrics,
        RouteGroup::Queue,
        RouteGroup::Alerts,
        RouteGroup::Gps,
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".into(),
            admin_token: String::new(),
            public_routes: vec![RouteGroup::Health, RouteGroup::Metrics],
            trust_loopback: true,
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

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_addr("http.listen", &self.listen, false)?;
        if !self.trust_loopback && self.admin_token.trim().is_empty() {
            return Err(ConfigError::invalid(
                "http.trust_loopback",
                " = false needs http.admin_token: without it no caller could use the protected routes",
            ));
        }
        Ok(())
    }
}
