//! OTLP export: every window to an OpenTelemetry Collector or any OTLP metrics backend, over
//! OTLP/HTTP (protobuf, `POST <endpoint>/v1/metrics`) or OTLP/gRPC, through the durable queue
//! `otlp` (retries, `Retry-After`/`RetryInfo`, dead letters), built like remote_write: a
//! [`Delivery`](crate::sinks::delivery::Delivery) of an encoder hand-off and an
//! [`Outbox`](crate::queue::Outbox), with its own [`Deliver`](crate::queue::Deliver) for the
//! OTLP answers (`deliver.rs`). The mapping is `encode.rs`'s.

pub mod config;
pub mod deliver;
pub mod encode;
pub mod received;
pub mod sink;

pub use config::OtlpExportConfig;
pub use received::Received;
pub use sink::{OtlpSink, QUEUE_NAME};

use crate::component::{Context, Error, Running, Stage};

/// Starts OTLP export when `otlp_export.enabled`: the encoder thread and the durable queue,
/// drained in the delivery stage. `received` names the tags tallyd's OTLP receiver makes of
/// resource and scope attributes, to put them back.
///
/// # Errors
/// The queue directory cannot be used, the CA file cannot be read, or the HTTP client cannot
/// be built.
pub fn start(
    cfg: &OtlpExportConfig,
    received: Received,
    ctx: &mut Context,
) -> Result<Running, Error> {
    if !cfg.enabled {
        return Ok(Running::disabled(
            "otlp_export",
            Stage::Delivery,
            "otlp_export.enabled is false",
        ));
    }
    let sink = OtlpSink::start(cfg, received, ctx)?;
    ctx.telemetry.register(sink.clone());
    ctx.add_sink(sink.clone());
    ctx.shutdown
        .on_stop(Stage::Delivery, async move { sink.shutdown().await });
    Ok(Running::reporting_itself(
        "otlp_export",
        Stage::Delivery,
        (),
    ))
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod encode_tests;
