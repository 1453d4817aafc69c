//! Cardinality bomb: 1,000,000 distinct counter contexts sent within one 10 s window, then a
//! slow drip of new contexts (100 a second) for 10 minutes, against the real release binary
//! with the default limits (`aggregate.max_contexts` 200,000, `aggregate.context_expiry` 60 s,
//! `prometheus.max_series` 200,000, `prometheus.series_ttl` 300 s).
//!
//! ```text
//! cargo bench --bench soak_bomb              # bomb + 10-minute drip (about 11 minutes)
//! cargo bench --bench soak_bomb -- 60        # bomb + 1-minute drip
//! ```
//!
//! It prints, every 10 s, RSS, contexts held, series exposed, samples dropped at the context
//! limit, the longest flush and how long a full `GET /metrics` and a `GET /health/live` took,
//! and checks at the end: contexts never above the limit; every line received either made or
//! updated a context or was counted as dropped; contexts expire once the bomb stops. Settings
//! for tallyd as in the load bench (`BENCH_TALLYD_*`). Not part of `cargo test` or CI.

#[path = "../tests/common/mod.rs"]
mod common;
mod workload;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::Tallyd;
use workload::udp::Generator;

const BOMB: usize = 1_000_000;
const PER: usize = 20;
const RATE: f64 = 200_000.0;
const DRIP_PER_SEC: usize = 100;

fn config() -> String {
    r#"
[log]
level = "info"
format = "json"
[statsd]
udp_listen = "127.0.0.1:0"
tcp_listen = ""
[aggregate]
flush_interval = "10s"
[http]
listen = "127.0.0.1:0"
[gps]
enabled = false
[otlp]
enabled = false
"#
    .to_string()
}

fn status_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(':')?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[derive(Default, Debug, Clone, Copy)]
struct Reading {
    contexts: f64,
    series: f64,
    dropped: f64,
    series_dropped: f64,
    lines: f64,
    kernel_drops: f64,
    flush_max_ms: f64,
    flush_ms: f64,
    flushes: f64,
    scrape_ms: f64,
    live_ms: f64,
    rss: f64,
}

fn read(t: &Tallyd) -> Reading {
    let t0 = Instant::now();
    let _ = t.get("/health/live");
    let live_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    let text = t.metrics();
    let scrape_ms = t0.elapsed().as_secs_f64() * 1e3;
    let v = |s: &str| common::value(&text, s).unwrap_or(f64::NAN);
    Reading {
        contexts: v("tallyd_aggregate_contexts"),
        series: v("tallyd_prometheus_series"),
        dropped: v("tallyd_aggregate_samples_dropped_total{reason=\"context_limit\"}"),
        series_dropped: v("tallyd_prometheus_series_dropped_total"),
        lines: v("tallyd_statsd_lines_total{transport=\"udp\"}"),
        kernel_drops: v("tallyd_udp_kernel_drops_total"),
        flush_max_ms: v("tallyd_flush_duration_max_seconds") * 1e3,
        flush_ms: v("tallyd_flush_duration_seconds") * 1e3,
        flushes: v("tallyd_flush_total"),
        scrape_ms,
        live_ms,
        rss: status_mib(t.pid(), "VmRSS"),
    }
}

fn print(t0: Instant, what: &str, r: &Reading, hwm: f64) {
    println!(
        "  t={:>5.0} s {what:6} RSS {:.1} MiB (HWM {hwm:.1})  contexts {}  series {}  dropped {}  lines {}  kernel drops {}  flush {:.1} ms (longest {:.1} of {})  GET /metrics {:.0} ms  /health/live {:.1} ms",
        t0.elapsed().as_secs_f64(),
        r.rss,
        r.contexts,
        r.series,
        r.dropped,
        r.lines,
        r.kernel_drops,
        r.flush_ms,
        r.flush_max_ms,
        r.flushes,
        r.scrape_ms,
        r.live_ms
    );
}

fn main() {
    let drip_secs: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(600);
    let env: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("BENCH_")?.to_string(), v)))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let t = Tallyd::start_raw(&config(), &env);
    let pid = t.pid();
    let udp = t.udp.expect("udp");
    println!(
        "tallyd cardinality bomb: {BOMB} contexts at {RATE} lines/s, then {DRIP_PER_SEC} new contexts/s for {drip_secs} s; loadavg {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    std::thread::sleep(Duration::from_secs(2));
    let idle = status_mib(pid, "VmRSS");
    println!("  idle RSS {idle:.1} MiB");

    // The bomb: 1,000,000 distinct counters, 20 per datagram, one pass, inside one window.
    let mut dgrams = Vec::with_capacity(BOMB / PER);
    let mut s = String::new();
    for d in 0..BOMB / PER {
        s.clear();
        for l in 0..PER {
            let i = d * PER + l;
            if l > 0 {
                s.push('\n');
            }
            s.push_str(&format!(
                "bomb.requests:1|c|#user_id:{i},service:checkout-{},env:production",
                i % 17
            ));
        }
        dgrams.push(s.as_bytes().to_vec());
    }
    let incr = vec![PER as u64; dgrams.len()];
    let mut gen = Generator::new(udp, dgrams, incr, PER);
    // Start just after a window boundary, so the whole bomb lands in one window.
    while common_unix_ms() % 10_000 > 300 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    let mut max_scrape: f64 = 0.0;
    let mut max_live: f64 = 0.0;
    let mut max_contexts: f64 = 0.0;
    let mut hwm = 0.0;
    let sent = std::thread::scope(|sc| {
        let h = sc.spawn(|| gen.run(RATE, Duration::from_secs_f64(BOMB as f64 / RATE)));
        while !h.is_finished() {
            let r = read(&t);
            hwm = status_mib(pid, "VmHWM");
            max_scrape = max_scrape.max(r.scrape_ms);
            max_live = max_live.max(r.live_ms);
            max_contexts = max_contexts.max(r.contexts);
            print(t0, "bomb", &r, hwm);
            std::thread::sleep(Duration::from_millis(500));
        }
        h.join().expect("generator")
    });
    println!(
        "  bomb sent: {} lines in {:.2} s ({} datagrams)",
        sent.lines, sent.secs, sent.datagrams
    );

    // The drip: 100 new contexts a second, each sent once.
    let drip = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut n: u64 = 0;
    let mut samples: Vec<(f64, Reading)> = Vec::new();
    let mut next_read = 0.0;
    let drip_start = Instant::now();
    let mut bomb_checked: Option<Reading> = None;
    while drip_start.elapsed() < Duration::from_secs(drip_secs) {
        let due = (drip_start.elapsed().as_secs_f64() * DRIP_PER_SEC as f64) as u64;
        while n < due {
            let line = format!("drip.requests:1|c|#session:{n}");
            let _ = drip.send_to(line.as_bytes(), udp);
            n += 1;
        }
        let el = t0.elapsed().as_secs_f64();
        if el >= next_read {
            next_read = el + 10.0;
            let r = read(&t);
            hwm = status_mib(pid, "VmHWM");
            max_scrape = max_scrape.max(r.scrape_ms);
            max_live = max_live.max(r.live_ms);
            max_contexts = max_contexts.max(r.contexts);
            print(t0, "drip", &r, hwm);
            // Once the bomb's window is flushed and before anything expires: the accounting.
            if bomb_checked.is_none() && el > 12.0 {
                bomb_checked = Some(r);
            }
            samples.push((el, r));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // After the drip: the aggregator empties within context_expiry (+ a window or two).
    let stop = Instant::now();
    let last = loop {
        let r = read(&t);
        if r.contexts == 0.0 || stop.elapsed() > Duration::from_secs(120) {
            break r;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    hwm = status_mib(pid, "VmHWM");
    print(t0, "after", &last, hwm);
    let at_cap = samples
        .iter()
        .find(|(_, r)| r.contexts >= 199_000.0)
        .map(|(_, r)| *r);
    let b = bomb_checked.unwrap_or_default();
    println!("\n== summary (markdown) ==\n");
    println!("| measure | result |\n|---|---|");
    println!(
        "| bomb | {} lines sent ({} distinct contexts) in {:.2} s, one window |",
        sent.lines, sent.lines, sent.secs
    );
    println!(
        "| after the bomb's window: lines received, contexts held, dropped at the limit, kernel drops | {}, {}, {}, {} |",
        b.lines, b.contexts, b.dropped, b.kernel_drops
    );
    println!(
        "| accounted: contexts made + samples dropped == lines received | {} + {} = {} vs {} |",
        200_000.0_f64.min(b.lines),
        b.dropped,
        200_000.0_f64.min(b.lines) + b.dropped,
        b.lines
    );
    println!("| contexts held, most seen | {max_contexts} (limit 200000) |");
    println!("| idle RSS; RSS at the limit; VmHWM over the run | {idle:.1} MiB; {:.1} MiB; {hwm:.1} MiB |", at_cap.map_or(f64::NAN, |r| r.rss));
    println!("| GET /metrics, slowest | {max_scrape:.0} ms |");
    println!("| GET /health/live, slowest | {max_live:.1} ms |");
    println!(
        "| longest flush (limit: the 10 s interval) | {:.1} ms |",
        last.flush_max_ms
    );
    println!(
        "| drip | {n} new contexts over {drip_secs} s; contexts at the end of the drip {}; series {} |",
        samples.last().map_or(f64::NAN, |(_, r)| r.contexts),
        samples.last().map_or(f64::NAN, |(_, r)| r.series)
    );
    println!(
        "| after the drip stopped | contexts {} after {:.0} s; series {}; RSS {:.1} MiB |",
        last.contexts,
        stop.elapsed().as_secs_f64(),
        last.series,
        last.rss
    );
    println!(
        "| new series refused at prometheus.max_series (tallyd_prometheus_series_dropped_total) | {} |",
        last.series_dropped
    );
}

fn common_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
