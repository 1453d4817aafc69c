//! One named queue on disk: pending payloads, dead letters, and the in-memory index of both.
//!
//! Layout under `<directory>/<queue name>/`:
//! - `pending/<seq>.tq`: payloads waiting for delivery, `<seq>` a 16-digit hex sequence number;
//!   delivery order is sequence order.
//! - `dlq/<seq>.tq`: payloads the far side rejected for good, with its status and body.
//! - `tmp/`: files being written; anything left here after a crash is incomplete and removed.
//!
//! The file format and the atomic write are in `disk.rs`: a file in `pending/` is always
//! complete; a file that fails its check anyway (disk damage) is set aside as `<seq>.corrupt`
//! and counted, never sent.
//!
//! Memory: the index holds 24 bytes per payload; the payloads themselves are read from disk
//! one at a time when sent. Bytes are accounted as each file's length on disk.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use super::disk::{decode, encode};
use super::disk::{file_name, io, sync_dir, write_atomically};
use super::stats::QueueStats;
use crate::base::lock;

/// Longest response body kept with a dead letter.
pub const MAX_RESPONSE_BODY: usize = 4096;
/// Largest single payload accepted (the biggest Datadog payload is 5 MiB uncompressed).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// What travels with a payload besides its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Meta {
    /// Unique across restarts; sent as `X-Tallyd-Payload-Id` so a receiver can spot a redelivery.
    pub id: String,
    /// Path (and query) relative to the target's base URL, e.g. `/api/v2/series`.
    pub endpoint: String,
    /// `Content-Type` of the payload.
    pub content_type: String,
    /// `Content-Encoding` of the payload (`zstd`, `gzip`, `deflate`), empty for none.
    #[serde(default)]
    pub content_encoding: String,
    /// Unix milliseconds at which the payload was first queued.
    pub created_ms: u64,
    /// Delivery attempts so far (kept across restarts only for dead letters).
    #[serde(default)]
    pub attempts: u32,
    /// For a dead letter: the rejecting status and (truncated) response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// For a dead letter: the (truncated) response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// A queue failure, naming the file or directory involved.
#[derive(Debug)]
pub enum QueueError {
    /// A file or directory cannot be used.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file fails its check.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A payload larger than the whole queue.
    TooLarge {
        /// The payload's size.
        bytes: usize,
        /// The queue's bound.
        limit: u64,
    },
}

impl QueueError {
    /// A stable label for telemetry and logs.
    pub fn as_label(&self) -> &'static str {
        match self {
            QueueError::Io { .. } => "io",
            QueueError::Corrupt { .. } => "corrupt",
            QueueError::TooLarge { .. } => "too_large",
        }
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Io { path, source } => write!(f, "queue file {}: {source}", path.display()),
            QueueError::Corrupt { path, why } => {
                write!(f, "queue file {} is damaged: {why}", path.display())
            }
            QueueError::TooLarge { bytes, limit } => {
                write!(
                    f,
                    "payload of {bytes} bytes is larger than the queue limit of {limit} bytes"
                )
            }
        }
    }
}

impl std::error::Error for QueueError {}

/// One payload in the index.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Its sequence number (its file name).
    pub seq: u64,
    /// Its length on disk.
    pub bytes: u64,
    /// Unix milliseconds at which it was queued.
    pub created_ms: u64,
}

#[derive(Default)]
struct Index {
    pending: VecDeque<Entry>,
    dlq: VecDeque<Entry>,
    pending_bytes: u64,
    dlq_bytes: u64,
    next_seq: u64,
}

/// Byte bounds of one queue.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of pending payloads.
    pub max_bytes: u64,
    /// Bytes of dead letters.
    pub dlq_max_bytes: u64,
}

/// A dead letter as shown by the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Its sequence number.
    pub seq: u64,
    /// Its length on disk.
    pub bytes: u64,
    /// What travelled with it.
    pub meta: Meta,
}

/// One named durable queue.
pub struct Queue {
    name: String,
    root: PathBuf,
    limits: Limits,
    index: Mutex<Index>,
    /// What the queue counts about itself.
    pub stats: QueueStats,
    /// Wakes the sender: something was queued, or an operator asked to send now.
    pub wake: tokio::sync::Notify,
    /// Cuts a running backoff short (force-process, DLQ requeue). New payloads only `wake` an
    /// idle sender: under steady traffic they must not turn a backoff into a retry per flush.
    pub skip_backoff: tokio::sync::Notify,
    /// Held while a payload is being sent, so a forced batch and the sender never send the
    /// same payload at once.
    pub send_lock: tokio::sync::Mutex<()>,
}

/// Milliseconds since the Unix epoch (0 for a clock before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Queue {
    /// Opens (or creates) the queue `name` under `dir`, indexing what an earlier run left.
    ///
    /// # Errors
    /// A directory that cannot be created or read.
    pub fn open(dir: &Path, name: &str, limits: Limits) -> Result<Queue, QueueError> {
        let root = dir.join(name);
        for sub in ["pending", "dlq", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let tmp = root.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let q = Queue {
            name: name.to_string(),
            root,
            limits,
            index: Mutex::new(Index::default()),
            stats: QueueStats::default(),
            wake: tokio::sync::Notify::new(),
            skip_backoff: tokio::sync::Notify::new(),
            send_lock: tokio::sync::Mutex::new(()),
        };
        let pending = q.scan("pending")?;
        let dlq = q.scan("dlq")?;
        {
            let mut ix = lock(&q.index);
            ix.next_seq = pending
                .iter()
                .chain(dlq.iter())
                .map(|e| e.seq + 1)
                .max()
                .unwrap_or(1);
            ix.pending_bytes = pending.iter().map(|e| e.bytes).sum();
            ix.dlq_bytes = dlq.iter().map(|e| e.bytes).sum();
            ix.pending = pending.into();
            ix.dlq = dlq.into();
        }
        // The limits may have shrunk since the last run.
        q.evict();
        Ok(q)
    }

    fn scan(&self, sub: &str) -> Result<Vec<Entry>, QueueError> {
        let dir = self.root.join(sub);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".tq")) else {
                continue;
            };
            let Ok(seq) = u64::from_str_radix(stem, 16) else {
                continue;
            };
            let Ok(md) = e.metadata() else { continue };
            let created_ms = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            out.push(Entry {
                seq,
                bytes: md.len(),
                created_ms,
            });
        }
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    /// The queue's name (its directory, admin API path and `queue` label).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self, sub: &str, seq: u64) -> PathBuf {
        self.root.join(sub).join(file_name(seq))
    }

    /// Writes a payload to disk and indexes it; only then is it taken. Returns how many older
    /// payloads were dropped to stay within `max_bytes`.
    ///
    /// # Errors
    /// The payload is larger than the whole queue, or the disk write failed; either way nothing
    /// was queued (no file is left behind) and the loss is counted in
    /// [`QueueStats::enqueue_failed`] and reported by the queue's health.
    pub fn push(&self, mut meta: Meta, payload: &[u8]) -> Result<u64, QueueError> {
        let seq = {
            let mut ix = lock(&self.index);
            let s = ix.next_seq;
            ix.next_seq += 1;
            s
        };
        if meta.created_ms == 0 {
            meta.created_ms = unix_ms();
        }
        if meta.id.is_empty() {
            meta.id = format!("{}-{}-{seq}", self.name, meta.created_ms);
        }
        let data = encode(&meta, payload);
        if data.len() as u64 > self.limits.max_bytes || payload.len() > MAX_PAYLOAD {
            self.stats.dropped.fetch_add(1, Relaxed);
            let e = QueueError::TooLarge {
                bytes: data.len(),
                limit: self.limits.max_bytes,
            };
            self.stats.enqueue_failure(&e);
            return Err(e);
        }
        if let Err(e) = write_atomically(
            &self.root.join("tmp"),
            &self.root.join("pending"),
            seq,
            &data,
        ) {
            self.stats.write_errors.fetch_add(1, Relaxed);
            self.stats.enqueue_failure(&e);
            return Err(e);
        }
        {
            let mut ix = lock(&self.index);
            let entry = Entry {
                seq,
                bytes: data.len() as u64,
                created_ms: meta.created_ms,
            };
            // Sequence numbers are handed out before the write; keep the index sorted.
            let pos = ix.pending.partition_point(|e| e.seq < seq);
            ix.pending.insert(pos, entry);
            ix.pending_bytes += entry.bytes;
        }
        self.stats.enqueued.fetch_add(1, Relaxed);
        let dropped = self.evict();
        self.wake.notify_one();
        Ok(dropped)
    }

    /// Drops the oldest pending payloads (and oldest dead letters) beyond the byte limits.
    fn evict(&self) -> u64 {
        let mut victims = Vec::new();
        {
            let mut ix = lock(&self.index);
            while ix.pending_bytes > self.limits.max_bytes {
                let Some(e) = ix.pending.pop_front() else {
                    break;
                };
                ix.pending_bytes -= e.bytes;
                victims.push(("pending", e.seq));
            }
            while ix.dlq_bytes > self.limits.dlq_max_bytes {
                let Some(e) = ix.dlq.pop_front() else { break };
                ix.dlq_bytes -= e.bytes;
                victims.push(("dlq", e.seq));
            }
        }
        let mut dropped = 0;
        for (sub, seq) in victims {
            let _ = fs::remove_file(self.path(sub, seq));
            if sub == "pending" {
                dropped += 1;
            } else {
                self.stats.dlq_dropped.fetch_add(1, Relaxed);
            }
        }
        if dropped > 0 {
            self.stats.dropped.fetch_add(dropped, Relaxed);
            tracing::warn!(queue = %self.name, dropped, max_bytes = self.limits.max_bytes, "queue full: oldest payloads dropped");
        }
        dropped
    }

    /// The oldest pending payload, if any.
    pub fn head(&self) -> Option<Entry> {
        lock(&self.index).pending.front().copied()
    }

    /// Reads a pending payload. A damaged file is set aside, counted and reported as `Corrupt`.
    ///
    /// # Errors
    /// The file cannot be read or fails its checks.
    pub fn load(&self, seq: u64) -> Result<(Meta, Vec<u8>), QueueError> {
        let path = self.path("pending", seq);
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io(&path))?;
        decode(&data).map_err(|why| {
            let _ = fs::rename(&path, path.with_extension("corrupt"));
            self.forget(seq);
            self.stats.corrupt.fetch_add(1, Relaxed);
            QueueError::Corrupt {
                path: path.clone(),
                why,
            }
        })
    }

    fn forget(&self, seq: u64) -> bool {
        let mut ix = lock(&self.index);
        if let Some(pos) = ix.pending.iter().position(|e| e.seq == seq) {
            if let Some(e) = ix.pending.remove(pos) {
                ix.pending_bytes -= e.bytes;
            }
            true
        } else {
            false
        }
    }

    /// Removes a delivered payload. A payload already dropped at the byte limit is fine.
    pub fn ack(&self, seq: u64) {
        if self.forget(seq) {
            let _ = fs::remove_file(self.path("pending", seq));
        }
    }

    /// Moves a payload to the dead-letter queue with the far side's answer.
    ///
    /// # Errors
    /// The dead letter could not be written; the payload then stays pending.
    pub fn reject(
        &self,
        seq: u64,
        mut meta: Meta,
        payload: &[u8],
        status: u16,
        body: &str,
    ) -> Result<(), QueueError> {
        meta.status = Some(status);
        let mut b = body.to_string();
        if b.len() > MAX_RESPONSE_BODY {
            let mut cut = MAX_RESPONSE_BODY;
            while !b.is_char_boundary(cut) {
                cut -= 1;
            }
            b.truncate(cut);
        }
        meta.response = Some(b);
        let data = encode(&meta, payload);
        write_atomically(&self.root.join("tmp"), &self.root.join("dlq"), seq, &data)?;
        {
            let mut ix = lock(&self.index);
            let e = Entry {
                seq,
                bytes: data.len() as u64,
                created_ms: meta.created_ms,
            };
            let pos = ix.dlq.partition_point(|x| x.seq < seq);
            ix.dlq.insert(pos, e);
            ix.dlq_bytes += e.bytes;
        }
        self.ack(seq);
        self.stats.dead_lettered.fetch_add(1, Relaxed);
        self.evict();
        Ok(())
    }

    /// Dead letters, oldest first, at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Vec<DeadLetter> {
        let entries: Vec<Entry> = lock(&self.index).dlq.iter().take(limit).copied().collect();
        entries
            .into_iter()
            .filter_map(|e| {
                let path = self.path("dlq", e.seq);
                let data = fs::read(&path).ok()?;
                let (meta, _) = decode(&data).ok()?;
                Some(DeadLetter {
                    seq: e.seq,
                    bytes: e.bytes,
                    meta,
                })
            })
            .collect()
    }

    /// Moves every dead letter back to the end of the pending queue; returns how many moved.
    ///
    /// # Errors
    /// A rename failed; the letters moved before it stay moved.
    pub fn requeue_dead_letters(&self) -> Result<u64, QueueError> {
        let mut moved = 0;
        loop {
            let (old, new) = {
                let mut ix = lock(&self.index);
                let Some(e) = ix.dlq.pop_front() else { break };
                ix.dlq_bytes -= e.bytes;
                let new = ix.next_seq;
                ix.next_seq += 1;
                (e, new)
            };
            let from = self.path("dlq", old.seq);
            let to = self.path("pending", new);
            if let Err(source) = fs::rename(&from, &to) {
                let mut ix = lock(&self.index);
                ix.dlq.push_front(old);
                ix.dlq_bytes += old.bytes;
                return Err(QueueError::Io { path: from, source });
            }
            let mut ix = lock(&self.index);
            ix.pending.push_back(Entry { seq: new, ..old });
            ix.pending_bytes += old.bytes;
            moved += 1;
        }
        sync_dir(&self.root.join("pending"))?;
        sync_dir(&self.root.join("dlq"))?;
        self.stats.requeued.fetch_add(moved, Relaxed);
        self.evict();
        self.wake.notify_one();
        self.skip_backoff.notify_one();
        Ok(moved)
    }

    /// (pending payloads, pending bytes, dead letters, dead-letter bytes, oldest pending created ms)
    pub fn depth(&self) -> Depth {
        let ix = lock(&self.index);
        Depth {
            pending: ix.pending.len() as u64,
            pending_bytes: ix.pending_bytes,
            dlq: ix.dlq.len() as u64,
            dlq_bytes: ix.dlq_bytes,
            oldest_ms: ix.pending.front().map(|e| e.created_ms),
        }
    }

    /// The byte bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// A snapshot of a queue's size.
#[derive(Debug, Clone, Copy, Default)]
pub struct Depth {
    /// Payloads waiting for delivery.
    pub pending: u64,
    /// Their bytes on disk.
    pub pending_bytes: u64,
    /// Dead letters.
    pub dlq: u64,
    /// Their bytes on disk.
    pub dlq_bytes: u64,
    /// Unix milliseconds at which the oldest pending payload was queued.
    pub oldest_ms: Option<u64>,
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
