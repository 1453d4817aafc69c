//! The GPS TCP server: accept loop, per-connection decoding, acknowledgements and limits.
//!
//! `Server::run` owns the listener, the connection permits (`gps.max_connections`) and the
//! abuse [`Guard`] checks at accept. Each connection runs one `Connection`: it detects the
//! protocol from the first bytes, decodes frames with that protocol's pure decoder, registers
//! the device, delivers valid fixes as points and only then writes the acknowledgement.
//!
//! What a hostile peer can cost is bounded: its buffer never exceeds `gps.max_frame_bytes`
//! (binary) or `gps.max_line_bytes` (text) plus one read; it must identify itself within
//! `gps.handshake_timeout`, finish any frame it has started within `gps.frame_timeout` (so one
//! byte per second does not keep a slot), and say something every `gps.idle_timeout`. A frame
//! the decoder cannot resynchronise after closes the connection; a bad frame of known length is
//! counted and skipped. Each connection is its own task, so a slow peer slows only itself.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::command::{Cmd, Commands, Link};
use super::detect::{detect, Detect};
use super::fix::{FrameError, Kind, Message, Protocol, Step};
use super::guard::Guard;
use super::metrics::{Close, Failure, GpsStats, UNKNOWN};
use super::nmea::Nmea;
use super::points::{Delivery, Point};
use super::registry::{Pool, Registry};
use super::teltonika::Teltonika;
use super::{gps103, gt06, h02, meitrack, queclink, tk103, watch, GpsConfig};
use crate::base::accept::{self, Handler};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Connection limits and decoder options, from `[gps]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Whether NMEA sentences without `*hh` are refused (`gps.nmea_require_checksum`).
    pub nmea_require_checksum: bool,
    /// Whether fixes the device marks invalid are written too, `valid: false`
    /// (`gps.points_invalid_fixes`).
    pub points_invalid_fixes: bool,
    /// Connections served at once (`gps.max_connections`).
    pub max_connections: usize,
    /// Longest binary frame (`gps.max_frame_bytes`).
    pub max_frame: usize,
    /// Longest text line (`gps.max_line_bytes`).
    pub max_line: usize,
    /// Time a device has to identify itself (`gps.handshake_timeout`).
    pub handshake_timeout: Duration,
    /// Time a started frame may take to complete (`gps.frame_timeout`).
    pub frame_timeout: Duration,
    /// Longest silence of an identified device (`gps.idle_timeout`).
    pub idle_timeout: Duration,
}

impl Limits {
    /// The limits configured in `[gps]`.
    pub fn from_config(c: &GpsConfig) -> Limits {
        Limits {
            nmea_require_checksum: c.nmea_require_checksum,
            points_invalid_fixes: c.points_invalid_fixes,
            max_connections: c.max_connections,
            max_frame: c.max_frame_bytes,
            max_line: c.max_line_bytes,
            handshake_timeout: c.handshake_timeout,
            frame_timeout: c.frame_timeout,
            idle_timeout: c.idle_timeout,
        }
    }
}

/// The GPS listener's connection handler (see [`accept::run`]).
pub struct Server {
    /// Per-connection limits.
    pub limits: Limits,
    /// Abuse policy: per-IP connection limit and blacklist.
    pub guard: Arc<Guard>,
    /// Known devices.
    pub registry: Arc<Registry>,
    /// The `tallyd_gps_*` counters.
    pub stats: Arc<GpsStats>,
    /// Where valid fixes go.
    pub delivery: Delivery,
    /// Commands waiting for devices.
    pub commands: Arc<Commands>,
    /// Numbers the connections, for the command hub.
    pub next_conn: std::sync::atomic::AtomicU64,
}

impl Server {
    /// Accepts until `cancel`, then waits for every connection to end.
    pub async fn run(self: Arc<Self>, listener: TcpListener, cancel: CancellationToken) {
        let max = self.limits.max_connections;
        accept::run(self, listener, max, cancel).await;
    }
}

/// The accept loop's hooks: the [`Guard`] decides at accept and keeps a per-IP count, released
/// when the connection ends.
impl Handler for Server {
    type Admit = ();

    fn admit(&self, peer: SocketAddr) -> Option<()> {
        if let Err(r) = self.guard.admit(peer.ip(), Instant::now(), now_ms()) {
            self.stats.failure(Failure::Refused(r));
            tracing::debug!(component = "gps", %peer, reason = r.as_label(), "connection refused");
            return None;
        }
        Some(())
    }

    fn refused(&self, peer: SocketAddr, _admit: ()) {
        self.guard.release(peer.ip());
        self.stats.failure(Failure::MaxConnections);
    }

    fn accepted(&self, _peer: SocketAddr) {
        self.stats.connections_total.fetch_add(1, Relaxed);
    }

    fn accept_failed(&self, error: &std::io::Error) {
        // Descriptor exhaustion and the like clear up; the loop backs off instead of spinning.
        tracing::warn!(component = "gps", error = %error, "accept failed");
    }

    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        _admit: (),
        cancel: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let conn = Connection::new(&self, stream, peer);
        conn.serve(cancel).await;
        self.guard.release(peer.ip());
    }
}

/// One connection's decoder once its protocol is known: what the read loop calls on the bytes
/// it holds. Public so that the fuzz target drives this one rather than a copy.
#[doc(hidden)]
pub enum Decoder {
    /// Plain NMEA sentences.
    Nmea(Nmea),
    /// H02 text and binary frames.
    H02,
    /// GPS103 (Coban) frames.
    Gps103,
    /// GT06 frames.
    Gt06,
    /// Teltonika AVL packets.
    Teltonika(Teltonika),
    /// TK103 parenthesised frames.
    Tk103,
    /// Queclink @Track frames.
    Queclink,
    /// Meitrack `$$` frames.
    Meitrack,
    /// Watch protocol frames.
    Watch,
}

impl Decoder {
    /// A fresh decoder for protocol `p`.
    pub fn new(p: Protocol) -> Decoder {
        match p {
            Protocol::Nmea => Decoder::Nmea(Nmea::default()),
            Protocol::H02 => Decoder::H02,
            Protocol::Gps103 => Decoder::Gps103,
            Protocol::Gt06 => Decoder::Gt06,
            Protocol::Teltonika => Decoder::Teltonika(Teltonika::default()),
            Protocol::Tk103 => Decoder::Tk103,
            Protocol::Queclink => Decoder::Queclink,
            Protocol::Meitrack => Decoder::Meitrack,
            Protocol::Watch => Decoder::Watch,
            // OsmAnd is HTTP on its own listener (`gps::osmand`) and never detected here;
            // NMEA is the harmless line decoder should a caller ask for it anyway.
            Protocol::Osmand => Decoder::Nmea(Nmea::default()),
        }
    }

    fn protocol(&self) -> Protocol {
        match self {
            Decoder::Nmea(_) => Protocol::Nmea,
            Decoder::H02 => Protocol::H02,
            Decoder::Gps103 => Protocol::Gps103,
            Decoder::Gt06 => Protocol::Gt06,
            Decoder::Teltonika(_) => Protocol::Teltonika,
            Decoder::Tk103 => Protocol::Tk103,
            Decoder::Queclink => Protocol::Queclink,
            Decoder::Meitrack => Protocol::Meitrack,
            Decoder::Watch => Protocol::Watch,
        }
    }

    /// Decodes what `buf` holds at `now_ms` (the receive time, for frames that carry no date).
    pub fn step(&mut self, buf: &[u8], l: &Limits, now_ms: i64) -> Step {
        match self {
            Decoder::Nmea(n) => n.decode(buf, l.max_line, now_ms, l.nmea_require_checksum),
            Decoder::H02 => h02::decode(buf, l.max_line, now_ms),
            Decoder::Gps103 => gps103::decode(buf, l.max_line),
            Decoder::Gt06 => gt06::decode(buf, l.max_frame, now_ms),
            Decoder::Teltonika(t) => t.decode(buf, l.max_frame),
            Decoder::Tk103 => tk103::decode(buf, l.max_line),
            Decoder::Queclink => queclink::decode(buf, l.max_line),
            Decoder::Meitrack => meitrack::decode(buf, l.max_line),
            Decoder::Watch => watch::decode(buf, l.max_line),
        }
    }

    /// The most bytes a frame in progress may take.
    pub fn limit(&self, l: &Limits) -> usize {
        match self {
            Decoder::Gt06 | Decoder::Teltonika(_) => l.max_frame,
            _ => l.max_line,
        }
    }
}

/// How a connection ended.
enum End {
    /// Before a device identified itself.
    Failed(Failure),
    Closed(Close),
}

/// One device connection: its socket, buffer, decoder and identity.
struct Connection<'a> {
    server: &'a Server,
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    decoder: Option<Decoder>,
    device: Option<String>,
    /// The registry pool `device` is in.
    pool: Pool,
    /// Index into `GpsStats::active` this connection is counted under.
    slot: usize,
    /// When the bytes now at the head of the buffer started arriving.
    partial_since: Instant,
    /// This connection's end of the command hub (`command::Link`).
    cmds: Link,
}

/// What woke the read loop.
enum Woke {
    Shutdown,
    Read(Result<std::io::Result<usize>, tokio::time::error::Elapsed>),
    Command(Arc<Cmd>),
}

impl<'a> Connection<'a> {
    fn new(server: &'a Server, stream: TcpStream, peer: SocketAddr) -> Connection<'a> {
        server.stats.active[UNKNOWN].fetch_add(1, Relaxed);
        Connection {
            server,
            stream,
            peer,
            buf: Vec::new(),
            decoder: None,
            device: None,
            pool: Pool::Identified,
            slot: UNKNOWN,
            partial_since: Instant::now(),
            cmds: Link::default(),
        }
    }

    fn identified(&self) -> bool {
        self.device.is_some() || matches!(self.decoder, Some(Decoder::Nmea(_)))
    }

    async fn serve(mut self, cancel: CancellationToken) {
        let end = self.run(cancel).await;
        let s = &self.server.stats;
        match end {
            End::Failed(f) => s.failure(f),
            End::Closed(c) if !self.identified() => s.failure(match c {
                Close::FrameTimeout | Close::IdleTimeout => Failure::HandshakeTimeout,
                Close::BadStream | Close::Blacklisted => Failure::BadHandshake,
                _ => Failure::ClosedBeforeLogin,
            }),
            End::Closed(c) => s.closed(c),
        }
        if let Some(id) = &self.device {
            self.server.registry.disconnected(id, self.pool);
            self.cmds.detach(&self.server.commands, id);
        }
        s.active[self.slot].fetch_sub(1, Relaxed);
    }

    async fn run(&mut self, cancel: CancellationToken) -> End {
        let l = self.server.limits.clone();
        let start = Instant::now();
        let mut last_read = start;
        loop {
            if let Err(end) = self.process().await {
                return end;
            }
            let limit = self.decoder.as_ref().map_or(l.max_line, |d| d.limit(&l));
            let room = (limit + 1).saturating_sub(self.buf.len()).min(READ_CHUNK);
            if room == 0 {
                return End::Closed(Close::BadStream);
            }
            let deadline = if !self.identified() {
                start + l.handshake_timeout
            } else if !self.buf.is_empty() {
                self.partial_since + l.frame_timeout
            } else {
                last_read + l.idle_timeout
            };
            let was_empty = self.buf.is_empty();
            let old = self.buf.len();
            self.buf.resize(old + room, 0);
            let woke = tokio::select! {
                _ = cancel.cancelled() => Woke::Shutdown,
                Some(c) = self.cmds.next() => Woke::Command(c),
                r = tokio::time::timeout_at(deadline.into(), self.stream.read(&mut self.buf[old..])) => Woke::Read(r),
            };
            let read = match woke {
                Woke::Shutdown => None,
                Woke::Read(r) => Some(r),
                Woke::Command(c) => {
                    self.buf.truncate(old);
                    let (Some(id), Some(d)) = (&self.device, &self.decoder) else {
                        continue;
                    };
                    let (hub, t) = (&self.server.commands, self.server.limits.frame_timeout);
                    let sent = self
                        .cmds
                        .send(hub, &mut self.stream, d.protocol(), id, c, t);
                    if !sent.await {
                        return End::Closed(Close::WriteFailed);
                    }
                    continue;
                }
            };
            let n = match read {
                None => 0,
                Some(Ok(Ok(n))) => n,
                Some(Ok(Err(_))) => 0,
                Some(Err(_)) => {
                    self.buf.truncate(old);
                    return if !self.identified() {
                        End::Failed(Failure::HandshakeTimeout)
                    } else if old > 0 {
                        End::Closed(Close::FrameTimeout)
                    } else {
                        End::Closed(Close::IdleTimeout)
                    };
                }
            };
            self.buf.truncate(old + n);
            if read.is_none() {
                return End::Closed(Close::Shutdown);
            }
            if n == 0 {
                return End::Closed(Close::Eof);
            }
            last_read = Instant::now();
            if was_empty {
                self.partial_since = last_read;
            }
        }
    }

    /// Decodes and handles every whole frame in the buffer.
    async fn process(&mut self) -> Result<(), End> {
        let mut consumed = false;
        loop {
            if self.buf.is_empty() {
                return Ok(());
            }
            let now_ms = now_ms();
            let decoder = match &mut self.decoder {
                Some(d) => d,
                None => match detect(&self.buf) {
                    Detect::Found(p) => {
                        let s = &self.server.stats;
                        s.active[UNKNOWN].fetch_sub(1, Relaxed);
                        s.active[p.index()].fetch_add(1, Relaxed);
                        self.slot = p.index();
                        self.decoder.insert(Decoder::new(p))
                    }
                    Detect::NeedMore if self.buf.len() <= self.server.limits.max_line => {
                        return Ok(())
                    }
                    Detect::NeedMore | Detect::Unknown => {
                        self.server
                            .stats
                            .message(UNKNOWN, Some(FrameError::Malformed), now_ms);
                        self.server
                            .guard
                            .frame(self.peer.ip(), false, Instant::now(), now_ms);
                        return Err(End::Failed(Failure::UnknownProtocol));
                    }
                },
            };
            let protocol = decoder.protocol();
            // A command's answer at the head of the buffer (one only the command layer reads
            // is removed before the decoder runs).
            let answer = self
                .cmds
                .answered(&self.server.commands, protocol, &self.buf);
            if answer > 0 {
                self.buf.drain(..answer.min(self.buf.len()));
                self.server.stats.message(protocol.index(), None, now_ms);
                if let Some(id) = &self.device {
                    let r = &self.server.registry;
                    r.message(id, self.pool, true, None, now_ms);
                }
                consumed = true;
                continue;
            }
            match decoder.step(&self.buf, &self.server.limits, now_ms) {
                Step::Incomplete => {
                    if consumed {
                        self.partial_since = Instant::now();
                    }
                    return Ok(());
                }
                Step::Skip(n) => {
                    self.buf.drain(..n.min(self.buf.len()));
                }
                Step::Fatal(e) => {
                    self.invalid(protocol, e, now_ms);
                    return Err(End::Closed(Close::BadStream));
                }
                Step::Frame { len, msg } => {
                    self.buf.drain(..len.min(self.buf.len()));
                    consumed = true;
                    match msg {
                        Ok(m) => self.handle(protocol, m, now_ms).await?,
                        Err(e) => {
                            if self.invalid(protocol, e, now_ms) {
                                return Err(End::Closed(Close::Blacklisted));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Counts a bad frame; true when the peer's IP is now blacklisted. A well-formed frame of
    /// a kind not decoded (`Unsupported`) counts as good for the blacklist thresholds.
    fn invalid(&self, protocol: Protocol, e: FrameError, now_ms: i64) -> bool {
        let s = self.server;
        s.stats.message(protocol.index(), Some(e), now_ms);
        if let Some(id) = &self.device {
            s.registry.message(id, self.pool, false, None, now_ms);
        }
        log_rejected(self.peer, protocol, e);
        let well_formed = e == FrameError::Unsupported;
        s.guard
            .frame(self.peer.ip(), well_formed, Instant::now(), now_ms)
    }

    fn identify(&mut self, id: &str, pool: Pool, protocol: Protocol, now_ms: i64) {
        if self.device.as_deref() == Some(id) && self.pool == pool {
            return;
        }
        if let Some(old) = self.device.take() {
            self.server.registry.disconnected(&old, self.pool);
            self.cmds.detach(&self.server.commands, &old);
        }
        self.server
            .registry
            .connected(id, pool, protocol, self.peer, now_ms);
        self.device = Some(id.to_string());
        self.pool = pool;
        if pool == Pool::Identified {
            let conn = self.server.next_conn.fetch_add(1, Relaxed);
            self.cmds.attach(&self.server.commands, id, conn);
        }
    }

    async fn handle(&mut self, protocol: Protocol, m: Message, now_ms: i64) -> Result<(), End> {
        if let Some(id) = &m.device_id {
            self.identify(id, Pool::Identified, protocol, now_ms);
        } else if self.device.is_none() && protocol == Protocol::Nmea {
            // Plain NMEA without $PGID: the connection is the identity (see nmea.rs), kept in
            // the registry's pool of its own so that connection churn evicts no named device.
            let id = format!("nmea:{}", self.peer);
            self.identify(&id, Pool::Unidentified, protocol, now_ms);
        }
        let Some(id) = self.device.clone() else {
            return if self.invalid(protocol, FrameError::Unidentified, now_ms) {
                Err(End::Closed(Close::Blacklisted))
            } else {
                Ok(())
            };
        };
        let s = self.server;
        s.stats.message(protocol.index(), None, now_ms);
        if s.guard.frame(self.peer.ip(), true, Instant::now(), now_ms) {
            return Err(End::Closed(Close::Blacklisted));
        }
        s.registry.message(
            &id,
            self.pool,
            true,
            m.fixes.iter().max_by_key(|f| f.time_ms),
            now_ms,
        );
        let mut points = Vec::new();
        if m.fixes.is_empty() && m.kind == Kind::Location {
            s.stats.location_without_fix(protocol);
        }
        for fix in m.fixes {
            if fix.valid {
                s.stats.location_valid(protocol);
            } else {
                s.stats.location_without_fix(protocol);
            }
            if (fix.valid || s.limits.points_invalid_fixes) && s.delivery.enabled() {
                points.push(Point::new(&id, protocol, fix, now_ms));
            }
        }
        let stored = points.is_empty() || s.delivery.deliver(points).await;
        if let (Some(reply), true) = (m.reply, stored) {
            let write =
                tokio::time::timeout(s.limits.frame_timeout, self.stream.write_all(&reply)).await;
            if !matches!(write, Ok(Ok(()))) {
                return Err(End::Closed(Close::WriteFailed));
            }
        }
        Ok(())
    }
}

/// Logs a rejected frame at most once per second for the whole process.
fn log_rejected(peer: SocketAddr, protocol: Protocol, e: FrameError) {
    use std::sync::atomic::AtomicI64;
    static LAST: AtomicI64 = AtomicI64::new(0);
    let sec = now_ms() / 1000;
    if LAST.swap(sec, Relaxed) != sec {
        tracing::warn!(
            component = "gps",
            %peer,
            protocol = protocol.as_str(),
            reason = e.as_label(),
            "rejected a GPS frame (further rejections this second are counted in gps_tcp.messages_invalid, not logged)"
        );
    }
}
