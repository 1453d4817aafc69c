//! Point delivery: every valid fix becomes a [`Point`], stored at least once by every
//! configured [`PointSink`] before the device is acknowledged.
//!
//! Connections hand batches to one writer thread through a bounded channel
//! (`gps.points_queue_batches`) and wait for the verdict. Only when every sink has stored the
//! batch does the connection send the device its acknowledgement; a device that gets none sends
//! the same positions again (GT06, Teltonika, H02 resend until acknowledged). A full channel or
//! a failed write is counted in `live.points_failed` and the batch is not acknowledged. The
//! writer commits whatever batches are waiting with one write and one fsync.
//!
//! The bundled sink is [`NdjsonFile`]: one JSON object per line, rotated by size into a bounded
//! number of files. Another destination (the durable `live_points` queue feeding an HTTP
//! endpoint) plugs in by implementing [`PointSink`] and being passed to [`Delivery::start`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::fix::{rfc3339_ms, Attr, Fix, Protocol};
use super::metrics::GpsStats;

/// One delivered position. Field names are the NDJSON output format (see docs/gps.md).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// The device's identity (IMEI or the id it logged in with).
    pub device_id: String,
    /// The protocol it spoke.
    pub protocol: Protocol,
    /// Device time, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Device time, Unix milliseconds.
    pub time_ms: i64,
    /// When tallyd decoded the frame, Unix milliseconds.
    pub received_ms: i64,
    /// Latitude in degrees (see [`Fix`] for the units of the fields below).
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Altitude in metres, when the protocol carries it.
    pub altitude: Option<f64>,
    /// Ground speed in km/h.
    pub speed_kmh: f64,
    /// Heading in degrees clockwise from true north.
    pub course: f64,
    /// Satellites used, when reported.
    pub satellites: Option<u32>,
    /// The device's own validity flag.
    pub valid: bool,
    /// Protocol-specific values kept as sent.
    pub attributes: BTreeMap<String, Attr>,
}

impl Point {
    /// The point of `fix` from `device_id`, decoded at `received_ms` (Unix ms).
    pub fn new(device_id: &str, protocol: Protocol, fix: Fix, received_ms: i64) -> Point {
        Point {
            device_id: device_id.to_string(),
            protocol,
            time: rfc3339_ms(fix.time_ms),
            time_ms: fix.time_ms,
            received_ms,
            lat: fix.lat,
            lon: fix.lon,
            altitude: fix.altitude,
            speed_kmh: fix.speed_kmh,
            course: fix.course,
            satellites: fix.satellites,
            valid: fix.valid,
            attributes: fix.attributes,
        }
    }
}

/// Why a sink could not store a batch.
#[derive(Debug)]
pub struct PointError {
    /// The sink's [`PointSink::name`].
    pub sink: &'static str,
    /// What went wrong.
    pub detail: String,
}

impl std::fmt::Display for PointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "point sink {} failed: {}", self.sink, self.detail)
    }
}

/// A destination for points. `store` runs on the writer thread and may block; returning `Ok`
/// promises the points survive a crash from then on (written and, if configured, fsynced, or
/// accepted by a durable queue).
pub trait PointSink: Send {
    /// The sink's name, for logs and errors.
    fn name(&self) -> &'static str;
    /// # Errors
    /// When the points could not be stored; the batch is then not acknowledged to the device.
    fn store(&mut self, points: &[Point]) -> Result<(), PointError>;
}

struct Batch {
    points: Vec<Point>,
    done: oneshot::Sender<bool>,
}

/// The connections' handle on the writer. Cloned per connection; when the last clone is
/// dropped the writer finishes what is queued and exits.
#[derive(Clone)]
pub struct Delivery {
    tx: Option<mpsc::Sender<Batch>>,
    stats: Arc<GpsStats>,
}

impl Delivery {
    /// Starts the writer thread over `sinks`. With no sinks, points are not produced at all.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(
        sinks: Vec<Box<dyn PointSink>>,
        capacity: usize,
        stats: Arc<GpsStats>,
    ) -> std::io::Result<(Delivery, Option<std::thread::JoinHandle<()>>)> {
        if sinks.is_empty() {
            return Ok((Delivery { tx: None, stats }, None));
        }
        let (tx, rx) = mpsc::channel(capacity);
        let s = Arc::clone(&stats);
        let handle = std::thread::Builder::new()
            .name("gps-points".into())
            .spawn(move || writer(rx, sinks, &s))?;
        Ok((
            Delivery {
                tx: Some(tx),
                stats,
            },
            Some(handle),
        ))
    }

    /// True when points are delivered anywhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Hands `points` to the writer and waits until they are stored. False when the channel is
    /// full, the writer is gone, or a sink failed.
    pub async fn deliver(&self, points: Vec<Point>) -> bool {
        let Some(tx) = &self.tx else { return true };
        let n = points.len() as u64;
        self.stats.points(n, 0, 0, super::server::now_ms());
        let (done, verdict) = oneshot::channel();
        if tx.try_send(Batch { points, done }).is_err() {
            self.stats.queue_full();
            self.stats.points(0, 0, n, super::server::now_ms());
            return false;
        }
        verdict.await.unwrap_or(false)
    }
}

/// Most batches committed by one write.
const MAX_GROUP: usize = 256;

fn writer(mut rx: mpsc::Receiver<Batch>, mut sinks: Vec<Box<dyn PointSink>>, stats: &GpsStats) {
    let mut group: Vec<Batch> = Vec::with_capacity(MAX_GROUP);
    let mut points: Vec<Point> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(b) => group.push(b),
                Err(_) => break,
            }
        }
        points.clear();
        for b in &mut group {
            points.append(&mut b.points);
        }
        let mut ok = true;
        for s in &mut sinks {
            if let Err(e) = s.store(&points) {
                ok = false;
                log_failure(&e);
            }
        }
        let now = super::server::now_ms();
        let n = points.len() as u64;
        if ok {
            stats.points(0, n, 0, now);
            stats.latencies(points.iter().map(|p| (now - p.time_ms).max(0) as f64), now);
        } else {
            stats.points(0, 0, n, now);
        }
        for b in group.drain(..) {
            let _ = b.done.send(ok);
        }
    }
}

/// Logs a failed store at most once per second.
fn log_failure(e: &PointError) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let sec = (super::server::now_ms() / 1000) as u64;
    if LAST.swap(sec, Relaxed) != sec {
        tracing::error!(error = %e, "cannot store GPS points; devices are not acknowledged and will resend");
    }
}

/// NDJSON file sink with size-based rotation: `points.ndjson` is renamed `points.ndjson.1`
/// (older ones shift up) when a write would take it past `max_bytes`, and at most `max_files`
/// files exist, counting the current one.
pub struct NdjsonFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    max_files: usize,
    fsync: bool,
    buf: Vec<u8>,
}

impl NdjsonFile {
    /// Opens (creating directories as needed) `path` for appending.
    ///
    /// # Errors
    /// When the directory or file cannot be created.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        max_files: usize,
        fsync: bool,
    ) -> std::io::Result<NdjsonFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(NdjsonFile {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max_bytes,
            max_files,
            fsync,
            buf: Vec::new(),
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.max_files <= 1 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.max_files - 1));
            for n in (1..self.max_files - 1).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        self.size = 0;
        Ok(())
    }

    fn write_lines(&mut self) -> std::io::Result<()> {
        if self.size > 0 && self.size + self.buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("no file"));
        };
        f.write_all(&self.buf)?;
        if self.fsync {
            f.sync_data()?;
        }
        self.size += self.buf.len() as u64;
        Ok(())
    }
}

impl PointSink for NdjsonFile {
    fn name(&self) -> &'static str {
        "ndjson_file"
    }

    fn store(&mut self, points: &[Point]) -> Result<(), PointError> {
        self.buf.clear();
        for p in points {
            // A Point has only strings, numbers and maps with string keys: it always serializes.
            if serde_json::to_writer(&mut self.buf, p).is_ok() {
                self.buf.push(b'\n');
            }
        }
        let r = self.write_lines();
        if r.is_err() {
            // Reopen on the next batch; a partial line may remain, and the batch is retried by the device.
            self.file = None;
        }
        r.map_err(|e| PointError {
            sink: "ndjson_file",
            detail: format!("{}: {e}", self.path.display()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: i64) -> Point {
        Point {
            device_id: "dev".into(),
            protocol: Protocol::Gt06,
            time: rfc3339_ms(i),
            time_ms: i,
            received_ms: i,
            lat: 1.5,
            lon: -2.25,
            altitude: None,
            speed_kmh: 10.0,
            course: 90.0,
            satellites: Some(7),
            valid: true,
            attributes: BTreeMap::from([("status".to_string(), Attr::Text("A".into()))]),
        }
    }

    #[test]
    fn ndjson_lines_and_rotation_keep_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/points.ndjson");
        let mut f = NdjsonFile::open(&path, 4096, 3, true).expect("open");
        f.store(&[point(0)]).expect("store");
        let text = std::fs::read_to_string(&path).expect("read");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).expect("json line");
        assert_eq!(v["device_id"], "dev");
        assert_eq!(v["protocol"], "gt06");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["lon"], -2.25);
        assert_eq!(v["satellites"], 7);
        assert_eq!(v["altitude"], serde_json::Value::Null);
        assert_eq!(v["attributes"]["status"], "A");
        let line_len = text.len() as i64;
        let mut written = 1;
        for i in 1..(4096 / line_len) * 5 {
            f.store(&[point(i)]).expect("store");
            written += 1;
        }
        let mut files: Vec<String> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        files.sort();
        assert_eq!(
            files,
            vec!["points.ndjson", "points.ndjson.1", "points.ndjson.2"]
        );
        for name in &files {
            let len = std::fs::metadata(path.with_file_name(name))
                .expect("meta")
                .len();
            assert!(len <= 4096, "{name} is {len} bytes");
        }
        // The newest lines are in the current file, in order, and none is split.
        let current = std::fs::read_to_string(&path).expect("read");
        let last: serde_json::Value =
            serde_json::from_str(current.lines().last().expect("line")).expect("json");
        assert_eq!(last["time_ms"], written - 1);
    }

    #[test]
    fn delivery_confirms_after_store_and_fails_when_the_sink_fails() {
        struct Failing;
        impl PointSink for Failing {
            fn name(&self) -> &'static str {
                "failing"
            }
            fn store(&mut self, _: &[Point]) -> Result<(), PointError> {
                Err(PointError {
                    sink: "failing",
                    detail: "disk full".into(),
                })
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let dir = tempfile::tempdir().expect("tempdir");
        let stats = Arc::new(GpsStats::default());
        let file = NdjsonFile::open(&dir.path().join("p.ndjson"), 1 << 20, 2, false).expect("open");
        let (d, h) = Delivery::start(vec![Box::new(file)], 4, Arc::clone(&stats)).expect("start");
        assert!(rt.block_on(d.deliver(vec![point(1), point(2)])));
        drop(d);
        h.expect("thread").join().expect("join");
        let lines = std::fs::read_to_string(dir.path().join("p.ndjson")).expect("read");
        assert_eq!(lines.lines().count(), 2);
        assert_eq!(stats.point_counts(), (2, 2, 0));

        let stats = Arc::new(GpsStats::default());
        let (d, h) =
            Delivery::start(vec![Box::new(Failing)], 4, Arc::clone(&stats)).expect("start");
        assert!(!rt.block_on(d.deliver(vec![point(1)])));
        drop(d);
        h.expect("thread").join().expect("join");
        assert_eq!(stats.point_counts(), (1, 0, 1));
    }
}
