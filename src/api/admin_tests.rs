//! Unit tests of the admin rule (`admin.rs`).

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
        assert_eq!(
            Admin::new("", &[]).check(addr(peer), &none),
            Ok(()),
            "{peer}"
        );
        assert_eq!(
            Admin::new("s3cret", &[]).check(addr(peer), &none),
            Ok(()),
            "{peer}"
        );
        assert_eq!(
            Admin::new("s3cret", &[]).check(addr(peer), &bearer("Bearer nope")),
            Ok(()),
            "{peer}"
        );
    }
}

#[test]
fn loopback_can_be_untrusted() {
    let admin = Admin::with_loopback("s3cret", &[], false);
    for peer in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
        assert_eq!(
            admin.check(addr(peer), &HeaderMap::new()),
            Err(Denied::BadToken),
            "{peer}"
        );
        assert_eq!(
            admin.check(addr(peer), &bearer("Bearer s3cret")),
            Ok(()),
            "{peer}"
        );
    }
    // Forwarding headers are no identity.
    let mut h = bearer("Bearer nope");
    h.insert("x-forwarded-for", "127.0.0.1".parse().expect("header"));
    assert_eq!(
        Admin::new("s3cret", &[]).check(addr("10.0.0.1:1"), &h),
        Err(Denied::BadToken)
    );
}

#[test]
fn without_a_token_other_peers_are_forbidden() {
    let far = addr("192.0.2.7:5000");
    for admin in [Admin::new("", &[]), Admin::new("  \n", &[])] {
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
    let admin = Admin::new("s3cret", &[]);
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
        Admin::new("s3cret", &[]).check(far, &bearer("Bearer  s3cret ")),
        Ok(())
    );
    assert_eq!(
        Admin::new(" s3cret\n", &[]).check(far, &bearer("Bearer s3cret")),
        Ok(())
    );
    assert_eq!(
        Admin::new("s3cret", &[]).check(far, &bearer("Bearer s3 cret")),
        Err(Denied::BadToken)
    );
}

/// Serves `app` as if every request came from `peer`, and returns the status code of
/// `method path` with `auth`.
async fn answer(app: Router, peer: &str, method: &str, path: &str, auth: Option<&str>) -> u16 {
    let peer: SocketAddr = peer.parse().expect("addr");
    let app = app.layer(Extension(ConnectInfo(peer)));
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
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
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

/// The status code of `method /x` with `auth` from `peer`, `/x` being a `POST` route behind
/// the rule.
async fn status(token: &str, peer: &str, method: &str, auth: Option<&str>) -> u16 {
    let app = Router::new().route("/x", post(|| async { "done" }, &Admin::new(token, &[])));
    answer(app, peer, method, "/x", auth).await
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

/// A router with a view of every route group, each built the way the API builds it.
fn views(admin: &Admin) -> Router {
    let mut app = Router::new();
    for (i, g) in RouteGroup::ALL.into_iter().enumerate() {
        if i % 2 == 0 {
            app = app.route(&format!("/v{i}"), get(|| async { "view" }, admin, g));
        } else {
            let r = Router::new().route(&format!("/v{i}"), axum::routing::get(|| async { "v" }));
            app = app.merge(guard(r, admin, g));
        }
    }
    app
}

#[tokio::test]
async fn views_are_protected_unless_their_group_is_public() {
    let far = "192.0.2.7:1";
    let public = [RouteGroup::Health, RouteGroup::Metrics];
    let admin = Admin::new("tok", &public);
    for (i, g) in RouteGroup::ALL.into_iter().enumerate() {
        let path = format!("/v{i}");
        let open = public.contains(&g);
        let want = if open { 200 } else { 401 };
        assert_eq!(
            answer(views(&admin), far, "GET", &path, None).await,
            want,
            "{g:?}"
        );
        let wrong = answer(views(&admin), far, "GET", &path, Some("Bearer tok2")).await;
        assert_eq!(wrong, want, "{g:?}");
        let right = answer(views(&admin), far, "GET", &path, Some("Bearer tok")).await;
        assert_eq!(right, 200, "{g:?}");
        let local = answer(views(&admin), "127.0.0.1:1", "GET", &path, None).await;
        assert_eq!(local, 200, "{g:?}");
    }
    // Every protected group refused twice (no token, wrong token).
    let protected = (RouteGroup::ALL.len() - public.len()) as u64;
    let fams = crate::base::metrics::collect_one(&admin);
    let text = format!("{fams:?}");
    assert!(text.contains("tallyd_http_requests_denied"), "{text}");
    assert_eq!(admin.inner.bad_token.load(Relaxed), 2 * protected);
    assert_eq!(admin.inner.loopback_only.load(Relaxed), 0);

    // No token: protected views are loopback-only (403); public ones stay open.
    let admin = Admin::new("", &[RouteGroup::Gps]);
    for (i, g) in RouteGroup::ALL.into_iter().enumerate() {
        let path = format!("/v{i}");
        let want = if g == RouteGroup::Gps { 200 } else { 403 };
        assert_eq!(
            answer(views(&admin), far, "GET", &path, None).await,
            want,
            "{g:?}"
        );
    }
    assert_eq!(
        admin.inner.loopback_only.load(Relaxed),
        RouteGroup::ALL.len() as u64 - 1
    );
}
