//! Datagram receivers: UDP (several SO_REUSEPORT sockets, one thread each) and the Unix
//! datagram socket. Both read with `recvmmsg`, many datagrams per system call, and parse in
//! place in the receive buffers without holding any lock. The parsed lines of a batch are then
//! applied, in arrival order, to the shard all datagram receivers share, under one lock per
//! batch: parsing runs in parallel on every receiver thread, and each context is held once.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use tracing::info;

use super::config::StatsdConfig;
use super::{bad_line, Ingest};
use crate::aggregate::Shard;
use crate::base::error::parse_addr;
use crate::base::lock;
use crate::component::{Context, Error, Running, Stage};
use crate::model::dogstatsd::MetricLine;
use crate::telemetry::{LocalStats, Telemetry, Transport};

/// How often a blocked receive wakes up to check for shutdown.
const WAKE: Duration = Duration::from_millis(200);

/// Starts the UDP receivers (`statsd.udp_listen`): one thread per socket, stopped with the
/// intake stage after draining what their sockets still hold.
///
/// # Errors
/// The address does not parse or cannot be bound, or a thread cannot start.
pub fn start(cfg: &StatsdConfig, ctx: &mut Context) -> Result<Running, Error> {
    if cfg.udp_listen.is_empty() {
        return Ok(Running::disabled(
            "statsd_udp",
            Stage::Intake,
            "statsd.udp_listen is empty",
        ));
    }
    let key = "statsd.udp_listen";
    let addr = parse_addr(key, &cfg.udp_listen)?;
    let count = cfg.receivers();
    let socks = bind(addr, count, cfg.udp_recv_buffer)
        .map_err(|e| Error::bind("statsd UDP listener", addr, key, e))?;
    let local = socks
        .first()
        .and_then(|s| s.local_addr().ok())
        .unwrap_or(addr);
    info!(component = "statsd_udp", addr = %local, sockets = count, "listening");
    *lock(&ctx.telemetry.udp_ports) = vec![local.port()];
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, sock) in socks.into_iter().enumerate() {
        let r = Receiver::new(cfg, ctx, Transport::Udp, Arc::clone(&stop));
        let t = std::thread::Builder::new()
            .name(format!("udp-recv-{i}"))
            .spawn(move || r.run(sock.as_raw_fd()))
            .map_err(|e| {
                Error::start("statsd_udp", format!("cannot start a receiver thread: {e}"))
            })?;
        threads.push(t);
    }
    stop_with_intake(ctx, stop, threads);
    Ok(Running::ok(
        "statsd_udp",
        Stage::Intake,
        format!("{local}, {count} sockets"),
        (),
    ))
}

/// Starts the Unix datagram receiver (`statsd.unix_socket`); the socket file is removed when
/// it stops.
///
/// # Errors
/// The socket cannot be bound, or the thread cannot start.
pub fn start_unix(cfg: &StatsdConfig, ctx: &mut Context) -> Result<Running, Error> {
    if cfg.unix_socket.is_empty() {
        return Ok(Running::disabled(
            "statsd_uds",
            Stage::Intake,
            "statsd.unix_socket is empty",
        ));
    }
    let path = PathBuf::from(&cfg.unix_socket);
    let sock = bind_unix(&path).map_err(|e| {
        Error::bind(
            "statsd Unix socket",
            path.display(),
            "statsd.unix_socket",
            e,
        )
    })?;
    info!(component = "statsd_uds", path = %path.display(), "listening");
    let stop = Arc::new(AtomicBool::new(false));
    let r = Receiver::new(cfg, ctx, Transport::Uds, Arc::clone(&stop));
    let detail = path.display().to_string();
    let t = std::thread::Builder::new()
        .name("uds-recv".into())
        .spawn(move || {
            let _remove = RemoveOnDrop(path);
            r.run(sock.as_raw_fd());
        })
        .map_err(|e| {
            Error::start(
                "statsd_uds",
                format!("cannot start the receiver thread: {e}"),
            )
        })?;
    stop_with_intake(ctx, stop, vec![t]);
    Ok(Running::ok("statsd_uds", Stage::Intake, detail, ()))
}

/// Stops the receive loops with the intake stage and makes the stage wait for `threads`. The
/// loops poll a plain atomic after every `recvmmsg` (a token's `is_cancelled` takes a lock);
/// they return once they drained what their sockets still hold.
fn stop_with_intake(
    ctx: &Context,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
) {
    ctx.shutdown.on_stop(Stage::Intake, async move {
        stop.store(true, Relaxed);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    });
}

impl Receiver {
    /// A receiver for `transport` applying to the datagram receivers' shared shard.
    fn new(cfg: &StatsdConfig, ctx: &Context, transport: Transport, stop: Arc<AtomicBool>) -> Self {
        crate::base::lock(ctx.aggregator.datagram_shard()).set_line_options(cfg.line_options());
        Receiver {
            ingest: Arc::new(Ingest {
                aggregator: Arc::clone(&ctx.aggregator),
                max_tags: cfg.max_tags,
                // Checked by `StatsdConfig::validate` before any component starts.
                tag_styles: cfg.tag_styles().unwrap_or_default(),
            }),
            telemetry: Arc::clone(&ctx.telemetry),
            batch: cfg.udp_batch,
            batch_wait: cfg.udp_batch_wait,
            max_packet: cfg.max_packet_size,
            transport,
            stop,
        }
    }
}

/// Binds `count` UDP sockets to `addr`, sharing the port with SO_REUSEPORT so the kernel spreads
/// datagrams over them. With port 0, the first socket picks the port and the rest join it.
pub fn bind(addr: SocketAddr, count: usize, recv_buffer: usize) -> io::Result<Vec<UdpSocket>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        set_recv_buffer(&s, recv_buffer);
        s.bind(&addr.into())?;
        let sock: UdpSocket = s.into();
        sock.set_read_timeout(Some(WAKE))?;
        addr = sock.local_addr()?;
        out.push(sock);
    }
    Ok(out)
}

/// Asks for `want` bytes of receive buffer. Above `net.core.rmem_max` the kernel caps the
/// request; SO_RCVBUFFORCE (root or CAP_NET_ADMIN) lifts the cap. Logged when still short.
fn set_recv_buffer(s: &Socket, want: usize) {
    let _ = s.set_recv_buffer_size(want);
    // The kernel reports twice the usable size it granted.
    let got = s.recv_buffer_size().unwrap_or(0) / 2;
    if got >= want {
        return;
    }
    let v = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads exactly `size_of::<c_int>()` bytes from a valid pointer to a
    // live c_int, on a descriptor owned by `s`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let got = s.recv_buffer_size().unwrap_or(0) / 2;
    if rc != 0 || got < want {
        tracing::warn!(
            requested = want,
            granted = got,
            "UDP receive buffer is smaller than statsd.udp_recv_buffer; raise net.core.rmem_max or run with CAP_NET_ADMIN"
        );
    }
}

/// Binds the Unix datagram socket at `path`, replacing a stale socket file, write-open to all
/// (mode 0722, as the Datadog Agent sets it).
pub fn bind_unix(path: &Path) -> io::Result<UnixDatagram> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "path is a directory",
            ));
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(_) => {}
    }
    let sock = UnixDatagram::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722))?;
    sock.set_read_timeout(Some(WAKE))?;
    Ok(sock)
}

/// Removes the Unix socket file when the receiver stops.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Settings of one receive loop.
struct Receiver {
    ingest: Arc<Ingest>,
    telemetry: Arc<Telemetry>,
    /// Datagrams taken per receive call (`statsd.udp_batch`).
    batch: usize,
    /// Pause after a batch that emptied the socket (`statsd.udp_batch_wait`).
    batch_wait: Duration,
    /// Receive buffer per datagram (`statsd.max_packet_size`).
    max_packet: usize,
    /// Which counters the loop's statistics go to.
    transport: Transport,
    /// Set when intake stops.
    stop: Arc<AtomicBool>,
}

/// Fixed receive buffers and the `mmsghdr` array pointing into them.
struct Batch {
    bufs: Vec<u8>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    size: usize,
}

impl Batch {
    fn new(count: usize, size: usize) -> Batch {
        let mut b = Batch {
            bufs: vec![0u8; count * size],
            iovecs: Vec::with_capacity(count),
            msgs: Vec::with_capacity(count),
            size,
        };
        let base = b.bufs.as_mut_ptr();
        for i in 0..count {
            // SAFETY: `i * size` is within `bufs` (count * size bytes), so the pointer stays in bounds.
            let p = unsafe { base.add(i * size) };
            b.iovecs.push(libc::iovec {
                iov_base: p.cast(),
                iov_len: size,
            });
        }
        let iov = b.iovecs.as_mut_ptr();
        for i in 0..count {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid (empty) value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            // SAFETY: `i < count == iovecs.len()`, so the pointer is in bounds.
            m.msg_hdr.msg_iov = unsafe { iov.add(i) };
            m.msg_hdr.msg_iovlen = 1;
            b.msgs.push(m);
        }
        b
    }

    /// Receives up to `msgs.len()` datagrams, waiting for the first one (at most the socket's
    /// read timeout) and not for the rest.
    fn recv(&mut self, fd: RawFd, wait: bool) -> io::Result<usize> {
        for m in &mut self.msgs {
            m.msg_len = 0;
            m.msg_hdr.msg_flags = 0;
        }
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // SAFETY: `msgs` holds `msgs.len()` initialised headers whose iovecs point into `bufs`,
        // which lives as long as `self` and is never reallocated; the kernel writes at most
        // `iov_len` bytes into each buffer and fills `msg_len`/`msg_flags`. No address buffer
        // is passed (msg_name is null).
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.msgs.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The `i`-th received datagram and whether the kernel truncated it.
    fn datagram(&self, i: usize) -> (&[u8], bool) {
        let m = &self.msgs[i];
        let len = (m.msg_len as usize).min(self.size);
        let start = i * self.size;
        (
            &self.bufs[start..start + len],
            m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        )
    }
}

/// A parsed metric line waiting for the shard lock, with its raw text (for the rejection log).
type Staged<'a> = (&'a [u8], MetricLine<'a>);

/// Empties a staging vector and hands it back for another lifetime, keeping its allocation
/// (collecting an emptied vector into one of the same layout reuses its buffer).
// `filter` cannot change the element type; `filter_map` to nothing is what changes the lifetime.
#[allow(clippy::unnecessary_filter_map)]
fn recycle<'b>(stage: Vec<Staged<'_>>) -> Vec<Staged<'b>> {
    stage.into_iter().filter_map(|_| None).collect()
}

/// Applies a batch's staged lines, in arrival order, under one lock of `shard`.
fn apply_staged(
    shard: &Mutex<Shard>,
    staged: &mut Vec<Staged<'_>>,
    seq: u64,
    stats: &mut LocalStats,
) {
    if staged.is_empty() {
        return;
    }
    let mut shard = lock(shard);
    for (line, m) in staged.drain(..) {
        if let Err(e) = shard.apply(&m, seq, stats) {
            bad_line(stats, e, line);
        }
    }
}

impl Receiver {
    /// Receives until `stop` is set, then drains what the socket still holds and returns.
    fn run(self, fd: RawFd) {
        let mut batch = Batch::new(self.batch, self.max_packet);
        let mut stats = LocalStats::default();
        let aggregator = &self.ingest.aggregator;
        let shard = aggregator.datagram_shard();
        let mut stage: Vec<Staged<'static>> = Vec::new();
        loop {
            let stopping = self.stop.load(Relaxed);
            match batch.recv(fd, !stopping) {
                Ok(0) => {}
                Ok(n) => {
                    let seq = aggregator.shared().seq();
                    let mut staged = recycle(std::mem::take(&mut stage));
                    for i in 0..n {
                        let (data, truncated) = batch.datagram(i);
                        stats.packets += 1;
                        stats.bytes += data.len() as u64;
                        if truncated {
                            self.telemetry.udp_truncated.fetch_add(1, Relaxed);
                        }
                        self.ingest
                            .packet_with(data, truncated, &mut stats, |line, m, _| {
                                staged.push((line, m));
                            });
                    }
                    apply_staged(shard, &mut staged, seq, &mut stats);
                    stage = recycle(staged);
                    stats.publish(&self.telemetry, self.transport);
                    // The socket is empty: let datagrams gather for the next call rather than
                    // be woken for each one (statsd.udp_batch_wait).
                    if n < batch.msgs.len() && !stopping && !self.batch_wait.is_zero() {
                        std::thread::sleep(self.batch_wait);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stopping {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.telemetry.udp_receive_errors.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, transport = self.transport.as_str(), "receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}
