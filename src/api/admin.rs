//! The one admin rule, applied to every route that changes state (queue dead-letter and
//! force-process, the alert test notification):
//!
//! - a loopback peer (`127.0.0.0/8`, `::1`, `::ffff:127.0.0.0/104`) may always call them;
//! - any other peer needs `Authorization: Bearer <http.admin_token>`, compared in constant
//!   time; whitespace around the presented and the configured token is ignored;
//! - with no token configured (empty or blank) they are loopback-only: other peers get 403,
//!   since no credential could help; with a token configured, a missing or wrong one gets 401
//!   with `WWW-Authenticate: Bearer`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use super::error;
use crate::base::auth::constant_time_eq;

/// The configured admin token, trimmed; empty = loopback only.
#[derive(Clone)]
pub(super) struct Admin {
    token: Arc<str>,
}

/// Why a caller may not change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// Not on loopback, and no token is configured.
    LoopbackOnly,
    /// Not on loopback, and the bearer token is missing or wrong.
    BadToken,
}

impl Admin {
    /// The rule for `http.admin_token = token`.
    pub(super) fn new(token: &str) -> Admin {
        Admin {
            token: token.trim().into(),
        }
    }

    /// Whether `peer` (unknown: not loopback) sending `headers` may call a mutating route.
    pub(super) fn check(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
    ) -> Result<(), Denied> {
        if peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) {
            return Ok(());
        }
        if self.token.is_empty() {
            return Err(Denied::LoopbackOnly);
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), self.token.as_bytes()) {
            Ok(())
        } else {
            Err(Denied::BadToken)
        }
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

/// A `POST` route behind the admin rule. The rule runs before the handler and its extractors
/// (an unauthorised caller learns nothing from parameter errors); another method still gets 405.
pub(super) fn post<H, T, S>(handler: H, admin: &Admin) -> MethodRouter<S>
where
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    axum::routing::post(handler).route_layer(middleware::from_fn_with_state(admin.clone(), require))
}

async fn require(State(admin): State<Admin>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match admin.check(peer, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(denied) => denied.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Extension, Router};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("addr"))
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().expect("header"));
        h
    }

    #[test]
    fn loopback_needs_no_token() {
        let none = HeaderMap::new();
        for peer in [
            "127.0.0.1:5000",
            "127.8.9.1:1",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert_eq!(Admin::new("").check(addr(peer), &none), Ok(()), "{peer}");
            assert_eq!(
                Admin::new("s3cret").check(addr(peer), &none),
                Ok(()),
                "{peer}"
            );
            assert_eq!(
                Admin::new("s3cret").check(addr(peer), &bearer("Bearer nope")),
                Ok(()),
                "{peer}"
            );
        }
    }

    #[test]
    fn without_a_token_other_peers_are_forbidden() {
        let far = addr("192.0.2.7:5000");
        for admin in [Admin::new(""), Admin::new("  \n")] {
            assert_eq!(
                admin.check(far, &HeaderMap::new()),
                Err(Denied::LoopbackOnly)
            );
            // Not even an empty or blank bearer matches an unset token.
            assert_eq!(
                admin.check(far, &bearer("Bearer ")),
                Err(Denied::LoopbackOnly)
            );
            assert_eq!(
                admin.check(far, &bearer("Bearer x")),
                Err(Denied::LoopbackOnly)
            );
            assert_eq!(
                admin.check(None, &HeaderMap::new()),
                Err(Denied::LoopbackOnly)
            );
        }
        let r = Denied::LoopbackOnly.into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn other_peers_need_the_right_bearer_token() {
        let admin = Admin::new("s3cret");
        let far = addr("10.1.2.3:5000");
        assert_eq!(admin.check(far, &HeaderMap::new()), Err(Denied::BadToken));
        assert_eq!(
            admin.check(far, &bearer("Bearer nope")),
            Err(Denied::BadToken)
        );
        assert_eq!(
            admin.check(far, &bearer("Bearer s3cre")),
            Err(Denied::BadToken)
        );
        assert_eq!(
            admin.check(far, &bearer("Bearer s3cret2")),
            Err(Denied::BadToken)
        );
        assert_eq!(
            admin.check(far, &bearer("Basic s3cret")),
            Err(Denied::BadToken)
        );
        assert_eq!(admin.check(far, &bearer("s3cret")), Err(Denied::BadToken));
        assert_eq!(admin.check(far, &bearer("Bearer s3cret")), Ok(()));
        // An unknown peer is not loopback.
        assert_eq!(admin.check(None, &HeaderMap::new()), Err(Denied::BadToken));
        assert_eq!(admin.check(None, &bearer("Bearer s3cret")), Ok(()));
        let r = Denied::BadToken.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
    }

    #[test]
    fn whitespace_around_either_token_is_ignored() {
        let far = addr("10.1.2.3:5000");
        assert_eq!(
            Admin::new("s3cret").check(far, &bearer("Bearer  s3cret ")),
            Ok(())
        );
        assert_eq!(
            Admin::new(" s3cret\n").check(far, &bearer("Bearer s3cret")),
            Ok(())
        );
        assert_eq!(
            Admin::new("s3cret").check(far, &bearer("Bearer s3 cret")),
            Err(Denied::BadToken)
        );
    }

    /// Serves a router whose one route is `POST /x` behind the rule, as if every request came
    /// from `peer`, and returns the status code of `method /x` with `auth`.
    async fn status(token: &str, peer: &str, method: &str, auth: Option<&str>) -> u16 {
        let peer: SocketAddr = peer.parse().expect("addr");
        let app = Router::new()
            .route("/x", post(|| async { "done" }, &Admin::new(token)))
            .layer(Extension(ConnectInfo(peer)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} /x HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.expect("read");
        server.abort();
        answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn the_rule_guards_the_route_and_not_other_methods() {
        assert_eq!(status("", "127.0.0.1:1", "POST", None).await, 200);
        assert_eq!(status("", "192.0.2.7:1", "POST", None).await, 403);
        assert_eq!(status("tok", "192.0.2.7:1", "POST", None).await, 401);
        assert_eq!(
            status("tok", "192.0.2.7:1", "POST", Some("Bearer no")).await,
            401
        );
        assert_eq!(
            status("tok", "192.0.2.7:1", "POST", Some("Bearer tok")).await,
            200
        );
        // Another method is answered 405 before the rule runs.
        assert_eq!(status("", "192.0.2.7:1", "GET", None).await, 405);
    }
}
