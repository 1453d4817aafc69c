//! The HTTP listener as a component: bound at start, served (`base::serve`, with the bounds
//! and TLS of `[http]`) until the HTTP stage (the last one) is cancelled.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::Router;

use super::config::HttpConfig;
use crate::base::conn::Stats;
use crate::base::tls::{self, Alpn};
use crate::component::{bind_tcp, Context, Error, Running, Stage};

/// Binds `http.listen` and serves `app` on it. Peer addresses reach the handlers
/// (`ConnectInfo<SocketAddr>`), so that mutating routes can trust loopback callers.
///
/// # Errors
/// The address does not parse or cannot be bound, or the TLS files do not load.
pub async fn start(cfg: &HttpConfig, ctx: &mut Context, app: Router) -> Result<Running, Error> {
    let tls = if cfg.tls_cert_file.is_empty() {
        None
    } else {
        Some(
            tls::server_config(&cfg.tls_cert_file, &cfg.tls_key_file, Alpn::Http1)
                .map_err(|e| Error::start("http", e))?,
        )
    };
    let (listener, local) = bind_tcp("HTTP listener", "http.listen", &cfg.listen).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(component = "http", addr = %local, scheme, "listening");
    let token = ctx.shutdown.token(Stage::Http);
    let stats = Stats::new("http");
    ctx.telemetry.register(stats.clone());
    let limits = cfg.limits(cfg.max_connections);
    ctx.shutdown.spawn(
        Stage::Http,
        crate::base::serve::http(
            listener,
            limits,
            tls,
            stats,
            app,
            ConnectInfo::<SocketAddr>,
            token,
        ),
    );
    let detail = if scheme == "https" {
        format!("{local} (TLS)")
    } else {
        local.to_string()
    };
    Ok(Running::ok("http", Stage::Http, detail, ()))
}
