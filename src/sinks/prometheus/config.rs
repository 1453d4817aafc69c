//! The `[prometheus]` section: how long and how many series `/metrics` keeps, and how many
//! scrapes it serves at once.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::mapping::{Mapper, Observer, DEFAULT_BUCKETS};
use super::ExposeOptions;
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
    /// statsd_exporter's mapping file (YAML), applied to `/metrics` and remote write; empty:
    /// none.
    pub mapping_file: String,
    /// How timers, histograms and distributions that no mapping rule shapes are exported:
    /// `summary` or `histogram` (classic, cumulative `_bucket{le=..}`).
    pub observer_type: String,
    /// The buckets' upper bounds of those histograms (`+Inf` is added).
    pub histogram_buckets: Vec<f64>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            series_ttl: Duration::from_secs(300),
            max_series: 200_000,
            max_concurrent_scrapes: 2,
            scrape_write_timeout: Duration::from_secs(10),
            mapping_file: String::new(),
            observer_type: "summary".into(),
            histogram_buckets: DEFAULT_BUCKETS.to_vec(),
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
        check_nonzero_duration("prometheus.series_ttl", self.series_ttl)?;
        self.expose_options().map(|_| ())
    }

    /// The mapping file compiled and the default shape of sampled kinds.
    ///
    /// # Errors
    /// `observer_type` or `histogram_buckets` is invalid, or the mapping file cannot be read
    /// or compiled (the error names its line).
    pub fn expose_options(&self) -> Result<ExposeOptions, ConfigError> {
        let observer = match self.observer_type.as_str() {
            "summary" => Observer::Summary(None),
            "histogram" => {
                let mut b: Vec<f64> = self.histogram_buckets.clone();
                if b.is_empty() || b.iter().any(|x| !x.is_finite()) {
                    return Err(ConfigError::invalid(
                        "prometheus.histogram_buckets",
                        " must be a non-empty list of finite numbers",
                    ));
                }
                b.sort_by(f64::total_cmp);
                b.dedup();
                Observer::Histogram(b.into())
            }
            other => {
                return Err(ConfigError::invalid(
                    "prometheus.observer_type",
                    format!(" = {other:?} is not one of summary, histogram"),
                ))
            }
        };
        let mapper = if self.mapping_file.is_empty() {
            None
        } else {
            Some(Arc::new(Mapper::load(&self.mapping_file)?))
        };
        Ok(ExposeOptions { mapper, observer })
    }
}
