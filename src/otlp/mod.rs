//! OTLP metrics in: OTLP/HTTP (`http.rs`) and OTLP/gRPC (`grpc.rs`) listeners hand decoded
//! requests to one [`Receiver`] (`receiver.rs`), which converts them (`convert.rs`, with the
//! cumulative stream memory of `cumulative.rs`) into values for its own aggregation shard.
//! Like the statsd sources, nothing here reaches a sink.

pub mod config;
pub mod convert;
pub mod cumulative;
pub mod grpc;
pub mod http;
pub mod receiver;
pub mod stats;
pub mod tags;

pub use receiver::Receiver;

use std::sync::Arc;

use config::OtlpConfig;

use crate::base::conn::Stats;
use crate::base::health::Status;
use crate::base::tls::{self, Alpn};
use crate::component::{bind_tcp, Context, Error, Running, Stage};

/// Starts the OTLP receiver and its listeners (`otlp.http_listen`, `otlp.grpc_listen`), both
/// feeding one [`Receiver`]. At shutdown the receiver refuses new requests and the requests
/// already admitted finish into its shard before the final flush.
///
/// # Errors
/// An address does not parse or cannot be bound.
pub async fn start(cfg: &OtlpConfig, ctx: &mut Context) -> Result<Running, Error> {
    let http = bind(
        cfg,
        &cfg.http_listen,
        "otlp.http_listen",
        "OTLP/HTTP listener",
    )
    .await?;
    let grpc = bind(
        cfg,
        &cfg.grpc_listen,
        "otlp.grpc_listen",
        "OTLP/gRPC listener",
    )
    .await?;
    if http.is_none() && grpc.is_none() {
        let why = if cfg.enabled {
            "otlp listen address is empty"
        } else {
            "otlp.enabled is false"
        };
        return Ok(
            Running::disabled("otlp_http", Stage::Intake, why).with_part(
                "otlp_grpc",
                Status::Disabled,
                why,
            ),
        );
    }
    let tls = |alpn| {
        (!cfg.tls_cert_file.is_empty())
            .then(|| tls::server_config(&cfg.tls_cert_file, &cfg.tls_key_file, alpn))
            .transpose()
            .map_err(|e| Error::start("otlp", e))
    };
    let (http_tls, grpc_tls) = (tls(Alpn::Http1)?, tls(Alpn::H2)?);
    let receiver = Arc::new(Receiver::new(cfg, &ctx.aggregator, ctx.clock.clone()));
    ctx.telemetry.register(receiver.stats.clone());
    let serve = |name: &'static str, listener: Option<tokio::net::TcpListener>, off: &str| {
        let Some(l) = listener else {
            return (Status::Disabled, off.to_string());
        };
        let addr = l
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let tls = if name == "otlp_http" {
            http_tls.clone()
        } else {
            grpc_tls.clone()
        };
        let with_tls = if tls.is_some() { " (TLS)" } else { "" };
        tracing::info!(component = name, addr = %addr, tls = tls.is_some(), "listening");
        let (r, c) = (Arc::clone(&receiver), ctx.shutdown.token(Stage::Intake));
        let stats = Stats::new(name);
        ctx.telemetry.register(stats.clone());
        let limits = cfg.limits(cfg.max_connections);
        ctx.shutdown.spawn(Stage::Intake, async move {
            let served = if name == "otlp_http" {
                http::serve(l, r, limits, tls, stats, c).await;
                Ok(())
            } else {
                grpc::serve(l, r, limits, tls, stats, c)
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = served {
                tracing::error!(component = name, error = %e, "OTLP server failed");
            }
        });
        (Status::Ok, format!("{addr}{with_tls}"))
    };
    let (http_status, http_detail) = serve("otlp_http", http, "otlp.http_listen is empty");
    let (grpc_status, grpc_detail) = serve("otlp_grpc", grpc, "otlp.grpc_listen is empty");
    let closing = Arc::clone(&receiver);
    ctx.shutdown
        .on_stop(Stage::Intake, async move { closing.close() });
    // One component with two health lines: the HTTP listener's leads.
    let running = Running {
        status: http_status,
        ..Running::ok("otlp_http", Stage::Intake, http_detail, ())
    };
    Ok(running.with_part("otlp_grpc", grpc_status, grpc_detail))
}

/// Binds one OTLP listener; `None` when OTLP is off or its address is empty.
async fn bind(
    cfg: &OtlpConfig,
    addr: &str,
    key: &'static str,
    what: &'static str,
) -> Result<Option<tokio::net::TcpListener>, Error> {
    if !cfg.enabled || addr.is_empty() {
        return Ok(None);
    }
    Ok(Some(bind_tcp(what, key, addr).await?.0))
}
