//! `POST /admin/reload`: re-reads the configuration file and the environment, as SIGHUP does,
//! and answers with the outcome (the body `/health` shows as `last_reload`): 200 when the new
//! configuration runs (`restart_required` lists the changed keys that keep their running
//! value), 422 when it was rejected (`error` is what `check-config` says) or a component could
//! not take it. Behind the admin rule: it changes state.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;

use super::admin::{self, Admin};
use super::{error, json};
use crate::component::reload::Reloader;

/// The reload route.
pub(super) fn router(reloader: Reloader, admin: &Admin) -> Router {
    Router::new()
        .route("/admin/reload", admin::post(reload, admin))
        .with_state(reloader)
}

async fn reload(State(r): State<Reloader>) -> Response {
    match r.reload("api").await {
        Some(o) if o.result == "ok" => json(StatusCode::OK, &o),
        Some(o) => json(StatusCode::UNPROCESSABLE_ENTITY, &o),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "tallyd is stopping"),
    }
}
