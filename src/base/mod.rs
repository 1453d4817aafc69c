//! The bottom layer: what every other module may use and which itself imports nothing else
//! from the crate (a test, `tests/walls.rs`, checks it). Locks, the clock, durations, typed
//! errors, health, the exposition writer, the bounded hand-off to a worker thread, the
//! self-metrics registry, CPU-level helpers, returning freed memory and the redaction of credentials.

pub mod accept;
pub mod auth;
pub mod clock;
pub mod conn;
pub mod cpu;
pub mod duration;
pub mod error;
pub mod expo;
pub mod fds;
pub mod handoff;
pub mod health;
pub mod host;
pub mod idle;
pub mod memory;
pub mod metrics;
pub mod redact;
pub mod serve;
pub mod tls;

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, recovering the data if a holder panicked: aggregation state stays usable and
/// a panic elsewhere must not stop metrics from flowing.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
