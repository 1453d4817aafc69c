//! Wiring of the GPS subsystem: builds the registry, guard, point delivery, metrics publisher
//! and server from `[gps]`, and returns what the HTTP API reads and the task to await at
//! shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::command::Commands;
use super::forward::Forwarder;
use super::guard::Guard;
use super::metrics::{GpsStats, GpsTelemetry, Publisher};
use super::osmand::Osmand;
use super::points::{Delivery, NdjsonFile, PointSink};
use super::registry::Registry;
use super::server::{now_ms, Limits, Server};
use super::GpsConfig;
use crate::aggregate::Aggregator;
use crate::component::{bind_tcp, Context, Error, Running, Stage};
use crate::telemetry::Telemetry;

/// What the HTTP API reads of a running GPS subsystem.
#[derive(Clone)]
pub struct GpsState {
    /// Known devices.
    pub registry: Arc<Registry>,
    /// The abuse guard, with its blacklist.
    pub guard: Arc<Guard>,
    /// Counters and the live window.
    pub stats: Arc<GpsStats>,
    /// How recently a device must have spoken to count as active (`gps.active_window`).
    pub active_window: Duration,
    /// The device command queues.
    pub commands: Arc<Commands>,
}

/// A running GPS subsystem.
pub struct Gps {
    /// The registry, guard and counters, for the HTTP API.
    pub state: GpsState,
    /// Ends after `cancel`: connections closed, points stored, last metrics published.
    pub task: JoinHandle<()>,
}

/// Starts the GPS component when `gps.enabled` and `gps.listen` is set: binds the listener,
/// opens the configured point sinks and the `live_points` outbox (drained in the delivery
/// stage), and serves until the intake stage: connections closed, points stored, last fleet
/// metrics published. Gives back the state the HTTP API reads.
///
/// # Errors
/// The address does not parse or cannot be bound, the points file or queue cannot be opened,
/// or the point writer thread cannot start.
pub async fn start_component(
    cfg: &GpsConfig,
    ctx: &mut Context,
) -> Result<Running<GpsState>, Error> {
    if !cfg.enabled || cfg.listen.is_empty() {
        return Ok(Running::disabled(
            "gps",
            Stage::Intake,
            "gps.enabled is false or gps.listen is empty",
        ));
    }
    let (listener, local) = bind_tcp("GPS listener", "gps.listen", &cfg.listen).await?;
    let mut detail = local.to_string();
    let osmand = if cfg.osmand_enabled {
        let (l, addr) =
            bind_tcp("OsmAnd listener", "gps.osmand_listen", &cfg.osmand_listen).await?;
        tracing::info!(component = "gps_osmand", addr = %addr, "OsmAnd / Traccar Client listening");
        detail = format!("{detail}, osmand {addr}");
        Some(l)
    } else {
        None
    };
    let mut point_sinks = configured_sinks(cfg).map_err(|e| Error::start("gps", e))?;
    if let Some(f) = Forwarder::start(cfg, ctx)? {
        point_sinks.push(Box::new(f.sink()));
        ctx.shutdown
            .on_stop(Stage::Delivery, async move { f.shutdown().await });
    }
    if let Some(f) = super::mqtt::Forwarder::start(cfg, ctx)? {
        point_sinks.push(Box::new(f.sink()));
        ctx.shutdown
            .on_stop(Stage::Delivery, async move { f.shutdown().await });
    }
    let g = start(
        cfg,
        Listeners {
            tcp: listener,
            osmand,
        },
        point_sinks,
        &ctx.aggregator,
        &ctx.telemetry,
        ctx.shutdown.token(Stage::Intake),
    )
    .map_err(|e| Error::start("gps", format!("cannot start the GPS server: {e}")))?;
    tracing::info!(component = "gps", addr = %local, "listening");
    let task = g.task;
    ctx.shutdown.spawn(Stage::Intake, async move {
        let _ = task.await;
    });
    Ok(Running::ok("gps", Stage::Intake, detail, g.state))
}

/// Point sinks configured in `[gps]`: the NDJSON file when `gps.points_file` is set.
///
/// # Errors
/// When the points file cannot be opened.
pub fn configured_sinks(cfg: &GpsConfig) -> std::io::Result<Vec<Box<dyn PointSink>>> {
    let mut sinks: Vec<Box<dyn PointSink>> = Vec::new();
    if !cfg.points_file.is_empty() {
        let path = Path::new(&cfg.points_file);
        let file = NdjsonFile::open(
            path,
            cfg.points_file_max_bytes,
            cfg.points_file_max_files,
            cfg.points_fsync,
        )
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("gps.points_file {}: {e}", path.display()))
        })?;
        sinks.push(Box::new(file));
    }
    Ok(sinks)
}

/// The bound GPS listeners: the trackers' TCP port and, when enabled, the OsmAnd HTTP one.
pub struct Listeners {
    /// `gps.listen`.
    pub tcp: TcpListener,
    /// `gps.osmand_listen` when `gps.osmand_enabled`.
    pub osmand: Option<TcpListener>,
}

/// Starts serving `listeners` with `sinks` (see [`configured_sinks`]; the caller may add its
/// own).
///
/// # Errors
/// When the point writer thread cannot start.
pub fn start(
    cfg: &GpsConfig,
    listeners: Listeners,
    sinks: Vec<Box<dyn PointSink>>,
    aggregator: &Aggregator,
    telemetry: &Telemetry,
    cancel: CancellationToken,
) -> std::io::Result<Gps> {
    let stats = Arc::new(GpsStats::default());
    let registry = Arc::new(Registry::new(
        cfg.max_devices,
        cfg.max_unidentified_devices,
        cfg.active_window,
    ));
    let guard = Arc::new(Guard::new(cfg));
    let commands = Arc::new(Commands::new(cfg));
    telemetry.register(Arc::clone(&commands) as _);
    let (delivery, writer) = Delivery::start(sinks, cfg.points_queue_batches, Arc::clone(&stats))?;
    telemetry.register(Arc::new(GpsTelemetry {
        stats: Arc::clone(&stats),
        registry: Arc::clone(&registry),
        guard: Arc::clone(&guard),
    }));
    let mut publisher = Publisher::new(
        aggregator.new_shard(),
        Arc::clone(aggregator.shared()),
        Arc::clone(&stats),
        Arc::clone(&registry),
        Arc::clone(&guard),
        &cfg.metric_prefix,
        &cfg.live_metric_prefix,
    );
    // Publish often enough that every window sees fresh gauges, at most once a second.
    let every =
        (aggregator.interval() / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let server = Arc::new(Server {
        limits: Limits::from_config(cfg),
        guard: Arc::clone(&guard),
        registry: Arc::clone(&registry),
        stats: Arc::clone(&stats),
        delivery: delivery.clone(),
        commands: Arc::clone(&commands),
        next_conn: std::sync::atomic::AtomicU64::new(0),
    });
    let osmand = listeners.osmand.map(|l| {
        let conn_stats = crate::base::conn::Stats::new("gps_osmand");
        telemetry.register(conn_stats.clone());
        let state = Arc::new(Osmand {
            registry: Arc::clone(&registry),
            stats: Arc::clone(&stats),
            delivery,
            commands: Arc::clone(&commands),
        });
        super::osmand::serve(
            l,
            super::osmand::limits(cfg),
            state,
            conn_stats,
            cancel.clone(),
        )
    });
    let state = GpsState {
        registry,
        guard,
        stats,
        active_window: cfg.active_window,
        commands,
    };
    let task = tokio::spawn(async move {
        let stop_publishing = CancellationToken::new();
        let publishing = tokio::spawn({
            let stop = stop_publishing.clone();
            async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => publisher.publish(Instant::now(), now_ms()),
                    }
                }
                publisher.publish(Instant::now(), now_ms());
            }
        });
        // `run` and the OsmAnd server consume the last handles on the Delivery: the writer
        // then stores what is queued and exits.
        let serving = server.run(listeners.tcp, cancel);
        match osmand {
            Some(o) => {
                tokio::join!(serving, o);
            }
            None => serving.await,
        }
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        stop_publishing.cancel();
        let _ = publishing.await;
    });
    Ok(Gps { state, task })
}
