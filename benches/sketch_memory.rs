//! Heap held by busy distribution contexts in one window: 1,000 `d` contexts with 10,000
//! log-normal samples each (seconds, median 40 ms) applied to a shard, measured with a
//! counting allocator before the flush; and the heap after the flush while the window's
//! series are held. Prints one line per figure (BENCHMARKS.md, "Exact sketches").
//!
//! Run with `cargo bench --bench sketch_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use tallyd::aggregate::Aggregator;
use tallyd::base::lock;
use tallyd::config::Config;
use tallyd::model::dogstatsd::{self as parse, Line};
use tallyd::telemetry::{LocalStats, Telemetry};

struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// GlobalAlloc contract; the wrapper only counts the bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HELD.fetch_add(l.size(), Relaxed);
        // SAFETY: same layout as given, forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size(), Relaxed);
        // SAFETY: `p` was allocated by `System` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        HELD.fetch_add(new, Relaxed);
        HELD.fetch_sub(l.size(), Relaxed);
        // SAFETY: `p` was allocated by `System` with `l`; forwarded.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    const CONTEXTS: usize = 1000;
    const PER: usize = 10_000;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut unit = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut cfg = Config::default();
    cfg.aggregate.max_contexts = 1_000_000;
    let a = Aggregator::new(
        &cfg.aggregate,
        cfg.statsd.gauge_mode,
        Arc::new(Telemetry::default()),
    );
    let shard = a.new_shard();
    let mut stats = LocalStats::default();
    let before = HELD.load(Relaxed);
    // 100 values a line, contexts interleaved as traffic would be.
    let mut line = String::new();
    for round in 0..PER / 100 {
        for c in 0..CONTEXTS {
            line.clear();
            line.push_str(&format!("lat.{c}"));
            for _ in 0..100 {
                let (u, v) = (unit(), unit());
                let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                line.push_str(&format!(":{:.6}", 0.04 * (1.2 * z).exp()));
            }
            line.push_str("|d|#svc:api");
            if let Ok(Line::Metric(m)) = parse::parse_line(line.as_bytes(), 100) {
                let _ = lock(&shard).apply(&m, round as u64, &mut stats);
            }
        }
    }
    let held = HELD.load(Relaxed) - before;
    println!(
        "window of {CONTEXTS} distribution contexts x {PER} samples: {} KiB held, {} B per context",
        held / 1024,
        held / CONTEXTS
    );
    let f = a.flush(0);
    let after = HELD.load(Relaxed) - before;
    println!(
        "after the flush, holding the window's {} series: {} KiB",
        f.series.len(),
        after / 1024
    );
}
