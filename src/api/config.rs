//! The `[http]` section: the HTTP listener and its admin token.

use serde::{Deserialize, Serialize};

use crate::base::error::{check_addr, ConfigError};

/// The `[http]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP server (`/metrics`, `/health`).
    pub listen: String,
    /// Bearer token for mutating API routes (alert test, queue admin) called from other hosts; empty = loopback only.
    pub admin_token: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".into(),
            admin_token: String::new(),
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
        check_addr("http.listen", &self.listen, false)
    }
}
