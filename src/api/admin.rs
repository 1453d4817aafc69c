//! The one admin rule, applied to every route that changes state (queue dead-letter and
//! force-process, the alert test notification) and to every read-only view that is not in
//! `http.public_routes` (by default only `/health*` and `/metrics` are public; the GPS views,
//! the queue views and `/api/alerts` show device positions, peer addresses, endpoints and
//! errors):
//!
//! - a loopback peer (`127.0.0.0/8`, `::1`, `::ffff:127.0.0.0/104`) may always call them,
//!   unless `http.trust_loopback = false` (a proxy on the same host makes every request
//!   loopback); forwarding headers such as `X-Forwarded-For` are never read;
//! - any other peer needs `Authorization: Bearer <http.admin_token>`, compared in constant
//!   time; whitespace around the presented and the configured token is ignored;
//! - with no token configured (empty or blank) they are loopback-only: other peers get 403,
//!   since no credential could help; with a token configured, a missing or wrong one gets 401
//!   with `WWW-Authenticate: Bearer`.
//!
//! Refusals are counted (`tallyd_http_requests_denied_total{reason}`) and logged at most once
//! a second, with the peer and the path, never a header.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;

use super::config::RouteGroup;
use super::error;
use crate::base::auth::constant_time_eq;
use crate::base::metrics::{Collect, Families};

/// The admin rule: the configured token (trimmed; empty = loopback only), the public route
/// groups and the refusal counts. Cheap to clone; register it with the telemetry for its
/// counts.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    token: Box<str>,
    trust_loopback: bool,
    /// Bit `g as u8` set: group `g` is public.
    public: u8,
    loopback_only: AtomicU64,
    bad_token: AtomicU64,
    last_log_sec: AtomicI64,
}

/// Why a caller may not call a protected route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// Not on loopback, and no token is configured.
    LoopbackOnly,
    /// Not on loopback, and the bearer token is missing or wrong.
    BadToken,
}

fn bit(g: RouteGroup) -> u8 {
    1 << (g as u8)
}

impl Admin {
    /// The rule for `http.admin_token = token` and `http.public_routes = public`, loopback
    /// peers trusted.
    pub fn new(token: &str, public: &[RouteGroup]) -> Admin {
        Admin::with_loopback(token, public, true)
    }

    /// The rule for `[http]` `admin_token`, `public_routes` and `trust_loopback`.
    pub fn with_loopback(token: &str, public: &[RouteGroup], trust_loopback: bool) -> Admin {
        Admin {
            inner: Arc::new(Inner {
                token: token.trim().into(),
                trust_loopback,
                public: public.iter().fold(0, |m, g| m | bit(*g)),
                loopback_only: AtomicU64::new(0),
                bad_token: AtomicU64::new(0),
                last_log_sec: AtomicI64::new(i64::MIN),
            }),
        }
    }

    /// Whether every peer may call the routes of `group` without the token.
    pub(super) fn is_public(&self, group: RouteGroup) -> bool {
        self.inner.public & bit(group) != 0
    }

    /// Whether `peer` (unknown: not loopback) sending `headers` may call a protected route.
    pub(super) fn check(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
    ) -> Result<(), Denied> {
        let loopback = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
        if loopback && self.inner.trust_loopback {
            return Ok(());
        }
        if self.inner.token.is_empty() {
            return Err(Denied::LoopbackOnly);
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), self.inner.token.as_bytes()) {
            Ok(())
        } else {
            Err(Denied::BadToken)
        }
    }

    /// Counts a refusal and logs it at most once a second.
    fn denied(&self, why: Denied, peer: Option<SocketAddr>, method: &str, path: &str) {
        let (counter, reason) = match why {
            Denied::LoopbackOnly => (&self.inner.loopback_only, "loopback_only"),
            Denied::BadToken => (&self.inner.bad_token, "bad_token"),
        };
        counter.fetch_add(1, Relaxed);
        let sec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if self.inner.last_log_sec.swap(sec, Relaxed) != sec {
            let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            tracing::warn!(
                component = "http",
                %peer,
                method,
                path,
                reason,
                "refused a request to a protected route (further refusals this second are \
                 counted in tallyd_http_requests_denied_total, not logged)"
            );
        }
    }
}

impl Collect for Admin {
    fn collect(&self, out: &mut Families) {
        out.counter(
            "tallyd_http_requests_denied",
            "Requests to protected HTTP routes refused by the admin rule, by reason: \
             loopback_only (no http.admin_token set), bad_token (missing or wrong bearer).",
        )
        .by(
            "reason",
            [
                (
                    "loopback_only",
                    self.inner.loopback_only.load(Relaxed) as f64,
                ),
                ("bad_token", self.inner.bad_token.load(Relaxed) as f64),
            ],
        );
    }
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::LoopbackOnly => error(
                StatusCode::FORBIDDEN,
                "this endpoint is loopback-only unless http.admin_token is set",
            ),
            Denied::BadToken => {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "this endpoint needs Authorization: Bearer <http.admin_token> (or a loopback peer)",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
        }
    }
}

/// A `POST` route behind the admin rule, always. The rule runs before the handler and its
/// extractors (an unauthorised caller learns nothing from parameter errors); another method
/// still gets 405.
pub(super) fn post<H, T, S>(handler: H, admin: &Admin) -> MethodRouter<S>
where
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    axum::routing::post(handler).route_layer(middleware::from_fn_with_state(admin.clone(), require))
}

/// A read-only `GET` route of `group`: open to every peer when the group is in
/// `http.public_routes`, behind the admin rule otherwise.
pub(super) fn get<H, T, S>(handler: H, admin: &Admin, group: RouteGroup) -> MethodRouter<S>
where
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    let r = axum::routing::get(handler);
    if admin.is_public(group) {
        r
    } else {
        r.route_layer(middleware::from_fn_with_state(admin.clone(), require))
    }
}

/// Every route of `router` (read-only views of `group`), behind the admin rule unless the group
/// is public.
pub(super) fn guard(router: Router, admin: &Admin, group: RouteGroup) -> Router {
    if admin.is_public(group) {
        router
    } else {
        router.route_layer(middleware::from_fn_with_state(admin.clone(), require))
    }
}

async fn require(State(admin): State<Admin>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match admin.check(peer, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(denied) => {
            admin.denied(denied, peer, req.method().as_str(), req.uri().path());
            denied.into_response()
        }
    }
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
