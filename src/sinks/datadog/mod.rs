//! Datadog delivery: each window's [`Flush`](crate::aggregate::Flush) becomes v2 series,
//! sketches, service checks and events, encoded as the Datadog Agent's DogStatsD pipeline
//! would, compressed, and handed to a durable [`Queue`](crate::queue::Queue) whose sender posts
//! them to the intake. This module never reaches back into the aggregator.

pub mod compress;
pub mod config;
pub mod encode;
pub mod events;
pub mod proto;
pub mod sink;
pub mod sketch;

pub use events::EventQueue;
pub use sink::{DatadogSink, QUEUE_NAME};
