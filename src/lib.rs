//! tallyd: a small, fast sidecar agent for StatsD/DogStatsD metrics.
//!
//! The flow (see ARCHITECTURE.md):
//! ```text
//! UDP (recvmmsg, N sockets) ─┐
//! TCP (tokio)               ─┼─▶ statsd::parse ─▶ aggregate::Shard (datagrams share one; TCP has its own)
//! Unix datagram             ─┘                          │ every flush interval
//!                                                       ▼
//!                                   aggregate::Aggregator::flush ─▶ Arc<Flush> ─▶ sinks
//! ```
//! [`run`] binds every listener first (so a busy port fails fast with its name), then starts
//! the receive threads, the TCP and HTTP servers and the flusher, and on shutdown stops intake,
//! drains what was received, flushes one last time and returns.

#![warn(missing_docs)]

pub mod aggregate;
pub mod alert;
pub mod api;
pub mod base;
pub mod component;
pub mod config;
pub mod flusher;
pub mod gps;
pub mod model;
pub mod otlp;
pub mod queue;
pub mod sinks;
pub mod statsd;
pub mod telemetry;
mod topology;

pub use topology::run;
