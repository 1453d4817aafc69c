//! The `[prometheus]` section: how long and how many series `/metrics` keeps, and how many
//! scrapes it serves at once.

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
    /// Scrapes of `/metrics` rendered at once; one more is answered 503 with `Retry-After: 1`.
    /// Each holds a copy of the exposed rows while it renders.
    pub max_concurrent_scrapes: usize,
    /// A scraper that takes no piece of the body for this long loses the scrape: the render
    /// stops and frees its copy of the rows.
    #[serde(with = "duration_str")]
    pub scrape_write_timeout: Duration,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            series_ttl: Duration::from_secs(300),
            max_series: 200_000,
            max_concurrent_scrapes: 2,
            scrape_write_timeout: Duration::from_secs(10),
        }
    }
}

impl PrometheusConfig {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_positive("prometheus.max_series", self.max_series as u64)?;
        check_positive(
            "prometheus.max_concurrent_scrapes",
            self.max_concurrent_scrapes as u64,
        )?;
        check_nonzero_duration("prometheus.scrape_write_timeout", self.scrape_write_timeout)?;
        check_nonzero_duration("prometheus.series_ttl", self.series_ttl)
    }
}
