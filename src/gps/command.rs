//! Device commands: a bounded queue per device, handed to the device's connection when it has
//! one, and the record of what became of each command.
//!
//! `POST /api/monitoring/gps/devices/{id}/command` calls [`Commands::submit`]. A connected
//! device's connection gets the command at once (its read loop also waits on the channel
//! [`Commands::attach`] gave it), encodes it for its protocol (`encode`), writes it and waits
//! for the answer frame; a command for an offline device waits until the device connects, for
//! at most `gps.command_ttl`. Bounds: `gps.commands_per_device` waiting per device and
//! `gps.commands_max` waiting or awaiting an answer in total; one more is refused. A sent
//! command not answered within `gps.command_timeout` is `no_answer`. The last
//! [`HISTORY`] records are kept for the API. Every outcome is counted in
//! `tallyd_gps_commands{result}`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use super::encode::Kind;
use super::fix::{rfc3339_ms, Protocol};
use super::server::now_ms;
use crate::base::lock;
use crate::base::metrics::{Collect, Families};

/// Records kept for the API, finished ones dropped oldest first.
pub const HISTORY: usize = 1000;

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for the device (to connect, or for its connection to send it).
    Queued,
    /// Written to the device; waiting for its answer.
    Sent,
    /// The device answered.
    Answered,
    /// Sent, but no answer within `gps.command_timeout`.
    NoAnswer,
    /// The device did not connect within `gps.command_ttl`.
    Expired,
    /// The device's protocol has no such command.
    Unsupported,
    /// Writing it to the device failed.
    SendFailed,
}

impl Status {
    fn done(self) -> bool {
        !matches!(self, Status::Queued | Status::Sent)
    }
}

/// The `result` labels of `tallyd_gps_commands`.
const RESULTS: [&str; 8] = [
    "queued",
    "refused",
    "sent",
    "answered",
    "no_answer",
    "expired",
    "unsupported",
    "send_failed",
];

/// One command, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Its number, unique in this process.
    pub id: u64,
    /// The device it is for.
    pub device_id: String,
    /// What it asks.
    pub command: Kind,
    /// What became of it.
    pub status: Status,
    /// When it was submitted, RFC 3339 UTC.
    pub queued_at: String,
    /// When it was written to the device.
    pub sent_at: Option<String>,
    /// When the answer came.
    pub answered_at: Option<String>,
    /// The protocol it was encoded for.
    pub protocol: Option<Protocol>,
    /// The device's answer, as text.
    pub answer: Option<String>,
}

/// A command in flight, shared by the hub, the connection and any API request waiting on it.
pub struct Cmd {
    record: Mutex<Record>,
    changed: Notify,
}

impl Cmd {
    /// What the command asks.
    pub fn kind(&self) -> Kind {
        lock(&self.record).command.clone()
    }

    /// A copy of its record.
    pub fn record(&self) -> Record {
        lock(&self.record).clone()
    }

    /// Waits until the command's status is no longer `status` or `limit` passed; true when it
    /// still is (the timers of the hub: they end as soon as the command moves on).
    async fn still(&self, status: Status, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            if self.record().status != status {
                return false;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.record().status == status;
            }
        }
    }

    /// Waits until the command is finished or `limit` passed; gives its record then.
    pub async fn wait(&self, limit: Duration) -> Record {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            let r = self.record();
            if r.status.done() {
                return r;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.record();
            }
        }
    }
}

/// Why [`Commands::submit`] refused a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `gps.commands_per_device` or `gps.commands_max` commands are waiting.
    Full(&'static str),
    /// The device's known protocol has no such command.
    Unsupported(Protocol),
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Commands waiting for their device to connect.
    waiting: HashMap<String, VecDeque<Arc<Cmd>>>,
    /// The connection of each connected device: its number and channel.
    conns: HashMap<String, (u64, mpsc::Sender<Arc<Cmd>>)>,
    /// Commands queued or sent, in total.
    live: usize,
    history: VecDeque<Arc<Cmd>>,
}

/// The command hub of the GPS server. See the module docs.
pub struct Commands {
    inner: Mutex<Inner>,
    per_device: usize,
    max: usize,
    timeout: Duration,
    ttl: Duration,
    counts: [AtomicU64; 8],
}

/// A connection's end of the hub, from [`Commands::attach`].
pub struct Attached {
    /// Commands for this connection's device.
    pub rx: mpsc::Receiver<Arc<Cmd>>,
    conn: u64,
}

impl Commands {
    /// A hub with the `[gps]` command bounds.
    pub fn new(cfg: &super::GpsConfig) -> Commands {
        Commands {
            inner: Mutex::new(Inner::default()),
            per_device: cfg.commands_per_device,
            max: cfg.commands_max,
            timeout: cfg.command_timeout,
            ttl: cfg.command_ttl,
            counts: Default::default(),
        }
    }

    fn count(&self, result: &str) {
        if let Some(i) = RESULTS.iter().position(|r| *r == result) {
            self.counts[i].fetch_add(1, Relaxed);
        }
    }

    /// How long a sent command waits for its answer (`gps.command_timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Counts of `tallyd_gps_commands`, by result label (tests read this).
    pub fn counted(&self, result: &str) -> u64 {
        RESULTS
            .iter()
            .position(|r| *r == result)
            .map_or(0, |i| self.counts[i].load(Relaxed))
    }

    /// Queues `kind` for `device`, whose last known protocol is `known` (from the registry).
    /// Returns the command and whether the device is connected now.
    ///
    /// # Errors
    /// At a bound, or when `known` has no such command; counted as `refused` / `unsupported`.
    pub fn submit(
        self: &Arc<Self>,
        device: &str,
        kind: Kind,
        known: Option<Protocol>,
    ) -> Result<(Arc<Cmd>, bool), Refused> {
        if let Some(p) = known.filter(|p| !super::encode::supported(*p, &kind)) {
            self.count("unsupported");
            return Err(Refused::Unsupported(p));
        }
        let mut g = lock(&self.inner);
        let waiting = g.waiting.get(device).map_or(0, VecDeque::len);
        let refusal = if g.live >= self.max {
            Some("gps.commands_max")
        } else if waiting >= self.per_device {
            Some("gps.commands_per_device")
        } else {
            None
        };
        if let Some(key) = refusal {
            self.count("refused");
            return Err(Refused::Full(key));
        }
        g.next_id += 1;
        let cmd = Arc::new(Cmd {
            record: Mutex::new(Record {
                id: g.next_id,
                device_id: device.to_string(),
                command: kind,
                status: Status::Queued,
                queued_at: rfc3339_ms(now_ms()),
                sent_at: None,
                answered_at: None,
                protocol: None,
                answer: None,
            }),
            changed: Notify::new(),
        });
        g.live += 1;
        g.history.push_back(Arc::clone(&cmd));
        while g.history.len() > HISTORY {
            match g.history.iter().position(|c| c.record().status.done()) {
                Some(i) => {
                    g.history.remove(i);
                }
                None => break,
            }
        }
        self.count("queued");
        let connected = match g.conns.get(device) {
            Some((_, tx)) => tx.try_send(Arc::clone(&cmd)).is_ok(),
            None => false,
        };
        if !connected {
            g.waiting
                .entry(device.to_string())
                .or_default()
                .push_back(Arc::clone(&cmd));
            let hub = Arc::clone(self);
            let c = Arc::clone(&cmd);
            tokio::spawn(async move {
                // Still queued after the TTL: expired if it is waiting; if a connection holds it
                // (handed over, not yet written), look again after another TTL.
                while c.still(Status::Queued, hub.ttl).await {
                    if hub.expire(&c) {
                        break;
                    }
                }
            });
        }
        Ok((cmd, connected))
    }

    /// Expires `c` if it is waiting for its device; false when it is not there.
    fn expire(&self, c: &Arc<Cmd>) -> bool {
        let mut g = lock(&self.inner);
        let device = c.record().device_id;
        let Some(q) = g.waiting.get_mut(&device) else {
            return false;
        };
        let Some(i) = q.iter().position(|x| Arc::ptr_eq(x, c)) else {
            return false;
        };
        q.remove(i);
        if q.is_empty() {
            g.waiting.remove(&device);
        }
        drop(g);
        self.finish(c, Status::Expired, None);
        true
    }

    /// Device `device` connected on connection `conn` (a number unique to it): the commands
    /// waiting for it go to the channel returned.
    pub fn attach(&self, device: &str, conn: u64) -> Attached {
        let (tx, rx) = mpsc::channel(self.per_device.max(1));
        let mut g = lock(&self.inner);
        if let Some(q) = g.waiting.get_mut(device) {
            while let Some(c) = q.front() {
                if tx.try_send(Arc::clone(c)).is_err() {
                    break;
                }
                q.pop_front();
            }
            if q.is_empty() {
                g.waiting.remove(device);
            }
        }
        g.conns.insert(device.to_string(), (conn, tx));
        Attached { rx, conn }
    }

    /// The connection `a` of `device` closed: commands it had not taken wait again.
    pub fn detach(&self, device: &str, mut a: Attached) {
        let mut g = lock(&self.inner);
        if g.conns.get(device).is_some_and(|(c, _)| *c == a.conn) {
            g.conns.remove(device);
        }
        let mut back = Vec::new();
        while let Ok(c) = a.rx.try_recv() {
            back.push(c);
        }
        if !back.is_empty() {
            let q = g.waiting.entry(device.to_string()).or_default();
            for c in back.into_iter().rev() {
                q.push_front(c);
            }
        }
    }

    /// The connection wrote `c` to the device (encoded for `protocol`); starts the answer timer.
    pub fn sent(self: &Arc<Self>, c: &Arc<Cmd>, protocol: Protocol) {
        {
            let mut r = lock(&c.record);
            r.status = Status::Sent;
            r.protocol = Some(protocol);
            r.sent_at = Some(rfc3339_ms(now_ms()));
        }
        self.count("sent");
        c.changed.notify_waiters();
        let hub = Arc::clone(self);
        let c = Arc::clone(c);
        tokio::spawn(async move {
            if c.still(Status::Sent, hub.timeout).await {
                hub.finish(&c, Status::NoAnswer, None);
            }
        });
    }

    /// Ends `c` with `status` (and the device's `answer`), once; counts it.
    pub fn finish(&self, c: &Cmd, status: Status, answer: Option<String>) {
        {
            let mut r = lock(&c.record);
            if r.status.done() {
                return;
            }
            r.status = status;
            if status == Status::Answered {
                r.answered_at = Some(rfc3339_ms(now_ms()));
            }
            r.answer = answer;
        }
        {
            let mut g = lock(&self.inner);
            g.live = g.live.saturating_sub(1);
        }
        self.count(match status {
            Status::Answered => "answered",
            Status::NoAnswer => "no_answer",
            Status::Expired => "expired",
            Status::Unsupported => "unsupported",
            _ => "send_failed",
        });
        c.changed.notify_waiters();
    }

    /// For an OsmAnd device (HTTP, no connection): the oldest waiting custom command's text,
    /// handed over as the body of the 200 answer and counted answered (the phone took it).
    pub fn http_text(&self, device: &str) -> Option<String> {
        let c = {
            let mut g = lock(&self.inner);
            let q = g.waiting.get_mut(device)?;
            let c = q.pop_front()?;
            if q.is_empty() {
                g.waiting.remove(device);
            }
            c
        };
        let Kind::Custom { text } = c.kind() else {
            self.finish(&c, Status::Unsupported, None);
            return None;
        };
        lock(&c.record).protocol = Some(Protocol::Osmand);
        self.count("sent");
        self.finish(
            &c,
            Status::Answered,
            Some("delivered in the HTTP answer".into()),
        );
        Some(text)
    }

    /// The records of `device`'s recent commands, oldest first.
    pub fn list(&self, device: &str) -> Vec<Record> {
        let g = lock(&self.inner);
        g.history
            .iter()
            .map(|c| c.record())
            .filter(|r| r.device_id == device)
            .collect()
    }

    /// Commands waiting or awaiting an answer now.
    pub fn live(&self) -> usize {
        lock(&self.inner).live
    }
}

impl Collect for Commands {
    fn collect(&self, out: &mut Families) {
        out.counter(
            "tallyd_gps_commands",
            "Device commands by result: queued (accepted), refused (gps.commands_per_device or \
             gps.commands_max), sent, answered, no_answer (gps.command_timeout), expired \
             (gps.command_ttl), unsupported, send_failed.",
        )
        .by("result", RESULTS.map(|r| (r, self.counted(r) as f64)));
        out.gauge(
            "tallyd_gps_commands_pending",
            "Device commands waiting or awaiting an answer (bound gps.commands_max).",
        )
        .value(self.live() as f64);
    }
}

/// A device connection's side of the hub: its channel once the device is known, the commands
/// written and awaiting an answer, and the serial of its command frames. The connection loop
/// (`server.rs`) waits on [`Link::next`] beside its socket, writes with [`Link::send`] and
/// asks [`Link::answered`] before the decoder sees the buffer.
#[derive(Default)]
pub struct Link {
    attached: Option<Attached>,
    awaiting: std::collections::VecDeque<Arc<Cmd>>,
    serial: u16,
    /// How the device frames its messages (the watch protocol's maker code).
    peer: super::encode_more::Peer,
}

impl Link {
    /// The device `id` is known on connection `conn`: its commands come to this link.
    pub fn attach(&mut self, hub: &Commands, id: &str, conn: u64) {
        self.attached = Some(hub.attach(id, conn));
    }

    /// The connection of device `id` ended (or named another device).
    pub fn detach(&mut self, hub: &Commands, id: &str) {
        if let Some(a) = self.attached.take() {
            hub.detach(id, a);
        }
    }

    /// The next command for the device; never, before the device is known.
    pub async fn next(&mut self) -> Option<Arc<Cmd>> {
        match &mut self.attached {
            Some(a) => a.rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Encodes `c` for `protocol` and writes it to `device` within `timeout`. False when the
    /// write failed (the connection is then closed).
    pub async fn send<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        hub: &Arc<Commands>,
        out: &mut W,
        protocol: Protocol,
        device: &str,
        c: Arc<Cmd>,
        timeout: Duration,
    ) -> bool {
        use tokio::io::AsyncWriteExt;
        self.serial = self.serial.wrapping_add(1);
        let kind = c.kind();
        let Some(frame) =
            super::encode::encode(protocol, device, &kind, self.serial, now_ms(), &self.peer)
        else {
            hub.finish(&c, Status::Unsupported, None);
            return true;
        };
        if !matches!(
            tokio::time::timeout(timeout, out.write_all(&frame)).await,
            Ok(Ok(()))
        ) {
            hub.finish(&c, Status::SendFailed, None);
            return false;
        }
        hub.sent(&c, protocol);
        self.awaiting.push_back(c);
        true
    }

    /// When a command awaits an answer and `buf` starts with one: completes the command and
    /// gives the bytes of the answer frame to remove (0: none, or an ordinary frame the decoder
    /// still reads, GPS103's).
    pub fn answered(&mut self, hub: &Commands, protocol: Protocol, buf: &[u8]) -> usize {
        if protocol == Protocol::Watch {
            self.peer.learn(buf);
        }
        if self.awaiting.is_empty() {
            return 0;
        }
        self.awaiting.retain(|c| c.record().status == Status::Sent);
        let Some(a) = self
            .awaiting
            .front()
            .and_then(|c| super::encode::answer(protocol, buf, &c.kind()))
        else {
            return 0;
        };
        if let Some(c) = self.awaiting.pop_front() {
            hub.finish(&c, Status::Answered, Some(a.text));
        }
        a.consumed
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
