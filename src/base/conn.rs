//! Connections of the HTTP servers (the HTTP API, OTLP/HTTP, OTLP/gRPC), accepted through the
//! one accept loop (`base::accept`) with the same bounds on each: at most `max_connections`
//! at once and `max_connections_per_peer` from one IP (over either: closed at once, counted),
//! the TLS handshake within `header_read_timeout`, and a connection on which no byte moves
//! either way for `idle_timeout` closed ([`Idle`]). What runs on an admitted connection is a
//! [`Protocol`]: hyper's HTTP/1 (`base::serve`) or a hand-off to tonic ([`Incoming`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::accept;
pub use super::idle::Idle;
use super::lock;
use super::metrics::{Collect, Families, Kind};

/// The bounds of one HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections from one IP address at once.
    pub max_connections_per_peer: usize,
    /// Time for the TLS handshake, and (HTTP/1) for a request's head to arrive in full.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    pub idle_timeout: Duration,
    /// Time for the service to produce a response's head; `None`: the routes bound it.
    pub request_timeout: Option<Duration>,
    /// Largest request head (request line and headers), bytes.
    pub max_header_bytes: usize,
    /// Largest request body, bytes; `None`: the routes bound it.
    pub max_body_bytes: Option<usize>,
}

/// One server's connection counts, as `tallyd_http_*{server}` families.
pub struct Stats {
    server: &'static str,
    active: AtomicU64,
    accepted: AtomicU64,
    rejected_max: AtomicU64,
    rejected_peer: AtomicU64,
    rejected_tls: AtomicU64,
    timeout_header: AtomicU64,
    timeout_idle: AtomicU64,
    request_timeout: AtomicU64,
    body_too_large: AtomicU64,
    accept_errors: AtomicU64,
}

/// What is counted, for [`Stats::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A request head begun but not received in full within `header_read_timeout`.
    HeaderTimeout,
    /// No request begun within the timeout (a fresh or keep-alive connection left idle).
    IdleTimeout,
    /// A request not answered within `request_timeout`.
    RequestTimeout,
    /// A body over `max_body_bytes` (declared in `Content-Length`).
    BodyTooLarge,
}

impl Stats {
    /// Counts for the server named `server` (`http`, `otlp_http`, `otlp_grpc`).
    pub fn new(server: &'static str) -> Arc<Stats> {
        let z = || AtomicU64::new(0);
        Arc::new(Stats {
            server,
            active: z(),
            accepted: z(),
            rejected_max: z(),
            rejected_peer: z(),
            rejected_tls: z(),
            timeout_header: z(),
            timeout_idle: z(),
            request_timeout: z(),
            body_too_large: z(),
            accept_errors: z(),
        })
    }

    /// The server's name.
    pub fn server(&self) -> &'static str {
        self.server
    }

    /// Counts `e`.
    pub fn count(&self, e: Event) {
        let a = match e {
            Event::HeaderTimeout => &self.timeout_header,
            Event::IdleTimeout => &self.timeout_idle,
            Event::RequestTimeout => &self.request_timeout,
            Event::BodyTooLarge => &self.body_too_large,
        };
        a.fetch_add(1, Relaxed);
    }
}

impl Collect for Stats {
    fn collect(&self, out: &mut Families) {
        let g = |a: &AtomicU64| a.load(Relaxed) as f64;
        let s = [("server", self.server)];
        out.family(
            Kind::Gauge,
            "tallyd_http_connections_active",
            "Open connections of each HTTP server.",
        )
        .sample(&s, g(&self.active));
        out.counter(
            "tallyd_http_connections",
            "Connections each HTTP server accepted and served.",
        )
        .sample(&s, g(&self.accepted));
        let f = out.counter(
            "tallyd_http_connections_rejected",
            "Connections closed unserved: over max_connections, over max_connections_per_peer, or a failed TLS handshake.",
        );
        for (reason, a) in [
            ("max_connections", &self.rejected_max),
            ("max_connections_per_peer", &self.rejected_peer),
            ("tls_handshake", &self.rejected_tls),
        ] {
            f.sample(&[("server", self.server), ("reason", reason)], g(a));
        }
        let f = out.counter(
            "tallyd_http_connections_timed_out",
            "Connections closed for header_read_timeout (no complete request head) or idle_timeout (no byte moved).",
        );
        for (reason, a) in [
            ("header_read", &self.timeout_header),
            ("idle", &self.timeout_idle),
        ] {
            f.sample(&[("server", self.server), ("reason", reason)], g(a));
        }
        let f = out.counter(
            "tallyd_http_requests_rejected",
            "Requests answered by the server itself: 503 after request_timeout, 413 over max_body_bytes.",
        );
        for (reason, a) in [
            ("request_timeout", &self.request_timeout),
            ("body_too_large", &self.body_too_large),
        ] {
            f.sample(&[("server", self.server), ("reason", reason)], g(a));
        }
        out.counter(
            "tallyd_http_accept_errors",
            "Failed accept calls (out of descriptors and the like).",
        )
        .sample(&s, g(&self.accept_errors));
    }
}

/// Open connections per peer IP, bounded by `max`.
struct PerPeer {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A peer's connection slot, given back when dropped.
pub struct PeerSlot {
    peers: Arc<PerPeer>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.peers.open);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl PerPeer {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut open = lock(&self.open);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: Arc::clone(self),
            ip,
        })
    }
}

/// An admitted connection: plain or TLS, with its idle timeout, its peer slot, and (when
/// handed to tonic) what tells the accept loop it has ended.
pub struct Conn {
    stream: Stream,
    peer: SocketAddr,
    partial: Arc<AtomicBool>,
    _slot: PeerSlot,
    _done: Option<oneshot::Sender<()>>,
}

enum Stream {
    Plain(Idle<TcpStream>),
    Tls(Box<TlsStream<Idle<TcpStream>>>),
}

impl Conn {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether bytes arrived since the server last wrote: a request is being received.
    pub fn receiving(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.partial)
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().stream {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// What runs on an admitted connection.
pub trait Protocol: Send + Sync + 'static {
    /// Serves `conn` until it ends; on `cancel`, finishes what is in flight and closes.
    fn serve(&self, conn: Conn, cancel: CancellationToken) -> impl Future<Output = ()> + Send;
}

/// The accept loop's handler for one HTTP server.
struct Server<P> {
    limits: Limits,
    stats: Arc<Stats>,
    peers: Arc<PerPeer>,
    tls: Option<TlsAcceptor>,
    protocol: P,
}

impl<P: Protocol> accept::Handler for Server<P> {
    type Admit = PeerSlot;

    fn admit(&self, peer: SocketAddr) -> Option<PeerSlot> {
        let slot = self.peers.take(peer.ip());
        if slot.is_none() {
            self.stats.rejected_peer.fetch_add(1, Relaxed);
            tracing::debug!(server = self.stats.server, %peer, "connection refused: max_connections_per_peer reached");
        }
        slot
    }

    fn refused(&self, peer: SocketAddr, _slot: PeerSlot) {
        self.stats.rejected_max.fetch_add(1, Relaxed);
        tracing::debug!(server = self.stats.server, %peer, "connection refused: max_connections reached");
    }

    fn accepted(&self, _peer: SocketAddr) {
        self.stats.accepted.fetch_add(1, Relaxed);
    }

    fn accept_failed(&self, error: &io::Error) {
        self.stats.accept_errors.fetch_add(1, Relaxed);
        tracing::warn!(server = self.stats.server, %error, "accept failed");
    }

    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        slot: PeerSlot,
        cancel: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        self.stats.active.fetch_add(1, Relaxed);
        let idle = Idle::new(stream, self.limits.idle_timeout, Arc::clone(&self.stats));
        let partial = Arc::clone(&idle.partial);
        let stream = match &self.tls {
            None => Some(Stream::Plain(idle)),
            Some(tls) => {
                let hs = tokio::time::timeout(self.limits.header_read_timeout, tls.accept(idle));
                let done = tokio::select! {
                    r = hs => r,
                    () = cancel.cancelled() => Ok(Err(io::Error::other("shutting down"))),
                };
                match done {
                    Ok(Ok(s)) => Some(Stream::Tls(Box::new(s))),
                    Ok(Err(e)) => {
                        self.stats.rejected_tls.fetch_add(1, Relaxed);
                        tracing::debug!(server = self.stats.server, %peer, error = %e, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        self.stats.rejected_tls.fetch_add(1, Relaxed);
                        tracing::debug!(server = self.stats.server, %peer, "TLS handshake not done within header_read_timeout");
                        None
                    }
                }
            }
        };
        if let Some(stream) = stream {
            // The handshake's bytes are no request.
            partial.store(false, Relaxed);
            let conn = Conn {
                stream,
                peer,
                partial,
                _slot: slot,
                _done: None,
            };
            self.protocol.serve(conn, cancel).await;
        }
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

/// Accepts on `listener` until `cancel` and runs `protocol` on every admitted connection
/// within `limits`; returns once every connection has ended.
pub async fn run<P: Protocol>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stats: Arc<Stats>,
    protocol: P,
    cancel: CancellationToken,
) {
    let max = limits.max_connections;
    let server = Server {
        peers: Arc::new(PerPeer {
            max: limits.max_connections_per_peer,
            open: Mutex::new(HashMap::new()),
        }),
        limits,
        stats,
        tls: tls.map(TlsAcceptor::from),
        protocol,
    };
    accept::run(Arc::new(server), listener, max, cancel).await;
}

/// Hands admitted connections to a server that takes a stream of them (tonic): each stays
/// counted against the caps until the server drops it.
pub struct Handoff {
    tx: mpsc::Sender<Conn>,
    first_byte: Duration,
    stats: Arc<Stats>,
}

impl Protocol for Handoff {
    async fn serve(&self, mut conn: Conn, cancel: CancellationToken) {
        // HTTP/2 has no header timer: a plain connection must send its first bytes (the
        // preface) within `first_byte`, else it is closed before the server sees it. (A TLS
        // one has done its handshake in that time already.)
        if let Stream::Plain(idle) = &conn.stream {
            // `readable` may wake spuriously; a peek waits for a byte (or EOF) for real.
            let mut byte = [0u8; 1];
            let wait = tokio::time::timeout(self.first_byte, idle.inner.peek(&mut byte));
            tokio::select! {
                r = wait => match r {
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(_) => return,
                    Err(_) => {
                        self.stats.count(Event::IdleTimeout);
                        return;
                    }
                },
                () = cancel.cancelled() => return,
            }
        }
        let (done, ended) = oneshot::channel();
        conn._done = Some(done);
        tokio::select! {
            sent = self.tx.send(conn) => if sent.is_err() { return },
            () = cancel.cancelled() => return,
        }
        // The sender is dropped with the connection.
        let _ = ended.await;
    }
}

/// The connections a [`Handoff`] passes on, as a stream of `T` (the server's own wrapper).
pub struct Incoming<T> {
    rx: mpsc::Receiver<Conn>,
    wrap: fn(Conn) -> T,
}

/// A hand-off and the stream it feeds; `wrap` makes each connection what the server takes.
/// A plain connection that sends nothing within `first_byte` is closed and counted in
/// `stats` (as idle).
pub fn handoff<T>(
    wrap: fn(Conn) -> T,
    first_byte: Duration,
    stats: Arc<Stats>,
) -> (Handoff, Incoming<T>) {
    let (tx, rx) = mpsc::channel(64);
    (
        Handoff {
            tx,
            first_byte,
            stats,
        },
        Incoming { rx, wrap },
    )
}

impl<T> futures_core::Stream for Incoming<T> {
    type Item = io::Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let wrap = self.wrap;
        self.rx.poll_recv(cx).map(|c| c.map(|c| Ok(wrap(c))))
    }
}

/// The checks `[http]` and `[otlp]` share: caps positive, the per-peer cap within the cap,
/// the head limit at least what hyper needs (8 KiB).
pub fn check_limits(
    section: &str,
    max_connections: usize,
    per_peer: usize,
    max_header_bytes: usize,
) -> Result<(), super::error::ConfigError> {
    super::error::check_positive(
        &format!("{section}.max_connections"),
        max_connections as u64,
    )?;
    super::error::check_positive(
        &format!("{section}.max_connections_per_peer"),
        per_peer as u64,
    )?;
    if per_peer > max_connections {
        return Err(super::error::ConfigError::invalid(
            format!("{section}.max_connections_per_peer"),
            format!(" = {per_peer} is over {section}.max_connections = {max_connections}"),
        ));
    }
    if !(8192..=1 << 20).contains(&max_header_bytes) {
        return Err(super::error::ConfigError::invalid(
            format!("{section}.max_header_bytes"),
            format!(" = {max_header_bytes} must be between 8192 and 1048576"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
