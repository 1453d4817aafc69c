//! The durable queue's crash paths, end to end (issue 20, defect 10), with the real binary and
//! the remote write stand-in:
//!
//! - killed (SIGKILL) after the receiver took a payload but before tallyd saw the 2xx and
//!   acked it: the payload is still on disk and is sent again, once, with the same
//!   `X-Tallyd-Payload-Id` (delivery is at-least-once; a receiver de-duplicates by that id);
//! - files left in `tmp/` by a crash are removed at start, and a complete payload left in
//!   `pending/` is delivered;
//! - the dead-letter queue stays within `queue.dlq_max_bytes`, the oldest letters dropped and
//!   counted exactly;
//! - a truncated or corrupted payload file found at start is set aside as `<seq>.corrupt`,
//!   counted, never sent, and the payloads around it are delivered;
//! - the shutdown drain (`queue.shutdown_drain`) delivers what is queued when the receiver is
//!   back, and leaves on disk, for the next start, what it cannot deliver in time.
//!
//! Payload ids are `<queue>-<created ms>-<seq>` and sequence numbers are handed out 1, 2, 3...,
//! so "every payload delivered exactly once" is checked as: the delivered sequence numbers are
//! 1..=n with no gap and no repeat.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::remote_write::{wire, StandIn};
use common::{merge, Tallyd, BASE_CONFIG};
use prost::Message as _;

fn config(rx: &StandIn, queue: &Path, extra: &str) -> String {
    let base = merge(
        BASE_CONFIG,
        &format!(
            r#"
[remote_write]
url = "http://{}/push"
[queue]
directory = "{}"
backoff_initial = "50ms"
backoff_max = "200ms"
{extra}
"#,
            rx.addr,
            queue.display()
        ),
    );
    // No GPS or OTLP listeners: nothing here needs them.
    base.replace("[gps]\n", "[gps]\nenabled = false\n")
}

fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn stats(t: &Tallyd) -> serde_json::Value {
    let (code, body) = t.get("/admin/queue/stats");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["queues"]["remote_write"].clone()
}

/// The sequence number at the end of a payload id.
fn seq(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("payload id {id:?} does not end in a sequence number"))
}

/// How many times each sequence number was answered 204.
fn delivered(rx: &StandIn) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for s in rx.seen().iter().filter(|s| s.status == 204) {
        *out.entry(seq(&s.payload_id)).or_default() += 1;
    }
    out
}

/// Sequence numbers of the files in `dir` (`<seq hex>.tq`).
fn files(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    u64::from_str_radix(n.strip_suffix(".tq")?, 16).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

fn metric(t: &Tallyd, series: &str) -> f64 {
    common::value(&t.metrics(), series).unwrap_or_else(|| panic!("{series} not in /metrics"))
}

#[test]
fn killed_after_the_receiver_took_a_payload_it_is_sent_again_once_with_the_same_id() {
    let root = tempfile::tempdir().expect("tempdir");
    let rx = StandIn::start(&[]);
    let cfg = config(&rx, root.path(), "");
    let mut t = Tallyd::start_raw(&cfg, &[]);
    let pid = libc::pid_t::try_from(t.pid()).expect("pid");
    // The first request carrying the counter is recorded as accepted (204) and then tallyd
    // is killed before the answer is written: the receiver has it, tallyd never saw the 2xx.
    // (payload id, series) of the request that killed tallyd.
    type Killed = Option<(String, Vec<String>)>;
    let killed: Arc<Mutex<Killed>> = Arc::default();
    let k = Arc::clone(&killed);
    rx.before_answer(move |s| {
        let mut k = k.lock().expect("killed");
        if k.is_none() && s.series.iter().any(|l| l.starts_with("crash_ack_total")) {
            // SAFETY: kill only sends a signal to the tallyd this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            *k = Some((s.payload_id.clone(), s.series.clone()));
        }
    });
    t.send_tcp("crash.ack:5|c\n");
    let (id, series) = wait_until(15, "the request that kills tallyd", || {
        killed.lock().expect("killed").clone()
    });
    t.kill9();
    // Still queued on disk: the ack never happened.
    let pending = root.path().join("remote_write/pending");
    assert!(files(&pending).contains(&seq(&id)), "{:?}", files(&pending));

    rx.before_answer(|_| {});
    let t = Tallyd::start_raw(&cfg, &[]);
    wait_until(15, "the payload sent again after the restart", || {
        (rx.seen().iter().filter(|s| s.payload_id == id).count() == 2).then_some(())
    });
    wait_until(10, "an empty queue", || {
        (stats(&t)["pending"] == 0 && !files(&pending).contains(&seq(&id))).then_some(())
    });
    let again: Vec<_> = rx
        .seen()
        .into_iter()
        .filter(|s| s.payload_id == id)
        .collect();
    assert_eq!(again.len(), 2, "one copy before the kill, one after");
    assert!(again.iter().all(|s| s.status == 204));
    assert_eq!(again[1].series, series, "the same bytes are sent again");
    // Only that payload was seen twice: at-least-once costs exactly the one in flight.
    let twice: Vec<u64> = delivered(&rx)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(s, _)| s)
        .collect();
    assert_eq!(twice, vec![seq(&id)], "{:?}", delivered(&rx));
}

/// A queue file as the previous run would have written it: a remote write request with one
/// counter `name` = `value`, as sequence number `seq`.
fn queued_file(name: &str, value: f64, seq: u64) -> (tallyd::queue::Meta, Vec<u8>) {
    let req = wire::WriteRequest {
        timeseries: vec![wire::TimeSeries {
            labels: vec![
                wire::Label {
                    name: "__name__".into(),
                    value: name.into(),
                },
                wire::Label {
                    name: "run".into(),
                    value: "previous".into(),
                },
            ],
            samples: vec![wire::Sample {
                value,
                timestamp: 1_700_000_000_000,
            }],
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let meta = tallyd::queue::Meta {
        id: format!("remote_write-1700000000000-{seq}"),
        endpoint: String::new(),
        content_type: "application/x-protobuf".into(),
        content_encoding: "snappy".into(),
        created_ms: 1_700_000_000_000,
        ..Default::default()
    };
    let file = tallyd::queue::store::encode(&meta, &body);
    (meta, file)
}

#[test]
fn damaged_payload_files_are_set_aside_and_counted_and_the_rest_delivered() {
    let root = tempfile::tempdir().expect("tempdir");
    let q = root.path().join("remote_write");
    for sub in ["pending", "dlq", "tmp"] {
        std::fs::create_dir_all(q.join(sub)).expect("mkdir");
    }
    let put = |seq: u64, bytes: &[u8]| {
        std::fs::write(q.join(format!("pending/{seq:016x}.tq")), bytes).expect("write");
    };
    let (_, good1) = queued_file("good_one_total", 1.0, 1);
    let (_, cut) = queued_file("cut_total", 2.0, 2);
    let (_, mut flipped) = queued_file("flipped_total", 3.0, 3);
    let (_, good4) = queued_file("good_four_total", 4.0, 4);
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    put(1, &good1);
    put(2, &cut[..cut.len() / 2]);
    put(3, &flipped);
    put(4, &good4);
    put(5, b"");

    let rx = StandIn::start(&[]);
    let t = Tallyd::start_raw(&config(&rx, root.path(), ""), &[]);
    wait_until(15, "the good payloads", || {
        let d = delivered(&rx);
        (d.get(&1) == Some(&1) && d.get(&4) == Some(&1)).then_some(())
    });
    let m = t.wait_metrics(
        |m| {
            common::value(
                m,
                "tallyd_forwarder_corrupt_files_total{queue=\"remote_write\"}",
            ) == Some(3.0)
        },
        "three damaged files counted",
    );
    assert!(m.contains("tallyd_forwarder_corrupt_files_total"), "{m}");
    // Never sent, set aside for a human to look at.
    let d = delivered(&rx);
    for bad in [2, 3, 5] {
        assert!(
            !d.contains_key(&bad),
            "damaged payload {bad} was sent: {d:?}"
        );
        assert!(
            q.join(format!("pending/{bad:016x}.corrupt")).is_file(),
            "{bad} not set aside"
        );
    }
    wait_until(10, "an empty queue", || {
        (files(&q.join("pending")).iter().all(|&s| s > 5)).then_some(())
    });
    let sent: Vec<String> = rx
        .seen()
        .iter()
        .filter(|r| seq(&r.payload_id) <= 5)
        .flat_map(|r| r.series.clone())
        .collect();
    assert_eq!(
        sent,
        vec![
            "good_one_total{run=\"previous\"} 1".to_string(),
            "good_four_total{run=\"previous\"} 4".to_string()
        ]
    );
}

#[test]
fn leftover_temporary_files_are_removed_at_start_and_pending_payloads_are_delivered() {
    let root = tempfile::tempdir().expect("tempdir");
    let q = root.path().join("remote_write");
    for sub in ["pending", "dlq", "tmp"] {
        std::fs::create_dir_all(q.join(sub)).expect("mkdir");
    }
    // What a crash in the middle of writes leaves: a cut-off file and an empty one in tmp/.
    std::fs::write(q.join("tmp/0000000000000007.tq"), b"TQ01\x10\x00").expect("tmp");
    std::fs::write(q.join("tmp/0000000000000008.tq"), b"").expect("tmp");
    // A complete payload queued by the previous run, as sequence number 5.
    let (meta, file) = queued_file("left_over_total", 3.0, 5);
    std::fs::write(q.join("pending/0000000000000005.tq"), file).expect("pending");

    let rx = StandIn::start(&[]);
    let t = Tallyd::start_raw(&config(&rx, root.path(), ""), &[]);
    // The queue was opened before "tallyd started": tmp/ is already clean.
    let left: Vec<_> = std::fs::read_dir(q.join("tmp"))
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let seen = wait_until(15, "the left-over payload", || {
        let s = rx.seen();
        s.iter()
            .any(|r| r.payload_id == meta.id && r.status == 204)
            .then_some(s)
    });
    let first = seen
        .iter()
        .find(|r| r.payload_id == meta.id)
        .expect("found");
    assert_eq!(
        first.series,
        vec!["left_over_total{run=\"previous\"} 3".to_string()]
    );
    // It went first, and new payloads are numbered after it.
    assert_eq!(seen[0].payload_id, meta.id, "{seen:?}");
    t.send_tcp("after.start:1|c\n");
    let later = wait_until(15, "a new payload", || {
        rx.seen()
            .into_iter()
            .find(|r| r.series.iter().any(|l| l.starts_with("after_start_total")))
    });
    assert!(seq(&later.payload_id) > 5, "{}", later.payload_id);
    assert_eq!(delivered(&rx).get(&5), Some(&1));
}

#[test]
fn the_dead_letter_queue_stays_within_its_bound_and_counts_what_it_drops() {
    let root = tempfile::tempdir().expect("tempdir");
    let rx = StandIn::start(&[]);
    rx.set_status(Some(400));
    let t = Tallyd::start_raw(&config(&rx, root.path(), "dlq_max_bytes = 1048576"), &[]);
    // 3,000 counters with long, poorly compressible names: every window's request is tens of
    // kilobytes, so the 1 MiB bound is passed within seconds.
    let mut lines = String::new();
    for i in 0..3000u64 {
        let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        lines.push_str(&format!(
            "dlq.bound.{h:016x}.{:016x}:1|c\n",
            h.rotate_left(17)
        ));
    }
    t.send_tcp(&lines);
    let dlq = root.path().join("remote_write/dlq");
    wait_until(60, "letters dropped at the bound", || {
        let s = stats(&t);
        let bytes = s["dlq_bytes"].as_u64().expect("dlq_bytes");
        assert!(bytes <= 1_048_576, "dead letters over the bound: {s}");
        (metric(
            &t,
            "tallyd_forwarder_dlq_dropped_total{queue=\"remote_write\"}",
        ) >= 3.0)
            .then_some(())
    });
    // The receiver takes everything again: no more letters; the counts settle.
    rx.set_status(None);
    wait_until(15, "a delivery", || {
        (stats(&t)["delivered"].as_u64() > Some(0)).then_some(())
    });
    let s = stats(&t);
    let dropped = metric(
        &t,
        "tallyd_forwarder_dlq_dropped_total{queue=\"remote_write\"}",
    );
    let on_disk = files(&dlq);
    let bytes: u64 = on_disk
        .iter()
        .map(|n| {
            std::fs::metadata(dlq.join(format!("{n:016x}.tq")))
                .expect("letter")
                .len()
        })
        .sum();
    assert_eq!(s["dlq_size"].as_u64(), Some(on_disk.len() as u64), "{s}");
    assert_eq!(s["dlq_bytes"].as_u64(), Some(bytes), "{s}");
    assert!(bytes <= 1_048_576, "{bytes}");
    // Every rejected payload is either a letter on disk or counted as dropped.
    assert_eq!(
        s["dead_lettered"].as_u64(),
        Some(on_disk.len() as u64 + dropped as u64),
        "{s}; dropped {dropped}"
    );
    // The oldest went first: the letters kept are the newest ones, in a run.
    let rejected: Vec<u64> = rx
        .seen()
        .iter()
        .filter(|r| r.status == 400)
        .map(|r| seq(&r.payload_id))
        .collect();
    let newest: Vec<u64> = rejected[rejected.len() - on_disk.len()..].to_vec();
    assert_eq!(on_disk, newest);
}

#[test]
fn the_shutdown_drain_delivers_the_queue_when_the_receiver_is_back() {
    let root = tempfile::tempdir().expect("tempdir");
    let rx = StandIn::start(&[]);
    rx.set_status(Some(503));
    let mut t = Tallyd::start_raw(&config(&rx, root.path(), "shutdown_drain = \"15s\""), &[]);
    t.send_tcp("drain.me:1|c\n");
    wait_until(15, "five payloads waiting", || {
        (stats(&t)["pending"].as_u64() >= Some(5)).then_some(())
    });
    rx.set_status(None);
    let status = t.terminate();
    assert!(status.success(), "{status}");
    // Nothing left on disk, and every payload ever queued was delivered exactly once.
    assert_eq!(
        files(&root.path().join("remote_write/pending")),
        Vec::<u64>::new()
    );
    let d = delivered(&rx);
    let n = d.len() as u64;
    assert!(n >= 5, "{d:?}");
    assert_eq!(
        d.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert!(d.values().all(|&c| c == 1), "{d:?}");
}

#[test]
fn what_the_drain_cannot_deliver_stays_queued_for_the_next_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let rx = StandIn::start(&[]);
    rx.set_status(Some(503));
    let cfg = config(&rx, root.path(), "shutdown_drain = \"300ms\"");
    let mut t = Tallyd::start_raw(&cfg, &[]);
    t.send_tcp("drain.later:1|c\n");
    wait_until(15, "three payloads waiting", || {
        (stats(&t)["pending"].as_u64() >= Some(3)).then_some(())
    });
    let status = t.terminate();
    assert!(status.success(), "{status}");
    let left = files(&root.path().join("remote_write/pending"));
    assert!(left.len() >= 3, "{left:?}");
    // Nothing was delivered: the receiver refused everything.
    assert!(delivered(&rx).is_empty());

    rx.set_status(None);
    let t = Tallyd::start_raw(&cfg, &[]);
    wait_until(15, "the left payloads delivered", || {
        let d = delivered(&rx);
        left.iter().all(|s| d.contains_key(s)).then_some(())
    });
    let d = delivered(&rx);
    // Left payloads are 1..=k, each delivered once; the new run numbers after them.
    assert_eq!(left, (1..=left.len() as u64).collect::<Vec<_>>());
    assert!(d.values().all(|&c| c == 1), "{d:?}");
    drop(t);
}
