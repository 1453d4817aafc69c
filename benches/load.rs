//! End-to-end load bench: starts the real release binary, drives the standard workload over
//! UDP on loopback with a `sendmmsg` load generator at increasing paced rates, and accounts
//! what arrived from tallyd's own `/metrics`.
//!
//! ```text
//! cargo bench --bench load                 # everything (about 3 minutes)
//! cargo bench --bench load -- batch20      # only some parts: batch20 batch1 memory idle
//! cargo bench --bench load -- steady       # 3 min steady 100k-context run, RSS every 10 s
//! cargo bench --bench load -- cpu          # 3 × 10 s at 2M lines/s: CPU-s per million lines
//! ```
//!
//! For each packing (20 lines per datagram, then 1) it probes a ladder of rates for 3 s each
//! until one loses more than 0.1 % of the counter increments sent (or the generator cannot
//! reach the rate), then confirms the best passing rate over 10 s, stepping down if that run
//! loses. A rate counts as loss-free when the sum of the counters' `_total` values grew by at
//! least 99.9 % of the increments sent. It prints the loss-free rate, CPU-seconds per million
//! lines (utime + stime of /proc/<pid>/stat over the confirmed run) and peak RSS (VmHWM).
//! Then it measures idle RSS, RSS with 100,000 live contexts of the standard mix and the flush
//! time of those 100,000 contexts (`tallyd_flush_duration_seconds`).
//!
//! Not part of `cargo test` or CI: it measures, it does not assert.

#[path = "../tests/common/mod.rs"]
mod common;
mod workload;

use std::time::{Duration, Instant};

use common::Tallyd;
use workload::udp::{Generator, Sent};

/// Share of counter increments that must be accounted for a rate to pass.
const PASS: f64 = 0.999;
const PROBE: Duration = Duration::from_secs(3);
const CONFIRM: Duration = Duration::from_secs(10);

fn config(flush: &str) -> String {
    format!(
        r#"
[log]
level = "info"
format = "json"
[statsd]
udp_listen = "127.0.0.1:0"
tcp_listen = ""
[aggregate]
flush_interval = "{flush}"
[http]
listen = "127.0.0.1:0"
"#
    )
}

/// Starts tallyd with the bench's config. The test harness keeps the caller's `TALLYD_*`
/// variables away from tallyd, so settings for a bench run are given as `BENCH_TALLYD_*`
/// (`BENCH_TALLYD_STATSD__UDP_RECEIVERS=1` reaches tallyd as `TALLYD_STATSD__UDP_RECEIVERS=1`).
fn start(flush: &str) -> Tallyd {
    let env: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("BENCH_")?.to_string(), v)))
        .collect();
    for (k, v) in &env {
        println!("  (tallyd runs with {k}={v})");
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Tallyd::start_raw(&config(flush), &env)
}

// ---------------------------------------------------------------------------------------------
// /proc readings

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / clock_ticks()
}

/// A `Vm*` line of /proc/<pid>/status, in MiB.
fn status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: f64 = status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("status key");
    kb / 1024.0
}

// ---------------------------------------------------------------------------------------------
// /metrics readings

#[derive(Debug, Clone, Copy, Default)]
struct Scrape {
    /// Sum of every workload counter's `_total`.
    counters: f64,
    lines: f64,
    kernel_drops: f64,
    flushes: f64,
    flush_secs: f64,
    /// The longest flush since tallyd started (`tallyd_flush_duration_max_seconds`).
    flush_max_secs: f64,
    /// The Prometheus sink's fold of the last window, on its own thread after the flush
    /// handed it over (`tallyd_prometheus_update_seconds`).
    prom_update_secs: f64,
    locked_secs: f64,
    flush_cpu_secs: f64,
    flush_series: f64,
    contexts: f64,
    context_limit_drops: f64,
    parse_errors: f64,
}

fn scrape(t: &Tallyd) -> Scrape {
    let text = t.metrics();
    let mut s = Scrape::default();
    for l in text.lines() {
        if l.starts_with('#') {
            continue;
        }
        let Some((series, v)) = l.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = v.parse::<f64>() else { continue };
        let name = series.split('{').next().unwrap_or(series);
        match name {
            "tallyd_statsd_lines_total" if series.contains("transport=\"udp\"") => s.lines = v,
            "tallyd_udp_kernel_drops_total" => s.kernel_drops = v,
            "tallyd_flush_total" => s.flushes = v,
            "tallyd_flush_duration_seconds" => s.flush_secs = v,
            "tallyd_flush_duration_max_seconds" => s.flush_max_secs = v,
            "tallyd_prometheus_update_seconds" => s.prom_update_secs = v,
            "tallyd_flush_locked_seconds" => s.locked_secs = v,
            "tallyd_flush_cpu_seconds" => s.flush_cpu_secs = v,
            "tallyd_flush_series" => s.flush_series = v,
            "tallyd_aggregate_contexts" => s.contexts = v,
            "tallyd_aggregate_samples_dropped_total" => s.context_limit_drops = v,
            "tallyd_statsd_parse_errors_total" => s.parse_errors += v,
            n if n.starts_with("app_svc") && n.ends_with("_total") => s.counters += v,
            _ => {}
        }
    }
    s
}

/// Waits until tallyd has read everything sent (its line count stops moving) and two more
/// windows have been flushed, so the counters on `/metrics` include every line received.
fn settle(t: &Tallyd) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = scrape(t);
    loop {
        std::thread::sleep(Duration::from_millis(150));
        let now = scrape(t);
        if now.lines == last.lines || Instant::now() > deadline {
            last = now;
            break;
        }
        last = now;
    }
    let target = last.flushes + 2.0;
    loop {
        let now = scrape(t);
        if now.flushes >= target || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Runs

#[derive(Debug, Clone, Copy)]
struct Step {
    target: f64,
    sent: Sent,
    accounted: f64,
    kernel_drops: f64,
    cpu: f64,
    tallyd_lines: f64,
}

impl Step {
    fn achieved(&self) -> f64 {
        self.sent.lines as f64 / self.sent.secs
    }
    fn ratio(&self) -> f64 {
        if self.sent.increments == 0 {
            1.0
        } else {
            self.accounted / self.sent.increments as f64
        }
    }
    /// The generator reached the rate asked (within 3 %).
    fn paced(&self) -> bool {
        self.achieved() >= 0.97 * self.target
    }
    fn passed(&self) -> bool {
        self.ratio() >= PASS && self.paced()
    }
    fn cpu_per_million(&self) -> f64 {
        self.cpu / (self.tallyd_lines / 1e6)
    }
    fn print(&self, what: &str) {
        println!(
            "  {what:7} target {:>9.0} l/s  sent {:>9.0} l/s  accounted {:>8.4} %  kernel drops {:>7.0}  cpu {:.3} s/M lines  {}",
            self.target,
            self.achieved(),
            100.0 * self.ratio(),
            self.kernel_drops,
            self.cpu_per_million(),
            if self.passed() {
                "pass"
            } else if !self.paced() {
                "FAIL (generator could not reach the rate)"
            } else {
                "FAIL (loss)"
            }
        );
    }
}

fn step(t: &Tallyd, gen: &mut Generator, rate: f64, dur: Duration) -> Step {
    let pid = t.pid();
    let before = settle(t);
    let cpu0 = cpu_secs(pid);
    let sent = gen.run(rate, dur);
    let after = settle(t);
    let cpu = cpu_secs(pid) - cpu0;
    Step {
        target: rate,
        sent,
        accounted: after.counters - before.counters,
        kernel_drops: after.kernel_drops - before.kernel_drops,
        cpu,
        tallyd_lines: after.lines - before.lines,
    }
}

struct Ingest {
    per: usize,
    best: Option<Step>,
    peak_rss: f64,
}

fn ingest(per: usize, ladder: &[f64]) -> Ingest {
    println!(
        "\n== {per} line(s) per datagram: ladder of {} s probes ==",
        PROBE.as_secs()
    );
    let t = start("1s");
    let count = if per == 1 { 5000 } else { 1000 };
    let (dgrams, incr) = workload::datagrams(count, per, workload::CONTEXTS, "", 42);
    let mut gen = Generator::new(t.udp.expect("udp address"), dgrams, incr, per);
    let mut passing = Vec::new();
    for &rate in ladder {
        let s = step(&t, &mut gen, rate, PROBE);
        s.print("probe");
        if !s.passed() {
            break;
        }
        passing.push(rate);
    }
    println!("-- confirming over {} s", CONFIRM.as_secs());
    let mut best = None;
    for &rate in passing.iter().rev().take(3) {
        let s = step(&t, &mut gen, rate, CONFIRM);
        s.print("confirm");
        if s.passed() {
            best = Some(s);
            break;
        }
    }
    let peak_rss = status_mib(t.pid(), "VmHWM");
    println!("-- peak RSS (VmHWM) {peak_rss:.1} MiB");
    Ingest {
        per,
        best,
        peak_rss,
    }
}

/// Fixed-rate CPU runs: the 20-line standard workload at `TALLYD_LOAD_RATE` lines/s (default
/// 2,000,000) for 10 s, `TALLYD_LOAD_RUNS` times (default 3), printing CPU-s per million lines
/// of each run. For A/B comparisons of the per-line cost without the ladder's noise. Only run
/// when asked for (`-- cpu`).
fn cpu_runs() -> Vec<f64> {
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let rate = env("TALLYD_LOAD_RATE", 2e6);
    let runs = env("TALLYD_LOAD_RUNS", 3.0) as usize;
    println!("\n== cpu: 20 lines per datagram at {rate:.0} lines/s, {runs} × 10 s ==");
    let t = start("1s");
    let (dgrams, incr) = workload::datagrams(1000, 20, workload::CONTEXTS, "", 42);
    let mut gen = Generator::new(t.udp.expect("udp address"), dgrams, incr, 20);
    (0..runs)
        .map(|_| {
            let s = step(&t, &mut gen, rate, CONFIRM);
            s.print("run");
            s.cpu_per_million()
        })
        .collect()
}

fn idle() -> f64 {
    println!("\n== idle ==");
    let t = start("10s");
    std::thread::sleep(Duration::from_secs(3));
    let rss = status_mib(t.pid(), "VmRSS");
    println!(
        "  idle RSS {rss:.1} MiB (VmHWM {:.1} MiB)",
        status_mib(t.pid(), "VmHWM")
    );
    rss
}

struct Memory {
    rss_before_scrape: f64,
    rss_after_scrape: f64,
    hwm: f64,
    flush_ms: Vec<f64>,
    locked_ms: Vec<f64>,
    /// The longest of every flush so far, and how many there were.
    flush_max_ms: f64,
    flushes: f64,
    series: f64,
    contexts: f64,
    drops: f64,
}

fn memory() -> Memory {
    const N: usize = 100_000;
    const RATE: f64 = 200_000.0;
    println!("\n== {N} contexts of the standard mix, 10 s windows, {RATE} lines/s, 20 lines per datagram ==");
    let t = start("10s");
    let pid = t.pid();
    let (dgrams, incr) = workload::datagrams(N / 20, 20, N, "", 7);
    let mut gen = Generator::new(t.udp.expect("udp address"), dgrams, incr, 20);
    let mut flush_ms = Vec::new();
    let mut locked_ms = Vec::new();
    let mut last = Scrape::default();
    let mut rss_before_scrape = 0.0;
    let windows: usize = std::env::var("TALLYD_MEMORY_WINDOWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for i in 0..windows {
        gen.run(RATE, Duration::from_secs(11));
        let rss = status_mib(pid, "VmRSS");
        if i == 0 {
            // Before any scrape: what the aggregation and the sinks hold.
            rss_before_scrape = rss;
        }
        last = scrape(&t);
        println!(
            "  RSS {rss:.1} MiB, last flush {:.1} ms (flusher CPU {:.1} ms, shards locked {:.1} ms) for {} series, contexts held {} (summed over shards); Prometheus fold {:.1} ms; flushes {}, longest {:.1} ms",
            last.flush_secs * 1e3,
            last.flush_cpu_secs * 1e3,
            last.locked_secs * 1e3,
            last.flush_series,
            last.contexts,
            last.prom_update_secs * 1e3,
            last.flushes,
            last.flush_max_secs * 1e3
        );
        if last.flush_series >= 0.99 * N as f64 {
            flush_ms.push(last.flush_secs * 1e3);
            locked_ms.push(last.locked_secs * 1e3);
        }
    }
    let rss_after_scrape = status_mib(pid, "VmRSS");
    let hwm = status_mib(pid, "VmHWM");
    println!("  RSS after /metrics scrape {rss_after_scrape:.1} MiB, VmHWM {hwm:.1} MiB, context-limit drops {}", last.context_limit_drops);
    println!(
        "  longest of all {} flushes (tallyd_flush_duration_max_seconds): {:.1} ms",
        last.flushes,
        last.flush_max_secs * 1e3
    );
    Memory {
        rss_before_scrape,
        rss_after_scrape,
        hwm,
        flush_ms,
        locked_ms,
        flush_max_ms: last.flush_max_secs * 1e3,
        flushes: last.flushes,
        series: last.flush_series,
        contexts: last.contexts,
        drops: last.context_limit_drops,
    }
}

/// Steady load: the 100k-context scenario of [`memory`] held for `secs` seconds (default 180,
/// `TALLYD_STEADY_SECS` to change), scraping `/metrics` every 30 s as a Prometheus server would
/// and printing RSS every 10 s. Only run when asked for (`-- steady`). Returns the RSS readings,
/// the flush times read at scrapes, and the longest of every flush with their number.
fn steady() -> (Vec<f64>, Vec<f64>, (f64, f64)) {
    const N: usize = 100_000;
    const RATE: f64 = 200_000.0;
    let secs: u64 = std::env::var("TALLYD_STEADY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    println!(
        "\n== steady: {N} contexts, {RATE} lines/s, 10 s windows, {secs} s, RSS every 10 s =="
    );
    let t = start("10s");
    let pid = t.pid();
    let (dgrams, incr) = workload::datagrams(N / 20, 20, N, "", 7);
    let mut gen = Generator::new(t.udp.expect("udp address"), dgrams, incr, 20);
    let mut rss = Vec::new();
    let mut flush = Vec::new();
    for i in 1..=secs / 10 {
        gen.run(RATE, Duration::from_secs(10));
        let mut note = String::new();
        if i % 3 == 0 {
            let s = scrape(&t);
            note = format!(
                "  (scraped; last flush {:.1} ms, flusher CPU {:.1} ms, shards locked {:.1} ms; Prometheus fold {:.1} ms; longest so far {:.1} ms of {} flushes)",
                s.flush_secs * 1e3,
                s.flush_cpu_secs * 1e3,
                s.locked_secs * 1e3,
                s.prom_update_secs * 1e3,
                s.flush_max_secs * 1e3,
                s.flushes
            );
            if s.flush_series >= 0.99 * N as f64 {
                flush.push(s.flush_secs * 1e3);
            }
        }
        let r = status_mib(pid, "VmRSS");
        println!(
            "  t={:>4} s  RSS {r:.1} MiB  VmHWM {:.1} MiB{note}",
            i * 10,
            status_mib(pid, "VmHWM")
        );
        rss.push(r);
    }
    let end = scrape(&t);
    let longest = (end.flush_max_secs * 1e3, end.flushes);
    println!(
        "  longest of all {} flushes (tallyd_flush_duration_max_seconds): {:.1} ms",
        longest.1, longest.0
    );
    (rss, flush, longest)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| a == part);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "tallyd load bench: {} on {cores} cores ({cpu})",
        common::bin()
    );
    let started = Instant::now();

    let idle_rss = want("idle").then(idle);
    let b20 =
        want("batch20").then(|| ingest(20, &[500e3, 1e6, 1.5e6, 2e6, 2.5e6, 3e6, 3.5e6, 4e6, 5e6]));
    let b1 =
        want("batch1").then(|| ingest(1, &[50e3, 100e3, 150e3, 200e3, 250e3, 300e3, 400e3, 500e3]));
    let mem = want("memory").then(memory);
    // Not part of the default run: it takes minutes.
    let steady = args.iter().any(|a| a == "steady").then(steady);
    let cpu_runs = args.iter().any(|a| a == "cpu").then(cpu_runs);

    println!("\n== summary (markdown) ==\n");
    println!("| measure | result | target |");
    println!("|---|---|---|");
    for (b, target) in [(&b20, "≥ 2,000,000 lines/s"), (&b1, "≥ 200,000 lines/s")] {
        let Some(r) = b else { continue };
        match &r.best {
            Some(s) => {
                println!(
                    "| loss-free rate, {} line(s)/datagram (10 s, {:.3} % accounted, {} kernel drops) | {:.0} lines/s | {target} |",
                    r.per,
                    100.0 * s.ratio(),
                    s.kernel_drops,
                    s.achieved()
                );
                println!("| CPU, {} line(s)/datagram at that rate | {:.3} CPU-s per million lines | {} |", r.per, s.cpu_per_million(), if r.per == 20 { "≤ 0.35" } else { "—" });
            }
            None => println!(
                "| loss-free rate, {} line(s)/datagram | no rate passed | {target} |",
                r.per
            ),
        }
        println!(
            "| peak RSS (VmHWM) during the {}-line run | {:.1} MiB | — |",
            r.per, r.peak_rss
        );
    }
    if let Some(rss) = idle_rss {
        println!("| idle RSS | {rss:.1} MiB | ≤ 15 MB |");
    }
    if let Some(m) = &mem {
        println!(
            "| RSS with 100,000 live contexts (before a scrape) | {:.1} MiB | ≤ 100 MB |",
            m.rss_before_scrape
        );
        println!(
            "| RSS after scraping /metrics with 100,000 series; VmHWM | {:.1} MiB; {:.1} MiB | — |",
            m.rss_after_scrape, m.hwm
        );
        let list = |v: &[f64]| {
            v.iter()
                .map(|f| format!("{f:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| flush of {} contexts, the last one at each read (tallyd_flush_duration_seconds) | {} ms | ≤ 50 ms |",
            m.series,
            list(&m.flush_ms)
        );
        println!(
            "| longest of all {} flushes, the first window's included (tallyd_flush_duration_max_seconds) | {:.1} ms | ≤ 50 ms |",
            m.flushes, m.flush_max_ms
        );
        println!(
            "| of which the shards were locked (tallyd_flush_locked_seconds) | {} ms | — |",
            list(&m.locked_ms)
        );
        println!(
            "| contexts held (summed over shards); context-limit drops | {}; {} | — |",
            m.contexts, m.drops
        );
    }
    if let Some((rss, mut flush, longest)) = steady.filter(|r| r.0.len() >= 2) {
        let third = (rss.len() / 3).max(1);
        let early = rss[..third].iter().sum::<f64>() / third as f64;
        let late = rss[rss.len() - third..].iter().sum::<f64>() / third as f64;
        let max = rss.iter().copied().fold(0.0, f64::max);
        println!(
            "| steady RSS over {} s: first third / last third mean, max | {early:.1} / {late:.1} MiB, {max:.1} MiB | no growth |",
            rss.len() * 10
        );
        if !flush.is_empty() {
            flush.sort_by(f64::total_cmp);
            println!(
                "| steady flush of 100,000 contexts, {} windows read: min / median / max | {:.1} / {:.1} / {:.1} ms | ≤ 50 ms |",
                flush.len(),
                flush[0],
                flush[flush.len() / 2],
                flush[flush.len() - 1]
            );
        }
        println!(
            "| steady: longest of all {} flushes, the first window's included (tallyd_flush_duration_max_seconds) | {:.1} ms | ≤ 50 ms |",
            longest.1, longest.0
        );
    }
    if let Some(c) = cpu_runs.filter(|c| !c.is_empty()) {
        let list: Vec<String> = c.iter().map(|v| format!("{v:.3}")).collect();
        let mean = c.iter().sum::<f64>() / c.len() as f64;
        println!(
            "| CPU at a fixed rate, 20 lines/datagram (runs; mean) | {}; {mean:.3} CPU-s per million lines | ≤ 0.35 |",
            list.join(", ")
        );
    }
    println!("\nbench took {:.0} s", started.elapsed().as_secs_f64());
}
