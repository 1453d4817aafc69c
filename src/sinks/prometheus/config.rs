//! The `[prometheus]` section: how long and how many series `/metrics` keeps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::duration::duration_str;
use crate::base::error::{check_nonzero_duration, check_positive, ConfigError};

/// The `[prometheus]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// A series that receives nothing for this long disappears from `/metrics`.
    #[serde(with = "duration_str")]
    pub series_ttl: Duration,
    /// Series kept for `/metrics`; new series beyond it are dropped and counted.
    pub max_series: usize,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            series_ttl: Duration::from_secs(300),
            max_series: 200_000,
        }
    }
}

impl PrometheusConfig {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_positive("prometheus.max_series", self.max_series as u64)?;
        check_nonzero_duration("prometheus.series_ttl", self.series_ttl)
    }
}
