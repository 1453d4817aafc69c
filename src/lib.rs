//! tallyd: a small, fast sidecar agent for StatsD/DogStatsD and OTLP metrics and GPS tracker
//! telemetry: aggregate per window, expose to Prometheus, alert, forward onward.
//!
//! [`run`] is the topology (see ARCHITECTURE.md): it builds every component on one
//! [`component::Context`] and drains them stage by stage at shutdown.
//!
//! | component | module | stage |
//! |---|---|---|
//! | StatsD UDP, Unix socket and TCP listeners | [`statsd`] | intake |
//! | OTLP/HTTP and OTLP/gRPC receivers | [`otlp`] | intake |
//! | GPS tracker server, point delivery | [`gps`] | intake, delivery |
//! | host and container metrics (`/proc`, cgroup v2) | [`host`] | intake |
//! | the window clock | [`flusher`] | flush |
//! | Prometheus state for `/metrics` | [`sinks::prometheus`] | flush |
//! | Datadog, remote_write and OTLP export delivery | [`sinks::datadog`], [`sinks::remote_write`], [`sinks::otlp`] | delivery |
//! | threshold alerts and notifiers | [`alert`] | alerts |
//! | the HTTP API | [`api`] | http |
//!
//! Beneath them: [`base`] (imports nothing else from the crate), [`model`], [`telemetry`],
//! [`aggregate`], [`queue`], the contract [`component`], and [`config`], which composes the
//! components' configuration sections.

#![warn(missing_docs)]

pub mod aggregate;
pub mod alert;
pub mod api;
pub mod base;
pub mod component;
pub mod config;
pub mod flusher;
pub mod gps;
pub mod host;
pub mod model;
pub mod otlp;
pub mod queue;
pub mod sinks;
pub mod statsd;
pub mod telemetry;
mod topology;
pub use component::reload::Reloader;

pub use topology::{run, Control, Service, SetLogLevel};
