//! Soak bench: the real release binary under every intake at once for a long time, delivering
//! to local stand-ins of the Datadog intake and a remote write receiver, then every counter
//! checked exact in every sink.
//!
//! ```text
//! cargo bench --bench soak                  # 3 minutes
//! cargo bench --bench soak -- 1800          # 30 minutes (the RELIABILITY.md run)
//! TALLYD_SOAK_UDP_RATE=500000 cargo bench --bench soak
//! ```
//!
//! Load, all at once: StatsD over UDP (the load bench's `sendmmsg` generator, 20 lines per
//! datagram, 1,000 contexts of the standard mix) at `TALLYD_SOAK_UDP_RATE` lines/s (default
//! 1,750,000, half the loss-free rate in BENCHMARKS.md); StatsD over TCP (another 1,000
//! contexts, prefix `tcp.`) at `TALLYD_SOAK_TCP_RATE` (default 50,000 lines/s); OTLP/HTTP
//! protobuf, 10 requests/s of 100 delta sums; 200 GT06 devices (4 source addresses × 50),
//! each a location and a heartbeat per second, every heartbeat's ACK read; `/metrics` scraped
//! every 15 s. 10 s windows. tallyd delivers to [`Intake`] (Datadog) and [`StandIn`] (remote
//! write).
//!
//! Every 10 s it reads RSS, open fds and threads from /proc/<pid>; at the end it prints the
//! linear-fit slope of each and the first/last values, the kernel's UDP drop counters
//! (/proc/net/snmp, system-wide: other processes count there too) and tallyd's own
//! `tallyd_udp_kernel_drops_total`, and compares, counter by counter, what was sent with
//! `/metrics`, the sum of value × interval of the Datadog RATE points, and the last cumulative
//! value the remote write receiver got. Settings for tallyd as in the load bench
//! (`BENCH_TALLYD_*`). Not part of `cargo test` or CI: it measures; it exits non-zero when a
//! counter is off so a script can tell.

#[path = "../tests/common/mod.rs"]
mod common;
mod workload;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::gt06::gt06_frame;
use common::intake::Intake;
use common::remote_write::StandIn;
use common::{merge, Tallyd, BASE_CONFIG};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use prost::Message as _;
use workload::udp::Generator;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const PER: usize = 20;
const DEVICES: usize = 200;
const OTLP_METRICS: usize = 100;

fn env_f64(k: &str, d: f64) -> f64 {
    std::env::var(k)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}

// ---------------------------------------------------------------------------------------------
// What was sent, counter by counter

/// Datagrams (or TCP chunks) of the workload and, for each, the counter names it increments.
struct Workload {
    dgrams: Vec<Vec<u8>>,
    incr: Vec<u64>,
    counters: Vec<Vec<String>>,
}

fn workload(prefix: &str, seed: u64) -> Workload {
    let (dgrams, incr) = workload::datagrams(1000, PER, workload::CONTEXTS, prefix, seed);
    let counters = dgrams
        .iter()
        .map(|d| {
            String::from_utf8_lossy(d)
                .lines()
                .filter(|l| l.contains("|c|"))
                .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
                .collect()
        })
        .collect();
    Workload {
        dgrams,
        incr,
        counters,
    }
}

impl Workload {
    /// Per-counter increments after the first `n` datagrams of the cycle were sent.
    fn expected(&self, n: u64, out: &mut BTreeMap<String, f64>) {
        let len = self.dgrams.len() as u64;
        let (full, part) = (n / len, (n % len) as usize);
        for (i, names) in self.counters.iter().enumerate() {
            let times = full + u64::from(i < part);
            for name in names {
                *out.entry(name.clone()).or_default() += times as f64;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Senders

struct Sent {
    udp_dgrams: AtomicU64,
    udp_increments: AtomicU64,
    udp_errors: AtomicU64,
    tcp_chunks: AtomicU64,
    otlp: Mutex<BTreeMap<String, f64>>,
    otlp_refused: AtomicU64,
    otlp_points: AtomicU64,
    gps_frames: AtomicU64,
    gps_locations: AtomicU64,
    gps_errors: AtomicU64,
}

fn udp_sender(t: SocketAddr, w: &Workload, rate: f64, stop: &AtomicBool, sent: &Sent) {
    let mut gen = Generator::new(t, w.dgrams.clone(), w.incr.clone(), PER);
    while !stop.load(Relaxed) {
        let s = gen.run(rate, Duration::from_secs(1));
        sent.udp_dgrams.fetch_add(s.datagrams, Relaxed);
        sent.udp_increments.fetch_add(s.increments, Relaxed);
        sent.udp_errors.fetch_add(s.errors, Relaxed);
    }
}

fn tcp_sender(t: SocketAddr, w: &Workload, rate: f64, stop: &AtomicBool, sent: &Sent) {
    let mut s = TcpStream::connect(t).expect("statsd tcp");
    let chunks: Vec<Vec<u8>> = w
        .dgrams
        .iter()
        .map(|d| {
            let mut c = d.clone();
            c.push(b'\n');
            c
        })
        .collect();
    let per_sec = rate / PER as f64;
    let start = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(Relaxed) {
        let due = (start.elapsed().as_secs_f64() * per_sec) as u64;
        if n >= due {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let mut buf = Vec::new();
        let mut k = n;
        while k < due && buf.len() < 256 * 1024 {
            buf.extend_from_slice(&chunks[(k % chunks.len() as u64) as usize]);
            k += 1;
        }
        s.write_all(&buf).expect("statsd tcp write");
        n = k;
        sent.tcp_chunks.store(n, Relaxed);
    }
}

fn otlp_request(values: &[(String, i64)]) -> ExportMetricsServiceRequest {
    let metrics = values
        .iter()
        .map(|(name, v)| Metric {
            name: name.clone(),
            data: Some(Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    value: Some(number_data_point::Value::AsInt(*v)),
                    ..Default::default()
                }],
                aggregation_temporality: 1,
                is_monotonic: true,
            })),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn otlp_sender(t: SocketAddr, stop: &AtomicBool, sent: &Sent) {
    let mut round: i64 = 0;
    let start = Instant::now();
    while !stop.load(Relaxed) {
        let due = (start.elapsed().as_secs_f64() * 10.0) as i64;
        if round >= due {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        round += 1;
        let values: Vec<(String, i64)> = (0..OTLP_METRICS)
            .map(|i| (format!("otlp.soak.c{i}"), 1 + (round + i as i64) % 7))
            .collect();
        let body = otlp_request(&values).encode_to_vec();
        let (code, _, _) = common::http_bytes(
            t,
            "POST",
            "/v1/metrics",
            &[("Content-Type", "application/x-protobuf")],
            &body,
        );
        if code == 200 {
            sent.otlp_points.fetch_add(values.len() as u64, Relaxed);
            let mut m = sent.otlp.lock().expect("otlp");
            for (name, v) in values {
                *m.entry(name).or_default() += v as f64;
            }
        } else {
            sent.otlp_refused.fetch_add(1, Relaxed);
        }
    }
}

// GT06 frames: the builders of tests/common/gt06.rs.

/// A login for the 15-digit IMEI `imei` (BCD, a leading 0 nibble).
fn gt06_login(imei: u64, serial: u16) -> Vec<u8> {
    let digits = format!("0{imei:015}");
    let bcd: Vec<u8> = digits
        .as_bytes()
        .chunks(2)
        .map(|p| ((p[0] - b'0') << 4) | (p[1] - b'0'))
        .collect();
    let mut c = bcd;
    c.extend_from_slice(&[0x00, 0x01, 0x00, 0x00]);
    gt06_frame(0x01, &c, serial)
}

fn gt06_location(m: u8, serial: u16) -> Vec<u8> {
    let mut c = vec![24, 3, 1, 12, m, 0, 0xC8];
    c.extend_from_slice(&40_000_000u32.to_be_bytes());
    c.extend_from_slice(&200_000_000u32.to_be_bytes());
    c.push(10);
    c.extend_from_slice(&((1u16 << 12) | (1 << 10) | 10).to_be_bytes());
    c.extend_from_slice(&[0x01, 0xCC, 0x00, 0x28, 0x7D, 0x00, 0x1F, 0xB8]);
    gt06_frame(0x12, &c, serial)
}

fn gt06_heartbeat(serial: u16) -> Vec<u8> {
    gt06_frame(0x13, &[0x44, 0x06, 0x04, 0x00, 0x02], serial)
}

fn connect_from(to: SocketAddr, host: u8) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("127.0.0.{host}:0").parse().expect("addr");
    sock.bind(&from.into()).expect("bind source address");
    sock.connect(&to.into()).expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// 200 devices, one location and one heartbeat per second each; every heartbeat's ACK is read
/// before the device counts the pair as sent.
fn gps_sender(t: SocketAddr, stop: &AtomicBool, sent: &Sent) {
    let mut devs: Vec<TcpStream> = (0..DEVICES)
        .map(|i| {
            let mut s = connect_from(t, 2 + (i / 50) as u8);
            s.write_all(&gt06_login(863_586_038_700_000 + i as u64, 1))
                .expect("login");
            let mut ack = [0u8; 10];
            s.read_exact(&mut ack).expect("login ack");
            s
        })
        .collect();
    sent.gps_frames.fetch_add(DEVICES as u64, Relaxed);
    let mut round: u64 = 0;
    let start = Instant::now();
    while !stop.load(Relaxed) {
        if round >= start.elapsed().as_secs() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        round += 1;
        let serial = (round % 60_000) as u16 + 2;
        for s in &mut devs {
            let mut frames = gt06_location((round % 60) as u8, serial);
            frames.extend_from_slice(&gt06_heartbeat(serial));
            let mut ack = [0u8; 10];
            if s.write_all(&frames)
                .and_then(|()| s.read_exact(&mut ack))
                .is_ok()
                && ack == gt06_frame(0x13, &[], serial)[..]
            {
                sent.gps_frames.fetch_add(2, Relaxed);
                sent.gps_locations.fetch_add(1, Relaxed);
            } else {
                sent.gps_errors.fetch_add(1, Relaxed);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /proc readings

#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    rss_mib: f64,
    fds: f64,
    threads: f64,
    queue_bytes: f64,
}

fn status_field(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(':')?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(f64::NAN)
}

fn fds(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as f64)
        .unwrap_or(f64::NAN)
}

/// (InErrors, RcvbufErrors) of the `Udp:` line of /proc/net/snmp.
fn snmp_udp() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    if lines.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let vals: Vec<&str> = lines[1].split_whitespace().collect();
    let get = |k: &str| {
        names
            .iter()
            .position(|n| *n == k)
            .and_then(|i| vals.get(i)?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    (get("InErrors"), get("RcvbufErrors"))
}

/// Least-squares slope of `y` over `x`.
fn slope(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx) * (a - mx)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

// ---------------------------------------------------------------------------------------------
// What the sinks hold

/// Per counter name (StatsD/OTLP name), what each sink counted.
#[derive(Default)]
struct Sinks {
    datadog: HashMap<String, f64>,
    remote_write: HashMap<String, f64>,
    dd_points: u64,
    rw_requests: u64,
    rw_refused: u64,
}

impl Sinks {
    /// Folds what the stand-ins received since the last call and forgets it there.
    fn fold(&mut self, intake: &Intake, rx: &StandIn) {
        let series = std::mem::take(&mut intake.accepted().series);
        for s in series {
            // RATE points of counters; a timer's `.count` is a RATE too but no workload counter
            // ends in `.count`.
            if s.mtype != 2 || s.metric.ends_with(".count") {
                continue;
            }
            let e = self.datadog.entry(s.metric.clone()).or_default();
            for p in &s.points {
                *e += (p.value * s.interval as f64).round();
                self.dd_points += 1;
            }
        }
        for r in rx.take_seen() {
            self.rw_requests += 1;
            if r.status != 204 {
                self.rw_refused += 1;
                continue;
            }
            for line in &r.series {
                let Some((series, v)) = line.rsplit_once(' ') else {
                    continue;
                };
                let name = series.split('{').next().unwrap_or(series);
                if let Ok(v) = v.parse::<f64>() {
                    // Cumulative: the last value is the total. Kept by name and by series.
                    self.remote_write.insert(name.to_string(), v);
                    self.remote_write.insert(series.to_string(), v);
                }
            }
        }
        // Everything is folded; drop what the stand-ins keep for other uses.
        intake.accepted().ids.clear();
        intake.state.seen.lock().expect("seen").clear();
    }
}

/// The exposition name of a counter: dots to underscores, `_total`.
fn prom_name(name: &str) -> String {
    format!("{}_total", name.replace(['.', '-'], "_"))
}

/// `name` (the part before `{`) → value, for every sample of a scrape.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, v)) = l.rsplit_once(' ') else {
            continue;
        };
        if let Ok(v) = v.parse::<f64>() {
            out.insert(series.to_string(), v);
            let name = series.split('{').next().unwrap_or(series);
            if name != series {
                *out.entry(format!("{name}#sum")).or_default() += v;
            }
        }
    }
    out
}

fn metric(m: &HashMap<String, f64>, name: &str) -> f64 {
    m.get(name)
        .or_else(|| m.get(&format!("{name}#sum")))
        .copied()
        .unwrap_or(0.0)
}

fn queue_stats(t: &Tallyd) -> serde_json::Value {
    serde_json::from_str(&t.get("/admin/queue/stats").1).unwrap_or_default()
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(180);
    let udp_rate = env_f64("TALLYD_SOAK_UDP_RATE", 1_750_000.0);
    let tcp_rate = env_f64("TALLYD_SOAK_TCP_RATE", 50_000.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "tallyd soak: {} for {secs} s; UDP {udp_rate:.0} lines/s, TCP {tcp_rate:.0} lines/s, OTLP {} points/s, {DEVICES} GPS devices; loadavg at start {}",
        common::bin(),
        OTLP_METRICS * 10,
        load.trim()
    );

    let intake = Intake::start(KEY);
    let rx = StandIn::start(&[]);
    let extra = format!(
        r#"
[aggregate]
flush_interval = "10s"
[datadog]
api_key = "{KEY}"
url = "{}"
hostname = "soak"
[remote_write]
url = "http://{}/push"
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "1s"
"#,
        intake.url(),
        rx.addr
    );
    let env: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("BENCH_")?.to_string(), v)))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut t = Tallyd::start_raw(&merge(BASE_CONFIG, &extra), &env);
    let pid = t.pid();
    let udp_w = workload("", 42);
    let tcp_w = workload("tcp.", 43);

    let stop = AtomicBool::new(false);
    let sent = Box::new(Sent {
        udp_dgrams: AtomicU64::new(0),
        udp_increments: AtomicU64::new(0),
        udp_errors: AtomicU64::new(0),
        tcp_chunks: AtomicU64::new(0),
        otlp: Mutex::new(BTreeMap::new()),
        otlp_refused: AtomicU64::new(0),
        otlp_points: AtomicU64::new(0),
        gps_frames: AtomicU64::new(0),
        gps_locations: AtomicU64::new(0),
        gps_errors: AtomicU64::new(0),
    });
    let snmp0 = snmp_udp();
    let drops0 = metric(
        &parse_metrics(&t.metrics()),
        "tallyd_udp_kernel_drops_total",
    );
    let started = Instant::now();
    let (stop, sent, udp_w, tcp_w) = (&stop, &*sent, &udp_w, &tcp_w);
    let exact = std::thread::scope(|scope| {
        let mut threads = Vec::new();
        let (udp, tcp, otlp, gps) = (
            t.udp.expect("udp"),
            t.tcp.expect("tcp"),
            t.otlp_http.expect("otlp"),
            t.gps.expect("gps"),
        );
        threads.push(scope.spawn(move || udp_sender(udp, udp_w, udp_rate, stop, sent)));
        threads.push(scope.spawn(move || tcp_sender(tcp, tcp_w, tcp_rate, stop, sent)));
        threads.push(scope.spawn(move || otlp_sender(otlp, stop, sent)));
        threads.push(scope.spawn(move || gps_sender(gps, stop, sent)));

        let mut samples = Vec::new();
        let mut sinks = Sinks::default();
        let mut scrape_ms: Vec<f64> = Vec::new();
        let mut next_scrape = 15.0;
        let mut next_sample = 0.0;
        while started.elapsed().as_secs() < secs {
            let el = started.elapsed().as_secs_f64();
            if el >= next_scrape {
                next_scrape += 15.0;
                let t0 = Instant::now();
                let (code, body) = t.get("/metrics");
                scrape_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                assert_eq!(code, 200, "scrape");
                let m = parse_metrics(&body);
                println!(
                    "  t={el:>5.0} s  scrape {:.1} ms, {} KiB; flush {:.1} ms (longest {:.1}); lines udp {:.0} tcp {:.0}; kernel drops {:.0}",
                    scrape_ms.last().copied().unwrap_or(0.0),
                    body.len() / 1024,
                    metric(&m, "tallyd_flush_duration_seconds") * 1e3,
                    metric(&m, "tallyd_flush_duration_max_seconds") * 1e3,
                    metric(&m, "tallyd_statsd_lines_total{transport=\"udp\"}"),
                    metric(&m, "tallyd_statsd_lines_total{transport=\"tcp\"}"),
                    metric(&m, "tallyd_udp_kernel_drops_total") - drops0,
                );
            }
            if el >= next_sample {
                next_sample += 10.0;
                sinks.fold(&intake, &rx);
                let q = queue_stats(&t);
                let qb = q["queues"]["datadog"]["pending_bytes"]
                    .as_f64()
                    .unwrap_or(0.0)
                    + q["queues"]["remote_write"]["pending_bytes"]
                        .as_f64()
                        .unwrap_or(0.0);
                let s = Sample {
                    t: el,
                    rss_mib: status_field(pid, "VmRSS") / 1024.0,
                    fds: fds(pid),
                    threads: status_field(pid, "Threads"),
                    queue_bytes: qb,
                };
                println!(
                    "  t={:>5.0} s  RSS {:.1} MiB  fds {}  threads {}  queued bytes {}",
                    s.t, s.rss_mib, s.fds, s.threads, s.queue_bytes
                );
                samples.push(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Relaxed);
        for h in threads.drain(..) {
            h.join().expect("sender thread");
        }
        let load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let snmp1 = snmp_udp();

        // Expected counts, per counter.
        let mut want = BTreeMap::new();
        udp_w.expected(sent.udp_dgrams.load(Relaxed), &mut want);
        tcp_w.expected(sent.tcp_chunks.load(Relaxed), &mut want);
        want.extend(sent.otlp.lock().expect("otlp").clone());
        let locations = sent.gps_locations.load(Relaxed) as f64;
        want.insert("gps_tcp.locations_valid".into(), locations);
        let udp_incr = sent.udp_increments.load(Relaxed) as f64;
        let udp_sum: f64 = want
            .iter()
            .filter(|(k, _)| k.starts_with("app."))
            .map(|(_, v)| v)
            .sum();

        // Settle: every line read, every window flushed and delivered, every sink at its total.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last_lines = -1.0;
        let mut m;
        loop {
            m = parse_metrics(&t.metrics());
            let lines = metric(&m, "tallyd_statsd_lines_total#sum");
            if lines == last_lines || Instant::now() > deadline {
                break;
            }
            last_lines = lines;
            std::thread::sleep(Duration::from_millis(500));
        }
        let flushes = metric(&m, "tallyd_flush_total");
        let mut mismatches: Vec<String>;
        loop {
            std::thread::sleep(Duration::from_millis(500));
            sinks.fold(&intake, &rx);
            m = parse_metrics(&t.metrics());
            let q = queue_stats(&t);
            let pending = q["queues"]["datadog"]["pending"].as_u64().unwrap_or(1)
                + q["queues"]["remote_write"]["pending"].as_u64().unwrap_or(1);
            mismatches = Vec::new();
            for (name, w) in &want {
                let (prom, dd, rw) = if name == "gps_tcp.locations_valid" {
                    let p = "gps_tcp_locations_valid_total{protocol=\"gt06\"}";
                    (
                        metric(&m, p),
                        sinks.datadog.get(name).copied().unwrap_or(0.0),
                        sinks.remote_write.get(p).copied().unwrap_or(0.0),
                    )
                } else {
                    let p = prom_name(name);
                    (
                        metric(&m, &p),
                        sinks.datadog.get(name).copied().unwrap_or(0.0),
                        sinks.remote_write.get(&p).copied().unwrap_or(0.0),
                    )
                };
                if prom != *w || dd != *w || rw != *w {
                    mismatches.push(format!(
                        "{name}: sent {w}, /metrics {prom}, datadog {dd}, remote_write {rw}"
                    ));
                }
            }
            let settled = metric(&m, "tallyd_flush_total") >= flushes + 2.0 && pending == 0;
            if (settled && mismatches.is_empty()) || Instant::now() > deadline {
                break;
            }
        }

        let x: Vec<f64> = samples.iter().map(|s| s.t / 3600.0).collect();
        let col = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
        let warm: Vec<usize> = (0..samples.len())
            .filter(|&i| samples[i].t >= 60.0)
            .collect();
        let pick = |v: &[f64]| warm.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        println!("\n== summary (markdown) ==\n");
        println!(
            "duration {secs} s; loadavg at start {} / at end {}",
            load.trim(),
            load_end.trim()
        );
        println!("\n| measure | first | last | min | max | slope (per hour, all) | slope (per hour, after 60 s) |");
        println!("|---|---|---|---|---|---|---|");
        for (what, v) in [
            ("RSS (MiB)", col(|s| s.rss_mib)),
            ("open fds", col(|s| s.fds)),
            ("threads", col(|s| s.threads)),
            (
                "queued bytes (datadog + remote_write)",
                col(|s| s.queue_bytes),
            ),
        ] {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            println!(
                "| {what} | {:.1} | {:.1} | {min:.1} | {max:.1} | {:+.3} | {:+.3} |",
                v.first().copied().unwrap_or(0.0),
                v.last().copied().unwrap_or(0.0),
                slope(&x, &v),
                slope(&pick(&x), &pick(&v)),
            );
        }
        scrape_ms.sort_by(f64::total_cmp);
        let drops = metric(&m, "tallyd_udp_kernel_drops_total") - drops0;
        println!(
            "\n| check | result |\n|---|---|\n| UDP sent | {} datagrams, {:.0} lines, {udp_incr:.0} counter increments ({udp_sum:.0} by context), {} send errors |",
            sent.udp_dgrams.load(Relaxed),
            sent.udp_dgrams.load(Relaxed) as f64 * PER as f64,
            sent.udp_errors.load(Relaxed)
        );
        println!(
            "| TCP sent | {} lines |",
            sent.tcp_chunks.load(Relaxed) * PER as u64
        );
        println!(
            "| OTLP sent | {} points accepted, {} requests refused |",
            sent.otlp_points.load(Relaxed),
            sent.otlp_refused.load(Relaxed)
        );
        println!(
            "| GPS sent | {} frames ({} locations), {} device errors |",
            sent.gps_frames.load(Relaxed),
            locations,
            sent.gps_errors.load(Relaxed)
        );
        println!(
            "| GPS messages received (tallyd) | {} |",
            metric(&m, "gps_tcp_messages_received_total{protocol=\"gt06\"}")
        );
        println!(
            "| kernel UDP drops: /proc/net/snmp InErrors, RcvbufErrors deltas (system-wide) | {}, {} |",
            snmp1.0 - snmp0.0,
            snmp1.1 - snmp0.1
        );
        println!("| tallyd_udp_kernel_drops_total delta | {drops} |");
        println!(
            "| /metrics scrapes: {} ; min / median / max | {:.1} / {:.1} / {:.1} ms |",
            scrape_ms.len(),
            scrape_ms.first().copied().unwrap_or(0.0),
            scrape_ms.get(scrape_ms.len() / 2).copied().unwrap_or(0.0),
            scrape_ms.last().copied().unwrap_or(0.0)
        );
        println!(
            "| longest flush (tallyd_flush_duration_max_seconds) | {:.1} ms of {} flushes |",
            metric(&m, "tallyd_flush_duration_max_seconds") * 1e3,
            metric(&m, "tallyd_flush_total")
        );
        println!(
            "| Datadog points folded; remote write requests (refused) | {}; {} ({}) |",
            sinks.dd_points, sinks.rw_requests, sinks.rw_refused
        );
        println!(
            "| counters checked in /metrics, Datadog and remote write | {} counters, {} off |",
            want.len(),
            mismatches.len()
        );
        for mm in mismatches.iter().take(20) {
            println!("  OFF: {mm}");
        }
        println!("\nsoak took {:.0} s", started.elapsed().as_secs_f64());
        let status = t.terminate();
        println!("tallyd exit: {status}");
        mismatches.is_empty()
    });
    // Exit only after `t` (its temporary directory) is dropped.
    drop(t);
    if !exact {
        std::process::exit(1);
    }
}
