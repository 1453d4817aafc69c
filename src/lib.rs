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

pub mod aggregate;
pub mod alert;
pub mod api;
pub mod base;
pub mod config;
pub mod gps;
pub mod model;
pub mod otlp;
pub mod queue;
pub mod sinks;
pub mod statsd;
pub mod telemetry;

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::info;

use aggregate::Aggregator;
use api::{Health, Status};
use config::Config;
use sinks::prometheus::Prometheus;
use sinks::Sink;
use statsd::Ingest;
use telemetry::{Telemetry, Transport};

/// Every socket tallyd listens on, bound before anything starts.
struct Bound {
    udp: Vec<UdpSocket>,
    tcp: Option<tokio::net::TcpListener>,
    uds: Option<(UnixDatagram, PathBuf)>,
    gps: Option<tokio::net::TcpListener>,
    http: tokio::net::TcpListener,
    otlp_http: Option<tokio::net::TcpListener>,
    otlp_grpc: Option<tokio::net::TcpListener>,
}

/// Binds an optional OTLP listener (`key` names the setting in errors).
async fn bind_otlp(
    cfg: &Config,
    addr: &str,
    key: &str,
    what: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    if !cfg.otlp.enabled || addr.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = addr.parse().with_context(|| key.to_string())?;
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the {what} listener on {addr} ({key})"))?;
    Ok(Some(l))
}

async fn bind_all(cfg: &Config) -> anyhow::Result<Bound> {
    let s = &cfg.statsd;
    let udp = if s.udp_listen.is_empty() {
        Vec::new()
    } else {
        let addr: SocketAddr = s.udp_listen.parse().context("statsd.udp_listen")?;
        statsd::udp::bind(addr, cfg.udp_receivers(), s.udp_recv_buffer).with_context(|| {
            format!("cannot bind the statsd UDP listener on {addr} (statsd.udp_listen)")
        })?
    };
    let tcp = if s.tcp_listen.is_empty() {
        None
    } else {
        let addr: SocketAddr = s.tcp_listen.parse().context("statsd.tcp_listen")?;
        Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot bind the statsd TCP listener on {addr} (statsd.tcp_listen)")
        })?)
    };
    let uds = if s.unix_socket.is_empty() {
        None
    } else {
        let path = PathBuf::from(&s.unix_socket);
        let sock = statsd::udp::bind_unix(&path).with_context(|| {
            format!(
                "cannot bind the statsd Unix socket {} (statsd.unix_socket)",
                path.display()
            )
        })?;
        Some((sock, path))
    };
    let gps = if cfg.gps.enabled && !cfg.gps.listen.is_empty() {
        let addr: SocketAddr = cfg.gps.listen.parse().context("gps.listen")?;
        Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind the GPS listener on {addr} (gps.listen)"))?,
        )
    } else {
        None
    };
    let addr: SocketAddr = cfg.http.listen.parse().context("http.listen")?;
    let http = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the HTTP listener on {addr} (http.listen)"))?;
    let otlp_http = bind_otlp(cfg, &cfg.otlp.http_listen, "otlp.http_listen", "OTLP/HTTP").await?;
    let otlp_grpc = bind_otlp(cfg, &cfg.otlp.grpc_listen, "otlp.grpc_listen", "OTLP/gRPC").await?;
    Ok(Bound {
        udp,
        tcp,
        uds,
        gps,
        http,
        otlp_http,
        otlp_grpc,
    })
}

/// Runs tallyd until `shutdown` completes, then drains, flushes once more and returns.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bound = bind_all(&cfg).await?;
    let telemetry = Arc::new(Telemetry::default());
    let aggregator = Arc::new(Aggregator::new(
        &cfg.aggregate,
        cfg.statsd.gauge_mode,
        Arc::clone(&telemetry),
    ));
    let prometheus = Arc::new(Prometheus::new(
        cfg.prometheus.series_ttl,
        cfg.prometheus.max_series,
        Arc::clone(&telemetry),
    ));
    let mut sinks: Vec<Arc<dyn Sink>> = vec![prometheus.clone()];
    let health = Arc::new(Health::new(base::clock::Clock::system()));
    health.watch("aggregator", aggregator_health(&cfg, &telemetry));
    let queues = Arc::new(queue::Registry::default());
    telemetry.register(queues.clone());
    let datadog = if cfg.datadog.api_key.is_empty() {
        health.set(
            "datadog",
            Status::Disabled,
            "no API key (datadog.api_key or DD_API_KEY)",
        );
        None
    } else {
        let dd = sinks::datadog::DatadogSink::start(&cfg, Arc::clone(&health), &queues)
            .map_err(anyhow::Error::msg)?;
        telemetry.register(dd.clone());
        sinks.push(dd.clone());
        Some(dd)
    };
    let remote_write = if cfg.remote_write.url.is_empty() {
        health.set(
            "remote_write",
            Status::Disabled,
            "remote_write.url is empty",
        );
        None
    } else {
        let rw = sinks::remote_write::RemoteWriteSink::start(&cfg, Arc::clone(&health), &queues)
            .map_err(anyhow::Error::msg)?;
        telemetry.register(rw.clone());
        sinks.push(rw.clone());
        Some(rw)
    };
    // After Datadog delivery: a `datadog` notifier writes into its queue.
    let alerting = if cfg.alerts.enabled {
        let a = alert::Alerting::start(
            &cfg,
            Arc::clone(&telemetry),
            alert::host_name(&cfg),
            datadog.as_ref().map(|d| d.event_queue()),
        )
        .map_err(anyhow::Error::msg)?;
        sinks.push(a.sink.clone());
        Some(a)
    } else {
        None
    };
    let ingest = Arc::new(Ingest {
        aggregator: Arc::clone(&aggregator),
        max_tags: cfg.statsd.max_tags,
    });
    let cancel = CancellationToken::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();

    let receiver = |transport| statsd::udp::Receiver {
        ingest: Arc::clone(&ingest),
        telemetry: Arc::clone(&telemetry),
        batch: cfg.statsd.udp_batch,
        batch_wait: cfg.statsd.udp_batch_wait,
        max_packet: cfg.statsd.max_packet_size,
        transport,
        stop: Arc::clone(&stop),
    };

    if bound.udp.is_empty() {
        health.set("statsd_udp", Status::Disabled, "statsd.udp_listen is empty");
    }
    let mut ports = Vec::new();
    for (i, sock) in bound.udp.into_iter().enumerate() {
        let addr = sock.local_addr()?;
        if i == 0 {
            info!(component = "statsd_udp", addr = %addr, sockets = cfg.udp_receivers(), "listening");
            health.set(
                "statsd_udp",
                Status::Ok,
                format!("{addr}, {} sockets", cfg.udp_receivers()),
            );
        }
        ports.push(addr.port());
        let r = receiver(Transport::Udp);
        threads.push(
            std::thread::Builder::new()
                .name(format!("udp-recv-{i}"))
                .spawn(move || r.run(sock.as_raw_fd()))
                .context("cannot start a UDP receiver thread")?,
        );
    }
    ports.dedup();
    *base::lock(&telemetry.udp_ports) = ports;

    if let Some((sock, path)) = bound.uds {
        info!(component = "statsd_uds", path = %path.display(), "listening");
        health.set("statsd_uds", Status::Ok, path.display().to_string());
        let r = receiver(Transport::Uds);
        threads.push(
            std::thread::Builder::new()
                .name("uds-recv".into())
                .spawn(move || {
                    let _remove = statsd::udp::RemoveOnDrop(path);
                    r.run(sock.as_raw_fd());
                })
                .context("cannot start the Unix socket receiver thread")?,
        );
    } else {
        health.set(
            "statsd_uds",
            Status::Disabled,
            "statsd.unix_socket is empty",
        );
    }

    let tcp_task = if let Some(listener) = bound.tcp {
        let addr = listener.local_addr()?;
        info!(component = "statsd_tcp", addr = %addr, "listening");
        health.set("statsd_tcp", Status::Ok, addr.to_string());
        let server = Arc::new(statsd::tcp::TcpServer {
            ingest: Arc::clone(&ingest),
            shard: aggregator.new_shard(),
            telemetry: Arc::clone(&telemetry),
            max_connections: cfg.statsd.tcp_max_connections,
            idle_timeout: cfg.statsd.tcp_idle_timeout,
            max_line: cfg.statsd.tcp_max_line_length,
        });
        Some(tokio::spawn(server.run(listener, cancel.clone())))
    } else {
        health.set("statsd_tcp", Status::Disabled, "statsd.tcp_listen is empty");
        None
    };

    let mut points_forwarder = None;
    let gps = if let Some(listener) = bound.gps {
        let addr = listener.local_addr()?;
        let mut sinks = gps::service::configured_sinks(&cfg.gps)?;
        if let Some(f) =
            gps::forward::Forwarder::start(&cfg, &queues).map_err(anyhow::Error::msg)?
        {
            sinks.push(Box::new(f.sink()));
            points_forwarder = Some(f);
        }
        let g = gps::service::start(
            &cfg.gps,
            listener,
            sinks,
            Arc::clone(&ingest),
            &aggregator,
            &telemetry,
            cancel.clone(),
        )
        .context("cannot start the GPS server")?;
        info!(component = "gps", addr = %addr, "listening");
        health.set("gps", Status::Ok, addr.to_string());
        Some(g)
    } else {
        health.set(
            "gps",
            Status::Disabled,
            "gps.enabled is false or gps.listen is empty",
        );
        None
    };
    let otlp = start_otlp(
        &cfg,
        (bound.otlp_http, bound.otlp_grpc),
        &aggregator,
        &telemetry,
        &health,
        &cancel,
    )?;

    let (flush_stop, flush_rx) = mpsc::channel::<()>();
    let flusher = {
        let aggregator = Arc::clone(&aggregator);
        let telemetry = Arc::clone(&telemetry);
        std::thread::Builder::new()
            .name("flusher".into())
            .spawn(move || flush_loop(&aggregator, &sinks, &telemetry, &flush_rx))
            .context("cannot start the flusher thread")?
    };

    let http_addr = bound.http.local_addr()?;
    info!(component = "http", addr = %http_addr, "listening");
    health.set("http", Status::Ok, http_addr.to_string());
    let admin = queue::admin::AdminState {
        registry: queues,
        token: cfg.http.admin_token.as_str().into(),
    };
    let mut app = api::router(api::AppState {
        prometheus,
        health: Arc::clone(&health),
    })
    .merge(queue::admin::router(admin));
    if let Some(a) = &alerting {
        info!(
            component = "alerts",
            rules = a.rule_count(),
            notifiers = a.shared.dispatcher.notifiers.len(),
            "alerting enabled"
        );
        health.set("alerts", Status::Ok, format!("{} rules", a.rule_count()));
        app = app.merge(alert::api::router(alert::api::ApiState {
            shared: Arc::clone(&a.shared),
            admin_token: cfg.http.admin_token.as_str().into(),
        }));
    } else {
        health.set("alerts", Status::Disabled, "alerts.enabled is false");
    }
    let gps_task = gps.map(|g| {
        app = std::mem::take(&mut app).merge(g.router);
        g.task
    });
    let http_cancel = CancellationToken::new();
    let http_task = tokio::spawn({
        let c = http_cancel.clone();
        // Peer addresses let mutating routes (queue admin, alert test) trust loopback callers.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        async move {
            axum::serve(bound.http, app)
                .with_graceful_shutdown(c.cancelled_owned())
                .await
        }
    });
    health.set_ready(true);
    info!(version = env!("CARGO_PKG_VERSION"), "tallyd started");

    shutdown.await;
    info!("shutting down: stopping intake, draining, final flush");
    health.set_ready(false);
    cancel.cancel();
    stop.store(true, Relaxed);
    if let Some(t) = tcp_task {
        let _ = t.await;
    }
    if let Some(t) = gps_task {
        let _ = t.await;
    }
    if let Some((receiver, tasks)) = otlp {
        // Requests already admitted finish into the shard before the final flush.
        receiver.close();
        for t in tasks {
            let _ = t.await;
        }
    }
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
        let _ = flush_stop.send(());
        let _ = flusher.join();
    });
    let _ = joined.await;
    if let Some(a) = alerting {
        // The final window is evaluated and its notifications get a bounded chance to go out
        // (Datadog events into the queue, before its sender drains and stops).
        a.shutdown(Duration::from_secs(5)).await;
    }
    if let Some(dd) = datadog {
        dd.shutdown().await;
    }
    if let Some(rw) = remote_write {
        rw.shutdown().await;
    }
    if let Some(f) = points_forwarder {
        f.shutdown(cfg.queue.shutdown_drain).await;
    }
    http_cancel.cancel();
    let _ = http_task.await;
    info!("stopped");
    Ok(())
}

/// The aggregator's health, judged from its last flush: down after three intervals without one.
fn aggregator_health(cfg: &Config, telemetry: &Arc<Telemetry>) -> base::health::Watch {
    let telemetry = Arc::clone(telemetry);
    let late = 3 * cfg.aggregate.flush_interval.as_secs().max(1);
    Box::new(move |now| {
        let last = telemetry.flush_last_unix.load(Relaxed);
        if last == 0 {
            base::health::Component::new(Status::Ok, "waiting for the first flush")
        } else if now.saturating_sub(last) > late {
            base::health::Component::new(Status::Down, format!("no flush for {}s", now - last))
        } else {
            base::health::Component::new(
                Status::Ok,
                format!("last flush {}s ago", now.saturating_sub(last)),
            )
        }
    })
}

/// The OTLP receiver and its server tasks, closed and awaited at shutdown.
type OtlpRunning = (Arc<otlp::Receiver>, Vec<tokio::task::JoinHandle<()>>);

/// Starts the OTLP listeners that were bound, each served until `cancel`.
fn start_otlp(
    cfg: &Config,
    (http, grpc): (
        Option<tokio::net::TcpListener>,
        Option<tokio::net::TcpListener>,
    ),
    aggregator: &Aggregator,
    telemetry: &Telemetry,
    health: &Health,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<OtlpRunning>> {
    if http.is_none() && grpc.is_none() {
        let why = if cfg.otlp.enabled {
            "otlp listen address is empty"
        } else {
            "otlp.enabled is false"
        };
        health.set("otlp_http", Status::Disabled, why);
        health.set("otlp_grpc", Status::Disabled, why);
        return Ok(None);
    }
    let receiver = Arc::new(otlp::Receiver::new(&cfg.otlp, aggregator, unix_now()));
    telemetry.register(receiver.stats.clone());
    let mut tasks = Vec::new();
    if let Some(l) = http {
        let addr = l.local_addr()?;
        info!(component = "otlp_http", addr = %addr, "listening");
        health.set("otlp_http", Status::Ok, addr.to_string());
        let (r, c) = (Arc::clone(&receiver), cancel.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = otlp::http::serve(l, r, c).await {
                tracing::error!(component = "otlp_http", error = %e, "OTLP/HTTP server failed");
            }
        }));
    } else {
        health.set("otlp_http", Status::Disabled, "otlp.http_listen is empty");
    }
    if let Some(l) = grpc {
        let addr = l.local_addr()?;
        info!(component = "otlp_grpc", addr = %addr, "listening");
        health.set("otlp_grpc", Status::Ok, addr.to_string());
        let (r, c) = (Arc::clone(&receiver), cancel.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = otlp::grpc::serve(l, r, c).await {
                tracing::error!(component = "otlp_grpc", error = %e, "OTLP/gRPC server failed");
            }
        }));
    } else {
        health.set("otlp_grpc", Status::Disabled, "otlp.grpc_listen is empty");
    }
    Ok(Some((receiver, tasks)))
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Flushes at every multiple of the interval (wall clock aligned, like the Datadog Agent's
/// buckets) until told to stop, then flushes the partial window once more.
fn flush_loop(
    aggregator: &Aggregator,
    sinks: &[Arc<dyn Sink>],
    telemetry: &Telemetry,
    stop: &mpsc::Receiver<()>,
) {
    let iv = aggregator.interval().as_millis().max(1) as u64;
    loop {
        let now = unix_now().as_millis() as u64;
        let next = (now / iv + 1) * iv;
        let last = !matches!(
            stop.recv_timeout(Duration::from_millis(next - now)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        let start_ms = if last {
            (unix_now().as_millis() as u64 / iv) * iv
        } else {
            next - iv
        };
        let t0 = Instant::now();
        let cpu0 = base::cpu::thread_cpu();
        let flush = Arc::new(aggregator.flush(start_ms / 1000));
        for s in sinks {
            s.consume(&flush);
        }
        let took = t0.elapsed();
        telemetry.flush_cpu_ns.store(
            base::cpu::thread_cpu().saturating_sub(cpu0).as_nanos() as u64,
            Relaxed,
        );
        telemetry.flushes.fetch_add(1, Relaxed);
        let took_ns = took.as_nanos() as u64;
        telemetry.flush_last_ns.store(took_ns, Relaxed);
        telemetry.flush_max_ns.fetch_max(took_ns, Relaxed);
        telemetry
            .flush_series
            .store(flush.series.len() as u64, Relaxed);
        telemetry
            .flush_last_unix
            .store(unix_now().as_secs(), Relaxed);
        if took > aggregator.interval() / 2 {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                series = flush.series.len(),
                "flush took more than half the interval"
            );
        }
        if last {
            info!(
                series = flush.series.len(),
                events = flush.events.len(),
                "final flush done"
            );
            return;
        }
        // The flush's series buffer returns to the aggregator when its last holder (often
        // the alert thread, not this one) drops it: see `aggregate::Recycle`.
    }
}
