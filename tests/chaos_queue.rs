//! Chaos runs against the durable queue, with the real binary and the Datadog stand-in. They
//! take minutes, so they are `#[ignore]`d: run them by name, one at a time, and read the
//! `CHAOS` lines they print (RELIABILITY.md records the figures):
//!
//! ```text
//! cargo test --release --test chaos_queue -- --ignored --nocapture --test-threads 1
//! cargo test --release --test chaos_queue intake_down -- --ignored --nocapture
//! CHAOS_OUTAGE_SECS=60 cargo test --test chaos_queue intake_down -- --ignored --nocapture
//! CHAOS_KILLS=10 cargo test --test chaos_queue kill_9 -- --ignored --nocapture
//! ```
//!
//! Each asserts what tallyd promises (nothing lost within the byte limits; what is lost
//! outside them counted) and prints what was sent, delivered, lost and duplicated.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::intake::{Fault, Intake};
use common::{merge, Tallyd, BASE_CONFIG};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const COUNTERS: usize = 100;

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}

fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(intake: &Intake, queue: &Path, extra: &str) -> String {
    merge(
        BASE_CONFIG,
        &format!(
            r#"
[aggregate]
flush_interval = "1s"
[datadog]
api_key = "{KEY}"
url = "{}"
hostname = "chaos"
request_timeout = "2s"
[queue]
directory = "{}"
{extra}
"#,
            intake.url(),
            queue.display()
        ),
    )
}

fn stats(t: &Tallyd) -> serde_json::Value {
    let (_, body) = t.get("/admin/queue/stats");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["queues"]["datadog"].clone()
}

/// Sends `chaos.<tag>.c<i>:1|c` round-robin over `COUNTERS` counters at `rate` lines/s, 10
/// lines per datagram, until `stop`; counts what it sent per counter.
struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<BTreeMap<String, f64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sender {
    fn start(to: SocketAddr, tag: &str, rate: f64) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&sent));
        let tag = tag.to_string();
        let thread = std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let start = Instant::now();
            let mut lines: u64 = 0;
            while !s.load(Relaxed) {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                if lines + 10 > due {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let mut dgram = String::new();
                let mut names = Vec::new();
                for k in 0..10 {
                    let name = format!("chaos.{tag}.c{}", (lines + k) as usize % COUNTERS);
                    dgram.push_str(&format!("{name}:1|c\n"));
                    names.push(name);
                }
                if sock.send_to(dgram.as_bytes(), to).is_ok() {
                    let mut m = c.lock().expect("sent");
                    for n in names {
                        *m.entry(n).or_default() += 1.0;
                    }
                }
                lines += 10;
            }
        });
        Sender {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> BTreeMap<String, f64> {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sender");
        }
        self.sent.lock().expect("sent").clone()
    }
}

/// What the intake counted per counter (sum of value × interval of the RATE points).
fn counted(intake: &Intake, tag: &str) -> HashMap<String, f64> {
    let prefix = format!("chaos.{tag}.");
    let mut out = HashMap::new();
    for s in intake.accepted().series.iter() {
        if s.metric.starts_with(&prefix) {
            let e = out.entry(s.metric.clone()).or_default();
            for p in &s.points {
                *e += (p.value * s.interval as f64).round();
            }
        }
    }
    out
}

/// Payload ids the intake accepted more than once, and how many extra copies.
fn duplicates(intake: &Intake) -> (usize, usize) {
    let mut n: HashMap<String, usize> = HashMap::new();
    for id in &intake.accepted().ids {
        *n.entry(id.clone()).or_default() += 1;
    }
    let dup: Vec<usize> = n.values().filter(|&&c| c > 1).copied().collect();
    (dup.len(), dup.iter().map(|c| c - 1).sum())
}

fn kernel_drops(t: &Tallyd) -> f64 {
    common::value(&t.metrics(), "tallyd_udp_kernel_drops_total").unwrap_or(0.0)
}

/// Waits until every line sent was read and flushed, the queue is empty and the intake
/// counted `sent`; returns the per-counter differences (sent − counted) that remain after
/// `secs` (empty when nothing was lost).
fn settle(
    t: &Tallyd,
    intake: &Intake,
    tag: &str,
    sent: &BTreeMap<String, f64>,
    secs: u64,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let c = counted(intake, tag);
        let diff: BTreeMap<String, f64> = sent
            .iter()
            .map(|(k, v)| (k.clone(), v - c.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, d)| *d != 0.0)
            .collect();
        let pending = stats(t)["pending"].as_u64().unwrap_or(1);
        if (diff.is_empty() && pending == 0) || Instant::now() > deadline {
            return diff;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "chaos: 10+ minutes; run by name (see the module docs)"]
fn intake_down_for_ten_minutes_at_10k_lines_per_second() {
    let outage = env_u64("CHAOS_OUTAGE_SECS", 600);
    let root = tempfile::tempdir().expect("tempdir");
    let intake = Intake::start(KEY);
    // The default backoff (2 s doubling to 64 s) and byte limits: what a deployment runs.
    let t = Tallyd::start_raw(&config(&intake, root.path(), ""), &[]);
    let mut tx = Sender::start(t.udp.expect("udp"), "outage", 10_000.0);
    wait_until(30, "a first delivery", || {
        intake
            .accepted()
            .series
            .iter()
            .any(|s| s.metric.starts_with("chaos.outage."))
            .then_some(())
    });
    intake.set_fault(Fault::Drop);
    let down = Instant::now();
    let (mut max_pending, mut max_bytes) = (0u64, 0u64);
    while down.elapsed() < Duration::from_secs(outage) {
        let s = stats(&t);
        max_pending = max_pending.max(s["pending"].as_u64().unwrap_or(0));
        max_bytes = max_bytes.max(s["pending_bytes"].as_u64().unwrap_or(0));
        assert!(
            max_bytes <= s["max_bytes"].as_u64().unwrap_or(u64::MAX),
            "{s}"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    let before_up = stats(&t);
    intake.set_fault(Fault::None);
    let up = Instant::now();
    wait_until(300, "the backlog delivered", || {
        (stats(&t)["pending"].as_u64() == Some(0)).then_some(())
    });
    let drained = up.elapsed().as_secs_f64();
    // Keep sending a little after recovery, then stop and account.
    std::thread::sleep(Duration::from_secs(5));
    let sent = tx.stop();
    let lost = settle(&t, &intake, "outage", &sent, 120);
    let total: f64 = sent.values().sum();
    let lost_total: f64 = lost.values().sum::<f64>() + 0.0; // + 0.0: an empty sum is -0.0
    let s = stats(&t);
    let (dup_ids, dup_copies) = duplicates(&intake);
    println!(
        "CHAOS intake_down: outage {outage} s at 10000 lines/s; sent {total} increments over {} counters; lost {lost_total}; \
         peak queue {max_pending} payloads / {max_bytes} bytes (max_bytes {}); at recovery {} pending; drained in {drained:.1} s; \
         retries {}, dropped {}, enqueue_failed {}; duplicate payload ids {dup_ids} ({dup_copies} extra copies); kernel drops {}",
        sent.len(),
        s["max_bytes"],
        before_up["pending"],
        s["retried"],
        s["dropped"],
        s["enqueue_failed"],
        kernel_drops(&t)
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_eq!(s["dropped"], 0, "{s}");
    assert_eq!(s["enqueue_failed"], 0, "{s}");
}

/// A tmpfs of `size` mounted on a directory; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this chaos run needs to mount a tmpfs (root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 4096];
    let mut n = 0;
    while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {
        n += chunk.len() as u64;
    }
    n
}

fn dir_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "chaos: needs root (tmpfs); run by name (see the module docs)"]
fn queue_disk_full_during_an_outage_then_space_freed() {
    let outage = env_u64("CHAOS_DISK_OUTAGE_SECS", 60);
    let root = tempfile::tempdir().expect("tempdir");
    let _mount = Tmpfs::mount(root.path(), "4m");
    let intake = Intake::start(KEY);
    let t = Tallyd::start_raw(
        &config(
            &intake,
            root.path(),
            "backoff_initial = \"200ms\"\nbackoff_max = \"1s\"",
        ),
        &[],
    );
    let mut tx = Sender::start(t.udp.expect("udp"), "disk", 10_000.0);
    wait_until(30, "a first delivery", || {
        intake
            .accepted()
            .series
            .iter()
            .any(|s| s.metric.starts_with("chaos.disk."))
            .then_some(())
    });
    // Leave room for a few payloads only, then take the intake down: the queue fills the disk.
    let filler = root.path().join("filler");
    let filled = fill(&filler) - 64 * 1024;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .and_then(|f| f.set_len(filled))
        .expect("leave 64 KiB");
    intake.set_fault(Fault::Drop);
    let mut peak = 0;
    let down = Instant::now();
    wait_until(outage + 60, "payloads that could not be queued", || {
        let s = stats(&t);
        peak = peak.max(s["pending"].as_u64().unwrap_or(0));
        (down.elapsed() >= Duration::from_secs(outage) && s["enqueue_failed"].as_u64() >= Some(3))
            .then_some(())
    });
    let during = stats(&t);
    let health = t.get("/health").1;
    let tmp_during = dir_files(&root.path().join("datadog/tmp"));
    // Space freed, intake back.
    std::fs::remove_file(&filler).expect("free space");
    intake.set_fault(Fault::None);
    wait_until(120, "the backlog delivered", || {
        (stats(&t)["pending"].as_u64() == Some(0)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let sent = tx.stop();
    let lost = settle(&t, &intake, "disk", &sent, 30);
    let s = stats(&t);
    let total: f64 = sent.values().sum();
    let lost_total: f64 = lost.values().sum::<f64>() + 0.0; // + 0.0: an empty sum is -0.0
    let windows_lost = s["enqueue_failed"].as_u64().unwrap_or(0);
    let corrupt = common::value(
        &t.metrics(),
        "tallyd_forwarder_corrupt_files_total{queue=\"datadog\"}",
    );
    println!(
        "CHAOS disk_full: tmpfs 4 MiB, filler {filled} bytes (64 KiB left), outage {outage} s at 10000 lines/s; sent {total}; lost {lost_total} \
         increments = {windows_lost} payloads that could not be queued (enqueue_failed; {} write errors); peak pending {peak} payloads, {} at the end of the outage; \
         tmp/ during the outage {:?}; corrupt files {corrupt:?}; health during: {}",
        s["enqueue_failed"],
        during["pending"],
        tmp_during,
        health.chars().take(400).collect::<String>()
    );
    // What was lost is what could not be written, and it was counted; each lost payload was
    // one 1 s window of about 10,000 increments (the sender's pacing lets a window hold a
    // datagram or two more).
    assert!(windows_lost >= 3, "{s}");
    assert!(peak > 0, "nothing was queued before the disk filled");
    assert!(lost_total <= windows_lost as f64 * 11_000.0, "{lost_total}");
    assert!(lost_total > 0.0);
    assert!(dir_files(&root.path().join("datadog/tmp")).is_empty());
    assert_eq!(corrupt, Some(0.0));
    assert!(health.contains("could not be queued"), "{health}");
}

/// What a kill left: files in pending/ and tmp/.
fn listing(q: &Path) -> (Vec<u64>, usize) {
    let pending = dir_files(&q.join("pending"))
        .iter()
        .filter_map(|n| u64::from_str_radix(n.strip_suffix(".tq")?, 16).ok())
        .collect();
    (pending, dir_files(&q.join("tmp")).len())
}

#[test]
#[ignore = "chaos: 50 kills, a few minutes; run by name (see the module docs)"]
fn kill_9_at_random_moments_loses_no_queued_payload() {
    let kills = env_u64("CHAOS_KILLS", 50);
    let root = tempfile::tempdir().expect("tempdir");
    let q = root.path().join("datadog");
    let intake = Intake::start(KEY);
    // Fast windows and a slow-ish intake now and then, so kills land in flushes, in queue
    // writes and in deliveries.
    let cfg = config(
        &intake,
        root.path(),
        "backoff_initial = \"50ms\"\nbackoff_max = \"200ms\"",
    )
    .replace("flush_interval = \"1s\"", "flush_interval = \"100ms\"");
    let mut rng: u64 = 0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id());
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Per run: the sequence numbers it may have used start after what was on disk.
    let mut runs: Vec<(u64, u64, u64)> = Vec::new(); // (first seq, start ms, end ms)
    let mut tmp_left = 0;
    let mut kills_with_tmp = 0;
    let mut kills_by_mode = [0u64; 3];
    let mut in_write = [0u64; 3];
    for k in 0..kills {
        let (pending, tmp) = listing(&q);
        if tmp > 0 {
            kills_with_tmp += 1;
            tmp_left += tmp;
        }
        let first = pending.iter().max().map_or(1, |m| m + 1);
        let start_ms = tallyd::queue::store::unix_ms();
        let before = std::time::SystemTime::now();
        let mut t = Tallyd::start_raw(&cfg, &[]);
        // What the killed run left in tmp/ is gone (the new run may be writing a file there).
        let stale: Vec<String> = std::fs::read_dir(q.join("tmp"))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.metadata()
                            .and_then(|m| m.modified())
                            .is_ok_and(|m| m < before)
                    })
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            stale.is_empty(),
            "tmp/ not cleaned at start of run {k}: {stale:?}"
        );
        let mut tx = Sender::start(t.udp.expect("udp"), "kill", 20_000.0);
        if next() % 3 == 0 {
            intake.set_fault(Fault::Slow(Duration::from_millis(30)));
        } else {
            intake.set_fault(Fault::None);
        }
        std::thread::sleep(Duration::from_millis(200 + next() % 700));
        let pid = libc::pid_t::try_from(t.pid()).expect("pid");
        // Three kinds of moment, in turn: at random; 1 ms into a window (the flush is
        // running); as soon as a file shows up in tmp/ (a queue write is under way).
        let mode = k % 3;
        match mode {
            0 => {}
            1 => {
                while tallyd::queue::store::unix_ms() % 100 != 1 {
                    std::hint::spin_loop();
                }
            }
            _ => {
                let give_up = Instant::now() + Duration::from_secs(3);
                while std::fs::read_dir(q.join("tmp")).is_ok_and(|mut d| d.next().is_none())
                    && Instant::now() < give_up
                {
                    std::hint::spin_loop();
                }
            }
        }
        // SAFETY: kill only sends a signal to the tallyd this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        t.kill9();
        if listing(&q).1 > 0 {
            in_write[mode as usize] += 1;
        }
        kills_by_mode[mode as usize] += 1;
        let end_ms = tallyd::queue::store::unix_ms();
        tx.stop();
        runs.push((first, start_ms, end_ms));
    }
    // A last, clean run delivers what is left.
    intake.set_fault(Fault::None);
    let (pending_before_last, _) = listing(&q);
    let t = Tallyd::start_raw(&cfg, &[]);
    wait_until(120, "the queue delivered", || {
        let (p, _) = listing(&q);
        (!p.iter().any(|s| pending_before_last.contains(s))).then_some(())
    });
    let corrupt = common::value(
        &t.metrics(),
        "tallyd_forwarder_corrupt_files_total{queue=\"datadog\"}",
    );
    drop(t);
    let corrupt_files = dir_files(&q.join("pending"))
        .into_iter()
        .filter(|n| n.ends_with(".corrupt"))
        .count();

    // Every payload id accepted, by run (created_ms within the run) and sequence number.
    let ids: Vec<String> = intake.accepted().ids.clone();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    let mut gaps = Vec::new();
    for (r, &(first, start, end)) in runs.iter().enumerate() {
        let mut seqs: Vec<u64> = per_id
            .keys()
            .filter_map(|id| {
                let mut p = id.rsplit('-');
                let seq: u64 = p.next()?.parse().ok()?;
                let ms: u64 = p.next()?.parse().ok()?;
                (ms >= start && ms <= end && seq >= first).then_some(seq)
            })
            .collect();
        // What this run left on disk was delivered by a later run under the same id, so it
        // is in `ids` too; nothing is left on disk, as the last run drained the queue.
        seqs.sort_unstable();
        seqs.dedup();
        if let (Some(&lo), Some(&hi)) = (seqs.first(), seqs.last()) {
            for s in lo..=hi {
                if seqs.binary_search(&s).is_err() {
                    gaps.push((r, s));
                }
            }
        }
    }
    let dups: Vec<(&str, usize)> = per_id
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(id, &n)| (*id, n))
        .collect();
    let extra: usize = dups.iter().map(|(_, n)| n - 1).sum();
    println!(
        "CHAOS kill_9: {kills} kills; {} payloads accepted ({} distinct ids); duplicates: {} ids sent twice ({extra} extra copies); \
         payloads missing inside a run's sequence: {}; kills that left a file in tmp/ (killed in a queue write): {kills_with_tmp} ({tmp_left} files, removed at the next start); \
         corrupt files: {corrupt:?} counted, {corrupt_files} on disk; kills random / at a window start / on a tmp file: {kills_by_mode:?}, of which left a tmp file: {in_write:?}",
        ids.len(),
        per_id.len(),
        dups.len(),
        gaps.len()
    );
    assert!(gaps.is_empty(), "payloads lost: {gaps:?}");
    assert_eq!(corrupt, Some(0.0));
    assert_eq!(corrupt_files, 0);
}
