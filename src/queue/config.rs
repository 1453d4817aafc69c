//! `[queue]`: where the durable delivery queues live, their byte bounds, the retry backoff and
//! the shutdown drain. Parsed by `config`, which composes this section.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::duration::duration_str;
use crate::base::error::ConfigError;

/// `[queue]`: the durable delivery queues (Datadog, remote write and GPS points share the
/// directory, one sub-directory each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Directory holding one sub-directory per queue.
    pub directory: String,
    /// Bytes of pending payloads per queue; at the limit the oldest are dropped and counted.
    pub max_bytes: u64,
    /// Bytes of dead letters per queue; at the limit the oldest are dropped and counted.
    pub dlq_max_bytes: u64,
    /// Wait after the first failed attempt; doubles per failure up to `backoff_max`, with jitter.
    #[serde(with = "duration_str")]
    pub backoff_initial: Duration,
    /// Longest wait between attempts (a `Retry-After` from the far side is honoured even if longer).
    #[serde(with = "duration_str")]
    pub backoff_max: Duration,
    /// At shutdown, how long the senders may keep delivering what is queued (it stays on disk).
    #[serde(with = "duration_str")]
    pub shutdown_drain: Duration,
}

impl QueueConfig {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.directory.is_empty() {
            return Err(ConfigError::invalid(
                "queue.directory",
                " must not be empty",
            ));
        }
        if self.max_bytes < 1024 * 1024 {
            return Err(ConfigError::invalid(
                "queue.max_bytes",
                " must be at least 1048576 (1 MiB)",
            ));
        }
        if self.dlq_max_bytes < 1024 * 1024 {
            return Err(ConfigError::invalid(
                "queue.dlq_max_bytes",
                " must be at least 1048576 (1 MiB)",
            ));
        }
        if self.backoff_initial.is_zero() {
            return Err(ConfigError::invalid(
                "queue.backoff_initial",
                " must be greater than 0s",
            ));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(ConfigError::invalid(
                "queue.backoff_max",
                " must be at least queue.backoff_initial",
            ));
        }
        Ok(())
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            directory: "/var/lib/tallyd/queue".into(),
            max_bytes: 256 * 1024 * 1024,
            dlq_max_bytes: 64 * 1024 * 1024,
            backoff_initial: Duration::from_secs(2),
            backoff_max: Duration::from_secs(64),
            shutdown_drain: Duration::from_secs(2),
        }
    }
}
