//! The topology: builds every component from the configuration on one [`Context`], in the
//! order their dependencies need (sinks before the flusher, the flusher before the sources,
//! the HTTP API last), reports each one's health once, and at shutdown drains the stages in
//! order (see [`Stage`](crate::component::Stage)). Nothing imports this module but `lib.rs`.
//!
//! Around that it speaks systemd's notify protocol (`notify.rs`: ready, reloading, stopping,
//! the watchdog tied to the flusher's progress) and runs the live reload (`reload.rs`).

pub mod notify;
pub mod reload;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tracing::info;

use crate::aggregate::Aggregator;
use crate::base::clock::Clock;
use crate::base::fds;
use crate::base::health::Status;
use crate::component::reload::{Reloader, Request};
use crate::component::{Context, Stage};
use crate::config::Config;
use crate::telemetry::Telemetry;
use crate::{alert, api, flusher, gps, host, otlp, sinks, statsd};

pub use reload::{Service, SetLogLevel};

/// How the process is driven from outside: what it was started with (re-applied by a
/// reload), and the reload requests (SIGHUP from `main`, `POST /admin/reload` from the API).
pub struct Control {
    /// What a reload re-reads and re-applies.
    pub service: Service,
    /// Asks for reloads; the API gets a clone.
    pub reloader: Reloader,
    /// The requests the reload task takes.
    pub requests: tokio::sync::mpsc::Receiver<Request>,
}

/// The handles a reload reaches, from the start.
struct Started {
    alerts: Option<Arc<alert::Shared>>,
    datadog: Option<Arc<sinks::datadog::DatadogSink>>,
    /// The mapping file's and histogram defaults' swap, for `/metrics` and remote write.
    reshaper: Arc<sinks::prometheus::Reshaper>,
}

/// Runs tallyd until `shutdown` completes, then drains stage by stage and returns. With
/// `control`, reloads are taken (see `reload.rs`); tells systemd (`NOTIFY_SOCKET`) when it is
/// ready, reloading and stopping, and pings its watchdog (`WATCHDOG_USEC`).
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    control: Option<Control>,
) -> anyhow::Result<()> {
    let loaded = cfg.clone();
    let (cfg, fds) = fit_descriptors(cfg);
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
    let status = if fds.fits {
        Status::Ok
    } else {
        tracing::warn!("{}", fds.detail);
        Status::Degraded
    };
    ctx.health.set("fd_limit", status, fds.detail);
    let reloader = control.as_ref().map(|c| c.reloader.clone());
    let started = match start(&cfg, &mut ctx, reloader).await {
        Ok(s) => s,
        Err(e) => {
            // What already started stops with the process, not half-running.
            ctx.shutdown.abort();
            return Err(e);
        }
    };
    let health = Arc::clone(&ctx.health);
    if let Some(c) = control {
        let counts = Arc::new(reload::Counts::default());
        ctx.telemetry.register(counts.clone());
        let task = reload::ReloadTask {
            running: loaded,
            service: c.service,
            parts: reload::Parts {
                aggregator: Arc::clone(&ctx.aggregator),
                alerts: started.alerts,
                datadog: started.datadog,
                reshaper: started.reshaper,
                queues: Arc::clone(&ctx.queues),
            },
            health: Arc::clone(&health),
            counts,
        };
        task.spawn(c.requests, ctx.shutdown.token(Stage::Intake));
    }
    health.set_ready(true);
    // Every listener is bound (their starts returned): the service is up.
    notify::ready("running");
    if let Some(every) = notify::watchdog_interval() {
        info!(every_ms = every.as_millis() as u64, "systemd watchdog on");
        notify::spawn_watchdog(
            every,
            Arc::clone(&ctx.telemetry),
            cfg.aggregate.flush_interval,
            ctx.shutdown.token(Stage::Intake),
        );
    }
    info!(version = env!("CARGO_PKG_VERSION"), "tallyd started");
    shutdown.await;
    info!("shutting down: stopping intake, draining, final flush");
    notify::stopping();
    health.set_ready(false);
    ctx.shutdown.drain().await;
    info!("stopped");
    Ok(())
}

/// Fits the listeners' connection caps into the soft `RLIMIT_NOFILE` (raised to the hard
/// limit by `main`): caps that do not fit are lowered, so that each acts before the process
/// runs out of descriptors (the HTTP and OTLP per-peer caps in proportion), and `/health`
/// says so (`fd_limit`, degraded).
fn fit_descriptors(mut cfg: Config) -> (Config, fds::Fit) {
    let limit = fds::soft_limit().unwrap_or(u64::MAX);
    let otlp = cfg.otlp.enabled;
    let (http_was, otlp_was) = (cfg.http.max_connections, cfg.otlp.max_connections);
    let listeners = [
        (
            !cfg.statsd.tcp_listen.is_empty(),
            "statsd.tcp_max_connections",
            cfg.statsd.tcp_max_connections,
        ),
        (
            cfg.gps.enabled && !cfg.gps.listen.is_empty(),
            "gps.max_connections",
            cfg.gps.max_connections,
        ),
        (
            cfg.gps.enabled && !cfg.gps.listen.is_empty() && cfg.gps.osmand_enabled,
            "gps.osmand_max_connections",
            cfg.gps.osmand_max_connections,
        ),
        (true, "http.max_connections", cfg.http.max_connections),
        (
            otlp && !cfg.otlp.http_listen.is_empty(),
            "otlp.max_connections (OTLP/HTTP)",
            cfg.otlp.max_connections,
        ),
        (
            otlp && !cfg.otlp.grpc_listen.is_empty(),
            "otlp.max_connections (OTLP/gRPC)",
            cfg.otlp.max_connections,
        ),
    ];
    let on: Vec<_> = listeners.iter().filter(|l| l.0).collect();
    let caps: Vec<fds::Cap> = on
        .iter()
        .map(|&&(_, key, value)| fds::Cap { key, value })
        .collect();
    let fit = fds::fit(limit, &caps);
    for (&&(_, key, _), &v) in on.iter().zip(&fit.caps) {
        match key {
            "statsd.tcp_max_connections" => cfg.statsd.tcp_max_connections = v,
            "gps.max_connections" => cfg.gps.max_connections = v,
            "gps.osmand_max_connections" => cfg.gps.osmand_max_connections = v,
            "http.max_connections" => cfg.http.max_connections = v,
            // One key for both listeners: the smaller share.
            _ => cfg.otlp.max_connections = cfg.otlp.max_connections.min(v),
        }
    }
    // A lowered HTTP or OTLP cap lowers its per-peer cap in proportion, so that one peer
    // still cannot take them all.
    let scale = |per_peer: usize, now: usize, was: usize| {
        if now >= was {
            per_peer
        } else {
            (per_peer as u128 * now as u128 / was.max(1) as u128).max(1) as usize
        }
    };
    let h = &mut cfg.http;
    h.max_connections_per_peer = scale(h.max_connections_per_peer, h.max_connections, http_was);
    let o = &mut cfg.otlp;
    o.max_connections_per_peer = scale(o.max_connections_per_peer, o.max_connections, otlp_was);
    (cfg, fit)
}

/// Starts every component on `ctx`, in the order their dependencies need.
async fn start(
    cfg: &Config,
    ctx: &mut Context,
    reloader: Option<Reloader>,
) -> anyhow::Result<Started> {
    let health = Arc::clone(&ctx.health);
    // Sinks first: the flusher hands windows to the sinks added before it starts.
    let prometheus = sinks::prometheus::start(&cfg.prometheus, ctx)?
        .report(&health)
        .context("the Prometheus sink is always on")?;
    let datadog = sinks::datadog::start(&cfg.datadog, ctx)?.report(&health);
    let reshaper = prometheus.reshaper();
    sinks::remote_write::start(&cfg.remote_write, &cfg.prometheus, &reshaper, ctx)?.report(&health);
    // Points received over OTLP leave with the resource and scope their tags came from; with
    // the receiver off no tag came from it.
    let received = if cfg.otlp.enabled && cfg.otlp_export.received_resource {
        sinks::otlp::Received::new(&cfg.otlp.attribute_renames(), &cfg.otlp.scope_name_tag)
    } else {
        sinks::otlp::Received::default()
    };
    sinks::otlp::start(&cfg.otlp_export, received, ctx)?.report(&health);
    // After Datadog delivery: a `datadog` notifier writes into its queue.
    let alerting = alert::start(&cfg.alerts, cfg.statsd.any_listener(), ctx)?.report(&health);
    // The status page's history ranks the busiest metrics of a window now and then.
    let history = api::History::attach(ctx);
    flusher::start(&cfg.aggregate, ctx)?.report(&health);

    // Sources.
    statsd::udp::start(&cfg.statsd, ctx)?.report(&health);
    statsd::udp::start_unix(&cfg.statsd, ctx)?.report(&health);
    statsd::start_tcp(&cfg.statsd, ctx).await?.report(&health);
    let gps = gps::service::start_component(&cfg.gps, ctx)
        .await?
        .report(&health);
    otlp::start(&cfg.otlp, ctx).await?.report(&health);
    host::start(&cfg.host_metrics, ctx)?.report(&health);

    // The HTTP API last, over what the components expose.
    let scrapes = api::Scrapes::new(&cfg.prometheus);
    ctx.telemetry.register(scrapes.clone());
    let admin = api::Admin::with_loopback(
        &cfg.http.admin_token,
        &cfg.http.public_routes,
        cfg.http.trust_loopback,
    );
    ctx.telemetry.register(Arc::new(admin.clone()));
    let parts = api::Parts {
        prometheus,
        scrapes,
        health: Arc::clone(&health),
        queues: Arc::clone(&ctx.queues),
        alerts: alerting.clone(),
        gps,
        telemetry: Arc::clone(&ctx.telemetry),
        history,
        admin: &admin,
        reloader,
    };
    api::start_sampler(&parts, ctx);
    let app = api::router(parts);
    api::server::start(&cfg.http, ctx, app)
        .await?
        .report(&health);
    Ok(Started {
        alerts: alerting,
        datadog,
        reshaper,
    })
}
