//! The one HTTP/1 server of the HTTP API and OTLP/HTTP: hyper on connections accepted by
//! `base::conn` (caps, TLS, idle timeout), with the request-level bounds axum's own `serve`
//! does not have: the request head within `header_read_timeout` and at most
//! `max_header_bytes` (hyper: 431 beyond), a body over `max_body_bytes` refused with 413 (a
//! declared length before the service runs; a streamed one cut at the limit), and a response
//! head within `request_timeout` (503 after it). The service is any tower service (an axum
//! `Router`); each request carries the peer's address as the extension `peer(addr)` makes.
//!
//! hyper starts the header timer when it waits for a request head, which includes the wait
//! between two requests of a keep-alive connection: an idle HTTP/1 connection is closed after
//! `header_read_timeout` already (counted as `idle` when no byte of a next request came).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::conn::{self, Conn, Event, Limits, Protocol, Stats};

/// A boxed error, what bodies and services may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body a served request carries: hyper's, cut at `max_body_bytes`.
pub type RequestBody = Limited<Incoming>;

/// hyper's HTTP/1 on each connection, calling `service` for each request.
struct Http1<S, E> {
    limits: Limits,
    stats: Arc<Stats>,
    service: S,
    peer: fn(SocketAddr) -> E,
}

/// Serves `service` on `listener` within `limits` (TLS when `tls` is set) until `cancel`;
/// then connections finish the request in flight and close, and this returns when the last
/// has. `peer` makes the request extension that carries the peer address.
pub async fn http<S, B, E>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stats: Arc<Stats>,
    service: S,
    peer: fn(SocketAddr) -> E,
    cancel: CancellationToken,
) where
    S: tower_service::Service<Request<RequestBody>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    E: Clone + Send + Sync + 'static,
{
    let protocol = Http1 {
        limits: limits.clone(),
        stats: Arc::clone(&stats),
        service,
        peer,
    };
    conn::run(listener, limits, tls, stats, protocol, cancel).await;
}

/// A response the server writes itself; the connection closes after it.
fn own<B>(status: StatusCode, text: &'static str) -> Response<Either<B, Full<Bytes>>> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// One request: the body limit, the service, the request timeout.
async fn respond<S, B>(
    mut service: S,
    stats: Arc<Stats>,
    max_body: Option<usize>,
    timeout: Option<std::time::Duration>,
    req: Request<Incoming>,
) -> Result<Response<Either<B, Full<Bytes>>>, BoxError>
where
    S: tower_service::Service<Request<RequestBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(max), Some(n)) = (max_body, declared) {
        if n > max as u64 {
            stats.count(Event::BodyTooLarge);
            return Ok(own(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body larger than max_body_bytes\n",
            ));
        }
    }
    let req = req.map(|b| Limited::new(b, max_body.unwrap_or(usize::MAX)));
    if let Err(e) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
        return Err(e.into());
    }
    let call = service.call(req);
    let response = match timeout {
        None => call.await,
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(r) => r,
            Err(_) => {
                stats.count(Event::RequestTimeout);
                return Ok(own(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request not answered within request_timeout\n",
                ));
            }
        },
    };
    match response {
        Ok(r) => Ok(r.map(Either::Left)),
        Err(e) => Err(e.into()),
    }
}

impl<S, B, E> Protocol for Http1<S, E>
where
    S: tower_service::Service<Request<RequestBody>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    E: Clone + Send + Sync + 'static,
{
    async fn serve(&self, conn: Conn, cancel: CancellationToken) {
        let peer = conn.peer();
        let receiving = conn.receiving();
        let ext = (self.peer)(peer);
        let service = self.service.clone();
        let stats = Arc::clone(&self.stats);
        let (max_body, timeout) = (self.limits.max_body_bytes, self.limits.request_timeout);
        let handle = move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ext.clone());
            respond(service.clone(), Arc::clone(&stats), max_body, timeout, req)
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_header_size(self.limits.max_header_bytes)
            .max_buf_size(self.limits.max_header_bytes.max(8192) + 8192)
            .keep_alive(true);
        let served =
            builder.serve_connection(TokioIo::new(conn), hyper::service::service_fn(handle));
        let mut served = std::pin::pin!(served);
        let result = tokio::select! {
            r = served.as_mut() => r,
            () = cancel.cancelled() => {
                served.as_mut().graceful_shutdown();
                served.await
            }
        };
        if let Err(e) = result {
            if e.is_timeout() {
                // hyper's header timer also runs while a keep-alive connection waits for its
                // next request: only a request begun and not finished is a slow header.
                self.stats
                    .count(if receiving.load(std::sync::atomic::Ordering::Relaxed) {
                        Event::HeaderTimeout
                    } else {
                        Event::IdleTimeout
                    });
            }
            tracing::debug!(server = self.stats.server(), %peer, error = %e, "HTTP connection ended with an error");
        }
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
