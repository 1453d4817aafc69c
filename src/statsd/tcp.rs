//! Newline-delimited statsd over TCP.
//!
//! Connections are limited in number (a permit is taken before a connection is served; without
//! one the connection is closed at once and counted), in line length (a longer line is skipped
//! up to its newline and counted) and in idle time. All connections feed one shared shard, taken
//! once per read, so a busy connection costs one lock per read and not per line.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{bad_line, Ingest};
use crate::aggregate::Shard;
use crate::base::accept::{self, Handler};
use crate::base::lock;
use crate::model::dogstatsd::ParseError;
use crate::telemetry::{LocalStats, Telemetry, Transport};

const READ_CHUNK: usize = 16 * 1024;

/// The statsd TCP listener's connection handler (see [`accept::run`]).
pub struct TcpServer {
    /// Parses lines into the aggregator.
    pub ingest: Arc<Ingest>,
    /// The shard every connection feeds.
    pub shard: Arc<Mutex<Shard>>,
    /// Where the `tallyd_tcp_connections*` counters and line stats go.
    pub telemetry: Arc<Telemetry>,
    /// Connections served at once (`statsd.tcp_max_connections`).
    pub max_connections: usize,
    /// A connection silent this long is closed (`statsd.tcp_idle_timeout`).
    pub idle_timeout: Duration,
    /// Longest line accepted (`statsd.tcp_max_line_length`).
    pub max_line: usize,
}

impl TcpServer {
    /// Accepts until `cancel`, then waits for open connections to finish what they have read.
    pub async fn run(self: Arc<Self>, listener: TcpListener, cancel: CancellationToken) {
        let max = self.max_connections;
        accept::run(self, listener, max, cancel).await;
    }

    async fn read_lines(&self, mut stream: TcpStream, cancel: CancellationToken) {
        let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        let mut stats = LocalStats::default();
        // True while skipping the rest of an over-long line.
        let mut skipping = false;
        loop {
            if buf.len() == buf.capacity() {
                buf.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                _ = cancel.cancelled() => {
                    // Shutting down: take what the kernel already holds for us, then stop.
                    drain_ready(&stream, &mut buf, self.max_line);
                    // Only whole lines: the peer may be in the middle of one.
                    if let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') {
                        let whole: Vec<u8> = buf.drain(..=last_nl).collect();
                        if !skipping {
                            self.ingest_lines(&whole, &mut stats);
                        }
                    }
                    buf.clear();
                    break;
                }
                r = tokio::time::timeout(self.idle_timeout, read_more(&mut stream, &mut buf)) => r,
            };
            let n = match read {
                Err(_) => {
                    self.telemetry.tcp_idle_closed.fetch_add(1, Relaxed);
                    break;
                }
                Ok(Err(_)) | Ok(Ok(0)) => break,
                Ok(Ok(n)) => n,
            };
            stats.packets += 1;
            stats.bytes += n as u64;
            let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
                if buf.len() > self.max_line {
                    if !skipping {
                        bad_line(&mut stats, ParseError::LineTooLong, &buf);
                        stats.lines += 1;
                    }
                    skipping = true;
                    buf.clear();
                }
                stats.publish(&self.telemetry, Transport::Tcp);
                continue;
            };
            let mut complete = &buf[..=last_nl];
            if skipping {
                // Drop the tail of the over-long line, up to and including its newline.
                let nl = complete
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(complete.len() - 1);
                complete = &complete[nl + 1..];
                skipping = false;
            }
            self.ingest_lines(complete, &mut stats);
            buf.drain(..=last_nl);
            if buf.len() > self.max_line {
                bad_line(&mut stats, ParseError::LineTooLong, &buf);
                stats.lines += 1;
                skipping = true;
                buf.clear();
            }
            stats.publish(&self.telemetry, Transport::Tcp);
        }
        // A last line without a newline still counts (nc often sends one).
        if !skipping && !buf.is_empty() {
            let rest = std::mem::take(&mut buf);
            self.ingest_lines(&rest, &mut stats);
        }
        stats.publish(&self.telemetry, Transport::Tcp);
    }

    fn ingest_lines(&self, data: &[u8], stats: &mut LocalStats) {
        let seq = self.ingest.aggregator.shared().seq();
        let mut shard = lock(&self.shard);
        // Lines longer than the limit that arrived whole in one read are rejected here.
        for line in data.split(|&b| b == b'\n') {
            if line.len() > self.max_line {
                stats.lines += 1;
                bad_line(stats, ParseError::LineTooLong, line);
            } else if !line.is_empty() {
                self.ingest.packet(line, false, &mut shard, seq, stats);
            }
        }
    }
}

impl Handler for TcpServer {
    type Admit = ();

    fn admit(&self, _peer: SocketAddr) -> Option<()> {
        Some(())
    }

    fn refused(&self, peer: SocketAddr, _admit: ()) {
        self.telemetry.tcp_refused.fetch_add(1, Relaxed);
        tracing::debug!(%peer, "statsd TCP connection refused: statsd.tcp_max_connections reached");
    }

    fn accepted(&self, _peer: SocketAddr) {
        self.telemetry.tcp_total.fetch_add(1, Relaxed);
        self.telemetry.tcp_active.fetch_add(1, Relaxed);
    }

    fn accept_failed(&self, error: &std::io::Error) {
        // Out of descriptors and similar errors clear up; the loop backs off instead of spinning.
        tracing::warn!(error = %error, "statsd TCP accept failed");
    }

    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        _peer: SocketAddr,
        _admit: (),
        cancel: CancellationToken,
    ) {
        self.read_lines(stream, cancel).await;
        self.telemetry.tcp_active.fetch_sub(1, Relaxed);
    }
}

/// Reads whatever is already buffered on the socket without waiting, up to about `limit` bytes.
fn drain_ready(stream: &TcpStream, buf: &mut Vec<u8>, limit: usize) {
    while buf.len() <= limit {
        buf.reserve(READ_CHUNK);
        match stream.try_read_buf(buf) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    stream.read_buf(buf).await
}
