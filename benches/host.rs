//! The host collector's own cost: one collection of every default group on this machine
//! (`collect`), the same with every group and per-core CPU plus a named process found by
//! scanning /proc (`collect_all`), and applying one collection to a shard (`apply`). Before
//! criterion runs, one collection's heap allocations are counted with a counting allocator.
//! Run: `cargo bench --bench host`; figures in BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, Criterion};
use tallyd::aggregate::{Aggregator, Shard};
use tallyd::config::{AggregateConfig, GaugeMode};
use tallyd::host::{self, Collector, HostMetricsConfig};
use tallyd::telemetry::Telemetry;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size() as u64, Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` above, that is from `System`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
        // SAFETY: as for `alloc`; `p` came from `System`.
        unsafe { System.realloc(p, l, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn all_groups() -> HostMetricsConfig {
    HostMetricsConfig {
        enabled: true,
        per_cpu: true,
        process_names: vec!["sshd".into()],
        ..HostMetricsConfig::default()
    }
}

/// This thread's CPU time (user + system), seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn count(what: &str, cfg: HostMetricsConfig) {
    let mut c = Collector::new(cfg, PathBuf::from("/"));
    c.collect();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (a, b) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
    let points = c.collect();
    let (a, b) = (ALLOCS.load(Relaxed) - a, BYTES.load(Relaxed) - b);
    let cpu = thread_cpu();
    for _ in 0..200 {
        c.collect();
    }
    let cpu_ms = (thread_cpu() - cpu) / 200.0 * 1e3;
    println!(
        "{what}: {} values, {a} allocations, {b} bytes allocated, {cpu_ms:.3} ms CPU (user+sys) per collection",
        points.len()
    );
}

fn benches(c: &mut Criterion) {
    let defaults = HostMetricsConfig {
        enabled: true,
        ..HostMetricsConfig::default()
    };
    count("collect (default groups)", defaults.clone());
    count(
        "collect_all (every group, per core, a process by name)",
        all_groups(),
    );
    let no_tcp = HostMetricsConfig {
        tcp_states: false,
        ..defaults.clone()
    };
    count(
        "collect_no_tcp (default groups but tcp_states)",
        no_tcp.clone(),
    );

    let mut g = c.benchmark_group("host");
    let mut col = Collector::new(defaults.clone(), PathBuf::from("/"));
    col.collect();
    g.bench_function("collect", |b| b.iter(|| col.collect()));
    let mut all = Collector::new(all_groups(), PathBuf::from("/"));
    all.collect();
    g.bench_function("collect_all", |b| b.iter(|| all.collect()));
    let mut quick = Collector::new(no_tcp, PathBuf::from("/"));
    quick.collect();
    g.bench_function("collect_no_tcp", |b| b.iter(|| quick.collect()));

    let agg = Aggregator::new(
        &AggregateConfig::default(),
        GaugeMode::Absolute,
        Arc::new(Telemetry::default()),
    );
    let shard: Arc<Mutex<Shard>> = agg.new_shard();
    let points = col.collect();
    g.bench_function("apply", |b| {
        b.iter(|| host::apply(&shard, agg.shared(), "host:bench", &points))
    });
    g.finish();
}

criterion_group!(host_benches, benches);
criterion_main!(host_benches);
