//! Datadog delivery: each window's [`Flush`](crate::aggregate::Flush) becomes v2 series,
//! sketches, service checks and events, encoded as the Datadog Agent's DogStatsD pipeline
//! would, compressed, and handed to a durable [`Queue`](crate::queue::Queue) whose sender posts
//! them to the intake. This module never reaches back into the aggregator.

pub mod compress;
pub mod config;
pub mod encode;
pub mod events;
mod proto;
pub mod sink;
pub mod sketch;
pub mod zerofill;

pub use events::EventQueue;
pub use sink::{DatadogSink, QUEUE_NAME};

use std::sync::Arc;

use crate::component::{Context, Error, Running, Stage};

/// Starts Datadog delivery when an API key is set: the sink's encoder thread and its durable
/// queue, drained in the delivery stage. Its event queue becomes the context's
/// [`events`](Context::events) outlet, for alert notifiers.
///
/// # Errors
/// The queue directory cannot be used, or the HTTP client cannot be built.
pub fn start(
    cfg: &config::DatadogConfig,
    ctx: &mut Context,
) -> Result<Running<Arc<DatadogSink>>, Error> {
    if cfg.api_key.is_empty() {
        return Ok(Running::disabled(
            "datadog",
            Stage::Delivery,
            "no API key (datadog.api_key or DD_API_KEY)",
        ));
    }
    let dd = DatadogSink::start(cfg, ctx)?;
    ctx.telemetry.register(dd.clone());
    ctx.add_sink(dd.clone());
    ctx.events = Some(Arc::new(dd.event_queue()));
    let handle = dd.clone();
    ctx.shutdown
        .on_stop(Stage::Delivery, async move { dd.shutdown().await });
    // Its health line is the queue watcher's; the handle is for reloads.
    Ok(Running::reporting_itself(
        "datadog",
        Stage::Delivery,
        handle,
    ))
}
