//! The HTTP listener as a component: bound at start, served until the HTTP stage (the last
//! one) is cancelled.

use std::net::SocketAddr;

use axum::Router;

use super::config::HttpConfig;
use crate::component::{bind_tcp, Context, Error, Running, Stage};

/// Binds `http.listen` and serves `app` on it. Peer addresses reach the handlers, so that
/// mutating routes can trust loopback callers.
///
/// # Errors
/// The address does not parse or cannot be bound.
pub async fn start(cfg: &HttpConfig, ctx: &mut Context, app: Router) -> Result<Running, Error> {
    let (listener, local) = bind_tcp("HTTP listener", "http.listen", &cfg.listen).await?;
    tracing::info!(component = "http", addr = %local, "listening");
    let token = ctx.shutdown.token(Stage::Http);
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    ctx.shutdown.spawn(Stage::Http, async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
        {
            tracing::error!(component = "http", error = %e, "HTTP server failed");
        }
    });
    Ok(Running::ok("http", Stage::Http, local.to_string(), ()))
}
