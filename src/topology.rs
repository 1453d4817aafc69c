//! The topology: builds every component from the configuration on one [`Context`], in the
//! order their dependencies need (sinks before the flusher, the flusher before the sources,
//! the HTTP API last), reports each one's health once, and at shutdown drains the stages in
//! order (see [`Stage`]). Nothing imports this module but `lib.rs`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tracing::info;

use crate::aggregate::Aggregator;
use crate::base::clock::Clock;
use crate::base::health::Status;
use crate::component::{Context, Running, Stage};
use crate::config::Config;
use crate::telemetry::Telemetry;
use crate::{alert, api, flusher, gps, otlp, sinks, statsd};

/// Runs tallyd until `shutdown` completes, then drains stage by stage and returns.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let clock = Clock::system();
    let telemetry = Arc::new(Telemetry::default());
    let aggregator = Arc::new(Aggregator::new(
        &cfg.aggregate,
        cfg.statsd.gauge_mode,
        Arc::clone(&telemetry),
    ));
    let host = crate::base::host::host_name(&cfg.datadog.hostname);
    let mut ctx = Context::new(clock, telemetry, aggregator, cfg.queue.clone(), host);
    ctx.telemetry.register(ctx.queues.clone());
    let health = Arc::clone(&ctx.health);

    // Sinks first: the flusher hands windows to the sinks added before it starts.
    let prometheus = sinks::prometheus::start(&cfg.prometheus, &mut ctx)?
        .report(&health)
        .context("the Prometheus sink is always on")?;
    sinks::datadog::start(&cfg.datadog, &mut ctx)?.report(&health);
    sinks::remote_write::start(&cfg.remote_write, &cfg.prometheus, &mut ctx)?.report(&health);
    // After Datadog delivery: a `datadog` notifier writes into its queue.
    let alerting = if cfg.alerts.enabled {
        let a = alert::Alerting::start(
            &cfg,
            Arc::clone(&ctx.telemetry),
            ctx.host.clone(),
            ctx.events.clone(),
        )
        .map_err(anyhow::Error::msg)?;
        ctx.add_sink(a.sink.clone());
        info!(
            component = "alerts",
            rules = a.rule_count(),
            notifiers = a.shared.dispatcher.notifiers.len(),
            "alerting enabled"
        );
        health.set("alerts", Status::Ok, format!("{} rules", a.rule_count()));
        let shared = Arc::clone(&a.shared);
        // The final window is evaluated and its notifications get a bounded chance to go out
        // (Datadog events into the queue, before its sender drains and stops).
        ctx.shutdown.on_stop(Stage::Alerts, async move {
            a.shutdown(Duration::from_secs(5)).await
        });
        Some(shared)
    } else {
        health.set("alerts", Status::Disabled, "alerts.enabled is false");
        None
    };
    flusher::start(&cfg.aggregate, &mut ctx)?.report(&health);

    // Sources.
    statsd::udp::start(&cfg.statsd, &mut ctx)?.report(&health);
    statsd::udp::start_unix(&cfg.statsd, &mut ctx)?.report(&health);
    statsd::start_tcp(&cfg.statsd, &mut ctx)
        .await?
        .report(&health);
    let gps = start_gps(&cfg, &mut ctx).await?;
    otlp::start(&cfg.otlp, &mut ctx).await?.report(&health);

    // The HTTP API last, over what the components expose.
    let app = api::router(api::Parts {
        prometheus,
        health: Arc::clone(&health),
        queues: Arc::clone(&ctx.queues),
        alerts: alerting,
        gps,
        admin_token: &cfg.http.admin_token,
    });
    api::server::start(&cfg.http, &mut ctx, app)
        .await?
        .report(&health);

    health.set_ready(true);
    info!(version = env!("CARGO_PKG_VERSION"), "tallyd started");
    shutdown.await;
    info!("shutting down: stopping intake, draining, final flush");
    health.set_ready(false);
    ctx.shutdown.drain().await;
    info!("stopped");
    Ok(())
}

/// The GPS server and its point delivery; what the HTTP API reads of it when it is on.
async fn start_gps(
    cfg: &Config,
    ctx: &mut Context,
) -> anyhow::Result<Option<gps::service::GpsState>> {
    if !cfg.gps.enabled || cfg.gps.listen.is_empty() {
        Running::<()>::disabled(
            "gps",
            Stage::Intake,
            "gps.enabled is false or gps.listen is empty",
        )
        .report(&ctx.health);
        return Ok(None);
    }
    let addr: std::net::SocketAddr = cfg.gps.listen.parse().context("gps.listen")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the GPS listener on {addr} (gps.listen)"))?;
    let local = listener.local_addr()?;
    let mut point_sinks = gps::service::configured_sinks(&cfg.gps)?;
    if let Some(f) = gps::forward::Forwarder::start(&cfg.gps, ctx).map_err(anyhow::Error::msg)? {
        point_sinks.push(Box::new(f.sink()));
        ctx.shutdown
            .on_stop(Stage::Delivery, async move { f.shutdown().await });
    }
    let g = gps::service::start(
        &cfg.gps,
        listener,
        point_sinks,
        &ctx.aggregator,
        &ctx.telemetry,
        ctx.shutdown.token(Stage::Intake),
    )
    .context("cannot start the GPS server")?;
    info!(component = "gps", addr = %local, "listening");
    let task = g.task;
    ctx.shutdown.spawn(Stage::Intake, async move {
        let _ = task.await;
    });
    Running::ok("gps", Stage::Intake, local.to_string(), ()).report(&ctx.health);
    Ok(Some(g.state))
}
