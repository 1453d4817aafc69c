//! Chaos: tallyd's wall clock (CLOCK_REALTIME only) stepped back an hour, forward again, then
//! forward another hour, with libfaketime (Debian package `faketime`) preloaded into the tallyd
//! process alone; the monotonic clock is left alone (`DONT_FAKE_MONOTONIC=1`), and the offset
//! is re-read on every call (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`). Ignored (it
//! takes about two minutes and needs the library):
//!
//! ```text
//! apt-get install faketime
//! cargo test --test chaos_clock -- --ignored --nocapture
//! ```
//!
//! It prints `CHAOS clock` lines with what windows, `for:` durations and no-data alerts did
//! and checks what must hold: windows keep being flushed once per interval, every counter
//! increment reaches `/metrics` and the Datadog stand-in exactly once.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::intake::Intake;
use common::{merge, value, Tallyd, BASE_CONFIG};
use serde_json::Value;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn set_offset(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).expect("faketime file");
}

fn alerts(t: &Tallyd) -> Value {
    serde_json::from_str(&t.get("/api/alerts").1).expect("alerts json")
}

/// The state of rule `name`: "firing", "pending" or "none".
fn state(a: &Value, name: &str) -> &'static str {
    for (list, s) in [("firing", "firing"), ("pending", "pending")] {
        if a[list]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["alert"] == name))
        {
            return s;
        }
    }
    "none"
}

fn flushes(t: &Tallyd) -> f64 {
    value(&t.metrics(), "tallyd_flush_total").unwrap_or(0.0)
}

/// Waits until `n` more windows were flushed; bounded (3 s per window, for a loaded machine).
fn wait_windows(t: &Tallyd, n: f64) {
    let target = flushes(t) + n;
    let deadline = Instant::now() + Duration::from_secs(3 * n as u64 + 10);
    while flushes(t) < target {
        assert!(
            Instant::now() < deadline,
            "windows stopped being flushed: {} of {target}",
            flushes(t)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Timestamp (unix seconds) of the last point the intake accepted for `metric`.
fn newest_point(intake: &Intake, metric: &str) -> i64 {
    intake
        .accepted()
        .series
        .iter()
        .filter(|s| s.metric == metric)
        .flat_map(|s| s.points.iter().map(|p| p.timestamp))
        .last()
        .unwrap_or(0)
}

#[test]
#[ignore = "chaos: needs libfaketime (Debian package faketime); about two minutes"]
fn wall_clock_stepped_back_and_forward_an_hour() {
    assert!(
        Path::new(LIB).is_file(),
        "{LIB} is missing: apt-get install faketime"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let offset = dir.path().join("faketime");
    set_offset(&offset, "+0");
    let intake = Intake::start(KEY);
    let cfg = merge(
        BASE_CONFIG,
        &format!(
            r#"
[aggregate]
flush_interval = "1s"
[datadog]
api_key = "{KEY}"
url = "{}"
hostname = "clock"
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "500ms"
[alerts]
default_rules = false
[[alerts.rules]]
name = "ForShort"
metric = "clock.short"
warn = 10.0
for = "20s"
[[alerts.rules]]
name = "ForLong"
metric = "clock.long"
warn = 10.0
for = "30m"
[[alerts.rules]]
name = "Quiet"
metric = "clock.once"
no_data = "30m"
"#,
            intake.url()
        ),
    );
    let offset_s = offset.display().to_string();
    let t = Tallyd::start_raw(
        &cfg,
        &[
            ("LD_PRELOAD", LIB),
            ("FAKETIME_TIMESTAMP_FILE", &offset_s),
            ("FAKETIME_NO_CACHE", "1"),
            ("DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    // Every 100 ms: both gauges above their thresholds and one counter increment.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (s2, c2, tcp) = (Arc::clone(&stop), Arc::clone(&sent), t.tcp.expect("tcp"));
    let tx = std::thread::spawn(move || {
        let mut s = TcpStream::connect(tcp).expect("tcp");
        s.write_all(b"clock.once:1|g\n").expect("once");
        while !s2.load(Relaxed) {
            s.write_all(b"clock.short:20|g\nclock.long:20|g\nclock.count:1|c\n")
                .expect("write");
            c2.fetch_add(1, Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let wait_state = |name: &str, want: &str, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let a = alerts(&t);
            if state(&a, name) == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name} never became {want}: {a}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_state("ForShort", "pending", 15);
    wait_state("ForLong", "pending", 15);
    wait_windows(&t, 2.0);
    let ts0 = newest_point(&intake, "clock.count");

    // 1. One hour back. ForShort (for: 20s) has been pending for a few seconds.
    set_offset(&offset, "-1h");
    let f0 = flushes(&t);
    let real = Instant::now();
    wait_windows(&t, 30.0);
    let back = alerts(&t);
    let ts_back = newest_point(&intake, "clock.count");
    println!(
        "CHAOS clock back 1h: {} windows flushed in {:.1} s of real time; last Datadog point's timestamp moved {} s; ForShort (for 20s, pending before the step) after 30 windows: {}; ForLong: {}; Quiet (no_data 30m): {}",
        flushes(&t) - f0,
        real.elapsed().as_secs_f64(),
        ts_back - ts0,
        state(&back, "ForShort"),
        state(&back, "ForLong"),
        state(&back, "Quiet")
    );
    // `for` is measured on the window clock: after the step back it cannot elapse until the
    // clock is past the pending start again.
    assert_eq!(state(&back, "ForShort"), "pending", "{back}");
    assert!(
        ts_back < ts0,
        "window timestamps follow the wall clock back"
    );

    // 2. Forward again to the true time.
    set_offset(&offset, "+0");
    wait_state("ForShort", "firing", 15);
    let ts_fwd = newest_point(&intake, "clock.count");
    let a = alerts(&t);
    println!(
        "CHAOS clock forward 1h (back to true time): ForShort fired (it had been pending for more than 20 s of window time); ForLong {}; Quiet {}; last Datadog point's timestamp moved {} s from before the first step",
        state(&a, "ForLong"),
        state(&a, "Quiet"),
        ts_fwd - ts0
    );
    assert_eq!(state(&a, "ForLong"), "pending", "{a}");

    // 3. Another hour forward: `for: 30m` and `no_data: 30m` are met by the step alone.
    set_offset(&offset, "+1h");
    wait_state("ForLong", "firing", 15);
    wait_state("Quiet", "firing", 15);
    let a = alerts(&t);
    let f1 = flushes(&t);
    wait_windows(&t, 5.0);
    println!(
        "CHAOS clock forward +1h: ForLong (for 30m, pending for under a minute of real time) fired at once; Quiet (no_data 30m, last sample a minute ago) fired at once; windows still flushed ({} in the next 5 s); firing now: {}",
        flushes(&t) - f1,
        a["firing"]
            .as_array()
            .map(|v| v.iter().map(|x| x["alert"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );

    // Counters: every increment exactly once in /metrics and at the intake.
    stop.store(true, Relaxed);
    tx.join().expect("sender");
    let n = sent.load(Relaxed) as f64;
    t.wait_value("clock_count_total", n);
    let deadline = Instant::now() + Duration::from_secs(30);
    while intake.counted("clock.count") != n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "CHAOS clock counters: sent {n}, /metrics {:?}, Datadog {}",
        value(&t.metrics(), "clock_count_total"),
        intake.counted("clock.count")
    );
    assert_eq!(intake.counted("clock.count"), n);
}
