//! End-to-end parity with the Datadog Agent's DogStatsD (issue 17): the real binary, DogStatsD
//! over real sockets, the Datadog intake stand-in (tests/common/intake.rs) decoding what
//! arrives. Sketch accuracy is checked from the outside: the test decodes keys and counts and
//! computes quantiles from them with the Agent's mapping, written here independently.

mod common;

use common::intake::{Accepted, InSketch, Intake};
use common::{merge, Tallyd, BASE_CONFIG};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn config(intake: &Intake, extra: &str) -> String {
    let dd = format!(
        r#"
[aggregate]
flush_interval = "1s"
[datadog]
api_key = "{KEY}"
url = "{}"
hostname = "test-host"
request_timeout = "2s"
[queue]
directory = "@DIR@/queue"
backoff_initial = "50ms"
backoff_max = "200ms"
"#,
        intake.url()
    );
    merge(&merge(BASE_CONFIG, &dd), extra)
}

fn start(intake: &Intake, extra: &str) -> Tallyd {
    Tallyd::start_raw(&config(intake, extra), &[])
}

/// A small deterministic generator (xorshift64*), and standard normals by Box-Muller.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Log-normal with median `median` and shape `sigma`.
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

/// The Agent's key → value mapping: gamma^(k - bias), gamma = 1 + 2/128, bias 1338.
fn key_value(k: i32) -> f64 {
    let gamma_ln = (2.0f64 / 128.0).ln_1p();
    let bias = -((1e-9f64).ln() / gamma_ln).floor() as i32 + 1;
    match k {
        0 => 0.0,
        k if k < 0 => -key_value(-k),
        k => (f64::from(k - bias) * gamma_ln).exp(),
    }
}

/// Every sketch of `metric` merged (keys and counts added, as the intake merges them), with
/// min, max and count.
fn merged(a: &Accepted, metric: &str) -> (Vec<(i32, u64)>, f64, f64, i64) {
    let mut bins = std::collections::BTreeMap::<i32, u64>::new();
    let (mut min, mut max, mut cnt) = (f64::INFINITY, f64::NEG_INFINITY, 0);
    for s in a.sketches.iter().filter(|s: &&InSketch| s.metric == metric) {
        for d in &s.dogsketches {
            assert_eq!(d.k.len(), d.n.len());
            assert!(d.k.windows(2).all(|w| w[0] <= w[1]), "keys ascending");
            for (k, n) in d.k.iter().zip(&d.n) {
                *bins.entry(*k).or_default() += u64::from(*n);
            }
            min = min.min(d.min);
            max = max.max(d.max);
            cnt += d.cnt;
        }
    }
    (bins.into_iter().collect(), min, max, cnt)
}

/// The sketch's nearest-rank quantile: the value of the bin holding rank ceil(q·n).
fn sketch_quantile(bins: &[(i32, u64)], q: f64, n: u64) -> f64 {
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    for (k, c) in bins {
        seen += c;
        if seen >= rank {
            return key_value(*k);
        }
    }
    f64::NAN
}

/// Sends `values` as one distribution over TCP, 500 values a line.
fn send_distribution(t: &Tallyd, name: &str, values: &[f64]) {
    let mut text = String::new();
    for chunk in values.chunks(500) {
        text.push_str(name);
        for v in chunk {
            text.push_str(&format!(":{v:.6e}"));
        }
        text.push_str("|d|#case:accuracy\n");
    }
    t.send_tcp(&text);
}

fn check_accuracy(intake: &Intake, t: &Tallyd, name: &str, values: &[f64]) {
    // Seven significant digits on the wire; the exact quantiles are of the values as sent.
    let values: Vec<f64> = values
        .iter()
        .map(|v| format!("{v:.6e}").parse().expect("float"))
        .collect();
    send_distribution(t, name, &values);
    let n = values.len() as i64;
    intake.wait(30, name, |a| merged(a, name).3 == n);
    let a = intake.accepted();
    let (bins, min, max, cnt) = merged(&a, name);
    let total: u64 = bins.iter().map(|b| b.1).sum();
    assert_eq!((cnt, total), (n, n as u64), "{name}: every sample counted");
    let mut exact = values.to_vec();
    exact.sort_by(f64::total_cmp);
    assert_eq!((min, max), (exact[0], exact[exact.len() - 1]), "{name}");
    for q in [0.5, 0.75, 0.9, 0.95, 0.99] {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, exact.len());
        let want = exact[rank - 1];
        let got = sketch_quantile(&bins, q, n as u64);
        let err = (got - want).abs() / want;
        assert!(
            err <= 1.0 / 128.0,
            "{name} p{}: sketch {got} vs exact {want}: relative error {err}",
            q * 100.0
        );
    }
    // The top bin is the maximum's.
    let top = key_value(bins[bins.len() - 1].0);
    assert!(
        (top - max).abs() / max <= 1.0 / 128.0,
        "{name} max {top} vs {max}"
    );
}

#[test]
fn distribution_sketches_keep_the_agents_accuracy_at_any_count() {
    let intake = Intake::start(KEY);
    let t = start(&intake, "");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Latencies in seconds (median 40 ms, long tail), in milliseconds, and a small window.
    let secs: Vec<f64> = (0..100_000).map(|_| rng.lognormal(0.04, 1.2)).collect();
    check_accuracy(&intake, &t, "lat.seconds", &secs);
    let ms: Vec<f64> = (0..100_000).map(|_| rng.lognormal(40.0, 1.2)).collect();
    check_accuracy(&intake, &t, "lat.millis", &ms);
    let few: Vec<f64> = (0..100).map(|_| rng.lognormal(0.04, 1.2)).collect();
    check_accuracy(&intake, &t, "lat.few", &few);
}
