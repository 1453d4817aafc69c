//! End-to-end: the queue directory stops taking writes while tallyd runs (a full 1 MiB tmpfs, a
//! true ENOSPC; where mounting is refused, `pending/` replaced by a regular file). Traffic keeps
//! flowing in, the lost payloads are counted and reported as `degraded` by `/health` and
//! `/admin/queue/health`, nothing is left in `tmp/`, and delivery resumes once there is room.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::intake::Intake;
use common::{merge, Tallyd, BASE_CONFIG};

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// A 1 MiB tmpfs mounted on a directory; unmounted when dropped (also when a test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// How the queue directory is made unwritable.
enum Breaker {
    /// Fill the tmpfs with one file until ENOSPC; delete it to make room again.
    Fill { filler: PathBuf, _mount: Tmpfs },
    /// Replace `<queue>/pending/` with a regular file; put the directory back to repair.
    Structural,
}

impl Breaker {
    fn break_it(&self, queue: &Path) {
        match self {
            Breaker::Fill { filler, .. } => {
                let mut f = std::fs::File::create(filler).expect("filler");
                let chunk = vec![0u8; 16 * 1024];
                loop {
                    if let Err(e) = f.write_all(&chunk).and_then(|()| f.flush()) {
                        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                        break;
                    }
                }
            }
            Breaker::Structural => {
                let pending = queue.join("pending");
                std::fs::rename(&pending, queue.join("pending.away")).expect("move pending");
                std::fs::write(&pending, b"not a directory").expect("file in its place");
            }
        }
    }

    fn repair(&self, queue: &Path) {
        match self {
            Breaker::Fill { filler, .. } => std::fs::remove_file(filler).expect("remove filler"),
            Breaker::Structural => {
                let pending = queue.join("pending");
                std::fs::remove_file(&pending).expect("remove the file");
                std::fs::rename(queue.join("pending.away"), &pending).expect("restore pending");
            }
        }
    }

    /// What the reported error names.
    fn error_text(&self) -> &'static str {
        match self {
            Breaker::Fill { .. } => "No space left on device",
            Breaker::Structural => "Not a directory",
        }
    }
}

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn json(t: &Tallyd, path: &str) -> serde_json::Value {
    let (_, body) = t.get(path);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn queue_stats(t: &Tallyd) -> serde_json::Value {
    json(t, "/admin/queue/stats")["queues"]["datadog"].clone()
}

fn tmp_files(queue: &Path) -> Vec<String> {
    std::fs::read_dir(queue.join("tmp"))
        .expect("tmp dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The number at the start of a "N payloads could not be queued ..." reason, if `text` has one.
fn lost_count(text: &str) -> Option<u64> {
    let (before, _) = text.split_once(" could not be queued in the last ")?;
    let words: Vec<&str> = before.split_whitespace().collect();
    match words.as_slice() {
        [.., n, "payload" | "payloads"] => n.parse().ok(),
        _ => None,
    }
}

#[test]
fn an_unwritable_queue_directory_is_reported_and_leaves_no_temporary_files() {
    let root = tempfile::tempdir().expect("tempdir");
    let breaker = match Tmpfs::mount(root.path()) {
        Ok(mount) => Breaker::Fill {
            filler: root.path().join("filler"),
            _mount: mount,
        },
        Err(why) => {
            eprintln!(
                "note: cannot mount a tmpfs ({why}); testing with pending/ replaced by a file \
                 instead of a true ENOSPC"
            );
            Breaker::Structural
        }
    };
    let intake = Intake::start(KEY);
    let dd = format!(
        r#"
[aggregate]
flush_interval = "500ms"
[datadog]
api_key = "{KEY}"
url = "{}"
hostname = "test-host"
request_timeout = "500ms"
[queue]
directory = "{}"
backoff_initial = "50ms"
backoff_max = "200ms"
"#,
        intake.url(),
        root.path().display()
    );
    let mut t = Tallyd::start_raw(&merge(BASE_CONFIG, &dd), &[]);
    let queue = root.path().join("datadog");

    // Healthy first: delivered, nothing waiting.
    t.send_udp("disk.before:1|c\n");
    intake.wait(15, "disk.before", |a| {
        a.series.iter().any(|s| s.metric == "disk.before")
    });
    wait_until(10, "an empty queue", || queue_stats(&t)["pending"] == 0);

    breaker.break_it(&queue);
    wait_until(15, "two payloads that could not be queued", || {
        t.send_udp("disk.during:1|c\n");
        std::thread::sleep(Duration::from_millis(100));
        queue_stats(&t)["enqueue_failed"].as_u64().unwrap_or(0) >= 2
    });

    // /health: the datadog line is degraded with the count and the error (it is refreshed
    // every 500 ms).
    let mut line = serde_json::Value::Null;
    wait_until(5, "/health to count two losses", || {
        line = json(&t, "/health")["components"]["datadog"].clone();
        line["detail"]
            .as_str()
            .and_then(lost_count)
            .is_some_and(|n| n >= 2)
    });
    assert_eq!(line["status"], "degraded", "{line}");
    let detail = line["detail"].as_str().expect("detail");
    assert!(detail.contains(breaker.error_text()), "{detail}");

    // /admin/queue/health: degraded, the loss named first.
    let (code, body) = t.get("/admin/queue/health");
    assert_eq!(code, 200, "degraded is not critical: {body}");
    let qh: serde_json::Value = serde_json::from_str(&body).expect("json");
    let dd = &qh["queues"]["datadog"];
    assert_eq!(dd["status"], "degraded", "{body}");
    let reason = dd["reasons"][0].as_str().expect("a reason");
    assert!(lost_count(reason).is_some_and(|n| n >= 2), "{reason}");
    assert!(reason.contains(breaker.error_text()), "{reason}");

    // /metrics: the counter, and it matches the admin API.
    let text = t.metrics();
    let counted = common::value(
        &text,
        "tallyd_forwarder_enqueue_failures_total{queue=\"datadog\"}",
    )
    .expect("tallyd_forwarder_enqueue_failures_total");
    assert!(counted >= 2.0, "{counted}");

    // Nothing is left in tmp/ (a push in progress may hold one file for a moment).
    wait_until(5, "an empty tmp/", || tmp_files(&queue).is_empty());

    // Room again: traffic that arrives now is delivered; the loss stays visible for a while.
    breaker.repair(&queue);
    wait_until(15, "delivery after the repair", || {
        t.send_udp("disk.after:1|c\n");
        std::thread::sleep(Duration::from_millis(100));
        intake
            .accepted()
            .series
            .iter()
            .any(|s| s.metric == "disk.after")
    });
    let line = json(&t, "/health")["components"]["datadog"].clone();
    assert_eq!(line["status"], "degraded", "{line}");
    assert!(tmp_files(&queue).is_empty(), "{:?}", tmp_files(&queue));

    let status = t.terminate();
    assert!(status.success(), "{status}");
}
