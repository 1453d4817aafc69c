//! The `[aggregate]` section (windows, limits, percentiles) and the gauge reading.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::duration::duration_str;
use crate::base::error::{check_nonzero_duration, check_positive, ConfigError};

/// How a gauge value with a leading sign (`+3|g`, `-2|g`) is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GaugeMode {
    /// The Datadog Agent's reading: the sign belongs to the number; `-2|g` sets the gauge to -2.
    Absolute,
    /// etsy statsd's and statsd_exporter's reading: a signed value moves the previous value.
    Delta,
}

/// The `[aggregate]` section: window length, context and set limits, percentiles, expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateConfig {
    /// Length of one aggregation window.
    #[serde(with = "duration_str")]
    pub flush_interval: Duration,
    /// Distinct contexts (name + tags + type) kept at once; samples for new contexts beyond it are dropped and counted.
    pub max_contexts: usize,
    /// Quantiles computed for timers, histograms and distributions, each in (0, 1).
    pub percentiles: Vec<f64>,
    /// Distinct members counted per set per window; members beyond it are dropped and counted.
    pub max_set_size: usize,
    /// A context with no sample for this long is forgotten by the aggregator (its memory freed).
    #[serde(with = "duration_str")]
    pub context_expiry: Duration,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(10),
            max_contexts: 200_000,
            percentiles: vec![0.5, 0.95, 0.99],
            max_set_size: 100_000,
            context_expiry: Duration::from_secs(60),
        }
    }
}

impl AggregateConfig {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_positive("aggregate.max_contexts", self.max_contexts as u64)?;
        check_positive("aggregate.max_set_size", self.max_set_size as u64)?;
        if self.flush_interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "aggregate.flush_interval",
                " must be at least 100ms",
            ));
        }
        check_nonzero_duration("aggregate.context_expiry", self.context_expiry)?;
        for p in &self.percentiles {
            if !(*p > 0.0 && *p < 1.0) {
                return Err(ConfigError::invalid(
                    "aggregate.percentiles",
                    format!(": {p} is not between 0 and 1 (exclusive)"),
                ));
            }
        }
        if self.percentiles.len() > 16 {
            return Err(ConfigError::invalid(
                "aggregate.percentiles",
                " holds at most 16 values",
            ));
        }
        Ok(())
    }
}
