//! Sinks: consumers of each window's [`Flush`](crate::aggregate::Flush).
//!
//! A sink must not block the flusher: it takes what it needs from the shared batch and returns.
//! Work that crosses the network belongs behind a queue of the sink's own.

pub mod datadog;
pub mod prometheus;
pub mod remote_write;

use std::sync::Arc;

use crate::aggregate::Flush;

pub trait Sink: Send + Sync {
    fn name(&self) -> &'static str;
    fn consume(&self, flush: &Arc<Flush>);
}
