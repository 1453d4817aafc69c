//! The standard workload of the throughput issue, shared by the micro-benchmarks and the load
//! bench: DogStatsD lines over a fixed set of contexts, 3 tags per line, a type mix of counters
//! 50 %, gauges 20 %, timers 20 %, histograms 5 %, distributions 5 %.
//!
//! Everything is deterministic (a fixed xorshift seed), so two runs send the same bytes.
//! Counters always carry the value 1, so the increments a run sent are the number of counter
//! lines it sent, and the load bench can compare that with the `_total` values tallyd exposes.

#![allow(dead_code)]

pub mod udp;

use std::fmt::Write as _;

/// Contexts in the standard workload.
pub const CONTEXTS: usize = 1000;

/// The metric type of context `i`: out of every 20 contexts, 10 counters, 4 gauges, 4 timers,
/// 1 histogram and 1 distribution.
pub fn kind_of(i: usize) -> &'static str {
    match i % 20 {
        0..=9 => "c",
        10..=13 => "g",
        14..=17 => "ms",
        18 => "h",
        _ => "d",
    }
}

/// A small deterministic generator (xorshift64*), enough to vary values.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Appends one line of context `i` (without the newline). `prefix` keeps the contexts of
/// separate runs apart when needed. Tags are sent unsorted, as clients do.
pub fn push_line(out: &mut String, prefix: &str, i: usize, rng: &mut Rng) {
    let kind = kind_of(i);
    let _ = write!(out, "{prefix}app.svc{}.metric_{i}:", i / 100);
    let r = rng.next();
    match kind {
        "c" => out.push('1'),
        "g" => {
            let _ = write!(out, "{}", r % 10_000);
        }
        // Timers and distributions as clients usually send them: with a fraction.
        "ms" | "d" => {
            let _ = write!(out, "{}.{}", r % 2_000, (r >> 20) % 1000);
        }
        _ => {
            let _ = write!(out, "{}", r % 500);
        }
    }
    let _ = write!(
        out,
        "|{kind}|#service:checkout-{},env:production,host:i-0a1b2c3d{:02}",
        i % 17,
        i % 50
    );
}

/// One line of context `i` of a given kind, for the per-type parse benchmarks.
pub fn line_of_kind(kind: &str, i: usize, rng: &mut Rng) -> String {
    let r = rng.next();
    let value = match kind {
        "c" => "1".to_string(),
        "s" => format!("user-{}", r % 10_000),
        "ms" | "d" => format!("{}.{}", r % 2000, (r >> 20) % 1000),
        _ => format!("{}", r % 10_000),
    };
    format!("app.svc{}.metric_{i}:{value}|{kind}|#service:checkout-{},env:production,host:i-0a1b2c3d{:02}", i / 100, i % 17, i % 50)
}

/// A line with many tags (20 tags, about 400 bytes), unsorted.
pub fn tag_heavy_line(i: usize) -> String {
    let mut s = format!("app.svc{}.requests:1|c|#", i / 100);
    for t in (0..20).rev() {
        if t != 19 {
            s.push(',');
        }
        let _ = write!(s, "tagkey{t}:some-value-{}", (i + t) % 7);
    }
    s
}

/// Datagrams of `per_datagram` lines each, covering the contexts `[base, base + contexts)`
/// round-robin in a scrambled order. Returns the datagrams and, for each, the counter
/// increments it carries.
pub fn datagrams(
    count: usize,
    per_datagram: usize,
    contexts: usize,
    prefix: &str,
    seed: u64,
) -> (Vec<Vec<u8>>, Vec<u64>) {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(count);
    let mut incr = Vec::with_capacity(count);
    let mut j = 0usize;
    let mut s = String::new();
    for _ in 0..count {
        s.clear();
        let mut c = 0;
        for l in 0..per_datagram {
            // A multiplier coprime with common context counts scrambles the order.
            let i = (j.wrapping_mul(7919)) % contexts;
            j += 1;
            if l > 0 {
                s.push('\n');
            }
            push_line(&mut s, prefix, i, &mut rng);
            if kind_of(i) == "c" {
                c += 1;
            }
        }
        out.push(s.as_bytes().to_vec());
        incr.push(c);
    }
    (out, incr)
}
